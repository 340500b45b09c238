//! Sizes and durations as reports and messages write them: one rounding rule per quantity.
//!
//! Durations are seconds with millisecond precision ([`seconds`], [`seconds_since`]); totals in
//! summaries are rounded to hundredths ([`round2`]); sizes for people are binary units
//! ([`human_bytes`]).

use std::time::{Duration, Instant};

/// `x` rounded to `decimals` decimal places.
pub fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// A duration in seconds, to the millisecond.
pub fn seconds(d: Duration) -> f64 {
    round_to(d.as_secs_f64(), 3)
}

/// Seconds elapsed since `t`, to the millisecond.
pub fn seconds_since(t: Instant) -> f64 {
    seconds(t.elapsed())
}

/// Rounded to hundredths (the totals of reports and summaries).
pub fn round2(x: f64) -> f64 {
    round_to(x, 2)
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `67108864` → `67,108,864`: an exact byte count that can still be read.
pub fn exact_bytes(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 * 1024 * 1024), "64.0 MiB");
        assert_eq!(human_bytes(20 * 1024 * 1024 * 1024), "20.0 GiB");
    }

    #[test]
    fn exact_sizes() {
        assert_eq!(exact_bytes(0), "0");
        assert_eq!(exact_bytes(999), "999");
        assert_eq!(exact_bytes(1000), "1,000");
        assert_eq!(exact_bytes(67_108_864), "67,108,864");
        assert_eq!(exact_bytes(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn rounding() {
        assert_eq!(round2(1.23456), 1.23);
        assert_eq!(round_to(0.66666, 4), 0.6667);
        assert_eq!(seconds(Duration::from_micros(1_234_567)), 1.235);
    }
}
