//! A scriptable OpenAI-compatible endpoint on loopback, for tests and benchmarks only.
//!
//! It speaks enough of the API for the captioner: `POST /v1/chat/completions`, `GET /v1/models`,
//! and `GET /stats` (its own counters as JSON). What it does is scripted by a [`Spec`]:
//!
//! - **capacity**: `slots` requests are served at once, `queue` more wait; beyond that it answers
//!   `overflow_status` (429 or 503) at once, as vLLM-style servers behind a gateway do;
//! - **latency**: a [`Latency`] distribution per request, spent holding a slot, on the endpoint's
//!   own timeline (a request waiting for a slot starts when the slot's last holder was due to
//!   finish, not when its timer happened to fire), so the capacity is exactly slots / latency;
//! - **rate limits**: `x-ratelimit-*` headers and, if enforced, 429 with `retry-after-ms`;
//! - **faults** ([`Fault`]) on chosen requests ([`When`]): 429 with Retry-After, 500, 503,
//!   connection reset, slow and truncated bodies, invalid JSON, schema-violating JSON, refusals,
//!   `finish_reason` length, content_filter, insufficient_quota and 401.
//!
//! The HTTP/1.1 server is written on tokio and `httparse` rather than a framework because several
//! faults (a reset mid-exchange, a body shorter than its `content-length`) need control of the
//! socket that frameworks deliberately hide. It keeps connections alive, as a real server does,
//! so thousands of requests per second do not exhaust ephemeral ports.

#![warn(missing_docs)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

mod batch;

/// Largest request head and body accepted (a base64 1024 px JPEG is well under this).
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Errors of the endpoint itself (not the faults it injects).
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A spec string (`--fault`, `--latency`) could not be parsed.
    #[error("invalid {what} {text:?}: {reason}")]
    Parse {
        /// Which kind of setting.
        what: &'static str,
        /// The text given.
        text: String,
        /// Why it is wrong.
        reason: String,
    },
}

/// How long a request holds its slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniform between the two bounds.
    Uniform(Duration, Duration),
    /// Log-normal with this median and shape `sigma` (the long tail of real servers).
    LogNormal {
        /// Median latency.
        median: Duration,
        /// Standard deviation of the logarithm.
        sigma: f64,
    },
}

impl Latency {
    fn sample(&self, rng: &mut ChaCha8Rng) -> Duration {
        match self {
            Latency::Fixed(d) => *d,
            Latency::Uniform(lo, hi) => {
                let (lo, hi) = (lo.as_secs_f64(), hi.as_secs_f64().max(lo.as_secs_f64()));
                Duration::from_secs_f64(lo + (hi - lo) * rng.random::<f64>())
            }
            Latency::LogNormal { median, sigma } => {
                // Box-Muller: one standard normal from two uniforms.
                let u1 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                let u2 = rng.random::<f64>();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let secs = median.as_secs_f64() * (sigma * z).exp();
                Duration::from_secs_f64(secs.clamp(0.0, 3600.0))
            }
        }
    }
}

impl FromStr for Latency {
    type Err = EndpointError;
    /// `50ms`, `2s`, `uniform:10ms-90ms`, `lognormal:500ms,0.3`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| EndpointError::Parse {
            what: "latency",
            text: text.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = text.strip_prefix("uniform:") {
            let (lo, hi) = rest.split_once('-').ok_or_else(|| err("expected LO-HI"))?;
            let (lo, hi) = (
                parse_duration(lo).map_err(|e| err(&e))?,
                parse_duration(hi).map_err(|e| err(&e))?,
            );
            return Ok(Latency::Uniform(lo, hi));
        }
        if let Some(rest) = text.strip_prefix("lognormal:") {
            let (median, sigma) = rest
                .split_once(',')
                .ok_or_else(|| err("expected MEDIAN,SIGMA"))?;
            let median = parse_duration(median).map_err(|e| err(&e))?;
            let sigma: f64 = sigma
                .trim()
                .parse()
                .map_err(|_| err("sigma is not a number"))?;
            if !sigma.is_finite() || sigma < 0.0 {
                return Err(err("sigma must be >= 0"));
            }
            return Ok(Latency::LogNormal { median, sigma });
        }
        parse_duration(text)
            .map(Latency::Fixed)
            .map_err(|e| err(&e))
    }
}

