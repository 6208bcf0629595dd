//! The admin API against the real server: accounts and roles, every resource, validation and
//! error format, conflicts, pagination, port allocation under concurrency, audit, OpenAPI.

use std::collections::HashSet;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::*;

struct Api {
    server: Server,
    http: Client,
}

impl Api {
    async fn start() -> TestResult<Self> {
        Ok(Self {
            server: Server::start().await?,
            http: Client::new(),
        })
    }

    async fn call(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> TestResult<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method, self.server.url(&format!("/api/v1{path}")));
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
            serde_json::from_str(&text).map_err(|e| format!("{status} {text}: {e}"))?
        };
        Ok((status, value))
    }

    /// Registers `name` and returns an API key for them (made through the store when the
    /// account is pending and cannot sign in yet).
    async fn register(&self, name: &str) -> TestResult<(StatusCode, Value)> {
        self.call(None, Method::POST, "/register", Some(json!({ "username": name, "password": "a long enough password", "mail": format!("{name}@example.org") }))).await
    }

    async fn key_for(&self, name: &str) -> TestResult<String> {
        let store = self.server.db.as_ref().ok_or("no db")?.store().await?;
        let (_, key) = store
            .create_api_key(name, "test", None, &siteward_store::Actor::system())
            .await?;
        // The key reaches the server's snapshot through the change feed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let (s, _) = self.call(Some(&key), Method::GET, "/me", None).await?;
            if s != StatusCode::UNAUTHORIZED || std::time::Instant::now() > deadline {
                return Ok(key);
            }
            // Not too eagerly: every 401 counts towards the failed-authentication throttle.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

fn err_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

fn err_field(v: &Value) -> &str {
    v["error"]["field"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn registration_roles_and_accounts() -> TestResult {
    let api = Api::start().await?;
    // The first user becomes an active administrator.
    let (s, first) = api.register("root").await?;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["status"], "active");
    let groups: Vec<&str> = first["groups"]
        .as_array()
        .ok_or("groups")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        groups.contains(&"sysadmins") && groups.contains(&"ldapusers"),
        "{first}"
    );
    assert!(first.get("password_hash").is_none() && !first.to_string().contains("argon2"));
    assert_eq!(first["uid_number"], 2000);
    // The second is pending and cannot authenticate.
    let (s, second) = api.register("bob").await?;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(second["status"], "pending");
    assert_eq!(second["uid_number"], 2001);
    let admin = api.key_for("root").await?;
    let bob_key = api.key_for("bob").await?;
    let (s, _) = api.call(Some(&bob_key), Method::GET, "/me", None).await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // An admin activates bob; now he can.
    let (s, v) = api
        .call(
            Some(&admin),
            Method::PATCH,
            "/users/2001",
            Some(json!({ "status": "active" })),
        )
        .await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, me) = api.call(Some(&bob_key), Method::GET, "/me", None).await?;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["username"], "bob");
    // Non-admins get 404 on admin resources, not 403.
    for path in [
        "/sites",
        "/users",
        "/groups",
        "/audit",
        "/settings",
        "/nodes",
        "/external-domains",
        "/users/2000",
    ] {
        let (s, v) = api.call(Some(&bob_key), Method::GET, path, None).await?;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {v}");
    }
    // But may read themselves.
    let (s, _) = api
        .call(Some(&bob_key), Method::GET, "/users/2001", None)
        .await?;
    assert_eq!(s, StatusCode::OK);
    // No credentials, bad credentials.
    let (s, v) = api.call(None, Method::GET, "/me", None).await?;
    assert_eq!(
        (s, err_code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (s, _) = api
        .call(Some("sw_nope_nope"), Method::GET, "/me", None)
        .await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let wrong_secret = format!("{}x", &admin[..admin.len() - 1]);
    let (s, _) = api
        .call(Some(&wrong_secret), Method::GET, "/me", None)
        .await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Profile and password changes.
    let (s, v) = api.call(Some(&bob_key), Method::PATCH, "/me", Some(json!({ "given_name": "Bob", "ssh_public_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 bob@host"] }))).await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .call(
            Some(&bob_key),
            Method::PATCH,
            "/me",
            Some(json!({ "status": "active" })),
        )
        .await?;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api
        .call(
            Some(&bob_key),
            Method::PATCH,
            "/me",
            Some(json!({ "ssh_public_keys": ["not a key"] })),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "ssh_public_keys")
    );
    let (s, v) = api
        .call(
            Some(&bob_key),
            Method::PUT,
            "/me/password",
            Some(json!({ "old_password": "wrong", "password": "a brand new password" })),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "old_password")
    );
    let (s, _) = api.call(Some(&bob_key), Method::PUT, "/me/password", Some(json!({ "old_password": "a long enough password", "password": "a brand new password" }))).await?;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Suspension takes effect on the next request.
    let (s, _) = api
        .call(
            Some(&admin),
            Method::PATCH,
            "/users/2001",
            Some(json!({ "status": "suspended" })),
        )
        .await?;
    assert_eq!(s, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    loop {
        let (s, _) = api.call(Some(&bob_key), Method::GET, "/me", None).await?;
        if s == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "suspended user still authenticated"
        );
    }
    // Validation of registration.
    let (s, v) = api.call(None, Method::POST, "/register", Some(json!({ "username": "'; DROP TABLE users; --", "password": "a long enough password" }))).await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "username")
    );
    let (s, v) = api
        .call(
            None,
            Method::POST,
            "/register",
            Some(json!({ "username": "carl", "password": "short" })),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "password")
    );
    let (s, v) = api.register("BOB").await?;
    assert_eq!((s, err_code(&v)), (StatusCode::CONFLICT, "conflict"), "{v}");
    let (s, v) = api
        .call(
            None,
            Method::POST,
            "/register",
            Some(json!({ "username": "eve", "password": "a long enough password", "admin": true })),
        )
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    api.server.stop().await
}

