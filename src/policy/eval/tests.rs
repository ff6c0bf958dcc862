use super::*;
use crate::policy::fixtures::{CSU_POLICY, SNCF_POLICY};

fn site(s: &str) -> SiteId {
    s.parse().unwrap()
}

fn cam(s: &str) -> CameraId {
    s.parse().unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const SNCF: &str = "sncf.metz.example";
const CSU: &str = "csu.metz.example";
const CCOR: &str = "ccor.metz.example";
const CORG: &str = "corg.gendarmerie.example";
const POLICE: &str = "police.interieur.example";

/// A time inside both fixture policies' validity.
const NOW: &str = "2026-06-15T10:00:00Z";

fn agent(origin: &str) -> ViewingSession {
    ViewingSession {
        agent: "agent-42".into(),
        kind: AgentKind::Agent,
        reason: Some("Colis suspect quai 1".into()),
        intervention: Some("int-2026-0001".into()),
        origin: site(origin),
    }
}

fn no_reason(origin: &str) -> ViewingSession {
    ViewingSession {
        reason: None,
        intervention: None,
        ..agent(origin)
    }
}

fn service(origin: &str) -> ViewingSession {
    ViewingSession {
        kind: AgentKind::Service,
        agent: "vms".into(),
        ..agent(origin)
    }
}

fn decide<'p>(
    policy: &'p Policy,
    partner: &str,
    camera: &str,
    session: Option<&ViewingSession>,
    now: &str,
) -> Decision<'p> {
    evaluate(
        Some(policy),
        &policy.site,
        &site(partner),
        &cam(camera),
        session,
        ts(now),
    )
}

fn deny(reason: DenyReason) -> Decision<'static> {
    Decision::Deny(reason)
}

#[test]
fn sncf_lists_its_station_cameras_to_the_csu_on_request() {
    let p = Policy::parse(SNCF_POLICY).unwrap();
    let basis = "Code des transports L1632-2; convention du 2 février 2026";
    assert_eq!(
        decide(&p, CSU, "metz-ville/quai-1", None, NOW),
        Decision::Allow {
            grant: 0,
            mode: Mode::OnRequest,
            basis
        }
    );
    assert_eq!(
        decide(&p, CSU, "metz-nord/parvis/ptz", None, NOW),
        Decision::Allow {
            grant: 0,
            mode: Mode::OnRequest,
            basis
        }
    );
    assert_eq!(
        decide(&p, CSU, "woippy/parvis", None, NOW),
        Decision::Allow {
            grant: 1,
            mode: Mode::OnRequest,
            basis
        }
    );
    assert_eq!(
        decide(&p, CSU, "peltre/quai-1", None, NOW),
        Decision::Allow {
            grant: 1,
            mode: Mode::OnRequest,
            basis
        }
    );
    // A station not in the convention, and the bare prefix.
    assert_eq!(
        decide(&p, CSU, "thionville/quai-1", None, NOW),
        deny(DenyReason::NotGranted)
    );
    assert_eq!(
        decide(&p, CSU, "metz-ville", None, NOW),
        deny(DenyReason::NotGranted)
    );
    // SNCF grants nothing directly to the receivers.
    for partner in [CCOR, CORG, POLICE] {
        assert_eq!(
            decide(&p, partner, "metz-ville/quai-1", None, NOW),
            deny(DenyReason::NotGranted),
            "{partner}"
        );
    }
}

#[test]
fn sncf_viewing_sessions_need_an_agent_with_a_reason() {
    let p = Policy::parse(SNCF_POLICY).unwrap();
    let cam = "metz-ville/quai-1";
    assert!(decide(&p, CSU, cam, Some(&agent(CSU)), NOW).is_allowed());
    assert_eq!(
        decide(&p, CSU, cam, Some(&no_reason(CSU)), NOW),
        deny(DenyReason::NoIntervention)
    );
    assert_eq!(
        decide(&p, CSU, cam, Some(&service(CSU)), NOW),
        deny(DenyReason::ServiceAccount)
    );
    // Half an intervention is no intervention.
    let reason_only = ViewingSession {
        intervention: None,
        ..agent(CSU)
    };
    assert_eq!(
        decide(&p, CSU, cam, Some(&reason_only), NOW),
        deny(DenyReason::NoIntervention)
    );
    let blank_reason = ViewingSession {
        reason: Some("  ".into()),
        ..agent(CSU)
    };
    assert_eq!(
        decide(&p, CSU, cam, Some(&blank_reason), NOW),
        deny(DenyReason::NoIntervention)
    );
    let intervention_only = ViewingSession {
        reason: None,
        ..agent(CSU)
    };
    assert_eq!(
        decide(&p, CSU, cam, Some(&intervention_only), NOW),
        deny(DenyReason::NoIntervention)
    );
    // A service account with a reason is still a service account.
    assert_eq!(
        decide(&p, CSU, "woippy/parvis", Some(&service(CSU)), NOW),
        deny(DenyReason::ServiceAccount)
    );
}

