//! The QA report at scale: time and peak memory of `qa` over 100,000 and 1,000,000 synthetic
//! rows (no image bytes), each in a child process so its peak memory is its own.

use super::{BenchContext, Results};
use crate::cli::BenchArgs;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Instant;

/// Row counts measured; the issue asks for 100k and 1M.
const SIZES: [(usize, &str); 2] = [(100_000, "100k"), (1_000_000, "1m")];

pub(crate) fn run(_context: &BenchContext, results: &mut Results) -> Result<()> {
    let root = std::env::temp_dir().join(format!("retinalogos-bench-qa-{}", std::process::id()));
    let mut peaks = Vec::new();
    for (rows, name) in SIZES {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let started = Instant::now();
        retina_qa::synthetic::write_synthetic_dataset(&dir, rows, 50_000)
            .with_context(|| format!("cannot write {rows} synthetic rows"))?;
        eprintln!(
            "qa bench: wrote {rows} synthetic rows in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let output = std::process::Command::new(std::env::current_exe()?)
            .args(["bench", "--child", "qa", "--work"])
            .arg(&dir)
            .output()?;
        if !output.status.success() {
            bail!(
                "qa child failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let child: Value = serde_json::from_slice(&output.stdout)?;
        let seconds = child["seconds"].as_f64().unwrap_or(0.0);
        let peak = child["peak_rss_mb"].as_f64().unwrap_or(0.0);
        results.put(
            &format!("qa_{name}_seconds"),
            seconds,
            "s",
            &format!("qa report over {rows} synthetic rows (no images), wall time"),
        );
        results.put(
            &format!("qa_{name}_rows_per_s"),
            rows as f64 / seconds.max(1e-9),
            "rows/s",
            &format!("qa throughput at {rows} rows"),
        );
        results.put(
            &format!("qa_{name}_peak_rss_mb"),
            peak,
            "MB",
            &format!("peak resident memory of qa at {rows} rows"),
        );
        peaks.push(peak);
        std::fs::remove_dir_all(&dir).ok();
    }
    if let [small, large] = peaks[..] {
        results.put(
            "qa_peak_rss_1m_over_100k",
            large / small.max(1e-9),
            "ratio",
            "peak memory at 1M rows over 100k rows (10 = grows in proportion; ~1 = bounded)",
        );
    }
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}

/// The child: one report over `--work`, printing seconds and peak memory as JSON.
pub(crate) fn run_child(args: &BenchArgs) -> Result<ExitCode> {
    let dir = args.work.as_ref().context("--work is required")?;
    let started = Instant::now();
    let summary = retina_qa::write_report(dir)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "seconds": seconds,
            "peak_rss_mb": peak_rss_mb(),
            "accepted": summary.report.counts.accepted,
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// Peak resident set size of this process (Linux: VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
