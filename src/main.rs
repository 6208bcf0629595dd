//! `siteward`: the binary. Configuration, command line and wiring only; everything else lives in
//! the library crates (see `docs/ARCHITECTURE.md`).

mod commands;
mod config;
mod db;
mod nginx_sync;
mod serve;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc: per-thread free lists make the many small, short-lived allocations of a request
/// (headers, futures, buffers) a few instructions each (see `bench/auth-profile`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Identity and naming plane of a self-hosted Proxmox container cluster.
#[derive(Debug, Parser)]
#[command(name = "siteward", version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (key file, embedded database, TLS material) [default: ./siteward-data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<String>,
    /// PostgreSQL URL; without one, an embedded PostgreSQL runs in the data directory.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Log format: text or json.
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every listener (HTTP, LDAP, DNS) in one process.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(commands::UserCommand),
    /// Manage groups.
    #[command(subcommand)]
    Group(commands::GroupCommand),
    /// Manage API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(commands::ApiKeyCommand),
    /// Manage the secrets that sign browser session cookies.
    #[command(subcommand, name = "session-secret")]
    SessionSecret(commands::SessionSecretCommand),
    /// Certificates of external domains (ACME).
    #[command(subcommand)]
    Cert(commands::CertCommand),
    /// Manage sites.
    #[command(subcommand)]
    Site(commands::SiteCommand),
    /// Manage Proxmox nodes.
    #[command(subcommand)]
    Node(commands::NodeCommand),
    /// Fetch a site's edge NGINX configuration, install it atomically, check it with
    /// `nginx -t` (rolling back on failure) and reload NGINX.
    #[command(name = "nginx-sync")]
    NginxSync(nginx_sync::NginxSync),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// HTTP listener address, or `off` [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// HTTPS listener address, or `off` [default: off]; certificate from `http.tls_cert`/`_key`
    /// or self-signed.
    #[arg(long, value_name = "ADDR")]
    https: Option<String>,
    /// LDAP listener address, or `off` [default: 127.0.0.1:3389].
    #[arg(long, value_name = "ADDR")]
    ldap: Option<String>,
    /// LDAPS listener address, or `off` [default: off].
    #[arg(long, value_name = "ADDR")]
    ldaps: Option<String>,
    /// DNS listener address (UDP and TCP), or `off` [default: 127.0.0.1:5300].
    #[arg(long, value_name = "ADDR")]
    dns: Option<String>,
    /// Metrics listener address (`/metrics`, `/readyz` with reasons), or `off` [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

impl Cli {
    fn flags(&self) -> Vec<(&'static str, String)> {
        let mut flags = Vec::new();
        let mut push = |key: &'static str, value: &Option<String>| {
            if let Some(v) = value {
                flags.push((key, v.clone()));
            }
        };
        push("data_dir", &self.data_dir);
        push("database_url", &self.database_url);
        push("log_format", &self.log_format);
        if let Command::Serve(args) = &self.command {
            push("http.listen", &args.http);
            push("http.tls_listen", &args.https);
            push("ldap.listen", &args.ldap);
            push("ldap.ldaps_listen", &args.ldaps);
            push("dns.listen", &args.dns);
            push("http.metrics_listen", &args.metrics);
        }
        flags
    }
}

fn init_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let flags = cli.flags();
    let config = match config::load(cli.config.as_deref(), std::env::vars(), &flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("siteward: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format);
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("siteward: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(_) => serve::run(config).await,
            Command::Migrate => commands::migrate(&config).await,
            Command::User(cmd) => commands::user(&config, cmd).await,
            Command::Group(cmd) => commands::group(&config, cmd).await,
            Command::ApiKey(cmd) => commands::api_key(&config, cmd).await,
            Command::SessionSecret(cmd) => commands::session_secret(&config, cmd).await,
            Command::Cert(cmd) => commands::cert(&config, cmd).await,
            Command::Site(cmd) => commands::site(&config, cmd).await,
            Command::Node(cmd) => commands::node(&config, cmd).await,
            Command::NginxSync(args) => nginx_sync::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("siteward: {e:#}");
            ExitCode::FAILURE
        }
    }
}
