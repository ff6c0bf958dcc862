//! Headless Chromium driven over the DevTools protocol, for the WebRTC (WHEP) pages.
//!
//! - [`Browser::launch`] starts Debian's `/usr/bin/chromium` headless with a fresh
//!   profile directory and `--remote-debugging-port=0`, reads the port it chose from
//!   `<profile>/DevToolsActivePort` (bounded wait), and checks `/json/version`.
//! - [`Browser::open`] makes a tab (`Target.createTarget`), finds it in `/json/list`,
//!   connects to its websocket and navigates it; a [`Page`] then evaluates JavaScript
//!   ([`Page::evaluate`], [`Page::wait_for`]) and records what the page printed or threw.
//! - A [`Page`] dropped while its test panics saves a screenshot under
//!   `$CARGO_TARGET_TMPDIR/browser-screenshots/` and prints the page's console.
//!
//! The client is synchronous: one request at a time, events read while waiting for the
//! answer. Chromium runs like every harness child (own process group, `setpriv
//! --pdeathsig KILL`), so keep a [`Browser`] on the thread that launched it. Its crash
//! handler (`chrome_crashpad_handler`) leaves the group by itself and exits when the
//! browser does.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use super::{Group, guarded, parse_http_response, read_lossy, tail};

/// Debian's Chromium (package `chromium`), a wrapper script that execs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long Chromium may take to write `DevToolsActivePort`.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one DevTools command may take (a navigation waits for the load event).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Interval of the harness's polls (the port file, [`Page::wait_for`]).
const POLL: Duration = Duration::from_millis(100);
/// How long Chromium may take to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The command line: headless, no GPU, nothing that phones home, a throwaway profile.
/// WebRTC needs nothing more on loopback: the WHEP server's answer carries
/// `127.0.0.1` host candidates, which Chromium's own candidates reach; the pages start
/// muted videos, which the default autoplay policy allows (so no autoplay flag hides a
/// page that would not play for a person).
const FLAGS: [&str; 7] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A running headless Chromium in its own process group and temporary directory.
///
/// Dropping it kills the process group and removes the directory (profile and log).
pub struct Browser {
    proc: Option<Group>,
    port: u16,
    product: String,
    control: RefCell<Cdp>,
    // Declared last: removed after the process is gone.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium and connects to it; panics with its stderr if it cannot.
    pub fn launch() -> Browser {
        Browser::try_launch().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts Chromium, waits (at most 20 s) for its DevTools port and connects to it.
    pub fn try_launch() -> Result<Browser, String> {
        let dir = tempfile::Builder::new()
            .prefix("passerelle-chromium-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let profile = dir.path().join("profile");
        let stderr_file = dir.path().join("stderr.log");
        let stderr = fs::File::create(&stderr_file).map_err(|e| format!("stderr log: {e}"))?;
        let mut cmd = guarded(Path::new(CHROMIUM));
        cmd.args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            // Crash reports and the launcher's clean-up go under the temp dir, not $HOME.
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut proc = Group::spawn(cmd)?;
        let fail = |proc: &mut Group, why: String| {
            let _ = proc.terminate(Duration::from_secs(2));
            format!(
                "{CHROMIUM}: {why}; stderr:\n{}",
                tail(&read_lossy(&stderr_file), 40)
            )
        };
        let port = match wait_for_port(&proc, &profile.join("DevToolsActivePort")) {
            Ok(port) => port,
            Err(why) => return Err(fail(&mut proc, why)),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let version = match get_json(addr, "/json/version") {
            Ok(version) => version,
            Err(why) => return Err(fail(&mut proc, why)),
        };
        let product = version["Browser"].as_str().unwrap_or_default().to_owned();
        // The browser's own endpoint, named by /json/version, for Target.* commands.
        let control = match version["webSocketDebuggerUrl"]
            .as_str()
            .ok_or_else(|| format!("/json/version has no webSocketDebuggerUrl: {version}"))
            .and_then(|url| Cdp::connect(addr, url))
        {
            Ok(control) => control,
            Err(why) => return Err(fail(&mut proc, why)),
        };
        Ok(Browser {
            proc: Some(proc),
            port,
            product,
            control: RefCell::new(control),
            dir,
        })
    }

    /// The product string of `/json/version`, such as `Chrome/156.0.8078.108`.
    pub fn version(&self) -> &str {
        &self.product
    }

    /// The DevTools HTTP endpoint.
    pub fn devtools_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Everything Chromium wrote to stderr so far.
    pub fn stderr_log(&self) -> String {
        read_lossy(&self.dir.path().join("stderr.log"))
    }

    /// Opens `url` in a new tab and waits for its load event; panics if it cannot.
    pub fn open(&self, url: &str) -> Page {
        self.try_open(url).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens a new tab on `about:blank`, connects to it with the Runtime, Page and Log
    /// domains on (so nothing the page prints is missed), then navigates to `url` and
    /// waits for the load event.
    pub fn try_open(&self, url: &str) -> Result<Page, String> {
        let created = self.control.borrow_mut().call(
            "Target.createTarget",
            json!({ "url": "about:blank" }),
            COMMAND_TIMEOUT,
        )?;
        let target = created["targetId"]
            .as_str()
            .ok_or_else(|| format!("Target.createTarget answered {created}"))?;
        let targets = get_json(self.devtools_addr(), "/json/list")?;
        let ws_url = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["id"] == target)
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .ok_or_else(|| format!("target {target} is not in /json/list: {targets}"))?;
        let mut page = Page {
            cdp: Cdp::connect(self.devtools_addr(), ws_url)?,
            log: Vec::new(),
            loaded: false,
        };
        for domain in ["Runtime", "Page", "Log"] {
            page.call(&format!("{domain}.enable"), json!({}))?;
        }
        page.goto(url)?;
        Ok(page)
    }

    /// Connects to a tab the pages opened themselves (`window.open`), the first whose
    /// address contains `url_part`, waiting for it up to `timeout`.
    pub fn attach(&self, url_part: &str, timeout: Duration) -> Result<Page, String> {
        let deadline = Instant::now() + timeout;
        let ws_url = loop {
            let targets = get_json(self.devtools_addr(), "/json/list")?;
            let found = targets
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| {
                    t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains(url_part))
                })
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned));
            if let Some(ws_url) = found {
                break ws_url;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no tab at {url_part} within {timeout:?}: {targets}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        };
        let mut page = Page {
            cdp: Cdp::connect(self.devtools_addr(), &ws_url)?,
            log: Vec::new(),
            loaded: true,
        };
        for domain in ["Runtime", "Page", "Log"] {
            page.call(&format!("{domain}.enable"), json!({}))?;
        }
        Ok(page)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if thread::panicking() {
            // Without a D-Bus, Chromium logs a line per attempt to reach one: noise.
            let log: String = self
                .stderr_log()
                .lines()
                .filter(|line| !line.contains(":ERROR:dbus/"))
                .fold(String::new(), |mut log, line| {
                    log.push_str(line);
                    log.push('\n');
                    log
                });
            eprintln!(
                "--- chromium stderr (last lines) ---\n{}--- end of chromium stderr ---",
                tail(&log, 30)
            );
        }
        if let Some(mut proc) = self.proc.take() {
            let _ = proc.terminate(STOP_GRACE);
        }
    }
}

