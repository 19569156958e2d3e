use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn id(n: u32) -> ItemId {
    ItemId::from_source("test", &format!("img/{n}.png"))
}

fn commit(file_name: &str, kind: &str, items: &[ItemId]) -> ShardCommit {
    let state = if kind == "accepted" {
        ItemState::Accepted
    } else {
        ItemState::Rejected
    };
    ShardCommit {
        file_name: file_name.to_string(),
        kind: kind.to_string(),
        rows: items.len() as u64,
        bytes: 1000 + items.len() as u64,
        blake3: format!("hash-of-{file_name}"),
        items: items.iter().map(|i| (i.clone(), state)).collect(),
    }
}

fn fresh() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal").join("journal.sqlite");
    (dir, path)
}

fn state_map(j: &Journal) -> BTreeMap<String, ItemState> {
    j.item_states().unwrap().into_iter().collect()
}

#[test]
fn commit_then_reopen_keeps_states() {
    let (_dir, path) = fresh();
    {
        let j = Journal::open(&path).unwrap();
        j.mark_in_flight(&[id(1), id(2), id(3), id(4)]).unwrap();
        j.commit_shard(&commit("shard-00000.parquet", "accepted", &[id(1), id(2)]))
            .unwrap();
        j.commit_shard(&commit("rejects-00000.parquet", "rejected", &[id(3)]))
            .unwrap();
        j.record_failure(&id(4), "endpoint.timeout", "no answer in 60 s")
            .unwrap();
    }
    let j = Journal::open(&path).unwrap();
    let states = state_map(&j);
    assert_eq!(states.len(), 4);
    assert_eq!(states[id(1).as_str()], ItemState::Accepted);
    assert_eq!(states[id(2).as_str()], ItemState::Accepted);
    assert_eq!(states[id(3).as_str()], ItemState::Rejected);
    assert_eq!(states[id(4).as_str()], ItemState::Failed);
    let shards = j.shards().unwrap();
    let names: Vec<_> = shards.iter().map(|s| s.file_name.as_str()).collect();
    assert_eq!(names, ["shard-00000.parquet", "rejects-00000.parquet"]);
    assert_eq!(shards[0].kind, "accepted");
    assert_eq!(shards[0].rows, 2);
    assert_eq!(shards[0].bytes, 1002);
    assert_eq!(shards[0].blake3, "hash-of-shard-00000.parquet");
    assert!(shards[0].items.is_empty());
    let mut expected = vec![(id(1), ItemState::Accepted), (id(2), ItemState::Accepted)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(j.shard_items("shard-00000.parquet").unwrap(), expected);
    assert!(matches!(
        j.shard_items("nope.parquet"),
        Err(JournalError::UnknownShard { .. })
    ));
}

#[test]
fn done_ids_excludes_failed_and_in_flight() {
    let (_dir, path) = fresh();
    let j = Journal::open(&path).unwrap();
    j.mark_in_flight(&[id(1), id(2), id(3), id(4), id(5)])
        .unwrap();
    j.commit_shard(&commit("a.parquet", "accepted", &[id(1)]))
        .unwrap();
    j.commit_shard(&commit("r.parquet", "rejected", &[id(2)]))
        .unwrap();
    j.record_failure(&id(3), "io.read", "gone").unwrap();
    j.mark_in_flight(&[id(4)]).unwrap();
    j.reset_in_flight().unwrap();
    j.mark_in_flight(&[id(5)]).unwrap();
    let done = j.done_ids().unwrap();
    let expected: HashSet<String> = [id(1), id(2)].iter().map(|i| i.to_string()).collect();
    assert_eq!(done, expected);
    assert_eq!(
        j.counts().unwrap(),
        StateCounts {
            accepted: 1,
            rejected: 1,
            failed: 1,
            in_flight: 1
        }
    );
}

#[test]
fn status_agrees_with_done_ids_and_attempts() {
    let (_dir, path) = fresh();
    let j = Journal::open(&path).unwrap();
    j.record_failure(&id(1), "endpoint", "timeout").unwrap();
    j.record_failure(&id(1), "endpoint", "timeout").unwrap();
    j.commit_shard(&commit("a.parquet", "accepted", &[id(1)]))
        .unwrap();
    j.record_failure(&id(2), "io.read", "gone").unwrap();
    j.commit_shard(&commit("r.parquet", "rejected", &[id(3)]))
        .unwrap();
    let reader = Journal::open_read_only(&path).unwrap();
    let done = j.done_ids().unwrap();
    for n in 1..=4 {
        let status = reader.status(&id(n)).unwrap();
        assert_eq!(status.done, done.contains(id(n).as_str()), "item {n}");
        assert_eq!(status.attempts, j.attempts(&id(n)).unwrap(), "item {n}");
    }
    assert_eq!(
        reader.status(&id(1)).unwrap(),
        ItemStatus {
            done: true,
            attempts: 2
        }
    );
    assert_eq!(reader.status(&id(4)).unwrap(), ItemStatus::default());
}

#[test]
fn failure_attempts_increment_and_keep_last_error() {
    let (_dir, path) = fresh();
    let j = Journal::open(&path).unwrap();
    assert_eq!(
        j.attempts(&id(7)).unwrap(),
        0,
        "unknown item has no attempts"
    );
    j.mark_in_flight(&[id(7)]).unwrap();
    assert_eq!(
        j.attempts(&id(7)).unwrap(),
        0,
        "in flight is not an attempt"
    );
    j.record_failure(&id(7), "endpoint.timeout", "first")
        .unwrap();
    j.mark_in_flight(&[id(7)]).unwrap();
    j.record_failure(&id(7), "endpoint.http_500", "second")
        .unwrap();
    // An id never marked in flight is added by its failure.
    j.record_failure(&id(8), "io.read", "missing file").unwrap();
    assert_eq!(j.attempts(&id(7)).unwrap(), 2);
    assert_eq!(j.attempts(&id(8)).unwrap(), 1);
    let failures = j.failures().unwrap();
    let f7 = failures.iter().find(|f| f.id == id(7).as_str()).unwrap();
    assert_eq!(f7.attempts, 2);
    assert_eq!(f7.error_class, "endpoint.http_500");
    assert_eq!(f7.message, "second");
    // Success later keeps the count (QA reports retried items) and drops it from failures.
    j.commit_shard(&commit("a.parquet", "accepted", &[id(7)]))
        .unwrap();
    assert_eq!(j.attempts(&id(7)).unwrap(), 2);
    let failed: Vec<_> = j.failures().unwrap().into_iter().map(|f| f.id).collect();
    assert_eq!(failed, vec![id(8).to_string()]);
}

#[test]
fn fingerprint_round_trip() {
    let (_dir, path) = fresh();
    let fp = Fingerprint {
        prompt_hash: "p1".into(),
        schema_hash: "s1".into(),
        model: "qwen2.5-vl-7b".into(),
    };
    {
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.fingerprint().unwrap(), None);
        j.set_fingerprint(&fp).unwrap();
        assert_eq!(j.fingerprint().unwrap(), Some(fp.clone()));
    }
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.fingerprint().unwrap(), Some(fp.clone()));
    let replaced = Fingerprint {
        model: "other".into(),
        ..fp
    };
    j.set_fingerprint(&replaced).unwrap();
    assert_eq!(j.fingerprint().unwrap(), Some(replaced));
}

