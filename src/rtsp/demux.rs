//! The connection-level byte demultiplexer: RTSP requests vs `$`-interleaved binary
//! frames on one TCP stream (RFC 2326 §10.12).
//!
//! Bytes read from the socket go into [`Demuxer::buffer_mut`] (or [`Demuxer::push`]);
//! [`Demuxer::poll_frame`] is then called until it returns `Ok(None)` (more input needed).
//! An error is final: the connection is closed, since after garbage there is no reliable
//! way to find the start of the next message.

use bytes::{Buf, Bytes, BytesMut};
use rtsp_types::{Message, Method, Request};

/// Default bound on one RTSP message (request line, headers and body). Real requests are
/// a few hundred bytes; a long Digest `Authorization` stays under 2 KiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024;

/// One unit read from an RTSP connection.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A complete RTSP request.
    Request(RawRequest),
    /// One interleaved binary frame: `$`, channel, 16-bit length, payload (RFC 2326 §10.12).
    /// From a client these are RTCP receiver reports on the odd channels.
    Interleaved {
        /// The interleaved channel id.
        channel: u8,
        /// The RTP or RTCP packet, without the 4-byte framing.
        payload: Bytes,
    },
}

/// A parsed request plus its request-URI exactly as sent.
///
/// `rtsp_types` hands back a [`url::Url`], which normalises the path (`/a/../b` becomes
/// `/b`, `%2e` becomes `.`); camera ids are checked on the raw text so that such paths
/// are refused rather than silently rewritten.
#[derive(Debug, PartialEq)]
pub struct RawRequest {
    /// The request as `rtsp_types` parsed it.
    pub request: Request<Vec<u8>>,
    /// The request-URI as it appeared on the request line; `None` for `*`.
    pub uri: Option<String>,
}

impl RawRequest {
    /// The request method.
    pub fn method(&self) -> &Method {
        self.request.method()
    }
}

/// Why the byte stream of a connection cannot be read any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    /// An RTSP message (or its unfinished header section) is longer than the bound.
    #[error("RTSP message longer than {limit} bytes")]
    MessageTooLarge {
        /// The bound in bytes.
        limit: usize,
    },
    /// Bytes that start neither an RTSP message nor an interleaved frame.
    #[error("garbage on the RTSP connection: first byte {first:#04x}")]
    Garbage {
        /// The first offending byte.
        first: u8,
    },
    /// Text that looks like an RTSP message but does not parse as one.
    #[error("malformed RTSP message: {line:?}")]
    Malformed {
        /// The first line of the message, truncated to 80 bytes, for the log.
        line: String,
    },
}

impl DemuxError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DemuxError::MessageTooLarge { .. } => "too_large",
            DemuxError::Garbage { .. } => "garbage",
            DemuxError::Malformed { .. } => "malformed",
        }
    }
}

/// Splits one connection's input into [`Frame`]s; see the module doc for how to drive it.
#[derive(Debug)]
pub struct Demuxer {
    buf: BytesMut,
    max_message: usize,
}

/// `$` (RFC 2326 §10.12).
const INTERLEAVED_MAGIC: u8 = b'$';
const HEADER_END: &[u8] = b"\r\n\r\n";

