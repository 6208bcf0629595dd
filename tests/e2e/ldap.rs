//! LDAP end to end: the real server driven by Debian's `ldapsearch`, `ldapwhoami`, `ldappasswd`,
//! `ldapcompare` and `ldapmodify` (plain, StartTLS with `-ZZ` verifying the generated
//! certificate, and `ldaps://`), and raw sockets for malformed input, oversized and deeply nested
//! messages, and 1,000 simultaneous connections.

use std::time::Duration;

use siteward_store::{NewUser, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

const BASE: &str = "dc=siteward,dc=internal";

fn dn(user: &str) -> String {
    format!("uid={user},ou=people,{BASE}")
}

/// Output of one client run.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// `uid:` values in LDIF output, sorted.
    fn uids(&self) -> Vec<String> {
        self.values("uid")
    }

    fn values(&self, attr: &str) -> Vec<String> {
        let prefix = format!("{}: ", attr.to_ascii_lowercase());
        let mut v: Vec<String> = self
            .stdout
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].to_owned())
            .collect();
        v.sort();
        v
    }

    fn dns(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("dn: "))
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }
}

async fn tool(name: &str, args: &[&str], env: &[(&str, String)]) -> TestResult<Out> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(name)
            .args(args)
            .env("LDAPCONF", "/dev/null")
            .env("LDAPRC", "/nonexistent-ldaprc")
            .envs(env.iter().map(|(k, v)| (*k, v.clone())))
            .output(),
    )
    .await
    .map_err(|_| format!("{name} {args:?} timed out"))?
    .map_err(|e| format!("cannot run {name} (apt-get install ldap-utils): {e}"))?;
    Ok(Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn url(server: &Server) -> TestResult<String> {
    Ok(format!(
        "ldap://{}",
        server.addrs.ldap.ok_or("no ldap listener")?
    ))
}

/// `ldapsearch -x -LLL` as `who` (anonymous when `None`) under the base, subtree.
async fn search(
    server: &Server,
    who: Option<(&str, &str)>,
    filter: &str,
    attrs: &[&str],
) -> TestResult<Out> {
    let url = url(server)?;
    let mut args: Vec<String> = vec!["-x".into(), "-LLL".into(), "-H".into(), url];
    if let Some((user, pw)) = who {
        args.extend(["-D".into(), dn(user), "-w".into(), pw.into()]);
    }
    args.extend(["-b".into(), BASE.into(), filter.into()]);
    args.extend(attrs.iter().map(|a| (*a).to_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    tool("ldapsearch", &refs, &[]).await
}

async fn users(store: &Store) -> TestResult {
    for (name, pw, admin) in [
        ("alice", "alice-pw-1", false),
        ("bob", "bob-pw-123", false),
        ("root", "root-pw-12", true),
    ] {
        store
            .create_user(
                NewUser {
                    username: name.into(),
                    password: Some(pw.into()),
                    mail: Some(format!("{name}@example.org")),
                    given_name: Some(name.to_uppercase()),
                    admin,
                    ssh_public_keys: vec![format!("ssh-ed25519 AAAAC3{name} {name}@laptop")],
                    ..Default::default()
                },
                &siteward_store::Actor::system(),
            )
            .await?;
    }
    store
        .create_group(
            "devs",
            Some("Developers"),
            false,
            &siteward_store::Actor::system(),
        )
        .await?;
    store
        .add_group_member("devs", "alice", &siteward_store::Actor::system())
        .await?;
    store
        .add_group_member("devs", "bob", &siteward_store::Actor::system())
        .await?;
    Ok(())
}

/// Polls until the server shows `uid` (the change feed is asynchronous).
async fn wait_for_user(server: &Server, uid: &str) -> TestResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = search(server, None, &format!("(uid={uid})"), &["uid"]).await?;
        if out.uids() == vec![uid.to_owned()] {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{uid} never appeared: {} {}", out.stdout, out.stderr).into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn started() -> TestResult<(Server, Store)> {
    let db = TestDb::new().await?;
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        args: vec!["--ldaps".into(), "127.0.0.1:0".into()],
        ..Default::default()
    })
    .await?;
    let store = db.store().await?;
    server.db = Some(db);
    users(&store).await?;
    wait_for_user(&server, "bob").await?;
    Ok((server, store))
}

#[tokio::test]
async fn ldapsearch_filters_scopes_selection_paging_and_root_dse() -> TestResult {
    let (server, store) = started().await?;
    let root = Some(("root", "root-pw-12"));
    let cases: &[(&str, &[&str])] = &[
        ("(uid=alice)", &["alice"]),
        ("(UID=Alice)", &["alice"]),
        ("(uid=a*)", &["alice"]),
        ("(uid=*o*)", &["bob", "root"]),
        ("(uid=*b)", &["bob"]),
        ("(uid~=BOB)", &["bob"]),
        (
            "(&(objectClass=posixAccount)(|(uid=alice)(uid=bob)))",
            &["alice", "bob"],
        ),
        (
            "(&(objectClass=inetOrgPerson)(!(uid=alice)))",
            &["bob", "root"],
        ),
        ("(uidNumber>=2001)", &["bob", "root"]),
        ("(uidNumber<=2000)", &["alice"]),
        (
            "(createTimestamp>=20200101000000Z)",
            &["alice", "bob", "root"],
        ),
        ("(createTimestamp<=20200101000000Z)", &[]),
        ("(mail=BOB@example.org)", &["bob"]),
        (
            "(memberOf=cn=devs,ou=groups,dc=siteward,dc=internal)",
            &["alice", "bob"],
        ),
        (
            "(memberOf:1.2.840.113556.1.4.1941:=cn=devs,ou=groups,dc=siteward,dc=internal)",
            &["alice", "bob"],
        ),
        ("(uid:caseExactMatch:=alice)", &["alice"]),
        ("(uidNumber:1.2.840.113556.1.4.803:=2001)", &["bob"]),
        ("(ou:dn:=people)", &["alice", "bob", "root"]),
        ("(sshPublicKey=*)", &["alice", "bob", "root"]),
        ("(nosuchattribute=1)", &[]),
        ("(!(nosuchattribute=1))", &[]),
        ("(uid:1.9.9.9:=alice)", &[]),
    ];
    for (filter, want) in cases {
        let out = search(&server, root, filter, &["uid"]).await?;
        assert_eq!(out.code, 0, "{filter}: {}", out.stderr);
        assert_eq!(out.uids(), *want, "{filter}");
    }
    // Groups: memberUid (RFC 2307), member (RFC 2307bis), in-chain.
    for (filter, want) in [
        (
            "(&(objectClass=posixGroup)(memberUid=alice))",
            vec!["devs", "ldapusers"],
        ),
        (
            "(member=uid=bob,ou=people,dc=siteward,dc=internal)",
            vec!["devs", "ldapusers"],
        ),
        (
            "(member:1.2.840.113556.1.4.1941:=uid=root,ou=people,dc=siteward,dc=internal)",
            vec!["ldapusers", "sysadmins"],
        ),
        ("(gidNumber=2001)", vec!["sysadmins"]),
    ] {
        let out = search(&server, None, filter, &["cn"]).await?;
        assert_eq!(out.values("cn"), want, "{filter}");
    }
    let group = search(&server, None, "(cn=devs)", &[]).await?;
    assert_eq!(group.values("memberUid"), vec!["alice", "bob"]);
    assert_eq!(group.values("member"), vec![dn("alice"), dn("bob")]);
    assert_eq!(
        group.values("objectClass"),
        vec!["groupOfNames", "posixGroup", "top"]
    );

    // Scopes.
    let url = url(&server)?;
    let scoped = |base: String, scope: &'static str| {
        let url = url.clone();
        async move {
            tool(
                "ldapsearch",
                &[
                    "-x",
                    "-LLL",
                    "-H",
                    &url,
                    "-b",
                    &base,
                    "-s",
                    scope,
                    "(objectClass=*)",
                    "1.1",
                ],
                &[],
            )
            .await
        }
    };
    assert_eq!(
        scoped(BASE.into(), "base").await?.dns(),
        vec![BASE.to_string()]
    );
    assert_eq!(
        scoped(BASE.into(), "one").await?.dns(),
        vec![format!("ou=groups,{BASE}"), format!("ou=people,{BASE}")]
    );
    assert_eq!(
        scoped(format!("ou=people,{BASE}"), "one")
            .await?
            .dns()
            .len(),
        3
    );
    assert_eq!(scoped(BASE.into(), "sub").await?.dns().len(), 3 + 3 + 3);
    let missing = scoped(dn("nobody"), "base").await?;
    assert_eq!(missing.code, 32, "noSuchObject");

    // Attribute selection: the user's own entry, explicit lists, +, 1.1, typesOnly.
    let me = Some(("alice", "alice-pw-1"));
    let own = search(&server, me, "(uid=alice)", &["*", "+"]).await?;
    for attr in [
        "uid",
        "cn",
        "sn",
        "givenName",
        "displayName",
        "mail",
        "uidNumber",
        "gidNumber",
        "homeDirectory",
        "loginShell",
        "gecos",
        "sshPublicKey",
        "memberOf",
        "entryUUID",
        "createTimestamp",
        "modifyTimestamp",
        "shadowLastChange",
        "pwdChangedTime",
    ] {
        assert!(
            !own.values(attr).is_empty(),
            "{attr} missing:\n{}",
            own.stdout
        );
    }
    assert_eq!(own.values("homeDirectory"), vec!["/home/alice"]);
    assert_eq!(own.values("gidNumber"), vec!["2000"]);
    let explicit = search(
        &server,
        me,
        "(uid=alice)",
        &["uidNumber", "UIDNUMBER", "cn"],
    )
    .await?;
    assert_eq!(explicit.values("uidNumber"), vec!["2000"]);
    assert!(explicit.values("uid").is_empty());
    let only_dn = search(&server, me, "(uid=alice)", &["1.1"]).await?;
    assert_eq!(only_dn.stdout.trim(), format!("dn: {}", dn("alice")));
    let types = tool(
        "ldapsearch",
        &[
            "-x",
            "-LLL",
            "-A",
            "-H",
            &url,
            "-b",
            BASE,
            "(uid=alice)",
            "uid",
            "cn",
        ],
        &[],
    )
    .await?;
    assert!(
        types.stdout.lines().any(|l| l == "uid:"),
        "{}",
        types.stdout
    );
    assert!(types.values("uid").iter().all(String::is_empty));

    // Access: anonymous and other users do not read mail; userPassword never appears.
    assert!(search(&server, None, "(uid=alice)", &["mail"])
        .await?
        .values("mail")
        .is_empty());
    assert!(search(
        &server,
        Some(("bob", "bob-pw-123")),
        "(uid=alice)",
        &["mail"]
    )
    .await?
    .values("mail")
    .is_empty());
    assert_eq!(
        search(&server, root, "(uid=alice)", &["mail"])
            .await?
            .values("mail"),
        vec!["alice@example.org"]
    );
    for who in [None, me, root] {
        for attrs in [&["*", "+"][..], &["userPassword"][..], &[][..]] {
            let out = search(&server, who, "(objectClass=*)", attrs).await?;
            assert!(
                !out.stdout.to_ascii_lowercase().contains("userpassword"),
                "{}",
                out.stdout
            );
            assert!(!out.stdout.contains("argon2"), "{}", out.stdout);
        }
        let probe = search(&server, who, "(userPassword=*)", &["uid"]).await?;
        assert!(probe.uids().is_empty());
    }

    // Root DSE before any bind, and the subschema.
    let dse = tool(
        "ldapsearch",
        &["-x", "-LLL", "-H", &url, "-b", "", "-s", "base", "+"],
        &[],
    )
    .await?;
    assert_eq!(dse.values("namingContexts"), vec![BASE]);
    assert_eq!(dse.values("defaultNamingContext"), vec![BASE]);
    assert_eq!(dse.values("supportedLDAPVersion"), vec!["3"]);
    assert_eq!(
        dse.values("supportedControl"),
        vec!["1.2.840.113556.1.4.319"]
    );
    assert_eq!(
        dse.values("supportedExtension"),
        vec![
            "1.3.6.1.4.1.1466.20037",
            "1.3.6.1.4.1.4203.1.11.1",
            "1.3.6.1.4.1.4203.1.11.3"
        ]
    );
    assert_eq!(dse.values("subschemaSubentry"), vec!["cn=Subschema"]);
    assert_eq!(dse.values("vendorName"), vec!["siteward"]);
    let schema = tool(
        "ldapsearch",
        &[
            "-x",
            "-LLL",
            "-H",
            &url,
            "-b",
            "cn=Subschema",
            "-s",
            "base",
            "(objectClass=subschema)",
            "attributeTypes",
            "objectClasses",
        ],
        &[],
    )
    .await?;
    assert!(
        schema.stdout.contains("NAME 'posixAccount'"),
        "{}",
        schema.stdout
    );
    assert!(schema.stdout.contains("NAME 'memberOf'"));

    // Paging: 6 users and page size 2 make three pages with real cookies.
    for name in ["p1", "p2", "p3"] {
        store
            .create_user(
                NewUser {
                    username: name.into(),
                    ..Default::default()
                },
                &siteward_store::Actor::system(),
            )
            .await?;
    }
    wait_for_user(&server, "p3").await?;
    let paged = tool(
        "ldapsearch",
        &[
            "-x",
            "-LLL",
            "-H",
            &url,
            "-b",
            &format!("ou=people,{BASE}"),
            "-s",
            "one",
            "-E",
            "pr=2/noprompt",
            "(objectClass=posixAccount)",
            "uid",
        ],
        &[],
    )
    .await?;
    assert_eq!(paged.code, 0, "{}", paged.stderr);
    assert_eq!(paged.uids(), vec!["alice", "bob", "p1", "p2", "p3", "root"]);
    let cookies: Vec<&str> = paged
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("# pagedresults: cookie="))
        .collect();
    assert_eq!(cookies.len(), 3, "{}", paged.stdout);
    assert!(
        !cookies[0].is_empty() && !cookies[1].is_empty() && cookies[2].is_empty(),
        "{cookies:?}"
    );
    // Size limit.
    let limited = tool(
        "ldapsearch",
        &[
            "-x", "-LLL", "-H", &url, "-b", BASE, "-z", "2", "(uid=*)", "uid",
        ],
        &[],
    )
    .await?;
    assert_eq!(limited.code, 4, "sizeLimitExceeded: {}", limited.stderr);
    assert_eq!(limited.uids().len(), 2);

    // A user removed through the store disappears.
    store
        .delete_user("p3", &siteward_store::Actor::system())
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !search(&server, None, "(uid=p3)", &["uid"])
        .await?
        .uids()
        .is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "p3 still visible");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await
}

