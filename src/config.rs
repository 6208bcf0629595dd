//! One typed configuration, loaded once: built-in defaults, then the TOML file (`--config`), then
//! the environment (`SITEWARD_*`, `DATABASE_URL`), then command-line flags; later layers win.
//! Unknown keys are errors in every layer, and every error names the setting.
//!
//! Environment names: a key's path upper-cased with `__` between sections, e.g.
//! `SITEWARD_LDAP__BASE_DN` for `ldap.base_dn`, `SITEWARD_HTTP__LISTEN` for `http.listen`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Errors in configuration; the message always names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// An environment variable does not name a setting.
    #[error("environment variable {var} does not name a setting (known: {known})")]
    UnknownEnv {
        /// The variable.
        var: String,
        /// The settings there are.
        known: String,
    },
    /// A value is wrong.
    #[error("invalid setting `{setting}`: {message}")]
    Invalid {
        /// Dotted path of the setting.
        setting: String,
        /// What is wrong.
        message: String,
    },
}

/// A listener address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Do not start this listener.
    Off,
    /// Bind here (port 0 picks a free port).
    On(SocketAddr),
}

impl Listen {
    /// The address, when on.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::Off => None,
            Listen::On(a) => Some(a),
        }
    }
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("false") {
            return Ok(Listen::Off);
        }
        s.parse().map(Listen::On).map_err(|_| {
            format!("`{s}` is not an address like 127.0.0.1:8080 or [::1]:53, nor `off`")
        })
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Anonymous LDAP access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// Anonymous clients read what NSS needs.
    #[default]
    Read,
    /// Anonymous binds and searches are refused.
    Deny,
}

/// Numbers and booleans may arrive as strings from the environment and flags.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + Deserialize<'de>,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Native(T),
        Text(String),
    }
    match Either::<T>::deserialize(d)? {
        Either::Native(v) => Ok(v),
        Either::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the key file, the embedded database and generated TLS material live.
    pub data_dir: PathBuf,
    /// PostgreSQL URL; none runs the embedded database.
    pub database_url: Option<String>,
    /// Base64 of a 32-byte key for secrets at rest; none uses `<data_dir>/secret.key`.
    pub secret_key: Option<String>,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Database pool.
    pub database: DatabaseConfig,
    /// HTTP listener.
    pub http: HttpConfig,
    /// LDAP listener and directory.
    pub ldap: LdapConfig,
    /// DNS listener.
    pub dns: DnsConfig,
    /// Certificates by ACME.
    pub acme: AcmeConfig,
}

/// ACME settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeConfig {
    /// Renew certificates automatically (orders through the API and CLI work either way).
    #[serde(deserialize_with = "lenient")]
    pub enabled: bool,
    /// ACME directory for domains that name none.
    pub directory: String,
    /// Where certificates are written (`<cert_dir>/<domain>/fullchain.pem`, `privkey.pem`);
    /// default `<data_dir>/certs`.
    pub cert_dir: Option<PathBuf>,
    /// Command run (`sh -c`) after new certificate files are written, e.g. an NGINX reload.
    pub hook: Option<String>,
    /// Extra trusted root (PEM) for the CA's own HTTPS, for private CAs.
    pub ca_root: Option<PathBuf>,
    /// How often due certificates are looked for (seconds).
    #[serde(deserialize_with = "lenient")]
    pub check_interval_seconds: u64,
    /// How long one order may take (seconds).
    #[serde(deserialize_with = "lenient")]
    pub order_timeout_seconds: u64,
    /// How long a challenge TXT record may take to be visible at the name servers (seconds).
    #[serde(deserialize_with = "lenient")]
    pub propagation_timeout_seconds: u64,
    /// Cloudflare's API root.
    pub cloudflare_api: String,
    /// Name servers (`ip:port`, comma-separated) to confirm Cloudflare challenge records at,
    /// instead of the zone's own (split DNS).
    #[serde(deserialize_with = "socket_list")]
    pub nameservers: Vec<SocketAddr>,
}

fn socket_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    text_list(d)?
        .iter()
        .map(|s| {
            s.parse().map_err(|_| {
                serde::de::Error::custom(format!("`{s}` is not an address like 192.0.2.1:53"))
            })
        })
        .collect()
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            cert_dir: None,
            hook: None,
            ca_root: None,
            check_interval_seconds: 3600,
            order_timeout_seconds: 120,
            propagation_timeout_seconds: 120,
            cloudflare_api: "https://api.cloudflare.com/client/v4".into(),
            nameservers: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./siteward-data"),
            database_url: None,
            secret_key: None,
            log_format: LogFormat::Text,
            database: DatabaseConfig::default(),
            http: HttpConfig::default(),
            ldap: LdapConfig::default(),
            dns: DnsConfig::default(),
            acme: AcmeConfig::default(),
        }
    }
}

