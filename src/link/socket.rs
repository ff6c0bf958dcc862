//! The link endpoint's UDP socket: quinn-udp receives (GRO, ECN, destination address),
//! and every datagram leaves marked with the configured DSCP (`[quic] dscp`).
//!
//! Why not just `setsockopt(IP_TOS)` before handing the socket to quinn: quinn-udp 0.5
//! sends each datagram with an `IP_TOS` / `IPV6_TCLASS` control message holding only
//! the ECN bits, and on Linux a per-datagram control message replaces the socket's
//! whole TOS byte, so the DSCP is cleared on the wire (quinn-rs/quinn#1749, #2763).
//! On Linux, this module therefore sends each transmit itself with one `sendmsg`: the
//! control message carries DSCP and ECN together, plus the GSO segment size and the
//! source address quinn asks for, so batching (one system call per GSO batch) and ECN
//! are kept. On other systems the socket option is set and quinn-udp sends: there the
//! mark may be cleared (a warning says so at bind).
//!
//! Receiving is quinn-udp's unchanged. Nothing here is `unsafe`: the control messages
//! are laid out by hand for Linux's `struct cmsghdr` and passed to `socket2`.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;

/// A UDP socket for quinn that marks every datagram with one TOS / traffic-class byte
/// (DSCP in the upper six bits; quinn's ECN goes in the lower two).
pub(crate) struct MarkedSocket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// DSCP << 2; 0 leaves datagrams unmarked (and quinn-udp sends them).
    tos: u8,
    #[cfg(target_os = "linux")]
    linux: linux::Sender,
}

impl fmt::Debug for MarkedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MarkedSocket")
            .field("local_addr", &self.io.local_addr().ok())
            .field("tos", &self.tos)
            .finish_non_exhaustive()
    }
}

impl MarkedSocket {
    /// Binds `listen` (an IPv6 wildcard accepts IPv4 too, as quinn's own bind does) and
    /// marks the socket with `tos` (the DSCP shifted left by two). Must run inside a
    /// tokio runtime.
    pub(crate) fn bind(listen: SocketAddr, tos: u8) -> io::Result<Arc<MarkedSocket>> {
        let socket = std::net::UdpSocket::bind(listen)?;
        let sock = socket2::SockRef::from(&socket);
        if tos != 0 {
            // The socket-level mark covers what does not go through `try_send`'s own
            // control message (other systems; Linux before 3.13 refusing it).
            match listen {
                SocketAddr::V4(_) => sock.set_tos_v4(u32::from(tos))?,
                SocketAddr::V6(_) => {
                    sock.set_tclass_v6(u32::from(tos))?;
                    // IPv4-mapped peers of a dual-stack socket leave through the IPv4
                    // stack, which reads IP_TOS; refused on a v6-only socket.
                    let _ = sock.set_tos_v4(u32::from(tos));
                }
            }
            if !cfg!(target_os = "linux") {
                tracing::warn!(
                    tos,
                    "the DSCP mark of link packets is only guaranteed on Linux: quinn-udp's per-packet ECN control message may clear it here"
                );
            }
        }
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Arc::new(MarkedSocket {
            io: tokio::net::UdpSocket::from_std(socket)?,
            state,
            tos,
            #[cfg(target_os = "linux")]
            linux: linux::Sender::default(),
        }))
    }
}

impl AsyncUdpSocket for MarkedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritablePoller {
            socket: self,
            pending: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if self.tos != 0 {
            return self.io.try_io(Interest::WRITABLE, || {
                self.linux.send(&self.io, self.tos, transmit)
            });
        }
        self.io.try_io(Interest::WRITABLE, || {
            self.state.send((&self.io).into(), transmit)
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.io.poll_recv_ready(cx))?;
            if let Ok(n) = self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), bufs, meta)
            }) {
                return Poll::Ready(Ok(n));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        #[cfg(target_os = "linux")]
        if self.tos != 0 && self.linux.segmentation_off() {
            return 1;
        }
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }
}

