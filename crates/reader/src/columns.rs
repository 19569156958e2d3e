//! Decoding one Arrow batch of an accepted shard into [`TrainingRecord`]s.

use crate::ReaderError;
use arrow::array::{
    Array, BinaryArray, BooleanArray, Int8Array, Int32Array, ListArray, StringArray, StructArray,
};
use arrow::record_batch::RecordBatch;
use std::path::Path;

/// Root columns a stream reads; everything else (facts, sections, provenance) is skipped on disk.
/// `caption_variants` is optional: shards written before it existed lack it.
pub(crate) const READ_COLUMNS: [&str; 12] = [
    "id",
    "dataset",
    "image",
    "width",
    "height",
    "laterality",
    "split",
    "labels",
    "facts",
    "caption",
    "captions",
    "caption_variants",
];

/// The labels a training filter or a class-conditional model uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordLabels {
    /// ICDR diabetic retinopathy grade 0-4.
    pub dr_grade: Option<u8>,
    /// Diabetic macular oedema grade.
    pub dme: Option<u8>,
    /// `no`, `suspect` or `yes`.
    pub glaucoma: Option<String>,
    /// Age-related macular degeneration present.
    pub amd: Option<bool>,
    /// META-PM myopic maculopathy grade 0-4.
    pub myopic_maculopathy: Option<u8>,
    /// Multi-label disease codes as the source dataset names them.
    pub disease_codes: Vec<String>,
    /// The dataset's own quality label (`good`, `usable`, `reject`), when it has one.
    pub quality: Option<String>,
}

/// One accepted image-caption pair as training code reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingRecord {
    /// Item id (stable: derived from dataset and source path).
    pub id: String,
    /// Source dataset name (e.g. `eyepacs`).
    pub dataset: String,
    /// The encoded image (JPEG or PNG) as stored; empty when read without images.
    pub image: Vec<u8>,
    /// Width (horizontal size) in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `left`, `right` or `unknown`.
    pub laterality: String,
    /// The source dataset's own split (`train`, `test`, ...), when it has one.
    pub source_split: Option<String>,
    /// Labels from the source dataset.
    pub labels: RecordLabels,
    /// Quality grade the image stage measured (`good`, `usable`, `reject`).
    pub measured_quality: Option<String>,
    /// The detailed caption.
    pub caption: String,
    /// Every caption style's text, the detailed caption first.
    pub captions: Vec<String>,
    /// The style of each entry of `captions` (`detailed`, `short`, ...).
    pub caption_styles: Vec<String>,
}

impl TrainingRecord {
    /// The dataset's quality label when it has one, else the measured grade.
    pub fn quality(&self) -> Option<&str> {
        self.labels
            .quality
            .as_deref()
            .or(self.measured_quality.as_deref())
    }

    /// The caption of `style` (`detailed` is [`TrainingRecord::caption`]).
    pub fn caption_of(&self, style: &str) -> Option<&str> {
        if style == "detailed" {
            return Some(&self.caption);
        }
        self.caption_styles
            .iter()
            .position(|s| s == style)
            .and_then(|i| self.captions.get(i))
            .map(String::as_str)
    }

    /// File extension of the stored image from its magic bytes: `png` or `jpg`.
    pub fn image_extension(&self) -> &'static str {
        if self.image.starts_with(b"\x89PNG\r\n\x1a\n") {
            "png"
        } else {
            "jpg"
        }
    }

    /// Decodes the image to 8-bit RGB.
    pub fn decode_rgb(&self) -> Result<image::RgbImage, ReaderError> {
        image::load_from_memory(&self.image)
            .map(|img| img.to_rgb8())
            .map_err(|source| ReaderError::Image {
                id: self.id.clone(),
                source,
            })
    }
}

/// Typed access to one batch, with errors naming the file and the row in the file.
struct Cols<'a> {
    path: &'a Path,
    base: usize,
}

impl Cols<'_> {
    fn bad(&self, row: usize, reason: impl Into<String>) -> ReaderError {
        ReaderError::BadShard {
            path: self.path.to_path_buf(),
            row: self.base + row,
            reason: reason.into(),
        }
    }

    fn cast<'b, T: 'static>(
        &self,
        array: Option<&'b dyn Array>,
        name: &str,
    ) -> Result<&'b T, ReaderError> {
        let array = array.ok_or_else(|| self.bad(0, format!("column {name} missing")))?;
        array
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| self.bad(0, format!("column {name} has type {}", array.data_type())))
    }

    fn top<'b, T: 'static>(
        &self,
        batch: &'b RecordBatch,
        name: &str,
    ) -> Result<&'b T, ReaderError> {
        self.cast(batch.column_by_name(name).map(|a| a.as_ref()), name)
    }

    fn child<'b, T: 'static>(
        &self,
        parent: &'b StructArray,
        parent_name: &str,
        name: &str,
    ) -> Result<&'b T, ReaderError> {
        self.cast(
            parent.column_by_name(name).map(|a| a.as_ref()),
            &format!("{parent_name}.{name}"),
        )
    }

    fn required_str(&self, a: &StringArray, row: usize, name: &str) -> Result<String, ReaderError> {
        opt_str(a, row).ok_or_else(|| self.bad(row, format!("{name} is null")))
    }

    fn required_u32(&self, a: &Int32Array, row: usize, name: &str) -> Result<u32, ReaderError> {
        if a.is_null(row) {
            return Err(self.bad(row, format!("{name} is null")));
        }
        let v = a.value(row);
        u32::try_from(v).map_err(|_| self.bad(row, format!("{name} is negative ({v})")))
    }

    fn opt_u8(&self, a: &Int8Array, row: usize, name: &str) -> Result<Option<u8>, ReaderError> {
        if a.is_null(row) {
            return Ok(None);
        }
        let v = a.value(row);
        u8::try_from(v)
            .map(Some)
            .map_err(|_| self.bad(row, format!("{name} is negative ({v})")))
    }

    fn str_list(
        &self,
        list: &ListArray,
        row: usize,
        name: &str,
    ) -> Result<Vec<String>, ReaderError> {
        if list.is_null(row) {
            return Ok(Vec::new());
        }
        let values = list.value(row);
        let strings = self.cast::<StringArray>(Some(values.as_ref()), name)?;
        Ok((0..strings.len())
            .filter_map(|i| opt_str(strings, i))
            .collect())
    }
}

