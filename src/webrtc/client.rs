//! A receive-only WHEP client built with webrtc-rs: what the tests and the load harness
//! watch cameras with.
//!
//! [`WhepClient::connect`] offers the H.264 profiles and/or H.265 of a [`ClientOffer`]
//! (as a browser would, packetization mode 1), POSTs the offer with a bearer token,
//! applies the answer and counts what arrives: RTP packets, bytes, keyframes, sequence
//! gaps, and when and what the first packet was. [`WhepClient::close`] DELETEs the
//! session, then closes the connection. Plain HTTP only (loopback).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_HEVC, MediaEngine,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

use crate::media::{Codec, h26x};

/// Bound on each HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on candidate gathering before the offer is sent.
const GATHERING_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest HTTP answer read.
const MAX_REPLY: usize = 1 << 20;
/// Payload types the client offers: H.264 profiles from here up, in offer order.
const FIRST_H264_PT: u8 = 100;
/// The payload type of the offered H.265.
const H265_PT: u8 = 120;

/// What the client offers to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOffer {
    /// H.264 `profile-level-id`s, in order of preference (`42e01f`, `4d001f`…).
    pub h264_profiles: Vec<String>,
    /// Whether H.265 (Main) is offered.
    pub h265: bool,
}

impl ClientOffer {
    /// H.264 with these `profile-level-id`s.
    pub fn h264(profiles: &[&str]) -> ClientOffer {
        ClientOffer {
            h264_profiles: profiles.iter().map(|p| (*p).to_owned()).collect(),
            h265: false,
        }
    }

    /// H.265 only.
    pub fn h265() -> ClientOffer {
        ClientOffer {
            h264_profiles: Vec::new(),
            h265: true,
        }
    }

    /// What headless Chromium 156 offers in H.264 (spike pitfall 4): Baseline,
    /// Constrained Baseline, Main and High 4:4:4 Predictive, no High, no H.265.
    pub fn chromium() -> ClientOffer {
        ClientOffer::h264(&["42001f", "42e01f", "4d001f", "f4001f"])
    }

    fn codecs(&self) -> Vec<(Codec, RTCRtpCodecParameters)> {
        let feedback = || {
            [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
                .into_iter()
                .map(|(typ, parameter)| RTCPFeedback {
                    typ: typ.to_owned(),
                    parameter: parameter.to_owned(),
                })
                .collect::<Vec<_>>()
        };
        let mut codecs = Vec::new();
        for (pt, profile) in (FIRST_H264_PT..).zip(&self.h264_profiles) {
            codecs.push((
                Codec::H264,
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_H264.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: format!(
                            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                        ),
                        rtcp_feedback: feedback(),
                    },
                    payload_type: pt,
                },
            ));
        }
        if self.h265 {
            codecs.push((
                Codec::H265,
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: MIME_TYPE_HEVC.to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: "level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST"
                            .to_owned(),
                        rtcp_feedback: feedback(),
                    },
                    payload_type: H265_PT,
                },
            ));
        }
        codecs
    }
}

/// Why a WHEP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP exchange failed.
    #[error("WHEP HTTP exchange with {addr}: {message}")]
    Http {
        /// The server.
        addr: SocketAddr,
        /// What went wrong.
        message: String,
    },
    /// The server refused the offer.
    #[error("WHEP offer refused with {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The answer's body (`{"error": ...}`).
        body: String,
    },
    /// The WebRTC stack failed.
    #[error("WebRTC: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// The 201 answer has no `Location`.
    #[error("the WHEP answer has no Location header")]
    NoLocation,
}

/// What arrived so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiveStats {
    /// RTP packets received.
    pub packets: u64,
    /// RTP payload bytes received.
    pub bytes: u64,
    /// Packets starting a keyframe (H.264 IDR, H.265 IRAP).
    pub keyframes: u64,
    /// Packets missing by sequence number.
    pub sequence_gaps: u64,
    /// The first packet, once one arrived.
    pub first: Option<FirstPacket>,
    /// The payload type of the packets.
    pub payload_type: Option<u8>,
}

/// The first packet received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstPacket {
    /// Time since the offer was POSTed.
    pub after: Duration,
    /// It starts a keyframe.
    pub keyframe_start: bool,
    /// It is or holds a parameter set.
    pub parameter_set: bool,
}

