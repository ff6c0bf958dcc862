//! Re-splitting packets too big for a QUIC datagram: FU-A (RFC 6184 §5.8) and H.265 FU
//! (RFC 7798 §4.4.3).
//!
//! Cameras size RTP packets for a 1500-byte Ethernet MTU; after QUIC, UDP and RoQ
//! overhead many no longer fit a DATAGRAM. Each channel re-splits once, for all links,
//! to one `max_payload` (see `roq::max_datagram_rtp_payload`). The camera simulator uses
//! the same code to packetize whole NAL units read from Annex B files.

use bytes::{BufMut, Bytes, BytesMut};

use super::h26x::{self, H26xError, PayloadKind};
use super::{Codec, MediaPacket};

/// Size of each arena allocation. Outputs are carved from it; once they are all
/// dropped the same allocation is reclaimed, so steady state allocates nothing.
pub const ARENA_CHUNK: usize = 64 * 1024;

/// Why a packet could not be re-split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResplitError {
    #[error(
        "{codec:?}: max payload {max_payload} bytes leaves no room for fragment data (at least {min} needed)"
    )]
    PayloadLimitTooSmall {
        codec: Codec,
        max_payload: usize,
        min: usize,
    },
    #[error(transparent)]
    Payload(#[from] H26xError),
}

/// Cuts oversized video payloads into packets of at most `max_payload` bytes.
///
/// Holds a reused arena: fragment payloads (new FU headers in front of copied data)
/// are written into it and split off as `Bytes`, so cloning an output never allocates
/// and steady state does not allocate per packet. Whole NAL units taken out of an
/// aggregation are zero-copy slices of the input.
#[derive(Debug)]
pub struct Resplitter {
    arena: BytesMut,
    chunks_allocated: u64,
}

impl Default for Resplitter {
    fn default() -> Self {
        Resplitter::new()
    }
}

impl Resplitter {
    pub fn new() -> Self {
        Resplitter {
            arena: BytesMut::with_capacity(ARENA_CHUNK),
            chunks_allocated: 1,
        }
    }

    /// Arena chunks allocated so far. Grows by one per [`ARENA_CHUNK`] of fragment
    /// output while earlier outputs are still queued somewhere, and not at all when
    /// they have been sent and dropped.
    pub fn chunks_allocated(&self) -> u64 {
        self.chunks_allocated
    }

