//! Deleting a container: stopped and destroyed on Proxmox, then its record, address and DNS
//! records removed.

use siteward_store::{Container, ContainerStatus, JobId, Node};

use super::{JobError, Jobs};
use crate::proxmox::PveClient;

impl Jobs {
    /// Deletes CT `vmid` (the container `c`) on its node, then the record.
    pub(super) async fn delete(
        &self,
        job: JobId,
        c: &Container,
        pve: &PveClient,
        node: &Node,
        vmid: u32,
    ) -> Result<(), JobError> {
        self.store
            .set_container_status(c.id, ContainerStatus::Deleting)
            .await
            .map_err(|e| JobError::store("marking the container deleting", e))?;
        if let Err(e) = self.remove_from_proxmox(job, pve, node, vmid).await {
            // Still there (or unknown): the record stays, with the status it had, so the
            // delete can be asked for again.
            if let Err(restore) = self.store.set_container_status(c.id, c.status).await {
                tracing::error!(error = %restore, container = c.id.0, "restoring the status after a failed delete failed");
            }
            return Err(e);
        }
        self.purge(c).await?;
        self.log(job, "record, address and DNS records removed")
            .await;
        Ok(())
    }

    /// Stops (when running) and destroys CT `vmid`; one the node does not have is gone already.
    async fn remove_from_proxmox(
        &self,
        job: JobId,
        pve: &PveClient,
        node: &Node,
        vmid: u32,
    ) -> Result<(), JobError> {
        let s = match pve.status(&node.name, vmid).await {
            Ok(s) => s,
            Err(e) if e.ct_missing() => {
                self.log(job, &format!("CT {vmid} is not on {} any more", node.name))
                    .await;
                return Ok(());
            }
            Err(e) => return Err(JobError::proxmox(format!("reading CT {vmid}'s status"), e)),
        };
        if s.status == "running" {
            let doing = format!("stopping CT {vmid}");
            self.log(job, &doing).await;
            self.run_task(pve, &doing, || pve.action(&node.name, vmid, "stop"))
                .await?;
        }
        let doing = format!("destroying CT {vmid}");
        self.log(job, &doing).await;
        self.run_task(pve, &doing, || pve.destroy(&node.name, vmid))
            .await
    }

    /// Removes the container's record (its address and DNS records go with it).
    pub(super) async fn purge(&self, c: &Container) -> Result<(), JobError> {
        self.store
            .purge_container(c.id)
            .await
            .map_err(|e| JobError::store("removing the container's record", e))
    }
}
