//! DNS metrics: responses by transport and rcode, answering latency, zone rebuilds, forwarding.
//! Counter handles are resolved once, so the hot path does only atomic increments.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::Transport;

type Labels = Vec<(&'static str, String)>;

/// The DNS server's metrics (cheap to clone: handles to shared atomics).
#[derive(Clone, Debug)]
pub struct Metrics {
    responses: [Vec<Counter>; 2],
    /// Queries dropped without a response.
    pub dropped: Counter,
    /// Time to answer one query (engine only, no socket time), seconds, one histogram per worker
    /// (a histogram takes a lock per observation: one each keeps workers from contending).
    latency: Family<Labels, Histogram>,
    /// Zone index rebuilds.
    pub rebuilds: Counter,
    /// Number of zones served.
    pub zones: Gauge,
    /// Zones patched name by name from a snapshot delta.
    pub zones_patched: Counter,
    /// Zones built whole.
    pub zones_built: Counter,
    /// Time to bring the zone index to a new snapshot, seconds.
    pub apply_seconds: Histogram,
    /// Forwarded queries answered from the cache.
    pub cache_hits: Counter,
    /// Forwarded queries sent upstream.
    pub forwarded: Counter,
    /// Queries not forwarded because a bound on queries in flight was reached.
    pub forward_dropped: Counter,
    /// Datagrams (or TCP messages) from upstream that did not answer the query sent: wrong
    /// source, id or question.
    pub forward_mismatched: Counter,
    /// Forwarded queries in flight.
    pub forward_inflight: Gauge,
    /// Idle TCP connections closed at the connection cap to make room for a new one.
    pub tcp_evicted: Counter,
    /// TCP connections closed at once because the cap was reached and every connection was busy.
    pub tcp_refused: Counter,
}

const RCODES: [&str; 17] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "RCODE11", "RCODE12", "RCODE13", "RCODE14", "RCODE15",
    "BADVERS",
];

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        registry.register_collector(Box::new(Responses {
            counters: m.responses.clone(),
        }));
        registry.register(
            "siteward_dns_dropped",
            "DNS messages dropped without a response",
            m.dropped.clone(),
        );
        registry.register(
            "siteward_dns_answer_duration_seconds",
            "Time to answer one DNS query, socket time excluded",
            m.latency.clone(),
        );
        registry.register(
            "siteward_dns_zone_rebuilds",
            "Zone index rebuilds after snapshot changes",
            m.rebuilds.clone(),
        );
        registry.register("siteward_dns_zones", "Zones served", m.zones.clone());
        registry.register(
            "siteward_dns_zones_patched",
            "Zones patched name by name from a snapshot delta",
            m.zones_patched.clone(),
        );
        registry.register(
            "siteward_dns_zones_built",
            "Zones built whole",
            m.zones_built.clone(),
        );
        registry.register(
            "siteward_dns_zone_apply_duration_seconds",
            "Time to bring the zone index to a new snapshot",
            m.apply_seconds.clone(),
        );
        registry.register(
            "siteward_dns_forward_cache_hits",
            "Forwarded queries answered from the cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "siteward_dns_forwarded",
            "Queries forwarded upstream",
            m.forwarded.clone(),
        );
        registry.register(
            "siteward_dns_forward_dropped",
            "Queries not forwarded because a bound on queries in flight was reached",
            m.forward_dropped.clone(),
        );
        registry.register(
            "siteward_dns_forward_mismatched",
            "Upstream messages ignored: wrong source, id or question",
            m.forward_mismatched.clone(),
        );
        registry.register(
            "siteward_dns_forward_inflight",
            "Forwarded queries in flight",
            m.forward_inflight.clone(),
        );
        registry.register(
            "siteward_dns_tcp_evicted_connections",
            "Idle TCP connections closed at the connection cap to make room for a new client",
            m.tcp_evicted.clone(),
        );
        registry.register(
            "siteward_dns_tcp_refused_connections",
            "TCP connections closed at once: at the cap, every connection busy",
            m.tcp_refused.clone(),
        );
        m
    }

    /// Metrics not registered anywhere (tests).
    pub fn unregistered() -> Self {
        let make = || (0..RCODES.len()).map(|_| Counter::default()).collect();
        Self {
            responses: [make(), make()],
            dropped: Counter::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(
                    [
                        0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1,
                        0.000_5, 0.001, 0.01,
                    ]
                    .into_iter(),
                )
            }),
            rebuilds: Counter::default(),
            zones: Gauge::default(),
            zones_patched: Counter::default(),
            zones_built: Counter::default(),
            apply_seconds: Histogram::new(
                [
                    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5,
                ]
                .into_iter(),
            ),
            cache_hits: Counter::default(),
            forwarded: Counter::default(),
            forward_dropped: Counter::default(),
            forward_mismatched: Counter::default(),
            forward_inflight: Gauge::default(),
            tcp_evicted: Counter::default(),
            tcp_refused: Counter::default(),
        }
    }

    /// The latency histogram of one worker (`udp-0`, `tcp`, ...).
    pub fn latency(&self, worker: &str) -> Histogram {
        self.latency
            .get_or_create(&vec![("worker", worker.to_owned())])
            .clone()
    }

    /// Counts a response by its rcode (read from the header and OPT-less extended code).
    pub fn response(&self, transport: Transport, response: &[u8]) {
        let t = match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
        };
        let code = response.get(3).map_or(0, |b| usize::from(b & 0xF));
        if let Some(c) = self.responses.get(t).and_then(|v| v.get(code)) {
            c.inc();
        }
    }

    /// Total responses counted (tests).
    pub fn total_responses(&self) -> u64 {
        self.responses.iter().flatten().map(Counter::get).sum()
    }
}

/// The `siteward_dns_responses` family, exposed as a collector so that the hot path holds plain
/// pre-resolved `Counter`s instead of looking labels up in a `Family`.
#[derive(Debug)]
struct Responses {
    counters: [Vec<Counter>; 2],
}

impl prometheus_client::collector::Collector for Responses {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let mut metric_encoder = encoder.encode_descriptor(
            "siteward_dns_responses",
            "DNS responses by transport and rcode",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (t, counters) in ["udp", "tcp"].iter().zip(self.counters.iter()) {
            for (code, c) in RCODES.iter().zip(counters) {
                let labels: Labels = vec![
                    ("transport", (*t).to_owned()),
                    ("rcode", (*code).to_owned()),
                ];
                c.encode(metric_encoder.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
