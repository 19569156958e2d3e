//! A client for OpenAI-compatible chat completions (OpenAI, vLLM, SGLang, llama.cpp, Ollama).
//!
//! One request per item with structured output (`response_format` json_schema, never the
//! removed `guided_*` parameters). Retries follow the official SDK: `x-should-retry` first,
//! then 408/409/429/5xx and connection errors, waiting `retry-after-ms` / `retry-after` when
//! at most 120 s, else `min(0.5 * 2^n, 8)` s with up to 25% jitter. Failures are classified
//! into [`CaptionError`] so the pipeline knows whether to retry later, stop, or reject.

use crate::cache::{KeyParts, ResponseCache};
use crate::limiter::{Limiter, LimiterConfig, LimiterStats, Signal};
use crate::ratelimit::{RateGate, RateLimitConfig, RateLimitState};
use crate::{
    CaptionError, CaptionReply, CaptionRequest, Captioner, CaptionerInfo, estimate_tokens,
    strip_json_fence,
};
use base64::Engine;
use rand::Rng;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use retina_records::Usage;
use serde::Deserialize;
use serde_json::{Value, json};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod body;
use body::BodyTemplate;

/// Longest server-requested wait we obey; longer ones fall back to backoff (SDK behaviour).
const MAX_SERVER_WAIT: Duration = Duration::from_secs(120);
/// Upper bound of `max_tokens` when retrying a truncated answer.
const MAX_TOKENS_CEILING: u32 = 16_384;

/// How the answer's shape is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    /// `response_format: {type: json_schema, strict}`: the server constrains decoding to the schema.
    #[default]
    JsonSchema,
    /// `response_format: {type: json_object}` for endpoints that take only that; the schema goes
    /// into the system message instead.
    JsonObject,
    /// No `response_format` at all; the schema goes into the system message.
    None,
}

impl ResponseFormat {
    /// The configuration spelling: `json_schema`, `json_object` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFormat::JsonSchema => "json_schema",
            ResponseFormat::JsonObject => "json_object",
            ResponseFormat::None => "none",
        }
    }
}

impl std::str::FromStr for ResponseFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "json_schema" => Ok(ResponseFormat::JsonSchema),
            "json_object" => Ok(ResponseFormat::JsonObject),
            "none" => Ok(ResponseFormat::None),
            other => Err(format!(
                "response format {other:?} is not one of json_schema, json_object, none"
            )),
        }
    }
}

/// The system message when the schema cannot travel in `response_format`: the original text,
/// then the schema the answer must follow (compact JSON, so it costs as few tokens as it can).
pub fn system_with_schema(system: &str, schema: &Value) -> String {
    format!(
        "{system}\n\nAnswer with one JSON object only, no prose and no code fence. It must validate \
         against this JSON Schema (every property required, no others):\n{schema}"
    )
}

/// How an image reaches a vision endpoint, as the `url` of its `image_url` content part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ImageTransport {
    /// The prepared image (cropped, resized, encoded) inline as a base64 `data:` URL: works with
    /// every server and needs no shared files.
    #[default]
    DataUrl,
    /// `file://` and the source photograph's absolute path, for a server beside the data that may
    /// read it (vLLM `--allowed-local-media-path`). The server then sees the original photograph,
    /// not the cropped one, and the request stays small.
    LocalPath,
    /// This prefix and the record's path relative to its dataset root, for images the server can
    /// fetch over http(s) (a bucket or web server holding the dataset as it ships).
    UrlPrefix(String),
}

