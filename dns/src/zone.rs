//! The zone index: for every site, its forward zone (`internal_domain`) and the reverse zone of
//! its subnet, built from the snapshot's [`SiteView`] into hash maps from lower-case wire names to
//! pre-encoded RRsets. Queries only read it; a change makes new zones for the sites it touched
//! (patched name by name, see [`crate::patch`], or built whole) and swaps the [`ZoneIndex`] in.
//!
//! Architecture Invariant: a query never touches PostgreSQL nor allocates per record; everything a
//! response copies (record type, class, TTL, RDATA) is encoded here once.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use siteward_store::{
    Container, ContainerId, DnsRecord, DnsRecordId, DnsService, Naming, NodeId, ServiceId, SiteId,
    SiteView,
};

use crate::journal::Journal;
use crate::name;
use crate::rdata::{self, rtype};
use crate::Error;

/// FNV-1a: names are short, and lookups (the hot path) need a cheap hash. Keys are inserted from
/// the database only, so hash flooding by clients is not a concern.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A map keyed by wire names.
pub type NameMap<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<Fnv>>;

/// What the zones are made of besides the database: SOA fields, name servers, TTLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// Name servers of every zone; the first is the SOA MNAME. Names without a trailing dot are
    /// relative to the site's forward zone.
    pub nameservers: Vec<String>,
    /// When set, relative name server names get this A record (glue) in the forward zone.
    pub nameserver_address: Option<Ipv4Addr>,
    /// SOA RNAME (`hostmaster` = `hostmaster.<zone>`); relative to the zone if no trailing dot.
    pub hostmaster: String,
    /// SOA record TTL.
    pub soa_ttl: u32,
    /// SOA refresh.
    pub refresh: u32,
    /// SOA retry.
    pub retry: u32,
    /// SOA expire.
    pub expire: u32,
    /// SOA minimum (negative-caching TTL, RFC 2308).
    pub minimum: u32,
    /// TTL of NS records.
    pub ns_ttl: u32,
    /// TTL of container, node, SRV and PTR records.
    pub record_ttl: u32,
}

impl Default for ZoneSettings {
    fn default() -> Self {
        Self {
            nameservers: vec!["ns1".into()],
            nameserver_address: None,
            hostmaster: "hostmaster".into(),
            soa_ttl: 3600,
            refresh: 3600,
            retry: 600,
            expire: 604_800,
            minimum: 60,
            ns_ttl: 3600,
            record_ttl: 60,
        }
    }
}

/// One RRset, its records pre-encoded without their owner name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rrset {
    /// Record type.
    pub rtype: u16,
    /// TTL (the minimum of the records', RFC 2181 §5.2).
    pub ttl: u32,
    /// Wire RDATA of each record, deduplicated, in insertion order.
    pub rdatas: Vec<Vec<u8>>,
    /// Each record as `type class ttl rdlength rdata`, ready to follow an owner name.
    pub encoded: Vec<Box<[u8]>>,
    /// Target names (lower-case wire) for CNAME chains and additional sections.
    pub targets: Vec<Box<[u8]>>,
}

impl Rrset {
    fn new(rtype: u16, ttl: u32) -> Self {
        Self {
            rtype,
            ttl,
            rdatas: Vec::new(),
            encoded: Vec::new(),
            targets: Vec::new(),
        }
    }

    fn encode(&mut self) {
        self.encoded = self
            .rdatas
            .iter()
            .map(|rd| encode_record(self.rtype, self.ttl, rd))
            .collect();
    }
}

/// `type class(IN) ttl rdlength rdata`.
pub fn encode_record(t: u16, ttl: u32, rdata: &[u8]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(10 + rdata.len());
    out.extend_from_slice(&t.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
    out.into_boxed_slice()
}

/// A name in a zone: its RRsets (sorted by type); none for an empty non-terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// RRsets by ascending type.
    pub rrsets: Vec<Rrset>,
}

impl Node {
    /// The RRset of type `t`.
    pub fn get(&self, t: u16) -> Option<&Rrset> {
        self.rrsets.iter().find(|r| r.rtype == t)
    }
}

