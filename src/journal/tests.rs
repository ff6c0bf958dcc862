//! Unit tests of the pure parts: records, chain, verifier, checkpoints, aggregation,
//! register.

use jiff::Timestamp;

use super::aggregate::{FailureAggregator, MAX_SOURCES_PER_MINUTE};
use super::checkpoint::{self, CheckpointFacts};
use super::record::*;
use super::register::{CSV_HEADER, Ends, Filter, csv_field};
use super::verify::{CheckpointProblem, Location, Problem, Start, Verifier, VerifyReport};
use crate::policy::{SigningKey, TrustedKey};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn viewing(session: &str, camera: &str, agent: &str) -> Viewing {
    Viewing {
        session: session.to_owned(),
        role: SessionRole::Provider,
        camera: camera.to_owned(),
        partner: Some("csu.metz.example".to_owned()),
        origin: "ccor.metz.example".to_owned(),
        agent: agent.to_owned(),
        agent_kind: ViewerKind::Agent,
        reason: Some("rixe, quai 1".to_owned()),
        intervention: Some("int-7".to_owned()),
        policy_serial: Some(7),
        grant: Some(0),
        basis: Some("Code des transports L1632-2".to_owned()),
    }
}

fn ended(session: &str, camera: &str, agent: &str, bytes: u64) -> SessionEnded {
    SessionEnded {
        session: session.to_owned(),
        camera: camera.to_owned(),
        partner: Some("csu.metz.example".to_owned()),
        origin: "ccor.metz.example".to_owned(),
        agent: agent.to_owned(),
        intervention: Some("int-7".to_owned()),
        duration_ms: 61_000,
        packets: 900,
        bytes,
        why: "closed".to_owned(),
    }
}

/// Builds a journal in memory, as the writer does: lines (without `\n`).
struct Chain {
    journal: JournalId,
    lines: Vec<Vec<u8>>,
    time: Timestamp,
    key: SigningKey,
}

impl Chain {
    fn new() -> Chain {
        let mut chain = Chain {
            journal: JournalId::random(),
            lines: Vec::new(),
            time: t("2026-02-02T08:00:00Z"),
            key: SigningKey::generate().unwrap(),
        };
        let genesis = Event::Genesis {
            journal: chain.journal.clone(),
        };
        chain.push(genesis);
        chain
    }

    fn head(&self) -> Option<(Seq, LineHash)> {
        self.lines.last().map(|l| {
            let r = Record::parse(l).unwrap();
            (r.seq, LineHash::of_line(l))
        })
    }

    fn push(&mut self, event: Event) {
        let (seq, prev) = match self.head() {
            Some((seq, hash)) => (seq + 1, Some(hash)),
            None => (0, None),
        };
        self.time += jiff::SignedDuration::from_secs(1);
        let record = Record {
            seq,
            time: self.time,
            prev,
            event,
        };
        self.lines.push(record.to_line().unwrap());
    }

    fn link_up(&mut self) {
        self.push(Event::LinkUp(LinkUp {
            peer: "csu.metz.example".to_owned(),
            certificate_sha256: "00".repeat(32),
            address: "192.0.2.1:4433".to_owned(),
            direction: None,
        }));
    }

    fn checkpoint(&mut self) {
        let (head_seq, head_hash) = self.head().unwrap();
        let facts = CheckpointFacts {
            journal: self.journal.clone(),
            head_seq,
            head_hash,
            at: self.time,
        };
        let c = checkpoint::sign(&facts, &self.key).unwrap();
        self.push(Event::Checkpoint(c));
    }

    fn public(&self) -> TrustedKey {
        self.key.trusted_key().unwrap()
    }
}

