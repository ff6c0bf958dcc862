//! Composition: builds every component from the configuration, wires them together
//! and owns the shutdown order. The only module that knows them all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use std::collections::HashMap;

use crate::channel::{Channel, ChannelSettings};
use crate::cli::Command;
use crate::config::{Config, ConfigError, RtspSecret, UserKind};
use crate::http::{HttpApi, HttpServer, HttpUsers, UsersHandle};
use crate::ingest::{IngestSettings, IngestTransport};
use crate::interventions::{InterventionSettings, InterventionStore};
use crate::journal::{
    ClockState, Event, Journal, JournalSettings, LinkDown, LinkUp, PolicyLoaded, PolicyRefused,
    ProcessStart, ProcessStop, SystemClock, TlsItem, TlsReloaded,
};
use crate::link::{CatalogProvider, DialTarget, Importer, LinkHandle, LinkSettings, PartnerLink};
use crate::management::{ManagementServer, Readiness};
use crate::notify::Notifier;
use crate::policy::{AgentKind, LastRefusal, PolicyRefusal, PolicyStore, SigningKey};
use crate::rtsp::{RtspServer, RtspSettings, RtspUser, Secret};
use crate::tls::{LinkTls, PartnerTrust, TlsSettings};
use crate::webrtc::WhepService;

use gateway::Gateway;

mod demo_cmd;
mod gateway;
mod status;
mod tools;

/// Exit status for a bad configuration (sysexits `EX_USAGE`), fixed by the CLI contract.
pub const EXIT_CONFIG: u8 = 64;
/// Exit status for a refused policy (sysexits `EX_DATAERR`), fixed by the CLI contract.
pub const EXIT_POLICY: u8 = 65;

