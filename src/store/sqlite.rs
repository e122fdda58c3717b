//! The embedded store: one SQLite database (WAL) under `FLUXTRAIL_DATA_DIR`.
//!
//! Why SQLite: it is crash-safe by construction (a transaction committed and synced survives
//! power loss), needs nothing installed (bundled), and its transactions give the
//! one-partition atomic batch Table Storage offers. Entities live in one table with a
//! unique (table, pk, rk), mirroring Table Storage's model exactly (see `create_schema` for
//! why it is a rowid table) — except the audit index's, which live in a clustered table of
//! the same shape (`create_audit`).
//!
//! Writes go through one writer thread with **group commit**: it takes every write waiting in
//! its queue, applies them (a failed insert or stale etag rolls back that write alone: the
//! group is then applied again with a SAVEPOINT per write, see `commit_group`) and commits
//! them together. A sync thread fsyncs the WAL for every group committed meanwhile and then
//! answers each write (`syncer_loop`): nothing is answered before its commit is on disk,
//! under load one fsync serves many requests, and the writer never waits for the disk. The
//! queue is bounded: when it is full a write fails at once as `Unavailable` (503 +
//! `Retry-After`) instead of piling up memory.
//!
//! Reads use their own connections (WAL lets readers run beside the writer), each owned by
//! a reader thread that runs whatever reads are queued in one read transaction
//! (`reader_loop`); the queue is bounded like the writer's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use serde_json::Value;

use super::{BatchOp, Entity, Etag, Row, Store, StoreError, Table};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Tells the checkpoint thread to end when the store goes away.
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Reads waiting for a reader thread.
    reads: std::sync::mpsc::SyncSender<ReadJob>,
    writer: std::sync::mpsc::SyncSender<Job>,
    /// Why the last write failed (disk full, read-only, I/O error); cleared by the next
    /// write that succeeds. `ping` reports it, so health turns 503 while writes fail.
    write_error: Arc<Mutex<Option<String>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The WAL size past which the checkpointer makes the writer restart it (RESTART).
const WAL_LIMIT: u64 = 64 * 1024 * 1024;
/// SQLite's default page size (one WAL frame per page).
const PAGE: i64 = 4096;

/// How many writes may wait for the writer before new ones are refused (backpressure).
const WRITE_QUEUE: usize = 4096;
/// The most writes one commit carries.
const GROUP: usize = 512;

/// One write: the operations of one `Store` call, atomic together.
struct Job {
    /// One or more partitions' operations, atomic together.
    parts: Vec<(Table, String, Vec<Prepared>)>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<Etag>>, StoreError>>,
}

/// A write operation with its properties already encoded, so the writer thread — the one
/// serial part — only executes statements.
enum Prepared {
    Insert {
        rk: String,
        props: String,
    },
    Upsert {
        rk: String,
        props: String,
    },
    Update {
        rk: String,
        props: String,
        etag: Etag,
    },
    Delete {
        rk: String,
        etag: Option<Etag>,
    },
}

impl Prepared {
    fn from_op(op: BatchOp, pk: &str) -> Result<Self, StoreError> {
        let check = |row: Row| {
            let (row_pk, rk, props) = row.into_parts();
            if row_pk == pk {
                Ok((rk, props))
            } else {
                Err(StoreError::Corrupt(format!(
                    "a batch spans one partition only ({row_pk})"
                )))
            }
        };
        Ok(match op {
            BatchOp::Insert(row) => {
                let (rk, props) = check(row)?;
                Prepared::Insert { rk, props }
            }
            BatchOp::Upsert(row) => {
                let (rk, props) = check(row)?;
                Prepared::Upsert { rk, props }
            }
            BatchOp::Update(row, etag) => {
                let (rk, props) = check(row)?;
                Prepared::Update { rk, props, etag }
            }
            BatchOp::Delete { rk, etag } => Prepared::Delete { rk, etag },
        })
    }
}

/// Etags are `<epoch>-<counter>`: the epoch is new each time the store is opened, so an etag
/// read by an earlier process can never match a row written since, even after a delete and
/// re-insert of the same key, and no extra write per operation keeps a counter.
#[derive(Debug)]
struct EtagSource {
    epoch: String,
    counter: AtomicU64,
}

