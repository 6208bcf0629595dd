//! Jobs and the reservations a container creation makes before it talks to Proxmox: node
//! choice, a static address and a MAC, taken in one transaction under a per-site lock so that
//! concurrent creations never get the same.

use std::net::Ipv4Addr;

use rand::RngCore;

use crate::audit::Actor;
use crate::error::{Result, StoreError};
use crate::models::*;
use crate::resources::parse_range;
use crate::Store;

/// What a creation asks for.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// Site.
    pub site_id: SiteId,
    /// Host name.
    pub hostname: String,
    /// Owner.
    pub username: String,
    /// Template.
    pub template: String,
    /// A given node, or the least loaded one.
    pub node_id: Option<NodeId>,
    /// Only among these nodes (those that have the template), when given.
    pub among: Option<Vec<NodeId>>,
    /// Only NVIDIA-capable nodes.
    pub nvidia: bool,
    /// The job doing it.
    pub job_id: JobId,
}

impl Store {
    /// Creates a job.
    pub async fn create_job(
        &self,
        name: &str,
        resource: &str,
        owner: Option<Uid>,
    ) -> Result<JobId> {
        Ok(JobId(
            sqlx::query_scalar(
                "INSERT INTO jobs (name, associated_resource, status, owner_uid) VALUES ($1, $2, 'pending', $3) RETURNING id",
            )
            .bind(name)
            .bind(resource)
            .bind(owner)
            .fetch_one(self.pool())
            .await?,
        ))
    }

