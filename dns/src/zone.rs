//! The zone index: for every site, its forward zone (`internal_domain`) and the reverse zone of
//! its subnet, built from the snapshot's [`SiteView`] into hash maps from lower-case wire names to
//! pre-encoded RRsets. Queries only read it; a change builds new zones for the sites whose serial
//! or settings changed and swaps the whole [`ZoneIndex`] in.
//!
//! Architecture Invariant: a query never touches PostgreSQL nor allocates per record; everything a
//! response copies (record type, class, TTL, RDATA) is encoded here once.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use siteward_store::{Naming, SiteId, SiteView};

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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone, Default)]
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
    /// Every name in the zone, including empty non-terminals.
    pub nodes: NameMap<Node>,
    /// SOA serial.
    pub serial: u32,
    /// The SOA record for negative answers: TTL = min(SOA TTL, minimum) (RFC 2308 §3).
    pub negative_soa: Box<[u8]>,
    /// Whether some name below the apex has NS records (a zone cut).
    pub has_cuts: bool,
    /// Whether some name's first label is `*`.
    pub has_wildcards: bool,
    /// What it was built from, to tell whether a rebuild is needed.
    fingerprint: Fingerprint,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    serial: i64,
    domain: String,
    subnet: Option<ipnetwork::Ipv4Network>,
    settings: ZoneSettings,
}

impl Zone {
    /// The apex SOA RRset.
    pub fn soa(&self) -> Option<&Rrset> {
        self.nodes.get(&*self.apex).and_then(|n| n.get(rtype::SOA))
    }

