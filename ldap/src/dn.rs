//! Distinguished names (RFC 4514), parsed and normalized so that DNs compare case-insensitively
//! and independently of spacing, escaping and whether attribute types are spelled as names or
//! OIDs. Every value in our directory (uid, cn, dc, ou) matches case-insensitively, so values are
//! lower-cased too.

use crate::schema::Attr;

/// A normalized DN: RDNs from the entry up to the root, each `type=value` with the type in
/// canonical lower case and the value unescaped and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Dn {
    rdns: Vec<(String, String)>,
}

/// Why a DN could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DN: {0}")]
pub struct DnError(&'static str);

impl DnError {
    /// The DN is empty where a suffix is needed.
    pub fn empty() -> Self {
        DnError("the DN is empty")
    }
}

impl Dn {
    /// The empty DN (the root DSE).
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses and normalizes `text`.
    pub fn parse(text: &str) -> Result<Self, DnError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::root());
        }
        let mut rdns = Vec::new();
        for part in split_unescaped(text, &[',', ';'])? {
            // Multi-valued RDNs (`a=1+b=2`) are kept as one normalized string per component,
            // joined with `+` in a canonical (sorted) order.
            let mut avas = Vec::new();
            for ava in split_unescaped(&part, &['+'])? {
                let (ty, value) = ava.split_once('=').ok_or(DnError("an RDN lacks `=`"))?;
                let ty = ty.trim();
                if ty.is_empty() {
                    return Err(DnError("an RDN lacks an attribute type"));
                }
                let ty = match Attr::parse(ty) {
                    Some(a) => a.name().to_ascii_lowercase(),
                    None => ty.to_ascii_lowercase(),
                };
                let value = unescape(value.trim())?;
                avas.push((ty, normalize_value(&value)));
            }
            avas.sort();
            let ty = avas
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join("+");
            let value = avas
                .iter()
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join("+");
            rdns.push((ty, value));
        }
        Ok(Self { rdns })
    }

    /// Builds a DN from one RDN under `parent` (values are normalized here).
    pub fn child(parent: &Dn, ty: &str, value: &str) -> Self {
        let mut rdns = Vec::with_capacity(parent.rdns.len() + 1);
        rdns.push((ty.to_ascii_lowercase(), normalize_value(value)));
        rdns.extend(parent.rdns.iter().cloned());
        Self { rdns }
    }

    /// Whether this is the root DSE's empty DN.
    pub fn is_root(&self) -> bool {
        self.rdns.is_empty()
    }

    /// Whether `self` is `other` or below it.
    pub fn is_within(&self, other: &Dn) -> bool {
        self.rdns.len() >= other.rdns.len() && self.rdns.ends_with(&other.rdns)
    }

    /// The parent, if any.
    pub fn parent(&self) -> Option<Dn> {
        (!self.rdns.is_empty()).then(|| Dn {
            rdns: self.rdns[1..].to_vec(),
        })
    }

    /// The leaf RDN as `(type, value)`.
    pub fn leaf(&self) -> Option<(&str, &str)> {
        self.rdns.first().map(|(t, v)| (t.as_str(), v.as_str()))
    }

    /// Whether some RDN (any level) is `ty=value` (for `:dn:` extensible matches).
    pub fn has_ava(&self, ty: &str, value: &str) -> bool {
        let value = normalize_value(value);
        self.rdns
            .iter()
            .any(|(t, v)| t.eq_ignore_ascii_case(ty) && *v == value)
    }
}

impl std::fmt::Display for Dn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (t, v)) in self.rdns.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{t}={}", escape(v))?;
        }
        Ok(())
    }
}

/// Lower-cases and collapses inner runs of spaces (caseIgnoreMatch's insignificant spaces).
pub fn normalize_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// Escapes a value for the string form of a DN (RFC 4514 section 2.4).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

fn split_unescaped(text: &str, seps: &[char]) -> Result<Vec<String>, DnError> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                cur.push(chars.next().ok_or(DnError("a trailing backslash"))?);
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if !quoted && seps.contains(&c) => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(DnError("an unterminated quote"));
    }
    parts.push(cur);
    Ok(parts)
}

fn unescape(value: &str) -> Result<String, DnError> {
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    let mut bytes = Vec::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let next = chars.next().ok_or(DnError("a trailing backslash"))?;
        if next.is_ascii_hexdigit() {
            let low = chars.next().ok_or(DnError("a bad hex escape"))?;
            let hex: String = [next, low].iter().collect();
            let byte = u8::from_str_radix(&hex, 16).map_err(|_| DnError("a bad hex escape"))?;
            bytes.push(byte);
        } else {
            let mut buf = [0u8; 4];
            bytes.extend_from_slice(next.encode_utf8(&mut buf).as_bytes());
        }
    }
    String::from_utf8(bytes).map_err(|_| DnError("a value that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn(s: &str) -> Dn {
        Dn::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalizes_case_space_escapes_and_oids() {
        let a = dn("uid=Alice,ou=People,dc=Siteward,dc=internal");
        assert_eq!(a, dn(" UID = alice , OU=people,DC=siteward,dc=INTERNAL"));
        assert_eq!(
            a,
            dn("0.9.2342.19200300.100.1.1=alice,ou=people;dc=siteward,dc=internal")
        );
        assert_eq!(a, dn("uid=\\61lice,ou=people,dc=siteward,dc=internal"));
        assert_eq!(a.to_string(), "uid=alice,ou=people,dc=siteward,dc=internal");
        assert_eq!(dn("cn=a\\,b,dc=x").leaf(), Some(("cn", "a,b")));
        assert_eq!(dn("cn=a\\,b,dc=x").to_string(), "cn=a\\,b,dc=x");
        assert!(Dn::parse("").is_ok_and(|d| d.is_root()));
    }

    #[test]
    fn hierarchy() {
        let base = dn("dc=siteward,dc=internal");
        let user = dn("uid=a,ou=people,dc=siteward,dc=internal");
        assert!(user.is_within(&base));
        assert!(base.is_within(&base));
        assert!(!base.is_within(&user));
        assert!(!dn("dc=other,dc=internal").is_within(&base));
        assert_eq!(user.parent(), Some(dn("ou=people,dc=siteward,dc=internal")));
        assert!(user.has_ava("ou", "PEOPLE"));
    }

    #[test]
    fn rejects_malformed() {
        assert!(Dn::parse("uid").is_err());
        assert!(Dn::parse("=x").is_err());
        assert!(Dn::parse("uid=a\\").is_err());
        assert!(Dn::parse("uid=\"a").is_err());
        assert!(Dn::parse("uid=\\zz").is_ok()); // `\z` escapes z
        assert!(Dn::parse("uid=\\ff\\fe").is_err()); // not UTF-8
    }
}
