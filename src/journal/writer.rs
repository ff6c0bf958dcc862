//! The journal writer: files, group commit, rotation, checkpoints, retention, the disk
//! reserve. See the module doc of [`super`] for the guarantees.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tokio::sync::watch;

use super::aggregate::FailureAggregator;
use super::checkpoint::{self, CheckpointFacts};
use super::read::{file_name_for, journal_files, split_lines};
use super::record::{
    Checkpoint, Event, FailureKind, JournalId, JournalStorage, LineHash, MAX_RECORD_BYTES, Purge,
    Record, RecordHead, Seq, StorageState, TailRepaired, TimeJump, record_time,
};
use crate::policy::{KeyError, SigningKey};

/// Name of the reserve file in the journal directory.
pub const RESERVE_FILE: &str = ".reserve";

/// How often, in reserve mode, the journal tries to take its reserve back.
const RESERVE_RETRY: SignedDuration = SignedDuration::from_secs(10);

/// A clock going back by more than this is journaled as a `time_jump`.
const JUMP_TOLERANCE: SignedDuration = SignedDuration::from_secs(1);

/// Where the journal reads the time. The gateway uses [`SystemClock`]; tests inject
/// their own.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// `[audit]`, validated, plus the journal's tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalSettings {
    /// The journal directory.
    pub dir: PathBuf,
    /// Files whose every record is older than this many days are deleted (at least 1).
    pub retention_days: u32,
    /// Bytes kept in [`RESERVE_FILE`] and released when the disk fills, for the records
    /// that end or refuse access. 1 MiB (about 3000 records) by default.
    pub reserve_bytes: u64,
    /// A checkpoint is made this often when records were written since the last one.
    pub checkpoint_interval: SignedDuration,
    /// And this often anyway, so partners see an idle journal alive.
    pub idle_checkpoint_interval: SignedDuration,
    /// [`Journal::run`] ticks (fsync, checkpoint, aggregation) this often.
    pub tick_interval: Duration,
}

impl JournalSettings {
    /// The defaults for `dir` and `retention_days`.
    pub fn new(dir: impl Into<PathBuf>, retention_days: u32) -> JournalSettings {
        JournalSettings {
            dir: dir.into(),
            retention_days,
            reserve_bytes: 1 << 20,
            checkpoint_interval: SignedDuration::from_secs(60),
            idle_checkpoint_interval: SignedDuration::from_secs(3600),
            tick_interval: Duration::from_secs(1),
        }
    }
}

/// Why the journal could not open or write.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A journal file or the directory could not be read or created.
    #[error("journal {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A record could not be written or synced (I/O error, or the disk full even for
    /// the reserve).
    #[error("cannot write the journal {}: {source}", path.display())]
    Write {
        /// The journal file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The disk is full: the reserve is kept for records that end or refuse access, this
    /// one is refused (a `session_opened`: refuse the session).
    #[error(
        "the journal's disk is full: a {kind} record is refused (only records ending or refusing access are written)"
    )]
    DiskFull {
        /// The refused record's kind.
        kind: &'static str,
    },
    /// A record longer than [`MAX_RECORD_BYTES`].
    #[error("a {kind} record of {bytes} bytes is larger than {MAX_RECORD_BYTES}")]
    TooLarge {
        /// Its kind.
        kind: &'static str,
        /// Its length.
        bytes: usize,
    },
    /// [`Journal::close`] was called.
    #[error("the journal is closed")]
    Closed,
    /// The journal to resume cannot be read as one.
    #[error("journal {}: {why}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `retention_days` is 0.
    #[error("retention_days must be at least 1")]
    NoRetention,
    /// The checkpoint could not be signed.
    #[error("cannot sign a checkpoint: {0}")]
    Sign(#[source] KeyError),
    /// A record could not be encoded.
    #[error("cannot encode a record: {0}")]
    Encode(#[source] serde_json::Error),
    /// The maintenance task panicked.
    #[error("the journal maintenance task panicked")]
    Panicked,
}

/// The append-only journal: a cheap handle, shared by every component that journals.
///
/// Drive it so:
/// 1. [`Journal::open`] once (creates the genesis or resumes the chain), then append
///    `process_start`;
/// 2. [`Journal::append`] from anywhere, synchronously: it returns once the line is in
///    the page cache (one `write(2)`, no fsync), so a session is journaled before its
///    first packet; [`Journal::note_failure`] for authentication failures and refused
///    handshakes (aggregated per minute);
/// 3. [`Journal::run`] in a task (or [`Journal::tick`] every second): group commit
///    (fsync), checkpoints, aggregates, rotation's fsyncs, retention, the reserve;
/// 4. at stop, append `process_stop`, then [`Journal::close`] (which `run` does when its
///    shutdown future completes): last aggregates, a checkpoint, fsync.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Journal({})", self.inner.journal)
    }
}

