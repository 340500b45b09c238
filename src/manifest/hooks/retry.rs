//! When a failed hook is tried again: the `retry` policy and its backoff arithmetic.
//!
//! The delay before retry `n` (1-based) is, as upstream: exponential `d·2^(n-1)`, linear `d·n`,
//! constant `d`, each capped at `max_delay` (upstream leaves constant uncapped; a cap that
//! sometimes does not apply surprises more than it helps). The arithmetic is part of the policy,
//! so it is here with the model; the runner only waits, and the arithmetic is tested without
//! waiting.

use std::time::Duration;

use serde::Serialize;

use crate::spelling::spelled_enum;

spelled_enum! {
    /// How the delay grows from one retry to the next.
    #[derive(Default)]
    pub enum Backoff {
        #[default]
        Exponential = "exponential",
        Linear = "linear",
        Constant = "constant",
    }
}

/// A hook's `retry` section. Defaults are upstream's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// Seconds.
    pub initial_delay: f64,
    pub strategy: Backoff,
    /// Seconds.
    pub max_delay: f64,
    /// Whether an attempt that timed out is tried again.
    pub retry_on_timeout: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 0,
            initial_delay: 1.0,
            strategy: Backoff::Exponential,
            max_delay: 60.0,
            retry_on_timeout: true,
        }
    }
}

/// Upper bounds that keep a typo (`initial_delay: 6000`) from parking a migration for hours.
pub const MAX_RETRIES: u32 = 100;
pub const MAX_DELAY_SECONDS: f64 = 3600.0;

impl RetryPolicy {
    /// The wait before retry `n` (1 = the first retry, i.e. the second attempt).
    pub fn delay_before_retry(&self, n: u32) -> Duration {
        let d = self.initial_delay.max(0.0);
        let raw = match self.strategy {
            // 2^(n-1) overflows f64 only past n≈1024; clamp the exponent well before that.
            Backoff::Exponential => {
                d * 2f64.powi(i32::try_from(n.saturating_sub(1).min(64)).unwrap_or(64))
            }
            Backoff::Linear => d * f64::from(n),
            Backoff::Constant => d,
        };
        let secs = raw.min(self.max_delay.max(0.0));
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(strategy: Backoff, d: f64, max: f64) -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            initial_delay: d,
            strategy,
            max_delay: max,
            retry_on_timeout: true,
        }
    }

    fn secs(p: &RetryPolicy, n: u32) -> f64 {
        p.delay_before_retry(n).as_secs_f64()
    }

    #[test]
    fn upstream_formulas() {
        let e = policy(Backoff::Exponential, 1.5, 60.0);
        assert_eq!([1, 2, 3, 4].map(|n| secs(&e, n)), [1.5, 3.0, 6.0, 12.0]);
        let l = policy(Backoff::Linear, 1.5, 60.0);
        assert_eq!([1, 2, 3, 4].map(|n| secs(&l, n)), [1.5, 3.0, 4.5, 6.0]);
        let c = policy(Backoff::Constant, 1.5, 60.0);
        assert_eq!([1, 2, 3, 4].map(|n| secs(&c, n)), [1.5; 4]);
    }

    #[test]
    fn capped_at_max_delay() {
        let e = policy(Backoff::Exponential, 1.0, 10.0);
        assert_eq!(
            [4, 5, 6, 1000, u32::MAX].map(|n| secs(&e, n)),
            [8.0, 10.0, 10.0, 10.0, 10.0]
        );
        let c = policy(Backoff::Constant, 30.0, 10.0);
        assert_eq!(secs(&c, 1), 10.0);
    }

    #[test]
    fn defaults_are_upstreams() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries, 0);
        assert_eq!(p.initial_delay, 1.0);
        assert_eq!(p.strategy, Backoff::Exponential);
        assert_eq!(p.max_delay, 60.0);
        assert!(p.retry_on_timeout);
    }

    fn strategy() -> impl Strategy<Value = Backoff> {
        prop_oneof![
            Just(Backoff::Exponential),
            Just(Backoff::Linear),
            Just(Backoff::Constant)
        ]
    }

    proptest! {
        #[test]
        fn never_above_the_cap_nor_negative(s in strategy(), d in 0.0f64..3600.0, max in 0.0f64..3600.0, n in 1u32..u32::MAX) {
            let p = policy(s, d, max);
            let got = secs(&p, n);
            prop_assert!(got >= 0.0);
            prop_assert!(got <= max + 1e-9, "{got} > {max}");
        }

        #[test]
        fn never_shrinks_from_one_retry_to_the_next(s in strategy(), d in 0.0f64..3600.0, max in 0.0f64..3600.0, n in 1u32..10_000) {
            let p = policy(s, d, max);
            prop_assert!(secs(&p, n + 1) >= secs(&p, n));
        }

        #[test]
        fn first_retry_waits_the_initial_delay(s in strategy(), d in 0.0f64..3600.0) {
            let p = policy(s, d, 3600.0);
            prop_assert!((secs(&p, 1) - d).abs() < 1e-6);
        }
    }
}
