//! The sign-in pages' HTML: small, server-rendered, accessible (labels, one `main`, error
//! summaries with `role="alert"`), no JavaScript, in the console's layout. Every value is
//! escaped here.

use std::fmt::Write;

/// Escapes text for HTML element content and double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A sign-in page: the console's layout (`admin/templates/layout.html`) without the navigation,
/// around HTML built here.
#[derive(askama::Template)]
#[template(path = "plain.html")]
struct Plain<'a> {
    title: &'a str,
    nav: Option<crate::web::Nav>,
    script: bool,
    body: &'a str,
}

/// A whole page.
pub fn page(title: &str, body: &str) -> String {
    let plain = Plain {
        title,
        nav: None,
        script: false,
        body,
    };
    askama::Template::render(&plain).unwrap_or_else(|e| {
        tracing::error!(error = %e, "rendering a page failed");
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head><body><main><h1>{t}</h1>{body}</main></body></html>\n",
            t = esc(title)
        )
    })
}

/// An error summary, or nothing.
pub fn errors(list: &[String]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut out = String::from("<div class=\"error\" role=\"alert\"><ul>");
    for e in list {
        let _ = write!(out, "<li>{}</li>", esc(e));
    }
    out.push_str("</ul></div>\n");
    out
}

/// A notice.
pub fn note(text: &str) -> String {
    format!("<p class=\"note\" role=\"status\">{}</p>\n", esc(text))
}

/// A hidden field.
pub fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        esc(name),
        esc(value)
    )
}

/// A labelled input.
pub fn input(name: &str, label: &str, kind: &str, value: &str, extra: &str) -> String {
    format!(
        "<label for=\"{n}\">{l}</label><input id=\"{n}\" name=\"{n}\" type=\"{k}\" value=\"{v}\" {extra}>",
        n = esc(name),
        l = esc(label),
        k = esc(kind),
        v = esc(value),
    )
}
