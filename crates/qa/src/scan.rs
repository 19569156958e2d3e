//! One pass over the dataset with polars: each shard is scanned lazily with only the columns the
//! report needs (never the image bytes), collected one shard at a time and folded into
//! bounded-size accumulators. Memory is bounded by one shard's text columns plus fixed sketches.

use crate::QaError;
use crate::report::*;
use crate::sketch::{DistAcc, DupCounter, Kmv, NearDupSample, hash_bytes};
use crate::text;
use polars::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Caption sections, in schema order.
pub const SECTIONS: [&str; 7] = [
    "optic_disc",
    "rnfl",
    "vessels",
    "macula",
    "background",
    "quality",
    "impression",
];

/// Measured quality facts plotted as distributions.
pub const QUALITY_FACTS: [&str; 5] = [
    "sharpness",
    "brightness",
    "contrast",
    "illumination_uniformity",
    "fov_fraction",
];

/// Captions kept for the near-duplicate search.
const NEAR_DUP_SAMPLE: usize = 20_000;
/// Keys kept by each exact-duplicate counter before it starts sampling.
const DUP_KEYS: usize = 250_000;
/// Distinct terms kept per class before rare ones are pruned.
const TERMS_CAP: usize = 20_000;
/// Gallery rows per (dataset, DR grade) stratum, and in all.
const GALLERY_PER_STRATUM: usize = 2;
const GALLERY_MAX: usize = 24;
/// Reject examples shown.
const REJECT_EXAMPLES: usize = 12;

/// A row picked for the gallery, fetched (image and all) after the pass.
#[derive(Debug, Clone)]
pub struct GalleryPick {
    pub shard: PathBuf,
    pub row: usize,
    pub title: String,
    pub caption: String,
}

/// A reject picked as an example.
#[derive(Debug, Clone)]
pub struct RejectPick {
    pub shard: PathBuf,
    pub row: usize,
    pub id: String,
    pub dataset: String,
    pub reasons: String,
}

/// Values kept for plots (bounded samples).
#[derive(Debug, Default)]
pub struct PlotData {
    pub tokens: Vec<f64>,
    pub words: Vec<f64>,
    pub latency: Vec<f64>,
    pub quality: BTreeMap<String, Vec<f64>>,
    pub vessel_by_grade: BTreeMap<String, Vec<f64>>,
    pub cdr_by_glaucoma: BTreeMap<String, Vec<f64>>,
}

/// Everything one pass yields.
pub struct Scan {
    pub report: QaReport,
    pub gallery: Vec<GalleryPick>,
    pub rejects: Vec<RejectPick>,
    pub plots: PlotData,
}

#[derive(Default)]
struct Acc {
    words: DistAcc,
    tokens: DistAcc,
    latency: DistAcc,
    quality: BTreeMap<String, DistAcc>,
    width: DistAcc,
    height: DistAcc,
    vessel: BTreeMap<String, DistAcc>,
    cdr: BTreeMap<String, DistAcc>,
    sections: BTreeMap<String, u64>,
    laterality_known: u64,
    terms: BTreeMap<String, HashMap<String, u64>>,
    uni: Option<Kmv>,
    bi: Option<Kmv>,
    tri: Option<Kmv>,
    exact_captions: Option<DupCounter>,
    images: Option<DupCounter>,
    near: Option<NearDupSample>,
    strata: HashMap<(String, String), usize>,
    first_at: Option<String>,
    last_at: Option<String>,
    reasons_seen: HashMap<String, usize>,
}

fn polars_err(path: &Path, source: PolarsError) -> QaError {
    QaError::Polars {
        path: path.to_path_buf(),
        source,
    }
}

fn bump(map: &mut Counts, key: impl Into<String>) {
    *map.entry(key.into()).or_default() += 1;
}

fn field(root: &str, name: &str) -> Expr {
    col(root).struct_().field_by_name(name).alias(name)
}

