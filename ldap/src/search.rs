//! Searches, from a request and a snapshot to entries, apart from the connection's state so the
//! work can run on any thread.
//!
//! Every search first runs on the async runtime with a small [`Allowance`] ([`INLINE_WORK`] units
//! of narrowing and evaluation, [`INLINE_OUTPUT`] values of output): enough for the indexed
//! lookups NSS makes (a uid, a uidNumber, a user's groups). A search that needs more is started
//! again on the search pool, where `ldap.search_threads` searches at a time run on tokio's
//! blocking threads: there evaluation may spend `ldap.search_work_limit` units (beyond them the
//! search ends with adminLimitExceeded) and output only by the size limit and the directory. So an
//! expensive search never occupies a runtime worker (HTTP, `/auth/verify` and DNS over TCP keep
//! theirs), nor more threads than the pool allows, and cheap searches never wait behind it.
//!
//! Not here: controls, access to the base, paging state (the session's).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ldap3_proto::proto::{
    LdapMsg, LdapOp, LdapPartialAttribute, LdapResult, LdapResultCode, LdapSearchRequest,
    LdapSearchResultEntry, LdapSearchScope,
};
use siteward_store::{Gid, Identity, Snapshot, Uid};

use crate::dit::{Node, Principal};
use crate::dn::Dn;
use crate::filter::{Filter, Truth, Work};
use crate::schema::{Attr, ALL_ATTRS};
use crate::session::result;
use crate::LdapServer;

/// Units of narrowing and evaluation a search may spend on the async runtime.
pub const INLINE_WORK: u64 = 2_000;

/// Attribute values a search may build on the async runtime.
pub const INLINE_OUTPUT: u64 = 2_000;

/// An entry key that outlives one request (for paging).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    RootDse,
    Subschema,
    Base,
    People,
    Groups,
    User(Uid),
    Group(Gid),
}

impl Key {
    fn of(node: Node<'_>) -> Key {
        match node {
            Node::RootDse => Key::RootDse,
            Node::Subschema => Key::Subschema,
            Node::Base => Key::Base,
            Node::People => Key::People,
            Node::Groups => Key::Groups,
            Node::User(u) => Key::User(u.uid_number),
            Node::Group(g) => Key::Group(g.gid_number),
        }
    }

    fn node(self, id: &Identity) -> Option<Node<'_>> {
        Some(match self {
            Key::RootDse => Node::RootDse,
            Key::Subschema => Node::Subschema,
            Key::Base => Node::Base,
            Key::People => Node::People,
            Key::Groups => Node::Groups,
            Key::User(uid) => Node::User(id.users.get(&uid)?),
            Key::Group(gid) => Node::Group(id.groups.get(&gid)?),
        })
    }
}

/// Attribute selection of a search request.
struct Selection {
    user: bool,
    operational: bool,
    explicit: Vec<Attr>,
}

impl Selection {
    fn parse(attrs: &[String], root_dse: bool) -> Self {
        let mut sel = Selection {
            user: attrs.is_empty(),
            operational: attrs.is_empty() && root_dse,
            explicit: Vec::new(),
        };
        for a in attrs {
            match a.trim() {
                "*" => {
                    sel.user = true;
                    sel.operational |= root_dse;
                }
                "+" => sel.operational = true,
                "1.1" => {}
                name => {
                    if let Some(attr) = Attr::parse(name) {
                        if !sel.explicit.contains(&attr) {
                            sel.explicit.push(attr);
                        }
                    }
                }
            }
        }
        sel
    }

    fn wants(&self, attr: Attr) -> bool {
        self.explicit.contains(&attr)
            || if attr.operational() {
                self.operational
            } else {
                self.user
            }
    }
}

/// Everything a search reads, owned, so that it can move to another thread.
pub(crate) struct Query {
    pub server: Arc<LdapServer>,
    pub snapshot: Arc<Snapshot>,
    pub who: Principal,
    /// Message id of the request.
    pub id: i32,
    pub req: LdapSearchRequest,
    pub base: Dn,
    /// When the request arrived (the time limit counts from here, waiting for the pool included).
    pub started: Instant,
}

