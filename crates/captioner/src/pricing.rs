//! Prices and spending: what a request costs, from a per-model price table in US dollars per
//! million tokens.
//!
//! A few well-known hosted models have built-in prices (list prices, online API, checked
//! 2025; a configuration overrides or adds models). Self-hosted models have no price unless one
//! is configured: their spend is reported as unpriced, never as a made-up figure. Answers from
//! the response cache cost nothing and are counted separately.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Prices of one model, US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Prompt (input) tokens.
    pub input: f64,
    /// Completion (output) tokens.
    pub output: f64,
    /// Prompt tokens the provider served from its prompt cache; `None`: billed as `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// What a Batch API answer costs as a fraction of the online price; `None`: OpenAI's
    /// [`DEFAULT_BATCH_FACTOR`] (half). Set 1.0 for providers without a batch discount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_factor: Option<f64>,
}

/// The Batch API's price as a fraction of the online price, unless a price says otherwise
/// (OpenAI bills batch input and output tokens at 50% of the online list price).
pub const DEFAULT_BATCH_FACTOR: f64 = 0.5;

impl Price {
    /// Dollars for one exchange. `cached_prompt` is the part of `prompt` served from the
    /// provider's prompt cache (at most `prompt`).
    pub fn cost(&self, prompt: u64, cached_prompt: u64, completion: u64) -> f64 {
        let cached = cached_prompt.min(prompt);
        let fresh = prompt - cached;
        let cached_rate = self.cached_input.unwrap_or(self.input);
        (fresh as f64 * self.input + cached as f64 * cached_rate + completion as f64 * self.output)
            / 1_000_000.0
    }

    /// A price of nothing (the embedded offline captioner).
    pub fn free() -> Price {
        Price {
            input: 0.0,
            output: 0.0,
            cached_input: None,
            batch_factor: None,
        }
    }

    /// The fraction of the online price a batch answer costs.
    pub fn batch_factor(&self) -> f64 {
        self.batch_factor.unwrap_or(DEFAULT_BATCH_FACTOR)
    }

    /// Dollars for one exchange through the Batch API: [`Price::cost`] times the batch factor.
    pub fn batch_cost(&self, prompt: u64, cached_prompt: u64, completion: u64) -> f64 {
        self.cost(prompt, cached_prompt, completion) * self.batch_factor()
    }

    /// Every price finite and not negative, the batch factor too.
    pub fn check(&self) -> Result<(), String> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if ok(self.input)
            && ok(self.output)
            && self.cached_input.is_none_or(ok)
            && self.batch_factor.is_none_or(ok)
        {
            Ok(())
        } else {
            Err(format!(
                "prices must be finite numbers >= 0 (input {}, output {}, cached_input {:?}, batch_factor {:?})",
                self.input, self.output, self.cached_input, self.batch_factor
            ))
        }
    }
}

/// Built-in list prices (US dollars per million tokens: input, output, cached input).
const BUILT_IN: &[(&str, f64, f64, f64)] = &[
    ("gpt-4o", 2.50, 10.00, 1.25),
    ("gpt-4o-mini", 0.15, 0.60, 0.075),
    ("gpt-4.1", 2.00, 8.00, 0.50),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025),
];

/// Model name to price: the configured entries over the built-in ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    entries: BTreeMap<String, Price>,
}

impl PriceTable {
    /// The built-in prices with `configured` laid over them (a configured model wins).
    pub fn with_overrides(configured: &BTreeMap<String, Price>) -> PriceTable {
        let mut entries: BTreeMap<String, Price> = BUILT_IN
            .iter()
            .map(|(model, input, output, cached)| {
                (
                    (*model).to_string(),
                    Price {
                        input: *input,
                        output: *output,
                        cached_input: Some(*cached),
                        batch_factor: None,
                    },
                )
            })
            .collect();
        for (model, price) in configured {
            entries.insert(model.clone(), *price);
        }
        PriceTable { entries }
    }

