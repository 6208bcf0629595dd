//! What the edge itself serves stays the edge's (issue #13, items 2, 3 and 12): a user's
//! services cannot take a sign-in host or one of the edge's ports, and no transport service
//! hands a container the session cookie. Each test performs the attack against the real binary
//! behind a real NGINX (and, for the cookie, a real Chromium).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::auth::{call, free_port, id, Edge};
use crate::harness::*;
use crate::support::Chromium;

/// Makes alice (not an administrator) the owner of the edge's container `web` and returns an
/// API key of hers that the server accepts.
async fn alice_owns_web(edge: &Edge) -> TestResult<String> {
    let (s, v) = call(
        &edge.api,
        &edge.server,
        Some(&edge.admin_key),
        Method::PATCH,
        &format!("/containers/{}", edge.container_id),
        Some(json!({ "username": "alice" })),
    )
    .await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    let store = edge.server.db.as_ref().ok_or("db")?.store().await?;
    let (_, key) = store
        .create_api_key(
            "alice",
            "edge tests",
            None,
            &siteward_store::Actor::system(),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, me) = call(
            &edge.api,
            &edge.server,
            Some(&key),
            Method::GET,
            "/me",
            None,
        )
        .await?;
        if s == StatusCode::OK {
            assert!(!me["groups"].to_string().contains("sysadmins"), "{me}");
            return Ok(key);
        }
        if Instant::now() > deadline {
            return Err("alice's API key never reached the server".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `POST /containers/{web}/services` as `key`; the status and the error's `field`.
async fn add_service(edge: &Edge, key: &str, body: Value) -> TestResult<(StatusCode, Value)> {
    call(
        &edge.api,
        &edge.server,
        Some(key),
        Method::POST,
        &format!("/containers/{}/services", edge.container_id),
        Some(body),
    )
    .await
}

fn field(v: &Value) -> String {
    v["error"]["field"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_user_cannot_take_the_sign_in_host() -> TestResult {
    let edge = Edge::start().await?;
    let alice = alice_owns_web(&edge).await?;
    let other_id = {
        let (s, v) = call(
            &edge.api,
            &edge.server,
            Some(&edge.admin_key),
            Method::GET,
            "/external-domains",
            None,
        )
        .await?;
        assert_eq!(s, StatusCode::OK, "{v}");
        let items = v["items"].as_array().ok_or("items")?;
        let other = items
            .iter()
            .find(|d| d["domain"] == "other.test")
            .ok_or("other.test")?;
        id(other)?
    };
    // The sign-in host of lab.test (the public URL's) and of other.test (its first label),
    // in any case: refused, naming the field.
    for (label, domain) in [
        ("auth", edge.domain_id),
        ("AUTH", edge.domain_id),
        ("auth", other_id),
    ] {
        let (s, v) = add_service(
            &edge,
            &alice,
            json!({ "type": "http", "container_port": edge.backend.port(), "external_hostname": label, "external_domain_id": domain }),
        )
        .await?;
        assert_eq!(
            (s, field(&v).as_str()),
            (StatusCode::CONFLICT, "external_hostname"),
            "{label} on {domain}: {v}"
        );
    }
    // An administrator cannot either: the name is the edge's, not a user's.
    let (s, v) = add_service(
        &edge,
        &edge.admin_key,
        json!({ "type": "http", "container_port": edge.backend.port(), "external_hostname": "auth", "external_domain_id": edge.domain_id }),
    )
    .await?;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Nor does plain SQL get past the database.
    let pool = edge.server.db.as_ref().ok_or("db")?.pool().await?;
    let insert = |hostname: &'static str| {
        format!(
            "WITH s AS (INSERT INTO services (container_id, type, container_port) \
             VALUES ({}, 'http', {}) RETURNING id) \
             INSERT INTO http_services (service_id, external_hostname, external_domain_id) \
             SELECT id, '{hostname}', {} FROM s",
            edge.container_id,
            edge.backend.port(),
            edge.domain_id
        )
    };
    let refused = sqlx::query(&insert("auth")).execute(&pool).await;
    assert!(refused.is_err(), "the database took the sign-in host");

    // A row from before the reservation (written with the trigger off) is left out by the
    // renderer: NGINX keeps serving siteward's login page on the sign-in host.
    let mut tx = pool.begin().await?;
    sqlx::query("ALTER TABLE http_services DISABLE TRIGGER http_services_edge_reserved")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&insert("auth")).execute(&mut *tx).await?;
    sqlx::query("ALTER TABLE http_services ENABLE TRIGGER http_services_edge_reserved")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // The change reaches the snapshot through the feed; render until the service shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = edge.reconfigure(&[]).await?;
        if text.contains("is served by the edge itself") {
            break text;
        }
        if Instant::now() > deadline {
            return Err(format!("the service never reached the renderer:\n{text}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        text.matches("server_name auth.lab.test;").count(),
        1,
        "{text}"
    );
    let b = edge.browser()?;
    let res = b.get(edge.https("auth", "/login")).send().await?;
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await?;
    assert!(html.contains("Sign in"), "{html}");
    assert!(
        !html.contains("request-line"),
        "the user's backend answered: {html}"
    );
    // A protected service still sends browsers to siteward's sign-in host.
    let res = b.get(edge.https("app", "/x")).send().await?;
    assert_eq!(res.status(), StatusCode::FOUND);
    let location = res
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        location.starts_with(&edge.https("auth", "/login?")),
        "{location}"
    );
    Ok(())
}

#[tokio::test]
async fn transport_services_cannot_use_the_edges_ports() -> TestResult {
    let edge = Edge::start().await?;
    let alice = alice_owns_web(&edge).await?;
    // The edge's HTTPS port (also the public URL's), its HTTP port (`http.edge_ports`), and
    // the default ones, over TCP and UDP.
    for (port, protocol) in [
        (edge.https_port, "tcp"),
        (edge.http_port, "tcp"),
        (edge.https_port, "udp"),
        (443, "tcp"),
        (80, "tcp"),
    ] {
        let (s, v) = add_service(
            &edge,
            &alice,
            json!({ "type": "transport", "container_port": 22, "protocol": protocol, "external_port": port }),
        )
        .await?;
        assert_eq!(
            (s, field(&v).as_str()),
            (StatusCode::CONFLICT, "external_port"),
            "{protocol} {port}: {v}"
        );
    }
    // The database refuses them too, with plain SQL.
    let pool = edge.server.db.as_ref().ok_or("db")?.pool().await?;
    for port in [edge.https_port, edge.http_port, 443, 80] {
        let sql = format!(
            "WITH s AS (INSERT INTO services (container_id, type, container_port) \
             VALUES ({}, 'transport', 22) RETURNING id) \
             INSERT INTO transport_services (service_id, protocol, external_port) \
             SELECT id, 'tcp', {port} FROM s",
            edge.container_id
        );
        assert!(
            sqlx::query(&sql).execute(&pool).await.is_err(),
            "the database took port {port}"
        );
    }
    // Any other port is fine, and the edge still serves HTTPS after the reload.
    let port = free_port()?;
    let (s, v) = add_service(
        &edge,
        &alice,
        json!({ "type": "transport", "container_port": 22, "protocol": "tcp", "external_port": port }),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = edge.reconfigure(&[]).await?;
        if text.contains(&format!("listen 127.0.0.1:{port};")) {
            break text;
        }
        if Instant::now() > deadline {
            return Err(format!("the service never reached the renderer:\n{text}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!text.contains("port is the edge's own"), "{text}");
    let res = edge
        .browser()?
        .get(edge.https("auth", "/login"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    Ok(())
}

/// A TCP listener standing in for a user's container: records every byte it receives and
/// answers anything with a small HTTP response, then closes.
async fn recorder() -> TestResult<(SocketAddr, Arc<Mutex<Vec<u8>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                if let Ok(mut s) = seen.lock() {
                    s.extend_from_slice(&buf[..n]);
                    s.extend_from_slice(b"\n--\n");
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nrecorded")
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok((addr, out))
}

fn recorded(seen: &Arc<Mutex<Vec<u8>>>) -> String {
    seen.lock()
        .map(|s| String::from_utf8_lossy(&s).into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_session_cookie_never_reaches_a_container_through_a_transport_service() -> TestResult {
    let edge = Edge::start().await?;
    let alice = alice_owns_web(&edge).await?;
    let (backend, seen) = recorder().await?;
    // Attack: a TLS transport service, so the edge terminates TLS with the domain's certificate
    // and forwards the plaintext; and a plain TCP one (the container would do TLS itself).
    let (tls_port, plain_port) = (free_port()?, free_port()?);
    let (tls_status, tls_answer) = add_service(
        &edge,
        &alice,
        json!({ "type": "transport", "container_port": backend.port(), "protocol": "tcp", "external_port": tls_port, "use_tls": true }),
    )
    .await?;
    let (s, v) = add_service(
        &edge,
        &alice,
        json!({ "type": "transport", "container_port": backend.port(), "protocol": "tcp", "external_port": plain_port }),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !edge
        .reconfigure(&[])
        .await?
        .contains(&format!("listen 127.0.0.1:{plain_port};"))
    {
        if Instant::now() > deadline {
            return Err("the transport service never reached the renderer".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A browser signs in (the cookie covers lab.test)...
    let mut chrome = Chromium::start().await?;
    let session = chrome.new_page().await?;
    let app = edge.https("app", "/signed-in");
    let text = chrome
        .sign_in(&session, &app, &edge.https("auth", "/login"), "alice")
        .await?;
    assert!(text.contains("\"x-username\":\"alice\""), "{text}");
    let cookies = chrome.call(None, "Storage.getCookies", json!({})).await?;
    let held = cookies["cookies"]
        .as_array()
        .ok_or("cookies")?
        .iter()
        .any(|c| c["name"] == "siteward_session");
    assert!(held, "the browser holds no session cookie: {cookies}");

    // ...and is lured to the sign-in host and a service host on the transport ports, over
    // HTTPS and HTTP (cookies ignore ports).
    for url in [
        format!("https://auth.lab.test:{tls_port}/"),
        format!("https://app.lab.test:{tls_port}/"),
        format!("https://auth.lab.test:{plain_port}/"),
        format!("http://auth.lab.test:{plain_port}/"),
        format!("http://app.lab.test:{plain_port}/"),
    ] {
        chrome
            .call(Some(&session), "Page.navigate", json!({ "url": url }))
            .await?;
    }
    // The plain-HTTP visit did reach the container (so the browser was really there)...
    let deadline = Instant::now() + Duration::from_secs(10);
    while !recorded(&seen).contains(&format!("Host: app.lab.test:{plain_port}")) {
        if Instant::now() > deadline {
            return Err(format!(
                "the browser never reached the container:\n{}",
                recorded(&seen)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...but no request carried the session cookie.
    let all = recorded(&seen);
    assert!(
        !all.contains("siteward_session"),
        "the container received the session cookie:\n{all}"
    );
    // The edge refuses to terminate TLS for a transport service.
    assert_eq!(
        (tls_status, field(&tls_answer).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "use_tls"),
        "{tls_answer}"
    );
    Ok(())
}