/// Database pool settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Pool size.
    #[serde(deserialize_with = "lenient")]
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
        }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Admin API, login, auth_request, health and metrics.
    pub listen: Listen,
    /// Base URL users reach this server at (links in invites and password resets); defaults to
    /// `http://<listen address>`.
    pub public_url: Option<String>,
    /// Edge ports transport services get, `first-last`.
    #[serde(deserialize_with = "port_range")]
    pub transport_port_range: (i32, i32),
    /// How long a browser session lasts, in hours (1 to 8760).
    #[serde(deserialize_with = "lenient")]
    pub session_ttl_hours: u32,
    /// Also serve HTTP on this Unix socket. An NGINX on the same machine reaches
    /// `/auth/verify` through it for less per request. Whoever can connect to it is believed
    /// about the client's address (`X-Real-IP`), like a trusted proxy: keep it to the edge's
    /// group (`unix_socket_mode`, `unix_socket_group`).
    pub unix_socket: Option<PathBuf>,
    /// The socket's mode, octal (default `0660`: owner and group only).
    #[serde(deserialize_with = "octal_mode")]
    pub unix_socket_mode: u32,
    /// The group the socket belongs to (the edge NGINX's, e.g. `www-data`); default the
    /// process's own.
    pub unix_socket_group: Option<String>,
    /// A listener that serves only `/metrics` and the full `/readyz` (for Prometheus and
    /// operators), or `off`. The other listeners answer `/metrics` only with `metrics_token`.
    pub metrics_listen: Listen,
    /// With this set, `/metrics` on every listener answers `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// Registrations one client address may attempt per hour (1 to 10000).
    #[serde(deserialize_with = "lenient")]
    pub registrations_per_hour: u32,
    /// Days a self-registered account may wait for approval before it is deleted (1 to 3650).
    #[serde(deserialize_with = "lenient")]
    pub pending_account_days: u32,
    /// The same over HTTPS (off by default; an edge NGINX usually terminates TLS).
    pub tls_listen: Listen,
    /// PEM certificate chain for HTTPS; with neither this nor `tls_key`, a self-signed pair is
    /// generated in the data directory on first start. Point it at an ACME-managed certificate
    /// to have renewals picked up.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How often the certificate files are checked for changes (seconds).
    #[serde(deserialize_with = "lenient")]
    pub tls_reload_seconds: u64,
    /// Addresses or networks (`10.0.0.0/24`, comma-separated) of the edge NGINX, whose
    /// `X-Real-IP` and `X-Forwarded-For` (the client's address) are believed; loopback by
    /// default. Anyone else's are removed.
    #[serde(deserialize_with = "network_list")]
    pub trusted_proxies: Vec<ipnetwork::IpNetwork>,
    /// Ports the edge NGINX listens on for HTTP and HTTPS besides 80 and 443 (its
    /// `http_port`/`https_port` render options; comma-separated in the environment). Transport
    /// services cannot use them, nor 80, 443 or the public URL's port.
    #[serde(deserialize_with = "port_list")]
    pub edge_ports: Vec<u16>,
}

fn port_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Port(u16),
        Text(String),
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<Item>),
        One(Item),
    }
    let items = match Either::deserialize(d)? {
        Either::List(l) => l,
        Either::One(i) => vec![i],
    };
    let mut ports = Vec::new();
    for item in items {
        match item {
            Item::Port(p) => ports.push(p),
            Item::Text(t) => {
                for part in t.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    ports.push(part.parse().map_err(|_| {
                        serde::de::Error::custom(format!("`{part}` is not a port (1-65535)"))
                    })?);
                }
            }
        }
    }
    if ports.contains(&0) {
        return Err(serde::de::Error::custom("0 is not a port (1-65535)"));
    }
    Ok(ports)
}