/// What a search may spend where it runs.
#[derive(Debug)]
pub(crate) struct Allowance {
    work: Work,
    output: Work,
    inline: bool,
}

impl Allowance {
    fn inline() -> Self {
        Self {
            work: Work::new(INLINE_WORK),
            output: Work::new(INLINE_OUTPUT),
            inline: true,
        }
    }

    fn pooled(work_limit: u64) -> Self {
        Self {
            work: Work::new(work_limit),
            output: Work::unlimited(),
            inline: false,
        }
    }
}

/// The inline allowance ran out: the search must run on the pool.
#[derive(Debug)]
pub(crate) struct Moved;

impl LdapServer {
    /// Runs `job` on the runtime with the inline allowance and, when that is not enough, again
    /// on the search pool with the full one. An error is the result to answer with.
    pub(crate) async fn run_search<T: Send + 'static>(
        self: &Arc<Self>,
        job: impl Fn(&mut Allowance) -> Result<T, Moved> + Send + 'static,
    ) -> Result<T, LdapResult> {
        if let Ok(done) = job(&mut Allowance::inline()) {
            return Ok(done);
        }
        let internal = || result(LdapResultCode::OperationsError, "internal error");
        let waited = std::time::Instant::now();
        let permit = self.searches.clone().acquire_owned().await.map_err(|_| {
            tracing::error!("the search pool is closed");
            internal()
        })?;
        tracing::debug!(waited = ?waited.elapsed(), "search moved to the search pool");
        let limit = self.settings.search_work_limit;
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(|| job(&mut Allowance::pooled(limit)))
        });
        match task.await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(Moved)) => {
                tracing::error!("a pooled search asked to move");
                Err(internal())
            }
            Err(e) => {
                tracing::error!(error = %e, "a search task failed");
                Err(internal())
            }
        }
    }
}

impl Query {
    fn time_limit(&self) -> Duration {
        let server = self.server.settings.time_limit;
        let client = Duration::from_secs(u64::try_from(self.req.timelimit).unwrap_or(0));
        if client.is_zero() {
            server
        } else {
            client.min(server)
        }
    }

    /// The entries the search matches, in order, and the result to finish with (on an error
    /// such as noSuchObject, no entries).
    pub(crate) fn matching(&self, a: &mut Allowance) -> Result<(Vec<Key>, LdapResult), Moved> {
        let dir = &self.server.dir;
        let id = &*self.snapshot.identity;
        let who = self.who;
        let filter = Filter::compile(&self.req.filter);
        let time_limit = self.time_limit();
        let base = &self.base;

        // The root: the root DSE with base scope; below it, our suffix.
        let (start, scope) = if base.is_root() {
            match self.req.scope {
                LdapSearchScope::Base => (Node::RootDse, LdapSearchScope::Base),
                LdapSearchScope::OneLevel => (Node::Base, LdapSearchScope::Base),
                _ => (Node::Base, LdapSearchScope::Subtree),
            }
        } else {
            match dir.lookup(id, base) {
                Some(n) => (n, self.req.scope.clone()),
                None => {
                    let mut res = result(LdapResultCode::NoSuchObject, "no such entry");
                    let mut up = base.parent();
                    while let Some(p) = up {
                        if p.is_root() {
                            break;
                        }
                        if dir.lookup(id, &p).is_some() {
                            res.matcheddn = p.to_string();
                            break;
                        }
                        up = p.parent();
                    }
                    return Ok((Vec::new(), res));
                }
            }
        };

        let over_limit = |a: &Allowance| {
            if a.inline {
                Err(Moved)
            } else {
                Ok((
                    Vec::new(),
                    result(
                        LdapResultCode::AdminLimitExceeded,
                        "the search needs more work than ldap.search_work_limit allows",
                    ),
                ))
            }
        };
        let candidates = filter.candidates(dir, id, &mut a.work);
        if a.work.exhausted() {
            return over_limit(a);
        }
        let mut nodes: Vec<Node<'_>> = Vec::new();
        let include_self = matches!(scope, LdapSearchScope::Base | LdapSearchScope::Subtree);
        if include_self {
            nodes.push(start);
        }
        if scope != LdapSearchScope::Base {
            let children = |n: Node<'_>| -> Vec<Node<'_>> {
                match n {
                    Node::Base => vec![Node::People, Node::Groups],
                    _ => Vec::new(),
                }
            };
            let deep = matches!(scope, LdapSearchScope::Subtree | LdapSearchScope::Children);
            let mut containers = Vec::new();
            for c in children(start) {
                nodes.push(c);
                if deep {
                    containers.push(c);
                }
            }
            if matches!(start, Node::People | Node::Groups) {
                containers.push(start);
            }
            for c in containers {
                match c {
                    Node::People => match &candidates.users {
                        Some(uids) => nodes.extend(
                            uids.iter()
                                .filter_map(|u| id.users.get(u))
                                .map(|u| Node::User(u)),
                        ),
                        None => nodes.extend(id.users.values().map(|u| Node::User(u))),
                    },
                    Node::Groups => match &candidates.groups {
                        Some(gids) => nodes.extend(
                            gids.iter()
                                .filter_map(|g| id.groups.get(g))
                                .map(|g| Node::Group(g)),
                        ),
                        None => nodes.extend(id.groups.values().map(|g| Node::Group(g))),
                    },
                    _ => {}
                }
            }
        }
        let mut keys = Vec::new();
        for node in nodes {
            if self.started.elapsed() >= time_limit {
                return Ok((
                    keys,
                    result(LdapResultCode::TimeLimitExceeded, "time limit exceeded"),
                ));
            }
            let truth = filter.eval_within(dir, id, who, node, &mut a.work);
            if a.work.exhausted() {
                return over_limit(a);
            }
            if truth == Truth::True {
                keys.push(Key::of(node));
            }
        }
        Ok((keys, result(LdapResultCode::Success, "")))
    }

