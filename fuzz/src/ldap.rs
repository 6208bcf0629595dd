//! LDAP: the framing codec, `ldap3_proto`'s decoder and the session state machine over a small
//! directory; and our filter compiler and evaluator.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use arbitrary::{Arbitrary, Unstructured};
use ldap3_proto::proto::{LdapFilter, LdapMatchingRuleAssertion, LdapOp, LdapSubstringFilter};
use siteward_ldap::dit::{Directory, Node, Principal};
use siteward_ldap::filter::{terms, Filter, Truth, Work};
use siteward_ldap::net::Codec;
use siteward_ldap::session::{Action, Session};
use siteward_ldap::{LdapServer, Metrics, Settings};
use siteward_store::password::hash_password_blocking;
use siteward_store::{
    Gid, Group, HashCost, Identity, Naming, SecretBox, Store, Uid, User, UserStatus,
};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

const BASE: &str = "dc=siteward,dc=internal";
const CHEAP: HashCost = HashCost {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

fn user(uid: i32, name: &str, password: Option<&str>, status: UserStatus) -> Arc<User> {
    let now = chrono::Utc::now();
    Arc::new(User {
        uid_number: Uid(uid),
        username: name.into(),
        cn: format!("{name} {name}-sn"),
        sn: format!("{name}-sn"),
        given_name: Some(name.to_uppercase()),
        mail: Some(format!("{name}@example.org")),
        ssh_public_keys: vec![format!("ssh-ed25519 AAAA{name} {name}@host")],
        password_hash: password.map(|p| hash_password_blocking(p, CHEAP).expect("hash")),
        status,
        password_changed_at: Some(now),
        created_at: now,
        updated_at: now,
    })
}

fn group(gid: i32, cn: &str, admin: bool) -> Arc<Group> {
    let now = chrono::Utc::now();
    Arc::new(Group {
        gid_number: Gid(gid),
        cn: cn.into(),
        description: Some(format!("the {cn}")),
        is_administrator: admin,
        created_at: now,
        updated_at: now,
    })
}

/// Users alice (password `a`), bob (`b`), root (an administrator, `r`), svc (in the service
/// group, `s`), carol (suspended), dave (pending, no password); groups sysadmins (administrators),
/// devs and readers (the service group) besides the built-in ldapusers.
fn identity() -> Identity {
    let users = [
        user(10001, "alice", Some("a"), UserStatus::Active),
        user(10002, "bob", Some("b"), UserStatus::Active),
        user(10003, "root", Some("r"), UserStatus::Active),
        user(10004, "svc", Some("s"), UserStatus::Active),
        user(10005, "carol", Some("c"), UserStatus::Suspended),
        user(10006, "dave", None, UserStatus::Pending),
    ];
    let groups = [
        group(2000, "ldapusers", false),
        group(2001, "sysadmins", true),
        group(2002, "devs", false),
        group(2003, "readers", false),
    ];
    let memberships: &[(i32, &[i32])] = &[
        (2000, &[10001, 10002, 10003, 10004, 10005, 10006]),
        (2001, &[10003]),
        (2002, &[10001, 10002]),
        (2003, &[10004]),
    ];
    let mut id = Identity {
        users: users.iter().map(|u| (u.uid_number, u.clone())).collect(),
        user_by_name: users
            .iter()
            .map(|u| (u.username.clone(), u.uid_number))
            .collect(),
        groups: groups.iter().map(|g| (g.gid_number, g.clone())).collect(),
        group_by_name: groups
            .iter()
            .map(|g| (g.cn.clone(), g.gid_number))
            .collect(),
        ..Identity::default()
    };
    let mut groups_of: HashMap<Uid, Vec<Gid>> = HashMap::new();
    let mut members_of: BTreeMap<Gid, Vec<Uid>> = BTreeMap::new();
    for (g, members) in memberships {
        for u in *members {
            groups_of.entry(Uid(*u)).or_default().push(Gid(*g));
            members_of.entry(Gid(*g)).or_default().push(Uid(*u));
        }
    }
    id.groups_of = groups_of
        .into_iter()
        .map(|(u, gs)| (u, gs.into()))
        .collect();
    id.members_of = members_of
        .into_iter()
        .map(|(g, us)| (g, us.into()))
        .collect();
    id
}

static STORE: LazyLock<Store> = LazyLock::new(|| {
    // The pool is created (never connected) inside the runtime, as sqlx wants.
    let _rt = crate::runtime().enter();
    siteward_store::testing::store_with_snapshot(
        identity(),
        Naming::default(),
        SecretBox::from_key(&[7; 32]),
        CHEAP,
    )
});

fn settings() -> Settings {
    Settings {
        base_dn: BASE.into(),
        service_group: Some("readers".into()),
        search_threads: 1,
        ..Settings::default()
    }
}

/// `ldap_message`: the bytes of a connection, framed by our codec (length checked from the
/// header, `ldap3_proto`'s decoder with the nesting limit) and each message handled by a fresh
/// session, as the connection loop does, until a close or a framing error (which closes a real
/// connection). Every reply encodes, answers the request's message id (or is the unsolicited
/// notice of disconnection, id 0), and a close ends the conversation.
pub fn message(data: &[u8]) {
    let server = match LdapServer::new(STORE.clone(), settings(), None, Metrics::default()) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("server: {e}"),
    };
    let mut session = Session::new(server, [192, 0, 2, 1].into(), false);
    let mut codec = Codec::new(64 * 1024, 32);
    let mut buf = BytesMut::from(data);
    for _ in 0..32 {
        let msg = match codec.decode(&mut buf) {
            Ok(Some(msg)) => msg,
            Ok(None) | Err(_) => return,
        };
        let id = msg.msgid;
        let abandon_or_unbind = matches!(msg.op, LdapOp::UnbindRequest | LdapOp::AbandonRequest(_));
        let reply = crate::runtime().block_on(session.handle(msg));
        if abandon_or_unbind {
            assert!(reply.msgs.is_empty(), "an answer to unbind or abandon");
        }
        for m in reply.msgs {
            assert!(
                m.msgid == id || m.msgid == 0,
                "reply id {} to request {id}",
                m.msgid
            );
            let mut out = BytesMut::new();
            if let Err(e) = codec.encode(m, &mut out) {
                panic!("a reply does not encode: {e}");
            }
            // What we send, a client's decoder reads back.
            let mut back = Codec::new(usize::MAX >> 1, 64);
            match back.decode(&mut out) {
                Ok(Some(_)) => {}
                other => panic!("our reply does not decode: {other:?}"),
            }
        }
        if reply.action == Action::Close {
            return;
        }
    }
}

