//! The zone patcher against the zone builder: random sequences of row changes, each applied as
//! a delta, must leave every zone equal, record for record, to the zones built whole from the
//! same view.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use siteward_store::{
    ContainerId, DnsRecordId, DnsService, Naming, NamingDelta, NodeId, ServiceId, SiteId, SiteView,
};

use crate::patch::Zones;
use crate::tests::{container, node, rec, site};
use crate::zone::{build_forward, build_reverse, Zone, ZoneIndex, ZoneSettings};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Few names, so that rows collide: shared owners, precedence between sources, CNAMEs beside
/// data, wildcards, cuts and empty non-terminals that come and go.
const NAMES: &[&str] = &[
    "web",
    "db",
    "ns1",
    "a.b",
    "x.a.b",
    "deep.x.a.b",
    "*.w",
    "q.w",
    "sub",
    "ns.sub",
    "mail",
    "@",
];

fn random_ip(r: &mut Rng) -> Option<Ipv4Addr> {
    match r.below(6) {
        0 => None,
        // Outside the reverse zone.
        1 => Some(Ipv4Addr::new(192, 168, 0, r.below(3) as u8)),
        _ => Some(Ipv4Addr::new(10, 1, 2, 10 + r.below(6) as u8)),
    }
}

fn random_record(r: &mut Rng, id: i64) -> siteward_store::DnsRecord {
    let name = r.pick(NAMES);
    let (t, value) = match r.below(7) {
        0 => ("A", format!("10.1.2.{}", 30 + r.below(4))),
        1 => ("TXT", format!("\"t{}\"", r.below(3))),
        2 => ("CNAME", r.pick(NAMES).replace('@', "web")),
        3 => ("NS", "ns.sub".to_string()),
        4 => ("MX", format!("{} mail", r.below(3) * 10)),
        5 => ("AAAA", "2001:db8::1".to_string()),
        _ => ("MX", "not a number".to_string()),
    };
    rec(id, name, t, &value, [60, 300, 30][r.below(3) as usize])
}

/// Applies one random change to `view`; returns the delta naming the rows it touched.
fn mutate(r: &mut Rng, view: &mut SiteView, next_id: &mut i64) -> NamingDelta {
    let mut d = NamingDelta::default();
    *next_id += 1;
    let id = *next_id;
    match r.below(12) {
        0 | 1 => {
            let c = container(id, r.pick(NAMES), random_ip(r));
            view.containers.push_back(c);
            d.containers.insert(ContainerId(id));
        }
        2 | 3 if !view.containers.is_empty() => {
            let i = r.below(view.containers.len() as u64) as usize;
            let mut c = view.containers[i].as_ref().clone();
            if r.below(2) == 0 {
                c.hostname = r.pick(NAMES).into();
            } else {
                c.ipv4_address = random_ip(r);
            }
            d.containers.insert(c.id);
            view.containers[i] = Arc::new(c);
        }
        4 if !view.containers.is_empty() => {
            let i = r.below(view.containers.len() as u64) as usize;
            let c = view.containers.remove(i);
            d.containers.insert(c.id);
            // Its services go with it (ON DELETE CASCADE).
            view.dns_services.retain(|s| {
                let keep = s.container_id != c.id;
                if !keep {
                    d.services.insert(s.service_id);
                }
                keep
            });
        }
        5 => {
            view.records.push_back(Arc::new(random_record(r, id)));
            d.dns_records.insert(DnsRecordId(id));
        }
        6 if !view.records.is_empty() => {
            let i = r.below(view.records.len() as u64) as usize;
            let old = view.records[i].id;
            if r.below(3) == 0 {
                view.records.remove(i);
            } else {
                view.records[i] = Arc::new(random_record(r, old.0));
            }
            d.dns_records.insert(old);
        }
        7 if !view.containers.is_empty() => {
            let c = &view.containers[r.below(view.containers.len() as u64) as usize];
            let svc = DnsService {
                service_id: ServiceId(id),
                container_id: c.id,
                service_name: ["_ldap._tcp", "_x._udp", "web"][r.below(3) as usize].into(),
                container_port: [389, 53, 0, 70000][r.below(4) as usize],
            };
            view.dns_services.push_back(Arc::new(svc));
            d.services.insert(ServiceId(id));
        }
        8 if !view.dns_services.is_empty() => {
            let i = r.below(view.dns_services.len() as u64) as usize;
            let sid = view.dns_services[i].service_id;
            if r.below(2) == 0 {
                view.dns_services.remove(i);
            } else if !view.containers.is_empty() {
                let c = view.containers[r.below(view.containers.len() as u64) as usize].id;
                Arc::make_mut(&mut view.dns_services[i]).container_id = c;
            }
            d.services.insert(sid);
        }
        9 => {
            let n = node(id, r.pick(NAMES), random_ip(r));
            view.nodes.push_back(n);
            d.nodes.insert(NodeId(id));
        }
        10 if !view.nodes.is_empty() => {
            let i = r.below(view.nodes.len() as u64) as usize;
            let nid = view.nodes[i].id;
            if r.below(2) == 0 {
                view.nodes.remove(i);
            } else {
                let mut n = view.nodes[i].as_ref().clone();
                n.name = r.pick(NAMES).into();
                n.ipv4_address = random_ip(r);
                view.nodes[i] = Arc::new(n);
            }
            d.nodes.insert(nid);
        }
        _ => {
            // A change elsewhere in the site (e.g. a setting): the serial alone moves.
        }
    }
    d
}

