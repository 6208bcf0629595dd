//! Argon2id password hashing. Hashing and verification are CPU-bound, so the async entry points
//! run them on the blocking pool behind a semaphore sized to the machine: a flood of binds or
//! logins queues here instead of starving the runtime.

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

/// A hash of a random password with the default cost, verified against when the user does not
/// exist so that "no such user" costs the same time as "wrong password".
static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    let mut random = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
    let text: String = random.iter().map(|b| format!("{b:02x}")).collect();
    hash_password_blocking(&text, HashCost::default()).ok()
});

fn permits() -> &'static Arc<Semaphore> {
    static SEM: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Arc::new(Semaphore::new(n))
    });
    &SEM
}

async fn run_limited<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let _permit = permits()
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| StoreError::Hash)?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| StoreError::Hash)
}

/// Hashes `password` off the async runtime.
pub async fn hash_password(password: String, cost: HashCost) -> Result<String> {
    run_limited(move || hash_password_blocking(&password, cost)).await?
}

/// Verifies `password` against `phc` off the async runtime. With `phc` = `None` (unknown user,
/// or a user without a password) it still spends one verification and returns false.
pub async fn verify_password(password: String, phc: Option<String>) -> Result<bool> {
    run_limited(move || match phc {
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
        assert!(!verify_password("wrong".into(), Some(phc)).await?);
        assert!(!verify_password("x".into(), None).await?);
        assert!(!verify_password("x".into(), Some("garbage".into())).await?);
        Ok(())
    }
}