#[tokio::test]
async fn invites_and_password_resets() -> TestResult {
    let api = Api::start().await?;
    api.register("root").await?;
    let admin = api.key_for("root").await?;
    let (s, inv) = api
        .call(
            Some(&admin),
            Method::POST,
            "/invites",
            Some(json!({ "email": "dana@example.org" })),
        )
        .await?;
    assert_eq!(s, StatusCode::CREATED, "{inv}");
    let token = inv["token"].as_str().ok_or("token")?.to_owned();
    assert!(inv["link"].as_str().is_some_and(|l| l.contains(&token)));
    // The stored token is a hash, not the token.
    let pool = api.server.db.as_ref().ok_or("db")?.pool().await?;
    let stored: String = sqlx::query_scalar("SELECT token FROM invite_tokens")
        .fetch_one(&pool)
        .await?;
    assert_ne!(stored, token);
    let (s, dana) = api.call(None, Method::POST, "/register", Some(json!({ "username": "dana", "password": "a long enough password", "mail": "other@evil.org", "invite": token }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{dana}");
    assert_eq!(dana["status"], "active");
    assert_eq!(
        dana["mail"], "dana@example.org",
        "the invite fixes the e-mail"
    );
    // Single use.
    let (s, v) = api.call(None, Method::POST, "/register", Some(json!({ "username": "dana2", "password": "a long enough password", "invite": token }))).await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invite")
    );
    // Expired invites do not work either.
    let (_, inv2) = api
        .call(
            Some(&admin),
            Method::POST,
            "/invites",
            Some(json!({ "email": "late@example.org" })),
        )
        .await?;
    sqlx::query("UPDATE invite_tokens SET expires_at = now() - interval '1 second' WHERE email = 'late@example.org'").execute(&pool).await?;
    let (s, _) = api.call(None, Method::POST, "/register", Some(json!({ "username": "late", "password": "a long enough password", "invite": inv2["token"] }))).await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // Password reset, single use.
    let (s, reset) = api
        .call(
            Some(&admin),
            Method::POST,
            "/password-resets",
            Some(json!({ "username": "dana" })),
        )
        .await?;
    assert_eq!(s, StatusCode::CREATED, "{reset}");
    let rt = reset["token"].as_str().ok_or("token")?;
    let (s, v) = api
        .call(
            None,
            Method::POST,
            &format!("/password-resets/{rt}"),
            Some(json!({ "password": "short" })),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "password")
    );
    let (s, v) = api
        .call(
            None,
            Method::POST,
            &format!("/password-resets/{rt}"),
            Some(json!({ "password": "dana's new password" })),
        )
        .await?;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, _) = api
        .call(
            None,
            Method::POST,
            &format!("/password-resets/{rt}"),
            Some(json!({ "password": "dana's newer password" })),
        )
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let hash: String =
        sqlx::query_scalar("SELECT user_password FROM users WHERE username = 'dana'")
            .fetch_one(&pool)
            .await?;
    assert!(
        siteward_store::password::verify_password("dana's new password".into(), Some(hash)).await?
    );
    let (s, _) = api
        .call(
            None,
            Method::POST,
            "/password-resets/../../etc/passwd",
            Some(json!({ "password": "whatever long" })),
        )
        .await?;
    assert_eq!(s, StatusCode::NOT_FOUND);
    pool.close().await;
    api.server.stop().await
}

