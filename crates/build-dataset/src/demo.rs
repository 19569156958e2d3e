//! The embedded default: synthetic demo data in two real datasets' layouts, generated on first use
//! into a cache folder outside the output, and read through the shipped demo manifests.

use anyhow::{Context, Result};
use retina_manifest::Manifest;
use std::path::{Path, PathBuf};
use synthetic_fundus::{DemoConfig, DemoSummary};

/// The demo manifests, embedded so the binary works from any folder.
const DEMO_MANIFESTS: [(&str, &str); 2] = [
    (
        "eyepacs",
        include_str!("../../../data-manifests/demo-eyepacs.toml"),
    ),
    (
        "rfmid",
        include_str!("../../../data-manifests/demo-rfmid.toml"),
    ),
];

/// Where the demo images live: `$RETINALOGOS_CACHE`, else `$XDG_CACHE_HOME/retinalogos`, else
/// `~/.cache/retinalogos`, then `demo-v1`.
pub fn cache_root() -> Result<PathBuf> {
    let base = if let Some(dir) = std::env::var_os("RETINALOGOS_CACHE") {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("retinalogos")
    } else if let Some(home) = std::env::var_os("HOME") {
        PathBuf::from(home).join(".cache").join("retinalogos")
    } else {
        anyhow::bail!("cannot find a cache folder: set RETINALOGOS_CACHE");
    };
    Ok(base.join("demo-v1"))
}

/// Generates the demo datasets (a no-op when the same ones are already there).
pub fn generate(root: &Path, eyepacs: usize, rfmid: usize) -> Result<DemoSummary> {
    let config = DemoConfig {
        eyepacs_images: eyepacs,
        rfmid_images: rfmid,
        ..DemoConfig::default()
    };
    synthetic_fundus::write_demo_datasets(root, &config)
        .with_context(|| format!("cannot generate the demo data in {}", root.display()))
}

/// The demo manifests, rooted at freshly generated (or cached) demo data.
pub fn manifests() -> Result<Vec<Manifest>> {
    let defaults = DemoConfig::default();
    let summary = generate(
        &cache_root()?,
        defaults.eyepacs_images,
        defaults.rfmid_images,
    )?;
    DEMO_MANIFESTS
        .iter()
        .map(|(name, text)| {
            let root = match *name {
                "eyepacs" => summary.eyepacs_dir.clone(),
                _ => summary.rfmid_dir.clone(),
            };
            let mut manifest = Manifest::from_toml_str(text, &root)
                .with_context(|| format!("the embedded demo manifest {name} is invalid"))?;
            manifest.set_root(root);
            Ok(manifest)
        })
        .collect()
}