/// One authoritative zone.
#[derive(Debug)]
pub struct Zone {
    /// The site it belongs to.
    pub site: SiteId,
    /// Apex, lower-case wire.
    pub apex: Box<[u8]>,
    /// Every name in the zone, including empty non-terminals, as of the last compaction ...
    pub(crate) base: Arc<NameMap<Arc<Node>>>,
    /// ... and the names patched since (`None`: removed). Lookups read this first.
    pub(crate) overlay: Arc<NameMap<Option<Arc<Node>>>>,
    /// SOA serial.
    pub serial: u32,
    /// The SOA record for negative answers: TTL = min(SOA TTL, minimum) (RFC 2308 §3).
    pub negative_soa: Box<[u8]>,
    /// Whether some name below the apex has NS records (a zone cut).
    pub has_cuts: bool,
    /// Whether some name's first label is `*`.
    pub has_wildcards: bool,
    /// What it was built from, to tell whether a rebuild is needed.
    pub(crate) fingerprint: Fingerprint,
    /// The recent deltas that led to this version, for IXFR.
    pub journal: Journal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) serial: i64,
    domain: String,
    subnet: Option<ipnetwork::Ipv4Network>,
    settings: ZoneSettings,
}

impl Fingerprint {
    /// Whether only the serial differs (the zone can be patched rather than built).
    pub(crate) fn same_but_serial(&self, other: &Fingerprint) -> bool {
        self.domain == other.domain
            && self.subnet == other.subnet
            && self.settings == other.settings
    }
}

impl Zone {
    /// The node of `name` (lower-case wire), empty non-terminals included.
    pub fn node(&self, name: &[u8]) -> Option<&Node> {
        self.node_with_name(name).map(|(_, n)| n)
    }

    /// The node of `name` with the zone's copy of the name.
    pub fn node_with_name(&self, name: &[u8]) -> Option<(&[u8], &Node)> {
        if !self.overlay.is_empty() {
            if let Some((k, n)) = self.overlay.get_key_value(name) {
                return n.as_deref().map(|n| (&k[..], n));
            }
        }
        self.base.get_key_value(name).map(|(k, n)| (&k[..], &**n))
    }

    /// Whether `name` exists in the zone.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.node(name).is_some()
    }

    /// Every name of the zone with its node, in no particular order.
    pub fn nodes(&self) -> Vec<(&[u8], &Node)> {
        let mut out: Vec<(&[u8], &Node)> = self
            .base
            .iter()
            .filter(|(k, _)| !self.overlay.contains_key(&k[..]))
            .map(|(k, n)| (&k[..], &**n))
            .collect();
        out.extend(
            self.overlay
                .iter()
                .filter_map(|(k, n)| n.as_deref().map(|n| (&k[..], n))),
        );
        out
    }

    /// The apex SOA RRset.
    pub fn soa(&self) -> Option<&Rrset> {
        self.apex_node().and_then(|n| n.get(rtype::SOA))
    }

    /// The apex node.
    pub fn apex_node(&self) -> Option<&Node> {
        self.node(&self.apex)
    }

    /// Every RRset of the zone: apex SOA first, then the others in name order (for AXFR and
    /// zone files).
    pub fn rrsets_for_transfer(&self) -> Vec<(&[u8], &Rrset)> {
        let mut names = self.nodes();
        names.sort_by(|a, b| canonical_cmp(a.0, b.0));
        let mut out = Vec::new();
        for (n, node) in names {
            for rr in &node.rrsets {
                out.push((n, rr));
            }
        }
        out.sort_by_key(|(n, rr)| !(*n == &*self.apex && rr.rtype == rtype::SOA));
        out
    }
}

/// Canonical (RFC 4034 §6.1) order of two lower-case wire names.
pub fn canonical_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let la: Vec<&[u8]> = name::labels(a).collect();
    let lb: Vec<&[u8]> = name::labels(b).collect();
    la.iter().rev().cmp(lb.iter().rev())
}

/// Where the records of a name come from. A name has one source (static records and the name
/// servers' glue may share): the database refuses a second owner (migration
/// `0012_dns_names.sql`); rows older than that rule are skipped here, so a name a user chose never
/// joins an RRset an admin or the name servers own. Sources are added in precedence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// SOA, NS and the name servers' glue.
    NameServers,
    /// A node's A record.
    Node,
    /// Static records (`dns_records`), CNAMEs included (see [`ZoneBuilder::finish`]).
    Static,
    /// SRV records of DNS services.
    Service,
    /// A container's A record.
    Container,
}

