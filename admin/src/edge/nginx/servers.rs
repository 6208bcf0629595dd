//! The `server` blocks of the `http` section: a sign-in host's (everything to siteward) and an
//! HTTP service's (with `auth_request` when it requires sign-in). What goes around them, and the
//! `stream` section, is [`super::render`]'s.

use std::fmt::Write;

use siteward_store::HttpService;

use super::{safe_name, Ctx, IDENTITY_HEADERS};

/// The server of a sign-in host `h`: over TLS with `tls_domain`'s certificate, else plain HTTP;
/// everything goes to siteward.
pub(super) fn login_server(
    out: &mut String,
    cx: &Ctx<'_>,
    h: &str,
    tls_domain: Option<&str>,
    up: &str,
) {
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

/// The proxy directives of a location that siteward answers, indented by `i`.
fn siteward_proxy(out: &mut String, up: &str, i: &str) {
    let _ = write!(
        out,
        "{i}proxy_pass {up};\n{i}proxy_set_header Host $host;\n{i}proxy_set_header X-Forwarded-Host $http_host;\n\
{i}proxy_set_header X-Forwarded-Proto $scheme;\n{i}proxy_set_header X-Real-IP $remote_addr;\n\
{i}proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n{i}proxy_set_header Connection \"\";\n"
    );
}

/// The TLS server of HTTP service `s` under `domain`; a 502 when its container has no address.
pub(super) fn service_server(
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
    let scheme = if s.backend_protocol == siteward_store::BackendProtocol::Https {
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

/// The NGINX variable name of a header.
fn var(header: &str) -> String {
    header.to_ascii_lowercase().replace('-', "_")
}
