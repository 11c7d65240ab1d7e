//! Proves that every append a real `ferrogram stress` process reported as acknowledged
//! survives a SIGKILL at a random moment: after each kill the logs are verified offline
//! (every acknowledged LSN present, dense, byte for byte as written, nothing invented), and
//! the next round reopens the same data directory through the engine, recovering the torn
//! tail the kill left, and keeps appending (or is killed while still recovering).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrogram::engine::wal::driver::scan_offline;
use ferrogram::engine::wal::meta::{LogMeta, META_FILE};
use ferrogram::engine::{Lsn, ShardId};
use ferrogram::stress::{payload_matches, STRESS_KIND};

mod in_process;
use in_process::temp_dir;

const SHARDS: usize = 2;

/// Proves every acknowledged append survives SIGKILL at random moments, over several rounds.
#[test]
fn acknowledged_appends_survive_sigkill() {
    let seed = std::env::var("FERROGRAM_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    let rounds: usize = std::env::var("FERROGRAM_KILL_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    eprintln!("recover_after_kill: seed {seed} (set FERROGRAM_KILL_SEED to repeat), {rounds} rounds");
    let dir = temp_dir("kill");
    let mut rng = seed;
    let acked: Arc<Mutex<HashMap<u16, u64>>> = Arc::default();
    for round in 0..rounds {
        let acked_before = acked.lock().expect("lock").clone();
        let kill_after = Duration::from_millis(200 + next(&mut rng) % 1300);
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrogram"))
            .args(["stress", "--seconds", "60", "--report-acks", "--segment-mib", "8", "--in-flight", "4096"])
            .args(["--cores", &SHARDS.to_string(), "--data-dir"])
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ferrogram stress");
        let stdout = child.stdout.take().expect("piped stdout");
        let (first_ack, first_acked) = std::sync::mpsc::channel();
        let reader = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut told = false;
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let mut words = line.split_whitespace();
                    if words.next() != Some("acked") {
                        continue;
                    }
                    let shard: u16 = words.next().and_then(|w| w.parse().ok()).expect("shard");
                    let lsn: u64 = words.next().and_then(|w| w.parse().ok()).expect("lsn");
                    let mut acked = acked.lock().expect("lock");
                    let entry = acked.entry(shard).or_default();
                    *entry = (*entry).max(lsn);
                    if !told {
                        told = first_ack.send(()).is_ok();
                    }
                }
            })
        };
        // Until something was acknowledged the kill's moment is counted from the first
        // acknowledgement, so a slow start on a busy machine cannot leave a round that proves
        // nothing; later rounds may kill during start-up on purpose.
        if acked_before.is_empty() {
            let waited = first_acked.recv_timeout(Duration::from_secs(60));
            assert!(waited.is_ok(), "seed {seed} round {round}: no acknowledgement within 60 s of starting");
        }
        std::thread::sleep(kill_after);
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("reap the child");
        assert!(!status.success(), "seed {seed} round {round}: the child finished before it was killed");
        reader.join().expect("reader thread");
        let acked = acked.lock().expect("lock").clone();
        assert!(
            acked.values().any(|&lsn| lsn > 0),
            "seed {seed} round {round}: nothing was acknowledged in {kill_after:?}; the test proved nothing"
        );
        for shard in 0..SHARDS {
            let acked_lsn = acked.get(&(shard as u16)).copied().unwrap_or(0);
            verify_shard(&dir.join(format!("shard-{shard}")), ShardId(shard as u16), acked_lsn, seed, round);
        }
        // A kill before anything new was acknowledged hit the child while it was still
        // recovering the previous rounds' log: a crash during recovery, checked all the same.
        let during = if acked == acked_before { " during start-up" } else { "" };
        eprintln!("round {round}: killed after {kill_after:?}{during}; acknowledged LSNs {acked:?} all recovered");
        drop(first_acked);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn verify_shard(dir: &Path, shard: ShardId, acked: u64, seed: u64, round: usize) {
    let mut expected = Lsn::FIRST;
    let mut bad = Vec::new();
    let (scan, _) = scan_offline(dir, |_, record| {
        if record.lsn != expected || record.kind != STRESS_KIND || !payload_matches(shard, record.lsn, record.payload) {
            bad.push(record.lsn);
        }
        expected = record.lsn.next();
    })
    .unwrap_or_else(|error| panic!("seed {seed} round {round}: {shard} does not open: {error}"));
    assert!(
        bad.is_empty(),
        "seed {seed} round {round}: {shard}: invented or damaged records at {:?}",
        &bad[..bad.len().min(5)]
    );
    assert!(
        scan.next_lsn.0 > acked,
        "seed {seed} round {round}: {shard}: acknowledged up to LSN {acked} but the log ends before {}",
        scan.next_lsn
    );
}

/// SplitMix64: a seeded, dependency-free random sequence.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Proves the log's generation tells the truth about acknowledgements lost to a crash: a
/// clean run leaves it alone, a kill under `interval` durability (acknowledged before
/// fdatasync) bumps it at the next open, and a kill under `sync` durability does not.
#[test]
fn generation_bumps_only_when_acknowledged_records_may_be_lost() {
    let dir = temp_dir("generation");
    let run = |durability: &str, seconds: &str| {
        Command::new(env!("CARGO_BIN_EXE_ferrogram"))
            .args(["stress", "--seconds", seconds, "--segment-mib", "8", "--in-flight", "256"])
            .args(["--durability", durability, "--data-dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ferrogram stress")
    };
    let meta = || {
        let bytes = std::fs::read(dir.join("shard-0").join(META_FILE)).expect("read log.meta");
        LogMeta::decode(&bytes).expect("valid log.meta")
    };
    let kill = |mut child: std::process::Child| {
        // Kill only once the log is open and appending (a busy machine can take longer than
        // any fixed delay to get there): the meta file says so before the first append.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !std::fs::read(dir.join("shard-0").join(META_FILE))
            .ok()
            .and_then(|bytes| LogMeta::decode(&bytes))
            .is_some_and(|meta| meta.open)
        {
            assert!(std::time::Instant::now() < deadline, "the stress run did not open its log within 60 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
    };
    let finish = |mut child: std::process::Child| {
        assert!(child.wait().expect("wait").success(), "a short stress run finishes cleanly");
    };

    finish(run("interval:1000", "0.2"));
    assert_eq!((meta().generation, meta().open), (0, false), "a clean run closes the log cleanly");
    kill(run("interval:1000", "60"));
    assert!(meta().open && meta().relaxed, "a killed run leaves the log marked open");
    finish(run("sync", "0.2"));
    assert_eq!((meta().generation, meta().open), (1, false), "reopening after the interval crash bumps the generation");
    kill(run("sync", "60"));
    finish(run("sync", "0.2"));
    assert_eq!(meta().generation, 1, "a crash under sync durability loses nothing acknowledged");
    let _ = std::fs::remove_dir_all(&dir);
}
