//! The embedded demo data: synthetic photographs written in the on-disk layouts of two real
//! datasets, so the pipeline's manifests read them exactly as they would read the real ones.
//!
//! ```text
//! root/
//!   eyepacs/trainLabels.csv            image,level
//!   eyepacs/train/<patient>_left.jpeg  3:2 frames, JPEG
//!   rfmid/RFMiD_Training_Labels.csv    ID,Disease_Risk,DR,ARMD,... (the full 47-column header)
//!   rfmid/Training/<ID>.png            square frames, 8-bit RGB PNG
//!   ground_truth.jsonl                 one line per image: path, dataset, labels, spec, truth
//!   DEMO_COMPLETE                      written last: the generator version and config
//! ```

use crate::noise::{self, pick, uni};
use crate::{GroundTruth, SceneSpec, render};
use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use rand::seq::SliceRandom;
use rayon::prelude::*;
use retina_records::Laterality;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Bumped whenever the pictures or layout change, so cached demo data is regenerated.
const GENERATOR_VERSION: u32 = 1;

/// Marker file written when the demo data is complete.
pub const MARKER: &str = "DEMO_COMPLETE";

/// The RFMiD 1.0 training label header, verbatim.
pub const RFMID_HEADER: &str = "ID,Disease_Risk,DR,ARMD,MH,DN,MYA,BRVO,TSLN,ERM,LS,MS,CSR,ODC,CRVO,TV,AH,ODP,ODE,ST,AION,PT,RT,RS,CRS,EDN,RPEC,MHL,RP,CWS,CB,ODPM,PRH,MNF,HR,CRAO,TD,CME,PTCR,CF,VH,MCA,VS,BRAO,PLQ,HPED,CL";

/// The EyePACS (Kaggle 2015) training label header.
pub const EYEPACS_HEADER: &str = "image,level";

/// What demo data to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoConfig {
    /// Images in the EyePACS layout (both eyes of each patient; DR grades 0-4 all present when
    /// there are at least five).
    pub eyepacs_images: usize,
    /// Images in the RFMiD layout (about 40% ARMD, 40% ODC, the rest normal).
    pub rfmid_images: usize,
    /// EyePACS frame width.
    pub width: u32,
    /// EyePACS frame height; RFMiD frames are square, `min(width, height)` on a side.
    pub height: u32,
    /// Seed of everything generated.
    pub seed: u64,
    /// JPEG quality of the EyePACS images, 1-100.
    pub jpeg_quality: u8,
}

impl Default for DemoConfig {
    /// 240 EyePACS images (grades 80/40/50/35/35), 40 RFMiD images, 1536x1024, quality 92.
    fn default() -> Self {
        DemoConfig {
            eyepacs_images: 240,
            rfmid_images: 40,
            width: 1536,
            height: 1024,
            seed: 1400,
            jpeg_quality: 92,
        }
    }
}

/// Where the demo data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSummary {
    /// The folder given to [`write_demo_datasets`].
    pub root: PathBuf,
    /// `root/eyepacs`: holds `trainLabels.csv` and `train/`.
    pub eyepacs_dir: PathBuf,
    /// `root/rfmid`: holds `RFMiD_Training_Labels.csv` and `Training/`.
    pub rfmid_dir: PathBuf,
    /// Images in both datasets together.
    pub images: usize,
}

