//! The sign-in pages' HTML: small, server-rendered, accessible (labels, one `main`, error
//! summaries with `role="alert"`), no JavaScript. Every value is escaped here.

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

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#111}\
label{display:block;margin-top:.8rem;font-weight:600}input,textarea{width:100%;padding:.4rem;font:inherit;box-sizing:border-box}\
button{margin-top:1rem;padding:.5rem 1.2rem;font:inherit}.error{border:2px solid #b00020;padding:.5rem;color:#b00020}\
.note{border:2px solid #1a5e20;padding:.5rem}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;text-align:left;padding:.3rem}\
form.inline{display:inline}code{word-break:break-all}";

/// A whole page.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{t} · siteward</title><style>{CSS}</style></head>\
<body><main><h1>{t}</h1>\n{body}\n</main></body></html>\n",
        t = esc(title)
    )
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
