//! One template for the administrators' plain lists (sites, nodes, domains, groups, invites,
//! the audit log): column headers and rows of [`Cell`]s, optionally forms that add to the list.

use askama::Template;

use axum::http::StatusCode;

use crate::web::{Nav, Problems};

/// A table cell.
pub(crate) enum Cell {
    /// Plain text.
    Text(String),
    /// Monospace text (names, addresses).
    Code(String),
    /// A link: text and target.
    Link(String, String),
    /// A one-button form posting the session's token: label and action.
    Post(String, String),
}

/// One input of a [`NewForm`].
pub(crate) struct Field {
    pub name: &'static str,
    pub label: &'static str,
    /// `text`, `email`, `password` (its value is never filled in) or `checkbox`.
    pub kind: &'static str,
    /// What the user typed (kept when the form comes back with a problem).
    pub value: String,
    pub required: bool,
}

impl Field {
    pub fn text(name: &'static str, label: &'static str, value: &str) -> Self {
        Self {
            name,
            label,
            kind: "text",
            value: value.to_owned(),
            required: true,
        }
    }

    /// A text field that may be left blank.
    pub fn optional(name: &'static str, label: &'static str, value: &str) -> Self {
        Self {
            required: false,
            ..Self::text(name, label, value)
        }
    }
}

/// A form field as the page passes it on: `None` when blank, else trimmed.
pub(crate) fn given(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// The site a form names in `field` (by name, any case), `None` when blank.
pub(crate) fn site_named(
    s: &crate::AdminState,
    field: &str,
    name: &str,
) -> Result<Option<siteward_store::SiteId>, crate::api::error::ApiError> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(None);
    }
    let snap = s.store.snapshot();
    snap.naming
        .sites
        .values()
        .find(|v| v.site.name.eq_ignore_ascii_case(name))
        .map(|v| Some(v.site.id))
        .ok_or_else(|| {
            crate::api::error::ApiError::invalid(field, format!("no site is named {name}"))
        })
}

/// The refusal of a delete form whose confirmation names nothing: `field` held `typed`, which
/// should have been the name of a `what`.
pub(crate) fn nothing_named(field: &str, typed: &str, what: &str) -> crate::api::error::ApiError {
    crate::api::error::ApiError::invalid(
        field,
        if typed.is_empty() {
            format!("type the {what}'s name to delete it")
        } else {
            format!("no {what} is named {typed}")
        },
    )
}

/// A form above the list that adds to it (posted with the session's token).
pub(crate) struct NewForm {
    /// Unique on the page (the heading's id).
    pub id: &'static str,
    pub heading: &'static str,
    pub action: String,
    pub submit: &'static str,
    pub fields: Vec<Field>,
}

/// The audit log's filter form.
pub(crate) struct Filter {
    pub actor: String,
    pub resource: String,
}

/// A list page.
#[derive(Template)]
#[template(path = "admin/table.html")]
pub(crate) struct TablePage {
    pub title: &'static str,
    pub nav: Option<Nav>,
    pub script: bool,
    pub csrf: String,
    pub notice: Option<String>,
    pub problems: Problems,
    pub intro: Option<String>,
    pub filter: Option<Filter>,
    pub forms: Vec<NewForm>,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    /// Shown instead of an empty table (nothing when blank).
    pub empty: &'static str,
    /// A link to the next page (label, href).
    pub more: Option<(&'static str, String)>,
}

impl TablePage {
    /// A page with `headers` and `rows`, nothing else.
    pub fn new(
        title: &'static str,
        nav: Option<Nav>,
        csrf: String,
        headers: Vec<&'static str>,
        rows: Vec<Vec<Cell>>,
        empty: &'static str,
    ) -> Self {
        Self {
            title,
            nav,
            script: false,
            csrf,
            notice: None,
            problems: Problems::default(),
            intro: None,
            filter: None,
            forms: Vec::new(),
            headers,
            rows,
            empty,
            more: None,
        }
    }
}

/// A page's notice, problems and status after a post.
pub(crate) struct Reply {
    pub notice: Option<String>,
    pub problems: Problems,
    pub status: StatusCode,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            notice: None,
            problems: Problems::default(),
            status: StatusCode::OK,
        }
    }
    pub fn done(notice: String) -> Self {
        Self {
            notice: Some(notice),
            ..Self::ok()
        }
    }
    pub fn failed(e: crate::api::error::ApiError, fields: &[&str]) -> Self {
        Self {
            notice: None,
            status: e.status,
            problems: Problems::from_api(e, fields),
        }
    }
}
