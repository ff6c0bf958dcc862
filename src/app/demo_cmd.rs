//! `passerelle demo`: the SNCF → CSU chain of the Metz topology on loopback.
//!
//! Three processes of this same binary, started in order because each needs the
//! previous one's address: the camera simulator (the SNCF station cameras), the SNCF
//! gateway pulling them, and the CSU gateway dialling the SNCF. Files (certificates,
//! signed policies, configurations, logs) go to one directory, kept for inspection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::camsim::{CONTROL_ROOM_CAMERA, sncf_cameras};
use crate::demo::{CAMERA_CREDENTIALS, CSU_OPERATOR, CSU_OPERATOR_TOKEN, Listeners, MetzKit};

/// How long each process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Fixed loopback ports, so the printed URLs are the same at every run.
struct Ports {
    camsim: u16,
    sncf: Listeners,
    csu: Listeners,
}

impl Ports {
    fn fixed() -> Ports {
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Ports {
            camsim: 8556,
            sncf: Listeners {
                rtsp: at(8555),
                quic: at(4433),
                management: at(9465),
                http: at(8444),
                rtsp_udp_first: 30200,
            },
            csu: Listeners {
                rtsp: at(8554),
                quic: at(4434),
                management: at(9464),
                http: at(8443),
                rtsp_udp_first: 30000,
            },
        }
    }

    /// Every listener on a port the system chooses (tests, or a busy machine).
    fn ephemeral() -> Ports {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let range = || 33_000 + (rand::random::<u16>() % 250) * 100;
        let listeners = |rtsp_udp_first| Listeners {
            rtsp: any,
            quic: any,
            management: any,
            http: any,
            rtsp_udp_first,
        };
        Ports {
            camsim: 0,
            sncf: listeners(range()),
            csu: listeners(range()),
        }
    }
}

