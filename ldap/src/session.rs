//! The per-connection protocol state machine: one [`Session`] per connection turns each request
//! into its responses with [`Session::handle`]. It never touches a socket; the connection loop in
//! [`crate::net`] feeds it decoded messages and writes back what it returns, and acts on
//! [`Action`] (StartTLS, close).
//!
//! Reads come from the store's snapshot (no database query per search); searches run through
//! [`crate::search`] (on the runtime while cheap, on the search pool otherwise). Binds pass the
//! failed-bind limits ([`crate::throttle`]) and verify argon2 off the runtime through
//! `siteward_store::password`; Password Modify writes through the store.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::{
    LdapBindCred, LdapBindRequest, LdapBindResponse, LdapCompareRequest, LdapExtendedRequest,
    LdapExtendedResponse, LdapMsg, LdapOp, LdapPasswordModifyRequest, LdapPasswordModifyResponse,
    LdapResult, LdapResultCode, LdapSearchRequest, LdapSearchScope, OID_PASSWORD_MODIFY,
    OID_WHOAMI,
};
use siteward_store::password::Lane;
use siteward_store::{Identity, Snapshot, StoreError, Uid, User, UserStatus};
use tokio::time::Instant;

use crate::dit::{Principal, OID_NOTICE_OF_DISCONNECTION, OID_START_TLS};
use crate::dn::Dn;
use crate::filter::{Filter, Truth};
use crate::schema::Attr;
use crate::search::{Key, Query};
use crate::throttle::Subject;
use crate::LdapServer;

/// What the connection loop does after writing a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the next request.
    Continue,
    /// Start TLS on the connection now (the reply says success).
    StartTls,
    /// Close the connection.
    Close,
}

/// The responses to one request, and what to do next.
#[derive(Debug)]
pub struct Reply {
    /// Messages to write, in order.
    pub msgs: Vec<LdapMsg>,
    /// What to do after writing them.
    pub action: Action,
}

impl Reply {
    fn one(msg: LdapMsg) -> Self {
        Self {
            msgs: vec![msg],
            action: Action::Continue,
        }
    }
}

/// A paged search in progress: the matching entries, fixed at the first page, and the snapshot
/// they come from (so pages are consistent with each other).
struct Paged {
    cookie: Vec<u8>,
    request: LdapSearchRequest,
    snapshot: Arc<Snapshot>,
    keys: Vec<Key>,
    pos: usize,
}

/// Paged searches a session may keep open; the oldest is dropped beyond this.
const MAX_PAGED: usize = 8;

pub(crate) fn result(code: LdapResultCode, message: impl Into<String>) -> LdapResult {
    LdapResult {
        code,
        matcheddn: String::new(),
        message: message.into(),
        referral: Vec::new(),
    }
}

/// The unsolicited notice sent before closing a connection for a protocol violation.
pub fn notice_of_disconnection(code: LdapResultCode, message: &str) -> LdapMsg {
    LdapMsg::new(
        0,
        LdapOp::ExtendedResponse(LdapExtendedResponse {
            res: result(code, message),
            name: Some(OID_NOTICE_OF_DISCONNECTION.into()),
            value: None,
        }),
    )
}

const READ_ONLY: &str =
    "the directory is read-only over LDAP; manage users and groups with the admin API (/api)";

/// How a password check ended.
enum Checked {
    /// The password is right.
    Right,
    /// Verified and wrong (or the account cannot bind).
    Wrong,
    /// Refused without verifying by a failed-bind limit.
    Refused,
    /// The verification could not run.
    Unavailable,
}

/// One connection's protocol state.
pub struct Session {
    server: Arc<LdapServer>,
    peer: IpAddr,
    bound: Option<Uid>,
    tls: bool,
    pages: VecDeque<Paged>,
    cookies: u64,
}

impl Session {
    /// A fresh, anonymous session for a client at `peer`; `tls` when the transport is already
    /// encrypted (LDAPS).
    pub fn new(server: Arc<LdapServer>, peer: IpAddr, tls: bool) -> Self {
        Self {
            server,
            peer,
            bound: None,
            tls,
            pages: VecDeque::new(),
            cookies: 0,
        }
    }

    /// Marks the transport as encrypted (after StartTLS).
    pub fn set_tls(&mut self) {
        self.tls = true;
    }

