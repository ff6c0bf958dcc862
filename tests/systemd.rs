//! The systemd unit and the binary's side of it, checked offline (PID 1 need not be
//! systemd): `systemd-analyze verify` and `security` on `systemd/passerelle.service`, and
//! the `sd_notify` protocol against a fake `NOTIFY_SOCKET` bound by the test.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::{process_gone, run_bounded};

/// Where the Debian package installs the binary; the unit names it.
const INSTALLED_BINARY: &str = "/usr/bin/passerelle";
/// A bound on each `systemd-analyze` run.
const ANALYZE_TIMEOUT: Duration = Duration::from_secs(60);
/// The exposure `systemd-analyze security` may rate the unit at most (0 safest, 10 worst).
const MAX_EXPOSURE: f64 = 2.0;

fn unit_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/passerelle.service")
}

/// A copy of the unit, named `passerelle.service` in a fresh directory, whose commands
/// run the binary under test: `verify` insists that ExecStart's binary exists.
fn unit_copy(edit: impl Fn(&str) -> String) -> (tempfile::TempDir, PathBuf) {
    let text = fs::read_to_string(unit_source()).expect("systemd/passerelle.service is readable");
    assert!(
        text.contains(INSTALLED_BINARY),
        "the unit no longer runs {INSTALLED_BINARY}: update this test"
    );
    let text = edit(&text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_passerelle")));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("passerelle.service");
    fs::write(&path, text).expect("writing the unit copy");
    (dir, path)
}

/// `systemd-analyze verify` exits 0 on unknown keys and unparsable values, which it only
/// prints: every line it prints about the unit counts as a failure.
fn verify(unit: &Path) -> Vec<String> {
    // --man=no: the man pages are installed by the package, not on the build machine
    // (`scripts/package --check` verifies the installed unit with them).
    let out = run_bounded(
        "systemd-analyze",
        &["verify".as_ref(), "--man=no".as_ref(), unit.as_os_str()],
        ANALYZE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut problems: Vec<String> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .filter(|line| line.contains("passerelle"))
        .map(str::to_owned)
        .collect();
    if !out.status.success() {
        problems.push(format!(
            "systemd-analyze verify: {}\n{}",
            out.status, out.stderr
        ));
    }
    problems
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let (_dir, unit) = unit_copy(str::to_owned);
    let problems = verify(&unit);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The check above can fail: a misspelt key and a bad value are both reported.
    let (_dir, bad) = unit_copy(|text| {
        text.replace("\nType=notify\n", "\nTyp=notify\n")
            .replace("WatchdogSec=30s", "WatchdogSec=thirty")
    });
    let problems = verify(&bad);
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn the_unit_is_rated_below_2_by_systemd_analyze_security() {
    let (_dir, unit) = unit_copy(str::to_owned);
    let out = run_bounded(
        "systemd-analyze",
        &[
            "security".as_ref(),
            "--offline=true".as_ref(),
            "--no-pager".as_ref(),
            unit.as_os_str(),
        ],
        ANALYZE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let exposure = overall_exposure(&out.stdout)
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{}", out.stdout));
    println!("systemd-analyze security: overall exposure level {exposure}");
    assert!(
        exposure < MAX_EXPOSURE,
        "exposure {exposure} is not below {MAX_EXPOSURE}:\n{}",
        out.stdout
    );
}

/// The figure of `→ Overall exposure level for passerelle.service: 1.1 OK 🙂`.
fn overall_exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|line| line.contains("Overall exposure level"))?;
    line.rsplit_once(": ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn the_exposure_figure_is_parsed() {
    let report = "  NAME  DESCRIPTION  EXPOSURE\n✗ PrivateNetwork= ...  0.5\n\n\
                  → Overall exposure level for passerelle.service: 1.1 OK 🙂\n";
    assert_eq!(overall_exposure(report), Some(1.1));
    assert_eq!(overall_exposure("no such line"), None);
}

#[test]
fn the_unit_declares_the_service_contract() {
    let text = fs::read_to_string(unit_source()).expect("readable unit");
    let mut settings: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=')
            && !line.starts_with('#')
        {
            settings.entry(key).or_default().push(value);
        }
    }
    let config = "/etc/passerelle/passerelle.toml";
    for (key, value) in [
        ("Type", "notify".to_owned()),
        ("NotifyAccess", "main".to_owned()),
        (
            "ExecStartPre",
            format!("{INSTALLED_BINARY} check --config-only -c {config}"),
        ),
        (
            "ExecStart",
            format!("{INSTALLED_BINARY} --log-format journald run -c {config}"),
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID".to_owned()),
        ("Restart", "on-failure".to_owned()),
        ("User", "passerelle".to_owned()),
        ("StateDirectory", "passerelle".to_owned()),
        ("LogsDirectory", "passerelle".to_owned()),
        ("ConfigurationDirectory", "passerelle".to_owned()),
        ("CapabilityBoundingSet", String::new()),
        ("UMask", "0077".to_owned()),
    ] {
        assert_eq!(
            settings.get(key).map(Vec::as_slice),
            Some([value.as_str()].as_slice()),
            "{key}="
        );
    }
    assert!(settings.contains_key("WatchdogSec"), "WatchdogSec=");
}

// ---------------------------------------------------------------------------------------
// sd_notify against a fake NOTIFY_SOCKET

/// Each gateway needs a second or two to start in a debug build; this bounds it.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(20);
/// `WATCHDOG_USEC` given to the gateway: it should send `WATCHDOG=1` every 150 ms.
const WATCHDOG_USEC: u64 = 300_000;

/// The gateway under test, in its own process group, killed with it on drop.
struct Running {
    child: Child,
    dir: tempfile::TempDir,
}

impl Running {
    fn start(socket: &Path) -> Running {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Placeholder keys and policy: the journal and the policy are refused, and the
        // gateway still starts (fail closed).
        fs::write(dir.path().join("passerelle.toml"), support::MINIMAL_CONFIG)
            .expect("writing the config");
        for (file, bytes) in support::MINIMAL_FILES {
            let path = dir.path().join(file);
            fs::create_dir_all(path.parent().expect("a relative path has a parent"))
                .expect("creating a directory");
            fs::write(path, bytes).expect("writing a placeholder");
        }
        let log = |name: &str| fs::File::create(dir.path().join(name)).expect("a log file");
        let mut command = Command::new("setpriv");
        command
            .args([
                "--pdeathsig",
                "KILL",
                "--",
                env!("CARGO_BIN_EXE_passerelle"),
            ])
            .arg("run")
            .arg("-c")
            .arg(dir.path().join("passerelle.toml"))
            .arg("--ready-file")
            .arg(dir.path().join("ready.json"))
            .current_dir(dir.path())
            .env("NOTIFY_SOCKET", socket)
            .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
            .env_remove("WATCHDOG_PID")
            .env("PASSERELLE_LOG_FORMAT", "journald")
            .env("PASSERELLE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .process_group(0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PASSERELLE__") {
                command.env_remove(key);
            }
        }
        let child = command.spawn().expect("spawning the gateway");
        Running { child, dir }
    }

    fn ready_file(&self) -> PathBuf {
        self.dir.path().join("ready.json")
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the gateway") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- passerelle stderr ---\n{}", self.stderr());
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// One notification: its `KEY=VALUE` lines, and whether the ready file existed when the
/// test received it.
#[derive(Debug)]
struct Notification {
    fields: BTreeMap<String, String>,
    ready_file_existed: bool,
}

impl Notification {
    fn is(&self, key: &str) -> bool {
        self.fields.get(key).map(String::as_str) == Some("1")
    }

    fn is_only_watchdog(&self) -> bool {
        self.is("WATCHDOG") && self.fields.len() == 1
    }
}

/// Receives the next notification within `timeout`, looking at the ready file at once.
fn receive(socket: &UnixDatagram, ready_file: &Path, timeout: Duration) -> Notification {
    socket
        .set_read_timeout(Some(timeout))
        .expect("setting a read timeout");
    let mut buf = [0u8; 4096];
    let len = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification within {timeout:?}: {e}"));
    let ready_file_existed = ready_file.exists();
    let text = std::str::from_utf8(&buf[..len]).expect("notifications are text");
    let fields = text
        .lines()
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {line:?} in {text:?}"));
            (key.to_owned(), value.to_owned())
        })
        .collect();
    Notification {
        fields,
        ready_file_existed,
    }
}

/// The next notification that is not a plain `WATCHDOG=1`.
fn receive_other(socket: &UnixDatagram, ready_file: &Path, deadline: Instant) -> Notification {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no notification but WATCHDOG=1 in time");
        let notification = receive(socket, ready_file, left);
        if !notification.is_only_watchdog() {
            return notification;
        }
    }
}

