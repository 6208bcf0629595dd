//! A Cloudflare API v4 simulator for the ACME tests: the documented paths under `/client/v4`,
//! the `{success, errors, messages, result, result_info}` envelope, both credential styles
//! (API token as `Authorization: Bearer`, or `X-Auth-Email` + `X-Auth-Key`), Cloudflare's error
//! codes (9109 invalid token, 9103 unknown key/e-mail, 9106 missing headers, 7003 bad object id,
//! 81044 no such record, 81057 identical record, 1004 validation), pagination, and injected
//! 5xx/429 failures. TXT records it holds are published to a running `pebble-challtestsrv`, which
//! Pebble asks, the way Cloudflare's name servers would answer them.

// Handlers answer with a ready Response on either path; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::harness::TestResult;

/// A zone of the simulated account.
#[derive(Debug, Clone)]
pub struct SimZone {
    pub id: String,
    pub name: String,
}

/// A DNS record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SimRecord {
    pub id: String,
    pub zone_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub content: String,
    pub ttl: i64,
}

#[derive(Default)]
struct Inner {
    zones: Vec<SimZone>,
    records: BTreeMap<String, SimRecord>,
    next: u64,
    fail_next: Vec<StatusCode>,
    /// The next create makes its record, then answers 502 (a reply lost on the way).
    lose_next_create: bool,
    /// Creates make their record and never answer (a process killed while it waits).
    hold_creates: bool,
    /// (method path, auth style) of every request.
    log: Vec<(String, String)>,
}

/// The simulator.
#[derive(Clone)]
pub struct CfSim {
    inner: Arc<Mutex<Inner>>,
    token: String,
    email: String,
    key: String,
    challtestsrv: Option<String>,
    http: reqwest::Client,
    pub url: String,
}

fn envelope(status: StatusCode, result: Value, errors: Vec<(i64, &str)>) -> Response {
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|(code, message)| json!({ "code": code, "message": message }))
        .collect();
    (
        status,
        Json(json!({
            "success": errors.is_empty(),
            "errors": errors,
            "messages": [],
            "result": result,
        })),
    )
        .into_response()
}

fn error(status: StatusCode, code: i64, message: &str) -> Response {
    envelope(status, Value::Null, vec![(code, message)])
}

impl CfSim {
    /// Starts the simulator with one account: `token` for Bearer auth, `email` + `key` for the
    /// global key; TXT records go to `challtestsrv` (its management URL) when given.
    pub async fn start(
        zones: &[&str],
        token: &str,
        email: &str,
        key: &str,
        challtestsrv: Option<String>,
    ) -> TestResult<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let mut inner = Inner::default();
        for (i, z) in zones.iter().enumerate() {
            inner.zones.push(SimZone {
                id: format!("{:032x}", 0xc0ffee00 + i as u64),
                name: (*z).to_owned(),
            });
        }
        let sim = CfSim {
            inner: Arc::new(Mutex::new(inner)),
            token: token.into(),
            email: email.into(),
            key: key.into(),
            challtestsrv,
            // A fresh connection per call: pebble-challtestsrv closes idle keep-alive
            // connections, and a request sent on one it just closed fails with a reset.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?,
            url: format!("http://{addr}/client/v4"),
        };
        let app = Router::new()
            .route("/client/v4/user/tokens/verify", get(verify_token))
            .route("/client/v4/zones", get(list_zones))
            .route(
                "/client/v4/zones/{zone}/dns_records",
                get(list_records).post(create_record),
            )
            .route(
                "/client/v4/zones/{zone}/dns_records/{id}",
                delete(delete_record),
            )
            .with_state(sim.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(sim)
    }

