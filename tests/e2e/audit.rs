//! The audit log, end to end: every write made through the JSON API (with a session cookie or
//! an API key), the pages, the command line and LDAP Password Modify leaves exactly one row,
//! committed with the change, naming who did it, through which door and from where.

use std::time::Duration;

use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::harness::{run_cli, test_key_base64, Server, TestResult};

/// What an API write is called, its request, and the (action, resource) its row records.
type Step<'a> = (&'a str, Method, String, Option<Value>, (&'a str, &'a str));

/// The audit rows after `after`, oldest first: (action, resource, actor_name, via, remote_addr).
async fn rows_after(
    pool: &PgPool,
    after: i64,
) -> TestResult<
    Vec<(
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    )>,
> {
    Ok(sqlx::query_as(
        "SELECT action, resource, actor_name, via, host(remote_addr) FROM audit_log
         WHERE id > $1 ORDER BY id",
    )
    .bind(after)
    .fetch_all(pool)
    .await?)
}

async fn last_id(pool: &PgPool) -> TestResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM audit_log")
            .fetch_one(pool)
            .await?,
    )
}

/// Runs `step`, then checks that exactly one audit row appeared and that it says
/// `action` on `resource` by `actor` through `via`.
macro_rules! one_row {
    ($pool:expr, $what:expr, ($action:expr, $resource:expr, $actor:expr, $via:expr), $step:expr) => {{
        let before = last_id($pool).await?;
        let out = $step;
        let rows = rows_after($pool, before).await?;
        assert_eq!(rows.len(), 1, "{}: {rows:?}", $what);
        let (action, resource, actor, via, _) = &rows[0];
        assert_eq!(
            (
                action.as_str(),
                resource.as_str(),
                actor.as_deref(),
                via.as_deref()
            ),
            ($action, $resource, $actor, Some($via)),
            "{}",
            $what
        );
        out
    }};
}

