//! The status API: `/api/v1/site`, `/api/v1/cameras` and `/api/v1/links` on the
//! `[http]` listener (per user, bearer token) and the whole site's cameras and links on
//! the management listener, read from a running SNCF -> CSU chain.

mod support;

use std::time::{Duration, Instant};

use passerelle::camsim::CONTROL_ROOM_CAMERA;
use passerelle::demo::{CSU_OPERATOR_TOKEN, SNCF};
use serde_json::Value;
use support::metz::{Chain, SHOW_TIMEOUT};
use support::{Gateway, http_request};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A user of the CSU who may watch Metz Nord only.
const NORD_TOKEN: &str = "nord-only-token-0123456789abcdef";

fn get_json(gateway: &Gateway, listener: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|value| vec![("Authorization", value)])
        .unwrap_or_default();
    let response = http_request(gateway.addr(listener), "GET", path, &headers, None, TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let body = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response.status, body)
}

fn ids(cameras: &Value) -> Vec<String> {
    cameras["cameras"]
        .as_array()
        .expect("a cameras array")
        .iter()
        .map(|camera| camera["id"].as_str().expect("an id").to_owned())
        .collect()
}

fn chain_with_nord_user() -> Chain {
    Chain::start_with(
        &[],
        |_, _| {},
        |csu| {
            csu.config.push_str(
                "\n[[user]]\nname = \"nord\"\nkind = \"agent\"\npassword_file = \"secrets/nord.password\"\ntoken_file = \"secrets/nord.token\"\ncameras = [\"sncf/metz-nord/**\"]\n",
            );
            csu.files
                .push(("secrets/nord.password".into(), b"nord-password".to_vec()));
            csu.files
                .push(("secrets/nord.token".into(), NORD_TOKEN.as_bytes().to_vec()));
        },
    )
}

#[test]
fn each_user_sees_the_cameras_they_may_watch_and_the_links_with_their_rtt() {
    let chain = chain_with_nord_user();

    let (status, all) = get_json(
        &chain.csu,
        "http",
        "/api/v1/cameras",
        Some(CSU_OPERATOR_TOKEN),
    );
    assert_eq!(status, 200, "{all}");
    let all_ids = ids(&all);
    assert!(
        all_ids.contains(&"sncf/metz-ville/quai-1".to_owned()),
        "{all}"
    );
    assert!(all_ids.contains(&"sncf/metz-nord/hall".to_owned()), "{all}");
    assert!(
        !all_ids.iter().any(|id| id.ends_with(CONTROL_ROOM_CAMERA)),
        "the SNCF never grants its control room: {all}"
    );
    let quai = all["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .find(|camera| camera["id"] == "sncf/metz-ville/quai-1")
        .unwrap();
    assert_eq!(quai["source"], "partner");
    assert_eq!(quai["site"], SNCF);
    assert_eq!(quai["on_request"], false);

    let (_, nord) = get_json(&chain.csu, "http", "/api/v1/cameras", Some(NORD_TOKEN));
    let nord_ids = ids(&nord);
    assert!(!nord_ids.is_empty(), "{nord}");
    assert!(
        nord_ids.iter().all(|id| id.starts_with("sncf/metz-nord/")),
        "a user sees only the cameras of their patterns: {nord_ids:?}"
    );

    let (status, site) = get_json(&chain.csu, "http", "/api/v1/site", Some(NORD_TOKEN));
    assert_eq!(status, 200, "{site}");
    assert_eq!(site["user"]["name"], "nord");
    assert_eq!(site["policy"]["state"], "valid", "{site}");
    assert!(site["policy"]["serial"].as_u64().is_some(), "{site}");
    assert!(
        !site["policy"]["signers"].as_array().unwrap().is_empty(),
        "{site}"
    );

    // The RTT is sampled every 2 s once the link is up.
    let deadline = Instant::now() + SHOW_TIMEOUT;
    let link = loop {
        let (status, links) = get_json(&chain.csu, "http", "/api/v1/links", Some(NORD_TOKEN));
        assert_eq!(status, 200, "{links}");
        let link = links["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|link| link["peer"] == SNCF)
            .cloned()
            .unwrap_or_else(|| panic!("no SNCF link: {links}"));
        if link["rtt_ms"].is_number() {
            break link;
        }
        assert!(
            Instant::now() < deadline,
            "no RTT within {SHOW_TIMEOUT:?}: {link}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(link["state"], "up", "{link}");
    assert_eq!(link["direction"], "dialled", "{link}");
    assert!(link["since"].is_string(), "{link}");
    assert!(link["peer_cameras"].as_u64().unwrap() > 0, "{link}");

    // While someone watches, the camera reads playing with its viewer.
    let url = chain.csu_url("sncf/metz-ville/quai-1");
    let viewer = std::thread::spawn(move || {
        support::ffprobe_read(&url, support::Transport::Tcp, 6, Duration::from_secs(30))
    });
    let deadline = Instant::now() + SHOW_TIMEOUT;
    loop {
        let (_, cameras) = get_json(
            &chain.csu,
            "http",
            "/api/v1/cameras",
            Some(CSU_OPERATOR_TOKEN),
        );
        let quai = cameras["cameras"]
            .as_array()
            .unwrap()
            .iter()
            .find(|camera| camera["id"] == "sncf/metz-ville/quai-1")
            .cloned()
            .unwrap();
        if quai["state"] == "playing" && quai["viewers"].as_u64() >= Some(1) {
            assert_eq!(quai["codec"], "h264", "{quai}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never playing while watched: {quai}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = viewer.join().unwrap().expect("the viewer plays");
    assert!(report.frames > 0, "{report:?}");
}

#[test]
fn the_status_api_needs_a_token() {
    let chain = Chain::start(&[]);
    for path in ["/api/v1/site", "/api/v1/cameras", "/api/v1/links"] {
        let (status, body) = get_json(&chain.csu, "http", path, None);
        assert_eq!(status, 401, "{path}: {body}");
        let (status, body) = get_json(&chain.csu, "http", path, Some("not-a-token-of-anybody"));
        assert_eq!(status, 401, "{path}: {body}");
    }
}

#[test]
fn the_management_listener_lists_every_camera_with_the_partners_it_is_shared_with() {
    let chain = Chain::start(&[]);
    let (status, cameras) = get_json(&chain.sncf, "management", "/api/v1/cameras", None);
    assert_eq!(status, 200, "{cameras}");
    let list = cameras["cameras"].as_array().unwrap();
    let find = |id: &str| {
        list.iter()
            .find(|camera| camera["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {cameras}"))
    };
    let quai = find("metz-ville/quai-1");
    assert_eq!(quai["source"], "local");
    assert_eq!(quai["shared_with"], serde_json::json!(["csu.metz.example"]));
    let control_room = find(CONTROL_ROOM_CAMERA);
    assert_eq!(control_room["shared_with"], serde_json::json!([]));

    let (status, links) = get_json(&chain.sncf, "management", "/api/v1/links", None);
    assert_eq!(status, 200, "{links}");
    assert_eq!(links["links"][0]["peer"], "csu.metz.example", "{links}");
    assert_eq!(links["links"][0]["state"], "up", "{links}");
    assert_eq!(links["links"][0]["direction"], "accepted", "{links}");
}