    /// The bound user's principal in the current snapshot; a user deleted or deactivated since
    /// the bind is anonymous from then on.
    fn principal(&self, identity: &Identity) -> Principal {
        match self.bound.and_then(|uid| identity.users.get(&uid)) {
            Some(u) if u.status == UserStatus::Active => {
                self.server.dir.principal_of(identity, u.uid_number)
            }
            _ => Principal::Anonymous,
        }
    }

    /// Handles one request.
    pub async fn handle(&mut self, msg: LdapMsg) -> Reply {
        let id = msg.msgid;
        let started = std::time::Instant::now();
        let (name, reply) = match msg.op {
            LdapOp::BindRequest(req) => ("bind", self.bind(id, req).await),
            LdapOp::SearchRequest(req) => ("search", self.search(id, req, &msg.ctrl).await),
            LdapOp::ExtendedRequest(req) => ("extended", self.extended(id, req).await),
            LdapOp::CompareRequest(req) => ("compare", self.compare(id, req)),
            LdapOp::UnbindRequest => (
                "unbind",
                Reply {
                    msgs: Vec::new(),
                    action: Action::Close,
                },
            ),
            LdapOp::AbandonRequest(_) => (
                // Requests are answered one at a time, so there is nothing left to abandon.
                "abandon",
                Reply {
                    msgs: Vec::new(),
                    action: Action::Continue,
                },
            ),
            LdapOp::AddRequest(_) => (
                "add",
                Reply::one(LdapMsg::new(
                    id,
                    LdapOp::AddResponse(result(LdapResultCode::UnwillingToPerform, READ_ONLY)),
                )),
            ),
            LdapOp::DelRequest(_) => (
                "delete",
                Reply::one(LdapMsg::new(
                    id,
                    LdapOp::DelResponse(result(LdapResultCode::UnwillingToPerform, READ_ONLY)),
                )),
            ),
            LdapOp::ModifyRequest(_) => (
                "modify",
                Reply::one(LdapMsg::new(
                    id,
                    LdapOp::ModifyResponse(result(LdapResultCode::UnwillingToPerform, READ_ONLY)),
                )),
            ),
            LdapOp::ModifyDNRequest(_) => (
                "moddn",
                Reply::one(LdapMsg::new(
                    id,
                    LdapOp::ModifyDNResponse(result(LdapResultCode::UnwillingToPerform, READ_ONLY)),
                )),
            ),
            // A response or intermediate message from a client is a protocol violation.
            _ => (
                "invalid",
                Reply {
                    msgs: vec![notice_of_disconnection(
                        LdapResultCode::ProtocolError,
                        "a client sent a server-to-client message",
                    )],
                    action: Action::Close,
                },
            ),
        };
        self.server.metrics.observe(name, &reply, started.elapsed());
        reply
    }

    async fn bind(&mut self, id: i32, req: LdapBindRequest) -> Reply {
        let respond = |code: LdapResultCode, message: &str| {
            Reply::one(LdapMsg::new(
                id,
                LdapOp::BindResponse(LdapBindResponse {
                    res: result(code, message),
                    saslcreds: None,
                }),
            ))
        };
        // A bind, whatever its outcome, first drops the previous authentication (RFC 4513).
        self.bound = None;
        self.pages.clear();
        if req.version != 3 {
            return respond(LdapResultCode::ProtocolError, "only LDAPv3 is supported");
        }
        let password = match req.cred {
            LdapBindCred::Simple(pw) => pw,
            LdapBindCred::SASL(_) | LdapBindCred::Unsupported => {
                return respond(
                    LdapResultCode::AuthMethodNotSupported,
                    "only simple binds are supported (use TLS)",
                )
            }
        };
        let dn_text = req.dn.trim();
        if dn_text.is_empty() {
            if !password.is_empty() {
                return respond(
                    LdapResultCode::InvalidCredentials,
                    "a password without a name",
                );
            }
            return match self.server.dir.anonymous {
                crate::AnonymousAccess::Read => respond(LdapResultCode::Success, ""),
                crate::AnonymousAccess::Deny => respond(
                    LdapResultCode::InappropriateAuthentication,
                    "anonymous binds are disabled",
                ),
            };
        }
        if password.is_empty() {
            // RFC 4513 section 5.1.2: unauthenticated binds must not succeed.
            return respond(
                LdapResultCode::UnwillingToPerform,
                "unauthenticated bind (a name without a password) is not allowed",
            );
        }
        let Ok(dn) = Dn::parse(dn_text) else {
            return respond(LdapResultCode::InvalidDNSyntax, "invalid DN");
        };
        let snapshot = self.server.store.snapshot();
        let user = self.server.dir.user_of_dn(&snapshot.identity, &dn).cloned();
        match self.check_password(&dn, user.as_deref(), password).await {
            Checked::Right => match user {
                Some(u) => {
                    self.bound = Some(u.uid_number);
                    tracing::info!(user = %u.username, peer = %self.peer, "bind");
                    respond(LdapResultCode::Success, "")
                }
                None => respond(LdapResultCode::InvalidCredentials, "invalid credentials"),
            },
            Checked::Wrong => {
                tracing::warn!(dn = %dn, peer = %self.peer, "failed bind");
                respond(LdapResultCode::InvalidCredentials, "invalid credentials")
            }
            // The same answer as a wrong password: a refusal tells nothing about the password.
            Checked::Refused => respond(LdapResultCode::InvalidCredentials, "invalid credentials"),
            Checked::Unavailable => respond(LdapResultCode::Busy, "try again later"),
        }
    }

