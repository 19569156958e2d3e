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
use retina_captioner::{CaptionError, CaptionReply, CaptionRequest, Captioner, CaptionerInfo};
use retina_fundus::{PrepareConfig, PreparedImage};
use retina_journal::{Fingerprint, Journal, ShardCommit};
use retina_prompt::{PromptMode, PromptSet};
use retina_records::{ImageFacts, ItemId, ItemState, Provenance, Record, RejectReason};
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
    /// Re-asks after a rejected answer (`prompt.repair_attempts`).
    pub repair_attempts: u32,
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

pub(crate) enum Outcome {
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
///
/// `records` is consumed as a stream through a bounded channel (a `Vec` works too): memory does
/// not grow with the input. Its `size_hint` (upper bound, else lower) is the progress total until
/// the input is exhausted, when the exact figures replace it.
pub async fn run(
    out: &Path,
    records: impl IntoIterator<Item = Record, IntoIter: Send + 'static>,
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

    let mut summary = RunSummary::default();
    let records = records.into_iter();
    let expected = {
        let (low, high) = records.size_hint();
        high.unwrap_or(low) as u64
    };
    let earlier = journal.counts()?;
    let done_before = earlier.accepted + earlier.rejected;
    progress.start(expected.saturating_sub(done_before), done_before);

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

    let (record_tx, record_rx) = std::sync::mpsc::sync_channel::<Record>(bound);
    let input_thread = {
        // One indexed journal read per item through its own read-only connection: no set of
        // done ids in memory, and no waiting on the writer's commits (WAL readers never block).
        let lookup = Journal::open_read_only(&journal_path(out))
            .with_context(|| format!("cannot open the journal in {}", out.display()))?;
        let (retry_failed, max_attempts) = (options.retry_failed, options.max_attempts);
        let stop = stop.clone();
        let progress = progress.clone();
        std::thread::Builder::new()
            .name("input".into())
            .spawn(move || -> Result<InputCounts> {
                let mut counts = InputCounts::default();
                for record in records {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    counts.input_items += 1;
                    let status = lookup.status(&record.id)?;
                    if status.done {
                        counts.already_done += 1;
                        continue;
                    }
                    if status.attempts > 0 && (!retry_failed || status.attempts >= max_attempts) {
                        counts.skipped_failed += 1;
                        continue;
                    }
                    counts.pending += 1;
                    if record_tx.send(record).is_err() {
                        break;
                    }
                }
                progress.set_totals(counts.pending as u64, counts.already_done as u64);
                Ok(counts)
            })?
    };

    let (prepared_tx, mut prepared_rx) = tokio::sync::mpsc::channel::<Prepared>(bound);
    let prepare_config = stages.prepare.clone();
    let prepare_stop = stop.clone();
    let prepare_progress = progress.clone();
    let prepare_thread = std::thread::Builder::new()
        .name("image-stage".into())
        .spawn(move || {
            prepare_all(
                record_rx,
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
                let outcome = caption_one(&stages, fingerprint, item, &progress).await;
                if progress.budget_reached().is_some() {
                    // Like a stop signal: requests in flight finish and are committed, no new one starts.
                    stop.store(true, Ordering::Relaxed);
                }
                let outcome = match outcome {
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
    let input = input_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the input thread panicked"))?
        .context("reading the input or the journal failed; committed shards are kept")?;
    summary.input_items = input.input_items;
    summary.already_done = input.already_done;
    summary.skipped_failed = input.skipped_failed;
    let writer_result = writer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the shard writer thread panicked"))?;
    writer_result.context(
        "writing shards failed; committed shards are kept, the rest is redone by the next run",
    )?;
    if prepare_result.is_err() {
        bail!("the image stage panicked; committed shards are kept");
    }
    let progress_budget = progress.budget_reached();
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
    } else if let Some(message) = progress_budget {
        summary.stopped = Some(message);
    } else if stop.load(Ordering::Relaxed) {
        summary.stopped = Some("stopped by signal".into());
    }
    Ok(summary)
}

/// A crash between a shard's rename and its journal commit leaves a shard the journal does not
/// know; its items are still pending and will be written again, so the file leaves the dataset.
/// It is moved to `orphaned/`, not deleted: a lost journal must never cost data.
pub(crate) fn remove_uncommitted_shards(out: &Path, journal: &Journal) -> Result<()> {
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

pub(crate) fn check_fingerprint(
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

/// What the input thread saw of the records.
#[derive(Debug, Default)]
struct InputCounts {
    input_items: usize,
    already_done: usize,
    skipped_failed: usize,
    pending: usize,
}

/// The image stage: decode, crop, measure, resize, encode on the rayon pool.
fn prepare_all(
    records: std::sync::mpsc::Receiver<Record>,
    config: &PrepareConfig,
    stop: &AtomicBool,
    tx: tokio::sync::mpsc::Sender<Prepared>,
    progress: &Progress,
) {
    use rayon::prelude::*;
    records
        .into_iter()
        .par_bridge()
        .for_each_with(tx, |tx, record| {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let image = prepare_one(&record, config);
            progress.item_prepared();
            // A closed channel means the run is stopping; the item stays pending.
            let _ = tx.blocking_send(Prepared { record, image });
        });
}

pub(crate) fn prepare_one(
    record: &Record,
    config: &PrepareConfig,
) -> Result<PreparedImage, Outcome> {
    let bytes = read_image(&record.image_path).map_err(|message| Outcome::Failed {
        id: record.id.clone(),
        class: "io",
        message,
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

/// Encoded images larger than this are not downloaded (the decoder refuses far smaller ones by
/// pixel count anyway); local files are read as they are.
const MAX_REMOTE_IMAGE_BYTES: u64 = 512 << 20;

/// An image's bytes: a local path through std::fs (unchanged cost), a URL (a manifest with an
/// object-storage root) through retina-storage, one client per bucket for the whole process.
fn read_image(path: &Path) -> Result<Vec<u8>, String> {
    static READER: std::sync::OnceLock<retina_storage::Reader> = std::sync::OnceLock::new();
    READER
        .get_or_init(|| retina_storage::Reader::new(MAX_REMOTE_IMAGE_BYTES))
        .read(path)
        .map_err(|err| match err {
            retina_storage::ReadError::Local(err) => {
                format!("cannot read {}: {err}", path.display())
            }
            retina_storage::ReadError::Remote(err) => format!("cannot read {err}"),
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
    let image_ext = image.format.extension();
    let (request, image_bytes) = match caption_request(&stages.prompts, info.vision, &record, image)
    {
        Ok(request) => request,
        Err(outcome) => return Ok(*outcome),
    };
    let facts = (*request.facts).clone();
    let first = request.clone();
    let mut request = request;
    // Reasons of earlier attempts, kept on the final reject row.
    let mut earlier: Vec<RejectReason> = Vec::new();
    let mut attempt = 0;
    loop {
        progress.request_started();
        let reply = stages.captioner.caption(request).await;
        let usage = reply.as_ref().map(|r| r.usage).unwrap_or_default();
        progress.request_finished(usage.prompt_tokens, usage.completion_tokens);
        if let Ok(reply) = &reply {
            progress.answer_cost(reply);
        }
        progress.concurrency_limit(stages.captioner.concurrency_limit());
        let outcome = judge_reply(
            &stages.validator,
            fingerprint,
            &info,
            record.clone(),
            facts.clone(),
            image_bytes.clone(),
            image_ext,
            reply,
        )?;
        // Only the validator's rejections of an answer are worth re-asking (they carry the
        // answer); a captioner's own rejection (refusal, truncation) is final.
        let Outcome::Rejected(row) = outcome else {
            return Ok(outcome);
        };
        let Some(previous) = row
            .raw_answer
            .clone()
            .filter(|_| attempt < stages.repair_attempts)
        else {
            let mut row = row;
            row.reasons.extend(earlier);
            return Ok(Outcome::Rejected(row));
        };
        attempt += 1;
        let messages: Vec<String> = row.reasons.iter().map(|r| r.to_string()).collect();
        let prompt =
            match stages
                .prompts
                .render_repair(&first.prompt, attempt, &previous, &messages)
            {
                Ok(prompt) => prompt,
                Err(err) => {
                    let mut row = row;
                    row.reasons
                        .push(RejectReason::new("prompt.render", err.to_string()));
                    row.reasons.extend(earlier);
                    return Ok(Outcome::Rejected(row));
                }
            };
        earlier.extend(row.reasons.iter().map(|r| {
            RejectReason::new(
                r.code.clone(),
                format!("(answer {attempt}, re-asked) {}", r.detail),
            )
        }));
        tracing::debug!(item = %record.id, attempt, "re-asking with the validator's messages");
        request = CaptionRequest {
            prompt,
            repair: Some(retina_captioner::RepairTurn {
                attempt,
                previous_answer: previous,
                messages,
            }),
            ..first.clone()
        };
    }
}

/// A rejected item's outcome.
fn rejected(
    record: Record,
    facts: Option<ImageFacts>,
    reasons: Vec<RejectReason>,
    raw_answer: Option<String>,
    provenance: Option<Provenance>,
) -> Outcome {
    Outcome::Rejected(Box::new(RejectedRow {
        record,
        facts,
        state: ItemState::Rejected,
        reasons,
        raw_answer,
        provenance,
    }))
}

/// The caption request for one prepared item (prompt rendered for the captioner's mode) and the
/// image bytes, or the rejection when the prompt cannot be rendered. Batch mode builds its
/// request lines from the same requests.
pub(crate) fn caption_request(
    prompts: &PromptSet,
    vision: bool,
    record: &Record,
    image: PreparedImage,
) -> Result<(CaptionRequest, Arc<Vec<u8>>), Box<Outcome>> {
    let mode = if vision {
        PromptMode::Vision
    } else {
        PromptMode::TextOnly
    };
    let prompt = match prompts.render(record, &image.facts, mode) {
        Ok(prompt) => prompt,
        Err(err) => {
            return Err(Box::new(rejected(
                record.clone(),
                Some(image.facts),
                vec![RejectReason::new("prompt.render", err.to_string())],
                None,
                None,
            )));
        }
    };
    let image_bytes = Arc::new(image.bytes);
    let request = CaptionRequest {
        record: Arc::new(record.clone()),
        facts: Arc::new(image.facts),
        prompt,
        image: vision.then(|| image_bytes.clone()),
        image_mime: image.format.mime(),
        repair: None,
    };
    Ok((request, image_bytes))
}

/// What a captioner's reply makes of an item: validated into accepted or rejected, rejected for
/// the captioner's reason, or failed (retried next run). `Err` carries a fatal message that stops
/// the run. Batch mode judges its joined answers with the same function.
#[allow(clippy::too_many_arguments)]
pub(crate) fn judge_reply(
    validator: &Validator,
    fingerprint: &Fingerprint,
    info: &CaptionerInfo,
    record: Record,
    facts: ImageFacts,
    image_bytes: Arc<Vec<u8>>,
    image_ext: &'static str,
    reply: Result<CaptionReply, CaptionError>,
) -> Result<Outcome, String> {
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
            return Ok(rejected(
                record,
                Some(facts),
                vec![RejectReason::new(code, detail)],
                None,
                None,
            ));
        }
    };
    let provenance = Provenance {
        model: info.model.clone(),
        endpoint: info.endpoint.clone(),
        prompt_hash: fingerprint.prompt_hash.clone(),
        schema_hash: fingerprint.schema_hash.clone(),
        captioned_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        usage: reply.usage,
        latency_ms: reply.latency_ms,
    };
    Ok(match validator.validate(&reply.raw, &record, &facts) {
        Verdict::Accepted(answer) => {
            let image = Arc::try_unwrap(image_bytes).unwrap_or_else(|arc| (*arc).clone());
            Outcome::Accepted(Box::new(AcceptedRow {
                record,
                facts,
                image,
                image_ext,
                answer,
                provenance,
            }))
        }
        Verdict::Rejected { reasons, .. } => rejected(
            record,
            Some(facts),
            reasons,
            Some(reply.raw),
            Some(provenance),
        ),
    })
}

/// The writer thread: owns the shard writer and the journal; commits items only after their shard
/// is durable.
pub(crate) fn write_outcomes(
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
