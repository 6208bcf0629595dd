//! Databases for the tests of the crates above the store, which run no SQL of their own (feature
//! `testing`, for dev-dependencies only). [`fresh_store`] creates a database of its own on the
//! server `DATABASE_URL` names (default: the local one on 127.0.0.1:5432), migrates it and returns
//! a [`Store`] over it. Each name carries the test process's id; databases of processes that are
//! gone are dropped the first time a later process asks for one, so runs do not pile them up.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::OnceCell;

use crate::error::Result;
use crate::{HashCost, SecretBox, Store};

const PREFIX: &str = "siteward_t_";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

static NEXT: AtomicU64 = AtomicU64::new(0);
static SWEPT: OnceCell<()> = OnceCell::const_new();

/// A migrated store over a new, empty database.
pub async fn fresh_store(secrets: SecretBox, cost: HashCost) -> Result<Store> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let server = PgConnectOptions::from_str(&url)?;
    let mut admin = server.connect().await?;
    SWEPT
        .get_or_try_init(|| async {
            sweep(&mut admin).await?;
            Ok::<(), crate::StoreError>(())
        })
        .await?;
    let name = format!(
        "{PREFIX}{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(server.database(&name))
        .await?;
    let store = Store::from_pool(pool, secrets, cost);
    store.migrate().await?;
    Ok(store)
}

/// Drops the test databases of processes that no longer run.
async fn sweep(admin: &mut sqlx::PgConnection) -> Result<()> {
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'siteward\\_t\\_%'")
            .fetch_all(&mut *admin)
            .await?;
    for (name,) in names {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('_').next())
            .and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *admin)
                .await?;
        }
    }
    Ok(())
}

/// A store whose snapshot is `identity` and `naming`, over a pool that never connects: for
/// tests and fuzz targets of the protocol crates that read only the snapshot. Anything that
/// queries the database fails (the pool points at a closed port and gives up at once).
pub fn store_with_snapshot(
    identity: crate::Identity,
    naming: crate::Naming,
    secrets: SecretBox,
    cost: HashCost,
) -> Store {
    let nowhere = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(1)
        .username("nobody")
        .database("nowhere");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_millis(50))
        .connect_lazy_with(nowhere);
    let store = Store::from_pool(pool, secrets, cost);
    store
        .inner
        .snapshot
        .store(std::sync::Arc::new(crate::Snapshot {
            identity: std::sync::Arc::new(identity),
            naming: std::sync::Arc::new(naming),
            generation: 1,
            loaded_at: std::time::Instant::now(),
        }));
    store
}
