//! Exports a built caption-image dataset to the input formats of common trainers, streaming:
//! records are read a batch at a time through [`retina_reader`] and written out as they come, so
//! memory stays flat whatever the dataset's size.
//!
//! - [`Format::RetinaLogos`]: the RetinaLogos trainer's JSONL, one
//!   `{"image", "id", "width", "height", "caption"}` object per line (`width` is the horizontal
//!   size; `caption` a string, or a list of every caption style when there are variants), plus
//!   `meta.yaml` with the `META:` list (`path`, `image_root`, `ratio`, `type`) the trainer reads.
//! - [`Format::Llava`]: LLaVA-style instruction data, one JSON array of
//!   `{"id", "image", "conversations": [{"from": "human", "value": "<image>\n..."},
//!   {"from": "gpt", "value": caption}]}`.
//! - [`Format::WebDataset`]: tar shards of [`ExportOptions::samples_per_shard`] samples, each
//!   sample `KEY.jpg` (or `.png`), `KEY.txt` (the caption) and `KEY.json` (id, dataset, size,
//!   captions by style, labels), the layout webdataset loaders stream.
//!
//! The JSONL and JSON formats write images to `images/XX/ID.jpg` under the output folder (`XX`
//! the first two characters of the id, so no folder holds more than a few thousand files).
//! Index files and tar shards are written to a `.tmp` name and renamed when complete: an
//! interrupted export never leaves a truncated file under its final name.
//!
//! ```
//! use retina_export::{ExportOptions, Format, export};
//! use retina_reader::Dataset;
//!
//! let dir = tempfile::tempdir()?;
//! retina_reader::fixture::write_dataset(&dir.path().join("ds"), 5, 1_000_000)?;
//! let dataset = Dataset::open(&dir.path().join("ds"))?;
//! let out = dir.path().join("llava");
//! let summary = export(&dataset, &ExportOptions::new(Format::Llava, &out))?;
//! assert_eq!(summary.records, 5);
//! let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("llava.json"))?)?;
//! assert_eq!(json[0]["conversations"][1]["from"], "gpt");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

use retina_reader::{Dataset, ReadOptions, ReaderError, TrainingRecord};
use serde_json::{Value, json};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// The trainer format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// RetinaLogos trainer JSONL plus its `META` YAML.
    RetinaLogos,
    /// LLaVA-style conversation JSON.
    Llava,
    /// webdataset tar shards.
    WebDataset,
}

impl std::str::FromStr for Format {
    type Err = ExportError;

    fn from_str(text: &str) -> Result<Format, ExportError> {
        match text {
            "retinalogos" => Ok(Format::RetinaLogos),
            "llava" => Ok(Format::Llava),
            "webdataset" => Ok(Format::WebDataset),
            other => Err(ExportError::Config(format!(
                "unknown export format {other:?}: use retinalogos, llava or webdataset"
            ))),
        }
    }
}

/// What to export and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The format.
    pub format: Format,
    /// Output folder (created; existing files of the same names are replaced).
    pub out: PathBuf,
    /// Which records, in which order (filters, split, shuffle). Images are always read.
    pub read: ReadOptions,
    /// Samples per webdataset tar shard.
    pub samples_per_shard: usize,
    /// The human turn of LLaVA conversations (`<image>\n` is put in front).
    pub llava_instruction: String,
    /// `ratio` of the RetinaLogos `META` entry (the share of this source in a training mix).
    pub retinalogos_ratio: f64,
}

