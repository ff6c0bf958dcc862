//! Two (or three) real endpoints on 127.0.0.1, development certificates from
//! `crate::pki`, a provider with one granted and one refused camera fed with synthetic
//! H.264 packets. Every test is bounded in time.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use jiff::Timestamp;
use tokio::sync::Notify;

use super::*;
use crate::channel::{ChannelSettings, SinkEvent, SinkLabel};
use crate::control::{
    CatalogCamera, ControlWriter, FlowId, RequestId, Restrictions, StreamEnded, Subscribe,
    SubscribeError, SubscribeOk,
};
use crate::media::{Codec, MediaPacket, StreamInfo};
use crate::pki::{self, Validity};
use crate::policy::AgentKind;
use crate::tls::{PartnerTrust, TlsSettings};

/// Every test finishes well within this, or fails.
const LIMIT: Duration = Duration::from_secs(30);

const SNCF: &str = "sncf.metz.example";
const CSU: &str = "csu.metz.example";
const CCOR: &str = "ccor.metz.example";
const CORG: &str = "corg.gendarmerie.example";
const GRANTED: &str = "metz-ville/quai-1";
const REFUSED: &str = "woippy/quai-2";

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("test exceeded its time bound")
}

fn id(s: &str) -> SiteId {
    s.parse().unwrap()
}

fn cam(s: &str) -> CameraId {
    s.parse().unwrap()
}

// ---- certificates ----

/// One CA per site, certificates and keys on disk as `LinkTls::load` reads them.
struct Pki {
    dir: tempfile::TempDir,
    cas: Mutex<HashMap<String, (pki::CaPem, PathBuf)>>,
}

impl Pki {
    fn new() -> Arc<Pki> {
        Arc::new(Pki {
            dir: tempfile::tempdir().unwrap(),
            cas: Mutex::new(HashMap::new()),
        })
    }

    fn ca(&self, site: &str) -> (pki::CaPem, PathBuf) {
        let mut cas = self.cas.lock().unwrap();
        cas.entry(site.to_owned())
            .or_insert_with(|| {
                let name = site.split('.').next().unwrap();
                let ca = pki::generate_ca(name, Validity::days_from(Timestamp::now(), 30).unwrap())
                    .unwrap();
                let path = self.dir.path().join(format!("{site}-ca.pem"));
                std::fs::write(&path, &ca.cert_pem).unwrap();
                (ca, path)
            })
            .clone()
    }

    /// `site`'s TLS, trusting each of `partners` through that partner's own CA.
    fn tls(&self, site: &str, partners: &[&str]) -> Arc<LinkTls> {
        let (ca, ca_path) = self.ca(site);
        let issued = pki::issue_pem(
            &ca,
            &id(site),
            Validity::days_from(Timestamp::now(), 10).unwrap(),
        )
        .unwrap();
        let n = self.cas.lock().unwrap().len() + rand::random::<u32>() as usize;
        let cert = self.dir.path().join(format!("{site}-{n}.pem"));
        let key = self.dir.path().join(format!("{site}-{n}.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        let trust: Vec<PartnerTrust> = partners
            .iter()
            .map(|p| PartnerTrust {
                id: id(p),
                ca: self.ca(p).1,
                allow_any_ca: false,
            })
            .collect();
        let settings = TlsSettings {
            cert,
            key,
            ca: ca_path,
            crl: Vec::new(),
        };
        Arc::new(LinkTls::load(&id(site), &settings, &trust).unwrap())
    }
}

/// Channel settings without the keyframe-request rate limit, so each request shows.
fn channel_settings() -> ChannelSettings {
    ChannelSettings {
        keyframe_request_interval: Duration::ZERO,
        ..ChannelSettings::default()
    }
}

// ---- the provider side ----

/// Grants `GRANTED` to every partner and refuses `REFUSED`; records every decision.
struct TestProvider {
    channels: HashMap<CameraId, Channel>,
    granted: Mutex<HashSet<CameraId>>,
    opened: Mutex<Vec<(SiteId, CameraId, ViewingSession)>>,
    closed: Mutex<Vec<(CameraId, ViewEnd)>>,
    streams_refused: Mutex<Vec<CameraId>>,
    /// Restrictions listed with a camera in the catalog (none by default).
    restricted: Mutex<HashMap<CameraId, Restrictions>>,
    changed: Notify,
}

impl TestProvider {
    fn new() -> Arc<TestProvider> {
        let mut channels = HashMap::new();
        for camera in [GRANTED, REFUSED] {
            let channel = Channel::new(cam(camera), channel_settings());
            channel.set_info(StreamInfo {
                codec: Codec::H264,
                clock_rate: 90_000,
                parameter_sets: vec![
                    Bytes::from_static(&[0x67, 0x42, 0x00, 0x1f]),
                    Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]),
                ],
            });
            channels.insert(cam(camera), channel);
        }
        Arc::new(TestProvider {
            channels,
            granted: Mutex::new(HashSet::from([cam(GRANTED)])),
            opened: Mutex::new(Vec::new()),
            closed: Mutex::new(Vec::new()),
            streams_refused: Mutex::new(Vec::new()),
            restricted: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        })
    }

    fn channel(&self, camera: &str) -> Channel {
        self.channels[&cam(camera)].clone()
    }

    fn is_granted(&self, camera: &CameraId) -> bool {
        self.granted.lock().unwrap().contains(camera)
    }

    /// Publishes a synthetic GOP of 25 packets every 250 ms on every camera; each
    /// payload names its camera (second byte) and carries a counter.
    fn feed(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let provider = Arc::clone(self);
        tokio::spawn(async move {
            let mut n: u32 = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                for (tag, camera) in [(1u8, GRANTED), (2u8, REFUSED)] {
                    provider.channel(camera).publish(packet(tag, n));
                }
                n += 1;
            }
        })
    }
}

/// An H.264 single NAL unit packet: IDR every 25th, else a non-IDR slice.
fn packet(tag: u8, n: u32) -> MediaPacket {
    let keyframe = n.is_multiple_of(25);
    let mut payload = BytesMut::with_capacity(64);
    payload.put_u8(if keyframe { 0x65 } else { 0x41 });
    payload.put_u8(tag);
    payload.put_u32(n);
    payload.put_bytes(0xab, 40);
    MediaPacket {
        payload: payload.freeze(),
        timestamp: n.wrapping_mul(3600),
        marker: true,
        keyframe_start: keyframe,
        parameter_set: false,
    }
}