#[tokio::test]
async fn topology_crud_validation_conflicts_and_ownership() -> TestResult {
    let api = Api::start().await?;
    api.register("root").await?;
    api.register("uma").await?;
    api.register("vic").await?;
    let admin = api.key_for("root").await?;
    for u in [2001, 2002] {
        api.call(
            Some(&admin),
            Method::PATCH,
            &format!("/users/{u}"),
            Some(json!({ "status": "active" })),
        )
        .await?;
    }
    let uma = api.key_for("uma").await?;
    let vic = api.key_for("vic").await?;

    // Sites: validation, conflict, success.
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/sites",
            Some(json!({ "name": "lab", "internal_domain": "not a domain" })),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "internal_domain")
    );
    let (s, v) = api.call(Some(&admin), Method::POST, "/sites", Some(json!({ "name": "lab", "internal_domain": "lab.internal", "gateway": "10.0.0.1", "subnet_mask": "255.255.255.0", "dhcp_range": "10.1.0.100-10.1.0.200" }))).await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "dhcp_range"),
        "{v}"
    );
    let (s, site) = api.call(Some(&admin), Method::POST, "/sites", Some(json!({ "name": "lab", "internal_domain": "Lab.Internal.", "gateway": "10.0.0.1", "subnet_mask": "255.255.255.0", "dhcp_range": "10.0.0.100-10.0.0.200", "dns_forwarders": "1.1.1.1, 9.9.9.9" }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{site}");
    assert_eq!(site["internal_domain"], "lab.internal");
    let site_id = site["id"].as_i64().ok_or("id")?;
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/sites",
            Some(json!({ "name": "lab2", "internal_domain": "lab.internal" })),
        )
        .await?;
    assert_eq!((s, err_code(&v)), (StatusCode::CONFLICT, "conflict"), "{v}");
    assert_eq!(err_field(&v), "internal_domain");
    let (s, v) = api
        .call(
            Some(&admin),
            Method::PATCH,
            &format!("/sites/{site_id}"),
            Some(json!({ "name": "Lab One", "external_ip": null })),
        )
        .await?;
    assert_eq!((s, v["name"].as_str()), (StatusCode::OK, Some("Lab One")));

    // Nodes: the secret is write-only.
    let (s, node) = api.call(Some(&admin), Method::POST, "/nodes", Some(json!({ "name": "pve1", "site_id": site_id, "api_token_id_or_username": "root@pam!sw", "api_token_secret_or_password": "top-secret-token-value" }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{node}");
    assert_eq!(node["has_secret"], true);
    let node_id = node["id"].as_i64().ok_or("id")?;
    let (_, list) = api.call(Some(&admin), Method::GET, "/nodes", None).await?;
    let (_, audit) = api.call(Some(&admin), Method::GET, "/audit", None).await?;
    for text in [node.to_string(), list.to_string(), audit.to_string()] {
        assert!(
            !text.contains("top-secret-token-value"),
            "secret leaked: {text}"
        );
    }
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/nodes",
            Some(json!({ "name": "pve1", "site_id": site_id })),
        )
        .await?;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/nodes",
            Some(json!({ "name": "pve9", "site_id": 999999 })),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "site_id"),
        "{v}"
    );

    // Containers: address rules, uniqueness within a site, ownership.
    let ct = |host: &str, ip: &str, mac: &str, owner: &str, vmid: i32| json!({ "hostname": host, "node_id": node_id, "ipv4_address": ip, "mac_address": mac, "username": owner, "container_id": vmid, "status": "running" });
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/containers/register",
            Some(ct("web", "10.9.0.5", "02:00:00:00:00:01", "uma", 100)),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "ipv4_address"),
        "outside subnet: {v}"
    );
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/containers/register",
            Some(ct("web", "10.0.0.150", "02:00:00:00:00:01", "uma", 100)),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "ipv4_address"),
        "inside DHCP: {v}"
    );
    let (s, web) = api
        .call(
            Some(&admin),
            Method::POST,
            "/containers/register",
            Some(ct("web", "10.0.0.10", "02:00:00:00:00:01", "uma", 100)),
        )
        .await?;
    assert_eq!(s, StatusCode::CREATED, "{web}");
    let web_id = web["id"].as_i64().ok_or("id")?;
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/containers/register",
            Some(ct("WEB", "10.0.0.11", "02:00:00:00:00:02", "vic", 101)),
        )
        .await?;
    assert_eq!((s, err_code(&v)), (StatusCode::CONFLICT, "conflict"), "{v}");
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/containers/register",
            Some(ct("db", "10.0.0.10", "02:00:00:00:00:02", "vic", 101)),
        )
        .await?;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/containers/register",
            Some(ct("bad_name", "10.0.0.12", "02:00:00:00:00:02", "vic", 101)),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "hostname")
    );
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/containers/register",
            Some(ct("db", "10.0.0.12", "zz:zz", "vic", 101)),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "mac_address")
    );
    let (s, db) = api
        .call(
            Some(&admin),
            Method::POST,
            "/containers/register",
            Some(ct("db", "10.0.0.12", "02:00:00:00:00:02", "vic", 101)),
        )
        .await?;
    assert_eq!(s, StatusCode::CREATED, "{db}");
    let db_id = db["id"].as_i64().ok_or("id")?;
    // Users see only theirs; another's id is 404 for every verb.
    let (_, mine) = api
        .call(Some(&uma), Method::GET, "/containers", None)
        .await?;
    let names: Vec<&str> = mine["items"]
        .as_array()
        .ok_or("items")?
        .iter()
        .filter_map(|c| c["hostname"].as_str())
        .collect();
    assert_eq!(names, vec!["web"]);
    for (m, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({ "hostname": "mine" }))),
        (Method::DELETE, None),
    ] {
        let (s, _) = api
            .call(Some(&uma), m.clone(), &format!("/containers/{db_id}"), body)
            .await?;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} on another's container");
    }
    let (s, _) = api
        .call(
            Some(&uma),
            Method::GET,
            &format!("/containers/{db_id}/services"),
            None,
        )
        .await?;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = api
        .call(
            Some(&uma),
            Method::PATCH,
            &format!("/containers/{web_id}"),
            Some(json!({ "username": "uma2" })),
        )
        .await?;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    // An owner's template must be one Proxmox has on the container's node: not a free-form
    // name, and nothing on a node siteward does not manage (tests/e2e/proxmox.rs has the rest).
    for template in [
        "debian-12",
        "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
    ] {
        let (s, v) = api
            .call(
                Some(&uma),
                Method::PATCH,
                &format!("/containers/{web_id}"),
                Some(json!({ "template": template })),
            )
            .await?;
        assert_eq!(
            (s, err_field(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "template"),
            "{template}: {v}"
        );
    }

    // External domains: key write-only; auth_required needs an auth server.
    let (s, dom) = api.call(Some(&admin), Method::POST, "/external-domains", Some(json!({ "domain": "example.org", "cloudflare_api_key": "cf-secret-key", "acme_email": "ops@example.org" }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{dom}");
    assert!(!dom.to_string().contains("cf-secret-key"));
    assert_eq!(dom["has_cloudflare_api_key"], true);
    let dom_id = dom["id"].as_i64().ok_or("id")?;
    let (s, v) = api.call(Some(&uma), Method::POST, &format!("/containers/{web_id}/services"), Some(json!({ "type": "http", "container_port": 80, "external_hostname": "app", "external_domain_id": dom_id, "auth_required": true }))).await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "auth_required"),
        "{v}"
    );
    let (s, v) = api.call(Some(&uma), Method::POST, &format!("/containers/{web_id}/services"), Some(json!({ "type": "http", "container_port": 80, "external_hostname": "app", "external_domain_id": dom_id }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api.call(Some(&vic), Method::POST, &format!("/containers/{db_id}/services"), Some(json!({ "type": "http", "container_port": 80, "external_hostname": "APP", "external_domain_id": dom_id }))).await?;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, v) = api
        .call(
            Some(&vic),
            Method::POST,
            &format!("/containers/{db_id}/services"),
            Some(json!({ "type": "dns", "container_port": 5432, "service_name": "postgres" })),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "service_name")
    );
    let (s, srv) = api.call(Some(&vic), Method::POST, &format!("/containers/{db_id}/services"), Some(json!({ "type": "dns", "container_port": 5432, "service_name": "_postgresql._tcp" }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{srv}");
    let (s, v) = api.call(Some(&vic), Method::POST, &format!("/containers/{db_id}/services"), Some(json!({ "type": "transport", "container_port": 53, "protocol": "udp", "use_tls": true }))).await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "use_tls")
    );
    let (s, v) = api
        .call(
            Some(&vic),
            Method::POST,
            &format!("/containers/{db_id}/services"),
            Some(json!({ "type": "smtp", "container_port": 25 })),
        )
        .await?;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = api
        .call(
            Some(&vic),
            Method::POST,
            &format!("/containers/{db_id}/services"),
            Some(json!({ "type": "dns", "container_port": 70000, "service_name": "_x._tcp" })),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "container_port")
    );
    // A domain in use cannot be deleted.
    let (s, _) = api
        .call(
            Some(&admin),
            Method::DELETE,
            &format!("/external-domains/{dom_id}"),
            None,
        )
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Static DNS records.
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            &format!("/sites/{site_id}/dns-records"),
            Some(json!({ "name": "www", "type": "A", "value": "not-an-ip" })),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "value")
    );
    let (s, rec) = api
        .call(
            Some(&admin),
            Method::POST,
            &format!("/sites/{site_id}/dns-records"),
            Some(
                json!({ "name": "www", "type": "cname", "value": "web.lab.internal.", "ttl": 60 }),
            ),
        )
        .await?;
    assert_eq!(s, StatusCode::CREATED, "{rec}");
    let (s, _) = api
        .call(
            Some(&admin),
            Method::DELETE,
            &format!("/sites/{site_id}/dns-records/{}", rec["id"]),
            None,
        )
        .await?;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // The change reached the server's snapshot (which LDAP and DNS serve from).
    let store = api.server.db.as_ref().ok_or("db")?.store().await?;
    store.reload(siteward_store::Dirty::ALL).await?;
    let snap = store.snapshot();
    let view = snap.naming.sites.values().next().ok_or("site")?;
    assert_eq!(view.containers.len(), 2);
    assert_eq!(view.dns_services.len(), 1);

    // Deleting in order.
    let (s, _) = api
        .call(
            Some(&admin),
            Method::DELETE,
            &format!("/sites/{site_id}"),
            None,
        )
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "site with nodes");
    let (s, _) = api
        .call(
            Some(&uma),
            Method::DELETE,
            &format!("/containers/{web_id}"),
            None,
        )
        .await?;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api
        .call(
            Some(&uma),
            Method::GET,
            &format!("/containers/{web_id}"),
            None,
        )
        .await?;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Audit: who did what.
    let (_, audit) = api
        .call(Some(&admin), Method::GET, "/audit?limit=500", None)
        .await?;
    let entries = audit["items"].as_array().ok_or("items")?;
    assert!(entries.iter().any(|e| e["action"] == "delete"
        && e["resource"] == "container"
        && e["actor_name"] == "uma"));
    assert!(entries.iter().any(|e| e["action"] == "create"
        && e["resource"] == "node"
        && e["remote_addr"] == "127.0.0.1"));
    api.server.stop().await
}

