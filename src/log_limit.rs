//! Rate limiting of repeated log lines about one camera or one peer (a partner dialling
//! with a revoked certificate every second, a scanner hammering the QUIC port), so a
//! flood cannot fill the journal nor hide other lines. Pure: `now` is passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Lets one line through per `interval` and counts the ones held back.
///
/// Call [`LogLimiter::check`] before each line; write the line only on `Some(n)`, with
/// `n` (the lines held back since the previous one) among its fields.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl LogLimiter {
    /// A limiter letting one line through per `interval`.
    pub fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)` if a line may be written at `now`, `n` being how many were held back
    /// since the last one; `None` to hold this one back.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }

    /// Whether nothing is held back and the interval since the last line has passed:
    /// forgetting this limiter then loses nothing.
    fn idle(&self, now: Instant) -> bool {
        self.held_back == 0
            && self
                .last
                .is_none_or(|last| now.saturating_duration_since(last) >= self.interval)
    }
}

/// One [`LogLimiter`] per key (a camera id, a peer), with at most `max_keys` of them:
/// keys can come from outside (a peer's certificate names any site), so past the bound
/// the lines of new keys share one limiter.
#[derive(Debug)]
pub struct KeyedLogLimiter<K> {
    interval: Duration,
    max_keys: usize,
    limiters: HashMap<K, LogLimiter>,
    overflow: LogLimiter,
}

impl<K: Eq + Hash> KeyedLogLimiter<K> {
    /// One line per `interval` per key, for at most `max_keys` keys at a time.
    pub fn new(interval: Duration, max_keys: usize) -> Self {
        KeyedLogLimiter {
            interval,
            max_keys,
            limiters: HashMap::new(),
            overflow: LogLimiter::new(interval),
        }
    }

    /// As [`LogLimiter::check`], for the lines about `key`.
    pub fn check(&mut self, key: K, now: Instant) -> Option<u64> {
        // A new key goes to the shared limiter while that one holds lines back (so its
        // count is reported, by the next line it lets through) or while there is no room.
        if !self.limiters.contains_key(&key)
            && (self.overflow.held_back > 0 || !self.make_room(now))
        {
            return self.overflow.check(now);
        }
        self.limiters
            .entry(key)
            .or_insert_with(|| LogLimiter::new(self.interval))
            .check(now)
    }

    /// Whether a new key can have its own limiter, after forgetting the idle ones if
    /// needed: only limiters with nothing to report are forgotten, so no count is lost.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.limiters.len() >= self.max_keys {
            self.limiters.retain(|_, limiter| !limiter.idle(now));
        }
        self.limiters.len() < self.max_keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn one_line_per_interval_with_the_count_of_held_back_ones() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new(S(30));
        assert_eq!(limiter.check(t0), Some(0));
        for s in 1..30 {
            assert_eq!(limiter.check(t0 + S(s)), None);
        }
        assert_eq!(limiter.check(t0 + S(30)), Some(29));
        assert_eq!(limiter.check(t0 + S(31)), None);
        assert_eq!(limiter.check(t0 + S(100)), Some(1));
    }

    #[test]
    fn each_key_has_its_own_interval() {
        let t0 = Instant::now();
        let mut limiter = KeyedLogLimiter::new(S(10), 8);
        assert_eq!(limiter.check("sncf", t0), Some(0));
        assert_eq!(limiter.check("ccor", t0), Some(0));
        assert_eq!(limiter.check("sncf", t0 + S(1)), None);
        assert_eq!(limiter.check("sncf", t0 + S(2)), None);
        assert_eq!(limiter.check("ccor", t0 + S(10)), Some(0));
        assert_eq!(limiter.check("sncf", t0 + S(10)), Some(2));
    }

    #[test]
    fn past_the_key_bound_new_keys_share_one_limiter() {
        let t0 = Instant::now();
        let mut limiter = KeyedLogLimiter::new(S(10), 2);
        assert_eq!(limiter.check(1, t0), Some(0));
        assert_eq!(limiter.check(2, t0), Some(0));
        // A flood of new keys: one line per interval in all, not one per key.
        assert_eq!(limiter.check(3, t0), Some(0));
        for key in 4..100 {
            assert_eq!(limiter.check(key, t0 + S(1)), None);
        }
        assert_eq!(limiter.check(100, t0 + S(10)), Some(96));
        // Its count reported, the shared limiter gives way: idle keys are forgotten.
        assert_eq!(limiter.check(101, t0 + S(10)), Some(0));
        assert!(limiter.limiters.contains_key(&101));
        assert_eq!(limiter.limiters.len(), 1);
    }

    #[test]
    fn a_key_with_lines_held_back_is_not_forgotten() {
        let t0 = Instant::now();
        let mut limiter = KeyedLogLimiter::new(S(10), 1);
        assert_eq!(limiter.check("sncf", t0), Some(0));
        assert_eq!(limiter.check("sncf", t0 + S(1)), None);
        // "sncf" holds a count: a new key waits in the overflow limiter.
        assert_eq!(limiter.check("ccor", t0 + S(20)), Some(0));
        assert_eq!(limiter.check("sncf", t0 + S(20)), Some(1));
        // Now "sncf" is idle once its interval passes, and is replaced.
        assert_eq!(limiter.check("corg", t0 + S(30)), Some(0));
        assert!(limiter.limiters.contains_key("corg"));
    }
}
