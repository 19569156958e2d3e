//! Batch mode end to end: the real `build-dataset batch ...` commands against the loopback
//! endpoint's in-memory Files and Batches API, and vLLM `run-batch`-style output files.
//! Every test checks the dataset's counts and that `verify` finds shards and journal in agreement.

mod common;
use common::{BIN, text};

use loopback_endpoint::{Endpoint, Spec};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const ITEMS: usize = 12;

/// Twelve unlabelled photographs (generated once per test process), so the endpoint's generic
/// answer is consistent with every item and acceptance depends only on the batch exchange.
fn photos() -> &'static Path {
    static PHOTOS: OnceLock<PathBuf> = OnceLock::new();
    PHOTOS.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("retinalogos-batch-{}", std::process::id()));
        common::unlabelled_photos(&root, ITEMS)
    })
}

struct Case {
    _tmp: tempfile::TempDir,
    out: PathBuf,
    config: PathBuf,
    runtime: tokio::runtime::Runtime,
    endpoint: Endpoint,
}

impl Case {
    fn new() -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("build.toml");
        std::fs::write(&config, "[image]\nsize = 256\n").unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let endpoint = runtime
            .block_on(Endpoint::start(Spec::default(), "127.0.0.1:0"))
            .unwrap();
        Case {
            out: tmp.path().join("out"),
            config,
            _tmp: tmp,
            runtime,
            endpoint,
        }
    }

    /// `build-dataset batch <sub> --out OUT ...`, with the inputs and model for the subcommands
    /// that take them and the endpoint unless `offline`.
    fn batch(&self, sub: &str, extra: &[&str], offline: bool) -> Output {
        let mut command = Command::new(BIN);
        command
            .args(["batch", sub, "--out"])
            .arg(&self.out)
            .arg("--config")
            .arg(&self.config);
        if matches!(sub, "prepare" | "collect") {
            command
                .arg("--images")
                .arg(photos())
                .args(["--model", "loopback-vlm"]);
        }
        if !offline {
            command.args(["--endpoint", &self.endpoint.base_url()]);
        }
        command.args(["--no-qa"].iter().filter(|_| sub == "collect"));
        command.args(extra).output().unwrap()
    }

    /// Writes batch output `lines` to `name` in the dataset folder and collects them (offline).
    fn collect_from_file(&self, name: &str, lines: &str) -> std::path::PathBuf {
        let file = self.out.join(name);
        std::fs::write(&file, lines).unwrap();
        self.ok("collect", &["--from-file", file.to_str().unwrap()], true);
        file
    }

    fn ok(&self, sub: &str, extra: &[&str], offline: bool) -> Output {
        let output = self.batch(sub, extra, offline);
        assert!(output.status.success(), "batch {sub}: {}", text(&output));
        output
    }

    fn http(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("http://{}{path}", self.endpoint.addr());
        self.runtime.block_on(async {
            let client = reqwest::Client::new();
            let request = match method {
                "POST" => client.post(url).json(&body.unwrap_or(json!({}))),
                _ => client.get(url),
            };
            request.send().await.unwrap().json::<Value>().await.unwrap()
        })
    }

    fn script(&self, delay_ms: u64, fail_every: u64) {
        self.http(
            "POST",
            "/batch/script",
            Some(json!({"delay_ms": delay_ms, "fail_every": fail_every})),
        );
    }

    /// (uploads, batches created) the endpoint has seen.
    fn sent(&self) -> (u64, u64) {
        let stats = self.http("GET", "/batch/stats", None);
        (
            stats["uploads"].as_u64().unwrap(),
            stats["batches_created"].as_u64().unwrap(),
        )
    }

    fn state(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.out.join("batch/state.json")).unwrap())
            .unwrap()
    }

    fn counts(&self) -> (u64, u64, u64) {
        let card: Value =
            serde_json::from_str(&std::fs::read_to_string(self.out.join("dataset.json")).unwrap())
                .unwrap();
        let n = |k: &str| card["counts"][k].as_u64().unwrap();
        (n("accepted"), n("rejected"), n("failed"))
    }

    fn verify(&self) {
        let output = Command::new(BIN)
            .arg("verify")
            .arg(&self.out)
            .output()
            .unwrap();
        assert!(output.status.success(), "verify: {}", text(&output));
    }

    fn input_lines(&self, name: &str) -> Vec<Value> {
        std::fs::read_to_string(self.out.join("batch").join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[test]
fn prepare_submit_collect_builds_a_dataset_that_verify_accepts() {
    let case = Case::new();
    case.script(0, 0);
    case.ok("prepare", &[], true);
    let state = case.state();
    assert_eq!(state["files"].as_array().unwrap().len(), 1);
    let lines = case.input_lines("input-00001.jsonl");
    assert_eq!(lines.len(), ITEMS);
    let line = &lines[0];
    assert_eq!(line["method"], "POST");
    assert_eq!(line["url"], "/v1/chat/completions");
    assert_eq!(line["custom_id"].as_str().unwrap().len(), 32);
    // The online client's body: model, system + user with the image inline, strict schema.
    assert_eq!(line["body"]["model"], "loopback-vlm");
    assert_eq!(line["body"]["response_format"]["type"], "json_schema");
    assert_eq!(
        line["body"]["response_format"]["json_schema"]["strict"],
        true
    );
    let image = &line["body"]["messages"][1]["content"][1]["image_url"]["url"];
    assert!(
        image
            .as_str()
            .unwrap()
            .starts_with("data:image/jpeg;base64,"),
        "{line}"
    );

    case.ok("submit", &[], false);
    assert_eq!(case.sent(), (1, 1));
    case.ok("collect", &["--wait", "--poll-secs", "0.1"], false);
    assert_eq!(case.counts(), (ITEMS as u64, 0, 0));
    case.verify();
    assert_eq!(case.state()["files"][0]["collected"], true);
    let status = case.ok("status", &["--json"], false);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["files"][0]["status"], "completed");

    // Everything is done: a new prepare asks nothing.
    case.ok("prepare", &[], true);
    assert_eq!(case.state()["files"].as_array().unwrap().len(), 1);
}

#[test]
fn a_restart_between_submit_and_collect_resumes_without_submitting_again() {
    let case = Case::new();
    case.script(1500, 0);
    case.ok("prepare", &[], true);
    case.ok("submit", &[], false);
    // The batch is still running: collect takes nothing and says so.
    let early = case.ok("collect", &[], false);
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("still running"),
        "{}",
        text(&early)
    );
    assert!(!case.out.join("dataset.json").exists() || case.counts() == (0, 0, 0));
    // The process "died" here. Everything is run again from the top.
    case.ok("prepare", &[], true);
    assert_eq!(
        case.state()["files"].as_array().unwrap().len(),
        1,
        "items in an open batch are not prepared again"
    );
    case.ok("submit", &[], false);
    assert_eq!(case.sent(), (1, 1), "nothing uploaded or created twice");
    // A crash after creating the batch but before saving its id: the id is looked up, not redone.
    let state_path = case.out.join("batch/state.json");
    let mut state = case.state();
    state["files"][0]["batch_id"] = Value::Null;
    std::fs::write(&state_path, state.to_string()).unwrap();
    case.ok("submit", &[], false);
    assert_eq!(case.sent(), (1, 1));
    assert_eq!(case.state()["files"][0]["batch_id"], "batch_1");

    case.ok("collect", &["--wait", "--poll-secs", "0.2"], false);
    assert_eq!(case.counts(), (ITEMS as u64, 0, 0));
    case.verify();
    // Collecting again finds nothing new and writes nothing twice.
    case.ok("collect", &[], false);
    assert_eq!(case.counts(), (ITEMS as u64, 0, 0));
    case.verify();
}

