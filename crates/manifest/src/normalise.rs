//! Turning label cells into normalised [`Labels`] fields.
//!
//! A cell is trimmed, looked up in the field's value map (exactly, then ignoring case), and the
//! result is parsed by the field's built-in rules. An empty result means "not labelled".

use crate::spec::Field;
use retina_records::{Glaucoma, Labels, Laterality, QualityGrade, Sex};
use std::collections::BTreeMap;

/// Separators used for list fields (findings, disease codes) when the manifest sets none:
/// the ASCII comma and the FULL-WIDTH comma U+FF0C that ODIR uses.
pub(crate) const DEFAULT_LIST_SEPARATORS: [&str; 2] = [",", "\u{FF0C}"];

/// Normalised word for "this image cannot be graded" (DDR grade 5).
pub(crate) const UNGRADABLE: &str = "ungradable";

/// Trims whitespace and a stray byte-order mark.
pub(crate) fn clean(text: &str) -> &str {
    text.trim().trim_start_matches('\u{FEFF}').trim()
}

/// Applies a value map: exact match first, then case-insensitive.
pub(crate) fn map_value<'a>(map: Option<&'a BTreeMap<String, String>>, text: &'a str) -> &'a str {
    let Some(map) = map else { return text };
    if let Some(mapped) = map.get(text) {
        return mapped.as_str();
    }
    map.iter()
        .find(|(from, _)| from.trim().eq_ignore_ascii_case(text))
        .map_or(text, |(_, to)| to.as_str())
}

/// Parses an integer grade in `0..=max`, accepting integral decimals like `2.0` (pandas output).
pub(crate) fn parse_grade(text: &str, max: u8) -> Result<u8, String> {
    let value = match text.parse::<u8>() {
        Ok(value) => value,
        Err(_) => match text.parse::<f64>() {
            Ok(float) if float.fract() == 0.0 && (0.0..=255.0).contains(&float) => float as u8,
            _ => return Err(format!("`{text}` is not a whole number")),
        },
    };
    if value > max {
        return Err(format!("`{text}` is outside 0-{max}"));
    }
    Ok(value)
}

/// Parses a yes/no value.
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "1.0" | "yes" | "y" | "true" | "present" => Ok(true),
        "0" | "0.0" | "no" | "n" | "false" | "absent" => Ok(false),
        _ => Err(format!("`{text}` is not yes/no (0/1, yes/no, true/false)")),
    }
}

fn parse_glaucoma(text: &str) -> Result<Glaucoma, String> {
    match text.to_ascii_lowercase().as_str() {
        "0" | "0.0" | "no" | "n" | "false" | "nrg" | "normal" | "negative" => Ok(Glaucoma::No),
        "1" | "1.0" | "yes" | "y" | "true" | "rg" | "glaucoma" | "positive" => Ok(Glaucoma::Yes),
        "suspect" | "suspected" => Ok(Glaucoma::Suspect),
        _ => Err(format!(
            "`{text}` is not a glaucoma label (0/1, yes/no, RG/NRG, suspect)"
        )),
    }
}

fn parse_quality(text: &str) -> Result<QualityGrade, String> {
    match text.to_ascii_lowercase().as_str() {
        "0" | "good" => Ok(QualityGrade::Good),
        "1" | "usable" => Ok(QualityGrade::Usable),
        "2" | "reject" | "ungradable" | "bad" => Ok(QualityGrade::Reject),
        _ => Err(format!(
            "`{text}` is not a quality grade (0 good, 1 usable, 2 reject, or those words)"
        )),
    }
}

fn parse_sex(text: &str) -> Result<Sex, String> {
    match text.to_ascii_lowercase().as_str() {
        "m" | "male" => Ok(Sex::Male),
        "f" | "female" => Ok(Sex::Female),
        _ => Err(format!("`{text}` is not a sex (M/F/Male/Female)")),
    }
}

fn parse_age(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(age) if age.is_finite() && (0.0..=130.0).contains(&age) => Ok(age),
        _ => Err(format!("`{text}` is not an age in years (0-130)")),
    }
}

/// Parses a laterality word (after the laterality value map).
pub(crate) fn parse_laterality(text: &str) -> Result<Laterality, String> {
    match text.to_ascii_lowercase().as_str() {
        "left" | "l" | "os" => Ok(Laterality::Left),
        "right" | "r" | "od" => Ok(Laterality::Right),
        "" | "unknown" => Ok(Laterality::Unknown),
        _ => Err(format!(
            "`{text}` is not a laterality (left/right, L/R, OS/OD); add [laterality] values"
        )),
    }
}

/// What applying a cell did beyond setting a label.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Effects {
    /// The DR grade said the image is ungradable.
    pub ungradable: bool,
}

/// Splits a list cell on any of `separators`.
fn split_list<'a>(text: &'a str, separators: &[String]) -> Vec<&'a str> {
    let mut parts = vec![text];
    for separator in separators.iter().filter(|s| !s.is_empty()) {
        parts = parts
            .into_iter()
            .flat_map(|part| part.split(separator.as_str()))
            .collect();
    }
    parts
        .into_iter()
        .map(clean)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Applies one cell (already trimmed) of `field` to `labels` / `split`.
