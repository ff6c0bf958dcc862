//! Policy evaluation: the one function that decides whether a camera may cross the
//! boundary to a partner, and the listing of effective grants for `passerelle check`.
//!
//! Pure: no clock read (`now` is passed in), no I/O. Every cross-boundary decision in the
//! gateway (catalog entry, stream, viewing session) goes through [`evaluate`].

use std::fmt;

use jiff::Timestamp;

use super::model::{AgentKind, Grant, HoursWindow, Mode, Policy, ViewingSession};
use crate::ids::{CameraId, CameraPattern, SiteId};

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'p> {
    /// Allowed under `policy.grants[grant]`.
    Allow {
        /// Index of the grant that allows it, in file order.
        grant: usize,
        /// That grant's mode, which travels with the camera to the partner.
        mode: Mode,
        /// That grant's legal basis, for the journal.
        basis: &'p str,
    },
    /// Refused.
    Deny(DenyReason),
}

impl Decision<'_> {
    /// True for [`Decision::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// Why [`evaluate`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No valid policy is loaded: nothing crosses the boundary.
    NoPolicy,
    /// The policy names another site than ours.
    WrongSite,
    /// The policy's `valid_from` is still ahead.
    NotYetValid,
    /// The policy's `valid_until` has passed.
    Expired,
    /// No grant gives this camera to this partner.
    NotGranted,
    /// Granted, but outside every hours window of the grants that name it.
    OutsideHours,
    /// The viewing session comes from a site the grant's `onward` does not name.
    OnwardNotGranted,
    /// An `on_request` grant and a service account: services never satisfy it.
    ServiceAccount,
    /// An `on_request` grant and no open intervention with a reason.
    NoIntervention,
}

impl DenyReason {
    /// Every reason, for metrics pre-registration and tests.
    pub const ALL: [DenyReason; 9] = [
        DenyReason::NoPolicy,
        DenyReason::WrongSite,
        DenyReason::NotYetValid,
        DenyReason::Expired,
        DenyReason::NotGranted,
        DenyReason::OutsideHours,
        DenyReason::OnwardNotGranted,
        DenyReason::ServiceAccount,
        DenyReason::NoIntervention,
    ];

