//! Configuration layers: defaults < file < `RETINALOGOS_<SECTION>_<KEY>` environment variables
//! (flags are applied by the caller). Unknown keys, in the file or the environment, are errors that
//! name the key and suggest the nearest valid one. Also `config init` and `config show`.

use crate::config::BuildConfig;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// The commented example `config init` writes; parses to the defaults.
pub const EXAMPLE: &str = include_str!("../../../docs/config.example.toml");

const ENV_PREFIX: &str = "RETINALOGOS_";

/// Builds the configuration from the defaults, an optional file and the given environment.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<BuildConfig> {
    let defaults =
        toml::Table::try_from(BuildConfig::default()).context("default configuration")?;
    let mut merged = defaults.clone();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("invalid configuration file {}", path.display()))?;
        let origin = format!("configuration file {}", path.display());
        for (section, value) in table {
            let known = section_keys(&defaults, &section, &origin)?;
            let Some(entries) = value.as_table() else {
                bail!("{origin}: [{section}] must be a table");
            };
            for (key, value) in entries {
                check_key(known, &section, key, &origin)?;
                check_type(known.get(key), value, &section, key, &origin)?;
                set(&mut merged, &section, key, value.clone());
            }
        }
    }
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        // Only variables that start with a section name are configuration; others
        // (RETINALOGOS_LOG, RETINALOGOS_CACHE, ...) belong to other parts of the tool.
        let Some(section) = defaults.keys().find(|s| rest.starts_with(&format!("{s}_"))) else {
            continue;
        };
        let key = &rest[section.len() + 1..];
        let origin = format!("environment variable {name}");
        let known = section_keys(&defaults, section, &origin)?;
        check_key(known, section, key, &origin)?;
        let value = parse_env_value(&raw, known.get(key));
        check_type(known.get(key), &value, section, key, &origin)?;
        set(&mut merged, &section.clone(), key, value);
    }
    let mut config: BuildConfig = merged
        .try_into()
        .context("invalid configuration value (see `build-dataset config show`)")?;
    // Replicas without a single endpoint: the run is online, and `endpoint` names the first.
    if config.captioner.endpoint.is_empty()
        && let Some(first) = config.captioner.endpoints.first()
    {
        config.captioner.endpoint = first.url.clone();
    }
    config.check()?;
    Ok(config)
}

fn section_keys<'a>(
    defaults: &'a toml::Table,
    section: &str,
    origin: &str,
) -> Result<&'a toml::Table> {
    match defaults.get(section).and_then(|v| v.as_table()) {
        Some(table) => Ok(table),
        None => bail!(
            "{origin}: unknown section [{section}]{}",
            suggestion(section, defaults.keys())
        ),
    }
}

fn check_key(known: &toml::Table, section: &str, key: &str, origin: &str) -> Result<()> {
    if known.contains_key(key) {
        return Ok(());
    }
    bail!(
        "{origin}: unknown key {section}.{key}{}",
        suggestion(key, known.keys())
    )
}

fn suggestion<'a>(wrong: &str, valid: impl Iterator<Item = &'a String>) -> String {
    valid
        .map(|candidate| (strsim::jaro_winkler(wrong, candidate), candidate))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, best)| format!(" (did you mean {best}?)"))
        .unwrap_or_else(|| " (see `build-dataset config init` for every key)".into())
}

/// A scalar must keep its default's type (an integer may stand for a float), so that the error
/// names the key and the value instead of a deserializer's position.
fn check_type(
    default: Option<&toml::Value>,
    value: &toml::Value,
    section: &str,
    key: &str,
    origin: &str,
) -> Result<()> {
    use toml::Value::{Boolean, Float, Integer, String};
    let fits = match default {
        Some(String(_)) => matches!(value, String(_)),
        Some(Integer(_)) => matches!(value, Integer(_)),
        Some(Float(_)) => matches!(value, Float(_) | Integer(_)),
        Some(Boolean(_)) => matches!(value, Boolean(_)),
        _ => true,
    };
    if fits {
        return Ok(());
    }
    bail!(
        "{origin}: {section}.{key} must be a {}, not {value}",
        default.map_or("value", |d| d.type_str())
    )
}

/// Environment values are TOML literals when they parse as one of the default's type, else strings.
fn parse_env_value(raw: &str, default: Option<&toml::Value>) -> toml::Value {
    if matches!(default, Some(toml::Value::String(_))) {
        return toml::Value::String(raw.to_string());
    }
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    if let Some(toml::Value::Table(entries)) = table.get_mut(section) {
        entries.insert(key.to_string(), value);
    }
}

