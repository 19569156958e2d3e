//! `bench --only scale`: 1.4 million items through the whole pipeline (streamed CSV manifests,
//! image stage, prompt, captioner, validator, Parquet shards, journal) against the zero-latency
//! loopback endpoint, with peak memory sampled at 100,000 items and at the end (it must stay
//! flat), the journal's size, the resume filter's rate, and the projected wall time of a real run
//! for a given endpoint capacity.
//!
//! Input: 14 manifests of 100,000 CSV rows each (the size of the largest public label files), so
//! each label file streams at the size the issue names. Images: 2,000 distinct 96x96 synthetic
//! photographs, hard-linked under every row's own path (ids are per path). The pipeline has no
//! perceptual-hash dedup stage, so the repeated pixels are captioned like distinct photographs.
//! Cached under `target/bench/scale-<items>/`; `RETINALOGOS_BENCH_SCALE_ITEMS` picks a smaller
//! run for a quick look.

use super::{BenchContext, Results};
use crate::cli::BenchArgs;
use crate::config::BuildConfig;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Items of the full scenario (RetinaLogos-1400k).
const ITEMS: usize = 1_400_000;
/// Rows per label file.
const ROWS_PER_MANIFEST: usize = 100_000;
/// Distinct image files; every row links to one of them.
const DISTINCT_IMAGES: usize = 2_000;
/// Endpoint capacities (answers per second) to project a real run's wall time for.
const CAPACITIES: [f64; 3] = [40.0, 200.0, 1000.0];
/// Where memory is sampled first.
const EARLY_MARK: u64 = 100_000;

pub(crate) fn run(_context: &BenchContext, results: &mut Results) -> Result<()> {
    let items = std::env::var("RETINALOGOS_BENCH_SCALE_ITEMS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(ITEMS);
    let input = Path::new("target/bench").join(format!("scale-{items}"));
    let generated = Instant::now();
    let manifests = generate_input(&input, items)?;
    eprintln!(
        "scale: input ready in {:.0} s ({} manifests)",
        generated.elapsed().as_secs_f64(),
        manifests.len()
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let endpoint = runtime.block_on(loopback_endpoint::Endpoint::start(
        loopback_endpoint::Spec {
            slots: 1024,
            queue: 4096,
            latency: loopback_endpoint::Latency::Fixed(Duration::ZERO),
            ..loopback_endpoint::Spec::default()
        },
        "127.0.0.1:0",
    ))?;
    let work = Path::new("target/bench/scale-work");
    if work.exists() {
        std::fs::remove_dir_all(work)
            .with_context(|| format!("cannot clear {}", work.display()))?;
    }
    std::fs::create_dir_all(work)?;
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "--child", "scale", "--work"])
        .arg(work)
        .env("RETINALOGOS_BENCH_SCALE_INPUT", &input)
        .env("RETINALOGOS_BENCH_ENDPOINT", endpoint.base_url())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start the scale benchmark child")?;
    drop(endpoint);
    if !output.status.success() {
        bail!(
            "the scale benchmark child failed (status {:?})",
            output.status
        );
    }
    let child: Value = serde_json::from_slice(&output.stdout).context("child printed no JSON")?;
    let number = |key: &str| child[key].as_f64().unwrap_or(f64::NAN);
    let captioner = child["captioner"].as_str().unwrap_or("?").to_string();
    let rate = number("items_per_s");
    results.put(
        "scale.items",
        number("processed"),
        "items",
        "items through the pipeline (streamed CSV manifests of 100,000 rows)",
    );
    results.put(
        "scale.items_per_s",
        rate,
        "items/s",
        &format!(
            "whole pipeline, 96x96 images to 64x64, captioner: {captioner} (zero latency), all cores"
        ),
    );
    results.put(
        "scale.rss_mb_at_100k",
        number("rss_mb_at_100k"),
        "MB",
        "resident memory (VmRSS) when 100,000 items were done",
    );
    results.put(
        "scale.rss_mb_max_after_100k",
        number("rss_mb_max_after_100k"),
        "MB",
        "highest resident memory sampled between 100,000 items and the end",
    );
    results.put(
        "scale.peak_rss_mb_at_100k",
        number("hwm_mb_at_100k"),
        "MB",
        "peak resident memory (VmHWM) up to 100,000 items",
    );
    results.put(
        "scale.peak_rss_mb_at_end",
        number("hwm_mb_at_end"),
        "MB",
        "peak resident memory (VmHWM) over the whole run",
    );
    results.put(
        "scale.peak_rss_end_over_100k",
        number("hwm_mb_at_end") / number("hwm_mb_at_100k"),
        "ratio",
        "peak memory at the end over peak memory at 100,000 items (flat = about 1)",
    );
    results.put(
        "scale.journal_mb",
        number("journal_mb"),
        "MB",
        "journal (SQLite file and WAL) after the run",
    );
    results.put(
        "scale.journal_bytes_per_item",
        number("journal_mb") * 1e6 / number("processed"),
        "bytes",
        "journal size per item",
    );
    results.put(
        "scale.resume_skip_items_per_s",
        number("resume_items_per_s"),
        "items/s",
        "a re-run over the finished input: streaming the manifests and skipping every item by its journal lookup",
    );
    results.put(
        "scale.done_ids_load_s",
        number("done_ids_s"),
        "s",
        "the alternative filter: loading every done id into a set (Journal::done_ids)",
    );
    results.put(
        "scale.done_ids_mb",
        number("done_ids_mb"),
        "MB",
        "resident memory that set adds",
    );
    for capacity in CAPACITIES {
        let effective = rate.min(capacity);
        results.put(
            &format!("scale.projected_hours_1400k_at_{capacity:.0}_rps"),
            ITEMS as f64 / effective / 3600.0,
            "hours",
            &format!(
                "wall time of 1.4 M items against an endpoint answering {capacity:.0} requests/s (one worker; the pipeline's own rate caps it)"
            ),
        );
    }
    Ok(())
}

