//! `build-dataset plan`: what a build would ask for and cost, before any money is spent.
//!
//! It reads the same manifests and configuration as `build`, leaves out items a dataset folder
//! (`--out`) already has, prepares a sample of the rest through the real image stage and renders
//! their real prompts, and from those estimates prompt tokens per request (text tokens by the
//! same words x 1.3 rule as the offline captioner, plus `cost.image_tokens` per image, plus the
//! schema when it travels in the prompt). Completion tokens come from
//! `cost.expected_completion_tokens`, else `captioner.max_tokens` (an upper bound). Wall time is
//! requests x latency / concurrency. The batch estimate is the same tokens at the price's
//! `batch_factor` (OpenAI's Batch API: half the online price, the default). Nothing is sent to
//! the endpoint.

use crate::config::BuildConfig;
use anyhow::{Context, Result};
use clap::Args;
use retina_captioner::{ResponseFormat, estimate_tokens};
use retina_prompt::{PromptMode, PromptSet};
use retina_records::Record;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// `plan` options.
#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// A data manifest (TOML); repeat for several datasets.
    #[arg(long, value_name = "PATH")]
    pub manifest: Vec<PathBuf>,
    /// A plain folder of unlabelled photographs.
    #[arg(long, value_name = "DIR")]
    pub images: Vec<PathBuf>,
    /// Configuration file (TOML), as for `build`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Endpoint base URL (only its presence matters: no request is sent).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Model name, for its price.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Only the first N items, as `build --limit N`.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// An existing dataset folder: items it already has are not counted.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Items whose prompts are rendered for the token estimate (evenly spread).
    #[arg(long, default_value_t = 32)]
    pub sample: usize,
    /// Requests in flight for the wall-time estimate (default: captioner.concurrency).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Seconds per request for the wall-time estimate (default: cost.expected_latency_secs).
    #[arg(long, value_name = "SECONDS")]
    pub latency: Option<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The estimate `plan` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    pub model: String,
    pub items: usize,
    pub already_done: usize,
    pub requests: u64,
    pub sampled: usize,
    pub prompt_tokens_per_request: f64,
    pub completion_tokens_per_request: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// US dollars per million tokens used, if the model has a price.
    pub price: Option<retina_captioner::Price>,
    pub cost_usd: Option<f64>,
    /// The same requests through the Batch API (`build-dataset batch`): the price's
    /// `batch_factor` (default 0.5) of `cost_usd`.
    pub batch_cost_usd: Option<f64>,
    pub concurrency: usize,
    pub latency_secs: f64,
    pub wall_seconds: f64,
    pub notes: Vec<String>,
}

pub fn run(args: &PlanArgs) -> Result<ExitCode> {
    let mut config = crate::config_layers::load(args.config.as_deref(), std::env::vars())?;
    if let Some(endpoint) = &args.endpoint {
        config.captioner.endpoint = endpoint.clone();
    }
    if let Some(model) = &args.model {
        config.captioner.model = model.clone();
    }
    config.check()?;
    let records = crate::load_records_from(&args.manifest, &args.images, args.limit)?;
    let done = match &args.out {
        Some(out) if crate::pipeline::journal_path(out).exists() => {
            retina_journal::Journal::open_read_only(&crate::pipeline::journal_path(out))
                .with_context(|| format!("cannot read the journal of {}", out.display()))?
                .done_ids()?
        }
        _ => Default::default(),
    };
    let total = records.len();
    let pending: Vec<Record> = records
        .into_iter()
        .filter(|r| !done.contains(r.id.as_str()))
        .collect();
    let plan = estimate(&config, args, &pending, total - pending.len())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", table(&plan));
    }
    Ok(ExitCode::SUCCESS)
}

/// Evenly spread indices: `n` of `0..len`.
fn sample_indices(len: usize, n: usize) -> Vec<usize> {
    if len == 0 || n == 0 {
        return Vec::new();
    }
    let n = n.min(len);
    (0..n).map(|i| i * len / n).collect()
}

