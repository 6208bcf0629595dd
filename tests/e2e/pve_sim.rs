//! A Proxmox VE API simulator for tests: the real paths under `/api2/json`, the `{"data": ...}`
//! envelope, PVE's error forms (status reason, `errors` per parameter), API-token and ticket
//! authentication with the CSRF check on writes, UPIDs in the real format, tasks that take a
//! configurable time and can be made to fail, and `nextid` that can be made to race.
//! Storages with per-node volumes (`GET /nodes/{node}/storage/{storage}/content`), template
//! containers (`template: 1`), and PVE's parameter schema: a key the API does not define (such
//! as `lxc.environment`) is refused with `400 Parameter verification failed.`, as PVE does.
//!
//! Reference: the PVE API viewer (pve-docs api-viewer) for the endpoints siteward calls, and
//! pve-container (`PVE::LXC::Config` `$confdesc`, `PVE::API2::LXC`) and pve-storage
//! (`PVE::API2::Storage::Content`, `check_volume_access`) for parameters and errors.
#![allow(dead_code, clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// One simulated container.
#[derive(Debug, Clone)]
pub struct SimContainer {
    pub vmid: u32,
    pub node: String,
    pub hostname: String,
    pub status: &'static str,
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Task {
    upid: String,
    node: String,
    kind: String,
    id: String,
    user: String,
    started: Instant,
    duration: Duration,
    /// `OK` or the error text.
    exit: String,
    log: Vec<String>,
    /// Applied when the task finishes successfully.
    effect: Option<Effect>,
    /// Applied when it fails.
    rollback: Option<Effect>,
    done: bool,
}

#[derive(Debug, Clone)]
enum Effect {
    Create(SimContainer),
    SetStatus(u32, &'static str),
    Destroy(u32),
}

/// A storage of `storage.cfg`: the content types it holds.
#[derive(Debug, Clone)]
pub struct SimStorage {
    pub content: Vec<&'static str>,
}

/// A volume on one node's copy of a storage (`local` is per node).
#[derive(Debug, Clone)]
pub struct SimVolume {
    pub node: String,
    /// `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`.
    pub volid: String,
    /// `vztmpl`, `backup`, `iso`, ...
    pub content: &'static str,
    pub size: u64,
}

/// The CT template every simulated node has on `local`.
pub const DEBIAN_TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

/// Knobs and state.
#[derive(Debug, Default)]
pub struct SimState {
    pub nodes: Vec<String>,
    pub containers: BTreeMap<u32, SimContainer>,
    /// `storage.cfg`: id → storage.
    pub storages: BTreeMap<String, SimStorage>,
    /// Volumes, per node.
    pub volumes: Vec<SimVolume>,
    /// Answer like PVE 9.0 and older (pve-container before 6.0.15): no `env` option.
    pub without_env_option: bool,
    tasks: HashMap<String, Task>,
    /// How long each task runs.
    pub task_duration: Duration,
    /// Task type (`vzcreate`, `vzstart`, `vzclone`, `vzdestroy`, `vzstop`, `vzshutdown`) → error
    /// the task ends with.
    pub fail_tasks: HashMap<String, String>,
    /// Requests answered with 500 before the real answer (to exercise retries).
    pub transient_500s: u32,
    /// `nextid` hands out an id that is already taken this many times.
    pub nextid_races: u32,
    /// Valid API tokens: `user@realm!id` → secret.
    pub tokens: HashMap<String, String>,
    /// Valid passwords: `user@realm` → password.
    pub passwords: HashMap<String, String>,
    tickets: HashMap<String, (String, String)>,
    pid: u32,
    /// Every request: `METHOD path`.
    pub requests: Vec<String>,
}

/// A running simulator.
pub struct PveSim {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<SimState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PveSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PveSim {
    /// Starts on a loopback port with nodes `nodes` and the API token `root@pam!siteward`.
    pub async fn start(nodes: &[&str]) -> std::io::Result<Self> {
        let mut state = SimState {
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            task_duration: Duration::from_millis(50),
            pid: 1000,
            ..Default::default()
        };
        state.tokens.insert(
            "root@pam!siteward".into(),
            "4b1d6e0e-0000-4000-8000-000000000001".into(),
        );
        state
            .passwords
            .insert("root@pam".into(), "pve-password".into());
        // A fresh PVE install: `local` (a directory) and `local-lvm` (LVM-thin).
        state.storages.insert(
            "local".into(),
            SimStorage {
                content: vec!["vztmpl", "iso", "backup", "snippets", "import"],
            },
        );
        state.storages.insert(
            "local-lvm".into(),
            SimStorage {
                content: vec!["rootdir", "images"],
            },
        );
        for n in nodes {
            state.volumes.push(SimVolume {
                node: (*n).to_owned(),
                volid: DEBIAN_TEMPLATE.into(),
                content: "vztmpl",
                size: 126_000_000,
            });
        }
        let state = Arc::new(Mutex::new(state));
        let app = router(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    /// The API base URL, as configured on a node.
    pub fn url(&self) -> String {
        format!("http://{}/api2/json", self.addr)
    }

    /// A container made on `node` by hand (not through siteward): running, with `net0` and,
    /// when given, the `owner-<user>` tag siteward's import reads.
    pub fn hand_made(&self, vmid: u32, node: &str, hostname: &str, net0: &str, owner: &str) {
        self.with(|s| {
            let mut config = BTreeMap::new();
            config.insert("hostname".to_owned(), hostname.to_owned());
            config.insert("net0".to_owned(), net0.to_owned());
            config.insert("tags".to_owned(), format!("owner-{owner}"));
            s.containers.insert(
                vmid,
                SimContainer {
                    vmid,
                    node: node.into(),
                    hostname: hostname.into(),
                    status: "running",
                    config,
                },
            );
        });
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut SimState) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        settle(&mut s);
        f(&mut s)
    }
}

type Shared = Arc<Mutex<SimState>>;

fn router(state: Shared) -> Router {
    Router::new()
        .route("/api2/json/access/ticket", post(ticket))
        .route("/api2/json/cluster/nextid", get(nextid))
        .route("/api2/json/nodes", get(nodes))
        .route("/api2/json/nodes/{node}/lxc", any(lxc_collection))
        .route("/api2/json/nodes/{node}/lxc/{vmid}", any(lxc_item))
        .route("/api2/json/nodes/{node}/lxc/{vmid}/config", any(lxc_config))
        .route("/api2/json/nodes/{node}/lxc/{vmid}/clone", post(lxc_clone))
        .route(
            "/api2/json/nodes/{node}/lxc/{vmid}/interfaces",
            get(lxc_interfaces),
        )
        .route(
            "/api2/json/nodes/{node}/lxc/{vmid}/status/current",
            get(lxc_status),
        )
        .route(
            "/api2/json/nodes/{node}/lxc/{vmid}/status/{action}",
            post(lxc_action),
        )
        .route(
            "/api2/json/nodes/{node}/tasks/{upid}/status",
            get(task_status),
        )
        .route("/api2/json/nodes/{node}/tasks/{upid}/log", get(task_log))
        .route(
            "/api2/json/nodes/{node}/storage/{storage}/content",
            any(storage_content),
        )
        .fallback(|| async { pve_error(StatusCode::NOT_IMPLEMENTED, "Method not implemented") })
        .with_state(state)
}

/// PVE puts the message in the status line's reason and answers `{"data": null}`.
fn pve_error(status: StatusCode, reason: &str) -> Response {
    let mut r = (
        status,
        Json(json!({ "data": null, "message": format!("{reason}\n") })),
    )
        .into_response();
    // hyper cannot set a custom reason phrase; PVE clients read the message from the body too.
    if let Ok(v) = reason.parse() {
        r.headers_mut().insert("x-pve-reason", v);
    }
    r
}

/// PVE's answer to a request its parameter schema refuses.
fn param_errors(errors: Value) -> Response {
    let mut r = (
        StatusCode::BAD_REQUEST,
        Json(json!({ "data": null, "errors": errors, "message": "Parameter verification failed.\n" })),
    )
        .into_response();
    r.headers_mut().insert(
        "x-pve-reason",
        axum::http::HeaderValue::from_static("Parameter verification failed."),
    );
    r
}

/// The container options of pve-container's `$confdesc` that its API accepts
/// (`json_config_properties`: all but `parent` and `snaptime`).
const CT_OPTIONS: &[&str] = &[
    "lock",
    "onboot",
    "startup",
    "template",
    "arch",
    "ostype",
    "console",
    "tty",
    "cores",
    "cpulimit",
    "cpuunits",
    "memory",
    "swap",
    "hostname",
    "description",
    "searchdomain",
    "nameserver",
    "timezone",
    "rootfs",
    "cmode",
    "entrypoint",
    "protection",
    "unprivileged",
    "features",
    "env",
    "hookscript",
    "tags",
    "debug",
];

/// Whether `key` is a container option: a fixed one or `net0`-`net31`, `mp0`-`mp255`,
/// `unused0`-`unused255`, `dev0`-`dev255`.
fn ct_option(key: &str) -> bool {
    if CT_OPTIONS.contains(&key) {
        return true;
    }
    [("net", 32), ("mp", 256), ("unused", 256), ("dev", 256)]
        .iter()
        .any(|(prefix, max)| {
            key.strip_prefix(prefix)
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n < *max && (n == 0 || !key[prefix.len()..].starts_with('0')))
        })
}

/// PVE's schema check of a request: keys it does not define, and the `env` pattern
/// (`(?:\w+=[^\x00-\x08\x0a-\x1F\x7F]*)(?:\0\w+=[^\x00-\x08\x0a-\x1F\x7F]*)*`).
fn schema_errors(
    s: &SimState,
    p: &HashMap<String, String>,
    extra: &[&str],
    options: bool,
) -> serde_json::Map<String, Value> {
    let mut errors = serde_json::Map::new();
    for k in p.keys() {
        let option = options && ct_option(k) && !(s.without_env_option && k == "env");
        if !extra.contains(&k.as_str()) && !option {
            errors.insert(
                k.clone(),
                json!("property is not defined in schema and the schema does not allow additional properties"),
            );
        }
    }
    if let Some(env) = p.get("env").filter(|_| options && !s.without_env_option) {
        let ok = env.split('\0').all(|var| {
            var.split_once('=').is_some_and(|(name, value)| {
                !name.is_empty()
                    && name.chars().all(|c| c.is_alphanumeric() || c == '_')
                    && !value
                        .bytes()
                        .any(|b| b <= 0x08 || (0x0a..=0x1f).contains(&b) || b == 0x7f)
            })
        });
        if !ok {
            errors.insert(
                "env".into(),
                json!("value does not match the regex pattern"),
            );
        }
    }
    errors
}

/// Parameters of `POST /nodes/{node}/lxc` besides the container options.
const CREATE_PARAMS: &[&str] = &[
    "vmid",
    "ostemplate",
    "password",
    "storage",
    "force",
    "restore",
    "unique",
    "pool",
    "ignore-unpack-errors",
    "ssh-public-keys",
    "bwlimit",
    "start",
    "ha-managed",
];
/// Parameters of `PUT /nodes/{node}/lxc/{vmid}/config` besides the container options.
const UPDATE_PARAMS: &[&str] = &["delete", "revert", "digest"];
/// Parameters of `POST /nodes/{node}/lxc/{vmid}/clone`.
const CLONE_PARAMS: &[&str] = &[
    "newid",
    "hostname",
    "description",
    "pool",
    "snapname",
    "storage",
    "full",
    "target",
    "bwlimit",
];
const CONTENT_TYPES: &[&str] = &[
    "rootdir", "images", "vztmpl", "iso", "backup", "snippets", "import",
];

/// The content type of a volume name, as `PVE::Storage::Plugin::parse_volname` has it.
fn volume_type(volname: &str) -> Option<&'static str> {
    let Some((dir, file)) = volname.split_once('/') else {
        // LVM and similar: `vm-105-disk-0`, `base-9000-disk-0`.
        return (volname.starts_with("vm-") || volname.starts_with("base-")).then_some("images");
    };
    if file.is_empty() {
        return None;
    }
    let flat = !file.contains('/');
    match dir {
        "vztmpl" if flat => [".tar", ".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"]
            .iter()
            .any(|e| file.ends_with(e))
            .then_some("vztmpl"),
        "backup" if flat => Some("backup"),
        "iso" if flat => Some("iso"),
        "snippets" if flat => Some("snippets"),
        "import" => Some("import"),
        d if d.parse::<u32>().is_ok() => Some("images"),
        _ => None,
    }
}

/// `ostemplate` at create: `check_volume_access(..., 'vztmpl')` (or `'backup'` on restore).
fn check_ostemplate(
    s: &SimState,
    user: &str,
    ostemplate: &str,
    restore: bool,
) -> Result<(), Response> {
    let want = if restore { "backup" } else { "vztmpl" };
    let Some((sid, volname)) = ostemplate
        .split_once(':')
        .filter(|(sid, _)| !sid.is_empty() && !sid.contains('/'))
    else {
        if user != "root@pam" {
            return Err(pve_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Only root can pass arbitrary filesystem paths.",
            ));
        }
        return Ok(());
    };
    if !s.storages.contains_key(sid) {
        return Err(pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("storage '{sid}' does not exist"),
        ));
    }
    match volume_type(volname) {
        Some(t) if t == want => Ok(()),
        Some(_) => Err(pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("unable to use volume {ostemplate} - content type needs to be '{want}'"),
        )),
        None => Err(pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("unable to parse directory volume name '{volname}'"),
        )),
    }
}