impl EtagSource {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        EtagSource {
            epoch: format!("{nanos:x}.{:x}", std::process::id()),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> Etag {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        Etag(format!("{}-{n}", self.epoch))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `ledger.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("ledger.db");
        let mut writer = Connection::open(&path).map_err(map_err)?;
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA wal_autocheckpoint = 0;",
            )
            .map_err(map_err)?;
        create_schema(&mut writer)?;
        // What an earlier run or a migration left in the WAL goes into the database now,
        // before any reader: a reader consults every frame of the WAL it starts on.
        writer
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(map_err)?;
        writer.busy_handler(Some(wait_5s)).map_err(map_err)?;
        let (reads, queued) = std::sync::mpsc::sync_channel::<ReadJob>(READ_QUEUE);
        let queued = Arc::new(Mutex::new(queued));
        for i in 0..READERS {
            let r = Connection::open(&path).map_err(map_err)?;
            r.busy_handler(Some(wait_5s)).map_err(map_err)?;
            // A reader's page cache is dropped whenever a commit changed the WAL since its
            // last read transaction — under load, before nearly every one — so a big one only
            // holds memory: 512 KiB, not SQLite's 2 MiB.
            r.execute_batch("PRAGMA cache_size = -512;")
                .map_err(map_err)?;
            let queued = queued.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || reader_loop(r, &queued))
                .map_err(|e| StoreError::Unavailable(format!("cannot start a reader: {e}")))?;
        }
        // Checkpoints copy the WAL into the database and fsync it: done here, off the writer
        // thread (PASSIVE never blocks it), instead of inside whichever commit crosses the
        // auto-checkpoint threshold — that commit's requests used to wait for it.
        let checkpointer = Connection::open(&path).map_err(map_err)?;
        checkpointer
            .busy_handler(Some(wait_checkpoint))
            .map_err(map_err)?;
        // It copies frames, it does not read through its cache.
        checkpointer
            .execute_batch("PRAGMA cache_size = -128;")
            .map_err(map_err)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    // PASSIVE never blocks the writer, but under constant reads the WAL is
                    // never restarted and grows without end. Past WAL_LIMIT, RESTART waits
                    // for a quiet moment (briefly holding writes) so that the writer's next
                    // commit starts the WAL from its beginning: the file stops growing.
                    // TRUNCATE (before) also cut the file under the writer lock and reset the
                    // WAL itself, so the writer dropped its page cache: p99 at full speed
                    // 90-130 ms with it, 15-43 ms with RESTART.
                    let frames =
                        checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            r.get::<_, i64>(1)
                        });
                    let result = match frames {
                        Ok(frames) if frames.saturating_mul(PAGE) > WAL_LIMIT as i64 => {
                            // (busy, frames, copied): busy = 1 when it gave up waiting.
                            let outcome =
                                checkpointer.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                                    r.get::<_, i64>(0)
                                });
                            let wait = if matches!(outcome, Ok(0)) {
                                CHECKPOINT_WAIT_MIN
                            } else {
                                (CHECKPOINT_WAIT.load(Ordering::Relaxed) * 2)
                                    .min(CHECKPOINT_WAIT_MAX)
                            };
                            CHECKPOINT_WAIT.store(wait, Ordering::Relaxed);
                            outcome.map(|_| ()).map_err(|e| ("RESTART", e))
                        }
                        Ok(_) => Ok(()),
                        Err(e) => Err(("PASSIVE", e)),
                    };
                    if let Err((mode, e)) = result {
                        // Disk full, I/O error: the next round retries.
                        tracing::warn!(error = %e, mode, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the checkpointer: {e}")))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(WRITE_QUEUE);
        let write_error = Arc::new(Mutex::new(None));
        let (synced, to_sync) = std::sync::mpsc::sync_channel::<Committed>(SYNC_QUEUE);
        let last_error = write_error.clone();
        let wal_path = dir.join("ledger.db-wal");
        std::thread::Builder::new()
            .name("sqlite-sync".into())
            .spawn(move || syncer_loop(&wal_path, to_sync, &last_error))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the syncer: {e}")))?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, synced))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                stop,
                reads,
                writer: tx,
                write_error,
            }),
        })
    }

    /// Queues a read for the reader threads and waits for its answer.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = reply.send(f(conn));
        });
        self.inner
            .reads
            .try_send(job)
            .map_err(|e| refused(e, "read queue is full", "readers stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("a store read failed".into()))?
    }

    /// The entities of several partitions whose row keys start with `prefix` — one key range
    /// each, read in one statement (an object's outbox, not its whole history) — optionally
    /// only those whose string property equals a value; results in the order of `pks`.
    async fn partitions(
        &self,
        table: Table,
        pks: &[String],
        rk_prefix: Option<&str>,
        filter: Option<(&str, &str)>,
    ) -> Result<Vec<Vec<Entity>>, StoreError> {
        let prefix = rk_prefix.unwrap_or("");
        let range = Range::Prefix(prefix.to_string(), super::prefix_end(prefix));
        self.ranges(table, pks, range, filter).await
    }

    /// `partitions` over a key range `[from, end)` each, or a prefix: a prefix without a
    /// range end is checked row by row.
    async fn ranges(
        &self,
        table: Table,
        pks: &[String],
        range: Range,
        filter: Option<(&str, &str)>,
    ) -> Result<Vec<Vec<Entity>>, StoreError> {
        use rusqlite::types::Value as Sql;
        if pks.is_empty() {
            return Ok(vec![]);
        }
        let pks = pks.to_vec();
        let (prefix, end) = match range {
            Range::Prefix(prefix, end) => (prefix, end),
            Range::Keys(from, to) => (from, Some(to)),
        };
        let filter = filter.map(|(prop, value)| (prop_path(prop), value.to_string()));
        self.read(move |conn| {
            let single = pks.len() == 1;
            let mut sql = format!(
                "SELECT pk, rk, etag, props FROM {} WHERE tbl = ?1",
                relation(table)
            );
            sql.push_str(if single {
                " AND pk = ?2"
            } else {
                // json_each turns the list into a table: one statement, whatever the count.
                " AND pk IN (SELECT value FROM json_each(?2))"
            });
            sql.push_str(if end.is_some() {
                " AND rk >= ?3 AND rk < ?4"
            } else {
                " AND rk >= ?3 AND substr(rk, 1, length(?3)) = ?3"
            });
            if filter.is_some() {
                sql.push_str(" AND json_extract(props, ?5) = ?6");
            }
            sql.push_str(if single {
                " ORDER BY rk"
            } else {
                " ORDER BY pk, rk"
            });
            let keys = if single {
                pks[0].clone()
            } else {
                Value::Array(pks.iter().cloned().map(Value::String).collect()).to_string()
            };
            let mut params = vec![
                Sql::Text(table.name().to_string()),
                Sql::Text(keys),
                Sql::Text(prefix),
            ];
            if end.is_some() || filter.is_some() {
                params.push(end.map_or(Sql::Null, Sql::Text));
            }
            if let Some((path, value)) = filter {
                params.push(Sql::Text(path));
                params.push(Sql::Text(value));
            }
            let mut stmt = conn.prepare_cached(&sql).map_err(map_err)?;
            let rows = entities(&mut stmt, rusqlite::params_from_iter(params))?;
            if single {
                return Ok(vec![rows]);
            }
            let mut by_pk: HashMap<String, Vec<Entity>> = HashMap::new();
            for e in rows {
                by_pk.entry(e.pk.clone()).or_default().push(e);
            }
            Ok(pks
                .iter()
                .map(|pk| by_pk.remove(pk).unwrap_or_default())
                .collect())
        })
        .await
    }

    /// One partition's rows with keys in `[from, to)`, at most `limit`, in key order: `text`
    /// (the range bound as `?1`…`?5`) run by `rows`, which reads what it selects.
    async fn range<T, F>(
        &self,
        table: Table,
        pk: &str,
        (from, to): (&str, &str),
        limit: usize,
        text: &'static str,
        rows: F,
    ) -> Result<Vec<T>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(
                &mut rusqlite::CachedStatement<'_>,
                &[&dyn rusqlite::ToSql],
            ) -> Result<Vec<T>, StoreError>
            + Send
            + 'static,
    {
        let (pk, from, to) = (pk.to_string(), from.to_string(), to.to_string());
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql(table, text)).map_err(map_err)?;
            rows(&mut stmt, params![table.name(), pk, from, to, limit])
        })
        .await
    }

    /// Queues a write for the writer and waits for its commit.
    async fn write(
        &self,
        parts: Vec<(Table, String, Vec<BatchOp>)>,
    ) -> Result<Vec<Vec<Etag>>, StoreError> {
        // Debug builds (every test run) refuse what Table Storage would refuse, so a row that
        // only fits here fails a test instead of failing on Azure.
        #[cfg(debug_assertions)]
        for (table, pk, ops) in &parts {
            let mut sizes = Vec::with_capacity(ops.len());
            for op in ops {
                sizes.push(match op {
                    BatchOp::Insert(r) | BatchOp::Upsert(r) | BatchOp::Update(r, _) => {
                        super::tables::check_row(r)?
                    }
                    BatchOp::Delete { .. } => 0,
                });
            }
            super::limits::check_batch(&sizes)
                .and_then(|()| super::limits::check_distinct(ops.iter().map(BatchOp::rk)))
                .map_err(|e| StoreError::TooLarge(format!("{}/{pk}: {e}", table.name())))?;
        }
        let parts = parts
            .into_iter()
            .map(|(table, pk, ops)| {
                let ops = ops
                    .into_iter()
                    .map(|op| Prepared::from_op(op, &pk))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((table, pk, ops))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner
            .writer
            .try_send(Job { parts, reply })
            .map_err(|e| refused(e, "write queue is full", "writer stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer stopped".into()))?
    }

    async fn write_one(
        &self,
        table: Table,
        pk: String,
        ops: Vec<BatchOp>,
    ) -> Result<Vec<Etag>, StoreError> {
        Ok(self.write(vec![(table, pk, ops)]).await?.remove(0))
    }
}

/// Which row keys `SqliteStore::ranges` reads in each partition: those starting with a prefix
/// (with the first key past them, if there is one), or those in `[from, to)`.
enum Range {
    Prefix(String, Option<String>),
    Keys(String, String),
}

/// The one table, and the move from the first layout.
///
/// A rowid table with a unique index on the key, not a `WITHOUT ROWID` table keyed by it: a
/// `WITHOUT ROWID` table is an index b-tree, whose cells keep at most ~1,000 bytes on a 4 KiB
/// page — an object's state (~2.4 KB, rewritten by every event) lived in an overflow page, so
/// each update also freed and allocated one (freelist and header pages dirtied, the old page
/// read back to free it): ~4.4 pages written and ~4 read per Flux event. In a rowid table a
/// row up to ~4,000 bytes stays on its leaf, and new rows (history, commits) append at the
/// end of the table instead of landing in random leaves.
fn create_schema(conn: &mut Connection) -> Result<(), StoreError> {
    const CREATE: &str = "CREATE TABLE IF NOT EXISTS entities (
             tbl TEXT NOT NULL,
             pk TEXT NOT NULL,
             rk TEXT NOT NULL,
             etag TEXT NOT NULL,
             props TEXT NOT NULL,
             UNIQUE (tbl, pk, rk)
         );";
    let tx = conn.transaction().map_err(map_err)?;
    let old: Option<String> = tx
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'entities'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(map_err)?;
    if old.is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID")) {
        tx.execute_batch(&format!(
            "ALTER TABLE entities RENAME TO entities_without_rowid;
             {CREATE}
             INSERT INTO entities (tbl, pk, rk, etag, props)
                 SELECT tbl, pk, rk, etag, props FROM entities_without_rowid;
             DROP TABLE entities_without_rowid;"
        ))
        .map_err(map_err)?;
    } else {
        tx.execute_batch(CREATE).map_err(map_err)?;
    }
    create_audit(&tx)?;
    create_commits(&tx)?;
    tx.commit().map_err(map_err)
}

/// The commits' partitions (part 13) in a `WITHOUT ROWID` table, like the audit index: a
/// commit's partition — its commit and approval rows and one target row per (cluster,
/// object), ~430 bytes each, thousands on a big fleet — is read whole by its evidence and
/// the UI's matrix, which in a clustered table are consecutive leaf pages, where in
/// `entities` every row was a random page of the rowid table behind the index (the matrix's
/// 50 commits × 2,000 target rows were 100,000 page reads). Target rows are rewritten only
/// when their commit's state on the object changes, not by every event (the state row that
/// is, and that outgrew a clustered table's cell, stays in `entities`).
///
/// Stores written before keep their commits' rows in `entities`: they are moved here once.
fn create_commits(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    if create_clustered(tx, Table::Commits)? {
        tx.execute_batch(
            "INSERT OR REPLACE INTO commit_rows (tbl, pk, rk, etag, props)
                 SELECT tbl, pk, rk, etag, props FROM entities WHERE tbl = 'commits'
                 ORDER BY tbl, pk, rk;
             DELETE FROM entities WHERE tbl = 'commits';",
        )
        .map_err(map_err)?;
    }
    Ok(())
}

/// Creates the clustered relation of `table` (`relation`) if absent; true when `entities`
/// still holds rows of that table (a store of an earlier layout: they are to be moved).
fn create_clustered(tx: &rusqlite::Transaction<'_>, table: Table) -> Result<bool, StoreError> {
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {} (
             tbl TEXT NOT NULL,
             pk TEXT NOT NULL,
             rk TEXT NOT NULL,
             etag TEXT NOT NULL,
             props TEXT NOT NULL,
             PRIMARY KEY (tbl, pk, rk)
         ) WITHOUT ROWID;",
        relation(table)
    ))
    .map_err(map_err)?;
    tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM entities WHERE tbl = ?1)",
        [table.name()],
        |r| r.get(0),
    )
    .map_err(map_err)
}

/// The audit index (part 10) in a `WITHOUT ROWID` table: its rows are small (~300 bytes, far
/// under the ~1,000-byte cell limit that made the state rows a bad fit) and are read as long
/// key ranges — a cluster's changes over 90 days, the fleet's export — which in a clustered
/// table are consecutive leaf pages, where in `entities` every row is a random page of the
/// rowid table behind the index (the export ran at 56,000 rows/s, page copies in the
/// kernel). One b-tree per row instead of two also halves the index's cost to ingest.
///
/// Stores written by the first part-10 build kept audit rows in `entities`, with a second,
/// per-month copy of every change row for the fleet: they are moved here, the month copies
/// dropped (the fleet is now read as a merge of the clusters' partitions) and every cluster
/// with change rows entered in the registry that merge reads.
fn create_audit(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    if create_clustered(tx, Table::Audit)? {
        tx.execute_batch(
            "INSERT OR REPLACE INTO audit_rows (tbl, pk, rk, etag, props)
                 SELECT tbl, pk, rk, etag, props FROM entities
                 WHERE tbl = 'audit' AND pk NOT LIKE 'month|%';
             INSERT OR IGNORE INTO audit_rows (tbl, pk, rk, etag, props)
                 SELECT 'audit', 'clusters', substr(pk, 9), 'moved',
                        json_object('cluster', substr(pk, 9))
                 FROM (SELECT DISTINCT pk FROM audit_rows
                       WHERE tbl = 'audit' AND pk >= 'cluster|' AND pk < 'cluster}');
             DELETE FROM entities WHERE tbl = 'audit';",
        )
        .map_err(map_err)?;
    }
    Ok(())
}

/// The relation a table's rows live in: the audit index and the commits' partitions in
/// their own clustered tables (see `create_audit`, `create_commits`), everything else in
/// `entities`.
fn relation(table: Table) -> &'static str {
    match table {
        Table::Audit => "audit_rows",
        Table::Commits => "commit_rows",
        _ => "entities",
    }
}

/// A statement written against `entities`, for the relation holding `table`'s rows.
fn sql(table: Table, text: &'static str) -> Cow<'static, str> {
    match relation(table) {
        "entities" => Cow::Borrowed(text),
        other => Cow::Owned(text.replace("entities", other)),
    }
}

/// Why a bounded queue refused a job: full (backpressure: 503 + `Retry-After`) or its thread
/// is gone.
fn refused<T>(e: std::sync::mpsc::TrySendError<T>, full: &str, gone: &str) -> StoreError {
    let why = match e {
        std::sync::mpsc::TrySendError::Full(_) => full,
        std::sync::mpsc::TrySendError::Disconnected(_) => gone,
    };
    StoreError::Unavailable(format!("the store's {why}"))
}

/// One read: a closure run on a reader's connection (it sends its own answer).
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;
/// Reader threads, each with its own connection.
const READERS: usize = 2;
/// How many reads may wait before new ones are refused (backpressure, like writes).
const READ_QUEUE: usize = 4096;
/// The most reads one read transaction carries.
const READ_GROUP: usize = 64;

/// A reader thread: takes every read waiting (up to `READ_GROUP`) and runs them in one read
/// transaction. Under load that is one check of the WAL (and, since a commit changed it, one
/// rebuild of the page cache: root and inner pages read once, not once per read) and one
/// wake-up for many reads, where a blocking-pool task per read paid both every time. The
/// snapshot is taken by the first read, after every read of the group was queued, so no
/// read sees an older ledger than when it was asked.
fn reader_loop(conn: Connection, queued: &Mutex<std::sync::mpsc::Receiver<ReadJob>>) {
    loop {
        let group = {
            let Ok(rx) = queued.lock() else { return };
            let Ok(first) = rx.recv() else { return };
            let mut group = vec![first];
            while group.len() < READ_GROUP {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            group
        };
        let grouped = group.len() > 1 && conn.execute_batch("BEGIN").is_ok();
        for job in group {
            // A panicking read drops its reply (the caller gets an error); the thread stays.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn)));
        }
        if grouped {
            let _ = conn.execute_batch("COMMIT");
        }
    }
}

/// Busy handlers that retry every 250 µs. SQLite's own `busy_timeout` sleeps in growing steps
/// (up to 100 ms each): when the checkpointer briefly holds the WAL for a RESTART, the writer
/// used to sleep far past the moment it was free, and every request of that group waited.
fn wait_5s(attempt: i32) -> bool {
    busy_wait(attempt, 20_000)
}

/// How long (in 250 µs steps) a RESTART may wait. It holds the writer lock while it waits —
/// for the writer's current group, and for readers still on the old WAL, such as a long scan —
/// so every write waits with it: it starts at 25 ms and, each time it gives up, doubles for the
/// next attempt (500 ms later), up to 2 s, so the WAL is still restarted under constant load.
static CHECKPOINT_WAIT: std::sync::atomic::AtomicI32 =
    std::sync::atomic::AtomicI32::new(CHECKPOINT_WAIT_MIN);
const CHECKPOINT_WAIT_MIN: i32 = 100;
const CHECKPOINT_WAIT_MAX: i32 = 8_000;

fn wait_checkpoint(attempt: i32) -> bool {
    busy_wait(attempt, CHECKPOINT_WAIT.load(Ordering::Relaxed))
}

fn busy_wait(attempt: i32, max: i32) -> bool {
    if attempt >= max {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_micros(250));
    true
}

/// The writer thread: group commit (see the module note).
fn writer_loop(
    mut conn: Connection,
    rx: std::sync::mpsc::Receiver<Job>,
    synced: std::sync::mpsc::SyncSender<Committed>,
) {
    let etags = EtagSource::new();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let outcome = commit_group(&mut conn, &etags, &jobs);
        let failure = match &outcome {
            Err(e) => Some(e.to_string()),
            Ok(results) => results.iter().find_map(|r| match r {
                Err(StoreError::Unavailable(e)) => Some(e.clone()),
                _ => None,
            }),
        };
        let answers = match outcome {
            Ok(results) => jobs.into_iter().zip(results).collect(),
            Err(e) => jobs
                .into_iter()
                .map(|job| (job, Err(StoreError::Unavailable(e.to_string()))))
                .collect(),
        };
        // Answered once the WAL holding this commit is on disk (`syncer_loop`). A full
        // queue holds the writer back: commits never run far ahead of their fsync.
        if synced.send((answers, failure)).is_err() {
            return;
        }
    }
}

/// A committed group's answers, waiting for the fsync that makes it durable, and why its
/// commit failed, if it did.
type Committed = (Vec<(Job, JobResult)>, Option<String>);
/// How many committed groups may wait for their fsync.
const SYNC_QUEUE: usize = 64;

/// Makes commits durable before they are answered. The writer commits without an fsync
/// (`synchronous = NORMAL`) and hands the group here; this thread fsyncs the WAL once for
/// every group committed meanwhile and then answers them. The writer applies the next group
/// while the disk syncs, instead of waiting for it: the one serial thread only does the
/// work that must be serial. An answer still means "on disk": the WAL is written in commit
/// order, so the fsync after a group's commit covers it and every group before it.
///
/// A group is visible to readers from its commit, a moment before its fsync: after a power
/// loss (not a crash of the process: the kernel keeps what was written) a read answered in
/// that moment may show a write that is then gone. That write was never acknowledged, so its
/// sender delivers it again.
fn syncer_loop(
    wal_path: &Path,
    rx: std::sync::mpsc::Receiver<Committed>,
    last_error: &Mutex<Option<String>>,
) {
    let mut wal: Option<std::fs::File> = None;
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        while let Ok(more) = rx.try_recv() {
            groups.push(more);
        }
        let failure = groups.last().and_then(|(_, f)| f.clone());
        let synced = match &wal {
            Some(f) => f.sync_data(),
            // The WAL exists from the first commit on (and SQLite keeps it while the store
            // is open, restarting it in place): opened once, on the first group.
            None => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(wal_path)
                .and_then(|f| {
                    f.sync_data()?;
                    Ok(f)
                })
                .map(|f| wal = Some(f)),
        };
        if let Err(e) = &synced {
            tracing::error!(error = %e, "the WAL could not be synced");
        }
        if let Ok(mut last) = last_error.lock() {
            *last = match &synced {
                Err(e) => Some(format!("cannot sync the WAL: {e}")),
                Ok(()) => failure,
            };
        }
        for (job, result) in groups.into_iter().flat_map(|(answers, _)| answers) {
            let result = match (&synced, result) {
                // Committed but maybe not on disk: the sender retries (writes are idempotent).
                (Err(e), Ok(_)) => Err(StoreError::Unavailable(format!(
                    "the commit could not be synced: {e}"
                ))),
                (_, r) => r,
            };
            let _ = job.reply.send(result);
        }
    }
}

type JobResult = Result<Vec<Vec<Etag>>, StoreError>;

/// Applies every job and commits once. First without savepoints: a savepoint copies every
/// page a job touches into the statement journal (for a push of 20 commits that was ~11% of
/// the writer's time), and jobs rarely fail. When one does, the transaction is rolled back
/// and the group applied again with a savepoint per job, so the failed job is rolled back
/// alone and the others stay.
fn commit_group(
    conn: &mut Connection,
    etags: &EtagSource,
    jobs: &[Job],
) -> Result<Vec<JobResult>, StoreError> {
    match commit_plain(conn, etags, jobs)? {
        Some(results) => Ok(results),
        None => commit_with_savepoints(conn, etags, jobs),
    }
}

fn apply_job(conn: &Connection, etags: &EtagSource, job: &Job) -> JobResult {
    let mut tags = Vec::with_capacity(job.parts.len());
    for (table, pk, ops) in &job.parts {
        let part = ops
            .iter()
            .map(|op| apply(conn, etags, *table, pk, op))
            .collect::<Result<Vec<_>, _>>()?;
        tags.push(part);
    }
    Ok(tags)
}

/// `None` when a job of several failed (everything was rolled back).
fn commit_plain(
    conn: &mut Connection,
    etags: &EtagSource,
    jobs: &[Job],
) -> Result<Option<Vec<JobResult>>, StoreError> {
    let tx = conn.transaction().map_err(map_err)?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        match apply_job(&tx, etags, job) {
            Ok(tags) => results.push(Ok(tags)),
            // Dropping the transaction rolls it back; a job alone needs no second pass.
            Err(e) if jobs.len() == 1 => return Ok(Some(vec![Err(e)])),
            Err(_) => return Ok(None),
        }
    }
    tx.commit().map_err(map_err)?;
    Ok(Some(results))
}

/// Every job in its own savepoint inside one transaction, then one commit.
fn commit_with_savepoints(
    conn: &mut Connection,
    etags: &EtagSource,
    jobs: &[Job],
) -> Result<Vec<JobResult>, StoreError> {
    let tx = conn.transaction().map_err(map_err)?;
    let mut results = Vec::with_capacity(jobs.len());
    // Savepoints from cached statements (rusqlite's `Savepoint` parses its SQL each time:
    // twice per job, on the one thread every write waits for).
    let run = |sql: &str| {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map_err(map_err)
    };
    for job in jobs {
        run("SAVEPOINT job")?;
        match apply_job(&tx, etags, job) {
            // Rolled back alone: the group's other jobs stay.
            Err(e) => {
                run("ROLLBACK TO job")?;
                run("RELEASE job")?;
                results.push(Err(e));
            }
            Ok(tags) => {
                run("RELEASE job")?;
                results.push(Ok(tags));
            }
        }
    }
    tx.commit().map_err(map_err)?;
    Ok(results)
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::Conflict,
        // Disk full, read-only, I/O errors, busy: the caller answers 503 and is retried.
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// The JSON path of a top-level property, for `json_extract` (quotes dropped: a name is data).
fn prop_path(prop: &str) -> String {
    format!("$.\"{}\"", prop.replace('"', ""))
}

fn decode(pk: String, rk: String, etag: String, props: &str) -> Result<Entity, StoreError> {
    match serde_json::from_str(props) {
        Ok(Value::Object(props)) => Ok(Entity {
            pk,
            rk,
            props,
            etag: Some(Etag(etag)),
        }),
        _ => Err(StoreError::Corrupt(format!(
            "{pk}/{rk}: properties are not a JSON object"
        ))),
    }
}

/// Executes one operation (cached statements; the checks are in the statements themselves:
/// the primary key for inserts, `WHERE etag = ?` for conditional writes).
fn apply(
    conn: &Connection,
    etags: &EtagSource,
    table: Table,
    pk: &str,
    op: &Prepared,
) -> Result<Etag, StoreError> {
    let t = table.name();
    match op {
        Prepared::Insert { rk, props } => {
            let tag = etags.next();
            conn.prepare_cached(&sql(
                table,
                "INSERT INTO entities (tbl, pk, rk, etag, props) VALUES (?1, ?2, ?3, ?4, ?5)",
            ))
            .and_then(|mut s| s.execute(params![t, pk, rk, tag.0, props]))
            .map_err(map_err)?;
            Ok(tag)
        }
        Prepared::Upsert { rk, props } => {
            let tag = etags.next();
            conn.prepare_cached(&sql(
                table,
                "INSERT INTO entities (tbl, pk, rk, etag, props) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tbl, pk, rk) DO UPDATE SET etag = excluded.etag, props = excluded.props",
            ))
            .and_then(|mut s| s.execute(params![t, pk, rk, tag.0, props]))
            .map_err(map_err)?;
            Ok(tag)
        }
        Prepared::Update { rk, props, etag } => {
            let tag = etags.next();
            let changed = conn
                .prepare_cached(&sql(
                    table,
                    "UPDATE entities SET etag = ?4, props = ?5
                     WHERE tbl = ?1 AND pk = ?2 AND rk = ?3 AND etag = ?6",
                ))
                .and_then(|mut s| s.execute(params![t, pk, rk, tag.0, props, etag.0]))
                .map_err(map_err)?;
            if changed == 1 {
                Ok(tag)
            } else {
                Err(StoreError::PreconditionFailed)
            }
        }
        Prepared::Delete { rk, etag } => {
            let changed = match etag {
                Some(e) => conn
                    .prepare_cached(&sql(
                        table,
                        "DELETE FROM entities WHERE tbl = ?1 AND pk = ?2 AND rk = ?3 AND etag = ?4",
                    ))
                    .and_then(|mut s| s.execute(params![t, pk, rk, e.0])),
                None => conn
                    .prepare_cached(&sql(
                        table,
                        "DELETE FROM entities WHERE tbl = ?1 AND pk = ?2 AND rk = ?3",
                    ))
                    .and_then(|mut s| s.execute(params![t, pk, rk])),
            }
            .map_err(map_err)?;
            if changed == 1 {
                Ok(Etag(String::new()))
            } else {
                Err(StoreError::PreconditionFailed)
            }
        }
    }
}

/// Runs a query selecting `pk, rk, etag, props` and decodes its rows.
fn entities(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<Entity>, StoreError> {
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })
        .map_err(map_err)?;
    rows.map(|row| {
        let (pk, rk, etag, p) = row.map_err(map_err)?;
        decode(pk, rk, etag, &p)
    })
    .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, table: Table, pk: &str, rk: &str) -> Result<Option<Entity>, StoreError> {
        let (pk, rk) = (pk.to_string(), rk.to_string());
        self.read(move |conn| {
            let row = conn
                .prepare_cached(&sql(
                    table,
                    "SELECT etag, props FROM entities WHERE tbl = ?1 AND pk = ?2 AND rk = ?3",
                ))
                .and_then(|mut stmt| {
                    stmt.query_row(params![table.name(), pk, rk], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })
                    .optional()
                })
                .map_err(map_err)?;
            row.map(|(etag, p)| decode(pk, rk, etag, &p)).transpose()
        })
        .await
    }

    async fn insert(&self, table: Table, row: Row) -> Result<Etag, StoreError> {
        let pk = row.pk.clone();
        let mut tags = self
            .write_one(table, pk, vec![BatchOp::Insert(row)])
            .await?;
        Ok(tags.remove(0))
    }

    async fn update(&self, table: Table, row: Row, etag: &Etag) -> Result<Etag, StoreError> {
        let pk = row.pk.clone();
        let mut tags = self
            .write_one(table, pk, vec![BatchOp::Update(row, etag.clone())])
            .await?;
        Ok(tags.remove(0))
    }

    async fn upsert(&self, table: Table, row: Row) -> Result<Etag, StoreError> {
        let pk = row.pk.clone();
        let mut tags = self
            .write_one(table, pk, vec![BatchOp::Upsert(row)])
            .await?;
        Ok(tags.remove(0))
    }

    async fn batch(
        &self,
        table: Table,
        pk: &str,
        ops: Vec<BatchOp>,
    ) -> Result<Vec<Etag>, StoreError> {
        self.write_one(table, pk.to_string(), ops).await
    }

    async fn batches(
        &self,
        writes: Vec<(Table, String, Vec<BatchOp>)>,
    ) -> Result<Vec<Vec<Etag>>, StoreError> {
        self.write(writes).await
    }

    fn atomic_batches(&self) -> bool {
        true
    }

    async fn query_partition(
        &self,
        table: Table,
        pk: &str,
        rk_prefix: Option<&str>,
    ) -> Result<Vec<Entity>, StoreError> {
        Ok(self
            .query_partitions(table, &[pk.to_string()], rk_prefix)
            .await?
            .pop()
            .unwrap_or_default())
    }

    async fn query_partitions(
        &self,
        table: Table,
        pks: &[String],
        rk_prefix: Option<&str>,
    ) -> Result<Vec<Vec<Entity>>, StoreError> {
        self.partitions(table, pks, rk_prefix, None).await
    }

    async fn query_partitions_range(
        &self,
        table: Table,
        pks: &[String],
        from: &str,
        to: &str,
    ) -> Result<Vec<Vec<Entity>>, StoreError> {
        let range = Range::Keys(from.to_string(), to.to_string());
        self.ranges(table, pks, range, None).await
    }

    async fn query_partitions_where(
        &self,
        table: Table,
        pks: &[String],
        rk_prefix: Option<&str>,
        filter: (&str, &str),
    ) -> Result<Vec<Vec<Entity>>, StoreError> {
        self.partitions(table, pks, rk_prefix, Some(filter)).await
    }

    async fn query_before(
        &self,
        table: Table,
        (prop, value): (&str, &str),
        time_prop: &str,
        before: &str,
        limit: usize,
    ) -> Result<Vec<Entity>, StoreError> {
        let path = prop_path(prop);
        let time_path = prop_path(time_prop);
        let (value, before) = (value.to_string(), before.to_string());
        self.read(move |conn| {
            // RFC 3339 UTC timestamps compare as text (to the second).
            let mut stmt = conn
                .prepare_cached(&sql(
                    table,
                    "SELECT pk, rk, etag, props FROM entities
                     WHERE tbl = ?1 AND json_extract(props, ?2) = ?3 AND json_extract(props, ?4) < ?5
                     LIMIT ?6",
                ))
                .map_err(map_err)?;
            entities(
                &mut stmt,
                params![table.name(), path, value, time_path, before, limit as i64],
            )
        })
        .await
    }

    async fn query_where(
        &self,
        table: Table,
        prop: &str,
        value: &str,
    ) -> Result<Vec<Entity>, StoreError> {
        let path = prop_path(prop);
        let value = value.to_string();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&sql(
                    table,
                    "SELECT pk, rk, etag, props FROM entities
                     WHERE tbl = ?1 AND json_extract(props, ?2) = ?3 ORDER BY pk, rk",
                ))
                .map_err(map_err)?;
            entities(&mut stmt, params![table.name(), path, value])
        })
        .await
    }

    async fn query_range(
        &self,
        table: Table,
        pk: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Entity>, StoreError> {
        let text = "SELECT pk, rk, etag, props FROM entities
                    WHERE tbl = ?1 AND pk = ?2 AND rk >= ?3 AND rk < ?4 ORDER BY rk LIMIT ?5";
        self.range(table, pk, (from, to), limit, text, |stmt, params| {
            entities(stmt, params)
        })
        .await
    }

    async fn query_range_json(
        &self,
        table: Table,
        pk: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let text = "SELECT rk, props FROM entities
                    WHERE tbl = ?1 AND pk = ?2 AND rk >= ?3 AND rk < ?4 ORDER BY rk LIMIT ?5";
        self.range(table, pk, (from, to), limit, text, |stmt, params| {
            let rows = stmt
                .query_map(params, |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(map_err)?;
            rows.map(|r| r.map_err(map_err)).collect()
        })
        .await
    }

    async fn query_pk_prefix(
        &self,
        table: Table,
        pk_prefix: &str,
        rk: &str,
    ) -> Result<Vec<Entity>, StoreError> {
        let lo = pk_prefix.to_string();
        let hi = super::prefix_end(pk_prefix);
        let rk = rk.to_string();
        self.read(move |conn| {
            // Two statements, not `(?3 IS NULL OR pk < ?3)`: SQLite cannot bound an index
            // range by an OR, and scanned to the end of the table (every object row after
            // the cluster's: seconds on a big store).
            let mut rows = match &hi {
                Some(hi) => {
                    let mut stmt = conn
                        .prepare_cached(&sql(
                            table,
                            "SELECT pk, rk, etag, props FROM entities
                             WHERE tbl = ?1 AND pk >= ?2 AND pk < ?3 AND rk = ?4 ORDER BY pk",
                        ))
                        .map_err(map_err)?;
                    entities(&mut stmt, params![table.name(), lo, hi, rk])?
                }
                None => {
                    let mut stmt = conn
                        .prepare_cached(&sql(
                            table,
                            "SELECT pk, rk, etag, props FROM entities
                             WHERE tbl = ?1 AND pk >= ?2 AND rk = ?3 ORDER BY pk",
                        ))
                        .map_err(map_err)?;
                    entities(&mut stmt, params![table.name(), lo, rk])?
                }
            };
            rows.retain(|e| e.pk.starts_with(&lo));
            Ok(rows)
        })
        .await
    }

    async fn partitions_where(
        &self,
        table: Table,
        prop: &str,
        value: &str,
    ) -> Result<Vec<String>, StoreError> {
        let path = prop_path(prop);
        let value = value.to_string();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&sql(
                    table,
                    "SELECT DISTINCT pk FROM entities
                     WHERE tbl = ?1 AND json_extract(props, ?2) = ?3 ORDER BY pk",
                ))
                .map_err(map_err)?;
            let pks = stmt
                .query_map(params![table.name(), path, value], |r| {
                    r.get::<_, String>(0)
                })
                .map_err(map_err)?;
            pks.map(|pk| pk.map_err(map_err)).collect()
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    /// Reads answer; and if the last write failed, a probe write tells whether writes work
    /// again (nothing is written while they do).
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await?;
        let failing = self
            .inner
            .write_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or(None);
        if let Some(why) = failing {
            let probe = Row::from_record("health", "probe", &serde_json::json!({}));
            self.upsert(Table::Deliveries, probe)
                .await
                .map_err(|_| StoreError::Unavailable(format!("writes are failing: {why}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write is answered only once its commit is on disk: when the WAL cannot be synced
    /// (here it cannot even be opened: unlinked under SQLite, which writes on through its
    /// own handle), the committed write is answered `Unavailable` — retried by its sender —
    /// and health reports the store down.
    #[tokio::test]
    async fn a_commit_that_cannot_be_synced_is_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("ledger.db-wal")).expect("the WAL exists");
        let row = Row::from_record("o", "state", &serde_json::json!({"status": "ready"}));
        match store.insert(Table::Objects, row).await {
            Err(StoreError::Unavailable(why)) => assert!(why.contains("synced"), "{why}"),
            other => panic!("a commit not on disk was answered {other:?}"),
        }
        match store.ping().await {
            Err(StoreError::Unavailable(why)) => assert!(why.contains("sync the WAL"), "{why}"),
            other => panic!("health did not report the failing syncs: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_database_of_the_first_layout_is_moved_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("ledger.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE entities (
                     tbl TEXT NOT NULL, pk TEXT NOT NULL, rk TEXT NOT NULL,
                     etag TEXT NOT NULL, props TEXT NOT NULL,
                     PRIMARY KEY (tbl, pk, rk)
                 ) WITHOUT ROWID;
                 INSERT INTO entities VALUES ('objects', 'o', 'state', 'e1', '{\"status\":\"ready\"}');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let got = store
            .get(Table::Objects, "o", "state")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.props["status"], "ready");
        assert_eq!(got.etag, Some(Etag("e1".into())));
        // Its etag still guards it, and its key is still unique.
        let e = Row::from_record("o", "state", &serde_json::json!({"status": "failed"}));
        assert!(matches!(
            store
                .update(Table::Objects, e.clone(), &Etag("old".into()))
                .await,
            Err(StoreError::PreconditionFailed)
        ));
        assert!(matches!(
            store.insert(Table::Objects, e.clone()).await,
            Err(StoreError::Conflict)
        ));
        store
            .update(Table::Objects, e, &Etag("e1".into()))
            .await
            .unwrap();
        drop(store);
        // Opening it again finds the new layout and leaves it be.
        let store = SqliteStore::open(dir.path()).unwrap();
        let got = store
            .get(Table::Objects, "o", "state")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.props["status"], "failed");
        let conn = Connection::open(dir.path().join("ledger.db")).unwrap();
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'entities'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!sql.contains("WITHOUT ROWID"), "{sql}");
    }

    /// The first part-10 build kept audit rows in `entities`, each change row twice (per
    /// cluster and per month): opening such a store moves them to the clustered table, drops
    /// the month copies and registers every cluster with change rows, once. Stores before
    /// part 13 kept the commits' rows there too: they are moved to theirs.
    #[tokio::test]
    async fn audit_rows_of_the_first_part_10_layout_are_moved_to_their_table() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        {
            let conn = Connection::open(dir.path().join("ledger.db")).unwrap();
            conn.execute_batch(
                "INSERT INTO entities VALUES ('audit', 'cluster|prod-eu', '1|a', 'e1', '{\"sha\":\"a\"}');
                 INSERT INTO entities VALUES ('audit', 'cluster|dev', '2|b', 'e2', '{\"sha\":\"b\"}');
                 INSERT INTO entities VALUES ('audit', 'month|2026-11', '1|prod-eu|a', 'e3', '{}');
                 INSERT INTO entities VALUES ('audit', 'clusters', 'prod-eu', 'e4', '{\"cluster\":\"prod-eu\"}');
                 INSERT INTO entities VALUES ('commits', 'a', 'commit', 'e5', '{}');
                 DELETE FROM audit_rows;",
            )
            .unwrap();
        }
        for _ in 0..2 {
            let store = SqliteStore::open(dir.path()).unwrap();
            let rows = |pk: &'static str| {
                let store = store.clone();
                async move { store.query_partition(Table::Audit, pk, None).await.unwrap() }
            };
            assert_eq!(
                rows("cluster|prod-eu").await[0].etag,
                Some(Etag("e1".into()))
            );
            assert_eq!(rows("cluster|dev").await[0].props["sha"], "b");
            assert!(rows("month|2026-11").await.is_empty());
            let registry: Vec<_> = rows("clusters").await.into_iter().map(|e| e.rk).collect();
            assert_eq!(registry, ["dev", "prod-eu"]);
            assert!(store
                .get(Table::Commits, "a", "commit")
                .await
                .unwrap()
                .is_some());
            drop(store);
            let conn = Connection::open(dir.path().join("ledger.db")).unwrap();
            let left: i64 = conn
                .query_row(
                    "SELECT count(*) FROM entities WHERE tbl IN ('audit', 'commits')",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(left, 0);
        }
    }

    /// Many writes at once share commits; the ones that fail (a key that exists, a stale
    /// etag — in the middle of a multi-part write too) are rolled back alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_a_group_a_failed_write_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let row =
            |pk: &str, rk: &str, v: i64| Row::from_record(pk, rk, &serde_json::json!({ "v": v }));
        for i in 0..20 {
            store
                .insert(Table::Commits, row(&format!("taken{i}"), "r", -1))
                .await
                .unwrap();
        }
        let mut calls = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            calls.push(tokio::spawn(async move {
                let fresh = (
                    Table::Commits,
                    format!("p{i}"),
                    vec![BatchOp::Insert(row(&format!("p{i}"), "r", i))],
                );
                let parts = match i % 10 {
                    // A write whose second part fails: its first part must not stay.
                    0 => {
                        let taken = format!("taken{}", i / 10);
                        vec![
                            fresh,
                            (
                                Table::Commits,
                                taken.clone(),
                                vec![BatchOp::Insert(row(&taken, "r", i))],
                            ),
                        ]
                    }
                    // A stale etag.
                    1 => vec![(
                        Table::Commits,
                        format!("taken{}", i / 10),
                        vec![BatchOp::Update(
                            row(&format!("taken{}", i / 10), "r", i),
                            Etag("stale".into()),
                        )],
                    )],
                    _ => vec![fresh],
                };
                (i, store.batches(parts).await)
            }));
        }
        for call in calls {
            let (i, result) = call.await.unwrap();
            let stored = store
                .get(Table::Commits, &format!("p{i}"), "r")
                .await
                .unwrap();
            match i % 10 {
                0 => {
                    assert!(
                        matches!(result, Err(StoreError::Conflict)),
                        "{i}: {result:?}"
                    );
                    assert!(
                        stored.is_none(),
                        "{i}: the first part of a failed write stayed"
                    );
                }
                1 => assert!(matches!(result, Err(StoreError::PreconditionFailed)), "{i}"),
                _ => {
                    assert!(result.is_ok(), "{i}: {result:?}");
                    assert_eq!(stored.unwrap().props["v"], i, "{i}");
                }
            }
        }
        for i in 0..20 {
            let kept = store
                .get(Table::Commits, &format!("taken{i}"), "r")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(kept.props["v"], -1, "taken{i} was overwritten");
        }
    }
}
