//! Proxmox VE API client: API-token or ticket authentication (ticket renewed before its 2 h
//! expiry, CSRF token on writes), the `{"data": ...}` envelope and PVE's error forms mapped into
//! [`PveError`], retries with exponential backoff for network errors and 5xx (never 4xx), and
//! asynchronous tasks followed through their UPID until they stop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

/// Errors of the Proxmox API, in the operator's terms.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PveError {
    /// Credentials refused (401).
    #[error("Proxmox refused the credentials: {0}")]
    Auth(String),
    /// Parameters rejected (400), per parameter.
    #[error("Proxmox rejected the request: {message}")]
    Params {
        /// Summary.
        message: String,
        /// Parameter → reason.
        errors: BTreeMap<String, String>,
    },
    /// Any other error answer (PVE uses 500 for most failures: "CT 100 already exists", ...).
    #[error("Proxmox answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// PVE's message.
        message: String,
    },
    /// The node could not be reached.
    #[error("Proxmox unreachable: {0}")]
    Network(String),
    /// A task ended with an exit status other than OK.
    #[error("Proxmox task {upid} failed: {exit}")]
    Task {
        /// The task.
        upid: String,
        /// Its exit status.
        exit: String,
        /// Its log.
        log: Vec<String>,
    },
    /// A task or state change did not finish in time.
    #[error("Proxmox task {0} did not finish in time")]
    Timeout(String),
    /// An answer we could not read.
    #[error("unexpected answer from Proxmox: {0}")]
    Decode(String),
}

impl PveError {
    /// Whether another try may succeed (network trouble, 5xx).
    fn retryable(&self) -> bool {
        match self {
            PveError::Network(_) => true,
            PveError::Api { status, message } => {
                *status >= 500
                    && !message.contains("already exists")
                    && !message.contains("does not exist")
            }
            _ => false,
        }
    }

    /// The error says the container does not exist on the node (PVE answers 500 with
    /// "Configuration file 'nodes/<node>/lxc/<vmid>.conf' does not exist").
    pub fn ct_missing(&self) -> bool {
        matches!(self, PveError::Api { message, .. } if message.contains("does not exist"))
    }

    /// The error says a VMID is taken.
    pub fn vmid_taken(&self) -> bool {
        match self {
            PveError::Api { message, .. } => message.contains("already exists"),
            PveError::Params { errors, .. } => {
                errors.values().any(|e| e.contains("already exists"))
            }
            _ => false,
        }
    }
}

/// How to authenticate to a node.
#[derive(Clone)]
pub enum PveAuth {
    /// `Authorization: PVEAPIToken=USER@REALM!ID=SECRET`.
    Token {
        /// `user@realm!tokenid`.
        id: String,
        /// The token's secret.
        secret: String,
    },
    /// `POST /access/ticket`, then the ticket cookie and CSRF token.
    Password {
        /// `user@realm`.
        username: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for PveAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PveAuth::Token { id, .. } => write!(f, "Token({id}, ..)"),
            PveAuth::Password { username, .. } => write!(f, "Password({username}, ..)"),
        }
    }
}

#[derive(Debug, Clone)]
struct Ticket {
    ticket: String,
    csrf: String,
    obtained: Instant,
}

/// Tickets live 2 h; renew well before.
const TICKET_RENEW: Duration = Duration::from_secs(90 * 60);

/// A client for one node's API.
#[derive(Debug)]
pub struct PveClient {
    http: reqwest::Client,
    base: String,
    auth: PveAuth,
    ticket: Mutex<Option<Ticket>>,
    /// First retry delay (doubles, capped at 10 s).
    pub retry_base: Duration,
    /// Tries per request.
    pub tries: u32,
}

/// A container's live state.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
pub struct LxcStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// Seconds up.
    #[serde(default)]
    pub uptime: Option<u64>,
    /// CPUs.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    #[serde(default)]
    pub maxmem: Option<u64>,
    /// The container's hostname.
    #[serde(default)]
    pub name: Option<String>,
    /// Set while a task holds the container (`create`, `clone`, `backup`, ...).
    #[serde(default)]
    pub lock: Option<String>,
}

impl PveClient {
    /// A client for `api_url` (e.g. `https://pve1:8006/api2/json`).
    pub fn new(api_url: &str, auth: PveAuth, verify_tls: bool) -> Result<Self, PveError> {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(!verify_tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| PveError::Network(e.to_string()))?;
        Ok(Self {
            http,
            base: api_url.trim_end_matches('/').to_owned(),
            auth,
            ticket: Mutex::new(None),
            retry_base: Duration::from_secs(1),
            tries: 3,
        })
    }

