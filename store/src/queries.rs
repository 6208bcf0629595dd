//! Writes and reads that go to PostgreSQL. Every multi-row operation runs in one transaction.
//! The live snapshot is the read path for the protocol servers; these functions are the write
//! path (and the reads that must be current, such as a node's decrypted credentials).

use chrono::{DateTime, Utc};
use rand::distributions::{Alphanumeric, DistString};

use serde_json::json;

use crate::audit::{fields, record, Actor};
use crate::error::{Result, StoreError};
use crate::models::*;
use crate::password::hash_password;
use crate::Store;

pub(crate) const SITE_COLUMNS: &str =
    "id, name, internal_domain, dhcp_range, subnet_mask, gateway, \
     dns_forwarders, external_ip, dns_serial, created_at, updated_at";
pub(crate) const NODE_COLUMNS: &str = "id, name, ipv4_address, api_url, api_token_id_or_username, \
     api_token_secret_or_password IS NOT NULL AS has_secret, disable_tls_verification, \
     image_storage, volume_storage, network_bridge, nvidia_available, site_id, created_at, updated_at";
pub(crate) const CONTAINER_COLUMNS: &str = "id, hostname, username, status, template, \
     creation_job_id, node_id, site_id, container_id, mac_address, ipv4_address, ai_container, \
     nvidia_requested, created_at, updated_at";
pub(crate) const EXTERNAL_DOMAIN_COLUMNS: &str = "id, domain, acme_email, acme_directory, \
     cloudflare_api_email, cloudflare_api_key IS NOT NULL AS has_cloudflare_api_key, site_id, \
     auth_server";
const USER_COLUMNS: &str = "uid_number, username, cn, sn, given_name, mail, ssh_public_key, \
     user_password, status, password_changed_at, created_at, updated_at";

/// Associated-data contexts of the encrypted columns.
pub(crate) const NODE_SECRET_CONTEXT: &str = "nodes.api_token_secret_or_password";
pub(crate) const CLOUDFLARE_KEY_CONTEXT: &str = "external_domains.cloudflare_api_key";

/// Settings that hold a secret (the SMTP URL carries the SMTP password): sealed at rest.
pub const SECRET_SETTINGS: [&str; 1] = ["smtp_url"];
/// How a sealed setting's value starts in the `settings` table (then base64 of the sealed bytes).
const SEALED_SETTING: &str = "sealed:v1:";

fn setting_context(key: &str) -> String {
    format!("settings.{key}")
}

/// A user to create.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// Login name (validated, lower-cased).
    pub username: String,
    /// Common name; defaults to "given surname" or the username.
    pub cn: Option<String>,
    /// Surname; defaults to the username.
    pub sn: Option<String>,
    /// Given name.
    pub given_name: Option<String>,
    /// E-mail.
    pub mail: Option<String>,
    /// OpenSSH public keys.
    pub ssh_public_keys: Vec<String>,
    /// Plain password, hashed here.
    pub password: Option<String>,
    /// Initial state.
    pub status: Option<UserStatus>,
    /// Also a member of `sysadmins`.
    pub admin: bool,
}

/// A site to create.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NewSite {
    /// Display name.
    pub name: String,
    /// DNS zone.
    pub internal_domain: String,
    /// `first-last`.
    pub dhcp_range: Option<String>,
    /// Netmask.
    pub subnet_mask: Option<std::net::Ipv4Addr>,
    /// Gateway.
    pub gateway: Option<std::net::Ipv4Addr>,
    /// Upstream resolvers, comma-separated.
    pub dns_forwarders: Option<String>,
    /// Public address.
    pub external_ip: Option<std::net::IpAddr>,
}

/// A Proxmox node to create.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NewNode {
    /// Proxmox host name.
    pub name: String,
    /// Site.
    pub site_id: Option<SiteId>,
    /// Address.
    pub ipv4_address: Option<std::net::Ipv4Addr>,
    /// API URL.
    pub api_url: Option<String>,
    /// Token id or user name.
    pub api_token_id_or_username: Option<String>,
    /// Token secret or password, stored encrypted.
    pub api_token_secret_or_password: Option<String>,
    /// Skip TLS verification.
    pub disable_tls_verification: bool,
    /// GPU passthrough.
    pub nvidia_available: bool,
}

fn net(addr: Option<std::net::IpAddr>) -> Option<ipnetwork::IpNetwork> {
    addr.map(ipnetwork::IpNetwork::from)
}

