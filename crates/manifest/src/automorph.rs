//! Precomputed AutoMorph feature CSVs, joined to records by image name.
//!
//! AutoMorph writes one CSV per zone (whole image, disc zone B, disc zone C, macula) with a
//! `Name` column holding the image file name and one column per feature. Each known header maps
//! to a stable, unit-bearing key: `automorph.<zone>.<vessels>.<metric>[_<unit>]`. The vessel part
//! is taken from the header itself (`Artery_*` and CRAE are arteries, `Vein_*` and CRVE are
//! veins): a map that mixes them up puts wrong words into captions.

use crate::normalise::clean;
use crate::table::{self, CsvOptions, find_column};
use crate::{ManifestError, ProblemKind, RowProblem};
use retina_records::Record;
use std::collections::HashMap;
use std::path::Path;

/// Which vessels an AutoMorph feature describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vessels {
    /// All vessels together.
    All,
    /// Arteries (arterioles) only.
    Artery,
    /// Veins (venules) only.
    Vein,
    /// Both, as a ratio (AVR).
    Ratio,
    /// Not a vessel feature (optic disc and cup).
    Disc,
}

impl Vessels {
    fn key(self) -> &'static str {
        match self {
            Vessels::All => "vessels",
            Vessels::Artery => "artery",
            Vessels::Vein => "vein",
            Vessels::Ratio => "artery_vein",
            Vessels::Disc => "disc",
        }
    }
}

/// One known AutoMorph column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutomorphFeature {
    /// The CSV header AutoMorph writes (matched ignoring case).
    pub header: &'static str,
    /// Which vessels it measures.
    pub vessels: Vessels,
    /// The metric, snake case, without the vessel part.
    pub metric: &'static str,
    /// Unit: `px` (pixels of AutoMorph's working image), `ratio`, `fraction` or `""` (none).
    pub unit: &'static str,
    /// What it is, in words.
    pub meaning: &'static str,
}

impl AutomorphFeature {
    /// The key under which a value is stored: `automorph.<zone>.<vessels>.<metric>[_px]`.
    pub fn key(&self, zone: &str) -> String {
        let unit = if self.unit == "px" { "_px" } else { "" };
        format!(
            "automorph.{zone}.{}.{}{unit}",
            self.vessels.key(),
            self.metric
        )
    }
}

macro_rules! vessel_features {
    ($($prefix:literal => $vessels:expr),*) => {
        [$(
            AutomorphFeature { header: concat!($prefix, "Fractal_dimension"), vessels: $vessels, metric: "fractal_dimension", unit: "", meaning: "box-counting fractal dimension" },
            AutomorphFeature { header: concat!($prefix, "Vessel_density"), vessels: $vessels, metric: "vessel_density", unit: "fraction", meaning: "vessel pixels over all pixels" },
            AutomorphFeature { header: concat!($prefix, "Average_width"), vessels: $vessels, metric: "average_width", unit: "px", meaning: "average vessel width" },
            AutomorphFeature { header: concat!($prefix, "Distance_tortuosity"), vessels: $vessels, metric: "distance_tortuosity", unit: "", meaning: "arc length over chord length" },
            AutomorphFeature { header: concat!($prefix, "Squared_curvature_tortuosity"), vessels: $vessels, metric: "squared_curvature_tortuosity", unit: "", meaning: "integrated squared curvature" },
            AutomorphFeature { header: concat!($prefix, "Tortuosity_density"), vessels: $vessels, metric: "tortuosity_density", unit: "", meaning: "tortuosity density" },
        )*]
    };
}

const VESSEL_FEATURES: [AutomorphFeature; 18] = {
    let [
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        b0,
        b1,
        b2,
        b3,
        b4,
        b5,
        c0,
        c1,
        c2,
        c3,
        c4,
        c5,
    ] = vessel_features!(
        "" => Vessels::All, "Artery_" => Vessels::Artery, "Vein_" => Vessels::Vein
    );
    [
        a0, a1, a2, a3, a4, a5, b0, b1, b2, b3, b4, b5, c0, c1, c2, c3, c4, c5,
    ]
};

