//! Joining a live camera: time to first decoded frame and lag behind live, with and
//! without the keyframe cache (DESIGN.md, "Data path": report both side by side).
//!
//! The chain of the demo on loopback: camera simulator → SNCF gateway → QUIC → CSU
//! gateway → RTSP, with a real client (ffprobe) reading the CSU's URL of the imported
//! SNCF camera `sncf/metz-ville/quai-1` (H.264, 25 fps, 2 s GOP). Each frame ffprobe
//! decodes is stamped with `Instant` when its line reaches us:
//!
//! - time to first frame: first frame's arrival − spawn of the client;
//! - first frame behind live: max over frames i of ((pts_i − pts_0) − (arrival_i −
//!   arrival_0)): a burst of cached frames arrives faster than their pts advance, and the
//!   amount it got ahead of real time is how old the first frame was;
//! - time to live edge: arrival of the first frame within one frame interval of that
//!   maximum (so arrival jitter of live frames does not count) − spawn.
//!
//! Cases: a cold camera (nobody watching: the SNCF pulls the simulator on demand, the
//! link subscribes the stream) and a warm one (another viewer already watching through
//! the CSU), each with the default keyframe cache and with a 1-byte cache cap (the least
//! the configuration accepts: no packet fits, so the cache is never usable and a new
//! viewer waits for the next keyframe). Cold runs wait until the SNCF no longer pulls
//! the camera (its cameras have `linger = "0s"` here); warm runs join at three points of
//! the GOP, spread evenly, as the watching viewer sees it live. Each cold run also
//! prints how many packets the CSU sent its viewer and how many crossed the link
//! meanwhile: anything more than crossed came from the CSU's memory of an earlier
//! session. The simulated camera keeps its own keyframe cache (it is not configured by
//! these variables), so a cold join starts with its replay whatever the gateways do.
//!
//! ffprobe runs with `-nofind_stream_info`: otherwise it holds the first frames to
//! guess the frame rate and the decoder delay (about 1 s, or 0.28 s with
//! `-fpsprobesize 0`) and prints them at once, which would read as lag behind live in
//! every case. `stdbuf -oL` makes it print each frame's line as it decodes it.
//!
//! The figures are printed, never asserted: the test only fails when a case decodes no
//! frame.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use passerelle::demo::{CSU_OPERATOR, MetzKit};
use support::metz::{loopback_listeners, metric, start_site};
use support::{Gateway, http_get};

/// The camera at the SNCF, and its id at the CSU.
const CAMERA: &str = "metz-ville/quai-1";
const IMPORTED: &str = "sncf/metz-ville/quai-1";
/// Runs per case.
const RUNS: usize = 3;
/// A run reads frames until their pts span this much: more than a whole GOP (2 s), so a
/// replayed cache is over and live frames follow.
const READ_SPAN: f64 = 2.6;
/// Most wall time one run (or the warm-up viewer) may take to get its frames.
const RUN_TIMEOUT: Duration = Duration::from_secs(15);
/// Frames in the camera's GOP (2 s at 25 fps).
const GOP_FRAMES: usize = 50;
/// One frame at 25 fps, in seconds.
const FRAME: f64 = 0.04;
/// Least cap the configuration accepts (1 to u32::MAX): no packet fits.
const NO_CACHE: &[(&str, &str)] = &[("PASSERELLE__CHANNEL__KEYFRAME_CACHE_MAX_BYTES", "1")];

/// camsim → SNCF → CSU; `env` applies to both gateways. The SNCF's cameras have no
/// linger, so a camera is cold again as soon as its last viewer leaves.
struct Chain {
    _camsim: Gateway,
    sncf: Gateway,
    csu: Gateway,
}

impl Chain {
    fn start(env: &[(&str, &str)]) -> Chain {
        let kit = MetzKit::new().expect("kit");
        let camsim = Gateway::camsim(&[]);
        let mut sncf_files = kit
            .sncf(loopback_listeners(), camsim.addr("rtsp"))
            .expect("sncf");
        let credentials = "credentials_file = \"secrets/camera.cred\"\n";
        assert!(
            sncf_files.config.contains(credentials),
            "{}",
            sncf_files.config
        );
        sncf_files.config = sncf_files
            .config
            .replace(credentials, &format!("{credentials}linger = \"0s\"\n"));
        let sncf = start_site(&sncf_files, env);
        let csu_files = kit
            .csu(loopback_listeners(), sncf.addr("quic"))
            .expect("csu");
        let csu = start_site(&csu_files, env);
        let chain = Chain {
            _camsim: camsim,
            sncf,
            csu,
        };
        chain.wait_for_catalog();
        chain
    }

