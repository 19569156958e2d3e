//! Opening a dataset directory and streaming its accepted shards.

use crate::columns::{READ_COLUMNS, TrainingRecord, decode_batch};
use crate::shuffle::{ShuffleBuffer, shuffle_in_place};
use crate::{Filter, ReaderError, Split};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use retina_shards::{DatasetCard, ShardKind};
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Rows decoded at a time: about 10-40 MB of fundus JPEGs, and never more than one row group.
pub const BATCH_ROWS: usize = 64;

/// A built dataset directory, opened through its card.
#[derive(Debug, Clone)]
pub struct Dataset {
    dir: PathBuf,
    card: DatasetCard,
    shards: Vec<PathBuf>,
}

/// What a [`Dataset::stream`] yields and in which order.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// Records must pass it.
    pub filter: Filter,
    /// Which part of the stable split.
    pub split: Split,
    /// Share of ids in [`Split::Validation`] (0.0-1.0).
    pub validation_fraction: f64,
    /// `(seed, buffer capacity)`: shuffle shard order and records with this seed. `None` reads
    /// in card order.
    pub shuffle: Option<(u64, usize)>,
    /// Read the image bytes (false skips the column on disk: captions and labels only).
    pub with_images: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            filter: Filter::default(),
            split: Split::All,
            validation_fraction: 0.05,
            shuffle: None,
            with_images: true,
        }
    }
}

impl Dataset {
    /// Opens `dir` (the `--out` of a build) by reading its `dataset.json`.
    pub fn open(dir: &Path) -> Result<Dataset, ReaderError> {
        let card = retina_shards::read_card(dir).map_err(|source| ReaderError::Card {
            dir: dir.to_path_buf(),
            source,
        })?;
        let shards = card
            .shards
            .iter()
            .filter(|s| s.kind == ShardKind::Accepted)
            .map(|s| dir.join(&s.path))
            .collect();
        Ok(Dataset {
            dir: dir.to_path_buf(),
            card,
            shards,
        })
    }

    /// The dataset directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The card: model, prompt and schema hashes, counts, shards.
    pub fn card(&self) -> &DatasetCard {
        &self.card
    }

    /// The accepted shards, in card order.
    pub fn shard_paths(&self) -> &[PathBuf] {
        &self.shards
    }

    /// Accepted rows according to the card (before any filter or split).
    pub fn len(&self) -> u64 {
        self.card
            .shards
            .iter()
            .filter(|s| s.kind == ShardKind::Accepted)
            .map(|s| s.rows)
            .sum()
    }

    /// True when the dataset has no accepted row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Streams the records `options` select. Memory: one decoded batch plus the shuffle buffer.
    /// After the first error the stream ends.
    pub fn stream(&self, options: &ReadOptions) -> Records {
        let mut shards = self.shards.clone();
        if let Some((seed, _)) = options.shuffle {
            shuffle_in_place(&mut shards, seed);
        }
        let raw = RawRecords {
            shards: shards.into(),
            current: None,
            pending: VecDeque::new(),
            options: options.clone(),
            done: false,
        };
        let inner: Box<dyn Iterator<Item = Result<TrainingRecord, ReaderError>> + Send> =
            match options.shuffle {
                // The buffer's generator is derived from the seed, not the same stream as the
                // shard order's.
                Some((seed, capacity)) => Box::new(ShuffleBuffer::new(
                    raw,
                    capacity,
                    seed ^ 0x5bd1_e995_9e37_79b9,
                )),
                None => Box::new(raw),
            };
        Records { inner }
    }
}

/// The stream of [`Dataset::stream`].
pub struct Records {
    inner: Box<dyn Iterator<Item = Result<TrainingRecord, ReaderError>> + Send>,
}

impl Iterator for Records {
    type Item = Result<TrainingRecord, ReaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next()
    }
}

struct OpenShard {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    /// File row of the next batch's first row.
    row: usize,
}

/// Shards in order, a batch at a time, filtered and split.
struct RawRecords {
    shards: VecDeque<PathBuf>,
    current: Option<OpenShard>,
    pending: VecDeque<TrainingRecord>,
    options: ReadOptions,
    done: bool,
}

impl RawRecords {
    fn open(&self, path: &Path) -> Result<OpenShard, ReaderError> {
        let file = File::open(path).map_err(|source| ReaderError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let pq = |source| ReaderError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
        let keep: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                READ_COLUMNS.contains(&f.name().as_str())
                    && (self.options.with_images || f.name() != "image")
            })
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), keep);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(pq)?;
        Ok(OpenShard {
            path: path.to_path_buf(),
            reader,
            row: 0,
        })
    }

    /// Decodes the next batch into `pending`; `Ok(false)` when every shard is read.
    fn fill(&mut self) -> Result<bool, ReaderError> {
        loop {
            let Some(shard) = self.current.as_mut() else {
                let Some(path) = self.shards.pop_front() else {
                    return Ok(false);
                };
                self.current = Some(self.open(&path)?);
                continue;
            };
            let Some(batch) = shard.reader.next() else {
                self.current = None;
                continue;
            };
            let batch = batch.map_err(|source| ReaderError::Arrow {
                path: shard.path.clone(),
                source,
            })?;
            let records = decode_batch(&shard.path, shard.row, &batch)?;
            shard.row += batch.num_rows();
            let options = &self.options;
            self.pending.extend(records.into_iter().filter(|r| {
                options.filter.matches(r)
                    && options.split.contains(&r.id, options.validation_fraction)
            }));
            if !self.pending.is_empty() {
                return Ok(true);
            }
        }
    }
}

impl Iterator for RawRecords {
    type Item = Result<TrainingRecord, ReaderError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(record) = self.pending.pop_front() {
            return Some(Ok(record));
        }
        if self.done {
            return None;
        }
        match self.fill() {
            Ok(true) => self.pending.pop_front().map(Ok),
            Ok(false) => {
                self.done = true;
                None
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}
