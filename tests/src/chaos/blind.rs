//! When the harness could not see: spans in which its own measurements do not hold.
//!
//! Two kinds, both recorded as they happen:
//! - the prober was silent: two consecutive attempts started more than [`PROBER_SILENCE`]
//!   apart (it starts one every probe interval), so an outage's end inside that gap is unknown
//!   to within the gap;
//! - the host stalled: a `SCHED_FIFO` thread that wakes every [`TICK`] was not run for more
//!   than [`HOST_STALL`]. Nothing below real-time priority ran then, so no daemon could keep
//!   its timers; the span carries the pressure-stall (PSI) and steal figures the kernel
//!   counted meanwhile (and in at most 100 ms before it), to tell a frozen virtual machine
//!   from a kernel busy with I/O;
//! - ordinary tasks stalled: a second thread, at normal priority, was not run for more than
//!   [`HOST_STALL`] while the real-time one was. The harness's own threads (prober, watchers)
//!   are such tasks, and so are the daemons; the span carries the same figures.
//!
//! The invariants subtract blind time from the durations they hold to bounds and report what
//! they could not judge apart from the violations; they never drop a failure the harness saw.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::observe::Recorder;

/// A gap between two attempt starts longer than this is a silence of the prober.
pub const PROBER_SILENCE: Duration = Duration::from_millis(25);
/// The stall monitor's period.
pub const TICK: Duration = Duration::from_millis(2);
/// A wake-up of the stall monitor later than this after the previous one is a host stall.
pub const HOST_STALL: Duration = Duration::from_millis(25);
/// How often the monitor reads the kernel's counters, so that a stall's figures cover it and
/// at most this much before it.
const PRESSURE_PERIOD: Duration = Duration::from_millis(100);
/// The stall monitor's real-time priority (above the agents' automatic `SCHED_RR` steps).
const PRIORITY: i32 = 90;

/// What the kernel counted during a host stall, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pressure {
    /// PSI `some` for the CPU (some task waited for a CPU), `full` for I/O and memory (every
    /// non-idle task waited).
    pub cpu_some: u64,
    pub io_full: u64,
    pub memory_full: u64,
    /// Time the hypervisor ran something else (`/proc/stat` steal).
    pub steal: u64,
}

impl Pressure {
    /// The counters now; a missing file reads as 0.
    pub fn read() -> Pressure {
        let psi = |resource: &str, line: &str| {
            std::fs::read_to_string(format!("/proc/pressure/{resource}"))
                .ok()
                .and_then(|text| psi_total(&text, line))
                .unwrap_or(0)
        };
        Pressure {
            cpu_some: psi("cpu", "some"),
            io_full: psi("io", "full"),
            memory_full: psi("memory", "full"),
            steal: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|text| steal_us(&text))
                .unwrap_or(0),
        }
    }

    /// The counts from `earlier` to `self`.
    pub fn since(&self, earlier: &Pressure) -> Pressure {
        Pressure {
            cpu_some: self.cpu_some.saturating_sub(earlier.cpu_some),
            io_full: self.io_full.saturating_sub(earlier.io_full),
            memory_full: self.memory_full.saturating_sub(earlier.memory_full),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

impl std::fmt::Display for Pressure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "PSI cpu some {:.0} ms, io full {:.0} ms, memory full {:.0} ms; steal {:.0} ms",
            ms(self.cpu_some),
            ms(self.io_full),
            ms(self.memory_full),
            ms(self.steal)
        )
    }
}

/// `total=` of the `some` or `full` line of a `/proc/pressure/*` file.
fn psi_total(text: &str, line: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(line))?
        .split_whitespace()
        .find_map(|field| field.strip_prefix("total="))?
        .parse()
        .ok()
}

/// The steal column of `/proc/stat`'s `cpu` line, in microseconds (it counts USER_HZ ticks,
/// 100 a second on Linux).
fn steal_us(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: u64 = line.split_whitespace().nth(8)?.parse().ok()?;
    Some(ticks * 10_000)
}

/// Why the harness was blind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlindCause {
    ProberSilent,
    HostStall(Pressure),
    /// Ordinary tasks were not run, real-time ones were.
    TaskStall(Pressure),
}

/// A span in which the harness could not see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlindSpan {
    pub from: Instant,
    pub to: Instant,
    pub cause: BlindCause,
}

impl BlindSpan {
    pub fn is_host_stall(&self) -> bool {
        matches!(self.cause, BlindCause::HostStall(_))
    }

    pub fn length(&self) -> Duration {
        self.to.saturating_duration_since(self.from)
    }
}

/// How much of `[from, to]` the union of `spans` covers.
pub fn overlap<'a>(
    from: Instant,
    to: Instant,
    spans: impl IntoIterator<Item = &'a BlindSpan>,
) -> Duration {
    let mut clipped: Vec<(Instant, Instant)> = spans
        .into_iter()
        .filter(|s| s.to > from && s.from < to)
        .map(|s| (s.from.max(from), s.to.min(to)))
        .collect();
    clipped.sort();
    let mut covered = Duration::ZERO;
    let mut cursor = from;
    for (a, b) in clipped {
        let a = a.max(cursor);
        if b > a {
            covered += b - a;
            cursor = b;
        }
    }
    covered
}