impl ImageTransport {
    /// The URL this transport gives `record`'s image; `None` for [`ImageTransport::DataUrl`],
    /// whose URL is built from the image bytes.
    pub fn url_for(&self, record: &retina_records::Record) -> Option<String> {
        match self {
            ImageTransport::DataUrl => None,
            ImageTransport::LocalPath => {
                let path = std::path::absolute(&record.image_path)
                    .unwrap_or_else(|_| record.image_path.clone());
                let mut url = String::from("file://");
                push_url_path(&mut url, &path.to_string_lossy());
                Some(url)
            }
            ImageTransport::UrlPrefix(prefix) => {
                let relative = record.relative_path.trim_start_matches('/');
                let mut url = prefix.clone();
                if !url.ends_with('/') {
                    url.push('/');
                }
                push_url_path(&mut url, relative);
                Some(url)
            }
        }
    }

    /// The configuration spelling: `data_url`, `local_path` or `url`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ImageTransport::DataUrl => "data_url",
            ImageTransport::LocalPath => "local_path",
            ImageTransport::UrlPrefix(_) => "url",
        }
    }
}

/// Appends a file path to a URL, percent-encoding what a URL path cannot hold as is.
fn push_url_path(url: &mut String, path: &str) {
    for c in path.chars() {
        match c {
            ' ' => url.push_str("%20"),
            '#' => url.push_str("%23"),
            '?' => url.push_str("%3F"),
            '%' => url.push_str("%25"),
            c => url.push(c),
        }
    }
}

/// Settings of one OpenAI-compatible endpoint.
#[derive(Clone)]
pub struct EndpointConfig {
    /// Base URL up to and including `/v1`, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Model name sent in every request.
    pub model: String,
    /// Bearer token, if the endpoint needs one.
    pub api_key: Option<String>,
    /// Whether the model accepts images (text-only models get no image part).
    pub vision: bool,
    /// How images reach the endpoint when `vision` is on (inline by default).
    pub image_transport: ImageTransport,
    /// The caption schema, for response_format.
    pub schema: Value,
    /// Ask for strict schema adherence (true in production).
    pub json_schema_strict: bool,
    /// json_schema (default), or json_object / none for endpoints that refuse json_schema.
    pub response_format: ResponseFormat,
    /// Completion token limit; doubled once when an answer is truncated.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Sampling seed, for endpoints that honour it.
    pub seed: Option<u64>,
    /// Timeout of one HTTP attempt.
    pub request_timeout: Duration,
    /// Retries after the first attempt for retryable failures.
    pub max_retries: u32,
    /// Extra top-level fields merged into every request body (e.g. llama.cpp's
    /// `repeat_penalty`); keys this client sets itself are not overridden.
    pub extra_body: serde_json::Map<String, Value>,
    /// Requests in flight: adaptive between 1 and a maximum, or fixed.
    pub concurrency: LimiterConfig,
    /// Request and token rate limits (none by default; also learned from `x-ratelimit-*`).
    pub rate_limits: RateLimitConfig,
    /// Where answers are cached (`<out>/cache`); `None` caches nothing.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl EndpointConfig {
    /// A configuration with the usual defaults: strict schema, 1024 tokens, temperature 0.2,
    /// no seed, 120 s per attempt, 2 retries (the official SDK's default).
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, schema: Value) -> Self {
        EndpointConfig {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            vision: true,
            image_transport: ImageTransport::DataUrl,
            schema,
            json_schema_strict: true,
            response_format: ResponseFormat::JsonSchema,
            max_tokens: 1024,
            temperature: 0.2,
            seed: None,
            request_timeout: Duration::from_secs(120),
            max_retries: 2,
            extra_body: serde_json::Map::new(),
            concurrency: LimiterConfig::default(),
            rate_limits: RateLimitConfig::default(),
            cache_dir: None,
        }
    }
}

