//! Search filters: compiled once per request (attribute names resolved, assertion values
//! normalized per syntax), then evaluated per entry with RFC 4511's three-valued logic. An
//! unknown attribute, an unknown matching rule or an unreadable attribute evaluates to
//! Undefined, never to an error.
//!
//! [`Filter::candidates`] narrows a search to the users and groups an equality on an indexed
//! attribute can match; it only ever returns a superset, and every candidate is still evaluated
//! against the whole filter.
//!
//! Work is bounded twice: [`terms`] counts a protocol filter's elements before anything is
//! compiled (the session refuses filters over `ldap.max_filter_terms`), and narrowing and
//! evaluation spend from a [`Work`] allowance, one unit per filter element visited plus one per
//! attribute value examined (times the pieces of a substring assertion), so that one entry with
//! many values (a group's `memberUid`) costs what it really costs.

use std::collections::BTreeSet;

use ldap3_proto::proto::{LdapFilter, LdapMatchingRuleAssertion, LdapSubstringFilter};
use siteward_store::{Gid, Identity, Uid, LDAPUSERS_GID};

use crate::dit::{Directory, Node, Principal, OID_IN_CHAIN};
use crate::dn::{normalize_value, Dn};
use crate::schema::{Attr, Syntax};

/// The number of elements of a protocol filter: one per and, or, not and assertion, plus one per
/// piece of a substring assertion. Recursion is bounded by the codec's BER nesting limit.
pub fn terms(filter: &LdapFilter) -> usize {
    match filter {
        LdapFilter::And(fs) | LdapFilter::Or(fs) => {
            fs.iter().fold(1usize, |n, f| n.saturating_add(terms(f)))
        }
        LdapFilter::Not(f) => terms(f).saturating_add(1),
        LdapFilter::Substring(_, s) => 1 + pieces(s),
        _ => 1,
    }
}

fn pieces(s: &LdapSubstringFilter) -> usize {
    usize::from(s.initial.is_some()) + s.any.len() + usize::from(s.final_.is_some())
}

/// An allowance of work units for one search (see the module documentation). Once an amount
/// does not fit, the allowance is exhausted for good and evaluation stops.
#[derive(Debug, Clone)]
pub struct Work {
    left: u64,
    exhausted: bool,
}

impl Work {
    /// `units` to spend.
    pub fn new(units: u64) -> Self {
        Self {
            left: units,
            exhausted: false,
        }
    }

    /// No limit (for single-entry evaluations such as Compare).
    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    /// Spends `units`; false, and exhausted from then on, when they do not fit.
    pub fn spend(&mut self, units: u64) -> bool {
        match self.left.checked_sub(units) {
            Some(left) if !self.exhausted => {
                self.left = left;
                true
            }
            _ => {
                self.left = 0;
                self.exhausted = true;
                false
            }
        }
    }

    /// Whether an amount did not fit.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }
}

fn units(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Three-valued result (RFC 4511 section 4.5.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// Matches.
    True,
    /// Does not match.
    False,
    /// Cannot be decided (unknown attribute or rule, bad assertion value, no access).
    Undefined,
}

impl Truth {
    fn not(self) -> Self {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Undefined => Truth::Undefined,
        }
    }
}

