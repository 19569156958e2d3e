//! One bucket over the `object_store` crate, with a blocking API.

use crate::{ObjectUrl, Redactor, Scheme, StorageError};
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tokio::io::AsyncReadExt;

/// Tunables of uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageOptions {
    /// Files at least this large are uploaded in parts (S3 allows 5 GB in one PUT; parts also
    /// let a slow link make progress without holding the whole file in memory).
    pub multipart_threshold: u64,
    /// Size of each part (S3 requires at least 5 MiB for every part but the last).
    pub part_size: usize,
    /// Parts in flight at once during a multipart upload.
    pub part_concurrency: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            multipart_threshold: 64 * 1024 * 1024,
            part_size: 16 * 1024 * 1024,
            part_concurrency: 4,
        }
    }
}

/// One object found by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Its full URL.
    pub url: ObjectUrl,
    /// Its key relative to the listed prefix (`/`-separated).
    pub relative: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What [`Storage::put_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutReport {
    /// Bytes uploaded.
    pub bytes: u64,
    /// Whether it went up in parts.
    pub multipart: bool,
}

/// One bucket (or container) of one service, with credentials from the environment.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    scheme: Scheme,
    bucket: String,
    redactor: Arc<Redactor>,
    options: StorageOptions,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds credentials: print the bucket only.
        write!(f, "Storage({}://{})", self.scheme.as_str(), self.bucket)
    }
}

/// Hosts where plain http is safe: the traffic never leaves the machine.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub(crate) fn is_loopback_endpoint(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Storage {
    /// Opens the bucket of `url` with credentials and settings from the process environment.
    pub fn open(url: &ObjectUrl) -> Result<Storage, StorageError> {
        Storage::open_with_env(url, std::env::vars())
    }

    /// Opens the bucket of `url` with credentials and settings from `env` (name, value) pairs:
    /// `AWS_*` for s3:// (`AWS_ENDPOINT_URL` for S3-compatible servers, `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, ...), `GOOGLE_*` for gs://, `AZURE_*` for az://. Nothing is sent
    /// over the network until the first operation.
    pub fn open_with_env<I>(url: &ObjectUrl, env: I) -> Result<Storage, StorageError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let redactor = Redactor::from_env(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let bucket_url = ObjectUrl::new(url.scheme(), url.bucket(), "")?;
        let config_error = |reason: Option<String>| match reason {
            Some(reason) => StorageError::Config {
                url: bucket_url.to_string(),
                reason: redactor.scrub(&reason),
            },
            None => StorageError::SchemeDisabled {
                url: bucket_url.to_string(),
                scheme: url.scheme().as_str(),
                feature: match url.scheme() {
                    Scheme::S3 => "aws",
                    Scheme::Gcs => "gcp",
                    Scheme::Azure => "azure",
                },
            },
        };
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            Scheme::S3 => build_s3(url.bucket(), &env).map_err(config_error)?,
            Scheme::Gcs => build_gcs(url.bucket(), &env).map_err(config_error)?,
            Scheme::Azure => build_azure(url.bucket(), &env).map_err(config_error)?,
        };
        Ok(Storage {
            store,
            scheme: url.scheme(),
            bucket: url.bucket().to_string(),
            redactor: Arc::new(redactor),
            options: StorageOptions::default(),
        })
    }

    /// Wraps an already built store (tests use `object_store::memory::InMemory`) as the bucket of
    /// `url`.
    pub fn with_store(store: Arc<dyn ObjectStore>, url: &ObjectUrl) -> Storage {
        Storage {
            store,
            scheme: url.scheme(),
            bucket: url.bucket().to_string(),
            redactor: Arc::new(Redactor::default()),
            options: StorageOptions::default(),
        }
    }

    /// The same bucket with other upload tunables.
    pub fn with_options(mut self, options: StorageOptions) -> Storage {
        self.options = options;
        self
    }

    /// Whether `url` is in this storage's bucket.
    pub fn holds(&self, url: &ObjectUrl) -> bool {
        url.scheme() == self.scheme && url.bucket() == self.bucket
    }

    fn key(&self, url: &ObjectUrl) -> Result<StorePath, StorageError> {
        if !self.holds(url) {
            return Err(StorageError::invalid(
                &url.to_string(),
                format!(
                    "not in the bucket {}://{} this client was opened for",
                    self.scheme.as_str(),
                    self.bucket
                ),
            ));
        }
        StorePath::parse(url.key())
            .map_err(|err| StorageError::invalid(&url.to_string(), err.to_string()))
    }

    fn error(
        &self,
        operation: &'static str,
        url: &ObjectUrl,
        err: object_store::Error,
    ) -> StorageError {
        if let object_store::Error::NotFound { .. } = err {
            return StorageError::NotFound {
                url: url.to_string(),
            };
        }
        StorageError::Operation {
            operation,
            url: url.to_string(),
            reason: self.redactor.scrub(&err.to_string()),
        }
    }

    /// The whole object, refused (before its body is read) when it is over `max_bytes`.
    pub fn get(&self, url: &ObjectUrl, max_bytes: u64) -> Result<Vec<u8>, StorageError> {
        let key = self.key(url)?;
        block_on(async {
            let result = self
                .store
                .get_opts(&key, GetOptions::default())
                .await
                .map_err(|err| self.error("get", url, err))?;
            if result.meta.size > max_bytes {
                return Err(StorageError::TooLarge {
                    url: url.to_string(),
                    size: result.meta.size,
                    limit: max_bytes,
                });
            }
            let bytes = result
                .bytes()
                .await
                .map_err(|err| self.error("get", url, err))?;
            Ok(Vec::from(bytes))
        })
    }

    /// Downloads the object to `dest` (written to a temporary name, then renamed, so a reader
    /// never sees half a file). Returns its size.
    pub fn get_to_file(
        &self,
        url: &ObjectUrl,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<u64, StorageError> {
        let bytes = self.get(url, max_bytes)?;
        let local_error = |operation, err: std::io::Error| StorageError::Operation {
            operation,
            url: dest.display().to_string(),
            reason: err.to_string(),
        };
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|err| local_error("write", err))?;
        }
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(".part");
        std::fs::write(&tmp, &bytes).map_err(|err| local_error("write", err))?;
        std::fs::rename(&tmp, dest).map_err(|err| local_error("write", err))?;
        Ok(bytes.len() as u64)
    }

    /// Every object below `prefix` (recursively), in key order.
    pub fn list(&self, prefix: &ObjectUrl) -> Result<Vec<ObjectEntry>, StorageError> {
        let key = self.key(prefix)?;
        let key = (!prefix.key().is_empty()).then_some(key);
        block_on(async {
            let metas: Vec<_> = self
                .store
                .list(key.as_ref())
                .try_collect()
                .await
                .map_err(|err| self.error("list", prefix, err))?;
            let mut entries = Vec::with_capacity(metas.len());
            for meta in metas {
                let url = ObjectUrl::new(self.scheme, &self.bucket, meta.location.as_ref())?;
                let Some(relative) = url.strip_prefix(prefix) else {
                    continue;
                };
                let relative = relative.to_string();
                entries.push(ObjectEntry {
                    url,
                    relative,
                    size: meta.size,
                });
            }
            entries.sort_by(|a, b| a.relative.cmp(&b.relative));
            Ok(entries)
        })
    }

    /// The object's size, or `None` when there is no object at `url`.
    pub fn exists(&self, url: &ObjectUrl) -> Result<Option<u64>, StorageError> {
        let key = self.key(url)?;
        block_on(async {
            match self.store.head(&key).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(err) => Err(self.error("head", url, err)),
            }
        })
    }

    /// Writes `bytes` as the object at `url` in one request (replacing any object there).
    /// The object exists only once the call returns `Ok`.
    pub fn put(&self, url: &ObjectUrl, bytes: Vec<u8>) -> Result<(), StorageError> {
        let key = self.key(url)?;
        block_on(async {
            self.store
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(|err| self.error("put", url, err))?;
            Ok(())
        })
    }

    /// Uploads a local file as the object at `url`: in one request below the multipart
    /// threshold, in parts above it (an interrupted multipart upload is aborted and leaves no
    /// object). Either way the object appears whole or not at all, and only once this returns
    /// `Ok`.
    pub fn put_file(&self, path: &Path, url: &ObjectUrl) -> Result<PutReport, StorageError> {
        let key = self.key(url)?;
        let local_error = |err: std::io::Error| StorageError::Operation {
            operation: "read",
            url: path.display().to_string(),
            reason: err.to_string(),
        };
        let size = std::fs::metadata(path).map_err(local_error)?.len();
        if size < self.options.multipart_threshold {
            let bytes = std::fs::read(path).map_err(local_error)?;
            self.put(url, bytes)?;
            return Ok(PutReport {
                bytes: size,
                multipart: false,
            });
        }
        let options = self.options;
        block_on(async {
            let upload = self
                .store
                .put_multipart(&key)
                .await
                .map_err(|err| self.error("put", url, err))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, options.part_size);
            let mut file = tokio::fs::File::open(path).await.map_err(local_error)?;
            let mut buffer = vec![0u8; options.part_size.clamp(64 * 1024, 8 * 1024 * 1024)];
            let sent: Result<(), StorageError> = async {
                loop {
                    let n = file.read(&mut buffer).await.map_err(local_error)?;
                    if n == 0 {
                        break;
                    }
                    writer
                        .wait_for_capacity(options.part_concurrency.max(1))
                        .await
                        .map_err(|err| self.error("put", url, err))?;
                    writer.write(&buffer[..n]);
                }
                Ok(())
            }
            .await;
            match sent {
                Ok(()) => {
                    writer
                        .finish()
                        .await
                        .map_err(|err| self.error("put", url, err))?;
                    Ok(PutReport {
                        bytes: size,
                        multipart: true,
                    })
                }
                Err(err) => {
                    if let Err(abort) = writer.abort().await {
                        tracing::warn!(url = %url, "aborting the multipart upload failed: {}", self.redactor.scrub(&abort.to_string()));
                    }
                    Err(err)
                }
            }
        })
    }
}

