//! Inputs and outputs on a real S3-protocol server on loopback: `scripts/s3-server.sh` (moto's
//! server mode, installed from the Python package index into the cache), which `scripts/test.sh`
//! starts and exports as `RETINALOGOS_S3_URL`.
//!
//! A demo subset is uploaded to an input bucket; the build reads its label file and images from
//! the bucket, publishes its shards and card to an output bucket with `--upload-to`, and the
//! published copy reads back and verifies. Without a server the test skips loudly; with
//! `RETINALOGOS_REQUIRE_S3=1` (scripts/test.sh sets it) a missing server fails it.

mod common;

use common::{BIN, text};
use retina_storage::{Location, ObjectUrl, Storage};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// Never printed by the binary: the test fails if it shows up in any output.
const SECRET: &str = "test-secret-value-that-must-never-be-printed";

fn server() -> Option<String> {
    match std::env::var("RETINALOGOS_S3_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("RETINALOGOS_REQUIRE_S3").as_deref() != Ok("1"),
                "RETINALOGOS_REQUIRE_S3=1 but RETINALOGOS_S3_URL is not set: the S3 server of \
                 scripts/s3-server.sh did not start"
            );
            eprintln!(
                "SKIPPED tests/object_store.rs: no S3 server (run: eval \"$(scripts/s3-server.sh start)\")"
            );
            None
        }
    }
}

fn env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn url(text: &str) -> ObjectUrl {
    match Location::parse(text).unwrap() {
        Location::Object(url) => url,
        Location::Local(path) => panic!("{} is not a URL", path.display()),
    }
}

