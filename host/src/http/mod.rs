//! The HTTP API:
//! - `GET /health` (live: the process answers), `GET /ready` (Kafka, the lake and Elasticsearch
//!   reachable; 503 with the reason otherwise), `GET /metrics` (Prometheus / OpenMetrics text);
//! - `GET /guests` (loaded versions, swap history, ticks processed),
//!   `POST /guests/<validate|enrich|route|all>/reload[?force=true]`, which asks for a guarded swap
//!   of the directory's file and answers with the decision, and
//!   `POST /guests/<validate|enrich|route>/promote` (JSON: `component_base64`, optional
//!   `diff_report` and `force`), the same guarded swap of a component handed over
//!   (`stockpipe guest promote`), kept in the guests directory once swapped in;
//! - the dashboard: `GET /` and `/assets/…` (embedded in the binary), fed by `GET /api/live`.
//!
//! Reads are open. The mutating endpoints need `Authorization: Bearer <token>` whenever a token is
//! set (`STOCKPIPE_ADMIN_TOKEN`, from the environment only); beyond loopback without a token they
//! are closed (401 naming the variable) while the reads — `/health`, `/ready`, `/metrics`, the
//! dashboard — are served, so Prometheus can scrape a replica that has none ([`AdminAccess`]).
//! Connections are limited in number and must send their headers within a deadline
//! ([`ServeLimits`]).

use crate::chain::swap::{Candidate, GuestRegistry, LoadedGuest, SwapEvent, SwapTrigger};
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
    /// Who may call the mutating endpoints.
    pub admin: AdminAccess,
}

/// Who may call the mutating endpoints (`POST /guests/<name>/reload`).
#[derive(Debug, Clone, PartialEq)]
pub enum AdminAccess {
    /// Anyone who can connect: the API listens on loopback only and no token is set.
    Open,
    /// Callers with `Authorization: Bearer <token>`.
    Token(Arc<str>),
    /// No one: the API listens beyond loopback and no token is set.
    Closed { listen: std::net::SocketAddr },
}

/// The environment variable that holds the admin token (never the config file).
pub const ADMIN_TOKEN_ENV: &str = "STOCKPIPE_ADMIN_TOKEN";

/// Who may call the mutating endpoints of an API listening on `listen`, given the token in
/// `lookup` (the environment): with a token, its holders; without one, anyone on loopback, no
/// one beyond it.
pub fn admin_access(
    listen: std::net::SocketAddr,
    lookup: impl Fn(&str) -> Option<String>,
) -> AdminAccess {
    match lookup(ADMIN_TOKEN_ENV).filter(|t| !t.is_empty()) {
        Some(token) => AdminAccess::Token(token.into()),
        None if listen.ip().is_loopback() => AdminAccess::Open,
        None => AdminAccess::Closed { listen },
    }
}

/// Whether `given` is the token, compared in time that does not depend on where they differ.
fn same_token(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len()
        && std::hint::black_box(
            given
                .iter()
                .zip(token)
                .fold(0u8, |differ, (a, b)| differ | (a ^ b)),
        ) == 0
}

/// The answer to a mutating request the caller may not make; `None` lets it through.
fn unauthorized(state: &ApiState, headers: &axum::http::HeaderMap) -> Option<Response> {
    let token = match &state.admin {
        AdminAccess::Open => return None,
        AdminAccess::Token(token) => token,
        AdminAccess::Closed { listen } => {
            return Some(refused(format!(
                "the admin endpoints are closed: this API listens on {listen}, beyond loopback, and {ADMIN_TOKEN_ENV} is not set; set it (and send Authorization: Bearer <it>) to use them"
            )));
        }
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if same_token(given, token.as_bytes()) {
        None
    } else {
        Some(refused(format!(
            "this endpoint needs Authorization: Bearer <the token in {ADMIN_TOKEN_ENV}>"
        )))
    }
}

fn refused(message: String) -> Response {
    let mut answer = error(StatusCode::UNAUTHORIZED, message);
    answer.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    answer
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
        .route(
            "/guests/{name}/promote",
            post(promote).layer(axum::extract::DefaultBodyLimit::max(PROMOTE_BODY_MAX)),
        )
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
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(refused) = unauthorized(&state, &headers) {
        return refused;
    }
    let stage = match name.as_str() {
        "all" => None,
        other => match StageKind::from_swappable_name(other) {
            Some(kind) => Some(kind),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no stage {other:?}; use validate, enrich, route, aggregate or all"),
                );
            }
        },
    };
    ask(
        &state,
        SwapTrigger {
            stage,
            force: query.force,
            trigger: "http".into(),
            reply: None,
            candidate: None,
        },
    )
    .await
}

