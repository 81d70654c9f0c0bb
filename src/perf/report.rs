//! Results of one `xrdma perf` run: a human line and one JSON object.

use std::fmt::Write as _;
use std::time::Duration;

/// What one run measured. Rates count what the receiver got, not what the sender pushed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Test name (`raw-bw`, `raw-lat`, ...).
    pub test: String,
    /// Backend (`xdp`, `udp`).
    pub backend: String,
    /// How frames moved (zero-copy, copy, kernel UDP).
    pub mode: String,
    /// Payload bytes per message.
    pub size: usize,
    /// Messages counted: received (bandwidth) or completed round trips (latency).
    pub iters: u64,
    /// Messages the sender put on the wire.
    pub sent: u64,
    /// Time between the first and the last message counted.
    pub elapsed: Duration,
    /// Latency samples, sorted: one way (half a round trip) for ping-pong tests, the whole
    /// operation for rc-read-lat and rc-atomic-lat (as perftest reports them); empty for
    /// bandwidth tests.
    pub latencies: Vec<Duration>,
    /// Whole-cycle samples, sorted, of tests whose unit of work is more than the latency
    /// measured (`cm-connect`: set up, connect, disconnect and tear down); empty otherwise.
    pub cycles: Vec<Duration>,
}

impl Report {
    /// Messages per second.
    pub fn msg_rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.iters as f64 / s } else { 0.0 }
    }

    /// Payload gigabits per second.
    pub fn gbps(&self) -> f64 {
        self.msg_rate() * self.size as f64 * 8.0 / 1e9
    }

    /// Messages sent but not counted.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.iters)
    }

    /// The `p`th percentile (0..=100) of the latency samples, in microseconds.
    pub fn latency_us(&self, p: f64) -> Option<f64> {
        percentile(&self.latencies, p).map(|d| d.as_secs_f64() * 1e6)
    }

    /// Mean latency in microseconds.
    pub fn latency_avg_us(&self) -> Option<f64> {
        mean_us(&self.latencies)
    }

    /// The `p`th percentile (0..=100) of the cycle samples, in microseconds.
    pub fn cycle_us(&self, p: f64) -> Option<f64> {
        percentile(&self.cycles, p).map(|d| d.as_secs_f64() * 1e6)
    }

    /// One human-readable line.
    pub fn human(&self) -> String {
        let mut s = format!(
            "{:<9} {:>7} B  {:>10} msgs  {:>12.0} msg/s  {:>8.3} Gb/s",
            self.test,
            self.size,
            self.iters,
            self.msg_rate(),
            self.gbps()
        );
        if let (Some(p50), Some(p99), Some(avg)) = (
            self.latency_us(50.0),
            self.latency_us(99.0),
            self.latency_avg_us(),
        ) {
            let _ = write!(s, "  lat p50 {p50:.2} us  p99 {p99:.2} us  avg {avg:.2} us");
        }
        if let (Some(p50), Some(p99)) = (self.cycle_us(50.0), self.cycle_us(99.0)) {
            let _ = write!(s, "  cycle p50 {p50:.2} us  p99 {p99:.2} us");
        }
        if self.lost() > 0 {
            let _ = write!(s, "  lost {}", self.lost());
        }
        let _ = write!(s, "  [{} {}]", self.backend, self.mode);
        s
    }

    /// One JSON object on one line.
    pub fn json(&self) -> String {
        let mut s = String::from("{");
        let _ = write!(
            s,
            "\"test\":{},\"backend\":{},\"mode\":{},\"size\":{},\"iters\":{},\"sent\":{},\"lost\":{},\"elapsed_s\":{:.6},\"msg_rate\":{:.1},\"gbps\":{:.4}",
            quote(&self.test),
            quote(&self.backend),
            quote(&self.mode),
            self.size,
            self.iters,
            self.sent,
            self.lost(),
            self.elapsed.as_secs_f64(),
            self.msg_rate(),
            self.gbps()
        );
        for (key, p) in [
            ("lat_us_p50", 50.0),
            ("lat_us_p90", 90.0),
            ("lat_us_p99", 99.0),
            ("lat_us_max", 100.0),
        ] {
            if let Some(v) = self.latency_us(p) {
                let _ = write!(s, ",\"{key}\":{v:.3}");
            }
        }
        if let Some(avg) = self.latency_avg_us() {
            let _ = write!(s, ",\"lat_us_avg\":{avg:.3}");
        }
        for (key, p) in [
            ("cycle_us_p50", 50.0),
            ("cycle_us_p90", 90.0),
            ("cycle_us_p99", 99.0),
            ("cycle_us_max", 100.0),
        ] {
            if let Some(v) = self.cycle_us(p) {
                let _ = write!(s, ",\"{key}\":{v:.3}");
            }
        }
        if let Some(avg) = mean_us(&self.cycles) {
            let _ = write!(s, ",\"cycle_us_avg\":{avg:.3}");
        }
        s.push('}');
        s
    }
}

/// Mean of the samples in microseconds.
fn mean_us(samples: &[Duration]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let total: Duration = samples.iter().sum();
    Some(total.as_secs_f64() * 1e6 / samples.len() as f64)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_micros(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_micros(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_micros(100)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_micros(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn json_has_the_promised_keys_and_rates() {
        let r = Report {
            test: "raw-lat".into(),
            backend: "udp".into(),
            mode: "kernel \"UDP\"".into(),
            size: 64,
            iters: 4,
            sent: 5,
            elapsed: Duration::from_secs(2),
            latencies: vec![
                Duration::from_micros(10),
                Duration::from_micros(20),
                Duration::from_micros(30),
                Duration::from_micros(40),
            ],
            cycles: Vec::new(),
        };
        let j = r.json();
        assert!(!j.contains("cycle_us"), "no cycles, no cycle keys: {j}");
        for key in [
            "\"test\":\"raw-lat\"",
            "\"size\":64",
            "\"iters\":4",
            "\"msg_rate\":2.0",
            "\"gbps\":0.0000",
            "\"lat_us_p50\":20.000",
            "\"lat_us_p99\":40.000",
            "\"lost\":1",
            "kernel \\\"UDP\\\"",
        ] {
            assert!(j.contains(key), "{key} missing from {j}");
        }
        assert!(j.starts_with('{') && j.ends_with('}'));
    }

    #[test]
    fn cycles_get_their_own_percentiles() {
        let r = Report {
            test: "cm-connect".into(),
            iters: 2,
            elapsed: Duration::from_secs(1),
            latencies: vec![Duration::from_micros(100), Duration::from_micros(300)],
            cycles: vec![Duration::from_micros(400), Duration::from_micros(800)],
            ..Report::default()
        };
        let j = r.json();
        for key in [
            "\"msg_rate\":2.0",
            "\"lat_us_p50\":100.000",
            "\"lat_us_p99\":300.000",
            "\"cycle_us_p50\":400.000",
            "\"cycle_us_p99\":800.000",
            "\"cycle_us_avg\":600.000",
        ] {
            assert!(j.contains(key), "{key} missing from {j}");
        }
        assert!(
            r.human().contains("cycle p50 400.00 us  p99 800.00 us"),
            "{}",
            r.human()
        );
    }
}
