//! Retry delays, one rule for every retry Tandem makes: Cloud API sends, hook deliveries and
//! LLM calls. Pure: the caller brings the randomness.

use std::time::Duration;

/// Exponential backoff with jitter: `first`, doubled each attempt, at most `max`, plus up to
/// a quarter more so retries of many conversations do not all come back at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub first: Duration,
    /// The longest wait (before jitter).
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `attempt` (1 for the first retry), with `random` (0 to 1,
    /// uniformly drawn by the caller) choosing the jitter.
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let doubled = self
            .first
            .saturating_mul(1u32 << attempt.clamp(1, 21).saturating_sub(1));
        let capped = doubled.min(self.max);
        capped + capped.mul_f64(random.clamp(0.0, 1.0) / 4.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_with_a_quarter_of_jitter() {
        let b = Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        let secs = |attempt, random| b.delay(attempt, random).as_secs_f64();
        assert_eq!(secs(1, 0.0), 1.0);
        assert_eq!(secs(2, 0.0), 2.0);
        assert_eq!(secs(3, 0.0), 4.0);
        assert_eq!(secs(4, 0.0), 5.0, "capped");
        assert_eq!(secs(4, 1.0), 6.25, "a quarter of jitter at most");
        assert_eq!(secs(1_000, 0.5), 5.625, "no overflow");
        assert_eq!(secs(0, 0.0), 1.0);
    }
}
