//! Live viewers and the journal files of a running site, for governance tests.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::Gateway;

/// Reads a live stream with ffprobe, stamping each packet's arrival in wall-clock time.
pub struct Watcher {
    child: std::process::Child,
    arrivals: Arc<Mutex<Vec<SystemTime>>>,
}

impl Watcher {
    pub fn start(url: &str) -> Watcher {
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "ffprobe",
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                "-show_entries",
                "packet=pts_time",
                "-of",
                "csv=p=0",
                url,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffprobe");
        let stdout = child.stdout.take().expect("stdout");
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&arrivals);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if line.is_err() {
                    return;
                }
                sink.lock().expect("arrivals").push(SystemTime::now());
            }
        });
        Watcher { child, arrivals }
    }

    pub fn count(&self) -> usize {
        self.arrivals.lock().expect("arrivals").len()
    }

    pub fn last(&self) -> Option<SystemTime> {
        self.arrivals.lock().expect("arrivals").last().copied()
    }

    /// Waits (at most `within`) until the stream has been quiet for 1.5 s, then returns
    /// how long after `since` its last packet arrived, in milliseconds: negative when it
    /// came before (at 25 fps a cut within one frame of `since` shows as up to -40 ms).
    pub fn last_packet_ms_after(&self, since: SystemTime, within: Duration) -> f64 {
        let quiet = Duration::from_millis(1500);
        let deadline = Instant::now() + within;
        while self
            .last()
            .is_some_and(|last| SystemTime::now().duration_since(last).unwrap_or_default() < quiet)
        {
            assert!(
                Instant::now() < deadline,
                "the stream never stopped within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let last = self.last().expect("packets arrived");
        match last.duration_since(since) {
            Ok(after) => after.as_secs_f64() * 1000.0,
            Err(before) => -before.duration().as_secs_f64() * 1000.0,
        }
    }

    pub fn wait_for(&self, packets: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count() < packets {
            assert!(
                Instant::now() < deadline,
                "only {} packets within {within:?}",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every journal record of `site`, in file order.
pub fn journal_records(site: &Gateway) -> Vec<serde_json::Value> {
    let mut files: Vec<_> = std::fs::read_dir(site.dir().join("audit"))
        .expect("audit dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect::<Vec<serde_json::Value>>()
        })
        .collect()
}

/// The time of the first journal record of `kind` with `serial`, from the journal files.
pub fn journal_time(site: &Gateway, kind: &str, serial: u64) -> SystemTime {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = site.dir().join("audit");
        for entry in std::fs::read_dir(&audit)
            .expect("audit dir")
            .filter_map(Result::ok)
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text.lines() {
                let record: serde_json::Value = match serde_json::from_str(line) {
                    Ok(record) => record,
                    Err(_) => continue,
                };
                if record["kind"] == kind && record["serial"] == serial {
                    let time: jiff::Timestamp = record["time"]
                        .as_str()
                        .expect("time")
                        .parse()
                        .expect("RFC 3339");
                    return SystemTime::UNIX_EPOCH
                        + Duration::from_nanos(time.as_nanosecond() as u64);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} record for serial {serial}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for a line of the site's journal files matching `wanted`.
pub fn wait_for_journal_line(site: &Gateway, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for entry in std::fs::read_dir(site.dir().join("audit"))
            .expect("audit dir")
            .filter_map(Result::ok)
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| wanted(l)) {
                return line.to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no such journal line");
        std::thread::sleep(Duration::from_millis(50));
    }
}