/// Writes (once) the image pool, the hard links and the manifests; returns the manifest paths.
fn generate_input(dir: &Path, items: usize) -> Result<Vec<PathBuf>> {
    let manifests: Vec<PathBuf> = (0..items.div_ceil(ROWS_PER_MANIFEST))
        .map(|m| dir.join(format!("m{m:02}.toml")))
        .collect();
    let marker = dir.join("complete");
    if marker.exists() {
        return Ok(manifests);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let pool = dir.join("pool");
    std::fs::create_dir_all(&pool)?;
    for n in 0..DISTINCT_IMAGES {
        let laterality = if n % 2 == 0 {
            retina_records::Laterality::Left
        } else {
            retina_records::Laterality::Right
        };
        let spec = synthetic_fundus::SceneSpec::normal(96, 96, laterality, n as u64);
        let (image, _) = synthetic_fundus::render(&spec);
        image
            .save(pool.join(format!("{n:04}.jpg")))
            .with_context(|| format!("cannot write pool image {n}"))?;
    }
    for (m, manifest) in manifests.iter().enumerate() {
        let rows = ROWS_PER_MANIFEST.min(items - m * ROWS_PER_MANIFEST);
        let root = dir.join(format!("m{m:02}"));
        let images = root.join("img");
        std::fs::create_dir_all(&images)?;
        let mut labels = std::io::BufWriter::new(std::fs::File::create(root.join("labels.csv"))?);
        writeln!(labels, "image,level")?;
        for row in 0..rows {
            let global = m * ROWS_PER_MANIFEST + row;
            let source = pool.join(format!("{:04}.jpg", global % DISTINCT_IMAGES));
            std::fs::hard_link(&source, images.join(format!("{row:06}.jpg")))
                .with_context(|| format!("cannot link row {row} of manifest {m}"))?;
            writeln!(labels, "{row:06},0")?;
        }
        labels.flush()?;
        std::fs::write(
            manifest,
            format!(
                "[dataset]\nname = \"scale-{m:02}\"\nroot = \"m{m:02}\"\n\n[labels]\ncarrier = \"csv\"\nfile = \"labels.csv\"\n\n\
                 [columns]\nimage = \"image\"\ndr_grade = \"level\"\n\n[images]\npath = \"img/{{image}}.jpg\"\n"
            ),
        )?;
    }
    std::fs::write(&marker, b"")?;
    Ok(manifests)
}

/// Resident memory now and at its peak (VmRSS, VmHWM), in MB.
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[derive(Default, Clone, Copy)]
struct Samples {
    rss_at_mark: Option<f64>,
    hwm_at_mark: Option<f64>,
    rss_max_after_mark: f64,
}

pub(crate) fn run_child(args: &BenchArgs) -> Result<ExitCode> {
    let work = args.work.clone().context("--work is required")?;
    let input = PathBuf::from(
        std::env::var("RETINALOGOS_BENCH_SCALE_INPUT").context("no scale input given")?,
    );
    let manifests: Vec<PathBuf> = {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&input)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        found.sort();
        found
    };
    let mut config = BuildConfig::default();
    config.image.size = 64;
    config.captioner.cache = false;
    config.captioner.cache_dir = None;
    config.captioner.concurrency = 64;
    config.captioner.adaptive_concurrency = false;
    let mut captioner = "embedded offline captioner".to_string();
    if let Ok(url) = std::env::var("RETINALOGOS_BENCH_ENDPOINT") {
        config.captioner.endpoint = url;
        config.captioner.model = "loopback-vlm".into();
        captioner = "loopback endpoint over HTTP".into();
    }
    let stages = crate::make_stages(&config)?;
    let options = crate::pipeline::RunOptions {
        retry_failed: true,
        max_attempts: 5,
        allow_mixed_versions: false,
    };
    let progress = crate::progress::Progress::hidden();
    let samples = Arc::new(std::sync::Mutex::new(Samples::default()));
    let finished = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (progress, samples, finished) = (progress.clone(), samples.clone(), finished.clone());
        std::thread::spawn(move || {
            let mut last_log = Instant::now();
            while !finished.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let state = progress.snapshot("running");
                let done = state.accepted + state.rejected + state.failed;
                let (rss, hwm) = memory_mb();
                let Ok(mut s) = samples.lock() else { return };
                if done >= EARLY_MARK {
                    if s.rss_at_mark.is_none() {
                        s.rss_at_mark = Some(rss);
                        s.hwm_at_mark = Some(hwm);
                    }
                    s.rss_max_after_mark = s.rss_max_after_mark.max(rss);
                }
                if last_log.elapsed() > Duration::from_secs(60) {
                    last_log = Instant::now();
                    eprintln!(
                        "scale: {done} items, {:.0} items/s, RSS {rss:.0} MB (peak {hwm:.0} MB)",
                        state.items_per_second
                    );
                }
            }
        })
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let input_records = crate::partition::input(&manifests, &[], None, None)?;
    let started = Instant::now();
    let summary = runtime.block_on(crate::pipeline::run(
        &work,
        input_records.records,
        stages,
        &options,
        Arc::new(AtomicBool::new(false)),
        progress.clone(),
    ))?;
    let seconds = started.elapsed().as_secs_f64();
    finished.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let (_, hwm_end) = memory_mb();
    let samples = samples.lock().map(|s| *s).unwrap_or_default();
    let journal = crate::pipeline::journal_path(&work);
    let journal_bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            std::fs::metadata(format!("{}{suffix}", journal.display()))
                .ok()
                .map(|m| m.len())
        })
        .sum();

    // Resume: the same input again, everything done; the filter is one journal lookup per item.
    let stages = crate::make_stages(&config)?;
    let again = crate::partition::input(&manifests, &[], None, None)?;
    let resumed_at = Instant::now();
    let resumed = runtime.block_on(crate::pipeline::run(
        &work,
        again.records,
        stages,
        &options,
        Arc::new(AtomicBool::new(false)),
        crate::progress::Progress::hidden(),
    ))?;
    let resume_s = resumed_at.elapsed().as_secs_f64();

    // The alternative filter: every done id in a set.
    let (rss_before, _) = memory_mb();
    let loaded_at = Instant::now();
    let reader = retina_journal::Journal::open_read_only(&journal)?;
    let done = reader.done_ids()?;
    let done_ids_s = loaded_at.elapsed().as_secs_f64();
    let (rss_after, _) = memory_mb();
    let done_count = done.len();
    drop(done);

    println!(
        "{}",
        json!({
            "captioner": captioner,
            "processed": summary.processed,
            "accepted": summary.accepted,
            "rejected": summary.rejected,
            "failed": summary.failed,
            "seconds": seconds,
            "items_per_s": summary.processed as f64 / seconds,
            "rss_mb_at_100k": samples.rss_at_mark,
            "hwm_mb_at_100k": samples.hwm_at_mark,
            "rss_mb_max_after_100k": samples.rss_max_after_mark,
            "hwm_mb_at_end": hwm_end,
            "journal_mb": journal_bytes as f64 / 1e6,
            "resume_already_done": resumed.already_done,
            "resume_items_per_s": resumed.already_done as f64 / resume_s,
            "done_ids": done_count,
            "done_ids_s": done_ids_s,
            "done_ids_mb": rss_after - rss_before,
        })
    );
    Ok(ExitCode::SUCCESS)
}