#[test]
fn reset_in_flight_only_touches_in_flight() {
    let (_dir, path) = fresh();
    {
        let j = Journal::open(&path).unwrap();
        j.mark_in_flight(&[id(1), id(2), id(3), id(4)]).unwrap();
        j.commit_shard(&commit("a.parquet", "accepted", &[id(1)]))
            .unwrap();
        j.record_failure(&id(2), "io.read", "x").unwrap();
        // Dropped with items 3 and 4 in flight, as after a crash.
    }
    let j = Journal::open(&path).unwrap();
    assert_eq!(j.counts().unwrap().in_flight, 2);
    assert_eq!(j.reset_in_flight().unwrap(), 2);
    assert_eq!(
        j.reset_in_flight().unwrap(),
        0,
        "second reset finds nothing"
    );
    let states = state_map(&j);
    assert_eq!(states[id(1).as_str()], ItemState::Accepted);
    assert_eq!(states[id(2).as_str()], ItemState::Failed);
    assert_eq!(states[id(3).as_str()], ItemState::Pending);
    assert_eq!(states[id(4).as_str()], ItemState::Pending);
    assert_eq!(j.counts().unwrap().in_flight, 0);
}

#[test]
fn committing_a_done_item_again_is_an_error_and_writes_nothing() {
    let (_dir, path) = fresh();
    let j = Journal::open(&path).unwrap();
    j.commit_shard(&commit("shard-0.parquet", "accepted", &[id(1), id(2)]))
        .unwrap();
    j.mark_in_flight(&[id(3)]).unwrap();
    let err = j
        .commit_shard(&commit("shard-1.parquet", "accepted", &[id(3), id(2)]))
        .unwrap_err();
    match &err {
        JournalError::AlreadyCommitted { id: dup, shard, .. } => {
            assert_eq!(dup, id(2).as_str());
            assert_eq!(shard, "shard-0.parquet");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("journal.sqlite"), "{err}");
    // Rolled back: neither the shard nor item 3's new state was recorded.
    assert_eq!(j.shards().unwrap().len(), 1);
    assert_eq!(state_map(&j)[id(3).as_str()], ItemState::InFlight);
    // A rejects file may not claim an accepted item either.
    assert!(matches!(
        j.commit_shard(&commit("rejects-1.parquet", "rejected", &[id(1)])),
        Err(JournalError::AlreadyCommitted { .. })
    ));
    assert_eq!(state_map(&j)[id(1).as_str()], ItemState::Accepted);
}

#[test]
fn done_items_are_never_moved_back() {
    let (_dir, path) = fresh();
    let j = Journal::open(&path).unwrap();
    j.commit_shard(&commit("a.parquet", "accepted", &[id(1)]))
        .unwrap();
    let err = j.mark_in_flight(&[id(2), id(1), id(3)]).unwrap_err();
    assert!(
        matches!(&err, JournalError::AlreadyCommitted { shard, .. } if shard == "a.parquet"),
        "{err}"
    );
    // The batch is one transaction: item 2 was not marked either.
    assert_eq!(j.item_states().unwrap().len(), 1);
    assert!(matches!(
        j.record_failure(&id(1), "io.read", "x"),
        Err(JournalError::AlreadyCommitted { .. })
    ));
    assert_eq!(j.attempts(&id(1)).unwrap(), 0);
    assert_eq!(j.done_ids().unwrap().len(), 1);
}

#[test]
fn duplicate_shard_name_is_refused() {
    let (_dir, path) = fresh();
    let j = Journal::open(&path).unwrap();
    j.commit_shard(&commit("a.parquet", "accepted", &[id(1)]))
        .unwrap();
    let err = j
        .commit_shard(&commit("a.parquet", "accepted", &[id(2)]))
        .unwrap_err();
    assert!(
        matches!(err, JournalError::DuplicateShard { ref file_name, .. } if file_name == "a.parquet")
    );
    assert!(!j.done_ids().unwrap().contains(id(2).as_str()));
}

#[test]
fn inconsistent_commits_are_refused_before_writing() {
    let (_dir, path) = fresh();
    let j = Journal::open(&path).unwrap();
    let good = commit("a.parquet", "accepted", &[id(1), id(2)]);
    let cases = [
        ShardCommit {
            kind: "maybe".into(),
            ..good.clone()
        },
        ShardCommit {
            rows: 3,
            ..good.clone()
        },
        ShardCommit {
            file_name: String::new(),
            ..good.clone()
        },
        ShardCommit {
            items: vec![(id(1), ItemState::Accepted), (id(2), ItemState::Failed)],
            ..good.clone()
        },
        ShardCommit {
            items: vec![(id(1), ItemState::Accepted), (id(1), ItemState::Accepted)],
            ..good.clone()
        },
        ShardCommit {
            kind: "rejected".into(),
            ..good.clone()
        },
        ShardCommit {
            rows: u64::MAX,
            ..good.clone()
        },
    ];
    for case in &cases {
        let err = j.commit_shard(case).unwrap_err();
        assert!(
            matches!(err, JournalError::InvalidCommit { .. }),
            "{case:?} gave {err}"
        );
    }
    assert!(j.shards().unwrap().is_empty());
    assert!(j.item_states().unwrap().is_empty());
    j.commit_shard(&good).unwrap();
    assert_eq!(j.counts().unwrap().accepted, 2);
}

#[test]
fn read_only_handle_sees_commits_while_writer_writes() {
    let (_dir, path) = fresh();
    let writer = Journal::open(&path).unwrap();
    writer
        .commit_shard(&commit("a.parquet", "accepted", &[id(1)]))
        .unwrap();
    let reader = Journal::open_read_only(&path).unwrap();
    assert!(reader.is_read_only());
    assert_eq!(reader.done_ids().unwrap().len(), 1);
    // The writer keeps writing with the reader open (WAL: neither blocks the other).
    writer.mark_in_flight(&[id(2), id(3)]).unwrap();
    writer
        .commit_shard(&commit("b.parquet", "accepted", &[id(2)]))
        .unwrap();
    assert_eq!(reader.done_ids().unwrap().len(), 2);
    assert_eq!(reader.counts().unwrap().in_flight, 1);
    assert_eq!(reader.shards().unwrap().len(), 2);
    // A reader inside a read transaction does not block a commit, and keeps its snapshot.
    {
        let conn = reader.lock();
        conn.execute_batch("BEGIN").unwrap();
        let count = || -> i64 {
            conn.query_row("SELECT COUNT(*) FROM shards", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(count(), 2);
        std::thread::scope(|s| {
            s.spawn(|| {
                writer
                    .commit_shard(&commit("c.parquet", "rejected", &[id(3)]))
                    .unwrap();
            });
        });
        assert_eq!(count(), 2, "snapshot isolation inside the read transaction");
        conn.execute_batch("COMMIT").unwrap();
    }
    assert_eq!(reader.counts().unwrap().rejected, 1);
    assert!(matches!(
        reader.mark_in_flight(&[id(9)]),
        Err(JournalError::ReadOnly { .. })
    ));
    assert!(matches!(
        reader.reset_in_flight(),
        Err(JournalError::ReadOnly { .. })
    ));
}

#[test]
fn read_only_open_after_writer_closed() {
    let (_dir, path) = fresh();
    {
        let j = Journal::open(&path).unwrap();
        j.commit_shard(&commit("a.parquet", "accepted", &[id(1)]))
            .unwrap();
    }
    let reader = Journal::open_read_only(&path).unwrap();
    assert_eq!(reader.counts().unwrap().accepted, 1);
}

#[test]
fn read_only_open_never_creates() {
    let (dir, _) = fresh();
    let missing = dir.path().join("missing.sqlite");
    let err = Journal::open_read_only(&missing).unwrap_err();
    assert!(matches!(err, JournalError::Open { .. }), "{err}");
    assert!(err.to_string().contains("missing.sqlite"));
    assert!(!missing.exists());
}

#[test]
fn foreign_files_are_not_journals() {
    let (dir, _) = fresh();
    let text = dir.path().join("notes.sqlite");
    std::fs::write(&text, vec![b'x'; 4096]).unwrap();
    for result in [Journal::open(&text), Journal::open_read_only(&text)] {
        let err = result.unwrap_err();
        assert!(matches!(err, JournalError::NotAJournal { .. }), "{err}");
    }

    let other = dir.path().join("other.sqlite");
    {
        let conn = Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
    }
    let err = Journal::open(&other).unwrap_err();
    assert!(matches!(err, JournalError::NotAJournal { .. }), "{err}");
    // Refusing must not have added our tables to the foreign database.
    let conn = Connection::open(&other).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn newer_schema_is_refused() {
    let (_dir, path) = fresh();
    drop(Journal::open(&path).unwrap());
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    for result in [Journal::open(&path), Journal::open_read_only(&path)] {
        match result {
            Err(JournalError::UnsupportedVersion { found, .. }) => {
                assert_eq!(found, SCHEMA_VERSION + 1)
            }
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }
}

#[test]
fn wal_mode_and_sync_levels() {
    let (_dir, path) = fresh();
    let j = Journal::open(&path).unwrap();
    let pragma = |name: &str| -> String {
        j.lock()
            .pragma_query_value(None, name, |r| {
                r.get::<_, rusqlite::types::Value>(0)
                    .map(|v| format!("{v:?}"))
            })
            .unwrap()
    };
    assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
    // 1 = NORMAL between commits; commit_shard switches to FULL (2) and back.
    assert_eq!(pragma("synchronous"), "Integer(1)");
    j.commit_shard(&commit("a.parquet", "accepted", &[id(1)]))
        .unwrap();
    assert_eq!(pragma("synchronous"), "Integer(1)");
    // Also restored after a failed commit.
    let _ = j.commit_shard(&commit("a.parquet", "accepted", &[id(2)]));
    assert_eq!(pragma("synchronous"), "Integer(1)");
}

#[test]
fn journal_is_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Journal>();
    let (_dir, path) = fresh();
    let j = Journal::open(&path).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let j = &j;
            s.spawn(move || {
                let ids: Vec<_> = (t * 100..t * 100 + 50).map(id).collect();
                j.mark_in_flight(&ids).unwrap();
                j.commit_shard(&commit(&format!("shard-{t}.parquet"), "accepted", &ids))
                    .unwrap();
            });
        }
    });
    assert_eq!(j.done_ids().unwrap().len(), 200);
    assert_eq!(j.shards().unwrap().len(), 4);
}

/// One step of the property test's random workload.
#[derive(Debug, Clone)]
enum Op {
    InFlight(Vec<u32>),
    Fail(u32),
    Commit(bool, Vec<u32>),
    Reset,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let ids = proptest::collection::vec(0u32..12, 0..5);
    prop_oneof![
        ids.clone().prop_map(Op::InFlight),
        (0u32..12).prop_map(Op::Fail),
        (any::<bool>(), ids).prop_map(|(a, v)| Op::Commit(a, v)),
        Just(Op::Reset),
        Just(Op::Reopen),
    ]
}

/// What the journal should hold: state and attempts per item.
#[derive(Default)]
struct Model {
    items: BTreeMap<String, (ItemState, u32)>,
}

impl Model {
    fn done(&self, k: &str) -> bool {
        matches!(
            self.items.get(k),
            Some((ItemState::Accepted | ItemState::Rejected, _))
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random workloads agree with a simple in-memory model, across reopens, and every refused
    /// operation leaves the journal unchanged.
    #[test]
    fn journal_matches_model(ops in proptest::collection::vec(op(), 1..25)) {
        let (_dir, path) = fresh();
        let mut j = Journal::open(&path).unwrap();
        let mut model = Model::default();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::InFlight(ns) => {
                    let ids: Vec<_> = ns.iter().map(|&k| id(k)).collect();
                    let refused = ids.iter().any(|i| model.done(i.as_str()));
                    prop_assert_eq!(j.mark_in_flight(&ids).is_err(), refused);
                    if !refused {
                        for i in ids {
                            let e = model.items.entry(i.to_string()).or_insert((ItemState::Pending, 0));
                            e.0 = ItemState::InFlight;
                        }
                    }
                }
                Op::Fail(k) => {
                    let i = id(k);
                    let refused = model.done(i.as_str());
                    prop_assert_eq!(j.record_failure(&i, "c", "m").is_err(), refused);
                    if !refused {
                        let e = model.items.entry(i.to_string()).or_insert((ItemState::Pending, 0));
                        *e = (ItemState::Failed, e.1 + 1);
                    }
                }
                Op::Commit(accepted, ns) => {
                    let ids: Vec<_> = ns.iter().map(|&k| id(k)).collect();
                    let unique: HashSet<_> = ns.iter().collect();
                    let refused = unique.len() != ns.len() || ids.iter().any(|i| model.done(i.as_str()));
                    let kind = if accepted { "accepted" } else { "rejected" };
                    let result = j.commit_shard(&commit(&format!("s{n}.parquet"), kind, &ids));
                    prop_assert_eq!(result.is_err(), refused);
                    if !refused {
                        let state = if accepted { ItemState::Accepted } else { ItemState::Rejected };
                        for i in ids {
                            let e = model.items.entry(i.to_string()).or_insert((ItemState::Pending, 0));
                            e.0 = state;
                        }
                    }
                }
                Op::Reset => {
                    let expected = model.items.values().filter(|e| e.0 == ItemState::InFlight).count();
                    prop_assert_eq!(j.reset_in_flight().unwrap(), expected as u64);
                    for e in model.items.values_mut() {
                        if e.0 == ItemState::InFlight {
                            e.0 = ItemState::Pending;
                        }
                    }
                }
                Op::Reopen => {
                    drop(j);
                    j = Journal::open(&path).unwrap();
                }
            }
            let states: BTreeMap<String, ItemState> = j.item_states().unwrap().into_iter().collect();
            let expected: BTreeMap<String, ItemState> =
                model.items.iter().map(|(k, v)| (k.clone(), v.0)).collect();
            prop_assert_eq!(states, expected);
            for (k, (_, attempts)) in &model.items {
                prop_assert_eq!(j.attempts(&ItemId::from_stored(k.clone())).unwrap(), *attempts);
            }
            let done: HashSet<String> =
                model.items.keys().filter(|k| model.done(k)).cloned().collect();
            prop_assert_eq!(j.done_ids().unwrap(), done);
        }
    }
}
