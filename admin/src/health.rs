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

/// The public listeners' routes: `/metrics` only with `http.metrics_token`, `/readyz` without
/// its reasons (which may name the database's trouble).
pub(crate) fn routes() -> Router<AdminState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz_brief))
        .route("/metrics", get(metrics_with_token))
        .route("/.well-known/acme-challenge/{token}", get(acme_challenge))
}

/// The operator's listener (`http.metrics_listen`): metrics and readiness with reasons.
pub(crate) fn ops_routes() -> Router<AdminState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz_full))
        .route("/metrics", get(metrics))
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

/// 200 when ready, else 503 with no reason: the reasons are on the metrics listener.
async fn readyz_brief(State(state): State<AdminState>) -> Response {
    readiness(&state, false).await
}

/// 200 when the database answers and the snapshot is current; 503 with the reason otherwise.
async fn readyz_full(State(state): State<AdminState>) -> Response {
    readiness(&state, true).await
}

/// The readiness answer, with the reasons for not being ready only when `with_reason`.
async fn readiness(state: &AdminState, with_reason: bool) -> Response {
    let reasons = not_ready_because(state).await;
    if reasons.is_empty() {
        return (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response();
    }
    let reason = reasons.join("; ");
    let body = if with_reason {
        json!({ "status": "not ready", "reason": reason })
    } else {
        tracing::debug!(%reason, "readiness: not ready");
        json!({ "status": "not ready" })
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// Why the server is not ready; empty when it is.
async fn not_ready_because(state: &AdminState) -> Vec<String> {
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
    let ping = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    match ping {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "readiness: database check failed");
            reasons.push("database unreachable".into());
        }
        Err(_) => reasons.push("database did not answer within 2 s".into()),
    }
    reasons
}

/// `/metrics` on a public listener: 404 unless `http.metrics_token` is set and sent as a
/// bearer token (compared in constant time).
async fn metrics_with_token(
    State(state): State<AdminState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match (&state.metrics_token, sent) {
        (Some(token), Some(sent)) if crate::auth::same_token(token, sent) => {
            metrics(State(state)).await
        }
        _ => StatusCode::NOT_FOUND.into_response(),
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
