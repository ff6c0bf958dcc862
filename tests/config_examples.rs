//! Every gateway configuration under `deploy/` loads and validates.
//!
//! `deploy/` also holds signed policies, which are TOML too. A file is told apart by its
//! top-level keys, not by its name:
//! - a gateway configuration has a `[site]` table;
//! - a policy has a top-level `serial` (and `version`, `site` as a string);
//! - anything else fails this test, so that a new kind of TOML file in `deploy/` is
//!   classified here on purpose rather than skipped by accident.
//!
//! Referenced files (certificates, keys) need not exist: loading does not open them
//! (`Config::check_files` does, for `passerelle check`).

use std::path::{Path, PathBuf};

use passerelle::config::Config;

#[derive(Debug, PartialEq, Eq)]
enum TomlKind {
    GatewayConfig,
    Policy,
}

fn classify(path: &Path, text: &str) -> TomlKind {
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|err| panic!("{}: not TOML: {err}", path.display()));
    match (table.get("site"), table.get("serial")) {
        (Some(toml::Value::Table(_)), None) => TomlKind::GatewayConfig,
        (Some(toml::Value::Table(_)), Some(_)) => panic!(
            "{}: both a [site] table and a top-level `serial`: which is it?",
            path.display()
        ),
        (_, Some(_)) => TomlKind::Policy,
        _ => panic!(
            "{}: neither a gateway configuration (a [site] table) nor a policy (a top-level \
             `serial`); classify it in tests/config_examples.rs",
            path.display()
        ),
    }
}

fn toml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    for entry in entries {
        let path = entry.expect("readable deploy/ entry").path();
        if path.is_dir() {
            toml_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "toml") {
            found.push(path);
        }
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

#[test]
fn every_gateway_config_in_deploy_validates() {
    let mut files = Vec::new();
    toml_files(&deploy_dir(), &mut files);
    files.sort();
    let mut configs = 0;
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable example");
        if classify(path, &text) != TomlKind::GatewayConfig {
            continue;
        }
        configs += 1;
        // No environment: the examples must stand on their own.
        if let Err(err) = Config::load(path, std::iter::empty::<(String, String)>()) {
            failures.push(err.to_string());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(configs >= 1, "no gateway configuration found under deploy/");
}

#[test]
fn the_csu_example_is_the_metz_hub() {
    let path = deploy_dir().join("passerelle.example.toml");
    let config = Config::load(&path, std::iter::empty::<(String, String)>())
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(config.site.id.as_str(), "csu.metz.example");
    let partners: Vec<&str> = config.partners.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        partners,
        [
            "sncf.metz.example",
            "ccor.metz.example",
            "corg.gendarmerie.example",
            "police.interieur.example"
        ]
    );
    // The CSU imports SNCF's cameras under `sncf` and dials SNCF; receivers dial the CSU.
    let sncf = &config.partners[0];
    assert_eq!(sncf.prefix.as_ref().map(|p| p.as_str()), Some("sncf"));
    assert_eq!(sncf.import.len(), 5);
    assert!(!sncf.addresses.is_empty());
    assert!(config.partners[1..].iter().all(|p| p.addresses.is_empty()));
    // Relative paths resolve against deploy/.
    assert_eq!(
        config.tls.cert,
        deploy_dir().join("tls/csu.metz.example.crt")
    );
    assert_eq!(config.audit.retention_days, 183);
}

#[test]
fn a_policy_file_is_not_taken_for_a_gateway_config() {
    let policy = "version = 1\nsite = \"csu.metz.example\"\nserial = 7\n";
    assert_eq!(classify(Path::new("policy.toml"), policy), TomlKind::Policy);
    let config = "[site]\nid = \"csu.metz.example\"\n";
    assert_eq!(
        classify(Path::new("gw.toml"), config),
        TomlKind::GatewayConfig
    );
}