const CALIBRE_AND_DISC: [AutomorphFeature; 12] = [
    AutomorphFeature {
        header: "CRAE_Hubbard",
        vessels: Vessels::Artery,
        metric: "crae_hubbard",
        unit: "px",
        meaning: "central retinal artery equivalent (Hubbard)",
    },
    AutomorphFeature {
        header: "CRVE_Hubbard",
        vessels: Vessels::Vein,
        metric: "crve_hubbard",
        unit: "px",
        meaning: "central retinal vein equivalent (Hubbard)",
    },
    AutomorphFeature {
        header: "AVR_Hubbard",
        vessels: Vessels::Ratio,
        metric: "avr_hubbard",
        unit: "ratio",
        meaning: "arteriole-to-venule ratio CRAE/CRVE (Hubbard)",
    },
    AutomorphFeature {
        header: "CRAE_Knudtson",
        vessels: Vessels::Artery,
        metric: "crae_knudtson",
        unit: "px",
        meaning: "central retinal artery equivalent (Knudtson)",
    },
    AutomorphFeature {
        header: "CRVE_Knudtson",
        vessels: Vessels::Vein,
        metric: "crve_knudtson",
        unit: "px",
        meaning: "central retinal vein equivalent (Knudtson)",
    },
    AutomorphFeature {
        header: "AVR_Knudtson",
        vessels: Vessels::Ratio,
        metric: "avr_knudtson",
        unit: "ratio",
        meaning: "arteriole-to-venule ratio CRAE/CRVE (Knudtson)",
    },
    AutomorphFeature {
        header: "Disc_height",
        vessels: Vessels::Disc,
        metric: "disc_height",
        unit: "px",
        meaning: "optic disc height",
    },
    AutomorphFeature {
        header: "Disc_width",
        vessels: Vessels::Disc,
        metric: "disc_width",
        unit: "px",
        meaning: "optic disc width",
    },
    AutomorphFeature {
        header: "Cup_height",
        vessels: Vessels::Disc,
        metric: "cup_height",
        unit: "px",
        meaning: "optic cup height",
    },
    AutomorphFeature {
        header: "Cup_width",
        vessels: Vessels::Disc,
        metric: "cup_width",
        unit: "px",
        meaning: "optic cup width",
    },
    AutomorphFeature {
        header: "CDR_vertical",
        vessels: Vessels::Disc,
        metric: "cdr_vertical",
        unit: "ratio",
        meaning: "vertical cup-to-disc ratio",
    },
    AutomorphFeature {
        header: "CDR_horizontal",
        vessels: Vessels::Disc,
        metric: "cdr_horizontal",
        unit: "ratio",
        meaning: "horizontal cup-to-disc ratio",
    },
];

/// Every AutoMorph column this crate knows, with its unit.
pub const AUTOMORPH_FEATURES: [AutomorphFeature; 30] = {
    let v = VESSEL_FEATURES;
    let c = CALIBRE_AND_DISC;
    [
        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13],
        v[14], v[15], v[16], v[17], c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9],
        c[10], c[11],
    ]
};

/// The known feature for an AutoMorph header (trimmed, ignoring case).
pub fn automorph_feature(header: &str) -> Option<&'static AutomorphFeature> {
    let header = clean(header);
    AUTOMORPH_FEATURES
        .iter()
        .find(|f| f.header.eq_ignore_ascii_case(header))
}

/// Feature values by image stem (lower case), ready to attach to records.
#[derive(Debug, Default)]
pub(crate) struct FeatureJoin {
    by_stem: HashMap<String, Vec<(String, String)>>,
}

