//! The QA report a data engineer reads before training: balance, faithfulness, coverage,
//! duplicates, failures and cost, at a glance and with pictures.
//!
//! [`write_report`] reads a built dataset folder (the card, the accepted and reject shards, the
//! journal's counts in the card) and never changes it; it writes `qa/report.html` (one
//! self-contained file with inline SVG plots and thumbnails, no scripts), `qa/report.json` (the
//! figures; schema in `docs/qa.md`, version [`REPORT_VERSION`]) and `qa/report.md` (a terminal
//! summary). [`write_report_with_baseline`] adds a side-by-side comparison with another build.
//!
//! Aggregation runs with polars over one shard at a time, reading only the columns it needs
//! (never the image bytes, except the few gallery rows), and folds them into fixed-size sketches
//! (`sketch`), so memory stays bounded however many rows the dataset has.

#![warn(missing_docs)]

mod plots;
mod render;
mod report;
mod scan;
mod sketch;
pub mod synthetic;
mod text;
mod warnings;

pub use render::HTML_SECTIONS;
pub use report::*;
pub use sketch::{Dist, DupSummary, NearDupSummary};
pub use text::token_estimate;

use base64::Engine as _;
use std::path::{Path, PathBuf};

/// Where the report went, and its figures.
#[derive(Debug, Clone)]
pub struct QaSummary {
    /// `qa/report.html`.
    pub html_path: PathBuf,
    /// `qa/report.json`.
    pub json_path: PathBuf,
    /// `qa/report.md`.
    pub markdown_path: PathBuf,
    /// The figures written to `report.json`.
    pub report: QaReport,
}

/// Errors reading the dataset or writing the report.
#[derive(Debug, thiserror::Error)]
pub enum QaError {
    /// The card (`dataset.json`) is missing or unreadable.
    #[error("cannot read the dataset card in {dir}: {source}")]
    Card {
        /// The dataset folder.
        dir: PathBuf,
        /// Why.
        source: retina_shards::ShardError,
    },
    /// polars could not scan or read a shard.
    #[error("cannot read shard {path}: {source}")]
    Polars {
        /// The shard.
        path: PathBuf,
        /// Why.
        source: polars::error::PolarsError,
    },
    /// A shard path is not valid UTF-8 (polars takes text paths).
    #[error("shard path {path} is not valid UTF-8")]
    Path {
        /// The path.
        path: PathBuf,
    },
    /// A report file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The report could not be serialised.
    #[error("cannot serialise the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Computes the figures of `dir` without writing anything.
pub fn compute_report(dir: &Path) -> Result<QaReport, QaError> {
    Ok(scan::scan_dataset(dir)?.report)
}

/// Reads `dir` and writes `dir/qa/report.{html,json,md}`.
pub fn write_report(dir: &Path) -> Result<QaSummary, QaError> {
    write_report_with_baseline(dir, None)
}

/// Like [`write_report`], comparing with the build in `baseline` when given (read only).
pub fn write_report_with_baseline(
    dir: &Path,
    baseline: Option<&Path>,
) -> Result<QaSummary, QaError> {
    let scan = scan::scan_dataset(dir)?;
    let mut report = scan.report;
    if let Some(other) = baseline {
        let other_report = compute_report(other)?;
        report.baseline = Some(compare(&report, &other_report, other));
    }
    let cards = scan
        .gallery
        .iter()
        .map(|pick| {
            let thumbnail = scan::fetch_image(&pick.shard, pick.row)?
                .as_deref()
                .and_then(thumbnail);
            Ok(render::Card {
                thumbnail,
                title: pick.title.clone(),
                caption: pick.caption.clone(),
            })
        })
        .collect::<Result<Vec<_>, QaError>>()?;
    let rejects = scan
        .rejects
        .iter()
        .map(|pick| {
            let raw = scan::fetch_raw_answer(&pick.shard, pick.row)?.unwrap_or_default();
            // Raw answers can be long; the example needs only its start.
            let raw: String = raw.chars().take(1500).collect();
            Ok(render::RejectCard {
                id: pick.id.clone(),
                dataset: pick.dataset.clone(),
                reasons: pick.reasons.clone(),
                raw_answer: raw,
            })
        })
        .collect::<Result<Vec<_>, QaError>>()?;

    let qa_dir = dir.join("qa");
    std::fs::create_dir_all(&qa_dir).map_err(|source| QaError::Write {
        path: qa_dir.clone(),
        source,
    })?;
    let json_path = qa_dir.join("report.json");
    let html_path = qa_dir.join("report.html");
    let markdown_path = qa_dir.join("report.md");
    write(&json_path, &serde_json::to_string_pretty(&report)?)?;
    write(&markdown_path, &render::markdown(&report))?;
    write(
        &html_path,
        &render::html(&report, &scan.plots, &cards, &rejects),
    )?;
    Ok(QaSummary {
        html_path,
        json_path,
        markdown_path,
        report,
    })
}

/// A 256-pixel JPEG thumbnail as a data URL; `None` when the bytes do not decode.
fn thumbnail(bytes: &[u8]) -> Option<String> {
    let image = image::load_from_memory(bytes)
        .ok()?
        .thumbnail(256, 256)
        .to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&image)
        .ok()?;
    Some(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&out)
    ))
}