    /// Every record held now.
    pub fn records(&self) -> Vec<SimRecord> {
        self.inner
            .lock()
            .map(|i| i.records.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The next requests fail with these statuses, in order.
    pub fn fail_next(&self, statuses: &[StatusCode]) {
        if let Ok(mut i) = self.inner.lock() {
            i.fail_next.extend_from_slice(statuses);
        }
    }

    /// The next record creation succeeds at "Cloudflare" but its answer is a 502, as when an
    /// edge loses the origin's reply.
    pub fn lose_next_create(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.lose_next_create = true;
        }
    }

    /// From now on a record creation makes its record and never answers.
    pub fn hold_creates(&self, hold: bool) {
        if let Ok(mut i) = self.inner.lock() {
            i.hold_creates = hold;
        }
    }

    /// (request, auth style) of every request so far.
    pub fn log(&self) -> Vec<(String, String)> {
        self.inner.lock().map(|i| i.log.clone()).unwrap_or_default()
    }

    /// Adds a record as if someone else had made it (outside the API under test).
    pub async fn add_foreign(
        &self,
        zone: &str,
        kind: &str,
        name: &str,
        content: &str,
    ) -> TestResult {
        let record = {
            let mut i = self.inner.lock().map_err(|_| "poisoned")?;
            let zone_id = i
                .zones
                .iter()
                .find(|z| z.name == zone)
                .map(|z| z.id.clone())
                .ok_or("no such zone")?;
            i.next += 1;
            let r = SimRecord {
                id: format!("{:032x}", i.next),
                zone_id,
                kind: kind.into(),
                name: name.into(),
                content: content.into(),
                ttl: 300,
            };
            i.records.insert(r.id.clone(), r.clone());
            r
        };
        self.publish(&record.name).await
    }

    /// Mirrors the TXT values at `name` into pebble-challtestsrv.
    async fn publish(&self, name: &str) -> TestResult {
        let Some(mgmt) = &self.challtestsrv else {
            return Ok(());
        };
        let values: Vec<String> = self
            .records()
            .into_iter()
            .filter(|r| r.kind == "TXT" && r.name == name)
            .map(|r| r.content.trim_matches('"').to_owned())
            .collect();
        let host = format!("{name}.");
        self.challtestsrv_post(&format!("{mgmt}/clear-txt"), json!({ "host": host }))
            .await?;
        for v in values {
            self.challtestsrv_post(
                &format!("{mgmt}/set-txt"),
                json!({ "host": host, "value": v }),
            )
            .await?;
        }
        Ok(())
    }

    /// One call to pebble-challtestsrv's management API (idempotent), tried again when the
    /// connection itself fails: it has been seen to reset a connection under load.
    async fn challtestsrv_post(&self, url: &str, body: serde_json::Value) -> TestResult {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.http.post(url).json(&body).send().await {
                Ok(res) => {
                    res.error_for_status()?;
                    return Ok(());
                }
                Err(e) if tries < 4 && (e.is_request() || e.is_connect()) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50 * tries)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Checks credentials and injected failures; logs the request.
    fn admit(&self, what: &str, headers: &HeaderMap) -> Result<(), Response> {
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let style;
        let verdict = match (
            header("authorization"),
            header("x-auth-email"),
            header("x-auth-key"),
        ) {
            (Some(auth), _, _) => {
                style = "token";
                match auth.strip_prefix("Bearer ") {
                    Some(t) if t == self.token => Ok(()),
                    Some(_) => Err(error(StatusCode::FORBIDDEN, 9109, "Invalid access token")),
                    None => Err(envelope(
                        StatusCode::BAD_REQUEST,
                        Value::Null,
                        vec![
                            (6003, "Invalid request headers"),
                            (6111, "Invalid format for Authorization header"),
                        ],
                    )),
                }
            }
            (None, Some(email), Some(key)) => {
                style = "global key";
                if email == self.email && key == self.key {
                    Ok(())
                } else {
                    Err(error(
                        StatusCode::FORBIDDEN,
                        9103,
                        "Unknown X-Auth-Key or X-Auth-Email",
                    ))
                }
            }
            (None, None, _) => {
                style = "none";
                Err(error(
                    StatusCode::BAD_REQUEST,
                    9106,
                    "Missing X-Auth-Email header",
                ))
            }
            (None, Some(_), None) => {
                style = "none";
                Err(error(
                    StatusCode::BAD_REQUEST,
                    9107,
                    "Missing X-Auth-Key header",
                ))
            }
        };
        let mut i = self
            .inner
            .lock()
            .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, 1000, "poisoned"))?;
        i.log.push((what.to_owned(), style.to_owned()));
        if !i.fail_next.is_empty() {
            let status = i.fail_next.remove(0);
            let mut res = error(
                status,
                10000 + i64::from(status.as_u16()),
                "injected failure",
            );
            if status == StatusCode::TOO_MANY_REQUESTS {
                res.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("600"));
            }
            return Err(res);
        }
        verdict
    }

    /// [`CfSim::admit`], then the zone `id` names.
    fn admit_zone(&self, what: &str, headers: &HeaderMap, id: &str) -> Result<SimZone, Response> {
        self.admit(what, headers)?;
        self.zone(id)
    }

    fn zone(&self, id: &str) -> Result<SimZone, Response> {
        let valid = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
        let found = self
            .inner
            .lock()
            .ok()
            .and_then(|i| i.zones.iter().find(|z| z.id == id).cloned());
        match found {
            Some(z) if valid => Ok(z),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                7003,
                "Could not route to /zones/dns_records, perhaps your object identifier is invalid?",
            )),
        }
    }
}

