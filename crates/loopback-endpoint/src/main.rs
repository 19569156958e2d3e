//! `loopback-endpoint`: serves a scripted OpenAI-compatible endpoint until interrupted.
//!
//! Example: `loopback-endpoint --slots 8 --latency 500ms --fault 429:every=10,after=100`

use clap::Parser;
use loopback_endpoint::{Endpoint, FaultRule, Latency, RateLimit, Spec, parse_duration};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A scripted OpenAI-compatible endpoint on loopback, for tests and benchmarks."
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Requests served at once.
    #[arg(long, default_value_t = 64)]
    slots: usize,
    /// Requests that may wait for a slot; more are refused with --overflow-status.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// Status for requests beyond slots and queue: 429 or 503.
    #[arg(long, default_value_t = 429, value_parser = overflow_status)]
    overflow_status: u16,
    /// Latency per request: 50ms, 2s, uniform:10ms-90ms, lognormal:500ms,0.3
    #[arg(long, default_value = "20ms")]
    latency: Latency,
    /// Scripted fault (repeatable): NAME[:first=N|every=N|p=P][,after=MS][,delay=MS]
    #[arg(long)]
    fault: Vec<FaultRule>,
    /// Advertise x-ratelimit-* headers for this many requests per window.
    #[arg(long)]
    rate_requests: Option<u64>,
    /// Tokens per window for the x-ratelimit-*-tokens headers.
    #[arg(long, default_value_t = 10_000_000)]
    rate_tokens: u64,
    /// The rate-limit window.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    rate_window: std::time::Duration,
    /// Refuse requests beyond the advertised rate limit with 429.
    #[arg(long)]
    enforce_rate: bool,
    /// Model name listed by /v1/models.
    #[arg(long, default_value = "loopback-vlm")]
    model: String,
    /// Require `Authorization: Bearer <key>` with the key in this environment variable.
    #[arg(long)]
    api_key_env: Option<String>,
    /// Seed of latency and probabilistic faults.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Answer 400 to response_format json_schema (a server that takes only json_object).
    #[arg(long)]
    reject_json_schema: bool,
}

fn overflow_status(text: &str) -> Result<u16, String> {
    match text {
        "429" => Ok(429),
        "503" => Ok(503),
        _ => Err(format!("{text:?}: the overflow status is 429 or 503")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let api_key = args
        .api_key_env
        .as_ref()
        .and_then(|name| std::env::var(name).ok());
    let spec = Spec {
        slots: args.slots,
        queue: args.queue,
        overflow_status: args.overflow_status,
        latency: args.latency,
        rate_limit: args.rate_requests.map(|requests| RateLimit {
            requests,
            tokens: args.rate_tokens,
            window: args.rate_window,
            enforce: args.enforce_rate,
        }),
        faults: args.fault,
        model: args.model,
        api_key,
        seed: args.seed,
        reject_json_schema: args.reject_json_schema,
        ..Spec::default()
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match Endpoint::start(spec, &args.bind).await {
            Ok(endpoint) => {
                println!("listening on {}", endpoint.base_url());
                let _ = tokio::signal::ctrl_c().await;
                println!("{}", endpoint.stats().to_json());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        }
    })
}
