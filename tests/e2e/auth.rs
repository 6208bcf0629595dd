//! Sign-in and the edge: the real `siteward` binary behind a real NGINX (Debian `nginx-light`
//! with `libnginx-mod-stream`) running the configuration siteward renders, in a temporary
//! prefix on loopback ports, in front of test backends this test spawns.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::process::Command;

use crate::harness::*;
use crate::support::wrk::{cpu_per_request, wrk, wrk_p99, wrk_rate, wrk_with_cpu};
use crate::support::{Chromium, Nginx};

pub(crate) const PASSWORD: &str = "a long enough password";

/// A free loopback port (bound and released; NGINX binds it right after), never one this test
/// process handed out before: the kernel may give a released port again at once, and two
/// `listen` lines on one port make NGINX refuse its configuration.
pub(crate) fn free_port() -> TestResult<u16> {
    fresh_port(|| {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    })
}

fn free_udp_port() -> TestResult<u16> {
    fresh_port(|| {
        Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    })
}

/// A port from `pick` that no earlier call handed out.
fn fresh_port(pick: impl Fn() -> TestResult<u16>) -> TestResult<u16> {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..100 {
        let port = pick()?;
        if GIVEN.lock().map_err(|_| "poisoned")?.insert(port) {
            return Ok(port);
        }
    }
    Err("no loopback port that was not handed out already".into())
}

