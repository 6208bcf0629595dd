//! The foundation: serve with an existing database and with the embedded one (as root and as an
//! ordinary user), readiness, metrics, shutdown, restart, crash recovery, configuration errors,
//! and the CLI.

use std::time::{Duration, Instant};

use crate::harness::*;

#[tokio::test]
async fn serve_with_database_url_health_ready_metrics_and_clean_stop() -> TestResult {
    let server = Server::start().await?;
    let client = reqwest::Client::new();
    let r = client.get(server.url("/healthz")).send().await?;
    assert_eq!(r.status(), 200);
    let r = client.get(server.url("/readyz")).send().await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await?["status"], "ready");
    let metrics = client
        .get(server.metrics_url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "siteward_db_pool_connections{state=\"idle\"}",
        "siteward_snapshot_age_seconds",
        "siteward_snapshot_reloads_total",
        "siteward_http_requests_total",
        "siteward_http_request_duration_seconds_bucket",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    assert!(metrics.trim_end().ends_with("# EOF"));
    // It used the given database: the migrations are there.
    let db = server.db.as_ref().ok_or("no db")?;
    let pool = db.pool().await?;
    let groups: i64 = sqlx::query_scalar("SELECT count(*) FROM groups")
        .fetch_one(&pool)
        .await?;
    assert_eq!(groups, 2);
    pool.close().await;
    // Listeners report real ports.
    assert!(server.addrs.ldap.is_some_and(|a| a.port() != 0));
    assert!(server.addrs.dns.is_some_and(|a| a.port() != 0));
    let data_dir = server.data_dir.clone();
    let started = Instant::now();
    server.stop().await?;
    assert!(started.elapsed() < Duration::from_secs(10));
    // The embedded database was not used.
    assert!(!data_dir.join("postgres").exists());
    Ok(())
}

