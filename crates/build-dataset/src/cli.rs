//! Command-line interface: every subcommand and option, with examples in `--help`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "build-dataset",
    version,
    about = "Turn labelled colour fundus photographs into a caption-image dataset (sharded Parquet).",
    long_about = "Turn labelled colour fundus photographs into a caption-image dataset (sharded Parquet).\n\n\
        With no arguments but --out, `build` generates a synthetic demo dataset and captions it with \
        the embedded offline captioner: no endpoint, key or download needed.",
    after_help = "Examples:\n  build-dataset build --out out/demo\n  build-dataset build --out out/eyepacs --manifest data-manifests/eyepacs.toml --endpoint http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct\n  build-dataset verify out/demo\n  build-dataset qa out/demo"
)]
pub struct Cli {
    /// Log format for messages on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build (or resume) a dataset: read manifests, prepare images, caption, validate, write shards.
    #[command(after_help = "Examples:\n  \
        # the demo: synthetic fundus photographs, embedded offline captioner\n  \
        build-dataset build --out out/demo\n  \
        # a real dataset against a local vLLM server\n  \
        build-dataset build --out out/aptos --manifest data-manifests/aptos2019.toml \\\n      \
        --endpoint http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct\n  \
        # a plain folder of unlabelled photographs, first 100 only\n  \
        build-dataset build --out out/folder --images /data/photos --limit 100\n\n\
        Running the same command again resumes: items already in a committed shard are skipped.")]
    Build(BuildArgs),
    /// Check a built dataset: every shard readable and matching its checksum, counts matching the
    /// journal, no duplicate ids. Exits non-zero on any inconsistency.
    #[command(
        after_help = "Examples:\n  build-dataset verify out/demo\n  build-dataset verify s3://datasets/fundus-v1   # a published copy: card and shards (no journal)"
    )]
    Verify {
        /// The dataset folder (the --out of a build), or the URL it was uploaded to.
        dir: PathBuf,
    },
    /// Show how a build is going (also one running in another process), from its journal.
    #[command(
        after_help = "Examples:\n  build-dataset status out/demo\n  watch -n 5 build-dataset status out/demo\n  build-dataset status out/demo --json"
    )]
    Status {
        /// The dataset folder (the --out of a build).
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented example configuration, or show the effective one (secrets redacted).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write the QA report (qa/report.html, .json, .md) for a built dataset.
    #[command(
        after_help = "Examples:\n  build-dataset qa out/demo && xdg-open out/demo/qa/report.html\n  build-dataset qa out/new-prompt --baseline out/old-prompt"
    )]
    Qa {
        /// The dataset folder (the --out of a build).
        dir: PathBuf,
        /// Another build to compare with side by side (read only; e.g. before a prompt change).
        #[arg(long, value_name = "OTHER")]
        baseline: Option<PathBuf>,
    },
    /// Export a built dataset's accepted captions grouped by label class (dr_grade=N,
    /// glaucoma=..., amd=..., unlabelled), one JSON line per class with every caption style.
    #[command(
        after_help = "Example:\n  build-dataset caption-banks out/demo --out banks.jsonl --per-class 200"
    )]
    CaptionBanks {
        /// The dataset folder (the --out of a build).
        dir: PathBuf,
        /// The JSON Lines file to write.
        #[arg(long)]
        out: PathBuf,
        /// Most captions kept per class (0: all).
        #[arg(long, default_value_t = 0)]
        per_class: usize,
    },
    /// Generate the synthetic demo datasets (EyePACS and RFMiD layouts) into a folder.
    #[command(
        after_help = "Example:\n  build-dataset demo-data --dir /tmp/demo --eyepacs 240 --rfmid 40"
    )]
    DemoData {
        /// Where to write them (default: the cache folder the demo build uses).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Number of images in the EyePACS-layout dataset.
        #[arg(long, default_value_t = 240)]
        eyepacs: usize,
        /// Number of images in the RFMiD-layout dataset.
        #[arg(long, default_value_t = 40)]
        rfmid: usize,
    },
    /// Run the benchmark scenarios (build with --release) and write a results JSON.
    #[command(
        after_help = "Example:\n  cargo run --release --bin build-dataset -- bench --results target/bench/results.json"
    )]
    Bench(BenchArgs),
    /// Check data manifests against the files on disk, without running the pipeline: counts per
    /// label, missing images, unreadable rows (file and line), unknown values, duplicate ids.
    /// Exits non-zero if there is any problem.
    #[command(
        after_help = "Examples:\n  build-dataset check --manifest data-manifests/eyepacs.toml --root /data/eyepacs\n  build-dataset check --manifest data-manifests/papila-od.toml --manifest data-manifests/papila-os.toml --root /data/papila"
    )]
    Check(crate::check::CheckArgs),
    /// Export a built dataset to a trainer's input format: RetinaLogos JSONL + META YAML, LLaVA
    /// conversation JSON, or webdataset tar shards (streamed; filters and the stable split apply).
    #[command(
        after_help = "Examples:\n  build-dataset export out/demo --format retinalogos --out out/demo-retinalogos\n  build-dataset export out/demo --format webdataset --out out/demo-wds --samples-per-shard 1000\n  build-dataset export out/demo --format llava --out out/demo-llava --split train --quality good"
    )]
    Export(crate::export::ExportArgs),
    /// Data manifests: `manifests check MANIFEST... [--root DIR]` (the same report as `check`).
    #[command(subcommand)]
    Manifests(crate::check::ManifestsCommand),
    /// Merge the cards of a crawl split over workers (`build --workers N`) into one
    /// `DIR/dataset.json`, after verifying every worker's shards. Exits non-zero, naming them,
    /// if a worker is missing or incomplete.
    #[command(
        after_help = "Examples:\n  build-dataset finalize out/crawl\n  build-dataset finalize out/crawl --workers 64"
    )]
    Finalize(crate::finalize::FinalizeArgs),
    /// Estimate a build before spending anything: requests, prompt and completion tokens (from
    /// the real prompts of a sample of items), cost at the configured price, and wall time.
    #[command(
        after_help = "Examples:\n  build-dataset plan --manifest data-manifests/eyepacs.toml --model gpt-4o-mini --endpoint https://api.example/v1\n  build-dataset plan --manifest m.toml --config build.toml --concurrency 64 --latency 2.5 --json"
    )]
    Plan(crate::plan::PlanArgs),
    /// Batch mode (OpenAI Batch API, half the price; or vLLM run-batch output): prepare input
    /// files, submit them, watch them, and collect the answers into the dataset.
    #[command(
        after_help = "Examples:\n  build-dataset batch prepare --out out/x --manifest m.toml --model gpt-4o-mini\n  build-dataset batch submit --out out/x --endpoint https://api.example/v1\n  build-dataset batch status --out out/x --endpoint https://api.example/v1\n  build-dataset batch collect --out out/x --manifest m.toml --model gpt-4o-mini --endpoint https://api.example/v1 --wait"
    )]
    Batch(crate::batch::BatchArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a commented example configuration file with every key and its default.
    #[command(
        after_help = "Example:\n  build-dataset config init build.toml && $EDITOR build.toml"
    )]
    Init {
        /// Where to write it (never overwritten).
        #[arg(default_value = "build-dataset.toml")]
        path: PathBuf,
    },
    /// Print the effective configuration: defaults < --config file < RETINALOGOS_<SECTION>_<KEY>
    /// environment variables. Secrets are never printed.
    #[command(
        after_help = "Example:\n  RETINALOGOS_CAPTIONER_CONCURRENCY=32 build-dataset config show --config build.toml"
    )]
    Show {
        /// Configuration file to layer over the defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Args, Clone)]
pub struct BuildArgs {
    /// Output folder of the dataset (created if missing; an existing one is resumed).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A data manifest (TOML) describing a labelled dataset; repeat for several datasets.
    /// Example: --manifest data-manifests/eyepacs.toml --manifest data-manifests/aptos2019.toml
    #[arg(long, value_name = "PATH")]
    pub manifest: Vec<PathBuf>,
    /// A plain folder of unlabelled photographs, captioned from measurements alone.
    /// Example: --images /data/unlabelled
    #[arg(long, value_name = "DIR")]
    pub images: Vec<PathBuf>,
    /// Base URL of an OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp, Ollama, OpenAI).
    /// Default: the embedded offline captioner. Example: --endpoint http://127.0.0.1:8000/v1
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Model name sent to the endpoint. Example: --model Qwen/Qwen2.5-VL-7B-Instruct
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Configuration file (TOML); flags override it. Example: --config build.toml
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use only the first N items of the input (so a rerun with the same N resumes the same set).
    /// Example: --limit 100
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Accept outputs of a changed prompt, schema or model into an existing dataset.
    #[arg(long)]
    pub allow_mixed_versions: bool,
    /// Skip writing the QA report at the end.
    #[arg(long)]
    pub no_qa: bool,
    /// Serve Prometheus metrics of the run on this address. Example: --metrics-addr 127.0.0.1:9464
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Publish the dataset to object storage at the end of the run: shards not yet there, the
    /// QA report, then dataset.json last. --out stays the working folder (journal, staging
    /// shards); a rerun uploads whatever an interrupted one did not. Credentials from AWS_*,
    /// GOOGLE_* or AZURE_*. Example: --upload-to s3://datasets/fundus-v1
    #[arg(long, value_name = "URL")]
    pub upload_to: Option<String>,
    /// Stop cleanly once this run has spent this many US dollars (at the model's price in
    /// [cost.prices]); the next run resumes. Overrides cost.max_usd. Example: --max-cost 25
    #[arg(long, value_name = "USD")]
    pub max_cost: Option<f64>,
    /// Split the crawl over N workers (processes or machines): this one takes the items whose id
    /// hashes to --worker-index and writes to <out>/workers/<index>/. Default: from a Slurm job
    /// array or a Kubernetes Indexed Job (RETINALOGOS_WORKERS), else one process. See
    /// docs/scaling.md.
    #[arg(long, value_name = "N")]
    pub workers: Option<u32>,
    /// This worker, 0..N (default: SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX).
    #[arg(long, value_name = "I")]
    pub worker_index: Option<u32>,
}

#[derive(Debug, Args, Clone)]
pub struct BenchArgs {
    /// Where to write the results JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    pub results: PathBuf,
    /// Items in the end-to-end scenario.
    #[arg(long, default_value_t = 200)]
    pub items: usize,
    /// Run only these scenario groups (repeatable), e.g. --only pipeline.
    #[arg(long)]
    pub only: Vec<String>,
    /// Internal: run one scenario in this process and print its JSON (used for per-scenario peak memory).
    #[arg(long, hide = true)]
    pub child: Option<String>,
    /// Internal: work folder for the child scenario.
    #[arg(long, hide = true)]
    pub work: Option<PathBuf>,
}