struct Inner {
    settings: JournalSettings,
    key: SigningKey,
    clock: Arc<dyn Clock>,
    journal: JournalId,
    state: Mutex<State>,
    failures: Mutex<FailureAggregator>,
    writable: AtomicBool,
    write_failures: AtomicU64,
    checkpoints: watch::Sender<Option<Checkpoint>>,
    /// When [`Journal::run`]'s last tick (flush, rotation, checkpoint) finished.
    last_tick: Mutex<std::time::Instant>,
}

struct State {
    file: Arc<File>,
    path: PathBuf,
    day: Date,
    /// Length of the file up to its last whole record.
    len: u64,
    /// A failed write left bytes past `len` that could not be cut yet.
    torn: bool,
    /// The last record: `None` before the genesis.
    head: Option<(Seq, LineHash)>,
    last_time: Timestamp,
    /// Written since the last fsync.
    dirty: bool,
    /// Files rotated away, still to fsync.
    to_sync: Vec<Arc<File>>,
    /// Directory entries created or removed since the last fsync of the directory.
    dir_dirty: bool,
    reserve_mode: bool,
    reserve_retry_at: Timestamp,
    last_write_ok: bool,
    closed: bool,
    since_checkpoint: u64,
    last_checkpoint_at: Timestamp,
    purge_checked: Option<Date>,
}

/// One failed write.
enum Failure {
    /// ENOSPC / EDQUOT.
    Full(PathBuf, io::Error),
    Io(PathBuf, io::Error),
    TooLarge(usize),
    Encode(serde_json::Error),
    Sign(KeyError),
}

/// What to write: a given event, or a checkpoint of the head at the time of writing.
#[derive(Clone, Copy)]
enum Pending<'a> {
    Event(&'a Event),
    Checkpoint,
}

impl Pending<'_> {
    fn kind(self) -> &'static str {
        match self {
            Pending::Event(e) => e.kind(),
            Pending::Checkpoint => "checkpoint",
        }
    }

    fn uses_reserve(self) -> bool {
        match self {
            Pending::Event(e) => e.uses_reserve(),
            Pending::Checkpoint => true,
        }
    }
}

/// A record borrowed for writing.
#[derive(Serialize)]
struct RecordRef<'a> {
    seq: Seq,
    #[serde(with = "super::record::time_ms")]
    time: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev: Option<LineHash>,
    #[serde(flatten)]
    event: &'a Event,
}

fn utc_date(time: Timestamp) -> Date {
    TimeZone::UTC.to_datetime(time).date()
}