    /// Checks `password` for the account `dn` names (`user`, if it exists) under the
    /// failed-bind limits: refused without verifying when the account or the client's address
    /// is over its limit, otherwise verified in the argon2 lane the limits choose. Unknown,
    /// pending and suspended users cost one verification like everybody else.
    async fn check_password(&self, dn: &Dn, user: Option<&User>, password: String) -> Checked {
        let subject = Subject {
            dn: dn.to_string(),
            account: user.is_some(),
            address: self.peer,
        };
        let attempt = match self.server.throttle.begin(subject).await {
            Ok(attempt) => attempt,
            Err(scope) => {
                self.server.metrics.throttled(scope);
                tracing::debug!(dn = %dn, peer = %self.peer, limit = scope.label(),
                    "bind refused without verifying: failed-bind limit");
                return Checked::Refused;
            }
        };
        let hash = user
            .filter(|u| u.status == UserStatus::Active)
            .and_then(|u| u.password_hash.clone());
        let lane = if attempt.suspect {
            Lane::Suspect
        } else {
            Lane::Normal
        };
        match siteward_store::password::verify_password_in(lane, password, hash).await {
            Ok(true) => {
                attempt.succeeded(Instant::now());
                Checked::Right
            }
            Ok(false) => {
                attempt.failed(Instant::now());
                Checked::Wrong
            }
            Err(e) => {
                tracing::error!(error = %e, "password verification failed");
                Checked::Unavailable
            }
        }
    }

    async fn search(&mut self, id: i32, req: LdapSearchRequest, ctrls: &[LdapControl]) -> Reply {
        let started = std::time::Instant::now();
        let done = |res: LdapResult, ctrl: Vec<LdapControl>| {
            LdapMsg::new_with_ctrls(id, LdapOp::SearchResultDone(res), ctrl)
        };
        let mut paging = None;
        for c in ctrls {
            match c {
                LdapControl::SimplePagedResults { size, cookie } => {
                    paging = Some((*size, cookie.clone()))
                }
                LdapControl::Unknown {
                    criticality: true,
                    oid,
                    ..
                } => {
                    return Reply::one(done(
                        result(
                            LdapResultCode::UnavailableCriticalExtension,
                            format!("control {oid} is not supported"),
                        ),
                        Vec::new(),
                    ))
                }
                _ => {}
            }
        }
        let snapshot = self.server.store.snapshot();
        let who = self.principal(&snapshot.identity);
        let Ok(base) = Dn::parse(&req.base) else {
            return Reply::one(done(
                result(LdapResultCode::InvalidDNSyntax, "invalid base DN"),
                Vec::new(),
            ));
        };
        let dir = &self.server.dir;
        let special = base.is_root() || base == dir.subschema;
        if who == Principal::Anonymous
            && dir.anonymous == crate::AnonymousAccess::Deny
            && !(special && req.scope == LdapSearchScope::Base)
        {
            return Reply::one(done(
                result(
                    LdapResultCode::InsufficentAccessRights,
                    "anonymous searches are disabled; bind first",
                ),
                Vec::new(),
            ));
        }
        let terms = crate::filter::terms(&req.filter);
        let max_terms = self.server.settings.max_filter_terms;
        if terms > max_terms {
            tracing::debug!(terms, peer = %self.peer, "search refused: too many filter terms");
            return Reply::one(done(
                result(
                    LdapResultCode::AdminLimitExceeded,
                    format!("the filter has {terms} terms; ldap.max_filter_terms is {max_terms}"),
                ),
                Vec::new(),
            ));
        }
        let query = Query {
            server: self.server.clone(),
            snapshot,
            who,
            id,
            req,
            base,
            started,
        };
        if let Some((size, cookie)) = paging {
            return self.search_paged(query, size, cookie).await;
        }
        let msgs = match self.server.run_search(move |a| query.run(a)).await {
            Ok(msgs) => msgs,
            Err(res) => vec![done(res, Vec::new())],
        };
        Reply {
            msgs,
            action: Action::Continue,
        }
    }

