//! Forwarding of names outside our zones to the resolvers of the client's site, with answers
//! cached for their smallest TTL. Only clients on the recursion allow-list get here (see
//! [`crate::server`]); everyone else gets REFUSED, so this is no open resolver.
//!
//! The upstream's response is relayed as received (its flags, rcode and sections), with the
//! client's message id and question case. Upstreams are asked over UDP, in order, two seconds
//! each; a truncated upstream answer is relayed with TC so the client retries over TCP, where we
//! ask the upstream over TCP.
//!
//! Bounds and spoofing resistance:
//! - [`Limits`]: at most `max_inflight` forwarded queries at once, and `max_inflight_per_client`
//!   per client address (IPv6: per /64). Over either bound a query is not queued: UDP queries are
//!   dropped (the client retries; no amplification), TCP queries get SERVFAIL.
//! - every upstream query has a random id and its own socket, bound to an ephemeral port the
//!   kernel picks at random (Linux); a response counts only when it comes from the upstream's
//!   address and port, carries the id, has QR set and repeats the question (name, type, class).
//!   Anything else is ignored and counted (`siteward_dns_forward_mismatched_total`).
//! - the [`Cache`] is keyed by the forwarder set as well as the question, so two sites with
//!   different forwarders never share answers; it is bounded in entries and octets.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::engine::{Forward, Query};
use crate::Error;

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const CACHE_MAX: usize = 65_536;
/// Most octets of responses the cache holds.
const CACHE_MAX_BYTES: usize = 64 << 20;
/// Longest time an answer is cached, whatever its TTL.
const TTL_CAP: u32 = 3600;

/// Upstreams, question name (lower-case wire), type, DO bit.
type Key = (Vec<SocketAddr>, Vec<u8>, u16, bool);

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Key, (Instant, Vec<u8>)>,
    bytes: usize,
}

/// The forwarding cache, per forwarder set.
#[derive(Debug, Default)]
pub struct Cache {
    entries: Mutex<Entries>,
}

impl Cache {
    /// A cached response to `f` from `upstreams`, rewritten for the asking client's id and
    /// question case.
    pub fn get(
        &self,
        upstreams: &[SocketAddr],
        f: &Forward,
        q: &Query,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let key = (upstreams.to_vec(), f.qname.clone(), f.qtype, f.dnssec_ok);
        let mut hit = {
            let entries = self.entries.lock().ok()?;
            let (expires, resp) = entries.map.get(&key)?;
            if *expires <= now {
                return None;
            }
            resp.clone()
        };
        personalize(&mut hit, q);
        Some(hit)
    }

    /// Stores `resp` (a NOERROR or NXDOMAIN, untruncated) from `upstreams` for its smallest TTL.
    pub fn put(&self, upstreams: &[SocketAddr], f: &Forward, resp: &[u8], now: Instant) {
        let Some(ttl) = cacheable_ttl(resp) else {
            return;
        };
        if ttl == 0 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.map.len() >= CACHE_MAX || entries.bytes + resp.len() > CACHE_MAX_BYTES {
            entries.map.retain(|_, (exp, _)| *exp > now);
            if entries.map.len() >= CACHE_MAX || entries.bytes + resp.len() > CACHE_MAX_BYTES {
                entries.map.clear();
            }
            entries.bytes = entries.map.values().map(|(_, r)| r.len()).sum();
        }
        let key = (upstreams.to_vec(), f.qname.clone(), f.qtype, f.dnssec_ok);
        let expires = now + Duration::from_secs(u64::from(ttl.min(TTL_CAP)));
        entries.bytes += resp.len();
        if let Some((_, old)) = entries.map.insert(key, (expires, resp.to_vec())) {
            entries.bytes = entries.bytes.saturating_sub(old.len());
        }
    }
}

/// How many forwarded queries may be outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// In total.
    pub max_inflight: usize,
    /// Per client address (IPv6: per /64).
    pub max_inflight_per_client: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_inflight: 256,
            max_inflight_per_client: 32,
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    clients: HashMap<IpAddr, usize>,
}

/// The in-flight counts behind [`Bounds`].
#[derive(Debug)]
pub struct Limits {
    bounds: Bounds,
    counts: Mutex<Counts>,
    gauge: Gauge,
}

