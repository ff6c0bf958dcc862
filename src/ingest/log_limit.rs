//! Rate limiting of repeated log lines (a camera failing every few seconds, a stream of
//! malformed packets). Pure: `now` is passed in.

use std::time::Duration;

use tokio::time::Instant;

/// Lets one line through per `interval` and counts the ones held back.
#[derive(Debug, Clone)]
pub(crate) struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` if a line may be written at `now`, `n` being how many were held back
    /// since the last one; `None` to hold this one back.
    pub(crate) fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_held_back_ones() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(30));
        assert_eq!(limiter.check(t0), Some(0));
        for s in 1..30 {
            assert_eq!(limiter.check(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(limiter.check(t0 + Duration::from_secs(30)), Some(29));
        assert_eq!(limiter.check(t0 + Duration::from_secs(31)), None);
        assert_eq!(limiter.check(t0 + Duration::from_secs(100)), Some(1));
    }
}