fn naming_of(view: &SiteView, version: u64, delta: Option<NamingDelta>) -> Arc<Naming> {
    let feed: Vec<Arc<NamingDelta>> = delta.map(Arc::new).into_iter().collect();
    naming_with(view, version, &feed)
}

/// A naming half as the store publishes it, with the patches that led to it (the last one made
/// it).
fn naming_with(view: &SiteView, version: u64, feed: &[Arc<NamingDelta>]) -> Arc<Naming> {
    let mut naming = Naming::default();
    Arc::make_mut(&mut naming.site_by_domain)
        .insert(view.site.internal_domain.clone(), view.site.id);
    naming.sites.insert(view.site.id, Arc::new(view.clone()));
    naming.version = version;
    naming.history = feed.iter().cloned().collect();
    Arc::new(naming)
}

/// A zone's contents, comparable: every name with its node, sorted; SOA serial, negative SOA,
/// flags.
fn contents(z: &Zone) -> impl PartialEq + std::fmt::Debug {
    let mut nodes: Vec<(Vec<u8>, crate::zone::Node)> = z
        .nodes()
        .into_iter()
        .map(|(k, n)| (k.to_vec(), n.clone()))
        .collect();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    (
        nodes,
        z.serial,
        z.negative_soa.clone(),
        z.has_cuts,
        z.has_wildcards,
    )
}

/// The names whose nodes differ between two zones, in text, with both nodes.
fn differences(got: &Zone, want: &Zone) -> Vec<String> {
    let mut out = Vec::new();
    let mut names: BTreeSet<Vec<u8>> = got.nodes().into_iter().map(|(k, _)| k.to_vec()).collect();
    names.extend(want.nodes().into_iter().map(|(k, _)| k.to_vec()));
    for n in names {
        if got.node(&n) != want.node(&n) {
            out.push(format!(
                "{}: patched {:?} built {:?}",
                crate::name::to_text(&n),
                got.node(&n).map(|x| x
                    .rrsets
                    .iter()
                    .map(|r| (r.rtype, r.rdatas.len()))
                    .collect::<Vec<_>>()),
                want.node(&n).map(|x| x
                    .rrsets
                    .iter()
                    .map(|r| (r.rtype, r.rdatas.len()))
                    .collect::<Vec<_>>()),
            ));
        }
    }
    out
}

fn assert_same(index: &ZoneIndex, view: &SiteView, settings: &ZoneSettings, step: usize) {
    let fwd = build_forward(view, settings).unwrap();
    let got = index.zones.get(&fwd.apex).expect("forward zone served");
    assert!(
        contents(got) == contents(&fwd),
        "forward zone differs at step {step}: {:#?}",
        differences(got, &fwd)
    );
    let rev = build_reverse(view, settings)
        .unwrap()
        .expect("reverse zone");
    let got = index.zones.get(&rev.apex).expect("reverse zone served");
    assert!(
        contents(got) == contents(&rev),
        "reverse zone differs at step {step}: {:#?}",
        differences(got, &rev)
    );
    assert_eq!(index.zones.len(), 2);
}

/// A zone's records (owner, encoded record), the apex SOA apart.
type Records = BTreeSet<(Vec<u8>, Vec<u8>)>;

fn records(z: &Zone) -> Records {
    z.rrsets_for_transfer()
        .into_iter()
        .filter(|(n, s)| !(*n == &*z.apex && s.rtype == crate::rdata::rtype::SOA))
        .flat_map(|(n, s)| s.encoded.iter().map(move |e| (n.to_vec(), e.to_vec())))
        .collect()
}

