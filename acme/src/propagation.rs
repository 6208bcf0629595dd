//! Waiting until a challenge TXT record is visible at an authoritative name server before the
//! CA is told to look: a CA validates once, so a record it cannot see yet fails the order.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::Error;

/// One name server to confirm a record at: what to call it in messages, and where it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameServer {
    /// `ns1.example.net`, or the address when that is all we know.
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// A resolver the operator named rather than an authoritative server: asked with RD set,
    /// since a resolver would otherwise answer only from its cache.
    pub recursive: bool,
}

impl fmt::Display for NameServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name == self.addr.to_string() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} ({})", self.name, self.addr)
        }
    }
}

/// How long one query may take before it counts as unanswered.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between polls: starts short (our own DNS answers at once), grows to at most this.
const MAX_POLL: Duration = Duration::from_secs(2);

/// A TXT query for `name` with an EDNS OPT record offering 1232-byte UDP answers; RD clear
/// (we ask the authoritative server itself) unless `recursive`.
fn query(id: u16, name: &str, recursive: bool) -> Result<Vec<u8>, String> {
    let mut q = id.to_be_bytes().to_vec();
    // flags (RD or nothing), QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 1
    q.extend_from_slice(&[u8::from(recursive), 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    let name = name.trim_end_matches('.');
    if name.len() > 253 {
        return Err(format!("{name} is longer than a DNS name may be"));
    }
    for label in name.split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or_else(|| format!("{name} has an empty or over-long label"))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    // root, QTYPE TXT, QCLASS IN
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    // OPT: root owner, type 41, UDP size 1232, extended RCODE/version/flags 0, no options
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    Ok(q)
}

/// What one query saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// The value is among the TXT records.
    Visible,
    /// An answer without the value: the TXT values it did hold.
    Other(Vec<String>),
    /// An error code (NXDOMAIN, REFUSED, SERVFAIL, ...).
    Rcode(ResponseCode),
    /// No usable answer (timeout, network error, garbage).
    Nothing(String),
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seen::Visible => write!(f, "the record"),
            Seen::Other(v) if v.is_empty() => write!(f, "no TXT records"),
            Seen::Other(v) => write!(f, "other TXT records ({})", v.join(", ")),
            Seen::Rcode(c) => write!(f, "{c}"),
            Seen::Nothing(why) => write!(f, "no answer ({why})"),
        }
    }
}

fn judge(m: &Message, value: &str) -> Seen {
    if m.metadata.response_code != ResponseCode::NoError {
        return Seen::Rcode(m.metadata.response_code);
    }
    let values: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect();
    if values.iter().any(|v| v == value) {
        Seen::Visible
    } else {
        Seen::Other(values)
    }
}

async fn over_udp(server: SocketAddr, q: &[u8], id: u16) -> Result<Message, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    socket.connect(server).await.map_err(|e| e.to_string())?;
    socket.send(q).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .map_err(|_| format!("timed out after {} s", QUERY_TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
        // Anything not answering our id is ignored, as a resolver would.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if m.metadata.id == id {
                return Ok(m);
            }
        }
    }
}

async fn over_tcp(server: SocketAddr, q: &[u8], id: u16) -> Result<Message, String> {
    let exchange = async {
        let mut s = TcpStream::connect(server)
            .await
            .map_err(|e| e.to_string())?;
        let len = u16::try_from(q.len()).map_err(|e| e.to_string())?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(q);
        s.write_all(&framed).await.map_err(|e| e.to_string())?;
        let len = s.read_u16().await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        let m = Message::from_vec(&buf).map_err(|e| format!("malformed answer over TCP: {e}"))?;
        if m.metadata.id != id {
            return Err("an answer over TCP for another query".to_owned());
        }
        Ok(m)
    };
    tokio::time::timeout(QUERY_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("timed out over TCP after {} s", QUERY_TIMEOUT.as_secs()))?
}

