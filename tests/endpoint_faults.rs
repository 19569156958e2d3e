//! End-to-end fault tests: the real `build-dataset` binary against the loopback endpoint with one
//! injected fault each. Every test shows the right outcome (retried and accepted, rejected with a
//! reason, failed and retried by the next run, or the run stopped cleanly and resumed) and that
//! every item ends in exactly one terminal state (the card's counts add up to the inputs and
//! `verify` finds shards and journal in agreement).

mod common;
use common::{BIN, text};

use loopback_endpoint::{Endpoint, FaultRule, Latency, Spec};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

const ITEMS: u64 = 6;
const SECRET: &str = "sk-loopback-secret-9f3b2c";
/// Every build first sends one preflight request (endpoint, key and schema check) before items.
const PREFLIGHT: u64 = 1;

/// Six unlabelled photographs (generated once per test process), so the endpoint's generic answer
/// is consistent with every item and acceptance depends only on the exchange.
fn photos() -> &'static Path {
    static PHOTOS: OnceLock<PathBuf> = OnceLock::new();
    PHOTOS.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("retinalogos-faults-{}", std::process::id()));
        common::unlabelled_photos(&root, ITEMS as usize)
    })
}

struct Case {
    _tmp: tempfile::TempDir,
    out: PathBuf,
    config: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Case {
    fn new() -> Case {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("build.toml");
        std::fs::write(
            &config,
            "[image]\nsize = 256\n\n[captioner]\nmax_retries = 3\ntimeout_secs = 1\n\
             initial_concurrency = 2\nconcurrency = 4\napi_key_env = \"LOOPBACK_TEST_KEY\"\n",
        )
        .unwrap();
        Case {
            out: tmp.path().join("out"),
            config,
            _tmp: tmp,
            runtime: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    fn endpoint(&self, faults: &[&str]) -> Endpoint {
        self.endpoint_with(Spec {
            faults: faults
                .iter()
                .map(|f| f.parse::<FaultRule>().unwrap())
                .collect(),
            ..fast()
        })
    }

    fn endpoint_with(&self, spec: Spec) -> Endpoint {
        self.runtime
            .block_on(Endpoint::start(spec, "127.0.0.1:0"))
            .unwrap()
    }

    fn build(&self, endpoint: &Endpoint) -> Output {
        self.build_command()
            .args(["--endpoint", &endpoint.base_url()])
            .output()
            .unwrap()
    }

    /// The build of the photographs with this case's configuration and key, no endpoint flag.
    fn build_command(&self) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(["build", "--out", self.out.to_str().unwrap(), "--images"])
            .arg(photos())
            .args(["--model", "loopback-vlm", "--config"])
            .arg(&self.config)
            .env("LOOPBACK_TEST_KEY", SECRET);
        command
    }

    fn counts(&self) -> (u64, u64, u64) {
        let card: Value =
            serde_json::from_str(&std::fs::read_to_string(self.out.join("dataset.json")).unwrap())
                .unwrap();
        let n = |k: &str| card["counts"][k].as_u64().unwrap();
        (n("accepted"), n("rejected"), n("failed"))
    }

    /// Every item in exactly one terminal state, and shards and journal agree.
    fn assert_all_terminal(&self) -> (u64, u64, u64) {
        let (a, r, f) = self.counts();
        assert_eq!(a + r + f, ITEMS, "accepted {a} rejected {r} failed {f}");
        let verify = Command::new(BIN)
            .args(["verify", self.out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(verify.status.success(), "{}", text(&verify));
        (a, r, f)
    }

    fn rejects_text(&self) -> String {
        // Reason codes are stored as plain strings in the rejects Parquet (uncompressed enough
        // to find for short codes) and in the QA report.
        std::fs::read_to_string(self.out.join("qa/report.json")).unwrap_or_default()
    }
}

fn fast() -> Spec {
    Spec {
        slots: 8,
        queue: 8,
        latency: Latency::Fixed(Duration::from_millis(5)),
        api_key: Some(SECRET.to_string()),
        ..Spec::default()
    }
}

/// A fault that goes away on retry: every item still ends accepted. Faults hit even-numbered
/// requests 2 to 7 (`from=2,to=7`): the preflight (request 1) passes, each item's first attempt
/// is hit, and its retry, which waits at least 300 ms, comes after all of them and succeeds.
fn retried_and_accepted(faults: &[&str]) {
    let case = Case::new();
    let endpoint = case.endpoint(faults);
    let build = case.build(&endpoint);
    assert!(build.status.success(), "{faults:?}\n{}", text(&build));
    assert_eq!(
        case.assert_all_terminal(),
        (ITEMS, 0, 0),
        "{faults:?}\n{}",
        text(&build)
    );
    assert!(
        endpoint.stats().faults.load(Ordering::Relaxed) >= ITEMS / 2,
        "{faults:?}: too few faults injected"
    );
    assert_eq!(
        endpoint.stats().completed.load(Ordering::Relaxed),
        ITEMS + PREFLIGHT,
        "each item paid once"
    );
}

#[test]
fn rate_limited_429_with_retry_after_is_retried_and_accepted() {
    retried_and_accepted(&["429:from=2,to=7,after=300"]);
}

#[test]
fn server_errors_500_are_retried_and_accepted() {
    retried_and_accepted(&["500:from=2,to=7"]);
}

#[test]
fn overloaded_503_is_retried_and_accepted() {
    retried_and_accepted(&["503:from=2,to=7"]);
}

#[test]
fn connection_resets_are_retried_and_accepted() {
    retried_and_accepted(&["reset:from=2,to=7"]);
}

#[test]
fn truncated_bodies_are_retried_and_accepted() {
    retried_and_accepted(&["truncated:from=2,to=7"]);
}

#[test]
fn slow_bodies_time_out_and_are_retried_and_accepted() {
    // The client's timeout is 1 s; these bodies arrive after 3 s.
    retried_and_accepted(&["slow:from=2,to=7,delay=3000"]);
}

#[test]
fn invalid_json_bodies_are_retried_and_accepted() {
    retried_and_accepted(&["invalid-json:from=2,to=7"]);
}

#[test]
fn a_full_queue_answers_429_and_the_client_backs_off_and_finishes() {
    let case = Case::new();
    // One slot and no queue: with four in flight most first attempts are refused.
    let endpoint = case.endpoint_with(Spec {
        slots: 1,
        queue: 0,
        latency: Latency::Fixed(Duration::from_millis(50)),
        ..fast()
    });
    let build = case.build(&endpoint);
    assert!(build.status.success(), "{}", text(&build));
    assert_eq!(case.assert_all_terminal(), (ITEMS, 0, 0));
    assert_eq!(endpoint.stats().max_active.load(Ordering::Relaxed), 1);
    assert_eq!(
        endpoint.stats().completed.load(Ordering::Relaxed),
        ITEMS + PREFLIGHT
    );
}

/// A fault on every request that no retry can fix: every item ends rejected with `code`.
fn rejected_with(fault: &str, code: &str) -> Endpoint {
    let case = Case::new();
    let endpoint = case.endpoint(&[fault]);
    let build = case.build(&endpoint);
    assert!(build.status.success(), "{fault}\n{}", text(&build));
    assert_eq!(case.assert_all_terminal(), (0, ITEMS, 0), "{fault}");
    let report = case.rejects_text();
    assert!(
        report.contains(code),
        "{fault}: {code} not in the QA report:\n{report}"
    );
    endpoint
}

#[test]
fn schema_violating_answers_are_rejected_with_the_schema_reason() {
    rejected_with("schema-violation", "schema");
}

#[test]
fn refusals_are_rejected_with_the_refusal_reason() {
    rejected_with("refusal", "answer.refusal");
}

#[test]
fn content_filter_stops_are_rejected() {
    rejected_with("content-filter", "answer.content_filter");
}

#[test]
fn length_stops_are_retried_once_with_more_room_then_rejected() {
    let endpoint = rejected_with("length", "answer.truncated");
    // Exactly two attempts per item: the first, then one with doubled max_tokens.
    assert_eq!(
        endpoint.stats().requests.load(Ordering::Relaxed),
        2 * ITEMS + PREFLIGHT
    );
}

#[test]
fn persistent_server_errors_end_failed_and_the_next_run_retries_them() {
    let case = Case::new();
    let broken = case.endpoint(&["500"]);
    let first = case.build(&broken);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(case.assert_all_terminal(), (0, 0, ITEMS));
    // 1 attempt + 3 retries per item, no more.
    assert_eq!(
        broken.stats().requests.load(Ordering::Relaxed),
        4 * ITEMS + PREFLIGHT
    );
    let healthy = case.endpoint(&[]);
    let second = case.build(&healthy);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(case.assert_all_terminal(), (ITEMS, 0, 0));
}

/// A fault that stops the run: exit status 2, a clear message, nothing lost, and the same
/// command against a healthy endpoint finishes every item.
fn stops_cleanly_and_resumes(fault: &str, message: &str) {
    let case = Case::new();
    let endpoint = case.endpoint(&[fault]);
    let fault = fault.split(':').next().unwrap_or(fault);
    let first = case.build(&endpoint);
    assert_eq!(first.status.code(), Some(2), "{}", text(&first));
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains(message),
        "{fault}: {message:?} not in\n{stderr}"
    );
    let (a, r, f) = case.counts();
    // Answers that arrived before the fatal one are kept; nothing is marked failed or rejected.
    assert_eq!(
        (r, f),
        (0, 0),
        "a stopped run marks nothing failed or rejected"
    );
    assert!(a < ITEMS, "the run went on after the fatal answer");
    let healthy = case.endpoint(&[]);
    let second = case.build(&healthy);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(case.assert_all_terminal(), (ITEMS, 0, 0));
    assert_no_secret(&case, &[&first, &second]);
}

fn assert_no_secret(case: &Case, outputs: &[&Output]) {
    for output in outputs {
        assert!(
            !text(output).contains(SECRET),
            "the API key leaked into the output"
        );
    }
    let mut stack = vec![case.out.clone()];
    while let Some(dir) = stack.pop() {
        // A run refused before it starts writes nothing at all.
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                let found = bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes());
                assert!(!found, "the API key leaked into {}", path.display());
            }
        }
    }
}

