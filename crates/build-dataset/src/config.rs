//! Run configuration: one TOML file, overridden by flags. Unknown keys are errors.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The whole configuration of a build, with defaults for every key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildConfig {
    pub image: ImageSection,
    pub captioner: CaptionerSection,
    pub output: OutputSection,
    pub run: RunSection,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptionerSection {
    /// Base URL of an OpenAI-compatible endpoint; empty means the embedded offline captioner.
    pub endpoint: String,
    pub model: String,
    /// Name of the environment variable holding the API key (the key itself never goes in a file).
    pub api_key_env: String,
    /// Whether the endpoint sees images; false sends the facts only.
    pub vision: bool,
    /// Requests in flight at once.
    pub concurrency: usize,
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed: u64,
    pub timeout_secs: u64,
    pub max_retries: u32,
}

impl Default for CaptionerSection {
    fn default() -> Self {
        CaptionerSection {
            endpoint: String::new(),
            model: String::new(),
            api_key_env: "OPENAI_API_KEY".into(),
            vision: true,
            concurrency: 16,
            max_tokens: 1200,
            temperature: 0.2,
            seed: 0,
            timeout_secs: 120,
            max_retries: 6,
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
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            retry_failed: true,
            max_attempts: 5,
        }
    }
}

impl BuildConfig {
    /// Reads a configuration file; errors name the file and the offending key.
    pub fn load(path: &Path) -> Result<BuildConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        let config: BuildConfig = toml::from_str(&text)
            .with_context(|| format!("invalid configuration file {}", path.display()))?;
        config.check()?;
        Ok(config)
    }

    /// Checks values serde cannot: ranges and enumerations.
    pub fn check(&self) -> Result<()> {
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
    fn bad_format_is_refused() {
        let config: BuildConfig = toml::from_str("[image]\nformat = \"gif\"\n").unwrap();
        assert!(config.check().unwrap_err().to_string().contains("gif"));
    }
}
