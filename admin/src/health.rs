//! `/healthz`, `/readyz`, `/metrics`, and the ACME HTTP-01 answers under
//! `/.well-known/acme-challenge/`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::AdminState;

pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/acme-challenge/{token}", get(acme_challenge))
}

/// The key authorization for an HTTP-01 token the ACME side published; 404 for anything else.
async fn acme_challenge(
    State(state): State<AdminState>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    let well_formed = !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return StatusCode::NOT_FOUND.into_response();
    }
    match state.store.http_challenge(&token, chrono::Utc::now()).await {
        Ok(Some(answer)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response()
        }
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reading an HTTP-01 answer failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// 200 while the process runs.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// 200 when the database answers and the snapshot is current; 503 with the reason otherwise.
async fn readyz(State(state): State<AdminState>) -> Response {
    let mut reasons = Vec::new();
    for check in &state.readiness {
        if let Some(reason) = check() {
            reasons.push(reason);
        }
    }
    let feed = state.store.feed_status();
    if !feed.ready {
        reasons.push(
            feed.reason
                .clone()
                .unwrap_or_else(|| "snapshot not current".into()),
        );
    }
    let ping = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(state.store.pool()),
    )
    .await;
    match ping {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "readiness: database check failed");
            reasons.push("database unreachable".into());
        }
        Err(_) => reasons.push("database did not answer within 2 s".into()),
    }
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": reasons.join("; ") })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match crate::metrics::render(&state) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
