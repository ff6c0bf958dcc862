//! Service notifications to systemd (`sd_notify(3)`): readiness, reloads, the watchdog
//! and stopping, for a `Type=notify` unit with `WatchdogSec=`.
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every notification is a no-op, so the gateway
//! behaves the same from a shell, a test or a container.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// What the gateway tells its service manager.
///
/// Drive it from the composition layer: [`Notifier::ready`] once the listeners are bound
/// and the policy has been evaluated; at each SIGHUP [`Notifier::reloading`], then
/// [`Notifier::ready`] once the reload is done; [`Notifier::watchdog`] every
/// [`Notifier::watchdog_interval`] while the main loop is healthy; [`Notifier::stopping`]
/// when a stop signal arrives.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads the watchdog settings systemd passes (`WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        let var = |name| std::env::var(name).ok();
        Notifier {
            watchdog: watchdog_interval(
                var("WATCHDOG_USEC").as_deref(),
                var("WATCHDOG_PID").as_deref(),
                std::process::id(),
            ),
        }
    }

    /// How often to send `WATCHDOG=1`: half of `WatchdogSec=`, as `sd_watchdog_enabled(3)`
    /// advises, so one late tick is not yet a failure. `None` when the unit has no watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `READY=1`: start-up, or a reload, is complete.
    pub fn ready(&self) {
        send(&[NotifyState::Ready]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, which systemd 253 and later require in the same
    /// message to match the reload with its `READY=1`.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            // CLOCK_MONOTONIC always exists on Linux; should it fail, the reload is still
            // announced, which systemd 252 accepts.
            Err(error) => {
                tracing::warn!(%error, "cannot read the monotonic clock for RELOADING=1");
                send(&[NotifyState::Reloading]);
            }
        }
    }

    /// `WATCHDOG=1`: the main loop is alive and healthy.
    pub fn watchdog(&self) {
        send(&[NotifyState::Watchdog]);
    }

    /// `STOPPING=1`: a stop signal arrived and the orderly shutdown begins.
    pub fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }

    /// The main loop: waits for `stop` and meanwhile, under a systemd watchdog, sends
    /// `WATCHDOG=1` at each tick while `ended` names no serving task. A serving task that
    /// ended on its own is a failure this process cannot repair: the watchdog then
    /// starves and systemd restarts the service (`Restart=on-failure`).
    pub async fn watchdog_until(
        &self,
        stop: impl Future<Output = ()>,
        ended: impl Fn() -> Option<&'static str>,
    ) {
        feed_until(self.watchdog, stop, ended, || self.watchdog()).await;
    }
}

async fn feed_until(
    period: Option<Duration>,
    stop: impl Future<Output = ()>,
    ended: impl Fn() -> Option<&'static str>,
    mut feed: impl FnMut(),
) {
    let Some(period) = period else {
        return stop.await;
    };
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(period);
    // After a stall, one late tick rather than a burst: the stall is what systemd judges.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = tick.tick(), if healthy => match ended() {
                None => feed(),
                Some(task) => {
                    tracing::error!(task, "a serving task ended: the systemd watchdog is no longer fed, so systemd restarts the service");
                    healthy = false;
                }
            },
        }
    }
}

/// Whether a failure to notify was already logged: a missing socket would otherwise log
/// at every watchdog tick.
static FAILURE_LOGGED: AtomicBool = AtomicBool::new(false);

fn send(states: &[NotifyState<'_>]) {
    // `false`: keep NOTIFY_SOCKET, later notifications need it.
    if let Err(error) = sd_notify::notify(false, states)
        && !FAILURE_LOGGED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(%error, "cannot notify systemd (NOTIFY_SOCKET); further failures are not logged");
    }
}

/// The watchdog interval from `WATCHDOG_USEC` and `WATCHDOG_PID`, as
/// `sd_watchdog_enabled(3)` reads them: a positive number of microseconds, meant for us
/// when `WATCHDOG_PID` is absent or names our pid. Half of it is returned.
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&usec| usec > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_at_half_its_period() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("500000"), Some("7"), 7),
            Some(Duration::from_millis(250))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_is_fed_until_a_serving_task_ends_then_starves() {
        let started = tokio::time::Instant::now();
        let ends_at = started + Duration::from_millis(1050);
        let feeds = std::cell::Cell::new(0u32);
        feed_until(
            Some(Duration::from_millis(100)),
            tokio::time::sleep(Duration::from_secs(3)),
            || (tokio::time::Instant::now() >= ends_at).then_some("rtsp"),
            || feeds.set(feeds.get() + 1),
        )
        .await;
        // Ticks at 0, 100, ... 1000 ms feed it; from 1100 ms on, none does, though the
        // loop runs until `stop` at 3 s.
        assert_eq!(feeds.get(), 11);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_watchdog_nothing_is_fed() {
        let feeds = std::cell::Cell::new(0u32);
        feed_until(
            None,
            tokio::time::sleep(Duration::from_secs(3)),
            || None,
            || feeds.set(feeds.get() + 1),
        )
        .await;
        assert_eq!(feeds.get(), 0);
    }

    #[test]
    fn a_watchdog_for_another_process_or_a_bad_value_is_ignored() {
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("30000000"), Some("x"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("-1"), None, 7), None);
        assert_eq!(watchdog_interval(Some("30s"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }
}
