//! Secrets at rest: AES-256-GCM with a random 96-bit nonce per value, and the name of the column
//! as associated data, so a ciphertext copied into another column does not decrypt.
//!
//! Stored form: `0x01 || nonce (12 bytes) || ciphertext+tag`. The leading version byte leaves
//! room for key rotation.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;

use crate::error::{Result, StoreError};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// The key that seals every secret the store keeps. Cloning shares the key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A box from 32 raw key bytes.
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// A box from a base64-encoded 32-byte key (as in the `secret_key` setting).
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| invalid_key("secret_key is not valid base64"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid_key("secret_key must decode to exactly 32 bytes"))?;
        Ok(Self::from_key(&key))
    }

    /// Reads the key file at `path`, or creates it (mode 0600, 32 random bytes, base64) when it
    /// does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        let io_err = |source| StoreError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                let text = base64::engine::general_purpose::STANDARD.encode(key);
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(io_err)?;
                file.write_all(text.as_bytes()).map_err(io_err)?;
                file.write_all(b"\n").map_err(io_err)?;
                file.sync_all().map_err(io_err)?;
                Ok(Self::from_key(&key))
            }
            Err(err) => Err(io_err(err)),
        }
    }

    /// Encrypts `plaintext`, binding it to `context` (the column it is stored in).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Crypto)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts what [`SecretBox::seal`] produced for the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let (version, rest) = sealed.split_first().ok_or(StoreError::Crypto)?;
        if *version != VERSION || rest.len() < NONCE_LEN + 16 {
            return Err(StoreError::Crypto);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Crypto)
    }

    /// [`SecretBox::open`] for secrets that are text.
    pub fn open_string(&self, context: &str, sealed: &[u8]) -> Result<String> {
        String::from_utf8(self.open(context, sealed)?).map_err(|_| StoreError::Crypto)
    }
}

fn invalid_key(message: &str) -> StoreError {
    StoreError::Invalid {
        field: "secret_key".into(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_context_binding() -> Result<()> {
        let sb = SecretBox::from_key(&[7u8; 32]);
        let sealed = sb.seal("nodes.api_token_secret_or_password", b"hunter2")?;
        assert_ne!(&sealed[13..], b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            sb.open("nodes.api_token_secret_or_password", &sealed)?,
            b"hunter2"
        );
        assert!(sb
            .open("external_domains.cloudflare_api_key", &sealed)
            .is_err());
        let other = SecretBox::from_key(&[8u8; 32]);
        assert!(other
            .open("nodes.api_token_secret_or_password", &sealed)
            .is_err());
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(sb
            .open("nodes.api_token_secret_or_password", &tampered)
            .is_err());
        assert!(sb.open("x", &[]).is_err());
        // Two seals of one value differ (fresh nonce).
        assert_ne!(sb.seal("c", b"v")?, sb.seal("c", b"v")?);
        Ok(())
    }

    #[test]
    fn key_file_created_once_with_mode_0600() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::KeyFile {
            path: "tmp".into(),
            source: e,
        })?;
        let path = dir.path().join("secret.key");
        let a = SecretBox::load_or_create(&path)?;
        let b = SecretBox::load_or_create(&path)?;
        let sealed = a.seal("c", b"same key")?;
        assert_eq!(b.open("c", &sealed)?, b"same key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map_err(|e| StoreError::KeyFile {
                    path: "meta".into(),
                    source: e,
                })?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(SecretBox::from_base64("not base64!").is_err());
        assert!(SecretBox::from_base64("AAAA").is_err());
        Ok(())
    }
}