    /// Emits `packet` through `out` as one or more packets of at most `max_payload`
    /// bytes, returning how many extra packets were made (0: passed through).
    ///
    /// - A payload within `max_payload` passes through unchanged (a clone, no copy).
    /// - A single NAL unit becomes FU-A (H.264) or FU (H.265) fragments.
    /// - An FU-A/FU fragment becomes smaller fragments: S only on the first and E only
    ///   on the last, each only if the original had it.
    /// - A STAP-A/AP is split into its NAL units, each fragmented if still too big.
    ///
    /// The timestamp is kept; the marker goes on the last output only, `keyframe_start`
    /// on the first only; `parameter_set` stays on what is or is part of a parameter
    /// set. On error nothing has been emitted.
    pub fn resplit(
        &mut self,
        codec: Codec,
        packet: &MediaPacket,
        max_payload: usize,
        out: &mut impl FnMut(MediaPacket),
    ) -> Result<usize, ResplitError> {
        if packet.payload.len() <= max_payload {
            out(packet.clone());
            return Ok(0);
        }
        let overhead = h26x::fu_overhead(codec);
        if max_payload <= overhead {
            return Err(ResplitError::PayloadLimitTooSmall {
                codec,
                max_payload,
                min: overhead + 1,
            });
        }
        // Validates the whole payload (aggregations included) before emitting anything.
        let info = h26x::classify(codec, &packet.payload)?;
        let mut sink = Sink {
            template: packet,
            out,
            emitted: 0,
        };
        let payload = &packet.payload;
        match info.kind {
            PayloadKind::Single { .. } => {
                self.fragment_nal(
                    codec,
                    payload,
                    packet.parameter_set,
                    true,
                    max_payload,
                    &mut sink,
                );
            }
            PayloadKind::Fragment { start, end, .. } => {
                let header_len = h26x::nal_header_len(codec);
                let mut prefix = [0u8; 2];
                prefix[..header_len].copy_from_slice(&payload[..header_len]);
                // Keep the FU type (and H.264's R bit); S and E are set per output.
                let fu_base = payload[header_len] & 0x3f;
                let fragments = Fragments {
                    prefix: &prefix[..header_len],
                    fu_base,
                    data: &payload[overhead..],
                    start,
                    end,
                    parameter_set: packet.parameter_set,
                    last_output: true,
                };
                self.emit_fragments(&fragments, max_payload, &mut sink);
            }
            PayloadKind::Aggregation { units } => {
                for (i, unit) in h26x::aggregation_units(codec, payload).enumerate() {
                    // `classify` above already walked every unit without error.
                    let Ok(range) = unit else { break };
                    let nal = payload.slice(range);
                    let parameter_set = h26x::nal_type(codec, &nal)
                        .is_some_and(|t| h26x::is_parameter_set(codec, t));
                    let last = i + 1 == units;
                    if nal.len() <= max_payload {
                        sink.push(nal, parameter_set, last);
                    } else {
                        self.fragment_nal(codec, &nal, parameter_set, last, max_payload, &mut sink);
                    }
                }
            }
        }
        Ok(sink.emitted.saturating_sub(1))
    }

    /// Packetizes one whole NAL unit (no start code) as the camera simulator needs it:
    /// a single NAL unit packet, fragmented if larger than `max_payload`.
    pub fn packetize_nal(
        &mut self,
        codec: Codec,
        nal: &Bytes,
        timestamp: u32,
        marker: bool,
        max_payload: usize,
        out: &mut impl FnMut(MediaPacket),
    ) -> Result<usize, ResplitError> {
        let info = h26x::classify(codec, nal)?;
        let packet = MediaPacket {
            payload: nal.clone(),
            timestamp,
            marker,
            keyframe_start: info.keyframe_start,
            parameter_set: info.parameter_set,
        };
        self.resplit(codec, &packet, max_payload, out)
    }

    /// Fragments one whole NAL unit (at least a header and one byte, which the caller's
    /// size check guarantees) into FU-A / FU packets.
    fn fragment_nal(
        &mut self,
        codec: Codec,
        nal: &[u8],
        parameter_set: bool,
        last_output: bool,
        max_payload: usize,
        sink: &mut Sink<'_, impl FnMut(MediaPacket)>,
    ) {
        let (prefix, fu_base) = match codec {
            // FU indicator: F and NRI of the NAL unit, type 28; FU header type = NAL type.
            Codec::H264 => ([(nal[0] & 0xe0) | h26x::h264::FU_A, 0], nal[0] & 0x1f),
            // Payload header: the NAL header with type 49; FU header type = NAL type.
            Codec::H265 => (
                [(nal[0] & 0x81) | (h26x::h265::FU << 1), nal[1]],
                (nal[0] >> 1) & 0x3f,
            ),
        };
        let header_len = h26x::nal_header_len(codec);
        let fragments = Fragments {
            prefix: &prefix[..header_len],
            fu_base,
            data: &nal[header_len..],
            start: true,
            end: true,
            parameter_set,
            last_output,
        };
        self.emit_fragments(&fragments, max_payload, sink);
    }