impl fmt::Debug for EndpointConfig {
    // Hand-written so the API key never reaches logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("vision", &self.vision)
            .field("json_schema_strict", &self.json_schema_strict)
            .field("response_format", &self.response_format)
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .field("seed", &self.seed)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("extra_body", &self.extra_body)
            .field("concurrency", &self.concurrency)
            .field("rate_limits", &self.rate_limits)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

/// Captioner backed by an OpenAI-compatible `/chat/completions` endpoint.
///
/// It owns its concurrency: callers may start as many [`Captioner::caption`] calls as they like
/// (up to [`LimiterConfig::max`] is useful); the adaptive limiter decides how many are on the wire.
#[derive(Clone)]
pub struct OpenAiCaptioner {
    config: EndpointConfig,
    client: reqwest::Client,
    url: reqwest::Url,
    /// The request body's fixed bytes, serialised once (`None`: built per request).
    template: Option<Arc<BodyTemplate>>,
    limiter: Arc<Limiter>,
    gate: Arc<RateGate>,
    cache: Option<ResponseCache>,
}

impl fmt::Debug for OpenAiCaptioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCaptioner")
            .field("config", &self.config)
            .field("url", &self.url)
            .field("limiter", &self.limiter.stats())
            .finish_non_exhaustive()
    }
}

impl OpenAiCaptioner {
    /// Checks the configuration and builds the HTTP client; a bad setting is `Fatal`.
    pub fn new(config: EndpointConfig) -> Result<Self, CaptionError> {
        let base = config.base_url.trim().trim_end_matches('/');
        let fatal = |message: String| CaptionError::Fatal { message };
        let parsed = reqwest::Url::parse(base)
            .map_err(|e| fatal(format!("endpoint base URL {base:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(fatal(format!(
                "endpoint base URL {base:?} must start with http:// or https://"
            )));
        }
        if config.model.trim().is_empty() {
            return Err(fatal("endpoint model name is empty".to_string()));
        }
        if !config.schema.is_object() {
            return Err(fatal(
                "the caption schema for response_format must be a JSON object".to_string(),
            ));
        }
        if config.max_tokens == 0 {
            return Err(fatal("max_tokens must be at least 1".to_string()));
        }
        if !config.temperature.is_finite() || config.temperature < 0.0 {
            return Err(fatal(format!(
                "temperature {} must be a finite number >= 0",
                config.temperature
            )));
        }
        if config.concurrency.max == 0 {
            return Err(fatal(
                "the maximum concurrency must be at least 1".to_string(),
            ));
        }
        let client = reqwest::Client::builder()
            // Keep as many idle connections as requests may be in flight, so a burst does not
            // open and close sockets (and exhaust ports) at thousands of requests per second.
            .pool_max_idle_per_host(config.concurrency.max)
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| fatal(format!("cannot build the HTTP client: {e}")))?;
        let url = reqwest::Url::parse(&format!("{base}/chat/completions"))
            .map_err(|e| fatal(format!("endpoint base URL {base:?} is not a URL: {e}")))?;
        let template = BodyTemplate::new(&config).map(Arc::new);
        let limiter = Limiter::new(config.concurrency);
        let gate = Arc::new(RateGate::new(config.rate_limits));
        let cache = config.cache_dir.clone().map(ResponseCache::new);
        Ok(OpenAiCaptioner {
            config,
            client,
            url,
            template,
            limiter,
            gate,
            cache,
        })
    }

    fn cache_key(&self, request: &CaptionRequest) -> String {
        ResponseCache::key(
            &KeyParts {
                model: &self.config.model,
                vision: self.config.vision,
                schema: &self.config.schema,
                strict: self.config.json_schema_strict,
                response_format: self.config.response_format,
                temperature: self.config.temperature,
                seed: self.config.seed,
                extra_body: &self.config.extra_body,
                image_transport: self.config.image_transport.as_str(),
            },
            request,
        )
    }

    /// The concurrency limiter's state: current and peak limit, overload answers seen.
    pub fn limiter_stats(&self) -> LimiterStats {
        self.limiter.stats()
    }

    /// Requests holding a concurrency slot now.
    pub fn in_flight(&self) -> usize {
        self.limiter.in_flight()
    }

    /// The request and token rate limits in force (configured or learned from headers).
    pub fn rate_limits(&self) -> RateLimitState {
        self.gate.state()
    }

    /// One attempt holding a concurrency slot, within the rate limits; feeds the outcome back to
    /// the limiter and what the headers say to the rate gate. `tokens` estimates what the request
    /// counts against a token limit (prompt plus `max_tokens`, as providers count it).
    async fn attempt(
        &self,
        body: Vec<u8>,
        tokens: u32,
    ) -> Result<(StatusCode, HeaderMap, String), reqwest::Error> {
        self.gate.wait(tokens).await;
        let _permit = self.limiter.acquire().await;
        let sent = Instant::now();
        let result = self.send(body).await;
        if let Ok((_, headers, _)) = &result {
            self.gate.observe(headers, tokens);
        }
        let signal = match &result {
            Ok((status, _, _)) if status.is_success() => Signal::Answered(sent.elapsed()),
            Ok((status, _, text)) if matches!(status.as_u16(), 429 | 503 | 529) => {
                // Out of quota is not load: it stops the run, the limit does not matter.
                if text.contains("insufficient_quota") {
                    Signal::Neutral
                } else {
                    Signal::Overloaded
                }
            }
            Ok(_) => Signal::Neutral,
            Err(_) => Signal::Dropped,
        };
        self.limiter.record(signal);
        result
    }

    /// The JSON body of one request, from the template when there is one (the same bytes).
    fn body(&self, request: &CaptionRequest, max_tokens: u32) -> Vec<u8> {
        match &self.template {
            Some(template) => template.write(request, max_tokens),
            None => serde_json::to_vec(&chat_request_body(&self.config, request, max_tokens))
                .unwrap_or_default(),
        }
    }

    /// One HTTP exchange: the status, headers and body text, or a connection-level error.
    async fn send(&self, body: Vec<u8>) -> Result<(StatusCode, HeaderMap, String), reqwest::Error> {
        let mut builder = self
            .client
            .post(self.url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                reqwest::header::HeaderValue::from_static("application/json"),
            )
            .body(body);
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key);
        }
        let response = builder.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        Ok((status, headers, text))
    }
}

