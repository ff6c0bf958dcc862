//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! Most targets read their first input byte as a *control byte* ([`Control`]) that says
//! how to cut the rest into chunks, so one corpus entry explores both the bytes and the
//! ways a socket may deliver them. The rest of the input is the byte stream itself,
//! which keeps seed files close to real captures.

use std::sync::OnceLock;

use passerelle::media::Codec;
use passerelle::media::h26x::{self, PayloadKind};

/// The first byte of an input: chunking mode (bits 0-1), a flag (bit 2), and a seed for
/// chunk sizes (bits 3-7).
#[derive(Debug, Clone, Copy)]
pub struct Control(pub u8);

impl Control {
    /// Splits `data` into its control byte and the rest; `None` for an empty input.
    pub fn split(data: &[u8]) -> Option<(Control, &[u8])> {
        let (&first, rest) = data.split_first()?;
        Some((Control(first), rest))
    }

    /// Bit 2, a switch each target gives its own meaning (a small size limit).
    pub fn flag(self) -> bool {
        self.0 & 0b100 != 0
    }

    /// Cuts `data` into the chunks a reader might see:
    /// mode 0 one chunk, mode 1 one byte at a time, mode 2 chunks of 1 to 16 bytes,
    /// mode 3 chunks of 1 to 512 bytes (sizes from a PRNG seeded by bits 3-7).
    pub fn chunks(self, data: &[u8]) -> Vec<&[u8]> {
        let max = match self.0 & 0b11 {
            0 => return if data.is_empty() { vec![] } else { vec![data] },
            1 => 1,
            2 => 16,
            _ => 512,
        };
        let mut rng = XorShift::new(u64::from(self.0 >> 3));
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = (1 + rng.below(max)).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            out.push(chunk);
            rest = tail;
        }
        out
    }
}

/// Whether the check named `check` is switched off by `FUZZ_SKIP` (comma-separated
/// names). Each skippable check guards a reported, not yet fixed bug, so that fuzzing can
/// go on past it; fuzz/README.md lists them. Unset, every check runs.
pub fn skipped(check: &str) -> bool {
    static SKIP: OnceLock<Vec<String>> = OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("FUZZ_SKIP")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .iter()
    .any(|s| s == check)
}

/// A tiny deterministic PRNG (xorshift64*), so a crash replays exactly.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A strict receiver: rebuilds NAL units from single, aggregation and fragment payloads
/// (RFC 6184 §5, RFC 7798 §4.4), as a player would.
#[derive(Debug, Default)]
pub struct Depacketizer {
    /// Complete NAL units, in order.
    pub nals: Vec<Vec<u8>>,
    /// Fragment data gathered so far for the open FU run: NAL header, then data.
    pub open: Option<Vec<u8>>,
}

impl Depacketizer {
    /// Adds one payload the re-splitter emitted. Panics (the fuzz failure) on anything
    /// a conforming receiver would have to drop: a payload that does not classify, S
    /// while a fragment run is open, or a continuation without a start.
    pub fn push(&mut self, codec: Codec, payload: &[u8]) {
        let hl = h26x::nal_header_len(codec);
        let info = h26x::classify(codec, payload)
            .unwrap_or_else(|e| panic!("re-splitter emitted an invalid payload: {e}"));
        match info.kind {
            PayloadKind::Single { .. } => {
                assert!(self.open.is_none(), "single NAL unit inside a fragment run");
                self.nals.push(payload.to_vec());
            }
            PayloadKind::Aggregation { .. } => {
                assert!(self.open.is_none(), "aggregation inside a fragment run");
                let payload = bytes::Bytes::copy_from_slice(payload);
                self.nals
                    .extend(h26x::nal_units(codec, &payload).map(|n| n.to_vec()));
            }
            PayloadKind::Fragment {
                nal_type,
                start,
                end,
            } => {
                if start {
                    assert!(self.open.is_none(), "S bit while a fragment run is open");
                    let header = match codec {
                        Codec::H264 => vec![(payload[0] & 0xe0) | nal_type],
                        Codec::H265 => vec![(payload[0] & 0x81) | (nal_type << 1), payload[1]],
                    };
                    self.open = Some(header);
                }
                let open = self
                    .open
                    .as_mut()
                    .expect("fragment without S and no open fragment run");
                open.extend_from_slice(&payload[hl + 1..]);
                if end {
                    let nal = self.open.take().expect("open run");
                    self.nals.push(nal);
                }
            }
        }
    }
}
