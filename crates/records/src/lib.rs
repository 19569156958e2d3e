//! Core record types shared by every stage of the caption-dataset builder.
//!
//! This crate does no I/O. It defines:
//! - [`ItemId`]: the stable identity of one image, derived from its dataset and relative path
//!   (never from its position), so resume, partitioning and deduplication agree;
//! - [`Record`] and [`Labels`]: one normalised labelled image as read from a data manifest;
//! - [`ImageFacts`]: what the fundus image stage measured (each measurement with a confidence,
//!   absent rather than zero when it failed);
//! - [`CaptionAnswer`]: the structured answer every captioner must produce, mirroring
//!   `schemas/caption.schema.json`;
//! - [`RejectReason`] and [`ItemState`]: how an item ends.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

mod vocabulary;
pub use vocabulary::{LesionExtent, LesionLocation, LesionType};

/// Stable identity of one image: 32 hex characters of BLAKE3 over `dataset \0 relative_path`.
///
/// The relative path uses `/` separators so the same file gets the same id on every platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemId(String);

impl ItemId {
    /// Derives the id of the image at `relative_path` inside `dataset`.
    pub fn from_source(dataset: &str, relative_path: &str) -> Self {
        let normalised = relative_path.replace('\\', "/");
        let mut hasher = blake3::Hasher::new();
        hasher.update(dataset.as_bytes());
        hasher.update(&[0]);
        hasher.update(normalised.as_bytes());
        let hex = hasher.finalize().to_hex();
        ItemId(hex.as_str()[..32].to_string())
    }

    /// Wraps an id read back from storage (journal, shards) without re-deriving it.
    pub fn from_stored(id: impl Into<String>) -> Self {
        ItemId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A number in `0..u64::MAX` derived from the id, for per-item seeds and partitioning.
    pub fn stable_hash(&self) -> u64 {
        let digest = blake3::hash(self.0.as_bytes());
        u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which eye a photograph shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Laterality {
    Left,
    Right,
    #[default]
    Unknown,
}

impl Laterality {
    pub fn as_str(self) -> &'static str {
        match self {
            Laterality::Left => "left",
            Laterality::Right => "right",
            Laterality::Unknown => "unknown",
        }
    }
}

/// Glaucoma label as datasets give it (PAPILA has a suspect class; AIROGS' RG maps to yes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Glaucoma {
    No,
    Suspect,
    Yes,
}

/// Image quality grade, from a dataset label (EyeQ, DDR 5) or from the image stage's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum QualityGrade {
    Good,
    Usable,
    Reject,
}

impl QualityGrade {
    pub fn as_str(self) -> &'static str {
        match self {
            QualityGrade::Good => "good",
            QualityGrade::Usable => "usable",
            QualityGrade::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
}

/// Normalised labels of one image. Every field is optional: datasets label different things.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    /// ICDR diabetic retinopathy grade 0-4.
    pub dr_grade: Option<u8>,
    /// Diabetic macular oedema: 0 none, 1-2 risk grades (IDRiD), 1 present (Messidor-2).
    pub dme: Option<u8>,
    pub glaucoma: Option<Glaucoma>,
    /// Age-related macular degeneration present.
    pub amd: Option<bool>,
    /// META-PM myopic maculopathy grade 0-4.
    pub myopic_maculopathy: Option<u8>,
    /// Multi-label disease codes as the dataset names them (RFMiD codes, ODIR flags, ...).
    pub disease_codes: Vec<String>,
    /// Quality given by the dataset; takes precedence over the measured grade.
    pub quality: Option<QualityGrade>,
    pub age: Option<f32>,
    pub sex: Option<Sex>,
    /// Free-text findings (e.g. ODIR's diagnostic keywords).
    pub findings: Vec<String>,
    /// Whatever the manifest did not map, kept verbatim.
    pub raw: BTreeMap<String, String>,
}

impl Labels {
    /// True when the labels say the eye has no disease at all (DR 0 and nothing else flagged).
    pub fn is_normal(&self) -> bool {
        self.dr_grade.unwrap_or(0) == 0
            && self.dme.unwrap_or(0) == 0
            && matches!(self.glaucoma, None | Some(Glaucoma::No))
            && self.amd != Some(true)
            && self.myopic_maculopathy.unwrap_or(0) == 0
            && self.disease_codes.is_empty()
    }
}

