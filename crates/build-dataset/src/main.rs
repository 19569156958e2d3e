//! `build-dataset`: the command line. It parses options, builds the stages from the configuration
//! and wires them (see `pipeline`); the stage logic lives in the stage crates.

mod batch;
mod bench;
mod caption_banks;
mod check;
mod cli;
mod config;
mod config_layers;
mod demo;
mod endpoint_check;
mod export;
mod finalize;
mod metrics;
mod object_storage;
mod partition;
mod pipeline;
mod plan;
mod progress;
mod signals;
mod status;
mod verify;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cli::{BuildArgs, Cli, Command, LogFormat};
use config::BuildConfig;
use retina_captioner::{Captioner, EndpointConfig, OfflineCaptioner, OpenAiCaptioner};
use retina_fundus::{OutputFormat, PrepareConfig};
use retina_records::Record;
use retina_shards::ShardConfig;
use retina_validate::{CaptionSchema, Rules, Validator};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RETINALOGOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Build(args) => build(args),
        Command::Verify { dir } => verify::run(&dir),
        Command::Status { dir, json } => status::run(&dir, json),
        Command::Config(cli::ConfigCommand::Init { path }) => {
            config_layers::init(&path)?;
            println!("wrote {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(cli::ConfigCommand::Show { config }) => {
            let config = config_layers::load(config.as_deref(), std::env::vars())?;
            print!("{}", config_layers::show(&config)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Qa { dir, baseline } => {
            let summary = retina_qa::write_report_with_baseline(&dir, baseline.as_deref())
                .with_context(|| format!("cannot write the QA report for {}", dir.display()))?;
            let markdown = std::fs::read_to_string(&summary.markdown_path).unwrap_or_default();
            println!("{markdown}");
            println!("{}", summary.html_path.display());
            println!("{}", summary.markdown_path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::DemoData {
            dir,
            eyepacs,
            rfmid,
        } => {
            let root = match dir {
                Some(dir) => dir,
                None => demo::cache_root()?,
            };
            let summary = demo::generate(&root, eyepacs, rfmid)?;
            println!("{} images in {}", summary.images, summary.root.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::CaptionBanks {
            dir,
            out,
            per_class,
        } => caption_banks::run(&dir, &out, per_class),
        Command::Bench(args) => bench::run(&args),
        Command::Check(args) => check::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Manifests(command) => check::run_manifests(command),
        Command::Finalize(args) => finalize::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Batch(args) => batch::run(args),
    }
}

/// Reads the records a build works on: the manifests, the image folders, or the demo.
/// The records of the given manifests and folders (or the demo), read into memory (for `plan`;
/// a build streams them, see `partition::input`).
pub(crate) fn load_records_from(
    manifest: &[std::path::PathBuf],
    images: &[std::path::PathBuf],
    limit: Option<usize>,
) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut manifests = Vec::new();
    for path in manifest {
        manifests.push(object_storage::load_manifest(path)?);
    }
    if manifest.is_empty() && images.is_empty() {
        tracing::info!("no --manifest or --images: building the synthetic demo dataset");
        manifests = demo::manifests()?;
    }
    for manifest in &manifests {
        let read = manifest
            .read()
            .with_context(|| format!("cannot read dataset {}", manifest.name()))?;
        report_problems(manifest.name(), &read.problems);
        records.extend(read.records);
    }
    for dir in images {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "images".into());
        let read = retina_manifest::read_image_folder(dir, &name)
            .with_context(|| format!("cannot list images in {}", dir.display()))?;
        report_problems(&name, &read.problems);
        records.extend(read.records);
    }
    if let Some(limit) = limit {
        records.truncate(limit);
    }
    Ok(records)
}

fn report_problems(dataset: &str, problems: &[retina_manifest::RowProblem]) {
    for problem in problems.iter().take(20) {
        tracing::warn!(dataset, "{problem}");
    }
    if problems.len() > 20 {
        tracing::warn!(dataset, "... and {} more row problems", problems.len() - 20);
    }
}

/// Builds the configured captioner: the embedded offline one unless an endpoint is given.
fn make_captioner(
    config: &BuildConfig,
    schema: &CaptionSchema,
    styles: &[retina_validate::Style],
) -> Result<Arc<dyn Captioner>> {
    let section = &config.captioner;
    if section.endpoint.is_empty() {
        return Ok(Arc::new(
            OfflineCaptioner::new(section.seed).with_styles(styles),
        ));
    }
    if section.model.is_empty() {
        bail!(
            "--endpoint {} needs --model NAME (the model the server serves)",
            section.endpoint
        );
    }
    let api_key = std::env::var(&section.api_key_env)
        .ok()
        .filter(|k| !k.is_empty());
    // Replicas (`captioner.endpoints`) unless `--endpoint` chose one server outside them.
    let replicas = &section.endpoints;
    if !replicas.is_empty() && replicas.iter().any(|r| r.url == section.endpoint) {
        let mut set = Vec::with_capacity(replicas.len());
        let mut unreachable = Vec::new();
        for replica in replicas {
            let one = config::CaptionerSection {
                endpoint: replica.url.clone(),
                ..section.clone()
            };
            // A replica that is down now may come up later (the set probes it again), but one
            // that refuses the request's shape or key would reject items: that stops the run.
            match endpoint_check::preflight(&one, schema.value(), api_key.as_deref()) {
                Err(err) if endpoint_check::is_unreachable(&err) => {
                    tracing::warn!(endpoint = %replica.url, "replica unreachable at start: {err:#}");
                    unreachable.push(err);
                }
                other => other?,
            }
            let client = OpenAiCaptioner::new(endpoint_config(&one, schema, api_key.clone())?)
                .map_err(|err| {
                    anyhow::anyhow!("cannot set up the client of {}: {err}", replica.url)
                })?;
            set.push((client, replica.weight));
        }
        if unreachable.len() == replicas.len()
            && let Some(err) = unreachable.pop()
        {
            return Err(err.context("no replica of captioner.endpoints can be reached"));
        }
        let set = retina_captioner::ReplicaSet::new(set)
            .map_err(|err| anyhow::anyhow!("cannot set up the replicas: {err}"))?;
        return Ok(Arc::new(set));
    }
    endpoint_check::preflight(section, schema.value(), api_key.as_deref())?;
    let client = OpenAiCaptioner::new(endpoint_config(section, schema, api_key)?)
        .map_err(|err| anyhow::anyhow!("cannot set up the endpoint client: {err}"))?;
    Ok(Arc::new(client))
}

/// The endpoint client's settings from the configuration (also what batch mode's request lines
/// are built from, so a batch asks exactly what the online client would).
pub(crate) fn endpoint_config(
    section: &config::CaptionerSection,
    schema: &CaptionSchema,
    api_key: Option<String>,
) -> Result<EndpointConfig> {
    Ok(EndpointConfig {
        base_url: section.endpoint.clone(),
        model: section.model.clone(),
        api_key,
        vision: section.vision,
        image_transport: section.image_transport().map_err(|e| anyhow::anyhow!(e))?,
        schema: schema.value().clone(),
        json_schema_strict: true,
        response_format: section
            .response_format
            .parse()
            .map_err(|e: String| anyhow::anyhow!("captioner.response_format: {e}"))?,
        max_tokens: section.max_tokens,
        temperature: section.temperature,
        seed: Some(section.seed),
        request_timeout: Duration::from_secs(section.timeout_secs),
        max_retries: section.max_retries,
        extra_body: section.extra_body.clone(),
        concurrency: retina_captioner::LimiterConfig {
            initial: section
                .initial_concurrency
                .clamp(1, section.concurrency.max(1)),
            max: section.concurrency,
            adaptive: section.adaptive_concurrency,
        },
        rate_limits: retina_captioner::RateLimitConfig {
            requests: section.rate_limit_requests,
            tokens: section.rate_limit_tokens,
            window: Duration::from_secs(section.rate_limit_window_secs),
        },
        cache_dir: section.cache_dir.clone().filter(|_| section.cache),
    })
}

/// The image stage's settings from the configuration.
pub(crate) fn prepare_config(config: &BuildConfig) -> PrepareConfig {
    PrepareConfig {
        target_size: config.image.size,
        output_format: if config.image.format == "png" {
            OutputFormat::Png
        } else {
            OutputFormat::Jpeg
        },
        jpeg_quality: config.image.jpeg_quality,
        max_pixels: u64::from(config.image.max_megapixels) * 1_000_000,
        ..PrepareConfig::default()
    }
}

/// What a run asks for and judges answers by, from `[prompt] styles`: the schema (with a
/// `caption_variants` object for styles besides `detailed`), the validator, the prompts (their
/// hash covers the styles) and the styles themselves. The online and batch paths share it.
pub(crate) struct CaptionContract {
    pub schema: CaptionSchema,
    pub validator: Validator,
    pub prompts: retina_prompt::PromptSet,
    pub styles: Vec<retina_validate::Style>,
}

pub(crate) fn caption_contract(config: &BuildConfig) -> Result<CaptionContract> {
    let rules = Rules::embedded();
    let mut styles = Vec::new();
    for name in &config.prompt.styles {
        let Some(style) = rules.style(name) else {
            bail!(
                "prompt.styles names {name:?}, which schemas/consistency-rules.toml does not \
                 define (defined: {})",
                rules
                    .styles()
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if !styles
            .iter()
            .any(|s: &retina_validate::Style| s.name() == name)
        {
            styles.push(style.clone());
        }
    }
    let refs: Vec<&retina_validate::Style> = styles.iter().collect();
    let schema = CaptionSchema::embedded().with_variants(&refs);
    let validator = Validator::new(&schema, rules)
        .map_err(|err| anyhow::anyhow!("the caption schema or rules are invalid: {err}"))?;
    let prompt_styles: Vec<retina_prompt::PromptStyle> = styles
        .iter()
        .map(|s| retina_prompt::PromptStyle {
            name: s.name().to_string(),
            guidance: s.guidance().to_string(),
            max_tokens: s.max_tokens(),
        })
        .collect();
    let prompts = retina_prompt::PromptSet::embedded().with_styles(&prompt_styles);
    Ok(CaptionContract {
        schema,
        validator,
        prompts,
        styles,
    })
}

/// Stages as the configuration describes them.
pub(crate) fn make_stages(config: &BuildConfig) -> Result<pipeline::Stages> {
    let CaptionContract {
        schema,
        validator,
        prompts,
        styles,
    } = caption_contract(config)?;
    Ok(pipeline::Stages {
        prepare: prepare_config(config),
        prompts,
        captioner: make_captioner(config, &schema, &styles)?,
        validator: Arc::new(validator),
        schema_hash: schema.hash().to_string(),
        repair_attempts: config.prompt.repair_attempts,
        shards: ShardConfig {
            target_shard_bytes: config.output.shard_megabytes * 1_000_000,
            max_row_group_bytes: config.output.row_group_megabytes * 1_000_000,
            name_prefix: config.output.shard_prefix.clone(),
        },
        // The HTTP captioner limits itself adaptively up to this many; the offline captioner is
        // CPU-bound, where more in flight only costs memory.
        concurrency: if config.captioner.endpoint.is_empty() {
            config.captioner.concurrency.min(16)
        } else {
            config.captioner.concurrency
        },
    })
}

fn effective_config(args: &BuildArgs) -> Result<BuildConfig> {
    let mut config = config_layers::load(args.config.as_deref(), std::env::vars())?;
    if let Some(endpoint) = &args.endpoint {
        config.captioner.endpoint = endpoint.clone();
    }
    if let Some(model) = &args.model {
        config.captioner.model = model.clone();
    }
    config.captioner.cache_dir = Some(args.out.join("cache"));
    if let Some(max_cost) = args.max_cost {
        config.cost.max_usd = max_cost;
    }
    config.check()?;
    Ok(config)
}

fn build(mut args: BuildArgs) -> Result<ExitCode> {
    // A worker of a split crawl is a complete dataset of its own under <out>/workers/<i>.
    let partition = partition::Partition::resolve(args.workers, args.worker_index, |name| {
        std::env::var(name).ok()
    })?;
    if let Some(partition) = partition {
        let dir = partition.dir(&args.out);
        partition::WorkerState::check_same_share(&dir, partition)?;
        tracing::info!(
            worker = partition.index,
            workers = partition.workers,
            "building this worker's share into {}",
            dir.display()
        );
        args.out = dir;
        worker_state(partition, false, Some("running or interrupted".into()), 0)
            .write(&args.out)?;
    }
    // Checked before any work so a mistyped URL costs nothing. A worker publishes to its own
    // folder under the URL, as it builds into its own under --out.
    let upload_to = match args.upload_to.as_deref() {
        Some(text) => {
            let url = object_storage::upload_target(text)?;
            Some(match partition {
                Some(p) => url.join(&format!("workers/{}", p.index))?,
                None => url,
            })
        }
        None => None,
    };
    let config = effective_config(&args)?;
    let input = partition::input(&args.manifest, &args.images, args.limit, partition)?;
    let input_report = input.report.clone();
    let records = input.records;
    let stages = make_stages(&config)?;
    let options = pipeline::RunOptions {
        retry_failed: config.run.retry_failed,
        max_attempts: config.run.max_attempts,
        allow_mixed_versions: args.allow_mixed_versions,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let progress = progress::Progress::new();
    progress.write_state_to(pipeline::run_state_path(&args.out));
    let model = stages.captioner.info().model;
    // The offline captioner is free; an endpoint's model is priced from the table, if listed.
    let price = if config.captioner.endpoint.is_empty() {
        Some(retina_captioner::Price::free())
    } else {
        config.cost.price_table().lookup(&model)
    };
    let budget = Some(config.cost.max_usd).filter(|b| *b > 0.0);
    if budget.is_some() && price.is_none() {
        bail!(
            "--max-cost needs the price of model {model:?}: add [cost.prices.\"{model}\"] with input and output \
             (US dollars per million tokens) to the configuration"
        );
    }
    let ledger = progress::spend_path(&args.out);
    std::fs::create_dir_all(args.out.join("journal"))
        .with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    progress.set_money(
        price,
        budget,
        Some(ledger.clone()),
        progress::read_spend(&ledger)?,
    );
    // Committed shards go up every minute while the run goes on; the rest and the card at the end.
    let background_upload = upload_to.clone().map(|dest| {
        object_storage::BackgroundUpload::start(args.out.clone(), dest, Duration::from_secs(60))
    });
    let summary = runtime.block_on(async {
        signals::stop_on_signals(
            stop.clone(),
            Duration::from_secs(config.run.stop_grace_secs),
        );
        if let Some(addr) = &args.metrics_addr {
            metrics::serve(addr, progress.clone()).await?;
        }
        pipeline::run(
            &args.out,
            records,
            stages,
            &options,
            stop.clone(),
            progress.clone(),
        )
        .await
    });
    if let Some(uploader) = background_upload {
        uploader.stop();
    }
    let summary = summary?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    progress.write_ledger();
    let run_state = progress.snapshot("finished");
    eprintln!(
        "cost: {} this run ({} answers paid for, {} from the cache for free); {} for the dataset so far",
        run_state.cost_usd.map_or_else(
            || "unknown (no price for the model)".to_string(),
            |c| format!("${c:.4}")
        ),
        run_state.billed_requests,
        run_state.cache_hits,
        run_state
            .dataset_cost_usd
            .map_or_else(|| "unknown".to_string(), |c| format!("${c:.4}"))
    );

    if summary.input_items == 0 && partition.is_none() && summary.stopped.is_none() {
        bail!("no images to build from: the manifests and folders given list none");
    }
    write_card(&args.out, &config)?;
    let input_errors = input_report.errors();
    if let Some(partition) = partition {
        let stopped = summary
            .stopped
            .clone()
            .or_else(|| input_errors.first().cloned());
        let owned = input_report
            .owned
            .load(std::sync::atomic::Ordering::Relaxed) as u64;
        worker_state(partition, stopped.is_none(), stopped, owned).write(&args.out)?;
    }
    eprintln!(
        "{} items: {} already done, {} processed now ({} accepted, {} rejected, {} failed) in {:.1} s",
        summary.input_items,
        summary.already_done,
        summary.processed,
        summary.accepted,
        summary.rejected,
        summary.failed,
        summary.seconds
    );
    if summary.skipped_failed > 0 {
        eprintln!(
            "{} items skipped after failing {} times (see run.max_attempts)",
            summary.skipped_failed, config.run.max_attempts
        );
    }
    // The acceptance report reads the committed shards, so it describes the whole dataset.
    let acceptance = caption_banks::write_acceptance(&args.out)?;
    eprint!("{acceptance}");
    eprintln!(
        "acceptance report: {}",
        caption_banks::acceptance_path(&args.out).display()
    );
    if !args.no_qa {
        let qa = retina_qa::write_report(&args.out)
            .with_context(|| format!("cannot write the QA report for {}", args.out.display()))?;
        eprintln!("QA report: {}", qa.html_path.display());
    }
    if let Some(dest) = &upload_to {
        let uploaded = object_storage::upload(&args.out, dest).with_context(|| {
            format!(
                "cannot upload {} to {dest} (the local dataset is complete; run the same command again to retry)",
                args.out.display()
            )
        })?;
        eprintln!(
            "uploaded to {dest}: {} shards ({:.1} MB) now, {} were already there, dataset.json last",
            uploaded.uploaded,
            uploaded.bytes as f64 / 1e6,
            uploaded.already_there
        );
    }
    if let Some(reason) = summary.stopped {
        eprintln!("stopped early: {reason}. Run the same command again to resume.");
        return Ok(ExitCode::from(2));
    }
    if !input_errors.is_empty() {
        for error in &input_errors {
            eprintln!("error: {error}");
        }
        eprintln!("the rows after these errors were not read: fix the label files and run again");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn worker_state(
    partition: partition::Partition,
    finished: bool,
    stopped: Option<String>,
    owned_items: u64,
) -> partition::WorkerState {
    partition::WorkerState {
        partition,
        finished,
        stopped,
        owned_items,
        updated_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    }
}

/// Writes dataset.json from the journal, which is the record of what is durable.
fn write_card(out: &Path, config: &BuildConfig) -> Result<()> {
    let journal = retina_journal::Journal::open_read_only(&pipeline::journal_path(out))?;
    let fingerprint = journal
        .fingerprint()?
        .unwrap_or(retina_journal::Fingerprint {
            prompt_hash: String::new(),
            schema_hash: String::new(),
            model: String::new(),
        });
    let counts = journal.counts()?;
    let shards = journal
        .shards()?
        .into_iter()
        .map(|shard| retina_shards::CardShard {
            path: shard.file_name,
            kind: if shard.kind == "accepted" {
                retina_shards::ShardKind::Accepted
            } else {
                retina_shards::ShardKind::Rejected
            },
            rows: shard.rows,
            bytes: shard.bytes,
            blake3: shard.blake3,
        })
        .collect();
    let endpoint = if config.captioner.endpoint.is_empty() {
        "embedded-offline".to_string()
    } else {
        config.captioner.endpoint.clone()
    };
    let card = retina_shards::DatasetCard {
        format_version: 1,
        created_by: format!("build-dataset {}", env!("CARGO_PKG_VERSION")),
        model: fingerprint.model,
        endpoint,
        prompt_hash: fingerprint.prompt_hash,
        schema_hash: fingerprint.schema_hash,
        counts: retina_shards::CardCounts {
            accepted: counts.accepted,
            rejected: counts.rejected,
            failed: counts.failed,
        },
        shards,
        features: retina_shards::hf_features(),
        config: serde_json::to_value(config)?,
        cost: {
            let spend = progress::read_spend(&progress::spend_path(out))?;
            Some(retina_shards::CardCost {
                requests: spend.requests,
                cache_hits: spend.cache_hits,
                prompt_tokens: spend.prompt_tokens,
                cached_prompt_tokens: spend.cached_prompt_tokens,
                completion_tokens: spend.completion_tokens,
                usd: spend.usd,
            })
        },
    };
    retina_shards::write_card(out, &card)
        .with_context(|| format!("cannot write {}/dataset.json", out.display()))?;
    Ok(())
}