/// The running processes; dropping it stops them.
struct Children(Vec<(&'static str, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        // The CSU first, the camera simulator last: each stops while its source still runs.
        for (_, child) in self.0.iter().rev() {
            // SIGTERM lets each gateway stop in order; `kill` is the portable way to send
            // it without unsafe code.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, child) in &mut self.0 {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = child.try_wait() {
                eprintln!("demo: {name} did not stop in time; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Runs the demo until SIGINT or SIGTERM.
pub(super) async fn demo(
    dir: Option<PathBuf>,
    ephemeral: bool,
    ready_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("passerelle-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ports = if ephemeral {
        Ports::ephemeral()
    } else {
        Ports::fixed()
    };
    let exe = std::env::current_exe().context("finding this program")?;
    let kit = MetzKit::new().context("generating certificates and keys")?;
    let mut children = Children(Vec::new());

    let camsim_ready = dir.join("camsim.ready.json");
    let camsim = spawn(
        &exe,
        &dir,
        "camsim",
        &[
            "camsim",
            "--listen",
            &format!("127.0.0.1:{}", ports.camsim),
            "--user",
            CAMERA_CREDENTIALS,
            "--ready-file",
            &camsim_ready.display().to_string(),
        ],
    )?;
    children.0.push(("camsim", camsim));
    let camsim = wait_ready(&camsim_ready, &mut children).await?;

    let sncf_dir = dir.join("sncf");
    kit.sncf(ports.sncf, listener(&camsim, "rtsp")?)?
        .write(&sncf_dir, "passerelle.toml")
        .context("writing the SNCF site")?;
    let sncf = start_gateway(&exe, &sncf_dir, "sncf", &mut children).await?;

    let csu_dir = dir.join("csu");
    kit.csu(ports.csu, listener(&sncf, "quic")?)?
        .write(&csu_dir, "passerelle.toml")
        .context("writing the CSU site")?;
    let csu = start_gateway(&exe, &csu_dir, "csu", &mut children).await?;

    print_guide(&dir, &csu, &sncf)?;
    if let Some(path) = &ready_file {
        let mut listeners = BTreeMap::new();
        listeners.insert("rtsp", listener(&csu, "rtsp")?);
        listeners.insert("management", listener(&csu, "management")?);
        listeners.insert("http", listener(&csu, "http")?);
        listeners.insert("quic", listener(&sncf, "quic")?);
        listeners.insert("sncf_rtsp", listener(&sncf, "rtsp")?);
        listeners.insert("sncf_management", listener(&sncf, "management")?);
        listeners.insert("camsim", listener(&camsim, "rtsp")?);
        super::write_ready_file(path, &listeners)?;
    }

    tokio::select! {
        () = super::shutdown_signal() => {}
        exited = watch_children(&mut children) => {
            eprintln!("demo: {exited} stopped; stopping the others (see the logs in {})", dir.display());
        }
    }
    drop(children);
    Ok(())
}

fn spawn(exe: &Path, dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    Command::new(exe)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting the {name} process"))
}

async fn start_gateway(
    exe: &Path,
    site_dir: &Path,
    name: &'static str,
    children: &mut Children,
) -> anyhow::Result<serde_json::Value> {
    let ready = site_dir.join("ready.json");
    let config = site_dir.join("passerelle.toml");
    let child = spawn(
        exe,
        site_dir,
        name,
        &[
            "run",
            "-c",
            &config.display().to_string(),
            "--ready-file",
            &ready.display().to_string(),
        ],
    )?;
    children.0.push((name, child));
    wait_ready(&ready, children).await
}

/// Polls a child's ready file (it is written atomically once its listeners are bound).
async fn wait_ready(path: &Path, children: &mut Children) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text)
                .with_context(|| format!("reading {}", path.display()));
        }
        for (name, child) in &mut children.0 {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited ({status}) before it was ready: see its log");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{} did not appear within {READY_TIMEOUT:?}", path.display())
}

fn listener(ready: &serde_json::Value, name: &str) -> anyhow::Result<SocketAddr> {
    ready["listeners"][name]
        .as_str()
        .and_then(|addr| addr.parse().ok())
        .with_context(|| format!("no {name} listener in {ready}"))
}

/// Resolves with the name of the first child that exits.
async fn watch_children(children: &mut Children) -> &'static str {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        for (name, child) in &mut children.0 {
            if let Ok(Some(_)) = child.try_wait() {
                return name;
            }
        }
    }
}

fn print_guide(
    dir: &Path,
    csu: &serde_json::Value,
    sncf: &serde_json::Value,
) -> anyhow::Result<()> {
    let (user, password) = CSU_OPERATOR;
    let rtsp = listener(csu, "rtsp")?;
    println!("passerelle demo: SNCF -> CSU of the Metz topology on loopback");
    println!("files and logs: {}", dir.display());
    println!();
    println!("At the CSU, as the operator {user}, open in a browser (the status page; the token");
    println!("after # stays in the browser, it is never sent in a URL):");
    println!(
        "  http://{}/#token={CSU_OPERATOR_TOKEN}",
        listener(csu, "http")?
    );
    println!();
    println!("or in VLC or ffplay (password {password}):");
    let cameras = sncf_cameras();
    let (refused, granted): (Vec<_>, Vec<_>) = cameras
        .iter()
        .partition(|camera| camera.id.as_str() == CONTROL_ROOM_CAMERA);
    for camera in granted {
        println!(
            "  rtsp://{user}:{password}@{rtsp}/sncf/{}   ({})",
            camera.id,
            camera.fixture.name()
        );
    }
    println!();
    println!("Not granted by the SNCF policy: the CSU answers 404, and no packet crosses:");
    for camera in refused {
        println!("  rtsp://{user}:{password}@{rtsp}/sncf/{}", camera.id);
    }
    println!();
    println!(
        "Metrics: http://{}/metrics (CSU), http://{}/metrics (SNCF)",
        listener(csu, "management")?,
        listener(sncf, "management")?
    );
    println!("Ctrl-C stops everything.");
    Ok(())
}