fn is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// Writes `bytes` zero bytes to `path` (real blocks, not a sparse file) and syncs it.
fn make_reserve(path: &Path, bytes: u64) -> io::Result<()> {
    let result = (|| {
        let mut file = File::create(path)?;
        let chunk = vec![0u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// The last record of the journal found on disk, to continue its chain.
struct Resume {
    head: (Seq, LineHash),
    last_time: Timestamp,
    journal: JournalId,
}

impl Journal {
    /// Opens the journal in `settings.dir`: resumes the chain from the last record of the
    /// newest file (setting aside a torn tail, journaled as `tail_repaired`), or starts
    /// a new journal with its genesis. Then takes its disk reserve and purges files past
    /// the retention.
    pub fn open(
        settings: JournalSettings,
        key: SigningKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Journal, JournalError> {
        if settings.retention_days == 0 {
            return Err(JournalError::NoRetention);
        }
        let dir = settings.dir.clone();
        let dir_err = |source| JournalError::Io {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(dir_err)?;
        let now = record_time(clock.now());
        let files = journal_files(&dir).map_err(dir_err)?;

        let (resume, repaired) = resume(&dir, &files, now)?;
        let (path, day) = match files.last() {
            Some((day, path)) => (path.clone(), *day),
            None => {
                let day = utc_date(now);
                (dir.join(file_name_for(day)), day)
            }
        };
        let io_err = |source| JournalError::Io {
            path: path.clone(),
            source,
        };
        let file = open_append(&path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let journal = match &resume {
            Some(r) => r.journal.clone(),
            None => JournalId::random(),
        };
        let (checkpoints, _) = watch::channel(None);
        let state = State {
            file: Arc::new(file),
            path,
            day,
            len,
            torn: false,
            head: resume.as_ref().map(|r| r.head),
            last_time: resume.as_ref().map_or(now, |r| r.last_time),
            dirty: false,
            to_sync: Vec::new(),
            dir_dirty: true,
            reserve_mode: false,
            reserve_retry_at: now,
            last_write_ok: true,
            closed: false,
            since_checkpoint: 0,
            last_checkpoint_at: now,
            purge_checked: None,
        };
        let journal = Journal {
            inner: Arc::new(Inner {
                settings,
                key,
                clock,
                journal,
                state: Mutex::new(state),
                failures: Mutex::new(FailureAggregator::new()),
                writable: AtomicBool::new(true),
                write_failures: AtomicU64::new(0),
                checkpoints,
                last_tick: Mutex::new(std::time::Instant::now()),
            }),
        };
        if resume.is_none() {
            let genesis = Event::Genesis {
                journal: journal.inner.journal.clone(),
            };
            journal.append(genesis)?;
        }
        if let Some(repaired) = repaired {
            journal.append(Event::TailRepaired(repaired))?;
        }
        journal.take_reserve(now);
        journal.sync()?;
        if let Err(e) = journal.purge_if_due(now) {
            tracing::warn!(error = %e, "journal retention purge failed; retried tomorrow");
        }
        Ok(journal)
    }

    /// The journal's id.
    pub fn id(&self) -> &JournalId {
        &self.inner.journal
    }

    /// Whether records are being written: false once the disk is full (reserve mode),
    /// after a failed write or fsync, and after [`Journal::close`]. For `/readyz`; while
    /// false, new viewing sessions are refused.
    pub fn writable(&self) -> bool {
        self.inner.writable.load(Ordering::Relaxed)
    }

    /// Whether [`Journal::run`] is stuck: no tick has finished for ten tick intervals
    /// (10 s by default), as when an fsync hangs on a failing disk. The service's
    /// watchdog stops being fed then, so systemd restarts it.
    pub fn stuck(&self) -> bool {
        let since = self
            .inner
            .last_tick
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        since > self.inner.settings.tick_interval * 10
    }

    /// Records that could not be written or were refused for a full disk since open
    /// (also `passerelle_journal_write_failures_total`).
    pub fn write_failures(&self) -> u64 {
        self.inner.write_failures.load(Ordering::Relaxed)
    }

    /// The last record's `seq` and line hash.
    pub fn head(&self) -> Option<(Seq, LineHash)> {
        self.lock().head
    }

    /// The last checkpoint made by this process.
    pub fn last_checkpoint(&self) -> Option<Checkpoint> {
        self.inner.checkpoints.borrow().clone()
    }

    /// Every new checkpoint, to send to partners and syslog.
    pub fn subscribe_checkpoints(&self) -> watch::Receiver<Option<Checkpoint>> {
        self.inner.checkpoints.subscribe()
    }

    /// Appends a record. Returns once the line is written to the file (page cache; the
    /// fsync follows within a tick). On an error the record is not in the journal: the
    /// caller refuses what it was about to allow (a new viewing session).
    pub fn append(&self, event: Event) -> Result<Seq, JournalError> {
        let mut st = self.lock();
        let now = record_time(self.inner.clock.now());
        self.append_locked(&mut st, Pending::Event(&event), now)
    }

    /// Counts an authentication failure or a refused handshake; journaled as one
    /// `auth_failures` record per minute, source and reason.
    pub fn note_failure(&self, what: FailureKind, source: &str, reason: &str) {
        let now = self.inner.clock.now();
        let done = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(now, what, source, reason);
        self.append_aggregates(done);
    }

    /// The periodic work, every second: the aggregates of minutes that are over, the
    /// retention (once a day), taking the reserve back after a full disk, a checkpoint
    /// when due, and the group commit (fsync of what was written since the last tick).
    /// Returns the checkpoint made, if any. Every step runs even if one fails; the
    /// first error is returned.
    pub fn tick(&self) -> Result<Option<Checkpoint>, JournalError> {
        let now = record_time(self.inner.clock.now());
        let due = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .due(now);
        self.append_aggregates(due);
        let mut first_error = None;
        let mut keep = |r: Result<(), JournalError>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "journal maintenance");
                first_error.get_or_insert(e);
            }
        };
        keep(self.purge_if_due(now));
        self.take_reserve(now);
        let checkpoint = {
            let mut st = self.lock();
            let settings = &self.inner.settings;
            let since = now.duration_since(st.last_checkpoint_at);
            let due = !st.closed
                && ((st.since_checkpoint > 0 && since >= settings.checkpoint_interval)
                    || since >= settings.idle_checkpoint_interval);
            if due {
                match self.checkpoint_locked(&mut st, now) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        keep(Err(e));
                        None
                    }
                }
            } else {
                None
            }
        };
        keep(self.sync());
        match first_error {
            Some(e) => Err(e),
            None => Ok(checkpoint),
        }
    }

    /// Makes a checkpoint now (also done by [`Journal::tick`] and [`Journal::close`]).
    pub fn checkpoint(&self) -> Result<Checkpoint, JournalError> {
        let now = record_time(self.inner.clock.now());
        let mut st = self.lock();
        self.checkpoint_locked(&mut st, now)
    }

    /// Fsyncs every file written since the last sync, and the directory after a file was
    /// created or deleted.
    pub fn sync(&self) -> Result<(), JournalError> {
        let (files, dir_dirty, path) = {
            let mut st = self.lock();
            if !st.dirty && st.to_sync.is_empty() && !st.dir_dirty {
                return Ok(());
            }
            let mut files = std::mem::take(&mut st.to_sync);
            files.push(st.file.clone());
            st.dirty = false;
            (files, std::mem::take(&mut st.dir_dirty), st.path.clone())
        };
        let mut result = files.iter().try_for_each(|f| f.sync_data());
        if result.is_ok() && dir_dirty {
            result = File::open(&self.inner.settings.dir).and_then(|d| d.sync_all());
        }
        result.map_err(|source| {
            let mut st = self.lock();
            st.dirty = true;
            st.dir_dirty |= dir_dirty;
            st.last_write_ok = false;
            self.failed();
            JournalError::Write { path, source }
        })
    }

    /// Stops the journal: the pending aggregates, a last checkpoint, fsync. Append
    /// `process_stop` before. Later appends fail with [`JournalError::Closed`].
    pub fn close(&self) -> Result<Checkpoint, JournalError> {
        let rest = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain();
        self.append_aggregates(rest);
        let checkpoint = {
            let mut st = self.lock();
            if st.closed {
                return Err(JournalError::Closed);
            }
            let now = record_time(self.inner.clock.now());
            let checkpoint = self.checkpoint_locked(&mut st, now);
            st.closed = true;
            self.update_flag(&st);
            checkpoint
        };
        let synced = self.sync();
        let checkpoint = checkpoint?;
        synced?;
        Ok(checkpoint)
    }

    /// Ticks every `tick_interval` until `shutdown` completes, then closes the journal.
    /// The blocking work (fsync, signing) runs on tokio's blocking pool.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<Checkpoint, JournalError> {
        let mut interval = tokio::time::interval(self.inner.settings.tick_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = interval.tick() => {
                    let journal = self.clone();
                    match tokio::task::spawn_blocking(move || journal.tick()).await {
                        Ok(_) => {
                            *self
                                .inner
                                .last_tick
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner) = std::time::Instant::now();
                        }
                        Err(_) => return Err(JournalError::Panicked),
                    }
                }
            }
        }
        let journal = self.clone();
        tokio::task::spawn_blocking(move || journal.close())
            .await
            .map_err(|_| JournalError::Panicked)?
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written record behind
        // (every write is cut back on failure), so the state is still usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn append_aggregates(&self, records: Vec<super::record::AuthFailures>) {
        for record in records {
            if let Err(e) = self.append(Event::AuthFailures(record)) {
                tracing::warn!(error = %e, "cannot journal authentication failures");
            }
        }
    }

    fn append_locked(
        &self,
        st: &mut State,
        pending: Pending<'_>,
        now: Timestamp,
    ) -> Result<Seq, JournalError> {
        if st.closed {
            return Err(JournalError::Closed);
        }
        if st.reserve_mode && !pending.uses_reserve() {
            self.failed();
            return Err(JournalError::DiskFull {
                kind: pending.kind(),
            });
        }
        self.note_jump(st, now);
        self.write_with_reserve(st, pending, now)
    }

    fn checkpoint_locked(
        &self,
        st: &mut State,
        now: Timestamp,
    ) -> Result<Checkpoint, JournalError> {
        self.append_locked(st, Pending::Checkpoint, now)?;
        st.since_checkpoint = 0;
        st.last_checkpoint_at = now;
        let checkpoint = self.inner.checkpoints.borrow().clone();
        checkpoint.ok_or(JournalError::Closed)
    }

    /// A clock gone back is journaled once, before the record that sees it.
    fn note_jump(&self, st: &mut State, now: Timestamp) {
        if st.reserve_mode || now.duration_since(st.last_time) >= -JUMP_TOLERANCE {
            return;
        }
        let jump = Event::TimeJump(TimeJump {
            from: st.last_time,
            to: now,
        });
        if let Err(e) = self.write_with_reserve(st, Pending::Event(&jump), now) {
            tracing::warn!(error = %e, "cannot journal a time jump");
        }
    }

    fn write_with_reserve(
        &self,
        st: &mut State,
        pending: Pending<'_>,
        now: Timestamp,
    ) -> Result<Seq, JournalError> {
        match self.write_once(st, pending, now) {
            Ok(seq) => Ok(seq),
            Err(Failure::Full(path, source)) if !st.reserve_mode => {
                self.failed();
                self.enter_reserve(st, now);
                if pending.uses_reserve() {
                    self.write_once(st, pending, now).map_err(|f| {
                        self.failed();
                        failure_error(f, pending)
                    })
                } else {
                    tracing::warn!(path = %path.display(), error = %source, kind = pending.kind(), "journal disk full: record refused");
                    Err(JournalError::DiskFull {
                        kind: pending.kind(),
                    })
                }
            }
            Err(f) => {
                self.failed();
                Err(failure_error(f, pending))
            }
        }
    }

    /// The disk is full: release the reserve, refuse all but records ending or refusing
    /// access, and journal it.
    fn enter_reserve(&self, st: &mut State, now: Timestamp) {
        st.reserve_mode = true;
        st.reserve_retry_at = now + RESERVE_RETRY;
        self.update_flag(st);
        let reserve = self.inner.settings.dir.join(RESERVE_FILE);
        match fs::remove_file(&reserve) {
            Ok(()) => st.dir_dirty = true,
            Err(e) => tracing::warn!(error = %e, "journal reserve file could not be released"),
        }
        tracing::error!(
            dir = %self.inner.settings.dir.display(),
            "journal disk full: only records ending or refusing access are written; new viewing sessions are refused"
        );
        let full = Event::JournalStorage(JournalStorage {
            state: StorageState::Full,
        });
        if let Err(f) = self.write_once(st, Pending::Event(&full), now) {
            self.failed();
            tracing::warn!(error = %failure_error(f, Pending::Event(&full)), "cannot journal the full disk");
        }
    }

    /// Takes the reserve (at open, and in reserve mode every [`RESERVE_RETRY`]): once it
    /// is in place again, every record is written again.
    fn take_reserve(&self, now: Timestamp) {
        let settings = &self.inner.settings;
        let path = settings.dir.join(RESERVE_FILE);
        {
            let st = self.lock();
            if st.closed {
                return;
            }
            if st.reserve_mode {
                if now < st.reserve_retry_at {
                    return;
                }
            } else if fs::metadata(&path).is_ok_and(|m| m.len() >= settings.reserve_bytes) {
                return;
            }
        }
        let made = if settings.reserve_bytes == 0 {
            Ok(())
        } else {
            make_reserve(&path, settings.reserve_bytes)
        };
        let mut st = self.lock();
        st.dir_dirty = true;
        match made {
            Ok(()) if st.reserve_mode => {
                st.reserve_mode = false;
                st.last_write_ok = true;
                self.update_flag(&st);
                tracing::info!("journal disk space recovered: every record is written again");
                let recovered = Event::JournalStorage(JournalStorage {
                    state: StorageState::Recovered,
                });
                if let Err(e) = self.append_locked(&mut st, Pending::Event(&recovered), now) {
                    tracing::warn!(error = %e, "cannot journal the recovered disk");
                }
            }
            Ok(()) => {}
            Err(e) if is_full(&e) && !st.reserve_mode => {
                // No room even for the reserve: start refusing as if it had been used.
                self.enter_reserve(&mut st, now);
            }
            Err(e) => {
                st.reserve_retry_at = now + RESERVE_RETRY;
                if !st.reserve_mode {
                    tracing::warn!(error = %e, "cannot make the journal reserve file");
                }
            }
        }
    }

    /// One attempt: rotate if the day changed, encode, write, and on failure cut the
    /// file back to its last whole record.
    fn write_once(
        &self,
        st: &mut State,
        pending: Pending<'_>,
        now: Timestamp,
    ) -> Result<Seq, Failure> {
        if st.torn {
            st.file
                .set_len(st.len)
                .map_err(|e| Failure::Io(st.path.clone(), e))?;
            st.torn = false;
        }
        self.rotate(st, now)?;
        let (seq, prev) = match st.head {
            Some((seq, hash)) => (seq + 1, Some(hash)),
            None => (0, None),
        };
        let signed;
        let event = match pending {
            Pending::Event(event) => event,
            Pending::Checkpoint => {
                let (head_seq, head_hash) = st.head.ok_or(Failure::Io(
                    st.path.clone(),
                    io::Error::other("no record to checkpoint"),
                ))?;
                let facts = CheckpointFacts {
                    journal: self.inner.journal.clone(),
                    head_seq,
                    head_hash,
                    at: now,
                };
                signed = Event::Checkpoint(
                    checkpoint::sign(&facts, &self.inner.key).map_err(Failure::Sign)?,
                );
                &signed
            }
        };
        let record = RecordRef {
            seq,
            time: now,
            prev,
            event,
        };
        let mut line = serde_json::to_vec(&record).map_err(Failure::Encode)?;
        if line.len() > MAX_RECORD_BYTES {
            return Err(Failure::TooLarge(line.len()));
        }
        let hash = LineHash::of_line(&line);
        line.push(b'\n');
        if let Err(e) = (&*st.file).write_all(&line) {
            if st.file.set_len(st.len).is_err() {
                st.torn = true;
            }
            return Err(if is_full(&e) {
                Failure::Full(st.path.clone(), e)
            } else {
                Failure::Io(st.path.clone(), e)
            });
        }
        st.len += line.len() as u64;
        st.head = Some((seq, hash));
        st.last_time = now;
        st.dirty = true;
        match event {
            Event::Checkpoint(c) => {
                self.inner.checkpoints.send_replace(Some(c.clone()));
            }
            _ => st.since_checkpoint += 1,
        }
        if !st.reserve_mode {
            st.last_write_ok = true;
        }
        self.update_flag(st);
        metrics::counter!("passerelle_journal_records_total", "kind" => event.kind()).increment(1);
        Ok(seq)
    }

    /// A new file on the first record of a new UTC day. A clock gone back never goes
    /// back to an older file: records stay in order across files.
    fn rotate(&self, st: &mut State, now: Timestamp) -> Result<(), Failure> {
        let day = utc_date(now);
        if day <= st.day {
            return Ok(());
        }
        let path = self.inner.settings.dir.join(file_name_for(day));
        let classify = |e: io::Error| {
            if is_full(&e) {
                Failure::Full(path.clone(), e)
            } else {
                Failure::Io(path.clone(), e)
            }
        };
        let file = open_append(&path).map_err(classify)?;
        let len = file.metadata().map_err(classify)?.len();
        let old = std::mem::replace(&mut st.file, Arc::new(file));
        st.to_sync.push(old);
        st.dir_dirty = true;
        st.path = path;
        st.day = day;
        st.len = len;
        Ok(())
    }

    /// Deletes the files whose every record is older than the retention, once a day,
    /// journaling the purge (with the last purged record's seq and hash) first.
    fn purge_if_due(&self, now: Timestamp) -> Result<(), JournalError> {
        let today = utc_date(now);
        let current = {
            let mut st = self.lock();
            if st.closed || st.purge_checked == Some(today) {
                return Ok(());
            }
            // Once a day, even if it fails (it is logged): a retry every tick would only
            // flood the log, and a purge a day late keeps records a day longer.
            st.purge_checked = Some(today);
            st.path.clone()
        };
        let settings = &self.inner.settings;
        let dir_err = |source| JournalError::Io {
            path: settings.dir.clone(),
            source,
        };
        // A file of day D holds records older than D + 1 day: it goes once D + 1 +
        // retention_days <= today, so every record is kept at least retention_days days
        // and at most one day more.
        let keep_from = today
            .checked_sub(jiff::Span::new().days(i64::from(settings.retention_days)))
            .map_err(|e| dir_err(io::Error::other(e)))?;
        let old: Vec<(Date, PathBuf)> = journal_files(&settings.dir)
            .map_err(dir_err)?
            .into_iter()
            .filter(|(day, path)| *day < keep_from && *path != current)
            .collect();
        if !old.is_empty() {
            let mut through = None;
            for (_, path) in old.iter().rev() {
                let bytes = fs::read(path).map_err(|source| JournalError::Io {
                    path: path.clone(),
                    source,
                })?;
                if let Some((head, _, _)) = last_record(&bytes) {
                    through = Some(head);
                    break;
                }
            }
            let files = old
                .iter()
                .filter_map(|(_, p)| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            self.append(Event::Purge(Purge {
                journal: self.inner.journal.clone(),
                retention_days: settings.retention_days,
                files,
                through_seq: through.map(|(seq, _)| seq),
                through_hash: through.map(|(_, hash)| hash),
            }))?;
            // Journaled first: a crash here leaves files the next purge deletes again.
            for (_, path) in &old {
                if let Err(e) = fs::remove_file(path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot purge a journal file");
                }
            }
            self.lock().dir_dirty = true;
        }
        Ok(())
    }

    /// A record could not be written (or was refused for a full disk).
    fn failed(&self) {
        self.inner.write_failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("passerelle_journal_write_failures_total").increment(1);
        self.inner.writable.store(false, Ordering::Relaxed);
        metrics::gauge!("passerelle_journal_writable").set(0.0);
    }

    fn update_flag(&self, st: &State) {
        let writable = !st.reserve_mode && st.last_write_ok && !st.closed;
        self.inner.writable.store(writable, Ordering::Relaxed);
        metrics::gauge!("passerelle_journal_writable").set(if writable { 1.0 } else { 0.0 });
    }
}

