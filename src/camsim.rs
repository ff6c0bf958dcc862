//! The camera simulator: plays the built-in fixtures as live cameras.
//!
//! Each simulated camera loops a short Annex B elementary stream at 25 fps into a
//! [`Channel`], packetized as a camera with a 1500-byte MTU would (single NAL units,
//! FU-A/FU above 1400 bytes), with the RTP timestamp running on across loops. The
//! RTSP server then serves those channels exactly as it serves real cameras.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::channel::{Channel, ChannelSettings};
use crate::ids::CameraId;
use crate::media::resplit::Resplitter;
use crate::media::{Codec, MediaPacket, StreamInfo, h26x};
use crate::rtsp::{
    CameraDirectory, Mount, RtspServer, RtspServerError, RtspSettings, RtspUser, ViewRefusal,
    Viewer,
};

/// A simulated camera: an id and the fixture it plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedCamera {
    pub id: CameraId,
    pub fixture: BuiltinFixture,
}

impl std::str::FromStr for SimulatedCamera {
    type Err = String;

    /// `ID=FIXTURE`, such as `metz-ville/quai-1=h264-main`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (id, fixture) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected ID=FIXTURE"))?;
        Ok(SimulatedCamera {
            id: id.parse().map_err(|error| format!("{id:?}: {error}"))?,
            fixture: fixture.parse()?,
        })
    }
}

/// The SNCF's own control-room camera: in no grant, so partners must never see it.
pub const CONTROL_ROOM_CAMERA: &str = "poste-de-commande/salle";

/// The SNCF station cameras of the Metz topology, as the demo and `camsim` serve them
/// by default. The last one is in no grant: partners must never see it.
pub fn sncf_cameras() -> Vec<SimulatedCamera> {
    [
        ("metz-ville/quai-1", BuiltinFixture::H264Main),
        ("metz-ville/parvis", BuiltinFixture::H265Main),
        ("metz-nord/hall", BuiltinFixture::H264Baseline),
        ("woippy/quai-1", BuiltinFixture::H264Main),
        ("ars-sur-moselle/quai-1", BuiltinFixture::H264Main),
        ("peltre/parvis", BuiltinFixture::H264Main),
        (CONTROL_ROOM_CAMERA, BuiltinFixture::H264Main),
    ]
    .into_iter()
    .filter_map(|(id, fixture)| {
        Some(SimulatedCamera {
            id: id.parse().ok()?,
            fixture,
        })
    })
    .collect()
}

/// A running simulator: its RTSP server and one player task per camera. Dropping it
/// stops the players.
pub struct Camsim {
    server: RtspServer<SimDirectory>,
    players: tokio::task::JoinSet<()>,
}

impl Camsim {
    /// Binds the RTSP server and starts playing every camera (always on, like a real
    /// camera, whether or not anyone watches). `user` is the one account the cameras
    /// accept, as `passerelle`'s `credentials_file` gives it.
    pub async fn start(
        settings: RtspSettings,
        user: RtspUser,
        cameras: &[SimulatedCamera],
    ) -> Result<Camsim, RtspServerError> {
        let mut mounts = HashMap::new();
        let mut players = tokio::task::JoinSet::new();
        for camera in cameras {
            let channel = Channel::new(
                camera.id.clone(),
                ChannelSettings {
                    max_payload: CAMERA_MAX_PAYLOAD,
                    ..ChannelSettings::default()
                },
            );
            players.spawn(camera.fixture.load().play(channel.clone()));
            mounts.insert(camera.id.clone(), channel);
        }
        let server =
            RtspServer::bind(settings, vec![user], Arc::new(SimDirectory { mounts })).await?;
        Ok(Camsim { server, players })
    }

    /// The RTSP server's address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.server.local_addr()
    }

    /// Serves until `shutdown` resolves; the players stop with it.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let Camsim { server, players } = self;
        server.run(shutdown).await;
        drop(players);
    }
}

/// The simulator's cameras, for the RTSP server.
pub struct SimDirectory {
    mounts: HashMap<CameraId, Channel>,
}

impl CameraDirectory for SimDirectory {
    type Guard = ();

    fn mount(&self, camera: &CameraId) -> Option<Mount> {
        self.mounts.get(camera).map(|channel| Mount {
            tracks: vec![channel.clone()],
        })
    }

