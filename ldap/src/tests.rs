//! State-machine tests against a real store (a fresh database per test): bind, search with every
//! filter type and scope, attribute selection, access rules, paging, limits, extended
//! operations, refused writes, and the framing codec's handling of malformed input.

use std::sync::Arc;
use std::time::Duration;

use ldap3_proto::control::LdapControl;
use ldap3_proto::proto::*;
use siteward_store::{Dirty, HashCost, NewUser, SecretBox, Store, UserStatus};
use sqlx::PgPool;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::session::{Action, Reply, Session};
use crate::{AnonymousAccess, LdapServer, Metrics, Settings};

const BASE: &str = "dc=siteward,dc=internal";

fn user_dn(name: &str) -> String {
    format!("uid={name},ou=people,{BASE}")
}

async fn store(pool: PgPool) -> Store {
    let store = Store::from_pool(
        pool,
        SecretBox::from_key(&[0; 32]),
        HashCost {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
    );
    let user = |name: &str, pw: &str, admin: bool, mail: &str| NewUser {
        username: name.into(),
        password: Some(pw.into()),
        mail: Some(mail.into()),
        given_name: Some(name.to_uppercase()),
        sn: Some(format!("{name}-sn")),
        admin,
        ssh_public_keys: vec![format!("ssh-ed25519 AAAA{name} {name}@host")],
        ..Default::default()
    };
    store
        .create_user(
            user("alice", "alice-pw-1", false, "alice@example.org"),
            &siteward_store::Actor::system(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .create_user(
            user("bob", "bob-pw-123", false, "bob@example.org"),
            &siteward_store::Actor::system(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .create_user(
            user("root", "root-pw-12", true, "root@example.org"),
            &siteward_store::Actor::system(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .create_user(
            user("svc", "svc-pw-123", false, "svc@example.org"),
            &siteward_store::Actor::system(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .create_user(
            NewUser {
                status: Some(UserStatus::Suspended),
                ..user("carol", "carol-pw-1", false, "carol@example.org")
            },
            &siteward_store::Actor::system(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .create_group(
            "devs",
            Some("Developers"),
            false,
            &siteward_store::Actor::system(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .create_group("readers", None, false, &siteward_store::Actor::system())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for (g, u) in [("devs", "alice"), ("devs", "bob"), ("readers", "svc")] {
        store
            .add_group_member(g, u, &siteward_store::Actor::system())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    store
        .reload(Dirty::ALL)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
}

/// `store` with these users added and in its snapshot.
async fn with_users(store: Store, users: impl IntoIterator<Item = NewUser>) -> Store {
    for user in users {
        store
            .create_user(user, &siteward_store::Actor::system())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    store
        .reload(Dirty::ALL)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
}

/// A user without a password.
fn named(username: String) -> NewUser {
    NewUser {
        username,
        ..Default::default()
    }
}

fn server_with(store: Store, settings: Settings) -> Arc<LdapServer> {
    Arc::new(
        LdapServer::new(store, settings, None, Metrics::default())
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn server(store: Store) -> Arc<LdapServer> {
    server_with(
        store,
        Settings {
            service_group: Some("readers".into()),
            ..Settings::default()
        },
    )
}

fn session(server: &Arc<LdapServer>) -> Session {
    Session::new(
        server.clone(),
        "127.0.0.1".parse().unwrap_or_else(|_| panic!()),
        false,
    )
}

async fn bind(s: &mut Session, dn: &str, pw: &str) -> LdapResultCode {
    let reply = s
        .handle(LdapMsg::new(
            1,
            LdapOp::BindRequest(LdapBindRequest {
                version: 3,
                dn: dn.into(),
                cred: LdapBindCred::Simple(pw.into()),
            }),
        ))
        .await;
    match reply.msgs.as_slice() {
        [LdapMsg {
            op: LdapOp::BindResponse(r),
            msgid: 1,
            ..
        }] => r.res.code.clone(),
        other => panic!("unexpected bind reply {other:?}"),
    }
}

/// A found entry: DN and attributes (name → values as text).
#[derive(Debug, Clone)]
struct Found {
    dn: String,
    attrs: Vec<(String, Vec<String>)>,
}

impl Found {
    fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.attrs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

struct Searched {
    entries: Vec<Found>,
    done: LdapResult,
    ctrls: Vec<LdapControl>,
}

impl Searched {
    fn dns(&self) -> Vec<String> {
        let mut d: Vec<String> = self.entries.iter().map(|e| e.dn.clone()).collect();
        d.sort();
        d
    }
    fn uids(&self) -> Vec<String> {
        let mut u: Vec<String> = self
            .entries
            .iter()
            .filter_map(|e| e.get("uid").and_then(|v| v.first().cloned()))
            .collect();
        u.sort();
        u
    }
}

fn request(base: &str, scope: LdapSearchScope, filter: &str, attrs: &[&str]) -> LdapSearchRequest {
    LdapSearchRequest {
        base: base.into(),
        scope,
        aliases: LdapDerefAliases::Never,
        sizelimit: 0,
        timelimit: 0,
        typesonly: false,
        filter: ldap3_proto::parse_ldap_filter_str(filter)
            .unwrap_or_else(|e| panic!("{filter}: {e:?}")),
        attrs: attrs.iter().map(|a| (*a).to_owned()).collect(),
    }
}

fn collect(reply: Reply) -> Searched {
    let mut entries = Vec::new();
    let mut done = None;
    let mut ctrls = Vec::new();
    for m in reply.msgs {
        match m.op {
            LdapOp::SearchResultEntry(e) => entries.push(Found {
                dn: e.dn,
                attrs: e
                    .attributes
                    .into_iter()
                    .map(|a| {
                        (
                            a.atype,
                            a.vals
                                .into_iter()
                                .map(|v| String::from_utf8_lossy(&v).into_owned())
                                .collect(),
                        )
                    })
                    .collect(),
            }),
            LdapOp::SearchResultDone(r) => {
                done = Some(r);
                ctrls = m.ctrl;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    Searched {
        entries,
        done: done.unwrap_or_else(|| panic!("no SearchResultDone")),
        ctrls,
    }
}

async fn run(s: &mut Session, req: LdapSearchRequest, ctrl: Vec<LdapControl>) -> Searched {
    collect(
        s.handle(LdapMsg::new_with_ctrls(2, LdapOp::SearchRequest(req), ctrl))
            .await,
    )
}

async fn sub(s: &mut Session, filter: &str, attrs: &[&str]) -> Searched {
    run(
        s,
        request(BASE, LdapSearchScope::Subtree, filter, attrs),
        Vec::new(),
    )
    .await
}

#[sqlx::test(migrations = "../migrations")]
async fn every_filter_type(pool: PgPool) {
    let srv = server(store(pool).await);
    let mut s = session(&srv);
    assert_eq!(
        bind(&mut s, &user_dn("root"), "root-pw-12").await,
        LdapResultCode::Success
    );
    let cases: &[(&str, &[&str])] = &[
        ("(uid=alice)", &["alice"]),
        ("(UID=ALICE)", &["alice"]),
        ("(uid=al*)", &["alice"]),
        ("(uid=*o*)", &["bob", "carol", "root"]),
        ("(uid=*b)", &["bob"]),
        ("(uid=a*i*e)", &["alice"]),
        ("(uid~=BOB)", &["bob"]),
        ("(&(objectClass=posixAccount)(uid=bob))", &["bob"]),
        ("(|(uid=alice)(uid=bob))", &["alice", "bob"]),
        (
            "(&(objectClass=posixAccount)(!(uid=alice))(!(uid=carol)))",
            &["bob", "root", "svc"],
        ),
        ("(mail=ALICE@example.org)", &["alice"]),
        ("(uidNumber>=2002)", &["carol", "root", "svc"]),
        ("(uidNumber<=2001)", &["alice", "bob"]),
        ("(&(uidNumber>=2001)(uidNumber<=2002))", &["bob", "root"]),
        ("(uidNumber=02001)", &["bob"]),
        (
            "(createTimestamp>=20000101000000Z)",
            &["alice", "bob", "carol", "root", "svc"],
        ),
        ("(createTimestamp<=20000101000000Z)", &[]),
        (
            "(modifyTimestamp>=20000101000000+0200)",
            &["alice", "bob", "carol", "root", "svc"],
        ),
        (
            "(memberOf=\"cn=devs,ou=groups,dc=siteward,dc=internal\")",
            &["alice", "bob"],
        ),
        (
            "(memberOf:1.2.840.113556.1.4.1941:=\"CN=Devs,OU=groups,DC=siteward,DC=internal\")",
            &["alice", "bob"],
        ),
        ("(uid:caseExactMatch:=alice)", &["alice"]),
        ("(uid:caseExactMatch:=ALICE)", &[]),
        ("(uidNumber:1.2.840.113556.1.4.803:=2001)", &["bob", "svc"]), // 2001, 2003 have bits 2001
        ("(ou:dn:=people)", &["alice", "bob", "carol", "root", "svc"]),
        ("(sshPublicKey=*)", &["alice", "bob", "root", "svc"]), // carol is suspended
        ("(shadowExpire=1)", &["carol"]),
        // Unknown attributes and rules are Undefined, never errors; NOT of Undefined is Undefined.
        ("(bogus=1)", &[]),
        ("(!(bogus=1))", &[]),
        ("(|(bogus=1)(uid=bob))", &["bob"]),
        ("(uid:1.2.3.4:=alice)", &[]),
        ("(uidNumber>=abc)", &[]),
        ("(uidNumber=*1*)", &[]),
    ];
    for (filter, want) in cases {
        let r = sub(&mut s, filter, &["uid"]).await;
        assert_eq!(r.done.code, LdapResultCode::Success, "{filter}");
        assert_eq!(r.uids(), *want, "{filter}");
    }
    // Group filters, including memberUid, member and the in-chain rule.
    let groups: &[(&str, &[&str])] = &[
        (
            "(&(objectClass=posixGroup)(memberUid=alice))",
            &["devs", "ldapusers"],
        ),
        (
            "(member=\"uid=bob,ou=people,dc=siteward,dc=internal\")",
            &["devs", "ldapusers"],
        ),
        (
            "(member:1.2.840.113556.1.4.1941:=\"uid=svc,ou=people,dc=siteward,dc=internal\")",
            &["ldapusers", "readers"],
        ),
        ("(&(objectClass=groupOfNames)(cn=dev*))", &["devs"]),
        ("(gidNumber=2001)", &["sysadmins"]),
        ("(description=developers)", &["devs"]),
    ];
    for (filter, want) in groups {
        let r = sub(&mut s, filter, &["cn"]).await;
        let mut cns: Vec<String> = r
            .entries
            .iter()
            .filter_map(|e| e.get("cn").and_then(|v| v.first().cloned()))
            .collect();
        cns.sort();
        assert_eq!(cns, *want, "{filter}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn candidates_are_a_superset_of_matches(pool: PgPool) {
    let store = store(pool).await;
    let srv = server(store.clone());
    let snap = store.snapshot();
    let id = &*snap.identity;
    let who = crate::dit::Principal::User {
        uid: siteward_store::Uid(2002),
        privileged: true,
    };
    for text in [
        "(uid=alice)",
        "(|(uid=alice)(cn=devs))",
        "(&(objectClass=posixGroup)(memberUid=bob))",
        "(gidNumber=2000)",
        "(member=\"uid=bob,ou=people,dc=siteward,dc=internal\")",
        "(memberOf=\"cn=devs,ou=groups,dc=siteward,dc=internal\")",
        "(&(uidNumber=2001)(objectClass=inetOrgPerson))",
        "(|(objectClass=posixGroup)(uid=carol))",
        "(cn=alice)",
    ] {
        let f = crate::filter::Filter::compile(
            &ldap3_proto::parse_ldap_filter_str(text).unwrap_or_else(|e| panic!("{e:?}")),
        );
        let c = f.candidates(&srv.dir, id, &mut crate::filter::Work::unlimited());
        for u in id.users.values() {
            let hit =
                f.eval(&srv.dir, id, who, crate::dit::Node::User(u)) == crate::filter::Truth::True;
            if hit {
                assert!(
                    c.users.as_ref().is_none_or(|s| s.contains(&u.uid_number)),
                    "{text} lost {}",
                    u.username
                );
            }
        }
        for g in id.groups.values() {
            let hit =
                f.eval(&srv.dir, id, who, crate::dit::Node::Group(g)) == crate::filter::Truth::True;
            if hit {
                assert!(
                    c.groups.as_ref().is_none_or(|s| s.contains(&g.gid_number)),
                    "{text} lost {}",
                    g.cn
                );
            }
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn scopes_and_missing_bases(pool: PgPool) {
    let srv = server(store(pool).await);
    let mut s = session(&srv);
    let people = format!("ou=people,{BASE}");
    let r = run(
        &mut s,
        request(BASE, LdapSearchScope::Base, "(objectClass=*)", &["1.1"]),
        vec![],
    )
    .await;
    assert_eq!(r.dns(), vec![BASE.to_string()]);
    let r = run(
        &mut s,
        request(BASE, LdapSearchScope::OneLevel, "(objectClass=*)", &["1.1"]),
        vec![],
    )
    .await;
    assert_eq!(r.dns(), vec![format!("ou=groups,{BASE}"), people.clone()]);
    let r = run(
        &mut s,
        request(
            &people,
            LdapSearchScope::OneLevel,
            "(objectClass=*)",
            &["1.1"],
        ),
        vec![],
    )
    .await;
    assert_eq!(r.entries.len(), 5);
    assert!(!r.dns().contains(&people));
    let r = run(
        &mut s,
        request(
            &people,
            LdapSearchScope::Subtree,
            "(objectClass=*)",
            &["1.1"],
        ),
        vec![],
    )
    .await;
    assert_eq!(r.entries.len(), 6);
    let r = run(
        &mut s,
        request(BASE, LdapSearchScope::Subtree, "(objectClass=*)", &["1.1"]),
        vec![],
    )
    .await;
    // base + 2 ous + 5 users + 4 groups (ldapusers, sysadmins, devs, readers)
    assert_eq!(r.entries.len(), 12);
    // A user entry, with a DN in another spelling.
    let r = run(
        &mut s,
        request(
            "UID=Alice, OU=People, DC=Siteward, DC=Internal",
            LdapSearchScope::Base,
            "(objectClass=*)",
            &["uid"],
        ),
        vec![],
    )
    .await;
    assert_eq!(r.uids(), vec!["alice"]);
    assert_eq!(r.dns(), vec![user_dn("alice")]);
    let r = run(
        &mut s,
        request(
            &user_dn("alice"),
            LdapSearchScope::OneLevel,
            "(objectClass=*)",
            &[],
        ),
        vec![],
    )
    .await;
    assert!(r.entries.is_empty());
    // Missing entries: noSuchObject with the nearest existing ancestor.
    let r = run(
        &mut s,
        request(
            &user_dn("nobody"),
            LdapSearchScope::Base,
            "(objectClass=*)",
            &[],
        ),
        vec![],
    )
    .await;
    assert_eq!(r.done.code, LdapResultCode::NoSuchObject);
    assert_eq!(r.done.matcheddn, people);
    let r = run(
        &mut s,
        request(
            "dc=elsewhere",
            LdapSearchScope::Subtree,
            "(objectClass=*)",
            &[],
        ),
        vec![],
    )
    .await;
    assert_eq!(r.done.code, LdapResultCode::NoSuchObject);
    let r = run(
        &mut s,
        request("not a dn", LdapSearchScope::Subtree, "(objectClass=*)", &[]),
        vec![],
    )
    .await;
    assert_eq!(r.done.code, LdapResultCode::InvalidDNSyntax);
}

#[sqlx::test(migrations = "../migrations")]
async fn attribute_selection(pool: PgPool) {
    let srv = server(store(pool).await);
    let mut s = session(&srv);
    assert_eq!(
        bind(&mut s, &user_dn("alice"), "alice-pw-1").await,
        LdapResultCode::Success
    );
    let names = |r: &Searched| -> Vec<String> {
        r.entries[0].attrs.iter().map(|(n, _)| n.clone()).collect()
    };
    let all = sub(&mut s, "(uid=alice)", &[]).await;
    let star = sub(&mut s, "(uid=alice)", &["*"]).await;
    assert_eq!(names(&all), names(&star));
    assert!(
        star.entries[0].get("entryUUID").is_none(),
        "operational with *"
    );
    assert!(star.entries[0].get("mail").is_some(), "own mail");
    let plus = sub(&mut s, "(uid=alice)", &["+"]).await;
    assert!(plus.entries[0].get("uid").is_none());
    for op in [
        "entryUUID",
        "createTimestamp",
        "modifyTimestamp",
        "pwdChangedTime",
        "entryDN",
    ] {
        assert!(plus.entries[0].get(op).is_some(), "{op}");
    }
    let both = sub(&mut s, "(uid=alice)", &["*", "+"]).await;
    assert_eq!(names(&both).len(), names(&star).len() + names(&plus).len());
    let none = sub(&mut s, "(uid=alice)", &["1.1"]).await;
    assert!(none.entries[0].attrs.is_empty());
    let explicit = sub(
        &mut s,
        "(uid=alice)",
        &["UIDNUMBER", "uidNumber", "cn", "bogus", "entryUUID"],
    )
    .await;
    assert_eq!(names(&explicit), vec!["cn", "uidNumber", "entryUUID"]);
    let mut req = request(
        BASE,
        LdapSearchScope::Subtree,
        "(uid=alice)",
        &["uid", "cn"],
    );
    req.typesonly = true;
    let r = run(&mut s, req, vec![]).await;
    assert_eq!(names(&r), vec!["uid", "cn"]);
    assert!(r.entries[0].attrs.iter().all(|(_, v)| v.is_empty()));
    let a = &all.entries[0];
    assert_eq!(
        a.get("homeDirectory"),
        Some(&vec!["/home/alice".to_string()])
    );
    assert_eq!(a.get("gidNumber"), Some(&vec!["2000".to_string()]));
    assert_eq!(a.get("loginShell"), Some(&vec!["/bin/bash".to_string()]));
    assert_eq!(a.get("sshPublicKey").map(Vec::len), Some(1));
    assert_eq!(
        a.get("memberOf"),
        Some(&vec![
            format!("cn=ldapusers,ou=groups,{BASE}"),
            format!("cn=devs,ou=groups,{BASE}")
        ])
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn access_rules_and_no_passwords(pool: PgPool) {
    let srv = server(store(pool).await);
    let every = ["*", "+", "userPassword", "mail", "sn", "uid"];
    // Anonymous: NSS attributes only.
    let mut anon = session(&srv);
    let r = sub(&mut anon, "(uid=alice)", &every).await;
    let e = &r.entries[0];
    assert!(
        e.get("uid").is_some() && e.get("uidNumber").is_some() && e.get("homeDirectory").is_some()
    );
    for hidden in [
        "mail",
        "sn",
        "sshPublicKey",
        "entryUUID",
        "givenName",
        "userPassword",
    ] {
        assert!(e.get(hidden).is_none(), "anonymous read {hidden}");
    }
    // A filter cannot probe what cannot be read.
    assert!(sub(&mut anon, "(mail=alice@example.org)", &[])
        .await
        .entries
        .is_empty());
    assert!(sub(&mut anon, "(!(mail=nobody@x))", &[])
        .await
        .entries
        .is_empty());
    // A user: own full entry, others' profile but not mail.
    let mut alice = session(&srv);
    bind(&mut alice, &user_dn("alice"), "alice-pw-1").await;
    let r = sub(&mut alice, "(|(uid=alice)(uid=bob))", &every).await;
    for e in &r.entries {
        let own = e.dn == user_dn("alice");
        assert_eq!(e.get("mail").is_some(), own, "{}", e.dn);
        assert!(e.get("sn").is_some());
        assert!(e.get("userPassword").is_none());
    }
    assert!(sub(&mut alice, "(mail=bob@example.org)", &[])
        .await
        .entries
        .is_empty());
    // Administrators and the service group read mail.
    for (who, pw) in [("root", "root-pw-12"), ("svc", "svc-pw-123")] {
        let mut s = session(&srv);
        assert_eq!(
            bind(&mut s, &user_dn(who), pw).await,
            LdapResultCode::Success
        );
        let r = sub(&mut s, "(mail=bob@example.org)", &every).await;
        assert_eq!(r.uids(), vec!["bob"], "{who}");
        assert!(r.entries[0].get("userPassword").is_none());
        assert!(sub(&mut s, "(userPassword=*)", &[])
            .await
            .entries
            .is_empty());
        // Compare is not a password oracle.
        let reply = s
            .handle(LdapMsg::new(
                3,
                LdapOp::CompareRequest(LdapCompareRequest {
                    dn: user_dn("bob"),
                    atype: "userPassword".into(),
                    val: b"bob-pw-123".to_vec(),
                }),
            ))
            .await;
        assert!(
            matches!(&reply.msgs[0].op, LdapOp::CompareResult(r) if r.code == LdapResultCode::InsufficentAccessRights)
        );
    }
    // Mail visible to users when configured.
    let srv2 = server_with(
        srv.store.clone(),
        Settings {
            mail_visible_to_users: true,
            ..Settings::default()
        },
    );
    let mut a2 = session(&srv2);
    bind(&mut a2, &user_dn("alice"), "alice-pw-1").await;
    assert_eq!(
        sub(&mut a2, "(mail=bob@example.org)", &[]).await.uids(),
        vec!["bob"]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn anonymous_deny(pool: PgPool) {
    let srv = server_with(
        store(pool).await,
        Settings {
            anonymous: AnonymousAccess::Deny,
            ..Settings::default()
        },
    );
    let mut s = session(&srv);
    assert_eq!(
        bind(&mut s, "", "").await,
        LdapResultCode::InappropriateAuthentication
    );
    let r = sub(&mut s, "(uid=alice)", &[]).await;
    assert_eq!(r.done.code, LdapResultCode::InsufficentAccessRights);
    assert!(r.entries.is_empty());
    let r = run(
        &mut s,
        request("", LdapSearchScope::Base, "(objectClass=*)", &["+"]),
        vec![],
    )
    .await;
    assert_eq!(r.entries.len(), 1, "root DSE stays readable");
    assert_eq!(
        bind(&mut s, &user_dn("bob"), "bob-pw-123").await,
        LdapResultCode::Success
    );
    assert_eq!(sub(&mut s, "(uid=alice)", &[]).await.uids(), vec!["alice"]);
}

#[sqlx::test(migrations = "../migrations")]
async fn binds(pool: PgPool) {
    let srv = server(store(pool).await);
    let mut s = session(&srv);
    assert_eq!(
        bind(&mut s, &user_dn("alice"), "alice-pw-1").await,
        LdapResultCode::Success
    );
    assert_eq!(
        bind(
            &mut s,
            "UID=ALICE,OU=PEOPLE,DC=SITEWARD,DC=INTERNAL",
            "alice-pw-1"
        )
        .await,
        LdapResultCode::Success
    );
    assert_eq!(
        bind(&mut s, &user_dn("alice"), "wrong").await,
        LdapResultCode::InvalidCredentials
    );
    // A failed bind leaves the session anonymous.
    assert!(sub(&mut s, "(uid=alice)", &["mail"]).await.entries[0]
        .get("mail")
        .is_none());
    assert_eq!(
        bind(&mut s, &user_dn("nobody"), "x").await,
        LdapResultCode::InvalidCredentials
    );
    assert_eq!(
        bind(&mut s, &user_dn("carol"), "carol-pw-1").await,
        LdapResultCode::InvalidCredentials
    );
    assert_eq!(
        bind(&mut s, &user_dn("alice"), "").await,
        LdapResultCode::UnwillingToPerform
    );
    assert_eq!(bind(&mut s, "", "").await, LdapResultCode::Success);
    assert_eq!(
        bind(&mut s, "", "pw").await,
        LdapResultCode::InvalidCredentials
    );
    assert_eq!(
        bind(&mut s, "garbage", "pw").await,
        LdapResultCode::InvalidDNSyntax
    );
    let sasl = s
        .handle(LdapMsg::new(
            1,
            LdapOp::BindRequest(LdapBindRequest {
                version: 3,
                dn: String::new(),
                cred: LdapBindCred::SASL(SaslCredentials {
                    mechanism: "GSSAPI".into(),
                    credentials: vec![],
                }),
            }),
        ))
        .await;
    assert!(
        matches!(&sasl.msgs[0].op, LdapOp::BindResponse(r) if r.res.code == LdapResultCode::AuthMethodNotSupported)
    );
    let v2 = s
        .handle(LdapMsg::new(
            1,
            LdapOp::BindRequest(LdapBindRequest {
                version: 2,
                dn: String::new(),
                cred: LdapBindCred::Simple(String::new()),
            }),
        ))
        .await;
    assert!(
        matches!(&v2.msgs[0].op, LdapOp::BindResponse(r) if r.res.code == LdapResultCode::ProtocolError)
    );
    // The failed-bind limit: after 10 failures bob is refused without verifying, even with
    // the right password, while alice (same address, 9 failures from it so far) still binds.
    for _ in 0..9 {
        bind(&mut s, &user_dn("bob"), "wrong").await;
    }
    assert_eq!(
        bind(&mut s, &user_dn("BOB"), "bob-pw-123").await,
        LdapResultCode::Success,
        "a success before the limit clears the account's failures"
    );
    for _ in 0..10 {
        bind(&mut s, &user_dn("bob"), "wrong").await;
    }
    assert_eq!(
        bind(
            &mut s,
            "UID=Bob, OU=People, DC=siteward, DC=internal",
            "bob-pw-123"
        )
        .await,
        LdapResultCode::InvalidCredentials,
        "every spelling of the DN is the same account"
    );
    assert_eq!(
        bind(&mut s, &user_dn("alice"), "alice-pw-1").await,
        LdapResultCode::Success
    );
    // A user suspended after binding loses its rights.
    let mut b = session(&srv);
    assert_eq!(
        bind(&mut b, &user_dn("root"), "root-pw-12").await,
        LdapResultCode::Success
    );
    srv.store
        .set_user_status(
            "root",
            UserStatus::Suspended,
            &siteward_store::Actor::system(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    srv.store
        .reload(Dirty::ALL)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(sub(&mut b, "(uid=bob)", &["mail"]).await.entries[0]
        .get("mail")
        .is_none());
}

#[sqlx::test(migrations = "../migrations")]
async fn paging_size_limit_and_controls(pool: PgPool) {
    let store = with_users(
        store(pool).await,
        (0..20).map(|i| named(format!("p{i:02}"))),
    )
    .await;
    let srv = server(store);
    let mut s = session(&srv);
    let req = request(
        BASE,
        LdapSearchScope::Subtree,
        "(objectClass=posixAccount)",
        &["uid"],
    );
    let mut seen = Vec::new();
    let mut cookie = Vec::new();
    let mut pages = 0;
    loop {
        let r = run(
            &mut s,
            req.clone(),
            vec![LdapControl::SimplePagedResults {
                size: 10,
                cookie: cookie.clone(),
            }],
        )
        .await;
        assert_eq!(r.done.code, LdapResultCode::Success);
        pages += 1;
        assert!(r.entries.len() <= 10);
        seen.extend(r.uids());
        match r.ctrls.as_slice() {
            [LdapControl::SimplePagedResults { cookie: c, .. }] if c.is_empty() => break,
            [LdapControl::SimplePagedResults { cookie: c, .. }] => cookie = c.clone(),
            other => panic!("no paging control: {other:?}"),
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25);
    // Unknown cookie; changed request; abandon with size 0.
    let r = run(
        &mut s,
        req.clone(),
        vec![LdapControl::SimplePagedResults {
            size: 10,
            cookie: b"nope".to_vec(),
        }],
    )
    .await;
    assert_eq!(r.done.code, LdapResultCode::UnwillingToPerform);
    let first = run(
        &mut s,
        req.clone(),
        vec![LdapControl::SimplePagedResults {
            size: 5,
            cookie: vec![],
        }],
    )
    .await;
    let Some(LdapControl::SimplePagedResults { cookie: c, .. }) = first.ctrls.first() else {
        panic!()
    };
    let other = request(BASE, LdapSearchScope::Subtree, "(uid=*)", &["uid"]);
    let r = run(
        &mut s,
        other,
        vec![LdapControl::SimplePagedResults {
            size: 5,
            cookie: c.clone(),
        }],
    )
    .await;
    assert_eq!(r.done.code, LdapResultCode::UnwillingToPerform);
    let first = run(
        &mut s,
        req.clone(),
        vec![LdapControl::SimplePagedResults {
            size: 5,
            cookie: vec![],
        }],
    )
    .await;
    let Some(LdapControl::SimplePagedResults { cookie: c, .. }) = first.ctrls.first() else {
        panic!()
    };
    let r = run(
        &mut s,
        req.clone(),
        vec![LdapControl::SimplePagedResults {
            size: 0,
            cookie: c.clone(),
        }],
    )
    .await;
    assert!(r.entries.is_empty() && r.done.code == LdapResultCode::Success);
    let r = run(
        &mut s,
        req.clone(),
        vec![LdapControl::SimplePagedResults {
            size: 5,
            cookie: c.clone(),
        }],
    )
    .await;
    assert_eq!(
        r.done.code,
        LdapResultCode::UnwillingToPerform,
        "abandoned cookie"
    );
    // Size limit.
    let mut limited = req.clone();
    limited.sizelimit = 7;
    let r = run(&mut s, limited, vec![]).await;
    assert_eq!(r.entries.len(), 7);
    assert_eq!(r.done.code, LdapResultCode::SizeLimitExceeded);
    // An unknown critical control is refused; a non-critical one ignored.
    let r = run(
        &mut s,
        req.clone(),
        vec![LdapControl::Unknown {
            oid: "1.2.3".into(),
            criticality: true,
            value: None,
        }],
    )
    .await;
    assert_eq!(r.done.code, LdapResultCode::UnavailableCriticalExtension);
    let r = run(
        &mut s,
        req.clone(),
        vec![LdapControl::Unknown {
            oid: "1.2.3".into(),
            criticality: false,
            value: None,
        }],
    )
    .await;
    assert_eq!(r.entries.len(), 25);
}

#[sqlx::test(migrations = "../migrations")]
async fn root_dse_and_subschema(pool: PgPool) {
    let srv = server(store(pool).await);
    let mut s = session(&srv);
    let r = run(
        &mut s,
        request("", LdapSearchScope::Base, "(objectClass=*)", &["+"]),
        vec![],
    )
    .await;
    let e = &r.entries[0];
    assert_eq!(e.dn, "");
    assert_eq!(e.get("namingContexts"), Some(&vec![BASE.to_string()]));
    assert_eq!(e.get("supportedLDAPVersion"), Some(&vec!["3".to_string()]));
    for oid in [OID_WHOAMI, OID_PASSWORD_MODIFY, "1.3.6.1.4.1.1466.20037"] {
        assert!(e
            .get("supportedExtension")
            .is_some_and(|v| v.iter().any(|x| x == oid)));
    }
    assert_eq!(
        e.get("supportedControl"),
        Some(&vec!["1.2.840.113556.1.4.319".to_string()])
    );
    assert_eq!(
        e.get("subschemaSubentry"),
        Some(&vec!["cn=Subschema".to_string()])
    );
    let r = run(
        &mut s,
        request(
            "cn=subschema",
            LdapSearchScope::Base,
            "(objectClass=subschema)",
            &["attributeTypes", "objectClasses"],
        ),
        vec![],
    )
    .await;
    let e = &r.entries[0];
    assert!(e
        .get("attributeTypes")
        .is_some_and(|v| v.iter().any(|d| d.contains("'uidNumber'"))));
    assert!(e
        .get("objectClasses")
        .is_some_and(|v| v.iter().any(|d| d.contains("'posixAccount'"))));
}

#[sqlx::test(migrations = "../migrations")]
async fn extended_compare_and_writes(pool: PgPool) {
    let srv = server(store(pool).await);
    let mut s = session(&srv);
    let ext = |name: &str, value: Option<Vec<u8>>| {
        LdapMsg::new(
            5,
            LdapOp::ExtendedRequest(LdapExtendedRequest {
                name: name.into(),
                value,
            }),
        )
    };
    let whoami = |r: Reply| match &r.msgs[0].op {
        LdapOp::ExtendedResponse(x) => {
            String::from_utf8_lossy(x.value.as_deref().unwrap_or_default()).into_owned()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(whoami(s.handle(ext(OID_WHOAMI, None)).await), "");
    bind(&mut s, &user_dn("alice"), "alice-pw-1").await;
    assert_eq!(
        whoami(s.handle(ext(OID_WHOAMI, None)).await),
        format!("dn:{}", user_dn("alice"))
    );

    let passwd = |user: Option<&str>, old: Option<&str>, new: Option<&str>| {
        let req: LdapExtendedRequest = LdapPasswordModifyRequest {
            user_identity: user.map(str::to_owned),
            old_password: old.map(str::to_owned),
            new_password: new.map(str::to_owned),
        }
        .into();
        LdapMsg::new(6, LdapOp::ExtendedRequest(req))
    };
    let code = |r: &Reply| match &r.msgs[0].op {
        LdapOp::ExtendedResponse(x) => x.res.code.clone(),
        other => panic!("{other:?}"),
    };
    // Self-service needs the current password.
    assert_eq!(
        code(&s.handle(passwd(None, None, Some("alice-new-1"))).await),
        LdapResultCode::UnwillingToPerform
    );
    assert_eq!(
        code(
            &s.handle(passwd(None, Some("bad"), Some("alice-new-1")))
                .await
        ),
        LdapResultCode::InvalidCredentials
    );
    assert_eq!(
        code(
            &s.handle(passwd(None, Some("alice-pw-1"), Some("alice-new-1")))
                .await
        ),
        LdapResultCode::Success
    );
    // Not someone else's.
    assert_eq!(
        code(
            &s.handle(passwd(Some(&user_dn("bob")), Some("x"), Some("bob-new-12")))
                .await
        ),
        LdapResultCode::InsufficentAccessRights
    );
    srv.store
        .reload(Dirty::ALL)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut s2 = session(&srv);
    assert_eq!(
        bind(&mut s2, &user_dn("alice"), "alice-pw-1").await,
        LdapResultCode::InvalidCredentials
    );
    assert_eq!(
        bind(&mut s2, &user_dn("alice"), "alice-new-1").await,
        LdapResultCode::Success
    );
    // An administrator sets anyone's, and may let the server generate one.
    let mut adm = session(&srv);
    bind(&mut adm, &user_dn("root"), "root-pw-12").await;
    assert_eq!(
        code(
            &adm.handle(passwd(Some(&user_dn("bob")), None, Some("bob-new-12")))
                .await
        ),
        LdapResultCode::Success
    );
    let r = adm.handle(passwd(Some("bob"), None, None)).await;
    let LdapOp::ExtendedResponse(x) = &r.msgs[0].op else {
        panic!()
    };
    let generated = LdapPasswordModifyResponse::try_from(x)
        .ok()
        .and_then(|p| p.gen_password)
        .unwrap_or_else(|| panic!("no password"));
    srv.store
        .reload(Dirty::ALL)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        bind(&mut s2, &user_dn("bob"), &generated).await,
        LdapResultCode::Success
    );
    // Anonymous cannot.
    let mut anon = session(&srv);
    assert_eq!(
        code(
            &anon
                .handle(passwd(Some("bob"), None, Some("x-y-z-123")))
                .await
        ),
        LdapResultCode::UnwillingToPerform
    );
    // Unknown extended operations.
    assert_eq!(
        code(&anon.handle(ext("1.2.3.4", None)).await),
        LdapResultCode::ProtocolError
    );
    // StartTLS without TLS configured.
    assert_eq!(
        code(&anon.handle(ext("1.3.6.1.4.1.1466.20037", None)).await),
        LdapResultCode::Unavailable
    );

    // Compare.
    let cmp = |attr: &str, val: &str| {
        LdapMsg::new(
            7,
            LdapOp::CompareRequest(LdapCompareRequest {
                dn: user_dn("alice"),
                atype: attr.into(),
                val: val.as_bytes().to_vec(),
            }),
        )
    };
    let ccode = |r: &Reply| match &r.msgs[0].op {
        LdapOp::CompareResult(x) => x.code.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        ccode(&anon.handle(cmp("uidNumber", "2000")).await),
        LdapResultCode::CompareTrue
    );
    assert_eq!(
        ccode(&anon.handle(cmp("uid", "ALICE")).await),
        LdapResultCode::CompareTrue
    );
    assert_eq!(
        ccode(&anon.handle(cmp("uid", "bob")).await),
        LdapResultCode::CompareFalse
    );
    assert_eq!(
        ccode(&anon.handle(cmp("mail", "alice@example.org")).await),
        LdapResultCode::InsufficentAccessRights
    );
    assert_eq!(
        ccode(&anon.handle(cmp("bogus", "x")).await),
        LdapResultCode::UndefinedAttributeType
    );

    // Writes are refused with the response type of the request.
    let writes = [
        (
            LdapOp::AddRequest(LdapAddRequest {
                dn: user_dn("x"),
                attributes: vec![],
            }),
            "add",
        ),
        (LdapOp::DelRequest(user_dn("alice")), "del"),
        (
            LdapOp::ModifyRequest(LdapModifyRequest {
                dn: user_dn("alice"),
                changes: vec![],
            }),
            "mod",
        ),
        (
            LdapOp::ModifyDNRequest(LdapModifyDNRequest {
                dn: user_dn("alice"),
                newrdn: "uid=z".into(),
                deleteoldrdn: true,
                new_superior: None,
            }),
            "moddn",
        ),
    ];
    for (op, what) in writes {
        let r = adm.handle(LdapMsg::new(9, op)).await;
        let ok = match &r.msgs[0].op {
            LdapOp::AddResponse(x) => what == "add" && x.code == LdapResultCode::UnwillingToPerform,
            LdapOp::DelResponse(x) => what == "del" && x.code == LdapResultCode::UnwillingToPerform,
            LdapOp::ModifyResponse(x) => {
                what == "mod" && x.code == LdapResultCode::UnwillingToPerform
            }
            LdapOp::ModifyDNResponse(x) => {
                what == "moddn"
                    && x.code == LdapResultCode::UnwillingToPerform
                    && x.message.contains("admin API")
            }
            _ => false,
        };
        assert!(ok, "{what}: {:?}", r.msgs);
        assert_eq!(r.msgs[0].msgid, 9);
    }
    // Abandon has no reply; unbind closes; a response from a client disconnects.
    assert!(adm
        .handle(LdapMsg::new(10, LdapOp::AbandonRequest(2)))
        .await
        .msgs
        .is_empty());
    let r = adm
        .handle(LdapMsg::new(
            11,
            LdapOp::DelResponse(LdapResult {
                code: LdapResultCode::Success,
                matcheddn: String::new(),
                message: String::new(),
                referral: vec![],
            }),
        ))
        .await;
    assert_eq!(r.action, Action::Close);
    assert_eq!(r.msgs[0].msgid, 0);
    let r = adm.handle(LdapMsg::new(12, LdapOp::UnbindRequest)).await;
    assert!(r.msgs.is_empty() && r.action == Action::Close);
}

#[sqlx::test(migrations = "../migrations")]
async fn live_changes_are_seen(pool: PgPool) {
    let store = store(pool).await;
    let srv = server(store.clone());
    let mut s = session(&srv);
    assert!(sub(&mut s, "(uid=dave)", &[]).await.entries.is_empty());
    with_users(store, [named("dave".into())]).await;
    assert_eq!(sub(&mut s, "(uid=dave)", &[]).await.uids(), vec!["dave"]);
}

fn encode(msg: LdapMsg) -> BytesMut {
    let mut buf = BytesMut::new();
    crate::net::Codec::new(1024, 16)
        .encode(msg, &mut buf)
        .unwrap_or_else(|e| panic!("{e}"));
    buf
}

#[test]
fn codec_refuses_malformed_input() {
    let mut codec = crate::net::Codec::new(1024, 16);
    // A good message decodes; a partial one waits.
    let good = encode(LdapMsg::new(1, LdapOp::UnbindRequest));
    let mut partial = BytesMut::from(&good[..good.len() - 1]);
    assert!(matches!(codec.decode(&mut partial), Ok(None)));
    let mut buf = good.clone();
    assert!(matches!(codec.decode(&mut buf), Ok(Some(_))));
    // Not a SEQUENCE.
    assert!(codec
        .decode(&mut BytesMut::from(&b"\x04\x01a"[..]))
        .is_err());
    // A header announcing 10 MB is refused at once, before the body arrives.
    assert!(codec
        .decode(&mut BytesMut::from(&b"\x30\x84\x00\xa0\x00\x00"[..]))
        .is_err());
    // Indefinite length; five length bytes.
    assert!(codec
        .decode(&mut BytesMut::from(&b"\x30\x80\x00\x00"[..]))
        .is_err());
    assert!(codec
        .decode(&mut BytesMut::from(&b"\x30\x85\x00\x00\x00\x00\x01"[..]))
        .is_err());
    // Garbage inside a well-framed message.
    assert!(codec
        .decode(&mut BytesMut::from(&b"\x30\x03\x02\x01"[..]))
        .is_ok_and(|o| o.is_none()));
    assert!(codec
        .decode(&mut BytesMut::from(&b"\x30\x03\xff\xff\xff"[..]))
        .is_err());
    // Deep nesting: 60 nested SEQUENCEs (the limit here is 16).
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..60 {
        let len = u8::try_from(inner.len()).unwrap_or(0);
        inner.splice(0..0, [0x30, len]);
    }
    let mut deep = BytesMut::from(&inner[..]);
    assert!(codec.decode(&mut deep).is_err());
}

async fn spawn_server(
    srv: Arc<LdapServer>,
) -> (
    std::net::SocketAddr,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<(), crate::Error>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(crate::serve(listener, srv, token.clone()));
    (addr, token, task)
}

const ANON_BIND: &[u8] = &[
    0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00,
];

async fn anon_bind(c: &mut tokio::net::TcpStream) -> [u8; 14] {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    c.write_all(ANON_BIND)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 14];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no bind response"))
        .unwrap_or_else(|e| panic!("{e}"));
    buf
}

/// Reads to EOF; true when a notice of disconnection came first.
async fn notice_then_eof(c: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
    read.is_ok_and(|r| r.is_ok())
        && out
            .windows(crate::dit::OID_NOTICE_OF_DISCONNECTION.len())
            .any(|w| w == crate::dit::OID_NOTICE_OF_DISCONNECTION.as_bytes())
}

#[sqlx::test(migrations = "../migrations")]
async fn connection_cap_idle_timeout_and_shutdown(pool: PgPool) {
    let srv = server_with(
        store(pool).await,
        Settings {
            max_connections: 2,
            idle_timeout: Duration::from_millis(300),
            ..Settings::default()
        },
    );
    let (addr, token, task) = spawn_server(srv).await;
    let connect = || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut a = connect().await;
    let mut b = connect().await;
    assert_eq!(anon_bind(&mut a).await[9], 0);
    assert_eq!(anon_bind(&mut b).await[9], 0);
    // At the cap the third is served: the connection idle the longest (a) is told why and
    // closed to make room.
    let mut c = connect().await;
    assert_eq!(anon_bind(&mut c).await[9], 0);
    assert!(notice_then_eof(&mut a).await);
    // Then b, the older of the two used ones.
    let mut silent = connect().await;
    assert!(notice_then_eof(&mut b).await);
    // A connection that never sent anything goes before one that did, though it is newer.
    let mut d = connect().await;
    assert!(notice_then_eof(&mut silent).await);
    assert_eq!(anon_bind(&mut d).await[9], 0);
    // Idle connections are closed with a notice after the idle timeout, which frees their slots.
    assert!(notice_then_eof(&mut c).await);
    assert!(notice_then_eof(&mut d).await);
    let mut d = connect().await;
    assert_eq!(anon_bind(&mut d).await[9], 0);
    // Shutdown: open connections get a notice, the accept loop ends, the port is free again.
    token.cancel();
    assert!(notice_then_eof(&mut d).await);
    let done = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
    assert!(tokio::net::TcpListener::bind(addr).await.is_ok());
}

#[sqlx::test(migrations = "../migrations")]
async fn a_bind_flood_does_not_starve_searches(pool: PgPool) {
    use futures::{SinkExt, StreamExt};
    // Real cost hashes (19 MiB, 2 passes), as in production.
    let store = Store::from_pool(pool, SecretBox::from_key(&[0; 32]), HashCost::default());
    let store = with_users(
        store,
        [NewUser {
            password: Some("flood-pw-1".into()),
            ..named("flood".into())
        }],
    )
    .await;
    let srv = server(store);
    let (addr, token, _task) = spawn_server(srv).await;
    let framed = |s| tokio_util::codec::Framed::new(s, crate::net::Codec::new(1 << 20, 32));
    // 32 connections binding in a loop (correct password: never refused by the bind limits).
    let stop = tokio_util::sync::CancellationToken::new();
    let mut flood = Vec::new();
    for _ in 0..32 {
        let stop = stop.clone();
        let mut f = framed(
            tokio::net::TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
        flood.push(tokio::spawn(async move {
            let mut binds = 0u32;
            while !stop.is_cancelled() {
                let req = LdapMsg::new(
                    1,
                    LdapOp::BindRequest(LdapBindRequest {
                        version: 3,
                        dn: user_dn("flood"),
                        cred: LdapBindCred::Simple("flood-pw-1".into()),
                    }),
                );
                if f.send(req).await.is_err() || f.next().await.is_none() {
                    break;
                }
                binds += 1;
            }
            binds
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile, searches on another connection stay fast.
    let mut f = framed(
        tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut worst = Duration::ZERO;
    for i in 0..50 {
        let started = std::time::Instant::now();
        let req = request(BASE, LdapSearchScope::Subtree, "(uid=flood)", &["uid"]);
        f.send(LdapMsg::new(i + 1, LdapOp::SearchRequest(req)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        loop {
            match f.next().await {
                Some(Ok(LdapMsg {
                    op: LdapOp::SearchResultDone(r),
                    ..
                })) => {
                    assert_eq!(r.code, LdapResultCode::Success);
                    break;
                }
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        worst = worst.max(started.elapsed());
    }
    stop.cancel();
    let mut binds = 0;
    for t in flood {
        binds += t.await.unwrap_or(0);
    }
    token.cancel();
    assert!(binds > 0, "the flood did bind");
    // Argon2 at this cost takes tens of milliseconds per bind; 32 queued binds would take
    // seconds if searches waited behind them.
    assert!(
        worst < Duration::from_millis(250),
        "slowest search under the flood: {worst:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn time_limit_is_honored(pool: PgPool) {
    let store = with_users(
        store(pool).await,
        (0..100).map(|i| named(format!("t{i:03}"))),
    )
    .await;
    // A server limit of zero: the search stops at its first check.
    let srv = server_with(
        store.clone(),
        Settings {
            time_limit: Duration::ZERO,
            ..Settings::default()
        },
    );
    let mut s = session(&srv);
    let r = sub(&mut s, "(objectClass=*)", &["1.1"]).await;
    assert_eq!(r.done.code, LdapResultCode::TimeLimitExceeded);
    assert!(r.entries.len() < 100);
    // With the default limit the same search completes.
    let srv = server(store);
    let mut s = session(&srv);
    let r = sub(&mut s, "(objectClass=*)", &["1.1"]).await;
    assert_eq!(r.done.code, LdapResultCode::Success);
    assert!(r.entries.len() > 100);
}

#[sqlx::test(migrations = "../migrations")]
async fn filter_terms_and_work_are_limited(pool: PgPool) {
    let store = with_users(
        store(pool).await,
        (0..20).map(|i| named(format!("w{i:02}"))),
    )
    .await;
    let or_of = |n: usize, term: &str| format!("(|{})", term.repeat(n));
    // (|...) is one element, each (cn=*x*) two (the assertion and its piece).
    let srv = server_with(
        store.clone(),
        Settings {
            max_filter_terms: 11,
            ..Settings::default()
        },
    );
    let mut s = session(&srv);
    let r = sub(&mut s, &or_of(5, "(cn=*w0*)"), &["uid"]).await;
    assert_eq!(r.done.code, LdapResultCode::Success);
    assert_eq!(r.entries.len(), 10);
    let r = sub(&mut s, &or_of(6, "(cn=*w0*)"), &["uid"]).await;
    assert_eq!(r.done.code, LdapResultCode::AdminLimitExceeded);
    assert!(r.entries.is_empty());
    assert!(
        r.done.message.contains("ldap.max_filter_terms"),
        "{}",
        r.done.message
    );
    // The same with paging: refused before a cookie exists.
    let r = run(
        &mut s,
        request(
            BASE,
            LdapSearchScope::Subtree,
            &or_of(6, "(cn=*w0*)"),
            &["uid"],
        ),
        vec![LdapControl::SimplePagedResults {
            size: 5,
            cookie: Vec::new(),
        }],
    )
    .await;
    assert_eq!(r.done.code, LdapResultCode::AdminLimitExceeded);

    // Work: 300 terms over 31 entries is about 20,000 units, over the inline allowance (so
    // it runs on the search pool) and within a limit of 50,000, but not of 5,000.
    let wide = or_of(300, "(cn=*zz*)");
    for (limit, code) in [
        (50_000, LdapResultCode::Success),
        (5_000, LdapResultCode::AdminLimitExceeded),
    ] {
        let srv = server_with(
            store.clone(),
            Settings {
                search_work_limit: limit,
                ..Settings::default()
            },
        );
        let mut s = session(&srv);
        let r = sub(&mut s, &wide, &["uid"]).await;
        assert_eq!(r.done.code, code, "work limit {limit}");
        assert!(r.entries.is_empty());
        let paged = run(
            &mut s,
            request(BASE, LdapSearchScope::Subtree, &wide, &["uid"]),
            vec![LdapControl::SimplePagedResults {
                size: 5,
                cookie: Vec::new(),
            }],
        )
        .await;
        assert_eq!(paged.done.code, code, "paged, work limit {limit}");
    }
    // A group's values count: memberUid on ldapusers has every user (25 values), so 100 such
    // terms cost at least 2,500 units on that one entry alone.
    let srv = server_with(
        store,
        Settings {
            search_work_limit: 2_500,
            ..Settings::default()
        },
    );
    let mut s = session(&srv);
    let r = sub(&mut s, &or_of(100, "(memberUid=*zz*)"), &["1.1"]).await;
    assert_eq!(r.done.code, LdapResultCode::AdminLimitExceeded);
    let r = sub(&mut s, "(objectClass=*)", &["1.1"]).await;
    assert_eq!(r.done.code, LdapResultCode::Success);
    assert!(r.entries.len() > 25);
}

#[sqlx::test(migrations = "../migrations")]
async fn expensive_searches_wait_for_the_pool_and_cheap_ones_do_not(pool: PgPool) {
    let srv = server_with(
        store(pool).await,
        Settings {
            search_threads: 1,
            ..Settings::default()
        },
    );
    // Hold the pool's only permit.
    let held = srv
        .searches
        .clone()
        .acquire_owned()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let expensive = {
        let srv = srv.clone();
        tokio::spawn(async move {
            let mut s = session(&srv);
            sub(&mut s, &format!("(|{})", "(cn=*zz*)".repeat(400)), &["uid"])
                .await
                .done
                .code
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !expensive.is_finished(),
        "an expensive search waits for the pool"
    );
    // A cheap search runs on the runtime meanwhile, and so does a whole small listing.
    let mut s = session(&srv);
    assert_eq!(
        sub(&mut s, "(uid=alice)", &["uid"]).await.uids(),
        vec!["alice"]
    );
    assert_eq!(
        sub(&mut s, "(objectClass=posixAccount)", &["uid"])
            .await
            .done
            .code,
        LdapResultCode::Success
    );
    drop(held);
    let code = tokio::time::timeout(Duration::from_secs(30), expensive)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, LdapResultCode::Success);
}