/// `config show`: the effective configuration as TOML, with secrets redacted.
pub fn show(config: &BuildConfig) -> Result<String> {
    let mut text = toml::to_string_pretty(config)?;
    let key_set = std::env::var(&config.captioner.api_key_env).is_ok_and(|k| !k.is_empty());
    text.push_str(&format!(
        "\n# API key: read from ${} ({}); never printed\n",
        config.captioner.api_key_env,
        if key_set { "set" } else { "not set" }
    ));
    Ok(redact(&text))
}

/// Blanks values of keys that look like secrets, should a future key hold one.
fn redact(text: &str) -> String {
    text.lines()
        .map(|line| {
            let key = line
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let secret = ["api_key", "token", "secret", "password"]
                .iter()
                .any(|s| key.contains(s) && !key.ends_with("_env") && !key.contains("tokens"));
            if secret && line.contains('=') {
                format!(
                    "{} = \"<redacted>\"",
                    line.split('=').next().unwrap_or("").trim_end()
                )
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `config init`: writes the commented example, refusing to overwrite.
pub fn init(path: &Path) -> Result<()> {
    if path.exists() {
        bail!("{} exists; not overwriting it", path.display());
    }
    std::fs::write(path, EXAMPLE).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn example_parses_to_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        init(&path).unwrap();
        let loaded = load(Some(&path), env(&[])).unwrap();
        assert_eq!(
            toml::to_string(&loaded).unwrap(),
            toml::to_string(&BuildConfig::default()).unwrap()
        );
        assert!(init(&path).is_err(), "init must not overwrite");
    }

    #[test]
    fn replicas_make_the_run_online_and_bad_weights_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[captioner]\nendpoints = [{ url = \"http://a:8000/v1\", weight = 2 }, { url = \"http://b:8000/v1\" }]\n",
        )
        .unwrap();
        let config = load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.captioner.endpoint, "http://a:8000/v1");
        let weights: Vec<f64> = config
            .captioner
            .endpoints
            .iter()
            .map(|r| r.weight)
            .collect();
        assert_eq!(weights, [2.0, 1.0]);
        std::fs::write(
            &path,
            "[captioner]\nendpoints = [{ url = \"http://a:8000/v1\", weight = 0 }]\n",
        )
        .unwrap();
        let err = load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("positive weight"), "{err}");
    }

    #[test]
    fn precedence_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[image]\nsize = 512\njpeg_quality = 80\n").unwrap();
        let config = load(
            Some(&path),
            env(&[
                ("RETINALOGOS_IMAGE_SIZE", "768"),
                ("RETINALOGOS_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(config.image.size, 768, "environment beats the file");
        assert_eq!(config.image.jpeg_quality, 80, "file beats the default");
        assert_eq!(config.image.format, "jpeg", "default kept");
        let config = load(None, env(&[("RETINALOGOS_CAPTIONER_MODEL", "1234")])).unwrap();
        assert_eq!(config.captioner.model, "1234", "string keys stay strings");
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[image]\nsise = 512\n").unwrap();
        let err = load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("image.sise") && err.contains("did you mean size"),
            "{err}"
        );
        assert!(err.contains("c.toml"), "{err}");
        std::fs::write(&path, "[captioner]\nconcurency = 4\n").unwrap();
        let err = load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("did you mean concurrency"), "{err}");
        let err = load(None, env(&[("RETINALOGOS_RUN_MAX_ATTEMPT", "3")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RETINALOGOS_RUN_MAX_ATTEMPT") && err.contains("max_attempts"),
            "{err}"
        );
        std::fs::write(&path, "[imagge]\nsize = 512\n").unwrap();
        let err = load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("did you mean image"), "{err}");
    }

    #[test]
    fn bad_values_are_errors() {
        let err = load(None, env(&[("RETINALOGOS_IMAGE_SIZE", "huge")])).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("image.size")
                && text.contains("huge")
                && text.contains("RETINALOGOS_IMAGE_SIZE"),
            "{text}"
        );
    }

    #[test]
    fn show_redacts_secrets() {
        let text =
            redact("api_key = \"sk-live-123\"\napi_key_env = \"OPENAI_API_KEY\"\nmax_tokens = 5\n");
        assert!(!text.contains("sk-live-123"));
        assert!(text.contains("api_key_env = \"OPENAI_API_KEY\""));
        assert!(text.contains("max_tokens = 5"));
    }
}
