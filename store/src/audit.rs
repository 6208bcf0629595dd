//! The audit log: who changed what, through which door, from where.
//!
//! Every write method of [`Store`] that a person causes takes the [`Actor`] and appends its one
//! audit row with [`record`] inside the write's own transaction: the change and its audit row
//! commit together or not at all. After the commit the method refreshes the snapshot halves the
//! change feeds ([`Store::refreshed`]), so the next request of any protocol reads its own write.

use std::net::IpAddr;

use serde::Serialize;
use sqlx::PgConnection;

use crate::error::Result;
use crate::models::Uid;
use crate::resources::{Listing, Page};
use crate::snapshot::Dirty;
use crate::Store;

/// Through which door a change came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// A browser session (the JSON API with the cookie, or a page).
    Session,
    /// An API key.
    ApiKey,
    /// The `siteward` command line.
    Cli,
    /// LDAP (Password Modify).
    Ldap,
    /// A request nobody was signed in for: registration, sign-in, a self-service password
    /// reset.
    Public,
    /// The server itself (expiry, cleanup) and tests.
    #[default]
    System,
}

impl Via {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Session => "session",
            Via::ApiKey => "api_key",
            Via::Cli => "cli",
            Via::Ldap => "ldap",
            Via::Public => "public",
            Via::System => "system",
        }
    }
}

/// Who did something, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// User.
    pub uid: Option<Uid>,
    /// Name.
    pub name: Option<String>,
    /// Address.
    pub remote_addr: Option<IpAddr>,
    /// Door.
    pub via: Via,
}

impl Actor {
    /// The server itself: expiry, cleanup, fixtures of tests.
    pub fn system() -> Self {
        Self {
            name: Some("siteward".into()),
            ..Self::default()
        }
    }

    /// The command line, run by the operating-system user `os_user` (from `$USER`/`$LOGNAME`
    /// when known).
    pub fn cli(os_user: Option<String>) -> Self {
        Self {
            name: os_user,
            via: Via::Cli,
            ..Self::default()
        }
    }

    /// A signed-in person.
    pub fn user(uid: Uid, name: &str, remote_addr: Option<IpAddr>, via: Via) -> Self {
        Self {
            uid: Some(uid),
            name: Some(name.to_owned()),
            remote_addr,
            via,
        }
    }
}

/// Which entries [`Store::audit_log`] lists: those whose actor's name contains `actor` and whose
/// `resource:id` contains `resource`, both case-insensitive, as typed (no wildcards).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Part of the actor's name.
    pub actor: Option<String>,
    /// Part of `resource:id`, e.g. `user:alice` or `container`.
    pub resource: Option<String>,
}

/// `text` matched literally inside LIKE (with `ESCAPE '\'`).
fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A row of the audit log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct AuditEntry {
    /// Id.
    pub id: i64,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Acting user.
    pub actor_uid: Option<Uid>,
    /// Acting user's name.
    pub actor_name: Option<String>,
    /// Through which door: `session`, `api_key`, `cli`, `ldap`, `public` (nobody signed in:
    /// registration, sign-in, self-service reset) or `system` (absent on rows older than this
    /// field).
    pub via: Option<String>,
    /// `create`, `update`, `delete`, ...
    pub action: String,
    /// Resource kind.
    pub resource: String,
    /// Resource id.
    pub resource_id: Option<String>,
    /// Client address.
    pub remote_addr: Option<String>,
    /// Changed fields (names only for secrets).
    pub details: serde_json::Value,
}

/// Appends one audit row on `conn`, which is the write's own transaction.
pub(crate) async fn record(
    conn: &mut PgConnection,
    by: &Actor,
    action: &str,
    resource: &str,
    resource_id: impl ToString,
    details: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (actor_uid, actor_name, via, action, resource, resource_id,
                                remote_addr, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(by.uid)
    .bind(&by.name)
    .bind(by.via.as_str())
    .bind(action)
    .bind(resource)
    .bind(resource_id.to_string())
    .bind(by.remote_addr.map(ipnetwork::IpNetwork::from))
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}

/// Names of the fields a JSON object sets (what changed), never values: secrets stay out of the
/// audit log.
pub fn fields<T: Serialize>(body: &T) -> serde_json::Value {
    match serde_json::to_value(body) {
        Ok(serde_json::Value::Object(m)) => {
            serde_json::json!({ "fields": m.keys().collect::<Vec<_>>() })
        }
        _ => serde_json::json!({}),
    }
}

impl Store {
    /// Reads the audit log, newest first.
    pub async fn audit_log(&self, page: Page, filter: &AuditFilter) -> Result<Listing<AuditEntry>> {
        let rows: Vec<AuditEntry> = sqlx::query_as(
            "SELECT id, at, actor_uid, actor_name, via, action, resource, resource_id,
                    host(remote_addr) AS remote_addr, details
             FROM audit_log
             WHERE ($1::bigint IS NULL OR id < $1)
               AND ($3::text IS NULL OR actor_name ILIKE '%' || $3 || '%' ESCAPE '\\')
               AND ($4::text IS NULL
                    OR (resource || ':' || coalesce(resource_id, '')) ILIKE '%' || $4 || '%'
                       ESCAPE '\\')
             ORDER BY id DESC LIMIT $2",
        )
        .bind(page.after)
        .bind(page.limit + 1)
        .bind(filter.actor.as_deref().map(like_literal))
        .bind(filter.resource.as_deref().map(like_literal))
        .fetch_all(self.pool())
        .await?;
        Ok(crate::resources::listing(rows, page, |e| e.id))
    }

    /// After a committed write to `tables`: returns once the snapshot shows it, so the next
    /// request (LDAP, DNS, the API) reads the change. Normally the change feed has patched the
    /// rows by then (see [`Store::catch_up`]); when the feed is down or slow, the halves the
    /// tables feed are reloaded here. A failure is logged; the feed catches up.
    pub(crate) async fn refreshed(&self, tables: &[&str]) {
        if let Err(e) = self.refresh(tables).await {
            tracing::warn!(error = %e, "snapshot refresh after a write failed; the change feed will retry");
        }
    }

    /// [`Store::refreshed`] for a caller that must know the change is visible: the error of
    /// the fallback reload when the change feed did not get there.
    pub(crate) async fn refresh(&self, tables: &[&str]) -> Result<()> {
        // The change feed patches the rows this write touched; wait for it (read-your-writes).
        if self.catch_up(std::time::Duration::from_secs(2)).await {
            return Ok(());
        }
        let mut dirty = Dirty::default();
        for t in tables {
            dirty.mark(t);
        }
        self.reload(dirty).await
    }
}
