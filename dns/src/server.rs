//! The socket side: [`serve`] runs
//! - UDP workers: one OS thread per core, each blocking on its own socket (`SO_REUSEPORT`,
//!   see [`bind_udp`]) or on a shared one, taking every
//!   datagram waiting (up to a batch) with one `recvmmsg`, answering in place and replying with
//!   one `sendmmsg` (no task or channel per datagram; the index is re-read only when its
//!   generation counter moves);
//! - TCP: an accept loop with a connection cap, a task (and a tracing span) per connection, any
//!   number of (pipelined) queries per connection, an idle timeout, AXFR streams;
//! - the index updater: watches the store's snapshot and rebuilds the zones whose inputs changed,
//!   then sends NOTIFY for them;
//! - forwarding on the runtime for names outside our zones, within [`forward::Limits`]: a UDP
//!   worker takes a permit before it spawns the forwarding task, and drops the query when there
//!   is none, so nothing queues.

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ipnetwork::IpNetwork;
use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use siteward_store::slots::{Admission, Slot, Slots};
use siteward_store::{Naming, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::engine::{self, Context, Outcome, Query, Transport};
use crate::forward;
use crate::patch::Zones;
use crate::transfer;
use crate::zone::{ZoneIndex, ZoneSettings};
use crate::{Error, Metrics};

/// Requested UDP receive buffer, octets.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// Everything the DNS server is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// SOA, NS and TTLs.
    pub zone: ZoneSettings,
    /// Who may have names outside our zones forwarded; `None` means loopback and the sites'
    /// subnets.
    pub recursion_allow: Option<Vec<IpNetwork>>,
    /// Who may transfer zones (AXFR/IXFR).
    pub axfr_allow: Vec<IpNetwork>,
    /// Secondaries notified of every zone change.
    pub notify: Vec<SocketAddr>,
    /// Port of the sites' forwarders (53; tests use others).
    pub forwarder_port: u16,
    /// How many forwarded queries may be in flight, in total and per client.
    pub forward_bounds: forward::Bounds,
    /// UDP worker threads; 0 = one per core.
    pub udp_workers: usize,
    /// Most TCP connections at once.
    pub tcp_max_connections: usize,
    /// A TCP connection idle this long is closed.
    pub tcp_idle_timeout: Duration,
    /// How often the updater looks for a new snapshot.
    pub refresh_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            zone: ZoneSettings::default(),
            recursion_allow: None,
            axfr_allow: Vec::new(),
            notify: Vec::new(),
            forwarder_port: 53,
            forward_bounds: forward::Bounds::default(),
            udp_workers: 0,
            tcp_max_connections: 512,
            tcp_idle_timeout: Duration::from_secs(10),
            refresh_interval: Duration::from_millis(5),
        }
    }
}

/// What [`serve`] needs.
#[derive(Debug, Clone)]
pub struct DnsState {
    /// The store whose snapshot feeds the zones.
    pub store: Store,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Metrics.
    pub metrics: Metrics,
}

/// The current index, and a counter that moves whenever it is replaced.
#[derive(Debug, Default)]
struct Live {
    index: ArcSwap<ZoneIndex>,
    generation: AtomicU64,
}

struct Shared {
    state: DnsState,
    live: Live,
    cache: forward::Cache,
    limits: Arc<forward::Limits>,
    runtime: tokio::runtime::Handle,
    /// The zones and what patching them needs; only the index updater takes it.
    zones: std::sync::Mutex<Zones>,
}

impl Shared {
    fn may_recurse(&self, ip: IpAddr, index: &ZoneIndex) -> bool {
        match &self.state.settings.recursion_allow {
            Some(list) => list.iter().any(|n| n.contains(ip)),
            None => ip.is_loopback() || index.site_subnets.iter().any(|n| n.contains(ip)),
        }
    }

    fn may_transfer(&self, ip: IpAddr) -> bool {
        self.state
            .settings
            .axfr_allow
            .iter()
            .any(|n| n.contains(ip))
    }

    fn context(&self, transport: Transport, ip: IpAddr, index: &ZoneIndex) -> Context {
        Context {
            transport,
            may_recurse: self.may_recurse(ip, index),
            may_transfer: self.may_transfer(ip),
        }
    }

