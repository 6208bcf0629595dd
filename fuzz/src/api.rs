//! API request bodies through the JSON extractor the handlers use.

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{Request, StatusCode};
use serde::de::DeserializeOwned;
use siteward_admin::api::extract::Json;
use siteward_admin::service::{
    api_keys, containers, dns_records, domains, groups, invites, nodes, resets, rules, services,
    sites, users,
};

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/problem+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "",
];

fn one<T: DeserializeOwned + std::fmt::Debug>(content_type: &str, body: &[u8]) {
    let mut req = Request::builder().method("POST").uri("/api/v1/x");
    if !content_type.is_empty() {
        req = req.header("content-type", content_type);
    }
    let req = req.body(Body::from(body.to_vec())).expect("a request");
    let out = crate::runtime().block_on(Json::<T>::from_request(req, &()));
    let value = serde_json::from_slice::<serde_json::Value>(body);
    let json_type = siteward_admin::api::extract::is_json_media_type(content_type);
    match out {
        Ok(_) => {
            assert!(json_type, "a body accepted as {content_type:?}");
            assert!(value.is_ok(), "accepted a body serde_json refuses");
        }
        Err(e) => {
            let allowed = [
                StatusCode::BAD_REQUEST,
                StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ];
            assert!(allowed.contains(&e.status), "{} for a body", e.status);
            if e.status == StatusCode::BAD_REQUEST {
                assert!(
                    matches!(e.code, "malformed_json" | "invalid_body"),
                    "code {}",
                    e.code
                );
                // Not JSON at all may still be `invalid_body`: the typed decoder reads in one
                // pass and may meet a wrong field or type before the syntax error.
                if value.is_ok() {
                    // Well-formed JSON of the wrong shape is never called malformed.
                    assert_eq!(e.code, "invalid_body", "{}", e.message);
                }
            }
            if e.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                assert!(!json_type);
            }
        }
    }
}

/// `api_json`: the first byte picks a request body type and a content type, the rest is the
/// body, through [`Json`] as a handler receives it. A body is accepted only as JSON and only
/// when it is one JSON value; a refusal is 400 (`malformed_json` when it is not JSON at all,
/// else `invalid_body`), 413 or 415, never anything else, never a panic. The shared validation
/// rules run on the body's text too: what `check_label` and `check_domain` accept contains only
/// letters, digits, hyphens (and dots), the only characters a name may carry to DNS and NGINX.
pub fn json(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let ct = CONTENT_TYPES[usize::from(pick >> 4) % CONTENT_TYPES.len()];
    match pick & 0x0F {
        0 => one::<containers::CreateContainer>(ct, body),
        1 => one::<containers::UpdateContainer>(ct, body),
        2 => one::<services::CreateService>(ct, body),
        3 => one::<users::CreateUser>(ct, body),
        4 => one::<users::UpdateUser>(ct, body),
        5 => one::<users::SetPassword>(ct, body),
        6 => one::<groups::CreateGroup>(ct, body),
        7 => one::<groups::AddMember>(ct, body),
        8 => one::<sites::CreateSite>(ct, body),
        9 => one::<nodes::CreateNode>(ct, body),
        10 => one::<domains::DomainBody>(ct, body),
        11 => one::<dns_records::CreateRecord>(ct, body),
        12 => one::<invites::CreateInvite>(ct, body),
        13 => one::<resets::UseReset>(ct, body),
        14 => one::<api_keys::CreateApiKey>(ct, body),
        _ => one::<serde_json::Value>(ct, body),
    }
    let text = String::from_utf8_lossy(body);
    for piece in text.split(['"', ',', ':', ' ']) {
        if rules::check_label("f", piece).is_ok() {
            assert!(piece
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        }
        if rules::check_domain("f", piece).is_ok() {
            assert!(piece
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
            assert!(!piece.contains(".."));
        }
    }
}
