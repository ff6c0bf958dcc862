//! Policy documents and the ids they name: `Policy::parse`, `SiteId`, `CameraId`,
//! `CameraPattern` and `HoursWindow` `FromStr`, and pattern matching.
//!
//! Input: UTF-8 text (anything else is skipped). The whole text is parsed as a policy;
//! each line is also parsed as every kind of id, and every pattern line is matched
//! against every camera-id line.
//!
//! Checked beyond "no panic": every parsed value prints back to the text it came from;
//! `CameraPattern::matches` agrees with a naive backtracking matcher; prefixing a pattern
//! and an id keeps the match, and `strip_prefix` undoes `with_prefix`; an accepted policy
//! keeps the invariants its doc promises, and evaluating it at a time taken from the
//! input does not fail.
#![no_main]

use std::str::FromStr;

use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use passerelle::ids::{CAMERA_ID_MAX_SEGMENTS, CameraId, CameraPattern, SiteId};
use passerelle::policy::{self, AgentKind, HoursWindow, Policy, ViewingSession};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Policy::parse(text) {
        check_policy(&p, data);
    }

    let lines: Vec<&str> = text.lines().take(16).collect();
    let mut ids = Vec::new();
    let mut patterns = Vec::new();
    for line in &lines {
        if let Some(site) = round_trip::<SiteId>(line) {
            // A site's cameras are imported under the site id as a one-segment prefix.
            assert!(
                line.parse::<CameraId>().is_ok(),
                "site id {site} is not a camera id"
            );
        }
        if let Some(id) = round_trip::<CameraId>(line) {
            assert!(id.segment_count() <= CAMERA_ID_MAX_SEGMENTS);
            // Every camera id is also the pattern matching exactly itself.
            let p: CameraPattern = line.parse().expect("a camera id is a pattern");
            assert!(p.matches(&id));
            ids.push(id);
        }
        if let Some(p) = round_trip::<CameraPattern>(line) {
            patterns.push(p);
        }
        if let Some(w) = round_trip::<HoursWindow>(line) {
            check_window(w);
        }
    }

    for p in &patterns {
        for id in &ids {
            let expected = naive_match(
                &p.as_str().split('/').collect::<Vec<_>>(),
                &id.segments().collect::<Vec<_>>(),
            );
            assert_eq!(p.matches(id), expected, "{p} against {id}");
            for prefix in &ids {
                prefixed(p, id, prefix, expected);
            }
        }
    }
});

/// Parses `line`; if it parses, its `Display` must give `line` back and parse the same.
fn round_trip<T>(line: &str) -> Option<T>
where
    T: FromStr + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    let value: T = line.parse().ok()?;
    let shown = value.to_string();
    assert_eq!(shown, line, "printed differently from its text");
    let again: T = shown.parse().ok().expect("printed text parses");
    assert_eq!(again, value);
    Some(value)
}

/// `HoursWindow`'s doc: start inclusive, end exclusive, an end before the start
/// crosses midnight. An end of `00:00` is midnight at the end of the day (the tests
/// have `23:59-00:00` with end minute 0, whatever the field doc says).
fn check_window(w: HoursWindow) {
    let (start, end) = (u32::from(w.start_minute()), u32::from(w.end_minute()));
    assert!(start < 1440 && end <= 1440 && start != end, "{w}");
    let end_of_day = if end == 0 { 1440 } else { end };
    assert_eq!(w.crosses_midnight(), end < start, "{w}");
    let inside = |second: u32| {
        let (s, e) = (start * 60, end_of_day * 60);
        if s < e {
            s <= second && second < e
        } else {
            second >= s || second < e
        }
    };
    for minute in [start, end_of_day, 0, 1439] {
        for second in [(minute * 60).saturating_sub(1), minute * 60] {
            let second = second.min(86_399);
            assert_eq!(
                w.contains_second_of_day(second),
                inside(second),
                "{w} at {second} s"
            );
        }
    }
}

/// Pattern semantics from `CameraPattern`'s doc, by backtracking: a literal matches
/// itself, `*` one segment, `**` one or more.
fn naive_match(pattern: &[&str], id: &[&str]) -> bool {
    match pattern.split_first() {
        None => id.is_empty(),
        Some((&"**", rest)) => (1..=id.len()).any(|k| naive_match(rest, &id[k..])),
        Some((&"*", rest)) => !id.is_empty() && naive_match(rest, &id[1..]),
        Some((lit, rest)) => id.first() == Some(lit) && naive_match(rest, &id[1..]),
    }
}

/// What an importing site sees: the pattern and the id under `prefix` match alike, and
/// stripping the prefix gives the id back.
fn prefixed(p: &CameraPattern, id: &CameraId, prefix: &CameraId, expected: bool) {
    if let Ok(pid) = id.with_prefix(prefix) {
        assert_eq!(pid.strip_prefix(prefix).as_ref(), Some(id));
        assert_eq!(pid.as_str().parse::<CameraId>().as_ref(), Ok(&pid));
        if let Ok(pp) = p.with_prefix(prefix) {
            assert_eq!(pp.matches(&pid), expected, "{pp} against {pid}");
            assert_eq!(pp.as_str().parse::<CameraPattern>().as_ref(), Ok(&pp));
        }
    }
}

fn check_policy(p: &Policy, data: &[u8]) {
    assert_eq!(p.version, policy::model::POLICY_FORMAT_VERSION);
    assert!(p.valid_until > p.valid_from);
    assert!(!p.reference.trim().is_empty());
    for g in &p.grants {
        assert!(!g.cameras.is_empty());
        assert_ne!(g.partner, p.site);
        assert!(!g.onward.contains(&g.partner));
        for w in &g.hours {
            assert_eq!(w.to_string().parse::<HoursWindow>().as_ref(), Ok(w));
        }
    }
    // Evaluate at a time from the input, from a day before the validity window to a day
    // after, for each grant's partner and a camera its first pattern matches; hours
    // windows are read in the policy's zone.
    let seed = data
        .iter()
        .fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b));
    let span = p.valid_until.as_second() - p.valid_from.as_second();
    let offset = (seed % (span.unsigned_abs() + 172_800)) as i64 - 86_400;
    let Ok(now) = Timestamp::from_second(p.valid_from.as_second().saturating_add(offset)) else {
        return;
    };
    for g in &p.grants {
        let camera: CameraId = g.cameras[0]
            .as_str()
            .split('/')
            .map(|s| if s.starts_with('*') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/")
            .parse()
            .expect("a pattern with its wildcards filled in is a camera id");
        assert!(g.cameras[0].matches(&camera));
        for kind in [AgentKind::Agent, AgentKind::Service] {
            let session = ViewingSession {
                agent: "agent".to_owned(),
                kind,
                reason: Some("reason".to_owned()),
                intervention: Some("1".to_owned()),
                origin: g.partner.clone(),
            };
            let d = policy::evaluate(Some(p), &p.site, &g.partner, &camera, Some(&session), now);
            std::hint::black_box(d.is_allowed());
        }
    }
    std::hint::black_box(policy::effective_grants(p));
}
