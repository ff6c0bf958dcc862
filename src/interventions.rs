//! Interventions: what gives an agent's viewing sessions their reason (DESIGN.md,
//! "Streams and viewing sessions"; issue 3, item 5).
//!
//! An agent opens an intervention with a reason, the camera patterns it covers and an end
//! time (`POST /api/v1/interventions`, see `http`); while it is open, every viewing session
//! of that agent on a covered camera carries its reason and id, whatever the client. It
//! ends when the agent closes it (`DELETE`) or when its `until` passes.
//!
//! Layer 1: an in-memory store behind a mutex, with `now` passed in to every call so the
//! rules are tested with explicit time. Nothing survives a restart, on purpose: an agent
//! re-opens an intervention after one, and the journal keeps the history.
//!
//! How to drive [`InterventionStore`]:
//! 1. [`InterventionStore::new`] with the site's [`Journal`] (or
//!    [`InterventionStore::with_sink`] with any record sink, for tests).
//! 2. Feed it from the HTTP API: [`InterventionStore::open`], [`InterventionStore::close`],
//!    [`InterventionStore::list`].
//! 3. Query it when a viewing session opens: [`InterventionStore::active_for`].
//! 4. Drain expiries: [`InterventionStore::expire`], every second under
//!    [`InterventionStore::run_expiry`]. Expiry is also applied at every call, and
//!    [`InterventionStore::active_for`] never returns an intervention past its `until`,
//!    so correctness never waits for the ticker: the ticker only journals expiries on time.
//!
//! Every open, close and expiry is journaled (`intervention_opened`,
//! `intervention_closed` with `why = closed | expired`) while the store's lock is held, so
//! the journal's order is the store's. An intervention whose opening cannot be journaled
//! is not opened; a close or expiry that cannot be journaled still takes effect (ending
//! access never waits for the disk) and is logged.
//!
//! Metrics: `passerelle_interventions_open` (gauge),
//! `passerelle_interventions_total{event}` (`opened`, `closed`, `expired`).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::ids::{CameraId, CameraPattern};
use crate::journal::{
    Clock, Event, InterventionClosed, InterventionEnd, InterventionOpened, Journal, JournalError,
};

/// Longest reason, in characters. A reason is copied into every journal record of the
/// sessions it covers; a few sentences are plenty.
pub const REASON_MAX_CHARS: usize = 500;

/// Most camera patterns one intervention names.
pub const MAX_CAMERAS: usize = 32;

/// Characters of an intervention id: 128 random bits in unpadded base64url.
const ID_LEN: usize = 22;

/// The store's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterventionSettings {
    /// The longest an intervention may stay open: `until` is at most this far ahead.
    pub max_duration: SignedDuration,
    /// Most interventions one agent holds open at once (bounds the memory one token can
    /// take).
    pub max_open_per_agent: usize,
}

impl Default for InterventionSettings {
    /// 24 hours, 16 per agent.
    fn default() -> InterventionSettings {
        InterventionSettings {
            max_duration: SignedDuration::from_hours(24),
            max_open_per_agent: 16,
        }
    }
}

/// An intervention's id: 22 characters of base64url (128 random bits), safe in a URL path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterventionId(String);

