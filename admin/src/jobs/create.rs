//! Container creation: the template checked on Proxmox, node, address and MAC reserved, then a
//! job that creates (or clones), configures and starts the container on Proxmox. A failure at
//! any step destroys what the job made there and releases the reservation.

use std::time::Duration;

use siteward_store::jobs::Reservation;
use siteward_store::{
    Container, ContainerStatus, JobId, JobState, Node, NodeId, Site, SiteId, Uid,
};

use super::request::env_option;
use super::{CreateContainerRequest, CreateError, Job, JobError, Jobs, OnShutdown};
use crate::proxmox::PveClient;
use crate::templates::TemplateRef;

/// VMIDs a creation tries before it gives up.
const VMID_ATTEMPTS: u32 = 5;

impl Jobs {
    /// Checks the template on Proxmox, reserves node (one that has the template), address and
    /// MAC, then runs the creation in the background. Returns the container (status `creating`)
    /// and its job.
    pub async fn create_container(
        &self,
        owner: (Uid, String),
        req: CreateContainerRequest,
        by: &siteward_store::Actor,
    ) -> Result<(Container, JobId), CreateError> {
        let among = self
            .template_nodes(
                SiteId(req.site_id),
                req.node_id.map(NodeId),
                req.nvidia,
                &req.template,
            )
            .await?;
        let job = self
            .store
            .create_job(
                "create container",
                &format!("container:{}", req.hostname),
                Some(owner.0),
            )
            .await?;
        let reserved = self
            .store
            .reserve_container(
                Reservation {
                    site_id: SiteId(req.site_id),
                    hostname: req.hostname.clone(),
                    username: owner.1.clone(),
                    template: req.template.clone(),
                    node_id: req.node_id.map(NodeId),
                    among: Some(among),
                    nvidia: req.nvidia,
                    job_id: job,
                },
                by,
            )
            .await;
        let (container, node, site) = match reserved {
            Ok(v) => v,
            Err(e) => {
                self.log(job, &format!("failed: {e}")).await;
                if let Err(e) = self.store.set_job_status(job, JobState::Failure).await {
                    tracing::error!(error = %e, job = job.0, "recording a refused reservation failed");
                }
                return Err(e.into());
            }
        };
        self.log(
            job,
            &format!(
                "reserved node {}, address {}, MAC {}",
                node.name,
                container
                    .ipv4_address
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                container.mac_address.clone().unwrap_or_default()
            ),
        )
        .await;
        let this = self.clone();
        let c = container.clone();
        let work = async move {
            tracing::info!(container = c.id.0, node = %node.name, "creating a container");
            let keys = this.owner_keys(owner.0, &req.ssh_keys);
            match this.run_creation(job, &c, &node, &site, &req, keys).await {
                Ok(()) => {
                    this.store
                        .set_container_status(c.id, ContainerStatus::Running)
                        .await
                        .map_err(|e| JobError::store("recording the container as running", e))?;
                    this.log(job, "container is running").await;
                    Ok(())
                }
                Err(e) => {
                    if let Err(release) = this.store.release_container(c.id).await {
                        // The reservation stays `creating`: the next start's reconciliation
                        // releases it.
                        tracing::error!(error = %release, container = c.id.0, "releasing the reservation failed");
                        this.log(job, &format!("releasing the reservation failed: {release}"))
                            .await;
                    }
                    Err(e)
                }
            }
        };
        // Interrupted by a shutdown: the VMID was written ahead, so the next start's
        // reconciliation knows what to finish or remove on Proxmox.
        let spec = Job {
            on_shutdown: OnShutdown::Reconcile,
            ..Job::new(job, "create_container")
        };
        self.runner.spawn(spec, work);
        Ok((container, job))
    }

