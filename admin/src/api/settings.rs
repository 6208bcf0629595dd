//! Settings: `/settings`, `/settings/{key}`.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::common::{no_content, ApiResult};
use super::error::ApiError;
use super::extract::{Admin, Json, Path};
use super::openapi::{delete, get, put, Access, Api};
use crate::service::settings as service;
use crate::AdminState;

/// A setting's value.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingValue {
    /// The value.
    pub value: String,
}

/// A setting.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Setting {
    /// Key.
    pub key: String,
    /// Value; `smtp_url` is shown without its password.
    pub value: String,
}

impl Setting {
    fn new(key: String, value: &str) -> Self {
        let value = service::shown(&key, value);
        Self { key, value }
    }
}

async fn list_settings(
    State(s): State<AdminState>,
    _: Admin,
) -> ApiResult<axum::Json<Vec<Setting>>> {
    Ok(axum::Json(
        s.store
            .list_settings()
            .await?
            .into_iter()
            .map(|(key, value)| Setting::new(key, &value))
            .collect(),
    ))
}

async fn get_setting(
    State(s): State<AdminState>,
    _: Admin,
    Path(key): Path<String>,
) -> ApiResult<axum::Json<Setting>> {
    let value = s
        .store
        .setting(&key)
        .await?
        .ok_or_else(|| ApiError::not_found("setting"))?;
    Ok(axum::Json(Setting::new(key, &value)))
}

async fn put_setting(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(key): Path<String>,
    Json(b): Json<SettingValue>,
) -> ApiResult<axum::Json<Setting>> {
    service::set(&s.store, &p.actor(), &key, &b.value).await?;
    Ok(axum::Json(Setting::new(key, &b.value)))
}

async fn delete_setting(
    State(s): State<AdminState>,
    Admin(p): Admin,
    Path(key): Path<String>,
) -> ApiResult<Response> {
    service::delete(&s.store, &p.actor(), &key).await?;
    Ok(no_content())
}

/// Registers the routes above in the route table (router and OpenAPI document).
pub(super) fn routes(a: &mut Api) {
    use Access::*;
    a.op::<(), Vec<Setting>>(
        get(list_settings),
        "/settings",
        "List settings",
        "settings",
        Admin,
        200,
    );
    a.op::<(), Setting>(
        get(get_setting),
        "/settings/{key}",
        "Get a setting",
        "settings",
        Admin,
        200,
    );
    a.op::<SettingValue, Setting>(
        put(put_setting),
        "/settings/{key}",
        "Set a setting",
        "settings",
        Admin,
        200,
    );
    a.op::<(), ()>(
        delete(delete_setting),
        "/settings/{key}",
        "Remove a setting",
        "settings",
        Admin,
        204,
    );
}