    async fn open_view(&self, _viewer: &Viewer, _camera: &CameraId) -> Result<(), ViewRefusal> {
        Ok(())
    }
}

/// Largest RTP payload a camera on a 1500-byte Ethernet MTU typically sends.
pub const CAMERA_MAX_PAYLOAD: usize = 1400;

/// Frame interval of every fixture.
pub const FRAME_INTERVAL: Duration = Duration::from_millis(40);

/// RTP ticks per frame: 40 ms of the 90 kHz video clock.
const TICKS_PER_FRAME: u32 = 3600;

static H264_MAIN: &[u8] = include_bytes!("../tests/fixtures/h264-main.h264");
static H264_BASELINE: &[u8] = include_bytes!("../tests/fixtures/h264-baseline.h264");
static H265_MAIN: &[u8] = include_bytes!("../tests/fixtures/h265-main.h265");

/// The built-in video fixtures (see `tests/fixtures/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinFixture {
    /// H.264 Main profile, 640x360, 2 s GOP.
    H264Main,
    /// H.264 Constrained Baseline (what every browser decodes).
    H264Baseline,
    /// H.265 Main.
    H265Main,
}

impl BuiltinFixture {
    /// The fixture's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinFixture::H264Main => "h264-main",
            BuiltinFixture::H264Baseline => "h264-baseline",
            BuiltinFixture::H265Main => "h265-main",
        }
    }

    /// Every built-in fixture.
    pub const ALL: [BuiltinFixture; 3] = [
        BuiltinFixture::H264Main,
        BuiltinFixture::H264Baseline,
        BuiltinFixture::H265Main,
    ];

    /// Parses the built-in stream.
    pub fn load(self) -> Fixture {
        let (codec, bytes) = match self {
            BuiltinFixture::H264Main => (Codec::H264, H264_MAIN),
            BuiltinFixture::H264Baseline => (Codec::H264, H264_BASELINE),
            BuiltinFixture::H265Main => (Codec::H265, H265_MAIN),
        };
        Fixture::parse(codec, &Bytes::from_static(bytes))
    }
}

impl std::str::FromStr for BuiltinFixture {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        BuiltinFixture::ALL
            .into_iter()
            .find(|fixture| fixture.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = BuiltinFixture::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fixture {name:?}; one of {}", names.join(", "))
            })
    }
}

/// A video elementary stream cut into access units (one picture each).
#[derive(Debug, Clone)]
pub struct Fixture {
    codec: Codec,
    access_units: Vec<AccessUnit>,
    parameter_sets: Vec<Bytes>,
}

#[derive(Debug, Clone)]
struct AccessUnit {
    nal_units: Vec<Bytes>,
    keyframe: bool,
}

impl Fixture {
    /// Cuts an Annex B stream into access units: non-VCL units (parameter sets, SEI,
    /// delimiters) belong to the next picture, and a VCL unit that starts a picture
    /// (first slice) opens a new access unit.
    pub fn parse(codec: Codec, annex_b: &Bytes) -> Fixture {
        let mut access_units = Vec::new();
        let mut pending: Vec<Bytes> = Vec::new();
        let mut parameter_sets: Vec<Bytes> = Vec::new();
        let mut current: Option<AccessUnit> = None;
        for nal in h26x::split_annex_b(annex_b) {
            let Some(kind) = h26x::nal_type(codec, &nal) else {
                continue;
            };
            if h26x::is_parameter_set(codec, kind)
                && !parameter_sets
                    .iter()
                    .any(|set| h26x::nal_type(codec, set) == Some(kind))
            {
                parameter_sets.push(nal.clone());
            }
            if !is_vcl(codec, kind) {
                pending.push(nal);
                continue;
            }
            if starts_picture(codec, &nal) || current.is_none() {
                access_units.extend(current.take());
                let mut nal_units = std::mem::take(&mut pending);
                nal_units.push(nal);
                current = Some(AccessUnit {
                    nal_units,
                    keyframe: h26x::is_keyframe(codec, kind),
                });
            } else if let Some(unit) = current.as_mut() {
                unit.nal_units.append(&mut pending);
                unit.nal_units.push(nal);
            }
        }
        access_units.extend(current);
        Fixture {
            codec,
            access_units,
            parameter_sets,
        }
    }

    /// Codec and parameter sets, as the RTSP server describes them.
    pub fn stream_info(&self) -> StreamInfo {
        StreamInfo {
            codec: self.codec,
            clock_rate: 90_000,
            parameter_sets: self.parameter_sets.clone(),
        }
    }