/// One tab of a [`Browser`].
pub struct Page {
    cdp: Cdp,
    /// Console calls, uncaught exceptions and browser log entries, in order.
    log: Vec<String>,
    /// Whether `Page.loadEventFired` came since the last navigation.
    loaded: bool,
}

impl Page {
    /// Navigates to `url` and waits (bounded) for the load event.
    pub fn goto(&mut self, url: &str) -> Result<(), String> {
        self.loaded = false;
        let answer = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(error) = answer["errorText"].as_str() {
            return Err(format!("navigating to {url}: {error}"));
        }
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while !self.loaded {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{url}: no load event within {COMMAND_TIMEOUT:?}; console:\n{}",
                    self.console_text()
                ));
            }
            if let Ok(event) = self.cdp.next_event(POLL) {
                self.handle_event(&event);
            }
        }
        Ok(())
    }

    /// Evaluates `js` (awaiting a promise) and returns its value; panics with the page's
    /// console if it throws.
    /// A real middle click at (`x`, `y`) in CSS pixels: input the page sees as the user's
    /// (it may open a tab, which synthetic events may not).
    pub fn middle_click(&mut self, x: f64, y: f64) -> Result<(), String> {
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "middle", "clickCount": 1 }),
            )?;
        }
        Ok(())
    }

    pub fn evaluate(&mut self, js: &str) -> Value {
        self.try_evaluate(js)
            .unwrap_or_else(|e| panic!("{e}\nconsole:\n{}", self.console_text()))
    }

    /// `Runtime.evaluate` with `returnByValue` and `awaitPromise`: the value (`null` for
    /// `undefined`), or what was thrown.
    pub fn try_evaluate(&mut self, js: &str) -> Result<Value, String> {
        let answer = self.call(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(details) = answer.get("exceptionDetails") {
            return Err(format!(
                "`{js}` threw: {}",
                details["exception"]["description"]
                    .as_str()
                    .or_else(|| details["text"].as_str())
                    .unwrap_or("an exception")
            ));
        }
        Ok(answer["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Polls `js` every 100 ms until its value is truthy (in JavaScript's sense) and
    /// returns that value; an evaluation that throws counts as not yet. `Err` after
    /// `timeout` names the last value or exception and the page's console.
    pub fn wait_for(&mut self, js: &str, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.try_evaluate(js) {
                Ok(value) if truthy(&value) => return Ok(value),
                Ok(value) => format!("last value {value}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "`{js}` was not true within {timeout:?} ({last}); console:\n{}",
                    self.console_text()
                ));
            }
            // Reading events (console, exceptions) while waiting is the pause.
            if let Ok(event) = self.cdp.next_event(POLL) {
                self.handle_event(&event);
            }
        }
    }

    /// What the page printed (`console.*`), threw (uncaught) and the browser logged
    /// about it (failed requests, WebRTC errors), one line each.
    pub fn console(&self) -> &[String] {
        &self.log
    }

    /// [`Page::console`] as one text, for failure messages.
    pub fn console_text(&self) -> String {
        self.log.iter().fold(String::new(), |mut text, line| {
            let _ = writeln!(text, "  {line}");
            text
        })
    }

    /// Saves a PNG of the visible page (`Page.captureScreenshot`) to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<(), String> {
        let answer = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(answer["data"].as_str().unwrap_or_default())
            .map_err(|e| format!("screenshot is not base64: {e}"))?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Sends one command and returns its result, recording the events read meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let (result, events) = self.cdp.call_collecting(method, params, COMMAND_TIMEOUT)?;
        for event in &events {
            self.handle_event(event);
        }
        Ok(result)
    }

    fn handle_event(&mut self, event: &Value) {
        let params = &event["params"];
        let line = match event["method"].as_str().unwrap_or_default() {
            "Page.loadEventFired" => {
                self.loaded = true;
                return;
            }
            "Runtime.consoleAPICalled" => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(remote_object_text)
                    .collect();
                format!(
                    "console.{}: {}",
                    params["type"].as_str().unwrap_or("log"),
                    args.join(" ")
                )
            }
            "Runtime.exceptionThrown" => {
                let details = &params["exceptionDetails"];
                format!(
                    "uncaught: {} ({}:{})",
                    details["exception"]["description"]
                        .as_str()
                        .or_else(|| details["text"].as_str())
                        .unwrap_or("an exception"),
                    details["url"].as_str().unwrap_or("?"),
                    details["lineNumber"]
                )
            }
            "Log.entryAdded" => {
                let entry = &params["entry"];
                format!(
                    "{} {}: {} {}",
                    entry["source"].as_str().unwrap_or("browser"),
                    entry["level"].as_str().unwrap_or("info"),
                    entry["text"].as_str().unwrap_or_default(),
                    entry["url"].as_str().unwrap_or_default()
                )
            }
            "Inspector.targetCrashed" => "the page crashed".to_owned(),
            _ => return,
        };
        self.log.push(line);
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        let path = failure_screenshot_path();
        let shot = match self.screenshot(&path) {
            Ok(()) => format!("screenshot: {}", path.display()),
            Err(e) => format!("no screenshot: {e}"),
        };
        eprintln!(
            "--- page console ---\n{}--- {shot} ---",
            self.console_text()
        );
    }
}