/// Why the demo data could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The configuration cannot be generated.
    #[error("invalid demo configuration: {0}")]
    InvalidConfig(String),
    /// A file or folder could not be created, written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An image could not be encoded.
    #[error("{path}: cannot encode image: {source}")]
    Encode {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
    /// A label file could not be written.
    #[error("{path}: cannot write CSV: {source}")]
    Csv {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: csv::Error,
    },
    /// The ground truth or marker could not be serialised.
    #[error("{path}: cannot write JSON: {source}")]
    Json {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GenerateError + '_ {
    move |source| GenerateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How an image file is encoded.
#[derive(Debug, Clone, Copy)]
enum Format {
    Jpeg(u8),
    Png,
}

/// One image to generate.
#[derive(Debug, Clone)]
struct Job {
    dataset: &'static str,
    /// Relative to `root`, `/`-separated.
    path: String,
    spec: SceneSpec,
    format: Format,
    /// Label columns as written to the dataset's CSV (for the ground-truth line).
    labels: BTreeMap<String, u8>,
}

/// One line of `ground_truth.jsonl`.
#[derive(Serialize)]
struct TruthLine<'a> {
    path: &'a str,
    dataset: &'a str,
    labels: &'a BTreeMap<String, u8>,
    spec: &'a SceneSpec,
    truth: &'a GroundTruth,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Marker {
    generator_version: u32,
    config: DemoConfig,
}

/// Writes the demo datasets under `root` (idempotent: if `root/DEMO_COMPLETE` exists with the same
/// config, returns at once; otherwise (re)generates, writing the marker last). Uses rayon.
///
/// Regenerating removes images of an earlier demo that the new config does not list (only files
/// named like demo images, inside the demo's own folders).
pub fn write_demo_datasets(root: &Path, config: &DemoConfig) -> Result<DemoSummary, GenerateError> {
    validate(config)?;
    let summary = DemoSummary {
        root: root.to_path_buf(),
        eyepacs_dir: root.join("eyepacs"),
        rfmid_dir: root.join("rfmid"),
        images: config.eyepacs_images + config.rfmid_images,
    };
    let marker_path = root.join(MARKER);
    let marker = Marker {
        generator_version: GENERATOR_VERSION,
        config: config.clone(),
    };
    let marker_text =
        serde_json::to_string_pretty(&marker).map_err(|source| GenerateError::Json {
            path: marker_path.clone(),
            source,
        })?;
    if let Ok(existing) = fs::read_to_string(&marker_path) {
        if existing == marker_text {
            return Ok(summary);
        }
        // A stale marker must not vouch for a half-rewritten folder if this run stops early.
        fs::remove_file(&marker_path).map_err(io_err(&marker_path))?;
    }

    let eyepacs_train = summary.eyepacs_dir.join("train");
    let rfmid_training = summary.rfmid_dir.join("Training");
    for dir in [&eyepacs_train, &rfmid_training] {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }

    let mut jobs = eyepacs_jobs(config);
    jobs.extend(rfmid_jobs(config));

    let truths: Vec<GroundTruth> = jobs
        .par_iter()
        .map(|job| write_image(root, job))
        .collect::<Result<_, _>>()?;

    write_eyepacs_labels(&summary.eyepacs_dir.join("trainLabels.csv"), &jobs)?;
    write_rfmid_labels(&summary.rfmid_dir.join("RFMiD_Training_Labels.csv"), &jobs)?;
    write_truth(&root.join("ground_truth.jsonl"), &jobs, &truths)?;

    let keep: BTreeSet<String> = jobs.iter().map(|j| j.path.clone()).collect();
    remove_stale(
        root,
        &eyepacs_train,
        "eyepacs/train",
        &keep,
        is_eyepacs_name,
    )?;
    remove_stale(
        root,
        &rfmid_training,
        "rfmid/Training",
        &keep,
        is_rfmid_name,
    )?;

    write_atomically(&marker_path, marker_text.as_bytes())?;
    Ok(summary)
}

fn validate(config: &DemoConfig) -> Result<(), GenerateError> {
    if config.width < 64 || config.height < 64 {
        return Err(GenerateError::InvalidConfig(format!(
            "frame {}x{} is too small (at least 64x64)",
            config.width, config.height
        )));
    }
    if config.width > 16_384 || config.height > 16_384 {
        return Err(GenerateError::InvalidConfig(format!(
            "frame {}x{} is too large (at most 16384 on a side)",
            config.width, config.height
        )));
    }
    if !(1..=100).contains(&config.jpeg_quality) {
        return Err(GenerateError::InvalidConfig(format!(
            "JPEG quality {} is not in 1-100",
            config.jpeg_quality
        )));
    }
    if config.eyepacs_images > 1_000_000 || config.rfmid_images > 1_000_000 {
        return Err(GenerateError::InvalidConfig(
            "at most 1,000,000 images per dataset".to_string(),
        ));
    }
    Ok(())
}

/// Seed of one image, from the demo seed, the dataset and the image's index.
fn image_seed(config: &DemoConfig, dataset: u64, index: usize) -> u64 {
    noise::mix64(config.seed ^ noise::mix64(dataset.wrapping_mul(1_000_003) ^ index as u64))
}

/// Images per DR grade: EyePACS-like proportions 80/40/50/35/35 of 240, every grade present when
/// there are at least five images.
pub(crate) fn grade_counts(n: usize) -> [usize; 5] {
    const WEIGHTS: [usize; 5] = [80, 40, 50, 35, 35];
    let total: usize = WEIGHTS.iter().sum();
    let mut counts = WEIGHTS.map(|w| n * w / total);
    // Largest remainders first, in grade order on ties.
    let mut order: Vec<usize> = (0..5).collect();
    order.sort_by_key(|&g| std::cmp::Reverse((n * WEIGHTS.get(g).copied().unwrap_or(0)) % total));
    let left = n.saturating_sub(counts.iter().sum());
    for g in order.iter().cycle().take(left) {
        if let Some(c) = counts.get_mut(*g) {
            *c += 1;
        }
    }
    if n >= 5 {
        for g in 0..5 {
            while counts.get(g).copied() == Some(0) {
                // Take one from the largest grade.
                let Some((big, _)) = counts.iter().enumerate().max_by_key(|(_, c)| **c) else {
                    break;
                };
                if let Some(c) = counts.get_mut(big) {
                    *c -= 1;
                }
                if let Some(c) = counts.get_mut(g) {
                    *c += 1;
                }
            }
        }
    }
    counts
}

fn eyepacs_jobs(config: &DemoConfig) -> Vec<Job> {
    let mut rng = noise::stream(config.seed, 100);
    let counts = grade_counts(config.eyepacs_images);
    let mut grades: Vec<u8> = counts
        .iter()
        .enumerate()
        .flat_map(|(g, &c)| std::iter::repeat_n(g as u8, c))
        .collect();
    grades.shuffle(&mut rng);
    let mut patient = 10u32;
    let mut jobs = Vec::with_capacity(grades.len());
    for (index, grade) in grades.iter().enumerate() {
        if index > 0 && index % 2 == 0 {
            // EyePACS patient numbers increase with gaps.
            patient += pick(&mut rng, 1, 4);
        }
        let laterality = if index % 2 == 0 {
            Laterality::Left
        } else {
            Laterality::Right
        };
        let spec = SceneSpec {
            width: config.width,
            height: config.height,
            laterality,
            dr_grade: *grade,
            cup_to_disc: uni(&mut rng, 0.2, 0.55),
            amd: false,
            glaucoma: false,
            seed: image_seed(config, 1, index),
        };
        let name = format!("{patient}_{}", laterality.as_str());
        jobs.push(Job {
            dataset: "eyepacs",
            path: format!("eyepacs/train/{name}.jpeg"),
            spec,
            format: Format::Jpeg(config.jpeg_quality),
            labels: BTreeMap::from([("level".to_string(), *grade)]),
        });
    }
    jobs
}

/// RFMiD disease codes after `ID,Disease_Risk`.
fn rfmid_codes() -> Vec<&'static str> {
    RFMID_HEADER.split(',').skip(2).collect()
}