impl FeatureJoin {
    /// Reads one feature CSV. Unknown headers are kept as `automorph.<zone>.<header>` (lower
    /// case) so nothing is lost; a value that is not a finite number is a problem on its line
    /// and is left out. A missing file or key column is fatal.
    pub fn load(
        &mut self,
        file: &Path,
        zone: &str,
        key: &str,
        problems: &mut Vec<RowProblem>,
    ) -> Result<(), ManifestError> {
        // A join needs the whole feature table; it is one row of numbers per image.
        let table = table::open_csv(
            file,
            &CsvOptions {
                delimiter: b',',
                header_row: 1,
                has_header: true,
            },
        )?
        .collect()?;
        let key_index = find_column(&table.headers, &[key.to_string()]).ok_or_else(|| {
            ManifestError::MissingHeader {
                file: file.to_path_buf(),
                key: "automorph.key".into(),
                tried: vec![key.to_string()],
                found: table.headers.clone(),
            }
        })?;
        let columns: Vec<(usize, String)> = table
            .headers
            .iter()
            .enumerate()
            .filter(|(i, h)| *i != key_index && !h.is_empty())
            .map(|(i, header)| {
                let name = match automorph_feature(header) {
                    Some(feature) => feature.key(zone),
                    None => format!("automorph.{zone}.{}", header.to_ascii_lowercase()),
                };
                (i, name)
            })
            .collect();
        for row in &table.rows {
            let name = row.cell(key_index);
            if name.is_empty() {
                continue;
            }
            let stem = image_stem(name);
            let entry = self.by_stem.entry(stem).or_default();
            for (index, key) in &columns {
                let cell = row.cell(*index);
                if cell.is_empty() {
                    continue;
                }
                match cell.parse::<f64>() {
                    Ok(value) if value.is_finite() => entry.push((key.clone(), cell.to_string())),
                    _ => problems.push(RowProblem {
                        kind: ProblemKind::UnknownValue,
                        file: file.to_path_buf(),
                        row: row.line,
                        item: Some(name.to_string()),
                        reason: format!("{key}: `{cell}` is not a number"),
                    }),
                }
            }
        }
        Ok(())
    }

    /// Adds the features of the record's image (matched by file stem, ignoring case) to its
    /// raw labels.
    pub fn attach(&self, record: &mut Record) {
        if self.by_stem.is_empty() {
            return;
        }
        let name = record
            .relative_path
            .rsplit('/')
            .next()
            .unwrap_or(&record.relative_path);
        if let Some(values) = self.by_stem.get(&image_stem(name)) {
            for (key, value) in values {
                record.labels.raw.insert(key.clone(), value.clone());
            }
        }
    }
}

/// File name without folders and extension, lower case: AutoMorph renames `x.jpeg` to `x.png`.
fn image_stem(name: &str) -> String {
    let name = name.replace('\\', "/");
    let name = name.rsplit('/').next().unwrap_or(&name);
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    stem.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arteries_are_arteries_and_veins_are_veins() {
        for feature in AUTOMORPH_FEATURES {
            let header = feature.header.to_ascii_lowercase();
            let key = feature.key("zone_b");
            if header.starts_with("artery_") || header.starts_with("crae") {
                assert_eq!(feature.vessels, Vessels::Artery, "{header}");
                assert!(key.starts_with("automorph.zone_b.artery."), "{key}");
            }
            if header.starts_with("vein_") || header.starts_with("crve") {
                assert_eq!(feature.vessels, Vessels::Vein, "{header}");
                assert!(key.starts_with("automorph.zone_b.vein."), "{key}");
            }
            assert!(
                header.ends_with(
                    &feature
                        .metric
                        .replace("crae_", "")
                        .replace("crve_", "")
                        .replace("avr_", "")
                ) || header.starts_with(feature.metric.split('_').next().unwrap_or("")),
                "{header} -> {}",
                feature.metric
            );
            assert_eq!(key.ends_with("_px"), feature.unit == "px", "{key}");
        }
        let headers: std::collections::HashSet<_> =
            AUTOMORPH_FEATURES.iter().map(|f| f.header).collect();
        assert_eq!(
            headers.len(),
            AUTOMORPH_FEATURES.len(),
            "headers are unique"
        );
        assert_eq!(
            automorph_feature(" artery_average_width ").map(|f| f.key("macula")),
            Some("automorph.macula.artery.average_width_px".to_string())
        );
        assert_eq!(
            automorph_feature("AVR_Knudtson").map(|f| f.unit),
            Some("ratio")
        );
    }

    #[test]
    fn stems_ignore_folders_extension_and_case() {
        assert_eq!(image_stem("10_Left.PNG"), "10_left");
        assert_eq!(image_stem(r"M0\images\IDRiD_01.jpg"), "idrid_01");
        assert_eq!(image_stem("noext"), "noext");
    }
}