    /// A search with the Simple Paged Results control (RFC 2696).
    async fn search_paged(&mut self, query: Query, size: i64, cookie: Vec<u8>) -> Reply {
        let id = query.id;
        let done = |res: LdapResult, cookie: Vec<u8>| {
            LdapMsg::new_with_ctrls(
                id,
                LdapOp::SearchResultDone(res),
                vec![LdapControl::SimplePagedResults { size: 0, cookie }],
            )
        };
        let query = Arc::new(query);
        let mut paged = if cookie.is_empty() {
            let first = query.clone();
            let keys = match self.server.run_search(move |a| first.matching(a)).await {
                Ok((keys, res)) if res.code == LdapResultCode::Success => keys,
                // A paged search that cannot be complete is not started.
                Ok((_, res)) | Err(res) => return Reply::one(done(res, Vec::new())),
            };
            self.cookies += 1;
            let mut cookie = self.cookies.to_be_bytes().to_vec();
            cookie.extend_from_slice(&random_bytes::<8>());
            Paged {
                cookie,
                request: query.req.clone(),
                snapshot: query.snapshot.clone(),
                keys,
                pos: 0,
            }
        } else {
            let Some(at) = self.pages.iter().position(|p| p.cookie == cookie) else {
                return Reply::one(done(
                    result(
                        LdapResultCode::UnwillingToPerform,
                        "unknown or expired paged results cookie",
                    ),
                    Vec::new(),
                ));
            };
            let Some(paged) = self.pages.remove(at) else {
                return Reply::one(done(
                    result(LdapResultCode::OperationsError, "paging state lost"),
                    Vec::new(),
                ));
            };
            // RFC 2696: the other parameters must be those of the first request.
            let req = &query.req;
            let same = paged.request.base == req.base
                && paged.request.scope == req.scope
                && paged.request.filter == req.filter;
            if !same {
                return Reply::one(done(
                    result(
                        LdapResultCode::UnwillingToPerform,
                        "the request differs from the one that started the paged search",
                    ),
                    Vec::new(),
                ));
            }
            paged
        };
        if size <= 0 {
            // Size 0 abandons the paged search.
            return Reply::one(done(result(LdapResultCode::Success, ""), Vec::new()));
        }
        let page = usize::try_from(size).unwrap_or(usize::MAX);
        let end = paged.pos.saturating_add(page).min(paged.keys.len());
        let keys = paged.keys.get(paged.pos..end).unwrap_or_default().to_vec();
        // The page comes from the snapshot the search started on, read as the client is now.
        let query = Query {
            server: self.server.clone(),
            snapshot: paged.snapshot.clone(),
            who: query.who,
            id,
            req: query.req.clone(),
            base: query.base.clone(),
            started: query.started,
        };
        let mut msgs = match self
            .server
            .run_search(move |a| query.entries(&keys, a))
            .await
        {
            Ok(msgs) => msgs,
            Err(res) => return Reply::one(done(res, Vec::new())),
        };
        paged.pos = end;
        let next = if paged.pos < paged.keys.len() {
            let cookie = paged.cookie.clone();
            if self.pages.len() >= MAX_PAGED {
                self.pages.pop_front();
            }
            self.pages.push_back(paged);
            cookie
        } else {
            Vec::new()
        };
        msgs.push(done(result(LdapResultCode::Success, ""), next));
        Reply {
            msgs,
            action: Action::Continue,
        }
    }

