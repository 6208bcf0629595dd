//! `/admin/groups` (every group with its members, from the snapshot; new groups and members)
//! and `/admin/invites` (open and used invitations; new ones). Members are added and removed
//! by name. Writes go through
//! `crate::service`, which validates and audits; a problem comes back next to its field with
//! what was typed kept.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::table::{nothing_named, Cell, Field, NewForm, Reply, TablePage};
use super::{admin, admin_posted};
use crate::api::extract::ClientAddr;
use crate::service::groups::CreateGroup;
use crate::service::invites::CreateInvite;
use crate::web::{render, when, Problems, Signed};
use crate::AdminState;

/// What the group forms hold (typed values come back with a problem).
#[derive(Debug, Default, Deserialize)]
pub(super) struct GroupForm {
    #[serde(default)]
    cn: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    is_administrator: Option<String>,
    #[serde(default)]
    group: String,
    #[serde(default)]
    username: String,
    /// The delete form's confirmation: the group's name typed out.
    #[serde(default)]
    delete_group: String,
    csrf: String,
}

/// `GET /admin/groups`.
pub(super) async fn groups(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let who = match admin(&s, &headers, peer, "/admin/groups").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    groups_page(&s, &who, &GroupForm::default(), Reply::ok())
}

/// `POST /admin/groups`: a new group.
pub(super) async fn create_group(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<GroupForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/groups", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let b = CreateGroup {
        cn: f.cn.trim().to_owned(),
        description: Some(f.description.trim().to_owned()).filter(|d| !d.is_empty()),
        is_administrator: f.is_administrator.is_some(),
    };
    let reply = match crate::service::groups::create(&s.store, &who.principal.actor(), b).await {
        Ok(g) => Reply::done(format!("Group {} (gid {}) created.", g.cn, g.gid_number.0)),
        Err(e) => Reply::failed(e, &["cn", "description"]),
    };
    groups_page(&s, &who, &f, reply)
}

/// `POST /admin/groups/members`: a user joins a group.
pub(super) async fn add_member(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<GroupForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/groups", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (group, user) = (f.group.trim(), f.username.trim());
    let by = who.principal.actor();
    let reply = match crate::service::groups::add_member(&s.store, &by, group, user).await {
        Ok(()) => Reply::done(format!("{user} is a member of {group}.")),
        Err(e) => Reply::failed(e, &["group", "username"]),
    };
    groups_page(&s, &who, &f, reply)
}

/// `POST /admin/groups/members/remove`: a user leaves a group.
pub(super) async fn remove_member(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<GroupForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/groups", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (group, user) = (f.group.trim(), f.username.trim());
    let by = who.principal.actor();
    let reply = match crate::service::groups::remove_member_named(&s.store, &by, group, user).await
    {
        Ok(()) => Reply::done(format!("{user} is no longer a member of {group}.")),
        Err(e) => Reply::failed(e, &["group", "username"]),
    };
    groups_page(&s, &who, &f, reply)
}

/// `POST /admin/groups/delete`: deletes the group typed out by name (the built-in ones stay;
/// its members keep their accounts).
pub(super) async fn delete_group(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<GroupForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/groups", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let typed = f.delete_group.trim();
    let found = s
        .store
        .snapshot()
        .identity
        .groups
        .values()
        .find(|g| g.cn == typed)
        .map(|g| g.gid_number);
    let deleted = match found {
        Some(gid) => crate::service::groups::delete(&s.store, &who.principal.actor(), gid).await,
        None => Err(nothing_named("delete_group", typed, "group")),
    };
    let reply = match deleted {
        Ok(()) => Reply::done(format!("Group {typed} deleted.")),
        Err(e) => Reply::failed(e, &["delete_group"]),
    };
    groups_page(&s, &who, &f, reply)
}