fn rfmid_jobs(config: &DemoConfig) -> Vec<Job> {
    let mut rng = noise::stream(config.seed, 200);
    let n = config.rfmid_images;
    let armd = (n * 2).div_ceil(5);
    let odc = ((n * 2).div_ceil(5)).min(n - armd);
    // 0 normal, 1 ARMD, 2 ODC.
    let mut kinds: Vec<u8> = std::iter::repeat_n(1u8, armd)
        .chain(std::iter::repeat_n(2u8, odc))
        .chain(std::iter::repeat_n(0u8, n - armd - odc))
        .collect();
    kinds.shuffle(&mut rng);
    let side = config.width.min(config.height);
    kinds
        .iter()
        .enumerate()
        .map(|(index, &kind)| {
            let glaucoma = kind == 2;
            let spec = SceneSpec {
                width: side,
                height: side,
                // RFMiD does not record the eye; draw both anyway.
                laterality: if noise::chance(&mut rng, 0.5) {
                    Laterality::Left
                } else {
                    Laterality::Right
                },
                dr_grade: 0,
                cup_to_disc: if glaucoma {
                    uni(&mut rng, 0.7, 0.9)
                } else {
                    uni(&mut rng, 0.2, 0.5)
                },
                amd: kind == 1,
                glaucoma,
                seed: image_seed(config, 2, index),
            };
            let id = index + 1;
            let labels = BTreeMap::from([
                ("ARMD".to_string(), u8::from(kind == 1)),
                ("ODC".to_string(), u8::from(kind == 2)),
                ("Disease_Risk".to_string(), u8::from(kind != 0)),
            ]);
            Job {
                dataset: "rfmid",
                path: format!("rfmid/Training/{id}.png"),
                spec,
                format: Format::Png,
                labels,
            }
        })
        .collect()
}