    async fn run_creation(
        &self,
        job: JobId,
        c: &Container,
        node: &Node,
        site: &Site,
        req: &CreateContainerRequest,
        keys: Vec<String>,
    ) -> Result<(), JobError> {
        let pve = self.client(node.id).await?;
        let addr = c.ipv4_address.ok_or(JobError::NoAddress)?;
        let prefix = site.subnet().map(|n| n.prefix()).unwrap_or(24);
        let gw = site.gateway.map(|g| format!(",gw={g}")).unwrap_or_default();
        let mac = c
            .mac_address
            .clone()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let net0 = format!(
            "name=eth0,bridge={},hwaddr={mac},ip={addr}/{prefix}{gw}",
            node.network_bridge
        );
        let owner = c.username.clone().unwrap_or_default();
        let mut common: Vec<(&str, String)> = vec![
            ("hostname", c.hostname.clone()),
            ("net0", net0),
            ("searchdomain", site.internal_domain.clone()),
            ("cores", req.cores.unwrap_or(1).to_string()),
            ("memory", req.memory.unwrap_or(512).to_string()),
            ("tags", format!("siteward;owner-{owner}")),
        ];
        if let Some(ns) = site.gateway {
            common.push(("nameserver", ns.to_string()));
        }
        if req.nvidia {
            common.push((
                "hookscript",
                "local:snippets/nvidia-container-hook.sh".into(),
            ));
        }
        if let Some(env) = env_option(&req.environment) {
            common.push(("env", env));
        }
        // The template again, on the reserved node, right before it is used: Proxmox may have
        // changed since the API checked (a template removed, a VMID reused).
        let clone_from = match self
            .check_template(&pve, node, &req.template)
            .await
            .map_err(JobError::Template)?
        {
            TemplateRef::Vmid(vmid) => Some(vmid),
            TemplateRef::Volume { .. } => None,
        };
        // 1. VMID and create (or clone), retrying when the id was taken meanwhile.
        let mut created: Option<u32> = None;
        // Ids below this were tried or are claimed by other jobs.
        let mut floor = 0u32;
        for attempt in 1..=VMID_ATTEMPTS {
            let mut vmid = pve
                .next_id()
                .await
                .map_err(|e| JobError::proxmox("allocating a VMID", e))?
                .max(floor);
            // Write-ahead: the VMID is recorded before Proxmox is asked, so a crash between the
            // request and its answer leaves a trace that `reconcile` follows. A parallel job on
            // this node that got the same id from nextid holds it already: take the next.
            let first = vmid;
            loop {
                match self.store.set_container_vmid(c.id, Some(vmid as i32)).await {
                    Ok(()) => break,
                    Err(siteward_store::StoreError::Conflict { .. }) if vmid < first + 1000 => {
                        vmid += 1;
                    }
                    Err(e) => return Err(JobError::store(format!("recording VMID {vmid}"), e)),
                }
            }
            floor = vmid + 1;
            self.log(
                job,
                &format!("creating CT {vmid} on {} (attempt {attempt})", node.name),
            )
            .await;
            let result = match clone_from {
                Some(template) => {
                    let params = vec![
                        ("newid", vmid.to_string()),
                        ("hostname", c.hostname.clone()),
                        ("full", "1".into()),
                        ("storage", node.volume_storage.clone()),
                    ];
                    pve.clone_lxc(&node.name, template, &params).await
                }
                None => {
                    let mut params = common.clone();
                    params.push(("vmid", vmid.to_string()));
                    params.push(("ostemplate", req.template.clone()));
                    params.push((
                        "rootfs",
                        format!("{}:{}", node.volume_storage, req.disk.unwrap_or(8)),
                    ));
                    params.push(("unprivileged", "1".into()));
                    params.push(("features", "nesting=1".into()));
                    if !keys.is_empty() {
                        params.push(("ssh-public-keys", keys.join("\n")));
                    }
                    pve.create_lxc(&node.name, &params).await
                }
            };
            match result {
                Ok(upid) => {
                    // From here on, the container exists (or is being made) on Proxmox.
                    created = Some(vmid);
                    if let Err(e) = pve.wait_task(&upid, self.task_timeout).await {
                        let failure =
                            JobError::task(format!("creating CT {vmid}"), e, self.task_timeout);
                        return self.undo(job, &pve, &node.name, created, failure).await;
                    }
                    break;
                }
                Err(e) if e.vmid_taken() && attempt < VMID_ATTEMPTS => {
                    self.forget_vmid(job, c).await?;
                    self.log(
                        job,
                        &format!("VMID {vmid} was taken meanwhile; trying the next"),
                    )
                    .await;
                }
                Err(e) => {
                    self.forget_vmid(job, c).await?;
                    return Err(JobError::proxmox("creating the container", e));
                }
            }
        }
        let Some(vmid) = created else {
            return Err(JobError::VmidsExhausted(VMID_ATTEMPTS));
        };
        if clone_from.is_some() {
            self.log(job, "configuring the clone").await;
            if let Err(e) = pve.set_config(&node.name, vmid, &common).await {
                let failure = JobError::proxmox(format!("configuring CT {vmid}"), e);
                return self.undo(job, &pve, &node.name, created, failure).await;
            }
        }
        // 2. Start and wait until it runs.
        self.log(job, &format!("starting CT {vmid}")).await;
        let started = match pve.action(&node.name, vmid, "start").await {
            Ok(upid) => pve
                .wait_task(&upid, self.task_timeout)
                .await
                .map_err(|e| JobError::task(format!("starting CT {vmid}"), e, self.task_timeout)),
            Err(e) => Err(JobError::proxmox(format!("starting CT {vmid}"), e)),
        };
        if let Err(failure) = started {
            return self.undo(job, &pve, &node.name, created, failure).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let failure = match pve.status(&node.name, vmid).await {
                Ok(s) if s.status == "running" => break,
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Ok(s) => JobError::NotRunning {
                    vmid,
                    status: s.status,
                },
                Err(e) => JobError::proxmox(format!("reading CT {vmid}'s status"), e),
            };
            return self.undo(job, &pve, &node.name, created, failure).await;
        }
        Ok(())
    }