impl Demuxer {
    /// A demuxer that refuses RTSP messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Demuxer {
            buf: BytesMut::with_capacity(4096),
            max_message,
        }
    }

    /// The receive buffer, for `AsyncReadExt::read_buf`.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more input is needed.
    pub fn poll_frame(&mut self) -> Result<Option<Frame>, DemuxError> {
        // Empty lines between messages are allowed (RFC 2326 §15.1 inherits HTTP/1.1's
        // tolerance of leading CRLF); players send a bare CRLF as a keep-alive.
        let skip = self
            .buf
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        self.buf.advance(skip);
        let Some(&first) = self.buf.first() else {
            return Ok(None);
        };
        if first == INTERLEAVED_MAGIC {
            return Ok(self.poll_interleaved());
        }
        // A request starts with a method token (upper-case letters and `_` in every
        // method RTSP defines) and a response with `RTSP/`: anything else is garbage, found
        // at once rather than after `max_message` bytes.
        if !first.is_ascii_uppercase() {
            return Err(DemuxError::Garbage { first });
        }
        let window = &self.buf[..self.buf.len().min(self.max_message)];
        let header_end = find(window, HEADER_END);
        // Control bytes in the request line or headers are garbage however TCP split
        // the request: scan what arrived of the headers, complete or not.
        let headers = &window[..header_end.unwrap_or(window.len())];
        if let Some(&bad) = headers
            .iter()
            .find(|&&b| b.is_ascii_control() && b != b'\r' && b != b'\n' && b != b'\t')
        {
            return Err(DemuxError::Garbage { first: bad });
        }
        let Some(header_end) = header_end else {
            if self.buf.len() >= self.max_message {
                return Err(DemuxError::MessageTooLarge {
                    limit: self.max_message,
                });
            }
            return Ok(None);
        };
        match Message::<Vec<u8>>::parse(&self.buf[..]) {
            Ok((message, consumed)) => {
                if consumed > self.max_message {
                    return Err(DemuxError::MessageTooLarge {
                        limit: self.max_message,
                    });
                }
                let uri = raw_request_uri(&self.buf[..header_end]);
                self.buf.advance(consumed);
                match message {
                    Message::Request(request) => {
                        Ok(Some(Frame::Request(RawRequest { request, uri })))
                    }
                    // A client has no business sending responses (the server sends no
                    // requests); skip them rather than fail a sloppy player.
                    Message::Response(_) => self.poll_frame(),
                    // Unreachable in practice: `$` is handled above.
                    Message::Data(data) => Ok(Some(Frame::Interleaved {
                        channel: data.channel_id(),
                        payload: Bytes::from(data.into_body()),
                    })),
                }
            }
            Err(rtsp_types::ParseError::Incomplete(_)) => {
                // The header section is complete, so only the body is missing.
                if self.buf.len() >= self.max_message {
                    Err(DemuxError::MessageTooLarge {
                        limit: self.max_message,
                    })
                } else {
                    Ok(None)
                }
            }
            Err(rtsp_types::ParseError::Error) => {
                let line_end = find(&self.buf, b"\r\n").unwrap_or(header_end).min(80);
                Err(DemuxError::Malformed {
                    line: String::from_utf8_lossy(&self.buf[..line_end]).into_owned(),
                })
            }
        }
    }

    fn poll_interleaved(&mut self) -> Option<Frame> {
        if self.buf.len() < 4 {
            return None;
        }
        let channel = self.buf[1];
        let len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
        if self.buf.len() < 4 + len {
            return None;
        }
        let mut frame = self.buf.split_to(4 + len);
        frame.advance(4);
        Some(Frame::Interleaved {
            channel,
            payload: frame.freeze(),
        })
    }
}

