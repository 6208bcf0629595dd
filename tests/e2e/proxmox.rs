//! Containers on Proxmox through the simulator: creation end to end with live progress, failure
//! injection at each step leaving nothing behind, VMID races, retries, parallel creations;
//! templates limited to what an administrator made, environment variables applied or refused.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::harness::*;
use crate::pve_sim::{PveSim, SimContainer, SimVolume, DEBIAN_TEMPLATE};

struct Cluster {
    server: Server,
    sim: PveSim,
    http: Client,
    admin: String,
}

impl Cluster {
    /// A server, a simulator with nodes pve1 and pve2, an admin, a site and both nodes.
    async fn start() -> TestResult<Self> {
        let server = Server::start().await?;
        let sim = PveSim::start(&["pve1", "pve2"]).await?;
        let http = Client::new();
        let r = http
            .post(server.url("/api/v1/register"))
            .json(&json!({ "username": "root", "password": "a long enough password", "ssh_public_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 root@admin"] }))
            .send()
            .await?;
        assert_eq!(r.status(), 201);
        let store = server.db.as_ref().ok_or("db")?.store().await?;
        let (_, admin) = store
            .create_api_key("root", "test", None, &siteward_store::Actor::system())
            .await?;
        let c = Self {
            server,
            sim,
            http,
            admin,
        };
        c.wait_auth().await?;
        let (s, v) = c.post("/sites", json!({ "name": "lab", "internal_domain": "lab.internal", "gateway": "10.0.0.1", "subnet_mask": "255.255.255.0", "dhcp_range": "10.0.0.100-10.0.0.250" })).await?;
        assert_eq!(s, 201, "{v}");
        for (name, ip) in [("pve1", "10.0.0.2"), ("pve2", "10.0.0.3")] {
            let (s, v) = c
                .post("/nodes", json!({ "name": name, "site_id": 1, "ipv4_address": ip, "api_url": c.sim.url(), "api_token_id_or_username": "root@pam!siteward", "api_token_secret_or_password": "4b1d6e0e-0000-4000-8000-000000000001" }))
                .await?;
            assert_eq!(s, 201, "{v}");
        }
        Ok(c)
    }

    async fn wait_auth(&self) -> TestResult {
        for _ in 0..200 {
            let r = self
                .http
                .get(self.server.url("/api/v1/me"))
                .bearer_auth(&self.admin)
                .send()
                .await?;
            if r.status() == 200 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("api key never became valid".into())
    }

    async fn post(&self, path: &str, body: Value) -> TestResult<(StatusCode, Value)> {
        let r = self
            .http
            .post(self.server.url(&format!("/api/v1{path}")))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await?;
        let s = r.status();
        Ok((s, r.json().await.unwrap_or(Value::Null)))
    }

    /// A request with another API key.
    async fn call_as(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> TestResult<(StatusCode, Value)> {
        let mut r = self
            .http
            .request(method, self.server.url(&format!("/api/v1{path}")))
            .bearer_auth(key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await?;
        let s = r.status();
        Ok((s, r.json().await.unwrap_or(Value::Null)))
    }

    /// A user who is not an administrator, and an API key of theirs.
    async fn user(&self, name: &str) -> TestResult<String> {
        let r = self
            .http
            .post(self.server.url("/api/v1/register"))
            .json(&json!({ "username": name, "password": "a long enough password", "mail": format!("{name}@example.org") }))
            .send()
            .await?;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await?;
        let uid = v["uid_number"].as_i64().ok_or("uid_number")?;
        let r = self
            .http
            .patch(self.server.url(&format!("/api/v1/users/{uid}")))
            .bearer_auth(&self.admin)
            .json(&json!({ "status": "active" }))
            .send()
            .await?;
        assert_eq!(r.status(), 200);
        let store = self.server.db.as_ref().ok_or("db")?.store().await?;
        let (_, key) = store
            .create_api_key(name, "test", None, &siteward_store::Actor::system())
            .await?;
        for _ in 0..100 {
            let (s, me) = self
                .call_as(&key, reqwest::Method::GET, "/me", None)
                .await?;
            if s == 200 {
                assert!(!me["groups"].to_string().contains("sysadmins"), "{me}");
                return Ok(key);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("api key never became valid".into())
    }

    /// Requests the simulator got that create or clone a container.
    fn creations_on_proxmox(&self) -> Vec<String> {
        self.sim.with(|s| {
            s.requests
                .iter()
                .filter(|r| {
                    r.starts_with("POST /nodes/") && (r.ends_with("/lxc") || r.ends_with("/clone"))
                })
                .cloned()
                .collect()
        })
    }

    async fn get(&self, path: &str) -> TestResult<(StatusCode, Value)> {
        let r = self
            .http
            .get(self.server.url(&format!("/api/v1{path}")))
            .bearer_auth(&self.admin)
            .send()
            .await?;
        let s = r.status();
        Ok((s, r.json().await.unwrap_or(Value::Null)))
    }

    /// Reads a job's SSE stream to its end: (status lines, final status).
    async fn follow(&self, job: i64) -> TestResult<(Vec<String>, String)> {
        let mut r = self
            .http
            .get(self.server.url(&format!("/api/v1/jobs/{job}/events")))
            .bearer_auth(&self.admin)
            .send()
            .await?;
        assert_eq!(r.status(), 200);
        assert!(r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")));
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Some(chunk) = tokio::time::timeout_at(deadline, r.chunk()).await?? {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: end") && text.ends_with("\n\n") {
                break;
            }
        }
        let mut lines = Vec::new();
        let mut end = String::new();
        for block in text.split("\n\n") {
            let event = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default();
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or_default();
            let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            match event {
                "status" => lines.push(v["message"].as_str().unwrap_or_default().to_owned()),
                "end" => end = v["status"].as_str().unwrap_or_default().to_owned(),
                _ => {}
            }
        }
        Ok((lines, end))
    }

    /// Follows the job of an accepted creation to its successful end: (container id, VMID).
    async fn created(&self, accepted: &Value) -> TestResult<(i64, u32)> {
        let id = accepted["container"]["id"].as_i64().ok_or("id")?;
        let (lines, end) = self
            .follow(accepted["job_id"].as_i64().ok_or("job")?)
            .await?;
        assert_eq!(end, "success", "{lines:?}");
        let vmid = self.get(&format!("/containers/{id}")).await?.1["container_id"]
            .as_i64()
            .ok_or("vmid")?;
        Ok((id, u32::try_from(vmid)?))
    }

    async fn create(&self, hostname: &str) -> TestResult<(i64, i64)> {
        let (s, v) = self.post("/containers", json!({ "site_id": 1, "hostname": hostname, "template": DEBIAN_TEMPLATE, "cores": 2, "memory": 1024 })).await?;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["container"]["status"], "creating");
        Ok((
            v["container"]["id"].as_i64().ok_or("id")?,
            v["job_id"].as_i64().ok_or("job")?,
        ))
    }
}

#[tokio::test]
async fn creation_end_to_end_with_live_progress() -> TestResult {
    let c = Cluster::start().await?;
    c.sim.with(|s| s.task_duration = Duration::from_millis(300));
    let (id, job) = c.create("web").await?;
    // Two subscribers: one now, one after the job has finished (replay).
    let early = c.follow(job);
    let (lines, end) = early.await?;
    assert_eq!(end, "success", "{lines:?}");
    let (late_lines, late_end) = c.follow(job).await?;
    assert_eq!(late_end, "success");
    assert_eq!(lines, late_lines, "a late subscriber gets every line");
    for step in [
        "reserved node",
        "creating CT",
        "starting CT",
        "container is running",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(step)),
            "{step} missing from {lines:?}"
        );
    }
    let (_, ct) = c.get(&format!("/containers/{id}")).await?;
    assert_eq!(ct["status"], "running", "{ct}");
    assert_eq!(ct["live"]["status"], "running", "{ct}");
    let ip = ct["ipv4_address"].as_str().ok_or("ip")?.to_owned();
    let mac = ct["mac_address"].as_str().ok_or("mac")?.to_owned();
    assert_eq!(
        ip, "10.0.0.4",
        "first free static address (gateway and nodes taken, DHCP range skipped)"
    );
    let first = u8::from_str_radix(&mac[..2], 16)?;
    assert_eq!(
        first & 0x03,
        0x02,
        "locally administered unicast MAC: {mac}"
    );
    // What the simulator got.
    let vmid = ct["container_id"].as_i64().ok_or("vmid")? as u32;
    let sim_ct = c
        .sim
        .with(|s| s.containers.get(&vmid).cloned())
        .ok_or("not on Proxmox")?;
    assert_eq!(sim_ct.status, "running");
    assert_eq!(sim_ct.hostname, "web");
    let net0 = &sim_ct.config["net0"];
    assert!(
        net0.contains(&format!("ip={ip}/24"))
            && net0.contains("gw=10.0.0.1")
            && net0.contains("bridge=vmbr0"),
        "{net0}"
    );
    assert!(
        net0.to_ascii_lowercase().contains(&format!("hwaddr={mac}")),
        "{net0}"
    );
    assert_eq!(sim_ct.config["searchdomain"], "lab.internal");
    assert!(sim_ct.config["tags"].contains("owner-root"));
    assert!(
        sim_ct.config["ssh-public-keys"].contains("root@admin"),
        "the owner's keys are installed"
    );
    assert_eq!(sim_ct.config["rootfs"], "local-lvm:8");
    // The snapshot (what DNS and LDAP serve) has the container with its address.
    let store = c.server.db.as_ref().ok_or("db")?.store().await?;
    store.reload(siteward_store::Dirty::ALL).await?;
    let snap = store.snapshot();
    assert!(snap
        .naming
        .containers
        .values()
        .any(|x| x.hostname == "web" && x.ipv4_address.map(|a| a.to_string()) == Some(ip.clone())));
    c.server.stop().await
}

#[tokio::test]
async fn a_failure_at_each_step_leaves_nothing_behind() -> TestResult {
    let c = Cluster::start().await?;
    for (step, message) in [
        (
            "vzcreate",
            "unable to create CT - storage 'local-lvm' does not exist",
        ),
        ("vzstart", "startup for container failed"),
    ] {
        c.sim.with(|s| {
            s.fail_tasks.clear();
            s.fail_tasks.insert(step.into(), message.into());
        });
        let host = format!("f-{step}");
        let (id, job) = c.create(&host).await?;
        let (lines, end) = c.follow(job).await?;
        assert_eq!(end, "failure", "{step}: {lines:?}");
        let last = lines.last().cloned().unwrap_or_default();
        assert!(
            last.starts_with("failed:") && last.contains(message),
            "{step}: the failure says what failed: {lines:?}"
        );
        let (_, ct) = c.get(&format!("/containers/{id}")).await?;
        assert_eq!(ct["status"], "failed");
        assert!(
            ct["ipv4_address"].is_null()
                && ct["mac_address"].is_null()
                && ct["container_id"].is_null(),
            "{step}: address not released: {ct}"
        );
        let left = c
            .sim
            .with(|s| s.containers.values().filter(|x| x.hostname == host).count());
        assert_eq!(left, 0, "{step}: the container was left on Proxmox");
    }
    // A request Proxmox rejects outright (bad template volume is accepted by PVE at create; an
    // unknown node is not): nothing is created.
    c.sim.with(|s| s.fail_tasks.clear());
    let (s, v) = c
        .post(
            "/containers",
            json!({ "site_id": 1, "node_id": 99, "hostname": "x", "template": "t" }),
        )
        .await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = c
        .post(
            "/containers",
            json!({ "site_id": 1, "hostname": "bad_host", "template": "t" }),
        )
        .await?;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("hostname"))
    );
    // Wrong credentials: the template cannot be checked, so nothing starts, saying why.
    c.sim.with(|s| s.tokens.clear());
    let (s, v) = c
        .post(
            "/containers",
            json!({ "site_id": 1, "hostname": "nocreds", "template": DEBIAN_TEMPLATE }),
        )
        .await?;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused the credentials")),
        "{v}"
    );
    c.server.stop().await
}

