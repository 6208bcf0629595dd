//! The edge NGINX renderer over arbitrary database contents.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use arbitrary::{Arbitrary, Unstructured};
use siteward_admin::edge::nginx::{render as render_conf, RenderOptions};
use siteward_store::{
    BackendProtocol, Container, ContainerId, ContainerStatus, ExternalDomain, ExternalDomainId,
    HttpService, Naming, NodeId, ServiceId, Site, SiteId, SiteView, TransportProtocol,
    TransportService,
};

#[derive(Debug, Arbitrary)]
struct Domain {
    name: String,
    ours: bool,
    auth_server: Option<String>,
    pending: bool,
}

#[derive(Debug, Arbitrary)]
struct Http {
    container: u8,
    port: i32,
    hostname: String,
    domain: u8,
    auth_required: bool,
    https: bool,
    groups: Vec<String>,
}

#[derive(Debug, Arbitrary)]
struct Transport {
    container: u8,
    port: i32,
    udp: bool,
    external_port: i32,
    tls: bool,
}

#[derive(Debug, Arbitrary)]
struct World {
    site_name: String,
    addresses: [Option<u8>; 3],
    domains: Vec<Domain>,
    http: Vec<Http>,
    transport: Vec<Transport>,
    public_url: (u8, String),
    http_port: u16,
    https_port: u16,
    listen: Option<String>,
    socket: bool,
}

const PUBLIC_URLS: &[&str] = &[
    "https://auth.example.org",
    "https://example.org",
    "http://10.0.0.1:8080",
    "https://login.example.org:8443/base",
];

/// Every directive the renderer writes, with the numbers of arguments it gives each (block
/// directives included). A field that reached the output as text of its own (a `;`, a brace,
/// a space, a quote) shows up as an unknown directive or a wrong count.
const DIRECTIVES: &[(&str, usize, usize)] = &[
    ("include", 1, 1),
    ("worker_processes", 1, 1),
    ("events", 0, 0),
    ("worker_connections", 1, 1),
    ("http", 0, 0),
    ("stream", 0, 0),
    ("server_tokens", 1, 1),
    ("client_max_body_size", 1, 1),
    ("proxy_http_version", 1, 1),
    ("proxy_connect_timeout", 1, 1),
    ("proxy_send_timeout", 1, 1),
    ("proxy_read_timeout", 1, 1),
    ("proxy_timeout", 1, 1),
    ("ssl_protocols", 2, 2),
    ("ssl_session_cache", 1, 1),
    ("server_names_hash_bucket_size", 1, 1),
    ("client_body_temp_path", 1, 1),
    ("proxy_temp_path", 1, 1),
    ("fastcgi_temp_path", 1, 1),
    ("uwsgi_temp_path", 1, 1),
    ("scgi_temp_path", 1, 1),
    ("map", 2, 2),
    ("upstream", 1, 1),
    ("keepalive", 1, 1),
    ("server", 0, 1),
    ("listen", 1, 3),
    ("server_name", 1, 1),
    ("location", 1, 2),
    ("proxy_pass", 1, 1),
    ("proxy_set_header", 2, 2),
    ("proxy_pass_request_body", 1, 1),
    ("proxy_pass_request_headers", 1, 1),
    ("return", 1, 2),
    ("ssl_reject_handshake", 1, 1),
    ("ssl_certificate", 1, 1),
    ("ssl_certificate_key", 1, 1),
    ("add_header", 3, 3),
    ("internal", 0, 0),
    ("auth_request", 1, 1),
    ("auth_request_set", 2, 2),
    ("error_page", 3, 3),
    ("proxy_ssl_server_name", 1, 1),
    ("proxy_ssl_verify", 1, 1),
    ("proxy_buffering", 1, 1),
    ("proxy_request_buffering", 1, 1),
    ("proxy_redirect", 1, 2),
    ("proxy_cookie_path", 2, 2),
    ("access_log", 1, 3),
    ("error_log", 1, 2),
];

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Semi,
    Open,
    Close,
}

/// NGINX's lexer: words, quoted strings (with backslash escapes), `;`, `{`, `}`, comments.
fn lex(text: &str) -> Vec<Tok> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b';' => {
                out.push(Tok::Semi);
                i += 1;
            }
            b'{' => {
                out.push(Tok::Open);
                i += 1;
            }
            b'}' => {
                out.push(Tok::Close);
                i += 1;
            }
            q @ (b'"' | b'\'') => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                assert!(i < b.len(), "an unterminated quoted string");
                out.push(Tok::Word(text[start..i].to_owned()));
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len() && !b" \t\r\n;{}\"'".contains(&b[i]) {
                    i += 1;
                }
                out.push(Tok::Word(text[start..i].to_owned()));
            }
        }
    }
    out
}

