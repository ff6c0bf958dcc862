//! Black-box test harness: runs the real `passerelle` binary and real clients.
//!
//! Each test file that needs it declares `mod support;`.
//!
//! - [`Gateway`] starts `passerelle run -c <dir>/passerelle.toml --ready-file
//!   <dir>/ready.json` in a fresh temporary directory and its own process group, waits
//!   until the binary reports its bound listeners, and stops it (process group only) on
//!   drop. Ports and readiness come from the ready file, never from sleeping.
//! - [`ffprobe_count_frames`] and [`gst_play`] drive FFmpeg and GStreamer as RTSP
//!   clients; [`run_bounded`] runs any tool with a hard deadline.
//! - [`http_get`] asks the management listener (`/healthz`, `/readyz`, `/metrics`).
//! - [`RtspSource`] is an independent RTSP camera (gst-rtsp-server, `rtsp_source.py`)
//!   serving the fixtures of `tests/fixtures/` in a loop at 25 fps.
//!
//! Every child is started in its own process group under `setpriv --pdeathsig KILL`, so
//! it dies with the test thread that started it even if the test process is killed (a
//! nextest timeout); keep a [`Gateway`] or [`RtspSource`] on the thread that made it.
//! Cleanup signals only those groups, and always before the group leader is reaped, so
//! a process-group id is never reused under us.
#![allow(dead_code)] // each test crate uses its own subset of the harness

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub mod browser;
pub mod metz;
pub mod watch;

/// How long [`Gateway::start`] waits for the ready file.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a process may take to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Placeholder in a config text, replaced by the gateway's temporary directory.
pub const DIR_PLACEHOLDER: &str = "@DIR@";
/// Interval at which the harness looks for a ready file or a process exit.
const POLL: Duration = Duration::from_millis(20);

/// The directory of the media fixtures (see `tests/fixtures/README.md`).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The path of one fixture file, e.g. `fixture("h264-main.h264")`.
pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

// ---------------------------------------------------------------------------------------
// Ready file

/// The ready file written by `passerelle run --ready-file` once its listeners are bound:
/// `{"pid": <u32>, "listeners": {"rtsp": "127.0.0.1:PORT", "quic": ..., "management":
/// ..., "http": ...}}`, any listener absent when it is not configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub pid: u32,
    pub listeners: BTreeMap<String, SocketAddr>,
}

impl Ready {
    /// Parses and checks a ready file: `pid` a positive u32, every listener a socket
    /// address with a real (non-zero) port.
    pub fn parse(text: &str) -> Result<Ready, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("ready file is not JSON: {e}"))?;
        let object = value.as_object().ok_or("ready file is not a JSON object")?;
        let pid = object
            .get("pid")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|&p| p > 0)
            .ok_or("ready file: `pid` is missing or not a positive u32")?;
        let entries = object
            .get("listeners")
            .and_then(serde_json::Value::as_object)
            .ok_or("ready file: `listeners` is missing or not an object")?;
        let mut listeners = BTreeMap::new();
        for (name, addr) in entries {
            let addr: SocketAddr = addr
                .as_str()
                .ok_or_else(|| format!("ready file: listener `{name}` is not a string"))?
                .parse()
                .map_err(|e| format!("ready file: listener `{name}`: {e}"))?;
            if addr.port() == 0 {
                return Err(format!("ready file: listener `{name}` has port 0"));
            }
            listeners.insert(name.clone(), addr);
        }
        Ok(Ready { pid, listeners })
    }
}

// ---------------------------------------------------------------------------------------
// Gateway

/// A running `passerelle run`, in its own temporary directory and process group.
///
/// Dropping it sends SIGTERM to its process group, SIGKILL after [`STOP_GRACE`] (or the
/// builder's `stop_grace`), and reaps it; if the test is panicking, the gateway's stderr
/// is printed first.
pub struct Gateway {
    proc: Option<Group>,
    status: Option<ExitStatus>,
    ready: Ready,
    launch: GatewayBuilder,
    runs: u32,
    // Declared last: removed after the process is gone.
    dir: tempfile::TempDir,
}

