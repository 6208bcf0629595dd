//! The embedded PostgreSQL: when no database URL is configured, siteward runs its own cluster
//! from the machine's PostgreSQL server binaries, in `<data-dir>/postgres`, listening only on a
//! Unix socket inside it.
//!
//! - Binaries: `pg_ctl`, `initdb` and `postgres` found on `PATH` (following symlinks) or under
//!   `/usr/lib/postgresql/<version>/bin` (the highest version).
//! - PostgreSQL refuses to run as root. As root, the cluster runs as the `postgres` system user;
//!   if that user cannot reach `<data-dir>` (for example under `/root`, mode 0700), the cluster
//!   lives in `/var/lib/siteward/clusters/<hash>` and `<data-dir>/postgres` is a symlink to it.
//! - `initdb` runs into a temporary directory that is renamed into place, so an interrupted first
//!   start leaves nothing half-made.
//! - A stale `postmaster.pid` (its process gone or not a postgres) is removed; a postmaster still
//!   running from a siteward that crashed is adopted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Errors of the embedded database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// No PostgreSQL server binaries on this machine.
    #[error(
        "no PostgreSQL server binaries found (looked for pg_ctl, initdb and postgres on PATH and \
         under /usr/lib/postgresql/*/bin). Install them with `apt-get install postgresql` \
         (Debian/Ubuntu), or point siteward at an existing server with DATABASE_URL or \
         --database-url"
    )]
    NoBinaries,
    /// Running as root and no unprivileged user to run PostgreSQL as.
    #[error(
        "siteward runs as root, PostgreSQL refuses to, and there is no `postgres` system user to \
         run it as. Create one (`adduser --system --group postgres`, or `apt-get install \
         postgresql`), run siteward as an ordinary user, or set DATABASE_URL"
    )]
    NoUnprivilegedUser,
    /// A file-system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A PostgreSQL tool failed.
    #[error("{tool} failed ({status}): {output}")]
    Tool {
        /// Which tool.
        tool: String,
        /// Its exit status.
        status: String,
        /// What it printed (last lines).
        output: String,
    },
    /// The started server did not accept a connection.
    #[error("embedded PostgreSQL started but does not accept connections: {0}")]
    Connect(#[from] sqlx::Error),
}

type Result<T> = std::result::Result<T, EmbeddedError>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + 'a {
    move |source| EmbeddedError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// The database name siteward uses inside the embedded cluster.
pub const DATABASE: &str = "siteward";
/// The superuser `initdb` creates.
pub const SUPERUSER: &str = "siteward";

/// A running embedded cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    cluster: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<(u32, u32)>,
}

/// Where the server binaries are: `PATH` first, then Debian's versioned directories.
pub fn find_binaries() -> Result<PathBuf> {
    let has_all = |dir: &Path| {
        ["pg_ctl", "initdb", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let pg_ctl = dir.join("pg_ctl");
            if let Ok(real) = std::fs::canonicalize(&pg_ctl) {
                if let Some(parent) = real.parent() {
                    if has_all(parent) {
                        return Ok(parent.to_path_buf());
                    }
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_all(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(EmbeddedError::NoBinaries)
}

/// The uid and gid to run PostgreSQL as: `None` when not root.
fn unprivileged_user() -> Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        _ => Err(EmbeddedError::NoUnprivilegedUser),
    }
}

/// Whether `uid`/`gid` can traverse every directory from `/` down to `dir`.
fn reachable_by(dir: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut path = PathBuf::from("/");
    for part in dir.components().skip(1) {
        let Ok(meta) = std::fs::metadata(&path) else {
            return false;
        };
        let mode = meta.mode();
        let ok = if meta.uid() == uid {
            mode & 0o100 != 0
        } else if meta.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return false;
        }
        path.push(part);
    }
    true
}

fn short_hash(text: &str) -> String {
    // FNV-1a, 64 bit: a stable directory name, not a security boundary.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io("chown", path))?;
    }
    Ok(())
}

fn mkdir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !path.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(io("create directory", path))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", path))?;
    chown(path, owner)
}

