//! What sign-in and the edge need beyond the admin API: a read-mostly session lookup for
//! `/auth/verify` (no write per request) and the allowed groups of an HTTP service.
//!
//! Sessions themselves are created and deleted in [`crate::resources`].

use chrono::{DateTime, Duration, Utc};

use crate::error::{Result, StoreError};
use crate::models::{ServiceId, Uid};
use crate::resources::token_hash;
use crate::Store;

/// A live browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its user.
    pub uid: Uid,
    /// The token every form of this session must carry.
    pub csrf_token: String,
}

/// `last_seen_at` is refreshed at most this often, so a busy session costs a read per request,
/// not a write.
const TOUCH_EVERY: Duration = Duration::seconds(60);

impl Store {
    /// The live session with cookie id `id`, if any. Reads only; refreshes `last_seen_at` in the
    /// background when it is older than a minute.
    pub async fn session(&self, id: &str, now: DateTime<Utc>) -> Result<Option<SessionInfo>> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let hash = token_hash(id);
        let row: Option<(i32, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT uid_number, csrf_token, last_seen_at FROM sessions
             WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(&hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        let Some((uid, csrf_token, last_seen)) = row else {
            return Ok(None);
        };
        if now - last_seen > TOUCH_EVERY {
            let pool = self.pool().clone();
            tokio::spawn(async move {
                let done = sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1")
                    .bind(hash)
                    .bind(now)
                    .execute(&pool)
                    .await;
                if let Err(e) = done {
                    tracing::debug!(error = %e, "refreshing a session's last_seen_at failed");
                }
            });
        }
        Ok(Some(SessionInfo {
            uid: Uid(uid),
            csrf_token,
        }))
    }

    /// Sets the groups (by name) allowed through auth_request for an HTTP service. Unknown
    /// group names are refused, so a typo cannot silently lock everyone out.
    pub async fn set_allowed_groups(&self, service: ServiceId, groups: &[String]) -> Result<()> {
        let mut names: Vec<String> = groups.iter().map(|g| g.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        let known: i64 =
            sqlx::query_scalar("SELECT count(*) FROM groups WHERE lower(cn) = ANY($1)")
                .bind(&names)
                .fetch_one(self.pool())
                .await?;
        if usize::try_from(known).ok() != Some(names.len()) {
            return Err(StoreError::Invalid {
                field: "allowed_groups".into(),
                message: "names a group that does not exist".into(),
            });
        }
        let done =
            sqlx::query("UPDATE http_services SET allowed_groups = $2 WHERE service_id = $1")
                .bind(service)
                .bind(&names)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "http service",
            });
        }
        Ok(())
    }
}
