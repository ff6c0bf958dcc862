//! The audit journal (DESIGN.md "Audit journal"): append-only JSON Lines, hash-chained,
//! with signed checkpoints; the access register.
//!
//! - [`record`]: the record model, one typed [`Event`] per kind. Pure.
//! - [`checkpoint`]: the signed text of a checkpoint, signing and verification with the
//!   journal key (Ed25519 through minisign). Pure.
//! - [`verify`]: the chain verifier, a state machine fed line by line. Pure.
//! - [`aggregate`]: per-minute aggregation of authentication failures. Pure.
//! - [`register`]: the `audit show` filter and the CSV access register. Pure.
//! - [`writer`]: [`Journal`], the writer (files, group commit, rotation, checkpoints,
//!   retention, the disk reserve).
//! - [`read`]: [`verify()`], [`show`] and [`export_csv`] over a journal directory, for the CLI.
//!
//! # Files
//!
//! One file per UTC day, `journal-YYYY-MM-DD.jsonl`, in the audit directory; the chain runs
//! on across files. Each line is one record:
//!
//! ```text
//! {"seq":0,"time":"2026-02-02T08:00:00.000Z","kind":"genesis","journal":"9f0c…"}
//! {"seq":1,"time":"2026-02-02T08:00:00.002Z","prev":"5d1e…","kind":"process_start","version":"0.1.0",…}
//! {"seq":2,"time":"2026-02-02T08:03:12.118Z","prev":"a0b4…","kind":"session_opened","session":"…","role":"provider","camera":"metz-ville/quai-1",…}
//! {"seq":3,"time":"2026-02-02T08:04:00.000Z","prev":"77c2…","kind":"checkpoint","journal":"9f0c…","head_seq":2,"head_hash":"77c2…","at":"2026-02-02T08:04:00Z","key":"…","signature":"…","global_signature":"…"}
//! ```
//!
//! `prev` is the SHA-256 of the previous line's exact bytes (without `\n`). Also in the
//! directory: `.reserve` (the disk reserve) and, after a crash, `<file>.torn-<unix s>` (a
//! torn last write set aside at resume, journaled as `tail_repaired`).
//!
//! # Guarantees
//!
//! - [`Journal::append`] returns after one `write(2)` of the whole line: the record is in
//!   the page cache, so a crash of the process loses nothing, and a viewing session
//!   journaled before its first packet is on record before anyone sees it. On error the
//!   record is not written (a partial write is cut back) and the caller refuses the
//!   session.
//! - Group commit: [`Journal::tick`] (every second under [`Journal::run`]) fsyncs what
//!   was written since the last tick, so a power loss loses at most about the last
//!   second. [`Journal::close`] (at stop, after `process_stop`) writes a checkpoint and
//!   fsyncs, so SIGTERM loses nothing.
//! - At resume, bytes after the last whole record (a write torn by a power loss) are saved
//!   aside and journaled (`tail_repaired`), and the chain continues from that record.
//! - A checkpoint every minute when something was journaled (every hour when idle) and at
//!   stop, published on [`Journal::subscribe_checkpoints`] for partners and syslog.
//! - Disk reserve: `.reserve` holds `reserve_bytes` of real blocks. When a write meets a
//!   full disk the reserve is deleted, `journal_storage: full` is journaled, and from then
//!   on only records that end or refuse access are written (`session_refused`,
//!   `session_ended`, `stream_ended`, `checkpoint`, `process_stop`, `purge`): new
//!   sessions get [`JournalError::DiskFull`] and are refused, [`Journal::writable`] is
//!   false (for `/readyz`), `passerelle_journal_write_failures_total` counts. Every ten
//!   seconds the journal tries to take its reserve back; once it can, every record is
//!   written again (`journal_storage: recovered`).
//! - Retention: a day's file is deleted once all its records are older than
//!   `retention_days` (checked at open and once a day), after a `purge` record naming
//!   the files and their last `seq` and hash, from which `audit verify` anchors the
//!   records that remain.
//! - Authentication failures and refused handshakes are counted in memory
//!   ([`Journal::note_failure`]) and journaled once a minute per source and reason, with
//!   at most 64 sources a minute (the rest counted together).
//! - A clock gone back by more than a second is journaled (`time_jump`); records keep
//!   their order and files never go back to an earlier day. Retention trusts the clock.
//!
//! Metrics: `passerelle_journal_records_total{kind}`,
//! `passerelle_journal_write_failures_total`, `passerelle_journal_writable`.

pub mod aggregate;
pub mod checkpoint;
pub mod read;
pub mod record;
pub mod register;
pub mod verify;
pub mod writer;

pub use checkpoint::{CheckpointError, CheckpointFacts, canonical_text};
pub use read::{ReadError, export_csv, journal_files, show, verify};
pub use record::{
    AuthFailures, Checkpoint, ClockState, Event, FailureKind, InterventionClosed, InterventionEnd,
    InterventionOpened, JournalId, JournalStorage, LineHash, LinkDown, LinkUp, MAX_RECORD_BYTES,
    PeerCheckpoint, PolicyLoaded, PolicyRefused, ProcessStart, ProcessStop, Purge, Record, Seq,
    SessionEnded, SessionRefused, SessionRole, Signature64, StorageState, StreamEnded,
    TailRepaired, TimeJump, TlsItem, TlsReloaded, ViewerKind, Viewing, new_session_id,
};
pub use register::Filter;
pub use verify::{Location, Problem, Verifier, VerifyReport};
pub use writer::{Clock, Journal, JournalError, JournalSettings, SystemClock};

#[cfg(test)]
mod tests;
