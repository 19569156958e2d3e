//! What one process works on: the input records as a stream (manifests, image folders or the
//! demo, read row by row), cut by `--limit`, and — for a crawl split over machines — only the
//! items this worker owns.
//!
//! Items are assigned by a stable hash of their id ([`worker_of`]), never by position, so every
//! worker reads the same manifests and keeps a disjoint share; a worker re-run alone resumes its
//! own share. The worker count and index come from `--workers N --worker-index I`, else from a
//! Slurm job array (`SLURM_ARRAY_TASK_ID` with `SLURM_ARRAY_TASK_COUNT`, or with
//! `SLURM_ARRAY_TASK_MIN`/`MAX`/`STEP`), else from a Kubernetes Indexed Job
//! (`JOB_COMPLETION_INDEX`, with the count in `RETINALOGOS_WORKERS`). Flags override each value.

use anyhow::{Context, Result, bail};
use retina_manifest::{ReadItem, RowProblem};
use retina_records::Record;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The environment variable holding the worker count of a Kubernetes Indexed Job (set it from
/// the Job's `completions`).
pub const WORKERS_ENV: &str = "RETINALOGOS_WORKERS";

/// One worker's share of a crawl split `workers` ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// How many workers share the crawl (at least 2).
    pub workers: u32,
    /// This worker, `0..workers`.
    pub index: u32,
}

/// The worker (`0..workers`) that owns an item: FNV-1a of the id bytes, then a 64-bit finaliser
/// (splitmix64) so every bit of the id moves the result, modulo `workers`. Fixed forever: a
/// change would reassign items between workers of a running crawl.
pub fn worker_of(id: &str, workers: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^= hash >> 31;
    (hash % u64::from(workers.max(1))) as u32
}

impl Partition {
    /// Whether this worker owns the item.
    pub fn owns(&self, id: &str) -> bool {
        worker_of(id, self.workers) == self.index
    }

    /// This worker's dataset folder inside the crawl's output: `<out>/workers/<index>`.
    pub fn dir(&self, out: &Path) -> PathBuf {
        out.join("workers").join(self.index.to_string())
    }