    fn compare(&self, id: i32, req: LdapCompareRequest) -> Reply {
        let respond = |res: LdapResult| Reply::one(LdapMsg::new(id, LdapOp::CompareResult(res)));
        let snapshot = self.server.store.snapshot();
        let identity = &*snapshot.identity;
        let who = self.principal(identity);
        let dir = &self.server.dir;
        let Ok(dn) = Dn::parse(&req.dn) else {
            return respond(result(LdapResultCode::InvalidDNSyntax, "invalid DN"));
        };
        if who == Principal::Anonymous && dir.anonymous == crate::AnonymousAccess::Deny {
            return respond(result(
                LdapResultCode::InsufficentAccessRights,
                "anonymous access is disabled; bind first",
            ));
        }
        let Some(node) = dir.lookup(identity, &dn) else {
            return respond(result(LdapResultCode::NoSuchObject, "no such entry"));
        };
        let Some(attr) = Attr::parse(&req.atype) else {
            return respond(result(
                LdapResultCode::UndefinedAttributeType,
                "unknown attribute type",
            ));
        };
        // Compare must not become a password oracle, nor read what search would hide.
        if !dir.readable(who, node, attr) {
            return respond(result(
                LdapResultCode::InsufficentAccessRights,
                "insufficient access",
            ));
        }
        let Ok(value) = String::from_utf8(req.val) else {
            return respond(result(LdapResultCode::CompareFalse, ""));
        };
        let filter = Filter::compile(&ldap3_proto::proto::LdapFilter::Equality(
            attr.name().to_owned(),
            value,
        ));
        match filter.eval(dir, identity, who, node) {
            Truth::True => respond(result(LdapResultCode::CompareTrue, "")),
            Truth::False => match dir.values(identity, who, node, attr) {
                Some(_) => respond(result(LdapResultCode::CompareFalse, "")),
                None => respond(result(
                    LdapResultCode::NoSuchAttribute,
                    "the entry has no such attribute",
                )),
            },
            Truth::Undefined => respond(result(
                LdapResultCode::InvalidAttributeSyntax,
                "the value does not fit the attribute's syntax",
            )),
        }
    }

    async fn extended(&mut self, id: i32, req: LdapExtendedRequest) -> Reply {
        let respond = |res: LdapResult, name: Option<&str>, value: Option<Vec<u8>>| {
            Reply::one(LdapMsg::new(
                id,
                LdapOp::ExtendedResponse(LdapExtendedResponse {
                    res,
                    name: name.map(str::to_owned),
                    value,
                }),
            ))
        };
        match req.name.as_str() {
            OID_WHOAMI => {
                let snapshot = self.server.store.snapshot();
                let authz = match self.principal(&snapshot.identity) {
                    Principal::Anonymous => String::new(),
                    Principal::User { uid, .. } => snapshot
                        .identity
                        .users
                        .get(&uid)
                        .map(|u| format!("dn:{}", self.server.dir.user_dn(u)))
                        .unwrap_or_default(),
                };
                respond(
                    result(LdapResultCode::Success, ""),
                    None,
                    Some(authz.into_bytes()),
                )
            }
            OID_PASSWORD_MODIFY => self.password_modify(id, &req).await,
            OID_START_TLS => {
                if self.tls {
                    return respond(
                        result(
                            LdapResultCode::OperationsError,
                            "TLS is already established",
                        ),
                        Some(OID_START_TLS),
                        None,
                    );
                }
                if !self.server.tls_available() {
                    return respond(
                        result(LdapResultCode::Unavailable, "TLS is not configured"),
                        Some(OID_START_TLS),
                        None,
                    );
                }
                let mut reply = respond(
                    result(LdapResultCode::Success, ""),
                    Some(OID_START_TLS),
                    None,
                );
                reply.action = Action::StartTls;
                reply
            }
            _ => respond(
                result(
                    LdapResultCode::ProtocolError,
                    format!("extended operation {} is not supported", req.name),
                ),
                None,
                None,
            ),
        }
    }

