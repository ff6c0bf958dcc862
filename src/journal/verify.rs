//! The chain verifier. Pure: lines in, a [`VerifyReport`] out.
//!
//! Drive a [`Verifier`] with [`Verifier::feed`] once per line, in journal order (files
//! oldest first, lines in file order), then [`Verifier::finish`]. It stops judging at the
//! first bad record and only looks ahead (boundedly) to tell a reordering from a removal.
//!
//! What it checks:
//! - each line parses (only `seq`, `time`, `prev`, `kind` are needed, so kinds from a later
//!   release verify too);
//! - `seq` goes up by one (a gap: records removed; going back: reordered or duplicated);
//! - `prev` is the SHA-256 of the previous line's exact bytes (a mismatch: the previous
//!   record was edited);
//! - the journal starts with its genesis (`seq` 0, no `prev`), or after a purge that a
//!   later `purge` record accounts for (same `seq` and hash);
//! - each checkpoint names this journal, covers exactly the record before it, and its
//!   signature verifies with the journal public key.
//!
//! Records after the last verified checkpoint are reported as an unvouched tail: written
//! after it, or the journal was cut and its later checkpoints are missing.

use std::fmt;

use jiff::Timestamp;

use super::checkpoint::CheckpointError;
use super::record::{Event, JournalId, LineHash, Record, RecordHead, Seq};
use crate::policy::TrustedKey;

/// How far past a gap the verifier looks for the missing records, to call it a
/// reordering rather than a removal.
const REORDER_LOOKAHEAD: u64 = 100_000;

/// Where a line is: file name and 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name (not the path).
    pub file: String,
    /// 1-based line number.
    pub line: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file, self.line)
    }
}

/// The first thing wrong with a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No record at all.
    Empty,
    /// A line is not a record.
    Unparseable {
        /// The line.
        at: Location,
        /// The parser's message.
        error: String,
    },
    /// The first record is `seq` 0 but not a proper genesis.
    BadGenesis {
        /// The record.
        at: Location,
        /// What is wrong.
        why: &'static str,
    },
    /// A second genesis inside the chain (another journal's file mixed in).
    UnexpectedGenesis {
        /// The record.
        at: Location,
        /// Its `seq`.
        seq: Seq,
    },
    /// The record's bytes do not match the hash the next record carries: it was edited
    /// (or the next record's `prev` was).
    Edited {
        /// The edited record.
        record: Location,
        /// Its `seq`.
        seq: Seq,
        /// The record whose `prev` does not match.
        detected_at: Location,
    },
    /// Records `missing_from..found` are absent before `at`.
    Removed {
        /// The first missing `seq`.
        missing_from: Seq,
        /// The `seq` found instead.
        found: Seq,
        /// The record found.
        at: Location,
    },
    /// Records are out of order: `seq` was expected at `at`, `found` is there.
    Reordered {
        /// The `seq` expected.
        expected: Seq,
        /// The `seq` found.
        found: Seq,
        /// Where.
        at: Location,
        /// Where the expected record appears later, when it does.
        expected_at: Option<Location>,
    },
    /// The journal starts after `seq` 0 and no purge record accounts for the records
    /// before it: they were removed.
    UnanchoredStart {
        /// The first record present.
        first_seq: Seq,
        /// Where.
        at: Location,
    },
    /// A checkpoint that does not hold.
    BadCheckpoint {
        /// The checkpoint record.
        at: Location,
        /// Its `seq`.
        seq: Seq,
        /// What is wrong.
        why: CheckpointProblem,
    },
}

/// What is wrong with a checkpoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointProblem {
    /// It names another journal.
    OtherJournal(JournalId),
    /// It does not cover the record just before it.
    WrongHead,
    /// Its signature does not verify with the journal key.
    Signature(CheckpointError),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => write!(f, "no journal record found"),
            Problem::Unparseable { at, error } => {
                write!(f, "{at}: not a journal record ({error})")
            }
            Problem::BadGenesis { at, why } => write!(f, "{at}: bad genesis record: {why}"),
            Problem::UnexpectedGenesis { at, seq } => write!(
                f,
                "{at} (seq {seq}): a genesis record inside the chain (a file of another journal?)"
            ),
            Problem::Edited {
                record,
                seq,
                detected_at,
            } => write!(
                f,
                "{record} (seq {seq}): edited: its bytes do not match the hash carried by the next record ({detected_at})"
            ),
            Problem::Removed {
                missing_from,
                found,
                at,
            } => {
                if found - missing_from == 1 {
                    write!(f, "record seq {missing_from} removed: {at} has seq {found}")
                } else {
                    write!(
                        f,
                        "records seq {missing_from} to {} removed: {at} has seq {found}",
                        found - 1
                    )
                }
            }
            Problem::Reordered {
                expected,
                found,
                at,
                expected_at,
            } => {
                write!(
                    f,
                    "{at}: reordered: seq {expected} expected, seq {found} found"
                )?;
                if let Some(later) = expected_at {
                    write!(f, " (seq {expected} is at {later})")?;
                }
                Ok(())
            }
            Problem::UnanchoredStart { first_seq, at } => write!(
                f,
                "{at}: the journal starts at seq {first_seq} and no purge record accounts for the records before it: they were removed"
            ),
            Problem::BadCheckpoint { at, seq, why } => {
                write!(f, "{at} (seq {seq}): bad checkpoint: ")?;
                match why {
                    CheckpointProblem::OtherJournal(id) => {
                        write!(f, "it names another journal ({id})")
                    }
                    CheckpointProblem::WrongHead => {
                        write!(f, "it does not cover the record just before it")
                    }
                    CheckpointProblem::Signature(e) => write!(f, "{e}"),
                }
            }
        }
    }
}

