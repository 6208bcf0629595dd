//! The change feed: `LISTEN siteward_change` on a dedicated connection, and a patch of the
//! snapshot with the rows the notifications name (`crate::patch`). Triggers fire per statement on
//! every table the snapshot mirrors, so a change made with plain SQL arrives here like one made
//! through the API. Catch-up markers (`#sync <tag> <n>`, see `Store::catch_up`) travel on the
//! same channel and are acknowledged once the batch holding them is applied.
//!
//! Invariant: LISTEN is in place before the snapshot is (re)loaded, so no commit can fall
//! between the load and the first notification. When the connection drops, notifications may
//! have been lost, so the feed reconnects and reloads everything; readiness is false meanwhile.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::auth::SESSION_CHANNEL;
use crate::patch::Changes;
use crate::snapshot::Dirty;
use crate::Store;

/// The notification channel the triggers use.
pub const CHANNEL: &str = "siteward_change";

/// Payload prefix of catch-up markers.
pub(crate) const SYNC_PREFIX: &str = "#sync";

/// How often an idle listener connection is probed, so a silently dead connection is noticed.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Runs until `shutdown` is cancelled.
pub(crate) async fn run(store: Store, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        match session(&store, &shutdown).await {
            Ok(()) => return,
            Err(reason) => {
                tracing::warn!(%reason, "change feed interrupted; reconnecting");
                // Session deletions made elsewhere could be missed from now on.
                store.inner.sessions.disable();
                store.set_not_ready(reason);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One listener connection's life. Returns `Ok` on shutdown, `Err(reason)` when it must
/// reconnect.
async fn session(store: &Store, shutdown: &CancellationToken) -> Result<(), String> {
    let mut listener = PgListener::connect_with(store.pool())
        .await
        .map_err(|e| format!("change feed cannot connect: {e}"))?;
    // A lost connection must surface as `Ok(None)`, never be replaced quietly: sqlx's eager
    // reconnect runs inside `try_recv`, and the probe timeout below can cancel it half way, after
    // which the next call would reconnect without telling us (notifications lost meanwhile,
    // session cache never disabled).
    listener.eager_reconnect(false);
    listener
        .listen_all([CHANNEL, SESSION_CHANNEL])
        .await
        .map_err(|e| format!("change feed cannot LISTEN: {e}"))?;
    store
        .load_session_secrets()
        .await
        .map_err(|e| format!("session secrets cannot be loaded: {e}"))?;
    store.inner.sessions.enable();
    store
        .reload(Dirty::ALL)
        .await
        .map_err(|e| format!("snapshot reload failed: {e}"))?;
    store.set_ready();
    tracing::info!("change feed connected; snapshot loaded");
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            next = tokio::time::timeout(PROBE_INTERVAL, listener.try_recv()) => next,
        };
        let first = match next {
            Err(_elapsed) => {
                // Idle: prove the connection is alive.
                tokio::time::timeout(
                    PROBE_INTERVAL,
                    sqlx::query("SELECT 1").execute(&mut listener),
                )
                .await
                .map_err(|_| "change feed connection does not answer".to_string())?
                .map_err(|e| format!("change feed connection failed: {e}"))?;
                continue;
            }
            Ok(Ok(Some(notification))) => notification,
            Ok(Ok(None)) => return Err("change feed connection lost".into()),
            Ok(Err(e)) => return Err(format!("change feed connection failed: {e}")),
        };
        let mut changes = Changes::default();
        let mut markers: Vec<String> = Vec::new();
        let mut secrets = false;
        let mut note = |n: &sqlx::postgres::PgNotification| {
            if n.channel() != SESSION_CHANNEL {
                if n.payload().starts_with(SYNC_PREFIX) {
                    markers.push(n.payload().to_owned());
                } else {
                    changes.note(n.payload());
                }
            } else if n.payload() == "#secrets" {
                secrets = true;
            } else if n.payload() == "*" {
                store.inner.sessions.clear();
            } else {
                store.inner.sessions.forget(n.payload());
            }
        };
        note(&first);
        // Coalesce everything that is already waiting into one patch: what the connection has
        // buffered, and what is already readable on its socket (a transaction's notifications
        // are sent together at commit; taking them in one batch keeps its rows together).
        loop {
            while let Some(more) = listener.next_buffered() {
                note(&more);
            }
            match tokio::time::timeout(Duration::ZERO, listener.try_recv()).await {
                Ok(Ok(Some(more))) => note(&more),
                Ok(Ok(None)) => return Err("change feed connection lost".into()),
                Ok(Err(e)) => return Err(format!("change feed connection failed: {e}")),
                Err(_nothing_ready) => break,
            }
        }
        if secrets {
            store
                .load_session_secrets()
                .await
                .map_err(|e| format!("session secrets cannot be reloaded: {e}"))?;
        }
        if let Err(e) = store.apply_changes(&changes).await {
            return Err(format!("snapshot patch failed: {e}"));
        }
        for marker in &markers {
            store.marker_applied(marker);
        }
    }
}
