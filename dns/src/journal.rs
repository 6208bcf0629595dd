//! A zone's recent history, for incremental transfers (IXFR, RFC 1995). Each patch that moves a
//! zone's serial appends one [`Delta`]: the SOA before and after, and the records that went and
//! came. A secondary that holds one of the recent serials gets just the deltas from there; any
//! other serial gets the whole zone (RFC 1995 §4 allows it).
//!
//! Architecture Invariant: the journal of a published [`crate::zone::Zone`] is a contiguous chain
//! ending at that zone's serial, and applying its deltas to the zone as published at a journal
//! serial gives the zone as published now, record for record (`dns/src/patch_tests.rs` checks
//! it). A change that does not move the serial, or moves it backwards, empties the journal: the
//! serial would no longer name one version.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::rdata::rtype;
use crate::zone::Node;

/// Deltas kept per zone.
pub const MAX_DELTAS: usize = 256;
/// Records (removed plus added) kept per zone: past this, old deltas go first.
pub const MAX_RECORDS: usize = 50_000;

/// A record of a zone: owner (lower-case wire) and `type class ttl rdlength rdata`.
pub type Rr = (Box<[u8]>, Box<[u8]>);

/// One step from serial `from` to serial `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// Serial before.
    pub from: u32,
    /// Serial after.
    pub to: u32,
    /// The SOA record before (encoded, owner the apex).
    pub from_soa: Box<[u8]>,
    /// The SOA record after.
    pub to_soa: Box<[u8]>,
    /// Records that went (the SOA apart).
    pub removed: Vec<Rr>,
    /// Records that came (the SOA apart).
    pub added: Vec<Rr>,
}

impl Delta {
    fn records(&self) -> usize {
        self.removed.len() + self.added.len() + 2
    }
}

/// The recent deltas of a zone, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    deltas: VecDeque<Arc<Delta>>,
    records: usize,
}

/// RFC 1982: whether serial `a` is after serial `b`.
pub fn serial_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < (1 << 31)
}

impl Journal {
    /// The journal with `d` appended (the oldest deltas dropped past the bounds), or an empty
    /// one when `d` does not continue it (its serial is not after the last).
    pub fn with(&self, d: Delta) -> Journal {
        if !serial_after(d.to, d.from) || self.deltas.back().is_some_and(|last| last.to != d.from) {
            return Journal::default();
        }
        let mut next = self.clone();
        next.records += d.records();
        next.deltas.push_back(Arc::new(d));
        while next.deltas.len() > MAX_DELTAS || next.records > MAX_RECORDS {
            match next.deltas.pop_front() {
                Some(old) => next.records -= old.records(),
                None => break,
            }
        }
        next
    }

    /// The deltas from serial `since` to `current`, when the journal holds them all.
    pub fn since(&self, since: u32, current: u32) -> Option<Vec<&Delta>> {
        let start = self.deltas.iter().position(|d| d.from == since)?;
        let chain: Vec<&Delta> = self.deltas.iter().skip(start).map(|d| &**d).collect();
        let contiguous = chain.windows(2).all(|w| w[0].to == w[1].from);
        (contiguous && chain.last().is_some_and(|d| d.to == current)).then_some(chain)
    }

    /// How many deltas it holds.
    pub fn len(&self) -> usize {
        self.deltas.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// The deltas, oldest first.
    pub fn since_any(&self) -> impl Iterator<Item = &Delta> {
        self.deltas.iter().map(|d| &**d)
    }

    /// The newest delta.
    pub fn last(&self) -> Option<&Delta> {
        self.deltas.back().map(|d| &**d)
    }
}

/// What changed at one name between two versions of its node: records of `old` that `new` does
/// not have go to `removed`, and the other way round to `added`. The apex SOA is left out (it is
/// the delta's frame).
pub fn diff_node(
    owner: &[u8],
    apex: &[u8],
    old: Option<&Node>,
    new: &Node,
    removed: &mut Vec<Rr>,
    added: &mut Vec<Rr>,
) {
    let empty = Node::default();
    let old = old.unwrap_or(&empty);
    let skip = |t: u16| t == rtype::SOA && owner == apex;
    let has = |n: &Node, t: u16, rec: &[u8]| {
        n.get(t)
            .is_some_and(|s| s.encoded.iter().any(|e| &e[..] == rec))
    };
    for (from, to, out) in [(old, new, &mut *removed), (new, old, &mut *added)] {
        for set in from.rrsets.iter().filter(|s| !skip(s.rtype)) {
            for rec in &set.encoded {
                if !has(to, set.rtype, rec) {
                    out.push((owner.into(), rec.clone()));
                }
            }
        }
    }
}
