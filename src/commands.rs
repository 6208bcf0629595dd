//! One-shot administrative commands. They call the same store functions as the API.

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::Subcommand;
use siteward_store::NewUser;

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
                let user = db
                    .store
                    .create_user(NewUser {
                        username: name,
                        given_name,
                        sn: surname,
                        mail,
                        ssh_public_keys: ssh_keys,
                        password,
                        admin,
                        ..Default::default()
                    })
                    .await?;
                println!("created user {} (uid {})", user.username, user.uid_number);
                Ok(())
            })
            .await
        }
        UserCommand::Passwd { name, .. } => {
            let password = read_password()?;
            with_db(config, async |db| {
                db.store.set_password(&name, password).await?;
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
                let group = db.store.create_group(&name, None).await?;
                println!("created group {} (gid {})", group.cn, group.gid_number);
            }
            GroupCommand::AddMember { group, user } => {
                db.store.add_group_member(&group, &user).await?;
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
        let (key, secret) = db.store.create_api_key(&user, &name, None).await?;
        eprintln!(
            "API key {} created for {}; it is shown only once:",
            key.prefix, user
        );
        println!("{secret}");
        Ok(())
    })
    .await
}
