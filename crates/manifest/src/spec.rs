//! The TOML format of a data manifest, as serde structures.
//!
//! Every table denies unknown keys so a typo is an error rather than a silently ignored setting.
//! `docs/manifests.md` and `schemas/manifest.schema.json` describe the same keys; keep them in step.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole manifest file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ManifestSpec {
    pub dataset: DatasetSpec,
    pub labels: LabelsSpec,
    #[serde(default)]
    pub columns: ColumnsSpec,
    #[serde(default)]
    pub images: ImagesSpec,
    #[serde(default)]
    pub laterality: LateralitySpec,
    #[serde(default)]
    pub values: ValuesSpec,
    #[serde(default)]
    pub flags: FlagsSpec,
    #[serde(default)]
    pub eyes: EyesSpec,
    #[serde(default)]
    pub automorph: Vec<AutomorphSpec>,
}

/// `[eyes.left]` / `[eyes.right]`: per-eye columns. With an `image` column per eye (ODIR), each
/// row is one patient and yields one record per eye; without, the eye's columns apply to the
/// record whose laterality matches (DeepDRiD's `left_eye_DR_Level`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EyesSpec {
    pub left: Option<ColumnsSpec>,
    pub right: Option<ColumnsSpec>,
}

/// `[[automorph]]`: a precomputed AutoMorph feature CSV joined to the records by image name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AutomorphSpec {
    /// The CSV, relative to the root.
    pub file: String,
    /// Zone name put in every feature key (`disc_zone_b`, `macula`, ...).
    pub zone: String,
    /// Header of the image-name column.
    #[serde(default = "default_automorph_key")]
    pub key: String,
}

impl EyesSpec {
    /// True when each eye has its own image column, so one row yields a record per eye.
    pub fn expands(&self) -> bool {
        [&self.left, &self.right]
            .iter()
            .any(|eye| eye.as_ref().is_some_and(|e| e.image.is_some()))
    }
}

fn default_automorph_key() -> String {
    "Name".to_string()
}

/// `[dataset]`: identity, where the files are, and descriptive facts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatasetSpec {
    pub name: String,
    #[serde(default = "default_root")]
    pub root: String,
    pub split: Option<String>,
    pub camera: Option<String>,
    pub field_of_view_degrees: Option<f32>,
    pub licence: Option<String>,
    pub citation: Option<String>,
    pub url: Option<String>,
    pub description: Option<String>,
}

fn default_root() -> String {
    ".".to_string()
}

/// Where the labels live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Carrier {
    /// A delimited text file with (usually) a header row.
    Csv,
    /// An Excel workbook (one sheet, header on a given row).
    Xlsx,
    /// Whitespace-separated columns, usually without a header.
    Txt,
    /// The images are found by scanning; the label is the parent folder's name.
    Folder,
    /// The images are found by scanning; labels come from the file name (`name_pattern`).
    FileName,
    /// The images are found by scanning; there are no labels.
    None,
}

impl Carrier {
    /// Carriers whose rows come from scanning the image folder rather than a label file.
    pub fn scans_images(self) -> bool {
        matches!(self, Carrier::Folder | Carrier::FileName | Carrier::None)
    }
}

/// `[labels]`: the label carrier and how to parse it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LabelsSpec {
    pub carrier: Carrier,
    pub file: Option<String>,
    pub sheet: Option<String>,
    pub header_row: Option<usize>,
    pub has_header: Option<bool>,
    pub delimiter: Option<String>,
    #[serde(default)]
    pub ignore_columns: Vec<String>,
    pub list_separators: Option<Vec<String>>,
    pub name_pattern: Option<String>,
}

/// A header name or a list of aliases tried in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Aliases {
    One(String),
    Many(Vec<String>),
}

impl Aliases {
    pub fn names(&self) -> Vec<String> {
        match self {
            Aliases::One(name) => vec![name.clone()],
            Aliases::Many(names) => names.clone(),
        }
    }
}

/// One string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<String> {
        match self {
            OneOrMany::One(item) => vec![item.clone()],
            OneOrMany::Many(items) => items.clone(),
        }
    }
}

/// `[columns]`: normalised field -> header name or aliases.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ColumnsSpec {
    pub image: Option<Aliases>,
    pub dr_grade: Option<Aliases>,
    pub dme: Option<Aliases>,
    pub glaucoma: Option<Aliases>,
    pub amd: Option<Aliases>,
    pub myopic_maculopathy: Option<Aliases>,
    pub quality: Option<Aliases>,
    pub age: Option<Aliases>,
    pub sex: Option<Aliases>,
    pub findings: Option<Aliases>,
    pub disease_codes: Option<Aliases>,
    pub split: Option<Aliases>,
}

/// `[images]`: how a row becomes an image path, or where to scan.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImagesSpec {
    pub path: Option<OneOrMany>,
    #[serde(default)]
    pub extensions: Vec<String>,
    pub dir: Option<String>,
    /// Characters trimmed from both ends of every placeholder value (PAPILA's `#002`).
    pub trim: Option<String>,
}

