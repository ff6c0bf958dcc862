//! Governance end to end: what the access journal proves after real viewing, and a
//! policy withdrawal that cuts a live stream while a still-granted one plays on.

mod support;

use std::time::{Duration, Instant, SystemTime};

use passerelle::demo::{CSU_OPERATOR, MetzKit, sncf_policy};
use support::metz::{Chain, wait_for_log_line};
use support::watch::{Watcher, journal_time, wait_for_journal_line};
use support::{Gateway, Transport, ffprobe_count_frames, run_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_passerelle");
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

fn passerelle(args: &[&str]) -> support::CommandOutput {
    run_bounded(BIN, args, Duration::from_secs(20)).expect("passerelle runs")
}

#[test]
fn the_journal_proves_who_watched_what_and_detects_an_edit() {
    let mut chain = Chain::start(&[]);
    let report = ffprobe_count_frames(
        &chain.csu_url("sncf/metz-ville/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect("a granted camera plays");
    assert!(report.frames >= 50, "{report:?}");
    // A refused viewing is on record too.
    ffprobe_count_frames(
        &chain.csu_url("sncf/poste-de-commande/salle"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect_err("not granted");
    // Stopped by SIGTERM: every session's end and a final checkpoint are written.
    chain.csu.stop();
    chain.sncf.stop();

    let sncf_audit = chain.sncf.dir().join("audit");
    let sncf_key = chain.sncf.dir().join("journal.pub");
    let verified = passerelle(&[
        "audit",
        "verify",
        sncf_audit.to_str().expect("utf-8"),
        "-p",
        sncf_key.to_str().expect("utf-8"),
    ]);
    assert!(
        verified.status.success(),
        "{}\n{}",
        verified.stdout,
        verified.stderr
    );
    println!("SNCF audit verify:\n{}", verified.stdout);

    let register = passerelle(&[
        "audit",
        "export",
        sncf_audit.to_str().expect("utf-8"),
        "--format",
        "csv",
    ]);
    assert!(register.status.success(), "{}", register.stderr);
    println!("SNCF access register:\n{}", register.stdout);
    let row = register
        .stdout
        .lines()
        .find(|l| l.contains("metz-ville/quai-1"))
        .unwrap_or_else(|| panic!("no row for the camera:\n{}", register.stdout));
    for field in [
        "csu.metz.example",
        "operateur",
        "Code des transports L1632-2",
        ",closed",
    ] {
        assert!(row.contains(field), "{field} missing from {row}");
    }
    // The session's end records what its camera sent while it was open.
    let header: Vec<&str> = register
        .stdout
        .lines()
        .next()
        .expect("header")
        .split(',')
        .collect();
    let bytes_column = header
        .iter()
        .position(|h| *h == "bytes")
        .expect("a bytes column");
    let bytes: u64 = row
        .split(',')
        .nth(bytes_column)
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    assert!(bytes > 10_000, "bytes {bytes} in {row}");
    assert!(
        !register.stdout.contains("poste-de-commande"),
        "a refused viewing is no register row"
    );

    // The CSU's own journal records its agent as a viewer of the SNCF camera.
    let csu_audit = chain.csu.dir().join("audit");
    let shown = passerelle(&[
        "audit",
        "show",
        csu_audit.to_str().expect("utf-8"),
        "--agent",
        "operateur",
    ]);
    assert!(shown.status.success(), "{}", shown.stderr);
    assert!(
        shown.stdout.contains("\"role\":\"viewer\"")
            && shown.stdout.contains("sncf/metz-ville/quai-1"),
        "{}",
        shown.stdout
    );

    // Edit one record of the SNCF journal: verify names it.
    let file = std::fs::read_dir(&sncf_audit)
        .expect("audit dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("a journal file");
    let text = std::fs::read_to_string(&file).expect("journal");
    let edited = text.replacen("\"agent\":\"operateur\"", "\"agent\":\"quelqu-un\"", 1);
    assert_ne!(text, edited);
    std::fs::write(&file, edited).expect("edit");
    let verified = passerelle(&[
        "audit",
        "verify",
        sncf_audit.to_str().expect("utf-8"),
        "-p",
        sncf_key.to_str().expect("utf-8"),
    ]);
    assert!(
        !verified.status.success(),
        "an edited journal verified:\n{}",
        verified.stdout
    );
    println!("after an edit:\n{}", verified.stdout);
}

#[test]
fn a_withdrawn_grant_stops_its_stream_within_a_second_and_the_rest_plays_on() {
    let chain = Chain::start(&[]);
    let withdrawn = Watcher::start(&chain.csu_url("sncf/metz-ville/quai-1"));
    let kept = Watcher::start(&chain.csu_url("sncf/woippy/quai-1"));
    withdrawn.wait_for(100, CLIENT_TIMEOUT);
    kept.wait_for(100, CLIENT_TIMEOUT);

    // Serial 2 keeps Woippy, Ars and Peltre and withdraws Metz Ville and Metz Nord.
    let narrowed = sncf_policy().replace("serial = 1", "serial = 2").replace(
        "cameras = [\"metz-ville/**\", \"metz-nord/**\"]",
        "cameras = [\"metz-nord/**\"]",
    );
    let staging = chain.sncf.dir().join("incoming");
    std::fs::create_dir_all(&staging).expect("staging");
    for (name, bytes) in chain.kit.signed_sncf_policy(&narrowed).expect("signed") {
        std::fs::write(staging.join(name), bytes).expect("write");
    }
    let config = chain.sncf.dir().join("passerelle.toml");
    let installed = passerelle(&[
        "policy",
        "install",
        staging.to_str().expect("utf-8"),
        "-c",
        config.to_str().expect("utf-8"),
    ]);
    assert!(
        installed.status.success(),
        "{}\n{}",
        installed.stdout,
        installed.stderr
    );
    chain.sncf.signal("HUP");

    let applied = journal_time(&chain.sncf, "policy_loaded", 2);
    let kept_before = kept.count();
    // Bounded wait for the withdrawn stream to go quiet, then two more seconds to see
    // that it stays quiet and that the kept one does not.
    let cut_ms = withdrawn.last_packet_ms_after(applied, Duration::from_secs(5));
    println!("withdrawal: last packet {cut_ms:.1} ms after the journal's policy_loaded record");
    assert!(
        cut_ms < 1000.0,
        "the last packet came {cut_ms:.1} ms after the policy was applied"
    );
    kept.wait_for(kept_before + 25, Duration::from_secs(5));
    println!(
        "still-granted stream: {} packets after the reload",
        kept.count() - kept_before
    );

    // Narrowed catalog: the withdrawn camera is now unknown at the CSU.
    let error = ffprobe_count_frames(
        &chain.csu_url("sncf/metz-ville/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect_err("withdrawn");
    assert!(error.contains("404"), "{error}");
}

#[test]
fn a_revoked_partner_certificate_closes_its_link_at_the_next_sighup() {
    let validity =
        passerelle::pki::Validity::days_from(jiff::Timestamp::now(), 30).expect("validity");
    let chain = Chain::start_with(
        &[],
        |kit, sncf| {
            // A CRL from the CSU's CA, revoking nothing yet, is configured from the start.
            let empty =
                passerelle::pki::revoke(kit.eurometropole_ca(), &[], validity).expect("crl");
            sncf.files
                .push(("tls/partners.crl".into(), empty.into_bytes()));
            sncf.config = sncf.config.replacen(
                "ca = \"tls/ca.pem\"\n",
                "ca = \"tls/ca.pem\"\ncrl = \"tls/partners.crl\"\n",
                1,
            );
        },
        |_| {},
    );
    let Chain {
        kit,
        sncf,
        csu,
        csu_files,
        ..
    } = chain;
    let (user, password) = CSU_OPERATOR;
    let watcher = Watcher::start(&format!(
        "rtsp://{user}:{password}@{}/sncf/metz-ville/quai-1",
        csu.addr("rtsp")
    ));
    watcher.wait_for(50, CLIENT_TIMEOUT);

    let csu_cert = csu_files
        .files
        .iter()
        .find(|(path, _)| path == "tls/site.pem")
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
        .expect("the CSU certificate");
    let serial = passerelle::pki::Serial::of_certificate_pem(&csu_cert).expect("serial");
    let revoked =
        passerelle::pki::revoke(kit.eurometropole_ca(), &[serial], validity).expect("crl");
    std::fs::write(sncf.dir().join("tls/partners.crl"), revoked).expect("write the CRL");
    let hup = SystemTime::now();
    sncf.signal("HUP");

    let closed = wait_for_log_line(&sncf, "SNCF", |l| {
        l.contains("revoked") && l.contains("csu.metz.example")
    });
    println!("SNCF: {closed}");
    let after_ms = watcher.last_packet_ms_after(hup, Duration::from_secs(5));
    // At 25 fps a packet burst comes every 40 ms: a cut within one frame of the signal
    // shows as a last packet up to 40 ms before it.
    println!("revocation: last packet {after_ms:.1} ms after SIGHUP");
    assert!(
        after_ms < 1000.0,
        "the revoked partner got packets {after_ms:.1} ms after SIGHUP"
    );
    // It cannot come back: the CSU's new handshakes are refused.
    let refused = wait_for_log_line(&csu, "CSU", |l| l.contains("dialling partner failed"));
    println!("CSU: {refused}");
}

#[test]
fn without_a_writable_journal_no_viewing_session_starts_and_readyz_says_so() {
    let chain = Chain::start_with(
        &[],
        |_, sncf| {
            // A directory no process can create files in.
            sncf.config = sncf
                .config
                .replace("dir = \"audit\"", "dir = \"/proc/passerelle-audit\"");
        },
        |_| {},
    );
    let Chain { sncf, csu, .. } = chain;

    let ready = support::http_get(sncf.addr("management"), "/readyz", Duration::from_secs(5))
        .expect("readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("\"writable\":false"), "{}", ready.body);

    let (user, password) = CSU_OPERATOR;
    let url = format!(
        "rtsp://{user}:{password}@{}/sncf/metz-ville/quai-1",
        csu.addr("rtsp")
    );
    let error = ffprobe_count_frames(&url, Transport::Tcp, CLIENT_TIMEOUT)
        .expect_err("no journal, no viewing");
    assert!(error.contains("503"), "{error}");
    let refused = wait_for_log_line(&sncf, "SNCF", |l| {
        l.contains("viewing session refused") && l.contains("journal_unavailable")
    });
    println!("refused without a journal: {refused}");
}

#[test]
fn an_on_request_camera_needs_an_agents_open_intervention_whose_reason_reaches_the_camera_site() {
    let chain = Chain::start_with(&[], support::metz::sncf_on_request, |csu| {
        // The CSU's VMS pulls with a service account.
        csu.files
            .push(("secrets/vms.password".into(), b"vms-secret\n".to_vec()));
        csu.config.push_str(
                "\n[[user]]\nname = \"vms-csu\"\nkind = \"service\"\npassword_file = \"secrets/vms.password\"\ncameras = [\"**\"]\n",
            );
    });
    let Chain { sncf, csu, .. } = chain;
    let rtsp = csu.addr("rtsp");
    let operator = |camera: &str| {
        let (user, password) = CSU_OPERATOR;
        format!("rtsp://{user}:{password}@{rtsp}/{camera}")
    };

    // No intervention: the camera is known but may not be watched now.
    let error = ffprobe_count_frames(
        &operator("sncf/metz-ville/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect_err("on request, no intervention");
    assert!(error.contains("403"), "{error}");
    // A live grant needs none.
    ffprobe_count_frames(
        &operator("sncf/woippy/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect("live grant");

    // The agent opens an intervention with its bearer token.
    let id = support::open_intervention(
        &csu,
        passerelle::demo::CSU_OPERATOR_TOKEN,
        "rixe sur le parvis de la gare",
        &["sncf/metz-ville/**"],
    );

    let report = ffprobe_count_frames(
        &operator("sncf/metz-ville/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect("with an intervention");
    assert!(report.frames >= 25, "{report:?}");
    // A service account never satisfies an on-request grant, intervention or not.
    let error = ffprobe_count_frames(
        &format!("rtsp://vms-csu:vms-secret@{rtsp}/sncf/metz-ville/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect_err("service account");
    assert!(error.contains("403"), "{error}");

    // The camera's site journaled the reason and the intervention with the session.
    let opened_line = wait_for_journal_line(&sncf, |l| {
        l.contains("\"kind\":\"session_opened\"") && l.contains("metz-ville/quai-1")
    });
    assert!(
        opened_line.contains("rixe sur le parvis de la gare"),
        "{opened_line}"
    );
    assert!(opened_line.contains(&id), "{opened_line}");
    println!("SNCF journal: {opened_line}");
    let refused = wait_for_journal_line(&sncf, |l| {
        l.contains("\"kind\":\"session_refused\"") && l.contains("no_intervention")
    });
    println!("SNCF journal: {refused}");
}

#[test]
fn a_sigterm_mid_stream_loses_no_record() {
    let mut chain = Chain::start(&[]);
    let watcher = Watcher::start(&chain.csu_url("sncf/metz-ville/quai-1"));
    watcher.wait_for(50, CLIENT_TIMEOUT);
    // Stopped while the session is live: its end must be on record, then a checkpoint.
    chain.sncf.stop();
    drop(watcher);

    let records = support::watch::journal_records(&chain.sncf);
    let opened = records
        .iter()
        .find(|r| r["kind"] == "session_opened" && r["camera"] == "metz-ville/quai-1")
        .expect("the session was opened");
    let session = opened["session"].as_str().expect("session id");
    let ended = records
        .iter()
        .find(|r| r["kind"] == "session_ended" && r["session"] == session)
        .unwrap_or_else(|| panic!("no end for session {session}: {records:#?}"));
    println!("ended at stop: {ended}");
    let kinds: Vec<&str> = records.iter().filter_map(|r| r["kind"].as_str()).collect();
    // The clock's synchronisation state is on record from the start.
    assert!(kinds.contains(&"clock_state"), "{kinds:?}");
    assert!(
        kinds.ends_with(&["process_stop", "checkpoint"]),
        "the journal ends with the stop and a checkpoint: {kinds:?}"
    );
    let audit = chain.sncf.dir().join("audit");
    let key = chain.sncf.dir().join("journal.pub");
    let verified = passerelle(&[
        "audit",
        "verify",
        audit.to_str().expect("utf-8"),
        "-p",
        key.to_str().expect("utf-8"),
    ]);
    assert!(verified.status.success(), "{}", verified.stdout);
}

#[test]
fn grant_caps_refuse_the_next_stream_with_a_clear_code() {
    let capped = sncf_policy()
        .replacen("mode = \"live\"", "mode = \"live\"\nmax_streams = 1", 1)
        .replace("cameras = [\"woippy/**\", \"ars-sur-moselle/**\", \"peltre/**\"]\nmode = \"live\"", "cameras = [\"woippy/**\", \"ars-sur-moselle/**\", \"peltre/**\"]\nmode = \"live\"\nmax_bitrate_kbps = 300");
    assert!(
        capped.contains("max_streams = 1") && capped.contains("max_bitrate_kbps = 300"),
        "{capped}"
    );
    let chain = Chain::start_with(
        &[],
        |kit, sncf| {
            // Always-on cameras: their bitrate is measured before anyone asks (~205 kbit/s).
            sncf.config = sncf.config.replace(
                "credentials_file = \"secrets/camera.cred\"\n",
                "credentials_file = \"secrets/camera.cred\"\non_demand = false\n",
            );
            kit.replace_policy(sncf, &capped, true).expect("policy");
        },
        |_| {},
    );
    let Chain { sncf, csu, .. } = chain;
    let url = |camera: &str| {
        let (user, password) = CSU_OPERATOR;
        format!(
            "rtsp://{user}:{password}@{}/sncf/{camera}",
            csu.addr("rtsp")
        )
    };

    // max_streams = 1: a second camera of the grant is refused while the first plays.
    let first = Watcher::start(&url("metz-ville/quai-1"));
    first.wait_for(50, CLIENT_TIMEOUT);
    let error = ffprobe_count_frames(&url("metz-nord/hall"), Transport::Tcp, CLIENT_TIMEOUT)
        .expect_err("max_streams");
    assert!(error.contains("503"), "{error}");
    let refused = wait_for_log_line(&sncf, "SNCF", |l| l.contains("max_streams"));
    println!("SNCF: {refused}");

    // max_bitrate_kbps = 300: one ~300 kbit/s camera fits, a second does not.
    let woippy = Watcher::start(&url("woippy/quai-1"));
    woippy.wait_for(50, CLIENT_TIMEOUT);
    let error = ffprobe_count_frames(
        &url("ars-sur-moselle/quai-1"),
        Transport::Tcp,
        CLIENT_TIMEOUT,
    )
    .expect_err("max_bitrate_kbps");
    assert!(error.contains("503"), "{error}");
    let refused = wait_for_log_line(&sncf, "SNCF", |l| l.contains("bitrate cap"));
    println!("SNCF: {refused}");
    // The streams already admitted play on.
    let (a, b) = (first.count(), woippy.count());
    first.wait_for(a + 25, Duration::from_secs(5));
    woippy.wait_for(b + 25, Duration::from_secs(5));
}

#[test]
fn a_partner_removed_from_the_configuration_is_disconnected_at_the_next_sighup() {
    let csu_block = "[[partner]]\nid = \"csu.metz.example\"\nca = \"tls/partner-csu-ca.pem\"\n";
    let chain = Chain::start_with(
        &[],
        |_, sncf| {
            // A second partner, so the SNCF still has one once the CSU is removed.
            let ccor_ca = MetzKit::other_ca("police-municipale").expect("ca");
            sncf.files.push((
                "tls/partner-ccor-ca.pem".into(),
                ccor_ca.cert_pem.into_bytes(),
            ));
            sncf.config.push_str(
                "\n[[partner]]\nid = \"ccor.metz.example\"\nca = \"tls/partner-ccor-ca.pem\"\n",
            );
            assert!(sncf.config.contains(csu_block), "{}", sncf.config);
        },
        |_| {},
    );
    let Chain { sncf, csu, .. } = chain;
    let (user, password) = CSU_OPERATOR;
    let watcher = Watcher::start(&format!(
        "rtsp://{user}:{password}@{}/sncf/metz-ville/quai-1",
        csu.addr("rtsp")
    ));
    watcher.wait_for(50, CLIENT_TIMEOUT);

    let config = sncf.dir().join("passerelle.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace(csu_block, "")).expect("remove the CSU");
    let hup = SystemTime::now();
    sncf.signal("HUP");

    let closed = wait_for_log_line(&sncf, "SNCF", |l| {
        l.contains("live link refused on re-check") && l.contains("csu.metz.example")
    });
    println!("SNCF: {closed}");
    let after_ms = watcher.last_packet_ms_after(hup, Duration::from_secs(5));
    println!("partner removed: last packet {after_ms:.1} ms after SIGHUP");
    assert!(after_ms < 1000.0, "{after_ms:.1} ms");
}

#[test]
fn each_site_journals_the_signed_head_its_partner_sends_when_the_link_comes_up() {
    let chain = Chain::start(&[]);
    // The SNCF's own checkpoint, and the copy the CSU journaled.
    let find = |site: &Gateway, kind: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(record) = support::watch::journal_records(site)
                .into_iter()
                .find(|r| r["kind"] == kind)
            {
                return record;
            }
            assert!(Instant::now() < deadline, "no {kind} record");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let received = find(&chain.csu, "peer_checkpoint");
    assert_eq!(received["peer"], "sncf.metz.example", "{received}");
    let sncf_journal = support::watch::journal_records(&chain.sncf);
    let sent = sncf_journal
        .iter()
        .find(|r| r["kind"] == "checkpoint" && r["head_hash"] == received["head_hash"])
        .unwrap_or_else(|| panic!("the CSU holds a head the SNCF never signed: {received}"));
    assert_eq!(sent["journal"], received["journal"]);
    assert_eq!(
        sent["signature"], received["signature"],
        "the signature travelled intact"
    );
    println!("CSU journaled the SNCF head: {received}");
}