fn network_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnetwork::IpNetwork>, D::Error> {
    text_list(d)?
        .iter()
        .map(|s| {
            s.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{s}` is not an address or network like 10.0.0.5 or 10.0.0.0/24"
                ))
            })
        })
        .collect()
}

/// A list given as a list or as comma-separated text (environment variables), blanks dropped.
fn text_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Text(String),
    }
    let items = match Either::deserialize(d)? {
        Either::List(l) => l,
        Either::Text(t) => t.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: Listen::On(SocketAddr::from(([127, 0, 0, 1], 8080))),
            public_url: None,
            transport_port_range: (2000, 65535),
            session_ttl_hours: 168,
            unix_socket: None,
            unix_socket_mode: 0o660,
            unix_socket_group: None,
            metrics_listen: Listen::Off,
            metrics_token: None,
            registrations_per_hour: 10,
            pending_account_days: 14,
            tls_listen: Listen::Off,
            tls_cert: None,
            tls_key: None,
            tls_reload_seconds: 60,
            trusted_proxies: siteward_admin::default_trusted_proxies(),
            edge_ports: Vec::new(),
        }
    }
}

/// A file mode as octal text (`"0660"`, `"660"`, `"0o660"`). A TOML number is refused: `0o660`
/// and `660` would read as two different modes.
fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let text = String::deserialize(d)
        .map_err(|_| serde::de::Error::custom("write the mode as text, like \"0660\""))?;
    let text = text.trim();
    let digits = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a file mode like 0660")))
}

fn port_range<'de, D: Deserializer<'de>>(d: D) -> Result<(i32, i32), D::Error> {
    let s = String::deserialize(d)?;
    let parsed = s.split_once('-').and_then(|(a, b)| {
        let (a, b): (i32, i32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        (1 <= a && a <= b && b <= 65535).then_some((a, b))
    });
    parsed.ok_or_else(|| {
        serde::de::Error::custom(format!("`{s}` is not a port range like 2000-65535"))
    })
}

/// LDAP settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// Plain LDAP (StartTLS available).
    pub listen: Listen,
    /// LDAP over TLS.
    pub ldaps_listen: Listen,
    /// Suffix of the directory.
    pub base_dn: String,
    /// Anonymous access.
    pub anonymous: Anonymous,
    /// PEM certificate chain for LDAPS and StartTLS; with neither this nor `tls_key`, a
    /// self-signed pair is generated in the data directory on first start.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How often the certificate files are checked for changes (seconds).
    #[serde(deserialize_with = "lenient")]
    pub tls_reload_seconds: u64,
    /// Members of this group read every attribute but passwords (for SSSD/nslcd bind accounts).
    pub service_group: Option<String>,
    /// Whether ordinary users read other users' `mail`.
    #[serde(deserialize_with = "lenient")]
    pub mail_visible_to_users: bool,
    /// Most entries of a non-paged search (0 = no limit).
    #[serde(deserialize_with = "lenient")]
    pub size_limit: usize,
    /// Longest a search may run (seconds).
    #[serde(deserialize_with = "lenient")]
    pub time_limit_seconds: u64,
    /// Largest request accepted (bytes).
    #[serde(deserialize_with = "lenient")]
    pub max_message_bytes: usize,
    /// Most connections served at once.
    #[serde(deserialize_with = "lenient")]
    pub max_connections: usize,
    /// Idle connections are closed after this many seconds.
    #[serde(deserialize_with = "lenient")]
    pub idle_timeout_seconds: u64,
    /// A request not answered within this many seconds closes its connection.
    #[serde(deserialize_with = "lenient")]
    pub request_timeout_seconds: u64,
    /// Most elements of a search filter (each and, or, not and assertion, and each piece of a
    /// substring assertion); larger filters are refused with adminLimitExceeded.
    #[serde(deserialize_with = "lenient")]
    pub max_filter_terms: usize,
    /// Units of work a search may spend narrowing and evaluating entries (one per filter
    /// element visited, plus one per attribute value examined); beyond it adminLimitExceeded.
    #[serde(deserialize_with = "lenient")]
    pub search_work_limit: u64,
    /// Expensive searches evaluated at once, off the async runtime (0: one less than the
    /// cores, at least one).
    #[serde(deserialize_with = "lenient")]
    pub search_threads: usize,
    /// Failed binds of one account within the window after which its binds are refused.
    #[serde(deserialize_with = "lenient")]
    pub bind_failures_per_account: u32,
    /// Failed binds from one client address (IPv6: its /64) within the window after which its
    /// binds are refused.
    #[serde(deserialize_with = "lenient")]
    pub bind_failures_per_address: u32,
    /// How long failed binds count, from the first one (seconds).
    #[serde(deserialize_with = "lenient")]
    pub bind_failure_window_seconds: u64,
}

impl Default for LdapConfig {
    fn default() -> Self {
        Self {
            listen: Listen::On(SocketAddr::from(([127, 0, 0, 1], 3389))),
            ldaps_listen: Listen::Off,
            base_dn: "dc=siteward,dc=internal".into(),
            anonymous: Anonymous::Read,
            tls_cert: None,
            tls_key: None,
            tls_reload_seconds: 60,
            service_group: None,
            mail_visible_to_users: false,
            size_limit: 0,
            time_limit_seconds: 30,
            max_message_bytes: 256 * 1024,
            max_connections: 4096,
            idle_timeout_seconds: 900,
            request_timeout_seconds: 60,
            max_filter_terms: 1000,
            search_work_limit: 1_000_000,
            search_threads: 0,
            bind_failures_per_account: 10,
            bind_failures_per_address: 100,
            bind_failure_window_seconds: 900,
        }
    }
}

/// A list from TOML (an array) or from the environment and flags (comma- or space-separated).
fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Array(Vec<String>),
        Text(String),
    }
    let items = match Either::deserialize(d)? {
        Either::Array(v) => v,
        Either::Text(s) => s
            .split([',', ' '])
            .filter(|x| !x.trim().is_empty())
            .map(|x| x.trim().to_owned())
            .collect(),
    };
    items
        .iter()
        .map(|x| {
            x.parse()
                .map_err(|e| serde::de::Error::custom(format!("`{x}`: {e}")))
        })
        .collect()
}

fn opt_list<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    list(d).map(Some)
}

fn opt_lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr + Deserialize<'de>,
    T::Err: std::fmt::Display,
{
    lenient(d).map(Some)
}

/// DNS settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// UDP and TCP on the same address.
    pub listen: Listen,
    /// Name servers of every zone (NS records); the first is the SOA primary. Names without a
    /// trailing dot are relative to the site's domain (`ns1` = `ns1.<domain>`).
    #[serde(deserialize_with = "list")]
    pub nameservers: Vec<String>,
    /// Address for relative name server names (an A record in each forward zone).
    #[serde(deserialize_with = "opt_lenient")]
    pub nameserver_address: Option<std::net::Ipv4Addr>,
    /// SOA contact (`hostmaster` = `hostmaster.<zone>`).
    pub hostmaster: String,
    /// SOA TTL, seconds.
    #[serde(deserialize_with = "lenient")]
    pub soa_ttl: u32,
    /// SOA refresh, seconds.
    #[serde(deserialize_with = "lenient")]
    pub soa_refresh: u32,
    /// SOA retry, seconds.
    #[serde(deserialize_with = "lenient")]
    pub soa_retry: u32,
    /// SOA expire, seconds.
    #[serde(deserialize_with = "lenient")]
    pub soa_expire: u32,
    /// SOA minimum: the TTL of negative answers, seconds.
    #[serde(deserialize_with = "lenient")]
    pub soa_minimum: u32,
    /// TTL of NS records, seconds.
    #[serde(deserialize_with = "lenient")]
    pub ns_ttl: u32,
    /// TTL of container, node, SRV and PTR records, seconds.
    #[serde(deserialize_with = "lenient")]
    pub record_ttl: u32,
    /// Networks allowed to have other names forwarded; unset = loopback and the sites' subnets;
    /// empty = nobody.
    #[serde(deserialize_with = "opt_list")]
    pub recursion_allow: Option<Vec<ipnetwork::IpNetwork>>,
    /// Networks allowed to transfer zones (AXFR/IXFR); empty = nobody.
    #[serde(deserialize_with = "list")]
    pub axfr_allow: Vec<ipnetwork::IpNetwork>,
    /// Secondaries (`address:port`) sent NOTIFY on every zone change.
    #[serde(deserialize_with = "list")]
    pub notify: Vec<SocketAddr>,
    /// Port of the sites' forwarders.
    #[serde(deserialize_with = "lenient")]
    pub forwarder_port: u16,
    /// Most forwarded queries in flight at once; over it, queries are dropped (UDP) or get
    /// SERVFAIL (TCP).
    #[serde(deserialize_with = "lenient")]
    pub forward_max_inflight: usize,
    /// Most forwarded queries in flight per client address (IPv6: per /64).
    #[serde(deserialize_with = "lenient")]
    pub forward_max_inflight_per_client: usize,
    /// UDP worker threads; 0 = one per core.
    #[serde(deserialize_with = "lenient")]
    pub udp_workers: usize,
    /// Most TCP connections at once.
    #[serde(deserialize_with = "lenient")]
    pub tcp_max_connections: usize,
    /// Idle TCP connections are closed after this many seconds.
    #[serde(deserialize_with = "lenient")]
    pub tcp_idle_timeout_secs: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        let zone = siteward_dns::ZoneSettings::default();
        let server = siteward_dns::Settings::default();
        Self {
            listen: Listen::On(SocketAddr::from(([127, 0, 0, 1], 5300))),
            nameservers: zone.nameservers,
            nameserver_address: zone.nameserver_address,
            hostmaster: zone.hostmaster,
            soa_ttl: zone.soa_ttl,
            soa_refresh: zone.refresh,
            soa_retry: zone.retry,
            soa_expire: zone.expire,
            soa_minimum: zone.minimum,
            ns_ttl: zone.ns_ttl,
            record_ttl: zone.record_ttl,
            recursion_allow: server.recursion_allow,
            axfr_allow: server.axfr_allow,
            notify: server.notify,
            forwarder_port: server.forwarder_port,
            forward_max_inflight: server.forward_bounds.max_inflight,
            forward_max_inflight_per_client: server.forward_bounds.max_inflight_per_client,
            udp_workers: server.udp_workers,
            tcp_max_connections: server.tcp_max_connections,
            tcp_idle_timeout_secs: server.tcp_idle_timeout.as_secs(),
        }
    }
}

impl DnsConfig {
    /// The name servers' names that live inside every site's zone (those without a trailing
    /// dot), reserved there so that no container or node takes them.
    pub fn reserved_names(&self) -> Vec<String> {
        self.nameservers
            .iter()
            .filter(|n| !n.ends_with('.'))
            .map(|n| n.to_ascii_lowercase())
            .collect()
    }

    /// The DNS server's settings.
    pub fn settings(&self) -> siteward_dns::Settings {
        siteward_dns::Settings {
            zone: siteward_dns::ZoneSettings {
                nameservers: self.nameservers.clone(),
                nameserver_address: self.nameserver_address,
                hostmaster: self.hostmaster.clone(),
                soa_ttl: self.soa_ttl,
                refresh: self.soa_refresh,
                retry: self.soa_retry,
                expire: self.soa_expire,
                minimum: self.soa_minimum,
                ns_ttl: self.ns_ttl,
                record_ttl: self.record_ttl,
            },
            recursion_allow: self.recursion_allow.clone(),
            axfr_allow: self.axfr_allow.clone(),
            notify: self.notify.clone(),
            forwarder_port: self.forwarder_port,
            forward_bounds: siteward_dns::forward::Bounds {
                max_inflight: self.forward_max_inflight.max(1),
                max_inflight_per_client: self.forward_max_inflight_per_client.max(1),
            },
            udp_workers: self.udp_workers,
            tcp_max_connections: self.tcp_max_connections.max(1),
            tcp_idle_timeout: std::time::Duration::from_secs(self.tcp_idle_timeout_secs.max(1)),
            ..siteward_dns::Settings::default()
        }
    }
}

/// Every setting's dotted path, for mapping environment variables.
const SETTINGS: &[&str] = &[
    "data_dir",
    "database_url",
    "secret_key",
    "log_format",
    "database.max_connections",
    "http.listen",
    "http.public_url",
    "http.transport_port_range",
    "http.session_ttl_hours",
    "http.unix_socket",
    "http.unix_socket_mode",
    "http.unix_socket_group",
    "http.metrics_listen",
    "http.metrics_token",
    "http.registrations_per_hour",
    "http.pending_account_days",
    "http.trusted_proxies",
    "http.edge_ports",
    "acme.enabled",
    "acme.directory",
    "acme.cert_dir",
    "acme.hook",
    "acme.ca_root",
    "acme.check_interval_seconds",
    "acme.order_timeout_seconds",
    "acme.propagation_timeout_seconds",
    "acme.cloudflare_api",
    "acme.nameservers",
    "http.tls_listen",
    "http.tls_cert",
    "http.tls_key",
    "http.tls_reload_seconds",
    "ldap.listen",
    "ldap.ldaps_listen",
    "ldap.base_dn",
    "ldap.anonymous",
    "ldap.tls_cert",
    "ldap.tls_key",
    "ldap.tls_reload_seconds",
    "ldap.service_group",
    "ldap.mail_visible_to_users",
    "ldap.size_limit",
    "ldap.time_limit_seconds",
    "ldap.max_message_bytes",
    "ldap.max_connections",
    "ldap.idle_timeout_seconds",
    "ldap.request_timeout_seconds",
    "ldap.max_filter_terms",
    "ldap.search_work_limit",
    "ldap.search_threads",
    "ldap.bind_failures_per_account",
    "ldap.bind_failures_per_address",
    "ldap.bind_failure_window_seconds",
    "dns.listen",
    "dns.nameservers",
    "dns.nameserver_address",
    "dns.hostmaster",
    "dns.soa_ttl",
    "dns.soa_refresh",
    "dns.soa_retry",
    "dns.soa_expire",
    "dns.soa_minimum",
    "dns.ns_ttl",
    "dns.record_ttl",
    "dns.recursion_allow",
    "dns.axfr_allow",
    "dns.notify",
    "dns.forwarder_port",
    "dns.forward_max_inflight",
    "dns.forward_max_inflight_per_client",
    "dns.udp_workers",
    "dns.tcp_max_connections",
    "dns.tcp_idle_timeout_secs",
];

/// Sets `path` (dotted) to a string value in `table`.
fn set(table: &mut toml::Table, path: &str, value: String) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut cur = table;
    for part in parts {
        let entry = cur
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else {
            return;
        };
        cur = next;
    }
    cur.insert(last.to_owned(), toml::Value::String(value));
}

/// Loads the layers. `env` is the process environment (passed in so tests control it); `flags`
/// are `(dotted path, value)` pairs from the command line.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &[(&str, String)],
) -> Result<Config, ConfigError> {
    let mut table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::Syntax {
                    path: path.display().to_string(),
                    message: e.message().to_owned(),
                })?
        }
        None => toml::Table::new(),
    };
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    // DATABASE_URL first so that SITEWARD_DATABASE_URL overrides it.
    env.sort_by_key(|(k, _)| k != "DATABASE_URL");
    for (key, value) in env {
        if key == "DATABASE_URL" {
            set(&mut table, "database_url", value);
            continue;
        }
        let Some(rest) = key.strip_prefix("SITEWARD_") else {
            continue;
        };
        let path = rest.to_ascii_lowercase().replace("__", ".");
        if !SETTINGS.contains(&path.as_str()) {
            return Err(ConfigError::UnknownEnv {
                var: key,
                known: SETTINGS
                    .iter()
                    .map(|s| format!("SITEWARD_{}", s.to_ascii_uppercase().replace('.', "__")))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        set(&mut table, &path, value);
    }
    for (path, value) in flags {
        set(&mut table, path, value.clone());
    }
    let config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let setting = e.path().to_string();
            ConfigError::Invalid {
                setting: if setting == "." {
                    "(top level)".into()
                } else {
                    setting
                },
                message: e.into_inner().to_string(),
            }
        })?;
    if !config.ldap.base_dn.contains('=') {
        return Err(ConfigError::Invalid {
            setting: "ldap.base_dn".into(),
            message: format!(
                "`{}` is not a DN like dc=example,dc=org",
                config.ldap.base_dn
            ),
        });
    }
    if config.ldap.tls_cert.is_some() != config.ldap.tls_key.is_some() {
        return Err(ConfigError::Invalid {
            setting: "ldap.tls_cert".into(),
            message: "set both ldap.tls_cert and ldap.tls_key, or neither".into(),
        });
    }
    for (setting, value) in [
        ("ldap.max_connections", config.ldap.max_connections as u64),
        (
            "ldap.max_message_bytes",
            config.ldap.max_message_bytes as u64,
        ),
        (
            "ldap.idle_timeout_seconds",
            config.ldap.idle_timeout_seconds,
        ),
        (
            "ldap.request_timeout_seconds",
            config.ldap.request_timeout_seconds,
        ),
        ("ldap.time_limit_seconds", config.ldap.time_limit_seconds),
        ("ldap.tls_reload_seconds", config.ldap.tls_reload_seconds),
        ("ldap.max_filter_terms", config.ldap.max_filter_terms as u64),
        ("ldap.search_work_limit", config.ldap.search_work_limit),
        (
            "ldap.bind_failures_per_account",
            u64::from(config.ldap.bind_failures_per_account),
        ),
        (
            "ldap.bind_failures_per_address",
            u64::from(config.ldap.bind_failures_per_address),
        ),
        (
            "ldap.bind_failure_window_seconds",
            config.ldap.bind_failure_window_seconds,
        ),
        ("http.tls_reload_seconds", config.http.tls_reload_seconds),
        (
            "acme.check_interval_seconds",
            config.acme.check_interval_seconds,
        ),
        (
            "acme.order_timeout_seconds",
            config.acme.order_timeout_seconds,
        ),
    ] {
        if value == 0 {
            return Err(ConfigError::Invalid {
                setting: setting.into(),
                message: "must be at least 1".into(),
            });
        }
    }
    if config.dns.nameservers.is_empty() {
        return Err(ConfigError::Invalid {
            setting: "dns.nameservers".into(),
            message: "at least one name server is needed (the SOA primary)".into(),
        });
    }
    for ns in config
        .dns
        .nameservers
        .iter()
        .chain([&config.dns.hostmaster])
    {
        if let Err(e) = siteward_dns::name::parse_text(ns, &[0]) {
            return Err(ConfigError::Invalid {
                setting: "dns.nameservers / dns.hostmaster".into(),
                message: e.to_string(),
            });
        }
    }
    if config.database.max_connections == 0 {
        return Err(ConfigError::Invalid {
            setting: "database.max_connections".into(),
            message: "must be at least 1".into(),
        });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("tempfile: {e}"));
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        f
    }

    #[test]
    fn defaults() -> Result<(), ConfigError> {
        let c = load(None, env(&[]), &[])?;
        assert_eq!(c, Config::default());
        assert_eq!(
            c.http.listen,
            "127.0.0.1:8080"
                .parse()
                .map_err(|e: String| ConfigError::Invalid {
                    setting: e.clone(),
                    message: e
                })?
        );
        assert_eq!(
            c.ldap.listen.addr(),
            Some(SocketAddr::from(([127, 0, 0, 1], 3389)))
        );
        assert_eq!(
            c.dns.listen.addr(),
            Some(SocketAddr::from(([127, 0, 0, 1], 5300)))
        );
        assert_eq!(c.data_dir, PathBuf::from("./siteward-data"));
        Ok(())
    }

    #[test]
    fn precedence_flags_over_env_over_file() -> Result<(), ConfigError> {
        let f = file(
            "data_dir = \"/from/file\"\ndatabase_url = \"postgres://file\"\n[ldap]\nbase_dn = \"dc=file\"\nlisten = \"127.0.0.1:1\"\n[database]\nmax_connections = 3\n",
        );
        // File only.
        let c = load(Some(f.path()), env(&[]), &[])?;
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.ldap.base_dn, "dc=file");
        assert_eq!(c.database.max_connections, 3);
        // Environment beats the file; SITEWARD_DATABASE_URL beats DATABASE_URL.
        let c = load(
            Some(f.path()),
            env(&[
                ("SITEWARD_LDAP__BASE_DN", "dc=env"),
                ("SITEWARD_DATABASE__MAX_CONNECTIONS", "7"),
                ("SITEWARD_DATABASE_URL", "postgres://siteward-env"),
                ("DATABASE_URL", "postgres://plain-env"),
                ("UNRELATED", "x"),
            ]),
            &[],
        )?;
        assert_eq!(c.ldap.base_dn, "dc=env");
        assert_eq!(c.database.max_connections, 7);
        assert_eq!(c.database_url.as_deref(), Some("postgres://siteward-env"));
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        // DATABASE_URL alone beats the file.
        let c = load(
            Some(f.path()),
            env(&[("DATABASE_URL", "postgres://plain-env")]),
            &[],
        )?;
        assert_eq!(c.database_url.as_deref(), Some("postgres://plain-env"));
        // Flags beat both.
        let c = load(
            Some(f.path()),
            env(&[("SITEWARD_LDAP__BASE_DN", "dc=env")]),
            &[
                ("ldap.base_dn", "dc=flag".into()),
                ("ldap.listen", "off".into()),
            ],
        )?;
        assert_eq!(c.ldap.base_dn, "dc=flag");
        assert_eq!(c.ldap.listen, Listen::Off);
        Ok(())
    }

    #[test]
    fn dns_settings_from_file_env_and_flags() -> Result<(), ConfigError> {
        let f = file(
            "[dns]\nnameservers = [\"ns1\", \"ns2.example.org.\"]\nsoa_minimum = 30\naxfr_allow = [\"127.0.0.0/8\"]\n",
        );
        let c = load(
            Some(f.path()),
            env(&[
                ("SITEWARD_DNS__NOTIFY", "127.0.0.1:5301, 127.0.0.2:53"),
                ("SITEWARD_DNS__RECURSION_ALLOW", "10.0.0.0/8"),
            ]),
            &[("dns.record_ttl", "15".into())],
        )?;
        assert_eq!(c.dns.nameservers, ["ns1", "ns2.example.org."]);
        assert_eq!(c.dns.soa_minimum, 30);
        assert_eq!(c.dns.notify.len(), 2);
        assert_eq!(c.dns.record_ttl, 15);
        let s = c.dns.settings();
        assert_eq!(s.zone.minimum, 30);
        assert_eq!(s.axfr_allow.len(), 1);
        assert_eq!(s.recursion_allow.map(|r| r.len()), Some(1));
        // Unset recursion_allow keeps the default (loopback and site subnets).
        assert_eq!(
            load(None, env(&[]), &[])?.dns.settings().recursion_allow,
            None
        );
        let err = load(None, env(&[("SITEWARD_DNS__AXFR_ALLOW", "not-a-net")]), &[])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("dns.axfr_allow"), "{err}");
        let err = load(None, env(&[]), &[("dns.nameservers", "".into())])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("dns.nameservers"), "{err}");
        Ok(())
    }

    #[test]
    fn socket_mode_metrics_and_registration_settings() -> Result<(), ConfigError> {
        let c = load(None, env(&[]), &[])?;
        assert_eq!(c.http.unix_socket_mode, 0o660);
        assert_eq!(c.http.metrics_listen, Listen::Off);
        assert_eq!(c.http.registrations_per_hour, 10);
        assert_eq!(c.http.pending_account_days, 14);
        let f = file("[http]\nunix_socket_mode = \"0600\"\nunix_socket_group = \"www-data\"\nmetrics_token = \"t0ken\"\n");
        let c = load(
            Some(f.path()),
            env(&[("SITEWARD_HTTP__PENDING_ACCOUNT_DAYS", "30")]),
            &[("http.metrics_listen", "127.0.0.1:0".into())],
        )?;
        assert_eq!(c.http.unix_socket_mode, 0o600);
        assert_eq!(c.http.unix_socket_group.as_deref(), Some("www-data"));
        assert_eq!(c.http.metrics_token.as_deref(), Some("t0ken"));
        assert_eq!(c.http.pending_account_days, 30);
        assert!(matches!(c.http.metrics_listen, Listen::On(_)));
        for bad in ["\"0999\"", "\"rw-rw----\"", "432", "\"01777\""] {
            let f = file(&format!("[http]\nunix_socket_mode = {bad}\n"));
            let err = load(Some(f.path()), env(&[]), &[])
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(err.contains("unix_socket_mode"), "{bad}: {err}");
        }
        Ok(())
    }

    #[test]
    fn forwarding_bounds_and_reserved_names() -> Result<(), ConfigError> {
        let d = load(None, env(&[]), &[])?.dns;
        assert_eq!(
            d.settings().forward_bounds,
            siteward_dns::forward::Bounds {
                max_inflight: 256,
                max_inflight_per_client: 32
            }
        );
        assert_eq!(d.reserved_names(), ["ns1"]);
        let f = file("[dns]\nforward_max_inflight = 64\nnameservers = [\"NS1\", \"dns.infra\", \"ns.example.org.\"]\n");
        let c = load(
            Some(f.path()),
            env(&[("SITEWARD_DNS__FORWARD_MAX_INFLIGHT_PER_CLIENT", "4")]),
            &[],
        )?;
        let b = c.dns.settings().forward_bounds;
        assert_eq!((b.max_inflight, b.max_inflight_per_client), (64, 4));
        // Only names inside the zones are reserved there.
        assert_eq!(c.dns.reserved_names(), ["ns1", "dns.infra"]);
        let err = load(
            None,
            env(&[("SITEWARD_DNS__FORWARD_MAX_INFLIGHT", "many")]),
            &[],
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(err.contains("dns.forward_max_inflight"), "{err}");
        Ok(())
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let f = file("[ldap]\nbase_dn = \"dc=x\"\nbogus = 1\n");
        let err = load(Some(f.path()), env(&[]), &[])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ldap.bogus") || err.contains("bogus"), "{err}");
        let f = file("colour = \"blue\"\n");
        let err = load(Some(f.path()), env(&[]), &[])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        let err = load(None, env(&[("SITEWARD_NOPE", "1")]), &[])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("SITEWARD_NOPE"), "{err}");
    }

    #[test]
    fn ldap_settings_from_every_layer() -> Result<(), ConfigError> {
        let f = file("[ldap]\nservice_group = \"ldapreaders\"\nmax_connections = 10\n");
        let c = load(
            Some(f.path()),
            env(&[
                ("SITEWARD_LDAP__SIZE_LIMIT", "500"),
                ("SITEWARD_LDAP__MAIL_VISIBLE_TO_USERS", "true"),
            ]),
            &[
                ("ldap.tls_cert", "/c.pem".into()),
                ("ldap.tls_key", "/k.pem".into()),
            ],
        )?;
        assert_eq!(c.ldap.service_group.as_deref(), Some("ldapreaders"));
        assert_eq!(c.ldap.max_connections, 10);
        assert_eq!(c.ldap.size_limit, 500);
        assert!(c.ldap.mail_visible_to_users);
        assert_eq!(c.ldap.tls_cert, Some(PathBuf::from("/c.pem")));
        let err = load(None, env(&[]), &[("ldap.tls_cert", "/c.pem".into())])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("ldap.tls_cert"), "{err}");
        let err = load(None, env(&[("SITEWARD_LDAP__MAX_CONNECTIONS", "0")]), &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("ldap.max_connections"), "{err}");
        Ok(())
    }

    #[test]
    fn ldap_search_and_bind_limits() -> Result<(), ConfigError> {
        let c = load(None, env(&[]), &[])?;
        assert_eq!(c.ldap.max_filter_terms, 1000);
        assert_eq!(c.ldap.search_work_limit, 1_000_000);
        assert_eq!(c.ldap.search_threads, 0);
        assert_eq!(c.ldap.bind_failures_per_account, 10);
        assert_eq!(c.ldap.bind_failures_per_address, 100);
        assert_eq!(c.ldap.bind_failure_window_seconds, 900);
        let f = file(
            "[ldap]\nmax_filter_terms = 50\nsearch_threads = 3\nbind_failures_per_account = 5\n",
        );
        let c = load(
            Some(f.path()),
            env(&[
                ("SITEWARD_LDAP__SEARCH_WORK_LIMIT", "5000"),
                ("SITEWARD_LDAP__BIND_FAILURES_PER_ADDRESS", "20"),
            ]),
            &[("ldap.bind_failure_window_seconds", "60".into())],
        )?;
        assert_eq!(c.ldap.max_filter_terms, 50);
        assert_eq!(c.ldap.search_threads, 3);
        assert_eq!(c.ldap.bind_failures_per_account, 5);
        assert_eq!(c.ldap.search_work_limit, 5000);
        assert_eq!(c.ldap.bind_failures_per_address, 20);
        assert_eq!(c.ldap.bind_failure_window_seconds, 60);
        for (var, value, setting) in [
            (
                "SITEWARD_LDAP__MAX_FILTER_TERMS",
                "0",
                "ldap.max_filter_terms",
            ),
            (
                "SITEWARD_LDAP__SEARCH_WORK_LIMIT",
                "0",
                "ldap.search_work_limit",
            ),
            (
                "SITEWARD_LDAP__BIND_FAILURES_PER_ACCOUNT",
                "0",
                "ldap.bind_failures_per_account",
            ),
            (
                "SITEWARD_LDAP__BIND_FAILURES_PER_ACCOUNT",
                "-1",
                "ldap.bind_failures_per_account",
            ),
            (
                "SITEWARD_LDAP__BIND_FAILURES_PER_ADDRESS",
                "0",
                "ldap.bind_failures_per_address",
            ),
            (
                "SITEWARD_LDAP__BIND_FAILURE_WINDOW_SECONDS",
                "0",
                "ldap.bind_failure_window_seconds",
            ),
        ] {
            let err = load(None, env(&[(var, value)]), &[])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(setting), "{var}={value}: {err}");
        }
        Ok(())
    }

    #[test]
    fn trusted_proxies_from_text_or_a_list() -> Result<(), ConfigError> {
        let c = load(None, env(&[]), &[])?;
        assert_eq!(
            c.http.trusted_proxies,
            siteward_admin::default_trusted_proxies()
        );
        let c = load(
            None,
            env(&[("SITEWARD_HTTP__TRUSTED_PROXIES", "10.0.0.2, 10.1.0.0/16")]),
            &[],
        )?;
        let shown: Vec<String> = c
            .http
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(shown, ["10.0.0.2/32", "10.1.0.0/16"]);
        let f = file("[http]\ntrusted_proxies = [\"::1\"]\n");
        let c = load(Some(f.path()), env(&[]), &[])?;
        assert_eq!(c.http.trusted_proxies.len(), 1);
        let err = load(
            None,
            env(&[("SITEWARD_HTTP__TRUSTED_PROXIES", "10.0.0.0/33")]),
            &[],
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("trusted_proxies") || err.contains("10.0.0.0/33"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn edge_ports_from_text_or_a_list() -> Result<(), ConfigError> {
        assert!(load(None, env(&[]), &[])?.http.edge_ports.is_empty());
        let c = load(
            None,
            env(&[("SITEWARD_HTTP__EDGE_PORTS", "8080, 8443")]),
            &[],
        )?;
        assert_eq!(c.http.edge_ports, [8080, 8443]);
        let c = load(None, env(&[("SITEWARD_HTTP__EDGE_PORTS", "8443")]), &[])?;
        assert_eq!(c.http.edge_ports, [8443]);
        let f = file("[http]\nedge_ports = [80, 8443]\n");
        assert_eq!(
            load(Some(f.path()), env(&[]), &[])?.http.edge_ports,
            [80, 8443]
        );
        for bad in ["http", "0", "70000"] {
            let err = load(None, env(&[("SITEWARD_HTTP__EDGE_PORTS", bad)]), &[])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("edge_ports"), "{bad}: {err}");
        }
        Ok(())
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = load(None, env(&[]), &[("http.listen", "not-an-address".into())])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.listen"), "{err}");
        let err = load(
            None,
            env(&[("SITEWARD_DATABASE__MAX_CONNECTIONS", "many")]),
            &[],
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(err.contains("database.max_connections"), "{err}");
        let err = load(None, env(&[("SITEWARD_LOG_FORMAT", "xml")]), &[])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("log_format"), "{err}");
        let f = file("[ldap]\nbase_dn = 5\n");
        let err = load(Some(f.path()), env(&[]), &[])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ldap.base_dn"), "{err}");
        let f = file("this is = not toml [");
        let err = load(Some(f.path()), env(&[]), &[])
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid TOML"), "{err}");
    }
}
