//! Durable per-item state of a dataset build, so an interrupted run resumes where it stopped.
//!
//! This crate owns the journal: one SQLite database (WAL mode) holding
//! - the run fingerprint (prompt hash, schema hash, model) a resumed run must match;
//! - every item's state ([`ItemState`]), its failure count and its last error;
//! - every committed shard (file name, kind, rows, bytes, BLAKE3) and which items it holds.
//!
//! An item is *done* only once the shard (or rejects file) holding its row is durable on disk
//! and [`Journal::commit_shard`] has recorded it; that commit runs with `synchronous=FULL` so
//! it survives power loss. Everything else (in flight, failed, pending) is redone by the next
//! run. Other writes use `synchronous=NORMAL`: losing them to a power cut only means an item is
//! retried, never that a missing row is believed written.
//!
//! It holds no image bytes and no captions: those live in the shards.
//!
//! Invariants the database enforces (SQL `CHECK`s and the transactions below):
//! - an item is `accepted`/`rejected` exactly when it belongs to a committed shard;
//! - a done item is never moved back (re-marked in flight, failed, or committed again): that is
//!   reported as [`JournalError::AlreadyCommitted`] and nothing is written.
//!
//! A [`Journal`] is `Send + Sync` (the connection sits behind a mutex), so one handle can be
//! shared between pipeline tasks. Read-only handles ([`Journal::open_read_only`]) may be open in
//! other processes while a run writes: WAL readers see the last committed state and never block
//! the writer.

use retina_records::{ItemId, ItemState};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

mod schema;

pub use schema::{APPLICATION_ID, SCHEMA_VERSION};

/// What a resumed run must share with the run that started the journal: answers produced under
/// another prompt, schema or model must not be mixed into the same dataset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Hash of the rendered prompt template set.
    pub prompt_hash: String,
    /// Hash of `schemas/caption.schema.json`.
    pub schema_hash: String,
    /// Model name as sent to the endpoint.
    pub model: String,
}

/// One durable shard (or rejects file) and the final state of every item whose row it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCommit {
    /// File name inside the output directory; unique across the journal.
    pub file_name: String,
    /// `"accepted"` (a dataset shard) or `"rejected"` (a rejects file).
    pub kind: String,
    /// Rows in the file; must equal `items.len()` (one row per item).
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// BLAKE3 of the file, hex.
    pub blake3: String,
    /// Every item in the file with its final state: all `Accepted` in an accepted shard, all
    /// `Rejected` in a rejects file. Empty when returned by [`Journal::shards`].
    pub items: Vec<(ItemId, ItemState)>,
}

/// One item as a resuming run sees it ([`Journal::status`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemStatus {
    /// Its row is durable in a committed shard (accepted or rejected): skip it.
    pub done: bool,
    /// Failures recorded so far.
    pub attempts: u32,
}

/// Number of items in each state that matters for progress and resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Done, with a row in a dataset shard.
    pub accepted: u64,
    /// Done, with a row in a rejects file.
    pub rejected: u64,
    /// Last attempt failed; retried by the next run.
    pub failed: u64,
    /// Handed to the pipeline and not yet finished (or left so by a crash).
    pub in_flight: u64,
}

/// An item whose last attempt failed and which the next run retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The item's id.
    pub id: String,
    /// Failures recorded so far, this one included.
    pub attempts: u32,
    /// Stable class of the last error (e.g. `endpoint.timeout`, `io.read`).
    pub error_class: String,
    /// Human message of the last error.
    pub message: String,
}