/// Every version each zone was published at (by apex, then serial), to check IXFR journals.
#[derive(Default)]
struct History {
    versions: std::collections::HashMap<Vec<u8>, std::collections::BTreeMap<u32, Records>>,
    /// Zones whose journal answered from the previous version, and from the oldest it holds.
    incremental: usize,
}

impl History {
    /// For every zone of `index`: applying its journal's deltas to the records published at a
    /// serial the journal starts from gives the records published now; each delta's SOAs frame
    /// the serials. Then remembers the current versions.
    fn check(&mut self, index: &ZoneIndex, step: usize) {
        for z in index.zones.values() {
            let seen = self.versions.entry(z.apex.to_vec()).or_default();
            let now = records(z);
            let soa = z.soa().and_then(|s| s.encoded.first()).unwrap().clone();
            if let Some(last) = z.journal.last() {
                assert_eq!(last.to, z.serial, "step {step}: journal ends elsewhere");
                assert_eq!(last.to_soa, soa, "step {step}: last delta's SOA");
            }
            let froms: Vec<u32> = [z.journal.last().map(|d| d.from)]
                .into_iter()
                .flatten()
                .chain(z.journal.since_any().map(|d| d.from).take(1))
                .collect();
            for from in froms {
                let chain = z.journal.since(from, z.serial).expect("a chain to now");
                let mut got = seen
                    .get(&from)
                    .unwrap_or_else(|| panic!("step {step}: serial {from} was never published"))
                    .clone();
                for d in chain {
                    for (o, r) in &d.removed {
                        assert!(
                            got.remove(&(o.to_vec(), r.to_vec())),
                            "step {step}: removes a record {} did not have",
                            d.from
                        );
                    }
                    for (o, r) in &d.added {
                        assert!(
                            got.insert((o.to_vec(), r.to_vec())),
                            "step {step}: adds a record {} had",
                            d.from
                        );
                    }
                }
                assert!(
                    got == now,
                    "step {step}: IXFR from {from} does not give {}",
                    z.serial
                );
                self.incremental += 1;
            }
            if let Some(old) = seen.insert(z.serial, now.clone()) {
                // A serial names one version while the journal holds it.
                if !z.journal.is_empty() {
                    assert!(old == now, "step {step}: serial {} reused", z.serial);
                }
            }
        }
    }
}

fn run(seed: u64, steps: usize, settings: &ZoneSettings) -> (usize, usize) {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut view = SiteView {
        site: site(1, "lab.internal", 1),
        nodes: imbl::vector![node(1, "pve1", Some(Ipv4Addr::new(10, 1, 2, 2)))],
        containers: imbl::Vector::new(),
        dns_services: imbl::Vector::new(),
        records: imbl::Vector::new(),
    };
    let mut next_id = 10;
    let mut version = 1;
    let mut zones = Zones::default();
    zones.update(&naming_of(&view, version, None), settings);
    let mut history = History::default();
    history.check(zones.index(), 0);
    let (mut patched, mut built) = (0, 0);
    let mut feed: Vec<Arc<NamingDelta>> = Vec::new();
    let mut skipped = 0;
    for step in 0..steps {
        // Sometimes two changes land in one delta.
        let mut delta = mutate(&mut r, &mut view, &mut next_id);
        if r.below(5) == 0 {
            let more = mutate(&mut r, &mut view, &mut next_id);
            delta.nodes.extend(more.nodes);
            delta.containers.extend(more.containers);
            delta.services.extend(more.services);
            delta.dns_records.extend(more.dns_records);
        }
        view.containers.sort_by(|a, b| a.id.cmp(&b.id));
        view.nodes.sort_by(|a, b| a.id.cmp(&b.id));
        view.records.sort_by(|a, b| a.id.cmp(&b.id));
        view.dns_services
            .sort_by(|a, b| a.service_id.cmp(&b.service_id));
        // As the database does: a change to a site's zones moves its serial (a change to the
        // site row alone may or may not).
        let touched = !(delta.nodes.is_empty()
            && delta.containers.is_empty()
            && delta.services.is_empty()
            && delta.dns_records.is_empty());
        if touched || r.below(2) == 0 {
            view.site.dns_serial += 1;
            delta.sites.insert(SiteId(1));
        }
        delta.base = version;
        version += 1;
        // Now and then a full load (no delta): the patcher must build.
        let delta = if r.below(50) == 0 { None } else { Some(delta) };
        match &delta {
            Some(d) => {
                feed.push(Arc::new(d.clone()));
                if feed.len() > siteward_store::NAMING_HISTORY {
                    feed.remove(0);
                }
            }
            None => feed.clear(),
        }
        if std::env::var_os("PATCH_TRACE").is_some() {
            eprintln!("step {step}: {delta:?}");
        }
        let naming = naming_with(&view, version, &feed);
        // Now and then the updater misses versions (several patches land between two of its
        // turns): it patches across them from the feed's history.
        if r.below(6) == 0 && step + 1 < steps {
            skipped += 1;
            continue;
        }
        let (_, stats) = zones.update(&naming, settings);
        patched += stats.patched;
        built += stats.built;
        assert_same(zones.index(), &view, settings, step);
        history.check(zones.index(), step);
    }
    // Most versions can be reached incrementally: a journal that is always empty proves nothing.
    assert!(
        history.incremental > steps,
        "only {} incremental checks",
        history.incremental
    );
    assert!(skipped > steps / 10, "only {skipped} versions skipped");
    (patched, built)
}

