//! Run configuration: the typed settings and their defaults; `config_layers` reads them from a
//! file and the environment.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// The whole configuration of a build, with defaults for every key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildConfig {
    pub image: ImageSection,
    pub captioner: CaptionerSection,
    pub output: OutputSection,
    pub run: RunSection,
    pub cost: CostSection,
    pub prompt: PromptSection,
}

/// Caption styles and the repair loop.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptSection {
    /// Caption styles asked for in one request: `detailed` (the caption) and any other style the
    /// rules file defines (`short`: 77 CLIP tokens), returned under `caption_variants`.
    pub styles: Vec<String>,
    /// Re-asks after a rejected answer, with the validator's messages; 0 rejects at once.
    pub repair_attempts: u32,
}

impl Default for PromptSection {
    fn default() -> Self {
        PromptSection {
            styles: vec!["detailed".into()],
            repair_attempts: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageSection {
    /// Output side in pixels (square).
    pub size: u32,
    /// "jpeg" or "png".
    pub format: String,
    pub jpeg_quality: u8,
    /// Refuse images with more pixels than this (decompression bombs).
    pub max_megapixels: u32,
}

impl Default for ImageSection {
    fn default() -> Self {
        ImageSection {
            size: 1024,
            format: "jpeg".into(),
            jpeg_quality: 90,
            max_megapixels: 80,
        }
    }
}

/// One replica of `captioner.endpoints`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEntry {
    /// Base URL up to and including `/v1`.
    pub url: String,
    /// Share of the requests relative to the other replicas.
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptionerSection {
    /// Base URL of an OpenAI-compatible endpoint; empty means the embedded offline captioner.
    pub endpoint: String,
    /// Several replicas of the same model instead of one `endpoint`:
    /// `endpoints = [{ url = "...", weight = 2 }, ...]` (weight defaults to 1).
    pub endpoints: Vec<ReplicaEntry>,
    pub model: String,
    /// Name of the environment variable holding the API key (the key itself never goes in a file).
    pub api_key_env: String,
    /// Whether the endpoint sees images; false sends the facts only.
    pub vision: bool,
    /// How images reach a vision endpoint: "data_url" (the prepared image inline, the default),
    /// "local_path" (`file://` and the source photograph's path, for a server beside the data,
    /// e.g. vLLM with `--allowed-local-media-path`) or "url" (`image_url_prefix` and the path
    /// relative to the dataset root, for a server that fetches the photographs over http(s)).
    pub image_transport: String,
    /// Where `image_transport = "url"` finds the photographs: a URL prefix such as
    /// `https://data.example/eyepacs`.
    pub image_url_prefix: String,
    /// How the answer's shape is asked for: "json_schema" (strict, the default), "json_object"
    /// or "none" for endpoints that refuse json_schema (the schema then goes in the prompt).
    pub response_format: String,
    /// Most requests in flight at once; the adaptive limiter finds the endpoint's capacity below it.
    pub concurrency: usize,
    /// Requests in flight at the start, before latency and overload answers tune the limit.
    pub initial_concurrency: usize,
    /// false: always `concurrency` requests in flight (no tuning).
    pub adaptive_concurrency: bool,
    /// Requests per `rate_limit_window_secs` (0: none beyond what the server's
    /// `x-ratelimit-*` headers say; without headers nothing is limited).
    pub rate_limit_requests: u32,
    /// Prompt plus completion tokens per `rate_limit_window_secs` (0: none, as above).
    pub rate_limit_tokens: u32,
    /// The window those limits and the server's `x-ratelimit-limit-*` refer to (60 for OpenAI).
    pub rate_limit_window_secs: u64,
    /// Cache answers under `<out>/cache` so re-runs never pay twice.
    pub cache: bool,
    /// Set from `--out` (not a file setting): where the cache lives.
    #[serde(skip)]
    pub cache_dir: Option<std::path::PathBuf>,
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed: u64,
    pub timeout_secs: u64,
    pub max_retries: u32,
    /// Extra fields merged into every request body, e.g. `repeat_penalty = 1.1` for llama.cpp
    /// or `top_k = 20` for vLLM; fields the client sets itself cannot be replaced.
    pub extra_body: serde_json::Map<String, serde_json::Value>,
}

impl CaptionerSection {
    /// `image_transport` and `image_url_prefix` as the client's setting.
    pub fn image_transport(&self) -> Result<retina_captioner::ImageTransport, String> {
        use retina_captioner::ImageTransport;
        match self.image_transport.trim() {
            "data_url" => Ok(ImageTransport::DataUrl),
            "local_path" => Ok(ImageTransport::LocalPath),
            "url" => {
                let prefix = self.image_url_prefix.trim();
                if prefix.starts_with("http://") || prefix.starts_with("https://") {
                    Ok(ImageTransport::UrlPrefix(prefix.to_string()))
                } else {
                    Err(format!(
                        "captioner.image_url_prefix must be an http(s) URL when image_transport = \"url\", not {prefix:?}"
                    ))
                }
            }
            other => Err(format!(
                "captioner.image_transport must be \"data_url\", \"local_path\" or \"url\", not {other:?}"
            )),
        }
    }
}

impl Default for CaptionerSection {
    fn default() -> Self {
        CaptionerSection {
            endpoint: String::new(),
            endpoints: Vec::new(),
            model: String::new(),
            api_key_env: "OPENAI_API_KEY".into(),
            vision: true,
            image_transport: "data_url".into(),
            image_url_prefix: String::new(),
            response_format: "json_schema".into(),
            concurrency: 256,
            initial_concurrency: 16,
            adaptive_concurrency: true,
            rate_limit_requests: 0,
            rate_limit_tokens: 0,
            rate_limit_window_secs: 60,
            cache: true,
            cache_dir: None,
            max_tokens: 1200,
            temperature: 0.2,
            seed: 0,
            timeout_secs: 120,
            max_retries: 6,
            extra_body: serde_json::Map::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSection {
    pub shard_megabytes: u64,
    pub row_group_megabytes: u64,
    /// Prefix of shard file names (a worker index goes here when crawls are split).
    pub shard_prefix: String,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            shard_megabytes: 500,
            row_group_megabytes: 100,
            shard_prefix: "part".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// Retry items that failed (endpoint or I/O trouble) in an earlier run.
    pub retry_failed: bool,
    /// Give up on an item after this many failed attempts across runs.
    pub max_attempts: u32,
    /// After a stop signal, how long requests in flight may take before the run exits anyway.
    pub stop_grace_secs: u64,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            retry_failed: true,
            max_attempts: 5,
            stop_grace_secs: 120,
        }
    }
}

/// Prices, the spending budget and what `plan` assumes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostSection {
    /// Stop the run cleanly once it has spent this many US dollars (0: no budget); `--max-cost`.
    pub max_usd: f64,
    /// Completion tokens `plan` expects per request (0: assume `captioner.max_tokens`).
    pub expected_completion_tokens: u32,
    /// Seconds one request takes, for `plan`'s wall-time estimate.
    pub expected_latency_secs: f64,
    /// Prompt tokens one image costs, for `plan` (about 765 for a 1024 px image at OpenAI's
    /// high detail; servers of open models count differently).
    pub image_tokens: u32,
    /// US dollars per million tokens by model name, over the built-in table, e.g.
    /// `[cost.prices."gpt-4o-mini"] input = 0.15, output = 0.60, cached_input = 0.075`.
    pub prices: std::collections::BTreeMap<String, retina_captioner::Price>,
}

impl Default for CostSection {
    fn default() -> Self {
        CostSection {
            max_usd: 0.0,
            expected_completion_tokens: 0,
            expected_latency_secs: 5.0,
            image_tokens: 765,
            prices: std::collections::BTreeMap::new(),
        }
    }
}

impl CostSection {
    /// The price table: built-in list prices with the configured ones over them.
    pub fn price_table(&self) -> retina_captioner::PriceTable {
        retina_captioner::PriceTable::with_overrides(&self.prices)
    }
}

impl BuildConfig {
    /// Checks values serde cannot: ranges and enumerations.
    pub fn check(&self) -> Result<()> {
        for replica in &self.captioner.endpoints {
            if replica.url.trim().is_empty()
                || !(replica.weight.is_finite() && replica.weight > 0.0)
            {
                bail!(
                    "captioner.endpoints: each entry needs a url and a positive weight; got {replica:?}"
                );
            }
        }
        if !self.prompt.styles.iter().any(|s| s == "detailed") {
            bail!(
                "prompt.styles must include \"detailed\" (the caption field); got {:?}",
                self.prompt.styles
            );
        }
        if self.prompt.repair_attempts > 5 {
            bail!(
                "prompt.repair_attempts is {}; at most 5 (each re-ask is a paid request)",
                self.prompt.repair_attempts
            );
        }
        if !matches!(self.image.format.as_str(), "jpeg" | "png") {
            bail!(
                "image.format must be \"jpeg\" or \"png\", not {:?}",
                self.image.format
            );
        }
        if !(64..=8192).contains(&self.image.size) {
            bail!(
                "image.size must be between 64 and 8192 pixels, not {}",
                self.image.size
            );
        }
        if !(1..=100).contains(&self.image.jpeg_quality) {
            bail!(
                "image.jpeg_quality must be 1-100, not {}",
                self.image.jpeg_quality
            );
        }
        if self.captioner.concurrency == 0 {
            bail!("captioner.concurrency must be at least 1");
        }
        if self.captioner.rate_limit_window_secs == 0 {
            bail!("captioner.rate_limit_window_secs must be at least 1");
        }
        if let Err(reason) = self.captioner.image_transport() {
            bail!("{reason}");
        }
        if let Err(reason) = self
            .captioner
            .response_format
            .parse::<retina_captioner::ResponseFormat>()
        {
            bail!("captioner.response_format: {reason}");
        }
        if !self.cost.max_usd.is_finite() || self.cost.max_usd < 0.0 {
            bail!(
                "cost.max_usd must be a number >= 0 (0: no budget), not {}",
                self.cost.max_usd
            );
        }
        if !self.cost.expected_latency_secs.is_finite() || self.cost.expected_latency_secs <= 0.0 {
            bail!(
                "cost.expected_latency_secs must be a number > 0, not {}",
                self.cost.expected_latency_secs
            );
        }
        for (model, price) in &self.cost.prices {
            if let Err(reason) = price.check() {
                bail!("cost.prices.{model:?}: {reason}");
            }
        }
        // These are the client's own decisions; a silent override would change every answer.
        const OWN: [&str; 7] = [
            "model",
            "messages",
            "response_format",
            "max_tokens",
            "temperature",
            "seed",
            "stream",
        ];
        if let Some(key) = self
            .captioner
            .extra_body
            .keys()
            .find(|k| OWN.contains(&k.as_str()))
        {
            bail!(
                "captioner.extra_body.{key} is set by build-dataset itself; use the [captioner] key instead (or leave it out)"
            );
        }
        if self.output.shard_megabytes == 0 || self.output.row_group_megabytes == 0 {
            bail!("output.shard_megabytes and output.row_group_megabytes must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = toml::from_str::<BuildConfig>("[image]\nsizee = 512\n").unwrap_err();
        assert!(err.to_string().contains("sizee"), "{err}");
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let config: BuildConfig = toml::from_str("[image]\nsize = 512\n").unwrap();
        assert_eq!(config.image.size, 512);
        assert_eq!(config.image.jpeg_quality, 90);
        assert!(config.check().is_ok());
    }

    #[test]
    fn image_transport_is_checked_and_names_the_key() {
        use retina_captioner::ImageTransport;
        let parse = |text: &str| toml::from_str::<BuildConfig>(text).unwrap();
        let config = parse("[captioner]\nimage_transport = \"local_path\"\n");
        assert!(config.check().is_ok());
        assert_eq!(
            config.captioner.image_transport(),
            Ok(ImageTransport::LocalPath)
        );
        let config = parse(
            "[captioner]\nimage_transport = \"url\"\nimage_url_prefix = \"https://d.example/ds\"\n",
        );
        assert_eq!(
            config.captioner.image_transport(),
            Ok(ImageTransport::UrlPrefix("https://d.example/ds".into()))
        );
        let err = parse("[captioner]\nimage_transport = \"url\"\n")
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("captioner.image_url_prefix"), "{err}");
        let err = parse("[captioner]\nimage_transport = \"ftp\"\n")
            .check()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("captioner.image_transport") && err.contains("ftp"),
            "{err}"
        );
    }

    #[test]
    fn extra_body_passes_through_and_cannot_replace_own_fields() {
        let config: BuildConfig =
            toml::from_str("[captioner.extra_body]\nrepeat_penalty = 1.1\ntop_k = 20\n").unwrap();
        assert_eq!(config.captioner.extra_body["repeat_penalty"], 1.1);
        assert_eq!(config.captioner.extra_body["top_k"], 20);
        assert!(config.check().is_ok());
        let config: BuildConfig =
            toml::from_str("[captioner.extra_body]\nresponse_format = 1\n").unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.contains("captioner.extra_body.response_format"),
            "{err}"
        );
    }

    #[test]
    fn prices_and_response_format_are_read_and_checked() {
        let config: BuildConfig = toml::from_str(
            "[captioner]\nresponse_format = \"json_object\"\n[cost]\nmax_usd = 2.5\n\
             [cost.prices.\"my-model\"]\ninput = 1.0\noutput = 2\n",
        )
        .unwrap();
        assert!(config.check().is_ok());
        let price = config.cost.price_table().lookup("my-model").unwrap();
        assert_eq!(
            (price.input, price.output, price.cached_input),
            (1.0, 2.0, None)
        );
        assert!(config.cost.price_table().lookup("gpt-4o-mini").is_some());
        let config: BuildConfig =
            toml::from_str("[captioner]\nresponse_format = \"guided_json\"\n").unwrap();
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("guided_json")
        );
        let config: BuildConfig =
            toml::from_str("[cost.prices.m]\ninput = -1.0\noutput = 1.0\n").unwrap();
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("cost.prices")
        );
    }

    #[test]
    fn bad_format_is_refused() {
        let config: BuildConfig = toml::from_str("[image]\nformat = \"gif\"\n").unwrap();
        assert!(config.check().unwrap_err().to_string().contains("gif"));
    }
}
