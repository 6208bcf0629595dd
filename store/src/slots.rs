//! Connection slots for the TCP listeners (LDAP, DNS over TCP): a cap on connections served at
//! once that makes room instead of locking clients out.
//!
//! A listener at its cap closes the connection that is idle and least worth keeping — one that
//! has never completed a request before one that has, then the one idle the longest — and serves
//! the new client in its place (RFC 7766 §6.2.3 for DNS: under pressure a server closes idle
//! connections, oldest first). Only when every connection is in the middle of a request is the
//! new one refused. So a flood of connections that never send a byte cannot keep SSSD, nslcd or
//! a resolver out: it only pushes out its own oldest members.
//!
//! The bookkeeping per request is one atomic store ([`Slot::busy`], [`Slot::idle`]); the lock is
//! taken when a connection comes or goes, and the scan for a connection to close happens only at
//! the cap.
//!
//! Kept in the store crate because both protocol crates depend on it and not on each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A request is being handled: not to be closed.
const BUSY: u64 = 1 << 63;
/// At least one request was handled on this connection.
const USED: u64 = 1 << 62;
const TIME: u64 = USED - 1;

/// At most `cap` connections at once; see the module's note.
#[derive(Debug)]
pub struct Slots {
    cap: usize,
    epoch: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    open: HashMap<u64, Arc<Conn>>,
}

#[derive(Debug)]
struct Conn {
    /// `BUSY | USED | milliseconds since the epoch` of the last change.
    state: AtomicU64,
    close: CancellationToken,
}

/// What [`Slots::admit`] decided.
#[derive(Debug)]
pub enum Admission {
    /// Under the cap.
    Admitted(Slot),
    /// At the cap: an idle connection was told to close to make room for this one.
    MadeRoom(Slot),
    /// At the cap and every connection is handling a request.
    Full,
}

/// A connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    conn: Arc<Conn>,
}

impl Slots {
    /// At most `cap` connections.
    pub fn new(cap: usize) -> Arc<Slots> {
        Arc::new(Slots {
            cap,
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Connections holding a slot now.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.open.len()).unwrap_or(0)
    }

    /// No connection holds a slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(TIME) & TIME
    }

    /// A slot for a new connection, closing an idle one at the cap (see the module's note).
    pub fn admit(self: &Arc<Self>) -> Admission {
        let Ok(mut inner) = self.inner.lock() else {
            return Admission::Full;
        };
        let mut made_room = false;
        if inner.open.len() >= self.cap {
            // The least worth keeping: unused before used, then idle the longest. BUSY sorts
            // last, and a busy connection is never chosen.
            let victim = inner
                .open
                .iter()
                .map(|(id, c)| (c.state.load(Ordering::Acquire), *id))
                .filter(|(state, _)| state & BUSY == 0)
                .min();
            let Some((_, id)) = victim else {
                return Admission::Full;
            };
            if let Some(c) = inner.open.remove(&id) {
                c.close.cancel();
            }
            made_room = true;
        }
        inner.next += 1;
        let id = inner.next;
        let conn = Arc::new(Conn {
            state: AtomicU64::new(self.now()),
            close: CancellationToken::new(),
        });
        inner.open.insert(id, conn.clone());
        let slot = Slot {
            slots: self.clone(),
            id,
            conn,
        };
        if made_room {
            Admission::MadeRoom(slot)
        } else {
            Admission::Admitted(slot)
        }
    }
}

impl Slot {
    /// A request arrived: this connection is not to be closed until [`Slot::idle`].
    pub fn busy(&self) {
        self.conn
            .state
            .store(BUSY | USED | self.slots.now(), Ordering::Release);
    }

    /// The request was answered; the connection waits for the next one.
    pub fn idle(&self) {
        self.conn
            .state
            .store(USED | self.slots.now(), Ordering::Release);
    }

    /// Completes when this connection was chosen to make room; it should say goodbye and close.
    pub fn closing(&self) -> WaitForCancellationFuture<'_> {
        self.conn.close.cancelled()
    }

    /// Whether this connection was chosen to make room.
    pub fn is_closing(&self) -> bool {
        self.conn.close.is_cancelled()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.slots.inner.lock() {
            // Already gone when it was chosen to make room (its place was given away then).
            if inner
                .open
                .get(&self.id)
                .is_some_and(|c| Arc::ptr_eq(c, &self.conn))
            {
                inner.open.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(a: Admission) -> Slot {
        match a {
            Admission::Admitted(s) | Admission::MadeRoom(s) => s,
            Admission::Full => panic!("full"),
        }
    }

    #[test]
    fn under_the_cap_everyone_gets_in_and_dropping_frees() {
        let slots = Slots::new(2);
        let a = slots.admit();
        let b = slots.admit();
        assert!(matches!(a, Admission::Admitted(_)));
        assert!(matches!(b, Admission::Admitted(_)));
        assert_eq!(slots.len(), 2);
        drop(a);
        assert_eq!(slots.len(), 1);
        assert!(matches!(slots.admit(), Admission::Admitted(_)));
    }

    #[test]
    fn at_the_cap_unused_go_first_then_the_longest_idle_and_never_a_busy_one() {
        let slots = Slots::new(3);
        let used_old = slot(slots.admit());
        used_old.busy();
        used_old.idle();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let unused = slot(slots.admit());
        let busy = slot(slots.admit());
        busy.busy();
        // The unused one goes, though the used one is older.
        let d = slot(slots.admit());
        assert!(unused.is_closing());
        assert!(!used_old.is_closing() && !busy.is_closing());
        // Then the idle ones by age: `used_old` (idle since before `d` arrived).
        std::thread::sleep(std::time::Duration::from_millis(5));
        d.busy();
        d.idle();
        let e = slot(slots.admit());
        assert!(used_old.is_closing());
        assert!(!d.is_closing() && !busy.is_closing());
        assert_eq!(slots.len(), 3);
        // Everyone busy: full.
        d.busy();
        e.busy();
        assert!(matches!(slots.admit(), Admission::Full));
        // A closed connection's late drop does not free someone else's place.
        drop(unused);
        drop(used_old);
        assert_eq!(slots.len(), 3);
        assert!(matches!(slots.admit(), Admission::Full));
        e.idle();
        assert!(matches!(slots.admit(), Admission::MadeRoom(_)));
        assert!(e.is_closing());
    }
}
