//! The link's validated settings (from `[quic]` and `[[partner]]`) and the QUIC
//! transport configuration built from them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::control::DEFAULT_MAX_MESSAGE_LEN;
use crate::ids::{CameraId, SiteId};

/// AF41 (RFC 2597, codepoint 34), the class of interactive video, as a TOS byte: the
/// default of `[quic] dscp`.
pub const DEFAULT_DSCP_TOS: u8 = 34 << 2;

/// How media travel on links we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaTransport {
    /// One QUIC DATAGRAM per RTP/RTCP packet (RoQ §5.3): the default.
    #[default]
    Datagram,
    /// One unidirectional stream per flow (RoQ §5.2): for paths that lose datagrams,
    /// at the cost of head-of-line blocking.
    Stream,
}

/// Where to dial a partner: a host name or address and a UDP port, resolved at each
/// dial so a DNS change is followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialTarget {
    pub host: String,
    pub port: u16,
}

/// One `[[partner]]`, as far as the link is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerLink {
    /// The partner's site id: its certificate's name, and the TLS server name we dial.
    pub id: SiteId,
    /// Where we dial it; empty when only the partner dials us.
    pub addresses: Vec<DialTarget>,
    /// The prefix its cameras take here; `None` when we import nothing from it.
    pub prefix: Option<CameraId>,
}

/// Validated settings of the link adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSettings {
    /// Our own site id (sent in `Hello`).
    pub site: SiteId,
    /// The UDP address the endpoint binds; outgoing links leave from it too.
    pub listen: SocketAddr,
    /// QUIC keep-alive, so firewall UDP state never expires on an idle link (~10 s).
    pub keep_alive: Duration,
    /// A link silent this long is dead.
    pub idle_timeout: Duration,
    /// Initial UDP payload size; at least 1200 (RFC 9000 §14).
    pub initial_mtu: u16,
    /// Upper bound of path MTU discovery.
    pub max_mtu: u16,
    /// Whether to probe for a larger path MTU (DPLPMTUD, RFC 8899).
    pub mtu_discovery: bool,
    /// How we send media; a peer may choose differently, we receive both.
    pub media_transport: MediaTransport,
    /// The IP TOS / IPv6 traffic-class byte of every link datagram: the DSCP shifted
    /// left by two (AF41, the default, is 0x88); 0 leaves datagrams unmarked. QUIC's
    /// ECN bits go in the lower two bits.
    pub dscp_tos: u8,
    /// The partners, dialled or not. A peer that is not listed is refused by TLS.
    pub partners: Vec<PartnerLink>,
    /// QUIC handshake, peer identification and `Hello` exchange must finish within it.
    pub handshake_timeout: Duration,
    /// How long [`super::LinkHandle::open_view`] waits for the camera site's answer. It
    /// covers a cold on-demand camera upstream (about 8 s to describe).
    pub view_timeout: Duration,
    /// How long the providing side waits for a cold camera's description before
    /// refusing a subscription with `CAMERA_UNAVAILABLE`.
    pub stream_info_timeout: Duration,
    /// First re-dial delay after a link we dial drops; doubled at each failure.
    pub reconnect_min: Duration,
    /// Longest re-dial delay.
    pub reconnect_max: Duration,
    /// Largest control message sent or accepted.
    pub max_control_message: usize,
    /// Most streams a partner may hold on one link, and most viewing sessions.
    pub max_flows_per_link: usize,
    pub max_views_per_link: usize,
}

impl LinkSettings {
    /// Settings with the documented defaults for everything but the site, the listen
    /// address and the partners.
    pub fn new(site: SiteId, listen: SocketAddr, partners: Vec<PartnerLink>) -> Self {
        LinkSettings {
            site,
            listen,
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(8),
            initial_mtu: 1200,
            max_mtu: 1452,
            mtu_discovery: true,
            media_transport: MediaTransport::Datagram,
            dscp_tos: DEFAULT_DSCP_TOS,
            partners,
            handshake_timeout: Duration::from_secs(10),
            view_timeout: Duration::from_secs(12),
            stream_info_timeout: Duration::from_secs(8),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            max_control_message: DEFAULT_MAX_MESSAGE_LEN,
            max_flows_per_link: 4096,
            max_views_per_link: 16384,
        }
    }

    /// The QUIC transport parameters of every link, accepted or dialled.
    pub(crate) fn transport_config(&self) -> Result<Arc<quinn::TransportConfig>, super::LinkError> {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive));
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout).map_err(|_| {
            super::LinkError::Settings {
                key: "idle_timeout",
                problem: "too long for QUIC (at most 2^62 ms)",
            }
        })?;
        t.max_idle_timeout(Some(idle));
        t.initial_mtu(self.initial_mtu);
        if self.mtu_discovery {
            let mut mtu = quinn::MtuDiscoveryConfig::default();
            mtu.upper_bound(self.max_mtu.max(self.initial_mtu));
            t.mtu_discovery_config(Some(mtu));
        } else {
            t.mtu_discovery_config(None);
        }
        // Datagrams on (RFC 9221): 1 MiB each way, about a second of a 8 Mbit/s camera.
        // A full send buffer drops the oldest datagram, never blocks.
        t.datagram_receive_buffer_size(Some(1 << 20));
        t.datagram_send_buffer_size(1 << 20);
        // One bidirectional stream: the control stream the dialler opens.
        t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1));
        // The stream fallback opens one unidirectional stream per flow.
        t.max_concurrent_uni_streams(quinn::VarInt::from_u32(
            u32::try_from(self.max_flows_per_link).unwrap_or(u32::MAX),
        ));
        Ok(Arc::new(t))
    }
}