impl Source {
    fn may_join(self, holder: Source) -> bool {
        self == holder
            || matches!(
                (self, holder),
                (Source::Static, Source::NameServers) | (Source::NameServers, Source::Static)
            )
    }
}

/// The row a record of a zone comes from. The order (variant, then id) is the order a zone is
/// built in, so it decides which source holds a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Contrib {
    /// The zone settings (SOA, NS, glue).
    NameServers,
    /// A node.
    Node(NodeId),
    /// A static record.
    Static(DnsRecordId),
    /// A DNS service's SRV record.
    Service(ServiceId),
    /// A container.
    Container(ContainerId),
}

impl Contrib {
    fn source(self) -> Source {
        match self {
            Contrib::NameServers => Source::NameServers,
            Contrib::Node(_) => Source::Node,
            Contrib::Static(_) => Source::Static,
            Contrib::Service(_) => Source::Service,
            Contrib::Container(_) => Source::Container,
        }
    }
}

/// One record a row puts in a zone: owner, type, TTL, RDATA.
pub(crate) struct Record {
    pub(crate) owner: Vec<u8>,
    pub(crate) rtype: u16,
    pub(crate) ttl: u32,
    pub(crate) parsed: rdata::Parsed,
}

/// Who contributes to each name of a zone, and the counts that decide empty non-terminals,
/// wildcards and cuts: what [`crate::patch`] needs to recompute one name without the others.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    /// The rows with a record at each name (held or not), in build order.
    pub(crate) by_name: NameMap<Vec<Contrib>>,
    /// For each name, how many names with records lie strictly below it.
    pub(crate) below: NameMap<u32>,
    /// Names with records whose first label is `*`.
    pub(crate) wildcards: usize,
    /// Names below the apex with NS records.
    pub(crate) cuts: usize,
}

impl Owners {
    fn note(&mut self, owner: &[u8], c: Contrib) {
        let list = self.by_name.entry(owner.into()).or_default();
        if let Err(i) = list.binary_search(&c) {
            list.insert(i, c);
        }
    }
}

/// Builder of one zone (or, for a patch, of one of its names).
pub(crate) struct ZoneBuilder {
    apex: Vec<u8>,
    nodes: NameMap<Node>,
    sources: NameMap<Source>,
    owners: Owners,
}

impl ZoneBuilder {
    pub(crate) fn new(apex: Vec<u8>) -> Self {
        Self {
            apex,
            nodes: NameMap::default(),
            sources: NameMap::default(),
            owners: Owners::default(),
        }
    }

    /// Adds one record of row `c`, unless another source holds its owner name already.
    pub(crate) fn add_from(&mut self, c: Contrib, r: Record) {
        if !name::is_within(&r.owner, &self.apex) {
            return;
        }
        self.owners.note(&r.owner, c);
        let source = c.source();
        match self.sources.get(r.owner.as_slice()) {
            Some(holder) if !source.may_join(*holder) => {
                tracing::warn!(name = %name::to_text(&r.owner), ?source, holder = ?holder,
                    "name already held by another source in the zone; record skipped");
                return;
            }
            Some(_) => {}
            None => {
                self.sources.insert(r.owner.clone().into(), source);
            }
        }
        self.add(&r.owner, r.rtype, r.ttl, r.parsed);
    }

    /// Adds a record of row `c` whatever holds its name (PTR records).
    pub(crate) fn add_any(&mut self, c: Contrib, r: Record) {
        if name::is_within(&r.owner, &self.apex) {
            self.owners.note(&r.owner, c);
            self.add(&r.owner, r.rtype, r.ttl, r.parsed);
        }
    }

