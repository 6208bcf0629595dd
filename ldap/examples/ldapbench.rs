//! A small LDAP load generator used by `bench/ldap`: N connections, each sending one request
//! at a time for a fixed duration, against any LDAP server. Prints `ops/s`.
//!
//! ```text
//! ldapbench <host:port> <search-uid|search-group|bind> <connections> <seconds> <users> <base> <password>
//! ```
//! Users are `user0 .. user<users-1>` under `ou=people,<base>`; every search must return one
//! entry or more and every bind must succeed, or the run fails (so a misconfigured server
//! cannot look fast).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use ldap3_proto::proto::*;
use ldap3_proto::LdapCodec;
use tokio_util::codec::Framed;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    SearchUid,
    SearchGroup,
    Bind,
}

struct Job {
    addr: String,
    mode: Mode,
    users: u64,
    base: String,
    password: String,
}

fn request(job: &Job, id: i32, n: u64) -> LdapMsg {
    let user = format!("user{n}");
    let op = match job.mode {
        Mode::SearchUid => LdapOp::SearchRequest(LdapSearchRequest {
            base: job.base.clone(),
            scope: LdapSearchScope::Subtree,
            aliases: LdapDerefAliases::Never,
            sizelimit: 0,
            timelimit: 0,
            typesonly: false,
            filter: LdapFilter::And(vec![
                LdapFilter::Equality("objectClass".into(), "posixAccount".into()),
                LdapFilter::Equality("uid".into(), user),
            ]),
            attrs: [
                "uid",
                "userPassword",
                "uidNumber",
                "gidNumber",
                "cn",
                "homeDirectory",
                "loginShell",
                "gecos",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        }),
        Mode::SearchGroup => LdapOp::SearchRequest(LdapSearchRequest {
            base: job.base.clone(),
            scope: LdapSearchScope::Subtree,
            aliases: LdapDerefAliases::Never,
            sizelimit: 0,
            timelimit: 0,
            typesonly: false,
            filter: LdapFilter::And(vec![
                LdapFilter::Equality("objectClass".into(), "posixGroup".into()),
                LdapFilter::Equality("memberUid".into(), user),
            ]),
            attrs: vec!["cn".into(), "gidNumber".into()],
        }),
        Mode::Bind => LdapOp::BindRequest(LdapBindRequest {
            version: 3,
            dn: format!("uid={user},ou=people,{}", job.base),
            cred: LdapBindCred::Simple(job.password.clone()),
        }),
    };
    LdapMsg::new(id, op)
}

async fn worker(
    job: Arc<Job>,
    seed: u64,
    until: Instant,
    ops: Arc<AtomicU64>,
) -> Result<(), BoxError> {
    let stream = tokio::net::TcpStream::connect(&job.addr).await?;
    stream.set_nodelay(true)?;
    let mut framed = Framed::new(stream, LdapCodec::new(Some(16 * 1024 * 1024), None));
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut id = 0i32;
    while Instant::now() < until {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        id = id.wrapping_add(1).max(1);
        framed.send(request(&job, id, rng % job.users)).await?;
        let mut entries = 0;
        loop {
            let msg = framed.next().await.ok_or("connection closed")??;
            match msg.op {
                LdapOp::SearchResultEntry(_) => entries += 1,
                LdapOp::SearchResultDone(r) => {
                    if r.code != LdapResultCode::Success || entries == 0 {
                        return Err(format!("search failed: {:?} {}", r.code, r.message).into());
                    }
                    break;
                }
                LdapOp::BindResponse(r) => {
                    if r.res.code != LdapResultCode::Success {
                        return Err(format!("bind failed: {:?}", r.res.code).into());
                    }
                    break;
                }
                other => return Err(format!("unexpected {other:?}").into()),
            }
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, mode, conns, secs, users, base, password] = args.as_slice() else {
        return Err("usage: ldapbench <host:port> <search-uid|search-group|bind> <connections> <seconds> <users> <base> <password>".into());
    };
    let mode = match mode.as_str() {
        "search-uid" => Mode::SearchUid,
        "search-group" => Mode::SearchGroup,
        "bind" => Mode::Bind,
        other => return Err(format!("unknown mode {other}").into()),
    };
    let job = Arc::new(Job {
        addr: addr.clone(),
        mode,
        users: users.parse()?,
        base: base.clone(),
        password: password.clone(),
    });
    let conns: u64 = conns.parse()?;
    let seconds: u64 = secs.parse()?;
    let ops = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..conns)
        .map(|i| tokio::spawn(worker(job.clone(), i + 1, until, ops.clone())))
        .collect();
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("{:.1}", ops.load(Ordering::Relaxed) as f64 / elapsed);
    Ok(())
}