async fn storage_content(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((node, storage)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut s = lock(&state);
    let _user = match enter(
        &mut s,
        &method,
        &format!("/nodes/{node}/storage/{storage}/content"),
        &headers,
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = check_node(&s, &node) {
        return r;
    }
    if method != Method::GET {
        return pve_error(StatusCode::NOT_IMPLEMENTED, "Method not implemented");
    }
    let errors = schema_errors(&s, &q, &["content", "vmid"], false);
    if !errors.is_empty() {
        return param_errors(Value::Object(errors));
    }
    if let Some(ct) = q.get("content") {
        if !CONTENT_TYPES.contains(&ct.as_str()) {
            return param_errors(
                json!({ "content": format!("invalid format - invalid content type '{ct}'") }),
            );
        }
    }
    let Some(cfg) = s.storages.get(&storage) else {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("storage '{storage}' does not exist"),
        );
    };
    // `volume_list`: the asked type (or all), only those the storage is configured for.
    let types: Vec<&str> = CONTENT_TYPES
        .iter()
        .copied()
        .filter(|t| q.get("content").is_none_or(|c| c == t))
        .filter(|t| cfg.content.contains(t))
        .collect();
    let prefix = format!("{storage}:");
    let mut list: Vec<&SimVolume> = s
        .volumes
        .iter()
        .filter(|v| v.node == node && v.volid.starts_with(&prefix) && types.contains(&v.content))
        .collect();
    list.sort_by_key(|v| v.volid.to_lowercase());
    let items: Vec<Value> = list
        .into_iter()
        .map(|v| {
            let format = if v.content == "vztmpl" {
                v.volid
                    .rsplit('.')
                    .next()
                    .map(|ext| if ext == "tar" { "tar".to_owned() } else { format!("t{ext}") })
                    .unwrap_or_default()
            } else {
                "raw".to_owned()
            };
            json!({ "volid": v.volid, "content": v.content, "format": format, "size": v.size, "ctime": 1_735_689_600 })
        })
        .collect();
    data(Value::Array(items))
}

fn data(v: Value) -> Response {
    Json(json!({ "data": v })).into_response()
}

/// Form or JSON bodies, as PVE accepts both.
fn params(headers: &HeaderMap, body: &Bytes) -> HashMap<String, String> {
    let json_body = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if json_body {
        serde_json::from_slice::<serde_json::Map<String, Value>>(body)
            .map(|m| {
                m.into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            v.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        url::form_urlencoded::parse(body).into_owned().collect()
    }
}

/// Checks authentication; writes with a ticket need the CSRF token.
fn authenticate(
    s: &mut SimState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<String, Response> {
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        if let Some(rest) = auth.strip_prefix("PVEAPIToken=") {
            if let Some((id, secret)) = rest.split_once('=') {
                if s.tokens.get(id).is_some_and(|s| s == secret) {
                    return Ok(id.to_owned());
                }
            }
        }
        return Err(pve_error(
            StatusCode::UNAUTHORIZED,
            "authentication failure",
        ));
    }
    let ticket = headers
        .get("cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("PVEAuthCookie="))
        })
        .map(str::to_owned);
    let Some(ticket) = ticket else {
        return Err(pve_error(StatusCode::UNAUTHORIZED, "No ticket"));
    };
    let Some((user, csrf)) = s.tickets.get(&ticket).cloned() else {
        return Err(pve_error(StatusCode::UNAUTHORIZED, "invalid PVE ticket"));
    };
    if method != Method::GET {
        let sent = headers
            .get("csrfpreventiontoken")
            .and_then(|v| v.to_str().ok());
        if sent != Some(csrf.as_str()) {
            return Err(pve_error(
                StatusCode::UNAUTHORIZED,
                "Permission check failed (invalid csrf token)",
            ));
        }
    }
    Ok(user)
}

/// Finishes tasks whose time has come and applies their effects.
fn settle(s: &mut SimState) {
    let now = Instant::now();
    let mut effects = Vec::new();
    for t in s.tasks.values_mut() {
        if !t.done && now.duration_since(t.started) >= t.duration {
            t.done = true;
            if t.exit == "OK" {
                t.log.push("TASK OK".into());
                if let Some(e) = t.effect.take() {
                    effects.push(e);
                }
            } else {
                t.log.push(format!("TASK ERROR: {}", t.exit));
                if let Some(e) = t.rollback.take() {
                    effects.push(e);
                }
            }
        }
    }
    for e in effects {
        match e {
            Effect::Create(mut c) => {
                c.config.remove("lock");
                s.containers.insert(c.vmid, c);
            }
            Effect::SetStatus(vmid, status) => {
                if let Some(c) = s.containers.get_mut(&vmid) {
                    c.status = status;
                }
            }
            Effect::Destroy(vmid) => {
                s.containers.remove(&vmid);
            }
        }
    }
}

/// Starts a task; returns its UPID.
fn spawn_task(
    s: &mut SimState,
    node: &str,
    kind: &str,
    id: &str,
    user: &str,
    effect: Option<Effect>,
) -> String {
    s.pid += 1;
    let starttime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let upid = format!(
        "UPID:{node}:{:08X}:{:08X}:{:08X}:{kind}:{id}:{user}:",
        s.pid,
        s.pid * 7,
        starttime
    );
    let exit = s
        .fail_tasks
        .get(kind)
        .cloned()
        .unwrap_or_else(|| "OK".into());
    s.tasks.insert(
        upid.clone(),
        Task {
            upid: upid.clone(),
            node: node.to_owned(),
            kind: kind.to_owned(),
            id: id.to_owned(),
            user: user.to_owned(),
            started: Instant::now(),
            duration: s.task_duration,
            exit,
            log: vec![format!("starting task {kind} for {id}")],
            effect,
            rollback: None,
            done: false,
        },
    );
    upid
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, SimState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Common prologue: settle tasks, record the request, maybe fail transiently, authenticate.
fn enter(
    s: &mut SimState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<String, Response> {
    settle(s);
    s.requests.push(format!("{method} {path}"));
    if s.transient_500s > 0 {
        s.transient_500s -= 1;
        return Err(pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "temporary failure (simulated)",
        ));
    }
    authenticate(s, method, headers)
}

async fn ticket(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let p = params(&headers, &body);
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.requests.push("POST /access/ticket".into());
    let (Some(user), Some(pw)) = (p.get("username"), p.get("password")) else {
        return param_errors(json!({ "username": "property is missing and it is not optional" }));
    };
    if s.passwords.get(user) != Some(pw) {
        return pve_error(StatusCode::UNAUTHORIZED, "authentication failure");
    }
    let ticket = format!("PVE:{user}:{:08X}::{}", s.tickets.len() + 1, "c2ltdWxhdGVk");
    let csrf = format!("{:08X}:{}", s.tickets.len() + 1, "Y3NyZg");
    s.tickets
        .insert(ticket.clone(), (user.clone(), csrf.clone()));
    data(json!({ "ticket": ticket, "CSRFPreventionToken": csrf, "username": user, "cap": {} }))
}

async fn nextid(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut s = lock(&state);
    let _user = match enter(&mut s, &method, "/cluster/nextid", &headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(v) = q.get("vmid") {
        let Ok(v) = v.parse::<u32>() else {
            return param_errors(json!({ "vmid": "type check ('integer') failed" }));
        };
        if s.containers.contains_key(&v) {
            return param_errors(json!({ "vmid": format!("VM {v} already exists") }));
        }
        return data(json!(v.to_string()));
    }
    let mut id = 100;
    while s.containers.contains_key(&id) {
        id += 1;
    }
    if s.nextid_races > 0 {
        s.nextid_races -= 1;
        // Hand out an id another client is about to take: the create will fail.
        let node = s.nodes.first().cloned().unwrap_or_default();
        s.containers.insert(
            id,
            SimContainer {
                vmid: id,
                node,
                hostname: format!("racer{id}"),
                status: "stopped",
                config: BTreeMap::new(),
            },
        );
    }
    data(json!(id.to_string()))
}

async fn nodes(State(state): State<Shared>, method: Method, headers: HeaderMap) -> Response {
    let mut s = lock(&state);
    let _user = match enter(&mut s, &method, "/nodes", &headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    data(Value::Array(
        s.nodes
            .iter()
            .map(|n| json!({ "node": n, "status": "online", "type": "node" }))
            .collect(),
    ))
}

fn check_node(s: &SimState, node: &str) -> Result<(), Response> {
    if s.nodes.iter().any(|n| n == node) {
        Ok(())
    } else {
        Err(pve_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known")))
    }
}

async fn lxc_collection(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(node): Path<String>,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    let user = match enter(&mut s, &method, &format!("/nodes/{node}/lxc"), &headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Err(r) = check_node(&s, &node) {
        return r;
    }
    if method == Method::GET {
        let list: Vec<Value> = s
            .containers
            .values()
            .filter(|c| c.node == node)
            .map(|c| {
                let mut v = json!({ "vmid": c.vmid, "name": c.hostname, "status": c.status, "type": "lxc", "tags": c.config.get("tags") });
                // `vmstatus` marks templates.
                if c.config.get("template").is_some_and(|t| t == "1") {
                    v["template"] = json!(1);
                }
                v
            })
            .collect();
        return data(Value::Array(list));
    }
    if method != Method::POST {
        return pve_error(StatusCode::NOT_IMPLEMENTED, "Method not implemented");
    }
    let p = params(&headers, &body);
    let mut errors = schema_errors(&s, &p, CREATE_PARAMS, true);
    let vmid = p.get("vmid").and_then(|v| v.parse::<u32>().ok());
    if vmid.is_none() {
        errors.insert(
            "vmid".into(),
            json!("property is missing and it is not optional"),
        );
    }
    if !p.contains_key("ostemplate") {
        errors.insert(
            "ostemplate".into(),
            json!("property is missing and it is not optional"),
        );
    }
    if let Some(h) = p.get("hostname") {
        if h.is_empty()
            || h.len() > 63
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            errors.insert(
                "hostname".into(),
                json!("value does not look like a valid DNS name"),
            );
        }
    }
    if let Some(net) = p.get("net0") {
        if !net.contains("name=") || !net.contains("bridge=") {
            errors.insert(
                "net0".into(),
                json!("invalid format - missing key in comma-separated list property"),
            );
        }
    }
    if !errors.is_empty() {
        return param_errors(Value::Object(errors));
    }
    let vmid = vmid.unwrap_or_default();
    if s.containers.contains_key(&vmid) {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("CT {vmid} already exists on node '{node}'"),
        );
    }
    let restore = p.get("restore").is_some_and(|v| v == "1");
    let ostemplate = p.get("ostemplate").map(String::as_str).unwrap_or_default();
    if let Err(r) = check_ostemplate(&s, &user, ostemplate, restore) {
        return r;
    }
    let hostname = p
        .get("hostname")
        .cloned()
        .unwrap_or_else(|| format!("CT{vmid}"));
    let config: BTreeMap<String, String> = p.into_iter().collect();
    let c = SimContainer {
        vmid,
        node: node.clone(),
        hostname,
        status: "stopped",
        config,
    };
    // Like PVE, the VMID is taken (config file with `lock: create`) before the worker runs.
    let mut locked = c.clone();
    locked.config.insert("lock".into(), "create".into());
    s.containers.insert(vmid, locked);
    let upid = spawn_task(
        &mut s,
        &node,
        "vzcreate",
        &vmid.to_string(),
        &user,
        Some(Effect::Create(c)),
    );
    if let Some(t) = s.tasks.get_mut(&upid) {
        t.rollback = Some(Effect::Destroy(vmid));
    }
    data(json!(upid))
}

fn find(s: &SimState, node: &str, vmid: &str) -> Result<u32, Response> {
    check_node(s, node)?;
    let id: u32 = vmid
        .parse()
        .map_err(|_| param_errors(json!({ "vmid": "type check ('integer') failed" })))?;
    match s.containers.get(&id) {
        Some(c) if c.node == node => Ok(id),
        _ => Err(pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("Configuration file 'nodes/{node}/lxc/{id}.conf' does not exist"),
        )),
    }
}

async fn lxc_item(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((node, vmid)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut s = lock(&state);
    let user = match enter(
        &mut s,
        &method,
        &format!("/nodes/{node}/lxc/{vmid}"),
        &headers,
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = match find(&s, &node, &vmid) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match method {
        Method::GET => data(json!([{ "subdir": "config" }, { "subdir": "status" }])),
        Method::DELETE => {
            if let Some(lock) = s.containers.get(&id).and_then(|c| c.config.get("lock")) {
                return pve_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("CT {id} is locked ({lock})"),
                );
            }
            let running = s.containers.get(&id).is_some_and(|c| c.status == "running");
            if running && q.get("force").map(String::as_str) != Some("1") {
                return pve_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("CT {id} is running - destroy failed"),
                );
            }
            let upid = spawn_task(
                &mut s,
                &node,
                "vzdestroy",
                &id.to_string(),
                &user,
                Some(Effect::Destroy(id)),
            );
            data(json!(upid))
        }
        _ => pve_error(StatusCode::NOT_IMPLEMENTED, "Method not implemented"),
    }
}

async fn lxc_config(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((node, vmid)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    let _user = match enter(
        &mut s,
        &method,
        &format!("/nodes/{node}/lxc/{vmid}/config"),
        &headers,
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = match find(&s, &node, &vmid) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match method {
        Method::GET => {
            let c = s.containers.get(&id).cloned();
            data(c.map(|c| json!(c.config)).unwrap_or(Value::Null))
        }
        Method::PUT => {
            let p = params(&headers, &body);
            let errors = schema_errors(&s, &p, UPDATE_PARAMS, true);
            if !errors.is_empty() {
                return param_errors(Value::Object(errors));
            }
            if let Some(c) = s.containers.get_mut(&id) {
                for (k, v) in p {
                    if k == "hostname" {
                        c.hostname = v.clone();
                    }
                    c.config.insert(k, v);
                }
            }
            data(Value::Null)
        }
        _ => pve_error(StatusCode::NOT_IMPLEMENTED, "Method not implemented"),
    }
}

async fn lxc_clone(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((node, vmid)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut s = lock(&state);
    let user = match enter(
        &mut s,
        &method,
        &format!("/nodes/{node}/lxc/{vmid}/clone"),
        &headers,
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = match find(&s, &node, &vmid) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let p = params(&headers, &body);
    let errors = schema_errors(&s, &p, CLONE_PARAMS, false);
    if !errors.is_empty() {
        return param_errors(Value::Object(errors));
    }
    let Some(newid) = p.get("newid").and_then(|v| v.parse::<u32>().ok()) else {
        return param_errors(json!({ "newid": "property is missing and it is not optional" }));
    };
    if s.containers.contains_key(&newid) {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("CT {newid} already exists on node '{node}'"),
        );
    }
    let mut c = s
        .containers
        .get(&id)
        .cloned()
        .unwrap_or_else(|| SimContainer {
            vmid: id,
            node: node.clone(),
            hostname: String::new(),
            status: "stopped",
            config: BTreeMap::new(),
        });
    let source_is_template = c.config.get("template").is_some_and(|t| t == "1");
    let full = p
        .get("full")
        .map(|v| v == "1")
        .unwrap_or(!source_is_template);
    if full && c.status == "running" && !p.contains_key("snapname") {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Full clone of a running container is only possible from a snapshot",
        );
    }
    c.vmid = newid;
    c.status = "stopped";
    // Like PVE: the clone is not a template, and its net0 gets a new MAC.
    c.config.remove("template");
    if let Some(net0) = c.config.get_mut("net0") {
        let mac = format!(
            "BC:24:11:{:02X}:{:02X}:{:02X}",
            (newid >> 16) & 0xff,
            (newid >> 8) & 0xff,
            newid & 0xff
        );
        *net0 = net0
            .split(',')
            .map(|kv| {
                if kv.starts_with("hwaddr=") {
                    format!("hwaddr={mac}")
                } else {
                    kv.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(",");
    }
    if let Some(h) = p.get("hostname") {
        c.hostname = h.clone();
    }
    let mut locked = c.clone();
    locked.config.insert("lock".into(), "create".into());
    s.containers.insert(newid, locked);
    let upid = spawn_task(
        &mut s,
        &node,
        "vzclone",
        &id.to_string(),
        &user,
        Some(Effect::Create(c)),
    );
    if let Some(t) = s.tasks.get_mut(&upid) {
        t.rollback = Some(Effect::Destroy(newid));
    }
    data(json!(upid))
}

async fn lxc_interfaces(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((node, vmid)): Path<(String, String)>,
) -> Response {
    let mut s = lock(&state);
    let _user = match enter(
        &mut s,
        &method,
        &format!("/nodes/{node}/lxc/{vmid}/interfaces"),
        &headers,
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = match find(&s, &node, &vmid) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(c) = s.containers.get(&id) else {
        return pve_error(StatusCode::INTERNAL_SERVER_ERROR, "gone");
    };
    if c.status != "running" {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("CT {id} not running"),
        );
    }
    let net0 = c.config.get("net0").cloned().unwrap_or_default();
    let field = |key: &str| {
        net0.split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_owned()
    };
    data(json!([
        { "name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8" },
        { "name": "eth0", "hwaddr": field("hwaddr").to_ascii_lowercase(), "inet": field("ip") }
    ]))
}

async fn lxc_status(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((node, vmid)): Path<(String, String)>,
) -> Response {
    let mut s = lock(&state);
    let _user = match enter(
        &mut s,
        &method,
        &format!("/nodes/{node}/lxc/{vmid}/status/current"),
        &headers,
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = match find(&s, &node, &vmid) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(c) = s.containers.get(&id) else {
        return pve_error(StatusCode::INTERNAL_SERVER_ERROR, "gone");
    };
    let mut status = json!({ "vmid": id, "name": c.hostname, "status": c.status, "type": "lxc", "uptime": if c.status == "running" { 5 } else { 0 },
             "cpus": c.config.get("cores").and_then(|v| v.parse::<u32>().ok()).unwrap_or(1),
             "maxmem": c.config.get("memory").and_then(|v| v.parse::<u64>().ok()).unwrap_or(512) * 1024 * 1024 });
    // Like PVE, `lock` appears only while a task holds the container.
    if let Some(lock) = c.config.get("lock") {
        status["lock"] = json!(lock);
    }
    data(status)
}

async fn lxc_action(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((node, vmid, action)): Path<(String, String, String)>,
) -> Response {
    let mut s = lock(&state);
    let user = match enter(
        &mut s,
        &method,
        &format!("/nodes/{node}/lxc/{vmid}/status/{action}"),
        &headers,
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = match find(&s, &node, &vmid) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if let Some(lock) = s.containers.get(&id).and_then(|c| c.config.get("lock")) {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("CT {id} is locked ({lock})"),
        );
    }
    let running = s.containers.get(&id).is_some_and(|c| c.status == "running");
    let (kind, effect) = match action.as_str() {
        "start" if running => {
            return pve_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("CT {id} already running"),
            )
        }
        "start" => ("vzstart", Effect::SetStatus(id, "running")),
        "stop" => ("vzstop", Effect::SetStatus(id, "stopped")),
        "shutdown" if !running => {
            return pve_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("CT {id} not running"),
            )
        }
        "shutdown" => ("vzshutdown", Effect::SetStatus(id, "stopped")),
        "reboot" if !running => {
            return pve_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("CT {id} not running"),
            )
        }
        "reboot" => ("vzreboot", Effect::SetStatus(id, "running")),
        _ => return pve_error(StatusCode::NOT_IMPLEMENTED, "Method not implemented"),
    };
    let upid = spawn_task(&mut s, &node, kind, &id.to_string(), &user, Some(effect));
    data(json!(upid))
}

async fn task_status(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((node, upid)): Path<(String, String)>,
) -> Response {
    let mut s = lock(&state);
    let _user = match enter(
        &mut s,
        &method,
        &format!("/nodes/{node}/tasks/{upid}/status"),
        &headers,
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(t) = s.tasks.get(&upid) else {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("unable to parse worker upid '{upid}'"),
        );
    };
    let mut v = json!({ "upid": t.upid, "node": t.node, "type": t.kind, "id": t.id, "user": t.user,
                        "status": if t.done { "stopped" } else { "running" }, "pid": 0, "pstart": 0, "starttime": 0 });
    if t.done {
        v["exitstatus"] = json!(t.exit);
    }
    data(v)
}

async fn task_log(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((node, upid)): Path<(String, String)>,
) -> Response {
    let mut s = lock(&state);
    let _user = match enter(
        &mut s,
        &method,
        &format!("/nodes/{node}/tasks/{upid}/log"),
        &headers,
    ) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(t) = s.tasks.get(&upid) else {
        return pve_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("unable to parse worker upid '{upid}'"),
        );
    };
    let lines: Vec<Value> = t
        .log
        .iter()
        .enumerate()
        .map(|(i, l)| json!({ "n": i + 1, "t": l }))
        .collect();
    let total = lines.len();
    let mut r = data(Value::Array(lines));
    if let Ok(v) = total.to_string().parse() {
        r.headers_mut().insert("x-total", v);
    }
    r
}
