//! Typed rows and ids. Ids are newtypes so that a site id cannot be passed where a node id is
//! expected; names that match case-insensitively are normalized when they are parsed.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident($inner:ty);)*) => {$(
        #[$doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type, schemars::JsonSchema)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

id_type! {
    /// Primary key of `sites`.
    SiteId(i64);
    /// Primary key of `nodes`.
    NodeId(i64);
    /// Primary key of `containers` (not the Proxmox VMID).
    ContainerId(i64);
    /// Primary key of `services`.
    ServiceId(i64);
    /// Primary key of `external_domains`.
    ExternalDomainId(i64);
    /// Primary key of `jobs`.
    JobId(i64);
    /// Primary key of `dns_records`.
    DnsRecordId(i64);
    /// Primary key of `api_keys`.
    ApiKeyId(i64);
    /// A user's POSIX uid number (primary key of `users`).
    Uid(i32);
    /// A group's POSIX gid number (primary key of `groups`).
    Gid(i32);
}

/// The primary group of every user.
pub const LDAPUSERS_GID: Gid = Gid(2000);
/// The seeded administrators' group.
pub const SYSADMINS_GID: Gid = Gid(2001);

/// A POSIX login or group name: lower-case, `[a-z_][a-z0-9_.-]{0,31}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PosixName(String);

