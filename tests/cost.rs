//! Cost end to end: the real `build-dataset` binary against the loopback endpoint, which reports
//! usage in every answer. A `--max-cost` budget stops the run cleanly and the next run finishes
//! with nothing lost and nothing paid twice; response-cache hits cost nothing; `plan` estimates
//! before anything is sent; the `json_object` fallback works against a server that refuses
//! `json_schema`.

mod common;
use common::{BIN, text};

use loopback_endpoint::{Endpoint, Latency, Spec};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

const ITEMS: u64 = 6;
/// Dollars per million tokens of the loopback model in these tests (both directions).
const PRICE: f64 = 100.0;

/// Six unlabelled photographs, generated once per test process.
fn photos() -> &'static Path {
    static PHOTOS: OnceLock<PathBuf> = OnceLock::new();
    PHOTOS.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("retinalogos-cost-{}", std::process::id()));
        common::unlabelled_photos(&root, ITEMS as usize)
    })
}

struct Case {
    tmp: tempfile::TempDir,
    config: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Case {
    /// One request at a time, so a budget stop leaves a predictable amount done.
    fn new(extra: &str) -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("build.toml");
        std::fs::write(
            &config,
            format!(
                "[image]\nsize = 256\n\n[captioner]\nmax_retries = 2\ntimeout_secs = 5\n\
                 initial_concurrency = 1\nconcurrency = 1\n{extra}\n\
                 [cost.prices.\"loopback-vlm\"]\ninput = {PRICE}\noutput = {PRICE}\n"
            ),
        )
        .unwrap();
        Case {
            tmp,
            config,
            runtime: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    fn endpoint(&self, spec: Spec) -> Endpoint {
        self.runtime
            .block_on(Endpoint::start(spec, "127.0.0.1:0"))
            .unwrap()
    }

    fn out(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn run(&self, command: &str, out: &Path, endpoint: &Endpoint, extra: &[&str]) -> Output {
        Command::new(BIN)
            .args([command, "--out", out.to_str().unwrap(), "--images"])
            .arg(photos())
            .args([
                "--endpoint",
                &endpoint.base_url(),
                "--model",
                "loopback-vlm",
            ])
            .arg("--config")
            .arg(&self.config)
            .args(extra)
            .output()
            .unwrap()
    }
}

fn fast() -> Spec {
    Spec {
        slots: 4,
        queue: 4,
        latency: Latency::Fixed(Duration::from_millis(5)),
        ..Spec::default()
    }
}

fn card(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap()
}

fn counts(out: &Path) -> (u64, u64, u64) {
    let card = card(out);
    let n = |k: &str| card["counts"][k].as_u64().unwrap();
    (n("accepted"), n("rejected"), n("failed"))
}

fn verify(out: &Path) {
    let verify = Command::new(BIN)
        .args(["verify", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn max_cost_stops_cleanly_and_the_next_run_finishes_without_paying_twice() {
    let case = Case::new("");
    let endpoint = case.endpoint(fast());
    let out = case.out("out");
    // Any answer costs more than this: the run stops after its first one.
    let first = case.run("build", &out, &endpoint, &["--max-cost", "0.000001"]);
    assert_eq!(first.status.code(), Some(2), "{}", text(&first));
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("cost budget reached"), "{stderr}");
    assert!(stderr.contains("Run the same command again"), "{stderr}");
    let (a, r, f) = counts(&out);
    assert!((1..ITEMS).contains(&a), "accepted {a}");
    assert_eq!((r, f), (0, 0));
    verify(&out);
    let spent_first = card(&out)["cost"]["usd"].as_f64().unwrap();
    assert!(spent_first > 0.000001, "{spent_first}");

    // Status reads the run's cost from another process.
    let status = Command::new(BIN)
        .args(["status", out.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["live"]["max_cost_usd"].as_f64(), Some(0.000001));
    assert!(status["live"]["cost_usd"].as_f64().unwrap() > 0.0);

    let second = case.run("build", &out, &endpoint, &[]);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(counts(&out), (ITEMS, 0, 0));
    verify(&out);
    // Every item was answered exactly once over both runs (plus one preflight per run).
    let stats = endpoint.stats();
    assert_eq!(stats.completed.load(Ordering::Relaxed), ITEMS + 2);
    let card = card(&out);
    let cost = &card["cost"];
    assert_eq!(cost["requests"], ITEMS, "{cost}");
    assert_eq!(cost["cache_hits"], 0, "{cost}");
    let tokens =
        cost["prompt_tokens"].as_u64().unwrap() + cost["completion_tokens"].as_u64().unwrap();
    let usd = cost["usd"].as_f64().unwrap();
    assert!(
        (usd - tokens as f64 * PRICE / 1e6).abs() < 1e-6,
        "{usd} for {tokens} tokens"
    );
    assert!(usd > spent_first);
    // The QA report carries the cost section.
    let qa = std::fs::read_to_string(out.join("qa/report.json")).unwrap();
    let qa: Value = serde_json::from_str(&qa).unwrap();
    assert_eq!(qa["cost"]["spend"]["requests"], ITEMS);
}

#[test]
fn answers_from_the_response_cache_cost_nothing() {
    let case = Case::new("");
    let endpoint = case.endpoint(fast());
    let paid = case.out("paid");
    let build = case.run("build", &paid, &endpoint, &["--no-qa"]);
    assert!(build.status.success(), "{}", text(&build));
    assert!(card(&paid)["cost"]["usd"].as_f64().unwrap() > 0.0);
    // A second dataset with the first one's cache: every answer is found there.
    let free = case.out("free");
    std::fs::create_dir_all(&free).unwrap();
    let copied = Command::new("cp")
        .arg("-r")
        .arg(paid.join("cache"))
        .arg(free.join("cache"))
        .status()
        .unwrap();
    assert!(copied.success());
    let before = endpoint.stats().requests.load(Ordering::Relaxed);
    let build = case.run(
        "build",
        &free,
        &endpoint,
        &["--no-qa", "--max-cost", "0.000001"],
    );
    assert!(
        build.status.success(),
        "cache hits must not spend the budget\n{}",
        text(&build)
    );
    assert_eq!(counts(&free), (ITEMS, 0, 0));
    let cost = &card(&free)["cost"];
    assert_eq!(cost["cache_hits"], ITEMS, "{cost}");
    assert_eq!(cost["requests"], 0, "{cost}");
    assert_eq!(cost["usd"].as_f64(), Some(0.0), "{cost}");
    // Only the preflight went over the wire.
    assert_eq!(
        endpoint.stats().requests.load(Ordering::Relaxed),
        before + 1
    );
}

#[test]
fn plan_estimates_before_anything_is_sent() {
    let case = Case::new("[cost]\nexpected_completion_tokens = 400\nexpected_latency_secs = 2.0\n");
    let endpoint = case.endpoint(fast());
    let out = case.out("out");
    let plan = case.run("plan", &out, &endpoint, &["--json", "--concurrency", "3"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["requests"], ITEMS, "{plan}");
    assert_eq!(plan["sampled"], ITEMS, "{plan}");
    assert_eq!(plan["completion_tokens"], ITEMS * 400, "{plan}");
    let prompt = plan["prompt_tokens"].as_u64().unwrap();
    // Text of the real prompts plus the configured 765 tokens per image.
    assert!(prompt > ITEMS * 765, "{plan}");
    let usd = plan["cost_usd"].as_f64().unwrap();
    assert!(
        (usd - (prompt + ITEMS * 400) as f64 * PRICE / 1e6).abs() < 1e-9,
        "{plan}"
    );
    // Through the Batch API the same tokens cost half (the default batch_factor).
    let batch = plan["batch_cost_usd"].as_f64().unwrap();
    assert!((batch - usd / 2.0).abs() < 1e-9, "{plan}");
    assert!((plan["wall_seconds"].as_f64().unwrap() - ITEMS as f64 * 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(
        endpoint.stats().requests.load(Ordering::Relaxed),
        0,
        "plan sends nothing"
    );

    // After a build, nothing is left to plan; the table names the model and its price.
    let build = case.run("build", &out, &endpoint, &["--no-qa"]);
    assert!(build.status.success(), "{}", text(&build));
    let plan = case.run("plan", &out, &endpoint, &[]);
    assert!(plan.status.success(), "{}", text(&plan));
    let table = String::from_utf8_lossy(&plan.stdout);
    assert!(table.contains("loopback-vlm"), "{table}");
    assert!(
        table.contains(&format!("{ITEMS} ({ITEMS} already done)")),
        "{table}"
    );
    assert!(table.contains("input 100"), "{table}");
    assert!(table.contains("50% of the online price"), "{table}");
}

#[test]
fn json_object_fallback_for_servers_that_refuse_json_schema() {
    let spec = || Spec {
        reject_json_schema: true,
        ..fast()
    };
    // The default json_schema is refused at the preflight with advice, before any item.
    let case = Case::new("");
    let endpoint = case.endpoint(spec());
    let out = case.out("out");
    let refused = case.run("build", &out, &endpoint, &["--no-qa"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("response_format = \"json_object\""),
        "{}",
        text(&refused)
    );
    assert_eq!(
        endpoint.stats().format_json_schema.load(Ordering::Relaxed),
        1
    );

    let case = Case::new("response_format = \"json_object\"\n");
    let endpoint = case.endpoint(spec());
    let out = case.out("out");
    let build = case.run("build", &out, &endpoint, &["--no-qa"]);
    assert!(build.status.success(), "{}", text(&build));
    assert_eq!(counts(&out), (ITEMS, 0, 0));
    verify(&out);
    let stats = endpoint.stats();
    assert_eq!(stats.format_json_schema.load(Ordering::Relaxed), 0);
    assert_eq!(stats.format_json_object.load(Ordering::Relaxed), ITEMS + 1);
}
