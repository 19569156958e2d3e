//! Our throughput against a real server (llama.cpp's `llama-server` with SmolLM2-135M on
//! loopback) over what the server can give.
//!
//! Each [`Topology`] is a set of `llama-server` processes of the benchmark's own (the binary and
//! model that `scripts/real-endpoint.sh build` caches; a server the tests may have running is
//! left alone): one server with 1 or 4 slots sharing both cores, and two single-slot replicas
//! with one thread each (the way to scale llama.cpp on a CPU: slots that do not share cores).
//! Over the same items with the same prompts at temperature 0 and a fixed seed it measures:
//!
//! 1. the single-request rate: one request at a time straight through the client, to one server;
//! 2. the server's concurrent rate: as many requests in flight as there are slots, straight through
//!    the client (no image stage, validator, shards or journal);
//! 3. the whole pipeline with `concurrency` = slots (adaptive limiter on, starting at the slot
//!    count as a user who knows the server would configure it; repair re-asks off, so it too
//!    sends one request per item; replicas through `captioner.endpoints`).
//!
//! The figure is (3) over (1) x slots, goal at least 0.9. It is reported in items/s and in
//! completion tokens/s: batched decoding may pick other tokens than a lone request does, so
//! answers of another length would otherwise count as speed. Slots of one server share the same
//! two cores, so there (2) stays far below (1) x slots whatever the client does; (3) over (2)
//! then shows what the pipeline itself costs, and (2) over (1) x slots what the server's batching
//! gives. The replica topology has independent slots, where (1) x slots is a capacity the
//! pipeline can actually be held to.

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

/// A set of servers of one model, each with its own slots and threads.
struct Topology {
    name: &'static str,
    servers: usize,
    slots_per_server: usize,
    threads_per_server: usize,
}

impl Topology {
    fn slots(&self) -> usize {
        self.servers * self.slots_per_server
    }
}

/// One server sharing both cores between 1 and then 4 slots; then two one-slot replicas, one
/// thread (one core) each.
const TOPOLOGIES: [Topology; 3] = [
    Topology {
        name: "1slot",
        servers: 1,
        slots_per_server: 1,
        threads_per_server: 2,
    },
    Topology {
        name: "4slot",
        servers: 1,
        slots_per_server: 4,
        threads_per_server: 2,
    },
    Topology {
        name: "2replicas",
        servers: 2,
        slots_per_server: 1,
        threads_per_server: 1,
    },
];
/// Items per slot in each measured phase: enough that start-up and the last stragglers matter little.
const ITEMS_PER_SLOT: usize = 6;

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
    threads: usize,
    log: &Path,
) -> Result<OwnServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let threads = threads.to_string();
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

fn config(urls: &[String], concurrency: usize) -> BuildConfig {
    let mut config = BuildConfig::default();
    config.image.size = 256;
    // One request per item in every phase: a repair re-ask would be a second request that the
    // client-only phases do not make.
    config.prompt.repair_attempts = 0;
    let c = &mut config.captioner;
    // The first server is the endpoint; with more, all of them are `captioner.endpoints` (which
    // must include the endpoint, as the configuration layers arrange for a user's file).
    c.endpoint = format!("{}/v1", urls.first().map_or("", String::as_str));
    if urls.len() > 1 {
        c.endpoints = urls
            .iter()
            .map(|url| crate::config::ReplicaEntry {
                url: format!("{url}/v1"),
                weight: 1.0,
            })
            .collect();
    }
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
    // A failed request would count as an instant answer.
    if let Some(Err(err)) = replies.iter().find(|r| r.is_err()) {
        bail!("a request to the benchmark's llama-server failed: {err}");
    }
    if stages.captioner.info().endpoint.starts_with("offline:") {
        bail!("the benchmark's configuration fell back to the offline captioner");
    }
    let tokens = replies
        .iter()
        .flatten()
        .map(|r| u64::from(r.usage.completion_tokens))
        .sum();
    Ok((records.len() as f64 / seconds, tokens))
}

/// Items/s and completion tokens/s of one measured phase.
#[derive(Clone, Copy)]
struct Rate {
    items: f64,
    tokens: f64,
}

impl Rate {
    fn new(items: usize, tokens: u64, seconds: f64) -> Rate {
        Rate {
            items: items as f64 / seconds,
            tokens: tokens as f64 / seconds,
        }
    }
}

