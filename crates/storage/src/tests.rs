use crate::store::is_loopback_endpoint;
use crate::*;
use object_store::memory::InMemory;
use proptest::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;

fn url(text: &str) -> ObjectUrl {
    match Location::parse(text).unwrap() {
        Location::Object(url) => url,
        Location::Local(path) => panic!("{} parsed as a local path", path.display()),
    }
}

fn memory(bucket_url: &str) -> Storage {
    Storage::with_store(Arc::new(InMemory::new()), &url(bucket_url))
}

#[test]
fn parses_the_three_schemes_and_local_paths() {
    let s3 = url("s3://bucket/a/b/");
    assert_eq!(
        (s3.scheme(), s3.bucket(), s3.key()),
        (Scheme::S3, "bucket", "a/b")
    );
    assert_eq!(url("gs://b/k").scheme(), Scheme::Gcs);
    assert_eq!(url("az://container").scheme(), Scheme::Azure);
    assert_eq!(url("az://container").key(), "");
    assert_eq!(
        Location::parse("out/demo").unwrap(),
        Location::Local(PathBuf::from("out/demo"))
    );
    assert_eq!(
        Location::parse("file:///tmp/x").unwrap(),
        Location::Local(PathBuf::from("/tmp/x"))
    );
    assert!(!Location::is_object_url("/data/eyepacs/train/1.jpeg"));
    assert!(Location::is_object_url("s3://b/k"));
}

#[test]
fn refuses_credentials_queries_unknown_schemes_and_escapes() {
    for (input, words) in [
        ("s3://AKIA:secret@bucket/k", "user names or passwords"),
        ("az://c/k?sv=2020&sig=abc", "query strings"),
        ("ftp://host/k", "unknown scheme"),
        ("s3:///k", "bucket name is empty"),
        ("s3://b/a/../c", "`..` segment"),
        ("s3://b/a//c", "empty segment"),
    ] {
        let err = Location::parse(input).unwrap_err().to_string();
        assert!(err.contains(words), "{input}: {err}");
        // The refused credential or token is not repeated.
        assert!(!err.contains("secret") && !err.contains("sig=abc"), "{err}");
    }
    let joined = url("s3://b/prefix").join("../other");
    assert!(joined.is_err());
}

#[test]
fn join_and_strip_prefix_are_inverse() {
    let prefix = url("s3://b/datasets/v1");
    let shard = prefix.join("shards/part-00000.parquet").unwrap();
    assert_eq!(
        shard.to_string(),
        "s3://b/datasets/v1/shards/part-00000.parquet"
    );
    assert_eq!(
        shard.strip_prefix(&prefix),
        Some("shards/part-00000.parquet")
    );
    assert_eq!(url("s3://b/datasets/v10/x").strip_prefix(&prefix), None);
    assert_eq!(url("s3://b").join("k").unwrap().to_string(), "s3://b/k");
}

#[test]
fn loopback_endpoints_are_recognised() {
    assert!(is_loopback_endpoint("http://127.0.0.1:9000"));
    assert!(is_loopback_endpoint("http://localhost:9000/"));
    assert!(is_loopback_endpoint("http://[::1]:9000"));
    assert!(!is_loopback_endpoint("http://10.0.0.5:9000"));
    assert!(!is_loopback_endpoint("http://127.0.0.1.evil.example:9000"));
    assert!(!is_loopback_endpoint("https://127.0.0.1:9000"));
}

#[test]
fn put_get_list_exists_on_the_in_memory_backend() {
    let storage = memory("s3://bucket");
    let a = url("s3://bucket/p/a.jpg");
    let b = url("s3://bucket/p/sub/b.jpg");
    let outside = url("s3://bucket/q/c.jpg");
    storage.put(&a, b"aaaa".to_vec()).unwrap();
    storage.put(&b, b"bb".to_vec()).unwrap();
    storage.put(&outside, b"c".to_vec()).unwrap();
    assert_eq!(storage.get(&a, 100).unwrap(), b"aaaa");
    assert_eq!(storage.exists(&b).unwrap(), Some(2));
    assert_eq!(storage.exists(&url("s3://bucket/p/none")).unwrap(), None);
    let listed = storage.list(&url("s3://bucket/p")).unwrap();
    let names: Vec<_> = listed
        .iter()
        .map(|e| (e.relative.as_str(), e.size))
        .collect();
    assert_eq!(names, [("a.jpg", 4), ("sub/b.jpg", 2)]);
    assert_eq!(listed[1].url, b);
}

