//! One cell of `build-dataset bench --only endpoint` without building the whole binary, for
//! profiling the client and the loopback endpoint (`perf record -p`):
//!
//! ```sh
//! cargo run --release -p retina-captioner --example endpoint_cell -- 512 50
//! ```
//!
//! The endpoint runs in this process; the client (the same requests and limiter settings as the
//! benchmark) in a child process, so each side's CPU time is its own. Prints the completed
//! requests/s over slots/latency, the 429s, and both sides' CPU time per request. The benchmark
//! in `crates/build-dataset/src/bench/endpoint.rs` is the measurement of record.

use loopback_endpoint::{Endpoint, Latency, Spec};
use retina_captioner::{CaptionRequest, Captioner, EndpointConfig, LimiterConfig, OpenAiCaptioner};
use retina_prompt::RenderedPrompt;
use retina_records::{ImageFacts, Record};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn request() -> CaptionRequest {
    CaptionRequest {
        record: Arc::new(Record::new("bench", "bench/one.png", "one.png".into())),
        facts: Arc::new(ImageFacts::fixture(2048, 1536)),
        prompt: RenderedPrompt {
            system: "You describe colour fundus photographs for a dataset. ".repeat(8),
            user: "Facts: dataset bench; eye unknown; quality good; vessel density 0.12. "
                .repeat(20),
        },
        image: None,
        image_mime: "image/jpeg",
        repair: None,
    }
}

fn client(url: &str, latency_ms: u64, warm: Duration, window: Duration) {
    let schema = retina_validate::CaptionSchema::embedded();
    let captioner = Arc::new(
        OpenAiCaptioner::new(EndpointConfig {
            vision: false,
            max_retries: 6,
            request_timeout: Duration::from_millis(latency_ms * 4 + 10_000),
            concurrency: LimiterConfig {
                initial: 16,
                max: 2048,
                adaptive: true,
            },
            ..EndpointConfig::new(url, "loopback-vlm", schema.value().clone())
        })
        .expect("client"),
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let end = warm + window;
    let counted = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        for _ in 0..2048 {
            let captioner = captioner.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                let request = request();
                loop {
                    let result = captioner.caption(request.clone()).await;
                    let at = started.elapsed();
                    if at >= end {
                        break;
                    }
                    if result.is_ok() && at >= warm {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        if std::env::var_os("TRACE_LIMIT").is_some() {
            let captioner = captioner.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let s = captioner.limiter_stats();
                    eprintln!(
                        "{:>5.1}s limit {} in flight {} latency {:.1} baseline {:.1}",
                        started.elapsed().as_secs_f64(),
                        s.limit,
                        captioner.in_flight(),
                        s.latency_s * 1e3,
                        s.baseline_s * 1e3
                    );
                }
            });
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + warm)).await;
        let cpu = cpu_seconds();
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + end)).await;
        let cpu = cpu_seconds() - cpu;
        let n = counted.load(Ordering::Relaxed);
        let stats = captioner.limiter_stats();
        println!(
            "{n} {} {} {} {} {} {}",
            cpu * 1e6 / n.max(1) as f64,
            stats.limit,
            stats.peak_limit,
            stats.overloaded,
            stats.latency_s * 1000.0,
            stats.baseline_s * 1000.0
        );
    });
    std::process::exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--client") {
        let latency_ms: u64 = args[3].parse().expect("latency");
        let warm = Duration::from_secs_f64(args[4].parse().expect("warm"));
        let window = Duration::from_secs_f64(args[5].parse().expect("window"));
        return client(&args[2], latency_ms, warm, window);
    }
    let slots: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(512);
    let latency_ms: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50);
    let rounds: f64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(60.0);
    let rtt = latency_ms as f64 / 1000.0;
    let (warm, window) = (10.0 * rtt, rounds * rtt);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let endpoint = runtime
        .block_on(Endpoint::start(
            Spec {
                slots,
                queue: slots,
                overflow_status: 429,
                latency: Latency::Fixed(Duration::from_millis(latency_ms)),
                ..Spec::default()
            },
            "127.0.0.1:0",
        ))
        .expect("endpoint");
    let cpu = cpu_seconds();
    let output = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--client".to_string(),
            endpoint.base_url(),
            latency_ms.to_string(),
            warm.to_string(),
            window.to_string(),
        ])
        .output()
        .expect("child");
    let server_cpu = cpu_seconds() - cpu;
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<f64> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let stats = endpoint.stats();
    let answered = stats.completed.load(Ordering::Relaxed);
    let capacity = slots as f64 / rtt;
    println!(
        "{slots} slots x {latency_ms} ms: ratio {:.3}, 429s {}, client {:.1} us/req, endpoint {:.1} us/req (whole cell), limit {} (peak {}), latency {:.1} ms (baseline {:.1}), load {}",
        fields.first().copied().unwrap_or(0.0) / window / capacity,
        stats.overflow.load(Ordering::Relaxed),
        fields.get(1).copied().unwrap_or(0.0),
        server_cpu * 1e6 / answered.max(1) as f64,
        fields.get(2).copied().unwrap_or(0.0),
        fields.get(3).copied().unwrap_or(0.0),
        fields.get(5).copied().unwrap_or(0.0),
        fields.get(6).copied().unwrap_or(0.0),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
    );
}
