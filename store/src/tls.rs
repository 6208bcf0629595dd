//! TLS material for siteward's own listeners (LDAPS/StartTLS, HTTPS) with rustls and the ring
//! provider. The certificate comes from configured PEM files, or from a self-signed pair made on
//! first start in the data directory. A resolver hands out the current certificate; [`Tls::reload_if_changed`]
//! swaps in new files when their modification time changes, so a renewed certificate (written by
//! the ACME side, or by hand) applies to new connections without a restart.
//!
//! This lives in the store crate because every protocol crate needs it and protocol crates do not
//! depend on each other.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The certificate or key is unusable, or the configuration is inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// Where a certificate chain and its key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The configured files, or a self-signed pair `<dir>/<label>-cert.pem` and
    /// `<dir>/<label>-key.pem` (generated when absent) for `names`. `setting` names the two
    /// settings in errors (`ldap.tls` → `ldap.tls_cert`, `ldap.tls_key`).
    pub fn configured_or_self_signed(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        dir: &Path,
        label: &str,
        setting: &str,
        names: &[String],
    ) -> Result<Self, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Self { cert, key }),
            (None, None) => {
                let files = Self {
                    cert: dir.join(format!("{label}-cert.pem")),
                    key: dir.join(format!("{label}-key.pem")),
                };
                if !files.cert.exists() || !files.key.exists() {
                    generate_self_signed(&files, names)?;
                    tracing::info!(cert = %files.cert.display(), "generated a self-signed {label} certificate");
                }
                Ok(files)
            }
            _ => Err(TlsError::Invalid(format!(
                "set both {setting}_cert and {setting}_key, or neither"
            ))),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn generate_self_signed(files: &TlsFiles, names: &[String]) -> Result<(), TlsError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| TlsError::Invalid(format!("cannot generate a certificate: {e}")))?;
    if let Some(parent) = files.cert.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    write_private(&files.key, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, certified.cert.pem()).map_err(io(&files.cert))?;
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))
}

fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let bad = |path: &Path, e: &dyn std::fmt::Display| {
        TlsError::Invalid(format!("{}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.cert, &e))?;
    if certs.is_empty() {
        return Err(bad(&files.cert, &"no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, &e))?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| bad(&files.key, &e))?;
    let certified = CertifiedKey::new(certs, signing);
    // A renewal that wrote a key for another certificate must not be served.
    certified
        .keys_match()
        .map_err(|e| bad(&files.key, &format!("does not match the certificate ({e})")))?;
    Ok(Arc::new(certified))
}

fn modified(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let c = std::fs::metadata(&files.cert)
        .and_then(|m| m.modified())
        .ok()?;
    let k = std::fs::metadata(&files.key)
        .and_then(|m| m.modified())
        .ok()?;
    Some((c, k))
}

#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// A TLS acceptor whose certificate can be replaced while it runs.
pub struct Tls {
    files: TlsFiles,
    label: String,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("label", &self.label)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate and key. `alpn` lists the protocols offered (empty for none).
    pub fn new(files: TlsFiles, label: &str, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let resolver = Arc::new(Resolver {
            current: RwLock::new(load(&files)?),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            stamp: RwLock::new(modified(&files)),
            files,
            label: label.to_owned(),
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor (its resolver always hands out the current certificate).
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The leaf certificate being served now (DER).
    pub fn current_certificate(&self) -> Option<CertificateDer<'static>> {
        let current = self.resolver.current.read().ok()?;
        current.cert.first().cloned()
    }

    /// The files in use.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reloads the files if their modification time changed. Returns whether it did. Files
    /// that do not load (half-written, mismatched key) leave the current certificate in place.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = modified(&self.files);
        let changed = self.stamp.read().map(|s| *s != now).unwrap_or(true);
        if !changed {
            return Ok(false);
        }
        let fresh = load(&self.files)?;
        if let Ok(mut current) = self.resolver.current.write() {
            *current = fresh;
        }
        if let Ok(mut stamp) = self.stamp.write() {
            *stamp = now;
        }
        tracing::info!(cert = %self.files.cert.display(), "reloaded the {} certificate", self.label);
        Ok(true)
    }

    /// Calls [`Tls::reload_if_changed`] every `every` until `shutdown`.
    pub async fn watch(
        self: Arc<Self>,
        every: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.reload_if_changed() {
                tracing::error!(error = %e, "the {} certificate could not be reloaded; keeping the current one", self.label);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_then_reloaded_and_bad_files_keep_the_old_one() -> Result<(), TlsError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let names = vec!["localhost".to_owned()];
        let files = TlsFiles::configured_or_self_signed(
            None,
            None,
            dir.path(),
            "http",
            "http.tls",
            &names,
        )?;
        assert!(files.cert.ends_with("http-cert.pem"));
        let tls = Tls::new(files.clone(), "HTTPS", &[b"http/1.1"])?;
        let first = tls.current_certificate();
        assert!(!tls.reload_if_changed()?, "nothing changed yet");
        // A renewal: new pair, newer mtime.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::remove_file(&files.cert).map_err(io(&files.cert))?;
        std::fs::remove_file(&files.key).map_err(io(&files.key))?;
        generate_self_signed(&files, &names)?;
        assert!(tls.reload_if_changed()?);
        let second = tls.current_certificate();
        assert_ne!(first, second);
        // A key that belongs to another certificate is refused; the current one stays.
        let other = TlsFiles {
            cert: dir.path().join("o-cert.pem"),
            key: dir.path().join("o-key.pem"),
        };
        generate_self_signed(&other, &names)?;
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::copy(&other.key, &files.key).map_err(io(&files.key))?;
        assert!(tls.reload_if_changed().is_err());
        assert_eq!(tls.current_certificate(), second);
        // Half a configuration is an error naming the settings.
        let err = TlsFiles::configured_or_self_signed(
            Some(files.cert.clone()),
            None,
            dir.path(),
            "http",
            "http.tls",
            &names,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("http.tls_cert") && err.contains("http.tls_key"),
            "{err}"
        );
        Ok(())
    }
}
