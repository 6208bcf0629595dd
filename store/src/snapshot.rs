//! The live snapshot: an immutable, in-memory view of everything the protocol servers read on a
//! request. Readers call [`crate::Store::snapshot`] and get an `Arc` they can hold for the whole
//! request; the change feed builds a new snapshot and swaps it in atomically.
//!
//! The snapshot has two independently reloaded halves: [`Identity`] (users, groups,
//! memberships, API keys) and [`Naming`] (sites, nodes, containers, services, external domains,
//! static DNS records), so that a change to a user does not rebuild zones and the other way round.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::error::Result;
use crate::models::*;

/// One consistent view of the database, as of [`Snapshot::loaded_at`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Users, groups, memberships and API keys.
    pub identity: Arc<Identity>,
    /// Sites and what their zones are made of.
    pub naming: Arc<Naming>,
    /// Counts the snapshots built since start (0 = the empty one before the first load).
    pub generation: u64,
    /// When the newest half was loaded.
    pub loaded_at: Instant,
}

impl Snapshot {
    /// The empty snapshot served before the first load.
    pub fn empty() -> Self {
        Self {
            identity: Arc::new(Identity::default()),
            naming: Arc::new(Naming::default()),
            generation: 0,
            loaded_at: Instant::now(),
        }
    }
}

/// Users, groups and their memberships, indexed for the lookups LDAP and the auth endpoint make.
///
/// The maps are persistent (`imbl`): the change feed's next version shares everything but the
/// paths to the entries it changed, so a patch costs what it changes, not the directory's size.
#[derive(Debug, Default, Clone)]
pub struct Identity {
    /// Users by uid number (ordered, so listings are stable).
    pub users: imbl::OrdMap<Uid, Arc<User>>,
    /// Uid by lower-case username.
    pub user_by_name: imbl::HashMap<String, Uid>,
    /// Groups by gid number.
    pub groups: imbl::OrdMap<Gid, Arc<Group>>,
    /// Gid by lower-case group name.
    pub group_by_name: imbl::HashMap<String, Gid>,
    /// Each user's groups (ascending gid); users in no group have no entry.
    pub groups_of: imbl::HashMap<Uid, Arc<[Gid]>>,
    /// Each group's members (ascending uid); groups without members have no entry.
    pub members_of: imbl::HashMap<Gid, Arc<[Uid]>>,
    /// API keys by their public prefix.
    pub api_keys: imbl::HashMap<String, Arc<ApiKey>>,
    /// When this half was loaded.
    pub loaded_at: Option<DateTime<Utc>>,
}

impl Identity {
    /// A user by login name, case-insensitively.
    pub fn user(&self, username: &str) -> Option<&Arc<User>> {
        let uid = self.user_by_name.get(&username.to_ascii_lowercase())?;
        self.users.get(uid)
    }

    /// A group by name, case-insensitively.
    pub fn group(&self, cn: &str) -> Option<&Arc<Group>> {
        let gid = self.group_by_name.get(&cn.to_ascii_lowercase())?;
        self.groups.get(gid)
    }

    /// Whether the user belongs to a group with `is_administrator`.
    pub fn is_admin(&self, uid: Uid) -> bool {
        self.groups_of.get(&uid).is_some_and(|gids| {
            gids.iter()
                .any(|g| self.groups.get(g).is_some_and(|g| g.is_administrator))
        })
    }

