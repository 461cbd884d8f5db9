//! The HTTP API: `GET /health`, `GET /guests` (loaded versions, swap history, ticks processed) and
//! `POST /guests/<validate|enrich|route|all>/reload[?force=true]`, which asks for a guarded swap
//! and answers with the decision.

use crate::runtime::StageKind;
use crate::runtime::swap::{GuestRegistry, SwapEvent, SwapTrigger};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

#[derive(Clone)]
pub struct ApiState {
    pub registry: Arc<GuestRegistry>,
    /// None when the host runs without a guests directory (nothing to reload from).
    pub triggers: Option<Arc<Mutex<mpsc::Sender<SwapTrigger>>>>,
}

#[derive(serde::Deserialize)]
struct ReloadQuery {
    #[serde(default)]
    force: bool,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/guests", get(guests))
        .route("/guests/{name}/reload", post(reload))
        .with_state(state)
}

async fn guests(State(state): State<ApiState>) -> Json<crate::runtime::swap::RegistryView> {
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
