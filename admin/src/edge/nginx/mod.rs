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
//!
//! Here: the options, the errors, [`render`] (the frame, the upstreams, the per-domain servers and
//! the `stream` section) and [`etag`]; the sign-in host's and the HTTP services' `server` blocks
//! are in `servers.rs`, the tests in `tests.rs`.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::Deserialize;
use siteward_store::{ExternalDomain, HttpService, Naming, SiteView, TransportService};

use servers::{login_server, service_server};

mod servers;
#[cfg(test)]
mod tests;

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

/// A host name NGINX reads as one: labels of letters, digits and hyphens, none empty (one
/// trailing dot allowed), at most 253 characters. Dots alone (`server_name ..;`) or empty labels
/// (`a..b`) are no names (found by fuzz/ nginx_render).
fn safe_name(v: &str) -> bool {
    let v = v.strip_suffix('.').unwrap_or(v);
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
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
        .map(|s| &**s)
        .collect();
    let transport: Vec<&TransportService> = naming
        .transport_services
        .iter()
        .filter(|s| ids.contains(&s.container_id))
        .map(|s| &**s)
        .collect();
    let used: BTreeSet<_> = http.iter().map(|s| s.external_domain_id).collect();
    let domains: Vec<&ExternalDomain> = naming
        .external_domains
        .iter()
        .filter(|d| used.contains(&d.id) || d.site_id == Some(site.site.id))
        .filter(|d| safe_name(&d.domain))
        .map(|d| &**d)
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
        let base = crate::auth::redirect::login_base(public_url, domain, &all_domains, None);
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
            let udp = t.protocol == siteward_store::TransportProtocol::Udp;
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
/// The `ETag` of a rendered configuration.
pub fn etag(text: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(text.as_bytes());
    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}