/// The groups page; what was typed comes back only when the post failed.
fn groups_page(s: &AdminState, who: &Signed, typed: &GroupForm, reply: Reply) -> Response {
    let empty = GroupForm::default();
    let f = if reply.notice.is_some() {
        &empty
    } else {
        typed
    };
    let snap = s.store.snapshot();
    let id = &snap.identity;
    let mut members: BTreeMap<_, Vec<&str>> = BTreeMap::new();
    for (uid, gids) in &id.groups_of {
        if let Some(u) = id.users.get(uid) {
            for g in gids.iter() {
                members.entry(*g).or_default().push(u.username.as_str());
            }
        }
    }
    let rows = id
        .groups
        .values()
        .map(|g| {
            let mut m = members.remove(&g.gid_number).unwrap_or_default();
            m.sort_unstable();
            vec![
                Cell::Code(g.cn.clone()),
                Cell::Text(g.gid_number.0.to_string()),
                Cell::Text(g.description.clone().unwrap_or_default()),
                Cell::Text(if g.is_administrator { "yes" } else { "no" }.into()),
                Cell::Text(m.join(", ")),
            ]
        })
        .collect();
    let mut page = TablePage::new(
        "Groups",
        who.nav("admin"),
        who.csrf.clone(),
        vec!["Group", "gid", "Description", "Administrators", "Members"],
        rows,
        "No groups.",
    );
    page.forms = vec![
        NewForm {
            id: "new-group",
            heading: "New group",
            action: "/admin/groups".into(),
            submit: "Create group",
            fields: vec![
                Field::text("cn", "Name", &f.cn),
                Field {
                    required: false,
                    ..Field::text("description", "Description", &f.description)
                },
                Field {
                    kind: "checkbox",
                    required: false,
                    ..Field::text(
                        "is_administrator",
                        "Members are administrators",
                        f.is_administrator.as_deref().unwrap_or_default(),
                    )
                },
            ],
        },
        NewForm {
            id: "add-member",
            heading: "Add a member",
            action: "/admin/groups/members".into(),
            submit: "Add member",
            fields: vec![
                Field::text("group", "Group", &f.group),
                Field::text("username", "Username", &f.username),
            ],
        },
        NewForm {
            id: "remove-member",
            heading: "Remove a member",
            action: "/admin/groups/members/remove".into(),
            submit: "Remove member",
            fields: vec![
                Field::text("group", "Group", &f.group),
                Field::text("username", "Username", &f.username),
            ],
        },
        NewForm {
            id: "delete-group",
            heading: "Delete a group",
            action: "/admin/groups/delete".into(),
            submit: "Delete group",
            fields: vec![Field::text(
                "delete_group",
                "The group's name, typed out",
                &f.delete_group,
            )],
        },
    ];
    page.notice = reply.notice;
    page.problems = reply.problems;
    render(reply.status, &page)
}

/// `POST /admin/invites`: an invitation for an e-mail address.
pub(super) async fn create_invite(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<InviteForm>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/invites", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let b = CreateInvite {
        email: f.email.trim().to_owned(),
    };
    match crate::service::invites::create(&s, &who.principal.actor(), b).await {
        Ok(issued) => {
            let notice = match (issued.sent_to(), issued.link()) {
                (Some(to), _) => format!("The invitation was e-mailed to {to}."),
                (None, Some(link)) => {
                    format!("Invitation created. Pass this link on (it works once): {link}")
                }
                (None, None) => "Invitation created.".to_owned(),
            };
            invites_page(&s, &who, "", Reply::done(notice)).await
        }
        Err(e) => invites_page(&s, &who, &f.email, Reply::failed(e, &["email"])).await,
    }
}

/// `POST /admin/invites/{id}/revoke`: the link stops working.
pub(super) async fn revoke_invite(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
    Path(id): Path<uuid::Uuid>,
    Form(f): Form<TokenOnly>,
) -> Response {
    let who = match admin_posted(&s, &headers, peer, "/admin/invites", &f.csrf).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let reply = match crate::service::invites::delete(&s, &who.principal.actor(), id).await {
        Ok(()) => Reply::done("The invitation was revoked.".into()),
        Err(e) => Reply::failed(e, &[]),
    };
    invites_page(&s, &who, "", reply).await
}

/// A post that carries only the session's token.
#[derive(Debug, Deserialize)]
pub(super) struct TokenOnly {
    csrf: String,
}

/// What the invite form holds.
#[derive(Debug, Deserialize)]
pub(super) struct InviteForm {
    #[serde(default)]
    email: String,
    csrf: String,
}

/// `GET /admin/invites`.
pub(super) async fn invites(
    State(s): State<AdminState>,
    ClientAddr(peer): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let who = match admin(&s, &headers, peer, "/admin/invites").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    invites_page(&s, &who, "", Reply::ok()).await
}

async fn invites_page(s: &AdminState, who: &Signed, email: &str, reply: Reply) -> Response {
    let (list, mut problems) = match s.store.list_invites().await {
        Ok(l) => (l, Problems::default()),
        Err(e) => {
            tracing::error!(error = %e, "listing invites failed");
            (
                Vec::new(),
                Problems::general("The invites could not be read."),
            )
        }
    };
    let rows = list
        .into_iter()
        .map(|i| {
            let open = !i.used && i.expires_at > chrono::Utc::now();
            vec![
                Cell::Text(i.email.unwrap_or_default()),
                Cell::Text(when(&i.created_at)),
                Cell::Text(when(&i.expires_at)),
                Cell::Text(
                    if i.used {
                        "used"
                    } else if open {
                        "open"
                    } else {
                        "expired"
                    }
                    .into(),
                ),
                if open {
                    Cell::Post("Revoke".into(), format!("/admin/invites/{}/revoke", i.id))
                } else {
                    Cell::Text(String::new())
                },
            ]
        })
        .collect();
    let mut page = TablePage::new(
        "Invites",
        who.nav("admin"),
        who.csrf.clone(),
        vec!["E-mail", "Created", "Expires", "State", ""],
        rows,
        "No invites yet.",
    );
    page.forms = vec![NewForm {
        id: "new-invite",
        heading: "Invite someone",
        action: "/admin/invites".into(),
        submit: "Invite",
        fields: vec![Field {
            kind: "email",
            ..Field::text("email", "E-mail", email)
        }],
    }];
    problems.fields.extend(reply.problems.fields);
    problems.general.extend(reply.problems.general);
    page.problems = problems;
    page.notice = reply.notice;
    render(reply.status, &page)
}