fn page_of<T: serde::Serialize>(items: Vec<T>, q: &BTreeMap<String, String>) -> Response {
    let per_page: usize = q
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .clamp(5, 5000);
    let page: usize = q
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let chunk: Vec<T> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut res = envelope(StatusCode::OK, json!(chunk), vec![]);
    let body = json!({
        "success": true, "errors": [], "messages": [], "result": chunk,
        "result_info": { "page": page, "per_page": per_page, "count": chunk.len(),
                         "total_count": total, "total_pages": total.div_ceil(per_page) }
    });
    *res.body_mut() = axum::body::Body::from(body.to_string());
    res
}

async fn verify_token(State(sim): State<CfSim>, headers: HeaderMap) -> Response {
    if let Err(r) = sim.admit("GET /user/tokens/verify", &headers) {
        return r;
    }
    envelope(
        StatusCode::OK,
        json!({ "id": "sim-token", "status": "active" }),
        vec![],
    )
}

async fn list_zones(
    State(sim): State<CfSim>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if let Err(r) = sim.admit("GET /zones", &headers) {
        return r;
    }
    let zones: Vec<Value> = sim
        .inner
        .lock()
        .map(|i| i.zones.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|z| q.get("name").is_none_or(|n| *n == z.name))
        .filter(|_| q.get("status").is_none_or(|s| s == "active"))
        .map(|z| {
            json!({
                "id": z.id, "name": z.name, "status": "active",
                "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"]
            })
        })
        .collect();
    page_of(zones, &q)
}

async fn list_records(
    State(sim): State<CfSim>,
    headers: HeaderMap,
    Path(zone): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let zone = match sim.admit_zone("GET /zones/:id/dns_records", &headers, &zone) {
        Ok(z) => z,
        Err(r) => return r,
    };
    let list: Vec<SimRecord> = sim
        .records()
        .into_iter()
        .filter(|r| r.zone_id == zone.id)
        .filter(|r| q.get("type").is_none_or(|t| *t == r.kind))
        .filter(|r| q.get("name").is_none_or(|n| *n == r.name))
        .filter(|r| q.get("content").is_none_or(|c| *c == r.content))
        .collect();
    page_of(list, &q)
}

