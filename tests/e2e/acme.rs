//! ACME against a real CA: Debian's Pebble, started per test with a listener certificate made
//! here (openssl), `PEBBLE_VA_NOSLEEP=1`, `PEBBLE_WFE_NONCEREJECT=0`, `PEBBLE_AUTHZREUSE=0`, and
//! `-dnsserver` pointed at siteward's DNS, so DNS-01 challenges are validated against the records
//! siteward serves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::harness::*;

fn free_port() -> TestResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn openssl(args: &[&str]) -> TestResult {
    let out = std::process::Command::new("openssl").args(args).output()?;
    if !out.status.success() {
        return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

/// A CA and a `localhost`/`127.0.0.1` certificate it signed, for Pebble's HTTPS listener.
fn listener_certificate(dir: &Path) -> TestResult<PathBuf> {
    let p = |n: &str| dir.join(n).display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=siteward test CA",
        "-keyout",
        &p("ca-key.pem"),
        "-out",
        &p("ca.pem"),
        "-addext",
        "basicConstraints=critical,CA:true",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &p("key.pem"),
        "-out",
        &p("req.pem"),
    ])?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:false\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("req.pem"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca-key.pem"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("cert.pem"),
    ])?;
    Ok(dir.join("ca.pem"))
}

/// A running Pebble.
pub struct Pebble {
    child: Child,
    /// The ACME directory URL.
    pub directory: String,
    management: u16,
    /// The CA that signed Pebble's own HTTPS certificate (for `acme.ca_root`).
    pub listener_ca: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Pebble {
    /// Starts Pebble resolving through `dns`.
    pub async fn start(dns: SocketAddr) -> TestResult<Self> {
        let tmp = tempfile::tempdir()?;
        let listener_ca = listener_certificate(tmp.path())?;
        Self::start_in(tmp, listener_ca, dns).await
    }

    async fn start_in(
        tmp: tempfile::TempDir,
        listener_ca: PathBuf,
        dns: SocketAddr,
    ) -> TestResult<Self> {
        Self::start_with(tmp, listener_ca, dns, free_port()?).await
    }

    /// Pebble validating HTTP-01 on `http_port` of whatever address `dns` gives a name.
    async fn start_with(
        tmp: tempfile::TempDir,
        listener_ca: PathBuf,
        dns: SocketAddr,
        http_port: u16,
    ) -> TestResult<Self> {
        let (port, management) = (free_port()?, free_port()?);
        let config = json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": tmp.path().join("cert.pem"),
            "privateKey": tmp.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port()?,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        let file = tmp.path().join("pebble.json");
        std::fs::write(&file, config.to_string())?;
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&file)
            .arg("-dnsserver")
            .arg(dns.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run pebble (apt-get install pebble): {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            || tokio::net::TcpStream::connect(("127.0.0.1", management))
                .await
                .is_err()
        {
            if Instant::now() > deadline {
                return Err("pebble did not start listening".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            child,
            directory: format!("https://127.0.0.1:{port}/dir"),
            management,
            listener_ca,
            _tmp: tmp,
        })
    }

    /// Pebble's issuing root (regenerated at every start), PEM.
    pub async fn root(&self) -> TestResult<String> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.listener_ca)?)?;
        let client = Client::builder().add_root_certificate(ca).build()?;
        let res = client
            .get(format!("https://127.0.0.1:{}/roots/0", self.management))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::OK);
        Ok(res.text().await?)
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// PEM blocks of a chain, in order.
fn pem_blocks(chain: &str) -> Vec<String> {
    chain
        .split_inclusive("-----END CERTIFICATE-----")
        .filter_map(|b| b.find("-----BEGIN").map(|i| b[i..].to_owned()))
        .collect()
}

/// `openssl verify` of `leaf` against `root` with `intermediates`.
fn verifies(dir: &Path, leaf: &str, intermediates: &[String], root: &str) -> TestResult<String> {
    std::fs::write(dir.join("v-leaf.pem"), leaf)?;
    std::fs::write(dir.join("v-int.pem"), intermediates.concat())?;
    std::fs::write(dir.join("v-root.pem"), root)?;
    let out = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(dir.join("v-root.pem"))
        .arg("-untrusted")
        .arg(dir.join("v-int.pem"))
        .arg(dir.join("v-leaf.pem"))
        .output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn public_key_of(args: &[&str], file: &Path) -> TestResult<String> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .arg(file)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The leaf certificate a TLS server presents (PEM).
async fn served_certificate(addr: SocketAddr) -> TestResult<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .stdin(Stdio::null())
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(pem_blocks(&text).into_iter().next().unwrap_or_default())
}

async fn api(
    http: &Client,
    server: &Server,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> TestResult<(StatusCode, Value)> {
    let mut req = http
        .request(method, server.url(&format!("/api/v1{path}")))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await?;
    let status = res.status();
    let text = res.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The real binary orders a certificate for a name in a site's internal zone through the API:
/// Pebble validates DNS-01 against siteward's own DNS; the chain verifies against Pebble's root,
/// the key matches, the files are written, LDAPS serves the new certificate without a restart,
/// no challenge record is left, and the API and CLI show the certificate without its key.
#[tokio::test]
async fn issues_for_an_internal_zone_through_the_api() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let listener_ca = listener_certificate(tmp.path())?;
    let certs = tmp.path().join("certs");
    // LDAPS starts on a placeholder pair where the ACME certificate will be written.
    let domain_dir = certs.join("lab.test");
    std::fs::create_dir_all(&domain_dir)?;
    let p = |n: &str| domain_dir.join(n).display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=placeholder",
        "-keyout",
        &p("privkey.pem"),
        "-out",
        &p("fullchain.pem"),
    ])?;
    let placeholder = std::fs::read_to_string(domain_dir.join("fullchain.pem"))?;
    let db = TestDb::new().await?;
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        args: vec!["--ldaps".into(), "127.0.0.1:0".into()],
        env: vec![
            (
                "SITEWARD_ACME__CA_ROOT".into(),
                listener_ca.display().to_string(),
            ),
            (
                "SITEWARD_ACME__CERT_DIR".into(),
                certs.display().to_string(),
            ),
            (
                "SITEWARD_ACME__HOOK".into(),
                format!("touch {}/hook-ran", tmp.path().display()),
            ),
            ("SITEWARD_LDAP__TLS_CERT".into(), p("fullchain.pem")),
            ("SITEWARD_LDAP__TLS_KEY".into(), p("privkey.pem")),
            ("SITEWARD_LDAP__TLS_RELOAD_SECONDS".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await?;
    server.db = Some(db);
    let dns = server.addrs.dns.ok_or("no DNS address")?;
    let ldaps = server.addrs.ldaps.ok_or("no LDAPS address")?;
    let pebble = Pebble::start_in(tmp, listener_ca, dns).await?;
    let tmp_path = pebble._tmp.path().to_owned();

    let http = Client::new();
    let store = server.db.as_ref().ok_or("db")?.store().await?;
    let key = root_key(&http, &server, &store).await?;
    let (s, site) = api(
        &http,
        &server,
        &key,
        Method::POST,
        "/sites",
        Some(json!({
            "name": "lab", "internal_domain": "lab.test", "gateway": "10.9.0.1",
            "subnet_mask": "255.255.255.0", "dhcp_range": "10.9.0.100-10.9.0.200"
        })),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED, "{site}");
    let (s, domain) = api(&http, &server, &key, Method::POST, "/external-domains", Some(json!({
        "domain": "lab.test", "acme_email": "admin@lab.test", "acme_directory": pebble.directory,
        "site_id": site["id"]
    }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{domain}");
    let id = domain["id"].as_i64().ok_or("no id")?;

    let (s, job) = api(
        &http,
        &server,
        &key,
        Method::POST,
        &format!("/external-domains/{id}/certificate"),
        None,
    )
    .await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let job_id = job["job_id"].as_i64().ok_or("no job id")?;
    let t = Instant::now();
    let job = loop {
        let (_, j) = api(
            &http,
            &server,
            &key,
            Method::GET,
            &format!("/jobs/{job_id}"),
            None,
        )
        .await?;
        if j["status"] == "success" || j["status"] == "failure" {
            break j;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the order did not finish: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["status"], "success", "{job}\n{}", server.logs());
    let lines: Vec<&str> = job["statuses"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["message"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        lines.iter().any(|l| l.contains("challenges validated")),
        "{lines:?}"
    );

    let (s, cert) = api(
        &http,
        &server,
        &key,
        Method::GET,
        &format!("/external-domains/{id}/certificate"),
        None,
    )
    .await?;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cert["names"], json!(["lab.test", "*.lab.test"]), "{cert}");
    assert!(
        cert["issuer"].as_str().unwrap_or("").contains("Pebble"),
        "{cert}"
    );
    assert!(
        cert["last_error"].is_null() && cert["orders_placed"] == 1,
        "{cert}"
    );
    assert!(!cert.to_string().contains("PRIVATE"), "{cert}");
    assert!(cert["last_attempt_at"].is_string(), "{cert}");
    let not_after = cert["not_after"].as_str().ok_or("no not_after")?;
    let not_after = chrono::DateTime::parse_from_rfc3339(not_after)?;
    assert!(
        not_after > chrono::Utc::now() + chrono::Duration::days(1),
        "{cert}"
    );
    let serial = cert["serial"].as_str().ok_or("no serial")?.to_owned();
    assert!(
        !serial.is_empty() && serial.chars().all(|c| c.is_ascii_hexdigit()),
        "{cert}"
    );
    // The key is stored encrypted: no PEM in the row.
    let pool = server.db.as_ref().ok_or("db")?.pool().await?;
    let in_clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM certificates WHERE position('PRIVATE KEY'::bytea in private_key) > 0",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(in_clear, 0);

    // Files: the chain verifies against Pebble's root; the key matches; the hook ran.
    let chain = std::fs::read_to_string(domain_dir.join("fullchain.pem"))?;
    let blocks = pem_blocks(&chain);
    assert!(blocks.len() >= 2, "{chain}");
    let verdict = verifies(&tmp_path, &blocks[0], &blocks[1..], &pebble.root().await?)?;
    assert!(verdict.contains(": OK"), "{verdict}");
    let cert_key = public_key_of(
        &["x509", "-noout", "-pubkey", "-in"],
        &tmp_path.join("v-leaf.pem"),
    )?;
    let file_key = public_key_of(&["pkey", "-pubout", "-in"], &domain_dir.join("privkey.pem"))?;
    assert!(
        !cert_key.is_empty() && cert_key == file_key,
        "the key does not match the certificate"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(domain_dir.join("privkey.pem"))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(tmp_path.join("hook-ran").exists(), "the hook did not run");

    // LDAPS picks up the new certificate without a restart.
    assert_ne!(blocks[0].trim(), placeholder.trim());
    let t = Instant::now();
    while served_certificate(ldaps).await?.trim() != blocks[0].trim() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "LDAPS still serves the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // No challenge record is left in the zone.
    assert_eq!(store.challenge_txt_count().await?, 0);
    // The CLI lists it.
    let data = tempfile::tempdir()?;
    let url = server.db.as_ref().ok_or("db")?.url.clone();
    let (st, out, err) = run_cli(
        &[
            "--data-dir",
            &data.path().display().to_string(),
            "--database-url",
            &url,
            "cert",
            "list",
        ],
        &[("SITEWARD_SECRET_KEY", &test_key_base64())],
        None,
    )
    .await?;
    assert!(st.success(), "{out}{err}");
    assert!(
        out.contains("lab.test") && out.contains("Pebble") && out.contains("valid until"),
        "{out}"
    );
    server.stop().await
}

/// A store with a site `lab.test`, an external domain `lab.test` on `directory`, and siteward's
/// DNS server running in this process on that store (so a TXT record the ACME side writes is
/// answered as soon as the snapshot reloads).
async fn zone_with_dns(
    directory: &str,
) -> TestResult<(
    TestDb,
    siteward_store::Store,
    SocketAddr,
    siteward_store::ExternalDomainId,
    tokio_util::sync::CancellationToken,
)> {
    let db = TestDb::new().await?;
    let store = db.store().await?;
    let site = store
        .create_site(
            siteward_store::NewSite {
                name: "lab".into(),
                internal_domain: "lab.test".into(),
                gateway: Some("10.9.0.1".parse()?),
                subnet_mask: Some("255.255.255.0".parse()?),
                dhcp_range: Some("10.9.0.100-10.9.0.200".into()),
                ..Default::default()
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    let domain = store
        .create_domain(
            siteward_store::resources::NewDomain {
                acme_email: Some("admin@lab.test".into()),
                acme_directory: Some(directory.into()),
                site_id: Some(site.id),
                ..siteward_store::resources::NewDomain::named("lab.test")
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    store.reload(siteward_store::Dirty::ALL).await?;
    // UDP and TCP on one port: the UDP port's TCP twin may be taken, then try another.
    let mut pair = None;
    for _ in 0..20 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        if let Ok(tcp) = tokio::net::TcpListener::bind(udp.local_addr()?).await {
            pair = Some((udp, tcp));
            break;
        }
    }
    let (udp, tcp) = pair.ok_or("no port free for DNS on both UDP and TCP")?;
    let addr = udp.local_addr()?;
    let mut registry = prometheus_client::registry::Registry::default();
    let state = siteward_dns::DnsState {
        store: store.clone(),
        settings: std::sync::Arc::new(siteward_dns::Settings::default()),
        metrics: siteward_dns::Metrics::register(&mut registry),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(siteward_dns::serve(udp, tcp, state, shutdown.clone()));
    Ok((db, store, addr, domain.id, shutdown))
}

fn settings(pebble: &Pebble, certs: &Path, dns: SocketAddr) -> siteward_acme::Settings {
    siteward_acme::Settings {
        default_directory: pebble.directory.clone(),
        ca_root: Some(pebble.listener_ca.clone()),
        cert_dir: certs.to_owned(),
        hook: None,
        order_timeout: Duration::from_secs(30),
        check_interval: Duration::from_secs(3600),
        own_dns: Some(dns),
        propagation_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// Renewal under a controlled clock: nothing before the renewal time, one order after it even
/// when two schedulers (two database sessions, as two siteward processes would have) race; a
/// failing order is retried only after its backoff, doubles the backoff, and leaves no TXT
/// record behind.
#[tokio::test]
async fn renews_on_time_once_and_backs_off_after_failures() -> TestResult {
    use siteward_acme::{Acme, Outcome};
    // The DNS address is needed before Pebble starts, and the directory before the domain exists:
    // bind the zone first with a placeholder directory, then point the domain at Pebble.
    let (_db, store, dns, id, shutdown) = zone_with_dns("https://127.0.0.1:1/dir").await?;
    let pebble = Pebble::start(dns).await?;
    store
        .update_domain(
            id,
            siteward_store::resources::DomainPatch {
                acme_directory: Some(Some(pebble.directory.clone())),
                ..Default::default()
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    store.reload(siteward_store::Dirty::ALL).await?;
    let certs = tempfile::tempdir()?;
    let acme = Acme::new(store.clone(), settings(&pebble, certs.path(), dns));
    // What a process killed during an earlier order left in our zone: withdrawn by this one.
    let site = *store
        .snapshot()
        .naming
        .site_by_domain
        .get("lab.test")
        .ok_or("no site")?;
    store
        .put_challenge_txt(
            site,
            "_acme-challenge",
            "left by a killed process",
            Some(id),
        )
        .await?;
    // And what one left for a domain deleted since: withdrawn by the scheduler's next pass.
    let gone = store
        .create_domain(
            siteward_store::resources::NewDomain::named("gone.example"),
            &siteward_store::Actor::system(),
        )
        .await?;
    store
        .put_challenge_txt(
            site,
            "_acme-challenge.gone",
            "left for a deleted domain",
            Some(gone.id),
        )
        .await?;
    store
        .put_http_challenge(
            "orphan-token",
            "orphan-token.x",
            chrono::Utc::now() + chrono::Duration::hours(1),
            Some(gone.id),
        )
        .await?;
    store
        .delete_domain(gone.id, &siteward_store::Actor::system())
        .await?;
    store.reload(siteward_store::Dirty::ALL).await?;

    // Never issued: due at once.
    let t0 = chrono::Utc::now();
    let done = acme.renew_due(t0).await?;
    assert!(
        matches!(done.as_slice(), [(_, Outcome::Issued(_))]),
        "{done:?}"
    );
    assert_eq!(store.challenge_txt_count().await?, 0);
    assert!(store.challenges_left(id).await?.is_empty());
    assert!(store.challenges_of_deleted_domains().await?.is_empty());
    assert_eq!(
        store
            .http_challenge("orphan-token", chrono::Utc::now())
            .await?,
        None
    );
    let first = store.certificate(id).await?;
    let (nb, na, renew) = (
        first.not_before.ok_or("no not_before")?,
        first.not_after.ok_or("no not_after")?,
        first.renew_at.ok_or("no renew_at")?,
    );
    let lifetime = na - nb;
    let two_thirds = nb + lifetime * 2 / 3;
    assert!(
        renew <= two_thirds && renew >= two_thirds - lifetime / 30,
        "{first:?}"
    );

    // Just before the renewal time: nothing happens.
    let before = renew - chrono::Duration::minutes(1);
    let done = acme.renew_due(before).await?;
    assert!(done.is_empty(), "{done:?}");
    let asked = store.certificate(id).await?;
    assert_eq!(asked.orders_placed, 1);
    // That pass asked the CA for renewal information (RFC 9773); Debian's Pebble has none, so
    // our own schedule stands and the CA is asked again a day later, not on every pass.
    assert_eq!(
        (asked.ari_window_start, asked.renew_at),
        (None, Some(renew)),
        "{asked:?}"
    );
    assert_eq!(
        asked.ari_next_check_at,
        Some(before + chrono::Duration::days(1)),
        "{asked:?}"
    );

    // After it, two schedulers race: one order.
    let other = Acme::new(store.clone(), settings(&pebble, certs.path(), dns));
    let at = renew + chrono::Duration::seconds(1);
    let (a, b) = tokio::join!(acme.renew_due(at), other.renew_due(at));
    let issued = a?
        .into_iter()
        .chain(b?)
        .filter(|(_, o)| matches!(o, Outcome::Issued(_)))
        .count();
    assert_eq!(issued, 1);
    let second = store.certificate(id).await?;
    assert_eq!(second.orders_placed, 2, "{second:?}");
    assert_ne!(second.serial, first.serial);
    assert_eq!(store.challenge_txt_count().await?, 0);

    // Installation is retried apart from ordering: with the files gone and a hook that fails,
    // a pass records the hook's failure (not its command) and orders nothing; the next pass
    // with a working hook installs the stored certificate and clears the error.
    let domain_dir = certs.path().join("lab.test");
    std::fs::remove_dir_all(&domain_dir)?;
    let failing = Acme::new(
        store.clone(),
        siteward_acme::Settings {
            hook: Some("echo reload refused >&2; exit 3 # token=s3cret".into()),
            ..settings(&pebble, certs.path(), dns)
        },
    );
    // Before the new certificate's renewal time: nothing is due.
    let quiet_time = second.renew_at.ok_or("no renew_at")? - chrono::Duration::minutes(1);
    let done = failing.renew_due(quiet_time).await?;
    assert!(done.is_empty(), "{done:?}");
    let info = store.certificate(id).await?;
    let error = info.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("the hook failed") && error.contains("reload refused"),
        "{info:?}"
    );
    assert!(!error.contains("s3cret"), "{error}");
    assert_eq!((info.orders_placed, info.failures), (2, 0), "{info:?}");
    let marker = tempfile::tempdir()?;
    let hooked = Acme::new(
        store.clone(),
        siteward_acme::Settings {
            hook: Some(format!("touch {}/ran", marker.path().display())),
            ..settings(&pebble, certs.path(), dns)
        },
    );
    assert!(hooked.renew_due(quiet_time).await?.is_empty());
    assert!(marker.path().join("ran").exists(), "the hook did not run");
    let chain = std::fs::read_to_string(domain_dir.join("fullchain.pem"))?;
    assert_eq!(
        Some(chain),
        store.certificate_material(id).await?.map(|(c, _)| c)
    );
    let info = store.certificate(id).await?;
    assert_eq!((info.last_error, info.orders_placed), (None, 2));
    // Installed once: the next pass leaves the files and the hook alone.
    std::fs::remove_file(marker.path().join("ran"))?;
    assert!(hooked.renew_due(quiet_time).await?.is_empty());
    assert!(!marker.path().join("ran").exists(), "installed twice");
    // A file lost behind our back (the marker still there) is written again.
    std::fs::remove_file(domain_dir.join("privkey.pem"))?;
    assert!(hooked.renew_due(quiet_time).await?.is_empty());
    assert!(
        domain_dir.join("privkey.pem").exists(),
        "the key was not restored"
    );
    assert!(marker.path().join("ran").exists(), "the hook did not run");

    // A CA that cannot see our DNS: the order fails and is retried only after the backoff.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let blind = Pebble::start(dead).await?;
    store
        .update_domain(
            id,
            siteward_store::resources::DomainPatch {
                acme_directory: Some(Some(blind.directory.clone())),
                ..Default::default()
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    store.reload(siteward_store::Dirty::ALL).await?;
    let blind_acme = Acme::new(store.clone(), settings(&blind, certs.path(), dns));
    let t1 = second.renew_at.ok_or("no renew_at")? + chrono::Duration::seconds(1);
    let done = blind_acme.renew_due(t1).await?;
    assert!(
        matches!(done.as_slice(), [(_, Outcome::Failed(_))]),
        "{done:?}"
    );
    let failed = store.certificate(id).await?;
    assert_eq!(
        (failed.failures, failed.orders_placed),
        (1, 3),
        "{failed:?}"
    );
    assert!(
        failed.last_error.as_deref().unwrap_or("").contains("CA"),
        "{failed:?}"
    );
    let next = failed.next_attempt_at.ok_or("no backoff")?;
    assert!(
        next >= t1 + chrono::Duration::minutes(5) && next <= t1 + chrono::Duration::minutes(6),
        "{failed:?}"
    );
    assert_eq!(
        store.challenge_txt_count().await?,
        0,
        "a failed order left TXT records"
    );
    // The old certificate is kept meanwhile.
    assert_eq!(failed.serial, second.serial);
    // Within the backoff: no attempt.
    let done = blind_acme
        .renew_due(next - chrono::Duration::seconds(1))
        .await?;
    assert!(done.is_empty(), "{done:?}");
    assert_eq!(store.certificate(id).await?.orders_placed, 3);
    // After it: one more attempt, and the backoff doubles.
    let t2 = next + chrono::Duration::seconds(1);
    let done = blind_acme.renew_due(t2).await?;
    assert!(
        matches!(done.as_slice(), [(_, Outcome::Failed(_))]),
        "{done:?}"
    );
    let again = store.certificate(id).await?;
    assert_eq!((again.failures, again.orders_placed), (2, 4), "{again:?}");
    let next2 = again.next_attempt_at.ok_or("no backoff")?;
    assert!(
        next2 >= t2 + chrono::Duration::minutes(10) && next2 <= t2 + chrono::Duration::minutes(11),
        "{again:?}"
    );
    assert_eq!(store.challenge_txt_count().await?, 0);
    shutdown.cancel();
    Ok(())
}

/// DNS-01 through Cloudflare: the simulator publishes TXT records to pebble-challtestsrv, which
/// Pebble asks. Token and global-key credentials, zone found by walking up a deeper name, apex
/// and wildcard records coexisting at one name, a stranger's record there left alone, exactly our
/// records deleted, 5xx retried, wrong credentials reported with Cloudflare's code and nothing
/// left behind.
#[tokio::test]
async fn issues_through_cloudflare() -> TestResult {
    use crate::cf_sim::{CfSim, ChallTestSrv};
    use siteward_acme::Acme;
    let chall = ChallTestSrv::start().await?;
    let sim = CfSim::start(
        &["example.org", "example.net"],
        "tok-good",
        "ops@example.net",
        "key-good",
        Some(chall.management.clone()),
    )
    .await?;
    sim.add_foreign(
        "example.org",
        "TXT",
        "_acme-challenge.example.org",
        "\"someone else\"",
    )
    .await?;
    let pebble = Pebble::start(chall.dns).await?;
    let db = TestDb::new().await?;
    let store = db.store().await?;
    let domain =
        |name: &str, email: Option<&str>, key: &str| siteward_store::resources::NewDomain {
            // The global-key domain's own contact gets an ACME account of its own.
            acme_email: Some(email.unwrap_or("admin@example.org").into()),
            cloudflare_api_email: email.map(str::to_owned),
            cloudflare_api_key: Some(key.into()),
            ..siteward_store::resources::NewDomain::named(name)
        };
    let org = store
        .create_domain(
            domain("example.org", None, "tok-good"),
            &siteward_store::Actor::system(),
        )
        .await?;
    let net = store
        .create_domain(
            domain("team.example.net", Some("ops@example.net"), "key-good"),
            &siteward_store::Actor::system(),
        )
        .await?;
    let bad = store
        .create_domain(
            domain("www.example.org", None, "tok-wrong"),
            &siteward_store::Actor::system(),
        )
        .await?;
    store.reload(siteward_store::Dirty::ALL).await?;
    let certs = tempfile::tempdir()?;
    let settings = siteward_acme::Settings {
        default_directory: pebble.directory.clone(),
        ca_root: Some(pebble.listener_ca.clone()),
        cert_dir: certs.path().to_owned(),
        order_timeout: Duration::from_secs(30),
        propagation_timeout: Duration::from_secs(5),
        cloudflare_api: sim.url.clone(),
        nameservers: vec![chall.dns],
        ..Default::default()
    };
    let acme = Acme::new(store.clone(), settings.clone());
    let quiet = |_: &str| {};

    // API token.
    let cert = acme.issue(org.id, chrono::Utc::now(), &quiet).await?;
    assert_eq!(cert.names, ["example.org", "*.example.org"]);
    assert!(cert.issuer.contains("Pebble"), "{}", cert.issuer);
    let left: Vec<_> = sim.records();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        left[0].content, "\"someone else\"",
        "a stranger's record must stay"
    );
    let log = sim.log();
    assert!(log.iter().all(|(_, style)| style == "token"), "{log:?}");
    assert_eq!(
        log.iter().filter(|(r, _)| r.starts_with("POST")).count(),
        2,
        "apex and wildcard each get a record: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|(r, _)| r.starts_with("DELETE")).count(),
        2,
        "{log:?}"
    );

    // Global key, a name below the zone, and one transient 500 on the way.
    sim.fail_next(&[StatusCode::INTERNAL_SERVER_ERROR]);
    let cert = acme.issue(net.id, chrono::Utc::now(), &quiet).await?;
    assert_eq!(cert.names, ["team.example.net", "*.team.example.net"]);
    assert!(sim.log().iter().any(|(_, style)| style == "global key"));
    assert_eq!(sim.records().len(), 1);
    assert!(certs.path().join("team.example.net/fullchain.pem").exists());
    // One ACME account per directory and contact e-mail.
    let emails: Vec<Option<String>> =
        sqlx::query_scalar("SELECT email FROM acme_accounts ORDER BY email")
            .fetch_all(&db.pool().await?)
            .await?;
    assert_eq!(
        emails,
        [
            Some("admin@example.org".into()),
            Some("ops@example.net".into())
        ]
    );

    // Cloudflare makes a record but its answer is lost: the create is not sent again (that
    // would make a second record); the record is found by its content, used, and deleted.
    let posts =
        |log: &[(String, String)]| log.iter().filter(|(r, _)| r.starts_with("POST")).count();
    let before = posts(&sim.log());
    sim.lose_next_create();
    acme.issue(net.id, chrono::Utc::now(), &quiet).await?;
    // One create per challenge at most (two names; one CI run under load saw the CA need only
    // one challenge, so 1 is right too); a create sent again would leave a second record with
    // the same content behind, which the count of records catches.
    let made = posts(&sim.log()) - before;
    assert!((1..=2).contains(&made), "{made} creates: {:?}", sim.log());
    assert_eq!(sim.records().len(), 1, "{:?}", sim.records());

    // Wrong token: Cloudflare's code in the error, recorded with backoff, nothing created.
    let err = acme
        .issue(bad.id, chrono::Utc::now(), &quiet)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("9109") && err.contains("authentication"),
        "{err}"
    );
    let info = store.certificate(bad.id).await?;
    assert!(
        info.last_error.as_deref().unwrap_or("").contains("9109"),
        "{info:?}"
    );
    assert_eq!(info.failures, 1);
    assert_eq!(sim.records().len(), 1);

    // Rate limited (429 with Retry-After: 600): the error says until when, and the next
    // automatic attempt waits that long although the first backoff is only five minutes.
    sim.fail_next(&[StatusCode::TOO_MANY_REQUESTS]);
    let t = chrono::Utc::now();
    let err = acme
        .issue(org.id, t, &quiet)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("rate limited by Cloudflare until"), "{err}");
    let info = store.certificate(org.id).await?;
    let next = info.next_attempt_at.ok_or("no next attempt")?;
    assert!(next >= t + chrono::Duration::seconds(590), "{info:?}");
    assert_eq!(sim.records().len(), 1);

    // An order that fails after its records exist (they never become visible where it looks)
    // deletes them and their notes all the same.
    let blind = Acme::new(
        store.clone(),
        siteward_acme::Settings {
            propagation_timeout: Duration::from_millis(500),
            nameservers: vec![std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?],
            ..settings
        },
    );
    let posts_before = posts(&sim.log());
    let err = blind
        .issue(org.id, chrono::Utc::now(), &quiet)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("not visible"), "{err}");
    assert!(posts(&sim.log()) > posts_before, "no record was made");
    assert_eq!(sim.records().len(), 1, "{:?}", sim.records());
    assert!(store.challenges_left(org.id).await?.is_empty());

    // A process killed half way through an order left a record (and its note); another note
    // names a record someone already deleted. The next order withdraws the first, counts the
    // second as withdrawn, and leaves the stranger's record alone.
    sim.add_foreign(
        "example.org",
        "TXT",
        "_acme-challenge.example.org",
        "\"left by a killed process\"",
    )
    .await?;
    let left = sim
        .records()
        .into_iter()
        .find(|r| r.content.contains("killed"))
        .ok_or("no leftover")?;
    for reference in [left.id.as_str(), "0123456789abcdef0123456789abcdef"] {
        store
            .challenge_published(org.id, "cloudflare", reference, Some(&left.zone_id))
            .await?;
    }
    acme.issue(org.id, chrono::Utc::now(), &quiet).await?;
    let records = sim.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].content, "\"someone else\"");
    assert!(store.challenges_left(org.id).await?.is_empty());
    Ok(())
}

/// HTTP-01 for a domain outside our zones and without Cloudflare: Pebble fetches the key
/// authorization from siteward's own HTTP listener (pebble-challtestsrv resolves every name to
/// 127.0.0.1 for Pebble); the answer is withdrawn afterwards.
#[tokio::test]
async fn issues_with_http01_from_our_http_listener() -> TestResult {
    use crate::cf_sim::ChallTestSrv;
    let chall = ChallTestSrv::start().await?;
    let tmp = tempfile::tempdir()?;
    let listener_ca = listener_certificate(tmp.path())?;
    let certs = tmp.path().join("certs");
    let db = TestDb::new().await?;
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        env: vec![
            (
                "SITEWARD_ACME__CA_ROOT".into(),
                listener_ca.display().to_string(),
            ),
            (
                "SITEWARD_ACME__CERT_DIR".into(),
                certs.display().to_string(),
            ),
        ],
        ..Default::default()
    })
    .await?;
    server.db = Some(db);
    let http_port = server.addrs.http.ok_or("no HTTP address")?.port();
    let pebble = Pebble::start_with(tmp, listener_ca, chall.dns, http_port).await?;
    let store = server.db.as_ref().ok_or("db")?.store().await?;
    let domain = store
        .create_domain(
            siteward_store::resources::NewDomain {
                acme_email: Some("admin@example.com".into()),
                acme_directory: Some(pebble.directory.clone()),
                ..siteward_store::resources::NewDomain::named("web.example.com")
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    // Unknown tokens are 404; path tricks never reach the store.
    let http = Client::new();
    for path in ["nope", "..%2F..%2Fetc%2Fpasswd", "a%00b"] {
        let res = http
            .get(server.url(&format!("/.well-known/acme-challenge/{path}")))
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Order through the CLI (same code path as the scheduler); it waits for the snapshot.
    let data = tempfile::tempdir()?;
    let url = server.db.as_ref().ok_or("db")?.url.clone();
    let (st, out, err) = run_cli(
        &[
            "--data-dir",
            &data.path().display().to_string(),
            "--database-url",
            &url,
            "cert",
            "issue",
            "web.example.com",
        ],
        &[
            ("SITEWARD_SECRET_KEY", &test_key_base64()),
            (
                "SITEWARD_ACME__CA_ROOT",
                &pebble.listener_ca.display().to_string(),
            ),
            ("SITEWARD_ACME__CERT_DIR", &certs.display().to_string()),
        ],
        None,
    )
    .await?;
    assert!(st.success(), "{out}{err}\n{}", server.logs());
    assert!(err.contains("HTTP-01"), "{err}");
    assert!(out.contains("web.example.com: serial"), "{out}");
    let info = store.certificate(domain.id).await?;
    assert_eq!(
        info.names,
        ["web.example.com"],
        "HTTP-01 cannot prove a wildcard"
    );
    assert!(certs.join("web.example.com/fullchain.pem").exists());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM acme_http_challenges")
        .fetch_one(&server.db.as_ref().ok_or("db")?.pool().await?)
        .await?;
    assert_eq!(left, 0);
    server.stop().await
}

/// `bench/acme`: certificates issued one after another from the command line, by siteward
/// (`siteward cert issue`) and by lego (Debian's `lego`), both with HTTP-01 against the same
/// Pebble; prints both rates and the ratio.
#[tokio::test]
#[ignore = "benchmark: run bench/acme"]
async fn bench_acme() -> TestResult {
    use crate::cf_sim::ChallTestSrv;
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let chall = ChallTestSrv::start().await?;
    let tmp = tempfile::tempdir()?;
    let listener_ca = listener_certificate(tmp.path())?;
    let ca = listener_ca.display().to_string();
    let certs = tmp.path().join("certs");
    let http_port = free_port()?;
    let db = TestDb::new().await?;
    let url = db.url.clone();
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        args: vec!["--http".into(), format!("127.0.0.1:{http_port}")],
        ..Default::default()
    })
    .await?;
    server.db = Some(db);
    let pebble = Pebble::start_with(tmp, listener_ca, chall.dns, http_port).await?;
    let store = server.db.as_ref().ok_or("db")?.store().await?;
    for i in 0..n {
        store
            .create_domain(
                siteward_store::resources::NewDomain {
                    acme_email: Some("admin@bench.test".into()),
                    acme_directory: Some(pebble.directory.clone()),
                    ..siteward_store::resources::NewDomain::named(format!("s{i}.bench.test"))
                },
                &siteward_store::Actor::system(),
            )
            .await?;
    }
    let data = tempfile::tempdir()?;
    let data_dir = data.path().display().to_string();
    let cert_dir = certs.display().to_string();
    let key = test_key_base64();
    let started = Instant::now();
    for i in 0..n {
        let name = format!("s{i}.bench.test");
        let (st, out, err) = run_cli(
            &[
                "--data-dir",
                &data_dir,
                "--database-url",
                &url,
                "cert",
                "issue",
                &name,
            ],
            &[
                ("SITEWARD_SECRET_KEY", &key),
                ("SITEWARD_ACME__CA_ROOT", &ca),
                ("SITEWARD_ACME__CERT_DIR", &cert_dir),
            ],
            None,
        )
        .await?;
        assert!(st.success(), "{out}{err}");
    }
    let ours = started.elapsed();
    // lego answers HTTP-01 itself on the same port: siteward steps aside.
    server.stop().await?;
    let lego_dir = tempfile::tempdir()?;
    let started = Instant::now();
    for i in 0..n {
        let out = Command::new("lego")
            .env("LEGO_CA_CERTIFICATES", &ca)
            .args([
                "--server",
                &pebble.directory,
                "--email",
                "admin@bench.test",
                "--accept-tos",
                "--http",
                "--http.port",
                &format!("127.0.0.1:{http_port}"),
                "--path",
                &lego_dir.path().display().to_string(),
                "--domains",
                &format!("l{i}.bench.test"),
                "run",
            ])
            .output()
            .await
            .map_err(|e| format!("cannot run lego (apt-get install lego): {e}"))?;
        assert!(
            out.status.success(),
            "lego: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let theirs = started.elapsed();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("bench/acme: {n} certificates each, one after another, HTTP-01, Pebble with PEBBLE_VA_NOSLEEP=1");
    println!(
        "siteward cert issue {:>8.2} certs/s ({:?} in all)",
        rate(ours),
        ours
    );
    println!(
        "lego run            {:>8.2} certs/s ({:?} in all)",
        rate(theirs),
        theirs
    );
    println!("ratio               {:>8.2}", rate(ours) / rate(theirs));
    Ok(())
}

/// Two siteward processes on one database, each running the renewal scheduler every second:
/// a domain that needs a certificate gets exactly one order, and both processes install it.
/// (HTTP-01, so that whichever process orders, the answer Pebble fetches from the first one's
/// listener comes straight from the database.)
#[tokio::test]
async fn two_processes_on_one_database_place_one_order() -> TestResult {
    use crate::cf_sim::ChallTestSrv;
    let chall = ChallTestSrv::start().await?;
    let tmp = tempfile::tempdir()?;
    let listener_ca = listener_certificate(tmp.path())?;
    let certs = tempfile::tempdir()?;
    let db = TestDb::new().await?;
    let store = db.store().await?;
    let env = |dir: &str| {
        vec![
            (
                "SITEWARD_ACME__CA_ROOT".to_owned(),
                listener_ca.display().to_string(),
            ),
            (
                "SITEWARD_ACME__CERT_DIR".to_owned(),
                certs.path().join(dir).display().to_string(),
            ),
            (
                "SITEWARD_ACME__CHECK_INTERVAL_SECONDS".to_owned(),
                "1".to_owned(),
            ),
            ("SITEWARD_ACME__ENABLED".to_owned(), "true".to_owned()),
        ]
    };
    let start = |dir: &str| {
        Server::start_with(ServerOptions {
            database_url: Some(db.url.clone()),
            env: env(dir),
            ..Default::default()
        })
    };
    let (a, b) = tokio::try_join!(start("a"), start("b"))?;
    let http_port = a.addrs.http.ok_or("no HTTP address")?.port();
    let pebble = Pebble::start_with(tmp, listener_ca.clone(), chall.dns, http_port).await?;
    let domain = store
        .create_domain(
            siteward_store::resources::NewDomain {
                acme_email: Some("admin@example.com".into()),
                acme_directory: Some(pebble.directory.clone()),
                ..siteward_store::resources::NewDomain::named("race.example.com")
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    // Both schedulers see the domain within a second; one of them orders.
    let deadline = Instant::now() + Duration::from_secs(60);
    let serial = loop {
        let info = store.certificate(domain.id).await?;
        if let Some(serial) = info.serial {
            break serial;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate: {info:?}\n--- a\n{}\n--- b\n{}",
            a.logs(),
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A few more passes of both: still one order, and each process installed it.
    let installed = |dir: &str| {
        std::fs::read_to_string(
            certs
                .path()
                .join(dir)
                .join("race.example.com/.installed-serial"),
        )
        .is_ok_and(|s| s.trim() == serial)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(installed("a") && installed("b")) {
        assert!(Instant::now() < deadline, "not installed by both processes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let info = store.certificate(domain.id).await?;
    assert_eq!(
        (info.orders_placed, info.failures),
        (1, 0),
        "{info:?}\n--- a\n{}\n--- b\n{}",
        a.logs(),
        b.logs()
    );
    a.stop().await?;
    b.stop().await
}

/// A small tmpfs mounted on a directory for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> TestResult<Self> {
        std::fs::create_dir_all(at)?;
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "mounting a tmpfs needs root (CAP_SYS_ADMIN): {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(Self(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system of `dir` with one file until it is full.
fn fill(dir: &Path) -> TestResult<PathBuf> {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![0u8; 4096];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => return Err(e.into()),
        }
    }
    let _ = f.sync_all();
    Ok(path)
}

#[tokio::test]
async fn a_full_disk_fails_certificate_writes_cleanly_and_they_are_retried() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let listener_ca = listener_certificate(tmp.path())?;
    // Outside `tmp` (which Pebble owns), so that it is unmounted before its directory goes.
    let mnt = tempfile::tempdir()?;
    let certs = mnt.path().join("certs");
    let disk = Tmpfs::mount(&certs, "256k")?;
    let filler = fill(&certs)?;
    let db = TestDb::new().await?;
    let (server, pebble, http, store, key, id) =
        acme_server(db, tmp, listener_ca, &certs, Vec::new()).await?;
    let cert_path = format!("/external-domains/{id}/certificate");

    // The order succeeds; writing the files does not: the job says so, the certificate is kept.
    let (s, job) = api(&http, &server, &key, Method::POST, &cert_path, None).await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let job_id = job["job_id"].as_i64().ok_or("no job id")?;
    let t = Instant::now();
    let job = loop {
        let (_, j) = api(
            &http,
            &server,
            &key,
            Method::GET,
            &format!("/jobs/{job_id}"),
            None,
        )
        .await?;
        if j["status"] == "success" || j["status"] == "failure" {
            break j;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the order did not finish: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["status"], "failure", "{job}");
    let text = job.to_string();
    assert!(
        text.contains("No space left on device") && text.contains("installation is retried"),
        "{job}"
    );
    let (s, cert) = api(&http, &server, &key, Method::GET, &cert_path, None).await?;
    assert_eq!(s, StatusCode::OK);
    let serial = cert["serial"]
        .as_str()
        .ok_or("no stored serial")?
        .to_owned();
    assert!(
        cert["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("No space left"),
        "{cert}"
    );
    let domain_dir = certs.join("lab.test");
    assert!(
        !domain_dir.join("fullchain.pem").exists() && !domain_dir.join("privkey.pem").exists(),
        "a file was written on a full disk"
    );
    let stray: Vec<_> = std::fs::read_dir(&domain_dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(stray.is_empty(), "temporary files left behind: {stray:?}");
    // The server keeps serving.
    assert_eq!(
        http.get(server.url("/healthz")).send().await?.status(),
        StatusCode::OK
    );
    assert_eq!(
        api(&http, &server, &key, Method::GET, "/me", None).await?.0,
        StatusCode::OK
    );

    // Space again: a scheduler pass installs the stored certificate, without a new order.
    std::fs::remove_file(&filler)?;
    let t = Instant::now();
    loop {
        let (_, c) = api(&http, &server, &key, Method::GET, &cert_path, None).await?;
        if domain_dir.join("fullchain.pem").exists() && c["last_error"].is_null() {
            assert_eq!(c["serial"], serial.as_str(), "{c}");
            assert_eq!(
                c["orders_placed"], 1,
                "ordered again instead of installing: {c}"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the stored certificate was not installed: {c}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let chain = std::fs::read_to_string(domain_dir.join("fullchain.pem"))?;
    assert!(chain.contains("BEGIN CERTIFICATE"));
    assert!(std::fs::read_to_string(domain_dir.join("privkey.pem"))?.contains("PRIVATE KEY"));
    assert_eq!(
        store.challenge_txt_count().await?,
        0,
        "a challenge record left"
    );
    server.stop().await?;
    drop(disk);
    drop(mnt);
    drop(pebble);
    Ok(())
}

/// The real binary with ACME on (certificates under `certs`, a scheduler pass every second) on
/// `db`, Pebble resolving through its DNS, an administrator's API key, a site `lab.test` and
/// the external domain `lab.test` on it: (server, pebble, client, store, key, domain id).
async fn acme_server(
    db: TestDb,
    tmp: tempfile::TempDir,
    listener_ca: PathBuf,
    certs: &Path,
    args: Vec<String>,
) -> TestResult<(Server, Pebble, Client, siteward_store::Store, String, i64)> {
    let mut server = Server::start_with(acme_options(&db, &listener_ca, certs, args)).await?;
    server.db = Some(db);
    let dns = server.addrs.dns.ok_or("no DNS address")?;
    let pebble = Pebble::start_in(tmp, listener_ca, dns).await?;
    let http = Client::new();
    let store = server.db.as_ref().ok_or("db")?.store().await?;
    let key = root_key(&http, &server, &store).await?;
    let (s, site) = api(
        &http,
        &server,
        &key,
        Method::POST,
        "/sites",
        Some(json!({
            "name": "lab", "internal_domain": "lab.test", "gateway": "10.9.0.1",
            "subnet_mask": "255.255.255.0"
        })),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED, "{site}");
    let (s, domain) = api(&http, &server, &key, Method::POST, "/external-domains", Some(json!({
        "domain": "lab.test", "acme_email": "admin@lab.test", "acme_directory": pebble.directory,
        "site_id": site["id"]
    }))).await?;
    assert_eq!(s, StatusCode::CREATED, "{domain}");
    let id = domain["id"].as_i64().ok_or("no id")?;
    Ok((server, pebble, http, store, key, id))
}

/// An administrator `root` and an API key of theirs, once the server's snapshot has it.
async fn root_key(
    http: &Client,
    server: &Server,
    store: &siteward_store::Store,
) -> TestResult<String> {
    store
        .create_user(
            siteward_store::NewUser {
                username: "root".into(),
                password: Some("a long enough password".into()),
                admin: true,
                ..Default::default()
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    let (_, key) = store
        .create_api_key("root", "acme", None, &siteward_store::Actor::system())
        .await?;
    // The key reaches the server's snapshot through the change feed.
    let t = Instant::now();
    while api(http, server, &key, Method::GET, "/me", None).await?.0 != StatusCode::OK {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the API key never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(key)
}

/// How [`acme_server`] starts siteward (again, after a kill, with the same `args`).
fn acme_options(db: &TestDb, listener_ca: &Path, certs: &Path, args: Vec<String>) -> ServerOptions {
    ServerOptions {
        database_url: Some(db.url.clone()),
        env: vec![
            (
                "SITEWARD_ACME__CA_ROOT".into(),
                listener_ca.display().to_string(),
            ),
            (
                "SITEWARD_ACME__CERT_DIR".into(),
                certs.display().to_string(),
            ),
            ("SITEWARD_ACME__CHECK_INTERVAL_SECONDS".into(), "1".into()),
            ("SITEWARD_ACME__ENABLED".into(), "true".into()),
        ],
        args,
        ..Default::default()
    }
}

/// `kill -9` in the middle of an order (its challenge record published, Pebble held with
/// SIGSTOP so the order cannot finish first), then a restart on the same database and DNS port:
/// the record the dead process published is withdrawn, the interrupted job ends, and the domain
/// gets its certificate from the restarted process.
#[tokio::test]
async fn kill_9_during_a_certificate_order_then_restart() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let listener_ca = listener_certificate(tmp.path())?;
    let certs_dir = tempfile::tempdir()?;
    let certs = certs_dir.path().join("certs");
    let dns_port = crate::dns::free_port()?;
    let args = vec!["--dns".to_owned(), format!("127.0.0.1:{dns_port}")];
    let db = TestDb::new().await?;
    let (mut server, pebble, http, store, key, id) =
        acme_server(db, tmp, listener_ca.clone(), &certs, args.clone()).await?;
    let pebble_pid = pebble.child.id().ok_or("no pebble pid")?.to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pebble_pid])
            .status()
    };
    let cert_path = format!("/external-domains/{id}/certificate");
    let (s, job) = api(&http, &server, &key, Method::POST, &cert_path, None).await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let job_id = job["job_id"].as_i64().ok_or("no job id")?;
    // The moment the challenge record is in the database, hold Pebble and kill siteward.
    let t = Instant::now();
    while store.challenge_txt_count().await? == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no challenge record was published\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(signal("-STOP")?.success(), "cannot stop pebble");
    let db = server.db.take().ok_or("no db")?;
    server.kill().await?;
    assert!(
        store.challenge_txt_count().await? > 0,
        "the record was withdrawn before the kill: the order was not interrupted"
    );
    assert!(signal("-CONT")?.success(), "cannot continue pebble");

    let mut server = Server::start_with(acme_options(&db, &listener_ca, &certs, args)).await?;
    server.db = Some(db);
    // The interrupted job ends; the domain gets a certificate; no challenge record is left.
    let t = Instant::now();
    let domain_dir = certs.join("lab.test");
    loop {
        let (_, j) = api(
            &http,
            &server,
            &key,
            Method::GET,
            &format!("/jobs/{job_id}"),
            None,
        )
        .await?;
        let (_, c) = api(&http, &server, &key, Method::GET, &cert_path, None).await?;
        let left = store.challenge_txt_count().await?;
        if j["status"] != "running"
            && j["status"] != "pending"
            && domain_dir.join("fullchain.pem").exists()
            && left == 0
        {
            assert!(c["serial"].is_string(), "{c}");
            assert_eq!(
                c["orders_placed"], 2,
                "the interrupted order and one after: {c}"
            );
            println!("after the restart: job {}, certificate {c}", j["status"]);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "after the restart: job {j}, certificate {c}, {left} challenge records\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let chain = std::fs::read_to_string(domain_dir.join("fullchain.pem"))?;
    assert!(chain.contains("BEGIN CERTIFICATE"));
    server.stop().await?;
    drop(pebble);
    Ok(())
}

/// `kill -9` while Cloudflare is making an order's challenge record (the record exists at
/// Cloudflare, its answer never reached us), then a restart: the record was noted before it was
/// asked for, so the next order deletes it; the domain gets its certificate and Cloudflare is
/// left holding only what others made.
#[tokio::test]
async fn kill_9_while_cloudflare_makes_a_challenge_record_then_restart() -> TestResult {
    use crate::cf_sim::{CfSim, ChallTestSrv};
    let chall = ChallTestSrv::start().await?;
    let sim = CfSim::start(
        &["example.org"],
        "tok-good",
        "ops@example.org",
        "key-good",
        Some(chall.management.clone()),
    )
    .await?;
    sim.add_foreign(
        "example.org",
        "TXT",
        "_acme-challenge.example.org",
        "\"someone else\"",
    )
    .await?;
    let pebble = Pebble::start(chall.dns).await?;
    let certs_dir = tempfile::tempdir()?;
    let certs = certs_dir.path().join("certs");
    let db = TestDb::new().await?;
    let mut options = acme_options(&db, &pebble.listener_ca, &certs, Vec::new());
    options.env.extend([
        ("SITEWARD_ACME__CLOUDFLARE_API".into(), sim.url.clone()),
        ("SITEWARD_ACME__NAMESERVERS".into(), chall.dns.to_string()),
        (
            "SITEWARD_ACME__PROPAGATION_TIMEOUT_SECONDS".into(),
            "10".into(),
        ),
    ]);
    let mut server = Server::start_with(options.clone()).await?;
    server.db = Some(db);
    let http = Client::new();
    let store = server.db.as_ref().ok_or("db")?.store().await?;
    let key = root_key(&http, &server, &store).await?;
    sim.hold_creates(true);
    let (s, domain) = api(
        &http,
        &server,
        &key,
        Method::POST,
        "/external-domains",
        Some(json!({
            "domain": "example.org", "acme_email": "admin@example.org",
            "acme_directory": pebble.directory, "cloudflare_api_key": "tok-good"
        })),
    )
    .await?;
    assert_eq!(s, StatusCode::CREATED, "{domain}");
    let id = domain["id"].as_i64().ok_or("no id")?;
    let cert_path = format!("/external-domains/{id}/certificate");
    let (s, job) = api(&http, &server, &key, Method::POST, &cert_path, None).await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    // The moment Cloudflare holds the order's record (and has not answered), kill siteward.
    let ours = |sim: &CfSim| {
        sim.records()
            .into_iter()
            .filter(|r| r.content != "\"someone else\"")
            .count()
    };
    let t = Instant::now();
    while ours(&sim) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no challenge record was made at Cloudflare\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let db = server.db.take().ok_or("no db")?;
    server.kill().await?;
    assert_eq!(ours(&sim), 1, "{:?}", sim.records());
    let notes: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, reference FROM acme_published ORDER BY id")
            .fetch_all(&db.pool().await?)
            .await?;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, "cloudflare-pending", "{notes:?}");
    assert!(
        notes[0].1.starts_with("_acme-challenge.example.org "),
        "{notes:?}"
    );
    sim.hold_creates(false);

    let mut server = Server::start_with(options).await?;
    server.db = Some(db);
    let t = Instant::now();
    let domain_dir = certs.join("example.org");
    loop {
        let (_, c) = api(&http, &server, &key, Method::GET, &cert_path, None).await?;
        let left = ours(&sim);
        let notes: i64 = sqlx::query_scalar("SELECT count(*) FROM acme_published")
            .fetch_one(&server.db.as_ref().ok_or("db")?.pool().await?)
            .await?;
        if c["serial"].is_string()
            && domain_dir.join("fullchain.pem").exists()
            && left == 0
            && notes == 0
        {
            println!("after the restart: certificate {c}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "after the restart: certificate {c}, {left} of our records at Cloudflare \
             ({:?}), {notes} notes\n{}",
            sim.records(),
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let records = sim.records();
    assert_eq!(records.len(), 1, "the stranger's record stays: {records:?}");
    assert!(sim.log().iter().any(|(r, _)| r.starts_with("DELETE")));
    server.stop().await?;
    drop(pebble);
    Ok(())
}
