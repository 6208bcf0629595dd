//! Zones kept current name by name. [`Zones`] holds, for every site, its zones and who
//! contributes to each of their names ([`Owners`]). Given a naming half patched from the one it
//! last saw, in one step or a few ([`Naming::delta_since`]), it looks up only the changed rows in
//! the old and the new site view, recomputes the names they had and have (plus the apex when the serial moved),
//! and publishes each touched zone as the old zone's names plus a small overlay of the recomputed
//! ones: the work is proportional to the change, not to the zone. When the overlay grows past a
//! fraction of the zone it is folded into a new base (amortized). Anything else (a first load, a
//! version gap, a site whose domain, subnet or settings changed) builds the site's zones whole.
//!
//! Architecture Invariant: a patched zone equals, record for record, the zone
//! [`crate::zone::build_forward`] / [`crate::zone::build_reverse`] make from the same view
//! (`dns/src/tests.rs` checks random sequences of changes).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use siteward_store::{find_sorted, ContainerId, Naming, NamingDelta, ServiceId, SiteId, SiteView};

use crate::journal::{self, Delta, Journal};
use crate::name;
use crate::rdata::rtype;
use crate::zone::{
    self, apex_ops, container_record, node_record, ptr_record, service_record, static_record,
    Contrib, Fingerprint, NameMap, Node, Owners, Record, Zone, ZoneBuilder, ZoneIndex,
    ZoneSettings,
};
use crate::Error;

/// What one update did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UpdateStats {
    /// Zones patched name by name.
    pub patched: usize,
    /// Zones built whole.
    pub built: usize,
    /// Names recomputed by the patches.
    pub names: usize,
    /// Time spent.
    pub elapsed: Duration,
}

/// The zones of every site and what patching them needs.
#[derive(Default)]
pub struct Zones {
    sites: HashMap<SiteId, SiteZones>,
    /// The naming half the zones were made from.
    seen: Option<Arc<Naming>>,
    index: Arc<ZoneIndex>,
}

struct SiteZones {
    fingerprint: Fingerprint,
    forward: Option<ZoneState>,
    reverse: Option<ZoneState>,
    /// DNS services by the container they point at (a hostname change moves their SRV target).
    srv_by_container: HashMap<ContainerId, BTreeSet<ServiceId>>,
}

struct ZoneState {
    zone: Arc<Zone>,
    owners: Owners,
    /// The network a reverse zone covers; `None` for the forward zone.
    reverse_net: Option<ipnetwork::Ipv4Network>,
}

impl Zones {
    /// The current index.
    pub fn index(&self) -> &Arc<ZoneIndex> {
        &self.index
    }

    /// Brings the zones to `naming`: patched from the half seen last when `naming` was patched
    /// from it, built otherwise. Returns the zones that changed (to NOTIFY) and what it did.
    pub fn update(
        &mut self,
        naming: &Arc<Naming>,
        settings: &ZoneSettings,
    ) -> (Vec<Arc<Zone>>, UpdateStats) {
        let started = Instant::now();
        let mut stats = UpdateStats::default();
        let prev = self.seen.take();
        // The rows changed since the half seen last, even when the updater skipped versions
        // (several patches between two of its turns).
        let delta = prev.as_ref().and_then(|p| naming.delta_since(p.version));
        let mut changed = Vec::new();
        let mut next: HashMap<SiteId, SiteZones> = HashMap::with_capacity(naming.sites.len());
        for (id, view) in &naming.sites {
            let fp = zone::fingerprint(view, settings);
            let old_view = prev.as_ref().and_then(|p| p.sites.get(id));
            let state = self.sites.remove(id);
            let site = match (state, old_view, &delta) {
                (Some(mut st), Some(old), Some(d)) if st.fingerprint.same_but_serial(&fp) => {
                    if Arc::ptr_eq(old, view) {
                        st
                    } else {
                        match st.patch(old, view, d, settings, &mut stats, &mut changed) {
                            Ok(()) => {
                                st.fingerprint = fp;
                                st
                            }
                            Err(e) => {
                                tracing::warn!(site = id.0, error = %e,
                                    "zone patch failed; building the site's zones");
                                build_site(view, settings, &mut stats, &mut changed)
                            }
                        }
                    }
                }
                // No delta (a full reload, or a gap): keep only zones whose site view is the
                // same, contents included (a serial alone cannot tell: the serial and the rows
                // may have reached the snapshot in different patches).
                (Some(st), Some(old), _)
                    if st.fingerprint == fp && (Arc::ptr_eq(old, view) || **old == **view) =>
                {
                    st
                }
                _ => build_site(view, settings, &mut stats, &mut changed),
            };
            next.insert(*id, site);
        }
        self.sites = next;
        let sites = &self.sites;
        self.index = Arc::new(ZoneIndex::assemble(naming, |view| {
            sites.get(&view.site.id).map_or_else(Vec::new, |s| {
                s.forward
                    .iter()
                    .chain(s.reverse.iter())
                    .map(|z| z.zone.clone())
                    .collect()
            })
        }));
        self.seen = Some(naming.clone());
        stats.elapsed = started.elapsed();
        (changed, stats)
    }
}

