//! At start: jobs a previous process left pending or running. A creation's container is checked
//! against Proxmox (its VMID was written ahead): one that runs there is kept, one that was made
//! but not started is started, anything else is removed and its address released. Other jobs
//! are marked failed. Never runs a job twice.

use std::time::Duration;

use siteward_store::resources::Job as JobRow;
use siteward_store::{Container, ContainerStatus, JobState};
use tracing::Instrument;

use super::{JobError, Jobs};

impl Jobs {
    /// Finishes or fails every job a previous process left unfinished.
    pub async fn reconcile(&self) {
        let jobs = match self.store.unfinished_jobs().await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "listing unfinished jobs failed; none reconciled");
                return;
            }
        };
        for job in jobs {
            let span = tracing::info_span!("reconcile", job = %job.id.0);
            self.reconcile_job(&job).instrument(span).await;
        }
    }

    async fn reconcile_job(&self, job: &JobRow) {
        let mine = match self.store.containers_being_created_by(job.id).await {
            Ok(list) => list,
            Err(e) => {
                tracing::error!(error = %e, "reading the job's containers failed");
                Vec::new()
            }
        };
        for c in mine {
            let kept = match self.reconcile_container(&c).await {
                Ok(kept) => kept,
                Err(e) => {
                    tracing::warn!(error = %e, container = c.id.0, "the container could not be checked on Proxmox; released");
                    false
                }
            };
            let (status, line) = if kept {
                (
                    JobState::Success,
                    "reconciled after a restart: the container runs on Proxmox",
                )
            } else {
                (
                    JobState::Failure,
                    "failed: interrupted by a restart; what was made on Proxmox was removed",
                )
            };
            let done = async {
                if kept {
                    self.store
                        .set_container_status(c.id, ContainerStatus::Running)
                        .await?;
                } else {
                    self.store.release_container(c.id).await?;
                }
                self.store.job_log(job.id, line).await?;
                self.store.set_job_status(job.id, status).await
            };
            if let Err(e) = done.await {
                tracing::error!(error = %e, container = c.id.0, "recording a reconciliation failed");
            }
        }
        match self.store.job(job.id, None).await {
            Ok((j, _)) if j.status.is_active() => {
                let done = async {
                    self.store
                        .job_log(job.id, "failed: interrupted by a restart")
                        .await?;
                    self.store.set_job_status(job.id, JobState::Failure).await
                };
                if let Err(e) = done.await {
                    tracing::error!(error = %e, "failing an interrupted job failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "reading the reconciled job failed"),
        }
    }

    /// Whether the container runs on Proxmox now (started if it was made but not started);
    /// when not, nothing of it is left there.
    async fn reconcile_container(&self, c: &Container) -> Result<bool, JobError> {
        let Some(vmid) = c.container_id.and_then(|v| u32::try_from(v).ok()) else {
            return Ok(false);
        };
        let node = self
            .store
            .node(c.node_id)
            .await
            .map_err(|e| JobError::store("reading the container's node", e))?;
        let pve = self.client(c.node_id).await?;
        // A create or clone task that outlived us holds the container's lock: wait for it.
        let deadline = tokio::time::Instant::now() + self.task_timeout;
        let mut status = pve.status(&node.name, vmid).await;
        while matches!(&status, Ok(s) if s.lock.is_some()) && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
            status = pve.status(&node.name, vmid).await;
        }
        match status {
            // The VMID was recorded before Proxmox was asked; when Proxmox gave it to someone
            // else meanwhile, that container is not ours to touch.
            Ok(s) if s.name.as_deref().is_some_and(|n| n != c.hostname) => {
                tracing::warn!(vmid, name = ?s.name, "the recorded VMID holds another container; left alone");
                Ok(false)
            }
            Ok(s) if s.lock.is_some() => {
                tracing::warn!(vmid, lock = ?s.lock, "still locked on Proxmox; left alone");
                Ok(false)
            }
            Ok(s) if s.status == "running" => Ok(true),
            Ok(_) => {
                // Created but not started: finish the job's last step.
                let doing = format!("starting CT {vmid}");
                match self
                    .run_task(&pve, &doing, || pve.action(&node.name, vmid, "start"))
                    .await
                {
                    Ok(()) => return Ok(true),
                    Err(e) => {
                        tracing::warn!(error = %e, "the interrupted creation could not be finished; removing it")
                    }
                }
                let doing = format!("destroying CT {vmid}");
                if let Err(e) = self
                    .run_task(&pve, &doing, || pve.destroy(&node.name, vmid))
                    .await
                {
                    tracing::error!(error = %e, vmid, node = %node.name, "destroying an interrupted creation failed; remove it by hand");
                }
                Ok(false)
            }
            // Never made (or already gone): nothing to remove.
            Err(e) => {
                tracing::info!(error = %e, vmid, "not on Proxmox: nothing to remove");
                Ok(false)
            }
        }
    }
}
