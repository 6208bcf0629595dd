//! The answering logic: bytes of a query in, bytes of a response (or another [`Outcome`]) out.
//! No sockets here; [`answer`] is a pure function of the [`ZoneIndex`], the query and its
//! [`Context`] (transport, what the client may do).
//!
//! Wire handling is our own on this path (a header, one question, an OPT record): hickory-proto's
//! `Message` allocates a tree per query, which costs more than the whole lookup. Responses copy
//! pre-encoded records from the index and compress owner names against the question only.

use std::sync::Arc;

use crate::name;
use crate::rdata::rtype;
use crate::zone::{at_boundary, Node, Rrset, Zone, ZoneIndex};

/// Response codes.
#[allow(missing_docs)]
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
    pub const NOTAUTH: u8 = 9;
    /// Extended (EDNS) BADVERS = 16.
    pub const BADVERS: u16 = 16;
}

/// Largest UDP response with EDNS (DNS flag day 2020).
pub const EDNS_UDP_MAX: u16 = 1232;
/// Largest UDP response without EDNS.
pub const PLAIN_UDP_MAX: usize = 512;
const OPT_LEN: usize = 11;
const MAX_CHAIN: usize = 8;

/// How the query arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Datagram: size limits and TC apply.
    Udp,
    /// Stream: 64 KiB per message, zone transfers allowed.
    Tcp,
}

/// What the client may do besides authoritative queries.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Transport.
    pub transport: Transport,
    /// The client may have names outside our zones forwarded.
    pub may_recurse: bool,
    /// The client may transfer zones.
    pub may_transfer: bool,
}

/// What to do with a query.
#[derive(Debug)]
pub enum Outcome {
    /// Send these bytes.
    Reply(Vec<u8>),
    /// Send nothing (a response, or too short to answer).
    Drop,
    /// A name outside our zones, recursion desired and allowed: forward it.
    Forward(Forward),
    /// An allowed AXFR/IXFR over TCP: stream the zone.
    Transfer(Transfer),
}

/// A query to forward upstream.
#[derive(Debug)]
pub struct Forward {
    /// Lower-case question name (wire), for the cache key.
    pub qname: Vec<u8>,
    /// Question type.
    pub qtype: u16,
    /// EDNS DO bit of the query.
    pub dnssec_ok: bool,
    /// The client's message id.
    pub id: u16,
}

/// A zone transfer to stream.
#[derive(Debug)]
pub struct Transfer {
    /// The zone.
    pub zone: Arc<Zone>,
    /// The client's message id.
    pub id: u16,
    /// The question as received (name, type, class), echoed in the first message.
    pub question: Vec<u8>,
    /// An IXFR's serial (the client's version); `None` for AXFR.
    pub since: Option<u32>,
}

/// EDNS parameters of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Advertised UDP payload size.
    pub payload: u16,
    /// EDNS version.
    pub version: u8,
    /// DNSSEC OK.
    pub dnssec_ok: bool,
}

/// A parsed query.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// Message id.
    pub id: u16,
    /// Header flags word.
    pub flags: u16,
    /// Question name, lower-case wire.
    pub qname: Vec<u8>,
    /// Question name as received (wire, uncompressed): echoed in responses.
    pub qname_exact: Vec<u8>,
    /// Question type.
    pub qtype: u16,
    /// Question class.
    pub qclass: u16,
    /// EDNS, when the query had an OPT record.
    pub edns: Option<Edns>,
    /// For IXFR: the serial of the client's SOA in the authority section (RFC 1995 §3).
    pub ixfr_serial: Option<u32>,
}

impl Query {
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }

    /// Recursion desired.
    pub fn rd(&self) -> bool {
        self.flags & 0x0100 != 0
    }
}

/// Why a message is not a query we can answer normally.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not worth answering (too short, or a response).
    Drop,
    /// Malformed: answer FORMERR (with the question when it was read).
    FormErr,
}