#[tokio::test]
async fn change_made_with_sql_reaches_the_running_server() -> TestResult {
    let server = Server::start().await?;
    let pool = server.db.as_ref().ok_or("no db")?.pool().await?;
    sqlx::query("INSERT INTO users (username, cn, sn) VALUES ('gina', 'Gina', 'G')")
        .execute(&pool)
        .await?;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let m = client
            .get(server.metrics_url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        if m.contains("siteward_directory_entries{kind=\"user\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "user never reached the snapshot:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pool.close().await;
    server.stop().await
}

#[tokio::test]
async fn not_ready_while_the_database_is_unreachable() -> TestResult {
    // A port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let server = Server::start_with(ServerOptions {
        database_url: Some(format!("postgres://postgres@{free}/nothing")),
        wait_ready: false,
        ..Default::default()
    })
    .await?;
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(server.url("/healthz")).send().await?.status(),
        200
    );
    let r = client.get(server.url("/readyz")).send().await?;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["status"], "not ready");
    // Remote clients learn nothing about the database; the operator's listener says why.
    assert!(body.get("reason").is_none(), "{body}");
    let r = client.get(server.metrics_url("/readyz")).send().await?;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await?;
    assert!(
        body["reason"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    server.stop().await
}

/// Starts with the embedded PostgreSQL, adds a user with the CLI while it runs, restarts, and
/// checks the data survived and no postgres is left behind.
async fn embedded_lifecycle(
    run_as: Option<(u32, u32)>,
    data_dir: std::path::PathBuf,
) -> TestResult {
    let opts = ServerOptions {
        data_dir: Some(data_dir.clone()),
        run_as,
        ..Default::default()
    };
    let server = Server::start_with(opts.clone()).await?;
    assert!(
        postgres_running_in(&data_dir),
        "embedded postgres not running"
    );
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(server.url("/readyz")).send().await?.status(),
        200
    );
    server.stop().await?;
    assert!(
        postgres_gone(&data_dir).await,
        "postgres left running after SIGTERM"
    );

    // The CLI starts the cluster for its own duration when no server runs.
    let dir = data_dir.display().to_string();
    let env = [(
        "SITEWARD_SECRET_KEY",
        "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=",
    )];
    if run_as.is_none() {
        let (status, out, err) = run_cli(
            &[
                "--data-dir",
                &dir,
                "user",
                "add",
                "henry",
                "--mail",
                "h@example.org",
                "--password-stdin",
            ],
            &env,
            Some("a long password\n"),
        )
        .await?;
        assert!(status.success(), "user add failed: {out} {err}");
        assert!(out.contains("uid 2000"), "{out}");
        assert!(postgres_gone(&data_dir).await, "CLI left postgres running");
    }

    // Second start reuses the same cluster and data.
    let server = Server::start_with(opts).await?;
    if run_as.is_none() {
        let m = client
            .get(server.metrics_url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        assert!(
            m.contains("siteward_directory_entries{kind=\"user\"} 1"),
            "{m}"
        );
        // The CLI talks to the running server's cluster and leaves it running.
        let (status, out, err) =
            run_cli(&["--data-dir", &dir, "group", "add", "devs"], &env, None).await?;
        assert!(status.success(), "{out} {err}");
        assert!(out.contains("gid 2002"), "{out}");
        assert!(postgres_running_in(&data_dir));
        assert_eq!(
            client.get(server.url("/readyz")).send().await?.status(),
            200
        );
    }
    server.stop().await?;
    assert!(postgres_gone(&data_dir).await);
    Ok(())
}

#[tokio::test]
async fn embedded_postgres_as_current_user() -> TestResult {
    let tmp = tempfile::tempdir()?;
    embedded_lifecycle(None, tmp.path().join("data")).await
}

#[tokio::test]
async fn embedded_postgres_as_an_ordinary_user() -> TestResult {
    if !nix::unistd::geteuid().is_root() {
        // Already an ordinary user: the other test covers it.
        let tmp = tempfile::tempdir()?;
        return embedded_lifecycle(None, tmp.path().join("data")).await;
    }
    // Run siteward itself as `nobody` in a directory nobody owns.
    let nobody = nix::unistd::User::from_name("nobody")?.ok_or("no user nobody")?;
    let tmp = tempfile::tempdir()?;
    std::os::unix::fs::chown(
        tmp.path(),
        Some(nobody.uid.as_raw()),
        Some(nobody.gid.as_raw()),
    )?;
    embedded_lifecycle(
        Some((nobody.uid.as_raw(), nobody.gid.as_raw())),
        tmp.path().join("data"),
    )
    .await
}

#[tokio::test]
async fn embedded_postgres_recovers_after_a_crash() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("data");
    let opts = ServerOptions {
        data_dir: Some(data_dir.clone()),
        ..Default::default()
    };
    // siteward dies hard: its postgres survives and is adopted by the next start.
    let server = Server::start_with(opts.clone()).await?;
    server.kill().await?;
    assert!(postgres_running_in(&data_dir));
    let server = match Server::start_with(opts.clone()).await {
        Ok(s) => s,
        Err(e) => {
            let log =
                std::fs::read_to_string(data_dir.join("postgres/postgres.log")).unwrap_or_default();
            return Err(format!("{e}\npostgres.log:\n{log}").into());
        }
    };
    assert!(server.logs().contains("adopting"), "{}", server.logs());
    // Now kill postgres too, leaving a stale postmaster.pid behind.
    let pid_file = data_dir.join("postgres/postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)?
        .lines()
        .next()
        .ok_or("empty pid file")?
        .trim()
        .parse()?;
    server.kill().await?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while postgres_running_in(&data_dir) {
        assert!(Instant::now() < deadline, "postgres did not die");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pid_file.exists(), "the crash should leave a stale pid file");
    let server = Server::start_with(opts).await?;
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(server.url("/readyz")).send().await?.status(),
        200
    );
    server.stop().await?;
    assert!(postgres_gone(&data_dir).await);
    Ok(())
}