fn build_site(
    view: &SiteView,
    settings: &ZoneSettings,
    stats: &mut UpdateStats,
    changed: &mut Vec<Arc<Zone>>,
) -> SiteZones {
    let site = view.site.id.0;
    let forward = match zone::build_forward_owned(view, settings) {
        Ok((z, owners)) => Some(ZoneState {
            zone: Arc::new(z),
            owners,
            reverse_net: None,
        }),
        Err(e) => {
            tracing::error!(site, error = %e, "zone not built");
            None
        }
    };
    let reverse = match (
        zone::build_reverse_owned(view, settings),
        zone::reverse_of(&view.site),
    ) {
        (Ok(Some((z, owners))), Ok(Some((_, net)))) => Some(ZoneState {
            zone: Arc::new(z),
            owners,
            reverse_net: Some(net),
        }),
        (Ok(_), Ok(_)) => None,
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(site, error = %e, "reverse zone not built");
            None
        }
    };
    for z in forward.iter().chain(reverse.iter()) {
        stats.built += 1;
        changed.push(z.zone.clone());
    }
    let mut srv_by_container: HashMap<ContainerId, BTreeSet<ServiceId>> = HashMap::new();
    for s in &view.dns_services {
        srv_by_container
            .entry(s.container_id)
            .or_default()
            .insert(s.service_id);
    }
    SiteZones {
        fingerprint: zone::fingerprint(view, settings),
        forward,
        reverse,
        srv_by_container,
    }
}

fn hostname(view: &SiteView, id: ContainerId) -> Option<&str> {
    find_sorted(&view.containers, &id, |c| c.id).map(|c| c.hostname.as_str())
}

/// The record a row puts in the forward zone of `view`.
fn forward_record(view: &SiteView, c: Contrib, apex: &[u8], ttl: u32) -> Option<Record> {
    match c {
        Contrib::NameServers => None,
        Contrib::Node(id) => node_record(find_sorted(&view.nodes, &id, |n| n.id)?, apex, ttl),
        Contrib::Static(id) => static_record(find_sorted(&view.records, &id, |r| r.id)?, apex),
        Contrib::Service(id) => {
            let svc = find_sorted(&view.dns_services, &id, |s| s.service_id)?;
            service_record(svc, hostname(view, svc.container_id), apex, ttl)
        }
        Contrib::Container(id) => {
            container_record(find_sorted(&view.containers, &id, |c| c.id)?, apex, ttl)
        }
    }
}

/// The PTR record a row puts in the reverse zone of `view`.
fn reverse_record(
    view: &SiteView,
    c: Contrib,
    net: ipnetwork::Ipv4Network,
    forward: &[u8],
    ttl: u32,
) -> Option<Record> {
    match c {
        Contrib::Node(id) => {
            let n = find_sorted(&view.nodes, &id, |n| n.id)?;
            ptr_record(n.ipv4_address, &n.name, net, forward, ttl)
        }
        Contrib::Container(id) => {
            let c = find_sorted(&view.containers, &id, |c| c.id)?;
            ptr_record(c.ipv4_address, &c.hostname, net, forward, ttl)
        }
        _ => None,
    }
}

