//! Security negatives with the real binary: peers refused for their certificate (another
//! CA, a name no partner has, a partner's name from another partner's CA) and policies
//! that grant nothing (signature that does not verify, policy for another site). Each
//! test shows the refusal where the refusing gateway reports it (log, metrics), then
//! that nothing crosses: the CSU answers 404 for the SNCF cameras and the SNCF's
//! forwarded counters stay absent.
//!
//! Each test prints what was refused and how it showed, for the project's closing note.

mod support;

use std::time::Duration;

use passerelle::demo::{self, CSU, CSU_OPERATOR, MetzKit, SNCF, SiteFiles};
use passerelle::policy::{Policy, SigningKey, policy_trusted_comment};
use support::metz::{
    label, loopback_listeners, metric, metric_sum, metrics, start_site, wait_for_log_line,
    wait_for_metric,
};
use support::{Gateway, Transport, ffprobe_count_frames, http_get};

/// How long a refusal, a link or a catalog may take to show. A dial to loopback and its
/// refusal take well under a second; the margin covers a loaded 2-core machine.
/// Deadline of one RTSP client run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// The CCOR, a second partner of the SNCF in the wrong-CA test.
const CCOR: &str = "ccor.metz.example";
/// A site the Eurométropole CA certifies but no gateway has as a partner.
const INTRUS: &str = "intrus.metz.example";
/// A local agent of the SNCF, for playing its cameras on its own RTSP listener.
const SNCF_AGENT: (&str, &str) = ("agent-sncf", "local-secret");

#[test]
fn a_peer_certified_by_an_unrelated_ca_is_refused_at_the_handshake() {
    let kit = MetzKit::new().expect("kit");
    let camsim = Gateway::camsim(&[]);
    let mut sncf = start_site(
        &kit.sncf(loopback_listeners(), camsim.addr("rtsp"))
            .expect("sncf"),
        &[],
    );
    let mut csu_files = kit
        .csu(loopback_listeners(), sncf.addr("quic"))
        .expect("csu");
    let stranger_ca = MetzKit::other_ca("autre-organisation").expect("other CA");
    demo::reissue_site(&mut csu_files, &stranger_ca, CSU).expect("csu certificate");
    let csu = start_site(&csu_files, &[]);

    let refused = wait_for_log_line(&sncf, "SNCF", |l| {
        l.contains("inbound QUIC handshake failed")
    });
    // The SNCF refused the CSU's certificate in the TLS handshake (unknown issuer).
    assert!(refused.contains("UnknownIssuer"), "{refused}");
    assert!(
        refused.contains(&format!("remote={}", csu.addr("quic"))),
        "{refused}"
    );
    let dial_failed = wait_for_log_line(&csu, "CSU", |l| l.contains("dialling partner failed"));
    assert_no_link(&sncf, CSU);
    assert_no_link(&csu, SNCF);

    // Refused in the TLS handshake itself, before `identify_peer`, and counted.
    let denied = wait_for_metric(
        &sncf,
        "passerelle_access_denied_total",
        &[
            &label("peer", "unknown"),
            &label("reason", "handshake_failed"),
        ],
    );
    let sncf_metrics = metrics(&sncf);
    assert_nothing_crosses(&sncf, &csu);
    println!(
        "REFUSED peer with a certificate from an unrelated CA (csu.metz.example issued by \
         `autre-organisation`)\n  SNCF log: {refused}\n  CSU log: {dial_failed}\n  \
         SNCF passerelle_access_denied_total{{reason=\"handshake_failed\"}} = {denied}\n  \
         SNCF passerelle_peer_connected{{peer=csu}}: {:?}\n  \
         CSU 404 for every SNCF camera; SNCF passerelle_forwarded_packets_total absent",
        metric(
            &sncf_metrics,
            "passerelle_peer_connected",
            &[&label("peer", CSU)]
        ),
    );
    // Refused handshakes reach the journal, aggregated per minute (flushed at stop).
    sncf.stop();
    let aggregated = support::watch::journal_records(&sncf)
        .into_iter()
        .find(|r| r["kind"] == "auth_failures" && r["what"] == "handshake")
        .unwrap_or_else(|| panic!("no aggregated handshake refusals in the SNCF journal"));
    assert!(
        aggregated["count"].as_u64().is_some_and(|n| n >= 1),
        "{aggregated}"
    );
    println!("  SNCF journal: {aggregated}");
}

