//! `/api/v1/interventions`: agents open, list and close their interventions.
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /api/v1/interventions` `{"reason", "cameras": [patterns], "until": RFC 3339}` | `201`, `Location: /api/v1/interventions/<id>`, the intervention |
//! | `GET /api/v1/interventions` | `200`, `{"interventions": [...]}`: the caller's open ones |
//! | `GET /api/v1/interventions/<id>` | `200`, the intervention; `404` unless the caller's and open |
//! | `DELETE /api/v1/interventions/<id>` | `204`; `404` unless the caller's and open |
//!
//! Errors are `{"error": "<message>"}`: `400` bad input (named), `401` no or a bad token,
//! `403` a service account opening one, or a camera pattern outside the agent's own
//! `[[user]].cameras` (named), `409` too many open, `413` a body over 64 KiB, `415` not
//! JSON, `503` the journal cannot record the opening (nothing was opened).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::{ApiError, labelled};
use crate::ids::CameraPattern;
use crate::interventions::{
    Intervention, InterventionError, InterventionId, InterventionStore, pattern_within,
};
use crate::journal::Clock;

/// Largest request body of the API.
const BODY_LIMIT: usize = 64 * 1024;

/// The collection route's template (also its metrics label).
pub const INTERVENTIONS: &str = "/api/v1/interventions";
/// One intervention's route template.
pub const INTERVENTION: &str = "/api/v1/interventions/{id}";

#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) store: InterventionStore,
    pub(crate) clock: Arc<dyn Clock>,
}

pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route(INTERVENTIONS, labelled(INTERVENTIONS, get(list).post(open)))
        .route(
            INTERVENTION,
            labelled(INTERVENTION, get(show).delete(close)),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenRequest {
    reason: String,
    cameras: Vec<String>,
    until: String,
}

/// An intervention as the API shows it.
#[derive(Debug, Serialize)]
struct InterventionBody {
    id: String,
    agent: String,
    reason: String,
    cameras: Vec<String>,
    opened_at: Timestamp,
    until: Timestamp,
}

impl From<&Intervention> for InterventionBody {
    fn from(i: &Intervention) -> InterventionBody {
        InterventionBody {
            id: i.id.to_string(),
            agent: i.agent.clone(),
            reason: i.reason.clone(),
            cameras: i.cameras.iter().map(|p| p.as_str().to_owned()).collect(),
            opened_at: i.opened_at,
            until: i.until,
        }
    }
}

async fn open(
    State(state): State<ApiState>,
    Caller(user): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !user.is_agent() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            &format!(
                "{} is a service account: only agents open interventions",
                user.name
            ),
        ));
    }
    if !is_json(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json",
        ));
    }
    let request: OpenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(&format!("the body is not a valid request: {e}")))?;
    let cameras = request
        .cameras
        .iter()
        .enumerate()
        .map(|(i, text)| {
            text.parse::<CameraPattern>().map_err(|e| {
                ApiError::bad_request(&format!(
                    "cameras[{i}] {text:?} is not a camera pattern: {e}"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let until: Timestamp = request.until.parse().map_err(|_| {
        ApiError::bad_request(&format!(
            "until {:?} is not an RFC 3339 time such as \"2026-02-02T18:00:00Z\"",
            request.until
        ))
    })?;
    if let Some(outside) = cameras
        .iter()
        .find(|p| !user.cameras.iter().any(|q| pattern_within(p, q)))
    {
        let allowed: Vec<&str> = user.cameras.iter().map(CameraPattern::as_str).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            &format!(
                "camera pattern {:?} is outside the cameras of {} ({})",
                outside.as_str(),
                user.name,
                allowed.join(", ")
            ),
        ));
    }
    let now = state.clock.now();
    let intervention = state
        .store
        .open(&user.name, &request.reason, cameras, until, now)
        .map_err(ApiError::from)?;
    let location = format!("{INTERVENTIONS}/{}", intervention.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(InterventionBody::from(&intervention)),
    )
        .into_response())
}

async fn list(State(state): State<ApiState>, Caller(user): Caller) -> Response {
    let now = state.clock.now();
    let interventions: Vec<InterventionBody> = state
        .store
        .list(&user.name, now)
        .iter()
        .map(InterventionBody::from)
        .collect();
    axum::Json(serde_json::json!({ "interventions": interventions })).into_response()
}

async fn show(
    State(state): State<ApiState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = InterventionId::parse(&id).ok_or_else(not_found)?;
    let intervention = state
        .store
        .get(&id, &user.name, state.clock.now())
        .ok_or_else(not_found)?;
    Ok(axum::Json(InterventionBody::from(&intervention)).into_response())
}

async fn close(
    State(state): State<ApiState>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = InterventionId::parse(&id).ok_or_else(not_found)?;
    state
        .store
        .close(&id, &user.name, state.clock.now())
        .map_err(ApiError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

fn not_found() -> ApiError {
    ApiError::from(InterventionError::NotFound)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

impl From<InterventionError> for ApiError {
    fn from(error: InterventionError) -> ApiError {
        let status = match &error {
            InterventionError::EmptyReason
            | InterventionError::ReasonTooLong { .. }
            | InterventionError::ReasonControlCharacter { .. }
            | InterventionError::NoCameras
            | InterventionError::TooManyCameras { .. }
            | InterventionError::UntilNotFuture { .. }
            | InterventionError::UntilTooFar { .. } => StatusCode::BAD_REQUEST,
            InterventionError::TooManyOpen { .. } => StatusCode::CONFLICT,
            InterventionError::NotFound => StatusCode::NOT_FOUND,
            InterventionError::Journal(e) => {
                tracing::error!(error = %e, "an intervention could not be journaled");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let message = match &error {
            // The journal's error names files on this box: logged above, not answered.
            InterventionError::Journal(_) => {
                "the journal cannot record it now, so the intervention was not opened".to_owned()
            }
            _ => error.to_string(),
        };
        ApiError::new(status, &message)
    }
}
