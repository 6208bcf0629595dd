//! Patching the snapshot from row-level notifications.
//!
//! The triggers of migration 0016 notify `<table> <key>,<key>,...` per statement (or
//! `<table> *` for TRUNCATE and statements touching many rows). The feed coalesces what is
//! waiting into one [`Changes`], then [`apply`] re-reads only the named rows, in one
//! repeatable-read transaction per half, and patches copies of the previous halves: cost
//! follows the change, not the size of the cluster. A half named with `*`, or one whose keys
//! cannot be parsed, is loaded whole, as after a reconnect.
//!
//! Invariant: a patched half equals what a full load would build from the same database state
//! (same rows, same order, same indexes); `snapshot::tests` and the store's property test check
//! it record for record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use sqlx::{PgConnection, PgPool};

use crate::error::Result;
use crate::models::*;
use crate::queries::{CONTAINER_COLUMNS, EXTERNAL_DOMAIN_COLUMNS, NODE_COLUMNS, SITE_COLUMNS};
use crate::snapshot::{find_sorted, Identity, Naming, NamingDelta, SiteView, Snapshot};

/// The rows notifications named since the last patch, by table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Load the identity half whole.
    pub identity_all: bool,
    /// Load the naming half whole.
    pub naming_all: bool,
    users: BTreeSet<i32>,
    groups: BTreeSet<i32>,
    /// Memberships (uid, gid) added or removed.
    memberships: BTreeSet<(i32, i32)>,
    api_keys: BTreeSet<String>,
    sites: BTreeSet<i64>,
    nodes: BTreeSet<i64>,
    containers: BTreeSet<i64>,
    services: BTreeSet<i64>,
    dns_records: BTreeSet<i64>,
    external_domains: BTreeSet<i64>,
}

/// Which half a table feeds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    Identity,
    Naming,
}

fn half_of(table: &str) -> Option<Half> {
    match table {
        "users" | "groups" | "user_groups" | "api_keys" => Some(Half::Identity),
        "sites" | "nodes" | "containers" | "services" | "http_services" | "transport_services"
        | "dns_services" | "dns_records" | "external_domains" => Some(Half::Naming),
        _ => None,
    }
}

impl Changes {
    /// Everything: both halves loaded whole.
    pub fn all() -> Self {
        Self {
            identity_all: true,
            naming_all: true,
            ..Self::default()
        }
    }

    /// Adds one notification payload: `<table> <keys>`, `<table> *`, or a bare `<table>`
    /// (the whole table). Unknown tables mark both halves.
    pub fn note(&mut self, payload: &str) {
        let (table, keys) = payload.split_once(' ').unwrap_or((payload, "*"));
        let Some(half) = half_of(table) else {
            self.identity_all = true;
            self.naming_all = true;
            return;
        };
        if keys == "*" || !self.note_keys(table, keys) {
            match half {
                Half::Identity => self.identity_all = true,
                Half::Naming => self.naming_all = true,
            }
        }
    }