impl SiteZones {
    /// Patches the site's zones from `old` to `view`, given the rows `d` names.
    fn patch(
        &mut self,
        old: &SiteView,
        view: &SiteView,
        d: &NamingDelta,
        settings: &ZoneSettings,
        stats: &mut UpdateStats,
        changed: &mut Vec<Arc<Zone>>,
    ) -> Result<(), Error> {
        let mut rows: BTreeSet<Contrib> = BTreeSet::new();
        rows.extend(d.nodes.iter().map(|id| Contrib::Node(*id)));
        rows.extend(d.dns_records.iter().map(|id| Contrib::Static(*id)));
        rows.extend(d.services.iter().map(|id| Contrib::Service(*id)));
        for id in &d.containers {
            rows.insert(Contrib::Container(*id));
            if let Some(services) = self.srv_by_container.get(id) {
                rows.extend(services.iter().map(|s| Contrib::Service(*s)));
            }
        }
        for id in &d.services {
            for v in [old, view] {
                if let Some(s) = find_sorted(&v.dns_services, id, |s| s.service_id) {
                    if let Some(set) = self.srv_by_container.get_mut(&s.container_id) {
                        set.remove(id);
                        if set.is_empty() {
                            self.srv_by_container.remove(&s.container_id);
                        }
                    }
                }
            }
            if let Some(s) = find_sorted(&view.dns_services, id, |s| s.service_id) {
                self.srv_by_container
                    .entry(s.container_id)
                    .or_default()
                    .insert(s.service_id);
            }
        }
        let serial_moved = old.site.dns_serial != view.site.dns_serial;
        let forward = zone::forward_apex(&view.site)?;
        let serial = zone::serial_of(view.site.dns_serial);
        let ttl = settings.record_ttl;
        for state in self.forward.iter_mut().chain(self.reverse.iter_mut()) {
            let ops = apex_ops(settings, &forward, &state.zone.apex, serial)?;
            let net = state.reverse_net;
            let record_of = |v: &SiteView, c: Contrib| match net {
                None => forward_record(v, c, &forward, ttl),
                Some(net) => reverse_record(v, c, net, &forward, ttl),
            };
            if let Some(names) = state.patch(
                &rows,
                old,
                view,
                &record_of,
                &ops,
                serial,
                serial_moved,
                settings.minimum,
            ) {
                stats.patched += 1;
                stats.names += names;
                changed.push(state.zone.clone());
            }
        }
        Ok(())
    }
}

