//! Column layout of accepted and reject shards, described once and turned into both the Arrow
//! schema and the Hugging Face `datasets` features JSON, so the two can never drift apart.

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use std::collections::HashMap;
use std::sync::Arc;

/// One column type in the shared description.
#[derive(Debug, Clone)]
pub(crate) enum Col {
    Utf8,
    Int8,
    Int32,
    Float32,
    Bool,
    /// The `datasets` Image feature: struct{bytes: binary, path: utf8}.
    Image,
    List(Box<Col>),
    Struct(Vec<(&'static str, Col)>),
}

use Col::*;

fn list(inner: Col) -> Col {
    List(Box::new(inner))
}

/// Section columns, in caption order (mirrors `CaptionAnswer::sections`).
pub(crate) const SECTION_COLUMNS: [&str; 7] = [
    "optic_disc",
    "rnfl",
    "vessels",
    "macula",
    "background",
    "quality",
    "impression",
];

/// The accepted-shard columns, in file order.
pub(crate) fn accepted_columns() -> Vec<(&'static str, Col)> {
    let labels = Struct(vec![
        ("dr_grade", Int8),
        ("dme", Int8),
        ("glaucoma", Utf8),
        ("amd", Bool),
        ("myopic_maculopathy", Int8),
        ("disease_codes", list(Utf8)),
        ("quality", Utf8),
        ("age", Float32),
        ("sex", Utf8),
        ("findings", list(Utf8)),
        ("raw_json", Utf8),
    ]);
    let facts = Struct(vec![
        ("fov_fraction", Float32),
        ("brightness", Float32),
        ("contrast", Float32),
        ("sharpness", Float32),
        ("illumination_uniformity", Float32),
        ("quality_grade", Utf8),
        ("disc_x", Float32),
        ("disc_y", Float32),
        ("disc_diameter", Float32),
        ("disc_side", Utf8),
        ("disc_confidence", Float32),
        ("centring", Utf8),
        ("vessel_density", Float32),
        ("vessel_density_confidence", Float32),
        ("tortuosity", Float32),
        ("tortuosity_confidence", Float32),
        ("fractal_dimension", Float32),
        ("fractal_dimension_confidence", Float32),
        ("cup_to_disc_ratio", Float32),
        ("cup_to_disc_ratio_confidence", Float32),
        ("bright_lesions", Int32),
        ("bright_lesions_confidence", Float32),
        ("dark_lesions", Int32),
        ("dark_lesions_confidence", Float32),
        ("perceptual_hash", Utf8),
    ]);
    let lesion = Struct(vec![("type", Utf8), ("location", Utf8), ("extent", Utf8)]);
    let mut cols = vec![
        ("id", Utf8),
        ("dataset", Utf8),
        ("image", Image),
        ("width", Int32),
        ("height", Int32),
        ("original_width", Int32),
        ("original_height", Int32),
        ("laterality", Utf8),
        ("split", Utf8),
        ("source_path", Utf8),
        ("labels", labels),
        ("facts", facts),
    ];
    cols.extend(SECTION_COLUMNS.iter().map(|name| (*name, Utf8)));
    cols.extend([
        ("lesions", list(lesion)),
        ("caption", Utf8),
        ("captions", list(Utf8)),
        (
            "caption_variants",
            list(Struct(vec![("style", Utf8), ("text", Utf8)])),
        ),
        ("model", Utf8),
        ("endpoint", Utf8),
        ("prompt_hash", Utf8),
        ("schema_hash", Utf8),
        ("captioned_at", Utf8),
        ("prompt_tokens", Int32),
        ("completion_tokens", Int32),
        ("latency_ms", Int32),
    ]);
    cols
}

/// The reject-shard columns, in file order.
pub(crate) fn rejected_columns() -> Vec<(&'static str, Col)> {
    vec![
        ("id", Utf8),
        ("dataset", Utf8),
        ("source_path", Utf8),
        ("state", Utf8),
        (
            "reasons",
            list(Struct(vec![("code", Utf8), ("detail", Utf8)])),
        ),
        ("raw_answer", Utf8),
        ("model", Utf8),
        ("prompt_hash", Utf8),
        ("labels_json", Utf8),
        ("facts_json", Utf8),
    ]
}

/// Arrow type of a column. Binary/Utf8/List only (never Large* or View types) and every field
/// nullable: `datasets` ignores its features metadata when the Arrow type differs in either.
pub(crate) fn arrow_type(col: &Col) -> DataType {
    match col {
        Utf8 => DataType::Utf8,
        Int8 => DataType::Int8,
        Int32 => DataType::Int32,
        Float32 => DataType::Float32,
        Bool => DataType::Boolean,
        Image => DataType::Struct(Fields::from(vec![
            Field::new("bytes", DataType::Binary, true),
            Field::new("path", DataType::Utf8, true),
        ])),
        // "item" is the list child name pyarrow uses, so field equality holds in `datasets`.
        List(inner) => DataType::List(Arc::new(Field::new_list_field(arrow_type(inner), true))),
        Struct(children) => DataType::Struct(
            children
                .iter()
                .map(|(name, child)| Field::new(*name, arrow_type(child), true))
                .collect::<Vec<_>>()
                .into(),
        ),
    }
}

/// The Arrow schema, carrying the `huggingface` entry in its metadata: pyarrow takes schema
/// metadata from the embedded `ARROW:schema` and ignores the footer's other key-value pairs, so
/// the entry has to be in both places.
pub(crate) fn arrow_schema(cols: &[(&'static str, Col)]) -> SchemaRef {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(name, col)| Field::new(*name, arrow_type(col), true))
        .collect();
    let metadata = HashMap::from([(HF_KEY.to_string(), hf_metadata(cols))]);
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

/// Footer key of the `datasets` features.
pub(crate) const HF_KEY: &str = "huggingface";

fn value(dtype: &str) -> String {
    format!(r#"{{"dtype":"{dtype}","_type":"Value"}}"#)
}

/// One feature in the `datasets` JSON format, written by hand so struct keys keep the Arrow
/// field order (serde_json's map sorts keys, and `datasets` compares struct types in order).
fn hf_feature(col: &Col) -> String {
    match col {
        Utf8 => value("string"),
        Int8 => value("int8"),
        Int32 => value("int32"),
        Float32 => value("float32"),
        Bool => value("bool"),
        Image => r#"{"_type":"Image"}"#.to_string(),
        // A list of structs is written as a JSON list: `Sequence` over a dict means a struct of
        // lists to `datasets`, which is a different Arrow type.
        List(inner) if matches!(**inner, Struct(_)) => format!("[{}]", hf_feature(inner)),
        List(inner) => format!(r#"{{"feature":{},"_type":"Sequence"}}"#, hf_feature(inner)),
        Struct(children) => hf_struct(children),
    }
}

fn hf_struct(children: &[(&'static str, Col)]) -> String {
    let body: Vec<String> = children
        .iter()
        .map(|(name, child)| format!("{}:{}", json_string(name), hf_feature(child)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn json_string(text: &str) -> String {
    // Column names are fixed ASCII identifiers; serialising a &str cannot fail.
    serde_json::to_string(text).unwrap_or_else(|_| format!("\"{text}\""))
}

/// The `huggingface` footer value: `{"info":{"features":{...}}}` in column order.
pub(crate) fn hf_metadata(cols: &[(&'static str, Col)]) -> String {
    format!(r#"{{"info":{{"features":{}}}}}"#, hf_struct(cols))
}

/// The `datasets` features of an accepted shard as JSON (key order is not significant here).
pub fn hf_features() -> serde_json::Value {
    serde_json::from_str(&hf_struct(&accepted_columns())).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn walk(dt: &DataType, path: &str, out: &mut Vec<String>) {
        match dt {
            DataType::Utf8
            | DataType::Binary
            | DataType::Int8
            | DataType::Int32
            | DataType::Float32
            | DataType::Boolean => {}
            DataType::List(f) => {
                if !f.is_nullable() {
                    out.push(format!("{path}[]"));
                }
                walk(f.data_type(), &format!("{path}[]"), out);
            }
            DataType::Struct(fields) => {
                for f in fields {
                    if !f.is_nullable() {
                        out.push(format!("{path}.{}", f.name()));
                    }
                    walk(f.data_type(), &format!("{path}.{}", f.name()), out);
                }
            }
            other => out.push(format!("{path}: {other}")),
        }
    }

    #[test]
    fn schemas_use_only_plain_nullable_types() {
        for cols in [accepted_columns(), rejected_columns()] {
            let schema = arrow_schema(&cols);
            let mut bad = Vec::new();
            for f in schema.fields() {
                assert!(f.is_nullable(), "{} must be nullable", f.name());
                walk(f.data_type(), f.name(), &mut bad);
            }
            assert!(bad.is_empty(), "unexpected types or non-nullable: {bad:?}");
        }
    }

    #[test]
    fn features_cover_every_column_and_parse() {
        let features = hf_features();
        let obj = features.as_object().expect("features object");
        let cols = accepted_columns();
        assert_eq!(obj.len(), cols.len());
        for (name, _) in &cols {
            assert!(obj.contains_key(*name), "feature for {name}");
        }
        assert_eq!(obj["image"], serde_json::json!({"_type": "Image"}));
        assert_eq!(
            obj["captions"],
            serde_json::json!({"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"})
        );
        assert!(obj["lesions"].is_array(), "list of structs is a JSON list");
        assert_eq!(obj["labels"]["dr_grade"]["dtype"], "int8");
    }

    #[test]
    fn footer_keeps_struct_field_order() {
        let text = hf_metadata(&accepted_columns());
        assert!(text.contains(
            r#""lesions":[{"type":{"dtype":"string","_type":"Value"},"location":{"dtype":"string","_type":"Value"},"extent":"#
        ));
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert!(parsed["info"]["features"]["caption"].is_object());
    }
}