/// A promotion's body can carry a large component (base64) and its diff report.
const PROMOTE_BODY_MAX: usize = 64 << 20;

#[derive(Deserialize)]
struct PromoteBody {
    /// The component's bytes, base64 (standard alphabet, padded).
    component_base64: String,
    /// The `guest diff` report, kept in the swap history.
    #[serde(default)]
    diff_report: Option<serde_json::Value>,
    #[serde(default)]
    force: bool,
}

async fn promote(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(refused) = unauthorized(&state, &headers) {
        return refused;
    }
    let Some(stage) = StageKind::from_swappable_name(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no stage {name:?}; use validate, enrich, route or aggregate"),
        );
    };
    let request: PromoteBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a promotion (component_base64, diff_report, force): {e}"),
            );
        }
    };
    use base64::Engine as _;
    let bytes = match base64::engine::general_purpose::STANDARD.decode(&request.component_base64) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("component_base64 is not base64: {e}"),
            );
        }
    };
    ask(
        &state,
        SwapTrigger {
            stage: Some(stage),
            force: request.force,
            trigger: "promote".into(),
            reply: None,
            candidate: Some(Candidate {
                bytes,
                diff_report: request.diff_report,
            }),
        },
    )
    .await
}

/// Hands `trigger` to the swap controller and answers with its decision: 200 with the events,
/// 409 when a candidate was refused.
async fn ask(state: &ApiState, mut trigger: SwapTrigger) -> Response {
    let Some(triggers) = &state.triggers else {
        return error(
            StatusCode::CONFLICT,
            "hot swap needs a guests directory (--guests DIR)".into(),
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel::<Vec<SwapEvent>>();
    trigger.reply = Some(reply);
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

/// What a client may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// A connection that has not sent a whole request head by then is closed.
    pub header_read_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves the API on `listener` until `shutdown` resolves (then gives open requests a second).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // E.g. out of file descriptors: wait a little rather than spin.
                    tracing::warn!(error = %e, "the HTTP API could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, serde::Serialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_the_admin_endpoints_need_a_token_or_are_closed() {
        let none = |_: &str| None;
        let set = |key: &str| (key == ADMIN_TOKEN_ENV).then(|| "s3cret".to_string());
        for loopback in ["127.0.0.1:8080", "[::1]:8080"] {
            assert_eq!(
                admin_access(loopback.parse().unwrap(), none),
                AdminAccess::Open
            );
        }
        for open in ["0.0.0.0:8080", "10.1.2.3:8080", "[::]:8080"] {
            let listen = open.parse().unwrap();
            assert_eq!(admin_access(listen, none), AdminAccess::Closed { listen });
            assert_eq!(
                admin_access(listen, set),
                AdminAccess::Token(Arc::from("s3cret"))
            );
        }
        let empty = |_: &str| Some(String::new());
        let listen = "0.0.0.0:1".parse().unwrap();
        assert_eq!(admin_access(listen, empty), AdminAccess::Closed { listen });
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abc", b"abc"));
        for other in [&b"abd"[..], b"ab", b"abcd", b"", b"xbc"] {
            assert!(!same_token(other, b"abc"), "{other:?}");
        }
    }
}