fn scan(path: &Path) -> Result<LazyFrame, QaError> {
    let text = path.to_str().ok_or_else(|| QaError::Path {
        path: path.to_path_buf(),
    })?;
    LazyFrame::scan_parquet(PlRefPath::new(text), ScanArgsParquet::default())
        .map_err(|e| polars_err(path, e))
}

/// The accepted-shard query: projection only, so image bytes are never read.
fn accepted_query(path: &Path) -> Result<DataFrame, QaError> {
    let mut cols = vec![
        col("id"),
        col("dataset"),
        col("split"),
        col("laterality"),
        col("width"),
        col("height"),
        col("original_width"),
        col("original_height"),
        field("labels", "dr_grade"),
        field("labels", "glaucoma"),
        field("labels", "amd"),
        field("labels", "myopic_maculopathy"),
        field("labels", "disease_codes"),
        field("facts", "quality_grade"),
        field("facts", "vessel_density"),
        field("facts", "cup_to_disc_ratio"),
        field("facts", "perceptual_hash"),
        col("lesions"),
        col("caption"),
        col("prompt_tokens"),
        col("completion_tokens"),
        col("latency_ms"),
        col("captioned_at"),
    ];
    for name in QUALITY_FACTS {
        cols.push(field("facts", name));
    }
    for name in SECTIONS {
        cols.push(col(name).alias(format!("section_{name}")));
    }
    scan(path)?
        .select(cols)
        .collect()
        .map_err(|e| polars_err(path, e))
}

/// Typed column access with errors naming the shard and column.
struct Frame<'a> {
    df: &'a DataFrame,
    path: &'a Path,
}

impl<'a> Frame<'a> {
    fn column(&self, name: &str) -> Result<&'a Column, QaError> {
        self.df.column(name).map_err(|e| polars_err(self.path, e))
    }
    fn str(&self, name: &str) -> Result<&'a StringChunked, QaError> {
        self.column(name)?
            .str()
            .map_err(|e| polars_err(self.path, e))
    }
    fn i32(&self, name: &str) -> Result<&'a Int32Chunked, QaError> {
        self.column(name)?
            .i32()
            .map_err(|e| polars_err(self.path, e))
    }
    fn i8(&self, name: &str) -> Result<&'a Int8Chunked, QaError> {
        self.column(name)?
            .i8()
            .map_err(|e| polars_err(self.path, e))
    }
    fn f32(&self, name: &str) -> Result<&'a Float32Chunked, QaError> {
        self.column(name)?
            .f32()
            .map_err(|e| polars_err(self.path, e))
    }
    fn bool(&self, name: &str) -> Result<&'a BooleanChunked, QaError> {
        self.column(name)?
            .bool()
            .map_err(|e| polars_err(self.path, e))
    }
    fn list(&self, name: &str) -> Result<&'a ListChunked, QaError> {
        self.column(name)?
            .list()
            .map_err(|e| polars_err(self.path, e))
    }
}

fn label<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "unlabelled".to_string(), |v| v.to_string())
}