/// Asks `server` once for the TXT records of `name`: over UDP, and again over TCP when the
/// answer was truncated.
async fn look(server: SocketAddr, name: &str, value: &str, recursive: bool) -> Seen {
    let id = rand::random::<u16>();
    let q = match query(id, name, recursive) {
        Ok(q) => q,
        Err(e) => return Seen::Nothing(e),
    };
    let m = match over_udp(server, &q, id).await {
        Ok(m) if m.metadata.truncation => over_tcp(server, &q, id).await,
        other => other,
    };
    match m {
        Ok(m) => judge(&m, value),
        Err(e) => Seen::Nothing(e),
    }
}

/// "1.5 s", "120 s".
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Polls `server` until it answers `value` for `name`, or fails after `timeout` with an error
/// that names the server, the wait and what the server last answered.
pub async fn wait_visible(
    server: &NameServer,
    name: &str,
    value: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        let seen = look(server.addr, name, value, server.recursive).await;
        if seen == Seen::Visible {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Error::Challenge(format!(
                "TXT for {name} not visible at {server} after {}; it last answered {seen}",
                seconds(timeout)
            )));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_well_formed_and_bad_names_refused() {
        let q = query(7, "_acme-challenge.example.org.", false).unwrap_or_default();
        let m = Message::from_vec(&q);
        assert!(m.is_ok(), "{m:?}");
        let Ok(m) = m else { return };
        assert_eq!(m.queries.len(), 1);
        assert!(m.edns.is_some(), "no OPT record");
        assert!(!m.metadata.recursion_desired);
        let r = Message::from_vec(&query(7, "a.example.org", true).unwrap_or_default());
        assert!(r.is_ok_and(|r| r.metadata.recursion_desired));
        assert!(query(1, "a..b", false).is_err());
        assert!(query(1, &format!("{}.org", "x".repeat(64)), false).is_err());
        assert!(query(1, &"a.".repeat(130), false).is_err());
    }

    #[test]
    fn waits_are_said_in_seconds() {
        assert_eq!(seconds(Duration::from_secs(120)), "120 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(seconds(Duration::from_millis(300)), "0.3 s");
    }

    #[tokio::test]
    async fn truncated_answers_are_asked_again_over_tcp() {
        // A server that truncates every UDP answer and answers fully over TCP.
        let udp = UdpSocket::bind("127.0.0.1:0").await.ok();
        let Some(udp) = udp else { return };
        let Ok(addr) = udp.local_addr() else { return };
        let tcp = tokio::net::TcpListener::bind(addr).await.ok();
        let Some(tcp) = tcp else { return };
        let answer = |q: &[u8], tc: bool| -> Vec<u8> {
            // Echo the question, set QR (+TC), and add one TXT answer "v" pointing at it.
            let mut a = q[..2].to_vec();
            a.extend_from_slice(&[if tc { 0x82 } else { 0x80 }, 0, 0, 1, 0, u8::from(!tc)]);
            a.extend_from_slice(&[0, 0, 0, 0]);
            let question_end = q.len() - 11;
            a.extend_from_slice(&q[12..question_end]);
            if !tc {
                a.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 2, 1, b'v']);
            }
            a
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let _ = udp.send_to(&answer(&buf[..n], true), from).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let Ok(len) = s.read_u16().await else {
                    continue;
                };
                let mut q = vec![0u8; usize::from(len)];
                if s.read_exact(&mut q).await.is_err() {
                    continue;
                }
                let a = answer(&q, false);
                let mut framed = (a.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&a);
                let _ = s.write_all(&framed).await;
            }
        });
        assert_eq!(
            look(addr, "_acme-challenge.x.test", "v", false).await,
            Seen::Visible
        );
        let ns = NameServer {
            name: "ns1.x.test".into(),
            addr,
            recursive: false,
        };
        let e = wait_visible(
            &ns,
            "_acme-challenge.x.test",
            "w",
            Duration::from_millis(300),
        )
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains(&format!("ns1.x.test ({addr})")), "{e}");
        assert!(e.contains("after 0.3 s"), "{e}");
        assert!(e.contains("other TXT records (v)"), "{e}");
    }
}
