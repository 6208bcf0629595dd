//! Jobs: container creation on Proxmox as a pipeline of steps, each logged to `job_statuses`,
//! run with bounded concurrency. A failure at any step destroys what the job made on Proxmox
//! and releases the address and MAC.

use std::sync::Arc;
use std::time::Duration;

use siteward_store::jobs::Reservation;
use siteward_store::{
    Container, ContainerStatus, JobId, JobState, Node, NodeId, Site, SiteId, Store, Uid,
};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::api::error::ApiError;
use crate::proxmox::{PveAuth, PveClient, PveError};
use crate::templates::{TemplateError, TemplateRef};

/// What a user asks for.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContainerRequest {
    /// Site.
    pub site_id: i64,
    /// Host name (DNS label).
    pub hostname: String,
    /// A CT template volume on the node's image storage
    /// (`local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`) or the VMID of a template
    /// container (`template: 1`) to clone; see `GET /api/v1/templates`. Anything else is 422.
    pub template: String,
    /// A node of the site; default: the one with the fewest containers.
    pub node_id: Option<i64>,
    /// CPU cores (1-128, default 1).
    pub cores: Option<u32>,
    /// Memory in MiB (64-1048576, default 512).
    pub memory: Option<u32>,
    /// Root disk in GiB (1-65536, default 8).
    pub disk: Option<u32>,
    /// Extra SSH public keys (the owner's are always added).
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Environment variables of the container's init process: names of letters, digits and `_`,
    /// values without control characters other than tab. Set as Proxmox's `env` option, which
    /// needs Proxmox VE 9.1 (pve-container 6.0.15) or later; an older node fails the job.
    #[serde(default)]
    pub environment: std::collections::BTreeMap<String, String>,
    /// GPU passthrough (only NVIDIA-capable nodes).
    #[serde(default)]
    pub nvidia: bool,
}

/// A lifecycle operation on an existing container.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum Lifecycle {
    /// Start it.
    Start,
    /// Stop it at once.
    Stop,
    /// Shut it down cleanly.
    Shutdown,
    /// Reboot it.
    Restart,
    /// Change cores and memory.
    Reconfigure {
        /// CPU cores.
        cores: Option<u32>,
        /// Memory in MiB.
        memory: Option<u32>,
    },
}

/// The job runner.
#[derive(Clone, Debug)]
pub struct Jobs {
    store: Store,
    permits: Arc<Semaphore>,
    /// One job at a time per container.
    locks: Arc<
        std::sync::Mutex<
            std::collections::HashMap<siteward_store::ContainerId, Arc<tokio::sync::Mutex<()>>>,
        >,
    >,
    /// How long one Proxmox task may run.
    pub task_timeout: Duration,
    /// First retry delay of the Proxmox client.
    pub retry_base: Duration,
}

/// A failure, in the operator's terms.
type StepError = String;

/// Why a creation was refused before its job started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The reservation (site, node, address) failed.
    #[error(transparent)]
    Store(#[from] siteward_store::StoreError),
    /// The template is not one an administrator made.
    #[error(transparent)]
    Template(#[from] TemplateError),
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Store(e) => e.into(),
            CreateError::Template(e) => e.into(),
        }
    }
}

/// Most variables a creation may set, and their sizes.
const ENV_MAX_VARS: usize = 64;
const ENV_MAX_NAME: usize = 128;
const ENV_MAX_VALUE: usize = 4096;

/// What is wrong with requested environment variables, if anything: the rule of Proxmox's `env`
/// option (`\w+=` and no control characters but tab), and size limits of ours.
pub fn environment_problem(env: &std::collections::BTreeMap<String, String>) -> Option<String> {
    if env.len() > ENV_MAX_VARS {
        return Some(format!("at most {ENV_MAX_VARS} environment variables"));
    }
    for (k, v) in env {
        if k.is_empty()
            || k.len() > ENV_MAX_NAME
            || !k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            return Some(format!(
                "environment names must be 1 to {ENV_MAX_NAME} letters, digits and _"
            ));
        }
        if v.len() > ENV_MAX_VALUE || v.chars().any(|c| c.is_control() && c != '\t') {
            return Some(format!(
                "the value of {k} must be at most {ENV_MAX_VALUE} bytes without control characters (tab allowed)"
            ));
        }
    }
    None
}