    pub(crate) async fn load(pool: &PgPool) -> Result<Self> {
        let mut tx = pool.begin().await?;
        // One repeatable-read transaction: the three tables agree with each other.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let users: Vec<UserRow> = sqlx::query_as(
            "SELECT uid_number, username, cn, sn, given_name, mail, ssh_public_key, user_password,
                    status, password_changed_at, created_at, updated_at
             FROM users",
        )
        .fetch_all(&mut *tx)
        .await?;
        let groups: Vec<Group> = sqlx::query_as(
            "SELECT gid_number, cn, description, is_administrator, created_at, updated_at FROM groups",
        )
        .fetch_all(&mut *tx)
        .await?;
        let memberships: Vec<(i32, i32)> = sqlx::query_as(
            "SELECT uid_number, gid_number FROM user_groups ORDER BY uid_number, gid_number",
        )
        .fetch_all(&mut *tx)
        .await?;
        let keys: Vec<ApiKey> = sqlx::query_as(
            "SELECT id, prefix, key_hash, uid_number, name, last_used_at, expires_at, created_at
             FROM api_keys",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;

        let mut identity = Identity {
            loaded_at: Some(Utc::now()),
            ..Default::default()
        };
        for row in users {
            let user = User::from(row);
            identity
                .user_by_name
                .insert(user.username.to_ascii_lowercase(), user.uid_number);
            identity.users.insert(user.uid_number, Arc::new(user));
        }
        for group in groups {
            identity
                .group_by_name
                .insert(group.cn.to_ascii_lowercase(), group.gid_number);
            identity.groups.insert(group.gid_number, Arc::new(group));
        }
        let mut groups_of: HashMap<Uid, Vec<Gid>> = HashMap::new();
        let mut members_of: HashMap<Gid, Vec<Uid>> = HashMap::new();
        for (uid, gid) in memberships {
            groups_of.entry(Uid(uid)).or_default().push(Gid(gid));
            members_of.entry(Gid(gid)).or_default().push(Uid(uid));
        }
        identity.groups_of = groups_of.into_iter().map(|(u, g)| (u, g.into())).collect();
        identity.members_of = members_of
            .into_iter()
            .map(|(g, mut m)| {
                m.sort_unstable();
                (g, m.into())
            })
            .collect();
        for key in keys {
            identity.api_keys.insert(key.prefix.clone(), Arc::new(key));
        }
        Ok(identity)
    }
}

/// One site and everything its zones are built from. Every list is in ascending id order and
/// persistent (`imbl`): a patch that changes one container copies a few tree nodes, not the
/// site's lists.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteView {
    /// The site.
    pub site: Site,
    /// Its nodes.
    pub nodes: imbl::Vector<Arc<Node>>,
    /// Its containers.
    pub containers: imbl::Vector<Arc<Container>>,
    /// SRV-publishing services of its containers.
    pub dns_services: imbl::Vector<Arc<DnsService>>,
    /// Static records of its zone.
    pub records: imbl::Vector<Arc<DnsRecord>>,
}

impl SiteView {
    /// A site with no rows yet.
    pub fn new(site: Site) -> Self {
        Self {
            site,
            nodes: imbl::Vector::new(),
            containers: imbl::Vector::new(),
            dns_services: imbl::Vector::new(),
            records: imbl::Vector::new(),
        }
    }
}

/// The item with key `key` in `list`, which is in ascending key order.
pub fn find_sorted<'a, T: Clone, K: Ord>(
    list: &'a imbl::Vector<T>,
    key: &K,
    key_of: impl Fn(&T) -> K,
) -> Option<&'a T> {
    list.binary_search_by(|x| key_of(x).cmp(key))
        .ok()
        .and_then(|i| list.get(i))
}

/// Sites with their zones' contents, and the edge's services.
#[derive(Debug, Default)]
pub struct Naming {
    /// Sites by id.
    pub sites: BTreeMap<SiteId, Arc<SiteView>>,
    /// Site id by lower-case internal domain.
    pub site_by_domain: Arc<HashMap<String, SiteId>>,
    /// Containers by id (across sites); persistent, so a patch copies only what it changes.
    pub containers: imbl::HashMap<ContainerId, Arc<Container>>,
    /// HTTP services, in ascending service id order (see [`Naming::http_service`]).
    pub http_services: imbl::Vector<Arc<HttpService>>,
    /// HTTP service id by lower-case `<external_hostname>.<domain>`.
    pub http_service_by_host: imbl::HashMap<String, ServiceId>,
    /// TCP/UDP services, in ascending service id order.
    pub transport_services: imbl::Vector<Arc<TransportService>>,
    /// External domains, in ascending id order.
    pub external_domains: imbl::Vector<Arc<ExternalDomain>>,
    /// When this half was loaded.
    pub loaded_at: Option<DateTime<Utc>>,
    /// Counts the naming halves made since start: a full load or a patch each make one.
    pub version: u64,
    /// The patches that led here, oldest first, the last one making this half (at most
    /// [`NAMING_HISTORY`]; empty after a full load, and a consumer then rebuilds whatever it
    /// derives): one that skipped a few versions still patches, through [`Naming::delta_since`].
    pub history: imbl::Vector<Arc<NamingDelta>>,
}

