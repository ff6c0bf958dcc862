use super::*;
use crate::ids::CameraId;
use crate::policy::fixtures::{CSU_POLICY, SNCF_POLICY};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn issues(text: &str) -> Vec<(String, String)> {
    match Policy::parse(text) {
        Ok(p) => panic!("expected errors, parsed {p:?}"),
        Err(PolicyError::Syntax(e)) => panic!("expected validation errors, got syntax: {e}"),
        Err(PolicyError::Invalid(list)) => list.into_iter().map(|i| (i.path, i.message)).collect(),
    }
}

fn syntax_error(text: &str) -> String {
    match Policy::parse(text) {
        Err(PolicyError::Syntax(e)) => e,
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

const HEADER: &str = r#"
version = 1
site = "csu.metz.example"
serial = 7
valid_from = 2026-02-02T00:00:00Z
valid_until = 2027-02-01T23:59:59Z
time_zone = "Europe/Paris"
reference = "test"
"#;

fn with_grant(grant: &str) -> String {
    format!("{HEADER}\n[[grant]]\n{grant}")
}

#[test]
fn csu_policy_parses_into_typed_values() {
    let p = Policy::parse(CSU_POLICY).unwrap();
    assert_eq!(p.version, 1);
    assert_eq!(p.site.as_str(), "csu.metz.example");
    assert_eq!(p.serial, 7);
    assert_eq!(p.valid_from, ts("2026-02-02T00:00:00Z"));
    assert_eq!(p.valid_until, ts("2027-02-01T23:59:59Z"));
    assert_eq!(p.time_zone.iana_name(), Some("Europe/Paris"));
    assert!(p.reference.starts_with("Convention de déport"));
    assert_eq!(p.grants.len(), 3);

    let ccor = &p.grants[0];
    assert_eq!(ccor.partner.as_str(), "ccor.metz.example");
    assert_eq!(
        ccor.cameras.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        ["metz/**", "sncf/metz-ville/**", "sncf/metz-nord/**"]
    );
    assert_eq!(ccor.hours, vec!["00:00-24:00".parse().unwrap()]);
    assert_eq!(ccor.max_streams, Some(16));
    assert_eq!(ccor.max_bitrate_kbps, Some(200_000));
    assert_eq!(ccor.mode, Mode::Live);
    assert!(ccor.onward.is_empty());
    assert_eq!(ccor.basis, "CSI L252-2; arrêté préfectoral n° 2025-123");

    let corg = &p.grants[1];
    assert_eq!(corg.partner.as_str(), "corg.gendarmerie.example");
    assert!(corg.hours.is_empty(), "absent hours mean always");
    assert_eq!(corg.max_streams, None);
    assert_eq!(corg.max_bitrate_kbps, None);
    assert!(corg.cameras[1].matches(&"marly/mairie".parse::<CameraId>().unwrap()));
}

#[test]
fn sncf_policy_parses_with_onward_and_on_request() {
    let p = Policy::parse(SNCF_POLICY).unwrap();
    assert_eq!(p.site.as_str(), "sncf.metz.example");
    assert_eq!(p.grants.len(), 2);
    assert_eq!(p.grants[0].mode, Mode::OnRequest);
    assert_eq!(
        p.grants[0]
            .onward
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>(),
        ["ccor.metz.example"]
    );
    assert!(p.grants[1].onward.is_empty());
}

#[test]
fn offsets_in_validity_are_honoured() {
    let text = HEADER
        .replace("2026-02-02T00:00:00Z", "2026-02-02T01:00:00+01:00")
        .replace("2027-02-01T23:59:59Z", "2027-02-01 23:59:59.5-02:30");
    let p = Policy::parse(&text).unwrap();
    assert_eq!(p.valid_from, ts("2026-02-02T00:00:00Z"));
    assert_eq!(p.valid_until, ts("2027-02-02T02:29:59.5Z"));
}

#[test]
fn a_policy_without_grants_is_valid_and_grants_nothing() {
    let p = Policy::parse(HEADER).unwrap();
    assert!(p.grants.is_empty());
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let e = syntax_error(&format!("{HEADER}\naudience = \"x\"\n"));
    assert!(e.contains("audience"), "{e}");
    let e = syntax_error(&with_grant(
        "partner = \"ccor.metz.example\"\ncameras = [\"metz/**\"]\nmode = \"live\"\nbasis = \"b\"\nmax_stream = 3\n",
    ));
    assert!(e.contains("max_stream"), "{e}");
}

#[test]
fn missing_and_mistyped_keys_are_syntax_errors() {
    let e = syntax_error(&HEADER.replace("serial = 7\n", ""));
    assert!(e.contains("serial"), "{e}");
    let e = syntax_error(&HEADER.replace("serial = 7", "serial = \"7\""));
    assert!(e.contains("serial") || e.contains("integer"), "{e}");
    let e = syntax_error(&with_grant(
        "partner = \"ccor.metz.example\"\ncameras = [\"metz/**\"]\nbasis = \"b\"\n",
    ));
    assert!(e.contains("mode"), "{e}");
    let e = syntax_error(&with_grant(
        "partner = \"ccor.metz.example\"\ncameras = [\"metz/**\"]\nmode = \"live\"\n",
    ));
    assert!(e.contains("basis"), "{e}");
    let e = syntax_error("version = 1\nsite = ");
    assert!(!e.is_empty());
}

#[test]
fn local_datetimes_are_refused() {
    let text = HEADER
        .replace("2026-02-02T00:00:00Z", "2026-02-02T00:00:00")
        .replace("2027-02-01T23:59:59Z", "2027-02-01");
    let got = issues(&text);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "valid_from");
    assert!(got[0].1.contains("no UTC offset"), "{got:?}");
    assert_eq!(got[1].0, "valid_until");
}

#[test]
fn every_error_is_reported_with_its_key_path() {
    let text = r#"
version = 2
site = "csu"
serial = -1
valid_from = 2027-02-02T00:00:00Z
valid_until = 2026-02-01T23:59:59Z
time_zone = "Europe/Metz"
reference = " "

[[grant]]
partner = "ccor.metz.example"
cameras = ["metz/**"]
mode = "live"
basis = "ok"

[[grant]]
partner = "ccor"
cameras = ["metz/**", "../x", "a/b*"]
hours = ["08:00-20:00", "8:00-20:00", "25:00-26:00", "24:00-06:00", "10:00-10:00"]
max_streams = 0
max_bitrate_kbps = 5000000000
mode = "always"
onward = ["*.metz.example", "corg.gendarmerie.example", "corg.gendarmerie.example"]
basis = ""

[[grant]]
partner = "csu.metz.example"
cameras = []
hours = []
mode = "on_request"
onward = ["ccor.metz.example"]
basis = "b"
"#;
    let got = issues(text);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "version",
            "site",
            "serial",
            "valid_until",
            "time_zone",
            "reference",
            "grant[1].partner",
            "grant[1].cameras[1]",
            "grant[1].cameras[2]",
            "grant[1].hours[1]",
            "grant[1].hours[2]",
            "grant[1].hours[3]",
            "grant[1].hours[4]",
            "grant[1].max_streams",
            "grant[1].max_bitrate_kbps",
            "grant[1].mode",
            "grant[1].onward[0]",
            "grant[1].onward[2]",
            "grant[1].basis",
            "grant[2].cameras",
            "grant[2].hours",
        ],
        "{got:#?}"
    );
    let msg = |path: &str| &got.iter().find(|(p, _)| p == path).unwrap().1;
    assert!(msg("version").contains("unsupported format version 2"));
    assert!(msg("site").contains("two DNS labels"));
    assert!(msg("valid_until").contains("not after valid_from"));
    assert!(msg("time_zone").contains("Europe/Metz"));
    assert!(msg("grant[1].cameras[1]").contains("\"..\""));
    assert!(msg("grant[1].hours[3]").contains("24:00"));
    assert!(msg("grant[1].hours[4]").contains("00:00-24:00"));
    assert!(msg("grant[1].mode").contains("always"));
    assert!(msg("grant[1].onward[0]").contains("wildcard"));
    assert!(msg("grant[1].onward[2]").contains("twice"));

    // The rendered error lists them all, one per line.
    let rendered = Policy::parse(text).unwrap_err().to_string();
    assert_eq!(rendered.lines().count(), 1 + got.len(), "{rendered}");
    assert!(
        rendered.contains("grant[1].cameras[2]: bad pattern segment \"b*\""),
        "{rendered}"
    );
}

