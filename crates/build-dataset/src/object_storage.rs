//! Object storage at the edges of a build: manifests whose root is a bucket URL (label files
//! fetched to a local cache, images read by URL in the image stage), publishing a built dataset
//! to `--upload-to URL`, and verifying a published one. The storage logic is in retina-storage.

use anyhow::{Context, Result, bail};
use retina_storage::{Location, ObjectUrl, Storage};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Label and feature files larger than this are refused (the biggest public label files are a
/// few megabytes; a 100,000-row CSV is about 10 MB).
const MAX_LABEL_FILE_BYTES: u64 = 2 << 30;

/// Loads a manifest; when its root is an object-storage URL, fetches its label files into the
/// local cache (`<cache>/inputs/<hash of the URL>/`, refreshed on every run), lists the bucket
/// prefix once, and points the manifest's images at the bucket.
pub fn load_manifest(path: &Path) -> Result<retina_manifest::Manifest> {
    let mut manifest = retina_manifest::Manifest::from_path(path)
        .with_context(|| format!("cannot load data manifest {}", path.display()))?;
    localize(&mut manifest).with_context(|| {
        format!(
            "cannot read the object-storage root of data manifest {}",
            path.display()
        )
    })?;
    Ok(manifest)
}

/// See [`load_manifest`]; a manifest with a local root is left as it is.
pub fn localize(manifest: &mut retina_manifest::Manifest) -> Result<()> {
    let Some(root) = manifest.root_url().map(str::to_string) else {
        return Ok(());
    };
    let Location::Object(url) = Location::parse(&root)? else {
        return Ok(());
    };
    let storage = Storage::open(&url)?;
    let cache = crate::demo::cache_root()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
        .join("inputs")
        .join(&retina_records::ItemId::from_source("inputs", &root).as_str()[..16]);
    for file in manifest.root_files() {
        let bytes =
            storage.get_to_file(&url.join(&file)?, &cache.join(&file), MAX_LABEL_FILE_BYTES)?;
        tracing::info!(
            dataset = manifest.name(),
            "fetched {}/{file} ({bytes} bytes)",
            url
        );
    }
    // One listing answers "does this row's image exist" for every row, instead of a request each.
    let keys: HashSet<String> = storage
        .list(&url)?
        .into_iter()
        .map(|entry| entry.relative)
        .collect();
    tracing::info!(
        dataset = manifest.name(),
        "{} objects under {url}; images are read from there",
        keys.len()
    );
    manifest.set_root(cache);
    manifest.set_remote_images(url.to_string(), keys);
    Ok(())
}

/// Parses `--upload-to`: it must be an object-storage URL.
pub fn upload_target(text: &str) -> Result<ObjectUrl> {
    match Location::parse(text)? {
        Location::Object(url) => Ok(url),
        Location::Local(_) => bail!(
            "--upload-to {text}: expected an s3://, gs:// or az:// URL (a local copy is --out itself)"
        ),
    }
}

/// What [`upload`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct UploadSummary {
    pub uploaded: usize,
    pub already_there: usize,
    pub bytes: u64,
}

/// Publishes the dataset in `out` to `dest`: every shard its `dataset.json` lists that is not
/// already there with the same size, then the QA report, then `dataset.json` last. A shard is
/// uploaded whole or not at all, and the card that names it goes up only after it, so a reader
/// of `dest` never sees a card listing a missing shard. Shards never change once committed
/// (names are unique), so "there with the same size" means done; an interrupted upload is
/// simply redone by the next run (or the next `build` with the same `--upload-to`).
pub fn upload(out: &Path, dest: &ObjectUrl) -> Result<UploadSummary> {
    let storage = Storage::open(dest)?;
    let card = retina_shards::read_card(out)
        .with_context(|| format!("cannot read {}/dataset.json to upload", out.display()))?;
    let summary = upload_shards(
        &storage,
        out,
        dest,
        card.shards.iter().map(|s| (s.path.as_str(), s.bytes)),
    )?;
    for name in ["qa/report.html", "qa/report.json", "qa/report.md"] {
        let path = out.join(name);
        if path.is_file() {
            storage.put_file(&path, &dest.join(name)?)?;
        }
    }
    let card_path = out.join(retina_shards::CARD_FILE);
    storage.put_file(&card_path, &dest.join(retina_shards::CARD_FILE)?)?;
    Ok(summary)
}