    /// Clears a VMID written ahead that Proxmox did not take.
    async fn forget_vmid(&self, job: JobId, c: &Container) -> Result<(), JobError> {
        self.store
            .set_container_vmid(c.id, None)
            .await
            .map_err(|e| JobError::store("forgetting a VMID Proxmox did not take", e))
            .inspect_err(|e| tracing::error!(error = %e, job = job.0, "VMID not cleared"))
    }

    /// Destroys what the job made, then reports the original failure.
    async fn undo(
        &self,
        job: JobId,
        pve: &PveClient,
        node: &str,
        vmid: Option<u32>,
        failure: JobError,
    ) -> Result<(), JobError> {
        self.log(job, &format!("failed: {failure}; cleaning up"))
            .await;
        if let Some(vmid) = vmid {
            self.destroy(job, pve, node, vmid).await;
        }
        Err(failure)
    }

    /// Stops (when running) and destroys a CT the job made, saying in the job's lines what
    /// could not be done.
    async fn destroy(&self, job: JobId, pve: &PveClient, node: &str, vmid: u32) {
        if let Ok(s) = pve.status(node, vmid).await {
            if s.status == "running" {
                let stopped = match pve.action(node, vmid, "stop").await {
                    Ok(upid) => pve.wait_task(&upid, self.task_timeout).await.map(drop),
                    Err(e) => Err(e),
                };
                if let Err(e) = stopped {
                    self.log(job, &format!("stopping CT {vmid} failed: {e}"))
                        .await;
                }
            }
        }
        let destroyed = match pve.destroy(node, vmid).await {
            Ok(upid) => pve.wait_task(&upid, self.task_timeout).await.map(drop),
            Err(e) => Err(e),
        };
        match destroyed {
            Ok(()) => self.log(job, &format!("CT {vmid} destroyed")).await,
            Err(e) => {
                self.log(
                    job,
                    &format!("destroying CT {vmid} failed: {e}; remove it by hand"),
                )
                .await
            }
        }
    }
}
