//! Captioners: whatever turns one prepared image and its facts into a structured caption answer.
//!
//! This crate owns the [`Captioner`] interface, the embedded [`OfflineCaptioner`] (deterministic,
//! grounded only on labels and measurements, needs no endpoint) and the OpenAI-compatible HTTP
//! client [`OpenAiCaptioner`] (structured output, retries like the official SDK, error
//! classification). It returns the raw answer text; deciding acceptance is the validator's job.

#![warn(missing_docs)]

use retina_prompt::RenderedPrompt;
use retina_records::{ImageFacts, Record, Usage};
use std::sync::Arc;

mod cache;
mod limiter;
mod offline;
mod openai;
mod pricing;
mod ratelimit;
mod replicas;

pub use cache::ResponseCache;
pub use limiter::{Limiter, LimiterConfig, LimiterStats, Permit, Signal};
pub use offline::OfflineCaptioner;
pub use openai::{
    EndpointConfig, ImageTransport, OpenAiCaptioner, ResponseFormat, chat_request_body,
    error_body_message, error_chain, parse_chat_completion, system_with_schema,
};
pub use pricing::{DEFAULT_BATCH_FACTOR, Price, PriceTable, Spend};
pub use ratelimit::{RateGate, RateLimitConfig, RateLimitState, parse_reset};
pub use replicas::{ReplicaSet, ReplicaStats};

/// Who answers: recorded in provenance and used in cache keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionerInfo {
    /// Model name as sent to the endpoint (or the offline generator's name).
    pub model: String,
    /// Endpoint base URL (or `offline:...`).
    pub endpoint: String,
    /// True when the model receives the image.
    pub vision: bool,
}

/// Everything one caption call needs.
#[derive(Debug, Clone)]
pub struct CaptionRequest {
    /// The labelled record.
    pub record: Arc<Record>,
    /// What the image stage measured.
    pub facts: Arc<ImageFacts>,
    /// Rendered system and user messages.
    pub prompt: RenderedPrompt,
    /// Encoded image bytes for vision models; `None` for text-only models.
    pub image: Option<Arc<Vec<u8>>>,
    /// MIME type of `image` (e.g. `image/jpeg`).
    pub image_mime: &'static str,
    /// Set when this call re-asks after the validator rejected an answer. `prompt.user` then
    /// already ends with the repair request (rendered from `prompts/repair.j2`), so HTTP
    /// captioners send it as is and their cache keys differ from the first ask's.
    pub repair: Option<RepairTurn>,
}

/// A re-ask after a rejected answer: what was answered and why it was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairTurn {
    /// 1 for the first re-ask, 2 for the second, ...
    pub attempt: u32,
    /// The raw answer the validator rejected.
    pub previous_answer: String,
    /// The validator's messages, one per reason (`code: detail`).
    pub messages: Vec<String>,
}

/// A successful answer: raw text still to be validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionReply {
    /// The answer text (JSON, fences already stripped by the HTTP client).
    pub raw: String,
    /// Token usage (reported by the endpoint, or estimated offline).
    pub usage: Usage,
    /// Wall time of the successful call including retries, in milliseconds.
    pub latency_ms: u32,
    /// `stop` normally.
    pub finish_reason: String,
    /// Prompt tokens the provider served from its prompt cache (billed at the cached price).
    pub cached_prompt_tokens: u32,
    /// True when the answer came from the response cache: nothing was paid for it this time.
    pub from_cache: bool,
}

/// Why a caption call failed, classified by what the pipeline should do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptionError {
    /// Worth retrying later (timeouts, 5xx after retries, connection resets): the item is marked failed and retried next run.
    #[error("transient captioner error: {message}")]
    Transient {
        /// What happened.
        message: String,
    },
    /// Stop the whole run now (authentication, insufficient_quota, misconfiguration): nothing more will succeed.
    #[error("fatal captioner error: {message}")]
    Fatal {
        /// What happened and what to fix.
        message: String,
    },
    /// This item can never succeed as asked (refusal, content_filter, length after retry): rejected with a reason code.
    #[error("answer rejected ({code}): {detail}")]
    Rejected {
        /// Stable reason code, e.g. `answer.truncated`.
        code: String,
        /// Human explanation.
        detail: String,
    },
}

/// Anything that can caption: the offline generator, an HTTP endpoint, a test double.
#[async_trait::async_trait]
pub trait Captioner: Send + Sync {
    /// Model, endpoint and whether it sees images.
    fn info(&self) -> CaptionerInfo;
    /// How many requests the captioner lets out at once right now, when it adapts that number
    /// (for the progress display); `None` when it does not.
    fn concurrency_limit(&self) -> Option<usize> {
        None
    }
    /// Captions one item.
    async fn caption(&self, request: CaptionRequest) -> Result<CaptionReply, CaptionError>;
}

/// Estimated tokens of a text (whitespace words x 1.3), for cost accounting without a tokenizer.
pub fn estimate_tokens(text: &str) -> u32 {
    let words = text.split_whitespace().count() as f64;
    (words * 1.3).ceil().min(u32::MAX as f64) as u32
}

/// Strips a surrounding Markdown code fence (```json ... ```) and whitespace from an answer.
pub fn strip_json_fence(text: &str) -> &str {
    let trimmed = text.trim();
    let Some(rest) = trimmed.strip_prefix("```") else {
        return trimmed;
    };
    // Drop the info string (`json`, `JSON`, nothing) up to the end of the first line.
    let body = match rest.find('\n') {
        Some(newline) => rest.get(newline + 1..).unwrap_or(""),
        None => rest.trim_start_matches(|c: char| c.is_ascii_alphabetic()),
    };
    body.trim_end().strip_suffix("```").unwrap_or(body).trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fences_are_stripped() {
        assert_eq!(strip_json_fence("```json\n{\"a\":1}\n```"), "{\"a\":1}");
        assert_eq!(strip_json_fence("  ```\n{}\n```  "), "{}");
        assert_eq!(strip_json_fence("```json {\"a\":1}```"), "{\"a\":1}");
        assert_eq!(strip_json_fence("{\"a\":\"```\"}"), "{\"a\":\"```\"}");
        assert_eq!(strip_json_fence(" {} \n"), "{}");
    }

    #[test]
    fn tokens_are_estimated_from_words() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(
            estimate_tokens("one two three four five six seven eight nine ten"),
            13
        );
    }

    proptest! {
        #[test]
        fn fence_stripping_never_panics_and_is_idempotent_on_plain_json(body in "[ -~\n]{0,80}") {
            let fenced = format!("```json\n{body}\n```");
            let stripped = strip_json_fence(&fenced);
            prop_assert_eq!(stripped, body.trim());
            let _ = strip_json_fence(&body);
        }
    }
}
