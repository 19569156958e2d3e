//! `build-dataset`: the command line. It parses options, builds the stages from the configuration
//! and wires them (see `pipeline`); the stage logic lives in the stage crates.

mod bench;
mod check;
mod cli;
mod config;
mod config_layers;
mod demo;
mod endpoint_check;
mod metrics;
mod pipeline;
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
        Command::Bench(args) => bench::run(&args),
        Command::Check(args) => check::run(&args),
    }
}

/// Reads the records a build works on: the manifests, the image folders, or the demo.
fn load_records(args: &BuildArgs) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut manifests = Vec::new();
    for path in &args.manifest {
        manifests.push(
            retina_manifest::Manifest::from_path(path)
                .with_context(|| format!("cannot load data manifest {}", path.display()))?,
        );
    }
    if args.manifest.is_empty() && args.images.is_empty() {
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
    for dir in &args.images {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "images".into());
        let read = retina_manifest::read_image_folder(dir, &name)
            .with_context(|| format!("cannot list images in {}", dir.display()))?;
        report_problems(&name, &read.problems);
        records.extend(read.records);
    }
    if let Some(limit) = args.limit {
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
fn make_captioner(config: &BuildConfig, schema: &CaptionSchema) -> Result<Arc<dyn Captioner>> {
    let section = &config.captioner;
    if section.endpoint.is_empty() {
        return Ok(Arc::new(OfflineCaptioner::new(section.seed)));
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
    endpoint_check::preflight(section, schema.value(), api_key.as_deref())?;
    let client = OpenAiCaptioner::new(EndpointConfig {
        base_url: section.endpoint.clone(),
        model: section.model.clone(),
        api_key,
        vision: section.vision,
        schema: schema.value().clone(),
        json_schema_strict: true,
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
        cache_dir: section.cache_dir.clone().filter(|_| section.cache),
    })
    .map_err(|err| anyhow::anyhow!("cannot set up the endpoint client: {err}"))?;
    Ok(Arc::new(client))
}

/// Stages as the configuration describes them.
pub(crate) fn make_stages(config: &BuildConfig) -> Result<pipeline::Stages> {
    let schema = CaptionSchema::embedded();
    let validator = Validator::new(&schema, Rules::embedded())
        .map_err(|err| anyhow::anyhow!("the caption schema or rules are invalid: {err}"))?;
    Ok(pipeline::Stages {
        prepare: PrepareConfig {
            target_size: config.image.size,
            output_format: if config.image.format == "png" {
                OutputFormat::Png
            } else {
                OutputFormat::Jpeg
            },
            jpeg_quality: config.image.jpeg_quality,
            max_pixels: u64::from(config.image.max_megapixels) * 1_000_000,
            ..PrepareConfig::default()
        },
        prompts: retina_prompt::PromptSet::embedded(),
        captioner: make_captioner(config, &schema)?,
        validator: Arc::new(validator),
        schema_hash: schema.hash().to_string(),
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
    config.check()?;
    Ok(config)
}

fn build(args: BuildArgs) -> Result<ExitCode> {
    let config = effective_config(&args)?;
    let records = load_records(&args)?;
    if records.is_empty() {
        bail!("no images to build from: the manifests and folders given list none");
    }
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
    let summary = runtime.block_on(async {
        signals::stop_on_signals(
            stop.clone(),
            Duration::from_secs(config.run.stop_grace_secs),
        );
        if let Some(addr) = &args.metrics_addr {
            metrics::serve(addr, progress.clone()).await?;
        }
        pipeline::run(&args.out, records, stages, &options, stop.clone(), progress).await
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));

    write_card(&args.out, &config)?;
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
    if !args.no_qa {
        let qa = retina_qa::write_report(&args.out)
            .with_context(|| format!("cannot write the QA report for {}", args.out.display()))?;
        eprintln!("QA report: {}", qa.html_path.display());
    }
    if let Some(reason) = summary.stopped {
        eprintln!("stopped early: {reason}. Run the same command again to resume.");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
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
    };
    retina_shards::write_card(out, &card)
        .with_context(|| format!("cannot write {}/dataset.json", out.display()))?;
    Ok(())
}
