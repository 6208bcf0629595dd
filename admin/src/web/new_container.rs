//! The new-container form (`/containers/new`): hostname (checked as one types through
//! `/containers/check-hostname`, the service layer's rule), site, the site's allowed templates,
//! resources, extra SSH keys, environment variables, GPU when a node has one; a post starts the
//! creation through the service layer and goes to its job page.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use siteward_store::SiteId;

use super::containers::number;
use super::{posted, render, signed, Nav, Problems, Signed};
use crate::api::error::ApiError;
use crate::api::extract::ClientAddr;
use crate::auth::see_other;
use crate::jobs::CreateContainerRequest;
use crate::AdminState;

// ------------------------------------------------------------------ a new container

/// The new-container form (also what was typed, on an error).
#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct NewForm {
    hostname: String,
    site_id: i64,
    template: String,
    cores: String,
    memory: String,
    disk: String,
    ssh_keys: String,
    environment: String,
    nvidia: String,
    csrf: String,
}

impl Default for NewForm {
    fn default() -> Self {
        Self {
            hostname: String::new(),
            site_id: 0,
            template: String::new(),
            cores: "1".into(),
            memory: "512".into(),
            disk: "8".into(),
            ssh_keys: String::new(),
            environment: String::new(),
            nvidia: String::new(),
            csrf: String::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "new_container.html")]
pub(crate) struct NewPage {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub script: bool,
    pub csrf: String,
    pub problems: Problems,
    pub form: NewForm,
    pub sites: Vec<(i64, String)>,
    pub templates: Vec<(String, String)>,
    pub templates_problem: Option<String>,
    pub gpu: bool,
}

/// `?site_id=`: whose templates to offer.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct SiteQuery {
    #[serde(default)]
    site_id: Option<i64>,
}

async fn new_page(
    s: &AdminState,
    who: &Signed,
    mut form: NewForm,
    problems: Problems,
    status: StatusCode,
) -> Response {
    let snap = s.store.snapshot();
    let sites: Vec<(i64, String)> = snap
        .naming
        .sites
        .values()
        .map(|v| {
            (
                v.site.id.0,
                format!("{} ({})", v.site.name, v.site.internal_domain),
            )
        })
        .collect();
    if !sites.iter().any(|(id, _)| *id == form.site_id) {
        form.site_id = sites.first().map(|(id, _)| *id).unwrap_or(0);
    }
    let gpu = snap
        .naming
        .sites
        .get(&SiteId(form.site_id))
        .is_some_and(|v| v.nodes.iter().any(|n| n.nvidia_available));
    let (templates, templates_problem) =
        match s.jobs.allowed_templates(SiteId(form.site_id), None).await {
            Ok(list) => {
                let mut seen = std::collections::BTreeSet::new();
                let list = list
                    .into_iter()
                    .filter(|t| seen.insert(t.template.clone()))
                    .map(|t| {
                        let label = match &t.name {
                            Some(n) => format!("{n} ({})", t.template),
                            None => t.template.clone(),
                        };
                        (t.template, label)
                    })
                    .collect();
                (list, None)
            }
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
    let page = NewPage {
        title: "New container",
        nav: who.nav("new"),
        script: true,
        csrf: who.csrf.clone(),
        problems,
        form,
        sites,
        templates,
        templates_problem,
        gpu,
    };
    render(status, &page)
}

/// `GET /containers/new`.
pub(crate) async fn new_form(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<SiteQuery>,
) -> Response {
    let who = match signed(&s, &headers, peer, "/containers/new").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let form = NewForm {
        site_id: q.site_id.unwrap_or(0),
        ..NewForm::default()
    };
    new_page(&s, &who, form, Problems::default(), StatusCode::OK).await
}

const NEW_FIELDS: &[&str] = &[
    "hostname",
    "site_id",
    "template",
    "cores",
    "memory",
    "disk",
    "ssh_keys",
    "environment",
    "nvidia",
];

/// The form's fields as the API's request (numbers parsed; every rule is the API's).
fn creation_request(f: &NewForm) -> Result<CreateContainerRequest, ApiError> {
    let lines = |t: &str| -> Vec<String> {
        t.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut environment = std::collections::BTreeMap::new();
    for line in lines(&f.environment) {
        let Some((k, v)) = line.split_once('=') else {
            return Err(ApiError::invalid(
                "environment",
                format!("write each variable as NAME=value (line: {line})"),
            ));
        };
        environment.insert(k.trim().to_owned(), v.to_owned());
    }
    Ok(CreateContainerRequest {
        site_id: f.site_id,
        hostname: f.hostname.trim().to_owned(),
        template: f.template.trim().to_owned(),
        node_id: None,
        cores: number("cores", &f.cores)?,
        memory: number("memory", &f.memory)?,
        disk: number("disk", &f.disk)?,
        ssh_keys: lines(&f.ssh_keys),
        environment,
        nvidia: !f.nvidia.is_empty(),
    })
}

/// `POST /containers/new`: to the creation's job page.
pub(crate) async fn create(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<NewForm>,
) -> Response {
    let who = match posted(&s, &headers, peer, "/containers/new", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let done = match creation_request(&f) {
        Ok(req) => crate::service::containers::create(&s, &who.principal, req).await,
        Err(e) => Err(e),
    };
    match done {
        Ok((_, job)) => see_other(&format!("/jobs/{}", job.0), vec![]),
        Err(e) => {
            let status = e.status;
            new_page(&s, &who, f, Problems::from_api(e, NEW_FIELDS), status).await
        }
    }
}

/// `?hostname=`.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct HostnameQuery {
    #[serde(default)]
    hostname: String,
}

/// `GET /containers/check-hostname?hostname=`: the API's hostname rule, for checking as one
/// types (`{"ok":true}` or `{"ok":false,"message":...}`).
pub(crate) async fn check_hostname(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<HostnameQuery>,
) -> Response {
    use axum::response::IntoResponse;
    if signed_in_quietly(&s, &headers).await.is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let body = match crate::service::rules::check_label("hostname", q.hostname.trim()) {
        Ok(()) => serde_json::json!({ "ok": true }),
        Err(e) => serde_json::json!({ "ok": false, "message": e.message }),
    };
    axum::Json(body).into_response()
}

async fn signed_in_quietly(s: &AdminState, headers: &HeaderMap) -> Option<()> {
    crate::auth::signed_in(s, headers).await.map(|_| ())
}