#[test]
fn input_files_are_split_at_the_request_limit() {
    let case = Case::new();
    case.ok("prepare", &["--max-requests", "5"], true);
    let state = case.state();
    let files = state["files"].as_array().unwrap();
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| f["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![5, 5, 2]);
    let mut ids = std::collections::HashSet::new();
    for (i, file) in files.iter().enumerate() {
        let name = file["name"].as_str().unwrap();
        assert_eq!(name, format!("input-{:05}.jsonl", i + 1));
        let lines = case.input_lines(name);
        assert_eq!(lines.len() as u64, file["requests"].as_u64().unwrap());
        for line in lines {
            assert!(ids.insert(line["custom_id"].as_str().unwrap().to_string()));
        }
    }
    assert_eq!(ids.len(), ITEMS, "every item in exactly one file");
}

#[test]
fn a_vllm_run_batch_output_file_is_ingested() {
    let case = Case::new();
    case.ok("prepare", &[], true);
    let lines = case.input_lines("input-00001.jsonl");
    // What `python -m vllm.entrypoints.openai.run_batch` writes: input order, vllm- ids, extra
    // body fields, and a failure as status 400 with no body and the error as a plain string.
    let answer = loopback_endpoint::default_answer().to_string();
    let mut output = String::new();
    for (n, line) in lines.iter().enumerate() {
        let id = line["custom_id"].as_str().unwrap();
        let row = if n == 3 {
            json!({"id": format!("vllm-{n:032x}"), "custom_id": id,
                   "response": {"status_code": 400, "request_id": format!("vllm-batch-{n}"), "body": null},
                   "error": "This model's maximum context length is 4096 tokens."})
        } else {
            json!({"id": format!("vllm-{n:032x}"), "custom_id": id,
                   "response": {"status_code": 200, "request_id": format!("vllm-batch-{n}"), "body": {
                       "id": format!("chatcmpl-{n}"), "object": "chat.completion", "created": 1, "model": "loopback-vlm",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "refusal": null,
                                    "reasoning_content": null, "tool_calls": []},
                                    "logprobs": null, "finish_reason": "stop", "stop_reason": null}],
                       "usage": {"prompt_tokens": 900, "total_tokens": 1100, "completion_tokens": 200, "prompt_tokens_details": null},
                       "prompt_logprobs": null, "kv_transfer_params": null}},
                   "error": null})
        };
        output.push_str(&format!("{row}\n"));
    }
    case.collect_from_file("vllm-out.jsonl", &output);
    assert_eq!(case.counts(), (ITEMS as u64 - 1, 0, 1));
    case.verify();
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(case.out.join("dataset.json")).unwrap())
            .unwrap();
    assert!(
        card["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("batch-file:"),
        "{}",
        card["endpoint"]
    );
    assert_eq!(case.state()["files"][0]["collected"], true);
    // The failed item is prepared again, and only it.
    case.ok("prepare", &[], true);
    let again = case.input_lines("input-00002.jsonl");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["custom_id"], lines[3]["custom_id"]);
}