impl CatalogProvider for TestProvider {
    fn policy_serial(&self) -> Option<u64> {
        Some(7)
    }

    /// Ignores `features` on purpose: the link withholds what the peer would not
    /// enforce, whatever the provider lists.
    fn catalog(&self, _partner: &SiteId, _features: &[Feature]) -> Vec<CatalogCamera> {
        let granted = self.granted.lock().unwrap();
        let restricted = self.restricted.lock().unwrap();
        granted
            .iter()
            .map(|camera| CatalogCamera {
                id: camera.clone(),
                codec: Some(Codec::H264),
                parameter_sets: Vec::new(),
                restrictions: restricted.get(camera).cloned().unwrap_or_default(),
                up: true,
            })
            .collect()
    }

    fn stream(
        &self,
        _partner: &SiteId,
        camera: &CameraId,
        _active: &[CameraId],
    ) -> Result<Channel, ErrorCode> {
        if self.is_granted(camera) {
            Ok(self.channels[camera].clone())
        } else {
            self.streams_refused.lock().unwrap().push(camera.clone());
            Err(ErrorCode::NotGranted)
        }
    }

    fn open_view(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: &ViewingSession,
    ) -> ViewDecision {
        if !self.is_granted(camera) {
            return ViewDecision::Now(Err(ErrorCode::NotGranted));
        }
        self.opened
            .lock()
            .unwrap()
            .push((partner.clone(), camera.clone(), session.clone()));
        self.changed.notify_waiters();
        ViewDecision::Now(Ok(()))
    }

    fn check_view(
        &self,
        _partner: &SiteId,
        camera: &CameraId,
        _session: &ViewingSession,
    ) -> Result<(), ErrorCode> {
        if self.is_granted(camera) {
            Ok(())
        } else {
            Err(ErrorCode::Withdrawn)
        }
    }

    fn close_view(
        &self,
        _partner: &SiteId,
        camera: &CameraId,
        _session: &ViewingSession,
        end: ViewEnd,
    ) {
        self.closed.lock().unwrap().push((camera.clone(), end));
        self.changed.notify_waiters();
    }
}

// ---- the importing side ----

#[derive(Default)]
struct TestImporter {
    channels: Mutex<HashMap<CameraId, Channel>>,
    catalogs: Mutex<Vec<(SiteId, Vec<CameraId>)>>,
    checkpoints: Mutex<Vec<(SiteId, Checkpoint)>>,
}

impl TestImporter {
    /// The local channel of `camera`, made now if the link has not asked for it yet.
    fn local(&self, camera: &str) -> Channel {
        self.channels
            .lock()
            .unwrap()
            .entry(cam(camera))
            .or_insert_with(|| Channel::new(cam(camera), channel_settings()))
            .clone()
    }
}

impl Importer for TestImporter {
    fn channel(&self, _partner: &SiteId, camera: &CameraId) -> Option<Channel> {
        Some(self.local(camera.as_str()))
    }

    fn checkpoint(&self, partner: &SiteId, checkpoint: Checkpoint) {
        self.checkpoints
            .lock()
            .unwrap()
            .push((partner.clone(), checkpoint));
    }

    fn catalog_changed(&self, partner: &SiteId, cameras: &[CatalogCamera]) {
        self.catalogs.lock().unwrap().push((
            partner.clone(),
            cameras.iter().map(|c| c.id.clone()).collect(),
        ));
    }
}

// ---- sites ----

struct Site {
    link: LinkHandle,
    provider: Arc<TestProvider>,
    importer: Arc<TestImporter>,
    feeder: tokio::task::JoinHandle<()>,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.feeder.abort();
    }
}

