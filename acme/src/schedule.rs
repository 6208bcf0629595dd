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

/// Where in the renewal window a CA suggests (RFC 9773 §4.2) to renew: a uniformly random point
/// in it (`jitter` in 0..1), or `now` when that point has passed.
pub fn ari_renew_at(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
    jitter: f64,
) -> DateTime<Utc> {
    let span = (end - start).num_seconds().max(0);
    let at = start + Duration::seconds((span as f64 * jitter.clamp(0.0, 1.0)) as i64);
    at.max(now)
}

/// When to ask for renewal information again: after the CA's `Retry-After`, kept between a
/// minute and a day so that a CA can neither make us poll it hard nor forget a revocation.
pub fn ari_next_check(now: DateTime<Utc>, retry_after: std::time::Duration) -> DateTime<Utc> {
    let secs = i64::try_from(retry_after.as_secs()).unwrap_or(i64::MAX);
    now + Duration::seconds(secs.clamp(60, 86_400))
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
            ari_window_start: None,
            ari_window_end: None,
            ari_explanation: None,
            ari_next_check_at: None,
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

    #[test]
    fn renewal_information_picks_a_point_in_the_window() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let (start, end) = (t("2026-12-01T00:00:00Z"), t("2026-12-03T00:00:00Z"));
        let now = t("2026-11-22T00:00:00Z");
        assert_eq!(ari_renew_at(start, end, now, 0.0), start);
        assert_eq!(ari_renew_at(start, end, now, 1.0), end);
        assert_eq!(
            ari_renew_at(start, end, now, 0.5),
            t("2026-12-02T00:00:00Z")
        );
        // A window already open (a revocation is coming): now.
        let late = t("2026-12-02T12:00:00Z");
        assert_eq!(ari_renew_at(start, end, late, 0.1), late);
        let std = std::time::Duration::from_secs;
        assert_eq!(ari_next_check(now, std(0)), now + Duration::seconds(60));
        assert_eq!(ari_next_check(now, std(21_600)), now + Duration::hours(6));
        assert_eq!(
            ari_next_check(now, std(10_000_000)),
            now + Duration::days(1)
        );
    }
}