/// One labelled image, as read from a data manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: ItemId,
    /// Dataset name as given in the manifest (e.g. `eyepacs`).
    pub dataset: String,
    /// Where to read the image from.
    pub image_path: PathBuf,
    /// Path relative to the dataset root, `/`-separated; the id is derived from it.
    pub relative_path: String,
    pub laterality: Laterality,
    pub split: Option<String>,
    pub labels: Labels,
}

impl Record {
    /// Builds a record, deriving its id from dataset and relative path.
    pub fn new(dataset: &str, relative_path: &str, image_path: PathBuf) -> Self {
        Record {
            id: ItemId::from_source(dataset, relative_path),
            dataset: dataset.to_string(),
            image_path,
            relative_path: relative_path.replace('\\', "/"),
            laterality: Laterality::Unknown,
            split: None,
            labels: Labels::default(),
        }
    }
}

/// A measured value with the method's confidence in it (0 = none, 1 = certain).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measured<T> {
    pub value: T,
    pub confidence: f32,
}

/// Image quality metrics computed inside the field of view.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityMetrics {
    /// Mean luminance inside the field, 0-1.
    pub brightness: f32,
    /// Standard deviation of luminance inside the field, 0-1.
    pub contrast: f32,
    /// Variance of the Laplacian of the green channel inside the field (on the output scale).
    pub sharpness: f32,
    /// 1 - (spread of local mean brightness / global mean), clamped to 0-1; 1 is even.
    pub illumination_uniformity: f32,
    /// Measured grade from the documented thresholds.
    pub grade: QualityGrade,
}

/// Which side of the image the optic disc is on: a laterality hint. In a standard fundus
/// photograph a right eye (OD) shows the disc on the image's right, a left eye (OS) on its left,
/// unless the image was mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscSide {
    Left,
    Right,
    Centre,
}

/// Whether the photograph is centred on the disc or on the macula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Centring {
    Disc,
    Macula,
}

/// The optic disc as found in the output image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiscEstimate {
    /// Centre, as a fraction of the output width (x) and height (y).
    pub x: f32,
    pub y: f32,
    /// Diameter as a fraction of the field-of-view diameter.
    pub diameter: f32,
    pub side: DiscSide,
    pub confidence: f32,
}

/// Everything the fundus image stage measured. Absent means the method failed, never zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageFacts {
    pub original_width: u32,
    pub original_height: u32,
    pub output_width: u32,
    pub output_height: u32,
    /// Fraction of the original frame inside the circular field of view.
    pub fov_fraction: f32,
    pub quality: QualityMetrics,
    pub disc: Option<DiscEstimate>,
    pub centring: Option<Centring>,
    /// Vessel pixels / field-of-view pixels, from the vessel map.
    pub vessel_density: Option<Measured<f32>>,
    /// Distance-metric tortuosity (arc / chord - 1) averaged over segments.
    pub tortuosity: Option<Measured<f32>>,
    /// Box-counting fractal dimension of the vessel map.
    pub fractal_dimension: Option<Measured<f32>>,
    /// Vertical cup-to-disc ratio estimate.
    pub cup_to_disc_ratio: Option<Measured<f32>>,
    /// Candidate bright lesions (exudate-like blobs): an estimate, not a diagnosis.
    pub bright_lesion_candidates: Option<Measured<u32>>,
    /// Candidate dark lesions (haemorrhage/microaneurysm-like blobs): an estimate.
    pub dark_lesion_candidates: Option<Measured<u32>>,
    /// 64-bit perceptual hash of the cropped field (for duplicate detection).
    pub perceptual_hash: u64,
}

impl ImageFacts {
    /// A plausible good-quality 1024x1024 output of an `original_width` x `original_height`
    /// photograph with every measurement absent: a fixture for tests, examples and benchmarks.
    pub fn fixture(original_width: u32, original_height: u32) -> ImageFacts {
        ImageFacts {
            original_width,
            original_height,
            output_width: 1024,
            output_height: 1024,
            fov_fraction: 0.7,
            quality: QualityMetrics {
                brightness: 0.4,
                contrast: 0.2,
                sharpness: 100.0,
                illumination_uniformity: 0.9,
                grade: QualityGrade::Good,
            },
            disc: None,
            centring: None,
            vessel_density: None,
            tortuosity: None,
            fractal_dimension: None,
            cup_to_disc_ratio: None,
            bright_lesion_candidates: None,
            dark_lesion_candidates: None,
            perceptual_hash: 0,
        }
    }
}