    async fn ticket(&self, force: bool) -> Result<Ticket, PveError> {
        let PveAuth::Password { username, password } = &self.auth else {
            return Err(PveError::Auth("no password configured".into()));
        };
        let mut guard = self.ticket.lock().await;
        if let Some(t) = guard.as_ref() {
            if !force && t.obtained.elapsed() < TICKET_RENEW {
                return Ok(t.clone());
            }
        }
        let resp = self
            .http
            .post(format!("{}/access/ticket", self.base))
            .form(&[
                ("username", username.as_str()),
                ("password", password.as_str()),
            ])
            .send()
            .await
            .map_err(|e| PveError::Network(e.to_string()))?;
        let data = envelope(resp).await?;
        let ticket = Ticket {
            ticket: data["ticket"]
                .as_str()
                .ok_or_else(|| PveError::Decode("ticket missing".into()))?
                .to_owned(),
            csrf: data["CSRFPreventionToken"]
                .as_str()
                .ok_or_else(|| PveError::Decode("CSRFPreventionToken missing".into()))?
                .to_owned(),
            obtained: Instant::now(),
        };
        *guard = Some(ticket.clone());
        Ok(ticket)
    }

    async fn once(
        &self,
        method: &Method,
        path: &str,
        form: &[(&str, String)],
    ) -> Result<Value, PveError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        match &self.auth {
            PveAuth::Token { id, secret } => {
                req = req.header("Authorization", format!("PVEAPIToken={id}={secret}"));
            }
            PveAuth::Password { .. } => {
                let t = self.ticket(false).await?;
                req = req.header("Cookie", format!("PVEAuthCookie={}", t.ticket));
                if method != Method::GET {
                    req = req.header("CSRFPreventionToken", t.csrf);
                }
            }
        }
        if !form.is_empty() {
            if method == Method::GET || method == Method::DELETE {
                req = req.query(form);
            } else {
                req = req.form(form);
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| PveError::Network(e.to_string()))?;
        envelope(resp).await
    }

