//! The crash-safe shard writer: rows are buffered, encoded into `<name>.parquet.tmp`, and the file
//! is fsync'd and renamed when it reaches its size or on [`DatasetWriter::finish`].

use crate::ShardError;
use crate::schema::{self, Col};
use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float32Array, Int8Array, Int32Array, ListArray,
    ListBuilder, StringArray, StringBuilder, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, FieldRef, Fields, SchemaRef};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use retina_records::{
    CaptionAnswer, Centring, DiscSide, Glaucoma, ImageFacts, ItemId, ItemState, Provenance, Record,
    RejectReason, Sex,
};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Sizes and naming of the shards one writer produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardConfig {
    /// A shard is closed once its encoded size reaches this many bytes (default 500 MB).
    pub target_shard_bytes: u64,
    /// Row groups are cut at this many encoded bytes (default 100 MB; the Hub viewer rejects
    /// row groups over 300 MB).
    pub max_row_group_bytes: u64,
    /// File name prefix, e.g. `part` or `w003-part`; files are `<prefix>-NNNNN.parquet`.
    /// Two writers sharing a directory must use different prefixes.
    pub name_prefix: String,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            target_shard_bytes: 500_000_000,
            max_row_group_bytes: 100_000_000,
            name_prefix: "part".to_string(),
        }
    }
}

/// One accepted image-caption pair.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedRow {
    /// The labelled source image.
    pub record: Record,
    /// What the image stage measured (sizes are the output's).
    pub facts: ImageFacts,
    /// Encoded output image (stored as is, uncompressed).
    pub image: Vec<u8>,
    /// Extension of the encoded image without the dot (`jpg`, `png`); names the image `path`.
    pub image_ext: &'static str,
    /// The validated caption.
    pub answer: CaptionAnswer,
    /// Who captioned it, with usage.
    pub provenance: Provenance,
}

/// One rejected or failed item.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRow {
    /// The labelled source image.
    pub record: Record,
    /// Measurements, when the image stage got that far.
    pub facts: Option<ImageFacts>,
    /// [`ItemState::Rejected`] or [`ItemState::Failed`]; anything else is refused.
    pub state: ItemState,
    /// Why the item ended here.
    pub reasons: Vec<RejectReason>,
    /// The captioner's raw answer, kept for debugging.
    pub raw_answer: Option<String>,
    /// Who captioned it, when a captioner was called.
    pub provenance: Option<Provenance>,
}

/// Which kind of shard: accepted pairs (`shards/`) or rejects (`rejects/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardKind {
    /// Accepted pairs under `shards/`.
    Accepted,
    /// Rejected and failed items under `rejects/`.
    Rejected,
}

impl ShardKind {
    /// The sub-directory of the dataset that holds shards of this kind.
    pub fn dir_name(self) -> &'static str {
        match self {
            ShardKind::Accepted => "shards",
            ShardKind::Rejected => "rejects",
        }
    }
}

/// A shard that is durable on disk (renamed and directory fsync'd): its items may now be marked
/// done in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedShard {
    /// Accepted or rejects.
    pub kind: ShardKind,
    /// Relative to the dataset directory, `/`-separated, e.g. `shards/part-00000.parquet`.
    pub file_name: String,
    /// Rows in the file.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// BLAKE3 of the whole file, hex.
    pub blake3: String,
    /// Every item in the shard with its final state, in row order.
    pub items: Vec<(ItemId, ItemState)>,
}

/// Rows are handed to Parquet in small batches: big enough to amortise per-call overhead, small
/// enough that buffering adds little memory next to the row group Parquet itself holds.
const BATCH_ROWS: usize = 32;
const MAX_BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// Writes accepted and reject shards of one dataset directory. See the crate docs.
///
/// After an error the writer should be dropped: rows not yet reported in a [`CommittedShard`]
/// are not durable and must be redone.
pub struct DatasetWriter {
    accepted: Lane,
    rejected: Lane,
    pending_accepted: Vec<PendingAccepted>,
    pending_rejected: Vec<PendingRejected>,
    pending_bytes: u64,
    batch_bytes: u64,
}

struct PendingAccepted {
    row: AcceptedRow,
    raw_json: String,
}

struct PendingRejected {
    row: RejectedRow,
    labels_json: String,
    facts_json: Option<String>,
}

impl DatasetWriter {
    /// Opens `out_dir/shards` and `out_dir/rejects`, removes stray temporary files left by a crash,
    /// and continues numbering after the highest existing shard (never overwrites a shard).
    ///
    /// Only temporary files of this writer's prefix are removed: another writer sharing the
    /// directory under a different prefix may be writing its own.
    pub fn open(out_dir: &Path, config: ShardConfig) -> Result<DatasetWriter, ShardError> {
        validate_config(&config)?;
        let row_group = usize::try_from(config.max_row_group_bytes).map_err(|_| {
            ShardError::Config(format!(
                "max_row_group_bytes {} does not fit this platform",
                config.max_row_group_bytes
            ))
        })?;
        let accepted = Lane::open(
            out_dir,
            ShardKind::Accepted,
            &config,
            schema::accepted_columns(),
            row_group,
        )?;
        let rejected = Lane::open(
            out_dir,
            ShardKind::Rejected,
            &config,
            schema::rejected_columns(),
            row_group,
        )?;
        let batch_bytes = MAX_BATCH_BYTES
            .min(config.max_row_group_bytes / 4)
            .min(config.target_shard_bytes / 4)
            .max(1);
        Ok(DatasetWriter {
            accepted,
            rejected,
            pending_accepted: Vec::new(),
            pending_rejected: Vec::new(),
            pending_bytes: 0,
            batch_bytes,
        })
    }

    /// Buffers the row; returns the shards this call made durable (when a shard reached its size).
    pub fn write_accepted(&mut self, row: AcceptedRow) -> Result<Vec<CommittedShard>, ShardError> {
        check_accepted(&row)?;
        let raw_json = to_json(&row.record.labels.raw, &row.record.id)?;
        self.pending_bytes = self
            .pending_bytes
            .saturating_add(row.image.len() as u64)
            .saturating_add(row.answer.caption.len() as u64);
        self.pending_accepted
            .push(PendingAccepted { row, raw_json });
        if self.pending_accepted.len() >= BATCH_ROWS || self.pending_bytes >= self.batch_bytes {
            return Ok(self.flush_accepted()?.into_iter().collect());
        }
        Ok(Vec::new())
    }

