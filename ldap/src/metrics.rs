//! Prometheus metrics of the LDAP server: requests by operation and result code, latency by
//! operation, open connections, connections refused at the cap, and binds refused by the
//! failed-bind limits.

use std::time::Duration;

use ldap3_proto::proto::{LdapOp, LdapResultCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::session::Reply;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

/// LDAP metrics (cheap to clone; clones share the values).
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<OpLabels, Histogram>,
    /// Connections being served.
    pub(crate) connections: Gauge,
    /// Connections refused because the cap was reached and every connection was busy.
    pub(crate) refused: Counter,
    /// Idle connections closed at the cap to make room for a new one.
    pub(crate) evicted: Counter,
    /// Binds refused without verifying, by the limit that refused them.
    throttled: Family<ScopeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(
                    [
                        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                        0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                    ]
                    .into_iter(),
                )
            }),
            connections: Gauge::default(),
            refused: Counter::default(),
            evicted: Counter::default(),
            throttled: Family::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "siteward_ldap_requests",
            "LDAP requests by operation and result code",
            m.requests.clone(),
        );
        registry.register(
            "siteward_ldap_request_duration_seconds",
            "LDAP request latency by operation",
            m.latency.clone(),
        );
        registry.register(
            "siteward_ldap_connections",
            "LDAP connections open",
            m.connections.clone(),
        );
        registry.register(
            "siteward_ldap_refused_connections",
            "LDAP connections refused at the connection cap (every connection busy)",
            m.refused.clone(),
        );
        registry.register(
            "siteward_ldap_evicted_connections",
            "Idle LDAP connections closed at the connection cap to make room for a new client",
            m.evicted.clone(),
        );
        registry.register(
            "siteward_ldap_binds_throttled",
            "LDAP binds refused without verifying by the failed-bind limit of an account or address",
            m.throttled.clone(),
        );
        m
    }

    pub(crate) fn throttled(&self, scope: crate::throttle::Scope) {
        self.throttled
            .get_or_create(&ScopeLabels {
                scope: scope.label(),
            })
            .inc();
    }

    pub(crate) fn observe(&self, op: &str, reply: &Reply, elapsed: Duration) {
        let code = reply
            .msgs
            .last()
            .and_then(|m| code_of(&m.op))
            .map(|c| format!("{c:?}").to_ascii_lowercase())
            .unwrap_or_else(|| "none".into());
        self.requests
            .get_or_create(&RequestLabels {
                op: op.to_owned(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&OpLabels { op: op.to_owned() })
            .observe(elapsed.as_secs_f64());
    }
}

fn code_of(op: &LdapOp) -> Option<&LdapResultCode> {
    Some(match op {
        LdapOp::BindResponse(r) => &r.res.code,
        LdapOp::SearchResultDone(r)
        | LdapOp::ModifyResponse(r)
        | LdapOp::AddResponse(r)
        | LdapOp::DelResponse(r)
        | LdapOp::ModifyDNResponse(r)
        | LdapOp::CompareResult(r) => &r.code,
        LdapOp::ExtendedResponse(r) => &r.res.code,
        _ => return None,
    })
}