/// Why a gateway did not become ready.
#[derive(Debug)]
pub enum StartError {
    /// The harness could not prepare the directory or spawn the process.
    Setup(String),
    /// The process exited before writing its ready file.
    Exited { status: ExitStatus, stderr: String },
    /// No valid ready file within the timeout (the process was then killed).
    NotReady { reason: String, stderr: String },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Setup(e) => write!(f, "could not start the gateway: {e}"),
            StartError::Exited { status, stderr } => {
                write!(
                    f,
                    "the gateway exited ({status}) before it was ready; stderr:\n{stderr}"
                )
            }
            StartError::NotReady { reason, stderr } => {
                write!(f, "the gateway was not ready: {reason}; stderr:\n{stderr}")
            }
        }
    }
}

/// Options for starting a [`Gateway`]; `Gateway::start` covers the common case.
#[derive(Clone)]
pub struct GatewayBuilder {
    config: String,
    files: Vec<(String, Vec<u8>)>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    program: PathBuf,
    program_args: Vec<String>,
    subcommand: Option<Vec<String>>,
    ready_timeout: Duration,
    stop_grace: Duration,
}

impl GatewayBuilder {
    /// A gateway run with this config text; `@DIR@` in it becomes the temp directory.
    pub fn new(config_toml: &str) -> GatewayBuilder {
        GatewayBuilder {
            config: config_toml.to_owned(),
            files: Vec::new(),
            env: Vec::new(),
            args: Vec::new(),
            program: PathBuf::from(env!("CARGO_BIN_EXE_passerelle")),
            program_args: Vec::new(),
            subcommand: None,
            ready_timeout: READY_TIMEOUT,
            stop_grace: STOP_GRACE,
        }
    }

    /// Writes `bytes` to `relative_path` (parent directories created) in the temp dir.
    pub fn file(mut self, relative_path: &str, bytes: &[u8]) -> Self {
        self.files.push((relative_path.to_owned(), bytes.to_vec()));
        self
    }

    /// Sets an environment variable for the gateway (e.g. `PASSERELLE__RTSP__LISTEN`).
    /// The test process's own `PASSERELLE__*` variables are never passed on.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Appends an argument after `run -c FILE --ready-file FILE`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Runs `program leading_args... run -c ...` instead of the passerelle binary (the
    /// harness's own tests run a shell script as `/bin/bash script.sh run -c ...`).
    pub fn program(mut self, program: &Path, leading_args: &[&str]) -> Self {
        self.program = program.to_owned();
        self.program_args = leading_args.iter().map(|&a| a.to_owned()).collect();
        self
    }

    /// Runs `passerelle ARGS... --ready-file FILE` instead of `run -c FILE ...`
    /// (`camsim`, `demo`); the config text is still written but not passed.
    pub fn subcommand(mut self, args: &[&str]) -> Self {
        self.subcommand = Some(args.iter().map(|&a| a.to_owned()).collect());
        self
    }

    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long [`Gateway::stop`] and drop wait after SIGTERM (default [`STOP_GRACE`]).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Starts the gateway and waits until it is ready; panics with its stderr if not.
    pub fn start(self) -> Gateway {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the gateway and waits until it is ready.
    pub fn try_start(self) -> Result<Gateway, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("passerelle-test-")
            .tempdir()
            .map_err(|e| StartError::Setup(format!("temp dir: {e}")))?;
        let config = self
            .config
            .replace(DIR_PLACEHOLDER, &dir.path().display().to_string());
        write_file(&dir.path().join(CONFIG_FILE), config.as_bytes()).map_err(StartError::Setup)?;
        for (relative, bytes) in &self.files {
            let relative = Path::new(relative);
            if relative.is_absolute() {
                return Err(StartError::Setup(format!(
                    "extra file {} must be relative",
                    relative.display()
                )));
            }
            write_file(&dir.path().join(relative), bytes).map_err(StartError::Setup)?;
        }
        let (proc, ready) = launch(&self, dir.path())?;
        Ok(Gateway {
            proc: Some(proc),
            status: None,
            ready,
            launch: self,
            runs: 1,
            dir,
        })
    }
}