#[tokio::test]
async fn vmid_races_and_transient_errors_are_retried() -> TestResult {
    let c = Cluster::start().await?;
    c.sim.with(|s| {
        s.nextid_races = 2;
        s.transient_500s = 1;
    });
    let (_, job) = c.create("racer").await?;
    let (lines, end) = c.follow(job).await?;
    assert_eq!(end, "success", "{lines:?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("was taken meanwhile"))
            .count(),
        2,
        "{lines:?}"
    );
    c.server.stop().await
}

#[tokio::test]
async fn parallel_creations_get_distinct_vmids_addresses_and_macs() -> TestResult {
    let c = Cluster::start().await?;
    c.sim.with(|s| s.task_duration = Duration::from_millis(5));
    let n = 50;
    let creations = (0..n).map(|i| {
        let c = &c;
        async move { c.create(&format!("ct{i}")).await }
    });
    let created: Vec<(i64, i64)> = futures::future::join_all(creations)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    for (_, job) in &created {
        let (lines, end) = c.follow(*job).await?;
        assert_eq!(end, "success", "{lines:?}");
    }
    let (mut vmids, mut ips, mut macs) = (HashSet::new(), HashSet::new(), HashSet::new());
    for (id, _) in &created {
        let (_, ct) = c.get(&format!("/containers/{id}")).await?;
        vmids.insert(ct["container_id"].as_i64().ok_or("vmid")?);
        ips.insert(ct["ipv4_address"].as_str().ok_or("ip")?.to_owned());
        macs.insert(ct["mac_address"].as_str().ok_or("mac")?.to_owned());
    }
    assert_eq!((vmids.len(), ips.len(), macs.len()), (n, n, n));
    // Nodes were filled evenly (fewest containers first).
    let per_node: Vec<usize> = c.sim.with(|s| {
        ["pve1", "pve2"]
            .iter()
            .map(|n| s.containers.values().filter(|x| x.node == *n).count())
            .collect()
    });
    assert!(per_node.iter().all(|&k| k >= 20), "{per_node:?}");
    c.server.stop().await
}

