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
    #[command(after_help = "Example:\n  build-dataset verify out/demo")]
    Verify {
        /// The dataset folder (the --out of a build).
        dir: PathBuf,
    },
    /// Write the QA report (qa/report.html, .json, .md) for a built dataset.
    #[command(
        after_help = "Example:\n  build-dataset qa out/demo && xdg-open out/demo/qa/report.html"
    )]
    Qa {
        /// The dataset folder (the --out of a build).
        dir: PathBuf,
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