/// A filter as the fuzzer builds it: attribute names mostly from the schema, in any case, with
/// options; values anything.
#[derive(Debug, Arbitrary)]
enum F {
    And(Vec<F>),
    Or(Vec<F>),
    Not(Box<F>),
    Equality(A, String),
    Substring(A, Option<String>, Vec<String>, Option<String>),
    GreaterOrEqual(A, String),
    LessOrEqual(A, String),
    Present(A),
    Approx(A, String),
    Extensible(Option<R>, Option<A>, String, bool),
}

#[derive(Debug, Arbitrary)]
enum A {
    Known(u8, bool),
    Any(String),
}

#[derive(Debug, Arbitrary)]
enum R {
    Known(u8),
    Any(String),
}

const ATTRS: &[&str] = &[
    "objectClass",
    "uid",
    "cn",
    "sn",
    "givenName",
    "mail",
    "uidNumber",
    "gidNumber",
    "memberUid",
    "member",
    "uniqueMember",
    "memberOf",
    "homeDirectory",
    "loginShell",
    "sshPublicKey",
    "userPassword",
    "description",
    "entryUUID",
    "entryDN",
    "createTimestamp",
    "modifyTimestamp",
    "ou",
    "dc",
    "o",
    "displayName",
    "gecos",
    "2.5.4.3",
    "0.9.2342.19200300.100.1.1",
    "hasSubordinates",
    "subschemaSubentry",
    "structuralObjectClass",
    "pwdChangedTime",
];

const RULES: &[&str] = &[
    "caseIgnoreMatch",
    "caseExactMatch",
    "2.5.13.2",
    "integerMatch",
    "distinguishedNameMatch",
    "1.2.840.113556.1.4.803",
    "1.2.840.113556.1.4.804",
    "1.2.840.113556.1.4.1941",
    "caseIgnoreSubstringsMatch",
    "generalizedTimeMatch",
    "octetStringMatch",
];

fn attr(a: &A) -> String {
    match a {
        A::Known(i, upper) => {
            let name = ATTRS[usize::from(*i) % ATTRS.len()];
            if *upper {
                name.to_uppercase()
            } else {
                name.into()
            }
        }
        A::Any(s) => s.clone(),
    }
}