    /// Pictures in one loop of the stream.
    pub fn frame_count(&self) -> usize {
        self.access_units.len()
    }

    /// Plays the fixture into `channel` at 25 fps, looping, until the task is dropped.
    /// The first loop starts at a keyframe; timestamps run on across loops.
    pub async fn play(self, channel: Channel) {
        channel.set_info(self.stream_info());
        let mut resplitter = Resplitter::new();
        let mut ticker = tokio::time::interval(FRAME_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut timestamp: u32 = rand::random();
        let mut packets = Vec::new();
        loop {
            for (index, unit) in self.access_units.iter().enumerate() {
                ticker.tick().await;
                // A sender report a second, as cameras send: the NTP↔RTP mapping lets
                // every leg and the receiving VMS keep wall-clock time.
                if index % 25 == 0
                    && let Ok(now) =
                        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
                {
                    channel.sender_report(crate::media::rtp::ntp_from_unix(now), timestamp);
                }
                self.packetize(unit, timestamp, &mut resplitter, &mut packets);
                for packet in packets.drain(..) {
                    channel.publish(packet);
                }
                timestamp = timestamp.wrapping_add(TICKS_PER_FRAME);
            }
        }
    }

    fn packetize(
        &self,
        unit: &AccessUnit,
        timestamp: u32,
        resplitter: &mut Resplitter,
        out: &mut Vec<MediaPacket>,
    ) {
        let first = out.len();
        let last_nal = unit.nal_units.len().saturating_sub(1);
        for (i, nal) in unit.nal_units.iter().enumerate() {
            let packetized = resplitter.packetize_nal(
                self.codec,
                nal,
                timestamp,
                i == last_nal,
                CAMERA_MAX_PAYLOAD,
                &mut |packet| out.push(packet),
            );
            if let Err(error) = packetized {
                tracing::warn!(%error, "fixture NAL unit skipped");
            }
        }
        // A viewer may start at the keyframe's first unit: its parameter sets.
        for (i, packet) in out[first..].iter_mut().enumerate() {
            packet.keyframe_start = unit.keyframe && i == 0;
        }
    }
}

fn is_vcl(codec: Codec, nal_type: u8) -> bool {
    match codec {
        Codec::H264 => (1..=5).contains(&nal_type),
        Codec::H265 => nal_type < 32,
    }
}

/// Whether a VCL unit is the first slice of its picture: H.264 `first_mb_in_slice == 0`
/// (its ue(v) code is a single 1 bit), H.265 `first_slice_segment_in_pic_flag`. Both are
/// the first bit after the NAL header.
fn starts_picture(codec: Codec, nal: &[u8]) -> bool {
    let header_len = h26x::nal_header_len(codec);
    nal.get(header_len).is_some_and(|byte| byte & 0x80 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_has_100_pictures_with_keyframes_every_50() {
        for fixture in BuiltinFixture::ALL {
            let parsed = fixture.load();
            assert_eq!(parsed.frame_count(), 100, "{}", fixture.name());
            let keyframes: Vec<usize> = parsed
                .access_units
                .iter()
                .enumerate()
                .filter(|(_, unit)| unit.keyframe)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(keyframes, vec![0, 50], "{}", fixture.name());
            let expected_sets = if parsed.codec == Codec::H265 { 3 } else { 2 };
            assert_eq!(parsed.parameter_sets.len(), expected_sets);
        }
    }

    #[test]
    fn keyframes_are_packetized_starting_with_their_parameter_sets() {
        let fixture = BuiltinFixture::H264Main.load();
        let mut packets = Vec::new();
        fixture.packetize(
            &fixture.access_units[0],
            1000,
            &mut Resplitter::new(),
            &mut packets,
        );
        assert!(packets[0].keyframe_start && packets[0].parameter_set);
        assert_eq!(packets.iter().filter(|p| p.keyframe_start).count(), 1);
        assert!(
            packets
                .iter()
                .all(|p| p.payload.len() <= CAMERA_MAX_PAYLOAD)
        );
        assert!(packets.len() > 5, "a 5 KB keyframe is fragmented");
        assert!(packets.last().is_some_and(|p| p.marker));
        assert_eq!(packets.iter().filter(|p| p.marker).count(), 1);
    }
}
