//! Keeping secrets out of messages.

/// Replaces the values of secret-looking environment variables (keys, tokens, passwords, SAS and
/// service-account keys) in a message with `***`. Messages from the storage client can echo a
/// request or a configuration value; this runs over every one of them before it becomes an
/// error.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Collects the secret values from environment pairs.
    pub fn from_env<I, K, V>(vars: I) -> Redactor
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut secrets: Vec<String> = vars
            .into_iter()
            .filter(|(key, _)| is_secret_name(key.as_ref()))
            .map(|(_, value)| value.as_ref().to_string())
            // Very short values would blank out ordinary words; no real credential is that short.
            .filter(|value| value.len() >= 6)
            .collect();
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `message` with every known secret replaced by `***`, and any presigned-URL signature
    /// (`X-Amz-Signature=`, `sig=`, `Signature=`) cut.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        for marker in [
            "X-Amz-Signature=",
            "X-Amz-Credential=",
            "X-Amz-Security-Token=",
            "Signature=",
            "sig=",
        ] {
            let mut from = 0;
            while let Some(found) = out[from..].find(marker) {
                let value_start = from + found + marker.len();
                let end = out[value_start..]
                    .find(|c: char| c == '&' || c == '"' || c == '\'' || c.is_whitespace())
                    .map_or(out.len(), |i| value_start + i);
                out.replace_range(value_start..end, "***");
                from = value_start + 3;
            }
        }
        out
    }
}

/// Names of variables whose values are credentials.
fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let cloud = ["AWS_", "GOOGLE_", "AZURE_", "GCS_", "S3_"]
        .iter()
        .any(|p| upper.starts_with(p));
    cloud
        && [
            "SECRET",
            "TOKEN",
            "PASSWORD",
            "ACCOUNT_KEY",
            "ACCESS_KEY",
            "SAS",
            "SERVICE_ACCOUNT_KEY",
            "CLIENT_SECRET",
        ]
        .iter()
        .any(|word| upper.contains(word))
}
