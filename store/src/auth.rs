//! What sign-in and the edge need beyond the admin API: signed session cookies, an in-memory
//! session table for `/auth/verify`, and the allowed groups of an HTTP service.
//!
//! ## Sessions
//! A session cookie is `<id>.<mac>`: a random 256-bit id (hex) and an HMAC-SHA256 of the id under
//! the newest signing secret from `session_secrets` (stored encrypted). Cookies signed by an older
//! secret keep verifying until that secret is retired, so rotation signs nobody out; a forged or
//! truncated cookie is refused without touching the database. Only the id's SHA-256 is stored.
//!
//! Live sessions are remembered in memory after their first lookup, so `/auth/verify` answers
//! from memory. Architecture Invariant: a cached session is never used once its row is gone.
//! Deletes made by this process drop the entry before they return; deletes made elsewhere arrive
//! as row-level notifications on [`SESSION_CHANNEL`] (see migration 0007); while the change feed
//! is disconnected (notifications may be lost) the cache is off and every lookup reads the row.
//! A lookup that misses records the cache generation before it reads and inserts only if no
//! invalidation happened meanwhile, so a concurrent logout cannot be undone by a slow read.
//!
//! The one exception is a database outage: while the feed is down, a session this process had
//! remembered (and not forgotten since) is still answered when its row cannot be read, because
//! the read failed as unavailable or took longer than [`OUTAGE_READ`]. So the edge keeps
//! letting known sessions through while PostgreSQL is away; a session deleted by another
//! process during the outage ends when the database is back, and a row the database says is
//! gone is forgotten at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::error::{Result, StoreError};
use crate::models::{ServiceId, Uid};
use crate::resources::token_hash;
use crate::Store;

/// Notification channel for session deletions (payload: the id hash, or `*` for all) and
/// signing-secret changes (payload `#secrets`).
pub const SESSION_CHANNEL: &str = "siteward_session";

/// Encryption context (AAD) of `session_secrets.secret`.
const SECRET_CONTEXT: &str = "session_secrets.secret";

/// `last_seen_at` is refreshed at most this often, so a busy session costs no write per request.
const TOUCH_EVERY: Duration = Duration::seconds(60);

/// At most this many sessions are remembered; beyond it lookups read the database.
const CACHE_LIMIT: usize = 200_000;

/// While the change feed is down, how long a lookup of a remembered session waits for its row
/// before answering from memory (the database is probably away: connecting to it fails only
/// when the pool's acquire timeout ends).
pub const OUTAGE_READ: std::time::Duration = std::time::Duration::from_millis(250);

/// A live browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its user.
    pub uid: Uid,
    /// The token every form of this session must carry.
    pub csrf_token: String,
}

#[derive(Debug, Clone)]
struct Cached {
    info: SessionInfo,
    expires_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    /// The cookie that last verified for this session, the key of its `by_cookie` entry.
    cookie: Option<Box<str>>,
}

#[derive(Debug, Default)]
struct Table {
    by_hash: HashMap<String, Cached>,
    /// Cookies whose signature verified under a current key → the hash of their id, so that a
    /// session's next requests skip the HMAC and the SHA-256 (`/auth/verify` runs per request).
    /// An entry exists only while its session is in `by_hash` (it goes with it), and the map is
    /// emptied whenever the signing keys change.
    by_cookie: HashMap<Box<str>, Box<str>>,
    /// Bumped by every invalidation.
    generation: u64,
}

impl Table {
    fn remove(&mut self, hash: &str) {
        if let Some(c) = self.by_hash.remove(hash) {
            if let Some(cookie) = c.cookie {
                self.by_cookie.remove(&cookie);
            }
        }
    }
}

/// One signing secret, newest first in [`Sessions::keys`].
#[derive(Clone)]
struct Key {
    id: i64,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The process's session state: signing keys and the cache of live sessions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    table: RwLock<Table>,
    enabled: AtomicBool,
    keys: ArcSwap<Vec<Key>>,
}

