//! The pipeline: wires the stage crates together. No stage logic lives here.
//!
//! ```text
//! records ──rayon──► prepare (fundus) ──bounded──► caption (async, N in flight) ──► validate
//!                                                                               │
//!                     journal ◄── commit after the shard is durable ◄── writer thread (shards)
//! ```
//! Channels are bounded so memory stays flat whatever the run's size. An item is done only when its
//! row is in a durable shard and the journal says so; anything else is redone by the next run.

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use retina_captioner::{CaptionError, CaptionRequest, Captioner};
use retina_fundus::{PrepareConfig, PreparedImage};
use retina_journal::{Fingerprint, Journal, ShardCommit};
use retina_prompt::{PromptMode, PromptSet};
use retina_records::{ItemId, ItemState, Provenance, Record, RejectReason};
use retina_shards::{
    AcceptedRow, CommittedShard, DatasetWriter, RejectedRow, ShardConfig, ShardKind,
};
use retina_validate::{Validator, Verdict};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::progress::Progress;

/// Everything the stages need, built once by the caller from the configuration.
pub struct Stages {
    pub prepare: PrepareConfig,
    pub prompts: PromptSet,
    pub captioner: Arc<dyn Captioner>,
    pub validator: Arc<Validator>,
    pub schema_hash: String,
    pub shards: ShardConfig,
    pub concurrency: usize,
}

/// How a run treats earlier work.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub retry_failed: bool,
    pub max_attempts: u32,
    pub allow_mixed_versions: bool,
}

/// What one run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunSummary {
    pub input_items: usize,
    pub already_done: usize,
    pub skipped_failed: usize,
    pub processed: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    pub seconds: f64,
    /// Set when the run stopped early (fatal endpoint error or a stop signal).
    pub stopped: Option<String>,
}

/// The journal's location inside a dataset folder.
pub fn journal_path(out: &Path) -> PathBuf {
    out.join("journal").join("journal.sqlite")
}

/// Where a running build keeps its live figures for `status`.
pub fn run_state_path(out: &Path) -> PathBuf {
    out.join("journal").join("run-state.json")
}

enum Outcome {
    Accepted(Box<AcceptedRow>),
    Rejected(Box<RejectedRow>),
    Failed {
        id: ItemId,
        class: &'static str,
        message: String,
    },
}

struct Prepared {
    record: Record,
    image: Result<PreparedImage, Outcome>,
}

#[derive(Default)]
struct Counters {
    processed: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
}