/// Runs one subcommand to completion and returns the process's exit status.
pub fn main(command: Command) -> ExitCode {
    match command {
        Command::Run { config, ready_file } => {
            let config = match load_config(&config) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match block_on(run(config, ready_file)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check {
            config,
            config_only,
        } => check(&config, config_only),
        Command::Keygen {
            dir,
            name,
            password_file,
        } => tools::keygen(&dir, &name, password_file.as_deref()),
        Command::Policy(command) => tools::policy_command(command),
        Command::Pki(command) => tools::pki_command(command),
        Command::Audit(command) => tools::audit_command(command),
        Command::Demo {
            dir,
            ephemeral_ports,
            ready_file,
        } => match block_on(demo_cmd::demo(dir, ephemeral_ports, ready_file)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("demo: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Camsim {
            listen,
            udp_ports,
            user,
            cameras,
            ready_file,
        } => match block_on(camsim(listen, &udp_ports, &user, cameras, ready_file)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{error:#}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    // Building a runtime only fails if the OS refuses threads or an epoll fd, before
    // anything else could run: there is nothing to recover.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("passerelle")
        .build()
        .expect("the tokio runtime starts");
    runtime.block_on(future)
}

fn load_config(path: &Path) -> Result<Config, ExitCode> {
    let loaded = Config::load(path, std::env::vars_os()).and_then(|config| {
        config.check_files()?;
        Ok(config)
    });
    loaded.map_err(|error: ConfigError| {
        eprintln!("{error}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check(path: &Path, config_only: bool) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    println!("configuration {}: ok", config.path.display());
    if config_only {
        return ExitCode::SUCCESS;
    }
    tools::check_policy(&config)
}

/// Runs the gateway until SIGTERM or SIGINT.
pub async fn run(config: Config, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let metrics = crate::metrics::install().context("installing the metrics recorder")?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(GatewayState::default());
    let mut listeners = BTreeMap::new();

    let channel_settings = channel_settings(&config);
    let mut local = HashMap::new();
    let mut ingests = Vec::new();
    for camera in &config.cameras {
        let channel = Channel::new(camera.id.clone(), channel_settings.clone());
        let handle = crate::ingest::spawn(
            ingest_settings(camera)?,
            channel.clone(),
            shutdown_rx.clone(),
        );
        local.insert(
            camera.id.clone(),
            gateway::LocalCamera {
                channel,
                status: handle.watch_status(),
            },
        );
        ingests.push(handle);
    }
    let imports = config
        .partners
        .iter()
        .filter_map(|partner| {
            let prefix = partner.prefix.clone()?;
            Some((
                partner.id.clone(),
                gateway::ImportRule {
                    prefix,
                    patterns: partner.import.clone(),
                },
            ))
        })
        .collect();
    let journal = open_journal(&config);
    let gateway = Arc::new(Gateway::new(
        config.site.id.clone(),
        local,
        imports,
        channel_settings,
        journal.clone(),
    ));
    let policy = Arc::new(PolicyLoader::new(&config));
    {
        let (policy, gateway) = (Arc::clone(&policy), Arc::clone(&gateway));
        tokio::task::spawn_blocking(move || policy.reload(&gateway)).await?;
    }
    // Exports whether a policy is in force, also when none could be admitted.
    gateway.policy_clock_tick();
    let _ = state.gateway.set(Arc::clone(&gateway));
    // Measured bitrates, for the grants' `max_bitrate_kbps` at admission.
    let sampler = {
        let (gateway, shutdown) = (Arc::clone(&gateway), shutdown_rx.clone());
        tokio::spawn(async move {
            let mut second = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = wait_for(shutdown.clone()) => return,
                    _ = second.tick() => gateway.sample_bitrates(),
                }
            }
        })
    };
    let journal_task = journal
        .clone()
        .map(|journal| tokio::spawn(journal.run(wait_for(shutdown_rx.clone()))));

    let link = start_link(&config, &gateway)?;
    let mut link_watchers = Vec::new();
    if let Some(link) = link {
        listeners.insert("quic", link.local_addr());
        if let Some(journal) = &journal {
            link_watchers = journal_links(&link, journal, &config);
            link_watchers.push(tokio::spawn(send_checkpoints(
                journal.subscribe_checkpoints(),
                link.clone(),
            )));
        }
        gateway.attach_link(link);
    }

    let rtsp = RtspServer::bind(
        rtsp_settings(&config),
        rtsp_users(&config)?,
        Arc::clone(&gateway),
    )
    .await
    .with_context(|| format!("binding rtsp.listen {}", config.rtsp.listen))?;
    listeners.insert("rtsp", rtsp.local_addr()?);
    let rtsp_users = rtsp.users();
    let rtsp_task = tokio::spawn(rtsp.run(wait_for(shutdown_rx.clone())));
    let site_status = Arc::new(status::AppStatus::new(
        Arc::clone(&gateway),
        config.webrtc.max_sessions,
    ));
    let http = start_http(
        &config,
        journal.as_ref(),
        &shutdown_rx,
        &site_status,
        &gateway,
    )
    .await?;
    let mut http_reload = None;
    let mut http_task = None;
    let mut whep = None;
    if let Some(Http {
        server,
        users,
        interventions,
        whep: service,
    }) = http
    {
        whep = Some(service);
        listeners.insert("http", server.local_addr());
        http_reload = Some(HttpReload {
            tls: server.tls(),
            users,
        });
        gateway.attach_interventions(interventions);
        http_task = Some(tokio::spawn(server.serve(wait_for(shutdown_rx.clone()))));
    }

    let notifier = Notifier::from_env();
    // Both registered before READY=1: from then on systemd may send SIGHUP or SIGTERM at
    // any time, and their default actions would end the process on the spot.
    let hangups = hangup_signal();
    let stop = shutdown_signal();
    let policy_task = tokio::spawn(watch_policy(
        policy,
        Arc::clone(&gateway),
        Arc::new(config.clone()),
        Arc::new(UsersReload {
            http: http_reload,
            rtsp: rtsp_users,
        }),
        shutdown_rx.clone(),
        hangups,
        notifier,
    ));

    let management = ManagementServer::bind(
        config.management.listen,
        metrics,
        Arc::clone(&state) as Arc<dyn Readiness>,
        site_status as Arc<dyn crate::status::SiteStatus>,
    )
    .await
    .with_context(|| format!("binding management.listen {}", config.management.listen))?;
    listeners.insert("management", management.local_addr()?);
    let management_task = tokio::spawn(management.serve(wait_for(shutdown_rx.clone())));

    for (name, addr) in &listeners {
        tracing::info!(listener = name, %addr, "listening");
        println!("{name} {addr}");
    }
    if let Some(path) = &ready_file {
        write_ready_file(path, &listeners)
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    state.set_ready();
    notifier.ready();

    let ended = || {
        [
            ("rtsp", rtsp_task.is_finished()),
            ("policy", policy_task.is_finished()),
            ("management", management_task.is_finished()),
            (
                "http",
                http_task.as_ref().is_some_and(|task| task.is_finished()),
            ),
            (
                "journal",
                journal_task.as_ref().is_some_and(|task| task.is_finished()),
            ),
            // A hung fsync never ends the task: it stops its ticks.
            (
                "journal (stuck)",
                journal.as_ref().is_some_and(Journal::stuck),
            ),
        ]
        .into_iter()
        .find_map(|(task, ended)| ended.then_some(task))
    };
    notifier.watchdog_until(stop, ended).await;
    notifier.stopping();
    tracing::info!("stopping");
    // WebRTC sessions end first: their ends are journaled before the process stop.
    if let Some(whep) = &whep {
        whep.shutdown().await;
    }
    if let Some(link) = gateway.link() {
        link.shutdown().await;
    }
    for watcher in link_watchers {
        watcher.abort();
    }
    if let Some(journal) = &journal
        && let Err(error) = journal.append(Event::ProcessStop(ProcessStop {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            reason: "signal".to_owned(),
        }))
    {
        tracing::error!(%error, "could not journal the stop");
    }
    shutdown_tx.send_replace(true);
    rtsp_task.await?;
    policy_task.await?;
    sampler.await?;
    if let Some(task) = http_task {
        task.await??;
    }
    for ingest in ingests {
        if let Err(error) = ingest.join().await {
            tracing::warn!(%error, "camera ingest task failed");
        }
    }
    management_task.await??;
    if let Some(task) = journal_task {
        // The journal closes last: every session's end is on record, then the final
        // checkpoint is signed and fsynced.
        match task.await? {
            Ok(checkpoint) => tracing::info!(head = checkpoint.head_seq, "journal closed"),
            Err(error) => tracing::error!(%error, "journal did not close cleanly"),
        }
    }
    Ok(())
}

/// Opens the access journal and records the start; `None` when it cannot be opened:
/// the gateway still runs for local use, refuses every viewing session, and `/readyz`
/// says not ready.
fn open_journal(config: &Config) -> Option<Journal> {
    let opened = SigningKey::from_file(&config.audit.journal_key, None)
        .map_err(|error| {
            format!(
                "journal key {}: {error}",
                config.audit.journal_key.display()
            )
        })
        .and_then(|key| {
            Journal::open(
                JournalSettings::new(&config.audit.dir, config.audit.retention_days),
                key,
                Arc::new(SystemClock),
            )
            .map_err(|error| format!("journal {}: {error}", config.audit.dir.display()))
        });
    let journal = match opened {
        Ok(journal) => journal,
        Err(error) => {
            tracing::error!(%error, "the access journal cannot be opened: viewing sessions are refused");
            return None;
        }
    };
    let trusted_keys = tools::read_trusted_keys(&config.policy.trusted_keys)
        .map(|keys| keys.iter().map(|key| key.id().to_string()).collect())
        .unwrap_or_default();
    let start = Event::ProcessStart(ProcessStart {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        config_sha256: config.sha256_hex(),
        trusted_keys,
        signatures_required: u32::try_from(config.policy.signatures_required).unwrap_or(u32::MAX),
    });
    if let Err(error) = journal.append(start) {
        tracing::error!(%error, "could not journal the start");
    }
    tracing::info!(journal = %journal.id(), dir = %config.audit.dir.display(), "access journal open");
    Some(journal)
}

/// Journals each link's ups and downs, from the link's status.
fn journal_links(
    link: &LinkHandle,
    journal: &Journal,
    config: &Config,
) -> Vec<tokio::task::JoinHandle<()>> {
    config
        .partners
        .iter()
        .filter_map(|partner| link.watch_status(&partner.id))
        .map(|mut status| {
            let journal = journal.clone();
            tokio::spawn(async move {
                let mut was_up: Option<(String, String)> = None;
                loop {
                    let now = status.borrow_and_update().clone();
                    let event = match (&was_up, now.connected) {
                        (None, true) => {
                            let address = now.remote.map(|a| a.to_string()).unwrap_or_default();
                            was_up = Some((address.clone(), String::new()));
                            Some(Event::LinkUp(LinkUp {
                                peer: now.partner.to_string(),
                                certificate_sha256: now
                                    .certificate_sha256
                                    .clone()
                                    .unwrap_or_default(),
                                address,
                                direction: now.direction.map(|d| format!("{d:?}").to_lowercase()),
                            }))
                        }
                        (Some((address, _)), false) => {
                            let event = Event::LinkDown(LinkDown {
                                peer: now.partner.to_string(),
                                address: Some(address.clone()),
                                why: "closed".to_owned(),
                            });
                            was_up = None;
                            Some(event)
                        }
                        _ => None,
                    };
                    let came_up = matches!(event, Some(Event::LinkUp(_)));
                    if let Some(event) = event
                        && let Err(error) = journal.append(event)
                    {
                        tracing::error!(%error, "could not journal a link change");
                    }
                    if came_up {
                        // A partner gets our signed head as soon as its link is up, not
                        // only at the next minute: it journals where our chain stood.
                        let journal = journal.clone();
                        let signed =
                            tokio::task::spawn_blocking(move || journal.checkpoint()).await;
                        if !matches!(signed, Ok(Ok(_))) {
                            tracing::error!("could not sign a checkpoint for the new link");
                        }
                    }
                    if status.changed().await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect()
}

/// Sends each new checkpoint of our journal to every partner (which journals it) and
/// to the log (syslog under systemd).
async fn send_checkpoints(
    mut checkpoints: watch::Receiver<Option<crate::journal::Checkpoint>>,
    link: LinkHandle,
) {
    while checkpoints.changed().await.is_ok() {
        let Some(checkpoint) = checkpoints.borrow_and_update().clone() else {
            continue;
        };
        tracing::info!(target: "passerelle::journal::checkpoint", "{}", checkpoint.syslog_line());
        link.send_checkpoint(&crate::control::Checkpoint {
            journal_id: checkpoint.journal.to_string(),
            sequence: checkpoint.head_seq,
            head_hash: *checkpoint.head_hash.as_bytes(),
            time: checkpoint.at,
            signature: checkpoint.signature.0,
        });
    }
}

/// The policy store and what it needs to reload: the paths and trusted keys of
/// `[policy]`, and our site.
pub(crate) struct PolicyLoader {
    store: std::sync::Mutex<PolicyStore>,
    file: PathBuf,
    trusted_keys: Vec<PathBuf>,
    signatures_required: usize,
    site: crate::ids::SiteId,
}

impl PolicyLoader {
    fn new(config: &Config) -> PolicyLoader {
        for reason in PolicyRefusal::REASONS {
            metrics::counter!("passerelle_policy_reload_failures_total", "reason" => reason)
                .absolute(0);
        }
        let required = config.policy.signatures_required.to_string();
        if let Ok(keys) = tools::read_trusted_keys(&config.policy.trusted_keys) {
            for key in keys {
                metrics::gauge!(
                    "passerelle_policy_trusted_keys_info",
                    "key" => key.id().to_string(),
                    "required" => required.clone()
                )
                .set(1.0);
            }
        }
        PolicyLoader {
            store: std::sync::Mutex::new(PolicyStore::new(&config.site.state_dir)),
            file: config.policy.file.clone(),
            trusted_keys: config.policy.trusted_keys.clone(),
            signatures_required: config.policy.signatures_required,
            site: config.site.id.clone(),
        }
    }

    fn trusted_key_ids(&self) -> Vec<String> {
        tools::read_trusted_keys(&self.trusted_keys)
            .map(|keys| keys.iter().map(|key| key.id().to_string()).collect())
            .unwrap_or_default()
    }

    /// Reads, verifies and admits the configured policy (start and SIGHUP): on success
    /// it is persisted, then put in force; on refusal the policy in force stays. Blocks
    /// on file I/O and fsync: run it off the async workers.
    fn reload(&self, gateway: &Gateway) {
        let now = jiff::Timestamp::now();
        let mut store = self
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let loaded = tools::read_trusted_keys(&self.trusted_keys)
            .map_err(|error| (error, "unreadable"))
            .and_then(|trusted| {
                store
                    .load_or_refuse(
                        &self.file,
                        &trusted,
                        self.signatures_required,
                        &self.site,
                        now,
                    )
                    .map_err(|refusal| (refusal.to_string(), refusal.reason()))
            });
        match loaded {
            Ok(loaded) => {
                let policy = &loaded.policy.policy;
                let signers: Vec<String> = loaded
                    .policy
                    .signers()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                tracing::info!(
                    serial = policy.serial,
                    valid_until = %policy.valid_until,
                    validity = loaded.admission.validity.as_str(),
                    signers = signers.join(","),
                    k = self.signatures_required,
                    "policy applied"
                );
                // Signatures that did not count: unknown keys, duplicates, bad files.
                for ignored in &loaded.policy.signatures.ignored {
                    tracing::warn!(
                        file = %ignored.file,
                        key = ?ignored.key_id.map(|id| id.to_string()),
                        why = ?ignored.why,
                        "policy signature ignored"
                    );
                }
                metrics::gauge!("passerelle_policy_serial").set(policy.serial as f64);
                metrics::gauge!("passerelle_policy_valid_until_timestamp_seconds")
                    .set(policy.valid_until.as_second() as f64);
                if let Some(journal) = gateway.journal() {
                    let loaded_event = Event::PolicyLoaded(PolicyLoaded {
                        serial: policy.serial,
                        sha256: loaded.policy.digest().to_string(),
                        signers: signers.clone(),
                        valid_until: policy.valid_until,
                        trusted_keys: self.trusted_key_ids(),
                        signatures_required: u32::try_from(self.signatures_required)
                            .unwrap_or(u32::MAX),
                    });
                    if let Err(error) = journal.append(loaded_event) {
                        tracing::error!(%error, "could not journal the policy");
                    }
                }
                gateway.apply_policy(loaded.policy);
            }
            Err((error, reason)) => {
                metrics::counter!("passerelle_policy_reload_failures_total", "reason" => reason)
                    .increment(1);
                tracing::error!(%error, reason, "policy refused; the policy in force stays");
                if let Some(journal) = gateway.journal()
                    && let Err(journal_error) =
                        journal.append(Event::PolicyRefused(PolicyRefused {
                            serial: None,
                            sha256: None,
                            signers: Vec::new(),
                            error: error.clone(),
                        }))
                {
                    tracing::error!(%journal_error, "could not journal the refusal");
                }
                gateway.policy_refused(LastRefusal {
                    reason,
                    message: error,
                    at: now,
                });
            }
        }
    }
}

/// The clock's synchronisation as the journal records it: at start and at each change.
///
/// Read from systemd-timesyncd's flag file (`/run/systemd/timesync/synchronized`, present
/// once it has synchronised); with another NTP client the state reads as not known to be
/// synchronised, with no source.
#[derive(Default)]
struct ClockWatch {
    last: Option<bool>,
}

impl ClockWatch {
    const TIMESYNCD_FLAG: &'static str = "/run/systemd/timesync/synchronized";

    fn check(&mut self, journal: Option<&Journal>) {
        let synchronized = Path::new(Self::TIMESYNCD_FLAG).exists();
        if self.last == Some(synchronized) {
            return;
        }
        self.last = Some(synchronized);
        let state = Event::ClockState(ClockState {
            synchronized,
            source: synchronized.then(|| "systemd-timesyncd".to_owned()),
            offset_ms: None,
        });
        if let Some(journal) = journal
            && let Err(error) = journal.append(state)
        {
            tracing::error!(%error, "could not journal the clock state");
        }
    }
}

/// Longest time between two re-evaluations of every stream and session by the clock.
const CLOCK_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Reloads the policy, certificates and tokens at each SIGHUP, and re-evaluates every
/// stream and viewing session at each hours-window edge and validity bound (and at
/// least every minute), so a closing window cuts at once.
async fn watch_policy(
    loader: Arc<PolicyLoader>,
    gateway: Arc<Gateway>,
    config: Arc<Config>,
    users: Arc<UsersReload>,
    shutdown: watch::Receiver<bool>,
    mut hangups: Option<tokio::signal::unix::Signal>,
    notifier: Notifier,
) {
    let mut clock = ClockWatch::default();
    clock.check(gateway.journal());
    loop {
        // Re-evaluate at the next hours-window edge or validity bound, so a closing
        // window cuts at once; and at least every minute regardless.
        let now = jiff::Timestamp::now();
        let wait = gateway
            .policy()
            .and_then(|verified| crate::policy::next_change(&verified.policy, now))
            .and_then(|at| std::time::Duration::try_from(at.duration_since(now)).ok())
            .map_or(CLOCK_RECHECK, |until| until.min(CLOCK_RECHECK));
        tokio::select! {
            _ = wait_for(shutdown.clone()) => return,
            Some(()) = async { match hangups.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading the policy, certificates, keys and CRLs");
                notifier.reloading();
                let (loader, gateway, config) =
                    (Arc::clone(&loader), Arc::clone(&gateway), Arc::clone(&config));
                let users = Arc::clone(&users);
                let reloaded = tokio::task::spawn_blocking(move || {
                    loader.reload(&gateway);
                    // The file as it is now gives the partners' identities (a partner
                    // removed from it is disconnected), the certificates and the users;
                    // other changes need a restart, and the log names them.
                    let fresh = match Config::load(&config.path, std::env::vars_os()) {
                        Ok(fresh) => {
                            let sections = needs_restart(&config, &fresh);
                            if !sections.is_empty() {
                                tracing::warn!(
                                    sections = sections.join(", "),
                                    "the configuration changed where only a restart applies it"
                                );
                            }
                            Some(fresh)
                        }
                        Err(error) => {
                            tracing::error!(%error, "configuration not reloaded; the one in force stays");
                            None
                        }
                    };
                    let current = fresh.as_ref().unwrap_or(&config);
                    reload_link_tls(current, &gateway);
                    users.reload(current);
                });
                if let Err(error) = reloaded.await {
                    tracing::error!(%error, "policy reload task failed");
                }
                notifier.ready();
            }
            () = tokio::time::sleep(wait) => {
                gateway.policy_clock_tick();
                clock.check(gateway.journal());
            }
        }
    }
}

/// The `[http]` listener and what it serves: the interventions API today.
struct Http {
    server: HttpServer,
    users: UsersHandle,
    interventions: InterventionStore,
    whep: WhepService<Gateway>,
}

/// What SIGHUP reloads for the `[http]` listener: its certificate and the users' tokens.
struct HttpReload {
    tls: Option<crate::http::HttpTlsHandle>,
    users: UsersHandle,
}

impl HttpReload {
    fn reload(&self, config: &Config) {
        if let Some(tls) = &self.tls
            && let Err(error) = tls.reload()
        {
            tracing::error!(%error, "HTTPS certificate reload refused; the current one stays");
        }
        match HttpUsers::load(&config.users) {
            Ok(users) => self.users.replace(users),
            Err(error) => tracing::error!(%error, "token reload refused; the current tokens stay"),
        }
    }
}

/// The users SIGHUP reloads: `[[user]]` tokens on `[http]`, secrets on `[rtsp]`.
struct UsersReload {
    http: Option<HttpReload>,
    rtsp: crate::rtsp::RtspUsersHandle,
}

impl UsersReload {
    fn reload(&self, config: &Config) {
        if let Some(http) = &self.http {
            http.reload(config);
        }
        match rtsp_users(config) {
            Ok(users) => {
                tracing::info!(users = users.len(), "RTSP users reloaded");
                self.rtsp.replace(users);
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "RTSP users not reloaded; the current ones stay");
            }
        }
    }
}

/// The sections of `fresh` that differ from the running `config` and that only a
/// restart applies (SIGHUP applies the certificates, the partners' identities and the
/// users).
fn needs_restart(config: &Config, fresh: &Config) -> Vec<&'static str> {
    // A partner removed is applied (disconnected); one added, or one whose addresses,
    // prefix or imports changed, is not.
    let partners_changed = fresh.partners.iter().any(|new| {
        config
            .partners
            .iter()
            .find(|old| old.id == new.id)
            .is_none_or(|old| {
                (&old.addresses, &old.prefix, &old.import)
                    != (&new.addresses, &new.prefix, &new.import)
            })
    });
    [
        ("site", config.site != fresh.site),
        ("quic", config.quic != fresh.quic),
        ("camera", config.cameras != fresh.cameras),
        (
            "partner (added, or addresses, prefix, import)",
            partners_changed,
        ),
        ("policy", config.policy != fresh.policy),
        ("rtsp", config.rtsp != fresh.rtsp),
        ("http", config.http != fresh.http),
        ("webrtc", config.webrtc != fresh.webrtc),
        ("management", config.management != fresh.management),
        ("audit", config.audit != fresh.audit),
        ("channel", config.channel != fresh.channel),
    ]
    .into_iter()
    .filter_map(|(section, changed)| changed.then_some(section))
    .collect()
}

/// Binds the `[http]` listener with the interventions API. Interventions are journaled,
/// so without a journal there is no API (and no viewing session anyway).
async fn start_http(
    config: &Config,
    journal: Option<&Journal>,
    shutdown: &watch::Receiver<bool>,
    site_status: &Arc<status::AppStatus>,
    gateway: &Arc<Gateway>,
) -> anyhow::Result<Option<Http>> {
    let Some(journal) = journal else {
        tracing::warn!("no journal: the interventions API is not served");
        return Ok(None);
    };
    crate::http::describe_metrics();
    let users =
        UsersHandle::new(HttpUsers::load(&config.users).context("reading the users' tokens")?);
    let interventions = InterventionStore::new(InterventionSettings::default(), journal.clone());
    tokio::spawn(interventions.clone().run_expiry(
        Arc::new(SystemClock),
        std::time::Duration::from_secs(1),
        wait_for(shutdown.clone()),
    ));
    let api = HttpApi {
        users: users.clone(),
        interventions: interventions.clone(),
        journal: journal.clone(),
        clock: Arc::new(SystemClock),
        status: Arc::clone(site_status) as Arc<dyn crate::status::SiteStatus>,
    };
    // WebRTC media sockets are bound on the listener's address (loopback in tests).
    let whep = WhepService::new(
        Arc::clone(gateway),
        config.webrtc.clone(),
        config.http.listen.ip(),
    );
    site_status.attach_webrtc({
        let whep = whep.clone();
        Box::new(move || whep.session_count())
    });
    let server = HttpServer::bind(&config.http, api, whep.routes())
        .await
        .with_context(|| format!("binding http.listen {}", config.http.listen))?;
    Ok(Some(Http {
        server,
        users,
        interventions,
        whep,
    }))
}

/// Reads our certificate, key and CA, the partners' CAs and the CRLs, and exports
/// their expiry dates.
fn load_link_tls(config: &Config) -> Result<LinkTls, crate::tls::TlsError> {
    let trust: Vec<PartnerTrust> = config
        .partners
        .iter()
        .map(|partner| PartnerTrust {
            id: partner.id.clone(),
            ca: partner.ca.clone(),
            allow_any_ca: partner.allow_any_ca,
        })
        .collect();
    let settings = TlsSettings {
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
        ca: config.tls.ca.clone(),
        crl: config.tls.crl.iter().cloned().collect(),
    };
    let tls = LinkTls::load(&config.site.id, &settings, &trust)?;
    for expiry in tls.expiries() {
        metrics::gauge!("passerelle_tls_cert_expiry_timestamp_seconds", "cert" => expiry.cert.clone())
            .set(expiry.not_after as f64);
    }
    Ok(tls)
}

/// SIGHUP for the link: certificates, keys, CAs and CRLs are read again; new handshakes
/// use them and every live link is identified again (a revoked, expired or removed
/// partner is closed). On error the current ones stay.
fn reload_link_tls(config: &Config, gateway: &Gateway) {
    let Some(link) = gateway.link() else { return };
    let item = |error: Option<String>| {
        Event::TlsReloaded(TlsReloaded {
            item: TlsItem::Certificate,
            path: config.tls.cert.display().to_string(),
            sha256: None,
            not_after: None,
            error,
        })
    };
    let event = match load_link_tls(config) {
        Ok(tls) => {
            tracing::info!("certificates, keys and CRLs reloaded; live links re-checked");
            let own = tls.own_certificate().clone();
            link.tls_reloaded(Arc::new(tls));
            Event::TlsReloaded(TlsReloaded {
                item: TlsItem::Certificate,
                path: config.tls.cert.display().to_string(),
                sha256: Some(own.sha256.clone()),
                not_after: jiff::Timestamp::from_second(own.not_after).ok(),
                error: None,
            })
        }
        Err(error) => {
            tracing::error!(%error, "TLS reload refused; the current certificates stay");
            item(Some(error.to_string()))
        }
    };
    if let Some(journal) = gateway.journal()
        && let Err(error) = journal.append(event)
    {
        tracing::error!(%error, "could not journal the TLS reload");
    }
}

/// Binds the link when the site has partners (a site without any shares nothing).
fn start_link(config: &Config, gateway: &Arc<Gateway>) -> anyhow::Result<Option<LinkHandle>> {
    if config.partners.is_empty() {
        return Ok(None);
    }
    let tls = load_link_tls(config).context("loading [tls]")?;
    let partners = config
        .partners
        .iter()
        .map(|partner| PartnerLink {
            id: partner.id.clone(),
            addresses: partner
                .addresses
                .iter()
                .map(|address| DialTarget {
                    host: address.host.clone(),
                    port: address.port,
                })
                .collect(),
            prefix: partner.prefix.clone(),
        })
        .collect();
    let quic = &config.quic;
    let settings = LinkSettings {
        keep_alive: quic.keep_alive,
        idle_timeout: quic.idle_timeout,
        initial_mtu: quic.initial_mtu,
        max_mtu: quic.max_mtu,
        mtu_discovery: quic.mtu_discovery,
        dscp_tos: quic.dscp.tos(),
        media_transport: match quic.media_transport {
            crate::config::MediaTransport::Datagram => crate::link::MediaTransport::Datagram,
            crate::config::MediaTransport::Stream => crate::link::MediaTransport::Stream,
        },
        ..LinkSettings::new(config.site.id.clone(), quic.listen, partners)
    };
    let provider: Arc<dyn CatalogProvider> = Arc::clone(gateway) as Arc<dyn CatalogProvider>;
    let importer: Arc<dyn Importer> = Arc::clone(gateway) as Arc<dyn Importer>;
    let link = LinkHandle::bind(settings, Arc::new(tls), provider, importer)
        .with_context(|| format!("binding quic.listen {}", quic.listen))?;
    Ok(Some(link))
}

/// The channel tuning of `[channel]`, and the largest payload that fits a QUIC datagram
/// at the initial MTU: the MTU less the QUIC short header, DATAGRAM frame, AEAD tag,
/// flow id and RTP header (about 60 bytes; 100 keeps a margin for long connection ids).
fn channel_settings(config: &Config) -> ChannelSettings {
    let channel = &config.channel;
    ChannelSettings {
        keyframe_cache_max_bytes: channel.keyframe_cache_max_bytes,
        keyframe_cache_max_duration: channel.keyframe_cache_max_duration,
        sink_queue_packets: channel.sink_queue_packets,
        keyframe_request_interval: channel.keyframe_request_interval,
        max_payload: usize::from(config.quic.initial_mtu).saturating_sub(100),
    }
}

fn ingest_settings(camera: &crate::config::CameraSettings) -> anyhow::Result<IngestSettings> {
    let credentials = camera
        .credentials_file
        .as_ref()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("camera {}: reading {}", camera.id, path.display()))?;
            let line = text.lines().next().unwrap_or_default();
            let (user, password) = line.split_once(':').with_context(|| {
                format!(
                    "camera {}: {} must hold USER:PASSWORD",
                    camera.id,
                    path.display()
                )
            })?;
            anyhow::Ok((user.to_owned(), password.to_owned()))
        })
        .transpose()?;
    Ok(IngestSettings {
        credentials,
        on_demand: camera.on_demand,
        transport: match camera.transport {
            crate::config::CameraTransport::Tcp => IngestTransport::Tcp,
            crate::config::CameraTransport::Udp => IngestTransport::Udp,
        },
        linger: camera.linger,
        probe_interval: camera.probe_interval,
        ..IngestSettings::new(camera.id.clone(), camera.url.clone())
    })
}

fn rtsp_settings(config: &Config) -> RtspSettings {
    let rtsp = &config.rtsp;
    RtspSettings {
        listen: rtsp.listen,
        udp_ports: rtsp.udp_ports.first()..=rtsp.udp_ports.last(),
        session_timeout: rtsp.session_timeout,
        describe_timeout: rtsp.describe_timeout,
        dscp_tos: config.quic.dscp.tos(),
        ..RtspSettings::default()
    }
}

/// The `[[user]]`s that have an RTSP secret, with it read from its file.
fn rtsp_users(config: &Config) -> anyhow::Result<Vec<RtspUser>> {
    let read = |path: &Path| -> anyhow::Result<String> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(text.trim_end_matches(['\n', '\r']).to_owned())
    };
    config
        .users
        .iter()
        .filter_map(|user| {
            let secret = match user.rtsp_secret.as_ref()? {
                RtspSecret::PasswordFile(path) => read(path).map(Secret::Password),
                RtspSecret::Ha1File(path) => read(path).map(Secret::Ha1),
            };
            Some(secret.map(|secret| RtspUser {
                name: user.name.clone(),
                kind: match user.kind {
                    UserKind::Agent => AgentKind::Agent,
                    UserKind::Service => AgentKind::Service,
                },
                secret,
                cameras: user.cameras.clone(),
            }))
        })
        .collect()
}

/// `passerelle camsim`: serves the fixtures until SIGTERM or SIGINT.
async fn camsim(
    listen: SocketAddr,
    udp_ports: &str,
    user: &str,
    cameras: Vec<crate::camsim::SimulatedCamera>,
    ready_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (first, last) = udp_ports
        .split_once('-')
        .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
        .context("--udp-ports: expected FIRST-LAST")?;
    let (name, password) = user
        .split_once(':')
        .context("--user: expected USER:PASSWORD")?;
    let cameras = if cameras.is_empty() {
        crate::camsim::sncf_cameras()
    } else {
        cameras
    };
    let settings = crate::rtsp::RtspSettings {
        listen,
        udp_ports: first..=last,
        ..crate::rtsp::RtspSettings::default()
    };
    let user = crate::rtsp::RtspUser {
        name: name.to_owned(),
        kind: crate::policy::AgentKind::Service,
        secret: crate::rtsp::Secret::Password(password.to_owned()),
        cameras: vec!["**".parse().context("the any-camera pattern")?],
    };
    let sim = crate::camsim::Camsim::start(settings, user, &cameras).await?;
    let addr = sim.local_addr()?;
    for camera in &cameras {
        println!(
            "rtsp://{name}:{password}@{addr}/{} ({})",
            camera.id,
            camera.fixture.name()
        );
    }
    if let Some(path) = &ready_file {
        write_ready_file(path, &BTreeMap::from([("rtsp", addr)]))?;
    }
    sim.run(shutdown_signal()).await;
    Ok(())
}

/// What `/readyz` reports: ready once the listeners are bound; the policy and links
/// are details, so a partner's outage never takes this box out of its pair.
#[derive(Default)]
struct GatewayState {
    ready: std::sync::atomic::AtomicBool,
    gateway: std::sync::OnceLock<Arc<Gateway>>,
}

impl GatewayState {
    fn set_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Readiness for GatewayState {
    fn ready(&self) -> bool {
        let journal_writable = self
            .gateway
            .get()
            .and_then(|gateway| gateway.journal().map(Journal::writable))
            .unwrap_or(false);
        self.ready.load(std::sync::atomic::Ordering::Acquire) && journal_writable
    }

    fn details(&self) -> serde_json::Value {
        self.gateway
            .get()
            .map_or(serde_json::Value::Null, |gateway| gateway.status())
    }
}

async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    // An error means the sender is gone, which is a shutdown too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Waits for SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled, so a signal in between is not lost.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// The SIGHUP stream that reloads the policy and certificates; `None` (logged) if the
/// handler cannot be installed.
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|error| {
            tracing::warn!(%error, "cannot watch SIGHUP: policy reload needs a restart");
        })
        .ok()
}

/// Writes `{"pid": .., "listeners": {name: addr}}` atomically (temp file, rename), so a
/// reader never sees half a file.
fn write_ready_file(path: &Path, listeners: &BTreeMap<&str, SocketAddr>) -> std::io::Result<()> {
    let body = serde_json::json!({
        "pid": std::process::id(),
        "listeners": listeners
            .iter()
            .map(|(name, addr)| (name.to_string(), serde_json::Value::String(addr.to_string())))
            .collect::<serde_json::Map<_, _>>(),
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(&tmp, path)
}
