//! Our throughput against a real server (llama.cpp's `llama-server` with SmolLM2-135M on
//! loopback) over what the server can give.
//!
//! For each slot count in [`SLOT_COUNTS`] the benchmark starts its own `llama-server` (the binary
//! and model that `scripts/real-endpoint.sh build` caches; a server the tests may have running is
//! left alone) and measures, over the same items with the same prompts at temperature 0 and a
//! fixed seed, so every side decodes the same tokens:
//!
//! 1. the single-request rate: one request at a time straight through the client;
//! 2. the server's concurrent rate: as many requests in flight as it has slots, straight through
//!    the client (no image stage, validator, shards or journal);
//! 3. the whole pipeline with `concurrency` = slots (adaptive limiter on, starting at the slot
//!    count as a user who knows the server would configure it; repair re-asks off, so it too
//!    sends one request per item).
//!
//! The figure is (3) over (1) x slots, goal at least 0.9. On a small CPU machine a server's
//! slots share the same cores, so (2) can be far below (1) x slots; (3) over (2) then shows what
//! the pipeline itself costs, and (2) over (1) x slots what the server's batching gives.

use super::{BenchContext, Results};
use crate::config::BuildConfig;
use anyhow::{Context, Result, bail};
use futures::StreamExt;
use retina_captioner::CaptionRequest;
use retina_prompt::PromptMode;
use retina_records::Record;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Slot counts the server is started with, one after another.
const SLOT_COUNTS: [usize; 3] = [1, 2, 4];
/// Items per slot in each measured phase: enough that start-up and the last stragglers matter little.
const ITEMS_PER_SLOT: usize = 4;

/// A llama-server of the benchmark's own, killed on drop.
struct OwnServer {
    child: Child,
    url: String,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cached binary and model, built or extracted by the project script when missing.
fn server_files() -> Result<(PathBuf, PathBuf)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/real-endpoint.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("build")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!("scripts/real-endpoint.sh build failed");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(PathBuf::from)
            .with_context(|| format!("scripts/real-endpoint.sh build printed no {name}"))
    };
    Ok((value("LLAMA_SERVER")?, value("LLAMA_MODEL")?))
}