/// Steps a [`Naming`] remembers in `history`.
pub const NAMING_HISTORY: usize = 64;

/// The rows a patched [`Naming`] changed (inserted, updated or deleted) relative to the naming
/// half it was patched from. A consumer holding that earlier half (`version == base`) finds a
/// deleted row's old contents there; one holding any other half must rebuild.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NamingDelta {
    /// `version` of the naming half this one was patched from.
    pub base: u64,
    /// Sites whose own row changed (domain, network, zone settings).
    pub sites: BTreeSet<SiteId>,
    /// Nodes that changed.
    pub nodes: BTreeSet<NodeId>,
    /// Containers that changed.
    pub containers: BTreeSet<ContainerId>,
    /// Services (of any kind) that changed.
    pub services: BTreeSet<ServiceId>,
    /// Static DNS records that changed.
    pub dns_records: BTreeSet<DnsRecordId>,
    /// External domains that changed.
    pub external_domains: BTreeSet<ExternalDomainId>,
}

impl Naming {
    pub(crate) async fn load(pool: &PgPool) -> Result<Self> {
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let sites: Vec<SiteRow> = sqlx::query_as(&format!(
            "SELECT {} FROM sites",
            crate::queries::SITE_COLUMNS
        ))
        .fetch_all(&mut *tx)
        .await?;
        let nodes: Vec<NodeRow> = sqlx::query_as(&format!(
            "SELECT {} FROM nodes ORDER BY id",
            crate::queries::NODE_COLUMNS
        ))
        .fetch_all(&mut *tx)
        .await?;
        let containers: Vec<ContainerRow> = sqlx::query_as(&format!(
            "SELECT {} FROM containers ORDER BY id",
            crate::queries::CONTAINER_COLUMNS
        ))
        .fetch_all(&mut *tx)
        .await?;
        let dns_services: Vec<DnsService> = sqlx::query_as(
            "SELECT s.id AS service_id, s.container_id, d.service_name, s.container_port
             FROM dns_services d JOIN services s ON s.id = d.service_id
             ORDER BY s.id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let http_services: Vec<HttpService> = sqlx::query_as(
            "SELECT s.id AS service_id, s.container_id, s.container_port, h.external_hostname,
                    h.external_domain_id, h.backend_protocol, h.auth_required,
                    h.allowed_groups
             FROM http_services h JOIN services s ON s.id = h.service_id
             ORDER BY s.id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let transport_services: Vec<TransportService> = sqlx::query_as(
            "SELECT s.id AS service_id, s.container_id, s.container_port, t.protocol,
                    t.external_port, t.use_tls
             FROM transport_services t JOIN services s ON s.id = t.service_id
             ORDER BY s.id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let external_domains: Vec<ExternalDomain> = sqlx::query_as(&format!(
            "SELECT {} FROM external_domains ORDER BY id",
            crate::queries::EXTERNAL_DOMAIN_COLUMNS
        ))
        .fetch_all(&mut *tx)
        .await?;
        let records: Vec<DnsRecord> = sqlx::query_as(
            "SELECT id, site_id, name, type, value, ttl FROM dns_records ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;

        let mut views: BTreeMap<SiteId, SiteView> = sites
            .into_iter()
            .map(|row| {
                let site = Site::from(row);
                (site.id, SiteView::new(site))
            })
            .collect();
        for row in nodes {
            let node = Node::from(row);
            if let Some(view) = views.get_mut(&node.site_id) {
                view.nodes.push_back(Arc::new(node));
            }
        }
        let mut by_id = imbl::HashMap::new();
        for row in containers {
            let container = Arc::new(Container::from(row));
            by_id.insert(container.id, container.clone());
            if let Some(view) = views.get_mut(&container.site_id) {
                view.containers.push_back(container);
            }
        }
        for svc in dns_services {
            let site = by_id.get(&svc.container_id).map(|c| c.site_id);
            if let Some(view) = site.and_then(|s| views.get_mut(&s)) {
                view.dns_services.push_back(Arc::new(svc));
            }
        }
        for record in records {
            if let Some(view) = views.get_mut(&record.site_id) {
                view.records.push_back(Arc::new(record));
            }
        }
        let sites: BTreeMap<SiteId, Arc<SiteView>> =
            views.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        let site_by_domain = site_index(&sites);
        let http_services: imbl::Vector<_> = http_services.into_iter().map(Arc::new).collect();
        let external_domains: imbl::Vector<_> =
            external_domains.into_iter().map(Arc::new).collect();
        let http_service_by_host = http_host_index(&http_services, &external_domains);
        Ok(Naming {
            sites,
            site_by_domain,
            containers: by_id,
            http_services,
            http_service_by_host,
            transport_services: transport_services.into_iter().map(Arc::new).collect(),
            external_domains,
            loaded_at: Some(Utc::now()),
            version: 0,
            history: imbl::Vector::new(),
        })
    }
}

/// Site id by lower-case internal domain.
pub(crate) fn site_index(sites: &BTreeMap<SiteId, Arc<SiteView>>) -> Arc<HashMap<String, SiteId>> {
    Arc::new(
        sites
            .values()
            .map(|v| (v.site.internal_domain.clone(), v.site.id))
            .collect(),
    )
}

/// The lower-case `<external_hostname>.<domain>` an HTTP service answers on, if its domain is
/// known.
pub(crate) fn http_host(
    svc: &HttpService,
    external_domains: &imbl::Vector<Arc<ExternalDomain>>,
) -> Option<String> {
    let domain = find_sorted(external_domains, &svc.external_domain_id, |d| d.id)?;
    Some(format!("{}.{}", svc.external_hostname, domain.domain).to_ascii_lowercase())
}

/// The HTTP services by lower-case `<external_hostname>.<domain>`.
pub(crate) fn http_host_index(
    http_services: &imbl::Vector<Arc<HttpService>>,
    external_domains: &imbl::Vector<Arc<ExternalDomain>>,
) -> imbl::HashMap<String, ServiceId> {
    http_services
        .iter()
        .filter_map(|svc| Some((http_host(svc, external_domains)?, svc.service_id)))
        .collect()
}

impl Identity {
    /// Whether both hold the same rows and indexes (`loaded_at` aside): what a patched half
    /// must have in common with a full load.
    pub fn same_contents(&self, other: &Identity) -> bool {
        self.users == other.users
            && self.user_by_name == other.user_by_name
            && self.groups == other.groups
            && self.group_by_name == other.group_by_name
            && self.groups_of == other.groups_of
            && self.members_of == other.members_of
            && self.api_keys == other.api_keys
    }
}

impl NamingDelta {
    /// Adds the rows `other` names.
    pub fn extend(&mut self, other: &NamingDelta) {
        self.sites.extend(other.sites.iter().copied());
        self.nodes.extend(other.nodes.iter().copied());
        self.containers.extend(other.containers.iter().copied());
        self.services.extend(other.services.iter().copied());
        self.dns_records.extend(other.dns_records.iter().copied());
        self.external_domains
            .extend(other.external_domains.iter().copied());
    }
}

impl Naming {
    /// What differs from the naming half with version `delta.base`, when this one was patched
    /// from it; `None` after a full load.
    pub fn delta(&self) -> Option<&Arc<NamingDelta>> {
        self.history.back()
    }

    /// The rows that differ between the naming half with `version` and this one, when this one
    /// was patched from it in steps `history` still holds; `None` otherwise (rebuild).
    pub fn delta_since(&self, version: u64) -> Option<Arc<NamingDelta>> {
        if let Some(d) = self.delta().filter(|d| d.base == version) {
            return Some(d.clone());
        }
        let start = self.history.iter().position(|d| d.base == version)?;
        let mut out = NamingDelta {
            base: version,
            ..NamingDelta::default()
        };
        let mut at = version;
        for d in self.history.iter().skip(start) {
            if d.base != at {
                return None;
            }
            out.extend(d);
            at += 1;
        }
        (at == self.version).then(|| Arc::new(out))
    }

    /// Rebuilds `http_service_by_host` from `http_services` and `external_domains` (for halves
    /// put together by hand, as tests do).
    pub fn index_http_services(&mut self) {
        self.http_service_by_host = http_host_index(&self.http_services, &self.external_domains);
    }

    /// The HTTP service with `id`.
    pub fn http_service(&self, id: ServiceId) -> Option<&Arc<HttpService>> {
        find_sorted(&self.http_services, &id, |s| s.service_id)
    }

    /// The HTTP service answering on `host` (lower-case, no trailing dot).
    pub fn http_service_at(&self, host: &str) -> Option<&Arc<HttpService>> {
        self.http_service(*self.http_service_by_host.get(host)?)
    }

    /// Whether both hold the same rows and indexes (`loaded_at`, `version` and `history` aside).
    pub fn same_contents(&self, other: &Naming) -> bool {
        self.sites == other.sites
            && self.site_by_domain == other.site_by_domain
            && self.containers == other.containers
            && self.http_services == other.http_services
            && self.http_service_by_host == other.http_service_by_host
            && self.transport_services == other.transport_services
            && self.external_domains == other.external_domains
    }
}

/// Which halves of the snapshot a change touches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dirty {
    /// Identity tables changed.
    pub identity: bool,
    /// Naming tables changed.
    pub naming: bool,
}

impl Dirty {
    /// Everything.
    pub const ALL: Dirty = Dirty {
        identity: true,
        naming: true,
    };

    /// Marks the half that `table` feeds. Unknown tables mark both (safe).
    pub fn mark(&mut self, table: &str) {
        match table {
            "users" | "groups" | "user_groups" | "api_keys" => self.identity = true,
            "sites" | "nodes" | "containers" | "services" | "http_services"
            | "transport_services" | "dns_services" | "dns_records" | "external_domains" => {
                self.naming = true
            }
            _ => *self = Dirty::ALL,
        }
    }

    /// Nothing to reload.
    pub fn is_clean(self) -> bool {
        !self.identity && !self.naming
    }
}

/// Builds the next snapshot from `previous`, reloading the halves `dirty` names.
pub(crate) async fn rebuild(pool: &PgPool, previous: &Snapshot, dirty: Dirty) -> Result<Snapshot> {
    // A full load of the naming half follows the previous half's version and carries no delta.
    let load_naming = || async {
        let mut naming = Naming::load(pool).await?;
        naming.version = previous.naming.version + 1;
        Ok::<_, crate::error::StoreError>(Arc::new(naming))
    };
    let (identity, naming) = match (dirty.identity, dirty.naming) {
        (true, true) => {
            let (i, n) = tokio::try_join!(Identity::load(pool), load_naming())?;
            (Arc::new(i), n)
        }
        (true, false) => (
            Arc::new(Identity::load(pool).await?),
            previous.naming.clone(),
        ),
        (false, true) => (previous.identity.clone(), load_naming().await?),
        (false, false) => (previous.identity.clone(), previous.naming.clone()),
    };
    Ok(Snapshot {
        identity,
        naming,
        generation: previous.generation + 1,
        loaded_at: Instant::now(),
    })
}
