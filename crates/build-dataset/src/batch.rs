//! `build-dataset batch prepare|submit|status|collect`: the OpenAI Batch API (half the price,
//! answers within 24 h) and vLLM `run-batch` output, through the same image stage, prompts,
//! validator, shard writer and journal as the online pipeline.
//!
//! - `prepare` runs the image stage for pending items (not done, not in a batch still open) and
//!   writes request lines (`custom_id` = item id, body = exactly what the online client sends)
//!   into `<out>/batch/input-NNNNN.jsonl`, split by request count and size.
//! - `submit` uploads each file and creates its batch, saving ids in `<out>/batch/state.json`
//!   after each step, so a restart neither re-uploads nor creates a second batch.
//! - `status` polls and prints every batch.
//! - `collect` downloads finished batches' output and error files, joins them on `custom_id`,
//!   re-runs the (deterministic) image stage for each answered item and judges the answer with
//!   the validator, writing shards and journal as a build does. Error lines and ids that never
//!   came back become failed items, prepared again by the next `prepare`. `--from-file` ingests
//!   vLLM `run-batch` output files instead of asking a server.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use retina_batch::{BatchClient, BatchState, FileEntry, InputWriter, Joined, Joiner, LineOutcome};
use retina_captioner::{CaptionError, CaptionerInfo};
use retina_journal::{Fingerprint, Journal};
use retina_records::{ItemId, Record};
use retina_shards::{DatasetWriter, ShardConfig};
use retina_validate::{CaptionSchema, Validator};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::BuildConfig;
use crate::pipeline::{self, Outcome};

/// `build-dataset batch ...`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub command: BatchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Prepare images and write Batch API input files for every pending item.
    #[command(
        after_help = "Example:\n  build-dataset batch prepare --out out/eyepacs --manifest data-manifests/eyepacs.toml --model gpt-4o-mini"
    )]
    Prepare(PrepareArgs),
    /// Upload prepared files and create their batches (resumable: nothing is sent twice).
    #[command(
        after_help = "Example:\n  OPENAI_API_KEY=... build-dataset batch submit --out out/eyepacs --endpoint https://api.example/v1"
    )]
    Submit(RemoteArgs),
    /// Poll and show every batch of a dataset.
    #[command(after_help = "Example:\n  build-dataset batch status --out out/eyepacs --json")]
    Status(StatusArgs),
    /// Download finished batches, join their answers on custom_id, validate and write shards.
    #[command(
        after_help = "Examples:\n  build-dataset batch collect --out out/eyepacs --manifest data-manifests/eyepacs.toml --endpoint https://api.example/v1 --wait\n  \
        # vLLM: python -m vllm.entrypoints.openai.run_batch -i out/x/batch/input-00001.jsonl -o out1.jsonl --model M\n  \
        build-dataset batch collect --out out/x --manifest m.toml --model M --from-file out1.jsonl"
    )]
    Collect(CollectArgs),
}

/// Where the items come from and how they are asked (as for `build`).
#[derive(Debug, Args, Clone)]
pub struct InputArgs {
    /// Output folder of the dataset.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A data manifest (TOML); repeat for several datasets.
    #[arg(long, value_name = "PATH")]
    pub manifest: Vec<PathBuf>,
    /// A plain folder of unlabelled photographs.
    #[arg(long, value_name = "DIR")]
    pub images: Vec<PathBuf>,
    /// Use only the first N items of the input.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Configuration file (TOML); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Model name written into every request.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Base URL of the endpoint (OpenAI-compatible, with the Files and Batches API).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Accept outputs of a changed prompt, schema or model into an existing dataset.
    #[arg(long)]
    pub allow_mixed_versions: bool,
}

#[derive(Debug, Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Most requests per input file (the Batch API allows 50,000).
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    pub max_requests: usize,
    /// Most megabytes (10^6 bytes) per input file (the Batch API allows 200).
    #[arg(long, default_value_t = 200, value_name = "MB")]
    pub max_megabytes: u64,
}