    /// Adds one record; duplicates are dropped, an RRset's TTL is its records' minimum.
    fn add(&mut self, owner: &[u8], t: u16, ttl: u32, parsed: rdata::Parsed) {
        if !name::is_within(owner, &self.apex) {
            return;
        }
        let node = self.nodes.entry(owner.into()).or_default();
        let set = match node.rrsets.iter().position(|r| r.rtype == t) {
            Some(i) => &mut node.rrsets[i],
            None => {
                node.rrsets.push(Rrset::new(t, ttl));
                node.rrsets.sort_by_key(|r| r.rtype);
                match node.rrsets.iter_mut().find(|r| r.rtype == t) {
                    Some(s) => s,
                    None => return,
                }
            }
        };
        set.ttl = set.ttl.min(ttl);
        if set.rdatas.contains(&parsed.rdata) {
            return;
        }
        set.rdatas.push(parsed.rdata);
        if let Some(target) = parsed.target {
            set.targets.push(target.into_boxed_slice());
        }
    }

    /// Applies the zone settings' records; with `only`, just those owned by that name.
    pub(crate) fn apex_ops(&mut self, ops: &[ApexOp], only: Option<&[u8]>) {
        for op in ops {
            let owner = match op {
                ApexOp::Add(o, ..)
                | ApexOp::Glue(o, ..)
                | ApexOp::Hold(o)
                | ApexOp::HoldApex(o) => o.as_slice(),
            };
            if only.is_some_and(|n| n != owner) {
                continue;
            }
            if name::is_within(owner, &self.apex) {
                self.owners.note(owner, Contrib::NameServers);
            }
            match op {
                ApexOp::Add(o, t, ttl, p) => self.add(o, *t, *ttl, p.clone()),
                ApexOp::Hold(o) => {
                    if !self.sources.contains_key(o.as_slice()) {
                        self.sources.insert(o.clone().into(), Source::NameServers);
                    }
                }
                ApexOp::HoldApex(o) => {
                    self.sources.insert(o.clone().into(), Source::NameServers);
                }
                ApexOp::Glue(o, t, ttl, p) => self.add_from(
                    Contrib::NameServers,
                    Record {
                        owner: o.clone(),
                        rtype: *t,
                        ttl: *ttl,
                        parsed: p.clone(),
                    },
                ),
            }
        }
    }

    /// The finished node of one name (a patch builds one name at a time): the CNAME rule
    /// applied, records encoded.
    pub(crate) fn take_node(&mut self, owner: &[u8]) -> Node {
        let mut node = self.nodes.remove(owner).unwrap_or_default();
        finish_node(owner, &mut node);
        node
    }

    fn finish(
        mut self,
        site: SiteId,
        serial: u32,
        minimum: u32,
        fp: Fingerprint,
    ) -> (Zone, Owners) {
        let owners: Vec<Box<[u8]>> = self.nodes.keys().cloned().collect();
        for (owner, node) in self.nodes.iter_mut() {
            finish_node(owner, node);
        }
        // Empty non-terminals: every ancestor up to the apex exists.
        for owner in owners {
            let node = self.nodes.get(&owner);
            self.owners.wildcards += usize::from(is_wildcard(&owner));
            self.owners.cuts += usize::from(is_cut(&owner, &self.apex, node));
            let mut cur: &[u8] = &owner;
            while let Some(p) = name::parent(cur) {
                if p.len() < self.apex.len() {
                    break;
                }
                if !self.nodes.contains_key(p) {
                    self.nodes.insert(p.into(), Node::default());
                }
                *self.owners.below.entry(p.into()).or_default() += 1;
                if p == self.apex.as_slice() {
                    break;
                }
                cur = p;
            }
        }
        let negative_soa = negative_soa(self.nodes.get(self.apex.as_slice()), minimum);
        let base: NameMap<Arc<Node>> = self
            .nodes
            .into_iter()
            .map(|(k, n)| (k, Arc::new(n)))
            .collect();
        let zone = Zone {
            site,
            apex: self.apex.into_boxed_slice(),
            base: Arc::new(base),
            overlay: Arc::default(),
            serial,
            negative_soa,
            has_cuts: self.owners.cuts > 0,
            has_wildcards: self.owners.wildcards > 0,
            fingerprint: fp,
            journal: Journal::default(),
        };
        (zone, self.owners)
    }
}

/// A CNAME cannot share its name with other data (RFC 1034 §3.6.2): the other static data (or
/// the name servers' glue) wins and the CNAME is dropped. The database refuses both since
/// migration 0012; this keeps older rows harmless. Then the records are encoded.
fn finish_node(owner: &[u8], node: &mut Node) {
    if node.rrsets.len() > 1 && node.get(rtype::CNAME).is_some() {
        tracing::warn!(name = %name::to_text(owner), "CNAME beside other data dropped");
        node.rrsets.retain(|r| r.rtype != rtype::CNAME);
    }
    for set in &mut node.rrsets {
        set.encode();
    }
}

