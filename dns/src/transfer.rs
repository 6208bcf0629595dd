//! Zone transfers out (AXFR, RFC 5936; IXFR, RFC 1995) and NOTIFY (RFC 1996) to secondaries.
//!
//! An AXFR is a stream of messages: the SOA, every other RRset, the SOA again, packed into
//! messages of at most [`AXFR_MESSAGE_MAX`] octets. An IXFR from a serial the zone's
//! [`crate::journal`] still holds gets the deltas from there (our SOA, then per delta the old
//! SOA, the records that went, the new SOA, the records that came, and our SOA again); from our
//! own serial or a later one, our SOA alone; from any other, the whole zone as for AXFR (RFC 1995
//! §4 allows it). NOTIFY goes to every configured secondary when a zone's serial changes,
//! retried until answered.

use std::net::SocketAddr;
use std::time::Duration;

use crate::engine::Transfer;
use crate::journal::serial_after;
use crate::rdata::rtype;
use crate::zone::Zone;
use crate::Error;

/// Size of one AXFR message (well under the 64 KiB TCP limit, as other servers do).
pub const AXFR_MESSAGE_MAX: usize = 16 * 1024;

/// What a transfer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The whole zone.
    Full,
    /// The deltas since the client's serial.
    Incremental,
    /// The client is current: our SOA alone.
    Current,
}

/// What answers `t`: for an IXFR, the deltas when the journal has them.
pub fn kind(t: &Transfer) -> Kind {
    match t.since {
        Some(s) if s == t.zone.serial || serial_after(s, t.zone.serial) => Kind::Current,
        Some(s) if t.zone.journal.since(s, t.zone.serial).is_some() => Kind::Incremental,
        _ => Kind::Full,
    }
}

/// The messages of a transfer of `t.zone`.
pub fn messages(t: &Transfer) -> Vec<Vec<u8>> {
    let zone = &t.zone;
    let soa = zone.soa().and_then(|s| s.encoded.first());
    let apex: &[u8] = &zone.apex;
    let chain = match (kind(t), t.since) {
        (Kind::Current, _) => return pack(t, soa.map(|s| (apex, &s[..]))),
        (Kind::Incremental, Some(s)) => zone.journal.since(s, zone.serial),
        _ => None,
    };
    let (Some(chain), Some(soa)) = (chain, soa) else {
        return axfr_messages(t);
    };
    let mut records: Vec<(&[u8], &[u8])> = vec![(apex, soa)];
    for d in chain {
        records.push((apex, &d.from_soa));
        records.extend(d.removed.iter().map(|(o, r)| (&o[..], &r[..])));
        records.push((apex, &d.to_soa));
        records.extend(d.added.iter().map(|(o, r)| (&o[..], &r[..])));
    }
    records.push((apex, soa));
    pack(t, records)
}

/// The messages of a full transfer of `t.zone` (AXFR, or an IXFR the journal cannot answer).
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
    pack(t, records)
}

/// `records` (owner, encoded record) packed into messages of at most [`AXFR_MESSAGE_MAX`].
fn pack<'a>(t: &Transfer, records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<Vec<u8>> {
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
