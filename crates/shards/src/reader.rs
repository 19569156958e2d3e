//! Reading shards back: accepted rows for training crates, reject rows for QA.

use crate::ShardError;
use crate::schema::SECTION_COLUMNS;
use crate::writer::io_err;
use arrow::array::{
    Array, BinaryArray, BooleanArray, Float32Array, Int8Array, Int32Array, ListArray, StringArray,
    StructArray,
};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use retina_records::RejectReason;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

/// One accepted row as training code needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// Item id (32 hex characters).
    pub id: String,
    /// Dataset name from the manifest.
    pub dataset: String,
    /// Encoded image bytes; empty when read with `with_images = false`.
    pub image: Vec<u8>,
    /// Output width (horizontal) in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// The caption paragraph.
    pub caption: String,
    /// Every caption style's text, `detailed` (= `caption`) first.
    pub captions: Vec<String>,
    /// The style of each entry of `captions` (`detailed`, `short`, ...); shards written before
    /// the `caption_variants` column existed read as all `detailed`.
    pub caption_styles: Vec<String>,
    /// `left`, `right` or `unknown`.
    pub laterality: String,
    /// ICDR grade 0-4 from the labels.
    pub dr_grade: Option<u8>,
    /// `no`, `suspect` or `yes` from the labels.
    pub glaucoma: Option<String>,
    /// AMD present, from the labels.
    pub amd: Option<bool>,
    /// The dataset's quality label when it has one, else the measured grade.
    pub quality_grade: Option<String>,
    /// Measured vessel density.
    pub vessel_density: Option<f32>,
    /// Measured vertical cup-to-disc ratio.
    pub cup_to_disc_ratio: Option<f32>,
    /// Each lesion as `type:location:extent` (vocabulary strings contain no `:`).
    pub lesions: Vec<String>,
    /// Prose sections by schema name (`optic_disc`, `rnfl`, ...).
    pub sections: BTreeMap<String, String>,
    /// Prompt tokens of the captioning call.
    pub prompt_tokens: u32,
    /// Completion tokens of the captioning call.
    pub completion_tokens: u32,
    /// Latency of the captioning call.
    pub latency_ms: u32,
}

/// One rejected or failed item as stored in `rejects/`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReject {
    /// Item id.
    pub id: String,
    /// Dataset name.
    pub dataset: String,
    /// `rejected` or `failed`.
    pub state: String,
    /// Why, in order of detection.
    pub reasons: Vec<RejectReason>,
    /// The captioner's raw answer, when there was one.
    pub raw_answer: Option<String>,
}

/// Rows per decoded batch: about 10-40 MB of image data at fundus JPEG sizes.
const READ_BATCH_ROWS: usize = 64;

/// Opens a shard, reading only the root columns `keep` accepts (the rest is skipped on disk).
fn open_batches(
    path: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<impl Iterator<Item = Result<RecordBatch, ShardError>>, ShardError> {
    let file = File::open(path).map_err(|source| io_err(path, source))?;
    let pq = |source| ShardError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
    let keep: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| keep(f.name()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), keep);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(READ_BATCH_ROWS)
        .build()
        .map_err(pq)?;
    let owned = path.to_path_buf();
    Ok(reader.map(move |batch| {
        batch.map_err(|source| ShardError::Arrow {
            path: owned.clone(),
            source,
        })
    }))
}

/// Typed access to the columns of one batch, with errors naming file and row.
pub(crate) struct Cols<'a> {
    pub(crate) path: &'a Path,
    /// Row number in the file of the batch's first row.
    pub(crate) base: usize,
}