impl EmbeddedPostgres {
    /// Starts (creating on first use, or adopting when already running) the cluster of
    /// `data_dir`. The caller must hold the data directory's lock.
    pub async fn start(data_dir: &Path) -> Result<Self> {
        let bin_dir = find_binaries()?;
        let run_as = unprivileged_user()?;
        let data_dir = std::path::absolute(data_dir).map_err(io("resolve", data_dir))?;
        // The data directory must be traversable (not listable) by the postgres user.
        mkdir(
            &data_dir,
            if run_as.is_some() { 0o711 } else { 0o700 },
            None,
        )?;
        let link = data_dir.join("postgres");
        let cluster = match run_as {
            Some((uid, gid)) if !reachable_by(&data_dir, uid, gid) => {
                let root = PathBuf::from("/var/lib/siteward");
                mkdir(&root, 0o711, None)?;
                mkdir(&root.join("clusters"), 0o711, None)?;
                let dir = root
                    .join("clusters")
                    .join(short_hash(&data_dir.display().to_string()));
                mkdir(&dir, 0o700, run_as)?;
                if std::fs::symlink_metadata(&link).is_err() {
                    std::os::unix::fs::symlink(&dir, &link).map_err(io("symlink", &link))?;
                }
                tracing::info!(cluster = %dir.display(), "data directory not reachable by the postgres user; cluster kept outside it");
                dir
            }
            _ => {
                mkdir(&link, 0o700, run_as)?;
                link
            }
        };
        let mut socket_dir = cluster.join("run");
        // Unix socket paths are limited to 107 bytes.
        if socket_dir.join(".s.PGSQL.5432").as_os_str().len() > 100 {
            socket_dir = std::env::temp_dir().join(format!(
                "siteward-pg-{}",
                short_hash(&cluster.display().to_string())
            ));
        }
        let pg = EmbeddedPostgres {
            bin_dir,
            cluster,
            socket_dir,
            run_as,
        };
        pg.init_if_needed()?;
        mkdir(&pg.socket_dir, 0o700, run_as)?;
        pg.write_settings()?;
        if pg.running()? {
            tracing::info!(cluster = %pg.cluster.display(), "adopting the embedded PostgreSQL that is already running");
        } else {
            pg.remove_stale_pid_file()?;
            pg.wait_for_orphans().await;
            let log = pg.cluster.join("postgres.log");
            let (log_s, cluster_s) = (log.display().to_string(), pg.cluster.display().to_string());
            pg.tool(
                "pg_ctl",
                &[
                    "start", "-w", "-t", "60", "-s", "-D", &cluster_s, "-l", &log_s,
                ],
            )?;
            tracing::info!(cluster = %pg.cluster.display(), "embedded PostgreSQL started");
        }
        pg.create_database().await?;
        Ok(pg)
    }

