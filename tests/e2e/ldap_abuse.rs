//! LDAP under attack, end to end: the real binary attacked over raw LDAP connections
//! (`ldap3_proto` framing, from several loopback addresses so the server sees several clients)
//! while ordinary clients are measured.
//!
//! - Pathological search filters from two clients must not stall `/auth/verify` or a plain uid
//!   search (their p99 is printed).
//! - Password guessing over many parallel connections is cut off per account and per client
//!   address without spending argon2, and an account nobody attacks still binds quickly.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapDerefAliases, LdapFilter, LdapMsg, LdapOp, LdapResultCode,
    LdapSearchRequest, LdapSearchScope, LdapSubstringFilter,
};
use ldap3_proto::LdapCodec;
use reqwest::header::COOKIE;
use siteward_store::{HashCost, NewUser, SecretBox, Store};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Framed;

use crate::harness::*;

const BASE: &str = "dc=siteward,dc=internal";

fn dn(user: &str) -> String {
    format!("uid={user},ou=people,{BASE}")
}

fn loopback(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

/// One raw LDAP connection.
struct Conn {
    framed: Framed<TcpStream, LdapCodec>,
    next_id: i32,
}

impl Conn {
    /// Connects to `server` from the local address `from` (every 127.0.0.0/8 address reaches a
    /// loopback listener), so one test can play clients at several addresses.
    async fn connect_from(server: SocketAddr, from: IpAddr) -> TestResult<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(from, 0))?;
        let stream = socket.connect(server).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            framed: Framed::new(stream, LdapCodec::new(Some(64 << 20), Some(64))),
            next_id: 0,
        })
    }

    /// Sends `op` and reads up to its final response: the number of entries and the result code.
    async fn call(&mut self, op: LdapOp) -> TestResult<(usize, LdapResultCode)> {
        self.next_id += 1;
        self.framed.send(LdapMsg::new(self.next_id, op)).await?;
        let mut entries = 0;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(120), self.framed.next())
                .await
                .map_err(|_| "no response within 120 s")?
                .ok_or("the server closed the connection")??;
            match msg.op {
                LdapOp::SearchResultEntry(_) | LdapOp::SearchResultReference(_) => entries += 1,
                LdapOp::SearchResultDone(r) => return Ok((entries, r.code)),
                LdapOp::BindResponse(r) => return Ok((entries, r.res.code)),
                other => return Err(format!("unexpected response {other:?}").into()),
            }
        }
    }

    async fn bind(&mut self, dn: &str, password: &str) -> TestResult<LdapResultCode> {
        let (_, code) = self
            .call(LdapOp::BindRequest(LdapBindRequest {
                version: 3,
                dn: dn.to_owned(),
                cred: LdapBindCred::Simple(password.to_owned()),
            }))
            .await?;
        Ok(code)
    }

    async fn search(&mut self, filter: LdapFilter) -> TestResult<(usize, LdapResultCode)> {
        self.call(LdapOp::SearchRequest(LdapSearchRequest {
            base: BASE.into(),
            scope: LdapSearchScope::Subtree,
            aliases: LdapDerefAliases::Never,
            sizelimit: 0,
            timelimit: 0,
            typesonly: false,
            filter,
            attrs: vec!["1.1".into()],
        }))
        .await
    }
}

/// The `q`-quantile (0..1) of `samples`.
fn quantile(samples: &[Duration], q: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    let at = ((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1));
    v.get(at).copied().unwrap_or_default()
}

fn substring(attr: &str, any: &[&str]) -> LdapFilter {
    LdapFilter::Substring(
        attr.into(),
        LdapSubstringFilter {
            initial: None,
            any: any.iter().map(|s| (*s).to_owned()).collect(),
            final_: None,
        },
    )
}

/// A value of the `name`d counter family with these labels on `/metrics` (0 when absent).
async fn counter(server: &Server, name: &str, labels: &str) -> TestResult<f64> {
    let text = reqwest::get(server.metrics_url("/metrics"))
        .await?
        .text()
        .await?;
    let key = format!("{name}{{{labels}}}");
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix(key.as_str()))
        .filter_map(|rest| rest.trim().parse::<f64>().ok())
        .sum())
}

