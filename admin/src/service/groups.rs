//! Groups and memberships: create, change, delete, add and remove members.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use siteward_store::{Actor, Gid, Group, PosixName, Store, Uid};

use super::{nullable, ApiError, Result};

/// A group to create.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// POSIX group name.
    pub cn: String,
    /// Free text.
    pub description: Option<String>,
    /// Members are administrators.
    #[serde(default)]
    pub is_administrator: bool,
}

/// Changes to a group.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    /// Free text.
    #[serde(default, deserialize_with = "nullable")]
    pub description: Option<Option<String>>,
    /// Members are administrators.
    pub is_administrator: Option<bool>,
}

/// A member to add.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// Login name.
    pub username: String,
}

/// Creates a group (administrators, the CLI).
pub async fn create(store: &Store, by: &Actor, b: CreateGroup) -> Result<Group> {
    PosixName::parse(&b.cn)
        .map_err(|_| ApiError::invalid("cn", "cn must be a POSIX group name"))?;
    Ok(store
        .create_group(&b.cn, b.description.as_deref(), b.is_administrator, by)
        .await?)
}

/// Changes a group.
pub async fn update(store: &Store, by: &Actor, gid: Gid, b: UpdateGroup) -> Result<Group> {
    Ok(store
        .update_group(gid, b.description, b.is_administrator, by)
        .await?)
}

/// Deletes a group (the built-in ones stay).
pub async fn delete(store: &Store, by: &Actor, gid: Gid) -> Result<()> {
    Ok(store.delete_group(gid, by).await?)
}

/// Adds a member by login name; adding a member again is not an error.
pub async fn add_member(store: &Store, by: &Actor, group: &str, username: &str) -> Result<()> {
    both_named(group, username)?;
    Ok(store.add_group_member(group, username, by).await?)
}

/// Both names of a membership form are given.
fn both_named(group: &str, username: &str) -> Result<()> {
    for (field, v) in [("group", group), ("username", username)] {
        if v.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("{field} is required"),
            )
            .field(field));
        }
    }
    Ok(())
}

/// A user leaves a group, both by name (the console's form); 404 when either does not exist or
/// the user is no member.
pub async fn remove_member_named(
    store: &Store,
    by: &Actor,
    group: &str,
    username: &str,
) -> Result<()> {
    both_named(group, username)?;
    Ok(store.remove_group_member(group, username, by).await?)
}

/// Removes a member.
pub async fn remove_member(store: &Store, by: &Actor, gid: Gid, uid: Uid) -> Result<()> {
    let g = store.group(gid).await?;
    let u = store.user_by_uid(uid).await?;
    Ok(store.remove_group_member(&g.cn, &u.username, by).await?)
}