/// One forwarded query's place within [`Limits`]; released on drop.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl Limits {
    /// Limits with `bounds`; `gauge` follows the number of forwarded queries in flight.
    pub fn new(bounds: Bounds, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            bounds,
            counts: Mutex::new(Counts::default()),
            gauge,
        })
    }

    /// A permit for one more query from `client`, or `None` when a bound is reached.
    pub fn try_acquire(self: &Arc<Self>, client: IpAddr) -> Option<Permit> {
        let client = client_key(client);
        let mut counts = self.counts.lock().ok()?;
        if counts.total >= self.bounds.max_inflight {
            return None;
        }
        let mine = counts.clients.entry(client).or_insert(0);
        if *mine >= self.bounds.max_inflight_per_client {
            return None;
        }
        *mine += 1;
        counts.total += 1;
        self.gauge.set(counts.total as i64);
        Some(Permit {
            limits: self.clone(),
            client,
        })
    }

    /// Forwarded queries in flight.
    pub fn in_flight(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.total)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Ok(mut counts) = self.limits.counts.lock() else {
            return;
        };
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.clients.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.clients.remove(&self.client);
            }
        }
        self.limits.gauge.set(counts.total as i64);
    }
}

/// The address a client is counted under: IPv4 as is (also when mapped into IPv6), IPv6 by
/// its /64 (one host commonly has a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
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

/// Whether `resp` answers the query we sent with `id` for the question of `q`: QR set, opcode
/// QUERY, one question with the same name (any case), type and class.
fn answers(resp: &[u8], id: u16, q: &Query) -> bool {
    let header_ok = resp.len() >= 12
        && resp.get(..2) == Some(&id.to_be_bytes()[..])
        && resp
            .get(2)
            .is_some_and(|b| b & 0x80 != 0 && (b >> 3) & 0xF == 0)
        && resp.get(4..6) == Some(&[0u8, 1][..]);
    if !header_ok {
        return false;
    }
    let n = q.qname_exact.len();
    let name_ok = resp
        .get(12..12 + n)
        .is_some_and(|name| name.eq_ignore_ascii_case(&q.qname_exact));
    let mut tail = q.qtype.to_be_bytes().to_vec();
    tail.extend_from_slice(&q.qclass.to_be_bytes());
    name_ok && resp.get(12 + n..12 + n + 4) == Some(&tail[..])
}