/// The second token of the request line; `None` for `*`.
fn raw_request_uri(head: &[u8]) -> Option<String> {
    let line_end = find(head, b"\r\n").unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let uri = line.split(' ').nth(1)?;
    (uri != "*").then(|| uri.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(frame: Frame) -> RawRequest {
        match frame {
            Frame::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_request_fed_byte_by_byte() {
        let text = b"OPTIONS rtsp://h/cam RTSP/1.0\r\nCSeq: 1\r\n\r\n";
        let mut d = Demuxer::new(DEFAULT_MAX_MESSAGE);
        for (i, b) in text.iter().enumerate() {
            d.push(&[*b]);
            let got = d.poll_frame().unwrap();
            if i + 1 < text.len() {
                assert!(got.is_none(), "frame before the end at byte {i}");
            } else {
                let r = request(got.expect("complete request"));
                assert_eq!(r.method(), &Method::Options);
                assert_eq!(r.uri.as_deref(), Some("rtsp://h/cam"));
            }
        }
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn separates_interleaved_frames_and_requests() {
        let mut d = Demuxer::new(DEFAULT_MAX_MESSAGE);
        d.push(b"$\x01\x00\x03abc");
        d.push(b"GET_PARAMETER rtsp://h/cam RTSP/1.0\r\nCSeq: 7\r\nSession: 12\r\n\r\n");
        d.push(b"$\x00\x00\x00");
        d.push(b"$\x03\x00\x02x");
        match d.poll_frame().unwrap() {
            Some(Frame::Interleaved { channel, payload }) => {
                assert_eq!(channel, 1);
                assert_eq!(&payload[..], b"abc");
            }
            other => panic!("{other:?}"),
        }
        let r = request(d.poll_frame().unwrap().unwrap());
        assert_eq!(r.method(), &Method::GetParameter);
        match d.poll_frame().unwrap() {
            Some(Frame::Interleaved { channel, payload }) => {
                assert_eq!(channel, 0);
                assert!(payload.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // The last frame is one byte short.
        assert!(d.poll_frame().unwrap().is_none());
        d.push(b"y");
        match d.poll_frame().unwrap() {
            Some(Frame::Interleaved {
                channel: 3,
                payload,
            }) => assert_eq!(&payload[..], b"xy"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn waits_for_the_body() {
        let mut d = Demuxer::new(DEFAULT_MAX_MESSAGE);
        d.push(b"GET_PARAMETER rtsp://h/c RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 5\r\n\r\nab");
        assert!(d.poll_frame().unwrap().is_none());
        d.push(b"cde\r\n");
        let r = request(d.poll_frame().unwrap().unwrap());
        assert_eq!(r.request.body(), b"abcde");
        assert!(d.poll_frame().unwrap().is_none());
    }

    #[test]
    fn keeps_the_raw_uri_that_url_would_normalise() {
        let mut d = Demuxer::new(DEFAULT_MAX_MESSAGE);
        d.push(b"DESCRIBE rtsp://h/metz/../sncf/cam RTSP/1.0\r\nCSeq: 3\r\n\r\n");
        let r = request(d.poll_frame().unwrap().unwrap());
        assert_eq!(r.uri.as_deref(), Some("rtsp://h/metz/../sncf/cam"));
        d.push(b"OPTIONS * RTSP/1.0\r\nCSeq: 4\r\n\r\n");
        assert_eq!(request(d.poll_frame().unwrap().unwrap()).uri, None);
    }

    #[test]
    fn binary_garbage_is_refused_at_once() {
        let mut d = Demuxer::new(DEFAULT_MAX_MESSAGE);
        d.push(&[0x16, 0x03, 0x01, 0x00]); // a TLS ClientHello
        assert_eq!(d.poll_frame(), Err(DemuxError::Garbage { first: 0x16 }));
        let mut d = Demuxer::new(DEFAULT_MAX_MESSAGE);
        d.push(b"OPTIONS \x00\x01");
        assert_eq!(d.poll_frame(), Err(DemuxError::Garbage { first: 0 }));
    }

    #[test]
    fn malformed_text_is_refused() {
        let mut d = Demuxer::new(DEFAULT_MAX_MESSAGE);
        d.push(b"HELLO THERE\r\n\r\n");
        assert!(matches!(d.poll_frame(), Err(DemuxError::Malformed { .. })));
        let mut d = Demuxer::new(DEFAULT_MAX_MESSAGE);
        d.push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(d.poll_frame(), Err(DemuxError::Malformed { .. })));
    }

    #[test]
    fn endless_headers_are_bounded() {
        let mut d = Demuxer::new(256);
        d.push(b"OPTIONS rtsp://h/c RTSP/1.0\r\n");
        for _ in 0..20 {
            d.push(b"X-Filler: aaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(
            d.poll_frame(),
            Err(DemuxError::MessageTooLarge { limit: 256 })
        );
    }

    #[test]
    fn oversized_bodies_are_bounded() {
        let mut d = Demuxer::new(256);
        d.push(b"SET_PARAMETER rtsp://h/c RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 100000\r\n\r\n");
        assert!(d.poll_frame().unwrap().is_none());
        d.push(&[b'a'; 300]);
        assert_eq!(
            d.poll_frame(),
            Err(DemuxError::MessageTooLarge { limit: 256 })
        );
    }

    #[test]
    fn skips_blank_lines_and_responses() {
        let mut d = Demuxer::new(DEFAULT_MAX_MESSAGE);
        d.push(b"\r\n\r\nRTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\nOPTIONS * RTSP/1.0\r\nCSeq: 2\r\n\r\n");
        let r = request(d.poll_frame().unwrap().unwrap());
        assert_eq!(r.method(), &Method::Options);
    }
}

/// Inputs the fuzzer (`fuzz/`) found, kept as plain tests.
#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    #[test]
    fn control_bytes_in_headers_are_garbage_however_the_request_is_split() {
        let request = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\0\r\n\r\n";
        let mut whole = Demuxer::new(4096);
        whole.push(request);
        assert!(matches!(
            whole.poll_frame(),
            Err(DemuxError::Garbage { first: 0 })
        ));

        let mut split = Demuxer::new(4096);
        split.push(&request[..20]);
        assert!(matches!(split.poll_frame(), Ok(None)));
        split.push(&request[20..]);
        assert!(matches!(
            split.poll_frame(),
            Err(DemuxError::Garbage { first: 0 })
        ));
    }
}