/// Parses `250ms`, `2s`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!("{text:?} needs a unit, ms or s"));
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?} must be >= 0"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// A fault the endpoint injects instead of a normal answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 with `retry-after-ms` and `retry-after` headers.
    RateLimited {
        /// The wait asked for.
        retry_after_ms: u64,
    },
    /// 500 with an OpenAI error body.
    ServerError,
    /// 503 with an OpenAI error body.
    Unavailable,
    /// The connection is reset (RST) without an answer.
    ConnectionReset,
    /// A normal answer whose body arrives only after this delay (tests request timeouts).
    SlowBody {
        /// Delay between the headers and the body.
        delay_ms: u64,
    },
    /// The headers promise more body than is sent, then the connection closes.
    TruncatedBody,
    /// 200 with a body that is not JSON.
    InvalidJson,
    /// 200 with a completion whose content is JSON that breaks the caption schema.
    SchemaViolation,
    /// 200 with `message.refusal` set.
    Refusal,
    /// 200 with `finish_reason: length` and cut content.
    Length,
    /// 200 with `finish_reason: content_filter`.
    ContentFilter,
    /// 429 with code `insufficient_quota` (the account is out of money).
    InsufficientQuota,
    /// 401 invalid API key.
    Unauthorized,
}

impl FromStr for Fault {
    type Err = EndpointError;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name {
            "429" => Fault::RateLimited {
                retry_after_ms: 200,
            },
            "500" => Fault::ServerError,
            "503" => Fault::Unavailable,
            "reset" => Fault::ConnectionReset,
            "slow" => Fault::SlowBody { delay_ms: 5_000 },
            "truncated" => Fault::TruncatedBody,
            "invalid-json" => Fault::InvalidJson,
            "schema-violation" => Fault::SchemaViolation,
            "refusal" => Fault::Refusal,
            "length" => Fault::Length,
            "content-filter" => Fault::ContentFilter,
            "insufficient-quota" => Fault::InsufficientQuota,
            "401" => Fault::Unauthorized,
            other => {
                return Err(EndpointError::Parse {
                    what: "fault",
                    text: other.to_string(),
                    reason: "known faults: 429 500 503 reset slow truncated invalid-json \
                             schema-violation refusal length content-filter insufficient-quota 401"
                        .to_string(),
                });
            }
        })
    }
}

/// Which chat requests (numbered from 1 in arrival order) a fault hits.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// Every request.
    Always,
    /// Requests 1..=n.
    First(u64),
    /// Requests whose number is a multiple of n.
    Every(u64),
    /// Each request with this probability (seeded, so a run is reproducible).
    Probability(f64),
    /// Requests from..=to (deterministic, unlike `Every` whose hits depend on interleaving).
    Range(u64, u64),
}

/// One scripted fault.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// What happens.
    pub fault: Fault,
    /// To which requests.
    pub when: When,
}

