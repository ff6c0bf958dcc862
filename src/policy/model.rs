//! The policy document: its TOML form and the typed [`Policy`] it is validated into.
//!
//! [`Policy::parse`] reads the TOML of DESIGN.md "Signed policy" into a raw serde struct
//! (`deny_unknown_fields`, loosely typed so that one pass finds every mistake), then
//! validates it field by field into [`Policy`]. Every error is reported with its key path
//! (`grant[2].cameras[0]: ...`), not only the first. Signatures are checked before this
//! runs (see [`super::signature`]); the check that `site` is our own id is separate (see
//! [`super::eval`]) so that `passerelle check` can report it.
//!
//! [`ViewingSession`] is the unit a policy decides on: one agent (or declared service)
//! watching one camera.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::ids::{CameraPattern, SiteId};

/// The policy format version this code reads.
pub const POLICY_FORMAT_VERSION: u32 = 1;

/// A validated policy: which partners get which cameras, when, how, and why.
///
/// Built only by [`Policy::parse`]; evaluated by [`super::eval::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Format version (always [`POLICY_FORMAT_VERSION`]).
    pub version: u32,
    /// The site that enforces this policy: must be our own id.
    pub site: SiteId,
    /// Strictly increasing across policies of one site (rollback protection).
    pub serial: u64,
    /// First instant the policy applies (inclusive).
    pub valid_from: Timestamp,
    /// Last instant the policy applies (inclusive); past it nothing crosses the boundary.
    pub valid_until: Timestamp,
    /// The zone hours windows are read in. Signed with the policy, not configured.
    pub time_zone: TimeZone,
    /// The convention or legal act this policy implements.
    pub reference: String,
    /// The grants, in file order (indices are stable and journaled).
    pub grants: Vec<Grant>,
}

/// One grant: cameras a partner may receive, with the conditions attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The receiving site.
    pub partner: SiteId,
    /// Cameras granted, in the enforcing site's own ids (imported cameras with their prefix).
    pub cameras: Vec<CameraPattern>,
    /// Local-time windows in the policy's zone; empty means always.
    pub hours: Vec<HoursWindow>,
    /// At most this many concurrent streams to the partner under this grant.
    pub max_streams: Option<u32>,
    /// At most this much bandwidth to the partner under this grant.
    pub max_bitrate_kbps: Option<u32>,
    /// Whether each viewing needs an agent with a reason.
    pub mode: Mode,
    /// Sites the partner may re-share these cameras to (empty: none).
    pub onward: Vec<SiteId>,
    /// Legal basis, copied into every journal record made under this grant.
    pub basis: String,
}

/// How a grant lets cameras be watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Any authenticated viewer of the partner may watch.
    Live,
    /// Each viewing needs an agent (never a service account) with an open intervention
    /// giving a reason.
    OnRequest,
}

impl Mode {
    /// The policy file spelling (`live`, `on_request`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::OnRequest => "on_request",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A daily local-time window, `HH:MM-HH:MM`: start inclusive, end exclusive, minutes of
/// the wall clock. `24:00` is allowed as an end; a window whose end is before its start
/// crosses midnight (`22:00-06:00`).
///
/// Windows are wall-clock times: on the day clocks go forward, a window inside the skipped
/// hour does not occur; on the day they go back, the repeated hour is inside the window
/// both times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HoursWindow {
    /// Minutes since local midnight, 0..1440.
    start: u16,
    /// Minutes since local midnight, 0..=1440 (`00:00` as an end crosses midnight, `24:00` ends the day), never equal to `start`.
    end: u16,
}

const MINUTES_PER_DAY: u16 = 24 * 60;

impl HoursWindow {
    /// Start, in minutes since local midnight (0..1440).
    pub fn start_minute(self) -> u16 {
        self.start
    }

    /// End, in minutes since local midnight (0..=1440).
    pub fn end_minute(self) -> u16 {
        self.end
    }

    /// True when the window runs past midnight (`22:00-06:00`).
    pub fn crosses_midnight(self) -> bool {
        self.end < self.start
    }

    /// True when a local time of day, in seconds since midnight, falls inside the window.
    pub fn contains_second_of_day(self, second: u32) -> bool {
        let start = u32::from(self.start) * 60;
        let end = u32::from(self.end) * 60;
        if start < end {
            start <= second && second < end
        } else {
            second >= start || second < end
        }
    }
}

