//! The end-to-end pipeline on the embedded default, and the image stage against the raw codec.

use super::{BenchContext, Results, time_per_item};
use crate::cli::BenchArgs;
use crate::config::BuildConfig;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

pub(crate) fn run(context: &BenchContext, results: &mut Results) -> Result<()> {
    let args = context.args;
    let summary = &context.demo;
    // Image stage against the raw codec, on one core, over the demo's EyePACS-layout JPEGs.
    let mut files: Vec<_> = std::fs::read_dir(summary.eyepacs_dir.join("train"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files.truncate(40);
    let images: Vec<Vec<u8>> = files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let decode_ms = time_per_item(&images, |bytes| {
        image::load_from_memory(bytes)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    let config = crate::make_stages(&BuildConfig::default())?.prepare;
    let prepare_ms = time_per_item(&images, |bytes| {
        retina_fundus::prepare(bytes, &config)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    results.put(
        "decode_only_ms",
        decode_ms,
        "ms/image",
        "JPEG decode alone (image crate), 1536x1024 demo photograph, one core",
    );
    results.put("image_stage_ms", prepare_ms, "ms/image", "full image stage: decode, field of view, crop, measure, resize to 1024, JPEG encode; one core");
    results.put(
        "image_stage_over_decode",
        prepare_ms / decode_ms,
        "ratio",
        "image stage time over raw decode time (1.0 = codec limit)",
    );

    // End to end, in a child process so its peak memory is its own.
    let work = tempfile_dir()?;
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new(exe)
        .args([
            "bench",
            "--child",
            "pipeline",
            "--items",
            &args.items.to_string(),
            "--work",
        ])
        .arg(&work)
        .output()
        .context("cannot start the benchmark child process")?;
    if !output.status.success() {
        bail!(
            "pipeline scenario failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let child: Value = serde_json::from_slice(&output.stdout).context("child printed no JSON")?;
    let items_per_s = child["items_per_s"].as_f64().unwrap_or(0.0);
    let threads = rayon::current_num_threads() as f64;
    results.put("pipeline_items_per_s", items_per_s, "items/s", "end-to-end demo build with the offline captioner (image stage, prompt, caption, validate, Parquet, journal)");
    results.put(
        "pipeline_peak_rss_mb",
        child["peak_rss_mb"].as_f64().unwrap_or(0.0),
        "MB",
        "peak resident memory of that build",
    );
    let stage_limit = 1000.0 / prepare_ms * threads;
    results.put("pipeline_over_image_stage_limit", items_per_s / stage_limit, "ratio", "end-to-end throughput over the image stage alone on all cores (1.0 = the rest of the pipeline costs nothing)");
    std::fs::remove_dir_all(&work).ok();

    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("retinalogos-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub(crate) fn run_child(args: &BenchArgs) -> Result<ExitCode> {
    let work = args.work.clone().context("--work is required")?;
    let mut records = Vec::new();
    for manifest in crate::demo::manifests()? {
        records.extend(manifest.read()?.records);
    }
    // Cycle the demo to the requested count under distinct ids.
    let base = records.clone();
    let mut n = 0;
    while records.len() < args.items {
        let mut record = base[n % base.len()].clone();
        record.relative_path = format!("{}#{}", record.relative_path, n);
        record.id = retina_records::ItemId::from_source(&record.dataset, &record.relative_path);
        records.push(record);
        n += 1;
    }
    records.truncate(args.items);
    let stages = crate::make_stages(&BuildConfig::default())?;
    let options = crate::pipeline::RunOptions {
        retry_failed: true,
        max_attempts: 5,
        allow_mixed_versions: false,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let summary = runtime.block_on(crate::pipeline::run(
        &work,
        records,
        stages,
        &options,
        Arc::new(AtomicBool::new(false)),
        crate::progress::Progress::hidden(),
    ))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "items_per_s": summary.processed as f64 / seconds,
            "peak_rss_mb": peak_rss_mb(),
            "accepted": summary.accepted,
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