    fn csu_url(&self) -> String {
        let (user, password) = CSU_OPERATOR;
        format!(
            "rtsp://{user}:{password}@{}/{IMPORTED}",
            self.csu.addr("rtsp")
        )
    }

    /// Waits (bounded) until the CSU has the SNCF catalog: the link is up.
    fn wait_for_catalog(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.csu.stderr_log().contains("partner catalog received") {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the CSU never received the SNCF catalog:\n{}",
            self.csu.stderr_log()
        );
    }

    /// Waits (bounded) until the SNCF no longer pulls the camera: nobody watches it
    /// through the link, the camera is cold.
    fn wait_until_cold(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            last = Self::metrics(&self.sncf);
            let camera = format!("camera=\"{CAMERA}\"");
            if metric(
                &last,
                "passerelle_camera_state",
                &[&camera, "state=\"idle\""],
            ) == Some(1.0)
            {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("the SNCF still pulls {CAMERA} 10 s after its last viewer left:\n{last}");
    }
}

/// Packets of the camera forwarded so far.
struct PacketCounts {
    /// By the SNCF to the CSU over the link.
    link: f64,
    /// By the CSU to its local viewers.
    local: f64,
}

impl Chain {
    fn metrics(gateway: &Gateway) -> String {
        http_get(
            gateway.addr("management"),
            "/metrics",
            Duration::from_secs(5),
        )
        .expect("metrics")
        .body
    }

    fn packet_counts(&self) -> PacketCounts {
        let count = |text: &str, camera: &str, peer: &str| {
            let camera = format!("camera=\"{camera}\"");
            let peer = format!("peer=\"{peer}\"");
            metric(
                text,
                "passerelle_forwarded_packets_total",
                &[&camera, &peer],
            )
            .unwrap_or(0.0)
        };
        PacketCounts {
            link: count(&Self::metrics(&self.sncf), CAMERA, passerelle::demo::CSU),
            local: count(&Self::metrics(&self.csu), IMPORTED, "local"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client

/// A decoded frame as ffprobe printed it, stamped on arrival.
#[derive(Debug, Clone, Copy)]
struct Frame {
    arrival: Instant,
    /// Presentation time in seconds; ffprobe prints none (`N/A`) for the first frame of
    /// an RTSP session: filled from its neighbours by [`presentation_times`].
    pts: Option<f64>,
    key: bool,
}

/// A running `ffprobe -show_frames` on an RTSP URL, in its own process group (killed on
/// drop) under `setpriv --pdeathsig KILL`, its stdout line-buffered (`stdbuf -oL`) and
/// read by a thread that stamps each line as it arrives.
struct Viewer {
    child: Child,
    spawned: Instant,
    lines: mpsc::Receiver<(Instant, String)>,
    stderr: Option<thread::JoinHandle<String>>,
    reaped: bool,
}

impl Viewer {
    fn spawn(url: &str) -> Viewer {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", "stdbuf", "-oL", "ffprobe"])
            .args(["-v", "error", "-rtsp_transport", "tcp"])
            .arg("-nofind_stream_info")
            .args(["-show_entries", "frame=key_frame,pts_time"])
            .args(["-of", "compact=p=0:nk=0"])
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let spawned = Instant::now();
        let mut child = cmd.spawn().expect("spawning ffprobe");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while let Ok(n) = reader.read_line(&mut line) {
                if n == 0 || tx.send((Instant::now(), line.trim().to_owned())).is_err() {
                    break;
                }
                line.clear();
            }
        });
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text);
            text
        });
        Viewer {
            child,
            spawned,
            lines,
            stderr: Some(stderr),
            reaped: false,
        }
    }