    fn upstreams(&self, index: &ZoneIndex, client: IpAddr) -> Vec<SocketAddr> {
        index
            .forwarders_for(client)
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.state.settings.forwarder_port))
            .collect()
    }

    /// Brings the index to `naming` (patching the zones a delta touched, building the others)
    /// and swaps it in. Returns the zones that changed (to NOTIFY).
    fn refresh(&self, naming: &Arc<Naming>) -> Vec<Arc<crate::zone::Zone>> {
        let mut zones = match self.zones.lock() {
            Ok(z) => z,
            Err(poisoned) => {
                // A panic mid-update left the state unknown: start over from a full build.
                let mut z = poisoned.into_inner();
                *z = Zones::default();
                z
            }
        };
        let (changed, stats) = zones.update(naming, &self.state.settings.zone);
        let next = zones.index().clone();
        drop(zones);
        let m = &self.state.metrics;
        m.zones.set(next.zones.len() as i64);
        m.rebuilds.inc();
        m.zones_patched.inc_by(stats.patched as u64);
        m.zones_built.inc_by(stats.built as u64);
        m.apply_seconds.observe(stats.elapsed.as_secs_f64());
        tracing::debug!(
            patched = stats.patched,
            built = stats.built,
            names = stats.names,
            elapsed_us = stats.elapsed.as_micros() as u64,
            "zones updated"
        );
        self.live.index.store(next);
        self.live.generation.fetch_add(1, Ordering::Release);
        changed
    }
}

/// Serves DNS on `udp` and `tcp` until `shutdown`; returns once every worker and connection
/// has stopped.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    state: DnsState,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let shared = Arc::new(Shared {
        live: Live::default(),
        cache: forward::Cache::default(),
        limits: forward::Limits::new(
            state.settings.forward_bounds,
            state.metrics.forward_inflight.clone(),
        ),
        runtime: tokio::runtime::Handle::current(),
        zones: std::sync::Mutex::new(Zones::default()),
        state,
    });
    let tracker = TaskTracker::new();

    // The index, then kept current.
    let mut seen = shared.state.store.snapshot().naming.clone();
    shared.refresh(&seen);
    {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let notify_tracker = tracker.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(shared.state.settings.refresh_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let naming = shared.state.store.snapshot().naming.clone();
                if Arc::ptr_eq(&naming, &seen) {
                    continue;
                }
                seen = naming.clone();
                let started = Instant::now();
                let s2 = shared.clone();
                let changed = match tokio::task::spawn_blocking(move || s2.refresh(&naming)).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "zone rebuild failed");
                        continue;
                    }
                };
                tracing::trace!(
                    changed = changed.len(),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "zones swapped in"
                );
                for zone in changed {
                    for &target in &shared.state.settings.notify {
                        let zone = zone.clone();
                        notify_tracker.spawn(async move {
                            if let Err(e) = transfer::send_notify(&zone, target).await {
                                tracing::warn!(%target, zone = %crate::name::to_text(&zone.apex),
                                    error = %e, "NOTIFY not acknowledged");
                            }
                        });
                    }
                }
            }
        });
    }

    // UDP workers on their own threads.
    let workers = match shared.state.settings.udp_workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let sockets = worker_sockets(udp.into_std()?, workers)?;
    let mut threads = Vec::new();
    for (i, sock) in sockets.into_iter().enumerate() {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("dns-udp-{i}"))
            .spawn(move || udp_worker(i, &sock, &shared, &shutdown))?;
        threads.push(thread);
    }

    // TCP. At the cap an idle connection makes room (RFC 7766 §6.2.3), see `slots`.
    let slots = Slots::new(shared.state.settings.tcp_max_connections);
    let mut next_conn: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = tcp.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let slot = match slots.admit() {
                    Admission::Admitted(s) => s,
                    Admission::MadeRoom(s) => {
                        shared.state.metrics.tcp_evicted.inc();
                        s
                    }
                    Admission::Full => {
                        shared.state.metrics.tcp_refused.inc();
                        tracing::debug!(%peer, "TCP connection closed: every connection is busy");
                        drop(stream);
                        continue;
                    }
                };
                next_conn += 1;
                let span = tracing::debug_span!("dns_tcp", conn = next_conn, %peer);
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(
                    async move {
                        if let Err(e) =
                            tcp_connection(stream, peer, &shared, &shutdown, &slot).await
                        {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| Error::Worker("UDP worker panicked".into()))
            })
            .collect::<Result<Vec<()>, Error>>()
    })
    .await
    .map_err(|e| Error::Worker(e.to_string()))?;
    joined.map(|_| ())
}

/// A socket for each of `workers` UDP workers. When `first` was bound with `SO_REUSEPORT` (see
/// [`bind_udp`]), each worker gets its own socket on the same address, so the kernel spreads
/// clients over per-worker receive queues (by address and port, as Knot and NSD do) and workers
/// never contend for one queue's lock; otherwise, or when such a bind fails, they share `first`.
fn worker_sockets(
    first: std::net::UdpSocket,
    workers: usize,
) -> Result<Vec<std::net::UdpSocket>, Error> {
    let workers = workers.max(1);
    let addr = first.local_addr()?;
    let reuse = socket2::SockRef::from(&first).reuse_port().unwrap_or(false);
    let mut sockets = Vec::with_capacity(workers);
    for _ in 1..workers {
        let own = if reuse {
            match bind_udp(addr) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::debug!(error = %e, %addr, "UDP workers share one socket");
                    None
                }
            }
        } else {
            None
        };
        sockets.push(match own {
            Some(s) => s,
            None => first.try_clone()?,
        });
    }
    sockets.insert(0, first);
    for s in &sockets {
        s.set_nonblocking(false)?;
        // To look at `shutdown` now and then.
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        // A large receive buffer absorbs bursts while a worker is descheduled (the kernel caps
        // it at net.core.rmem_max); failing to enlarge it is not fatal.
        if let Err(e) = socket2::SockRef::from(s).set_recv_buffer_size(UDP_RECV_BUFFER) {
            tracing::debug!(error = %e, "cannot enlarge the UDP receive buffer");
        }
    }
    Ok(sockets)
}

