//! The client against a real S3-protocol server on loopback (`scripts/s3-server.sh`, which
//! `scripts/test.sh` starts and exports as `RETINALOGOS_S3_URL`). Skips loudly without it, and
//! fails instead when `RETINALOGOS_REQUIRE_S3=1`.

use retina_storage::{Location, ObjectUrl, Storage, StorageError, StorageOptions};

fn server() -> Option<String> {
    match std::env::var("RETINALOGOS_S3_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("RETINALOGOS_REQUIRE_S3").as_deref() != Ok("1"),
                "RETINALOGOS_REQUIRE_S3=1 but RETINALOGOS_S3_URL is not set: start scripts/s3-server.sh"
            );
            eprintln!("SKIPPED: no S3 server (run: eval \"$(scripts/s3-server.sh start)\")");
            None
        }
    }
}

fn env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret-value"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn url(text: &str) -> ObjectUrl {
    Location::parse(text).unwrap().as_object().unwrap().clone()
}

/// moto creates buckets on a plain PUT of the bucket path; the client has no bucket API.
fn create_bucket(endpoint: &str, bucket: &str) {
    let status = std::process::Command::new("curl")
        .args(["-s", "-f", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("curl runs");
    assert!(
        status.success(),
        "cannot create bucket {bucket} on {endpoint}"
    );
}

#[test]
fn put_list_get_exists_and_multipart_against_the_server() {
    let Some(endpoint) = server() else { return };
    let bucket = format!("storage-unit-{}", std::process::id());
    create_bucket(&endpoint, &bucket);
    let storage = Storage::open_with_env(&url(&format!("s3://{bucket}")), env(&endpoint))
        .unwrap()
        .with_options(StorageOptions {
            multipart_threshold: 6 * 1024 * 1024,
            part_size: 5 * 1024 * 1024,
            part_concurrency: 2,
        });
    let small = url(&format!("s3://{bucket}/p/small.bin"));
    storage.put(&small, b"hello".to_vec()).unwrap();
    assert_eq!(storage.get(&small, 100).unwrap(), b"hello");
    assert_eq!(storage.exists(&small).unwrap(), Some(5));
    assert!(matches!(
        storage.get(&small, 4),
        Err(StorageError::TooLarge { .. })
    ));
    assert!(
        storage
            .get(&url(&format!("s3://{bucket}/p/none")), 10)
            .unwrap_err()
            .is_not_found()
    );

    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let path = dir.path().join("big.parquet");
    std::fs::write(&path, &big).unwrap();
    let big_url = url(&format!("s3://{bucket}/p/sub/big.parquet"));
    let report = storage.put_file(&path, &big_url).unwrap();
    assert!(report.multipart);
    assert_eq!(storage.get(&big_url, 20 * 1024 * 1024).unwrap(), big);

    let listed = storage.list(&url(&format!("s3://{bucket}/p"))).unwrap();
    let names: Vec<_> = listed.iter().map(|e| e.relative.as_str()).collect();
    assert_eq!(names, ["small.bin", "sub/big.parquet"]);

    // Wrong credentials do not reach this server's checks (moto accepts any), but a missing
    // bucket gives an error naming the URL and never the secret.
    let other = Storage::open_with_env(&url("s3://no-such-bucket-here"), env(&endpoint)).unwrap();
    let err = other
        .get(&url("s3://no-such-bucket-here/k"), 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3://no-such-bucket-here/k"), "{err}");
    assert!(!err.contains("testing-secret-value"), "{err}");
}
