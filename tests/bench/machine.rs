//! Facts about the machine the numbers come from, and the few process-level tools the
//! benchmark needs: CPU pinning, memory from `smaps_rollup`, the filesystem of a path.

use std::path::Path;
use std::time::Duration;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(f64::NAN));
    [(); 3].map(|()| fields.next().unwrap_or(f64::NAN))
}

/// CPUs online (not those this thread may use: the main thread is pinned to one).
pub fn cpu_count() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .map_or(1, |n| n as usize)
}

/// CPU time of the whole machine and of the benchmark (itself and its reaped children:
/// the daemons, valgrind, strace), in clock ticks: the difference between the two over
/// a section is what the rest of the machine used meanwhile.
/// With them, the kernel's pressure-stall totals (µs during which some task waited for
/// a CPU, or for I/O — the benchmark's own tasks included).
#[derive(Clone, Copy, Debug)]
pub struct CpuTimes {
    machine_busy: u64,
    steal: u64,
    ours: u64,
    cpu_stall_us: u64,
    io_stall_us: u64,
}

/// How busy the rest of the machine was.
#[derive(Clone, Copy, Debug)]
pub struct OtherLoad {
    /// CPUs kept busy by processes that are not the benchmark's, on average.
    pub others: f64,
    /// CPUs the hypervisor gave to other guests while this one wanted to run.
    pub steal: f64,
    /// Share of the time some task waited for a CPU / for I/O (PSI "some").
    pub cpu_stall: f64,
    pub io_stall: f64,
}

/// The "some ... total=" microseconds of `/proc/pressure/<resource>` (0 without PSI).
fn stall_total(resource: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/pressure/{resource}"))
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("some"))
        .and_then(|line| line.rsplit_once("total="))
        .and_then(|(_, total)| total.trim().parse().ok())
        .unwrap_or(0)
}

impl CpuTimes {
    pub fn now() -> CpuTimes {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu user nice system idle iowait irq softirq steal guest guest_nice
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| cpu.get(i).copied().unwrap_or(0);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // After "pid (comm)": state is field 3; utime, stime, cutime, cstime are 14-17.
        let fields: Vec<u64> = own
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        CpuTimes {
            machine_busy: at(0) + at(1) + at(2) + at(5) + at(6),
            steal: at(7),
            ours: fields.get(11..15).map_or(0, |t| t.iter().sum()),
            cpu_stall_us: stall_total("cpu"),
            io_stall_us: stall_total("io"),
        }
    }

    pub fn others_since(&self, earlier: &CpuTimes, wall: Duration) -> OtherLoad {
        let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let per_cpu = |ticks: u64| ticks as f64 / ticks_per_second / wall.as_secs_f64();
        let busy = self.machine_busy.saturating_sub(earlier.machine_busy);
        let ours = self.ours.saturating_sub(earlier.ours);
        OtherLoad {
            others: per_cpu(busy.saturating_sub(ours)),
            steal: per_cpu(self.steal.saturating_sub(earlier.steal)),
            cpu_stall: (self.cpu_stall_us.saturating_sub(earlier.cpu_stall_us)) as f64
                / 1e6
                / wall.as_secs_f64(),
            io_stall: (self.io_stall_us.saturating_sub(earlier.io_stall_us)) as f64
                / 1e6
                / wall.as_secs_f64(),
        }
    }
}

/// Where the benchmark's client and the daemons run. With two or more CPUs the client
/// stays on CPU 0 and every daemon is started on CPU 1 (it inherits the mask of the
/// thread that spawns it), so that client and daemon never compete for one CPU and the
/// two daemons always run on the same one.
#[derive(Clone, Copy, Debug)]
pub struct Pinning {
    pub enabled: bool,
}

const CLIENT_CPU: usize = 0;
const DAEMON_CPU: usize = 1;

impl Pinning {
    /// Pins the calling (main) thread to the client CPU, if there are two CPUs.
    pub fn set_up() -> Pinning {
        let enabled = cpu_count() >= 2 && pin_current_thread(CLIENT_CPU);
        Pinning { enabled }
    }