fn verify_lines(lines: &[Vec<u8>], key: &TrustedKey) -> VerifyReport {
    let mut verifier = Verifier::new(key);
    for (i, line) in lines.iter().enumerate() {
        // Two files: lines 0..5 in the first, the rest in the second.
        let (file, line_no) = if i < 5 {
            ("journal-2026-02-02.jsonl", i + 1)
        } else {
            ("journal-2026-02-03.jsonl", i - 4)
        };
        let at = Location {
            file: file.to_owned(),
            line: line_no as u64,
        };
        verifier.feed(at, line, true);
    }
    verifier.finish()
}

/// A journal of 13 records: checkpoints at seq 4 and 9.
fn sample() -> Chain {
    let mut chain = Chain::new();
    for _ in 0..3 {
        chain.link_up();
    }
    chain.checkpoint(); // seq 4
    chain.push(Event::SessionOpened(viewing(
        "s1",
        "metz-ville/quai-1",
        "agent-12",
    )));
    chain.link_up();
    chain.link_up();
    chain.push(Event::SessionEnded(ended(
        "s1",
        "metz-ville/quai-1",
        "agent-12",
        5000,
    )));
    chain.checkpoint(); // seq 9
    chain.link_up();
    chain.link_up();
    chain.link_up(); // seq 12
    chain
}

#[test]
fn records_round_trip_with_their_kind_tag() {
    let events = [
        Event::Genesis {
            journal: JournalId::new("abc"),
        },
        Event::ProcessStart(ProcessStart {
            version: "0.1.0".to_owned(),
            config_sha256: "ab".repeat(32),
            trusted_keys: vec!["0123456789ABCDEF".to_owned()],
            signatures_required: 2,
        }),
        Event::SessionOpened(viewing("s1", "metz-ville/quai-1", "agent-12")),
        Event::SessionRefused(SessionRefused {
            viewing: viewing("s2", "woippy/hall", "agent-3"),
            refusal: "no_intervention".to_owned(),
        }),
        Event::SessionEnded(ended("s1", "metz-ville/quai-1", "agent-12", 10)),
        Event::AuthFailures(AuthFailures {
            what: FailureKind::Handshake,
            minute: t("2026-02-02T08:01:00Z"),
            source: None,
            reason: "unknown_peer".to_owned(),
            count: 42,
        }),
        Event::InterventionClosed(InterventionClosed {
            intervention: "int-7".to_owned(),
            agent: "agent-12".to_owned(),
            why: InterventionEnd::Expired,
        }),
        Event::JournalStorage(JournalStorage {
            state: StorageState::Full,
        }),
    ];
    for (seq, event) in events.into_iter().enumerate() {
        let record = Record {
            seq: seq as u64,
            time: t("2026-02-02T08:00:00.042Z"),
            prev: (seq > 0).then(|| LineHash::of_line(b"x")),
            event,
        };
        let line = String::from_utf8(record.to_line().unwrap()).unwrap();
        assert!(!line.contains('\n'), "{line}");
        let kind = format!("\"kind\":\"{}\"", record.event.kind());
        assert!(line.contains(&kind), "{line} lacks {kind}");
        assert!(
            line.contains("\"time\":\"2026-02-02T08:00:00.042Z\""),
            "{line}"
        );
        assert_eq!(line.contains("\"prev\""), seq > 0, "{line}");
        assert_eq!(Record::parse(line.as_bytes()).unwrap(), record, "{line}");
    }
}

#[test]
fn a_refused_session_keeps_its_facts_flat_and_the_agent_kind_apart_from_the_tag() {
    let record = Record {
        seq: 3,
        time: t("2026-02-02T08:00:00Z"),
        prev: Some(LineHash::of_line(b"")),
        event: Event::SessionRefused(SessionRefused {
            viewing: Viewing {
                agent_kind: ViewerKind::Service,
                ..viewing("s2", "woippy/hall", "vms")
            },
            refusal: "service_account".to_owned(),
        }),
    };
    let value: serde_json::Value = serde_json::from_slice(&record.to_line().unwrap()).unwrap();
    assert_eq!(value["kind"], "session_refused");
    assert_eq!(value["agent_kind"], "service");
    assert_eq!(value["camera"], "woippy/hall");
    assert_eq!(value["refusal"], "service_account");
    assert_eq!(value["basis"], "Code des transports L1632-2");
    assert_eq!(value["time"], "2026-02-02T08:00:00.000Z");
}