impl FromStr for FaultRule {
    type Err = EndpointError;
    /// `NAME`, `NAME:first=N`, `NAME:every=N`, `NAME:from=A,to=B`, `NAME:p=0.1`; `429` also takes `,after=MS` and
    /// `slow` `,delay=MS`, e.g. `429:first=3,after=50`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| EndpointError::Parse {
            what: "fault",
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (name, options) = text.split_once(':').unwrap_or((text, ""));
        let mut fault: Fault = name.parse()?;
        let mut when = When::Always;
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| err("expected KEY=VALUE"))?;
            let int = || value.parse::<u64>().map_err(|_| err("not a whole number"));
            match key {
                "first" => when = When::First(int()?),
                "from" => {
                    let to = if let When::Range(_, to) = when {
                        to
                    } else {
                        u64::MAX
                    };
                    when = When::Range(int()?, to);
                }
                "to" => {
                    let from = if let When::Range(from, _) = when {
                        from
                    } else {
                        1
                    };
                    when = When::Range(from, int()?);
                }
                "every" => when = When::Every(int()?.max(1)),
                "p" => {
                    let p: f64 = value.parse().map_err(|_| err("p is not a number"))?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(err("p must be in 0..1"));
                    }
                    when = When::Probability(p);
                }
                "after" => match &mut fault {
                    Fault::RateLimited { retry_after_ms } => *retry_after_ms = int()?,
                    _ => return Err(err("after= is for 429")),
                },
                "delay" => match &mut fault {
                    Fault::SlowBody { delay_ms } => *delay_ms = int()?,
                    _ => return Err(err("delay= is for slow")),
                },
                _ => return Err(err("options are first, every, from, to, p, after, delay")),
            }
        }
        Ok(FaultRule { fault, when })
    }
}

/// Advertised (and optionally enforced) rate limits, per window.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: u64,
    /// Tokens allowed per window (prompt + completion, estimated from body size).
    pub tokens: u64,
    /// The window (OpenAI's are per minute).
    pub window: Duration,
    /// Answer 429 beyond the limit, not just advertise it.
    pub enforce: bool,
}

/// What the endpoint does.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Requests served at once.
    pub slots: usize,
    /// Requests waiting for a slot beyond `slots`; more are refused with `overflow_status`.
    pub queue: usize,
    /// 429 or 503.
    pub overflow_status: u16,
    /// Time a request holds its slot.
    pub latency: Latency,
    /// `x-ratelimit-*` headers and enforcement.
    pub rate_limit: Option<RateLimit>,
    /// Injected faults; the first rule that matches a request applies.
    pub faults: Vec<FaultRule>,
    /// The `content` of a normal answer (a caption JSON by default).
    pub answer: String,
    /// Model served (listed by `/v1/models`; any requested model is accepted).
    pub model: String,
    /// Bearer token required, if any (else 401).
    pub api_key: Option<String>,
    /// Seed of latency and probabilistic faults.
    pub seed: u64,
    /// Answer 400 to `response_format` json_schema, as servers that take only json_object do.
    pub reject_json_schema: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            slots: 64,
            queue: 64,
            overflow_status: 429,
            latency: Latency::Fixed(Duration::from_millis(20)),
            rate_limit: None,
            faults: Vec::new(),
            answer: default_answer().to_string(),
            model: "loopback-vlm".to_string(),
            api_key: None,
            seed: 0,
            reject_json_schema: false,
        }
    }
}

/// A caption answer that satisfies the caption schema and names no lesion, laterality or
/// disease, so the validator accepts it for unlabelled photographs.
pub fn default_answer() -> Value {
    json!({
        "optic_disc": "The optic disc is round with a distinct margin, a pink neuroretinal rim and a small central cup.",
        "rnfl": "The retinal nerve fibre layer shows even striations in the arcuate bundles.",
        "vessels": "Arteries and veins have regular calibre and a smooth course from the disc.",
        "macula": "The macula is flat with a foveal reflex and even pigment.",
        "background": "The fundus background is orange-red with even pigmentation.",
        "lesions": [],
        "quality": "The photograph is in focus with even illumination across the field of view.",
        "impression": "A fundus photograph with an unremarkable appearance of the structures described.",
        "caption": "Colour fundus photograph centred on the posterior pole. The optic disc is round with a distinct margin, a pink neuroretinal rim and a small central cup. The retinal nerve fibre layer shows even striations in the arcuate bundles. Arteries and veins have regular calibre and a smooth course from the disc. The macula is flat with a foveal reflex and even pigment. The background is orange-red with even pigmentation. The photograph is in focus with even illumination across the field of view. Overall the structures described appear unremarkable."
    })
}