///
/// `Field::Image` is not handled here (it only feeds the path template).
pub(crate) fn apply(
    field: Field,
    cell: &str,
    map: Option<&BTreeMap<String, String>>,
    separators: &[String],
    labels: &mut Labels,
    split: &mut Option<String>,
) -> Result<Effects, String> {
    let mut effects = Effects::default();
    if matches!(field, Field::Findings | Field::DiseaseCodes) {
        for item in split_list(cell, separators) {
            let mapped = clean(map_value(map, item));
            if mapped.is_empty() {
                continue;
            }
            let target = if field == Field::Findings {
                &mut labels.findings
            } else {
                &mut labels.disease_codes
            };
            if !target.iter().any(|existing| existing == mapped) {
                target.push(mapped.to_string());
            }
        }
        return Ok(effects);
    }
    let text = clean(map_value(map, cell));
    if text.is_empty() {
        return Ok(effects);
    }
    match field {
        Field::Image | Field::Findings | Field::DiseaseCodes => {}
        Field::DrGrade => {
            if text.eq_ignore_ascii_case(UNGRADABLE) {
                effects.ungradable = true;
            } else {
                labels.dr_grade = Some(parse_grade(text, 4)?);
            }
        }
        Field::Dme => labels.dme = Some(parse_grade(text, 2)?),
        Field::Glaucoma => labels.glaucoma = Some(parse_glaucoma(text)?),
        Field::Amd => labels.amd = Some(parse_bool(text)?),
        Field::MyopicMaculopathy => labels.myopic_maculopathy = Some(parse_grade(text, 4)?),
        Field::Quality => labels.quality = Some(parse_quality(text)?),
        Field::Age => labels.age = Some(parse_age(text)?),
        Field::Sex => labels.sex = Some(parse_sex(text)?),
        Field::Split => *split = Some(text.to_string()),
    }
    Ok(effects)
}

/// Checks that a value-map target is something the field accepts.
pub(crate) fn check_target(field: Field, target: &str) -> Result<(), String> {
    let mut labels = Labels::default();
    let mut split = None;
    apply(field, target, None, &[], &mut labels, &mut split).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply_one(field: Field, cell: &str, map: Option<&BTreeMap<String, String>>) -> Labels {
        let mut labels = Labels::default();
        let mut split = None;
        let separators: Vec<String> = DEFAULT_LIST_SEPARATORS
            .iter()
            .map(|s| s.to_string())
            .collect();
        apply(field, cell, map, &separators, &mut labels, &mut split).unwrap();
        labels
    }

    #[test]
    fn grades_accept_integral_decimals_only() {
        assert_eq!(parse_grade("2", 4), Ok(2));
        assert_eq!(parse_grade("3.0", 4), Ok(3));
        assert!(parse_grade("2.5", 4).is_err());
        assert!(parse_grade("5", 4).is_err());
        assert!(parse_grade("-1", 4).is_err());
        assert!(parse_grade("two", 4).is_err());
    }

    #[test]
    fn glaucoma_words() {
        assert_eq!(parse_glaucoma("RG"), Ok(Glaucoma::Yes));
        assert_eq!(parse_glaucoma("NRG"), Ok(Glaucoma::No));
        assert_eq!(parse_glaucoma("suspect"), Ok(Glaucoma::Suspect));
        assert_eq!(parse_glaucoma("0"), Ok(Glaucoma::No));
        assert!(parse_glaucoma("maybe").is_err());
    }

    #[test]
    fn quality_and_sex() {
        assert_eq!(parse_quality("2"), Ok(QualityGrade::Reject));
        assert_eq!(parse_quality("Usable"), Ok(QualityGrade::Usable));
        assert_eq!(parse_sex("Female"), Ok(Sex::Female));
        assert_eq!(parse_sex("M"), Ok(Sex::Male));
        assert!(parse_sex("x").is_err());
    }

    #[test]
    fn value_maps_apply_before_parsing() {
        let map: BTreeMap<String, String> = [("5".to_string(), "ungradable".to_string())]
            .into_iter()
            .collect();
        let mut labels = Labels::default();
        let mut split = None;
        let effects = apply(
            Field::DrGrade,
            "5",
            Some(&map),
            &[],
            &mut labels,
            &mut split,
        )
        .unwrap();
        assert!(effects.ungradable);
        assert_eq!(labels.dr_grade, None);
        let labels = apply_one(Field::DrGrade, "3", Some(&map));
        assert_eq!(labels.dr_grade, Some(3));
    }

    #[test]
    fn value_maps_fall_back_to_case_insensitive() {
        let map: BTreeMap<String, String> = [("Suspect".to_string(), "suspect".to_string())]
            .into_iter()
            .collect();
        assert_eq!(map_value(Some(&map), "SUSPECT"), "suspect");
        assert_eq!(map_value(Some(&map), "other"), "other");
    }

    #[test]
    fn findings_split_on_both_commas() {
        let labels = apply_one(
            Field::Findings,
            "moderate NPDR\u{FF0C}drusen, laser spot",
            None,
        );
        assert_eq!(
            labels.findings,
            vec!["moderate NPDR", "drusen", "laser spot"]
        );
    }

    #[test]
    fn empty_cells_are_unlabelled() {
        let labels = apply_one(Field::DrGrade, "", None);
        assert_eq!(labels, Labels::default());
    }

    proptest! {
        #[test]
        fn grade_round_trips(grade in 0u8..=4, spaces in " {0,3}") {
            let cell = format!("{grade}{spaces}");
            prop_assert_eq!(parse_grade(clean(&cell), 4), Ok(grade));
        }

        #[test]
        fn apply_never_panics(cell in "\\PC{0,20}") {
            let mut labels = Labels::default();
            let mut split = None;
            for field in crate::spec::FIELDS {
                let _ = apply(field, &cell, None, &[",".to_string()], &mut labels, &mut split);
            }
        }
    }
}