#[tokio::test]
async fn lifecycle_delete_import_and_idempotency() -> TestResult {
    let c = Cluster::start().await?;
    // Idempotency: the same key returns the first result, no second container.
    let body = json!({ "site_id": 1, "hostname": "idem", "template": DEBIAN_TEMPLATE });
    let send = || {
        c.http
            .post(c.server.url("/api/v1/containers"))
            .bearer_auth(&c.admin)
            .header("Idempotency-Key", "create-idem-1")
            .json(&body)
            .send()
    };
    let first: Value = send().await?.json().await?;
    let r = send().await?;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let second: Value = r.json().await?;
    assert_eq!(
        first, second,
        "a repeated Idempotency-Key must return the first result"
    );
    let id = first["container"]["id"].as_i64().ok_or("id")?;
    let (_, end) = c.follow(first["job_id"].as_i64().ok_or("job")?).await?;
    assert_eq!(end, "success");
    let (_, list) = c.get("/containers").await?;
    assert_eq!(
        list["items"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["hostname"] == "idem").count()),
        Some(1)
    );
    let vmid = c.get(&format!("/containers/{id}")).await?.1["container_id"]
        .as_i64()
        .ok_or("vmid")? as u32;

    // Lifecycle: stop, start, restart, reconfigure.
    for (action, expect) in [
        ("stop", "stopped"),
        ("start", "running"),
        ("shutdown", "stopped"),
        ("start", "running"),
        ("restart", "running"),
    ] {
        let (s, v) = c
            .post(
                &format!("/containers/{id}/actions"),
                json!({ "action": action }),
            )
            .await?;
        assert_eq!(s, StatusCode::ACCEPTED, "{action}: {v}");
        let (lines, end) = c.follow(v["job_id"].as_i64().ok_or("job")?).await?;
        assert_eq!(end, "success", "{action}: {lines:?}");
        assert_eq!(
            c.sim.with(|s| s.containers.get(&vmid).map(|x| x.status)),
            Some(expect),
            "{action}"
        );
        let (_, ct) = c.get(&format!("/containers/{id}")).await?;
        assert_eq!(ct["status"], expect);
    }
    let (s, v) = c
        .post(
            &format!("/containers/{id}/actions"),
            json!({ "action": "reconfigure", "cores": 4, "memory": 2048 }),
        )
        .await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (_, end) = c.follow(v["job_id"].as_i64().ok_or("job")?).await?;
    assert_eq!(end, "success");
    assert_eq!(
        c.sim
            .with(|s| s.containers[&vmid].config.get("cores").cloned()),
        Some("4".into())
    );
    let (s, v) = c
        .post(
            &format!("/containers/{id}/actions"),
            json!({ "action": "explode" }),
        )
        .await?;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Delete: stopped, destroyed, record and address gone.
    let r = c
        .http
        .delete(c.server.url(&format!("/api/v1/containers/{id}")))
        .bearer_auth(&c.admin)
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let v: Value = r.json().await?;
    let (lines, end) = c.follow(v["job_id"].as_i64().ok_or("job")?).await?;
    assert_eq!(end, "success", "{lines:?}");
    assert!(
        c.sim.with(|s| !s.containers.contains_key(&vmid)),
        "still on Proxmox"
    );
    assert_eq!(
        c.get(&format!("/containers/{id}")).await?.0,
        StatusCode::NOT_FOUND
    );

    // Import: containers made on the node by hand are registered, known ones are not duplicated.
    c.sim.hand_made(
        500,
        "pve2",
        "legacy",
        "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=10.0.0.60/24,gw=10.0.0.1",
        "root",
    );
    let (s, imported) = c.post("/nodes/2/import", json!({})).await?;
    assert_eq!(s, StatusCode::OK, "{imported}");
    let list = imported.as_array().ok_or("list")?;
    assert_eq!(list.len(), 1, "{imported}");
    assert_eq!(list[0]["hostname"], "legacy");
    assert_eq!(list[0]["ipv4_address"], "10.0.0.60");
    assert_eq!(list[0]["mac_address"], "bc:24:11:00:00:01");
    assert_eq!(list[0]["username"], "root");
    assert_eq!(list[0]["container_id"], 500);
    let (_, again) = c.post("/nodes/2/import", json!({})).await?;
    assert_eq!(
        again.as_array().map(Vec::len),
        Some(0),
        "imported twice: {again}"
    );
    c.server.stop().await
}