    /// One API call with retries.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        form: &[(&str, String)],
    ) -> Result<Value, PveError> {
        let mut delay = self.retry_base;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.once(&method, path, form).await;
            match result {
                // An expired ticket: log in again once.
                Err(PveError::Auth(_))
                    if matches!(self.auth, PveAuth::Password { .. }) && attempt == 1 =>
                {
                    self.ticket(true).await?;
                }
                Err(e) if e.retryable() && attempt < self.tries => {
                    tracing::warn!(error = %e, attempt, "Proxmox call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                other => return other,
            }
        }
    }

    /// `GET /cluster/nextid`.
    pub async fn next_id(&self) -> Result<u32, PveError> {
        let v = self.call(Method::GET, "/cluster/nextid", &[]).await?;
        v.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| v.as_u64().and_then(|n| u32::try_from(n).ok()))
            .ok_or_else(|| PveError::Decode(format!("nextid: {v}")))
    }

    /// `POST /nodes/{node}/lxc`; returns the task's UPID.
    pub async fn create_lxc(
        &self,
        node: &str,
        params: &[(&str, String)],
    ) -> Result<String, PveError> {
        upid(
            self.call(Method::POST, &format!("/nodes/{node}/lxc"), params)
                .await?,
        )
    }

    /// `POST /nodes/{node}/lxc/{vmid}/clone`.
    pub async fn clone_lxc(
        &self,
        node: &str,
        template: u32,
        params: &[(&str, String)],
    ) -> Result<String, PveError> {
        upid(
            self.call(
                Method::POST,
                &format!("/nodes/{node}/lxc/{template}/clone"),
                params,
            )
            .await?,
        )
    }

    /// `PUT /nodes/{node}/lxc/{vmid}/config`.
    pub async fn set_config(
        &self,
        node: &str,
        vmid: u32,
        params: &[(&str, String)],
    ) -> Result<(), PveError> {
        self.call(
            Method::PUT,
            &format!("/nodes/{node}/lxc/{vmid}/config"),
            params,
        )
        .await?;
        Ok(())
    }

    /// `POST /nodes/{node}/lxc/{vmid}/status/{action}` (start, stop, shutdown, reboot).
    pub async fn action(&self, node: &str, vmid: u32, action: &str) -> Result<String, PveError> {
        upid(
            self.call(
                Method::POST,
                &format!("/nodes/{node}/lxc/{vmid}/status/{action}"),
                &[],
            )
            .await?,
        )
    }

    /// `GET /nodes/{node}/lxc/{vmid}/status/current`.
    pub async fn status(&self, node: &str, vmid: u32) -> Result<LxcStatus, PveError> {
        let v = self
            .call(
                Method::GET,
                &format!("/nodes/{node}/lxc/{vmid}/status/current"),
                &[],
            )
            .await?;
        serde_json::from_value(v).map_err(|e| PveError::Decode(e.to_string()))
    }

    /// `DELETE /nodes/{node}/lxc/{vmid}?purge=1&force=1`.
    pub async fn destroy(&self, node: &str, vmid: u32) -> Result<String, PveError> {
        upid(
            self.call(
                Method::DELETE,
                &format!("/nodes/{node}/lxc/{vmid}"),
                &[
                    ("purge", "1".into()),
                    ("force", "1".into()),
                    ("destroy-unreferenced-disks", "1".into()),
                ],
            )
            .await?,
        )
    }

    /// `GET /nodes/{node}/lxc`: (vmid, name, status, tags).
    pub async fn list_lxc(&self, node: &str) -> Result<Vec<Value>, PveError> {
        let v = self
            .call(Method::GET, &format!("/nodes/{node}/lxc"), &[])
            .await?;
        v.as_array()
            .cloned()
            .ok_or_else(|| PveError::Decode("lxc list".into()))
    }

    /// `GET /nodes/{node}/lxc/{vmid}/config`.
    pub async fn config(&self, node: &str, vmid: u32) -> Result<Value, PveError> {
        self.call(
            Method::GET,
            &format!("/nodes/{node}/lxc/{vmid}/config"),
            &[],
        )
        .await
    }

    /// Follows a task until it stops; `Ok(log)` when it ended `OK`.
    pub async fn wait_task(&self, upid: &str, timeout: Duration) -> Result<Vec<String>, PveError> {
        let node = upid.split(':').nth(1).unwrap_or_default().to_owned();
        let encoded = encode_upid(upid);
        let deadline = Instant::now() + timeout;
        let mut poll = Duration::from_millis(10);
        loop {
            let v = self
                .call(
                    Method::GET,
                    &format!("/nodes/{node}/tasks/{encoded}/status"),
                    &[],
                )
                .await?;
            if v["status"] == "stopped" {
                let log = self
                    .call(
                        Method::GET,
                        &format!("/nodes/{node}/tasks/{encoded}/log"),
                        &[("limit", "500".into())],
                    )
                    .await
                    .ok()
                    .and_then(|l| l.as_array().cloned())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|l| l["t"].as_str().map(str::to_owned))
                    .collect();
                let exit = v["exitstatus"].as_str().unwrap_or("unknown").to_owned();
                if exit == "OK" {
                    return Ok(log);
                }
                return Err(PveError::Task {
                    upid: upid.to_owned(),
                    exit,
                    log,
                });
            }
            if Instant::now() >= deadline {
                return Err(PveError::Timeout(upid.to_owned()));
            }
            tokio::time::sleep(poll).await;
            // Short tasks are noticed within ~10 ms; long ones are polled every 250 ms.
            poll = poll.mul_f32(1.25).min(Duration::from_millis(250));
        }
    }
}

fn upid(v: Value) -> Result<String, PveError> {
    v.as_str()
        .filter(|s| s.starts_with("UPID:"))
        .map(str::to_owned)
        .ok_or_else(|| PveError::Decode(format!("expected a task id, got {v}")))
}

/// UPIDs contain `:`, `@` and `!`; they go into a path segment percent-encoded.
fn encode_upid(upid: &str) -> String {
    upid.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Unwraps `{"data": ...}` and maps error answers.
async fn envelope(resp: reqwest::Response) -> Result<Value, PveError> {
    let status = resp.status();
    let reason = resp
        .headers()
        .get("x-pve-reason")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| status.canonical_reason().map(str::to_owned))
        .unwrap_or_default();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body.get("data").cloned().unwrap_or(Value::Null));
    }
    let message = body["message"]
        .as_str()
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .unwrap_or(reason);
    match status {
        StatusCode::UNAUTHORIZED => Err(PveError::Auth(message)),
        StatusCode::BAD_REQUEST => {
            let errors: BTreeMap<String, String> = body["errors"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let detail = errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join("; ");
            Err(PveError::Params {
                message: if detail.is_empty() { message } else { detail },
                errors,
            })
        }
        s => Err(PveError::Api {
            status: s.as_u16(),
            message,
        }),
    }
}
