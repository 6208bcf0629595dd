//! The socket side: the accept loop (connection cap, shutdown), one task per connection (a
//! `tracing` span with a session id), the framing codec with its size and nesting limits, the
//! idle and request timeouts, StartTLS and LDAPS. Protocol decisions are the session's.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ldap3_proto::proto::{LdapMsg, LdapResultCode};
use ldap3_proto::LdapCodec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder, Framed};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use siteward_store::slots::{Admission, Slot};

use crate::session::{notice_of_disconnection, Action, Session};
use crate::{Error, LdapServer};

/// Frames LDAP messages: reads the outer BER length first, so an oversized message is refused
/// from its header without buffering it, then lets `ldap3_proto` parse the complete message
/// with a nesting limit.
pub struct Codec {
    inner: LdapCodec,
    max: usize,
}

impl Codec {
    /// At most `max_bytes` per message and `max_depth` BER nesting.
    pub fn new(max_bytes: usize, max_depth: usize) -> Self {
        Self {
            inner: LdapCodec::new(Some(max_bytes), Some(max_depth)),
            max: max_bytes,
        }
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

impl Decoder for Codec {
    type Item = LdapMsg;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<LdapMsg>, io::Error> {
        let Some(&tag) = buf.first() else {
            return Ok(None);
        };
        if tag != 0x30 {
            return Err(invalid("a message is not a BER SEQUENCE"));
        }
        let Some(&first) = buf.get(1) else {
            return Ok(None);
        };
        let (header, len) = if first < 0x80 {
            (2usize, usize::from(first))
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err(invalid("unsupported BER length"));
            }
            let Some(bytes) = buf.get(2..2 + n) else {
                return Ok(None);
            };
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (2 + n, len)
        };
        let total = header.saturating_add(len);
        if total > self.max {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("message of {total} bytes exceeds the limit of {}", self.max),
            ));
        }
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        match self.inner.decode(&mut frame) {
            Ok(Some(msg)) if !frame.has_remaining() => Ok(Some(msg)),
            Ok(_) => Err(invalid("a message's length does not match its content")),
            Err(e) => Err(invalid(&format!("malformed message: {e}"))),
        }
    }
}

impl Encoder<LdapMsg> for Codec {
    type Error = io::Error;

    fn encode(&mut self, msg: LdapMsg, buf: &mut BytesMut) -> io::Result<()> {
        self.inner.encode(msg, buf)
    }
}

/// How a connection is secured from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Plain,
    Ldaps,
}

/// Serves plain LDAP (with StartTLS when TLS is configured) on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    server: Arc<LdapServer>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    accept_loop(listener, server, shutdown, Transport::Plain).await
}

/// Serves LDAP over TLS on `listener` until `shutdown`.
pub async fn serve_ldaps(
    listener: TcpListener,
    server: Arc<LdapServer>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    if !server.tls_available() {
        return Err(Error::Tls("LDAPS needs a certificate".into()));
    }
    accept_loop(listener, server, shutdown, Transport::Ldaps).await
}

async fn accept_loop(
    listener: TcpListener,
    server: Arc<LdapServer>,
    shutdown: CancellationToken,
    transport: Transport,
) -> Result<(), Error> {
    let tracker = TaskTracker::new();
    // Builds the dummy hash that unknown users are verified against now, so that the first
    // unknown-user bind does not take longer than a wrong password (no enumeration by timing).
    tracker.spawn(async {
        let _ = siteward_store::password::verify_password(String::new(), None).await;
    });
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let slot = match server.connections.admit() {
            Admission::Admitted(s) => s,
            Admission::MadeRoom(s) => {
                server.metrics.evicted.inc();
                s
            }
            Admission::Full => {
                server.metrics.refused.inc();
                tracing::warn!(%peer, "connection refused: every connection is busy");
                tracker.spawn(refuse(stream));
                continue;
            }
        };
        let session_id = server.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let span = tracing::info_span!("ldap", session = session_id, %peer);
        let server = server.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(
            async move {
                server.metrics.connections.inc();
                connection(stream, peer, server.clone(), shutdown, &slot, transport).await;
                server.metrics.connections.dec();
                drop(slot);
            }
            .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Tells a client over the cap why it is being dropped.
async fn refuse(mut stream: TcpStream) {
    let mut buf = BytesMut::new();
    let notice = notice_of_disconnection(LdapResultCode::Busy, "too many connections");
    if Codec::new(1024, 8).encode(notice, &mut buf).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&buf)).await;
    }
}

/// Closes our side, then reads and discards what the client is still sending for a moment, so
/// that closing with unread input does not reset the connection and destroy the notice of
/// disconnection before the client reads it.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    let mut sink = [0u8; 16 * 1024];
    let mut budget: usize = 16 * 1024 * 1024;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while budget > 0 {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => budget = budget.saturating_sub(n),
            _ => break,
        }
    }
}