const CONFIG_FILE: &str = "passerelle.toml";
const READY_FILE: &str = "ready.json";
const STDOUT_LOG: &str = "stdout.log";
const STDERR_LOG: &str = "stderr.log";

impl Gateway {
    /// Writes `config_toml` (with `@DIR@` replaced by the temp dir) and `extra_files`
    /// (relative path, contents) into a fresh temp dir, starts `passerelle run` there and
    /// waits (at most [`READY_TIMEOUT`]) for its ready file. Panics with the gateway's
    /// stderr if it exits or is not ready in time.
    pub fn start(config_toml: &str, extra_files: &[(&str, &[u8])]) -> Gateway {
        Gateway::builder(config_toml, extra_files).start()
    }

    /// Starts `passerelle camsim --listen 127.0.0.1:0 ARGS...` and waits until it serves.
    pub fn camsim(args: &[&str]) -> Gateway {
        let mut full = vec!["camsim", "--listen", "127.0.0.1:0"];
        full.extend_from_slice(args);
        Gateway::builder("", &[]).subcommand(&full).start()
    }

    /// Like [`Gateway::start`], returning why the gateway did not become ready.
    pub fn try_start(
        config_toml: &str,
        extra_files: &[(&str, &[u8])],
    ) -> Result<Gateway, StartError> {
        Gateway::builder(config_toml, extra_files).try_start()
    }

    /// A builder with the config and extra files, for more options.
    pub fn builder(config_toml: &str, extra_files: &[(&str, &[u8])]) -> GatewayBuilder {
        extra_files
            .iter()
            .fold(GatewayBuilder::new(config_toml), |b, (path, bytes)| {
                b.file(path, bytes)
            })
    }

    /// The address of a listener from the ready file (`rtsp`, `quic`, `management`,
    /// `http`); panics naming the listeners present if it is absent.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.try_addr(listener).unwrap_or_else(|| {
            panic!(
                "the gateway reported no `{listener}` listener; it has {:?}",
                self.ready.listeners
            )
        })
    }

    pub fn try_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.ready.listeners.get(listener).copied()
    }

    /// `rtsp://ADDR/<camera-id>` on the RTSP listener.
    pub fn rtsp_url(&self, camera: &str) -> String {
        format!("rtsp://{}/{camera}", self.addr("rtsp"))
    }

    /// `http://ADDR<path>` on the management listener (`/metrics`, `/readyz`, ...).
    pub fn management_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr("management"))
    }

    /// The gateway's temporary directory (config, extra files, logs, ready file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The parsed ready file of the current run.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    /// The process id of the current run (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.ready.pid
    }

    /// Everything the current run wrote to stderr so far.
    pub fn stderr_log(&self) -> String {
        read_lossy(&self.dir().join(STDERR_LOG))
    }

    /// Everything the current run wrote to stdout so far.
    pub fn stdout_log(&self) -> String {
        read_lossy(&self.dir().join(STDOUT_LOG))
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, ...) to the gateway process only.
    pub fn signal(&self, signal: &str) {
        if let Some(proc) = &self.proc {
            proc.signal_leader(signal);
        }
    }

    /// Waits at most `timeout` for the gateway to exit by itself; reaps it if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            let proc = self.proc.as_mut()?;
            if proc.wait_exited(timeout) {
                self.status = Some(proc.reap());
                self.proc = None;
            }
        }
        self.status
    }

    /// SIGTERM to the process group, then waits at most [`STOP_GRACE`] (or the builder's
    /// `stop_grace`) for the gateway to exit and returns its status. Panics (after
    /// SIGKILL) if it does not exit in time: a gateway that ignores SIGTERM is a bug.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let Some(mut proc) = self.proc.take() else {
            unreachable!("a gateway has either a process or an exit status")
        };
        let grace = self.launch.stop_grace;
        match proc.terminate(grace) {
            Ok(status) => {
                self.status = Some(status);
                status
            }
            Err(status) => {
                self.status = Some(status);
                panic!(
                    "the gateway did not exit within {grace:?} of SIGTERM (killed: {status}); stderr:\n{}",
                    self.stderr_log()
                )
            }
        }
    }

    /// Stops the gateway if it runs, then starts it again in the same directory with the
    /// same options (the config file may have been edited in between). The previous run's
    /// logs are kept as `stdout.N.log` / `stderr.N.log`.
    pub fn restart(&mut self) -> Result<(), StartError> {
        self.stop();
        for log in [STDOUT_LOG, STDERR_LOG] {
            let from = self.dir().join(log);
            let to = self
                .dir()
                .join(log.replace(".log", &format!(".{}.log", self.runs)));
            fs::rename(&from, &to)
                .map_err(|e| StartError::Setup(format!("{}: {e}", from.display())))?;
        }
        let (proc, ready) = launch(&self.launch, self.dir.path())?;
        self.proc = Some(proc);
        self.status = None;
        self.ready = ready;
        self.runs += 1;
        Ok(())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- passerelle stderr ({}) ---\n{}--- end of passerelle stderr ---",
                self.dir().display(),
                tail(&self.stderr_log(), 200)
            );
        }
        if let Some(mut proc) = self.proc.take() {
            let _ = proc.terminate(self.launch.stop_grace);
        }
    }
}

