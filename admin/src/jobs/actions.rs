//! Lifecycle operations on an existing container as jobs, one at a time per container: start,
//! stop, shutdown, restart, reconfigure, and deletion (`delete.rs`).

use siteward_store::{Container, ContainerStatus, JobId, Node, Uid};

use super::{Job, JobError, Jobs, Lifecycle};
use crate::proxmox::PveClient;

impl Jobs {
    /// Runs `action` on a container as a job (`None`: deletes it).
    pub async fn lifecycle(
        &self,
        owner: Uid,
        c: Container,
        action: Option<Lifecycle>,
        by: &siteward_store::Actor,
    ) -> Result<JobId, siteward_store::StoreError> {
        let (name, kind) = match &action {
            Some(Lifecycle::Start) => ("start container", "start_container"),
            Some(Lifecycle::Stop) => ("stop container", "stop_container"),
            Some(Lifecycle::Shutdown) => ("shut down container", "shutdown_container"),
            Some(Lifecycle::Restart) => ("restart container", "restart_container"),
            Some(Lifecycle::Reconfigure { .. }) => {
                ("reconfigure container", "reconfigure_container")
            }
            None => ("delete container", "delete_container"),
        };
        // The request's audit row commits with its job: `action` (with what it asks) or `delete`.
        let (verb, details) = match &action {
            Some(a) => ("action", siteward_store::audit::fields(a)),
            None => ("delete", serde_json::json!({})),
        };
        let job = self
            .store
            .request_job(
                name,
                &format!("container:{}", c.id),
                Some(owner),
                by,
                verb,
                "container",
                c.id,
                details,
            )
            .await?;
        let spec = Job {
            exclusive: Some(self.lock_for(c.id)),
            ..Job::new(job, kind)
        };
        let this = self.clone();
        self.runner.spawn(spec, async move {
            tracing::info!(container = c.id.0, "container job started");
            this.run_lifecycle(job, &c, action.as_ref()).await?;
            this.log(job, "done").await;
            Ok(())
        });
        Ok(job)
    }

    async fn run_lifecycle(
        &self,
        job: JobId,
        c: &Container,
        action: Option<&Lifecycle>,
    ) -> Result<(), JobError> {
        let node = self
            .store
            .node(c.node_id)
            .await
            .map_err(|e| JobError::store("reading the container's node", e))?;
        let Some(vmid) = c.container_id.and_then(|v| u32::try_from(v).ok()) else {
            if action.is_none() {
                // Never made it to Proxmox: only the record goes.
                return self.purge(c).await;
            }
            return Err(JobError::NoVmid);
        };
        let pve = self.client(node.id).await?;
        match action {
            Some(power) => {
                // (Proxmox verb, what the log says, the status it leaves)
                let step = match power {
                    Lifecycle::Start => ("start", "starting", ContainerStatus::Running),
                    Lifecycle::Stop => ("stop", "stopping", ContainerStatus::Stopped),
                    Lifecycle::Shutdown => ("shutdown", "shutting down", ContainerStatus::Stopped),
                    Lifecycle::Restart => ("reboot", "restarting", ContainerStatus::Running),
                    Lifecycle::Reconfigure { cores, memory } => {
                        return self
                            .reconfigure(job, &pve, &node, vmid, *cores, *memory)
                            .await
                    }
                };
                self.power(job, c, &pve, &node, vmid, step).await?;
            }
            None => self.delete(job, c, &pve, &node, vmid).await?,
        }
        Ok(())
    }

    /// Cores and memory.
    async fn reconfigure(
        &self,
        job: JobId,
        pve: &PveClient,
        node: &Node,
        vmid: u32,
        cores: Option<u32>,
        memory: Option<u32>,
    ) -> Result<(), JobError> {
        let mut params = Vec::new();
        if let Some(v) = cores {
            params.push(("cores", v.to_string()));
        }
        if let Some(v) = memory {
            params.push(("memory", v.to_string()));
        }
        self.log(job, &format!("reconfiguring CT {vmid}")).await;
        pve.set_config(&node.name, vmid, &params)
            .await
            .map_err(|e| JobError::proxmox(format!("reconfiguring CT {vmid}"), e))
    }

    /// Start, stop, shutdown or restart, and the status it leaves.
    async fn power(
        &self,
        job: JobId,
        c: &Container,
        pve: &PveClient,
        node: &Node,
        vmid: u32,
        (verb, doing, status): (&str, &str, ContainerStatus),
    ) -> Result<(), JobError> {
        self.log(job, &format!("{doing} CT {vmid}")).await;
        self.run_task(pve, &format!("{doing} CT {vmid}"), || {
            pve.action(&node.name, vmid, verb)
        })
        .await?;
        self.store
            .set_container_status(c.id, status)
            .await
            .map_err(|e| JobError::store("recording the new status", e))
    }

    /// Starts a Proxmox task with `start` and waits for it.
    pub(super) async fn run_task<F, Fut>(
        &self,
        pve: &PveClient,
        during: &str,
        start: F,
    ) -> Result<(), JobError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<String, crate::proxmox::PveError>>,
    {
        let upid = start().await.map_err(|e| JobError::proxmox(during, e))?;
        pve.wait_task(&upid, self.task_timeout)
            .await
            .map_err(|e| JobError::task(during, e, self.task_timeout))?;
        Ok(())
    }
}