fn estimate(
    config: &BuildConfig,
    args: &PlanArgs,
    pending: &[Record],
    already_done: usize,
) -> Result<Plan> {
    let section = &config.captioner;
    let offline = section.endpoint.is_empty();
    let model = if offline {
        "retina-offline-v1".to_string()
    } else {
        section.model.clone()
    };
    let vision = section.vision && !offline;
    let mode = if vision {
        PromptMode::Vision
    } else {
        PromptMode::TextOnly
    };
    let format: ResponseFormat = section
        .response_format
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let schema = retina_validate::CaptionSchema::embedded();
    let schema_tokens = match format {
        ResponseFormat::JsonSchema => 0,
        _ => estimate_tokens(&retina_captioner::system_with_schema("", schema.value())),
    };
    let prompts = PromptSet::embedded();
    let prepare = crate::prepare_config(config);
    let mut notes = Vec::new();
    let mut sampled = 0usize;
    let mut prompt_sum = 0u64;
    for index in sample_indices(pending.len(), args.sample) {
        let record = &pending[index];
        // The real image stage gives the facts the prompt quotes; an unreadable image is left out
        // of the sample (the build would reject or fail it without a request).
        let Ok(bytes) = std::fs::read(&record.image_path) else {
            continue;
        };
        let Ok(image) = retina_fundus::prepare(&bytes, &prepare) else {
            continue;
        };
        let Ok(prompt) = prompts.render(record, &image.facts, mode) else {
            continue;
        };
        let text =
            u64::from(estimate_tokens(&prompt.system)) + u64::from(estimate_tokens(&prompt.user));
        let image_tokens = if vision {
            u64::from(config.cost.image_tokens)
        } else {
            0
        };
        prompt_sum += text + image_tokens + u64::from(schema_tokens);
        sampled += 1;
    }
    if sampled == 0 && !pending.is_empty() {
        notes.push("no sampled item could be prepared: prompt tokens unknown".to_string());
    }
    let prompt_per = if sampled == 0 {
        0.0
    } else {
        prompt_sum as f64 / sampled as f64
    };
    let completion_per = if config.cost.expected_completion_tokens > 0 {
        f64::from(config.cost.expected_completion_tokens)
    } else {
        notes.push(format!(
            "completion tokens assume captioner.max_tokens ({}), an upper bound; set cost.expected_completion_tokens for a closer figure",
            section.max_tokens
        ));
        f64::from(section.max_tokens)
    };
    let requests = pending.len() as u64;
    let prompt_tokens = (prompt_per * requests as f64).round() as u64;
    let completion_tokens = (completion_per * requests as f64).round() as u64;
    let price = if offline {
        Some(retina_captioner::Price::free())
    } else {
        config.cost.price_table().lookup(&model)
    };
    if price.is_none() {
        notes.push(format!(
            "no price for model {model:?}: add [cost.prices.\"{model}\"] input/output (US dollars per million tokens)"
        ));
    }
    let cost_usd = price.map(|p| p.cost(prompt_tokens, 0, completion_tokens));
    let batch_cost_usd = price.map(|p| p.batch_cost(prompt_tokens, 0, completion_tokens));
    let concurrency = args
        .concurrency
        .unwrap_or(if offline {
            section.concurrency.min(16)
        } else {
            section.concurrency
        })
        .max(1);
    let latency_secs = args
        .latency
        .unwrap_or(config.cost.expected_latency_secs)
        .max(0.0);
    let mut wall_seconds = requests as f64 * latency_secs / concurrency as f64;
    // Configured rate limits bound the pace too (limits learned from headers are unknown here).
    let window = section.rate_limit_window_secs as f64;
    if section.rate_limit_requests > 0 {
        wall_seconds =
            wall_seconds.max(requests as f64 * window / f64::from(section.rate_limit_requests));
    }
    if section.rate_limit_tokens > 0 {
        let tokens = (prompt_per + f64::from(section.max_tokens)) * requests as f64;
        wall_seconds = wall_seconds.max(tokens * window / f64::from(section.rate_limit_tokens));
    }
    notes.push(
        "requests are one per item; retries, truncation retries and rejected answers add to them; response-cache hits cost nothing".to_string(),
    );
    Ok(Plan {
        model,
        items: pending.len() + already_done,
        already_done,
        requests,
        sampled,
        prompt_tokens_per_request: prompt_per,
        completion_tokens_per_request: completion_per,
        prompt_tokens,
        completion_tokens,
        price,
        cost_usd,
        batch_cost_usd,
        concurrency,
        latency_secs,
        wall_seconds,
        notes,
    })
}

