//! Failed-bind throttling: each failure of a user name and of a client address doubles the delay
//! before that name's or address's next verification (the larger of the two applies), up to a
//! cap; failures older than the window are forgotten. Time is a parameter so tests control it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Delays for repeated bind failures.
#[derive(Debug)]
pub struct Throttle {
    state: Mutex<HashMap<String, Failures>>,
    base: Duration,
    max: Duration,
    window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Entries kept before old ones are swept.
const MAX_KEYS: usize = 100_000;

impl Throttle {
    /// `base` after the first failure, doubling per failure up to `max`; forgotten after
    /// `window` without failures.
    pub fn new(base: Duration, max: Duration, window: Duration) -> Self {
        Self {
            state: Mutex::new(HashMap::new()),
            base,
            max,
            window,
        }
    }

    /// How long to wait before verifying for these keys.
    pub fn delay(&self, keys: &[&str], now: Instant) -> Duration {
        let Ok(state) = self.state.lock() else {
            return self.max;
        };
        keys.iter()
            .filter_map(|k| state.get(*k))
            .filter(|f| now.saturating_duration_since(f.last) < self.window)
            .map(|f| {
                let exp = f.count.saturating_sub(1).min(20);
                self.base.saturating_mul(1u32 << exp).min(self.max)
            })
            .max()
            .unwrap_or_default()
    }

    /// Records a failure for every key.
    pub fn failure(&self, keys: &[&str], now: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.len() >= MAX_KEYS {
            let window = self.window;
            state.retain(|_, f| now.saturating_duration_since(f.last) < window);
        }
        for key in keys {
            let entry = state.entry((*key).to_owned()).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.saturating_duration_since(entry.last) >= self.window {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
    }

    /// Forgets a key's failures (after a successful bind of that user).
    pub fn success(&self, key: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_forgets() {
        let t = Throttle::new(
            Duration::from_millis(100),
            Duration::from_millis(1000),
            Duration::from_secs(60),
        );
        let t0 = Instant::now();
        assert_eq!(t.delay(&["u:alice", "ip:1"], t0), Duration::ZERO);
        t.failure(&["u:alice", "ip:1"], t0);
        assert_eq!(t.delay(&["u:alice"], t0), Duration::from_millis(100));
        t.failure(&["u:alice", "ip:1"], t0);
        t.failure(&["u:alice", "ip:1"], t0);
        assert_eq!(t.delay(&["u:alice"], t0), Duration::from_millis(400));
        // The address carries over to another user name.
        assert_eq!(t.delay(&["u:bob", "ip:1"], t0), Duration::from_millis(400));
        for _ in 0..10 {
            t.failure(&["u:alice"], t0);
        }
        assert_eq!(t.delay(&["u:alice"], t0), Duration::from_millis(1000));
        // Old failures are forgotten.
        assert_eq!(
            t.delay(&["u:alice"], t0 + Duration::from_secs(61)),
            Duration::ZERO
        );
        t.success("u:alice");
        assert_eq!(t.delay(&["u:alice"], t0), Duration::ZERO);
        assert_eq!(t.delay(&["ip:1"], t0), Duration::from_millis(400));
    }
}