impl Cols<'_> {
    pub(crate) fn bad(&self, row: usize, reason: impl Into<String>) -> ShardError {
        ShardError::BadShard {
            path: self.path.to_path_buf(),
            row: self.base + row,
            reason: reason.into(),
        }
    }

    pub(crate) fn get<'b, T: 'static>(
        &self,
        columns: Option<&'b dyn Array>,
        name: &str,
    ) -> Result<&'b T, ShardError> {
        let array = columns.ok_or_else(|| self.bad(0, format!("column {name} missing")))?;
        array
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| self.bad(0, format!("column {name} has type {}", array.data_type())))
    }

    pub(crate) fn top<'b, T: 'static>(
        &self,
        batch: &'b RecordBatch,
        name: &str,
    ) -> Result<&'b T, ShardError> {
        self.get(batch.column_by_name(name).map(|a| a.as_ref()), name)
    }

    fn child<'b, T: 'static>(
        &self,
        parent: &'b StructArray,
        parent_name: &str,
        name: &str,
    ) -> Result<&'b T, ShardError> {
        self.get(
            parent.column_by_name(name).map(|a| a.as_ref()),
            &format!("{parent_name}.{name}"),
        )
    }

    pub(crate) fn required_str(
        &self,
        array: &StringArray,
        row: usize,
        name: &str,
    ) -> Result<String, ShardError> {
        if array.is_null(row) {
            return Err(self.bad(row, format!("{name} is null")));
        }
        Ok(array.value(row).to_string())
    }

    fn required_u32(&self, array: &Int32Array, row: usize, name: &str) -> Result<u32, ShardError> {
        if array.is_null(row) {
            return Err(self.bad(row, format!("{name} is null")));
        }
        let v = array.value(row);
        u32::try_from(v).map_err(|_| self.bad(row, format!("{name} is negative ({v})")))
    }
}

pub(crate) fn opt_str(array: &StringArray, row: usize) -> Option<String> {
    array.is_valid(row).then(|| array.value(row).to_string())
}

fn opt_f32(array: &Float32Array, row: usize) -> Option<f32> {
    array.is_valid(row).then(|| array.value(row))
}

/// The strings of list row `row` (empty when the list is null).
fn str_list(
    cols: &Cols,
    list: &ListArray,
    row: usize,
    name: &str,
) -> Result<Vec<String>, ShardError> {
    if list.is_null(row) {
        return Ok(Vec::new());
    }
    let values = list.value(row);
    let strings = cols.get::<StringArray>(Some(values.as_ref()), name)?;
    Ok((0..strings.len())
        .filter_map(|i| opt_str(strings, i))
        .collect())
}

/// Reads every accepted row of one shard; `with_images = false` skips the image column on disk.
pub fn read_accepted(path: &Path, with_images: bool) -> Result<Vec<StoredRow>, ShardError> {
    let mut out = Vec::new();
    for batch in open_batches(path, |name| with_images || name != "image")? {
        let batch = batch?;
        let cols = Cols {
            path,
            base: out.len(),
        };
        read_accepted_batch(&cols, &batch, with_images, &mut out)?;
    }
    Ok(out)
}

