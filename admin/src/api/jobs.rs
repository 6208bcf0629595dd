//! Jobs: `/jobs`, `/jobs/{id}`, and following one as server-sent events (`/jobs/{id}/events`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use siteward_store::resources;
use siteward_store::*;
use tracing::Instrument;

use super::common::{ApiResult, ListResponse};
use super::error::ApiError;
use super::extract::{PageQuery, Path, Principal, Q};
use super::openapi::{get, Access, Api};
use crate::AdminState;

async fn job_events(
    State(s): State<AdminState>,
    p: Principal,
    Path(job): Path<JobId>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    s.store.job(job, p.uid_filter()).await?;
    let Some(slot) = s.streams.open(p.uid) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "you have {} job event streams open; close one first",
                s.streams.per_user()
            ),
        ));
    };
    let mut last: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let store = s.store.clone();
    let span = tracing::debug_span!("job_events", job = job.0, uid = p.uid.0);
    tokio::spawn(
        async move {
            // The slot is held for as long as this task polls.
            let _slot = slot;
            loop {
                let lines = match store.job_lines_after(job, last).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "job event stream ended: reading lines failed");
                        return;
                    }
                };
                for line in lines {
                    last = line.id;
                    let data =
                        json!({ "message": line.message, "at": line.created_at }).to_string();
                    let event = Event::default()
                        .id(line.id.to_string())
                        .event("status")
                        .data(data);
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                let status = match store.job(job, None).await {
                    Ok((j, _)) => j.status,
                    Err(e) => {
                        tracing::debug!(error = %e, "job event stream ended: reading the job failed");
                        return;
                    }
                };
                if !status.is_active() {
                    // Lines written just before the final status go out first.
                    if let Ok(rest) = store.job_lines_after(job, last).await {
                        if !rest.is_empty() {
                            continue;
                        }
                    }
                    let end = Event::default()
                        .event("end")
                        .data(json!({ "status": status }).to_string());
                    // The client may have left already; there is nothing more to send either way.
                    let _ = tx.send(end).await;
                    return;
                }
                // Stop polling the moment the client leaves, not at the job's end.
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                }
            }
        }
        .instrument(span),
    );
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, std::convert::Infallible>(event), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(std::time::Duration::from_secs(15))
                .text("heartbeat"),
        )
        .into_response())
}

/// A job that was started.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct JobAccepted {
    /// Follow it at `/api/v1/jobs/{id}/events`.
    pub(super) job_id: JobId,
}

/// A job and its progress.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct JobView {
    #[serde(flatten)]
    job: resources::Job,
    /// Progress lines, oldest first.
    statuses: Vec<resources::JobStatus>,
}

async fn list_jobs(
    State(s): State<AdminState>,
    p: Principal,
    Q(q): Q<PageQuery>,
) -> ApiResult<axum::Json<ListResponse<resources::Job>>> {
    Ok(axum::Json(
        s.store.list_jobs(q.page()?, p.uid_filter()).await?.into(),
    ))
}

async fn get_job(
    State(s): State<AdminState>,
    p: Principal,
    Path(id): Path<JobId>,
) -> ApiResult<axum::Json<JobView>> {
    let (job, statuses) = s.store.job(id, p.uid_filter()).await?;
    Ok(axum::Json(JobView { job, statuses }))
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), ListResponse<resources::Job>>(
        get(list_jobs),
        "/jobs",
        "List jobs (yours, or all for administrators)",
        "jobs",
        User,
        200,
    );
    a.op::<(), JobView>(
        get(get_job),
        "/jobs/{id}",
        "Get a job and its progress",
        "jobs",
        User,
        200,
    );
    a.op::<(), ()>(
        get(job_events),
        "/jobs/{id}/events",
        "Follow a job as server-sent events (earlier lines replayed, heartbeat, end event)",
        "jobs",
        User,
        200,
    );
}
