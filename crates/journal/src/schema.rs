//! The journal's SQL schema, its version, and the checks done when a file is opened.

use crate::JournalError;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use std::path::Path;
use std::time::Duration;

/// Schema version stored in `PRAGMA user_version`; bumped (with a migration) on any change.
pub const SCHEMA_VERSION: i64 = 1;

/// `PRAGMA application_id` of a journal (`RTJN`), so another SQLite file is not mistaken for one.
pub const APPLICATION_ID: i64 = 0x5254_4A4E;

/// Page cache of a writer, in KiB (negative `cache_size` means KiB in SQLite).
const CACHE_KIB: i64 = -32_768;

/// Version 1. `items.shard_seq` is set exactly for done items; the CHECK keeps the two in step.
const SCHEMA_V1: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE shards (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    file_name    TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL CHECK (kind IN ('accepted', 'rejected')),
    rows         INTEGER NOT NULL CHECK (rows >= 0),
    bytes        INTEGER NOT NULL CHECK (bytes >= 0),
    blake3       TEXT NOT NULL,
    committed_at TEXT NOT NULL
);

CREATE TABLE items (
    id          TEXT PRIMARY KEY,
    state       TEXT NOT NULL
                CHECK (state IN ('pending', 'in_flight', 'accepted', 'rejected', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error_class TEXT,
    message     TEXT,
    shard_seq   INTEGER REFERENCES shards(seq),
    updated_at  TEXT NOT NULL,
    CHECK ((state IN ('accepted', 'rejected')) = (shard_seq IS NOT NULL))
) WITHOUT ROWID;

CREATE INDEX items_by_shard ON items(shard_seq) WHERE shard_seq IS NOT NULL;
";

/// Reads `(application_id, user_version)`; a file that is not SQLite is reported as such.
fn header(conn: &Connection, path: &Path) -> Result<(i64, i64), JournalError> {
    let read = |name: &str| conn.pragma_query_value(None, name, |row| row.get::<_, i64>(0));
    match read("application_id").and_then(|app| Ok((app, read("user_version")?))) {
        Ok(header) => Ok(header),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
            Err(JournalError::NotAJournal {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
        Err(source) => Err(JournalError::Sqlite {
            path: path.to_path_buf(),
            op: "read header",
            source,
        }),
    }
}

/// Rejects files that are not journals or come from a newer build.
fn check_header(path: &Path, app: i64, version: i64) -> Result<(), JournalError> {
    if app != APPLICATION_ID {
        return Err(JournalError::NotAJournal {
            path: path.to_path_buf(),
            reason: format!("application_id is {app:#x}, expected {APPLICATION_ID:#x}"),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(JournalError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        return Err(JournalError::NotAJournal {
            path: path.to_path_buf(),
            reason: format!("schema version {version}"),
        });
    }
    Ok(())
}

/// Sets up a read-write connection: WAL, NORMAL sync, foreign keys, schema created or checked.
pub(crate) fn prepare_writer(
    conn: &mut Connection,
    path: &Path,
    busy: Duration,
) -> Result<(), JournalError> {
    let sql = |op: &'static str| {
        move |source| JournalError::Sqlite {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    conn.busy_timeout(busy).map_err(sql("set busy timeout"))?;
    let (app, version) = header(conn, path)?;
    if app == 0 && version == 0 {
        create(conn, path)?;
    } else {
        check_header(path, app, version)?;
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sql("enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(JournalError::WalUnavailable {
            path: path.to_path_buf(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql("set synchronous"))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sql("enable foreign keys"))?;
    // Ids are hashes, so inserts land on random pages: a larger page cache than the 2 MB
    // default keeps the item tree resident at dataset scale (~1.4 M items, ~180 MB file).
    conn.pragma_update(None, "cache_size", CACHE_KIB)
        .map_err(sql("set cache size"))?;
    Ok(())
}

/// Creates the schema in a fresh file. The header is re-read inside the write transaction so
/// two processes creating the same journal at once do not both create it.
fn create(conn: &mut Connection, path: &Path) -> Result<(), JournalError> {
    let sql = |source| JournalError::Sqlite {
        path: path.to_path_buf(),
        op: "create schema",
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let (app, version) = header(&tx, path)?;
    if app != 0 || version != 0 {
        drop(tx);
        return check_header(path, app, version);
    }
    let tables: i64 = tx
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))
        .map_err(sql)?;
    if tables > 0 {
        return Err(JournalError::NotAJournal {
            path: path.to_path_buf(),
            reason: format!("an unversioned SQLite database with {tables} schema objects"),
        });
    }
    tx.execute_batch(SCHEMA_V1).map_err(sql)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sql)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sql)?;
    tx.commit().map_err(sql)
}

/// Sets up a read-only connection and checks it holds a journal this build understands.
pub(crate) fn prepare_reader(
    conn: &Connection,
    path: &Path,
    busy: Duration,
) -> Result<(), JournalError> {
    let sql = |op: &'static str| {
        move |source| JournalError::Sqlite {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    conn.busy_timeout(busy).map_err(sql("set busy timeout"))?;
    conn.pragma_update(None, "query_only", "ON")
        .map_err(sql("set query_only"))?;
    let (app, version) = header(conn, path)?;
    check_header(path, app, version)
}