#[test]
fn patched_zones_equal_built_zones() {
    let settings = ZoneSettings::default();
    for seed in 1..=4 {
        let (patched, built) = run(seed, 1_000, &settings);
        // Most updates patch: a test where everything is built would prove nothing.
        assert!(patched > 1_200, "seed {seed}: only {patched} zones patched");
        assert!(built < 200, "seed {seed}: {built} zones built");
    }
}

#[test]
fn patched_zones_equal_built_zones_with_glue() {
    let settings = ZoneSettings {
        nameservers: vec!["ns1".into(), "ns.sub".into(), "ns.other.example.".into()],
        nameserver_address: Some(Ipv4Addr::new(10, 1, 2, 53)),
        ..ZoneSettings::default()
    };
    let (patched, _) = run(99, 600, &settings);
    assert!(patched > 600);
}

#[test]
fn an_untouched_site_keeps_its_zones() {
    let settings = ZoneSettings::default();
    let mut a = crate::tests::fixture(3).sites[&SiteId(1)].as_ref().clone();
    a.site = site(1, "lab.internal", 3);
    let mut b = a.clone();
    b.site = site(2, "other.internal", 5);
    b.site.subnet_mask = None;
    let mut naming = Naming::default();
    naming.sites.insert(SiteId(1), Arc::new(a.clone()));
    naming.sites.insert(SiteId(2), Arc::new(b));
    naming.version = 1;
    let first = Arc::new(naming);
    let mut zones = Zones::default();
    zones.update(&first, &settings);
    let before: BTreeSet<*const Zone> = zones.index().zones.values().map(Arc::as_ptr).collect();
    // A container of site 1 changes.
    let mut a2 = a.clone();
    let mut c = a2.containers[0].as_ref().clone();
    c.ipv4_address = Some(Ipv4Addr::new(10, 1, 2, 99));
    a2.containers[0] = Arc::new(c.clone());
    a2.site.dns_serial += 1;
    let mut naming = Naming::default();
    naming.sites.insert(SiteId(1), Arc::new(a2.clone()));
    naming
        .sites
        .insert(SiteId(2), first.sites[&SiteId(2)].clone());
    naming.version = 2;
    let mut delta = NamingDelta {
        base: 1,
        ..NamingDelta::default()
    };
    delta.containers.insert(c.id);
    delta.sites.insert(SiteId(1));
    naming.history.push_back(Arc::new(delta));
    let (changed, stats) = zones.update(&Arc::new(naming), &settings);
    assert_eq!(stats.built, 0);
    assert_eq!(stats.patched, 2, "forward and reverse of site 1");
    assert_eq!(changed.len(), 2);
    let after: BTreeSet<*const Zone> = zones.index().zones.values().map(Arc::as_ptr).collect();
    assert_eq!(before.intersection(&after).count(), 1, "site 2's zone kept");
    assert_same_site(zones.index(), &a2, &settings);
}

fn assert_same_site(index: &ZoneIndex, view: &SiteView, settings: &ZoneSettings) {
    let fwd = build_forward(view, settings).unwrap();
    assert_eq!(contents(&index.zones[&fwd.apex]), contents(&fwd));
    let rev = build_reverse(view, settings).unwrap().unwrap();
    assert_eq!(contents(&index.zones[&rev.apex]), contents(&rev));
}
