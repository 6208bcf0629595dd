//! One-shot administrative commands. Writes go through the same use cases as the API
//! (`siteward_admin::service`), so the same rules hold and each leaves one audit row naming the
//! operating-system user who ran the command (`via: cli`).

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::Subcommand;
use siteward_admin::service;
use siteward_store::{Actor, NewUser};

use crate::config::Config;
use crate::db::{self, Database, Role};

/// `siteward user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an active user (member of ldapusers).
    Add {
        /// Login name.
        name: String,
        /// Also make the user an administrator (member of sysadmins).
        #[arg(long)]
        admin: bool,
        /// E-mail address.
        #[arg(long)]
        mail: Option<String>,
        /// Given name.
        #[arg(long)]
        given_name: Option<String>,
        /// Surname.
        #[arg(long)]
        surname: Option<String>,
        /// OpenSSH public key (repeatable).
        #[arg(long = "ssh-key")]
        ssh_keys: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password.
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

/// `siteward group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group with the next free gid.
    Add {
        /// Group name.
        name: String,
    },
    /// Add a user to a group.
    AddMember {
        /// Group name.
        group: String,
        /// Login name.
        user: String,
    },
}

/// `siteward site ...`
#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Create a site.
    Add {
        /// Display name.
        name: String,
        /// The site's DNS zone, e.g. lab.internal.
        #[arg(long)]
        domain: String,
        /// Gateway address.
        #[arg(long)]
        gateway: Option<std::net::Ipv4Addr>,
        /// Netmask, e.g. 255.255.255.0.
        #[arg(long)]
        netmask: Option<std::net::Ipv4Addr>,
        /// DHCP range, first-last.
        #[arg(long)]
        dhcp_range: Option<String>,
        /// Upstream resolvers, comma-separated.
        #[arg(long)]
        forwarders: Option<String>,
    },
    /// List sites.
    List,
}

/// `siteward node ...`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Add a Proxmox node to a site.
    Add {
        /// Proxmox host name.
        name: String,
        /// Site id.
        #[arg(long)]
        site: i64,
        /// Node address.
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// API URL, e.g. https://pve1:8006/api2/json.
        #[arg(long)]
        api_url: Option<String>,
        /// API token id (user@realm!name) or user name.
        #[arg(long)]
        token_id: Option<String>,
        /// Read the token secret or password from standard input.
        #[arg(long)]
        secret_stdin: bool,
        /// Do not verify the node's TLS certificate.
        #[arg(long)]
        insecure: bool,
    },
    /// List nodes.
    List,
}

/// `siteward api-key ...`
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key for a user and print it (it is shown only this once).
    Create {
        /// Owner's login name.
        user: String,
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
    },
}

/// `siteward cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Order the certificate of an external domain now (whatever its renewal state) and install
    /// it; prints each step.
    Issue {
        /// The external domain, e.g. example.org.
        domain: String,
    },
    /// Every external domain with its certificate: names, issuer, expiry, last error.
    List,
}

/// `siteward session-secret ...`
#[derive(Debug, Subcommand)]
pub enum SessionSecretCommand {
    /// Start signing new session cookies with a fresh secret. Sessions signed by older secrets
    /// stay valid until they expire; secrets no live session can need any more are removed.
    Rotate {
        /// Also remove every older secret now, which signs everyone out (after a leak).
        #[arg(long)]
        revoke_all: bool,
    },
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password)
}

async fn open(config: &Config) -> anyhow::Result<Database> {
    let db = db::open(config, Role::Client).await?;
    db.store
        .migrate()
        .await
        .context("cannot reach or migrate the database")?;
    Ok(db)
}

/// `siteward migrate`
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = open(config).await?;
    println!("migrations applied");
    db.close().await;
    Ok(())
}

/// Runs `f` on an open database and closes it whatever happens.
async fn with_db<T>(
    config: &Config,
    f: impl AsyncFnOnce(&Database) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let db = open(config).await?;
    let result = f(&db).await;
    db.close().await;
    result
}