    /// The price of `model`: an exact entry, else the longest entry that prefixes it followed by
    /// `-` (dated snapshots such as `gpt-4o-mini-2024-07-18`), also after a `provider/` prefix.
    pub fn lookup(&self, model: &str) -> Option<Price> {
        let model = model.trim();
        let bare = model.rsplit('/').next().unwrap_or(model);
        for name in [model, bare] {
            if let Some(price) = self.entries.get(name) {
                return Some(*price);
            }
        }
        self.entries
            .iter()
            .filter(|(key, _)| {
                bare.strip_prefix(key.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
            })
            .max_by_key(|(key, _)| key.len())
            .map(|(_, price)| *price)
    }

    /// Every model with a price (for `plan` and docs).
    pub fn models(&self) -> impl Iterator<Item = (&str, &Price)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// What requests used and cost, added up (a run, or a dataset over all its runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Spend {
    /// Answers that went over the wire (billed).
    pub requests: u64,
    /// Answers taken from the response cache (free).
    pub cache_hits: u64,
    /// Prompt tokens of billed answers.
    pub prompt_tokens: u64,
    /// Of those, tokens the provider served from its prompt cache.
    pub cached_prompt_tokens: u64,
    /// Completion tokens of billed answers.
    pub completion_tokens: u64,
    /// Of `requests`, answers that came through the Batch API (billed at the batch price).
    pub batch_requests: u64,
    /// US dollars; `None` when the model has no price (self-hosted, or not configured).
    pub usd: Option<f64>,
}

impl Spend {
    /// Adds one answer at `price`.
    pub fn add_answer(
        &mut self,
        price: Option<&Price>,
        prompt: u64,
        cached_prompt: u64,
        completion: u64,
        from_cache: bool,
    ) {
        if from_cache {
            self.cache_hits += 1;
            // Priced and free: zero dollars, not an unknown amount.
            if price.is_some() {
                self.usd.get_or_insert(0.0);
            }
            return;
        }
        self.requests += 1;
        self.prompt_tokens += prompt;
        self.cached_prompt_tokens += cached_prompt.min(prompt);
        self.completion_tokens += completion;
        if let Some(price) = price {
            *self.usd.get_or_insert(0.0) += price.cost(prompt, cached_prompt, completion);
        }
    }

    /// Adds one Batch API answer at `price`'s batch rate ([`Price::batch_cost`]).
    pub fn add_batch_answer(
        &mut self,
        price: Option<&Price>,
        prompt: u64,
        cached_prompt: u64,
        completion: u64,
    ) {
        self.requests += 1;
        self.batch_requests += 1;
        self.prompt_tokens += prompt;
        self.cached_prompt_tokens += cached_prompt.min(prompt);
        self.completion_tokens += completion;
        if let Some(price) = price {
            *self.usd.get_or_insert(0.0) += price.batch_cost(prompt, cached_prompt, completion);
        }
    }

