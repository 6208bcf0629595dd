//! Helpers every resource uses: the result type, list pages, `201`/`204` responses, the audit
//! log (with the snapshot reload after a write), and field validation shared by several resources.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use siteward_store::resources;
use siteward_store::*;

use super::error::ApiError;
use super::extract::encode_cursor;

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// A page of items.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ListResponse<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> From<resources::Listing<T>> for ListResponse<T> {
    fn from(l: resources::Listing<T>) -> Self {
        Self {
            next_cursor: l.next_after.map(encode_cursor),
            items: l.items,
        }
    }
}

pub(super) fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

pub(super) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `?site_id=` filter.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteFilter {
    /// 1 to 500.
    pub limit: Option<i64>,
    /// Next page.
    pub cursor: Option<String>,
    /// Only this site's.
    pub site_id: Option<i64>,
}