/// Asks `upstreams` in order; returns the first response, with the client's id restored.
/// `mismatched` counts responses that did not answer our query.
pub async fn ask(
    upstreams: &[SocketAddr],
    query: &[u8],
    q: &Query,
    tcp: bool,
    mismatched: &Counter,
) -> Result<Vec<u8>, Error> {
    let mut last = Error::Worker("no forwarders configured for this client's site".into());
    for &target in upstreams {
        let attempt = if tcp {
            tokio::time::timeout(UPSTREAM_TIMEOUT, ask_tcp(target, query, q, mismatched)).await
        } else {
            tokio::time::timeout(UPSTREAM_TIMEOUT, ask_udp(target, query, q, mismatched)).await
        };
        match attempt {
            Ok(Ok(mut resp)) => {
                if let Some(id) = resp.get_mut(..2) {
                    id.copy_from_slice(&q.id.to_be_bytes());
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

/// One query on a socket of its own: port 0 lets the kernel pick a random ephemeral port, so an
/// off-path attacker has to guess the port as well as the id. The socket is not connected: the
/// source of every datagram is checked here.
async fn ask_udp(
    target: SocketAddr,
    query: &[u8],
    q: &Query,
    mismatched: &Counter,
) -> Result<Vec<u8>, Error> {
    let bind: SocketAddr = if target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    let (id, msg) = with_new_id(query);
    sock.send_to(&msg, target).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await?;
        let resp = buf.get(..n).unwrap_or_default();
        if from == target && answers(resp, id, q) {
            return Ok(resp.to_vec());
        }
        mismatched.inc();
        tracing::debug!(%from, %target, "ignored a datagram that does not answer the forwarded query");
    }
}

async fn ask_tcp(
    target: SocketAddr,
    query: &[u8],
    q: &Query,
    mismatched: &Counter,
) -> Result<Vec<u8>, Error> {
    let mut s = tokio::net::TcpStream::connect(target).await?;
    let (id, msg) = with_new_id(query);
    let len = u16::try_from(msg.len()).map_err(|_| Error::Worker("query too long".into()))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&msg);
    s.write_all(&framed).await?;
    loop {
        let n = s.read_u16().await? as usize;
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await?;
        if answers(&buf, id, q) {
            return Ok(buf);
        }
        mismatched.inc();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    fn q() -> Query {
        Query {
            id: 7,
            flags: 0x0100,
            qname: b"\x03www\x07example\x04test\x00".to_vec(),
            qname_exact: b"\x03WWW\x07example\x04test\x00".to_vec(),
            qtype: 1,
            qclass: 1,
            edns: None,
            ixfr_serial: None,
        }
    }

    fn response(id: u16, name: &[u8], qtype: u16) -> Vec<u8> {
        let mut r = id.to_be_bytes().to_vec();
        r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]);
        r.extend_from_slice(name);
        r.extend_from_slice(&qtype.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r
    }

    #[test]
    fn only_an_answer_to_our_question_and_id_counts() {
        let q = q();
        assert!(answers(
            &response(99, b"\x03www\x07EXAMPLE\x04test\x00", 1),
            99,
            &q
        ));
        assert!(!answers(
            &response(98, b"\x03www\x07example\x04test\x00", 1),
            99,
            &q
        ));
        assert!(!answers(
            &response(99, b"\x03www\x07example\x04evil\x00", 1),
            99,
            &q
        ));
        assert!(!answers(
            &response(99, b"\x03www\x07example\x04test\x00", 28),
            99,
            &q
        ));
        let mut query_not_response = response(99, b"\x03www\x07example\x04test\x00", 1);
        query_not_response[2] = 0x01;
        assert!(!answers(&query_not_response, 99, &q));
        assert!(!answers(&[0u8; 11], 0, &q));
    }

    #[test]
    fn limits_bound_each_client_and_the_total() {
        let limits = Limits::new(
            Bounds {
                max_inflight: 3,
                max_inflight_per_client: 2,
            },
            Gauge::default(),
        );
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let p1 = limits.try_acquire(a).expect("first");
        let _p2 = limits.try_acquire(a).expect("second");
        assert!(limits.try_acquire(a).is_none(), "per-client bound");
        let _p3 = limits.try_acquire(b).expect("another client");
        assert!(limits.try_acquire(c).is_none(), "total bound");
        drop(p1);
        let p4 = limits.try_acquire(c);
        assert!(p4.is_some(), "released on drop");
        assert_eq!(limits.in_flight(), 3);
        drop(p4);
        assert_eq!(limits.in_flight(), 2);
        // One IPv6 host is one client however many addresses of its /64 it uses.
        let v6 = Limits::new(
            Bounds {
                max_inflight: 10,
                max_inflight_per_client: 1,
            },
            Gauge::default(),
        );
        let _x = v6.try_acquire("2001:db8::1".parse().unwrap()).expect("one");
        assert!(v6.try_acquire("2001:db8::2".parse().unwrap()).is_none());
        assert!(v6.try_acquire("2001:db8:0:1::1".parse().unwrap()).is_some());
    }

    #[test]
    fn the_cache_never_answers_for_another_forwarder_set() {
        let cache = Cache::default();
        let q = q();
        let f = Forward {
            qname: q.qname.clone(),
            qtype: 1,
            dnssec_ok: false,
            id: 7,
        };
        let one: Vec<SocketAddr> = vec!["192.0.2.1:53".parse().unwrap()];
        let two: Vec<SocketAddr> = vec!["192.0.2.2:53".parse().unwrap()];
        let mut resp = response(7, b"\x03www\x07example\x04test\x00", 1);
        resp[7] = 1; // one answer
        resp.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        let now = Instant::now();
        cache.put(&one, &f, &resp, now);
        assert!(cache.get(&one, &f, &q, now).is_some());
        assert!(cache.get(&two, &f, &q, now).is_none());
    }
}
