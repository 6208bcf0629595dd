//! Why a job failed, typed: the runner writes it as the job's last line (`failed: …`) and the
//! API's import answers it as a 502.

use std::time::Duration;

use siteward_store::StoreError;

use crate::proxmox::PveError;
use crate::templates::TemplateError;

/// A job's failure, in the operator's terms: each variant says which step (`during`) failed and
/// what the other side said.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// Proxmox answered an API call with an error status (PVE uses 500 for most failures:
    /// "CT 100 already exists", ...).
    #[error("{during}: Proxmox answered {status}: {message}")]
    ProxmoxApi {
        /// The step.
        during: String,
        /// HTTP status.
        status: u16,
        /// PVE's message.
        message: String,
    },
    /// Proxmox could not be used otherwise: unreachable, credentials or parameters refused, an
    /// answer we could not read.
    #[error("{during}: {source}")]
    Proxmox {
        /// The step.
        during: String,
        /// What the client saw.
        source: PveError,
    },
    /// A Proxmox task ended with an exit status other than OK.
    #[error("{during}: {exit} ({log_tail})")]
    Task {
        /// The step.
        during: String,
        /// The task.
        upid: String,
        /// Its exit status.
        exit: String,
        /// The last lines of its log, ` | `-separated.
        log_tail: String,
    },
    /// A Proxmox task or state change did not finish in time.
    #[error("{during}: no result within {}s", after.as_secs())]
    Timeout {
        /// The step.
        during: String,
        /// How long it was given.
        after: Duration,
    },
    /// The database failed.
    #[error("{during}: {source}")]
    Store {
        /// The step.
        during: String,
        /// The store's error.
        source: StoreError,
    },
    /// The template, checked again on the job's node right before it is used.
    #[error("{}", template_message(.0))]
    Template(TemplateError),
    /// The container was never made on Proxmox (no VMID recorded).
    #[error("the container has no VMID on Proxmox")]
    NoVmid,
    /// The reservation holds no address.
    #[error("no address reserved")]
    NoAddress,
    /// Every VMID tried was taken meanwhile.
    #[error("no free VMID after {0} attempts")]
    VmidsExhausted(u32),
    /// The container did not reach `running`.
    #[error("CT {vmid} is {status} instead of running")]
    NotRunning {
        /// The VMID.
        vmid: u32,
        /// The status Proxmox reports.
        status: String,
    },
    /// A certificate order failed (the ACME side's message; the binary runs those orders).
    #[error("{message}")]
    Certificate {
        /// What failed.
        message: String,
        /// The job's progress lines already say so: the runner adds no `failed:` line.
        reported: bool,
    },
    /// The server stopped before the job finished.
    #[error("interrupted by the server's shutdown")]
    Interrupted,
}

fn template_message(e: &TemplateError) -> String {
    match e {
        // Proxmox could not be asked: not a refusal of the template.
        TemplateError::Proxmox { .. } => e.to_string(),
        other => format!("template refused: {other}"),
    }
}

impl JobError {
    /// A failed Proxmox call during `during`; a failed task is a [`JobError::Task`].
    pub fn proxmox(during: impl Into<String>, e: PveError) -> Self {
        let during = during.into();
        match e {
            PveError::Api { status, message } => Self::ProxmoxApi {
                during,
                status,
                message,
            },
            PveError::Task { upid, exit, log } => {
                let tail: Vec<&str> = log.iter().rev().take(3).map(String::as_str).collect();
                Self::Task {
                    during,
                    upid,
                    exit,
                    log_tail: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
                }
            }
            source => Self::Proxmox { during, source },
        }
    }

    /// A Proxmox task waited for at most `after`, failed during `during`.
    pub fn task(during: impl Into<String>, e: PveError, after: Duration) -> Self {
        match e {
            PveError::Timeout(_) => Self::Timeout {
                during: during.into(),
                after,
            },
            other => Self::proxmox(during, other),
        }
    }

    /// A store error during `during`.
    pub fn store(during: impl Into<String>, source: StoreError) -> Self {
        Self::Store {
            during: during.into(),
            source,
        }
    }

    /// Whether the job's lines already describe this failure.
    pub fn reported(&self) -> bool {
        matches!(self, Self::Certificate { reported: true, .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_task_names_the_step_its_exit_and_the_end_of_its_log() {
        let e = JobError::proxmox(
            "starting CT 100",
            PveError::Task {
                upid: "UPID:pve1:1".into(),
                exit: "startup for container failed".into(),
                log: ["a", "b", "c", "d"].map(String::from).to_vec(),
            },
        );
        assert_eq!(
            e.to_string(),
            "starting CT 100: startup for container failed (b | c | d)"
        );
    }

    #[test]
    fn api_errors_keep_status_and_message_and_timeouts_their_limit() {
        let e = JobError::proxmox(
            "allocating a VMID",
            PveError::Api {
                status: 500,
                message: "boom".into(),
            },
        );
        assert!(matches!(e, JobError::ProxmoxApi { status: 500, .. }));
        assert_eq!(
            e.to_string(),
            "allocating a VMID: Proxmox answered 500: boom"
        );
        let t = JobError::task(
            "destroying CT 7",
            PveError::Timeout("UPID:x".into()),
            Duration::from_secs(600),
        );
        assert_eq!(t.to_string(), "destroying CT 7: no result within 600s");
    }

    #[test]
    fn a_refused_template_says_so_and_an_unreachable_node_does_not() {
        let refused = JobError::Template(TemplateError::NoSuchNode);
        assert!(refused.to_string().starts_with("template refused: "));
        let unreachable = JobError::Template(TemplateError::Proxmox {
            node: "pve1".into(),
            error: "no answer in time".into(),
        });
        assert_eq!(
            unreachable.to_string(),
            "checking the template on node pve1: no answer in time"
        );
        assert!(!unreachable.reported());
    }
}