/// A reply to one HTTP request.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl HttpReply {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One plain HTTP/1.1 request to `addr` (`Connection: close`), with an optional bearer
/// token and body (content type, text), bounded in time.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &str)>,
) -> Result<HttpReply, ClientError> {
    let fail = |message: String| ClientError::Http { addr, message };
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        text.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    match body {
        Some((content_type, body)) => text.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )),
        None => text.push_str("Content-Length: 0\r\n\r\n"),
    }
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(text.as_bytes()).await?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_REPLY as u64)
            .read_to_end(&mut raw)
            .await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            fail(format!(
                "{method} {path}: no answer within {HTTP_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| fail(format!("{method} {path}: {e}")))?;
    parse_reply(&raw).map_err(|e| fail(format!("{method} {path}: {e}")))
}

fn parse_reply(raw: &[u8]) -> Result<HttpReply, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = &raw[split + 4..];
    if let Some((_, length)) = headers.iter().find(|(n, _)| n == "content-length") {
        let length: usize = length.parse().map_err(|_| "bad Content-Length")?;
        body = body.get(..length).ok_or("truncated body")?;
    }
    Ok(HttpReply {
        status,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}

/// A WHEP viewer: its session at the server and its peer connection.
pub struct WhepClient {
    addr: SocketAddr,
    token: String,
    location: String,
    answer: String,
    connection: Arc<dyn PeerConnection>,
    receiver: Arc<Receiver>,
    states: watch::Receiver<RTCPeerConnectionState>,
}

impl std::fmt::Debug for WhepClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhepClient")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl WhepClient {
    /// Offers `offer` for `camera` to the WHEP endpoint of the `[http]` listener at
    /// `addr`, as the user of `token`, and applies the answer. Media sockets are bound on
    /// `addr`'s IP.
    pub async fn connect(
        addr: SocketAddr,
        camera: &str,
        token: &str,
        offer: &ClientOffer,
    ) -> Result<WhepClient, ClientError> {
        let codecs = offer.codecs();
        let mut media = MediaEngine::default();
        for (_, codec) in &codecs {
            media.register_codec(codec.clone(), RtpCodecKind::Video)?;
        }
        let interceptors = register_default_interceptors(Registry::new(), &mut media)?;
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_include_loopback_candidate(addr.ip().is_loopback())
            .build();
        let posted = Instant::now();
        let (packets, _) = watch::channel(0);
        let receiver = Arc::new(Receiver {
            codecs: codecs.iter().map(|(c, p)| (p.payload_type, *c)).collect(),
            posted,
            stats: Mutex::new((ReceiveStats::default(), None)),
            packets,
            track: Mutex::new(None),
        });
        let (gathered_tx, mut gathered) = watch::channel(false);
        let (state_tx, states) = watch::channel(RTCPeerConnectionState::New);
        let events = Arc::new(ClientEvents {
            gathered: gathered_tx,
            state: state_tx,
            receiver: Arc::clone(&receiver),
        });
        let connection = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_setting_engine(settings)
            .with_interceptor_registry(interceptors)
            .with_handler(events)
            .with_udp_addrs(vec![SocketAddr::new(addr.ip(), 0)])
            .build()
            .await?;
        let connection: Arc<dyn PeerConnection> = Arc::new(connection);
        let result = async {
            connection
                .add_transceiver_from_kind(
                    RtpCodecKind::Video,
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        ..Default::default()
                    }),
                )
                .await?;
            let offer = connection.create_offer(None).await?;
            connection.set_local_description(offer).await?;
            let _ = tokio::time::timeout(GATHERING_TIMEOUT, gathered.wait_for(|done| *done)).await;
            let sdp = connection
                .local_description()
                .await
                .map(|d| d.sdp)
                .unwrap_or_default();
            let reply = request(
                addr,
                "POST",
                &format!("/whep/{camera}"),
                Some(token),
                Some(("application/sdp", &sdp)),
            )
            .await?;
            if reply.status != 201 {
                return Err(ClientError::Refused {
                    status: reply.status,
                    body: reply.body,
                });
            }
            let location = reply
                .header("location")
                .ok_or(ClientError::NoLocation)?
                .to_owned();
            connection
                .set_remote_description(RTCSessionDescription::answer(reply.body.clone())?)
                .await?;
            Ok((location, reply.body))
        }
        .await;
        match result {
            Ok((location, answer)) => Ok(WhepClient {
                addr,
                token: token.to_owned(),
                location,
                answer,
                connection,
                receiver,
                states,
            }),
            Err(error) => {
                let _ = connection.close().await;
                Err(error)
            }
        }
    }

    /// The session's URL path (`/whep/session/<id>`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The server's answer SDP.
    pub fn answer(&self) -> &str {
        &self.answer
    }

    /// What arrived so far.
    pub fn stats(&self) -> ReceiveStats {
        self.receiver.lock().0.clone()
    }

    /// Waits until `count` packets have arrived; `false` if they did not `within`.
    pub async fn wait_for_packets(&self, count: u64, within: Duration) -> bool {
        let mut packets = self.receiver.packets.subscribe();
        tokio::time::timeout(within, packets.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until ICE and DTLS are up; `false` if not `within`.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let mut states = self.states.clone();
        tokio::time::timeout(
            within,
            states.wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// Sends a picture loss indication (RFC 4585 §6.3.1) for the received track, as a
    /// browser does when it cannot decode; `false` before the track has arrived.
    pub async fn request_keyframe(&self) -> Result<bool, ClientError> {
        let track = self
            .receiver
            .track
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let Some(track) = track else {
            return Ok(false);
        };
        let Some(media_ssrc) = track.ssrcs().await.first().copied() else {
            return Ok(false);
        };
        track
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })])
            .await?;
        Ok(true)
    }

    /// `GET` of the session: its JSON status.
    pub async fn status(&self) -> Result<HttpReply, ClientError> {
        request(self.addr, "GET", &self.location, Some(&self.token), None).await
    }

    /// DELETEs the session, then closes the connection; returns the DELETE's status.
    pub async fn close(self) -> Result<u16, ClientError> {
        let reply = request(self.addr, "DELETE", &self.location, Some(&self.token), None).await;
        self.connection.close().await?;
        Ok(reply?.status)
    }
}