    /// Every RRset of the zone: apex SOA first, then the others in name order (for AXFR and
    /// zone files).
    pub fn rrsets_for_transfer(&self) -> Vec<(&[u8], &Rrset)> {
        let mut names: Vec<&Box<[u8]>> = self.nodes.keys().collect();
        names.sort_by(|a, b| canonical_cmp(a, b));
        let mut out = Vec::new();
        for n in names {
            if let Some(node) = self.nodes.get(n) {
                for rr in &node.rrsets {
                    out.push((&n[..], rr));
                }
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

/// Builder of one zone.
struct ZoneBuilder {
    apex: Vec<u8>,
    nodes: NameMap<Node>,
    sources: NameMap<Source>,
}

impl ZoneBuilder {
    fn new(apex: Vec<u8>) -> Self {
        Self {
            apex,
            nodes: NameMap::default(),
            sources: NameMap::default(),
        }
    }

    /// Adds one record from `source`, unless another source holds its owner name already.
    fn add_from(&mut self, source: Source, owner: &[u8], t: u16, ttl: u32, parsed: rdata::Parsed) {
        match self.sources.get(owner) {
            Some(holder) if !source.may_join(*holder) => {
                tracing::warn!(name = %name::to_text(owner), ?source, holder = ?holder,
                    "name already held by another source in the zone; record skipped");
                return;
            }
            Some(_) => {}
            None => {
                self.sources.insert(owner.into(), source);
            }
        }
        self.add(owner, t, ttl, parsed);
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

    fn finish(mut self, site: SiteId, serial: u32, minimum: u32, fp: Fingerprint) -> Zone {
        // A CNAME cannot share its name with other data (RFC 1034 §3.6.2): the other static data
        // (or the name servers' glue) wins and the CNAME is dropped. The database refuses both
        // since migration 0012; this keeps older rows harmless.
        for (owner, node) in self.nodes.iter_mut() {
            if node.rrsets.len() > 1 && node.get(rtype::CNAME).is_some() {
                tracing::warn!(name = %name::to_text(owner), "CNAME beside other data dropped");
                node.rrsets.retain(|r| r.rtype != rtype::CNAME);
            }
        }
        // Empty non-terminals: every ancestor up to the apex exists.
        let owners: Vec<Box<[u8]>> = self.nodes.keys().cloned().collect();
        let mut has_cuts = false;
        let mut has_wildcards = false;
        for owner in owners {
            if owner.get(1) == Some(&b'*') && owner.first() == Some(&1) {
                has_wildcards = true;
            }
            if &*owner != self.apex.as_slice()
                && self
                    .nodes
                    .get(&owner)
                    .is_some_and(|n| n.get(rtype::NS).is_some())
            {
                has_cuts = true;
            }
            let mut cur: &[u8] = &owner;
            while let Some(p) = name::parent(cur) {
                if p.len() < self.apex.len() {
                    break;
                }
                if !self.nodes.contains_key(p) {
                    self.nodes.insert(p.into(), Node::default());
                }
                if p == self.apex.as_slice() {
                    break;
                }
                cur = p;
            }
        }
        for node in self.nodes.values_mut() {
            for set in &mut node.rrsets {
                set.encode();
            }
        }
        let negative_soa = self
            .nodes
            .get(self.apex.as_slice())
            .and_then(|n| n.get(rtype::SOA))
            .and_then(|s| {
                s.rdatas
                    .first()
                    .map(|rd| encode_record(rtype::SOA, s.ttl.min(minimum), rd))
            })
            .unwrap_or_default();
        Zone {
            site,
            apex: self.apex.into_boxed_slice(),
            nodes: self.nodes,
            serial,
            negative_soa,
            has_cuts,
            has_wildcards,
            fingerprint: fp,
        }
    }
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

fn apex_records(
    b: &mut ZoneBuilder,
    settings: &ZoneSettings,
    forward: &[u8],
    serial: u32,
) -> Result<(), Error> {
    let apex = b.apex.clone();
    b.add(
        &apex,
        rtype::SOA,
        settings.soa_ttl,
        plain(soa_rdata(settings, forward, &apex, serial)?),
    );
    for ns in &settings.nameservers {
        let n = name::parse_text(ns, forward)?;
        b.add(&apex, rtype::NS, settings.ns_ttl, named(n.clone()));
        // A name server's own name in the zone is held for it, glue or not.
        if name::is_within(&n, &b.apex) && !b.sources.contains_key(n.as_slice()) {
            b.sources
                .insert(n.clone().into_boxed_slice(), Source::NameServers);
        }
        if let (Some(addr), false) = (settings.nameserver_address, ns.ends_with('.')) {
            b.add_from(
                Source::NameServers,
                &n,
                rtype::A,
                settings.ns_ttl,
                plain(addr.octets().to_vec()),
            );
        }
    }
    b.sources
        .insert(apex.clone().into_boxed_slice(), Source::NameServers);
    Ok(())
}

/// Builds the forward zone of a site.
pub fn build_forward(view: &SiteView, settings: &ZoneSettings) -> Result<Zone, Error> {
    let site = &view.site;
    let apex = name::parse_text(&format!("{}.", site.internal_domain), &[0])?;
    let serial = serial_of(site.dns_serial);
    let mut b = ZoneBuilder::new(apex.clone());
    apex_records(&mut b, settings, &apex, serial)?;
    let ttl = settings.record_ttl;
    // In precedence order (see `Source`): nodes, static records, DNS services, containers.
    for node in &view.nodes {
        if let (Some(a), Ok(owner)) = (node.ipv4_address, name::parse_text(&node.name, &apex)) {
            b.add_from(
                Source::Node,
                &owner,
                rtype::A,
                ttl,
                plain(a.octets().to_vec()),
            );
        }
    }
    for r in &view.records {
        let parsed = rdata::type_from_str(&r.rtype)
            .ok_or_else(|| Error::BadRecord(format!("type `{}`", r.rtype)));
        let owner = name::parse_text(&r.name, &apex);
        match (parsed, owner) {
            (Ok(t), Ok(owner)) => match rdata::parse(t, &r.value, &apex) {
                Ok(p) => b.add_from(
                    Source::Static,
                    &owner,
                    t,
                    u32::try_from(r.ttl).unwrap_or(0),
                    p,
                ),
                Err(e) => tracing::warn!(record = r.id.0, error = %e, "static record skipped"),
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(record = r.id.0, error = %e, "static record skipped")
            }
        }
    }
    let hostnames: HashMap<_, _> = view
        .containers
        .iter()
        .map(|c| (c.id, c.hostname.as_str()))
        .collect();
    for svc in &view.dns_services {
        let Some(host) = hostnames.get(&svc.container_id) else {
            continue;
        };
        let (Ok(owner), Ok(target), Ok(port)) = (
            name::parse_text(&svc.service_name, &apex),
            name::parse_text(host, &apex),
            u16::try_from(svc.container_port),
        ) else {
            tracing::warn!(service = %svc.service_name, "SRV record skipped: bad name or port");
            continue;
        };
        b.add_from(
            Source::Service,
            &owner,
            rtype::SRV,
            ttl,
            rdata::Parsed {
                rdata: rdata::srv(10, 10, port, &target),
                target: Some(target),
            },
        );
    }
    for c in &view.containers {
        if let (Some(a), Ok(owner)) = (c.ipv4_address, name::parse_text(&c.hostname, &apex)) {
            b.add_from(
                Source::Container,
                &owner,
                rtype::A,
                ttl,
                plain(a.octets().to_vec()),
            );
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
    let site = &view.site;
    let Some(net) = site.subnet() else {
        return Ok(None);
    };
    let Some((apex, prefix)) = reverse_apex(net) else {
        return Ok(None);
    };
    let zone_net = ipnetwork::Ipv4Network::new(net.network(), prefix)
        .map_err(|e| Error::BadRecord(e.to_string()))?;
    let forward = name::parse_text(&format!("{}.", site.internal_domain), &[0])?;
    let serial = serial_of(site.dns_serial);
    let mut b = ZoneBuilder::new(apex);
    apex_records(&mut b, settings, &forward, serial)?;
    let hosts = view
        .nodes
        .iter()
        .map(|n| (n.ipv4_address, n.name.as_str()))
        .chain(
            view.containers
                .iter()
                .map(|c| (c.ipv4_address, c.hostname.as_str())),
        );
    for (addr, host) in hosts {
        let Some(addr) = addr.filter(|a| zone_net.contains(*a)) else {
            continue;
        };
        if let Ok(target) = name::parse_text(host, &forward) {
            b.add(
                &reverse_name(addr),
                rtype::PTR,
                settings.record_ttl,
                named(target),
            );
        }
    }
    Ok(Some(b.finish(
        site.id,
        serial,
        settings.minimum,
        fingerprint(view, settings),
    )))
}

fn fingerprint(view: &SiteView, settings: &ZoneSettings) -> Fingerprint {
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
        let mut index = ZoneIndex::default();
        for view in naming.sites.values() {
            let fp = fingerprint(view, settings);
            let reused: Vec<Arc<Zone>> = old
                .remove(&view.site.id)
                .unwrap_or_default()
                .into_iter()
                .filter(|z| z.fingerprint == fp)
                .collect();
            let subnet = view.site.subnet().map(IpNetwork::V4);
            index.site_subnets.extend(subnet);
            index
                .forwarders
                .push((subnet, view.site.dns_forwarders.clone()));
            let zones: Vec<Arc<Zone>> = if !reused.is_empty() {
                reused
            } else {
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
            };
            for z in zones {
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
