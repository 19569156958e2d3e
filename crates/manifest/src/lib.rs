//! Declarative data manifests: reading a dataset's own label files into [`Record`]s.
//!
//! This crate owns the manifest format (TOML, documented in `docs/manifests.md`, schema in
//! `schemas/manifest.schema.json`) and everything between a dataset's files on disk and
//! normalised records: label carriers (CSV, whitespace TXT, folder name, file name, none),
//! header matching (trimmed, with aliases), value maps, multi-label flag columns, image path
//! templates, laterality, and per-row problem reporting. Adding a dataset is a TOML file.
//!
//! It does no image decoding and knows nothing about prompts or models: an image only has to
//! exist.
//!
//! ```no_run
//! # use std::path::Path;
//! let mut manifest = retina_manifest::Manifest::from_path(Path::new("data-manifests/eyepacs.toml"))?;
//! manifest.set_root("/data/eyepacs".into());
//! let read = manifest.read()?;
//! for problem in &read.problems {
//!     eprintln!("skipped: {problem}");
//! }
//! # Ok::<(), retina_manifest::ManifestError>(())
//! ```

#![deny(missing_docs)]

mod automorph;
mod error;
mod normalise;
mod scan;
mod spec;
mod stream;
mod table;
mod template;

pub use automorph::{AUTOMORPH_FEATURES, AutomorphFeature, Vessels, automorph_feature};
pub use error::{ManifestError, ProblemKind, RowProblem};
pub use scan::{
    DEFAULT_LEFT_PATTERNS, DEFAULT_RIGHT_PATTERNS, IMAGE_EXTENSIONS, laterality_from_name,
};
pub use stream::{ManifestStream, ReadItem};

use normalise::{DEFAULT_LIST_SEPARATORS, clean, map_value, parse_bool, parse_laterality};
use retina_records::{Glaucoma, Labels, Laterality, QualityGrade, Record};
use spec::{Carrier, Field, LateralitySource, ManifestSpec};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use table::{CsvOptions, Row, find_column};
use template::Template;

/// Descriptive facts about a dataset, from the manifest's `[dataset]` table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatasetInfo {
    /// Dataset name; part of every item id.
    pub name: String,
    /// Split given for the whole manifest (a split column overrides it per row).
    pub split: Option<String>,
    /// Camera(s) used.
    pub camera: Option<String>,
    /// Field of view of the photographs, in degrees.
    pub field_of_view_degrees: Option<f32>,
    /// Licence of the dataset.
    pub licence: Option<String>,
    /// How to cite the dataset.
    pub citation: Option<String>,
    /// Where the dataset is published.
    pub url: Option<String>,
    /// Free-text description.
    pub description: Option<String>,
}

/// A loaded, validated data manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    source: String,
    spec: ManifestSpec,
    info: DatasetInfo,
    root: PathBuf,
    path_templates: Vec<Template>,
    extensions: Vec<String>,
    name_pattern: Option<Template>,
    values: BTreeMap<Field, BTreeMap<String, String>>,
    separators: Vec<String>,
    left_patterns: Vec<String>,
    right_patterns: Vec<String>,
    remote_images: Option<RemoteImages>,
}

/// Images kept in object storage: where they are, and which exist (one listing), so rows are
/// checked without a request per image. See [`Manifest::set_remote_images`].
#[derive(Debug, Clone)]
struct RemoteImages {
    base_url: String,
    keys: std::sync::Arc<std::collections::HashSet<String>>,
}

/// The result of reading a manifest: records in label-file order, and the rows that were skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManifestRead {
    /// One record per readable labelled image, in the label file's row order.
    pub records: Vec<Record>,
    /// Rows (or images) that were skipped, with the reason.
    pub problems: Vec<RowProblem>,
}