/// Runs `future` to completion from blocking code, on this crate's runtime.
fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("storage-io")
            .enable_all()
            .build()
            // Only fails when the OS refuses threads or file descriptors: nothing can go on.
            .expect("cannot start the storage runtime")
    });
    match tokio::runtime::Handle::try_current() {
        // Inside a runtime, block_on would panic: give this worker thread up for the wait.
        Ok(_) => tokio::task::block_in_place(|| runtime.block_on(future)),
        Err(_) => runtime.block_on(future),
    }
}

/// A store, or why it could not be built: `Err(None)` when the scheme is not compiled in.
type Built = Result<Arc<dyn ObjectStore>, Option<String>>;

#[cfg(feature = "aws")]
fn build_s3(bucket: &str, env: &[(String, String)]) -> Built {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let mut builder = AmazonS3Builder::new();
    let mut endpoint = None;
    let mut region = false;
    for (key, value) in env {
        if !key.starts_with("AWS_") {
            continue;
        }
        if let Ok(config) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            if matches!(
                config,
                AmazonS3ConfigKey::Endpoint | AmazonS3ConfigKey::S3Endpoint
            ) {
                endpoint = Some(value.clone());
            }
            region |= matches!(
                config,
                AmazonS3ConfigKey::Region | AmazonS3ConfigKey::DefaultRegion
            );
            builder = builder.with_config(config, value);
        }
    }
    if !region {
        builder = builder.with_region("us-east-1");
    }
    if let Some(endpoint) = endpoint
        && is_loopback_endpoint(&endpoint)
    {
        builder = builder.with_allow_http(true);
    }
    builder
        .with_bucket_name(bucket)
        .build()
        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        .map_err(|e| Some(e.to_string()))
}

