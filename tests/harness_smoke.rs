//! Checks of the test harness itself (`tests/support/`) and of the media fixtures
//! (`tests/fixtures/`): the properties other tests rely on, measured with ffprobe and by
//! scanning the Annex B streams, and the harness's process handling, readiness and RTSP
//! client helpers against real programs.

mod support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{
    Codec, FfprobeReport, Gateway, GatewayBuilder, Ready, RtspSource, StartError, Transport,
    ffprobe_count_frames, fixture, gst_play, parse_ffprobe, process_gone, run_bounded,
};

const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Fixtures

/// One NAL unit of an Annex B stream: its type and size (header included, start code not).
#[derive(Debug, Clone, Copy)]
struct Nal {
    kind: u8,
    len: usize,
}

/// Splits an Annex B byte stream at its start codes (00 00 01, or 00 00 00 01).
fn nal_units(data: &[u8], hevc: bool) -> Vec<Nal> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let mut end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
            // A four-byte start code's leading zero belongs to the next start code.
            if n + 1 < starts.len() && end > start && data[end - 1] == 0 {
                end -= 1;
            }
            let header = data[start];
            let kind = if hevc {
                (header >> 1) & 0x3f
            } else {
                header & 0x1f
            };
            Nal {
                kind,
                len: end - start,
            }
        })
        .collect()
}

struct VideoFixture {
    file: &'static str,
    hevc: bool,
    codec_name: &'static str,
    profile: &'static str,
}

const VIDEO_FIXTURES: [VideoFixture; 3] = [
    VideoFixture {
        file: "h264-main.h264",
        hevc: false,
        codec_name: "h264",
        profile: "Main",
    },
    VideoFixture {
        file: "h264-baseline.h264",
        hevc: false,
        codec_name: "h264",
        profile: "Constrained Baseline",
    },
    VideoFixture {
        file: "h265-main.h265",
        hevc: true,
        codec_name: "hevc",
        profile: "Main",
    },
];

// H.264 nal_unit_type (ITU-T H.264 table 7-1).
const H264_SLICE: u8 = 1;
const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_PPS: u8 = 8;
// H.265 nal_unit_type (ITU-T H.265 table 7-1).
const H265_TRAIL_R: u8 = 1;
const H265_IDR_W_RADL: u8 = 19;
const H265_IDR_N_LP: u8 = 20;
const H265_VPS: u8 = 32;
const H265_SPS: u8 = 33;
const H265_PPS: u8 = 34;

