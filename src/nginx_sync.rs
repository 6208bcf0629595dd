//! `siteward nginx-sync`: keeps an edge NGINX's configuration in step with siteward. Fetches
//! `/api/v1/sites/{id}/nginx.conf` (with `If-None-Match`, so an unchanged configuration costs a
//! 304), writes it next to the target, checks that file with `nginx -t`, renames it into place
//! (atomic), and reloads NGINX. When the check fails the target is never touched, so a bad
//! render never reaches a reload.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

/// `siteward nginx-sync` arguments.
#[derive(Debug, Args)]
pub struct NginxSync {
    /// Site whose edge this is.
    #[arg(long)]
    pub site: i64,
    /// Base URL of siteward's HTTP API, e.g. http://10.0.0.5:8080.
    #[arg(long)]
    pub url: String,
    /// The configuration file NGINX runs with.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// File holding an administrator's API key [default: $SITEWARD_API_KEY].
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Render option `KEY=VALUE` (listen, http_port, https_port, cert_dir, temp_dir,
    /// modules_include, siteward_url); repeatable.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// The NGINX binary.
    #[arg(long, default_value = "nginx")]
    pub nginx: String,
    /// Extra argument for every NGINX call (e.g. `-p`, a prefix, `-g`, directives); repeatable.
    #[arg(long = "nginx-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub nginx_args: Vec<String>,
    /// Check but do not reload.
    #[arg(long)]
    pub no_reload: bool,
}

/// What a run did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Installed,
}

/// Runs one sync.
pub async fn run(args: NginxSync) -> anyhow::Result<()> {
    let key = match &args.api_key_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the API key from {}", p.display()))?
            .trim()
            .to_owned(),
        None => std::env::var("SITEWARD_API_KEY")
            .context("give --api-key-file or set SITEWARD_API_KEY")?,
    };
    let previous = match std::fs::read_to_string(&args.out) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", args.out.display())),
    };
    let mut query = Vec::new();
    for o in &args.options {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("--option {o}: expected KEY=VALUE"))?;
        query.push((k.to_owned(), v.to_owned()));
    }
    let url = format!(
        "{}/api/v1/sites/{}/nginx.conf",
        args.url.trim_end_matches('/'),
        args.site
    );
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut req = client.get(&url).bearer_auth(&key).query(&query);
    if let Some(p) = &previous {
        req = req.header(
            reqwest::header::IF_NONE_MATCH,
            siteward_admin::edge::nginx::etag(p),
        );
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = res.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        println!("{}: unchanged", args.out.display());
        return Ok(());
    }
    let body = res.text().await.context("reading the configuration")?;
    if !status.is_success() {
        bail!("{url} answered {status}: {}", body.trim());
    }
    match install(&args, previous.as_deref(), &body)? {
        Outcome::Unchanged => println!("{}: unchanged", args.out.display()),
        Outcome::Installed => println!("{}: installed and loaded", args.out.display()),
    }
    Ok(())
}

fn nginx(args: &NginxSync, conf: &Path, extra: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut cmd = std::process::Command::new(&args.nginx);
    cmd.args(&args.nginx_args).arg("-c").arg(conf).args(extra);
    cmd.output()
        .with_context(|| format!("cannot run {}", args.nginx))
}

/// The directory `path` is in.
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The candidate file next to `path` (same directory, so relative includes resolve alike).
fn candidate(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = dir_of(path);
    let name = path
        .file_name()
        .context("--out must name a file")?
        .to_string_lossy()
        .into_owned();
    Ok(dir.join(format!(".{name}.siteward-{}", std::process::id())))
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Renames the checked candidate `tmp` over `path`, durably.
fn put_in_place(tmp: &Path, path: &Path) -> anyhow::Result<()> {
    let dir = dir_of(path);
    std::fs::rename(tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Make the rename durable; a failure here loses nothing that is not already written.
        if let Err(e) = d.sync_all() {
            tracing::debug!(error = %e, "syncing the directory failed");
        }
    }
    Ok(())
}

/// Writes `text` to the candidate `tmp`, has NGINX check it, and renames it over `--out`.
fn check_and_place(args: &NginxSync, tmp: &Path, text: &str) -> anyhow::Result<()> {
    write_file(tmp, text)?;
    let check = nginx(args, tmp, &["-t", "-q"])?;
    if !check.status.success() {
        let why = String::from_utf8_lossy(&check.stderr).trim().to_owned();
        bail!("nginx -t rejected the new configuration (the installed file is unchanged): {why}");
    }
    put_in_place(tmp, &args.out)
}

fn install(args: &NginxSync, previous: Option<&str>, text: &str) -> anyhow::Result<Outcome> {
    if previous == Some(text) {
        return Ok(Outcome::Unchanged);
    }
    // Checked before it replaces anything: a bad configuration is never live, not even for the
    // moment a rollback would take. A candidate that does not make it into place is removed.
    let tmp = candidate(&args.out)?;
    let placed = check_and_place(args, &tmp, text);
    if placed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    placed?;
    if !args.no_reload {
        let reload = nginx(args, &args.out, &["-s", "reload"])?;
        if !reload.status.success() {
            bail!(
                "the configuration is installed but reloading NGINX failed: {}",
                String::from_utf8_lossy(&reload.stderr).trim()
            );
        }
    }
    Ok(Outcome::Installed)
}
