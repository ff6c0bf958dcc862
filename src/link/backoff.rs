//! Re-dial delays: exponential back-off with jitter. Pure: the random draw is passed in.

use std::time::Duration;

/// Delays between dial attempts to one partner.
///
/// Drive it by calling [`Backoff::next_delay`] after each failed attempt or dropped
/// link (with a fresh uniform draw in `[0, 1)`), and [`Backoff::reset`] once a link is
/// established. The n-th delay is drawn uniformly in `[d/2, d]` with
/// `d = min(max, min·2^n)` ("equal jitter"), so partners that lost their links at the
/// same moment do not re-dial in lockstep, and no delay is below half the floor.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// The delay before the next attempt; `jitter` is a uniform draw in `[0, 1)`.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let exp = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self
            .min
            .checked_mul(1u32 << exp)
            .map_or(self.max, |d| d.min(self.max));
        let jitter = jitter.clamp(0.0, 1.0);
        ceiling.mul_f64(0.5 + jitter / 2.0)
    }

    /// A link was established: the next drop starts again from the floor.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_ceiling_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(400));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(800));
        assert_eq!(b.next_delay(1.0), Duration::from_secs(1));
        for _ in 0..100 {
            let d = b.next_delay(0.5);
            assert_eq!(d, Duration::from_millis(750));
        }
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
    }
}