#[cfg(not(feature = "aws"))]
fn build_s3(_bucket: &str, _env: &[(String, String)]) -> Built {
    Err(None)
}

#[cfg(feature = "gcp")]
fn build_gcs(bucket: &str, env: &[(String, String)]) -> Built {
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    let mut builder = GoogleCloudStorageBuilder::new();
    for (key, value) in env {
        if key.starts_with("GOOGLE_")
            && let Ok(config) = key.to_ascii_lowercase().parse::<GoogleConfigKey>()
        {
            builder = builder.with_config(config, value);
        }
    }
    builder
        .with_bucket_name(bucket)
        .build()
        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        .map_err(|e| Some(e.to_string()))
}

#[cfg(not(feature = "gcp"))]
fn build_gcs(_bucket: &str, _env: &[(String, String)]) -> Built {
    Err(None)
}

#[cfg(feature = "azure")]
fn build_azure(container: &str, env: &[(String, String)]) -> Built {
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    let mut builder = MicrosoftAzureBuilder::new();
    for (key, value) in env {
        if key.starts_with("AZURE_")
            && let Ok(config) = key.to_ascii_lowercase().parse::<AzureConfigKey>()
        {
            builder = builder.with_config(config, value);
        }
    }
    builder
        .with_container_name(container)
        .build()
        .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
        .map_err(|e| Some(e.to_string()))
}

#[cfg(not(feature = "azure"))]
fn build_azure(_container: &str, _env: &[(String, String)]) -> Built {
    Err(None)
}
