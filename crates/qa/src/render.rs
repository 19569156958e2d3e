//! The HTML page (one self-contained file) and the Markdown terminal summary.

use crate::plots::{self, Marker};
use crate::report::{Counts, QaReport};
use crate::scan::PlotData;
use crate::sketch::Dist;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Every section of the HTML page, by element id, in page order.
pub const HTML_SECTIONS: [(&str, &str); 17] = [
    ("summary", "Summary"),
    ("warnings", "Warnings"),
    ("baseline", "Baseline comparison"),
    ("counts", "Counts by dataset and split"),
    ("labels", "Labels"),
    ("rejects", "Accept and reject"),
    ("coverage", "Caption section coverage"),
    ("consistency", "Label consistency and laterality"),
    ("lengths", "Caption length and token budgets"),
    ("vocabulary", "Vocabulary diversity"),
    ("duplicates", "Duplicates"),
    ("quality", "Image quality and resolution"),
    ("measurements", "Measurements by class"),
    ("lesions", "Lesions"),
    ("cost", "Tokens, cost, latency and throughput"),
    ("gallery", "Gallery"),
    ("reject-examples", "Reject examples"),
];

/// A gallery card: thumbnail (data URL, or none when the bytes did not decode), title, caption.
pub struct Card {
    pub thumbnail: Option<String>,
    pub title: String,
    pub caption: String,
}

/// A reject example: id, dataset, reasons, raw answer.
pub struct RejectCard {
    pub id: String,
    pub dataset: String,
    pub reasons: String,
    pub raw_answer: String,
}

/// HTML-escapes text.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

fn open(out: &mut String, id: &str) {
    let title = HTML_SECTIONS
        .iter()
        .find(|(i, _)| *i == id)
        .map_or(id, |(_, t)| t);
    let _ = writeln!(out, "<section id=\"{id}\"><h2>{}</h2>", escape(title));
}

fn count_table(out: &mut String, caption: &str, counts: &Counts) {
    let total: u64 = counts.values().sum();
    let max = counts.values().copied().max().unwrap_or(1).max(1);
    let _ = writeln!(
        out,
        "<table class=\"bars\"><caption>{}</caption>",
        escape(caption)
    );
    if counts.is_empty() {
        let _ = writeln!(out, "<tr><td>none</td></tr>");
    }
    for (key, n) in counts {
        let width = (*n as f64 / max as f64 * 100.0).round();
        let share = if total == 0 {
            0.0
        } else {
            *n as f64 / total as f64
        };
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td class=\"barcell\"><div class=\"bar\" style=\"width:{width}%\"></div></td><td class=\"n\">{n}</td><td class=\"n\">{}</td></tr>",
            escape(key),
            pct(share)
        );
    }
    let _ = writeln!(out, "</table>");
}

fn dist_rows(out: &mut String, rows: &[(String, &Dist)], digits: usize) {
    let _ = writeln!(
        out,
        "<table class=\"grid\"><tr><th></th><th>n</th><th>mean</th><th>min</th><th>p05</th><th>median</th><th>p95</th><th>max</th></tr>"
    );
    for (name, d) in rows {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td>{}</td><td>{:.digits$}</td><td>{:.digits$}</td><td>{:.digits$}</td><td>{:.digits$}</td><td>{:.digits$}</td><td>{:.digits$}</td></tr>",
            escape(name),
            d.count,
            d.mean,
            d.min,
            d.p05,
            d.p50,
            d.p95,
            d.max
        );
    }
    let _ = writeln!(out, "</table>");
}

