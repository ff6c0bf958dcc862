//! Keeps the RTP timestamps a channel sees continuous across camera sessions.
//!
//! The channel carries the camera's own RTP clock (DESIGN "Numbering and time"). A new
//! RTSP session starts that clock anywhere (RFC 3550 §5.1: random initial value), and a
//! restarted camera does too, so each session gets an offset that places its first
//! packet just after the last one forwarded, plus the wall time elapsed. Pure: `now` is
//! passed in.

use std::time::Duration;

use tokio::time::Instant;

/// Largest forward step inserted at a discontinuity: 2^30 ticks (about 3.3 hours at
/// 90 kHz). A step of 2^31 or more would read as a step *backwards* in RTP's modulo-2^32
/// arithmetic (RFC 3550 §A.1); the sender reports keep true wall-clock time anyway.
const MAX_GAP_TICKS: u32 = 1 << 30;

/// How far back a camera's timestamps may step inside one session before it counts as a
/// clock reset: one second. Reordered pictures (B-frames) step back by a few frames;
/// a camera whose clock restarts jumps by far more.
const REORDER_TOLERANCE: Duration = Duration::from_secs(1);

/// The offset applied to a camera's RTP timestamps.
///
/// Drive it with [`TimestampContinuity::begin_session`] when a session starts playing,
/// then [`TimestampContinuity::map`] for each forwarded packet, in arrival order, and
/// [`TimestampContinuity::map_sender_report`] for each RTCP sender report. The first
/// session keeps the camera's clock unchanged (offset 0).
#[derive(Debug, Clone)]
pub(crate) struct TimestampContinuity {
    clock_rate: u32,
    offset: u32,
    /// Whether the current session's offset is known (its first packet was mapped).
    anchored: bool,
    /// The highest timestamp forwarded so far (modulo 2^32), and when the latest packet
    /// was forwarded.
    last: Option<(u32, Instant)>,
}

/// A forwarded packet's timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mapped {
    /// The timestamp the channel carries.
    pub(crate) timestamp: u32,
    /// True for a session's first packet and after a clock reset inside a session: the
    /// channel's keyframe cache belongs to the old timeline.
    pub(crate) discontinuity: bool,
}

impl TimestampContinuity {
    pub(crate) fn new() -> Self {
        TimestampContinuity {
            clock_rate: 90_000,
            offset: 0,
            anchored: false,
            last: None,
        }
    }

    /// A new session starts; its first packet sets its offset. `clock_rate` is the
    /// stream's RTP clock (90 kHz for H.264/H.265, RFC 6184 §8.2.1, RFC 7798 §7.1).
    pub(crate) fn begin_session(&mut self, clock_rate: u32) {
        self.clock_rate = clock_rate.max(1);
        self.anchored = false;
    }

    /// The channel's timestamp for a packet stamped `camera` by the camera, forwarded at
    /// `now`. Never steps backwards from an earlier session, nor by more than
    /// [`REORDER_TOLERANCE`] within a session.
    pub(crate) fn map(&mut self, camera: u32, now: Instant) -> Mapped {
        let mut discontinuity = false;
        if !self.anchored {
            self.anchored = true;
            discontinuity = true;
            self.offset = match self.last {
                None => 0,
                Some(last) => self.rebase(camera, last, now),
            };
        }
        let mut timestamp = camera.wrapping_add(self.offset);
        if let Some(last) = self.last {
            let tolerance = self.ticks(REORDER_TOLERANCE);
            if serial_diff(timestamp, last.0) < -i64::from(tolerance) {
                self.offset = self.rebase(camera, last, now);
                timestamp = camera.wrapping_add(self.offset);
                discontinuity = true;
            }
        }
        let highest = match self.last {
            Some((highest, _)) if serial_diff(timestamp, highest) <= 0 => highest,
            _ => timestamp,
        };
        self.last = Some((highest, now));
        Mapped {
            timestamp,
            discontinuity,
        }
    }

    /// The channel's RTP timestamp for a sender report's `rtp` field, with the same
    /// offset as the packets. `None` before the session's first packet: the offset is
    /// not known yet, and cameras repeat their reports every few seconds.
    pub(crate) fn map_sender_report(&self, rtp: u32) -> Option<u32> {
        self.anchored.then(|| rtp.wrapping_add(self.offset))
    }

    /// The offset that puts `camera` just after `last`, plus the wall time since it.
    fn rebase(&self, camera: u32, last: (u32, Instant), now: Instant) -> u32 {
        let (highest, at) = last;
        let gap = self
            .ticks(now.saturating_duration_since(at))
            .clamp(1, MAX_GAP_TICKS);
        highest.wrapping_add(gap).wrapping_sub(camera)
    }

    /// `elapsed` in clock ticks, saturating at [`MAX_GAP_TICKS`].
    fn ticks(&self, elapsed: Duration) -> u32 {
        let ticks = elapsed.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000;
        u32::try_from(ticks.min(u128::from(MAX_GAP_TICKS))).unwrap_or(MAX_GAP_TICKS)
    }
}

