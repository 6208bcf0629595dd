//! What a user asks a job for: a container creation, a lifecycle operation, and the rules of
//! their fields that the API checks before any job starts.

use std::collections::BTreeMap;

use crate::api::error::ApiError;
use crate::templates::TemplateError;

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
pub fn environment_problem(env: &BTreeMap<String, String>) -> Option<String> {
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
pub(super) fn env_option(env: &BTreeMap<String, String>) -> Option<String> {
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