/// Runs the pipeline over `records` into `out`, resuming whatever an earlier run left.
pub async fn run(
    out: &Path,
    records: Vec<Record>,
    stages: Stages,
    options: &RunOptions,
    stop: Arc<AtomicBool>,
    progress: Progress,
) -> Result<RunSummary> {
    let started = Instant::now();
    std::fs::create_dir_all(out.join("journal"))
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    let journal = Journal::open(&journal_path(out))
        .with_context(|| format!("cannot open the journal in {}", out.display()))?;
    journal.reset_in_flight()?;
    remove_uncommitted_shards(out, &journal)?;

    let info = stages.captioner.info();
    let fingerprint = Fingerprint {
        prompt_hash: stages.prompts.hash().to_string(),
        schema_hash: stages.schema_hash.clone(),
        model: info.model.clone(),
    };
    check_fingerprint(&journal, &fingerprint, options.allow_mixed_versions, out)?;

    let mut summary = RunSummary {
        input_items: records.len(),
        ..RunSummary::default()
    };
    let done = journal.done_ids()?;
    let mut pending = Vec::with_capacity(records.len());
    for record in records {
        if done.contains(record.id.as_str()) {
            summary.already_done += 1;
            continue;
        }
        let attempts = journal.attempts(&record.id)?;
        if attempts > 0 && (!options.retry_failed || attempts >= options.max_attempts) {
            summary.skipped_failed += 1;
            continue;
        }
        pending.push(record);
    }
    progress.start(pending.len() as u64, summary.already_done as u64);

    let writer = DatasetWriter::open(out, stages.shards.clone())
        .with_context(|| format!("cannot open the shard writer in {}", out.display()))?;
    let counters = Arc::new(Counters::default());
    // Enough ready items to keep the captioner's largest limit busy, capped so that prepared
    // images waiting in memory stay in the tens of megabytes.
    let bound = (stages.concurrency * 2).clamp(16, 256);
    let (outcome_tx, outcome_rx) = tokio::sync::mpsc::channel::<Outcome>(bound);
    let writer_thread = {
        let progress = progress.clone();
        std::thread::Builder::new()
            .name("shard-writer".into())
            .spawn(move || write_outcomes(writer, journal, outcome_rx, progress))?
    };

    let (prepared_tx, mut prepared_rx) = tokio::sync::mpsc::channel::<Prepared>(bound);
    let prepare_config = stages.prepare.clone();
    let prepare_stop = stop.clone();
    let prepare_progress = progress.clone();
    let prepare_thread = std::thread::Builder::new()
        .name("image-stage".into())
        .spawn(move || {
            prepare_all(
                pending,
                &prepare_config,
                &prepare_stop,
                prepared_tx,
                &prepare_progress,
            )
        })?;

    let fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let stages = Arc::new(stages);
    let incoming = futures::stream::poll_fn(move |cx| prepared_rx.poll_recv(cx));
    incoming
        .for_each_concurrent(stages.concurrency, |item| {
            let stages = stages.clone();
            let outcome_tx = outcome_tx.clone();
            let counters = counters.clone();
            let stop = stop.clone();
            let fatal = fatal.clone();
            let progress = progress.clone();
            let fingerprint = &fingerprint;
            async move {
                if stop.load(Ordering::Relaxed) {
                    // Not journaled: the next run does it.
                    return;
                }
                let outcome = match caption_one(&stages, fingerprint, item, &progress).await {
                    Ok(outcome) => outcome,
                    Err(message) => {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = fatal.lock() {
                            slot.get_or_insert(message);
                        }
                        return;
                    }
                };
                let counter = match &outcome {
                    Outcome::Accepted(_) => &counters.accepted,
                    Outcome::Rejected(_) => &counters.rejected,
                    Outcome::Failed { .. } => &counters.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                counters.processed.fetch_add(1, Ordering::Relaxed);
                progress.item_done(outcome_label(&outcome));
                if outcome_tx.send(outcome).await.is_err() {
                    // The writer stopped (its error is reported below): take no more work.
                    stop.store(true, Ordering::Relaxed);
                }
            }
        })
        .await;
    drop(outcome_tx);

    let prepare_result = prepare_thread.join();
    let writer_result = writer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the shard writer thread panicked"))?;
    writer_result.context(
        "writing shards failed; committed shards are kept, the rest is redone by the next run",
    )?;
    if prepare_result.is_err() {
        bail!("the image stage panicked; committed shards are kept");
    }
    progress.finish(if stop.load(Ordering::Relaxed) {
        "stopped"
    } else {
        "finished"
    });

    summary.processed = counters.processed.load(Ordering::Relaxed);
    summary.accepted = counters.accepted.load(Ordering::Relaxed);
    summary.rejected = counters.rejected.load(Ordering::Relaxed);
    summary.failed = counters.failed.load(Ordering::Relaxed);
    summary.seconds = started.elapsed().as_secs_f64();
    let fatal = fatal.lock().ok().and_then(|slot| slot.clone());
    if let Some(message) = fatal {
        summary.stopped = Some(message);
    } else if stop.load(Ordering::Relaxed) {
        summary.stopped = Some("stopped by signal".into());
    }
    Ok(summary)
}

/// A crash between a shard's rename and its journal commit leaves a shard the journal does not
/// know; its items are still pending and will be written again, so the file leaves the dataset.
/// It is moved to `orphaned/`, not deleted: a lost journal must never cost data.
fn remove_uncommitted_shards(out: &Path, journal: &Journal) -> Result<()> {
    let committed: std::collections::HashSet<String> =
        journal.shards()?.into_iter().map(|s| s.file_name).collect();
    for kind in [ShardKind::Accepted, ShardKind::Rejected] {
        let dir = out.join(kind.dir_name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "parquet") {
                continue;
            }
            let relative = format!(
                "{}/{}",
                kind.dir_name(),
                entry.file_name().to_string_lossy()
            );
            if !committed.contains(&relative) {
                let orphans = out.join("orphaned");
                std::fs::create_dir_all(&orphans)?;
                let target = orphans.join(entry.file_name());
                tracing::warn!(shard = %relative, "moving a shard the journal never committed to orphaned/ (its items are redone)");
                std::fs::rename(&path, &target)
                    .with_context(|| format!("cannot move uncommitted shard {}", path.display()))?;
            }
        }
    }
    Ok(())
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Accepted(_) => "accepted",
        Outcome::Rejected(_) => "rejected",
        Outcome::Failed { .. } => "failed",
    }
}