/// An HTTP/1.1 backend answering every request with its headers as JSON (keep-alive).
async fn echo_http() -> TestResult<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut head = Vec::new();
                    let mut line = String::new();
                    let mut length = 0usize;
                    loop {
                        line.clear();
                        match reader.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                            head.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                        } else {
                            head.push(("request-line".into(), l.to_owned()));
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let mut map = serde_json::Map::new();
                    for (k, v) in head {
                        map.insert(k, Value::String(v));
                    }
                    let text = Value::Object(map).to_string();
                    let res = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if reader.get_mut().write_all(res.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

async fn echo_tcp() -> TestResult<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

async fn echo_udp() -> TestResult<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut reply = b"udp:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    Ok(addr)
}

/// A self-signed certificate for `domain` and `*.domain` in `<dir>/<domain>/`.
fn make_cert(dir: &Path, domain: &str) -> TestResult {
    let d = dir.join(domain);
    std::fs::create_dir_all(&d)?;
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-subj")
        .arg(format!("/CN={domain}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{domain},DNS:*.{domain}"))
        .arg("-keyout")
        .arg(d.join("privkey.pem"))
        .arg("-out")
        .arg(d.join("fullchain.pem"))
        .output()?;
    if !out.status.success() {
        return Err(format!("openssl: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// A cluster with one site, a domain `lab.test`, users and services, an edge NGINX in front.
pub struct Edge {
    pub server: Server,
    pub nginx: Nginx,
    pub admin_key: String,
    pub http_port: u16,
    pub https_port: u16,
    pub tcp_port: u16,
    pub udp_port: u16,
    pub site_id: i64,
    pub container_id: i64,
    pub domain_id: i64,
    /// `app` (devs only) and `team` (every signed-in user).
    pub app_service_id: i64,
    pub team_service_id: i64,
    pub backend: SocketAddr,
    pub conf: PathBuf,
    pub options: Vec<(String, String)>,
    pub api: Client,
    /// siteward's HTTP Unix socket.
    pub socket: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Registers `root` (the first account, so the administrator) with [`PASSWORD`].
pub async fn register_root(http: &Client, server: &Server) -> TestResult<Value> {
    let (s, v) = call(
        http,
        server,
        None,
        Method::POST,
        "/register",
        Some(json!({ "username": "root", "password": PASSWORD })),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    Ok(v)
}

pub async fn call(
    http: &Client,
    server: &Server,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> TestResult<(StatusCode, Value)> {
    let mut req = http.request(method, server.url(&format!("/api/v1{path}")));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, value))
}

pub(crate) fn id(v: &Value) -> TestResult<i64> {
    Ok(v["id"].as_i64().ok_or_else(|| format!("no id in {v}"))?)
}

/// A server on `db` with `env`, an administrator `root` registered through the API, and an
/// API key of root's that the server already accepts.
async fn root_server(db: TestDb, env: Vec<(String, String)>) -> TestResult<(Server, String)> {
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        env,
        ..Default::default()
    })
    .await?;
    server.db = Some(db);
    let api = Client::new();
    register_root(&api, &server).await?;
    let store = server.db.as_ref().ok_or("db")?.store().await?;
    let (_, key) = store
        .create_api_key("root", "tests", None, &siteward_store::Actor::system())
        .await?;
    // The key reaches the server's snapshot through the change feed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&api, &server, Some(&key), Method::GET, "/me", None)
        .await?
        .0
        != StatusCode::OK
    {
        if Instant::now() > deadline {
            return Err("the API key never reached the server".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((server, key))
}

impl Edge {
    pub async fn start() -> TestResult<Self> {
        let tmp = tempfile::tempdir()?;
        let prefix = tmp.path().join("nginx");
        std::fs::create_dir_all(prefix.join("temp"))?;
        // Debian's module snippets name `modules/...` relative to the prefix.
        std::os::unix::fs::symlink("/usr/lib/nginx/modules", prefix.join("modules"))?;
        let (http_port, https_port, tcp_port, udp_port) =
            (free_port()?, free_port()?, free_port()?, free_udp_port()?);
        let db = TestDb::new().await?;
        let socket = tmp.path().join("siteward.sock");
        let (server, admin_key) = root_server(
            db,
            vec![
                (
                    "SITEWARD_HTTP__PUBLIC_URL".into(),
                    format!("https://auth.lab.test:{https_port}"),
                ),
                (
                    "SITEWARD_HTTP__UNIX_SOCKET".into(),
                    socket.display().to_string(),
                ),
                // NGINX's workers run as nobody:nogroup here; the socket is 0660.
                ("SITEWARD_HTTP__UNIX_SOCKET_GROUP".into(), "nogroup".into()),
                // The edge's HTTP(S) ports: no transport service may take them.
                (
                    "SITEWARD_HTTP__EDGE_PORTS".into(),
                    format!("{http_port},{https_port}"),
                ),
                // This server obtains certificates (so a domain with an ACME contact and none
                // yet is pending), from a CA that is not there: nothing is ever issued.
                ("SITEWARD_ACME__ENABLED".into(), "true".into()),
                (
                    "SITEWARD_ACME__DIRECTORY".into(),
                    "https://127.0.0.1:9/directory".into(),
                ),
            ],
        )
        .await?;
        let api = Client::new();
        let k = Some(admin_key.as_str());
        for (name, given) in [("alice", "Alice"), ("bob", "Bob")] {
            let (s, v) = call(&api, &server, k, Method::POST, "/users", Some(json!({ "username": name, "password": PASSWORD, "given_name": given, "sn": "Tester", "mail": format!("{name}@lab.test") }))).await?;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let (s, g) = call(
            &api,
            &server,
            k,
            Method::POST,
            "/groups",
            Some(json!({ "cn": "devs" })),
        )
        .await?;
        assert_eq!(s, StatusCode::CREATED, "{g}");
        let gid = g["gid_number"].as_i64().ok_or("gid")?;
        let (s, v) = call(
            &api,
            &server,
            k,
            Method::POST,
            &format!("/groups/{gid}/members"),
            Some(json!({ "username": "alice" })),
        )
        .await?;
        assert!(s.is_success(), "{v}");

        let (_, site) = call(
            &api,
            &server,
            k,
            Method::POST,
            "/sites",
            Some(json!({ "name": "edge lab", "internal_domain": "lab.internal" })),
        )
        .await?;
        let site_id = id(&site)?;
        let (_, node) = call(
            &api,
            &server,
            k,
            Method::POST,
            "/nodes",
            Some(json!({ "name": "pve1", "site_id": site_id })),
        )
        .await?;
        let (s, c) = call(
            &api,
            &server,
            k,
            Method::POST,
            "/containers/register",
            Some(json!({ "hostname": "web", "node_id": id(&node)?, "ipv4_address": "127.0.0.1" })),
        )
        .await?;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        let container_id = id(&c)?;
        let (s, dom) = call(
            &api,
            &server,
            k,
            Method::POST,
            "/external-domains",
            Some(
                json!({ "domain": "lab.test", "site_id": site_id, "auth_server": server.url("") }),
            ),
        )
        .await?;
        assert_eq!(s, StatusCode::CREATED, "{dom}");
        let domain_id = id(&dom)?;
        // A second external domain: its users sign in on auth.other.test.
        let (s, other) = call(
            &api,
            &server,
            k,
            Method::POST,
            "/external-domains",
            Some(
                json!({ "domain": "other.test", "site_id": site_id, "auth_server": server.url("") }),
            ),
        )
        .await?;
        assert_eq!(s, StatusCode::CREATED, "{other}");

        let backend = echo_http().await?;
        let tcp = echo_tcp().await?;
        let udp = echo_udp().await?;
        let svc_path = format!("/containers/{container_id}/services");
        let svc = |body: Value| call(&api, &server, k, Method::POST, &svc_path, Some(body));
        let (s, app) = svc(json!({ "type": "http", "container_port": backend.port(), "external_hostname": "app", "external_domain_id": domain_id, "auth_required": true })).await?;
        assert_eq!(s, StatusCode::CREATED, "{app}");
        let (s, v) = svc(json!({ "type": "http", "container_port": backend.port(), "external_hostname": "open", "external_domain_id": domain_id })).await?;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, team) = svc(json!({ "type": "http", "container_port": backend.port(), "external_hostname": "team", "external_domain_id": domain_id, "auth_required": true })).await?;
        assert_eq!(s, StatusCode::CREATED, "{team}");
        let (s, v) = svc(json!({ "type": "http", "container_port": backend.port(), "external_hostname": "wiki", "external_domain_id": id(&other)?, "auth_required": true })).await?;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = svc(json!({ "type": "transport", "container_port": tcp.port(), "protocol": "tcp", "external_port": tcp_port })).await?;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = svc(json!({ "type": "transport", "container_port": udp.port(), "protocol": "udp", "external_port": udp_port })).await?;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        // Only devs reach app; team admits every signed-in user.
        let (s, v) = call(
            &api,
            &server,
            k,
            Method::PUT,
            &format!(
                "/containers/{container_id}/services/{}/allowed-groups",
                id(&app)?
            ),
            Some(json!({ "groups": ["nosuchgroup"] })),
        )
        .await?;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let (s, v) = call(
            &api,
            &server,
            k,
            Method::PUT,
            &format!(
                "/containers/{container_id}/services/{}/allowed-groups",
                id(&app)?
            ),
            Some(json!({ "groups": ["DEVS"] })),
        )
        .await?;
        assert_eq!(s, StatusCode::OK, "{v}");

        let certs = tmp.path().join("certs");
        make_cert(&certs, "lab.test")?;
        make_cert(&certs, "other.test")?;
        let options = vec![
            ("listen".to_owned(), "127.0.0.1".to_owned()),
            ("http_port".to_owned(), http_port.to_string()),
            ("https_port".to_owned(), https_port.to_string()),
            ("cert_dir".to_owned(), certs.display().to_string()),
            (
                "temp_dir".to_owned(),
                prefix.join("temp").display().to_string(),
            ),
        ];
        let conf = prefix.join("nginx.conf");
        let res = api
            .get(server.url(&format!("/api/v1/sites/{site_id}/nginx.conf")))
            .bearer_auth(&admin_key)
            .query(&options)
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().await?;
        std::fs::write(&conf, &text)?;
        let nginx = Nginx::start(&prefix, &conf, https_port).await?;
        Ok(Edge {
            server,
            nginx,
            admin_key,
            http_port,
            https_port,
            tcp_port,
            udp_port,
            site_id,
            container_id,
            domain_id,
            app_service_id: id(&app)?,
            team_service_id: id(&team)?,
            backend,
            conf,
            options,
            api,
            socket,
            _tmp: tmp,
        })
    }

    /// `GET /api/v1/sites/{site}/nginx.conf` with `options`.
    pub async fn render<T: serde::Serialize + ?Sized>(
        &self,
        options: &T,
    ) -> TestResult<reqwest::Response> {
        Ok(self
            .api
            .get(
                self.server
                    .url(&format!("/api/v1/sites/{}/nginx.conf", self.site_id)),
            )
            .bearer_auth(&self.admin_key)
            .query(options)
            .send()
            .await?)
    }

    /// Renders the configuration again with `extra` options, installs it and reloads NGINX.
    pub async fn reconfigure(&self, extra: &[(&str, String)]) -> TestResult<String> {
        let mut options = self.options.clone();
        options.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let res = self.render(&options).await?;
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().await?;
        std::fs::write(&self.conf, &text)?;
        self.nginx.reload(&self.conf).await?;
        Ok(text)
    }

    /// A browser-like client: every `*.lab.test` host on the edge, no redirects followed.
    pub fn browser(&self) -> TestResult<Client> {
        let mut b = Client::builder()
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none());
        for host in [
            "app.lab.test",
            "open.lab.test",
            "team.lab.test",
            "auth.lab.test",
            "new.lab.test",
            "nothing.lab.test",
            "wiki.other.test",
            "auth.other.test",
        ] {
            b = b.resolve(host, SocketAddr::from(([127, 0, 0, 1], self.https_port)));
        }
        Ok(b.build()?)
    }

    pub fn https(&self, host: &str, path: &str) -> String {
        format!("https://{host}.lab.test:{}{path}", self.https_port)
    }
}

/// The hidden `csrf` field of a form.
pub(crate) fn csrf_field(html: &str) -> TestResult<String> {
    let marker = "name=\"csrf\" value=\"";
    let at = html.find(marker).ok_or("no csrf field")? + marker.len();
    let rest = &html[at..];
    Ok(rest[..rest.find('"').ok_or("unterminated")?].to_owned())
}

/// `name=value` of a `Set-Cookie` for `name`, and the whole header.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap_or("").to_owned(), v.to_owned()))
}

/// Signs in through the login page on the edge; returns the session cookie pair and the
/// response's `Location`.
async fn sign_in(
    edge: &Edge,
    b: &Client,
    user: &str,
    redirect: &str,
) -> TestResult<(StatusCode, String, String)> {
    let login = edge.https("auth", "/login");
    sign_in_at(b, &login, "lab.test", user, redirect).await
}

/// [`sign_in`] on the login page `login` of external domain `domain`.
async fn sign_in_at(
    b: &Client,
    login: &str,
    domain: &str,
    user: &str,
    redirect: &str,
) -> TestResult<(StatusCode, String, String)> {
    let page = b.get(login).query(&[("redirect", redirect)]).send().await?;
    assert_eq!(page.status(), StatusCode::OK);
    let (csrf_cookie, _) = set_cookie(page.headers(), "siteward_csrf").ok_or("no csrf cookie")?;
    let html = page.text().await?;
    let token = csrf_field(&html)?;
    let res = b
        .post(login)
        .header(COOKIE, csrf_cookie)
        .form(&[
            ("username", user),
            ("password", PASSWORD),
            ("redirect", redirect),
            ("csrf", &token),
        ])
        .send()
        .await?;
    let status = res.status();
    let location = res
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let session = set_cookie(res.headers(), "siteward_session")
        .map(|(pair, whole)| {
            assert!(whole.contains("HttpOnly"), "{whole}");
            assert!(whole.contains("SameSite=Lax"), "{whole}");
            assert!(whole.contains("Secure"), "{whole}");
            assert!(whole.contains(&format!("Domain={domain}")), "{whole}");
            pair
        })
        .unwrap_or_default();
    Ok((status, session, location))
}

async fn get_json(
    b: &Client,
    url: &str,
    cookie: &str,
    extra: &[(&str, &str)],
) -> TestResult<(StatusCode, Value, String)> {
    let mut req = b.get(url);
    if !cookie.is_empty() {
        req = req.header(COOKIE, cookie);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = req.send().await?;
    let status = res.status();
    let location = res
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = res.text().await?;
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok((status, v, location))
}

#[tokio::test]
async fn nginx_edge_protects_services_end_to_end() -> TestResult {
    let edge = Edge::start().await?;
    let b = edge.browser()?;
    let spoof = [
        ("X-Username", "root"),
        ("X-Groups", "sysadmins"),
        ("Remote-User", "root"),
        ("X-Email", "evil@x"),
    ];

    // Unprotected: passes straight through, spoofed identity headers removed.
    let (s, v, _) = get_json(&b, &edge.https("open", "/hello"), "", &spoof).await?;
    assert_eq!(s, StatusCode::OK, "{}", edge.nginx.error_log());
    assert!(
        v.get("x-username").is_none()
            && v.get("remote-user").is_none()
            && v.get("x-groups").is_none(),
        "{v}"
    );

    // A WebSocket handshake reaches the backend as one (Upgrade and Connection passed on).
    let (s, v, _) = get_json(
        &b,
        &edge.https("open", "/socket"),
        "",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["upgrade"].as_str(), v["connection"].as_str()),
        (Some("websocket"), Some("upgrade")),
        "{v}"
    );
    // A plain request keeps the upstream connection alive instead.
    let (_, v, _) = get_json(&b, &edge.https("open", "/plain"), "", &[]).await?;
    assert!(
        v.get("upgrade").is_none() && v.get("connection").is_none(),
        "{v}"
    );

    // Protected, anonymous: redirected to the login page with the original URL.
    let original = edge.https("app", "/path?q=1");
    let (s, _, location) = get_json(&b, &original, "", &[]).await?;
    assert_eq!(s, StatusCode::FOUND);
    let expected = format!(
        "https://auth.lab.test:{}/login?redirect={}",
        edge.https_port,
        url::form_urlencoded::byte_serialize(original.as_bytes()).collect::<String>()
    );
    assert_eq!(location, expected);

    // A form post without its token is refused; a wrong password is refused.
    let res = b
        .post(edge.https("auth", "/login"))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(res.headers(), "siteward_session").is_none());

    // Alice (in devs) signs in and lands on the original URL.
    let (s, alice, location) = sign_in(&edge, &b, "alice", &original).await?;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(location, original);
    let cookie = format!("{alice}; other=kept");
    let (s, v, _) = get_json(&b, &original, &cookie, &spoof).await?;
    assert_eq!(s, StatusCode::OK, "{}", edge.nginx.error_log());
    assert_eq!(v["x-username"], "alice", "{v}");
    assert_eq!(v["remote-user"], "alice", "{v}");
    assert_eq!(v["x-user-first-name"], "Alice", "{v}");
    assert_eq!(v["x-email"], "alice@lab.test", "{v}");
    let groups = v["x-groups"].as_str().ok_or("x-groups")?;
    assert!(groups.split(',').any(|g| g == "devs"), "{v}");
    assert!(!groups.contains("sysadmins"), "{v}");
    // The session cookie never reaches the backend; other cookies do.
    let sent = v["cookie"].as_str().unwrap_or("");
    assert!(
        !sent.contains("siteward_session") && sent.contains("other=kept"),
        "{v}"
    );
    // One sign-in covers every host of the domain.
    let (s, v, _) = get_json(&b, &edge.https("team", "/"), &alice, &[]).await?;
    assert_eq!(
        (s, v["x-username"].as_str()),
        (StatusCode::OK, Some("alice"))
    );

    // A service of a second external domain sends the browser to that domain's own sign-in
    // host, whose cookie then covers it (a cookie for lab.test never would).
    let wiki = format!("https://wiki.other.test:{}/w?x=1", edge.https_port);
    let (s, _, location) = get_json(&b, &wiki, "", &[]).await?;
    assert_eq!(s, StatusCode::FOUND);
    let login = format!("https://auth.other.test:{}/login", edge.https_port);
    assert!(
        location.starts_with(&format!("{login}?redirect=")),
        "{location}"
    );
    let (s, wiki_cookie, location) = sign_in_at(&b, &login, "other.test", "alice", &wiki).await?;
    assert_eq!(
        (s, location.as_str()),
        (StatusCode::SEE_OTHER, wiki.as_str())
    );
    let (s, v, _) = get_json(&b, &wiki, &wiki_cookie, &[]).await?;
    assert_eq!(
        (s, v["x-username"].as_str()),
        (StatusCode::OK, Some("alice")),
        "{v}"
    );

    // Bob is signed in but outside the allowed groups: 403 on app, fine on team.
    let (s, bob, _) = sign_in(&edge, &b, "bob", &edge.https("team", "/")).await?;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = get_json(&b, &original, &bob, &[]).await?;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v, _) = get_json(&b, &edge.https("team", "/"), &bob, &[]).await?;
    assert_eq!((s, v["x-username"].as_str()), (StatusCode::OK, Some("bob")));
    // A mangled Host does not slip past the group restriction.
    for host in ["app.lab.test:abc", "APP.lab.test.", "app.lab.test:1:2"] {
        let res = b
            .get(&original)
            .header(COOKIE, &bob)
            .header("host", host)
            .send()
            .await?;
        assert!(
            matches!(
                res.status(),
                StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST | StatusCode::MISDIRECTED_REQUEST
            ),
            "{host}: {}",
            res.status()
        );
    }
    // A browser holding a stale host-only copy and the live domain cookie is signed in; the
    // backend gets neither copy.
    let two = format!("siteward_session=stale; {bob}; other=kept");
    let (s, v, _) = get_json(&b, &edge.https("team", "/"), &two, &[]).await?;
    assert_eq!(
        (s, v["x-username"].as_str()),
        (StatusCode::OK, Some("bob")),
        "{v}"
    );
    let sent = v["cookie"].as_str().unwrap_or("");
    assert!(
        !sent.contains("siteward_session") && sent.contains("other=kept"),
        "{v}"
    );
    // More copies than that: no cookie at all rather than one of them.
    let three = format!("siteward_session=a; other=kept; {bob}; siteward_session=b");
    let (s, v, _) = get_json(&b, &edge.https("team", "/"), &three, &[]).await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.get("cookie").is_none(), "{v}");

    // Logout (CSRF-checked) ends the session on every host at once.
    let page = b
        .get(edge.https("auth", "/logout"))
        .header(COOKIE, &alice)
        .send()
        .await?;
    let token = csrf_field(&page.text().await?)?;
    let res = b
        .post(edge.https("auth", "/logout"))
        .header(COOKIE, &alice)
        .form(&[("csrf", "wrong")])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let (s, _, _) = get_json(&b, &original, &alice, &[]).await?;
    assert_eq!(
        s,
        StatusCode::OK,
        "a refused logout must not end the session"
    );
    let res = b
        .post(edge.https("auth", "/logout"))
        .header(COOKIE, &alice)
        .form(&[("csrf", token.as_str())])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, cleared) = set_cookie(res.headers(), "siteward_session").ok_or("no clearing cookie")?;
    assert!(
        cleared.contains("Max-Age=0") && cleared.contains("Domain=lab.test"),
        "{cleared}"
    );
    for host in ["app", "team"] {
        let (s, _, location) = get_json(&b, &edge.https(host, "/"), &alice, &[]).await?;
        assert_eq!(s, StatusCode::FOUND, "{host} after logout");
        assert!(location.contains("/login?redirect="), "{location}");
    }

    // Suspension: the very next request is redirected.
    let (_, alice2, _) = sign_in(&edge, &b, "alice", "/").await?;
    let (s, _, _) = get_json(&b, &original, &alice2, &[]).await?;
    assert_eq!(s, StatusCode::OK);
    let uid = {
        let store = edge.server.db.as_ref().ok_or("db")?.store().await?;
        store.user("alice").await?.uid_number.0
    };
    let (s, v) = call(
        &edge.api,
        &edge.server,
        Some(&edge.admin_key),
        Method::PATCH,
        &format!("/users/{uid}"),
        Some(json!({ "status": "suspended" })),
    )
    .await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, _) = get_json(&b, &original, &alice2, &[]).await?;
    assert_eq!(
        s,
        StatusCode::FOUND,
        "a suspended user must be sent to the login page"
    );

    // Basic credentials (scripts) work through the edge, and the groups still apply.
    let res = b
        .get(edge.https("team", "/"))
        .basic_auth("bob", Some(PASSWORD))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let seen: Value = res.json().await?;
    assert_eq!(seen["x-username"], "bob", "{seen}");
    assert!(
        seen.get("authorization").is_none(),
        "siteward's credentials reached the backend: {seen}"
    );
    let res = b
        .get(&original)
        .basic_auth("bob", Some(PASSWORD))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = b
        .get(&original)
        .basic_auth("bob", Some("wrong password"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FOUND);

    // HTTP redirects to HTTPS; unknown hosts get 404.
    let plain = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(
            "app.lab.test",
            SocketAddr::from(([127, 0, 0, 1], edge.http_port)),
        )
        .resolve(
            "nowhere.example",
            SocketAddr::from(([127, 0, 0, 1], edge.http_port)),
        )
        .build()?;
    let res = plain
        .get(format!("http://app.lab.test:{}/x?y=1", edge.http_port))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        res.headers().get(LOCATION).and_then(|v| v.to_str().ok()),
        Some(format!("https://app.lab.test:{}/x?y=1", edge.https_port).as_str())
    );
    let res = plain
        .get(format!("http://nowhere.example:{}/", edge.http_port))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let (s, _, _) = get_json(&b, &edge.https("nothing", "/"), "", &[]).await?;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // TCP and UDP transport services carry data.
    let mut tcp = TcpStream::connect(("127.0.0.1", edge.tcp_port)).await?;
    tcp.write_all(b"hello over tcp").await?;
    let mut buf = [0u8; 14];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut buf)).await??;
    assert_eq!(&buf, b"hello over tcp");
    let udp = UdpSocket::bind("127.0.0.1:0").await?;
    udp.send_to(b"ping", ("127.0.0.1", edge.udp_port)).await?;
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf)).await??;
    assert_eq!(&buf[..n], b"udp:ping");
    Ok(())
}

