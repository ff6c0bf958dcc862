//! SIGHUP with a renewed certificate: the CSU's certificate is renewed (same CA, new
//! key, new validity) and the CSU reloads it while an operator watches an SNCF camera
//! through it. The stream keeps playing on the link established under the old
//! certificate; a partner connecting after the reload (the CCOR) is shown the new one.

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use passerelle::demo::{CSU, MetzKit, Receivers};
use passerelle::pki::{self, Validity};
use serde_json::Value;
use support::metz::{loopback_listeners, start_site, wait_for_log_line};
use support::watch::{Watcher, journal_records};
use support::{Gateway, http_get};

const CAMERA: &str = "sncf/metz-ville/quai-1";

/// SHA-256 (hex) of the DER of the first certificate of a PEM text.
fn fingerprint(pem: &str) -> String {
    let base64: String = pem
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .expect("PEM body");
    passerelle::tls::sha256_hex(&der)
}

/// The `certificate_sha256` of `site`'s journal records of links up with `peer`.
fn link_up_fingerprints(site: &Gateway, peer: &str) -> Vec<String> {
    journal_records(site)
        .iter()
        .filter(|record| record["kind"] == "link_up" && record["peer"] == peer)
        .filter_map(|record| record["certificate_sha256"].as_str().map(str::to_owned))
        .collect()
}

/// Waits (bounded) for a journal record of `site` matching `wanted`.
fn wait_for_record(site: &Gateway, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(record) = journal_records(site).into_iter().find(|r| wanted(r)) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} in the journal; log:\n{}",
            site.stderr_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// When `site`'s link with `peer` came up, from its management API.
fn link_since(site: &Gateway, peer: &str) -> String {
    let response = http_get(
        site.addr("management"),
        "/api/v1/links",
        Duration::from_secs(5),
    )
    .expect("links");
    let body: Value = serde_json::from_str(&response.body).expect("JSON");
    let link = body["links"]
        .as_array()
        .and_then(|links| links.iter().find(|link| link["peer"] == peer))
        .unwrap_or_else(|| panic!("no link with {peer}: {body}"));
    assert_eq!(link["state"], "up", "{body}");
    link["since"].as_str().expect("since").to_owned()
}

/// Replaces a file at once (a reload never reads half of it).
fn replace(path: &std::path::Path, bytes: &[u8]) {
    let staging = path.with_extension("new");
    std::fs::write(&staging, bytes).expect("write");
    std::fs::rename(&staging, path).expect("rename");
}

#[test]
fn sighup_with_a_renewed_certificate_keeps_the_stream_and_new_links_see_the_new_one() {
    let kit = MetzKit::new().expect("kit");
    let receivers = Receivers::new().expect("receivers");
    let camsim = Gateway::camsim(&[]);
    let sncf = start_site(
        &kit.sncf(loopback_listeners(), camsim.addr("rtsp"))
            .expect("sncf"),
        &[],
    );
    let csu_files = kit
        .csu_hub(
            loopback_listeners(),
            sncf.addr("quic"),
            camsim.addr("rtsp"),
            &receivers,
            None,
        )
        .expect("csu");
    let csu = start_site(&csu_files, &[]);
    wait_for_log_line(&csu, "CSU", |l| {
        l.contains("partner catalog received") && !l.contains("cameras=0")
    });
    let old = csu_files
        .files
        .iter()
        .find(|(path, _)| path == "tls/site.pem")
        .map(|(_, pem)| fingerprint(&String::from_utf8_lossy(pem)))
        .expect("the CSU's certificate");
    wait_for_record(&sncf, "link up with the CSU", |r| {
        r["kind"] == "link_up" && r["peer"] == CSU
    });
    assert_eq!(link_up_fingerprints(&sncf, CSU), vec![old.as_str()]);
    let sncf_link_since = link_since(&sncf, CSU);

    // An operator watches an SNCF camera through the CSU.
    let (user, password) = passerelle::demo::CSU_OPERATOR;
    let url = format!("rtsp://{user}:{password}@{}/{CAMERA}", csu.addr("rtsp"));
    let viewer = Watcher::start(&url);
    viewer.wait_for(25, Duration::from_secs(20));

    // The certificate is renewed from the same CA, then SIGHUP.
    let validity = Validity::days_from(jiff::Timestamp::now(), 30).expect("validity");
    let renewed = pki::issue_pem(
        kit.eurometropole_ca(),
        &CSU.parse().expect("site id"),
        validity,
    )
    .expect("renewed certificate");
    let new = fingerprint(&renewed.cert_pem);
    assert_ne!(new, old);
    replace(&csu.dir().join("tls/site.key"), renewed.key_pem.as_bytes());
    replace(&csu.dir().join("tls/site.pem"), renewed.cert_pem.as_bytes());
    let at_reload = viewer.count();
    csu.signal("HUP");
    let reloaded = wait_for_record(&csu, "tls_reloaded", |r| {
        r["kind"] == "tls_reloaded" && r["item"] == "certificate"
    });
    assert_eq!(reloaded["sha256"], new.as_str(), "{reloaded}");
    assert!(reloaded.get("error").is_none(), "{reloaded}");

    // The stream keeps playing, on the same link.
    viewer.wait_for(at_reload + 50, Duration::from_secs(10));
    assert_eq!(
        link_since(&sncf, CSU),
        sncf_link_since,
        "the SNCF link was re-established"
    );
    assert_eq!(link_up_fingerprints(&sncf, CSU), vec![old.as_str()]);

    // A partner connecting now is shown the renewed certificate.
    let ccor = start_site(
        &receivers
            .ccor(&kit, loopback_listeners(), csu.addr("quic"))
            .expect("ccor"),
        &[],
    );
    wait_for_record(&ccor, "link up with the CSU", |r| {
        r["kind"] == "link_up" && r["peer"] == CSU
    });
    assert_eq!(link_up_fingerprints(&ccor, CSU), vec![new.as_str()]);
    println!(
        "CSU certificate {old} renewed as {new}; the SNCF link kept the old one, the CCOR saw the new one"
    );
    // And the viewer is still watching.
    let now = viewer.count();
    viewer.wait_for(now + 25, Duration::from_secs(10));
}

