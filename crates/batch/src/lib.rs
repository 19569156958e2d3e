//! Batch mode: the OpenAI Batch API (and vLLM's `run-batch`, which reads and writes the same
//! line formats) for build-dataset.
//!
//! - [`InputWriter`] writes JSONL input files (`custom_id`, `method`, `url`, `body`), starting a
//!   new file before one would exceed [`Limits`] (50,000 requests and 200 MB by default).
//! - [`BatchState`] is the local record of every file, its uploaded file id, batch id and status,
//!   saved atomically after each step so submit, poll, download and join resume after a restart.
//! - [`BatchClient`] speaks `POST /v1/files`, `POST /v1/batches`, `GET /v1/batches[/{id}]` and
//!   `GET /v1/files/{id}/content`.
//! - [`Joiner`] reads output and error files (OpenAI's or vLLM's) and joins them on `custom_id`,
//!   reporting unknown, duplicate and missing ids and unreadable lines instead of panicking.

#![warn(missing_docs)]

mod client;
mod input;
mod results;
mod state;

pub use client::{BatchClient, BatchInfo, RequestCounts};
pub use input::{InputFile, InputWriter, Limits};
pub use results::{Joined, Joiner, LineOutcome, LineProblem, parse_line};
pub use state::{BatchState, FileEntry, STATE_FILE};

use std::path::PathBuf;

/// The URL every request line targets (the online client's route).
pub const CHAT_COMPLETIONS_URL: &str = "/v1/chat/completions";

/// Everything that can go wrong in batch mode; each names the file, line, item or batch.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Reading or writing a local file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// One request alone is larger than the per-file byte limit, so no file can hold it.
    #[error(
        "request {custom_id} is {bytes} bytes as a batch line, more than the {limit}-byte file limit"
    )]
    RequestTooLarge {
        /// The item.
        custom_id: String,
        /// Its line's size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The same `custom_id` was written twice into the files of one prepare.
    #[error("custom_id {0} was written twice; each item may be asked once per batch")]
    DuplicateId(String),
    /// The state file exists but cannot be read as one.
    #[error("batch state {}: {reason}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// Why it is unreadable.
        reason: String,
    },
    /// The HTTP exchange failed (connection, timeout) before an answer.
    #[error("{what}: request failed: {message}")]
    Http {
        /// The call, e.g. `POST /v1/files (batch-0001.jsonl)`.
        what: String,
        /// The error chain.
        message: String,
    },
    /// The server answered with an error status.
    #[error("{what}: HTTP {status}: {message}")]
    Status {
        /// The call.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server answered 2xx with a body that is not what the API describes.
    #[error("{what}: unexpected answer: {reason}")]
    Answer {
        /// The call.
        what: String,
        /// What was wrong.
        reason: String,
    },
}

impl BatchError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BatchError {
        let path = path.into();
        move |source| BatchError::Io { path, source }
    }
}
