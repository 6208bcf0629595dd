//! The directory information tree, computed from the store's snapshot on demand: which entries
//! exist, their DNs, their attribute values, and who may read which attribute.
//!
//! ```text
//! (root DSE)                      cn=Subschema
//! <base>                          dcObject/organization (or organizationalUnit, ...)
//! ├── ou=people,<base>            uid=<username>,ou=people,<base>   one per user
//! └── ou=groups,<base>            cn=<name>,ou=groups,<base>        one per group
//! ```
//!
//! Architecture invariant: `userPassword` has no value source here; no code path can return it.
//! Access rules live in [`Directory::readable`] and are applied to filters as well as to
//! returned attributes, so a filter cannot probe an attribute the client may not read.

use std::sync::Arc;

use siteward_store::{Group, Identity, User, UserStatus, LDAPUSERS_GID};

use crate::dn::Dn;
use crate::schema::Attr;

/// OID of the Simple Paged Results control.
pub const OID_PAGED_RESULTS: &str = "1.2.840.113556.1.4.319";
/// OID of the StartTLS extended operation.
pub const OID_START_TLS: &str = "1.3.6.1.4.1.1466.20037";
/// OID of the notice of disconnection.
pub const OID_NOTICE_OF_DISCONNECTION: &str = "1.3.6.1.4.1.1466.20036";
/// OID of the `LDAP_MATCHING_RULE_IN_CHAIN` extensible match.
pub const OID_IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

/// What anonymous clients may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AnonymousAccess {
    /// Read the attributes NSS needs.
    #[default]
    Read,
    /// Anonymous binds and searches are refused (the root DSE stays readable).
    Deny,
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// Not bound, or bound anonymously.
    Anonymous,
    /// A bound user; `privileged` when a member of an administrators' group or of the service
    /// account group (read everything but passwords).
    User {
        /// The user's uid number.
        uid: siteward_store::Uid,
        /// Reads everything but passwords.
        privileged: bool,
    },
}

/// The shape of the tree and the access policy, built once from configuration.
#[derive(Debug, Clone)]
pub struct Directory {
    /// The suffix.
    pub base: Dn,
    /// `ou=people,<base>`.
    pub people: Dn,
    /// `ou=groups,<base>`.
    pub groups: Dn,
    /// `cn=subschema`.
    pub subschema: Dn,
    base_text: String,
    /// Anonymous access.
    pub anonymous: AnonymousAccess,
    /// Members of this group (besides administrators) read everything but passwords.
    pub service_group: Option<String>,
    /// Whether ordinary users read other users' `mail`.
    pub mail_visible_to_users: bool,
}