    /// The entries of `keys` that still exist in the query's snapshot, with the selected
    /// attributes.
    pub(crate) fn entries(&self, keys: &[Key], a: &mut Allowance) -> Result<Vec<LdapMsg>, Moved> {
        let identity = &*self.snapshot.identity;
        let dir = &self.server.dir;
        let sel = Selection::parse(&self.req.attrs, self.base.is_root());
        let mut msgs = Vec::with_capacity(keys.len());
        for node in keys.iter().filter_map(|k| k.node(identity)) {
            let mut values = 1usize;
            let attributes = ALL_ATTRS
                .iter()
                .filter(|a| sel.wants(**a))
                .filter_map(|attr| {
                    let vals = dir.values(identity, self.who, node, *attr)?;
                    values += vals.len();
                    Some(LdapPartialAttribute {
                        atype: attr.name().to_owned(),
                        vals: if self.req.typesonly {
                            Vec::new()
                        } else {
                            vals.into_iter().map(String::into_bytes).collect()
                        },
                    })
                })
                .collect();
            if !a.output.spend(u64::try_from(values).unwrap_or(u64::MAX)) && a.inline {
                return Err(Moved);
            }
            msgs.push(LdapMsg::new(
                self.id,
                LdapOp::SearchResultEntry(LdapSearchResultEntry {
                    dn: dir.dn_of(node),
                    attributes,
                }),
            ));
        }
        Ok(msgs)
    }

    /// A whole non-paged search: its entries (up to the size limit) and SearchResultDone.
    pub(crate) fn run(&self, a: &mut Allowance) -> Result<Vec<LdapMsg>, Moved> {
        let (keys, outcome) = self.matching(a)?;
        let server_limit = self.server.settings.size_limit;
        let client_limit = usize::try_from(self.req.sizelimit).unwrap_or(0);
        let limit = match (client_limit, server_limit) {
            (0, 0) => usize::MAX,
            (0, s) | (s, 0) => s,
            (c, s) => c.min(s),
        };
        let shown = keys.get(..limit).unwrap_or(&keys);
        let mut msgs = self.entries(shown, a)?;
        let res = if keys.len() > limit {
            result(LdapResultCode::SizeLimitExceeded, "size limit exceeded")
        } else {
            outcome
        };
        msgs.push(LdapMsg::new(self.id, LdapOp::SearchResultDone(res)));
        Ok(msgs)
    }
}