    async fn password_modify(&mut self, id: i32, req: &LdapExtendedRequest) -> Reply {
        let respond = |code: LdapResultCode, message: &str, generated: Option<String>| {
            let res = result(code, message);
            let response: LdapExtendedResponse = if generated.is_some() {
                LdapPasswordModifyResponse {
                    res,
                    gen_password: generated,
                }
                .into()
            } else {
                LdapExtendedResponse {
                    res,
                    name: None,
                    value: None,
                }
            };
            Reply::one(LdapMsg::new(id, LdapOp::ExtendedResponse(response)))
        };
        let parsed = if req.value.is_none() {
            Ok(LdapPasswordModifyRequest {
                user_identity: None,
                old_password: None,
                new_password: None,
            })
        } else {
            LdapPasswordModifyRequest::try_from(req)
        };
        let Ok(pm) = parsed else {
            return respond(
                LdapResultCode::ProtocolError,
                "malformed password modify request",
                None,
            );
        };
        let snapshot = self.server.store.snapshot();
        let identity = &*snapshot.identity;
        let Principal::User { uid: me, .. } = self.principal(identity) else {
            return respond(
                LdapResultCode::UnwillingToPerform,
                "bind before changing a password",
                None,
            );
        };
        let Some(me_user) = identity.users.get(&me).cloned() else {
            return respond(LdapResultCode::UnwillingToPerform, "bind first", None);
        };
        let target = match pm.user_identity.as_deref().map(str::trim) {
            None | Some("") => Some(me_user.clone()),
            Some(text) => {
                let name = text.strip_prefix("u:").unwrap_or(text);
                if name.contains('=') {
                    Dn::parse(name.strip_prefix("dn:").unwrap_or(name))
                        .ok()
                        .and_then(|dn| self.server.dir.user_of_dn(identity, &dn).cloned())
                } else {
                    identity.user(name).cloned()
                }
            }
        };
        let Some(target) = target else {
            return respond(LdapResultCode::NoSuchObject, "no such user", None);
        };
        let admin = identity.is_admin(me);
        if target.uid_number != me && !admin {
            return respond(
                LdapResultCode::InsufficentAccessRights,
                "only administrators change other users' passwords",
                None,
            );
        }
        if target.uid_number == me && !admin {
            let Some(old) = pm.old_password else {
                return respond(
                    LdapResultCode::UnwillingToPerform,
                    "the current password is required",
                    None,
                );
            };
            let dn = Dn::child(&self.server.dir.people, "uid", &me_user.username);
            match self.check_password(&dn, Some(&*me_user), old).await {
                Checked::Right => {}
                Checked::Wrong | Checked::Refused => {
                    return respond(
                        LdapResultCode::InvalidCredentials,
                        "the current password is wrong",
                        None,
                    )
                }
                Checked::Unavailable => {
                    return respond(LdapResultCode::Busy, "try again later", None)
                }
            }
        }
        let (new, generated) = match pm.new_password {
            Some(p) if !p.is_empty() => (p, None),
            _ => {
                let p = generate_password();
                (p.clone(), Some(p))
            }
        };
        let by = siteward_store::Actor::user(
            me,
            &me_user.username,
            Some(self.peer),
            siteward_store::Via::Ldap,
        );
        match self
            .server
            .store
            .set_password(&target.username, new, &by)
            .await
        {
            Ok(()) => {
                tracing::info!(user = %target.username, by = %me_user.username, "password changed");
                respond(LdapResultCode::Success, "", generated)
            }
            Err(StoreError::Invalid { message, .. }) => {
                respond(LdapResultCode::ConstraintViolation, &message, None)
            }
            Err(StoreError::NotFound { .. }) => {
                respond(LdapResultCode::NoSuchObject, "no such user", None)
            }
            Err(e) => {
                tracing::error!(error = %e, "password change failed");
                respond(LdapResultCode::OperationsError, "internal error", None)
            }
        }
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    let rng = rustls::crypto::ring::default_provider().secure_random;
    if rng.fill(&mut buf).is_err() {
        tracing::error!("the system random generator failed");
    }
    buf
}

/// A random 20-character password (for Password Modify without a new password).
fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    random_bytes::<20>()
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}
