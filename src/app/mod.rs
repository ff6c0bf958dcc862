//! Composition: builds every component from the configuration, wires them together
//! and owns the shutdown order. The only module that knows them all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::cli::Command;
use crate::config::{Config, ConfigError};
use crate::management::{ManagementServer, Readiness};

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

    let management = ManagementServer::bind(
        config.management.listen,
        metrics,
        Arc::clone(&state) as Arc<dyn Readiness>,
    )
    .await
    .with_context(|| format!("binding management.listen {}", config.management.listen))?;

    let mut listeners = BTreeMap::new();
    listeners.insert("management", management.local_addr()?);
    let management_task = tokio::spawn(management.serve(wait_for(shutdown_rx.clone())));

    for (name, addr) in &listeners {
        tracing::info!(listener = name, %addr, "listening");
    }
    if let Some(path) = &ready_file {
        write_ready_file(path, &listeners)
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    state.set_ready();

    shutdown_signal().await;
    tracing::info!("stopping");
    shutdown_tx.send_replace(true);
    management_task.await??;
    Ok(())
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

/// What `/readyz` reports.
#[derive(Default)]
struct GatewayState {
    ready: std::sync::atomic::AtomicBool,
}

impl GatewayState {
    fn set_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Readiness for GatewayState {
    fn ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    fn details(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    // An error means the sender is gone, which is a shutdown too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
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