enum Outcome<S> {
    Closed,
    StartTls(S),
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    server: Arc<LdapServer>,
    shutdown: CancellationToken,
    slot: &Slot,
    transport: Transport,
) {
    let _ = stream.set_nodelay(true);
    tracing::debug!("connected");
    let mut session = Session::new(server.clone(), peer.ip(), transport == Transport::Ldaps);
    if transport == Transport::Ldaps {
        if let Some(tls) = handshake(&server, stream, slot).await {
            run(tls, &mut session, &server, &shutdown, slot, false).await;
        }
    } else if let Outcome::StartTls(stream) =
        run(stream, &mut session, &server, &shutdown, slot, true).await
    {
        if let Some(tls) = handshake(&server, stream, slot).await {
            session.set_tls();
            run(tls, &mut session, &server, &shutdown, slot, false).await;
        }
    }
    tracing::debug!("disconnected");
}

async fn handshake(
    server: &LdapServer,
    stream: TcpStream,
    slot: &Slot,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let tls = server.tls.as_ref()?;
    let accept = tokio::time::timeout(
        server.settings.handshake_timeout,
        tls.acceptor().accept(stream),
    );
    let accepted = tokio::select! {
        _ = slot.closing() => {
            tracing::debug!("closed during the TLS handshake to make room");
            return None;
        }
        a = accept => a,
    };
    match accepted {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!("TLS handshake timed out");
            None
        }
    }
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    session: &mut Session,
    server: &LdapServer,
    shutdown: &CancellationToken,
    slot: &Slot,
    can_start_tls: bool,
) -> Outcome<S> {
    let settings = &server.settings;
    let mut framed = Framed::new(
        stream,
        Codec::new(settings.max_message_bytes, settings.max_ber_depth),
    );
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => {
                let notice = notice_of_disconnection(LdapResultCode::Unavailable, "the server is shutting down");
                let _ = tokio::time::timeout(settings.write_timeout, framed.send(notice)).await;
                return Outcome::Closed;
            }
            _ = slot.closing() => {
                tracing::debug!("idle connection closed to make room for a new one");
                let notice = notice_of_disconnection(
                    LdapResultCode::Unavailable,
                    "idle connection closed: the server is at its connection limit",
                );
                let _ = tokio::time::timeout(settings.write_timeout, framed.send(notice)).await;
                return Outcome::Closed;
            }
            n = tokio::time::timeout(settings.idle_timeout, framed.next()) => n,
        };
        let msg = match next {
            Err(_) => {
                tracing::debug!("idle timeout");
                let notice = notice_of_disconnection(LdapResultCode::Unavailable, "idle timeout");
                let _ = tokio::time::timeout(settings.write_timeout, framed.send(notice)).await;
                return Outcome::Closed;
            }
            Ok(None) => return Outcome::Closed,
            Ok(Some(Err(e))) => {
                tracing::info!(error = %e, "malformed or oversized message; disconnecting");
                let notice = notice_of_disconnection(LdapResultCode::ProtocolError, &e.to_string());
                let _ = tokio::time::timeout(settings.write_timeout, framed.send(notice)).await;
                linger(framed.into_inner()).await;
                return Outcome::Closed;
            }
            Ok(Some(Ok(msg))) => msg,
        };
        slot.busy();
        let span = tracing::debug_span!("request", msgid = msg.msgid);
        let handled = session.handle(msg).instrument(span);
        let reply = match tokio::time::timeout(settings.request_timeout, handled).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("request timed out; disconnecting");
                let notice =
                    notice_of_disconnection(LdapResultCode::Unavailable, "request timed out");
                let _ = tokio::time::timeout(settings.write_timeout, framed.send(notice)).await;
                return Outcome::Closed;
            }
        };
        let write = async {
            for m in reply.msgs {
                framed.feed(m).await?;
            }
            framed.flush().await
        };
        match tokio::time::timeout(settings.write_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "write failed");
                return Outcome::Closed;
            }
            Err(_) => {
                tracing::info!("write timed out");
                return Outcome::Closed;
            }
        }
        slot.idle();
        match reply.action {
            Action::Continue => {}
            Action::Close => return Outcome::Closed,
            Action::StartTls if can_start_tls => {
                let parts = framed.into_parts();
                if !parts.read_buf.is_empty() {
                    // Data after the StartTLS request would be read in the clear.
                    tracing::info!("data sent after StartTLS before the handshake; disconnecting");
                    return Outcome::Closed;
                }
                return Outcome::StartTls(parts.io);
            }
            Action::StartTls => return Outcome::Closed,
        }
    }
}