#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Output folder of the dataset.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Base URL of the endpoint.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Configuration file (TOML); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Keep polling until every submitted batch has finished, then collect.
    #[arg(long)]
    pub wait: bool,
    /// Seconds between polls with --wait.
    #[arg(long, default_value_t = 30.0, value_name = "S")]
    pub poll_secs: f64,
    /// Ingest a vLLM run-batch output file (or any Batch API output/error file) instead of
    /// polling; repeatable. Files whose items appear in it are collected; their items that do
    /// not appear become failed.
    #[arg(long, value_name = "OUT.jsonl")]
    pub from_file: Vec<PathBuf>,
    /// Skip writing the QA report at the end.
    #[arg(long)]
    pub no_qa: bool,
}

/// The batch folder of a dataset.
pub fn batch_dir(out: &Path) -> PathBuf {
    out.join("batch")
}

pub fn run(args: BatchArgs) -> Result<ExitCode> {
    match args.command {
        BatchCommand::Prepare(args) => prepare(&args),
        BatchCommand::Submit(args) => submit(&args),
        BatchCommand::Status(args) => status(&args),
        BatchCommand::Collect(args) => collect(&args),
    }
}

fn load_config(
    config: Option<&Path>,
    endpoint: Option<&String>,
    model: Option<&String>,
) -> Result<BuildConfig> {
    let mut config = crate::config_layers::load(config, std::env::vars())?;
    if let Some(endpoint) = endpoint {
        config.captioner.endpoint = endpoint.clone();
    }
    if let Some(model) = model {
        config.captioner.model = model.clone();
    }
    config.check()?;
    Ok(config)
}

fn input_config(args: &InputArgs) -> Result<BuildConfig> {
    let config = load_config(
        args.config.as_deref(),
        args.endpoint.as_ref(),
        args.model.as_ref(),
    )?;
    if config.captioner.model.is_empty() {
        bail!("batch mode needs --model NAME (the model every request line names)");
    }
    Ok(config)
}

/// What every item is judged against: prompts, schema, validator, and the journal fingerprint.
struct Judge {
    prompts: retina_prompt::PromptSet,
    schema: CaptionSchema,
    validator: Validator,
    fingerprint: Fingerprint,
}

impl Judge {
    fn new(config: &BuildConfig) -> Result<Judge> {
        // The same styles, schema and prompts as an online build of this configuration.
        let crate::CaptionContract {
            schema,
            validator,
            prompts,
            ..
        } = crate::caption_contract(config)?;
        let fingerprint = Fingerprint {
            prompt_hash: prompts.hash().to_string(),
            schema_hash: schema.hash().to_string(),
            model: config.captioner.model.clone(),
        };
        Ok(Judge {
            prompts,
            schema,
            validator,
            fingerprint,
        })
    }
}

fn open_journal(out: &Path, judge: &Judge, allow_mixed: bool) -> Result<Journal> {
    std::fs::create_dir_all(out.join("journal"))
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    let journal = Journal::open(&pipeline::journal_path(out))
        .with_context(|| format!("cannot open the journal in {}", out.display()))?;
    pipeline::check_fingerprint(&journal, &judge.fingerprint, allow_mixed, out)?;
    Ok(journal)
}

fn shard_config(config: &BuildConfig) -> ShardConfig {
    ShardConfig {
        target_shard_bytes: config.output.shard_megabytes * 1_000_000,
        max_row_group_bytes: config.output.row_group_megabytes * 1_000_000,
        name_prefix: config.output.shard_prefix.clone(),
    }
}

