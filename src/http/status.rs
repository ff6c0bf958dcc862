//! `/api/v1/site`, `/api/v1/cameras`, `/api/v1/links`: what the status page and
//! operators' scripts read, per user.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /api/v1/site` | `200`, `{"site", "user": {"name", "kind", "cameras"}, "policy", "webrtc"}` |
//! | `GET /api/v1/cameras` | `200`, `{"cameras": [...]}`: only those the caller may watch |
//! | `GET /api/v1/links` | `200`, `{"links": [...]}` |
//!
//! Fields are those of [`crate::status`]. A bearer token is needed (`401` without);
//! the management listener serves the whole site's cameras and links, unfiltered, to
//! local tools.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::auth::Caller;
use super::labelled;
use crate::config::UserKind;
use crate::ids::CameraId;
use crate::status::SiteStatus;

/// `GET /api/v1/site`.
pub const SITE: &str = "/api/v1/site";
/// `GET /api/v1/cameras`.
pub const CAMERAS: &str = "/api/v1/cameras";
/// `GET /api/v1/links`.
pub const LINKS: &str = "/api/v1/links";

pub(crate) fn router(status: Arc<dyn SiteStatus>) -> Router {
    Router::new()
        .route(SITE, labelled(SITE, get(site)))
        .route(CAMERAS, labelled(CAMERAS, get(cameras)))
        .route(LINKS, labelled(LINKS, get(links)))
        .with_state(status)
}

async fn site(State(status): State<Arc<dyn SiteStatus>>, Caller(user): Caller) -> Response {
    let kind = match user.kind {
        UserKind::Agent => "agent",
        UserKind::Service => "service",
    };
    axum::Json(json!({
        "site": status.site(),
        "user": {
            "name": user.name,
            "kind": kind,
            "cameras": user.cameras.iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "policy": status.policy(),
        "webrtc": status.webrtc(),
    }))
    .into_response()
}

async fn cameras(State(status): State<Arc<dyn SiteStatus>>, Caller(user): Caller) -> Response {
    let visible: Vec<_> = status
        .cameras()
        .into_iter()
        .filter(|camera| {
            camera
                .id
                .parse::<CameraId>()
                .is_ok_and(|id| user.may_watch(&id))
        })
        .collect();
    axum::Json(json!({ "cameras": visible })).into_response()
}

async fn links(State(status): State<Arc<dyn SiteStatus>>, _caller: Caller) -> Response {
    axum::Json(json!({ "links": status.links() })).into_response()
}
