//! How a domain proves control: DNS-01 in a zone siteward serves (the TXT record goes into the
//! store and DNS answers it at once), or HTTP-01 under `/.well-known/acme-challenge/` on the HTTP
//! listener (no wildcard possible). A domain with Cloudflare credentials uses DNS-01 through
//! Cloudflare's API ([`crate::cloudflare`]), confirmed at the zone's name servers first.

use instant_acme::{ChallengeType, KeyAuthorization};
use siteward_store::{DnsRecordId, ExternalDomain, ExternalDomainId, SiteId, Store};

use crate::cloudflare::{Auth, Cloudflare, Zone};
use crate::{Error, Settings};

/// The way one domain's challenges are answered.
#[derive(Debug, Clone)]
pub enum Solver {
    /// TXT records in the zone of a site.
    OwnDns {
        /// The site whose zone holds the name.
        site: SiteId,
        /// That zone.
        zone: String,
    },
    /// TXT records through Cloudflare's API.
    Cloudflare {
        /// The API client with the domain's credentials.
        client: Cloudflare,
        /// The zone holding the domain.
        zone: Zone,
    },
    /// HTTP-01 answered by siteward's HTTP listener.
    Http01,
}

/// Something published for a challenge, to withdraw afterwards.
#[derive(Debug, Clone)]
pub enum Published {
    /// A TXT record in one of our zones.
    Txt(DnsRecordId),
    /// An HTTP-01 token.
    Http(String),
    /// A Cloudflare record.
    Cloudflare(String),
    /// A Cloudflare record asked for whose answer (its id) was never seen: the TXT record's
    /// name and value.
    CloudflarePending {
        /// The record's name.
        name: String,
        /// Its TXT value (unquoted).
        value: String,
    },
}

impl Published {
    /// How it is noted in the store (`acme_published`): kind and reference.
    pub fn note(&self) -> (&'static str, String) {
        match self {
            Published::Txt(id) => ("txt", id.0.to_string()),
            Published::Http(token) => ("http", token.clone()),
            Published::Cloudflare(id) => ("cloudflare", id.clone()),
            Published::CloudflarePending { name, value } => {
                ("cloudflare-pending", format!("{name} {value}"))
            }
        }
    }

    /// The answer a store note names, when it can be read.
    pub fn from_note(kind: &str, reference: &str) -> Option<Self> {
        match kind {
            "txt" => reference
                .parse()
                .ok()
                .map(|id| Published::Txt(DnsRecordId(id))),
            "http" => Some(Published::Http(reference.to_owned())),
            "cloudflare" => Some(Published::Cloudflare(reference.to_owned())),
            "cloudflare-pending" => {
                reference
                    .split_once(' ')
                    .map(|(name, value)| Published::CloudflarePending {
                        name: name.to_owned(),
                        value: value.to_owned(),
                    })
            }
            _ => None,
        }
    }
}

/// The zone (a site's internal domain) that holds `name`, if we serve one.
pub fn own_zone(store: &Store, name: &str) -> Option<(SiteId, String)> {
    let snap = store.snapshot();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let mut candidate = name.as_str();
    loop {
        if let Some(site) = snap.naming.site_by_domain.get(candidate) {
            return Some((*site, candidate.to_owned()));
        }
        candidate = candidate.split_once('.')?.1;
    }
}

impl Solver {
    /// The solver for a domain: our own zone when we serve one above it, else Cloudflare when
    /// the domain has credentials, else HTTP-01.
    pub async fn for_domain(
        store: &Store,
        domain: &ExternalDomain,
        settings: &Settings,
    ) -> Result<Self, Error> {
        if let Some((site, zone)) = own_zone(store, &domain.domain) {
            return Ok(Solver::OwnDns { site, zone });
        }
        if domain.has_cloudflare_api_key {
            let key = store
                .cloudflare_api_key(domain.id)
                .await?
                .unwrap_or_default();
            let auth = match &domain.cloudflare_api_email {
                Some(email) => Auth::GlobalKey {
                    email: email.clone(),
                    key,
                },
                None => Auth::Token(key),
            };
            let client = Cloudflare::new(&settings.cloudflare_api, auth).map_err(Error::from)?;
            let zone = client
                .find_zone(&domain.domain)
                .await
                .map_err(Error::from)?;
            return Ok(Solver::Cloudflare { client, zone });
        }
        Ok(Solver::Http01)
    }

    /// The names to order: the domain and its wildcard, or only the domain for HTTP-01.
    pub fn names(&self, domain: &str) -> Vec<String> {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        match self {
            Solver::Http01 => vec![d],
            _ => vec![d.clone(), format!("*.{d}")],
        }
    }

    /// For progress messages.
    pub fn describe(&self) -> String {
        match self {
            Solver::OwnDns { zone, .. } => format!("DNS-01 in our zone {zone}"),
            Solver::Cloudflare { zone, .. } => {
                format!("DNS-01 in the Cloudflare zone {}", zone.name)
            }
            Solver::Http01 => "HTTP-01 on our HTTP listener".into(),
        }
    }