    /// Buffers a rejected or failed row; returns the shards this call made durable.
    pub fn write_rejected(&mut self, row: RejectedRow) -> Result<Vec<CommittedShard>, ShardError> {
        if !matches!(row.state, ItemState::Rejected | ItemState::Failed) {
            return Err(ShardError::InvalidRow {
                id: row.record.id.to_string(),
                reason: format!(
                    "reject rows must be rejected or failed, not {}",
                    row.state.as_str()
                ),
            });
        }
        let labels_json = to_json(&row.record.labels, &row.record.id)?;
        let facts_json = match &row.facts {
            Some(facts) => Some(to_json(facts, &row.record.id)?),
            None => None,
        };
        self.pending_rejected.push(PendingRejected {
            row,
            labels_json,
            facts_json,
        });
        // Reject rows are small; a larger batch keeps the per-call overhead negligible.
        if self.pending_rejected.len() >= BATCH_ROWS * 8 {
            return Ok(self.flush_rejected()?.into_iter().collect());
        }
        Ok(Vec::new())
    }

    /// Closes the open shards: written to "<name>.parquet.tmp", fsync'd, renamed, dir fsync'd.
    pub fn finish(&mut self) -> Result<Vec<CommittedShard>, ShardError> {
        let mut out = Vec::new();
        out.extend(self.flush_accepted()?);
        out.extend(self.flush_rejected()?);
        out.extend(self.accepted.commit()?);
        out.extend(self.rejected.commit()?);
        Ok(out)
    }

    fn flush_accepted(&mut self) -> Result<Option<CommittedShard>, ShardError> {
        if self.pending_accepted.is_empty() {
            return Ok(None);
        }
        let rows = std::mem::take(&mut self.pending_accepted);
        self.pending_bytes = 0;
        let items = rows
            .iter()
            .map(|p| (p.row.record.id.clone(), ItemState::Accepted))
            .collect();
        let lane = &mut self.accepted;
        let batch = accepted_batch(&lane.schema, &rows).map_err(|source| ShardError::Arrow {
            path: lane.dir.clone(),
            source,
        });
        let result = batch.and_then(|batch| lane.write(&batch, items));
        if result.is_err() {
            lane.abandon();
        }
        result
    }

    fn flush_rejected(&mut self) -> Result<Option<CommittedShard>, ShardError> {
        if self.pending_rejected.is_empty() {
            return Ok(None);
        }
        let rows = std::mem::take(&mut self.pending_rejected);
        let items = rows
            .iter()
            .map(|p| (p.row.record.id.clone(), p.row.state))
            .collect();
        let lane = &mut self.rejected;
        let batch = rejected_batch(&lane.schema, &rows).map_err(|source| ShardError::Arrow {
            path: lane.dir.clone(),
            source,
        });
        let result = batch.and_then(|batch| lane.write(&batch, items));
        if result.is_err() {
            lane.abandon();
        }
        result
    }
}

impl Drop for DatasetWriter {
    /// An unfinished shard is not durable: remove its temporary file now rather than on the next
    /// open.
    fn drop(&mut self) {
        self.accepted.abandon();
        self.rejected.abandon();
    }
}

