//! The offline commands: `check`, `keygen`, `policy sign|verify|show`.
//!
//! They print to stdout (the library's components never do) and map failures to the
//! exit statuses of the CLI contract.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::{AuditCommand, ExportFormat, PkiCommand, PolicyCommand};
use crate::config::Config;
use crate::ids::SiteId;
use crate::pki;
use crate::policy::{
    self, EffectiveGrant, Policy, PolicyLoadError, SigningKey, StoredPolicyState, TrustedKey,
    VerifiedPolicy,
};

use super::{EXIT_CONFIG, EXIT_POLICY};

/// `passerelle check`: the configuration was loaded by the caller; this checks the
/// policy it names and prints the effective grants.
pub(super) fn check_policy(config: &Config) -> ExitCode {
    let verified = match load_configured_policy(config) {
        Ok(verified) => verified,
        Err(error) => {
            eprintln!("policy refused: {error}");
            return ExitCode::from(EXIT_POLICY);
        }
    };
    let policy = &verified.policy;
    println!("{}", describe(&verified));
    let now = jiff::Timestamp::now();
    if let Err(reason) = policy::policy_status(policy, &config.site.id, now) {
        eprintln!(
            "policy refused: {} (policy site {}, our site {}, valid {} to {})",
            reason.message(),
            policy.site,
            config.site.id,
            policy.valid_from,
            policy.valid_until
        );
        return ExitCode::from(EXIT_POLICY);
    }
    print!("{}", grant_table(policy));
    ExitCode::SUCCESS
}

/// Reads the trusted keys and the policy the configuration names, verifying its
/// signatures before parsing it, and admits it against the serial stored in
/// `state_dir` when that can be read (a rollback or a reused serial is refused as a
/// reload would refuse it).
pub(super) fn load_configured_policy(config: &Config) -> Result<VerifiedPolicy, String> {
    let trusted = read_trusted_keys(&config.policy.trusted_keys)?;
    let verified = policy::load_installed(
        &config.policy.file,
        &trusted,
        config.policy.signatures_required,
    )
    .map_err(|error: PolicyLoadError| error.to_string())?;
    if let Ok(stored) = StoredPolicyState::read(&config.site.state_dir) {
        policy::store::admit(
            stored.as_ref(),
            &verified,
            &config.site.id,
            jiff::Timestamp::now(),
        )
        .map_err(|refusal| refusal.to_string())?;
    }
    Ok(verified)
}

pub(super) fn read_trusted_keys(paths: &[std::path::PathBuf]) -> Result<Vec<TrustedKey>, String> {
    paths
        .iter()
        .map(|path| TrustedKey::from_file(path).map_err(|error| error.to_string()))
        .collect()
}

