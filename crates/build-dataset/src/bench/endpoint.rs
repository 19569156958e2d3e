//! The captioner against the loopback endpoint: does adaptive concurrency find and hold a server's
//! capacity without overloading it?
//!
//! A 3x3 matrix: capacities of 8, 64 and 512 slots (each with a queue as long again, then 429)
//! and fixed latencies of 50 ms, 500 ms and 5 s. For each cell the client (our `OpenAiCaptioner`,
//! text-only requests, configured maximum 2048 in flight, starting at 16) runs in a child process
//! so its CPU time is its own. After a warm-up of ten round trips it counts completed requests
//! over a whole number of round trips. Reported per cell: completed requests/s divided by the
//! capacity (slots / latency), goal >= 0.95; 429 answers over the whole cell, warm-up included;
//! client CPU time per request (the child's user + system time over the window); and the
//! endpoint's CPU time per answered request (this process's, over the whole cell, warm-up
//! included; per row for the 500 ms and 5 s rows, whose three cells run at once). Client and
//! endpoint share the machine's cores, so at 512 slots x 50 ms (10,240 requests/s) their CPU per
//! request together decides whether the capacity can be reached at all.
//!
//! The endpoint holds each slot for exactly its latency on its own timeline (a late timer does not
//! lengthen the hold), so its capacity is the denominator, slots / latency, and a shortfall is
//! the client's. Warm-up and window are unchanged: ten round trips, then 60, 16 or 8.
//!
//! `RETINALOGOS_BENCH_ENDPOINT_CELLS=512x50,8x500` runs only the cells named (slots x latency in
//! ms), for profiling one cell; the matrix is the default.

use super::{BenchContext, Results};
use crate::cli::BenchArgs;
use anyhow::{Context, Result, bail};
use loopback_endpoint::{Endpoint, Latency, Spec};
use retina_captioner::{CaptionRequest, Captioner, EndpointConfig, LimiterConfig, OpenAiCaptioner};
use retina_prompt::RenderedPrompt;
use retina_records::{ImageFacts, Record};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SLOTS: [usize; 3] = [8, 64, 512];
const LATENCIES_MS: [u64; 3] = [50, 500, 5000];
const MAX_IN_FLIGHT: usize = 2048;

/// One cell, as handed to the child process.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cell {
    url: String,
    latency_ms: u64,
    warm_s: f64,
    measure_s: f64,
}

fn cell_times(latency_ms: u64) -> (f64, f64) {
    let rtt = latency_ms as f64 / 1000.0;
    // Ten round trips of warm-up, then a window that is a whole number of round trips (fixed
    // latency makes completions periodic; a whole number of periods counts them exactly).
    let rounds = match latency_ms {
        0..=100 => 60.0,
        101..=1000 => 16.0,
        _ => 8.0,
    };
    (10.0 * rtt, rounds * rtt)
}

/// The cells to run: all, or those named in `RETINALOGOS_BENCH_ENDPOINT_CELLS`.
fn chosen_cells() -> Result<Vec<(usize, u64)>> {
    let all: Vec<(usize, u64)> = LATENCIES_MS
        .iter()
        .flat_map(|&ms| SLOTS.iter().map(move |&slots| (slots, ms)))
        .collect();
    let Ok(text) = std::env::var("RETINALOGOS_BENCH_ENDPOINT_CELLS") else {
        return Ok(all);
    };
    let mut chosen = Vec::new();
    for cell in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let parsed = cell
            .split_once('x')
            .and_then(|(s, ms)| Some((s.trim().parse().ok()?, ms.trim().parse().ok()?)));
        match parsed {
            Some(cell) if all.contains(&cell) => chosen.push(cell),
            _ => bail!(
                "RETINALOGOS_BENCH_ENDPOINT_CELLS: {cell:?} is not one of the matrix's cells \
                 (SLOTSxMS with slots 8, 64, 512 and latency 50, 500, 5000)"
            ),
        }
    }
    Ok(chosen)
}