fn read_accepted_batch(
    cols: &Cols,
    batch: &RecordBatch,
    with_images: bool,
    out: &mut Vec<StoredRow>,
) -> Result<(), ShardError> {
    let id = cols.top::<StringArray>(batch, "id")?;
    let dataset = cols.top::<StringArray>(batch, "dataset")?;
    let width = cols.top::<Int32Array>(batch, "width")?;
    let height = cols.top::<Int32Array>(batch, "height")?;
    let caption = cols.top::<StringArray>(batch, "caption")?;
    let captions = cols.top::<ListArray>(batch, "captions")?;
    // Optional: older shards have no caption_variants column.
    let variants = match batch.column_by_name("caption_variants") {
        Some(_) => Some(cols.top::<ListArray>(batch, "caption_variants")?),
        None => None,
    };
    let laterality = cols.top::<StringArray>(batch, "laterality")?;
    let labels = cols.top::<StructArray>(batch, "labels")?;
    let dr_grade = cols.child::<Int8Array>(labels, "labels", "dr_grade")?;
    let glaucoma = cols.child::<StringArray>(labels, "labels", "glaucoma")?;
    let amd = cols.child::<BooleanArray>(labels, "labels", "amd")?;
    let label_quality = cols.child::<StringArray>(labels, "labels", "quality")?;
    let facts = cols.top::<StructArray>(batch, "facts")?;
    let quality_grade = cols.child::<StringArray>(facts, "facts", "quality_grade")?;
    let vessel_density = cols.child::<Float32Array>(facts, "facts", "vessel_density")?;
    let cdr = cols.child::<Float32Array>(facts, "facts", "cup_to_disc_ratio")?;
    let lesions = cols.top::<ListArray>(batch, "lesions")?;
    let prompt_tokens = cols.top::<Int32Array>(batch, "prompt_tokens")?;
    let completion_tokens = cols.top::<Int32Array>(batch, "completion_tokens")?;
    let latency = cols.top::<Int32Array>(batch, "latency_ms")?;
    let sections = SECTION_COLUMNS
        .iter()
        .map(|name| Ok((*name, cols.top::<StringArray>(batch, name)?)))
        .collect::<Result<Vec<_>, ShardError>>()?;
    let image_bytes = if with_images {
        let image = cols.top::<StructArray>(batch, "image")?;
        Some((image, cols.child::<BinaryArray>(image, "image", "bytes")?))
    } else {
        None
    };

    for row in 0..batch.num_rows() {
        let image = match image_bytes {
            Some((image, bytes)) => {
                if image.is_null(row) || bytes.is_null(row) {
                    return Err(cols.bad(row, "image is null"));
                }
                bytes.value(row).to_vec()
            }
            None => Vec::new(),
        };
        // A null struct hides whatever its children hold.
        let in_labels = labels.is_valid(row);
        let in_facts = facts.is_valid(row);
        let dr = if in_labels && dr_grade.is_valid(row) {
            let v = dr_grade.value(row);
            Some(u8::try_from(v).map_err(|_| cols.bad(row, format!("dr_grade {v} < 0")))?)
        } else {
            None
        };
        let lesion_texts = if lesions.is_null(row) {
            Vec::new()
        } else {
            let items = lesions.value(row);
            let items = cols.get::<StructArray>(Some(items.as_ref()), "lesions[]")?;
            let kind = cols.child::<StringArray>(items, "lesions[]", "type")?;
            let location = cols.child::<StringArray>(items, "lesions[]", "location")?;
            let extent = cols.child::<StringArray>(items, "lesions[]", "extent")?;
            (0..items.len())
                .filter(|i| items.is_valid(*i))
                .map(|i| {
                    format!(
                        "{}:{}:{}",
                        opt_str(kind, i).unwrap_or_default(),
                        opt_str(location, i).unwrap_or_default(),
                        opt_str(extent, i).unwrap_or_default()
                    )
                })
                .collect()
        };
        let caption_list = str_list(cols, captions, row, "captions[]")?;
        let caption_styles = match variants {
            Some(list) if !list.is_null(row) => {
                let items = list.value(row);
                let items = cols.get::<StructArray>(Some(items.as_ref()), "caption_variants[]")?;
                let style = cols.child::<StringArray>(items, "caption_variants[]", "style")?;
                (0..items.len())
                    .map(|i| opt_str(style, i).unwrap_or_default())
                    .collect()
            }
            _ => vec!["detailed".to_string(); caption_list.len()],
        };
        let mut section_map = BTreeMap::new();
        for (name, array) in &sections {
            if let Some(text) = opt_str(array, row) {
                section_map.insert(name.to_string(), text);
            }
        }
        out.push(StoredRow {
            id: cols.required_str(id, row, "id")?,
            dataset: cols.required_str(dataset, row, "dataset")?,
            image,
            width: cols.required_u32(width, row, "width")?,
            height: cols.required_u32(height, row, "height")?,
            caption: cols.required_str(caption, row, "caption")?,
            captions: caption_list,
            caption_styles,
            laterality: cols.required_str(laterality, row, "laterality")?,
            dr_grade: dr,
            glaucoma: in_labels.then(|| opt_str(glaucoma, row)).flatten(),
            amd: (in_labels && amd.is_valid(row)).then(|| amd.value(row)),
            quality_grade: in_labels
                .then(|| opt_str(label_quality, row))
                .flatten()
                .or_else(|| in_facts.then(|| opt_str(quality_grade, row)).flatten()),
            vessel_density: in_facts.then(|| opt_f32(vessel_density, row)).flatten(),
            cup_to_disc_ratio: in_facts.then(|| opt_f32(cdr, row)).flatten(),
            lesions: lesion_texts,
            sections: section_map,
            prompt_tokens: cols.required_u32(prompt_tokens, row, "prompt_tokens")?,
            completion_tokens: cols.required_u32(completion_tokens, row, "completion_tokens")?,
            latency_ms: cols.required_u32(latency, row, "latency_ms")?,
        });
    }
    Ok(())
}

