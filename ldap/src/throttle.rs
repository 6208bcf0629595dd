//! Failed-bind limits, shared by every connection of the server.
//!
//! Failures are counted per account (the bind DN, normalized, so every spelling of a name is one
//! account) and per client address (IPv6 addresses by their /64) within a window that starts at
//! the first failure. A key with `limit` failures is refused at once — invalidCredentials without
//! verifying, whatever the password — until the window has passed. Below the limit at most the
//! remaining number of verifications may be in flight for a key, so parallel connections cannot
//! get more guesses verified than the limit either: further attempts wait until one finishes.
//!
//! An attempt for an account with failures, from an address with a quarter of its limit in
//! failures, or for a name that is not an account, is *suspect*: its verification may use only
//! part of the argon2 capacity
//! ([`siteward_store::password::Lane::Suspect`]), so accounts nobody attacks always find a
//! permit.
//!
//! Time is a parameter so tests control it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How many failures are allowed, and for how long they count.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures of one account within the window after which it is refused.
    pub per_account: u32,
    /// Failures from one address within the window after which it is refused.
    pub per_address: u32,
    /// How long failures count, from the first one.
    pub window: Duration,
}

/// Which limit refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The account had too many failures.
    Account,
    /// The client address had too many failures.
    Address,
}

impl Scope {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Scope::Account => "account",
            Scope::Address => "address",
        }
    }
}

/// Keys tracked for names that are not accounts, and for addresses; beyond this, expired keys
/// are swept (at most once a second) and, if none expired, new keys go untracked (accounts are
/// always tracked: there are only as many as users).
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Default)]
struct Counter {
    failures: u32,
    in_flight: u32,
    since: Option<Instant>,
}

impl Counter {
    /// Forgets failures older than the window.
    fn refresh(&mut self, now: Instant, window: Duration) {
        if self
            .since
            .is_some_and(|s| now.saturating_duration_since(s) >= window)
        {
            self.failures = 0;
            self.since = None;
        }
    }

    fn idle(&self) -> bool {
        self.failures == 0 && self.in_flight == 0
    }
}

enum Check {
    Go,
    Wait,
    Refused,
}

#[derive(Debug)]
struct Table<K> {
    map: HashMap<K, Counter>,
    cap: Option<usize>,
    swept: Option<Instant>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(cap: Option<usize>) -> Self {
        Self {
            map: HashMap::new(),
            cap,
            swept: None,
        }
    }

    /// Whether an attempt for `key` may start, and its failures so far.
    fn check(&mut self, key: &K, limit: u32, now: Instant, window: Duration) -> (Check, u32) {
        let Some(c) = self.map.get_mut(key) else {
            return (Check::Go, 0);
        };
        c.refresh(now, window);
        let check = if c.failures >= limit {
            Check::Refused
        } else if c.failures.saturating_add(c.in_flight) >= limit {
            Check::Wait
        } else {
            Check::Go
        };
        (check, c.failures)
    }

    /// Counts an attempt in flight; false when the key cannot be tracked (table full).
    fn start(&mut self, key: &K, now: Instant, window: Duration) -> bool {
        if !self.map.contains_key(key) && self.cap.is_some_and(|cap| self.map.len() >= cap) {
            let due = self
                .swept
                .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1));
            if due {
                self.swept = Some(now);
                self.map.retain(|_, c| {
                    c.refresh(now, window);
                    !c.idle()
                });
            }
            if self.cap.is_some_and(|cap| self.map.len() >= cap) {
                return false;
            }
        }
        let c = self.map.entry(key.clone()).or_default();
        c.in_flight = c.in_flight.saturating_add(1);
        true
    }

    /// Ends an attempt in flight: `Some(true)` a failure, `Some(false)` a success, `None`
    /// abandoned. Returns the failures now counted.
    fn finish(&mut self, key: &K, outcome: Option<bool>, now: Instant, window: Duration) -> u32 {
        let Some(c) = self.map.get_mut(key) else {
            return 0;
        };
        c.in_flight = c.in_flight.saturating_sub(1);
        c.refresh(now, window);
        match outcome {
            Some(true) => {
                c.failures = c.failures.saturating_add(1);
                c.since.get_or_insert(now);
            }
            Some(false) => {
                c.failures = 0;
                c.since = None;
            }
            None => {}
        }
        let failures = c.failures;
        if c.idle() {
            self.map.remove(key);
        }
        failures
    }
}