impl Sessions {
    fn lookup(&self, hash: &str, now: DateTime<Utc>) -> Option<Cached> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let t = self.table.read().ok()?;
        t.by_hash.get(hash).filter(|c| c.expires_at > now).cloned()
    }

    /// A live session by the very cookie that verified for it before: its id's hash and entry.
    fn lookup_cookie(&self, cookie: &str, now: DateTime<Utc>) -> Option<(Box<str>, Cached)> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let t = self.table.read().ok()?;
        let hash = t.by_cookie.get(cookie)?;
        let c = t.by_hash.get(&**hash).filter(|c| c.expires_at > now)?;
        Some((hash.clone(), c.clone()))
    }

    /// Links a cookie that verified to its remembered session (if it still is remembered).
    fn link_cookie(&self, cookie: &str, hash: &str) {
        if let Ok(mut t) = self.table.write() {
            let t = &mut *t;
            if let Some(c) = t.by_hash.get_mut(hash) {
                if let Some(old) = c.cookie.replace(cookie.into()) {
                    t.by_cookie.remove(&old);
                }
                t.by_cookie.insert(cookie.into(), hash.into());
            }
        }
    }

    /// New signing keys: a cookie verified under a retired key must not be answered from memory.
    fn set_keys(&self, keys: Vec<Key>) {
        self.keys.store(Arc::new(keys));
        if let Ok(mut t) = self.table.write() {
            t.by_cookie.clear();
            for c in t.by_hash.values_mut() {
                c.cookie = None;
            }
        }
    }

    /// While the feed is down: a live entry remembered before it went down (and not forgotten
    /// since), to answer when the database cannot be read. Nothing while the feed is up (then
    /// [`Sessions::lookup`] answers).
    fn known(&self, hash: &str, now: DateTime<Utc>) -> Option<Cached> {
        if self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let t = self.table.read().ok()?;
        t.by_hash.get(hash).filter(|c| c.expires_at > now).cloned()
    }

    fn generation(&self) -> u64 {
        self.table.read().map(|t| t.generation).unwrap_or(u64::MAX)
    }

    fn remember(&self, hash: String, c: Cached, seen_generation: u64) {
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut t) = self.table.write() {
            if t.generation == seen_generation
                && (t.by_hash.len() < CACHE_LIMIT || t.by_hash.contains_key(&hash))
            {
                t.remove(&hash);
                if let Some(cookie) = &c.cookie {
                    t.by_cookie.insert(cookie.clone(), hash.as_str().into());
                }
                t.by_hash.insert(hash, c);
            }
        }
    }

    fn touched(&self, hash: &str, now: DateTime<Utc>) {
        if let Ok(mut t) = self.table.write() {
            if let Some(c) = t.by_hash.get_mut(hash) {
                c.last_seen = now;
            }
        }
    }

    /// Drops one session (by id hash).
    pub(crate) fn forget(&self, hash: &str) {
        if let Ok(mut t) = self.table.write() {
            t.remove(hash);
            t.generation += 1;
        }
    }

    fn forget_uid(&self, uid: Uid) {
        if let Ok(mut t) = self.table.write() {
            let t = &mut *t;
            let by_cookie = &mut t.by_cookie;
            t.by_hash.retain(|_, c| {
                let keep = c.info.uid != uid;
                if let (false, Some(cookie)) = (keep, &c.cookie) {
                    by_cookie.remove(cookie);
                }
                keep
            });
            t.generation += 1;
        }
    }

    /// Drops everything.
    pub(crate) fn clear(&self) {
        if let Ok(mut t) = self.table.write() {
            t.by_hash.clear();
            t.by_cookie.clear();
            t.generation += 1;
        }
    }

    /// The change feed is connected (and listening): remembering is safe.
    pub(crate) fn enable(&self) {
        self.clear();
        self.enabled.store(true, Ordering::Release);
    }

    /// The change feed is down: a deletion elsewhere could go unnoticed, so stop answering from
    /// memory and stop remembering. What is remembered stays, for [`Sessions::known`] (the
    /// database may be down too); [`Sessions::enable`] drops it.
    pub(crate) fn disable(&self) {
        self.enabled.store(false, Ordering::Release);
    }

    fn sign(&self, id: &str) -> Option<String> {
        let keys = self.keys.load();
        let key = keys.first()?;
        Some(format!("{id}.{}", mac_of(&key.secret, id)))
    }

    /// The id inside a cookie whose signature verifies under any current key.
    fn verified_id<'c>(&self, cookie: &'c str) -> Option<&'c str> {
        let (id, mac) = split_cookie(cookie)?;
        let mac = base64_url(mac)?;
        let keys = self.keys.load();
        keys.iter()
            .any(|k| {
                hmac_of(&k.secret, id)
                    .map(|m| m.verify_slice(&mac).is_ok())
                    .unwrap_or(false)
            })
            .then_some(id)
    }
}

fn hmac_of(secret: &[u8], id: &str) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    m.update(b"siteward session\0");
    m.update(id.as_bytes());
    Some(m)
}

