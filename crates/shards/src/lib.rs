//! Sharded Parquet output of the caption-dataset builder, compatible with Hugging Face `datasets`.
//!
//! This crate owns everything on disk under a dataset directory except the journal and cache:
//! - `shards/<prefix>-NNNNN.parquet`: accepted pairs ([`DatasetWriter::write_accepted`]), with the
//!   image as a `datasets` Image column and a `huggingface` features entry in the footer;
//! - `rejects/<prefix>-NNNNN.parquet`: rejected and failed items with their reasons;
//! - `dataset.json`: the dataset card ([`DatasetCard`], [`write_card`], [`read_card`]);
//! - checking a finished dataset ([`verify_dataset`]) and reading shards back for training
//!   ([`read_accepted`], [`read_rejects`]).
//!
//! Shards are crash-safe: each is written to `<name>.parquet.tmp`, fsync'd, renamed and the
//! directory fsync'd before it is reported as a [`CommittedShard`]; only then may the caller mark
//! its items done. Stray temporary files are removed on the next [`DatasetWriter::open`].

#![warn(missing_docs)]

use std::path::PathBuf;

mod card;
mod reader;
mod schema;
mod writer;

pub use card::{
    CARD_FILE, CardCost, CardCounts, CardShard, DatasetCard, MergeError, VerifyReport, merge_cards,
    read_card, verify_dataset, write_card,
};
pub use reader::{StoredReject, StoredRow, read_accepted, read_rejects};
pub use schema::hf_features;
pub use writer::{AcceptedRow, CommittedShard, DatasetWriter, RejectedRow, ShardConfig, ShardKind};

/// Everything that can go wrong writing, reading or verifying a dataset.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        #[source]
        /// The underlying error.
        source: std::io::Error,
    },
    /// The Parquet library rejected a file or a write.
    #[error("{}: parquet: {source}", path.display())]
    Parquet {
        /// The shard concerned.
        path: PathBuf,
        #[source]
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// Arrow arrays could not be assembled into a batch.
    #[error("{}: arrow: {source}", path.display())]
    Arrow {
        /// The shard or directory concerned.
        path: PathBuf,
        #[source]
        /// The underlying error.
        source: arrow::error::ArrowError,
    },
    /// A JSON file (the card) could not be read or written.
    #[error("{}: json: {source}", path.display())]
    Json {
        /// The JSON file concerned.
        path: PathBuf,
        #[source]
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A row handed to the writer cannot be stored as given.
    #[error("item {id}: {reason}")]
    InvalidRow {
        /// The item's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A shard read back does not have the expected columns or values.
    #[error("{}: row {row}: {reason}", path.display())]
    BadShard {
        /// The shard concerned.
        path: PathBuf,
        /// Row number in the file (0-based).
        row: usize,
        /// What is wrong.
        reason: String,
    },
    /// The writer configuration is unusable.
    #[error("shard config: {0}")]
    Config(String),
}

#[cfg(test)]
pub(crate) mod fixtures;