/// A UDP socket bound to `addr` with `SO_REUSEPORT`, so that [`serve`] can give each worker a
/// socket of its own on the same port. Only sockets of the same user can join the port (Linux
/// checks the effective UID), and the DNS TCP listener on the same port is bound without it,
/// so a second server started on the port still fails to start.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Datagrams a UDP worker takes from (and hands to) the kernel per system call.
const UDP_BATCH: usize = 32;
/// The largest query a UDP worker reads (the queries of real clients are far smaller).
const UDP_MAX_QUERY: usize = 4096;

/// A received address as a standard one (`None` for a family DNS does not use).
fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// One UDP worker: takes up to [`UDP_BATCH`] waiting datagrams with one `recvmmsg` (blocking for
/// the first only), answers them in place, and hands the replies back with one `sendmmsg`.
fn udp_worker(
    worker: usize,
    sock: &std::net::UdpSocket,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) {
    let latency = shared.state.metrics.latency(&format!("udp-{worker}"));
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; UDP_MAX_QUERY]; UDP_BATCH];
    let mut rx = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut tx = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut got: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(UDP_BATCH);
    let mut replies: Vec<Vec<u8>> = Vec::with_capacity(UDP_BATCH);
    let mut to: Vec<Option<SockaddrStorage>> = Vec::with_capacity(UDP_BATCH);
    let mut q = Query::default();
    let mut generation = shared.live.generation.load(Ordering::Acquire);
    let mut index = shared.live.index.load_full();
    let metrics = &shared.state.metrics;
    while !shutdown.is_cancelled() {
        got.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            match recvmmsg(fd, &mut rx, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                Ok(msgs) => got.extend(msgs.filter_map(|m| Some((m.bytes, m.address?)))),
                // The read timeout (to look at `shutdown`), or a signal.
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "UDP receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let g = shared.live.generation.load(Ordering::Acquire);
        if g != generation {
            generation = g;
            index = shared.live.index.load_full();
        }
        replies.clear();
        to.clear();
        for (buf, &(n, addr)) in bufs.iter().zip(&got) {
            let Some(peer) = socket_addr(&addr) else {
                continue;
            };
            let msg = buf.get(..n).unwrap_or(&buf[..]);
            let started = Instant::now();
            let ctx = shared.context(Transport::Udp, peer.ip(), &index);
            match engine::answer(&index, msg, &ctx, &mut q) {
                Outcome::Reply(resp) => {
                    latency.observe(started.elapsed().as_secs_f64());
                    metrics.response(Transport::Udp, &resp);
                    replies.push(resp);
                    to.push(Some(addr));
                }
                Outcome::Drop | Outcome::Transfer(_) => {
                    metrics.dropped.inc();
                }
                Outcome::Forward(f) => {
                    let upstreams = shared.upstreams(&index, peer.ip());
                    if let Some(resp) = shared.cache.get(&upstreams, &f, &q, Instant::now()) {
                        metrics.cache_hits.inc();
                        metrics.response(Transport::Udp, &resp);
                        replies.push(resp);
                        to.push(Some(addr));
                        continue;
                    }
                    // Over the bound the query is dropped, not queued: the client retries, and
                    // a flood costs neither memory nor upstream queries.
                    let Some(permit) = shared.limits.try_acquire(peer.ip()) else {
                        metrics.forward_dropped.inc();
                        tracing::debug!(%peer, "forwarding bound reached; query dropped");
                        continue;
                    };
                    let Ok(reply_sock) = sock.try_clone() else {
                        continue;
                    };
                    let query = msg.to_vec();
                    let shared2 = shared.clone();
                    let q_copy = q.clone();
                    let span = tracing::debug_span!("dns_forward", %peer, qtype = q.qtype);
                    shared.runtime.spawn(
                        async move {
                            let resp =
                                forwarded(&shared2, &f, &q_copy, &upstreams, &query, false).await;
                            drop(permit);
                            shared2.state.metrics.response(Transport::Udp, &resp);
                            if let Err(e) = reply_sock.send_to(&resp, peer) {
                                tracing::debug!(error = %e, %peer, "UDP send failed");
                            }
                        }
                        .instrument(span),
                    );
                }
            }
        }
        send_batch(fd, &mut tx, &replies, &to);
    }
}