/// An assertion value normalized for its attribute's syntax.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Exact(String),
    Int(i64),
    Time(String),
    Dn(Dn),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bitwise {
    And,
    Or,
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub enum Filter {
    /// All must be true.
    And(Vec<Filter>),
    /// One must be true.
    Or(Vec<Filter>),
    /// Negation.
    Not(Box<Filter>),
    /// Equality (also approx, and extensible matches that reduce to equality).
    Eq(Attr, ValueBox),
    /// Substrings, as normalized pieces.
    Sub(Attr, Substrings),
    /// Greater or equal.
    Ge(Attr, ValueBox),
    /// Less or equal.
    Le(Attr, ValueBox),
    /// Presence.
    Present(Attr),
    /// Bitwise AND/OR match on an integer attribute (AD rules 803/804).
    Bits(Attr, BitsBox),
    /// A `:dn:` extensible match also true when the entry's DN holds `type=value`.
    DnAva(String, String),
    /// Always Undefined.
    Undefined,
}

/// Opaque normalized value.
#[derive(Debug, Clone)]
pub struct ValueBox(Value);

/// Opaque bitwise assertion.
#[derive(Debug, Clone)]
pub struct BitsBox(Bitwise, i64);

/// Normalized substring pieces.
#[derive(Debug, Clone)]
pub struct Substrings {
    initial: Option<String>,
    any: Vec<String>,
    last: Option<String>,
}

fn normalize(attr: Attr, raw: &str) -> Option<Value> {
    Some(match attr.syntax() {
        Syntax::CaseIgnore | Syntax::Oid => Value::Text(normalize_value(raw)),
        Syntax::CaseExact => Value::Exact(raw.to_owned()),
        Syntax::Integer => Value::Int(raw.trim().parse().ok()?),
        Syntax::Time => Value::Time(parse_time(raw)?),
        Syntax::Dn => Value::Dn(Dn::parse(raw).ok()?),
    })
}

/// GeneralizedTime to a sortable `YYYYMMDDHHMMSS` (UTC); fractions are dropped, offsets other
/// than `Z` are converted.
fn parse_time(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let digits: String = raw.chars().take_while(|c| c.is_ascii_digit()).collect();
    if !(10..=14).contains(&digits.len()) || digits.len() % 2 != 0 {
        return None;
    }
    let mut rest = &raw[digits.len()..];
    if let Some(r) = rest.strip_prefix(['.', ',']) {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let mut padded = digits;
    while padded.len() < 14 {
        padded.push('0');
    }
    if rest == "Z" {
        return Some(padded);
    }
    // ±HHMM offsets: convert to UTC.
    let (sign, off) = match rest.chars().next()? {
        '+' => (1i64, &rest[1..]),
        '-' => (-1i64, &rest[1..]),
        _ => return None,
    };
    if !(off.len() == 2 || off.len() == 4) || !off.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = off[0..2].parse().ok()?;
    let minutes: i64 = if off.len() == 4 {
        off[2..4].parse().ok()?
    } else {
        0
    };
    let local = chrono::NaiveDateTime::parse_from_str(&padded, "%Y%m%d%H%M%S").ok()?;
    let utc = local - chrono::Duration::minutes(sign * (hours * 60 + minutes));
    Some(utc.format("%Y%m%d%H%M%S").to_string())
}

fn matches_value(syntax: Syntax, stored: &str, asserted: &Value) -> bool {
    match (syntax, asserted) {
        (Syntax::CaseIgnore | Syntax::Oid, Value::Text(a)) => normalize_value(stored) == *a,
        (_, Value::Exact(a)) => stored == a,
        (_, Value::Int(a)) => stored.parse::<i64>().is_ok_and(|v| v == *a),
        (_, Value::Time(a)) => parse_time(stored).is_some_and(|v| v == *a),
        (_, Value::Dn(a)) => Dn::parse(stored).is_ok_and(|v| v == *a),
        _ => false,
    }
}

fn order(stored: &str, asserted: &Value) -> Option<std::cmp::Ordering> {
    match asserted {
        Value::Int(a) => stored.parse::<i64>().ok().map(|v| v.cmp(a)),
        Value::Time(a) => parse_time(stored).map(|v| v.as_str().cmp(a.as_str())),
        _ => None,
    }
}

impl Filter {
    /// Compiles a protocol filter.
    pub fn compile(filter: &LdapFilter) -> Filter {
        match filter {
            LdapFilter::And(fs) => Filter::And(fs.iter().map(Filter::compile).collect()),
            LdapFilter::Or(fs) => Filter::Or(fs.iter().map(Filter::compile).collect()),
            LdapFilter::Not(f) => Filter::Not(Box::new(Filter::compile(f))),
            LdapFilter::Equality(a, v) | LdapFilter::Approx(a, v) => Self::eq(a, v),
            LdapFilter::Present(a) => match Attr::parse(a) {
                Some(attr) => Filter::Present(attr),
                // RFC 4511: present on an unrecognized type is False, not Undefined.
                None => Filter::Or(Vec::new()),
            },
            LdapFilter::Substring(a, s) => Self::substrings(a, s),
            LdapFilter::GreaterOrEqual(a, v) => Self::ordering(a, v, true),
            LdapFilter::LessOrEqual(a, v) => Self::ordering(a, v, false),
            LdapFilter::Extensible(m) => Self::extensible(m),
        }
    }

    fn eq(a: &str, v: &str) -> Filter {
        match Attr::parse(a).and_then(|attr| Some((attr, normalize(attr, v)?))) {
            Some((attr, value)) => Filter::Eq(attr, ValueBox(value)),
            None => Filter::Undefined,
        }
    }

    fn substrings(a: &str, s: &LdapSubstringFilter) -> Filter {
        let Some(attr) = Attr::parse(a) else {
            return Filter::Undefined;
        };
        let norm = |x: &str| match attr.syntax() {
            Syntax::CaseIgnore | Syntax::Oid => Some(normalize_value(x)),
            Syntax::CaseExact => Some(x.to_owned()),
            // No substring rule for integers, times and DNs.
            _ => None,
        };
        let pieces = (|| {
            Some(Substrings {
                initial: match &s.initial {
                    Some(i) => Some(norm(i)?),
                    None => None,
                },
                any: s.any.iter().map(|x| norm(x)).collect::<Option<Vec<_>>>()?,
                last: match &s.final_ {
                    Some(f) => Some(norm(f)?),
                    None => None,
                },
            })
        })();
        match pieces {
            Some(p) => Filter::Sub(attr, p),
            None => Filter::Undefined,
        }
    }

    fn ordering(a: &str, v: &str, ge: bool) -> Filter {
        let Some(attr) = Attr::parse(a) else {
            return Filter::Undefined;
        };
        if !matches!(attr.syntax(), Syntax::Integer | Syntax::Time) {
            return Filter::Undefined;
        }
        match normalize(attr, v) {
            Some(value) if ge => Filter::Ge(attr, ValueBox(value)),
            Some(value) => Filter::Le(attr, ValueBox(value)),
            None => Filter::Undefined,
        }
    }

    fn extensible(m: &LdapMatchingRuleAssertion) -> Filter {
        let rule = m.matching_rule.as_deref().map(str::to_ascii_lowercase);
        let core = match (&m.type_, rule.as_deref()) {
            (Some(t), None) => Self::eq(t, &m.match_value),
            (Some(t), Some(rule)) => match (Attr::parse(t), rule) {
                (Some(attr), OID_IN_CHAIN) if attr.syntax() == Syntax::Dn => {
                    // Groups hold only users, so the transitive closure is the direct one.
                    Self::eq(t, &m.match_value)
                }
                (Some(attr), "1.2.840.113556.1.4.803" | "1.2.840.113556.1.4.804")
                    if attr.syntax() == Syntax::Integer =>
                {
                    let op = if rule.ends_with("803") {
                        Bitwise::And
                    } else {
                        Bitwise::Or
                    };
                    match m.match_value.trim().parse() {
                        Ok(bits) => Filter::Bits(attr, BitsBox(op, bits)),
                        Err(_) => Filter::Undefined,
                    }
                }
                (Some(attr), "2.5.13.5" | "caseexactmatch" | "2.5.13.17" | "octetstringmatch")
                    if matches!(attr.syntax(), Syntax::CaseIgnore | Syntax::CaseExact) =>
                {
                    Filter::Eq(attr, ValueBox(Value::Exact(m.match_value.clone())))
                }
                (
                    Some(attr),
                    "2.5.13.2"
                    | "caseignorematch"
                    | "2.5.13.14"
                    | "integermatch"
                    | "2.5.13.1"
                    | "distinguishednamematch"
                    | "2.5.13.27"
                    | "generalizedtimematch"
                    | "2.5.13.0"
                    | "objectidentifiermatch",
                ) if rule_fits(rule, attr.syntax()) => Self::eq(t, &m.match_value),
                _ => Filter::Undefined,
            },
            // A rule without a type (compare against every attribute) is not supported.
            (None, _) => Filter::Undefined,
        };
        match (&m.type_, m.dn_attributes) {
            (Some(t), true) => Filter::Or(vec![
                core,
                Filter::DnAva(
                    Attr::parse(t)
                        .map(|a| a.name().to_ascii_lowercase())
                        .unwrap_or_else(|| t.to_ascii_lowercase()),
                    m.match_value.clone(),
                ),
            ]),
            _ => core,
        }
    }

    /// Evaluates against one entry without a work limit.
    pub fn eval(&self, dir: &Directory, id: &Identity, who: Principal, node: Node<'_>) -> Truth {
        self.eval_within(dir, id, who, node, &mut Work::unlimited())
    }

    /// Evaluates against one entry, spending from `work`; once `work` is exhausted the result
    /// is Undefined and evaluation stops (the caller checks [`Work::exhausted`]).
    pub fn eval_within(
        &self,
        dir: &Directory,
        id: &Identity,
        who: Principal,
        node: Node<'_>,
        work: &mut Work,
    ) -> Truth {
        if !work.spend(1) {
            return Truth::Undefined;
        }
        match self {
            Filter::And(fs) => {
                let mut out = Truth::True;
                for f in fs {
                    match f.eval_within(dir, id, who, node, work) {
                        _ if work.exhausted() => return Truth::Undefined,
                        Truth::False => return Truth::False,
                        Truth::Undefined => out = Truth::Undefined,
                        Truth::True => {}
                    }
                }
                out
            }
            Filter::Or(fs) => {
                let mut out = Truth::False;
                for f in fs {
                    match f.eval_within(dir, id, who, node, work) {
                        _ if work.exhausted() => return Truth::Undefined,
                        Truth::True => return Truth::True,
                        Truth::Undefined => out = Truth::Undefined,
                        Truth::False => {}
                    }
                }
                out
            }
            Filter::Not(f) => f.eval_within(dir, id, who, node, work).not(),
            Filter::Undefined => Truth::Undefined,
            Filter::DnAva(t, v) => {
                let dn = Dn::parse(&dir.dn_of(node)).unwrap_or_default();
                if dn.has_ava(t, v) {
                    Truth::True
                } else {
                    Truth::False
                }
            }
            Filter::Present(attr) => match dir.values(id, who, node, *attr) {
                Some(values) if !work.spend(units(values.len())) => Truth::Undefined,
                Some(_) => Truth::True,
                None => Truth::False,
            },
            Filter::Eq(attr, ValueBox(value)) => {
                if !dir.readable(who, node, *attr) {
                    return Truth::Undefined;
                }
                if let Some(t) = fast_membership(dir, id, node, *attr, value) {
                    return t;
                }
                let values = dir.values(id, who, node, *attr).unwrap_or_default();
                if !work.spend(units(values.len())) {
                    return Truth::Undefined;
                }
                truth(
                    values
                        .iter()
                        .any(|v| matches_value(attr.syntax(), v, value)),
                )
            }
            Filter::Sub(attr, s) => {
                let Some(values) = self.readable_values(dir, id, who, node, *attr) else {
                    return Truth::Undefined;
                };
                let per_value = units(s.any.len()).saturating_add(1);
                if !work.spend(units(values.len()).saturating_mul(per_value)) {
                    return Truth::Undefined;
                }
                let exact = attr.syntax() == Syntax::CaseExact;
                truth(values.iter().any(|v| {
                    let v = if exact { v.clone() } else { normalize_value(v) };
                    s.matches(&v)
                }))
            }
            Filter::Ge(attr, ValueBox(value)) | Filter::Le(attr, ValueBox(value)) => {
                let Some(values) = self.readable_values(dir, id, who, node, *attr) else {
                    return Truth::Undefined;
                };
                if !work.spend(units(values.len())) {
                    return Truth::Undefined;
                }
                let ge = matches!(self, Filter::Ge(..));
                truth(values.iter().any(|v| {
                    order(v, value).is_some_and(|o| {
                        if ge {
                            o != std::cmp::Ordering::Less
                        } else {
                            o != std::cmp::Ordering::Greater
                        }
                    })
                }))
            }
            Filter::Bits(attr, BitsBox(op, bits)) => {
                let Some(values) = self.readable_values(dir, id, who, node, *attr) else {
                    return Truth::Undefined;
                };
                if !work.spend(units(values.len())) {
                    return Truth::Undefined;
                }
                truth(
                    values
                        .iter()
                        .filter_map(|v| v.parse::<i64>().ok())
                        .any(|v| match op {
                            Bitwise::And => v & bits == *bits,
                            Bitwise::Or => v & bits != 0,
                        }),
                )
            }
        }
    }

    /// `None` when unreadable (Undefined); an empty list when the entry lacks the attribute.
    fn readable_values(
        &self,
        dir: &Directory,
        id: &Identity,
        who: Principal,
        node: Node<'_>,
        attr: Attr,
    ) -> Option<Vec<String>> {
        if !dir.readable(who, node, attr) {
            return None;
        }
        Some(dir.values(id, who, node, attr).unwrap_or_default())
    }

    /// The users and groups this filter can possibly match (`None` = no restriction), spending
    /// from `work` one unit per element and one per candidate handled. When `work` runs out the
    /// answer is still a superset (at worst everything); the caller checks
    /// [`Work::exhausted`].
    pub fn candidates(&self, dir: &Directory, id: &Identity, work: &mut Work) -> Candidates {
        if !work.spend(1) {
            return Candidates::ALL;
        }
        let out = match self {
            Filter::And(fs) => fs
                .iter()
                .map(|f| f.candidates(dir, id, work))
                .fold(Candidates::ALL, Candidates::intersect),
            Filter::Or(fs) => fs
                .iter()
                .map(|f| f.candidates(dir, id, work))
                .fold(Candidates::NONE, Candidates::union),
            Filter::Eq(attr, ValueBox(value)) => eq_candidates(dir, id, *attr, value),
            _ => Candidates::ALL,
        };
        if work.spend(units(out.len())) {
            out
        } else {
            Candidates::ALL
        }
    }
}

fn rule_fits(rule: &str, syntax: Syntax) -> bool {
    match rule {
        "2.5.13.2" | "caseignorematch" => matches!(syntax, Syntax::CaseIgnore | Syntax::CaseExact),
        "2.5.13.14" | "integermatch" => syntax == Syntax::Integer,
        "2.5.13.1" | "distinguishednamematch" => syntax == Syntax::Dn,
        "2.5.13.27" | "generalizedtimematch" => syntax == Syntax::Time,
        "2.5.13.0" | "objectidentifiermatch" => syntax == Syntax::Oid,
        _ => false,
    }
}

fn truth(b: bool) -> Truth {
    if b {
        Truth::True
    } else {
        Truth::False
    }
}

/// Membership equalities answered from the snapshot's indexes instead of building the
/// (possibly 10,000-value) attribute.
fn fast_membership(
    dir: &Directory,
    id: &Identity,
    node: Node<'_>,
    attr: Attr,
    value: &Value,
) -> Option<Truth> {
    match (node, attr, value) {
        (Node::Group(g), Attr::Member, Value::Dn(dn)) => {
            let member = dir
                .user_of_dn(id, dn)
                .is_some_and(|u| is_member(id, u.uid_number, g.gid_number));
            Some(truth(member))
        }
        (Node::Group(g), Attr::MemberUid, Value::Text(name)) => {
            let member = id
                .user(name)
                .is_some_and(|u| is_member(id, u.uid_number, g.gid_number));
            Some(truth(member))
        }
        (Node::User(u), Attr::MemberOf, Value::Dn(dn)) => {
            let member = dir
                .group_of_dn(id, dn)
                .is_some_and(|g| is_member(id, u.uid_number, g.gid_number));
            Some(truth(member))
        }
        _ => None,
    }
}

fn is_member(id: &Identity, uid: Uid, gid: Gid) -> bool {
    id.groups_of
        .get(&uid)
        .is_some_and(|gids| gids.binary_search(&gid).is_ok())
}

fn eq_candidates(dir: &Directory, id: &Identity, attr: Attr, value: &Value) -> Candidates {
    let users_only = |users: BTreeSet<Uid>| Candidates {
        users: Some(users),
        groups: Some(BTreeSet::new()),
    };
    let groups_only = |groups: BTreeSet<Gid>| Candidates {
        users: Some(BTreeSet::new()),
        groups: Some(groups),
    };
    match (attr, value) {
        (Attr::Uid, Value::Text(name)) => {
            users_only(id.user(name).map(|u| u.uid_number).into_iter().collect())
        }
        (Attr::UidNumber, Value::Int(n)) => users_only(
            i32::try_from(*n)
                .ok()
                .map(Uid)
                .filter(|u| id.users.contains_key(u))
                .into_iter()
                .collect(),
        ),
        (Attr::GidNumber, Value::Int(n)) => {
            let gid = i32::try_from(*n).ok().map(Gid);
            Candidates {
                // Every user's primary group is ldapusers.
                users: if gid == Some(LDAPUSERS_GID) {
                    None
                } else {
                    Some(BTreeSet::new())
                },
                groups: Some(
                    gid.filter(|g| id.groups.contains_key(g))
                        .into_iter()
                        .collect(),
                ),
            }
        }
        (Attr::Cn, Value::Text(name)) => Candidates {
            users: None,
            groups: Some(id.group(name).map(|g| g.gid_number).into_iter().collect()),
        },
        (Attr::MemberUid, Value::Text(name)) => groups_only(
            id.user(name)
                .and_then(|u| id.groups_of.get(&u.uid_number))
                .into_iter()
                .flat_map(|l| l.iter())
                .copied()
                .collect(),
        ),
        (Attr::Member, Value::Dn(dn)) => groups_only(
            dir.user_of_dn(id, dn)
                .and_then(|u| id.groups_of.get(&u.uid_number))
                .into_iter()
                .flat_map(|l| l.iter())
                .copied()
                .collect(),
        ),
        (Attr::MemberOf, Value::Dn(dn)) => users_only(
            dir.group_of_dn(id, dn)
                .and_then(|g| id.members_of.get(&g.gid_number))
                .into_iter()
                .flat_map(|l| l.iter())
                .copied()
                .collect(),
        ),
        (Attr::ObjectClass, Value::Text(oc)) => match oc.as_str() {
            "posixaccount"
            | "shadowaccount"
            | "inetorgperson"
            | "person"
            | "organizationalperson"
            | "ldappublickey" => Candidates {
                users: None,
                groups: Some(BTreeSet::new()),
            },
            "posixgroup" | "groupofnames" => Candidates {
                users: Some(BTreeSet::new()),
                groups: None,
            },
            "top" => Candidates::ALL,
            _ => Candidates::NONE,
        },
        _ => Candidates::ALL,
    }
}

/// Which users and groups a search must look at (`None` = all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates {
    /// Users, or all.
    pub users: Option<BTreeSet<Uid>>,
    /// Groups, or all.
    pub groups: Option<BTreeSet<Gid>>,
}

impl Candidates {
    /// No restriction.
    pub const ALL: Candidates = Candidates {
        users: None,
        groups: None,
    };
    /// Nothing.
    pub const NONE: Candidates = Candidates {
        users: Some(BTreeSet::new()),
        groups: Some(BTreeSet::new()),
    };

    /// How many users and groups are listed (restrictions to "all" count nothing).
    fn len(&self) -> usize {
        self.users.as_ref().map_or(0, BTreeSet::len) + self.groups.as_ref().map_or(0, BTreeSet::len)
    }

    fn intersect(self, other: Candidates) -> Candidates {
        fn both<T: Ord + Copy>(
            a: Option<BTreeSet<T>>,
            b: Option<BTreeSet<T>>,
        ) -> Option<BTreeSet<T>> {
            match (a, b) {
                (None, x) | (x, None) => x,
                (Some(a), Some(b)) => Some(a.intersection(&b).copied().collect()),
            }
        }
        Candidates {
            users: both(self.users, other.users),
            groups: both(self.groups, other.groups),
        }
    }

    fn union(self, other: Candidates) -> Candidates {
        fn either<T: Ord + Copy>(
            a: Option<BTreeSet<T>>,
            b: Option<BTreeSet<T>>,
        ) -> Option<BTreeSet<T>> {
            match (a, b) {
                (None, _) | (_, None) => None,
                (Some(mut a), Some(b)) => {
                    a.extend(b);
                    Some(a)
                }
            }
        }
        Candidates {
            users: either(self.users, other.users),
            groups: either(self.groups, other.groups),
        }
    }
}

impl Substrings {
    fn matches(&self, value: &str) -> bool {
        let mut rest = value;
        if let Some(initial) = &self.initial {
            match rest.strip_prefix(initial.as_str()) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        for any in &self.any {
            match rest.find(any.as_str()) {
                Some(pos) => rest = &rest[pos + any.len()..],
                None => return false,
            }
        }
        match &self.last {
            Some(last) => rest.ends_with(last.as_str()),
            None => true,
        }
    }
}