fn failure_error(failure: Failure, pending: Pending<'_>) -> JournalError {
    match failure {
        Failure::Full(path, source) | Failure::Io(path, source) => {
            JournalError::Write { path, source }
        }
        Failure::TooLarge(bytes) => JournalError::TooLarge {
            kind: pending.kind(),
            bytes,
        },
        Failure::Encode(e) => JournalError::Encode(e),
        Failure::Sign(e) => JournalError::Sign(e),
    }
}

/// The last line of `bytes` that parses as a record: its seq and hash, its time, and the
/// offset just past its `\n`.
fn last_record(bytes: &[u8]) -> Option<((Seq, LineHash), Timestamp, usize)> {
    split_lines(bytes)
        .into_iter()
        .rev()
        .filter(|l| l.terminated)
        .find_map(|l| {
            let line = &bytes[l.start..l.end];
            let head: RecordHead = serde_json::from_slice(line).ok()?;
            Some(((head.seq, LineHash::of_line(line)), head.time, l.end + 1))
        })
}

/// The journal id: from the newest genesis, checkpoint or purge record.
fn find_journal_id(bytes: &[u8]) -> Option<JournalId> {
    split_lines(bytes).into_iter().rev().find_map(|l| {
        let line = &bytes[l.start..l.end];
        let head: RecordHead = serde_json::from_slice(line).ok()?;
        if !matches!(head.kind.as_str(), "genesis" | "checkpoint" | "purge") {
            return None;
        }
        match Record::parse(line).ok()?.event {
            Event::Genesis { journal } => Some(journal),
            Event::Checkpoint(c) => Some(c.journal),
            Event::Purge(p) => Some(p.journal),
            _ => None,
        }
    })
}

