//! A real NGINX (Debian `nginx-light` with `libnginx-mod-stream`) in a temporary prefix on
//! loopback ports: checked with `nginx -t`, started, reloaded by SIGHUP, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::harness::TestResult;

/// Runs NGINX in a temporary prefix; killed on drop.
pub struct Nginx {
    pub prefix: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    fn globals(prefix: &Path) -> String {
        format!(
            "pid {p}/nginx.pid; error_log {p}/error.log warn;",
            p = prefix.display()
        )
    }

    /// `nginx -t` on `conf`: Ok, or NGINX's complaint.
    pub fn check(prefix: &Path, conf: &Path) -> TestResult<Result<(), String>> {
        let out = std::process::Command::new("nginx")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .arg("-g")
            .arg(Self::globals(prefix))
            .arg("-t")
            .output()
            .map_err(|e| {
                format!("cannot run nginx (apt-get install nginx-light libnginx-mod-stream): {e}")
            })?;
        Ok(if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        })
    }

    pub async fn start(prefix: &Path, conf: &Path, wait_for: u16) -> TestResult<Self> {
        if let Err(e) = Self::check(prefix, conf)? {
            return Err(format!("nginx -t rejected the rendered configuration:\n{e}").into());
        }
        let child = Command::new("nginx")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .arg("-g")
            .arg(format!("daemon off; {}", Self::globals(prefix)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let nginx = Nginx {
            prefix: prefix.to_owned(),
            child: Some(child),
        };
        let mut nginx = nginx;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // A master that could not bind (a port another process took since it was picked)
            // exits: say so rather than let the test talk to whoever holds the port.
            if let Some(status) = nginx
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("nginx exited ({status}): {}", nginx.error_log()).into());
            }
            if TcpStream::connect(("127.0.0.1", wait_for)).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("nginx did not listen: {}", nginx.error_log()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Listening is the master's doing; wait until a worker runs (its pid file is written
        // once the configuration is applied) before the first request.
        let pid_file = prefix.join("nginx.pid");
        while !pid_file.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(status) = nginx
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            return Err(format!("nginx exited ({status}): {}", nginx.error_log()).into());
        }
        Ok(nginx)
    }

    /// Checks `conf`, then has the running master load it (SIGHUP) and waits until its workers
    /// were replaced.
    pub async fn reload(&self, conf: &Path) -> TestResult {
        if let Err(e) = Self::check(&self.prefix, conf)? {
            return Err(format!("nginx -t rejected the configuration:\n{e}").into());
        }
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .and_then(|p| i32::try_from(p).ok())
            .ok_or("nginx is not running")?;
        let workers = || {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default()
        };
        let before = workers();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = workers();
            // New workers started and the old ones are gone.
            if !now.trim().is_empty()
                && now
                    .split_whitespace()
                    .all(|w| !before.split_whitespace().any(|b| b == w))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("nginx did not reload: {}", self.error_log()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }

    pub fn globals_arg(&self) -> String {
        Self::globals(&self.prefix)
    }
}

impl Drop for Nginx {
    /// SIGTERM first: the master stops its workers. (SIGKILL alone would orphan the workers,
    /// which keep running and holding their ports.)
    fn drop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Some(pid) = c.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = c.start_kill();
    }
}