fn opt_str(a: &StringArray, row: usize) -> Option<String> {
    a.is_valid(row).then(|| a.value(row).to_string())
}

/// Decodes every row of `batch`; `base` is the file row of its first row. Without an `image`
/// column in the batch (projected away) records carry empty image bytes.
pub(crate) fn decode_batch(
    path: &Path,
    base: usize,
    batch: &RecordBatch,
) -> Result<Vec<TrainingRecord>, ReaderError> {
    let cols = Cols { path, base };
    let id = cols.top::<StringArray>(batch, "id")?;
    let dataset = cols.top::<StringArray>(batch, "dataset")?;
    let width = cols.top::<Int32Array>(batch, "width")?;
    let height = cols.top::<Int32Array>(batch, "height")?;
    let laterality = cols.top::<StringArray>(batch, "laterality")?;
    let split = cols.top::<StringArray>(batch, "split")?;
    let caption = cols.top::<StringArray>(batch, "caption")?;
    let captions = cols.top::<ListArray>(batch, "captions")?;
    let labels = cols.top::<StructArray>(batch, "labels")?;
    let dr_grade = cols.child::<Int8Array>(labels, "labels", "dr_grade")?;
    let dme = cols.child::<Int8Array>(labels, "labels", "dme")?;
    let glaucoma = cols.child::<StringArray>(labels, "labels", "glaucoma")?;
    let amd = cols.child::<BooleanArray>(labels, "labels", "amd")?;
    let myopic = cols.child::<Int8Array>(labels, "labels", "myopic_maculopathy")?;
    let codes = cols.child::<ListArray>(labels, "labels", "disease_codes")?;
    let label_quality = cols.child::<StringArray>(labels, "labels", "quality")?;
    let facts = cols.top::<StructArray>(batch, "facts")?;
    let quality_grade = cols.child::<StringArray>(facts, "facts", "quality_grade")?;
    let image = match batch.column_by_name("image") {
        Some(_) => {
            let image = cols.top::<StructArray>(batch, "image")?;
            Some((image, cols.child::<BinaryArray>(image, "image", "bytes")?))
        }
        None => None,
    };
    // Optional, list<struct{style, text}>: the styles of `captions`, in the same order.
    let variants = match batch.column_by_name("caption_variants") {
        Some(_) => {
            let list = cols.top::<ListArray>(batch, "caption_variants")?;
            let items =
                cols.cast::<StructArray>(Some(list.values().as_ref()), "caption_variants[]")?;
            let style = cols.child::<StringArray>(items, "caption_variants[]", "style")?;
            Some((list, style))
        }
        None => None,
    };

    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let image_bytes = match image {
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
        let labels = if in_labels {
            RecordLabels {
                dr_grade: cols.opt_u8(dr_grade, row, "labels.dr_grade")?,
                dme: cols.opt_u8(dme, row, "labels.dme")?,
                glaucoma: opt_str(glaucoma, row),
                amd: amd.is_valid(row).then(|| amd.value(row)),
                myopic_maculopathy: cols.opt_u8(myopic, row, "labels.myopic_maculopathy")?,
                disease_codes: cols.str_list(codes, row, "labels.disease_codes[]")?,
                quality: opt_str(label_quality, row),
            }
        } else {
            RecordLabels::default()
        };
        let caption_text = cols.required_str(caption, row, "caption")?;
        let mut caption_list = cols.str_list(captions, row, "captions[]")?;
        if caption_list.is_empty() {
            caption_list.push(caption_text.clone());
        }
        let caption_styles = match variants {
            Some((list, style)) if list.is_valid(row) => {
                let offsets = list.value_offsets();
                let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                (start..end)
                    .map(|i| opt_str(style, i).unwrap_or_default())
                    .collect()
            }
            _ => vec!["detailed".to_string(); caption_list.len()],
        };
        out.push(TrainingRecord {
            id: cols.required_str(id, row, "id")?,
            dataset: cols.required_str(dataset, row, "dataset")?,
            image: image_bytes,
            width: cols.required_u32(width, row, "width")?,
            height: cols.required_u32(height, row, "height")?,
            laterality: opt_str(laterality, row).unwrap_or_else(|| "unknown".into()),
            source_split: opt_str(split, row),
            labels,
            measured_quality: facts
                .is_valid(row)
                .then(|| opt_str(quality_grade, row))
                .flatten(),
            caption: caption_text,
            captions: caption_list,
            caption_styles,
        });
    }
    Ok(out)
}