impl fmt::Display for HoursWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// Why an hours window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    /// Not of the form `HH:MM-HH:MM` with two-digit fields.
    #[error("expected HH:MM-HH:MM (e.g. \"08:00-20:00\" or \"22:00-06:00\")")]
    Syntax,
    /// Hour above 23 (or 24 with minutes), minute above 59, or `24:00` as a start.
    #[error("{0:?} is not a time of day (00:00 to 23:59, or 24:00 as an end)")]
    OutOfRange(String),
    /// Start equals end: ambiguous between nothing and all day.
    #[error("start equals end; write \"00:00-24:00\" for all day")]
    Empty,
}

impl FromStr for HoursWindow {
    type Err = HoursError;

    fn from_str(s: &str) -> Result<Self, HoursError> {
        let (start, end) = s.split_once('-').ok_or(HoursError::Syntax)?;
        let start = parse_hhmm(start)?;
        let end = parse_hhmm(end)?;
        if start == MINUTES_PER_DAY {
            return Err(HoursError::OutOfRange("24:00".to_owned()));
        }
        if start == end || (start == 0 && end == 0) {
            return Err(HoursError::Empty);
        }
        Ok(HoursWindow { start, end })
    }
}

fn parse_hhmm(s: &str) -> Result<u16, HoursError> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![b[0], b[1], b[3], b[4]].iter().all(u8::is_ascii_digit) {
        return Err(HoursError::Syntax);
    }
    let h = u16::from(b[0] - b'0') * 10 + u16::from(b[1] - b'0');
    let m = u16::from(b[3] - b'0') * 10 + u16::from(b[4] - b'0');
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(HoursError::OutOfRange(s.to_owned()));
    }
    Ok(h * 60 + m)
}

/// What kind of local account is watching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentKind {
    /// A person: an authorised agent of the viewing site.
    Agent,
    /// A declared service account (a VMS pulling streams). Never satisfies `on_request`.
    Service,
}

impl AgentKind {
    /// The configuration and journal spelling (`agent`, `service`).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Agent => "agent",
            AgentKind::Service => "service",
        }
    }
}

impl fmt::Display for AgentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One person (or one declared service) watching one camera: what a policy decides on.
///
/// Carried hop by hop (`ViewOpen`) to the camera's own site, whose policy and journal are
/// the authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewingSession {
    /// The agent's id at its own site.
    pub agent: String,
    /// Person or service account.
    pub kind: AgentKind,
    /// The reason, from the agent's open intervention.
    pub reason: Option<String>,
    /// The id of the open intervention that gave the reason.
    pub intervention: Option<String>,
    /// The site where the agent watches (for an onward share, not the direct partner).
    pub origin: SiteId,
}

/// Every problem found in a policy document, each with its key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not TOML, or not the policy's shape (unknown key, wrong type, missing key).
    /// serde stops at the first such problem; its message names the key and line.
    #[error("policy is not valid TOML of the expected shape: {0}")]
    Syntax(String),
    /// The document has the right shape but some values are wrong; all of them are listed.
    #[error("policy is invalid:{}", render_issues(.0))]
    Invalid(Vec<PolicyIssue>),
}

/// One wrong value in a policy, at a key path (`grant[2].cameras[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PolicyIssue {
    /// Where: `serial`, `grant[2].hours[1]`, ...
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// One issue per indented line, for the error message.
fn render_issues(issues: &[PolicyIssue]) -> String {
    issues.iter().map(|i| format!("\n  {i}")).collect()
}

impl PolicyError {
    /// The individual issues (empty for a syntax error).
    pub fn issues(&self) -> &[PolicyIssue] {
        match self {
            PolicyError::Syntax(_) => &[],
            PolicyError::Invalid(issues) => issues,
        }
    }
}

/// The TOML form. Loosely typed on purpose (strings and i64), so that validation sees
/// every value and reports all errors at once; only the shape is enforced by serde.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: i64,
    site: String,
    serial: i64,
    valid_from: toml::value::Datetime,
    valid_until: toml::value::Datetime,
    time_zone: String,
    reference: String,
    #[serde(default)]
    grant: Vec<RawGrant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    partner: String,
    cameras: Vec<String>,
    hours: Option<Vec<String>>,
    max_streams: Option<i64>,
    max_bitrate_kbps: Option<i64>,
    mode: String,
    #[serde(default)]
    onward: Vec<String>,
    basis: String,
}