#[tokio::test]
async fn bad_input_gets_json_errors_and_changes_nothing() -> TestResult {
    let api = Api::start().await?;
    api.register("root").await?;
    let admin = api.key_for("root").await?;
    let url = api.server.url("/api/v1/sites");
    let send = |body: &'static str, ctype: &'static str| {
        api.http
            .post(&url)
            .bearer_auth(&admin)
            .header("content-type", ctype)
            .body(body)
            .send()
    };
    let r = send("{\"name\": \"x\", ", "application/json").await?;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await?;
    assert_eq!(err_code(&v), "malformed_json");
    let r = send(
        "{\"name\": \"x\", \"internal_domain\": \"x.internal\", \"colour\": \"red\"}",
        "application/json",
    )
    .await?;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await?;
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("colour")),
        "{v}"
    );
    let r = send(
        "{\"name\": 5, \"internal_domain\": \"x.internal\"}",
        "application/json",
    )
    .await?;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await?;
    assert_eq!(err_field(&v), "name", "{v}");
    let r = send("name=x", "application/x-www-form-urlencoded").await?;
    assert_eq!(r.status(), 415);
    let big = format!(
        "{{\"name\": \"{}\", \"internal_domain\": \"x.internal\"}}",
        "a".repeat(2 * 1024 * 1024)
    );
    // Its own connection: the server answers before reading the body and then closes it.
    let r = Client::new()
        .post(&url)
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await?;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await?;
    assert_eq!(err_code(&v), "body_too_large");
    for path in [
        "/sites/abc",
        "/sites/99999999999999999999",
        "/nosuch",
        "/sites/..%2Fusers",
        "/containers/-1",
    ] {
        let (s, v) = api.call(Some(&admin), Method::GET, path, None).await?;
        assert!(
            s == StatusCode::NOT_FOUND || s == StatusCode::BAD_REQUEST,
            "{path}: {s} {v}"
        );
        assert!(
            v["error"]["code"].is_string(),
            "{path}: not our error format: {v}"
        );
    }
    let (s, v) = api
        .call(Some(&admin), Method::GET, "/sites?limit=0", None)
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit")
    );
    let (s, v) = api
        .call(Some(&admin), Method::GET, "/sites?cursor=%27%3B--", None)
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "cursor")
    );
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/sites",
            Some(json!({ "name": "x'); DROP TABLE sites; --", "internal_domain": "x.internal" })),
        )
        .await?;
    assert_eq!(s, StatusCode::CREATED, "names may hold any text: {v}");
    assert_eq!(v["name"], "x'); DROP TABLE sites; --");
    // Nothing else was created.
    let (_, list) = api.call(Some(&admin), Method::GET, "/sites", None).await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    api.server.stop().await
}

