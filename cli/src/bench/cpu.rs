//! The load generator's own CPU time, read from `/proc/self/stat` with std only.
//!
//! Job: say how much CPU the generator itself used, since on a small machine it competes
//! with the servers it measures.
//!
//! Invariants: the figures cover every thread of the process (`utime` and `stime` of
//! `/proc/self/stat`); on a system without procfs the answer is `None`, never an error.

use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`). Linux fixes it at 100 for
/// user space on every architecture; std offers no `sysconf(_SC_CLK_TCK)`.
pub const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// User and system CPU time consumed so far by this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTime {
    /// Time in user mode.
    pub user: Duration,
    /// Time in the kernel on the process's behalf.
    pub system: Duration,
}

impl CpuTime {
    /// The process's CPU time now; `None` where `/proc/self/stat` cannot be read or parsed.
    pub fn now() -> Option<CpuTime> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        parse_stat(&text)
    }

    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The time used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

fn ticks(n: u64) -> Duration {
    Duration::from_millis(n.saturating_mul(1000) / CLOCK_TICKS_PER_SECOND)
}

/// Parses the `utime` (field 14) and `stime` (field 15) of a `/proc/PID/stat` line. The
/// command name (field 2) is in parentheses and may hold spaces and parentheses itself,
/// so fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<CpuTime> {
    let after_name = &text[text.rfind(')')? + 1..];
    // after the name: field 3 (state) is at position 0, so field k is at k - 3
    let mut fields = after_name.split_ascii_whitespace();
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(CpuTime {
        user: ticks(utime),
        system: ticks(stime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_with_awkward_names() {
        let line = "4242 (kv cli) (x)) S 1 2 3 4 5 6 7 8 9 10 250 37 0 0 20 0 3 0 100 0 0";
        let cpu = parse_stat(line).expect("well-formed line");
        assert_eq!(cpu.user, Duration::from_millis(2500));
        assert_eq!(cpu.system, Duration::from_millis(370));
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        assert_eq!(parse_stat("no parens"), None);
    }

    #[test]
    fn this_process_cpu_time_advances_while_it_computes() {
        let Some(start) = CpuTime::now() else {
            return; // no procfs here: nothing to check
        };
        // Spin until a clock tick is charged to us; bounded so a broken reader fails.
        let begun = std::time::Instant::now();
        let mut x = 0u64;
        let mut used = Duration::ZERO;
        while used.is_zero() && begun.elapsed() < Duration::from_secs(5) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            used = CpuTime::now().expect("readable once").since(&start).total();
        }
        assert!(!used.is_zero(), "no CPU time seen after 5 s of spinning");
    }
}