/// `a - b` in RTP's modulo-2^32 arithmetic (RFC 3550 §A.1): positive when `a` is after `b`.
fn serial_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICKS_PER_FRAME: u32 = 3600;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_session_keeps_the_camera_clock() {
        let t0 = Instant::now();
        let mut c = TimestampContinuity::new();
        c.begin_session(90_000);
        assert_eq!(c.map_sender_report(5), None);
        let first = c.map(1_000, t0);
        assert_eq!(
            first,
            Mapped {
                timestamp: 1_000,
                discontinuity: true
            }
        );
        let next = c.map(1_000 + TICKS_PER_FRAME, t0 + ms(40));
        assert_eq!(next.timestamp, 1_000 + TICKS_PER_FRAME);
        assert!(!next.discontinuity);
        assert_eq!(c.map_sender_report(4_321), Some(4_321));
    }

    #[test]
    fn a_new_session_continues_after_the_last_packet_plus_elapsed_time() {
        let t0 = Instant::now();
        let mut c = TimestampContinuity::new();
        c.begin_session(90_000);
        let mut last = 0;
        for i in 0..10u32 {
            last = c
                .map(
                    4_000_000_000 + i * TICKS_PER_FRAME,
                    t0 + ms(40 * u64::from(i)),
                )
                .timestamp;
        }
        // The camera comes back 2.5 s after the last packet with a clock far behind.
        let back = t0 + ms(360) + ms(2_500);
        c.begin_session(90_000);
        let first = c.map(17, back);
        assert!(first.discontinuity);
        assert_eq!(first.timestamp, last.wrapping_add(225_000));
        let second = c.map(17 + TICKS_PER_FRAME, back + ms(40));
        assert_eq!(
            second.timestamp,
            first.timestamp.wrapping_add(TICKS_PER_FRAME)
        );
        assert!(!second.discontinuity);
        // Sender reports get the same offset as the packets.
        assert_eq!(
            c.map_sender_report(17 + 100),
            Some(first.timestamp.wrapping_add(100))
        );
    }

    #[test]
    fn reconnect_across_the_wrap_and_without_elapsed_time_still_moves_forward() {
        let t0 = Instant::now();
        let mut c = TimestampContinuity::new();
        c.begin_session(90_000);
        let last = c.map(u32::MAX - 10, t0).timestamp;
        c.begin_session(90_000);
        // Same instant: still at least one tick later.
        let first = c.map(u32::MAX - 10, t0).timestamp;
        assert_eq!(first, last.wrapping_add(1));
        assert!(serial_diff(first, last) > 0);
    }

    #[test]
    fn a_long_outage_is_capped_so_the_step_never_reads_as_backwards() {
        let t0 = Instant::now();
        let mut c = TimestampContinuity::new();
        c.begin_session(90_000);
        let last = c.map(0, t0).timestamp;
        c.begin_session(90_000);
        let first = c.map(123, t0 + Duration::from_secs(20 * 3600)).timestamp;
        assert_eq!(first, last.wrapping_add(MAX_GAP_TICKS));
        assert!(serial_diff(first, last) > 0);
    }

    #[test]
    fn reordered_pictures_pass_but_a_clock_reset_inside_a_session_is_rebased() {
        let t0 = Instant::now();
        let mut c = TimestampContinuity::new();
        c.begin_session(90_000);
        c.map(900_000, t0);
        c.map(900_000 + 3 * TICKS_PER_FRAME, t0 + ms(40));
        // A B-frame two pictures back: kept as is.
        let b = c.map(900_000 + TICKS_PER_FRAME, t0 + ms(80));
        assert_eq!(b.timestamp, 900_000 + TICKS_PER_FRAME);
        assert!(!b.discontinuity);
        // The camera's clock restarts at 0 without a new session.
        let reset = c.map(0, t0 + ms(120));
        assert!(reset.discontinuity);
        assert_eq!(reset.timestamp, 900_000 + 3 * TICKS_PER_FRAME + 3_600);
        let after = c.map(TICKS_PER_FRAME, t0 + ms(160));
        assert_eq!(after.timestamp, reset.timestamp + TICKS_PER_FRAME);
    }

    #[test]
    fn random_session_bases_never_go_backwards() {
        let t0 = Instant::now();
        let mut c = TimestampContinuity::new();
        let mut previous: Option<u32> = None;
        let mut now = t0;
        // A fixed pseudo-random sequence of session bases (xorshift), wraps included.
        let mut seed: u32 = 0x9e37_79b9;
        for _session in 0..50 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            c.begin_session(90_000);
            for frame in 0..20u32 {
                now += ms(40);
                let out = c
                    .map(seed.wrapping_add(frame * TICKS_PER_FRAME), now)
                    .timestamp;
                if let Some(p) = previous {
                    assert!(serial_diff(out, p) > 0, "{p} -> {out}");
                }
                previous = Some(out);
            }
            now += ms(700);
        }
    }
}