#[test]
fn a_grant_to_ourselves_is_refused_only_when_site_is_known() {
    let got = issues(&with_grant(
        "partner = \"csu.metz.example\"\ncameras = [\"metz/**\"]\nmode = \"live\"\nbasis = \"b\"\n",
    ));
    assert_eq!(
        got,
        [(
            "grant[0].partner".to_owned(),
            "a site does not grant cameras to itself".to_owned()
        )]
    );
}

#[test]
fn onward_may_not_name_the_partner() {
    let got = issues(&with_grant(
        "partner = \"ccor.metz.example\"\ncameras = [\"metz/**\"]\nmode = \"live\"\nonward = [\"ccor.metz.example\"]\nbasis = \"b\"\n",
    ));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "grant[0].onward[0]");
}

#[test]
fn caps_at_the_edges() {
    let grant = |caps: &str| {
        with_grant(&format!(
            "partner = \"ccor.metz.example\"\ncameras = [\"metz/**\"]\nmode = \"live\"\nbasis = \"b\"\n{caps}"
        ))
    };
    let p = Policy::parse(&grant("max_streams = 1\nmax_bitrate_kbps = 4294967295\n")).unwrap();
    assert_eq!(p.grants[0].max_streams, Some(1));
    assert_eq!(p.grants[0].max_bitrate_kbps, Some(u32::MAX));
    let got = issues(&grant("max_streams = -3\nmax_bitrate_kbps = 4294967296\n"));
    assert_eq!(got.len(), 2);
}