/// Whether a name's first label is `*`.
pub(crate) fn is_wildcard(owner: &[u8]) -> bool {
    owner.first() == Some(&1) && owner.get(1) == Some(&b'*')
}

/// Whether a name with records is a zone cut (NS below the apex).
pub(crate) fn is_cut(owner: &[u8], apex: &[u8], node: Option<&Node>) -> bool {
    owner != apex && node.is_some_and(|n| n.get(rtype::NS).is_some())
}

/// The SOA record for negative answers, from the apex node.
pub(crate) fn negative_soa(apex: Option<&Node>, minimum: u32) -> Box<[u8]> {
    apex.and_then(|n| n.get(rtype::SOA))
        .and_then(|s| {
            s.rdatas
                .first()
                .map(|rd| encode_record(rtype::SOA, s.ttl.min(minimum), rd))
        })
        .unwrap_or_default()
}

/// The reverse zone (`in-addr.arpa`) of a subnet, at the octet boundary at or above its prefix
/// (a /20 gets the /16 zone; classless RFC 2317 delegation is not done). None below /8.
pub fn reverse_apex(net: ipnetwork::Ipv4Network) -> Option<(Vec<u8>, u8)> {
    let octets = (net.prefix() / 8).min(3) as usize;
    if octets == 0 {
        return None;
    }
    let o = net.network().octets();
    let mut text = String::new();
    for i in (0..octets).rev() {
        text.push_str(&format!("{}.", o[i]));
    }
    text.push_str("in-addr.arpa.");
    Some((name::parse_text(&text, &[0]).ok()?, (octets * 8) as u8))
}

/// `d.c.b.a.in-addr.arpa.` of an address.
pub fn reverse_name(a: Ipv4Addr) -> Vec<u8> {
    let mut out = Vec::with_capacity(30);
    for o in a.octets().iter().rev() {
        let digits = o.to_string();
        out.push(digits.len() as u8);
        out.extend_from_slice(digits.as_bytes());
    }
    out.extend_from_slice(b"\x07in-addr\x04arpa\x00");
    out
}

fn soa_rdata(
    settings: &ZoneSettings,
    forward: &[u8],
    zone: &[u8],
    serial: u32,
) -> Result<Vec<u8>, Error> {
    let mname = name::parse_text(
        settings.nameservers.first().map_or("ns1", String::as_str),
        forward,
    )?;
    let rname = name::parse_text(&settings.hostmaster, zone)?;
    let mut rd = mname;
    rd.extend_from_slice(&rname);
    for v in [
        serial,
        settings.refresh,
        settings.retry,
        settings.expire,
        settings.minimum,
    ] {
        rd.extend_from_slice(&v.to_be_bytes());
    }
    Ok(rd)
}

fn plain(rdata: Vec<u8>) -> rdata::Parsed {
    rdata::Parsed {
        rdata,
        target: None,
    }
}

fn named(n: Vec<u8>) -> rdata::Parsed {
    rdata::Parsed {
        rdata: n.clone(),
        target: Some(n),
    }
}

/// What the zone settings put in a zone, in order.
pub(crate) enum ApexOp {
    /// A record at the apex (SOA, NS).
    Add(Vec<u8>, u16, u32, rdata::Parsed),
    /// A name server's own name, held for it unless held already.
    Hold(Vec<u8>),
    /// A name server's glue A record.
    Glue(Vec<u8>, u16, u32, rdata::Parsed),
    /// The apex, held for the name servers.
    HoldApex(Vec<u8>),
}

