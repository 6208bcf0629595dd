//! The renderer's tests: safe options, the edge's own servers, sign-in hosts, `ETag`s.

use super::*;

#[test]
fn unsafe_options_are_refused() {
    for bad in ["/etc/x; include /evil", "/a b", "/x{}", "", "/x\"y", "$x"] {
        assert!(safe_path("cert_dir", bad).is_err(), "{bad}");
    }
    assert!(safe_path("cert_dir", "/etc/siteward/certs").is_ok());
    // Host names: labels, not just the characters of labels.
    for bad in [".", "..", "a..b", ".a", "a b", &"x".repeat(64)] {
        assert!(!safe_name(bad), "{bad:?}");
    }
    for good in ["example.org", "example.org.", "a-1.b", "x"] {
        assert!(safe_name(good), "{good:?}");
    }
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
        status: siteward_store::ContainerStatus::Running,
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
        nodes: imbl::Vector::new(),
        containers: imbl::vector![container.clone()],
        dns_services: imbl::Vector::new(),
        records: imbl::Vector::new(),
    };
    let external_domains: imbl::Vector<Arc<ExternalDomain>> = domains
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
        .map(Arc::new)
        .collect();
    let http_services: imbl::Vector<Arc<HttpService>> = services
        .iter()
        .enumerate()
        .map(|(i, (label, domain, auth))| HttpService {
            service_id: ServiceId(i as i64 + 1),
            container_id: ContainerId(1),
            container_port: 8000,
            external_hostname: (*label).into(),
            external_domain_id: ExternalDomainId(*domain),
            backend_protocol: siteward_store::BackendProtocol::Http,
            auth_required: *auth,
            allowed_groups: Vec::new(),
        })
        .map(Arc::new)
        .collect();
    let mut naming = Naming {
        containers: [(ContainerId(1), container)].into_iter().collect(),
        http_services,
        transport_services: imbl::vector![Arc::new(TransportService {
            service_id: ServiceId(99),
            container_id: ContainerId(1),
            container_port: 5432,
            protocol: siteward_store::TransportProtocol::Tcp,
            external_port: 5432,
            use_tls: true,
        })],
        external_domains,
        ..Naming::default()
    };
    naming.index_http_services();
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
            protocol: siteward_store::TransportProtocol::Tcp,
            external_port: port,
            use_tls: false,
        })
        .map(Arc::new)
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