#[test]
fn an_intact_journal_verifies_up_to_its_last_checkpoint() {
    let chain = sample();
    let report = verify_lines(&chain.lines, &chain.public());
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.journal.as_ref(), Some(&chain.journal));
    assert_eq!(report.records, 13);
    assert_eq!(report.checkpoints, 2);
    let last = report.last_checkpoint.clone().unwrap();
    assert_eq!((last.seq, last.head_seq), (9, 8));
    assert_eq!(last.location.file, "journal-2026-02-03.jsonl");
    let tail = report.tail.clone().unwrap();
    assert_eq!((tail.from_seq, tail.to_seq), (10, 12));
    assert_eq!(report.start, Some(Start::Genesis));
    let text = report.to_string();
    assert!(text.contains("INTACT up to seq 8"), "{text}");
    assert!(text.contains("seq 10 .. 12"), "{text}");
}

#[test]
fn an_edited_record_is_named_with_its_file_and_line() {
    let mut chain = sample();
    let edited = String::from_utf8(chain.lines[5].clone())
        .unwrap()
        .replace("agent-12", "agent-99");
    chain.lines[5] = edited.into_bytes();
    let report = verify_lines(&chain.lines, &chain.public());
    assert!(!report.is_intact());
    let Some(Problem::Edited {
        record,
        seq,
        detected_at,
    }) = &report.problem
    else {
        panic!("{report}");
    };
    assert_eq!(*seq, 5);
    assert_eq!(
        (record.file.as_str(), record.line),
        ("journal-2026-02-03.jsonl", 1)
    );
    assert_eq!(detected_at.line, 2);
    // Intact up to the last checkpoint before the damage.
    assert_eq!(report.last_checkpoint.as_ref().unwrap().head_seq, 3);
    let text = report.to_string();
    assert!(
        text.contains("journal-2026-02-03.jsonl line 1 (seq 5): edited"),
        "{text}"
    );
    assert!(text.contains("BROKEN: intact up to seq 3"), "{text}");
}

#[test]
fn editing_the_last_record_before_a_checkpoint_breaks_the_chain_there() {
    let mut chain = sample();
    // seq 8 is just before the checkpoint at seq 9: its `prev` no longer matches.
    chain.lines[8] = String::from_utf8(chain.lines[8].clone())
        .unwrap()
        .replace("5000", "5")
        .into_bytes();
    let report = verify_lines(&chain.lines, &chain.public());
    assert!(
        matches!(report.problem, Some(Problem::Edited { seq: 8, .. })),
        "{report}"
    );
}

#[test]
fn a_removed_record_is_reported_as_removed() {
    let mut chain = sample();
    chain.lines.remove(6);
    let report = verify_lines(&chain.lines, &chain.public());
    assert_eq!(
        report.problem,
        Some(Problem::Removed {
            missing_from: 6,
            found: 7,
            at: Location {
                file: "journal-2026-02-03.jsonl".to_owned(),
                line: 2,
            },
        }),
        "{report}"
    );
    assert!(report.to_string().contains("record seq 6 removed"));
}

#[test]
fn swapped_records_are_reported_as_reordered() {
    let mut chain = sample();
    chain.lines.swap(6, 7);
    let report = verify_lines(&chain.lines, &chain.public());
    let Some(Problem::Reordered {
        expected,
        found,
        expected_at,
        ..
    }) = &report.problem
    else {
        panic!("{report}");
    };
    assert_eq!((*expected, *found), (6, 7));
    assert_eq!(expected_at.as_ref().map(|l| l.line), Some(3));
    assert!(report.to_string().contains("reordered"), "{report}");
}