/// Everything that can go wrong with the journal; every variant names the journal file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The database file could not be opened or created.
    #[error("journal {path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The journal's folder could not be created.
    #[error("journal {path}: cannot create its folder: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a journal of this tool (another SQLite database, or not SQLite at all).
    #[error("journal {path}: not a build-dataset journal: {reason}")]
    NotAJournal { path: PathBuf, reason: String },
    /// The journal was written by a newer build with a schema this build does not know.
    #[error(
        "journal {path}: schema version {found} is newer than this build supports ({supported})"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// SQLite refused WAL mode (e.g. a network file system without shared memory).
    #[error("journal {path}: WAL mode unavailable (journal_mode is {mode})")]
    WalUnavailable { path: PathBuf, mode: String },
    /// A write was attempted through a handle opened with [`Journal::open_read_only`].
    #[error("journal {path}: {op}: handle is read-only")]
    ReadOnly { path: PathBuf, op: &'static str },
    /// SQLite failed during `op`.
    #[error("journal {path}: {op}: {source}")]
    Sqlite {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    /// The item's row is already durable in `shard`; a done item is never changed again.
    #[error("journal {path}: item {id} is already committed in shard {shard}")]
    AlreadyCommitted {
        path: PathBuf,
        id: String,
        shard: String,
    },
    /// A shard with this file name was committed before.
    #[error("journal {path}: shard {file_name} is already committed")]
    DuplicateShard { path: PathBuf, file_name: String },
    /// The commit is inconsistent in itself; nothing was written.
    #[error("journal {path}: shard {file_name}: {reason}")]
    InvalidCommit {
        path: PathBuf,
        file_name: String,
        reason: String,
    },
    /// No shard with this file name was committed.
    #[error("journal {path}: no committed shard named {file_name}")]
    UnknownShard { path: PathBuf, file_name: String },
    /// A stored value is not what this build writes (edited or damaged file).
    #[error("journal {path}: corrupt {what}: {reason}")]
    Corrupt {
        path: PathBuf,
        what: String,
        reason: String,
    },
}

/// The journal of one output directory. See the crate docs for the guarantees.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    read_only: bool,
    conn: Mutex<Connection>,
}

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Journal {
    /// Opens the journal at `path` for writing, creating it (and its folder) when absent.
    ///
    /// A new file gets the current schema; an existing one must be a journal of a schema
    /// version this build knows.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| JournalError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let mut conn = Connection::open(path).map_err(|source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        schema::prepare_writer(&mut conn, path, BUSY_TIMEOUT)?;
        Ok(Journal {
            path: path.to_path_buf(),
            read_only: false,
            conn: Mutex::new(conn),
        })
    }

    /// Opens an existing journal for reading only (status, verify, QA while a run goes on).
    ///
    /// Never creates the file; fails with [`JournalError::NotAJournal`] when it holds no journal.
    pub fn open_read_only(path: &Path) -> Result<Journal, JournalError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|source| JournalError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        schema::prepare_reader(&conn, path, BUSY_TIMEOUT)?;
        Ok(Journal {
            path: path.to_path_buf(),
            read_only: true,
            conn: Mutex::new(conn),
        })
    }

    /// The file this journal lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for handles from [`Journal::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The fingerprint stored by [`Journal::set_fingerprint`], if any.
    pub fn fingerprint(&self) -> Result<Option<Fingerprint>, JournalError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT key, value FROM meta WHERE key LIKE 'fingerprint.%'")
            .map_err(self.sql("read fingerprint"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(self.sql("read fingerprint"))?;
        let mut found = HashMap::new();
        for row in rows {
            let (key, value) = row.map_err(self.sql("read fingerprint"))?;
            found.insert(key, value);
        }
        if found.is_empty() {
            return Ok(None);
        }
        let mut take = |field: &str| {
            found
                .remove(&format!("fingerprint.{field}"))
                .ok_or_else(|| self.corrupt("fingerprint", format!("{field} is missing")))
        };
        Ok(Some(Fingerprint {
            prompt_hash: take("prompt_hash")?,
            schema_hash: take("schema_hash")?,
            model: take("model")?,
        }))
    }

    /// Stores (or replaces) the run fingerprint, all three fields in one transaction.
    pub fn set_fingerprint(&self, fp: &Fingerprint) -> Result<(), JournalError> {
        self.writable("set fingerprint")?;
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("set fingerprint"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO meta(key, value) VALUES (?1, ?2)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                )
                .map_err(self.sql("set fingerprint"))?;
            for (key, value) in [
                ("fingerprint.prompt_hash", &fp.prompt_hash),
                ("fingerprint.schema_hash", &fp.schema_hash),
                ("fingerprint.model", &fp.model),
            ] {
                stmt.execute(params![key, value])
                    .map_err(self.sql("set fingerprint"))?;
            }
        }
        tx.commit().map_err(self.sql("set fingerprint"))
    }

    /// Ids whose row is durable in a committed shard (accepted or rejected): skipped by a new run.
    pub fn done_ids(&self) -> Result<HashSet<String>, JournalError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT id FROM items WHERE shard_seq IS NOT NULL")
            .map_err(self.sql("read done ids"))?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(self.sql("read done ids"))?;
        let mut ids = HashSet::new();
        for row in rows {
            ids.insert(row.map_err(self.sql("read done ids"))?);
        }
        Ok(ids)
    }

    /// What a new run needs to know about one item: whether it is done and how often it failed.
    ///
    /// One indexed lookup (about a few microseconds), so a run can filter a stream of any length
    /// without loading every done id as [`Journal::done_ids`] does; an unknown id is not done
    /// and has no attempts.
    pub fn status(&self, id: &ItemId) -> Result<ItemStatus, JournalError> {
        let conn = self.lock();
        let stored: Option<(bool, i64)> = conn
            .prepare_cached("SELECT shard_seq IS NOT NULL, attempts FROM items WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row(params![id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
            })
            .map_err(self.sql("read item status"))?;
        let Some((done, attempts)) = stored else {
            return Ok(ItemStatus::default());
        };
        let attempts = u32::try_from(attempts).map_err(|_| {
            self.corrupt(
                &format!("attempts of item {id}"),
                format!("{attempts} out of range"),
            )
        })?;
        Ok(ItemStatus { done, attempts })
    }

    /// Marks items as in flight, all in one transaction. Unknown ids are added.
    ///
    /// Fails with [`JournalError::AlreadyCommitted`] (writing nothing) if any item is done.
    pub fn mark_in_flight(&self, ids: &[ItemId]) -> Result<(), JournalError> {
        self.writable("mark in flight")?;
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql("mark in flight"))?;
        {
            // The WHERE keeps done items untouched; a zero change count reveals them.
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO items(id, state, updated_at) VALUES (?1, 'in_flight', {NOW})
                     ON CONFLICT(id) DO UPDATE SET state = 'in_flight',
                        updated_at = excluded.updated_at
                     WHERE items.shard_seq IS NULL"
                ))
                .map_err(self.sql("mark in flight"))?;
            for id in ids {
                let changed = stmt
                    .execute(params![id.as_str()])
                    .map_err(self.sql("mark in flight"))?;
                if changed == 0 {
                    return Err(self.already_committed(&tx, id.as_str()));
                }
            }
        }
        tx.commit().map_err(self.sql("mark in flight"))
    }

    /// A failure that a later run retries (attempts counted, last error kept).
    ///
    /// Unknown ids are added. Fails with [`JournalError::AlreadyCommitted`] if the item is done.
    pub fn record_failure(
        &self,
        id: &ItemId,
        error_class: &str,
        message: &str,
    ) -> Result<(), JournalError> {
        self.writable("record failure")?;
        let conn = self.lock();
        let changed = conn
            .prepare_cached(&format!(
                "INSERT INTO items(id, state, attempts, error_class, message, updated_at)
                 VALUES (?1, 'failed', 1, ?2, ?3, {NOW})
                 ON CONFLICT(id) DO UPDATE SET state = 'failed',
                    attempts = items.attempts + 1,
                    error_class = excluded.error_class,
                    message = excluded.message,
                    updated_at = excluded.updated_at
                 WHERE items.shard_seq IS NULL"
            ))
            .and_then(|mut stmt| stmt.execute(params![id.as_str(), error_class, message]))
            .map_err(self.sql("record failure"))?;
        if changed == 0 {
            return Err(self.already_committed(&conn, id.as_str()));
        }
        Ok(())
    }

    /// Failures recorded for the item so far (0 for an unknown item). Committing the item later
    /// keeps the count, so QA can tell items that needed retries.
    pub fn attempts(&self, id: &ItemId) -> Result<u32, JournalError> {
        let conn = self.lock();
        let stored: Option<i64> = conn
            .prepare_cached("SELECT attempts FROM items WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row(params![id.as_str()], |row| row.get(0))
                    .optional()
            })
            .map_err(self.sql("read attempts"))?;
        match stored {
            None => Ok(0),
            Some(n) => u32::try_from(n).map_err(|_| {
                self.corrupt(
                    &format!("attempts of item {id}"),
                    format!("{n} out of range"),
                )
            }),
        }
    }

    /// One transaction: the shard row plus every item's final state. Call only after the shard is
    /// durable (written, fsync'd, renamed).
    ///
    /// Checked before anything is written ([`JournalError::InvalidCommit`]): `kind` is
    /// `accepted` or `rejected`; `rows == items.len()`; every item's state matches the kind; no
    /// id appears twice. A file name committed before gives [`JournalError::DuplicateShard`].
    /// An item already done in an earlier shard (which the pipeline should never produce, since
    /// done items are skipped) gives [`JournalError::AlreadyCommitted`] and the whole commit is
    /// rolled back: its row now exists in two files, and the caller must decide which to keep
    /// rather than the journal silently picking one.
    pub fn commit_shard(&self, commit: &ShardCommit) -> Result<(), JournalError> {
        self.writable("commit shard")?;
        let (rows, bytes) = self.validate_commit(commit)?;
        let mut conn = self.lock();
        // FULL makes this commit fsync the WAL: "done" must survive power loss.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(self.sql("commit shard"))?;
        let result = self.commit_shard_locked(&mut conn, commit, rows, bytes);
        let restored = conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(self.sql("commit shard"));
        result.and(restored)
    }

    /// Every committed shard in commit order; `items` is left empty (see [`Journal::shard_items`]).
    pub fn shards(&self) -> Result<Vec<ShardCommit>, JournalError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT file_name, kind, rows, bytes, blake3 FROM shards ORDER BY seq")
            .map_err(self.sql("read shards"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .map_err(self.sql("read shards"))?;
        let mut shards = Vec::new();
        for row in rows {
            let (file_name, kind, rows, bytes, blake3) = row.map_err(self.sql("read shards"))?;
            let what = format!("shard {file_name}");
            let rows = u64::try_from(rows).map_err(|_| self.corrupt(&what, "negative rows"))?;
            let bytes = u64::try_from(bytes).map_err(|_| self.corrupt(&what, "negative bytes"))?;
            shards.push(ShardCommit {
                file_name,
                kind,
                rows,
                bytes,
                blake3,
                items: Vec::new(),
            });
        }
        Ok(shards)
    }

    /// The items of one committed shard, sorted by id (for verifying a file against the journal).
    pub fn shard_items(&self, file_name: &str) -> Result<Vec<(ItemId, ItemState)>, JournalError> {
        let conn = self.lock();
        let seq: Option<i64> = conn
            .prepare_cached("SELECT seq FROM shards WHERE file_name = ?1")
            .and_then(|mut stmt| {
                stmt.query_row(params![file_name], |row| row.get(0))
                    .optional()
            })
            .map_err(self.sql("read shard items"))?;
        let Some(seq) = seq else {
            return Err(JournalError::UnknownShard {
                path: self.path.clone(),
                file_name: file_name.to_string(),
            });
        };
        let mut stmt = conn
            .prepare_cached("SELECT id, state FROM items WHERE shard_seq = ?1 ORDER BY id")
            .map_err(self.sql("read shard items"))?;
        let rows = stmt
            .query_map(params![seq], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(self.sql("read shard items"))?;
        let mut items = Vec::new();
        for row in rows {
            let (id, state) = row.map_err(self.sql("read shard items"))?;
            let state = self.parse_state(&id, &state)?;
            items.push((ItemId::from_stored(id), state));
        }
        Ok(items)
    }

    /// How many items are accepted, rejected, failed and in flight.
    pub fn counts(&self) -> Result<StateCounts, JournalError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT state, COUNT(*) FROM items GROUP BY state")
            .map_err(self.sql("count states"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(self.sql("count states"))?;
        let mut counts = StateCounts::default();
        for row in rows {
            let (state, n) = row.map_err(self.sql("count states"))?;
            let n = u64::try_from(n).map_err(|_| self.corrupt("state counts", "negative count"))?;
            match ItemState::parse(&state) {
                Some(ItemState::Accepted) => counts.accepted = n,
                Some(ItemState::Rejected) => counts.rejected = n,
                Some(ItemState::Failed) => counts.failed = n,
                Some(ItemState::InFlight) => counts.in_flight = n,
                Some(ItemState::Pending) => {}
                None => return Err(self.corrupt("state counts", format!("unknown state {state}"))),
            }
        }
        Ok(counts)
    }

    /// Every known item and its state, sorted by id.
    pub fn item_states(&self) -> Result<Vec<(String, ItemState)>, JournalError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT id, state FROM items ORDER BY id")
            .map_err(self.sql("read item states"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(self.sql("read item states"))?;
        let mut states = Vec::new();
        for row in rows {
            let (id, state) = row.map_err(self.sql("read item states"))?;
            let state = self.parse_state(&id, &state)?;
            states.push((id, state));
        }
        Ok(states)
    }

    /// Items whose last attempt failed, sorted by id, with their last error (for QA and status).
    pub fn failures(&self) -> Result<Vec<Failure>, JournalError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, attempts, COALESCE(error_class, ''), COALESCE(message, '')
                 FROM items WHERE state = 'failed' ORDER BY id",
            )
            .map_err(self.sql("read failures"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .map_err(self.sql("read failures"))?;
        let mut failures = Vec::new();
        for row in rows {
            let (id, attempts, error_class, message) = row.map_err(self.sql("read failures"))?;
            let attempts = u32::try_from(attempts).map_err(|_| {
                self.corrupt(
                    &format!("attempts of item {id}"),
                    format!("{attempts} out of range"),
                )
            })?;
            failures.push(Failure {
                id,
                attempts,
                error_class,
                message,
            });
        }
        Ok(failures)
    }

    /// Items left in flight by a crash are reset to pending on open of a new run.
    ///
    /// Returns how many were reset. Call it once, before the new run marks anything in flight.
    pub fn reset_in_flight(&self) -> Result<u64, JournalError> {
        self.writable("reset in flight")?;
        let conn = self.lock();
        let changed = conn
            .execute(
                &format!(
                    "UPDATE items SET state = 'pending', updated_at = {NOW}
                     WHERE state = 'in_flight'"
                ),
                [],
            )
            .map_err(self.sql("reset in flight"))?;
        Ok(changed as u64)
    }

    fn commit_shard_locked(
        &self,
        conn: &mut Connection,
        commit: &ShardCommit,
        rows: i64,
        bytes: i64,
    ) -> Result<(), JournalError> {
        let op = "commit shard";
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.sql(op))?;
        let exists: Option<i64> = tx
            .prepare_cached("SELECT seq FROM shards WHERE file_name = ?1")
            .and_then(|mut stmt| {
                stmt.query_row(params![commit.file_name], |row| row.get(0))
                    .optional()
            })
            .map_err(self.sql(op))?;
        if exists.is_some() {
            return Err(JournalError::DuplicateShard {
                path: self.path.clone(),
                file_name: commit.file_name.clone(),
            });
        }
        tx.prepare_cached(&format!(
            "INSERT INTO shards(file_name, kind, rows, bytes, blake3, committed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, {NOW})"
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![
                commit.file_name,
                commit.kind,
                rows,
                bytes,
                commit.blake3
            ])
        })
        .map_err(self.sql(op))?;
        let seq = tx.last_insert_rowid();
        {
            // Attempts and the last error are kept: QA reports items that needed retries.
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO items(id, state, shard_seq, updated_at)
                     VALUES (?1, ?2, ?3, {NOW})
                     ON CONFLICT(id) DO UPDATE SET state = excluded.state,
                        shard_seq = excluded.shard_seq,
                        updated_at = excluded.updated_at
                     WHERE items.shard_seq IS NULL"
                ))
                .map_err(self.sql(op))?;
            for (id, state) in &commit.items {
                let changed = stmt
                    .execute(params![id.as_str(), state.as_str(), seq])
                    .map_err(self.sql(op))?;
                if changed == 0 {
                    return Err(self.already_committed(&tx, id.as_str()));
                }
            }
        }
        tx.commit().map_err(self.sql(op))
    }

    /// Checks a commit on its own; returns rows and bytes as SQLite integers.
    fn validate_commit(&self, commit: &ShardCommit) -> Result<(i64, i64), JournalError> {
        let invalid = |reason: String| JournalError::InvalidCommit {
            path: self.path.clone(),
            file_name: commit.file_name.clone(),
            reason,
        };
        if commit.file_name.is_empty() {
            return Err(invalid("empty file name".into()));
        }
        let expected = match commit.kind.as_str() {
            "accepted" => ItemState::Accepted,
            "rejected" => ItemState::Rejected,
            other => {
                return Err(invalid(format!(
                    "kind {other:?} is neither \"accepted\" nor \"rejected\""
                )));
            }
        };
        let rows = i64::try_from(commit.rows)
            .map_err(|_| invalid(format!("rows {} too large", commit.rows)))?;
        let bytes = i64::try_from(commit.bytes)
            .map_err(|_| invalid(format!("bytes {} too large", commit.bytes)))?;
        if commit.rows != commit.items.len() as u64 {
            return Err(invalid(format!(
                "rows is {} but {} items are listed",
                commit.rows,
                commit.items.len()
            )));
        }
        let mut seen = HashSet::with_capacity(commit.items.len());
        for (id, state) in &commit.items {
            if *state != expected {
                return Err(invalid(format!(
                    "item {id} is {} in a {} shard",
                    state.as_str(),
                    commit.kind
                )));
            }
            if !seen.insert(id.as_str()) {
                return Err(invalid(format!("item {id} is listed twice")));
            }
        }
        Ok((rows, bytes))
    }

    /// Builds [`JournalError::AlreadyCommitted`] for `id`, naming the shard that holds it.
    fn already_committed(&self, conn: &Connection, id: &str) -> JournalError {
        let shard = conn
            .query_row(
                "SELECT shards.file_name FROM items JOIN shards ON shards.seq = items.shard_seq
                 WHERE items.id = ?1",
                params![id],
                |row| row.get::<_, String>(0),
            )
            .unwrap_or_else(|e| format!("<unknown: {e}>"));
        JournalError::AlreadyCommitted {
            path: self.path.clone(),
            id: id.to_string(),
            shard,
        }
    }

    fn parse_state(&self, id: &str, state: &str) -> Result<ItemState, JournalError> {
        ItemState::parse(state)
            .ok_or_else(|| self.corrupt(&format!("item {id}"), format!("unknown state {state}")))
    }

    /// The connection; a panic elsewhere while holding it cannot leave a transaction open
    /// (rusqlite rolls back on drop), so a poisoned lock is still safe to use.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writable(&self, op: &'static str) -> Result<(), JournalError> {
        if self.read_only {
            Err(JournalError::ReadOnly {
                path: self.path.clone(),
                op,
            })
        } else {
            Ok(())
        }
    }

    fn sql(&self, op: &'static str) -> impl FnOnce(rusqlite::Error) -> JournalError + '_ {
        move |source| JournalError::Sqlite {
            path: self.path.clone(),
            op,
            source,
        }
    }

    fn corrupt(&self, what: &str, reason: impl Into<String>) -> JournalError {
        JournalError::Corrupt {
            path: self.path.clone(),
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}

/// SQL for the current UTC time, RFC 3339 with milliseconds.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

#[cfg(test)]
mod tests;
