//! The management listener: Prometheus metrics, health and readiness, and the whole
//! site's cameras and links (`GET /api/v1/cameras`, `GET /api/v1/links`, the shapes of
//! [`crate::status`]) for local tools. It has no authentication: keep it on loopback
//! or a management network.
//!
//! Bound on loopback by default. `/readyz` reports local readiness only (config
//! loaded, listeners bound), so a partner's outage never takes this box out of its
//! pair; policy and link state are in its JSON body for humans and scripts.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::status::SiteStatus;

/// What `/readyz` reports, supplied by the composition layer.
pub trait Readiness: Send + Sync + 'static {
    /// Whether this box can serve its own site now.
    fn ready(&self) -> bool;
    /// Details for the body: policy, links, listeners.
    fn details(&self) -> serde_json::Value;
}

/// The bound management listener.
pub struct ManagementServer {
    listener: TcpListener,
    router: Router,
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    readiness: Arc<dyn Readiness>,
    status: Arc<dyn SiteStatus>,
}

impl ManagementServer {
    /// Binds the listener; serving starts with [`ManagementServer::serve`].
    pub async fn bind(
        addr: SocketAddr,
        metrics: PrometheusHandle,
        readiness: Arc<dyn Readiness>,
        status: Arc<dyn SiteStatus>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let router = Router::new()
            .route("/metrics", get(render_metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/api/v1/cameras", get(cameras))
            .route("/api/v1/links", get(links))
            .with_state(AppState {
                metrics,
                readiness,
                status,
            });
        Ok(ManagementServer { listener, router })
    }

    /// The bound address (the configured port may be 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let ready = state.readiness.ready();
    let body = serde_json::json!({ "ready": ready, "details": state.readiness.details() });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn cameras(State(state): State<AppState>) -> Response {
    axum::Json(serde_json::json!({ "cameras": state.status.cameras() })).into_response()
}

async fn links(State(state): State<AppState>) -> Response {
    axum::Json(serde_json::json!({ "links": state.status.links() })).into_response()
}