fn validate_config(config: &ShardConfig) -> Result<(), ShardError> {
    if config.target_shard_bytes == 0 {
        return Err(ShardError::Config("target_shard_bytes must be > 0".into()));
    }
    if config.max_row_group_bytes == 0 {
        return Err(ShardError::Config("max_row_group_bytes must be > 0".into()));
    }
    let prefix = &config.name_prefix;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if prefix.is_empty() || prefix.starts_with('.') || !prefix.chars().all(allowed) {
        return Err(ShardError::Config(format!(
            "name_prefix {prefix:?} must be non-empty, not start with '.', and use only \
             ASCII letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

/// `<prefix>-NNNNN.parquet`.
pub(crate) fn shard_file_name(prefix: &str, number: u64) -> String {
    format!("{prefix}-{number:05}.parquet")
}

/// The shard number of `name` if it is `<prefix>-<digits>.parquet`.
pub(crate) fn parse_shard_number(prefix: &str, name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(prefix)?
        .strip_prefix('-')?
        .strip_suffix(".parquet")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn to_json<T: Serialize>(value: &T, id: &ItemId) -> Result<String, ShardError> {
    serde_json::to_string(value).map_err(|e| ShardError::InvalidRow {
        id: id.to_string(),
        reason: format!("cannot serialise to JSON: {e}"),
    })
}

fn check_accepted(row: &AcceptedRow) -> Result<(), ShardError> {
    let bad = |reason: String| ShardError::InvalidRow {
        id: row.record.id.to_string(),
        reason,
    };
    if row.image.is_empty() {
        return Err(bad("empty image bytes".into()));
    }
    let ext_ok =
        !row.image_ext.is_empty() && row.image_ext.chars().all(|c| c.is_ascii_alphanumeric());
    if !ext_ok {
        return Err(bad(format!("bad image extension {:?}", row.image_ext)));
    }
    let f = &row.facts;
    let u32s = [
        ("output_width", Some(f.output_width)),
        ("output_height", Some(f.output_height)),
        ("original_width", Some(f.original_width)),
        ("original_height", Some(f.original_height)),
        (
            "bright_lesions",
            f.bright_lesion_candidates.map(|m| m.value),
        ),
        ("dark_lesions", f.dark_lesion_candidates.map(|m| m.value)),
        ("prompt_tokens", Some(row.provenance.usage.prompt_tokens)),
        (
            "completion_tokens",
            Some(row.provenance.usage.completion_tokens),
        ),
        ("latency_ms", Some(row.provenance.latency_ms)),
    ];
    for (name, value) in u32s {
        if let Some(v) = value
            && i32::try_from(v).is_err()
        {
            return Err(bad(format!("{name} {v} exceeds the int32 column")));
        }
    }
    let l = &row.record.labels;
    for (name, value) in [
        ("dr_grade", l.dr_grade),
        ("dme", l.dme),
        ("myopic_maculopathy", l.myopic_maculopathy),
    ] {
        if let Some(v) = value
            && i8::try_from(v).is_err()
        {
            return Err(bad(format!("{name} {v} exceeds the int8 column")));
        }
    }
    Ok(())
}

/// Writes `<prefix>-NNNNN.parquet.tmp` of one kind, and commits it.
struct Lane {
    kind: ShardKind,
    dir: PathBuf,
    prefix: String,
    next_number: u64,
    schema: SchemaRef,
    props: WriterProperties,
    target_bytes: u64,
    open: Option<OpenShard>,
}

struct OpenShard {
    tmp_path: PathBuf,
    final_path: PathBuf,
    file_name: String,
    writer: ArrowWriter<HashingFile>,
    rows: u64,
    items: Vec<(ItemId, ItemState)>,
}

impl Lane {
    fn open(
        out_dir: &Path,
        kind: ShardKind,
        config: &ShardConfig,
        cols: Vec<(&'static str, Col)>,
        row_group_bytes: usize,
    ) -> Result<Lane, ShardError> {
        let dir = out_dir.join(kind.dir_name());
        fs::create_dir_all(&dir).map_err(|source| io_err(&dir, source))?;
        let prefix = config.name_prefix.clone();
        let mut next_number = 0u64;
        let entries = fs::read_dir(&dir).map_err(|source| io_err(&dir, source))?;
        let mut removed = false;
        for entry in entries {
            let entry = entry.map_err(|source| io_err(&dir, source))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Some(shard) = name.strip_suffix(".tmp")
                && parse_shard_number(&prefix, shard).is_some()
            {
                let path = entry.path();
                fs::remove_file(&path).map_err(|source| io_err(&path, source))?;
                removed = true;
            } else if let Some(n) = parse_shard_number(&prefix, &name) {
                next_number = next_number.max(n.saturating_add(1));
            }
        }
        if removed {
            sync_dir(&dir)?;
        }
        let props = writer_props(kind, &cols, row_group_bytes)?;
        Ok(Lane {
            kind,
            dir,
            prefix,
            next_number,
            schema: schema::arrow_schema(&cols),
            props,
            target_bytes: config.target_shard_bytes,
            open: None,
        })
    }

    fn write(
        &mut self,
        batch: &RecordBatch,
        items: Vec<(ItemId, ItemState)>,
    ) -> Result<Option<CommittedShard>, ShardError> {
        if self.open.is_none() {
            self.open = Some(self.start()?);
        }
        let Some(shard) = self.open.as_mut() else {
            return Ok(None);
        };
        shard
            .writer
            .write(batch)
            .map_err(|source| ShardError::Parquet {
                path: shard.tmp_path.clone(),
                source,
            })?;
        shard.rows += batch.num_rows() as u64;
        shard.items.extend(items);
        let size = shard.writer.bytes_written() as u64 + shard.writer.in_progress_size() as u64;
        if size >= self.target_bytes {
            return self.commit();
        }
        Ok(None)
    }

    fn start(&mut self) -> Result<OpenShard, ShardError> {
        let file_name = shard_file_name(&self.prefix, self.next_number);
        let final_path = self.dir.join(&file_name);
        let tmp_path = self.dir.join(format!("{file_name}.tmp"));
        if final_path.exists() {
            return Err(ShardError::Config(format!(
                "{} already exists: is another writer using prefix {:?}?",
                final_path.display(),
                self.prefix
            )));
        }
        let file = File::create(&tmp_path).map_err(|source| io_err(&tmp_path, source))?;
        let sink = HashingFile {
            file,
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        let writer = ArrowWriter::try_new(sink, self.schema.clone(), Some(self.props.clone()))
            .map_err(|source| ShardError::Parquet {
                path: tmp_path.clone(),
                source,
            })?;
        self.next_number += 1;
        Ok(OpenShard {
            tmp_path,
            final_path,
            file_name: format!("{}/{file_name}", self.kind.dir_name()),
            writer,
            rows: 0,
            items: Vec::new(),
        })
    }

    /// Closes the open shard and makes it durable: fsync the file, rename, fsync the directory.
    fn commit(&mut self) -> Result<Option<CommittedShard>, ShardError> {
        let Some(shard) = self.open.take() else {
            return Ok(None);
        };
        let tmp = shard.tmp_path.clone();
        let result = finish_shard(self.kind, &self.dir, shard);
        if result.is_err() {
            // Best effort: the next open removes it anyway.
            let _ = fs::remove_file(&tmp);
        }
        result.map(Some)
    }

    /// Drops the open shard without committing it.
    fn abandon(&mut self) {
        if let Some(shard) = self.open.take() {
            let path = shard.tmp_path.clone();
            drop(shard);
            let _ = fs::remove_file(path);
        }
    }
}

fn finish_shard(
    kind: ShardKind,
    dir: &Path,
    shard: OpenShard,
) -> Result<CommittedShard, ShardError> {
    let OpenShard {
        tmp_path,
        final_path,
        file_name,
        writer,
        rows,
        items,
    } = shard;
    let sink = writer.into_inner().map_err(|source| ShardError::Parquet {
        path: tmp_path.clone(),
        source,
    })?;
    sink.file
        .sync_all()
        .map_err(|source| io_err(&tmp_path, source))?;
    drop(sink.file);
    // Checked again just before the rename so a shard is never replaced.
    if final_path.exists() {
        return Err(ShardError::Config(format!(
            "{} appeared while it was being written: two writers share a prefix",
            final_path.display()
        )));
    }
    fs::rename(&tmp_path, &final_path).map_err(|source| io_err(&final_path, source))?;
    sync_dir(dir)?;
    Ok(CommittedShard {
        kind,
        file_name,
        rows,
        bytes: sink.bytes,
        blake3: sink.hasher.finalize().to_hex().to_string(),
        items,
    })
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> ShardError {
    ShardError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a rename in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ShardError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io_err(dir, source))
}

/// Hashes and counts the bytes on their way to the file, so committing needs no second read.
struct HashingFile {
    file: File,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        let written = buf.get(..n).unwrap_or(buf);
        self.hasher.update(written);
        self.bytes += written.len() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

fn writer_props(
    kind: ShardKind,
    cols: &[(&'static str, Col)],
    row_group_bytes: usize,
) -> Result<WriterProperties, ShardError> {
    let zstd = ZstdLevel::try_new(3).map_err(|e| ShardError::Config(e.to_string()))?;
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_bytes(Some(row_group_bytes))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            schema::HF_KEY.to_string(),
            schema::hf_metadata(cols),
        )]));
    if kind == ShardKind::Accepted {
        // JPEG/PNG bytes are already compressed: compression and dictionaries cost CPU for
        // nothing, and min/max statistics of image bytes mean nothing.
        let image = ColumnPath::new(vec!["image".to_string(), "bytes".to_string()]);
        builder = builder
            .set_column_compression(image.clone(), Compression::UNCOMPRESSED)
            .set_column_dictionary_enabled(image.clone(), false)
            .set_column_encoding(image.clone(), Encoding::PLAIN)
            .set_column_statistics_enabled(image, EnabledStatistics::None);
    }
    Ok(builder.build())
}

// ---- building record batches ----

fn schema_err(reason: String) -> ArrowError {
    ArrowError::SchemaError(reason)
}

fn field<'a>(schema: &'a SchemaRef, name: &str) -> Result<&'a DataType, ArrowError> {
    Ok(schema.field_with_name(name)?.data_type())
}

fn struct_fields(dt: &DataType) -> Result<Fields, ArrowError> {
    match dt {
        DataType::Struct(fields) => Ok(fields.clone()),
        other => Err(schema_err(format!("expected a struct, found {other}"))),
    }
}

fn list_item(dt: &DataType) -> Result<FieldRef, ArrowError> {
    match dt {
        DataType::List(item) => Ok(item.clone()),
        other => Err(schema_err(format!("expected a list, found {other}"))),
    }
}

fn utf8<S: AsRef<str>>(values: impl IntoIterator<Item = Option<S>>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<StringArray>())
}

fn i32s(values: impl IntoIterator<Item = Option<u32>>) -> ArrayRef {
    // Ranges were checked in `check_accepted`; saturation is unreachable.
    Arc::new(
        values
            .into_iter()
            .map(|v| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX)))
            .collect::<Int32Array>(),
    )
}

fn i8s(values: impl IntoIterator<Item = Option<u8>>) -> ArrayRef {
    Arc::new(
        values
            .into_iter()
            .map(|v| v.map(|v| i8::try_from(v).unwrap_or(i8::MAX)))
            .collect::<Int8Array>(),
    )
}

fn f32s(values: impl IntoIterator<Item = Option<f32>>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<Float32Array>())
}

fn structure(dt: &DataType, children: Vec<ArrayRef>) -> Result<ArrayRef, ArrowError> {
    Ok(Arc::new(StructArray::try_new(
        struct_fields(dt)?,
        children,
        None,
    )?))
}

fn list_utf8<'a>(
    dt: &DataType,
    rows: impl IntoIterator<Item = &'a [String]>,
) -> Result<ArrayRef, ArrowError> {
    let mut builder = ListBuilder::new(StringBuilder::new()).with_field(list_item(dt)?);
    for values in rows {
        for v in values {
            builder.values().append_value(v);
        }
        builder.append(true);
    }
    Ok(Arc::new(builder.finish()))
}