/// Counters of what the endpoint did, readable while it runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Chat completion requests received (each numbered for [`When`]).
    pub requests: AtomicU64,
    /// Normal answers sent.
    pub completed: AtomicU64,
    /// Requests refused because slots and queue were full.
    pub overflow: AtomicU64,
    /// Requests refused by an enforced rate limit.
    pub rate_limited: AtomicU64,
    /// Faults injected.
    pub faults: AtomicU64,
    /// Requests refused for a missing or wrong API key.
    pub unauthorized: AtomicU64,
    /// Chat requests by `response_format.type`: json_schema, json_object, and none at all.
    pub format_json_schema: AtomicU64,
    /// See `format_json_schema`.
    pub format_json_object: AtomicU64,
    /// See `format_json_schema`.
    pub format_none: AtomicU64,
    /// Most requests ever holding a slot at once.
    pub max_active: AtomicUsize,
    active: AtomicUsize,
    admitted: AtomicUsize,
}

impl Stats {
    /// The counters as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "completed": self.completed.load(Ordering::Relaxed),
            "overflow": self.overflow.load(Ordering::Relaxed),
            "rate_limited": self.rate_limited.load(Ordering::Relaxed),
            "faults": self.faults.load(Ordering::Relaxed),
            "unauthorized": self.unauthorized.load(Ordering::Relaxed),
            "max_active": self.max_active.load(Ordering::Relaxed),
            "format_json_schema": self.format_json_schema.load(Ordering::Relaxed),
            "format_json_object": self.format_json_object.load(Ordering::Relaxed),
            "format_none": self.format_none.load(Ordering::Relaxed),
        })
    }
}

struct Shared {
    spec: Spec,
    slots: Semaphore,
    stats: Arc<Stats>,
    rng: Mutex<ChaCha8Rng>,
    window: Mutex<(Instant, u64, u64)>,
    /// Files and batches of the Batch API routes (`batch.rs`).
    batch: batch::Store,
    /// `spec.answer` as a JSON string, escaped once.
    answer_json: String,
    /// When released slots became free on the endpoint's own timeline (see [`SlotTime`]).
    free_at: Mutex<BinaryHeap<Reverse<Instant>>>,
}

/// A slot's holding time, kept on the endpoint's own timeline so the capacity is exactly
/// `slots / latency` however late timers fire: a request that waited for a slot starts when the
/// slot became free in theory (its last holder's start plus latency), not when that holder's
/// task happened to wake, and holds it until its own start plus latency. Timers round up to the
/// millisecond and wake late on a busy machine; without this the endpoint itself lost a few
/// percent of its capacity at 50 ms and more under load.
struct SlotTime<'a> {
    shared: &'a Shared,
    end: Instant,
}

impl<'a> SlotTime<'a> {
    /// Takes the earliest free time of a slot (the caller holds a slot permit).
    fn start(shared: &'a Shared, arrived: Instant, latency: Duration) -> SlotTime<'a> {
        let free = shared
            .free_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .map_or(arrived, |Reverse(at)| at.max(arrived));
        SlotTime {
            shared,
            end: free + latency,
        }
    }
}

impl Drop for SlotTime<'_> {
    fn drop(&mut self) {
        // Before the permit goes back, so the next holder finds this slot's free time.
        self.shared
            .free_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Reverse(self.end));
    }
}