/// The figures compared with a baseline build, in display order.
pub fn compare(current: &QaReport, baseline: &QaReport, dir: &Path) -> Baseline {
    let figures = |r: &QaReport| -> Vec<(&'static str, f64)> {
        vec![
            ("accepted", r.counts.accepted as f64),
            ("rejected", r.counts.rejected as f64),
            ("failed", r.counts.failed as f64),
            ("acceptance_rate", r.counts.acceptance_rate),
            (
                "label_consistency_rate",
                r.consistency.label_consistency_rate,
            ),
            ("laterality_known_rate", r.consistency.laterality_known_rate),
            ("caption_words_median", r.captions.words.p50),
            ("caption_tokens_median", r.captions.tokens.p50),
            ("caption_tokens_p95", r.captions.tokens.p95),
            ("over_77_rate", r.captions.over_77_rate),
            ("over_256_rate", r.captions.over_256_rate),
            ("distinct_unigrams", r.vocabulary.distinct_unigrams as f64),
            ("distinct_trigrams", r.vocabulary.distinct_trigrams as f64),
            (
                "exact_duplicate_caption_rows",
                r.duplicates.exact_captions.rows_in_duplicate_groups as f64,
            ),
            (
                "near_duplicate_caption_rate",
                r.duplicates.near_captions.rate,
            ),
            ("tokens_per_caption", r.cost.tokens_per_caption),
            ("latency_ms_median", r.cost.latency_ms.p50),
            ("warnings", r.warnings.len() as f64),
        ]
        .into_iter()
        .chain(
            scan::SECTIONS
                .iter()
                .map(|s| (*s, r.section_coverage.get(*s).copied().unwrap_or(0.0))),
        )
        .collect()
    };
    let names = [
        "coverage_optic_disc",
        "coverage_rnfl",
        "coverage_vessels",
        "coverage_macula",
        "coverage_background",
        "coverage_quality",
        "coverage_impression",
    ];
    let ours = figures(current);
    let theirs = figures(baseline);
    let metrics = ours
        .iter()
        .zip(&theirs)
        .enumerate()
        .map(|(i, ((name, a), (_, b)))| {
            let offset = ours.len() - names.len();
            let name = if i >= offset {
                names[i - offset].to_string()
            } else {
                (*name).to_string()
            };
            BaselineMetric {
                name,
                current: *a,
                baseline: *b,
                delta: a - b,
            }
        })
        .collect();
    Baseline {
        dir: dir.display().to_string(),
        model: baseline.model.clone(),
        prompt_hash: baseline.prompt_hash.clone(),
        metrics,
    }
}

fn write(path: &Path, text: &str) -> Result<(), QaError> {
    std::fs::write(path, text).map_err(|source| QaError::Write {
        path: path.to_path_buf(),
        source,
    })
}