#[test]
fn a_peer_from_the_right_ca_naming_no_partner_is_refused_before_any_control_message() {
    let kit = MetzKit::new().expect("kit");
    let camsim = Gateway::camsim(&[]);
    let sncf = start_site(
        &kit.sncf(loopback_listeners(), camsim.addr("rtsp"))
            .expect("sncf"),
        &[],
    );
    // The CSU's configuration, but as `intrus.metz.example` with a certificate from the
    // Eurométropole CA, which the SNCF trusts for the CSU.
    let mut intrus_files = kit
        .csu(loopback_listeners(), sncf.addr("quic"))
        .expect("intrus");
    demo::reissue_site(&mut intrus_files, kit.eurometropole_ca(), INTRUS)
        .expect("intrus certificate");
    let intrus = start_site(&intrus_files, &[]);

    let refused = wait_for_log_line(&sncf, "SNCF", |l| {
        l.contains("inbound link refused") && l.contains("unknown_peer")
    });
    assert!(
        refused.contains(INTRUS),
        "the refusal names the peer: {refused}"
    );
    let denied = wait_for_metric(
        &sncf,
        "passerelle_access_denied_total",
        &[&label("peer", "unknown"), &label("reason", "unknown_peer")],
    );
    // Before any control message: a dialler logs "link up" as soon as it has the other
    // side's Hello, and the intruder never does; it only sees its dial fail.
    // The dialler is told why: the refusal's close code, not a lost connection.
    let dial_failed = wait_for_log_line(&intrus, "intrus", |l| {
        l.contains("dialling partner failed") && l.contains("refused the link: unknown_peer")
    });
    assert_no_link(&sncf, INTRUS);
    assert_no_link(&intrus, SNCF);
    assert!(
        !intrus.stderr_log().contains("partner catalog"),
        "{}",
        intrus.stderr_log()
    );
    assert_nothing_crosses(&sncf, &intrus);
    println!(
        "REFUSED peer from the Eurométropole CA naming no partner ({INTRUS})\n  SNCF log: \
         {refused}\n  intrus log: {dial_failed}\n  SNCF \
         passerelle_access_denied_total{{peer=\"unknown\",reason=\"unknown_peer\"}} = \
         {denied}\n  intrus 404 for every SNCF camera; SNCF \
         passerelle_forwarded_packets_total absent"
    );
}

#[test]
fn a_partners_name_certified_by_another_partners_ca_is_refused_as_wrong_ca() {
    let kit = MetzKit::new().expect("kit");
    let camsim = Gateway::camsim(&[]);
    let ccor_ca = MetzKit::other_ca("ccor").expect("CCOR CA");
    let mut sncf_files = kit
        .sncf(loopback_listeners(), camsim.addr("rtsp"))
        .expect("sncf");
    sncf_files.config.push_str(&format!(
        "\n[[partner]]\nid = \"{CCOR}\"\nca = \"tls/partner-ccor-ca.pem\"\n"
    ));
    sncf_files.files.push((
        "tls/partner-ccor-ca.pem".into(),
        ccor_ca.cert_pem.clone().into_bytes(),
    ));
    let sncf = start_site(&sncf_files, &[]);
    let mut csu_files = kit
        .csu(loopback_listeners(), sncf.addr("quic"))
        .expect("csu");
    demo::reissue_site(&mut csu_files, &ccor_ca, CSU).expect("csu certificate");
    let csu = start_site(&csu_files, &[]);

    let refused = wait_for_log_line(&sncf, "SNCF", |l| {
        l.contains("inbound link refused") && l.contains("wrong_ca")
    });
    assert!(
        refused.contains(CSU),
        "the refusal names the partner: {refused}"
    );
    let denied = wait_for_metric(
        &sncf,
        "passerelle_access_denied_total",
        &[&label("peer", CSU), &label("reason", "wrong_ca")],
    );
    let dial_failed = wait_for_log_line(&csu, "CSU", |l| l.contains("dialling partner failed"));
    assert_no_link(&sncf, CSU);
    assert_no_link(&csu, SNCF);
    assert_nothing_crosses(&sncf, &csu);

    // Control: the same two-partner SNCF links a CSU certified by the Eurométropole CA,
    // so the refusal above was the CA's doing and nothing else.
    let genuine = start_site(
        &kit.csu(loopback_listeners(), sncf.addr("quic"))
            .expect("csu"),
        &[],
    );
    let catalog = wait_for_log_line(&genuine, "genuine CSU", |l| {
        l.contains("partner catalog received")
    });
    assert!(catalog.contains("cameras=6"), "{catalog}");
    println!(
        "REFUSED {CSU} certified by the CCOR's CA (SNCF partners: CSU with the \
         Eurométropole CA, CCOR with its own)\n  SNCF log: {refused}\n  CSU log: \
         {dial_failed}\n  SNCF passerelle_access_denied_total{{peer=\"{CSU}\",\
         reason=\"wrong_ca\"}} = {denied}\n  control, same SNCF with the genuine CSU: \
         {catalog}"
    );
}

