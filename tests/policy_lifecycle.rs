//! The signed-policy lifecycle (issue 3, "Policy lifecycle" 1, 2 and 7): the serial rule
//! and its persisted state through [`PolicyStore`], and `policy install`'s atomic swap.
//!
//! Signatures come from the standard `minisign` tool where interoperability is the point
//! (k of n, tampering, the common reload cases), and from the library's [`SigningKey`]
//! where many policies are signed (the concurrent install test).
//!
//! Documented rule under test (`policy::store`): validity does not decide admission. A
//! higher serial outside its window is admitted and persisted, and nothing crosses under
//! it; `install` refuses to install such a policy.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use passerelle::ids::{CameraId, SiteId};
use passerelle::policy::{
    Change, DenyReason, IgnoredWhy, InstallError, LayoutProblem, PolicyLoadError, PolicyRefusal,
    PolicyStore, SignatureError, SigningKey, StoredPolicyState, TrustedKey, Validity, admit,
    evaluate, install, load_installed, sign_policy_file,
};
use sha2::{Digest as _, Sha256};

const SITE: &str = "csu.metz.example";
const PARTNER: &str = "ccor.metz.example";
const FROM: &str = "2026-01-01T00:00:00Z";
const UNTIL: &str = "2027-01-01T00:00:00Z";

fn now() -> Timestamp {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

fn site() -> SiteId {
    SITE.parse().unwrap()
}

/// A policy for `site`; `note` goes into `reference` so that equal serials can differ.
fn policy_text(site: &str, serial: u64, from: &str, until: &str, note: &str) -> String {
    format!(
        r#"version = 1
site = "{site}"
serial = {serial}
valid_from = {from}
valid_until = {until}
time_zone = "Europe/Paris"
reference = "Convention de test {note}"

[[grant]]
partner = "{PARTNER}"
cameras = ["metz/**"]
mode = "live"
basis = "CSI L252-2"
"#
    )
}

fn policy(serial: u64) -> String {
    policy_text(SITE, serial, FROM, UNTIL, "")
}

/// Does `metz/gare` cross to the partner under `store`'s current policy at `at`?
fn crosses(store: &PolicyStore, at: Timestamp) -> Result<(), DenyReason> {
    let camera: CameraId = "metz/gare".parse().unwrap();
    let decision = evaluate(
        store.current().map(|p| &p.policy),
        &site(),
        &PARTNER.parse().unwrap(),
        &camera,
        None,
        at,
    );
    match decision {
        passerelle::policy::Decision::Allow { .. } => Ok(()),
        passerelle::policy::Decision::Deny(reason) => Err(reason),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A scratch tree: `etc/policy/policy.toml` (the configured policy), `state/`, keys.
struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("keys")).unwrap();
        Site { _tmp: tmp, root }
    }

    fn configured(&self) -> PathBuf {
        self.root.join("etc/policy/policy.toml")
    }

    /// `policy install` of `incoming` now, k = 1, without the stored serial state.
    fn install_now(
        &self,
        incoming: &Path,
        trusted: &[TrustedKey],
    ) -> Result<passerelle::policy::Installed, InstallError> {
        install(
            incoming,
            &self.configured(),
            trusted,
            1,
            &site(),
            None,
            now(),
        )
    }

    /// As [`Site::install_now`], checked against the gateway's stored serial state.
    fn install_over_state(
        &self,
        incoming: &Path,
        trusted: &[TrustedKey],
    ) -> Result<passerelle::policy::Installed, InstallError> {
        let state = self.state();
        install(
            incoming,
            &self.configured(),
            trusted,
            1,
            &site(),
            state.as_ref(),
            now(),
        )
    }

    fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// A directory (created empty) under the scratch root.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn store(&self) -> PolicyStore {
        PolicyStore::new(self.state_dir())
    }

    fn state(&self) -> Option<StoredPolicyState> {
        StoredPolicyState::read(&self.state_dir()).unwrap()
    }
}

// --- the minisign tool ---

