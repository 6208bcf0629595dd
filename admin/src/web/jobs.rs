//! Jobs: the user's list (`/jobs`) and one job's page (`/jobs/{id}`) with the steps so far,
//! rendered on the server; while the job runs, `/console.js` follows the API's event stream
//! (`/api/v1/jobs/{id}/events`, which replays every line) and appends the lines not shown yet.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use siteward_store::resources::{Job, JobStatus};
use siteward_store::{ContainerId, JobId, Snapshot};

use super::{not_found, render, signed, Nav};
use crate::api::extract::{ClientAddr, Path};
use crate::AdminState;

/// A line of a job list.
pub(crate) struct JobRow {
    pub id: i64,
    pub name: String,
    pub status: &'static str,
    pub owner: String,
    pub started: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
pub(crate) struct JobsPage {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub script: bool,
    pub rows: Vec<JobRow>,
    pub show_owner: bool,
}

/// The most recent jobs first, at most this many.
const SHOWN: usize = 200;

/// Rows for `jobs`, newest first, owners named from the snapshot.
pub(crate) fn job_rows(snap: &Snapshot, mut jobs: Vec<Job>) -> Vec<JobRow> {
    jobs.sort_by_key(|j| std::cmp::Reverse(j.id.0));
    jobs.truncate(SHOWN);
    jobs.into_iter()
        .map(|j| JobRow {
            id: j.id.0,
            status: j.status.as_str(),
            owner: j
                .owner_uid
                .and_then(|u| snap.identity.users.get(&u))
                .map(|u| u.username.clone())
                .unwrap_or_else(|| "system".into()),
            started: super::when(&j.created_at),
            name: j.name,
        })
        .collect()
}

/// Every page of `owner`'s jobs (everyone's for `None`), oldest first.
pub(crate) async fn all_jobs(
    s: &AdminState,
    owner: Option<siteward_store::Uid>,
) -> Result<Vec<Job>, siteward_store::StoreError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = siteward_store::resources::Page { after, limit: 500 };
        let listing = s.store.list_jobs(page, owner).await?;
        out.extend(listing.items);
        match listing.next_after {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// `GET /jobs`: the signed-in user's own jobs.
pub(crate) async fn list(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let who = match signed(&s, &headers, peer, "/jobs").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let jobs = all_jobs(&s, Some(who.principal.uid))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "listing jobs failed");
            Vec::new()
        });
    let page = JobsPage {
        title: "Jobs",
        nav: who.nav("jobs"),
        script: false,
        rows: job_rows(&s.store.snapshot(), jobs),
        show_owner: false,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "job.html")]
pub(crate) struct JobPage {
    pub title: String,
    pub nav: Option<Nav>,
    pub script: bool,
    pub job: Job,
    pub lines: Vec<JobStatus>,
    pub active: bool,
    pub started: String,
    /// The container it acts on: id and hostname.
    pub container: Option<(i64, String)>,
}

/// The container a job acts on: the one it created, or the one its `associated_resource`
/// (`container:<id>`) names.
fn container_of(snap: &Snapshot, job: &Job) -> Option<(i64, String)> {
    let containers = &snap.naming.containers;
    if let Some(c) = containers
        .values()
        .find(|c| c.creation_job_id == Some(job.id))
    {
        return Some((c.id.0, c.hostname.clone()));
    }
    let text = job
        .associated_resource
        .as_deref()?
        .strip_prefix("container:")?;
    let c = containers.get(&ContainerId(text.parse().ok()?))?;
    Some((c.id.0, c.hostname.clone()))
}

/// `GET /jobs/{id}`: the caller's job (any job, for an administrator).
pub(crate) async fn show(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<JobId>,
) -> Response {
    let who = match signed(&s, &headers, peer, &format!("/jobs/{}", id.0)).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (job, lines) = match s.store.job(id, who.principal.uid_filter()).await {
        Ok(found) => found,
        Err(siteward_store::StoreError::NotFound { .. }) => return not_found(Some(&who)),
        Err(e) => {
            tracing::error!(error = %e, "reading a job failed");
            return not_found(Some(&who));
        }
    };
    let snap = s.store.snapshot();
    let page = JobPage {
        title: format!("Job #{}: {}", job.id.0, job.name),
        nav: who.nav("jobs"),
        script: true,
        active: job.status.is_active(),
        started: super::when(&job.created_at),
        container: container_of(&snap, &job),
        job,
        lines,
    };
    render(StatusCode::OK, &page)
}
