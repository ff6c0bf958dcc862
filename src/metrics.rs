//! The Prometheus recorder and the description of every metric passerelle exports.
//!
//! Components record through the `metrics` macros; this module installs the recorder
//! once per process and renders the text exposition for `GET /metrics`.

use metrics::{Unit, describe_counter, describe_gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide Prometheus recorder and describes every metric.
///
/// Fails only if another recorder is already installed.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_gauge!(
        "passerelle_camera_state",
        "1 for the camera's current ingest state (idle, connecting, playing, failed), 0 for the others."
    );
    describe_gauge!(
        "passerelle_camera_up",
        "1 if the camera answered its last probe or is playing, 0 otherwise."
    );
    describe_counter!(
        "passerelle_ingest_packets_total",
        "Video RTP packets received from the camera or upstream partner."
    );
    describe_counter!(
        "passerelle_ingest_bytes_total",
        Unit::Bytes,
        "RTP payload bytes of video received from the camera."
    );
    describe_counter!(
        "passerelle_ingest_lost_packets_total",
        "Video RTP packets from the camera that never arrived (sequence-number gaps)."
    );
    describe_gauge!(
        "passerelle_ingest_jitter_seconds",
        Unit::Seconds,
        "Interarrival jitter of the camera's video RTP (RFC 3550 section 6.4.1)."
    );
    describe_counter!(
        "passerelle_forwarded_packets_total",
        "Video RTP packets sent to a sink (a partner site, or local for this site's viewers)."
    );
    describe_counter!(
        "passerelle_forwarded_bytes_total",
        Unit::Bytes,
        "RTP payload bytes sent to a sink (a partner site, or local for this site's viewers)."
    );
    describe_counter!(
        "passerelle_dropped_packets_total",
        "Video packets dropped for a sink, by reason (queue_full: the sink fell behind)."
    );
    describe_counter!(
        "passerelle_resplit_packets_total",
        "Extra packets made by re-splitting packets too big for a QUIC datagram."
    );
    describe_counter!(
        "passerelle_malformed_packets_total",
        "Packets dropped because they could not be parsed."
    );
    describe_gauge!(
        "passerelle_viewers",
        "Current viewing sessions per camera and agent kind."
    );
    describe_gauge!(
        "passerelle_webrtc_sessions",
        "Open WebRTC (WHEP) sessions: answered and not ended."
    );
    describe_counter!(
        "passerelle_webrtc_sessions_refused_total",
        "WHEP offers refused, by reason (max_sessions, not_found, forbidden, not_acceptable, unplayable, unavailable, bad_offer...)."
    );
    describe_counter!(
        "passerelle_webrtc_sessions_ended_total",
        "WebRTC sessions ended, by reason (deleted, connection_failed, connect_timeout, camera_ended, unplayable, shutdown...)."
    );
    describe_counter!(
        "passerelle_webrtc_pli_total",
        "Keyframe requests (PLI, FIR) from WebRTC viewers; the channel rate-limits what reaches the camera."
    );
    metrics::describe_histogram!(
        "passerelle_webrtc_connect_seconds",
        Unit::Seconds,
        "Time from a WHEP offer to the browser's ICE and DTLS being up."
    );
    describe_gauge!(
        "passerelle_peer_connected",
        "1 while a link with the partner site is up, 0 otherwise."
    );
    describe_gauge!(
        "passerelle_peer_rtt_seconds",
        Unit::Seconds,
        "Round-trip time of the link with the partner site, from QUIC."
    );
    describe_gauge!(
        "passerelle_peer_congestion_window_bytes",
        Unit::Bytes,
        "Congestion window of the link with the partner site, from QUIC."
    );
    describe_counter!(
        "passerelle_peer_lost_packets_total",
        "Packets of the link with the partner site that QUIC declared lost."
    );
    describe_counter!(
        "passerelle_access_denied_total",
        "Refusals at the boundary by reason: handshakes, streams and viewing sessions."
    );
    describe_counter!(
        "passerelle_link_received_dropped_total",
        "Packets received on a link and dropped (unknown_flow, malformed, backlog)."
    );
    describe_gauge!(
        "passerelle_policy_in_force",
        "1 while a policy for this site is within its validity; 0 (nothing crosses) otherwise."
    );
    describe_gauge!(
        "passerelle_policy_serial",
        "Serial of the signed policy in force; absent while none is."
    );
    describe_gauge!(
        "passerelle_policy_valid_until_timestamp_seconds",
        Unit::Seconds,
        "End of validity of the policy in force (Unix time): alert weeks ahead."
    );
    describe_counter!(
        "passerelle_policy_reload_failures_total",
        "Policies refused (signature, site, validity, parse): the one in force stays."
    );
    describe_gauge!(
        "passerelle_tls_cert_expiry_timestamp_seconds",
        Unit::Seconds,
        "Expiry (Unix time) of our certificate, our CA and each partner's CA."
    );
    describe_counter!(
        "passerelle_auth_failures_total",
        "Refused credentials of local users, by source (rtsp, http)."
    );
    describe_counter!(
        "passerelle_journal_records_total",
        "Records written to the access journal, by kind."
    );
    describe_counter!(
        "passerelle_journal_write_failures_total",
        "Journal writes that failed (disk full, I/O error): viewing sessions are refused."
    );
    describe_gauge!(
        "passerelle_journal_writable",
        "1 while the access journal accepts records, 0 otherwise."
    );
    describe_gauge!(
        "passerelle_policy_trusted_keys_info",
        "1 per trusted policy key (key id), with the number of signatures required."
    );
    describe_counter!(
        "passerelle_rtsp_requests_total",
        "RTSP requests answered, by method and status."
    );
    describe_counter!(
        "passerelle_rtsp_protocol_errors_total",
        "RTSP connections closed for malformed input, by reason."
    );
    describe_gauge!("passerelle_rtsp_connections", "Open RTSP connections.");
    describe_counter!(
        "passerelle_rtsp_connections_refused_total",
        "RTSP connections refused at the connection limit."
    );
}

/// Holds one unit of a gauge for its lifetime (a viewer, a connection): incremented when
/// made, decremented when dropped, so every exit path counts down.
pub struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    /// Increments `gauge` until the guard is dropped.
    pub fn new(gauge: metrics::Gauge) -> GaugeGuard {
        gauge.increment(1.0);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