#[tokio::test]
async fn binds_whoami_passwd_compare_writes_over_plain_starttls_and_ldaps() -> TestResult {
    let (server, store) = started().await?;
    let plain = url(&server)?;
    let ldaps = format!("ldaps://{}", server.addrs.ldaps.ok_or("no ldaps listener")?);
    // Clients verify the generated certificate (its names include 127.0.0.1).
    let ca = vec![(
        "LDAPTLS_CACERT",
        server.data_dir.join("ldap-cert.pem").display().to_string(),
    )];
    let alice = dn("alice");
    for (uri, extra) in [
        (plain.as_str(), None),
        (plain.as_str(), Some("-ZZ")),
        (ldaps.as_str(), None),
    ] {
        let mut args = vec!["-x", "-H", uri, "-D", &alice, "-w", "alice-pw-1"];
        args.extend(extra);
        let out = tool("ldapwhoami", &args, &ca).await?;
        assert_eq!(out.code, 0, "{uri} {extra:?}: {}", out.stderr);
        assert_eq!(out.stdout.trim(), format!("dn:{alice}"));
        let mut bad = vec!["-x", "-H", uri, "-D", &alice, "-w", "nope"];
        bad.extend(extra);
        assert_eq!(tool("ldapwhoami", &bad, &ca).await?.code, 49);
    }
    // Without the CA, StartTLS verification fails: it really is TLS with our certificate.
    let untrusted = tool(
        "ldapwhoami",
        &["-x", "-ZZ", "-H", &plain, "-D", &alice, "-w", "alice-pw-1"],
        &[("LDAPTLS_CACERT", "/dev/null".into())],
    )
    .await?;
    assert_ne!(untrusted.code, 0);
    // Anonymous whoami; an unknown user costs a normal failure.
    let anon = tool("ldapwhoami", &["-x", "-H", &plain], &[]).await?;
    assert_eq!(anon.stdout.trim(), "anonymous");
    assert_eq!(
        tool(
            "ldapwhoami",
            &["-x", "-H", &plain, "-D", &dn("ghost"), "-w", "x"],
            &[]
        )
        .await?
        .code,
        49
    );

    // ldappasswd: self-service with the old password over StartTLS, then admin-set.
    let out = tool(
        "ldappasswd",
        &[
            "-x",
            "-ZZ",
            "-H",
            &plain,
            "-D",
            &alice,
            "-w",
            "alice-pw-1",
            "-a",
            "alice-pw-1",
            "-s",
            "alice-new-22",
        ],
        &ca,
    )
    .await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let bob = dn("bob");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tool(
        "ldapwhoami",
        &["-x", "-H", &plain, "-D", &alice, "-w", "alice-new-22"],
        &[],
    )
    .await?
    .code
        != 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice's new password not accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let denied = tool(
        "ldappasswd",
        &[
            "-x",
            "-H",
            &plain,
            "-D",
            &alice,
            "-w",
            "alice-new-22",
            "-s",
            "hijacked-1",
            &bob,
        ],
        &[],
    )
    .await?;
    assert_ne!(denied.code, 0);
    assert!(
        denied.stdout.contains("Insufficient access (50)"),
        "{}",
        denied.stdout
    );
    let out = tool(
        "ldappasswd",
        &[
            "-x",
            "-H",
            &ldaps,
            "-D",
            &dn("root"),
            "-w",
            "root-pw-12",
            "-s",
            "bob-new-333",
            &bob,
        ],
        &ca,
    )
    .await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Generated password (no -s).
    let out = tool(
        "ldappasswd",
        &[
            "-x",
            "-H",
            &plain,
            "-D",
            &dn("root"),
            "-w",
            "root-pw-12",
            &dn("alice"),
        ],
        &[],
    )
    .await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let generated = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("New password: "))
        .ok_or_else(|| format!("no generated password: {}", out.stdout))?
        .to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = tool(
            "ldapwhoami",
            &["-x", "-H", &plain, "-D", &alice, "-w", &generated],
            &[],
        )
        .await?;
        let b = tool(
            "ldapwhoami",
            &["-x", "-H", &plain, "-D", &bob, "-w", "bob-new-333"],
            &[],
        )
        .await?;
        if a.code == 0 && b.code == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new passwords not accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        tool(
            "ldapwhoami",
            &["-x", "-H", &plain, "-D", &bob, "-w", "bob-pw-123"],
            &[]
        )
        .await?
        .code,
        49
    );

    // Compare.
    let cmp = |assertion: &'static str| {
        let plain = plain.clone();
        async move {
            tool(
                "ldapcompare",
                &["-x", "-H", &plain, &dn("bob"), assertion],
                &[],
            )
            .await
        }
    };
    assert_eq!(cmp("uidNumber:2001").await?.code, 6, "compareTrue");
    assert_eq!(cmp("uid:BOB").await?.code, 6);
    assert_eq!(cmp("uid:alice").await?.code, 5, "compareFalse");
    assert_eq!(cmp("userPassword:bob-new-333").await?.code, 50);

    // Writes are refused, pointing to the admin API.
    let root_dn = dn("root");
    let ldif = format!("dn: {bob}\nchangetype: modify\nreplace: sn\nsn: x\n\ndn: uid=new,ou=people,{BASE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: new\ncn: n\nsn: n\n");
    let file = server.data_dir.join("w.ldif");
    tokio::fs::write(&file, ldif).await?;
    let out = tool(
        "ldapmodify",
        &[
            "-x",
            "-c",
            "-H",
            &plain,
            "-D",
            &root_dn,
            "-w",
            "root-pw-12",
            "-f",
            &file.display().to_string(),
        ],
        &[],
    )
    .await?;
    assert_eq!(out.code, 53, "{}", out.stderr);
    assert!(out.stderr.contains("admin API"), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("Server is unwilling to perform").count(),
        2,
        "{}",
        out.stderr
    );
    let out = tool(
        "ldapdelete",
        &["-x", "-H", &plain, "-D", &root_dn, "-w", "root-pw-12", &bob],
        &[],
    )
    .await?;
    assert_eq!(out.code, 53);
    let out = tool(
        "ldapmodrdn",
        &[
            "-x",
            "-H",
            &plain,
            "-D",
            &root_dn,
            "-w",
            "root-pw-12",
            &bob,
            "uid=bobby",
        ],
        &[],
    )
    .await?;
    assert_eq!(out.code, 53);
    // SASL is refused properly.
    let out = tool(
        "ldapwhoami",
        &["-H", &plain, "-Y", "PLAIN", "-U", "bob", "-w", "x"],
        &[],
    )
    .await?;
    assert_ne!(out.code, 0);
    // Suspended users cannot bind.
    store
        .set_user_status(
            "bob",
            siteward_store::UserStatus::Suspended,
            &siteward_store::Actor::system(),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tool(
        "ldapwhoami",
        &["-x", "-H", &plain, "-D", &bob, "-w", "bob-new-333"],
        &[],
    )
    .await?
    .code
        != 49
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "suspended bob still binds"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await
}

