//! Opening the database: the configured URL, or the embedded PostgreSQL in the data directory,
//! behind a lock on the data directory so two servers never share one.

use std::fs::File;
use std::str::FromStr;

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};
use siteward_store::embedded::EmbeddedPostgres;
use siteward_store::{HashCost, SecretBox, Store, StoreOptions};
use sqlx::postgres::PgConnectOptions;

use crate::config::Config;

/// Who opens the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `siteward serve`: owns the data directory and the embedded database for its lifetime.
    Server,
    /// A one-shot command: uses a running server's embedded database, or starts it for the
    /// command's duration.
    Client,
}

/// An open database, and what has to be stopped with it.
pub struct Database {
    /// The store.
    pub store: Store,
    /// The embedded cluster, when this process started or adopted it and must stop it.
    pub embedded: Option<EmbeddedPostgres>,
    _lock: Option<Flock<File>>,
}

impl Database {
    /// Closes the pool and stops the embedded database this process owns.
    pub async fn close(self) {
        self.store.close().await;
        if let Some(pg) = &self.embedded {
            if let Err(e) = pg.stop() {
                tracing::error!(error = %e, "stopping the embedded PostgreSQL failed");
            }
        }
    }
}

fn lock(config: &Config) -> anyhow::Result<Option<Flock<File>>> {
    let path = config.data_dir.join("siteward.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}

/// Opens the store for `role`.
pub async fn open(config: &Config, role: Role) -> anyhow::Result<Database> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (set data_dir or --data-dir)",
            config.data_dir.display()
        )
    })?;
    let lock = lock(config)?;
    if lock.is_none() && role == Role::Server {
        bail!(
            "another siteward is running with the data directory {}; stop it or choose another \
             --data-dir",
            config.data_dir.display()
        );
    }
    let secrets = match &config.secret_key {
        Some(key) => SecretBox::from_base64(key).context("invalid setting `secret_key`")?,
        None => SecretBox::load_or_create(&config.data_dir.join("secret.key"))?,
    };
    let (connect, embedded) = match &config.database_url {
        Some(url) => (
            PgConnectOptions::from_str(url).context("invalid setting `database_url`")?,
            None,
        ),
        None => {
            let pg = EmbeddedPostgres::start(&config.data_dir).await?;
            let options = pg.connect_options();
            // A client that found a server running leaves the cluster to that server.
            let owned = lock.is_some();
            (options, owned.then_some(pg))
        }
    };
    let store = Store::connect_lazy(StoreOptions {
        connect,
        max_connections: config.database.max_connections,
        secrets,
        hash_cost: HashCost::default(),
    });
    Ok(Database {
        store,
        embedded,
        _lock: lock,
    })
}