impl Problem {
    /// Where the first bad record is, when a line is to blame.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Problem::Empty => None,
            Problem::Unparseable { at, .. }
            | Problem::BadGenesis { at, .. }
            | Problem::UnexpectedGenesis { at, .. }
            | Problem::Removed { at, .. }
            | Problem::Reordered { at, .. }
            | Problem::UnanchoredStart { at, .. }
            | Problem::BadCheckpoint { at, .. } => Some(at),
            Problem::Edited { record, .. } => Some(record),
        }
    }
}

/// How the journal starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// With its genesis.
    Genesis,
    /// After purged records, accounted for by the purge record at `anchor` (`None`:
    /// not accounted for, see [`Problem::UnanchoredStart`]).
    AfterPurge {
        /// The first record present.
        first_seq: Seq,
        /// The purge record that accounts for the records before it.
        anchor: Option<Location>,
    },
}

/// The last checkpoint that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The checkpoint record's own `seq`.
    pub seq: Seq,
    /// The last record it vouches for.
    pub head_seq: Seq,
    /// When it was signed.
    pub at: Timestamp,
    /// Where it is.
    pub location: Location,
}

/// Records after the last verified checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// First `seq` not vouched for.
    pub from_seq: Seq,
    /// Last `seq` read.
    pub to_seq: Seq,
}

/// What [`Verifier::finish`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The journal id (from the genesis, a checkpoint or a purge record).
    pub journal: Option<JournalId>,
    /// Files read, in order.
    pub files: Vec<String>,
    /// Records read up to the first problem (all of them when intact).
    pub records: u64,
    /// First and last `seq` read before the first problem.
    pub seqs: Option<(Seq, Seq)>,
    /// How the journal starts.
    pub start: Option<Start>,
    /// Checkpoints verified before the first problem.
    pub checkpoints: u64,
    /// The last of them.
    pub last_checkpoint: Option<VerifiedCheckpoint>,
    /// Records after it (when intact).
    pub tail: Option<Tail>,
    /// An unfinished last line (a write torn by a crash), ignored.
    pub torn_line: Option<Location>,
    /// The first problem; `None` when the journal is intact.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    /// No problem found (the tail may still be unvouched: see [`VerifyReport::tail`]).
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.journal {
            Some(id) => writeln!(f, "journal {id}")?,
            None => writeln!(f, "journal id unknown")?,
        }
        match (self.files.first(), self.files.last()) {
            (Some(first), Some(last)) if self.files.len() > 1 => {
                writeln!(f, "files: {} ({first} .. {last})", self.files.len())?
            }
            (Some(first), _) => writeln!(f, "files: 1 ({first})")?,
            _ => writeln!(f, "files: none")?,
        }
        match self.seqs {
            Some((first, last)) => {
                writeln!(f, "records read: {} (seq {first} .. {last})", self.records)?
            }
            None => writeln!(f, "records read: 0")?,
        }
        match &self.start {
            Some(Start::Genesis) => writeln!(f, "starts with its genesis")?,
            Some(Start::AfterPurge {
                first_seq,
                anchor: Some(at),
            }) => writeln!(
                f,
                "starts at seq {first_seq}, after a purge accounted for at {at}"
            )?,
            Some(Start::AfterPurge {
                first_seq,
                anchor: None,
            }) => writeln!(
                f,
                "starts at seq {first_seq}, after records not accounted for"
            )?,
            None => {}
        }
        match &self.last_checkpoint {
            Some(c) => writeln!(
                f,
                "checkpoints verified: {}; the last, at {} (seq {}, signed {}), vouches for records up to seq {}",
                self.checkpoints, c.location, c.seq, c.at, c.head_seq
            )?,
            None => writeln!(f, "checkpoints verified: none: no record is vouched for")?,
        }
        if let Some(at) = &self.torn_line {
            writeln!(
                f,
                "{at}: unfinished last line (a write torn by a crash), ignored"
            )?;
        }
        match &self.problem {
            None => {
                if let Some(tail) = &self.tail {
                    writeln!(
                        f,
                        "tail: records seq {} .. {} come after the last verified checkpoint: written since, or the journal was cut and later checkpoints are missing (compare with the checkpoints partners and syslog hold)",
                        tail.from_seq, tail.to_seq
                    )?;
                }
                match &self.last_checkpoint {
                    Some(c) => write!(f, "INTACT up to seq {} (last checkpoint)", c.head_seq),
                    None => write!(f, "CHAIN CONSISTENT but no verified checkpoint"),
                }
            }
            Some(problem) => {
                writeln!(f, "first bad record: {problem}")?;
                match &self.last_checkpoint {
                    Some(c) => write!(
                        f,
                        "BROKEN: intact up to seq {} (last verified checkpoint before the damage)",
                        c.head_seq
                    ),
                    None => write!(f, "BROKEN: no verified checkpoint before the damage"),
                }
            }
        }
    }
}