/// Finds where to continue the chain. Bytes after the newest file's last whole record
/// (a write torn by a crash) are saved next to it and cut off.
fn resume(
    dir: &Path,
    files: &[(Date, PathBuf)],
    now: Timestamp,
) -> Result<(Option<Resume>, Option<TailRepaired>), JournalError> {
    let read = |path: &PathBuf| {
        fs::read(path).map_err(|source| JournalError::Io {
            path: path.clone(),
            source,
        })
    };
    let mut head = None;
    let mut repaired = None;
    let mut journal = None;
    for (i, (_, path)) in files.iter().enumerate().rev() {
        let bytes = read(path)?;
        let found = last_record(&bytes);
        let valid_end = found.as_ref().map_or(0, |(_, _, end)| *end);
        if i + 1 == files.len() && valid_end < bytes.len() {
            repaired = Some(set_aside(dir, path, &bytes[valid_end..], valid_end, now)?);
        }
        if head.is_none()
            && let Some((h, time, _)) = found
        {
            head = Some((h, time));
        }
        if head.is_some() {
            journal = find_journal_id(&bytes[..valid_end]);
            if journal.is_some() {
                break;
            }
        }
    }
    match (head, journal) {
        (None, _) if repaired.is_some() => Err(JournalError::Corrupt {
            path: dir.to_owned(),
            why: "journal files hold no readable record".to_owned(),
        }),
        (None, _) => Ok((None, None)),
        (Some(_), None) => Err(JournalError::Corrupt {
            path: dir.to_owned(),
            why: "no genesis, checkpoint or purge record names the journal".to_owned(),
        }),
        (Some((head, last_time)), Some(journal)) => Ok((
            Some(Resume {
                head,
                last_time,
                journal,
            }),
            repaired,
        )),
    }
}

/// Saves a torn tail as `<file>.torn-<unix seconds>` and cuts the file back.
fn set_aside(
    dir: &Path,
    path: &Path,
    tail: &[u8],
    valid_end: usize,
    now: Timestamp,
) -> Result<TailRepaired, JournalError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let saved_as = format!("{name}.torn-{}", now.as_second());
    let saved = dir.join(&saved_as);
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| JournalError::Io { path, source }
    };
    let mut file = File::create(&saved).map_err(io_err(&saved))?;
    file.write_all(tail).map_err(io_err(&saved))?;
    file.sync_all().map_err(io_err(&saved))?;
    let journal_file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    journal_file
        .set_len(valid_end as u64)
        .map_err(io_err(path))?;
    journal_file.sync_all().map_err(io_err(path))?;
    tracing::warn!(file = %name, bytes = tail.len(), saved_as = %saved_as, "journal: torn tail set aside");
    Ok(TailRepaired {
        file: name,
        discarded_bytes: tail.len() as u64,
        discarded_sha256: LineHash::of_line(tail),
        saved_as,
    })
}