/// A user added to the file while the CSU runs: refused before SIGHUP, plays over RTSP
/// and reads the API after it; a change SIGHUP cannot apply is named in the log.
#[test]
fn sighup_adds_a_user_and_names_the_sections_that_need_a_restart() {
    let chain = support::metz::Chain::start(&[]);
    let url = format!(
        "rtsp://nouveau:mot-de-passe@{}/{CAMERA}",
        chain.csu.addr("rtsp")
    );
    let refused =
        support::ffprobe_count_frames(&url, support::Transport::Tcp, Duration::from_secs(20))
            .expect_err("an unknown user is refused");
    assert!(refused.contains("401"), "{refused}");

    let dir = chain.csu.dir();
    std::fs::write(dir.join("secrets/nouveau.password"), "mot-de-passe").unwrap();
    std::fs::write(
        dir.join("secrets/nouveau.token"),
        "nouveau-token-0123456789abcdef",
    )
    .unwrap();
    let config = dir.join("passerelle.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("[rtsp]\n", "[rtsp]\nsession_timeout = \"45s\"\n")
        + "\n[[user]]\nname = \"nouveau\"\nkind = \"agent\"\npassword_file = \"secrets/nouveau.password\"\ntoken_file = \"secrets/nouveau.token\"\ncameras = [\"sncf/**\"]\n";
    std::fs::write(&config, text).unwrap();
    chain.csu.signal("HUP");
    wait_for_log_line(&chain.csu, "CSU", |line| {
        line.contains("RTSP users reloaded")
    });
    let warned = wait_for_log_line(&chain.csu, "CSU", |line| {
        line.contains("only a restart applies it")
    });
    assert!(warned.contains("rtsp"), "{warned}");

    let report =
        support::ffprobe_count_frames(&url, support::Transport::Tcp, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("the new user plays after SIGHUP: {e}"));
    assert!(report.frames >= 50, "{report:?}");
    let api = support::http_request(
        chain.csu.addr("http"),
        "GET",
        "/api/v1/site",
        &[("Authorization", "Bearer nouveau-token-0123456789abcdef")],
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(api.status, 200, "{}", api.body);
}

/// `/readyz` is about this box: with an expired policy nothing crosses, yet the gateway
/// stays ready (its own site's viewers still watch), and the body says why.
#[test]
fn readyz_stays_ready_with_an_expired_policy_and_says_so() {
    let expired = passerelle::demo::sncf_policy()
        .replace(
            "valid_from = 2026-01-01T00:00:00Z",
            "valid_from = 2025-01-01T00:00:00Z",
        )
        .replace(
            "valid_until = 2099-12-31T23:59:59Z",
            "valid_until = 2025-12-31T23:59:59Z",
        );
    assert!(expired.contains("valid_until = 2025-12-31"), "{expired}");
    let kit = MetzKit::new().expect("kit");
    let camsim = Gateway::camsim(&[]);
    let mut sncf_files = kit
        .sncf(loopback_listeners(), camsim.addr("rtsp"))
        .expect("sncf");
    kit.replace_policy(&mut sncf_files, &expired, true)
        .expect("policy");
    let sncf = start_site(&sncf_files, &[]);
    let ready =
        http_get(sncf.addr("management"), "/readyz", Duration::from_secs(5)).expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let body: Value = serde_json::from_str(&ready.body).expect("json");
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["details"]["policy"]["state"], "expired", "{body}");
    assert_eq!(
        body["details"]["policy"]["valid_until"],
        "2025-12-31T23:59:59Z"
    );
}