    /// The next decoded frame, or `None` at end of output or at `deadline`.
    fn next_frame(&mut self, deadline: Instant) -> Option<Frame> {
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (arrival, line) = self.lines.recv_timeout(left).ok()?;
            if let Some(frame) = parse_frame(arrival, &line) {
                return Some(frame);
            }
        }
    }

    /// Reads frames until they arrive at the camera's pace (ten frames over at least
    /// 0.3 s of wall time): any burst of replayed frames is over, the viewer is live.
    fn wait_live(&mut self, deadline: Instant) -> Result<(), String> {
        let mut recent = std::collections::VecDeque::new();
        while let Some(frame) = self.next_frame(deadline) {
            recent.push_back(frame.arrival);
            if recent.len() > 10 {
                recent.pop_front();
                if recent[9].duration_since(recent[0]) >= Duration::from_millis(300) {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "the watching viewer was not live within {RUN_TIMEOUT:?}"
        ))
    }

    /// Waits for the next keyframe this (live) viewer decodes, frames printed so far
    /// skipped, then for `after` more frames: a point of the camera's GOP, live.
    fn wait_gop_phase(&mut self, after: usize, deadline: Instant) -> Result<(), String> {
        while self.lines.try_recv().is_ok() {}
        let lost = || format!("the watching viewer stopped decoding frames within {RUN_TIMEOUT:?}");
        while !self.next_frame(deadline).ok_or_else(lost)?.key {}
        for _ in 0..after {
            self.next_frame(deadline).ok_or_else(lost)?;
        }
        Ok(())
    }

    /// Kills the group and reaps ffprobe; returns what it printed on stderr.
    fn stop(&mut self) -> String {
        if !self.reaped {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = self.child.wait();
            self.reaped = true;
        }
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `key_frame=1|pts_time=0.080000` → a frame; `None` for any other line (ffprobe prints
/// an empty one after some frames).
fn parse_frame(arrival: Instant, line: &str) -> Option<Frame> {
    let mut pts = None;
    let mut key = None;
    for field in line.split('|') {
        match field.split_once('=') {
            Some(("pts_time", value)) => pts = value.parse::<f64>().ok(),
            Some(("key_frame", value)) => key = Some(value == "1"),
            _ => {}
        }
    }
    Some(Frame {
        arrival,
        pts,
        key: key?,
    })
}

/// The frames' presentation times, those ffprobe left out filled from their neighbours
/// (25 fps, no B-frames: one frame interval apart).
fn presentation_times(frames: &[Frame]) -> Option<Vec<f64>> {
    let (known, pts) = frames
        .iter()
        .enumerate()
        .find_map(|(i, f)| Some((i, f.pts?)))?;
    let mut times = Vec::with_capacity(frames.len());
    for (i, frame) in frames.iter().enumerate() {
        let time = match frame.pts {
            Some(pts) => pts,
            None if i < known => pts - (known - i) as f64 * FRAME,
            None => times[i - 1] + FRAME,
        };
        times.push(time);
    }
    Some(times)
}

// ---------------------------------------------------------------------------------------
// One join

/// What one new viewer saw, in seconds.
#[derive(Debug, Clone)]
struct Join {
    first_frame: f64,
    behind_live: f64,
    live_edge: f64,
    frames: usize,
    first_is_key: bool,
    burst: usize,
    /// Steps between consecutive frames' pts other than one frame interval, in seconds.
    jumps: Vec<f64>,
}

/// Frames of one viewer from its first one until their pts span [`READ_SPAN`].
fn read_join(viewer: &mut Viewer) -> Result<Vec<Frame>, String> {
    let deadline = viewer.spawned + RUN_TIMEOUT;
    let mut frames: Vec<Frame> = Vec::new();
    while let Some(frame) = viewer.next_frame(deadline) {
        frames.push(frame);
        let span = presentation_times(&frames).map(|t| t[t.len() - 1] - t[0]);
        if span.is_some_and(|span| span >= READ_SPAN) {
            return Ok(frames);
        }
    }
    Err(format!(
        "{} frames within {RUN_TIMEOUT:?}; ffprobe stderr:\n{}",
        frames.len(),
        viewer.stop()
    ))
}

fn measure(spawned: Instant, frames: &[Frame]) -> Join {
    let pts = presentation_times(frames).expect("frames with a pts");
    let first = frames[0].arrival;
    let ahead: Vec<f64> = frames
        .iter()
        .zip(&pts)
        .map(|(f, t)| (t - pts[0]) - f.arrival.duration_since(first).as_secs_f64())
        .collect();
    let behind_live = ahead.iter().copied().fold(0.0, f64::max);
    let edge = ahead
        .iter()
        .position(|&a| a >= behind_live - FRAME)
        .unwrap_or(0);
    let jumps = pts
        .windows(2)
        .filter(|w| (w[1] - w[0] - FRAME).abs() > FRAME / 2.0)
        .map(|w| w[1] - w[0])
        .collect();
    Join {
        first_frame: first.duration_since(spawned).as_secs_f64(),
        behind_live,
        live_edge: frames[edge].arrival.duration_since(spawned).as_secs_f64(),
        frames: frames.len(),
        first_is_key: frames[0].key,
        burst: edge + 1,
        jumps,
    }
}

/// One new viewer of the camera: spawn, read, stop.
fn join(chain: &Chain, label: &str) -> Join {
    let mut viewer = Viewer::spawn(&chain.csu_url());
    let frames = read_join(&mut viewer).unwrap_or_else(|e| {
        panic!(
            "{label}: no frames decoded: {e}\nCSU:\n{}",
            support::tail(&chain.csu.stderr_log(), 40)
        )
    });
    let errors = viewer.stop();
    let join = measure(viewer.spawned, &frames);
    println!(
        "{label}: first frame {:.3} s (keyframe: {}), {:.3} s behind live, live edge at {:.3} s after {} frames; {} frames read, pts steps off 40 ms: {:.3?}{}",
        join.first_frame,
        join.first_is_key,
        join.behind_live,
        join.live_edge,
        join.burst,
        join.frames,
        join.jumps,
        if errors.trim().is_empty() {
            String::new()
        } else {
            format!("; ffprobe: {}", errors.trim().replace('\n', " / "))
        }
    );
    join
}

/// Cold then warm joins on a fresh chain with `env`.
fn cases(env: &[(&str, &str)], name: &str) -> (Vec<Join>, Vec<Join>) {
    let chain = Chain::start(env);
    let mut cold = Vec::new();
    chain.wait_until_cold();
    for run in 1..=RUNS {
        let before = chain.packet_counts();
        let join = join(&chain, &format!("{name}, cold #{run}"));
        chain.wait_until_cold();
        let after = chain.packet_counts();
        // The CSU's viewer should get exactly what crossed the link for it while it
        // watched: anything more came from the CSU's memory of an earlier session.
        println!(
            "{name}, cold #{run}: the CSU sent its viewer {} packets, the SNCF sent {} across the link",
            after.local - before.local,
            after.link - before.link
        );
        cold.push(join);
    }
    // Another viewer watches through the CSU, live once past its own joining burst.
    let mut watcher = Viewer::spawn(&chain.csu_url());
    let deadline = watcher.spawned + RUN_TIMEOUT;
    watcher
        .wait_live(deadline)
        .unwrap_or_else(|e| panic!("{name}: {e}: {}", watcher.stop()));
    // Each warm join at another point of the 2 s GOP (spread evenly, as seen live by
    // the watching viewer), so the runs sample the wait for a keyframe fairly.
    let mut warm = Vec::new();
    for run in 0..RUNS {
        let after = (2 * run + 1) * GOP_FRAMES / (2 * RUNS);
        watcher
            .wait_gop_phase(after, Instant::now() + RUN_TIMEOUT)
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", watcher.stop()));
        let label = format!(
            "{name}, warm #{}, {:.2} s after a keyframe",
            run + 1,
            after as f64 * FRAME
        );
        warm.push(join(&chain, &label));
    }
    watcher.stop();
    (cold, warm)
}

// ---------------------------------------------------------------------------------------
// Report

/// One figure of a join.
type Pick = fn(&Join) -> f64;

fn stats(joins: &[Join], pick: Pick) -> String {
    let mut values: Vec<f64> = joins.iter().map(pick).collect();
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    format!(
        "{:>6.2} {:>6.2} {:>6.2}",
        values[0],
        median,
        values[values.len() - 1]
    )
}

#[test]
fn time_to_first_frame_and_lag_behind_live_with_and_without_the_keyframe_cache() {
    let started = Instant::now();
    let (cached_cold, cached_warm) = cases(&[], "cache");
    let (bare_cold, bare_warm) = cases(NO_CACHE, "no cache");
    for (name, joins) in [
        ("cache, cold", &cached_cold),
        ("cache, warm", &cached_warm),
        ("no cache, cold", &bare_cold),
        ("no cache, warm", &bare_warm),
    ] {
        assert_eq!(joins.len(), RUNS, "{name}");
        assert!(joins.iter().all(|j| j.frames > 0), "{name}: {joins:?}");
    }

    let metrics: [(&str, Pick); 3] = [
        ("time to first frame", |j| j.first_frame),
        ("first frame behind live", |j| j.behind_live),
        ("time to live edge", |j| j.live_edge),
    ];
    println!();
    println!(
        "Joining {IMPORTED} at the CSU over RTSP/TCP (ffprobe), {RUNS} runs per case, seconds"
    );
    println!(
        "{:<33} | {:^20} | {:^20}",
        "", "keyframe cache (8 MiB)", "no cache (1 byte cap)"
    );
    println!(
        "{:<33} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6}",
        "", "min", "median", "max", "min", "median", "max"
    );
    for (case, cached, bare) in [
        ("cold", &cached_cold, &bare_cold),
        ("warm", &cached_warm, &bare_warm),
    ] {
        for (metric, pick) in metrics {
            println!(
                "{:<33} | {} | {}",
                format!("{case}: {metric}"),
                stats(cached, pick),
                stats(bare, pick)
            );
        }
    }
    println!("(whole test: {:.1} s)", started.elapsed().as_secs_f64());
}