#[test]
fn sncf_onward_rules_decide_at_the_camera_site() {
    let p = Policy::parse(SNCF_POLICY).unwrap();
    // A CCOR agent watching Metz Ville through the CSU: grant 1 names the CCOR onward.
    assert!(decide(&p, CSU, "metz-ville/quai-1", Some(&agent(CCOR)), NOW).is_allowed());
    assert!(decide(&p, CSU, "metz-nord/quai-2", Some(&agent(CCOR)), NOW).is_allowed());
    // The upstream on_request restriction travels on, although CSU → CCOR is live.
    assert_eq!(
        decide(&p, CSU, "metz-ville/quai-1", Some(&no_reason(CCOR)), NOW),
        deny(DenyReason::NoIntervention)
    );
    // The CCOR never receives Woippy, Ars or Peltre.
    for camera in ["woippy/parvis", "ars-sur-moselle/quai-1", "peltre/quai-1"] {
        assert_eq!(
            decide(&p, CSU, camera, Some(&agent(CCOR)), NOW),
            deny(DenyReason::OnwardNotGranted),
            "{camera}"
        );
    }
    // The CORG never receives an SNCF camera, whatever the CSU's policy says.
    for camera in ["metz-ville/quai-1", "metz-nord/quai-2", "woippy/parvis"] {
        for origin in [CORG, POLICE] {
            assert_eq!(
                decide(&p, CSU, camera, Some(&agent(origin)), NOW),
                deny(DenyReason::OnwardNotGranted),
                "{camera} for {origin}"
            );
        }
    }
    assert!(!DenyReason::OnwardNotGranted.camera_is_visible());
}

#[test]
fn csu_shares_city_cameras_and_imported_sncf_cameras_as_granted() {
    let p = Policy::parse(CSU_POLICY).unwrap();
    let ccor_basis = "CSI L252-2; arrêté préfectoral n° 2025-123";
    assert_eq!(
        decide(&p, CCOR, "metz/place-saint-louis", None, NOW),
        Decision::Allow {
            grant: 0,
            mode: Mode::Live,
            basis: ccor_basis
        }
    );
    assert_eq!(
        decide(&p, CCOR, "sncf/metz-ville/quai-1", Some(&agent(CCOR)), NOW),
        Decision::Allow {
            grant: 0,
            mode: Mode::Live,
            basis: ccor_basis
        }
    );
    // The CCOR: its own commune only, and no Woippy, Ars or Peltre.
    for camera in [
        "marly/mairie",
        "sncf/woippy/parvis",
        "sncf/ars-sur-moselle/quai-1",
        "sncf/peltre/quai-1",
    ] {
        assert_eq!(
            decide(&p, CCOR, camera, None, NOW),
            deny(DenyReason::NotGranted),
            "{camera}"
        );
    }
    // The CORG and the police nationale: the communes, never an SNCF camera.
    for (partner, grant) in [(CORG, 1), (POLICE, 2)] {
        for camera in [
            "metz/a",
            "marly/mairie",
            "moulins-les-metz/x",
            "noisseville/y",
            "nouilly/z",
        ] {
            match decide(&p, partner, camera, Some(&service(partner)), NOW) {
                Decision::Allow {
                    grant: g,
                    mode: Mode::Live,
                    ..
                } => assert_eq!(g, grant),
                other => panic!("{partner} {camera}: {other:?}"),
            }
        }
        for camera in [
            "sncf/metz-ville/quai-1",
            "sncf/metz-nord/x",
            "sncf/woippy/parvis",
        ] {
            assert_eq!(
                decide(&p, partner, camera, None, NOW),
                deny(DenyReason::NotGranted)
            );
        }
    }
    // A live grant takes service accounts and agents without a reason.
    assert!(decide(&p, CORG, "metz/a", Some(&no_reason(CORG)), NOW).is_allowed());
    // A live grant still checks the origin: the CORG may not relay to the police.
    assert_eq!(
        decide(&p, CORG, "metz/a", Some(&agent(POLICE)), NOW),
        deny(DenyReason::OnwardNotGranted)
    );
    // Unknown partner.
    assert_eq!(
        decide(&p, "ratp.example", "metz/a", None, NOW),
        deny(DenyReason::NotGranted)
    );
}