    /// Stable snake_case label (the `reason` label of `passerelle_access_denied_total`,
    /// and the journal's refusal reason).
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoPolicy => "no_policy",
            DenyReason::WrongSite => "wrong_site",
            DenyReason::NotYetValid => "not_yet_valid",
            DenyReason::Expired => "expired",
            DenyReason::NotGranted => "not_granted",
            DenyReason::OutsideHours => "outside_hours",
            DenyReason::OnwardNotGranted => "onward_not_granted",
            DenyReason::ServiceAccount => "service_account",
            DenyReason::NoIntervention => "no_intervention",
        }
    }

    /// A sentence for operators and logs.
    pub fn message(self) -> &'static str {
        match self {
            DenyReason::NoPolicy => "no valid policy is loaded; nothing crosses the boundary",
            DenyReason::WrongSite => "the policy is for another site",
            DenyReason::NotYetValid => "the policy is not valid yet",
            DenyReason::Expired => "the policy has expired",
            DenyReason::NotGranted => "no grant gives this camera to this partner",
            DenyReason::OutsideHours => "outside the hours the grant allows",
            DenyReason::OnwardNotGranted => {
                "the grant does not allow re-sharing this camera to the viewer's site"
            }
            DenyReason::ServiceAccount => {
                "the grant is on request: a service account cannot watch, an agent must"
            }
            DenyReason::NoIntervention => {
                "the grant is on request: the agent needs an open intervention with a reason"
            }
        }
    }

    /// True when the requester may be told the camera exists but cannot be watched now
    /// (answer 403); false when it must look absent (answer 404, never confirm a camera
    /// the requester may not know about).
    pub fn camera_is_visible(self) -> bool {
        match self {
            DenyReason::OutsideHours | DenyReason::ServiceAccount | DenyReason::NoIntervention => {
                true
            }
            DenyReason::NoPolicy
            | DenyReason::WrongSite
            | DenyReason::NotYetValid
            | DenyReason::Expired
            | DenyReason::NotGranted
            | DenyReason::OnwardNotGranted => false,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// The next instant after `now` at which a decision under `policy` can change by the
/// clock alone: a grant's hours window opening or closing (in the policy's time zone,
/// daylight-saving changes included), or the policy's validity starting or ending. The
/// gateway re-evaluates every stream and viewing session then, so a closing window cuts
/// within a second, not at the next periodic check. `None` when nothing is timed.
pub fn next_change(policy: &Policy, now: Timestamp) -> Option<Timestamp> {
    let mut next: Option<Timestamp> = None;
    let mut consider = |at: Timestamp| {
        if at > now && next.is_none_or(|n| at < n) {
            next = Some(at);
        }
    };
    consider(policy.valid_from);
    // Nothing is granted after `valid_until`: the instant just past it.
    consider(policy.valid_until + jiff::SignedDuration::from_nanos(1));
    let zoned = now.to_zoned(policy.time_zone.clone());
    let today = zoned.date();
    for window in policy.grants.iter().flat_map(|grant| grant.hours.iter()) {
        for minute in [window.start_minute(), window.end_minute()] {
            // Today's and tomorrow's occurrence of that local time; 24:00 is the next
            // midnight. A time skipped by a DST change resolves to the later instant.
            for day in 0..=2i64 {
                let Ok(date) = today.checked_add(jiff::Span::new().days(day)) else {
                    continue;
                };
                let Ok(midnight) = date.to_zoned(policy.time_zone.clone()) else {
                    continue;
                };
                let Ok(at) = midnight
                    .datetime()
                    .checked_add(jiff::Span::new().minutes(i64::from(minute)))
                else {
                    continue;
                };
                if let Ok(at) = at.to_zoned(policy.time_zone.clone()) {
                    consider(at.timestamp());
                }
            }
        }
    }
    next
}

/// Whether `policy` applies at all, now, at `our_site`: `WrongSite`, `NotYetValid` or
/// `Expired` otherwise. `valid_from` and `valid_until` are both inclusive.
pub fn policy_status(policy: &Policy, our_site: &SiteId, now: Timestamp) -> Result<(), DenyReason> {
    if policy.site != *our_site {
        return Err(DenyReason::WrongSite);
    }
    if now < policy.valid_from {
        return Err(DenyReason::NotYetValid);
    }
    if now > policy.valid_until {
        return Err(DenyReason::Expired);
    }
    Ok(())
}

/// Decides whether `camera` (in our own ids) may go to `partner` at `now`.
///
/// With `session = None`, the question is "may this camera be in this partner's catalog,
/// may a stream exist": validity and hours apply, `on_request` needs no session. With a
/// session, it is "may this agent watch": additionally the session's origin must be the
/// partner itself or named in the grant's `onward`, and an `on_request` grant needs an
/// agent (not a service) with an open intervention and a reason.
///
/// Grants are alternatives: the first grant (in file order) that allows wins. When none
/// does, the reason given is the one from the grant that got furthest (a camera granted
/// but outside hours says `outside_hours`, not `not_granted`).
pub fn evaluate<'p>(
    policy: Option<&'p Policy>,
    our_site: &SiteId,
    partner: &SiteId,
    camera: &CameraId,
    session: Option<&ViewingSession>,
    now: Timestamp,
) -> Decision<'p> {
    let Some(policy) = policy else {
        return Decision::Deny(DenyReason::NoPolicy);
    };
    if let Err(reason) = policy_status(policy, our_site, now) {
        return Decision::Deny(reason);
    }

    // Local wall-clock second of day, computed once and only if some grant has hours.
    let mut second_of_day: Option<u32> = None;
    let mut best = DenyReason::NotGranted;

    for (index, grant) in policy.grants.iter().enumerate() {
        if grant.partner != *partner || !grant.cameras.iter().any(|p| p.matches(camera)) {
            continue;
        }
        let in_hours = grant.hours.is_empty() || {
            let second = *second_of_day.get_or_insert_with(|| local_second_of_day(policy, now));
            grant.hours.iter().any(|w| w.contains_second_of_day(second))
        };
        let refusal = match (in_hours, session) {
            (false, _) => DenyReason::OutsideHours,
            (true, None) => return allow(index, grant),
            (true, Some(session)) => match check_session(grant, partner, session) {
                Ok(()) => return allow(index, grant),
                Err(reason) => reason,
            },
        };
        if stage(refusal) > stage(best) {
            best = refusal;
        }
    }
    Decision::Deny(best)
}

