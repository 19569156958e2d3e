//! End-to-end tests of `build-dataset qa`: the figures of `qa/report.json` against independent
//! recounts (the arrow-rs shard reader and pyarrow), the HTML page in headless Chromium (no
//! console errors, every section present, a screenshot), and `--baseline`.
//!
//! One small demo build is shared by the tests of this file (built once, on first use).

mod common;
use common::{BIN, python_json, text};

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// Demo generation writes into the shared cache folder: one at a time.
static LOCK: Mutex<()> = Mutex::new(());
static DEMO: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();

fn run(args: &[&str]) -> Output {
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary starts")
}

/// A demo build of 90 items (both demo datasets), without its automatic QA report.
fn demo() -> &'static Path {
    let (_, out) = DEMO.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("demo");
        let build = run(&[
            "build",
            "--out",
            out.to_str().unwrap(),
            "--limit",
            "90",
            "--no-qa",
        ]);
        assert!(build.status.success(), "{}", text(&build));
        (tmp, out)
    });
    out
}

fn qa(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["qa", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = run(&args);
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("report.html"), "{stdout}");
    assert!(stdout.contains("acceptance"), "summary printed: {stdout}");
    let json = std::fs::read_to_string(dir.join("qa/report.json")).expect("report.json written");
    serde_json::from_str(&json).expect("report.json is JSON")
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0),
        "{what}: report {a} vs recount {b}"
    );
}