fn ffprobe_json(args: &[&str]) -> serde_json::Value {
    let out = run_bounded("ffprobe", args, TOOL_TIMEOUT).expect("ffprobe in time");
    assert!(out.status.success(), "ffprobe {args:?}: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("ffprobe JSON")
}

#[test]
fn video_fixtures_have_the_documented_stream_properties() {
    for f in &VIDEO_FIXTURES {
        let path = fixture(f.file);
        let path = path.to_str().expect("UTF-8 path");
        let probe = ffprobe_json(&[
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,profile,width,height,pix_fmt,r_frame_rate,nb_read_frames",
            "-of",
            "json",
            path,
        ]);
        let s = &probe["streams"][0];
        assert_eq!(s["codec_name"], f.codec_name, "{}", f.file);
        assert_eq!(s["profile"], f.profile, "{}", f.file);
        assert_eq!(
            (s["width"].as_u64(), s["height"].as_u64()),
            (Some(640), Some(360)),
            "{}",
            f.file
        );
        assert_eq!(s["pix_fmt"], "yuv420p", "{}", f.file);
        assert_eq!(s["r_frame_rate"], "25/1", "{}", f.file);
        assert_eq!(s["nb_read_frames"], "100", "{}: 4 s at 25 fps", f.file);

        let frames = ffprobe_json(&[
            "-v",
            "error",
            "-show_entries",
            "frame=key_frame,pict_type",
            "-of",
            "json",
            path,
        ]);
        let frames = frames["frames"].as_array().expect("frames");
        assert_eq!(frames.len(), 100, "{}", f.file);
        let keyframes: Vec<usize> = frames
            .iter()
            .enumerate()
            .filter(|(_, fr)| fr["key_frame"] == 1)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(keyframes, [0, 50], "{}: GOP of exactly 50 frames", f.file);
        let types: String = frames
            .iter()
            .map(|fr| fr["pict_type"].as_str().unwrap_or("?"))
            .collect();
        assert!(!types.contains('B'), "{}: no B-frames, got {types}", f.file);
        assert_eq!(types.matches('I').count(), 2, "{}: {types}", f.file);
    }
}

#[test]
fn video_fixtures_carry_parameter_sets_before_each_idr_and_large_nal_units() {
    for f in &VIDEO_FIXTURES {
        let data = fs::read(fixture(f.file)).expect("fixture");
        let nals = nal_units(&data, f.hevc);
        let (idr, slice, required): (&[u8], u8, &[u8]) = if f.hevc {
            (
                &[H265_IDR_W_RADL, H265_IDR_N_LP],
                H265_TRAIL_R,
                &[H265_VPS, H265_SPS, H265_PPS],
            )
        } else {
            (&[H264_IDR], H264_SLICE, &[H264_SPS, H264_PPS])
        };
        let is_vcl = |k: u8| if f.hevc { k < 32 } else { (1..=5).contains(&k) };

        // Every picture is one VCL NAL unit (single slice): 2 IDR + 98 non-IDR.
        let vcl: Vec<Nal> = nals.iter().copied().filter(|n| is_vcl(n.kind)).collect();
        assert_eq!(vcl.len(), 100, "{}", f.file);
        let idrs = vcl.iter().filter(|n| idr.contains(&n.kind)).count();
        assert_eq!(idrs, 2, "{}: keyframes are IDR (not CRA)", f.file);
        assert!(
            vcl.iter().all(|n| idr.contains(&n.kind) || n.kind == slice),
            "{}: only IDR and trailing/non-IDR slices, got {:?}",
            f.file,
            vcl.iter().map(|n| n.kind).collect::<Vec<_>>()
        );

        // In-band parameter sets: between the previous picture and each IDR.
        let mut since_last_vcl = Vec::new();
        for n in &nals {
            if idr.contains(&n.kind) {
                for p in required {
                    assert!(
                        since_last_vcl.contains(p),
                        "{}: NAL type {p} missing before an IDR (saw {since_last_vcl:?})",
                        f.file
                    );
                }
            }
            if is_vcl(n.kind) {
                since_last_vcl.clear();
            } else {
                since_last_vcl.push(n.kind);
            }
        }

        // Bigger than a 1400-byte datagram payload: must be fragmented (FU-A / FU).
        let big_idr = vcl
            .iter()
            .filter(|n| idr.contains(&n.kind) && n.len > 1400)
            .count();
        let big_other = vcl
            .iter()
            .filter(|n| n.kind == slice && n.len > 1400)
            .count();
        assert_eq!(
            big_idr, 2,
            "{}: both IDR NAL units exceed 1400 bytes",
            f.file
        );
        assert!(
            big_other >= 10,
            "{}: only {big_other} non-IDR NAL units exceed 1400 bytes",
            f.file
        );
    }
}

/// G.711 A-law code to linear sample (ITU-T G.711 table 1b), sign aside from convention.
fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i16::from(a & 0x0f);
    let mut magnitude = (mantissa << 4) + 8;
    if exponent > 0 {
        magnitude = (magnitude + 0x100) << (exponent - 1);
    }
    if a & 0x80 != 0 { magnitude } else { -magnitude }
}

#[test]
fn audio_fixture_is_four_seconds_of_a_1khz_tone_in_g711_alaw() {
    let path = fixture("audio.pcma");
    // Raw A-law has no header: 4 s at 8000 one-byte samples per second, mono.
    let bytes = fs::read(&path).expect("fixture");
    assert_eq!(bytes.len(), 32_000);
    let probe = ffprobe_json(&[
        "-v",
        "error",
        "-f",
        "alaw",
        "-sample_rate",
        "8000",
        "-ch_layout",
        "mono",
        "-show_entries",
        "stream=codec_name:format=duration",
        "-of",
        "json",
        path.to_str().expect("UTF-8 path"),
    ]);
    assert_eq!(probe["streams"][0]["codec_name"], "pcm_alaw");
    assert_eq!(probe["format"]["duration"], "4.000000");
    // A 1 kHz tone sampled at 8 kHz crosses zero 2000 times a second: this holds only
    // if the file is A-law (not µ-law or PCM) at 8 kHz.
    let samples: Vec<i16> = bytes.iter().map(|&b| alaw_to_linear(b)).collect();
    let crossings = samples
        .windows(2)
        .filter(|w| (w[0] < 0) != (w[1] < 0))
        .count();
    assert!(
        (7_900..=8_100).contains(&crossings),
        "{crossings} zero crossings in 4 s"
    );
    let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(
        peak > 2_000,
        "peak {peak}: a tone (amplitude 1/8 of full scale), not silence"
    );
}

