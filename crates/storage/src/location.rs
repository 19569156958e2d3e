//! One location type for local paths and object-storage URLs.

use crate::StorageError;
use std::fmt;
use std::path::{Path, PathBuf};

/// An object-storage service, by URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `s3://bucket/key`: Amazon S3 and S3-compatible servers (MinIO, Ceph, moto, ...).
    S3,
    /// `gs://bucket/key`: Google Cloud Storage.
    Gcs,
    /// `az://container/key`: Azure Blob Storage (account from `AZURE_STORAGE_ACCOUNT_NAME`).
    Azure,
}

impl Scheme {
    /// The URL scheme without `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
        }
    }

    fn parse(scheme: &str) -> Option<Scheme> {
        match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Some(Scheme::S3),
            "gs" | "gcs" => Some(Scheme::Gcs),
            "az" | "azure" | "abfs" => Some(Scheme::Azure),
            _ => None,
        }
    }
}

/// An object (or a prefix of objects) in a bucket: `scheme://bucket/key`.
///
/// The key has no leading or trailing `/` and no empty, `.` or `..` segments; the empty key is
/// the bucket itself. URLs never carry credentials (those come from the environment), so a
/// location can be printed and logged as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectUrl {
    scheme: Scheme,
    bucket: String,
    key: String,
}

impl ObjectUrl {
    /// Builds a URL from parts, checking them as [`Location::parse`] does.
    pub fn new(scheme: Scheme, bucket: &str, key: &str) -> Result<ObjectUrl, StorageError> {
        let input = format!("{}://{bucket}/{key}", scheme.as_str());
        check_bucket(bucket).map_err(|reason| StorageError::invalid(&input, reason))?;
        let key = normalise_key(key).map_err(|reason| StorageError::invalid(&input, reason))?;
        Ok(ObjectUrl {
            scheme,
            bucket: bucket.to_string(),
            key,
        })
    }

    /// The service.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The bucket (S3, GCS) or container (Azure).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key inside the bucket, `/`-separated, without a leading `/` (empty for the bucket).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object at `relative` below this prefix. `relative` is `/`-separated (a `\` is taken
    /// as `/`); `.`/`..` segments and empty segments are refused so a joined key never escapes
    /// the prefix.
    pub fn join(&self, relative: &str) -> Result<ObjectUrl, StorageError> {
        let relative = relative.replace('\\', "/");
        let relative = relative.trim_start_matches('/');
        let key = if self.key.is_empty() {
            relative.to_string()
        } else if relative.is_empty() {
            self.key.clone()
        } else {
            format!("{}/{relative}", self.key)
        };
        ObjectUrl::new(self.scheme, &self.bucket, &key)
    }

    /// The key of `self` relative to `prefix`, if `self` lies below it.
    pub fn strip_prefix(&self, prefix: &ObjectUrl) -> Option<&str> {
        if self.scheme != prefix.scheme || self.bucket != prefix.bucket {
            return None;
        }
        if prefix.key.is_empty() {
            return Some(&self.key);
        }
        self.key
            .strip_prefix(prefix.key.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
    }
}

impl fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}://{}", self.scheme.as_str(), self.bucket)
        } else {
            write!(f, "{}://{}/{}", self.scheme.as_str(), self.bucket, self.key)
        }
    }
}

/// A local path or an object-storage URL: what `--out`, `--upload-to`, a manifest's `root` and an
/// image path may be.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A path on the local file system (`file://` URLs become this too).
    Local(PathBuf),
    /// An object or prefix in a bucket.
    Object(ObjectUrl),
}

impl Location {
    /// Parses `s3://`, `gs://`, `az://` URLs (also `s3a`, `gcs`, `azure`, `abfs`), `file://` URLs
    /// and plain paths. Refused, naming the input: unknown schemes, an empty bucket, user
    /// names or passwords in the URL, query strings and fragments (credentials belong in the
    /// environment, never in a URL that ends up in logs and dataset cards), and `.`/`..` or empty
    /// key segments.
    pub fn parse(input: &str) -> Result<Location, StorageError> {
        let Some((scheme, rest)) = split_scheme(input) else {
            return Ok(Location::Local(PathBuf::from(input)));
        };
        if scheme.eq_ignore_ascii_case("file") {
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        let scheme = Scheme::parse(scheme).ok_or_else(|| {
            StorageError::invalid(
                input,
                format!("unknown scheme `{scheme}://` (use s3://, gs://, az:// or a local path)"),
            )
        })?;
        // The refused part may be a token or a password: the message shows `***` in its place.
        if let Some(cut) = rest.find(['?', '#']) {
            let shown = format!("{}://{}?***", scheme.as_str(), &rest[..cut]);
            return Err(StorageError::invalid(
                &shown,
                "query strings and fragments are not allowed (credentials and tokens go in the environment)",
            ));
        }
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some((_, host)) = bucket.rsplit_once('@') {
            let shown = format!("{}://***@{host}/{key}", scheme.as_str());
            return Err(StorageError::invalid(
                &shown,
                "user names or passwords in the URL are not allowed (use the environment)",
            ));
        }
        let key = key.trim_end_matches('/');
        Ok(Location::Object(ObjectUrl::new(scheme, bucket, key)?))
    }

    /// True when the text looks like an object-storage URL (has a `scheme://` other than
    /// `file://`). Cheap: the local fast paths test this before anything else.
    pub fn is_object_url(input: &str) -> bool {
        split_scheme(input).is_some_and(|(scheme, _)| !scheme.eq_ignore_ascii_case("file"))
    }

    /// The same for a path (an image path in a record holds the URL as its text).
    pub fn path_is_object_url(path: &Path) -> bool {
        path.to_str().is_some_and(Location::is_object_url)
    }

    /// `relative` below this location.
    pub fn join(&self, relative: &str) -> Result<Location, StorageError> {
        Ok(match self {
            Location::Local(path) => Location::Local(path.join(relative)),
            Location::Object(url) => Location::Object(url.join(relative)?),
        })
    }

    /// The object URL, if this is one.
    pub fn as_object(&self) -> Option<&ObjectUrl> {
        match self {
            Location::Object(url) => Some(url),
            Location::Local(_) => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Object(url) => url.fmt(f),
        }
    }
}

/// `scheme` and the rest of `scheme://rest`, when the scheme is a plausible URL scheme (ASCII
/// letters, digits, `+-.`, at least two characters so `C://` style drive paths stay paths).
fn split_scheme(input: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = input.split_once("://")?;
    let plausible = scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    plausible.then_some((scheme, rest))
}

fn check_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("the bucket name is empty".into());
    }
    if bucket.len() > 255 {
        return Err("the bucket name is longer than 255 characters".into());
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!("the bucket name contains `{c}`"));
    }
    Ok(())
}

fn normalise_key(key: &str) -> Result<String, String> {
    let key = key.trim_matches('/');
    if key.is_empty() {
        return Ok(String::new());
    }
    for segment in key.split('/') {
        match segment {
            "" => return Err(format!("the key `{key}` has an empty segment (`//`)")),
            "." | ".." => return Err(format!("the key `{key}` has a `{segment}` segment")),
            _ => {}
        }
        if segment.chars().any(char::is_control) {
            return Err(format!("the key `{key}` contains a control character"));
        }
    }
    Ok(key.to_string())
}
