//! A TCP relay to the test PostgreSQL that a test can cut (every connection closed, the port
//! closed: connections are refused, as with a stopped server) and restore on the same port: a
//! database outage without stopping the shared server, which other tests use meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::{TestDb, TestResult};

/// A relay in front of PostgreSQL.
pub(crate) struct Relay {
    /// Where it listens (loopback).
    pub(crate) addr: SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// A relay to `target` (`host:port`), up.
    pub(crate) async fn to(target: String) -> TestResult<Self> {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = first.local_addr()?;
        let (up, watch) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            let mut listener = Some(first);
            let mut state = watch.clone();
            loop {
                let Some(l) = listener.take() else {
                    // Down: wait for the way back, then listen on the same port again.
                    if state.wait_for(|up| *up).await.is_err() {
                        return;
                    }
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => listener = Some(l),
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                    continue;
                };
                tokio::select! {
                    accepted = l.accept() => {
                        listener = Some(l);
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let target = target.clone();
                        let mut conn_state = watch.clone();
                        tokio::spawn(async move {
                            let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = conn_state.wait_for(|up| !*up) => {}
                            }
                        });
                    }
                    _ = state.wait_for(|up| !*up) => drop(l),
                }
            }
        });
        Ok(Self { addr, up, task })
    }

    /// A relay to the server of `db`, and `db`'s URL rewritten to go through it.
    pub(crate) async fn to_db(db: &TestDb) -> TestResult<(Self, String)> {
        let mut url = url::Url::parse(&db.url)?;
        let target = format!(
            "{}:{}",
            url.host_str().ok_or("no host")?,
            url.port().unwrap_or(5432)
        );
        let relay = Self::to(target).await?;
        url.set_host(Some("127.0.0.1"))?;
        url.set_port(Some(relay.addr.port()))
            .map_err(|_| "cannot set the port")?;
        Ok((relay, url.to_string()))
    }

    /// The database goes away: open connections are closed, new ones refused.
    pub(crate) fn cut(&self) {
        self.up.send_replace(false);
    }

    /// The database is back on the same address.
    pub(crate) fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