#[test]
fn fixtures_stay_small() {
    let total: u64 = fs::read_dir(support::fixtures_dir())
        .expect("fixtures dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();
    assert!(total < 600 * 1024, "tests/fixtures holds {total} bytes");
}

// ---------------------------------------------------------------------------------------
// Ready file and ffprobe output parsing

#[test]
fn ready_file_parses_the_contract_format() {
    let ready = Ready::parse(
        r#"{"pid": 4242, "listeners": {"rtsp": "127.0.0.1:8554", "quic": "127.0.0.1:4433",
            "management": "127.0.0.1:9464", "http": "[::1]:8443"}}"#,
    )
    .expect("valid ready file");
    assert_eq!(ready.pid, 4242);
    assert_eq!(
        ready.listeners["rtsp"],
        "127.0.0.1:8554"
            .parse::<std::net::SocketAddr>()
            .expect("addr")
    );
    assert_eq!(
        ready.listeners["http"],
        "[::1]:8443".parse::<std::net::SocketAddr>().expect("addr")
    );
    assert_eq!(ready.listeners.len(), 4);

    let partial = Ready::parse(r#"{"pid": 1, "listeners": {"management": "127.0.0.1:1"}}"#)
        .expect("listeners may be absent");
    assert_eq!(partial.listeners.keys().collect::<Vec<_>>(), ["management"]);
    assert!(Ready::parse(r#"{"pid": 1, "listeners": {}}"#).is_ok());
}

#[test]
fn ready_file_parse_refuses_malformed_files() {
    for (text, why) in [
        ("", "empty (half-written)"),
        (
            r#"{"pid": 1, "listeners": {"rtsp": "127.0.0.1:85"#,
            "truncated",
        ),
        (r#"{"listeners": {}}"#, "no pid"),
        (r#"{"pid": 0, "listeners": {}}"#, "pid 0"),
        (r#"{"pid": -3, "listeners": {}}"#, "negative pid"),
        (r#"{"pid": 4294967296, "listeners": {}}"#, "pid over u32"),
        (r#"{"pid": "12", "listeners": {}}"#, "pid as a string"),
        (r#"{"pid": 1}"#, "no listeners"),
        (
            r#"{"pid": 1, "listeners": ["127.0.0.1:1"]}"#,
            "listeners not an object",
        ),
        (
            r#"{"pid": 1, "listeners": {"rtsp": "localhost:8554"}}"#,
            "a name, not an address",
        ),
        (r#"{"pid": 1, "listeners": {"rtsp": 8554}}"#, "a number"),
        (
            r#"{"pid": 1, "listeners": {"rtsp": "127.0.0.1:0"}}"#,
            "port 0 (not bound)",
        ),
    ] {
        assert!(Ready::parse(text).is_err(), "accepted {why}: {text}");
    }
}

#[test]
fn ffprobe_output_parses_into_a_report() {
    let json = r#"{"programs": [], "streams": [
        {"codec_name": "hevc", "profile": "Main", "codec_type": "video", "width": 640,
         "height": 360, "nb_read_frames": "75", "nb_read_packets": "76"},
        {"codec_name": "pcm_alaw", "codec_type": "audio", "nb_read_frames": "18",
         "nb_read_packets": "18"}]}"#;
    let report = parse_ffprobe(json, "").expect("report");
    assert_eq!(
        report,
        FfprobeReport {
            frames: 75,
            packets: 76,
            codec_name: "hevc".into(),
            profile: "Main".into(),
            width: 640,
            height: 360,
            video_streams: 1,
            audio_streams: 1,
            errors: String::new(),
        }
    );
    let audio_only = r#"{"streams": [{"codec_name": "pcm_alaw", "codec_type": "audio"}]}"#;
    assert!(parse_ffprobe(audio_only, "").is_err());
    assert!(parse_ffprobe("{}", "").is_err());
}

// ---------------------------------------------------------------------------------------
// Process handling

#[test]
fn run_bounded_captures_output_and_status() {
    let out = run_bounded(
        "/bin/sh",
        &["-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
        Duration::from_secs(10),
    )
    .expect("finishes in time");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, "to-stdout\n");
    assert_eq!(out.stderr, "to-stderr\n");
}

#[test]
fn run_bounded_kills_the_whole_group_at_the_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pid_file = dir.path().join("grandchild.pid");
    let script = format!(
        "sleep 60 & echo $! > {}; echo started; wait",
        pid_file.display()
    );
    let started = Instant::now();
    let err = run_bounded("/bin/sh", &["-c", &script], Duration::from_millis(500))
        .expect_err("must time out");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(err.contains("did not finish within"), "{err}");
    assert!(err.contains("started"), "partial stdout kept: {err}");
    let grandchild: u32 = fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(wait_gone(grandchild), "grandchild {grandchild} survived");
}

/// A stand-in for `passerelle run`, run as `/bin/bash standin.sh run -c FILE
/// --ready-file FILE`. STANDIN_MODE: `ok` (ready, exits 0 on SIGTERM), `exit` (fails
/// like a config error), `never` (never ready), `stubborn` (ready, ignores SIGTERM).
const STANDIN: &str = r#"
set -u
[ "$1" = run ] && [ "$2" = -c ] && [ -f "$3" ] && [ "$4" = --ready-file ] ||
    { echo "stand-in: unexpected arguments: $*" >&2; exit 2; }
ready=$5
mode=${STANDIN_MODE:-ok}
echo "stand-in: starting in mode $mode with config $(cat "$3")" >&2
echo "stand-in stdout"
case $mode in
    exit) echo "stand-in: site.id: missing key" >&2; exit 64 ;;
    stubborn) trap '' TERM ;;
    *) trap 'echo "stand-in: got SIGTERM" >&2; exit 0' TERM ;;
esac
sleep 600 & echo $! > grandchild.pid
if [ "$mode" != never ]; then
    printf '{"pid": %d, "listeners": {"rtsp": "127.0.0.1:8554", "management": "127.0.0.1:9464"}}' $$ > "$ready.tmp"
    mv "$ready.tmp" "$ready"
fi
while :; do wait; done
"#;

fn standin(mode: &str, dir: &Path) -> GatewayBuilder {
    let script = dir.join("standin.sh");
    fs::write(&script, STANDIN).expect("write stand-in");
    let script = script.to_str().expect("UTF-8 path").to_owned();
    GatewayBuilder::new("[site]\nstate_dir = \"@DIR@/state\"\n")
        .file("secrets/key.pem", b"not a key")
        .env("STANDIN_MODE", mode)
        .program(Path::new("/bin/bash"), &[&script])
}

fn grandchild(gateway: &Gateway) -> u32 {
    fs::read_to_string(gateway.dir().join("grandchild.pid"))
        .expect("grandchild.pid")
        .trim()
        .parse()
        .expect("pid")
}

/// Signals are asynchronous: give a killed process a moment to disappear.
fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_gone(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn gateway_waits_for_the_ready_file_and_stops_its_process_group() {
    let scripts = tempfile::tempdir().expect("temp dir");
    let mut gw = standin("ok", scripts.path()).start();
    assert_eq!(
        gw.addr("rtsp"),
        "127.0.0.1:8554"
            .parse::<std::net::SocketAddr>()
            .expect("addr")
    );
    assert_eq!(gw.rtsp_url("metz/hdv"), "rtsp://127.0.0.1:8554/metz/hdv");
    assert_eq!(
        gw.management_url("/metrics"),
        "http://127.0.0.1:9464/metrics"
    );
    assert!(gw.try_addr("quic").is_none());
    assert!(!process_gone(gw.pid()));
    // The config was written with @DIR@ replaced, and the extra file beside it.
    let config = fs::read_to_string(gw.dir().join("passerelle.toml")).expect("config");
    assert_eq!(
        config,
        format!("[site]\nstate_dir = \"{}/state\"\n", gw.dir().display())
    );
    assert_eq!(
        fs::read(gw.dir().join("secrets/key.pem")).expect("extra file"),
        b"not a key"
    );
    assert!(gw.stdout_log().contains("stand-in stdout"));
    let child = grandchild(&gw);
    let pid = gw.pid();

    let status = gw.stop();
    assert_eq!(status.code(), Some(0), "exited through its SIGTERM trap");
    assert!(
        gw.stderr_log().contains("stand-in: got SIGTERM"),
        "{}",
        gw.stderr_log()
    );
    assert!(process_gone(pid));
    assert!(
        wait_gone(child),
        "a process the gateway left behind survived stop()"
    );
    assert_eq!(
        gw.stop().code(),
        Some(0),
        "stop() again returns the same status"
    );
}

#[test]
fn gateway_dropped_kills_its_process_group() {
    let scripts = tempfile::tempdir().expect("temp dir");
    let grace = Duration::from_secs(1);
    let gw = standin("stubborn", scripts.path())
        .stop_grace(grace)
        .start();
    let (pid, child, dir) = (gw.pid(), grandchild(&gw), gw.dir().to_owned());
    let started = Instant::now();
    drop(gw);
    // SIGTERM is ignored, so the drop waits out its grace period, then SIGKILLs.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= grace && elapsed < grace + Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert!(process_gone(pid));
    assert!(wait_gone(child));
    assert!(!dir.exists(), "the temp dir is removed");
}

#[test]
fn gateway_that_exits_first_reports_its_status_and_stderr() {
    let scripts = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let Err(StartError::Exited { status, stderr }) = standin("exit", scripts.path()).try_start()
    else {
        panic!("a stand-in that exits must be reported as exited");
    };
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(64));
    assert!(stderr.contains("site.id: missing key"), "{stderr}");
}

#[test]
fn gateway_never_ready_times_out_and_is_killed() {
    let scripts = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let Err(StartError::NotReady { reason, stderr }) = standin("never", scripts.path())
        .ready_timeout(Duration::from_millis(700))
        .try_start()
    else {
        panic!("a stand-in that never writes its ready file must time out");
    };
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(reason.contains("no ready file"), "{reason}");
    assert!(stderr.contains("starting in mode never"), "{stderr}");
}

#[test]
fn gateway_restarts_in_the_same_directory() {
    let scripts = tempfile::tempdir().expect("temp dir");
    let mut gw = standin("ok", scripts.path()).start();
    let first = gw.pid();
    gw.restart().unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(gw.pid(), first);
    assert!(process_gone(first));
    assert!(gw.dir().join("stderr.1.log").exists());
    assert!(gw.stderr_log().contains("starting in mode ok"));
    assert!(
        !gw.stderr_log().contains("got SIGTERM"),
        "the new run's log only"
    );
    assert_eq!(gw.stop().code(), Some(0));
}

// ---------------------------------------------------------------------------------------
// RTSP client helpers against an independent server (gst-rtsp-server)

fn assert_live_video(report: &FfprobeReport, codec: &str, profile: &str) {
    assert_eq!(report.codec_name, codec);
    assert_eq!(report.profile, profile);
    assert_eq!((report.width, report.height), (640, 360));
    assert_eq!(report.video_streams, 1);
    // 3 s at 25 fps, every frame decoded.
    assert!((70..=90).contains(&report.frames), "{report:?}");
    assert!(report.errors.is_empty(), "decode errors: {}", report.errors);
}

#[test]
fn ffprobe_counts_frames_of_a_live_h264_stream_over_tcp_and_udp() {
    let source = RtspSource::start();
    let started = Instant::now();
    let tcp = ffprobe_count_frames(&source.url("h264-main"), Transport::Tcp, TOOL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\nsource:\n{}", source.stderr_log()));
    // The source is paced in real time: reading 3 s of stream takes about 3 s.
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    assert_live_video(&tcp, "h264", "Main");
    assert_eq!(tcp.audio_streams, 0);

    let udp = ffprobe_count_frames(&source.url("h264-baseline"), Transport::Udp, TOOL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_live_video(&udp, "h264", "Constrained Baseline");
}

#[test]
fn ffprobe_sees_h265_video_and_the_audio_track() {
    let source = RtspSource::start();
    let report = ffprobe_count_frames(&source.url("h265-main-audio"), Transport::Tcp, TOOL_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_live_video(&report, "hevc", "Main");
    assert_eq!(report.audio_streams, 1);
}

#[test]
fn ffprobe_reports_a_missing_stream_as_an_error() {
    let source = RtspSource::start();
    let err = ffprobe_count_frames(&source.url("no-such-camera"), Transport::Tcp, TOOL_TIMEOUT)
        .expect_err("404 must fail");
    assert!(err.contains("404") || err.contains("Not Found"), "{err}");
}

#[test]
fn gst_play_decodes_h264_and_h265() {
    let source = RtspSource::start();
    gst_play(
        &source.url("h264-main"),
        Codec::H264,
        Transport::Tcp,
        50,
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    gst_play(
        &source.url("h265-main-audio"),
        Codec::H265,
        Transport::Udp,
        50,
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn gst_play_fails_on_a_missing_stream_and_is_bounded() {
    let source = RtspSource::start();
    let err = gst_play(
        &source.url("no-such-camera"),
        Codec::H264,
        Transport::Tcp,
        10,
        TOOL_TIMEOUT,
    )
    .expect_err("404 must fail");
    assert!(err.contains("Not Found"), "{err}");
    // Asking for more frames than arrive within the deadline fails at the deadline.
    let started = Instant::now();
    let err = gst_play(
        &source.url("h264-main"),
        Codec::H264,
        Transport::Tcp,
        10_000,
        Duration::from_secs(3),
    )
    .expect_err("cannot decode 10000 frames in 3 s");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(err.contains("did not finish within"), "{err}");
}

// ---------------------------------------------------------------------------------------
// HTTP helper

#[test]
fn http_responses_parse_with_length_chunked_or_close() {
    let fixed = support::parse_http_response(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    )
    .expect("fixed length");
    assert_eq!((fixed.status, fixed.body.as_str()), (200, "hello"));
    assert_eq!(fixed.header("content-type"), Some("text/plain"));
    let chunked = support::parse_http_response(
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n",
    )
    .expect("chunked");
    assert_eq!((chunked.status, chunked.body.as_str()), (503, "{\"a\":1}"));
    let closed =
        support::parse_http_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").expect("close");
    assert_eq!((closed.status, closed.body.as_str()), (404, "nope"));
    assert!(
        support::parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err()
    );
    assert!(support::parse_http_response(b"HTTP/1.1 200 OK\r\n").is_err());
}

// ---------------------------------------------------------------------------------------
// The real binary

#[test]
fn real_gateway_reports_its_listeners_serves_health_and_stops_on_sigterm() {
    let mut gw = Gateway::start(support::MINIMAL_CONFIG, support::MINIMAL_FILES);
    // Every listener the binary reports is bound on the loopback address it was given.
    assert!(!gw.ready().listeners.is_empty());
    for (name, addr) in &gw.ready().listeners {
        assert!(addr.ip().is_loopback(), "{name} on {addr}");
    }
    let health = support::http_get(gw.addr("management"), "/healthz", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(health.status, 200, "{health:?}");

    let pid = gw.pid();
    let status = gw.stop();
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        gw.stderr_log()
    );
    assert!(process_gone(pid));
}

#[test]
fn real_gateway_with_a_bad_config_exits_64_naming_every_bad_key() {
    let config = support::MINIMAL_CONFIG
        .replace("retention_days = 183", "retention_days = \"six months\"")
        .replace("[management]", "[management]\nlisen = \"127.0.0.1:0\"");
    let started = Instant::now();
    let Err(StartError::Exited { status, stderr }) =
        Gateway::try_start(&config, support::MINIMAL_FILES)
    else {
        panic!("a bad configuration must make `run` exit before it is ready");
    };
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("audit.retention_days"), "{stderr}");
    assert!(stderr.contains("management.lisen"), "{stderr}");
}