fn minisign(args: &[&str], dir: &Path) {
    let out = Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the minisign tool must be installed");
    assert!(
        out.status.success(),
        "minisign {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `minisign -G -W` in `keys/`: `<name>.key`, `<name>.pub`.
fn tool_key(site: &Site, name: &str) -> TrustedKey {
    minisign(
        &[
            "-G",
            "-W",
            "-p",
            &format!("{name}.pub"),
            "-s",
            &format!("{name}.key"),
        ],
        &site.keys(),
    );
    TrustedKey::from_file(&site.keys().join(format!("{name}.pub"))).unwrap()
}

/// `minisign -S` of `dir/policy.toml` with `keys/<key>.key`, into `policy.toml.minisig` or
/// `policy.toml.<sig_name>.minisig`.
fn tool_sign(site: &Site, dir: &Path, key: &str, sig_name: Option<&str>) {
    let secret = site.keys().join(format!("{key}.key"));
    let policy = dir.join("policy.toml");
    let sig = match sig_name {
        None => dir.join("policy.toml.minisig"),
        Some(name) => dir.join(format!("policy.toml.{name}.minisig")),
    };
    minisign(
        &[
            "-S",
            "-s",
            secret.to_str().unwrap(),
            "-m",
            policy.to_str().unwrap(),
            "-x",
            sig.to_str().unwrap(),
        ],
        dir,
    );
}

/// Replaces `dir`'s policy and signatures with `text`, signed by the tool with `keys`
/// (the first as `policy.toml.minisig`, the others as `policy.toml.<key>.minisig`).
fn tool_write(site: &Site, dir: &Path, text: &str, keys: &[&str]) {
    fs::create_dir_all(dir).unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    fs::write(dir.join("policy.toml"), text).unwrap();
    for (i, key) in keys.iter().enumerate() {
        tool_sign(site, dir, key, (i > 0).then_some(*key));
    }
}

// --- the library's keys ---

/// Replaces `dir`'s policy and signatures with `text`, signed by `keys` (the first as
/// `policy.toml.minisig`, the others as `policy.toml.s<i>.minisig`).
fn lib_write(dir: &Path, text: &str, keys: &[&SigningKey]) {
    fs::create_dir_all(dir).unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let path = dir.join("policy.toml");
    fs::write(&path, text).unwrap();
    for (i, key) in keys.iter().enumerate() {
        let signer = format!("s{i}");
        sign_policy_file(&path, key, (i > 0).then_some(signer.as_str()), now()).unwrap();
    }
}

/// Every file under `dir` with its SHA-256, and every symlink with its target: what a
/// refused install must leave equal.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            if name.ends_with(".install.lock") {
                continue; // created by the first install attempt, empty, never read
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.push((
                    name,
                    format!("-> {}", fs::read_link(&path).unwrap().display()),
                ));
            } else if meta.is_dir() {
                stack.push(path);
            } else {
                out.push((name, sha256_hex(&fs::read(&path).unwrap())));
            }
        }
    }
    out.sort();
    out
}

fn reason(result: Result<impl std::fmt::Debug, PolicyRefusal>) -> &'static str {
    match result {
        Ok(ok) => panic!("accepted, expected a refusal: {ok:?}"),
        Err(refusal) => refusal.reason(),
    }
}

/// Refused because the one trusted signature does not verify over the bytes.
fn assert_signature_does_not_verify(result: Result<passerelle::policy::Loaded, PolicyRefusal>) {
    match &result {
        Err(
            refusal @ PolicyRefusal::Load(PolicyLoadError::Signature {
                source:
                    SignatureError::NotEnoughSignatures {
                        valid: 0, ignored, ..
                    },
                ..
            }),
        ) => {
            assert_eq!(refusal.reason(), "not_enough_signatures");
            assert_eq!(ignored.len(), 1, "{ignored:?}");
            assert_eq!(ignored[0].why, IgnoredWhy::Invalid, "{ignored:?}");
        }
        other => panic!("expected a signature that does not verify, got {other:?}"),
    }
}

fn install_reason(result: Result<passerelle::policy::Installed, InstallError>) -> &'static str {
    match result {
        Ok(ok) => panic!("installed, expected a refusal: {:?}", ok.version_dir),
        Err(error) => error.reason(),
    }
}

// --- the serial rule through the store ---

