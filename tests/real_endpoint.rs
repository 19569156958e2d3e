//! Tests against a real OpenAI-compatible server: llama.cpp's `llama-server` serving
//! SmolLM2-135M-Instruct on loopback (see docs/real-endpoint.md). `scripts/test.sh` starts it
//! and exports `RETINALOGOS_LLAMA_URL` and `RETINALOGOS_LLAMA_MODEL`; without them every test
//! here fails and says so, rather than passing without having run.
//!
//! The model is tiny and not medically reliable: it gets many answers wrong, which is the point.
//! The tests assert that what enters the dataset is valid and grounded, and that what does not
//! carries its reasons.

mod common;
use common::{BIN, text};

use retina_captioner::{CaptionError, CaptionRequest, Captioner, EndpointConfig, OpenAiCaptioner};
use retina_prompt::RenderedPrompt;
use retina_records::{ImageFacts, Record};
use retina_validate::{CaptionSchema, Rules, Validator, Verdict};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Slots `scripts/real-endpoint.sh start` gives the server by default.
const SLOTS: usize = 4;

/// The server's URL and model, or a failure that says how to get them.
fn endpoint() -> (String, String) {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (var("RETINALOGOS_LLAMA_URL"), var("RETINALOGOS_LLAMA_MODEL")) {
        (Some(url), Some(model)) => (url, model),
        _ => panic!(
            "RETINALOGOS_LLAMA_URL and RETINALOGOS_LLAMA_MODEL are not set: these tests need the real \
             llama-server on loopback. Run ./scripts/test.sh (it starts and stops one), or \
             `eval \"$(scripts/real-endpoint.sh start)\"` before cargo test."
        ),
    }
}

/// A build configuration for the tiny model: text only, bounded answers, repeat penalty 1.1,
/// one request per slot, timeouts generous enough for 2 loaded cores.
fn write_config(dir: &Path, vision: bool) -> PathBuf {
    let path = dir.join("build.toml");
    let config = format!(
        "[image]\nsize = 256\n\n[captioner]\nvision = {vision}\nconcurrency = {SLOTS}\nmax_tokens = 600\n\
         temperature = 0.0\nseed = 1\ntimeout_secs = 600\nmax_retries = 1\n\n\
         [captioner.extra_body]\nrepeat_penalty = 1.1\n"
    );
    std::fs::write(&path, config).expect("config written");
    path
}

fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("RETINALOGOS_CACHE") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("retinalogos")
    } else {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache")
            .join("retinalogos")
    }
}

/// The demo records by id, read the way the binary reads them.
fn demo_records() -> HashMap<String, Record> {
    let summary = synthetic_fundus::write_demo_datasets(
        &cache_root().join("demo-v1"),
        &synthetic_fundus::DemoConfig::default(),
    )
    .expect("demo data");
    let manifests = [
        (
            include_str!("../data-manifests/demo-eyepacs.toml"),
            summary.eyepacs_dir,
        ),
        (
            include_str!("../data-manifests/demo-rfmid.toml"),
            summary.rfmid_dir,
        ),
    ];
    let mut records = HashMap::new();
    for (text, root) in manifests {
        let mut manifest = retina_manifest::Manifest::from_toml_str(text, &root).expect("manifest");
        manifest.set_root(root);
        for record in manifest.read().expect("demo manifest reads").records {
            records.insert(record.id.as_str().to_string(), record);
        }
    }
    records
}

