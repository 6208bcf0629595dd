//! Argon2id password hashing. Hashing and verification are CPU-bound, so the async entry points
//! run them on the blocking pool behind a semaphore sized to the machine: a flood of binds or
//! logins queues here instead of starving the runtime.
//!
//! Verifications the caller marks [`Lane::Suspect`] (guesses: names or addresses with recent
//! failures, names that are no account) first need a permit of a second semaphore with half the
//! permits (at least one), so they never hold more than that share of the capacity and the rest
//! stays for everybody else. (On a single core nothing is reserved.)

use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::error::{Result, StoreError};

/// Argon2id cost parameters (OWASP's 2023 recommendation: 19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

fn hasher(cost: HashCost) -> Result<Argon2<'static>> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
        .map_err(|_| StoreError::Hash)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` into a PHC string (blocking; prefer [`hash_password`]).
pub fn hash_password_blocking(password: &str, cost: HashCost) -> Result<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(hasher(cost)?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|_| StoreError::Hash)?
        .to_string())
}

/// Checks `password` against a PHC string (blocking; prefer [`verify_password`]). A malformed
/// hash verifies as false.
pub fn verify_password_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        // The parameters come from the PHC string itself.
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The cost of [`DUMMY_HASH`]: the process's configured cost (the first store's), else the
/// default.
static DUMMY_COST: std::sync::OnceLock<HashCost> = std::sync::OnceLock::new();

/// Sets the cost of the hash verified for users that do not exist to the one new passwords
/// get, so that "no such user" costs what "wrong password" costs at the configured cost (it was
/// always the default cost). The first call wins; [`crate::Store::from_pool`] makes it.
pub(crate) fn set_dummy_cost(cost: HashCost) {
    let _ = DUMMY_COST.set(cost);
}

/// A hash of a random password, verified against when the user does not exist so that "no such
/// user" costs the same time as "wrong password".
static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    let mut random = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
    let text: String = random.iter().map(|b| format!("{b:02x}")).collect();
    hash_password_blocking(&text, DUMMY_COST.get().copied().unwrap_or_default()).ok()
});

/// Whose verification it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// An ordinary verification: may use every permit.
    Normal,
    /// A likely guess: may use only the suspect share of the permits.
    Suspect,
}

/// The argon2 capacity: permits for all verifications, and the suspects' share of them.
struct Permits {
    all: Arc<Semaphore>,
    suspect: Arc<Semaphore>,
}

impl Permits {
    /// `n` permits in all; suspects may hold half of them (at least one).
    fn new(n: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(n)),
            suspect: Arc::new(Semaphore::new((n / 2).max(1))),
        }
    }

    /// Runs `f` on the blocking pool once `lane` may have a permit.
    async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        // Suspects take their share's permit first, so at most that many of them ever hold or
        // wait for a permit of the whole.
        let _share = match lane {
            Lane::Normal => None,
            Lane::Suspect => Some(
                self.suspect
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| StoreError::Hash)?,
            ),
        };
        let _permit = self
            .all
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Hash)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| StoreError::Hash)
    }
}

/// The process's argon2 capacity: one permit per core.
fn permits() -> &'static Permits {
    static PERMITS: LazyLock<Permits> = LazyLock::new(|| {
        Permits::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        )
    });
    &PERMITS
}

async fn run_limited<T: Send + 'static>(
    lane: Lane,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    permits().run(lane, f).await
}

/// Fewest characters a password may have.
pub const MIN_CHARS: usize = 8;
/// Most characters a password may have (argon2 hashes whatever it gets; this bounds the work).
pub const MAX_CHARS: usize = 1024;

/// The password rule, the one every path that sets a password applies (API, pages, CLI, LDAP
/// Password Modify): 8 to 1024 characters.
pub fn check_rule(password: &str) -> Result<()> {
    let chars = password.chars().count();
    if !(MIN_CHARS..=MAX_CHARS).contains(&chars) {
        return Err(crate::StoreError::Invalid {
            field: "password".into(),
            message: format!("must be {MIN_CHARS} to {MAX_CHARS} characters"),
        });
    }
    Ok(())
}

/// Hashes `password` off the async runtime.
pub async fn hash_password(password: String, cost: HashCost) -> Result<String> {
    run_limited(Lane::Normal, move || {
        hash_password_blocking(&password, cost)
    })
    .await?
}

/// Verifies `password` against `phc` off the async runtime. With `phc` = `None` (unknown user,
/// or a user without a password) it still spends one verification and returns false.
pub async fn verify_password(password: String, phc: Option<String>) -> Result<bool> {
    verify_password_in(Lane::Normal, password, phc).await
}

/// [`verify_password`] in the given lane.
pub async fn verify_password_in(lane: Lane, password: String, phc: Option<String>) -> Result<bool> {
    run_limited(lane, move || match phc {
        Some(phc) => verify_password_blocking(&password, &phc),
        None => {
            if let Some(dummy) = DUMMY_HASH.as_deref() {
                let _ = verify_password_blocking(&password, dummy);
            }
            false
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() -> Result<()> {
        let cheap = HashCost {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        let phc = hash_password("correct horse".into(), cheap).await?;
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), Some(phc.clone())).await?);
        let phc_ok = phc.clone();
        assert!(!verify_password("wrong".into(), Some(phc)).await?);
        assert!(!verify_password("x".into(), None).await?);
        assert!(!verify_password("x".into(), Some("garbage".into())).await?);
        assert!(verify_password_in(Lane::Suspect, "correct horse".into(), Some(phc_ok)).await?);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suspects_leave_capacity_for_others() -> Result<()> {
        let permits = Arc::new(Permits::new(2));
        // Four slow suspect jobs, twice as many as there are permits in all.
        let mut suspects = Vec::new();
        for _ in 0..4 {
            let permits = permits.clone();
            suspects.push(tokio::spawn(async move {
                permits
                    .run(Lane::Suspect, || {
                        std::thread::sleep(std::time::Duration::from_millis(300))
                    })
                    .await
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            permits.all.available_permits(),
            1,
            "suspects hold one of two"
        );
        let started = std::time::Instant::now();
        permits.run(Lane::Normal, || ()).await?;
        let waited = started.elapsed();
        assert!(
            waited < std::time::Duration::from_millis(250),
            "an ordinary verification waited {waited:?} behind suspects"
        );
        for s in suspects {
            s.await.map_err(|_| StoreError::Hash)??;
        }
        Ok(())
    }
}