/// The zone settings' records of the zone at `apex` (`forward` is the site's forward apex).
pub(crate) fn apex_ops(
    settings: &ZoneSettings,
    forward: &[u8],
    apex: &[u8],
    serial: u32,
) -> Result<Vec<ApexOp>, Error> {
    let mut ops = vec![ApexOp::Add(
        apex.to_vec(),
        rtype::SOA,
        settings.soa_ttl,
        plain(soa_rdata(settings, forward, apex, serial)?),
    )];
    for ns in &settings.nameservers {
        let n = name::parse_text(ns, forward)?;
        ops.push(ApexOp::Add(
            apex.to_vec(),
            rtype::NS,
            settings.ns_ttl,
            named(n.clone()),
        ));
        // A name server's own name in the zone is held for it, glue or not.
        if name::is_within(&n, apex) {
            ops.push(ApexOp::Hold(n.clone()));
        }
        if let (Some(addr), false) = (settings.nameserver_address, ns.ends_with('.')) {
            ops.push(ApexOp::Glue(
                n,
                rtype::A,
                settings.ns_ttl,
                plain(addr.octets().to_vec()),
            ));
        }
    }
    ops.push(ApexOp::HoldApex(apex.to_vec()));
    Ok(ops)
}

/// A node's A record.
pub(crate) fn node_record(n: &siteward_store::Node, apex: &[u8], ttl: u32) -> Option<Record> {
    let (Some(a), Ok(owner)) = (n.ipv4_address, name::parse_text(&n.name, apex)) else {
        return None;
    };
    Some(Record {
        owner,
        rtype: rtype::A,
        ttl,
        parsed: plain(a.octets().to_vec()),
    })
}

/// A static record, if it parses.
pub(crate) fn static_record(r: &DnsRecord, apex: &[u8]) -> Option<Record> {
    let parsed = rdata::type_from_str(&r.rtype)
        .ok_or_else(|| Error::BadRecord(format!("type `{}`", r.rtype)))
        .and_then(|t| Ok((t, name::parse_text(&r.name, apex)?)))
        .and_then(|(t, owner)| Ok((t, owner, rdata::parse(t, &r.value, apex)?)));
    match parsed {
        Ok((rtype, owner, parsed)) => Some(Record {
            owner,
            rtype,
            ttl: u32::try_from(r.ttl).unwrap_or(0),
            parsed,
        }),
        Err(e) => {
            tracing::warn!(record = r.id.0, error = %e, "static record skipped");
            None
        }
    }
}

/// A DNS service's SRV record, pointing at its container's `host`.
pub(crate) fn service_record(
    svc: &DnsService,
    host: Option<&str>,
    apex: &[u8],
    ttl: u32,
) -> Option<Record> {
    let host = host?;
    let (Ok(owner), Ok(target), Ok(port)) = (
        name::parse_text(&svc.service_name, apex),
        name::parse_text(host, apex),
        u16::try_from(svc.container_port),
    ) else {
        tracing::warn!(service = %svc.service_name, "SRV record skipped: bad name or port");
        return None;
    };
    Some(Record {
        owner,
        rtype: rtype::SRV,
        ttl,
        parsed: rdata::Parsed {
            rdata: rdata::srv(10, 10, port, &target),
            target: Some(target),
        },
    })
}

/// A container's A record.
pub(crate) fn container_record(c: &Container, apex: &[u8], ttl: u32) -> Option<Record> {
    let (Some(a), Ok(owner)) = (c.ipv4_address, name::parse_text(&c.hostname, apex)) else {
        return None;
    };
    Some(Record {
        owner,
        rtype: rtype::A,
        ttl,
        parsed: plain(a.octets().to_vec()),
    })
}

/// The PTR record of a host (`name` relative to the forward apex) at `addr`, when `net` holds it.
pub(crate) fn ptr_record(
    addr: Option<Ipv4Addr>,
    host: &str,
    net: ipnetwork::Ipv4Network,
    forward: &[u8],
    ttl: u32,
) -> Option<Record> {
    let addr = addr.filter(|a| net.contains(*a))?;
    let target = name::parse_text(host, forward).ok()?;
    Some(Record {
        owner: reverse_name(addr),
        rtype: rtype::PTR,
        ttl,
        parsed: named(target),
    })
}

/// The forward apex of a site.
pub(crate) fn forward_apex(site: &siteward_store::Site) -> Result<Vec<u8>, Error> {
    name::parse_text(&format!("{}.", site.internal_domain), &[0])
}