#[test]
fn a_tampered_policy_grants_nothing_and_local_viewing_goes_on() {
    let evidence = fail_closed(|_, sncf| {
        // Someone with write access to the policy file adds the control room after
        // signing.
        let policy = file_mut(sncf, "policy/policy.toml");
        policy.extend_from_slice(
            format!(
                "\n[[grant]]\npartner = \"{CSU}\"\ncameras = [\"poste-de-commande/**\"]\n\
                 mode = \"live\"\nbasis = \"ajout frauduleux\"\n"
            )
            .as_bytes(),
        );
    });
    println!("REFUSED policy tampered after signing\n{evidence}");
}

#[test]
fn a_policy_signed_by_an_untrusted_key_grants_nothing_and_local_viewing_goes_on() {
    let evidence = fail_closed(|_, sncf| {
        // A well-formed signature, by a key the SNCF's configuration does not trust.
        let rogue = SigningKey::generate().expect("rogue key");
        let text =
            String::from_utf8(file_mut(sncf, "policy/policy.toml").clone()).expect("policy text");
        let policy = Policy::parse(&text).expect("policy parses");
        let comment =
            policy_trusted_comment(&policy, "policy.toml", jiff::Timestamp::now().as_second());
        let signature = rogue.sign(text.as_bytes(), &comment).expect("sign");
        *file_mut(sncf, "policy/policy.toml.minisig") = signature.into_bytes();
    });
    println!("REFUSED policy signed by an untrusted key\n{evidence}");
}

#[test]
fn a_correctly_signed_policy_for_another_site_grants_nothing_and_local_viewing_goes_on() {
    let evidence = fail_closed(|kit, sncf| {
        let other_site = demo::sncf_policy()
            .replace(&format!("site = \"{SNCF}\""), &format!("site = \"{CCOR}\""));
        assert_ne!(other_site, demo::sncf_policy());
        kit.replace_policy(sncf, &other_site, true)
            .expect("signed policy");
    });
    println!("REFUSED policy signed by the SNCF's key but naming {CCOR}\n{evidence}");
}

// ---------------------------------------------------------------------------------------
// Fail-closed policies

/// Starts the chain with the SNCF's files changed by `spoil`, and a local agent at the
/// SNCF; checks the SNCF refused its policy, still serves its own agent, and shares
/// nothing with the CSU. Returns the evidence to print.
fn fail_closed(spoil: impl FnOnce(&MetzKit, &mut SiteFiles)) -> String {
    let kit = MetzKit::new().expect("kit");
    let camsim = Gateway::camsim(&[]);
    let mut sncf_files = kit
        .sncf(loopback_listeners(), camsim.addr("rtsp"))
        .expect("sncf");
    spoil(&kit, &mut sncf_files);
    add_local_agent(&mut sncf_files);
    let sncf = start_site(&sncf_files, &[]);
    let refused = wait_for_log_line(&sncf, "SNCF", |l| l.contains("policy refused"));
    assert!(
        !sncf.stderr_log().contains("policy applied"),
        "{}",
        sncf.stderr_log()
    );
    // Counted, and no serial exported: no policy is in force.
    let sncf_metrics = metrics(&sncf);
    let failures = metric_sum(
        &sncf_metrics,
        "passerelle_policy_reload_failures_total",
        &[],
    );
    assert!(failures >= 1.0, "{sncf_metrics}");
    assert_eq!(
        metric(&sncf_metrics, "passerelle_policy_serial", &[]),
        None,
        "{sncf_metrics}"
    );
    // Still ready for its own site: the refusal is in /readyz's body, not its status.
    let ready =
        http_get(sncf.addr("management"), "/readyz", Duration::from_secs(5)).expect("readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let body: serde_json::Value = serde_json::from_str(&ready.body).expect("json");
    assert_eq!(body["details"]["policy"]["state"], "none", "{body}");
    assert!(
        body["details"]["policy"]["last_refusal"]["reason"].is_string(),
        "{body}"
    );

    let csu = start_site(
        &kit.csu(loopback_listeners(), sncf.addr("quic"))
            .expect("csu"),
        &[],
    );
    // The certificates are right, so the link may come up (it does today), but then with
    // an empty catalog; a gateway refusing links without a policy would be fine too.
    let catalog = wait_for_log_line(&csu, "CSU", |l| {
        l.contains("partner catalog received") || l.contains("dialling partner failed")
    });
    if catalog.contains("partner catalog received") {
        assert!(catalog.contains("cameras=0"), "{catalog}");
    }

    // Local viewing goes on at the SNCF: its own agent plays a station camera.
    let (user, password) = SNCF_AGENT;
    let local_url = format!(
        "rtsp://{user}:{password}@{}/metz-ville/quai-1",
        sncf.addr("rtsp")
    );
    let local = ffprobe_count_frames(&local_url, Transport::Tcp, CLIENT_TIMEOUT)
        .unwrap_or_else(|e| panic!("local play at the SNCF: {e}\n{}", sncf.stderr_log()));
    assert!(local.frames >= 25, "{local:?}");

    assert_nothing_crosses(&sncf, &csu);
    // The forwarded counters work: the local viewing shows under `peer="local"`, so
    // their absence for the CSU is no accident of the exporter.
    let local_forwarded = metric(
        &metrics(&sncf),
        "passerelle_forwarded_packets_total",
        &[&label("peer", "local")],
    );
    assert!(
        local_forwarded.is_some_and(|n| n > 0.0),
        "{local_forwarded:?}"
    );
    let csu_metrics = metrics(&csu);
    let connected = metric(
        &csu_metrics,
        "passerelle_peer_connected",
        &[&label("peer", SNCF)],
    );
    format!(
        "  SNCF log: {refused}\n  SNCF passerelle_policy_reload_failures_total = \
         {failures:?}, passerelle_policy_serial absent\n  CSU log: {catalog}\n  CSU \
         passerelle_peer_connected{{peer=\"{SNCF}\"}} = {connected:?} (the link may be up)\n  \
         SNCF local agent played metz-ville/quai-1: {} frames, SNCF \
         passerelle_forwarded_packets_total{{peer=\"local\"}} = {local_forwarded:?}\n  CSU \
         404 for every SNCF camera; SNCF passerelle_forwarded_packets_total for a partner \
         absent",
        local.frames
    )
}

/// Adds [`SNCF_AGENT`] as a local agent allowed every camera.
fn add_local_agent(site: &mut SiteFiles) {
    let (user, password) = SNCF_AGENT;
    site.config.push_str(&format!(
        "\n[[user]]\nname = \"{user}\"\nkind = \"agent\"\npassword_file = \
         \"secrets/{user}.password\"\ncameras = [\"**\"]\n"
    ));
    site.files.push((
        format!("secrets/{user}.password"),
        format!("{password}\n").into_bytes(),
    ));
}

fn file_mut<'a>(site: &'a mut SiteFiles, path: &str) -> &'a mut Vec<u8> {
    site.files
        .iter_mut()
        .find(|(p, _)| p == path)
        .map(|(_, bytes)| bytes)
        .unwrap_or_else(|| panic!("the kit wrote no {path}"))
}

