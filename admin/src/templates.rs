//! Which templates a container may be made from. A user names a template; it is used only when
//! an administrator has made it one on Proxmox:
//!
//! - a CT template volume `<storage>:vztmpl/<file>.tar[.gz|.xz|.zst|.bz2]` on the node's
//!   `image_storage`, listed by `GET /nodes/{node}/storage/{storage}/content?content=vztmpl`
//!   (uploading one takes `Datastore.AllocateTemplate`, which siteward's users do not have);
//! - the VMID of a container whose configuration has `template: 1` on that node
//!   (`GET /nodes/{node}/lxc/{vmid}/config`); a template is cloned on its own node, so the new
//!   container goes there.
//!
//! Anything else (another container's VMID, a backup, an ISO, a snippet, a path) is refused.
//! The API checks before a job starts ([`Jobs::template_nodes`]); the job checks again on the
//! node it reserved, right before it creates or clones ([`Jobs::check_template`]). The database
//! refuses a `containers.template` that is not of one of the two forms (migration
//! `0013_templates.sql`).

use std::time::Duration;

use axum::http::StatusCode;
use reqwest::Method;
use serde_json::Value;
use siteward_store::{Container, Node, NodeId, SiteId};

use crate::api::error::ApiError;
use crate::jobs::Jobs;
use crate::proxmox::{PveClient, PveError};

/// How long the API waits for a node to answer a template check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A template as a user names it, checked for shape only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateRef {
    /// A CT template volume.
    Volume {
        /// The storage (`local`).
        storage: String,
        /// The whole volume id (`local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`).
        volid: String,
    },
    /// A template container to clone.
    Vmid(u32),
}

/// Why a template is refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// Neither a VMID nor a `<storage>:vztmpl/<file>` volume id.
    #[error(
        "template must be a CT template volume (<storage>:vztmpl/<name>.tar[.gz|.xz|.zst|.bz2]) \
         or the VMID of a template container: {0}"
    )]
    Malformed(&'static str),
    /// A volume on another storage than the node's image storage.
    #[error(
        "template volumes are taken from storage '{expected}' on node {node}, not '{storage}'"
    )]
    WrongStorage {
        /// The storage asked for.
        storage: String,
        /// The node's `image_storage`.
        expected: String,
        /// The node.
        node: String,
    },
    /// The volume is not listed as a CT template on the node.
    #[error("{volid} is not a CT template on {node}")]
    NotListed {
        /// The volume.
        volid: String,
        /// The node ("node pve1"), or "any node of this site".
        node: String,
    },
    /// The VMID is not a template container there (or does not exist; the same answer, so that
    /// another user's container cannot be told from a free id).
    #[error("{vmid} is not a template container on {where_}")]
    NotTemplate {
        /// The VMID.
        vmid: u32,
        /// The node, or "any node of this site".
        where_: String,
    },
    /// The template is fine, but on other nodes than the one asked for.
    #[error("template {template} is not on node {node}; it is on {available}")]
    OtherNode {
        /// The template.
        template: String,
        /// The node asked for.
        node: String,
        /// Where it is.
        available: String,
    },
    /// No node of the site is managed through the Proxmox API (and NVIDIA-capable, when asked).
    #[error("no node of this site is managed through the Proxmox API (with NVIDIA, when asked)")]
    NoManagedNode,
    /// The container's node is not managed through the Proxmox API, so nothing can be checked.
    #[error("the container's node (id {0}) is not managed through the Proxmox API; its templates cannot be checked")]
    Unmanaged(String),
    /// The node asked for is not a managed node of the site.
    #[error("no such node in this site managed through the Proxmox API (with NVIDIA, when asked)")]
    NoSuchNode,
    /// Proxmox could not be asked.
    #[error("checking the template on node {node}: {error}")]
    Proxmox {
        /// The node.
        node: String,
        /// What went wrong.
        error: String,
    },
}

impl From<TemplateError> for ApiError {
    fn from(e: TemplateError) -> Self {
        match e {
            TemplateError::Proxmox { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "proxmox_error", e.to_string())
            }
            TemplateError::NoManagedNode => ApiError::invalid("site_id", e.to_string()),
            TemplateError::NoSuchNode => ApiError::invalid("node_id", e.to_string()),
            other => ApiError::invalid("template", other.to_string()),
        }
    }
}

/// PVE's storage id (`pve-storage-id`): `[a-z][a-z0-9-_.]*[a-z0-9]`.
fn storage_id_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !b[b.len() - 1].is_ascii_uppercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c))
}

