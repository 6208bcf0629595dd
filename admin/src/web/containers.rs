//! The user's containers: the list at `/` (from the snapshot, so it costs no query), one
//! container's page (live state from Proxmox, power, resources, services, delete with a typed
//! hostname), and the service forms. Each form post calls one `service` use case and shows its
//! error next to the field, keeping what was typed.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use siteward_store::{ContainerId, ExternalDomainId, Naming, ServiceId, ServiceKind, Snapshot};

use super::{not_found, posted, render, signed, Nav, Problems, Signed};
use crate::api::error::ApiError;
use crate::api::extract::{ClientAddr, Path};
use crate::auth::see_other;
use crate::jobs::Lifecycle;
use crate::service::containers as api;
use crate::service::containers::Deletion;
use crate::service::services::CreateService;
use crate::AdminState;

// ------------------------------------------------------------------ the list

/// A service as a line of the list: a link for HTTP, a command or address otherwise.
pub(crate) struct Link {
    pub text: String,
    pub url: Option<String>,
}

/// One row of the list.
pub(crate) struct Row {
    pub id: i64,
    pub hostname: String,
    pub dns_name: String,
    pub status: String,
    pub node: String,
    pub address: String,
    pub links: Vec<Link>,
}

#[derive(Template)]
#[template(path = "containers.html")]
pub(crate) struct ListPage {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub script: bool,
    pub notice: Option<String>,
    pub rows: Vec<Row>,
}

/// `?deleted=` and the like: a notice after a redirect.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct NoticeQuery {
    #[serde(default)]
    deleted: Option<String>,
}

/// The host users reach the edge at (for `ssh -p` lines): the public URL's.
fn edge_host(public_url: &str) -> String {
    url::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "localhost".into())
}

/// Public links of every container's HTTP and transport services, by container.
fn links_by_container(naming: &Naming, edge: &str) -> HashMap<ContainerId, Vec<Link>> {
    let domains: HashMap<ExternalDomainId, &str> = naming
        .external_domains
        .iter()
        .map(|d| (d.id, d.domain.as_str()))
        .collect();
    let mut out: HashMap<ContainerId, Vec<Link>> = HashMap::new();
    for h in &naming.http_services {
        let host = match domains.get(&h.external_domain_id) {
            Some(d) => format!("{}.{d}", h.external_hostname),
            None => h.external_hostname.clone(),
        };
        out.entry(h.container_id).or_default().push(Link {
            url: Some(format!("https://{host}/")),
            text: host,
        });
    }
    for t in &naming.transport_services {
        out.entry(t.container_id).or_default().push(transport_link(
            t.protocol.as_str(),
            t.container_port,
            t.external_port,
            edge,
        ));
    }
    out
}

/// `ssh -p` for SSH, else `protocol host:port`.
fn transport_link(protocol: &str, container_port: i32, external: i32, edge: &str) -> Link {
    let text = if container_port == 22 && protocol == "tcp" {
        format!("ssh -p {external} root@{edge}")
    } else {
        format!("{protocol} {edge}:{external} → {container_port}")
    };
    Link { text, url: None }
}

