//! The interarrival jitter of a camera's RTP stream as RFC 3550 §6.4.1 defines it, the
//! figure an RTCP receiver report would carry. Pure: arrival times are passed in.

use tokio::time::Instant;

/// RFC 3550 §6.4.1: the estimate moves by 1/16 of each new difference, a gain that
/// "gives a good noise reduction ratio while maintaining a reasonable rate of
/// convergence".
const GAIN: f64 = 1.0 / 16.0;

/// Interarrival jitter of one RTP stream.
///
/// Drive it with [`Jitter::begin_session`] when a camera session starts (its timestamps
/// start anywhere), then [`Jitter::update`] with each packet's RTP timestamp and arrival
/// time, in arrival order. The estimate carries over sessions; only the reference
/// packet is forgotten.
#[derive(Debug, Clone)]
pub(crate) struct Jitter {
    clock_rate: f64,
    /// The previous packet's arrival and RTP timestamp.
    last: Option<(Instant, u32)>,
    /// The estimate, in RTP timestamp units.
    ticks: f64,
}

impl Jitter {
    pub(crate) fn new() -> Self {
        Jitter {
            clock_rate: 90_000.0,
            last: None,
            ticks: 0.0,
        }
    }

    /// A new session starts with the stream's RTP clock rate (90 kHz for video).
    pub(crate) fn begin_session(&mut self, clock_rate: u32) {
        self.clock_rate = f64::from(clock_rate.max(1));
        self.last = None;
    }

    /// Takes one packet stamped `rtp` that arrived at `arrival`; returns the jitter in
    /// seconds.
    pub(crate) fn update(&mut self, rtp: u32, arrival: Instant) -> f64 {
        if let Some((last_arrival, last_rtp)) = self.last {
            // D(i-1, i) = (Rj - Ri) - (Sj - Si), in timestamp units. The RTP difference
            // is signed (modulo 2^32): reordered pictures step back.
            let received = arrival
                .saturating_duration_since(last_arrival)
                .as_secs_f64()
                * self.clock_rate;
            let sent = f64::from(rtp.wrapping_sub(last_rtp).cast_signed());
            let difference = (received - sent).abs();
            self.ticks += (difference - self.ticks) * GAIN;
        }
        self.last = Some((arrival, rtp));
        self.seconds()
    }

    /// The estimate in seconds.
    pub(crate) fn seconds(&self) -> f64 {
        self.ticks / self.clock_rate
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// 25 fps at 90 kHz.
    const FRAME: u32 = 3600;

    #[test]
    fn a_steady_stream_has_no_jitter() {
        let t0 = Instant::now();
        let mut jitter = Jitter::new();
        jitter.begin_session(90_000);
        for n in 0..100u32 {
            let got = jitter.update(
                n.wrapping_mul(FRAME).wrapping_add(u32::MAX - 50_000),
                t0 + Duration::from_millis(40 * u64::from(n)),
            );
            assert!(got.abs() < 1e-9, "{n}: {got}");
        }
    }

    #[test]
    fn alternating_delay_converges_to_the_rfc_estimate() {
        // Every other packet arrives 10 ms late: each difference is 10 ms, and the
        // estimate J += (|D| - J)/16 converges to 10 ms.
        let t0 = Instant::now();
        let mut jitter = Jitter::new();
        jitter.begin_session(90_000);
        let mut last = 0.0;
        for n in 0..400u32 {
            let late = if n % 2 == 1 { 10 } else { 0 };
            last = jitter.update(
                n * FRAME,
                t0 + Duration::from_millis(40 * u64::from(n) + late),
            );
        }
        assert!((last - 0.010).abs() < 1e-4, "{last}");
        // The first step is 1/16 of the difference.
        let mut fresh = Jitter::new();
        fresh.begin_session(90_000);
        fresh.update(0, t0);
        let first = fresh.update(FRAME, t0 + Duration::from_millis(56));
        assert!((first - 0.016 / 16.0).abs() < 1e-9, "{first}");
    }

    #[test]
    fn a_new_session_forgets_the_reference_packet() {
        let t0 = Instant::now();
        let mut jitter = Jitter::new();
        jitter.begin_session(90_000);
        jitter.update(1_000, t0);
        // A new session whose clock starts elsewhere, a second later: no difference is
        // taken across the sessions.
        jitter.begin_session(90_000);
        let got = jitter.update(3_000_000_000, t0 + Duration::from_secs(1));
        assert_eq!(got, 0.0);
    }
}