/// What PVE accepts as a CT template file name (`VZTMPL_EXT_RE_1`), restricted to the safe
/// characters of `SAFE_CHAR_CLASS_RE` and without a leading dot.
fn template_file_ok(f: &str) -> bool {
    let stem = [".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2", ".tar"]
        .iter()
        .find_map(|ext| f.strip_suffix(ext));
    match stem {
        Some(stem) => {
            !stem.is_empty()
                && !f.starts_with('.')
                && !f.contains("..")
                && f.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-._+=".contains(&c))
        }
        None => false,
    }
}

impl TemplateRef {
    /// Parses what a user wrote. Only the shape is checked here.
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        if s.is_empty() || s.len() > 255 {
            return Err(TemplateError::Malformed("1 to 255 characters"));
        }
        if s.contains("..") {
            return Err(TemplateError::Malformed("no `..`"));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            // PVE's VMIDs are 100 to 999999999.
            return match s.parse::<u32>() {
                Ok(v) if (100..=999_999_999).contains(&v) && !s.starts_with('0') => {
                    Ok(Self::Vmid(v))
                }
                _ => Err(TemplateError::Malformed(
                    "a VMID is a number from 100 to 999999999",
                )),
            };
        }
        let Some((storage, volname)) = s.split_once(':') else {
            return Err(TemplateError::Malformed("no storage given"));
        };
        if !storage_id_ok(storage) {
            return Err(TemplateError::Malformed("not a storage id"));
        }
        let Some(file) = volname.strip_prefix("vztmpl/") else {
            return Err(TemplateError::Malformed(
                "only vztmpl volumes are templates (not backups, ISOs, snippets or images)",
            ));
        };
        if !template_file_ok(file) {
            return Err(TemplateError::Malformed(
                "not a template file name (letters, digits, - . _ + =; .tar, .tar.gz, .tar.xz, .tar.zst or .tar.bz2)",
            ));
        }
        Ok(Self::Volume {
            storage: storage.to_owned(),
            volid: s.to_owned(),
        })
    }
}

/// `1`, `"1"` or `true`: what PVE's boolean config keys look like over the API.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_u64() == Some(1),
        Value::String(s) => s == "1",
        _ => false,
    }
}