fn check_fingerprint(
    journal: &Journal,
    current: &Fingerprint,
    allow_mixed: bool,
    out: &Path,
) -> Result<()> {
    match journal.fingerprint()? {
        Some(previous) if previous != *current && !allow_mixed => bail!(
            "{} was built with prompt {}, schema {}, model {:?}; this run has prompt {}, schema {}, model {:?}. \
             Mixing them would give rows from different prompts in one dataset: choose a new --out, \
             or pass --allow-mixed-versions to add to it anyway",
            out.display(),
            previous.prompt_hash,
            previous.schema_hash,
            previous.model,
            current.prompt_hash,
            current.schema_hash,
            current.model
        ),
        Some(previous) if previous == *current => Ok(()),
        _ => Ok(journal.set_fingerprint(current)?),
    }
}

/// The image stage: decode, crop, measure, resize, encode on the rayon pool.
fn prepare_all(
    records: Vec<Record>,
    config: &PrepareConfig,
    stop: &AtomicBool,
    tx: tokio::sync::mpsc::Sender<Prepared>,
    progress: &Progress,
) {
    use rayon::prelude::*;
    records.into_par_iter().for_each_with(tx, |tx, record| {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let image = prepare_one(&record, config);
        progress.item_prepared();
        // A closed channel means the run is stopping; the item stays pending.
        let _ = tx.blocking_send(Prepared { record, image });
    });
}

fn prepare_one(record: &Record, config: &PrepareConfig) -> Result<PreparedImage, Outcome> {
    let bytes = std::fs::read(&record.image_path).map_err(|err| Outcome::Failed {
        id: record.id.clone(),
        class: "io",
        message: format!("cannot read {}: {err}", record.image_path.display()),
    })?;
    retina_fundus::prepare(&bytes, config).map_err(|err| {
        Outcome::Rejected(Box::new(RejectedRow {
            record: record.clone(),
            facts: None,
            state: ItemState::Rejected,
            reasons: vec![RejectReason::new(
                err.code(),
                format!("{}: {err}", record.image_path.display()),
            )],
            raw_answer: None,
            provenance: None,
        }))
    })
}