// ---------------------------------------------------------------------------------------
// Nothing crosses

/// Every SNCF camera answers 404 at `receiver` (the requester may not know it exists),
/// and no media crossed: the SNCF forwarded nothing to any partner (its own viewers'
/// `peer="local"` series aside), the receiver ingested no `sncf/` camera.
fn assert_nothing_crosses(sncf: &Gateway, receiver: &Gateway) {
    let (user, password) = CSU_OPERATOR;
    for camera in passerelle::camsim::sncf_cameras() {
        let url = format!(
            "rtsp://{user}:{password}@{}/sncf/{}",
            receiver.addr("rtsp"),
            camera.id
        );
        let error = ffprobe_count_frames(&url, Transport::Tcp, CLIENT_TIMEOUT)
            .expect_err("an SNCF camera played across a refused link or policy");
        assert!(error.contains("404"), "{}: {error}", camera.id);
    }
    let sncf_metrics = metrics(sncf);
    for name in [
        "passerelle_forwarded_packets_total",
        "passerelle_forwarded_bytes_total",
    ] {
        let crossed = series_to_partners(&sncf_metrics, name);
        assert!(crossed.is_empty(), "{crossed:?}\n{sncf_metrics}");
    }
    let receiver_metrics = metrics(receiver);
    assert_eq!(
        metric(
            &receiver_metrics,
            "passerelle_ingest_packets_total",
            &["camera=\"sncf/"]
        ),
        None,
        "{receiver_metrics}"
    );
}

/// The series of `name` whose `peer` is a partner site (not `local`, this site's own
/// viewers).
fn series_to_partners<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| !line.contains("peer=\"local\""))
        .collect()
}

/// No live link with `peer`: no "link up" in the log, and the connected gauge (when
/// exported) is 0.
fn assert_no_link(gateway: &Gateway, peer: &str) {
    let log = gateway.stderr_log();
    assert!(!log.contains("link up"), "{log}");
    let text = metrics(gateway);
    let connected = metric(&text, "passerelle_peer_connected", &[&label("peer", peer)]);
    assert!(connected.is_none_or(|v| v == 0.0), "{text}");
}

// ---------------------------------------------------------------------------------------
// Helpers