    /// Connection options for siteward's database.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .username(SUPERUSER)
            .database(DATABASE)
    }

    /// Stops the cluster (fast shutdown: open sessions are ended, everything committed is kept).
    pub fn stop(&self) -> Result<()> {
        let cluster = self.cluster.display().to_string();
        self.tool(
            "pg_ctl",
            &["stop", "-w", "-t", "8", "-s", "-m", "fast", "-D", &cluster],
        )?;
        tracing::info!("embedded PostgreSQL stopped");
        Ok(())
    }

    /// The cluster's directory.
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster
    }

    fn tool(&self, name: &str, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = Command::new(self.bin_dir.join(name));
        cmd.args(args).current_dir(&self.cluster).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            // std drops supplementary groups when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().map_err(io("run", &self.bin_dir.join(name)))?;
        if !out.status.success() {
            let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stdout));
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            let mut tail: Vec<&str> = tail.into_iter().rev().collect();
            let log = if name == "pg_ctl" && args.first() == Some(&"start") {
                let text =
                    std::fs::read_to_string(self.cluster.join("postgres.log")).unwrap_or_default();
                let lines: Vec<&str> = text.lines().rev().take(5).collect();
                lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
            } else {
                String::new()
            };
            if !log.is_empty() {
                tail.push("postgres.log:");
                tail.push(&log);
            }
            return Err(EmbeddedError::Tool {
                tool: name.into(),
                status: out.status.to_string(),
                output: tail.join(" | "),
            });
        }
        Ok(out)
    }

    fn init_if_needed(&self) -> Result<()> {
        if self.cluster.join("PG_VERSION").is_file() {
            return Ok(());
        }
        let parent = self.cluster.parent().unwrap_or(Path::new("/"));
        let staging = parent.join(format!(
            ".postgres-init-{}",
            short_hash(&self.cluster.display().to_string())
        ));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io("remove", &staging))?;
        }
        mkdir(&staging, 0o700, self.run_as)?;
        // initdb runs with the cluster as working directory: it must exist.
        let staging_s = staging.display().to_string();
        let mut cmd = Command::new(self.bin_dir.join("initdb"));
        cmd.args([
            "-D",
            &staging_s,
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-instructions",
        ])
        .current_dir(&staging)
        .env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let out = cmd
            .output()
            .map_err(io("run", &self.bin_dir.join("initdb")))?;
        if !out.status.success() {
            return Err(EmbeddedError::Tool {
                tool: "initdb".into(),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        // Move the contents into the (possibly symlinked, already created) cluster directory.
        for entry in std::fs::read_dir(&staging).map_err(io("read", &staging))? {
            let entry = entry.map_err(io("read", &staging))?;
            let target = self.cluster.join(entry.file_name());
            std::fs::rename(entry.path(), &target).map_err(io("move", &target))?;
        }
        std::fs::remove_dir(&staging).map_err(io("remove", &staging))?;
        let conf = self.cluster.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(io("read", &conf))?;
        text.push_str(
            "\n# Written by siteward on every start.\ninclude_if_exists = 'siteward.conf'\n",
        );
        std::fs::write(&conf, text).map_err(io("write", &conf))?;
        tracing::info!(cluster = %self.cluster.display(), "embedded PostgreSQL cluster initialized");
        Ok(())
    }

    fn write_settings(&self) -> Result<()> {
        let sock = self.socket_dir.display().to_string().replace('\'', "''");
        let text = format!(
            "# Managed by siteward; rewritten on every start.\n\
             listen_addresses = ''\n\
             unix_socket_directories = '{sock}'\n\
             unix_socket_permissions = 0700\n\
             max_connections = 100\n"
        );
        let path = self.cluster.join("siteward.conf");
        std::fs::write(&path, text).map_err(io("write", &path))?;
        chown(&path, self.run_as)
    }

    fn running(&self) -> Result<bool> {
        let pid_file = self.cluster.join("postmaster.pid");
        let Some(pid) = read_pid(&pid_file) else {
            return Ok(false);
        };
        Ok(is_our_postmaster(pid, &self.cluster))
    }

    fn remove_stale_pid_file(&self) -> Result<()> {
        // The postmaster is not running (checked by the caller), so these lock files are stale:
        // their pid may even still exist as an unreaped zombie, which PostgreSQL takes for alive.
        for path in [
            self.cluster.join("postmaster.pid"),
            self.socket_dir.join(".s.PGSQL.5432.lock"),
            self.socket_dir.join(".s.PGSQL.5432"),
        ] {
            if std::fs::symlink_metadata(&path).is_ok() {
                tracing::warn!(path = %path.display(), "removing a stale lock file left by a crash");
                std::fs::remove_file(&path).map_err(io("remove", &path))?;
            }
        }
        Ok(())
    }

    /// After a postmaster was killed, its children keep the shared memory until they notice;
    /// a new postmaster refuses to start meanwhile. Wait for them (they work in the cluster
    /// directory, which identifies them), and end the ones that linger.
    async fn wait_for_orphans(&self) {
        let Ok(cluster) = std::fs::canonicalize(&self.cluster) else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let orphans = processes_in(&cluster);
            if orphans.is_empty() {
                return;
            }
            if std::time::Instant::now() >= deadline {
                for pid in orphans {
                    tracing::warn!(pid, "ending a leftover process of the crashed PostgreSQL");
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn create_database(&self) -> Result<()> {
        let mut last = None;
        // pg_ctl -w has waited for readiness; retry briefly for an adopted server still starting.
        for _ in 0..50 {
            match self.connect_options().database("postgres").connect().await {
                Ok(mut conn) => {
                    let exists: Option<i32> =
                        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                            .bind(DATABASE)
                            .fetch_optional(&mut conn)
                            .await?;
                    if exists.is_none() {
                        sqlx::query(&format!("CREATE DATABASE {DATABASE}"))
                            .execute(&mut conn)
                            .await?;
                    }
                    conn.close().await?;
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(EmbeddedError::Connect(
            last.unwrap_or(sqlx::Error::PoolTimedOut),
        ))
    }
}

/// Live postgres processes whose working directory is `cluster`.
fn processes_in(cluster: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            comm.trim() == "postgres"
                && std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == cluster)
        })
        .collect()
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a live postmaster of `cluster`: not a reused pid, not a zombie (a zombie
/// keeps its name but has no command line).
fn is_our_postmaster(pid: i32, cluster: &Path) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let cluster = cluster.as_os_str().as_encoded_bytes();
    comm.trim() == "postgres" && args.windows(2).any(|w| w[0] == b"-D" && w[1] == cluster)
}
