//! What the edge NGINX itself serves and no service may take: the sign-in host of every
//! external domain (see [`crate::auth::redirect::login_base`]) and the ports the edge listens on for
//! HTTP(S). The API refuses such services with 409 naming the field, migration 0014 refuses
//! them in the database (from the reservations each process registers at start, see
//! [`reservations`]), and the renderer ([`super::nginx`]) skips any that still exist.
//!
//! Also refused here: TLS termination by the edge for transport services. The edge would
//! present the domain's certificate, which covers every host the session cookie goes to, and
//! browsers send cookies to any port: the container would read the cookie in the clear.

use crate::api::error::ApiError;
use crate::AdminState;
use axum::http::StatusCode;

/// Ports always reserved: 80 (where a CA asks for HTTP-01 answers, and redirects to HTTPS) and
/// 443 (HTTPS, and TLS-ALPN-01). Migration 0014 reserves them in the database from the start.
pub const ALWAYS_RESERVED_PORTS: [(u16, &str); 2] = [
    (80, "edge HTTP (ACME HTTP-01, redirects)"),
    (443, "edge HTTPS (sign-in hosts, HTTP services)"),
];

/// Host labels (reserved under every external domain) and ports, each with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservations {
    /// Lower-case labels.
    pub labels: Vec<(String, String)>,
    /// Ports, for TCP and UDP alike.
    pub ports: Vec<(u16, String)>,
}

/// What the configuration reserves: the first label of `public_url`'s host (it names the
/// sign-in host under every external domain; under the domain the public URL lies in, it is
/// the sign-in host itself), 80 and 443, the public URL's port, and `edge_ports` (the edge's
/// other HTTP(S) ports).
pub fn reservations(public_url: &str, edge_ports: &[u16]) -> Reservations {
    let mut r = Reservations::default();
    let url = url::Url::parse(public_url.trim_end_matches('/')).ok();
    if let Some(url::Host::Domain(host)) = url.as_ref().and_then(url::Url::host) {
        if let Some(first) = host.trim_end_matches('.').split('.').next() {
            if !first.is_empty() {
                r.labels.push((
                    first.to_ascii_lowercase(),
                    format!("sign-in host (public URL {public_url})"),
                ));
            }
        }
    }
    let mut add = |port: u16, reason: String| {
        if !r.ports.iter().any(|(p, _)| *p == port) {
            r.ports.push((port, reason));
        }
    };
    for (p, why) in ALWAYS_RESERVED_PORTS {
        add(p, why.to_owned());
    }
    for p in edge_ports {
        add(*p, "edge HTTP(S) port (http.edge_ports)".to_owned());
    }
    if let Some(p) = url.as_ref().and_then(url::Url::port_or_known_default) {
        add(p, format!("port of the public URL {public_url}"));
    }
    r
}

impl Reservations {
    /// Whether `label` (any case) is reserved.
    pub fn label(&self, label: &str) -> bool {
        self.labels
            .iter()
            .any(|(l, _)| l.eq_ignore_ascii_case(label))
    }

    /// Whether `port` is reserved.
    pub fn port(&self, port: i32) -> bool {
        self.ports.iter().any(|(p, _)| i32::from(*p) == port)
    }
}

fn reserved(field: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "reserved", message).field(field)
}

/// Refuses an HTTP service named like a sign-in host (409 naming `external_hostname`). The
/// database refuses it too, and also a name that is another external domain's apex.
pub fn check_http(s: &AdminState, external_hostname: &str) -> Result<(), ApiError> {
    if reservations(&s.public_url, &s.edge_ports).label(external_hostname) {
        return Err(reserved(
            "external_hostname",
            format!(
                "external_hostname {external_hostname} is reserved for the edge's sign-in host"
            ),
        ));
    }
    Ok(())
}

/// Refuses a transport service on a port of the edge itself (409 naming `external_port`) or
/// with TLS terminated by the edge (422 naming `use_tls`).
pub fn check_transport(
    s: &AdminState,
    external_port: Option<i32>,
    use_tls: bool,
) -> Result<(), ApiError> {
    if use_tls {
        return Err(ApiError::invalid(
            "use_tls",
            "the edge does not terminate TLS for transport services: it would present the \
             domain's certificate, so browsers would send the session cookie to the container; \
             let the container terminate TLS itself",
        ));
    }
    if let Some(p) = external_port {
        if reservations(&s.public_url, &s.edge_ports).port(p) {
            return Err(reserved(
                "external_port",
                format!("external_port {p} is a port of the edge itself"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_url_names_the_reserved_label_and_port() {
        let r = reservations("https://Auth.Lab.Test:8443/", &[]);
        assert!(r.label("auth") && r.label("AUTH") && !r.label("app"));
        assert!(r.port(80) && r.port(443) && r.port(8443) && !r.port(8080));
        let r = reservations("http://127.0.0.1:8080", &[9080]);
        assert!(r.labels.is_empty());
        assert_eq!(r.ports.len(), 4);
        assert!(r.port(80) && r.port(443) && r.port(8080) && r.port(9080));
        let r = reservations("https://sso.example.org", &[443]);
        assert!(r.label("sso"));
        assert_eq!(r.ports.len(), 2, "{r:?}");
    }
}
