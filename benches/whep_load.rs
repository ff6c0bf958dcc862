//! Load harness for the WHEP egress: one camera of the camera simulator, served by a real
//! `passerelle` process to N webrtc-rs viewers (`passerelle::webrtc::client`) running in
//! this process, on loopback.
//!
//! For each N it starts the simulator and a fresh gateway, connects the N viewers one
//! after the other, lets them play 2 s, then measures over a window (10 s): packets per
//! second received by each viewer (min and median), the camera's packet rate into the
//! channel, the gateway's CPU (utime + stime from `/proc/<pid>/stat`, % of one core) and
//! RSS, this process's CPU (the viewers) and the machine's load. Every viewer must have
//! received packets; min against median says whether all of them kept up.
//!
//! Run: `cargo bench --bench whep_load` (N = 1 10 50 100), or
//! `cargo bench --bench whep_load -- 1 10` for other counts.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use passerelle::demo::MetzKit;
use passerelle::webrtc::client::{ClientOffer, WhepClient};
use support::Gateway;
use support::metz::{label, loopback_listeners, metric, metrics, start_site};

const CAMERA: &str = "metz-ville/quai-1";
const TOKEN: &str = "load-agent-token-0123456789abcdef";
const WARM_UP: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(10);
/// WebRTC ports for the gateway: enough for the largest N.
const WEBRTC_PORTS: &str = "60000-60499";

struct Row {
    viewers: usize,
    setup: Duration,
    min_pps: f64,
    median_pps: f64,
    camera_pps: f64,
    server_cpu: f64,
    server_rss_mb: f64,
    client_cpu: f64,
    load: String,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; test runners (`cargo test --all-targets`,
    // nextest's `--list`) do not: the harness measures only when asked to.
    if !args.iter().any(|arg| arg == "--bench") {
        return;
    }
    let counts: Vec<usize> = args.iter().filter_map(|arg| arg.parse().ok()).collect();
    let counts = if counts.is_empty() {
        vec![1, 10, 50, 100]
    } else {
        counts
    };
    println!(
        "| viewers | set-up, all (sequential) | min packets/s per viewer | median | camera packets/s in (before re-split) | gateway CPU (% of one core) | gateway RSS | viewers' process CPU | load average (1 min) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for n in counts {
        let row = measure(n);
        println!(
            "| {} | {:.0} ms | {:.1} | {:.1} | {:.1} | {:.1} % | {:.0} MB | {:.1} % | {} |",
            row.viewers,
            row.setup.as_secs_f64() * 1000.0,
            row.min_pps,
            row.median_pps,
            row.camera_pps,
            row.server_cpu,
            row.server_rss_mb,
            row.client_cpu,
            row.load
        );
    }
}

fn measure(n: usize) -> Row {
    let kit = MetzKit::new().expect("kit");
    let camsim = Gateway::camsim(&[]);
    let mut site = kit
        .sncf(loopback_listeners(), camsim.addr("rtsp"))
        .expect("sncf");
    let webrtc = site.config.find("[webrtc]\n").expect("[webrtc] section");
    let end = site.config[webrtc..]
        .find("\n\n")
        .map_or(site.config.len(), |i| webrtc + i);
    site.config.replace_range(
        webrtc..end,
        &format!(
            "[webrtc]\nudp_ports = \"{WEBRTC_PORTS}\"\nmax_sessions = {}",
            n + 10
        ),
    );
    site.files.push((
        "secrets/load.token".into(),
        format!("{TOKEN}\n").into_bytes(),
    ));
    site.config.push_str(
        "\n[[user]]\nname = \"load\"\nkind = \"agent\"\ntoken_file = \"secrets/load.token\"\ncameras = [\"**\"]\n",
    );
    let gateway = start_site(&site, &[]);
    let http = gateway.addr("http");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let offer = ClientOffer::chromium();
    let started = Instant::now();
    let viewers: Vec<WhepClient> = rt.block_on(async {
        let mut viewers = Vec::with_capacity(n);
        for _ in 0..n {
            let viewer = WhepClient::connect(http, CAMERA, TOKEN, &offer)
                .await
                .expect("viewer");
            viewers.push(viewer);
        }
        viewers
    });
    let setup = started.elapsed();
    rt.block_on(async {
        for viewer in &viewers {
            assert!(
                viewer.wait_for_packets(1, Duration::from_secs(30)).await,
                "a viewer got nothing: {:?}",
                viewer.stats()
            );
        }
    });
    std::thread::sleep(WARM_UP);

    let pid = gateway.pid();
    let ingest = || {
        metric(
            &metrics(&gateway),
            "passerelle_ingest_packets_total",
            &[&label("camera", CAMERA)],
        )
        .unwrap_or(0.0)
    };
    let before: Vec<u64> = viewers.iter().map(|v| v.stats().packets).collect();
    let (server_before, client_before, ingest_before) = (cpu_ticks(pid), own_cpu_ticks(), ingest());
    let window_start = Instant::now();
    std::thread::sleep(WINDOW);
    let elapsed = window_start.elapsed().as_secs_f64();
    let (server_after, client_after, ingest_after) = (cpu_ticks(pid), own_cpu_ticks(), ingest());
    let mut rates: Vec<f64> = viewers
        .iter()
        .zip(&before)
        .map(|(v, b)| (v.stats().packets - b) as f64 / elapsed)
        .collect();
    rates.sort_by(f64::total_cmp);
    let rss = rss_kib(pid) as f64 / 1024.0;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    rt.block_on(async {
        for viewer in viewers {
            let _ = viewer.close().await;
        }
    });
    drop(gateway);
    drop(camsim);
    let ticks = ticks_per_second();
    Row {
        viewers: n,
        setup,
        min_pps: rates[0],
        median_pps: rates[rates.len() / 2],
        camera_pps: (ingest_after - ingest_before) / elapsed,
        server_cpu: (server_after - server_before) as f64 / ticks / elapsed * 100.0,
        server_rss_mb: rss,
        client_cpu: (client_after - client_before) as f64 / ticks / elapsed * 100.0,
        load,
    }
}

/// utime + stime of `pid`, in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The command name (field 2) may hold spaces: count fields after its closing ')'.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

fn own_cpu_ticks() -> u64 {
    cpu_ticks(std::process::id())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn ticks_per_second() -> f64 {
    // USER_HZ: 100 on every Linux architecture passerelle targets (getconf CLK_TCK).
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok());
    out.unwrap_or(100.0)
}