/// Where laterality comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LateralitySource {
    Column,
    FileName,
    #[default]
    None,
}

/// `[laterality]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LateralitySpec {
    #[serde(default)]
    pub from: LateralitySource,
    pub column: Option<Aliases>,
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    pub patterns: Option<PatternsSpec>,
}

/// `[laterality.patterns]`: substrings of the file stem that mark each eye.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatternsSpec {
    #[serde(default)]
    pub left: Vec<String>,
    #[serde(default)]
    pub right: Vec<String>,
}

/// `[values.<field>]`: raw text -> normalised text, per field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValuesSpec {
    pub dr_grade: Option<BTreeMap<String, String>>,
    pub dme: Option<BTreeMap<String, String>>,
    pub glaucoma: Option<BTreeMap<String, String>>,
    pub amd: Option<BTreeMap<String, String>>,
    pub myopic_maculopathy: Option<BTreeMap<String, String>>,
    pub quality: Option<BTreeMap<String, String>>,
    pub age: Option<BTreeMap<String, String>>,
    pub sex: Option<BTreeMap<String, String>>,
    pub findings: Option<BTreeMap<String, String>>,
    pub disease_codes: Option<BTreeMap<String, String>>,
    pub split: Option<BTreeMap<String, String>>,
}

/// `[flags]`: multi-label 0/1 columns.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FlagsSpec {
    /// Each flag is a header or aliases (BRSET renamed `drusens` to `drusen`); the code is the
    /// first name.
    #[serde(default)]
    pub columns: Vec<Aliases>,
    pub amd: Option<String>,
    pub glaucoma: Option<String>,
    pub glaucoma_suspect: Option<String>,
    pub dme: Option<String>,
}

/// The normalised fields a column can be mapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Field {
    Image,
    DrGrade,
    Dme,
    Glaucoma,
    Amd,
    MyopicMaculopathy,
    Quality,
    Age,
    Sex,
    Findings,
    DiseaseCodes,
    Split,
}

impl Field {
    /// The TOML key of the field.
    pub fn key(self) -> &'static str {
        match self {
            Field::Image => "image",
            Field::DrGrade => "dr_grade",
            Field::Dme => "dme",
            Field::Glaucoma => "glaucoma",
            Field::Amd => "amd",
            Field::MyopicMaculopathy => "myopic_maculopathy",
            Field::Quality => "quality",
            Field::Age => "age",
            Field::Sex => "sex",
            Field::Findings => "findings",
            Field::DiseaseCodes => "disease_codes",
            Field::Split => "split",
        }
    }

    /// Field whose TOML key is `key`.
    pub fn from_key(key: &str) -> Option<Field> {
        FIELDS.iter().copied().find(|field| field.key() == key)
    }
}

/// Every field, in the order columns are applied.
pub(crate) const FIELDS: [Field; 12] = [
    Field::Image,
    Field::DrGrade,
    Field::Dme,
    Field::Glaucoma,
    Field::Amd,
    Field::MyopicMaculopathy,
    Field::Quality,
    Field::Age,
    Field::Sex,
    Field::Findings,
    Field::DiseaseCodes,
    Field::Split,
];

impl ColumnsSpec {
    /// The mapped fields with their aliases, in [`FIELDS`] order.
    pub fn mapped(&self) -> Vec<(Field, Vec<String>)> {
        let slots = [
            (Field::Image, &self.image),
            (Field::DrGrade, &self.dr_grade),
            (Field::Dme, &self.dme),
            (Field::Glaucoma, &self.glaucoma),
            (Field::Amd, &self.amd),
            (Field::MyopicMaculopathy, &self.myopic_maculopathy),
            (Field::Quality, &self.quality),
            (Field::Age, &self.age),
            (Field::Sex, &self.sex),
            (Field::Findings, &self.findings),
            (Field::DiseaseCodes, &self.disease_codes),
            (Field::Split, &self.split),
        ];
        slots
            .into_iter()
            .filter_map(|(field, aliases)| aliases.as_ref().map(|a| (field, a.names())))
            .collect()
    }
}

impl ValuesSpec {
    /// The value maps by field.
    pub fn by_field(&self) -> BTreeMap<Field, BTreeMap<String, String>> {
        let slots = [
            (Field::DrGrade, &self.dr_grade),
            (Field::Dme, &self.dme),
            (Field::Glaucoma, &self.glaucoma),
            (Field::Amd, &self.amd),
            (Field::MyopicMaculopathy, &self.myopic_maculopathy),
            (Field::Quality, &self.quality),
            (Field::Age, &self.age),
            (Field::Sex, &self.sex),
            (Field::Findings, &self.findings),
            (Field::DiseaseCodes, &self.disease_codes),
            (Field::Split, &self.split),
        ];
        slots
            .into_iter()
            .filter_map(|(field, map)| map.as_ref().map(|m| (field, m.clone())))
            .collect()
    }
}
