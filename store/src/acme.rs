//! What the ACME side keeps: accounts per directory, the certificate of each external domain
//! and the state of its renewal, HTTP-01 answers, and `_acme-challenge` TXT records in the zones
//! we serve. Keys are encrypted (see [`crate::crypto`]); nothing here returns key material except
//! [`Store::certificate_material`], which only the ACME side and the file writer call.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::models::{DnsRecordId, ExternalDomainId, SiteId};
use crate::Store;

const ACCOUNT_CONTEXT: &str = "acme_accounts.credentials";
const KEY_CONTEXT: &str = "certificates.private_key";

/// A domain's certificate as the API and CLI show it (never the key).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct CertificateInfo {
    /// The external domain.
    pub external_domain_id: ExternalDomainId,
    /// Its name.
    pub domain: String,
    /// Names the certificate covers (empty before the first issuance).
    pub names: Vec<String>,
    /// Issuer's distinguished name.
    pub issuer: Option<String>,
    /// Serial number, hex.
    pub serial: Option<String>,
    /// Start of validity.
    pub not_before: Option<DateTime<Utc>>,
    /// End of validity.
    pub not_after: Option<DateTime<Utc>>,
    /// When renewal is due.
    pub renew_at: Option<DateTime<Utc>>,
    /// The last order attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed, in the operator's terms (cleared on success).
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub failures: i32,
    /// No automatic attempt before this.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Orders placed at the CA so far.
    pub orders_placed: i64,
    /// Start of the renewal window the CA suggests (ACME Renewal Information, RFC 9773).
    pub ari_window_start: Option<DateTime<Utc>>,
    /// End of that window.
    pub ari_window_end: Option<DateTime<Utc>>,
    /// The CA's page explaining the window, when it gave one.
    pub ari_explanation: Option<String>,
    /// When the CA's renewal information is asked for next (none: at the next pass).
    pub ari_next_check_at: Option<DateTime<Utc>>,
}

/// A freshly issued certificate to keep.
#[derive(Clone, Default)]
pub struct IssuedCertificate {
    /// Names covered.
    pub names: Vec<String>,
    /// Issuer DN.
    pub issuer: String,
    /// Serial, hex.
    pub serial: String,
    /// Validity start.
    pub not_before: DateTime<Utc>,
    /// Validity end.
    pub not_after: DateTime<Utc>,
    /// Leaf first, then the chain, PEM.
    pub chain_pem: String,
    /// PKCS#8 private key, PEM (encrypted before it is stored).
    pub key_pem: String,
    /// When to renew.
    pub renew_at: DateTime<Utc>,
}

/// Everything but the private key.
impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("names", &self.names)
            .field("issuer", &self.issuer)
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("renew_at", &self.renew_at)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

const INFO_SELECT: &str = "SELECT d.id AS external_domain_id, d.domain,
        coalesce(c.names, '{}') AS names, c.issuer, c.serial, c.not_before, c.not_after,
        c.renew_at, c.last_attempt_at, c.last_error, coalesce(c.failures, 0) AS failures,
        c.next_attempt_at, coalesce(c.orders_placed, 0) AS orders_placed,
        c.ari_window_start, c.ari_window_end, c.ari_explanation, c.ari_next_check_at
   FROM external_domains d LEFT JOIN certificates c ON c.external_domain_id = d.id";

impl Store {
    /// The stored account for an ACME directory and contact e-mail (compared without case):
    /// (e-mail, credentials JSON).
    pub async fn acme_account(
        &self,
        directory: &str,
        email: Option<&str>,
    ) -> Result<Option<(Option<String>, String)>> {
        let row: Option<(Option<String>, Vec<u8>)> = sqlx::query_as(
            "SELECT email, credentials FROM acme_accounts
             WHERE directory = $1 AND coalesce(lower(email), '') = coalesce(lower($2), '')",
        )
        .bind(directory)
        .bind(email)
        .fetch_optional(self.pool())
        .await?;
        row.map(|(email, sealed)| {
            Ok((email, self.secrets().open_string(ACCOUNT_CONTEXT, &sealed)?))
        })
        .transpose()
    }

