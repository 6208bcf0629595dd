//! The edge NGINX configuration of a site, rendered from the snapshot: a pure function of the
//! site's services, its external domains and [`RenderOptions`], so the same input always gives
//! the same text (and the same `ETag`).
//!
//! Layout of the output: `http` with one upstream per siteward auth server and per backend, a
//! default server that refuses unknown hosts, per domain an HTTP server (ACME HTTP-01 passed to
//! siteward, everything else redirected to HTTPS) and a TLS catch-all answering 404, the login
//! host when `public_url` lies under the domain, and one TLS server per HTTP service (with
//! `auth_request` when `auth_required`); then `stream` with one server per transport service.
//!
//! Architecture Invariant: a service never replaces a server of the edge's own. An HTTP service
//! named like a sign-in host or another external domain's apex, and a transport service on the
//! edge's HTTP(S) ports, are left out (with a comment and a warning), whatever the database
//! holds; the API and migration 0014 refuse them in the first place (see [`super::reserved`]).
//! Transport services are never TLS-terminated by the edge (see `reserved`).

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::Deserialize;
use siteward_store::{ExternalDomain, HttpService, Naming, SiteView, TransportService};

/// Identity headers `/auth/verify` returns and the backend receives; client-sent copies are
/// always overwritten (empty for unprotected services, which NGINX then drops).
pub const IDENTITY_HEADERS: [&str; 10] = [
    "X-User-ID",
    "X-Username",
    "X-User-First-Name",
    "X-User-Last-Name",
    "X-Email",
    "X-Groups",
    "Remote-User",
    "Remote-Groups",
    "Remote-Name",
    "Remote-Email",
];

/// How the edge is laid out. Every field has a production default.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RenderOptions {
    /// Address to listen on (default: all).
    pub listen: Option<String>,
    /// Plain HTTP port (default 80).
    pub http_port: u16,
    /// TLS port (default 443).
    pub https_port: u16,
    /// Certificates: `<cert_dir>/<domain>/fullchain.pem` and `privkey.pem`. Default: where this
    /// server's ACME side writes them (`acme.cert_dir`), else `/etc/siteward/certs`.
    pub cert_dir: Option<String>,
    /// Directory for NGINX's temporary files (default: NGINX's compiled-in paths).
    pub temp_dir: Option<String>,
    /// Files included at the top for dynamic modules (`stream`); empty for none.
    pub modules_include: String,
    /// URL the edge reaches siteward at, for every domain (default: the domain's
    /// `auth_server`, else this server's public URL).
    pub siteward_url: Option<String>,
    /// Unix socket the edge reaches siteward at instead (`http.unix_socket`, when NGINX runs on
    /// the same machine): cheaper per `/auth/verify` than TCP. Overrides `siteward_url`.
    pub siteward_socket: Option<String>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            listen: None,
            http_port: 80,
            https_port: 443,
            cert_dir: None,
            temp_dir: None,
            modules_include: "/etc/nginx/modules-enabled/*.conf".into(),
            siteward_url: None,
            siteward_socket: None,
        }
    }
}

impl RenderOptions {
    /// The certificate directory in effect.
    pub fn cert_dir(&self) -> &str {
        self.cert_dir.as_deref().unwrap_or("/etc/siteward/certs")
    }
}

/// Why a configuration cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RenderError {
    /// An option would break or inject into the configuration.
    #[error("{field} contains characters that are not allowed in an NGINX configuration")]
    Unsafe {
        /// The option.
        field: &'static str,
    },
    /// A URL option or auth server is not an http(s) URL with a host.
    #[error("{field} must be an http(s) URL with a host")]
    BadUrl {
        /// The option.
        field: &'static str,
    },
}

/// Refuses a path NGINX would misread (or that would inject directives).
pub fn safe_path(field: &'static str, v: &str) -> Result<(), RenderError> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-*+:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RenderError::Unsafe { field })
    }
}

