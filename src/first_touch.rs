//! `ferrogram admin first-touch`: how long this machine takes to hand a process fresh memory,
//! for memory freed a moment ago and for memory left free a while.
//!
//! Why an operator needs it: an engine that opens restores its whole state into fresh memory
//! (about 6 GB after 10 M messages), so the first write to each page is part of every restart.
//! On bare metal that costs the kernel zeroing the page. In a virtual machine whose balloon
//! device reports free pages to the host (virtio-balloon free page reporting, on in Firecracker
//! and in many clouds), the host takes back memory the guest left free for a few seconds, and
//! the guest's next write to it faults in the host too. On the machine of `docs/BENCHMARKS.md`
//! that made touching memory more than ten times slower, and an open at 10 M messages took
//! about 15 s instead of about 3 (BENCHMARKS, "Memory the host took back"). This command shows whether a machine behaves so, and by
//! how much, before a restart time is read as the engine's.
//!
//! The method: map `gib` GiB of anonymous memory, ask for transparent huge pages as the engine's
//! allocator does, and write one byte to each 4 KiB page, timed.
//! Done twice: first after `settle` of idleness (what the host may have taken back by then,
//! it has), then at once after unmapping the first (the pages the kernel hands out are the ones
//! just freed, not yet reported).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The page size the probe writes to; a byte per page faults every page in.
const PAGE: usize = 4096;

/// One timed touch: maps `bytes` of anonymous memory, writes a byte to every page, unmaps it.
fn touch(bytes: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    // SAFETY: an anonymous private mapping with no address hint; the result is checked.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        bail!("mapping {bytes} bytes: {}", std::io::Error::last_os_error());
    }
    // Huge pages where the kernel allows them (`transparent_hugepage` at `madvise` or
    // `always`), as the engine's allocator asks for them: a refusal only means 4 KiB pages.
    // SAFETY: advice on the mapping made above, of its exact length.
    unsafe { libc::madvise(base, bytes, libc::MADV_HUGEPAGE) };
    let base = base.cast::<u8>();
    for offset in (0..bytes).step_by(PAGE) {
        // SAFETY: `offset < bytes`, inside the mapping made above, which is writable. A
        // volatile write, so the compiler keeps every page's write.
        unsafe { base.add(offset).write_volatile(1) };
    }
    let took = started.elapsed();
    // SAFETY: unmaps exactly the mapping made above; nothing refers to it any more.
    if unsafe { libc::munmap(base.cast(), bytes) } != 0 {
        bail!("unmapping {bytes} bytes: {}", std::io::Error::last_os_error());
    }
    Ok(took)
}

/// Whether a virtio balloon device offers free page reporting, as the guest's sysfs shows it;
/// `None` when there is no balloon device to ask.
fn free_page_reporting() -> Option<bool> {
    const VIRTIO_ID_BALLOON: &str = "0x0005";
    let devices = std::fs::read_dir("/sys/bus/virtio/devices").ok()?;
    let mut found = None;
    for device in devices.flatten() {
        let path = device.path();
        let id = std::fs::read_to_string(path.join("device")).unwrap_or_default();
        if id.trim() != VIRTIO_ID_BALLOON {
            continue;
        }
        let features = std::fs::read_to_string(path.join("features")).unwrap_or_default();
        found = Some(found.unwrap_or(false) || offers_reporting(&features));
    }
    found
}

/// Whether a virtio device's `features` file (one `0` or `1` per feature bit, bit 0 first)
/// has the balloon's free page reporting bit set.
fn offers_reporting(features: &str) -> bool {
    const VIRTIO_BALLOON_F_REPORTING: usize = 5;
    features.as_bytes().get(VIRTIO_BALLOON_F_REPORTING) == Some(&b'1')
}

/// Runs the probe and prints what it found.
pub fn run(gib: usize, settle: Duration, cpu: Option<usize>) -> anyhow::Result<()> {
    if gib == 0 {
        bail!("--gib must be at least 1");
    }
    let bytes = gib.checked_mul(1 << 30).context("--gib is too large for this machine")?;
    if let Some(cpu) = cpu {
        ferrogram::messaging_bench::pin_current_thread(cpu)?;
    }
    match free_page_reporting() {
        Some(true) => println!("virtio balloon: free page reporting offered (the host may take back free memory)"),
        Some(false) => println!("virtio balloon: present, without free page reporting"),
        None => println!("virtio balloon: none seen"),
    }
    let per_gib = |took: Duration| took.as_secs_f64() * 1e3 / gib as f64;
    println!("waiting {:.0} s, so memory left free is in whatever state idleness puts it", settle.as_secs_f64());
    std::thread::sleep(settle);
    let settled = touch(bytes)?;
    println!(
        "touched {gib} GiB of memory left free {:.0} s: {:.0} ms ({:.0} ms/GiB)",
        settle.as_secs_f64(),
        settled.as_secs_f64() * 1e3,
        per_gib(settled)
    );
    let fresh = touch(bytes)?;
    println!(
        "touched {gib} GiB of memory freed a moment before: {:.0} ms ({:.0} ms/GiB)",
        fresh.as_secs_f64() * 1e3,
        per_gib(fresh)
    );
    println!(
        "memory left free costs {:.1}x memory just freed",
        settled.as_secs_f64() / fresh.as_secs_f64().max(f64::MIN_POSITIVE)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reporting_bit_is_read_from_the_features_file() {
        // This machine's balloon: stats queue, deflate on OOM, free page reporting, bit 7.
        assert!(offers_reporting("0110010100000000000000000000000010000000\n"));
        assert!(!offers_reporting("0110000100000000000000000000000010000000\n"));
        assert!(!offers_reporting("0110"));
        assert!(!offers_reporting(""));
    }

    #[test]
    fn a_touch_maps_writes_and_unmaps() {
        let took = touch(4 << 20).expect("touching 4 MiB");
        assert!(took > Duration::ZERO);
    }

    #[test]
    fn no_memory_to_touch_is_refused() {
        let error = run(0, Duration::ZERO, None).unwrap_err();
        assert!(error.to_string().contains("--gib"), "{error}");
    }
}