/// Collects issues while validation goes on.
#[derive(Default)]
struct Issues(Vec<PolicyIssue>);

impl Issues {
    fn push(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        self.0.push(PolicyIssue {
            path: path.into(),
            message: message.to_string(),
        });
    }

    /// `Some(value)` when `result` is Ok; records the error otherwise.
    fn take<T, E: fmt::Display>(
        &mut self,
        path: impl Into<String>,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(path, e);
                None
            }
        }
    }
}

impl Policy {
    /// Parses and validates a policy document (already signature-checked bytes, as text).
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        validate(raw)
    }
}

fn validate(raw: RawPolicy) -> Result<Policy, PolicyError> {
    // Exhaustive destructuring: a new key does not compile until validation handles it.
    let RawPolicy {
        version,
        site,
        serial,
        valid_from,
        valid_until,
        time_zone,
        reference,
        grant,
    } = raw;
    let mut issues = Issues::default();

    let version = match u32::try_from(version) {
        Ok(POLICY_FORMAT_VERSION) => Some(POLICY_FORMAT_VERSION),
        _ => {
            issues.push(
                "version",
                format!("unsupported format version {version}; this gateway reads {POLICY_FORMAT_VERSION}"),
            );
            None
        }
    };
    let site = issues.take("site", site.parse::<SiteId>());
    let serial = issues.take(
        "serial",
        u64::try_from(serial).map_err(|_| format!("must be a non-negative integer, got {serial}")),
    );
    let valid_from = issues.take("valid_from", toml_timestamp(&valid_from));
    let valid_until = issues.take("valid_until", toml_timestamp(&valid_until));
    if let (Some(from), Some(until)) = (valid_from, valid_until)
        && until <= from
    {
        issues.push(
            "valid_until",
            format!("{until} is not after valid_from {from}"),
        );
    }
    let time_zone = issues.take(
        "time_zone",
        TimeZone::get(&time_zone).map_err(|e| format!("unknown IANA time zone {time_zone:?}: {e}")),
    );
    let reference = non_blank(&mut issues, "reference", reference);

    let mut grants = Vec::with_capacity(grant.len());
    for (i, raw_grant) in grant.into_iter().enumerate() {
        if let Some(g) = validate_grant(
            &mut issues,
            &format!("grant[{i}]"),
            site.as_ref(),
            raw_grant,
        ) {
            grants.push(g);
        }
    }

    match (
        version,
        site,
        serial,
        valid_from,
        valid_until,
        time_zone,
        reference,
    ) {
        (
            Some(version),
            Some(site),
            Some(serial),
            Some(valid_from),
            Some(valid_until),
            Some(time_zone),
            Some(reference),
        ) if issues.0.is_empty() => Ok(Policy {
            version,
            site,
            serial,
            valid_from,
            valid_until,
            time_zone,
            reference,
            grants,
        }),
        _ => Err(PolicyError::Invalid(issues.0)),
    }
}

