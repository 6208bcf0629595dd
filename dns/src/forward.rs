//! Forwarding of names outside our zones to the resolvers of the client's site, with answers
//! cached for their smallest TTL. Only clients on the recursion allow-list get here (see
//! [`crate::server`]); everyone else gets REFUSED, so this is no open resolver.
//!
//! The upstream's response is relayed as received (its flags, rcode and sections), with the
//! client's message id and question case. Upstreams are asked over UDP, in order, two seconds
//! each; a truncated upstream answer is relayed with TC so the client retries over TCP, where we
//! ask the upstream over TCP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::engine::{Forward, Query};
use crate::Error;

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const CACHE_MAX: usize = 65_536;
/// Longest time an answer is cached, whatever its TTL.
const TTL_CAP: u32 = 3600;

type Key = (Vec<u8>, u16, bool);

/// The forwarding cache.
#[derive(Debug, Default)]
pub struct Cache {
    entries: Mutex<HashMap<Key, (Instant, Vec<u8>)>>,
}

impl Cache {
    /// A cached response to `f`, rewritten for the asking client's id and question case.
    pub fn get(&self, f: &Forward, q: &Query, now: Instant) -> Option<Vec<u8>> {
        let key = (f.qname.clone(), f.qtype, f.dnssec_ok);
        let mut hit = {
            let entries = self.entries.lock().ok()?;
            let (expires, resp) = entries.get(&key)?;
            if *expires <= now {
                return None;
            }
            resp.clone()
        };
        personalize(&mut hit, q);
        Some(hit)
    }

    /// Stores `resp` (a NOERROR or NXDOMAIN, untruncated) for its smallest TTL.
    pub fn put(&self, f: &Forward, resp: &[u8], now: Instant) {
        let Some(ttl) = cacheable_ttl(resp) else {
            return;
        };
        if ttl == 0 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CACHE_MAX {
            entries.retain(|_, (exp, _)| *exp > now);
            if entries.len() >= CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(
            (f.qname.clone(), f.qtype, f.dnssec_ok),
            (
                now + Duration::from_secs(u64::from(ttl.min(TTL_CAP))),
                resp.to_vec(),
            ),
        );
    }
}

/// Sets the client's id and question-name case in a relayed response.
fn personalize(resp: &mut [u8], q: &Query) {
    if let Some(id) = resp.get_mut(..2) {
        id.copy_from_slice(&q.id.to_be_bytes());
    }
    let n = q.qname_exact.len();
    if let Some(name) = resp.get_mut(12..12 + n) {
        if name.eq_ignore_ascii_case(&q.qname_exact) {
            name.copy_from_slice(&q.qname_exact);
        }
    }
}

/// The smallest TTL of the answer and authority sections, for responses worth caching.
fn cacheable_ttl(resp: &[u8]) -> Option<u32> {
    let flags = u16::from_be_bytes([*resp.get(2)?, *resp.get(3)?]);
    let code = flags & 0xF;
    if flags & 0x0200 != 0 || !(code == 0 || code == 3) {
        return None;
    }
    let count =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*resp.get(i)?, *resp.get(i + 1)?])) };
    let (qd, an, ns) = (count(4)?, count(6)?, count(8)?);
    let mut scratch = (Vec::new(), Vec::new());
    let mut pos = 12;
    for _ in 0..qd {
        pos = crate::name::read(resp, pos, &mut scratch.0, &mut scratch.1)? + 4;
    }
    let mut min: Option<u32> = None;
    for _ in 0..(u32::from(an) + u32::from(ns)) {
        let after = crate::name::read(resp, pos, &mut scratch.0, &mut scratch.1)?;
        let ttl = u32::from_be_bytes([
            *resp.get(after + 4)?,
            *resp.get(after + 5)?,
            *resp.get(after + 6)?,
            *resp.get(after + 7)?,
        ]);
        let rdlen = u16::from_be_bytes([*resp.get(after + 8)?, *resp.get(after + 9)?]) as usize;
        pos = after + 10 + rdlen;
        min = Some(min.map_or(ttl, |m| m.min(ttl)));
    }
    min
}

/// Asks `upstreams` in order; returns the first response, with the client's id restored.
pub async fn ask(
    upstreams: &[SocketAddr],
    query: &[u8],
    client_id: u16,
    tcp: bool,
) -> Result<Vec<u8>, Error> {
    let mut last = Error::Worker("no forwarders configured for this client's site".into());
    for &target in upstreams {
        let attempt = if tcp {
            tokio::time::timeout(UPSTREAM_TIMEOUT, ask_tcp(target, query)).await
        } else {
            tokio::time::timeout(UPSTREAM_TIMEOUT, ask_udp(target, query)).await
        };
        match attempt {
            Ok(Ok(mut resp)) => {
                if let Some(id) = resp.get_mut(..2) {
                    id.copy_from_slice(&client_id.to_be_bytes());
                }
                return Ok(resp);
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = Error::Worker(format!("forwarder {target} timed out")),
        }
    }
    Err(last)
}

fn with_new_id(query: &[u8]) -> (u16, Vec<u8>) {
    let id: u16 = rand::random();
    let mut q = query.to_vec();
    if let Some(dst) = q.get_mut(..2) {
        dst.copy_from_slice(&id.to_be_bytes());
    }
    (id, q)
}

async fn ask_udp(target: SocketAddr, query: &[u8]) -> Result<Vec<u8>, Error> {
    let bind: SocketAddr = if target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(target).await?;
    let (id, q) = with_new_id(query);
    sock.send(&q).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        let resp = buf.get(..n).unwrap_or_default();
        if resp.len() >= 12 && resp.get(..2) == Some(&id.to_be_bytes()[..]) {
            return Ok(resp.to_vec());
        }
    }
}

async fn ask_tcp(target: SocketAddr, query: &[u8]) -> Result<Vec<u8>, Error> {
    let mut s = tokio::net::TcpStream::connect(target).await?;
    let (id, q) = with_new_id(query);
    let len = u16::try_from(q.len()).map_err(|_| Error::Worker("query too long".into()))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).await?;
    loop {
        let n = s.read_u16().await? as usize;
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await?;
        if buf.len() >= 12 && buf.get(..2) == Some(&id.to_be_bytes()[..]) {
            return Ok(buf);
        }
    }
}