/// An anonymous simple bind, message id 1.
const ANON_BIND: &[u8] = &[
    0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00,
];

/// Reads until EOF (or 5 s) and returns what came.
async fn read_to_end(stream: &mut TcpStream) -> TestResult<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .map_err(|_| "the server did not close the connection")??;
    Ok(out)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn malformed_oversized_nested_and_many_connections() -> TestResult {
    let (server, _store) = started().await?;
    let addr = server.addrs.ldap.ok_or("no ldap")?;
    let notice = b"1.3.6.1.4.1.1466.20036";
    // Not BER at all.
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await?;
    assert!(contains(&read_to_end(&mut s).await?, notice));
    // Well framed, garbage inside.
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&[0x30, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await?;
    assert!(contains(&read_to_end(&mut s).await?, notice));
    // A 10 MB request: refused from its header, before the body is read.
    let mut s = TcpStream::connect(addr).await?;
    let len: u32 = 10 * 1024 * 1024;
    let mut big = vec![0x30, 0x84];
    big.extend_from_slice(&len.to_be_bytes());
    big.extend(std::iter::repeat_n(0x04u8, 64 * 1024));
    let _ = s.write_all(&big).await; // the server may close while we write
    assert!(contains(&read_to_end(&mut s).await?, notice));
    // Deep nesting: 200 nested SEQUENCEs inside a message.
    let mut inner: Vec<u8> = vec![0x04, 0x00];
    for _ in 0..200 {
        let mut next = vec![0x30, 0x82];
        next.extend_from_slice(&u16::try_from(inner.len())?.to_be_bytes());
        next.extend_from_slice(&inner);
        inner = next;
    }
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&inner).await?;
    assert!(contains(&read_to_end(&mut s).await?, notice));

    // 1,000 connections at once, each binding anonymously.
    let mut conns = Vec::new();
    for _ in 0..1000 {
        conns.push(TcpStream::connect(addr).await?);
    }
    let answers = futures::future::join_all(conns.iter_mut().map(|c| async move {
        c.write_all(ANON_BIND).await?;
        let mut buf = [0u8; 14];
        tokio::time::timeout(Duration::from_secs(30), c.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("timeout"))??;
        Ok::<_, std::io::Error>(buf)
    }))
    .await;
    let ok = answers
        .iter()
        .filter(|a| a.as_ref().is_ok_and(|b| b[5] == 0x61 && b[9] == 0x00))
        .count();
    assert_eq!(ok, 1000);
    // The server is still fine for everyone else.
    let out = search(&server, None, "(uid=alice)", &["uid"]).await?;
    assert_eq!(out.uids(), vec!["alice"]);
    drop(conns);
    let metrics = reqwest::get(server.metrics_url("/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("siteward_ldap_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("siteward_ldap_connections"));
    server.stop().await
}

/// A root shell in a private mount namespace: `/etc/nsswitch.conf`, `/etc/nslcd.conf`,
/// `/etc/pam.d` and `/run` are bind-mounted from a temporary directory, so the machine's own
/// configuration is untouched and no system nslcd is involved.
struct Namespace {
    /// Where a daemon started inside writes its pid, to be stopped on drop.
    pid_file: Option<std::path::PathBuf>,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Namespace {
    async fn start() -> TestResult<Self> {
        let mut child = tokio::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "bash"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        use tokio::io::AsyncBufReadExt;
        Ok(Self {
            pid_file: None,
            child,
            stdin,
            stdout: tokio::io::BufReader::new(stdout).lines(),
        })
    }

    /// Runs `cmd`; returns its exit code and combined output.
    async fn run(&mut self, cmd: &str) -> TestResult<(i32, String)> {
        self.stdin
            .write_all(format!("{cmd} 2>&1; echo \"__RC=$?\"\n").as_bytes())
            .await?;
        let mut out = String::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
                .await
                .map_err(|_| format!("`{cmd}` timed out; output so far:\n{out}"))??
                .ok_or_else(|| format!("the namespace shell exited during `{cmd}`:\n{out}"))?;
            if let Some(rc) = line.strip_prefix("__RC=") {
                return Ok((rc.trim().parse()?, out));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(pid) = self
            .pid_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.start_kill();
    }
}

/// `name:pw:gid` and the sorted members of a `getent group` line.
fn group_line(out: &str) -> (String, Vec<&str>) {
    let line = out.trim();
    let (head, members) = line.rsplit_once(':').unwrap_or((line, ""));
    let mut members: Vec<&str> = members.split(',').filter(|m| !m.is_empty()).collect();
    members.sort_unstable();
    (head.to_owned(), members)
}

/// Root, the client's binaries, a server with the usual users plus a suspended `carol`.
async fn nss_prelude(bins: &[&str], packages: &str) -> TestResult<(Server, Store)> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("this test needs root (unshare --mount, bind mounts over /etc files)".into());
    }
    for bin in bins {
        if !std::path::Path::new(bin).exists() {
            return Err(format!("{bin} missing: apt-get install {packages}").into());
        }
    }
    let (server, store) = started().await?;
    store
        .create_user(
            NewUser {
                username: "carol".into(),
                password: Some("carol-pw-1".into()),
                status: Some(siteward_store::UserStatus::Suspended),
                ..Default::default()
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    wait_for_user(&server, "carol").await?;
    Ok((server, store))
}

/// A copy of the machine's `/etc/pam.d` in `dir/pam.d` plus a `siteward-test` service using
/// `module` for auth and account.
fn pam_service(dir: &std::path::Path, module: &str) -> TestResult {
    let pam = dir.join("pam.d");
    std::fs::create_dir_all(&pam)?;
    for entry in std::fs::read_dir("/etc/pam.d")? {
        let entry = entry?;
        std::fs::copy(entry.path(), pam.join(entry.file_name()))?;
    }
    std::fs::write(
        pam.join("siteward-test"),
        format!("auth required {module}\naccount required {module}\n"),
    )?;
    Ok(())
}

#[tokio::test]
async fn nss_and_pam_through_nslcd() -> TestResult {
    let (server, store) = nss_prelude(
        &["/usr/sbin/nslcd", "/usr/bin/pamtester"],
        "nslcd libnss-ldapd libpam-ldapd pamtester",
    )
    .await?;
    let addr = server.addrs.ldap.ok_or("no ldap")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    std::fs::write(
        dir.join("nslcd.conf"),
        format!(
            "uid nslcd\ngid nslcd\nuri ldap://{addr}/\nbase {BASE}\nnss_min_uid 1000\n\
             ssl start_tls\ntls_reqcert demand\ntls_cacertfile {}\n",
            server.data_dir.join("ldap-cert.pem").display()
        ),
    )?;
    std::fs::write(
        dir.join("nsswitch.conf"),
        "passwd: files ldap\ngroup: files ldap\nshadow: files\nhosts: files\n",
    )?;
    pam_service(dir, "pam_ldap.so minimum_uid=1000")?;
    let run = dir.join("run");
    std::fs::create_dir_all(run.join("nslcd"))?;
    let d = dir.display();
    let mut ns = Namespace::start().await?;
    ns.pid_file = Some(dir.join("nslcd.pid"));
    let setup = format!(
        "mount --bind {d}/nsswitch.conf /etc/nsswitch.conf && \
         mount --bind {d}/nslcd.conf /etc/nslcd.conf && \
         mount --bind {d}/pam.d /etc/pam.d && \
         mount --bind {d}/run /run && \
         chown nslcd:nslcd /run/nslcd && \
         {{ nslcd -d > {d}/nslcd.log 2>&1 & echo $! > {d}/nslcd.pid; }} && \
         for i in $(seq 200); do [ -S /run/nslcd/socket ] && break; sleep 0.05; done; \
         [ -S /run/nslcd/socket ]"
    );
    let (rc, out) = ns.run(&setup).await?;
    assert_eq!(rc, 0, "namespace setup failed: {out}");
    check_nss_and_pam(&mut ns, &server, &store).await?;
    drop(ns);
    server.stop().await
}

/// What NSS and PAM must show through a client (nslcd or SSSD) set up in `ns`.
async fn check_nss_and_pam(ns: &mut Namespace, server: &Server, store: &Store) -> TestResult {
    let (rc, out) = ns.run("getent passwd alice").await?;
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        out.trim(),
        "alice:*:2000:2000:ALICE alice:/home/alice:/bin/bash",
        "{out}"
    );
    let (rc, out) = ns.run("getent group devs").await?;
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        group_line(&out),
        ("devs:*:2002".into(), vec!["alice", "bob"])
    );
    let (rc, out) = ns.run("id alice").await?;
    assert_eq!(rc, 0, "{out}");
    assert_eq!(
        out.trim(),
        "uid=2000(alice) gid=2000(ldapusers) groups=2000(ldapusers),2002(devs)"
    );
    let (_, out) = ns.run("id root").await?;
    assert!(out.contains("uid=0(root)"), "files still win: {out}");
    let (rc, out) = ns.run("id -Gn bob").await?;
    assert_eq!((rc, out.trim()), (0, "ldapusers devs"));

    // PAM: the right password authenticates, a wrong one and a suspended account do not.
    let (rc, out) = ns
        .run("echo alice-pw-1 | pamtester siteward-test alice authenticate acct_mgmt")
        .await?;
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = ns
        .run("echo wrong | pamtester siteward-test alice authenticate")
        .await?;
    assert_ne!(rc, 0, "{out}");
    let (rc, out) = ns
        .run("echo carol-pw-1 | pamtester siteward-test carol authenticate")
        .await?;
    assert_ne!(rc, 0, "{out}");

    // Users added and removed through the store are seen by the next lookup (nslcd has no
    // cache; SSSD's entries expire after `entry_cache_timeout`, 1 s here, so it is polled).
    store
        .create_user(
            NewUser {
                username: "dave".into(),
                password: Some("dave-pw-12".into()),
                ..Default::default()
            },
            &siteward_store::Actor::system(),
        )
        .await?;
    store
        .add_group_member("devs", "dave", &siteward_store::Actor::system())
        .await?;
    wait_for_user(server, "dave").await?;
    let (rc, out) = ns.run("getent passwd dave").await?;
    assert_eq!(rc, 0, "{out}");
    assert!(out.starts_with("dave:*:2004:2000:"), "{out}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (rc, out) = ns.run("getent group devs").await?;
        assert_eq!(rc, 0, "{out}");
        if group_line(&out) == ("devs:*:2002".into(), vec!["alice", "bob", "dave"]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dave never appeared in devs: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (rc, out) = ns
        .run("echo dave-pw-12 | pamtester siteward-test dave authenticate")
        .await?;
    assert_eq!(rc, 0, "{out}");
    store
        .delete_user("dave", &siteward_store::Actor::system())
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (rc, _) = ns.run("getent passwd dave").await?;
        if rc == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dave still resolves after deletion"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn nss_and_pam_through_sssd() -> TestResult {
    let (server, store) = nss_prelude(
        &["/usr/sbin/sssd", "/usr/bin/pamtester"],
        "sssd-ldap libnss-sss libpam-sss pamtester",
    )
    .await?;
    let addr = server.addrs.ldap.ok_or("no ldap")?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let etc = dir.join("sssd");
    std::fs::create_dir_all(etc.join("conf.d"))?;
    let conf = etc.join("sssd.conf");
    std::fs::write(
        &conf,
        format!(
            "[sssd]\nservices = nss, pam\ndomains = siteward\n\n\
             [nss]\nmemcache_timeout = 0\nentry_negative_timeout = 1\n\n\
             [domain/siteward]\nid_provider = ldap\nauth_provider = ldap\n\
             access_provider = ldap\nldap_access_order = expire\n\
             ldap_account_expire_policy = shadow\nldap_uri = ldap://{addr}\n\
             ldap_search_base = {BASE}\nldap_user_search_base = ou=people,{BASE}\n\
             ldap_group_search_base = ou=groups,{BASE}\nldap_schema = rfc2307bis\n\
             ldap_group_member = member\nldap_id_use_start_tls = true\n\
             ldap_tls_reqcert = demand\nldap_tls_cacert = {}\n\
             cache_credentials = false\nentry_cache_timeout = 1\n",
            server.data_dir.join("ldap-cert.pem").display()
        ),
    )?;
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::write(
        dir.join("nsswitch.conf"),
        "passwd: files sss\ngroup: files sss\nshadow: files\nhosts: files\n",
    )?;
    pam_service(dir, "pam_sss.so")?;
    for sub in [
        "db",
        "mc",
        "pipes/private",
        "pubconf",
        "secrets",
        "gpo_cache",
        "deskprofile",
        "log",
        "run",
    ] {
        std::fs::create_dir_all(dir.join("lib").join(sub))?;
    }
    let d = dir.display();
    let mut ns = Namespace::start().await?;
    ns.pid_file = Some(dir.join("sssd.pid"));
    let setup = format!(
        "mount --bind {d}/nsswitch.conf /etc/nsswitch.conf && \
         mount --bind {d}/sssd /etc/sssd && \
         mount --bind {d}/pam.d /etc/pam.d && \
         mount --bind {d}/lib/log /var/log && \
         mount --bind {d}/lib /var/lib/sss && \
         mount --bind {d}/lib/run /run && \
         {{ sssd -i --logger=stderr -d 2 > {d}/sssd.log 2>&1 & echo $! > {d}/sssd.pid; }} && \
         for i in $(seq 300); do [ -S /var/lib/sss/pipes/nss ] && [ -S /var/lib/sss/pipes/pam ] && break; sleep 0.05; done; \
         [ -S /var/lib/sss/pipes/nss ]"
    );
    let (rc, out) = ns.run(&setup).await?;
    let log = || std::fs::read_to_string(dir.join("sssd.log")).unwrap_or_default();
    assert_eq!(rc, 0, "namespace setup failed: {out}\n{}", log());
    let checked = check_nss_and_pam(&mut ns, &server, &store).await;
    if checked.is_err() {
        eprintln!("sssd log:\n{}", log());
    }
    checked?;
    drop(ns);
    server.stop().await
}

/// The SHA-256 fingerprint of the certificate `ldaps://addr` presents (openssl s_client).
async fn served_fingerprint(addr: std::net::SocketAddr) -> TestResult<String> {
    let script = format!(
        "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
    );
    let out = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !text.contains("Fingerprint=") {
        return Err(format!("no certificate from {addr}: {text}").into());
    }
    Ok(text)
}

#[tokio::test]
async fn configured_certificate_is_replaced_without_restart() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (cert, key) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
    let make = |cn: &str| {
        let (cert, key, cn) = (cert.clone(), key.clone(), cn.to_owned());
        async move {
            let out = tokio::process::Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                ])
                .arg(format!("/CN={cn}"))
                .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .await?;
            if !out.status.success() {
                return Err(format!("openssl: {}", String::from_utf8_lossy(&out.stderr)).into());
            }
            TestResult::Ok(())
        }
    };
    make("first").await?;
    let db = TestDb::new().await?;
    let mut server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        args: vec!["--ldaps".into(), "127.0.0.1:0".into()],
        env: vec![
            ("SITEWARD_LDAP__TLS_CERT".into(), cert.display().to_string()),
            ("SITEWARD_LDAP__TLS_KEY".into(), key.display().to_string()),
            ("SITEWARD_LDAP__TLS_RELOAD_SECONDS".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await?;
    server.db = Some(db);
    let addr = server.addrs.ldaps.ok_or("no ldaps")?;
    let first = served_fingerprint(addr).await?;
    // No self-signed pair was generated: the configured one is served.
    assert!(!server.data_dir.join("ldap-cert.pem").exists());
    tokio::time::sleep(Duration::from_millis(1100)).await; // a distinct modification time
    make("second").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = served_fingerprint(addr).await?;
        if now != first {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still serving the first certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The new certificate works for clients that trust it.
    let out = tool(
        "ldapwhoami",
        &["-x", "-H", &format!("ldaps://{addr}")],
        &[("LDAPTLS_CACERT", cert.display().to_string())],
    )
    .await?;
    assert_eq!(out.stdout.trim(), "anonymous", "{}", out.stderr);
    server.stop().await
}