#[test]
fn no_policy_wrong_site_and_validity_fail_closed() {
    let p = Policy::parse(CSU_POLICY).unwrap();
    let (csu, ccor, camera) = (site(CSU), site(CCOR), cam("metz/a"));
    let at = |now: &str| evaluate(Some(&p), &csu, &ccor, &camera, None, ts(now));
    assert_eq!(
        evaluate(None, &csu, &ccor, &camera, None, ts(NOW)),
        deny(DenyReason::NoPolicy)
    );
    assert_eq!(
        evaluate(Some(&p), &site(SNCF), &ccor, &camera, None, ts(NOW)),
        deny(DenyReason::WrongSite)
    );
    assert_eq!(
        at("2026-02-01T23:59:59.999999999Z"),
        deny(DenyReason::NotYetValid)
    );
    assert!(
        at("2026-02-02T00:00:00Z").is_allowed(),
        "valid_from is inclusive"
    );
    assert!(
        at("2027-02-01T23:59:59Z").is_allowed(),
        "valid_until is inclusive"
    );
    assert_eq!(
        at("2027-02-01T23:59:59.000000001Z"),
        deny(DenyReason::Expired)
    );
    assert_eq!(at("2030-01-01T00:00:00Z"), deny(DenyReason::Expired));
    // Validity beats everything, sessions included.
    assert_eq!(
        evaluate(
            Some(&p),
            &csu,
            &ccor,
            &camera,
            Some(&agent(CCOR)),
            ts("2028-01-01T00:00:00Z")
        ),
        deny(DenyReason::Expired)
    );
    assert_eq!(policy_status(&p, &csu, ts(NOW)), Ok(()));
    assert_eq!(
        policy_status(&p, &ccor, ts(NOW)),
        Err(DenyReason::WrongSite)
    );
}

fn hours_policy(windows: &str) -> Policy {
    Policy::parse(&format!(
        r#"
version = 1
site = "csu.metz.example"
serial = 1
valid_from = 2026-01-01T00:00:00Z
valid_until = 2027-12-31T00:00:00Z
time_zone = "Europe/Paris"
reference = "r"

[[grant]]
partner = "ccor.metz.example"
cameras = ["metz/**"]
hours = [{windows}]
mode = "live"
basis = "b"
"#
    ))
    .unwrap()
}