fn validate_grant(
    issues: &mut Issues,
    path: &str,
    site: Option<&SiteId>,
    raw: RawGrant,
) -> Option<Grant> {
    let RawGrant {
        partner,
        cameras,
        hours,
        max_streams,
        max_bitrate_kbps,
        mode,
        onward,
        basis,
    } = raw;
    let before = issues.0.len();

    let partner = issues.take(format!("{path}.partner"), partner.parse::<SiteId>());
    if let (Some(p), Some(s)) = (&partner, site)
        && p == s
    {
        issues.push(
            format!("{path}.partner"),
            "a site does not grant cameras to itself",
        );
    }

    if cameras.is_empty() {
        issues.push(
            format!("{path}.cameras"),
            "empty: a grant names at least one camera pattern",
        );
    }
    let cameras: Vec<CameraPattern> = cameras
        .iter()
        .enumerate()
        .filter_map(|(j, c)| {
            issues.take(format!("{path}.cameras[{j}]"), c.parse::<CameraPattern>())
        })
        .collect();

    let hours: Vec<HoursWindow> = match hours {
        None => Vec::new(),
        Some(list) if list.is_empty() => {
            issues.push(
                format!("{path}.hours"),
                "empty list: omit the key for always, or list windows",
            );
            Vec::new()
        }
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(j, h)| {
                issues.take(format!("{path}.hours[{j}]"), h.parse::<HoursWindow>())
            })
            .collect(),
    };

    let max_streams =
        max_streams.and_then(|v| positive_u32(issues, &format!("{path}.max_streams"), v));
    let max_bitrate_kbps =
        max_bitrate_kbps.and_then(|v| positive_u32(issues, &format!("{path}.max_bitrate_kbps"), v));

    let mode = match mode.as_str() {
        "live" => Some(Mode::Live),
        "on_request" => Some(Mode::OnRequest),
        other => {
            issues.push(
                format!("{path}.mode"),
                format!("unknown mode {other:?}: expected \"live\" or \"on_request\""),
            );
            None
        }
    };

    let mut onward_sites: Vec<SiteId> = Vec::with_capacity(onward.len());
    for (j, o) in onward.iter().enumerate() {
        let key = format!("{path}.onward[{j}]");
        let Some(o) = issues.take(key.clone(), o.parse::<SiteId>()) else {
            continue;
        };
        if partner.as_ref() == Some(&o) {
            issues.push(
                key,
                "the partner itself: onward lists the sites it may re-share to",
            );
        } else if onward_sites.contains(&o) {
            issues.push(key, format!("{o} is listed twice"));
        } else {
            onward_sites.push(o);
        }
    }

    let basis = non_blank(issues, &format!("{path}.basis"), basis);

    if issues.0.len() != before {
        return None;
    }
    Some(Grant {
        partner: partner?,
        cameras,
        hours,
        max_streams,
        max_bitrate_kbps,
        mode: mode?,
        onward: onward_sites,
        basis: basis?,
    })
}

fn non_blank(issues: &mut Issues, path: &str, value: String) -> Option<String> {
    if value.trim().is_empty() {
        issues.push(path, "must not be empty");
        None
    } else {
        Some(value)
    }
}

fn positive_u32(issues: &mut Issues, path: &str, v: i64) -> Option<u32> {
    match u32::try_from(v) {
        Ok(n) if n > 0 => Some(n),
        _ => {
            issues.push(path, format!("must be between 1 and {}, got {v}", u32::MAX));
            None
        }
    }
}

/// A TOML offset date-time (`2026-02-02T00:00:00Z`, `2026-02-02T01:00:00+01:00`) as an
/// instant. Local date-times and bare dates are refused: an instant needs an offset.
fn toml_timestamp(dt: &toml::value::Datetime) -> Result<Timestamp, String> {
    use toml::value::Offset;
    let (Some(date), Some(time), Some(offset)) = (dt.date, dt.time, dt.offset) else {
        return Err(format!(
            "{dt} has no UTC offset: write an offset date-time such as 2026-02-02T00:00:00Z"
        ));
    };
    let offset_seconds = match offset {
        Offset::Z => 0,
        Offset::Custom { minutes } => i32::from(minutes) * 60,
    };
    let civil = jiff::civil::DateTime::new(
        i16::try_from(date.year).map_err(|_| format!("year {} out of range", date.year))?,
        i8::try_from(date.month).map_err(|_| format!("month {} out of range", date.month))?,
        i8::try_from(date.day).map_err(|_| format!("day {} out of range", date.day))?,
        i8::try_from(time.hour).map_err(|_| format!("hour {} out of range", time.hour))?,
        i8::try_from(time.minute).map_err(|_| format!("minute {} out of range", time.minute))?,
        i8::try_from(time.second).map_err(|_| format!("second {} out of range", time.second))?,
        i32::try_from(time.nanosecond).map_err(|_| "nanosecond out of range".to_owned())?,
    )
    .map_err(|e| format!("{dt}: {e}"))?;
    let offset =
        jiff::tz::Offset::from_seconds(offset_seconds).map_err(|e| format!("{dt}: {e}"))?;
    offset.to_timestamp(civil).map_err(|e| format!("{dt}: {e}"))
}

#[cfg(test)]
mod tests;