fn phase(
    runtime: &tokio::runtime::Runtime,
    config: &BuildConfig,
    records: &[Record],
    in_flight: usize,
) -> Result<Rate> {
    let stages = crate::make_stages(config)?;
    // Timed over the requests only: the images are prepared before the clock starts.
    let (items_per_s, tokens) = client_only(runtime, &stages, records, in_flight)?;
    Ok(Rate::new(
        records.len(),
        tokens,
        records.len() as f64 / items_per_s,
    ))
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
    let mut worst_independent = f64::INFINITY;

    for topology in &TOPOLOGIES {
        let slots = topology.slots();
        let servers = (0..topology.servers)
            .map(|i| {
                start_server(
                    &runtime,
                    &binary,
                    &model,
                    topology.slots_per_server,
                    topology.threads_per_server,
                    &work.join(format!("server-{}-{i}.log", topology.name)),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
        let count = slots * ITEMS_PER_SLOT;
        // Warm-up, every server: the first request pays for loading weights into the caches.
        for url in &urls {
            phase(
                &runtime,
                &config(std::slice::from_ref(url), 1),
                &base[..1],
                1,
            )?;
        }

        let single = phase(
            &runtime,
            &config(&urls[..1], 1),
            &items(&base, ITEMS_PER_SLOT, "single"),
            1,
        )?;
        let concurrent = phase(
            &runtime,
            &config(&urls, slots),
            &items(&base, count, "concurrent"),
            slots,
        )?;

        let out = work.join(format!("pipeline-{}", topology.name));
        std::fs::remove_dir_all(&out).ok();
        let options = crate::pipeline::RunOptions {
            retry_failed: true,
            max_attempts: 5,
            allow_mixed_versions: false,
        };
        let progress = crate::progress::Progress::hidden();
        let started = Instant::now();
        let summary = runtime.block_on(crate::pipeline::run(
            &out,
            items(&base, count, "pipeline"),
            crate::make_stages(&config(&urls, slots))?,
            &options,
            Arc::new(AtomicBool::new(false)),
            progress.clone(),
        ))?;
        let seconds = started.elapsed().as_secs_f64();
        let ours = Rate::new(
            count,
            progress.snapshot("finished").completion_tokens,
            seconds,
        );
        drop(servers);

        let name = format!("llama_{}", topology.name);
        let shape = format!(
            "{} server(s) x {} slot(s), {} thread(s) each",
            topology.servers, topology.slots_per_server, topology.threads_per_server
        );
        results.put(
            &format!("{name}_single_request_items_per_s"),
            single.items,
            "items/s",
            &format!(
                "{shape}; SmolLM2-135M, text only, strict schema: one request at a time ({:.0} completion tokens/s)",
                single.tokens
            ),
        );
        results.put(
            &format!("{name}_concurrent_items_per_s"),
            concurrent.items,
            "items/s",
            &format!(
                "{slots} requests in flight straight through the client ({:.0} completion tokens/s)",
                concurrent.tokens
            ),
        );
        results.put(
            &format!("{name}_pipeline_items_per_s"),
            ours.items,
            "items/s",
            &format!(
                "our whole pipeline, concurrency {slots} ({} accepted, {} rejected, {} failed of {count}; {:.0} completion tokens/s)",
                summary.accepted, summary.rejected, summary.failed, ours.tokens
            ),
        );
        let ideal = slots as f64;
        results.put(
            &format!("{name}_pipeline_over_slots_x_single"),
            ours.items / (single.items * ideal),
            "ratio",
            &format!("pipeline items/s over single-request rate x {slots} slot(s) (goal >= 0.9)"),
        );
        let tokens_ratio = ours.tokens / (single.tokens * ideal);
        results.put(
            &format!("{name}_pipeline_over_slots_x_single_tokens"),
            tokens_ratio,
            "ratio",
            "the same in completion tokens/s (answers of other lengths do not count as speed)",
        );
        results.put(
            &format!("{name}_pipeline_over_concurrent"),
            ours.tokens / concurrent.tokens,
            "ratio",
            "pipeline over the server's own concurrent rate, completion tokens/s (what the pipeline costs)",
        );
        results.put(
            &format!("{name}_concurrent_over_slots_x_single"),
            concurrent.tokens / (single.tokens * ideal),
            "ratio",
            "the servers' concurrent rate over single-request rate x slots, completion tokens/s (what slots give on this CPU)",
        );
        if topology.slots_per_server == 1 {
            worst_independent =
                worst_independent.min(tokens_ratio.min(ours.items / (single.items * ideal)));
        }
    }
    results.put(
        "llama_independent_slots_pipeline_over_slots_x_single_worst",
        worst_independent,
        "ratio",
        "lowest pipeline / (single x slots), items or tokens, where slots do not share cores (1 slot; 2 one-slot replicas); goal >= 0.9",
    );
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}
