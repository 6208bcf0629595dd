//! Importing: a node's containers that siteward does not know yet, registered from what
//! Proxmox says about them (hostname, MAC, address, owner tag, running or not).

use siteward_store::jobs::FoundContainer;
use siteward_store::{Container, NodeId};

use super::{JobError, Jobs};

impl Jobs {
    /// Registers a node's containers that siteward does not know yet.
    pub async fn import(
        &self,
        node_id: NodeId,
        by: &siteward_store::Actor,
    ) -> Result<Vec<Container>, JobError> {
        let node = self
            .store
            .node(node_id)
            .await
            .map_err(|e| JobError::store("reading the node", e))?;
        let pve = self.client(node_id).await?;
        let list = pve.list_lxc(&node.name).await.map_err(|e| {
            JobError::proxmox(format!("listing the containers of {}", node.name), e)
        })?;
        let mut imported = Vec::new();
        for entry in list {
            let Some(vmid) = entry["vmid"].as_u64().and_then(|v| u32::try_from(v).ok()) else {
                continue;
            };
            let config = pve
                .config(&node.name, vmid)
                .await
                .map_err(|e| JobError::proxmox(format!("reading CT {vmid}'s configuration"), e))?;
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
            let found = FoundContainer {
                vmid: vmid as i32,
                hostname,
                mac,
                addr,
                owner,
                running,
            };
            if let Some(c) = self
                .store
                .import_container(node_id, found, by)
                .await
                .map_err(|e| JobError::store(format!("registering CT {vmid}"), e))?
            {
                imported.push(c);
            }
        }
        Ok(imported)
    }
}