#[test]
fn insufficient_quota_stops_the_run_cleanly_and_loses_nothing() {
    stops_cleanly_and_resumes("insufficient-quota", "quota");
}

#[test]
fn authentication_errors_stop_the_run_cleanly_and_never_show_the_key() {
    // Mid-run (the preflight, request 1, passes): the run stops with exit status 2.
    stops_cleanly_and_resumes("401:every=2", "authentication failed");
}

#[test]
fn a_wrong_key_is_refused_before_any_item_and_never_shown() {
    let case = Case::new();
    let endpoint = case.endpoint_with(Spec {
        api_key: Some("sk-the-right-one".to_string()),
        ..fast()
    });
    let build = case.build(&endpoint);
    assert!(!build.status.success(), "{}", text(&build));
    assert!(
        text(&build).contains("LOOPBACK_TEST_KEY"),
        "the message names the variable: {}",
        text(&build)
    );
    assert_eq!(endpoint.stats().completed.load(Ordering::Relaxed), 0);
    assert_no_secret(&case, &[&build]);
}

#[test]
fn a_lost_run_is_redone_from_the_response_cache_without_paying_again() {
    let case = Case::new();
    let first = case.endpoint(&[]);
    let build = case.build(&first);
    assert!(build.status.success(), "{}", text(&build));
    assert_eq!(
        first.stats().completed.load(Ordering::Relaxed),
        ITEMS + PREFLIGHT
    );
    // Lose everything but the cache, as a crash before the first shard commit would.
    for part in ["journal", "shards", "rejects", "dataset.json", "qa"] {
        let path = case.out.join(part);
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else if path.exists() {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let second = case.endpoint(&[]);
    let rebuild = case.build(&second);
    assert!(rebuild.status.success(), "{}", text(&rebuild));
    assert_eq!(case.assert_all_terminal(), (ITEMS, 0, 0));
    assert_eq!(
        second.stats().requests.load(Ordering::Relaxed),
        PREFLIGHT,
        "a cached answer was paid again"
    );
    assert_no_secret(&case, &[&build, &rebuild]);
}

/// A server enforcing 4 requests per 2 s fixed window (and saying so in `x-ratelimit-*`).
fn rate_limited_server() -> Spec {
    Spec {
        rate_limit: Some(loopback_endpoint::RateLimit {
            requests: 4,
            tokens: 100_000_000,
            window: Duration::from_secs(2),
            enforce: true,
        }),
        ..fast()
    }
}

#[test]
fn a_configured_rate_limit_gets_no_429_from_a_rate_limited_server() {
    let case = Case::new();
    // 3 per 2 s, evenly paced: any 2 s holds at most 3 items plus the preflight, within the 4.
    let mut config = std::fs::read_to_string(&case.config).unwrap();
    config.push_str("rate_limit_requests = 3\nrate_limit_window_secs = 2\n");
    std::fs::write(&case.config, config).unwrap();
    let endpoint = case.endpoint_with(rate_limited_server());
    let build = case.build(&endpoint);
    assert!(build.status.success(), "{}", text(&build));
    assert_eq!(case.assert_all_terminal(), (ITEMS, 0, 0));
    let stats = endpoint.stats();
    assert_eq!(
        stats.rate_limited.load(Ordering::Relaxed),
        0,
        "{}",
        stats.to_json()
    );
    assert_eq!(stats.completed.load(Ordering::Relaxed), ITEMS + PREFLIGHT);
}

#[test]
fn without_a_configured_limit_the_servers_headers_still_prevent_a_429_storm() {
    // The first burst (4 in flight plus the preflight) overruns the window; after that the
    // client has learned the limit and the reset from the headers, so 429s stay few.
    let case = Case::new();
    let mut config = std::fs::read_to_string(&case.config).unwrap();
    config.push_str("rate_limit_window_secs = 2\ninitial_concurrency = 4\n");
    let config = config.replace("initial_concurrency = 2\n", "");
    std::fs::write(&case.config, config).unwrap();
    let endpoint = case.endpoint_with(rate_limited_server());
    let build = case.build(&endpoint);
    assert!(build.status.success(), "{}", text(&build));
    assert_eq!(case.assert_all_terminal(), (ITEMS, 0, 0));
    let limited = endpoint.stats().rate_limited.load(Ordering::Relaxed);
    assert!(limited <= ITEMS / 2, "{limited} answers were 429");
}

/// Answers that break the schema are re-asked with the validator's messages (the repair loop) and
/// end accepted: requests 2 to 6 violate the schema, and five repair attempts per item are more
/// than the faults can ever take from one item.
#[test]
fn schema_violating_answers_are_repaired_by_a_re_ask_and_accepted() {
    let case = Case::new();
    let mut config = std::fs::read_to_string(&case.config).unwrap();
    config.push_str("\n[prompt]\nrepair_attempts = 5\n");
    std::fs::write(&case.config, config).unwrap();
    let endpoint = case.endpoint(&["schema-violation:from=2,to=6"]);
    let build = case.build(&endpoint);
    assert!(build.status.success(), "{}", text(&build));
    assert_eq!(
        case.assert_all_terminal(),
        (ITEMS, 0, 0),
        "{}",
        text(&build)
    );
    let faults = endpoint.stats().faults.load(Ordering::Relaxed);
    assert_eq!(faults, 5, "the scripted schema violations were all sent");
    // Every violating answer was followed by one more request (its re-ask), and nothing else.
    assert_eq!(
        endpoint.stats().requests.load(Ordering::Relaxed),
        PREFLIGHT + ITEMS + faults
    );
}

/// `captioner.endpoints`: two replicas, one answering 500 to everything. Every item ends accepted
/// by the healthy one, and the broken one is taken out after its first failures.
#[test]
fn replicas_route_around_a_broken_one_and_every_item_is_accepted() {
    let case = Case::new();
    let broken = case.endpoint(&["500"]);
    let good = case.endpoint(&[]);
    let mut config = std::fs::read_to_string(&case.config).unwrap();
    config = config.replace("max_retries = 3", "max_retries = 1");
    config.push_str(&format!(
        "endpoints = [{{ url = \"{}\", weight = 3 }}, {{ url = \"{}\" }}]\n",
        broken.base_url(),
        good.base_url()
    ));
    std::fs::write(&case.config, config).unwrap();
    let build = case.build_command().output().unwrap();
    assert!(build.status.success(), "{}", text(&build));
    assert_eq!(
        case.assert_all_terminal(),
        (ITEMS, 0, 0),
        "{}",
        text(&build)
    );
    // The healthy replica answered every item (plus its preflight); the broken one, despite
    // its higher weight, got only the requests sent before it was first taken out.
    assert_eq!(
        good.stats().completed.load(Ordering::Relaxed),
        ITEMS + PREFLIGHT
    );
    assert!(broken.stats().requests.load(Ordering::Relaxed) < 2 * ITEMS);
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(case.out.join("dataset.json")).unwrap())
            .unwrap();
    assert!(
        card.to_string().contains(&good.base_url()),
        "the card names the replicas"
    );
}
