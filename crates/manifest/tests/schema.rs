//! `schemas/manifest.schema.json` stays in step with the parser: it lists exactly the keys the
//! parser accepts, and every shipped manifest validates against it.

use retina_manifest::{Manifest, ManifestError};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn schema() -> Value {
    let text = std::fs::read_to_string(workspace().join("schemas/manifest.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The keys the parser accepts in `table`, read from its "expected one of" error.
fn accepted_keys(table: &str) -> BTreeSet<String> {
    let text = format!(
        "[dataset]\nname = \"x\"\n[labels]\ncarrier = \"none\"\n[{table}]\nzzz_not_a_key = 1\n"
    );
    let text = if table == "dataset" || table == "labels" {
        // Those tables exist already: add the bogus key to them instead.
        format!(
            "[{table}]\nzzz_not_a_key = 1\n{}",
            if table == "dataset" {
                "name = \"x\"\n[labels]\ncarrier = \"none\"\n"
            } else {
                "carrier = \"none\"\n[dataset]\nname = \"x\"\n"
            }
        )
    } else {
        text
    };
    match Manifest::from_toml_str(&text, Path::new(".")) {
        Err(ManifestError::Toml { key, message, .. }) => {
            assert!(
                key.as_deref().is_some_and(|k| k.ends_with("zzz_not_a_key")),
                "{message}"
            );
            message
                .split("expected ")
                .nth(1)
                .unwrap_or_default()
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        }
        other => panic!("[{table}]: expected an unknown-key error, got {other:?}"),
    }
}

fn schema_keys(schema: &Value, pointer: &str) -> BTreeSet<String> {
    schema
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no {pointer}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn schema_lists_exactly_the_accepted_keys() {
    let schema = schema();
    let top = schema_keys(&schema, "/properties");
    assert_eq!(top, accepted_keys_top_level());
    for table in [
        "dataset",
        "labels",
        "columns",
        "images",
        "laterality",
        "values",
        "flags",
        "eyes",
    ] {
        let pointer = format!("/properties/{table}/properties");
        assert_eq!(
            schema_keys(&schema, &pointer),
            accepted_keys(table),
            "[{table}]"
        );
    }
    assert_eq!(
        schema_keys(
            &schema,
            "/properties/laterality/properties/patterns/properties"
        ),
        accepted_keys("laterality.patterns")
    );
    assert_eq!(
        schema_keys(&schema, "/$defs/columns/properties"),
        accepted_keys("eyes.left")
    );
    assert_eq!(
        schema_keys(&schema, "/properties/automorph/items/properties"),
        accepted_keys("[automorph]")
    );
}

fn accepted_keys_top_level() -> BTreeSet<String> {
    let text = "zzz_not_a_key = 1\n[dataset]\nname = \"x\"\n[labels]\ncarrier = \"none\"\n";
    match Manifest::from_toml_str(text, Path::new(".")) {
        Err(ManifestError::Toml { message, .. }) => message
            .split("expected ")
            .nth(1)
            .unwrap_or_default()
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
        other => panic!("expected an unknown-key error, got {other:?}"),
    }
}

#[test]
fn shipped_manifests_validate_against_the_schema() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let mut count = 0;
    for entry in std::fs::read_dir(workspace().join("data-manifests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let value = serde_json::to_value(&table).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        count += 1;
    }
    assert!(count >= 10);
    let bad =
        serde_json::json!({"dataset": {"name": "x", "nmae": 1}, "labels": {"carrier": "csv"}});
    assert!(
        !validator.is_valid(&bad),
        "the schema must reject unknown keys too"
    );
}
