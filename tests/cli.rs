//! The offline commands, run as an operator would: `check`, `keygen`, `policy sign|verify`,
//! with the standard `minisign` tool on the other side.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_passerelle");

fn passerelle(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("PASSERELLE_LOG")
        .output()
        .expect("passerelle runs")
}

fn minisign(args: &[&str], dir: &Path) -> Output {
    Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("minisign is installed (scripts/test installs it)")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const POLICY: &str = r#"version = 1
site = "csu.metz.example"
serial = 3
valid_from = 2026-02-02T00:00:00Z
valid_until = 2099-02-01T23:59:59Z
time_zone = "Europe/Paris"
reference = "Convention de déport d'images, test"

[[grant]]
partner = "ccor.metz.example"
cameras = ["metz/**", "sncf/metz-ville/**"]
mode = "live"
max_streams = 16
basis = "CSI L252-2"
"#;

/// A CSU configuration whose referenced files all exist (their content is not read
/// by `check`'s configuration step).
fn write_config(dir: &Path, trusted_keys: &[&str], signatures_required: usize) -> PathBuf {
    for file in [
        "site.crt",
        "site.key",
        "ca.crt",
        "ccor-ca.crt",
        "journal.key",
    ] {
        std::fs::write(dir.join(file), "placeholder\n").expect("write");
    }
    let keys: Vec<String> = trusted_keys.iter().map(|k| format!("{k:?}")).collect();
    let config = format!(
        r#"[site]
id = "csu.metz.example"
state_dir = "state"

[tls]
cert = "site.crt"
key = "site.key"
ca = "ca.crt"

[[partner]]
id = "ccor.metz.example"
ca = "ccor-ca.crt"

[policy]
file = "policy.toml"
trusted_keys = [{keys}]
signatures_required = {signatures_required}

[audit]
dir = "audit"
retention_days = 183
journal_key = "journal.key"
"#,
        keys = keys.join(", ")
    );
    let path = dir.join("passerelle.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

#[test]
fn check_names_every_bad_key_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &["a.pub"], 1);
    let config = std::fs::read_to_string(&path).expect("read");
    let broken = config
        .replace("retention_days = 183", "retention_days = \"forever\"")
        .replace("[tls]", "[tls]\nciphers = \"all\"");
    std::fs::write(&path, broken).expect("write");

    let out = passerelle(&["check", "-c", "passerelle.toml"], dir.path());
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("audit.retention_days"), "{stderr}");
    assert!(stderr.contains("tls.ciphers"), "{stderr}");
}

#[test]
fn keys_and_signatures_interoperate_with_minisign_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("policy.toml"), POLICY).expect("write policy");

    // Our key signs; the standard tool verifies.
    let out = passerelle(&["keygen", "--name", "ours"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = passerelle(&["policy", "sign", "policy.toml", "-s", "ours.key"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = minisign(&["-V", "-p", "ours.pub", "-m", "policy.toml"], d);
    assert!(
        out.status.success(),
        "minisign -V refused our signature: {}",
        text(&out.stderr)
    );

    // The standard tool's key signs as a second signer; we verify 2 of 2.
    let out = minisign(&["-G", "-W", "-p", "theirs.pub", "-s", "theirs.key"], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = minisign(
        &[
            "-S",
            "-s",
            "theirs.key",
            "-m",
            "policy.toml",
            "-x",
            "policy.toml.prefecture.minisig",
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verify = |k: &str| {
        passerelle(
            &[
                "policy",
                "verify",
                "policy.toml",
                "-p",
                "ours.pub",
                "-p",
                "theirs.pub",
                "-k",
                k,
            ],
            d,
        )
    };
    let out = verify("2");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ccor.metz.example"));

    // `check` with 2 of 2 prints the grant table.
    let config = write_config(d, &["ours.pub", "theirs.pub"], 2);
    let out = passerelle(&["check", "-c", config.to_str().expect("utf-8 path")], d);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("ccor.metz.example")
            && table.contains("metz/**")
            && table.contains("16 streams"),
        "{table}"
    );

    // One signature removed: 1 of 2 is refused.
    std::fs::remove_file(d.join("policy.toml.prefecture.minisig")).expect("remove");
    let out = verify("2");
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stdout));

    // A tampered policy is refused even with enough signatures on the old bytes.
    std::fs::write(
        d.join("policy.toml"),
        POLICY.replace("serial = 3", "serial = 4"),
    )
    .expect("tamper");
    let out = verify("1");
    assert_eq!(out.status.code(), Some(65));
    let out = passerelle(&["check", "-c", config.to_str().expect("utf-8 path")], d);
    assert_eq!(out.status.code(), Some(65));
}

#[test]
fn a_policy_for_another_site_is_refused_by_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let other = POLICY.replace(
        "site = \"csu.metz.example\"",
        "site = \"police.interieur.example\"",
    );
    std::fs::write(d.join("policy.toml"), other).expect("write policy");
    assert!(passerelle(&["keygen", "--name", "k"], d).status.success());
    assert!(
        passerelle(&["policy", "sign", "policy.toml", "-s", "k.key"], d)
            .status
            .success()
    );
    let config = write_config(d, &["k.pub"], 1);

    let out = passerelle(&["check", "-c", config.to_str().expect("utf-8 path")], d);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("police.interieur.example"), "{stderr}");

    let out = passerelle(
        &[
            "check",
            "--config-only",
            "-c",
            config.to_str().expect("utf-8 path"),
        ],
        d,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}