fn u16_at(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

fn skip_rr(
    msg: &[u8],
    pos: usize,
    scratch: &mut (Vec<u8>, Vec<u8>),
) -> Option<(usize, u16, u16, u32, usize)> {
    let after = name::read(msg, pos, &mut scratch.0, &mut scratch.1)?;
    let t = u16_at(msg, after)?;
    let class = u16_at(msg, after + 2)?;
    let ttl = u32::from(u16_at(msg, after + 4)?) << 16 | u32::from(u16_at(msg, after + 6)?);
    let rdlen = u16_at(msg, after + 8)? as usize;
    let end = after + 10 + rdlen;
    if end > msg.len() {
        return None;
    }
    Some((end, t, class, ttl, after))
}

/// Parses a query into `q` (reused across queries to avoid allocations). On `FormErr`, `q` holds
/// the header and, when it was readable, the question (`qname` non-empty).
pub fn parse(msg: &[u8], q: &mut Query) -> Result<(), ParseError> {
    q.qname.clear();
    q.qname_exact.clear();
    q.edns = None;
    q.ixfr_serial = None;
    if msg.len() < 12 {
        return Err(ParseError::Drop);
    }
    q.id = u16_at(msg, 0).ok_or(ParseError::Drop)?;
    q.flags = u16_at(msg, 2).ok_or(ParseError::Drop)?;
    if q.flags & 0x8000 != 0 {
        return Err(ParseError::Drop);
    }
    let count = |i| u16_at(msg, i).unwrap_or(0);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 {
        return Err(ParseError::FormErr);
    }
    let Some(pos) = name::read(msg, 12, &mut q.qname, &mut q.qname_exact) else {
        q.qname.clear();
        q.qname_exact.clear();
        return Err(ParseError::FormErr);
    };
    let (Some(qtype), Some(qclass)) = (u16_at(msg, pos), u16_at(msg, pos + 2)) else {
        q.qname.clear();
        q.qname_exact.clear();
        return Err(ParseError::FormErr);
    };
    q.qtype = qtype;
    q.qclass = qclass;
    let mut pos = pos + 4;
    if an != 0 && q.opcode() == 0 {
        return Err(ParseError::FormErr);
    }
    let mut scratch = (Vec::new(), Vec::new());
    for i in 0..(u32::from(an) + u32::from(ns)) {
        let (end, t, _, _, after) = skip_rr(msg, pos, &mut scratch).ok_or(ParseError::FormErr)?;
        if qtype == rtype::IXFR && i >= u32::from(an) && t == rtype::SOA {
            // The client's SOA: MNAME, RNAME, then the serial.
            let rdata = after + 10;
            let mname_end = name::read(msg, rdata, &mut scratch.0, &mut scratch.1);
            let rname_end =
                mname_end.and_then(|p| name::read(msg, p, &mut scratch.0, &mut scratch.1));
            let serial = rname_end.filter(|p| p + 20 <= end).and_then(|p| {
                Some((u32::from(u16_at(msg, p)?) << 16) | u32::from(u16_at(msg, p + 2)?))
            });
            q.ixfr_serial = Some(serial.ok_or(ParseError::FormErr)?);
        }
        pos = end;
    }
    for _ in 0..ar {
        let (end, t, class, ttl, after) =
            skip_rr(msg, pos, &mut scratch).ok_or(ParseError::FormErr)?;
        if t == rtype::OPT {
            // One OPT, owned by the root (RFC 6891 §6.1.1).
            if q.edns.is_some() || scratch.0 != [0] {
                return Err(ParseError::FormErr);
            }
            let _ = after;
            q.edns = Some(Edns {
                payload: class,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
            });
        }
        pos = end;
    }
    if pos != msg.len() {
        return Err(ParseError::FormErr);
    }
    Ok(())
}

/// A response under construction.
struct Builder<'q> {
    buf: Vec<u8>,
    q: &'q Query,
    counts: [u16; 3],
    section: usize,
}