#[test]
fn sd_notify_ready_watchdog_reload_and_stop() {
    let sockets = tempfile::tempdir().expect("a temporary directory");
    let path = sockets.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("binding the fake NOTIFY_SOCKET");
    let mut gateway = Running::start(&path);
    let ready_file = gateway.ready_file();

    // READY=1 comes first, and only once the ready file is written (listeners bound, the
    // policy evaluated: here refused, which must not hold readiness back).
    let first = receive(&socket, &ready_file, NOTIFY_TIMEOUT);
    assert!(first.is("READY"), "first notification: {first:?}");
    assert!(
        first.ready_file_existed,
        "READY=1 arrived before the ready file was written"
    );

    // WATCHDOG=1, repeatedly, at about half of WATCHDOG_USEC.
    let started = Instant::now();
    for _ in 0..5 {
        let next = receive(&socket, &ready_file, Duration::from_secs(5));
        assert!(next.is_only_watchdog(), "expected WATCHDOG=1, got {next:?}");
    }
    let period = started.elapsed() / 5;
    assert!(
        period >= Duration::from_micros(WATCHDOG_USEC / 4) && period < Duration::from_secs(2),
        "WATCHDOG=1 every {period:?} for WATCHDOG_USEC={WATCHDOG_USEC}"
    );

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 once reloaded.
    gateway.signal("HUP");
    let deadline = Instant::now() + NOTIFY_TIMEOUT;
    let reloading = receive_other(&socket, &ready_file, deadline);
    assert!(reloading.is("RELOADING"), "after SIGHUP: {reloading:?}");
    let monotonic: u64 = reloading
        .fields
        .get("MONOTONIC_USEC")
        .and_then(|usec| usec.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"));
    assert!(monotonic > 0);
    let reloaded = receive_other(&socket, &ready_file, deadline);
    assert!(reloaded.is("READY"), "after RELOADING=1: {reloaded:?}");

    // The watchdog goes on after a reload.
    let next = receive(&socket, &ready_file, Duration::from_secs(5));
    assert!(next.is_only_watchdog(), "after the reload: {next:?}");

    // SIGTERM: STOPPING=1, then a clean exit, and no WATCHDOG=1 after STOPPING=1.
    let pid = gateway.child.id();
    gateway.signal("TERM");
    let stopping = receive_other(&socket, &ready_file, Instant::now() + NOTIFY_TIMEOUT);
    assert!(stopping.is("STOPPING"), "after SIGTERM: {stopping:?}");
    let status = gateway
        .wait_exit(Duration::from_secs(10))
        .expect("the gateway exits within 10 s of SIGTERM");
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(process_gone(pid));
    socket.set_nonblocking(true).expect("a non-blocking socket");
    let mut buf = [0u8; 4096];
    while let Ok(len) = socket.recv(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..len]);
        assert!(
            !text.contains("WATCHDOG=1"),
            "WATCHDOG=1 after STOPPING=1: {text:?}"
        );
    }

    // The journald log format: every line has a syslog priority and no timestamp.
    let stderr = gateway.stderr();
    let mut priorities = Vec::new();
    for line in stderr.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .and_then(|(n, _)| n.parse::<u8>().ok())
            .filter(|n| *n <= 7)
            .unwrap_or_else(|| panic!("no <N> priority: {line:?}"));
        assert!(!has_timestamp(line), "a timestamp in {line:?}");
        assert!(!line.contains('\x1b'), "a terminal colour in {line:?}");
        priorities.push(priority);
    }
    // The refused policy is an error (3), "listening" and "stopping" are info (6).
    assert!(priorities.contains(&3), "{stderr}");
    assert!(priorities.contains(&6), "{stderr}");
}