#[tokio::test]
async fn pagination_walks_every_item_once() -> TestResult {
    let api = Api::start().await?;
    api.register("root").await?;
    let admin = api.key_for("root").await?;
    for i in 0..7 {
        let (s, v) = api
            .call(
                Some(&admin),
                Method::POST,
                "/groups",
                Some(json!({ "cn": format!("team{i}") })),
            )
            .await?;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/groups?limit=3&cursor={c}"),
            None => "/groups?limit=3".to_owned(),
        };
        let (s, page) = api.call(Some(&admin), Method::GET, &path, None).await?;
        assert_eq!(s, StatusCode::OK, "{page}");
        for g in page["items"].as_array().ok_or("items")? {
            seen.push(g["cn"].as_str().unwrap_or_default().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 9, "{seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 9);
    // Group membership.
    let (s, _) = api
        .call(
            Some(&admin),
            Method::POST,
            "/groups/2002/members",
            Some(json!({ "username": "root" })),
        )
        .await?;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, members) = api
        .call(Some(&admin), Method::GET, "/groups/2002/members", None)
        .await?;
    assert_eq!(members[0]["username"], "root");
    let (s, _) = api
        .call(
            Some(&admin),
            Method::DELETE,
            "/groups/2002/members/2000",
            None,
        )
        .await?;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api
        .call(Some(&admin), Method::DELETE, "/groups/2001", None)
        .await?;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "sysadmins cannot be deleted"
    );
    // Settings.
    let (s, v) = api
        .call(
            Some(&admin),
            Method::PUT,
            "/settings/smtp_url",
            Some(json!({ "value": "smtp://mail:25" })),
        )
        .await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api
        .call(
            Some(&admin),
            Method::PUT,
            "/settings/Bad%20Key",
            Some(json!({ "value": "x" })),
        )
        .await?;
    assert_eq!(
        (s, err_field(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "key")
    );
    let (_, all) = api
        .call(Some(&admin), Method::GET, "/settings", None)
        .await?;
    assert_eq!(all[0]["key"], "smtp_url");
    // The SMTP URL carries a password: sealed at rest, never shown again.
    let (s, v) = api
        .call(
            Some(&admin),
            Method::PUT,
            "/settings/smtp_url",
            Some(json!({ "value": "smtps://mailer:s3cret-pw@mail.example.org:465" })),
        )
        .await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains("s3cret-pw"), "{v}");
    for path in ["/settings", "/settings/smtp_url"] {
        let (s, v) = api.call(Some(&admin), Method::GET, path, None).await?;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(!v.to_string().contains("s3cret-pw"), "{path}: {v}");
        assert!(
            v.to_string().contains("mailer:********@mail.example.org"),
            "{path}: {v}"
        );
    }
    let pool = api.server.db.as_ref().ok_or("db")?.pool().await?;
    let stored: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = 'smtp_url'")
        .fetch_one(&pool)
        .await?;
    assert!(
        stored.starts_with("sealed:v1:") && !stored.contains("s3cret"),
        "{stored}"
    );
    pool.close().await;
    // What the mailer could not use is refused now, next to the value.
    for (key, value) in [
        ("smtp_url", "not a url"),
        ("smtp_url", "http://mail.example.org"),
        ("smtp_url", "smtp://"),
        ("smtp_from", "not an address"),
    ] {
        let (s, v) = api
            .call(
                Some(&admin),
                Method::PUT,
                &format!("/settings/{key}"),
                Some(json!({ "value": value })),
            )
            .await?;
        assert_eq!(
            (s, err_field(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "value"),
            "{key} = {value}: {v}"
        );
    }
    api.server.stop().await
}

#[tokio::test]
async fn transport_ports_are_unique_under_concurrency() -> TestResult {
    let api = Api::start().await?;
    api.register("root").await?;
    let admin = api.key_for("root").await?;
    let (_, site) = api
        .call(
            Some(&admin),
            Method::POST,
            "/sites",
            Some(json!({ "name": "s", "internal_domain": "s.internal" })),
        )
        .await?;
    let (_, node) = api
        .call(
            Some(&admin),
            Method::POST,
            "/nodes",
            Some(json!({ "name": "n1", "site_id": site["id"] })),
        )
        .await?;
    let (_, ct) = api
        .call(
            Some(&admin),
            Method::POST,
            "/containers/register",
            Some(json!({ "hostname": "c", "node_id": node["id"] })),
        )
        .await?;
    let path = format!("/containers/{}/services", ct["id"]);
    let calls = (0..50).map(|i| {
        let path = path.clone();
        let admin = admin.clone();
        let api = &api;
        async move {
            api.call(
                Some(&admin),
                Method::POST,
                &path,
                Some(json!({ "type": "transport", "protocol": "tcp", "container_port": 1000 + i })),
            )
            .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut ports = HashSet::new();
    for r in results {
        let (s, v) = r?;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        ports.insert(v["external_port"].as_i64().ok_or("port")?);
    }
    assert_eq!(ports.len(), 50, "duplicate ports handed out");
    assert_eq!(ports.iter().min(), Some(&2000));
    assert_eq!(ports.iter().max(), Some(&2049));
    api.server.stop().await
}

#[tokio::test]
async fn api_keys_lifecycle() -> TestResult {
    let api = Api::start().await?;
    api.register("root").await?;
    let admin = api.key_for("root").await?;
    let (s, created) = api
        .call(
            Some(&admin),
            Method::POST,
            "/api-keys",
            Some(json!({ "name": "laptop" })),
        )
        .await?;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().ok_or("secret")?.to_owned();
    assert!(created.get("key_hash").is_none());
    let (s, me) = api.call(Some(&secret), Method::GET, "/me", None).await?;
    assert_eq!((s, me["username"].as_str()), (StatusCode::OK, Some("root")));
    let (_, keys) = api
        .call(Some(&admin), Method::GET, "/api-keys", None)
        .await?;
    assert!(!keys.to_string().contains("argon2") && !keys.to_string().contains(&secret));
    let (s, _) = api
        .call(
            Some(&admin),
            Method::POST,
            "/api-keys",
            Some(json!({ "expires_at": "2001-01-01T00:00:00Z" })),
        )
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = api
        .call(
            Some(&admin),
            Method::DELETE,
            &format!("/api-keys/{}", created["id"]),
            None,
        )
        .await?;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = api.call(Some(&secret), Method::GET, "/me", None).await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revoked key still works");
    // Throttling: a burst of bad keys from one address gets 429.
    let mut last = StatusCode::OK;
    for _ in 0..25 {
        last = api
            .call(Some("sw_AAAAAAAAAAAA_wrong"), Method::GET, "/me", None)
            .await?
            .0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    api.server.stop().await
}

#[tokio::test]
async fn openapi_document_matches_the_routes() -> TestResult {
    let api = Api::start().await?;
    let doc: Value = api
        .http
        .get(api.server.url("/api/openapi.json"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().ok_or("paths")?;
    // Every operation the router was built from is documented, with a schema where it has one.
    let table = siteward_admin::api::api();
    assert!(table.operations.len() >= 50);
    for op in &table.operations {
        let entry = &paths.get(op.path).ok_or(format!("{} missing", op.path))?
            [op.method.to_ascii_lowercase()];
        assert!(
            entry.is_object(),
            "{} {} missing from the document",
            op.method,
            op.path
        );
        // And served: an unauthenticated call reaches the route (401/422/...), not the fallback.
        let url = api.server.url(&format!(
            "/api/v1{}",
            op.path
                .replace("{id}", "1")
                .replace("{uid}", "2000")
                .replace("{gid}", "2000")
                .replace("{service_id}", "1")
                .replace("{record_id}", "1")
                .replace("{key}", "k")
                .replace("{token}", "t")
        ));
        let method = Method::from_bytes(op.method.as_bytes())?;
        let r = api
            .http
            .request(method, &url)
            .json(&json!({}))
            .send()
            .await?;
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            body["error"]["message"] != "route not found",
            "{} {} is documented but not served",
            op.method,
            op.path
        );
    }
    // Every documented $ref resolves.
    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().ok_or("schemas")?;
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap_or_default();
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    // No secret field is documented as readable.
    for secret in ["password_hash", "key_hash", "user_password"] {
        assert!(!text.contains(secret), "{secret} in the document");
    }
    let html = api
        .http
        .get(api.server.url("/api/docs"))
        .send()
        .await?
        .text()
        .await?;
    assert!(html.contains("/api/v1/containers/{id}/services") && html.contains("<table>"));
    api.server.stop().await
}

/// A minimal SMTP server that accepts every message and hands over what it received.
async fn smtp_sink() -> TestResult<(
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
)> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let mut transcript = String::new();
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    transcript.push_str(&line);
                    transcript.push('\n');
                    let reply: &[u8] = if in_data {
                        if line == "." {
                            in_data = false;
                            b"250 queued\r\n"
                        } else {
                            continue;
                        }
                    } else {
                        let upper = line.to_ascii_uppercase();
                        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                            b"250 sink\r\n"
                        } else if upper.starts_with("DATA") {
                            in_data = true;
                            b"354 go ahead\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            break;
                        } else {
                            b"250 ok\r\n"
                        }
                    };
                    if w.write_all(reply).await.is_err() {
                        break;
                    }
                }
                let _ = tx.send(transcript);
            });
        }
    });
    Ok((addr, rx))
}

