//! Record types and presentation-format RDATA (as stored in `dns_records.value`) turned into wire
//! format, with the names other records point at (for CNAME chains and additional sections).
//! Names in RDATA are written uncompressed, which every type here allows.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::name;
use crate::Error;

/// Record type numbers the engine knows.
#[allow(missing_docs)]
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const DS: u16 = 43;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const MAILB: u16 = 253;
    pub const MAILA: u16 = 254;
    pub const ANY: u16 = 255;
    pub const CAA: u16 = 257;
}

/// A record type's mnemonic to its number (the types `dns_records` allows).
pub fn type_from_str(s: &str) -> Option<u16> {
    Some(match s.to_ascii_uppercase().as_str() {
        "A" => rtype::A,
        "NS" => rtype::NS,
        "CNAME" => rtype::CNAME,
        "PTR" => rtype::PTR,
        "MX" => rtype::MX,
        "TXT" => rtype::TXT,
        "AAAA" => rtype::AAAA,
        "SRV" => rtype::SRV,
        "CAA" => rtype::CAA,
        _ => return None,
    })
}

/// Wire RDATA plus the name it points at, if any (CNAME/NS/MX/SRV/PTR target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// RDATA in wire format.
    pub rdata: Vec<u8>,
    /// The target name (lower-case wire), for chains and additional-section processing.
    pub target: Option<Vec<u8>>,
}

fn bad(t: &str, value: &str, why: &str) -> Error {
    Error::BadRecord(format!("{t} `{value}`: {why}"))
}

fn num<T: std::str::FromStr>(t: &str, value: &str, s: Option<&str>) -> Result<T, Error> {
    s.ok_or_else(|| bad(t, value, "missing field"))?
        .parse()
        .map_err(|_| bad(t, value, "not a number in range"))
}

/// Splits TXT/CAA presentation text into character strings: `"a b" c` gives `a b` and `c`.
/// Supports `\"`, `\\` and `\DDD` escapes.
pub fn char_strings(value: &str) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    let mut chars = value.trim().bytes().peekable();
    while let Some(&c) = chars.peek() {
        if c == b' ' || c == b'\t' {
            chars.next();
            continue;
        }
        let quoted = c == b'"';
        if quoted {
            chars.next();
        }
        let mut cur = Vec::new();
        let mut closed = !quoted;
        while let Some(c) = chars.next() {
            match c {
                b'"' if quoted => {
                    closed = true;
                    break;
                }
                b' ' | b'\t' if !quoted => break,
                b'\\' => {
                    let d1 = chars
                        .next()
                        .ok_or_else(|| bad("TXT", value, "dangling \\"))?;
                    if d1.is_ascii_digit() {
                        let d2 = chars.next().unwrap_or(b'x');
                        let d3 = chars.next().unwrap_or(b'x');
                        if !d2.is_ascii_digit() || !d3.is_ascii_digit() {
                            return Err(bad("TXT", value, "bad \\DDD escape"));
                        }
                        let v = u32::from(d1 - b'0') * 100
                            + u32::from(d2 - b'0') * 10
                            + u32::from(d3 - b'0');
                        cur.push(u8::try_from(v).map_err(|_| bad("TXT", value, "\\DDD > 255"))?);
                    } else {
                        cur.push(d1);
                    }
                }
                c => cur.push(c),
            }
        }
        if !closed {
            return Err(bad("TXT", value, "unterminated quote"));
        }
        if cur.len() > 255 {
            // Long unquoted or quoted text: split into 255-octet strings, as zone parsers do
            // only for quoted input; we accept it for convenience.
            for chunk in cur.chunks(255) {
                out.push(chunk.to_vec());
            }
        } else {
            out.push(cur);
        }
    }
    if out.is_empty() {
        out.push(Vec::new());
    }
    Ok(out)
}

