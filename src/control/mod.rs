//! Control messages between gateways: the generated wire types, their domain types and
//! their framing.
//!
//! - [`message`]: one domain type per message ([`Message`]), converted from the wire with
//!   `TryFrom` (refusing malformed content with a [`ControlDecodeError`]) and to it with
//!   `From`.
//! - [`framing`]: length-delimited messages over a byte stream ([`FrameDecoder`],
//!   [`ControlReader`], [`ControlWriter`]).
//!
//! Pure: the async helpers work over any tokio byte stream and open no socket.

pub mod framing;
pub mod message;

pub use framing::{
    ControlReader, ControlStreamError, ControlWriter, DEFAULT_MAX_MESSAGE_LEN, FrameDecoder,
    FrameError, encode_message,
};
pub use message::{
    CatalogCamera, Checkpoint, ControlDecodeError, ErrorCode, Feature, FlowId, Hello, Message,
    PROTO_VERSION, RequestId, Restrictions, StreamEnded, Subscribe, SubscribeError, SubscribeOk,
    VIDEO_CLOCK_RATE, ViewAnswer, ViewId, ViewOpen,
};

/// The wire types generated from `proto/passerelle.proto`. Only this module and the
/// link adapter see them; the rest of the crate uses domain types.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/passerelle.v1.rs"));
}

#[cfg(test)]
mod tests;
