//! Where a browser may be sent after signing in. Only relative paths on this host, or http(s)
//! URLs whose host is one of our external domains or a subdomain of one; anything else becomes
//! `/`. Checks run on the text as given and on its percent-decoded forms, so encoded variants
//! (`/%2F%2Fevil`, `%2F%5Cevil`, `javascript%3A...`) cannot slip through.

/// How many rounds of percent-decoding are inspected.
const DECODE_ROUNDS: usize = 3;

/// `target` if it is a safe place to send a browser to, else `None`.
pub fn safe_target(target: &str, domains: &[&str]) -> Option<String> {
    if target.is_empty() || target.len() > 4096 {
        return None;
    }
    let mut forms = vec![target.to_owned()];
    let mut cur = target.to_owned();
    for _ in 0..DECODE_ROUNDS {
        let next = percent_encoding::percent_decode_str(&cur)
            .decode_utf8_lossy()
            .into_owned();
        if next == cur {
            break;
        }
        forms.push(next.clone());
        cur = next;
    }
    // Every form must be harmless: no control characters, whitespace or backslashes anywhere.
    if forms.iter().any(|f| {
        f.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    }) {
        return None;
    }
    if target.starts_with('/') {
        // A path on this host: no scheme-relative `//host`, in any decoded form either.
        if forms
            .iter()
            .any(|f| f.starts_with("//") || !f.starts_with('/'))
        {
            return None;
        }
        return Some(target.to_owned());
    }
    let lower = target.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return None;
    }
    let url = url::Url::parse(target).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let host = match url.host()? {
        url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        _ => return None,
    };
    if !under_any(&host, domains) {
        return None;
    }
    // Decoded forms must not reveal another authority either (`https://a.example.org%2F@evil`).
    for f in &forms[1..] {
        let again = url::Url::parse(f).ok()?;
        let h = match again.host()? {
            url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
            _ => return None,
        };
        if !under_any(&h, domains) || !again.username().is_empty() {
            return None;
        }
    }
    Some(url.to_string())
}

/// The external domain `host` is, or lies under.
pub fn domain_of<'a>(host: &str, domains: &[&'a str]) -> Option<&'a str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    domains
        .iter()
        .filter(|d| {
            let d = d.to_ascii_lowercase();
            host == d || host.ends_with(&format!(".{d}"))
        })
        // The longest (most specific) domain wins.
        .max_by_key(|d| d.len())
        .copied()
}

/// Where the users of external domain `domain` sign in, so that the session cookie a sign-in
/// sets (`Domain=<domain>`, see `session_cookie`) covers the service they came from:
/// - the public URL, when its host belongs to this domain (the most specific of `domains`);
/// - otherwise the host under the domain named like the public URL's first label
///   (`https://auth.lab.test` gives `https://auth.other.test`), with the public URL's scheme
///   and `port` (the edge's, which serves that host);
/// - the public URL as it is when it names an IP address or cannot be read.
///
/// The name never depends on services: that label is reserved under every domain (see
/// [`crate::edge::reserved`]), so no service can take or move the sign-in host.
///
/// No trailing slash.
pub fn login_base(public_url: &str, domain: &str, domains: &[&str], port: Option<u16>) -> String {
    let base = public_url.trim_end_matches('/');
    let Ok(url) = url::Url::parse(base) else {
        return base.to_owned();
    };
    let Some(url::Host::Domain(host)) = url.host() else {
        return base.to_owned();
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if domain_of(&host, domains).is_some_and(|d| d.eq_ignore_ascii_case(&domain)) {
        return base.to_owned();
    }
    let first = host.split('.').next().unwrap_or("auth");
    let login = format!("{first}.{domain}");
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{login}{port}", url.scheme())
}

fn under_any(host: &str, domains: &[&str]) -> bool {
    domain_of(host, domains).is_some()
}

/// `target` or `/`.
pub fn or_root(target: Option<&str>, domains: &[&str]) -> String {
    target
        .and_then(|t| safe_target(t, domains))
        .unwrap_or_else(|| "/".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &[&str] = &["example.org", "lab.test"];

    #[test]
    fn relative_paths_and_our_hosts_pass() {
        for ok in [
            "/",
            "/account",
            "/a/b?c=d#e",
            "https://example.org/",
            "https://app.example.org/x?y=1",
            "http://deep.app.lab.test:8443/p",
            "HTTPS://App.Example.Org/",
        ] {
            assert!(safe_target(ok, D).is_some(), "{ok} should pass");
        }
    }

    #[test]
    fn open_redirect_variants_fall_back() {
        for bad in [
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "/%2F%2Fevil.com",
            "/%2fevil.com",
            "%2F%2Fevil.com",
            "/%5Cevil.com",
            "/%255Cevil.com",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "javascript%3Aalert(1)",
            "data:text/html,hi",
            "https://evil.com/",
            "https://example.org.evil.com/",
            "https://evilexample.org/",
            "https://example.org@evil.com/",
            "https://user:pw@app.example.org/",
            "https://app.example.org%2F@evil.com/",
            "https://127.0.0.1/",
            "ftp://app.example.org/",
            "http:/evil.com",
            "https:evil.com",
            "evil.com",
            "/ /evil.com",
            "\t//evil.com",
            "/\r\nSet-Cookie: x=y",
            "",
        ] {
            assert_eq!(safe_target(bad, D), None, "{bad:?} must be refused");
            assert_eq!(or_root(Some(bad), D), "/");
        }
    }

    #[test]
    fn domain_of_picks_the_most_specific() {
        let d = ["example.org", "lab.example.org"];
        assert_eq!(domain_of("a.lab.example.org", &d), Some("lab.example.org"));
        assert_eq!(domain_of("a.example.org", &d), Some("example.org"));
        assert_eq!(domain_of("example.org.", &d), Some("example.org"));
        assert_eq!(domain_of("notexample.org", &d), None);
    }

    #[test]
    fn each_domain_signs_in_on_its_own_host() {
        let p = "https://auth.lab.test:8443/";
        let d = ["lab.test", "other.test", "example.org", "lab.example.org"];
        let base = |p: &str, dom: &str, port| login_base(p, dom, &d, port);
        assert_eq!(base(p, "lab.test", None), "https://auth.lab.test:8443");
        assert_eq!(base(p, "other.test", None), "https://auth.other.test");
        assert_eq!(
            base(p, "other.test", Some(9443)),
            "https://auth.other.test:9443"
        );
        assert_eq!(
            base("https://sso.corp.example", "Other.TEST.", None),
            "https://sso.other.test"
        );
        assert_eq!(
            base("http://127.0.0.1:8080", "lab.test", None),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base("https://x.lab.test", "lab.test", None),
            "https://x.lab.test"
        );
        // Nested domains: the public URL belongs to the most specific one only.
        let nested = "https://auth.lab.example.org";
        assert_eq!(base(nested, "lab.example.org", None), nested);
        assert_eq!(
            base(nested, "example.org", None),
            "https://auth.example.org"
        );
    }
}