/// Who runs the command, as the audit log names them.
fn cli_actor() -> Actor {
    let os_user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.is_empty());
    Actor::cli(os_user)
}

/// `siteward user ...`
pub async fn user(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            admin,
            mail,
            given_name,
            surname,
            ssh_keys,
            password_stdin,
        } => {
            let password = if password_stdin {
                Some(read_password()?)
            } else {
                None
            };
            with_db(config, async |db| {
                let user = service::users::create_new(
                    &db.store,
                    &cli_actor(),
                    NewUser {
                        username: name,
                        given_name,
                        sn: surname,
                        mail,
                        ssh_public_keys: ssh_keys,
                        password,
                        admin,
                        ..Default::default()
                    },
                )
                .await?;
                println!("created user {} (uid {})", user.username, user.uid_number);
                Ok(())
            })
            .await
        }
        UserCommand::Passwd { name, .. } => {
            let password = read_password()?;
            with_db(config, async |db| {
                service::users::set_password(&db.store, &cli_actor(), &name, password).await?;
                println!("password of {} changed", name.to_ascii_lowercase());
                Ok(())
            })
            .await
        }
    }
}

/// `siteward group ...`
pub async fn group(config: &Config, cmd: GroupCommand) -> anyhow::Result<()> {
    with_db(config, async |db| {
        match cmd {
            GroupCommand::Add { name } => {
                let body = service::groups::CreateGroup {
                    cn: name,
                    description: None,
                    is_administrator: false,
                };
                let group = service::groups::create(&db.store, &cli_actor(), body).await?;
                println!("created group {} (gid {})", group.cn, group.gid_number);
            }
            GroupCommand::AddMember { group, user } => {
                service::groups::add_member(&db.store, &cli_actor(), &group, &user).await?;
                println!(
                    "{} is a member of {}",
                    user.to_ascii_lowercase(),
                    group.to_ascii_lowercase()
                );
            }
        }
        Ok(())
    })
    .await
}

/// `siteward api-key ...`
pub async fn api_key(config: &Config, cmd: ApiKeyCommand) -> anyhow::Result<()> {
    let ApiKeyCommand::Create { user, name } = cmd;
    with_db(config, async |db| {
        let created =
            service::api_keys::create_for(&db.store, &cli_actor(), &user, &name, None).await?;
        let (key, secret) = (created.key, created.secret);
        eprintln!(
            "API key {} created for {}; it is shown only once:",
            key.prefix, user
        );
        println!("{secret}");
        Ok(())
    })
    .await
}

/// `siteward cert ...`
pub async fn cert(config: &Config, cmd: CertCommand) -> anyhow::Result<()> {
    with_db(config, async |db| {
        // Domains and zones come from the snapshot.
        db.store.reload(siteward_store::Dirty::ALL).await?;
        let acme = siteward_acme::Acme::new(db.store.clone(), crate::serve::acme_settings(config));
        match cmd {
            CertCommand::Issue { domain } => {
                let d = acme.domain_by_name(&domain)?;
                let progress = |line: &str| eprintln!("{line}");
                let cert = acme.issue(d.id, chrono::Utc::now(), &progress).await?;
                println!(
                    "{}: serial {} from {}, valid until {}",
                    d.domain, cert.serial, cert.issuer, cert.not_after
                );
            }
            CertCommand::List => {
                let list = db.store.certificates().await?;
                if list.is_empty() {
                    eprintln!("no external domains");
                }
                for c in list {
                    let window = match (c.ari_window_start, c.ari_window_end) {
                        (Some(a), Some(b)) => format!(" (the CA suggests {a} to {b})"),
                        _ => String::new(),
                    };
                    let state = match (&c.not_after, &c.last_error) {
                        (_, Some(e)) => format!(
                            "last attempt failed: {e}; next attempt from {}",
                            c.next_attempt_at
                                .map(|t| t.to_string())
                                .unwrap_or_else(|| "the next pass".into())
                        ),
                        (Some(after), None) => format!(
                            "valid until {after}, renewal from {}{window}",
                            c.renew_at.map(|r| r.to_string()).unwrap_or_default()
                        ),
                        (None, None) => "no certificate yet".to_owned(),
                    };
                    println!(
                        "{}\t{}\t{}\t{}",
                        c.domain,
                        if c.names.is_empty() {
                            "-".to_owned()
                        } else {
                            c.names.join(",")
                        },
                        c.issuer.as_deref().unwrap_or("-"),
                        state
                    );
                }
            }
        }
        Ok(())
    })
    .await
}