/// Two clients send pathological filters (thousands of substring terms, within the message size
/// limit, and a costly one within every limit) for several seconds; meanwhile `/auth/verify`
/// and a plain uid search keep answering. Fails where searches run on the async runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn pathological_filters_do_not_stall_other_protocols() -> TestResult {
    let server = Server::start().await?;
    let db = server.db.as_ref().ok_or("no test database")?;
    let store = db.store().await?;
    let users = 300;
    for i in 0..users {
        store
            .create_user(
                NewUser {
                    username: format!("user{i:04}"),
                    given_name: Some(format!("Given{i}")),
                    ..Default::default()
                },
                &siteward_store::Actor::system(),
            )
            .await?;
    }
    let carol = store
        .create_user(
            NewUser {
                username: "carol".into(),
                password: Some("carol-password-1".into()),
                ..Default::default()
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    let (cookie, _) = store
        .create_session(
            carol.uid_number,
            chrono::Duration::hours(1),
            None,
            None,
            chrono::Utc::now(),
        )
        .await?;
    let ldap = server.addrs.ldap.ok_or("no ldap listener")?;
    let me = loopback(0, 0, 1);
    let uid = LdapFilter::Equality("uid".into(), format!("user{:04}", users - 1));
    let mut probe = Conn::connect_from(ldap, me).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while probe.search(uid.clone()).await? != (1, LdapResultCode::Success) {
        if Instant::now() > deadline {
            return Err("the users never reached the LDAP server".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Over the term limit: 12,000 substring terms (about 200 KiB, under the 256 KiB message
    // limit). Within every limit but costly: 400 substring terms on user and group attributes,
    // among them memberUid, whose values on ldapusers are every user.
    let huge = LdapFilter::Or(
        (0..12_000)
            .map(|_| substring("cn", &["a", "b", "c"]))
            .collect(),
    );
    let costly = LdapFilter::Or(
        (0..200)
            .flat_map(|_| [substring("cn", &["q"]), substring("memberUid", &["z"])])
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for n in 0..2u8 {
        let stop = stop.clone();
        let (huge, costly) = (huge.clone(), costly.clone());
        let mut conn = Conn::connect_from(ldap, loopback(0, 1, n + 1)).await?;
        attackers.push(tokio::spawn(async move {
            let mut codes = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                codes.0.push(conn.search(huge.clone()).await?.1);
                codes.1.push(conn.search(costly.clone()).await?.1);
            }
            TestResult::Ok(codes)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let http = reqwest::Client::new();
    let verify = server.url("/auth/verify");
    let (mut verify_times, mut uid_times) = (Vec::new(), Vec::new());
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let t = Instant::now();
        let res = http
            .get(&verify)
            .header(COOKIE, format!("siteward_session={cookie}"))
            .header("x-original-url", "https://app.lab.test/")
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        verify_times.push(t.elapsed());
        assert_eq!(res.status(), reqwest::StatusCode::OK);
        let t = Instant::now();
        assert_eq!(
            probe.search(uid.clone()).await?,
            (1, LdapResultCode::Success)
        );
        uid_times.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut huge_codes, mut costly_codes) = (Vec::new(), Vec::new());
    for a in attackers {
        let (h, c) = tokio::time::timeout(Duration::from_secs(120), a).await???;
        huge_codes.extend(h);
        costly_codes.extend(c);
    }
    let (verify_p99, uid_p99) = (quantile(&verify_times, 0.99), quantile(&uid_times, 0.99));
    eprintln!(
        "under pathological filters from 2 clients: /auth/verify p50 {:?} p99 {verify_p99:?} \
         (n={}), uid search p50 {:?} p99 {uid_p99:?} (n={}); attackers sent {} over-limit \
         filters ({:?}) and {} costly ones ({:?})",
        quantile(&verify_times, 0.5),
        verify_times.len(),
        quantile(&uid_times, 0.5),
        uid_times.len(),
        huge_codes.len(),
        huge_codes.first(),
        costly_codes.len(),
        costly_codes.first(),
    );
    assert!(!huge_codes.is_empty() && !costly_codes.is_empty());
    assert!(
        huge_codes
            .iter()
            .all(|c| *c == LdapResultCode::AdminLimitExceeded),
        "a filter over the term limit is refused: {huge_codes:?}"
    );
    assert!(
        costly_codes.iter().all(|c| matches!(
            c,
            LdapResultCode::Success | LdapResultCode::AdminLimitExceeded
        )),
        "{costly_codes:?}"
    );
    let bound = Duration::from_millis(500);
    assert!(verify_p99 < bound, "/auth/verify p99 {verify_p99:?}");
    assert!(uid_p99 < bound, "uid search p99 {uid_p99:?}");
    server.stop().await
}

/// A store that hashes at the production cost, so a verification costs what it does in
/// production.
async fn real_cost_store(server: &Server) -> TestResult<Store> {
    let db = server.db.as_ref().ok_or("no test database")?;
    Ok(Store::from_pool(
        db.pool().await?,
        SecretBox::from_key(&TEST_KEY),
        HashCost::default(),
    ))
}

async fn create(store: &Store, name: &str, password: &str) -> TestResult {
    store
        .create_user(
            NewUser {
                username: name.into(),
                password: Some(password.into()),
                ..Default::default()
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    Ok(())
}

/// Binds `who` with `password` until it succeeds (the change feed is asynchronous); returns the
/// time of the successful bind.
async fn await_bind(ldap: SocketAddr, who: &str, password: &str) -> TestResult<Duration> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conn = Conn::connect_from(ldap, loopback(0, 0, 1)).await?;
    loop {
        let t = Instant::now();
        if conn.bind(&dn(who), password).await? == LdapResultCode::Success {
            return Ok(t.elapsed());
        }
        if Instant::now() > deadline {
            return Err(format!("{who} never bound").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a bind of the bystander takes without load: the median of `n`.
async fn verification_time(ldap: SocketAddr, n: usize) -> TestResult<Duration> {
    let mut times = Vec::new();
    for _ in 0..n {
        times.push(await_bind(ldap, "bystander", "bystander-password-1").await?);
    }
    Ok(quantile(&times, 0.5))
}

/// `conns` connections from `from(i)`, each binding `attempts` times as `dn_of(i, j)` with a
/// wrong password; the latencies and codes of every attempt.
async fn guess(
    ldap: SocketAddr,
    conns: usize,
    attempts: usize,
    from: impl Fn(usize) -> IpAddr,
    dn_of: impl Fn(usize, usize) -> String + Clone + Send + 'static,
) -> TestResult<Vec<(Duration, LdapResultCode)>> {
    let mut tasks = Vec::new();
    for i in 0..conns {
        let mut conn = Conn::connect_from(ldap, from(i)).await?;
        let dn_of = dn_of.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for j in 0..attempts {
                let t = Instant::now();
                let code = conn.bind(&dn_of(i, j), &format!("guess-{i}-{j}")).await?;
                out.push((t.elapsed(), code));
            }
            TestResult::Ok(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

const THROTTLED: &str = "siteward_ldap_binds_throttled_total";

/// 32 connections guess one account's password in parallel: at most the per-account limit of
/// guesses is verified, every later one is refused at once (even the right password, while the
/// block lasts); then the same from one address across many account names (with
/// `ldap.bind_failures_per_address` set low).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn password_guessing_is_cut_off_per_account_and_address() -> TestResult {
    let server = Server::start().await?;
    let store = real_cost_store(&server).await?;
    create(&store, "victim", "victim-password-1").await?;
    create(&store, "bystander", "bystander-password-1").await?;
    let ldap = server.addrs.ldap.ok_or("no ldap listener")?;
    let verification = verification_time(ldap, 3).await?;

    // Wave 1: 32 connections from one address, 2 guesses each, all on the victim.
    let attacker = loopback(0, 2, 1);
    let before = counter(&server, THROTTLED, "scope=\"account\"").await?;
    let wave1 = guess(ldap, 32, 2, |_| attacker, |_, _| dn("victim")).await?;
    let refused = counter(&server, THROTTLED, "scope=\"account\"").await? - before;
    let verified = wave1.len() as f64 - refused;
    assert!(wave1
        .iter()
        .all(|(_, c)| *c == LdapResultCode::InvalidCredentials));
    assert!(
        verified <= 10.0,
        "{verified} of {} guesses were verified; the limit is 10",
        wave1.len()
    );

    // Wave 2: the account is blocked; nothing is verified any more, and refusals are fast.
    let before = counter(&server, THROTTLED, "scope=\"account\"").await?;
    let wave2 = tokio::time::timeout(
        Duration::from_secs(60),
        guess(ldap, 32, 10, |_| attacker, |_, _| dn("victim")),
    )
    .await
    .map_err(|_| "guesses on a blocked account were not refused quickly")??;
    let refused = counter(&server, THROTTLED, "scope=\"account\"").await? - before;
    let times: Vec<Duration> = wave2.iter().map(|(t, _)| *t).collect();
    let p99 = quantile(&times, 0.99);
    eprintln!(
        "per account: {verified} of {} guesses verified; then {} guesses, {refused} refused \
         without argon2, p50 {:?} p99 {p99:?} (one verification: {verification:?})",
        wave1.len(),
        wave2.len(),
        quantile(&times, 0.5),
    );
    assert!(wave2
        .iter()
        .all(|(_, c)| *c == LdapResultCode::InvalidCredentials));
    assert_eq!(
        refused,
        wave2.len() as f64,
        "every guess was refused unverified"
    );
    assert!(
        p99 < Duration::from_millis(250),
        "refusals take {p99:?} (p99)"
    );
    // While blocked, even the right password is refused, from any address...
    let mut conn = Conn::connect_from(ldap, loopback(0, 0, 1)).await?;
    assert_eq!(
        conn.bind(&dn("victim"), "victim-password-1").await?,
        LdapResultCode::InvalidCredentials
    );
    // ... and other accounts are unaffected, from the attacker's address too (10 failures are
    // under the address limit of 20).
    let mut conn = Conn::connect_from(ldap, attacker).await?;
    assert_eq!(
        conn.bind(&dn("bystander"), "bystander-password-1").await?,
        LdapResultCode::Success
    );

    server.stop().await?;

    // Per address (a limit of 20 instead of 100 so the test is short): 16 connections from one
    // address spray 8 account names each.
    let db = TestDb::new().await?;
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        env: vec![(
            "SITEWARD_LDAP__BIND_FAILURES_PER_ADDRESS".into(),
            "20".into(),
        )],
        ..Default::default()
    })
    .await?;
    server.db = Some(db);
    let store = real_cost_store(&server).await?;
    create(&store, "bystander", "bystander-password-1").await?;
    let ldap = server.addrs.ldap.ok_or("no ldap listener")?;
    await_bind(ldap, "bystander", "bystander-password-1").await?;
    let sprayer = loopback(0, 3, 1);
    let before = counter(&server, THROTTLED, "scope=\"address\"").await?;
    let spray = tokio::time::timeout(
        Duration::from_secs(120),
        guess(
            ldap,
            16,
            8,
            |_| sprayer,
            |i, j| dn(&format!("nobody{i}x{j}")),
        ),
    )
    .await
    .map_err(|_| "guesses from a blocked address were not refused quickly")??;
    let refused = counter(&server, THROTTLED, "scope=\"address\"").await? - before;
    let verified = spray.len() as f64 - refused;
    eprintln!(
        "per address: {verified} of {} guesses across {} names verified",
        spray.len(),
        spray.len()
    );
    assert!(
        verified <= 20.0,
        "{verified} guesses from one address were verified; the limit is 20"
    );
    // The blocked address cannot bind at all until the window passes; others can.
    let mut conn = Conn::connect_from(ldap, sprayer).await?;
    assert_eq!(
        conn.bind(&dn("bystander"), "bystander-password-1").await?,
        LdapResultCode::InvalidCredentials
    );
    let mut conn = Conn::connect_from(ldap, loopback(0, 0, 1)).await?;
    assert_eq!(
        conn.bind(&dn("bystander"), "bystander-password-1").await?,
        LdapResultCode::Success
    );
    server.stop().await
}

/// 64 connections, each from an address of its own, spray wrong passwords on unknown names
/// without pause (every one of them costs an argon2 verification); an account nobody attacks
/// still binds within a few verifications' time, because guesses of this kind may only use part
/// of the argon2 capacity. Fails where every verification queues on one semaphore.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn an_unattacked_account_binds_quickly_during_a_guessing_flood() -> TestResult {
    let server = Server::start().await?;
    let store = real_cost_store(&server).await?;
    create(&store, "bystander", "bystander-password-1").await?;
    let ldap = server.addrs.ldap.ok_or("no ldap listener")?;
    let verification = verification_time(ldap, 5).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for i in 0..64u8 {
        let stop = stop.clone();
        let mut conn = Conn::connect_from(ldap, loopback(1, 0, i + 1)).await?;
        flood.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                conn.bind(&dn(&format!("nobody{i}x{n}")), "guess").await?;
                n += 1;
            }
            TestResult::Ok(n)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = Conn::connect_from(ldap, loopback(0, 0, 1)).await?;
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let code = tokio::time::timeout(
            Duration::from_secs(60),
            conn.bind(&dn("bystander"), "bystander-password-1"),
        )
        .await
        .map_err(|_| "the bystander did not bind within 60 s")??;
        times.push(t.elapsed());
        assert_eq!(code, LdapResultCode::Success);
    }
    stop.store(true, Ordering::Relaxed);
    let mut guesses = 0;
    for t in flood {
        guesses += tokio::time::timeout(Duration::from_secs(120), t).await???;
    }
    let p99 = quantile(&times, 0.99);
    eprintln!(
        "during a flood of {guesses} guesses from 64 addresses: bystander bind p50 {:?} p99 \
         {p99:?} (one verification when idle: {verification:?})",
        quantile(&times, 0.5)
    );
    assert!(guesses > 64, "the flood ran");
    assert!(
        p99 < verification * 8,
        "the bystander waited {p99:?} (p99) for binds that take {verification:?}"
    );
    server.stop().await
}
