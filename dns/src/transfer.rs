//! Zone transfers out (AXFR, RFC 5936) and NOTIFY (RFC 1996) to secondaries.
//!
//! An AXFR is a stream of messages: the SOA, every other RRset, the SOA again, packed into
//! messages of at most [`AXFR_MESSAGE_MAX`] octets. IXFR is answered with a full transfer
//! (RFC 1995 §4 allows it). NOTIFY goes to every configured secondary when a zone's serial
//! changes, retried until answered.

use std::net::SocketAddr;
use std::time::Duration;

use crate::engine::Transfer;
use crate::rdata::rtype;
use crate::zone::Zone;
use crate::Error;

/// Size of one AXFR message (well under the 64 KiB TCP limit, as other servers do).
pub const AXFR_MESSAGE_MAX: usize = 16 * 1024;

/// The messages of a transfer of `t.zone`.
pub fn axfr_messages(t: &Transfer) -> Vec<Vec<u8>> {
    let zone = &t.zone;
    let mut records: Vec<(&[u8], &[u8])> = Vec::new();
    let all = zone.rrsets_for_transfer();
    let soa = all
        .first()
        .and_then(|(n, s)| s.encoded.first().map(|e| (*n, &e[..])));
    for (owner, set) in &all {
        for rec in &set.encoded {
            records.push((owner, rec));
        }
    }
    if let Some(soa) = soa {
        records.push(soa);
    }
    let mut out = Vec::new();
    let mut msg = new_message(t, true);
    let mut count: u16 = 0;
    for (owner, rec) in records {
        if count > 0 && msg.len() + owner.len() + rec.len() > AXFR_MESSAGE_MAX {
            finish(&mut msg, count);
            out.push(std::mem::replace(&mut msg, new_message(t, false)));
            count = 0;
        }
        msg.extend_from_slice(owner);
        msg.extend_from_slice(rec);
        count += 1;
    }
    finish(&mut msg, count);
    out.push(msg);
    out
}

fn new_message(t: &Transfer, with_question: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(AXFR_MESSAGE_MAX);
    m.extend_from_slice(&t.id.to_be_bytes());
    m.extend_from_slice(&0x8400u16.to_be_bytes());
    m.extend_from_slice(&u16::from(with_question).to_be_bytes());
    m.extend_from_slice(&[0; 6]);
    if with_question {
        m.extend_from_slice(&t.question);
    }
    m
}

fn finish(msg: &mut [u8], count: u16) {
    if let Some(an) = msg.get_mut(6..8) {
        an.copy_from_slice(&count.to_be_bytes());
    }
}

/// A NOTIFY message for `zone` with message id `id` (the SOA in the answer section, as a hint).
pub fn notify_message(zone: &Zone, id: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(&id.to_be_bytes());
    // Opcode NOTIFY (4), AA.
    m.extend_from_slice(&((4u16 << 11) | 0x0400).to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    let soa = zone.soa().and_then(|s| s.encoded.first());
    m.extend_from_slice(&u16::from(soa.is_some()).to_be_bytes());
    m.extend_from_slice(&[0; 4]);
    m.extend_from_slice(&zone.apex);
    m.extend_from_slice(&rtype::SOA.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if let Some(rec) = soa {
        m.extend_from_slice(&zone.apex);
        m.extend_from_slice(rec);
    }
    m
}

/// Sends NOTIFY for `zone` to `target` until it answers (three tries, one second apart).
pub async fn send_notify(zone: &Zone, target: SocketAddr) -> Result<(), Error> {
    let bind: SocketAddr = if target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    let id: u16 = rand::random();
    let msg = notify_message(zone, id);
    let mut buf = [0u8; 1024];
    for _ in 0..3 {
        sock.send_to(&msg, target).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok((n, from))) => {
                    let reply = buf.get(..n).unwrap_or_default();
                    if from == target && reply.get(..2) == Some(&id.to_be_bytes()[..]) {
                        return Ok(());
                    }
                }
            }
        }
    }
    Err(Error::Worker(format!("no answer to NOTIFY from {target}")))
}