/// A running endpoint; dropping it stops accepting connections.
pub struct Endpoint {
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// Starts serving `spec` on `bind` (use `127.0.0.1:0` for a free port) on the current runtime.
    pub async fn start(spec: Spec, bind: &str) -> Result<Endpoint, EndpointError> {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| EndpointError::Bind {
                addr: bind.to_string(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EndpointError::Bind {
                addr: bind.to_string(),
                source,
            })?;
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            slots: Semaphore::new(spec.slots.max(1)),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(spec.seed)),
            window: Mutex::new((Instant::now(), 0, 0)),
            answer_json: Value::String(spec.answer.clone()).to_string(),
            free_at: Mutex::new(BinaryHeap::new()),
            spec,
            stats: stats.clone(),
            batch: batch::Store::default(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream, shared.clone()));
            }
        });
        Ok(Endpoint { addr, stats, task })
    }

    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients use, ending in `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    close: bool,
    body: Vec<u8>,
}

/// What to write back.
enum Reply {
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    Reset,
    Slow {
        body: String,
        delay: Duration,
    },
    Truncated {
        body: String,
    },
}

fn json_reply(status: u16, body: Value) -> Reply {
    Reply::Full {
        status,
        headers: Vec::new(),
        body: body.to_string(),
    }
}

fn error_body(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buffer = Vec::with_capacity(8192);
    loop {
        let request = match read_request(&mut stream, &mut buffer).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(status) => {
                let _ = write_reply(
                    &mut stream,
                    json_reply(
                        status,
                        error_body("bad request", "invalid_request_error", None),
                    ),
                    true,
                )
                .await;
                return;
            }
        };
        let close = request.close;
        let reply = handle(&shared, request).await;
        match write_reply(&mut stream, reply, close).await {
            Ok(true) if !close => continue,
            _ => return,
        }
    }
}

/// Reads one request; `Ok(None)` at a clean end of the connection, `Err(status)` on garbage.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Result<Option<Request>, u16> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buffer) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = parsed.method.unwrap_or("").to_string();
                let path = parsed.path.unwrap_or("").to_string();
                let mut length = 0usize;
                let mut authorization = None;
                let mut close = false;
                for header in parsed.headers.iter() {
                    let name = header.name;
                    let value = || String::from_utf8_lossy(header.value).trim().to_string();
                    if name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(header.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or(400u16)?;
                    } else if name.eq_ignore_ascii_case("authorization") {
                        authorization = Some(value());
                    } else if name.eq_ignore_ascii_case("connection") {
                        close = header.value.trim_ascii().eq_ignore_ascii_case(b"close");
                    } else if name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(411);
                    }
                }
                if length > MAX_BODY {
                    return Err(413);
                }
                while buffer.len() < head_len + length {
                    if read_more(stream, buffer).await? == 0 {
                        return Ok(None);
                    }
                }
                let body = buffer[head_len..head_len + length].to_vec();
                buffer.drain(..head_len + length);
                return Ok(Some(Request {
                    method,
                    path,
                    authorization,
                    close,
                    body,
                }));
            }
            Ok(httparse::Status::Partial) => {
                if buffer.len() > MAX_HEAD {
                    return Err(431);
                }
                if read_more(stream, buffer).await? == 0 {
                    return Ok(None);
                }
            }
            Err(_) => return Err(400),
        }
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<usize, u16> {
    // Straight into the buffer's spare room (no copy through a stack chunk).
    buffer.reserve(16 * 1024);
    match stream.read_buf(buffer).await {
        Ok(n) => Ok(n),
        Err(_) => Ok(0),
    }
}

/// Writes a reply; `Ok(true)` when the connection may be reused.
async fn write_reply(stream: &mut TcpStream, reply: Reply, close: bool) -> std::io::Result<bool> {
    let head = |status: u16, length: usize, extra: &[(&'static str, String)], close: bool| {
        use std::fmt::Write;
        let mut head = String::with_capacity(128 + length);
        let _ = write!(
            head,
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n",
            reason(status)
        );
        for (name, value) in extra {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        head
    };
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            // Head and body in one write (one syscall, one segment).
            let mut bytes = head(status, body.len(), &headers, close).into_bytes();
            bytes.extend_from_slice(body.as_bytes());
            stream.write_all(&bytes).await?;
            Ok(!close)
        }
        Reply::Reset => {
            // SO_LINGER 0 makes the close an RST, as a crashed server or a proxy gives.
            let _ = stream.set_zero_linger();
            Ok(false)
        }
        Reply::Slow { body, delay } => {
            stream
                .write_all(head(200, body.len(), &[], close).as_bytes())
                .await?;
            stream.flush().await?;
            tokio::time::sleep(delay).await;
            stream.write_all(body.as_bytes()).await?;
            Ok(!close)
        }
        Reply::Truncated { body } => {
            let half = body.len() / 2;
            stream
                .write_all(head(200, body.len(), &[], true).as_bytes())
                .await?;
            stream.write_all(&body.as_bytes()[..half]).await?;
            stream.flush().await?;
            let _ = stream.shutdown().await;
            Ok(false)
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn handle(shared: &Shared, request: Request) -> Reply {
    let spec = &shared.spec;
    if let Some(key) = &spec.api_key
        && request.authorization.as_deref() != Some(format!("Bearer {key}").as_str())
    {
        shared.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return json_reply(
            401,
            error_body(
                "Incorrect API key provided.",
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
        );
    }
    let path = request.path.split('?').next().unwrap_or("");
    match (request.method.as_str(), path) {
        ("GET", "/v1/models") => json_reply(
            200,
            json!({"object": "list", "data": [{"id": spec.model, "object": "model", "owned_by": "loopback"}]}),
        ),
        ("GET", "/stats") => json_reply(200, shared.stats.to_json()),
        ("POST", "/v1/chat/completions") => chat(shared, &request.body).await,
        (method, path) if batch::handles(path) => {
            batch::handle(shared, method, path, &request.body)
        }
        _ => json_reply(
            404,
            error_body(
                &format!("no route {} {}", request.method, path),
                "invalid_request_error",
                None,
            ),
        ),
    }
}

/// Decreases the admitted count when a request leaves, however it leaves.
struct Admission<'a>(&'a Stats);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn chat(shared: &Shared, body: &[u8]) -> Reply {
    let spec = &shared.spec;
    let stats = &shared.stats;
    let number = stats.requests.fetch_add(1, Ordering::Relaxed) + 1;
    // Only the fields the endpoint reads are kept; the rest (messages, the schema) is checked to
    // be JSON and skipped without building values.
    let Ok(request) = serde_json::from_slice::<ChatHead<'_>>(body) else {
        return json_reply(
            400,
            error_body("body is not JSON", "invalid_request_error", None),
        );
    };
    let model = request.model.as_deref().unwrap_or(&spec.model).to_string();
    match request
        .response_format
        .as_ref()
        .and_then(|f| f.kind.as_deref())
    {
        Some("json_schema") => {
            stats.format_json_schema.fetch_add(1, Ordering::Relaxed);
            if spec.reject_json_schema {
                return json_reply(
                    400,
                    error_body(
                        "response_format type json_schema is not supported; use json_object",
                        "invalid_request_error",
                        Some("unsupported_response_format"),
                    ),
                );
            }
        }
        Some(_) => {
            stats.format_json_object.fetch_add(1, Ordering::Relaxed);
        }
        None => {
            stats.format_none.fetch_add(1, Ordering::Relaxed);
        }
    }
    let prompt_tokens = (body.len() / 4) as u64;

    let mut headers = Vec::new();
    if let Some(limit) = &spec.rate_limit {
        let completion = (spec.answer.len() / 4) as u64;
        let (allowed, remaining_requests, remaining_tokens, reset) =
            rate_window(shared, limit, prompt_tokens + completion);
        headers.push(("x-ratelimit-limit-requests", limit.requests.to_string()));
        headers.push((
            "x-ratelimit-remaining-requests",
            remaining_requests.to_string(),
        ));
        headers.push((
            "x-ratelimit-reset-requests",
            format!("{}ms", reset.as_millis()),
        ));
        headers.push(("x-ratelimit-limit-tokens", limit.tokens.to_string()));
        headers.push(("x-ratelimit-remaining-tokens", remaining_tokens.to_string()));
        headers.push((
            "x-ratelimit-reset-tokens",
            format!("{}ms", reset.as_millis()),
        ));
        if !allowed {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            headers.push(("retry-after-ms", reset.as_millis().to_string()));
            return Reply::Full {
                status: 429,
                headers,
                body: error_body(
                    "Rate limit reached for requests.",
                    "requests",
                    Some("rate_limit_exceeded"),
                )
                .to_string(),
            };
        }
    }

    let capacity = spec.slots.max(1) + spec.queue;
    if stats.admitted.fetch_add(1, Ordering::Relaxed) >= capacity {
        stats.admitted.fetch_sub(1, Ordering::Relaxed);
        stats.overflow.fetch_add(1, Ordering::Relaxed);
        let (kind, message) = if spec.overflow_status == 503 {
            (
                "server_error",
                "The server is overloaded; its queue is full.",
            )
        } else {
            (
                "requests",
                "Too many requests in flight; the queue is full.",
            )
        };
        return Reply::Full {
            status: spec.overflow_status,
            headers,
            body: error_body(message, kind, None).to_string(),
        };
    }
    let _admission = Admission(stats);

    let (fault, latency) = {
        let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
        let fault = spec
            .faults
            .iter()
            .find(|rule| match rule.when {
                When::Always => true,
                When::First(n) => number <= n,
                When::Range(from, to) => (from..=to).contains(&number),
                When::Every(n) => number.is_multiple_of(n.max(1)),
                When::Probability(p) => rng.random::<f64>() < p,
            })
            .map(|rule| rule.fault.clone());
        (fault, spec.latency.sample(&mut rng))
    };
    if let Some(fault) = &fault {
        stats.faults.fetch_add(1, Ordering::Relaxed);
        // Errors come back at once, without holding a slot, as a gateway answers them.
        let immediate = match fault {
            Fault::RateLimited { retry_after_ms } => {
                let mut headers = headers.clone();
                headers.push(("retry-after-ms", retry_after_ms.to_string()));
                headers.push(("retry-after", retry_after_ms.div_ceil(1000).to_string()));
                Some(Reply::Full {
                    status: 429,
                    headers,
                    body: error_body(
                        "Rate limit reached.",
                        "requests",
                        Some("rate_limit_exceeded"),
                    )
                    .to_string(),
                })
            }
            Fault::ServerError => Some(json_reply(
                500,
                error_body("The server had an error.", "server_error", None),
            )),
            Fault::Unavailable => Some(json_reply(
                503,
                error_body("The engine is overloaded.", "server_error", None),
            )),
            Fault::ConnectionReset => Some(Reply::Reset),
            Fault::InsufficientQuota => Some(json_reply(
                429,
                error_body(
                    "You exceeded your current quota, please check your plan and billing details.",
                    "insufficient_quota",
                    Some("insufficient_quota"),
                ),
            )),
            Fault::Unauthorized => Some(json_reply(
                401,
                error_body(
                    "Incorrect API key provided.",
                    "invalid_request_error",
                    Some("invalid_api_key"),
                ),
            )),
            _ => None,
        };
        if let Some(reply) = immediate {
            return reply;
        }
    }

    let arrived = Instant::now();
    let Ok(_slot) = shared.slots.acquire().await else {
        return json_reply(503, error_body("shutting down", "server_error", None));
    };
    let active = stats.active.fetch_add(1, Ordering::Relaxed) + 1;
    stats.max_active.fetch_max(active, Ordering::Relaxed);
    {
        // Dropped (the slot's free time recorded) before `_slot`.
        let held = SlotTime::start(shared, arrived, latency);
        tokio::time::sleep_until(held.end.into()).await;
    }
    stats.active.fetch_sub(1, Ordering::Relaxed);

    let (content, finish, refusal): (std::borrow::Cow<'_, str>, _, _) = match &fault {
        Some(Fault::SchemaViolation) => (
            json!({"caption": 7, "extra": true}).to_string().into(),
            "stop",
            None,
        ),
        Some(Fault::Refusal) => ("".into(), "stop", Some("I can't help with that request.")),
        Some(Fault::Length) => (
            spec.answer
                .chars()
                .take(spec.answer.len() / 3)
                .collect::<String>()
                .into(),
            "length",
            None,
        ),
        Some(Fault::ContentFilter) => ("".into(), "content_filter", None),
        _ => (spec.answer.as_str().into(), "stop", None),
    };
    let completion_tokens = (content.len() / 4) as u64;
    let content_json: std::borrow::Cow<'_, str> = match (&content, refusal) {
        (_, Some(_)) => "null".into(),
        // The normal answer was escaped once, at start.
        (text, None) if std::ptr::eq(text.as_ref(), spec.answer.as_str()) => {
            shared.answer_json.as_str().into()
        }
        (text, None) => Value::String(text.to_string()).to_string().into(),
    };
    let completion = completion_body(&CompletionParts {
        number,
        model: &model,
        content_json: &content_json,
        refusal,
        finish,
        prompt_tokens,
        completion_tokens,
    });
    match fault {
        Some(Fault::InvalidJson) => Reply::Full {
            status: 200,
            headers,
            body: "{\"id\": \"chatcmpl-broken\", \"choices\": [".to_string(),
        },
        Some(Fault::SlowBody { delay_ms }) => Reply::Slow {
            body: completion,
            delay: Duration::from_millis(delay_ms),
        },
        Some(Fault::TruncatedBody) => Reply::Truncated { body: completion },
        Some(_) => Reply::Full {
            status: 200,
            headers,
            body: completion,
        },
        None => {
            stats.completed.fetch_add(1, Ordering::Relaxed);
            Reply::Full {
                status: 200,
                headers,
                body: completion,
            }
        }
    }
}

/// The fields of a chat request the endpoint reads; everything else is skipped.
#[derive(serde::Deserialize)]
struct ChatHead<'a> {
    #[serde(borrow, default)]
    model: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    response_format: Option<FormatHead<'a>>,
}

#[derive(serde::Deserialize)]
struct FormatHead<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
}

struct CompletionParts<'a> {
    number: u64,
    model: &'a str,
    /// The message content as JSON: a string or `null`.
    content_json: &'a str,
    refusal: Option<&'a str>,
    finish: &'a str,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// A chat completion body, written directly (the content is already JSON).
fn completion_body(parts: &CompletionParts<'_>) -> String {
    use std::fmt::Write;
    let json_str = |text: &str| Value::String(text.to_string()).to_string();
    let mut body = String::with_capacity(parts.content_json.len() + 400);
    let _ = write!(
        body,
        "{{\"id\":\"chatcmpl-{}\",\"object\":\"chat.completion\",\"created\":0,\"model\":{},\
         \"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":{},\"refusal\":{}}},\
         \"finish_reason\":{}}}],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}}}",
        parts.number,
        json_str(parts.model),
        parts.content_json,
        parts.refusal.map_or_else(|| "null".to_string(), json_str),
        json_str(parts.finish),
        parts.prompt_tokens,
        parts.completion_tokens,
        parts.prompt_tokens + parts.completion_tokens,
    );
    body
}

/// Counts one request against the fixed window: (allowed, remaining requests, remaining tokens,
/// time to the window's reset).
fn rate_window(shared: &Shared, limit: &RateLimit, tokens: u64) -> (bool, u64, u64, Duration) {
    let mut window = shared.window.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    if now.duration_since(window.0) >= limit.window {
        *window = (now, 0, 0);
    }
    let reset = limit.window.saturating_sub(now.duration_since(window.0));
    let allowed =
        !limit.enforce || (window.1 < limit.requests && window.2 + tokens <= limit.tokens);
    if allowed {
        window.1 += 1;
        window.2 += tokens;
    }
    (
        allowed,
        limit.requests.saturating_sub(window.1),
        limit.tokens.saturating_sub(window.2),
        reset,
    )
}

#[cfg(test)]
mod tests;