impl Manifest {
    /// Loads a manifest file; a relative `root` is resolved against the file's folder.
    pub fn from_path(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::ReadManifest {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        Manifest::load(&text, base_dir, path.display().to_string())
    }

    /// Parses a manifest from text.
    /// `base_dir` resolves a relative root (the folder the manifest came from).
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Manifest, ManifestError> {
        Manifest::load(text, base_dir, "<inline manifest>".to_string())
    }

    /// The dataset name (`[dataset] name`), used in item ids.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The folder label files and image paths are relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Overrides the root (e.g. from the command line). Ids do not change: they use paths
    /// relative to the root.
    pub fn set_root(&mut self, root: PathBuf) {
        self.root = root;
    }

    /// The dataset's descriptive facts.
    pub fn info(&self) -> &DatasetInfo {
        &self.info
    }

    /// Where the manifest came from (its path, or `<inline manifest>`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The root when it is an object-storage URL (`s3://`, `gs://`, `az://`): this crate does no
    /// network I/O, so the caller fetches [`Manifest::root_files`] to a local folder, makes it the
    /// root ([`Manifest::set_root`]) and says where the images are
    /// ([`Manifest::set_remote_images`]).
    pub fn root_url(&self) -> Option<&str> {
        if self.remote_images.is_some() {
            return None;
        }
        self.root.to_str().filter(|root| root.contains("://"))
    }

    /// The files other than images this manifest reads from its root (label file, AutoMorph
    /// feature files), relative to the root.
    pub fn root_files(&self) -> Vec<String> {
        let mut files: Vec<String> = self.spec.labels.file.iter().cloned().collect();
        files.extend(self.spec.automorph.iter().map(|spec| spec.file.clone()));
        files
    }

    /// Images are read from `base_url/<relative path>` instead of the root, and a row's image
    /// exists when its relative path is in `keys` (a listing of the bucket prefix). The root
    /// keeps serving the label files. Only label-file carriers (CSV, TXT, XLSX) can use this:
    /// folder and file-name carriers walk a local folder.
    pub fn set_remote_images(&mut self, base_url: String, keys: std::collections::HashSet<String>) {
        self.remote_images = Some(RemoteImages {
            base_url: base_url.trim_end_matches('/').to_string(),
            keys: std::sync::Arc::new(keys),
        });
    }

    /// Where the image at `relative` is read from: below the root, or its URL.
    fn image_location(&self, relative: &str) -> PathBuf {
        match &self.remote_images {
            Some(remote) => PathBuf::from(format!("{}/{relative}", remote.base_url)),
            None => self.root.join(relative),
        }
    }

    /// The label file this manifest reads, if its carrier has one (resolved against the root).
    pub fn label_file(&self) -> Option<PathBuf> {
        self.spec.labels.file.as_ref().map(|f| self.root.join(f))
    }

    /// Reads every labelled image. Fatal problems (label file missing, required header missing,
    /// unreadable file) are Err naming the file and the header/aliases tried. Row problems (bad
    /// value, missing image file, unparseable grade) do NOT stop the read: they go to `problems`
    /// with file, 1-based row number and reason, and the other rows are still read.
    ///
    /// A row with any problem is skipped as a whole (its labels are not trustworthy), and when
    /// two rows name the same image the first is kept.
    pub fn read(&self) -> Result<ManifestRead, ManifestError> {
        self.stream()?.collect_read()
    }

    /// Reads the manifest as a stream: records and row problems in label-file order, one row at
    /// a time, so a label file of any length is read in bounded memory (CSV and TXT row by row,
    /// folder and file-name carriers by a sorted directory walk; an XLSX workbook is read whole,
    /// then handed out row by row). Fatal problems found when opening (label file missing,
    /// required header missing) are `Err` here; one found later (a CSV that stops parsing) ends
    /// the stream with an `Err` item. Same rules as [`Manifest::read`] otherwise.
    ///
    /// Duplicate detection keeps one 64-bit hash (and a line number) per row read, not the rows.
    pub fn stream(&self) -> Result<ManifestStream, ManifestError> {
        match self.spec.labels.carrier {
            Carrier::Csv | Carrier::Txt | Carrier::Xlsx => self.stream_table(),
            Carrier::Folder | Carrier::FileName | Carrier::None => self.stream_scanned(),
        }
    }

    /// A cheap estimate of how many records [`Manifest::stream`] yields, for a progress total:
    /// the data rows of a CSV or TXT label file (times two for one row per patient), counted in
    /// one pass without keeping them. `None` for workbooks and scanned folders (unknown until
    /// read) or when the file cannot be read.
    pub fn estimated_items(&self) -> Option<u64> {
        let labels = &self.spec.labels;
        let file = self.root.join(labels.file.as_deref()?);
        let delimiter = match labels.carrier {
            Carrier::Csv => Some(
                labels
                    .delimiter
                    .as_deref()
                    .and_then(|d| d.bytes().next())
                    .unwrap_or(b','),
            ),
            Carrier::Txt => None,
            _ => return None,
        };
        let default_header = labels.carrier == Carrier::Csv;
        let header_rows = if labels.has_header.unwrap_or(default_header) {
            labels.header_row.unwrap_or(1)
        } else {
            0
        };
        let rows = table::count_rows(&file, delimiter, header_rows)?;
        Some(if self.spec.eyes.expands() {
            rows * 2
        } else {
            rows
        })
    }

    fn load(text: &str, base_dir: &Path, source: String) -> Result<Manifest, ManifestError> {
        let spec: ManifestSpec =
            toml::from_str(text).map_err(|e| error::toml_error(&source, text, &e))?;
        let invalid = |key: &str, reason: String| ManifestError::Invalid {
            manifest: source.clone(),
            key: key.to_string(),
            reason,
        };
        let dataset = &spec.dataset;
        let name_ok = !dataset.name.is_empty()
            && dataset
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(invalid(
                "dataset.name",
                format!(
                    "`{}` must be non-empty ASCII letters, digits, `-`, `_` or `.`",
                    dataset.name
                ),
            ));
        }
        if let Some(fov) = dataset.field_of_view_degrees
            && !(fov.is_finite() && fov > 0.0 && fov <= 360.0)
        {
            return Err(invalid(
                "dataset.field_of_view_degrees",
                format!("{fov} is not an angle in degrees"),
            ));
        }
        let root = {
            let root = Path::new(&dataset.root);
            // An object-storage URL is kept as written (see `root_url`).
            if root.is_absolute() || dataset.root.contains("://") {
                root.to_path_buf()
            } else {
                base_dir.join(root)
            }
        };

        let labels = &spec.labels;
        let carrier = labels.carrier;
        let carrier_name = match carrier {
            Carrier::Csv => "csv",
            Carrier::Xlsx => "xlsx",
            Carrier::Txt => "txt",
            Carrier::Folder => "folder",
            Carrier::FileName => "file_name",
            Carrier::None => "none",
        };
        if carrier.scans_images() {
            let unused = [
                ("labels.file", labels.file.is_some()),
                ("labels.header_row", labels.header_row.is_some()),
                ("labels.has_header", labels.has_header.is_some()),
                ("labels.delimiter", labels.delimiter.is_some()),
                ("columns.image", spec.columns.image.is_some()),
                ("images.path", spec.images.path.is_some()),
            ];
            if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    key,
                    format!(
                        "is not used by carrier \"{carrier_name}\", which scans the image folder (see images.dir)"
                    ),
                ));
            }
            if carrier == Carrier::None && !spec.columns.mapped().is_empty() {
                return Err(invalid(
                    "columns",
                    "carrier \"none\" has no labels to map".into(),
                ));
            }
        } else {
            if labels.file.as_deref().is_none_or(|f| f.trim().is_empty()) {
                return Err(invalid(
                    "labels.file",
                    format!("carrier \"{carrier_name}\" needs a label file"),
                ));
            }
            if spec.columns.image.is_none() && !spec.eyes.expands() {
                return Err(invalid(
                    "columns.image",
                    "every labelled row needs an image column (or [eyes.left] and [eyes.right] image columns)".into(),
                ));
            }
            if spec.images.path.is_none() {
                return Err(invalid(
                    "images.path",
                    "a path template such as \"train/{image}.jpeg\" is needed".into(),
                ));
            }
            if spec.images.dir.is_some() {
                return Err(invalid(
                    "images.dir",
                    format!("is only for scanning carriers, not \"{carrier_name}\""),
                ));
            }
            if labels.name_pattern.is_some() {
                return Err(invalid(
                    "labels.name_pattern",
                    "is only for carrier \"file_name\" or \"folder\"".into(),
                ));
            }
        }
        if labels.sheet.is_some() && carrier != Carrier::Xlsx {
            return Err(invalid(
                "labels.sheet",
                "is only for carrier \"xlsx\"".into(),
            ));
        }
        let eyes = &spec.eyes;
        if eyes.expands() {
            for (key, eye) in [("eyes.left", &eyes.left), ("eyes.right", &eyes.right)] {
                if eye.as_ref().is_none_or(|e| e.image.is_none()) {
                    return Err(invalid(
                        &format!("{key}.image"),
                        "one row per patient needs an image column for each eye".into(),
                    ));
                }
            }
            if carrier.scans_images() {
                return Err(invalid(
                    "eyes",
                    format!(
                        "image columns per eye need a label file, not carrier \"{carrier_name}\""
                    ),
                ));
            }
            if spec.columns.image.is_some() {
                return Err(invalid(
                    "columns.image",
                    "the images come from [eyes.left] and [eyes.right]; remove columns.image"
                        .into(),
                ));
            }
            if spec.laterality.from != LateralitySource::None {
                return Err(invalid(
                    "laterality.from",
                    "each record's eye is the [eyes] table it came from".into(),
                ));
            }
        } else if (eyes.left.is_some() || eyes.right.is_some())
            && spec.laterality.from == LateralitySource::None
        {
            return Err(invalid(
                "eyes",
                "per-eye columns need laterality from a column or the file name ([laterality] from)".into(),
            ));
        }
        for (index, automorph) in spec.automorph.iter().enumerate() {
            let zone_ok = !automorph.zone.is_empty()
                && automorph
                    .zone
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !zone_ok {
                return Err(invalid(
                    &format!("automorph[{index}].zone"),
                    format!(
                        "`{}` must be non-empty ASCII letters, digits or `_`",
                        automorph.zone
                    ),
                ));
            }
            if automorph.file.trim().is_empty() {
                return Err(invalid(
                    &format!("automorph[{index}].file"),
                    "a feature CSV is needed".into(),
                ));
            }
        }
        if labels.header_row == Some(0) {
            return Err(invalid(
                "labels.header_row",
                "rows are numbered from 1".into(),
            ));
        }
        if labels.has_header == Some(false) && labels.header_row.is_some() {
            return Err(invalid(
                "labels.header_row",
                "has no meaning when has_header = false".into(),
            ));
        }
        if let Some(delimiter) = &labels.delimiter {
            if carrier != Carrier::Csv {
                return Err(invalid(
                    "labels.delimiter",
                    "is only for carrier \"csv\" (txt splits on whitespace)".into(),
                ));
            }
            if delimiter.len() != 1 || !delimiter.is_ascii() {
                return Err(invalid(
                    "labels.delimiter",
                    format!("`{delimiter}` must be one ASCII character"),
                ));
            }
        }
        let separators: Vec<String> = match &labels.list_separators {
            Some(list) => {
                if list.is_empty() || list.iter().any(String::is_empty) {
                    return Err(invalid(
                        "labels.list_separators",
                        "separators must be non-empty strings".into(),
                    ));
                }
                list.clone()
            }
            None => DEFAULT_LIST_SEPARATORS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let name_pattern = match &labels.name_pattern {
            Some(pattern) => {
                let template =
                    Template::parse(pattern).map_err(|r| invalid("labels.name_pattern", r))?;
                if let Some(clash) = template.placeholders().find(|p| SCAN_COLUMNS.contains(p)) {
                    return Err(invalid(
                        "labels.name_pattern",
                        format!("placeholder `{clash}` clashes with a built-in scan column"),
                    ));
                }
                Some(template)
            }
            None => None,
        };
        let mut path_templates = Vec::new();
        for text in spec.images.path.iter().flat_map(|p| p.items()) {
            let template = Template::parse(&text).map_err(|r| invalid("images.path", r))?;
            if template.has_widths() {
                return Err(invalid(
                    "images.path",
                    format!("`{text}`: widths like {{x:3}} are only for name patterns"),
                ));
            }
            if template.placeholders().next().is_none() {
                return Err(invalid(
                    "images.path",
                    format!(
                        "`{text}` has no {{placeholder}}, so every row would name the same file"
                    ),
                ));
            }
            path_templates.push(template);
        }
        let mut extensions = Vec::new();
        for ext in &spec.images.extensions {
            let ext = ext.trim().trim_start_matches('.');
            if ext.is_empty() {
                return Err(invalid(
                    "images.extensions",
                    "extensions must be non-empty".into(),
                ));
            }
            extensions.push(ext.to_string());
        }

        let laterality = &spec.laterality;
        match laterality.from {
            LateralitySource::Column if laterality.column.is_none() => {
                return Err(invalid(
                    "laterality.column",
                    "from = \"column\" needs the column's header".into(),
                ));
            }
            LateralitySource::Column => {}
            _ if laterality.column.is_some() => {
                return Err(invalid(
                    "laterality.column",
                    "is only used with from = \"column\"".into(),
                ));
            }
            _ => {}
        }
        if laterality.from != LateralitySource::Column && !laterality.values.is_empty() {
            return Err(invalid(
                "laterality.values",
                "is only used with from = \"column\"".into(),
            ));
        }
        if laterality.from != LateralitySource::FileName && laterality.patterns.is_some() {
            return Err(invalid(
                "laterality.patterns",
                "is only used with from = \"file_name\"".into(),
            ));
        }
        for (raw, target) in &laterality.values {
            parse_laterality(clean(target))
                .map_err(|r| invalid(&format!("laterality.values.\"{raw}\""), r))?;
        }
        let (left_patterns, right_patterns) = match &laterality.patterns {
            Some(p) => (p.left.clone(), p.right.clone()),
            None => (
                DEFAULT_LEFT_PATTERNS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                DEFAULT_RIGHT_PATTERNS
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            ),
        };

        let values = spec.values.by_field();
        for (field, map) in &values {
            for (raw, target) in map {
                normalise::check_target(*field, target)
                    .map_err(|r| invalid(&format!("values.{}.\"{raw}\"", field.key()), r))?;
            }
        }
        if carrier.scans_images() && !spec.flags.columns.is_empty() {
            return Err(invalid(
                "flags.columns",
                format!("carrier \"{carrier_name}\" has no flag columns"),
            ));
        }

        let info = DatasetInfo {
            name: dataset.name.clone(),
            split: dataset.split.clone(),
            camera: dataset.camera.clone(),
            field_of_view_degrees: dataset.field_of_view_degrees,
            licence: dataset.licence.clone(),
            citation: dataset.citation.clone(),
            url: dataset.url.clone(),
            description: dataset.description.clone(),
        };
        Ok(Manifest {
            source,
            spec,
            info,
            root,
            path_templates,
            extensions,
            name_pattern,
            values,
            separators,
            left_patterns,
            right_patterns,
            remote_images: None,
        })
    }

    fn stream_table(&self) -> Result<ManifestStream, ManifestError> {
        let labels = &self.spec.labels;
        let file = self.root.join(labels.file.as_deref().unwrap_or_default());
        let table = if labels.carrier == Carrier::Txt {
            table::open_txt(
                &file,
                labels.has_header.unwrap_or(false),
                labels.header_row.unwrap_or(1),
            )?
        } else if labels.carrier == Carrier::Xlsx {
            // Workbooks are small (a few thousand rows) and zipped XML: read whole.
            table::table_rows(table::read_xlsx(
                &file,
                labels.sheet.as_deref(),
                labels.has_header.unwrap_or(true),
                labels.header_row.unwrap_or(1),
            )?)
        } else {
            let delimiter = labels
                .delimiter
                .as_deref()
                .and_then(|d| d.bytes().next())
                .unwrap_or(b',');
            table::open_csv(
                &file,
                &CsvOptions {
                    delimiter,
                    header_row: labels.header_row.unwrap_or(1),
                    has_header: labels.has_header.unwrap_or(true),
                },
            )?
        };
        let plan = self.plan(&file, &table.headers, None)?;
        let mut early = Vec::new();
        let features = self.load_features(&mut early)?;
        let mut ready: VecDeque<ReadItem> = early.into_iter().map(ReadItem::Problem).collect();
        let manifest = self.clone();
        let mut rows = table.rows;
        let mut seen: HashMap<u64, Option<usize>> = HashMap::new();
        let mut ended = false;
        Ok(ManifestStream::new(std::iter::from_fn(move || {
            loop {
                if let Some(item) = ready.pop_front() {
                    return Some(Ok(item));
                }
                if ended {
                    return None;
                }
                match rows.next() {
                    None => ended = true,
                    Some(Err(error)) => {
                        ended = true;
                        return Some(Err(error));
                    }
                    Some(Ok(row)) => {
                        manifest.table_row(&plan, &row, &file, &features, &mut seen, &mut ready)
                    }
                }
            }
        })))
    }

    /// Turns one label row into its record(s) or problems, appended to `out`.
    fn table_row(
        &self,
        plan: &Plan,
        row: &Row,
        file: &Path,
        features: &automorph::FeatureJoin,
        seen: &mut HashMap<u64, Option<usize>>,
        out: &mut VecDeque<ReadItem>,
    ) {
        // One patient row yields a record per eye (ODIR); otherwise the row is one image.
        let eyes: Vec<Option<Eye>> = if plan.expands {
            let present: Vec<Option<Eye>> = [Eye::Left, Eye::Right]
                .into_iter()
                .filter(|eye| {
                    plan.eye(*eye)
                        .image
                        .is_some_and(|i| !row.cell(i).is_empty())
                })
                .map(Some)
                .collect();
            if present.is_empty() {
                out.push_back(ReadItem::Problem(RowProblem {
                    kind: ProblemKind::Unreadable,
                    file: file.to_path_buf(),
                    row: row.line,
                    item: None,
                    reason: "both eyes' image cells are empty".into(),
                }));
                return;
            }
            present
        } else {
            vec![None]
        };
        for eye in eyes {
            let image_index = match eye {
                Some(eye) => plan.eye(eye).image,
                None => plan.image,
            };
            let item = image_index
                .map(|index| row.cell(index).to_string())
                .filter(|cell| !cell.is_empty());
            let problem = |kind: ProblemKind, reason: String| {
                ReadItem::Problem(RowProblem {
                    kind,
                    file: file.to_path_buf(),
                    row: row.line,
                    item: item.clone(),
                    reason,
                })
            };
            let relative = match self.find_image(plan, row, eye) {
                Ok(relative) => relative,
                Err((kind, reason)) => {
                    out.push_back(problem(kind, reason));
                    continue;
                }
            };
            match self.record(plan, row, &relative, eye) {
                Ok(mut record) => {
                    // A hash, not the path: duplicate detection costs a few bytes per row.
                    let key = path_hash(&record.relative_path);
                    if let Some(first) = seen.get(&key) {
                        let at = first.map_or(String::new(), |line| format!(" on row {line}"));
                        out.push_back(problem(
                            ProblemKind::Duplicate,
                            format!("duplicate of `{relative}`{at}; the first row is kept"),
                        ));
                        continue;
                    }
                    seen.insert(key, row.line);
                    features.attach(&mut record);
                    out.push_back(ReadItem::Record(record));
                }
                Err(reason) => out.push_back(problem(ProblemKind::UnknownValue, reason)),
            }
        }
    }

    /// Loads the `[[automorph]]` feature files (none: an empty join).
    fn load_features(
        &self,
        problems: &mut Vec<RowProblem>,
    ) -> Result<automorph::FeatureJoin, ManifestError> {
        let mut join = automorph::FeatureJoin::default();
        for spec in &self.spec.automorph {
            join.load(&self.root.join(&spec.file), &spec.zone, &spec.key, problems)?;
        }
        Ok(join)
    }

    fn stream_scanned(&self) -> Result<ManifestStream, ManifestError> {
        let dir = match &self.spec.images.dir {
            Some(dir) => self.root.join(dir),
            None => self.root.clone(),
        };
        if self.remote_images.is_some() {
            return Err(ManifestError::Invalid {
                manifest: self.source.clone(),
                key: "dataset.root".into(),
                reason: "folder and file-name carriers walk a local folder: an object-storage \
                         root needs a csv, txt or xlsx label file"
                    .to_string(),
            });
        }
        let extensions: Vec<String> = if self.extensions.is_empty() {
            IMAGE_EXTENSIONS.iter().map(|s| s.to_string()).collect()
        } else {
            self.extensions.clone()
        };
        let walk = scan::Walk::new(&dir, &self.root, &extensions)?;
        let mut headers: Vec<String> = SCAN_COLUMNS.iter().map(|s| s.to_string()).collect();
        let captures: Vec<String> = self
            .name_pattern
            .iter()
            .flat_map(|p| p.placeholders().map(str::to_string).collect::<Vec<_>>())
            .collect();
        headers.extend(captures.iter().cloned());
        let mut raw_candidates: Vec<&str> = captures.iter().map(String::as_str).collect();
        if self.spec.labels.carrier == Carrier::Folder {
            raw_candidates.push("folder");
        }
        let plan = self.plan(&dir, &headers, Some(&raw_candidates))?;
        let mut early = Vec::new();
        let features = self.load_features(&mut early)?;
        let mut early = early.into_iter();
        let manifest = self.clone();
        let mut walk = walk;
        Ok(ManifestStream::new(std::iter::from_fn(move || {
            if let Some(problem) = early.next() {
                return Some(Ok(ReadItem::Problem(problem)));
            }
            let image = match walk.next()? {
                scan::Walked::Found(image) => image,
                scan::Walked::Problem(problem) => return Some(Ok(ReadItem::Problem(problem))),
            };
            Some(Ok(manifest.scanned_image(&plan, &features, image)))
        })))
    }

    /// The record (or problem) of one image found by a folder walk.
    fn scanned_image(
        &self,
        plan: &Plan,
        features: &automorph::FeatureJoin,
        image: scan::Found,
    ) -> ReadItem {
        let problem = |reason: String| RowProblem {
            kind: ProblemKind::Unreadable,
            file: image.path.clone(),
            row: None,
            item: Some(image.relative.clone()),
            reason,
        };
        let stem = scan::stem_of(&image.relative);
        let name = image.relative.rsplit('/').next().unwrap_or(&image.relative);
        let folder = image.relative.rsplit_once('/').map_or("", |(parent, _)| {
            parent.rsplit('/').next().unwrap_or(parent)
        });
        let ext = name.rsplit_once('.').map_or("", |(_, ext)| ext);
        let mut cells = vec![
            image.relative.clone(),
            name.to_string(),
            stem.to_string(),
            folder.to_string(),
            ext.to_string(),
        ];
        if let Some(pattern) = &self.name_pattern {
            match pattern.captures(stem) {
                Some(found) => cells.extend(found.into_iter().map(|(_, value)| value)),
                None => {
                    return ReadItem::Problem(problem(format!(
                        "file name `{stem}` does not match labels.name_pattern"
                    )));
                }
            }
        }
        let row = Row { line: None, cells };
        match self.record(plan, &row, &image.relative, None) {
            Ok(mut record) => {
                features.attach(&mut record);
                ReadItem::Record(record)
            }
            Err(reason) => ReadItem::Problem(RowProblem {
                kind: ProblemKind::UnknownValue,
                ..problem(reason)
            }),
        }
    }

    /// Resolves every header the manifest needs, failing with the aliases tried.
    fn plan(
        &self,
        file: &Path,
        headers: &[String],
        raw_filter: Option<&[&str]>,
    ) -> Result<Plan, ManifestError> {
        let missing = |key: String, tried: Vec<String>| ManifestError::MissingHeader {
            file: file.to_path_buf(),
            key,
            tried,
            found: headers.to_vec(),
        };
        let mut plan = Plan::default();
        for (field, aliases) in self.spec.columns.mapped() {
            let index = find_column(headers, &aliases)
                .ok_or_else(|| missing(format!("columns.{}", field.key()), aliases.clone()))?;
            if field == Field::Image {
                plan.image = Some(index);
            } else {
                plan.fields.push((field, index));
            }
        }
        plan.expands = self.spec.eyes.expands();
        for (eye, spec) in [
            (Eye::Left, &self.spec.eyes.left),
            (Eye::Right, &self.spec.eyes.right),
        ] {
            let Some(spec) = spec else { continue };
            let eye_plan = &mut plan.eyes[eye as usize];
            for (field, aliases) in spec.mapped() {
                let key = format!("eyes.{}.{}", eye.key(), field.key());
                let index = find_column(headers, &aliases).ok_or_else(|| missing(key, aliases))?;
                if field == Field::Image {
                    eye_plan.image = Some(index);
                } else {
                    eye_plan.fields.push((field, index));
                }
            }
        }
        if let Some(aliases) = &self.spec.laterality.column {
            let aliases = aliases.names();
            plan.laterality = Some(
                find_column(headers, &aliases)
                    .ok_or_else(|| missing("laterality.column".into(), aliases.clone()))?,
            );
        }
        let flags = &self.spec.flags;
        let flag_column = |key: &str, name: &str| {
            find_column(headers, &[name.to_string()])
                .ok_or_else(|| missing(key.to_string(), vec![name.to_string()]))
        };
        for aliases in &flags.columns {
            let names = aliases.names();
            let code = names.first().map_or("", |n| clean(n)).to_string();
            let index = find_column(headers, &names)
                .ok_or_else(|| missing("flags.columns".into(), names.clone()))?;
            plan.flags.push((code, index));
        }
        let named = [
            ("flags.amd", &flags.amd, FlagEffect::Amd),
            ("flags.glaucoma", &flags.glaucoma, FlagEffect::Glaucoma),
            (
                "flags.glaucoma_suspect",
                &flags.glaucoma_suspect,
                FlagEffect::GlaucomaSuspect,
            ),
            ("flags.dme", &flags.dme, FlagEffect::Dme),
        ];
        for (key, name, effect) in named {
            if let Some(name) = name {
                plan.flag_effects
                    .push((effect, clean(name).to_string(), flag_column(key, name)?));
            }
        }
        for template in &self.path_templates {
            for name in template.placeholders() {
                // With one image column per eye, `{image}` is the eye's own image cell.
                if plan.expands && name == Field::Image.key() {
                    continue;
                }
                let mapped = Field::from_key(name)
                    .and_then(|field| {
                        self.spec
                            .columns
                            .mapped()
                            .into_iter()
                            .find(|(f, _)| *f == field)
                    })
                    .and_then(|(_, aliases)| find_column(headers, &aliases));
                let index = mapped
                    .or_else(|| find_column(headers, &[name.to_string()]))
                    .ok_or_else(|| missing("images.path".into(), vec![name.to_string()]))?;
                plan.placeholders.insert(name.to_string(), index);
            }
        }
        // Whatever is not used goes to raw, keyed by its (trimmed) header.
        let mut used: Vec<usize> = plan.fields.iter().map(|(_, i)| *i).collect();
        used.extend(plan.image);
        used.extend(plan.laterality);
        used.extend(plan.flags.iter().map(|(_, i)| *i));
        used.extend(plan.flag_effects.iter().map(|(_, _, i)| *i));
        used.extend(plan.placeholders.values().copied());
        for eye in &plan.eyes {
            used.extend(eye.image);
            used.extend(eye.fields.iter().map(|(_, i)| *i));
        }
        let ignored = &self.spec.labels.ignore_columns;
        for (index, header) in headers.iter().enumerate() {
            let allowed = raw_filter.is_none_or(|only| only.contains(&header.as_str()));
            if !allowed
                || used.contains(&index)
                || ignored.iter().any(|i| clean(i) == header)
                || plan.raw.iter().any(|(name, _)| name == header)
            {
                continue;
            }
            plan.raw.push((header.clone(), index));
        }
        Ok(plan)
    }

    /// Renders the image path templates for a row and returns the first that exists.
    fn find_image(
        &self,
        plan: &Plan,
        row: &Row,
        eye: Option<Eye>,
    ) -> Result<String, (ProblemKind, String)> {
        let mut tried = Vec::new();
        let trim: Vec<char> = self
            .spec
            .images
            .trim
            .as_deref()
            .unwrap_or_default()
            .chars()
            .collect();
        for template in &self.path_templates {
            let rendered = template
                .render(|name| {
                    let index = match eye {
                        Some(eye) if name == Field::Image.key() => plan.eye(eye).image,
                        _ => plan.placeholders.get(name).copied(),
                    };
                    let value = index
                        .map_or("", |i| row.cell(i))
                        .trim_matches(trim.as_slice());
                    if value.is_empty() {
                        Err(format!("the cell for {{{name}}} is empty"))
                    } else {
                        Ok(value.to_string())
                    }
                })
                .map_err(|reason| (ProblemKind::Unreadable, reason))?;
            let base =
                safe_relative(&rendered).map_err(|reason| (ProblemKind::OutsideRoot, reason))?;
            let candidates: Vec<String> = if self.extensions.is_empty() {
                vec![base]
            } else {
                self.extensions
                    .iter()
                    .map(|ext| format!("{base}.{ext}"))
                    .collect()
            };
            for candidate in candidates {
                if let Some(remote) = &self.remote_images {
                    if remote.keys.contains(&candidate) {
                        return Ok(candidate);
                    }
                    tried.push(candidate);
                    continue;
                }
                let path = self.root.join(&candidate);
                if path.is_file() {
                    // A symlink (the file or a folder on the way) may lead out of the root.
                    if !scan::inside_root(&path, &self.root) {
                        return Err((
                            ProblemKind::OutsideRoot,
                            format!("image path `{candidate}` resolves outside the dataset root"),
                        ));
                    }
                    return Ok(candidate);
                }
                tried.push(candidate);
            }
        }
        Err((
            ProblemKind::MissingImage,
            format!("image file not found (tried {})", tried.join(", ")),
        ))
    }

    /// Builds the record of one row whose image is `relative` (to the root).
    fn record(
        &self,
        plan: &Plan,
        row: &Row,
        relative: &str,
        eye: Option<Eye>,
    ) -> Result<Record, String> {
        let mut record = Record::new(&self.info.name, relative, self.image_location(relative));
        let mut labels = Labels::default();
        let mut split = None;
        let mut reasons = Vec::new();
        let mut ungradable = false;
        record.laterality = match (eye, self.spec.laterality.from, plan.laterality) {
            (Some(Eye::Left), _, _) => Laterality::Left,
            (Some(Eye::Right), _, _) => Laterality::Right,
            (None, LateralitySource::Column, Some(index)) => {
                let cell = row.cell(index);
                let map = (!self.spec.laterality.values.is_empty())
                    .then_some(&self.spec.laterality.values);
                match parse_laterality(clean(map_value(map, cell))) {
                    Ok(laterality) => laterality,
                    Err(reason) => {
                        reasons.push(format!("laterality: {reason}"));
                        Laterality::Unknown
                    }
                }
            }
            (None, LateralitySource::FileName, _) => laterality_from_name(
                scan::stem_of(relative),
                &self.left_patterns,
                &self.right_patterns,
            ),
            _ => Laterality::Unknown,
        };
        // The eye's own columns replace the shared ones for the same field.
        let eye_fields: &[(Field, usize)] = match record.laterality {
            Laterality::Left => &plan.eyes[Eye::Left as usize].fields,
            Laterality::Right => &plan.eyes[Eye::Right as usize].fields,
            _ => &[],
        };
        let shared = plan
            .fields
            .iter()
            .filter(|(field, _)| !eye_fields.iter().any(|(f, _)| f == field));
        for (field, index) in shared.chain(eye_fields) {
            let cell = row.cell(*index);
            match normalise::apply(
                *field,
                cell,
                self.values.get(field),
                &self.separators,
                &mut labels,
                &mut split,
            ) {
                Ok(effects) => ungradable |= effects.ungradable,
                Err(reason) => reasons.push(format!("{}: {reason}", field.key())),
            }
        }
        for (code, index) in &plan.flags {
            match parse_flag(row.cell(*index)) {
                Ok(true) if !labels.disease_codes.contains(code) => {
                    labels.disease_codes.push(code.clone())
                }
                Ok(_) => {}
                Err(reason) => reasons.push(format!("flag {code}: {reason}")),
            }
        }
        for (effect, name, index) in &plan.flag_effects {
            let value = match parse_flag(row.cell(*index)) {
                Ok(value) => value,
                Err(reason) => {
                    reasons.push(format!("flag {name}: {reason}"));
                    continue;
                }
            };
            match effect {
                FlagEffect::Amd => labels.amd = Some(value),
                FlagEffect::Glaucoma => {
                    labels.glaucoma = Some(if value { Glaucoma::Yes } else { Glaucoma::No })
                }
                // A suspect flag only says something when set; 0 does not mean "no glaucoma".
                FlagEffect::GlaucomaSuspect if value && labels.glaucoma != Some(Glaucoma::Yes) => {
                    labels.glaucoma = Some(Glaucoma::Suspect);
                }
                FlagEffect::GlaucomaSuspect => {}
                FlagEffect::Dme => labels.dme = Some(u8::from(value)),
            }
        }
        if ungradable && labels.quality.is_none() {
            labels.quality = Some(QualityGrade::Reject);
        }
        if !reasons.is_empty() {
            return Err(reasons.join("; "));
        }
        for (header, index) in &plan.raw {
            let cell = row.cell(*index);
            if !cell.is_empty() {
                labels.raw.insert(header.clone(), cell.to_string());
            }
        }
        record.split = split.or_else(|| self.info.split.clone());
        record.labels = labels;
        Ok(record)
    }
}

