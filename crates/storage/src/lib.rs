//! Local paths and object storage (`s3://`, `gs://`, `az://`) behind one [`Location`] type.
//!
//! The pipeline reads label files and images, and publishes shards, through this crate:
//! - [`Location::parse`] turns `s3://bucket/prefix`, `gs://...`, `az://...`, `file://...` and plain
//!   paths into one type; URLs never carry credentials.
//! - [`Storage`] is one bucket over the `object_store` crate: [`Storage::get`] (whole object,
//!   refused above a size limit before its body is read), [`Storage::list`],
//!   [`Storage::put`]/[`Storage::put_file`] (multipart above a threshold), [`Storage::exists`].
//!   Credentials come from the usual environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`);
//!   `AWS_ENDPOINT_URL` points at an S3-compatible server, and plain `http://` is allowed for
//!   loopback endpoints without `AWS_ALLOW_HTTP`.
//! - [`Reader`] reads a path or URL for the image stage: local paths go straight to
//!   `std::fs::read`, URLs to the bucket's [`Storage`] (opened once per bucket).
//!
//! Errors ([`StorageError`]) name the URL and the reason. No secret reaches an error or a log
//! line: URLs with user info or query strings are refused, and every message from the storage
//! client is scrubbed of the values of secret-looking environment variables.
//!
//! The API is blocking (the image stage and the CLI are threads, not tasks); it runs on a small
//! runtime of its own. From inside a multi-thread tokio runtime it uses `block_in_place`.
//!
//! ```
//! use retina_storage::Location;
//! let out = Location::parse("s3://datasets/fundus/v1")?;
//! let shard = out.join("shards/part-00000.parquet")?;
//! assert_eq!(shard.to_string(), "s3://datasets/fundus/v1/shards/part-00000.parquet");
//! assert!(matches!(Location::parse("out/demo")?, Location::Local(_)));
//! # Ok::<(), retina_storage::StorageError>(())
//! ```

#![deny(missing_docs)]

mod location;
mod reader;
mod redact;
mod store;

pub use location::{Location, ObjectUrl, Scheme};
pub use reader::{ReadError, Reader};
pub use redact::Redactor;
pub use store::{ObjectEntry, PutReport, Storage, StorageOptions};

/// What went wrong, naming the location and the reason. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The text is not a usable location.
    #[error("`{input}` is not a usable storage location: {reason}")]
    InvalidLocation {
        /// The text given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// The scheme's support was left out of this build.
    #[error(
        "{url}: {scheme}:// support is not compiled in (build retina-storage with its `{feature}` feature)"
    )]
    SchemeDisabled {
        /// The URL.
        url: String,
        /// `s3`, `gs` or `az`.
        scheme: &'static str,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// The client could not be configured from the environment.
    #[error("cannot set up access to {url}: {reason}")]
    Config {
        /// The URL (bucket) being opened.
        url: String,
        /// Why (scrubbed of secrets).
        reason: String,
    },
    /// No object at that URL (or no local file at that path).
    #[error("{url}: not found")]
    NotFound {
        /// The URL or path.
        url: String,
    },
    /// The object is larger than the caller allows.
    #[error("{url}: {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The URL or path.
        url: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An operation failed.
    #[error("{operation} {url} failed: {reason}")]
    Operation {
        /// `get`, `list`, `put`, `head`, `read`, `write`.
        operation: &'static str,
        /// The URL or path.
        url: String,
        /// Why (scrubbed of secrets).
        reason: String,
    },
}

impl StorageError {
    pub(crate) fn invalid(input: &str, reason: impl Into<String>) -> StorageError {
        StorageError::InvalidLocation {
            input: input.to_string(),
            reason: reason.into(),
        }
    }

    /// True for [`StorageError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

#[cfg(test)]
mod tests;
