//! DNS-01 through Cloudflare's API v4: find the zone by walking up the name, create the
//! `_acme-challenge` TXT record, delete exactly the records created. Both credential styles: an
//! API token (`Authorization: Bearer`) and the account e-mail with the global API key
//! (`X-Auth-Email`, `X-Auth-Key`). Errors name Cloudflare's status and error codes.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// Cloudflare's API root.
pub const API: &str = "https://api.cloudflare.com/client/v4";

/// How to authenticate.
#[derive(Clone)]
pub enum Auth {
    /// An API token with Zone:Read and DNS:Edit.
    Token(String),
    /// The account e-mail and the global API key.
    GlobalKey {
        /// Account e-mail.
        email: String,
        /// Global API key.
        key: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(..)"),
            Auth::GlobalKey { email, .. } => write!(f, "GlobalKey({email}, ..)"),
        }
    }
}

/// A failure, in the operator's terms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudflareError {
    /// Credentials refused.
    #[error("Cloudflare authentication failed (HTTP {status}{codes})")]
    Auth {
        /// HTTP status.
        status: u16,
        /// `: code 9109: Invalid access token` etc.
        codes: String,
    },
    /// 429.
    #[error("rate limited by Cloudflare until {until}")]
    RateLimited {
        /// When to try again.
        until: chrono::DateTime<chrono::Utc>,
    },
    /// Any other API error.
    #[error("Cloudflare refused {what} (HTTP {status}{codes})")]
    Api {
        /// What was attempted.
        what: String,
        /// HTTP status.
        status: u16,
        /// Error codes and messages.
        codes: String,
        /// The codes alone.
        numbers: Vec<i64>,
    },
    /// No zone above the name.
    #[error("no active Cloudflare zone holds {0}")]
    NoZone(String),
    /// The network or a malformed answer.
    #[error("Cloudflare could not be reached for {what}: {detail}")]
    Transport {
        /// What was attempted.
        what: String,
        /// Why.
        detail: String,
    },
}

/// A zone.
#[derive(Debug, Clone, Deserialize)]
pub struct Zone {
    /// Zone id.
    pub id: String,
    /// Zone name.
    pub name: String,
    /// Its authoritative name servers.
    #[serde(default)]
    pub name_servers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    #[serde(default)]
    result: Value,
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3); `None` when it is neither.
fn retry_after(
    v: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u32>() {
        return Some(now + chrono::Duration::seconds(i64::from(secs)));
    }
    chrono::DateTime::parse_from_rfc2822(v)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc).max(now))
}

/// Codes Cloudflare uses for refused credentials.
const AUTH_CODES: &[i64] = &[6003, 6111, 9103, 9106, 9107, 9109, 10000, 10001];

/// A Cloudflare API client.
#[derive(Debug, Clone)]
pub struct Cloudflare {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

impl Cloudflare {
    /// A client for `base` (normally [`API`]).
    pub fn new(base: &str, auth: Auth) -> Result<Self, CloudflareError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CloudflareError::Transport {
                what: "the HTTP client".into(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            auth,
        })
    }