/// Columns every scanned image has, before any `name_pattern` captures.
const SCAN_COLUMNS: [&str; 5] = ["path", "file", "stem", "folder", "ext"];

/// What a named flag column sets besides (or instead of) a disease code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagEffect {
    Amd,
    Glaucoma,
    GlaucomaSuspect,
    Dme,
}

/// One eye of a per-eye `[eyes]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eye {
    Left = 0,
    Right = 1,
}

impl Eye {
    fn key(self) -> &'static str {
        match self {
            Eye::Left => "left",
            Eye::Right => "right",
        }
    }
}

/// Columns of one eye's `[eyes.<eye>]` table.
#[derive(Debug, Default)]
struct EyePlan {
    image: Option<usize>,
    fields: Vec<(Field, usize)>,
}

/// Column indexes resolved against one label file's headers.
#[derive(Debug, Default)]
struct Plan {
    expands: bool,
    eyes: [EyePlan; 2],
    image: Option<usize>,
    fields: Vec<(Field, usize)>,
    laterality: Option<usize>,
    flags: Vec<(String, usize)>,
    flag_effects: Vec<(FlagEffect, String, usize)>,
    placeholders: HashMap<String, usize>,
    raw: Vec<(String, usize)>,
}

impl Plan {
    fn eye(&self, eye: Eye) -> &EyePlan {
        &self.eyes[eye as usize]
    }
}

