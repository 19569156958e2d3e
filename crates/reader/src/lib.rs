//! Reads a built caption-image dataset into training code, with bounded memory.
//!
//! A dataset directory is what `build-dataset build --out DIR` wrote: `dataset.json` (the card)
//! and `shards/*.parquet`. [`Dataset::open`] reads the card; [`Dataset::stream`] yields
//! [`TrainingRecord`]s shard by shard, decoding at most one batch of [`BATCH_ROWS`] rows (never
//! more than one Parquet row group) at a time, so memory is one batch plus the shuffle buffer
//! whatever the dataset's size. Per stream you choose:
//!
//! - a [`Filter`] on dataset, labels (DR grade, glaucoma, AMD, disease codes) and quality;
//! - a [`Split`]: a stable train/validation split by a hash of the item id ([`split_of`]), the
//!   same on every machine and in every epoch, unchanged when shards are added or reordered;
//! - a seeded [`ShuffleBuffer`] (and shard order shuffled with the same seed);
//! - whether to read image bytes at all (skipping the column on disk when not).
//!
//! Images decode to RGB with [`TrainingRecord::decode_rgb`].
//!
//! The building blocks work on their own; a shuffle buffer over any iterator:
//!
//! ```
//! use retina_reader::{ShuffleBuffer, Split, split_of};
//!
//! let shuffled: Vec<u32> = ShuffleBuffer::new(0..100, 16, 42).collect();
//! let mut sorted = shuffled.clone();
//! sorted.sort();
//! assert_eq!(sorted, (0..100).collect::<Vec<_>>(), "every item exactly once");
//! assert_ne!(shuffled, sorted, "in another order");
//! // Same seed, same order: an epoch can be replayed.
//! assert_eq!(shuffled, ShuffleBuffer::new(0..100, 16, 42).collect::<Vec<_>>());
//!
//! // The split depends on the id alone.
//! let id = "3f2a9c0e5b7d41a6b8c9d0e1f2a3b4c5";
//! assert_eq!(split_of(id, 0.1), split_of(id, 0.1));
//! assert!(matches!(split_of(id, 0.0), Split::Train));
//! assert!(matches!(split_of(id, 1.0), Split::Validation));
//! ```
//!
//! Streaming a dataset (see `examples/train_loop.rs` for a whole loop):
//!
//! ```no_run
//! use retina_reader::{Dataset, Filter, ReadOptions, Split};
//!
//! let dataset = Dataset::open("out/demo".as_ref())?;
//! let options = ReadOptions {
//!     filter: Filter::default().datasets(["eyepacs"]).qualities(["good", "usable"]),
//!     split: Split::Train,
//!     validation_fraction: 0.05,
//!     shuffle: Some((42, 1024)),
//!     ..ReadOptions::default()
//! };
//! for record in dataset.stream(&options) {
//!     let record = record?;
//!     let rgb = record.decode_rgb()?;
//!     println!("{} {}x{} {}", record.id, rgb.width(), rgb.height(), record.caption);
//! }
//! # Ok::<(), retina_reader::ReaderError>(())
//! ```

#![warn(missing_docs)]

use std::path::PathBuf;

mod columns;
pub mod fixture;
mod select;
mod shuffle;
mod stream;

pub use columns::{RecordLabels, TrainingRecord};
pub use select::{Filter, Split, split_of};
pub use shuffle::ShuffleBuffer;
pub use stream::{BATCH_ROWS, Dataset, ReadOptions, Records};

#[cfg(test)]
mod tests;

/// Everything that can go wrong reading a dataset; every variant names the file or item.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// The card (`dataset.json`) could not be read.
    #[error("{}: cannot read the dataset card: {source}", dir.display())]
    Card {
        /// The dataset directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: retina_shards::ShardError,
    },
    /// A shard could not be opened.
    #[error("{}: {source}", path.display())]
    Io {
        /// The shard concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet library rejected a shard.
    #[error("{}: parquet: {source}", path.display())]
    Parquet {
        /// The shard concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A batch of a shard could not be decoded.
    #[error("{}: arrow: {source}", path.display())]
    Arrow {
        /// The shard concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// A shard lacks a column or holds a value training code cannot use.
    #[error("{}: row {row}: {reason}", path.display())]
    BadShard {
        /// The shard concerned.
        path: PathBuf,
        /// Row number in the file (0-based).
        row: usize,
        /// What is wrong.
        reason: String,
    },
    /// An item's image bytes do not decode.
    #[error("item {id}: image does not decode: {source}")]
    Image {
        /// The item's id.
        id: String,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
}
