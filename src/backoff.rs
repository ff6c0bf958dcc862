//! Retry delays: exponential back-off with jitter, for camera reconnects and partner
//! re-dials. Pure: the random draw is passed in.

use std::time::Duration;

/// Delays between attempts to reach one camera or one partner.
///
/// Drive it by calling [`Backoff::next_delay`] after each failed attempt (with a fresh
/// uniform draw in `[0, 1)`), and [`Backoff::reset`] once a session or link has proved
/// healthy. The n-th delay is drawn uniformly in `[d/2, d]` with `d = min(max, min·2^n)`
/// ("equal jitter"): cameras or partners that failed together (a switch reboot, a cut
/// link) do not come back in lockstep, and no delay is below half the floor.
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
        // 2^30 times any sensible floor is past any ceiling: stop doubling there.
        let exp = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self
            .min
            .checked_mul(1u32 << exp)
            .map_or(self.max, |d| d.min(self.max));
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            1.0
        };
        ceiling.mul_f64(0.5 + jitter / 2.0)
    }

    /// A session or link proved healthy: the next failure starts again from the floor.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn delays_double_from_half_a_second_to_thirty_seconds() {
        let mut b = Backoff::new(MS(500), Duration::from_secs(30));
        let ceilings: Vec<Duration> = (0..9).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(
            ceilings,
            [
                MS(500),
                MS(1000),
                MS(2000),
                MS(4000),
                MS(8000),
                MS(16000),
                MS(30000),
                MS(30000),
                MS(30000)
            ]
        );
        // Thousands of failures later it neither overflows nor drops below the band.
        for _ in 0..10_000 {
            b.next_delay(0.3);
        }
        assert_eq!(b.next_delay(0.0), MS(15000));
        assert_eq!(b.next_delay(0.5), MS(22500));
    }

    #[test]
    fn jitter_spans_the_upper_half_of_each_step() {
        let mut low = Backoff::new(MS(500), Duration::from_secs(30));
        let mut high = low.clone();
        for _ in 0..12 {
            let (l, h) = (low.next_delay(0.0), high.next_delay(0.999_999));
            assert!(l * 2 >= h.saturating_sub(MS(1)) && l < h, "{l:?} {h:?}");
        }
        // Out-of-range draws are clamped, not trusted.
        let mut b = Backoff::new(MS(500), Duration::from_secs(30));
        assert_eq!(b.next_delay(-3.0), MS(250));
        assert_eq!(b.next_delay(7.0), MS(1000));
        assert_eq!(b.next_delay(f64::NAN), MS(2000));
    }

    #[test]
    fn reset_starts_again_from_the_floor() {
        let mut b = Backoff::new(MS(500), Duration::from_secs(30));
        for _ in 0..5 {
            b.next_delay(1.0);
        }
        b.reset();
        assert_eq!(b.next_delay(1.0), MS(500));
        // A ceiling below the floor is raised to it.
        let mut odd = Backoff::new(MS(500), MS(100));
        assert_eq!(odd.next_delay(1.0), MS(500));
        assert_eq!(odd.next_delay(1.0), MS(500));
    }
}
