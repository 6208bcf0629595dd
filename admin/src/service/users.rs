//! Users: create (administrators), change a profile (one's own or, for administrators, anyone's,
//! status included), set a password, delete.

use serde::{Deserialize, Serialize};
use siteward_store::resources::UserPatch;
use siteward_store::{Actor, NewUser, PosixName, Store, Uid, User, UserStatus};

use super::rules::{check_len, check_mail, check_password, check_ssh_keys};
use super::{nullable, ApiError, Result};

/// A user to create (administrators) or register (anyone).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// POSIX login name.
    pub username: String,
    /// Password (8-1024 characters).
    pub password: String,
    /// Given name.
    pub given_name: Option<String>,
    /// Surname.
    pub sn: Option<String>,
    /// Common name (default "given surname").
    pub cn: Option<String>,
    /// E-mail (fixed by the invite when registering with one).
    pub mail: Option<String>,
    /// OpenSSH public keys.
    #[serde(default)]
    pub ssh_public_keys: Vec<String>,
    /// Registration only: an invite token.
    pub invite: Option<String>,
    /// Administrators only: make the user an administrator.
    #[serde(default)]
    pub admin: bool,
}

impl CreateUser {
    pub(crate) fn check(&self) -> Result<()> {
        check_password("password", &self.password)?;
        check_new(
            &self.username,
            self.mail.as_deref(),
            [&self.given_name, &self.sn, &self.cn],
            &self.ssh_public_keys,
        )
    }
    pub(crate) fn new_user(self) -> NewUser {
        NewUser {
            username: self.username,
            cn: self.cn,
            sn: self.sn,
            given_name: self.given_name,
            mail: self.mail,
            ssh_public_keys: self.ssh_public_keys,
            password: Some(self.password),
            status: None,
            admin: self.admin,
        }
    }
}

/// Profile changes. `status` only for administrators.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// Common name.
    pub cn: Option<String>,
    /// Surname.
    pub sn: Option<String>,
    /// Given name.
    #[serde(default, deserialize_with = "nullable")]
    pub given_name: Option<Option<String>>,
    /// E-mail.
    #[serde(default, deserialize_with = "nullable")]
    pub mail: Option<Option<String>>,
    /// SSH keys (replaces the list).
    pub ssh_public_keys: Option<Vec<String>>,
    /// `pending`, `active` or `suspended` (administrators).
    pub status: Option<UserStatus>,
}

impl UpdateUser {
    pub(crate) fn check(&self) -> Result<()> {
        for (f, v) in [("cn", &self.cn), ("sn", &self.sn)] {
            if let Some(v) = v {
                check_len(f, v, 1, 256)?;
            }
        }
        if let Some(Some(g)) = &self.given_name {
            check_len("given_name", g, 1, 256)?;
        }
        if let Some(Some(m)) = &self.mail {
            check_mail("mail", m)?;
        }
        if let Some(keys) = &self.ssh_public_keys {
            check_ssh_keys(keys)?;
        }
        Ok(())
    }
    pub(crate) fn patch(self) -> UserPatch {
        UserPatch {
            cn: self.cn,
            sn: self.sn,
            given_name: self.given_name,
            mail: self.mail,
            ssh_public_keys: self.ssh_public_keys,
            status: self.status,
        }
    }
}

/// A new password.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// The current password (required when changing one's own).
    pub old_password: Option<String>,
    /// The new password.
    pub password: String,
}

/// The rules of a new account's fields other than the password.
fn check_new(
    username: &str,
    mail: Option<&str>,
    names: [&Option<String>; 3],
    keys: &[String],
) -> Result<()> {
    PosixName::parse(username).map_err(|_| ApiError::invalid("username", "username must be a POSIX name: a-z, 0-9, _ . -, starting with a letter or _, at most 32"))?;
    if let Some(m) = mail {
        check_mail("mail", m)?;
    }
    for (f, v) in ["given_name", "sn", "cn"].into_iter().zip(names) {
        if let Some(v) = v {
            check_len(f, v, 1, 256)?;
        }
    }
    check_ssh_keys(keys)
}

/// Creates an account from the command line, where the password may be left for later (the
/// account cannot sign in until it has one).
pub async fn create_new(store: &Store, by: &Actor, new: NewUser) -> Result<User> {
    if let Some(p) = &new.password {
        check_password("password", p)?;
    }
    check_new(
        &new.username,
        new.mail.as_deref(),
        [&new.given_name, &new.sn, &new.cn],
        &new.ssh_public_keys,
    )?;
    Ok(store.create_user(new, by).await?)
}

/// Creates a user (administrators).
pub async fn create(store: &Store, by: &Actor, b: CreateUser) -> Result<User> {
    if b.invite.is_some() {
        return Err(ApiError::invalid(
            "invite",
            "invite is for registration; administrators create users directly",
        ));
    }
    b.check()?;
    Ok(store.create_user(b.new_user(), by).await?)
}

/// Changes one's own profile (never one's own status).
pub async fn update_own(store: &Store, by: &Actor, uid: Uid, b: UpdateUser) -> Result<User> {
    if b.status.is_some() {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "you cannot change your own status",
        )
        .field("status"));
    }
    b.check()?;
    Ok(store.update_user(uid, b.patch(), by).await?)
}

/// Changes anyone's profile and status (administrators). Suspending (or setting back to
/// pending) ends the user's sessions.
pub async fn update(store: &Store, by: &Actor, uid: Uid, b: UpdateUser) -> Result<User> {
    b.check()?;
    let suspend = matches!(b.status, Some(UserStatus::Suspended | UserStatus::Pending));
    let user = store.update_user(uid, b.patch(), by).await?;
    if suspend {
        store.delete_sessions_of(uid).await?;
    }
    Ok(user)
}

/// Sets someone's password (administrators, the CLI); signs them out everywhere.
pub async fn set_password(
    store: &Store,
    by: &Actor,
    username: &str,
    password: String,
) -> Result<()> {
    check_password("password", &password)?;
    Ok(store.set_password(username, password, by).await?)
}

/// Deletes a user (memberships, keys and tokens go with it).
pub async fn delete(store: &Store, by: &Actor, uid: Uid) -> Result<()> {
    let user = store.user_by_uid(uid).await?;
    Ok(store.delete_user(&user.username, by).await?)
}
