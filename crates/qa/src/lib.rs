//! The QA report a data engineer reads before training: counts, balance, acceptance, caption
//! lengths, section coverage, measurements by class, a gallery and reject examples.
//!
//! It reads a built dataset folder (the card, the accepted and reject shards, the journal) and
//! never changes it; it writes `qa/report.html` (one self-contained file), `qa/report.json`
//! (the figures, stable keys) and `qa/report.md` (a terminal summary).
//!
//! This first version reads shards row by row with arrow-rs; the streaming polars version for
//! million-row datasets replaces the aggregation, not the outputs.

use base64::Engine;
use retina_shards::{StoredReject, StoredRow};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the report went.
#[derive(Debug, Clone)]
pub struct QaSummary {
    pub html_path: PathBuf,
    pub json_path: PathBuf,
    pub markdown_path: PathBuf,
    pub report: QaReport,
}

/// Errors reading the dataset or writing the report.
#[derive(Debug, thiserror::Error)]
pub enum QaError {
    #[error("cannot read the dataset card in {dir}: {source}")]
    Card {
        dir: PathBuf,
        source: retina_shards::ShardError,
    },
    #[error("cannot read shard {path}: {source}")]
    Shard {
        path: PathBuf,
        source: retina_shards::ShardError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialise the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Summary statistics of a numeric series.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Stats {
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Stats {
        if values.is_empty() {
            return Stats::default();
        }
        let sum: f64 = values.iter().sum();
        Stats {
            count: values.len() as u64,
            mean: sum / values.len() as f64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Every figure of the report; serialised as `qa/report.json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QaReport {
    pub report_version: u32,
    pub model: String,
    pub prompt_hash: String,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    pub acceptance_rate: f64,
    pub accepted_by_dataset: BTreeMap<String, u64>,
    pub rejected_by_dataset: BTreeMap<String, u64>,
    pub reject_reasons: BTreeMap<String, u64>,
    pub dr_grade: BTreeMap<String, u64>,
    pub glaucoma: BTreeMap<String, u64>,
    pub amd: BTreeMap<String, u64>,
    pub laterality: BTreeMap<String, u64>,
    pub quality_grade: BTreeMap<String, u64>,
    pub lesion_mentions: BTreeMap<String, u64>,
    /// Fraction of accepted rows whose section is non-empty.
    pub section_coverage: BTreeMap<String, f64>,
    pub caption_words: Stats,
    /// Estimated tokens (1.3 per word); the budgets of the text encoders are 256 and 77.
    pub caption_tokens_estimate: Stats,
    pub captions_over_256_tokens: u64,
    pub captions_over_77_tokens: u64,
    pub distinct_captions: u64,
    pub vessel_density_by_dr_grade: BTreeMap<String, Stats>,
    pub cup_to_disc_by_glaucoma: BTreeMap<String, Stats>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: Stats,
    pub warnings: Vec<String>,
}

struct Gallery {
    rows: Vec<(String, String, String)>, // (data url, title, caption)
    rejects: Vec<(String, String, String)>, // (id, reasons, raw answer)
}

/// Reads `dir` and writes `dir/qa/report.{html,json,md}`.
pub fn write_report(dir: &Path) -> Result<QaSummary, QaError> {
    let card = retina_shards::read_card(dir).map_err(|source| QaError::Card {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut report = QaReport {
        report_version: 1,
        model: card.model.clone(),
        prompt_hash: card.prompt_hash.clone(),
        failed: card.counts.failed,
        ..QaReport::default()
    };
    let mut gallery = Gallery {
        rows: Vec::new(),
        rejects: Vec::new(),
    };
    let mut words = Vec::new();
    let mut latencies = Vec::new();
    let mut vessel: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut cdr: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut sections: BTreeMap<String, u64> = BTreeMap::new();
    let mut distinct = std::collections::HashSet::new();
    let mut gallery_by_grade: BTreeMap<String, usize> = BTreeMap::new();

    for shard in &card.shards {
        let path = dir.join(&shard.path);
        if shard.kind == retina_shards::ShardKind::Accepted {
            let rows =
                retina_shards::read_accepted(&path, true).map_err(|source| QaError::Shard {
                    path: path.clone(),
                    source,
                })?;
            for row in rows {
                add_accepted(
                    &mut report,
                    &row,
                    &mut words,
                    &mut latencies,
                    &mut vessel,
                    &mut cdr,
                    &mut sections,
                );
                distinct.insert(blake_of(&row.caption));
                let grade = grade_key(row.dr_grade);
                let shown = gallery_by_grade.entry(grade.clone()).or_default();
                if *shown < 2 && gallery.rows.len() < 16 {
                    *shown += 1;
                    let url = format!(
                        "data:image/jpeg;base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(&row.image)
                    );
                    let title = format!(
                        "{} · {} · DR {} · {}",
                        row.dataset, row.laterality, grade, row.id
                    );
                    gallery.rows.push((url, title, row.caption.clone()));
                }
            }
        } else {
            let rows = retina_shards::read_rejects(&path).map_err(|source| QaError::Shard {
                path: path.clone(),
                source,
            })?;
            for row in rows {
                add_reject(&mut report, &row, &mut gallery);
            }
        }
    }
    report.distinct_captions = distinct.len() as u64;
    finish(&mut report, &words, &latencies, vessel, cdr, sections);

    let qa_dir = dir.join("qa");
    std::fs::create_dir_all(&qa_dir).map_err(|source| QaError::Write {
        path: qa_dir.clone(),
        source,
    })?;
    let json_path = qa_dir.join("report.json");
    let html_path = qa_dir.join("report.html");
    let markdown_path = qa_dir.join("report.md");
    write(&json_path, &serde_json::to_string_pretty(&report)?)?;
    write(&markdown_path, &markdown(&report))?;
    write(&html_path, &html(&report, &gallery))?;
    Ok(QaSummary {
        html_path,
        json_path,
        markdown_path,
        report,
    })
}

fn blake_of(text: &str) -> u64 {
    // Exact-duplicate detection only; near-duplicates come with MinHash in the full report.
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn grade_key(grade: Option<u8>) -> String {
    grade.map_or_else(|| "unlabelled".to_string(), |g| g.to_string())
}

fn bump(map: &mut BTreeMap<String, u64>, key: impl Into<String>) {
    *map.entry(key.into()).or_default() += 1;
}

#[allow(clippy::too_many_arguments)]
fn add_accepted(
    report: &mut QaReport,
    row: &StoredRow,
    words: &mut Vec<f64>,
    latencies: &mut Vec<f64>,
    vessel: &mut BTreeMap<String, Vec<f64>>,
    cdr: &mut BTreeMap<String, Vec<f64>>,
    sections: &mut BTreeMap<String, u64>,
) {
    report.accepted += 1;
    bump(&mut report.accepted_by_dataset, row.dataset.clone());
    bump(&mut report.dr_grade, grade_key(row.dr_grade));
    bump(
        &mut report.glaucoma,
        row.glaucoma.clone().unwrap_or_else(|| "unlabelled".into()),
    );
    bump(
        &mut report.amd,
        row.amd
            .map_or("unlabelled", |a| if a { "yes" } else { "no" }),
    );
    bump(&mut report.laterality, row.laterality.clone());
    bump(
        &mut report.quality_grade,
        row.quality_grade
            .clone()
            .unwrap_or_else(|| "unknown".into()),
    );
    for lesion in &row.lesions {
        bump(&mut report.lesion_mentions, lesion.clone());
    }
    for (name, text) in &row.sections {
        if !text.trim().is_empty() {
            bump(sections, name.clone());
        }
    }
    words.push(row.caption.split_whitespace().count() as f64);
    latencies.push(f64::from(row.latency_ms));
    report.prompt_tokens += u64::from(row.prompt_tokens);
    report.completion_tokens += u64::from(row.completion_tokens);
    if let Some(density) = row.vessel_density {
        vessel
            .entry(grade_key(row.dr_grade))
            .or_default()
            .push(f64::from(density));
    }
    if let Some(ratio) = row.cup_to_disc_ratio {
        cdr.entry(row.glaucoma.clone().unwrap_or_else(|| "unlabelled".into()))
            .or_default()
            .push(f64::from(ratio));
    }
}

fn add_reject(report: &mut QaReport, row: &StoredReject, gallery: &mut Gallery) {
    report.rejected += 1;
    bump(&mut report.rejected_by_dataset, row.dataset.clone());
    for reason in &row.reasons {
        bump(&mut report.reject_reasons, reason.code.clone());
    }
    if gallery.rejects.len() < 12 {
        let reasons = row
            .reasons
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        gallery.rejects.push((
            row.id.clone(),
            reasons,
            row.raw_answer.clone().unwrap_or_default(),
        ));
    }
}

fn finish(
    report: &mut QaReport,
    words: &[f64],
    latencies: &[f64],
    vessel: BTreeMap<String, Vec<f64>>,
    cdr: BTreeMap<String, Vec<f64>>,
    sections: BTreeMap<String, u64>,
) {
    let total = report.accepted + report.rejected;
    report.acceptance_rate = if total == 0 {
        0.0
    } else {
        report.accepted as f64 / total as f64
    };
    report.caption_words = Stats::of(words);
    let tokens: Vec<f64> = words.iter().map(|w| w * 1.3).collect();
    report.caption_tokens_estimate = Stats::of(&tokens);
    report.captions_over_256_tokens = tokens.iter().filter(|t| **t > 256.0).count() as u64;
    report.captions_over_77_tokens = tokens.iter().filter(|t| **t > 77.0).count() as u64;
    report.latency_ms = Stats::of(latencies);
    report.vessel_density_by_dr_grade = vessel
        .into_iter()
        .map(|(k, v)| (k, Stats::of(&v)))
        .collect();
    report.cup_to_disc_by_glaucoma = cdr.into_iter().map(|(k, v)| (k, Stats::of(&v))).collect();
    for name in [
        "optic_disc",
        "rnfl",
        "vessels",
        "macula",
        "background",
        "quality",
        "impression",
    ] {
        let covered = sections.get(name).copied().unwrap_or(0);
        let fraction = if report.accepted == 0 {
            0.0
        } else {
            covered as f64 / report.accepted as f64
        };
        report.section_coverage.insert(name.to_string(), fraction);
        if report.accepted > 0 && fraction < 0.9 {
            report.warnings.push(format!(
                "section {name} is covered in only {:.0}% of captions",
                fraction * 100.0
            ));
        }
    }
    if total > 0 && report.acceptance_rate < 0.5 {
        report.warnings.push(format!(
            "only {:.0}% of items were accepted: read the reject reasons before training",
            report.acceptance_rate * 100.0
        ));
    }
    for (dataset, rejected) in &report.rejected_by_dataset {
        let accepted = report
            .accepted_by_dataset
            .get(dataset)
            .copied()
            .unwrap_or(0);
        if *rejected > accepted {
            report.warnings.push(format!(
                "dataset {dataset} is mostly rejected ({rejected} of {})",
                rejected + accepted
            ));
        }
    }
    let graded: Vec<u64> = report
        .dr_grade
        .iter()
        .filter(|(k, _)| k.as_str() != "unlabelled")
        .map(|(_, v)| *v)
        .collect();
    if let (Some(max), Some(min)) = (graded.iter().max(), graded.iter().min())
        && *min > 0
        && *max / *min >= 10
    {
        report.warnings.push(format!(
            "DR grades are imbalanced: the largest class has {max} rows, the smallest {min}"
        ));
    }
    if report.captions_over_256_tokens > 0 {
        report.warnings.push(format!(
            "{} captions exceed the 256-token budget of the text encoder and would be cut",
            report.captions_over_256_tokens
        ));
    }
}

fn write(path: &Path, text: &str) -> Result<(), QaError> {
    std::fs::write(path, text).map_err(|source| QaError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn markdown(report: &QaReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# QA report\n");
    let _ = writeln!(
        out,
        "accepted {} · rejected {} · failed {} · acceptance {:.1}%\n",
        report.accepted,
        report.rejected,
        report.failed,
        report.acceptance_rate * 100.0
    );
    let _ = writeln!(
        out,
        "caption words: mean {:.0}, min {:.0}, max {:.0}; over 256 tokens: {}; distinct captions: {}\n",
        report.caption_words.mean,
        report.caption_words.min,
        report.caption_words.max,
        report.captions_over_256_tokens,
        report.distinct_captions
    );
    for (title, map) in [
        ("DR grade", &report.dr_grade),
        ("Reject reasons", &report.reject_reasons),
    ] {
        let _ = writeln!(out, "## {title}\n");
        for (key, value) in map {
            let _ = writeln!(out, "- {key}: {value}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "## Warnings\n");
    if report.warnings.is_empty() {
        let _ = writeln!(out, "none");
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "- {warning}");
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn bars(out: &mut String, id: &str, title: &str, map: &BTreeMap<String, u64>) {
    let max = map.values().copied().max().unwrap_or(1).max(1);
    let _ = writeln!(
        out,
        "<section id=\"{id}\"><h2>{}</h2><table class=\"bars\">",
        escape(title)
    );
    if map.is_empty() {
        let _ = writeln!(out, "<tr><td>none</td></tr>");
    }
    for (key, value) in map {
        let width = (*value as f64 / max as f64 * 100.0).round();
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td><div class=\"bar\" style=\"width:{width}%\"></div></td><td class=\"n\">{value}</td></tr>",
            escape(key)
        );
    }
    let _ = writeln!(out, "</table></section>");
}

fn stats_table(out: &mut String, id: &str, title: &str, map: &BTreeMap<String, Stats>) {
    let _ = writeln!(
        out,
        "<section id=\"{id}\"><h2>{}</h2><table><tr><th>class</th><th>n</th><th>mean</th><th>min</th><th>max</th></tr>",
        escape(title)
    );
    for (key, s) in map {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            escape(key),
            s.count,
            s.mean,
            s.min,
            s.max
        );
    }
    let _ = writeln!(out, "</table></section>");
}

fn html(report: &QaReport, gallery: &Gallery) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>QA report</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0}}td,th{{padding:2px 8px;text-align:left}}\
         .bars td:nth-child(2){{width:400px}}.bar{{background:#c0504d;height:12px}}.n{{text-align:right}}\
         .cards{{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}}\
         .card{{border:1px solid #ddd;padding:8px;font-size:12px}}.card img{{width:100%}}\
         .warn{{color:#a33}}pre{{white-space:pre-wrap;font-size:11px;background:#f6f6f6}}</style></head><body>"
    );
    let _ = writeln!(out, "<h1>QA report</h1>");
    let _ = writeln!(
        out,
        "<section id=\"summary\"><h2>Summary</h2><p>model <b>{}</b>, prompt {}</p>\
         <p>accepted <b>{}</b> · rejected <b>{}</b> · failed <b>{}</b> · acceptance {:.1}%</p>\
         <p>caption words mean {:.0} (min {:.0}, max {:.0}); estimated tokens mean {:.0}; over 256 tokens: {}; over 77 tokens: {}; distinct captions {}</p>\
         <p>tokens: prompt {}, completion {}; latency mean {:.0} ms</p></section>",
        escape(&report.model),
        escape(&report.prompt_hash),
        report.accepted,
        report.rejected,
        report.failed,
        report.acceptance_rate * 100.0,
        report.caption_words.mean,
        report.caption_words.min,
        report.caption_words.max,
        report.caption_tokens_estimate.mean,
        report.captions_over_256_tokens,
        report.captions_over_77_tokens,
        report.distinct_captions,
        report.prompt_tokens,
        report.completion_tokens,
        report.latency_ms.mean
    );
    let _ = writeln!(out, "<section id=\"warnings\"><h2>Warnings</h2><ul>");
    if report.warnings.is_empty() {
        let _ = writeln!(out, "<li>none</li>");
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "<li class=\"warn\">{}</li>", escape(warning));
    }
    let _ = writeln!(out, "</ul></section>");
    bars(
        &mut out,
        "by-dataset",
        "Accepted by dataset",
        &report.accepted_by_dataset,
    );
    bars(
        &mut out,
        "dr-grade",
        "DR grade (accepted)",
        &report.dr_grade,
    );
    bars(
        &mut out,
        "glaucoma",
        "Glaucoma (accepted)",
        &report.glaucoma,
    );
    bars(&mut out, "amd", "AMD (accepted)", &report.amd);
    bars(&mut out, "laterality", "Laterality", &report.laterality);
    bars(
        &mut out,
        "quality",
        "Measured quality grade",
        &report.quality_grade,
    );
    bars(
        &mut out,
        "lesions",
        "Lesions named in captions",
        &report.lesion_mentions,
    );
    bars(
        &mut out,
        "reject-reasons",
        "Reject reasons",
        &report.reject_reasons,
    );
    let coverage: BTreeMap<String, u64> = report
        .section_coverage
        .iter()
        .map(|(k, v)| (k.clone(), (v * 100.0).round() as u64))
        .collect();
    bars(
        &mut out,
        "coverage",
        "Section coverage (% of captions)",
        &coverage,
    );
    stats_table(
        &mut out,
        "vessel-density",
        "Vessel density by DR grade",
        &report.vessel_density_by_dr_grade,
    );
    stats_table(
        &mut out,
        "cup-to-disc",
        "Cup-to-disc ratio by glaucoma label",
        &report.cup_to_disc_by_glaucoma,
    );
    let _ = writeln!(
        out,
        "<section id=\"gallery\"><h2>Gallery (two per DR grade)</h2><div class=\"cards\">"
    );
    for (url, title, caption) in &gallery.rows {
        let _ = writeln!(
            out,
            "<div class=\"card\"><img src=\"{url}\" alt=\"{}\"><b>{}</b><p>{}</p></div>",
            escape(title),
            escape(title),
            escape(caption)
        );
    }
    let _ = writeln!(out, "</div></section>");
    let _ = writeln!(
        out,
        "<section id=\"reject-examples\"><h2>Reject examples</h2>"
    );
    if gallery.rejects.is_empty() {
        let _ = writeln!(out, "<p>none</p>");
    }
    for (id, reasons, raw) in &gallery.rejects {
        let _ = writeln!(
            out,
            "<div class=\"card\"><b>{}</b><p>{}</p><pre>{}</pre></div>",
            escape(id),
            escape(reasons),
            escape(raw)
        );
    }
    let _ = writeln!(out, "</section></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_values() {
        let s = Stats::of(&[1.0, 2.0, 6.0]);
        assert_eq!(s.count, 3);
        assert!((s.mean - 3.0).abs() < 1e-9);
        assert_eq!((s.min, s.max), (1.0, 6.0));
        assert_eq!(Stats::of(&[]), Stats::default());
    }

    #[test]
    fn html_escapes_captions() {
        assert_eq!(escape("<b>&\""), "&lt;b&gt;&amp;&quot;");
    }

    #[test]
    fn warnings_flag_low_coverage_and_imbalance() {
        let mut report = QaReport {
            accepted: 100,
            ..QaReport::default()
        };
        report.dr_grade.insert("0".into(), 95);
        report.dr_grade.insert("4".into(), 5);
        let mut sections = BTreeMap::new();
        for name in [
            "optic_disc",
            "vessels",
            "macula",
            "background",
            "quality",
            "impression",
        ] {
            sections.insert(name.to_string(), 100);
        }
        sections.insert("rnfl".to_string(), 10);
        finish(
            &mut report,
            &[100.0],
            &[1.0],
            BTreeMap::new(),
            BTreeMap::new(),
            sections,
        );
        assert!(
            report.warnings.iter().any(|w| w.contains("rnfl")),
            "{:?}",
            report.warnings
        );
        assert!(
            report.warnings.iter().any(|w| w.contains("imbalanced")),
            "{:?}",
            report.warnings
        );
        assert!((report.section_coverage["rnfl"] - 0.1).abs() < 1e-9);
    }
}