fn to_ldap(f: &F, depth: usize) -> LdapFilter {
    if depth > 24 {
        return LdapFilter::Present("objectClass".into());
    }
    let all = |fs: &Vec<F>| fs.iter().map(|f| to_ldap(f, depth + 1)).collect();
    match f {
        F::And(fs) => LdapFilter::And(all(fs)),
        F::Or(fs) => LdapFilter::Or(all(fs)),
        F::Not(f) => LdapFilter::Not(Box::new(to_ldap(f, depth + 1))),
        F::Equality(a, v) => LdapFilter::Equality(attr(a), v.clone()),
        F::Substring(a, i, any, fin) => LdapFilter::Substring(
            attr(a),
            LdapSubstringFilter {
                initial: i.clone(),
                any: any.clone(),
                final_: fin.clone(),
            },
        ),
        F::GreaterOrEqual(a, v) => LdapFilter::GreaterOrEqual(attr(a), v.clone()),
        F::LessOrEqual(a, v) => LdapFilter::LessOrEqual(attr(a), v.clone()),
        F::Present(a) => LdapFilter::Present(attr(a)),
        F::Approx(a, v) => LdapFilter::Approx(attr(a), v.clone()),
        F::Extensible(r, a, v, dn) => LdapFilter::Extensible(LdapMatchingRuleAssertion {
            matching_rule: r.as_ref().map(|r| match r {
                R::Known(i) => RULES[usize::from(*i) % RULES.len()].into(),
                R::Any(s) => s.clone(),
            }),
            type_: a.as_ref().map(attr),
            match_value: v.clone(),
            dn_attributes: *dn,
        }),
    }
}

static DIR: LazyLock<(Directory, Arc<Identity>)> = LazyLock::new(|| {
    let mut dir = Directory::new(BASE).expect("base DN");
    dir.service_group = Some("readers".into());
    (dir, STORE.snapshot().identity.clone())
});

/// Who evaluates (anonymous, a user, an administrator, the service account) and every entry of
/// the directory, made once: per input, only evaluation is left.
static WHO_AND_NODES: LazyLock<([Principal; 4], Vec<Node<'static>>)> = LazyLock::new(|| {
    let (dir, id) = &*DIR;
    let who = [
        Principal::Anonymous,
        dir.principal_of(id, Uid(10001)),
        dir.principal_of(id, Uid(10003)),
        dir.principal_of(id, Uid(10004)),
    ];
    let mut nodes = vec![
        Node::RootDse,
        Node::Subschema,
        Node::Base,
        Node::People,
        Node::Groups,
    ];
    nodes.extend(id.users.values().map(|u| Node::User(u)));
    nodes.extend(id.groups.values().map(|g| Node::Group(g)));
    (who, nodes)
});

fn not(t: Truth) -> Truth {
    match t {
        Truth::True => Truth::False,
        Truth::False => Truth::True,
        Truth::Undefined => Truth::Undefined,
    }
}

/// `ldap_filter`: an arbitrary filter over the directory, compiled once. For each principal
/// (anonymous, a user, an administrator, the service account) and every entry, every user or
/// group the filter matches is among [`Filter::candidates`] (the index narrowing only ever
/// returns a superset, with or without a work allowance). For one principal the input picks, on
/// every entry: `!(f)` is the three-valued negation of `f`, and evaluation with a work allowance
/// that was not exhausted agrees with unlimited evaluation (checking these two for all four
/// principals made an input cost twice as much for little more coverage).
pub fn filter(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(f) = F::arbitrary(&mut u) else {
        return;
    };
    let budget = u.arbitrary::<u16>().unwrap_or(0);
    let pick = usize::from(u.arbitrary::<u8>().unwrap_or(0));
    let f = to_ldap(&f, 0);
    if terms(&f) > 1000 {
        return;
    }
    let (dir, id) = &*DIR;
    let (principals, nodes) = &*WHO_AND_NODES;
    let compiled = Filter::compile(&f);
    let negated = Filter::compile(&LdapFilter::Not(Box::new(f)));
    let candidates = compiled.candidates(dir, id, &mut Work::unlimited());
    let mut small = Work::new(u64::from(budget));
    let narrowed = compiled.candidates(dir, id, &mut small);
    for (i, &who) in principals.iter().enumerate() {
        let checked = i == pick % principals.len();
        for &node in nodes {
            let t = compiled.eval(dir, id, who, node);
            if checked {
                assert_eq!(negated.eval(dir, id, who, node), not(t), "!(f) on {node:?}");
                let mut w = Work::new(u64::from(budget));
                let limited = compiled.eval_within(dir, id, who, node, &mut w);
                if !w.exhausted() {
                    assert_eq!(
                        limited, t,
                        "a work allowance changed the result on {node:?}"
                    );
                }
            }
            if t == Truth::True {
                for c in [&candidates, &narrowed] {
                    match node {
                        Node::User(u) => assert!(
                            c.users.as_ref().is_none_or(|s| s.contains(&u.uid_number)),
                            "{} matches but is not a candidate",
                            u.username
                        ),
                        Node::Group(g) => assert!(
                            c.groups.as_ref().is_none_or(|s| s.contains(&g.gid_number)),
                            "{} matches but is not a candidate",
                            g.cn
                        ),
                        _ => {}
                    }
                }
            }
        }
    }
}