/// Where a [`Page`] dropped by a panicking test saves its screenshot:
/// `$CARGO_TARGET_TMPDIR/browser-screenshots/<test name>-<pid>.png`.
pub fn failure_screenshot_path() -> PathBuf {
    let name = thread::current()
        .name()
        .unwrap_or("test")
        .replace("::", "-")
        .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_");
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("browser-screenshots")
        .join(format!("{name}-{}.png", std::process::id()))
}

/// Whether a JSON value from JavaScript is truthy there.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0 && !n.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// A console argument as text: its value, else its description (objects, errors).
fn remote_object_text(object: &Value) -> String {
    match object.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(value) => value.to_string(),
        None => object["description"]
            .as_str()
            .or_else(|| object["type"].as_str())
            .unwrap_or("?")
            .to_owned(),
    }
}

/// Waits for `DevToolsActivePort` (port on its first line), or the process's exit.
fn wait_for_port(proc: &Group, file: &Path) -> Result<u16, String> {
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    loop {
        // Chromium writes the file whole once it listens; a partial read is retried.
        let port = fs::read_to_string(file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u16>().ok())
            .filter(|&port| port != 0);
        if let Some(port) = port {
            return Ok(port);
        }
        if proc.has_exited() {
            return Err("exited before it listened for DevTools".into());
        }
        if Instant::now() >= deadline {
            return Err(format!("no {} within {LAUNCH_TIMEOUT:?}", file.display()));
        }
        thread::sleep(POLL);
    }
}