#[test]
fn get_refuses_large_objects_and_names_missing_ones() {
    let storage = memory("gs://bucket");
    let big = url("gs://bucket/big");
    storage.put(&big, vec![0; 1000]).unwrap();
    match storage.get(&big, 999) {
        Err(StorageError::TooLarge { url, size, limit }) => {
            assert_eq!((url.as_str(), size, limit), ("gs://bucket/big", 1000, 999));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let err = storage.get(&url("gs://bucket/missing"), 10).unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(err.to_string(), "gs://bucket/missing: not found");
}

#[test]
fn a_client_refuses_urls_of_another_bucket() {
    let storage = memory("s3://one");
    let err = storage.get(&url("s3://two/k"), 10).unwrap_err().to_string();
    assert!(
        err.contains("s3://two/k") && err.contains("s3://one"),
        "{err}"
    );
}

#[test]
fn put_file_uses_parts_above_the_threshold_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let storage = memory("az://c").with_options(StorageOptions {
        multipart_threshold: 1000,
        part_size: 300,
        part_concurrency: 2,
    });
    let data: Vec<u8> = (0..2500u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = dir.path().join("shard.parquet");
    std::fs::write(&path, &data).unwrap();
    let report = storage
        .put_file(&path, &url("az://c/out/shard.parquet"))
        .unwrap();
    assert_eq!(
        report,
        PutReport {
            bytes: 2500,
            multipart: true
        }
    );
    assert_eq!(
        storage
            .get(&url("az://c/out/shard.parquet"), 10_000)
            .unwrap(),
        data
    );

    let small = dir.path().join("small");
    std::fs::write(&small, b"tiny").unwrap();
    let report = storage.put_file(&small, &url("az://c/out/small")).unwrap();
    assert!(!report.multipart);

    let dest = dir.path().join("down/loaded.bin");
    assert_eq!(
        storage
            .get_to_file(&url("az://c/out/shard.parquet"), &dest, 10_000)
            .unwrap(),
        2500
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

#[test]
fn put_file_names_a_missing_local_file() {
    let storage = memory("s3://b");
    let err = storage
        .put_file(
            std::path::Path::new("/nonexistent/x.parquet"),
            &url("s3://b/x"),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/x.parquet"), "{err}");
}

#[test]
fn reader_reads_local_paths_and_registered_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("img.jpg");
    std::fs::write(&local, b"local").unwrap();
    let reader = Reader::new(100);
    assert_eq!(reader.read(&local).unwrap(), b"local");
    assert!(matches!(
        reader.read(&dir.path().join("missing.jpg")),
        Err(ReadError::Local(err)) if err.kind() == std::io::ErrorKind::NotFound
    ));

    let storage = memory("s3://images");
    storage
        .put(&url("s3://images/eyepacs/1.jpg"), b"remote".to_vec())
        .unwrap();
    reader.insert(storage, &url("s3://images"));
    assert_eq!(
        reader
            .read(&PathBuf::from("s3://images/eyepacs/1.jpg"))
            .unwrap(),
        b"remote"
    );
    let err = reader
        .read(&PathBuf::from("s3://images/eyepacs/2.jpg"))
        .unwrap_err();
    assert_eq!(err.to_string(), "s3://images/eyepacs/2.jpg: not found");
}

#[test]
fn redactor_scrubs_secret_values_and_signatures() {
    let redactor = Redactor::from_env([
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMIK7MDENGbPxRfiCY"),
        ("AWS_REGION", "us-east-1"),
        ("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0a2V5MTIz"),
        ("HOME", "/root/secretive"),
    ]);
    let message = "request to https://h/b?X-Amz-Signature=abcdef&x=1 with wJalrXUtnFEMIK7MDENGbPxRfiCY \
                   and c2VjcmV0a2V5MTIz in us-east-1 sig=zzz";
    let scrubbed = redactor.scrub(message);
    assert!(
        !scrubbed.contains("wJalrXUtnFEMIK7MDENGbPxRfiCY"),
        "{scrubbed}"
    );
    assert!(!scrubbed.contains("c2VjcmV0a2V5MTIz"), "{scrubbed}");
    assert!(
        !scrubbed.contains("abcdef") && !scrubbed.contains("zzz"),
        "{scrubbed}"
    );
    assert!(
        scrubbed.contains("us-east-1") && scrubbed.contains("x=1"),
        "{scrubbed}"
    );
}

#[test]
fn opening_from_the_environment_never_echoes_a_secret() {
    // An invalid setting makes the builder fail; its message must not carry the secret.
    let env = vec![
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            "topsecretvalue123".to_string(),
        ),
        ("AWS_ACCESS_KEY_ID".to_string(), "AKIDEXAMPLE".to_string()),
        (
            "AWS_ENDPOINT_URL".to_string(),
            "not a url topsecretvalue123".to_string(),
        ),
    ];
    match Storage::open_with_env(&url("s3://bucket"), env) {
        Ok(storage) => assert!(!format!("{storage:?}").contains("topsecret")),
        Err(err) => {
            let text = err.to_string();
            assert!(text.contains("s3://bucket"), "{text}");
            assert!(!text.contains("topsecretvalue123"), "{text}");
        }
    }
}

#[cfg(feature = "aws")]
#[test]
fn s3_client_opens_against_a_loopback_http_endpoint_without_allow_http() {
    let env = vec![
        (
            "AWS_ENDPOINT_URL".to_string(),
            "http://127.0.0.1:1".to_string(),
        ),
        ("AWS_ACCESS_KEY_ID".to_string(), "test".to_string()),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            "testsecret".to_string(),
        ),
    ];
    let storage = Storage::open_with_env(&url("s3://bucket"), env).unwrap();
    // Nothing listens on port 1: the failure must be a connection error naming the URL, not
    // a refusal of plain http.
    let err = storage
        .exists(&url("s3://bucket/k"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("s3://bucket/k"), "{err}");
    assert!(!err.to_ascii_lowercase().contains("allow_http"), "{err}");
}

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,8}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

proptest! {
    #[test]
    fn display_then_parse_is_identity(
        scheme in prop::sample::select(vec![Scheme::S3, Scheme::Gcs, Scheme::Azure]),
        bucket in "[a-z0-9][a-z0-9.-]{0,20}",
        segments in prop::collection::vec(segment(), 0..5),
    ) {
        let original = ObjectUrl::new(scheme, &bucket, &segments.join("/")).unwrap();
        let parsed = Location::parse(&original.to_string()).unwrap();
        prop_assert_eq!(parsed, Location::Object(original));
    }

    #[test]
    fn parse_never_panics_and_urls_never_escape_their_prefix(input in "\\PC{0,60}", rel in "\\PC{0,30}") {
        if let Ok(Location::Object(url)) = Location::parse(&input)
            && let Ok(joined) = url.join(&rel)
        {
            prop_assert!(joined.strip_prefix(&url).is_some() || rel.trim_matches('/').is_empty());
        }
    }
}