    /// The partition from flags and environment; `None` for a single process (no flag and no
    /// job-array variable, or a count of 1).
    pub fn resolve(
        workers: Option<u32>,
        index: Option<u32>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Partition>> {
        let var = |name: &str| -> Result<Option<u64>> {
            match env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
            {
                None => Ok(None),
                Some(value) => value
                    .parse::<u64>()
                    .map(Some)
                    .with_context(|| format!("{name}={value:?} is not a whole number")),
            }
        };
        let (mut env_workers, mut env_index, mut source) = (None, None, "");
        if let Some(task) = var("SLURM_ARRAY_TASK_ID")? {
            source = "the Slurm array";
            let min = var("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = var("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            if task < min || (task - min) % step != 0 {
                bail!("SLURM_ARRAY_TASK_ID={task} is not in the array (min {min}, step {step})");
            }
            env_index = Some((task - min) / step);
            env_workers = match (var("SLURM_ARRAY_TASK_COUNT")?, var("SLURM_ARRAY_TASK_MAX")?) {
                (Some(count), _) => Some(count),
                (None, Some(max)) if max >= min => Some((max - min) / step + 1),
                _ => None,
            };
        } else if let Some(index) = var("JOB_COMPLETION_INDEX")? {
            source = "the Kubernetes Indexed Job";
            env_index = Some(index);
            env_workers = var(WORKERS_ENV)?;
        } else if let Some(count) = var(WORKERS_ENV)? {
            env_workers = Some(count);
        }
        let workers = workers.map(u64::from).or(env_workers);
        let index = index.map(u64::from).or(env_index);
        let (workers, index) = match (workers, index) {
            (None, None) => return Ok(None),
            (Some(1), None | Some(0)) => return Ok(None),
            (Some(workers), Some(index)) => (workers, index),
            (Some(_), None) => bail!(
                "the worker count is set but not this worker's index: pass --worker-index I \
                 (or run in a Slurm array or a Kubernetes Indexed Job)"
            ),
            (None, Some(_)) => bail!(
                "this worker's index comes from {} but the worker count is unknown: pass --workers N \
                 (or set {WORKERS_ENV} from the Job's completions)",
                if source.is_empty() {
                    "the flags"
                } else {
                    source
                }
            ),
        };
        if workers == 0 {
            bail!("--workers must be at least 1");
        }
        if index >= workers {
            bail!("worker index {index} is not below the worker count {workers}");
        }
        if workers == 1 {
            return Ok(None);
        }
        let workers = u32::try_from(workers).context("the worker count is too large")?;
        Ok(Some(Partition {
            workers,
            index: index as u32,
        }))
    }
}

/// `workers/<i>/worker.json`: which share a worker folder holds and how its last run ended, so
/// `finalize` can tell missing and incomplete workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    /// The share.
    pub partition: Partition,
    /// Whether the last run read its whole input and ended without a stop or input error.
    pub finished: bool,
    /// Why it did not finish, when it did not.
    pub stopped: Option<String>,
    /// Items of the input this worker owned in its last run (finished runs only).
    pub owned_items: u64,
    /// When this file was written (RFC 3339).
    pub updated_at: String,
}

/// File name of [`WorkerState`] inside a worker folder.
pub const WORKER_FILE: &str = "worker.json";

impl WorkerState {
    /// Reads `dir/worker.json`.
    pub fn read(dir: &Path) -> Result<WorkerState> {
        let path = dir.join(WORKER_FILE);
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    /// Writes `dir/worker.json` atomically (temporary file, then rename).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(WORKER_FILE);
        let tmp = dir.join(format!("{WORKER_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// A worker folder must keep its share: running worker 2 of 8 in the folder of worker 2 of 4
    /// would mix two partitions.
    pub fn check_same_share(dir: &Path, partition: Partition) -> Result<()> {
        if !dir.join(WORKER_FILE).exists() {
            return Ok(());
        }
        let earlier = WorkerState::read(dir)?;
        if earlier.partition != partition {
            bail!(
                "{} holds worker {} of {}; this run is worker {} of {}. Use the same --workers for \
                 every run of a crawl, or a new --out",
                dir.display(),
                earlier.partition.index,
                earlier.partition.workers,
                partition.index,
                partition.workers
            );
        }
        Ok(())
    }
}

/// What reading the input found besides records: row problems (logged as they come) and fatal
/// errors part-way through a label file (that file's remaining rows are skipped).
#[derive(Debug, Default)]
pub struct InputReport {
    /// Row problems seen so far.
    pub problems: AtomicUsize,
    /// Items of the (limited) input owned by this worker.
    pub owned: AtomicUsize,
    /// Fatal read errors, one line each, naming the dataset and file.
    pub errors: Mutex<Vec<String>>,
}

impl InputReport {
    /// The fatal errors so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// The records of a build as a stream, with a size hint for the progress total.
pub struct Input {
    /// Records in input order (manifests first, then image folders), limited and partitioned.
    pub records: SizedRecords,
    /// Problems and errors, filled in while `records` is consumed.
    pub report: Arc<InputReport>,
}

/// An iterator of records whose `size_hint` is an estimate made before reading (a cheap row
/// count), or unknown.
pub struct SizedRecords {
    inner: Box<dyn Iterator<Item = Record> + Send>,
    estimate: Option<usize>,
}

impl Iterator for SizedRecords {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        self.inner.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.estimate.unwrap_or(0), self.estimate)
    }
}

/// Problems logged per dataset before the rest are only counted.
const LOGGED_PROBLEMS: usize = 20;

/// Opens every input as a stream. Manifests that cannot be loaded, and label files that cannot
/// be opened or lack a required header, are errors now, before any work; everything else is
/// reported as it is read.
pub fn input(
    manifests: &[PathBuf],
    images: &[PathBuf],
    limit: Option<usize>,
    partition: Option<Partition>,
) -> Result<Input> {
    let mut loaded = Vec::new();
    for path in manifests {
        loaded.push(crate::object_storage::load_manifest(path)?);
    }
    if manifests.is_empty() && images.is_empty() {
        tracing::info!("no --manifest or --images: building the synthetic demo dataset");
        loaded = crate::demo::manifests()?;
    }
    let report = Arc::new(InputReport::default());
    let mut estimate = Some(0usize);
    let mut streams: Vec<(String, retina_manifest::ManifestStream)> = Vec::new();
    for manifest in &loaded {
        let stream = manifest
            .stream()
            .with_context(|| format!("cannot read dataset {}", manifest.name()))?;
        estimate = estimate
            .zip(manifest.estimated_items())
            .map(|(a, b)| a + b as usize);
        streams.push((manifest.name().to_string(), stream));
    }
    for dir in images {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "images".into());
        let stream = retina_manifest::stream_image_folder(dir, &name)
            .with_context(|| format!("cannot list images in {}", dir.display()))?;
        estimate = None;
        streams.push((name, stream));
    }
    let stream_report = report.clone();
    let records = streams.into_iter().flat_map(move |(dataset, stream)| {
        let report = stream_report.clone();
        let mut logged = 0usize;
        let mut problems = 0usize;
        let mut ended = false;
        let mut stream = stream;
        std::iter::from_fn(move || {
            while !ended {
                match stream.next() {
                    Some(Ok(ReadItem::Record(record))) => return Some(record),
                    Some(Ok(ReadItem::Problem(problem))) => {
                        problems += 1;
                        report.problems.fetch_add(1, Ordering::Relaxed);
                        log_problem(&dataset, &problem, &mut logged);
                    }
                    Some(Err(error)) => {
                        tracing::error!(dataset, "{error}; the rest of this dataset is skipped");
                        if let Ok(mut errors) = report.errors.lock() {
                            errors.push(format!("dataset {dataset}: {error}"));
                        }
                        ended = true;
                    }
                    None => ended = true,
                }
            }
            if problems > LOGGED_PROBLEMS {
                tracing::warn!(
                    dataset,
                    "... and {} more row problems",
                    problems - LOGGED_PROBLEMS
                );
                problems = 0;
            }
            None
        })
    });
    let limited: Box<dyn Iterator<Item = Record> + Send> = match limit {
        Some(limit) => {
            estimate = Some(estimate.map_or(limit, |e| e.min(limit)));
            Box::new(records.take(limit))
        }
        None => Box::new(records),
    };
    let owned_report = report.clone();
    let inner: Box<dyn Iterator<Item = Record> + Send> = match partition {
        Some(partition) => {
            estimate = estimate.map(|e| e.div_ceil(partition.workers as usize));
            Box::new(limited.filter(move |record| {
                let mine = partition.owns(record.id.as_str());
                if mine {
                    owned_report.owned.fetch_add(1, Ordering::Relaxed);
                }
                mine
            }))
        }
        None => Box::new(limited.inspect(move |_| {
            owned_report.owned.fetch_add(1, Ordering::Relaxed);
        })),
    };
    Ok(Input {
        records: SizedRecords { inner, estimate },
        report,
    })
}

fn log_problem(dataset: &str, problem: &RowProblem, logged: &mut usize) {
    if *logged < LOGGED_PROBLEMS {
        *logged += 1;
        tracing::warn!(dataset, "{problem}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn id(n: u64) -> String {
        retina_records::ItemId::from_source("d", &format!("img/{n}.jpg")).to_string()
    }

    #[test]
    fn no_flags_no_environment_is_a_single_process() {
        assert_eq!(Partition::resolve(None, None, env(&[])).unwrap(), None);
        assert_eq!(Partition::resolve(Some(1), None, env(&[])).unwrap(), None);
    }

    #[test]
    fn flags_give_the_share() {
        let p = Partition::resolve(Some(4), Some(3), env(&[])).unwrap();
        assert_eq!(
            p,
            Some(Partition {
                workers: 4,
                index: 3
            })
        );
        assert!(Partition::resolve(Some(4), Some(4), env(&[])).is_err());
        assert!(Partition::resolve(Some(0), Some(0), env(&[])).is_err());
        let error = Partition::resolve(Some(4), None, env(&[])).unwrap_err();
        assert!(error.to_string().contains("--worker-index"), "{error}");
    }

    #[test]
    fn slurm_array_with_count_or_min_max_step() {
        let count = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert_eq!(
            Partition::resolve(None, None, count).unwrap(),
            Some(Partition {
                workers: 8,
                index: 2
            })
        );
        // --array=1-4: tasks 1..4 are workers 0..3.
        let range = env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
        ]);
        assert_eq!(
            Partition::resolve(None, None, range).unwrap(),
            Some(Partition {
                workers: 4,
                index: 3
            })
        );
        // --array=0-10:5: tasks 0, 5, 10.
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "10"),
            ("SLURM_ARRAY_TASK_STEP", "5"),
        ]);
        assert_eq!(
            Partition::resolve(None, None, stepped).unwrap(),
            Some(Partition {
                workers: 3,
                index: 1
            })
        );
        let bad = env(&[
            ("SLURM_ARRAY_TASK_ID", "x"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ]);
        let error = Partition::resolve(None, None, bad).unwrap_err();
        assert!(error.to_string().contains("SLURM_ARRAY_TASK_ID"), "{error}");
    }

    #[test]
    fn kubernetes_indexed_job_and_flags_override() {
        let k8s = env(&[("JOB_COMPLETION_INDEX", "5"), (WORKERS_ENV, "6")]);
        assert_eq!(
            Partition::resolve(None, None, &k8s).unwrap(),
            Some(Partition {
                workers: 6,
                index: 5
            })
        );
        assert_eq!(
            Partition::resolve(Some(10), Some(0), &k8s).unwrap(),
            Some(Partition {
                workers: 10,
                index: 0
            })
        );
        let no_count = env(&[("JOB_COMPLETION_INDEX", "1")]);
        let error = Partition::resolve(None, None, no_count).unwrap_err();
        assert!(error.to_string().contains(WORKERS_ENV), "{error}");
    }

    #[test]
    fn assignment_is_fixed() {
        // Pinned (values from an independent implementation): a change would move items between
        // the workers of a running crawl.
        for (id, workers, owner) in [
            ("0123456789abcdef0123456789abcdef", 4, 1),
            ("0123456789abcdef0123456789abcdef", 7, 3),
            ("0123456789abcdef0123456789abcdef", 1000, 721),
            ("ffffffffffffffffffffffffffffffff", 4, 0),
            ("ffffffffffffffffffffffffffffffff", 1000, 392),
            ("a", 7, 3),
            ("", 4, 3),
        ] {
            assert_eq!(worker_of(id, workers), owner, "{id:?} over {workers}");
        }
        assert_eq!(worker_of("abc", 1), 0);
    }

    proptest! {
        /// Every item has exactly one owner (disjoint and complete), always the same one.
        #[test]
        fn disjoint_complete_and_stable(ids in proptest::collection::vec("[0-9a-f]{32}", 1..200),
                                        workers in 1u32..64) {
            for id in &ids {
                let owner = worker_of(id, workers);
                prop_assert!(owner < workers);
                prop_assert_eq!(owner, worker_of(id, workers));
                let owners = (0..workers)
                    .filter(|index| Partition { workers, index: *index }.owns(id))
                    .count();
                prop_assert_eq!(owners, 1);
            }
        }

        /// Real item ids spread evenly: each of N workers gets its share within 6.5 standard
        /// deviations of the binomial expectation. The bound is that wide because one run checks
        /// thousands of counts (256 cases of up to 32 workers): at 5 deviations a fair hash fails
        /// about one run in a few hundred (CI saw 5.03 with 28 workers from id 522862), at 6.5 about
        /// one in three million, while a biased hash (modulo skew, a weak mixer) is off by far more.
        #[test]
        fn balanced(workers in 2u32..33, start in 0u64..1_000_000) {
            let n = 20_000u64;
            let mut counts = vec![0u64; workers as usize];
            for k in start..start + n {
                counts[worker_of(&id(k), workers) as usize] += 1;
            }
            let p = 1.0 / f64::from(workers);
            let mean = n as f64 * p;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            for count in counts {
                prop_assert!((count as f64 - mean).abs() < 6.5 * sd, "{} vs {}", count, mean);
            }
        }
    }
}