fn mac_of(secret: &[u8], id: &str) -> String {
    use base64::Engine;
    let bytes = hmac_of(secret, id)
        .map(|m| m.finalize().into_bytes().to_vec())
        .unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn base64_url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

/// `<64 hex>.<43 base64url>`, else `None`.
fn split_cookie(cookie: &str) -> Option<(&str, &str)> {
    let (id, mac) = cookie.split_once('.')?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) && mac.len() == 43)
        .then_some((id, mac))
}

/// The id hash a cookie names, whether or not its signature verifies (for logout).
pub(crate) fn cookie_hash(cookie: &str) -> Option<String> {
    split_cookie(cookie).map(|(id, _)| token_hash(id))
}

impl Store {
    fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Signs a fresh session id into a cookie value, loading (or creating) the signing secrets
    /// first if this process has none yet.
    pub(crate) async fn sign_session(&self, id: &str) -> Result<String> {
        if self.sessions().keys.load().is_empty() {
            self.load_session_secrets().await?;
        }
        self.sessions().sign(id).ok_or(StoreError::NotFound {
            entity: "session signing secret",
        })
    }

    /// Loads the signing secrets, creating the first one when there is none.
    pub async fn load_session_secrets(&self) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('siteward_session_secrets'))")
            .execute(&mut *tx)
            .await?;
        let mut rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT id, secret FROM session_secrets ORDER BY id DESC")
                .fetch_all(&mut *tx)
                .await?;
        if rows.is_empty() {
            let sealed = self.secrets().seal(SECRET_CONTEXT, &random_secret())?;
            let id: i64 =
                sqlx::query_scalar("INSERT INTO session_secrets (secret) VALUES ($1) RETURNING id")
                    .bind(&sealed)
                    .fetch_one(&mut *tx)
                    .await?;
            rows.push((id, sealed));
        }
        tx.commit().await?;
        let mut keys = Vec::with_capacity(rows.len());
        for (id, sealed) in rows {
            keys.push(Key {
                id,
                secret: self.secrets().open(SECRET_CONTEXT, &sealed)?,
            });
        }
        self.sessions().set_keys(keys);
        Ok(())
    }

    /// Adds a new signing secret that signs every new session from now on. Older secrets keep
    /// verifying their sessions until `retire_after` has passed since they stopped signing
    /// (pass the session lifetime); with `revoke_all`, every older secret goes at once and with
    /// it every existing session. Returns how many secrets were removed.
    pub async fn rotate_session_secret(
        &self,
        now: DateTime<Utc>,
        retire_after: Duration,
        revoke_all: bool,
    ) -> Result<u64> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('siteward_session_secrets'))")
            .execute(&mut *tx)
            .await?;
        let sealed = self.secrets().seal(SECRET_CONTEXT, &random_secret())?;
        let new: i64 = sqlx::query_scalar(
            "INSERT INTO session_secrets (secret, created_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(&sealed)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        // A secret stopped signing when its successor was created.
        let removed = sqlx::query(
            "DELETE FROM session_secrets s WHERE s.id <> $1 AND ($2 OR
               (SELECT min(n.created_at) FROM session_secrets n WHERE n.id > s.id) <= $3)",
        )
        .bind(new)
        .bind(revoke_all)
        .bind(now - retire_after)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if revoke_all {
            sqlx::query("DELETE FROM sessions")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if revoke_all {
            self.sessions().clear();
        }
        self.load_session_secrets().await?;
        Ok(removed)
    }

    /// The live session a cookie value names, if any: from memory when this process has seen
    /// it, else one read. Refreshes `last_seen_at` in the background at most once a minute.
    pub async fn session(&self, cookie: &str, now: DateTime<Utc>) -> Result<Option<SessionInfo>> {
        let sessions = self.sessions();
        // The common case: this very cookie verified before and its session is remembered.
        if let Some((hash, c)) = sessions.lookup_cookie(cookie, now) {
            if now - c.last_seen > TOUCH_EVERY {
                sessions.touched(&hash, now);
                self.touch_session(hash.into(), now);
            }
            return Ok(Some(c.info));
        }
        if sessions.keys.load().is_empty() {
            self.load_session_secrets().await?;
        }
        let Some(id) = sessions.verified_id(cookie) else {
            return Ok(None);
        };
        let hash = token_hash(id);
        if let Some(c) = sessions.lookup(&hash, now) {
            sessions.link_cookie(cookie, &hash);
            if now - c.last_seen > TOUCH_EVERY {
                sessions.touched(&hash, now);
                self.touch_session(hash, now);
            }
            return Ok(Some(c.info));
        }
        let generation = sessions.generation();
        let read = async {
            let row: Option<(i32, String, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
                "SELECT uid_number, csrf_token, last_seen_at, expires_at FROM sessions
                 WHERE id_hash = $1 AND expires_at > $2",
            )
            .bind(&hash)
            .bind(now)
            .fetch_optional(self.pool())
            .await?;
            Ok::<_, StoreError>(row)
        };
        let known = sessions.known(&hash, now);
        let row = match known {
            None => read.await?,
            // The feed is down and this session was live: the row decides if it can be read,
            // else what was known does (see the module's note on outages).
            Some(known) => match tokio::time::timeout(OUTAGE_READ, read).await {
                Ok(Ok(Some(row))) => Some(row),
                Ok(Ok(None)) => {
                    sessions.forget(&hash);
                    None
                }
                Ok(Err(e)) if !e.is_unavailable() => return Err(e),
                Ok(Err(_)) | Err(_) => return Ok(Some(known.info)),
            },
        };
        let Some((uid, csrf_token, last_seen, expires_at)) = row else {
            return Ok(None);
        };
        let info = SessionInfo {
            uid: Uid(uid),
            csrf_token,
        };
        let stale = now - last_seen > TOUCH_EVERY;
        sessions.remember(
            hash.clone(),
            Cached {
                info: info.clone(),
                expires_at,
                last_seen: if stale { now } else { last_seen },
                cookie: Some(cookie.into()),
            },
            generation,
        );
        if stale {
            self.touch_session(hash, now);
        }
        Ok(Some(info))
    }

    fn touch_session(&self, hash: String, now: DateTime<Utc>) {
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

    /// Forgets one session in this process (after its row was deleted).
    pub(crate) fn forget_session(&self, hash: &str) {
        self.sessions().forget(hash);
    }

    /// Forgets every session of a user in this process (after their rows were deleted).
    pub(crate) fn forget_sessions_of(&self, uid: Uid) {
        self.sessions().forget_uid(uid);
    }

    /// Sets the groups (by name) allowed through auth_request for an HTTP service. Unknown
    /// group names are refused, so a typo cannot silently lock everyone out.
    pub async fn set_allowed_groups(
        &self,
        service: ServiceId,
        groups: &[String],
        by: &crate::audit::Actor,
    ) -> Result<()> {
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
        let mut tx = self.pool().begin().await?;
        let done =
            sqlx::query("UPDATE http_services SET allowed_groups = $2 WHERE service_id = $1")
                .bind(service)
                .bind(&names)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "http service",
            });
        }
        let details = serde_json::json!({ "allowed_groups": names });
        crate::audit::record(&mut tx, by, "update", "service", service, details).await?;
        tx.commit().await?;
        self.refreshed(&["http_services"]).await;
        Ok(())
    }
}