    /// Runs `spawn` with the calling thread moved to the daemon CPU for the moment.
    pub fn spawn_on_daemon_cpu<T>(&self, spawn: impl FnOnce() -> T) -> T {
        if !self.enabled {
            return spawn();
        }
        pin_current_thread(DAEMON_CPU);
        let spawned = spawn();
        pin_current_thread(CLIENT_CPU);
        spawned
    }

    /// Runs `measure` with the client (the calling thread) on the daemon CPU: no
    /// cross-CPU wake-ups, so what a command costs the CPU shows in its latency.
    pub fn client_on_daemon_cpu<T>(&self, measure: impl FnOnce() -> T) -> T {
        pin_current_thread(DAEMON_CPU);
        let result = measure();
        pin_current_thread(CLIENT_CPU);
        result
    }

    pub fn describe(&self) -> String {
        if self.enabled {
            format!("client on CPU {CLIENT_CPU}, every daemon on CPU {DAEMON_CPU}")
        } else {
            "not pinned (fewer than 2 CPUs)".to_string()
        }
    }
}

fn pin_current_thread(cpu: usize) -> bool {
    let mut set = CpuSet::new();
    set.set(cpu).is_ok() && sched_setaffinity(Pid::from_raw(0), &set).is_ok()
}

/// Memory of one process, in KiB, from `/proc/<pid>/smaps_rollup`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
    /// Private_Clean + Private_Dirty (USS): pages no other process maps. Like PSS it
    /// depends on what else runs (a library page is private when no one else maps it);
    /// only the anonymous figure does not.
    pub private: u64,
    pub anonymous: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        let path = format!("/proc/{pid}/smaps_rollup");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {path}: {err}"));
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse().ok())
                .unwrap_or_else(|| panic!("{path} has no {name}"))
        };
        Memory {
            rss: field("Rss:"),
            pss: field("Pss:"),
            private: field("Private_Clean:") + field("Private_Dirty:"),
            anonymous: field("Anonymous:"),
        }
    }

    pub fn add(self, other: Memory) -> Memory {
        Memory {
            rss: self.rss + other.rss,
            pss: self.pss + other.pss,
            private: self.private + other.private,
            anonymous: self.anonymous + other.anonymous,
        }
    }
}

/// The mount a path lives on, from `/proc/self/mountinfo`.
#[derive(Clone, Debug)]
pub struct Filesystem {
    pub fs_type: String,
    pub source: String,
    pub mount_point: String,
    pub options: String,
}

impl Filesystem {
    pub fn of(path: &Path) -> Filesystem {
        let path = path
            .canonicalize()
            .expect("canonicalize the benchmark directory");
        let text = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
        // Fields: id parent dev root mount-point options [optional...] - type source super.
        // The longest matching mount point wins; among equals, the last (top) mount.
        let mut best: Option<(usize, Filesystem)> = None;
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(mount_point), Some(fs_type), Some(source)) =
                (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
            else {
                continue;
            };
            if !path.starts_with(mount_point) {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(len, _)| mount_point.len() >= *len)
            {
                let fs = Filesystem {
                    fs_type: fs_type.to_string(),
                    source: source.to_string(),
                    mount_point: mount_point.to_string(),
                    options: fields.get(5).unwrap_or(&"").to_string(),
                };
                best = Some((mount_point.len(), fs));
            }
        }
        best.map(|(_, fs)| fs)
            .expect("a mount for the benchmark directory")
    }

    pub fn describe(&self) -> String {
        format!(
            "{} on {} mounted at {} ({})",
            self.fs_type, self.source, self.mount_point, self.options
        )
    }
}

/// The processes `pid` started, and theirs, from `/proc/<pid>/task/*/children`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            found.extend(descendants(child));
            found.push(child);
        }
    }
    found
}

/// One line about the kernel and CPU, for the report.
pub fn describe_cpu() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{} x {model}, Linux {}", cpu_count(), kernel.trim())
}

/// CPU time a process has used so far, all threads, in ns (`/proc/<pid>/task/*/schedstat`,
/// first field: time on a CPU). Threads that already ended are not counted.
pub fn cpu_time_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