impl ZoneState {
    /// Patches the zone for the changed `rows`; returns how many names it recomputed, or `None`
    /// when nothing in this zone changed.
    #[allow(clippy::too_many_arguments)]
    fn patch(
        &mut self,
        rows: &BTreeSet<Contrib>,
        old: &SiteView,
        view: &SiteView,
        record_of: &dyn Fn(&SiteView, Contrib) -> Option<Record>,
        ops: &[zone::ApexOp],
        serial: u32,
        serial_moved: bool,
        minimum: u32,
    ) -> Option<usize> {
        let apex = self.zone.apex.clone();
        let owner_in = |v: &SiteView, c: Contrib| {
            record_of(v, c)
                .map(|r| r.owner)
                .filter(|o| name::is_within(o, &apex))
        };
        let mut dirty: BTreeSet<Vec<u8>> = BTreeSet::new();
        for &c in rows {
            let before = owner_in(old, c);
            let after = owner_in(view, c);
            if let Some(o) = before {
                if let Some(list) = self.owners.by_name.get_mut(o.as_slice()) {
                    list.retain(|x| *x != c);
                    if list.is_empty() {
                        self.owners.by_name.remove(o.as_slice());
                    }
                }
                dirty.insert(o);
            }
            if let Some(n) = after {
                let list = self.owners.by_name.entry(n.clone().into()).or_default();
                if let Err(i) = list.binary_search(&c) {
                    list.insert(i, c);
                }
                dirty.insert(n);
            }
        }
        if serial_moved {
            dirty.insert(apex.to_vec());
        }
        if dirty.is_empty() {
            return None;
        }
        let mut overlay: NameMap<Option<Arc<Node>>> = (*self.zone.overlay).clone();
        let base = self.zone.base.clone();
        let current = |overlay: &NameMap<Option<Arc<Node>>>, n: &[u8]| -> Option<Arc<Node>> {
            match overlay.get(n) {
                Some(v) => v.clone(),
                None => base.get(n).cloned(),
            }
        };
        let set = |overlay: &mut NameMap<Option<Arc<Node>>>, n: &[u8], v: Option<Arc<Node>>| {
            if v.is_none() && !base.contains_key(n) {
                overlay.remove(n);
            } else {
                overlay.insert(n.into(), v);
            }
        };
        let owners = &mut self.owners;
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        for n in &dirty {
            let mut b = ZoneBuilder::new(apex.to_vec());
            for &c in owners
                .by_name
                .get(n.as_slice())
                .map_or(&[][..], |l| l.as_slice())
            {
                match c {
                    Contrib::NameServers => b.apex_ops(ops, Some(n)),
                    _ => {
                        let Some(r) = record_of(view, c).filter(|r| r.owner == *n) else {
                            continue;
                        };
                        match self.reverse_net {
                            None => b.add_from(c, r),
                            Some(_) => b.add_any(c, r),
                        }
                    }
                }
            }
            let node = b.take_node(n);
            let cur = current(&overlay, n);
            journal::diff_node(n, &apex, cur.as_deref(), &node, &mut removed, &mut added);
            let had = cur.as_ref().is_some_and(|x| !x.rrsets.is_empty());
            let has = !node.rrsets.is_empty();
            if had {
                owners.wildcards -= usize::from(zone::is_wildcard(n));
                owners.cuts -= usize::from(zone::is_cut(n, &apex, cur.as_deref()));
            }
            if has {
                owners.wildcards += usize::from(zone::is_wildcard(n));
                owners.cuts += usize::from(zone::is_cut(n, &apex, Some(&node)));
                set(&mut overlay, n, Some(Arc::new(node)));
            } else if n.as_slice() == &*apex
                || owners.below.get(n.as_slice()).is_some_and(|c| *c > 0)
            {
                if had {
                    set(&mut overlay, n, Some(Arc::new(Node::default())));
                }
            } else if cur.is_some() {
                set(&mut overlay, n, None);
            }
            if had == has {
                continue;
            }
            // The name gained or lost its records: its ancestors count one more or one less
            // name below them; an empty non-terminal appears or goes.
            let mut at: &[u8] = n;
            while let Some(p) = name::parent(at) {
                if p.len() < apex.len() {
                    break;
                }
                let count = owners.below.entry(p.into()).or_default();
                if has {
                    *count += 1;
                    if current(&overlay, p).is_none() {
                        set(&mut overlay, p, Some(Arc::new(Node::default())));
                    }
                } else {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        owners.below.remove(p);
                        let empty = current(&overlay, p).is_some_and(|x| x.rrsets.is_empty());
                        if empty && p != &*apex {
                            set(&mut overlay, p, None);
                        }
                    }
                }
                if p == &*apex {
                    break;
                }
                at = p;
            }
        }
        let apex_node = current(&overlay, &apex);
        let negative_soa = zone::negative_soa(apex_node.as_deref(), minimum);
        let soa_of = |n: Option<&Node>| {
            n.and_then(|n| n.get(rtype::SOA))
                .and_then(|s| s.encoded.first().cloned())
        };
        let journal = match (soa_of(self.zone.apex_node()), soa_of(apex_node.as_deref())) {
            (Some(from_soa), Some(to_soa)) if serial_moved => self.zone.journal.with(Delta {
                from: self.zone.serial,
                to: serial,
                from_soa,
                to_soa,
                removed,
                added,
            }),
            // The contents changed under the same serial (or there is no SOA): the serial no
            // longer names one version, so no delta can start from it.
            _ => Journal::default(),
        };
        // Fold the overlay into a new base once it is a sizeable part of the zone.
        let (base, overlay) = if overlay.len() > (self.zone.base.len() / 32).max(256) {
            let mut folded: NameMap<Arc<Node>> = (*self.zone.base).clone();
            for (k, v) in overlay {
                match v {
                    Some(n) => {
                        folded.insert(k, n);
                    }
                    None => {
                        folded.remove(&k);
                    }
                }
            }
            (Arc::new(folded), Arc::default())
        } else {
            (self.zone.base.clone(), Arc::new(overlay))
        };
        let mut fingerprint = self.zone.fingerprint.clone();
        fingerprint.serial = view.site.dns_serial;
        self.zone = Arc::new(Zone {
            site: self.zone.site,
            apex: self.zone.apex.clone(),
            base,
            overlay,
            serial,
            negative_soa,
            has_cuts: self.owners.cuts > 0,
            has_wildcards: self.owners.wildcards > 0,
            fingerprint,
            journal,
        });
        Some(dirty.len())
    }
}