/// Renders and writes one image; returns its ground truth.
fn write_image(root: &Path, job: &Job) -> Result<GroundTruth, GenerateError> {
    let (image, truth) = render(&job.spec);
    let path = root.join(&job.path);
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut out = BufWriter::new(file);
    let encoded = match job.format {
        Format::Jpeg(quality) => JpegEncoder::new_with_quality(&mut out, quality).write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        ),
        Format::Png => {
            PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
                .write_image(
                    image.as_raw(),
                    image.width(),
                    image.height(),
                    image::ExtendedColorType::Rgb8,
                )
        }
    };
    encoded.map_err(|source| GenerateError::Encode {
        path: path.clone(),
        source,
    })?;
    out.flush().map_err(io_err(&tmp))?;
    drop(out);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    Ok(truth)
}

fn csv_err(path: &Path) -> impl FnOnce(csv::Error) -> GenerateError + '_ {
    move |source| GenerateError::Csv {
        path: path.to_path_buf(),
        source,
    }
}

fn write_eyepacs_labels(path: &Path, jobs: &[Job]) -> Result<(), GenerateError> {
    let mut writer = csv::Writer::from_path(path).map_err(csv_err(path))?;
    writer
        .write_record(EYEPACS_HEADER.split(','))
        .map_err(csv_err(path))?;
    for job in jobs.iter().filter(|j| j.dataset == "eyepacs") {
        let name = job
            .path
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_suffix(".jpeg"))
            .unwrap_or(&job.path);
        let level = job.labels.get("level").copied().unwrap_or(0);
        writer
            .write_record([name, &level.to_string()])
            .map_err(csv_err(path))?;
    }
    writer.flush().map_err(io_err(path))
}

fn write_rfmid_labels(path: &Path, jobs: &[Job]) -> Result<(), GenerateError> {
    let mut writer = csv::Writer::from_path(path).map_err(csv_err(path))?;
    writer
        .write_record(RFMID_HEADER.split(','))
        .map_err(csv_err(path))?;
    let codes = rfmid_codes();
    for job in jobs.iter().filter(|j| j.dataset == "rfmid") {
        let id = job
            .path
            .rsplit('/')
            .next()
            .and_then(|f| f.strip_suffix(".png"))
            .unwrap_or(&job.path);
        let mut row = vec![
            id.to_string(),
            job.labels
                .get("Disease_Risk")
                .copied()
                .unwrap_or(0)
                .to_string(),
        ];
        row.extend(
            codes
                .iter()
                .map(|code| job.labels.get(*code).copied().unwrap_or(0).to_string()),
        );
        writer.write_record(&row).map_err(csv_err(path))?;
    }
    writer.flush().map_err(io_err(path))
}

