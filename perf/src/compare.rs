//! The report table: repeated runs of a subject and a baseline (JSON lines written by
//! `--json`), each metric as median and min–max, and the ratio of the medians.

use std::fs;
use std::path::Path;

use serde_json::Value;

/// (key, shown name, decimals)
const METRICS: &[(&str, &str, usize)] = &[
    ("requests_per_s", "requests/s (completed)", 0),
    ("events_per_s", "events/s", 0),
    ("frames_per_s", "frames received/s", 0),
    ("offered_per_s", "requests offered/s", 0),
    ("p50_us", "p50 µs", 1),
    ("p90_us", "p90 µs", 1),
    ("p99_us", "p99 µs", 1),
    ("p99_9_us", "p99.9 µs", 1),
    ("max_us", "max µs", 0),
    (
        "send_lag_p99_us",
        "open loop: client send lag p99 µs (included above)",
        1,
    ),
    ("send_lag_max_us", "open loop: client send lag max µs", 0),
    ("server_cpu_util", "server CPU (cores)", 2),
    (
        "requests_per_server_cpu_s",
        "requests per server CPU-second",
        0,
    ),
    ("server_rss_before_kib", "server RSS before, KiB", 0),
    ("server_rss_after_kib", "server RSS after, KiB", 0),
    ("load_cpu_util", "load generator CPU (cores)", 2),
    (
        "other_busy_cores",
        "other processes + kernel CPU (cores)",
        2,
    ),
    ("steal_cores", "steal (cores)", 2),
    (
        "server_rss_per_conn_bytes",
        "server RSS per idle connection, bytes",
        0,
    ),
    (
        "load_rss_per_conn_bytes",
        "client RSS per idle connection, bytes",
        0,
    ),
    ("handshakes_per_s", "handshakes/s", 0),
    ("errors", "errors", 0),
    ("incomplete", "incomplete", 0),
    ("seq_gaps", "seq gaps", 0),
    ("closed_early", "closed early", 0),
];

fn load(path: &Path) -> Result<Vec<Value>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

/// Median, min and max of `key` over `runs`, if any run has it.
fn summary(runs: &[Value], key: &str) -> Option<(f64, f64, f64)> {
    spread(runs.iter().filter_map(|r| r.get(key)?.as_f64()).collect())
}

/// The ratio of `key` run by run, subject over baseline: median, min and max. `perf/run`
/// alternates the two, so run i of each ran back to back, and the machine's drift over an
/// invocation (this VM's speed moves by tens of percent within minutes) moves both sides of
/// a pair alike. `None` unless both have the same number (≥ 2) of runs.
fn paired(a: &[Value], b: &[Value], key: &str) -> Option<(f64, f64, f64)> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let ratio = |x: &Value, y: &Value| {
        let (x, y) = (x.get(key)?.as_f64()?, y.get(key)?.as_f64()?);
        (y != 0.0).then(|| x / y)
    };
    spread(a.iter().zip(b).filter_map(|(x, y)| ratio(x, y)).collect())
}

/// Median, min and max of `v`.
fn spread(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((med, v[0], v[n - 1]))
}

fn fmt(x: f64, d: usize) -> String {
    format!("{x:.d$}")
}

fn cell(s: Option<(f64, f64, f64)>, d: usize, runs: usize) -> String {
    match s {
        None => "—".into(),
        Some((m, lo, hi)) if runs > 1 => format!("{} ({}–{})", fmt(m, d), fmt(lo, d), fmt(hi, d)),
        Some((m, _, _)) => fmt(m, d),
    }
}

/// The markdown table comparing `subject` with `baseline`.
pub(crate) fn markdown(subject: &Path, baseline: &Path) -> Result<String, String> {
    let a = load(subject)?;
    let b = load(baseline)?;
    let label = |runs: &[Value], dflt: &str| {
        runs.first()
            .and_then(|r| r.get("label")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| dflt.to_owned())
    };
    let (la, lb) = (label(&a, "subject"), label(&b, "baseline"));
    let mut out = format!(
        "| metric | {la} median (min–max), {} runs | {lb} median (min–max), {} runs | ratio {la}/{lb} |\n|---|---:|---:|---:|\n",
        a.len(),
        b.len()
    );
    for (key, name, d) in METRICS {
        let (sa, sb) = (summary(&a, key), summary(&b, key));
        if sa.is_none() && sb.is_none() {
            continue;
        }
        let ratio = match (sa, sb) {
            (Some((x, _, _)), Some((y, _, _))) if y != 0.0 => format!("{:.2}×", x / y),
            _ => "—".into(),
        };
        out.push_str(&format!(
            "| {name} | {} | {} | {ratio} |\n",
            cell(sa, *d, a.len()),
            cell(sb, *d, b.len())
        ));
    }
    let pairs: Vec<String> = [
        ("requests_per_s", "requests/s"),
        (
            "requests_per_server_cpu_s",
            "requests per server CPU-second",
        ),
    ]
    .iter()
    .filter_map(|(key, name)| {
        let (m, lo, hi) = paired(&a, &b, key)?;
        Some(format!("{name} **{m:.2}×** ({lo:.2}–{hi:.2}×)"))
    })
    .collect();
    if !pairs.is_empty() {
        out.push_str(&format!(
            "\nPaired ratios {la}/{lb}, run i of each (run back to back), median (min–max): {}.\n",
            pairs.join("; ")
        ));
    }
    for (l, runs) in [(&la, &a), (&lb, &b)] {
        for r in runs.iter() {
            for k in ["first_error", "first_close"] {
                if let Some(s) = r.get(k).and_then(Value::as_str) {
                    out.push_str(&format!("\n{l} {k}: `{s}`\n"));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn median_of_even_and_odd() {
        let runs = vec![json!({"x": 3.0}), json!({"x": 1.0}), json!({"x": 2.0})];
        assert_eq!(summary(&runs, "x"), Some((2.0, 1.0, 3.0)));
        let runs = vec![json!({"x": 4}), json!({"x": 1})];
        assert_eq!(summary(&runs, "x"), Some((2.5, 1.0, 4.0)));
        assert_eq!(summary(&runs, "y"), None);
    }

    #[test]
    fn paired_ratios_follow_the_run_order() {
        let a = vec![json!({"x": 10.0}), json!({"x": 40.0}), json!({"x": 30.0})];
        let b = vec![json!({"x": 20.0}), json!({"x": 50.0}), json!({"x": 30.0})];
        assert_eq!(paired(&a, &b, "x"), Some((0.8, 0.5, 1.0)));
        // Medians alone would say 30/30 = 1.0.
        assert_eq!(
            summary(&a, "x").unwrap().0 / summary(&b, "x").unwrap().0,
            1.0
        );
        assert_eq!(paired(&a[..2], &b, "x"), None);
        assert_eq!(paired(&a[..1], &b[..1], "x"), None);
    }
}