/// Uploads every `(relative path, size)` shard not already at `dest` with that size.
fn upload_shards<'a>(
    storage: &Storage,
    out: &Path,
    dest: &ObjectUrl,
    shards: impl Iterator<Item = (&'a str, u64)>,
) -> Result<UploadSummary> {
    let mut summary = UploadSummary::default();
    for (path, bytes) in shards {
        let target = dest.join(path)?;
        if storage.exists(&target)? == Some(bytes) {
            summary.already_there += 1;
            continue;
        }
        let report = storage.put_file(&out.join(path), &target)?;
        summary.uploaded += 1;
        summary.bytes += report.bytes;
        tracing::info!(shard = %path, bytes = report.bytes, "uploaded to {target}");
    }
    Ok(summary)
}

/// Uploads shards while a run goes on, so a run of days keeps its bucket nearly current and
/// the final [`upload`] has little left to do. Every pass reads the shards the journal has
/// committed (a committed shard is complete and durable on disk, and never changes) from a
/// read-only journal handle, which never blocks the run's writer. The card is not touched:
/// the bucket's `dataset.json` stays the previous run's until [`upload`] at the end.
pub struct BackgroundUpload {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundUpload {
    /// Starts a pass every `every` (the first one after `every`).
    pub fn start(out: PathBuf, dest: ObjectUrl, every: std::time::Duration) -> BackgroundUpload {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("shard-upload".into())
            .spawn(move || {
                let tick = std::time::Duration::from_millis(200);
                loop {
                    let mut waited = std::time::Duration::ZERO;
                    while waited < every {
                        if flag.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(tick);
                        waited += tick;
                    }
                    // Failures are retried by the next pass and by the final upload.
                    if let Err(err) = upload_committed(&out, &dest) {
                        tracing::warn!("uploading committed shards to {dest}: {err:#}");
                    }
                }
            })
            .ok();
        BackgroundUpload { stop, handle }
    }

    /// Stops after the pass in progress, if any.
    pub fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn upload_committed(out: &Path, dest: &ObjectUrl) -> Result<UploadSummary> {
    let journal_path = crate::pipeline::journal_path(out);
    if !journal_path.exists() {
        return Ok(UploadSummary::default());
    }
    let journal = retina_journal::Journal::open_read_only(&journal_path)?;
    let shards = journal.shards()?;
    let storage = Storage::open(dest)?;
    upload_shards(
        &storage,
        out,
        dest,
        shards.iter().map(|s| (s.file_name.as_str(), s.bytes)),
    )
}

/// Checks a published dataset: downloads its `dataset.json` and every shard it lists into a
/// temporary folder and runs the same shard checks as a local `verify` (presence, size,
/// BLAKE3, Parquet row counts, duplicate ids). The journal is not published, so the item-by-item
/// cross-check with it needs the local build folder (`verify DIR`).
pub fn verify_remote(url: &ObjectUrl) -> Result<Vec<String>> {
    let storage = Storage::open(url)?;
    let work = TempDir::new()?;
    let card_url = url.join(retina_shards::CARD_FILE)?;
    storage
        .get_to_file(&card_url, &work.0.join(retina_shards::CARD_FILE), 64 << 20)
        .with_context(|| format!("{url} holds no readable dataset.json"))?;
    let card = retina_shards::read_card(&work.0)?;
    let mut problems = Vec::new();
    for shard in &card.shards {
        let source = url.join(&shard.path)?;
        // One byte over the listed size is enough to see that it differs.
        match storage.get_to_file(&source, &work.0.join(&shard.path), shard.bytes + 1) {
            Ok(_) => {}
            Err(err) if err.is_not_found() => {} // reported by verify_dataset as missing
            Err(err) => problems.push(format!("{}: {err}", shard.path)),
        }
    }
    let report = retina_shards::verify_dataset(&work.0)
        .with_context(|| format!("cannot verify the copy of {url}"))?;
    problems.extend(report.problems);
    Ok(problems)
}

/// A folder removed when dropped (tempfile is only a dev-dependency of this crate).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("retinalogos-verify-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