/// The reverse apex of a site and the network it covers.
pub(crate) fn reverse_of(
    site: &siteward_store::Site,
) -> Result<Option<(Vec<u8>, ipnetwork::Ipv4Network)>, Error> {
    let Some(net) = site.subnet() else {
        return Ok(None);
    };
    let Some((apex, prefix)) = reverse_apex(net) else {
        return Ok(None);
    };
    let zone_net = ipnetwork::Ipv4Network::new(net.network(), prefix)
        .map_err(|e| Error::BadRecord(e.to_string()))?;
    Ok(Some((apex, zone_net)))
}

/// Builds the forward zone of a site.
pub fn build_forward(view: &SiteView, settings: &ZoneSettings) -> Result<Zone, Error> {
    Ok(build_forward_owned(view, settings)?.0)
}

/// Builds the forward zone of a site and who contributes to each of its names.
pub(crate) fn build_forward_owned(
    view: &SiteView,
    settings: &ZoneSettings,
) -> Result<(Zone, Owners), Error> {
    let site = &view.site;
    let apex = forward_apex(site)?;
    let serial = serial_of(site.dns_serial);
    let mut b = ZoneBuilder::new(apex.clone());
    b.apex_ops(&apex_ops(settings, &apex, &apex, serial)?, None);
    let ttl = settings.record_ttl;
    // In precedence order (see `Source`): nodes, static records, DNS services, containers.
    for node in &view.nodes {
        if let Some(r) = node_record(node, &apex, ttl) {
            b.add_from(Contrib::Node(node.id), r);
        }
    }
    for r in &view.records {
        if let Some(rec) = static_record(r, &apex) {
            b.add_from(Contrib::Static(r.id), rec);
        }
    }
    let hostnames: HashMap<_, _> = view
        .containers
        .iter()
        .map(|c| (c.id, c.hostname.as_str()))
        .collect();
    for svc in &view.dns_services {
        let host = hostnames.get(&svc.container_id).copied();
        if let Some(r) = service_record(svc, host, &apex, ttl) {
            b.add_from(Contrib::Service(svc.service_id), r);
        }
    }
    for c in &view.containers {
        if let Some(r) = container_record(c, &apex, ttl) {
            b.add_from(Contrib::Container(c.id), r);
        }
    }
    Ok(b.finish(
        site.id,
        serial,
        settings.minimum,
        fingerprint(view, settings),
    ))
}

/// Builds the reverse zone of a site's subnet, if it has one.
pub fn build_reverse(view: &SiteView, settings: &ZoneSettings) -> Result<Option<Zone>, Error> {
    Ok(build_reverse_owned(view, settings)?.map(|(z, _)| z))
}

/// Builds the reverse zone of a site's subnet and who contributes to each of its names.
pub(crate) fn build_reverse_owned(
    view: &SiteView,
    settings: &ZoneSettings,
) -> Result<Option<(Zone, Owners)>, Error> {
    let site = &view.site;
    let Some((apex, zone_net)) = reverse_of(site)? else {
        return Ok(None);
    };
    let forward = forward_apex(site)?;
    let serial = serial_of(site.dns_serial);
    let mut b = ZoneBuilder::new(apex.clone());
    b.apex_ops(&apex_ops(settings, &forward, &apex, serial)?, None);
    let ttl = settings.record_ttl;
    for n in &view.nodes {
        if let Some(r) = ptr_record(n.ipv4_address, &n.name, zone_net, &forward, ttl) {
            b.add_any(Contrib::Node(n.id), r);
        }
    }
    for c in &view.containers {
        if let Some(r) = ptr_record(c.ipv4_address, &c.hostname, zone_net, &forward, ttl) {
            b.add_any(Contrib::Container(c.id), r);
        }
    }
    Ok(Some(b.finish(
        site.id,
        serial,
        settings.minimum,
        fingerprint(view, settings),
    )))
}

pub(crate) fn fingerprint(view: &SiteView, settings: &ZoneSettings) -> Fingerprint {
    Fingerprint {
        serial: view.site.dns_serial,
        domain: view.site.internal_domain.clone(),
        subnet: view.site.subnet(),
        settings: settings.clone(),
    }
}

/// The SOA serial of a database serial (RFC 1982 arithmetic wraps at 2^32).
pub fn serial_of(db: i64) -> u32 {
    (db.rem_euclid(1 << 32)) as u32
}