fn allow(index: usize, grant: &Grant) -> Decision<'_> {
    Decision::Allow {
        grant: index,
        mode: grant.mode,
        basis: &grant.basis,
    }
}

fn check_session(
    grant: &Grant,
    partner: &SiteId,
    session: &ViewingSession,
) -> Result<(), DenyReason> {
    if session.origin != *partner && !grant.onward.contains(&session.origin) {
        return Err(DenyReason::OnwardNotGranted);
    }
    match grant.mode {
        Mode::Live => Ok(()),
        Mode::OnRequest => {
            if session.kind == AgentKind::Service {
                return Err(DenyReason::ServiceAccount);
            }
            let present = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
            if present(&session.reason) && present(&session.intervention) {
                Ok(())
            } else {
                Err(DenyReason::NoIntervention)
            }
        }
    }
}

/// How far a grant got before refusing: the furthest refusal is the most useful to report.
fn stage(reason: DenyReason) -> u8 {
    match reason {
        DenyReason::OutsideHours => 1,
        DenyReason::OnwardNotGranted => 2,
        DenyReason::ServiceAccount | DenyReason::NoIntervention => 3,
        DenyReason::NoPolicy
        | DenyReason::WrongSite
        | DenyReason::NotYetValid
        | DenyReason::Expired
        | DenyReason::NotGranted => 0,
    }
}

/// Seconds since local midnight on the wall clock of the policy's zone (DST applied).
fn local_second_of_day(policy: &Policy, now: Timestamp) -> u32 {
    let time = policy.time_zone.to_datetime(now).time();
    // hour 0..=23, minute and second 0..=59: never negative, so the casts are lossless.
    u32::from(time.hour().unsigned_abs()) * 3600
        + u32::from(time.minute().unsigned_abs()) * 60
        + u32::from(time.second().unsigned_abs())
}

/// One grant as `passerelle check` shows it: plain data, the CLI formats it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveGrant<'p> {
    /// Index in the policy file (`grant[index]`), as journaled.
    pub index: usize,
    /// The receiving site.
    pub partner: &'p SiteId,
    /// Camera patterns, in our own ids.
    pub cameras: &'p [CameraPattern],
    /// Local-time windows, or `None` for always.
    pub hours: Option<&'p [HoursWindow]>,
    /// Live or on request.
    pub mode: Mode,
    /// Stream cap, if any.
    pub max_streams: Option<u32>,
    /// Bandwidth cap, if any.
    pub max_bitrate_kbps: Option<u32>,
    /// Sites the partner may re-share to (empty: none).
    pub onward: &'p [SiteId],
    /// Legal basis.
    pub basis: &'p str,
}

/// The policy's grants, grouped by partner (partners in id order, each partner's grants in
/// file order).
pub fn effective_grants(policy: &Policy) -> Vec<EffectiveGrant<'_>> {
    let mut rows: Vec<EffectiveGrant<'_>> = policy
        .grants
        .iter()
        .enumerate()
        .map(|(index, g)| EffectiveGrant {
            index,
            partner: &g.partner,
            cameras: &g.cameras,
            hours: if g.hours.is_empty() {
                None
            } else {
                Some(&g.hours)
            },
            mode: g.mode,
            max_streams: g.max_streams,
            max_bitrate_kbps: g.max_bitrate_kbps,
            onward: &g.onward,
            basis: &g.basis,
        })
        .collect();
    rows.sort_by(|a, b| a.partner.cmp(b.partner).then(a.index.cmp(&b.index)));
    rows
}

#[cfg(test)]
mod tests;