fn cookie_pair(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

fn csrf_field(html: &str) -> TestResult<String> {
    let marker = "name=\"csrf\" value=\"";
    let at = html.find(marker).ok_or("no csrf field")? + marker.len();
    let rest = &html[at..];
    Ok(rest[..rest.find('"').ok_or("unterminated")?].to_owned())
}

#[tokio::test]
async fn every_write_leaves_one_audit_row_naming_its_actor() -> TestResult {
    let server = Server::start().await?;
    let pool = server.db.as_ref().ok_or("db")?.pool().await?;
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let origin = server.url("");
    let origin = origin.trim_end_matches('/').to_owned();
    let api = |method: Method, path: &str, key: &str, body: Option<Value>| {
        let mut req = http
            .request(method, server.url(&format!("/api/v1{path}")))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };

    // Registration: the new user, through the public door, from the client's address.
    let r = one_row!(
        &pool,
        "register",
        ("register", "user", Some("root"), "public"),
        http.post(server.url("/api/v1/register"))
            .json(&json!({ "username": "root", "password": "root password 1" }))
            .send()
            .await?
    );
    assert_eq!(r.status(), StatusCode::CREATED);

    // Sign-in through the page: one `login` row, and a session cookie.
    let page = http.get(server.url("/login")).send().await?;
    let csrf_cookie = cookie_pair(&page, "siteward_csrf").ok_or("csrf cookie")?;
    let token = csrf_field(&page.text().await?)?;
    let res = one_row!(
        &pool,
        "login page",
        ("login", "session", Some("root"), "public"),
        http.post(server.url("/login"))
            .header(COOKIE, &csrf_cookie)
            .header(ORIGIN, &origin)
            .form(&[
                ("username", "root"),
                ("password", "root password 1"),
                ("redirect", "/account"),
                ("csrf", token.as_str()),
            ])
            .send()
            .await?
    );
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        res.headers().get(LOCATION)
    );
    let session = cookie_pair(&res, "siteward_session").ok_or("session cookie")?;

    // The account page: a profile change and a new API key, through the session.
    let account = http
        .get(server.url("/account"))
        .header(COOKIE, &session)
        .send()
        .await?;
    let token = csrf_field(&account.text().await?)?;
    let res = one_row!(
        &pool,
        "profile page",
        ("update", "user", Some("root"), "session"),
        http.post(server.url("/account/profile"))
            .header(COOKIE, &session)
            .header(ORIGIN, &origin)
            .form(&[
                ("cn", "Root Admin"),
                ("sn", "Admin"),
                ("given_name", "Root"),
                ("mail", "root@example.org"),
                ("ssh_public_keys", ""),
                ("csrf", token.as_str()),
            ])
            .send()
            .await?
    );
    assert!(res.status().is_success(), "{}", res.status());
    let res = one_row!(
        &pool,
        "API key page",
        ("create", "api_key", Some("root"), "session"),
        http.post(server.url("/account/api-keys"))
            .header(COOKIE, &session)
            .header(ORIGIN, &origin)
            .form(&[("name", "audit test"), ("csrf", token.as_str())])
            .send()
            .await?
    );
    let html = res.text().await?;
    let at = html.find("sw_").ok_or("no key on the page")?;
    let key: String = html[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();

    // The JSON API with the session cookie (same origin) ...
    let res = one_row!(
        &pool,
        "API with cookie",
        ("create", "group", Some("root"), "session"),
        http.post(server.url("/api/v1/groups"))
            .header(COOKIE, &session)
            .header(ORIGIN, &origin)
            .json(&json!({ "cn": "ops", "is_administrator": true }))
            .send()
            .await?
    );
    assert_eq!(res.status(), StatusCode::CREATED);
    let gid = res.json::<Value>().await?["gid_number"]
        .as_i64()
        .ok_or("gid")?;

    // ... and with the API key, every kind of write.
    let res = one_row!(
        &pool,
        "create site",
        ("create", "site", Some("root"), "api_key"),
        api(
            Method::POST,
            "/sites",
            &key,
            Some(json!({ "name": "Lab", "internal_domain": "lab.internal",
                         "subnet_mask": "255.255.255.0", "gateway": "10.5.0.1",
                         "dhcp_range": "10.5.0.100-10.5.0.200" }))
        )
        .await?
    );
    assert_eq!(res.status(), StatusCode::CREATED);
    let site = res.json::<Value>().await?["id"].as_i64().ok_or("site")?;
    let steps: Vec<Step> = vec![
        (
            "update site",
            Method::PATCH,
            format!("/sites/{site}"),
            Some(json!({ "name": "Lab 2" })),
            ("update", "site"),
        ),
        (
            "create user",
            Method::POST,
            "/users".into(),
            Some(json!({ "username": "bob", "password": "bob password 1" })),
            ("create", "user"),
        ),
        (
            "add member",
            Method::POST,
            format!("/groups/{gid}/members"),
            Some(json!({ "username": "bob" })),
            ("add_member", "group"),
        ),
        (
            "update group",
            Method::PATCH,
            format!("/groups/{gid}"),
            Some(json!({ "description": "operators" })),
            ("update", "group"),
        ),
        (
            "static record",
            Method::POST,
            format!("/sites/{site}/dns-records"),
            Some(json!({ "name": "www", "type": "A", "value": "10.5.0.9" })),
            ("create", "dns_record"),
        ),
        (
            "domain",
            Method::POST,
            "/external-domains".into(),
            Some(json!({ "domain": "example.org" })),
            ("create", "external_domain"),
        ),
        (
            "invite",
            Method::POST,
            "/invites".into(),
            Some(json!({ "email": "carol@example.org" })),
            ("create", "invite"),
        ),
        (
            "setting",
            Method::PUT,
            "/settings/site.motd".into(),
            Some(json!({ "value": "hello" })),
            ("update", "setting"),
        ),
        (
            "delete setting",
            Method::DELETE,
            "/settings/site.motd".into(),
            None,
            ("delete", "setting"),
        ),
        (
            "password reset link",
            Method::POST,
            "/password-resets".into(),
            Some(json!({ "username": "bob" })),
            ("create", "password_reset"),
        ),
    ];
    for (what, method, path, body, (action, resource)) in steps {
        let res = one_row!(
            &pool,
            what,
            (action, resource, Some("root"), "api_key"),
            api(method, &path, &key, body).await?
        );
        assert!(res.status().is_success(), "{what}: {}", res.status());
    }
    let bob_uid: i32 = sqlx::query_scalar("SELECT uid_number FROM users WHERE username = 'bob'")
        .fetch_one(&pool)
        .await?;
    let res = one_row!(
        &pool,
        "set password",
        ("set_password", "user", Some("root"), "api_key"),
        api(
            Method::PUT,
            &format!("/users/{bob_uid}/password"),
            &key,
            Some(json!({ "password": "bob password 2" }))
        )
        .await?
    );
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // A refused write leaves nothing.
    let before = last_id(&pool).await?;
    let res = api(
        Method::POST,
        "/sites",
        &key,
        Some(json!({ "name": "", "internal_domain": "x.internal" })),
    )
    .await?;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(rows_after(&pool, before).await?.is_empty());

    // LDAP Password Modify: the bound administrator, through LDAP, from its address.
    let ldap = server.addrs.ldap.ok_or("no ldap listener")?;
    let url = format!("ldap://{ldap}");
    let base = "dc=siteward,dc=internal";
    let out = one_row!(
        &pool,
        "ldappasswd",
        ("set_password", "user", Some("root"), "ldap"),
        tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new("ldappasswd")
                .args([
                    "-x",
                    "-H",
                    &url,
                    "-D",
                    &format!("uid=root,ou=people,{base}"),
                    "-w",
                    "root password 1",
                    "-s",
                    "bob password 3",
                    &format!("uid=bob,ou=people,{base}"),
                ])
                .env("LDAPCONF", "/dev/null")
                .env("LDAPRC", "/nonexistent-ldaprc")
                .output(),
        )
        .await??
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rows_after(&pool, 0).await?;
    let (.., addr) = rows.last().ok_or("rows")?;
    assert_eq!(
        addr.as_deref(),
        Some("127.0.0.1"),
        "LDAP row without the peer"
    );

    // The command line: the operating-system user, through the CLI.
    let url = server.db.as_ref().ok_or("db")?.url.clone();
    let dir = tempfile::tempdir()?;
    let dir = dir.path().display().to_string();
    let key64 = test_key_base64();
    let (status, out, err) = one_row!(
        &pool,
        "cli",
        ("create", "group", Some("operator"), "cli"),
        run_cli(
            &[
                "--data-dir",
                &dir,
                "--database-url",
                &url,
                "group",
                "add",
                "audited"
            ],
            &[
                ("SITEWARD_SECRET_KEY", key64.as_str()),
                ("USER", "operator"),
                ("SUDO_USER", "")
            ],
            None,
        )
        .await?
    );
    assert!(status.success(), "{out}{err}");

    // Removing things: one row each, too.
    for (what, path, action, resource) in [
        (
            "remove member",
            format!("/groups/{gid}/members/{bob_uid}"),
            "remove_member",
            "group",
        ),
        ("delete user", format!("/users/{bob_uid}"), "delete", "user"),
        ("delete site", format!("/sites/{site}"), "delete", "site"),
    ] {
        let res = one_row!(
            &pool,
            what,
            (action, resource, Some("root"), "api_key"),
            api(Method::DELETE, &path, &key, None).await?
        );
        assert!(res.status().is_success(), "{what}: {}", res.status());
    }
    server.stop().await
}