    /// Keeps an account's credentials (encrypted). A concurrent creation for the same directory
    /// and e-mail keeps the first one.
    pub async fn save_acme_account(
        &self,
        directory: &str,
        email: Option<&str>,
        credentials_json: &str,
    ) -> Result<()> {
        let sealed = self
            .secrets()
            .seal(ACCOUNT_CONTEXT, credentials_json.as_bytes())?;
        sqlx::query(
            "INSERT INTO acme_accounts (directory, email, credentials) VALUES ($1, $2, $3)
             ON CONFLICT (directory, (coalesce(lower(email), ''))) DO NOTHING",
        )
        .bind(directory)
        .bind(email)
        .bind(sealed)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every external domain with its certificate state.
    pub async fn certificates(&self) -> Result<Vec<CertificateInfo>> {
        Ok(sqlx::query_as(&format!("{INFO_SELECT} ORDER BY d.domain"))
            .fetch_all(self.pool())
            .await?)
    }

    /// One domain's certificate state.
    pub async fn certificate(&self, domain: ExternalDomainId) -> Result<CertificateInfo> {
        sqlx::query_as(&format!("{INFO_SELECT} WHERE d.id = $1"))
            .bind(domain)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound {
                entity: "external domain",
            })
    }

    /// The chain and decrypted key of a domain's certificate, if one was issued.
    pub async fn certificate_material(
        &self,
        domain: ExternalDomainId,
    ) -> Result<Option<(String, String)>> {
        let row: Option<(Option<String>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT chain_pem, private_key FROM certificates WHERE external_domain_id = $1",
        )
        .bind(domain)
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some((Some(chain), Some(sealed))) => Ok(Some((
                chain,
                self.secrets().open_string(KEY_CONTEXT, &sealed)?,
            ))),
            _ => Ok(None),
        }
    }

    /// Notes that an order is being placed now.
    pub async fn certificate_order_placed(
        &self,
        domain: ExternalDomainId,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO certificates (external_domain_id, last_attempt_at, orders_placed)
             VALUES ($1, $2, 1)
             ON CONFLICT (external_domain_id) DO UPDATE
             SET last_attempt_at = $2, orders_placed = certificates.orders_placed + 1",
        )
        .bind(domain)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Keeps a new certificate; clears the failure state.
    pub async fn save_certificate(
        &self,
        domain: ExternalDomainId,
        cert: &IssuedCertificate,
    ) -> Result<()> {
        let sealed = self.secrets().seal(KEY_CONTEXT, cert.key_pem.as_bytes())?;
        sqlx::query(
            "INSERT INTO certificates (external_domain_id, names, issuer, serial, not_before,
                 not_after, chain_pem, private_key, renew_at, failures, last_error, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, NULL, NULL)
             ON CONFLICT (external_domain_id) DO UPDATE SET names = $2, issuer = $3, serial = $4,
                 not_before = $5, not_after = $6, chain_pem = $7, private_key = $8, renew_at = $9,
                 failures = 0, last_error = NULL, next_attempt_at = NULL,
                 ari_window_start = NULL, ari_window_end = NULL, ari_explanation = NULL,
                 ari_next_check_at = NULL",
        )
        .bind(domain)
        .bind(&cert.names)
        .bind(&cert.issuer)
        .bind(&cert.serial)
        .bind(cert.not_before)
        .bind(cert.not_after)
        .bind(&cert.chain_pem)
        .bind(sealed)
        .bind(cert.renew_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records the renewal window the CA suggests for the certificate with `serial`, the renewal
    /// time chosen in it, and when to ask again. Does nothing when that certificate was replaced
    /// meanwhile (false).
    pub async fn certificate_renewal_window(
        &self,
        domain: ExternalDomainId,
        serial: &str,
        window: (DateTime<Utc>, DateTime<Utc>),
        explanation: Option<&str>,
        renew_at: DateTime<Utc>,
        next_check: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE certificates SET ari_window_start = $3, ari_window_end = $4,
                 ari_explanation = $5, renew_at = $6, ari_next_check_at = $7
             WHERE external_domain_id = $1 AND serial = $2",
        )
        .bind(domain)
        .bind(serial)
        .bind(window.0)
        .bind(window.1)
        .bind(explanation)
        .bind(renew_at)
        .bind(next_check)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Puts off the next renewal-information check of the certificate with `serial` (the CA has
    /// none, or asking failed), keeping what is known.
    pub async fn certificate_renewal_check_later(
        &self,
        domain: ExternalDomainId,
        serial: &str,
        next_check: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE certificates SET ari_next_check_at = $3
             WHERE external_domain_id = $1 AND serial = $2",
        )
        .bind(domain)
        .bind(serial)
        .bind(next_check)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a failed attempt and when the next automatic one may happen.
    pub async fn certificate_failed(
        &self,
        domain: ExternalDomainId,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO certificates (external_domain_id, last_error, failures, next_attempt_at)
             VALUES ($1, $2, 1, $3)
             ON CONFLICT (external_domain_id) DO UPDATE
             SET last_error = $2, failures = certificates.failures + 1, next_attempt_at = $3",
        )
        .bind(domain)
        .bind(error)
        .bind(next_attempt_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records that the issued certificate could not be installed (files or hook); unlike
    /// [`Store::certificate_failed`] this does not delay the next order, as none is needed.
    pub async fn certificate_install_failed(
        &self,
        domain: ExternalDomainId,
        error: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE certificates SET last_error = $2 WHERE external_domain_id = $1")
            .bind(domain)
            .bind(error)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Clears an installation error once the certificate is installed (an order's own failure,
    /// which counts in `failures`, stays).
    pub async fn certificate_installed(&self, domain: ExternalDomainId) -> Result<()> {
        sqlx::query(
            "UPDATE certificates SET last_error = NULL
             WHERE external_domain_id = $1 AND failures = 0",
        )
        .bind(domain)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Publishes an HTTP-01 answer; with `noted_for`, noted as that domain's published answer
    /// in the same transaction (as [`Store::put_challenge_txt`]). Returns the note.
    pub async fn put_http_challenge(
        &self,
        token: &str,
        key_authorization: &str,
        expires_at: DateTime<Utc>,
        noted_for: Option<ExternalDomainId>,
    ) -> Result<Option<i64>> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO acme_http_challenges (token, key_authorization, expires_at)
             VALUES ($1, $2, $3)
             ON CONFLICT (token) DO UPDATE SET key_authorization = $2, expires_at = $3",
        )
        .bind(token)
        .bind(key_authorization)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        let note = match noted_for {
            Some(domain) => Some(note(&mut *tx, domain, "http", token, None).await?),
            None => None,
        };
        tx.commit().await?;
        Ok(note)
    }

    /// The HTTP-01 answer for `token`, if live.
    pub async fn http_challenge(&self, token: &str, now: DateTime<Utc>) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT key_authorization FROM acme_http_challenges WHERE token = $1 AND expires_at > $2",
        )
        .bind(token)
        .bind(now)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Withdraws an HTTP-01 answer (and any expired ones).
    pub async fn delete_http_challenge(&self, token: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("DELETE FROM acme_http_challenges WHERE token = $1 OR expires_at <= $2")
            .bind(token)
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Adds an `_acme-challenge` TXT record to a zone we serve and makes DNS answer it at once.
    /// `name` is relative to the zone. With `noted_for`, the record is noted as that domain's
    /// published answer in the same transaction (see [`Store::challenge_published`]): a process
    /// killed right after cannot leave a record no later order knows of. Returns the record to
    /// delete afterwards and the note.
    pub async fn put_challenge_txt(
        &self,
        site: SiteId,
        name: &str,
        value: &str,
        noted_for: Option<ExternalDomainId>,
    ) -> Result<(DnsRecordId, Option<i64>)> {
        let quoted = format!("\"{value}\"");
        let mut tx = self.pool().begin().await?;
        let id: DnsRecordId = sqlx::query_scalar(
            "INSERT INTO dns_records (site_id, name, type, value, ttl) VALUES ($1, lower($2), 'TXT', $3, 60)
             ON CONFLICT (site_id, name, type, value) DO UPDATE SET ttl = 60 RETURNING id",
        )
        .bind(site)
        .bind(name)
        .bind(quoted)
        .fetch_one(&mut *tx)
        .await?;
        let note = match noted_for {
            Some(domain) => Some(note(&mut *tx, domain, "txt", &id.0.to_string(), None).await?),
            None => None,
        };
        tx.commit().await?;
        // The change feed patches the one record in; a full naming reload only when it is down.
        if let Err(e) = self.refresh(&["dns_records"]).await {
            // The caller gets no id to withdraw: take the record (and its note) back here.
            let undo = async {
                sqlx::query("DELETE FROM dns_records WHERE id = $1")
                    .bind(id)
                    .execute(self.pool())
                    .await?;
                if let Some(n) = note {
                    self.challenge_withdrawn(n).await?;
                }
                Ok::<_, StoreError>(())
            };
            if let Err(undo) = undo.await {
                tracing::warn!(error = %undo, "removing a challenge record after a failed reload failed");
            }
            return Err(e);
        }
        Ok((id, note))
    }

    /// Removes a challenge TXT record [`Store::put_challenge_txt`] added.
    pub async fn delete_challenge_txt(&self, id: DnsRecordId) -> Result<()> {
        sqlx::query("DELETE FROM dns_records WHERE id = $1 AND type = 'TXT'")
            .bind(id)
            .execute(self.pool())
            .await?;
        self.refresh(&["dns_records"]).await
    }

    /// Notes a challenge answer an order just published (see the `acme_published` table):
    /// `kind` is `txt`, `http`, `cloudflare` or `cloudflare-pending` (about to be asked for);
    /// `zone` is the Cloudflare zone id. Returns the
    /// note's id for [`Store::challenge_withdrawn`].
    pub async fn challenge_published(
        &self,
        domain: ExternalDomainId,
        kind: &str,
        reference: &str,
        zone: Option<&str>,
    ) -> Result<i64> {
        note(self.pool(), domain, kind, reference, zone).await
    }

    /// Turns a note into another (a `cloudflare-pending` note into `cloudflare` with the
    /// record's id once Cloudflare has answered).
    pub async fn challenge_renoted(&self, note: i64, kind: &str, reference: &str) -> Result<()> {
        sqlx::query("UPDATE acme_published SET kind = $2, reference = $3 WHERE id = $1")
            .bind(note)
            .bind(kind)
            .bind(reference)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets a published answer once it is withdrawn.
    pub async fn challenge_withdrawn(&self, note: i64) -> Result<()> {
        sqlx::query("DELETE FROM acme_published WHERE id = $1")
            .bind(note)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Answers published for a domain and never withdrawn (an order that did not finish):
    /// `(note id, kind, reference, zone)`, oldest first.
    pub async fn challenges_left(
        &self,
        domain: ExternalDomainId,
    ) -> Result<Vec<(i64, String, String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT id, kind, reference, zone FROM acme_published
             WHERE external_domain_id = $1 ORDER BY id",
        )
        .bind(domain)
        .fetch_all(self.pool())
        .await?)
    }

    /// Answers published for domains deleted since: `(note id, kind, reference, zone)`.
    pub async fn challenges_of_deleted_domains(
        &self,
    ) -> Result<Vec<(i64, String, String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT id, kind, reference, zone FROM acme_published
             WHERE external_domain_id IS NULL ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// How many `_acme-challenge` TXT records the zones hold (cleanup checks).
    pub async fn challenge_txt_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM dns_records WHERE type = 'TXT' AND (name = '_acme-challenge' OR name LIKE '_acme-challenge.%')",
        )
        .fetch_one(self.pool())
        .await?)
    }
}

/// Advisory-lock class for certificate orders, in the upper 32 bits of the lock's key.
const ORDER_LOCK_CLASS: i64 = 0x5357_4143; // "SWAC"

/// The one-argument (bigint) advisory lock key of a domain's orders: the class in the upper
/// half, the domain id in the lower. (Ids 2^32 apart would share a lock, which would only make
/// their orders take turns.)
fn order_lock_key(domain: ExternalDomainId) -> i64 {
    (ORDER_LOCK_CLASS << 32) | (domain.0 & 0xffff_ffff)
}

/// One external domain's certificate-order lock, held by this process on a connection of its
/// own until [`OrderLock::release`]. Across processes sharing the database only one holds it.
/// Dropped without a release, its connection is closed, which releases the lock too.
#[derive(Debug)]
pub struct OrderLock {
    conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
    key: i64,
}

impl OrderLock {
    /// Releases the lock; the connection goes back to the pool only when that worked.
    pub async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let done = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut *conn)
            .await;
        if let Err(e) = done {
            // The lock dies with the session: close it rather than return it to the pool.
            tracing::warn!(error = %e, "releasing the order lock failed; closing its connection");
            drop(conn.detach());
        }
    }
}

impl Drop for OrderLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl Store {
    /// Takes `domain`'s order lock if nobody holds it: `None` when another process or task
    /// does.
    pub async fn try_order_lock(&self, domain: ExternalDomainId) -> Result<Option<OrderLock>> {
        let mut conn = self.pool().acquire().await?;
        let key = order_lock_key(domain);
        match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await
        {
            Ok(true) => Ok(Some(OrderLock {
                conn: Some(conn),
                key,
            })),
            Ok(false) => Ok(None),
            Err(e) => {
                // Whether the lock was taken is unknown: the connection must not go back to the
                // pool holding it.
                drop(conn.detach());
                Err(e.into())
            }
        }
    }
}

/// Writes a note of a published challenge answer (see [`Store::challenge_published`]).
async fn note(
    db: impl sqlx::PgExecutor<'_>,
    domain: ExternalDomainId,
    kind: &str,
    reference: &str,
    zone: Option<&str>,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO acme_published (external_domain_id, kind, reference, zone)
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(domain)
    .bind(kind)
    .bind(reference)
    .bind(zone)
    .fetch_one(db)
    .await?)
}