    /// Cuts `f.data` into near-equal pieces (no runt last fragment) that fit
    /// `max_payload` behind the prefix and FU header.
    fn emit_fragments(
        &mut self,
        f: &Fragments<'_>,
        max_payload: usize,
        sink: &mut Sink<'_, impl FnMut(MediaPacket)>,
    ) {
        let overhead = f.prefix.len() + 1;
        // `resplit` checked max_payload > overhead.
        let capacity = max_payload - overhead;
        let count = f.data.len().div_ceil(capacity).max(1);
        let base = f.data.len() / count;
        let longer = f.data.len() % count;
        let mut rest = f.data;
        for i in 0..count {
            let (piece, tail) = rest.split_at(base + usize::from(i < longer));
            rest = tail;
            let mut fu = f.fu_base;
            if i == 0 && f.start {
                fu |= 0x80;
            }
            if i == count - 1 && f.end {
                fu |= 0x40;
            }
            let len = overhead + piece.len();
            // Reuse the current chunk if every output carved from it is gone.
            if self.arena.capacity() < len && !self.arena.try_reclaim(ARENA_CHUNK.max(len)) {
                self.arena = BytesMut::with_capacity(ARENA_CHUNK.max(len));
                self.chunks_allocated += 1;
            }
            self.arena.put_slice(f.prefix);
            self.arena.put_u8(fu);
            self.arena.put_slice(piece);
            let last = f.last_output && i == count - 1;
            sink.push(self.arena.split().freeze(), f.parameter_set, last);
        }
    }
}

/// Data to cut into FU-A / FU fragments, with the header bytes to repeat.
struct Fragments<'a> {
    /// FU indicator (H.264) or payload header (H.265).
    prefix: &'a [u8],
    /// FU header without S and E.
    fu_base: u8,
    data: &'a [u8],
    /// Whether the first output starts the NAL unit (S) / the last ends it (E).
    start: bool,
    end: bool,
    parameter_set: bool,
    /// Whether the last fragment is the last output for the input packet.
    last_output: bool,
}

/// Stamps outputs with the input's timestamp, `keyframe_start` on the first and the
/// marker on the last, and hands them over at once: holding one back would keep its
/// arena chunk from being reclaimed.
struct Sink<'a, F: FnMut(MediaPacket)> {
    template: &'a MediaPacket,
    out: &'a mut F,
    emitted: usize,
}