/// One lesion as a captioner reports it, from the controlled vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LesionFinding {
    #[serde(rename = "type")]
    pub kind: LesionType,
    pub location: LesionLocation,
    pub extent: LesionExtent,
}

/// The structured answer every captioner produces; mirrors `schemas/caption.schema.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionAnswer {
    pub optic_disc: String,
    pub rnfl: String,
    pub vessels: String,
    pub macula: String,
    pub background: String,
    pub lesions: Vec<LesionFinding>,
    pub quality: String,
    pub impression: String,
    /// One English paragraph that covers every section, for the text encoder: the `detailed`
    /// caption style.
    pub caption: String,
    /// The other caption styles asked for in the same request (e.g. `short`), by style name.
    /// Absent from the JSON when the run asks for the detailed style only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub caption_variants: BTreeMap<String, String>,
}

impl CaptionAnswer {
    /// The prose sections by their schema names, in caption order.
    pub fn sections(&self) -> [(&'static str, &str); 7] {
        [
            ("optic_disc", &self.optic_disc),
            ("rnfl", &self.rnfl),
            ("vessels", &self.vessels),
            ("macula", &self.macula),
            ("background", &self.background),
            ("quality", &self.quality),
            ("impression", &self.impression),
        ]
    }

    /// Every caption with its style name: `detailed` (the `caption` field) first, then the
    /// variants in name order.
    pub fn captions_by_style(&self) -> Vec<(&str, &str)> {
        std::iter::once(("detailed", self.caption.as_str()))
            .chain(
                self.caption_variants
                    .iter()
                    .map(|(style, text)| (style.as_str(), text.as_str())),
            )
            .collect()
    }
}

/// Why an item was rejected: a stable machine code and a human explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectReason {
    /// Stable code, e.g. `image.decode`, `schema.invalid`, `consistency.dr_grade`.
    pub code: String,
    pub detail: String,
}

impl RejectReason {
    pub fn new(code: impl Into<String>, detail: impl Into<String>) -> Self {
        RejectReason {
            code: code.into(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

/// Final states of an item. `Failed` items (endpoint or I/O trouble) are retried on the next run;
/// `Accepted` and `Rejected` are done once their row is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    Pending,
    InFlight,
    Accepted,
    Rejected,
    Failed,
}

impl ItemState {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::InFlight => "in_flight",
            ItemState::Accepted => "accepted",
            ItemState::Rejected => "rejected",
            ItemState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ItemState::Pending,
            "in_flight" => ItemState::InFlight,
            "accepted" => ItemState::Accepted,
            "rejected" => ItemState::Rejected,
            "failed" => ItemState::Failed,
            _ => return None,
        })
    }
}

/// Token usage of one captioner call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// Who produced a caption: recorded on every row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub model: String,
    pub endpoint: String,
    pub prompt_hash: String,
    pub schema_hash: String,
    /// RFC 3339 time the answer was received.
    pub captioned_at: String,
    pub usage: Usage,
    pub latency_ms: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_dataset_and_path_only() {
        let a = ItemId::from_source("eyepacs", "train/10_left.jpeg");
        let b = ItemId::from_source("eyepacs", "train\\10_left.jpeg");
        let c = ItemId::from_source("aptos", "train/10_left.jpeg");
        assert_eq!(a, b, "separator must not change the id");
        assert_ne!(a, c, "dataset is part of the id");
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().chars().all(|ch| ch.is_ascii_hexdigit()));
    }

    #[test]
    fn caption_answer_rejects_unknown_fields() {
        let text = r#"{"optic_disc":"a","rnfl":"b","vessels":"c","macula":"d","background":"e",
            "lesions":[{"type":"microaneurysm","location":"temporal","extent":"few"}],
            "quality":"f","impression":"g","caption":"h","extra":1}"#;
        assert!(serde_json::from_str::<CaptionAnswer>(text).is_err());
        let ok = text.replace(",\"extra\":1", "");
        let answer: CaptionAnswer = serde_json::from_str(&ok).unwrap();
        assert_eq!(answer.lesions[0].kind, LesionType::Microaneurysm);
    }

    #[test]
    fn normal_means_nothing_flagged() {
        let mut labels = Labels {
            dr_grade: Some(0),
            ..Labels::default()
        };
        assert!(labels.is_normal());
        labels.glaucoma = Some(Glaucoma::Suspect);
        assert!(!labels.is_normal());
    }
}
