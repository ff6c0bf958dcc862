//! The deployment kit of `deploy/` is what operators install, so it is tested like code:
//!
//! - every Metz site's `passerelle.toml` passes `passerelle check` once the files it names
//!   exist: throwaway CAs and certificates from `passerelle pki`, policy keys and the
//!   journal key from `passerelle keygen`, and the site's own `policy.toml` signed k of n
//!   (by `passerelle policy sign` and by the real `minisign` tool) and put in place by
//!   `passerelle policy install`, as deploy/README.md tells operators to. The committed
//!   files are used as they are: the configuration is copied into a temporary
//!   `etc/passerelle` (its relative paths resolve there) and `/var/lib/passerelle` is
//!   moved by the configuration's own environment overrides;
//! - every policy grants exactly DESIGN.md's table, and evaluated hop by hop the chain
//!   never lets the CORG or the police see an SNCF camera, nor the CCOR another
//!   commune's or station's;
//! - the configurations are the topology: who dials whom (both boxes of the CSU pair),
//!   documentation addresses, secrets under `secrets/`, the keepalived pair;
//! - deploy/README.md's nftables table of every site passes `nft -c`, and both keepalived
//!   files pass `keepalived -t`, each in a fresh network namespace (as root: CI runs so);
//! - the Prometheus rules pass `promtool check` and their unit tests; the Grafana
//!   dashboard is valid JSON whose queries are valid PromQL; both use only metrics the
//!   binary describes (src/metrics.rs);
//! - the CSU's configuration runs (listeners moved to loopback), and the series its
//!   `/metrics` exports raise exactly the alerts they should.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use passerelle::config::{Config, RtspSecret};
use passerelle::ids::{CameraId, SiteId};
use passerelle::policy::{AgentKind, Mode, Policy, ViewingSession, evaluate};

use support::{CommandOutput, Gateway, http_get, run_bounded};

const SNCF: &str = "sncf.metz.example";
const CSU: &str = "csu.metz.example";
const CCOR: &str = "ccor.metz.example";
const CORG: &str = "corg.gendarmerie.example";
const POLICE: &str = "police.interieur.example";

/// The site directories of `deploy/metz/` and their site ids.
const SITES: [(&str, &str); 5] = [
    ("sncf", SNCF),
    ("csu", CSU),
    ("ccor", CCOR),
    ("corg", CORG),
    ("police", POLICE),
];

/// The DMZ addresses of the CSU pair's two boxes, which every receiver dials.
const CSU_BOXES_V4: [&str; 2] = ["203.0.113.21", "203.0.113.22"];
const CSU_BOXES_V6: [&str; 2] = ["2001:db8:20::21", "2001:db8:20::22"];
/// The VRRP address of the CSU's own clients.
const CSU_VIP: &str = "198.51.100.40";

/// How long one run of a command-line tool may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn site_dir(dir: &str) -> PathBuf {
    deploy_dir().join("metz").join(dir)
}