#[derive(Debug)]
struct State {
    accounts: Table<String>,
    names: Table<String>,
    addresses: Table<IpAddr>,
}

/// Failed-bind limits per account and per address (see the module documentation).
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<State>,
    changed: Notify,
    limits: Limits,
}

/// What a bind is for: the normalized DN, whether it names an account, the client address.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The bind DN, normalized.
    pub dn: String,
    /// Whether the DN names an existing account.
    pub account: bool,
    /// The client's address.
    pub address: IpAddr,
}

/// A verification the limits allowed; tell it how it went with [`Attempt::failed`] or
/// [`Attempt::succeeded`] (dropping it unfinished counts nothing).
#[derive(Debug)]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    subject: Subject,
    address: IpAddr,
    tracked_name: bool,
    tracked_address: bool,
    /// Whether the verification is suspect (may use only part of the argon2 capacity).
    pub suspect: bool,
    finished: bool,
}

/// An IPv6 client is keyed by its /64 (one host can hold all of it); IPv4-mapped addresses as
/// IPv4.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                for s in segments.iter_mut().skip(4) {
                    *s = 0;
                }
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl Throttle {
    /// Limits as given.
    pub fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::new(State {
                accounts: Table::new(None),
                names: Table::new(Some(MAX_KEYS)),
                addresses: Table::new(Some(MAX_KEYS)),
            }),
            changed: Notify::new(),
            limits,
        }
    }

    /// Failures from which an address is suspect: a quarter of its limit, so that one user's
    /// typo does not send everybody at that address (a NAT, a host with many users) to the
    /// suspect lane.
    fn suspect_address(per_address: u32) -> u32 {
        (per_address / 4).max(1)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The counters stay meaningful even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `subject` may have a password verified, or says which limit refuses it.
    pub async fn begin(&self, subject: Subject) -> Result<Attempt<'_>, Scope> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.try_begin(&subject, Instant::now()) {
                Ok(Some(attempt)) => return Ok(attempt),
                Ok(None) => changed.await,
                Err(scope) => return Err(scope),
            }
        }
    }

    /// One check: an attempt, `None` to wait for one in flight to finish, or a refusal.
    fn try_begin(&self, subject: &Subject, now: Instant) -> Result<Option<Attempt<'_>>, Scope> {
        let Limits {
            per_account,
            per_address,
            window,
        } = self.limits;
        let address = address_key(subject.address);
        let mut guard = self.lock();
        let state = &mut *guard;
        let names = if subject.account {
            &mut state.accounts
        } else {
            &mut state.names
        };
        let (by_name, name_failures) = names.check(&subject.dn, per_account, now, window);
        let (by_address, address_failures) =
            state.addresses.check(&address, per_address, now, window);
        match (by_name, by_address) {
            (Check::Refused, _) => return Err(Scope::Account),
            (_, Check::Refused) => return Err(Scope::Address),
            (Check::Wait, _) | (_, Check::Wait) => return Ok(None),
            (Check::Go, Check::Go) => {}
        }
        // An account is always tracked (its table has no cap); a name that is none, or an
        // address, may not be when its table is full.
        let tracked_name = names.start(&subject.dn, now, window);
        let tracked_address = state.addresses.start(&address, now, window);
        Ok(Some(Attempt {
            throttle: self,
            subject: subject.clone(),
            address,
            tracked_name,
            tracked_address,
            suspect: !subject.account
                || name_failures > 0
                || address_failures >= Self::suspect_address(per_address),
            finished: false,
        }))
    }

    fn finish(&self, attempt: &Attempt<'_>, outcome: Option<bool>, now: Instant) {
        let window = self.limits.window;
        {
            let mut guard = self.lock();
            let state = &mut *guard;
            let names = if attempt.subject.account {
                &mut state.accounts
            } else {
                &mut state.names
            };
            let by_name = if attempt.tracked_name {
                names.finish(&attempt.subject.dn, outcome, now, window)
            } else {
                0
            };
            if attempt.subject.account
                && outcome == Some(true)
                && by_name == self.limits.per_account
            {
                tracing::warn!(dn = %attempt.subject.dn, failures = by_name, window = ?window,
                    "account reached the failed-bind limit; its binds are refused until the window passes");
            }
            if attempt.tracked_address {
                // A success does not clear an address: an attacker with one valid account
                // could otherwise reset the count between guesses on others.
                let outcome = outcome.filter(|failed| *failed);
                let by_address = state
                    .addresses
                    .finish(&attempt.address, outcome, now, window);
                if outcome.is_some() && by_address == self.limits.per_address {
                    tracing::warn!(address = %attempt.address, failures = by_address, window = ?window,
                        "address reached the failed-bind limit; its binds are refused until the window passes");
                }
            }
        }
        self.changed.notify_waiters();
    }
}