    /// One API call. Reads and deletes are retried (three attempts) after a network error, a
    /// 5xx, or a 429 asking for at most 30 s; a create is sent once, since a retry after a lost
    /// answer would make a second record (see [`Cloudflare::create_txt`]).
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, CloudflareError> {
        let retries = method != reqwest::Method::POST;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .query(query);
            req = match &self.auth {
                Auth::Token(t) => req.bearer_auth(t),
                Auth::GlobalKey { email, key } => {
                    req.header("X-Auth-Email", email).header("X-Auth-Key", key)
                }
            };
            if let Some(b) = &body {
                req = req.json(b);
            }
            let transport = |e: reqwest::Error| CloudflareError::Transport {
                what: what.to_owned(),
                detail: e.to_string(),
            };
            let res = match req.send().await {
                Ok(r) => r,
                Err(e) if retries && attempt < 3 => {
                    tracing::debug!(error = %e, "Cloudflare request failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    continue;
                }
                Err(e) => return Err(transport(e)),
            };
            let status = res.status().as_u16();
            if status == 429 {
                let until = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, chrono::Utc::now()))
                    .unwrap_or_else(|| chrono::Utc::now() + chrono::Duration::seconds(60));
                let wait = (until - chrono::Utc::now()).to_std().unwrap_or_default();
                if retries && attempt < 3 && wait <= Duration::from_secs(30) {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(CloudflareError::RateLimited { until });
            }
            if status >= 500 && retries && attempt < 3 {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                continue;
            }
            let text = res.text().await.map_err(transport)?;
            let env: Envelope =
                serde_json::from_str(&text).map_err(|e| CloudflareError::Transport {
                    what: what.to_owned(),
                    detail: format!("not a Cloudflare answer (HTTP {status}): {e}"),
                })?;
            if env.success && (200..300).contains(&status) {
                return Ok(env.result);
            }
            let codes: String = env
                .errors
                .iter()
                .map(|e| format!(": code {}: {}", e.code, e.message))
                .collect();
            if status == 401
                || status == 403
                || env.errors.iter().any(|e| AUTH_CODES.contains(&e.code))
            {
                return Err(CloudflareError::Auth { status, codes });
            }
            return Err(CloudflareError::Api {
                what: what.to_owned(),
                status,
                codes,
                numbers: env.errors.iter().map(|e| e.code).collect(),
            });
        }
    }

    /// The active zone holding `name`: `a.b.example.org`, then `b.example.org`, `example.org`.
    pub async fn find_zone(&self, name: &str) -> Result<Zone, CloudflareError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut candidate = name.as_str();
        while candidate.contains('.') {
            let found = self
                .call(
                    &format!("looking up the zone {candidate}"),
                    reqwest::Method::GET,
                    "/zones",
                    &[("name", candidate), ("status", "active")],
                    None,
                )
                .await?;
            let zones: Vec<Zone> =
                serde_json::from_value(found).map_err(|e| CloudflareError::Transport {
                    what: "the zone list".into(),
                    detail: e.to_string(),
                })?;
            if let Some(zone) = zones
                .into_iter()
                .find(|z| z.name.eq_ignore_ascii_case(candidate))
            {
                return Ok(zone);
            }
            candidate = match candidate.split_once('.') {
                Some((_, rest)) => rest,
                None => break,
            };
        }
        Err(CloudflareError::NoZone(name))
    }

    /// Creates a TXT record (content quoted, TTL 60) and returns its id. When the answer is
    /// lost (network, 5xx) or Cloudflare says an identical record exists (81057/81058: a
    /// leftover of an interrupted order with the same token), the record that holds exactly
    /// this content is looked up and adopted, so it is deleted afterwards like any other.
    pub async fn create_txt(
        &self,
        zone: &Zone,
        name: &str,
        value: &str,
    ) -> Result<String, CloudflareError> {
        let content = format!("\"{value}\"");
        let created = self
            .call(
                &format!("creating the TXT record {name}"),
                reqwest::Method::POST,
                &format!("/zones/{}/dns_records", zone.id),
                &[],
                Some(json!({
                    "type": "TXT",
                    "name": name,
                    "content": content,
                    "ttl": 60,
                    "comment": "siteward ACME challenge"
                })),
            )
            .await;
        let created = match created {
            Ok(v) => v,
            Err(e) => {
                let unknown = match &e {
                    CloudflareError::Transport { .. } => true,
                    CloudflareError::Api {
                        status, numbers, ..
                    } => *status >= 500 || numbers.iter().any(|c| [81057, 81058].contains(c)),
                    _ => false,
                };
                if unknown {
                    // A record just made may take a moment to be listed.
                    for attempt in 0..3u64 {
                        if attempt > 0 {
                            tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                        }
                        match self.find_txt(zone, name, &content).await {
                            Ok(Some(id)) => {
                                tracing::info!(%name, "adopted the identical TXT record already there");
                                return Ok(id);
                            }
                            Ok(None) => {}
                            // The create's own failure is what the operator needs to see.
                            Err(lookup) => {
                                tracing::debug!(error = %lookup, "looking for the record failed");
                                break;
                            }
                        }
                    }
                }
                return Err(e);
            }
        };
        created["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| CloudflareError::Transport {
                what: format!("creating the TXT record {name}"),
                detail: "the answer carries no record id".into(),
            })
    }

    /// The id of the TXT record at `name` with exactly `content`, if there is one.
    async fn find_txt(
        &self,
        zone: &Zone,
        name: &str,
        content: &str,
    ) -> Result<Option<String>, CloudflareError> {
        let found = self
            .call(
                &format!("looking up the TXT record {name}"),
                reqwest::Method::GET,
                &format!("/zones/{}/dns_records", zone.id),
                &[("type", "TXT"), ("name", name), ("content", content)],
                None,
            )
            .await?;
        Ok(found
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["content"].as_str() == Some(content))
            .and_then(|r| r["id"].as_str())
            .map(str::to_owned))
    }

    /// Deletes the TXT record `name` holding `value` (as [`Cloudflare::create_txt`] made it),
    /// if there is one: for a create whose answer never arrived. `Ok(false)` when none is there.
    pub async fn delete_txt(
        &self,
        zone: &Zone,
        name: &str,
        value: &str,
    ) -> Result<bool, CloudflareError> {
        match self.find_txt(zone, name, &format!("\"{value}\"")).await? {
            Some(id) => match self.delete_record(zone, &id).await {
                Ok(()) => Ok(true),
                Err(CloudflareError::Api { numbers, .. }) if numbers.contains(&81044) => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }

    /// Deletes one record.
    pub async fn delete_record(&self, zone: &Zone, id: &str) -> Result<(), CloudflareError> {
        self.call(
            &format!("deleting the record {id}"),
            reqwest::Method::DELETE,
            &format!("/zones/{}/dns_records/{id}", zone.id),
            &[],
            None,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_both_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        assert_eq!(
            retry_after("120", now),
            Some(now + chrono::Duration::seconds(120))
        );
        assert_eq!(
            retry_after("Sun, 22 Nov 2026 10:05:00 GMT", now),
            Some(now + chrono::Duration::minutes(5))
        );
        // A date in the past means now, not a time gone by.
        assert_eq!(retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now), Some(now));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }
}