/// The stall monitor: a real-time thread that records host stalls and a normal one that
/// records stalls of ordinary tasks; stopped (and joined) on drop.
#[derive(Debug)]
pub struct StallMonitor {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl StallMonitor {
    /// Starts the monitor. If real-time priority is refused it still runs, and records that as
    /// a harness error (its host stalls then include mere CPU contention).
    pub fn start(recorder: Recorder) -> std::io::Result<StallMonitor> {
        let stop = Arc::new(AtomicBool::new(false));
        // The real-time thread's last stall: a normal thread's stall that overlaps it is the
        // host's, which the real-time thread records.
        let host_stall = Arc::new(Mutex::new(None));
        let mut monitor = StallMonitor {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for realtime in [true, false] {
            let (recorder, stop, host_stall) = (recorder.clone(), stop.clone(), host_stall.clone());
            monitor.threads.push(
                std::thread::Builder::new()
                    .name(
                        if realtime {
                            "chaos-stalls-rt"
                        } else {
                            "chaos-stalls"
                        }
                        .into(),
                    )
                    .spawn(move || watch(&recorder, &stop, realtime, &host_stall))?,
            );
        }
        Ok(monitor)
    }
}

impl Drop for StallMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A span as (from, to).
type Span = (Instant, Instant);

fn watch(recorder: &Recorder, stop: &AtomicBool, realtime: bool, host_stall: &Mutex<Option<Span>>) {
    if realtime && let Err(error) = set_realtime() {
        recorder.harness_error(format!(
            "stall monitor: SCHED_FIFO refused ({error}); host stalls are not told from CPU contention"
        ));
    }
    let host_stall = || host_stall.lock().unwrap_or_else(PoisonError::into_inner);
    let mut pressure = Pressure::read();
    let mut pressure_at = Instant::now();
    let mut last = pressure_at;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        if now - last > HOST_STALL {
            let stall = (last + TICK, now);
            // Published before the counters are read: the normal thread, woken by the same
            // end of a host stall, finds it.
            if realtime {
                *host_stall() = Some(stall);
            }
            let after = Pressure::read();
            let figures = after.since(&pressure);
            let cause = if realtime {
                Some(BlindCause::HostStall(figures))
            } else if !shares(stall, *host_stall()) {
                Some(BlindCause::TaskStall(figures))
            } else {
                None
            };
            if let Some(cause) = cause {
                recorder.blind_span(BlindSpan {
                    from: stall.0,
                    to: stall.1,
                    cause,
                });
            }
            (pressure, pressure_at) = (after, now);
        } else if now - pressure_at > PRESSURE_PERIOD {
            (pressure, pressure_at) = (Pressure::read(), now);
        }
        last = now;
    }
}

/// Whether a normal thread's `stall` overlaps the real-time thread's last one (then it is that
/// host stall, not one of ordinary tasks only).
fn shares(stall: Span, host_stall: Option<Span>) -> bool {
    host_stall.is_some_and(|(from, to)| from < stall.1 && stall.0 < to)
}

/// Puts the calling thread under `SCHED_FIFO`.
fn set_realtime() -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: PRIORITY,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pressure_files_and_proc_stat_parse() {
        let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=567\n";
        assert_eq!(psi_total(psi, "some"), Some(1234));
        assert_eq!(psi_total(psi, "full"), Some(567));
        assert_eq!(psi_total("garbage", "full"), None);
        let stat = "cpu  10 20 30 40 50 60 70 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(steal_us(stat), Some(80_000));
        let later = Pressure {
            cpu_some: 10,
            io_full: 5,
            memory_full: 1,
            steal: 0,
        };
        let earlier = Pressure {
            cpu_some: 4,
            io_full: 7,
            ..Pressure::default()
        };
        assert_eq!(
            later.since(&earlier),
            Pressure {
                cpu_some: 6,
                io_full: 0,
                memory_full: 1,
                steal: 0
            }
        );
    }

    #[test]
    fn a_normal_threads_stall_is_the_hosts_only_if_it_overlaps_the_real_time_ones() {
        let t = Instant::now();
        let span = |a: u32, b: u32| (t + a * MS, t + b * MS);
        // Both threads stalled over the same freeze (the normal one woke later).
        assert!(shares(span(100, 180), Some(span(102, 170))));
        // The real-time thread ran throughout; its last stall was long before.
        assert!(!shares(span(500, 600), Some(span(102, 170))));
        assert!(!shares(span(500, 600), None));
    }

    #[test]
    fn overlap_counts_the_union_of_the_spans_inside_the_interval() {
        let t = Instant::now();
        let span = |a: u32, b: u32| BlindSpan {
            from: t + a * MS,
            to: t + b * MS,
            cause: BlindCause::ProberSilent,
        };
        // 50..150 and 100..200 overlap (union 50..200); 300..400 is clipped to 300..350.
        let spans = [
            span(100, 200),
            span(50, 150),
            span(300, 400),
            span(500, 600),
        ];
        assert_eq!(overlap(t, t + 350 * MS, &spans), 200 * MS);
        assert_eq!(overlap(t + 210 * MS, t + 290 * MS, &spans), Duration::ZERO);
        assert_eq!(overlap(t, t + 1000 * MS, &[]), Duration::ZERO);
    }
}