impl<'q> Builder<'q> {
    fn new(q: &'q Query, with_question: bool) -> Self {
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(&q.id.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        let qd: u16 = if with_question && !q.qname_exact.is_empty() {
            1
        } else {
            0
        };
        buf.extend_from_slice(&qd.to_be_bytes());
        buf.extend_from_slice(&[0; 6]);
        if qd == 1 {
            buf.extend_from_slice(&q.qname_exact);
            buf.extend_from_slice(&q.qtype.to_be_bytes());
            buf.extend_from_slice(&q.qclass.to_be_bytes());
        }
        Self {
            buf,
            q,
            counts: [0; 3],
            section: 0,
        }
    }

    /// Writes `n` (lower-case wire), compressed against the question name where a suffix
    /// matches.
    fn name(&mut self, n: &[u8]) {
        let qn = &self.q.qname;
        let mut pos = 0;
        loop {
            let Some(rem) = n.get(pos..) else { return };
            if rem.len() > 1 && qn.len() >= rem.len() {
                let start = qn.len() - rem.len();
                if qn.get(start..) == Some(rem) && at_boundary(qn, start) {
                    self.buf.extend_from_slice(n.get(..pos).unwrap_or_default());
                    let ptr = 0xC000u16 | (12 + start) as u16;
                    self.buf.extend_from_slice(&ptr.to_be_bytes());
                    return;
                }
            }
            match n.get(pos) {
                Some(&len) if len > 0 => pos += 1 + len as usize,
                _ => {
                    self.buf.extend_from_slice(n);
                    return;
                }
            }
        }
    }

    fn record(&mut self, owner: &[u8], encoded: &[u8]) {
        self.name(owner);
        self.buf.extend_from_slice(encoded);
        if let Some(c) = self.counts.get_mut(self.section) {
            *c += 1;
        }
    }

    fn rrset(&mut self, owner: &[u8], set: &Rrset) {
        for rec in &set.encoded {
            self.record(owner, rec);
        }
    }

    fn next_section(&mut self) {
        self.section += 1;
    }

    /// Finishes: flags, counts, OPT, and the size limit (`TC` when the answer or authority does
    /// not fit; additional records are dropped silently when only they do not fit).
    fn finish(mut self, rcode: u16, aa: bool, limit: usize, mark: (usize, [u16; 3])) -> Vec<u8> {
        let edns = self.q.edns;
        let room = limit.saturating_sub(if edns.is_some() { OPT_LEN } else { 0 });
        let mut tc = false;
        if self.buf.len() > room {
            if mark.0 <= room {
                self.buf.truncate(mark.0);
                self.counts = mark.1;
            } else {
                tc = true;
                self.counts = [0; 3];
                let qlen = if self.q.qname_exact.is_empty() {
                    0
                } else {
                    self.q.qname_exact.len() + 4
                };
                self.buf.truncate(12 + qlen);
            }
        }
        let mut flags: u16 = 0x8000 | (self.q.flags & 0x7800) | (self.q.flags & 0x0110);
        if aa {
            flags |= 0x0400;
        }
        if tc {
            flags |= 0x0200;
        }
        flags |= rcode & 0xF;
        let mut arcount = self.counts[2];
        if let Some(e) = edns {
            // OPT: root owner, our payload size, extended rcode, version 0, DO echoed.
            self.buf.push(0);
            self.buf.extend_from_slice(&rtype::OPT.to_be_bytes());
            self.buf.extend_from_slice(&EDNS_UDP_MAX.to_be_bytes());
            self.buf.push((rcode >> 4) as u8);
            self.buf.push(0);
            self.buf
                .extend_from_slice(&(if e.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
            self.buf.extend_from_slice(&[0, 0]);
            arcount += 1;
        }
        let header = [
            flags.to_be_bytes(),
            self.counts[0].to_be_bytes(),
            self.counts[1].to_be_bytes(),
            arcount.to_be_bytes(),
        ];
        for (i, pair) in header.iter().enumerate() {
            let at = 2 + i * 2 + if i > 0 { 2 } else { 0 };
            if let Some(dst) = self.buf.get_mut(at..at + 2) {
                dst.copy_from_slice(pair);
            }
        }
        self.buf
    }
}

/// A header-and-question response with `rcode` and nothing else (REFUSED, NOTIMP, FORMERR...).
pub fn error_response(q: &Query, rcode: u16) -> Vec<u8> {
    Builder::new(q, true).finish(rcode, false, usize::MAX, (0, [0; 3]))
}

/// The size limit of a response to `q` over `transport`.
pub fn limit(q: &Query, transport: Transport) -> usize {
    match (transport, q.edns) {
        (Transport::Tcp, _) => 65535,
        (Transport::Udp, None) => PLAIN_UDP_MAX,
        (Transport::Udp, Some(e)) => usize::from(e.payload.clamp(512, EDNS_UDP_MAX)),
    }
}

/// Answers a query. `scratch` is reused between calls by one worker.
pub fn answer(index: &ZoneIndex, msg: &[u8], ctx: &Context, q: &mut Query) -> Outcome {
    match parse(msg, q) {
        Ok(()) => {}
        Err(ParseError::Drop) => return Outcome::Drop,
        Err(ParseError::FormErr) => {
            // An opcode we do not implement is NOTIMP even when its body is unusual.
            let code = if !matches!(q.opcode(), 0 | 4) {
                rcode::NOTIMP
            } else {
                rcode::FORMERR
            };
            let q2 = Query {
                edns: None,
                ..std::mem::take(q)
            };
            let out = error_response(&q2, u16::from(code));
            *q = q2;
            return Outcome::Reply(out);
        }
    }
    if q.opcode() != 0 {
        return Outcome::Reply(error_response(q, u16::from(rcode::NOTIMP)));
    }
    if let Some(e) = q.edns {
        if e.version > 0 {
            return Outcome::Reply(error_response(q, rcode::BADVERS));
        }
    }
    match q.qtype {
        rtype::OPT => return Outcome::Reply(error_response(q, u16::from(rcode::FORMERR))),
        rtype::MAILA | rtype::MAILB => {
            return Outcome::Reply(error_response(q, u16::from(rcode::NOTIMP)))
        }
        _ => {}
    }
    if q.qclass != 1 {
        return Outcome::Reply(error_response(q, u16::from(rcode::REFUSED)));
    }
    let Some(zone) = index.find(&q.qname) else {
        if q.rd() && ctx.may_recurse && !matches!(q.qtype, rtype::AXFR | rtype::IXFR) {
            return Outcome::Forward(Forward {
                qname: q.qname.clone(),
                qtype: q.qtype,
                dnssec_ok: q.edns.is_some_and(|e| e.dnssec_ok),
                id: q.id,
            });
        }
        let code = if matches!(q.qtype, rtype::AXFR | rtype::IXFR) {
            rcode::NOTAUTH
        } else {
            rcode::REFUSED
        };
        return Outcome::Reply(error_response(q, u16::from(code)));
    };
    if matches!(q.qtype, rtype::AXFR | rtype::IXFR) {
        if !ctx.may_transfer || q.qname != *zone.apex {
            return Outcome::Reply(error_response(q, u16::from(rcode::REFUSED)));
        }
        if ctx.transport == Transport::Udp {
            if q.qtype == rtype::AXFR {
                return Outcome::Reply(error_response(q, u16::from(rcode::FORMERR)));
            }
            // IXFR over UDP: the current SOA tells the client to come over TCP (RFC 1995 §4).
            let mut b = Builder::new(q, true);
            if let Some(soa) = zone.soa() {
                b.rrset(&zone.apex, soa);
            }
            let mark = (b.buf.len(), b.counts);
            return Outcome::Reply(b.finish(0, true, limit(q, ctx.transport), mark));
        }
        let mut question = q.qname_exact.clone();
        question.extend_from_slice(&q.qtype.to_be_bytes());
        question.extend_from_slice(&q.qclass.to_be_bytes());
        return Outcome::Transfer(Transfer {
            zone: zone.clone(),
            id: q.id,
            question,
            since: q.ixfr_serial.filter(|_| q.qtype == rtype::IXFR),
        });
    }
    Outcome::Reply(lookup(zone, q, ctx.transport))
}

/// The node that answers for `name`: the exact node, or the wildcard synthesizing it (RFC 4592:
/// the source of synthesis is `*.` + the closest encloser, and only when `name` does not exist).
fn find_node<'z>(zone: &'z Zone, name: &[u8], buf: &mut Vec<u8>) -> Option<&'z Node> {
    if let Some(n) = zone.node(name) {
        return Some(n);
    }
    if !zone.has_wildcards {
        return None;
    }
    let mut cur = name;
    while let Some(p) = name::parent(cur) {
        if zone.contains(p) {
            buf.clear();
            buf.extend_from_slice(b"\x01*");
            buf.extend_from_slice(p);
            return zone.node(buf.as_slice());
        }
        if p.len() <= zone.apex.len() {
            return None;
        }
        cur = p;
    }
    None
}

/// The topmost zone cut strictly between the apex and `name` (inclusive of `name`).
fn find_cut<'z>(zone: &'z Zone, name: &[u8]) -> Option<(&'z [u8], &'z Rrset)> {
    let mut found = None;
    let mut cur = name;
    while cur.len() > zone.apex.len() {
        if let Some((k, node)) = zone.node_with_name(cur) {
            if let Some(ns) = node.get(rtype::NS) {
                found = Some((k, ns));
            }
        }
        match name::parent(cur) {
            Some(p) => cur = p,
            None => break,
        }
    }
    found
}