    /// The ACME challenge type used.
    pub fn challenge_type(&self) -> ChallengeType {
        match self {
            Solver::Http01 => ChallengeType::Http01,
            _ => ChallengeType::Dns01,
        }
    }

    /// Publishes the answer to one challenge and notes it as `domain`'s (see
    /// `Store::challenge_published`): the answer and its note. Our own TXT records and HTTP-01
    /// answers are written with their note in one transaction. A Cloudflare record is noted
    /// before it is asked for (by name and value: nothing is created that no note names, even
    /// when the process dies waiting for Cloudflare's answer), and the note is given the
    /// record's id once it is made.
    pub async fn publish(
        &self,
        store: &Store,
        domain: ExternalDomainId,
        identifier: &str,
        token: &str,
        key_auth: &KeyAuthorization,
    ) -> Result<(Published, Option<i64>), Error> {
        match self {
            Solver::OwnDns { site, zone } => {
                let base = identifier.trim_start_matches("*.").to_ascii_lowercase();
                let relative = match base.strip_suffix(zone.as_str()) {
                    Some("") => "_acme-challenge".to_owned(),
                    Some(rest) => format!("_acme-challenge.{}", rest.trim_end_matches('.')),
                    None => {
                        return Err(Error::Challenge(format!(
                            "{base} is not in the zone {zone}"
                        )))
                    }
                };
                let (id, note) = store
                    .put_challenge_txt(*site, &relative, &key_auth.dns_value(), Some(domain))
                    .await?;
                Ok((Published::Txt(id), note))
            }
            Solver::Cloudflare { client, zone } => {
                let name = format!("_acme-challenge.{}", identifier.trim_start_matches("*."));
                let value = key_auth.dns_value();
                let (kind, intent) = Published::CloudflarePending {
                    name: name.clone(),
                    value: value.clone(),
                }
                .note();
                let note = store
                    .challenge_published(domain, kind, &intent, Some(zone.id.as_str()))
                    .await?;
                // A create refused outright made nothing, and its note goes. Any other failure
                // leaves the pending note: the record may exist all the same (an answer lost on
                // the way), and the domain's next order looks for it.
                let id = match client.create_txt(zone, &name, &value).await {
                    Ok(id) => id,
                    Err(e) => {
                        use crate::cloudflare::CloudflareError as E;
                        let refused = match &e {
                            E::Auth { .. } | E::RateLimited { .. } => true,
                            E::Api {
                                status, numbers, ..
                            } => {
                                *status < 500 && !numbers.iter().any(|c| [81057, 81058].contains(c))
                            }
                            _ => false,
                        };
                        if refused {
                            if let Err(e) = store.challenge_withdrawn(note).await {
                                tracing::warn!(error = %e, "forgetting a refused record's note failed");
                            }
                        }
                        return Err(Error::from(e));
                    }
                };
                if let Err(e) = store.challenge_renoted(note, "cloudflare", &id).await {
                    // Still noted by name and value, which is enough to find it again.
                    tracing::warn!(error = %e, "noting a Cloudflare record's id failed");
                }
                Ok((Published::Cloudflare(id), Some(note)))
            }
            Solver::Http01 => {
                let expires = chrono::Utc::now() + chrono::Duration::hours(1);
                let note = store
                    .put_http_challenge(token, key_auth.as_str(), expires, Some(domain))
                    .await?;
                Ok((Published::Http(token.to_owned()), note))
            }
        }
    }

    /// The Cloudflare zone id records are made in, for the store's note.
    pub fn zone_id(&self) -> Option<&str> {
        match self {
            Solver::Cloudflare { zone, .. } => Some(zone.id.as_str()),
            _ => None,
        }
    }

    /// Withdraws what [`Solver::publish`] published. A record that is already gone counts as
    /// withdrawn.
    pub async fn withdraw(&self, store: &Store, p: Published) -> Result<(), Error> {
        match p {
            Published::Cloudflare(id) => {
                if let Solver::Cloudflare { client, zone } = self {
                    match client.delete_record(zone, &id).await {
                        Ok(()) => {}
                        Err(crate::cloudflare::CloudflareError::Api { numbers, .. })
                            if numbers.contains(&81044) => {}
                        Err(e) => return Err(Error::from(e)),
                    }
                }
            }
            Published::CloudflarePending { name, value } => {
                if let Solver::Cloudflare { client, zone } = self {
                    client
                        .delete_txt(zone, &name, &value)
                        .await
                        .map_err(Error::from)?;
                }
            }
            Published::Txt(id) => store.delete_challenge_txt(id).await?,
            Published::Http(token) => {
                store
                    .delete_http_challenge(&token, chrono::Utc::now())
                    .await?
            }
        }
        Ok(())
    }
}
