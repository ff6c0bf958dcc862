//! The journal writer on real files: resume, rotation, retention, checkpoints, the full
//! disk, aggregation, stop; read back with `verify`, `show` and `export_csv`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use passerelle::journal::{
    self, Clock, Event, FailureKind, Filter, Journal, JournalError, JournalSettings, LinkUp,
    ProcessStart, ProcessStop, Record, SessionEnded, SessionRefused, SessionRole, ViewerKind,
    Viewing,
};
use passerelle::policy::{SigningKey, TrustedKey};

/// A clock the test moves.
#[derive(Clone)]
struct TestClock(Arc<Mutex<Timestamp>>);

impl TestClock {
    fn at(time: &str) -> TestClock {
        TestClock(Arc::new(Mutex::new(time.parse().unwrap())))
    }

    fn advance(&self, d: SignedDuration) {
        let mut now = self.0.lock().unwrap();
        *now += d;
    }

    fn set(&self, time: &str) {
        *self.0.lock().unwrap() = time.parse().unwrap();
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

struct Keys {
    text: String,
    public: TrustedKey,
}

impl Keys {
    fn new() -> Keys {
        let key = SigningKey::generate().unwrap();
        Keys {
            text: key.secret_key_text_unencrypted(),
            public: key.trusted_key().unwrap(),
        }
    }

    fn signing(&self) -> SigningKey {
        SigningKey::from_secret_key_text(&self.text, None).unwrap()
    }
}

fn open(dir: &Path, keys: &Keys, clock: &TestClock, retention_days: u32) -> Journal {
    let settings = JournalSettings {
        reserve_bytes: 16 * 1024,
        ..JournalSettings::new(dir, retention_days)
    };
    Journal::open(settings, keys.signing(), Arc::new(clock.clone())).unwrap()
}

fn start() -> Event {
    Event::ProcessStart(ProcessStart {
        version: "0.1.0".to_owned(),
        config_sha256: "ab".repeat(32),
        trusted_keys: vec!["0123456789ABCDEF".to_owned()],
        signatures_required: 1,
    })
}

fn stop() -> Event {
    Event::ProcessStop(ProcessStop {
        version: "0.1.0".to_owned(),
        reason: "sigterm".to_owned(),
    })
}

fn link_up(n: u32) -> Event {
    Event::LinkUp(LinkUp {
        peer: "csu.metz.example".to_owned(),
        certificate_sha256: format!("{n:064x}"),
        address: "192.0.2.1:4433".to_owned(),
        direction: Some("dialled".to_owned()),
    })
}

fn viewing(session: &str) -> Viewing {
    Viewing {
        session: session.to_owned(),
        role: SessionRole::Provider,
        camera: "metz-ville/quai-1".to_owned(),
        partner: Some("csu.metz.example".to_owned()),
        origin: "ccor.metz.example".to_owned(),
        agent: "agent-12".to_owned(),
        agent_kind: ViewerKind::Agent,
        reason: Some("rixe".to_owned()),
        intervention: Some("int-1".to_owned()),
        policy_serial: Some(7),
        grant: Some(0),
        basis: Some("Code des transports L1632-2".to_owned()),
    }
}

fn ended(session: &str) -> Event {
    Event::SessionEnded(SessionEnded {
        session: session.to_owned(),
        camera: "metz-ville/quai-1".to_owned(),
        partner: Some("csu.metz.example".to_owned()),
        origin: "ccor.metz.example".to_owned(),
        agent: "agent-12".to_owned(),
        intervention: Some("int-1".to_owned()),
        duration_ms: 1000,
        packets: 10,
        bytes: 1234,
        why: "closed".to_owned(),
    })
}

/// Every record of the journal, in order.
fn records(dir: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    journal::show(dir, &Filter::default(), &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| Record::parse(l.as_bytes()).unwrap())
        .collect()
}

fn files(dir: &Path) -> Vec<String> {
    journal::journal_files(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn assert_intact(dir: &Path, keys: &Keys) -> journal::VerifyReport {
    let report = journal::verify(dir, &keys.public).unwrap();
    assert!(report.is_intact(), "{report}");
    report
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let clock = TestClock::at("2026-02-02T08:00:00Z");
    let j = open(dir.path(), &keys, &clock, 180);
    let id = j.id().clone();
    assert_eq!(j.append(start()).unwrap(), 1);
    j.append(Event::SessionOpened(viewing("s1"))).unwrap();
    j.append(stop()).unwrap();
    let checkpoint = j.close().unwrap();
    assert_eq!(checkpoint.head_seq, 3);
    assert!(!j.writable(), "closed");
    assert!(matches!(j.append(start()), Err(JournalError::Closed)));
    drop(j);

    clock.advance(SignedDuration::from_secs(60));
    let j = open(dir.path(), &keys, &clock, 180);
    assert_eq!(j.id(), &id, "same journal");
    assert_eq!(
        j.append(start()).unwrap(),
        5,
        "continues after the checkpoint"
    );
    j.append(ended("s1")).unwrap();
    j.close().unwrap();

    let all = records(dir.path());
    assert_eq!(all.len(), 8);
    assert_eq!(
        all.iter().filter(|r| r.event.kind() == "genesis").count(),
        1
    );
    let report = assert_intact(dir.path(), &keys);
    assert_eq!(report.checkpoints, 2);
    assert_eq!(report.last_checkpoint.unwrap().head_seq, 6);
    assert_eq!(report.tail, None, "the stop checkpoint is the last record");
}

#[test]
fn a_torn_last_write_is_set_aside_and_journaled_at_resume() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let clock = TestClock::at("2026-02-02T08:00:00Z");
    let j = open(dir.path(), &keys, &clock, 180);
    j.append(start()).unwrap();
    j.sync().unwrap();
    drop(j); // a crash: no close
    let file = dir.path().join("journal-2026-02-02.jsonl");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(b"{\"seq\":2,\"time\":\"2026-02-02T08:00:0");
    std::fs::write(&file, &bytes).unwrap();

    let j = open(dir.path(), &keys, &clock, 180);
    j.close().unwrap();
    let all = records(dir.path());
    let Event::TailRepaired(repaired) = &all[2].event else {
        panic!("{:?}", all[2]);
    };
    assert_eq!(repaired.discarded_bytes, 35);
    let saved = std::fs::read(dir.path().join(&repaired.saved_as)).unwrap();
    assert!(saved.starts_with(b"{\"seq\":2"));
    assert_intact(dir.path(), &keys);
}

#[test]
fn rotation_at_midnight_keeps_the_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let clock = TestClock::at("2026-02-02T23:59:30Z");
    let j = open(dir.path(), &keys, &clock, 180);
    j.append(start()).unwrap();
    clock.set("2026-02-03T00:00:05Z");
    j.append(Event::SessionOpened(viewing("s1"))).unwrap();
    clock.set("2026-02-04T12:00:00Z");
    j.append(ended("s1")).unwrap();
    j.close().unwrap();
    assert_eq!(
        files(dir.path()),
        [
            "journal-2026-02-02.jsonl",
            "journal-2026-02-03.jsonl",
            "journal-2026-02-04.jsonl"
        ]
    );
    let second = std::fs::read_to_string(dir.path().join("journal-2026-02-03.jsonl")).unwrap();
    assert!(second.starts_with("{\"seq\":2,"), "{second}");
    let report = assert_intact(dir.path(), &keys);
    assert_eq!(report.files.len(), 3);

    // Editing the first file breaks the chain at the second.
    let first = dir.path().join("journal-2026-02-02.jsonl");
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(
        &first,
        text.replace("\"signatures_required\":1", "\"signatures_required\":0"),
    )
    .unwrap();
    let report = journal::verify(dir.path(), &keys.public).unwrap();
    let text = report.to_string();
    assert!(
        text.contains("journal-2026-02-02.jsonl line 2 (seq 1): edited"),
        "{text}"
    );
}

#[test]
fn a_clock_gone_back_is_journaled_and_never_reopens_an_older_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let clock = TestClock::at("2026-02-03T00:00:10Z");
    let j = open(dir.path(), &keys, &clock, 180);
    clock.set("2026-02-02T23:59:00Z");
    j.append(start()).unwrap();
    j.close().unwrap();
    assert_eq!(files(dir.path()), ["journal-2026-02-03.jsonl"]);
    let kinds: Vec<_> = records(dir.path()).iter().map(|r| r.event.kind()).collect();
    assert_eq!(
        kinds,
        ["genesis", "time_jump", "process_start", "checkpoint"]
    );
    assert_intact(dir.path(), &keys);
}

#[test]
fn checkpoints_come_every_minute_when_records_were_written() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let clock = TestClock::at("2026-02-02T08:00:00Z");
    let j = open(dir.path(), &keys, &clock, 180);
    let mut checkpoints = j.subscribe_checkpoints();
    j.append(start()).unwrap();
    clock.advance(SignedDuration::from_secs(59));
    assert_eq!(j.tick().unwrap(), None, "not a minute yet");
    clock.advance(SignedDuration::from_secs(1));
    let c = j.tick().unwrap().expect("a checkpoint after a minute");
    assert_eq!(c.head_seq, 1);
    assert!(checkpoints.has_changed().unwrap());
    assert_eq!(checkpoints.borrow_and_update().as_ref(), Some(&c));
    assert_eq!(j.last_checkpoint(), Some(c.clone()));
    c.verify(&keys.public).unwrap();