#[test]
fn a_record_moved_back_is_reported_as_reordered() {
    let mut chain = sample();
    let moved = chain.lines.remove(2);
    chain.lines.insert(7, moved);
    let report = verify_lines(&chain.lines, &chain.public());
    assert!(
        matches!(
            report.problem,
            Some(Problem::Reordered {
                expected: 2,
                found: 3,
                ..
            })
        ),
        "{report}"
    );
}

#[test]
fn a_truncated_tail_shows_as_records_past_the_last_checkpoint() {
    let chain = sample();
    // Cut after seq 7: the checkpoint at seq 9 is gone.
    let report = verify_lines(&chain.lines[..8], &chain.public());
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.last_checkpoint.as_ref().unwrap().head_seq, 3);
    let tail = report.tail.clone().unwrap();
    assert_eq!((tail.from_seq, tail.to_seq), (5, 7));
    assert!(report.to_string().contains("later checkpoints are missing"));
}

#[test]
fn a_checkpoint_signed_by_another_key_or_altered_fails() {
    let chain = sample();
    let other = SigningKey::generate().unwrap().trusted_key().unwrap();
    let report = verify_lines(&chain.lines, &other);
    assert!(
        matches!(
            report.problem,
            Some(Problem::BadCheckpoint {
                seq: 4,
                why: CheckpointProblem::Signature(checkpoint::CheckpointError::WrongKey { .. }),
                ..
            })
        ),
        "{report}"
    );

    // Re-sign nothing, but move the checkpoint's `at`: the signature no longer holds.
    let mut chain = sample();
    let mut record = Record::parse(&chain.lines[4]).unwrap();
    let Event::Checkpoint(c) = &mut record.event else {
        panic!()
    };
    c.at = t("2030-01-01T00:00:00Z");
    chain.lines[4] = record.to_line().unwrap();
    // Fix the next record's prev so only the signature can tell.
    let mut next = Record::parse(&chain.lines[5]).unwrap();
    next.prev = Some(LineHash::of_line(&chain.lines[4]));
    chain.lines[5] = next.to_line().unwrap();
    let report = verify_lines(&chain.lines[..6], &chain.public());
    assert!(
        matches!(
            report.problem,
            Some(Problem::BadCheckpoint {
                seq: 4,
                why: CheckpointProblem::Signature(checkpoint::CheckpointError::BadSignature),
                ..
            })
        ),
        "{report}"
    );
}

#[test]
fn a_rewritten_chain_is_caught_by_the_signed_head() {
    // An attacker edits seq 2 and recomputes every `prev` after it: the chain is
    // consistent, but the checkpoint's signed head no longer matches.
    let chain = sample();
    let mut forged = Vec::new();
    let mut prev: Option<LineHash> = None;
    for (i, line) in chain.lines.iter().enumerate() {
        let mut record = Record::parse(line).unwrap();
        if i == 2
            && let Event::LinkUp(l) = &mut record.event
        {
            l.address = "203.0.113.9:4433".to_owned();
        }
        record.prev = prev;
        let line = record.to_line().unwrap();
        prev = Some(LineHash::of_line(&line));
        forged.push(line);
    }
    let report = verify_lines(&forged, &chain.public());
    assert!(
        matches!(
            report.problem,
            Some(Problem::BadCheckpoint {
                seq: 4,
                why: CheckpointProblem::WrongHead,
                ..
            })
        ),
        "{report}"
    );
}