#[test]
fn error_lines_become_failed_items_that_the_next_round_retries() {
    let case = Case::new();
    case.script(0, 4);
    case.ok("prepare", &[], true);
    case.ok("submit", &[], false);
    case.ok("collect", &["--wait", "--poll-secs", "0.1"], false);
    let failed = (ITEMS / 4) as u64;
    assert_eq!(case.counts(), (ITEMS as u64 - failed, 0, failed));
    case.verify();
    assert!(case.out.join("batch/input-00001.errors.jsonl").exists());

    case.script(0, 0);
    case.ok("prepare", &[], true);
    assert_eq!(case.input_lines("input-00002.jsonl").len() as u64, failed);
    case.ok("submit", &[], false);
    assert_eq!(case.sent(), (2, 2));
    case.ok("collect", &["--wait", "--poll-secs", "0.1"], false);
    assert_eq!(case.counts(), (ITEMS as u64, 0, 0));
    case.verify();
}

#[test]
fn batch_answers_are_priced_at_the_batch_rate_in_the_spend_ledger_once() {
    let case = Case::new();
    // 100 dollars per million tokens both ways, the default batch factor (half).
    std::fs::write(
        &case.config,
        "[image]\nsize = 256\n[cost.prices.\"loopback-vlm\"]\ninput = 100\noutput = 100\n",
    )
    .unwrap();
    case.ok("prepare", &[], true);
    let lines = case.input_lines("input-00001.jsonl");
    let answer = loopback_endpoint::default_answer().to_string();
    let mut output = String::new();
    for (n, line) in lines.iter().enumerate() {
        let id = line["custom_id"].as_str().unwrap();
        let row = if n == 0 {
            // An error line is not billed.
            json!({"id": "batch_req_0", "custom_id": id, "response": null,
                   "error": {"code": "batch_expired", "message": "expired"}})
        } else {
            json!({"id": format!("batch_req_{n}"), "custom_id": id,
                   "response": {"status_code": 200, "request_id": "r", "body": {
                       "id": "c", "object": "chat.completion", "created": 1, "model": "loopback-vlm",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 900, "completion_tokens": 100, "total_tokens": 1000,
                                 "prompt_tokens_details": {"cached_tokens": 0}}}},
                   "error": null})
        };
        output.push_str(&format!("{row}\n"));
    }
    let out_file = case.collect_from_file("batch-out.jsonl", &output);
    let answered = ITEMS as u64 - 1;
    assert_eq!(case.counts(), (answered, 0, 1));
    let expected_usd = answered as f64 * 1000.0 * 100.0 / 1e6 * 0.5;
    let ledger = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(case.out.join("journal/spend.json")).unwrap())
            .unwrap()
    };
    let spend = ledger();
    assert_eq!(spend["requests"], answered, "{spend}");
    assert_eq!(spend["batch_requests"], answered, "{spend}");
    assert_eq!(spend["prompt_tokens"], answered * 900, "{spend}");
    assert_eq!(spend["completion_tokens"], answered * 100, "{spend}");
    assert!(
        (spend["usd"].as_f64().unwrap() - expected_usd).abs() < 1e-9,
        "{spend}"
    );
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(case.out.join("dataset.json")).unwrap())
            .unwrap();
    assert!(
        (card["cost"]["usd"].as_f64().unwrap() - expected_usd).abs() < 1e-9,
        "{card}"
    );
    // Collecting the same file again commits nothing and pays nothing twice.
    case.ok(
        "collect",
        &["--from-file", out_file.to_str().unwrap()],
        true,
    );
    assert_eq!(ledger(), spend);
    case.verify();
}