/// A list of structs from per-row lengths and the flattened child columns.
fn list_struct(
    dt: &DataType,
    lengths: Vec<usize>,
    children: Vec<ArrayRef>,
) -> Result<ArrayRef, ArrowError> {
    let item = list_item(dt)?;
    let values = structure(item.data_type(), children)?;
    Ok(Arc::new(ListArray::try_new(
        item,
        OffsetBuffer::from_lengths(lengths),
        values,
        None,
    )?))
}

fn glaucoma_str(g: Glaucoma) -> &'static str {
    match g {
        Glaucoma::No => "no",
        Glaucoma::Suspect => "suspect",
        Glaucoma::Yes => "yes",
    }
}

fn sex_str(s: Sex) -> &'static str {
    match s {
        Sex::Female => "female",
        Sex::Male => "male",
    }
}

fn disc_side_str(s: DiscSide) -> &'static str {
    match s {
        DiscSide::Left => "left",
        DiscSide::Right => "right",
        DiscSide::Centre => "centre",
    }
}

fn centring_str(c: Centring) -> &'static str {
    match c {
        Centring::Disc => "disc",
        Centring::Macula => "macula",
    }
}

fn accepted_batch(schema: &SchemaRef, rows: &[PendingAccepted]) -> Result<RecordBatch, ArrowError> {
    let r = || rows.iter().map(|p| &p.row);
    let rec = || r().map(|row| &row.record);
    let lab = || rec().map(|rec| &rec.labels);
    let fa = || r().map(|row| &row.facts);
    let prov = || r().map(|row| &row.provenance);

    let image_paths: Vec<String> = r()
        .map(|row| format!("{}.{}", row.record.id, row.image_ext))
        .collect();
    let image = structure(
        field(schema, "image")?,
        vec![
            Arc::new(BinaryArray::from_iter(
                r().map(|row| Some(row.image.as_slice())),
            )),
            utf8(image_paths.iter().map(Some)),
        ],
    )?;

    let labels_dt = field(schema, "labels")?;
    let labels_fields = struct_fields(labels_dt)?;
    let sub = |name: &str| -> Result<DataType, ArrowError> {
        Ok(labels_fields
            .find(name)
            .ok_or_else(|| schema_err(format!("labels.{name} missing")))?
            .1
            .data_type()
            .clone())
    };
    let labels = structure(
        labels_dt,
        vec![
            i8s(lab().map(|l| l.dr_grade)),
            i8s(lab().map(|l| l.dme)),
            utf8(lab().map(|l| l.glaucoma.map(glaucoma_str))),
            Arc::new(lab().map(|l| l.amd).collect::<BooleanArray>()),
            i8s(lab().map(|l| l.myopic_maculopathy)),
            list_utf8(
                &sub("disease_codes")?,
                lab().map(|l| l.disease_codes.as_slice()),
            )?,
            utf8(lab().map(|l| l.quality.map(|q| q.as_str()))),
            f32s(lab().map(|l| l.age)),
            utf8(lab().map(|l| l.sex.map(sex_str))),
            list_utf8(&sub("findings")?, lab().map(|l| l.findings.as_slice()))?,
            utf8(rows.iter().map(|p| Some(p.raw_json.as_str()))),
        ],
    )?;

    let hashes: Vec<String> = fa()
        .map(|f| format!("{:016x}", f.perceptual_hash))
        .collect();
    let facts = structure(
        field(schema, "facts")?,
        vec![
            f32s(fa().map(|f| Some(f.fov_fraction))),
            f32s(fa().map(|f| Some(f.quality.brightness))),
            f32s(fa().map(|f| Some(f.quality.contrast))),
            f32s(fa().map(|f| Some(f.quality.sharpness))),
            f32s(fa().map(|f| Some(f.quality.illumination_uniformity))),
            utf8(fa().map(|f| Some(f.quality.grade.as_str()))),
            f32s(fa().map(|f| f.disc.map(|d| d.x))),
            f32s(fa().map(|f| f.disc.map(|d| d.y))),
            f32s(fa().map(|f| f.disc.map(|d| d.diameter))),
            utf8(fa().map(|f| f.disc.map(|d| disc_side_str(d.side)))),
            f32s(fa().map(|f| f.disc.map(|d| d.confidence))),
            utf8(fa().map(|f| f.centring.map(centring_str))),
            f32s(fa().map(|f| f.vessel_density.map(|m| m.value))),
            f32s(fa().map(|f| f.vessel_density.map(|m| m.confidence))),
            f32s(fa().map(|f| f.tortuosity.map(|m| m.value))),
            f32s(fa().map(|f| f.tortuosity.map(|m| m.confidence))),
            f32s(fa().map(|f| f.fractal_dimension.map(|m| m.value))),
            f32s(fa().map(|f| f.fractal_dimension.map(|m| m.confidence))),
            f32s(fa().map(|f| f.cup_to_disc_ratio.map(|m| m.value))),
            f32s(fa().map(|f| f.cup_to_disc_ratio.map(|m| m.confidence))),
            i32s(fa().map(|f| f.bright_lesion_candidates.map(|m| m.value))),
            f32s(fa().map(|f| f.bright_lesion_candidates.map(|m| m.confidence))),
            i32s(fa().map(|f| f.dark_lesion_candidates.map(|m| m.value))),
            f32s(fa().map(|f| f.dark_lesion_candidates.map(|m| m.confidence))),
            utf8(hashes.iter().map(Some)),
        ],
    )?;

    let lesion_rows = || r().flat_map(|row| row.answer.lesions.iter());
    let lesions = list_struct(
        field(schema, "lesions")?,
        r().map(|row| row.answer.lesions.len()).collect(),
        vec![
            utf8(lesion_rows().map(|l| Some(l.kind.as_str()))),
            utf8(lesion_rows().map(|l| Some(l.location.as_str()))),
            utf8(lesion_rows().map(|l| Some(l.extent.as_str()))),
        ],
    )?;
    // Every caption style, `detailed` (the caption column) first: trainers draw one per step.
    let styled: Vec<Vec<(&str, &str)>> = r().map(|row| row.answer.captions_by_style()).collect();
    let captions: Vec<Vec<String>> = styled
        .iter()
        .map(|list| list.iter().map(|(_, text)| text.to_string()).collect())
        .collect();
    let caption_variants = list_struct(
        field(schema, "caption_variants")?,
        styled.iter().map(Vec::len).collect(),
        vec![
            utf8(styled.iter().flatten().map(|(style, _)| Some(*style))),
            utf8(styled.iter().flatten().map(|(_, text)| Some(*text))),
        ],
    )?;

    let mut columns: Vec<ArrayRef> = vec![
        utf8(rec().map(|rec| Some(rec.id.as_str()))),
        utf8(rec().map(|rec| Some(rec.dataset.as_str()))),
        image,
        i32s(fa().map(|f| Some(f.output_width))),
        i32s(fa().map(|f| Some(f.output_height))),
        i32s(fa().map(|f| Some(f.original_width))),
        i32s(fa().map(|f| Some(f.original_height))),
        utf8(rec().map(|rec| Some(rec.laterality.as_str()))),
        utf8(rec().map(|rec| rec.split.as_deref())),
        utf8(rec().map(|rec| Some(rec.relative_path.as_str()))),
        labels,
        facts,
    ];
    for index in 0..schema::SECTION_COLUMNS.len() {
        columns.push(utf8(r().map(|row| {
            row.answer
                .sections()
                .get(index)
                .map(|(_, text)| text.to_string())
        })));
    }
    columns.extend([
        lesions,
        utf8(r().map(|row| Some(row.answer.caption.as_str()))),
        list_utf8(
            field(schema, "captions")?,
            captions.iter().map(|c| c.as_slice()),
        )?,
        caption_variants,
        utf8(prov().map(|p| Some(p.model.as_str()))),
        utf8(prov().map(|p| Some(p.endpoint.as_str()))),
        utf8(prov().map(|p| Some(p.prompt_hash.as_str()))),
        utf8(prov().map(|p| Some(p.schema_hash.as_str()))),
        utf8(prov().map(|p| Some(p.captioned_at.as_str()))),
        i32s(prov().map(|p| Some(p.usage.prompt_tokens))),
        i32s(prov().map(|p| Some(p.usage.completion_tokens))),
        i32s(prov().map(|p| Some(p.latency_ms))),
    ]);
    RecordBatch::try_new(schema.clone(), columns)
}

