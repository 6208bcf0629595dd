//! TLS for LDAPS and StartTLS with rustls (ring provider). The certificate comes from
//! configured PEM files, or from a self-signed pair generated on first start in the data
//! directory. A resolver holds the current certificate; [`Tls::reload_if_changed`] swaps in new
//! files when their modification time changes, so renewed certificates apply without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// Where the certificate and key live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The configured files, or a self-signed pair in `dir` (generated when absent) for
    /// `names` (subject alternative names).
    pub fn configured_or_self_signed(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        dir: &Path,
        names: &[String],
    ) -> Result<Self, Error> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Self { cert, key }),
            (None, None) => {
                let files = Self {
                    cert: dir.join("ldap-cert.pem"),
                    key: dir.join("ldap-key.pem"),
                };
                if !files.cert.exists() || !files.key.exists() {
                    generate_self_signed(&files, names)?;
                }
                Ok(files)
            }
            _ => Err(Error::Tls(
                "set both ldap.tls_cert and ldap.tls_key, or neither".into(),
            )),
        }
    }
}

fn generate_self_signed(files: &TlsFiles, names: &[String]) -> Result<(), Error> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| Error::Tls(format!("cannot generate a certificate: {e}")))?;
    if let Some(parent) = files.cert.parent() {
        std::fs::create_dir_all(parent)?;
    }
    write_private(&files.key, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, certified.cert.pem())?;
    tracing::info!(cert = %files.cert.display(), "generated a self-signed LDAP certificate");
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    Ok(())
}

fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| Error::Tls(format!("{}: {e}", files.cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no certificate found",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::Tls(format!("{}: {e}", files.key.display())))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| Error::Tls(format!("{}: {e}", files.key.display())))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
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

/// The TLS acceptor and the files behind it.
pub struct Tls {
    files: TlsFiles,
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Loads the certificate and key.
    pub fn new(files: TlsFiles) -> Result<Self, Error> {
        let resolver = Arc::new(Resolver {
            current: RwLock::new(load(&files)?),
        });
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
        Ok(Self {
            stamp: RwLock::new(modified(&files)),
            files,
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

    /// Reloads the files if their modification time changed. Returns whether it did. A file
    /// that does not load leaves the current certificate in place.
    pub fn reload_if_changed(&self) -> Result<bool, Error> {
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
        tracing::info!(cert = %self.files.cert.display(), "reloaded the LDAP certificate");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_then_reloaded_without_restart() -> Result<(), Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let names = vec!["localhost".to_owned()];
        let files = TlsFiles::configured_or_self_signed(None, None, dir.path(), &names)?;
        // Kept: a second start reuses the same pair.
        let first = std::fs::read(&files.cert)?;
        let again = TlsFiles::configured_or_self_signed(None, None, dir.path(), &names)?;
        assert_eq!(std::fs::read(&again.cert)?, first);
        let tls = Tls::new(files.clone())?;
        let before = tls.current_certificate();
        assert!(!tls.reload_if_changed()?, "nothing changed yet");
        // A renewed pair is written in place: the next check swaps it in.
        std::fs::remove_file(&files.cert)?;
        std::fs::remove_file(&files.key)?;
        TlsFiles::configured_or_self_signed(None, None, dir.path(), &["renewed".to_owned()])?;
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&files.cert)?
            .set_modified(later)?;
        assert!(tls.reload_if_changed()?);
        assert_ne!(tls.current_certificate(), before);
        // A broken file is refused and the current certificate stays.
        let current = tls.current_certificate();
        std::fs::write(&files.cert, "not a certificate")?;
        std::fs::File::options()
            .write(true)
            .open(&files.cert)?
            .set_modified(later + std::time::Duration::from_secs(5))?;
        assert!(tls.reload_if_changed().is_err());
        assert_eq!(tls.current_certificate(), current);
        // Key without certificate is a configuration error.
        assert!(TlsFiles::configured_or_self_signed(
            None,
            Some(files.key.clone()),
            dir.path(),
            &names
        )
        .is_err());
        Ok(())
    }
}
