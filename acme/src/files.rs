//! Certificate files and the hook: `fullchain.pem` (leaf first) and `privkey.pem` (mode 0600),
//! each written to a temporary file in the same directory, synced, then renamed over the old
//! one, so a reader never sees half a file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use siteward_store::acme::IssuedCertificate;

fn write_atomically(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per writer: two tasks of one process may install the same domain at once.
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `<dir>/privkey.pem` then `<dir>/fullchain.pem`.
pub fn install(dir: &Path, chain_pem: &str, key_pem: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomically(&dir.join("privkey.pem"), key_pem.as_bytes(), 0o600)?;
    write_atomically(&dir.join("fullchain.pem"), chain_pem.as_bytes(), 0o644)
}

/// The file in a domain's directory naming the serial whose files and hook completed.
const INSTALLED: &str = ".installed-serial";

/// Notes that `serial` is fully installed in `dir` (files written, hook run).
pub fn mark_installed(dir: &Path, serial: &str) -> std::io::Result<()> {
    write_atomically(&dir.join(INSTALLED), serial.as_bytes(), 0o644)
}

/// Whether `serial` is installed in `dir`: its files and hook completed (the marker), and the
/// files are still there and hold it (a removed or replaced file is installed again).
pub fn installed(dir: &Path, serial: &str) -> bool {
    let marked = std::fs::read_to_string(dir.join(INSTALLED))
        .is_ok_and(|s| s.trim() == serial && !serial.is_empty());
    marked
        && dir.join("privkey.pem").is_file()
        && std::fs::read_to_string(dir.join("fullchain.pem"))
            .ok()
            .and_then(|chain| describe(&chain).ok())
            .is_some_and(|c| c.serial == serial)
}

/// Runs `command` with `sh -c` (60 s at most), with `SITEWARD_DOMAIN` and `SITEWARD_CERT_DIR` set.
/// Errors do not repeat the command (it may hold a secret; it is in the operator's
/// configuration), only how it ended and the tail of what it wrote to stderr.
pub async fn run_hook(command: &str, domain: &str, dir: &Path) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("SITEWARD_DOMAIN", domain)
        .env("SITEWARD_CERT_DIR", dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("the hook could not start: {e}"))?;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| "the hook did not finish within 60 s".to_string())?
        .map_err(|e| format!("the hook failed: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        let tail: String = {
            let chars: Vec<char> = stderr.chars().collect();
            chars[chars.len().saturating_sub(300)..].iter().collect()
        };
        Err(format!("the hook failed ({}): {tail}", out.status))
    }
}

/// Issuer, serial and validity of the leaf (the first certificate) of a PEM chain. `names`,
/// `key_pem` and `renew_at` are left for the caller.
pub fn describe(chain_pem: &str) -> Result<IssuedCertificate, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| format!("not PEM: {e}"))?;
    let cert = pem.parse_x509().map_err(|e| format!("not X.509: {e}"))?;
    let time = |t: x509_parser::time::ASN1Time| {
        DateTime::<Utc>::from_timestamp(t.timestamp(), 0).ok_or("validity out of range")
    };
    Ok(IssuedCertificate {
        names: Vec::new(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_before: time(cert.validity().not_before)?,
        not_after: time(cert.validity().not_after)?,
        chain_pem: chain_pem.to_owned(),
        key_pem: String::new(),
        renew_at: time(cert.validity().not_after)?,
    })
}

/// The ACME Renewal Information identifier (RFC 9773 §4.1) of the leaf of a PEM chain: its
/// Authority Key Identifier and its serial as encoded.
pub fn certificate_identifier(
    chain_pem: &str,
) -> Result<instant_acme::CertificateIdentifier<'static>, String> {
    use x509_parser::extensions::ParsedExtension;
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| format!("not PEM: {e}"))?;
    let cert = pem.parse_x509().map_err(|e| format!("not X.509: {e}"))?;
    let aki = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .ok_or("the certificate has no Authority Key Identifier")?;
    Ok(instant_acme::CertificateIdentifier::new(
        rustls::pki_types::Der::from_slice(aki.0),
        rustls::pki_types::Der::from_slice(cert.tbs_certificate.raw_serial()),
    )
    .into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_replaced_whole_with_private_key_mode() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let d = dir.path().join("example.org");
        install(&d, "CHAIN1", "KEY1")?;
        install(&d, "CHAIN2", "KEY2")?;
        assert_eq!(std::fs::read_to_string(d.join("fullchain.pem"))?, "CHAIN2");
        assert_eq!(std::fs::read_to_string(d.join("privkey.pem"))?, "KEY2");
        let mode = std::fs::metadata(d.join("privkey.pem"))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary files left.
        assert_eq!(std::fs::read_dir(&d)?.count(), 2);
        Ok(())
    }

    #[test]
    fn describes_a_certificate() -> Result<(), Box<dyn std::error::Error>> {
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["example.org".into()])?.self_signed(&key)?;
        let d = describe(&cert.pem())?;
        assert!(d.not_after > d.not_before);
        assert!(!d.serial.is_empty() && !d.serial.contains(':'));
        assert!(describe("junk").is_err());
        Ok(())
    }

    #[tokio::test]
    async fn hook_failures_are_reported() {
        let dir = std::env::temp_dir();
        assert!(run_hook(
            "test \"$SITEWARD_DOMAIN\" = example.org",
            "example.org",
            &dir
        )
        .await
        .is_ok());
        let err = run_hook("echo broken >&2; exit 3", "example.org", &dir)
            .await
            .err()
            .unwrap_or_default();
        assert!(err.contains("broken") && err.contains('3'), "{err}");
    }
}