/// Sends `replies[i]` to `to[i]`, as few `sendmmsg` calls as the kernel allows; a datagram the
/// kernel refuses (an unreachable peer, say) is skipped, not retried.
fn send_batch(
    fd: RawFd,
    tx: &mut MultiHeaders<SockaddrStorage>,
    replies: &[Vec<u8>],
    to: &[Option<SockaddrStorage>],
) {
    let mut at = 0;
    while at < replies.len() {
        let iovs: Vec<[IoSlice<'_>; 1]> = replies
            .get(at..)
            .unwrap_or_default()
            .iter()
            .map(|r| [IoSlice::new(r)])
            .collect();
        let addrs = to.get(at..).unwrap_or_default();
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        match sendmmsg(fd, tx, &iovs, addrs, no_cmsgs, MsgFlags::empty()) {
            Ok(sent) => at += sent.count().max(1),
            Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::debug!(error = %e, peer = ?to.get(at), "UDP send failed");
                at += 1;
            }
        }
    }
}

/// Forwards upstream (caching the answer); SERVFAIL when no upstream answers.
async fn forwarded(
    shared: &Shared,
    f: &engine::Forward,
    q: &Query,
    upstreams: &[SocketAddr],
    query: &[u8],
    tcp: bool,
) -> Vec<u8> {
    shared.state.metrics.forwarded.inc();
    let mismatched = &shared.state.metrics.forward_mismatched;
    match forward::ask(upstreams, query, q, tcp, mismatched).await {
        Ok(resp) => {
            shared.cache.put(upstreams, f, &resp, Instant::now());
            resp
        }
        Err(e) => {
            tracing::debug!(error = %e, "forwarding failed");
            engine::error_response(q, u16::from(engine::rcode::SERVFAIL))
        }
    }
}

async fn tcp_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    slot: &Slot,
) -> Result<(), Error> {
    stream.set_nodelay(true)?;
    let (mut rd, wr) = stream.into_split();
    let mut wr = tokio::io::BufWriter::new(wr);
    let mut q = Query::default();
    let idle = shared.state.settings.tcp_idle_timeout;
    let metrics = &shared.state.metrics;
    let latency = metrics.latency("tcp");
    loop {
        let len = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = slot.closing() => break,
            r = tokio::time::timeout(idle, rd.read_u16()) => match r {
                Err(_) => break,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(n)) => n as usize,
            },
        };
        let mut msg = vec![0u8; len];
        // A client that stalls inside a message is idle as far as the cap is concerned.
        let read = tokio::select! {
            _ = slot.closing() => break,
            r = tokio::time::timeout(idle, rd.read_exact(&mut msg)) => r,
        };
        match read {
            Err(_) => break,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        slot.busy();
        let index = shared.live.index.load_full();
        let ctx = shared.context(Transport::Tcp, peer.ip(), &index);
        let started = Instant::now();
        let responses = match engine::answer(&index, &msg, &ctx, &mut q) {
            Outcome::Reply(r) => {
                latency.observe(started.elapsed().as_secs_f64());
                vec![r]
            }
            Outcome::Drop => {
                metrics.dropped.inc();
                // A stream that sends non-queries is not worth keeping.
                break;
            }
            Outcome::Transfer(t) => {
                tracing::info!(zone = %crate::name::to_text(&t.zone.apex), serial = t.zone.serial,
                    since = t.since, kind = ?transfer::kind(&t), "zone transfer");
                transfer::messages(&t)
            }
            Outcome::Forward(f) => {
                let upstreams = shared.upstreams(&index, peer.ip());
                match shared.cache.get(&upstreams, &f, &q, Instant::now()) {
                    Some(r) => {
                        metrics.cache_hits.inc();
                        vec![r]
                    }
                    // The connection waits for its answer, so over the bound it gets SERVFAIL
                    // rather than silence.
                    None => match shared.limits.try_acquire(peer.ip()) {
                        Some(_permit) => {
                            vec![forwarded(shared, &f, &q, &upstreams, &msg, true).await]
                        }
                        None => {
                            metrics.forward_dropped.inc();
                            vec![engine::error_response(
                                &q,
                                u16::from(engine::rcode::SERVFAIL),
                            )]
                        }
                    },
                }
            }
        };
        for r in responses {
            metrics.response(Transport::Tcp, &r);
            let len =
                u16::try_from(r.len()).map_err(|_| Error::Worker("response too long".into()))?;
            wr.write_all(&len.to_be_bytes()).await?;
            wr.write_all(&r).await?;
        }
        wr.flush().await?;
        slot.idle();
    }
    wr.flush().await?;
    Ok(())
}