#[tokio::test]
async fn invites_and_resets_are_emailed_when_smtp_is_set() -> TestResult {
    let api = Api::start().await?;
    api.register("root").await?;
    let admin = api.key_for("root").await?;
    let (smtp, mut mails) = smtp_sink().await?;
    let (s, _) = api
        .call(
            Some(&admin),
            Method::PUT,
            "/settings/smtp_url",
            Some(json!({ "value": format!("smtp://{smtp}") })),
        )
        .await?;
    assert_eq!(s, StatusCode::OK);
    api.call(
        Some(&admin),
        Method::PUT,
        "/settings/smtp_from",
        Some(json!({ "value": "siteward <noreply@example.org>" })),
    )
    .await?;
    let (s, inv) = api
        .call(
            Some(&admin),
            Method::POST,
            "/invites",
            Some(json!({ "email": "newbie@example.org" })),
        )
        .await?;
    assert_eq!(s, StatusCode::CREATED, "{inv}");
    assert_eq!(inv["sent_to"], "newbie@example.org");
    assert!(
        inv.get("token").is_none() && inv.get("link").is_none(),
        "the link goes by mail only: {inv}"
    );
    let mail = tokio::time::timeout(std::time::Duration::from_secs(10), mails.recv())
        .await?
        .ok_or("no mail")?;
    // The body may be quoted-printable: undo soft line breaks and `=3D`.
    let mail = mail.replace("=\n", "").replace("=3D", "=");
    assert!(mail.contains("RCPT TO:<newbie@example.org>"), "{mail}");
    assert!(mail.contains("/register?invite="), "{mail}");
    // The mailed token works.
    let token = mail
        .split("invite=")
        .nth(1)
        .and_then(|t| t.get(..64))
        .ok_or("token")?
        .to_owned();
    let (s, v) = api.call(None, Method::POST, "/register", Some(json!({ "username": "newbie", "password": "a long enough password", "invite": token }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"], "active");
    // A reset for a user with an address is mailed to it.
    let (s, reset) = api
        .call(
            Some(&admin),
            Method::POST,
            "/password-resets",
            Some(json!({ "username": "newbie" })),
        )
        .await?;
    assert_eq!(
        (s, reset["sent_to"].as_str()),
        (StatusCode::CREATED, Some("newbie@example.org")),
        "{reset}"
    );
    let mail = tokio::time::timeout(std::time::Duration::from_secs(10), mails.recv())
        .await?
        .ok_or("no mail")?;
    assert!(mail.contains("/reset-password/"), "{mail}");

    // Self-service: the reset page offers a mailed link; the answer is the same for a known
    // user, a known address and nobody, and only real accounts get mail.
    let web = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let form = web.get(api.server.url("/reset-password")).send().await?;
    let csrf_cookie = form
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("siteward_csrf="))
        .and_then(|c| c.split(';').next())
        .ok_or("no csrf cookie")?
        .to_owned();
    let html = form.text().await?;
    assert!(
        html.contains("action=\"/reset-password/request\""),
        "{html}"
    );
    let csrf = crate::auth::csrf_field(&html)?;
    let ask = |login: &'static str, csrf: String| {
        web.post(api.server.url("/reset-password/request"))
            .header(
                reqwest::header::COOKIE,
                format!("siteward_csrf={csrf_cookie}"),
            )
            .form(&[("login", login), ("csrf", csrf.as_str())])
            .send()
    };
    let mut answers = HashSet::new();
    for login in ["nobody-here", "newbie@example.org"] {
        let res = ask(login, csrf.clone()).await?;
        assert_eq!(res.status(), StatusCode::OK);
        answers.insert(res.text().await?);
    }
    assert_eq!(
        answers.len(),
        1,
        "the answer must not tell who has an account"
    );
    let mail = tokio::time::timeout(std::time::Duration::from_secs(10), mails.recv())
        .await?
        .ok_or("no self-service mail")?;
    let mail = mail.replace("=\n", "").replace("=3D", "=");
    assert!(mail.contains("RCPT TO:<newbie@example.org>"), "{mail}");
    let token = mail
        .split("/reset-password/")
        .nth(1)
        .and_then(|t| t.get(..64))
        .ok_or("no token in the mail")?
        .to_owned();
    // A second request within minutes mails nothing more (no mailbox flooding); a CSRF-less
    // post is refused.
    assert_eq!(ask("newbie", csrf.clone()).await?.status(), StatusCode::OK);
    assert_eq!(
        ask("newbie", "0".repeat(64)).await?.status(),
        StatusCode::FORBIDDEN
    );
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(500), mails.recv())
            .await
            .is_err(),
        "a second reset mail went out"
    );
    // The mailed link sets the password.
    let res = web
        .post(api.server.url(&format!("/reset-password/{token}")))
        .header(
            reqwest::header::COOKIE,
            format!("siteward_csrf={csrf_cookie}"),
        )
        .form(&[
            ("password", "a brand new password"),
            ("csrf", csrf.as_str()),
        ])
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    for (password, want) in [
        ("a brand new password", StatusCode::OK),
        ("a long enough password", StatusCode::UNAUTHORIZED),
    ] {
        let res = web
            .get(api.server.url("/auth/verify"))
            .basic_auth("newbie", Some(password))
            .send()
            .await?;
        assert_eq!(res.status(), want, "{password}");
    }
    // An unreachable SMTP server is a clear 502, not a silent success.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    api.call(
        Some(&admin),
        Method::PUT,
        "/settings/smtp_url",
        Some(json!({ "value": format!("smtp://{dead}") })),
    )
    .await?;
    let (s, v) = api
        .call(
            Some(&admin),
            Method::POST,
            "/invites",
            Some(json!({ "email": "other@example.org" })),
        )
        .await?;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("mail_failed")),
        "{v}"
    );
    api.server.stop().await
}

/// A property-based run of the whole API from its own OpenAPI document (schemathesis, installed
/// by scripts/test): no input it generates may produce a 5xx.
#[tokio::test]
async fn schemathesis_finds_no_server_errors() -> TestResult {
    let api = Api::start().await?;
    api.register("root").await?;
    let admin = api.key_for("root").await?;
    let schema = api.server.url("/api/openapi.json");
    let out = tokio::process::Command::new("schemathesis")
        .args([
            "run",
            &schema,
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "12",
            "--seed",
            "20261122",
            "--generation-deterministic",
            "--request-timeout",
            "10",
            "-H",
            &format!("Authorization: Bearer {admin}"),
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .await
        .map_err(|e| {
            format!("schemathesis is not installed (scripts/test installs it with pip): {e}")
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found server errors:\n{text}\nserver log:\n{}",
        api.server.logs()
    );
    assert!(text.contains("passed") || text.contains("PASSED"), "{text}");
    api.server.stop().await
}