/// A template that may be used on a node (for the listing).
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct AllowedTemplate {
    /// What to pass as `template`.
    pub template: String,
    /// `vztmpl` (a template volume) or `lxc` (a template container, cloned).
    pub kind: &'static str,
    /// The node it is on.
    pub node_id: NodeId,
    /// The node's name.
    pub node: String,
    /// The template container's name, for `lxc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size in bytes, for `vztmpl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

fn pve_err(node: &Node, e: &PveError) -> TemplateError {
    TemplateError::Proxmox {
        node: node.name.clone(),
        error: e.to_string(),
    }
}

/// Checks on `node` that `t` is a template an administrator made.
pub async fn check_on(pve: &PveClient, node: &Node, t: &TemplateRef) -> Result<(), TemplateError> {
    match t {
        TemplateRef::Volume { storage, volid } => {
            if *storage != node.image_storage {
                return Err(TemplateError::WrongStorage {
                    storage: storage.clone(),
                    expected: node.image_storage.clone(),
                    node: node.name.clone(),
                });
            }
            let list = vztmpl_volumes(pve, node).await?;
            if list.iter().any(|v| v["volid"].as_str() == Some(volid)) {
                Ok(())
            } else {
                Err(TemplateError::NotListed {
                    volid: volid.clone(),
                    node: format!("node {}", node.name),
                })
            }
        }
        TemplateRef::Vmid(vmid) => {
            match pve.config(&node.name, *vmid).await {
                Ok(config) if truthy(&config["template"]) => Ok(()),
                Ok(_) => Err(TemplateError::NotTemplate {
                    vmid: *vmid,
                    where_: format!("node {}", node.name),
                }),
                // PVE's answer for a VMID that is not on this node.
                Err(PveError::Api { message, .. }) if message.contains("does not exist") => {
                    Err(TemplateError::NotTemplate {
                        vmid: *vmid,
                        where_: format!("node {}", node.name),
                    })
                }
                Err(e) => Err(pve_err(node, &e)),
            }
        }
    }
}

/// The `vztmpl` volumes on the node's image storage.
async fn vztmpl_volumes(pve: &PveClient, node: &Node) -> Result<Vec<Value>, TemplateError> {
    let path = format!(
        "/nodes/{}/storage/{}/content",
        node.name, node.image_storage
    );
    let v = pve
        .call(Method::GET, &path, &[("content", "vztmpl".into())])
        .await
        .map_err(|e| pve_err(node, &e))?;
    let items = v
        .as_array()
        .cloned()
        .ok_or_else(|| TemplateError::Proxmox {
            node: node.name.clone(),
            error: "the storage content listing is not a list".into(),
        })?;
    // The listing is filtered by content already; a volume of another type is never a template.
    Ok(items
        .into_iter()
        .filter(|i| i["content"].as_str() == Some("vztmpl"))
        .filter(|i| {
            i["volid"]
                .as_str()
                .is_some_and(|v| TemplateRef::parse(v).is_ok())
        })
        .collect())
}

impl Jobs {
    /// The nodes of `site` that siteward drives through the Proxmox API, optionally only `only`
    /// and only NVIDIA-capable ones.
    fn managed_nodes(&self, site: SiteId, only: Option<NodeId>, nvidia: bool) -> Vec<Node> {
        let snap = self.store().snapshot();
        snap.naming
            .sites
            .get(&site)
            .map(|v| {
                v.nodes
                    .iter()
                    .filter(|n| n.api_url.is_some())
                    .filter(|n| only.is_none_or(|o| o == n.id))
                    .filter(|n| !nvidia || n.nvidia_available)
                    .map(|n| (**n).clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `ask` against the node's API within [`CHECK_TIMEOUT`].
    async fn ask_node<T, F>(
        &self,
        node: &Node,
        ask: impl FnOnce(PveClient) -> F,
    ) -> Result<T, TemplateError>
    where
        F: std::future::Future<Output = Result<T, TemplateError>>,
    {
        let pve = self
            .client(node.id)
            .await
            .map_err(|e| TemplateError::Proxmox {
                node: node.name.clone(),
                error: e.to_string(),
            })?;
        tokio::time::timeout(CHECK_TIMEOUT, ask(pve))
            .await
            .unwrap_or_else(|_| {
                Err(TemplateError::Proxmox {
                    node: node.name.clone(),
                    error: "no answer in time".into(),
                })
            })
    }

    async fn check_node(&self, node: &Node, t: &TemplateRef) -> Result<(), TemplateError> {
        self.ask_node(node, |pve| async move { check_on(&pve, node, t).await })
            .await
    }

    /// Before a creation: the nodes of the site (or the one given) where `template` is a
    /// template an administrator made. Never empty on success.
    pub async fn template_nodes(
        &self,
        site: SiteId,
        node_id: Option<NodeId>,
        nvidia: bool,
        template: &str,
    ) -> Result<Vec<NodeId>, TemplateError> {
        let t = TemplateRef::parse(template)?;
        let site_nodes = self.managed_nodes(site, None, nvidia);
        let nodes: Vec<&Node> = site_nodes
            .iter()
            .filter(|n| node_id.is_none_or(|o| o == n.id))
            .collect();
        match (nodes.is_empty(), node_id) {
            (true, Some(_)) => return Err(TemplateError::NoSuchNode),
            (true, None) => return Err(TemplateError::NoManagedNode),
            _ => {}
        }
        let results = futures::future::join_all(nodes.iter().map(|n| self.check_node(n, &t))).await;
        let mut ok = Vec::new();
        let mut refusals = Vec::new();
        let mut unreachable = Vec::new();
        for (n, r) in nodes.iter().zip(results) {
            match r {
                Ok(()) => ok.push(n.id),
                Err(e @ TemplateError::Proxmox { .. }) => unreachable.push(e),
                Err(e) => refusals.push(e),
            }
        }
        if !ok.is_empty() {
            return Ok(ok);
        }
        if node_id.is_some() {
            // The one node asked for: say why, and where the template is instead.
            let Some(e) = refusals.pop().or(unreachable.pop()) else {
                return Err(TemplateError::NoSuchNode);
            };
            if matches!(e, TemplateError::Proxmox { .. }) {
                return Err(e);
            }
            let others: Vec<&Node> = site_nodes
                .iter()
                .filter(|n| node_id.is_some_and(|o| o != n.id))
                .collect();
            let found =
                futures::future::join_all(others.iter().map(|n| self.check_node(n, &t))).await;
            let available: Vec<&str> = others
                .iter()
                .zip(found)
                .filter(|(_, r)| r.is_ok())
                .map(|(n, _)| n.name.as_str())
                .collect();
            if let (false, Some(n)) = (available.is_empty(), nodes.first()) {
                return Err(TemplateError::OtherNode {
                    template: template.to_owned(),
                    node: n.name.clone(),
                    available: available.join(", "),
                });
            }
            return Err(e);
        }
        if refusals.is_empty() {
            if let Some(e) = unreachable.pop() {
                return Err(e);
            }
        }
        for e in &unreachable {
            tracing::warn!(error = %e, "a node could not be asked about a template");
        }
        let all_wrong_storage = refusals
            .iter()
            .all(|e| matches!(e, TemplateError::WrongStorage { .. }));
        match (t, refusals.into_iter().next()) {
            (_, Some(e)) if all_wrong_storage => Err(e),
            (TemplateRef::Vmid(vmid), _) => Err(TemplateError::NotTemplate {
                vmid,
                where_: "any node of this site".into(),
            }),
            (TemplateRef::Volume { volid, .. }, _) => Err(TemplateError::NotListed {
                volid,
                node: "any node of this site".into(),
            }),
        }
    }

    /// In the job, right before Proxmox is asked to create or clone: the check again, on the
    /// node the job reserved.
    pub async fn check_template(
        &self,
        pve: &PveClient,
        node: &Node,
        template: &str,
    ) -> Result<TemplateRef, TemplateError> {
        let t = TemplateRef::parse(template)?;
        check_on(pve, node, &t).await?;
        Ok(t)
    }

    /// Before an owner changes a container's `template`: the same rule, on the container's node.
    pub async fn check_template_for(
        &self,
        c: &Container,
        template: &str,
    ) -> Result<(), TemplateError> {
        let t = TemplateRef::parse(template)?;
        let Some(node) = self
            .managed_nodes(c.site_id, Some(c.node_id), false)
            .into_iter()
            .next()
        else {
            return Err(TemplateError::Unmanaged(format!("{}", c.node_id.0)));
        };
        self.check_node(&node, &t).await
    }

    /// The templates that may be used on the site's managed nodes (or one node).
    pub async fn allowed_templates(
        &self,
        site: SiteId,
        node_id: Option<NodeId>,
    ) -> Result<Vec<AllowedTemplate>, TemplateError> {
        let nodes = self.managed_nodes(site, node_id, false);
        let mut out = Vec::new();
        for node in &nodes {
            let (vols, cts) = self
                .ask_node(node, |pve| async move {
                    let vols = vztmpl_volumes(&pve, node).await?;
                    let cts = pve
                        .list_lxc(&node.name)
                        .await
                        .map_err(|e| pve_err(node, &e))?;
                    Ok((vols, cts))
                })
                .await?;
            for v in vols {
                if let Some(volid) = v["volid"].as_str() {
                    out.push(AllowedTemplate {
                        template: volid.to_owned(),
                        kind: "vztmpl",
                        node_id: node.id,
                        node: node.name.clone(),
                        name: None,
                        size: v["size"].as_u64(),
                    });
                }
            }
            for c in cts.iter().filter(|c| truthy(&c["template"])) {
                if let Some(vmid) = c["vmid"].as_u64() {
                    out.push(AllowedTemplate {
                        template: vmid.to_string(),
                        kind: "lxc",
                        node_id: node.id,
                        node: node.name.clone(),
                        name: c["name"].as_str().map(str::to_owned),
                        size: None,
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(
            TemplateRef::parse("9000").ok(),
            Some(TemplateRef::Vmid(9000))
        );
        assert!(matches!(
            TemplateRef::parse("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
            Ok(TemplateRef::Volume { ref storage, .. }) if storage == "local"
        ));
        assert!(
            TemplateRef::parse("nfs-1.a:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz").is_ok()
        );
        assert!(TemplateRef::parse("local:vztmpl/app.tar").is_ok());
        for bad in [
            "",
            "0",
            "42",
            "0100",
            "1000000000",
            "99999999999999999999",
            "-1",
            "local:backup/vzdump-lxc-105-2026_01_01-00_00_00.tar.zst",
            "local:iso/debian.iso",
            "local:snippets/x.tar.gz",
            "local-lvm:vm-105-disk-0",
            "local:105/vm-105-disk-0.raw",
            "/var/lib/vz/dump/vzdump-lxc-105-2026_01_01-00_00_00.tar.zst",
            "local:vztmpl/../dump/vzdump-lxc-105.tar.zst",
            "local:vztmpl/sub/x.tar.zst",
            "local:vztmpl/.hidden.tar.zst",
            "local:vztmpl/x..tar.zst",
            "local:vztmpl/.tar.zst",
            "local:vztmpl/x.tar.zst:extra",
            "local:vztmpl/x.zip",
            "local:vztmpl/x tar.zst",
            "local:vztmpl/x.tar.zst\n",
            "Local:vztmpl/x.tar.zst",
            "l:vztmpl/x.tar.zst",
            ":vztmpl/x.tar.zst",
            "local::vztmpl/x.tar.zst",
            "local:/vztmpl/x.tar.zst",
            "local:vztmpl/",
            "debian-12",
        ] {
            assert!(TemplateRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn booleans_as_pve_sends_them() {
        assert!(truthy(&serde_json::json!(1)));
        assert!(truthy(&serde_json::json!("1")));
        assert!(truthy(&serde_json::json!(true)));
        assert!(!truthy(&serde_json::json!(0)));
        assert!(!truthy(&serde_json::json!(null)));
    }
}