fn table(plan: &Plan) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("model".into(), plan.model.clone()),
        (
            "items".into(),
            format!("{} ({} already done)", plan.items, plan.already_done),
        ),
        ("requests".into(), plan.requests.to_string()),
        (
            "prompt tokens".into(),
            format!(
                "{} ({:.0} per request, from {} sampled prompts)",
                plan.prompt_tokens, plan.prompt_tokens_per_request, plan.sampled
            ),
        ),
        (
            "completion tokens".into(),
            format!(
                "{} ({:.0} per request)",
                plan.completion_tokens, plan.completion_tokens_per_request
            ),
        ),
        (
            "price (USD / 1M tokens)".into(),
            plan.price.map_or_else(
                || "unknown".to_string(),
                |p| {
                    format!(
                        "input {} · output {}{}",
                        p.input,
                        p.output,
                        p.cached_input
                            .map(|c| format!(" · cached input {c}"))
                            .unwrap_or_default()
                    )
                },
            ),
        ),
        (
            "cost (USD)".into(),
            plan.cost_usd
                .map_or_else(|| "unknown".to_string(), |c| format!("{c:.2}")),
        ),
        (
            "cost, batch mode (USD)".into(),
            match (plan.batch_cost_usd, plan.price) {
                (Some(c), Some(p)) => format!(
                    "{c:.2} (build-dataset batch: {}% of the online price, within 24 hours)",
                    (p.batch_factor() * 100.0).round()
                ),
                _ => "unknown".to_string(),
            },
        ),
        (
            "wall time".into(),
            format!(
                "{} at {} in flight x {} s per request",
                humantime::format_duration(std::time::Duration::from_secs(
                    plan.wall_seconds.round() as u64
                )),
                plan.concurrency,
                plan.latency_secs
            ),
        ),
    ];
    for note in &plan.notes {
        rows.push(("note".into(), note.clone()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_the_batch_estimate_at_the_prices_factor() {
        let price = retina_captioner::Price {
            input: 1.0,
            output: 2.0,
            cached_input: None,
            batch_factor: Some(0.4),
        };
        let plan = Plan {
            model: "m".into(),
            items: 10,
            already_done: 0,
            requests: 10,
            sampled: 1,
            prompt_tokens_per_request: 100.0,
            completion_tokens_per_request: 50.0,
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
            price: Some(price),
            cost_usd: Some(price.cost(1_000_000, 0, 500_000)),
            batch_cost_usd: Some(price.batch_cost(1_000_000, 0, 500_000)),
            concurrency: 1,
            latency_secs: 1.0,
            wall_seconds: 10.0,
            notes: Vec::new(),
        };
        let text = table(&plan);
        let row = |text: &str, key: &str| {
            text.lines()
                .find(|line| line.starts_with(key))
                .map(|line| line[key.len()..].trim().to_string())
                .unwrap_or_default()
        };
        assert_eq!(row(&text, "cost (USD)"), "2.00", "{text}");
        assert!(
            row(&text, "cost, batch mode (USD)")
                .starts_with("0.80 (build-dataset batch: 40% of the online price"),
            "{text}"
        );
        let unpriced = Plan {
            price: None,
            cost_usd: None,
            batch_cost_usd: None,
            ..plan
        };
        assert_eq!(row(&table(&unpriced), "cost, batch mode (USD)"), "unknown");
    }

    #[test]
    fn samples_spread_over_the_items() {
        assert_eq!(sample_indices(10, 3), vec![0, 3, 6]);
        assert_eq!(sample_indices(2, 5), vec![0, 1]);
        assert!(sample_indices(0, 5).is_empty());
    }
}
