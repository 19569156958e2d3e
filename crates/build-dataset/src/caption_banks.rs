//! What a build's captions came to: the acceptance report (`qa/acceptance.json`, printed at the
//! end of `build`) and per-class caption banks (`build-dataset caption-banks`), both read back
//! from the committed shards so they describe the dataset as it is on disk.

use anyhow::{Context, Result};
use retina_shards::{ShardKind, read_accepted, read_card, read_rejects};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Acceptance rate and rejection reasons of a dataset, from its card and reject shards.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcceptanceReport {
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// accepted / (accepted + rejected); failed items are retried, so they do not count.
    pub acceptance_rate: f64,
    /// Rejected items per reason code (an item counts once per code however often it has it).
    pub reasons: BTreeMap<String, u64>,
}

/// Where the acceptance report is stored.
pub fn acceptance_path(out: &Path) -> PathBuf {
    out.join("qa").join("acceptance.json")
}

/// Reads the card and every reject shard of `out`.
pub fn acceptance(out: &Path) -> Result<AcceptanceReport> {
    let card =
        read_card(out).with_context(|| format!("cannot read {}/dataset.json", out.display()))?;
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for shard in card.shards.iter().filter(|s| s.kind == ShardKind::Rejected) {
        let path = out.join(&shard.path);
        for row in read_rejects(&path)
            .with_context(|| format!("cannot read reject shard {}", path.display()))?
        {
            if row.state != "rejected" {
                continue;
            }
            let mut codes: Vec<&str> = row.reasons.iter().map(|r| r.code.as_str()).collect();
            codes.sort_unstable();
            codes.dedup();
            for code in codes {
                *reasons.entry(code.to_string()).or_default() += 1;
            }
        }
    }
    let judged = card.counts.accepted + card.counts.rejected;
    Ok(AcceptanceReport {
        accepted: card.counts.accepted,
        rejected: card.counts.rejected,
        failed: card.counts.failed,
        acceptance_rate: if judged == 0 {
            0.0
        } else {
            card.counts.accepted as f64 / judged as f64
        },
        reasons,
    })
}

/// Writes `qa/acceptance.json` and returns the report.
pub fn write_acceptance(out: &Path) -> Result<AcceptanceReport> {
    let report = acceptance(out)?;
    let path = acceptance_path(out);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(report)
}

impl std::fmt::Display for AcceptanceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "acceptance: {:.1}% ({} accepted, {} rejected, {} failed)",
            self.acceptance_rate * 100.0,
            self.accepted,
            self.rejected,
            self.failed
        )?;
        let mut by_count: Vec<(&String, &u64)> = self.reasons.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (code, count) in by_count {
            writeln!(f, "  {count:>7}  {code}")?;
        }
        Ok(())
    }
}

/// One caption in a bank.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BankCaption {
    pub id: String,
    pub dataset: String,
    /// Caption text by style (`detailed`, `short`, ...).
    pub captions: BTreeMap<String, String>,
}

/// The accepted captions of one label class (the VAP-Diffusion caption-bank idea).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaptionBank {
    /// `dr_grade=2`, `glaucoma=yes`, `amd=true`, ... or `unlabelled`.
    pub class: String,
    /// Accepted items of the class (may exceed `captions.len()` when capped).
    pub count: u64,
    pub captions: Vec<BankCaption>,
}

/// The classes a stored row belongs to (every label it has; `unlabelled` when none).
fn classes(row: &retina_shards::StoredRow) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(grade) = row.dr_grade {
        out.push(format!("dr_grade={grade}"));
    }
    if let Some(glaucoma) = &row.glaucoma {
        out.push(format!("glaucoma={glaucoma}"));
    }
    if let Some(amd) = row.amd {
        out.push(format!("amd={amd}"));
    }
    if out.is_empty() {
        out.push("unlabelled".to_string());
    }
    out
}

/// Groups the accepted captions of the dataset in `dir` by label class, keeping at most
/// `per_class` captions each (0: all), in shard order.
pub fn caption_banks(dir: &Path, per_class: usize) -> Result<Vec<CaptionBank>> {
    let card =
        read_card(dir).with_context(|| format!("cannot read {}/dataset.json", dir.display()))?;
    let mut banks: BTreeMap<String, CaptionBank> = BTreeMap::new();
    for shard in card.shards.iter().filter(|s| s.kind == ShardKind::Accepted) {
        let path = dir.join(&shard.path);
        let rows = read_accepted(&path, false)
            .with_context(|| format!("cannot read shard {}", path.display()))?;
        for row in rows {
            let captions: BTreeMap<String, String> = row
                .caption_styles
                .iter()
                .cloned()
                .zip(row.captions.iter().cloned())
                .collect();
            for class in classes(&row) {
                let bank = banks.entry(class.clone()).or_insert_with(|| CaptionBank {
                    class,
                    count: 0,
                    captions: Vec::new(),
                });
                bank.count += 1;
                if per_class == 0 || bank.captions.len() < per_class {
                    bank.captions.push(BankCaption {
                        id: row.id.clone(),
                        dataset: row.dataset.clone(),
                        captions: captions.clone(),
                    });
                }
            }
        }
    }
    Ok(banks.into_values().collect())
}

/// `build-dataset caption-banks DIR --out FILE.jsonl`: one JSON line per class.
pub fn run(dir: &Path, out: &Path, per_class: usize) -> Result<std::process::ExitCode> {
    let banks = caption_banks(dir, per_class)?;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    for bank in &banks {
        serde_json::to_writer(&mut file, bank)?;
        file.write_all(b"\n")?;
    }
    file.flush()
        .with_context(|| format!("cannot write {}", out.display()))?;
    for bank in &banks {
        println!("{:>7}  {}", bank.count, bank.class);
    }
    println!("{}", out.display());
    Ok(std::process::ExitCode::SUCCESS)
}