fn random_secret() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_keys(secrets: &[&[u8]]) -> Sessions {
        let s = Sessions::default();
        s.set_keys(
            secrets
                .iter()
                .enumerate()
                .map(|(i, k)| Key {
                    id: i as i64,
                    secret: k.to_vec(),
                })
                .collect(),
        );
        s
    }

    #[test]
    fn cookies_verify_under_any_current_key_and_nothing_else() {
        let id = "ab".repeat(32);
        let old = with_keys(&[b"old"]);
        let cookie = old.sign(&id).unwrap();
        assert_eq!(old.verified_id(&cookie), Some(id.as_str()));
        // After rotation the old cookie still verifies; the new key signs.
        let rotated = with_keys(&[b"new", b"old"]);
        assert_eq!(rotated.verified_id(&cookie), Some(id.as_str()));
        assert_ne!(rotated.sign(&id).unwrap(), cookie);
        // Retired key: refused.
        assert_eq!(with_keys(&[b"new"]).verified_id(&cookie), None);
        // Tampering: another id with the same mac, a flipped mac, junk.
        let (_, mac) = cookie.split_once('.').unwrap();
        assert_eq!(old.verified_id(&format!("{}.{mac}", "cd".repeat(32))), None);
        let mut flipped = cookie.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(old.verified_id(&String::from_utf8(flipped).unwrap()), None);
        for junk in [
            "",
            ".",
            &id,
            &format!("{id}."),
            "x.y",
            &format!("{id}.{id}"),
        ] {
            assert_eq!(old.verified_id(junk), None, "{junk}");
        }
        assert_eq!(with_keys(&[]).verified_id(&cookie), None);
    }

    #[test]
    fn an_invalidation_during_a_read_keeps_the_read_out_of_the_cache() {
        let s = Sessions::default();
        s.enable();
        let now = Utc::now();
        let entry = Cached {
            info: SessionInfo {
                uid: Uid(7),
                csrf_token: "t".into(),
            },
            expires_at: now + Duration::hours(1),
            last_seen: now,
            cookie: None,
        };
        let g = s.generation();
        s.forget("h1"); // a logout lands while the read is in flight
        s.remember("h1".into(), entry.clone(), g);
        assert!(s.lookup("h1", now).is_none());
        let g = s.generation();
        s.remember("h1".into(), entry.clone(), g);
        assert!(s.lookup("h1", now).is_some());
        // Expired entries are not answered.
        assert!(s.lookup("h1", now + Duration::hours(2)).is_none());
        // By user; and nothing is answered while the feed is down.
        s.forget_uid(Uid(7));
        assert!(s.lookup("h1", now).is_none());
        let g = s.generation();
        s.remember("h1".into(), entry.clone(), g);
        s.disable();
        assert!(s.lookup("h1", now).is_none());
        // Nor remembered meanwhile.
        let g = s.generation();
        s.remember("h2".into(), entry, g);
        assert!(s.known("h2", now).is_none());
    }

    #[test]
    fn while_the_feed_is_down_only_what_was_live_before_is_known() {
        let s = Sessions::default();
        s.enable();
        let now = Utc::now();
        let entry = |uid| Cached {
            info: SessionInfo {
                uid: Uid(uid),
                csrf_token: "t".into(),
            },
            expires_at: now + Duration::hours(1),
            last_seen: now,
            cookie: None,
        };
        for (hash, uid) in [("a", 1), ("b", 1), ("c", 2)] {
            let g = s.generation();
            s.remember(hash.into(), entry(uid), g);
        }
        // Known is for outages only: while the feed is up the cache answers.
        assert!(s.known("a", now).is_none());
        s.disable();
        assert_eq!(s.known("a", now).map(|c| c.info.uid), Some(Uid(1)));
        assert!(s.known("a", now + Duration::hours(2)).is_none(), "expired");
        // Logouts and suspensions in this process still apply.
        s.forget("a");
        assert!(s.known("a", now).is_none());
        s.forget_uid(Uid(1));
        assert!(s.known("b", now).is_none());
        assert!(s.known("c", now).is_some());
        // The feed is back: the rows decide again, from an empty cache.
        s.enable();
        s.disable();
        assert!(s.known("c", now).is_none());
    }

    #[test]
    fn a_verified_cookie_is_answered_by_itself_only_while_its_session_is() {
        let s = with_keys(&[b"k"]);
        s.enable();
        let now = Utc::now();
        let entry = |uid, cookie: &str| Cached {
            info: SessionInfo {
                uid: Uid(uid),
                csrf_token: "t".into(),
            },
            expires_at: now + Duration::hours(1),
            last_seen: now,
            cookie: Some(cookie.into()),
        };
        let remember = |hash: &str, c| {
            let g = s.generation();
            s.remember(hash.into(), c, g);
        };
        remember("h1", entry(1, "c1"));
        remember("h2", entry(1, "c2"));
        remember("h3", entry(2, "c3"));
        let hash_of = |cookie| s.lookup_cookie(cookie, now).map(|(h, _)| h.to_string());
        assert_eq!(hash_of("c1").as_deref(), Some("h1"));
        assert_eq!(hash_of("c1x"), None);
        assert!(
            s.lookup_cookie("c1", now + Duration::hours(2)).is_none(),
            "expired"
        );
        // A logout takes its cookie with it; so does a suspension, for every session of the user.
        s.forget("h1");
        assert_eq!(hash_of("c1"), None);
        s.forget_uid(Uid(1));
        assert_eq!(hash_of("c2"), None);
        assert_eq!(hash_of("c3").as_deref(), Some("h3"));
        // Linking another cookie to a session replaces the first.
        s.link_cookie("c3b", "h3");
        assert_eq!(hash_of("c3"), None);
        assert_eq!(hash_of("c3b").as_deref(), Some("h3"));
        // A cookie for a session that is not remembered is not linked.
        s.link_cookie("c9", "h9");
        assert_eq!(hash_of("c9"), None);
        // New keys: every cookie verifies again (a retired key's cookies must not pass).
        s.set_keys(vec![Key {
            id: 2,
            secret: b"k2".to_vec(),
        }]);
        assert_eq!(hash_of("c3b"), None);
        assert!(s.lookup("h3", now).is_some(), "the session itself stays");
        // The feed is down: nothing from memory.
        s.link_cookie("c3b", "h3");
        s.disable();
        assert_eq!(hash_of("c3b"), None);
    }
}