/// Waits until the socket is writable. One per connection: each wait is its own
/// `writable()` future, so connections never steal each other's wake-ups (a single
/// `poll_send_ready` waker would).
struct WritablePoller {
    socket: Arc<MarkedSocket>,
    pending: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl fmt::Debug for WritablePoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WritablePoller").finish_non_exhaustive()
    }
}

impl UdpPoller for WritablePoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let pending = this.pending.get_or_insert_with(|| {
            let socket = Arc::clone(&this.socket);
            Box::pin(async move { socket.io.writable().await })
        });
        let result = pending.as_mut().poll(cx);
        if result.is_ready() {
            this.pending = None;
        }
        result
    }
}

/// Whether a transmit to `destination` leaves through the IPv4 stack (an IPv4 address,
/// or an IPv4-mapped one on a dual-stack socket).
fn via_ipv4(destination: SocketAddr) -> bool {
    match destination.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    }
}

#[cfg(target_os = "linux")]
mod linux {
    //! `sendmsg` with hand-built control messages, Linux layout
    //! (`include/uapi/linux/socket.h`, `in.h`, `in6.h`, `udp.h`).

    use std::io::{self, IoSlice};
    use std::net::IpAddr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use quinn::udp::Transmit;

    // Levels and types, stable Linux ABI on every architecture.
    const SOL_IP: i32 = 0;
    const IP_TOS: i32 = 1;
    const IP_PKTINFO: i32 = 8;
    const SOL_IPV6: i32 = 41;
    const IPV6_PKTINFO: i32 = 50;
    const IPV6_TCLASS: i32 = 67;
    const SOL_UDP: i32 = 17;
    const UDP_SEGMENT: i32 = 103;
    const EIO: i32 = 5;
    const EINVAL: i32 = 22;
    const EMSGSIZE: i32 = 90;

    /// At most one log line per interval about failed sends (quinn recovers the loss).
    const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

    /// `struct cmsghdr` is `{ size_t cmsg_len; int cmsg_level; int cmsg_type; }`, and
    /// each message is aligned to `size_t`.
    const WORD: usize = size_of::<usize>();
    const HEADER: usize = align(WORD + 8);

    const fn align(len: usize) -> usize {
        (len + WORD - 1) & !(WORD - 1)
    }

    /// Room for TOS (int), segment size (u16) and IPv6 packet info (20 bytes).
    const CONTROL_LEN: usize = 3 * HEADER + align(4) + align(2) + align(20);

    /// Control messages of one `sendmsg`, built on the stack.
    struct Control {
        buf: [u8; CONTROL_LEN],
        len: usize,
    }

    impl Control {
        fn new() -> Self {
            Control {
                buf: [0; CONTROL_LEN],
                len: 0,
            }
        }

        /// Appends one message; the buffer is sized for every combination pushed.
        fn push(&mut self, level: i32, kind: i32, data: &[u8]) {
            let start = self.len;
            let cmsg_len = HEADER + data.len();
            self.buf[start..start + WORD].copy_from_slice(&cmsg_len.to_ne_bytes());
            self.buf[start + WORD..start + WORD + 4].copy_from_slice(&level.to_ne_bytes());
            self.buf[start + WORD + 4..start + WORD + 8].copy_from_slice(&kind.to_ne_bytes());
            self.buf[start + HEADER..start + cmsg_len].copy_from_slice(data);
            self.len = start + align(cmsg_len);
        }

        fn bytes(&self) -> &[u8] {
            &self.buf[..self.len]
        }
    }

    /// The Linux send path, and what it learned about the kernel.
    #[derive(Default)]
    pub(super) struct Sender {
        /// `sendmsg` refused a segment size (EIO/EINVAL: no GSO on this path): batches
        /// are split from then on, and quinn told to stop making them.
        segmentation_off: AtomicBool,
        /// `sendmsg` refused the TOS message (Linux before 3.13): the socket-level mark
        /// is used from then on, without ECN.
        tos_refused: AtomicBool,
        last_error_log: Mutex<Option<Instant>>,
    }

    impl Sender {
        pub(super) fn segmentation_off(&self) -> bool {
            self.segmentation_off.load(Ordering::Relaxed)
        }

