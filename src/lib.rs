//! passerelle: the edge gateway that shares live camera streams between organisations
//! under signed conventions.
//!
//! # Layout
//!
//! Layer 0, pure core (bytes in, decisions or bytes out, `now` passed in):
//! - `ids`: site ids (DNS names), camera ids and camera patterns (`*` one segment, `**` any depth).
//! - `media`: RTP header views, H.264/H.265 payload inspection and re-splitting.
//! - `roq`: RTP-over-QUIC framing (varint flow id).
//! - `policy`: the signed policy: model, evaluation, minisign signatures.
//! - `control`: control messages between gateways (prost) and their domain types.
//!
//! Layer 1, in-process plumbing:
//! - `channel`: the per-camera fan-out with its keyframe cache and bounded sink queues.
//!
//! Layer 2, I/O adapters (they meet in the channel, never import each other):
//! - `rtsp`: the RTSP server re-publishing cameras to the site's VMS and players.
//!
//! Layer 3, composition:
//! - `config`: the TOML configuration, validated into typed settings.
//! - `cli`: the command line.
//! - `app`: builds and wires everything, owns shutdown order.
#![forbid(unsafe_code)]

pub mod app;
pub mod camsim;
pub mod ids;
pub mod ingest;
pub mod channel;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod link;
pub mod management;
pub mod media;
pub mod metrics;
pub mod policy;
pub mod roq;
pub mod rtsp;
pub mod tls;
pub mod pki;