fn start_server(
    runtime: &tokio::runtime::Runtime,
    binary: &Path,
    model: &Path,
    slots: usize,
    log: &Path,
) -> Result<OwnServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let threads = std::env::var("RETINALOGOS_LLAMA_THREADS").unwrap_or_else(|_| "2".into());
    let child = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("-m")
        .arg(model)
        .args(["--alias", "bench-model", "--parallel", &slots.to_string()])
        .args([
            "-c",
            &(slots * 4096).to_string(),
            "-t",
            &threads,
            "-tb",
            &threads,
        ])
        .args(["--jinja", "--no-webui"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log)?)
        .stderr(std::fs::File::create(log.with_extension("err"))?)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let server = OwnServer {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let healthy = runtime
            .block_on(async { client.get(format!("{}/health", server.url)).send().await })
            .is_ok_and(|r| r.status().is_success());
        if healthy {
            return Ok(server);
        }
        if Instant::now() > deadline {
            bail!(
                "llama-server did not become healthy within 60 s (log {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(url: &str, concurrency: usize) -> BuildConfig {
    let mut config = BuildConfig::default();
    config.image.size = 256;
    // One request per item in every phase: a repair re-ask would be a second request that the
    // client-only phases do not make.
    config.prompt.repair_attempts = 0;
    let c = &mut config.captioner;
    c.endpoint = format!("{url}/v1");
    c.model = "bench-model".into();
    c.vision = false;
    c.concurrency = concurrency;
    c.initial_concurrency = concurrency;
    c.max_tokens = 600;
    c.temperature = 0.0;
    c.seed = 1;
    c.timeout_secs = 600;
    c.max_retries = 1;
    c.extra_body.insert("repeat_penalty".into(), json!(1.1));
    config
}

/// `count` distinct items (other ids) cycling over `base`, so every phase decodes the same texts.
fn items(base: &[Record], count: usize, tag: &str) -> Vec<Record> {
    (0..count)
        .map(|i| {
            let mut record = base[i % base.len()].clone();
            record.relative_path = format!("{}#{tag}{i}", record.relative_path);
            record.id = retina_records::ItemId::from_source(&record.dataset, &record.relative_path);
            record
        })
        .collect()
}

/// Requests straight through the client, `in_flight` at a time; returns (items/s, completion tokens).
fn client_only(
    runtime: &tokio::runtime::Runtime,
    stages: &crate::pipeline::Stages,
    records: &[Record],
    in_flight: usize,
) -> Result<(f64, u64)> {
    let mut requests = Vec::with_capacity(records.len());
    for record in records {
        let bytes = std::fs::read(&record.image_path)?;
        let prepared = retina_fundus::prepare(&bytes, &stages.prepare)
            .map_err(|e| anyhow::anyhow!("{}: {e}", record.image_path.display()))?;
        let prompt = stages
            .prompts
            .render(record, &prepared.facts, PromptMode::TextOnly)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        requests.push(CaptionRequest {
            record: Arc::new(record.clone()),
            facts: Arc::new(prepared.facts.clone()),
            prompt,
            image: None,
            image_mime: prepared.format.mime(),
            repair: None,
        });
    }
    let started = Instant::now();
    let replies: Vec<_> = runtime.block_on(
        futures::stream::iter(requests)
            .map(|request| stages.captioner.caption(request))
            .buffer_unordered(in_flight)
            .collect(),
    );
    let seconds = started.elapsed().as_secs_f64();
    let tokens = replies
        .iter()
        .flatten()
        .map(|r| u64::from(r.usage.completion_tokens))
        .sum();
    Ok((records.len() as f64 / seconds, tokens))
}

pub(crate) fn run(_context: &BenchContext, results: &mut Results) -> Result<()> {
    let (binary, model) = server_files()?;
    let mut base = Vec::new();
    for manifest in crate::demo::manifests()? {
        base.extend(manifest.read()?.records);
    }
    base.truncate(4);
    let runtime = tokio::runtime::Runtime::new()?;
    let work = std::env::temp_dir().join(format!("retinalogos-bench-llama-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    for slots in SLOT_COUNTS {
        let server = start_server(
            &runtime,
            &binary,
            &model,
            slots,
            &work.join(format!("server-{slots}.log")),
        )?;
        let count = slots * ITEMS_PER_SLOT;
        // Warm-up: the first request pays for loading weights into the caches.
        client_only(
            &runtime,
            &crate::make_stages(&config(&server.url, 1))?,
            &base[..1],
            1,
        )?;

        let single_items = items(&base, ITEMS_PER_SLOT.max(4), "single");
        let (single_rate, single_tokens) = client_only(
            &runtime,
            &crate::make_stages(&config(&server.url, 1))?,
            &single_items,
            1,
        )?;
        let (concurrent_rate, _) = client_only(
            &runtime,
            &crate::make_stages(&config(&server.url, slots))?,
            &items(&base, count, "concurrent"),
            slots,
        )?;

        let out = work.join(format!("pipeline-{slots}"));
        std::fs::remove_dir_all(&out).ok();
        let options = crate::pipeline::RunOptions {
            retry_failed: true,
            max_attempts: 5,
            allow_mixed_versions: false,
        };
        let started = Instant::now();
        let summary = runtime.block_on(crate::pipeline::run(
            &out,
            items(&base, count, "pipeline"),
            crate::make_stages(&config(&server.url, slots))?,
            &options,
            Arc::new(AtomicBool::new(false)),
            crate::progress::Progress::hidden(),
        ))?;
        let ours = count as f64 / started.elapsed().as_secs_f64();
        drop(server);

        let single_seconds = single_items.len() as f64 / single_rate;
        results.put(
            &format!("llama_{slots}slot_single_request_items_per_s"),
            single_rate,
            "items/s",
            &format!(
                "llama-server, {slots} slot(s), SmolLM2-135M, text only, strict schema: one request at a time ({:.0} completion tokens/s)",
                single_tokens as f64 / single_seconds
            ),
        );
        results.put(
            &format!("llama_{slots}slot_concurrent_items_per_s"),
            concurrent_rate,
            "items/s",
            &format!("the same server with {slots} requests in flight straight through the client"),
        );
        results.put(
            &format!("llama_{slots}slot_pipeline_items_per_s"),
            ours,
            "items/s",
            &format!(
                "our whole pipeline, concurrency {slots} ({} accepted, {} rejected, {} failed of {count})",
                summary.accepted, summary.rejected, summary.failed
            ),
        );
        results.put(
            &format!("llama_{slots}slot_pipeline_over_slots_x_single"),
            ours / (single_rate * slots as f64),
            "ratio",
            &format!("pipeline over single-request rate x {slots} slot(s) (goal >= 0.9)"),
        );
        results.put(
            &format!("llama_{slots}slot_pipeline_over_concurrent"),
            ours / concurrent_rate,
            "ratio",
            "pipeline over the server's own concurrent rate (what the pipeline costs)",
        );
        results.put(
            &format!("llama_{slots}slot_concurrent_over_slots_x_single"),
            concurrent_rate / (single_rate * slots as f64),
            "ratio",
            "the server's concurrent rate over single-request rate x slots (what its batching gives on this CPU)",
        );
    }
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}