/// The chain verifier (see the module doc for how to drive it).
pub struct Verifier<'k> {
    key: &'k TrustedKey,
    report: VerifyReport,
    /// `seq`, line hash and location of the last record accepted.
    last: Option<(Seq, LineHash, Location)>,
    /// The first record's `seq` and `prev`, while a purge record has not accounted for it.
    pending_anchor: Option<(Seq, Option<LineHash>, Location)>,
    /// A line that did not parse, held until we know whether it is the last one.
    unparsed: Option<(Location, String, bool)>,
    /// After a gap: the missing range, and how many more records to look through.
    lookahead: Option<(Seq, Seq, u64)>,
}

impl<'k> Verifier<'k> {
    /// A verifier checking checkpoint signatures with the journal public `key`.
    pub fn new(key: &'k TrustedKey) -> Verifier<'k> {
        Verifier {
            key,
            report: VerifyReport {
                journal: None,
                files: Vec::new(),
                records: 0,
                seqs: None,
                start: None,
                checkpoints: 0,
                last_checkpoint: None,
                tail: None,
                torn_line: None,
                problem: None,
            },
            last: None,
            pending_anchor: None,
            unparsed: None,
            lookahead: None,
        }
    }

    /// Feeds one line (without its `\n`). `terminated`: the line ended with `\n` (only
    /// the very last line of a journal may lack it, after a torn write).
    pub fn feed(&mut self, at: Location, line: &[u8], terminated: bool) {
        if self.report.files.last() != Some(&at.file) {
            self.report.files.push(at.file.clone());
        }
        if let Some((loc, error, _)) = self.unparsed.take()
            && self.report.problem.is_none()
        {
            // A bad line followed by more lines is not a torn tail.
            self.report.problem = Some(Problem::Unparseable { at: loc, error });
        }
        if self.report.problem.is_some() {
            self.look_ahead(&at, line);
            return;
        }
        let head: RecordHead = match serde_json::from_slice(line) {
            Ok(head) => head,
            Err(e) => {
                self.unparsed = Some((at, e.to_string(), terminated));
                return;
            }
        };
        if let Err(problem) = self.check(&at, line, &head) {
            self.report.problem = Some(problem);
            return;
        }
        let hash = LineHash::of_line(line);
        self.report.records += 1;
        self.report.seqs = Some(match self.report.seqs {
            None => (head.seq, head.seq),
            Some((first, _)) => (first, head.seq),
        });
        self.last = Some((head.seq, hash, at));
    }

    /// Checks one parsed record against the chain so far.
    fn check(&mut self, at: &Location, line: &[u8], head: &RecordHead) -> Result<(), Problem> {
        let full = || {
            Record::parse(line).map_err(|e| Problem::Unparseable {
                at: at.clone(),
                error: e.to_string(),
            })
        };
        match &self.last {
            None => {
                if head.seq == 0 {
                    if head.kind != "genesis" {
                        return Err(Problem::BadGenesis {
                            at: at.clone(),
                            why: "seq 0 is not a genesis record",
                        });
                    }
                    if head.prev.is_some() {
                        return Err(Problem::BadGenesis {
                            at: at.clone(),
                            why: "a genesis has no prev",
                        });
                    }
                    self.report.start = Some(Start::Genesis);
                } else {
                    self.report.start = Some(Start::AfterPurge {
                        first_seq: head.seq,
                        anchor: None,
                    });
                    self.pending_anchor = Some((head.seq, head.prev, at.clone()));
                }
            }
            Some((last_seq, last_hash, last_at)) => {
                let expected = last_seq + 1;
                if head.seq > expected {
                    self.lookahead = Some((expected, head.seq, REORDER_LOOKAHEAD));
                    return Err(Problem::Removed {
                        missing_from: expected,
                        found: head.seq,
                        at: at.clone(),
                    });
                }
                if head.seq < expected {
                    return Err(Problem::Reordered {
                        expected,
                        found: head.seq,
                        at: at.clone(),
                        expected_at: None,
                    });
                }
                if head.prev != Some(*last_hash) {
                    return Err(Problem::Edited {
                        record: last_at.clone(),
                        seq: *last_seq,
                        detected_at: at.clone(),
                    });
                }
                if head.kind == "genesis" {
                    return Err(Problem::UnexpectedGenesis {
                        at: at.clone(),
                        seq: head.seq,
                    });
                }
            }
        }
        match head.kind.as_str() {
            "genesis" => {
                if let Event::Genesis { journal } = full()?.event {
                    self.report.journal = Some(journal);
                }
            }
            "checkpoint" => {
                if let Event::Checkpoint(checkpoint) = full()?.event {
                    let bad = |why| Problem::BadCheckpoint {
                        at: at.clone(),
                        seq: head.seq,
                        why,
                    };
                    match &self.report.journal {
                        Some(id) if *id != checkpoint.journal => {
                            return Err(bad(CheckpointProblem::OtherJournal(
                                checkpoint.journal.clone(),
                            )));
                        }
                        Some(_) => {}
                        None => self.report.journal = Some(checkpoint.journal.clone()),
                    }
                    let covers_prev = head.seq > 0
                        && checkpoint.head_seq == head.seq - 1
                        && head.prev == Some(checkpoint.head_hash);
                    if !covers_prev {
                        return Err(bad(CheckpointProblem::WrongHead));
                    }
                    checkpoint
                        .verify(self.key)
                        .map_err(|e| bad(CheckpointProblem::Signature(e)))?;
                    self.report.checkpoints += 1;
                    self.report.last_checkpoint = Some(VerifiedCheckpoint {
                        seq: head.seq,
                        head_seq: checkpoint.head_seq,
                        at: checkpoint.at,
                        location: at.clone(),
                    });
                }
            }
            "purge" => {
                if let Event::Purge(purge) = full()?.event {
                    if self.report.journal.is_none() {
                        self.report.journal = Some(purge.journal.clone());
                    }
                    if let Some((first_seq, first_prev, _)) = &self.pending_anchor
                        && purge.through_seq.map(|s| s + 1) == Some(*first_seq)
                        && purge.through_hash.is_some()
                        && purge.through_hash == *first_prev
                    {
                        self.report.start = Some(Start::AfterPurge {
                            first_seq: *first_seq,
                            anchor: Some(at.clone()),
                        });
                        self.pending_anchor = None;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// After a gap, looks for the missing records further on: found, it is a reordering.
    fn look_ahead(&mut self, at: &Location, line: &[u8]) {
        let Some((from, to, left)) = self.lookahead else {
            return;
        };
        if left == 0 {
            self.lookahead = None;
            return;
        }
        self.lookahead = Some((from, to, left - 1));
        let Ok(head) = serde_json::from_slice::<RecordHead>(line) else {
            return;
        };
        if head.seq == from
            && let Some(Problem::Removed { found, at: gap, .. }) = self.report.problem.take()
        {
            self.report.problem = Some(Problem::Reordered {
                expected: from,
                found,
                at: gap,
                expected_at: Some(at.clone()),
            });
            self.lookahead = None;
        }
    }

    /// The report.
    pub fn finish(mut self) -> VerifyReport {
        if let Some((at, error, terminated)) = self.unparsed.take()
            && self.report.problem.is_none()
        {
            if terminated {
                self.report.problem = Some(Problem::Unparseable { at, error });
            } else {
                self.report.torn_line = Some(at);
            }
        }
        if self.report.problem.is_none() {
            if self.report.records == 0 {
                self.report.problem = Some(Problem::Empty);
            } else if let Some((first_seq, _, at)) = self.pending_anchor.take() {
                self.report.problem = Some(Problem::UnanchoredStart { first_seq, at });
            }
        }
        if self.report.problem.is_none()
            && let Some((last_seq, _, _)) = &self.last
        {
            let from_seq = match &self.report.last_checkpoint {
                Some(c) => c.seq + 1,
                None => self.report.seqs.map_or(0, |(first, _)| first),
            };
            if from_seq <= *last_seq {
                self.report.tail = Some(Tail {
                    from_seq,
                    to_seq: *last_seq,
                });
            }
        }
        self.report
    }
}
