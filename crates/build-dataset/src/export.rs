//! `build-dataset export DIR --format F --out PATH`: a built dataset in a trainer's input format
//! (the formats live in retina-export; records are selected through retina-reader).

use anyhow::{Context, Result};
use clap::Args;
use retina_export::{ExportOptions, Format};
use retina_reader::{Dataset, Filter, Split};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    /// The dataset folder (the --out of a build).
    pub dir: PathBuf,
    /// Output format: retinalogos (JSONL + META YAML), llava (conversation JSON) or webdataset
    /// (tar shards).
    #[arg(long, value_parser = ["retinalogos", "llava", "webdataset"])]
    pub format: String,
    /// Output folder (created).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Export only this part of the stable split by id.
    #[arg(long, value_parser = ["all", "train", "validation"], default_value = "all")]
    pub split: String,
    /// Share of ids in the validation split.
    #[arg(long, default_value_t = 0.05)]
    pub validation_fraction: f64,
    /// Export only these source datasets (repeatable).
    #[arg(long, value_name = "NAME")]
    pub dataset: Vec<String>,
    /// Export only these quality grades (repeatable): good, usable, reject.
    #[arg(long, value_name = "GRADE")]
    pub quality: Vec<String>,
    /// Samples per webdataset tar shard.
    #[arg(long, default_value_t = 1000)]
    pub samples_per_shard: usize,
}

pub fn run(args: &ExportArgs) -> Result<ExitCode> {
    let format: Format = args.format.parse()?;
    if !(0.0..=1.0).contains(&args.validation_fraction) {
        anyhow::bail!(
            "--validation-fraction {} must be between 0 and 1",
            args.validation_fraction
        );
    }
    let dataset = Dataset::open(&args.dir)?;
    let mut options = ExportOptions::new(format, &args.out);
    let mut filter = Filter::default();
    if !args.dataset.is_empty() {
        filter = filter.datasets(args.dataset.iter().cloned());
    }
    if !args.quality.is_empty() {
        filter = filter.qualities(args.quality.iter().cloned());
    }
    options.read.filter = filter;
    options.read.split = match args.split.as_str() {
        "train" => Split::Train,
        "validation" => Split::Validation,
        _ => Split::All,
    };
    options.read.validation_fraction = args.validation_fraction;
    options.samples_per_shard = args.samples_per_shard;
    let summary = retina_export::export(&dataset, &options).with_context(|| {
        format!(
            "cannot export {} to {}",
            args.dir.display(),
            args.out.display()
        )
    })?;
    println!(
        "exported {} records ({} MB of images) as {} to {}: {}",
        summary.records,
        summary.image_bytes / 1_000_000,
        args.format,
        args.out.display(),
        summary.files.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