fn counts(report: &Value, key: &str) -> BTreeMap<String, u64> {
    report[key]
        .as_object()
        .unwrap_or_else(|| panic!("{key} is an object: {report}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

#[test]
fn report_figures_match_an_independent_recount() {
    let dir = demo();
    let report = qa(dir, &[]);
    assert_eq!(report["report_version"], 2);

    // Recount with the arrow-rs reader of the shards crate (no polars, no report code).
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dataset.json")).unwrap()).unwrap();
    let mut rows = Vec::new();
    for shard in card["shards"].as_array().unwrap() {
        if shard["kind"] == "accepted" {
            let path = dir.join(shard["path"].as_str().unwrap());
            rows.extend(retina_shards::read_accepted(&path, false).unwrap());
        }
    }
    assert_eq!(rows.len(), 90, "the demo build accepts every item");
    assert_eq!(
        report["counts"]["accepted"].as_u64(),
        Some(rows.len() as u64)
    );
    let mut by_grade = BTreeMap::new();
    let mut by_glaucoma = BTreeMap::new();
    let mut by_dataset = BTreeMap::new();
    let mut rnfl = 0u64;
    let mut prompt_tokens = 0u64;
    let mut vessel: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for row in &rows {
        let grade = row.dr_grade.map_or("unlabelled".into(), |g| g.to_string());
        *by_grade.entry(grade.clone()).or_insert(0u64) += 1;
        *by_glaucoma
            .entry(row.glaucoma.clone().unwrap_or("unlabelled".into()))
            .or_insert(0u64) += 1;
        *by_dataset.entry(row.dataset.clone()).or_insert(0u64) += 1;
        if row
            .sections
            .get("rnfl")
            .is_some_and(|s| !s.trim().is_empty())
        {
            rnfl += 1;
        }
        prompt_tokens += u64::from(row.prompt_tokens);
        if let Some(v) = row.vessel_density {
            vessel.entry(grade).or_default().push(f64::from(v));
        }
    }
    assert_eq!(counts(&report, "dr_grade"), by_grade);
    assert_eq!(counts(&report, "glaucoma"), by_glaucoma);
    assert!(!by_dataset.is_empty());
    for (name, n) in &by_dataset {
        assert_eq!(
            report["by_dataset"][name]["accepted"].as_u64(),
            Some(*n),
            "{name}"
        );
    }
    close(
        report["section_coverage"]["rnfl"].as_f64().unwrap(),
        rnfl as f64 / rows.len() as f64,
        "rnfl coverage",
    );
    assert_eq!(
        report["cost"]["prompt_tokens"].as_u64(),
        Some(prompt_tokens)
    );
    for (grade, values) in &vessel {
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let d = &report["measurements"]["vessel_density_by_dr_grade"][grade];
        assert_eq!(d["count"].as_u64(), Some(values.len() as u64), "{grade}");
        // The report reads f32 through polars; compare at f32 precision.
        assert!(
            (d["mean"].as_f64().unwrap() - mean).abs() < 1e-5,
            "{grade}: {d} vs {mean}"
        );
    }
    let word_mean = rows
        .iter()
        .map(|r| r.caption.split_whitespace().count() as f64)
        .sum::<f64>()
        / rows.len() as f64;
    // The report's words split punctuation-joined tokens too: within a few percent of whitespace.
    let reported = report["captions"]["words"]["mean"].as_f64().unwrap();
    assert!(
        (reported / word_mean - 1.0).abs() < 0.1,
        "{reported} vs {word_mean}"
    );

    // Recount with pyarrow: a real Parquet reader in another language.
    let script = r#"
import json, sys, glob, collections, re, pyarrow.parquet as pq
rows = 0; sections = collections.Counter(); hashes = collections.Counter(); codes = collections.Counter()
caps = collections.Counter(); over77 = 0
for path in sorted(glob.glob(sys.argv[1] + "/shards/*.parquet")):
    t = pq.read_table(path, columns=["facts", "labels", "caption"] + ["optic_disc","rnfl","vessels","macula","background","quality","impression"])
    rows += t.num_rows
    for name in ["optic_disc","rnfl","vessels","macula","background","quality","impression"]:
        sections[name] += sum(1 for s in t.column(name).to_pylist() if s and s.strip())
    for f in t.column("facts").to_pylist():
        if f["perceptual_hash"]:
            hashes[f["perceptual_hash"]] += 1
    for l in t.column("labels").to_pylist():
        for c in l["disease_codes"] or []:
            codes[c] += 1
    for c in t.column("caption").to_pylist():
        caps[c] += 1
dup_rows = sum(n for n in hashes.values() if n > 1)
dup_caps = sum(n for n in caps.values() if n > 1)
print(json.dumps({"rows": rows, "coverage": {k: v / rows for k, v in sections.items()},
                  "dup_image_rows": dup_rows, "codes": codes, "dup_caption_rows": dup_caps}))
"#;
    let py = python_json(script, dir);
    assert_eq!(py["rows"], report["counts"]["accepted"]);
    for (name, fraction) in py["coverage"].as_object().unwrap() {
        close(
            report["section_coverage"][name].as_f64().unwrap(),
            fraction.as_f64().unwrap(),
            name,
        );
    }
    assert_eq!(
        report["duplicates"]["images"]["rows_in_duplicate_groups"],
        py["dup_image_rows"]
    );
    assert_eq!(
        report["duplicates"]["exact_captions"]["rows_in_duplicate_groups"],
        py["dup_caption_rows"]
    );
    assert_eq!(report["duplicates"]["images"]["sampling_rate"], 1.0);
    let py_codes: BTreeMap<String, u64> = py["codes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(counts(&report, "disease_codes"), py_codes);
    // The Markdown summary carries the same headline figures.
    let md = std::fs::read_to_string(dir.join("qa/report.md")).unwrap();
    assert!(md.contains(&format!("accepted {}", rows.len())), "{md}");
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        // scripts/test.sh installs it (scripts/setup-browser.sh) and sets this variable.
        assert!(
            std::env::var_os("RETINALOGOS_REQUIRE_BROWSER").is_none(),
            "chromium is required but missing: run scripts/setup-browser.sh"
        );
        eprintln!("skipped: chromium not installed (run scripts/setup-browser.sh)");
        return;
    };
    let dir = demo();
    qa(dir, &[]);
    let html = dir.join("qa/report.html");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<script"), "no scripts in the report");
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "no external assets"
    );
    let profile = tempfile::tempdir().unwrap();
    let shot = dir.join("qa/screenshot.png");
    let url = format!("file://{}", html.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let user_data = format!("--user-data-dir={}", profile.path().display());
    let dom = Command::new(&browser)
        .args(common)
        .arg(&user_data)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("chromium starts");
    assert!(dom.status.success(), "{}", text(&dom));
    let rendered = String::from_utf8_lossy(&dom.stdout);
    for (id, title) in retina_qa::HTML_SECTIONS {
        assert!(
            rendered.contains(&format!("<section id=\"{id}\">")),
            "section {id} missing from the rendered DOM"
        );
        assert!(rendered.contains(title), "title {title} missing");
    }
    assert!(rendered.contains("<svg"), "inline plots rendered");
    assert!(
        rendered.contains("data:image/jpeg;base64,"),
        "gallery thumbnails"
    );
    let screenshot = Command::new(&browser)
        .args(common)
        .arg(&user_data)
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,4000")
        .arg(&url)
        .output()
        .expect("chromium starts");
    assert!(screenshot.status.success(), "{}", text(&screenshot));
    for output in [&dom, &screenshot] {
        let log = String::from_utf8_lossy(&output.stderr);
        for line in log.lines() {
            let lower = line.to_lowercase();
            assert!(
                !(lower.contains("uncaught") || lower.contains(":console(")),
                "console error while rendering: {line}"
            );
            assert!(
                !(lower.contains("failed to load resource") || lower.contains("net::err")),
                "the page tried to load something: {line}"
            );
        }
    }
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(
        png.len() > 50_000,
        "a screenshot with content ({} bytes)",
        png.len()
    );
    if let Ok(keep) = std::env::var("RETINALOGOS_QA_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}

#[test]
fn baseline_compares_two_builds_side_by_side() {
    let current = demo();
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("smaller");
    let build = run(&[
        "build",
        "--out",
        other.to_str().unwrap(),
        "--limit",
        "40",
        "--no-qa",
    ]);
    assert!(build.status.success(), "{}", text(&build));
    let report = qa(current, &["--baseline", other.to_str().unwrap()]);
    let baseline = &report["baseline"];
    assert_eq!(baseline["dir"].as_str(), other.to_str());
    let metric = |name: &str| {
        baseline["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("metric {name}: {baseline}"))
            .clone()
    };
    let accepted = metric("accepted");
    assert_eq!(accepted["current"].as_f64(), Some(90.0));
    assert_eq!(accepted["baseline"].as_f64(), Some(40.0));
    assert_eq!(accepted["delta"].as_f64(), Some(50.0));
    assert!(metric("coverage_rnfl")["current"].as_f64().is_some());
    // The baseline is read, never written (its build wrote only qa/acceptance.json).
    for report in ["report.json", "report.html", "report.md"] {
        assert!(
            !other.join("qa").join(report).exists(),
            "baseline folder untouched: qa/{report}"
        );
    }
    let page = std::fs::read_to_string(current.join("qa/report.html")).unwrap();
    assert!(
        page.contains(other.to_str().unwrap()),
        "the page names the baseline"
    );
    // A plain run afterwards drops the comparison again.
    let plain = qa(current, &[]);
    assert!(plain.get("baseline").is_none());
}

#[test]
fn rejects_are_counted_with_reasons_and_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("empty.jpg"), b"").unwrap();
    std::fs::write(images.join("garbage.png"), b"not a png at all").unwrap();
    let out = tmp.path().join("out");
    let build = run(&[
        "build",
        "--out",
        out.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--no-qa",
    ]);
    assert!(build.status.success(), "{}", text(&build));
    let report = qa(&out, &[]);
    assert_eq!(report["counts"]["rejected"].as_u64(), Some(2), "{report}");
    assert_eq!(report["counts"]["accepted"].as_u64(), Some(0));
    assert_eq!(report["counts"]["acceptance_rate"].as_f64(), Some(0.0));
    let reasons = counts(&report, "reject_reasons");
    assert!(reasons.contains_key("image.empty"), "{reasons:?}");
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert!(warnings.contains(&"low_acceptance"), "{warnings:?}");
    assert!(warnings.contains(&"mostly_rejected"), "{warnings:?}");
    let page = std::fs::read_to_string(out.join("qa/report.html")).unwrap();
    let examples = page.split("id=\"reject-examples\"").nth(1).unwrap();
    assert!(
        examples.contains("image.empty"),
        "reject example with its reason"
    );
}

#[test]
fn qa_of_a_missing_folder_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");
    let output = run(&["qa", missing.to_str().unwrap()]);
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("nothing-here"), "names the folder: {err}");
}
