//! The API's error type: every error is `{"error": {"code", "message", "field"}}` with the right
//! status. Database text never reaches a client; it is logged (without secrets) instead.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use siteward_store::StoreError;

/// An API error.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The offending field, when there is one.
    pub field: Option<String>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, schemars::JsonSchema)]
struct ErrorDetail {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Names the field.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 404: also what a non-admin gets for something that is not theirs.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "sign in, or send Authorization: Bearer <api key>",
        )
    }

    /// 422 naming a field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
        .field(field)
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 403 for a state-changing request whose session cookie a page of another origin sent.
    pub fn cross_origin() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "a request authenticated by the session cookie that changes state must come from a page of this origin (Origin or Sec-Fetch-Site: same-origin); scripts use Authorization: Bearer <api key>",
        )
    }

    /// 503: the database is out of reach.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; try again shortly",
        )
    }

    /// 429.
    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed attempts; wait a minute",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut res = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { entity } => ApiError::not_found(entity),
            StoreError::Conflict { what } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            )
            .field(what),
            StoreError::Reserved { field, message } => {
                ApiError::new(StatusCode::CONFLICT, "reserved", message).field(field)
            }
            StoreError::Invalid { field, message } => {
                let field = friendly_field(&field);
                ApiError::invalid(&field, format!("{field} {message}"))
            }
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "request failed: the database is unavailable");
                ApiError::unavailable()
            }
            other => {
                tracing::error!(error = %other, "request failed in the store");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server log has details",
                )
            }
        }
    }
}

/// Maps a constraint name to the field it guards (`users_mail_check` → `mail`).
fn friendly_field(constraint: &str) -> String {
    let known = [
        ("containers_node_id_site_id_fkey", "node_id"),
        ("containers_node_id_fkey", "node_id"),
        ("containers_username_fkey", "username"),
        ("nodes_site_id_fkey", "site_id"),
        ("external_domains_site_id_fkey", "site_id"),
        (
            "http_services_external_domain_id_fkey",
            "external_domain_id",
        ),
        ("services_container_id_fkey", "container_id"),
        ("dns_records_site_id_fkey", "site_id"),
        ("dns_records_apex_cname_check", "type"),
    ];
    if let Some((_, f)) = known.iter().find(|(c, _)| *c == constraint) {
        return (*f).to_owned();
    }
    for table in [
        "transport_services_",
        "http_services_",
        "dns_services_",
        "external_domains_",
        "dns_records_",
        "containers_",
        "services_",
        "settings_",
        "invite_tokens_",
        "users_",
        "groups_",
        "sites_",
        "nodes_",
    ] {
        if let Some(rest) = constraint.strip_prefix(table) {
            for suffix in ["_check", "_fkey", "_key"] {
                if let Some(f) = rest.strip_suffix(suffix) {
                    return f.to_owned();
                }
            }
        }
    }
    constraint.to_owned()
}
