//! `wrk` load runs with `*.lab.test` resolving to loopback, and the CPU each kind of process
//! used meanwhile.

use tokio::process::Command;

use crate::harness::TestResult;

/// Runs `wrk` with `*.lab.test` resolving to loopback (a private mount namespace with its own
/// `/etc/hosts`, so the machine's file is untouched and TLS gets the right SNI).
pub(crate) async fn wrk(args: &[String]) -> TestResult<String> {
    let hosts = tempfile::NamedTempFile::new()?;
    let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    for h in ["app", "open", "team"] {
        text.push_str(&format!("\n127.0.0.1 {h}.lab.test\n"));
    }
    std::fs::write(hosts.path(), text)?;
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let script = format!(
        "mount --bind '{}' /etc/hosts && exec wrk {}",
        hosts.path().display(),
        quoted.join(" ")
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .await
        .map_err(|e| format!("cannot run unshare/wrk (apt-get install wrk; needs root): {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(stdout)
}

/// CPU seconds used so far by each kind of process (by command name), read from /proc.
fn cpu_by_command() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let kind = if comm.starts_with("e2e-") {
            "test process (backends)".to_owned()
        } else {
            comm
        };
        *out.entry(kind).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    out
}

/// Runs wrk and reports, besides its output, the CPU seconds each kind of process used meanwhile.
pub(crate) async fn wrk_with_cpu(args: &[String]) -> TestResult<(String, Vec<(String, f64)>)> {
    let before = cpu_by_command();
    let out = wrk(args).await?;
    let after = cpu_by_command();
    let mut used: Vec<(String, f64)> = after
        .into_iter()
        .filter(|(k, _)| ["siteward", "nginx", "test process (backends)"].contains(&k.as_str()))
        .map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0.0);
            (k, d)
        })
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok((out, used))
}

/// CPU per request, by process kind: "nginx 31 µs, siteward 12 µs, ...".
pub(crate) fn cpu_per_request(used: &[(String, f64)], rate: f64, secs: u64) -> String {
    let requests = rate * secs as f64;
    used.iter()
        .map(|(k, v)| format!("{k} {:.1} µs", v * 1e6 / requests.max(1.0)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn wrk_rate(out: &str) -> TestResult<f64> {
    if let Some(line) = out.lines().find(|l| l.contains("Non-2xx or 3xx responses")) {
        return Err(format!("wrk saw failures ({}):\n{out}", line.trim()).into());
    }
    let line = out
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .ok_or_else(|| format!("no rate in wrk output:\n{out}"))?;
    Ok(line.trim_start_matches("Requests/sec:").trim().parse()?)
}

pub(crate) fn wrk_p99(out: &str) -> Option<String> {
    out.lines()
        .find(|l| l.trim_start().starts_with("99%"))
        .map(|l| l.trim().trim_start_matches("99%").trim().to_owned())
}