#[tokio::test]
async fn two_servers_cannot_share_a_data_directory() -> TestResult {
    let db = TestDb::new().await?;
    let tmp = tempfile::tempdir()?;
    let opts = ServerOptions {
        database_url: Some(db.url.clone()),
        data_dir: Some(tmp.path().join("data")),
        ..Default::default()
    };
    let first = Server::start_with(opts.clone()).await?;
    let second = Server::start_with(opts).await;
    let err = second.err().ok_or("second server started")?.to_string();
    assert!(err.contains("another siteward is running"), "{err}");
    first.stop().await
}

#[tokio::test]
async fn bad_configuration_exits_non_zero_naming_the_setting() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().display().to_string();
    let (status, _, err) = run_cli(
        &["serve", "--data-dir", &dir, "--http", "localhost-ish"],
        &[],
        None,
    )
    .await?;
    assert!(!status.success());
    assert!(err.contains("http.listen"), "{err}");
    let (status, _, err) = run_cli(
        &["serve", "--data-dir", &dir],
        &[("SITEWARD_LDAP__BASE_DN", "nonsense")],
        None,
    )
    .await?;
    assert!(!status.success());
    assert!(err.contains("ldap.base_dn"), "{err}");
    let file = tmp.path().join("siteward.toml");
    std::fs::write(&file, "[dns]\nlisten = \"127.0.0.1:0\"\nrecursion = true\n")?;
    let (status, _, err) = run_cli(
        &["serve", "--config", &file.display().to_string()],
        &[],
        None,
    )
    .await?;
    assert!(!status.success());
    assert!(err.contains("recursion"), "{err}");
    let (status, _, err) = run_cli(
        &["serve", "--data-dir", &dir],
        &[("SITEWARD_NO_SUCH", "1")],
        None,
    )
    .await?;
    assert!(!status.success());
    assert!(err.contains("SITEWARD_NO_SUCH"), "{err}");
    Ok(())
}