impl Attempt<'_> {
    /// The password was wrong (or the account cannot bind).
    pub fn failed(mut self, now: Instant) {
        self.finished = true;
        self.throttle.finish(&self, Some(true), now);
    }

    /// The password was right: the account's failures are forgotten (the address's are not).
    pub fn succeeded(mut self, now: Instant) {
        self.finished = true;
        self.throttle.finish(&self, Some(false), now);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.throttle.finish(self, None, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(dn: &str, account: bool, address: &str) -> Subject {
        Subject {
            dn: dn.into(),
            account,
            address: address.parse().unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn limits() -> Limits {
        Limits {
            per_account: 3,
            per_address: 5,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn limits_per_account_and_address_and_forgets() {
        let t = Throttle::new(limits());
        let t0 = Instant::now();
        let alice = subject("uid=alice", true, "192.0.2.1");
        for _ in 0..3 {
            let a = t.try_begin(&alice, t0).ok().flatten();
            a.unwrap_or_else(|| panic!("allowed")).failed(t0);
        }
        assert_eq!(t.try_begin(&alice, t0).err(), Some(Scope::Account));
        // Another address does not help the account.
        let elsewhere = subject("uid=alice", true, "192.0.2.9");
        assert_eq!(t.try_begin(&elsewhere, t0).err(), Some(Scope::Account));
        // Another account from the same address is allowed (3 < 5), and suspect.
        let bob = subject("uid=bob", true, "192.0.2.1");
        let a = t.try_begin(&bob, t0).ok().flatten();
        let a = a.unwrap_or_else(|| panic!("allowed"));
        assert!(a.suspect);
        a.failed(t0);
        let a = t.try_begin(&bob, t0).ok().flatten();
        a.unwrap_or_else(|| panic!("allowed")).failed(t0);
        // Five failures from the address: everything from it is refused.
        let carol = subject("uid=carol", true, "192.0.2.1");
        assert_eq!(t.try_begin(&carol, t0).err(), Some(Scope::Address));
        // The window passes.
        let later = t0 + Duration::from_secs(61);
        let a = t.try_begin(&alice, later).ok().flatten();
        let a = a.unwrap_or_else(|| panic!("allowed after the window"));
        assert!(!a.suspect);
        a.succeeded(later);
        // A fresh account from a fresh address is clean; a name that is no account is suspect.
        let a = t
            .try_begin(&subject("uid=dave", true, "192.0.2.2"), t0)
            .ok()
            .flatten();
        assert!(!a.unwrap_or_else(|| panic!("allowed")).suspect);
        let a = t
            .try_begin(&subject("uid=nobody", false, "192.0.2.3"), t0)
            .ok()
            .flatten();
        assert!(a.unwrap_or_else(|| panic!("allowed")).suspect);
    }

    #[test]
    fn in_flight_attempts_count_and_success_clears_the_account() {
        let t = Throttle::new(limits());
        let t0 = Instant::now();
        let alice = subject("uid=alice", true, "192.0.2.1");
        let first = t.try_begin(&alice, t0).ok().flatten();
        let first = first.unwrap_or_else(|| panic!("allowed"));
        first.failed(t0);
        // Two more may be in flight (3 - 1); the fourth waits.
        let a = t.try_begin(&alice, t0).ok().flatten();
        let b = t.try_begin(&alice, t0).ok().flatten();
        assert!(a.is_some() && b.is_some());
        assert!(matches!(t.try_begin(&alice, t0), Ok(None)));
        // An abandoned attempt frees its place without counting.
        drop(a);
        let c = t.try_begin(&alice, t0).ok().flatten();
        let c = c.unwrap_or_else(|| panic!("allowed"));
        // A success forgets the account's failures.
        c.succeeded(t0);
        drop(b);
        for _ in 0..2 {
            let a = t.try_begin(&alice, t0).ok().flatten();
            a.unwrap_or_else(|| panic!("allowed")).failed(t0);
        }
        assert!(t.try_begin(&alice, t0).is_ok());
    }

    #[test]
    fn one_typo_does_not_make_an_address_suspect() {
        let t = Throttle::new(Limits {
            per_account: 10,
            per_address: 100,
            window: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        let typo = t
            .try_begin(&subject("uid=alice", true, "192.0.2.1"), t0)
            .ok()
            .flatten();
        typo.unwrap_or_else(|| panic!("allowed")).failed(t0);
        let bob = t
            .try_begin(&subject("uid=bob", true, "192.0.2.1"), t0)
            .ok()
            .flatten();
        assert!(!bob.unwrap_or_else(|| panic!("allowed")).suspect);
        // Alice herself is suspect until she succeeds.
        let alice = t
            .try_begin(&subject("uid=alice", true, "192.0.2.1"), t0)
            .ok()
            .flatten();
        assert!(alice.unwrap_or_else(|| panic!("allowed")).suspect);
        // From 25 failures (a quarter of the limit) the address is.
        for i in 0..24 {
            let who = subject(&format!("uid=u{i}"), true, "192.0.2.1");
            let a = t.try_begin(&who, t0).ok().flatten();
            a.unwrap_or_else(|| panic!("allowed")).failed(t0);
        }
        let carol = t
            .try_begin(&subject("uid=carol", true, "192.0.2.1"), t0)
            .ok()
            .flatten();
        assert!(carol.unwrap_or_else(|| panic!("allowed")).suspect);
    }

    #[test]
    fn ipv6_clients_count_by_prefix() {
        assert_eq!(
            address_key(
                "2001:db8:1:2:3:4:5:6"
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}"))
            ),
            "2001:db8:1:2::"
                .parse::<IpAddr>()
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}"))),
            "192.0.2.1"
                .parse::<IpAddr>()
                .unwrap_or_else(|e| panic!("{e}"))
        );
    }

    #[tokio::test]
    async fn waiters_wake_when_an_attempt_finishes() {
        let t = std::sync::Arc::new(Throttle::new(Limits {
            per_account: 1,
            per_address: 10,
            window: Duration::from_secs(60),
        }));
        let alice = subject("uid=alice", true, "192.0.2.1");
        let first = t.begin(alice.clone()).await;
        let first = first.unwrap_or_else(|_| panic!("allowed"));
        let waiter = {
            let t = t.clone();
            let alice = alice.clone();
            tokio::spawn(async move { t.begin(alice).await.map(|a| a.suspect) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "the second attempt waits for the first"
        );
        first.failed(Instant::now());
        let second = waiter.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            second,
            Err(Scope::Account),
            "the first failure used up the limit"
        );
    }
}
