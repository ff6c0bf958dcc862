//! passerelle: the edge gateway that shares live camera streams between organisations
//! under signed conventions.
//!
//! # Layout
//!
//! Imports point down the layers only; adapters meet in the channel, and every
//! cross-boundary decision goes through `policy`.
//!
//! Layer 0, pure core (bytes in, decisions or bytes out, `now` passed in):
//! - `backoff`: retry delays with jitter (camera reconnects, partner re-dials).
//! - `ids`: site ids (DNS names), camera ids and camera patterns (`*` one segment, `**` any depth).
//! - `log_limit`: rate limiting of repeated log lines, per camera or peer.
//! - `media`: RTP/RTCP views, H.264/H.265 payload inspection, re-splitting (FU-A, H.265 FU).
//! - `roq`: RTP-over-QUIC framing (varint flow id).
//! - `policy`: the signed policy: model, evaluation, minisign signatures and keys.
//! - `control`: control messages between gateways (`proto/`, prost) and their framing.
//!
//! Layer 1, in-process plumbing:
//! - `channel`: the per-camera fan-out: keyframe cache, bounded sink queues, keyframe requests.
//! - `metrics`: the Prometheus recorder and the description of every metric.
//! - `journal`: the audit journal: hash-chained JSON Lines files, signed checkpoints, the access register.
//! - `interventions`: agents' open interventions, which give their viewing sessions a reason.
//! - `status`: the site as operators see it: cameras, links, policy (the status API and page).
//! - `viewing`: what the RTSP and WebRTC servers ask of the site: cameras and viewing sessions.
//!
//! Layer 2, I/O adapters:
//! - `ingest`: pulls cameras over RTSP (retina), on demand or always on.
//! - `rtsp`: the RTSP server re-publishing cameras to the site's VMS and players.
//! - `link`: QUIC links between gateways (quinn), RTP over QUIC datagrams.
//! - `tls`: mutual TLS 1.3 for links and peer identification.
//! - `pki`: development certificates with the links' certificate profile.
//! - `management`: `/metrics`, `/healthz`, `/readyz`.
//! - `http`: the `[http]` listener (HTTPS): bearer tokens, CORS, the status and interventions API, the pages.
//! - `webrtc`: WHEP on the `[http]` listener: one peer connection and task per browser viewer.
//! - `notify`: systemd notifications (`sd_notify`): ready, reloading, watchdog, stopping.
//!
//! Layer 3, composition:
//! - `config`: the TOML configuration, validated into typed settings.
//! - `cli`: the command line.
//! - `app`: builds and wires everything, owns shutdown order; the offline commands.
//! - `camsim`: the camera simulator playing the built-in fixtures.
//! - `demo`: the Metz kit: certificates, signed policies and configurations of two sites.
#![forbid(unsafe_code)]

pub mod app;
pub mod backoff;
pub mod camsim;
pub mod channel;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod http;
pub mod ids;
pub mod ingest;
pub mod interventions;
pub mod journal;
pub mod link;
pub mod log_limit;
pub mod management;
pub mod media;
pub mod metrics;
pub mod notify;
pub mod pki;
pub mod policy;
pub mod roq;
pub mod rtsp;
pub mod status;
pub mod tls;
pub mod viewing;
pub mod webrtc;