/// Spawns the program for one run and waits for its ready file.
fn launch(options: &GatewayBuilder, dir: &Path) -> Result<(Group, Ready), StartError> {
    let config = dir.join(CONFIG_FILE);
    let ready_file = dir.join(READY_FILE);
    let _ = fs::remove_file(&ready_file);
    let log = |name: &str| {
        fs::File::create(dir.join(name)).map_err(|e| StartError::Setup(format!("{name}: {e}")))
    };
    let mut cmd = guarded(&options.program);
    cmd.args(&options.program_args);
    match &options.subcommand {
        Some(args) => cmd.args(args),
        None => cmd.arg("run").arg("-c").arg(&config),
    };
    cmd.arg("--ready-file")
        .arg(&ready_file)
        .args(&options.args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log(STDOUT_LOG)?)
        .stderr(log(STDERR_LOG)?);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PASSERELLE__") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
    let mut proc = Group::spawn(cmd).map_err(StartError::Setup)?;
    let stderr = || read_lossy(&dir.join(STDERR_LOG));

    let deadline = Instant::now() + options.ready_timeout;
    let mut last_error = String::from("no ready file");
    loop {
        // The binary writes the file atomically (rename), but a partial read is retried
        // rather than trusted, until the deadline.
        if let Ok(text) = fs::read_to_string(&ready_file) {
            match Ready::parse(&text) {
                Ok(ready) if ready.pid == proc.pid() => return Ok((proc, ready)),
                Ok(ready) => {
                    last_error = format!(
                        "ready file names pid {}, the process is {}",
                        ready.pid,
                        proc.pid()
                    )
                }
                Err(e) => last_error = format!("{e}: {text:?}"),
            }
        }
        if proc.has_exited() {
            let status = proc.reap();
            return Err(StartError::Exited {
                status,
                stderr: stderr(),
            });
        }
        if Instant::now() >= deadline {
            let _ = proc.terminate(Duration::from_secs(2));
            return Err(StartError::NotReady {
                reason: format!("after {:?}: {last_error}", options.ready_timeout),
                stderr: stderr(),
            });
        }
        thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------
// Process groups

/// `setpriv --pdeathsig KILL -- program`: the child gets SIGKILL if the thread that
/// started it dies (setpriv execs, so the pid is the program's).
fn guarded(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg("--pdeathsig").arg("KILL").arg("--").arg(program);
    cmd
}

/// A child that leads its own process group.
struct Group {
    child: Child,
    reaped: bool,
}

impl Group {
    fn spawn(mut cmd: Command) -> Result<Group, String> {
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("spawning {:?}: {e}", cmd.get_program()))?;
        Ok(Group {
            child,
            reaped: false,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the leader has exited, without reaping it (so its pid, which is also the
    /// group id, cannot be reused while we may still signal the group).
    fn has_exited(&self) -> bool {
        process_gone(self.pid())
    }

    fn wait_exited(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.has_exited() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL);
        }
    }

    fn signal_group(&self, signal: &str) {
        if !self.reaped {
            kill(signal, &format!("-{}", self.pid()));
        }
    }

    fn signal_leader(&self, signal: &str) {
        if !self.reaped && !self.has_exited() {
            kill(signal, &self.pid().to_string());
        }
    }

    /// Kills what is left of the group (children the leader left behind), then reaps
    /// the leader.
    fn reap(&mut self) -> ExitStatus {
        self.signal_group("KILL");
        self.reaped = true;
        self.child
            .wait()
            .expect("waiting for a child of this process cannot fail")
    }

    /// SIGTERM to the group; SIGKILL after `grace`. `Err` carries the status when the
    /// group had to be killed.
    fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, ExitStatus> {
        if self.reaped {
            return Ok(self.child.wait().expect("an already reaped child"));
        }
        self.signal_group("TERM");
        let exited = self.wait_exited(grace);
        let status = self.reap();
        if exited { Ok(status) } else { Err(status) }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.terminate(Duration::from_secs(2));
        }
    }
}

/// Whether process `pid` no longer runs: absent, or a zombie waiting to be reaped.
pub fn process_gone(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the command name, which is in parentheses and may contain
    // anything: take the field after the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("Z" | "X" | "x") | None)
}

/// `kill -SIGNAL -- TARGET` (procps), where TARGET is a pid or `-pgid`.
fn kill(signal: &str, target: &str) {
    // A failure (the group already gone) is not an error here: the caller reaps next.
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

// ---------------------------------------------------------------------------------------
// Bounded external commands

/// What a tool run by [`run_bounded`] printed.
#[derive(Debug)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args...` in its own process group with stdin closed, capturing its
/// output; kills the group at `timeout` and returns `Err` then, with what it printed.
/// A non-zero exit is `Ok`: the caller decides what it means.
pub fn run_bounded<S: AsRef<std::ffi::OsStr>>(
    program: &str,
    args: &[S],
    timeout: Duration,
) -> Result<CommandOutput, String> {
    let mut cmd = guarded(Path::new(program));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut proc = Group::spawn(cmd)?;
    let stdout = drain(proc.child.stdout.take());
    let stderr = drain(proc.child.stderr.take());
    let exited = proc.wait_exited(timeout);
    let status = proc.reap();
    // The group is dead, so the pipes are at end of file.
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !exited {
        return Err(format!(
            "{program} did not finish within {timeout:?} (killed); stderr:\n{}\nstdout:\n{}",
            tail(&stderr, 40),
            tail(&stdout, 40)
        ));
    }
    Ok(CommandOutput {
        status,
        stdout,
        stderr,
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

// ---------------------------------------------------------------------------------------
// RTSP clients

/// RTSP lower transport asked by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// RTP interleaved in the RTSP TCP connection.
    Tcp,
    /// RTP/RTCP over UDP ports negotiated in SETUP.
    Udp,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// Video codec of a stream, for choosing the GStreamer depayloader and decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

/// What ffprobe saw of a live RTSP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfprobeReport {
    /// Video frames decoded (`nb_read_frames` of the first video stream).
    pub frames: u64,
    /// Video packets (access units) read (`nb_read_packets`).
    pub packets: u64,
    /// `h264` or `hevc`.
    pub codec_name: String,
    /// e.g. `Main`, `Constrained Baseline`.
    pub profile: String,
    pub width: u32,
    pub height: u32,
    pub video_streams: usize,
    pub audio_streams: usize,
    /// What ffprobe printed at `-v error` (decode errors, RTSP errors); empty when clean.
    pub errors: String,
}

/// Plays `url` with ffprobe over `transport` for 3 seconds of stream time, decoding every
/// frame; see [`ffprobe_read`].
pub fn ffprobe_count_frames(
    url: &str,
    transport: Transport,
    timeout: Duration,
) -> Result<FfprobeReport, String> {
    ffprobe_read(url, transport, 3, timeout)
}

/// `ffprobe -rtsp_transport T -count_frames -count_packets -read_intervals %+SECONDS`:
/// reads SECONDS of stream time after the stream info is found, decoding every video
/// frame, within `timeout` of wall time. A 25 fps source yields about 25 × SECONDS
/// frames (more when a gateway sends its keyframe cache at once on join).
pub fn ffprobe_read(
    url: &str,
    transport: Transport,
    seconds: u32,
    timeout: Duration,
) -> Result<FfprobeReport, String> {
    let args = [
        "-v".to_owned(),
        "error".to_owned(),
        "-rtsp_transport".to_owned(),
        transport.as_str().to_owned(),
        "-count_frames".to_owned(),
        "-count_packets".to_owned(),
        "-read_intervals".to_owned(),
        format!("%+{seconds}"),
        "-show_entries".to_owned(),
        "stream=codec_name,codec_type,profile,width,height,nb_read_frames,nb_read_packets"
            .to_owned(),
        "-of".to_owned(),
        "json".to_owned(),
        url.to_owned(),
    ];
    let out = run_bounded("ffprobe", &args, timeout)?;
    if !out.status.success() {
        return Err(format!(
            "ffprobe {url} failed ({}): {}",
            out.status,
            out.stderr.trim()
        ));
    }
    parse_ffprobe(&out.stdout, out.stderr.trim()).map_err(|e| {
        format!(
            "ffprobe {url}: {e}; stdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        )
    })
}

/// Parses ffprobe's `-of json` output of the entries asked by [`ffprobe_read`].
pub fn parse_ffprobe(json: &str, errors: &str) -> Result<FfprobeReport, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let streams = value
        .get("streams")
        .and_then(serde_json::Value::as_array)
        .ok_or("no `streams` array")?;
    let is = |stream: &serde_json::Value, kind: &str| {
        stream.get("codec_type").and_then(serde_json::Value::as_str) == Some(kind)
    };
    let count = |kind: &str| streams.iter().filter(|s| is(s, kind)).count();
    let video = streams
        .iter()
        .find(|s| is(s, "video"))
        .ok_or("no video stream")?;
    let text = |key: &str| {
        video
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("video stream has no `{key}`"))
    };
    // Counts are JSON strings in ffprobe's output; sizes are numbers.
    let number = |key: &str| {
        text(key)?
            .parse::<u64>()
            .map_err(|e| format!("video stream `{key}`: {e}"))
    };
    let size = |key: &str| {
        video
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("video stream has no `{key}`"))
    };
    Ok(FfprobeReport {
        frames: number("nb_read_frames")?,
        packets: number("nb_read_packets")?,
        codec_name: text("codec_name")?,
        profile: text("profile")?,
        width: size("width")?,
        height: size("height")?,
        video_streams: count("video"),
        audio_streams: count("audio"),
        errors: errors.to_owned(),
    })
}

/// Plays `url` with GStreamer (`rtspsrc ! depay ! parse ! avdec ! fakesink
/// num-buffers=N`) until N frames are decoded, within `timeout`. `Ok` only when the
/// pipeline reached end of stream after N decoded frames.
pub fn gst_play(
    url: &str,
    codec: Codec,
    transport: Transport,
    num_buffers: u32,
    timeout: Duration,
) -> Result<(), String> {
    let (depay, parse, decode) = match codec {
        Codec::H264 => ("rtph264depay", "h264parse", "avdec_h264"),
        Codec::H265 => ("rtph265depay", "h265parse", "avdec_h265"),
    };
    let pipeline = format!(
        "rtspsrc location={url} protocols={} latency=200 ! {depay} ! {parse} ! {decode} ! fakesink num-buffers={num_buffers}",
        transport.as_str()
    );
    let args: Vec<&str> = pipeline.split_whitespace().collect();
    let out = run_bounded("gst-launch-1.0", &args, timeout)?;
    // gst-launch prints "Got EOS from element" when the sink ended the stream after
    // num-buffers frames; exit status 0 alone would also follow an interrupted run.
    // rtspsrc may report an error while tearing down after EOS (its PAUSE racing the
    // end of its own UDP receivers): the frames were decoded, which is what counts.
    if out.stdout.contains("Got EOS from element \"pipeline0\"") {
        Ok(())
    } else {
        Err(format!(
            "gst-launch-1.0 {pipeline} failed ({}):\n{}\n{}",
            out.status,
            tail(&out.stderr, 40),
            tail(&out.stdout, 40)
        ))
    }
}

/// A minimal configuration: every listener on 127.0.0.1:0, every path relative to the
/// config file (in the gateway's temp dir). The files it names exist; until a component
/// parses them they hold placeholders (give them real content, e.g. from `passerelle pki`,
/// when the binary starts reading them).
pub const MINIMAL_CONFIG: &str = r#"
[site]
id = "csu.metz.example"
state_dir = "state"

[tls]
cert = "tls/site.crt"
key = "tls/site.key"
ca = "tls/ca.crt"

[quic]
listen = "127.0.0.1:0"

[rtsp]
listen = "127.0.0.1:0"

[http]
listen = "127.0.0.1:0"

[management]
listen = "127.0.0.1:0"

[policy]
file = "policy/policy.toml"
trusted_keys = ["keys/policy.pub"]

[audit]
dir = "audit"
retention_days = 183
journal_key = "keys/journal.key"
"#;

pub const MINIMAL_FILES: &[(&str, &[u8])] = &[
    ("tls/site.crt", b"placeholder\n"),
    ("tls/site.key", b"placeholder\n"),
    ("tls/ca.crt", b"placeholder\n"),
    ("keys/policy.pub", b"placeholder\n"),
    ("keys/journal.key", b"placeholder\n"),
];

/// `passerelle demo --ephemeral-ports` with its files in `dir`, as a new user runs it;
/// its ready file lists the CSU's listeners (`rtsp`, `http`, `management`).
pub fn start_demo(dir: &Path) -> Gateway {
    Gateway::builder("", &[])
        .subcommand(&[
            "demo",
            "--ephemeral-ports",
            "--dir",
            dir.to_str().expect("utf-8"),
        ])
        .ready_timeout(Duration::from_secs(60))
        .start()
}

// ---------------------------------------------------------------------------------------
// HTTP

/// A response from [`http_get`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over plain HTTP/1.1 (`Connection: close`) with a deadline on connecting,
/// writing and reading: for `/healthz`, `/readyz`, `/metrics` on the management listener.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse, String> {
    http_request(addr, "GET", path, &[], None, timeout)
}

/// One plain HTTP/1.1 request (`Connection: close`) with `headers` and an optional JSON
/// body, with a deadline on connecting, writing and reading.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&str>,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    use std::io::Write;
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{method} {path} on {addr}: no answer within {timeout:?}"))
    };
    let mut stream = std::net::TcpStream::connect_timeout(&addr, left()?)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = json {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{method} {path} on {addr}: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("{method} {path} on {addr}: {e}")),
        }
    }
    parse_http_response(&raw).map_err(|e| format!("{method} {path} on {addr}: {e}"))
}

