//! The end-to-end harness: a fresh database per test on the server at `DATABASE_URL`, and the
//! real `siteward` binary started on port-0 listeners, its bound addresses read back from its
//! `listening` log line, stopped with SIGTERM.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use siteward_store::{HashCost, SecretBox, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Errors in tests are boxed; a failing step says what failed.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The server tests create databases on.
pub fn base_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The secret key every test server uses, so tests can decrypt what the server stored.
pub const TEST_KEY: [u8; 32] = [9u8; 32];

pub fn test_key_base64() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(TEST_KEY)
}

/// Cheap argon2 for test-side user creation (the server verifies whatever cost is stored).
pub const CHEAP: HashCost = HashCost {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

/// A database of its own for one test, dropped at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: PgConnectOptions,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub async fn new() -> TestResult<Self> {
        let base = base_url();
        let admin: PgConnectOptions = base.parse()?;
        let name = format!(
            "siteward_e2e_{}_{}_{:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let mut conn = PgConnection::connect_with(&admin).await.map_err(|e| {
            format!(
                "cannot reach PostgreSQL at {base} (set DATABASE_URL, or run scripts/test): {e}"
            )
        })?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let mut url = url::Url::parse(&base)?;
        url.set_path(&format!("/{name}"));
        Ok(Self {
            name,
            url: url.to_string(),
            admin,
        })
    }

    /// A pool on this database.
    pub async fn pool(&self) -> TestResult<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await?)
    }

    /// A store on this database (same key as the test servers), migrated.
    pub async fn store(&self) -> TestResult<Store> {
        let store = Store::from_pool(self.pool().await?, SecretBox::from_key(&TEST_KEY), CHEAP);
        store.migrate().await?;
        Ok(store)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a short-lived one on its own thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Addresses the server reported.
#[derive(Debug, Clone, Default)]
pub struct Addrs {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub ldap: Option<SocketAddr>,
    pub ldaps: Option<SocketAddr>,
    pub dns: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--database-url`; `None` runs the embedded PostgreSQL.
    pub database_url: Option<String>,
    /// Data directory; a fresh temporary one when `None`.
    pub data_dir: Option<PathBuf>,
    /// Extra arguments after `serve`.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Run as this uid/gid (only when root).
    pub run_as: Option<(u32, u32)>,
    /// Wait for /readyz 200.
    pub wait_ready: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            database_url: None,
            data_dir: None,
            args: Vec::new(),
            env: Vec::new(),
            run_as: None,
            wait_ready: true,
        }
    }
}

/// A running `siteward serve`.
pub struct Server {
    pub addrs: Addrs,
    pub data_dir: PathBuf,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    _tmp: Option<tempfile::TempDir>,
    /// The copy of the binary a `run_as` server runs.
    _bin_dir: Option<tempfile::TempDir>,
    pub db: Option<TestDb>,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_siteward")
}

/// A copy of the siteward binary in a fresh directory every user may enter and run it from.
fn reachable_copy_of_binary() -> TestResult<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let copy = dir.path().join("siteward");
    std::fs::copy(binary(), &copy)?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

fn parse_addr(v: &serde_json::Value) -> Option<SocketAddr> {
    v.as_str()?.parse().ok()
}

impl Server {
    /// A server on a fresh test database with every listener on port 0.
    pub async fn start() -> TestResult<Self> {
        Self::start_on_fresh_db(Vec::new(), Vec::new()).await
    }

    /// A server on a fresh test database with extra `args` and `env`.
    pub async fn start_on_fresh_db(
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> TestResult<Self> {
        let db = TestDb::new().await?;
        let mut server = Self::start_with(ServerOptions {
            database_url: Some(db.url.clone()),
            args,
            env,
            ..Default::default()
        })
        .await?;
        server.db = Some(db);
        Ok(server)
    }

    /// A server as `options` say.
    pub async fn start_with(options: ServerOptions) -> TestResult<Self> {
        let (tmp, data_dir) = match &options.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let tmp = tempfile::tempdir()?;
                let dir = tmp.path().join("data");
                (Some(tmp), dir)
            }
        };
        // Another user cannot always reach the build's binary (a checkout under a private
        // directory, as `mktemp -d` makes): it runs a copy from a directory open to it.
        let bin_dir = match options.run_as {
            Some(_) => Some(reachable_copy_of_binary()?),
            None => None,
        };
        let program = bin_dir
            .as_ref()
            .map_or_else(|| PathBuf::from(binary()), |d| d.path().join("siteward"));
        let mut cmd = Command::new(&program);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            // Every listener on a free port, unless the test gives its own.
            .args(
                ["--http", "--ldap", "--dns", "--metrics"]
                    .into_iter()
                    .filter(|flag| !options.args.iter().any(|a| a == flag))
                    .flat_map(|flag| [flag, "127.0.0.1:0"]),
            )
            .args(["--log-format", "json"])
            .args(&options.args)
            .env("RUST_LOG", "info,siteward=debug")
            .env("SITEWARD_SECRET_KEY", test_key_base64())
            // No automatic orders against a real CA from tests; the ACME tests opt in.
            .env("SITEWARD_ACME__ENABLED", "false")
            .env_remove("DATABASE_URL")
            .env_remove("SITEWARD_TEST_LOGS")
            .envs(options.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(url) = &options.database_url {
            cmd.arg("--database-url").arg(url);
        }
        if let Some((uid, gid)) = options.run_as {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn()?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for stream in [
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if std::env::var_os("SITEWARD_TEST_LOGS").is_some() {
                        eprintln!("[siteward] {line}");
                    }
                    if let Ok(mut l) = logs.lock() {
                        l.push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let addrs = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = rx.recv().await {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["message"] == "listening" {
                    return Some(Addrs {
                        http: parse_addr(&v["http"]),
                        https: parse_addr(&v["https"]),
                        ldap: parse_addr(&v["ldap"]),
                        ldaps: parse_addr(&v["ldaps"]),
                        dns: parse_addr(&v["dns"]),
                        metrics: parse_addr(&v["metrics"]),
                    });
                }
            }
            None
        })
        .await;
        let addrs = match addrs {
            Ok(Some(a)) => a,
            _ => {
                let _ = child.start_kill();
                let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
                return Err(
                    format!("siteward did not report its listeners; output:\n{logs}").into(),
                );
            }
        };
        let server = Server {
            addrs,
            data_dir,
            child,
            logs,
            _tmp: tmp,
            _bin_dir: bin_dir,
            db: None,
        };
        if options.wait_ready {
            server.wait_ready(Duration::from_secs(60)).await?;
        }
        Ok(server)
    }

    /// `http://<metrics listener>` (`/metrics`, `/readyz` with reasons).
    pub fn metrics_url(&self, path: &str) -> String {
        let addr = self
            .addrs
            .metrics
            .map(|a| a.to_string())
            .unwrap_or_default();
        format!("http://{addr}{path}")
    }

    /// The value of the sample `name` (with its labels, if any) on the metrics listener's
    /// `/metrics`, `None` when it is not there; and the whole text, for messages.
    pub async fn metric(&self, name: &str) -> TestResult<(Option<f64>, String)> {
        let text = reqwest::get(self.metrics_url("/metrics"))
            .await?
            .text()
            .await?;
        let prefix = format!("{name} ");
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok());
        Ok((value, text))
    }

    /// `http://<http listener>`.
    pub fn url(&self, path: &str) -> String {
        let addr = self.addrs.http.map(|a| a.to_string()).unwrap_or_default();
        format!("http://{addr}{path}")
    }

    /// Polls /readyz until 200.
    pub async fn wait_ready(&self, timeout: Duration) -> TestResult {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("not ready within {timeout:?}; logs:\n{}", self.logs()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the server printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the exit status.
    pub async fn stop_within(mut self, timeout: Duration) -> TestResult<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            )?;
        }
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| {
                format!(
                    "siteward did not exit within {timeout:?}; logs:\n{}",
                    self.logs()
                )
            })??;
        Ok(status)
    }

    /// SIGTERM, expecting exit 0 within 10 s.
    pub async fn stop(self) -> TestResult {
        let logs = self.logs.clone();
        let status = self.stop_within(Duration::from_secs(10)).await?;
        if !status.success() {
            let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
            return Err(format!("siteward exited with {status}; logs:\n{logs}").into());
        }
        Ok(())
    }

    /// SIGKILL: a crash.
    pub async fn kill(mut self) -> TestResult {
        self.child.kill().await?;
        Ok(())
    }
}

/// Runs the `siteward` binary with `args` (and `stdin`), returning (status, stdout, stderr).
pub async fn run_cli(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> TestResult<(std::process::ExitStatus, String, String)> {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("DATABASE_URL")
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).await?;
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Whether any postgres process has `dir` in its command line (the embedded cluster's -D).
pub fn postgres_running_in(dir: &Path) -> bool {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .any(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            comm.trim() == "postgres" && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
}

/// Whether the postgres of `dir` is gone within a few seconds (pg_ctl stop waited for the
/// postmaster; its last children may still be exiting on a loaded machine).
pub async fn postgres_gone(dir: &Path) -> bool {
    for _ in 0..100 {
        if !postgres_running_in(dir) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Installs a tracing subscriber once, for tests that want server-side logs in-process.
pub fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}
