//! Length-delimited control messages over a byte stream.
//!
//! Each message is a [`wire::Control`] preceded by its length as a protobuf varint
//! (the `writeDelimitedTo` framing every protobuf library knows). A message longer than
//! the configured maximum is refused as soon as its length prefix is read, before any
//! of it is buffered.
//!
//! [`FrameDecoder`] is the pure state machine; [`ControlReader`] and [`ControlWriter`]
//! drive it over any tokio byte stream (quinn's `RecvStream`/`SendStream` in the link,
//! an in-memory duplex in tests).

use bytes::{Buf, BytesMut};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::message::{ControlDecodeError, Message};
use super::wire;

/// Default limit on one control message. A catalog of the CSU's ~950 cameras with
/// their parameter sets and restrictions is about 150 KiB.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1 << 20;

/// Longest protobuf varint: 64 bits in 7-bit groups.
const MAX_VARINT_LEN: usize = 10;

/// How much a reader asks the stream for at a time.
const READ_CHUNK: usize = 16 * 1024;

/// What went wrong framing or unframing control messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("control message of {len} bytes exceeds the limit of {max}")]
    Oversize { len: u64, max: usize },
    #[error("control message length prefix is not a valid varint")]
    BadLength,
    #[error("control stream ended inside a message ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    #[error(transparent)]
    Decode(#[from] ControlDecodeError),
}

/// Reading or writing a control stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlStreamError {
    #[error("control stream I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Splits a byte stream into control messages.
///
/// Drive it like this: after each chunk read from the stream, call
/// [`FrameDecoder::handle_data`] once, then [`FrameDecoder::poll_message`] until it
/// returns `Ok(None)` (it needs more bytes). When the stream ends, call
/// [`FrameDecoder::finish`]: it fails if the stream stopped inside a message. Any error
/// is final: the peer broke the framing, and the stream cannot be resynchronised.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_message_len: usize,
    /// Length of the message being assembled, once its prefix has been read.
    body_len: Option<usize>,
}

impl FrameDecoder {
    /// A decoder refusing messages longer than `max_message_len` bytes.
    pub fn new(max_message_len: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_message_len,
            body_len: None,
        }
    }

    /// Feeds bytes read from the stream.
    pub fn handle_data(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn poll_message(&mut self) -> Result<Option<Message>, FrameError> {
        let body_len = match self.body_len {
            Some(len) => len,
            None => {
                let Some((len, used)) = read_length(&self.buf)? else {
                    return Ok(None);
                };
                if len > self.max_message_len as u64 {
                    return Err(FrameError::Oversize {
                        len,
                        max: self.max_message_len,
                    });
                }
                self.buf.advance(used);
                // Bounded by `max_message_len`, a usize.
                let len = len as usize;
                self.body_len = Some(len);
                // Reserve up front: at most the limit, and one allocation per message.
                self.buf.reserve(len.saturating_sub(self.buf.len()));
                len
            }
        };
        if self.buf.len() < body_len {
            return Ok(None);
        }
        self.body_len = None;
        let body = self.buf.split_to(body_len).freeze();
        let control = wire::Control::decode(body).map_err(ControlDecodeError::from)?;
        Ok(Some(Message::try_from(control)?))
    }

    /// Bytes held for a message not yet complete.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Checks that the stream ended between two messages.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() && self.body_len.is_none() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }
}

/// Appends `message` to `out` behind its length prefix; returns the bytes written.
/// Fails (writing nothing) if the message is longer than `max_message_len`.
pub fn encode_message(
    message: Message,
    max_message_len: usize,
    out: &mut BytesMut,
) -> Result<usize, FrameError> {
    let control = wire::Control::from(message);
    let len = control.encoded_len();
    if len > max_message_len {
        return Err(FrameError::Oversize {
            len: len as u64,
            max: max_message_len,
        });
    }
    let prefix = prost::encoding::encoded_len_varint(len as u64);
    out.reserve(prefix + len);
    prost::encoding::encode_varint(len as u64, out);
    let before = out.len();
    // Infallible: `reserve` made room and a `BytesMut` grows anyway.
    let _ = control.encode(out);
    debug_assert_eq!(out.len() - before, len);
    Ok(prefix + len)
}

/// The length prefix at the start of `buf`: `Ok(None)` if incomplete.
fn read_length(buf: &[u8]) -> Result<Option<(u64, usize)>, FrameError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        let bits = u64::from(byte & 0x7f);
        // The tenth byte may only carry the 64th bit.
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(FrameError::BadLength);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        return Err(FrameError::BadLength);
    }
    Ok(None)
}

/// Reads control messages from a byte stream.
#[derive(Debug)]
pub struct ControlReader<R> {
    inner: R,
    decoder: FrameDecoder,
    chunk: Box<[u8]>,
}

impl<R: AsyncRead + Unpin> ControlReader<R> {
    /// A reader refusing messages longer than `max_message_len`.
    pub fn new(inner: R, max_message_len: usize) -> Self {
        ControlReader {
            inner,
            decoder: FrameDecoder::new(max_message_len),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }

    /// The next message; `Ok(None)` when the stream ended cleanly between messages.
    ///
    /// Cancel-safe: bytes read are kept in the decoder, so dropping the future and
    /// calling again loses nothing.
    pub async fn read(&mut self) -> Result<Option<Message>, ControlStreamError> {
        loop {
            if let Some(message) = self.decoder.poll_message()? {
                return Ok(Some(message));
            }
            let n = self.inner.read(&mut self.chunk).await?;
            if n == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.decoder.handle_data(&self.chunk[..n]);
        }
    }

    /// The stream, for closing it.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

/// Writes control messages to a byte stream.
#[derive(Debug)]
pub struct ControlWriter<W> {
    inner: W,
    max_message_len: usize,
    buf: BytesMut,
}

impl<W: AsyncWrite + Unpin> ControlWriter<W> {
    /// A writer refusing to send messages longer than `max_message_len`.
    pub fn new(inner: W, max_message_len: usize) -> Self {
        ControlWriter {
            inner,
            max_message_len,
            buf: BytesMut::new(),
        }
    }

    /// Writes one message. Not cancel-safe: a cancelled write may leave half a message
    /// on the stream, so the link only cancels it when closing the connection anyway.
    pub async fn write(&mut self, message: Message) -> Result<(), ControlStreamError> {
        self.buf.clear();
        encode_message(message, self.max_message_len, &mut self.buf)?;
        self.inner.write_all(&self.buf).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// The stream, for finishing it.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}