/// Walks the tokens as NGINX parses them: every statement is a known directive with a number
/// of arguments it takes, ended by `;` or opening a block; braces balance; inside `map` any
/// pair goes. Returns the statements as (directive, arguments).
fn parse(toks: &[Tok]) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    for t in toks {
        match t {
            Tok::Word(w) => words.push(w.clone()),
            Tok::Semi | Tok::Open => {
                assert!(!words.is_empty(), "an empty statement");
                let name = words.remove(0);
                let in_map = stack.last().is_some_and(|b| b == "map");
                if in_map {
                    assert_eq!(words.len(), 1, "a map entry of {} words", words.len() + 1);
                    assert_eq!(*t, Tok::Semi, "a block inside a map");
                } else {
                    let Some((_, lo, hi)) = DIRECTIVES.iter().find(|(d, _, _)| *d == name) else {
                        panic!("a directive the renderer never writes: {name:?} {words:?}");
                    };
                    assert!(
                        (*lo..=*hi).contains(&words.len()),
                        "{name} with {} arguments: {words:?}",
                        words.len()
                    );
                    out.push((name.clone(), std::mem::take(&mut words)));
                }
                words.clear();
                if *t == Tok::Open {
                    stack.push(name);
                }
            }
            Tok::Close => {
                assert!(words.is_empty(), "a statement without `;`: {words:?}");
                assert!(stack.pop().is_some(), "an unbalanced `}}`");
            }
        }
    }
    assert!(
        words.is_empty() && stack.is_empty(),
        "unterminated configuration"
    );
    out
}

fn name_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
}

static RUNS: AtomicU64 = AtomicU64::new(0);

/// `NGINX_T_EVERY=n`: also run the real `nginx -t` on every n-th configuration whose upstreams
/// are addresses (NGINX resolves host names when it loads a configuration).
static NGINX_T_EVERY: LazyLock<u64> = LazyLock::new(|| {
    std::env::var("NGINX_T_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
});

/// `nginx_render`: a site from arbitrary rows (external domains with any name and auth server,
/// HTTP services with any host label, port, domain and groups, transport services with any
/// ports and TLS flag, containers with or without addresses), rendered with arbitrary ports,
/// listen address and public URL. When rendering succeeds, the text lexes and parses as NGINX
/// reads it into directives the renderer writes, each with the arguments it takes, with every
/// `server_name` a plain name and every `listen` an address and flags; with `NGINX_T_EVERY`,
/// `nginx -t` accepts it.
pub fn render(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(w) = World::arbitrary(&mut u) else {
        return;
    };
    let now = chrono::Utc::now();
    let containers: Vec<Arc<Container>> = w
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Arc::new(Container {
                id: ContainerId(i as i64 + 1),
                hostname: format!("c{i}"),
                username: None,
                status: ContainerStatus::Running,
                template: None,
                creation_job_id: None,
                node_id: NodeId(1),
                site_id: SiteId(1),
                container_id: Some(100 + i as i32),
                mac_address: None,
                ipv4_address: a.map(|d| Ipv4Addr::new(10, 0, 0, d)),
                ai_container: None,
                nvidia_requested: false,
                created_at: now,
                updated_at: now,
            })
        })
        .collect();
    let site = SiteView {
        site: Site {
            id: SiteId(1),
            name: w.site_name.clone(),
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
        containers: containers.iter().cloned().collect(),
        dns_services: imbl::Vector::new(),
        records: imbl::Vector::new(),
    };
    let mut naming = Naming::default();
    for c in &containers {
        naming.containers.insert(c.id, c.clone());
    }
    let mut pending = BTreeSet::new();
    // What the database holds: ports 1-65535, one domain per name, one service per host name
    // and domain, one transport service per protocol and port (migration 0001's constraints).
    let port = |p: i32| 1 + p.rem_euclid(65535);
    let mut seen = BTreeSet::new();
    for (i, d) in w.domains.iter().enumerate().take(4) {
        if !seen.insert(d.name.to_lowercase()) {
            continue;
        }
        let id = ExternalDomainId(i as i64 + 1);
        if d.pending {
            pending.insert(id);
        }
        naming.external_domains.push_back(Arc::new(ExternalDomain {
            id,
            domain: d.name.clone(),
            acme_email: None,
            acme_directory: None,
            cloudflare_api_email: None,
            has_cloudflare_api_key: false,
            site_id: d.ours.then_some(SiteId(1)),
            auth_server: d.auth_server.clone(),
        }));
    }
    let mut seen = BTreeSet::new();
    for (i, s) in w.http.iter().enumerate().take(8) {
        if !seen.insert((s.hostname.to_lowercase(), s.domain % 5)) {
            continue;
        }
        naming.http_services.push_back(Arc::new(HttpService {
            service_id: ServiceId(i as i64 + 1),
            container_id: ContainerId(i64::from(s.container % 4)),
            container_port: port(s.port),
            external_hostname: s.hostname.clone(),
            external_domain_id: ExternalDomainId(i64::from(s.domain % 5)),
            backend_protocol: if s.https {
                BackendProtocol::Https
            } else {
                BackendProtocol::Http
            },
            auth_required: s.auth_required,
            allowed_groups: s.groups.clone(),
        }));
    }
    let mut seen = BTreeSet::new();
    for (i, t) in w.transport.iter().enumerate().take(8) {
        if !seen.insert((t.udp, port(t.external_port))) {
            continue;
        }
        naming
            .transport_services
            .push_back(Arc::new(TransportService {
                service_id: ServiceId(100 + i as i64),
                container_id: ContainerId(i64::from(t.container % 4)),
                container_port: port(t.port),
                protocol: if t.udp {
                    TransportProtocol::Udp
                } else {
                    TransportProtocol::Tcp
                },
                external_port: port(t.external_port),
                use_tls: t.tls,
            }));
    }
    let public_url = match w.public_url.0 % 5 {
        4 => w.public_url.1.clone(),
        i => PUBLIC_URLS[usize::from(i)].to_owned(),
    };
    let dir = std::env::temp_dir().join(format!("siteward-fuzz-nginx-{}", std::process::id()));
    // The two edge ports are the administrator's settings, distinct and not 0.
    let http_port = w.http_port.max(1);
    let https_port = if w.https_port.max(1) == http_port {
        http_port.wrapping_add(1).max(1)
    } else {
        w.https_port.max(1)
    };
    let options = RenderOptions {
        listen: w.listen.clone(),
        http_port,
        https_port,
        cert_dir: Some(dir.join("certs").display().to_string()),
        temp_dir: Some(dir.join("tmp").display().to_string()),
        siteward_socket: w
            .socket
            .then(|| dir.join("siteward.sock").display().to_string()),
        ..RenderOptions::default()
    };
    let Ok(text) = render_conf(&site, &naming, &public_url, &options, &pending) else {
        return;
    };
    let statements = parse(&lex(&text));
    let mut names_resolved = true;
    for (d, args) in &statements {
        match d.as_str() {
            "server_name" => assert!(
                name_chars(args[0].trim_start_matches('.')),
                "server_name {:?}",
                args[0]
            ),
            "listen" => {
                assert!(
                    args[0]
                        .rsplit_once(':')
                        .map_or(args[0].as_str(), |(_, p)| p)
                        .parse::<u16>()
                        .is_ok(),
                    "listen {:?}",
                    args[0]
                );
                for flag in &args[1..] {
                    assert!(
                        ["ssl", "udp", "default_server"].contains(&flag.as_str()),
                        "listen flag {flag:?}"
                    );
                }
            }
            "server" if !args.is_empty() => {
                let host = args[0].rsplit_once(':').map_or("", |(h, _)| h);
                if !args[0].starts_with("unix:")
                    && host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_err()
                {
                    names_resolved = false;
                }
            }
            "ssl_certificate" | "ssl_certificate_key" => {
                assert!(args[0].starts_with(&options.cert_dir.clone().unwrap_or_default()));
                assert!(!args[0].contains(".."), "a certificate path {:?}", args[0]);
            }
            _ => {}
        }
    }
    let every = *NGINX_T_EVERY;
    if every > 0 && names_resolved && RUNS.fetch_add(1, Ordering::Relaxed).is_multiple_of(every) {
        nginx_t(&dir, &text, &naming);
    }
}