/// Opens a one-hour intervention on `gateway`'s `[http]` listener with an agent's bearer
/// `token` (`POST /api/v1/interventions`); asserts `201` and returns the intervention's id.
pub fn open_intervention(gateway: &Gateway, token: &str, reason: &str, cameras: &[&str]) -> String {
    let until = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    let body = serde_json::json!({ "reason": reason, "cameras": cameras, "until": until });
    let bearer = format!("Bearer {token}");
    let opened = http_request(
        gateway.addr("http"),
        "POST",
        "/api/v1/interventions",
        &[("Authorization", bearer.as_str())],
        Some(&body.to_string()),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(opened.status, 201, "{}", opened.body);
    let opened: serde_json::Value = serde_json::from_str(&opened.body).expect("JSON");
    opened["id"].as_str().expect("an id").to_owned()
}

/// Parses a whole HTTP/1.1 response (`Content-Length`, chunked, or until close).
pub fn parse_http_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let mut decoded = Vec::new();
    if chunked {
        loop {
            let eol = body
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("truncated chunk size")?;
            let size_text = std::str::from_utf8(&body[..eol]).map_err(|_| "bad chunk size")?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            body = &body[eol + 2..];
            if size == 0 {
                break;
            }
            if body.len() < size + 2 {
                return Err("truncated chunk".into());
            }
            decoded.extend_from_slice(&body[..size]);
            body = &body[size + 2..];
        }
    } else {
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| {
                v.parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {v:?}"))
            })
            .transpose()?;
        match length {
            Some(length) if body.len() < length => return Err("truncated body".into()),
            Some(length) => decoded.extend_from_slice(&body[..length]),
            None => decoded.extend_from_slice(body),
        }
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&decoded).into_owned(),
    })
}

