//! The image stage on camera-sized photographs (3888x2592 JPEG, synthetic, cached): the full
//! stage against the codec-only path with the same crates, our JPEG encoder against
//! libjpeg-turbo, scaling from one to two cores, and images per second per core against
//! img2dataset's resizer on the same images (1024 square JPEG output).
//!
//! The Python references (img2dataset; Pillow, whose wheels bundle libjpeg-turbo) come from
//! `scripts/setup-bench.sh`; when it cannot run, those two ratios are skipped with a note.

use super::{BenchContext, Results, time_per_item};
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use retina_fundus::{PrepareConfig, prepare};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Frame of the benchmark photographs (a common EyePACS camera size).
const WIDTH: u32 = 3888;
const HEIGHT: u32 = 2592;
/// Photographs generated (left and right eyes, grades 0-4).
const COUNT: usize = 8;

/// The Python side: img2dataset's resizer per image, and Pillow's JPEG encode per megapixel, each
/// on one core, printed as JSON.
const PYTHON: &str = r#"
import io, json, sys, time, os
os.environ.setdefault("OMP_NUM_THREADS", "1")
import cv2
cv2.setNumThreads(1)
from PIL import Image
from img2dataset.resizer import Resizer
paths = sys.argv[2:]
side = int(sys.argv[1])
images = [open(p, "rb").read() for p in paths]
resizer = Resizer(image_size=side, resize_mode="border", resize_only_if_bigger=False,
                  encode_quality=90, encode_format="jpg")
def stage():
    for b in images:
        out = resizer(io.BytesIO(b))
        if out[-1] is not None:
            raise SystemExit("img2dataset failed: %s" % out[-1])
stage()
passes = []
cpu = []
for _ in range(3):
    t = time.perf_counter(); c = time.thread_time(); stage()
    passes.append((time.perf_counter() - t) * 1000 / len(images))
    cpu.append((time.thread_time() - c) * 1000 / len(images))
passes.sort()
cpu.sort()
raw = open(os.environ["RAW_RGB"], "rb").read()
img = Image.frombytes("RGB", (side, side), raw)
def enc():
    buf = io.BytesIO(); img.save(buf, format="JPEG", quality=90); return buf
enc()
encs = []
for _ in range(5):
    t = time.perf_counter()
    for _ in range(10): enc()
    encs.append((time.perf_counter() - t) * 1000 / 10)
encs.sort()
print(json.dumps({"img2dataset_ms": passes[1], "img2dataset_cpu_ms": cpu[1], "pillow_encode_ms": encs[2]}))
"#;