/// Counts what arrives on the received track.
struct Receiver {
    codecs: Vec<(u8, Codec)>,
    posted: Instant,
    /// The counts and the last sequence number.
    stats: Mutex<(ReceiveStats, Option<u16>)>,
    packets: watch::Sender<u64>,
    /// The received track, once it arrived (for keyframe requests).
    track: Mutex<Option<Arc<dyn TrackRemote>>>,
}

impl Receiver {
    fn lock(&self) -> std::sync::MutexGuard<'_, (ReceiveStats, Option<u16>)> {
        self.stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn packet(&self, packet: &rtc::rtp::Packet) {
        let codec = self
            .codecs
            .iter()
            .find(|(pt, _)| *pt == packet.header.payload_type)
            .map(|(_, codec)| *codec);
        let info = codec.and_then(|codec| h26x::classify(codec, &packet.payload).ok());
        let keyframe_start = info.is_some_and(|i| i.keyframe_start);
        let parameter_set = info.is_some_and(|i| i.parameter_set);
        let mut guard = self.lock();
        let (stats, last_seq) = &mut *guard;
        let seq = packet.header.sequence_number;
        if let Some(last) = *last_seq {
            let gap = seq.wrapping_sub(last).wrapping_sub(1);
            // Reordered or repeated packets (gap wraps past half the range) are not losses.
            if gap < 0x8000 {
                stats.sequence_gaps += u64::from(gap);
            }
        }
        *last_seq = Some(seq);
        stats.packets += 1;
        stats.bytes += packet.payload.len() as u64;
        stats.keyframes += u64::from(keyframe_start);
        stats.payload_type = Some(packet.header.payload_type);
        if stats.first.is_none() {
            stats.first = Some(FirstPacket {
                after: self.posted.elapsed(),
                keyframe_start,
                parameter_set,
            });
        }
        let count = stats.packets;
        drop(guard);
        self.packets.send_replace(count);
    }
}

struct ClientEvents {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    receiver: Arc<Receiver>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientEvents {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        *self
            .receiver
            .track
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::clone(&track));
        let receiver = Arc::clone(&self.receiver);
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    receiver.packet(&packet);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed_with_their_length() {
        let reply = parse_reply(
            b"HTTP/1.1 201 Created\r\nLocation: /whep/session/x\r\nContent-Length: 3\r\n\r\nv=0trailing",
        )
        .unwrap();
        assert_eq!(reply.status, 201);
        assert_eq!(reply.header("location"), Some("/whep/session/x"));
        assert_eq!(reply.body, "v=0");
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
    }

    #[test]
    fn the_offer_lists_each_profile_once_in_mode_1() {
        let codecs = ClientOffer {
            h264_profiles: vec!["42e01f".into(), "4d001f".into()],
            h265: true,
        }
        .codecs();
        let pts: Vec<u8> = codecs.iter().map(|(_, c)| c.payload_type).collect();
        assert_eq!(pts, vec![100, 101, 120]);
        assert!(
            codecs[1]
                .1
                .rtp_codec
                .sdp_fmtp_line
                .ends_with("profile-level-id=4d001f")
        );
        assert_eq!(codecs[2].0, Codec::H265);
    }
}
