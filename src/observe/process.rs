//! Process figures for `/metrics`, named as Prometheus' client libraries name them
//! (`process_start_time_seconds`, `process_resident_memory_bytes`, `process_open_fds`,
//! `process_cpu_seconds_total`), read from `/proc/self` at scrape time. Parsing is pure and
//! tested on fixed text; on a system without `/proc` the figures are left out.

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Process {
    pub start_time_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub cpu_seconds: f64,
}

/// Clock ticks per second for `/proc/*/stat`: `sysconf(_SC_CLK_TCK)` is 100 on every Linux
/// target Rust supports (the kernel's `USER_HZ`).
const TICKS: f64 = 100.0;
const PAGE: u64 = 4096;

/// Fields of `/proc/self/stat` after the command (which may hold spaces and parentheses):
/// (utime + stime ticks, start time in ticks since boot, vsize bytes, rss pages).
pub fn parse_stat(stat: &str) -> Option<(u64, u64, u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of the man page, so field N is f[N - 3].
    let n = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
    Some((n(14)? + n(15)?, n(22)?, n(23)?, n(24)?))
}

/// `btime` of `/proc/stat`: boot time in Unix seconds.
pub fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `Max open files` soft limit of `/proc/self/limits`.
pub fn parse_max_fds(limits: &str) -> Option<u64> {
    let l = limits.lines().find(|l| l.starts_with("Max open files"))?;
    l["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Process {
    /// Reads `/proc/self`; None where there is no `/proc`.
    pub fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (cpu, start_ticks, vsize, rss) = parse_stat(&stat)?;
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_btime(&s))?;
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| parse_max_fds(&s));
        Some(Process {
            start_time_seconds: btime as f64 + start_ticks as f64 / TICKS,
            resident_memory_bytes: rss * PAGE,
            virtual_memory_bytes: vsize,
            // The directory handle of read_dir is one of them.
            open_fds: open_fds.saturating_sub(1),
            max_fds,
            cpu_seconds: cpu as f64 / TICKS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_command_name() {
        let stat = "4242 (sw (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 \
                    123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 \
                    0 0 0 0 0";
        assert_eq!(parse_stat(stat), Some((300, 123_456, 987_654_321, 2048)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn btime_and_limits() {
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu 1\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            65536                1048576              files\n";
        assert_eq!(parse_max_fds(limits), Some(65_536));
    }

    #[test]
    fn this_process_reads_sensibly() {
        let Some(p) = Process::read() else { return };
        let now = crate::clock::unix_ms() as f64 / 1000.0;
        assert!(p.start_time_seconds > 1e9 && p.start_time_seconds <= now + 1.0);
        assert!(p.resident_memory_bytes > 0);
        assert!(p.open_fds >= 3);
    }
}