fn net4(addr: Option<std::net::Ipv4Addr>) -> Option<ipnetwork::IpNetwork> {
    net(addr.map(std::net::IpAddr::V4))
}

/// Serializes user creation, so a registration's "is this the first user?" and its insert see
/// every other creation as either finished or not begun.
pub(crate) const REGISTER_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtext('siteward.register'))";

/// A user ready to insert: name validated, password hashed, defaults applied.
pub(crate) struct PreparedUser {
    pub(crate) username: String,
    pub(crate) cn: String,
    pub(crate) sn: String,
    pub(crate) given_name: Option<String>,
    pub(crate) mail: Option<String>,
    pub(crate) keys: Option<String>,
    pub(crate) hash: Option<String>,
    pub(crate) status: UserStatus,
    pub(crate) admin: bool,
}

/// Inserts a prepared user and its memberships in the caller's transaction.
pub(crate) async fn insert_user(conn: &mut sqlx::PgConnection, new: &PreparedUser) -> Result<User> {
    let row: UserRow = sqlx::query_as(&format!(
        "INSERT INTO users (username, cn, sn, given_name, mail, ssh_public_key, user_password,
                            status, password_changed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $7 IS NULL THEN NULL ELSE now() END)
         RETURNING {USER_COLUMNS}"
    ))
    .bind(&new.username)
    .bind(&new.cn)
    .bind(&new.sn)
    .bind(&new.given_name)
    .bind(&new.mail)
    .bind(&new.keys)
    .bind(&new.hash)
    .bind(new.status.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let mut gids = vec![LDAPUSERS_GID];
    if new.admin {
        gids.push(SYSADMINS_GID);
    }
    for gid in gids {
        sqlx::query("INSERT INTO user_groups (uid_number, gid_number) VALUES ($1, $2)")
            .bind(row.uid_number)
            .bind(gid)
            .execute(&mut *conn)
            .await?;
    }
    Ok(User::from(row))
}

impl Store {
    /// Creates a user with membership of `ldapusers` (and `sysadmins` when `admin`).
    pub async fn create_user(&self, new: NewUser, by: &Actor) -> Result<User> {
        let new = self.prepare_user(new).await?;
        let mut tx = self.pool().begin().await?;
        // The registration lock: a registration deciding "the first user" waits for this one.
        sqlx::query(REGISTER_LOCK).execute(&mut *tx).await?;
        let user = insert_user(&mut tx, &new).await?;
        let details = json!({ "admin": new.admin, "status": user.status });
        record(&mut tx, by, "create", "user", user.uid_number, details).await?;
        tx.commit().await?;
        self.refreshed(&["users"]).await;
        Ok(user)
    }

    /// Validates the name and hashes the password of a user about to be created (argon2 runs
    /// here, before any transaction opens).
    pub(crate) async fn prepare_user(&self, new: NewUser) -> Result<PreparedUser> {
        let username = PosixName::parse(&new.username).map_err(|_| StoreError::Invalid {
            field: "username".into(),
            message: "must be a POSIX name: 1-32 of a-z 0-9 _ . -, starting with a letter or _"
                .into(),
        })?;
        let hash = match new.password {
            Some(pw) => Some(check_and_hash(pw, self.hash_cost()).await?),
            None => None,
        };
        let sn = new.sn.unwrap_or_else(|| username.to_string());
        let cn = new.cn.unwrap_or_else(|| match &new.given_name {
            Some(g) => format!("{g} {sn}"),
            None => username.to_string(),
        });
        Ok(PreparedUser {
            username: username.to_string(),
            cn,
            sn,
            given_name: new.given_name,
            mail: new.mail,
            keys: (!new.ssh_public_keys.is_empty()).then(|| new.ssh_public_keys.join("\n")),
            hash,
            status: new.status.unwrap_or(UserStatus::Active),
            admin: new.admin,
        })
    }