/// Placeholder measurements: the validator's rules check answers against labels.
fn facts() -> ImageFacts {
    ImageFacts {
        output_width: 256,
        output_height: 256,
        ..ImageFacts::fixture(1536, 1024)
    }
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn thirty_demo_items_text_only_strict_schema_end_to_end() {
    let (url, model) = endpoint();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let config = write_config(work.path(), false);
    let output = Command::new(BIN)
        .args([
            "build",
            "--no-qa",
            "--limit",
            "30",
            "--endpoint",
            &url,
            "--model",
            &model,
        ])
        .arg("--out")
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("the binary starts");
    assert!(output.status.success(), "{}", text(&output));

    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap();
    let counts = &card["counts"];
    let accepted = counts["accepted"].as_u64().unwrap();
    let rejected = counts["rejected"].as_u64().unwrap();
    eprintln!("real endpoint: {accepted} accepted, {rejected} rejected of 30");
    assert_eq!(counts["failed"], 0, "no item may fail: {}", text(&output));
    assert_eq!(accepted + rejected, 30, "{card}");
    assert_eq!(card["model"], model.as_str());

    // Every accepted row, read back from the shards, passes the validator again on its own
    // record's labels, and carries that record's labels: valid and grounded.
    let records = demo_records();
    // The schema the build asked for: the default style, detailed only.
    let rules = Rules::embedded();
    let styles: Vec<_> = ["detailed"]
        .iter()
        .map(|name| rules.style(name).unwrap().clone())
        .collect();
    let refs: Vec<_> = styles.iter().collect();
    let validator = Validator::new(&CaptionSchema::embedded().with_variants(&refs), rules).unwrap();
    let mut rows = 0;
    for shard in parquet_files(&out.join("shards")) {
        for row in retina_shards::read_accepted(&shard, false).unwrap() {
            rows += 1;
            let record = records
                .get(&row.id)
                .unwrap_or_else(|| panic!("accepted row {} is not a demo item", row.id));
            assert_eq!(row.dr_grade, record.labels.dr_grade, "row {}", row.id);
            let lesions: Vec<Value> = row
                .lesions
                .iter()
                .map(|l| {
                    let parts: Vec<&str> = l.split(':').collect();
                    assert_eq!(parts.len(), 3, "lesion {l:?} of row {}", row.id);
                    json!({"type": parts[0], "location": parts[1], "extent": parts[2]})
                })
                .collect();
            let mut answer = serde_json::Map::new();
            for (name, section) in &row.sections {
                answer.insert(name.clone(), json!(section));
            }
            answer.insert("lesions".into(), Value::Array(lesions));
            answer.insert("caption".into(), json!(row.caption));
            let variants: serde_json::Map<String, Value> = row
                .caption_styles
                .iter()
                .zip(&row.captions)
                .filter(|(style, _)| style.as_str() != "detailed")
                .map(|(style, text)| (style.clone(), json!(text)))
                .collect();
            if !variants.is_empty() {
                answer.insert("caption_variants".into(), Value::Object(variants));
            }
            let raw = Value::Object(answer).to_string();
            // Quoted numbers are checked against the measurements: re-measure the original.
            let measured = retina_fundus::prepare(
                &std::fs::read(&record.image_path).unwrap(),
                &retina_fundus::PrepareConfig::default(),
            )
            .map(|p| p.facts)
            .unwrap_or_else(|_| facts());
            let verdict = validator.validate(&raw, record, &measured);
            assert!(
                matches!(verdict, Verdict::Accepted(_)),
                "accepted row {} fails validation when read back: {:?}",
                row.id,
                verdict.reasons()
            );
            assert!(row.completion_tokens > 0, "row {} has no usage", row.id);
        }
    }
    assert_eq!(rows as u64, accepted);

    // Every rejected item says why, with a stable code and a detail.
    let mut rejects = 0;
    for shard in parquet_files(&out.join("rejects")) {
        for reject in retina_shards::read_rejects(&shard).unwrap() {
            rejects += 1;
            assert_eq!(reject.state, "rejected", "item {}", reject.id);
            assert!(
                !reject.reasons.is_empty(),
                "item {} has no reason",
                reject.id
            );
            for reason in &reject.reasons {
                assert!(
                    !reason.code.is_empty() && !reason.detail.is_empty(),
                    "item {}: {reason:?}",
                    reject.id
                );
            }
        }
    }
    assert_eq!(rejects as u64, rejected);

    // The build's acceptance report agrees with the card and the reject shards.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("qa/acceptance.json")).unwrap())
            .unwrap();
    eprintln!("real endpoint acceptance report: {report}");
    assert_eq!(report["accepted"], accepted);
    assert_eq!(report["rejected"], rejected);
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    for shard in parquet_files(&out.join("rejects")) {
        for reject in retina_shards::read_rejects(&shard).unwrap() {
            let mut codes: Vec<String> = reject.reasons.iter().map(|r| r.code.clone()).collect();
            codes.sort();
            codes.dedup();
            for code in codes {
                *reasons.entry(code).or_default() += 1;
            }
        }
    }
    assert_eq!(report["reasons"], json!(reasons));
    assert!(
        text(&output).contains("acceptance: "),
        "the build prints the report"
    );

    let verify = Command::new(BIN).arg("verify").arg(&out).output().unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn vision_against_this_text_only_server_stops_the_run_at_start() {
    let (url, model) = endpoint();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let config = write_config(work.path(), true);
    let output = Command::new(BIN)
        .args([
            "build",
            "--no-qa",
            "--limit",
            "3",
            "--endpoint",
            &url,
            "--model",
            &model,
        ])
        .arg("--out")
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("the binary starts");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("without vision") && stderr.contains("vision = false"),
        "{}",
        text(&output)
    );
    assert!(parquet_files(&out.join("shards")).is_empty());
}

fn request(system: &str, user: &str) -> CaptionRequest {
    let record = Record::new("probe", "probe.png", PathBuf::from("probe.png"));
    CaptionRequest {
        record: Arc::new(record),
        facts: Arc::new(facts()),
        prompt: RenderedPrompt {
            system: system.to_string(),
            user: user.to_string(),
        },
        // A real PNG, so only the server's lack of vision can refuse it.
        image: Some(Arc::new(tiny_png())),
        image_mime: "image/png",
        repair: None,
    }
}

fn tiny_png() -> Vec<u8> {
    let mut bytes = Vec::new();
    image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(8, 8, image::Luma([128])))
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// A small schema the tiny model answers in a few tokens.
fn ok_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["ok"],
        "properties": {"ok": {"type": "boolean"}}
    })
}