/// Proxmox's `env` value: `NAME=value` pairs separated by NUL.
fn env_option(env: &std::collections::BTreeMap<String, String>) -> Option<String> {
    if env.is_empty() {
        return None;
    }
    Some(
        env.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\0"),
    )
}

impl Jobs {
    /// A runner with `concurrency` jobs at a time.
    pub fn new(store: Store, concurrency: usize) -> Self {
        Self {
            store,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            locks: Default::default(),
            task_timeout: Duration::from_secs(600),
            retry_base: Duration::from_secs(1),
        }
    }

    /// A client for a node, from its stored (decrypted) credentials.
    pub async fn client(&self, node: NodeId) -> Result<PveClient, StepError> {
        let (url, user, secret, verify) = self
            .store
            .node_credentials(node)
            .await
            .map_err(|e| format!("node credentials: {e}"))?;
        let auth = if user.contains('!') {
            PveAuth::Token { id: user, secret }
        } else {
            PveAuth::Password {
                username: user,
                password: secret,
            }
        };
        let mut client = PveClient::new(&url, auth, verify).map_err(|e| e.to_string())?;
        client.retry_base = self.retry_base;
        Ok(client)
    }

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
                let _ = self.store.job_log(job, &format!("failed: {e}")).await;
                let _ = self.store.set_job_status(job, JobState::Failure).await;
                return Err(e.into());
            }
        };
        let _ = self
            .store
            .job_log(
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
        let span = tracing::info_span!(
            "job",
            job = job.0,
            kind = "create_container",
            container = c.id.0
        );
        tokio::spawn(
            async move {
                let _permit = this.permits.clone().acquire_owned().await;
                let _ = this.store.set_job_status(job, JobState::Running).await;
                let keys = this.owner_keys(owner.0, &req.ssh_keys);
                match this.run_creation(job, &c, &node, &site, &req, keys).await {
                    Ok(()) => {
                        let _ = this
                            .store
                            .set_container_status(c.id, ContainerStatus::Running)
                            .await;
                        let _ = this.store.job_log(job, "container is running").await;
                        let _ = this.store.set_job_status(job, JobState::Success).await;
                        tracing::info!("container created");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "container creation failed");
                        let _ = this.store.release_container(c.id).await;
                        let _ = this.store.job_log(job, &format!("failed: {e}")).await;
                        let _ = this.store.set_job_status(job, JobState::Failure).await;
                    }
                }
            }
            .instrument(span),
        );
        Ok((container, job))
    }

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

    async fn log(&self, job: JobId, line: &str) {
        if let Err(e) = self.store.job_log(job, line).await {
            tracing::warn!(error = %e, "job log write failed");
        }
    }

    async fn run_creation(
        &self,
        job: JobId,
        c: &Container,
        node: &Node,
        site: &Site,
        req: &CreateContainerRequest,
        keys: Vec<String>,
    ) -> Result<(), StepError> {
        let pve = self.client(node.id).await?;
        let addr = c.ipv4_address.ok_or("no address reserved")?;
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
        let clone_from = match self.check_template(&pve, node, &req.template).await {
            Ok(TemplateRef::Vmid(vmid)) => Some(vmid),
            Ok(TemplateRef::Volume { .. }) => None,
            Err(e @ TemplateError::Proxmox { .. }) => return Err(e.to_string()),
            Err(e) => return Err(format!("template refused: {e}")),
        };
        // 1. VMID and create (or clone), retrying when the id was taken meanwhile.
        let mut created: Option<u32> = None;
        // Ids below this were tried or are claimed by other jobs.
        let mut floor = 0u32;
        for attempt in 1..=5 {
            let mut vmid = pve
                .next_id()
                .await
                .map_err(|e| format!("allocating a VMID: {e}"))?
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
                    Err(e) => return Err(format!("recording VMID {vmid}: {e}")),
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
                        return self
                            .undo(
                                job,
                                &pve,
                                &node.name,
                                created,
                                format!("creating CT {vmid}: {}", task_message(&e)),
                            )
                            .await;
                    }
                    break;
                }
                Err(e) if e.vmid_taken() && attempt < 5 => {
                    let _ = self.store.set_container_vmid(c.id, None).await;
                    self.log(
                        job,
                        &format!("VMID {vmid} was taken meanwhile; trying the next"),
                    )
                    .await;
                }
                Err(e) => {
                    let _ = self.store.set_container_vmid(c.id, None).await;
                    return Err(format!("creating the container: {e}"));
                }
            }
        }
        let Some(vmid) = created else {
            return Err("no free VMID after 5 attempts".into());
        };
        if clone_from.is_some() {
            self.log(job, "configuring the clone").await;
            if let Err(e) = pve.set_config(&node.name, vmid, &common).await {
                return self
                    .undo(
                        job,
                        &pve,
                        &node.name,
                        created,
                        format!("configuring CT {vmid}: {e}"),
                    )
                    .await;
            }
        }
        // 2. Start and wait until it runs.
        self.log(job, &format!("starting CT {vmid}")).await;
        let upid = match pve.action(&node.name, vmid, "start").await {
            Ok(u) => u,
            Err(e) => {
                return self
                    .undo(
                        job,
                        &pve,
                        &node.name,
                        created,
                        format!("starting CT {vmid}: {e}"),
                    )
                    .await
            }
        };
        if let Err(e) = pve.wait_task(&upid, self.task_timeout).await {
            return self
                .undo(
                    job,
                    &pve,
                    &node.name,
                    created,
                    format!("starting CT {vmid}: {}", task_message(&e)),
                )
                .await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match pve.status(&node.name, vmid).await {
                Ok(s) if s.status == "running" => break,
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(s) => {
                    return self
                        .undo(
                            job,
                            &pve,
                            &node.name,
                            created,
                            format!("CT {vmid} is {} instead of running", s.status),
                        )
                        .await
                }
                Err(e) => {
                    return self
                        .undo(
                            job,
                            &pve,
                            &node.name,
                            created,
                            format!("reading CT {vmid}'s status: {e}"),
                        )
                        .await
                }
            }
        }
        Ok(())
    }

    /// Destroys what the job made, then reports the original failure.
    async fn undo(
        &self,
        job: JobId,
        pve: &PveClient,
        node: &str,
        vmid: Option<u32>,
        failure: String,
    ) -> Result<(), StepError> {
        self.log(job, &format!("failed: {failure}; cleaning up"))
            .await;
        if let Some(vmid) = vmid {
            if let Ok(s) = pve.status(node, vmid).await {
                if s.status == "running" {
                    if let Ok(upid) = pve.action(node, vmid, "stop").await {
                        let _ = pve.wait_task(&upid, self.task_timeout).await;
                    }
                }
                match pve.destroy(node, vmid).await {
                    Ok(upid) => match pve.wait_task(&upid, self.task_timeout).await {
                        Ok(_) => self.log(job, &format!("CT {vmid} destroyed")).await,
                        Err(e) => {
                            self.log(
                                job,
                                &format!("destroying CT {vmid} failed: {e}; remove it by hand"),
                            )
                            .await
                        }
                    },
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
        Err(failure)
    }

    /// The container's live state from Proxmox.
    pub async fn live_status(&self, c: &Container) -> Option<crate::proxmox::LxcStatus> {
        let vmid = u32::try_from(c.container_id?).ok()?;
        let node = self.store.node(c.node_id).await.ok()?;
        let pve = self.client(c.node_id).await.ok()?;
        tokio::time::timeout(Duration::from_secs(5), pve.status(&node.name, vmid))
            .await
            .ok()?
            .ok()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Marks jobs that were running when the process died as failed, with their containers
    /// reconciled against Proxmox: a container that runs there is kept, anything else is
    /// removed and its address released. Never runs a job twice.
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

    async fn reconcile_job(&self, job: &siteward_store::resources::Job) {
        let mine = match self.store.containers_being_created_by(job.id).await {
            Ok(list) => list,
            Err(e) => {
                tracing::error!(error = %e, "reading the job's containers failed");
                Vec::new()
            }
        };
        for c in mine {
            let (status, container, line) = match self.reconcile_container(&c).await {
                Ok(true) => (
                    JobState::Success,
                    Some(ContainerStatus::Running),
                    "reconciled after a restart: the container runs on Proxmox",
                ),
                _ => (
                    JobState::Failure,
                    None,
                    "failed: interrupted by a restart; what was made on Proxmox was removed",
                ),
            };
            let done = async {
                match container {
                    Some(st) => self.store.set_container_status(c.id, st).await?,
                    None => self.store.release_container(c.id).await?,
                }
                self.store.job_log(job.id, line).await?;
                self.store.set_job_status(job.id, status).await
            };
            if let Err(e) = done.await {
                tracing::error!(error = %e, container = c.id.0, "recording a reconciliation failed");
            }
        }
        if let Ok((j, _)) = self.store.job(job.id, None).await {
            if j.status.is_active() {
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
        }
    }

    async fn reconcile_container(&self, c: &Container) -> Result<bool, PveError> {
        let Some(vmid) = c.container_id.and_then(|v| u32::try_from(v).ok()) else {
            return Ok(false);
        };
        let node = self
            .store
            .node(c.node_id)
            .await
            .map_err(|e| PveError::Decode(e.to_string()))?;
        let pve = self.client(c.node_id).await.map_err(PveError::Decode)?;
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
                let started = match pve.action(&node.name, vmid, "start").await {
                    Ok(upid) => pve.wait_task(&upid, self.task_timeout).await.is_ok(),
                    Err(_) => false,
                };
                if started {
                    return Ok(true);
                }
                if let Ok(upid) = pve.destroy(&node.name, vmid).await {
                    let _ = pve.wait_task(&upid, self.task_timeout).await;
                }
                Ok(false)
            }
            // Never made (or already gone): nothing to remove.
            Err(_) => Ok(false),
        }
    }
}

impl Jobs {
    fn lock_for(&self, id: siteward_store::ContainerId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id).or_default().clone()
    }

    /// Runs `action` on a container as a job.
    pub async fn lifecycle(
        &self,
        owner: Uid,
        c: Container,
        action: Option<Lifecycle>,
        by: &siteward_store::Actor,
    ) -> Result<JobId, siteward_store::StoreError> {
        let name = match &action {
            Some(Lifecycle::Start) => "start container",
            Some(Lifecycle::Stop) => "stop container",
            Some(Lifecycle::Shutdown) => "shut down container",
            Some(Lifecycle::Restart) => "restart container",
            Some(Lifecycle::Reconfigure { .. }) => "reconfigure container",
            None => "delete container",
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
        let this = self.clone();
        let span = tracing::info_span!("job", job = job.0, kind = name, container = c.id.0);
        tokio::spawn(
            async move {
                let lock = this.lock_for(c.id);
                let _one_per_container = lock.lock().await;
                let _permit = this.permits.clone().acquire_owned().await;
                let _ = this.store.set_job_status(job, JobState::Running).await;
                match this.run_lifecycle(job, &c, action.as_ref()).await {
                    Ok(()) => {
                        let _ = this.store.job_log(job, "done").await;
                        let _ = this.store.set_job_status(job, JobState::Success).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "container job failed");
                        let _ = this.store.job_log(job, &format!("failed: {e}")).await;
                        let _ = this.store.set_job_status(job, JobState::Failure).await;
                    }
                }
            }
            .instrument(span),
        );
        Ok(job)
    }

    async fn run_lifecycle(
        &self,
        job: JobId,
        c: &Container,
        action: Option<&Lifecycle>,
    ) -> Result<(), StepError> {
        let node = self
            .store
            .node(c.node_id)
            .await
            .map_err(|e| e.to_string())?;
        let Some(vmid) = c.container_id.and_then(|v| u32::try_from(v).ok()) else {
            if action.is_none() {
                // Never made it to Proxmox: only the record goes.
                self.store
                    .purge_container(c.id)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(());
            }
            return Err("the container has no VMID on Proxmox".into());
        };
        let pve = self.client(node.id).await?;
        let wait = |upid: String| {
            let pve = &pve;
            async move {
                pve.wait_task(&upid, self.task_timeout)
                    .await
                    .map_err(|e| task_message(&e))
            }
        };
        match action {
            Some(
                power @ (Lifecycle::Start
                | Lifecycle::Stop
                | Lifecycle::Shutdown
                | Lifecycle::Restart),
            ) => {
                // (Proxmox verb, what the log says, the status it leaves)
                let (verb, doing, status) = match power {
                    Lifecycle::Start => ("start", "starting", ContainerStatus::Running),
                    Lifecycle::Stop => ("stop", "stopping", ContainerStatus::Stopped),
                    Lifecycle::Shutdown => ("shutdown", "shutting down", ContainerStatus::Stopped),
                    _ => ("reboot", "restarting", ContainerStatus::Running),
                };
                self.log(job, &format!("{doing} CT {vmid}")).await;
                wait(
                    pve.action(&node.name, vmid, verb)
                        .await
                        .map_err(|e| e.to_string())?,
                )
                .await?;
                if let Err(e) = self.store.set_container_status(c.id, status).await {
                    tracing::warn!(error = %e, container = c.id.0, "recording the new status failed");
                }
            }
            Some(Lifecycle::Reconfigure { cores, memory }) => {
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
                    .map_err(|e| e.to_string())?;
            }
            None => {
                if let Err(e) = self
                    .store
                    .set_container_status(c.id, ContainerStatus::Deleting)
                    .await
                {
                    tracing::warn!(error = %e, container = c.id.0, "marking the container deleting failed");
                }
                if let Ok(s) = pve.status(&node.name, vmid).await {
                    if s.status == "running" {
                        self.log(job, &format!("stopping CT {vmid}")).await;
                        wait(
                            pve.action(&node.name, vmid, "stop")
                                .await
                                .map_err(|e| e.to_string())?,
                        )
                        .await?;
                    }
                    self.log(job, &format!("destroying CT {vmid}")).await;
                    wait(
                        pve.destroy(&node.name, vmid)
                            .await
                            .map_err(|e| e.to_string())?,
                    )
                    .await?;
                } else {
                    self.log(job, &format!("CT {vmid} is not on {} any more", node.name))
                        .await;
                }
                self.store
                    .purge_container(c.id)
                    .await
                    .map_err(|e| e.to_string())?;
                self.log(job, "record, address and DNS records removed")
                    .await;
            }
        }
        Ok(())
    }

    /// Registers a node's containers that siteward does not know yet.
    pub async fn import(
        &self,
        node_id: NodeId,
        by: &siteward_store::Actor,
    ) -> Result<Vec<Container>, StepError> {
        let node = self.store.node(node_id).await.map_err(|e| e.to_string())?;
        let pve = self.client(node_id).await?;
        let list = pve.list_lxc(&node.name).await.map_err(|e| e.to_string())?;
        let mut imported = Vec::new();
        for entry in list {
            let Some(vmid) = entry["vmid"].as_u64().and_then(|v| u32::try_from(v).ok()) else {
                continue;
            };
            let config = pve
                .config(&node.name, vmid)
                .await
                .map_err(|e| e.to_string())?;
            let hostname = config["hostname"]
                .as_str()
                .or(entry["name"].as_str())
                .unwrap_or_default()
                .to_owned();
            if hostname.is_empty() {
                continue;
            }
            let net0 = config["net0"].as_str().unwrap_or_default();
            let field = |key: &str| {
                net0.split(',')
                    .find_map(|kv| kv.strip_prefix(key))
                    .map(str::to_owned)
            };
            let mac = field("hwaddr=").map(|m| m.to_ascii_lowercase());
            let addr =
                field("ip=").and_then(|ip| ip.split('/').next().and_then(|a| a.parse().ok()));
            let tags = entry["tags"]
                .as_str()
                .or(config["tags"].as_str())
                .unwrap_or_default()
                .to_owned();
            let owner = tags
                .split([';', ',', ' '])
                .find_map(|t| t.strip_prefix("owner-"))
                .map(str::to_owned);
            let running = entry["status"] == "running";
            if let Some(c) = self
                .store
                .import_container(
                    node_id,
                    siteward_store::jobs::FoundContainer {
                        vmid: vmid as i32,
                        hostname,
                        mac,
                        addr,
                        owner,
                        running,
                    },
                    by,
                )
                .await
                .map_err(|e| e.to_string())?
            {
                imported.push(c);
            }
        }
        Ok(imported)
    }
}

fn task_message(e: &PveError) -> String {
    match e {
        PveError::Task { exit, log, .. } => {
            let tail: Vec<&str> = log.iter().rev().take(3).map(String::as_str).collect();
            format!(
                "{exit} ({})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }
        other => other.to_string(),
    }
}