/// Scans every shard listed in the card of `dir`.
pub fn scan_dataset(dir: &Path) -> Result<Scan, QaError> {
    let card = retina_shards::read_card(dir).map_err(|source| QaError::Card {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut report = QaReport {
        report_version: REPORT_VERSION,
        dataset_dir: dir.display().to_string(),
        model: card.model.clone(),
        prompt_hash: card.prompt_hash.clone(),
        ..QaReport::default()
    };
    report.counts.failed = card.counts.failed;
    report.cost.spend = card.cost;
    let mut acc = Acc {
        uni: Some(Kmv::new(4096)),
        bi: Some(Kmv::new(4096)),
        tri: Some(Kmv::new(4096)),
        exact_captions: Some(DupCounter::new(DUP_KEYS)),
        images: Some(DupCounter::new(DUP_KEYS)),
        near: Some(NearDupSample::new(NEAR_DUP_SAMPLE)),
        ..Acc::default()
    };
    let mut gallery = Vec::new();
    let mut rejects = Vec::new();
    for shard in &card.shards {
        let path = dir.join(&shard.path);
        if shard.kind == retina_shards::ShardKind::Accepted {
            let df = accepted_query(&path)?;
            fold_accepted(
                &mut report,
                &mut acc,
                &mut gallery,
                &Frame {
                    df: &df,
                    path: &path,
                },
            )?;
        } else {
            let df = scan(&path)?
                .select([col("id"), col("dataset"), col("reasons")])
                .collect()
                .map_err(|e| polars_err(&path, e))?;
            fold_rejects(
                &mut report,
                &mut acc,
                &mut rejects,
                &Frame {
                    df: &df,
                    path: &path,
                },
            )?;
        }
    }
    let plots = finish(&mut report, acc);
    Ok(Scan {
        report,
        gallery,
        rejects,
        plots,
    })
}

fn fold_accepted(
    report: &mut QaReport,
    acc: &mut Acc,
    gallery: &mut Vec<GalleryPick>,
    f: &Frame<'_>,
) -> Result<(), QaError> {
    let id = f.str("id")?;
    let dataset = f.str("dataset")?;
    let split = f.str("split")?;
    let laterality = f.str("laterality")?;
    let (width, height) = (f.i32("width")?, f.i32("height")?);
    let (ow, oh) = (f.i32("original_width")?, f.i32("original_height")?);
    let dr = f.i8("dr_grade")?;
    let glaucoma = f.str("glaucoma")?;
    let amd = f.bool("amd")?;
    let myopia = f.i8("myopic_maculopathy")?;
    let codes = f.list("disease_codes")?;
    let qgrade = f.str("quality_grade")?;
    let vessel = f.f32("vessel_density")?;
    let cdr = f.f32("cup_to_disc_ratio")?;
    let phash = f.str("perceptual_hash")?;
    let lesions = f.list("lesions")?;
    let caption = f.str("caption")?;
    let (pt, ct, lat) = (
        f.i32("prompt_tokens")?,
        f.i32("completion_tokens")?,
        f.i32("latency_ms")?,
    );
    let at = f.str("captioned_at")?;
    let quality: Vec<(&str, &Float32Chunked)> = QUALITY_FACTS
        .iter()
        .map(|n| Ok((*n, f.f32(n)?)))
        .collect::<Result<_, QaError>>()?;
    let sections: Vec<(&str, &StringChunked)> = SECTIONS
        .iter()
        .map(|n| Ok((*n, f.str(&format!("section_{n}"))?)))
        .collect::<Result<_, QaError>>()?;

    for i in 0..f.df.height() {
        report.counts.accepted += 1;
        let ds = dataset.get(i).unwrap_or("unknown").to_string();
        report.by_dataset.entry(ds.clone()).or_default().accepted += 1;
        bump(&mut report.by_split, split.get(i).unwrap_or("unknown"));
        let grade = label(dr.get(i));
        bump(&mut report.labels.dr_grade, grade.clone());
        let glauc = label(glaucoma.get(i));
        bump(&mut report.labels.glaucoma, glauc.clone());
        bump(
            &mut report.labels.amd,
            amd.get(i)
                .map_or("unlabelled", |a| if a { "yes" } else { "no" }),
        );
        bump(&mut report.labels.myopia, label(myopia.get(i)));
        if let Some(list) = codes.get_as_series(i)
            && let Ok(list) = list.str()
        {
            for code in (0..list.len()).filter_map(|j| list.get(j)) {
                bump(&mut report.labels.disease_codes, code);
            }
        }
        let side = laterality.get(i).unwrap_or("unknown");
        if side == "left" || side == "right" {
            acc.laterality_known += 1;
        }
        bump(&mut report.labels.laterality, side);
        bump(
            &mut report.quality_grade,
            qgrade.get(i).unwrap_or("unknown"),
        );
        for (name, values) in &quality {
            if let Some(v) = values.get(i) {
                acc.quality
                    .entry((*name).to_string())
                    .or_default()
                    .push(f64::from(v));
            }
        }
        if let (Some(w), Some(h)) = (width.get(i), height.get(i)) {
            bump(&mut report.resolution.output_sizes, format!("{w}x{h}"));
        }
        if let Some(w) = ow.get(i) {
            acc.width.push(f64::from(w));
        }
        if let Some(h) = oh.get(i) {
            acc.height.push(f64::from(h));
        }
        if let Some(v) = vessel.get(i) {
            acc.vessel
                .entry(grade.clone())
                .or_default()
                .push(f64::from(v));
        }
        if let Some(v) = cdr.get(i) {
            acc.cdr.entry(glauc.clone()).or_default().push(f64::from(v));
        }
        if let Some(hash) = phash.get(i).filter(|h| !h.is_empty())
            && let Some(images) = acc.images.as_mut()
        {
            images.insert(hash_bytes(hash.as_bytes()));
        }
        if let Some(list) = lesions.get_as_series(i)
            && let Ok(structs) = list.struct_()
            && let Ok(types) = structs.field_by_name("type")
            && let Ok(types) = types.str()
        {
            for t in (0..types.len()).filter_map(|j| types.get(j)) {
                bump(&mut report.lesions, t);
            }
        }
        for (name, values) in &sections {
            if values.get(i).is_some_and(|s| !s.trim().is_empty()) {
                *acc.sections.entry((*name).to_string()).or_default() += 1;
            }
        }
        let text = caption.get(i).unwrap_or("");
        fold_caption(acc, &grade, id.get(i).unwrap_or(""), text);
        report.cost.prompt_tokens += pt.get(i).unwrap_or(0).max(0) as u64;
        report.cost.completion_tokens += ct.get(i).unwrap_or(0).max(0) as u64;
        if let Some(ms) = lat.get(i) {
            acc.latency.push(f64::from(ms));
        }
        if let Some(t) = at.get(i).filter(|t| !t.is_empty()) {
            // RFC 3339 in UTC sorts as text.
            if acc.first_at.as_deref().is_none_or(|f| t < f) {
                acc.first_at = Some(t.to_string());
            }
            if acc.last_at.as_deref().is_none_or(|l| t > l) {
                acc.last_at = Some(t.to_string());
            }
        }
        let shown = acc.strata.entry((ds.clone(), grade.clone())).or_default();
        if *shown < GALLERY_PER_STRATUM && gallery.len() < GALLERY_MAX {
            *shown += 1;
            gallery.push(GalleryPick {
                shard: f.path.to_path_buf(),
                row: i,
                title: format!(
                    "{ds} · {} · DR {grade} · glaucoma {glauc} · {side}",
                    split.get(i).unwrap_or("?")
                ),
                caption: text.to_string(),
            });
        }
    }
    Ok(())
}

fn fold_caption(acc: &mut Acc, grade: &str, id: &str, caption: &str) {
    let lower: Vec<String> = text::words(caption).map(str::to_lowercase).collect();
    acc.words.push(lower.len() as f64);
    acc.tokens.push(f64::from(text::token_estimate(caption)));
    if let (Some(uni), Some(bi), Some(tri)) = (acc.uni.as_mut(), acc.bi.as_mut(), acc.tri.as_mut())
    {
        let hashes: Vec<u64> = lower.iter().map(|w| hash_bytes(w.as_bytes())).collect();
        for h in &hashes {
            uni.insert(*h);
        }
        for w in hashes.windows(2) {
            bi.insert(crate::sketch::mix64(w[0] ^ w[1].rotate_left(17)));
        }
        for w in hashes.windows(3) {
            tri.insert(crate::sketch::mix64(
                w[0] ^ w[1].rotate_left(17) ^ w[2].rotate_left(34),
            ));
        }
    }
    // A term counts once per caption: "rows mentioning it".
    let terms = acc.terms.entry(grade.to_string()).or_default();
    let mut seen: Vec<&str> = lower
        .iter()
        .map(String::as_str)
        .filter(|w| text::is_term(w))
        .collect();
    seen.sort_unstable();
    seen.dedup();
    for term in seen {
        *terms.entry(term.to_string()).or_default() += 1;
    }
    if terms.len() > TERMS_CAP {
        // Prune the long tail; frequent terms survive, so the top list is unaffected.
        terms.retain(|_, n| *n > 2);
    }
    if let Some(exact) = acc.exact_captions.as_mut() {
        exact.insert(hash_bytes(caption.as_bytes()));
    }
    if let Some(near) = acc.near.as_mut() {
        near.offer(hash_bytes(id.as_bytes()), caption);
    }
}

fn fold_rejects(
    report: &mut QaReport,
    acc: &mut Acc,
    picks: &mut Vec<RejectPick>,
    f: &Frame<'_>,
) -> Result<(), QaError> {
    let id = f.str("id")?;
    let dataset = f.str("dataset")?;
    let reasons = f.list("reasons")?;
    for i in 0..f.df.height() {
        report.counts.rejected += 1;
        let ds = dataset.get(i).unwrap_or("unknown").to_string();
        report.by_dataset.entry(ds.clone()).or_default().rejected += 1;
        let mut codes = Vec::new();
        let mut text = Vec::new();
        if let Some(list) = reasons.get_as_series(i)
            && let Ok(structs) = list.struct_()
            && let Ok(code) = structs.field_by_name("code")
            && let Ok(detail) = structs.field_by_name("detail")
            && let (Ok(code), Ok(detail)) = (code.str(), detail.str())
        {
            for (c, d) in (0..code.len()).map(|j| (code.get(j), detail.get(j))) {
                let c = c.unwrap_or("unknown");
                codes.push(c.to_string());
                text.push(match d {
                    Some(d) if !d.is_empty() => format!("{c}: {d}"),
                    _ => c.to_string(),
                });
            }
        }
        for c in &codes {
            bump(&mut report.reject_reasons, c.clone());
        }
        // Items rejected at the image stage never had a caption to check.
        let captioned = !codes.iter().any(|c| c.starts_with("image."));
        if captioned {
            report.consistency.checked += 1;
        }
        if codes.iter().any(|c| c.starts_with("consistency.")) {
            report.consistency.inconsistent += 1;
        }
        if codes.iter().any(|c| c == "consistency.laterality") {
            report.consistency.laterality_rejects += 1;
        }
        // Examples: first the first item of each new reason, then any, up to the limit.
        let first = codes.first().cloned().unwrap_or_default();
        let seen = acc.reasons_seen.entry(first).or_default();
        let fresh = *seen == 0;
        *seen += 1;
        if picks.len() < REJECT_EXAMPLES && (fresh || picks.len() < REJECT_EXAMPLES / 2) {
            picks.push(RejectPick {
                shard: f.path.to_path_buf(),
                row: i,
                id: id.get(i).unwrap_or("").to_string(),
                dataset: ds,
                reasons: text.join("; "),
            });
        }
    }
    Ok(())
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`YYYY-MM-DDTHH:MM:SS[.f]Z`).
pub fn epoch_seconds(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let days = days_from_civil(num(0..4)?, num(5..7)?, num(8..10)?);
    let secs = num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    let frac = text
        .get(19..)
        .and_then(|r| r.strip_prefix('.'))
        .map(|r| r.trim_end_matches(|c: char| !c.is_ascii_digit()))
        .and_then(|d| format!("0.{d}").parse::<f64>().ok())
        .unwrap_or(0.0);
    Some((days * 86_400 + secs) as f64 + frac)
}

fn finish(report: &mut QaReport, acc: Acc) -> PlotData {
    let accepted = report.counts.accepted;
    let total = accepted + report.counts.rejected;
    let rate = |a: u64, t: u64| if t == 0 { 0.0 } else { a as f64 / t as f64 };
    report.counts.acceptance_rate = rate(accepted, total);
    for counts in report.by_dataset.values_mut() {
        counts.acceptance_rate = rate(counts.accepted, counts.accepted + counts.rejected);
    }
    for name in SECTIONS {
        let covered = acc.sections.get(name).copied().unwrap_or(0);
        report
            .section_coverage
            .insert(name.to_string(), rate(covered, accepted));
    }
    let c = &mut report.consistency;
    c.checked += accepted;
    c.label_consistency_rate = 1.0 - rate(c.inconsistent, c.checked);
    if c.checked == 0 {
        c.label_consistency_rate = 0.0;
    }
    c.laterality_known_rate = rate(acc.laterality_known, accepted);

    let tokens = acc.tokens.finish();
    let over = |limit: f64| acc.tokens.sample().iter().filter(|t| **t > limit).count();
    // Exact counts below the reservoir size; scaled from the sample above it.
    let scale = if acc.tokens.sample().is_empty() {
        0.0
    } else {
        tokens.count as f64 / acc.tokens.sample().len() as f64
    };
    let o77 = (over(77.0) as f64 * scale).round() as u64;
    let o256 = (over(256.0) as f64 * scale).round() as u64;
    report.captions = Captions {
        words: acc.words.finish(),
        tokens,
        over_77_tokens: o77,
        over_256_tokens: o256,
        over_77_rate: rate(o77, accepted),
        over_256_rate: rate(o256, accepted),
    };
    let est = |k: &Option<Kmv>| k.as_ref().map_or((0, true), Kmv::estimate);
    let (u, ue) = est(&acc.uni);
    let (b, be) = est(&acc.bi);
    let (t, te) = est(&acc.tri);
    report.vocabulary = Vocabulary {
        distinct_unigrams: u,
        distinct_bigrams: b,
        distinct_trigrams: t,
        exact: ue && be && te,
        top_terms_by_dr_grade: distinctive_terms(&acc.terms, &report.labels.dr_grade),
    };
    report.duplicates = Duplicates {
        exact_captions: acc
            .exact_captions
            .as_ref()
            .map(DupCounter::finish)
            .unwrap_or_default(),
        images: acc
            .images
            .as_ref()
            .map(DupCounter::finish)
            .unwrap_or_default(),
        near_captions: acc.near.as_ref().map(|n| n.finish(0.8)).unwrap_or_default(),
    };
    report.quality = acc
        .quality
        .iter()
        .map(|(k, v)| (k.clone(), v.finish()))
        .collect();
    report.resolution.original_width = acc.width.finish();
    report.resolution.original_height = acc.height.finish();
    report.measurements = Measurements {
        vessel_density_by_dr_grade: acc
            .vessel
            .iter()
            .map(|(k, v)| (k.clone(), v.finish()))
            .collect(),
        cup_to_disc_by_glaucoma: acc
            .cdr
            .iter()
            .map(|(k, v)| (k.clone(), v.finish()))
            .collect(),
    };
    let cost = &mut report.cost;
    cost.tokens_per_caption = if accepted == 0 {
        0.0
    } else {
        (cost.prompt_tokens + cost.completion_tokens) as f64 / accepted as f64
    };
    cost.latency_ms = acc.latency.finish();
    cost.accepted_per_hour = match (
        acc.first_at.as_deref().and_then(epoch_seconds),
        acc.last_at.as_deref().and_then(epoch_seconds),
    ) {
        (Some(a), Some(b)) if b - a >= 1.0 => Some(accepted as f64 / ((b - a) / 3600.0)),
        _ => None,
    };
    cost.first_captioned_at = acc.first_at.clone();
    cost.last_captioned_at = acc.last_at.clone();
    crate::warnings::add(report);
    PlotData {
        tokens: acc.tokens.sample().to_vec(),
        words: acc.words.sample().to_vec(),
        latency: acc.latency.sample().to_vec(),
        quality: acc
            .quality
            .iter()
            .map(|(k, v)| (k.clone(), v.sample().to_vec()))
            .collect(),
        vessel_by_grade: acc
            .vessel
            .iter()
            .map(|(k, v)| (k.clone(), v.sample().to_vec()))
            .collect(),
        cdr_by_glaucoma: acc
            .cdr
            .iter()
            .map(|(k, v)| (k.clone(), v.sample().to_vec()))
            .collect(),
    }
}

/// The terms that characterise each class: ranked by the share of the class's captions that
/// mention the term minus the share of the other classes' captions that do (terms every caption
/// uses score zero), then by count.
fn distinctive_terms(
    terms: &BTreeMap<String, HashMap<String, u64>>,
    rows: &Counts,
) -> BTreeMap<String, Vec<(String, u64)>> {
    let total_rows: u64 = rows.values().sum();
    let mut overall: HashMap<&str, u64> = HashMap::new();
    for class in terms.values() {
        for (t, n) in class {
            *overall.entry(t.as_str()).or_default() += n;
        }
    }
    terms
        .iter()
        .map(|(grade, class)| {
            let inside = rows.get(grade).copied().unwrap_or(0).max(1) as f64;
            let outside = total_rows.saturating_sub(inside as u64).max(1) as f64;
            let mut scored: Vec<(f64, &String, u64)> = class
                .iter()
                .map(|(t, n)| {
                    let rest = overall
                        .get(t.as_str())
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(*n);
                    (*n as f64 / inside - rest as f64 / outside, t, *n)
                })
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.2.cmp(&a.2)).then(a.1.cmp(b.1)));
            let top = scored
                .into_iter()
                .take(12)
                .map(|(_, t, n)| (t.clone(), n))
                .collect();
            (grade.clone(), top)
        })
        .collect()
}

