//! Jobs: work that outlives its request, run by one [`Runner`] on the process's task tracker.
//!
//! # Layout
//! - `runner.rs`: the runner (bounded concurrency, a `job{job, kind}` span per job, the job's
//!   status and last line, what a shutdown leaves); certificate orders run on it too (the
//!   binary implements [`crate::CertificateOrders`] with it);
//! - `error.rs`: [`JobError`], why a job failed;
//! - `request.rs`: what users ask for ([`CreateContainerRequest`], [`Lifecycle`]) and its rules;
//! - `create.rs`: container creation on Proxmox as a pipeline of steps, each logged to
//!   `job_statuses`; a failure at any step destroys what the job made on Proxmox and releases
//!   the address and MAC;
//! - `actions.rs`: start, stop, shutdown, restart, reconfigure; `delete.rs`: deletion;
//! - `import.rs`: registering a node's containers siteward does not know;
//! - `reconcile.rs`: at start, jobs a previous process left unfinished, checked against Proxmox.
//!
//! The Proxmox client is `crate::proxmox`, the template rule `crate::templates`.

mod actions;
mod create;
mod delete;
mod error;
mod import;
mod reconcile;
mod request;
pub mod runner;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use siteward_store::{Container, ContainerId, JobId, NodeId, Store, Uid};

pub use error::JobError;
pub use request::{environment_problem, CreateContainerRequest, CreateError, Lifecycle};
pub use runner::{Job, OnShutdown, Runner};

use crate::proxmox::{PveAuth, PveClient};

/// Container jobs on Proxmox, run by a [`Runner`].
#[derive(Clone, Debug)]
pub struct Jobs {
    store: Store,
    runner: Runner,
    /// One job at a time per container.
    locks: Arc<std::sync::Mutex<HashMap<ContainerId, Arc<tokio::sync::Mutex<()>>>>>,
    /// How long one Proxmox task may run.
    pub task_timeout: Duration,
    /// First retry delay of the Proxmox client.
    pub retry_base: Duration,
}

impl Jobs {
    /// Jobs on a runner of their own with `concurrency` jobs at a time (state built without a
    /// process; the binary uses [`Jobs::on`]).
    pub fn new(store: Store, concurrency: usize) -> Self {
        Self::on(Runner::standalone(store, concurrency))
    }

    /// Jobs on `runner`.
    pub fn on(runner: Runner) -> Self {
        Self {
            store: runner.store().clone(),
            runner,
            locks: Default::default(),
            task_timeout: Duration::from_secs(600),
            retry_base: Duration::from_secs(1),
        }
    }

    /// The runner the jobs run on.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A client for a node, from its stored (decrypted) credentials.
    pub async fn client(&self, node: NodeId) -> Result<PveClient, JobError> {
        let (url, user, secret, verify) = self
            .store
            .node_credentials(node)
            .await
            .map_err(|e| JobError::store("node credentials", e))?;
        let auth = if user.contains('!') {
            PveAuth::Token { id: user, secret }
        } else {
            PveAuth::Password {
                username: user,
                password: secret,
            }
        };
        let mut client = PveClient::new(&url, auth, verify)
            .map_err(|e| JobError::proxmox("the node's API address", e))?;
        client.retry_base = self.retry_base;
        Ok(client)
    }

    /// The container's live state from Proxmox; `None` when it cannot be had within 5 s.
    pub async fn live_status(&self, c: &Container) -> Option<crate::proxmox::LxcStatus> {
        let vmid = u32::try_from(c.container_id?).ok()?;
        let node = self.store.node(c.node_id).await.ok()?;
        let pve = self.client(c.node_id).await.ok()?;
        tokio::time::timeout(Duration::from_secs(5), pve.status(&node.name, vmid))
            .await
            .ok()?
            .ok()
    }

    fn lock_for(&self, id: ContainerId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id).or_default().clone()
    }

    /// The owner's SSH keys and `extra`.
    fn owner_keys(&self, uid: Uid, extra: &[String]) -> Vec<String> {
        let snap = self.store.snapshot();
        let mut keys: Vec<String> = snap
            .identity
            .users
            .get(&uid)
            .map(|u| u.ssh_public_keys.clone())
            .unwrap_or_default();
        keys.extend(extra.iter().cloned());
        keys
    }

    /// Appends a progress line to the job (a failure to record it is logged).
    async fn log(&self, job: JobId, line: &str) {
        self.runner.line(job, line).await;
    }
}