/// A flag cell: 1/0 (or yes/no); an empty cell is 0.
fn parse_flag(cell: &str) -> Result<bool, String> {
    if cell.is_empty() {
        return Ok(false);
    }
    parse_bool(cell)
}

/// Normalises a rendered path to `/`-separated, refusing anything that escapes the root.
fn safe_relative(rendered: &str) -> Result<String, String> {
    let unified = rendered.replace('\\', "/");
    if unified.starts_with('/') {
        return Err(format!(
            "image path `{rendered}` is absolute; paths are relative to the root"
        ));
    }
    let mut parts = Vec::new();
    for part in unified.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("image path `{rendered}` leaves the dataset root")),
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return Err(format!("image path `{rendered}` is empty"));
    }
    Ok(parts.join("/"))
}

/// A plain folder of unlabelled photographs (recursively, by extension jpg/jpeg/png/tif/tiff/bmp/ppm),
/// captioned from measurements alone. Laterality from file-name patterns when present.
///
/// Records are sorted by relative path; ids are derived from `dataset` and the path relative to
/// `dir`. Unreadable subfolders are problems; an unreadable `dir` is an error.
pub fn read_image_folder(dir: &Path, dataset: &str) -> Result<ManifestRead, ManifestError> {
    stream_image_folder(dir, dataset)?.collect_read()
}

/// [`read_image_folder`] as a stream (a sorted directory walk holding one listing per open
/// folder): records and problems as they are found.
pub fn stream_image_folder(dir: &Path, dataset: &str) -> Result<ManifestStream, ManifestError> {
    let extensions: Vec<String> = IMAGE_EXTENSIONS.iter().map(|s| s.to_string()).collect();
    let left: Vec<String> = DEFAULT_LEFT_PATTERNS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let right: Vec<String> = DEFAULT_RIGHT_PATTERNS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let walk = scan::Walk::new(dir, dir, &extensions)?;
    let dataset = dataset.to_string();
    Ok(ManifestStream::new(walk.map(move |item| {
        Ok(match item {
            scan::Walked::Found(image) => {
                let mut record = Record::new(&dataset, &image.relative, image.path);
                record.laterality =
                    laterality_from_name(scan::stem_of(&image.relative), &left, &right);
                ReadItem::Record(record)
            }
            scan::Walked::Problem(problem) => ReadItem::Problem(problem),
        })
    })))
}

/// A 64-bit hash of a relative path for duplicate detection within one read. Two distinct
/// paths collide with odds of about 1 in 10^7 for a million rows (the birthday bound).
fn path_hash(relative: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    relative.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests;
