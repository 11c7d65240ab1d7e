//! What loadgen asks of the operating system: enough file descriptors for its connections,
//! CPU affinity, its own CPU time, and another process's resident memory.

use std::time::Duration;

/// Why a system call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SystemError {
    #[error(
        "{needed} file descriptors are needed ({connections} connections), but the hard limit is {hard}: \
         raise it (e.g. `ulimit -Hn {needed}` as root, or LimitNOFILE) or use fewer connections"
    )]
    TooFewFileDescriptors { needed: u64, connections: u64, hard: u64 },
    #[error("CPU {cpu} is not a CPU this machine has (it has {cpus})")]
    NoSuchCpu { cpu: usize, cpus: usize },
    #[error("{call} failed: {source}")]
    Call { call: &'static str, source: std::io::Error },
}

/// Raises the soft limit of open files to what `connections` need (up to the hard limit);
/// answers the soft limit now in force.
pub fn raise_file_limit(connections: u64, spare: u64) -> Result<u64, SystemError> {
    let needed = connections + spare;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(last_error("getrlimit(RLIMIT_NOFILE)"));
    }
    if needed > limit.rlim_max {
        return Err(SystemError::TooFewFileDescriptors { needed, connections, hard: limit.rlim_max });
    }
    if limit.rlim_cur < needed {
        // The most the hard limit allows: later steps (verify, extra files) need a few more.
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(last_error("setrlimit(RLIMIT_NOFILE)"));
        }
    }
    Ok(limit.rlim_cur)
}

/// Pins the calling thread (and every thread it starts afterwards) to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> Result<(), SystemError> {
    let count = cpu_count();
    // SAFETY: cpu_set_t is a plain bit set; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= count || cpu >= libc::CPU_SETSIZE as usize {
            return Err(SystemError::NoSuchCpu { cpu, cpus: count });
        }
        // SAFETY: `cpu` is below CPU_SETSIZE, checked above.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; the set is initialized and its size is passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(last_error("sched_setaffinity"));
    }
    Ok(())
}

/// How many CPUs the calling thread may run on.
pub fn allowed_cpus() -> usize {
    allowed_cpu_list().len().max(1)
}

/// The CPUs the calling thread may run on.
pub fn allowed_cpu_list() -> Vec<usize> {
    // SAFETY: as in `pin_current_thread`; sched_getaffinity fills the set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the size is the set's.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return (0..cpu_count()).collect();
    }
    // SAFETY: the set was filled by the kernel; every index is below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

/// Busy and total time of some CPUs so far, from `/proc/stat`, in clock ticks. Busy is
/// everything but idle and I/O wait: this process, other processes, interrupts and softirqs
/// (where loopback TCP does much of its work).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
}

impl CpuTicks {
    pub fn read(cpus: &[usize]) -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let mut ticks = CpuTicks::default();
        for line in stat.lines() {
            let Some(rest) = line.strip_prefix("cpu") else { continue };
            let mut fields = rest.split_whitespace();
            let Some(Ok(cpu)) = fields.next().map(str::parse::<usize>) else { continue };
            if !cpus.contains(&cpu) {
                continue;
            }
            let values: Vec<u64> = fields.filter_map(|field| field.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let total: u64 = values.iter().take(8).sum();
            let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
            ticks.total += total;
            ticks.busy += total.saturating_sub(idle);
        }
        Some(ticks)
    }

    /// The busy share between `earlier` and `self`.
    pub fn busy_share_since(self, earlier: CpuTicks) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// CPUs the machine has online.
pub fn cpu_count() -> usize {
    // SAFETY: sysconf takes a constant and returns a number.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if online > 0 {
        online as usize
    } else {
        1
    }
}

/// User and system CPU time of this process so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn now() -> CpuTime {
        // SAFETY: rusage is plain data; all zeroes is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage fills the struct we pass.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return CpuTime::default();
        }
        let time = |value: libc::timeval| Duration::new(value.tv_sec as u64, value.tv_usec as u32 * 1000);
        CpuTime { user: time(usage.ru_utime), system: time(usage.ru_stime) }
    }

    /// The time spent between `earlier` and `self`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime { user: self.user.saturating_sub(earlier.user), system: self.system.saturating_sub(earlier.system) }
    }

    pub fn total(self) -> Duration {
        self.user + self.system
    }
}

/// User and system CPU time of process `pid` so far (`/proc/PID/stat`), threads included.
pub fn process_cpu_time(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |index: usize| fields.get(index).and_then(|field| field.parse::<u64>().ok());
    // SAFETY: sysconf takes a constant and returns a number.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let time = |ticks: u64| Duration::from_nanos(ticks * 1_000_000_000 / per_second);
    Some(CpuTime { user: time(ticks(11)?), system: time(ticks(12)?) })
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn last_error(call: &'static str) -> SystemError {
    SystemError::Call { call, source: std::io::Error::last_os_error() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_cpu_time_and_memory_are_readable() {
        assert!(raise_file_limit(16, 16).expect("a few descriptors") >= 32);
        assert!(matches!(raise_file_limit(u64::MAX / 2, 0), Err(SystemError::TooFewFileDescriptors { .. })));
        assert!(allowed_cpus() >= 1 && allowed_cpus() <= cpu_count());
        let cpus = allowed_cpu_list();
        let before = CpuTicks::read(&cpus).expect("/proc/stat");
        assert!(before.total > 0 && before.busy <= before.total);
        let before = CpuTime::now();
        let mut spin = 0u64;
        for index in 0..20_000_000u64 {
            spin = std::hint::black_box(spin.wrapping_add(index.wrapping_mul(index)));
        }
        assert!(spin > 0);
        assert!(CpuTime::now().since(before).total() > Duration::ZERO);
        assert!(resident_kib(std::process::id()).is_some_and(|kib| kib > 0));
        let mine = process_cpu_time(std::process::id()).expect("this process's CPU time");
        assert!(mine.total() > Duration::ZERO && mine.total() <= CpuTime::now().total() + Duration::from_millis(20));
    }

    #[test]
    fn pinning_to_a_missing_cpu_is_refused() {
        assert!(matches!(pin_current_thread(&[cpu_count() + 5]), Err(SystemError::NoSuchCpu { .. })));
    }
}