/// `GET path` on the DevTools HTTP endpoint, parsed as JSON. Chromium keeps the
/// connection open whatever the request says, so the body ends at its
/// `Content-Length`, not at the close [`super::http_get`] waits for.
fn get_json(addr: SocketAddr, path: &str) -> Result<Value, String> {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let mut stream = TcpStream::connect_timeout(&addr, COMMAND_TIMEOUT)
        .map_err(|e| format!("connecting to DevTools at {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(COMMAND_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let response = loop {
        if let Ok(response) = parse_http_response(&raw) {
            break response;
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("GET {path}: no whole answer within {COMMAND_TIMEOUT:?}"))?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => return Err(format!("GET {path}: connection closed mid-answer")),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("GET {path}: {e}")),
        }
    };
    if response.status != 200 {
        return Err(format!("GET {path}: {} {}", response.status, response.body));
    }
    serde_json::from_str(&response.body).map_err(|e| format!("GET {path}: not JSON: {e}"))
}

/// One DevTools websocket: numbered commands, answers matched by id, events queued.
struct Cdp {
    socket: WebSocket<TcpStream>,
    next_id: u64,
}

impl Cdp {
    fn connect(addr: SocketAddr, ws_url: &str) -> Result<Cdp, String> {
        let stream = TcpStream::connect_timeout(&addr, COMMAND_TIMEOUT)
            .map_err(|e| format!("connecting to DevTools at {addr}: {e}"))?;
        stream
            .set_write_timeout(Some(COMMAND_TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let (socket, _) = tungstenite::client(ws_url, stream)
            .map_err(|e| format!("websocket handshake with {ws_url}: {e}"))?;
        Ok(Cdp { socket, next_id: 1 })
    }

    /// Sends `method` and waits at most `timeout` for its answer, ignoring events.
    fn call(&mut self, method: &str, params: Value, timeout: Duration) -> Result<Value, String> {
        self.call_collecting(method, params, timeout)
            .map(|(result, _)| result)
    }

    /// Sends `method` and waits at most `timeout` for its answer; returns its result
    /// and the events that came before it.
    fn call_collecting(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<(Value, Vec<Value>), String> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket
            .send(Message::text(request))
            .map_err(|e| format!("{method}: sending: {e}"))?;
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("{method}: no answer within {timeout:?}"))?;
            let Some(message) = self.read(left)? else {
                continue;
            };
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    return Err(format!("{method}: {error}"));
                }
                return Ok((message["result"].clone(), events));
            }
            if message.get("method").is_some() {
                events.push(message);
            }
        }
    }

    /// The next event within `timeout` (answers to no pending command are dropped).
    fn next_event(&mut self, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or("no event")?;
            if let Some(message) = self.read(left)?
                && message.get("method").is_some()
            {
                return Ok(message);
            }
        }
    }

    /// One JSON message, `None` when `timeout` passed first or the frame was not text.
    fn read(&mut self, timeout: Duration) -> Result<Option<Value>, String> {
        self.socket
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        match self.socket.read() {
            Ok(Message::Text(text)) => serde_json::from_str(text.as_str())
                .map(Some)
                .map_err(|e| format!("DevTools sent no JSON: {e}")),
            Ok(_) => Ok(None),
            // A read timeout leaves a partly read frame buffered for the next read.
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("DevTools connection: {e}")),
        }
    }
}
