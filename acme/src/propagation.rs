//! Waiting until a challenge TXT record is visible at an authoritative name server before the
//! CA is told to look: a CA validates once, so a record it cannot see yet fails the order.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use tokio::net::UdpSocket;

use crate::Error;

/// A TXT query for `name` (RD clear: we ask the authoritative server itself).
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let bytes = label.as_bytes();
        q.push(u8::try_from(bytes.len()).unwrap_or(63).min(63));
        q.extend_from_slice(&bytes[..bytes.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    q
}

/// Whether the server at `server` answers `value` among the TXT records of `name`.
async fn visible_once(server: SocketAddr, name: &str, value: &str) -> std::io::Result<bool> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    let id = rand::random::<u16>();
    socket.send_to(&query(id, name), server).await?;
    let mut buf = vec![0u8; 4096];
    let n = match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
        Ok(r) => r?,
        Err(_) => return Ok(false),
    };
    let Ok(m) = Message::from_vec(&buf[..n]) else {
        return Ok(false);
    };
    if m.metadata.id != id {
        return Ok(false);
    }
    Ok(m.answers.iter().any(|r| match &r.data {
        RData::TXT(txt) => {
            txt.txt_data
                .iter()
                .map(|s| String::from_utf8_lossy(s))
                .collect::<String>()
                == value
        }
        _ => false,
    }))
}

/// Polls `server` until it answers `value` for `name`, or fails after `timeout` with an error
/// that names the server and the wait.
pub async fn wait_visible(
    server: SocketAddr,
    name: &str,
    value: &str,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if visible_once(server, name, value).await.unwrap_or(false) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Challenge(format!(
                "TXT for {name} not visible at {server} after {} s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
