//! One change through the admin API, seen at once by LDAP (`ldapsearch`) and DNS (`dig`): the
//! API writes through the store, and every protocol reads the same live snapshot.

use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{json, Value};

use crate::harness::*;

async fn run(program: &str, args: &[String]) -> TestResult<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn eventually(
    what: &str,
    mut check: impl AsyncFnMut() -> TestResult<bool>,
) -> TestResult<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if check().await? {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("{what}: not seen within 5 s").into())
}

#[tokio::test]
async fn api_changes_are_seen_by_ldap_and_dns() -> TestResult {
    let server = Server::start().await?;
    let http = Client::new();
    let api = |p: &str| server.url(&format!("/api/v1{p}"));
    let r = http
        .post(api("/register"))
        .json(&json!({ "username": "root", "password": "a long enough password" }))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let store = server.db.as_ref().ok_or("db")?.store().await?;
    let (_, key) = store
        .create_api_key("root", "t", None, &siteward_store::Actor::system())
        .await?;
    eventually("api key", async || {
        Ok(http
            .get(api("/me"))
            .bearer_auth(&key)
            .send()
            .await?
            .status()
            == 200)
    })
    .await?;
    let post = |p: &str, body: Value| http.post(api(p)).bearer_auth(&key).json(&body).send();

    // A user created through the API is in the directory.
    let r = post("/users", json!({ "username": "zoe", "password": "zoe's long password", "given_name": "Zoe", "sn": "Quinn" })).await?;
    assert_eq!(r.status(), 201);
    let ldap = server.addrs.ldap.ok_or("no ldap")?;
    let args: Vec<String> = [
        "-x",
        "-LLL",
        "-H",
        &format!("ldap://{ldap}"),
        "-b",
        "dc=siteward,dc=internal",
        "(uid=zoe)",
        "uidNumber",
        "cn",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let out = run("ldapsearch", &args).await?;
    assert!(
        out.contains("uidNumber: 2001") && out.contains("cn: Zoe Quinn"),
        "{out}"
    );
    // ... and can bind with the password set through the API.
    let whoami: Vec<String> = [
        "-x",
        "-H",
        &format!("ldap://{ldap}"),
        "-D",
        "uid=zoe,ou=people,dc=siteward,dc=internal",
        "-w",
        "zoe's long password",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert!(run("ldapwhoami", &whoami).await?.contains("uid=zoe"));

    // A site, a node and a container: the container's name answers in DNS.
    post("/sites", json!({ "name": "lab", "internal_domain": "lab.internal", "gateway": "10.0.0.1", "subnet_mask": "255.255.255.0" })).await?;
    post(
        "/nodes",
        json!({ "name": "pve1", "site_id": 1, "ipv4_address": "10.0.0.2" }),
    )
    .await?;
    let dns = server.addrs.dns.ok_or("no dns")?;
    let dig = |name: &str, t: &str| -> Vec<String> {
        vec![
            format!("@{}", dns.ip()),
            "-p".into(),
            dns.port().to_string(),
            "+short".into(),
            "+norecurse".into(),
            name.into(),
            t.into(),
        ]
    };
    let r = post(
        "/containers/register",
        json!({ "hostname": "web", "node_id": 1, "ipv4_address": "10.0.0.20", "username": "zoe" }),
    )
    .await?;
    assert_eq!(r.status(), 201);
    let ct: Value = r.json().await?;
    let seen = eventually("A record", async || {
        Ok(run("dig", &dig("web.lab.internal", "A")).await?.trim() == "10.0.0.20")
    })
    .await?;
    assert!(
        seen < Duration::from_millis(500),
        "the API's change took {seen:?} to reach DNS"
    );
    assert_eq!(
        run("dig", &dig("20.0.0.10.in-addr.arpa", "PTR"))
            .await?
            .trim(),
        "web.lab.internal."
    );
    // A DNS service on it publishes SRV.
    let r = post(
        &format!("/containers/{}/services", ct["id"]),
        json!({ "type": "dns", "container_port": 389, "service_name": "_ldap._tcp" }),
    )
    .await?;
    assert_eq!(r.status(), 201);
    eventually("SRV record", async || {
        Ok(run("dig", &dig("_ldap._tcp.lab.internal", "SRV"))
            .await?
            .contains("389 web.lab.internal."))
    })
    .await?;
    // Deleting the container removes its records.
    let r = http
        .delete(api(&format!("/containers/{}", ct["id"])))
        .bearer_auth(&key)
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    eventually("record removal", async || {
        Ok(run("dig", &dig("web.lab.internal", "A"))
            .await?
            .trim()
            .is_empty())
    })
    .await?;
    server.stop().await
}