impl PosixName {
    /// Validates and lower-cases `raw`.
    pub fn parse(raw: &str) -> Result<Self> {
        let lower = raw.to_ascii_lowercase();
        let mut chars = lower.chars();
        let first_ok = matches!(chars.next(), Some('a'..='z' | '_'));
        let rest_ok = chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'));
        if !first_ok || !rest_ok || lower.len() > 32 {
            return Err(StoreError::Invalid {
                field: "name".into(),
                message: "must be 1-32 characters: a letter or _ then letters, digits, _ . -"
                    .into(),
            });
        }
        Ok(Self(lower))
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PosixName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PosixName {
    type Error = StoreError;
    fn try_from(value: String) -> Result<Self> {
        Self::parse(&value)
    }
}

impl From<PosixName> for String {
    fn from(value: PosixName) -> Self {
        value.0
    }
}

/// A closed set of lower-case words stored in a `text` column under a CHECK constraint: serde and
/// JSON Schema use the same spelling as the database, and sqlx reads and binds it as text.
macro_rules! text_enum {
    ($(#[$doc:meta] $name:ident($field:literal) { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* })*) => {$(
        #[$doc]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every value, in the database's order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The database (and wire) spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)*
                }
            }

            /// Every spelling, for error messages: `a, b or c`.
            pub fn expected() -> String {
                let words: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                match words.split_last() {
                    Some((last, [])) => (*last).to_owned(),
                    Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                    None => String::new(),
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = StoreError;

            fn from_str(text: &str) -> Result<Self> {
                match text {
                    $($text => Ok(Self::$variant),)*
                    _ => Err(StoreError::Invalid {
                        field: $field.into(),
                        message: format!("must be {}", Self::expected()),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> std::result::Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> std::result::Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(text.parse()?)
            }
        }
    )*};
}

text_enum! {
    /// A container record's state (`containers.status`).
    ContainerStatus("status") {
        /// Registered, not yet being created.
        Pending = "pending",
        /// A creation job is running.
        Creating = "creating",
        /// Running on its node.
        Running = "running",
        /// Stopped on its node.
        Stopped = "stopped",
        /// Creation failed.
        Failed = "failed",
        /// A deletion job is running.
        Deleting = "deleting",
    }
    /// A job's state (`jobs.status`).
    JobState("status") {
        /// Queued.
        Pending = "pending",
        /// In progress.
        Running = "running",
        /// Finished successfully.
        Success = "success",
        /// Finished with an error.
        Failure = "failure",
        /// Stopped before it finished.
        Cancelled = "cancelled",
    }
    /// A service's kind (`services.type`).
    ServiceKind("type") {
        /// HTTP(S) through the edge NGINX.
        Http = "http",
        /// TCP or UDP through the edge NGINX.
        Transport = "transport",
        /// An SRV record.
        Dns = "dns",
    }
    /// How the edge speaks to an HTTP service's backend (`http_services.backend_protocol`).
    BackendProtocol("backend_protocol") {
        /// Plain HTTP.
        Http = "http",
        /// HTTPS.
        Https = "https",
    }
    /// A transport service's protocol (`transport_services.protocol`).
    TransportProtocol("protocol") {
        /// TCP.
        Tcp = "tcp",
        /// UDP.
        Udp = "udp",
    }
}

impl JobState {
    /// Still queued or in progress.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

/// Account state. Only `Active` users authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// Registered, waiting for an administrator.
    Pending,
    /// May sign in.
    Active,
    /// Locked out by an administrator.
    Suspended,
}

impl UserStatus {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            _ => Self::Pending,
        }
    }
}

/// A user as the protocol servers see it. The password hash is here because binds verify it
/// in-process; it is never serialized.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct User {
    /// POSIX uid.
    pub uid_number: Uid,
    /// Login name (lower-case).
    pub username: String,
    /// Common name.
    pub cn: String,
    /// Surname.
    pub sn: String,
    /// Given name.
    pub given_name: Option<String>,
    /// E-mail address.
    pub mail: Option<String>,
    /// OpenSSH public keys, one per entry.
    pub ssh_public_keys: Vec<String>,
    /// Argon2 PHC string; never leaves the process.
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// Account state.
    pub status: UserStatus,
    /// When the password last changed.
    pub password_changed_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last modification.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    pub uid_number: i32,
    pub username: String,
    pub cn: String,
    pub sn: String,
    pub given_name: Option<String>,
    pub mail: Option<String>,
    pub ssh_public_key: Option<String>,
    pub user_password: Option<String>,
    pub status: String,
    pub password_changed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            uid_number: Uid(r.uid_number),
            username: r.username,
            cn: r.cn,
            sn: r.sn,
            given_name: r.given_name,
            mail: r.mail,
            ssh_public_keys: r
                .ssh_public_key
                .as_deref()
                .unwrap_or_default()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            password_hash: r.user_password,
            status: UserStatus::parse(&r.status),
            password_changed_at: r.password_changed_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A POSIX group.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Group {
    /// POSIX gid.
    pub gid_number: Gid,
    /// Group name.
    pub cn: String,
    /// Free text.
    pub description: Option<String>,
    /// Members are administrators of siteward.
    pub is_administrator: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last modification.
    pub updated_at: DateTime<Utc>,
}

/// A site: one internal DNS zone and one subnet.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Site {
    /// Id.
    pub id: SiteId,
    /// Display name.
    pub name: String,
    /// The site's DNS zone, without the trailing dot, lower-case.
    pub internal_domain: String,
    /// `first-last` DHCP range.
    pub dhcp_range: Option<String>,
    /// Netmask, e.g. 255.255.255.0.
    pub subnet_mask: Option<Ipv4Addr>,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Upstream resolvers.
    pub dns_forwarders: Vec<std::net::IpAddr>,
    /// Public address for cross-site A records.
    pub external_ip: Option<std::net::IpAddr>,
    /// Counts the changes to the site's DNS zones (bumped by triggers; the SOA serial).
    pub dns_serial: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last modification.
    pub updated_at: DateTime<Utc>,
}

impl Site {
    /// The site's subnet (gateway masked by the netmask), when both are set.
    pub fn subnet(&self) -> Option<ipnetwork::Ipv4Network> {
        let (gw, mask) = (self.gateway?, self.subnet_mask?);
        let prefix = u32::from(mask).leading_ones() as u8;
        let net = Ipv4Addr::from(u32::from(gw) & u32::from(mask));
        ipnetwork::Ipv4Network::new(net, prefix).ok()
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SiteRow {
    pub id: i64,
    pub name: String,
    pub internal_domain: String,
    pub dhcp_range: Option<String>,
    pub subnet_mask: Option<ipnetwork::IpNetwork>,
    pub gateway: Option<ipnetwork::IpNetwork>,
    pub dns_forwarders: Option<String>,
    pub external_ip: Option<ipnetwork::IpNetwork>,
    pub dns_serial: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn v4(net: Option<ipnetwork::IpNetwork>) -> Option<Ipv4Addr> {
    match net?.ip() {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(_) => None,
    }
}

impl From<SiteRow> for Site {
    fn from(r: SiteRow) -> Self {
        Site {
            id: SiteId(r.id),
            name: r.name,
            internal_domain: r.internal_domain.to_ascii_lowercase(),
            dhcp_range: r.dhcp_range,
            subnet_mask: v4(r.subnet_mask),
            gateway: v4(r.gateway),
            dns_forwarders: r
                .dns_forwarders
                .as_deref()
                .unwrap_or_default()
                .split([',', ' '])
                .filter_map(|s| s.trim().parse().ok())
                .collect(),
            external_ip: r.external_ip.map(|n| n.ip()),
            dns_serial: r.dns_serial,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A Proxmox node, without its credentials (those are read only by the Proxmox client).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Node {
    /// Id.
    pub id: NodeId,
    /// Proxmox host name.
    pub name: String,
    /// Address of the node.
    pub ipv4_address: Option<Ipv4Addr>,
    /// Proxmox API URL.
    pub api_url: Option<String>,
    /// API token id (`user@realm!name`) or user name.
    pub api_token_id_or_username: Option<String>,
    /// Whether a secret is stored (its value is never exposed here).
    pub has_secret: bool,
    /// Skip TLS verification towards this node.
    pub disable_tls_verification: bool,
    /// Storage of CT templates.
    pub image_storage: String,
    /// Storage of container volumes.
    pub volume_storage: String,
    /// Bridge for `net0`.
    pub network_bridge: String,
    /// NVIDIA passthrough available.
    pub nvidia_available: bool,
    /// The node's site.
    pub site_id: SiteId,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last modification.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct NodeRow {
    pub id: i64,
    pub name: String,
    pub ipv4_address: Option<ipnetwork::IpNetwork>,
    pub api_url: Option<String>,
    pub api_token_id_or_username: Option<String>,
    pub has_secret: bool,
    pub disable_tls_verification: bool,
    pub image_storage: String,
    pub volume_storage: String,
    pub network_bridge: String,
    pub nvidia_available: bool,
    pub site_id: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<NodeRow> for Node {
    fn from(r: NodeRow) -> Self {
        Node {
            id: NodeId(r.id),
            name: r.name.to_ascii_lowercase(),
            ipv4_address: v4(r.ipv4_address),
            api_url: r.api_url,
            api_token_id_or_username: r.api_token_id_or_username,
            has_secret: r.has_secret,
            disable_tls_verification: r.disable_tls_verification,
            image_storage: r.image_storage,
            volume_storage: r.volume_storage,
            network_bridge: r.network_bridge,
            nvidia_available: r.nvidia_available,
            site_id: SiteId(r.site_id),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// An LXC container record.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Container {
    /// Id.
    pub id: ContainerId,
    /// Host name (lower-case DNS label).
    pub hostname: String,
    /// Owner's login name.
    pub username: Option<String>,
    /// State.
    pub status: ContainerStatus,
    /// Template it was made from.
    pub template: Option<String>,
    /// The job that created it.
    pub creation_job_id: Option<JobId>,
    /// Its node.
    pub node_id: NodeId,
    /// Its site (its node's).
    pub site_id: SiteId,
    /// Proxmox VMID.
    pub container_id: Option<i32>,
    /// MAC address of `net0`, lower-case colon form.
    pub mac_address: Option<String>,
    /// Static IPv4 address.
    pub ipv4_address: Option<Ipv4Addr>,
    /// AI container flavour, if any.
    pub ai_container: Option<String>,
    /// GPU passthrough requested.
    pub nvidia_requested: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last modification.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ContainerRow {
    pub id: i64,
    pub hostname: String,
    pub username: Option<String>,
    pub status: ContainerStatus,
    pub template: Option<String>,
    pub creation_job_id: Option<i64>,
    pub node_id: i64,
    pub site_id: i64,
    pub container_id: Option<i32>,
    pub mac_address: Option<mac_address::MacAddress>,
    pub ipv4_address: Option<ipnetwork::IpNetwork>,
    pub ai_container: Option<String>,
    pub nvidia_requested: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ContainerRow> for Container {
    fn from(r: ContainerRow) -> Self {
        Container {
            id: ContainerId(r.id),
            hostname: r.hostname.to_ascii_lowercase(),
            username: r.username,
            status: r.status,
            template: r.template,
            creation_job_id: r.creation_job_id.map(JobId),
            node_id: NodeId(r.node_id),
            site_id: SiteId(r.site_id),
            container_id: r.container_id,
            mac_address: r.mac_address.map(|m| m.to_string().to_ascii_lowercase()),
            ipv4_address: v4(r.ipv4_address),
            ai_container: r.ai_container,
            nvidia_requested: r.nvidia_requested,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// An SRV-publishing service of a container (`dns_services` joined with `services`).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct DnsService {
    /// The `services` id.
    pub service_id: ServiceId,
    /// The container offering it.
    pub container_id: ContainerId,
    /// `_name._proto`.
    pub service_name: String,
    /// Port on the container.
    pub container_port: i32,
}

/// An HTTP service exposed through the edge NGINX.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct HttpService {
    /// The `services` id.
    pub service_id: ServiceId,
    /// The container behind it.
    pub container_id: ContainerId,
    /// Port on the container.
    pub container_port: i32,
    /// Label under the external domain.
    pub external_hostname: String,
    /// The external domain.
    pub external_domain_id: ExternalDomainId,
    /// `http` or `https`.
    pub backend_protocol: BackendProtocol,
    /// NGINX must call auth_request.
    pub auth_required: bool,
    /// Groups (by name) whose members may pass auth_request; empty: every active user.
    #[sqlx(default)]
    pub allowed_groups: Vec<String>,
}

/// A TCP or UDP service exposed through the edge NGINX.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct TransportService {
    /// The `services` id.
    pub service_id: ServiceId,
    /// The container behind it.
    pub container_id: ContainerId,
    /// Port on the container.
    pub container_port: i32,
    /// `tcp` or `udp`.
    pub protocol: TransportProtocol,
    /// Port on the edge.
    pub external_port: i32,
    /// NGINX terminates TLS.
    pub use_tls: bool,
}

/// An external domain, without its Cloudflare key.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct ExternalDomain {
    /// Id.
    pub id: ExternalDomainId,
    /// The domain.
    pub domain: String,
    /// ACME account e-mail.
    pub acme_email: Option<String>,
    /// ACME directory URL.
    pub acme_directory: Option<String>,
    /// Cloudflare account e-mail (global-key auth).
    pub cloudflare_api_email: Option<String>,
    /// Whether a Cloudflare key is stored.
    pub has_cloudflare_api_key: bool,
    /// Default site.
    pub site_id: Option<SiteId>,
    /// auth_request server URL.
    pub auth_server: Option<String>,
}

/// A static record of a site's zone.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct DnsRecord {
    /// Id.
    pub id: DnsRecordId,
    /// The site whose zone holds it.
    pub site_id: SiteId,
    /// Owner relative to the zone (`@` for the apex).
    pub name: String,
    /// Record type.
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub rtype: String,
    /// Presentation-format RDATA.
    pub value: String,
    /// TTL in seconds.
    pub ttl: i32,
}

/// An API key's public part, as the snapshot keeps it for authentication.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct ApiKey {
    /// Id.
    pub id: ApiKeyId,
    /// Lookup prefix.
    pub prefix: String,
    /// Argon2 PHC string of the whole key; never serialized.
    #[serde(skip)]
    pub key_hash: String,
    /// Owner.
    pub uid_number: Uid,
    /// Label.
    pub name: String,
    /// Last use.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_enums_spell_the_same_in_serde_and_the_database() {
        for v in ContainerStatus::ALL {
            let json = serde_json::to_value(v).unwrap_or_default();
            assert_eq!(json, v.as_str());
            assert_eq!(v.as_str().parse::<ContainerStatus>().ok(), Some(*v));
        }
        for v in JobState::ALL {
            assert_eq!(serde_json::to_value(v).unwrap_or_default(), v.as_str());
        }
        assert_eq!(
            ContainerStatus::expected(),
            "pending, creating, running, stopped, failed or deleting"
        );
        match "gopher".parse::<BackendProtocol>() {
            Err(StoreError::Invalid { field, message }) => {
                assert_eq!(field, "backend_protocol");
                assert_eq!(message, "must be http or https");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert!(JobState::Running.is_active() && !JobState::Cancelled.is_active());
    }
}
