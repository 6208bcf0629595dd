//! When to renew, and how long to wait after a failure. Pure functions of the time they are
//! given, so tests choose the clock.

use chrono::{DateTime, Duration, Utc};
use siteward_store::acme::CertificateInfo;

/// Two thirds into the lifetime, moved earlier by up to 1/30 of it (`jitter` in 0..1) so that
/// many certificates issued together do not renew together.
pub fn renew_at(not_before: DateTime<Utc>, not_after: DateTime<Utc>, jitter: f64) -> DateTime<Utc> {
    let lifetime = (not_after - not_before).num_seconds().max(0);
    let spread = (lifetime as f64 / 30.0 * jitter.clamp(0.0, 1.0)) as i64;
    not_before + Duration::seconds(lifetime * 2 / 3 - spread)
}

/// Whether a domain needs an order at `now`: never issued, or past its renewal time, and not
/// waiting out a backoff.
pub fn due(info: &CertificateInfo, now: DateTime<Utc>) -> bool {
    let needs = match (info.not_after, info.renew_at) {
        (None, _) | (_, None) => true,
        (Some(_), Some(at)) => at <= now,
    };
    needs && info.next_attempt_at.is_none_or(|n| n <= now)
}

/// The wait after the `failures`-th consecutive failure (0 for the first): 5 minutes doubling
/// up to a day, plus up to 10% (`jitter` in 0..1).
pub fn backoff(failures: i32, jitter: f64) -> Duration {
    let base = 300i64
        .saturating_mul(1i64 << failures.clamp(0, 20))
        .min(86_400);
    Duration::seconds(base + (base as f64 * 0.1 * jitter.clamp(0.0, 1.0)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use siteward_store::ExternalDomainId;

    fn info(
        not_after: Option<DateTime<Utc>>,
        renew_at: Option<DateTime<Utc>>,
        next: Option<DateTime<Utc>>,
    ) -> CertificateInfo {
        CertificateInfo {
            external_domain_id: ExternalDomainId(1),
            domain: "example.org".into(),
            names: vec![],
            issuer: None,
            serial: None,
            not_before: None,
            not_after,
            renew_at,
            last_attempt_at: None,
            last_error: None,
            failures: 0,
            next_attempt_at: next,
            orders_placed: 0,
        }
    }

    #[test]
    fn renewal_at_two_thirds_with_bounded_jitter() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let t90 = t0 + Duration::days(90);
        assert_eq!(renew_at(t0, t90, 0.0), t0 + Duration::days(60));
        let early = renew_at(t0, t90, 1.0);
        assert_eq!(early, t0 + Duration::days(57));
        assert!(renew_at(t0, t90, 0.5) < t0 + Duration::days(60));
    }

    #[test]
    fn due_only_when_renewal_time_passed_and_no_backoff() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let after = Some(t0 + Duration::days(90));
        let renew = Some(t0 + Duration::days(60));
        assert!(due(&info(None, None, None), t0), "never issued");
        assert!(!due(&info(after, renew, None), t0 + Duration::days(59)));
        assert!(due(&info(after, renew, None), t0 + Duration::days(60)));
        let waiting = info(after, renew, Some(t0 + Duration::days(61)));
        assert!(!due(&waiting, t0 + Duration::days(60)));
        assert!(due(&waiting, t0 + Duration::days(61)));
    }

    #[test]
    fn backoff_doubles_to_a_day() {
        assert_eq!(backoff(0, 0.0), Duration::minutes(5));
        assert_eq!(backoff(1, 0.0), Duration::minutes(10));
        assert_eq!(backoff(3, 0.0), Duration::minutes(40));
        assert_eq!(backoff(30, 0.0), Duration::days(1));
        assert_eq!(backoff(0, 1.0), Duration::seconds(330));
        assert_eq!(backoff(-4, 0.0), Duration::minutes(5));
    }
}