    /// Creates a job that a person asked for, with its audit row in the same transaction:
    /// `action` on `resource` `resource_id` (for example `action` on `container` 7).
    #[allow(clippy::too_many_arguments)]
    pub async fn request_job(
        &self,
        name: &str,
        associated: &str,
        owner: Option<Uid>,
        by: &Actor,
        action: &str,
        resource: &str,
        resource_id: impl ToString,
        details: serde_json::Value,
    ) -> Result<JobId> {
        let mut tx = self.pool().begin().await?;
        let id: JobId = sqlx::query_scalar(
            "INSERT INTO jobs (name, associated_resource, status, owner_uid) VALUES ($1, $2, 'pending', $3) RETURNING id",
        )
        .bind(name)
        .bind(associated)
        .bind(owner)
        .fetch_one(&mut *tx)
        .await
        .map(JobId)?;
        let mut details = details;
        if let serde_json::Value::Object(m) = &mut details {
            m.insert("job_id".into(), serde_json::json!(id));
        }
        crate::audit::record(&mut tx, by, action, resource, resource_id, details).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Appends a progress line.
    pub async fn job_log(&self, job: JobId, message: &str) -> Result<()> {
        sqlx::query("INSERT INTO job_statuses (job_id, message) VALUES ($1, $2)")
            .bind(job)
            .bind(message)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Sets a job's state.
    pub async fn set_job_status(&self, job: JobId, status: JobState) -> Result<()> {
        sqlx::query("UPDATE jobs SET status = $2 WHERE id = $1")
            .bind(job)
            .bind(status)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Jobs that were pending or running (for reconciliation after a restart).
    pub async fn unfinished_jobs(&self) -> Result<Vec<crate::resources::Job>> {
        Ok(sqlx::query_as(
            "SELECT id, name, associated_resource, status, owner_uid, created_at, updated_at
             FROM jobs WHERE status IN ('pending', 'running') ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// The containers a creation job was still creating (for reconciliation after a restart).
    pub async fn containers_being_created_by(&self, job: JobId) -> Result<Vec<Container>> {
        let rows: Vec<ContainerRow> = sqlx::query_as(&format!(
            "SELECT {} FROM containers WHERE creation_job_id = $1 AND status = 'creating' ORDER BY id",
            crate::queries::CONTAINER_COLUMNS
        ))
        .bind(job)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(Container::from).collect())
    }

    /// Progress lines after `after` (for streaming).
    pub async fn job_lines_after(
        &self,
        job: JobId,
        after: i64,
    ) -> Result<Vec<crate::resources::JobStatus>> {
        Ok(sqlx::query_as(
            "SELECT id, message, created_at FROM job_statuses WHERE job_id = $1 AND id > $2 ORDER BY id",
        )
        .bind(job)
        .bind(after)
        .fetch_all(self.pool())
        .await?)
    }

    /// Picks the node, an address and a MAC, and inserts the container as `creating`.
    /// The audit row (`create` of the container, by `by`) commits with it.
    pub async fn reserve_container(
        &self,
        r: Reservation,
        by: &Actor,
    ) -> Result<(Container, Node, Site)> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('siteward.site'), $1::int)")
            .bind(r.site_id.0 as i32)
            .execute(&mut *tx)
            .await?;
        let site_row: Option<SiteRow> = sqlx::query_as(&format!(
            "SELECT {} FROM sites WHERE id = $1",
            crate::queries::SITE_COLUMNS
        ))
        .bind(r.site_id)
        .fetch_optional(&mut *tx)
        .await?;
        let site = Site::from(site_row.ok_or(StoreError::Invalid {
            field: "site_id".into(),
            message: "no such site".into(),
        })?);
        let net = site.subnet().ok_or(StoreError::Invalid {
            field: "site_id".into(),
            message: "the site has no gateway and subnet mask to take addresses from".into(),
        })?;
        // The node: the given one (in this site), else the one with the fewest containers; only
        // among those that have the template, when that was checked.
        let among: Option<Vec<i64>> = r.among.map(|v| v.into_iter().map(|n| n.0).collect());
        let node_row: Option<NodeRow> = sqlx::query_as(&format!(
            "SELECT {} FROM nodes n WHERE site_id = $1 AND ($2::bigint IS NULL OR id = $2)
               AND (NOT $3 OR nvidia_available) AND ($4::bigint[] IS NULL OR id = ANY($4))
             ORDER BY (SELECT count(*) FROM containers c WHERE c.node_id = n.id), id LIMIT 1",
            crate::queries::NODE_COLUMNS
        ))
        .bind(r.site_id)
        .bind(r.node_id)
        .bind(r.nvidia)
        .bind(among)
        .fetch_optional(&mut *tx)
        .await?;
        let node = Node::from(node_row.ok_or(StoreError::Invalid {
            field: "node_id".into(),
            message: if r.nvidia {
                "no node of this site has NVIDIA available".into()
            } else {
                "no such node in this site".into()
            },
        })?);
        // Addresses in use: containers and nodes of the site.
        let used: Vec<ipnetwork::IpNetwork> = sqlx::query_scalar(
            "SELECT ipv4_address FROM containers WHERE site_id = $1 AND ipv4_address IS NOT NULL
             UNION SELECT ipv4_address FROM nodes WHERE site_id = $1 AND ipv4_address IS NOT NULL",
        )
        .bind(r.site_id)
        .fetch_all(&mut *tx)
        .await?;
        let used: std::collections::HashSet<Ipv4Addr> = used
            .into_iter()
            .filter_map(|n| match n.ip() {
                std::net::IpAddr::V4(a) => Some(a),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        let dhcp = site.dhcp_range.as_deref().and_then(parse_range);
        let first = u32::from(net.network()) + 1;
        let last = u32::from(net.broadcast()).saturating_sub(1);
        let addr = (first..=last)
            .map(Ipv4Addr::from)
            .find(|a| {
                Some(*a) != site.gateway
                    && !used.contains(a)
                    && !dhcp.is_some_and(|(lo, hi)| {
                        (u32::from(lo)..=u32::from(hi)).contains(&u32::from(*a))
                    })
            })
            .ok_or(StoreError::Invalid {
                field: "site_id".into(),
                message: "no free static address left in the site's subnet".into(),
            })?;
        let used_macs: Vec<mac_address::MacAddress> = sqlx::query_scalar(
            "SELECT mac_address FROM containers WHERE site_id = $1 AND mac_address IS NOT NULL",
        )
        .bind(r.site_id)
        .fetch_all(&mut *tx)
        .await?;
        let mac = loop {
            let mut b = [0u8; 6];
            rand::rngs::OsRng.fill_bytes(&mut b);
            // Locally administered, unicast.
            b[0] = (b[0] & 0xfc) | 0x02;
            let m = mac_address::MacAddress::new(b);
            if !used_macs.contains(&m) {
                break m;
            }
        };
        let row: ContainerRow = sqlx::query_as(&format!(
            "INSERT INTO containers (hostname, node_id, username, status, template, creation_job_id,
                                     mac_address, ipv4_address, nvidia_requested)
             VALUES (lower($1), $2, $3, 'creating', $4, $5, $6, $7, $8) RETURNING {}",
            crate::queries::CONTAINER_COLUMNS
        ))
        .bind(&r.hostname)
        .bind(node.id)
        .bind(&r.username)
        .bind(&r.template)
        .bind(r.job_id)
        .bind(mac)
        .bind(ipnetwork::IpNetwork::from(std::net::IpAddr::V4(addr)))
        .bind(r.nvidia)
        .fetch_one(&mut *tx)
        .await?;
        let container = Container::from(row);
        let details = serde_json::json!({
            "hostname": container.hostname,
            "template": container.template,
            "node_id": container.node_id,
            "job_id": r.job_id,
        });
        crate::audit::record(&mut tx, by, "create", "container", container.id, details).await?;
        tx.commit().await?;
        self.refreshed(&["containers"]).await;
        Ok((container, node, site))
    }

    /// Records the VMID Proxmox gave the container.
    pub async fn set_container_vmid(&self, id: ContainerId, vmid: Option<i32>) -> Result<()> {
        sqlx::query("UPDATE containers SET container_id = $2 WHERE id = $1")
            .bind(id)
            .bind(vmid)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Sets a container's status.
    pub async fn set_container_status(
        &self,
        id: ContainerId,
        status: ContainerStatus,
    ) -> Result<()> {
        sqlx::query("UPDATE containers SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// A failed creation: status `failed`, address, MAC and VMID released.
    pub async fn release_container(&self, id: ContainerId) -> Result<()> {
        sqlx::query(
            "UPDATE containers SET status = 'failed', ipv4_address = NULL, mac_address = NULL, container_id = NULL
             WHERE id = $1",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Credentials of a node for the Proxmox client: (api_url, id or user, secret, verify TLS).
    pub async fn node_credentials(&self, id: NodeId) -> Result<(String, String, String, bool)> {
        let node = self.node(id).await?;
        let secret = self.node_secret(id).await?.unwrap_or_default();
        let url = node.api_url.ok_or(StoreError::Invalid {
            field: "api_url".into(),
            message: "the node has no API URL".into(),
        })?;
        let user = node.api_token_id_or_username.ok_or(StoreError::Invalid {
            field: "api_token_id_or_username".into(),
            message: "the node has no API token id or user name".into(),
        })?;
        Ok((url, user, secret, !node.disable_tls_verification))
    }
}

/// A container found on a node by an import.
#[derive(Debug, Clone)]
pub struct FoundContainer {
    /// VMID.
    pub vmid: i32,
    /// Host name.
    pub hostname: String,
    /// MAC of net0.
    pub mac: Option<String>,
    /// IPv4 of net0.
    pub addr: Option<Ipv4Addr>,
    /// Owner from the `owner-<name>` tag.
    pub owner: Option<String>,
    /// Running now.
    pub running: bool,
}

/// What an earlier request with the same idempotency key got.
#[derive(Debug, Clone)]
pub enum Idempotent {
    /// First time: go ahead, then call [`Store::finish_idempotent`].
    Proceed,
    /// Done before: this status and body.
    Replay(u16, serde_json::Value),
    /// The first request is still being processed.
    InProgress,
}

impl Store {
    /// Claims an idempotency key for `uid`.
    pub async fn claim_idempotency_key(&self, uid: Uid, key: &str) -> Result<Idempotent> {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (uid_number, key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(uid)
        .bind(key)
        .execute(self.pool())
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Idempotent::Proceed);
        }
        let row: Option<(Option<i32>, Option<serde_json::Value>)> = sqlx::query_as(
            "SELECT status, response FROM idempotency_keys WHERE uid_number = $1 AND key = $2",
        )
        .bind(uid)
        .bind(key)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some((Some(status), Some(body))) => Idempotent::Replay(status as u16, body),
            _ => Idempotent::InProgress,
        })
    }

    /// Stores the result for a claimed key (or releases it when the request failed early).
    pub async fn finish_idempotent(
        &self,
        uid: Uid,
        key: &str,
        result: Option<(u16, serde_json::Value)>,
    ) -> Result<()> {
        match result {
            Some((status, body)) => {
                sqlx::query("UPDATE idempotency_keys SET status = $3, response = $4 WHERE uid_number = $1 AND key = $2")
                    .bind(uid)
                    .bind(key)
                    .bind(i32::from(status))
                    .bind(body)
                    .execute(self.pool())
                    .await?;
            }
            None => {
                sqlx::query("DELETE FROM idempotency_keys WHERE uid_number = $1 AND key = $2")
                    .bind(uid)
                    .bind(key)
                    .execute(self.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// Deletes a container record for good.
    pub async fn purge_container(&self, id: ContainerId) -> Result<()> {
        sqlx::query("DELETE FROM containers WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Registers a container found on a node (import). Returns `None` when its VMID, MAC,
    /// address or host name is already known.
    pub async fn import_container(
        &self,
        node: NodeId,
        found: FoundContainer,
        by: &Actor,
    ) -> Result<Option<Container>> {
        let FoundContainer {
            vmid,
            hostname,
            mac,
            addr,
            owner,
            running,
        } = found;
        let (hostname, owner) = (hostname.as_str(), owner.as_deref());
        let mac = mac.and_then(|m| m.parse::<mac_address::MacAddress>().ok());
        let owner_exists = match owner {
            Some(o) => sqlx::query_scalar::<_, i32>("SELECT 1 FROM users WHERE username = $1")
                .bind(o)
                .fetch_optional(self.pool())
                .await?
                .is_some(),
            None => false,
        };
        let mut tx = self.pool().begin().await?;
        let row: Option<ContainerRow> = sqlx::query_as(&format!(
            "INSERT INTO containers (hostname, node_id, username, status, container_id, mac_address, ipv4_address)
             VALUES (lower($1), $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING RETURNING {}",
            crate::queries::CONTAINER_COLUMNS
        ))
        .bind(hostname)
        .bind(node)
        .bind(if owner_exists { owner } else { None })
        .bind(if running {
            ContainerStatus::Running
        } else {
            ContainerStatus::Stopped
        })
        .bind(vmid)
        .bind(mac)
        .bind(addr.map(|a| ipnetwork::IpNetwork::from(std::net::IpAddr::V4(a))))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let container = Container::from(row);
        let details = serde_json::json!({ "node_id": node, "vmid": vmid });
        crate::audit::record(&mut tx, by, "import", "container", container.id, details).await?;
        tx.commit().await?;
        self.refreshed(&["containers"]).await;
        Ok(Some(container))
    }
}