    /// Adds the keys of `table`; false when one does not parse.
    fn note_keys(&mut self, table: &str, keys: &str) -> bool {
        for key in keys.split(',') {
            let ok = match table {
                "users" => insert(&mut self.users, key),
                "groups" => insert(&mut self.groups, key),
                "user_groups" => match key
                    .split_once(':')
                    .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
                {
                    Some(pair) => {
                        self.memberships.insert(pair);
                        true
                    }
                    None => false,
                },
                "api_keys" => {
                    self.api_keys.insert(key.to_owned());
                    true
                }
                "sites" => insert(&mut self.sites, key),
                "nodes" => insert(&mut self.nodes, key),
                "containers" => insert(&mut self.containers, key),
                "services" | "http_services" | "transport_services" | "dns_services" => {
                    insert(&mut self.services, key)
                }
                "dns_records" => insert(&mut self.dns_records, key),
                "external_domains" => insert(&mut self.external_domains, key),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        true
    }

    /// Nothing to apply.
    pub fn is_empty(&self) -> bool {
        !self.identity_touched() && !self.naming_touched()
    }

    fn identity_touched(&self) -> bool {
        self.identity_all
            || !self.users.is_empty()
            || !self.groups.is_empty()
            || !self.memberships.is_empty()
            || !self.api_keys.is_empty()
    }

    fn naming_touched(&self) -> bool {
        self.naming_all
            || !self.sites.is_empty()
            || !self.nodes.is_empty()
            || !self.containers.is_empty()
            || !self.services.is_empty()
            || !self.dns_records.is_empty()
            || !self.external_domains.is_empty()
    }
}

fn insert<T: std::str::FromStr + Ord>(set: &mut BTreeSet<T>, key: &str) -> bool {
    match key.parse() {
        Ok(k) => {
            set.insert(k);
            true
        }
        Err(_) => false,
    }
}

/// Builds the next snapshot from `previous` and `changes`: the halves named with `*` are
/// loaded whole, the others patched from the rows named.
pub(crate) async fn apply(
    pool: &PgPool,
    previous: &Snapshot,
    changes: &Changes,
) -> Result<Snapshot> {
    let identity = async {
        if changes.identity_all {
            Ok(Arc::new(Identity::load(pool).await?))
        } else if changes.identity_touched() {
            Ok(Arc::new(
                patch_identity(pool, &previous.identity, changes).await?,
            ))
        } else {
            Ok(previous.identity.clone())
        }
    };
    let naming = async {
        if changes.naming_all {
            let mut naming = Naming::load(pool).await?;
            naming.version = previous.naming.version + 1;
            Ok(Arc::new(naming))
        } else if changes.naming_touched() {
            Ok(Arc::new(
                patch_naming(pool, &previous.naming, changes).await?,
            ))
        } else {
            Ok(previous.naming.clone())
        }
    };
    let (identity, naming) =
        tokio::try_join!(identity, naming).map_err(|e: crate::StoreError| e)?;
    Ok(Snapshot {
        identity,
        naming,
        generation: previous.generation + 1,
        loaded_at: Instant::now(),
    })
}

/// A read transaction in which the rows of one patch agree with each other (one round trip).
async fn begin_read(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    Ok(pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?)
}

fn ids<T: Copy>(set: &BTreeSet<T>) -> Vec<T> {
    set.iter().copied().collect()
}

/// Patches the identity half: re-reads the named users, groups, memberships and API keys.
async fn patch_identity(pool: &PgPool, prev: &Identity, c: &Changes) -> Result<Identity> {
    // Only the queries with keys to read: a typical change is one user or one membership, and
    // each query is a round trip to the database.
    let mut tx = begin_read(pool).await?;
    let mut users: Vec<UserRow> = Vec::new();
    if !c.users.is_empty() {
        users = sqlx::query_as(
            "SELECT uid_number, username, cn, sn, given_name, mail, ssh_public_key, user_password,
                    status, password_changed_at, created_at, updated_at
             FROM users WHERE uid_number = ANY($1)",
        )
        .bind(ids(&c.users))
        .fetch_all(&mut *tx)
        .await?;
    }
    let mut groups: Vec<Group> = Vec::new();
    if !c.groups.is_empty() {
        groups = sqlx::query_as(
            "SELECT gid_number, cn, description, is_administrator, created_at, updated_at
             FROM groups WHERE gid_number = ANY($1)",
        )
        .bind(ids(&c.groups))
        .fetch_all(&mut *tx)
        .await?;
    }
    // The memberships named that exist now; the others were removed.
    let mut present: Vec<(i32, i32)> = Vec::new();
    if !c.memberships.is_empty() {
        let (uids, gids): (Vec<i32>, Vec<i32>) = c.memberships.iter().copied().unzip();
        present = sqlx::query_as(
            "SELECT ug.uid_number, ug.gid_number
             FROM unnest($1::int4[], $2::int4[]) AS p(uid_number, gid_number)
             JOIN user_groups ug USING (uid_number, gid_number)",
        )
        .bind(uids)
        .bind(gids)
        .fetch_all(&mut *tx)
        .await?;
    }
    let mut keys: Vec<ApiKey> = Vec::new();
    if !c.api_keys.is_empty() {
        keys = sqlx::query_as(
            "SELECT id, prefix, key_hash, uid_number, name, last_used_at, expires_at, created_at
             FROM api_keys WHERE prefix = ANY($1)",
        )
        .bind(c.api_keys.iter().cloned().collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
    }
    tx.commit().await?;

    // Persistent maps: the clone shares everything, the edits below copy only their paths.
    let mut next = Identity {
        loaded_at: Some(Utc::now()),
        ..prev.clone()
    };
    // Removals first, so that names swapped within one batch end up right.
    for uid in &c.users {
        if let Some(old) = next.users.remove(&Uid(*uid)) {
            let key = old.username.to_ascii_lowercase();
            if next.user_by_name.get(&key) == Some(&old.uid_number) {
                next.user_by_name.remove(&key);
            }
        }
    }
    for row in users {
        let user = User::from(row);
        next.user_by_name
            .insert(user.username.to_ascii_lowercase(), user.uid_number);
        next.users.insert(user.uid_number, Arc::new(user));
    }
    for gid in &c.groups {
        if let Some(old) = next.groups.remove(&Gid(*gid)) {
            let key = old.cn.to_ascii_lowercase();
            if next.group_by_name.get(&key) == Some(&old.gid_number) {
                next.group_by_name.remove(&key);
            }
        }
    }
    for group in groups {
        next.group_by_name
            .insert(group.cn.to_ascii_lowercase(), group.gid_number);
        next.groups.insert(group.gid_number, Arc::new(group));
    }
    let present: BTreeSet<(i32, i32)> = present.into_iter().collect();
    for &(uid, gid) in &c.memberships {
        let member = present.contains(&(uid, gid));
        set_member(&mut next.groups_of, Uid(uid), Gid(gid), member);
        set_member(&mut next.members_of, Gid(gid), Uid(uid), member);
    }
    for prefix in &c.api_keys {
        next.api_keys.remove(prefix);
    }
    for key in keys {
        next.api_keys.insert(key.prefix.clone(), Arc::new(key));
    }
    Ok(next)
}

/// Puts `item` into `key`'s ascending list in `map` (`member`) or takes it out; an emptied list
/// goes, as a full load has none.
fn set_member<K, T>(map: &mut imbl::HashMap<K, Arc<[T]>>, key: K, item: T, member: bool)
where
    K: std::hash::Hash + Eq + Clone,
    T: Ord + Copy,
{
    let list = map.get(&key).map(|l| &l[..]).unwrap_or(&[]);
    let at = list.binary_search(&item);
    let next: Vec<T> = match (at, member) {
        (Ok(_), true) | (Err(_), false) => return,
        (Err(i), true) => [&list[..i], &[item], &list[i..]].concat(),
        (Ok(i), false) => [&list[..i], &list[i + 1..]].concat(),
    };
    if next.is_empty() {
        map.remove(&key);
    } else {
        map.insert(key, next.into());
    }
}

/// The naming rows one patch re-reads.
#[derive(Default)]
struct NamingRows {
    sites: Vec<SiteRow>,
    nodes: Vec<NodeRow>,
    containers: Vec<ContainerRow>,
    dns_services: Vec<DnsService>,
    http_services: Vec<HttpService>,
    transport_services: Vec<TransportService>,
    records: Vec<DnsRecord>,
    domains: Vec<ExternalDomain>,
}

/// The sites whose zones the rows named in `c` feed, before (in `prev`) and after (in `rows`).
fn zone_sites(prev: &Naming, c: &Changes, rows: &NamingRows) -> BTreeSet<i64> {
    let mut out: BTreeSet<i64> = BTreeSet::new();
    out.extend(rows.nodes.iter().map(|n| n.site_id));
    out.extend(rows.containers.iter().map(|c| c.site_id));
    out.extend(rows.records.iter().map(|r| r.site_id.0));
    let container_site = |id: ContainerId| {
        rows.containers
            .iter()
            .find(|c| c.id == id.0)
            .map(|c| c.site_id)
            .or_else(|| prev.containers.get(&id).map(|c| c.site_id.0))
    };
    out.extend(
        rows.dns_services
            .iter()
            .filter_map(|s| container_site(s.container_id)),
    );
    out.extend(
        c.containers
            .iter()
            .filter_map(|id| prev.containers.get(&ContainerId(*id)).map(|c| c.site_id.0)),
    );
    if c.nodes.is_empty() && c.dns_records.is_empty() && c.services.is_empty() {
        return out;
    }
    for (id, view) in &prev.sites {
        let holds_node = c
            .nodes
            .iter()
            .any(|n| view.nodes.binary_search_by(|x| x.id.0.cmp(n)).is_ok());
        let holds_record = c
            .dns_records
            .iter()
            .any(|r| view.records.binary_search_by(|x| x.id.0.cmp(r)).is_ok());
        let holds_service = c.services.iter().any(|s| {
            view.dns_services
                .binary_search_by(|x| x.service_id.0.cmp(s))
                .is_ok()
        });
        if holds_node || holds_record || holds_service {
            out.insert(id.0);
        }
    }
    out
}

/// Reads the rows named in `c`, plus everything held by the sites in `whole_sites` (sites the
/// snapshot does not know yet arrive with their contents).
async fn read_naming(
    tx: &mut PgConnection,
    c: &Changes,
    whole_sites: &[i64],
    sites: &[i64],
    out: &mut NamingRows,
) -> Result<()> {
    let mut site_rows: Vec<SiteRow> = Vec::new();
    if !sites.is_empty() {
        site_rows = sqlx::query_as(&format!(
            "SELECT {SITE_COLUMNS} FROM sites WHERE id = ANY($1)"
        ))
        .bind(sites)
        .fetch_all(&mut *tx)
        .await?;
    }
    // Only the queries with keys to read (each is a round trip). Rows by key and the rows of
    // whole sites are separate queries: `id = ANY($1) OR site_id = ANY($2)` is planned as a scan
    // of the table, which is the cost this module exists to avoid.
    let whole = !whole_sites.is_empty();
    let mut nodes: Vec<NodeRow> = Vec::new();
    if !c.nodes.is_empty() {
        nodes = sqlx::query_as(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE id = ANY($1)"
        ))
        .bind(ids(&c.nodes))
        .fetch_all(&mut *tx)
        .await?;
    }
    if whole {
        nodes.extend(
            sqlx::query_as::<_, NodeRow>(&format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE site_id = ANY($1)"
            ))
            .bind(whole_sites)
            .fetch_all(&mut *tx)
            .await?,
        );
        dedup_by_key(&mut nodes, |n| n.id);
    }
    let mut containers: Vec<ContainerRow> = Vec::new();
    if !c.containers.is_empty() {
        containers = sqlx::query_as(&format!(
            "SELECT {CONTAINER_COLUMNS} FROM containers WHERE id = ANY($1)"
        ))
        .bind(ids(&c.containers))
        .fetch_all(&mut *tx)
        .await?;
    }
    if whole {
        containers.extend(
            sqlx::query_as::<_, ContainerRow>(&format!(
                "SELECT {CONTAINER_COLUMNS} FROM containers WHERE site_id = ANY($1)"
            ))
            .bind(whole_sites)
            .fetch_all(&mut *tx)
            .await?,
        );
        dedup_by_key(&mut containers, |c| c.id);
    }
    // A container that changed takes its SRV services along (its site may have changed).
    let mut dns_services: Vec<DnsService> = Vec::new();
    if !c.services.is_empty() || !c.containers.is_empty() {
        dns_services = sqlx::query_as(
            "SELECT s.id AS service_id, s.container_id, d.service_name, s.container_port
             FROM dns_services d JOIN services s ON s.id = d.service_id
             WHERE s.id = ANY($1) OR s.container_id = ANY($2)",
        )
        .bind(ids(&c.services))
        .bind(ids(&c.containers))
        .fetch_all(&mut *tx)
        .await?;
    }
    if whole {
        dns_services.extend(
            sqlx::query_as::<_, DnsService>(
                "SELECT s.id AS service_id, s.container_id, d.service_name, s.container_port
                 FROM dns_services d JOIN services s ON s.id = d.service_id
                 JOIN containers c ON c.id = s.container_id
                 WHERE c.site_id = ANY($1)",
            )
            .bind(whole_sites)
            .fetch_all(&mut *tx)
            .await?,
        );
        dedup_by_key(&mut dns_services, |s| s.service_id);
    }
    let mut http: Vec<HttpService> = Vec::new();
    if !c.services.is_empty() {
        http = sqlx::query_as(
            "SELECT s.id AS service_id, s.container_id, s.container_port, h.external_hostname,
                    h.external_domain_id, h.backend_protocol, h.auth_required, h.allowed_groups
             FROM http_services h JOIN services s ON s.id = h.service_id
             WHERE s.id = ANY($1)",
        )
        .bind(ids(&c.services))
        .fetch_all(&mut *tx)
        .await?;
    }
    let mut transport: Vec<TransportService> = Vec::new();
    if !c.services.is_empty() {
        transport = sqlx::query_as(
            "SELECT s.id AS service_id, s.container_id, s.container_port, t.protocol,
                    t.external_port, t.use_tls
             FROM transport_services t JOIN services s ON s.id = t.service_id
             WHERE s.id = ANY($1)",
        )
        .bind(ids(&c.services))
        .fetch_all(&mut *tx)
        .await?;
    }
    let mut records: Vec<DnsRecord> = Vec::new();
    if !c.dns_records.is_empty() {
        records = sqlx::query_as(
            "SELECT id, site_id, name, type, value, ttl FROM dns_records WHERE id = ANY($1)",
        )
        .bind(ids(&c.dns_records))
        .fetch_all(&mut *tx)
        .await?;
    }
    if whole {
        records.extend(
            sqlx::query_as::<_, DnsRecord>(
                "SELECT id, site_id, name, type, value, ttl FROM dns_records
                 WHERE site_id = ANY($1)",
            )
            .bind(whole_sites)
            .fetch_all(&mut *tx)
            .await?,
        );
        dedup_by_key(&mut records, |r| r.id);
    }
    let mut domains: Vec<ExternalDomain> = Vec::new();
    if !c.external_domains.is_empty() {
        domains = sqlx::query_as(&format!(
            "SELECT {EXTERNAL_DOMAIN_COLUMNS} FROM external_domains WHERE id = ANY($1)"
        ))
        .bind(ids(&c.external_domains))
        .fetch_all(&mut *tx)
        .await?;
    }
    out.sites.append(&mut site_rows);
    out.nodes.append(&mut nodes);
    out.containers.append(&mut containers);
    out.dns_services.append(&mut dns_services);
    out.http_services.append(&mut http);
    out.transport_services.append(&mut transport);
    out.records.append(&mut records);
    out.domains.append(&mut domains);
    Ok(())
}

/// Sorts by `key` and keeps one row per key.
fn dedup_by_key<T, K: Ord>(v: &mut Vec<T>, key: impl Fn(&T) -> K) {
    v.sort_by_key(&key);
    v.dedup_by(|a, b| key(a) == key(b));
}

/// Inserts or replaces `item` in a persistent vector kept sorted by `key` (O(log n): only the
/// path to the slot is copied).
fn upsert_sorted<T: Clone, K: Ord>(v: &mut imbl::Vector<T>, item: T, key: impl Fn(&T) -> K) {
    let k = key(&item);
    match v.binary_search_by(|x| key(x).cmp(&k)) {
        Ok(i) => {
            v.set(i, item);
        }
        Err(i) => v.insert(i, item),
    }
}

/// Removes the item with key `k` from a persistent vector kept sorted by `key`.
fn remove_sorted<T: Clone, K: Ord>(
    v: &mut imbl::Vector<T>,
    k: &K,
    key: impl Fn(&T) -> K,
) -> Option<T> {
    v.binary_search_by(|x| key(x).cmp(k))
        .ok()
        .map(|i| v.remove(i))
}

/// Patches the naming half: re-reads the named rows and updates copies of the views and
/// indexes they appear in. The result's `delta` names every row that changed.
async fn patch_naming(pool: &PgPool, prev: &Naming, c: &Changes) -> Result<Naming> {
    let mut tx = begin_read(pool).await?;
    let mut rows = NamingRows::default();
    let named_sites = ids(&c.sites);
    // Sites named that the snapshot does not hold yet are read whole.
    let unknown: Vec<i64> = named_sites
        .iter()
        .copied()
        .filter(|s| !prev.sites.contains_key(&SiteId(*s)))
        .collect();
    read_naming(&mut tx, c, &unknown, &named_sites, &mut rows).await?;
    // A row may belong to a site created by a transaction whose notification has not arrived:
    // read that site whole now, in the same database snapshot.
    let mut missing: BTreeSet<i64> = rows
        .nodes
        .iter()
        .map(|n| n.site_id)
        .chain(rows.containers.iter().map(|c| c.site_id))
        .chain(rows.records.iter().map(|r| r.site_id.0))
        .filter(|s| !prev.sites.contains_key(&SiteId(*s)) && !c.sites.contains(s))
        .collect();
    missing.retain(|s| !unknown.contains(s));
    if !missing.is_empty() {
        let missing = ids(&missing);
        read_naming(&mut tx, &Changes::default(), &missing, &missing, &mut rows).await?;
    }
    // The site rows of every zone-feeding row named are re-read in the same database snapshot,
    // so a zone's serial is never older or newer than its contents, whichever batch the site's
    // own notification arrives in.
    let mut serials: BTreeSet<i64> = zone_sites(prev, c, &rows);
    serials.retain(|s| !named_sites.contains(s) && !missing.contains(s));
    if !serials.is_empty() {
        let more: Vec<SiteRow> = sqlx::query_as(&format!(
            "SELECT {} FROM sites WHERE id = ANY($1)",
            crate::queries::SITE_COLUMNS
        ))
        .bind(ids(&serials))
        .fetch_all(&mut *tx)
        .await?;
        rows.sites.extend(more);
    }
    tx.commit().await?;

    let mut delta = NamingDelta {
        base: prev.version,
        ..NamingDelta::default()
    };
    // Every collection below is persistent or small (sites): cloning one is O(1) or O(sites),
    // and each change copies only the paths to what it touches.
    let mut sites = prev.sites.clone();
    let mut containers = prev.containers.clone();

    // Sites.
    let mut read_sites: BTreeMap<i64, SiteRow> =
        rows.sites.into_iter().map(|r| (r.id, r)).collect();
    let mut site_ids: BTreeSet<i64> = c.sites.clone();
    site_ids.extend(read_sites.keys().copied());
    for id in &site_ids {
        let id = SiteId(*id);
        delta.sites.insert(id);
        let removed = sites.remove(&id);
        match read_sites.remove(&id.0) {
            Some(row) => {
                let site = Site::from(row);
                let view = match removed {
                    Some(old) => SiteView {
                        site,
                        ..Arc::unwrap_or_clone(old)
                    },
                    None => SiteView::new(site),
                };
                sites.insert(id, Arc::new(view));
            }
            None => {
                if let Some(old) = removed {
                    for ct in &old.containers {
                        if containers.get(&ct.id).is_some_and(|c| c.site_id == id) {
                            containers.remove(&ct.id);
                            delta.containers.insert(ct.id);
                        }
                    }
                }
            }
        }
    }

    // Nodes.
    let mut node_ids: BTreeSet<i64> = c.nodes.clone();
    node_ids.extend(rows.nodes.iter().map(|n| n.id));
    for id in &node_ids {
        let id = NodeId(*id);
        delta.nodes.insert(id);
        for view in sites.values_mut() {
            if find_sorted(&view.nodes, &id, |n| n.id).is_some() {
                remove_sorted(&mut Arc::make_mut(view).nodes, &id, |n| n.id);
            }
        }
    }
    for row in rows.nodes {
        let node = Node::from(row);
        if let Some(view) = sites.get_mut(&node.site_id) {
            upsert_sorted(&mut Arc::make_mut(view).nodes, Arc::new(node), |n| n.id);
        }
    }

    // Containers.
    let mut container_ids: BTreeSet<i64> = c.containers.clone();
    container_ids.extend(rows.containers.iter().map(|c| c.id));
    for id in &container_ids {
        let id = ContainerId(*id);
        delta.containers.insert(id);
        if let Some(old) = containers.remove(&id) {
            if let Some(view) = sites.get_mut(&old.site_id) {
                remove_sorted(&mut Arc::make_mut(view).containers, &id, |c| c.id);
            }
        }
    }
    for row in rows.containers {
        let container = Arc::new(Container::from(row));
        containers.insert(container.id, container.clone());
        if let Some(view) = sites.get_mut(&container.site_id) {
            upsert_sorted(&mut Arc::make_mut(view).containers, container, |c| c.id);
        }
    }

    // Services of every kind: the old versions leave their lists and the host index first,
    // then the rows read go in, so two services that swap hostnames end up indexed right.
    let mut service_ids: BTreeSet<ServiceId> = c.services.iter().map(|s| ServiceId(*s)).collect();
    service_ids.extend(rows.dns_services.iter().map(|s| s.service_id));
    service_ids.extend(rows.http_services.iter().map(|s| s.service_id));
    service_ids.extend(rows.transport_services.iter().map(|s| s.service_id));
    let mut http_services = prev.http_services.clone();
    let mut transport_services = prev.transport_services.clone();
    let mut by_host = prev.http_service_by_host.clone();
    for id in &service_ids {
        delta.services.insert(*id);
        if let Some(old) = remove_sorted(&mut http_services, id, |s| s.service_id) {
            if let Some(host) = crate::snapshot::http_host(&old, &prev.external_domains) {
                if by_host.get(&host) == Some(id) {
                    by_host.remove(&host);
                }
            }
        }
        remove_sorted(&mut transport_services, id, |s| s.service_id);
        for view in sites.values_mut() {
            if find_sorted(&view.dns_services, id, |s| s.service_id).is_some() {
                remove_sorted(&mut Arc::make_mut(view).dns_services, id, |s| s.service_id);
            }
        }
    }
    for svc in rows.dns_services {
        let site = containers.get(&svc.container_id).map(|c| c.site_id);
        if let Some(view) = site.and_then(|s| sites.get_mut(&s)) {
            upsert_sorted(&mut Arc::make_mut(view).dns_services, Arc::new(svc), |s| {
                s.service_id
            });
        }
    }
    let new_http: Vec<Arc<HttpService>> = rows.http_services.into_iter().map(Arc::new).collect();
    for svc in &new_http {
        upsert_sorted(&mut http_services, svc.clone(), |s| s.service_id);
    }
    for svc in rows.transport_services {
        upsert_sorted(&mut transport_services, Arc::new(svc), |s| s.service_id);
    }

    // Static records.
    let mut record_ids: BTreeSet<i64> = c.dns_records.clone();
    record_ids.extend(rows.records.iter().map(|r| r.id.0));
    for id in &record_ids {
        let id = DnsRecordId(*id);
        delta.dns_records.insert(id);
        for view in sites.values_mut() {
            if find_sorted(&view.records, &id, |r| r.id).is_some() {
                remove_sorted(&mut Arc::make_mut(view).records, &id, |r| r.id);
            }
        }
    }
    for record in rows.records {
        if let Some(view) = sites.get_mut(&record.site_id) {
            upsert_sorted(&mut Arc::make_mut(view).records, Arc::new(record), |r| r.id);
        }
    }

    // External domains.
    let mut external_domains = prev.external_domains.clone();
    let mut domain_ids: BTreeSet<i64> = c.external_domains.clone();
    domain_ids.extend(rows.domains.iter().map(|d| d.id.0));
    for id in &domain_ids {
        let id = ExternalDomainId(*id);
        delta.external_domains.insert(id);
        remove_sorted(&mut external_domains, &id, |d| d.id);
    }
    for domain in rows.domains {
        upsert_sorted(&mut external_domains, Arc::new(domain), |d| d.id);
    }

    let site_by_domain = if site_ids.is_empty() {
        prev.site_by_domain.clone()
    } else {
        crate::snapshot::site_index(&sites)
    };
    let http_service_by_host = if domain_ids.is_empty() {
        for svc in &new_http {
            if let Some(host) = crate::snapshot::http_host(svc, &external_domains) {
                by_host.insert(host, svc.service_id);
            }
        }
        by_host
    } else {
        // A renamed or removed domain moves every one of its services' hosts.
        crate::snapshot::http_host_index(&http_services, &external_domains)
    };
    let mut history = prev.history.clone();
    history.push_back(Arc::new(delta));
    while history.len() > crate::snapshot::NAMING_HISTORY {
        history.pop_front();
    }
    Ok(Naming {
        sites,
        site_by_domain,
        containers,
        http_services,
        http_service_by_host,
        transport_services,
        external_domains,
        loaded_at: Some(Utc::now()),
        version: prev.version + 1,
        history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_into_keys_or_fall_back_to_the_half() {
        let mut c = Changes::default();
        c.note("containers 3,1,2");
        c.note("user_groups 1001:2000,1002:2001");
        c.note("api_keys AbCd1234");
        assert_eq!(ids(&c.containers), vec![1, 2, 3]);
        assert_eq!(ids(&c.memberships), vec![(1001, 2000), (1002, 2001)]);
        assert!(c.api_keys.contains("AbCd1234"));
        assert!(!c.identity_all && !c.naming_all);

        let mut c = Changes::default();
        c.note("containers *");
        assert!(c.naming_all && !c.identity_all);
        let mut c = Changes::default();
        c.note("users 1,x");
        assert!(c.identity_all && !c.naming_all);
        let mut c = Changes::default();
        c.note("groups");
        assert!(c.identity_all);
        let mut c = Changes::default();
        c.note("settings 1");
        assert!(c.identity_all && c.naming_all);
        let mut c = Changes::default();
        c.note("user_groups 1001");
        assert!(c.identity_all);
        assert!(Changes::default().is_empty());
    }

    #[test]
    fn sorted_vectors_stay_sorted() {
        let mut v: imbl::Vector<i32> = imbl::vector![1, 3, 5];
        upsert_sorted(&mut v, 4, |x| *x);
        upsert_sorted(&mut v, 3, |x| *x);
        upsert_sorted(&mut v, 0, |x| *x);
        assert_eq!(v, imbl::vector![0, 1, 3, 4, 5]);
        assert_eq!(remove_sorted(&mut v, &3, |x| *x), Some(3));
        assert_eq!(remove_sorted(&mut v, &9, |x| *x), None);
        assert_eq!(v, imbl::vector![0, 1, 4, 5]);
    }
}
