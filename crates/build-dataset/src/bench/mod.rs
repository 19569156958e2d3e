//! `build-dataset bench`: named scenarios measured in one run, written as
//! `{"scenario": {"value": number, "unit": "...", "what": "..."}}` and printed as a table.
//! Ratios compare our stages with the raw codec and with each other on the same machine and data,
//! so they mean something on a noisy shared machine where absolute times do not.
//!
//! Each scenario group lives in its own file and is registered with one line in [`run`].

mod endpoint;
mod image;
mod pipeline;
mod qa;
mod real_endpoint;
mod resume;
mod scale;
mod shards;

use crate::cli::BenchArgs;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

pub(crate) struct Results(BTreeMap<String, Value>);

impl Results {
    pub(crate) fn put(&mut self, name: &str, value: f64, unit: &str, what: &str) {
        self.0.insert(
            name.to_string(),
            json!({"value": (value * 1000.0).round() / 1000.0, "unit": unit, "what": what}),
        );
    }
}

/// Context every scenario gets: the options and the demo data (generated once, cached).
pub(crate) struct BenchContext<'a> {
    pub args: &'a BenchArgs,
    pub demo: synthetic_fundus::DemoSummary,
}

/// Runs the scenario group `name` unless `--only` names others.
fn wanted(args: &BenchArgs, name: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|only| only == name)
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if let Some(child) = &args.child {
        return match child.as_str() {
            "pipeline" => pipeline::run_child(args),
            "endpoint" => endpoint::run_child(args),
            "qa" => qa::run_child(args),
            "scale" => scale::run_child(args),
            other => bail!("unknown benchmark child scenario {other:?}"),
        };
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run `just bench` (release) for meaningful figures");
    }
    let mut results = Results(BTreeMap::new());
    let demo = crate::demo::generate(&crate::demo::cache_root()?, 240, 40)?;
    let context = BenchContext { args, demo };

    // Scenario groups: one line each.
    if wanted(args, "pipeline") {
        pipeline::run(&context, &mut results)?;
    }
    if wanted(args, "image") {
        image::run(&context, &mut results)?;
    }
    if wanted(args, "endpoint") {
        endpoint::run(&context, &mut results)?;
    }
    if wanted(args, "qa") {
        qa::run(&context, &mut results)?;
    }
    // Not in the default set: 1.4 million items take 15-30 minutes (`--only scale`).
    if args.only.iter().any(|only| only == "scale") {
        scale::run(&context, &mut results)?;
    }
    if wanted(args, "real-endpoint") {
        real_endpoint::run(&context, &mut results)?;
    }
    if wanted(args, "shards") {
        shards::run(&context, &mut results)?;
    }
    if wanted(args, "resume") {
        resume::run(&context, &mut results)?;
    }

    let text = serde_json::to_string_pretty(&results.0)?;
    if let Some(parent) = args.results.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.results, &text)
        .with_context(|| format!("cannot write {}", args.results.display()))?;
    println!("{:<34} {:>12}  {:<9} what", "scenario", "value", "unit");
    for (name, value) in &results.0 {
        println!(
            "{:<34} {:>12}  {:<9} {}",
            name,
            value["value"],
            value["unit"].as_str().unwrap_or(""),
            value["what"].as_str().unwrap_or("")
        );
    }
    println!("written to {}", args.results.display());
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn time_per_item(
    items: &[Vec<u8>],
    f: impl Fn(&[u8]) -> Result<(), String>,
) -> Result<f64> {
    // One warm-up pass, then the median of three timed passes.
    for item in items.iter().take(3) {
        f(item).map_err(|e| anyhow::anyhow!(e))?;
    }
    let mut passes = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        for item in items {
            f(item).map_err(|e| anyhow::anyhow!(e))?;
        }
        passes.push(started.elapsed().as_secs_f64() * 1000.0 / items.len() as f64);
    }
    passes.sort_by(|a, b| a.total_cmp(b));
    Ok(passes[1])
}