/// Captions and validates one prepared item. `Err` carries a fatal message that stops the run.
async fn caption_one(
    stages: &Stages,
    fingerprint: &Fingerprint,
    item: Prepared,
    progress: &Progress,
) -> Result<Outcome, String> {
    let Prepared { record, image } = item;
    let image = match image {
        Ok(image) => image,
        Err(outcome) => return Ok(outcome),
    };
    let info = stages.captioner.info();
    let mode = if info.vision {
        PromptMode::Vision
    } else {
        PromptMode::TextOnly
    };
    let reject = |reasons: Vec<RejectReason>, raw: Option<String>, provenance, facts| {
        Outcome::Rejected(Box::new(RejectedRow {
            record: record.clone(),
            facts: Some(facts),
            state: ItemState::Rejected,
            reasons,
            raw_answer: raw,
            provenance,
        }))
    };
    let prompt = match stages.prompts.render(&record, &image.facts, mode) {
        Ok(prompt) => prompt,
        Err(err) => {
            return Ok(reject(
                vec![RejectReason::new("prompt.render", err.to_string())],
                None,
                None,
                image.facts,
            ));
        }
    };
    let record_arc = Arc::new(record.clone());
    let facts_arc = Arc::new(image.facts.clone());
    let image_bytes = Arc::new(image.bytes);
    let request = CaptionRequest {
        record: record_arc,
        facts: facts_arc,
        prompt,
        image: info.vision.then(|| image_bytes.clone()),
        image_mime: image.format.mime(),
    };
    progress.request_started();
    let reply = stages.captioner.caption(request).await;
    let usage = reply.as_ref().map(|r| r.usage).unwrap_or_default();
    progress.request_finished(usage.prompt_tokens, usage.completion_tokens);
    progress.concurrency_limit(stages.captioner.concurrency_limit());
    let reply = match reply {
        Ok(reply) => reply,
        Err(CaptionError::Fatal { message }) => return Err(message),
        Err(CaptionError::Transient { message }) => {
            return Ok(Outcome::Failed {
                id: record.id.clone(),
                class: "endpoint",
                message,
            });
        }
        Err(CaptionError::Rejected { code, detail }) => {
            return Ok(reject(
                vec![RejectReason::new(code, detail)],
                None,
                None,
                image.facts,
            ));
        }
    };
    let provenance = Provenance {
        model: info.model,
        endpoint: info.endpoint,
        prompt_hash: fingerprint.prompt_hash.clone(),
        schema_hash: fingerprint.schema_hash.clone(),
        captioned_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        usage: reply.usage,
        latency_ms: reply.latency_ms,
    };
    Ok(
        match stages.validator.validate(&reply.raw, &record, &image.facts) {
            Verdict::Accepted(answer) => {
                let image_bytes = Arc::try_unwrap(image_bytes).unwrap_or_else(|arc| (*arc).clone());
                Outcome::Accepted(Box::new(AcceptedRow {
                    record,
                    facts: image.facts,
                    image: image_bytes,
                    image_ext: image.format.extension(),
                    answer,
                    provenance,
                }))
            }
            Verdict::Rejected { reasons, .. } => {
                reject(reasons, Some(reply.raw), Some(provenance), image.facts)
            }
        },
    )
}

/// The writer thread: owns the shard writer and the journal; commits items only after their shard
/// is durable.
fn write_outcomes(
    mut writer: DatasetWriter,
    journal: Journal,
    mut rx: tokio::sync::mpsc::Receiver<Outcome>,
    progress: Progress,
) -> Result<()> {
    while let Some(outcome) = rx.blocking_recv() {
        let committed = match outcome {
            Outcome::Accepted(row) => writer.write_accepted(*row)?,
            Outcome::Rejected(row) => writer.write_rejected(*row)?,
            Outcome::Failed { id, class, message } => {
                tracing::warn!(item = %id, class, "{message}");
                journal.record_failure(&id, class, &message)?;
                Vec::new()
            }
        };
        commit_all(&journal, &committed)?;
        progress.shard_committed(committed.len());
    }
    let committed = writer.finish()?;
    commit_all(&journal, &committed)?;
    progress.shard_committed(committed.len());
    Ok(())
}

fn commit_all(journal: &Journal, committed: &[CommittedShard]) -> Result<()> {
    for shard in committed {
        journal
            .commit_shard(&ShardCommit {
                file_name: shard.file_name.clone(),
                kind: match shard.kind {
                    ShardKind::Accepted => "accepted".into(),
                    ShardKind::Rejected => "rejected".into(),
                },
                rows: shard.rows,
                bytes: shard.bytes,
                blake3: shard.blake3.clone(),
                items: shard.items.clone(),
            })
            .with_context(|| format!("cannot commit shard {} to the journal", shard.file_name))?;
    }
    Ok(())
}
