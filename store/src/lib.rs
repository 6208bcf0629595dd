//! # siteward-store
//!
//! PostgreSQL is the source of truth; this crate owns every query against it, the models, the
//! encryption of secrets at rest, and the live [`Snapshot`] that the protocol servers read.
//!
//! ## Layout
//! - [`models`]: typed rows and newtype ids.
//! - [`queries`] (methods on [`Store`]): the write path and reads that must be current.
//! - [`snapshot`]: the in-memory view, rebuilt per half (identity, naming).
//! - `feed`: LISTEN/NOTIFY change feed that keeps the snapshot current.
//! - [`patch`]: applies the rows a batch of notifications names to copies of the halves.
//! - [`crypto`]: AES-256-GCM for secrets at rest.
//! - [`password`]: argon2id off the async runtime.
//!
//! Nothing here binds a socket or knows about LDAP, DNS or HTTP.

pub mod acme;
pub mod audit;
pub mod auth;
pub mod crypto;
pub mod embedded;
pub mod error;
mod feed;
pub mod jobs;
pub mod models;
pub mod password;
pub mod patch;
pub mod queries;
pub mod resources;
pub mod slots;
pub mod snapshot;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use audit::{Actor, AuditFilter, Via};
pub use crypto::SecretBox;
pub use error::{Result, StoreError};
pub use feed::CHANNEL;
pub use models::*;
pub use password::HashCost;
pub use patch::Changes;
pub use queries::{NewNode, NewSite, NewUser};
pub use snapshot::{
    find_sorted, Dirty, Identity, Naming, NamingDelta, SiteView, Snapshot, NAMING_HISTORY,
};

/// The embedded migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Whether the snapshot is current, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStatus {
    /// The change feed is connected and the snapshot loaded.
    pub ready: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// Handle to the database, the secrets key and the live snapshot. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    secrets: SecretBox,
    hash_cost: HashCost,
    snapshot: ArcSwap<Snapshot>,
    status: ArcSwap<FeedStatus>,
    reloads: AtomicU64,
    /// Serializes reloads so generations are built from each other in order.
    reload_lock: tokio::sync::Mutex<()>,
    /// Session signing keys and the cache of live sessions.
    sessions: auth::Sessions,
    /// Marks this process's catch-up notifications (`#sync <tag> <n>`).
    sync_tag: String,
    /// The last catch-up number handed out.
    sync_sent: AtomicU64,
    /// The last catch-up number whose notification the feed has applied.
    sync_applied: tokio::sync::watch::Sender<u64>,
    /// Patches applied since start.
    patches: AtomicU64,
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connection options (URL or Unix socket).
    pub connect: PgConnectOptions,
    /// Pool size.
    pub max_connections: u32,
    /// Key for secrets at rest.
    pub secrets: SecretBox,
    /// Argon2 cost for new hashes.
    pub hash_cost: HashCost,
}