    /// The sum of two spends (a dollar figure is kept when either side has one).
    pub fn plus(&self, other: &Spend) -> Spend {
        Spend {
            requests: self.requests + other.requests,
            cache_hits: self.cache_hits + other.cache_hits,
            prompt_tokens: self.prompt_tokens + other.prompt_tokens,
            cached_prompt_tokens: self.cached_prompt_tokens + other.cached_prompt_tokens,
            completion_tokens: self.completion_tokens + other.completion_tokens,
            batch_requests: self.batch_requests + other.batch_requests,
            usd: match (self.usd, other.usd) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cost_splits_cached_prompt_tokens() {
        let price = Price {
            input: 2.0,
            output: 8.0,
            cached_input: Some(0.5),
            batch_factor: None,
        };
        // 1M prompt of which 0.5M cached, 0.25M completion: 1 + 0.25 + 2 dollars.
        let usd = price.cost(1_000_000, 500_000, 250_000);
        assert!((usd - 3.25).abs() < 1e-9, "{usd}");
        let no_cache_price = Price {
            cached_input: None,
            ..price
        };
        assert!((no_cache_price.cost(1_000_000, 500_000, 0) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn lookup_prefers_configured_exact_then_dated_snapshots() {
        let mut configured = BTreeMap::new();
        configured.insert(
            "gpt-4o".to_string(),
            Price {
                input: 1.0,
                output: 1.0,
                cached_input: None,
                batch_factor: None,
            },
        );
        let table = PriceTable::with_overrides(&configured);
        assert_eq!(table.lookup("gpt-4o").unwrap().input, 1.0);
        // The longest prefix wins: gpt-4o-mini, not gpt-4o.
        assert_eq!(table.lookup("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(table.lookup("openai/gpt-4.1-mini").unwrap().output, 1.60);
        assert!(table.lookup("Qwen/Qwen2.5-VL-7B-Instruct").is_none());
        assert!(table.lookup("gpt-4oX").is_none());
    }

    #[test]
    fn cache_hits_are_free_and_counted() {
        let price = Price {
            input: 1.0,
            output: 2.0,
            cached_input: None,
            batch_factor: None,
        };
        let mut spend = Spend::default();
        spend.add_answer(Some(&price), 1000, 0, 500, false);
        spend.add_answer(Some(&price), 1000, 0, 500, true);
        assert_eq!((spend.requests, spend.cache_hits), (1, 1));
        let mut only_hits = Spend::default();
        only_hits.add_answer(Some(&price), 1000, 0, 500, true);
        assert_eq!(only_hits.usd, Some(0.0));
        assert_eq!(spend.prompt_tokens, 1000);
        assert!((spend.usd.unwrap() - 0.002).abs() < 1e-12);
        let mut unpriced = Spend::default();
        unpriced.add_answer(None, 10, 0, 10, false);
        assert_eq!(unpriced.usd, None);
        assert_eq!(spend.plus(&unpriced).usd, spend.usd);
    }

    #[test]
    fn batch_answers_cost_the_batch_factor_of_online_and_are_counted() {
        let price = Price {
            input: 2.0,
            output: 8.0,
            cached_input: None,
            batch_factor: None,
        };
        assert_eq!(price.batch_factor(), 0.5);
        let online = price.cost(1_000_000, 0, 250_000);
        assert!((price.batch_cost(1_000_000, 0, 250_000) - online / 2.0).abs() < 1e-12);
        let mut spend = Spend::default();
        spend.add_batch_answer(Some(&price), 1_000_000, 0, 250_000);
        spend.add_answer(Some(&price), 1_000_000, 0, 250_000, false);
        assert_eq!((spend.requests, spend.batch_requests), (2, 1));
        assert!((spend.usd.unwrap() - 1.5 * online).abs() < 1e-9);
        // A provider without a discount, and an unpriced model.
        let full = Price {
            batch_factor: Some(1.0),
            ..price
        };
        assert!((full.batch_cost(1_000_000, 0, 250_000) - online).abs() < 1e-12);
        let mut unpriced = Spend::default();
        unpriced.add_batch_answer(None, 10, 0, 10);
        assert_eq!((unpriced.usd, unpriced.batch_requests), (None, 1));
        assert_eq!(spend.plus(&unpriced).batch_requests, 2);
        assert!(
            Price {
                batch_factor: Some(-0.5),
                ..price
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn a_price_table_entry_reads_batch_factor_and_old_ledgers_still_parse() {
        let price: Price =
            serde_json::from_str(r#"{"input": 1.0, "output": 2.0, "batch_factor": 0.25}"#).unwrap();
        assert_eq!(price.batch_factor(), 0.25);
        let price: Price = serde_json::from_str(r#"{"input": 1.0, "output": 2.0}"#).unwrap();
        assert_eq!(price.batch_factor, None);
        let spend: Spend = serde_json::from_str(r#"{"requests": 3, "usd": 0.5}"#).unwrap();
        assert_eq!((spend.requests, spend.batch_requests), (3, 0));
    }

    proptest! {
        #[test]
        fn cost_is_never_negative_and_monotonic(p in 0u64..10_000_000, c in 0u64..10_000_000, o in 0u64..10_000_000) {
            let price = Price { input: 3.0, output: 15.0, cached_input: Some(0.3), batch_factor: None };
            let usd = price.cost(p, c, o);
            prop_assert!(usd >= 0.0 && usd.is_finite());
            prop_assert!(price.cost(p + 1, c, o) >= usd);
            prop_assert!(price.cost(p, c, o + 1) >= usd);
        }
    }
}
