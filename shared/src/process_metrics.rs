//! The standard `process_*` metrics (CPU time, memory, file descriptors, threads, start
//! time), read from `/proc/self` when `/metrics` is scraped.
//!
//! They keep the names every Prometheus client library gives them, without the services'
//! `pwrecovery_` prefix: dashboards and rules written for any process read them as they
//! are, and the scrape's `job` and `instance` labels already say whose process it is. They
//! are written into the exposition directly rather than through the recorder, which would
//! prefix them, and read at scrape time, so they are never older than the scrape. Linux
//! only: where `/proc/self` cannot be read, the metrics it would give are left out.

use std::fmt::Write as _;

/// The names of the metrics this module writes.
pub const NAMES: [&str; 7] = [
    "process_cpu_seconds_total",
    "process_start_time_seconds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_threads",
    "process_open_fds",
    "process_max_fds",
];

/// Clock ticks per second of the CPU and start times in `/proc/self/stat`: `USER_HZ`, which
/// the kernel's interface to user space fixes at 100 whatever its own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc` says of this process. Each reading is `None` when its file or field could
/// not be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
    pub resident_memory_bytes: Option<u64>,
    pub virtual_memory_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl Process {
    /// Reads `/proc/self/{stat,status,limits,fd}` and the boot time from `/proc/stat`.
    pub fn read() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let mut process = Self::parse(
            &read("/proc/self/stat"),
            &read("/proc/self/status"),
            &read("/proc/self/limits"),
            &read("/proc/stat"),
        );
        process.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        process
    }

    /// The readings of the four files' texts (the open descriptors are counted apart).
    pub fn parse(stat: &str, status: &str, limits: &str, system_stat: &str) -> Self {
        // The command name, in parentheses, may itself hold spaces and parentheses: the
        // fields are counted from the last `)`. After it come field 3 (`state`) onwards.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        let cpu_seconds = match (field(14), field(15)) {
            (Some(user), Some(system)) => Some((user + system) / TICKS_PER_SECOND),
            _ => None,
        };
        let boot_time = system_stat
            .lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        let start_time_seconds = match (boot_time, field(22)) {
            (Some(boot), Some(ticks)) => Some(boot + ticks / TICKS_PER_SECOND),
            _ => None,
        };
        let status_kib = |name: &str| -> Option<u64> {
            status.lines().find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix(':')?;
                value.trim().trim_end_matches("kB").trim().parse().ok()
            })
        };
        let max_fds = limits.lines().find_map(|line| {
            let soft = line
                .strip_prefix("Max open files")?
                .split_whitespace()
                .next()?;
            // "unlimited" has no number: left out.
            soft.parse().ok()
        });
        Self {
            cpu_seconds,
            start_time_seconds,
            resident_memory_bytes: status_kib("VmRSS").map(|kib| kib * 1024),
            virtual_memory_bytes: status_kib("VmSize").map(|kib| kib * 1024),
            threads: status_kib("Threads"),
            open_fds: None,
            max_fds,
        }
    }

    /// Appends the readings to a Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(value) = value {
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
                );
            }
        };
        let int = |v: Option<u64>| v.map(|v| v as f64);
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds,
        );
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds,
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            int(self.resident_memory_bytes),
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            int(self.virtual_memory_bytes),
        );
        metric(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            int(self.threads),
        );
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            int(self.open_fds),
        );
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            int(self.max_fds),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (mail worker (2)) S 1 4242 4242 0 -1 4194560 2712 0 0 0 \
                        150 70 0 0 20 0 9 0 123456 812384256 5210 18446744073709551615";
    const STATUS: &str = "Name:\tmail-worker\nVmSize:\t  793344 kB\nVmRSS:\t   20840 kB\n\
                          Threads:\t9\nSigQ:\t0/31760\n";
    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units\n\
                          Max cpu time              unlimited            unlimited            seconds\n\
                          Max open files            1024                 524288               files\n";
    const SYSTEM: &str = "cpu  1 2 3 4\nbtime 1790000000\nprocesses 99\n";

    #[test]
    fn the_readings_come_from_the_fields_after_the_command_name() {
        let p = Process::parse(STAT, STATUS, LIMITS, SYSTEM);
        assert_eq!(p.cpu_seconds, Some(2.2));
        assert_eq!(p.start_time_seconds, Some(1_790_000_000.0 + 1234.56));
        assert_eq!(p.resident_memory_bytes, Some(20840 * 1024));
        assert_eq!(p.virtual_memory_bytes, Some(793_344 * 1024));
        assert_eq!(p.threads, Some(9));
        assert_eq!(p.max_fds, Some(1024));
    }

    #[test]
    fn unreadable_files_leave_their_metrics_out() {
        let p = Process::parse("", "", "", "");
        assert_eq!(p, Process::default());
        let mut out = String::new();
        p.render(&mut out);
        assert_eq!(out, "");
    }

    #[test]
    fn this_process_reports_every_reading_on_linux() {
        let p = Process::read();
        let mut out = String::new();
        p.render(&mut out);
        for name in NAMES {
            assert!(out.contains(&format!("\n{name} ")), "{name} in {out}");
        }
        assert!(p.resident_memory_bytes.unwrap_or_default() > 1024 * 1024);
        assert!(p.open_fds.unwrap_or_default() >= 3);
        assert!(p.threads.unwrap_or_default() >= 1);
    }
}