pub(crate) fn run(context: &BenchContext, results: &mut Results) -> Result<()> {
    let dir = crate::demo::cache_root()?.join(format!("bench-{WIDTH}x{HEIGHT}-v1"));
    let paths = ensure_photographs(&dir)?;
    let images: Vec<Vec<u8>> = paths.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let config = PrepareConfig::default();
    let side = config.target_size;
    let mp = f64::from(WIDTH) * f64::from(HEIGHT) / 1e6;
    let _ = context;

    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    // The stage and the codec-only path in alternating passes on the same thread, so both see
    // the same machine load; wall time and the thread's CPU time are both kept.
    let pair = one.install(|| {
        time_pair(
            &images,
            |b| prepare(b, &config).map(|_| ()).map_err(|e| e.to_string()),
            |b| {
                retina_fundus::codec_only(b, &config)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
    })?;
    let (stage_ms, codec_ms) = (pair.a_wall_ms, pair.b_wall_ms);
    if let (Some(stage_cpu), Some(codec_cpu)) = (pair.a_cpu_ms, pair.b_cpu_ms) {
        results.put(
            "image_3888_stage_cpu_ms_per_image",
            stage_cpu,
            "ms",
            "full image stage, CPU time of its thread per image (robust to other load)",
        );
        results.put(
            "image_3888_codec_cpu_ms_per_image",
            codec_cpu,
            "ms",
            "codec-only path (same decode, resize, encode), CPU time per image",
        );
        results.put(
            "image_3888_codec_over_stage_cpu",
            codec_cpu / stage_cpu,
            "ratio",
            "codec-only over full stage by CPU time (same passes as the wall-time ratio); goal >= 0.8",
        );
    }
    results.put(
        "image_3888_stage_images_per_s",
        1000.0 / stage_ms,
        "images/s",
        "full image stage, 3888x2592 JPEG to 1024² JPEG q90, one core",
    );
    results.put(
        "image_3888_stage_mp_per_s",
        mp * 1000.0 / stage_ms,
        "MP/s",
        "the same in input megapixels per second",
    );
    results.put(
        "image_3888_codec_over_stage",
        codec_ms / stage_ms,
        "ratio",
        "codec-only path (same decode, resize, encode) over the full stage time; goal >= 0.8",
    );
    results.put(
        "image_3888_codec_over_stage_pairs",
        pair.b_over_a_pairs,
        "ratio",
        "the same ratio as the median over back-to-back single-image pairs (robust to a shared host's swings); goal >= 0.8",
    );

    // The stage's encoder, and the pure-Rust one, per megapixel on a prepared 1024² output.
    let prepared = prepare(&images[0], &config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rgb = image::load_from_memory(&prepared.bytes)?.into_rgb8();
    let raw = rgb.as_raw().clone();
    let out_mp = f64::from(side) * f64::from(side) / 1e6;
    let encode_ms = time_per_item(std::slice::from_ref(&raw), |px| {
        retina_fundus::encode_jpeg(px, side, side, config.jpeg_quality)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    let pure_rust_ms = time_per_item(std::slice::from_ref(&raw), |px| {
        retina_fundus::encode_jpeg_pure_rust(px, side, side, config.jpeg_quality)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    let stage_codecs = if retina_fundus::USES_LIBJPEG_TURBO {
        "libjpeg-turbo (turbojpeg feature: 1/2-scale DCT decode and its encoder)"
    } else {
        "pure Rust (image crate decode, jpeg-encoder)"
    };
    eprintln!("bench image: stage codecs: {stage_codecs}");
    results.put(
        "image_3888_uses_libjpeg_turbo",
        f64::from(u8::from(retina_fundus::USES_LIBJPEG_TURBO)),
        "bool",
        "1 when this build has the turbojpeg feature (reduced-scale decode, libjpeg-turbo encoder)",
    );
    results.put(
        "jpeg_encode_ms_per_mp",
        encode_ms / out_mp,
        "ms/MP",
        "the stage's JPEG encoder (libjpeg-turbo with the turbojpeg feature, else jpeg-encoder), q90 4:2:0, one core",
    );
    results.put(
        "jpeg_encode_pure_rust_ms_per_mp",
        pure_rust_ms / out_mp,
        "ms/MP",
        "jpeg-encoder (pure Rust, AVX2), q90 4:2:0, one core, same pixels",
    );

    // One to two cores.
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build()?;
    let throughput = |pool: &rayon::ThreadPool| -> Result<f64> {
        let work: Vec<&Vec<u8>> = images.iter().chain(&images).collect();
        let started = Instant::now();
        pool.install(|| {
            work.par_iter()
                .try_for_each(|b| prepare(b, &config).map(|_| ()))
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(work.len() as f64 / started.elapsed().as_secs_f64())
    };
    let t1 = throughput(&one)?;
    let t2 = throughput(&two)?;
    results.put(
        "image_3888_scaling_2_cores",
        t2 / t1,
        "ratio",
        "full stage throughput on two cores over one core (2.0 = linear)",
    );

    // References from Python, same images, one core.
    match python_reference(&paths, side, &raw) {
        Ok((img2dataset_ms, img2dataset_cpu_ms, pillow_ms)) => {
            if let (Some(cpu), Some(ours)) = (img2dataset_cpu_ms, pair.a_cpu_ms) {
                results.put(
                    "image_3888_vs_img2dataset_cpu",
                    cpu / ours,
                    "ratio",
                    "img2dataset's CPU time per image over the full stage's (same images, one thread each); goal >= 2",
                );
            }
            results.put(
                "image_3888_vs_img2dataset",
                img2dataset_ms / stage_ms,
                "ratio",
                "our images/s per core over img2dataset's resizer (border mode, 1024² JPEG q90), which neither measures nor hashes; goal >= 2",
            );
            results.put(
                "jpeg_encode_vs_libjpeg_turbo",
                encode_ms / pillow_ms,
                "ratio",
                "the stage's JPEG encode time over libjpeg-turbo's (Pillow) for the same 1024² pixels at q90 (< 1 = faster)",
            );
            results.put(
                "jpeg_encode_pure_rust_vs_libjpeg_turbo",
                pure_rust_ms / pillow_ms,
                "ratio",
                "jpeg-encoder's (pure Rust) encode time over libjpeg-turbo's (Pillow), same pixels, q90",
            );
        }
        Err(e) => eprintln!("bench image: Python references skipped: {e:#}"),
    }
    Ok(())
}

/// Per-image times of two functions measured in alternating passes (A B, B A, ...).
struct PairTimes {
    a_wall_ms: f64,
    b_wall_ms: f64,
    /// CPU time of the calling thread, where the system reports it (Linux).
    a_cpu_ms: Option<f64>,
    b_cpu_ms: Option<f64>,
    /// Median over single-item pairs (one call of each on the same item, back to back) of
    /// b's wall time over a's: each pair is a few tens of milliseconds, so slow swings in the
    /// machine's speed (shared hosts) cancel out, unlike between passes.
    b_over_a_pairs: f64,
}

/// CPU time the calling thread has run, in milliseconds (`/proc/thread-self/schedstat`, whose
/// first field is nanoseconds on a CPU); `None` where it is not available.
fn thread_cpu_ms() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e6)
}

/// One warm-up pass of each, then seven rounds of one pass of each, the order alternating so
/// drifting load treats both alike; the median pass of each. Before the passes, five rounds of
/// single-item pairs give the median pair ratio.
fn time_pair(
    items: &[Vec<u8>],
    a: impl Fn(&[u8]) -> Result<(), String>,
    b: impl Fn(&[u8]) -> Result<(), String>,
) -> Result<PairTimes> {
    let pass = |f: &dyn Fn(&[u8]) -> Result<(), String>| -> Result<(f64, Option<f64>)> {
        let (started, cpu0) = (Instant::now(), thread_cpu_ms());
        for item in items {
            f(item).map_err(|e| anyhow::anyhow!(e))?;
        }
        let n = items.len().max(1) as f64;
        let cpu = match (cpu0, thread_cpu_ms()) {
            (Some(c0), Some(c1)) => Some((c1 - c0) / n),
            _ => None,
        };
        Ok((started.elapsed().as_secs_f64() * 1000.0 / n, cpu))
    };
    pass(&a)?;
    pass(&b)?;
    let call = |f: &dyn Fn(&[u8]) -> Result<(), String>, item: &[u8]| -> Result<f64> {
        let started = Instant::now();
        f(item).map_err(|e| anyhow::anyhow!(e))?;
        Ok(started.elapsed().as_secs_f64())
    };
    let mut pair_ratios = Vec::new();
    for round in 0..5 {
        for (i, item) in items.iter().enumerate() {
            let (ta, tb) = if (round + i) % 2 == 0 {
                let ta = call(&a, item)?;
                (ta, call(&b, item)?)
            } else {
                let tb = call(&b, item)?;
                (call(&a, item)?, tb)
            };
            pair_ratios.push(tb / ta);
        }
    }
    let (mut aw, mut bw, mut ac, mut bc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..7 {
        let (ra, rb) = if round % 2 == 0 {
            let ra = pass(&a)?;
            (ra, pass(&b)?)
        } else {
            let rb = pass(&b)?;
            (pass(&a)?, rb)
        };
        aw.push(ra.0);
        bw.push(rb.0);
        ac.extend(ra.1);
        bc.extend(rb.1);
    }
    let median = |mut v: Vec<f64>| -> Option<f64> {
        v.sort_by(|x, y| x.total_cmp(y));
        v.get(v.len() / 2).copied()
    };
    Ok(PairTimes {
        a_wall_ms: median(aw).context("no passes")?,
        b_wall_ms: median(bw).context("no passes")?,
        a_cpu_ms: median(ac),
        b_cpu_ms: median(bc),
        b_over_a_pairs: median(pair_ratios).context("no pairs")?,
    })
}

/// Renders and caches the benchmark photographs (JPEG q92 like a camera's).
fn ensure_photographs(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let paths: Vec<PathBuf> = (0..COUNT)
        .map(|i| dir.join(format!("fundus-{i}.jpg")))
        .collect();
    paths
        .par_iter()
        .enumerate()
        .try_for_each(|(i, path)| -> Result<()> {
            if path.exists() {
                return Ok(());
            }
            let laterality = if i % 2 == 0 {
                retina_records::Laterality::Left
            } else {
                retina_records::Laterality::Right
            };
            let spec = synthetic_fundus::SceneSpec {
                dr_grade: (i % 5) as u8,
                ..synthetic_fundus::SceneSpec::normal(WIDTH, HEIGHT, laterality, 9000 + i as u64)
            };
            let (img, _) = synthetic_fundus::render(&spec);
            let mut bytes = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 92)
                .encode_image(&img)?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        })?;
    Ok(paths)
}

fn python_reference(paths: &[PathBuf], side: u32, raw: &[u8]) -> Result<(f64, Option<f64>, f64)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup-bench.sh");
    let setup = std::process::Command::new("bash")
        .arg(&root)
        .output()
        .context("cannot run scripts/setup-bench.sh")?;
    if !setup.status.success() {
        bail!("setup-bench.sh: {}", String::from_utf8_lossy(&setup.stderr));
    }
    let python = String::from_utf8(setup.stdout)?.trim().to_string();
    let work = std::env::temp_dir().join(format!("retinalogos-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let script = work.join("reference.py");
    let raw_path = work.join("output.rgb");
    std::fs::write(&script, PYTHON)?;
    std::fs::write(&raw_path, raw)?;
    let output = std::process::Command::new(&python)
        .arg(&script)
        .arg(side.to_string())
        .args(paths)
        .env("RAW_RGB", &raw_path)
        .env("OMP_NUM_THREADS", "1")
        .env("NO_ALBUMENTATIONS_UPDATE", "1")
        .output()
        .context("cannot start the bench Python")?;
    let _ = std::fs::remove_dir_all(&work);
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok((
        v["img2dataset_ms"]
            .as_f64()
            .context("no img2dataset time")?,
        v["img2dataset_cpu_ms"].as_f64(),
        v["pillow_encode_ms"].as_f64().context("no Pillow time")?,
    ))
}