fn figure(out: &mut String, svg: &str) {
    let _ = writeln!(out, "<figure>{svg}</figure>");
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;padding:1.5em 2em;max-width:1200px;color:#1d2430;background:#fafbfc}\
h1{margin:.2em 0}h2{border-bottom:2px solid #3b6ea5;padding-bottom:.2em;margin-top:1.6em}\
section{background:#fff;border:1px solid #e3e6ea;border-radius:6px;padding:0 1em 1em;margin:1em 0}\
nav{font-size:13px;line-height:1.8}nav a{margin-right:.8em;color:#3b6ea5}\
table{border-collapse:collapse;margin:.5em 1.5em .5em 0;font-size:13px;vertical-align:top}caption{text-align:left;font-weight:600;padding:.3em 0;white-space:nowrap}\
td,th{padding:2px 8px;text-align:left}.grid td,.grid th{border-bottom:1px solid #eee}.grid td{text-align:right}\
.barcell{width:260px}.bar{background:#3b6ea5;height:11px;border-radius:2px}.n{text-align:right;font-variant-numeric:tabular-nums}\
.tables{display:flex;flex-wrap:wrap;align-items:flex-start}figure{display:inline-block;margin:.5em}\
.kpi{display:flex;flex-wrap:wrap;gap:10px}.kpi div{background:#eef3f9;border-radius:6px;padding:8px 14px;min-width:120px}.kpi b{display:block;font-size:20px}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}\
.card{border:1px solid #ddd;border-radius:6px;padding:8px;font-size:12px;background:#fff}.card img{width:100%;border-radius:4px}\
.warn li{color:#8a1f11;margin:.3em 0}.ok{color:#2f6b2f}.up{color:#2f6b2f}.down{color:#8a1f11}\
pre{white-space:pre-wrap;font-size:11px;background:#f4f5f7;padding:6px;max-height:12em;overflow:auto}";

/// The whole page.
pub fn html(report: &QaReport, plots: &PlotData, cards: &[Card], rejects: &[RejectCard]) -> String {
    let mut out = String::with_capacity(256 * 1024);
    let _ = writeln!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>QA report · {}</title><style>{STYLE}</style></head><body>",
        escape(&report.dataset_dir)
    );
    let _ = writeln!(out, "<h1>QA report</h1><nav>");
    for (id, title) in HTML_SECTIONS {
        let _ = write!(out, "<a href=\"#{id}\">{}</a>", escape(title));
    }
    let _ = writeln!(out, "</nav>");

    let c = &report.counts;
    open(&mut out, "summary");
    let _ = writeln!(
        out,
        "<p>dataset <code>{}</code> · model <b>{}</b> · prompt <code>{}</code></p><div class=\"kpi\">\
         <div>accepted<b>{}</b></div><div>rejected<b>{}</b></div><div>failed<b>{}</b></div>\
         <div>acceptance<b>{}</b></div><div>label consistency<b>{}</b></div>\
         <div>median tokens<b>{:.0}</b></div><div>over 77 tokens<b>{}</b></div>\
         <div>duplicate images<b>{}</b></div><div>warnings<b>{}</b></div></div></section>",
        escape(&report.dataset_dir),
        escape(&report.model),
        escape(&report.prompt_hash),
        c.accepted,
        c.rejected,
        c.failed,
        pct(c.acceptance_rate),
        pct(report.consistency.label_consistency_rate),
        report.captions.tokens.p50,
        pct(report.captions.over_77_rate),
        report.duplicates.images.rows_in_duplicate_groups,
        report.warnings.len()
    );

    open(&mut out, "warnings");
    if report.warnings.is_empty() {
        let _ = writeln!(out, "<p class=\"ok\">No warnings.</p>");
    } else {
        let _ = writeln!(out, "<ul class=\"warn\">");
        for w in &report.warnings {
            let _ = writeln!(
                out,
                "<li><code>{}</code> {}</li>",
                escape(&w.code),
                escape(&w.message)
            );
        }
        let _ = writeln!(out, "</ul>");
    }
    let _ = writeln!(out, "</section>");

    open(&mut out, "baseline");
    match &report.baseline {
        None => {
            let _ = writeln!(
                out,
                "<p>No baseline. Run <code>build-dataset qa DIR --baseline OTHER</code> to compare two builds side by side.</p>"
            );
        }
        Some(b) => {
            let _ = writeln!(
                out,
                "<p>this build: model <b>{}</b>, prompt <code>{}</code><br>baseline <code>{}</code>: model <b>{}</b>, prompt <code>{}</code></p>\
                 <table class=\"grid\"><tr><th>figure</th><th>this build</th><th>baseline</th><th>change</th></tr>",
                escape(&report.model),
                escape(&report.prompt_hash),
                escape(&b.dir),
                escape(&b.model),
                escape(&b.prompt_hash)
            );
            for m in &b.metrics {
                let class = if m.delta > 0.0 {
                    "up"
                } else if m.delta < 0.0 {
                    "down"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "<tr><th>{}</th><td>{}</td><td>{}</td><td class=\"{class}\">{:+}</td></tr>",
                    escape(&m.name),
                    fmt_num(m.current),
                    fmt_num(m.baseline),
                    round4(m.delta)
                );
            }
            let _ = writeln!(out, "</table>");
        }
    }
    let _ = writeln!(out, "</section>");

    open(&mut out, "counts");
    let _ = writeln!(
        out,
        "<table class=\"grid\"><tr><th>dataset</th><th>accepted</th><th>rejected</th><th>acceptance</th></tr>"
    );
    for (name, d) in &report.by_dataset {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            d.accepted,
            d.rejected,
            pct(d.acceptance_rate)
        );
    }
    let _ = writeln!(out, "</table><div class=\"tables\">");
    count_table(&mut out, "Accepted rows by split", &report.by_split);
    let _ = writeln!(out, "</div></section>");

    open(&mut out, "labels");
    let _ = writeln!(out, "<div class=\"tables\">");
    count_table(&mut out, "DR grade", &report.labels.dr_grade);
    count_table(&mut out, "Glaucoma", &report.labels.glaucoma);
    count_table(&mut out, "AMD", &report.labels.amd);
    count_table(&mut out, "Myopic maculopathy", &report.labels.myopia);
    count_table(
        &mut out,
        "Disease codes (multi-label)",
        &report.labels.disease_codes,
    );
    count_table(&mut out, "Laterality", &report.labels.laterality);
    let _ = writeln!(out, "</div></section>");

    open(&mut out, "rejects");
    let _ = writeln!(
        out,
        "<p>accepted {} of {} ({}); failed items (retried by the next run): {}</p>",
        c.accepted,
        c.accepted + c.rejected,
        pct(c.acceptance_rate),
        c.failed
    );
    count_table(
        &mut out,
        "Reject reasons (an item may have several)",
        &report.reject_reasons,
    );
    let _ = writeln!(out, "</section>");

    open(&mut out, "coverage");
    let coverage: BTreeMap<String, u64> = report
        .section_coverage
        .iter()
        .map(|(k, v)| (k.clone(), (v * 1000.0).round() as u64))
        .collect();
    let _ = writeln!(
        out,
        "<table class=\"bars\"><caption>Share of accepted captions with a non-empty section</caption>"
    );
    for (k, v) in &coverage {
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td class=\"barcell\"><div class=\"bar\" style=\"width:{:.1}%\"></div></td><td class=\"n\">{:.1}%</td></tr>",
            escape(k),
            *v as f64 / 10.0,
            *v as f64 / 10.0
        );
    }
    let _ = writeln!(out, "</table></section>");

    let k = &report.consistency;
    open(&mut out, "consistency");
    let _ = writeln!(
        out,
        "<table class=\"grid\"><tr><th>captioned items checked against labels</th><td>{}</td></tr>\
         <tr><th>rejected by a consistency rule</th><td>{}</td></tr>\
         <tr><th>label-consistency rate</th><td>{}</td></tr>\
         <tr><th>rejected for laterality</th><td>{}</td></tr>\
         <tr><th>accepted rows with known laterality</th><td>{}</td></tr></table></section>",
        k.checked,
        k.inconsistent,
        pct(k.label_consistency_rate),
        k.laterality_rejects,
        pct(k.laterality_known_rate)
    );

    let cap = &report.captions;
    open(&mut out, "lengths");
    figure(
        &mut out,
        &plots::histogram(
            "Estimated tokens per caption",
            "tokens",
            &plots.tokens,
            &[
                Marker {
                    x: 77.0,
                    label: "77",
                },
                Marker {
                    x: 256.0,
                    label: "256",
                },
            ],
        ),
    );
    figure(
        &mut out,
        &plots::histogram("Words per caption", "words", &plots.words, &[]),
    );
    dist_rows(
        &mut out,
        &[
            ("words".into(), &cap.words),
            ("estimated tokens".into(), &cap.tokens),
        ],
        1,
    );
    let _ = writeln!(
        out,
        "<p>over 77 tokens: <b>{}</b> ({}) · over 256 tokens: <b>{}</b> ({})</p></section>",
        cap.over_77_tokens,
        pct(cap.over_77_rate),
        cap.over_256_tokens,
        pct(cap.over_256_rate)
    );

    let v = &report.vocabulary;
    open(&mut out, "vocabulary");
    let _ = writeln!(
        out,
        "<p>distinct words <b>{}</b> · bigrams <b>{}</b> · trigrams <b>{}</b>{}</p><div class=\"tables\">",
        v.distinct_unigrams,
        v.distinct_bigrams,
        v.distinct_trigrams,
        if v.exact { "" } else { " (estimates)" }
    );
    for (grade, terms) in &v.top_terms_by_dr_grade {
        let _ = writeln!(
            out,
            "<table class=\"grid\"><caption>DR grade {}</caption>",
            escape(grade)
        );
        for (term, n) in terms {
            let _ = writeln!(out, "<tr><th>{}</th><td>{n}</td></tr>", escape(term));
        }
        let _ = writeln!(out, "</table>");
    }
    let _ = writeln!(out, "</div></section>");

    let d = &report.duplicates;
    open(&mut out, "duplicates");
    let _ = writeln!(
        out,
        "<table class=\"grid\"><tr><th></th><th>rows in duplicate groups</th><th>groups</th><th>sampling</th></tr>\
         <tr><th>identical captions</th><td>{}</td><td>{}</td><td>{}</td></tr>\
         <tr><th>identical images (perceptual hash)</th><td>{}</td><td>{}</td><td>{}</td></tr></table>\
         <p>near-duplicate captions (MinHash over word 3-grams, Jaccard ≥ {}): <b>{}</b> pairs; {} of {} sampled captions ({}) have one.</p></section>",
        d.exact_captions.rows_in_duplicate_groups,
        d.exact_captions.duplicate_groups,
        pct(d.exact_captions.sampling_rate),
        d.images.rows_in_duplicate_groups,
        d.images.duplicate_groups,
        pct(d.images.sampling_rate),
        d.near_captions.threshold,
        d.near_captions.pairs,
        d.near_captions.rows_with_near_duplicate,
        d.near_captions.sample_size,
        pct(d.near_captions.rate)
    );

    open(&mut out, "quality");
    for name in ["sharpness", "illumination_uniformity"] {
        if let Some(values) = plots.quality.get(name) {
            figure(&mut out, &plots::histogram(name, name, values, &[]));
        }
    }
    let rows: Vec<(String, &Dist)> = report.quality.iter().map(|(k, v)| (k.clone(), v)).collect();
    dist_rows(&mut out, &rows, 3);
    let r = &report.resolution;
    dist_rows(
        &mut out,
        &[
            ("source width".into(), &r.original_width),
            ("source height".into(), &r.original_height),
        ],
        0,
    );
    let _ = writeln!(out, "<div class=\"tables\">");
    count_table(&mut out, "Measured quality grade", &report.quality_grade);
    count_table(&mut out, "Output size", &r.output_sizes);
    let _ = writeln!(out, "</div></section>");

    let m = &report.measurements;
    open(&mut out, "measurements");
    figure(
        &mut out,
        &plots::boxplots(
            "Vessel density by DR grade",
            "vessel density",
            &plots.vessel_by_grade,
        ),
    );
    figure(
        &mut out,
        &plots::boxplots(
            "Cup-to-disc ratio by glaucoma label",
            "vertical CDR",
            &plots.cdr_by_glaucoma,
        ),
    );
    let rows: Vec<(String, &Dist)> = m
        .vessel_density_by_dr_grade
        .iter()
        .map(|(k, v)| (format!("vessel density, DR {k}"), v))
        .chain(
            m.cup_to_disc_by_glaucoma
                .iter()
                .map(|(k, v)| (format!("cup-to-disc, glaucoma {k}"), v)),
        )
        .collect();
    dist_rows(&mut out, &rows, 3);
    let _ = writeln!(out, "</section>");

    open(&mut out, "lesions");
    count_table(
        &mut out,
        "Lesions in the structured answers, by type",
        &report.lesions,
    );
    let _ = writeln!(out, "</section>");

    let cost = &report.cost;
    open(&mut out, "cost");
    figure(
        &mut out,
        &plots::histogram("Latency per call", "ms", &plots.latency, &[]),
    );
    let _ = writeln!(
        out,
        "<table class=\"grid\"><tr><th>prompt tokens</th><td>{}</td></tr><tr><th>completion tokens</th><td>{}</td></tr>\
         <tr><th>tokens per accepted caption</th><td>{:.0}</td></tr>\
         <tr><th>first / last caption</th><td>{} / {}</td></tr>\
         <tr><th>accepted per hour</th><td>{}</td></tr></table>",
        cost.prompt_tokens,
        cost.completion_tokens,
        cost.tokens_per_caption,
        escape(cost.first_captioned_at.as_deref().unwrap_or("-")),
        escape(cost.last_captioned_at.as_deref().unwrap_or("-")),
        cost.accepted_per_hour
            .map_or_else(|| "-".to_string(), |v| format!("{v:.0}"))
    );
    if let Some(spend) = &cost.spend {
        let _ = writeln!(
            out,
            "<table class=\"grid\"><tr><th>spent (USD, all runs)</th><td>{}</td></tr>\
             <tr><th>answers paid for</th><td>{}</td></tr><tr><th>answers from the cache (free)</th><td>{}</td></tr>\
             <tr><th>tokens paid for (prompt / of which cached / completion)</th><td>{} / {} / {}</td></tr></table>",
            spend.usd.map_or_else(
                || "unknown (no price for the model)".to_string(),
                |u| format!("{u:.4}")
            ),
            spend.requests,
            spend.cache_hits,
            spend.prompt_tokens,
            spend.cached_prompt_tokens,
            spend.completion_tokens
        );
    }
    dist_rows(&mut out, &[("latency ms".into(), &cost.latency_ms)], 0);
    let _ = writeln!(out, "</section>");

    open(&mut out, "gallery");
    let _ = writeln!(
        out,
        "<p>Up to two accepted rows per dataset and DR grade.</p><div class=\"cards\">"
    );
    for card in cards {
        let img = match &card.thumbnail {
            Some(url) => format!("<img src=\"{url}\" alt=\"{}\">", escape(&card.title)),
            None => "<p><i>image not decodable</i></p>".to_string(),
        };
        let _ = writeln!(
            out,
            "<div class=\"card\">{img}<b>{}</b><p>{}</p></div>",
            escape(&card.title),
            escape(&card.caption)
        );
    }
    if cards.is_empty() {
        let _ = writeln!(out, "<p>no accepted rows</p>");
    }
    let _ = writeln!(out, "</div></section>");

    open(&mut out, "reject-examples");
    if rejects.is_empty() {
        let _ = writeln!(out, "<p>no rejects</p>");
    }
    let _ = writeln!(out, "<div class=\"cards\">");
    for r in rejects {
        let _ = writeln!(
            out,
            "<div class=\"card\"><b>{}</b> · {}<p>{}</p><pre>{}</pre></div>",
            escape(&r.id),
            escape(&r.dataset),
            escape(&r.reasons),
            escape(&r.raw_answer)
        );
    }
    let _ = writeln!(out, "</div></section></body></html>");
    out
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{:.4}", v)
    }
}

/// The terminal summary.
pub fn markdown(report: &QaReport) -> String {
    let mut out = String::new();
    let c = &report.counts;
    let _ = writeln!(out, "# QA report: {}\n", report.dataset_dir);
    let _ = writeln!(
        out,
        "accepted {} · rejected {} · failed {} · acceptance {}\n",
        c.accepted,
        c.rejected,
        c.failed,
        pct(c.acceptance_rate)
    );
    let cap = &report.captions;
    let _ = writeln!(
        out,
        "captions: median {:.0} words, {:.0} tokens (p95 {:.0}); over 77 tokens {} ({}), over 256 {}\n",
        cap.words.p50,
        cap.tokens.p50,
        cap.tokens.p95,
        cap.over_77_tokens,
        pct(cap.over_77_rate),
        cap.over_256_tokens
    );
    let d = &report.duplicates;
    let _ = writeln!(
        out,
        "duplicates: {} rows share a caption, {} share an image hash, near-duplicate captions {} of {} sampled\n",
        d.exact_captions.rows_in_duplicate_groups,
        d.images.rows_in_duplicate_groups,
        d.near_captions.rows_with_near_duplicate,
        d.near_captions.sample_size
    );
    let _ = writeln!(
        out,
        "label consistency {} · laterality known {} · tokens per caption {:.0} · latency p50 {:.0} ms\n",
        pct(report.consistency.label_consistency_rate),
        pct(report.consistency.laterality_known_rate),
        report.cost.tokens_per_caption,
        report.cost.latency_ms.p50
    );
    if let Some(spend) = &report.cost.spend {
        let _ = writeln!(
            out,
            "cost: {} over all runs · {} answers paid for · {} from the cache (free) · tokens paid {} prompt ({} cached) / {} completion\n",
            spend.usd.map_or_else(
                || "unknown (no price for the model)".to_string(),
                |u| format!("${u:.4}")
            ),
            spend.requests,
            spend.cache_hits,
            spend.prompt_tokens,
            spend.cached_prompt_tokens,
            spend.completion_tokens
        );
    }
    let _ = writeln!(
        out,
        "## By dataset\n\n| dataset | accepted | rejected | acceptance |\n|---|---:|---:|---:|"
    );
    for (name, d) in &report.by_dataset {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            d.accepted,
            d.rejected,
            pct(d.acceptance_rate)
        );
    }
    for (title, map) in [
        ("DR grade", &report.labels.dr_grade),
        ("Glaucoma", &report.labels.glaucoma),
        ("Reject reasons", &report.reject_reasons),
    ] {
        let _ = writeln!(out, "\n## {title}\n");
        if map.is_empty() {
            let _ = writeln!(out, "none");
        }
        for (key, value) in map {
            let _ = writeln!(out, "- {key}: {value}");
        }
    }
    let _ = writeln!(out, "\n## Section coverage\n");
    for (k, v) in &report.section_coverage {
        let _ = writeln!(out, "- {k}: {}", pct(*v));
    }
    if let Some(b) = &report.baseline {
        let _ = writeln!(
            out,
            "\n## Against baseline {}\n\n| figure | this | baseline | change |\n|---|---:|---:|---:|",
            b.dir
        );
        for m in &b.metrics {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:+} |",
                m.name,
                fmt_num(m.current),
                fmt_num(m.baseline),
                round4(m.delta)
            );
        }
    }
    let _ = writeln!(out, "\n## Warnings\n");
    if report.warnings.is_empty() {
        let _ = writeln!(out, "none");
    }
    for w in &report.warnings {
        let _ = writeln!(out, "- [{}] {}", w.code, w.message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<b>&\""), "&lt;b&gt;&amp;&quot;");
    }

    #[test]
    fn page_has_every_section_and_no_scripts() {
        let mut report = QaReport::default();
        report.captions.words.count = 0;
        let page = html(&report, &PlotData::default(), &[], &[]);
        for (id, _) in HTML_SECTIONS {
            assert!(page.contains(&format!("<section id=\"{id}\">")), "{id}");
        }
        assert!(!page.contains("<script"));
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    }
}