fn rejected_batch(schema: &SchemaRef, rows: &[PendingRejected]) -> Result<RecordBatch, ArrowError> {
    let r = || rows.iter().map(|p| &p.row);
    let reasons = || r().flat_map(|row| row.reasons.iter());
    let columns: Vec<ArrayRef> = vec![
        utf8(r().map(|row| Some(row.record.id.as_str()))),
        utf8(r().map(|row| Some(row.record.dataset.as_str()))),
        utf8(r().map(|row| Some(row.record.relative_path.as_str()))),
        utf8(r().map(|row| Some(row.state.as_str()))),
        list_struct(
            field(schema, "reasons")?,
            r().map(|row| row.reasons.len()).collect(),
            vec![
                utf8(reasons().map(|x| Some(x.code.as_str()))),
                utf8(reasons().map(|x| Some(x.detail.as_str()))),
            ],
        )?,
        utf8(r().map(|row| row.raw_answer.as_deref())),
        utf8(r().map(|row| row.provenance.as_ref().map(|p| p.model.as_str()))),
        utf8(r().map(|row| row.provenance.as_ref().map(|p| p.prompt_hash.as_str()))),
        utf8(rows.iter().map(|p| Some(p.labels_json.as_str()))),
        utf8(rows.iter().map(|p| p.facts_json.as_deref())),
    ];
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::{read_accepted, read_rejects};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn small_config(target: u64, row_group: u64) -> ShardConfig {
        ShardConfig {
            target_shard_bytes: target,
            max_row_group_bytes: row_group,
            name_prefix: "part".into(),
        }
    }

    fn file_hash(path: &Path) -> String {
        blake3::hash(&fs::read(path).expect("read shard"))
            .to_hex()
            .to_string()
    }

    fn names_in(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Writes `n` accepted rows and `r` rejects with default sizes and finishes.
    fn write_small(dir: &Path, n: usize, r: usize) -> Vec<CommittedShard> {
        let mut writer = DatasetWriter::open(dir, ShardConfig::default()).expect("open");
        let mut out = Vec::new();
        for i in 0..n {
            out.extend(
                writer
                    .write_accepted(fixtures::accepted("eyepacs", i, 2000 + i))
                    .expect("write"),
            );
        }
        for i in 0..r {
            let state = if i % 2 == 0 {
                ItemState::Rejected
            } else {
                ItemState::Failed
            };
            out.extend(
                writer
                    .write_rejected(fixtures::rejected("eyepacs", 100 + i, state))
                    .expect("write reject"),
            );
        }
        out.extend(writer.finish().expect("finish"));
        out
    }

    #[test]
    fn round_trip_accepted_and_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let committed = write_small(dir.path(), 40, 5);
        assert_eq!(committed.len(), 2, "one accepted and one reject shard");
        let acc = committed
            .iter()
            .find(|c| c.kind == ShardKind::Accepted)
            .expect("accepted shard");
        assert_eq!(acc.file_name, "shards/part-00000.parquet");
        assert_eq!(acc.rows, 40);
        let path = dir.path().join(&acc.file_name);
        assert_eq!(acc.bytes, fs::metadata(&path).expect("meta").len());
        assert_eq!(acc.blake3, file_hash(&path));
        assert!(acc.items.iter().all(|(_, s)| *s == ItemState::Accepted));

        let rows = read_accepted(&path, true).expect("read");
        assert_eq!(rows.len(), 40);
        for (i, row) in rows.iter().enumerate() {
            let want = fixtures::accepted("eyepacs", i, 2000 + i);
            assert_eq!(row.id, want.record.id.as_str());
            assert_eq!(acc.items[i].0, want.record.id, "items in row order");
            assert_eq!(row.dataset, "eyepacs");
            assert_eq!(row.image, want.image);
            assert_eq!((row.width, row.height), (1024, 1024));
            assert_eq!(row.caption, want.answer.caption);
            let styles: Vec<&str> = row.caption_styles.iter().map(String::as_str).collect();
            assert_eq!(styles, ["detailed", "short"]);
            assert_eq!(
                row.captions,
                vec![
                    want.answer.caption.clone(),
                    want.answer.caption_variants["short"].clone()
                ]
            );
            assert_eq!(row.laterality, "left");
            assert_eq!(row.dr_grade, want.record.labels.dr_grade);
            assert_eq!(row.glaucoma.as_deref(), (i % 2 == 0).then_some("suspect"));
            assert_eq!(row.amd, None);
            assert_eq!(row.quality_grade.as_deref(), Some("usable"));
            assert_eq!(
                row.vessel_density,
                want.facts.vessel_density.map(|m| m.value)
            );
            assert_eq!(
                row.cup_to_disc_ratio,
                want.facts.cup_to_disc_ratio.map(|m| m.value)
            );
            let lesions: Vec<String> = want
                .answer
                .lesions
                .iter()
                .map(|l| {
                    format!(
                        "{}:{}:{}",
                        l.kind.as_str(),
                        l.location.as_str(),
                        l.extent.as_str()
                    )
                })
                .collect();
            assert_eq!(row.lesions, lesions);
            for (name, text) in want.answer.sections() {
                assert_eq!(row.sections.get(name).map(String::as_str), Some(text));
            }
            assert_eq!(row.sections.len(), 7);
            assert_eq!(row.prompt_tokens, 900 + i as u32);
            assert_eq!(row.completion_tokens, 300);
            assert_eq!(row.latency_ms, 1200);
        }

        let rej = committed
            .iter()
            .find(|c| c.kind == ShardKind::Rejected)
            .expect("reject shard");
        assert_eq!(rej.file_name, "rejects/part-00000.parquet");
        assert_eq!(rej.items[1].1, ItemState::Failed);
        let rejects = read_rejects(&dir.path().join(&rej.file_name)).expect("read rejects");
        assert_eq!(rejects.len(), 5);
        for (i, r) in rejects.iter().enumerate() {
            let want = fixtures::rejected("eyepacs", 100 + i, ItemState::Rejected);
            assert_eq!(r.id, want.record.id.as_str());
            assert_eq!(r.state, if i % 2 == 0 { "rejected" } else { "failed" });
            assert_eq!(r.reasons, want.reasons);
            assert_eq!(r.raw_answer, want.raw_answer);
        }
        assert_eq!(names_in(&dir.path().join("shards")).len(), 1, "no tmp left");
    }

    #[test]
    fn footer_types_and_column_chunks_are_hf_compatible() {
        let dir = tempfile::tempdir().expect("tempdir");
        let committed = write_small(dir.path(), 12, 0);
        let path = dir.path().join(&committed[0].file_name);

        let reader = SerializedFileReader::new(File::open(&path).expect("open")).expect("parquet");
        let meta = reader.metadata();
        let kv = meta
            .file_metadata()
            .key_value_metadata()
            .expect("key-value metadata");
        let hf = kv
            .iter()
            .find(|kv| kv.key == "huggingface")
            .and_then(|kv| kv.value.clone())
            .expect("huggingface entry");
        let hf: serde_json::Value = serde_json::from_str(&hf).expect("json");
        let features = hf["info"]["features"].as_object().expect("features");
        assert_eq!(hf["info"]["features"]["image"]["_type"], "Image");

        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(&path).expect("open"),
        )
        .expect("arrow");
        let arrow_schema = builder.schema();
        // pyarrow takes schema metadata from the embedded Arrow schema only.
        let embedded: serde_json::Value = serde_json::from_str(
            arrow_schema
                .metadata()
                .get("huggingface")
                .expect("huggingface in the embedded Arrow schema"),
        )
        .expect("json");
        assert_eq!(embedded, hf);
        let names: BTreeSet<&str> = arrow_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let feature_names: BTreeSet<&str> = features.keys().map(String::as_str).collect();
        assert_eq!(names, feature_names, "every column has a feature");
        assert_eq!(names.len(), schema::accepted_columns().len());
        let mut bad = Vec::new();
        for f in arrow_schema.fields() {
            if !f.is_nullable() {
                bad.push(f.name().clone());
            }
            crate::schema::tests::walk(f.data_type(), f.name(), &mut bad);
        }
        assert!(
            bad.is_empty(),
            "non-nullable or non-plain types read back: {bad:?}"
        );
        assert_eq!(
            arrow_schema
                .field_with_name("image")
                .expect("image")
                .data_type(),
            &schema::arrow_type(&Col::Image)
        );

        let row_group = meta.row_group(0);
        let mut seen = 0;
        for column in row_group.columns() {
            let name = column.column_path().string();
            assert!(
                column.offset_index_offset().is_some(),
                "{name}: offset index"
            );
            if name == "image.bytes" {
                seen += 1;
                assert_eq!(column.compression(), Compression::UNCOMPRESSED);
                assert_eq!(column.dictionary_page_offset(), None, "no dictionary page");
                let encodings: Vec<Encoding> = column.encodings().collect();
                assert!(encodings.contains(&Encoding::PLAIN), "{encodings:?}");
                assert!(
                    !encodings.contains(&Encoding::RLE_DICTIONARY)
                        && !encodings.contains(&Encoding::PLAIN_DICTIONARY),
                    "{encodings:?}"
                );
            } else if name == "caption" {
                seen += 1;
                assert!(matches!(column.compression(), Compression::ZSTD(_)));
                assert!(
                    column.column_index_offset().is_some(),
                    "caption column index"
                );
            }
        }
        assert_eq!(seen, 2, "found both image.bytes and caption");
    }

    #[test]
    fn rotation_by_size_makes_several_shards_and_row_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer =
            DatasetWriter::open(dir.path(), small_config(200_000, 50_000)).expect("open");
        let mut committed = Vec::new();
        for i in 0..60 {
            committed.extend(
                writer
                    .write_accepted(fixtures::accepted("aptos", i, 20_000))
                    .expect("write"),
            );
        }
        let before_finish = committed.len();
        committed.extend(writer.finish().expect("finish"));
        assert!(
            before_finish >= 2,
            "shards commit as they fill, got {before_finish}"
        );
        assert!(
            committed.len() >= 5,
            "1.2 MB over 200 KB shards: {}",
            committed.len()
        );
        let total: u64 = committed.iter().map(|c| c.rows).sum();
        assert_eq!(total, 60);
        let mut ids = BTreeSet::new();
        for (n, shard) in committed.iter().enumerate() {
            assert_eq!(shard.file_name, format!("shards/part-{n:05}.parquet"));
            let path = dir.path().join(&shard.file_name);
            assert_eq!(shard.blake3, file_hash(&path));
            let reader =
                SerializedFileReader::new(File::open(&path).expect("open")).expect("parquet");
            // Row data overshoots the target by at most one batch (one 20 KB row here); the
            // footer comes on top (tens of KB at this tiny row-group size).
            let data: i64 = reader
                .metadata()
                .row_groups()
                .iter()
                .map(|g| g.compressed_size())
                .sum();
            assert!(
                data < 225_000,
                "{}: {data} bytes of row data",
                shard.file_name
            );
            if shard.rows >= 5 {
                assert!(
                    reader.metadata().num_row_groups() >= 2,
                    "row groups capped at 50 KB in {}",
                    shard.file_name
                );
            }
            ids.extend(shard.items.iter().map(|(id, _)| id.clone()));
        }
        assert_eq!(ids.len(), 60, "every item in exactly one shard");
        assert_eq!(names_in(&dir.path().join("shards")).len(), committed.len());
    }

    #[test]
    fn open_removes_own_tmp_files_and_continues_numbering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = write_small(dir.path(), 3, 1);
        let shard0 = dir.path().join("shards/part-00000.parquet");
        let hash0 = file_hash(&shard0);
        assert_eq!(first[0].blake3, hash0);
        // A crash mid-write leaves a temporary file; another writer's temp file is not ours.
        fs::write(dir.path().join("shards/part-00001.parquet.tmp"), b"half").expect("tmp");
        fs::write(dir.path().join("rejects/part-00003.parquet.tmp"), b"half").expect("tmp");
        fs::write(dir.path().join("shards/w2-part-00000.parquet.tmp"), b"x").expect("tmp");

        let mut writer = DatasetWriter::open(dir.path(), ShardConfig::default()).expect("reopen");
        assert!(!dir.path().join("shards/part-00001.parquet.tmp").exists());
        assert!(!dir.path().join("rejects/part-00003.parquet.tmp").exists());
        assert!(dir.path().join("shards/w2-part-00000.parquet.tmp").exists());
        writer
            .write_accepted(fixtures::accepted("eyepacs", 50, 100))
            .expect("write");
        writer
            .write_rejected(fixtures::rejected("eyepacs", 51, ItemState::Rejected))
            .expect("write");
        let second = writer.finish().expect("finish");
        let names: BTreeSet<&str> = second.iter().map(|c| c.file_name.as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from(["shards/part-00001.parquet", "rejects/part-00001.parquet"])
        );
        assert_eq!(file_hash(&shard0), hash0, "earlier shard untouched");
        let rows =
            read_accepted(&dir.path().join("shards/part-00001.parquet"), false).expect("read");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, fixtures::record("eyepacs", 50).id.as_str());
    }

    #[test]
    fn numbering_skips_gaps_and_other_prefixes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shards = dir.path().join("shards");
        fs::create_dir_all(&shards).expect("mkdir");
        fs::write(shards.join("part-00007.parquet"), b"old").expect("write");
        fs::write(shards.join("w1-part-00020.parquet"), b"other").expect("write");
        let mut writer = DatasetWriter::open(dir.path(), ShardConfig::default()).expect("open");
        writer
            .write_accepted(fixtures::accepted("x", 1, 10))
            .expect("write");
        let done = writer.finish().expect("finish");
        assert_eq!(done[0].file_name, "shards/part-00008.parquet");
        assert_eq!(
            fs::read(shards.join("part-00007.parquet")).expect("read"),
            b"old"
        );
    }

    #[test]
    fn dropping_an_unfinished_writer_leaves_no_tmp_and_no_shard() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer =
            DatasetWriter::open(dir.path(), small_config(10_000_000, 1_000)).expect("open");
        for i in 0..40 {
            assert!(
                writer
                    .write_accepted(fixtures::accepted("x", i, 500))
                    .expect("write")
                    .is_empty()
            );
        }
        assert!(
            names_in(&dir.path().join("shards"))
                .iter()
                .any(|n| n.ends_with(".parquet.tmp")),
            "rows are being written to a temporary file"
        );
        drop(writer);
        assert!(names_in(&dir.path().join("shards")).is_empty());
    }

    #[test]
    fn finish_without_rows_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = DatasetWriter::open(dir.path(), ShardConfig::default()).expect("open");
        assert!(writer.finish().expect("finish").is_empty());
        assert!(names_in(&dir.path().join("shards")).is_empty());
        assert!(names_in(&dir.path().join("rejects")).is_empty());
    }

    #[test]
    fn bad_config_and_bad_rows_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        for config in [
            small_config(0, 1),
            small_config(1, 0),
            ShardConfig {
                name_prefix: "../x".into(),
                ..ShardConfig::default()
            },
            ShardConfig {
                name_prefix: String::new(),
                ..ShardConfig::default()
            },
        ] {
            assert!(matches!(
                DatasetWriter::open(dir.path(), config),
                Err(ShardError::Config(_))
            ));
        }
        let mut writer = DatasetWriter::open(dir.path(), ShardConfig::default()).expect("open");
        let mut row = fixtures::accepted("x", 1, 10);
        row.image.clear();
        let err = writer.write_accepted(row).expect_err("empty image");
        assert!(err.to_string().contains("empty image"), "{err}");
        let mut row = fixtures::accepted("x", 2, 10);
        row.record.labels.dr_grade = Some(200);
        let err = writer.write_accepted(row.clone()).expect_err("dr_grade");
        assert!(err.to_string().contains(row.record.id.as_str()), "{err}");
        let mut row = fixtures::accepted("x", 3, 10);
        row.provenance.latency_ms = u32::MAX;
        assert!(writer.write_accepted(row).is_err());
        let row = fixtures::rejected("x", 4, ItemState::Accepted);
        let err = writer.write_rejected(row).expect_err("state");
        assert!(err.to_string().contains("accepted"), "{err}");
        // Refused rows leave the writer usable.
        writer
            .write_accepted(fixtures::accepted("x", 5, 10))
            .expect("write");
        let done = writer.finish().expect("finish");
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].rows, 1);
    }

    proptest! {
        #[test]
        fn shard_names_round_trip(prefix in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", n in 0u64..10_000_000) {
            let name = shard_file_name(&prefix, n);
            prop_assert_eq!(parse_shard_number(&prefix, &name), Some(n));
            let tmp = format!("{name}.tmp");
            prop_assert_eq!(parse_shard_number(&prefix, &tmp), None);
        }

        #[test]
        fn parse_shard_number_never_panics(prefix in "\\PC{0,8}", name in "\\PC{0,24}") {
            if parse_shard_number(&prefix, &name).is_some() {
                prop_assert!(name.starts_with(&prefix) && name.ends_with(".parquet"));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn arbitrary_text_and_labels_round_trip(
            caption in "\\PC{1,200}",
            section in "\\PC{0,80}",
            dataset in "[a-z0-9_]{1,12}",
            dr in proptest::option::of(0u8..5),
            amd in proptest::option::of(any::<bool>()),
            image in proptest::collection::vec(any::<u8>(), 1..3000),
            rows in 1usize..40,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut writer = DatasetWriter::open(dir.path(), ShardConfig::default()).expect("open");
            let mut wanted = Vec::new();
            for i in 0..rows {
                let mut row = fixtures::accepted(&dataset, i, 1);
                row.image = image.clone();
                row.answer.caption = format!("{caption}{i}");
                row.answer.macula = section.clone();
                row.record.labels.dr_grade = dr;
                row.record.labels.amd = amd;
                wanted.push(row.clone());
                writer.write_accepted(row).expect("write");
            }
            let done = writer.finish().expect("finish");
            prop_assert_eq!(done.len(), 1);
            let read = read_accepted(&dir.path().join(&done[0].file_name), true).expect("read");
            prop_assert_eq!(read.len(), rows);
            for (got, want) in read.iter().zip(&wanted) {
                prop_assert_eq!(&got.caption, &want.answer.caption);
                prop_assert_eq!(&got.dataset, &want.record.dataset);
                prop_assert_eq!(got.sections.get("macula"), Some(&want.answer.macula));
                prop_assert_eq!(got.dr_grade, dr);
                prop_assert_eq!(got.amd, amd);
                prop_assert_eq!(&got.image, &image);
            }
        }
    }
}
