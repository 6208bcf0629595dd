//! The router in process (`app(state)` driven with `tower::ServiceExt::oneshot`, no socket): the
//! same-origin rule for cookie writes, JSON media types, the error format, and 404 for
//! non-admins. Each test gets a fresh, migrated database from `siteward_store::testing`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use siteward_admin::{app, AdminState, HttpMetrics, Shared};
use siteward_store::{Dirty, HashCost, NewUser, SecretBox};
use tower::ServiceExt;

const CHEAP: HashCost = HashCost {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

/// A state over a store with `root` (administrator) and `bob`, sessions for both, an API key
/// for root; returns the state, root's and bob's cookies and root's key.
async fn state() -> (AdminState, String, String, String) {
    let store = siteward_store::testing::fresh_store(SecretBox::from_key(&[7; 32]), CHEAP)
        .await
        .unwrap_or_else(|e| panic!("no test database: {e}"));
    for (name, admin) in [("root", true), ("bob", false)] {
        store
            .create_user(
                NewUser {
                    username: name.into(),
                    password: Some("a long enough password".into()),
                    admin,
                    ..Default::default()
                },
                &siteward_store::Actor::system(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (_, key) = store
        .create_api_key("root", "test", None, &siteward_store::Actor::system())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .reload(Dirty::ALL)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut cookies = Vec::new();
    for name in ["root", "bob"] {
        let uid = store
            .user(name)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .uid_number;
        let (cookie, _) = store
            .create_session(
                uid,
                chrono::Duration::hours(1),
                None,
                None,
                chrono::Utc::now(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        cookies.push(format!("siteward_session={cookie}"));
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = HttpMetrics::register(&mut registry);
    let mut shared = Shared::new(store, Arc::new(registry), metrics);
    shared.public_url = "https://auth.lab.test".into();
    let bob = cookies.pop().unwrap_or_default();
    let root = cookies.pop().unwrap_or_default();
    (shared.into(), root, bob, key)
}

/// Sends `req` through a fresh router; the status and the JSON body (`Null` when none).
async fn send(state: &AdminState, req: Request<Body>) -> (StatusCode, Value) {
    let res = app(state.clone())
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A POST as the edge forwards it for `https://auth.lab.test`.
fn post(path: &str) -> axum::http::request::Builder {
    Request::post(path)
        .header(header::HOST, "auth.lab.test")
        .header("x-forwarded-proto", "https")
}

fn group(name: &str) -> Body {
    Body::from(json!({ "cn": name }).to_string())
}

#[tokio::test]
async fn cookie_writes_need_this_origin() {
    let (state, root, _, key) = state().await;
    let cases: &[(&[(&str, &str)], StatusCode)] = &[
        (&[("origin", "https://auth.lab.test")], StatusCode::CREATED),
        (
            &[("origin", "https://auth.lab.test:443")],
            StatusCode::CREATED,
        ),
        (&[("sec-fetch-site", "same-origin")], StatusCode::CREATED),
        (&[("origin", "https://app.lab.test")], StatusCode::FORBIDDEN),
        (&[("origin", "http://auth.lab.test")], StatusCode::FORBIDDEN),
        (
            &[("origin", "https://auth.lab.test:8443")],
            StatusCode::FORBIDDEN,
        ),
        (&[("origin", "null")], StatusCode::FORBIDDEN),
        (&[("sec-fetch-site", "same-site")], StatusCode::FORBIDDEN),
        (&[("sec-fetch-site", "none")], StatusCode::FORBIDDEN),
        (&[], StatusCode::FORBIDDEN),
    ];
    for (i, (headers, want)) in cases.iter().enumerate() {
        let mut req = post("/api/v1/groups")
            .header(header::COOKIE, &root)
            .header(header::CONTENT_TYPE, "application/json");
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(group(&format!("g{i}")))
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, body) = send(&state, req).await;
        assert_eq!(status, *want, "{headers:?}: {body}");
        if status == StatusCode::FORBIDDEN {
            assert_eq!(body["error"]["code"], "cross_origin", "{body}");
        }
    }
    // An API key is not a cookie: no origin rule.
    let req = post("/api/v1/groups")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("origin", "https://app.lab.test")
        .body(group("by-key"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(send(&state, req).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn only_json_media_types_reach_a_handler() {
    let (state, _, _, key) = state().await;
    for (ctype, want) in [
        ("application/json", StatusCode::CREATED),
        ("application/json; charset=utf-8", StatusCode::CREATED),
        ("application/vnd.siteward+json", StatusCode::CREATED),
        ("text/plain;a=+json", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (
            "application/x-www-form-urlencoded",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "multipart/form-data; boundary=+json",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let req = post("/api/v1/groups")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, ctype)
            .body(group(&format!("media-{}", ctype.len())))
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, body) = send(&state, req).await;
        assert_eq!(status, want, "{ctype}: {body}");
        if want == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            assert_eq!(body["error"]["code"], "unsupported_media_type", "{body}");
        }
    }
}

#[tokio::test]
async fn errors_name_the_field_and_non_admins_see_404() {
    let (state, _, bob, key) = state().await;
    let bearer = format!("Bearer {key}");
    let req = post("/api/v1/groups")
        .header(header::AUTHORIZATION, &bearer)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"cn": 5}"#))
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = send(&state, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_body", "{body}");
    assert_eq!(body["error"]["field"], "cn", "{body}");
    let req = post("/api/v1/groups")
        .header(header::AUTHORIZATION, &bearer)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"cn\": "))
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = send(&state, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "malformed_json", "{body}");
    // A valid value followed by anything but whitespace is malformed, and creates nothing.
    let req = post("/api/v1/groups")
        .header(header::AUTHORIZATION, &bearer)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"cn": "trailing"} {"cn": "second"}"#))
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = send(&state, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "malformed_json", "{body}");
    assert!(state.store.snapshot().identity.group("trailing").is_none());
    // Well-formed JSON with a list where an enum's string goes: a wrong value, not malformed
    // JSON (serde_json reports it as a syntax error; found by fuzz/ api_json).
    let req = Request::patch("/api/v1/me")
        .header(header::AUTHORIZATION, &bearer)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"status": []}"#))
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = send(&state, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_body", "{body}");
    assert_eq!(body["error"]["field"], "status", "{body}");
    // bob is signed in but no administrator: the user list does not exist for him.
    let req = Request::get("/api/v1/users")
        .header(header::COOKIE, &bob)
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = send(&state, req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    // Nobody at all: 401.
    let req = Request::get("/api/v1/users")
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(send(&state, req).await.0, StatusCode::UNAUTHORIZED);
    // /metrics is not on this router without a token.
    let req = Request::get("/metrics")
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(send(&state, req).await.0, StatusCode::NOT_FOUND);
}

/// Sends `req`; the status and the body as text.
async fn send_text(state: &AdminState, req: Request<Body>) -> (StatusCode, String) {
    let res = app(state.clone())
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A console form posted from the console's own origin with `cookie`.
fn form(path: &str, cookie: &str, body: &str) -> Request<Body> {
    post(path)
        .header(header::COOKIE, cookie)
        .header("origin", "https://auth.lab.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn page(path: &str, cookie: &str) -> Request<Body> {
    Request::get(path)
        .header(header::HOST, "auth.lab.test")
        .header("x-forwarded-proto", "https")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap_or(0)].to_owned()
}

#[tokio::test]
async fn admins_add_groups_members_and_invites_in_the_console() {
    let (state, root, bob, _) = state().await;
    let (status, html) = send_text(&state, page("/admin/groups", &root)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("New group") && html.contains("Add a member"),
        "{html}"
    );
    let csrf = csrf_of(&html);

    // A new group, through the service layer (validated, audited, in the snapshot).
    let body = format!("csrf={csrf}&cn=ops&description=Operations");
    let (status, html) = send_text(&state, form("/admin/groups", &root, &body)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Group ops (gid"), "{html}");
    let snap = state.store.snapshot();
    let ops = snap
        .identity
        .group("ops")
        .unwrap_or_else(|| panic!("no ops"));
    assert!(!ops.is_administrator);
    assert_eq!(ops.description.as_deref(), Some("Operations"));
    let body = format!("csrf={csrf}&cn=wheel&is_administrator=on");
    let (status, html) = send_text(&state, form("/admin/groups", &root, &body)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let snap = state.store.snapshot();
    assert!(snap
        .identity
        .group("wheel")
        .is_some_and(|g| g.is_administrator));

    // A bad name comes back next to its field, with what was typed.
    let body = format!("csrf={csrf}&cn=Bad+Name%21&description=kept");
    let (status, html) = send_text(&state, form("/admin/groups", &root, &body)).await;
    assert!(status.is_client_error(), "{status}");
    assert!(html.contains("id=\"cn-error\""), "{html}");
    assert!(
        html.contains("value=\"Bad Name!\"") && html.contains("value=\"kept\""),
        "{html}"
    );
    assert!(state.store.snapshot().identity.group("bad name!").is_none());

    // A member; an unknown user is refused by name.
    let body = format!("csrf={csrf}&group=ops&username=bob");
    let (status, html) = send_text(&state, form("/admin/groups/members", &root, &body)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let snap = state.store.snapshot();
    let bob_uid = snap.identity.user("bob").map(|u| u.uid_number);
    let gid = snap.identity.group("ops").map(|g| g.gid_number);
    assert!(bob_uid
        .and_then(|u| snap.identity.groups_of.get(&u))
        .is_some_and(|g| gid.is_some_and(|gid| g.contains(&gid))));
    let body = format!("csrf={csrf}&group=ops&username=nobody");
    let (status, _) = send_text(&state, form("/admin/groups/members", &root, &body)).await;
    assert!(status.is_client_error(), "{status}");
    // Removed again; removing a non-member is refused next to its field.
    let body = format!("csrf={csrf}&group=ops&username=bob");
    let remove = "/admin/groups/members/remove";
    let (status, html) = send_text(&state, form(remove, &root, &body)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("no longer a member"), "{html}");
    let snap = state.store.snapshot();
    assert!(!bob_uid
        .and_then(|u| snap.identity.groups_of.get(&u))
        .is_some_and(|g| gid.is_some_and(|gid| g.contains(&gid))));
    let (status, html) = send_text(&state, form(remove, &root, &body)).await;
    assert!(status.is_client_error(), "{status} {html}");
    assert!(
        html.contains("value=\"bob\""),
        "what was typed is kept: {html}"
    );

    // Deleting a group takes its name typed out; the built-in group stays.
    let delete = "/admin/groups/delete";
    let (status, html) = send_text(
        &state,
        form(delete, &root, &format!("csrf={csrf}&delete_group=op")),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"delete_group-error\""), "{html}");
    assert!(html.contains("value=\"op\""), "{html}");
    let (status, _) = send_text(
        &state,
        form(delete, &bob, &format!("csrf={csrf}&delete_group=ops")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(state.store.snapshot().identity.group("ops").is_some());
    let (status, html) = send_text(
        &state,
        form(
            delete,
            &root,
            &format!("csrf={csrf}&delete_group=ldapusers"),
        ),
    )
    .await;
    assert!(status.is_client_error(), "{status} {html}");
    assert!(state.store.snapshot().identity.group("ldapusers").is_some());
    let (status, html) = send_text(
        &state,
        form(delete, &root, &format!("csrf={csrf}&delete_group=ops")),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Group ops deleted."), "{html}");
    assert!(state.store.snapshot().identity.group("ops").is_none());

    // An invite without SMTP: the page shows the link to pass on.
    let (_, html) = send_text(&state, page("/admin/invites", &root)).await;
    let csrf = csrf_of(&html);
    let body = format!("csrf={csrf}&email=carol%40example.org");
    let (status, html) = send_text(&state, form("/admin/invites", &root, &body)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("/register?invite="), "{html}");
    assert!(html.contains("carol@example.org"), "{html}");
    // Revoked, the invitation is no longer open.
    let at = html
        .find("/admin/invites/")
        .unwrap_or_else(|| panic!("no revoke button in {html}"));
    let action = &html[at..at + html[at..].find('"').unwrap_or(0)];
    assert!(action.ends_with("/revoke"), "{action}");
    let (status, html) = send_text(&state, form(action, &root, &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("revoked") && !html.contains("/revoke\""),
        "{html}"
    );

    // Without the token nothing happens; a non-admin sees no such page.
    let (status, _) = send_text(&state, form("/admin/groups", &root, "csrf=x&cn=sneaky")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(state.store.snapshot().identity.group("sneaky").is_none());
    let (status, _) = send_text(&state, page("/admin/groups", &bob)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body = format!("csrf={csrf}&cn=bobs");
    let (status, _) = send_text(&state, form("/admin/groups", &bob, &body)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(state.store.snapshot().identity.group("bobs").is_none());
}

#[tokio::test]
async fn the_audit_log_is_filtered_and_paged_in_the_database() {
    let (state, root, bob, key) = state().await;
    // 130 audited writes by root's key, besides the system's user creations.
    for i in 0..130 {
        let req = post("/api/v1/groups")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(group(&format!("team{i}")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(send(&state, req).await.0, StatusCode::CREATED);
    }
    let api = |query: &str| {
        Request::get(format!("/api/v1/audit?{query}"))
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (status, body) = send(&state, api("actor=ROOT&resource=GROUP:&limit=500")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 130);
    assert!(items
        .iter()
        .all(|e| e["actor_name"] == "root" && e["resource"] == "group"));
    // Older than the newest 500 is reached by filter, page after page.
    let (_, first) = send(&state, api("resource=group&limit=100")).await;
    let cursor = first["next_cursor"].as_str().unwrap_or_default().to_owned();
    assert!(!cursor.is_empty(), "{first}");
    let (_, second) = send(
        &state,
        api(&format!("resource=group&limit=100&cursor={cursor}")),
    )
    .await;
    assert_eq!(
        second["items"].as_array().map(Vec::len),
        Some(30),
        "{second}"
    );
    assert!(second["next_cursor"].is_null(), "{second}");
    // Matched literally: `%` and `_` are not wildcards.
    for q in ["actor=%25", "actor=r_ot", "resource=%27%20OR%201%3D1%20--"] {
        let (status, body) = send(&state, api(q)).await;
        assert_eq!(status, StatusCode::OK, "{q}: {body}");
        assert_eq!(
            body["items"].as_array().map(Vec::len),
            Some(0),
            "{q}: {body}"
        );
    }
    let (status, body) = send(&state, api(&format!("actor={}", "a".repeat(201)))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "actor", "{body}");
    let (status, _) = send(&state, api("colour=red")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The console: the same filter, a hundred a page, with a link to the older ones.
    let (status, html) = send_text(&state, page("/admin/audit?resource=group", &root)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(html.matches("<tr>").count(), 101, "header and 100 rows");
    let at = html
        .find("rel=\"next\"")
        .and_then(|end| html[..end].rfind("href=\""))
        .unwrap_or_else(|| panic!("no link to older entries: {html}"));
    let href = html[at + 6..]
        .split('"')
        .next()
        .unwrap_or_default()
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    assert!(
        href.starts_with("/admin/audit?actor=&resource=group&cursor="),
        "{href}"
    );
    let (status, html) = send_text(&state, page(&href, &root)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(html.matches("<tr>").count(), 31, "{html}");
    assert!(!html.contains("rel=\"next\""));
    let (status, html) = send_text(&state, page("/admin/audit?cursor=garbage", &root)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("not valid"), "{html}");
    // Not an admin: no such page.
    let (status, _) = send_text(&state, page("/admin/audit", &bob)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn admins_create_sites_in_the_console() {
    let (state, root, bob, _) = state().await;
    let (status, html) = send_text(&state, page("/admin/sites", &root)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("New site"), "{html}");
    let csrf = csrf_of(&html);
    // A wrong address comes back next to its field, with everything typed kept; nothing made.
    let body = format!(
        "csrf={csrf}&name=Lab&internal_domain=lab.internal&subnet_mask=255.255.255.0\
         &gateway=10.0.0.300&dhcp_range=10.0.0.100-10.0.0.200"
    );
    let (status, html) = send_text(&state, form("/admin/sites", &root, &body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("10.0.0.300 is not an IPv4 address"), "{html}");
    assert!(html.contains("id=\"gateway-error\""), "{html}");
    assert!(html.contains("value=\"lab.internal\""), "{html}");
    assert!(state.store.snapshot().naming.site_by_domain.is_empty());
    // The service's own rules too (a domain with a path trick).
    let body = format!("csrf={csrf}&name=Lab&internal_domain=..%2Fetc");
    let (status, html) = send_text(&state, form("/admin/sites", &root, &body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"internal_domain-error\""), "{html}");
    // Right: created, served, listed.
    let body = format!(
        "csrf={csrf}&name=Lab&internal_domain=lab.internal&subnet_mask=255.255.255.0\
         &gateway=10.0.0.1&dhcp_range=10.0.0.100-10.0.0.200&dns_forwarders=&external_ip="
    );
    let (status, html) = send_text(&state, form("/admin/sites", &root, &body)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Site Lab created"), "{html}");
    assert!(html.contains("<code>lab.internal</code>"), "{html}");
    assert!(state
        .store
        .snapshot()
        .naming
        .site_by_domain
        .contains_key("lab.internal"));
    // Without the token, or not an administrator: nothing happens.
    let body = "csrf=wrong&name=Other&internal_domain=other.internal";
    let (status, _) = send_text(&state, form("/admin/sites", &root, body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send_text(
        &state,
        form(
            "/admin/sites",
            &bob,
            &format!("csrf={csrf}&name=Other&internal_domain=other.internal"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!state
        .store
        .snapshot()
        .naming
        .site_by_domain
        .contains_key("other.internal"));
}

#[tokio::test]
async fn admins_edit_sites_and_add_nodes_in_the_console() {
    let (state, root, bob, _) = state().await;
    let (_, html) = send_text(&state, page("/admin/sites", &root)).await;
    let csrf = csrf_of(&html);
    let body = format!(
        "csrf={csrf}&name=Lab&internal_domain=lab.internal&subnet_mask=255.255.255.0\
         &gateway=10.0.0.1&dhcp_range=10.0.0.100-10.0.0.200"
    );
    let (status, html) = send_text(&state, form("/admin/sites", &root, &body)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let id = state.store.snapshot().naming.site_by_domain["lab.internal"];
    let here = format!("/admin/sites/{}", id.0);
    assert!(html.contains(&format!("href=\"{here}\"")), "{html}");

    // The site's page holds its values; a wrong one comes back next to its field, typed text
    // kept, nothing changed.
    let (status, html) = send_text(&state, page(&here, &root)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("value=\"10.0.0.100-10.0.0.200\""), "{html}");
    let body = format!(
        "csrf={csrf}&name=Lab&internal_domain=lab.internal&subnet_mask=255.255.255.0\
         &gateway=10.0.0.1&dhcp_range=&dns_forwarders=9.9.9.9&external_ip=not-an-ip"
    );
    let (status, html) = send_text(&state, form(&here, &root, &body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"external_ip-error\""), "{html}");
    assert!(html.contains("value=\"not-an-ip\""), "{html}");
    let site =
        |state: &siteward_admin::AdminState| state.store.snapshot().naming.sites[&id].site.clone();
    assert_eq!(
        site(&state).dhcp_range.as_deref(),
        Some("10.0.0.100-10.0.0.200")
    );
    // Right: a blank field clears, the rest is set.
    let body = format!(
        "csrf={csrf}&name=Lab+two&internal_domain=lab.internal&subnet_mask=255.255.255.0\
         &gateway=10.0.0.1&dhcp_range=&dns_forwarders=9.9.9.9&external_ip=203.0.113.7"
    );
    let (status, html) = send_text(&state, form(&here, &root, &body)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Site Lab two saved"), "{html}");
    let now = site(&state);
    assert_eq!(now.name, "Lab two");
    assert_eq!(now.dhcp_range, None);
    assert_eq!(now.external_ip, Some("203.0.113.7".parse().unwrap()));
    assert_eq!(
        now.dns_forwarders,
        vec!["9.9.9.9".parse::<std::net::IpAddr>().unwrap()]
    );
    // Wrong token, not an administrator, no such site.
    let (status, _) = send_text(
        &state,
        form(&here, &root, "csrf=wrong&name=X&internal_domain=x.internal"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send_text(
        &state,
        form(
            &here,
            &bob,
            &format!("csrf={csrf}&name=X&internal_domain=x.internal"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send_text(&state, page(&here, &bob)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send_text(&state, page("/admin/sites/987654", &root)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(site(&state).name, "Lab two");

    // A node: the site by name (prefilled, the only one), the secret never sent back.
    let (status, html) = send_text(&state, page("/admin/nodes", &root)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("name=\"site\" type=\"text\" value=\"Lab two\""),
        "{html}"
    );
    let body = format!(
        "csrf={csrf}&name=pve1&site=Nowhere&ipv4_address=10.0.0.2\
         &api_token_secret_or_password=s3cret-value"
    );
    let (status, html) = send_text(&state, form("/admin/nodes", &root, &body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("no site is named Nowhere"), "{html}");
    assert!(html.contains("id=\"site-error\""), "{html}");
    assert!(
        !html.contains("s3cret-value"),
        "the secret came back: {html}"
    );
    let body = format!("csrf={csrf}&name=pve1&site=lab+two&ipv4_address=10.0.0.999");
    let (status, html) = send_text(&state, form("/admin/nodes", &root, &body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"ipv4_address-error\""), "{html}");
    let body = format!("csrf={csrf}&name=pve%3Bnginx&site=lab+two");
    let (status, html) = send_text(&state, form("/admin/nodes", &root, &body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"name-error\""), "{html}");
    assert!(state.store.snapshot().naming.sites[&id].nodes.is_empty());
    let body =
        format!("csrf={csrf}&name=pve1&site=lab+two&ipv4_address=10.0.0.2&nvidia_available=on");
    let (status, html) = send_text(&state, form("/admin/nodes", &root, &body)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Node pve1 added for DNS records only"),
        "{html}"
    );
    assert!(html.contains("<code>10.0.0.2</code>"), "{html}");
    let nodes = state.store.snapshot().naming.sites[&id].nodes.clone();
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].nvidia_available && !nodes[0].disable_tls_verification);
    // Nothing to import from a node siteward does not drive; said next to nothing, no 500.
    let (status, html) = send_text(
        &state,
        form(
            &format!("/admin/nodes/{}/import", nodes[0].id.0),
            &root,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{status} {html}"
    );
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{html}");
    let (status, _) = send_text(
        &state,
        form(
            "/admin/nodes",
            &bob,
            &format!("csrf={csrf}&name=pve2&site=lab+two"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A site with a node is not deleted; once the node is gone it is.
    let (status, html) = send_text(
        &state,
        form(&format!("{here}/delete"), &root, &format!("csrf={csrf}")),
    )
    .await;
    assert!(status.is_client_error(), "{status} {html}");
    assert!(state.store.snapshot().naming.sites.contains_key(&id));
    let delete = format!("/admin/nodes/{}/delete", nodes[0].id.0);
    let (status, _) = send_text(&state, form(&delete, &bob, &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send_text(&state, form(&delete, &root, "csrf=wrong")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(state.store.snapshot().naming.sites[&id].nodes.len(), 1);
    let (status, html) = send_text(&state, form(&delete, &root, &format!("csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Node deleted."), "{html}");
    assert!(state.store.snapshot().naming.sites[&id].nodes.is_empty());
    let (status, _) = send_text(
        &state,
        form(&format!("{here}/delete"), &bob, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send_text(
        &state,
        form(&format!("{here}/delete"), &root, &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!state.store.snapshot().naming.sites.contains_key(&id));
}

#[tokio::test]
async fn admins_set_up_mail_in_the_console() {
    let (state, root, bob, _) = state().await;
    let (status, html) = send_text(&state, page("/admin/settings", &root)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("not set") && html.contains("SMTP server URL"),
        "{html}"
    );
    let csrf = csrf_of(&html);
    // A URL the mailer cannot use comes back next to its field, typed values kept.
    let body = format!("csrf={csrf}&smtp_url=http%3A%2F%2Fmail.example.org&smtp_from=");
    let (status, html) = send_text(&state, form("/admin/settings", &root, &body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"smtp_url-error\""), "{html}");
    assert!(html.contains("value=\"http://mail.example.org\""), "{html}");
    assert!(matches!(state.store.setting("smtp_url").await, Ok(None)));
    // Saved: the password is never shown again, on the page or in the API.
    let body = format!(
        "csrf={csrf}&smtp_url=smtps%3A%2F%2Fmailer%3As3cret%40mail.example.org%3A465\
         &smtp_from=siteward+%3Cnoreply%40example.org%3E"
    );
    let (status, html) = send_text(&state, form("/admin/settings", &root, &body)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Saved: smtp_url, smtp_from."), "{html}");
    assert!(!html.contains("s3cret"), "{html}");
    assert!(html.contains("mailer:********@mail.example.org"), "{html}");
    assert_eq!(
        state
            .store
            .setting("smtp_url")
            .await
            .ok()
            .flatten()
            .as_deref(),
        Some("smtps://mailer:s3cret@mail.example.org:465")
    );
    // A blank field keeps what is set; removing stops mail.
    let (status, html) = send_text(
        &state,
        form(
            "/admin/settings",
            &root,
            &format!("csrf={csrf}&smtp_url=&smtp_from="),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Nothing to change"), "{html}");
    assert!(state
        .store
        .setting("smtp_url")
        .await
        .ok()
        .flatten()
        .is_some());
    let (status, html) = send_text(
        &state,
        form(
            "/admin/settings/smtp/remove",
            &root,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("SMTP removed"), "{html}");
    assert!(matches!(state.store.setting("smtp_url").await, Ok(None)));
    // Not an administrator: no such page, nothing set.
    let (status, _) = send_text(&state, page("/admin/settings", &bob)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send_text(
        &state,
        form(
            "/admin/settings",
            &bob,
            &format!("csrf={csrf}&smtp_url=smtp%3A%2F%2Fevil%3A25"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(matches!(state.store.setting("smtp_url").await, Ok(None)));
}

#[tokio::test]
async fn admins_add_external_domains_in_the_console() {
    let (state, root, bob, _) = state().await;
    let (status, html) = send_text(&state, page("/admin/domains", &root)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("New external domain"), "{html}");
    let csrf = csrf_of(&html);
    // A site that does not exist, then a bad e-mail: each next to its field, typed kept, the
    // Cloudflare key never echoed.
    let body = format!(
        "csrf={csrf}&domain=example.org&site=nowhere&acme_email=admin%40example.org\
         &cloudflare_api_key=cf-secret-token"
    );
    let (status, html) = send_text(&state, form("/admin/domains", &root, &body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("no site is named nowhere") && html.contains("id=\"site-error\""),
        "{html}"
    );
    assert!(
        html.contains("value=\"example.org\"") && !html.contains("cf-secret-token"),
        "{html}"
    );
    let body = format!("csrf={csrf}&domain=example.org&acme_email=not-an-address");
    let (status, html) = send_text(&state, form("/admin/domains", &root, &body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(html.contains("id=\"acme_email-error\""), "{html}");
    assert!(state.store.snapshot().naming.external_domains.is_empty());
    // Right: added and listed with its challenge method.
    let body = format!(
        "csrf={csrf}&domain=example.org&acme_email=admin%40example.org\
         &cloudflare_api_key=cf-secret-token"
    );
    let (status, html) = send_text(&state, form("/admin/domains", &root, &body)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Domain example.org added"), "{html}");
    assert!(
        html.contains("Cloudflare") && !html.contains("cf-secret-token"),
        "{html}"
    );
    let snap = state.store.snapshot();
    let d = snap
        .naming
        .external_domains
        .iter()
        .find(|d| d.domain == "example.org")
        .unwrap_or_else(|| panic!("not in the snapshot"));
    assert!(d.has_cloudflare_api_key);
    // Not an administrator: no such page.
    let body = format!("csrf={csrf}&domain=evil.example");
    let (status, _) = send_text(&state, form("/admin/domains", &bob, &body)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(state.store.snapshot().naming.external_domains.len(), 1);

    // Deleting takes the domain typed out; a near miss is refused next to the field and kept.
    let (status, html) = send_text(
        &state,
        form(
            "/admin/domains/delete",
            &root,
            &format!("csrf={csrf}&delete_domain=example.com"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("no external domain is named example.com"),
        "{html}"
    );
    assert!(html.contains("id=\"delete_domain-error\""), "{html}");
    assert!(html.contains("value=\"example.com\""), "{html}");
    let (status, _) = send_text(
        &state,
        form(
            "/admin/domains/delete",
            &bob,
            &format!("csrf={csrf}&delete_domain=example.org"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send_text(
        &state,
        form(
            "/admin/domains/delete",
            &root,
            "csrf=wrong&delete_domain=example.org",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(state.store.snapshot().naming.external_domains.len(), 1);
    let (status, html) = send_text(
        &state,
        form(
            "/admin/domains/delete",
            &root,
            &format!("csrf={csrf}&delete_domain=Example.org."),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Domain example.org deleted."), "{html}");
    assert!(state.store.snapshot().naming.external_domains.is_empty());
}