    // Idle: nothing new, no checkpoint, until the hourly one.
    clock.advance(SignedDuration::from_secs(120));
    assert_eq!(j.tick().unwrap(), None);
    clock.advance(SignedDuration::from_secs(3600));
    assert!(j.tick().unwrap().is_some(), "hourly checkpoint when idle");
    j.close().unwrap();
    assert_eq!(assert_intact(dir.path(), &keys).checkpoints, 3);
}

#[test]
fn retention_purges_old_files_journals_it_and_verify_still_passes() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let clock = TestClock::at("2026-02-01T10:00:00Z");
    let j = open(dir.path(), &keys, &clock, 2);
    j.append(start()).unwrap();
    for day in 2..=5 {
        clock.set(&format!("2026-02-0{day}T10:00:00Z"));
        j.append(link_up(day)).unwrap();
        j.tick().unwrap();
    }
    // Day 5, retention 2: days 1 and 2 are over (their records are all older than 2
    // days), days 3, 4 and 5 stay.
    assert_eq!(
        files(dir.path()),
        [
            "journal-2026-02-03.jsonl",
            "journal-2026-02-04.jsonl",
            "journal-2026-02-05.jsonl"
        ]
    );
    j.close().unwrap();
    let purges: Vec<_> = records(dir.path())
        .into_iter()
        .filter_map(|r| match r.event {
            Event::Purge(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(purges.len(), 2, "{purges:?}");
    assert_eq!(purges[0].files, ["journal-2026-02-01.jsonl"]);
    assert_eq!(purges[1].files, ["journal-2026-02-02.jsonl"]);
    assert_eq!(purges[1].retention_days, 2);
    let report = assert_intact(dir.path(), &keys);
    assert!(
        matches!(
            report.start,
            Some(journal::verify::Start::AfterPurge {
                anchor: Some(_),
                ..
            })
        ),
        "{report}"
    );
    let first_kept = records(dir.path())[0].seq;
    assert_eq!(purges[1].through_seq, Some(first_kept - 1));

    // Deleting one more file by hand is not accounted for by any purge record.
    std::fs::remove_file(dir.path().join("journal-2026-02-03.jsonl")).unwrap();
    let report = journal::verify(dir.path(), &keys.public).unwrap();
    assert!(
        matches!(
            report.problem,
            Some(journal::Problem::UnanchoredStart { .. })
        ),
        "{report}"
    );
}

#[test]
fn a_flood_of_authentication_failures_becomes_a_handful_of_records() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let clock = TestClock::at("2026-02-02T08:00:00Z");
    let j = open(dir.path(), &keys, &clock, 180);
    for i in 0..10_000u32 {
        if i == 5_000 {
            clock.advance(SignedDuration::from_secs(60));
        }
        let (what, source, reason) = match i % 4 {
            0 => (FailureKind::Authentication, "alice", "bad_password"),
            1 => (FailureKind::Authentication, "mallory", "unknown_user"),
            2 => (FailureKind::Handshake, "203.0.113.5", "unknown_peer"),
            _ => (FailureKind::Handshake, "203.0.113.5", "wrong_ca"),
        };
        j.note_failure(what, source, reason);
    }
    clock.advance(SignedDuration::from_secs(60));
    j.tick().unwrap();
    j.close().unwrap();
    let failures: Vec<_> = records(dir.path())
        .into_iter()
        .filter_map(|r| match r.event {
            Event::AuthFailures(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 8, "4 keys × 2 minutes: {failures:?}");
    assert_eq!(failures.iter().map(|f| f.count).sum::<u64>(), 10_000);
    let size: u64 = journal::journal_files(dir.path())
        .unwrap()
        .iter()
        .map(|(_, p)| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(size < 8 * 1024, "{size} bytes for 10 000 failures");
    assert_intact(dir.path(), &keys);
}

#[test]
fn show_and_export_read_the_register_back() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let clock = TestClock::at("2026-02-02T08:00:00Z");
    let j = open(dir.path(), &keys, &clock, 180);
    j.append(start()).unwrap();
    j.append(Event::SessionOpened(viewing("s1"))).unwrap();
    j.append(Event::SessionRefused(SessionRefused {
        viewing: Viewing {
            camera: "woippy/hall".to_owned(),
            ..viewing("s2")
        },
        refusal: "not_granted".to_owned(),
    }))
    .unwrap();
    clock.advance(SignedDuration::from_secs(90));
    j.append(ended("s1")).unwrap();
    j.append(Event::SessionOpened(viewing("s3"))).unwrap();
    j.close().unwrap();

    let mut out = Vec::new();
    let filter = Filter {
        camera: Some("metz-ville/**".parse().unwrap()),
        ..Filter::default()
    };
    assert_eq!(journal::show(dir.path(), &filter, &mut out).unwrap(), 3);
    let mut csv = Vec::new();
    assert_eq!(journal::export_csv(dir.path(), &mut csv).unwrap(), 2);
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<_> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert_eq!(
        lines[1],
        "2026-02-02T08:00:00Z,2026-02-02T08:01:30Z,metz-ville/quai-1,ccor.metz.example,csu.metz.example,agent-12,agent,rixe,int-1,Code des transports L1632-2,7,1234,s1,provider,closed"
    );
    assert!(
        lines[2].starts_with("2026-02-02T08:01:30Z,,metz-ville/quai-1,"),
        "{csv}"
    );
}

/// The watchdog's view: a journal whose ticks stopped (nothing runs it, as when an fsync
/// hangs) is stuck after ten tick intervals, and ticking again clears it.
#[tokio::test]
async fn a_journal_without_ticks_is_stuck_until_it_ticks_again() {
    let dir = tempfile::tempdir().unwrap();
    let settings = JournalSettings {
        tick_interval: Duration::from_millis(20),
        ..JournalSettings::new(dir.path(), 180)
    };
    let j = Journal::open(
        settings,
        Keys::new().signing(),
        Arc::new(journal::SystemClock),
    )
    .unwrap();
    assert!(!j.stuck(), "just opened");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !j.stuck() {
        assert!(tokio::time::Instant::now() < deadline, "never stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(j.clone().run(async {
        let _ = rx.await;
    }));
    while j.stuck() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still stuck while it ticks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn run_closes_with_a_checkpoint_when_shutdown_completes() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let settings = JournalSettings {
        tick_interval: Duration::from_millis(50),
        ..JournalSettings::new(dir.path(), 180)
    };
    let j = Journal::open(settings, keys.signing(), Arc::new(journal::SystemClock)).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(j.clone().run(async {
        let _ = rx.await;
    }));
    j.append(start()).unwrap();
    j.append(Event::SessionOpened(viewing("s1"))).unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    j.append(stop()).unwrap();
    tx.send(()).unwrap();
    let checkpoint = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run stops within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.head_seq, 3, "covers process_stop");
    let all = records(dir.path());
    assert_eq!(all.last().unwrap().event.kind(), "checkpoint");
    let report = assert_intact(dir.path(), &keys);
    assert_eq!(report.tail, None);
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_new_sessions_but_journals_their_ends_then_recovers() {
    let base = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = Tmpfs::mount(base.path(), "64k") else {
        // Root (CI, the dev machines) must be able to mount: only a non-root run skips,
        // leaving a_write_error_flags_the_journal_not_writable (/dev/full) to stand in.
        assert!(!is_root(), "root but cannot mount a tmpfs");
        eprintln!("not root: no tmpfs; see a_write_error_flags_the_journal_not_writable");
        return;
    };
    let dir = base.path().join("audit");
    let keys = Keys::new();
    let clock = TestClock::at("2026-02-02T08:00:00Z");
    // Ballast the test frees later, to let the disk recover.
    std::fs::write(base.path().join("ballast"), vec![1u8; 16 * 1024]).unwrap();
    let j = open(&dir, &keys, &clock, 180);
    assert!(dir.join(".reserve").exists());
    j.append(Event::SessionOpened(viewing("s1"))).unwrap();

    // Fill the disk with link records until one is refused.
    let mut n = 0;
    let refused = loop {
        n += 1;
        assert!(n < 10_000, "the disk never filled");
        match j.append(link_up(n)) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(refused, JournalError::DiskFull { kind: "link_up" }),
        "{refused}"
    );
    assert!(!j.writable());
    assert!(j.write_failures() >= 1);
    assert!(!dir.join(".reserve").exists(), "the reserve was released");

    // New sessions are refused; ends and refusals are written from the reserve.
    assert!(matches!(
        j.append(Event::SessionOpened(viewing("s2"))),
        Err(JournalError::DiskFull {
            kind: "session_opened"
        })
    ));
    j.append(Event::SessionRefused(SessionRefused {
        viewing: viewing("s2"),
        refusal: "journal_unavailable".to_owned(),
    }))
    .unwrap();
    j.append(ended("s1")).unwrap();
    assert!(!j.writable());

    // Space comes back: within ten seconds the reserve is taken back.
    std::fs::remove_file(base.path().join("ballast")).unwrap();
    j.tick().unwrap();
    assert!(!j.writable(), "not before the retry delay");
    clock.advance(SignedDuration::from_secs(11));
    j.tick().unwrap();
    assert!(j.writable(), "recovered");
    assert!(dir.join(".reserve").exists());
    j.append(Event::SessionOpened(viewing("s3"))).unwrap();
    j.close().unwrap();

    let kinds: Vec<_> = records(&dir)
        .iter()
        .map(|r| r.event.kind())
        .filter(|k| *k != "link_up")
        .collect();
    assert_eq!(
        kinds,
        [
            "genesis",
            "session_opened",
            "journal_storage",
            "session_refused",
            "session_ended",
            "journal_storage",
            "session_opened",
            "checkpoint"
        ]
    );
    assert_intact(&dir, &keys);
}

#[test]
fn a_write_error_flags_the_journal_not_writable() {
    // Without root (no tmpfs), /dev/full stands for a full disk: the next day's file is
    // a link to it, so the first record after midnight fails to write.
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let clock = TestClock::at("2026-02-02T23:59:00Z");
    let j = open(dir.path(), &keys, &clock, 180);
    j.append(start()).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("journal-2026-02-03.jsonl")).unwrap();
    clock.set("2026-02-03T00:00:01Z");
    let before = j.write_failures();
    let err = j.append(ended("s1")).unwrap_err();
    assert!(matches!(err, JournalError::Write { .. }), "{err}");
    assert!(!j.writable());
    assert!(j.write_failures() > before);
    assert!(matches!(
        j.append(Event::SessionOpened(viewing("s2"))),
        Err(JournalError::DiskFull { .. })
    ));
}
