//! Metrics: the HTTP request counters and latency histogram, plus values read at scrape time
//! (process, database pool, snapshot). Each protocol crate registers its own metrics in the
//! shared registry the binary builds.

use std::fmt::Write;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::AdminState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// HTTP request metrics.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    /// `/auth/verify`'s series, resolved once: it counts itself per request (see
    /// [`HttpMetrics::verified`]).
    verify: std::sync::Arc<VerifySeries>,
}

#[derive(Debug)]
struct VerifySeries {
    /// GET /auth/verify answered 200, 401, 403.
    answers: [Counter; 3],
    latency: Histogram,
}

const VERIFY_ROUTE: &str = "/auth/verify";

/// Latency buckets in seconds, 50 µs to 10 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 10.0,
    ]
    .into_iter()
}

impl HttpMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "siteward_http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "siteward_http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        let answer = |status| {
            requests
                .get_or_create(&RequestLabels {
                    method: "GET".into(),
                    route: VERIFY_ROUTE.into(),
                    status,
                })
                .clone()
        };
        let verify = std::sync::Arc::new(VerifySeries {
            answers: [answer(200), answer(401), answer(403)],
            latency: latency
                .get_or_create(&RouteLabels {
                    route: VERIFY_ROUTE.into(),
                })
                .clone(),
        });
        Self {
            requests,
            latency,
            verify,
        }
    }

    /// Counts one `GET /auth/verify` that answered `status`, started at `started`.
    pub(crate) fn verified(&self, status: axum::http::StatusCode, started: Instant) {
        match status.as_u16() {
            200 => {
                self.verify.answers[0].inc();
            }
            401 => {
                self.verify.answers[1].inc();
            }
            403 => {
                self.verify.answers[2].inc();
            }
            other => {
                self.requests
                    .get_or_create(&RequestLabels {
                        method: "GET".into(),
                        route: VERIFY_ROUTE.into(),
                        status: other,
                    })
                    .inc();
            }
        };
        self.verify.latency.observe(started.elapsed().as_secs_f64());
    }
}

pub(crate) async fn track(
    State(metrics): State<HttpMetrics>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(req).await;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Process figures from `/proc/self`.
fn process_lines(out: &mut String) -> std::fmt::Result {
    let ticks = 100.0; // USER_HZ on Linux
    let page = 4096.0;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesized command name.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // utime = field 14, stime = 15, starttime = 22, rss = 24 (1-based); rest starts at 3.
            let cpu = (num(11) + num(12)) / ticks;
            writeln!(out, "# TYPE process_cpu_seconds counter")?;
            writeln!(
                out,
                "# HELP process_cpu_seconds Total user and system CPU time."
            )?;
            writeln!(out, "process_cpu_seconds_total {cpu}")?;
            writeln!(out, "# TYPE process_resident_memory_bytes gauge")?;
            writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size."
            )?;
            writeln!(out, "process_resident_memory_bytes {}", num(21) * page)?;
            if let Some(boot) = boot_time() {
                writeln!(out, "# TYPE process_start_time_seconds gauge")?;
                writeln!(
                    out,
                    "# HELP process_start_time_seconds Start time since the epoch."
                )?;
                writeln!(out, "process_start_time_seconds {}", boot + num(19) / ticks)?;
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        writeln!(out, "# TYPE process_open_fds gauge")?;
        writeln!(out, "# HELP process_open_fds Open file descriptors.")?;
        writeln!(out, "process_open_fds {}", fds.count())?;
    }
    Ok(())
}

fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The full OpenMetrics exposition.
pub(crate) fn render(state: &AdminState) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(4096);
    process_lines(&mut out)?;
    let (size, idle) = state.store.pool_connections();
    writeln!(out, "# TYPE siteward_db_pool_connections gauge")?;
    writeln!(
        out,
        "# HELP siteward_db_pool_connections Database pool connections by state."
    )?;
    writeln!(out, "siteward_db_pool_connections{{state=\"idle\"}} {idle}")?;
    writeln!(
        out,
        "siteward_db_pool_connections{{state=\"in_use\"}} {}",
        size.saturating_sub(idle)
    )?;
    writeln!(out, "# TYPE siteward_http_event_streams gauge")?;
    writeln!(
        out,
        "# HELP siteward_http_event_streams Job event streams open now."
    )?;
    writeln!(out, "siteward_http_event_streams {}", state.streams.total())?;
    let snap = state.store.snapshot();
    writeln!(out, "# TYPE siteward_snapshot_age_seconds gauge")?;
    writeln!(
        out,
        "# HELP siteward_snapshot_age_seconds Seconds since the live snapshot was last rebuilt."
    )?;
    writeln!(
        out,
        "siteward_snapshot_age_seconds {}",
        snap.loaded_at.elapsed().as_secs_f64()
    )?;
    writeln!(out, "# TYPE siteward_snapshot_reloads counter")?;
    writeln!(
        out,
        "# HELP siteward_snapshot_reloads Snapshot rebuilds since start."
    )?;
    writeln!(
        out,
        "siteward_snapshot_reloads_total {}",
        state.store.reload_count()
    )?;
    writeln!(out, "# TYPE siteward_snapshot_ready gauge")?;
    writeln!(
        out,
        "# HELP siteward_snapshot_ready 1 when the change feed keeps the snapshot current."
    )?;
    writeln!(
        out,
        "siteward_snapshot_ready {}",
        u8::from(state.store.feed_status().ready)
    )?;
    writeln!(out, "# TYPE siteward_directory_entries gauge")?;
    writeln!(
        out,
        "# HELP siteward_directory_entries Users and groups in the snapshot."
    )?;
    writeln!(
        out,
        "siteward_directory_entries{{kind=\"user\"}} {}",
        snap.identity.users.len()
    )?;
    writeln!(
        out,
        "siteward_directory_entries{{kind=\"group\"}} {}",
        snap.identity.groups.len()
    )?;
    // The registry ends the exposition with `# EOF`.
    prometheus_client::encoding::text::encode(&mut out, &state.registry)?;
    Ok(out)
}