fn safe_name(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// `scheme`, `host:port` of an http(s) URL.
fn upstream_of(field: &'static str, url: &str) -> Result<(String, String), RenderError> {
    let u = url::Url::parse(url).map_err(|_| RenderError::BadUrl { field })?;
    let scheme = u.scheme().to_owned();
    if scheme != "http" && scheme != "https" {
        return Err(RenderError::BadUrl { field });
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) if safe_name(d) => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        _ => return Err(RenderError::BadUrl { field }),
    };
    let port = u.port_or_known_default().unwrap_or(80);
    Ok((scheme, format!("{host}:{port}")))
}

struct Ctx<'a> {
    o: &'a RenderOptions,
    listen: String,
}

impl Ctx<'_> {
    fn addr(&self, port: u16) -> String {
        format!("{}{port}", self.listen)
    }
    fn certs(&self, out: &mut String, domain: &str, indent: &str) {
        let _ = writeln!(
            out,
            "{indent}ssl_certificate {dir}/{domain}/fullchain.pem;\n{indent}ssl_certificate_key {dir}/{domain}/privkey.pem;",
            dir = self.o.cert_dir().trim_end_matches('/'),
        );
    }
    fn https_suffix(&self) -> String {
        if self.o.https_port == 443 {
            String::new()
        } else {
            format!(":{}", self.o.https_port)
        }
    }
}

fn var(header: &str) -> String {
    header.to_ascii_lowercase().replace('-', "_")
}