/// The rows of `owner`'s containers (every container's for `None`), sorted by hostname.
pub(crate) fn rows(snap: &Snapshot, owner: Option<&str>, edge: &str) -> Vec<Row> {
    let naming = &snap.naming;
    let mut links = links_by_container(naming, edge);
    let mut rows: Vec<Row> = naming
        .containers
        .values()
        .filter(|c| owner.is_none() || c.username.as_deref() == owner)
        .map(|c| {
            let site = naming.sites.get(&c.site_id);
            let node = site
                .and_then(|s| s.nodes.iter().find(|n| n.id == c.node_id))
                .map(|n| n.name.clone())
                .unwrap_or_default();
            let domain = site.map(|s| s.site.internal_domain.as_str()).unwrap_or("");
            Row {
                id: c.id.0,
                dns_name: format!("{}.{domain}", c.hostname),
                hostname: c.hostname.clone(),
                status: c.status.as_str().to_owned(),
                node,
                address: c
                    .ipv4_address
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "none".into()),
                links: links.remove(&c.id).unwrap_or_default(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
    rows
}

/// `GET /`: the signed-in user's containers.
pub(crate) async fn list(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<NoticeQuery>,
) -> Response {
    let who = match signed(&s, &headers, peer, "/").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let snap = s.store.snapshot();
    let page = ListPage {
        title: "My containers",
        nav: who.nav("containers"),
        script: false,
        notice: q.deleted.map(|h| format!("{h} is being deleted.")),
        rows: rows(&snap, Some(&who.user.username), &edge_host(&s.public_url)),
    };
    render(StatusCode::OK, &page)
}

// ------------------------------------------------------------------ one container

/// A service on the container page.
pub(crate) struct ServiceRow {
    pub id: i64,
    pub kind: &'static str,
    pub text: String,
    pub url: Option<String>,
    pub port: i32,
}

/// What the add-service form holds (also what was typed, on an error).
#[derive(Debug, Deserialize)]
#[serde(default)]
pub(crate) struct ServiceForm {
    #[serde(rename = "type")]
    kind: String,
    container_port: String,
    external_hostname: String,
    external_domain_id: String,
    auth_required: String,
    protocol: String,
    external_port: String,
    service_name: String,
    csrf: String,
}

impl Default for ServiceForm {
    fn default() -> Self {
        Self {
            kind: "http".into(),
            container_port: String::new(),
            external_hostname: String::new(),
            external_domain_id: String::new(),
            auth_required: String::new(),
            protocol: "tcp".into(),
            external_port: String::new(),
            service_name: String::new(),
            csrf: String::new(),
        }
    }
}

/// The resources form (also what was typed).
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct ResourcesForm {
    cores: String,
    memory: String,
}

#[derive(Template)]
#[template(path = "container.html")]
pub(crate) struct ContainerPage {
    pub title: String,
    pub nav: Option<Nav>,
    pub script: bool,
    pub notice: Option<String>,
    pub problems: Problems,
    pub csrf: String,
    pub c: siteward_store::Container,
    pub live: Option<String>,
    pub dns_name: String,
    pub address: String,
    pub node: String,
    pub template: String,
    pub created: String,
    pub services: Vec<ServiceRow>,
    pub domains: Vec<(String, String)>,
    pub svc: ServiceForm,
    pub form: ResourcesForm,
}

/// What a container page shows besides the container itself.
struct Shown {
    notice: Option<String>,
    problems: Problems,
    status: StatusCode,
    svc: ServiceForm,
    form: ResourcesForm,
}

impl Default for Shown {
    fn default() -> Self {
        Self {
            notice: None,
            problems: Problems::default(),
            status: StatusCode::OK,
            svc: ServiceForm::default(),
            form: ResourcesForm::default(),
        }
    }
}

async fn container_page(s: &AdminState, who: &Signed, id: ContainerId, shown: Shown) -> Response {
    let c = match s.store.container(id, who.principal.owner_filter()).await {
        Ok(c) => c,
        Err(siteward_store::StoreError::NotFound { .. }) => return not_found(Some(who)),
        Err(e) => return server_error(who, &ApiError::from(e)),
    };
    let live = s.jobs.live_status(&c).await.map(|l| l.status);
    let services = s.store.list_services(c.id).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "listing services failed");
        Vec::new()
    });
    let snap = s.store.snapshot();
    let site = snap.naming.sites.get(&c.site_id);
    let domain = site.map(|s| s.site.internal_domain.as_str()).unwrap_or("");
    let node = site
        .and_then(|s| s.nodes.iter().find(|n| n.id == c.node_id))
        .map(|n| n.name.clone())
        .unwrap_or_default();
    let domains: BTreeMap<i64, String> = snap
        .naming
        .external_domains
        .iter()
        .map(|d| (d.id.0, d.domain.clone()))
        .collect();
    let edge = edge_host(&s.public_url);
    let services = services
        .into_iter()
        .map(|v| {
            let (text, url) = match v.kind {
                ServiceKind::Http => {
                    let label = v.external_hostname.clone().unwrap_or_default();
                    let host = match v.external_domain_id.and_then(|d| domains.get(&d.0)) {
                        Some(d) => format!("{label}.{d}"),
                        None => label,
                    };
                    (host.clone(), Some(format!("https://{host}/")))
                }
                ServiceKind::Transport => {
                    let l = transport_link(
                        v.protocol.map(|p| p.as_str()).unwrap_or("tcp"),
                        v.container_port,
                        v.external_port.unwrap_or(0),
                        &edge,
                    );
                    (l.text, None)
                }
                ServiceKind::Dns => (
                    format!(
                        "{}.{} SRV → {}:{}",
                        v.service_name.clone().unwrap_or_default(),
                        domain,
                        c.hostname,
                        v.container_port
                    ),
                    None,
                ),
            };
            ServiceRow {
                id: v.id.0,
                kind: v.kind.as_str(),
                text,
                url,
                port: v.container_port,
            }
        })
        .collect();
    let page = ContainerPage {
        title: c.hostname.clone(),
        nav: who.nav("containers"),
        script: false,
        notice: shown.notice,
        problems: shown.problems,
        csrf: who.csrf.clone(),
        live,
        dns_name: format!("{}.{domain}", c.hostname),
        address: c
            .ipv4_address
            .map(|a| a.to_string())
            .unwrap_or_else(|| "none".into()),
        node,
        template: c.template.clone().unwrap_or_else(|| "unknown".into()),
        created: super::when(&c.created_at),
        services,
        domains: domains
            .into_iter()
            .map(|(id, d)| (id.to_string(), d))
            .collect(),
        svc: shown.svc,
        form: shown.form,
        c,
    };
    render(shown.status, &page)
}