#[test]
fn a_journal_starting_after_a_purge_needs_the_purge_record() {
    let mut chain = sample();
    let purged = Record::parse(&chain.lines[4]).unwrap();
    let through_hash = LineHash::of_line(&chain.lines[4]);
    chain.push(Event::Purge(Purge {
        journal: chain.journal.clone(),
        retention_days: 180,
        files: vec!["journal-2026-02-01.jsonl".to_owned()],
        through_seq: Some(purged.seq),
        through_hash: Some(through_hash),
    }));
    chain.checkpoint();
    let kept = chain.lines[5..].to_vec();
    let report = verify_lines(&kept, &chain.public());
    assert!(report.is_intact(), "{report}");
    assert!(
        matches!(
            report.start,
            Some(Start::AfterPurge {
                first_seq: 5,
                anchor: Some(_)
            })
        ),
        "{report}"
    );

    // One more record removed at the start: the purge record does not account for it.
    let report = verify_lines(&chain.lines[6..], &chain.public());
    assert!(
        matches!(
            report.problem,
            Some(Problem::UnanchoredStart { first_seq: 6, .. })
        ),
        "{report}"
    );
}

#[test]
fn a_torn_last_line_is_ignored_but_a_bad_line_inside_is_not() {
    let chain = sample();
    let key = chain.public();
    let mut verifier = Verifier::new(&key);
    for (i, line) in chain.lines.iter().enumerate() {
        let at = Location {
            file: "journal-2026-02-02.jsonl".to_owned(),
            line: i as u64 + 1,
        };
        verifier.feed(at, line, true);
    }
    let torn = Location {
        file: "journal-2026-02-02.jsonl".to_owned(),
        line: 14,
    };
    verifier.feed(torn.clone(), b"{\"seq\":13,\"ti", false);
    let report = verifier.finish();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.torn_line, Some(torn));

    let mut lines = chain.lines.clone();
    lines.insert(3, b"not json".to_vec());
    let report = verify_lines(&lines, &chain.public());
    assert!(
        matches!(&report.problem, Some(Problem::Unparseable { at, .. }) if at.line == 4),
        "{report}"
    );
}

#[test]
fn a_second_genesis_or_an_empty_journal_is_a_problem() {
    let chain = sample();
    let other = Chain::new();
    let mut lines = chain.lines.clone();
    lines.extend(other.lines.iter().cloned());
    let report = verify_lines(&lines, &chain.public());
    assert!(
        matches!(report.problem, Some(Problem::Reordered { found: 0, .. })),
        "{report}"
    );
    let report = verify_lines(&[], &chain.public());
    assert_eq!(report.problem, Some(Problem::Empty));
}

