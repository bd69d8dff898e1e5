//! How late this host is while something timed runs: a [`LoadProbe`] measures the scheduling
//! delay of short timer waits (how long a thread that should wake after 1 ms waits for a CPU
//! beyond that), how long the kernel's `ksoftirqd` threads, which carry the packets between
//! machines when the kernel defers its network work, waited for a CPU, and, where the kernel
//! has pressure stall information, the share of the time some task waited for a CPU
//! (`/proc/pressure/cpu`). Scenarios use it to judge a timeout
//! fairly: a reply that did not come within 100 ms means little if the host kept runnable
//! threads waiting 40 ms at a time.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The timer wait whose overrun is measured.
const TICK: Duration = Duration::from_millis(1);
/// CPU pressure is not read for shorter windows.
const MIN_PRESSURE_WINDOW: Duration = Duration::from_millis(20);

/// What a [`LoadProbe`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Lateness {
    /// How late the host was: the larger of [`Lateness::timer`] and [`Lateness::softirq`]
    /// (callers may raise it with what they measured themselves).
    pub max: Duration,
    /// The longest a 1 ms timer wait overran: how long a thread ready to run waited for a CPU.
    pub timer: Duration,
    /// The longest any CPU's `ksoftirqd` waited to run during the window (its `run_delay` in
    /// `/proc/<pid>/schedstat`): packets between machines are handled there when the kernel
    /// defers its network work, so this is how late the network itself was. Zero if unknown.
    pub softirq: Duration,
    /// Timer waits measured.
    pub samples: u32,
    /// How long the probe ran.
    pub window: Duration,
    /// The share (0 to 1) of the window during which some task waited for a CPU, from
    /// `/proc/pressure/cpu`; `None` without pressure stall information.
    pub cpu_pressure: Option<f64>,
}

impl Lateness {
    /// `the host was 42 ms late, cpu pressure 87%`, for outputs.
    pub fn brief(&self) -> String {
        let mut out = format!("the host was {} ms late", self.max.as_millis());
        if let Some(p) = self.cpu_pressure {
            out.push_str(&format!(", cpu pressure {:.0}%", p * 100.0));
        }
        out
    }

    /// `the host was 42 ms late (timers 42 ms, network softirqs 3 ms, cpu pressure 87%)`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "the host was {} ms late (timers {} ms, network softirqs {} ms",
            self.max.as_millis(),
            self.timer.as_millis(),
            self.softirq.as_millis()
        );
        if let Some(p) = self.cpu_pressure {
            out.push_str(&format!(", cpu pressure {:.0}%", p * 100.0));
        }
        out.push(')');
        out
    }
}

/// Measures the host's lateness from [`LoadProbe::start`] to [`LoadProbe::stop`] on a thread
/// of its own that waits 1 ms at a time.
#[derive(Debug)]
pub struct LoadProbe {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<(Duration, u32)>>,
    started: Instant,
    pressure: Option<u64>,
    softirq: Vec<(u32, u64)>,
}

impl LoadProbe {
    /// Starts measuring.
    pub fn start() -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let pressure = cpu_stall_us();
        let softirq = softirq_delays();
        let thread = std::thread::Builder::new()
            .name("load-probe".into())
            .spawn(move || {
                let (mut max, mut samples) = (Duration::ZERO, 0u32);
                loop {
                    let began = Instant::now();
                    // The stop message (or the sender's drop) is the signal; the timeout is
                    // the measurement.
                    match stopped.recv_timeout(TICK) {
                        Err(RecvTimeoutError::Timeout) => {
                            max = max.max(began.elapsed().saturating_sub(TICK));
                            samples += 1;
                        }
                        _ => return (max, samples),
                    }
                }
            })
            .ok();
        Self {
            stop: Some(stop),
            thread,
            started: Instant::now(),
            pressure,
            softirq,
        }
    }

    /// Stops measuring and says what was seen.
    pub fn stop(mut self) -> Lateness {
        let window = self.started.elapsed();
        drop(self.stop.take());
        let (timer, samples) = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let after = softirq_delays();
        let softirq = self
            .softirq
            .iter()
            .filter_map(|(pid, before)| {
                let (_, now) = after.iter().find(|(p, _)| p == pid)?;
                Some(Duration::from_nanos(now.saturating_sub(*before)))
            })
            .max()
            .unwrap_or_default();
        // The kernel adds to the counter in steps; over a window much shorter than its
        // averaging period one step reads as 100%.
        let cpu_pressure = match (self.pressure, cpu_stall_us()) {
            (Some(a), Some(b)) if window >= MIN_PRESSURE_WINDOW => {
                Some((b.saturating_sub(a) as f64 / window.as_micros() as f64).min(1.0))
            }
            _ => None,
        };
        Lateness {
            max: timer.max(softirq),
            timer,
            softirq,
            samples,
            window,
            cpu_pressure,
        }
    }
}

impl Drop for LoadProbe {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `ksoftirqd/<cpu>` threads: their pids, found once (kernel threads live as long as the
/// host's boot).
fn ksoftirqd() -> &'static [u32] {
    static PIDS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    PIDS.get_or_init(|| {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.starts_with("ksoftirqd/"))
            })
            .collect();
        pids.sort_unstable();
        pids
    })
}

/// Each `ksoftirqd`'s total time waiting on a run queue, in nanoseconds.
fn softirq_delays() -> Vec<(u32, u64)> {
    ksoftirqd()
        .iter()
        .filter_map(|&pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
            Some((pid, parse_run_delay(&text)?))
        })
        .collect()
}

/// The second field of `/proc/<pid>/schedstat`: nanoseconds spent waiting on a run queue.
fn parse_run_delay(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// `some total` of `/proc/pressure/cpu`: microseconds during which some task waited for a CPU.
fn cpu_stall_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    parse_some_total(&text)
}

fn parse_some_total(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_some_line_of_cpu_pressure() {
        let text = "some avg10=14.18 avg60=42.30 avg300=21.82 total=86358541\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_some_total(text), Some(86_358_541));
        assert_eq!(parse_some_total("garbage"), None);
    }

    #[test]
    fn reads_the_run_delay_of_schedstat() {
        assert_eq!(
            parse_run_delay("2356741782 16704502490 27922\n"),
            Some(16_704_502_490)
        );
        assert_eq!(parse_run_delay("12"), None);
    }

    #[test]
    fn a_probe_measures_its_window() {
        let probe = LoadProbe::start();
        // A wait on a channel nobody sends on: the probe's window.
        let (_tx, rx) = mpsc::channel::<()>();
        let _ = rx.recv_timeout(Duration::from_millis(30));
        let late = probe.stop();
        assert!(late.window >= Duration::from_millis(30), "{late:?}");
        assert!(late.samples >= 1, "{late:?}");
        assert!(late.describe().starts_with("the host was "), "{late:?}");
    }
}
