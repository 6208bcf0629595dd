//! Validation rules of names, addresses and texts that several use cases share. Each returns
//! a 422 naming the field. Rules the database must also hold (one owner per DNS name, reserved
//! edge names, templates) are enforced there too; the password rule lives in the store
//! ([`siteward_store::password::check_rule`]) because LDAP Password Modify applies it as well.

use super::{ApiError, Result};

/// `min` to `max` characters (not bytes).
pub fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<()> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be {min} to {max} characters"),
        ));
    }
    Ok(())
}

/// A DNS label (RFC 1123): letters, digits, hyphens, 1-63 characters, no hyphen at either end.
pub fn check_label(field: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        return Err(ApiError::invalid(
            field,
            format!(
                "{field} must be a DNS label (RFC 1123): letters, digits, hyphens, 1-63 characters"
            ),
        ));
    }
    Ok(())
}

/// A domain name of such labels (a trailing dot is allowed), at most 253 characters.
pub fn check_domain(field: &str, value: &str) -> Result<()> {
    // One trailing dot (the root), not several: `lab.example.org..` is no name.
    let v = value.strip_suffix('.').unwrap_or(value);
    if v.is_empty() || v.len() > 253 || v.split('.').any(|l| check_label(field, l).is_err()) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be a domain name like lab.example.org"),
        ));
    }
    Ok(())
}

/// An http(s) URL without whitespace, at most 2048 characters.
pub fn check_url(field: &str, value: &str) -> Result<()> {
    if !(value.starts_with("https://") || value.starts_with("http://"))
        || value.len() > 2048
        || value.contains(char::is_whitespace)
    {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be an http(s) URL"),
        ));
    }
    Ok(())
}

/// An e-mail address: one `@`, a dot in the domain, no whitespace, at most 320 characters.
pub fn check_mail(field: &str, value: &str) -> Result<()> {
    let ok = value.len() <= 320
        && value
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
        && !value.contains(char::is_whitespace);
    if !ok {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be an e-mail address"),
        ));
    }
    Ok(())
}

/// OpenSSH public key lines (`ssh-*`, `ecdsa-*`, `sk-*` with a key blob), one per entry.
pub fn check_ssh_keys(keys: &[String]) -> Result<()> {
    for k in keys {
        let mut parts = k.split_whitespace();
        let kind = parts.next().unwrap_or_default();
        let blob = parts.next().unwrap_or_default();
        let known =
            kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
        if !known || blob.is_empty() || k.contains('\n') || k.len() > 16 * 1024 {
            return Err(ApiError::invalid(
                "ssh_public_keys",
                "each SSH key must be one OpenSSH public key line (ssh-ed25519 AAAA... comment)",
            ));
        }
    }
    Ok(())
}

/// A TCP/UDP port.
pub fn check_port(field: &str, value: i32) -> Result<()> {
    if !(1..=65535).contains(&value) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be 1 to 65535"),
        ));
    }
    Ok(())
}

/// A password, before any hashing or database work (the store checks it again).
pub fn check_password(field: &str, value: &str) -> Result<()> {
    siteward_store::password::check_rule(value).map_err(|_| {
        ApiError::invalid(
            field,
            format!(
                "{field} must be {} to {} characters",
                siteward_store::password::MIN_CHARS,
                siteward_store::password::MAX_CHARS
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_domains_and_mail() {
        assert!(check_label("h", "web-1").is_ok());
        for bad in ["", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(check_label("h", bad).is_err(), "{bad}");
        }
        assert!(check_domain("d", "lab.example.org.").is_ok());
        assert!(check_domain("d", "lab..example").is_err());
        // Found by fuzz/ api_json: every trailing dot was trimmed, so this passed.
        assert!(check_domain("d", "lab.example.org..").is_err());
        assert!(check_domain("d", ".").is_err());
        assert!(check_mail("m", "a@b.example").is_ok());
        for bad in ["a@b", "@b.c", "a b@c.d", "a@b@c.d"] {
            assert!(check_mail("m", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_ports_keys_and_passwords() {
        assert!(check_url("u", "https://pve:8006/api2/json").is_ok());
        assert!(check_url("u", "ftp://x").is_err());
        assert!(check_url("u", "https://a b").is_err());
        assert!(check_port("p", 1).is_ok() && check_port("p", 65535).is_ok());
        assert!(check_port("p", 0).is_err() && check_port("p", 65536).is_err());
        assert!(check_ssh_keys(&["ssh-ed25519 AAAAC3Nza me@host".into()]).is_ok());
        assert!(check_ssh_keys(&["rsa AAAA".into()]).is_err());
        assert!(check_ssh_keys(&["ssh-ed25519 AAAA\nssh-rsa B".into()]).is_err());
        assert!(check_password("password", "12345678").is_ok());
        let e = check_password("password", "short").err().map(|e| e.field);
        assert_eq!(e, Some(Some("password".to_owned())));
        assert!(check_password("password", &"x".repeat(1025)).is_err());
        assert!(check_len("n", "äö", 2, 2).is_ok());
    }
}
