//! How late this host is while something timed runs: a [`LoadProbe`] measures the scheduling
//! delay of short timer waits (how long a thread that should wake after 1 ms waits for a CPU
//! beyond that) and, where the kernel has pressure stall information, the share of the time
//! some task waited for a CPU (`/proc/pressure/cpu`). Scenarios use it to judge a timeout
//! fairly: a reply that did not come within 100 ms means little if the host kept runnable
//! threads waiting 40 ms at a time.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The timer wait whose overrun is measured.
const TICK: Duration = Duration::from_millis(1);

/// What a [`LoadProbe`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Lateness {
    /// The longest a 1 ms timer wait overran: how long a thread ready to run waited for a CPU.
    pub max: Duration,
    /// Timer waits measured.
    pub samples: u32,
    /// How long the probe ran.
    pub window: Duration,
    /// The share (0 to 1) of the window during which some task waited for a CPU, from
    /// `/proc/pressure/cpu`; `None` without pressure stall information.
    pub cpu_pressure: Option<f64>,
}

impl Lateness {
    /// `the host was 42 ms late (cpu pressure 87%)`, for messages.
    pub fn describe(&self) -> String {
        let mut out = format!("the host was {} ms late", self.max.as_millis());
        if let Some(p) = self.cpu_pressure {
            out.push_str(&format!(" (cpu pressure {:.0}%)", p * 100.0));
        }
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
}

impl LoadProbe {
    /// Starts measuring.
    pub fn start() -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let pressure = cpu_stall_us();
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
        }
    }

    /// Stops measuring and says what was seen.
    pub fn stop(mut self) -> Lateness {
        let window = self.started.elapsed();
        drop(self.stop.take());
        let (max, samples) = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let cpu_pressure = match (self.pressure, cpu_stall_us()) {
            (Some(a), Some(b)) if !window.is_zero() => {
                Some((b.saturating_sub(a) as f64 / window.as_micros() as f64).min(1.0))
            }
            _ => None,
        };
        Lateness {
            max,
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