fn additional(b: &mut Builder<'_>, zone: &Zone, targets: &[&[u8]], below: Option<&[u8]>) {
    for (i, t) in targets.iter().enumerate() {
        if targets.get(..i).is_some_and(|prev| prev.contains(t)) {
            continue;
        }
        if !name::is_within(t, below.unwrap_or(&zone.apex)) {
            continue;
        }
        if let Some(node) = zone.node(t) {
            for ty in [rtype::A, rtype::AAAA] {
                if let Some(set) = node.get(ty) {
                    b.rrset(t, set);
                }
            }
        }
    }
}

fn lookup(zone: &Zone, q: &Query, transport: Transport) -> Vec<u8> {
    let mut b = Builder::new(q, true);
    let mut wildcard_buf = Vec::new();
    let mut current: Vec<u8> = q.qname.clone();
    let mut visited: Vec<Vec<u8>> = Vec::new();
    let mut targets: Vec<&[u8]> = Vec::new();
    let mut rcode = rcode::NOERROR;
    let mut aa = true;
    let mut cut_below: Option<&[u8]> = None;
    for step in 0..=MAX_CHAIN {
        if zone.has_cuts {
            if let Some((cut, ns)) = find_cut(zone, &current) {
                // Referral: not authoritative below the cut (unless a CNAME led here).
                aa = step > 0;
                b.next_section();
                b.rrset(cut, ns);
                b.next_section();
                targets.extend(ns.targets.iter().map(|t| &t[..]));
                cut_below = Some(cut);
                break;
            }
        }
        let Some(node) = find_node(zone, &current, &mut wildcard_buf) else {
            rcode = rcode::NXDOMAIN;
            b.next_section();
            b.record(&zone.apex, &zone.negative_soa);
            b.next_section();
            break;
        };
        // A CNAME is itself the answer to CNAME and ANY queries (RFC 1034 §4.3.2).
        let cname = if matches!(q.qtype, rtype::CNAME | rtype::ANY) {
            None
        } else {
            node.get(rtype::CNAME)
        };
        match cname {
            None => {
                let mut sets: Vec<&Rrset> = Vec::new();
                if q.qtype == rtype::ANY {
                    // RFC 8482: one RRset (the lowest type, as Knot does), on every transport.
                    sets.extend(node.rrsets.first());
                } else {
                    sets.extend(node.get(q.qtype));
                }
                b.next_section();
                if sets.is_empty() {
                    b.record(&zone.apex, &zone.negative_soa);
                } else {
                    b.section = 0;
                    for s in sets {
                        b.rrset(&current, s);
                        if matches!(s.rtype, rtype::SRV | rtype::MX | rtype::NS) {
                            targets.extend(s.targets.iter().map(|t| &t[..]));
                        }
                    }
                    b.section = 1;
                }
                b.next_section();
                break;
            }
            Some(c) => {
                b.rrset(&current, c);
                let Some(target) = c.targets.first() else {
                    b.section = 2;
                    break;
                };
                visited.push(std::mem::take(&mut current));
                if !name::is_within(target, &zone.apex)
                    || visited.iter().any(|v| v[..] == target[..])
                    || step == MAX_CHAIN
                {
                    b.section = 2;
                    break;
                }
                current = target.to_vec();
            }
        }
    }
    let mark = (b.buf.len(), b.counts);
    b.section = 2;
    additional(&mut b, zone, &targets, cut_below);
    b.finish(u16::from(rcode), aa, limit(q, transport), mark)
}

/// Answers `msg` over UDP from a client with no extra rights: a convenience for tests and tools.
pub fn answer_bytes(index: &ZoneIndex, msg: &[u8]) -> Option<Vec<u8>> {
    let ctx = Context {
        transport: Transport::Udp,
        may_recurse: false,
        may_transfer: false,
    };
    match answer(index, msg, &ctx, &mut Query::default()) {
        Outcome::Reply(r) => Some(r),
        _ => None,
    }
}
