//! The access register and the `audit show` filter. Pure: records in, rows and decisions
//! out.
//!
//! The register has one row per viewing session (`session_opened`), its end taken from the
//! `session_ended` with the same session id. A session still open has an empty end; one
//! whose process stopped without ending it (a crash) ends `interrupted`. Times are RFC 3339
//! UTC to the second.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;

use super::record::{Event, Record, SessionEnded, Viewing};
use crate::ids::{CameraId, CameraPattern};

/// What `audit show` keeps. Every field set must match; a record without the field (a
/// link record when filtering by camera) does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Cameras matching this pattern (`*` one segment, `**` any depth).
    pub camera: Option<CameraPattern>,
    /// A partner site (a session's or stream's partner, a link's peer).
    pub partner: Option<String>,
    /// An agent.
    pub agent: Option<String>,
    /// An intervention id.
    pub intervention: Option<String>,
    /// Records at or after this time.
    pub since: Option<Timestamp>,
    /// Records before this time.
    pub until: Option<Timestamp>,
}

impl Filter {
    /// Whether `record` passes.
    pub fn matches(&self, record: &Record) -> bool {
        let event = &record.event;
        if let Some(pattern) = &self.camera {
            let camera = event.camera().and_then(|c| c.parse::<CameraId>().ok());
            if !camera.is_some_and(|c| pattern.matches(&c)) {
                return false;
            }
        }
        let same = |want: &Option<String>, have: Option<&str>| match want {
            Some(want) => have == Some(want.as_str()),
            None => true,
        };
        same(&self.partner, event.partner())
            && same(&self.agent, event.agent())
            && same(&self.intervention, event.intervention())
            && self.since.is_none_or(|since| record.time >= since)
            && self.until.is_none_or(|until| record.time < until)
    }
}

/// The register's header line.
pub const CSV_HEADER: &str = "start,end,camera,origin,partner,agent,agent_kind,reason,intervention,basis,policy_serial,bytes,session,role,end_reason\r\n";

/// How sessions ended, gathered by a first pass over the journal ([`Ends::note`]) so the
/// second pass writes rows in start order without holding them.
#[derive(Debug, Default)]
pub struct Ends {
    ended: HashMap<String, (Timestamp, SessionEnded)>,
    open: HashSet<String>,
    interrupted: HashSet<String>,
}

impl Ends {
    /// An empty set.
    pub fn new() -> Ends {
        Ends::default()
    }

    /// First pass: one record.
    pub fn note(&mut self, record: &Record) {
        match &record.event {
            Event::SessionOpened(v) => {
                self.open.insert(v.session.clone());
            }
            Event::SessionEnded(e) => {
                self.open.remove(&e.session);
                self.ended
                    .insert(e.session.clone(), (record.time, e.clone()));
            }
            // A restart ends every session of the previous run, recorded or not.
            Event::ProcessStart(_) => self.interrupted.extend(self.open.drain()),
            _ => {}
        }
    }

    /// Second pass: the CSV row of a `session_opened` record (with `\r\n`), `None` for
    /// other records.
    pub fn row(&self, record: &Record) -> Option<String> {
        let Event::SessionOpened(v) = &record.event else {
            return None;
        };
        let (end, bytes, why) = match self.ended.get(&v.session) {
            Some((time, e)) => (format!("{time:.0}"), e.bytes.to_string(), e.why.clone()),
            None if self.interrupted.contains(&v.session) => {
                (String::new(), String::new(), "interrupted".to_owned())
            }
            None => (String::new(), String::new(), String::new()),
        };
        Some(csv_row(&record.time, v, &end, &bytes, &why))
    }
}

fn csv_row(start: &Timestamp, v: &Viewing, end: &str, bytes: &str, why: &str) -> String {
    let serial = v.policy_serial.map(|s| s.to_string()).unwrap_or_default();
    let fields: [&str; 15] = [
        &format!("{start:.0}"),
        end,
        &v.camera,
        &v.origin,
        v.partner.as_deref().unwrap_or(""),
        &v.agent,
        v.agent_kind.as_str(),
        v.reason.as_deref().unwrap_or(""),
        v.intervention.as_deref().unwrap_or(""),
        v.basis.as_deref().unwrap_or(""),
        &serial,
        bytes,
        &v.session,
        v.role.as_str(),
        why,
    ];
    let mut line = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&csv_field(field));
    }
    line.push_str("\r\n");
    line
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break, quotes
/// doubled. A field that a spreadsheet would run as a formula (starting with `=`, `+`,
/// `-`, `@`, tab or CR; reasons come from agents) gets a leading `'`, as OWASP advises for
/// CSV injection.
pub fn csv_field(field: &str) -> String {
    let mut text = String::with_capacity(field.len() + 2);
    if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        text.push('\'');
    }
    text.push_str(field);
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}