impl Store {
    /// Connects a pool (lazily: the first query opens a connection, so a database that is down
    /// at start makes the process not-ready instead of failing).
    pub fn connect_lazy(options: StoreOptions) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options.connect);
        Self::from_pool(pool, options.secrets, options.hash_cost)
    }

    /// Wraps an existing pool (tests use this with `#[sqlx::test]`).
    pub fn from_pool(pool: PgPool, secrets: SecretBox, hash_cost: HashCost) -> Self {
        password::set_dummy_cost(hash_cost);
        Self {
            inner: Arc::new(Inner {
                pool,
                secrets,
                hash_cost,
                snapshot: ArcSwap::from_pointee(Snapshot::empty()),
                status: ArcSwap::from_pointee(FeedStatus {
                    ready: false,
                    reason: Some("snapshot not loaded yet".into()),
                }),
                reloads: AtomicU64::new(0),
                reload_lock: tokio::sync::Mutex::new(()),
                sessions: auth::Sessions::default(),
                sync_tag: rand::distributions::DistString::sample_string(
                    &rand::distributions::Alphanumeric,
                    &mut rand::rngs::OsRng,
                    16,
                ),
                sync_sent: AtomicU64::new(0),
                sync_applied: tokio::sync::watch::Sender::new(0),
                patches: AtomicU64::new(0),
            }),
        }
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(self.pool()).await?;
        Ok(())
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.pool()).await?;
        Ok(())
    }

    /// The pool's connections: `(open, idle)`.
    pub fn pool_connections(&self) -> (u32, u32) {
        let pool = self.pool();
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
        (pool.size(), idle)
    }

    /// Closes every connection; later queries fail.
    pub async fn close(&self) {
        self.pool().close().await;
    }

    /// The connection pool: only this crate runs SQL.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub(crate) fn secrets(&self) -> &SecretBox {
        &self.inner.secrets
    }

    pub(crate) fn hash_cost(&self) -> HashCost {
        self.inner.hash_cost
    }

    /// The current snapshot. Hold the `Arc` for the duration of one request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.load_full()
    }

    /// Whether the snapshot is being kept current.
    pub fn feed_status(&self) -> Arc<FeedStatus> {
        self.inner.status.load_full()
    }

    /// How many times the snapshot was rebuilt.
    pub fn reload_count(&self) -> u64 {
        self.inner.reloads.load(Ordering::Relaxed)
    }

    fn set_ready(&self) {
        self.inner.status.store(Arc::new(FeedStatus {
            ready: true,
            reason: None,
        }));
    }

    fn set_not_ready(&self, reason: String) {
        self.inner.status.store(Arc::new(FeedStatus {
            ready: false,
            reason: Some(reason),
        }));
    }

    /// Rebuilds the halves of the snapshot that `dirty` names and swaps the result in.
    pub async fn reload(&self, dirty: Dirty) -> Result<()> {
        if dirty.is_clean() {
            return Ok(());
        }
        let _guard = self.inner.reload_lock.lock().await;
        let previous = self.snapshot();
        let started = std::time::Instant::now();
        let next = snapshot::rebuild(self.pool(), &previous, dirty).await?;
        let generation = next.generation;
        self.inner.snapshot.store(Arc::new(next));
        self.inner.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            generation,
            identity = dirty.identity,
            naming = dirty.naming,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot reloaded"
        );
        Ok(())
    }

    /// Applies the rows `changes` names to the snapshot (halves marked whole are reloaded) and
    /// swaps the result in.
    pub async fn apply_changes(&self, changes: &Changes) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let _guard = self.inner.reload_lock.lock().await;
        let previous = self.snapshot();
        let started = std::time::Instant::now();
        let next = patch::apply(self.pool(), &previous, changes).await?;
        let generation = next.generation;
        self.inner.snapshot.store(Arc::new(next));
        self.inner.patches.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            generation,
            identity_whole = changes.identity_all,
            naming_whole = changes.naming_all,
            elapsed_us = started.elapsed().as_micros() as u64,
            "snapshot patched"
        );
        Ok(())
    }

    /// How many patches the change feed applied.
    pub fn patch_count(&self) -> u64 {
        self.inner.patches.load(Ordering::Relaxed)
    }

    /// Waits until the snapshot reflects every transaction committed before this call: sends a
    /// marker notification and waits for the change feed to apply the batch that holds it
    /// (PostgreSQL delivers notifications in commit order). Returns false when the feed is not
    /// connected or did not get there within `timeout`.
    pub async fn catch_up(&self, timeout: Duration) -> bool {
        if !self.feed_status().ready {
            return false;
        }
        let n = self.inner.sync_sent.fetch_add(1, Ordering::Relaxed) + 1;
        let marker = format!("{} {} {n}", feed::SYNC_PREFIX, self.inner.sync_tag);
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&marker)
            .execute(self.pool())
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "catch-up marker not sent");
            return false;
        }
        let mut applied = self.inner.sync_applied.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|seen| *seen >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Called by the feed after a batch holding catch-up marker `payload` was applied.
    fn marker_applied(&self, payload: &str) {
        let mut parts = payload.split(' ').skip(1);
        if parts.next() != Some(self.inner.sync_tag.as_str()) {
            return;
        }
        if let Some(n) = parts.next().and_then(|n| n.parse::<u64>().ok()) {
            self.inner.sync_applied.send_if_modified(|seen| {
                let newer = n > *seen;
                if newer {
                    *seen = n;
                }
                newer
            });
        }
    }

    /// Starts the change feed on `tracker`; it stops when `shutdown` is cancelled.
    pub fn spawn_change_feed(&self, tracker: &TaskTracker, shutdown: CancellationToken) {
        let store = self.clone();
        tracker.spawn(async move {
            let span = tracing::info_span!("change_feed");
            tracing::Instrument::instrument(feed::run(store, shutdown), span).await
        });
    }

    /// Waits until `predicate` holds for the current snapshot, polling every millisecond, for at
    /// most `timeout`. Returns whether it held.
    pub async fn wait_for(&self, timeout: Duration, predicate: impl Fn(&Snapshot) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if predicate(&self.snapshot()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