/// Reads every row of one reject shard.
pub fn read_rejects(path: &Path) -> Result<Vec<StoredReject>, ShardError> {
    let mut out = Vec::new();
    for batch in open_batches(path, |_| true)? {
        let batch = batch?;
        let cols = Cols {
            path,
            base: out.len(),
        };
        let id = cols.top::<StringArray>(&batch, "id")?;
        let dataset = cols.top::<StringArray>(&batch, "dataset")?;
        let state = cols.top::<StringArray>(&batch, "state")?;
        let reasons = cols.top::<ListArray>(&batch, "reasons")?;
        let raw_answer = cols.top::<StringArray>(&batch, "raw_answer")?;
        for row in 0..batch.num_rows() {
            let mut row_reasons = Vec::new();
            if reasons.is_valid(row) {
                let items = reasons.value(row);
                let items = cols.get::<StructArray>(Some(items.as_ref()), "reasons[]")?;
                let code = cols.child::<StringArray>(items, "reasons[]", "code")?;
                let detail = cols.child::<StringArray>(items, "reasons[]", "detail")?;
                for i in (0..items.len()).filter(|i| items.is_valid(*i)) {
                    row_reasons.push(RejectReason::new(
                        opt_str(code, i).unwrap_or_default(),
                        opt_str(detail, i).unwrap_or_default(),
                    ));
                }
            }
            out.push(StoredReject {
                id: cols.required_str(id, row, "id")?,
                dataset: cols.required_str(dataset, row, "dataset")?,
                state: cols.required_str(state, row, "state")?,
                reasons: row_reasons,
                raw_answer: opt_str(raw_answer, row),
            });
        }
    }
    Ok(out)
}

/// What verification needs from one shard: its ids (with whether each row is final) and how many
/// rows have a null image.
pub(crate) struct ShardKeys {
    /// `(id, final)`: `final` is false for `failed` reject rows, which a later run may redo.
    pub(crate) ids: Vec<(String, bool)>,
    pub(crate) null_images: u64,
}