#[tokio::test]
async fn cli_manages_users_groups_and_api_keys() -> TestResult {
    let db = TestDb::new().await?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().display().to_string();
    let url = db.url.clone();
    let base = ["--data-dir", dir.as_str(), "--database-url", url.as_str()];
    let cli = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(extra.iter())
            .map(|s| (*s).to_owned())
            .collect()
    };
    let key = test_key_base64();
    let run = |args: Vec<String>, stdin: Option<&'static str>| {
        let key = key.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&refs, &[("SITEWARD_SECRET_KEY", key.as_str())], stdin).await
        }
    };
    let (s, out, err) = run(
        cli(&[
            "user",
            "add",
            "Ivy",
            "--admin",
            "--given-name",
            "Ivy",
            "--surname",
            "Stone",
            "--ssh-key",
            "ssh-ed25519 AAAAC3Nza ivy@laptop",
            "--password-stdin",
        ]),
        Some("ivy's long password\n"),
    )
    .await?;
    assert!(s.success(), "{out}{err}");
    let (s, _, err) = run(
        cli(&["user", "add", "ivy", "--password-stdin"]),
        Some("another password\n"),
    )
    .await?;
    assert!(!s.success(), "duplicate user accepted");
    assert!(err.contains("username"), "{err}");
    let (s, _, err) = run(
        cli(&["user", "passwd", "ivy", "--password-stdin"]),
        Some("short\n"),
    )
    .await?;
    assert!(!s.success());
    assert!(err.contains("password"), "{err}");
    let (s, out, err) = run(
        cli(&["user", "passwd", "ivy", "--password-stdin"]),
        Some("a new long password\n"),
    )
    .await?;
    assert!(s.success(), "{out}{err}");
    let (s, out, err) = run(cli(&["group", "add", "ops"]), None).await?;
    assert!(s.success(), "{out}{err}");
    let (s, out, err) = run(cli(&["group", "add-member", "ops", "ivy"]), None).await?;
    assert!(s.success(), "{out}{err}");
    let (s, out, err) = run(cli(&["api-key", "create", "ivy", "--name", "ci"]), None).await?;
    assert!(s.success(), "{out}{err}");
    let key = out.trim().to_owned();
    assert!(key.starts_with("sw_") && key.len() > 40, "{key}");

    let (s, out, err) = run(
        cli(&[
            "site",
            "add",
            "lab",
            "--domain",
            "lab.internal",
            "--gateway",
            "10.0.0.1",
            "--netmask",
            "255.255.255.0",
            "--dhcp-range",
            "10.0.0.100-10.0.0.200",
        ]),
        None,
    )
    .await?;
    assert!(s.success(), "{out}{err}");
    let (s, _, err) = run(
        cli(&[
            "site",
            "add",
            "bad",
            "--domain",
            "bad.internal",
            "--gateway",
            "10.0.0.1",
            "--netmask",
            "255.255.255.0",
            "--dhcp-range",
            "10.9.0.1-10.9.0.5",
        ]),
        None,
    )
    .await?;
    assert!(!s.success() && err.contains("dhcp_range"), "{err}");
    let (s, out, err) = run(
        cli(&[
            "node",
            "add",
            "pve1",
            "--site",
            "1",
            "--token-id",
            "root@pam!sw",
            "--secret-stdin",
        ]),
        Some("node-secret-value\n"),
    )
    .await?;
    assert!(s.success(), "{out}{err}");
    let (s, out, _) = run(cli(&["node", "list"]), None).await?;
    assert!(
        s.success() && out.contains("pve1") && !out.contains("node-secret-value"),
        "{out}"
    );
    let (s, out, _) = run(cli(&["site", "list"]), None).await?;
    assert!(
        s.success() && out.contains("lab.internal") && out.contains("10.0.0.0/24"),
        "{out}"
    );

    let store = db.store().await?;
    assert_eq!(
        store
            .node_secret(siteward_store::NodeId(1))
            .await?
            .as_deref(),
        Some("node-secret-value")
    );
    store.reload(siteward_store::Dirty::ALL).await?;
    let snap = store.snapshot();
    let ivy = snap.identity.user("ivy").ok_or("ivy missing")?;
    assert_eq!(ivy.cn, "Ivy Stone");
    assert_eq!(
        ivy.ssh_public_keys,
        vec!["ssh-ed25519 AAAAC3Nza ivy@laptop".to_owned()]
    );
    assert!(snap.identity.is_admin(ivy.uid_number));
    let ops = snap.identity.group("ops").ok_or("ops missing")?;
    assert!(snap.identity.members_of[&ops.gid_number].contains(&ivy.uid_number));
    let hash = ivy.password_hash.clone().ok_or("no hash")?;
    assert!(
        siteward_store::password::verify_password("a new long password".into(), Some(hash)).await?
    );
    // The key is stored hashed under its public prefix, and verifies.
    let prefix = key.split('_').nth(1).ok_or("no prefix")?;
    let stored = snap.identity.api_keys.get(prefix).ok_or("key missing")?;
    assert!(!stored.key_hash.contains(&key));
    assert!(
        siteward_store::password::verify_password(key.clone(), Some(stored.key_hash.clone()))
            .await?
    );
    Ok(())
}

#[tokio::test]
async fn embedded_postgres_as_root_under_a_private_directory() -> TestResult {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "not root: the fallback for directories the postgres user cannot reach does not apply"
        );
        return Ok(());
    }
    // Like /root: mode 0700, so the postgres user cannot traverse it.
    let tmp = tempfile::tempdir()?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let data_dir = tmp.path().join("data");
    let opts = ServerOptions {
        data_dir: Some(data_dir.clone()),
        ..Default::default()
    };
    let server = Server::start_with(opts.clone()).await?;
    let link = data_dir.join("postgres");
    let cluster = std::fs::read_link(&link)?;
    assert!(
        cluster.starts_with("/var/lib/siteward/clusters"),
        "{}",
        cluster.display()
    );
    assert!(postgres_running_in(&cluster));
    server.stop().await?;
    assert!(postgres_gone(&cluster).await);
    // A second start finds the same cluster through the link.
    let server = Server::start_with(opts).await?;
    assert!(postgres_running_in(&cluster));
    server.stop().await?;
    std::fs::remove_dir_all(&cluster)?;
    Ok(())
}
