//! The operator's experience, end to end: graceful stop on SIGTERM (nothing lost, resume
//! completes), an immediate stop on a second signal, `status` during a run, the metrics endpoint,
//! configuration precedence and errors, and secrets never in output.

mod common;
use common::{BIN, text};

use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("binary starts")
}

fn spawn_build(out: &Path, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["build", "--out", out.to_str().unwrap(), "--no-qa"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts")
}

/// Waits (bounded) until the running build has finished at least `items` items.
fn wait_for_progress(out: &Path, items: u64, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(text) = std::fs::read_to_string(out.join("journal/run-state.json"))
            && let Ok(state) = serde_json::from_str::<Value>(&text)
            && state["accepted"].as_u64().unwrap_or(0) >= items
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn card_counts(out: &Path) -> (u64, u64) {
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap();
    (
        card["counts"]["accepted"].as_u64().unwrap(),
        card["counts"]["rejected"].as_u64().unwrap(),
    )
}

#[test]
fn sigterm_stops_gracefully_and_the_next_run_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("graceful");
    let mut child = spawn_build(&out, &["--limit", "150"]);
    let running = wait_for_progress(&out, 5, &mut child);
    assert!(running, "the build ended before it could be stopped");
    {
        // `status` from another process sees the run going.
        let status = run(&["status", out.to_str().unwrap(), "--json"]);
        assert!(status.status.success(), "{}", text(&status));
        let state: Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(state["state"], "running", "{state}");
        assert_eq!(state["live"]["total"].as_u64(), Some(150), "{state}");
        signal(&child, "TERM");
    }
    let first = child.wait_with_output().unwrap();
    if running {
        assert_eq!(
            first.status.code(),
            Some(2),
            "stopped early: {}",
            text(&first)
        );
        let stderr = String::from_utf8_lossy(&first.stderr);
        assert!(stderr.contains("stop requested"), "{stderr}");
        assert!(stderr.contains("Run the same command again"), "{stderr}");
    }
    let verify = run(&["verify", out.to_str().unwrap()]);
    assert!(verify.status.success(), "after the stop: {}", text(&verify));
    let (accepted_after_stop, _) = card_counts(&out);

    let second = run(&[
        "build",
        "--out",
        out.to_str().unwrap(),
        "--no-qa",
        "--limit",
        "150",
    ]);
    assert!(second.status.success(), "{}", text(&second));
    let verify = run(&["verify", out.to_str().unwrap()]);
    assert!(verify.status.success(), "after resuming: {}", text(&verify));
    let (accepted, rejected) = card_counts(&out);
    assert_eq!(accepted + rejected, 150, "every item exactly once");
    assert!(
        accepted >= accepted_after_stop,
        "nothing committed was lost"
    );
    let status = run(&["status", out.to_str().unwrap(), "--json"]);
    let state: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(state["state"], "finished", "{state}");
}

#[test]
fn a_second_signal_stops_at_once_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("twice");
    let mut child = spawn_build(&out, &["--limit", "150"]);
    if wait_for_progress(&out, 3, &mut child) {
        signal(&child, "INT");
        std::thread::sleep(Duration::from_millis(50));
        if child.try_wait().unwrap().is_none() {
            signal(&child, "INT");
        }
    }
    let first = child.wait_with_output().unwrap();
    assert!(
        matches!(first.status.code(), Some(0 | 2 | 130)),
        "{}",
        text(&first)
    );
    let second = run(&[
        "build",
        "--out",
        out.to_str().unwrap(),
        "--no-qa",
        "--limit",
        "150",
    ]);
    assert!(second.status.success(), "{}", text(&second));
    let verify = run(&["verify", out.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", text(&verify));
    let (accepted, rejected) = card_counts(&out);
    assert_eq!(accepted + rejected, 150);
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn metrics_endpoint_serves_prometheus_text_during_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("metrics");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = spawn_build(&out, &["--limit", "100", "--metrics-addr", &addr]);
    let mut seen = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.is_none() && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
        if let Some(body) = http_get(&addr, "/metrics")
            && body.contains("retinalogos_items_accepted_total")
        {
            seen = Some(body);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let body = seen.expect("the metrics endpoint answered during the run");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("# TYPE retinalogos_items_accepted_total counter"),
        "{body}"
    );
    assert!(body.contains("retinalogos_requests_in_flight"), "{body}");
}

#[test]
fn configuration_precedence_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("build.toml");
    let init = run(&["config", "init", file.to_str().unwrap()]);
    assert!(init.status.success(), "{}", text(&init));
    std::fs::write(
        &file,
        "[image]\nsize = 512\n\n[captioner]\nconcurrency = 4\n",
    )
    .unwrap();
    let show = Command::new(BIN)
        .args(["config", "show", "--config", file.to_str().unwrap()])
        .env("RETINALOGOS_CAPTIONER_CONCURRENCY", "32")
        .output()
        .unwrap();
    assert!(show.status.success(), "{}", text(&show));
    let stdout = String::from_utf8_lossy(&show.stdout);
    assert!(
        stdout.contains("size = 512"),
        "file over defaults: {stdout}"
    );
    assert!(
        stdout.contains("concurrency = 32"),
        "environment over file: {stdout}"
    );

    std::fs::write(&file, "[image]\nsise = 512\n").unwrap();
    let out = tmp.path().join("out");
    let build = run(&[
        "build",
        "--out",
        out.to_str().unwrap(),
        "--config",
        file.to_str().unwrap(),
    ]);
    assert_eq!(build.status.code(), Some(1), "{}", text(&build));
    let stderr = String::from_utf8_lossy(&build.stderr);
    assert!(stderr.contains("image.sise"), "{stderr}");
    assert!(stderr.contains("did you mean size"), "{stderr}");
    assert!(stderr.contains("build.toml"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn secrets_never_appear_in_output_or_files() {
    let secret = "sk-test-DO-NOT-PRINT-4b1d";
    let tmp = tempfile::tempdir().unwrap();
    let show = Command::new(BIN)
        .args(["config", "show"])
        .env("OPENAI_API_KEY", secret)
        .output()
        .unwrap();
    assert!(show.status.success(), "{}", text(&show));
    assert!(!text(&show).contains(secret));
    assert!(String::from_utf8_lossy(&show.stdout).contains("OPENAI_API_KEY (set)"));

    // A build against a closed loopback port fails its items; the key must not leak anywhere.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let out = tmp.path().join("out");
    let build = Command::new(BIN)
        .args(["build", "--out", out.to_str().unwrap(), "--limit", "2"])
        .args(["--endpoint", &url, "--model", "some-model"])
        .env("OPENAI_API_KEY", secret)
        .env("RETINALOGOS_CAPTIONER_MAX_RETRIES", "0")
        .env("RETINALOGOS_LOG", "debug")
        .output()
        .unwrap();
    assert!(!text(&build).contains(secret), "{}", text(&build));
    for entry in walk(&out) {
        let bytes = std::fs::read(&entry).unwrap();
        let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "the key leaked into {}", entry.display());
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}
