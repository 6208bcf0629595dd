//! The account-takeover paths of the security review, each performed as an attacker would
//! against the real binary: cross-origin writes with the session cookie, racing first
//! registrations and invites, registration floods, password guessing through `PUT
//! /me/password`, abandoned event streams, public metrics, the Unix socket's mode, and writes
//! during a database outage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, COOKIE, ORIGIN, SET_COOKIE};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::harness::*;
use crate::support::Relay;

const PASSWORD: &str = "a long enough password";

/// A client that does not follow redirects (sign-in answers 303 with the cookie).
fn client() -> TestResult<Client> {
    Ok(Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// `name=value` of the `Set-Cookie` for `name`.
pub(crate) fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

/// Registers `name` through the API from `addr` (the edge's `X-Real-IP`; loopback is a
/// trusted proxy by default).
async fn register(
    b: &Client,
    server: &Server,
    name: &str,
    addr: &str,
    invite: Option<&str>,
) -> TestResult<(StatusCode, Value)> {
    let mut body = json!({ "username": name, "password": PASSWORD });
    if let Some(i) = invite {
        body["invite"] = json!(i);
    }
    let res = b
        .post(server.url("/api/v1/register"))
        .header("x-real-ip", addr)
        .json(&body)
        .send()
        .await?;
    let status = res.status();
    let text = res.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Signs `user` in through the login page of the direct listener; the session cookie pair.
pub(crate) async fn sign_in(
    b: &Client,
    server: &Server,
    user: &str,
    password: &str,
) -> TestResult<String> {
    let page = b.get(server.url("/login")).send().await?;
    let csrf_cookie = set_cookie(&page, "siteward_csrf").ok_or("no csrf cookie")?;
    let token = crate::auth::csrf_field(&page.text().await?)?;
    let res = b
        .post(server.url("/login"))
        .header(COOKIE, csrf_cookie)
        .form(&[
            ("username", user),
            ("password", password),
            ("redirect", "/account"),
            ("csrf", &token),
        ])
        .send()
        .await?;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "sign-in of {user} failed"
    );
    set_cookie(&res, "siteward_session").ok_or_else(|| "no session cookie".into())
}

/// An API key for `name`, made through the store, once the server's snapshot knows it.
async fn key_for(b: &Client, server: &Server, name: &str) -> TestResult<String> {
    let store = server.db.as_ref().ok_or("no db")?.store().await?;
    let (_, key) = store
        .create_api_key(name, "test", None, &siteward_store::Actor::system())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = b
            .get(server.url("/api/v1/me"))
            .bearer_auth(&key)
            .send()
            .await?
            .status();
        if s == StatusCode::OK {
            return Ok(key);
        }
        if Instant::now() > deadline {
            return Err(format!("the key never worked: {s}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `name` exists, asked with an admin key.
async fn user_exists(b: &Client, server: &Server, key: &str, name: &str) -> TestResult<bool> {
    let v: Value = b
        .get(server.url("/api/v1/users?limit=500"))
        .bearer_auth(key)
        .send()
        .await?
        .json()
        .await?;
    Ok(v["items"]
        .as_array()
        .ok_or("no items")?
        .iter()
        .any(|u| u["username"] == name))
}

#[tokio::test]
async fn cookie_writes_from_other_origins_are_refused() -> TestResult {
    let server = Server::start().await?;
    let b = client()?;
    let (s, _) = register(&b, &server, "alice", "192.0.2.1", None).await?;
    assert_eq!(s, StatusCode::CREATED);
    let key = key_for(&b, &server, "alice").await?;
    let jar = sign_in(&b, &server, "alice", PASSWORD).await?;
    let http = server.addrs.http.ok_or("no http")?;
    let own = format!("http://{http}");
    let users = server.url("/api/v1/users");
    let attempt = |origin: Option<String>,
                   fetch_site: Option<&'static str>,
                   ctype: &'static str,
                   name: &str| {
        let mut req = b
            .post(&users)
            .header(COOKIE, &jar)
            .header(CONTENT_TYPE, ctype)
            .body(json!({ "username": name, "password": PASSWORD, "admin": true }).to_string());
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        if let Some(f) = fetch_site {
            req = req.header("sec-fetch-site", f);
        }
        req.send()
    };

    // The review's reproduction: a sibling host's page posts "text/plain" that contains +json.
    let res = attempt(
        Some("https://evil.lab.test".into()),
        Some("same-site"),
        "text/plain;a=+json",
        "mallory",
    )
    .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let v: Value = res.json().await?;
    assert_eq!(v["error"]["code"], "cross_origin", "{v}");

    // Every other origin: another host, another port of this host, another scheme, null, and
    // no word at all from a client that sends the cookie.
    let other_port = format!("http://{}:{}", http.ip(), http.port() + 1);
    let other_scheme = format!("https://{http}");
    for (origin, site) in [
        (Some("https://evil.lab.test".to_owned()), None),
        (Some(other_port), Some("same-origin")),
        (Some(other_scheme), None),
        (Some("null".to_owned()), None),
        (None, Some("same-site")),
        (None, Some("cross-site")),
        (None, Some("none")),
        (None, None),
    ] {
        let res = attempt(origin.clone(), site, "application/json", "mallory").await?;
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "Origin {origin:?}, Sec-Fetch-Site {site:?}"
        );
    }
    assert!(!user_exists(&b, &server, &key, "mallory").await?);

    // The same cookie from a page of this very origin works, by Origin or by Sec-Fetch-Site.
    let res = attempt(Some(own.clone()), None, "application/json", "erin").await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = attempt(None, Some("same-origin"), "application/json", "frank").await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    // Only JSON is JSON, even from this origin.
    let res = attempt(Some(own.clone()), None, "text/plain;a=+json", "gus").await?;
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let res = attempt(
        Some(own.clone()),
        None,
        "application/merge-patch+json; charset=utf-8",
        "gus",
    )
    .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    // Reads with the cookie are not writes.
    let res = b
        .get(&users)
        .header(COOKIE, &jar)
        .header(ORIGIN, "https://evil.lab.test")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("access-control-allow-origin").is_none());

    // API keys are not sent by browsers on their own: the origin does not matter for them.
    let res = b
        .post(&users)
        .bearer_auth(&key)
        .header(ORIGIN, "https://evil.lab.test")
        .json(&json!({ "username": "hank", "password": PASSWORD }))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = b
        .post(&users)
        .bearer_auth(&key)
        .header(CONTENT_TYPE, "text/plain;a=+json")
        .body(json!({ "username": "ivan", "password": PASSWORD }).to_string())
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // The sign-in pages compare ports too: a form posted from another port of this host is
    // refused even with the right token.
    let page = b
        .get(server.url("/account"))
        .header(COOKIE, &jar)
        .send()
        .await?;
    let token = crate::auth::csrf_field(&page.text().await?)?;
    let res = b
        .post(server.url("/account/profile"))
        .header(COOKIE, &jar)
        .header(ORIGIN, format!("http://{}:{}", http.ip(), http.port() + 1))
        .form(&[("csrf", token.as_str()), ("cn", "Mallory Was Here")])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let me: Value = b
        .get(server.url("/api/v1/me"))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    assert_ne!(me["cn"], "Mallory Was Here");
    server.stop().await
}

/// Admins, counted in the database.
async fn admins(server: &Server) -> TestResult<i64> {
    let pool = server.db.as_ref().ok_or("no db")?.pool().await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM user_groups WHERE gid_number = 2001")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    Ok(n)
}

#[tokio::test]
async fn racing_registrations_make_one_admin_and_use_an_invite_once() -> TestResult {
    let server = Arc::new(Server::start().await?);
    let b = client()?;
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (b, server) = (b.clone(), server.clone());
        racers.spawn(async move {
            register(
                &b,
                &server,
                &format!("racer{i}"),
                &format!("192.0.2.{}", i + 1),
                None,
            )
            .await
        });
    }
    let mut active = Vec::new();
    while let Some(r) = racers.join_next().await {
        let (s, v) = r??;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        if v["status"] == "active" {
            active.push(v["username"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(active.len(), 1, "more than one first user: {active:?}");
    assert_eq!(admins(&server).await?, 1);

    // One invite, ten registrations at once: exactly one gets in.
    let key = key_for(&b, &server, &active[0]).await?;
    let invite: Value = b
        .post(server.url("/api/v1/invites"))
        .bearer_auth(&key)
        .json(&json!({ "email": "guest@example.org" }))
        .send()
        .await?
        .json()
        .await?;
    let token = invite["token"].as_str().ok_or("no token")?.to_owned();
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (b, server, token) = (b.clone(), server.clone(), token.clone());
        racers.spawn(async move {
            register(
                &b,
                &server,
                &format!("guest{i}"),
                &format!("198.51.100.{}", i + 1),
                Some(&token),
            )
            .await
        });
    }
    let mut took = 0;
    while let Some(r) = racers.join_next().await {
        let (s, v) = r??;
        match s {
            StatusCode::CREATED => {
                assert_eq!(v["status"], "active", "{v}");
                took += 1;
            }
            StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(v["error"]["field"], "invite", "{v}"),
            other => return Err(format!("unexpected {other}: {v}").into()),
        }
    }
    assert_eq!(took, 1, "the invite was used {took} times");
    assert_eq!(admins(&server).await?, 1);
    Arc::try_unwrap(server)
        .map_err(|_| "server still shared")?
        .stop()
        .await
}

#[tokio::test]
async fn registrations_are_throttled_per_address_and_pending_accounts_expire() -> TestResult {
    // Accounts from before this server started: one pending for three days, one pending for a
    // few hours, one active for a year.
    let db = TestDb::new().await?;
    let store = db.store().await?;
    store.migrate().await?;
    for name in ["stale", "fresh", "settled"] {
        store
            .create_user(
                siteward_store::NewUser {
                    username: name.into(),
                    status: Some(if name == "settled" {
                        siteward_store::UserStatus::Active
                    } else {
                        siteward_store::UserStatus::Pending
                    }),
                    ..Default::default()
                },
                &siteward_store::Actor::system(),
            )
            .await?;
    }
    let pool = db.pool().await?;
    for (name, age) in [
        ("stale", "3 days"),
        ("fresh", "3 hours"),
        ("settled", "365 days"),
    ] {
        sqlx::query(&format!(
            "UPDATE users SET created_at = now() - interval '{age}' WHERE username = $1"
        ))
        .bind(name)
        .execute(&pool)
        .await?;
    }
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        env: vec![
            ("SITEWARD_HTTP__PENDING_ACCOUNT_DAYS".into(), "2".into()),
            ("SITEWARD_HTTP__REGISTRATIONS_PER_HOUR".into(), "5".into()),
        ],
        ..Default::default()
    })
    .await?;
    // The cleanup runs once the migrations are in, then every ten minutes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names: Vec<String> = sqlx::query_scalar("SELECT username FROM users ORDER BY 1")
            .fetch_all(&pool)
            .await?;
        if !names.contains(&"stale".to_owned()) {
            assert_eq!(names, ["fresh", "settled"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stale account is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let b = client()?;
    for i in 0..5 {
        let (s, v) = register(&b, &server, &format!("flood{i}"), "203.0.113.9", None).await?;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    // Over the budget, even a valid registration is refused, and nothing is written.
    let (s, v) = register(&b, &server, "flood5", "203.0.113.9", None).await?;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    // The sign-in page's form shares the budget.
    let page = b.get(server.url("/register")).send().await?;
    let csrf_cookie = set_cookie(&page, "siteward_csrf").ok_or("no csrf cookie")?;
    let token = crate::auth::csrf_field(&page.text().await?)?;
    let res = b
        .post(server.url("/register"))
        .header(COOKIE, csrf_cookie)
        .header("x-real-ip", "203.0.113.9")
        .form(&[
            ("username", "flood6"),
            ("password", PASSWORD),
            ("csrf", &token),
        ])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another address is not affected.
    let (s, _) = register(&b, &server, "neighbour", "203.0.113.10", None).await?;
    assert_eq!(s, StatusCode::CREATED);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE username LIKE 'flood%'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(n, 5);
    pool.close().await;
    server.db = Some(db);
    server.stop().await
}

#[tokio::test]
async fn wrong_current_passwords_lock_put_me_password() -> TestResult {
    let server = Server::start().await?;
    let b = client()?;
    register(&b, &server, "root", "192.0.2.1", None).await?;
    let key = key_for(&b, &server, "root").await?;
    let change = |old: &str| {
        b.put(server.url("/api/v1/me/password"))
            .bearer_auth(&key)
            .json(&json!({ "old_password": old, "password": "the next long password" }))
            .send()
    };
    let mut refused_at = None;
    for i in 0..30 {
        let s = change(&format!("guess number {i}")).await?.status();
        if s == StatusCode::TOO_MANY_REQUESTS {
            refused_at = Some(i);
            break;
        }
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    }
    // The account's sign-in limit (10 per 5 minutes) applies here too.
    assert_eq!(refused_at, Some(10));
    // While blocked even the right password is not checked: guessing gains nothing.
    assert_eq!(
        change(PASSWORD).await?.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let store = server.db.as_ref().ok_or("no db")?.store().await?;
    let user = store.user("root").await?;
    assert!(siteward_store::password::verify_password(PASSWORD.into(), user.password_hash).await?);
    server.stop().await
}

/// The open-streams gauge from `/metrics`.
async fn open_streams(server: &Server) -> TestResult<f64> {
    let (value, text) = server.metric("siteward_http_event_streams").await?;
    value.ok_or_else(|| format!("no stream gauge in\n{text}").into())
}

#[tokio::test]
async fn event_streams_are_bounded_per_user_and_end_with_their_client() -> TestResult {
    let server = Server::start().await?;
    let b = client()?;
    register(&b, &server, "root", "192.0.2.1", None).await?;
    let key = key_for(&b, &server, "root").await?;
    let store = server.db.as_ref().ok_or("no db")?.store().await?;
    let uid = store.user("root").await?.uid_number;
    // A job that stays running for as long as the test needs.
    let job = store
        .create_job("long job", "container:1", Some(uid))
        .await?;
    store
        .set_job_status(job, siteward_store::JobState::Running)
        .await?;
    store.job_log(job, "step 1").await?;
    let url = server.url(&format!("/api/v1/jobs/{}/events", job.0));
    let mut streams = Vec::new();
    for _ in 0..8 {
        let mut res = b.get(&url).bearer_auth(&key).send().await?;
        assert_eq!(res.status(), StatusCode::OK);
        let first = tokio::time::timeout(Duration::from_secs(5), res.chunk())
            .await??
            .ok_or("stream ended")?;
        assert!(String::from_utf8_lossy(&first).contains("step 1"));
        streams.push(res);
    }
    assert_eq!(open_streams(&server).await?, 8.0);
    let res = b.get(&url).bearer_auth(&key).send().await?;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let v: Value = res.json().await?;
    assert_eq!(v["error"]["code"], "too_many_streams");

    // The clients leave while the job still runs: the server stops polling for them.
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_streams(&server).await? != 0.0 {
        assert!(
            Instant::now() < deadline,
            "streams kept polling after their clients left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the user can open streams again.
    let res = b.get(&url).bearer_auth(&key).send().await?;
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);
    server.stop().await
}

#[tokio::test]
async fn metrics_and_readiness_reasons_stay_off_the_public_listeners() -> TestResult {
    let b = client()?;
    let server = Server::start().await?;
    assert_eq!(
        b.get(server.url("/metrics")).send().await?.status(),
        StatusCode::NOT_FOUND
    );
    let res = b.get(server.metrics_url("/metrics")).send().await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await?.contains("siteward_http_requests_total"));
    // The operator's listener serves nothing else.
    assert_eq!(
        b.get(server.metrics_url("/api/v1/me"))
            .send()
            .await?
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        b.get(server.metrics_url("/login")).send().await?.status(),
        StatusCode::NOT_FOUND
    );
    server.stop().await?;

    // With a token, /metrics also answers on the public listener, to that token only.
    let server = Server::start_on_fresh_db(
        vec!["--metrics".into(), "off".into()],
        vec![(
            "SITEWARD_HTTP__METRICS_TOKEN".into(),
            "scrape-token-1".into(),
        )],
    )
    .await?;
    assert!(server.addrs.metrics.is_none());
    let get = |token: Option<&'static str>| {
        let mut req = b.get(server.url("/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(get(None).await?.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get(Some("scrape-token-2")).await?.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(Some("scrape-token-1")).await?.status(), StatusCode::OK);
    server.stop().await
}

#[tokio::test]
async fn the_unix_socket_is_only_for_its_owner_and_group() -> TestResult {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = tempfile::tempdir()?;
    for (mode, group, want_mode) in [(None, None, 0o660), (Some("0600"), Some("nogroup"), 0o600)] {
        let sock = tmp.path().join(format!("http-{want_mode:o}.sock"));
        let mut env = vec![(
            "SITEWARD_HTTP__UNIX_SOCKET".to_owned(),
            sock.display().to_string(),
        )];
        if let Some(m) = mode {
            env.push(("SITEWARD_HTTP__UNIX_SOCKET_MODE".into(), m.into()));
        }
        if let Some(g) = group {
            env.push(("SITEWARD_HTTP__UNIX_SOCKET_GROUP".into(), g.into()));
        }
        let server = Server::start_on_fresh_db(Vec::new(), env).await?;
        let meta = std::fs::metadata(&sock)?;
        assert_eq!(meta.permissions().mode() & 0o777, want_mode);
        if let Some(g) = group {
            let gid = nix::unistd::Group::from_name(g)?
                .ok_or("no such group")?
                .gid
                .as_raw();
            assert_eq!(meta.gid(), gid);
        }
        server.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn writes_answer_503_while_the_database_is_down() -> TestResult {
    let db = TestDb::new().await?;
    let (relay, url) = Relay::to_db(&db).await?;
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(url),
        ..Default::default()
    })
    .await?;
    server.db = Some(db);
    let b = client()?;
    register(&b, &server, "root", "192.0.2.1", None).await?;
    let key = key_for(&b, &server, "root").await?;
    let create = || {
        b.post(server.url("/api/v1/groups"))
            .bearer_auth(&key)
            .json(&json!({ "cn": "during-outage" }))
            .send()
    };

    relay.cut();
    let started = Instant::now();
    let res = create().await?;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().get("retry-after").is_some());
    let v: Value = res.json().await?;
    assert_eq!(v["error"]["code"], "database_unavailable", "{v}");
    assert!(
        !v.to_string().to_lowercase().contains("sqlx")
            && !v.to_string().to_lowercase().contains("connection refused"),
        "database text reached the client: {v}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // Reads that need the database say the same; the process itself stays up.
    let res = b
        .get(server.url("/api/v1/me"))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        b.get(server.url("/healthz")).send().await?.status(),
        StatusCode::OK
    );

    relay.restore();
    server.wait_ready(Duration::from_secs(30)).await?;
    let res = create().await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let groups: Value = b
        .get(server.url("/api/v1/groups?limit=500"))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    let n = groups["items"]
        .as_array()
        .ok_or("no items")?
        .iter()
        .filter(|g| g["cn"] == "during-outage")
        .count();
    assert_eq!(n, 1, "the refused write was applied after all: {groups}");
    server.stop().await
}