#[test]
fn a_higher_serial_is_accepted_and_its_state_persisted() {
    let s = Site::new();
    let key = tool_key(&s, "a");
    let trusted = [key.clone()];
    let dir = s.configured().parent().unwrap().to_owned();
    let mut store = s.store();

    tool_write(&s, &dir, &policy(7), &["a"]);
    let loaded = store
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    assert_eq!(loaded.admission.change, Change::First);
    assert_eq!(loaded.admission.validity, Validity::InForce);
    assert_eq!(crosses(&store, now()), Ok(()));

    tool_write(&s, &dir, &policy(8), &["a"]);
    let loaded = store
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    assert_eq!(loaded.admission.change, Change::Newer { previous: 7 });
    assert_eq!(store.current().unwrap().policy.serial, 8);

    // The state file, read as JSON the way an operator or a script would.
    let text = fs::read_to_string(s.state_dir().join("policy-state.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["format"], 1);
    assert_eq!(json["serial"], 8);
    assert_eq!(
        json["sha256"],
        sha256_hex(policy(8).as_bytes()),
        "sha256 of the exact policy bytes"
    );
    assert_eq!(json["valid_until"], UNTIL);
    assert_eq!(json["signers"], serde_json::json!([key.id().to_string()]));
}

#[test]
fn the_same_policy_reloads_idempotently_also_after_a_restart() {
    let s = Site::new();
    let a = tool_key(&s, "a");
    let b = tool_key(&s, "b");
    let trusted = [a.clone(), b.clone()];
    let dir = s.configured().parent().unwrap().to_owned();
    tool_write(&s, &dir, &policy(7), &["a"]);

    let mut store = s.store();
    store
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    let state = s.state().unwrap();
    for _ in 0..2 {
        let again = store
            .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
            .unwrap();
        assert_eq!(again.admission.change, Change::Same);
        assert_eq!(s.state(), Some(state.clone()));
    }

    // A restart re-reads the policy in force.
    let mut restarted = s.store();
    let loaded = restarted
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    assert_eq!(loaded.admission.change, Change::Same);
    assert_eq!(crosses(&restarted, now()), Ok(()));

    // The same bytes with one more signer: still the same policy; the signers recorded.
    tool_sign(&s, &dir, "b", Some("b"));
    let loaded = restarted
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    assert_eq!(loaded.admission.change, Change::Same);
    let mut both = vec![a.id(), b.id()];
    both.sort();
    assert_eq!(s.state().unwrap().signers, both);
    assert_eq!(s.state().unwrap().sha256, state.sha256);
}

#[test]
fn the_same_serial_with_other_bytes_is_refused_as_serial_reuse() {
    let s = Site::new();
    let trusted = [tool_key(&s, "a")];
    let dir = s.configured().parent().unwrap().to_owned();
    tool_write(&s, &dir, &policy(7), &["a"]);
    let mut store = s.store();
    let first = store
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    let state = s.state().unwrap();

    // Validly signed, same serial, one grant wider.
    let wider = policy(7).replace("metz/**", "**");
    tool_write(&s, &dir, &wider, &["a"]);
    let refused = store.load_or_refuse(&s.configured(), &trusted, 1, &site(), now());
    match &refused {
        Err(PolicyRefusal::SerialReuse {
            serial: 7,
            stored_sha256,
            offered_sha256,
        }) => {
            assert_eq!(*stored_sha256, sha256_hex(policy(7).as_bytes()));
            assert_eq!(*offered_sha256, sha256_hex(wider.as_bytes()));
        }
        other => panic!("expected serial reuse, got {other:?}"),
    }
    assert_eq!(store.last_refusal().unwrap().reason, "serial_reuse");
    // The policy in force stays, the state does not move.
    assert_eq!(store.current().unwrap().digest(), first.policy.digest());
    assert_eq!(s.state(), Some(state));
    assert_eq!(
        reason(
            s.store()
                .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        ),
        "serial_reuse",
        "also after a restart"
    );
}

#[test]
fn a_lower_serial_is_a_rollback_also_across_a_restart() {
    let s = Site::new();
    let trusted = [tool_key(&s, "a")];
    let dir = s.configured().parent().unwrap().to_owned();
    let mut store = s.store();
    tool_write(&s, &dir, &policy(8), &["a"]);
    store
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();

    // An older, genuinely signed policy put back.
    tool_write(&s, &dir, &policy(7), &["a"]);
    let refused = store.load_or_refuse(&s.configured(), &trusted, 1, &site(), now());
    assert!(
        matches!(
            refused,
            Err(PolicyRefusal::Rollback {
                stored: 8,
                offered: 7
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        store.current().unwrap().policy.serial,
        8,
        "8 stays in force"
    );

    // Restart on the same state directory: still a rollback, and nothing crosses.
    let mut restarted = s.store();
    let refused = restarted.load_or_refuse(&s.configured(), &trusted, 1, &site(), now());
    assert!(
        matches!(
            refused,
            Err(PolicyRefusal::Rollback {
                stored: 8,
                offered: 7
            })
        ),
        "{refused:?}"
    );
    assert!(restarted.current().is_none());
    assert_eq!(crosses(&restarted, now()), Err(DenyReason::NoPolicy));
    assert_eq!(s.state().unwrap().serial, 8);
}

#[test]
fn the_state_is_durable_before_the_policy_is_applied() {
    let s = Site::new();
    let key = SigningKey::generate().unwrap();
    let trusted = [key.trusted_key().unwrap()];
    let dir = s.configured().parent().unwrap().to_owned();
    lib_write(&dir, &policy(8), &[&key]);
    s.store()
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();

    // Serial 9 admitted and persisted, then the process dies before applying it.
    lib_write(&dir, &policy(9), &[&key]);
    let candidate = load_installed(&s.configured(), &trusted, 1).unwrap();
    let admission = admit(s.state().as_ref(), &candidate, &site(), now()).unwrap();
    admission.state.persist(&s.state_dir()).unwrap();
    drop(candidate);
    let on_disk = s.state().unwrap();
    assert_eq!(on_disk.serial, 9);
    assert_eq!(on_disk.sha256_hex(), sha256_hex(policy(9).as_bytes()));
    assert_eq!(on_disk.signers, [key.key_id()]);
    let names: Vec<String> = fs::read_dir(s.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["policy-state.json"], "no temporary file left");

    // After the "crash", 8 put back is a rollback; 9 itself is the policy in force.
    lib_write(&dir, &policy(8), &[&key]);
    assert_eq!(
        reason(
            s.store()
                .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        ),
        "rollback"
    );
    lib_write(&dir, &policy(9), &[&key]);
    let loaded = s
        .store()
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    assert_eq!(loaded.admission.change, Change::Same);

    // A state that cannot be written: the policy is not applied. The store reads its
    // (absent) state on a first, refused load; then its directory becomes a file.
    let blocked = s.root.join("state-elsewhere");
    let mut store = PolicyStore::new(&blocked);
    let ccor: SiteId = PARTNER.parse().unwrap();
    assert_eq!(
        reason(store.load_or_refuse(&s.configured(), &trusted, 1, &ccor, now())),
        "wrong_site"
    );
    fs::write(&blocked, "a file where the state directory should be").unwrap();
    assert_eq!(
        reason(store.load_or_refuse(&s.configured(), &trusted, 1, &site(), now())),
        "state_write_failed"
    );
    assert!(store.current().is_none());
    assert_eq!(crosses(&store, now()), Err(DenyReason::NoPolicy));
}

#[test]
fn an_unreadable_state_refuses_every_policy_until_repaired() {
    let s = Site::new();
    let key = SigningKey::generate().unwrap();
    let trusted = [key.trusted_key().unwrap()];
    let dir = s.configured().parent().unwrap().to_owned();
    lib_write(&dir, &policy(3), &[&key]);
    fs::create_dir_all(s.state_dir()).unwrap();
    fs::write(s.state_dir().join("policy-state.json"), "{\"serial\": ").unwrap();

    let mut store = s.store();
    assert_eq!(
        reason(store.load_or_refuse(&s.configured(), &trusted, 1, &site(), now())),
        "state_unreadable"
    );
    assert_eq!(crosses(&store, now()), Err(DenyReason::NoPolicy));
    // The operator removes it knowingly; the next reload accepts.
    fs::remove_file(s.state_dir().join("policy-state.json")).unwrap();
    let loaded = store
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    assert_eq!(loaded.admission.change, Change::First);
}

#[test]
fn k_of_n_with_the_minisign_tool() {
    let s = Site::new();
    let trusted = [tool_key(&s, "a"), tool_key(&s, "b"), tool_key(&s, "c")];
    tool_key(&s, "stranger");
    let dir = s.configured().parent().unwrap().to_owned();
    let mut store = s.store();

    // k - 1 = 1 signature, plus one by an untrusted key and a second one by the same key.
    tool_write(&s, &dir, &policy(4), &["a", "stranger"]);
    tool_sign(&s, &dir, "a", Some("a-again"));
    assert_eq!(
        reason(store.load_or_refuse(&s.configured(), &trusted, 2, &site(), now())),
        "not_enough_signatures"
    );
    assert!(store.current().is_none());
    assert_eq!(s.state(), None, "nothing persisted for a refused policy");

    // Install refuses it too, from an incoming directory.
    let incoming = s.dir("incoming");
    tool_write(&s, &incoming, &policy(4), &["a"]);
    assert_eq!(
        install_reason(install(
            &incoming,
            &s.configured(),
            &trusted,
            2,
            &site(),
            None,
            now()
        )),
        "not_enough_signatures"
    );

    // The second distinct key makes k.
    tool_sign(&s, &dir, "b", Some("b"));
    let loaded = store
        .load_or_refuse(&s.configured(), &trusted, 2, &site(), now())
        .unwrap();
    let mut want = vec![trusted[0].id(), trusted[1].id()];
    want.sort();
    assert_eq!(loaded.policy.signers(), want);
    assert_eq!(s.state().unwrap().signers, want);
}

#[test]
fn a_tampered_policy_or_signature_is_refused_and_the_policy_in_force_stays() {
    let s = Site::new();
    let trusted = [tool_key(&s, "a")];
    let dir = s.configured().parent().unwrap().to_owned();
    let mut store = s.store();
    tool_write(&s, &dir, &policy(5), &["a"]);
    let in_force = store
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap()
        .policy;

    // A higher serial, signed, then edited after signing.
    tool_write(&s, &dir, &policy(6), &["a"]);
    fs::write(dir.join("policy.toml"), policy(6).replace("metz/**", "**")).unwrap();
    assert_signature_does_not_verify(store.load_or_refuse(
        &s.configured(),
        &trusted,
        1,
        &site(),
        now(),
    ));
    let public = s.keys().join("a.pub");
    let tool_verifies = || {
        Command::new("minisign")
            .args([
                "-V",
                "-q",
                "-p",
                public.to_str().unwrap(),
                "-m",
                "policy.toml",
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!tool_verifies(), "the minisign tool refuses it too");
    assert_eq!(store.current().unwrap().digest(), in_force.digest());
    assert_eq!(s.state().unwrap().serial, 5);

    // The signature edited instead (one base64 character of the signature line).
    tool_write(&s, &dir, &policy(6), &["a"]);
    let sig_path = dir.join("policy.toml.minisig");
    let sig = fs::read_to_string(&sig_path).unwrap();
    let mut lines: Vec<String> = sig.lines().map(str::to_owned).collect();
    // Character 60 encodes bytes of the Ed25519 signature itself (bytes 10 to 73).
    let flipped = if lines[1].as_bytes()[60] == b'A' {
        "B"
    } else {
        "A"
    };
    lines[1].replace_range(60..61, flipped);
    fs::write(&sig_path, lines.join("\n") + "\n").unwrap();
    assert_signature_does_not_verify(store.load_or_refuse(
        &s.configured(),
        &trusted,
        1,
        &site(),
        now(),
    ));
    assert!(!tool_verifies(), "the minisign tool refuses it too");
    assert_eq!(store.current().unwrap().policy.serial, 5);
    assert_eq!(
        crosses(&store, now()),
        Ok(()),
        "the policy in force still works"
    );
}

#[test]
fn another_sites_policy_is_refused() {
    let s = Site::new();
    let trusted = [tool_key(&s, "a")];
    let dir = s.configured().parent().unwrap().to_owned();
    let text = policy_text("sncf.metz.example", 9, FROM, UNTIL, "");
    tool_write(&s, &dir, &text, &["a"]);
    let mut store = s.store();
    let refused = store.load_or_refuse(&s.configured(), &trusted, 1, &site(), now());
    match &refused {
        Err(PolicyRefusal::WrongSite {
            policy_site,
            our_site,
            serial: 9,
        }) => {
            assert_eq!(policy_site.as_str(), "sncf.metz.example");
            assert_eq!(*our_site, site());
        }
        other => panic!("expected wrong site, got {other:?}"),
    }
    assert_eq!(s.state(), None);

    let incoming = s.dir("incoming");
    tool_write(&s, &incoming, &text, &["a"]);
    assert_eq!(
        install_reason(s.install_now(&incoming, &trusted)),
        "wrong_site"
    );
}

/// The documented rule: outside its window, a higher serial is admitted and persisted,
/// nothing crosses under it, and the serial it set still guards against rollback.
#[test]
fn expired_and_not_yet_valid_policies_are_admitted_but_nothing_crosses() {
    let s = Site::new();
    let trusted = [tool_key(&s, "a")];
    let dir = s.configured().parent().unwrap().to_owned();
    let mut store = s.store();
    tool_write(&s, &dir, &policy(7), &["a"]);
    store
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    assert_eq!(crosses(&store, now()), Ok(()));

    // Serial 8, expired last month.
    let expired = policy_text(SITE, 8, FROM, "2026-05-01T00:00:00Z", "expired");
    tool_write(&s, &dir, &expired, &["a"]);
    let loaded = store
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    assert_eq!(loaded.admission.change, Change::Newer { previous: 7 });
    assert!(matches!(
        loaded.admission.validity,
        Validity::Expired { .. }
    ));
    assert_eq!(crosses(&store, now()), Err(DenyReason::Expired));
    assert_eq!(s.state().unwrap().serial, 8);

    // Serial 9, valid from next month: nothing crosses until then.
    let later = policy_text(SITE, 9, "2026-07-01T00:00:00Z", UNTIL, "later");
    tool_write(&s, &dir, &later, &["a"]);
    let loaded = store
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    assert!(matches!(
        loaded.admission.validity,
        Validity::NotYetValid { .. }
    ));
    assert_eq!(crosses(&store, now()), Err(DenyReason::NotYetValid));

    // Once its time comes, the same policy re-read is in force.
    let july: Timestamp = "2026-07-02T00:00:00Z".parse().unwrap();
    let loaded = store
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), july)
        .unwrap();
    assert_eq!(loaded.admission.change, Change::Same);
    assert_eq!(loaded.admission.validity, Validity::InForce);
    assert_eq!(crosses(&store, july), Ok(()));

    // The policy in force expiring: re-read at a restart, it stays current, fails closed.
    let next_year: Timestamp = "2027-03-01T00:00:00Z".parse().unwrap();
    let mut restarted = s.store();
    let loaded = restarted
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), next_year)
        .unwrap();
    assert!(matches!(
        loaded.admission.validity,
        Validity::Expired { .. }
    ));
    assert_eq!(crosses(&restarted, next_year), Err(DenyReason::Expired));

    // The in-force policy 7 cannot come back below the serial those set.
    tool_write(&s, &dir, &policy(7), &["a"]);
    assert_eq!(
        reason(store.load_or_refuse(&s.configured(), &trusted, 1, &site(), now())),
        "rollback"
    );
}

// --- install ---

#[test]
fn install_refuses_a_policy_not_in_force_and_leaves_the_installed_one() {
    let s = Site::new();
    let key = SigningKey::generate().unwrap();
    let trusted = [key.trusted_key().unwrap()];
    let incoming = s.dir("incoming");
    lib_write(&incoming, &policy(1), &[&key]);
    s.install_now(&incoming, &trusted).unwrap();
    let before = snapshot(&s.root.join("etc"));

    for (text, want) in [
        (
            policy_text(SITE, 2, FROM, "2026-05-01T00:00:00Z", ""),
            "expired",
        ),
        (
            policy_text(SITE, 2, "2026-07-01T00:00:00Z", UNTIL, ""),
            "not_yet_valid",
        ),
    ] {
        lib_write(&incoming, &text, &[&key]);
        let result = s.install_now(&incoming, &trusted);
        assert!(
            matches!(result, Err(InstallError::NotInForce { serial: 2, .. })),
            "{want}"
        );
        assert_eq!(install_reason(result), want);
        assert_eq!(snapshot(&s.root.join("etc")), before);
    }
}

#[test]
fn install_refuses_a_rollback_and_leaves_the_installed_policy_untouched() {
    let s = Site::new();
    let key = SigningKey::generate().unwrap();
    let trusted = [key.trusted_key().unwrap()];
    let incoming = s.dir("incoming");

    lib_write(&incoming, &policy(5), &[&key]);
    s.install_now(&incoming, &trusted).unwrap();
    let mut gateway = s.store();
    gateway
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    lib_write(&incoming, &policy(6), &[&key]);
    s.install_now(&incoming, &trusted).unwrap();
    let before = snapshot(&s.root.join("etc"));

    // Below the stored state (5): refused as a reload would.
    lib_write(&incoming, &policy(4), &[&key]);
    let result = s.install_over_state(&incoming, &trusted);
    assert!(
        matches!(
            result,
            Err(InstallError::Refused(PolicyRefusal::Rollback {
                stored: 5,
                offered: 4
            }))
        ),
        "{result:?}"
    );
    assert_eq!(snapshot(&s.root.join("etc")), before);

    // Above the stored state but below the installed 6, not loaded yet by the gateway.
    lib_write(
        &incoming,
        &policy_text(SITE, 5, FROM, UNTIL, "other"),
        &[&key],
    );
    let result = s.install_over_state(&incoming, &trusted);
    assert_eq!(install_reason(result), "serial_reuse", "5 with other bytes");
    lib_write(&incoming, &policy(5), &[&key]);
    let result = s.install_over_state(&incoming, &trusted);
    assert!(
        matches!(
            result,
            Err(InstallError::RefusedByInstalled {
                refusal: PolicyRefusal::Rollback {
                    stored: 6,
                    offered: 5
                },
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(snapshot(&s.root.join("etc")), before);

    // The gateway reloads 6 fine.
    let loaded = gateway
        .load_or_refuse(&s.configured(), &trusted, 1, &site(), now())
        .unwrap();
    assert_eq!(loaded.policy.policy.serial, 6);
}

#[test]
fn install_converts_a_plain_directory_and_keeps_two_versions() {
    let s = Site::new();
    let key = SigningKey::generate().unwrap();
    let trusted = [key.trusted_key().unwrap()];
    let etc = s.root.join("etc");
    let configured_dir = s.configured().parent().unwrap().to_owned();

    // A plain directory with a foreign file cannot be swapped as a whole.
    lib_write(&configured_dir, &policy(1), &[&key]);
    fs::write(configured_dir.join("notes.txt"), "operator notes").unwrap();
    let before = snapshot(&etc);
    let incoming = s.dir("incoming");
    lib_write(&incoming, &policy(2), &[&key]);
    let result = s.install_now(&incoming, &trusted);
    match &result {
        Err(InstallError::UnsupportedLayout {
            problem: LayoutProblem::ForeignFiles(names),
            ..
        }) => assert_eq!(names, &["notes.txt"]),
        other => panic!("expected a layout refusal, got {other:?}"),
    }
    assert_eq!(snapshot(&etc), before);
    fs::remove_file(configured_dir.join("notes.txt")).unwrap();

    // First install: the plain directory is moved aside and replaced by the symlink.
    let installed = s.install_now(&incoming, &trusted).unwrap();
    assert!(installed.converted && installed.changed);
    assert!(
        fs::symlink_metadata(&configured_dir)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let original = etc.join("policy.original");
    assert_eq!(installed.previous.as_deref(), Some(original.as_path()));
    assert_eq!(
        fs::read_to_string(original.join("policy.toml")).unwrap(),
        policy(1)
    );
    let v2 = installed.version_dir.clone();
    let v2_name = v2.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        v2_name,
        format!("policy.v2-{}", &sha256_hex(policy(2).as_bytes())[..12])
    );
    assert_eq!(fs::read_link(&configured_dir).unwrap(), Path::new(&v2_name));
    assert_eq!(
        load_installed(&s.configured(), &trusted, 1)
            .unwrap()
            .policy
            .serial,
        2
    );

    // The same files again: nothing to do.
    let again = s.install_now(&incoming, &trusted).unwrap();
    assert!(!again.changed);
    assert_eq!(fs::read_link(&configured_dir).unwrap(), Path::new(&v2_name));

    // Two more: the current and the previous versions are kept, older ones removed.
    lib_write(&incoming, &policy(3), &[&key]);
    let v3 = s.install_now(&incoming, &trusted).unwrap().version_dir;
    lib_write(&incoming, &policy(4), &[&key]);
    let installed = s.install_now(&incoming, &trusted).unwrap();
    assert_eq!(installed.previous.as_deref(), Some(v3.as_path()));
    assert!(!v2.exists(), "v2 removed");
    assert!(v3.is_dir() && installed.version_dir.is_dir() && original.is_dir());
    let visible: Vec<String> = fs::read_dir(&etc)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with(".policy.install.lock"))
        .collect();
    assert_eq!(
        visible.len(),
        4,
        "policy, policy.original, v3, v4: {visible:?}"
    );
}

/// A reader looping over the configured path while installs swap versions (starting
/// from a plain directory, so the conversion is covered) never sees a policy paired
/// with another version's signatures: every read verifies, with 2 of 2 signatures, and
/// yields exactly the bytes signed for its serial.
#[test]
fn install_swaps_atomically_under_a_concurrent_reader() {
    const LAST: u64 = 60;
    let s = Site::new();
    let keys = [
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    ];
    let trusted: Vec<TrustedKey> = keys.iter().map(|k| k.trusted_key().unwrap()).collect();
    let signers: Vec<&SigningKey> = keys.iter().collect();

    // Every version prepared beforehand, each of a different length so that a torn read
    // could not pass for another version either.
    let mut sources = Vec::new();
    let mut digests = HashMap::new();
    for serial in 1..=LAST {
        let text = policy_text(SITE, serial, FROM, UNTIL, &"x".repeat(serial as usize));
        digests.insert(serial, sha256_hex(text.as_bytes()));
        let dir = s.dir(&format!("incoming-{serial}"));
        lib_write(&dir, &text, &signers);
        sources.push((serial, dir));
    }
    let configured_dir = s.configured().parent().unwrap().to_owned();
    fs::create_dir_all(&configured_dir).unwrap();
    for entry in fs::read_dir(&sources[0].1).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, configured_dir.join(path.file_name().unwrap())).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let reader = {
        let stop = Arc::clone(&stop);
        let progress = Arc::clone(&progress);
        let configured = s.configured();
        let trusted = trusted.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut failures = Vec::new();
            let mut seen = Vec::new();
            let mut last = 0;
            loop {
                // One more read after the stop: it sees the last version installed.
                let stopping = stop.load(Ordering::SeqCst);
                reads += 1;
                progress.store(reads, Ordering::SeqCst);
                match load_installed(&configured, &trusted, 2) {
                    Ok(verified) => {
                        let serial = verified.policy.serial;
                        assert_eq!(
                            verified.digest().to_string(),
                            digests[&serial],
                            "serial {serial} with other bytes"
                        );
                        assert!(serial >= last, "went back from {last} to {serial}");
                        if serial != last {
                            seen.push(serial);
                            last = serial;
                        }
                    }
                    Err(error) => failures.push(error.to_string()),
                }
                if stopping {
                    break;
                }
            }
            (reads, failures, seen)
        })
    };

    for (serial, dir) in &sources[1..] {
        let installed = install(dir, &s.configured(), &trusted, 2, &site(), None, now()).unwrap();
        assert_eq!(installed.policy.policy.serial, *serial);
        assert_eq!(installed.converted, *serial == 2);
        // Let the reader start two reads on this version before the next swap, so that
        // swaps land in the middle of reads whatever the scheduling on a loaded machine.
        let target = progress.load(Ordering::SeqCst) + 2;
        let deadline = Instant::now() + Duration::from_secs(5);
        while progress.load(Ordering::SeqCst) < target && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, failures, seen) = reader.join().expect("the reader's checks held");

    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed, first: {}",
        failures.len(),
        failures[0]
    );
    assert!(
        reads >= 2 * (LAST - 1),
        "only {reads} reads: the reader hardly ran"
    );
    let every_installed: Vec<u64> = (2..=LAST).collect();
    assert!(
        seen.ends_with(&every_installed),
        "the reader missed versions: {seen:?}"
    );
    eprintln!(
        "{reads} reads during {} installs, {} versions seen, no failure",
        LAST - 1,
        seen.len()
    );
}