fn open_at(p: &Policy, now: &str) -> bool {
    match decide(p, CCOR, "metz/a", None, now) {
        Decision::Allow { .. } => true,
        Decision::Deny(DenyReason::OutsideHours) => false,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn hours_are_local_time_in_winter_and_summer() {
    let p = hours_policy(r#""08:00-18:00""#);
    // Winter: Paris is UTC+1.
    assert!(!open_at(&p, "2026-01-15T06:59:59Z"));
    assert!(open_at(&p, "2026-01-15T07:00:00Z"));
    assert!(open_at(&p, "2026-01-15T16:59:59Z"));
    assert!(!open_at(&p, "2026-01-15T17:00:00Z"));
    // Summer: UTC+2.
    assert!(!open_at(&p, "2026-07-15T05:59:59Z"));
    assert!(open_at(&p, "2026-07-15T06:00:00Z"));
    assert!(open_at(&p, "2026-07-15T15:59:59Z"));
    assert!(!open_at(&p, "2026-07-15T16:00:00Z"));
    assert!(DenyReason::OutsideHours.camera_is_visible());
}

#[test]
fn hours_across_the_march_dst_change() {
    // 2026-03-29: at 01:00Z Paris goes from 02:00 CET to 03:00 CEST.
    let p = hours_policy(r#""08:00-18:00""#);
    assert!(
        !open_at(&p, "2026-03-28T06:30:00Z"),
        "07:30 CET the day before"
    );
    assert!(
        open_at(&p, "2026-03-28T07:00:00Z"),
        "08:00 CET the day before"
    );
    // 06:30Z on the day of the change is 08:30 CEST: open (a fixed +01:00 would say 07:30).
    assert!(open_at(&p, "2026-03-29T06:30:00Z"));
    assert!(!open_at(&p, "2026-03-29T05:59:59Z"), "07:59:59 CEST");
    assert!(!open_at(&p, "2026-03-29T16:00:00Z"), "18:00 CEST");

    // A window inside the skipped hour never opens that day...
    let skipped = hours_policy(r#""02:00-03:00""#);
    assert!(!open_at(&skipped, "2026-03-29T00:59:59Z"), "01:59:59 CET");
    assert!(!open_at(&skipped, "2026-03-29T01:00:00Z"), "03:00:00 CEST");
    // ... but opens the day before and the day after.
    assert!(open_at(&skipped, "2026-03-28T01:30:00Z"), "02:30 CET");
    assert!(open_at(&skipped, "2026-03-30T00:30:00Z"), "02:30 CEST");

    // A night window across midnight and the change.
    let night = hours_policy(r#""22:00-06:00""#);
    assert!(open_at(&night, "2026-03-28T21:00:00Z"), "22:00 CET");
    assert!(open_at(&night, "2026-03-29T03:59:59Z"), "05:59:59 CEST");
    assert!(
        !open_at(&night, "2026-03-29T04:00:00Z"),
        "06:00 CEST (04:00Z; CET would be 05:00)"
    );
    assert!(!open_at(&night, "2026-03-28T20:59:59Z"), "21:59:59 CET");
}

#[test]
fn hours_across_the_october_dst_change() {
    // 2026-10-25: at 01:00Z Paris goes from 03:00 CEST back to 02:00 CET.
    let p = hours_policy(r#""08:00-18:00""#);
    assert!(
        open_at(&p, "2026-10-24T06:00:00Z"),
        "08:00 CEST the day before"
    );
    // 06:30Z on the day of the change is 07:30 CET: closed (a fixed +02:00 would open).
    assert!(!open_at(&p, "2026-10-25T06:30:00Z"));
    assert!(open_at(&p, "2026-10-25T07:00:00Z"), "08:00 CET");
    assert!(open_at(&p, "2026-10-25T16:59:59Z"), "17:59:59 CET");
    assert!(!open_at(&p, "2026-10-25T17:00:00Z"), "18:00 CET");

    // The repeated hour is inside the window both times.
    let repeated = hours_policy(r#""02:00-03:00""#);
    assert!(open_at(&repeated, "2026-10-25T00:30:00Z"), "02:30 CEST");
    assert!(open_at(&repeated, "2026-10-25T01:30:00Z"), "02:30 CET");
    assert!(!open_at(&repeated, "2026-10-25T02:00:00Z"), "03:00 CET");
    assert!(!open_at(&repeated, "2026-10-24T23:59:59Z"), "01:59:59 CEST");
}

#[test]
fn any_of_several_windows_opens() {
    let p = hours_policy(r#""06:00-09:00", "17:00-20:00""#);
    assert!(open_at(&p, "2026-01-15T05:30:00Z"), "06:30 CET");
    assert!(!open_at(&p, "2026-01-15T11:00:00Z"), "12:00 CET");
    assert!(open_at(&p, "2026-01-15T17:00:00Z"), "18:00 CET");
    assert!(!open_at(&p, "2026-01-15T19:00:00Z"), "20:00 CET");
}

#[test]
fn hours_use_the_policy_time_zone() {
    let mut p = hours_policy(r#""08:00-18:00""#);
    assert!(!open_at(&p, "2026-01-15T06:30:00Z"), "07:30 in Paris");
    p.time_zone = jiff::tz::TimeZone::get("Asia/Tokyo").unwrap();
    assert!(open_at(&p, "2026-01-15T06:30:00Z"), "15:30 in Tokyo");
    p.time_zone = jiff::tz::TimeZone::UTC;
    assert!(!open_at(&p, "2026-01-15T06:30:00Z"), "06:30 UTC");
}

#[test]
fn first_allowing_grant_wins_and_the_furthest_refusal_is_reported() {
    let p = Policy::parse(
        r#"
version = 1
site = "csu.metz.example"
serial = 1
valid_from = 2026-01-01T00:00:00Z
valid_until = 2027-12-31T00:00:00Z
time_zone = "Europe/Paris"
reference = "r"

[[grant]]
partner = "ccor.metz.example"
cameras = ["metz/**"]
hours = ["08:00-18:00"]
mode = "live"
basis = "day"

[[grant]]
partner = "ccor.metz.example"
cameras = ["metz/*"]
mode = "on_request"
basis = "night"

[[grant]]
partner = "ccor.metz.example"
cameras = ["marly/**"]
hours = ["08:00-18:00"]
mode = "live"
basis = "marly"
"#,
    )
    .unwrap();
    let day = "2026-01-15T10:00:00Z";
    let night = "2026-01-15T22:00:00Z";
    assert_eq!(
        decide(&p, CCOR, "metz/a", Some(&no_reason(CCOR)), day),
        Decision::Allow {
            grant: 0,
            mode: Mode::Live,
            basis: "day"
        }
    );
    assert_eq!(
        decide(&p, CCOR, "metz/a", Some(&agent(CCOR)), night),
        Decision::Allow {
            grant: 1,
            mode: Mode::OnRequest,
            basis: "night"
        }
    );
    assert_eq!(
        decide(&p, CCOR, "metz/a", None, night),
        Decision::Allow {
            grant: 1,
            mode: Mode::OnRequest,
            basis: "night"
        }
    );
    // Grant 0 is outside hours, grant 1 wants a reason: the reason is the useful answer.
    assert_eq!(
        decide(&p, CCOR, "metz/a", Some(&no_reason(CCOR)), night),
        deny(DenyReason::NoIntervention)
    );
    assert_eq!(
        decide(&p, CCOR, "metz/a", Some(&service(CCOR)), night),
        deny(DenyReason::ServiceAccount)
    );
    // Only grant 0 matches a deeper camera: outside hours.
    assert_eq!(
        decide(&p, CCOR, "metz/a/b", Some(&agent(CCOR)), night),
        deny(DenyReason::OutsideHours)
    );
    assert_eq!(
        decide(&p, CCOR, "marly/a", None, night),
        deny(DenyReason::OutsideHours)
    );
    // A foreign origin fails further than hours but not as far as the mode.
    assert_eq!(
        decide(&p, CCOR, "metz/a", Some(&agent(CORG)), night),
        deny(DenyReason::OnwardNotGranted)
    );
}

#[test]
fn deny_reasons_have_stable_distinct_labels_and_messages() {
    let labels: Vec<&str> = DenyReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        labels,
        [
            "no_policy",
            "wrong_site",
            "not_yet_valid",
            "expired",
            "not_granted",
            "outside_hours",
            "onward_not_granted",
            "service_account",
            "no_intervention",
        ]
    );
    let mut messages: Vec<&str> = DenyReason::ALL.iter().map(|r| r.message()).collect();
    messages.sort_unstable();
    messages.dedup();
    assert_eq!(messages.len(), DenyReason::ALL.len());
    assert_eq!(DenyReason::Expired.to_string(), "the policy has expired");
    let visible: Vec<&str> = DenyReason::ALL
        .iter()
        .filter(|r| r.camera_is_visible())
        .map(|r| r.as_str())
        .collect();
    assert_eq!(
        visible,
        ["outside_hours", "service_account", "no_intervention"]
    );
}

#[test]
fn effective_grants_are_grouped_by_partner_in_file_order() {
    let p = Policy::parse(
        r#"
version = 1
site = "csu.metz.example"
serial = 1
valid_from = 2026-01-01T00:00:00Z
valid_until = 2027-12-31T00:00:00Z
time_zone = "Europe/Paris"
reference = "r"

[[grant]]
partner = "police.interieur.example"
cameras = ["metz/**"]
mode = "live"
basis = "p0"

[[grant]]
partner = "ccor.metz.example"
cameras = ["metz/**", "sncf/metz-ville/**"]
hours = ["22:00-06:00"]
max_streams = 4
max_bitrate_kbps = 20000
mode = "on_request"
onward = ["corg.gendarmerie.example"]
basis = "c1"

[[grant]]
partner = "police.interieur.example"
cameras = ["marly/**"]
mode = "live"
basis = "p2"
"#,
    )
    .unwrap();
    let rows = effective_grants(&p);
    let order: Vec<(usize, &str)> = rows.iter().map(|r| (r.index, r.partner.as_str())).collect();
    assert_eq!(order, [(1, CCOR), (0, POLICE), (2, POLICE)]);
    let ccor = &rows[0];
    assert_eq!(
        ccor.cameras.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        ["metz/**", "sncf/metz-ville/**"]
    );
    assert_eq!(
        ccor.hours
            .map(|h| h.iter().map(|w| w.to_string()).collect::<Vec<_>>()),
        Some(vec!["22:00-06:00".to_owned()])
    );
    assert_eq!(ccor.mode, Mode::OnRequest);
    assert_eq!(
        (ccor.max_streams, ccor.max_bitrate_kbps),
        (Some(4), Some(20_000))
    );
    assert_eq!(ccor.onward, [site(CORG)]);
    assert_eq!(ccor.basis, "c1");
    assert_eq!(rows[1].hours, None, "absent hours show as always");
    assert_eq!(rows[1].basis, "p0");
    assert!(rows[1].onward.is_empty());
}

#[test]
fn the_furthest_refusal_wins_whatever_the_grant_order() {
    // The on_request grant comes first, the hours grant second: the answer is still the
    // missing intervention, not the closed hours of the later grant.
    let p = Policy::parse(
        r#"
version = 1
site = "csu.metz.example"
serial = 1
valid_from = 2026-01-01T00:00:00Z
valid_until = 2027-12-31T00:00:00Z
time_zone = "Europe/Paris"
reference = "r"

[[grant]]
partner = "ccor.metz.example"
cameras = ["metz/*"]
mode = "on_request"
basis = "any time, with a reason"

[[grant]]
partner = "ccor.metz.example"
cameras = ["metz/**"]
hours = ["08:00-18:00"]
mode = "live"
basis = "office hours"

[[grant]]
partner = "ccor.metz.example"
cameras = ["marly/*"]
mode = "on_request"
onward = ["corg.gendarmerie.example"]
basis = "marly"

[[grant]]
partner = "ccor.metz.example"
cameras = ["marly/**"]
hours = ["08:00-18:00"]
mode = "live"
basis = "marly office hours"
"#,
    )
    .unwrap();
    let night = "2026-01-15T22:00:00Z";
    assert_eq!(
        decide(&p, CCOR, "metz/a", Some(&no_reason(CCOR)), night),
        deny(DenyReason::NoIntervention)
    );
    assert_eq!(
        decide(&p, CCOR, "metz/a", Some(&service(CCOR)), night),
        deny(DenyReason::ServiceAccount)
    );
    // Onward refusal (grant 2) beats outside hours (grant 3).
    assert_eq!(
        decide(&p, CCOR, "marly/a", Some(&agent(POLICE)), night),
        deny(DenyReason::OnwardNotGranted)
    );
    assert_eq!(
        decide(
            &p,
            CCOR,
            "metz/a",
            Some(&no_reason(CCOR)),
            "2026-01-15T10:00:00Z"
        ),
        Decision::Allow {
            grant: 1,
            mode: Mode::Live,
            basis: "office hours"
        }
    );
}

#[test]
fn the_next_change_is_the_next_window_edge_in_local_time() {
    let policy = hours_policy(r#""08:00-18:00""#);
    // 12:00 in Paris in June (UTC+2): the window closes at 18:00 local, 16:00Z.
    assert_eq!(
        next_change(&policy, ts("2026-06-15T10:00:00Z")),
        Some(ts("2026-06-15T16:00:00Z"))
    );
    // Evening: it opens tomorrow at 08:00 local.
    assert_eq!(
        next_change(&policy, ts("2026-06-15T17:00:00Z")),
        Some(ts("2026-06-16T06:00:00Z"))
    );
    // Across the October change (UTC+2 then UTC+1): 08:00 on the 25th is 07:00Z.
    assert_eq!(
        next_change(&policy, ts("2026-10-24T17:00:00Z")),
        Some(ts("2026-10-25T07:00:00Z"))
    );
    // Right at an edge, the next one.
    assert_eq!(
        next_change(&policy, ts("2026-06-15T16:00:00Z")),
        Some(ts("2026-06-16T06:00:00Z"))
    );
}

#[test]
fn the_next_change_includes_the_end_of_validity() {
    // Whole days open: the only timed change near the end is `valid_until` itself
    // (2027-12-31T00:00:00Z, which is 01:00 in Paris).
    let policy = hours_policy(r#""00:00-24:00""#);
    let next = next_change(&policy, ts("2027-12-30T23:30:00Z")).expect("a change");
    assert_eq!(next, ts("2027-12-31T00:00:00.000000001Z"));
}