#[tokio::test]
async fn nginx_conf_etag_and_nginx_sync_with_rollback() -> TestResult {
    let edge = Edge::start().await?;
    let url = edge
        .server
        .url(&format!("/api/v1/sites/{}/nginx.conf", edge.site_id));
    let res = edge
        .api
        .get(&url)
        .bearer_auth(&edge.admin_key)
        .query(&edge.options)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let tag = res
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .ok_or("no etag")?
        .to_owned();
    let text = res.text().await?;
    assert_eq!(text, std::fs::read_to_string(&edge.conf)?);
    let res = edge
        .api
        .get(&url)
        .bearer_auth(&edge.admin_key)
        .query(&edge.options)
        .header("if-none-match", &tag)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert!(res.text().await?.is_empty());
    // Admins only (others get 404), and unsafe options are refused.
    let res = edge.api.get(&url).send().await?;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = edge
        .api
        .get(&url)
        .bearer_auth(&edge.admin_key)
        .query(&[("cert_dir", "/x; include /etc/passwd")])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = edge
        .api
        .get(&url)
        .bearer_auth(&edge.admin_key)
        .query(&[("nonsense", "1")])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // Without `cert_dir`, the configuration names the files where this server's ACME side
    // writes them, once they are there: before, the domain gets plain HTTP only.
    let own = std::path::absolute(edge.server.data_dir.join("certs/lab.test"))?;
    let render_own = || async {
        let res = edge
            .api
            .get(&url)
            .bearer_auth(&edge.admin_key)
            .send()
            .await?;
        TestResult::Ok(res.text().await?)
    };
    let text = render_own().await?;
    assert!(!text.contains("lab.test/fullchain.pem"), "{text}");
    assert!(text.contains("server_name .lab.test;"), "{text}");
    std::fs::create_dir_all(&own)?;
    let edge_certs = edge
        .nginx
        .prefix
        .parent()
        .ok_or("no parent")?
        .join("certs/lab.test");
    for f in ["fullchain.pem", "privkey.pem"] {
        std::fs::copy(edge_certs.join(f), own.join(f))?;
    }
    let text = render_own().await?;
    let expected = own.join("fullchain.pem");
    assert!(
        text.contains(&format!("ssl_certificate {};", expected.display())),
        "{text}"
    );

    // nginx-sync against the running NGINX: unchanged first (the file is what siteward renders).
    let key_file = edge.nginx.prefix.join("key");
    std::fs::write(&key_file, &edge.admin_key)?;
    let sync = |extra: Vec<String>| {
        let mut args: Vec<String> = vec![
            "nginx-sync".into(),
            "--site".into(),
            edge.site_id.to_string(),
            "--url".into(),
            edge.server.url(""),
            "--out".into(),
            edge.conf.display().to_string(),
            "--api-key-file".into(),
            key_file.display().to_string(),
            "--nginx-arg=-p".into(),
            format!("--nginx-arg={}", edge.nginx.prefix.display()),
            "--nginx-arg=-g".into(),
            format!("--nginx-arg={}", edge.nginx.globals_arg()),
        ];
        for (k, v) in &edge.options {
            if !extra
                .iter()
                .any(|e| e.starts_with(&format!("--option={k}=")))
            {
                args.push(format!("--option={k}={v}"));
            }
        }
        args.extend(extra);
        args
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&refs, &[], None).await
    };
    let (status, out, err) = run(sync(vec![])).await?;
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("unchanged"), "{out}");

    // A new service: installed, checked, reloaded, and reachable.
    let (s, v) = call(&edge.api, &edge.server, Some(&edge.admin_key), Method::POST, &format!("/containers/{}/services", edge.container_id), Some(json!({ "type": "http", "container_port": edge.backend.port(), "external_hostname": "new", "external_domain_id": edge.domain_id }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (status, out, err) = run(sync(vec![])).await?;
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("installed"), "{out}");
    assert!(std::fs::read_to_string(&edge.conf)?.contains("server_name new.lab.test;"));
    let b = edge.browser()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A reload is asynchronous: until the old workers are gone, a connection one of them
        // accepted may be closed unanswered. That is NGINX's behaviour, so retry it too.
        let res = b.get(edge.https("new", "/")).send().await;
        if res.as_ref().is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new service never reachable after reload: {res:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A domain siteward is still obtaining a certificate for: served over plain HTTP only, with
    // HTTP-01 passed through, so nginx -t accepts it and the certificate can be obtained.
    let (s, pend) = call(&edge.api, &edge.server, Some(&edge.admin_key), Method::POST, "/external-domains", Some(json!({ "domain": "pending.test", "site_id": edge.site_id, "acme_email": "ops@pending.test", "auth_server": edge.server.url("") }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{pend}");
    let (s, v) = call(&edge.api, &edge.server, Some(&edge.admin_key), Method::POST, &format!("/containers/{}/services", edge.container_id), Some(json!({ "type": "http", "container_port": edge.backend.port(), "external_hostname": "soon", "external_domain_id": id(&pend)?, "auth_required": true }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (status, out, err) = run(sync(vec![])).await?;
    assert!(status.success(), "{out}{err}");
    let conf = std::fs::read_to_string(&edge.conf)?;
    assert!(conf.contains("server_name .pending.test;"), "{conf}");
    assert!(!conf.contains("pending.test/fullchain.pem"), "{conf}");
    assert!(!conf.contains("server_name soon.pending.test;"), "{conf}");
    let plain = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(
            "soon.pending.test",
            SocketAddr::from(([127, 0, 0, 1], edge.http_port)),
        )
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let at = |path: &str| format!("http://soon.pending.test:{}{path}", edge.http_port);
    loop {
        let res = plain.get(at("/")).send().await;
        if res
            .as_ref()
            .is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{res:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // HTTP-01 reaches siteward, which answers the token's key authorization.
    let store = edge.server.db.as_ref().ok_or("db")?.store().await?;
    store
        .put_http_challenge(
            "tok-123",
            "tok-123.thumbprint",
            chrono::Utc::now() + chrono::Duration::minutes(5),
            None,
        )
        .await?;
    let res = plain
        .get(at("/.well-known/acme-challenge/tok-123"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await?, "tok-123.thumbprint");

    // A configuration nginx -t rejects (certificates that do not exist) never replaces the file.
    let before = std::fs::read_to_string(&edge.conf)?;
    let (status, out, err) = run(sync(vec!["--option=cert_dir=/nonexistent/certs".into()])).await?;
    assert!(!status.success(), "{out}{err}");
    assert!(err.contains("nginx -t rejected"), "{err}");
    assert_eq!(std::fs::read_to_string(&edge.conf)?, before);
    let dir = edge.conf.parent().ok_or("no directory")?;
    let leftovers: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".siteward-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // And the edge still serves.
    let res = b.get(edge.https("new", "/")).send().await?;
    assert_eq!(res.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn verify_answers_only_200_401_403_and_redirects_stay_home() -> TestResult {
    let edge = Edge::start().await?;
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let verify = edge.server.url("/auth/verify");

    // Anonymous: 401 with the login URL; a foreign original URL is not carried along.
    let res = http
        .get(&verify)
        .header("x-original-url", "https://app.lab.test/x")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let loc = res
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        loc,
        format!(
            "https://auth.lab.test:{}/login?redirect=https%3A%2F%2Fapp.lab.test%2Fx",
            edge.https_port
        )
    );
    for evil in [
        "https://evil.com/x",
        "//evil.com",
        "javascript:alert(1)",
        "https://lab.test.evil.com/",
    ] {
        let res = http
            .get(&verify)
            .header("x-original-url", evil)
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let loc = res
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(
            loc,
            format!("https://auth.lab.test:{}/login", edge.https_port),
            "{evil}"
        );
    }
    for cookie in [
        "siteward_session=nothex",
        "siteward_session=",
        &format!("siteward_session={}", "0".repeat(64)),
    ] {
        let res = http.get(&verify).header(COOKIE, cookie).send().await?;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{cookie}");
    }
    for auth in [
        "Bearer sw_nope_nope",
        "Basic !!!",
        "Basic Ym9iOndyb25n",
        "Digest x",
    ] {
        let res = http
            .get(&verify)
            .header("authorization", auth)
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth}");
    }
    // Bearer API key: 200 with identity headers.
    let res = http
        .get(&verify)
        .bearer_auth(&edge.admin_key)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get("x-username")
            .and_then(|v| v.to_str().ok()),
        Some("root")
    );
    assert_eq!(
        res.headers()
            .get("remote-user")
            .and_then(|v| v.to_str().ok()),
        Some("root")
    );
    // Root is not in devs: 403 for app, 200 for team.
    let res = http
        .get(&verify)
        .bearer_auth(&edge.admin_key)
        .header("x-original-url", "https://app.lab.test/")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = http
        .get(&verify)
        .bearer_auth(&edge.admin_key)
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "team.lab.test")
        .header("x-forwarded-uri", "/")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    // The service id the generated configuration sends decides, whatever the URL says; an id
    // naming no service, or a target that cannot be read, admits nobody.
    let team = edge.team_service_id.to_string();
    let app = edge.app_service_id.to_string();
    for (service, url, expected) in [
        (
            Some(app.as_str()),
            "https://team.lab.test/",
            StatusCode::FORBIDDEN,
        ),
        (Some(team.as_str()), "https://app.lab.test/", StatusCode::OK),
        (
            Some("999999"),
            "https://team.lab.test/",
            StatusCode::FORBIDDEN,
        ),
        (
            Some("team"),
            "https://team.lab.test/",
            StatusCode::FORBIDDEN,
        ),
        (None, "https://app.lab.test:abc/", StatusCode::FORBIDDEN),
        (None, "not a url", StatusCode::FORBIDDEN),
    ] {
        let mut req = http
            .get(&verify)
            .bearer_auth(&edge.admin_key)
            .header("x-original-url", url);
        if let Some(id) = service {
            req = req.header("x-siteward-service", id);
        }
        let res = req.send().await?;
        assert_eq!(res.status(), expected, "{service:?} {url}");
    }

    // Login redirects: open-redirect variants fall back to /.
    let b = edge.browser()?;
    for (target, expected) in [
        ("//evil.com", "/".to_owned()),
        ("/\\evil.com", "/".to_owned()),
        ("/%2F%2Fevil.com", "/".to_owned()),
        ("javascript:alert(1)", "/".to_owned()),
        ("https://evil.com/", "/".to_owned()),
        ("https://lab.test.evil.com/", "/".to_owned()),
        ("https://app.lab.test@evil.com/", "/".to_owned()),
        ("/account?x=1", "/account?x=1".to_owned()),
        (
            "https://team.lab.test/ok",
            "https://team.lab.test/ok".to_owned(),
        ),
    ] {
        let (s, _, location) = sign_in(&edge, &b, "bob", target).await?;
        assert_eq!(s, StatusCode::SEE_OTHER, "{target}");
        assert_eq!(location, expected, "{target}");
    }

    // /auth/verify latency with a session cookie (sequential, directly against siteward).
    let (_, bob, _) = sign_in(&edge, &b, "bob", "/").await?;
    let mut times = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        let res = http
            .get(&verify)
            .header(COOKIE, &bob)
            .header("x-original-url", "https://team.lab.test/")
            .send()
            .await?;
        times.push(t.elapsed());
        assert_eq!(res.status(), StatusCode::OK);
    }
    times.sort();
    eprintln!(
        "auth/verify over HTTP (session cookie, debug build): p50 {:?} p99 {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
    Ok(())
}

#[tokio::test]
async fn pages_refuse_csrf_less_posts_and_work_with_tokens() -> TestResult {
    let edge = Edge::start().await?;
    let b = edge.browser()?;
    let auth = |p: &str| edge.https("auth", p);
    // Anonymous forms without the double-submit cookie, or with a mismatching token.
    for path in [
        "/login",
        "/register",
        "/reset-password",
        "/reset-password/request",
        "/reset-password/abc",
    ] {
        let res = b
            .post(auth(path))
            .form(&[("username", "x"), ("password", PASSWORD)])
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
        let res = b
            .post(auth(path))
            .header(COOKIE, format!("siteward_csrf={}", "a".repeat(64)))
            .form(&[("csrf", "b".repeat(64))])
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // Signed-in forms need the session's token.
    let (_, bob, _) = sign_in(&edge, &b, "bob", "/").await?;
    for path in [
        "/logout",
        "/account/profile",
        "/account/password",
        "/account/api-keys",
        "/account/api-keys/1/revoke",
    ] {
        let res = b
            .post(auth(path))
            .header(COOKIE, &bob)
            .form(&[
                ("name", "k"),
                ("old_password", PASSWORD),
                ("password", "new password 123"),
            ])
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // The account page works with the token: create an API key, which then authenticates.
    let page = b.get(auth("/account")).header(COOKIE, &bob).send().await?;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await?;
    assert!(html.contains("Signed in as <strong>bob</strong>"));
    let token = csrf_field(&html)?;
    let res = b
        .post(auth("/account/api-keys"))
        .header(COOKIE, &bob)
        .form(&[("name", "laptop"), ("csrf", token.as_str())])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await?;
    let at = html.find("sw_").ok_or("no key shown")?;
    let key: String = html[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let res = edge
        .api
        .get(edge.server.url("/api/v1/me"))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    // Anonymous account page: to the login page.
    let res = b.get(auth("/account")).send().await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // A page on a sibling host (a service's backend can plant a domain-wide CSRF cookie) cannot
    // post the login form: the browser's Origin gives it away.
    let page = b.get(auth("/login")).send().await?;
    let (csrf_cookie, _) = set_cookie(page.headers(), "siteward_csrf").ok_or("csrf cookie")?;
    let token = csrf_field(&page.text().await?)?;
    let login = |origin: Option<&'static str>| {
        let mut req = b.post(auth("/login")).header(COOKIE, &csrf_cookie);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.form(&[
            ("username", "bob"),
            ("password", PASSWORD),
            ("csrf", token.as_str()),
        ])
        .send()
    };
    let res = login(Some("https://open.lab.test")).await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(set_cookie(res.headers(), "siteward_session").is_none());
    let res = login(Some("null")).await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let origin = format!("https://auth.lab.test:{}", edge.https_port);
    let res = b
        .post(auth("/login"))
        .header(COOKIE, &csrf_cookie)
        .header("origin", origin)
        .form(&[
            ("username", "bob"),
            ("password", PASSWORD),
            ("csrf", token.as_str()),
        ])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // The account page edits the profile: names, e-mail, SSH keys (one per line).
    let page = b.get(auth("/account")).header(COOKIE, &bob).send().await?;
    let token = csrf_field(&page.text().await?)?;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl bob@laptop";
    let keys = format!("\n{key}\n\n");
    let profile = |fields: Vec<(&'static str, &str)>| {
        let mut form = fields;
        form.push(("csrf", token.as_str()));
        b.post(auth("/account/profile"))
            .header(COOKIE, &bob)
            .form(&form)
            .send()
    };
    let res = profile(vec![
        ("cn", "Robert Tester"),
        ("given_name", "Robert"),
        ("sn", "Tester"),
        ("mail", "robert@lab.test"),
        ("ssh_public_keys", &keys),
    ])
    .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await?.contains("Profile saved"));
    let me: Value = get_json(&b, &edge.server.url("/api/v1/me"), &bob, &[])
        .await?
        .1;
    assert_eq!(
        (&me["cn"], &me["given_name"], &me["mail"]),
        (
            &json!("Robert Tester"),
            &json!("Robert"),
            &json!("robert@lab.test")
        ),
        "{me}"
    );
    assert_eq!(me["ssh_public_keys"], json!([key]), "{me}");
    // A bad e-mail is refused with the reason, and changes nothing.
    let res = profile(vec![("sn", "Tester"), ("mail", "not an address")]).await?;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await?.contains("role=\"alert\""));
    let me: Value = get_json(&b, &edge.server.url("/api/v1/me"), &bob, &[])
        .await?
        .1;
    assert_eq!(me["mail"], "robert@lab.test", "{me}");

    // Changing the password on the account page ends bob's other sessions, not this one.
    let (_, elsewhere, _) = sign_in(&edge, &b, "bob", "/").await?;
    let page = b.get(auth("/account")).header(COOKIE, &bob).send().await?;
    let token = csrf_field(&page.text().await?)?;
    let res = b
        .post(auth("/account/password"))
        .header(COOKIE, &bob)
        .form(&[
            ("old_password", PASSWORD),
            ("password", PASSWORD),
            ("csrf", token.as_str()),
        ])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await?.contains("Every other session"));
    let (s, _, _) = get_json(&b, &edge.https("team", "/"), &elsewhere, &[]).await?;
    assert_eq!(s, StatusCode::FOUND, "the other session must end");
    let (s, _, _) = get_json(&b, &edge.https("team", "/"), &bob, &[]).await?;
    assert_eq!(s, StatusCode::OK, "the changing browser stays signed in");

    // Registration through the form: without invite pending, with invite active.
    let page = b.get(auth("/register")).send().await?;
    let (csrf_cookie, _) = set_cookie(page.headers(), "siteward_csrf").ok_or("csrf cookie")?;
    let token = csrf_field(&page.text().await?)?;
    let res = b
        .post(auth("/register"))
        .header(COOKIE, &csrf_cookie)
        .form(&[
            ("username", "carol"),
            ("password", PASSWORD),
            ("mail", "carol@lab.test"),
            ("csrf", token.as_str()),
        ])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(res.text().await?.contains("approve"));
    let (s, _, _) = sign_in(&edge, &b, "carol", "/").await?;
    assert_eq!(s, StatusCode::FORBIDDEN, "pending users cannot sign in");
    let (s, inv) = call(
        &edge.api,
        &edge.server,
        Some(&edge.admin_key),
        Method::POST,
        "/invites",
        Some(json!({ "email": "dave@lab.test" })),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED);
    let invite = inv["token"].as_str().ok_or("token")?;
    let res = b
        .post(auth("/register"))
        .header(COOKIE, &csrf_cookie)
        .form(&[
            ("username", "dave"),
            ("password", PASSWORD),
            ("invite", invite),
            ("csrf", token.as_str()),
        ])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let (s, _, _) = sign_in(&edge, &b, "dave", "/").await?;
    assert_eq!(s, StatusCode::SEE_OTHER, "invited users are active at once");

    // Password reset through the form ends every session.
    let (s, reset) = call(
        &edge.api,
        &edge.server,
        Some(&edge.admin_key),
        Method::POST,
        "/password-resets",
        Some(json!({ "username": "bob" })),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED, "{reset}");
    let rtoken = reset["token"].as_str().ok_or("token")?;
    let res = b
        .post(auth(&format!("/reset-password/{rtoken}")))
        .header(COOKIE, &csrf_cookie)
        .form(&[("password", "brand new password"), ("csrf", token.as_str())])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let (s, _, _) = get_json(&b, &edge.https("team", "/"), &bob, &[]).await?;
    assert_eq!(s, StatusCode::FOUND, "sessions end after a reset");

    // Throttling: after repeated failures, even the right password is refused for a while.
    let page = b.get(auth("/login")).send().await?;
    let (csrf_cookie, _) = set_cookie(page.headers(), "siteward_csrf").ok_or("csrf cookie")?;
    let token = csrf_field(&page.text().await?)?;
    let login = |user: String, password: &'static str| {
        b.post(auth("/login"))
            .header(COOKIE, &csrf_cookie)
            .form(&[
                ("username", user.as_str()),
                ("password", password),
                ("csrf", token.as_str()),
            ])
            .send()
    };
    for _ in 0..10 {
        let res = login("dave".into(), "wrong").await?;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login("dave".into(), PASSWORD).await?;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // Per address: failures spread over many accounts (dave's 10 count too) block the address
    // at 30, even for an account with no failures of its own and the right password.
    for i in 0..20 {
        let res = login(format!("guess{i}"), "wrong").await?;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let res = login("alice".into(), PASSWORD).await?;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    Ok(())
}

#[tokio::test]
async fn headless_chromium_signs_in_through_the_login_page() -> TestResult {
    let edge = Edge::start().await?;
    let mut chrome = Chromium::start().await?;
    let session = chrome.new_page().await?;
    let app = edge.https("app", "/from-browser");
    let login = format!("https://auth.lab.test:{}/login", edge.https_port);
    let text = chrome.sign_in(&session, &app, &login, "alice").await?;
    let echoed: Value = serde_json::from_str(text.trim()).map_err(|e| format!("{e}: {text}"))?;
    assert_eq!(echoed["x-username"], "alice", "{echoed}");
    assert!(echoed["x-groups"].as_str().unwrap_or("").contains("devs"));

    // Sign out through the logout page; the next visit goes to the login page again.
    chrome
        .call(
            Some(&session),
            "Page.navigate",
            json!({ "url": format!("https://auth.lab.test:{}/logout", edge.https_port) }),
        )
        .await?;
    let text = chrome
        .wait_for(
            &session,
            &format!("https://auth.lab.test:{}/logout", edge.https_port),
        )
        .await?;
    assert!(text.contains("Signed in as alice"), "{text}");
    chrome
        .eval(
            &session,
            "document.querySelector('button[type=submit]').click(); true",
        )
        .await?;
    chrome
        .wait_for(&session, &format!("{login}?signed_out=1"))
        .await?;
    chrome
        .call(Some(&session), "Page.navigate", json!({ "url": app }))
        .await?;
    chrome.wait_for(&session, &login).await?;
    Ok(())
}

/// The edge can reach siteward over its Unix socket (`http.unix_socket` + the renderer's
/// `siteward_socket`): the same decisions as over TCP.
#[tokio::test]
async fn auth_request_over_the_unix_socket() -> TestResult {
    let edge = Edge::start().await?;
    let conf = edge
        .reconfigure(&[("siteward_socket", edge.socket.display().to_string())])
        .await?;
    assert!(
        conf.contains(&format!("server unix:{};", edge.socket.display())),
        "{conf}"
    );
    let b = edge.browser()?;
    let res = b.get(edge.https("app", "/")).send().await?;
    assert_eq!(res.status(), StatusCode::FOUND);
    let (_, alice, _) = sign_in(&edge, &b, "alice", "/").await?;
    let (s, seen, _) = get_json(&b, &edge.https("app", "/"), &alice, &[]).await?;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(seen["x-username"], "alice", "{seen}");
    // bob is outside the service's allowed groups.
    let (_, bob, _) = sign_in(&edge, &b, "bob", "/").await?;
    let (s, _, _) = get_json(&b, &edge.https("app", "/"), &bob, &[]).await?;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A socket path that would inject into the configuration is refused.
    let res = edge
        .render(&[("siteward_socket", "/tmp/x; include /etc/passwd")])
        .await?;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let said = res.text().await?;
    assert!(said.contains("siteward_socket"), "{said}");
    Ok(())
}

/// The leaf certificate a TLS server at `addr` presents (PEM), as `openssl s_client` sees it.
async fn served_certificate(addr: SocketAddr) -> TestResult<String> {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| format!("no certificate from {addr}: {text}"))?;
    let end = text[start..]
        .find("-----END CERTIFICATE-----")
        .ok_or("unterminated certificate")?;
    Ok(text[start..start + end + "-----END CERTIFICATE-----".len()].to_owned())
}

fn pem_of(path: &Path) -> TestResult<String> {
    let text = std::fs::read_to_string(path)?;
    let end = text
        .find("-----END CERTIFICATE-----")
        .ok_or("no certificate")?;
    Ok(text[..end + "-----END CERTIFICATE-----".len()]
        .trim()
        .to_owned())
}

/// siteward's own HTTPS listener serves the application, marks sign-in cookies `Secure`, and
/// picks up a replaced certificate without a restart; a broken replacement is not served.
#[tokio::test]
async fn https_listener_serves_the_app_and_reloads_its_certificate() -> TestResult {
    let tmp = tempfile::tempdir()?;
    make_cert(tmp.path(), "localhost")?;
    let cert = tmp.path().join("localhost/fullchain.pem");
    let key = tmp.path().join("localhost/privkey.pem");
    let db = TestDb::new().await?;
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        env: vec![
            ("SITEWARD_HTTP__TLS_LISTEN".into(), "127.0.0.1:0".into()),
            ("SITEWARD_HTTP__TLS_CERT".into(), cert.display().to_string()),
            ("SITEWARD_HTTP__TLS_KEY".into(), key.display().to_string()),
            ("SITEWARD_HTTP__TLS_RELOAD_SECONDS".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await?;
    server.db = Some(db);
    let addr = server.addrs.https.ok_or("no https address in the log")?;
    let first = pem_of(&cert)?;
    assert_eq!(served_certificate(addr).await?.trim(), first);

    let client = Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let res = client.get(format!("https://{addr}/healthz")).send().await?;
    assert_eq!(res.status(), StatusCode::OK);
    // Over TLS the anonymous form's cookie is Secure, whatever the client claims.
    let res = client
        .get(format!("https://{addr}/login"))
        .header("x-forwarded-proto", "http")
        .send()
        .await?;
    let (_, whole) = set_cookie(res.headers(), "siteward_csrf").ok_or("no csrf cookie")?;
    assert!(whole.contains("Secure"), "{whole}");
    // Plain HTTP is unchanged.
    let res = client.get(server.url("/login")).send().await?;
    let (_, whole) = set_cookie(res.headers(), "siteward_csrf").ok_or("no csrf cookie")?;
    assert!(!whole.contains("Secure"), "{whole}");

    // A renewal in place: served on the next connections, no restart.
    make_cert(tmp.path(), "localhost")?;
    let second = pem_of(&cert)?;
    assert_ne!(first, second);
    let t = Instant::now();
    while served_certificate(addr).await?.trim() != second {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the new certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A key that does not match is refused; the current certificate stays.
    let other = tempfile::tempdir()?;
    make_cert(other.path(), "localhost")?;
    std::fs::copy(other.path().join("localhost/privkey.pem"), &key)?;
    let t = Instant::now();
    while !server.logs().contains("could not be reloaded") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "a mismatched key was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served_certificate(addr).await?.trim(), second);
    let res = client.get(format!("https://{addr}/healthz")).send().await?;
    assert_eq!(res.status(), StatusCode::OK);
    server.stop().await
}

/// Forwarding headers count only from `http.trusted_proxies`: a client that is not the edge
/// cannot spread its failures over made-up addresses, and a script's good key keeps working
/// while its address is throttled.
#[tokio::test]
async fn forwarded_addresses_are_believed_only_from_trusted_proxies() -> TestResult {
    // The edge is elsewhere: this test's loopback client is not it.
    let trusted = (
        "SITEWARD_HTTP__TRUSTED_PROXIES",
        "192.0.2.7, 198.51.100.0/24",
    );
    let (server, key) = root_server(
        TestDb::new().await?,
        vec![(trusted.0.into(), trusted.1.into())],
    )
    .await?;
    let http = Client::new();
    let me = server.url("/api/v1/me");
    // Bad keys, each claiming another address: all count against 127.0.0.1, which is throttled
    // after 20 failures (had the claims been believed, no address would ever reach that).
    let mut statuses = Vec::new();
    for i in 0..25 {
        let res = http
            .get(&me)
            .bearer_auth(format!("sw_nope{i}_secret"))
            .header("x-real-ip", format!("203.0.113.{i}"))
            .send()
            .await?;
        statuses.push(res.status().as_u16());
    }
    // (The set-up's own polls for the new key may already have counted a few failures.)
    let first_429 = statuses.iter().position(|&s| s == 429);
    assert!(
        first_429.is_some_and(|i| (10..=20).contains(&i))
            && statuses[..first_429.unwrap_or(0)].iter().all(|&s| s == 401)
            && statuses[first_429.unwrap_or(0)..].iter().all(|&s| s == 429),
        "{statuses:?}"
    );
    // The key that already verified is still accepted from the throttled address.
    let res = http.get(&me).bearer_auth(&key).send().await?;
    assert_eq!(res.status(), StatusCode::OK);
    server.stop().await
}

/// Sessions are answered from memory in every process, yet a session deleted anywhere stops
/// working everywhere at once; cookies are signed, and rotating the signing secret keeps
/// sessions alive while `--revoke-all` ends them.
#[tokio::test]
async fn sessions_are_signed_cached_and_invalidated_across_processes() -> TestResult {
    let a = Server::start().await?;
    let db = a.db.as_ref().ok_or("no test database")?;
    let b = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        ..Default::default()
    })
    .await?;
    let store = db.store().await?;
    let carol = store
        .create_user(
            siteward_store::NewUser {
                username: "carol".into(),
                password: Some(PASSWORD.into()),
                ..Default::default()
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    let now = chrono::Utc::now();
    let session = |store: siteward_store::Store| async move {
        let (cookie, _) = store
            .create_session(
                carol.uid_number,
                chrono::Duration::hours(1),
                None,
                None,
                now,
            )
            .await?;
        TestResult::Ok(cookie)
    };
    let first = session(store.clone()).await?;
    let second = session(store.clone()).await?;
    let http = Client::new();
    let status = |server: &Server, cookie: &str| {
        let req = http
            .get(server.url("/auth/verify"))
            .header(COOKIE, format!("siteward_session={cookie}"))
            .header("x-original-url", "https://app.lab.test/");
        async move { TestResult::Ok(req.send().await?.status()) }
    };
    // Both processes answer (and from now on remember) both sessions, once the new user has
    // reached their snapshots through the change feed.
    let t = Instant::now();
    for server in [&a, &b] {
        for cookie in [&first, &second] {
            while status(server, cookie).await? != StatusCode::OK {
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "a new session is refused"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // A forged cookie: a real session id under another session's signature; a bare id.
    let (id1, _) = first.split_once('.').ok_or("unsigned cookie")?;
    let (_, mac2) = second.split_once('.').ok_or("unsigned cookie")?;
    for forged in [format!("{id1}.{mac2}"), id1.to_owned()] {
        assert_eq!(
            status(&a, &forged).await?,
            StatusCode::UNAUTHORIZED,
            "{forged}"
        );
    }
    // A third process ends the first session: both servers refuse it promptly, keep the other.
    store.delete_session(&first).await?;
    let t = Instant::now();
    for server in [&a, &b] {
        while status(server, &first).await? != StatusCode::UNAUTHORIZED {
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "a deleted session still works"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    println!(
        "deleted session refused by both servers after {:?}",
        t.elapsed()
    );
    assert_eq!(status(&a, &second).await?, StatusCode::OK);
    assert_eq!(status(&b, &second).await?, StatusCode::OK);

    // Rotation: the old cookie stays valid, new cookies are signed by the new secret.
    let data = tempfile::tempdir()?;
    let data_dir = data.path().display().to_string();
    let cli = |extra: &'static [&'static str]| {
        let (url, dir) = (db.url.clone(), data_dir.clone());
        async move {
            let mut args = vec![
                "--data-dir",
                dir.as_str(),
                "--database-url",
                url.as_str(),
                "session-secret",
                "rotate",
            ];
            args.extend_from_slice(extra);
            let key = test_key_base64();
            let (st, out, err) = run_cli(&args, &[("SITEWARD_SECRET_KEY", &key)], None).await?;
            assert!(st.success(), "{out}{err}");
            TestResult::Ok(err)
        }
    };
    cli(&[]).await?;
    store.load_session_secrets().await?;
    let third = session(store.clone()).await?;
    assert_ne!(third.split_once('.').map(|x| x.1), Some(mac2));
    let t = Instant::now();
    for server in [&a, &b] {
        while status(server, &third).await? != StatusCode::OK {
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "the new secret is not picked up"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(status(server, &second).await?, StatusCode::OK);
    }
    // After a leak: every older secret and every session go, at once, everywhere.
    let said = cli(&["--revoke-all"]).await?;
    assert!(said.contains("every session"), "{said}");
    let t = Instant::now();
    for server in [&a, &b] {
        for cookie in [&second, &third] {
            while status(server, cookie).await? != StatusCode::UNAUTHORIZED {
                assert!(
                    t.elapsed() < Duration::from_secs(2),
                    "revoked session still works"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    b.stop().await?;
    a.stop().await?;
    Ok(())
}

/// `bench/auth`: wrk through NGINX to the same backend protected and unprotected, and against
/// `/auth/verify` directly. Run with `bench/auth` (ignored in the normal test run).
#[tokio::test]
#[ignore = "benchmark: run bench/auth"]
async fn bench_auth() -> TestResult {
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let conns: u64 = std::env::var("BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let edge = Edge::start().await?;
    let b = edge.browser()?;
    let (_, alice, _) = sign_in(&edge, &b, "alice", "/").await?;
    let (s, _, _) = get_json(&b, &edge.https("app", "/"), &alice, &[]).await?;
    assert_eq!(s, StatusCode::OK);
    let common = |url: String| {
        vec![
            "-t2".to_owned(),
            format!("-c{conns}"),
            format!("-d{secs}s"),
            "--latency".to_owned(),
            "-H".to_owned(),
            format!("Cookie: {alice}"),
            url,
        ]
    };
    // Unprotected before and after the protected runs (the mean is the reference), protected with
    // NGINX reaching siteward over TCP, then over siteward's Unix socket.
    let (open1, open1_cpu) = wrk_with_cpu(&common(edge.https("open", "/"))).await?;
    let (tcp, tcp_cpu) = wrk_with_cpu(&common(edge.https("app", "/"))).await?;
    edge.reconfigure(&[("siteward_socket", edge.socket.display().to_string())])
        .await?;
    let (unix, unix_cpu) = wrk_with_cpu(&common(edge.https("app", "/"))).await?;
    let (open2, _) = wrk_with_cpu(&common(edge.https("open", "/"))).await?;
    let mut direct = common(edge.server.url("/auth/verify"));
    direct.insert(4, "-H".into());
    direct.insert(5, "X-Original-URL: https://app.lab.test/".into());
    let verify = wrk(&direct).await?;
    let (o1, o2) = (wrk_rate(&open1)?, wrk_rate(&open2)?);
    let o = (o1 + o2) / 2.0;
    let (t, u, v) = (wrk_rate(&tcp)?, wrk_rate(&unix)?, wrk_rate(&verify)?);
    println!("--- protected, auth_request over TCP ---\n{tcp}");
    println!("--- protected, auth_request over the Unix socket ---\n{unix}");
    println!("--- unprotected (first run) ---\n{open1}");
    println!("--- unprotected (second run) ---\n{open2}");
    println!("--- /auth/verify directly ---\n{verify}");
    println!("bench/auth: {secs}s each, {conns} connections, 2 wrk threads, TLS, keep-alive");
    println!(
        "unprotected          {o:>8.0} req/s   ({o1:.0} and {o2:.0})   p99 {}",
        wrk_p99(&open1).unwrap_or_default()
    );
    for (name, rate, out) in [
        ("protected (TCP) ", t, &tcp),
        ("protected (Unix)", u, &unix),
    ] {
        println!(
            "{name}     {rate:>8.0} req/s   ratio {:.2} (target >= 0.80: {})   p99 {}",
            rate / o,
            if rate / o >= 0.8 { "met" } else { "NOT met" },
            wrk_p99(out).unwrap_or_default()
        );
    }
    println!(
        "CPU per request, unprotected:      {}",
        cpu_per_request(&open1_cpu, o1, secs)
    );
    println!(
        "CPU per request, protected (TCP):  {}",
        cpu_per_request(&tcp_cpu, t, secs)
    );
    println!(
        "CPU per request, protected (Unix): {}",
        cpu_per_request(&unix_cpu, u, secs)
    );
    println!(
        "/auth/verify {v:>9.0} req/s   p99 {} (under load, {conns} connections)",
        wrk_p99(&verify).unwrap_or_default()
    );
    // Unloaded latency: one request at a time.
    let http = Client::new();
    let mut times = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        let res = http
            .get(edge.server.url("/auth/verify"))
            .header(COOKIE, &alice)
            .header("x-original-url", "https://app.lab.test/")
            .send()
            .await?;
        times.push(t.elapsed());
        assert_eq!(res.status(), StatusCode::OK);
    }
    times.sort();
    println!(
        "/auth/verify one at a time: p50 {:?} p99 {:?} (round trip through reqwest)",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
    Ok(())
}
