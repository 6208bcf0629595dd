//! Domain names as the engine keeps them: lower-case, uncompressed wire format including the
//! final root label (`\x03lab\x08internal\x00`). Lower-casing once at index and query time makes
//! every comparison a byte comparison. Nothing here allocates per query except [`parse_text`].

use crate::Error;

/// The longest name in wire format (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;

/// Parses a presentation-format name (`host`, `host.lab.internal.`, `@`) to lower-case wire
/// format. A name without a trailing dot is relative to `origin` (itself wire format).
pub fn parse_text(text: &str, origin: &[u8]) -> Result<Vec<u8>, Error> {
    let text = text.trim();
    let bad = |why: &str| Error::BadRecord(format!("name `{text}`: {why}"));
    if text == "@" {
        return Ok(origin.to_vec());
    }
    if text == "." {
        return Ok(vec![0]);
    }
    let (body, absolute) = match text.strip_suffix('.') {
        Some(b) => (b, true),
        None => (text, false),
    };
    if body.is_empty() {
        return Err(bad("empty"));
    }
    let mut out = Vec::with_capacity(body.len() + 2 + origin.len());
    for label in body.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("label longer than 63"));
        }
        if label.bytes().any(|b| b <= b' ' || b == b'\\' || b >= 0x7f) {
            return Err(bad("unsupported character"));
        }
        out.push(label.len() as u8);
        out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
    }
    if absolute {
        out.push(0);
    } else {
        out.extend_from_slice(origin);
    }
    if out.len() > MAX_NAME {
        return Err(bad("longer than 255 octets"));
    }
    Ok(out)
}

/// Presentation form of a wire name (`lab.internal.`), for logs and zone files.
pub fn to_text(wire: &[u8]) -> String {
    let mut out = String::new();
    for label in labels(wire) {
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*' {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\{b:03}"));
            }
        }
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// The labels of a well-formed wire name, root excluded.
pub fn labels(wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let len = *wire.get(pos)? as usize;
        if len == 0 {
            return None;
        }
        let label = wire.get(pos + 1..pos + 1 + len)?;
        pos += 1 + len;
        Some(label)
    })
}

/// The parent of a well-formed wire name (`None` for the root).
pub fn parent(wire: &[u8]) -> Option<&[u8]> {
    let len = *wire.first()? as usize;
    if len == 0 {
        return None;
    }
    wire.get(1 + len..)
}

/// Whether `name` is `apex` or below it (both well-formed, lower-case).
pub fn is_within(name: &[u8], apex: &[u8]) -> bool {
    let mut cur = name;
    loop {
        if cur.len() < apex.len() {
            return false;
        }
        if cur == apex {
            return true;
        }
        match parent(cur) {
            Some(p) => cur = p,
            None => return false,
        }
    }
}

/// Reads a possibly compressed name from `msg` at `pos`. Writes it lower-cased into `lower`
/// and as received into `exact` (both uncompressed wire format) and returns the position after
/// the name in the message. `None` for any malformation (loops, bad pointers, overlong names,
/// extended label types).
pub fn read(msg: &[u8], mut pos: usize, lower: &mut Vec<u8>, exact: &mut Vec<u8>) -> Option<usize> {
    lower.clear();
    exact.clear();
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(pos)? as usize;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    lower.push(0);
                    exact.push(0);
                    if lower.len() > MAX_NAME {
                        return None;
                    }
                    return Some(end.unwrap_or(pos + 1));
                }
                let label = msg.get(pos + 1..pos + 1 + len)?;
                exact.push(len as u8);
                exact.extend_from_slice(label);
                lower.push(len as u8);
                lower.extend(label.iter().map(u8::to_ascii_lowercase));
                if lower.len() >= MAX_NAME {
                    return None;
                }
                pos += 1 + len;
            }
            0xC0 => {
                let lo = *msg.get(pos + 1)? as usize;
                let target = ((len & 0x3F) << 8) | lo;
                if end.is_none() {
                    end = Some(pos + 2);
                }
                jumps += 1;
                // Only backward pointers: no loops, and a bound on work.
                if target >= pos || jumps > 64 {
                    return None;
                }
                pos = target;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() -> Result<(), Error> {
        let origin = parse_text("Lab.Internal.", &[0])?;
        assert_eq!(origin, b"\x03lab\x08internal\x00");
        assert_eq!(parse_text("@", &origin)?, origin);
        assert_eq!(
            parse_text("WWW", &origin)?,
            b"\x03www\x03lab\x08internal\x00"
        );
        assert_eq!(
            to_text(&parse_text("_ldap._tcp", &origin)?),
            "_ldap._tcp.lab.internal."
        );
        assert!(parse_text("a..b", &origin).is_err());
        assert!(parse_text(&"x".repeat(64), &origin).is_err());
        assert_eq!(to_text(&[0]), ".");
        Ok(())
    }

    #[test]
    fn within_and_parent() -> Result<(), Error> {
        let apex = parse_text("lab.internal.", &[0])?;
        let n = parse_text("a.b.lab.internal.", &[0])?;
        assert!(is_within(&n, &apex));
        assert!(is_within(&apex, &apex));
        assert!(!is_within(&apex, &n));
        assert!(!is_within(&parse_text("xlab.internal.", &[0])?, &apex));
        assert_eq!(parent(&apex), Some(&b"\x08internal\x00"[..]));
        Ok(())
    }

    #[test]
    fn read_rejects_loops_and_accepts_pointers() {
        let (mut l, mut e) = (Vec::new(), Vec::new());
        // A pointer to itself.
        assert_eq!(read(&[0xC0, 0x00], 0, &mut l, &mut e), None);
        // Forward pointer.
        assert_eq!(read(&[0xC0, 0x02, 0x00], 0, &mut l, &mut e), None);
        // Truncated label.
        assert_eq!(read(&[0x05, b'a'], 0, &mut l, &mut e), None);
        // Extended label type.
        assert_eq!(read(&[0x40, 0x00], 0, &mut l, &mut e), None);
        // "A" then a pointer back to "b." at 0.
        let msg = [1, b'b', 0, 1, b'A', 0xC0, 0];
        assert_eq!(read(&msg, 3, &mut l, &mut e), Some(7));
        assert_eq!(l, b"\x01a\x01b\x00");
        assert_eq!(e, b"\x01A\x01b\x00");
    }
}
