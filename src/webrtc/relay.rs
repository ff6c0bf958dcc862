//! What one WebRTC viewer is sent, packet by packet: pure, so the rules are tested
//! without a peer connection.
//!
//! Drive a [`Relay`] with every [`SinkEvent`] of the viewer's subscription, in order;
//! it appends the RTP packets to send (its own sequence numbers, the negotiated payload
//! type, the track's SSRC, no header extensions) or says why the camera cannot play.
//!
//! - Nothing but parameter sets goes out before a keyframe starts, at the start and
//!   after a loss: a browser shown P-frames without their reference shows garbage and
//!   asks for a keyframe every 200 ms.
//! - A viewer that starts on a keyframe it got without the parameter sets (no keyframe
//!   cache, the in-band sets dropped while waiting) gets the camera's stored sets first.
//! - A loss of `n` packets advances the sequence number by `n`, so the browser sees it.
//! - A picture stamped before the one sent ahead of it (B-frames) ends the session:
//!   browsers play WebRTC video in the order it arrives.

use bytes::Bytes;
use rtc::rtp;

use crate::channel::SinkEvent;
use crate::media::{Codec, MediaPacket, StreamInfo};

/// The RTP version (RFC 3550 §5.1).
const RTP_VERSION: u8 = 2;

/// Why a camera's stream cannot be shown in a browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unplayable {
    /// The camera sends pictures in another order than they are shown (B-frames that
    /// reference later pictures), which WebRTC receivers do not reorder. Told from the
    /// RTP timestamps, which are presentation times: a picture stamped before the one
    /// sent ahead of it. Low-delay B slices, which only look back, play and pass.
    #[error(
        "this camera's {codec} stream has B-frames (pictures sent out of display order), which browsers cannot play over WebRTC; turn B-frames off in the camera's encoder settings"
    )]
    BFrames {
        /// `H.264` or `H.265`.
        codec: &'static str,
    },
}

/// One viewer's numbering and keyframe gate.
#[derive(Debug)]
pub struct Relay {
    codec: Codec,
    payload_type: u8,
    ssrc: u32,
    next_seq: u16,
    parameter_sets: Vec<Bytes>,
    /// The RTP timestamp of the latest picture sent.
    last_timestamp: Option<u32>,
    waiting_for_keyframe: bool,
    sent_parameter_sets: bool,
}

impl Relay {
    /// A relay for a viewer of the camera described by `info`, sending `payload_type`
    /// with `ssrc`, numbering from `first_seq` (random, RFC 3550 §5.1).
    pub fn new(info: &StreamInfo, payload_type: u8, ssrc: u32, first_seq: u16) -> Relay {
        Relay {
            codec: info.codec,
            payload_type,
            ssrc,
            next_seq: first_seq,
            parameter_sets: info.parameter_sets.clone(),
            last_timestamp: None,
            waiting_for_keyframe: true,
            sent_parameter_sets: false,
        }
    }

    /// Appends to `out` the packets `event` makes the viewer send.
    pub fn handle(
        &mut self,
        event: SinkEvent,
        out: &mut Vec<rtp::Packet>,
    ) -> Result<(), Unplayable> {
        match event {
            SinkEvent::Packet(packet) => self.packet(packet, out),
            SinkEvent::Dropped(n) => {
                // Truncation is the intent: sequence numbers wrap at 2^16.
                self.next_seq = self.next_seq.wrapping_add(n as u16);
                self.waiting_for_keyframe = true;
                Ok(())
            }
            // The sender-report interceptor writes this leg's own reports.
            SinkEvent::SenderReport { .. } => Ok(()),
        }
    }

    fn packet(
        &mut self,
        packet: MediaPacket,
        out: &mut Vec<rtp::Packet>,
    ) -> Result<(), Unplayable> {
        if packet.parameter_set && !packet.keyframe_start {
            self.sent_parameter_sets = true;
            self.push(packet.payload, packet.timestamp, packet.marker, out);
            return Ok(());
        }
        if self.waiting_for_keyframe {
            if !packet.keyframe_start {
                return Ok(());
            }
            self.waiting_for_keyframe = false;
        }
        if !self.sent_parameter_sets && !packet.parameter_set {
            for set in self.parameter_sets.clone() {
                self.push(set, packet.timestamp, false, out);
            }
        }
        self.sent_parameter_sets = true;
        // Wrapping difference: RTP timestamps wrap at 2^32 (every 13 h at 90 kHz).
        let before_last = self
            .last_timestamp
            .is_some_and(|last| (packet.timestamp.wrapping_sub(last) as i32) < 0);
        if before_last {
            return Err(Unplayable::BFrames {
                codec: match self.codec {
                    Codec::H264 => "H.264",
                    Codec::H265 => "H.265",
                },
            });
        }
        self.last_timestamp = Some(packet.timestamp);
        self.push(packet.payload, packet.timestamp, packet.marker, out);
        Ok(())
    }