        /// Sends `transmit` marked with `tos` | its ECN bits. Only `WouldBlock` is an
        /// error; anything else is logged (rate-limited) and dropped, as quinn-udp does:
        /// QUIC recovers a lost datagram.
        pub(super) fn send(
            &self,
            io: &tokio::net::UdpSocket,
            tos: u8,
            transmit: &Transmit<'_>,
        ) -> io::Result<()> {
            let segment = transmit
                .segment_size
                .filter(|size| *size < transmit.contents.len());
            let result = match segment {
                Some(size) if self.segmentation_off() => transmit
                    .contents
                    .chunks(size)
                    .try_for_each(|chunk| self.send_one(io, tos, transmit, chunk, None)),
                _ => self.send_one(io, tos, transmit, transmit.contents, segment),
            };
            match result {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Err(error),
                Err(error) if error.raw_os_error() == Some(EMSGSIZE) => Ok(()),
                Err(error) => {
                    self.log_error(&error, transmit);
                    Ok(())
                }
                Ok(()) => Ok(()),
            }
        }

        fn send_one(
            &self,
            io: &tokio::net::UdpSocket,
            tos: u8,
            transmit: &Transmit<'_>,
            contents: &[u8],
            segment: Option<usize>,
        ) -> io::Result<()> {
            let destination = socket2::SockAddr::from(transmit.destination);
            let ipv4 = super::via_ipv4(transmit.destination);
            let mut with_tos = !self.tos_refused.load(Ordering::Relaxed);
            // Set while retrying an EINVAL without the TOS message: only if that retry
            // succeeds was the message the cause (a stale source address gives EINVAL too).
            let mut tos_suspected = false;
            loop {
                let mut control = Control::new();
                if with_tos {
                    let ecn = transmit.ecn.map_or(0, |ecn| ecn as u8);
                    let value = i32::from(tos | (ecn & 0b11)).to_ne_bytes();
                    if ipv4 {
                        control.push(SOL_IP, IP_TOS, &value);
                    } else {
                        control.push(SOL_IPV6, IPV6_TCLASS, &value);
                    }
                }
                if let Some(size) = segment {
                    // quinn keeps segments within a UDP payload (u16).
                    let size = u16::try_from(size).unwrap_or(u16::MAX);
                    control.push(SOL_UDP, UDP_SEGMENT, &size.to_ne_bytes());
                }
                match transmit.src_ip {
                    // `struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }`
                    Some(IpAddr::V4(source)) if ipv4 => {
                        let mut info = [0u8; 12];
                        info[4..8].copy_from_slice(&source.octets());
                        control.push(SOL_IP, IP_PKTINFO, &info);
                    }
                    // `struct in6_pktinfo { in6_addr addr; int ifindex; }`
                    Some(IpAddr::V6(source)) if !ipv4 => {
                        let mut info = [0u8; 20];
                        info[..16].copy_from_slice(&source.octets());
                        control.push(SOL_IPV6, IPV6_PKTINFO, &info);
                    }
                    _ => {}
                }
                let buffers = [IoSlice::new(contents)];
                let message = socket2::MsgHdr::new()
                    .with_addr(&destination)
                    .with_buffers(&buffers)
                    .with_control(control.bytes());
                let error = match socket2::SockRef::from(io).sendmsg(&message, 0) {
                    Ok(_) => {
                        if tos_suspected {
                            tracing::info!(
                                "sendmsg refused the TOS control message: the socket's mark is used, without ECN"
                            );
                            self.tos_refused.store(true, Ordering::Relaxed);
                        }
                        return Ok(());
                    }
                    Err(error) => error,
                };
                match error.raw_os_error() {
                    _ if error.kind() == io::ErrorKind::Interrupted => continue,
                    Some(EIO | EINVAL) if segment.is_some() && !self.segmentation_off() => {
                        tracing::info!(%error, "sendmsg refused a GSO batch: segmentation offload off for links");
                        self.segmentation_off.store(true, Ordering::Relaxed);
                        let size = segment.unwrap_or(contents.len());
                        return contents
                            .chunks(size)
                            .try_for_each(|chunk| self.send_one(io, tos, transmit, chunk, None));
                    }
                    Some(EINVAL) if with_tos => {
                        with_tos = false;
                        tos_suspected = true;
                    }
                    _ => return Err(error),
                }
            }
        }