/// 500 with the layout.
fn server_error(who: &Signed, e: &ApiError) -> Response {
    tracing::error!(error = %e.message, "a console page failed");
    let page = super::NotFound {
        title: "Server error",
        nav: who.nav(""),
        script: false,
    };
    render(StatusCode::INTERNAL_SERVER_ERROR, &page)
}

/// `GET /containers/{id}`.
pub(crate) async fn show(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<ContainerId>,
) -> Response {
    let who = match signed(&s, &headers, peer, &format!("/containers/{}", id.0)).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    container_page(&s, &who, id, Shown::default()).await
}

/// The power and resources forms.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct ActionForm {
    action: String,
    cores: String,
    memory: String,
    csrf: String,
}

/// An optional number field: empty is `None`, anything else must parse.
pub(crate) fn number<T: std::str::FromStr>(field: &str, text: &str) -> Result<Option<T>, ApiError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    t.parse()
        .map(Some)
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a whole number")))
}

/// `POST /containers/{id}/actions`: start, stop, shutdown, restart or reconfigure; to the job.
pub(crate) async fn action(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<ContainerId>,
    Form(f): Form<ActionForm>,
) -> Response {
    let who = match posted(
        &s,
        &headers,
        peer,
        &format!("/containers/{}", id.0),
        &f.csrf,
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let op = match f.action.as_str() {
        "start" => Ok(Lifecycle::Start),
        "stop" => Ok(Lifecycle::Stop),
        "shutdown" => Ok(Lifecycle::Shutdown),
        "restart" => Ok(Lifecycle::Restart),
        "reconfigure" => number("cores", &f.cores).and_then(|cores| {
            Ok(Lifecycle::Reconfigure {
                cores,
                memory: number("memory", &f.memory)?,
            })
        }),
        _ => Err(ApiError::invalid("action", "unknown action")),
    };
    let done = match op {
        Ok(op) => api::act(&s, &who.principal, id, op).await,
        Err(e) => Err(e),
    };
    match done {
        Ok(job) => see_other(&format!("/jobs/{}", job.0), vec![]),
        Err(e) => {
            let status = e.status;
            let shown = Shown {
                problems: Problems::from_api(e, &["cores", "memory"]),
                status,
                form: ResourcesForm {
                    cores: f.cores,
                    memory: f.memory,
                },
                ..Shown::default()
            };
            container_page(&s, &who, id, shown).await
        }
    }
}

/// The delete form.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct DeleteForm {
    confirm: String,
    csrf: String,
}