#[test]
fn checkpoints_verify_and_the_minisign_tool_agrees() {
    let key = SigningKey::generate().unwrap();
    let facts = CheckpointFacts {
        journal: JournalId::new("0123456789abcdef0123456789abcdef"),
        head_seq: 41,
        head_hash: LineHash::of_line(b"record 41"),
        at: t("2026-02-02T08:01:00.900Z"),
    };
    let c = checkpoint::sign(&facts, &key).unwrap();
    assert_eq!(c.at, t("2026-02-02T08:01:00Z"), "whole seconds");
    assert_eq!(
        c.canonical_text(),
        format!(
            "passerelle-journal-checkpoint/1\tjournal:0123456789abcdef0123456789abcdef\tseq:41\thead:{}\ttime:{}",
            facts.head_hash,
            t("2026-02-02T08:01:00Z").as_second()
        )
    );
    c.verify(&key.trusted_key().unwrap()).unwrap();
    let other = SigningKey::generate().unwrap().trusted_key().unwrap();
    assert!(matches!(
        c.verify(&other),
        Err(checkpoint::CheckpointError::WrongKey { .. })
    ));
    let mut altered = c.clone();
    altered.head_seq = 40;
    assert_eq!(
        altered.verify(&key.trusted_key().unwrap()),
        Err(checkpoint::CheckpointError::BadSignature)
    );

    // The standard tool verifies it from the record alone.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("journal.pub"), key.public_key_text()).unwrap();
    std::fs::write(dir.path().join("checkpoint.txt"), c.canonical_text()).unwrap();
    std::fs::write(
        dir.path().join("checkpoint.minisig"),
        c.minisig_text().unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new("minisign")
        .args([
            "-V",
            "-p",
            "journal.pub",
            "-m",
            "checkpoint.txt",
            "-x",
            "checkpoint.minisig",
        ])
        .current_dir(dir.path())
        .output()
        .expect("the minisign tool must be installed");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq:41"));

    let line = c.syslog_line();
    assert!(line.starts_with(&c.canonical_text()), "{line}");
    assert!(!line.contains('\n'));

    // What a partner receives and journals.
    let wire = crate::control::Checkpoint {
        journal_id: c.journal.to_string(),
        sequence: c.head_seq,
        head_hash: *c.head_hash.as_bytes(),
        time: c.at,
        signature: c.signature.0,
    };
    let peer = PeerCheckpoint::from_wire(&"sncf.metz.example".parse().unwrap(), &wire);
    assert_eq!(
        (
            peer.journal,
            peer.head_seq,
            peer.head_hash,
            peer.at,
            peer.signature
        ),
        (c.journal, c.head_seq, c.head_hash, c.at, c.signature)
    );
}

#[test]
fn a_flood_of_failures_makes_one_record_per_source_and_reason_a_minute() {
    let mut agg = FailureAggregator::new();
    let start = t("2026-02-02T08:00:00Z");
    let mut out = Vec::new();
    for i in 0..10_000u64 {
        let now = start + jiff::SignedDuration::from_millis(i as i64 * 5);
        let source = ["alice", "bob", "10.0.0.7"][(i % 3) as usize];
        out.extend(agg.note(now, FailureKind::Authentication, source, "bad_password"));
    }
    // 10 000 × 5 ms = 50 s: still the first minute.
    assert!(out.is_empty());
    assert!(agg.due(t("2026-02-02T08:00:59Z")).is_empty());
    let records = agg.due(t("2026-02-02T08:01:00Z"));
    assert_eq!(records.len(), 3);
    assert_eq!(records.iter().map(|r| r.count).sum::<u64>(), 10_000);
    assert!(records.iter().all(|r| r.minute == start));

    // Distinct sources past the cap are counted together.
    for i in 0..1000 {
        agg.note(
            t("2026-02-02T08:02:00Z"),
            FailureKind::Handshake,
            &format!("host-{i}.example"),
            "unknown_peer",
        );
    }
    let records = agg.note(
        t("2026-02-02T08:03:00Z"),
        FailureKind::Handshake,
        "late",
        "unknown_peer",
    );
    assert_eq!(records.len(), MAX_SOURCES_PER_MINUTE + 1);
    let others: Vec<_> = records.iter().filter(|r| r.source.is_none()).collect();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0].count, 1000 - MAX_SOURCES_PER_MINUTE as u64);
    assert_eq!(agg.drain().len(), 1);
}

fn record(seq: u64, time: &str, event: Event) -> Record {
    Record {
        seq,
        time: t(time),
        prev: None,
        event,
    }
}