async fn create_record(
    State(sim): State<CfSim>,
    headers: HeaderMap,
    Path(zone): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let zone = match sim.admit_zone("POST /zones/:id/dns_records", &headers, &zone) {
        Ok(z) => z,
        Err(r) => return r,
    };
    let Ok(Json(b)) = body else {
        return error(StatusCode::BAD_REQUEST, 9207, "Request body is invalid.");
    };
    let kind = b["type"].as_str().unwrap_or("").to_owned();
    let name = b["name"]
        .as_str()
        .unwrap_or("")
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let content = b["content"].as_str().unwrap_or("").to_owned();
    let ttl = b["ttl"].as_i64().unwrap_or(1);
    if !["A", "AAAA", "CNAME", "TXT", "MX", "NS", "SRV", "CAA"].contains(&kind.as_str()) {
        return error(StatusCode::BAD_REQUEST, 1004, "DNS Validation Error");
    }
    if !(name == zone.name || name.ends_with(&format!(".{}", zone.name))) {
        return error(StatusCode::BAD_REQUEST, 1004, "DNS Validation Error");
    }
    if content.is_empty() || !(ttl == 1 || (60..=86400).contains(&ttl)) {
        return error(StatusCode::BAD_REQUEST, 1004, "DNS Validation Error");
    }
    let record = {
        let Ok(mut i) = sim.inner.lock() else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, 1000, "poisoned");
        };
        if i.records
            .values()
            .any(|r| r.kind == kind && r.name == name && r.content == content)
        {
            return error(
                StatusCode::BAD_REQUEST,
                81058,
                "An identical record already exists.",
            );
        }
        i.next += 1;
        let r = SimRecord {
            id: format!("{:032x}", i.next),
            zone_id: zone.id.clone(),
            kind,
            name,
            content,
            ttl,
        };
        i.records.insert(r.id.clone(), r.clone());
        r
    };
    if let Err(e) = sim.publish(&record.name).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            1000,
            &format!("publishing: {e}"),
        );
    }
    let (lost, held) = sim
        .inner
        .lock()
        .map(|mut i| (std::mem::take(&mut i.lose_next_create), i.hold_creates))
        .unwrap_or((false, false));
    if held {
        std::future::pending::<()>().await;
    }
    if lost {
        return (StatusCode::BAD_GATEWAY, "502 Bad Gateway").into_response();
    }
    envelope(StatusCode::OK, json!(record), vec![])
}

async fn delete_record(
    State(sim): State<CfSim>,
    headers: HeaderMap,
    Path((zone, id)): Path<(String, String)>,
) -> Response {
    let zone = match sim.admit_zone("DELETE /zones/:id/dns_records/:id", &headers, &zone) {
        Ok(z) => z,
        Err(r) => return r,
    };
    let removed = sim
        .inner
        .lock()
        .ok()
        .and_then(|mut i| match i.records.get(&id) {
            Some(r) if r.zone_id == zone.id => i.records.remove(&id),
            _ => None,
        });
    let Some(r) = removed else {
        return error(StatusCode::NOT_FOUND, 81044, "Record does not exist.");
    };
    if let Err(e) = sim.publish(&r.name).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            1000,
            &format!("publishing: {e}"),
        );
    }
    envelope(StatusCode::OK, json!({ "id": id }), vec![])
}

/// A running pebble-challtestsrv answering DNS only (its management API on `management`).
pub struct ChallTestSrv {
    child: tokio::process::Child,
    pub dns: SocketAddr,
    pub management: String,
}

impl ChallTestSrv {
    pub async fn start() -> TestResult<Self> {
        let port = |udp: bool| -> TestResult<u16> {
            Ok(if udp {
                std::net::UdpSocket::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port()
            } else {
                std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port()
            })
        };
        let (dns_port, mgmt_port) = (port(true)?, port(false)?);
        let child = tokio::process::Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-management",
                &format!("127.0.0.1:{mgmt_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv6",
                "",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run pebble-challtestsrv (apt-get install pebble): {e}"))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", mgmt_port))
            .await
            .is_err()
        {
            if std::time::Instant::now() > deadline {
                return Err("pebble-challtestsrv did not start".into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(Self {
            child,
            dns: SocketAddr::from(([127, 0, 0, 1], dns_port)),
            management: format!("http://127.0.0.1:{mgmt_port}"),
        })
    }
}

impl Drop for ChallTestSrv {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
