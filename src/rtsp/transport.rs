//! The `Transport` header of SETUP (RFC 2326 §12.39).
//!
//! The server plays unicast RTP/AVP only, interleaved on the RTSP connection
//! (`RTP/AVP/TCP;unicast;interleaved=0-1`) or over UDP (`RTP/AVP;unicast;client_port=a-b`).
//! A client may list several alternatives separated by commas; the first one the server
//! supports wins.
//!
//! `destination=` is parsed and then ignored: media only ever goes to the address the
//! RTSP connection comes from (DESIGN.md "Network flows"), otherwise any user could make
//! the gateway flood a third party. Ignoring it rather than answering 461 keeps players
//! that always send their own address working; the reply carries no `destination`.

/// What the client asked for, reduced to what the server supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedTransport {
    /// RTP and RTCP as `$` frames on the RTSP connection; `None` lets the server choose
    /// the channels.
    Interleaved(Option<(u8, u8)>),
    /// RTP and RTCP over UDP to these ports of the client's own address.
    Udp {
        /// The client's RTP port.
        rtp: u16,
        /// The client's RTCP port.
        rtcp: u16,
    },
}

/// Why a `Transport` header cannot be satisfied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No `Transport` header at all (400).
    #[error("SETUP without a Transport header")]
    Missing,
    /// None of the alternatives is unicast RTP/AVP over TCP-interleaved or UDP with usable
    /// parameters (461 Unsupported Transport).
    #[error("no supported transport in {0:?}")]
    Unsupported(String),
}

/// Picks the first alternative of a `Transport` header the server can serve.
pub fn parse(header: Option<&str>) -> Result<RequestedTransport, TransportError> {
    let header = header.ok_or(TransportError::Missing)?;
    header
        .split(',')
        .find_map(parse_one)
        .ok_or_else(|| TransportError::Unsupported(header.chars().take(200).collect()))
}

fn parse_one(spec: &str) -> Option<RequestedTransport> {
    let mut parts = spec.trim().split(';');
    let protocol = parts.next()?.trim().to_ascii_uppercase();
    let tcp = match protocol.as_str() {
        "RTP/AVP" | "RTP/AVP/UDP" => false,
        "RTP/AVP/TCP" => true,
        _ => return None,
    };
    let mut interleaved = None;
    let mut client_port = None;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param.trim(), None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("multicast", _) => return None,
            ("mode", Some(mode)) if !mode.eq_ignore_ascii_case("play") => return None,
            ("interleaved", Some(v)) => interleaved = Some(pair::<u8>(v)?),
            ("client_port", Some(v)) => client_port = Some(pair::<u16>(v)?),
            // `destination`: ignored on purpose, see the module doc. Everything else
            // (`unicast`, `ttl`, `ssrc`, `append`, ...) does not change what is sent.
            _ => {}
        }
    }
    if tcp {
        Some(RequestedTransport::Interleaved(interleaved))
    } else {
        let (rtp, rtcp) = client_port?;
        (rtp != 0 && rtcp != 0).then_some(RequestedTransport::Udp { rtp, rtcp })
    }
}

/// `n-m`, or `n` meaning `n-(n+1)`.
fn pair<T: std::str::FromStr + Copy + TryFrom<u32> + Into<u32>>(v: &str) -> Option<(T, T)> {
    match v.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let a: T = v.parse().ok()?;
            let b = T::try_from(a.into() + 1).ok()?;
            Some((a, b))
        }
    }
}

/// The `Transport` header of a SETUP answer for interleaved channels.
pub fn reply_interleaved(rtp: u8, rtcp: u8, ssrc: u32) -> String {
    format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp};ssrc={ssrc:08X};mode=\"PLAY\"")
}

/// The `Transport` header of a SETUP answer for UDP.
pub fn reply_udp(client: (u16, u16), server: (u16, u16), ssrc: u32) -> String {
    format!(
        "RTP/AVP;unicast;client_port={}-{};server_port={}-{};ssrc={ssrc:08X};mode=\"PLAY\"",
        client.0, client.1, server.0, server.1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved() {
        assert_eq!(
            parse(Some("RTP/AVP/TCP;unicast;interleaved=0-1")),
            Ok(RequestedTransport::Interleaved(Some((0, 1))))
        );
        assert_eq!(
            parse(Some("RTP/AVP/TCP;unicast;interleaved=4")),
            Ok(RequestedTransport::Interleaved(Some((4, 5))))
        );
        assert_eq!(
            parse(Some("RTP/AVP/TCP;unicast")),
            Ok(RequestedTransport::Interleaved(None))
        );
        assert!(parse(Some("RTP/AVP/TCP;interleaved=255")).is_err());
    }

    #[test]
    fn udp() {
        assert_eq!(
            parse(Some("RTP/AVP;unicast;client_port=5000-5001")),
            Ok(RequestedTransport::Udp {
                rtp: 5000,
                rtcp: 5001
            })
        );
        assert_eq!(
            parse(Some("RTP/AVP/UDP;unicast;client_port=6970;mode=\"PLAY\"")),
            Ok(RequestedTransport::Udp {
                rtp: 6970,
                rtcp: 6971
            })
        );
        assert!(matches!(
            parse(Some("RTP/AVP;unicast")),
            Err(TransportError::Unsupported(_))
        ));
        assert!(parse(Some("RTP/AVP;unicast;client_port=0-1")).is_err());
    }

    #[test]
    fn first_supported_alternative_wins() {
        assert_eq!(
            parse(Some(
                "RTP/AVP;multicast;ttl=127, RTP/SAVP;unicast;client_port=1-2, RTP/AVP/TCP;interleaved=2-3"
            )),
            Ok(RequestedTransport::Interleaved(Some((2, 3))))
        );
        assert!(parse(Some("RTP/AVP;unicast;client_port=5000-5001;mode=record")).is_err());
        assert_eq!(parse(None), Err(TransportError::Missing));
    }

    #[test]
    fn destination_is_ignored() {
        // The request names a third party; what comes out names only ports, which the
        // server pairs with the peer address of the RTSP connection.
        assert_eq!(
            parse(Some(
                "RTP/AVP;unicast;destination=203.0.113.9;client_port=5000-5001"
            )),
            Ok(RequestedTransport::Udp {
                rtp: 5000,
                rtcp: 5001
            })
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            reply_interleaved(0, 1, 0xdead_beef),
            "RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=DEADBEEF;mode=\"PLAY\""
        );
        assert_eq!(
            reply_udp((5000, 5001), (30000, 30001), 1),
            "RTP/AVP;unicast;client_port=5000-5001;server_port=30000-30001;ssrc=00000001;mode=\"PLAY\""
        );
    }
}