fn load_deployed_config(dir: &str) -> Config {
    let path = site_dir(dir).join("passerelle.toml");
    Config::load(&path, std::iter::empty::<(String, String)>())
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn load_deployed_policy(dir: &str) -> Policy {
    let path = site_dir(dir).join("policy.toml");
    let text = std::fs::read_to_string(&path).expect("readable policy");
    Policy::parse(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn site(id: &str) -> SiteId {
    id.parse().expect("site id")
}

fn camera(id: &str) -> CameraId {
    id.parse().unwrap_or_else(|err| panic!("{id}: {err:?}"))
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

// ---------------------------------------------------------------------------------------
// Running tools

/// Runs `program args...` with `env` set (through `env(1)`), bounded.
fn run_with_env(program: &str, args: &[&str], env: &[(String, String)]) -> CommandOutput {
    let mut full: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    full.push(program.to_owned());
    full.extend(args.iter().map(|&a| a.to_owned()));
    run_bounded("env", &full, TOOL_TIMEOUT).unwrap_or_else(|err| panic!("{err}"))
}

fn passerelle_bin() -> &'static str {
    env!("CARGO_BIN_EXE_passerelle")
}

/// Runs the passerelle binary; panics with its output unless it exits 0.
fn passerelle_ok(args: &[&str], env: &[(String, String)]) -> CommandOutput {
    let out = run_with_env(passerelle_bin(), args, env);
    assert!(
        out.status.success(),
        "passerelle {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

fn tool_ok(program: &str, args: &[&str]) -> CommandOutput {
    let out = run_bounded(program, args, TOOL_TIMEOUT).unwrap_or_else(|err| panic!("{err}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

fn copy(from: &Path, to: &Path) {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).expect("create parent");
    }
    std::fs::copy(from, to)
        .unwrap_or_else(|err| panic!("{} -> {}: {err}", from.display(), to.display()));
}

fn write(to: &Path, bytes: &[u8]) {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).expect("create parent");
    }
    std::fs::write(to, bytes).unwrap_or_else(|err| panic!("{}: {err}", to.display()));
}

// ---------------------------------------------------------------------------------------
// A deployed site in a temporary root

/// One site of the kit laid out as on its gateway, in a temporary root: the committed
/// configuration in `etc/passerelle`, every file it names made by the binary's own
/// tools, the state under `var/lib/passerelle` (through the environment overrides).
struct DeployedSite {
    root: tempfile::TempDir,
    config_path: PathBuf,
    config: Config,
    /// `PASSERELLE__*` overrides moving `/var/lib/passerelle` into the root.
    env: Vec<(String, String)>,
    /// The policy signers' secret keys, in `trusted_keys` order: (signer name, key).
    signers: Vec<(String, PathBuf)>,
}

impl DeployedSite {
    fn new(dir: &str) -> DeployedSite {
        let root = tempfile::Builder::new()
            .prefix("passerelle-deploy-")
            .tempdir()
            .expect("temp dir");
        let etc = root.path().join("etc/passerelle");
        let var = root.path().join("var/lib/passerelle");
        let config_path = etc.join("passerelle.toml");
        copy(&site_dir(dir).join("passerelle.toml"), &config_path);
        let env = vec![
            (
                "PASSERELLE__SITE__STATE_DIR".to_owned(),
                path_str(&var).to_owned(),
            ),
            (
                "PASSERELLE__AUDIT__DIR".to_owned(),
                path_str(&var.join("audit")).to_owned(),
            ),
        ];
        let config = Config::load(&config_path, env.clone()).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.site.state_dir, var, "the override moved state_dir");
        let mut site = DeployedSite {
            root,
            config_path,
            config,
            env,
            signers: Vec::new(),
        };
        site.make_certificates();
        site.make_keys();
        site.make_secrets();
        site
    }

    fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join("scratch").join(name);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// A CA per organisation (`pki init`), our site certificate (`pki issue`), the
    /// HTTPS certificate when `[http]` names its own, and each partner's CA.
    fn make_certificates(&self) {
        let config = &self.config;
        let ca_dir = self.scratch("ca");
        let ca = |name: &str| {
            passerelle_ok(
                &["pki", "init", "--name", name, "--dir", path_str(&ca_dir)],
                &[],
            );
            (
                ca_dir.join(format!("{name}-ca.pem")),
                ca_dir.join(format!("{name}-ca.key")),
            )
        };
        let issue = |(cert, key): &(PathBuf, PathBuf), name: &str| {
            passerelle_ok(
                &[
                    "pki",
                    "issue",
                    "--ca-cert",
                    path_str(cert),
                    "--ca-key",
                    path_str(key),
                    "--site",
                    name,
                    "--dir",
                    path_str(&ca_dir),
                ],
                &[],
            );
            (
                ca_dir.join(format!("{name}.pem")),
                ca_dir.join(format!("{name}.key")),
            )
        };
        let own = ca("own");
        let (cert, key) = issue(&own, config.site.id.as_str());
        copy(&cert, &config.tls.cert);
        copy(&key, &config.tls.key);
        copy(&own.0, &config.tls.ca);
        if let Some(http) = &config.http.tls
            && http.cert != config.tls.cert
        {
            let name = format!("passerelle.{}", config.site.id);
            let (cert, key) = issue(&own, &name);
            copy(&cert, &http.cert);
            copy(&key, &http.key);
        }
        for (i, partner) in config.partners.iter().enumerate() {
            // A CA shared by several partners (allow_any_ca) is one file, made once.
            if !partner.ca.exists() {
                let (cert, _) = ca(&format!("partner{i}"));
                copy(&cert, &partner.ca);
            }
        }
    }

    /// A key pair per trusted policy signer and the journal key (`keygen`).
    fn make_keys(&mut self) {
        let keys = self.scratch("signers");
        for public in &self.config.policy.trusted_keys {
            let name = public
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("key file name")
                .to_owned();
            passerelle_ok(&["keygen", "--name", &name, "--dir", path_str(&keys)], &[]);
            copy(&keys.join(format!("{name}.pub")), public);
            self.signers
                .push((name.clone(), keys.join(format!("{name}.key"))));
        }
        let journal = self.scratch("journal");
        passerelle_ok(
            &["keygen", "--name", "journal", "--dir", path_str(&journal)],
            &[],
        );
        copy(&journal.join("journal.key"), &self.config.audit.journal_key);
    }

    /// Camera credentials and users' RTSP secrets and tokens.
    fn make_secrets(&self) {
        for camera in &self.config.cameras {
            if let Some(file) = &camera.credentials_file {
                write(file, b"viewer:camera-password\n");
            }
        }
        for user in &self.config.users {
            match &user.rtsp_secret {
                Some(RtspSecret::PasswordFile(file)) => write(file, b"user-password\n"),
                // MD5 hex, as `md5sum` writes it.
                Some(RtspSecret::Ha1File(file)) => {
                    write(file, b"0123456789abcdef0123456789abcdef\n")
                }
                None => {}
            }
            if let Some(file) = &user.token_file {
                write(
                    file,
                    format!("token-of-{}-0123456789\n", user.name).as_bytes(),
                );
            }
        }
    }

    /// Copies the committed policy into a fresh directory to sign. Its validity is
    /// moved around today (the committed one is a real year, which the test must
    /// outlive); every other byte is the committed file's.
    fn stage_policy(&self, dir: &str, name: &str) -> PathBuf {
        let stage = self.scratch(name);
        let text = std::fs::read_to_string(site_dir(dir).join("policy.toml")).expect("policy");
        let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("now");
        let from = now - jiff::SignedDuration::from_hours(24);
        let until = now + jiff::SignedDuration::from_hours(24 * 365);
        let mut replaced = 0;
        let staged: String = text
            .lines()
            .map(|line| {
                if line.starts_with("valid_from = ") {
                    replaced += 1;
                    format!("valid_from = {from}\n")
                } else if line.starts_with("valid_until = ") {
                    replaced += 1;
                    format!("valid_until = {until}\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        assert_eq!(
            replaced, 2,
            "{dir}/policy.toml: one valid_from and one valid_until line"
        );
        write(&stage.join("policy.toml"), staged.as_bytes());
        stage
    }

    /// Signer `index` signs the staged policy: the first with `passerelle policy sign`,
    /// the others with the `minisign` tool, each naming its signature file.
    fn sign(&self, stage: &Path, index: usize) {
        let (name, key) = &self.signers[index];
        let policy = stage.join("policy.toml");
        if index == 0 {
            passerelle_ok(
                &[
                    "policy",
                    "sign",
                    "--key",
                    path_str(key),
                    "--signer",
                    name,
                    path_str(&policy),
                ],
                &[],
            );
        } else {
            let signature = stage.join(format!("policy.toml.{name}.minisig"));
            tool_ok(
                "minisign",
                &[
                    "-S",
                    "-s",
                    path_str(key),
                    "-m",
                    path_str(&policy),
                    "-x",
                    path_str(&signature),
                ],
            );
        }
    }

    fn install(&self, stage: &Path) -> CommandOutput {
        run_with_env(
            passerelle_bin(),
            &[
                "policy",
                "install",
                "-c",
                path_str(&self.config_path),
                path_str(stage),
            ],
            &self.env,
        )
    }

    /// Signs the site's policy k of n and installs it, checking on the way that k - 1
    /// signatures are refused.
    fn install_signed_policy(&self, dir: &str) {
        let k = self.config.policy.signatures_required;
        assert!(k >= 1 && k <= self.signers.len());
        let stage = self.stage_policy(dir, "policy-1");
        for index in 0..k - 1 {
            self.sign(&stage, index);
        }
        let short = self.install(&stage);
        assert_eq!(
            short.status.code(),
            Some(65),
            "{dir}: a policy with {} of the {k} signatures required must be refused:\n{}{}",
            k - 1,
            short.stdout,
            short.stderr
        );
        self.sign(&stage, k - 1);
        let installed = self.install(&stage);
        assert!(
            installed.status.success(),
            "{dir}: policy install with {k} signatures: {}\n{}{}",
            installed.status,
            installed.stdout,
            installed.stderr
        );
    }

    fn check(&self) -> CommandOutput {
        run_with_env(
            passerelle_bin(),
            &["check", "-c", path_str(&self.config_path)],
            &self.env,
        )
    }

    /// Every file under `etc/passerelle`, as (path relative to it, bytes).
    fn etc_files(&self) -> Vec<(String, Vec<u8>)> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).expect("readable dir") {
                let path = entry.expect("entry").path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                // The install lock, and the configuration the harness writes itself.
                if name.starts_with('.') || path == base.join("passerelle.toml") {
                    continue;
                }
                if path.is_dir() {
                    walk(base, &path, out);
                } else {
                    let relative = path.strip_prefix(base).expect("under base");
                    out.push((
                        relative.to_str().expect("UTF-8").to_owned(),
                        std::fs::read(&path).expect("readable file"),
                    ));
                }
            }
        }
        let etc = self.root.path().join("etc/passerelle");
        let mut files = Vec::new();
        walk(&etc, &etc, &mut files);
        files
    }
}

#[test]
fn every_metz_site_passes_check_with_its_policy_signed_k_of_n() {
    for (dir, id) in SITES {
        let site = DeployedSite::new(dir);
        assert_eq!(site.config.site.id.as_str(), id);

        // Before its policy is installed the configuration is fine, the policy step
        // refuses (exit 65): nothing would cross.
        let before = site.check();
        assert_eq!(
            before.status.code(),
            Some(65),
            "{dir}: check without a policy:\n{}{}",
            before.stdout,
            before.stderr
        );
        assert!(before.stdout.contains(": ok"), "{dir}: {}", before.stdout);

        site.install_signed_policy(dir);
        let checked = site.check();
        assert!(
            checked.status.success(),
            "{dir}: passerelle check after install ({}):\n{}{}",
            checked.status,
            checked.stdout,
            checked.stderr
        );
        // The effective grants are printed: each partner of the policy, or none.
        let policy = load_deployed_policy(dir);
        if policy.grants.is_empty() {
            assert!(
                checked.stdout.contains("(no grants"),
                "{dir}: {}",
                checked.stdout
            );
        }
        for grant in &policy.grants {
            assert!(
                checked.stdout.contains(grant.partner.as_str())
                    && checked.stdout.contains(&grant.basis),
                "{dir}: check does not show the grant to {}:\n{}",
                grant.partner,
                checked.stdout
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The policies against DESIGN.md's table

/// One row of DESIGN.md's table, as a grant.
struct ExpectedGrant {
    partner: &'static str,
    cameras: &'static [&'static str],
    mode: Mode,
    onward: &'static [&'static str],
    /// The legal reference the basis must cite.
    cites: &'static str,
}

const CITY: [&str; 5] = [
    "metz/**",
    "marly/**",
    "moulins-les-metz/**",
    "noisseville/**",
    "nouilly/**",
];

fn expected_grants(dir: &str) -> Vec<ExpectedGrant> {
    match dir {
        "sncf" => vec![
            ExpectedGrant {
                partner: CSU,
                cameras: &["metz-ville/**", "metz-nord/**"],
                mode: Mode::OnRequest,
                onward: &[CCOR],
                cites: "Code des transports L1632-2",
            },
            ExpectedGrant {
                partner: CSU,
                cameras: &["woippy/**", "ars-sur-moselle/**", "peltre/**"],
                mode: Mode::OnRequest,
                onward: &[],
                cites: "Code des transports L1632-2",
            },
        ],
        "csu" => vec![
            ExpectedGrant {
                partner: CCOR,
                cameras: &["metz/**", "sncf/metz-ville/**", "sncf/metz-nord/**"],
                mode: Mode::Live,
                onward: &[],
                cites: "CSI L252-2",
            },
            ExpectedGrant {
                partner: CORG,
                cameras: &CITY,
                mode: Mode::Live,
                onward: &[],
                cites: "CSI L252-2",
            },
            ExpectedGrant {
                partner: POLICE,
                cameras: &CITY,
                mode: Mode::Live,
                onward: &[],
                cites: "2023",
            },
        ],
        // The receivers share nothing.
        _ => Vec::new(),
    }
}

#[test]
fn every_policy_grants_exactly_designs_table() {
    for (dir, id) in SITES {
        let policy = load_deployed_policy(dir);
        assert_eq!(policy.site.as_str(), id, "{dir}: policy for another site");
        assert_eq!(policy.version, 1);
        assert_eq!(policy.time_zone.iana_name(), Some("Europe/Paris"), "{dir}");
        assert!(!policy.reference.trim().is_empty(), "{dir}: no reference");
        let span = policy.valid_until.duration_since(policy.valid_from);
        assert!(
            span.is_positive() && span <= jiff::SignedDuration::from_hours(24 * 366),
            "{dir}: a policy is valid for a year at most, found {span:?}"
        );
        let expected = expected_grants(dir);
        assert_eq!(
            policy.grants.len(),
            expected.len(),
            "{dir}: grants {:?}",
            policy.grants
        );
        for (i, (grant, want)) in policy.grants.iter().zip(&expected).enumerate() {
            let at = format!("{dir}/policy.toml grant[{i}]");
            assert_eq!(grant.partner.as_str(), want.partner, "{at}");
            assert_eq!(strings(&grant.cameras), want.cameras, "{at}");
            assert_eq!(grant.mode, want.mode, "{at}");
            assert_eq!(strings(&grant.onward), want.onward, "{at}");
            assert!(grant.hours.is_empty(), "{at}: DESIGN's table has no hours");
            assert!(
                grant.basis.contains(want.cites),
                "{at}: basis {:?} does not cite {}",
                grant.basis,
                want.cites
            );
        }
    }
}

/// An agent of `origin` watching with an open intervention, or its site's VMS.
fn session(origin: &str, kind: AgentKind) -> ViewingSession {
    ViewingSession {
        agent: "agent".to_owned(),
        kind,
        reason: Some("incident en cours".to_owned()),
        intervention: Some("intervention-1".to_owned()),
        origin: site(origin),
    }
}

/// Whether a viewer of `origin` may watch the CSU camera `camera` (its id at the CSU;
/// SNCF cameras under `sncf/`): the CSU's policy decides, and for an SNCF camera the
/// SNCF's policy too, for a session coming from `origin`, as the chain does hop by hop.
fn may_watch(
    sncf: &Policy,
    csu: &Policy,
    origin: &str,
    kind: AgentKind,
    camera_at_csu: &str,
    now: jiff::Timestamp,
) -> bool {
    let session = session(origin, kind);
    let at_sncf = |id: &str| {
        evaluate(
            Some(sncf),
            &site(SNCF),
            &site(CSU),
            &camera(id),
            Some(&session),
            now,
        )
        .is_allowed()
    };
    if origin == CSU {
        // The CSU's own operators: only imported cameras cross a boundary.
        return camera_at_csu.strip_prefix("sncf/").is_none_or(at_sncf);
    }
    let at_csu = evaluate(
        Some(csu),
        &site(CSU),
        &site(origin),
        &camera(camera_at_csu),
        Some(&session),
        now,
    )
    .is_allowed();
    at_csu && camera_at_csu.strip_prefix("sncf/").is_none_or(at_sncf)
}

#[test]
fn the_chain_never_gives_a_camera_beyond_designs_table() {
    let sncf = load_deployed_policy("sncf");
    let csu = load_deployed_policy("csu");
    let now = sncf.valid_from.max(csu.valid_from) + jiff::SignedDuration::from_hours(24);
    // Every camera the CSU has: its own, and the SNCF's under `sncf/`.
    let mut cameras: Vec<String> = load_deployed_config("csu")
        .cameras
        .iter()
        .map(|c| c.id.to_string())
        .collect();
    cameras.extend(
        load_deployed_config("sncf")
            .cameras
            .iter()
            .map(|c| format!("sncf/{}", c.id)),
    );
    let city_of =
        |communes: &[&str], cam: &str| communes.iter().any(|c| cam.starts_with(&format!("{c}/")));
    let five = [
        "metz",
        "marly",
        "moulins-les-metz",
        "noisseville",
        "nouilly",
    ];
    let stations = [
        "metz-ville",
        "metz-nord",
        "woippy",
        "ars-sur-moselle",
        "peltre",
    ];
    for cam in &cameras {
        let watch = |origin, kind| may_watch(&sncf, &csu, origin, kind, cam, now);
        let sncf_camera = cam.starts_with("sncf/");
        let station = cam
            .strip_prefix("sncf/")
            .is_some_and(|id| city_of(&stations, id));
        let ccor_station =
            cam.starts_with("sncf/metz-ville/") || cam.starts_with("sncf/metz-nord/");

        // The CCOR: Metz's cameras and the Metz Ville and Metz Nord stations only.
        let ccor_sees = cam.starts_with("metz/") || ccor_station;
        assert_eq!(
            watch(CCOR, AgentKind::Agent),
            ccor_sees,
            "CCOR agent, {cam}"
        );
        // Its VMS: the city cameras; the SNCF's stay on request, for agents only.
        assert_eq!(
            watch(CCOR, AgentKind::Service),
            cam.starts_with("metz/"),
            "CCOR VMS, {cam}"
        );
        // The CORG and the police: the five communes, never an SNCF camera.
        for receiver in [CORG, POLICE] {
            for kind in [AgentKind::Agent, AgentKind::Service] {
                let sees = watch(receiver, kind);
                assert!(!(sncf_camera && sees), "{receiver} must never get {cam}");
                assert_eq!(sees, city_of(&five, cam), "{receiver} {kind:?}, {cam}");
            }
        }
        // The CSU's operators get the five stations on request, never the control room;
        // its VMS no SNCF camera at all.
        if sncf_camera {
            assert_eq!(watch(CSU, AgentKind::Agent), station, "CSU agent, {cam}");
            assert!(!watch(CSU, AgentKind::Service), "CSU VMS, {cam}");
        }
    }
    // The sample covers what the table distinguishes.
    for needed in [
        "sncf/metz-ville/quai-1",
        "sncf/woippy/quai-1",
        "sncf/poste-de-commande/salle",
        "marly/mairie/entree",
        "montigny-les-metz/place-de-la-mairie",
    ] {
        assert!(
            cameras.iter().any(|c| c == needed),
            "no {needed} in the kit"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The configurations against the topology

fn in_documentation_range(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113))
        }
        IpAddr::V6(v6) => v6.segments()[..2] == [0x2001, 0x0db8],
    }
}

fn dial_hosts(config: &Config, partner: &str) -> Vec<String> {
    config
        .partners
        .iter()
        .find(|p| p.id.as_str() == partner)
        .unwrap_or_else(|| panic!("{}: no partner {partner}", config.site.id))
        .addresses
        .iter()
        .map(|a| {
            assert_eq!(a.port, 4433, "{}: {partner} on 4433", config.site.id);
            a.host.clone()
        })
        .collect()
}

#[test]
fn the_configurations_are_the_metz_topology() {
    let configs: BTreeMap<&str, Config> = SITES
        .iter()
        .map(|(dir, _)| (*dir, load_deployed_config(dir)))
        .collect();
    for (dir, id) in SITES {
        let config = &configs[dir];
        let base = site_dir(dir);
        assert_eq!(config.site.id.as_str(), id);
        // State on /var/lib/passerelle, everything else relative to /etc/passerelle,
        // secrets under secrets/.
        assert_eq!(
            config.site.state_dir,
            Path::new("/var/lib/passerelle"),
            "{dir}"
        );
        assert_eq!(
            config.audit.dir,
            Path::new("/var/lib/passerelle/audit"),
            "{dir}"
        );
        let mut secrets = vec![&config.tls.key, &config.audit.journal_key];
        secrets.extend(
            config
                .cameras
                .iter()
                .filter_map(|c| c.credentials_file.as_ref()),
        );
        for user in &config.users {
            match &user.rtsp_secret {
                Some(RtspSecret::PasswordFile(p) | RtspSecret::Ha1File(p)) => secrets.push(p),
                None => {}
            }
            secrets.extend(user.token_file.as_ref());
        }
        if let Some(http) = &config.http.tls {
            secrets.push(&http.key);
        }
        for secret in secrets {
            assert!(
                secret.starts_with(base.join("secrets")),
                "{dir}: secret {} outside secrets/",
                secret.display()
            );
        }
        let mut public = vec![&config.tls.cert, &config.tls.ca, &config.policy.file];
        public.extend(config.partners.iter().map(|p| &p.ca));
        public.extend(config.policy.trusted_keys.iter());
        for file in public {
            assert!(
                file.starts_with(&base),
                "{dir}: {} not under /etc/passerelle",
                file.display()
            );
        }
        // Documentation addresses everywhere; the clients' side on a LAN address, never
        // on every interface.
        for (what, addr) in [
            ("rtsp", config.rtsp.listen),
            ("http", config.http.listen),
            ("management", config.management.listen),
        ] {
            assert!(
                in_documentation_range(addr.ip()),
                "{dir}: {what}.listen {addr} is not a LAN address of the kit"
            );
        }
        let quic = config.quic.listen;
        assert_eq!(quic.port(), 4433, "{dir}: QUIC on 4433/udp");
        assert!(
            quic.ip().is_unspecified() || in_documentation_range(quic.ip()),
            "{dir}"
        );
        for camera in &config.cameras {
            let host = camera.url.host_str().expect("camera host");
            let ip: IpAddr = host.parse().expect("camera IP");
            assert!(in_documentation_range(ip), "{dir}: camera {host}");
        }
        for partner in &config.partners {
            for address in &partner.addresses {
                let ip: IpAddr = address.host.parse().expect("partner IP");
                assert!(in_documentation_range(ip), "{dir}: partner {address}");
                if ip.is_ipv6() {
                    assert!(
                        quic.ip().is_ipv6(),
                        "{dir}: dialling {address} needs an IPv6 quic.listen"
                    );
                }
            }
        }
    }

    // Who dials whom: the CSU dials the SNCF (which never dials out); every receiver
    // dials both boxes of the CSU pair.
    let sncf = &configs["sncf"];
    let partners: Vec<&str> = sncf.partners.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(partners, [CSU]);
    assert!(dial_hosts(sncf, CSU).is_empty(), "the SNCF never dials out");
    let csu = &configs["csu"];
    let partners: BTreeSet<&str> = csu.partners.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(partners, BTreeSet::from([SNCF, CCOR, CORG, POLICE]));
    assert_eq!(dial_hosts(csu, SNCF), ["203.0.113.10", "2001:db8:10::10"]);
    for receiver in [CCOR, CORG, POLICE] {
        assert!(
            dial_hosts(csu, receiver).is_empty(),
            "{receiver} dials the CSU"
        );
    }
    assert_eq!(dial_hosts(&configs["ccor"], CSU), CSU_BOXES_V4);
    assert_eq!(dial_hosts(&configs["corg"], CSU), CSU_BOXES_V4);
    assert_eq!(dial_hosts(&configs["police"], CSU), CSU_BOXES_V6);
    // The shared Interior CA is declared on both partners it speaks for.
    for partner in &csu.partners {
        let shared = [CORG, POLICE].contains(&partner.id.as_str());
        assert_eq!(partner.allow_any_ca, shared, "csu: {}", partner.id);
    }
    // k of n as deploy/README.md lists the signers.
    let k_of_n: Vec<(usize, usize)> = SITES
        .iter()
        .map(|(dir, _)| {
            let p = &configs[dir].policy;
            (p.signatures_required, p.trusted_keys.len())
        })
        .collect();
    assert_eq!(k_of_n, [(2, 3), (2, 2), (1, 1), (1, 2), (1, 1)]);

    // What each importer asks for is what its provider grants it, in the provider's ids.
    let sncf_policy = load_deployed_policy("sncf");
    let csu_policy = load_deployed_policy("csu");
    let granted = |policy: &Policy, to: &str| -> BTreeSet<String> {
        policy
            .grants
            .iter()
            .filter(|g| g.partner.as_str() == to)
            .flat_map(|g| strings(&g.cameras))
            .collect()
    };
    let imports = |config: &Config, from: &str, prefix: &str| -> BTreeSet<String> {
        let partner = config
            .partners
            .iter()
            .find(|p| p.id.as_str() == from)
            .expect("partner");
        assert_eq!(
            partner.prefix.as_ref().map(ToString::to_string).as_deref(),
            Some(prefix),
            "{}: prefix of {from}",
            config.site.id
        );
        strings(&partner.import).into_iter().collect()
    };
    assert_eq!(imports(csu, SNCF, "sncf"), granted(&sncf_policy, CSU));
    for (dir, id) in [("ccor", CCOR), ("corg", CORG), ("police", POLICE)] {
        assert_eq!(
            imports(&configs[dir], CSU, "csu"),
            granted(&csu_policy, id),
            "{dir}"
        );
        assert!(
            configs[dir].cameras.is_empty(),
            "{dir}: a receiver has no camera"
        );
    }

    // The CSU pair: the clients' listeners on the VRRP address keepalived moves.
    let vip: IpAddr = CSU_VIP.parse().expect("vip");
    assert_eq!(csu.rtsp.listen.ip(), vip);
    assert_eq!(csu.http.listen.ip(), vip);
    assert_eq!(csu.management.listen.ip(), vip);
    assert!(
        csu.quic.listen.ip().is_unspecified(),
        "both DMZ addresses of a box"
    );
}

#[test]
fn the_keepalived_pair_differs_only_where_it_says() {
    let read = |name: &str| std::fs::read_to_string(site_dir("csu").join(name)).expect(name);
    let (a, b) = (read("keepalived-a.conf"), read("keepalived-b.conf"));
    let (a_lines, b_lines): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    assert_eq!(a_lines.len(), b_lines.len());
    let mut differing = 0;
    for (la, lb) in a_lines.iter().zip(&b_lines) {
        if la != lb && !la.starts_with('#') {
            differing += 1;
            assert!(
                la.contains("# csu-b:") && lb.contains("# csu-a:"),
                "an unmarked difference:\n  a: {la}\n  b: {lb}"
            );
        }
    }
    assert_eq!(differing, 4, "router_id, priority, unicast source and peer");
    for (conf, own, peer) in [
        (&a, "198.51.100.41", "198.51.100.42"),
        (&b, "198.51.100.42", "198.51.100.41"),
    ] {
        assert!(conf.contains(&format!("{CSU_VIP}/27 dev lan0")));
        assert!(conf.contains(&format!("unicast_src_ip {own}")));
        assert!(conf.contains(&format!("        {peer} ")));
        assert!(conf.contains("nopreempt") && conf.contains("state BACKUP"));
        assert!(conf.contains("notify_master \"/usr/bin/systemctl start passerelle.service\""));
        assert!(conf.contains("notify_backup \"/usr/bin/systemctl stop passerelle.service\""));
    }
}

// ---------------------------------------------------------------------------------------
// nftables and keepalived, checked by the tools themselves

/// The README file holding the sites' nftables tables.
fn deploy_readme() -> PathBuf {
    deploy_dir().join("README.md")
}

/// The file every table goes to on its gateway, named on the table's first line.
const NFT_FILE: &str = "/etc/nftables.d/passerelle.nft";

/// Panics, naming what is missing, unless this process is root and every `(program,
/// Debian package)` is on `PATH`. CI runs as root and scripts/test installs the
/// packages: a missing one is a broken setup, not a reason to skip.
fn require_root_and(programs: &[(&str, &str)]) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("unknown");
    assert_eq!(
        euid, "0",
        "this test creates network namespaces and must run as root (CI does); effective uid {euid}"
    );
    let path = std::env::var_os("PATH").unwrap_or_default();
    for (program, package) in programs {
        let found = std::env::split_paths(&path).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
        assert!(
            found,
            "`{program}` is not on PATH: install the Debian package {package} (scripts/test does)"
        );
    }
}

/// A fenced block of a Markdown text.
struct Fenced {
    /// The info string after the opening fence (`nft`, `sh`, or empty).
    info: String,
    /// The line of the opening fence, from 1.
    line: usize,
    body: String,
}

/// Every fenced (```) block of `markdown`, in order.
fn fenced_blocks(markdown: &str) -> Vec<Fenced> {
    let mut blocks = Vec::new();
    let mut open: Option<Fenced> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (open.take(), fence) {
            (None, Some(info)) => {
                open = Some(Fenced {
                    info: info.trim().to_owned(),
                    line: i + 1,
                    body: String::new(),
                })
            }
            (None, None) => {}
            (Some(block), Some(_)) => blocks.push(block),
            (Some(mut block), None) => {
                block.body.push_str(line);
                block.body.push('\n');
                open = Some(block);
            }
        }
    }
    assert!(open.is_none(), "an unclosed fenced block in the README");
    blocks
}

/// Whether `ip` lies in `prefix` (`a.b.c.d/len`).
fn in_prefix(ip: Ipv4Addr, prefix: &str) -> bool {
    let Some((net, len)) = prefix.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

#[test]
fn every_sites_nftables_table_passes_nft_check_in_a_fresh_namespace() {
    require_root_and(&[("nft", "nftables"), ("unshare", "util-linux")]);
    let readme = std::fs::read_to_string(deploy_readme()).expect("deploy/README.md");
    let blocks = fenced_blocks(&readme);
    // Tables are found by their fence tag: none may hide in a block without it.
    for block in blocks.iter().filter(|b| b.info != "nft") {
        assert!(
            !block
                .body
                .lines()
                .any(|l| l.trim_start().starts_with("table ")),
            "README line {}: an nftables table in a block not tagged ```nft",
            block.line
        );
    }
    let tables: Vec<&Fenced> = blocks.iter().filter(|b| b.info == "nft").collect();

    let dir = tempfile::tempdir().expect("temp dir");
    let mut covered = BTreeSet::new();
    for table in tables {
        let line = table.line;
        let site_id = table
            .body
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .and_then(|l| l.strip_suffix(&format!(": {NFT_FILE}")))
            .unwrap_or_else(|| {
                panic!("README line {line}: a table must open with `# <site id>: {NFT_FILE}`")
            });
        let (site_dir_name, _) = SITES
            .iter()
            .find(|(_, id)| *id == site_id)
            .unwrap_or_else(|| panic!("README line {line}: {site_id} is not a Metz site"));
        assert!(
            covered.insert(site_id),
            "README line {line}: a second table for {site_id}"
        );
        // The table is this site's: its LAN rules name the /27 of the site's own
        // listeners (its configuration's management address).
        let IpAddr::V4(lan_ip) = load_deployed_config(site_dir_name).management.listen.ip() else {
            panic!("{site_id}: the management listener is not IPv4");
        };
        let words: Vec<&str> = table.body.split_whitespace().collect();
        assert!(
            words
                .windows(3)
                .any(|w| w[..2] == ["ip", "saddr"] && in_prefix(lan_ip, w[2])),
            "README line {line}: the {site_id} table opens no LAN rule for {lan_ip}'s network"
        );

        let file = dir.path().join(format!("{site_dir_name}.nft"));
        write(&file, table.body.as_bytes());
        // A fresh network namespace: an empty ruleset and only `lo`, so the check
        // neither depends on nor touches the host's firewall.
        let out = run_bounded(
            "unshare",
            &["--net", "--", "nft", "-c", "-f", path_str(&file)],
            TOOL_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "README line {line}: the {site_id} table fails `nft -c` ({}; its line N is README \
             line {line} + N):\n{}{}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
    let expected: BTreeSet<&str> = SITES.iter().map(|(_, id)| *id).collect();
    assert_eq!(covered, expected, "one nftables table per Metz site");
}

#[test]
fn the_keepalived_pair_passes_keepalived_config_test_in_a_fresh_namespace() {
    require_root_and(&[
        ("keepalived", "keepalived"),
        ("unshare", "util-linux"),
        ("ip", "iproute2"),
    ]);
    // keepalived -t fails on an interface that does not exist: a fresh namespace gets
    // the two the files name, as a veth pair (one command makes both; container hosts
    // always have veth, while the dummy driver is missing from some kernels).
    let script = "ip link add lan0 type veth peer name dmz0 && exec keepalived -t -f \"$1\"";
    for name in ["keepalived-a.conf", "keepalived-b.conf"] {
        let file = site_dir("csu").join(name);
        let out = run_bounded(
            "unshare",
            &["--net", "--", "sh", "-ec", script, "sh", path_str(&file)],
            TOOL_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "{name} fails `keepalived -t` ({}):\n{}{}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus and Grafana

fn prometheus_dir() -> PathBuf {
    deploy_dir().join("prometheus")
}

/// Every metric src/metrics.rs describes: the binary's own list.
fn described_metrics() -> BTreeSet<String> {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"))
            .expect("src/metrics.rs");
    // The file names metrics only to describe them.
    let names: BTreeSet<String> = metric_names(&source).into_iter().collect();
    assert!(names.len() >= 16, "src/metrics.rs describes {names:?}");
    names
}

/// `passerelle_*` identifiers in `text`, in order.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("passerelle_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The `expr:` values of the rules file (one line each).
fn rule_exprs(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = prometheus_dir();
    let rules = dir.join("passerelle.rules.yml");
    let checked = tool_ok("promtool", &["check", "rules", path_str(&rules)]);
    assert!(checked.stdout.contains("SUCCESS"), "{}", checked.stdout);
    let tested = tool_ok(
        "promtool",
        &[
            "test",
            "rules",
            path_str(&dir.join("passerelle.rules.test.yml")),
        ],
    );
    assert!(tested.stdout.contains("SUCCESS"), "{}", tested.stdout);
    tool_ok(
        "promtool",
        &["check", "config", path_str(&dir.join("prometheus.yml"))],
    );

    let text = std::fs::read_to_string(&rules).expect("rules");
    let tests = std::fs::read_to_string(dir.join("passerelle.rules.test.yml")).expect("tests");
    // The alerts of the kit, each with a severity, a `for:` and both annotations, and
    // each unit-tested firing and silent.
    let alerts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    for wanted in [
        "PasserelleCameraFailed",
        "PasserelleLinkDown",
        "PasserellePacketDrops",
        "PasserellePolicyExpiringSoon",
        "PasserelleCertificateExpiringSoon",
        "PasserellePolicyRefused",
        "PasserelleJournalFailing",
    ] {
        assert!(alerts.contains(&wanted), "no alert {wanted}");
    }
    for group in text.split("- alert: ").skip(1) {
        let name = group.lines().next().unwrap_or("");
        for key in [
            "expr: ",
            "for: ",
            "severity: ",
            "summary: ",
            "description: ",
        ] {
            assert!(group.contains(key), "{name}: no {key}");
        }
        let fires = format!("alertname: {name}\n        exp_alerts:\n          - exp_labels:");
        let silent = format!("alertname: {name}\n        exp_alerts: []");
        assert!(
            tests.contains(&fires) && tests.contains(&silent),
            "{name}: unit-test it firing and silent"
        );
    }
    let described = described_metrics();
    for expr in rule_exprs(&text) {
        for name in metric_names(&expr) {
            assert!(
                described.contains(&name),
                "rules: {name} is not a metric the binary describes"
            );
        }
    }
}

#[test]
fn the_dashboard_queries_only_exported_metrics_in_valid_promql() {
    let path = deploy_dir().join("grafana/passerelle.json");
    let text = std::fs::read_to_string(&path).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");

    // Variables: the Prometheus data source, then site and instance from it.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    for name in ["site", "instance"] {
        let v = variable(name);
        assert_eq!(v["type"], "query");
        assert_eq!(v["datasource"]["uid"], "${datasource}");
        assert_eq!(v["includeAll"], true);
    }

    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("title");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            let expr = target["expr"].as_str().expect("expr");
            assert!(
                expr.contains(r#"site=~"$site""#) && expr.contains(r#"instance=~"$instance""#),
                "{title}: {expr} ignores the variables"
            );
            exprs.push((title.to_owned(), expr.to_owned()));
        }
    }

    let described = described_metrics();
    let used: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for name in &used {
        assert!(
            described.contains(name),
            "dashboard: {name} is not a metric the binary describes"
        );
    }
    for needed in [
        "passerelle_camera_state",
        "passerelle_ingest_packets_total",
        "passerelle_peer_connected",
        "passerelle_peer_rtt_seconds",
        "passerelle_viewers",
        "passerelle_dropped_packets_total",
        "passerelle_policy_serial",
        "passerelle_policy_valid_until_timestamp_seconds",
        "passerelle_tls_cert_expiry_timestamp_seconds",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard has no panel on {needed}"
        );
    }

    // Every query is valid PromQL: promtool parses them as recording rules, with
    // Grafana's variables replaced as Grafana would.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let promql = expr
            .replace("$__rate_interval", "5m")
            .replace("$site", ".*")
            .replace("$instance", ".*");
        // A JSON string is a YAML double-quoted scalar.
        let quoted = serde_json::to_string(&promql).expect("JSON string");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let file = dir.path().join("dashboard.rules.yml");
    write(&file, rules.as_bytes());
    let checked = run_bounded(
        "promtool",
        &["check", "rules", path_str(&file)],
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        checked.status.success(),
        "a dashboard query is not valid PromQL:\n{}{}\n{rules}",
        checked.stdout,
        checked.stderr
    );
}

// ---------------------------------------------------------------------------------------
// A site of the kit running

/// `name{labels} value` lines of an exposition, without comments.
fn samples(exposition: &str) -> Vec<(String, f64)> {
    exposition
        .lines()
        .filter(|l| l.starts_with("passerelle_"))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The labels of a series as `(name, value)`, its metric name first as `__name__`.
fn labels_of(series: &str) -> Vec<(String, String)> {
    let (name, rest) = series.split_once('{').unwrap_or((series, "}"));
    let mut labels = vec![("__name__".to_owned(), name.to_owned())];
    for pair in rest.trim_end_matches('}').split("\",") {
        if let Some((k, v)) = pair.split_once("=\"") {
            labels.push((k.to_owned(), v.trim_end_matches('"').to_owned()));
        }
    }
    labels
}

#[test]
fn a_deployed_site_runs_and_its_series_raise_exactly_the_alerts_they_should() {
    let deployed = DeployedSite::new("csu");
    deployed.install_signed_policy("csu");
    let config_text =
        std::fs::read_to_string(site_dir("csu").join("passerelle.toml")).expect("config");
    let files = deployed.etc_files();
    let udp_first = 40_000 + (rand::random::<u16>() % 100) * 200;
    let mut builder = Gateway::builder(&config_text, &[]);
    for (path, bytes) in &files {
        builder = builder.file(path, bytes);
    }
    // The committed file, with its listeners moved to loopback and its state into the
    // test's directory (relative overrides resolve against the configuration's).
    let env = [
        (
            "PASSERELLE__SITE__STATE_DIR",
            "var/lib/passerelle".to_owned(),
        ),
        (
            "PASSERELLE__AUDIT__DIR",
            "var/lib/passerelle/audit".to_owned(),
        ),
        ("PASSERELLE__QUIC__LISTEN", "127.0.0.1:0".to_owned()),
        ("PASSERELLE__RTSP__LISTEN", "127.0.0.1:0".to_owned()),
        ("PASSERELLE__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
        ("PASSERELLE__MANAGEMENT__LISTEN", "127.0.0.1:0".to_owned()),
        (
            "PASSERELLE__RTSP__UDP_PORTS",
            format!("{udp_first}-{}", udp_first + 99),
        ),
        (
            "PASSERELLE__WEBRTC__UDP_PORTS",
            format!("{}-{}", udp_first + 100, udp_first + 199),
        ),
    ];
    for (key, value) in &env {
        builder = builder.env(key, value);
    }
    let gateway = builder.start();

    // Wait (bounded) until every camera and partner has its series.
    let config = &deployed.config;
    let deadline = Instant::now() + Duration::from_secs(15);
    let exposition =
        loop {
            let text = http_get(
                gateway.addr("management"),
                "/metrics",
                Duration::from_secs(5),
            )
            .expect("metrics")
            .body;
            let all_there =
                config.cameras.iter().all(|c| {
                    text.contains(&format!("passerelle_camera_state{{camera=\"{}\"", c.id))
                }) && config.partners.iter().all(|p| {
                    text.contains(&format!("passerelle_peer_connected{{peer=\"{}\"}}", p.id))
                }) && text.contains("passerelle_policy_serial ");
            if all_there {
                break text;
            }
            assert!(
                Instant::now() < deadline,
                "the CSU never exported its camera, partner and policy series:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
    let samples = samples(&exposition);
    let value = |series: &str| {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no series {series}:\n{exposition}"))
    };

    // The policy installed is in force, signed 2 of 2.
    assert_eq!(value("passerelle_policy_serial"), 1.0);
    assert!(
        value("passerelle_policy_valid_until_timestamp_seconds")
            > jiff::Timestamp::now().as_second() as f64
    );
    let keys = samples
        .iter()
        .filter(|(s, _)| {
            s.starts_with("passerelle_policy_trusted_keys_info{") && s.contains("required=\"2\"")
        })
        .count();
    assert_eq!(keys, 2, "two trusted keys, 2 required:\n{exposition}");
    assert_eq!(value("passerelle_journal_writable"), 1.0);
    // The certificates the expiry alerts watch, under the labels the runbook names.
    for cert in ["site", "ca"].into_iter().map(str::to_owned).chain(
        config
            .partners
            .iter()
            .map(|p| format!("partner_ca:{}", p.id)),
    ) {
        assert!(
            value(&format!(
                "passerelle_tls_cert_expiry_timestamp_seconds{{cert=\"{cert}\"}}"
            )) > 0.0
        );
    }
    // Every partner is unreachable from loopback: their links are down.
    for partner in &config.partners {
        assert_eq!(
            value(&format!(
                "passerelle_peer_connected{{peer=\"{}\"}}",
                partner.id
            )),
            0.0
        );
    }

    // These very series, held for 20 minutes, through the alert rules: exactly the link
    // alerts (no partner is reachable) and a failed alert for each camera that failed.
    let instance = "198.51.100.40:9464";
    let mut input = String::new();
    for (series, v) in &samples {
        let labels: Vec<String> = labels_of(series)
            .into_iter()
            .skip(1)
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .chain([
                "job=\"passerelle\"".to_owned(),
                format!("instance=\"{instance}\""),
                format!("site=\"{CSU}\""),
            ])
            .collect();
        let name = series.split('{').next().unwrap_or(series);
        input.push_str(&format!(
            "      - series: '{name}{{{}}}'\n        values: '{v}x20'\n",
            labels.join(",")
        ));
    }
    let mut expected: Vec<String> = config
        .partners
        .iter()
        .map(|p| {
            format!(
                "ALERTS{{alertname=\"PasserelleLinkDown\",alertstate=\"firing\",severity=\"critical\",job=\"passerelle\",instance=\"{instance}\",site=\"{CSU}\",peer=\"{}\"}}",
                p.id
            )
        })
        .collect();
    for cam in &config.cameras {
        let failed = format!(
            "passerelle_camera_state{{camera=\"{}\",state=\"failed\"}}",
            cam.id
        );
        if samples.iter().any(|(s, v)| *s == failed && *v == 1.0) {
            expected.push(format!(
                "ALERTS{{alertname=\"PasserelleCameraFailed\",alertstate=\"firing\",severity=\"warning\",job=\"passerelle\",instance=\"{instance}\",site=\"{CSU}\",camera=\"{}\",state=\"failed\"}}",
                cam.id
            ));
        }
    }
    let exp_samples: String = expected
        .iter()
        .map(|labels| format!("          - labels: '{labels}'\n            value: 1\n"))
        .collect();
    let rules = prometheus_dir().join("passerelle.rules.yml");
    let test = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{input}    promql_expr_test:\n      - expr: 'ALERTS{{alertstate=\"firing\"}}'\n        eval_time: 15m\n        exp_samples:\n{exp_samples}",
        path_str(&rules)
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("live.test.yml");
    write(&file, test.as_bytes());
    let out = run_bounded(
        "promtool",
        &["test", "rules", path_str(&file)],
        TOOL_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "the live series do not raise exactly {expected:#?}:\n{}{}",
        out.stdout,
        out.stderr
    );
}
