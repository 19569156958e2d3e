//! Our throughput against a real server (llama.cpp's `llama-server` with SmolLM2-135M on
//! loopback, started and stopped with `scripts/real-endpoint.sh`) over what the server can give:
//! its single-request rate times its slot count. 1.0 means the pipeline keeps every slot busy
//! as if each ran alone; the goal is at least 0.9.
//!
//! Both sides caption the same items with the same prompts at temperature 0 and a fixed seed, so
//! they decode the same tokens: first one request at a time straight through the client, then the
//! whole pipeline (image stage, prompt, client, validator, shards, journal) with one request per
//! slot over those items twice (under other ids).

use super::{BenchContext, Results};
use crate::config::BuildConfig;
use anyhow::{Context, Result, bail};
use retina_captioner::CaptionRequest;
use retina_prompt::PromptMode;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Slots the server is started with (the script's default).
const SLOTS: usize = 4;

/// Stops the server on drop, unless it was running before the benchmark started it.
struct Server {
    script: PathBuf,
    ours: bool,
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.ours {
            let _ = Command::new("bash").arg(&self.script).arg("stop").output();
        }
    }
}

fn start_server() -> Result<(Server, String, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/real-endpoint.sh");
    let status = Command::new("bash").arg(&script).arg("status").output()?;
    let already = String::from_utf8_lossy(&status.stdout).starts_with("running:");
    let output = Command::new("bash")
        .arg(&script)
        .args(["start", "--slots", &SLOTS.to_string()])
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let server = Server {
        script,
        ours: !already,
    };
    if !output.status.success() {
        bail!(
            "scripts/real-endpoint.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let export = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(str::to_string)
            .with_context(|| format!("scripts/real-endpoint.sh start printed no {name}"))
    };
    let url = export("RETINALOGOS_LLAMA_URL")?;
    let model = export("RETINALOGOS_LLAMA_MODEL")?;
    Ok((server, url, model))
}

fn config(url: &str, model: &str, concurrency: usize) -> BuildConfig {
    let mut config = BuildConfig::default();
    config.image.size = 256;
    let c = &mut config.captioner;
    c.endpoint = url.to_string();
    c.model = model.to_string();
    c.vision = false;
    c.concurrency = concurrency;
    c.max_tokens = 600;
    c.temperature = 0.0;
    c.seed = 1;
    c.timeout_secs = 600;
    c.max_retries = 1;
    c.extra_body.insert("repeat_penalty".into(), json!(1.1));
    config
}

pub(crate) fn run(_context: &BenchContext, results: &mut Results) -> Result<()> {
    let (_server, url, model) = start_server()?;
    let mut base = Vec::new();
    for manifest in crate::demo::manifests()? {
        base.extend(manifest.read()?.records);
    }
    base.truncate(SLOTS);

    // One request at a time, straight through the client: the server's single-request rate.
    let stages = crate::make_stages(&config(&url, &model, 1))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut single_seconds = 0.0;
    let mut single_tokens = 0u64;
    for record in &base {
        let bytes = std::fs::read(&record.image_path)?;
        let prepared = retina_fundus::prepare(&bytes, &stages.prepare)
            .map_err(|e| anyhow::anyhow!("{}: {e}", record.image_path.display()))?;
        let prompt = stages
            .prompts
            .render(record, &prepared.facts, PromptMode::TextOnly)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let request = CaptionRequest {
            record: Arc::new(record.clone()),
            facts: Arc::new(prepared.facts.clone()),
            prompt,
            image: None,
            image_mime: prepared.format.mime(),
        };
        let started = Instant::now();
        let reply = runtime.block_on(stages.captioner.caption(request));
        single_seconds += started.elapsed().as_secs_f64();
        if let Ok(reply) = reply {
            single_tokens += u64::from(reply.usage.completion_tokens);
        }
    }
    let single_rate = base.len() as f64 / single_seconds;

    // The pipeline, one request per slot, over the same items twice under other ids.
    let mut records = Vec::new();
    for round in 0..2 {
        for record in &base {
            let mut record = record.clone();
            record.relative_path = format!("{}#{round}", record.relative_path);
            record.id = retina_records::ItemId::from_source(&record.dataset, &record.relative_path);
            records.push(record);
        }
    }
    let items = records.len();
    let work = std::env::temp_dir().join(format!("retinalogos-bench-llama-{}", std::process::id()));
    std::fs::remove_dir_all(&work).ok();
    let options = crate::pipeline::RunOptions {
        retry_failed: true,
        max_attempts: 5,
        allow_mixed_versions: false,
    };
    let started = Instant::now();
    let summary = runtime.block_on(crate::pipeline::run(
        &work,
        records,
        crate::make_stages(&config(&url, &model, SLOTS))?,
        &options,
        Arc::new(AtomicBool::new(false)),
        crate::progress::Progress::hidden(),
    ))?;
    let pipeline_seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&work).ok();
    let ours = items as f64 / pipeline_seconds;

    results.put(
        "llama_single_request_items_per_s",
        single_rate,
        "items/s",
        "real llama-server (SmolLM2-135M, text only, strict schema): one request at a time",
    );
    results.put(
        "llama_single_request_tokens_per_s",
        single_tokens as f64 / single_seconds,
        "tokens/s",
        "completion tokens per second of those single requests",
    );
    results.put(
        "llama_pipeline_items_per_s",
        ours,
        "items/s",
        &format!(
            "our pipeline against it, {SLOTS} in flight ({} accepted, {} rejected, {} failed of {items})",
            summary.accepted, summary.rejected, summary.failed
        ),
    );
    results.put(
        "llama_pipeline_over_slots_x_single",
        ours / (single_rate * SLOTS as f64),
        "ratio",
        &format!("our throughput over single-request rate x {SLOTS} slots (goal >= 0.9)"),
    );
    Ok(())
}
