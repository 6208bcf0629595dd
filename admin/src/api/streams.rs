//! Bounds on job event streams (`GET /jobs/{id}/events`): each open stream polls the job's
//! lines, so one user may hold only a few at once, and a stream stops the moment its client
//! leaves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use siteward_store::Uid;

/// Open streams per user, at most `per_user` each.
#[derive(Debug, Clone)]
pub struct StreamLimit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    per_user: usize,
    open: Mutex<HashMap<Uid, usize>>,
    total: AtomicUsize,
}

impl StreamLimit {
    /// At most `per_user` open streams for each user.
    pub fn new(per_user: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_user,
                open: Mutex::default(),
                total: AtomicUsize::new(0),
            }),
        }
    }

    /// A slot for one more stream of `uid`, held until the guard drops; `None` when the user
    /// already has `per_user` open.
    pub fn open(&self, uid: Uid) -> Option<StreamGuard> {
        let mut open = self.inner.open.lock().ok()?;
        let n = open.entry(uid).or_insert(0);
        if *n >= self.inner.per_user {
            return None;
        }
        *n += 1;
        self.inner.total.fetch_add(1, Ordering::Relaxed);
        Some(StreamGuard {
            limit: self.clone(),
            uid,
        })
    }

    /// Streams open now, of every user.
    pub fn total(&self) -> usize {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// The per-user bound.
    pub fn per_user(&self) -> usize {
        self.inner.per_user
    }
}

/// One open stream; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamGuard {
    limit: StreamLimit,
    uid: Uid,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.limit.inner.total.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut open) = self.limit.inner.open.lock() {
            if let Some(n) = open.get_mut(&self.uid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&self.uid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_per_user_and_freed_on_drop() {
        let limit = StreamLimit::new(2);
        let a = limit.open(Uid(1));
        let b = limit.open(Uid(1));
        assert!(a.is_some() && b.is_some());
        assert!(limit.open(Uid(1)).is_none());
        let c = limit.open(Uid(2));
        assert!(c.is_some());
        assert_eq!(limit.total(), 3);
        drop(a);
        assert!(limit.open(Uid(1)).is_some());
        drop((b, c));
        assert_eq!(limit.total(), 0);
    }
}