/// One entry of the tree, borrowed from a snapshot.
#[derive(Debug, Clone, Copy)]
pub enum Node<'a> {
    /// The root DSE.
    RootDse,
    /// `cn=Subschema`.
    Subschema,
    /// The suffix entry.
    Base,
    /// `ou=people`.
    People,
    /// `ou=groups`.
    Groups,
    /// A user.
    User(&'a User),
    /// A group.
    Group(&'a Group),
}

/// Attributes anonymous clients (and everybody) read: what NSS and PAM modules need.
const NSS_ATTRS: &[Attr] = &[
    Attr::ObjectClass,
    Attr::Dc,
    Attr::O,
    Attr::Ou,
    Attr::Uid,
    Attr::Cn,
    Attr::UidNumber,
    Attr::GidNumber,
    Attr::HomeDirectory,
    Attr::LoginShell,
    Attr::Gecos,
    Attr::MemberUid,
    Attr::Member,
    Attr::MemberOf,
    Attr::ShadowLastChange,
    Attr::ShadowExpire,
    Attr::EntryDn,
    Attr::HasSubordinates,
    Attr::StructuralObjectClass,
    Attr::SubschemaSubentry,
];

/// Attributes bound users also read on other entries (`mail` depends on configuration).
const PROFILE_ATTRS: &[Attr] = &[
    Attr::Sn,
    Attr::GivenName,
    Attr::DisplayName,
    Attr::Description,
    Attr::SshPublicKey,
    Attr::EntryUuid,
    Attr::CreateTimestamp,
    Attr::ModifyTimestamp,
];

impl Directory {
    /// Builds the tree's shape from a base DN.
    pub fn new(base: &str) -> Result<Self, crate::dn::DnError> {
        let base = Dn::parse(base)?;
        if base.is_root() {
            return Err(crate::dn::DnError::empty());
        }
        Ok(Self {
            people: Dn::child(&base, "ou", "people"),
            groups: Dn::child(&base, "ou", "groups"),
            subschema: Dn::child(&Dn::root(), "cn", "subschema"),
            base_text: base.to_string(),
            base,
            anonymous: AnonymousAccess::Read,
            service_group: None,
            mail_visible_to_users: false,
        })
    }

    /// The suffix as text.
    pub fn base_text(&self) -> &str {
        &self.base_text
    }

    /// A user's DN.
    pub fn user_dn(&self, user: &User) -> String {
        format!(
            "uid={},ou=people,{}",
            crate::dn::escape(&user.username),
            self.base_text
        )
    }

    /// A group's DN.
    pub fn group_dn(&self, group: &Group) -> String {
        format!(
            "cn={},ou=groups,{}",
            crate::dn::escape(&group.cn),
            self.base_text
        )
    }

    /// The DN of a node as text.
    pub fn dn_of(&self, node: Node<'_>) -> String {
        match node {
            Node::RootDse => String::new(),
            Node::Subschema => "cn=Subschema".into(),
            Node::Base => self.base_text.clone(),
            Node::People => format!("ou=people,{}", self.base_text),
            Node::Groups => format!("ou=groups,{}", self.base_text),
            Node::User(u) => self.user_dn(u),
            Node::Group(g) => self.group_dn(g),
        }
    }

    /// The user a DN names (`uid=<name>,ou=people,<base>`), if it exists.
    pub fn user_of_dn<'a>(&self, identity: &'a Identity, dn: &Dn) -> Option<&'a Arc<User>> {
        let (ty, value) = dn.leaf()?;
        if ty != "uid" || dn.parent().as_ref() != Some(&self.people) {
            return None;
        }
        identity.user(value)
    }

    /// The group a DN names (`cn=<name>,ou=groups,<base>`), if it exists.
    pub fn group_of_dn<'a>(&self, identity: &'a Identity, dn: &Dn) -> Option<&'a Arc<Group>> {
        let (ty, value) = dn.leaf()?;
        if ty != "cn" || dn.parent().as_ref() != Some(&self.groups) {
            return None;
        }
        identity.group(value)
    }

    /// The entry a DN names.
    pub fn lookup<'a>(&self, identity: &'a Identity, dn: &Dn) -> Option<Node<'a>> {
        if dn.is_root() {
            return Some(Node::RootDse);
        }
        if *dn == self.subschema {
            return Some(Node::Subschema);
        }
        if *dn == self.base {
            return Some(Node::Base);
        }
        if *dn == self.people {
            return Some(Node::People);
        }
        if *dn == self.groups {
            return Some(Node::Groups);
        }
        if let Some(u) = self.user_of_dn(identity, dn) {
            return Some(Node::User(u));
        }
        self.group_of_dn(identity, dn).map(|g| Node::Group(g))
    }

    /// The principal a bound user becomes (privileged or not, from the current snapshot).
    pub fn principal_of(&self, identity: &Identity, uid: siteward_store::Uid) -> Principal {
        let service = self
            .service_group
            .as_deref()
            .and_then(|cn| identity.group(cn));
        let in_service = service.is_some_and(|g| {
            identity
                .groups_of
                .get(&uid)
                .is_some_and(|gids| gids.contains(&g.gid_number))
        });
        Principal::User {
            uid,
            privileged: identity.is_admin(uid) || in_service,
        }
    }

    /// Whether `who` may read `attr` of `node`.
    pub fn readable(&self, who: Principal, node: Node<'_>, attr: Attr) -> bool {
        if attr == Attr::UserPassword {
            return false;
        }
        if matches!(node, Node::RootDse | Node::Subschema) {
            return true;
        }
        match who {
            Principal::Anonymous => {
                self.anonymous == AnonymousAccess::Read && NSS_ATTRS.contains(&attr)
            }
            Principal::User {
                privileged: true, ..
            } => true,
            Principal::User { uid, .. } => {
                if let Node::User(u) = node {
                    if u.uid_number == uid {
                        return true;
                    }
                }
                NSS_ATTRS.contains(&attr)
                    || PROFILE_ATTRS.contains(&attr)
                    || (attr == Attr::Mail && self.mail_visible_to_users)
            }
        }
    }

    /// The values of `attr` on `node`, or `None` when the entry has none or `who` may not read
    /// them.
    pub fn values(
        &self,
        identity: &Identity,
        who: Principal,
        node: Node<'_>,
        attr: Attr,
    ) -> Option<Vec<String>> {
        if !self.readable(who, node, attr) {
            return None;
        }
        let values = self.raw_values(identity, node, attr);
        (!values.is_empty()).then_some(values)
    }

    fn raw_values(&self, identity: &Identity, node: Node<'_>, attr: Attr) -> Vec<String> {
        let one = |s: String| vec![s];
        let strs = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        match (node, attr) {
            (_, Attr::UserPassword) => Vec::new(),
            (Node::RootDse, a) => self.root_dse(a),
            (Node::Subschema, a) => match a {
                Attr::ObjectClass => strs(&["top", "subentry", "subschema", "extensibleObject"]),
                Attr::Cn => one("Subschema".into()),
                Attr::StructuralObjectClass => one("subentry".into()),
                Attr::EntryDn => one("cn=Subschema".into()),
                Attr::AttributeTypes => crate::schema::ALL_ATTRS
                    .iter()
                    .map(|a| a.definition())
                    .collect(),
                Attr::ObjectClasses => crate::schema::OBJECT_CLASSES
                    .iter()
                    .map(|(_, d)| (*d).to_owned())
                    .collect(),
                Attr::LdapSyntaxes => crate::schema::syntax_definitions(),
                _ => Vec::new(),
            },
            (Node::Base, a) => self.base_values(a),
            (Node::People | Node::Groups, a) => {
                let ou = if matches!(node, Node::People) {
                    "people"
                } else {
                    "groups"
                };
                match a {
                    Attr::ObjectClass => strs(&["top", "organizationalUnit"]),
                    Attr::Ou => one(ou.into()),
                    Attr::StructuralObjectClass => one("organizationalUnit".into()),
                    Attr::HasSubordinates => one("TRUE".into()),
                    Attr::EntryDn => one(self.dn_of(node)),
                    Attr::SubschemaSubentry => one("cn=Subschema".into()),
                    _ => Vec::new(),
                }
            }
            (Node::User(u), a) => self.user_values(identity, u, a),
            (Node::Group(g), a) => self.group_values(identity, g, a),
        }
    }

    fn root_dse(&self, attr: Attr) -> Vec<String> {
        let one = |s: &str| vec![s.to_owned()];
        match attr {
            Attr::ObjectClass => vec!["top".into(), "extensibleObject".into()],
            Attr::NamingContexts | Attr::DefaultNamingContext => one(&self.base_text),
            Attr::SupportedLdapVersion => one("3"),
            Attr::SupportedControl => one(OID_PAGED_RESULTS),
            Attr::SupportedExtension => vec![
                ldap3_proto::proto::OID_WHOAMI.into(),
                ldap3_proto::proto::OID_PASSWORD_MODIFY.into(),
                OID_START_TLS.into(),
            ],
            // All operational attributes with `+` (RFC 3673).
            Attr::SupportedFeatures => one("1.3.6.1.4.1.4203.1.5.1"),
            Attr::SubschemaSubentry => one("cn=Subschema"),
            Attr::VendorName => one("siteward"),
            Attr::VendorVersion => one(env!("CARGO_PKG_VERSION")),
            _ => Vec::new(),
        }
    }

    fn base_values(&self, attr: Attr) -> Vec<String> {
        let (ty, value) = self.base.leaf().unwrap_or(("dc", ""));
        let value = value.to_owned();
        match attr {
            Attr::ObjectClass => match ty {
                "dc" => vec!["top".into(), "dcObject".into(), "organization".into()],
                "o" => vec!["top".into(), "organization".into()],
                "ou" => vec!["top".into(), "organizationalUnit".into()],
                _ => vec!["top".into(), "extensibleObject".into()],
            },
            Attr::Dc if ty == "dc" => vec![value],
            Attr::O if ty == "dc" || ty == "o" => vec![value],
            Attr::Ou if ty == "ou" => vec![value],
            Attr::StructuralObjectClass => vec![match ty {
                "dc" | "o" => "organization".into(),
                "ou" => "organizationalUnit".into(),
                _ => "extensibleObject".into(),
            }],
            Attr::HasSubordinates => vec!["TRUE".into()],
            Attr::EntryDn => vec![self.base_text.clone()],
            Attr::SubschemaSubentry => vec!["cn=Subschema".into()],
            _ => Vec::new(),
        }
    }

    fn user_values(&self, identity: &Identity, u: &User, attr: Attr) -> Vec<String> {
        let one = |s: String| vec![s];
        match attr {
            Attr::ObjectClass => [
                "top",
                "person",
                "organizationalPerson",
                "inetOrgPerson",
                "posixAccount",
                "shadowAccount",
                "ldapPublicKey",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            Attr::Uid => one(u.username.clone()),
            Attr::Cn | Attr::DisplayName | Attr::Gecos => one(u.cn.clone()),
            Attr::Sn => one(u.sn.clone()),
            Attr::GivenName => u.given_name.clone().into_iter().collect(),
            Attr::Mail => u.mail.clone().into_iter().collect(),
            Attr::UidNumber => one(u.uid_number.0.to_string()),
            Attr::GidNumber => one(LDAPUSERS_GID.0.to_string()),
            Attr::HomeDirectory => one(format!("/home/{}", u.username)),
            Attr::LoginShell => one("/bin/bash".into()),
            // A key of an account that may not sign in would still let it in over SSH.
            Attr::SshPublicKey if u.status == UserStatus::Active => u.ssh_public_keys.clone(),
            Attr::MemberOf => identity
                .groups_of
                .get(&u.uid_number)
                .map(|gids| {
                    gids.iter()
                        .filter_map(|g| identity.groups.get(g))
                        .map(|g| self.group_dn(g))
                        .collect()
                })
                .unwrap_or_default(),
            Attr::EntryUuid => one(entry_uuid(1, u.uid_number.0, u.created_at)),
            Attr::CreateTimestamp => one(generalized_time(u.created_at)),
            Attr::ModifyTimestamp => one(generalized_time(u.updated_at)),
            Attr::PwdChangedTime => u
                .password_changed_at
                .map(generalized_time)
                .into_iter()
                .collect(),
            Attr::ShadowLastChange => u
                .password_changed_at
                .map(|t| (t.timestamp().div_euclid(86_400)).to_string())
                .into_iter()
                .collect(),
            // Pending and suspended accounts are expired for PAM (shadowExpire in the past).
            Attr::ShadowExpire if u.status != UserStatus::Active => one("1".into()),
            Attr::StructuralObjectClass => one("inetOrgPerson".into()),
            Attr::HasSubordinates => one("FALSE".into()),
            Attr::EntryDn => one(self.user_dn(u)),
            Attr::SubschemaSubentry => one("cn=Subschema".into()),
            _ => Vec::new(),
        }
    }

    fn group_values(&self, identity: &Identity, g: &Group, attr: Attr) -> Vec<String> {
        let one = |s: String| vec![s];
        let members = || {
            identity
                .members_of
                .get(&g.gid_number)
                .into_iter()
                .flat_map(|l| l.iter())
                .filter_map(|uid| identity.users.get(uid))
        };
        match attr {
            Attr::ObjectClass => vec!["top".into(), "posixGroup".into(), "groupOfNames".into()],
            Attr::Cn => one(g.cn.clone()),
            Attr::GidNumber => one(g.gid_number.0.to_string()),
            Attr::MemberUid => members().map(|u| u.username.clone()).collect(),
            Attr::Member => members().map(|u| self.user_dn(u)).collect(),
            Attr::Description => g.description.clone().into_iter().collect(),
            Attr::EntryUuid => one(entry_uuid(2, g.gid_number.0, g.created_at)),
            Attr::CreateTimestamp => one(generalized_time(g.created_at)),
            Attr::ModifyTimestamp => one(generalized_time(g.updated_at)),
            Attr::StructuralObjectClass => one("groupOfNames".into()),
            Attr::HasSubordinates => one("FALSE".into()),
            Attr::EntryDn => one(self.group_dn(g)),
            Attr::SubschemaSubentry => one("cn=Subschema".into()),
            _ => Vec::new(),
        }
    }
}

/// GeneralizedTime in UTC, to the second.
pub fn generalized_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y%m%d%H%M%SZ").to_string()
}

/// A stable UUID (RFC 9562 version 8, "custom") for an entry: its kind, number and creation
/// time, so a number reused after a deletion gets a different UUID.
fn entry_uuid(kind: u8, number: i32, created: chrono::DateTime<chrono::Utc>) -> String {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&number.to_be_bytes());
    b[4..12].copy_from_slice(&created.timestamp_micros().to_be_bytes());
    b[15] = kind;
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