/// Parses `value` of type `t` (a number from [`rtype`]) with relative names resolved against
/// `origin` (wire format).
pub fn parse(t: u16, value: &str, origin: &[u8]) -> Result<Parsed, Error> {
    let mut f = value.split_ascii_whitespace();
    let plain = |rdata: Vec<u8>| {
        Ok(Parsed {
            rdata,
            target: None,
        })
    };
    match t {
        rtype::A => {
            let a: Ipv4Addr = value
                .trim()
                .parse()
                .map_err(|_| bad("A", value, "not an IPv4 address"))?;
            plain(a.octets().to_vec())
        }
        rtype::AAAA => {
            let a: Ipv6Addr = value
                .trim()
                .parse()
                .map_err(|_| bad("AAAA", value, "not an IPv6 address"))?;
            plain(a.octets().to_vec())
        }
        rtype::CNAME | rtype::NS | rtype::PTR => {
            let n = name::parse_text(f.next().ok_or_else(|| bad("name", value, "empty"))?, origin)?;
            if f.next().is_some() {
                return Err(bad("name", value, "trailing fields"));
            }
            Ok(Parsed {
                rdata: n.clone(),
                target: Some(n),
            })
        }
        rtype::MX => {
            let pref: u16 = num("MX", value, f.next())?;
            let n = name::parse_text(
                f.next().ok_or_else(|| bad("MX", value, "no exchange"))?,
                origin,
            )?;
            let mut rdata = pref.to_be_bytes().to_vec();
            rdata.extend_from_slice(&n);
            Ok(Parsed {
                rdata,
                target: Some(n),
            })
        }
        rtype::SRV => {
            let prio: u16 = num("SRV", value, f.next())?;
            let weight: u16 = num("SRV", value, f.next())?;
            let port: u16 = num("SRV", value, f.next())?;
            let n = name::parse_text(
                f.next().ok_or_else(|| bad("SRV", value, "no target"))?,
                origin,
            )?;
            Ok(Parsed {
                rdata: srv(prio, weight, port, &n),
                target: Some(n),
            })
        }
        rtype::TXT => {
            let mut rdata = Vec::new();
            for s in char_strings(value)? {
                rdata.push(s.len() as u8);
                rdata.extend_from_slice(&s);
            }
            if rdata.len() > 65535 {
                return Err(bad("TXT", value, "too long"));
            }
            plain(rdata)
        }
        rtype::CAA => {
            let flags: u8 = num("CAA", value, f.next())?;
            let tag = f.next().ok_or_else(|| bad("CAA", value, "no tag"))?;
            // RFC 8659 §4.1: a tag is 1 to 15 ASCII letters and digits.
            if tag.is_empty() || tag.len() > 15 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad("CAA", value, "bad tag"));
            }
            // The value is the rest of the text after the flags and the tag, quoted or not.
            let rest = value
                .trim_start()
                .split_once(char::is_whitespace)
                .map(|(_, r)| r.trim_start())
                .and_then(|r| r.strip_prefix(tag))
                .unwrap_or_default();
            let v = char_strings(rest)?.concat();
            let mut rdata = vec![flags, tag.len() as u8];
            rdata.extend(tag.bytes().map(|b| b.to_ascii_lowercase()));
            rdata.extend_from_slice(&v);
            plain(rdata)
        }
        _ => Err(bad("record", value, "unsupported type")),
    }
}

/// SRV RDATA.
pub fn srv(prio: u16, weight: u16, port: u16, target: &[u8]) -> Vec<u8> {
    let mut rdata = Vec::with_capacity(6 + target.len());
    rdata.extend_from_slice(&prio.to_be_bytes());
    rdata.extend_from_slice(&weight.to_be_bytes());
    rdata.extend_from_slice(&port.to_be_bytes());
    rdata.extend_from_slice(target);
    rdata
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Vec<u8> {
        b"\x03lab\x08internal\x00".to_vec()
    }

    #[test]
    fn parses_each_type() -> Result<(), Error> {
        let o = origin();
        assert_eq!(parse(rtype::A, "10.0.0.1", &o)?.rdata, vec![10, 0, 0, 1]);
        assert_eq!(parse(rtype::AAAA, "::1", &o)?.rdata.len(), 16);
        let c = parse(rtype::CNAME, "www", &o)?;
        assert_eq!(
            c.target.as_deref(),
            Some(&b"\x03www\x03lab\x08internal\x00"[..])
        );
        let mx = parse(rtype::MX, "10 mail.example.org.", &o)?;
        assert_eq!(&mx.rdata[..2], &[0, 10]);
        assert_eq!(&mx.rdata[2..], b"\x04mail\x07example\x03org\x00");
        let s = parse(rtype::SRV, "1 2 389 ldap", &o)?;
        assert_eq!(&s.rdata[..6], &[0, 1, 0, 2, 1, 133]);
        let t = parse(rtype::TXT, r#""hello world" two "a\"b" "\065""#, &o)?;
        assert_eq!(t.rdata, b"\x0bhello world\x03two\x03a\"b\x01A");
        let caa = parse(rtype::CAA, r#"0 issue "letsencrypt.org""#, &o)?;
        assert_eq!(caa.rdata, b"\x00\x05issueletsencrypt.org");
        // The tag is found after the flags, even when the flags' digits could be a tag.
        let caa = parse(rtype::CAA, r#"0 0 "x""#, &o)?;
        assert_eq!(caa.rdata, b"\x00\x010x");
        assert!(parse(rtype::CAA, r#"0 abcdefghijklmnop "x""#, &o).is_err());
        assert!(parse(rtype::CAA, r#"0 abcdefghijklmno "x""#, &o).is_ok());
        assert!(parse(rtype::A, "300.1.1.1", &o).is_err());
        assert!(parse(rtype::MX, "x mail", &o).is_err());
        assert!(parse(rtype::TXT, "\"open", &o).is_err());
        assert!(parse(rtype::SRV, "1 2 70000 x", &o).is_err());
        Ok(())
    }
}