fn settings(site: &str, listen: SocketAddr, partners: Vec<PartnerLink>) -> LinkSettings {
    let mut settings = LinkSettings::new(id(site), listen, partners);
    settings.reconnect_min = Duration::from_millis(50);
    settings.reconnect_max = Duration::from_millis(400);
    settings.handshake_timeout = Duration::from_secs(5);
    settings.view_timeout = Duration::from_secs(5);
    settings
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A partner we only accept.
fn accepted(site: &str) -> PartnerLink {
    PartnerLink {
        id: id(site),
        addresses: Vec::new(),
        prefix: None,
    }
}

/// A partner we dial at `addr` and import from under `prefix`.
fn dialled(site: &str, addr: SocketAddr, prefix: &str) -> PartnerLink {
    PartnerLink {
        id: id(site),
        addresses: vec![DialTarget {
            host: addr.ip().to_string(),
            port: addr.port(),
        }],
        prefix: Some(cam(prefix)),
    }
}

fn start(settings: LinkSettings, tls: Arc<LinkTls>) -> Site {
    let provider = TestProvider::new();
    let importer = Arc::new(TestImporter::default());
    let feeder = provider.feed();
    let link = LinkHandle::bind(
        settings,
        tls,
        Arc::clone(&provider) as Arc<dyn CatalogProvider>,
        Arc::clone(&importer) as Arc<dyn Importer>,
    )
    .unwrap();
    Site {
        link,
        provider,
        importer,
        feeder,
    }
}

/// SNCF providing to the CSU (and CCOR if asked), which dial it.
fn sncf(pki: &Pki, partners: &[&str], transport: MediaTransport) -> Site {
    let mut s = settings(
        SNCF,
        any_port(),
        partners.iter().map(|p| accepted(p)).collect(),
    );
    s.media_transport = transport;
    start(s, pki.tls(SNCF, partners))
}

fn importer_site(pki: &Pki, site: &str, provider: SocketAddr) -> Site {
    let s = settings(site, any_port(), vec![dialled(SNCF, provider, "sncf")]);
    start(s, pki.tls(site, &[SNCF]))
}

async fn wait_connected(link: &LinkHandle, partner: &str, connected: bool) {
    let mut status = link.watch_status(&id(partner)).unwrap();
    status.wait_for(|s| s.connected == connected).await.unwrap();
}

fn session(agent: &str, origin: &str) -> ViewingSession {
    ViewingSession {
        agent: agent.to_owned(),
        kind: AgentKind::Agent,
        reason: Some("rixe quai 1".to_owned()),
        intervention: Some("int-42".to_owned()),
        origin: id(origin),
    }
}

/// Waits for `n` packets from `subscription` and returns their payloads.
async fn packets(subscription: &mut crate::channel::Subscription, n: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    while out.len() < n {
        match subscription.recv().await {
            Some(SinkEvent::Packet(packet)) => out.push(packet.payload),
            Some(_) => {}
            None => panic!("channel closed"),
        }
    }
    out
}

/// Asserts that no packet arrives on `subscription` for `window`.
async fn no_packets(subscription: &mut crate::channel::Subscription, window: Duration) {
    let got = tokio::time::timeout(window, async {
        loop {
            if let Some(SinkEvent::Packet(p)) = subscription.recv().await {
                return p;
            }
        }
    })
    .await;
    assert!(got.is_err(), "a packet crossed: {got:?}");
}

async fn until(mut check: impl FnMut() -> bool) {
    while !check() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_camera_arrives_under_the_prefix_and_refused_camera_never_crosses() {
    bounded(async {
        let pki = Pki::new();
        let sncf = sncf(&pki, &[CSU], MediaTransport::Datagram);
        let csu = importer_site(&pki, CSU, sncf.link.local_addr());
        wait_connected(&csu.link, SNCF, true).await;
        wait_connected(&sncf.link, CSU, true).await;

        // The catalog names the granted camera only.
        until(|| !csu.importer.catalogs.lock().unwrap().is_empty()).await;
        assert_eq!(
            csu.importer.catalogs.lock().unwrap()[0],
            (id(SNCF), vec![cam(GRANTED)])
        );

        // Before any session, nothing flows from the granted camera either.
        let local = csu.importer.local("sncf/metz-ville/quai-1");
        let mut sink = local.subscribe(SinkLabel::local());
        assert_eq!(sncf.provider.channel(GRANTED).subscriber_count(), 0);

        let guard = csu
            .link
            .open_view(
                &id(SNCF),
                &cam("sncf/metz-ville/quai-1"),
                session("agent.dupont", CSU),
            )
            .await
            .expect("granted camera refused");
        assert_eq!(guard.state(), ViewState::Open);

        // The provider decided on the viewer's own identity.
        let opened = sncf.provider.opened.lock().unwrap().clone();
        assert_eq!(opened.len(), 1);
        assert_eq!(opened[0].0, id(CSU));
        assert_eq!(opened[0].1, cam(GRANTED));
        assert_eq!(opened[0].2, session("agent.dupont", CSU));

        // Packets arrive in the prefixed channel: the parameter sets and the granted
        // camera's own packets, in order.
        let got = packets(&mut sink, 40).await;
        let ours: Vec<&Bytes> = got
            .iter()
            .filter(|p| p[0] & 0x1f != 7 && p[0] & 0x1f != 8)
            .collect();
        assert!(ours.len() >= 30, "{got:?}");
        assert!(
            ours.iter().all(|p| p[1] == 1),
            "another camera's packet crossed"
        );
        let counters: Vec<u32> = ours
            .iter()
            .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
            .collect();
        assert!(counters.windows(2).all(|w| w[1] > w[0]), "{counters:?}");
        assert_eq!(local.info().unwrap().codec, Codec::H264);

        // The refused camera: NOT_GRANTED, and zero packets of it cross.
        let refused_local = csu.importer.local("sncf/woippy/quai-2");
        let mut refused_sink = refused_local.subscribe(SinkLabel::local());
        let refused = csu
            .link
            .open_view(
                &id(SNCF),
                &cam("sncf/woippy/quai-2"),
                session("agent.dupont", CSU),
            )
            .await;
        assert_eq!(refused.unwrap_err(), ErrorCode::NotGranted);
        assert_eq!(
            sncf.provider.streams_refused.lock().unwrap().as_slice(),
            &[cam(REFUSED)]
        );
        assert_eq!(sncf.provider.channel(REFUSED).subscriber_count(), 0);
        no_packets(&mut refused_sink, Duration::from_millis(500)).await;

        // A camera outside the partner's prefix is refused before anything is sent.
        let outside = csu
            .link
            .open_view(&id(SNCF), &cam("metz/place"), session("agent.dupont", CSU))
            .await;
        assert_eq!(outside.unwrap_err(), ErrorCode::NotGranted);

        // Closing the last session stops the stream at the provider.
        drop(guard);
        bounded(until(|| {
            sncf.provider
                .closed
                .lock()
                .unwrap()
                .contains(&(cam(GRANTED), ViewEnd::Closed))
        }))
        .await;
        until(|| sncf.provider.channel(GRANTED).subscriber_count() == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_fallback_carries_the_camera() {
    bounded(async {
        let pki = Pki::new();
        let sncf = sncf(&pki, &[CSU], MediaTransport::Stream);
        let csu = importer_site(&pki, CSU, sncf.link.local_addr());
        wait_connected(&csu.link, SNCF, true).await;
        let mut sink = csu
            .importer
            .local("sncf/metz-ville/quai-1")
            .subscribe(SinkLabel::local());
        let _guard = csu
            .link
            .open_view(
                &id(SNCF),
                &cam("sncf/metz-ville/quai-1"),
                session("agent.dupont", CSU),
            )
            .await
            .unwrap();
        let got = packets(&mut sink, 30).await;
        assert!(
            got.iter()
                .filter(|p| p[0] & 0x1f == 1 || p[0] & 0x1f == 5)
                .all(|p| p[1] == 1)
        );
        assert!(got.iter().filter(|p| p[0] & 0x1f == 1).count() >= 10);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_change_withdraws_the_stream_and_ends_the_session() {
    bounded(async {
        let pki = Pki::new();
        let sncf = sncf(&pki, &[CSU], MediaTransport::Datagram);
        let csu = importer_site(&pki, CSU, sncf.link.local_addr());
        wait_connected(&csu.link, SNCF, true).await;
        let local = csu.importer.local("sncf/metz-ville/quai-1");
        let mut sink = local.subscribe(SinkLabel::local());
        let mut guard = csu
            .link
            .open_view(
                &id(SNCF),
                &cam("sncf/metz-ville/quai-1"),
                session("agent.dupont", CSU),
            )
            .await
            .unwrap();
        packets(&mut sink, 5).await;

        // The grant is withdrawn. Security deadline (DESIGN.md): cut within 1 s,
        // measured from the policy change to the last packet seen downstream.
        let withdrawn_at = tokio::time::Instant::now();
        sncf.provider.granted.lock().unwrap().clear();
        sncf.link.policy_changed();
        let mut last_packet = None;
        let watch_for = Duration::from_millis(1500);
        while let Ok(Some(event)) =
            tokio::time::timeout_at(withdrawn_at + watch_for, sink.recv()).await
        {
            if matches!(event, SinkEvent::Packet(_)) {
                last_packet = Some(tokio::time::Instant::now());
            }
        }
        if let Some(at) = last_packet {
            let after = at - withdrawn_at;
            assert!(
                after < Duration::from_secs(1),
                "packets crossed {after:?} after withdrawal"
            );
        }
        assert_eq!(guard.ended().await, ErrorCode::Withdrawn);
        assert!(withdrawn_at.elapsed() >= watch_for);
        // The catalog update arrived too, and the camera is no longer read for the CSU.
        let catalogs = csu.importer.catalogs.lock().unwrap().clone();
        assert!(
            catalogs
                .last()
                .is_some_and(|(_, cameras)| cameras.is_empty()),
            "{catalogs:?}"
        );
        assert_eq!(sncf.provider.channel(GRANTED).subscriber_count(), 0);
        assert!(
            sncf.provider
                .closed
                .lock()
                .unwrap()
                .contains(&(cam(GRANTED), ViewEnd::Withdrawn(ErrorCode::Withdrawn)))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redial_after_provider_restart_reopens_the_session() {
    bounded(async {
        let pki = Pki::new();
        let first = sncf(&pki, &[CSU], MediaTransport::Datagram);
        let addr = first.link.local_addr();
        let csu = importer_site(&pki, CSU, addr);
        wait_connected(&csu.link, SNCF, true).await;
        let local = csu.importer.local("sncf/metz-ville/quai-1");
        let mut sink = local.subscribe(SinkLabel::local());
        let mut guard = csu
            .link
            .open_view(
                &id(SNCF),
                &cam("sncf/metz-ville/quai-1"),
                session("agent.dupont", CSU),
            )
            .await
            .unwrap();
        packets(&mut sink, 5).await;

        // The provider stops; the session waits for the link.
        first.link.shutdown().await;
        drop(first);
        wait_connected(&csu.link, SNCF, false).await;
        guard
            .state
            .wait_for(|s| *s == ViewState::Reconnecting)
            .await
            .unwrap();

        // It comes back on the same port, with a fresh provider.
        let mut s = settings(SNCF, addr, vec![accepted(CSU)]);
        s.media_transport = MediaTransport::Datagram;
        // The old socket is released once the old endpoint's tasks have wound down.
        let tls = pki.tls(SNCF, &[CSU]);
        let second = loop {
            let provider = TestProvider::new();
            let importer = Arc::new(TestImporter::default());
            match LinkHandle::bind(
                s.clone(),
                Arc::clone(&tls),
                Arc::clone(&provider) as Arc<dyn CatalogProvider>,
                Arc::clone(&importer) as Arc<dyn Importer>,
            ) {
                Ok(link) => {
                    let feeder = provider.feed();
                    break Site {
                        link,
                        provider,
                        importer,
                        feeder,
                    };
                }
                Err(LinkError::Bind { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(other) => panic!("{other}"),
            }
        };
        wait_connected(&csu.link, SNCF, true).await;
        guard
            .state
            .wait_for(|s| *s == ViewState::Open)
            .await
            .unwrap();

        // The session was opened again at the new provider, under the same agent, and
        // packets flow again into the same local channel.
        until(|| !second.provider.opened.lock().unwrap().is_empty()).await;
        assert_eq!(
            second.provider.opened.lock().unwrap()[0].2,
            session("agent.dupont", CSU)
        );
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), sink.recv()).await {}
        let got = packets(&mut sink, 10).await;
        assert!(got.iter().any(|p| p[0] & 0x1f == 1 && p[1] == 1));
    })
    .await;
}

/// A raw client speaking the control protocol by hand, as `site`.
struct RawPeer {
    connection: quinn::Connection,
    writer: ControlWriter<quinn::SendStream>,
    reader: crate::control::ControlReader<quinn::RecvStream>,
}

impl RawPeer {
    async fn connect(pki: &Pki, site: &str, provider: SocketAddr) -> quinn::Connection {
        let tls = pki.tls(site, &[SNCF]);
        let mut endpoint = quinn::Endpoint::client(any_port()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(
            tls.client_config(&id(SNCF)).unwrap(),
        ));
        endpoint.connect(provider, SNCF).unwrap().await.unwrap()
    }

    async fn handshake(pki: &Pki, site: &str, provider: SocketAddr) -> RawPeer {
        let (peer, catalog) = Self::handshake_declaring(pki, site, provider, &Feature::ALL).await;
        assert_eq!(catalog.len(), 1, "{catalog:?}");
        peer
    }

    /// Connects as `site`, declaring `features` in its `Hello`; returns the catalog
    /// the provider sent.
    async fn handshake_declaring(
        pki: &Pki,
        site: &str,
        provider: SocketAddr,
        features: &[Feature],
    ) -> (RawPeer, Vec<CatalogCamera>) {
        let connection = Self::connect(pki, site, provider).await;
        let (send, recv) = connection.open_bi().await.unwrap();
        let mut peer = RawPeer {
            connection,
            writer: ControlWriter::new(send, 1 << 20),
            reader: crate::control::ControlReader::new(recv, 1 << 20),
        };
        peer.send(Message::Hello(Hello {
            proto_version: PROTO_VERSION,
            site: id(site),
            features: features.to_vec(),
            policy_serial: None,
        }))
        .await;
        assert!(matches!(peer.recv().await, Message::Hello(h) if h.site == id(SNCF)));
        let catalog = match peer.recv().await {
            Message::Catalog(catalog) => catalog,
            other => panic!("expected the catalog, got {other:?}"),
        };
        peer.send(Message::Catalog(Vec::new())).await;
        (peer, catalog)
    }

    async fn send(&mut self, message: Message) {
        self.writer.write(message).await.unwrap();
    }

    async fn recv(&mut self) -> Message {
        self.reader.read().await.unwrap().unwrap()
    }

    /// The application close code the provider closed us with.
    async fn closed_with(connection: &quinn::Connection) -> u64 {
        match connection.closed().await {
            quinn::ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
            other => panic!("not closed by the application: {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_subscribe_and_malformed_control_close_only_that_link() {
    bounded(async {
        let pki = Pki::new();
        let sncf = sncf(&pki, &[CSU, CCOR], MediaTransport::Datagram);
        let addr = sncf.link.local_addr();

        // A well-behaved partner, watching the granted camera.
        let ccor = importer_site(&pki, CCOR, addr);
        wait_connected(&ccor.link, SNCF, true).await;
        let mut ccor_sink = ccor
            .importer
            .local("sncf/metz-ville/quai-1")
            .subscribe(SinkLabel::local());
        let _ccor_view = ccor
            .link
            .open_view(
                &id(SNCF),
                &cam("sncf/metz-ville/quai-1"),
                session("agent.martin", CCOR),
            )
            .await
            .unwrap();
        packets(&mut ccor_sink, 5).await;

        // The CSU, by hand: Subscribe for the refused camera gets NOT_GRANTED.
        let mut csu = RawPeer::handshake(&pki, CSU, addr).await;
        csu.send(Message::Subscribe(Subscribe {
            request_id: RequestId(1),
            camera: cam(REFUSED),
        }))
        .await;
        assert_eq!(
            csu.recv().await,
            Message::SubscribeError(SubscribeError {
                request_id: RequestId(1),
                code: ErrorCode::NotGranted,
            })
        );
        // The granted one is answered with a flow; a second subscribe shares it.
        for request in [2, 3] {
            csu.send(Message::Subscribe(Subscribe {
                request_id: RequestId(request),
                camera: cam(GRANTED),
            }))
            .await;
        }
        let flows: Vec<FlowId> = [csu.recv().await, csu.recv().await]
            .into_iter()
            .map(|m| match m {
                Message::SubscribeOk(SubscribeOk { flow_id, info, .. }) => {
                    assert_eq!(info.codec, Codec::H264);
                    flow_id
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(flows[0], flows[1]);
        // The channel's default payload bound fits a datagram on the smallest path.
        let room = csu.connection.max_datagram_size().unwrap();
        assert!(
            room >= ChannelSettings::default().max_payload + crate::media::rtp::RTP_HEADER_LEN + 2,
            "{room}"
        );
        // No session yet: no datagram at all reaches us.
        let datagram =
            tokio::time::timeout(Duration::from_millis(300), csu.connection.read_datagram()).await;
        assert!(datagram.is_err(), "media crossed without a viewing session");

        // Garbage on the control stream: the link closes with MALFORMED_CONTROL.
        csu.writer
            .get_mut()
            .write_all(&[3, 0x0f, 0xff, 0xff])
            .await
            .unwrap();
        assert_eq!(
            RawPeer::closed_with(&csu.connection).await,
            u64::from(LinkCloseCode::MalformedControl.code())
        );

        // The CCOR link is untouched and still carries packets.
        assert!(ccor.link.status()[0].connected);
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(1), ccor_sink.recv()).await
        {}
        packets(&mut ccor_sink, 10).await;
        assert!(
            sncf.link
                .status()
                .iter()
                .any(|s| s.partner == id(CCOR) && s.connected)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_before_the_catalog_is_unexpected() {
    bounded(async {
        let pki = Pki::new();
        let sncf = sncf(&pki, &[CSU], MediaTransport::Datagram);
        let connection = RawPeer::connect(&pki, CSU, sncf.link.local_addr()).await;
        let (send, recv) = connection.open_bi().await.unwrap();
        let mut writer = ControlWriter::new(send, 1 << 20);
        let _reader = recv;
        writer
            .write(Message::Hello(Hello {
                proto_version: PROTO_VERSION,
                site: id(CSU),
                features: Vec::new(),
                policy_serial: None,
            }))
            .await
            .unwrap();
        writer
            .write(Message::Subscribe(Subscribe {
                request_id: RequestId(1),
                camera: cam(GRANTED),
            }))
            .await
            .unwrap();
        assert_eq!(
            RawPeer::closed_with(&connection).await,
            u64::from(LinkCloseCode::UnexpectedMessage.code())
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_naming_another_site_is_refused() {
    bounded(async {
        let pki = Pki::new();
        let sncf = sncf(&pki, &[CSU, CCOR], MediaTransport::Datagram);
        let connection = RawPeer::connect(&pki, CSU, sncf.link.local_addr()).await;
        let (send, _recv) = connection.open_bi().await.unwrap();
        let mut writer = ControlWriter::new(send, 1 << 20);
        writer
            .write(Message::Hello(Hello {
                proto_version: PROTO_VERSION,
                site: id(CCOR),
                features: Vec::new(),
                policy_serial: None,
            }))
            .await
            .unwrap();
        assert_eq!(
            RawPeer::closed_with(&connection).await,
            u64::from(LinkCloseCode::HelloMismatch.code())
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_no_partner_is_refused_before_any_control_message() {
    bounded(async {
        let pki = Pki::new();
        let sncf = sncf(&pki, &[CSU], MediaTransport::Datagram);
        // CORG's CA is not trusted by SNCF at all: the handshake itself fails.
        // Trusting its CA for the CSU slot gets it through TLS, then identification
        // refuses it: its certificate names no configured partner.
        let corg_ca = pki.ca(CORG).1;
        let sncf_tls = {
            let (ca, ca_path) = pki.ca(SNCF);
            let issued = pki::issue_pem(
                &ca,
                &id(SNCF),
                Validity::days_from(Timestamp::now(), 10).unwrap(),
            )
            .unwrap();
            let cert = pki.dir.path().join("sncf-any.pem");
            let key = pki.dir.path().join("sncf-any.key");
            std::fs::write(&cert, &issued.cert_pem).unwrap();
            std::fs::write(&key, &issued.key_pem).unwrap();
            Arc::new(
                LinkTls::load(
                    &id(SNCF),
                    &TlsSettings {
                        cert,
                        key,
                        ca: ca_path,
                        crl: Vec::new(),
                    },
                    &[PartnerTrust {
                        id: id(CSU),
                        ca: corg_ca,
                        allow_any_ca: false,
                    }],
                )
                .unwrap(),
            )
        };
        sncf.link.tls_reloaded(sncf_tls);
        let connection = RawPeer::connect(&pki, CORG, sncf.link.local_addr()).await;
        assert_eq!(
            RawPeer::closed_with(&connection).await,
            u64::from(crate::tls::CloseCode::UnknownPeer.code())
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_reports_and_checkpoints_travel_down_and_keyframe_requests_up() {
    bounded(async {
        let pki = Pki::new();
        let sncf = sncf(&pki, &[CSU], MediaTransport::Datagram);
        let csu = importer_site(&pki, CSU, sncf.link.local_addr());
        wait_connected(&csu.link, SNCF, true).await;
        let local = csu.importer.local("sncf/metz-ville/quai-1");
        let mut sink = local.subscribe(SinkLabel::local());
        let _guard = csu
            .link
            .open_view(
                &id(SNCF),
                &cam("sncf/metz-ville/quai-1"),
                session("agent.dupont", CSU),
            )
            .await
            .unwrap();
        packets(&mut sink, 5).await;

        // The camera's NTP/RTP mapping reaches the importing channel unchanged.
        let ntp = 0xe9a1_2345_8000_0000;
        sncf.provider.channel(GRANTED).sender_report(ntp, 123_456);
        loop {
            if let Some(SinkEvent::SenderReport { ntp: got, rtp }) = sink.recv().await {
                assert_eq!((got, rtp), (ntp, 123_456));
                break;
            }
        }

        // A journal checkpoint reaches the partner.
        let checkpoint = Checkpoint {
            journal_id: "j-sncf".to_owned(),
            sequence: 42,
            head_hash: [7; 32],
            time: Timestamp::from_second(1_770_000_000).unwrap(),
            signature: [9; 64],
        };
        sncf.link.send_checkpoint(&checkpoint);
        until(|| !csu.importer.checkpoints.lock().unwrap().is_empty()).await;
        assert_eq!(
            csu.importer.checkpoints.lock().unwrap()[0],
            (id(SNCF), checkpoint)
        );

        // A viewer's keyframe request on the importing side reaches the camera.
        let mut requests = sncf.provider.channel(GRANTED).watch_keyframe_requests();
        let before = *requests.borrow_and_update();
        sink.request_keyframe();
        requests.wait_for(|n| *n > before).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_dialling_settle_on_one_link() {
    bounded(async {
        let pki = Pki::new();
        // Pick two free ports first: each side dials the other. The probing sockets
        // are closed at once; binding the ports again right away works for UDP.
        let free_port = || {
            std::net::UdpSocket::bind(any_port())
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (sncf_addr, csu_addr) = (free_port(), free_port());
        let sncf = start(
            settings(SNCF, sncf_addr, vec![dialled(CSU, csu_addr, "csu")]),
            pki.tls(SNCF, &[CSU]),
        );
        let csu = start(
            settings(CSU, csu_addr, vec![dialled(SNCF, sncf_addr, "sncf")]),
            pki.tls(CSU, &[SNCF]),
        );
        wait_connected(&csu.link, SNCF, true).await;
        wait_connected(&sncf.link, CSU, true).await;
        // Let the duplicate be closed, then the link must stay put.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let csu_status = csu.link.status();
        let sncf_status = sncf.link.status();
        assert!(csu_status[0].connected && sncf_status[0].connected);
        // The link kept is the one the smaller site id (csu < sncf) dialled.
        assert_eq!(csu_status[0].direction, Some(Direction::Outbound));
        assert_eq!(sncf_status[0].direction, Some(Direction::Inbound));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            csu.link.status()[0].since,
            csu_status[0].since,
            "the link flapped"
        );
        assert_eq!(
            sncf.link.status()[0].since,
            sncf_status[0].since,
            "the link flapped"
        );
        // And it works.
        let mut sink = csu
            .importer
            .local("sncf/metz-ville/quai-1")
            .subscribe(SinkLabel::local());
        let _guard = csu
            .link
            .open_view(
                &id(SNCF),
                &cam("sncf/metz-ville/quai-1"),
                session("agent.dupont", CSU),
            )
            .await
            .unwrap();
        packets(&mut sink, 5).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_did_not_declare_onward_never_gets_a_restricted_camera() {
    bounded(async {
        let pki = Pki::new();
        let sncf = sncf(&pki, &[CSU, CCOR], MediaTransport::Datagram);
        let addr = sncf.link.local_addr();
        let onward = Restrictions {
            onward: vec![id(CCOR)],
            ..Restrictions::default()
        };
        sncf.provider
            .restricted
            .lock()
            .unwrap()
            .insert(cam(GRANTED), onward.clone());

        // An older peer: a Hello without features. The provider lists the camera
        // (this test provider ignores features), the link withholds it...
        let (mut old, catalog) =
            RawPeer::handshake_declaring(&pki, CSU, addr, &[Feature::OnRequest, Feature::GrantEnd])
                .await;
        assert!(catalog.is_empty(), "{catalog:?}");
        // ...and refuses it by id too, although the provider's `stream` would grant it.
        old.send(Message::Subscribe(Subscribe {
            request_id: RequestId(1),
            camera: cam(GRANTED),
        }))
        .await;
        assert_eq!(
            old.recv().await,
            Message::SubscribeError(SubscribeError {
                request_id: RequestId(1),
                code: ErrorCode::NotGranted,
            })
        );
        let datagram =
            tokio::time::timeout(Duration::from_millis(300), old.connection.read_datagram()).await;
        assert!(
            datagram.is_err(),
            "media crossed to a peer without the feature"
        );

        // A peer that declared `onward` gets the camera with its restriction.
        let (mut new, catalog) =
            RawPeer::handshake_declaring(&pki, CCOR, addr, &Feature::ALL).await;
        assert_eq!(catalog.len(), 1, "{catalog:?}");
        assert_eq!(catalog[0].id, cam(GRANTED));
        assert_eq!(catalog[0].restrictions, onward);
        new.send(Message::Subscribe(Subscribe {
            request_id: RequestId(1),
            camera: cam(GRANTED),
        }))
        .await;
        assert!(
            matches!(new.recv().await, Message::SubscribeOk(_)),
            "the declaring peer is refused"
        );

        // A camera that becomes restricted later: withheld from the older peer's
        // update, and a stream it held ends.
        sncf.provider.restricted.lock().unwrap().clear();
        sncf.link.policy_changed();
        assert!(matches!(old.recv().await, Message::CatalogUpdate(c) if c.len() == 1));
        old.send(Message::Subscribe(Subscribe {
            request_id: RequestId(2),
            camera: cam(GRANTED),
        }))
        .await;
        let flow_id = match old.recv().await {
            Message::SubscribeOk(ok) => ok.flow_id,
            other => panic!("{other:?}"),
        };
        sncf.provider
            .restricted
            .lock()
            .unwrap()
            .insert(cam(GRANTED), onward);
        sncf.link.policy_changed();
        let mut got = vec![old.recv().await, old.recv().await];
        got.sort_by_key(|m| m.kind());
        assert!(
            matches!(&got[0], Message::CatalogUpdate(c) if c.is_empty()),
            "{got:?}"
        );
        assert_eq!(
            got[1],
            Message::StreamEnded(StreamEnded {
                flow_id,
                code: ErrorCode::Withdrawn,
            })
        );
    })
    .await;
}

// ---- re-sharing: a relaying site between the camera's site and the viewer's ----

const RESHARED: &str = "sncf/metz-ville/quai-1";
const RESHARED_REFUSED: &str = "sncf/woippy/quai-2";

/// The CSU of a chain SNCF → CSU → CCOR: offers two cameras it imports from the
/// SNCF, reads them from its importer's channels, and carries every viewing session
/// to the SNCF ([`ViewDecision::Relayed`]), as the gateway does.
struct RelayProvider {
    importer: Arc<TestImporter>,
    link: std::sync::OnceLock<LinkHandle>,
    closed: Mutex<Vec<(SiteId, CameraId, ViewEnd)>>,
}

impl CatalogProvider for RelayProvider {
    fn policy_serial(&self) -> Option<u64> {
        Some(1)
    }

    fn catalog(&self, _partner: &SiteId, _features: &[Feature]) -> Vec<CatalogCamera> {
        [RESHARED, RESHARED_REFUSED]
            .into_iter()
            .map(|camera| CatalogCamera {
                id: cam(camera),
                codec: Some(Codec::H264),
                parameter_sets: Vec::new(),
                restrictions: Restrictions::default(),
                up: true,
            })
            .collect()
    }

    fn stream(
        &self,
        _partner: &SiteId,
        camera: &CameraId,
        _active: &[CameraId],
    ) -> Result<Channel, ErrorCode> {
        Ok(self.importer.local(camera.as_str()))
    }

    fn open_view(
        &self,
        _partner: &SiteId,
        camera: &CameraId,
        session: &ViewingSession,
    ) -> ViewDecision {
        let link = self.link.get().unwrap().clone();
        let (camera, session) = (camera.clone(), session.clone());
        ViewDecision::Relayed(Box::pin(async move {
            link.open_view(&id(SNCF), &camera, session).await
        }))
    }

    fn check_view(
        &self,
        _partner: &SiteId,
        _camera: &CameraId,
        _session: &ViewingSession,
    ) -> Result<(), ErrorCode> {
        Ok(())
    }

    fn close_view(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        _session: &ViewingSession,
        end: ViewEnd,
    ) {
        self.closed
            .lock()
            .unwrap()
            .push((partner.clone(), camera.clone(), end));
    }
}

struct Chain {
    sncf: Site,
    relay: Arc<RelayProvider>,
    _csu: LinkHandle,
    ccor: Site,
}

/// SNCF ← CSU (dials it, prefix `sncf`) ← CCOR (dials the CSU, prefix `csu`).
async fn chain(pki: &Pki) -> Chain {
    let sncf = sncf(pki, &[CSU], MediaTransport::Datagram);
    let importer = Arc::new(TestImporter::default());
    // The gateway sets an imported camera's description from its site's catalog.
    for camera in [RESHARED, RESHARED_REFUSED] {
        importer.local(camera).set_info(StreamInfo {
            codec: Codec::H264,
            clock_rate: 90_000,
            parameter_sets: vec![
                Bytes::from_static(&[0x67, 0x42, 0x00, 0x1f]),
                Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80]),
            ],
        });
    }
    let relay = Arc::new(RelayProvider {
        importer: Arc::clone(&importer),
        link: std::sync::OnceLock::new(),
        closed: Mutex::new(Vec::new()),
    });
    let csu = LinkHandle::bind(
        settings(
            CSU,
            any_port(),
            vec![
                dialled(SNCF, sncf.link.local_addr(), "sncf"),
                accepted(CCOR),
            ],
        ),
        pki.tls(CSU, &[SNCF, CCOR]),
        Arc::clone(&relay) as Arc<dyn CatalogProvider>,
        importer as Arc<dyn Importer>,
    )
    .unwrap();
    relay.link.set(csu.clone()).unwrap();
    let ccor = start(
        settings(
            CCOR,
            any_port(),
            vec![dialled(CSU, csu.local_addr(), "csu")],
        ),
        pki.tls(CCOR, &[CSU]),
    );
    wait_connected(&csu, SNCF, true).await;
    wait_connected(&ccor.link, CSU, true).await;
    Chain {
        sncf,
        relay,
        _csu: csu,
        ccor,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_a_reshared_camera_is_decided_at_the_camera_site_and_revoked_with_it() {
    bounded(async {
        let pki = Pki::new();
        let chain = chain(&pki).await;
        let local = chain.ccor.importer.local("csu/sncf/metz-ville/quai-1");
        let mut sink = local.subscribe(SinkLabel::local());
        let mut guard = chain
            .ccor
            .link
            .open_view(
                &id(CSU),
                &cam("csu/sncf/metz-ville/quai-1"),
                session("agent.martin", CCOR),
            )
            .await
            .unwrap();
        // The SNCF decided on the very session the CCOR opened: same agent, reason,
        // intervention, and the CCOR as origin, asked by its partner the CSU.
        let opened = chain.sncf.provider.opened.lock().unwrap().clone();
        assert_eq!(
            opened,
            vec![(id(CSU), cam(GRANTED), session("agent.martin", CCOR))]
        );
        // The SNCF camera's packets reach the CCOR through the CSU.
        let got = packets(&mut sink, 10).await;
        assert!(got.iter().any(|p| p[1] == 1), "not the SNCF camera");

        // The camera's site refuses a session: the CCOR gets that refusal.
        let refused = chain
            .ccor
            .link
            .open_view(
                &id(CSU),
                &cam("csu/sncf/woippy/quai-2"),
                session("agent.martin", CCOR),
            )
            .await;
        assert_eq!(refused.unwrap_err(), ErrorCode::NotGranted);

        // The SNCF withdraws the grant: the CCOR's session ends too, and the CSU
        // journals its end as withdrawn.
        chain.sncf.provider.granted.lock().unwrap().clear();
        chain.sncf.link.policy_changed();
        assert_eq!(guard.ended().await, ErrorCode::Withdrawn);
        until(|| {
            chain.relay.closed.lock().unwrap().contains(&(
                id(CCOR),
                cam(RESHARED),
                ViewEnd::Withdrawn(ErrorCode::Withdrawn),
            ))
        })
        .await;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), sink.recv()).await {}
        no_packets(&mut sink, Duration::from_millis(500)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_reshared_session_downstream_closes_it_upstream() {
    bounded(async {
        let pki = Pki::new();
        let chain = chain(&pki).await;
        let mut sink = chain
            .ccor
            .importer
            .local("csu/sncf/metz-ville/quai-1")
            .subscribe(SinkLabel::local());
        let guard = chain
            .ccor
            .link
            .open_view(
                &id(CSU),
                &cam("csu/sncf/metz-ville/quai-1"),
                session("agent.martin", CCOR),
            )
            .await
            .unwrap();
        packets(&mut sink, 5).await;
        assert_eq!(chain.sncf.provider.channel(GRANTED).subscriber_count(), 1);

        drop(guard);
        // Closed at the CSU, then at the SNCF, whose camera is no longer read.
        until(|| {
            chain.relay.closed.lock().unwrap().as_slice()
                == [(id(CCOR), cam(RESHARED), ViewEnd::Closed)]
        })
        .await;
        until(|| {
            chain
                .sncf
                .provider
                .closed
                .lock()
                .unwrap()
                .contains(&(cam(GRANTED), ViewEnd::Closed))
        })
        .await;
        until(|| chain.sncf.provider.channel(GRANTED).subscriber_count() == 0).await;
    })
    .await;
}

// ---- two gateways per site (active/standby) ----

/// A partner we dial at each of `addrs` in turn and import from under `prefix`.
fn dialled_pair(site: &str, addrs: &[SocketAddr], prefix: &str) -> PartnerLink {
    PartnerLink {
        id: id(site),
        addresses: addrs
            .iter()
            .map(|addr| DialTarget {
                host: addr.ip().to_string(),
                port: addr.port(),
            })
            .collect(),
        prefix: Some(cam(prefix)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_fails_over_to_the_standby_address_and_reopens_the_session() {
    bounded(async {
        let pki = Pki::new();
        // Both gateways of the SNCF pair: one site id, one certificate.
        let tls = pki.tls(SNCF, &[CSU]);
        let active = start(
            settings(SNCF, any_port(), vec![accepted(CSU)]),
            Arc::clone(&tls),
        );
        let standby = start(settings(SNCF, any_port(), vec![accepted(CSU)]), tls);
        let (active_addr, standby_addr) = (active.link.local_addr(), standby.link.local_addr());
        let mut csu_settings = settings(
            CSU,
            any_port(),
            vec![dialled_pair(SNCF, &[active_addr, standby_addr], "sncf")],
        );
        // Time to put the black hole in place before the first re-dial.
        csu_settings.reconnect_min = Duration::from_millis(500);
        let csu = start(csu_settings, pki.tls(CSU, &[SNCF]));
        wait_connected(&csu.link, SNCF, true).await;
        assert_eq!(csu.link.status()[0].remote, Some(active_addr));
        let mut sink = csu
            .importer
            .local("sncf/metz-ville/quai-1")
            .subscribe(SinkLabel::local());
        let mut guard = csu
            .link
            .open_view(
                &id(SNCF),
                &cam("sncf/metz-ville/quai-1"),
                session("agent.dupont", CSU),
            )
            .await
            .unwrap();
        packets(&mut sink, 5).await;
        assert!(standby.provider.opened.lock().unwrap().is_empty());

        // The active goes away and its address turns into a black hole (a crashed or
        // powered-off host answers nothing). The standby is dialled first: the dead
        // address would cost a whole handshake timeout, 5 s here.
        let lost = tokio::time::Instant::now();
        let mut status = csu.link.watch_status(&id(SNCF)).unwrap();
        active.link.shutdown().await;
        drop(active);
        let _black_hole = loop {
            match std::net::UdpSocket::bind(active_addr) {
                Ok(socket) => break socket,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        status
            .wait_for(|s| s.connected && s.remote == Some(standby_addr))
            .await
            .unwrap();
        guard
            .state
            .wait_for(|s| *s == ViewState::Open)
            .await
            .unwrap();
        let took = lost.elapsed();
        assert!(took < Duration::from_secs(3), "failover took {took:?}");
        assert_eq!(
            standby.provider.opened.lock().unwrap()[0].2,
            session("agent.dupont", CSU)
        );
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), sink.recv()).await {}
        packets(&mut sink, 10).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_gateway_of_a_pair_dialling_in_is_kept_out_until_the_first_is_gone() {
    bounded(async {
        let pki = Pki::new();
        let csu = start(
            settings(CSU, any_port(), vec![accepted(SNCF)]),
            pki.tls(CSU, &[SNCF]),
        );
        let csu_addr = csu.link.local_addr();
        let tls = pki.tls(SNCF, &[CSU]);
        let pair_member = || {
            start(
                settings(SNCF, any_port(), vec![dialled(CSU, csu_addr, "csu")]),
                Arc::clone(&tls),
            )
        };
        let first = pair_member();
        wait_connected(&csu.link, SNCF, true).await;
        let kept = csu.link.status()[0].clone();
        assert_eq!(kept.remote, Some(first.link.local_addr()));
        let second = pair_member();
        // The second gateway's links are refused as duplicates: a refusal shows in
        // its log only, so watch that the CSU's link never changes while it tries
        // (reconnect_max is 400 ms here: it dials several times in this window).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = csu.link.status()[0].clone();
        assert_eq!(now.since, kept.since, "the link flapped");
        assert_eq!(now.remote, kept.remote);
        assert!(!second.link.status()[0].connected);

        // Once the first gateway is gone, the second one gets in.
        first.link.shutdown().await;
        drop(first);
        let second_addr = second.link.local_addr();
        let mut status = csu.link.watch_status(&id(SNCF)).unwrap();
        status
            .wait_for(|s| s.connected && s.remote == Some(second_addr))
            .await
            .unwrap();
        wait_connected(&second.link, CSU, true).await;
    })
    .await;
}