// ---------------------------------------------------------------------------------------
// An independent RTSP camera

/// GStreamer's RTSP server (`tests/support/rtsp_source.py`) serving the fixtures in a
/// loop on 127.0.0.1. Mounts: `h264-main`, `h264-baseline`, `h265-main` (video only),
/// `h264-main-audio`, `h265-main-audio` (plus PCMA audio). Each client starts at an IDR.
/// Dropping it stops the server's process group (SIGTERM, SIGKILL after 2 s).
pub struct RtspSource {
    proc: Group,
    port: u16,
    dir: tempfile::TempDir,
}

impl RtspSource {
    /// Starts the server and waits (at most 10 s) until it listens; panics otherwise.
    pub fn start() -> RtspSource {
        let dir = tempfile::Builder::new()
            .prefix("passerelle-rtsp-source-")
            .tempdir()
            .expect("temp dir");
        let ready_file = dir.path().join("ready.json");
        let stderr_file = dir.path().join("stderr.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rtsp_source.py");
        // Debian's python3, which has python3-gi (a pyenv python first on PATH has not).
        let mut cmd = guarded(Path::new("/usr/bin/python3"));
        cmd.arg(script)
            .arg("--fixtures")
            .arg(fixtures_dir())
            .arg("--ready-file")
            .arg(&ready_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr_file).expect("stderr log"));
        let mut proc = Group::spawn(cmd).unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            let port = fs::read_to_string(&ready_file).ok().and_then(|text| {
                serde_json::from_str::<serde_json::Value>(&text)
                    .ok()?
                    .get("port")?
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
            });
            if let Some(port) = port {
                break port;
            }
            if proc.has_exited() || Instant::now() >= deadline {
                let _ = proc.terminate(Duration::from_secs(2));
                panic!(
                    "rtsp_source.py did not become ready within 10 s; stderr:\n{}",
                    read_lossy(&stderr_file)
                );
            }
            thread::sleep(POLL);
        };
        RtspSource { proc, port, dir }
    }

    /// `rtsp://127.0.0.1:PORT/<mount>`.
    pub fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{mount}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn stderr_log(&self) -> String {
        read_lossy(&self.dir.path().join("stderr.log"))
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].iter().fold(String::new(), |mut out, line| {
        out.push_str(line);
        out.push('\n');
        out
    })
}