#[test]
fn the_register_pairs_opened_and_ended_sessions() {
    let mut open_only = viewing("s2", "metz-nord/parvis", "agent-3");
    open_only.reason = Some("=HYPERLINK(\"http://x\"), \"quoted\"".to_owned());
    let mut crashed = viewing("s3", "metz-nord/parvis", "agent-4");
    crashed.intervention = None;
    crashed.reason = None;
    let records = [
        record(1, "2026-02-02T08:00:00Z", Event::SessionOpened(crashed)),
        record(
            2,
            "2026-02-02T08:00:01Z",
            Event::ProcessStart(ProcessStart {
                version: "0.1.0".to_owned(),
                config_sha256: String::new(),
                trusted_keys: vec![],
                signatures_required: 1,
            }),
        ),
        record(
            3,
            "2026-02-02T09:00:00Z",
            Event::SessionOpened(viewing("s1", "metz-ville/quai-1", "agent-12")),
        ),
        record(4, "2026-02-02T09:00:30Z", Event::SessionOpened(open_only)),
        record(
            5,
            "2026-02-02T09:01:01Z",
            Event::SessionEnded(ended("s1", "metz-ville/quai-1", "agent-12", 123_456)),
        ),
    ];
    let mut ends = Ends::new();
    records.iter().for_each(|r| ends.note(r));
    let rows: Vec<String> = records.iter().filter_map(|r| ends.row(r)).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        CSV_HEADER,
        "start,end,camera,origin,partner,agent,agent_kind,reason,intervention,basis,policy_serial,bytes,session,role,end_reason\r\n"
    );
    assert_eq!(
        rows[0],
        "2026-02-02T08:00:00Z,,metz-nord/parvis,ccor.metz.example,csu.metz.example,agent-4,agent,,,Code des transports L1632-2,7,,s3,provider,interrupted\r\n"
    );
    assert_eq!(
        rows[1],
        "2026-02-02T09:00:00Z,2026-02-02T09:01:01Z,metz-ville/quai-1,ccor.metz.example,csu.metz.example,agent-12,agent,\"rixe, quai 1\",int-7,Code des transports L1632-2,7,123456,s1,provider,closed\r\n"
    );
    assert!(
        rows[2].contains(",\"'=HYPERLINK(\"\"http://x\"\"), \"\"quoted\"\"\",int-7,"),
        "{}",
        rows[2]
    );
    assert!(rows[2].ends_with(",s2,provider,\r\n"), "{}", rows[2]);
}

#[test]
fn csv_fields_are_quoted_and_defused() {
    assert_eq!(csv_field("plain"), "plain");
    assert_eq!(csv_field("a,b"), "\"a,b\"");
    assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    assert_eq!(csv_field("=1+1"), "'=1+1");
    assert_eq!(csv_field("-cmd"), "'-cmd");
    assert_eq!(csv_field("@x"), "'@x");
}

#[test]
fn filters_match_camera_patterns_partners_agents_interventions_and_time() {
    let opened = record(
        1,
        "2026-02-02T09:00:00Z",
        Event::SessionOpened(viewing("s1", "metz-ville/quai-1", "agent-12")),
    );
    let link = record(
        2,
        "2026-02-02T09:00:00Z",
        Event::LinkDown(LinkDown {
            peer: "corg.gendarmerie.example".to_owned(),
            address: None,
            why: "idle_timeout".to_owned(),
        }),
    );
    let f = |f: Filter| (f.matches(&opened), f.matches(&link));
    assert_eq!(f(Filter::default()), (true, true));
    let camera = |p: &str| Filter {
        camera: Some(p.parse().unwrap()),
        ..Filter::default()
    };
    assert_eq!(f(camera("metz-ville/**")), (true, false));
    assert_eq!(f(camera("metz-nord/**")), (false, false));
    let partner = |p: &str| Filter {
        partner: Some(p.to_owned()),
        ..Filter::default()
    };
    assert_eq!(f(partner("csu.metz.example")), (true, false));
    assert_eq!(f(partner("corg.gendarmerie.example")), (false, true));
    let agent = Filter {
        agent: Some("agent-12".to_owned()),
        ..Filter::default()
    };
    assert_eq!(f(agent), (true, false));
    let intervention = Filter {
        intervention: Some("int-8".to_owned()),
        ..Filter::default()
    };
    assert_eq!(f(intervention), (false, false));
    let window = |since: &str, until: &str| Filter {
        since: Some(t(since)),
        until: Some(t(until)),
        ..Filter::default()
    };
    assert_eq!(
        f(window("2026-02-02T09:00:00Z", "2026-02-02T09:00:01Z")),
        (true, true)
    );
    assert_eq!(
        f(window("2026-02-02T08:00:00Z", "2026-02-02T09:00:00Z")),
        (false, false)
    );
}