/// `passerelle keygen`.
pub(super) fn keygen(dir: &Path, name: &str, password_file: Option<&Path>) -> ExitCode {
    let password = match password_file
        .map(policy::keys::read_password_file)
        .transpose()
    {
        Ok(password) => password,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match policy::keys::keygen(dir, name, password.as_deref()) {
        Ok(files) => {
            println!("key id {}", files.key_id);
            println!("public key: {}", files.public.display());
            println!("secret key: {}", files.secret.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// `passerelle policy ...`.
pub(super) fn policy_command(command: PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Install { dir, config } => match super::load_config(&config) {
            Ok(config) => install_policy(&config, &dir),
            Err(code) => code,
        },
        PolicyCommand::Sign {
            policy,
            key,
            password_file,
            signer,
        } => {
            let signed = password_file
                .as_deref()
                .map(policy::keys::read_password_file)
                .transpose()
                .and_then(|password| SigningKey::from_file(&key, password.as_deref()))
                .and_then(|key| {
                    policy::keys::sign_policy_file(
                        &policy,
                        &key,
                        signer.as_deref(),
                        jiff::Timestamp::now(),
                    )
                });
            match signed {
                Ok(path) => {
                    println!("signature written to {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::from(EXIT_POLICY)
                }
            }
        }
        PolicyCommand::Verify {
            policy,
            keys,
            signatures_required,
        } => {
            let verified = read_trusted_keys(&keys).and_then(|trusted| {
                policy::load_policy_dir(&policy, &trusted, signatures_required)
                    .map_err(|error| error.to_string())
            });
            match verified {
                Ok(verified) => {
                    println!("{}", describe(&verified));
                    print!("{}", grant_table(&verified.policy));
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("policy refused: {error}");
                    ExitCode::from(EXIT_POLICY)
                }
            }
        }
        PolicyCommand::Show { policy } => {
            let parsed = std::fs::read_to_string(&policy)
                .map_err(|error| format!("cannot read {}: {error}", policy.display()))
                .and_then(|text| Policy::parse(&text).map_err(|error| error.to_string()));
            match parsed {
                Ok(parsed) => {
                    println!(
                        "policy for {} serial {} valid {} to {} ({})",
                        parsed.site,
                        parsed.serial,
                        parsed.valid_from,
                        parsed.valid_until,
                        parsed.reference
                    );
                    print!("{}", grant_table(&parsed));
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::from(EXIT_POLICY)
                }
            }
        }
    }
}

fn describe(verified: &VerifiedPolicy) -> String {
    let policy = &verified.policy;
    let signers: Vec<String> = verified.signers().iter().map(|id| id.to_string()).collect();
    format!(
        "policy {} for {} serial {} valid {} to {}, signed by {} (sha256 {})\n{}",
        verified.path.display(),
        policy.site,
        policy.serial,
        policy.valid_from,
        policy.valid_until,
        signers.join(", "),
        verified.digest(),
        policy.reference
    )
}

/// The grant table: partner × cameras × hours × mode × caps × onward × basis.
pub fn grant_table(policy: &Policy) -> String {
    let rows: Vec<[String; 7]> = policy::effective_grants(policy)
        .iter()
        .map(grant_row)
        .collect();
    let header = [
        "partner", "cameras", "hours", "mode", "caps", "onward", "basis",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            // Writing to a String cannot fail.
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no grants: nothing crosses the boundary)\n");
    }
    out
}

fn grant_row(grant: &EffectiveGrant<'_>) -> [String; 7] {
    let join = |items: Vec<String>| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(",")
        }
    };
    let hours = grant.hours.map_or_else(
        || "always".to_owned(),
        |windows| join(windows.iter().map(ToString::to_string).collect()),
    );
    let mut caps = Vec::new();
    if let Some(streams) = grant.max_streams {
        caps.push(format!("{streams} streams"));
    }
    if let Some(kbps) = grant.max_bitrate_kbps {
        caps.push(format!("{kbps} kbit/s"));
    }
    [
        grant.partner.to_string(),
        join(grant.cameras.iter().map(ToString::to_string).collect()),
        hours,
        grant.mode.as_str().to_owned(),
        join(caps),
        join(grant.onward.iter().map(ToString::to_string).collect()),
        grant.basis.to_owned(),
    ]
}

/// `passerelle pki ...`.
pub(super) fn pki_command(command: PkiCommand) -> ExitCode {
    let now = jiff::Timestamp::now();
    let done = match command {
        PkiCommand::Init { dir, name, days } => pki::Validity::days_from(now, days)
            .and_then(|validity| pki::init(&dir, &name, validity))
            .map(|files| {
                println!("CA certificate: {}", files.cert.display());
                println!("CA key: {}", files.key.display());
            })
            .map_err(|error| error.to_string()),
        PkiCommand::Issue {
            ca_cert,
            ca_key,
            site,
            dir,
            days,
        } => site
            .parse::<SiteId>()
            .map_err(|error| format!("--site {site}: {error}"))
            .and_then(|site| {
                pki::Validity::days_from(now, days)
                    .and_then(|validity| pki::issue(&ca_cert, &ca_key, &site, validity, &dir))
                    .map_err(|error| error.to_string())
            })
            .map(|files| {
                println!(
                    "certificate: {} (serial {})",
                    files.cert.display(),
                    files.serial
                );
                println!("key: {}", files.key.display());
            }),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// `passerelle policy install DIR`: verifies the policy and signatures in `source`,
/// admits them against the stored serial, then swaps them in atomically where the
/// configuration reads its policy. The running gateway applies it at its next SIGHUP.
fn install_policy(config: &Config, source: &Path) -> ExitCode {
    let installed = read_trusted_keys(&config.policy.trusted_keys).and_then(|trusted| {
        let stored = StoredPolicyState::read(&config.site.state_dir)
            .map_err(|error| format!("refused: stored policy state unreadable: {error}"))?;
        policy::install(
            source,
            &config.policy.file,
            &trusted,
            config.policy.signatures_required,
            &config.site.id,
            stored.as_ref(),
            jiff::Timestamp::now(),
        )
        .map_err(|error| format!("refused ({}): {error}", error.reason()))
    });
    match installed {
        Ok(installed) if !installed.changed => {
            println!(
                "already installed: serial {}",
                installed.policy.policy.serial
            );
            ExitCode::SUCCESS
        }
        Ok(installed) => {
            println!("{}", describe(&installed.policy));
            println!("installed in {}", installed.version_dir.display());
            println!("send SIGHUP to the gateway (systemctl reload passerelle) to apply it");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("policy {error}");
            ExitCode::from(EXIT_POLICY)
        }
    }
}

/// `passerelle audit ...`.
pub(super) fn audit_command(command: AuditCommand) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match command {
        AuditCommand::Verify { dir, key } => {
            let report = TrustedKey::from_file(&key)
                .map_err(|error| error.to_string())
                .and_then(|key| {
                    crate::journal::verify(&dir, &key).map_err(|error| error.to_string())
                });
            match report {
                Ok(report) => {
                    println!("{report}");
                    if report.is_intact() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
        AuditCommand::Show {
            dir,
            camera,
            partner,
            agent,
            intervention,
            since,
            until,
        } => {
            let camera = match camera
                .map(|c| c.parse::<crate::ids::CameraPattern>())
                .transpose()
            {
                Ok(camera) => camera,
                Err(error) => {
                    eprintln!("--camera: {error}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let filter = crate::journal::Filter {
                camera,
                partner,
                agent,
                intervention,
                since,
                until,
            };
            match crate::journal::show(&dir, &filter, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
        AuditCommand::Export { dir, format } => {
            let ExportFormat::Csv = format;
            match crate::journal::export_csv(&dir, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