/// Writes `text` with a certificate for every domain and asks `nginx -t`.
fn nginx_t(dir: &std::path::Path, text: &str, naming: &Naming) {
    use std::process::Command;
    static CERT: LazyLock<Option<(Vec<u8>, Vec<u8>)>> = LazyLock::new(|| {
        let d = std::env::temp_dir().join(format!("siteward-fuzz-cert-{}", std::process::id()));
        std::fs::create_dir_all(&d).ok()?;
        let ok = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=fuzz", "-keyout"])
            .arg(d.join("k.pem"))
            .arg("-out")
            .arg(d.join("c.pem"))
            .output()
            .ok()?
            .status
            .success();
        ok.then(|| {
            Some((
                std::fs::read(d.join("c.pem")).ok()?,
                std::fs::read(d.join("k.pem")).ok()?,
            ))
        })
        .flatten()
    });
    let Some((cert, key)) = &*CERT else {
        return;
    };
    let _ = std::fs::remove_dir_all(dir);
    for sub in ["tmp", "certs", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).expect("a temporary directory");
    }
    for d in &naming.external_domains {
        let cd = dir.join("certs").join(d.domain.to_ascii_lowercase());
        if std::fs::create_dir_all(&cd).is_ok() {
            let _ = std::fs::write(cd.join("fullchain.pem"), cert);
            let _ = std::fs::write(cd.join("privkey.pem"), key);
        }
    }
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, text).expect("nginx.conf");
    let out = Command::new("nginx")
        .arg("-t")
        .arg("-q")
        // The system prefix, where `modules-enabled/*.conf` finds its modules.
        .arg("-p")
        .arg("/usr/share/nginx/")
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("logs/error.log"))
        .arg("-g")
        .arg(format!("pid {};", dir.join("nginx.pid").display()))
        .output();
    let Ok(out) = out else {
        return; // no nginx here
    };
    let err = String::from_utf8_lossy(&out.stderr);
    // A port this machine cannot bind is not the configuration's fault.
    let environmental = ["bind()", "Address already in use"];
    if !out.status.success() && !environmental.iter().any(|e| err.contains(e)) {
        panic!("nginx -t refuses the configuration: {err}\n{text}");
    }
}
