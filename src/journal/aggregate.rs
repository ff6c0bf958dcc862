//! Per-minute aggregation of authentication failures and refused handshakes, so that a
//! flood cannot fill the disk. Pure: `now` is passed in.
//!
//! Feed it with [`FailureAggregator::note`]; drain it with [`FailureAggregator::due`]
//! (the minutes that are over) every tick and [`FailureAggregator::drain`] at stop. A
//! minute yields one `auth_failures` record per (kind, source, reason); past
//! [`MAX_SOURCES_PER_MINUTE`] distinct sources in a minute, further sources are counted
//! together (no `source`), and sources are cut to [`MAX_SOURCE_CHARS`]: whatever the
//! flood, a minute yields at most `MAX_SOURCES_PER_MINUTE` records plus one per kind and
//! reason.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::record::{AuthFailures, FailureKind};

/// Distinct sources counted apart in one minute.
pub const MAX_SOURCES_PER_MINUTE: usize = 64;
/// Longest source kept (user names and site ids come from outside).
pub const MAX_SOURCE_CHARS: usize = 128;
/// Longest reason kept.
const MAX_REASON_CHARS: usize = 64;

type Key = (FailureKind, Option<String>, String);

/// Counts of the current minute.
#[derive(Debug, Default)]
pub struct FailureAggregator {
    minute: Option<Timestamp>,
    counts: BTreeMap<Key, u64>,
    sources: BTreeSet<(FailureKind, String)>,
}

/// The first second of `now`'s minute.
pub fn minute_of(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second().div_euclid(60) * 60).unwrap_or(now)
}

impl FailureAggregator {
    /// An empty aggregator.
    pub fn new() -> FailureAggregator {
        FailureAggregator::default()
    }

    /// Counts one failure at `now`. Returns the records of the previous minute when
    /// `now` starts a new one.
    pub fn note(
        &mut self,
        now: Timestamp,
        what: FailureKind,
        source: &str,
        reason: &str,
    ) -> Vec<AuthFailures> {
        let minute = minute_of(now);
        let done = match self.minute {
            Some(current) if current != minute => self.drain(),
            _ => Vec::new(),
        };
        self.minute = Some(minute);
        let source: String = source.chars().take(MAX_SOURCE_CHARS).collect();
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        let known = self.sources.contains(&(what, source.clone()));
        let source = if known || self.sources.len() < MAX_SOURCES_PER_MINUTE {
            self.sources.insert((what, source.clone()));
            Some(source)
        } else {
            None
        };
        *self.counts.entry((what, source, reason)).or_insert(0) += 1;
        done
    }

    /// The records of a minute that is over at `now` (empty otherwise).
    pub fn due(&mut self, now: Timestamp) -> Vec<AuthFailures> {
        match self.minute {
            Some(current) if minute_of(now) != current => self.drain(),
            _ => Vec::new(),
        }
    }

    /// The records of the current minute, over or not (at stop).
    pub fn drain(&mut self) -> Vec<AuthFailures> {
        let Some(minute) = self.minute.take() else {
            return Vec::new();
        };
        self.sources.clear();
        std::mem::take(&mut self.counts)
            .into_iter()
            .map(|((what, source, reason), count)| AuthFailures {
                what,
                minute,
                source,
                reason,
                count,
            })
            .collect()
    }
}