pub(crate) fn run(_context: &BenchContext<'_>, results: &mut Results) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the benchmark executable")?;
    let work =
        std::env::temp_dir().join(format!("retinalogos-bench-endpoint-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let cells = chosen_cells()?;
    let mut worst = f64::INFINITY;
    // The fast cells one at a time (their clients are CPU-bound); the slow ones of a row at once,
    // since they mostly wait.
    for &latency_ms in &LATENCIES_MS {
        let parallel = latency_ms >= 500;
        let mut running = Vec::new();
        let row_cpu = cpu_seconds();
        let mut row_answered = 0u64;
        for &slots in SLOTS.iter().filter(|&&s| cells.contains(&(s, latency_ms))) {
            let cell_cpu = cpu_seconds();
            let endpoint = runtime.block_on(Endpoint::start(
                Spec {
                    slots,
                    queue: slots,
                    overflow_status: 429,
                    latency: Latency::Fixed(Duration::from_millis(latency_ms)),
                    ..Spec::default()
                },
                "127.0.0.1:0",
            ))?;
            let (warm_s, measure_s) = cell_times(latency_ms);
            let cell = Cell {
                url: endpoint.base_url(),
                latency_ms,
                warm_s,
                measure_s,
            };
            let path = work.join(format!("cell-{slots}-{latency_ms}.json"));
            std::fs::write(&path, serde_json::to_vec(&cell)?)?;
            let child = std::process::Command::new(&exe)
                .args(["bench", "--child", "endpoint", "--work"])
                .arg(&path)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .context("cannot start the benchmark child process")?;
            running.push((slots, endpoint, child));
            if !parallel {
                let (slots, endpoint, child) = running.pop().context("no child")?;
                worst = worst.min(finish(results, slots, latency_ms, &endpoint, child)?);
                let answered = endpoint.stats().completed.load(Ordering::Relaxed);
                results.put(
                    &format!("endpoint.{slots}slots_{latency_ms}ms.server_cpu_us"),
                    (cpu_seconds() - cell_cpu) * 1e6 / answered.max(1) as f64,
                    "us/req",
                    "loopback endpoint CPU time per answered request, whole cell",
                );
            }
        }
        for (slots, endpoint, child) in running {
            worst = worst.min(finish(results, slots, latency_ms, &endpoint, child)?);
            row_answered += endpoint.stats().completed.load(Ordering::Relaxed);
        }
        if parallel && row_answered > 0 {
            results.put(
                &format!("endpoint.{latency_ms}ms_row.server_cpu_us"),
                (cpu_seconds() - row_cpu) * 1e6 / row_answered as f64,
                "us/req",
                "loopback endpoint CPU time per answered request, the row's three cells at once",
            );
        }
    }
    results.put(
        "endpoint.capacity_ratio_worst",
        worst,
        "ratio",
        "lowest completed/capacity over the 3x3 matrix (goal >= 0.95)",
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn finish(
    results: &mut Results,
    slots: usize,
    latency_ms: u64,
    endpoint: &Endpoint,
    child: std::process::Child,
) -> Result<f64> {
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("the endpoint benchmark child ({slots} slots, {latency_ms} ms) failed");
    }
    let report: Value =
        serde_json::from_slice(&output.stdout).context("the endpoint child printed no JSON")?;
    let capacity = slots as f64 / (latency_ms as f64 / 1000.0);
    let rate = report["completed_per_s"].as_f64().unwrap_or(0.0);
    let ratio = rate / capacity;
    let stats = endpoint.stats();
    let overflow = stats.overflow.load(Ordering::Relaxed) as f64;
    let name = format!("endpoint.{slots}slots_{latency_ms}ms");
    results.put(
        &format!("{name}.capacity_ratio"),
        ratio,
        "ratio",
        "completed requests/s over slots/latency, steady state (goal >= 0.95)",
    );
    results.put(
        &format!("{name}.http_429"),
        overflow,
        "count",
        "429 answers (queue full) over the whole cell, warm-up included",
    );
    results.put(
        &format!("{name}.client_cpu_us"),
        report["cpu_us_per_request"].as_f64().unwrap_or(0.0),
        "us/req",
        "client CPU time (user+system) per completed request",
    );
    results.put(
        &format!("{name}.limit"),
        report["limit"].as_f64().unwrap_or(0.0),
        "requests",
        "the adaptive limit at the end (capacity is slots, queue as long again)",
    );
    Ok(ratio)
}

/// CPU time of this process (user + system), from /proc; zero where there is no /proc.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The kernel reports in USER_HZ, 100 on every Linux we run on.
    (ticks(11) + ticks(12)) / 100.0
}

fn request() -> CaptionRequest {
    let record = Record::new(
        "bench",
        "bench/one.png",
        std::path::PathBuf::from("one.png"),
    );
    let facts = ImageFacts::fixture(2048, 1536);
    // A prompt of realistic size (~2 KB), text only: the matrix measures concurrency control, not
    // base64 of images (which would make two shared cores the bottleneck, not the client).
    CaptionRequest {
        record: Arc::new(record),
        facts: Arc::new(facts),
        prompt: RenderedPrompt {
            system: "You describe colour fundus photographs for a dataset. ".repeat(8),
            user: "Facts: dataset bench; eye unknown; quality good; vessel density 0.12. "
                .repeat(20),
        },
        image: None,
        image_mime: "image/jpeg",
        repair: None,
    }
}

pub(crate) fn run_child(args: &BenchArgs) -> Result<ExitCode> {
    let path = args.work.clone().context("--work is required")?;
    let cell: Cell = serde_json::from_slice(&std::fs::read(&path)?)?;
    let schema = retina_validate::CaptionSchema::embedded();
    let captioner = Arc::new(
        OpenAiCaptioner::new(EndpointConfig {
            vision: false,
            max_retries: 6,
            request_timeout: Duration::from_millis(cell.latency_ms * 4 + 10_000),
            concurrency: LimiterConfig {
                initial: 16,
                max: MAX_IN_FLIGHT,
                adaptive: true,
            },
            ..EndpointConfig::new(&cell.url, "loopback-vlm", schema.value().clone())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let warm = Duration::from_secs_f64(cell.warm_s);
    let end = warm + Duration::from_secs_f64(cell.measure_s);
    let completed_in_window = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let report = runtime.block_on(async {
        let request = request();
        for _ in 0..MAX_IN_FLIGHT {
            let captioner = captioner.clone();
            let request = request.clone();
            let counted = completed_in_window.clone();
            let failed = failed.clone();
            tokio::spawn(async move {
                loop {
                    let result = captioner.caption(request.clone()).await;
                    let at = started.elapsed();
                    if at >= end {
                        break;
                    }
                    match result {
                        Ok(_) if at >= warm => {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + warm)).await;
        let cpu_start = cpu_seconds();
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + end)).await;
        let cpu = cpu_seconds() - cpu_start;
        let completed = completed_in_window.load(Ordering::Relaxed);
        let stats = captioner.limiter_stats();
        json!({
            "completed": completed,
            "completed_per_s": completed as f64 / cell.measure_s,
            "cpu_us_per_request": if completed > 0 { cpu * 1e6 / completed as f64 } else { 0.0 },
            "failed": failed.load(Ordering::Relaxed),
            "limit": stats.limit,
            "peak_limit": stats.peak_limit,
            "overloaded": stats.overloaded,
        })
    });
    println!("{report}");
    // Workers still wait on answers; the process ends without draining them.
    std::process::exit(0);
}