impl InterventionId {
    /// A new random id.
    pub fn random() -> InterventionId {
        use base64::Engine as _;
        let bytes: [u8; 16] = rand::random();
        InterventionId(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// An id as received (a URL path segment); `None` when it cannot be one of ours.
    pub fn parse(text: &str) -> Option<InterventionId> {
        let ok = text.len() == ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| InterventionId(text.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InterventionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One open intervention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intervention {
    /// Its id.
    pub id: InterventionId,
    /// The agent (`[[user]].name`) who opened it; only they may close it.
    pub agent: String,
    /// Why: given to every session it covers.
    pub reason: String,
    /// The cameras it covers (our ids).
    pub cameras: Vec<CameraPattern>,
    /// When it was opened.
    pub opened_at: Timestamp,
    /// When it ends at the latest.
    pub until: Timestamp,
}

impl Intervention {
    /// Whether it covers `camera`.
    pub fn covers(&self, camera: &CameraId) -> bool {
        self.cameras.iter().any(|p| p.matches(camera))
    }

    /// Whether it is still open at `now` (its `until` is exclusive).
    pub fn is_open_at(&self, now: Timestamp) -> bool {
        now < self.until
    }
}

/// What a viewing session carries from the intervention that covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveIntervention {
    /// The intervention's id (journaled with the session, sent with ViewOpen).
    pub id: InterventionId,
    /// Its reason.
    pub reason: String,
}

/// Why an intervention could not be opened or closed.
#[derive(Debug, thiserror::Error)]
pub enum InterventionError {
    /// The reason is empty or only blanks.
    #[error("the reason is empty: say why the cameras are watched")]
    EmptyReason,
    /// The reason is longer than [`REASON_MAX_CHARS`].
    #[error("the reason has {chars} characters, more than {max}")]
    ReasonTooLong {
        /// Its length, in characters.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// The reason holds a control character (a line break, a tab…).
    #[error("the reason holds a control character (U+{code:04X}); write it on one line")]
    ReasonControlCharacter {
        /// The character's code point.
        code: u32,
    },
    /// No camera pattern.
    #[error("no camera: name at least one camera pattern")]
    NoCameras,
    /// More than [`MAX_CAMERAS`] patterns.
    #[error("{count} camera patterns, more than {max}")]
    TooManyCameras {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// `until` is not after now.
    #[error("until {until} is not in the future (now is {now})")]
    UntilNotFuture {
        /// The requested end.
        until: Timestamp,
        /// Now.
        now: Timestamp,
    },
    /// `until` is further ahead than the configured maximum.
    #[error("until {until} is more than {max:#} ahead; the latest allowed now is {latest}")]
    UntilTooFar {
        /// The requested end.
        until: Timestamp,
        /// The maximum duration.
        max: SignedDuration,
        /// The latest `until` accepted now.
        latest: Timestamp,
    },
    /// The agent already holds the most open interventions allowed.
    #[error("{agent} already has {max} open interventions: close one first")]
    TooManyOpen {
        /// The agent.
        agent: String,
        /// The limit.
        max: usize,
    },
    /// No open intervention with that id belongs to that agent. Deliberately the same
    /// answer whether the id is unknown, expired or someone else's.
    #[error("no such intervention")]
    NotFound,
    /// The opening could not be journaled; the intervention was not opened.
    #[error("the intervention could not be journaled, so it was not opened: {0}")]
    Journal(#[source] JournalError),
}

/// Where the store's records go: the journal, or a test's sink.
type Sink = Arc<dyn Fn(Event) -> Result<(), JournalError> + Send + Sync>;

/// The open interventions of this site. A cheap `Clone` handle.
#[derive(Clone)]
pub struct InterventionStore {
    inner: Arc<Inner>,
}

struct Inner {
    settings: InterventionSettings,
    sink: Sink,
    /// Open interventions, oldest first (so the most recent is found from the end).
    open: Mutex<Vec<Intervention>>,
}

impl std::fmt::Debug for InterventionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterventionStore")
            .field("settings", &self.inner.settings)
            .field("open", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl InterventionStore {
    /// A store journaling to `journal`.
    pub fn new(settings: InterventionSettings, journal: Journal) -> InterventionStore {
        InterventionStore::with_sink(settings, move |event| journal.append(event).map(drop))
    }

    /// A store handing its records to `sink` (tests, tools).
    pub fn with_sink(
        settings: InterventionSettings,
        sink: impl Fn(Event) -> Result<(), JournalError> + Send + Sync + 'static,
    ) -> InterventionStore {
        InterventionStore {
            inner: Arc::new(Inner {
                settings,
                sink: Arc::new(sink),
                open: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The store's limits.
    pub fn settings(&self) -> &InterventionSettings {
        &self.inner.settings
    }

    /// Opens an intervention for `agent` (authenticated, and checked to be an agent
    /// allowed these cameras by the caller). The reason is trimmed; duplicate patterns
    /// are dropped. Journaled before it takes effect.
    pub fn open(
        &self,
        agent: &str,
        reason: &str,
        cameras: Vec<CameraPattern>,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<Intervention, InterventionError> {
        let reason = check_reason(reason)?;
        let cameras = check_cameras(cameras)?;
        let settings = &self.inner.settings;
        if until <= now {
            return Err(InterventionError::UntilNotFuture { until, now });
        }
        // `now + max` overflows only near the end of jiff's range; then nothing is too far.
        if let Ok(latest) = now.checked_add(settings.max_duration)
            && until > latest
        {
            return Err(InterventionError::UntilTooFar {
                until,
                max: settings.max_duration,
                latest,
            });
        }

        let mut open = self.lock();
        self.expire_locked(&mut open, now);
        let held = open.iter().filter(|i| i.agent == agent).count();
        if held >= settings.max_open_per_agent {
            return Err(InterventionError::TooManyOpen {
                agent: agent.to_owned(),
                max: settings.max_open_per_agent,
            });
        }
        let intervention = Intervention {
            id: InterventionId::random(),
            agent: agent.to_owned(),
            reason,
            cameras,
            opened_at: now,
            until,
        };
        (self.inner.sink)(Event::InterventionOpened(InterventionOpened {
            intervention: intervention.id.to_string(),
            agent: intervention.agent.clone(),
            reason: intervention.reason.clone(),
            cameras: intervention
                .cameras
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            until: intervention.until,
        }))
        .map_err(InterventionError::Journal)?;
        open.push(intervention.clone());
        metrics::counter!("passerelle_interventions_total", "event" => "opened").increment(1);
        set_open_gauge(&open);
        tracing::info!(
            intervention = %intervention.id,
            agent,
            until = %intervention.until,
            "intervention opened"
        );
        Ok(intervention)
    }

    /// Closes `id` on behalf of `by_agent`. Only the agent who opened it may; anyone else,
    /// like an unknown or expired id, gets [`InterventionError::NotFound`], never a hint
    /// that it exists.
    pub fn close(
        &self,
        id: &InterventionId,
        by_agent: &str,
        now: Timestamp,
    ) -> Result<Intervention, InterventionError> {
        let mut open = self.lock();
        self.expire_locked(&mut open, now);
        let at = open
            .iter()
            .position(|i| &i.id == id && i.agent == by_agent)
            .ok_or(InterventionError::NotFound)?;
        let closed = open.remove(at);
        self.journal_end(&closed, InterventionEnd::Closed);
        set_open_gauge(&open);
        Ok(closed)
    }

    /// Removes the interventions whose `until` has come, journals each as expired and
    /// returns them.
    pub fn expire(&self, now: Timestamp) -> Vec<Intervention> {
        let mut open = self.lock();
        self.expire_locked(&mut open, now)
    }

    /// The intervention a new viewing session of `agent` on `camera` carries: the most
    /// recently opened one of that agent, open at `now`, that covers the camera.
    pub fn active_for(
        &self,
        agent: &str,
        camera: &CameraId,
        now: Timestamp,
    ) -> Option<ActiveIntervention> {
        self.lock()
            .iter()
            .rev()
            .find(|i| i.agent == agent && i.is_open_at(now) && i.covers(camera))
            .map(|i| ActiveIntervention {
                id: i.id.clone(),
                reason: i.reason.clone(),
            })
    }

    /// `agent`'s open interventions, oldest first.
    pub fn list(&self, agent: &str, now: Timestamp) -> Vec<Intervention> {
        self.lock()
            .iter()
            .filter(|i| i.agent == agent && i.is_open_at(now))
            .cloned()
            .collect()
    }

    /// `agent`'s open intervention `id`; `None` when unknown, expired or someone else's.
    pub fn get(&self, id: &InterventionId, agent: &str, now: Timestamp) -> Option<Intervention> {
        self.lock()
            .iter()
            .find(|i| &i.id == id && i.agent == agent && i.is_open_at(now))
            .cloned()
    }

    /// Every open intervention, oldest first (the status page).
    pub fn all(&self, now: Timestamp) -> Vec<Intervention> {
        self.lock()
            .iter()
            .filter(|i| i.is_open_at(now))
            .cloned()
            .collect()
    }

    /// Calls [`InterventionStore::expire`] every `interval` with `clock`'s time until
    /// `shutdown` completes, so expiries are journaled within about `interval`.
    pub async fn run_expiry(
        self,
        clock: Arc<dyn Clock>,
        interval: Duration,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {
                    self.expire(clock.now());
                }
            }
        }
    }

    fn expire_locked(&self, open: &mut Vec<Intervention>, now: Timestamp) -> Vec<Intervention> {
        if open.iter().all(|i| i.is_open_at(now)) {
            return Vec::new();
        }
        let (expired, kept): (Vec<_>, Vec<_>) = open.drain(..).partition(|i| !i.is_open_at(now));
        *open = kept;
        for intervention in &expired {
            self.journal_end(intervention, InterventionEnd::Expired);
        }
        set_open_gauge(open);
        expired
    }

    fn journal_end(&self, intervention: &Intervention, why: InterventionEnd) {
        let event = match why {
            InterventionEnd::Closed => "closed",
            InterventionEnd::Expired => "expired",
        };
        metrics::counter!("passerelle_interventions_total", "event" => event).increment(1);
        tracing::info!(
            intervention = %intervention.id,
            agent = %intervention.agent,
            why = event,
            "intervention ended"
        );
        let record = Event::InterventionClosed(InterventionClosed {
            intervention: intervention.id.to_string(),
            agent: intervention.agent.clone(),
            why,
        });
        if let Err(error) = (self.inner.sink)(record) {
            // Ending access never waits for the disk: the intervention is gone anyway.
            tracing::error!(
                intervention = %intervention.id,
                %error,
                "the end of an intervention could not be journaled"
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Intervention>> {
        // A panic while holding the lock leaves the Vec consistent (every change is one
        // push, remove or swap), so a poisoned lock is still usable.
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether every camera id `inner` matches is also matched by `outer`, so that an agent
/// allowed `outer` may name `inner`.
///
/// Conservative: `true` is always right; a few exotic pairs that are in fact contained
/// (`**/**` within `*/**`) answer `false`, which only refuses a request. Rules, by outer
/// segment: a literal covers the same literal; `*` covers one literal or `*`; `**` covers
/// one or more segments of any kind. A dynamic-programming pass, no backtracking.
pub fn pattern_within(inner: &CameraPattern, outer: &CameraPattern) -> bool {
    let p: Vec<&str> = inner.as_str().split('/').collect();
    let q: Vec<&str> = outer.as_str().split('/').collect();
    // reach[j]: the outer segments consumed so far cover exactly p[..j].
    let mut reach = vec![false; p.len() + 1];
    reach[0] = true;
    for segment in &q {
        let mut next = vec![false; p.len() + 1];
        match *segment {
            "**" => {
                let mut seen = false;
                for j in 1..=p.len() {
                    seen |= reach[j - 1];
                    next[j] = seen;
                }
            }
            "*" => {
                for j in 0..p.len() {
                    next[j + 1] = reach[j] && p[j] != "**";
                }
            }
            literal => {
                for j in 0..p.len() {
                    next[j + 1] = reach[j] && p[j] == literal;
                }
            }
        }
        reach = next;
    }
    reach[p.len()]
}

fn check_reason(reason: &str) -> Result<String, InterventionError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(InterventionError::EmptyReason);
    }
    if let Some(c) = reason.chars().find(|c| c.is_control()) {
        return Err(InterventionError::ReasonControlCharacter { code: c.into() });
    }
    let chars = reason.chars().count();
    if chars > REASON_MAX_CHARS {
        return Err(InterventionError::ReasonTooLong {
            chars,
            max: REASON_MAX_CHARS,
        });
    }
    Ok(reason.to_owned())
}

fn check_cameras(cameras: Vec<CameraPattern>) -> Result<Vec<CameraPattern>, InterventionError> {
    if cameras.is_empty() {
        return Err(InterventionError::NoCameras);
    }
    if cameras.len() > MAX_CAMERAS {
        return Err(InterventionError::TooManyCameras {
            count: cameras.len(),
            max: MAX_CAMERAS,
        });
    }
    let mut unique: Vec<CameraPattern> = Vec::with_capacity(cameras.len());
    for pattern in cameras {
        if !unique.contains(&pattern) {
            unique.push(pattern);
        }
    }
    Ok(unique)
}

fn set_open_gauge(open: &[Intervention]) {
    // At most agents × max_open_per_agent: exact in an f64.
    metrics::gauge!("passerelle_interventions_open").set(open.len() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn pat(s: &str) -> CameraPattern {
        s.parse().unwrap()
    }

    fn cam(s: &str) -> CameraId {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-02-02T08:00:00Z";

    /// A store recording what it journals.
    fn store() -> (InterventionStore, Arc<Mutex<Vec<Event>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let store = InterventionStore::with_sink(InterventionSettings::default(), move |e| {
            sink.lock().unwrap().push(e);
            Ok(())
        });
        (store, events)
    }

    fn kinds(events: &Mutex<Vec<Event>>) -> Vec<&'static str> {
        events.lock().unwrap().iter().map(Event::kind).collect()
    }

    #[test]
    fn an_open_intervention_gives_its_reason_to_covered_cameras_of_its_agent_only() {
        let (store, events) = store();
        let now = t(NOW);
        let i = store
            .open(
                "operateur.martin",
                "  Rixe signalée place Saint-Louis ",
                vec![pat("metz/centre/**")],
                t("2026-02-02T10:00:00Z"),
                now,
            )
            .unwrap();
        assert_eq!(i.reason, "Rixe signalée place Saint-Louis");
        assert_eq!(i.id.as_str().len(), ID_LEN);
        assert_eq!(InterventionId::parse(i.id.as_str()), Some(i.id.clone()));

        let active = store
            .active_for("operateur.martin", &cam("metz/centre/cam-1"), now)
            .unwrap();
        assert_eq!(active.id, i.id);
        assert_eq!(active.reason, "Rixe signalée place Saint-Louis");
        assert_eq!(
            store.active_for("operateur.martin", &cam("metz/nord/cam-1"), now),
            None
        );
        assert_eq!(
            store.active_for("superviseur.durand", &cam("metz/centre/cam-1"), now),
            None
        );

        let recorded = events.lock().unwrap().clone();
        let [Event::InterventionOpened(opened)] = recorded.as_slice() else {
            panic!("expected one intervention_opened, got {recorded:?}");
        };
        assert_eq!(opened.intervention, i.id.as_str());
        assert_eq!(opened.agent, "operateur.martin");
        assert_eq!(opened.reason, "Rixe signalée place Saint-Louis");
        assert_eq!(opened.cameras, vec!["metz/centre/**".to_owned()]);
        assert_eq!(opened.until, t("2026-02-02T10:00:00Z"));
    }

    #[test]
    fn the_most_recent_covering_intervention_wins() {
        let (store, _) = store();
        let until = t("2026-02-02T12:00:00Z");
        let first = store
            .open("a", "first", vec![pat("metz/**")], until, t(NOW))
            .unwrap();
        let second = store
            .open(
                "a",
                "second",
                vec![pat("metz/gare/*")],
                until,
                t("2026-02-02T08:05:00Z"),
            )
            .unwrap();
        let now = t("2026-02-02T08:10:00Z");
        assert_eq!(
            store
                .active_for("a", &cam("metz/gare/quai"), now)
                .unwrap()
                .id,
            second.id
        );
        assert_eq!(
            store
                .active_for("a", &cam("metz/centre/x"), now)
                .unwrap()
                .id,
            first.id
        );
        store.close(&second.id, "a", now).unwrap();
        assert_eq!(
            store
                .active_for("a", &cam("metz/gare/quai"), now)
                .unwrap()
                .id,
            first.id
        );
    }

    #[test]
    fn only_its_agent_closes_it_and_others_learn_nothing() {
        let (store, events) = store();
        let now = t(NOW);
        let i = store
            .open(
                "a",
                "why",
                vec![pat("metz/**")],
                t("2026-02-02T09:00:00Z"),
                now,
            )
            .unwrap();
        assert!(matches!(
            store.close(&i.id, "b", now),
            Err(InterventionError::NotFound)
        ));
        let unknown = InterventionId::random();
        assert!(matches!(
            store.close(&unknown, "a", now),
            Err(InterventionError::NotFound)
        ));
        assert!(store.active_for("a", &cam("metz/x"), now).is_some());

        let closed = store.close(&i.id, "a", now).unwrap();
        assert_eq!(closed.id, i.id);
        assert_eq!(store.active_for("a", &cam("metz/x"), now), None);
        assert!(matches!(
            store.close(&i.id, "a", now),
            Err(InterventionError::NotFound)
        ));
        let recorded = events.lock().unwrap().clone();
        assert_eq!(
            recorded.last(),
            Some(&Event::InterventionClosed(InterventionClosed {
                intervention: i.id.to_string(),
                agent: "a".to_owned(),
                why: InterventionEnd::Closed,
            }))
        );
        assert_eq!(recorded.len(), 2);
    }

    #[test]
    fn expiry_ends_at_until_exactly_and_is_journaled_once() {
        let (store, events) = store();
        let until = t("2026-02-02T09:00:00Z");
        let i = store
            .open("a", "why", vec![pat("metz/**")], until, t(NOW))
            .unwrap();
        let just_before = t("2026-02-02T08:59:59.999Z");
        assert!(store.active_for("a", &cam("metz/x"), just_before).is_some());
        assert!(store.expire(just_before).is_empty());
        // Not yet swept, but already not active: the lookup never trusts the ticker.
        assert_eq!(store.active_for("a", &cam("metz/x"), until), None);
        assert!(store.list("a", until).is_empty());

        let expired = store.expire(until);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].id, i.id);
        assert!(store.expire(t("2026-02-02T10:00:00Z")).is_empty());
        assert_eq!(
            kinds(&events),
            ["intervention_opened", "intervention_closed"]
        );
        assert_eq!(
            events.lock().unwrap()[1],
            Event::InterventionClosed(InterventionClosed {
                intervention: i.id.to_string(),
                agent: "a".to_owned(),
                why: InterventionEnd::Expired,
            })
        );
        // Closing it now is NotFound, like any unknown id.
        assert!(matches!(
            store.close(&i.id, "a", until),
            Err(InterventionError::NotFound)
        ));
    }

    #[test]
    fn until_must_be_ahead_and_within_the_maximum() {
        let (store, events) = store();
        let now = t(NOW);
        let open = |until: &str| store.open("a", "why", vec![pat("**")], t(until), now);
        assert!(matches!(
            open("2026-02-02T07:59:59Z"),
            Err(InterventionError::UntilNotFuture { .. })
        ));
        assert!(matches!(
            open(NOW),
            Err(InterventionError::UntilNotFuture { .. })
        ));
        assert!(matches!(
            open("2026-02-03T08:00:01Z"),
            Err(InterventionError::UntilTooFar { .. })
        ));
        assert!(open("2026-02-03T08:00:00Z").is_ok());
        assert_eq!(kinds(&events), ["intervention_opened"]);
    }

    #[test]
    fn reasons_and_camera_lists_are_bounded() {
        let (store, events) = store();
        let now = t(NOW);
        let until = t("2026-02-02T09:00:00Z");
        let open = |reason: &str, cameras: Vec<CameraPattern>| {
            store.open("a", reason, cameras, until, now)
        };
        assert!(matches!(
            open(" \t ", vec![pat("**")]),
            Err(InterventionError::EmptyReason)
        ));
        assert!(matches!(
            open("line one\nline two", vec![pat("**")]),
            Err(InterventionError::ReasonControlCharacter { code: 0x0a })
        ));
        let long = "é".repeat(REASON_MAX_CHARS + 1);
        assert!(matches!(
            open(&long, vec![pat("**")]),
            Err(InterventionError::ReasonTooLong { chars, .. }) if chars == REASON_MAX_CHARS + 1
        ));
        assert!(open(&"é".repeat(REASON_MAX_CHARS), vec![pat("**")]).is_ok());
        assert!(matches!(
            open("why", Vec::new()),
            Err(InterventionError::NoCameras)
        ));
        let many = (0..=MAX_CAMERAS)
            .map(|i| pat(&format!("metz/c{i}")))
            .collect();
        assert!(matches!(
            open("why", many),
            Err(InterventionError::TooManyCameras { .. })
        ));
        let i = open("why", vec![pat("metz/**"), pat("metz/**")]).unwrap();
        assert_eq!(i.cameras, vec![pat("metz/**")]);
        assert_eq!(kinds(&events).len(), 2);
    }

    #[test]
    fn an_agent_holds_a_bounded_number_open() {
        let (store, _) = store();
        let now = t(NOW);
        let until = t("2026-02-02T09:00:00Z");
        let max = store.settings().max_open_per_agent;
        for _ in 0..max {
            store.open("a", "why", vec![pat("**")], until, now).unwrap();
        }
        assert!(matches!(
            store.open("a", "why", vec![pat("**")], until, now),
            Err(InterventionError::TooManyOpen { max: m, .. }) if m == max
        ));
        // Another agent is not affected; expiry frees the slots.
        assert!(store.open("b", "why", vec![pat("**")], until, now).is_ok());
        assert!(
            store
                .open(
                    "a",
                    "why",
                    vec![pat("**")],
                    t("2026-02-02T10:00:00Z"),
                    until
                )
                .is_ok()
        );
    }

    #[test]
    fn an_opening_that_cannot_be_journaled_does_not_happen() {
        let store = InterventionStore::with_sink(InterventionSettings::default(), |e| {
            Err(JournalError::DiskFull { kind: e.kind() })
        });
        let now = t(NOW);
        let result = store.open("a", "why", vec![pat("**")], t("2026-02-02T09:00:00Z"), now);
        assert!(matches!(result, Err(InterventionError::Journal(_))));
        assert_eq!(store.active_for("a", &cam("metz/x"), now), None);
        assert!(store.all(now).is_empty());
    }

    #[test]
    fn list_and_get_show_only_the_agents_own() {
        let (store, _) = store();
        let now = t(NOW);
        let until = t("2026-02-02T09:00:00Z");
        let a = store.open("a", "one", vec![pat("**")], until, now).unwrap();
        let b = store.open("b", "two", vec![pat("**")], until, now).unwrap();
        assert_eq!(store.list("a", now), vec![a.clone()]);
        assert_eq!(store.get(&a.id, "a", now), Some(a.clone()));
        assert_eq!(store.get(&b.id, "a", now), None);
        assert_eq!(store.all(now).len(), 2);
    }

    #[test]
    fn ids_are_url_safe_and_parsing_refuses_anything_else() {
        for _ in 0..100 {
            let id = InterventionId::random();
            assert_eq!(InterventionId::parse(id.as_str()), Some(id));
        }
        assert_eq!(InterventionId::parse(""), None);
        assert_eq!(InterventionId::parse("../../../../etc/passwd"), None);
        assert_eq!(InterventionId::parse(&"a".repeat(ID_LEN + 1)), None);
        assert_eq!(InterventionId::parse(&format!("{}=", "a".repeat(21))), None);
        assert!(InterventionId::parse(&"a".repeat(ID_LEN)).is_some());
    }

    #[test]
    fn pattern_containment() {
        let within = |p: &str, q: &str| pattern_within(&pat(p), &pat(q));
        // Yes.
        assert!(within("metz/**", "**"));
        assert!(within("metz/**", "metz/**"));
        assert!(within("metz/centre/**", "metz/**"));
        assert!(within("metz/centre/cam-1", "metz/**"));
        assert!(within("metz/centre/cam-1", "metz/*/cam-1"));
        assert!(within("metz/*/cam-1", "metz/*/*"));
        assert!(within("metz/*/cam-1", "metz/**"));
        assert!(within("sncf/metz-ville/quai-1", "sncf/**"));
        assert!(within("metz/*/**", "metz/**"));
        assert!(within("a/b/c", "a/**/c"));
        // No.
        assert!(!within("**", "metz/**"));
        assert!(!within("metz/**", "metz/*"));
        assert!(!within("metz/**", "metz/centre/**"));
        assert!(!within("marly/**", "metz/**"));
        assert!(!within("metz", "metz/**"));
        assert!(!within("metz/*", "metz/centre"));
        assert!(!within("metz/centre/cam-1", "metz/*"));
        assert!(!within("metz/**/x", "metz/*/x"));
        // Conservative: contained in fact, refused.
        assert!(!within("**/**", "*/**"));
    }

    /// Containment agrees with matching on every id of a small universe: whenever
    /// `pattern_within(p, q)`, every id `p` matches, `q` matches too.
    #[test]
    fn pattern_containment_is_sound_on_a_small_universe() {
        let segments = ["a", "b"];
        let mut ids = Vec::new();
        for len in 1..=4u32 {
            for n in 0..(2usize.pow(len)) {
                let id: Vec<&str> = (0..len).map(|i| segments[(n >> i) & 1]).collect();
                ids.push(cam(&id.join("/")));
            }
        }
        let atoms = ["a", "b", "*", "**"];
        let mut patterns = Vec::new();
        for len in 1..=3u32 {
            for n in 0..(4usize.pow(len)) {
                let p: Vec<&str> = (0..len).map(|i| atoms[(n >> (2 * i)) & 3]).collect();
                patterns.push(pat(&p.join("/")));
            }
        }
        let mut contained = 0;
        for p in &patterns {
            for q in &patterns {
                if pattern_within(p, q) {
                    contained += 1;
                    for id in &ids {
                        assert!(
                            !p.matches(id) || q.matches(id),
                            "{p} within {q} but {id} matches only {p}"
                        );
                    }
                }
            }
        }
        // The check above ran on real pairs, not on an empty set.
        assert!(contained > patterns.len());
    }
}