/// Reads only the `id` column, plus `image` (accepted) or `state` (rejects).
pub(crate) fn read_keys(path: &Path, accepted: bool) -> Result<ShardKeys, ShardError> {
    let extra = if accepted { "image" } else { "state" };
    let mut keys = ShardKeys {
        ids: Vec::new(),
        null_images: 0,
    };
    for batch in open_batches(path, |name| name == "id" || name == extra)? {
        let batch = batch?;
        let cols = Cols {
            path,
            base: keys.ids.len(),
        };
        let id = cols.top::<StringArray>(&batch, "id")?;
        if accepted {
            let image = cols.top::<StructArray>(&batch, "image")?;
            let bytes = cols.child::<BinaryArray>(image, "image", "bytes")?;
            for row in 0..batch.num_rows() {
                keys.ids.push((cols.required_str(id, row, "id")?, true));
                if image.is_null(row) || bytes.is_null(row) {
                    keys.null_images += 1;
                }
            }
        } else {
            let state = cols.top::<StringArray>(&batch, "state")?;
            for row in 0..batch.num_rows() {
                let is_final = opt_str(state, row).as_deref() != Some("failed");
                keys.ids.push((cols.required_str(id, row, "id")?, is_final));
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{accepted_columns, arrow_schema};
    use crate::{
        CardShard, DatasetWriter, ShardConfig, ShardKind, fixtures, read_card, verify_dataset,
        write_card,
    };
    use arrow::array::{ArrayRef, new_null_array};
    use parquet::arrow::ArrowWriter;
    use retina_records::ItemState;
    use std::sync::Arc;

    #[test]
    fn without_images_skips_the_image_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = DatasetWriter::open(dir.path(), ShardConfig::default()).expect("open");
        for i in 0..5 {
            writer
                .write_accepted(fixtures::accepted("odir", i, 5000))
                .expect("write");
        }
        let done = writer.finish().expect("finish");
        let path = dir.path().join(&done[0].file_name);
        let full = read_accepted(&path, true).expect("with images");
        let light = read_accepted(&path, false).expect("without images");
        assert_eq!(light.len(), 5);
        for (a, b) in full.iter().zip(&light) {
            assert_eq!(a.image.len(), 5000);
            assert!(b.image.is_empty());
            let mut a = a.clone();
            a.image.clear();
            assert_eq!(&a, b, "everything else is identical");
        }
    }

    #[test]
    fn wrong_or_broken_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = DatasetWriter::open(dir.path(), ShardConfig::default()).expect("open");
        writer
            .write_rejected(fixtures::rejected("odir", 1, ItemState::Failed))
            .expect("write");
        let done = writer.finish().expect("finish");
        let rejects = dir.path().join(&done[0].file_name);
        let err = read_accepted(&rejects, false).expect_err("not an accepted shard");
        assert!(matches!(err, ShardError::BadShard { .. }), "{err}");
        assert!(err.to_string().contains("part-00000.parquet"), "{err}");
        assert!(err.to_string().contains("column width missing"), "{err}");

        let garbage = dir.path().join("garbage.parquet");
        std::fs::write(&garbage, b"not parquet at all").expect("write");
        let err = read_rejects(&garbage).expect_err("garbage");
        assert!(matches!(err, ShardError::Parquet { .. }), "{err}");
        assert!(err.to_string().contains("garbage.parquet"), "{err}");
        let err = read_rejects(&dir.path().join("absent.parquet")).expect_err("absent");
        assert!(matches!(err, ShardError::Io { .. }), "{err}");
    }

    #[test]
    fn null_images_are_caught_by_reader_and_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("shards")).expect("mkdir");
        // A foreign writer's shard: right schema, but every value null except the id.
        let schema = arrow_schema(&accepted_columns());
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| {
                if f.name() == "id" {
                    Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef
                } else {
                    new_null_array(f.data_type(), 2)
                }
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
        let rel = "shards/foreign-00000.parquet";
        let path = dir.path().join(rel);
        let mut writer =
            ArrowWriter::try_new(File::create(&path).expect("create"), schema, None).expect("w");
        writer.write(&batch).expect("write");
        writer.close().expect("close");

        let err = read_accepted(&path, true).expect_err("null image");
        assert!(err.to_string().contains("row 0: image is null"), "{err}");

        let bytes = std::fs::read(&path).expect("read");
        let mut card = crate::DatasetCard {
            format_version: 1,
            created_by: "t".into(),
            model: String::new(),
            endpoint: String::new(),
            prompt_hash: String::new(),
            schema_hash: String::new(),
            counts: Default::default(),
            shards: vec![CardShard {
                path: rel.into(),
                kind: ShardKind::Accepted,
                rows: 2,
                bytes: bytes.len() as u64,
                blake3: blake3::hash(&bytes).to_hex().to_string(),
            }],
            features: crate::hf_features(),
            config: serde_json::Value::Null,
            cost: None,
        };
        write_card(dir.path(), &card).expect("card");
        let report = verify_dataset(dir.path()).expect("verify");
        assert_eq!(
            report.problems,
            vec![format!("{rel}: 2 rows with a null image")]
        );
        card.shards[0].rows = 3;
        write_card(dir.path(), &card).expect("card");
        assert_eq!(read_card(dir.path()).expect("card").shards[0].rows, 3);
        let report = verify_dataset(dir.path()).expect("verify");
        assert!(
            report
                .problems
                .contains(&format!("{rel}: 2 rows, card says 3")),
            "{:?}",
            report.problems
        );
    }
}