/// `siteward session-secret ...`
pub async fn session_secret(config: &Config, cmd: SessionSecretCommand) -> anyhow::Result<()> {
    let SessionSecretCommand::Rotate { revoke_all } = cmd;
    let lifetime = chrono::Duration::hours(i64::from(config.http.session_ttl_hours.clamp(1, 8760)));
    with_db(config, async |db| {
        let removed = db
            .store
            .rotate_session_secret(chrono::Utc::now(), lifetime, revoke_all)
            .await?;
        if revoke_all {
            eprintln!(
                "new session secret in use; {removed} older secret(s) and every session removed"
            );
        } else {
            eprintln!(
                "new session secret in use; {removed} retired secret(s) removed; sessions signed \
                 before now stay valid until they expire"
            );
        }
        Ok(())
    })
    .await
}

/// `siteward site ...`
pub async fn site(config: &Config, cmd: SiteCommand) -> anyhow::Result<()> {
    with_db(config, async |db| {
        match cmd {
            SiteCommand::Add {
                name,
                domain,
                gateway,
                netmask,
                dhcp_range,
                forwarders,
            } => {
                let body = service::sites::CreateSite {
                    name,
                    internal_domain: domain,
                    dhcp_range,
                    subnet_mask: netmask,
                    gateway,
                    dns_forwarders: forwarders,
                    external_ip: None,
                };
                let site = service::sites::create(&db.store, &cli_actor(), body).await?;
                println!(
                    "created site {} ({}) with id {}",
                    site.name, site.internal_domain, site.id
                );
            }
            SiteCommand::List => {
                let page = siteward_store::resources::Page {
                    limit: 500,
                    after: None,
                };
                for s in db.store.list_sites(page).await?.items {
                    let subnet = s
                        .subnet()
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".into());
                    println!("{}\t{}\t{}\t{}", s.id, s.name, s.internal_domain, subnet);
                }
            }
        }
        Ok(())
    })
    .await
}

/// `siteward node ...`
pub async fn node(config: &Config, cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Add {
            name,
            site,
            ip,
            api_url,
            token_id,
            secret_stdin,
            insecure,
        } => {
            let secret = if secret_stdin {
                Some(read_password()?)
            } else {
                None
            };
            with_db(config, async |db| {
                let body = service::nodes::CreateNode {
                    name,
                    site_id: siteward_store::SiteId(site),
                    ipv4_address: ip,
                    api_url,
                    api_token_id_or_username: token_id,
                    api_token_secret_or_password: secret,
                    disable_tls_verification: insecure,
                    nvidia_available: false,
                };
                let node = service::nodes::create(&db.store, &cli_actor(), body).await?;
                println!("added node {} with id {}", node.name, node.id);
                Ok(())
            })
            .await
        }
        NodeCommand::List => {
            with_db(config, async |db| {
                let page = siteward_store::resources::Page {
                    limit: 500,
                    after: None,
                };
                for n in db.store.list_nodes(page, None).await?.items {
                    let ip = n
                        .ipv4_address
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "{}\t{}\tsite {}\t{}\t{}",
                        n.id,
                        n.name,
                        n.site_id,
                        ip,
                        n.api_url.as_deref().unwrap_or("-")
                    );
                }
                Ok(())
            })
            .await
        }
    }
}