/// Every zone we serve, by apex.
#[derive(Debug, Default)]
pub struct ZoneIndex {
    /// Zones by lower-case wire apex.
    pub zones: NameMap<Arc<Zone>>,
    /// The distinct apex lengths, so a lookup hashes only suffixes that can match.
    apex_lens: Vec<usize>,
    /// Networks of the sites (for the default recursion allow-list).
    pub site_subnets: Vec<IpNetwork>,
    /// Each site's subnet (if any) and resolvers, in site order, for forwarding.
    pub forwarders: Vec<(Option<IpNetwork>, Vec<std::net::IpAddr>)>,
}

impl ZoneIndex {
    /// Builds the index from the snapshot, reusing zones of `previous` whose inputs (serial,
    /// domain, subnet, settings) did not change.
    pub fn build(naming: &Naming, settings: &ZoneSettings, previous: Option<&ZoneIndex>) -> Self {
        let mut old: HashMap<SiteId, Vec<Arc<Zone>>> = HashMap::new();
        if let Some(prev) = previous {
            for z in prev.zones.values() {
                old.entry(z.site).or_default().push(z.clone());
            }
        }
        Self::assemble(naming, |view| {
            let fp = fingerprint(view, settings);
            let reused: Vec<Arc<Zone>> = old
                .remove(&view.site.id)
                .unwrap_or_default()
                .into_iter()
                .filter(|z| z.fingerprint == fp)
                .collect();
            if !reused.is_empty() {
                return reused;
            }
            let mut zones = Vec::new();
            match build_forward(view, settings) {
                Ok(z) => zones.push(Arc::new(z)),
                Err(e) => tracing::error!(site = view.site.id.0, error = %e, "zone not built"),
            }
            match build_reverse(view, settings) {
                Ok(Some(z)) => zones.push(Arc::new(z)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(site = view.site.id.0, error = %e, "reverse zone not built")
                }
            }
            zones
        })
    }

    /// The index of the sites of `naming`, each served by the zones `zones_of` gives it.
    pub(crate) fn assemble(
        naming: &Naming,
        mut zones_of: impl FnMut(&SiteView) -> Vec<Arc<Zone>>,
    ) -> Self {
        let mut index = ZoneIndex::default();
        for view in naming.sites.values() {
            let subnet = view.site.subnet().map(IpNetwork::V4);
            index.site_subnets.extend(subnet);
            index
                .forwarders
                .push((subnet, view.site.dns_forwarders.clone()));
            for z in zones_of(view) {
                if index.zones.contains_key(&z.apex) {
                    tracing::warn!(zone = %name::to_text(&z.apex), site = view.site.id.0,
                        "zone already served for another site; skipped");
                    continue;
                }
                index.zones.insert(z.apex.clone(), z);
            }
        }
        let mut lens: Vec<usize> = index.zones.keys().map(|k| k.len()).collect();
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        index.apex_lens = lens;
        index
    }

    /// The resolvers for a client: its site's (by subnet), else the first site's that has any.
    pub fn forwarders_for(&self, client: std::net::IpAddr) -> &[std::net::IpAddr] {
        self.forwarders
            .iter()
            .find(|(net, f)| !f.is_empty() && net.is_some_and(|n| n.contains(client)))
            .or_else(|| self.forwarders.iter().find(|(_, f)| !f.is_empty()))
            .map_or(&[], |(_, f)| f.as_slice())
    }

    /// The zone holding `qname` (lower-case wire): the one with the longest matching apex.
    pub fn find(&self, qname: &[u8]) -> Option<&Arc<Zone>> {
        for &len in &self.apex_lens {
            if len > qname.len() {
                continue;
            }
            let start = qname.len() - len;
            let suffix = qname.get(start..)?;
            // The suffix must start at a label boundary.
            if !at_boundary(qname, start) {
                continue;
            }
            if let Some(z) = self.zones.get(suffix) {
                return Some(z);
            }
        }
        None
    }
}

/// Whether `start` is the offset of a label in the wire name `n`.
pub fn at_boundary(n: &[u8], start: usize) -> bool {
    let mut pos = 0;
    while pos < start {
        match n.get(pos) {
            Some(&len) if len > 0 => pos += 1 + len as usize,
            _ => return false,
        }
    }
    pos == start
}