/// Fetches one cell of one row with a sliced scan (only that row group is read).
fn fetch_cell(shard: &Path, row: usize, expr: Expr) -> Result<DataFrame, QaError> {
    scan(shard)?
        .slice(row as i64, 1)
        .select([expr.alias("cell")])
        .collect()
        .map_err(|e| polars_err(shard, e))
}

/// The stored image bytes of one accepted row.
pub fn fetch_image(shard: &Path, row: usize) -> Result<Option<Vec<u8>>, QaError> {
    let df = fetch_cell(shard, row, col("image").struct_().field_by_name("bytes"))?;
    let cell = df.column("cell").map_err(|e| polars_err(shard, e))?;
    let bytes = cell.binary().map_err(|e| polars_err(shard, e))?;
    Ok(bytes.get(0).map(<[u8]>::to_vec))
}

/// The raw answer of one reject row.
pub fn fetch_raw_answer(shard: &Path, row: usize) -> Result<Option<String>, QaError> {
    let df = fetch_cell(shard, row, col("raw_answer"))?;
    let cell = df.column("cell").map_err(|e| polars_err(shard, e))?;
    let text = cell.str().map_err(|e| polars_err(shard, e))?;
    Ok(text.get(0).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_of_rfc3339() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(epoch_seconds("2000-03-01T00:00:01Z"), Some(951_868_801.0));
        let f = epoch_seconds("2026-11-24T10:00:00.250Z").unwrap_or(0.0);
        assert!((f - epoch_seconds("2026-11-24T10:00:00Z").unwrap_or(0.0) - 0.25).abs() < 1e-6);
        assert_eq!(epoch_seconds("yesterday"), None);
    }
}