/// The JSON body the client sends for `request` with this `max_tokens` (the Batch API's input
/// files carry exactly this body, so a batch answer is the answer the online client would get).
pub fn chat_request_body(
    config: &EndpointConfig,
    request: &CaptionRequest,
    max_tokens: u32,
) -> Value {
    let user = match (&request.image, config.vision) {
        (Some(image), true) => {
            let url = config
                .image_transport
                .url_for(&request.record)
                .unwrap_or_else(|| {
                    let data = base64::engine::general_purpose::STANDARD.encode(image.as_slice());
                    format!("data:{};base64,{data}", request.image_mime)
                });
            json!([
                {"type": "text", "text": request.prompt.user},
                {"type": "image_url", "image_url": {"url": url}}
            ])
        }
        _ => Value::String(request.prompt.user.clone()),
    };
    let system = match config.response_format {
        ResponseFormat::JsonSchema => Value::String(request.prompt.system.clone()),
        // Never the removed guided_* parameters: the schema travels in the prompt.
        ResponseFormat::JsonObject | ResponseFormat::None => {
            Value::String(system_with_schema(&request.prompt.system, &config.schema))
        }
    };
    let mut body = json!({
        "model": config.model,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
        ],
        "max_tokens": max_tokens,
        "temperature": config.temperature,
    });
    if let Some(map) = body.as_object_mut() {
        match config.response_format {
            ResponseFormat::JsonSchema => {
                map.insert(
                    "response_format".to_string(),
                    json!({
                        "type": "json_schema",
                        "json_schema": {
                            "name": "fundus_caption",
                            "schema": config.schema,
                            "strict": config.json_schema_strict,
                        }
                    }),
                );
            }
            ResponseFormat::JsonObject => {
                map.insert(
                    "response_format".to_string(),
                    json!({"type": "json_object"}),
                );
            }
            ResponseFormat::None => {}
        }
        if let Some(seed) = config.seed {
            map.insert("seed".to_string(), json!(seed));
        }
        // Extra fields never replace what the client itself decided.
        for (key, value) in &config.extra_body {
            map.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    body
}

/// Reads a chat completion body (as the endpoint or a Batch API output line carries it) the way
/// the online client does: refusal, `content_filter` and `length` become [`CaptionError::Rejected`]
/// (a batch cannot re-ask with more room), a body that is not a completion is `Transient`.
pub fn parse_chat_completion(
    text: &str,
    request: &CaptionRequest,
) -> Result<CaptionReply, CaptionError> {
    parse_success(text, request).map_err(|outcome| match outcome {
        Outcome::Truncated(detail) => CaptionError::Rejected {
            code: "answer.truncated".to_string(),
            detail,
        },
        Outcome::Retry(message) => CaptionError::Transient { message },
        Outcome::Error(err) => err,
    })
}

#[async_trait::async_trait]
impl Captioner for OpenAiCaptioner {
    fn concurrency_limit(&self) -> Option<usize> {
        Some(self.limiter.stats().limit)
    }

    fn info(&self) -> CaptionerInfo {
        CaptionerInfo {
            model: self.config.model.clone(),
            endpoint: self.config.base_url.clone(),
            vision: self.config.vision,
        }
    }

    async fn caption(&self, request: CaptionRequest) -> Result<CaptionReply, CaptionError> {
        let started = Instant::now();
        let item = request.record.id.clone();
        let mut max_tokens = self.config.max_tokens;
        let mut retries = 0u32;
        let mut length_retried = false;
        let cache_key = self.cache.as_ref().map(|_| self.cache_key(&request));
        if let (Some(cache), Some(key)) = (&self.cache, &cache_key)
            && let Some(reply) = cache.get(key)
        {
            tracing::debug!(%item, "answer from the response cache");
            return Ok(reply);
        }
        let prompt_tokens = estimate_tokens(&request.prompt.system)
            .saturating_add(estimate_tokens(&request.prompt.user));
        loop {
            let body = self.body(&request, max_tokens);
            let tokens = prompt_tokens.saturating_add(max_tokens);
            let (delay, last_error) = match self.attempt(body, tokens).await {
                Err(err) => {
                    let message = format!("request to {} failed: {}", self.url, error_chain(&err));
                    (retry_delay(retries, None, jitter()), message)
                }
                Ok((status, headers, text)) if status.is_success() => {
                    match parse_success(&text, &request) {
                        Ok(mut reply) => {
                            reply.latency_ms = elapsed_ms(started);
                            if let (Some(cache), Some(key)) = (&self.cache, &cache_key) {
                                cache.put(key, &reply);
                            }
                            return Ok(reply);
                        }
                        Err(Outcome::Truncated(detail)) => {
                            // A truncated answer is retried once with room to finish.
                            if !length_retried && max_tokens < MAX_TOKENS_CEILING {
                                length_retried = true;
                                max_tokens = max_tokens.saturating_mul(2).min(MAX_TOKENS_CEILING);
                                tracing::debug!(%item, max_tokens, "answer truncated; retrying with more tokens");
                                continue;
                            }
                            return Err(CaptionError::Rejected {
                                code: "answer.truncated".to_string(),
                                detail,
                            });
                        }
                        Err(Outcome::Error(err)) => return Err(err),
                        Err(Outcome::Retry(message)) => {
                            (retry_delay(retries, Some(&headers), jitter()), message)
                        }
                    }
                }
                Ok((status, headers, text)) => {
                    let failure = classify_failure(status, &headers, &text);
                    tracing::debug!(%item, status = status.as_u16(), request_id = ?headers.get("x-request-id"), "endpoint error");
                    match failure {
                        Failure::Stop(err) => return Err(err),
                        Failure::Retry(message) => {
                            (retry_delay(retries, Some(&headers), jitter()), message)
                        }
                    }
                }
            };
            if retries >= self.config.max_retries {
                return Err(CaptionError::Transient {
                    message: format!(
                        "{last_error} (gave up after {} attempts)",
                        retries.saturating_add(1)
                    ),
                });
            }
            retries += 1;
            tracing::debug!(%item, retries, delay_ms = delay.as_millis() as u64, error = %last_error, "retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

fn elapsed_ms(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX)
}

fn jitter() -> f64 {
    rand::rng().random::<f64>()
}

/// The `error.message` of an OpenAI-style error body (or a flat `message`, `detail` or string
/// `error`), else the start of the text: what a server said, for error messages.
pub fn error_body_message(text: &str) -> String {
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let inner = if value["error"].is_object() {
        &value["error"]
    } else {
        &value
    };
    inner["message"]
        .as_str()
        .or_else(|| inner["detail"].as_str())
        .or_else(|| value["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| text.chars().take(300).collect())
}

/// The error and its sources on one line (reqwest hides the useful part in the source).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// How long to wait before retry number `retries + 1`.
///
/// `jitter` is a random number in `0..1`; the backoff is multiplied by `1 - 0.25 * jitter`.
pub(crate) fn retry_delay(retries: u32, headers: Option<&HeaderMap>, jitter: f64) -> Duration {
    if let Some(headers) = headers {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let ms = header("retry-after-ms")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|ms| ms / 1000.0);
        // An HTTP-date retry-after is not parsed and falls back to backoff.
        let seconds =
            ms.or_else(|| header("retry-after").and_then(|v| v.trim().parse::<f64>().ok()));
        if let Some(s) = seconds
            && s.is_finite()
            && s >= 0.0
            && s <= MAX_SERVER_WAIT.as_secs_f64()
        {
            return Duration::from_secs_f64(s);
        }
    }
    let exponent = retries.min(16) as i32;
    let base = (0.5 * 2f64.powi(exponent)).min(8.0);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    Duration::from_secs_f64(base * (1.0 - 0.25 * jitter))
}

/// Error details from either OpenAI's nested body or vLLM's flat one.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub message: String,
    pub kind: Option<String>,
    pub code: Option<String>,
}

pub(crate) fn parse_error_body(text: &str) -> ErrorBody {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return ErrorBody {
            message: text.chars().take(300).collect(),
            ..ErrorBody::default()
        };
    };
    // OpenAI nests the fields under "error"; vLLM's older format puts them at the top.
    let object = match value.get("error") {
        Some(inner) if inner.is_object() => inner,
        Some(Value::String(message)) => {
            return ErrorBody {
                message: message.clone(),
                ..ErrorBody::default()
            };
        }
        _ => &value,
    };
    let field = |name: &str| match object.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    ErrorBody {
        message: field("message")
            .or_else(|| field("detail"))
            .unwrap_or_else(|| text.chars().take(300).collect()),
        kind: field("type"),
        code: field("code"),
    }
}

enum Failure {
    Stop(CaptionError),
    Retry(String),
}

fn classify_failure(status: StatusCode, headers: &HeaderMap, text: &str) -> Failure {
    let error = parse_error_body(text);
    let mut described = format!("HTTP {}: {}", status.as_u16(), error.message);
    if let Some(kind) = &error.kind {
        described.push_str(&format!(" (type {kind})"));
    }
    if let Some(code) = &error.code {
        described.push_str(&format!(" (code {code})"));
    }
    let is = |needle: &str| {
        error.kind.as_deref() == Some(needle) || error.code.as_deref() == Some(needle)
    };
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Failure::Stop(CaptionError::Fatal {
            message: format!("authentication failed: {described}; check the API key"),
        });
    }
    if is("insufficient_quota") {
        return Failure::Stop(CaptionError::Fatal {
            message: format!("quota exhausted: {described}; retrying will not help"),
        });
    }
    let should_retry = headers
        .get("x-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().eq_ignore_ascii_case("true"));
    let retryable = should_retry.unwrap_or(matches!(status.as_u16(), 408 | 409 | 429 | 500..=599));
    if retryable {
        return Failure::Retry(described);
    }
    match status.as_u16() {
        404 => Failure::Stop(CaptionError::Fatal {
            message: format!("endpoint or model not found: {described}; check base URL and model"),
        }),
        400 | 413 | 422 => Failure::Stop(CaptionError::Rejected {
            code: "endpoint.bad_request".to_string(),
            detail: described,
        }),
        _ => Failure::Stop(CaptionError::Transient {
            message: format!("{described} (server asked not to retry)"),
        }),
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<UsageBody>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<Message>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct UsageBody {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    /// OpenAI reports prompt-cache hits here; other servers leave it out.
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Deserialize)]
struct PromptTokensDetails {
    cached_tokens: Option<u32>,
}

enum Outcome {
    Truncated(String),
    Retry(String),
    Error(CaptionError),
}

fn parse_success(text: &str, request: &CaptionRequest) -> Result<CaptionReply, Outcome> {
    let response: ChatResponse = serde_json::from_str(text).map_err(|e| {
        Outcome::Retry(format!(
            "endpoint answered 200 with a body that is not a chat completion ({e}): {}",
            text.chars().take(200).collect::<String>()
        ))
    })?;
    let Some(choice) = response.choices.into_iter().next() else {
        return Err(Outcome::Retry(
            "endpoint answered with no choices".to_string(),
        ));
    };
    let finish_reason = choice.finish_reason.unwrap_or_else(|| "stop".to_string());
    let (content, refusal) = match choice.message {
        Some(m) => (m.content, m.refusal),
        None => (None, None),
    };
    if let Some(refusal) = refusal.filter(|r| !r.trim().is_empty()) {
        return Err(Outcome::Error(CaptionError::Rejected {
            code: "answer.refusal".to_string(),
            detail: refusal,
        }));
    }
    match finish_reason.as_str() {
        "length" => {
            return Err(Outcome::Truncated(format!(
                "the answer hit max_tokens and its JSON is incomplete ({} characters received)",
                content.as_deref().map_or(0, str::len)
            )));
        }
        "content_filter" => {
            return Err(Outcome::Error(CaptionError::Rejected {
                code: "answer.content_filter".to_string(),
                detail: "the endpoint's content filter stopped the answer".to_string(),
            }));
        }
        _ => {}
    }
    let raw = strip_json_fence(content.as_deref().unwrap_or("")).to_string();
    if raw.is_empty() {
        return Err(Outcome::Error(CaptionError::Rejected {
            code: "answer.empty".to_string(),
            detail: format!("the endpoint returned no content (finish_reason {finish_reason})"),
        }));
    }
    // Only when the server reports no usage (counting words is not free at 10,000 answers/s).
    let estimated_prompt = || {
        estimate_tokens(&request.prompt.system)
            .saturating_add(estimate_tokens(&request.prompt.user))
    };
    let cached_prompt_tokens = response
        .usage
        .as_ref()
        .and_then(|u| u.prompt_tokens_details.as_ref())
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0);
    let usage = match response.usage {
        Some(u) => Usage {
            prompt_tokens: u.prompt_tokens.unwrap_or_else(estimated_prompt),
            completion_tokens: u.completion_tokens.unwrap_or_else(|| estimate_tokens(&raw)),
        },
        None => Usage {
            prompt_tokens: estimated_prompt(),
            completion_tokens: estimate_tokens(&raw),
        },
    };
    Ok(CaptionReply {
        raw,
        usage,
        latency_ms: 0,
        finish_reason,
        cached_prompt_tokens: cached_prompt_tokens.min(usage.prompt_tokens),
        from_cache: false,
    })
}

#[cfg(test)]
mod tests;