impl ExportOptions {
    /// Every record of the dataset in card order, with the defaults of each format.
    pub fn new(format: Format, out: &Path) -> ExportOptions {
        ExportOptions {
            format,
            out: out.to_path_buf(),
            read: ReadOptions::default(),
            samples_per_shard: 1000,
            llava_instruction: "Describe this colour fundus photograph in detail.".into(),
            retinalogos_ratio: 1.0,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportSummary {
    /// Records exported.
    pub records: u64,
    /// Index files and tar shards written (images not listed), relative to the output folder.
    pub files: Vec<String>,
    /// Bytes of image data written.
    pub image_bytes: u64,
}

/// Everything that can go wrong exporting; every variant names the file or the reason.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the dataset failed.
    #[error(transparent)]
    Read(#[from] ReaderError),
    /// Writing an output file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The options are unusable.
    #[error("export: {0}")]
    Config(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// File name of the RetinaLogos JSONL inside the output folder.
pub const RETINALOGOS_JSONL: &str = "retinalogos.jsonl";
/// File name of the RetinaLogos `META` YAML.
pub const RETINALOGOS_META: &str = "meta.yaml";
/// File name of the LLaVA JSON.
pub const LLAVA_JSON: &str = "llava.json";

/// Exports `dataset` as `options` say. See the crate docs for each layout.
pub fn export(dataset: &Dataset, options: &ExportOptions) -> Result<ExportSummary, ExportError> {
    if options.samples_per_shard == 0 {
        return Err(ExportError::Config(
            "samples_per_shard must be at least 1".into(),
        ));
    }
    if !(options.retinalogos_ratio > 0.0 && options.retinalogos_ratio.is_finite()) {
        return Err(ExportError::Config(format!(
            "retinalogos ratio {} must be a positive number",
            options.retinalogos_ratio
        )));
    }
    fs::create_dir_all(&options.out).map_err(io_err(&options.out))?;
    let read = ReadOptions {
        with_images: true,
        ..options.read.clone()
    };
    let records = dataset.stream(&read);
    match options.format {
        Format::RetinaLogos => retinalogos(records, options),
        Format::Llava => llava(records, options),
        Format::WebDataset => webdataset(records, options),
    }
}

/// `images/XX/ID.ext`, relative to the output folder, `/`-separated.
fn image_path(record: &TrainingRecord) -> String {
    let prefix: String = record.id.chars().take(2).collect();
    format!("images/{prefix}/{}.{}", record.id, record.image_extension())
}

/// Writes the record's image under `out`; returns its relative path.
fn write_image(out: &Path, record: &TrainingRecord) -> Result<String, ExportError> {
    let relative = image_path(record);
    let path = out.join(&relative);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    fs::write(&path, &record.image).map_err(io_err(&path))?;
    Ok(relative)
}

/// A file written under `<name>.tmp` and renamed to `name` by [`Staged::commit`].
struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    writer: BufWriter<File>,
}

impl Staged {
    fn create(path: PathBuf) -> Result<Staged, ExportError> {
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        Ok(Staged {
            tmp,
            path,
            writer: BufWriter::new(file),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        self.writer.write_all(bytes).map_err(io_err(&self.tmp))
    }

    fn commit(self) -> Result<(), ExportError> {
        let file = self.writer.into_inner().map_err(|e| ExportError::Io {
            path: self.tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&self.tmp))?;
        fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))
    }
}

/// The caption as RetinaLogos takes it: a list of every style when there are variants.
fn retinalogos_caption(record: &TrainingRecord) -> Value {
    if record.captions.len() > 1 {
        json!(record.captions)
    } else {
        json!(record.caption)
    }
}

fn retinalogos(
    records: impl Iterator<Item = Result<TrainingRecord, ReaderError>>,
    options: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    let out = &options.out;
    let mut summary = ExportSummary::default();
    let mut jsonl = Staged::create(out.join(RETINALOGOS_JSONL))?;
    for record in records {
        let record = record?;
        let image = write_image(out, &record)?;
        let line = json!({
            "image": image,
            "id": record.id,
            "width": record.width,
            "height": record.height,
            "caption": retinalogos_caption(&record),
        });
        jsonl.write(line.to_string().as_bytes())?;
        jsonl.write(b"\n")?;
        summary.records += 1;
        summary.image_bytes += record.image.len() as u64;
    }
    jsonl.commit()?;
    // Absolute paths: the trainer resolves them from its own working directory.
    let root = fs::canonicalize(out).map_err(io_err(out))?;
    let jsonl_path = root.join(RETINALOGOS_JSONL);
    let yaml = format!(
        "# RetinaLogos trainer data config, written by build-dataset export.\n\
         META:\n  - path: {}\n    image_root: {}\n    ratio: {}\n    type: default\n",
        yaml_string(&jsonl_path.to_string_lossy()),
        yaml_string(&root.to_string_lossy()),
        options.retinalogos_ratio
    );
    let mut meta = Staged::create(out.join(RETINALOGOS_META))?;
    meta.write(yaml.as_bytes())?;
    meta.commit()?;
    summary.files = vec![RETINALOGOS_JSONL.into(), RETINALOGOS_META.into()];
    Ok(summary)
}

/// A YAML double-quoted scalar: JSON string escaping is valid YAML.
fn yaml_string(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

fn llava(
    records: impl Iterator<Item = Result<TrainingRecord, ReaderError>>,
    options: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    let out = &options.out;
    let mut summary = ExportSummary::default();
    let mut file = Staged::create(out.join(LLAVA_JSON))?;
    // One JSON array, written element by element so it is never held in memory.
    file.write(b"[")?;
    let human = format!("<image>\n{}", options.llava_instruction);
    for record in records {
        let record = record?;
        let image = write_image(out, &record)?;
        let entry = json!({
            "id": record.id,
            "image": image,
            "conversations": [
                {"from": "human", "value": human},
                {"from": "gpt", "value": record.caption},
            ],
        });
        file.write(if summary.records == 0 { b"\n" } else { b",\n" })?;
        file.write(entry.to_string().as_bytes())?;
        summary.records += 1;
        summary.image_bytes += record.image.len() as u64;
    }
    file.write(b"\n]\n")?;
    file.commit()?;
    summary.files = vec![LLAVA_JSON.into()];
    Ok(summary)
}

/// The `KEY.json` of a webdataset sample.
fn sample_json(record: &TrainingRecord) -> Value {
    let labels = &record.labels;
    let captions: serde_json::Map<String, Value> = record
        .caption_styles
        .iter()
        .zip(&record.captions)
        .map(|(style, text)| (style.clone(), json!(text)))
        .collect();
    json!({
        "id": record.id,
        "dataset": record.dataset,
        "width": record.width,
        "height": record.height,
        "laterality": record.laterality,
        "caption": record.caption,
        "captions": captions,
        "quality": record.quality(),
        "labels": {
            "dr_grade": labels.dr_grade,
            "dme": labels.dme,
            "glaucoma": labels.glaucoma,
            "amd": labels.amd,
            "myopic_maculopathy": labels.myopic_maculopathy,
            "disease_codes": labels.disease_codes,
        },
    })
}

struct TarShard {
    name: String,
    builder: tar::Builder<Staged>,
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

fn append(
    builder: &mut tar::Builder<Staged>,
    shard: &str,
    name: &str,
    bytes: &[u8],
) -> Result<(), ExportError> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    // A fixed time keeps exports of the same dataset byte-identical.
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, name, bytes)
        .map_err(|source| ExportError::Io {
            path: PathBuf::from(format!("{shard}/{name}")),
            source,
        })
}

fn webdataset(
    records: impl Iterator<Item = Result<TrainingRecord, ReaderError>>,
    options: &ExportOptions,
) -> Result<ExportSummary, ExportError> {
    let out = &options.out;
    let mut summary = ExportSummary::default();
    let mut current: Option<TarShard> = None;
    let mut in_shard = 0usize;
    let finish = |shard: TarShard, summary: &mut ExportSummary| -> Result<(), ExportError> {
        let staged = shard
            .builder
            .into_inner()
            .map_err(|source| ExportError::Io {
                path: out.join(&shard.name),
                source,
            })?;
        staged.commit()?;
        summary.files.push(shard.name);
        Ok(())
    };
    for record in records {
        let record = record?;
        if current.is_none() {
            let name = format!("shard-{:06}.tar", summary.files.len());
            current = Some(TarShard {
                builder: tar::Builder::new(Staged::create(out.join(&name))?),
                name,
            });
        }
        let Some(shard) = current.as_mut() else {
            continue;
        };
        // webdataset groups files by the key before the first dot: ids are hex, dot-free.
        let key = &record.id;
        let ext = record.image_extension();
        append(
            &mut shard.builder,
            &shard.name,
            &format!("{key}.{ext}"),
            &record.image,
        )?;
        append(
            &mut shard.builder,
            &shard.name,
            &format!("{key}.txt"),
            record.caption.as_bytes(),
        )?;
        let meta = sample_json(&record).to_string();
        append(
            &mut shard.builder,
            &shard.name,
            &format!("{key}.json"),
            meta.as_bytes(),
        )?;
        summary.records += 1;
        summary.image_bytes += record.image.len() as u64;
        in_shard += 1;
        if in_shard == options.samples_per_shard {
            if let Some(shard) = current.take() {
                finish(shard, &mut summary)?;
            }
            in_shard = 0;
        }
    }
    if let Some(shard) = current.take() {
        finish(shard, &mut summary)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests;