/// `POST /containers/{id}/delete`: only with the hostname typed; to the job, or to the list
/// when only the record went.
pub(crate) async fn delete(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<ContainerId>,
    Form(f): Form<DeleteForm>,
) -> Response {
    let who = match posted(
        &s,
        &headers,
        peer,
        &format!("/containers/{}", id.0),
        &f.csrf,
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let hostname = match s.store.container(id, who.principal.owner_filter()).await {
        Ok(c) => c.hostname,
        Err(_) => return not_found(Some(&who)),
    };
    if f.confirm.trim() != hostname {
        let mut problems = Problems::default();
        problems.fields.insert(
            "confirm".into(),
            format!("Type {hostname} exactly to delete this container."),
        );
        let shown = Shown {
            problems,
            status: StatusCode::UNPROCESSABLE_ENTITY,
            ..Shown::default()
        };
        return container_page(&s, &who, id, shown).await;
    }
    match api::delete(&s, &who.principal, id).await {
        Ok(Deletion::Job(job)) => see_other(&format!("/jobs/{}", job.0), vec![]),
        Ok(Deletion::RecordOnly) => see_other(
            &format!(
                "/?deleted={}",
                percent_encoding::utf8_percent_encode(
                    &hostname,
                    percent_encoding::NON_ALPHANUMERIC
                )
            ),
            vec![],
        ),
        Err(e) => {
            let status = e.status;
            let shown = Shown {
                problems: Problems::from_api(e, &[]),
                status,
                ..Shown::default()
            };
            container_page(&s, &who, id, shown).await
        }
    }
}

/// The form's fields as the API's request; a field that is not a number is the API's 422.
fn service_request(f: &ServiceForm) -> Result<CreateService, ApiError> {
    let port = number::<i32>("container_port", &f.container_port)?
        .ok_or_else(|| ApiError::invalid("container_port", "give the port on the container"))?;
    Ok(match f.kind.as_str() {
        "http" => CreateService::Http {
            container_port: port,
            external_hostname: f.external_hostname.trim().to_owned(),
            external_domain_id: number("external_domain_id", &f.external_domain_id)?
                .map(ExternalDomainId)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "external_domain_id",
                        "choose a domain (an administrator adds them)",
                    )
                })?,
            backend_protocol: None,
            auth_required: !f.auth_required.is_empty(),
        },
        "transport" => CreateService::Transport {
            container_port: port,
            protocol: f.protocol.clone(),
            external_port: number("external_port", &f.external_port)?,
            use_tls: false,
        },
        "dns" => CreateService::Dns {
            container_port: port,
            service_name: f.service_name.trim().to_owned(),
        },
        _ => return Err(ApiError::invalid("type", "choose a kind of service")),
    })
}

const SERVICE_FIELDS: &[&str] = &[
    "container_port",
    "external_hostname",
    "external_domain_id",
    "protocol",
    "external_port",
    "service_name",
];

/// `POST /containers/{id}/services`.
pub(crate) async fn add_service(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<ContainerId>,
    Form(f): Form<ServiceForm>,
) -> Response {
    let who = match posted(
        &s,
        &headers,
        peer,
        &format!("/containers/{}", id.0),
        &f.csrf,
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let done = match service_request(&f) {
        Ok(req) => crate::service::services::create(&s, &who.principal, id, req).await,
        Err(e) => Err(e),
    };
    match done {
        Ok(_) => {
            let shown = Shown {
                notice: Some("Service added.".into()),
                ..Shown::default()
            };
            container_page(&s, &who, id, shown).await
        }
        Err(e) => {
            let status = e.status;
            let shown = Shown {
                problems: Problems::from_api(e, SERVICE_FIELDS),
                status,
                svc: f,
                ..Shown::default()
            };
            container_page(&s, &who, id, shown).await
        }
    }
}

/// A form with only its token.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct TokenForm {
    pub(crate) csrf: String,
}

/// `POST /containers/{id}/services/{service_id}/delete`.
pub(crate) async fn remove_service(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path((id, sid)): Path<(ContainerId, ServiceId)>,
    Form(f): Form<TokenForm>,
) -> Response {
    let who = match posted(
        &s,
        &headers,
        peer,
        &format!("/containers/{}", id.0),
        &f.csrf,
    )
    .await
    {
        Ok(w) => w,
        Err(r) => return r,
    };
    let shown = match crate::service::services::delete(&s, &who.principal, id, sid).await {
        Ok(()) => Shown {
            notice: Some("Service removed.".into()),
            ..Shown::default()
        },
        Err(e) => Shown {
            status: e.status,
            problems: Problems::from_api(e, &[]),
            ..Shown::default()
        },
    };
    container_page(&s, &who, id, shown).await
}