/// Renders the complete `nginx.conf` of `site`.
///
/// `pending` names the domains whose certificate siteward is to obtain and has not yet: they get
/// their plain-HTTP server (so HTTP-01 can pass through and get it) but no TLS server, since
/// `nginx -t` refuses certificate files that do not exist yet; the next render after issuance
/// adds them.
pub fn render(
    site: &SiteView,
    naming: &Naming,
    public_url: &str,
    o: &RenderOptions,
    pending: &BTreeSet<siteward_store::ExternalDomainId>,
) -> Result<String, RenderError> {
    safe_path("cert_dir", o.cert_dir())?;
    if let Some(t) = &o.temp_dir {
        safe_path("temp_dir", t)?;
    }
    if !o.modules_include.is_empty() {
        safe_path("modules_include", &o.modules_include)?;
    }
    let listen = match &o.listen {
        None => String::new(),
        Some(a) => {
            let ip: std::net::IpAddr = a
                .parse()
                .map_err(|_| RenderError::Unsafe { field: "listen" })?;
            match ip {
                std::net::IpAddr::V4(v) => format!("{v}:"),
                std::net::IpAddr::V6(v) => format!("[{v}]:"),
            }
        }
    };
    let cx = Ctx { o, listen };
    let ids: BTreeSet<_> = site.containers.iter().map(|c| c.id).collect();
    let http: Vec<&HttpService> = naming
        .http_services
        .iter()
        .filter(|s| ids.contains(&s.container_id))
        .collect();
    let transport: Vec<&TransportService> = naming
        .transport_services
        .iter()
        .filter(|s| ids.contains(&s.container_id))
        .collect();
    let used: BTreeSet<_> = http.iter().map(|s| s.external_domain_id).collect();
    let domains: Vec<&ExternalDomain> = naming
        .external_domains
        .iter()
        .filter(|d| used.contains(&d.id) || d.site_id == Some(site.site.id))
        .filter(|d| safe_name(&d.domain))
        .collect();
    let ip_of = |cid| {
        naming
            .containers
            .get(&cid)
            .and_then(|c: &std::sync::Arc<siteward_store::Container>| c.ipv4_address)
    };
    // Each domain's sign-in host (see `redirect::login_base`), and whether it is reached over TLS.
    let all_domains: Vec<&str> = naming
        .external_domains
        .iter()
        .map(|d| d.domain.as_str())
        .collect();
    let login_host = |domain: &str| {
        let base = super::redirect::login_base(public_url, domain, &all_domains, None);
        url::Url::parse(&base).ok().and_then(|u| {
            let tls = u.scheme() == "https";
            u.host_str().map(|h| (h.to_ascii_lowercase(), tls))
        })
    };

    // Hosts the edge serves itself, which no service may replace: every domain's sign-in host
    // and every external domain's apex.
    let mut edge_hosts: BTreeSet<String> = naming
        .external_domains
        .iter()
        .map(|d| d.domain.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    for d in &all_domains {
        if let Some((h, _)) = login_host(d) {
            edge_hosts.insert(h);
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Edge NGINX of site {} ({}). Generated by siteward; `siteward nginx-sync` overwrites it.",
        site.site.id.0,
        site.site.name.replace(['\n', '\r'], " ")
    );
    if !o.modules_include.is_empty() {
        let _ = writeln!(out, "include {};", o.modules_include);
    }
    out.push_str("worker_processes auto;\nevents {\n    worker_connections 4096;\n}\n\nhttp {\n");
    out.push_str(
        "    server_tokens off;\n    client_max_body_size 100m;\n    proxy_http_version 1.1;\n    \
proxy_connect_timeout 10s;\n    proxy_send_timeout 300s;\n    proxy_read_timeout 300s;\n    \
ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:siteward_tls:10m;\n    \
server_names_hash_bucket_size 128;\n",
    );
    if let Some(t) = &o.temp_dir {
        let t = t.trim_end_matches('/');
        for (d, sub) in [
            ("client_body_temp_path", "body"),
            ("proxy_temp_path", "proxy"),
            ("fastcgi_temp_path", "fastcgi"),
            ("uwsgi_temp_path", "uwsgi"),
            ("scgi_temp_path", "scgi"),
        ] {
            let _ = writeln!(out, "    {d} {t}/{sub};");
        }
    }
    out.push_str(
        "\n    # WebSockets: Upgrade when asked, else keep the upstream connection alive.\n    \
map $http_upgrade $sw_connection {\n        default upgrade;\n        '' '';\n    }\n    \
# The siteward session cookie never reaches a backend: each map removes one copy (a browser\n    \
# may hold a host-only and a domain cookie); should a third remain, no cookie is passed.\n    \
map $http_cookie $sw_cookie_1 {\n        default $http_cookie;\n        \
\"~^(?<sw_a>(?:.*;)?)\\s*siteward_session=[^;]*;?\\s*(?<sw_b>.*)$\" \"$sw_a$sw_b\";\n    }\n    \
map $sw_cookie_1 $sw_cookie_2 {\n        default $sw_cookie_1;\n        \
\"~^(?<sw_c>(?:.*;)?)\\s*siteward_session=[^;]*;?\\s*(?<sw_d>.*)$\" \"$sw_c$sw_d\";\n    }\n    \
map $sw_cookie_2 $sw_backend_cookie {\n        default $sw_cookie_2;\n        \
\"~(?:^|;)\\s*siteward_session=\" \"\";\n    }\n\n",
    );

    // Upstreams: siteward per domain, and every backend.
    let mut auth_upstream = std::collections::BTreeMap::new();
    for d in &domains {
        let url = o
            .siteward_url
            .clone()
            .or_else(|| d.auth_server.clone())
            .unwrap_or_else(|| public_url.to_owned());
        let (scheme, hostport) = match &o.siteward_socket {
            Some(path) => {
                safe_path("siteward_socket", path)?;
                ("http".to_owned(), format!("unix:{path}"))
            }
            None => upstream_of("siteward_url", &url)?,
        };
        let _ = writeln!(
            out,
            "    upstream siteward_{id} {{\n        server {hostport};\n        keepalive 32;\n    }}",
            id = d.id.0
        );
        auth_upstream.insert(d.id, format!("{scheme}://siteward_{}", d.id.0));
    }
    for s in &http {
        if let Some(ip) = ip_of(s.container_id) {
            let _ = writeln!(
                out,
                "    upstream backend_{sid} {{\n        server {ip}:{port};\n        keepalive 16;\n    }}",
                sid = s.service_id.0,
                port = s.container_port
            );
        }
    }

    // Unknown hosts: 404 over HTTP, no TLS handshake.
    let _ = writeln!(
        out,
        "\n    server {{\n        listen {} default_server;\n        listen {} ssl default_server;\n        ssl_reject_handshake on;\n        return 404;\n    }}",
        cx.addr(o.http_port),
        cx.addr(o.https_port)
    );

    for d in &domains {
        let Some(up) = auth_upstream.get(&d.id) else {
            continue;
        };
        let name = d.domain.to_ascii_lowercase();
        let _ = writeln!(out, "\n    # ---- {name}");
        let _ = write!(
            out,
            "    server {{\n        listen {};\n        server_name .{name};\n        \
location ^~ /.well-known/acme-challenge/ {{\n            proxy_pass {up};\n            \
proxy_set_header Host $host;\n            proxy_set_header Connection \"\";\n        }}\n",
            cx.addr(o.http_port)
        );
        // This domain's sign-in host (see `redirect::login_base`), unless it is not under the
        // domain (a public URL on an address). A service never takes its place (see below).
        let login_here = login_host(&name)
            .filter(|(h, _)| (h == &name || h.ends_with(&format!(".{name}"))) && safe_name(h));
        let tls = !pending.contains(&d.id);
        if tls {
            let _ = writeln!(
                out,
                "        location / {{\n            return 301 https://$host{}$request_uri;\n        }}\n    }}",
                cx.https_suffix()
            );
        } else {
            out.push_str("        location / {\n            return 503;\n        }\n    }\n");
        }
        // The sign-in host over plain HTTP, when that is how users reach it.
        if let Some((h, false)) = &login_here {
            login_server(&mut out, &cx, h, None, up);
        }
        if !tls {
            out.push_str(
                "    # No certificate for this domain yet (siteward is obtaining it): its TLS servers\n    \
# follow once it is issued.\n",
            );
            continue;
        }
        let _ = writeln!(
            out,
            "    server {{\n        listen {} ssl;\n        server_name .{name};",
            cx.addr(o.https_port)
        );
        cx.certs(&mut out, &name, "        ");
        out.push_str("        return 404;\n    }\n");

        // The sign-in pages on a host of this domain, so the session cookie covers the domain.
        if let Some((h, true)) = &login_here {
            login_server(&mut out, &cx, h, Some(&name), up);
        }

        for s in http.iter().filter(|s| s.external_domain_id == d.id) {
            let fqdn = format!("{}.{name}", s.external_hostname.to_ascii_lowercase());
            if edge_hosts.contains(&fqdn) {
                tracing::warn!(
                    service = s.service_id.0,
                    host = %fqdn,
                    "an HTTP service is named like a host the edge serves itself; left out"
                );
                let _ = writeln!(
                    out,
                    "    # service {}: {fqdn} is served by the edge itself; left out",
                    s.service_id.0
                );
                continue;
            }
            service_server(&mut out, &cx, s, &name, up, ip_of(s.container_id).is_some());
        }
    }
    out.push_str("}\n");

    if !transport.is_empty() {
        out.push_str("\nstream {\n");
        for t in &transport {
            let Some(ip) = ip_of(t.container_id) else {
                let _ = writeln!(
                    out,
                    "    # service {}: the container has no IPv4 address yet",
                    t.service_id.0
                );
                continue;
            };
            let udp = t.protocol == "udp";
            let Some(port) = u16::try_from(t.external_port).ok().filter(|p| *p != 0) else {
                continue;
            };
            if t.use_tls {
                // The edge would present a domain's certificate, valid for every host the
                // session cookie goes to, and hand the plaintext (cookie included) to the
                // container. Never served in the clear either: left out.
                tracing::warn!(
                    service = t.service_id.0,
                    "a transport service asks the edge to terminate TLS; left out"
                );
                let _ = writeln!(
                    out,
                    "    # service {}: TLS termination by the edge is not offered (it would hand the \
session cookie to the container); left out",
                    t.service_id.0
                );
                continue;
            }
            if port == o.http_port || port == o.https_port {
                tracing::warn!(
                    service = t.service_id.0,
                    port,
                    "a transport service is on a port the edge serves HTTP(S) on; left out"
                );
                let _ = writeln!(
                    out,
                    "    # service {}: port {port} is the edge's own; left out",
                    t.service_id.0
                );
                continue;
            }
            let _ = writeln!(out, "    # service {} ({})", t.service_id.0, t.protocol);
            out.push_str("    server {\n");
            if udp {
                let _ = writeln!(out, "        listen {} udp;", cx.addr(port));
                out.push_str("        proxy_timeout 60s;\n");
            } else {
                let _ = writeln!(out, "        listen {};", cx.addr(port));
                out.push_str("        proxy_timeout 1h;\n");
            }
            let _ = writeln!(
                out,
                "        proxy_connect_timeout 10s;\n        proxy_pass {ip}:{};\n    }}",
                t.container_port
            );
        }
        out.push_str("}\n");
    }
    Ok(out)
}

/// The server of a sign-in host `h`: over TLS with `tls_domain`'s certificate, else plain HTTP;
/// everything goes to siteward.
fn login_server(out: &mut String, cx: &Ctx<'_>, h: &str, tls_domain: Option<&str>, up: &str) {
    let listen = match tls_domain {
        Some(_) => format!("{} ssl", cx.addr(cx.o.https_port)),
        None => cx.addr(cx.o.http_port),
    };
    let _ = writeln!(
        out,
        "    server {{\n        listen {listen};\n        server_name {h};"
    );
    if let Some(domain) = tls_domain {
        cx.certs(out, domain, "        ");
        // HSTS applies to every port of the host: a certificate warning there (a TCP service
        // passing TLS through to a container) becomes a hard failure, not a click away from
        // handing over the cookie.
        out.push_str("        add_header Strict-Transport-Security \"max-age=31536000\" always;\n");
    }
    out.push_str("        location / {\n");
    siteward_proxy(out, up, "            ");
    out.push_str("        }\n    }\n");
}

fn siteward_proxy(out: &mut String, up: &str, i: &str) {
    let _ = write!(
        out,
        "{i}proxy_pass {up};\n{i}proxy_set_header Host $host;\n{i}proxy_set_header X-Forwarded-Host $http_host;\n\
{i}proxy_set_header X-Forwarded-Proto $scheme;\n{i}proxy_set_header X-Real-IP $remote_addr;\n\
{i}proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n{i}proxy_set_header Connection \"\";\n"
    );
}

fn service_server(
    out: &mut String,
    cx: &Ctx<'_>,
    s: &HttpService,
    domain: &str,
    auth_up: &str,
    has_backend: bool,
) {
    let label = s.external_hostname.to_ascii_lowercase();
    if !safe_name(&label) {
        return;
    }
    let fqdn = format!("{label}.{domain}");
    let _ = writeln!(
        out,
        "    # service {} -> container {}:{}{}",
        s.service_id.0,
        s.container_id.0,
        s.container_port,
        if s.auth_required {
            " (sign-in required)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "    server {{\n        listen {} ssl;\n        server_name {fqdn};",
        cx.addr(cx.o.https_port)
    );
    cx.certs(out, domain, "        ");
    if s.auth_required {
        let _ = write!(
            out,
            "        location = /.siteward/verify {{\n            internal;\n            \
proxy_pass {auth_up}/auth/verify;\n            proxy_pass_request_body off;\n            \
# Only what /auth/verify reads: fewer bytes to build, send and parse per request.\n            \
proxy_pass_request_headers off;\n            proxy_set_header Cookie $http_cookie;\n            \
proxy_set_header Authorization $http_authorization;\n            \
proxy_set_header Content-Length \"\";\n            proxy_set_header Host $host;\n            \
proxy_set_header X-Siteward-Service {sid};\n            \
proxy_set_header X-Original-URL $scheme://$host{port}$request_uri;\n            \
proxy_set_header X-Forwarded-Proto $scheme;\n            proxy_set_header X-Forwarded-Host $host{port};\n            \
proxy_set_header X-Forwarded-Uri $request_uri;\n            proxy_set_header X-Real-IP $remote_addr;\n            \
proxy_set_header Connection \"\";\n        }}\n",
            sid = s.service_id.0,
            port = cx.https_suffix()
        );
    }
    out.push_str("        location / {\n");
    if !has_backend {
        out.push_str("            # The container has no IPv4 address yet.\n            return 502;\n        }\n    }\n");
        return;
    }
    if s.auth_required {
        out.push_str(
            "            auth_request /.siteward/verify;\n            \
auth_request_set $sw_location $upstream_http_location;\n            \
error_page 401 =302 $sw_location;\n",
        );
        for h in IDENTITY_HEADERS {
            let v = var(h);
            let _ = writeln!(
                out,
                "            auth_request_set $sw_{v} $upstream_http_{v};"
            );
        }
    }
    for h in IDENTITY_HEADERS {
        if s.auth_required {
            let _ = writeln!(out, "            proxy_set_header {h} $sw_{};", var(h));
        } else {
            let _ = writeln!(out, "            proxy_set_header {h} \"\";");
        }
    }
    if s.auth_required {
        // The credentials were siteward's (an API key or a password), not the backend's.
        out.push_str("            proxy_set_header Authorization \"\";\n");
    }
    let scheme = if s.backend_protocol == "https" {
        "https"
    } else {
        "http"
    };
    let _ = write!(
        out,
        "            proxy_pass {scheme}://backend_{sid};\n            proxy_set_header Host $host;\n            \
proxy_set_header X-Real-IP $remote_addr;\n            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n            \
proxy_set_header X-Forwarded-Proto $scheme;\n            proxy_set_header X-Forwarded-Host $host;\n            \
proxy_set_header Upgrade $http_upgrade;\n            proxy_set_header Connection $sw_connection;\n            \
proxy_set_header Cookie $sw_backend_cookie;\n        }}\n    }}\n",
        sid = s.service_id.0
    );
}

/// The `ETag` of a rendered configuration.
pub fn etag(text: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(text.as_bytes());
    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_options_are_refused() {
        for bad in ["/etc/x; include /evil", "/a b", "/x{}", "", "/x\"y", "$x"] {
            assert!(safe_path("cert_dir", bad).is_err(), "{bad}");
        }
        assert!(safe_path("cert_dir", "/etc/siteward/certs").is_ok());
        assert!(upstream_of("u", "javascript:x").is_err());
        assert_eq!(
            upstream_of("u", "http://127.0.0.1:8080/x").ok(),
            Some(("http".into(), "127.0.0.1:8080".into()))
        );
        assert_eq!(
            upstream_of("u", "https://auth.example.org").ok(),
            Some(("https".into(), "auth.example.org:443".into()))
        );
    }

    use siteward_store::{
        Container, ContainerId, ExternalDomainId, ServiceId, Site, SiteId, TransportService,
    };
    use std::sync::Arc;

    /// One site, one container at 10.0.0.5, the given domains (all of the site) and services
    /// (`label`, domain id, sign-in required).
    fn world(domains: &[(i64, &str)], services: &[(&str, i64, bool)]) -> (SiteView, Naming) {
        let now = chrono::Utc::now();
        let container = Arc::new(Container {
            id: ContainerId(1),
            hostname: "web".into(),
            username: None,
            status: "running".into(),
            template: None,
            creation_job_id: None,
            node_id: siteward_store::NodeId(1),
            site_id: SiteId(1),
            container_id: Some(100),
            mac_address: None,
            ipv4_address: Some(std::net::Ipv4Addr::new(10, 0, 0, 5)),
            ai_container: None,
            nvidia_requested: false,
            created_at: now,
            updated_at: now,
        });
        let site = SiteView {
            site: Site {
                id: SiteId(1),
                name: "lab".into(),
                internal_domain: "lab.internal".into(),
                dhcp_range: None,
                subnet_mask: None,
                gateway: None,
                dns_forwarders: Vec::new(),
                external_ip: None,
                dns_serial: 1,
                created_at: now,
                updated_at: now,
            },
            nodes: Vec::new(),
            containers: vec![container.clone()],
            dns_services: Vec::new(),
            records: Vec::new(),
        };
        let external_domains: Vec<ExternalDomain> = domains
            .iter()
            .map(|(id, name)| ExternalDomain {
                id: ExternalDomainId(*id),
                domain: (*name).into(),
                acme_email: None,
                acme_directory: None,
                cloudflare_api_email: None,
                has_cloudflare_api_key: false,
                site_id: Some(SiteId(1)),
                auth_server: Some("http://127.0.0.1:8080".into()),
            })
            .collect();
        let http_services: Vec<HttpService> = services
            .iter()
            .enumerate()
            .map(|(i, (label, domain, auth))| HttpService {
                service_id: ServiceId(i as i64 + 1),
                container_id: ContainerId(1),
                container_port: 8000,
                external_hostname: (*label).into(),
                external_domain_id: ExternalDomainId(*domain),
                backend_protocol: "http".into(),
                auth_required: *auth,
                allowed_groups: Vec::new(),
            })
            .collect();
        let http_service_by_host = http_services
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let d = domains
                    .iter()
                    .find(|(id, _)| *id == s.external_domain_id.0)?;
                Some((format!("{}.{}", s.external_hostname, d.1), i))
            })
            .collect();
        let naming = Naming {
            containers: [(ContainerId(1), container)].into_iter().collect(),
            http_services,
            http_service_by_host,
            transport_services: vec![TransportService {
                service_id: ServiceId(99),
                container_id: ContainerId(1),
                container_port: 5432,
                protocol: "tcp".into(),
                external_port: 5432,
                use_tls: true,
            }],
            external_domains,
            ..Naming::default()
        };
        (site, naming)
    }

    fn count(text: &str, what: &str) -> usize {
        text.matches(what).count()
    }

    #[test]
    fn plain_http_sign_in_and_a_domain_waiting_for_its_certificate() {
        let (site, naming) = world(
            &[(1, "lab.test"), (2, "other.test")],
            &[("app", 1, true), ("wiki", 2, true)],
        );
        let pending = [ExternalDomainId(2)].into_iter().collect();
        let o = RenderOptions::default();
        let text = render(&site, &naming, "http://auth.lab.test", &o, &pending)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count(&text, "{"), count(&text, "}"), "{text}");
        // Only the sign-in hosts go to siteward over plain HTTP; the rest of each domain is
        // redirected (or, waiting for its certificate, answered 503).
        assert_eq!(
            count(&text, "listen 80;\n        server_name auth.lab.test;"),
            1,
            "{text}"
        );
        assert_eq!(
            count(&text, "listen 80;\n        server_name auth.other.test;"),
            1,
            "{text}"
        );
        assert_eq!(
            count(&text, "return 301 https://$host$request_uri;"),
            1,
            "{text}"
        );
        assert_eq!(count(&text, "return 503;"), 1, "{text}");
        // No TLS server and no certificate for the waiting domain; its service comes later.
        assert!(!text.contains("other.test/fullchain.pem"), "{text}");
        assert!(!text.contains("server_name wiki.other.test;"), "{text}");
        assert!(text.contains("server_name app.lab.test;"), "{text}");
        // The edge never terminates TLS for a transport service.
        assert!(!text.contains("listen 5432"), "{text}");
        assert!(text.contains("service 99: TLS termination by the edge is not offered"));
    }

    #[test]
    fn nested_domains_each_get_their_own_sign_in_host() {
        let (site, naming) = world(
            &[(1, "example.org"), (2, "lab.example.org")],
            &[("app", 1, true), ("auth", 1, false)],
        );
        let text = render(
            &site,
            &naming,
            "https://auth.lab.example.org",
            &RenderOptions::default(),
            &BTreeSet::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count(&text, "{"), count(&text, "}"), "{text}");
        assert_eq!(
            count(&text, "server_name auth.lab.example.org;"),
            1,
            "{text}"
        );
        // A service named `auth` (from before the name was reserved) never takes
        // example.org's sign-in host, nor moves it elsewhere.
        assert_eq!(count(&text, "server_name auth.example.org;"), 1, "{text}");
        assert!(!text.contains("login.example.org"), "{text}");
        assert!(
            text.contains("service 2: auth.example.org is served by the edge itself"),
            "{text}"
        );
        assert!(text.contains("server_name app.example.org;"), "{text}");
    }

    #[test]
    fn services_never_replace_the_edges_own_servers() {
        // `auth` is lab.test's sign-in host; `lab` under example.org is another domain's apex.
        let (site, mut naming) = world(
            &[(1, "lab.test"), (2, "example.org"), (3, "lab.example.org")],
            &[("auth", 1, false), ("lab", 2, false), ("app", 1, true)],
        );
        naming.transport_services = [(1, 443), (2, 80), (3, 8443), (4, 5000)]
            .into_iter()
            .map(|(id, port)| TransportService {
                service_id: ServiceId(100 + id),
                container_id: ContainerId(1),
                container_port: 22,
                protocol: "tcp".into(),
                external_port: port,
                use_tls: false,
            })
            .collect();
        let o = RenderOptions {
            https_port: 8443,
            ..RenderOptions::default()
        };
        let text = render(
            &site,
            &naming,
            "https://auth.lab.test:8443",
            &o,
            &BTreeSet::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(count(&text, "{"), count(&text, "}"), "{text}");
        // siteward's sign-in host stays siteward's (with HSTS); the service is left out.
        assert_eq!(count(&text, "server_name auth.lab.test;"), 1, "{text}");
        assert_eq!(count(&text, "Strict-Transport-Security"), 3, "{text}");
        assert!(text.contains("service 1: auth.lab.test is served by the edge"));
        assert!(!text.contains("server_name lab.example.org;"), "{text}");
        assert!(text.contains("service 2: lab.example.org is served by the edge"));
        assert!(text.contains("server_name app.lab.test;"), "{text}");
        // Transport services on the edge's own ports are left out; others are served. (443
        // is not an HTTP(S) port of this edge, so only the API and database refuse it.)
        assert!(
            text.contains("service 102: port 80 is the edge's own"),
            "{text}"
        );
        assert!(
            text.contains("service 103: port 8443 is the edge's own"),
            "{text}"
        );
        assert!(text.contains("listen 5000;"), "{text}");
        assert!(text.contains("listen 443;"), "{text}");
        assert_eq!(count(&text, "listen 8443;"), 0, "{text}");
    }

    #[test]
    fn a_tls_transport_service_is_never_served_in_the_clear() {
        let (site, naming) = world(&[(1, "lab.test")], &[]);
        let pending = [ExternalDomainId(1)].into_iter().collect();
        let text = render(
            &site,
            &naming,
            "https://auth.lab.test",
            &RenderOptions::default(),
            &pending,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!text.contains("listen 5432"), "{text}");
        assert!(text.contains("service 99: TLS termination"), "{text}");
    }

    #[test]
    fn etags_follow_the_text() {
        assert_eq!(etag("a"), etag("a"));
        assert_ne!(etag("a"), etag("b"));
        assert!(etag("a").starts_with('"'));
    }
}
