//! QUIC application close codes of the link, range `0x0200..=0x02ff`. Identity refusals
//! are [`crate::tls::CloseCode`] (`0x0100..=0x01ff`). Stable: peers and scripts read them,
//! and the close reason bytes carry [`LinkCloseCode::reason`].

/// Why the link closed a connection (other than an identity refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum LinkCloseCode {
    /// Orderly stop of this gateway.
    Shutdown = 0x0200,
    /// A control message could not be decoded (bad protobuf, bad camera id, unknown
    /// message type, oversize, truncated).
    MalformedControl = 0x0201,
    /// A well-formed control message where the protocol does not allow it (a second
    /// `Hello`, a message before `Hello`, an answer to no request).
    UnexpectedMessage = 0x0202,
    /// The peer speaks no protocol version we speak.
    UnsupportedVersion = 0x0203,
    /// The `Hello` names another site than the peer's certificate.
    HelloMismatch = 0x0204,
    /// No control stream or `Hello` within the handshake timeout.
    HandshakeTimeout = 0x0205,
    /// A second link with the same partner lost the tie-break (see the module doc).
    Duplicate = 0x0206,
    /// The peer ended the control stream.
    ControlStreamEnded = 0x0207,
    /// The partner we dialled presented a certificate for another partner.
    WrongPeer = 0x0208,
    /// The peer does not read its control stream: our queue for it overflowed.
    ControlBacklog = 0x0209,
}

impl LinkCloseCode {
    /// Every code, in numeric order.
    pub const ALL: [LinkCloseCode; 10] = [
        LinkCloseCode::Shutdown,
        LinkCloseCode::MalformedControl,
        LinkCloseCode::UnexpectedMessage,
        LinkCloseCode::UnsupportedVersion,
        LinkCloseCode::HelloMismatch,
        LinkCloseCode::HandshakeTimeout,
        LinkCloseCode::Duplicate,
        LinkCloseCode::ControlStreamEnded,
        LinkCloseCode::WrongPeer,
        LinkCloseCode::ControlBacklog,
    ];

    /// The numeric code.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The code as a QUIC varint, for `Connection::close`.
    pub fn var_int(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self.code())
    }

    /// The code for a number, if it is one of ours.
    pub fn from_code(code: u64) -> Option<LinkCloseCode> {
        LinkCloseCode::ALL
            .into_iter()
            .find(|c| u64::from(c.code()) == code)
    }

    /// The snake_case reason, also sent as the close reason bytes.
    pub const fn reason(self) -> &'static str {
        match self {
            LinkCloseCode::Shutdown => "shutdown",
            LinkCloseCode::MalformedControl => "malformed_control",
            LinkCloseCode::UnexpectedMessage => "unexpected_message",
            LinkCloseCode::UnsupportedVersion => "unsupported_version",
            LinkCloseCode::HelloMismatch => "hello_mismatch",
            LinkCloseCode::HandshakeTimeout => "handshake_timeout",
            LinkCloseCode::Duplicate => "duplicate",
            LinkCloseCode::ControlStreamEnded => "control_stream_ended",
            LinkCloseCode::WrongPeer => "wrong_peer",
            LinkCloseCode::ControlBacklog => "control_backlog",
        }
    }

    /// Closes `connection` with this code and its reason.
    pub fn close(self, connection: &quinn::Connection) {
        connection.close(self.var_int(), self.reason().as_bytes());
    }
}

/// A human reading of a close code received from a peer: ours, TLS's, or a number.
pub fn describe_close_code(code: u64) -> String {
    if let Some(link) = LinkCloseCode::from_code(code) {
        return link.reason().to_owned();
    }
    if let Some(tls) = crate::tls::CloseCode::from_code(code) {
        return tls.reason().to_owned();
    }
    format!("0x{code:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_in_their_range_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in LinkCloseCode::ALL {
            assert!((0x0200..=0x02ff).contains(&code.code()), "{code:?}");
            assert!(seen.insert(code.reason()), "{code:?}");
            assert_eq!(LinkCloseCode::from_code(code.code().into()), Some(code));
            assert!(crate::tls::CloseCode::from_code(code.code().into()).is_none());
        }
        assert_eq!(describe_close_code(0x0201), "malformed_control");
        assert_eq!(describe_close_code(0x0104), "unknown_peer");
        assert_eq!(describe_close_code(7), "0x7");
    }
}