/// Runs `outcomes` through the online pipeline's writer thread (shards, then journal commits).
fn write_all(
    out: &Path,
    config: &BuildConfig,
    journal: Journal,
    produce: impl FnOnce(&tokio::sync::mpsc::Sender<Outcome>) -> Result<()>,
) -> Result<()> {
    pipeline::remove_uncommitted_shards(out, &journal)?;
    let writer = DatasetWriter::open(out, shard_config(config))
        .with_context(|| format!("cannot open the shard writer in {}", out.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Outcome>(64);
    let progress = crate::progress::Progress::new();
    let writer_progress = progress.clone();
    let writer_thread = std::thread::Builder::new()
        .name("shard-writer".into())
        .spawn(move || pipeline::write_outcomes(writer, journal, rx, writer_progress))?;
    let produced = produce(&tx);
    drop(tx);
    let written = writer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the shard writer thread panicked"))?;
    progress.finish("finished");
    written.context(
        "writing shards failed; committed shards are kept, the rest is redone by the next collect",
    )?;
    produced
}

fn prepare(args: &PrepareArgs) -> Result<ExitCode> {
    let out = &args.input.out;
    let config = input_config(&args.input)?;
    let judge = Judge::new(&config)?;
    let records =
        crate::load_records_from(&args.input.manifest, &args.input.images, args.input.limit)?;
    if records.is_empty() {
        bail!("no images to prepare: the manifests and folders given list none");
    }
    let journal = open_journal(out, &judge, args.input.allow_mixed_versions)?;
    let dir = batch_dir(out);
    let mut state = BatchState::load(&dir)?;
    let open = state.open_items();
    let done = journal.done_ids()?;
    let (mut already_done, mut in_batch, mut gave_up) = (0usize, 0usize, 0usize);
    let mut pending = Vec::new();
    for record in records {
        if done.contains(record.id.as_str()) {
            already_done += 1;
            continue;
        }
        if open.contains(record.id.as_str()) {
            in_batch += 1;
            continue;
        }
        let attempts = journal.attempts(&record.id)?;
        if attempts > 0 && (!config.run.retry_failed || attempts >= config.run.max_attempts) {
            gave_up += 1;
            continue;
        }
        pending.push(record);
    }
    let endpoint = crate::endpoint_config(&config.captioner, &judge.schema, None)?;
    let prepare_config = crate::prepare_config(&config);
    let limits = retina_batch::Limits {
        max_requests: args.max_requests,
        max_bytes: args.max_megabytes.saturating_mul(1_000_000),
    };
    let mut input = InputWriter::new(&dir, "input", state.next_index(), limits)?;
    let to_prepare = pending.len();
    let mut written = 0usize;
    let mut settled = 0usize;
    write_all(out, &config, journal, |outcomes| {
        // Requests come back from the rayon pool through a bounded channel, so prepared images in
        // memory stay few whatever the run's size; one thread writes the files in order.
        let (line_tx, line_rx) =
            std::sync::mpsc::sync_channel::<Result<(String, serde_json::Value), Outcome>>(64);
        let prompts = &judge.prompts;
        let vision = config.captioner.vision;
        let endpoint = &endpoint;
        let prepare_config = &prepare_config;
        std::thread::scope(|scope| -> Result<()> {
            scope.spawn(move || {
                use rayon::prelude::*;
                pending
                    .into_par_iter()
                    .for_each_with(line_tx, |tx, record| {
                        let line = match pipeline::prepare_one(&record, prepare_config) {
                            Err(outcome) => Err(outcome),
                            Ok(image) => {
                                match pipeline::caption_request(prompts, vision, &record, image) {
                                    Err(outcome) => Err(*outcome),
                                    Ok((request, _)) => Ok((
                                        record.id.as_str().to_string(),
                                        retina_captioner::chat_request_body(
                                            endpoint,
                                            &request,
                                            endpoint.max_tokens,
                                        ),
                                    )),
                                }
                            }
                        };
                        let _ = tx.send(line);
                    });
            });
            for line in line_rx {
                match line {
                    Ok((id, body)) => {
                        input.push(&id, &body)?;
                        written += 1;
                    }
                    Err(outcome) => {
                        settled += 1;
                        if outcomes.blocking_send(outcome).is_err() {
                            bail!("the shard writer stopped");
                        }
                    }
                }
            }
            Ok(())
        })
    })?;
    let files = input.finish()?;
    for file in &files {
        state.files.push(FileEntry::from_input(file));
    }
    state.save(&dir)?;
    write_card(out, &config, "batch")?;
    for file in &files {
        println!(
            "{}\t{} requests\t{} bytes",
            dir.join(&file.name).display(),
            file.requests,
            file.bytes
        );
    }
    eprintln!(
        "{to_prepare} items prepared: {written} requests in {} files, {settled} settled at the image stage \
         (rejected or failed); {already_done} already done, {in_batch} in open batches, {gave_up} given up \
         after run.max_attempts",
        files.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn client(config: &BuildConfig) -> Result<BatchClient> {
    if config.captioner.endpoint.is_empty() {
        bail!("this needs --endpoint URL (the server holding the batches)");
    }
    let api_key = std::env::var(&config.captioner.api_key_env)
        .ok()
        .filter(|k| !k.is_empty());
    // Uploads and downloads of 200 MB files take minutes, whatever a chat request's timeout is.
    let timeout = Duration::from_secs(config.captioner.timeout_secs.max(600));
    Ok(BatchClient::new(
        &config.captioner.endpoint,
        api_key,
        timeout,
    )?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn submit(args: &RemoteArgs) -> Result<ExitCode> {
    let config = load_config(args.config.as_deref(), args.endpoint.as_ref(), None)?;
    let client = client(&config)?;
    let dir = batch_dir(&args.out);
    let mut state = BatchState::load(&dir)?;
    let (mut uploaded, mut created, mut kept) = (0usize, 0usize, 0usize);
    runtime()?.block_on(async {
        for index in 0..state.files.len() {
            let entry = &state.files[index];
            if entry.collected || entry.batch_id.is_some() {
                kept += 1;
                continue;
            }
            let name = entry.name.clone();
            if entry.input_file_id.is_none() {
                let id = client.upload(&dir.join(&name)).await?;
                state.files[index].input_file_id = Some(id);
                state.save(&dir)?;
                uploaded += 1;
            }
            let file_id = state.files[index].input_file_id.clone().unwrap_or_default();
            // A crash between creating the batch and saving its id must not pay twice.
            let batch = match client.find_batch_for_file(&file_id, 3).await? {
                Some(found) => found,
                None => {
                    created += 1;
                    client
                        .create_batch(&file_id, &json!({"build_dataset_file": name}))
                        .await?
                }
            };
            let entry = &mut state.files[index];
            entry.batch_id = Some(batch.id.clone());
            entry.status = Some(batch.status.clone());
            state.save(&dir)?;
            eprintln!("{name}: batch {} ({})", batch.id, batch.status);
        }
        anyhow::Ok(())
    })?;
    eprintln!("{uploaded} files uploaded, {created} batches created, {kept} already submitted");
    Ok(ExitCode::SUCCESS)
}

/// Polls every submitted, uncollected batch once and records what the server says.
async fn poll(client: &BatchClient, state: &mut BatchState, dir: &Path) -> Result<()> {
    for entry in state.files.iter_mut() {
        let Some(id) = entry.batch_id.clone() else {
            continue;
        };
        if entry.collected || entry.is_terminal() {
            continue;
        }
        let info = client.batch(&id).await?;
        if let Some(errors) = info.errors.as_ref().filter(|e| !e.is_null()) {
            tracing::warn!(batch = %id, file = %entry.name, "batch errors: {errors}");
        }
        entry.status = Some(info.status);
        entry.output_file_id = info.output_file_id;
        entry.error_file_id = info.error_file_id;
    }
    state.save(dir)?;
    Ok(())
}

fn status(args: &StatusArgs) -> Result<ExitCode> {
    let config = load_config(
        args.remote.config.as_deref(),
        args.remote.endpoint.as_ref(),
        None,
    )?;
    let dir = batch_dir(&args.remote.out);
    let mut state = BatchState::load(&dir)?;
    if !config.captioner.endpoint.is_empty() {
        let client = client(&config)?;
        runtime()?.block_on(poll(&client, &mut state, &dir))?;
    }
    if args.json {
        let files: Vec<_> = state
            .files
            .iter()
            .map(|f| {
                json!({"file": f.name, "requests": f.requests, "bytes": f.bytes,
                       "input_file_id": f.input_file_id, "batch_id": f.batch_id,
                       "status": f.status, "collected": f.collected})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"files": files}))?
        );
    } else {
        for f in &state.files {
            println!(
                "{}\t{} requests\t{}\t{}",
                f.name,
                f.requests,
                f.batch_id.as_deref().unwrap_or("not submitted"),
                if f.collected {
                    "collected"
                } else {
                    f.status.as_deref().unwrap_or("prepared")
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What one collect does with one batch file's results.
struct Collected {
    accepted: u64,
    rejected: u64,
    failed: u64,
    skipped: u64,
}

fn collect(args: &CollectArgs) -> Result<ExitCode> {
    let out = &args.input.out;
    let config = input_config(&args.input)?;
    let judge = Judge::new(&config)?;
    let dir = batch_dir(out);
    let mut state = BatchState::load(&dir)?;

    // Which files to collect now, and the result files holding their answers.
    let mut chosen: Vec<usize> = Vec::new();
    let mut result_files: Vec<PathBuf> = Vec::new();
    let endpoint_label = if args.from_file.is_empty() {
        config.captioner.endpoint.clone()
    } else {
        format!(
            "batch-file:{}",
            args.from_file
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    if !args.from_file.is_empty() {
        let mut seen = HashSet::new();
        for path in &args.from_file {
            collect_ids(path, &mut seen)?;
        }
        chosen = (0..state.files.len())
            .filter(|&i| {
                let f = &state.files[i];
                !f.collected && f.items.iter().any(|id| seen.contains(id))
            })
            .collect();
        result_files.clone_from(&args.from_file);
    } else {
        let client = client(&config)?;
        let rt = runtime()?;
        loop {
            rt.block_on(poll(&client, &mut state, &dir))?;
            let waiting = state
                .files
                .iter()
                .filter(|f| !f.collected && f.batch_id.is_some() && !f.is_terminal())
                .count();
            if waiting == 0 || !args.wait {
                if waiting > 0 {
                    eprintln!(
                        "{waiting} batches still running; collect again later (or pass --wait)"
                    );
                }
                break;
            }
            std::thread::sleep(Duration::from_secs_f64(args.poll_secs.max(0.05)));
        }
        for (i, entry) in state.files.iter().enumerate() {
            if entry.collected || !entry.is_terminal() {
                continue;
            }
            for (file_id, name) in [
                (&entry.output_file_id, entry.output_name()),
                (&entry.error_file_id, entry.error_name()),
            ] {
                let Some(file_id) = file_id else { continue };
                let path = dir.join(&name);
                if !path.exists() {
                    rt.block_on(client.download(file_id, &path))?;
                }
                result_files.push(path);
            }
            chosen.push(i);
        }
    }
    if chosen.is_empty() {
        eprintln!("nothing to collect");
        return Ok(ExitCode::SUCCESS);
    }

    let expected: Vec<String> = chosen
        .iter()
        .flat_map(|&i| state.files[i].items.iter().cloned())
        .collect();
    let mut joiner = Joiner::new(expected);
    for path in &result_files {
        joiner.ingest_path(path)?;
    }
    let joined = joiner.finish();
    report_join(&joined);

    let records =
        crate::load_records_from(&args.input.manifest, &args.input.images, args.input.limit)?;
    let by_id: HashMap<String, Record> = records
        .into_iter()
        .map(|r| (r.id.as_str().to_string(), r))
        .collect();
    let journal = open_journal(out, &judge, args.input.allow_mixed_versions)?;
    let done = journal.done_ids()?;
    let info = CaptionerInfo {
        model: config.captioner.model.clone(),
        endpoint: endpoint_label.clone(),
        vision: config.captioner.vision,
    };
    let mut counts = Collected {
        accepted: 0,
        rejected: 0,
        failed: 0,
        skipped: 0,
    };
    let prepare_config = crate::prepare_config(&config);
    let mut work: Vec<(Record, Option<LineOutcome>)> = Vec::new();
    let mut results = joined.results;
    for &i in &chosen {
        for id in &state.files[i].items {
            if done.contains(id) {
                // Already committed by a collect that crashed before saving the state.
                counts.skipped += 1;
                continue;
            }
            let Some(record) = by_id.get(id) else {
                tracing::warn!(item = %id, "answered item is not in the inputs given; it stays pending");
                counts.skipped += 1;
                continue;
            };
            work.push((record.clone(), results.remove(id)));
        }
    }
    let fatal: std::sync::Mutex<Option<String>> = std::sync::Mutex::default();
    let price = config.cost.price_table().lookup(&config.captioner.model);
    let mut spend = retina_captioner::Spend::default();
    write_all(out, &config, journal, |outcomes| {
        use rayon::prelude::*;
        let judged: Vec<(&'static str, Option<Usage>)> = work
            .into_par_iter()
            .map_with(outcomes.clone(), |tx, (record, line)| {
                let outcome = judge_line(&judge, &info, &prepare_config, record, line);
                let (outcome, usage) = match outcome {
                    Ok(judged) => judged,
                    Err(message) => {
                        if let Ok(mut slot) = fatal.lock() {
                            slot.get_or_insert(message);
                        }
                        return ("fatal", None);
                    }
                };
                let label = match &outcome {
                    Outcome::Accepted(_) => "accepted",
                    Outcome::Rejected(_) => "rejected",
                    Outcome::Failed { .. } => "failed",
                };
                if tx.blocking_send(outcome).is_err() {
                    return ("unsent", None);
                }
                (label, usage)
            })
            .collect();
        for (label, usage) in judged {
            if let Some(usage) = usage {
                spend.add_batch_answer(
                    price.as_ref(),
                    u64::from(usage.prompt_tokens),
                    u64::from(usage.cached_prompt_tokens),
                    u64::from(usage.completion_tokens),
                );
            }
            match label {
                "accepted" => counts.accepted += 1,
                "rejected" => counts.rejected += 1,
                "failed" => counts.failed += 1,
                _ => counts.skipped += 1,
            }
        }
        Ok(())
    })?;
    if let Some(message) = fatal.lock().ok().and_then(|slot| slot.clone()) {
        bail!("{message}");
    }
    // The answers are priced at the batch rate into the dataset's spend ledger, after the journal
    // commit: a crash in between loses their cost from the ledger (a lower bound, as online),
    // never counts it twice, since the next collect skips the committed items.
    add_to_ledger(out, &spend)?;
    for &i in &chosen {
        state.files[i].collected = true;
    }
    state.save(&dir)?;
    write_card(out, &config, &endpoint_label)?;
    eprintln!(
        "{} batch files collected: {} accepted, {} rejected, {} failed (prepared again by the next \
         `batch prepare`), {} skipped",
        chosen.len(),
        counts.accepted,
        counts.rejected,
        counts.failed,
        counts.skipped
    );
    if !args.no_qa {
        let qa = retina_qa::write_report(out)
            .with_context(|| format!("cannot write the QA report for {}", out.display()))?;
        eprintln!("QA report: {}", qa.html_path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the `custom_id`s of a result file (unreadable lines are reported by the join).
fn collect_ids(path: &Path, into: &mut HashSet<String>) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read batch output {}", path.display()))?;
    for line in text.lines() {
        if let Ok((id, _)) = retina_batch::parse_line(line) {
            into.insert(id);
        }
    }
    Ok(())
}

fn report_join(joined: &Joined) {
    for problem in joined.problems.iter().take(20) {
        tracing::warn!("unreadable result line: {problem}");
    }
    if !joined.unknown.is_empty() {
        tracing::warn!(
            count = joined.unknown.len(),
            first = %joined.unknown[0],
            "results for ids no collected file asked for (ignored)"
        );
    }
    if !joined.duplicates.is_empty() {
        tracing::warn!(
            count = joined.duplicates.len(),
            first = %joined.duplicates[0],
            "ids answered more than once (the first answer is kept)"
        );
    }
    if !joined.missing.is_empty() {
        tracing::warn!(
            count = joined.missing.len(),
            first = %joined.missing[0],
            "asked ids with no result line: they become failed items"
        );
    }
}

/// What one batch answer used, as its completion body reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    prompt_tokens: u32,
    cached_prompt_tokens: u32,
    completion_tokens: u32,
}

/// Adds `spend` to the dataset's spend ledger (`journal/spend.json`), which `dataset.json`
/// reports.
fn add_to_ledger(out: &Path, spend: &retina_captioner::Spend) -> Result<()> {
    if spend.requests == 0 {
        return Ok(());
    }
    let path = crate::progress::spend_path(out);
    let total = crate::progress::read_spend(&path)?.plus(spend);
    crate::progress::write_spend(&path, &total)
        .with_context(|| format!("cannot record the batch spend in {}", path.display()))
}

/// One item's outcome from its result line (or its absence), through the image stage, the
/// captioner's completion parser and the validator, as the online pipeline judges it; with the
/// usage of the answer when the line held a completion (billed, whatever the validator says).
fn judge_line(
    judge: &Judge,
    info: &CaptionerInfo,
    prepare_config: &retina_fundus::PrepareConfig,
    record: Record,
    line: Option<LineOutcome>,
) -> Result<(Outcome, Option<Usage>), String> {
    let failed = |id: &ItemId, message: String| Outcome::Failed {
        id: id.clone(),
        class: "batch",
        message,
    };
    let body = match line {
        None => {
            return Ok((
                failed(
                    &record.id,
                    "no result line for this item in the batch's output or error file".into(),
                ),
                None,
            ));
        }
        Some(LineOutcome::Error {
            status_code,
            code,
            message,
        }) => {
            return Ok((
                failed(
                    &record.id,
                    format!(
                        "batch request failed (status {}, code {}): {message}",
                        status_code.map_or_else(|| "none".to_string(), |s| s.to_string()),
                        code.as_deref().unwrap_or("none")
                    ),
                ),
                None,
            ));
        }
        Some(LineOutcome::Response { body, .. }) => body,
    };
    let image = match pipeline::prepare_one(&record, prepare_config) {
        Ok(image) => image,
        Err(outcome) => return Ok((outcome, None)),
    };
    let image_ext = image.format.extension();
    let (request, image_bytes) =
        match pipeline::caption_request(&judge.prompts, info.vision, &record, image) {
            Ok(request) => request,
            Err(outcome) => return Ok((*outcome, None)),
        };
    let facts = (*request.facts).clone();
    let reply = retina_captioner::parse_chat_completion(&body, &request).map_err(|err| match err {
        // A batch answer cannot stop a run: what would be fatal online fails the item.
        CaptionError::Fatal { message } => CaptionError::Transient { message },
        other => other,
    });
    let usage = reply.as_ref().ok().map(|reply| Usage {
        prompt_tokens: reply.usage.prompt_tokens,
        cached_prompt_tokens: reply.cached_prompt_tokens,
        completion_tokens: reply.usage.completion_tokens,
    });
    pipeline::judge_reply(
        &judge.validator,
        &judge.fingerprint,
        info,
        record,
        facts,
        image_bytes,
        image_ext,
        reply,
    )
    .map(|outcome| (outcome, usage))
}

/// dataset.json as `build` writes it; without an endpoint (vLLM `run-batch` files) the card names
/// the batch files instead of the embedded offline captioner.
fn write_card(out: &Path, config: &BuildConfig, label: &str) -> Result<()> {
    if !config.captioner.endpoint.is_empty() {
        return crate::write_card(out, config);
    }
    let mut config = config.clone();
    config.captioner.endpoint = label.to_string();
    crate::write_card(out, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_line_and_an_error_line_fail_the_item() {
        let mut config = BuildConfig::default();
        config.captioner.model = "m".into();
        let judge = Judge::new(&config).unwrap();
        let info = CaptionerInfo {
            model: "m".into(),
            endpoint: "e".into(),
            vision: true,
        };
        let record = Record::new("d", "a.jpg", PathBuf::from("/nonexistent/a.jpg"));
        let prepare = crate::prepare_config(&config);
        let (outcome, usage) = judge_line(&judge, &info, &prepare, record.clone(), None).unwrap();
        assert_eq!(usage, None, "nothing answered, nothing billed");
        assert!(
            matches!(outcome, Outcome::Failed { class: "batch", ref message, .. } if message.contains("no result line"))
        );
        let error = LineOutcome::Error {
            status_code: Some(500),
            code: Some("server_error".into()),
            message: "boom".into(),
        };
        let (outcome, usage) =
            judge_line(&judge, &info, &prepare, record.clone(), Some(error)).unwrap();
        assert_eq!(usage, None);
        assert!(
            matches!(outcome, Outcome::Failed { ref message, .. } if message.contains("boom") && message.contains("500"))
        );
        // An answer for an image that cannot be read fails at the image stage, as online.
        let answer = LineOutcome::Response {
            status_code: 200,
            body: "{}".into(),
        };
        let (outcome, _) = judge_line(&judge, &info, &prepare, record, Some(answer)).unwrap();
        assert!(matches!(outcome, Outcome::Failed { class: "io", .. }));
    }
}