    /// A user by login name, read from the database.
    pub async fn user(&self, username: &str) -> Result<User> {
        let row: Option<UserRow> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
        ))
        .bind(username.to_ascii_lowercase())
        .fetch_optional(self.pool())
        .await?;
        row.map(User::from)
            .ok_or(StoreError::NotFound { entity: "user" })
    }

    /// Replaces a user's password.
    pub async fn set_password(&self, username: &str, password: String, by: &Actor) -> Result<()> {
        self.set_password_keeping(username, password, None, by)
            .await
    }

    /// Sets a password and, in the same transaction, ends every browser session of the user
    /// (whoever signed in with the old password is out) except the one the cookie value `keep`
    /// names: the browser that changed it stays signed in. Every path that changes a password
    /// (API, sign-in pages, LDAP password modify, CLI) goes through here.
    pub async fn set_password_keeping(
        &self,
        username: &str,
        password: String,
        keep: Option<&str>,
        by: &Actor,
    ) -> Result<()> {
        let hash = check_and_hash(password, self.hash_cost()).await?;
        let mut tx = self.pool().begin().await?;
        let uid = replace_password(&mut tx, username, hash, keep).await?;
        // Own change, or someone else's reset of it.
        let action = if by.uid == Some(uid) {
            "change_password"
        } else {
            "set_password"
        };
        record(&mut tx, by, action, "user", uid, json!({})).await?;
        tx.commit().await?;
        self.forget_sessions_of(uid);
        self.refreshed(&["users"]).await;
        Ok(())
    }

    /// Sets a user's account state.
    pub async fn set_user_status(
        &self,
        username: &str,
        status: UserStatus,
        by: &Actor,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let uid: Option<Uid> = sqlx::query_scalar(
            "UPDATE users SET status = $2 WHERE username = $1 RETURNING uid_number",
        )
        .bind(username.to_ascii_lowercase())
        .bind(status.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let uid = uid.ok_or(StoreError::NotFound { entity: "user" })?;
        let details = json!({ "fields": ["status"], "status": status.as_str() });
        record(&mut tx, by, "update", "user", uid, details).await?;
        tx.commit().await?;
        self.refreshed(&["users"]).await;
        Ok(())
    }

    /// Deletes a user (memberships, keys and tokens go with it).
    pub async fn delete_user(&self, username: &str, by: &Actor) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let uid: Option<Uid> =
            sqlx::query_scalar("DELETE FROM users WHERE username = $1 RETURNING uid_number")
                .bind(username.to_ascii_lowercase())
                .fetch_optional(&mut *tx)
                .await?;
        let uid = uid.ok_or(StoreError::NotFound { entity: "user" })?;
        record(&mut tx, by, "delete", "user", uid, json!({})).await?;
        tx.commit().await?;
        self.forget_sessions_of(uid);
        self.refreshed(&["users"]).await;
        Ok(())
    }

    /// Creates a group with the next free gid.
    pub async fn create_group(
        &self,
        cn: &str,
        description: Option<&str>,
        is_administrator: bool,
        by: &Actor,
    ) -> Result<Group> {
        let cn = PosixName::parse(cn).map_err(|_| StoreError::Invalid {
            field: "cn".into(),
            message: "must be a POSIX group name".into(),
        })?;
        let mut tx = self.pool().begin().await?;
        let group: Group = sqlx::query_as(
            "INSERT INTO groups (cn, description, is_administrator) VALUES ($1, $2, $3)
             RETURNING gid_number, cn, description, is_administrator, created_at, updated_at",
        )
        .bind(cn.as_str())
        .bind(description)
        .bind(is_administrator)
        .fetch_one(&mut *tx)
        .await?;
        let details = json!({ "cn": group.cn, "is_administrator": is_administrator });
        record(&mut tx, by, "create", "group", group.gid_number, details).await?;
        tx.commit().await?;
        self.refreshed(&["groups"]).await;
        Ok(group)
    }

    /// Adds `username` to group `cn`. Adding an existing member is not an error.
    pub async fn add_group_member(&self, cn: &str, username: &str, by: &Actor) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let gid: Option<i32> = sqlx::query_scalar("SELECT gid_number FROM groups WHERE cn = $1")
            .bind(cn.to_ascii_lowercase())
            .fetch_optional(&mut *tx)
            .await?;
        let gid = gid.ok_or(StoreError::NotFound { entity: "group" })?;
        let uid: Option<i32> =
            sqlx::query_scalar("SELECT uid_number FROM users WHERE username = $1")
                .bind(username.to_ascii_lowercase())
                .fetch_optional(&mut *tx)
                .await?;
        let uid = uid.ok_or(StoreError::NotFound { entity: "user" })?;
        sqlx::query(
            "INSERT INTO user_groups (uid_number, gid_number) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(uid)
        .bind(gid)
        .execute(&mut *tx)
        .await?;
        let details = json!({ "uid_number": uid });
        record(&mut tx, by, "add_member", "group", gid, details).await?;
        tx.commit().await?;
        self.refreshed(&["user_groups"]).await;
        Ok(())
    }

    /// Removes `username` from group `cn`.
    pub async fn remove_group_member(&self, cn: &str, username: &str, by: &Actor) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let done: Option<(Uid, Gid)> = sqlx::query_as(
            "DELETE FROM user_groups ug USING users u, groups g
             WHERE ug.uid_number = u.uid_number AND ug.gid_number = g.gid_number
               AND u.username = $2 AND g.cn = $1
             RETURNING ug.uid_number, ug.gid_number",
        )
        .bind(cn.to_ascii_lowercase())
        .bind(username.to_ascii_lowercase())
        .fetch_optional(&mut *tx)
        .await?;
        let (uid, gid) = done.ok_or(StoreError::NotFound {
            entity: "membership",
        })?;
        let details = json!({ "uid_number": uid });
        record(&mut tx, by, "remove_member", "group", gid, details).await?;
        tx.commit().await?;
        self.refreshed(&["user_groups"]).await;
        Ok(())
    }

    /// Creates an API key for `username`. Returns the stored key and the full secret, which is
    /// shown once and never stored in the clear: `sw_<prefix>_<secret>`.
    pub async fn create_api_key(
        &self,
        username: &str,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
        by: &Actor,
    ) -> Result<(ApiKey, String)> {
        let prefix = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 12);
        let secret = Alphanumeric.sample_string(&mut rand::rngs::OsRng, 40);
        let full = format!("sw_{prefix}_{secret}");
        let hash = hash_password(full.clone(), self.hash_cost()).await?;
        let mut tx = self.pool().begin().await?;
        let key: ApiKey = sqlx::query_as(
            "INSERT INTO api_keys (prefix, key_hash, uid_number, name, expires_at)
             SELECT $1, $2, uid_number, $4, $5 FROM users WHERE username = $3
             RETURNING id, prefix, key_hash, uid_number, name, last_used_at, expires_at, created_at",
        )
        .bind(&prefix)
        .bind(&hash)
        .bind(username.to_ascii_lowercase())
        .bind(name)
        .bind(expires_at)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound { entity: "user" })?;
        let details = json!({ "name": key.name, "uid_number": key.uid_number });
        record(&mut tx, by, "create", "api_key", key.id, details).await?;
        tx.commit().await?;
        self.refreshed(&["api_keys"]).await;
        Ok((key, full))
    }

    /// Creates a site.
    pub async fn create_site(&self, new: NewSite, by: &Actor) -> Result<Site> {
        let mut tx = self.pool().begin().await?;
        let row: SiteRow = sqlx::query_as(&format!(
            "INSERT INTO sites (name, internal_domain, dhcp_range, subnet_mask, gateway,
                                dns_forwarders, external_ip)
             VALUES ($1, lower($2), $3, $4, $5, $6, $7) RETURNING {SITE_COLUMNS}"
        ))
        .bind(&new.name)
        .bind(new.internal_domain.trim_end_matches('.'))
        .bind(&new.dhcp_range)
        .bind(net4(new.subnet_mask))
        .bind(net4(new.gateway))
        .bind(&new.dns_forwarders)
        .bind(net(new.external_ip))
        .fetch_one(&mut *tx)
        .await?;
        let site = Site::from(row);
        crate::resources::check_site_network(&site)?;
        record(&mut tx, by, "create", "site", site.id, fields(&new)).await?;
        tx.commit().await?;
        self.refreshed(&["sites"]).await;
        Ok(site)
    }

    /// Creates a node; its secret is sealed before it reaches the database.
    pub async fn create_node(&self, new: NewNode, by: &Actor) -> Result<Node> {
        let site_id = new.site_id.ok_or(StoreError::Invalid {
            field: "site_id".into(),
            message: "is required".into(),
        })?;
        let sealed = new
            .api_token_secret_or_password
            .as_deref()
            .map(|s| self.secrets().seal(NODE_SECRET_CONTEXT, s.as_bytes()))
            .transpose()?;
        let mut tx = self.pool().begin().await?;
        let row: NodeRow = sqlx::query_as(&format!(
            "INSERT INTO nodes (name, site_id, ipv4_address, api_url, api_token_id_or_username,
                                api_token_secret_or_password, disable_tls_verification,
                                nvidia_available)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {NODE_COLUMNS}"
        ))
        .bind(new.name.to_ascii_lowercase())
        .bind(site_id)
        .bind(net4(new.ipv4_address))
        .bind(&new.api_url)
        .bind(&new.api_token_id_or_username)
        .bind(sealed)
        .bind(new.disable_tls_verification)
        .bind(new.nvidia_available)
        .fetch_one(&mut *tx)
        .await?;
        let node = Node::from(row);
        record(&mut tx, by, "create", "node", node.id, fields(&new)).await?;
        tx.commit().await?;
        self.refreshed(&["nodes"]).await;
        Ok(node)
    }

    /// The decrypted API token secret or password of a node. Only the Proxmox client calls this.
    pub async fn node_secret(&self, id: NodeId) -> Result<Option<String>> {
        let sealed: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT api_token_secret_or_password FROM nodes WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        match sealed.ok_or(StoreError::NotFound { entity: "node" })? {
            Some(bytes) => Ok(Some(
                self.secrets().open_string(NODE_SECRET_CONTEXT, &bytes)?,
            )),
            None => Ok(None),
        }
    }

    /// Sets (or clears) an external domain's Cloudflare key, sealed.
    pub async fn set_cloudflare_api_key(
        &self,
        id: ExternalDomainId,
        key: Option<&str>,
    ) -> Result<()> {
        let sealed = key
            .map(|k| self.secrets().seal(CLOUDFLARE_KEY_CONTEXT, k.as_bytes()))
            .transpose()?;
        let done = sqlx::query("UPDATE external_domains SET cloudflare_api_key = $2 WHERE id = $1")
            .bind(id)
            .bind(sealed)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: "external domain",
            });
        }
        Ok(())
    }

    /// The decrypted Cloudflare key of an external domain. Only the ACME component calls this.
    pub async fn cloudflare_api_key(&self, id: ExternalDomainId) -> Result<Option<String>> {
        let sealed: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT cloudflare_api_key FROM external_domains WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        match sealed.ok_or(StoreError::NotFound {
            entity: "external domain",
        })? {
            Some(bytes) => Ok(Some(
                self.secrets().open_string(CLOUDFLARE_KEY_CONTEXT, &bytes)?,
            )),
            None => Ok(None),
        }
    }

    /// A setting's value (opened, when it is one of [`SECRET_SETTINGS`]).
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(self.pool())
                .await?;
        stored.map(|v| self.open_setting(key, v)).transpose()
    }

    /// A stored value as it was set: sealed ones opened; a secret setting written in the clear
    /// by an older version is returned as is (and sealed when next set).
    pub(crate) fn open_setting(&self, key: &str, stored: String) -> Result<String> {
        use base64::Engine;
        match stored.strip_prefix(SEALED_SETTING) {
            Some(b64) => {
                let sealed = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| StoreError::Crypto)?;
                self.secrets().open_string(&setting_context(key), &sealed)
            }
            None => Ok(stored),
        }
    }

    /// Sets a setting; one of [`SECRET_SETTINGS`] is sealed at rest.
    pub async fn set_setting(&self, key: &str, value: &str, by: &Actor) -> Result<()> {
        use base64::Engine;
        let stored = if SECRET_SETTINGS.contains(&key) {
            let sealed = self
                .secrets()
                .seal(&setting_context(key), value.as_bytes())?;
            format!(
                "{SEALED_SETTING}{}",
                base64::engine::general_purpose::STANDARD.encode(sealed)
            )
        } else {
            value.to_owned()
        };
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(key)
        .bind(stored)
        .execute(&mut *tx)
        .await?;
        // Never the value: settings hold SMTP passwords.
        record(&mut tx, by, "update", "setting", key, json!({})).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Rejects passwords nobody should have, then hashes.
/// Inside `tx`: stores a password `hash` for `username` and ends every session of the user but
/// the one the cookie value `keep` names. The caller commits, then forgets the user's cached
/// sessions.
pub(crate) async fn replace_password(
    tx: &mut sqlx::PgConnection,
    username: &str,
    hash: String,
    keep: Option<&str>,
) -> Result<Uid> {
    let uid: Option<Uid> = sqlx::query_scalar(
        "UPDATE users SET user_password = $2, password_changed_at = now() WHERE username = $1
         RETURNING uid_number",
    )
    .bind(username.to_ascii_lowercase())
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await?;
    let uid = uid.ok_or(StoreError::NotFound { entity: "user" })?;
    let keep_hash = keep.and_then(crate::auth::cookie_hash).unwrap_or_default();
    sqlx::query("DELETE FROM sessions WHERE uid_number = $1 AND id_hash <> $2")
        .bind(uid)
        .bind(&keep_hash)
        .execute(&mut *tx)
        .await?;
    Ok(uid)
}

pub(crate) async fn check_and_hash(
    password: String,
    cost: crate::password::HashCost,
) -> Result<String> {
    crate::password::check_rule(&password)?;
    hash_password(password, cost).await
}