fn write_truth(path: &Path, jobs: &[Job], truths: &[GroundTruth]) -> Result<(), GenerateError> {
    let mut text = String::new();
    for (job, truth) in jobs.iter().zip(truths) {
        let line = TruthLine {
            path: &job.path,
            dataset: job.dataset,
            labels: &job.labels,
            spec: &job.spec,
            truth,
        };
        let json = serde_json::to_string(&line).map_err(|source| GenerateError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        text.push_str(&json);
        text.push('\n');
    }
    write_atomically(path, text.as_bytes())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), GenerateError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn is_eyepacs_name(name: &str) -> bool {
    let stem = name
        .strip_suffix(".jpeg")
        .or_else(|| name.strip_suffix(".tmp"));
    stem.and_then(|s| s.strip_suffix("_left").or_else(|| s.strip_suffix("_right")))
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_rfmid_name(name: &str) -> bool {
    name.strip_suffix(".png")
        .or_else(|| name.strip_suffix(".tmp"))
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes demo-named files in `dir` that the current config does not list.
fn remove_stale(
    root: &Path,
    dir: &Path,
    relative: &str,
    keep: &BTreeSet<String>,
    is_demo_name: fn(&str) -> bool,
) -> Result<(), GenerateError> {
    let entries = fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if is_demo_name(name) && !keep.contains(&format!("{relative}/{name}")) {
            let path = root.join(relative).join(name);
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_grade_counts_match_the_brief() {
        assert_eq!(grade_counts(240), [80, 40, 50, 35, 35]);
    }

    proptest! {
        #[test]
        fn grade_counts_sum_and_cover(n in 0usize..2000) {
            let counts = grade_counts(n);
            prop_assert_eq!(counts.iter().sum::<usize>(), n);
            if n >= 5 {
                prop_assert!(counts.iter().all(|&c| c > 0), "{:?}", counts);
            }
        }

        #[test]
        fn demo_names_are_recognised(patient in 1u32..100_000, id in 1u32..100_000) {
            let left = format!("{patient}_left.jpeg");
            let right = format!("{patient}_right.jpeg");
            let up = format!("{patient}_up.jpeg");
            let png = format!("{id}.png");
            let bad_png = format!("{id}a.png");
            prop_assert!(is_eyepacs_name(&left));
            prop_assert!(is_eyepacs_name(&right));
            prop_assert!(!is_eyepacs_name(&up));
            prop_assert!(is_rfmid_name(&png));
            prop_assert!(!is_rfmid_name(&bad_png));
        }
    }

    fn small() -> DemoConfig {
        DemoConfig {
            eyepacs_images: 10,
            rfmid_images: 5,
            width: 192,
            height: 128,
            seed: 7,
            jpeg_quality: 90,
        }
    }

    fn read_lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn writes_both_layouts_with_exact_headers_and_decodable_images() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("demo");
        let config = small();
        let summary = write_demo_datasets(&root, &config).unwrap();
        assert_eq!(summary.images, 15);
        assert_eq!(summary.eyepacs_dir, root.join("eyepacs"));
        assert_eq!(summary.rfmid_dir, root.join("rfmid"));

        let eyepacs = read_lines(&root.join("eyepacs/trainLabels.csv"));
        assert_eq!(eyepacs[0], "image,level");
        assert_eq!(eyepacs.len(), 11);
        let mut grades = BTreeSet::new();
        for line in &eyepacs[1..] {
            let (name, level) = line.split_once(',').unwrap();
            grades.insert(level.parse::<u8>().unwrap());
            let img = image::open(root.join(format!("eyepacs/train/{name}.jpeg"))).unwrap();
            assert_eq!((img.width(), img.height()), (192, 128));
        }
        assert_eq!(grades, (0..=4).collect(), "every DR grade present");

        let rfmid = read_lines(&root.join("rfmid/RFMiD_Training_Labels.csv"));
        assert_eq!(rfmid[0], RFMID_HEADER);
        assert_eq!(rfmid.len(), 6);
        for (k, line) in rfmid[1..].iter().enumerate() {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), 47);
            assert_eq!(cells[0], (k + 1).to_string());
            let any = cells[2..].contains(&"1");
            assert_eq!(cells[1] == "1", any, "Disease_Risk is 1 when any code is");
            let img = image::open(root.join(format!("rfmid/Training/{}.png", k + 1))).unwrap();
            assert_eq!((img.width(), img.height()), (128, 128));
            assert_eq!(img.color(), image::ColorType::Rgb8);
        }

        let truth = read_lines(&root.join("ground_truth.jsonl"));
        assert_eq!(truth.len(), 15);
        for line in &truth {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let path = v["path"].as_str().unwrap();
            assert!(root.join(path).is_file(), "{path}");
            assert!(v["truth"]["fov_radius"].as_f64().unwrap() > 0.0);
            let spec: SceneSpec = serde_json::from_value(v["spec"].clone()).unwrap();
            let truth: GroundTruth = serde_json::from_value(v["truth"].clone()).unwrap();
            assert_eq!(truth.laterality, spec.laterality);
        }
        assert!(root.join(MARKER).is_file());
    }

    #[test]
    fn second_run_is_a_no_op_and_a_new_config_regenerates() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let config = small();
        write_demo_datasets(root, &config).unwrap();
        let image = root.join("rfmid/Training/1.png");
        let before = fs::metadata(&image).unwrap().modified().unwrap();
        // A file the generator would have rewritten: removing it shows the second run did not.
        fs::remove_file(root.join("eyepacs/trainLabels.csv")).unwrap();
        write_demo_datasets(root, &config).unwrap();
        assert!(
            !root.join("eyepacs/trainLabels.csv").exists(),
            "no regeneration"
        );
        assert_eq!(fs::metadata(&image).unwrap().modified().unwrap(), before);

        // Fewer images: regenerated, and the extra images of the old config are gone.
        let fewer = DemoConfig {
            eyepacs_images: 4,
            rfmid_images: 2,
            ..config
        };
        let summary = write_demo_datasets(root, &fewer).unwrap();
        assert_eq!(summary.images, 6);
        assert_eq!(read_lines(&root.join("eyepacs/trainLabels.csv")).len(), 5);
        assert_eq!(fs::read_dir(root.join("eyepacs/train")).unwrap().count(), 4);
        assert_eq!(
            fs::read_dir(root.join("rfmid/Training")).unwrap().count(),
            2
        );
        let marker = fs::read_to_string(root.join(MARKER)).unwrap();
        assert!(marker.contains("\"eyepacs_images\": 4"), "{marker}");
    }

    #[test]
    fn rfmid_header_has_47_columns() {
        assert_eq!(RFMID_HEADER.split(',').count(), 47);
        assert_eq!(rfmid_codes().len(), 45);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let dir = std::env::temp_dir().join("synthetic-fundus-never-written");
        for bad in [
            DemoConfig {
                width: 10,
                ..DemoConfig::default()
            },
            DemoConfig {
                jpeg_quality: 0,
                ..DemoConfig::default()
            },
        ] {
            let err = write_demo_datasets(&dir, &bad).unwrap_err();
            assert!(matches!(err, GenerateError::InvalidConfig(_)), "{err}");
        }
        assert!(!dir.exists());
    }

    #[test]
    fn rfmid_mix_is_about_forty_forty_twenty() {
        let config = DemoConfig::default();
        let jobs = rfmid_jobs(&config);
        assert_eq!(jobs.len(), 40);
        let count = |code: &str| {
            jobs.iter()
                .filter(|j| j.labels.get(code) == Some(&1))
                .count()
        };
        assert_eq!(count("ARMD"), 16);
        assert_eq!(count("ODC"), 16);
        assert_eq!(count("Disease_Risk"), 32);
        for job in &jobs {
            assert_eq!(job.spec.amd, job.labels.get("ARMD") == Some(&1));
            assert_eq!(job.spec.glaucoma, job.labels.get("ODC") == Some(&1));
            assert_eq!(job.spec.width, job.spec.height);
        }
    }

    #[test]
    fn eyepacs_patients_have_both_eyes() {
        let jobs = eyepacs_jobs(&DemoConfig::default());
        assert_eq!(jobs.len(), 240);
        let names: BTreeSet<&str> = jobs.iter().map(|j| j.path.as_str()).collect();
        assert_eq!(names.len(), 240, "names are unique");
        for pair in jobs.chunks(2) {
            let [left, right] = pair else { panic!("odd") };
            assert_eq!(
                left.path.replace("_left", "_right"),
                right.path,
                "both eyes of one patient"
            );
        }
        assert!(jobs[0].path.starts_with("eyepacs/train/10_left"));
    }
}
