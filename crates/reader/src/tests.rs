//! Streams over fixture datasets written by the real shard writer.

use crate::fixture::{self, HEIGHT, WIDTH};
use crate::{Dataset, Filter, ReadOptions, ReaderError, Split};
use std::collections::BTreeSet;

fn dataset(n: usize, shard_bytes: u64) -> (tempfile::TempDir, Dataset, Vec<String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = fixture::write_dataset(dir.path(), n, shard_bytes).expect("fixture");
    let dataset = Dataset::open(dir.path()).expect("open");
    (dir, dataset, ids)
}

fn ids(dataset: &Dataset, options: &ReadOptions) -> Vec<String> {
    dataset
        .stream(options)
        .map(|r| r.expect("record").id)
        .collect()
}

#[test]
fn streams_every_record_in_order_with_decoded_rgb_images() {
    // Small shards: several files, several batches each.
    let (_dir, dataset, written) = dataset(150, 40_000);
    assert!(
        dataset.shard_paths().len() >= 3,
        "{:?}",
        dataset.shard_paths()
    );
    assert_eq!(dataset.len(), 150);
    let records: Vec<_> = dataset
        .stream(&ReadOptions::default())
        .collect::<Result<_, _>>()
        .expect("stream");
    assert_eq!(
        records.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        written
    );
    for (n, record) in records.iter().enumerate().step_by(17) {
        assert_eq!((record.width, record.height), (WIDTH, HEIGHT));
        let rgb = record.decode_rgb().expect("decodes");
        assert_eq!(rgb.dimensions(), (WIDTH, HEIGHT), "width is horizontal");
        let red = rgb.get_pixel(WIDTH / 2, HEIGHT / 2)[0];
        assert!(red.abs_diff((n % 256) as u8) <= 3, "item {n}: red {red}");
        assert_eq!(record.image_extension(), "jpg");
        assert_eq!(record.labels.dr_grade, Some((n % 5) as u8));
        assert_eq!(record.dataset, if n % 2 == 0 { "eyepacs" } else { "rfmid" });
    }
    // Caption variants come with their styles, detailed first.
    let r3 = &records[3];
    assert_eq!(r3.caption_styles, ["detailed", "short"]);
    assert_eq!(r3.caption_of("short"), Some("Fundus photograph 3."));
    assert_eq!(r3.captions[0], r3.caption);
    assert_eq!(records[1].captions, [records[1].caption.clone()]);
    assert_eq!(records[1].caption_of("short"), None);
}

#[test]
fn without_images_reads_everything_else() {
    let (_dir, dataset, _) = dataset(20, 1_000_000);
    let with: Vec<_> = dataset
        .stream(&ReadOptions::default())
        .map(Result::unwrap)
        .collect();
    let without: Vec<_> = dataset
        .stream(&ReadOptions {
            with_images: false,
            ..ReadOptions::default()
        })
        .map(Result::unwrap)
        .collect();
    for (mut a, b) in with.into_iter().zip(without) {
        assert!(!a.image.is_empty() && b.image.is_empty());
        a.image.clear();
        assert_eq!(a, b);
    }
}

#[test]
fn filters_select_by_dataset_labels_and_quality() {
    let (_dir, dataset, _) = dataset(60, 30_000);
    let options = |filter: Filter| ReadOptions {
        filter,
        ..ReadOptions::default()
    };
    let all = dataset.stream(&options(Filter::default())).count();
    assert_eq!(all, 60);
    for record in dataset.stream(&options(
        Filter::default().datasets(["rfmid"]).dr_grades([2]),
    )) {
        let record = record.unwrap();
        assert_eq!(
            (record.dataset.as_str(), record.labels.dr_grade),
            ("rfmid", Some(2))
        );
    }
    // Odd n with n % 5 == 2: 7, 17, 27, 37, 47, 57.
    assert_eq!(
        dataset
            .stream(&options(
                Filter::default().datasets(["rfmid"]).dr_grades([2])
            ))
            .count(),
        6
    );
    // The dataset's own `reject` label (every seventh item) beats the measured `good`.
    let good = dataset
        .stream(&options(Filter::default().qualities(["good"])))
        .count();
    assert_eq!(good, 60 - 9, "0, 7, ..., 56 are labelled reject");
}

#[test]
fn train_and_validation_partition_the_dataset_stably() {
    let (_dir, dataset, written) = dataset(200, 50_000);
    let split = |split: Split| ReadOptions {
        split,
        validation_fraction: 0.2,
        ..ReadOptions::default()
    };
    let train: BTreeSet<String> = ids(&dataset, &split(Split::Train)).into_iter().collect();
    let validation: BTreeSet<String> = ids(&dataset, &split(Split::Validation))
        .into_iter()
        .collect();
    assert!(train.is_disjoint(&validation));
    assert_eq!(train.len() + validation.len(), written.len());
    assert!((20..70).contains(&validation.len()), "{}", validation.len());
    // Shuffling changes the order, never the membership.
    let shuffled: BTreeSet<String> = ids(
        &dataset,
        &ReadOptions {
            shuffle: Some((7, 32)),
            ..split(Split::Validation)
        },
    )
    .into_iter()
    .collect();
    assert_eq!(shuffled, validation);
}

#[test]
fn a_seeded_shuffle_is_reproducible_and_complete() {
    let (_dir, dataset, written) = dataset(120, 30_000);
    let shuffled = |seed| {
        ids(
            &dataset,
            &ReadOptions {
                shuffle: Some((seed, 50)),
                with_images: false,
                ..ReadOptions::default()
            },
        )
    };
    let a = shuffled(1);
    assert_eq!(a, shuffled(1), "same seed, same order");
    assert_ne!(a, shuffled(2));
    assert_ne!(a, written);
    let mut sorted = a.clone();
    sorted.sort();
    let mut expected = written.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every record exactly once");
}

#[test]
fn broken_inputs_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = Dataset::open(dir.path()).expect_err("no card");
    assert!(matches!(err, ReaderError::Card { .. }), "{err}");

    let (dir, dataset, _) = dataset(10, 1_000_000);
    let shard = dataset.shard_paths()[0].clone();
    std::fs::write(&shard, b"PAR1 truncated").unwrap();
    let mut stream = dataset.stream(&ReadOptions::default());
    let err = stream.next().expect("an item").expect_err("broken shard");
    assert!(err.to_string().contains("part-00000.parquet"), "{err}");
    assert!(stream.next().is_none(), "the stream ends after an error");
    drop(dir);

    let mut record = fixture::row(1);
    record.image = b"not an image".to_vec();
    let bad = crate::TrainingRecord {
        id: "x".into(),
        dataset: "d".into(),
        image: record.image,
        width: 1,
        height: 1,
        laterality: "unknown".into(),
        source_split: None,
        labels: Default::default(),
        measured_quality: None,
        caption: String::new(),
        captions: Vec::new(),
        caption_styles: Vec::new(),
    };
    let err = bad.decode_rgb().expect_err("garbage");
    assert!(
        err.to_string().starts_with("item x: image does not decode"),
        "{err}"
    );
}