    fn push(&mut self, payload: Bytes, timestamp: u32, marker: bool, out: &mut Vec<rtp::Packet>) {
        out.push(rtp::Packet {
            header: rtp::header::Header {
                version: RTP_VERSION,
                marker,
                payload_type: self.payload_type,
                sequence_number: self.next_seq,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        });
        self.next_seq = self.next_seq.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h26x;

    const SPS: &[u8] = &[0x67, 0x4d, 0x40, 0x1e];
    const PPS: &[u8] = &[0x68, 0xeb];

    fn info() -> StreamInfo {
        StreamInfo {
            codec: Codec::H264,
            clock_rate: 90_000,
            parameter_sets: vec![Bytes::from_static(SPS), Bytes::from_static(PPS)],
        }
    }

    fn packet(payload: &'static [u8], timestamp: u32) -> SinkEvent {
        let info = h26x::classify(Codec::H264, payload).unwrap();
        SinkEvent::Packet(MediaPacket {
            payload: Bytes::from_static(payload),
            timestamp,
            marker: true,
            keyframe_start: info.keyframe_start,
            parameter_set: info.parameter_set,
        })
    }

    fn run(relay: &mut Relay, events: Vec<SinkEvent>) -> Vec<rtp::Packet> {
        let mut out = Vec::new();
        for event in events {
            relay.handle(event, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn a_cache_replay_goes_out_as_it_is_with_our_numbering() {
        let mut relay = Relay::new(&info(), 116, 0xdead_beef, 65_535);
        let out = run(
            &mut relay,
            vec![
                SinkEvent::SenderReport { ntp: 1, rtp: 2 },
                packet(SPS, 900),
                packet(PPS, 900),
                packet(&[0x65, 0x88, 0x84], 900),
                packet(&[0x41, 0x9a, 0x3b], 4500),
            ],
        );
        let seqs: Vec<u16> = out.iter().map(|p| p.header.sequence_number).collect();
        assert_eq!(seqs, vec![65_535, 0, 1, 2]);
        assert!(out.iter().all(|p| p.header.payload_type == 116
            && p.header.ssrc == 0xdead_beef
            && p.header.version == 2
            && !p.header.extension
            && p.header.extensions.is_empty()));
        assert_eq!(&out[0].payload[..], SPS);
        assert_eq!(out[3].header.timestamp, 4500);
    }

    #[test]
    fn p_frames_wait_for_a_keyframe_which_gets_the_parameter_sets() {
        let mut relay = Relay::new(&info(), 96, 1, 100);
        let out = run(
            &mut relay,
            vec![
                packet(&[0x41, 0x9a, 0x3b], 0),
                packet(&[0x65, 0x88, 0x84], 3600),
                packet(&[0x41, 0x9a, 0x3b], 7200),
            ],
        );
        let payloads: Vec<&[u8]> = out.iter().map(|p| &p.payload[..]).collect();
        assert_eq!(
            payloads,
            vec![SPS, PPS, &[0x65, 0x88, 0x84][..], &[0x41, 0x9a, 0x3b][..]]
        );
        assert_eq!(out[0].header.timestamp, 3600);
        assert!(!out[0].header.marker);
        assert_eq!(out[0].header.sequence_number, 100);
    }

    #[test]
    fn a_loss_shows_in_the_numbering_and_closes_the_gate_until_the_next_keyframe() {
        let mut relay = Relay::new(&info(), 96, 1, 10);
        let out = run(
            &mut relay,
            vec![
                packet(SPS, 0),
                packet(PPS, 0),
                packet(&[0x65, 0x88, 0x84], 0),
                SinkEvent::Dropped(5),
                packet(&[0x41, 0x9a, 0x3b], 3600),
                packet(&[0x65, 0x88, 0x84], 7200),
            ],
        );
        let seqs: Vec<u16> = out.iter().map(|p| p.header.sequence_number).collect();
        // 10, 11, 12 sent; 5 lost (13..=17); the P-frame after the loss is not sent; the
        // keyframe is 18, without repeated parameter sets (the decoder has them).
        assert_eq!(seqs, vec![10, 11, 12, 18]);
    }

    #[test]
    fn a_picture_stamped_before_the_previous_one_makes_the_camera_unplayable() {
        let mut relay = Relay::new(&info(), 96, 1, 0);
        let mut out = Vec::new();
        // I0 P2 B1: the B picture is shown before the P picture sent ahead of it.
        for event in [
            packet(SPS, 0),
            packet(PPS, 0),
            packet(&[0x65, 0x88, 0x84], 0),
            packet(&[0x41, 0x9a, 0x3b], 7200),
        ] {
            relay.handle(event, &mut out).unwrap();
        }
        let error = relay
            .handle(packet(&[0x01, 0x9c], 3600), &mut out)
            .unwrap_err();
        assert_eq!(error, Unplayable::BFrames { codec: "H.264" });
        assert!(error.to_string().contains("B-frames"));
        assert_eq!(out.len(), 4, "the reordered picture is not sent");
    }

    #[test]
    fn low_delay_b_slices_in_display_order_play() {
        let mut relay = Relay::new(&info(), 96, 1, 0);
        let mut out = Vec::new();
        // B slices (slice_type 1) that only look back: timestamps keep increasing, as
        // they do across a wrap of the 32-bit RTP clock.
        for event in [
            packet(SPS, u32::MAX - 3600),
            packet(PPS, u32::MAX - 3600),
            packet(&[0x65, 0x88, 0x84], u32::MAX - 3600),
            packet(&[0x01, 0x9c], u32::MAX - 3600),
            packet(&[0x01, 0x9c], 3599),
            packet(&[0x01, 0x9c], 7199),
        ] {
            relay.handle(event, &mut out).unwrap();
        }
        assert_eq!(out.len(), 6);
    }
}