#[test]
fn hours_windows_parse_and_display() {
    let ok = [
        ("00:00-24:00", 0, 1440, false),
        ("08:00-20:00", 480, 1200, false),
        ("22:00-06:00", 1320, 360, true),
        ("23:59-00:00", 1439, 0, true),
        ("00:01-00:00", 1, 0, true),
        ("07:30-24:00", 450, 1440, false),
    ];
    for (s, start, end, crosses) in ok {
        let w: HoursWindow = s.parse().unwrap();
        assert_eq!(
            (w.start_minute(), w.end_minute(), w.crosses_midnight()),
            (start, end, crosses),
            "{s}"
        );
        assert_eq!(w.to_string(), s);
    }
    let bad = [
        ("", HoursError::Syntax),
        ("08:00", HoursError::Syntax),
        ("8:00-20:00", HoursError::Syntax),
        ("08:00 - 20:00", HoursError::Syntax),
        ("08h00-20h00", HoursError::Syntax),
        ("+8:00-20:00", HoursError::Syntax),
        ("08:00-20:00-21:00", HoursError::Syntax),
        ("08:60-20:00", HoursError::OutOfRange("08:60".into())),
        ("24:01-20:00", HoursError::OutOfRange("24:01".into())),
        ("25:00-26:00", HoursError::OutOfRange("25:00".into())),
        ("24:00-06:00", HoursError::OutOfRange("24:00".into())),
        ("10:00-10:00", HoursError::Empty),
        ("00:00-00:00", HoursError::Empty),
    ];
    for (s, want) in bad {
        assert_eq!(s.parse::<HoursWindow>(), Err(want), "{s:?}");
    }
}

#[test]
fn hours_window_membership_by_second_of_day() {
    let day: HoursWindow = "08:00-20:00".parse().unwrap();
    assert!(!day.contains_second_of_day(8 * 3600 - 1));
    assert!(day.contains_second_of_day(8 * 3600));
    assert!(day.contains_second_of_day(20 * 3600 - 1));
    assert!(!day.contains_second_of_day(20 * 3600));

    let night: HoursWindow = "22:00-06:00".parse().unwrap();
    assert!(night.contains_second_of_day(22 * 3600));
    assert!(night.contains_second_of_day(23 * 3600 + 59 * 60 + 59));
    assert!(night.contains_second_of_day(0));
    assert!(night.contains_second_of_day(6 * 3600 - 1));
    assert!(!night.contains_second_of_day(6 * 3600));
    assert!(!night.contains_second_of_day(12 * 3600));
    assert!(!night.contains_second_of_day(22 * 3600 - 1));

    let all: HoursWindow = "00:00-24:00".parse().unwrap();
    assert!(all.contains_second_of_day(0));
    assert!(all.contains_second_of_day(86_399));
}

#[test]
fn mode_and_kind_spellings() {
    assert_eq!(Mode::Live.as_str(), "live");
    assert_eq!(Mode::OnRequest.to_string(), "on_request");
    assert_eq!(AgentKind::Agent.as_str(), "agent");
    assert_eq!(AgentKind::Service.to_string(), "service");
}