        fn log_error(&self, error: &io::Error, transmit: &Transmit<'_>) {
            let now = Instant::now();
            let mut last = self
                .last_error_log
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|at| now.duration_since(at) >= ERROR_LOG_INTERVAL) {
                *last = Some(now);
                tracing::warn!(%error, destination = %transmit.destination, "sending a link datagram failed (rate-limited log)");
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn control_messages_follow_the_cmsghdr_layout() {
            let mut control = Control::new();
            control.push(SOL_IP, IP_TOS, &0x8a_i32.to_ne_bytes());
            control.push(SOL_UDP, UDP_SEGMENT, &1200_u16.to_ne_bytes());
            let bytes = control.bytes();
            // First: length = header + int, level, type, then the value.
            assert_eq!(bytes[..WORD], (HEADER + 4).to_ne_bytes());
            assert_eq!(bytes[WORD..WORD + 4], SOL_IP.to_ne_bytes());
            assert_eq!(bytes[WORD + 4..WORD + 8], IP_TOS.to_ne_bytes());
            assert_eq!(bytes[HEADER..HEADER + 4], 0x8a_i32.to_ne_bytes());
            // The second starts at the aligned end of the first.
            let second = align(HEADER + 4);
            assert_eq!(bytes[second..second + WORD], (HEADER + 2).to_ne_bytes());
            assert_eq!(
                bytes[second + HEADER..second + HEADER + 2],
                1200_u16.to_ne_bytes()
            );
            assert_eq!(bytes.len(), second + align(HEADER + 2));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::time::Duration;

    use quinn::udp::EcnCodepoint;

    use super::*;

    /// Receives datagrams with quinn-udp (GRO coalesces a batch: split by stride) until
    /// `n` arrived; returns each payload with the ECN bits it arrived with.
    fn receive(
        socket: &std::net::UdpSocket,
        state: &UdpSocketState,
        n: usize,
    ) -> Vec<(Vec<u8>, Option<EcnCodepoint>)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < n {
            assert!(std::time::Instant::now() < deadline, "only {got:?}");
            let mut buf = [0u8; 4096];
            let mut meta = [RecvMeta::default()];
            match state.recv(socket.into(), &mut [IoSliceMut::new(&mut buf)], &mut meta) {
                Ok(_) => {
                    let meta = meta[0];
                    for chunk in buf[..meta.len].chunks(meta.stride) {
                        got.push((chunk.to_vec(), meta.ecn));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("{error}"),
            }
        }
        got
    }

    #[tokio::test]
    async fn a_batch_leaves_as_datagrams_with_their_ecn_from_the_source_asked() {
        for host in [
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(Ipv6Addr::LOCALHOST),
        ] {
            let receiver = std::net::UdpSocket::bind(SocketAddr::new(host, 0)).unwrap();
            let state = UdpSocketState::new((&receiver).into()).unwrap();
            let sender = MarkedSocket::bind(SocketAddr::new(host, 0), 0x88).unwrap();
            // Three segments of 100 bytes in one transmit (GSO where the kernel has it).
            let contents: Vec<u8> = (1..=3u8).flat_map(|n| [n; 100]).collect();
            let transmit = Transmit {
                destination: receiver.local_addr().unwrap(),
                ecn: Some(EcnCodepoint::Ect0),
                contents: &contents,
                segment_size: Some(100),
                src_ip: Some(host),
            };
            sender.io.writable().await.unwrap();
            sender.try_send(&transmit).unwrap();
            let got = receive(&receiver, &state, 3);
            for (n, (payload, ecn)) in got.iter().enumerate() {
                assert_eq!(*payload, vec![n as u8 + 1; 100], "{host}");
                assert_eq!(*ecn, Some(EcnCodepoint::Ect0), "{host}");
            }
        }
    }
}
