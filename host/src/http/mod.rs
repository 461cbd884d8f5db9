//! The HTTP API:
//! - `GET /health` (live: the process answers), `GET /ready` (Kafka, the lake and Elasticsearch
//!   reachable; 503 with the reason otherwise), `GET /metrics` (Prometheus / OpenMetrics text);
//! - `GET /guests` (loaded versions, swap history, ticks processed) and
//!   `POST /guests/<validate|enrich|route|all>/reload[?force=true]`, which asks for a guarded swap
//!   and answers with the decision;
//! - the dashboard: `GET /` and `/assets/…` (embedded in the binary), fed by `GET /api/live`.

use crate::chain::swap::{GuestRegistry, LoadedGuest, SwapEvent, SwapTrigger};
use crate::config::error::{ConfigError, invalid};
use crate::runtime::StageKind;
use crate::telemetry::{Dependency, LiveSnapshot, Telemetry};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<GuestRegistry>,
    /// None when the host runs without a guests directory (nothing to reload from).
    pub triggers: Option<Arc<Mutex<mpsc::Sender<SwapTrigger>>>>,
    pub telemetry: Arc<Telemetry>,
    /// What `/ready` waits for.
    pub dependencies: Vec<Dependency>,
}

#[derive(serde::Deserialize)]
struct ReloadQuery {
    #[serde(default)]
    force: bool,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/guests", get(guests))
        .route("/guests/{name}/reload", post(reload))
        .route("/api/live", get(live))
        .route("/", get(|| async { asset("index.html") }))
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
        .with_state(state)
}

/// The dashboard's files, in the binary.
const ASSETS: [(&str, &str, &str); 5] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/vendor/uplot/uPlot.min.css"),
    ),
];

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no asset {name:?}")),
    }
}

async fn ready(State(state): State<ApiState>) -> Response {
    let readiness = state.telemetry.readiness(&state.dependencies);
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let view = state.registry.view();
    let text = state.telemetry.encode(&view.guests, &view.history);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// What the dashboard draws: the live view, plus the guests and the last swaps.
#[derive(serde::Serialize)]
struct Live {
    #[serde(flatten)]
    live: LiveSnapshot,
    guests: Vec<LoadedGuest>,
    history: Vec<SwapEvent>,
    processed: u64,
}

async fn live(State(state): State<ApiState>) -> Json<Live> {
    let view = state.registry.view();
    let keep_from = view.history.len().saturating_sub(20);
    Json(Live {
        live: state.telemetry.live(),
        guests: view.guests,
        history: view.history[keep_from..].to_vec(),
        processed: view.processed,
    })
}

async fn guests(State(state): State<ApiState>) -> Json<crate::chain::swap::RegistryView> {
    Json(state.registry.view())
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn reload(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<ReloadQuery>,
) -> Response {
    let stage = match name.as_str() {
        "all" => None,
        other => match StageKind::from_name(other) {
            Some(kind) => Some(kind),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no stage {other:?}; use validate, enrich, route or all"),
                );
            }
        },
    };
    let Some(triggers) = &state.triggers else {
        return error(
            StatusCode::CONFLICT,
            "hot swap needs a guests directory (--guests DIR)".into(),
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel::<Vec<SwapEvent>>();
    let trigger = SwapTrigger {
        stage,
        force: query.force,
        trigger: "http".into(),
        reply: Some(reply),
    };
    if triggers
        .lock()
        .expect("trigger lock")
        .send(trigger)
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the swap controller has stopped".into(),
        );
    }
    match tokio::time::timeout(Duration::from_secs(60), answer).await {
        Ok(Ok(events)) => {
            let refused = events.iter().any(|e| e.outcome == "refused");
            let status = if refused {
                StatusCode::CONFLICT
            } else {
                StatusCode::OK
            };
            (status, Json(serde_json::json!({ "events": events }))).into_response()
        }
        _ => error(
            StatusCode::GATEWAY_TIMEOUT,
            "no decision within 60 s".into(),
        ),
    }
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// `host:port` of the HTTP API (`/guests`, `/health`); empty = no HTTP.
    pub listen: String,
}

impl HttpSection {
    /// Checks the section's values; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "http.listen",
                "must be host:port with an IP address, e.g. 127.0.0.1:8080",
            );
        }
        Ok(())
    }
}
