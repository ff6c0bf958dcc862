//! The Metz sites of `passerelle::demo` started as real gateways, and what tests read
//! from them: metrics series and log lines, polled with deadlines.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use passerelle::demo::{CSU_OPERATOR, Listeners, MetzKit, SiteFiles};

use super::{Gateway, http_get};

/// How long a refusal, a metric or a log line may take to show.
pub const SHOW_TIMEOUT: Duration = Duration::from_secs(10);

/// Every listener on a loopback port the system chooses.
pub fn loopback_listeners() -> Listeners {
    listeners_on(std::net::Ipv4Addr::LOCALHOST.into())
}

/// Every listener on `host`, ports chosen by the system.
pub fn listeners_on(host: std::net::IpAddr) -> Listeners {
    let any = SocketAddr::new(host, 0);
    Listeners {
        rtsp: any,
        quic: any,
        management: any,
        http: any,
        // A random range per gateway, so parallel tests rarely meet; the server skips
        // ports that are taken anyway.
        rtsp_udp_first: 33_000 + (rand::random::<u16>() % 250) * 100,
    }
}

/// An edit for [`Chain::start_with`]: DESIGN.md's first SNCF grant (Metz Ville and Metz
/// Nord) on request, signed, instead of the demo's `live`.
pub fn sncf_on_request(kit: &MetzKit, sncf: &mut SiteFiles) {
    let policy = passerelle::demo::sncf_policy();
    let on_request = policy.replacen("mode = \"live\"", "mode = \"on_request\"", 1);
    assert_ne!(on_request, policy, "the SNCF policy has a live grant");
    kit.replace_policy(sncf, &on_request, true).expect("policy");
}

/// Starts a site's gateway with `env` (`PASSERELLE__*` overrides) set.
pub fn start_site(site: &SiteFiles, env: &[(&str, &str)]) -> Gateway {
    let files: Vec<(&str, &[u8])> = site
        .files
        .iter()
        .map(|(path, bytes)| (path.as_str(), bytes.as_slice()))
        .collect();
    env.iter()
        .fold(Gateway::builder(&site.config, &files), |b, (k, v)| {
            b.env(k, v)
        })
        .start()
}

/// The gateway's Prometheus exposition.
pub fn metrics(gateway: &Gateway) -> String {
    http_get(
        gateway.addr("management"),
        "/metrics",
        Duration::from_secs(5),
    )
    .expect("metrics")
    .body
}

/// `name="value"`, as a series' labels spell it.
pub fn label(name: &str, value: &str) -> String {
    format!("{name}=\"{value}\"")
}

/// The value of the first series of `name` whose labels contain every `label`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| {
            line[name.len()..].starts_with(['{', ' ']) && labels.iter().all(|l| line.contains(l))
        })
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

/// The sum of every series of `name` whose labels contain every `label` (0 if none).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| {
            line[name.len()..].starts_with(['{', ' ']) && labels.iter().all(|l| line.contains(l))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (bounded) until the series exists with a value of at least 1; returns it.
pub fn wait_for_metric(gateway: &Gateway, name: &str, labels: &[&str]) -> f64 {
    let deadline = Instant::now() + SHOW_TIMEOUT;
    loop {
        let text = metrics(gateway);
        match metric(&text, name, labels) {
            Some(value) if value >= 1.0 => return value,
            _ if Instant::now() >= deadline => {
                panic!("no {name}{labels:?} >= 1 within {SHOW_TIMEOUT:?}:\n{text}")
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Waits (bounded) for the first stderr line of `gateway` matching `wanted`; returns it.
pub fn wait_for_log_line(gateway: &Gateway, who: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + SHOW_TIMEOUT;
    loop {
        let log = gateway.stderr_log();
        if let Some(line) = log.lines().find(|l| wanted(l)) {
            return line.trim().to_owned();
        }
        if Instant::now() >= deadline {
            panic!("{who}: the expected line never came within {SHOW_TIMEOUT:?}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The demo's chain on loopback: camsim → SNCF → CSU.
pub struct Chain {
    pub kit: MetzKit,
    pub camsim: Gateway,
    pub sncf: Gateway,
    pub csu: Gateway,
    pub csu_files: SiteFiles,
}

impl Chain {
    /// The chain with `env` (`PASSERELLE__*` overrides) on both gateways; returns once
    /// the CSU has the SNCF's catalog.
    pub fn start(env: &[(&str, &str)]) -> Chain {
        Chain::start_with(env, |_, _| {}, |_| {})
    }

    /// As [`Chain::start`], each site's files edited before it starts.
    pub fn start_with(
        env: &[(&str, &str)],
        edit_sncf: impl FnOnce(&MetzKit, &mut SiteFiles),
        edit_csu: impl FnOnce(&mut SiteFiles),
    ) -> Chain {
        let kit = MetzKit::new().expect("kit");
        let camsim = Gateway::camsim(&[]);
        let mut sncf_files = kit
            .sncf(loopback_listeners(), camsim.addr("rtsp"))
            .expect("sncf");
        edit_sncf(&kit, &mut sncf_files);
        let sncf = start_site(&sncf_files, env);
        let mut csu_files = kit
            .csu(loopback_listeners(), sncf.addr("quic"))
            .expect("csu");
        edit_csu(&mut csu_files);
        let csu = start_site(&csu_files, env);
        wait_for_log_line(&csu, "CSU", |l| {
            l.contains("partner catalog received") && !l.contains("cameras=0")
        });
        Chain {
            kit,
            camsim,
            sncf,
            csu,
            csu_files,
        }
    }

    /// The CSU operator's RTSP URL of `camera` (our id, `sncf/...` for SNCF cameras).
    pub fn csu_url(&self, camera: &str) -> String {
        let (user, password) = CSU_OPERATOR;
        format!(
            "rtsp://{user}:{password}@{}/{camera}",
            self.csu.addr("rtsp")
        )
    }
}
