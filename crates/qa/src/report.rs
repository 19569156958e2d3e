//! The figures of the report, serialised as `qa/report.json` (schema in `docs/qa.md`).

use crate::sketch::{Dist, DupSummary, NearDupSummary};
use serde::Serialize;
use std::collections::BTreeMap;

/// Version of the `report.json` layout; bumped on any incompatible change.
pub const REPORT_VERSION: u32 = 2;

/// Counts of a categorical column (`"unlabelled"` for nulls).
pub type Counts = BTreeMap<String, u64>;

/// Every figure of the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QaReport {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// The dataset folder the report describes.
    pub dataset_dir: String,
    /// Captioning model from the card.
    pub model: String,
    /// Prompt hash from the card.
    pub prompt_hash: String,
    /// Accepted, rejected and failed items.
    pub counts: ItemCounts,
    /// Per dataset: accepted, rejected, acceptance rate.
    pub by_dataset: BTreeMap<String, DatasetCounts>,
    /// Accepted rows per split.
    pub by_split: Counts,
    /// Label distributions of the accepted rows (flattened: `dr_grade`, `glaucoma`, ... are
    /// top-level keys of `report.json`).
    #[serde(flatten)]
    pub labels: Labels,
    /// Reject reasons (an item may have several).
    pub reject_reasons: Counts,
    /// Fraction of accepted rows whose caption section is non-empty, by section.
    pub section_coverage: BTreeMap<String, f64>,
    /// Label-consistency and laterality figures.
    pub consistency: Consistency,
    /// Caption length in words and estimated tokens against the 77 and 256 budgets.
    pub captions: Captions,
    /// Vocabulary diversity.
    pub vocabulary: Vocabulary,
    /// Exact and near duplicates.
    pub duplicates: Duplicates,
    /// Distributions of the measured image quality.
    pub quality: BTreeMap<String, Dist>,
    /// Measured quality grade counts.
    pub quality_grade: Counts,
    /// Source and output resolution.
    pub resolution: Resolution,
    /// Measurements by class.
    pub measurements: Measurements,
    /// Lesions named in the structured answer, by type.
    pub lesions: Counts,
    /// Tokens, latency and throughput of the captioning calls.
    pub cost: Cost,
    /// What a data engineer should look at before training.
    pub warnings: Vec<Warning>,
    /// Side-by-side comparison with another build (`qa DIR --baseline OTHER`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
}

/// Item counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ItemCounts {
    /// Rows in `shards/`.
    pub accepted: u64,
    /// Rows in `rejects/`.
    pub rejected: u64,
    /// Failed items from the card (journal), retried by the next run.
    pub failed: u64,
    /// accepted / (accepted + rejected).
    pub acceptance_rate: f64,
}

/// Per-dataset counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct DatasetCounts {
    /// Accepted rows.
    pub accepted: u64,
    /// Rejected rows.
    pub rejected: u64,
    /// accepted / (accepted + rejected).
    pub acceptance_rate: f64,
}

/// Label distributions of the accepted rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Labels {
    /// ICDR grade 0-4.
    pub dr_grade: Counts,
    /// `no`, `suspect`, `yes`.
    pub glaucoma: Counts,
    /// `yes`, `no`.
    pub amd: Counts,
    /// Myopic maculopathy category.
    pub myopia: Counts,
    /// Multi-label disease codes (a row counts once per code).
    pub disease_codes: Counts,
    /// `left`, `right`, `unknown`.
    pub laterality: Counts,
}

/// Consistency figures.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Consistency {
    /// Items with a caption (accepted plus rejected with an answer) checked against labels.
    pub checked: u64,
    /// Of those, rejected by a `consistency.*` rule.
    pub inconsistent: u64,
    /// 1 - inconsistent / checked.
    pub label_consistency_rate: f64,
    /// Rejected by `consistency.laterality`.
    pub laterality_rejects: u64,
    /// Fraction of accepted rows with a known laterality (left or right).
    pub laterality_known_rate: f64,
}

/// Caption lengths.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Captions {
    /// Words per caption.
    pub words: Dist,
    /// Estimated encoder tokens per caption (see `docs/qa.md`).
    pub tokens: Dist,
    /// Captions over 77 tokens (CLIP-style encoders truncate them).
    pub over_77_tokens: u64,
    /// Captions over 256 tokens.
    pub over_256_tokens: u64,
    /// Fraction over 77.
    pub over_77_rate: f64,
    /// Fraction over 256.
    pub over_256_rate: f64,
}

/// Vocabulary diversity.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Vocabulary {
    /// Distinct lower-cased words.
    pub distinct_unigrams: u64,
    /// Distinct word bigrams.
    pub distinct_bigrams: u64,
    /// Distinct word trigrams.
    pub distinct_trigrams: u64,
    /// Whether the three counts are exact (else KMV estimates, about 2% error).
    pub exact: bool,
    /// Most frequent content words per DR grade: `[term, rows]`.
    pub top_terms_by_dr_grade: BTreeMap<String, Vec<(String, u64)>>,
}

/// Duplicate figures.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Duplicates {
    /// Identical caption texts.
    pub exact_captions: DupSummary,
    /// Identical perceptual hashes (`facts.perceptual_hash`).
    pub images: DupSummary,
    /// Near-duplicate captions by MinHash.
    pub near_captions: NearDupSummary,
}

/// Resolution figures.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Resolution {
    /// Source width in pixels.
    pub original_width: Dist,
    /// Source height in pixels.
    pub original_height: Dist,
    /// Output sizes, `WxH`.
    pub output_sizes: Counts,
}

/// Measurements by class.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Measurements {
    /// Vessel density by DR grade.
    pub vessel_density_by_dr_grade: BTreeMap<String, Dist>,
    /// Cup-to-disc ratio by glaucoma label.
    pub cup_to_disc_by_glaucoma: BTreeMap<String, Dist>,
}

/// Cost and speed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Cost {
    /// Sum of prompt tokens over accepted rows.
    pub prompt_tokens: u64,
    /// Sum of completion tokens over accepted rows.
    pub completion_tokens: u64,
    /// (prompt + completion) / accepted.
    pub tokens_per_caption: f64,
    /// Latency of the captioning call, ms.
    pub latency_ms: Dist,
    /// Earliest `captioned_at`.
    pub first_captioned_at: Option<String>,
    /// Latest `captioned_at`.
    pub last_captioned_at: Option<String>,
    /// Accepted rows per hour between the first and last caption (null if under a second).
    pub accepted_per_hour: Option<f64>,
    /// What the build paid over all its runs, from `dataset.json` (requests, cache hits, tokens,
    /// US dollars); null for datasets built before it was recorded.
    pub spend: Option<retina_shards::CardCost>,
}

/// One warning.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Warning {
    /// Stable code: `class_imbalance`, `mostly_rejected`, `low_acceptance`, `section_rare`,
    /// `over_token_budget`, `duplicate_images`, `near_duplicate_captions`, `label_inconsistency`.
    pub code: String,
    /// One sentence for a person.
    pub message: String,
}

/// Comparison with another build.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Baseline {
    /// The other build's folder.
    pub dir: String,
    /// Its model.
    pub model: String,
    /// Its prompt hash.
    pub prompt_hash: String,
    /// Key figures, side by side.
    pub metrics: Vec<BaselineMetric>,
}

/// One compared figure.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BaselineMetric {
    /// Name, e.g. `acceptance_rate`.
    pub name: String,
    /// This build.
    pub current: f64,
    /// The baseline build.
    pub baseline: f64,
    /// current - baseline.
    pub delta: f64,
}