#[tokio::test]
async fn a_restart_mid_job_is_reconciled_not_rerun() -> TestResult {
    // The create task finishes on Proxmox while siteward is down.
    restart_mid_create(Duration::from_millis(1500), Duration::from_millis(1600)).await
}

#[tokio::test]
async fn a_restart_while_the_create_task_still_runs_waits_for_it() -> TestResult {
    // siteward is back while Proxmox still holds the container's `create` lock.
    restart_mid_create(Duration::from_millis(4000), Duration::ZERO).await
}

async fn restart_mid_create(task: Duration, down: Duration) -> TestResult {
    let c = Cluster::start().await?;
    // Slow tasks, so the server dies while the create task runs on Proxmox.
    c.sim.with(|s| s.task_duration = task);
    let (id, job) = c.create("interrupted").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.sim.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.starts_with("POST /nodes/") && r.ends_with("/lxc"))
            .count()
    }) == 0
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let db = c.server.db.as_ref().ok_or("db")?;
    let url = db.url.clone();
    let data_dir = c.server.data_dir.clone();
    let Cluster {
        server,
        sim,
        http,
        admin,
    } = c;
    let db = {
        let mut server = server;
        let db = server.db.take();
        server.kill().await?;
        db
    };
    tokio::time::sleep(down).await;
    let server = Server::start_with(ServerOptions {
        database_url: Some(url),
        data_dir: Some(data_dir),
        ..Default::default()
    })
    .await?;
    let c = Cluster {
        server,
        sim,
        http,
        admin,
    };
    let (lines, end) = c.follow(job).await?;
    assert_eq!(end, "success", "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("reconciled after a restart")),
        "{lines:?}"
    );
    let (_, ct) = c.get(&format!("/containers/{id}")).await?;
    // The CT was created while siteward was down; reconciliation started it, and did not create it twice.
    let creates = c.sim.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.starts_with("POST /nodes/") && r.ends_with("/lxc"))
            .count()
    });
    assert_eq!(creates, 1, "the job ran twice");
    assert_eq!(ct["status"], "running", "{ct}");
    drop(db);
    c.server.stop().await
}

