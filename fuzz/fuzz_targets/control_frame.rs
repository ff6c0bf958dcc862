//! Control streams from partner gateways: `FrameDecoder` (varint-delimited protobuf) and
//! `TryFrom<wire::Control>` for every decoded message.
//!
//! Input: `[control, stream...]` (see `passerelle_fuzz::Control`): the stream is fed in
//! the chunks the control byte picks; its flag bit sets a 64-byte message limit instead of
//! the default 1 MiB, to reach the oversize path. The bytes after the control byte are
//! also decoded directly as one `wire::Control`, without framing.
//!
//! Checked beyond "no panic": the decoder gives the same messages and the same error
//! whatever the chunking; every accepted message encodes (`encode_message`) and decodes
//! back to an equal message.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use passerelle::control::{
    DEFAULT_MAX_MESSAGE_LEN, FrameDecoder, FrameError, Message, encode_message, wire,
};
use passerelle_fuzz::Control;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((control, stream)) = Control::split(data) else {
        return;
    };
    let max = if control.flag() {
        64
    } else {
        DEFAULT_MAX_MESSAGE_LEN
    };

    if let Ok(wire) = wire::Control::decode(Bytes::copy_from_slice(stream))
        && let Ok(message) = Message::try_from(wire)
    {
        round_trip(&message);
    }

    let chunked = decode(control.chunks(stream), max);
    let whole = decode(vec![stream], max);
    assert_eq!(chunked, whole, "chunking changed the outcome");
    for message in chunked.messages {
        round_trip(&message);
    }
});

#[derive(Debug, PartialEq)]
struct Outcome {
    messages: Vec<Message>,
    /// The error that ended the stream, or what `finish` said at its end.
    end: Result<(), FrameError>,
}

/// Drives the decoder as its doc says: `handle_data` per chunk, then `poll_message` until
/// `Ok(None)`; `finish` at the end. An error is final.
fn decode(chunks: Vec<&[u8]>, max: usize) -> Outcome {
    let mut decoder = FrameDecoder::new(max);
    let mut messages = Vec::new();
    for chunk in chunks {
        decoder.handle_data(chunk);
        loop {
            match decoder.poll_message() {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        messages,
                        end: Err(e),
                    };
                }
            }
        }
    }
    Outcome {
        messages,
        end: decoder.finish(),
    }
}

fn round_trip(message: &Message) {
    let mut out = BytesMut::new();
    let written = encode_message(message.clone(), DEFAULT_MAX_MESSAGE_LEN, &mut out)
        .unwrap_or_else(|e| panic!("a decoded {} does not encode: {e}", message.kind()));
    assert_eq!(written, out.len());
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_MESSAGE_LEN);
    decoder.handle_data(&out);
    let again = decoder
        .poll_message()
        .unwrap_or_else(|e| panic!("an encoded {} does not decode: {e}", message.kind()))
        .expect("a whole message was fed");
    assert_eq!(&again, message, "round trip changed the message");
    assert_eq!(decoder.poll_message(), Ok(None));
    assert_eq!(decoder.finish(), Ok(()));
}