fn client(adjust: impl FnOnce(&mut EndpointConfig)) -> OpenAiCaptioner {
    let (url, model) = endpoint();
    let mut config = EndpointConfig::new(url, model, ok_schema());
    config.vision = false;
    config.max_tokens = 32;
    config.temperature = 0.0;
    config.seed = Some(1);
    config.max_retries = 0;
    config.request_timeout = Duration::from_secs(600);
    config
        .extra_body
        .insert("repeat_penalty".into(), json!(1.1));
    adjust(&mut config);
    OpenAiCaptioner::new(config).unwrap()
}

const OK_SYSTEM: &str = "Answer only with JSON. Example answer: {\"ok\": true}";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn finish_reason_length_is_rejected_as_truncated() {
    // The full caption schema cannot be written in 4 tokens (nor in 8, the retry's budget).
    let schema = CaptionSchema::embedded().value().clone();
    let captioner = client(|c| {
        c.schema = schema;
        c.max_tokens = 4;
    });
    let result = runtime().block_on(captioner.caption(request(
        "Describe the fundus photograph as JSON.",
        "A normal fundus.",
    )));
    match result {
        Err(CaptionError::Rejected { code, detail }) => {
            assert_eq!(code, "answer.truncated", "{detail}");
            assert!(detail.contains("max_tokens"), "{detail}");
        }
        other => panic!("expected answer.truncated, got {other:?}"),
    }
}

#[test]
fn an_image_part_to_this_text_only_server_fails_saying_so() {
    let captioner = client(|c| c.vision = true);
    let result = runtime().block_on(captioner.caption(request(OK_SYSTEM, "Is this fine?")));
    match result {
        // 500 is retryable by the SDK rules; with retries spent it is transient, and the message
        // carries the server's own explanation (the preflight turns this into a stop at start).
        Err(CaptionError::Transient { message }) => {
            assert!(message.contains("HTTP 500"), "{message}");
            assert!(
                message.contains("image input is not supported"),
                "{message}"
            );
        }
        other => panic!("expected a transient HTTP 500 about images, got {other:?}"),
    }
}

#[test]
fn an_invalid_schema_gets_400_and_a_rejection_with_the_servers_reason() {
    let captioner = client(|c| c.schema = json!({"type": "nonsense"}));
    let result = runtime().block_on(captioner.caption(request(OK_SYSTEM, "Is this fine?")));
    match result {
        Err(CaptionError::Rejected { code, detail }) => {
            assert_eq!(code, "endpoint.bad_request", "{detail}");
            assert!(detail.contains("HTTP 400"), "{detail}");
            assert!(detail.contains("nonsense"), "{detail}");
        }
        other => panic!("expected endpoint.bad_request, got {other:?}"),
    }
}

#[test]
fn twice_as_many_requests_as_slots_all_succeed() {
    let captioner = Arc::new(client(|_| {}));
    let results = runtime().block_on(async {
        let mut tasks = Vec::new();
        for i in 0..2 * SLOTS {
            let captioner = captioner.clone();
            tasks.push(tokio::spawn(async move {
                captioner
                    .caption(request(OK_SYSTEM, &format!("Request {i}: is this fine?")))
                    .await
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    });
    assert_eq!(results.len(), 2 * SLOTS);
    for (i, result) in results.into_iter().enumerate() {
        let reply = result.unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(reply.finish_reason, "stop", "request {i}");
        let value: Value = serde_json::from_str(&reply.raw)
            .unwrap_or_else(|e| panic!("request {i}: {e}: {}", reply.raw));
        assert!(value["ok"].is_boolean(), "request {i}: {}", reply.raw);
    }
}