#[tokio::test]
async fn a_stop_mid_job_waits_for_it_or_leaves_it_for_the_next_start() -> TestResult {
    let c = Cluster::start().await?;
    let creates = |c: &Cluster| {
        c.sim.with(|s| {
            s.requests
                .iter()
                .filter(|r| r.starts_with("POST /nodes/") && r.ends_with("/lxc"))
                .count()
        })
    };
    async fn wait_for_create(c: &Cluster, n: usize, creates: impl Fn(&Cluster) -> usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while creates(c) < n {
            assert!(tokio::time::Instant::now() < deadline, "no create request");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Stops with SIGTERM (exit 0) and starts again on the same database.
    async fn restart(c: Cluster, db: &TestDb) -> TestResult<Cluster> {
        let Cluster {
            server,
            sim,
            http,
            admin,
        } = c;
        let data_dir = server.data_dir.clone();
        server.stop().await?;
        let server = Server::start_with(ServerOptions {
            database_url: Some(db.url.clone()),
            data_dir: Some(data_dir),
            ..Default::default()
        })
        .await?;
        let c = Cluster {
            server,
            sim,
            http,
            admin,
        };
        c.wait_auth().await?;
        Ok(c)
    }
    let mut c = c;
    let db = c.server.db.take().ok_or("db")?;
    let store = db.store().await?;
    let job_state = |job: i64| {
        let store = store.clone();
        async move {
            let (j, lines) = store.job(siteward_store::JobId(job), None).await?;
            TestResult::Ok((
                j.status,
                lines.into_iter().map(|l| l.message).collect::<Vec<_>>(),
            ))
        }
    };

    // 1. A job that can finish within the grace: the stop waits for it.
    c.sim.with(|s| s.task_duration = Duration::from_millis(800));
    let (first, job) = c.create("finished").await?;
    wait_for_create(&c, 1, creates).await;
    let c = restart(c, &db).await?;
    let (status, lines) = job_state(job).await?;
    assert_eq!(status, siteward_store::JobState::Success, "{lines:?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("container is running")
    );
    let (_, ct) = c.get(&format!("/containers/{first}")).await?;
    assert_eq!(ct["status"], "running", "{ct}");

    // 2. One that cannot: recorded as interrupted, not dropped, and finished by the next start
    //    without creating the container twice.
    c.sim.with(|s| s.task_duration = Duration::from_secs(12));
    let (second, job) = c.create("interrupted").await?;
    wait_for_create(&c, 2, creates).await;
    let begun = tokio::time::Instant::now();
    let c = restart(c, &db).await?;
    assert!(
        begun.elapsed() < Duration::from_secs(12),
        "the stop waited for Proxmox's task"
    );
    let (status, lines) = job_state(job).await?;
    assert_eq!(status, siteward_store::JobState::Running, "{lines:?}");
    assert!(
        lines.last().is_some_and(
            |l| l.starts_with("interrupted: the server stopped before the job finished")
        ),
        "{lines:?}"
    );
    let (lines, end) = c.follow(job).await?;
    assert_eq!(end, "success", "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("reconciled after a restart")),
        "{lines:?}"
    );
    assert_eq!(creates(&c), 2, "a job ran twice");
    let (_, ct) = c.get(&format!("/containers/{second}")).await?;
    assert_eq!(ct["status"], "running", "{ct}");
    c.server.stop().await?;
    drop(db);
    Ok(())
}

#[tokio::test]
async fn a_delete_proxmox_cannot_answer_keeps_the_record() -> TestResult {
    let c = Cluster::start().await?;
    let (s, v) = c
        .post(
            "/containers",
            json!({ "site_id": 1, "hostname": "kept", "template": DEBIAN_TEMPLATE }),
        )
        .await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (id, vmid) = c.created(&v).await?;
    let delete = || async {
        let r = c
            .http
            .delete(c.server.url(&format!("/api/v1/containers/{id}")))
            .bearer_auth(&c.admin)
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let v: Value = r.json().await?;
        c.follow(v["job_id"].as_i64().ok_or("job")?).await
    };
    // Every try of the status request fails: not "gone", so nothing is removed.
    c.sim.with(|s| s.transient_500s = 3);
    let (lines, end) = delete().await?;
    assert_eq!(end, "failure", "{lines:?}");
    assert!(
        lines.last().is_some_and(|l| l.starts_with(&format!(
            "failed: reading CT {vmid}'s status: Proxmox answered 500"
        ))),
        "{lines:?}"
    );
    assert!(c.sim.with(|s| s.containers.contains_key(&vmid)));
    let (s, ct) = c.get(&format!("/containers/{id}")).await?;
    assert_eq!(
        (s, ct["status"].as_str()),
        (StatusCode::OK, Some("running")),
        "{ct}"
    );
    // Asked again once Proxmox answers: deleted.
    c.sim.with(|s| s.transient_500s = 0);
    let (lines, end) = delete().await?;
    assert_eq!(end, "success", "{lines:?}");
    assert!(c.sim.with(|s| !s.containers.contains_key(&vmid)));
    assert_eq!(
        c.get(&format!("/containers/{id}")).await?.0,
        StatusCode::NOT_FOUND
    );
    c.server.stop().await
}

/// `bench/containers`: 100 creations against the simulator with a fixed task latency. Prints
/// creations per second and siteward's overhead per creation above the simulator's own time.
#[tokio::test]
#[ignore = "benchmark: run bench/containers"]
async fn bench_containers() -> TestResult {
    let latency = Duration::from_millis(
        std::env::var("BENCH_TASK_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100),
    );
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let c = Cluster::start().await?;
    c.sim.with(|s| s.task_duration = latency);
    let started = std::time::Instant::now();
    let creations = (0..n).map(|i| {
        let c = &c;
        async move { c.create(&format!("bench{i}")).await }
    });
    let created: Vec<(i64, i64)> = futures::future::join_all(creations)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    for (_, job) in &created {
        let (lines, end) = c.follow(*job).await?;
        assert_eq!(end, "success", "{lines:?}");
    }
    let elapsed = started.elapsed();
    // Each creation waits for two tasks (create, start); with the job pool's concurrency of 2
    // the simulator alone accounts for n * 2 * latency / 2.
    let floor = latency * 2 * n as u32 / 2;
    let overhead = elapsed.saturating_sub(floor) / n as u32;
    println!(
        "containers: {n} creations in {:.2} s = {:.1} creations/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "containers: simulator task latency {} ms, floor {:.2} s, overhead {:.1} ms per creation",
        latency.as_millis(),
        floor.as_secs_f64(),
        overhead.as_secs_f64() * 1000.0
    );
    c.server.stop().await
}

/// Puts on the simulator what an administrator made (template container 9000 on pve2) and what
/// must stay out of reach: another user's container 700 on pve1 and its backup and an ISO on
/// `local`.
fn seed_templates_and_victims(sim: &PveSim) {
    sim.with(|s| {
        let mut victim = std::collections::BTreeMap::new();
        victim.insert("hostname".to_owned(), "vics-db".to_owned());
        victim.insert("tags".to_owned(), "siteward;owner-vic".to_owned());
        victim.insert(
            "rootfs".to_owned(),
            "local-lvm:vm-700-disk-0,size=8G".to_owned(),
        );
        s.containers.insert(
            700,
            SimContainer {
                vmid: 700,
                node: "pve1".into(),
                hostname: "vics-db".into(),
                status: "stopped",
                config: victim,
            },
        );
        let mut tpl = std::collections::BTreeMap::new();
        tpl.insert("hostname".to_owned(), "golden-debian".to_owned());
        tpl.insert("template".to_owned(), "1".to_owned());
        tpl.insert(
            "rootfs".to_owned(),
            "local-lvm:base-9000-disk-0,size=4G".to_owned(),
        );
        tpl.insert(
            "net0".to_owned(),
            "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:AA:BB:CC,ip=dhcp".to_owned(),
        );
        s.containers.insert(
            9000,
            SimContainer {
                vmid: 9000,
                node: "pve2".into(),
                hostname: "golden-debian".into(),
                status: "stopped",
                config: tpl,
            },
        );
        for node in ["pve1", "pve2"] {
            for (volid, content) in [
                (
                    "local:backup/vzdump-lxc-700-2026_11_30-02_00_00.tar.zst",
                    "backup",
                ),
                ("local:iso/debian-12.8.0-amd64-netinst.iso", "iso"),
            ] {
                s.volumes.push(SimVolume {
                    node: node.into(),
                    volid: volid.into(),
                    content,
                    size: 1 << 20,
                });
            }
        }
    });
}

#[tokio::test]
async fn templates_are_only_what_an_administrator_made() -> TestResult {
    use reqwest::Method;
    let c = Cluster::start().await?;
    seed_templates_and_victims(&c.sim);
    let mallory = c.user("mallory").await?;
    let create = |template: &str, node: Option<i64>| {
        let mut body = json!({ "site_id": 1, "hostname": "loot", "template": template });
        if let Some(n) = node {
            body["node_id"] = json!(n);
        }
        c.call_as(&mallory, Method::POST, "/containers", Some(body))
    };
    // The attacks: another user's container by VMID, its backup, paths and other content.
    for (template, why) in [
        ("700", "another user's container"),
        ("701", "a VMID that does not exist"),
        (
            "local:backup/vzdump-lxc-700-2026_11_30-02_00_00.tar.zst",
            "a backup volume",
        ),
        (
            "/var/lib/vz/dump/vzdump-lxc-700-2026_11_30-02_00_00.tar.zst",
            "a path",
        ),
        (
            "local:vztmpl/../dump/vzdump-lxc-700-2026_11_30-02_00_00.tar.zst",
            "a path out of vztmpl",
        ),
        ("local:iso/debian-12.8.0-amd64-netinst.iso", "an ISO"),
        ("local-lvm:vm-700-disk-0", "another container's disk"),
        (
            "local:vztmpl/never-uploaded_1.0_amd64.tar.zst",
            "a template nobody uploaded",
        ),
        (
            "other:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "another storage than the node's image storage",
        ),
        ("local:snippets/nvidia-container-hook.sh", "a snippet"),
    ] {
        let (s, v) = create(template, None).await?;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("template")),
            "{why}: {v}"
        );
    }
    // VMID 700 and 701 get the same answer: another user's container cannot be told from a
    // free id.
    let (_, a) = create("700", None).await?;
    let (_, b) = create("701", None).await?;
    assert_eq!(
        a["error"]["message"]
            .as_str()
            .map(|m| m.replace("700", "N")),
        b["error"]["message"]
            .as_str()
            .map(|m| m.replace("701", "N")),
    );
    assert_eq!(
        c.creations_on_proxmox(),
        Vec::<String>::new(),
        "nothing may be created or cloned on Proxmox"
    );
    let (_, mine) = c
        .call_as(&mallory, Method::GET, "/containers", None)
        .await?;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(0), "{mine}");

    // The listing offers what is allowed, and only that.
    let (s, list) = c
        .call_as(&mallory, Method::GET, "/templates?site_id=1", None)
        .await?;
    assert_eq!(s, StatusCode::OK, "{list}");
    let mut offered: Vec<(String, String)> = list
        .as_array()
        .ok_or("list")?
        .iter()
        .map(|t| {
            (
                t["template"].as_str().unwrap_or_default().to_owned(),
                t["node"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    offered.sort();
    assert_eq!(
        offered,
        vec![
            ("9000".to_owned(), "pve2".to_owned()),
            (DEBIAN_TEMPLATE.to_owned(), "pve1".to_owned()),
            (DEBIAN_TEMPLATE.to_owned(), "pve2".to_owned()),
        ]
    );

    // A CT template on the node's image storage: created from it.
    let (s, v) = create(DEBIAN_TEMPLATE, None).await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (id, vmid) = c.created(&v).await?;
    let ostemplate = c.sim.with(|s| {
        s.containers
            .get(&vmid)
            .map(|x| x.config["ostemplate"].clone())
    });
    assert_eq!(ostemplate.as_deref(), Some(DEBIAN_TEMPLATE));

    // The owner may relabel the template only with one the node has.
    for bad in [
        "700",
        "local:backup/vzdump-lxc-700-2026_11_30-02_00_00.tar.zst",
    ] {
        let (s, v) = c
            .call_as(
                &mallory,
                Method::PATCH,
                &format!("/containers/{id}"),
                Some(json!({ "template": bad })),
            )
            .await?;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("template")),
            "{bad}: {v}"
        );
    }
    let (s, v) = c
        .call_as(
            &mallory,
            Method::PATCH,
            &format!("/containers/{id}"),
            Some(json!({ "template": DEBIAN_TEMPLATE })),
        )
        .await?;
    assert_eq!(s, StatusCode::OK, "{v}");

    // A template container: cloned, on its own node (pve2) although pve1 was not asked for.
    let before = c.creations_on_proxmox().len();
    let (s, v) = c
        .call_as(
            &mallory,
            Method::POST,
            "/containers",
            Some(json!({ "site_id": 1, "hostname": "fromgold", "template": "9000" })),
        )
        .await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["container"]["node_id"], 2, "{v}");
    let (_, clone_vmid) = c.created(&v).await?;
    let made = c.creations_on_proxmox();
    assert_eq!(
        made[before..],
        ["POST /nodes/pve2/lxc/9000/clone".to_owned()]
    );
    let clone = c
        .sim
        .with(|s| s.containers.get(&clone_vmid).cloned())
        .ok_or("clone missing")?;
    assert_eq!(clone.hostname, "fromgold");
    assert_eq!(clone.status, "running");
    assert!(!clone.config.contains_key("template"), "{:?}", clone.config);
    // Asked on the other node: refused, saying where the template is.
    let (s, v) = create("9000", Some(1)).await?;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("pve2")),
        "{v}"
    );

    // The job checks again right before it clones: a VMID that stopped being a template while
    // the job waited for its turn is refused, and nothing is cloned.
    c.sim
        .with(|s| s.task_duration = Duration::from_millis(1500));
    let (_, busy1) = c.create("busy1").await?;
    let (_, busy2) = c.create("busy2").await?;
    let (s, v) = c
        .call_as(
            &mallory,
            Method::POST,
            "/containers",
            Some(json!({ "site_id": 1, "hostname": "late", "template": "9000" })),
        )
        .await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    c.sim.with(|s| {
        if let Some(t) = s.containers.get_mut(&9000) {
            t.config.remove("template");
        }
    });
    let (lines, end) = c.follow(v["job_id"].as_i64().ok_or("job")?).await?;
    assert_eq!(end, "failure", "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("template refused")),
        "{lines:?}"
    );
    for job in [busy1, busy2] {
        assert_eq!(c.follow(job).await?.1, "success");
    }
    let clones = c
        .creations_on_proxmox()
        .into_iter()
        .filter(|r| r.ends_with("/clone"))
        .count();
    assert_eq!(clones, 1, "cloned after the template was gone");

    // The database refuses any other shape, whoever writes.
    let pool = c.server.db.as_ref().ok_or("db")?.pool().await?;
    let r = sqlx::query("UPDATE containers SET template = $1 WHERE id = $2")
        .bind("local:backup/vzdump-lxc-700-2026_11_30-02_00_00.tar.zst")
        .bind(id)
        .execute(&pool)
        .await;
    assert!(r.is_err(), "a backup volume was stored as a template");
    let r = sqlx::query("UPDATE containers SET template = $1 WHERE id = $2")
        .bind("9000")
        .bind(id)
        .execute(&pool)
        .await;
    assert!(r.is_ok(), "{r:?}");
    c.server.stop().await
}