impl<F: FnMut(MediaPacket)> Sink<'_, F> {
    fn push(&mut self, payload: Bytes, parameter_set: bool, last: bool) {
        (self.out)(MediaPacket {
            payload,
            timestamp: self.template.timestamp,
            marker: last && self.template.marker,
            keyframe_start: self.emitted == 0 && self.template.keyframe_start,
            parameter_set,
        });
        self.emitted += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// Test-only depacketizer: single NAL units, aggregations and FU reassembly, with
    /// strict S/E checks. Returns the NAL units in order.
    fn depacketize(codec: Codec, packets: &[MediaPacket]) -> Vec<Vec<u8>> {
        let hl = h26x::nal_header_len(codec);
        let mut nals = Vec::new();
        let mut current: Option<Vec<u8>> = None;
        for p in packets {
            let payload = &p.payload;
            match h26x::classify(codec, payload).unwrap().kind {
                PayloadKind::Single { .. } => {
                    assert!(current.is_none(), "single NAL inside an FU run");
                    nals.push(payload.to_vec());
                }
                PayloadKind::Aggregation { .. } => {
                    assert!(current.is_none(), "aggregation inside an FU run");
                    nals.extend(h26x::nal_units(codec, payload).map(|n| n.to_vec()));
                }
                PayloadKind::Fragment {
                    nal_type,
                    start,
                    end,
                } => {
                    if start {
                        assert!(current.is_none(), "S while a NAL unit is open");
                        let header = match codec {
                            Codec::H264 => vec![(payload[0] & 0xe0) | nal_type],
                            Codec::H265 => vec![(payload[0] & 0x81) | (nal_type << 1), payload[1]],
                        };
                        current = Some(header);
                    }
                    let nal = current.as_mut().expect("fragment without S");
                    nal.extend_from_slice(&payload[hl + 1..]);
                    if end {
                        nals.push(current.take().unwrap());
                    }
                }
            }
        }
        assert!(current.is_none(), "NAL unit left without E");
        nals
    }

    fn run(
        r: &mut Resplitter,
        codec: Codec,
        packet: &MediaPacket,
        max: usize,
    ) -> Result<(usize, Vec<MediaPacket>), ResplitError> {
        let mut outs = Vec::new();
        let extra = r.resplit(codec, packet, max, &mut |p| outs.push(p))?;
        Ok((extra, outs))
    }

    fn nal(codec: Codec, nal_type: u8, len: usize, rng: &mut Rng) -> Vec<u8> {
        let mut v = rng.bytes(len);
        match codec {
            Codec::H264 => v[0] = 0x60 | nal_type, // NRI 3
            Codec::H265 => {
                v[0] = (nal_type << 1) | (v[0] & 0x01); // keep a random LayerId bit
                v[1] = (v[1] & 0xf8) | 0x01; // TID 1
            }
        }
        v
    }

    fn packet(payload: Vec<u8>, codec: Codec) -> MediaPacket {
        let payload = Bytes::from(payload);
        let info = h26x::classify(codec, &payload).unwrap();
        MediaPacket {
            payload,
            timestamp: 123_456,
            marker: true,
            keyframe_start: info.keyframe_start,
            parameter_set: info.parameter_set,
        }
    }

    /// Flags and sizes every output must satisfy.
    fn check_outputs(orig: &MediaPacket, outs: &[MediaPacket], max: usize) {
        assert!(!outs.is_empty());
        for (i, o) in outs.iter().enumerate() {
            assert!(
                o.payload.len() <= max,
                "output {i} of {} > {max}",
                o.payload.len()
            );
            assert_eq!(o.timestamp, orig.timestamp);
            assert_eq!(
                o.marker,
                orig.marker && i == outs.len() - 1,
                "marker on {i}"
            );
            assert_eq!(
                o.keyframe_start,
                orig.keyframe_start && i == 0,
                "keyframe on {i}"
            );
        }
    }

    #[test]
    fn payload_within_limit_passes_through_uncopied() {
        let mut rng = Rng(1);
        let mut r = Resplitter::new();
        for codec in [Codec::H264, Codec::H265] {
            let p = packet(nal(codec, 1, 1100, &mut rng), codec);
            let (extra, outs) = run(&mut r, codec, &p, 1100).unwrap();
            assert_eq!(extra, 0);
            assert_eq!(outs, vec![p.clone()]);
            assert_eq!(outs[0].payload.as_ptr(), p.payload.as_ptr());
            // Even an unusable limit is fine when nothing needs cutting.
            assert_eq!(run(&mut r, codec, &p, 5000).unwrap().0, 0);
        }
    }

    #[test]
    fn single_nal_round_trips_for_edge_limits() {
        let mut rng = Rng(2);
        let mut r = Resplitter::new();
        for codec in [Codec::H264, Codec::H265] {
            let overhead = h26x::fu_overhead(codec);
            let min = overhead + 1;
            let (idr, sps) = match codec {
                Codec::H264 => (h26x::h264::IDR, h26x::h264::SPS),
                Codec::H265 => (19, h26x::h265::SPS),
            };
            for max in [min, min + 1, 100, 1100, 1400] {
                let capacity = max - overhead;
                let hl = h26x::nal_header_len(codec);
                // Exact fit, one over, an exact multiple of the fragment capacity,
                // one over that, and big ones.
                for len in [
                    max,
                    max + 1,
                    hl + 3 * capacity,
                    hl + 3 * capacity + 1,
                    5000,
                    65_535,
                ] {
                    if len <= hl {
                        continue;
                    }
                    for t in [idr, sps, 1] {
                        let orig = packet(nal(codec, t, len, &mut rng), codec);
                        let (extra, outs) = run(&mut r, codec, &orig, max).unwrap();
                        check_outputs(&orig, &outs, max);
                        assert_eq!(extra, outs.len() - 1);
                        if len <= max {
                            assert_eq!(outs, vec![orig.clone()]);
                            continue;
                        }
                        // Fewest possible fragments.
                        assert_eq!(
                            outs.len(),
                            (len - hl).div_ceil(capacity),
                            "len {len} max {max}"
                        );
                        for o in &outs {
                            assert_eq!(o.parameter_set, t == sps);
                        }
                        assert_eq!(
                            depacketize(codec, &outs),
                            vec![orig.payload.to_vec()],
                            "{codec:?} len {len} max {max}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn fragment_header_bytes_are_exact() {
        let mut r = Resplitter::new();
        // H.264 IDR, NRI 3: FU indicator 0x7c; FU headers 0x85, 0x05, 0x45.
        let p = packet(vec![0x65, 1, 2, 3, 4, 5, 6], Codec::H264);
        let (_, outs) = run(&mut r, Codec::H264, &p, 4).unwrap();
        let payloads: Vec<&[u8]> = outs.iter().map(|o| &o.payload[..]).collect();
        assert_eq!(
            payloads,
            vec![
                &[0x7c, 0x85, 1, 2][..],
                &[0x7c, 0x05, 3, 4],
                &[0x7c, 0x45, 5, 6]
            ]
        );
        // H.265 IDR_W_RADL (19), TID 1: payload header 0x62 0x01; FU headers 0x93, 0x53.
        let p = packet(vec![19 << 1, 0x01, 1, 2, 3, 4], Codec::H265);
        let (_, outs) = run(&mut r, Codec::H265, &p, 5).unwrap();
        let payloads: Vec<&[u8]> = outs.iter().map(|o| &o.payload[..]).collect();
        assert_eq!(
            payloads,
            vec![&[0x62, 0x01, 0x93, 1, 2][..], &[0x62, 0x01, 0x53, 3, 4]]
        );
    }

    #[test]
    fn limit_leaving_no_data_room_is_refused() {
        let mut rng = Rng(3);
        let mut r = Resplitter::new();
        let p = packet(nal(Codec::H265, 1, 100, &mut rng), Codec::H265);
        assert_eq!(
            run(&mut r, Codec::H265, &p, 3),
            Err(ResplitError::PayloadLimitTooSmall {
                codec: Codec::H265,
                max_payload: 3,
                min: 4
            })
        );
        let p = packet(nal(Codec::H264, 1, 100, &mut rng), Codec::H264);
        assert!(matches!(
            run(&mut r, Codec::H264, &p, 2),
            Err(ResplitError::PayloadLimitTooSmall { min: 3, .. })
        ));
        // H.264 at 3 bytes: one data byte per fragment, still correct.
        let (extra, outs) = run(&mut r, Codec::H264, &p, 3).unwrap();
        assert_eq!(extra, 98);
        assert_eq!(depacketize(Codec::H264, &outs), vec![p.payload.to_vec()]);
    }

    #[test]
    fn oversized_fragments_are_refragmented_keeping_s_and_e() {
        let mut rng = Rng(4);
        let mut r = Resplitter::new();
        for codec in [Codec::H264, Codec::H265] {
            let t = match codec {
                Codec::H264 => 5,
                Codec::H265 => 20,
            };
            let orig = nal(codec, t, 4000, &mut rng);
            // The camera's own fragmentation at 1400, then ours at 500.
            let mut camera = Vec::new();
            r.packetize_nal(codec, &Bytes::from(orig.clone()), 9, true, 1400, &mut |p| {
                camera.push(p)
            })
            .unwrap();
            assert_eq!(camera.len(), 3);
            let mut ours = Vec::new();
            for (i, c) in camera.iter().enumerate() {
                let (extra, outs) = run(&mut r, codec, c, 500).unwrap();
                assert!(extra >= 2);
                check_outputs(c, &outs, 500);
                let flags: Vec<(bool, bool)> = outs
                    .iter()
                    .map(|o| match h26x::classify(codec, &o.payload).unwrap().kind {
                        PayloadKind::Fragment { start, end, .. } => (start, end),
                        other => panic!("not a fragment: {other:?}"),
                    })
                    .collect();
                let n = flags.len();
                for (j, &(s, e)) in flags.iter().enumerate() {
                    assert_eq!(s, i == 0 && j == 0, "S on camera frag {i}, output {j}");
                    assert_eq!(e, i == 2 && j == n - 1, "E on camera frag {i}, output {j}");
                }
                ours.extend(outs);
            }
            assert_eq!(depacketize(codec, &ours), vec![orig]);
            assert!(ours[0].keyframe_start);
            assert!(ours[1..].iter().all(|o| !o.keyframe_start));
            assert!(ours.last().unwrap().marker);
            assert_eq!(ours.iter().filter(|o| o.marker).count(), 1);
        }
    }

    #[test]
    fn oversized_aggregation_is_split_into_its_units() {
        let mut rng = Rng(5);
        let mut r = Resplitter::new();
        for codec in [Codec::H264, Codec::H265] {
            let (sps, pps, idr, agg_header) = match codec {
                Codec::H264 => (7, 8, 5, vec![0x78]),
                Codec::H265 => (33, 34, 19, vec![48 << 1, 0x01]),
            };
            let units = [
                nal(codec, sps, 20, &mut rng),
                nal(codec, pps, 6, &mut rng),
                nal(codec, idr, 2000, &mut rng),
                nal(codec, 1, 100, &mut rng),
            ];
            let mut payload = agg_header;
            for u in &units {
                payload.extend_from_slice(&(u.len() as u16).to_be_bytes());
                payload.extend_from_slice(u);
            }
            let orig = packet(payload, codec);
            assert!(orig.keyframe_start && orig.parameter_set);
            let (extra, outs) = run(&mut r, codec, &orig, 1100).unwrap();
            check_outputs(&orig, &outs, 1100);
            // SPS, PPS, two IDR fragments, P slice.
            assert_eq!(outs.len(), 5);
            assert_eq!(extra, 4);
            let ps: Vec<bool> = outs.iter().map(|o| o.parameter_set).collect();
            assert_eq!(ps, vec![true, true, false, false, false]);
            // Whole units are slices of the input, not copies.
            assert_eq!(
                outs[0].payload.as_ptr(),
                orig.payload[h26x::nal_header_len(codec) + 2..].as_ptr()
            );
            assert_eq!(depacketize(codec, &outs), units.to_vec());
        }
    }

    #[test]
    fn malformed_oversized_payload_emits_nothing() {
        let mut r = Resplitter::new();
        // STAP-A whose second unit overruns.
        let mut payload = vec![0x18, 0, 3, 0x67, 1, 2, 0x10, 0x00, 0x65];
        payload.extend_from_slice(&[0; 50]);
        let p = MediaPacket {
            payload: Bytes::from(payload),
            timestamp: 0,
            marker: false,
            keyframe_start: false,
            parameter_set: false,
        };
        let mut called = false;
        let result = r.resplit(Codec::H264, &p, 20, &mut |_| called = true);
        assert!(matches!(
            result,
            Err(ResplitError::Payload(
                H26xError::TruncatedAggregation { .. }
            ))
        ));
        assert!(!called);
    }

    #[test]
    fn annex_b_nal_units_over_1400_bytes_are_fragmented() {
        let mut rng = Rng(6);
        let mut r = Resplitter::new();
        let units = [
            nal(Codec::H264, 7, 12, &mut rng),
            nal(Codec::H264, 8, 4, &mut rng),
            nal(Codec::H264, 5, 9000, &mut rng),
            nal(Codec::H264, 1, 1400, &mut rng),
            nal(Codec::H264, 1, 1401, &mut rng),
        ];
        // No zero bytes, so no start-code emulation or trailing zeros in the file.
        let units = units.map(|u| u.into_iter().map(|b| b.max(1)).collect::<Vec<u8>>());
        let mut file = Vec::new();
        for u in &units {
            file.extend_from_slice(&[0, 0, 0, 1]);
            file.extend_from_slice(u);
        }
        let file = Bytes::from(file);
        let mut outs = Vec::new();
        let mut per_nal = Vec::new();
        for nal in h26x::split_annex_b(&file) {
            let extra = r
                .packetize_nal(Codec::H264, &nal, 0, false, 1400, &mut |p| outs.push(p))
                .unwrap();
            per_nal.push(extra);
        }
        assert_eq!(per_nal, vec![0, 0, 6, 0, 1]);
        assert!(outs.iter().all(|o| o.payload.len() <= 1400));
        assert_eq!(depacketize(Codec::H264, &outs), units.to_vec());
        assert_eq!(outs.iter().filter(|o| o.keyframe_start).count(), 1);
    }

    #[test]
    fn steady_state_reuses_one_arena_allocation() {
        let mut rng = Rng(7);
        let mut r = Resplitter::new();
        let p = packet(nal(Codec::H265, 1, 3000, &mut rng), Codec::H265);
        // Outputs dropped at once, as after a send.
        let mut made = 0;
        let mut resplit = |r: &mut Resplitter| {
            made += r.resplit(Codec::H265, &p, 1100, &mut |_| {}).unwrap() + 1;
        };
        for _ in 0..100 {
            resplit(&mut r);
        }
        let warm = r.chunks_allocated();
        for _ in 0..10_000 {
            resplit(&mut r);
        }
        assert!(
            made > 30_000,
            "the test must really fragment: {made} packets"
        );
        assert_eq!(
            r.chunks_allocated(),
            warm,
            "arena allocated in steady state"
        );
    }

    #[test]
    fn queued_outputs_cost_one_allocation_per_chunk_not_per_packet() {
        let mut rng = Rng(9);
        let mut r = Resplitter::new();
        let p = packet(nal(Codec::H264, 5, 3000, &mut rng), Codec::H264);
        // A sink queue holding the last 500 packets keeps chunks alive.
        let mut queue = std::collections::VecDeque::new();
        let mut bytes = 0;
        for _ in 0..10_000 {
            r.resplit(Codec::H264, &p, 1100, &mut |o| {
                bytes += o.payload.len();
                queue.push_back(o);
            })
            .unwrap();
            while queue.len() > 500 {
                queue.pop_front();
            }
        }
        // A chunk's tail smaller than one output stays unused.
        let bound = (bytes / (ARENA_CHUNK - 1100)) as u64 + 2;
        assert!(
            r.chunks_allocated() <= bound,
            "{} chunks for {bytes} bytes (bound {bound})",
            r.chunks_allocated()
        );
        assert!(bound < 1000, "30000 packets, far fewer chunks");
    }

    #[test]
    fn resplitter_survives_random_input() {
        let mut rng = Rng(8);
        let mut r = Resplitter::new();
        let mut ok = 0;
        for _ in 0..5000 {
            let len = 1 + rng.below(300);
            let mut v = rng.bytes(len);
            v[0] = [0x18, 0x7c, 0x65, 48 << 1, 49 << 1, 19 << 1, v[0]][rng.below(7)];
            let p = MediaPacket {
                payload: Bytes::from(v),
                timestamp: 1,
                marker: rng.below(2) == 0,
                keyframe_start: rng.below(2) == 0,
                parameter_set: false,
            };
            let max = rng.below(200);
            for codec in [Codec::H264, Codec::H265] {
                if let Ok((extra, outs)) = run(&mut r, codec, &p, max) {
                    ok += 1;
                    assert_eq!(extra + 1, outs.len());
                    check_outputs(&p, &outs, max);
                }
            }
        }
        assert!(ok > 1000, "too few successful resplits: {ok}");
    }
}