/// moto creates a bucket on a plain PUT of its path; retina-storage has no bucket API.
fn create_bucket(endpoint: &str, bucket: &str) {
    let status = Command::new("curl")
        .args(["-s", "-f", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("curl runs");
    assert!(
        status.success(),
        "cannot create bucket {bucket} on {endpoint}"
    );
}

fn run(endpoint: &str, args: &[&str]) -> Output {
    let output = Command::new(BIN)
        .args(args)
        .envs(env(endpoint))
        .env("RETINALOGOS_LOG", "info")
        .output()
        .expect("build-dataset runs");
    let all = text(&output);
    assert!(!all.contains(SECRET), "a secret was printed:\n{all}");
    output
}

fn upload_tree(storage: &Storage, local: &Path, dest: &ObjectUrl, skip: &str) -> usize {
    let mut count = 0;
    let mut stack = vec![local.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(local)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            if relative == skip {
                continue;
            }
            storage
                .put_file(&path, &dest.join(&relative).unwrap())
                .unwrap();
            count += 1;
        }
    }
    count
}

#[test]
fn build_reads_inputs_from_and_publishes_outputs_to_s3() {
    let Some(endpoint) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let (in_bucket, out_bucket) = (format!("in-{run_id}"), format!("out-{run_id}"));
    create_bucket(&endpoint, &in_bucket);
    create_bucket(&endpoint, &out_bucket);

    // A demo subset in EyePACS layout, uploaded without one image (a missing object).
    let demo = tmp.path().join("demo");
    let made = run(
        &endpoint,
        &[
            "demo-data",
            "--dir",
            demo.to_str().unwrap(),
            "--eyepacs",
            "8",
            "--rfmid",
            "0",
        ],
    );
    assert!(made.status.success(), "{}", text(&made));
    let inputs = url(&format!("s3://{in_bucket}/eyepacs"));
    let storage_in = Storage::open_with_env(&inputs, env(&endpoint)).unwrap();
    let skipped = {
        let labels = std::fs::read_to_string(demo.join("eyepacs/trainLabels.csv")).unwrap();
        let first = labels
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string();
        format!("train/{first}.jpeg")
    };
    let uploaded = upload_tree(&storage_in, &demo.join("eyepacs"), &inputs, &skipped);
    assert_eq!(uploaded, 8, "7 images and the label file");

    let manifest = tmp.path().join("demo-s3.toml");
    let text_manifest = include_str!("../data-manifests/demo-eyepacs.toml")
        .replace("root = \".\"", &format!("root = \"{inputs}\""));
    assert!(
        text_manifest.contains("s3://"),
        "the demo manifest's root line changed"
    );
    std::fs::write(&manifest, text_manifest).unwrap();

    // `manifests check` reads the same bucket: 7 records, the missing image named.
    let checked = run(
        &endpoint,
        &["check", "--manifest", manifest.to_str().unwrap()],
    );
    let report = String::from_utf8_lossy(&checked.stdout).to_string();
    assert!(report.contains(&skipped), "{}", text(&checked));

    let work = tmp.path().join("work");
    let published = format!("s3://{out_bucket}/fundus/v1");
    let build_args = [
        "build",
        "--out",
        work.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--upload-to",
        &published,
    ];
    let build = run(&endpoint, &build_args);
    assert!(build.status.success(), "{}", text(&build));
    let card: Value =
        serde_json::from_slice(&std::fs::read(work.join("dataset.json")).unwrap()).unwrap();
    let accepted = card["counts"]["accepted"].as_u64().unwrap();
    let rejected = card["counts"]["rejected"].as_u64().unwrap();
    assert_eq!(accepted + rejected, 7, "{card}");

    // Every listed shard is in the bucket with its size; the card went up too.
    let out = url(&published);
    let storage_out = Storage::open_with_env(&out, env(&endpoint)).unwrap();
    let shards = card["shards"].as_array().unwrap();
    assert!(!shards.is_empty());
    for shard in shards {
        let path = shard["path"].as_str().unwrap();
        assert_eq!(
            storage_out.exists(&out.join(path).unwrap()).unwrap(),
            shard["bytes"].as_u64(),
            "{path}"
        );
    }
    let remote_card: Value = serde_json::from_slice(
        &storage_out
            .get(&out.join("dataset.json").unwrap(), 1 << 20)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(remote_card["shards"], card["shards"]);

    // The uploaded shards read back: rows of the images in the bucket, none of the missing one.
    let missing = retina_records::ItemId::from_source("demo-eyepacs", &skipped);
    let mut ids = Vec::new();
    for (i, shard) in shards.iter().enumerate() {
        let copy = tmp.path().join(format!("copy-{i}.parquet"));
        let source = out.join(shard["path"].as_str().unwrap()).unwrap();
        storage_out.get_to_file(&source, &copy, 1 << 30).unwrap();
        if shard["kind"] == "accepted" {
            let rows = retina_shards::read_accepted(&copy, true).unwrap();
            assert!(
                rows.iter()
                    .all(|r| r.dataset == "demo-eyepacs" && !r.image.is_empty())
            );
            ids.extend(rows.into_iter().map(|r| r.id));
        } else {
            let rows = retina_shards::read_rejects(&copy).unwrap();
            ids.extend(rows.into_iter().map(|r| r.id));
        }
    }
    assert_eq!(ids.len(), 7);
    assert!(!ids.contains(&missing.as_str().to_string()), "{ids:?}");
    let accepted_shard = shards
        .iter()
        .find(|s| s["kind"] == "accepted")
        .unwrap_or(&shards[0]);

    let verified = run(&endpoint, &["verify", &published]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(String::from_utf8_lossy(&verified.stdout).starts_with("ok:"));

    // A shard damaged in the bucket (same size, other bytes) is caught by verify...
    let damaged = out.join(accepted_shard["path"].as_str().unwrap()).unwrap();
    let size = accepted_shard["bytes"].as_u64().unwrap() as usize;
    storage_out.put(&damaged, vec![0u8; size]).unwrap();
    let verified = run(&endpoint, &["verify", &published]);
    assert_eq!(verified.status.code(), Some(1), "{}", text(&verified));
    assert!(
        String::from_utf8_lossy(&verified.stdout)
            .contains(accepted_shard["path"].as_str().unwrap()),
        "{}",
        text(&verified)
    );
    // ...and one cut short (as by an interrupted upload elsewhere) is uploaded again by the next
    // run, which has nothing else to do.
    storage_out.put(&damaged, vec![0u8; 10]).unwrap();
    let again = run(&endpoint, &build_args);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("1 shards"),
        "{}",
        text(&again)
    );
    assert_eq!(storage_out.exists(&damaged).unwrap(), Some(size as u64));
    let verified = run(&endpoint, &["verify", &published]);
    assert!(verified.status.success(), "{}", text(&verified));
    // The demo's labelled photographs are captioned and accepted by the offline captioner.
    assert!(accepted > 0, "nothing accepted: {card}");
}

#[test]
fn a_bad_upload_url_fails_before_any_work() {
    // Needs no server: the URL is refused while parsing the arguments.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let output = Command::new(BIN)
        .args(["build", "--out", out.to_str().unwrap(), "--upload-to"])
        .arg("s3://user:password@bucket/x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("user names or passwords"), "{stderr}");
    assert!(!out.join("shards").exists(), "no work was done");
}