#[tokio::test]
async fn environment_reaches_proxmox_as_env_or_fails_the_job() -> TestResult {
    let c = Cluster::start().await?;
    seed_templates_and_victims(&c.sim);
    let env =
        json!({ "APP_MODE": "production", "GREETING": "hello world\twith a tab", "EMPTY": "" });
    let expected = "APP_MODE=production\0EMPTY=\0GREETING=hello world\twith a tab";
    // From a template volume (`env` at create) and from a template container (`env` in the
    // configuration after the clone).
    for (hostname, template) in [("envy", DEBIAN_TEMPLATE), ("envclone", "9000")] {
        let (s, v) = c
            .post(
                "/containers",
                json!({ "site_id": 1, "hostname": hostname, "template": template, "environment": env }),
            )
            .await?;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let (_, vmid) = c.created(&v).await?;
        let got = c.sim.with(|s| {
            s.containers
                .get(&vmid)
                .and_then(|x| x.config.get("env").cloned())
        });
        assert_eq!(got.as_deref(), Some(expected), "{template}");
    }

    // What Proxmox's `env` cannot carry is refused before anything starts.
    for bad in [
        json!({ "A": "line\nbreak" }),
        json!({ "A": "nul\u{0}byte" }),
        json!({ "BAD-NAME": "x" }),
        json!({ "": "x" }),
    ] {
        let (s, v) = c
            .post(
                "/containers",
                json!({ "site_id": 1, "hostname": "envbad", "template": DEBIAN_TEMPLATE, "environment": bad }),
            )
            .await?;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("environment")),
            "{bad}: {v}"
        );
    }

    // The simulator answers `lxc.environment` as PVE does: not an API parameter.
    let r = c
        .http
        .put(format!("{}/nodes/pve1/lxc/700/config", c.sim.url()))
        .header(
            "Authorization",
            "PVEAPIToken=root@pam!siteward=4b1d6e0e-0000-4000-8000-000000000001",
        )
        .form(&[("lxc.environment", "A=1")])
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await?;
    assert_eq!(v["message"], "Parameter verification failed.\n", "{v}");
    assert_eq!(
        v["errors"]["lxc.environment"],
        "property is not defined in schema and the schema does not allow additional properties",
        "{v}"
    );

    // A node older than PVE 9.1 has no `env`: the job fails saying so, and leaves nothing.
    c.sim.with(|s| s.without_env_option = true);
    let (s, v) = c
        .post(
            "/containers",
            json!({ "site_id": 1, "hostname": "oldpve", "template": DEBIAN_TEMPLATE, "environment": { "A": "1" } }),
        )
        .await?;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["container"]["id"].as_i64().ok_or("id")?;
    let (lines, end) = c.follow(v["job_id"].as_i64().ok_or("job")?).await?;
    assert_eq!(end, "failure", "{lines:?}");
    let last = lines.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("failed:") && last.contains("env: property is not defined in schema"),
        "{lines:?}"
    );
    let (_, ct) = c.get(&format!("/containers/{id}")).await?;
    assert_eq!(ct["status"], "failed", "{ct}");
    assert_eq!(
        c.sim.with(|s| s
            .containers
            .values()
            .filter(|x| x.hostname == "oldpve")
            .count()),
        0
    );
    // Without environment variables, such a node still works.
    let (_, job) = c.create("oldpve-plain").await?;
    assert_eq!(c.follow(job).await?.1, "success");
    c.server.stop().await
}
