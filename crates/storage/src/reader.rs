//! Reading a path or a URL, for stages that take either.

use crate::{Location, ObjectUrl, Storage, StorageError};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// Reads whole files from local paths or object-storage URLs, opening each bucket once.
///
/// A local path goes straight to `std::fs::read` (no parsing, no lock), so local builds are as
/// fast as without this type. A URL is read through the bucket's [`Storage`], opened on first
/// use with credentials from the environment, and refused above the size limit before its body
/// is downloaded.
#[derive(Debug)]
pub struct Reader {
    max_bytes: u64,
    stores: Mutex<HashMap<(crate::Scheme, String), Storage>>,
}

impl Reader {
    /// A reader refusing remote objects larger than `max_bytes`.
    pub fn new(max_bytes: u64) -> Reader {
        Reader {
            max_bytes,
            stores: Mutex::default(),
        }
    }

    /// Uses `storage` for its bucket instead of opening one from the environment (tests, or a
    /// caller that configured the client itself).
    pub fn insert(&self, storage: Storage, url: &ObjectUrl) {
        let key = (url.scheme(), url.bucket().to_string());
        if let Ok(mut stores) = self.stores.lock() {
            stores.insert(key, storage);
        }
    }

    /// The bytes at `path`: a local file, or (when the path's text is a URL) an object.
    /// Local errors are returned as `std::io::Error`s so callers keep their own wording for them.
    pub fn read(&self, path: &Path) -> Result<Vec<u8>, ReadError> {
        if !Location::path_is_object_url(path) {
            return std::fs::read(path).map_err(ReadError::Local);
        }
        let text = path.to_str().unwrap_or_default();
        let url = match Location::parse(text).map_err(ReadError::Remote)? {
            Location::Object(url) => url,
            Location::Local(local) => return std::fs::read(local).map_err(ReadError::Local),
        };
        let storage = self.storage(&url).map_err(ReadError::Remote)?;
        storage.get(&url, self.max_bytes).map_err(ReadError::Remote)
    }

    /// The bucket's client, opened on first use.
    pub fn storage(&self, url: &ObjectUrl) -> Result<Storage, StorageError> {
        let key = (url.scheme(), url.bucket().to_string());
        if let Ok(stores) = self.stores.lock()
            && let Some(storage) = stores.get(&key)
        {
            return Ok(storage.clone());
        }
        // Opened outside the lock: building a client reads the environment and may read files.
        let storage = Storage::open(url)?;
        if let Ok(mut stores) = self.stores.lock() {
            return Ok(stores.entry(key).or_insert(storage).clone());
        }
        Ok(storage)
    }
}

/// Why [`Reader::read`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading a local file failed.
    #[error(transparent)]
    Local(std::io::Error),
    /// Reading an object failed (the error names the URL).
    #[error(transparent)]
    Remote(StorageError),
}