/// Whether `line` holds an RFC 3339 date and time (`2026-02-02T10:00:00`), as the text
/// format's timestamps are.
fn has_timestamp(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.windows(11).any(|w| {
        w.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            _ => b.is_ascii_digit(),
        })
    })
}

#[test]
fn timestamps_are_recognised() {
    assert!(has_timestamp(
        "2026-02-02T10:00:00.123456Z  INFO passerelle: listening"
    ));
    assert!(!has_timestamp(
        "<6>passerelle::app: listening listener=\"rtsp\""
    ));
}

#[test]
fn man_pages_cover_every_subcommand_and_the_units_documentation() {
    use clap::CommandFactory;
    let dir = tempfile::tempdir().expect("a temporary directory");
    clap_mangen::generate_to(passerelle::cli::Cli::command(), dir.path())
        .expect("generating the man pages");
    let text = fs::read_to_string(unit_source()).expect("readable unit");
    let documented: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("Documentation="))
        .flat_map(str::split_whitespace)
        .filter_map(|page| page.strip_prefix("man:"))
        .collect();
    assert!(!documented.is_empty(), "the unit names no man page");
    for page in documented {
        let (name, section) = page
            .strip_suffix(')')
            .and_then(|page| page.split_once('('))
            .unwrap_or_else(|| panic!("not NAME(SECTION): {page}"));
        let file = dir.path().join(format!("{name}.{section}"));
        assert!(file.is_file(), "Documentation=man:{page} has no page");
    }
    for page in [
        "passerelle.1",
        "passerelle-check.1",
        "passerelle-policy-install.1",
    ] {
        let roff =
            fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(roff.contains(".TH"), "{page} is not a man page");
    }
    let run = fs::read_to_string(dir.path().join("passerelle-run.1")).expect("passerelle-run.1");
    assert!(
        run.contains("ready\\-file"),
        "passerelle-run.1 misses --ready-file"
    );
}
