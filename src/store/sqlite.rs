//! The embedded store: one SQLite database (WAL, `synchronous=FULL`) under
//! `FLUXTRAIL_DATA_DIR`.
//!
//! Why SQLite: it is crash-safe by construction (a committed transaction survives power loss
//! with `synchronous=FULL`), needs nothing installed (bundled), and its transactions give the
//! one-partition atomic batch Table Storage offers. All entities live in one table keyed by
//! (table, pk, rk), mirroring Table Storage's model exactly.
//!
//! SQLite calls block, so they run on tokio's blocking pool. The connection sits behind a
//! std `Mutex` (not a tokio one) because it is only ever locked inside those blocking calls,
//! never across an `.await`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction};
use serde_json::{Map, Value};

use super::{BatchOp, Entity, Etag, Store, StoreError, Table};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Mutex<Connection>,
    etags: EtagSource,
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
        let conn = Connection::open(dir.join("ledger.db")).map_err(map_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS entities (
                 tbl TEXT NOT NULL,
                 pk TEXT NOT NULL,
                 rk TEXT NOT NULL,
                 etag TEXT NOT NULL,
                 props TEXT NOT NULL,
                 PRIMARY KEY (tbl, pk, rk)
             ) WITHOUT ROWID;",
        )
        .map_err(map_err)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                etags: EtagSource::new(),
            }),
        })
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &EtagSource) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .conn
                .lock()
                .map_err(|_| StoreError::Unavailable("store lock poisoned".into()))?;
            f(&mut conn, &inner.etags)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::Conflict,
        // Disk full, read-only, I/O errors, busy: the caller answers 503 and is retried.
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn encode(props: &Map<String, Value>) -> String {
    Value::Object(props.clone()).to_string()
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

fn current_etag(
    tx: &Transaction<'_>,
    table: Table,
    pk: &str,
    rk: &str,
) -> Result<Option<Etag>, StoreError> {
    tx.query_row(
        "SELECT etag FROM entities WHERE tbl = ?1 AND pk = ?2 AND rk = ?3",
        params![table.name(), pk, rk],
        |r| r.get::<_, String>(0),
    )
    .optional()
    .map(|v| v.map(Etag))
    .map_err(map_err)
}

/// Applies one operation inside an open transaction.
fn apply(
    tx: &Transaction<'_>,
    etags: &EtagSource,
    table: Table,
    pk: &str,
    op: BatchOp,
) -> Result<Etag, StoreError> {
    match op {
        BatchOp::Insert(e) => {
            if current_etag(tx, table, pk, &e.rk)?.is_some() {
                return Err(StoreError::Conflict);
            }
            let tag = etags.next();
            tx.execute(
                "INSERT INTO entities (tbl, pk, rk, etag, props) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![table.name(), pk, e.rk, tag.0, encode(&e.props)],
            )
            .map_err(map_err)?;
            Ok(tag)
        }
        BatchOp::Upsert(e) => {
            let tag = etags.next();
            tx.execute(
                "INSERT INTO entities (tbl, pk, rk, etag, props) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tbl, pk, rk) DO UPDATE SET etag = excluded.etag, props = excluded.props",
                params![table.name(), pk, e.rk, tag.0, encode(&e.props)],
            )
            .map_err(map_err)?;
            Ok(tag)
        }
        BatchOp::Update(e, expected) => {
            if current_etag(tx, table, pk, &e.rk)? != Some(expected) {
                return Err(StoreError::PreconditionFailed);
            }
            let tag = etags.next();
            tx.execute(
                "UPDATE entities SET etag = ?4, props = ?5 WHERE tbl = ?1 AND pk = ?2 AND rk = ?3",
                params![table.name(), pk, e.rk, tag.0, encode(&e.props)],
            )
            .map_err(map_err)?;
            Ok(tag)
        }
        BatchOp::Delete { rk, etag: expected } => {
            match (current_etag(tx, table, pk, &rk)?, expected) {
                (None, _) => return Err(StoreError::PreconditionFailed),
                (Some(cur), Some(exp)) if cur != exp => return Err(StoreError::PreconditionFailed),
                _ => {}
            }
            tx.execute(
                "DELETE FROM entities WHERE tbl = ?1 AND pk = ?2 AND rk = ?3",
                params![table.name(), pk, rk],
            )
            .map_err(map_err)?;
            Ok(Etag(String::new()))
        }
    }
}

fn single(
    conn: &mut Connection,
    etags: &EtagSource,
    table: Table,
    pk: String,
    op: BatchOp,
) -> Result<Etag, StoreError> {
    let tx = conn.transaction().map_err(map_err)?;
    let tag = apply(&tx, etags, table, &pk, op)?;
    tx.commit().map_err(map_err)?;
    Ok(tag)
}

fn op_pk(op: &BatchOp) -> Option<&str> {
    match op {
        BatchOp::Insert(e) | BatchOp::Upsert(e) | BatchOp::Update(e, _) => Some(&e.pk),
        BatchOp::Delete { .. } => None,
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, table: Table, pk: &str, rk: &str) -> Result<Option<Entity>, StoreError> {
        let (pk, rk) = (pk.to_string(), rk.to_string());
        self.run(move |conn, _| {
            let row = conn
                .query_row(
                    "SELECT etag, props FROM entities WHERE tbl = ?1 AND pk = ?2 AND rk = ?3",
                    params![table.name(), pk, rk],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()
                .map_err(map_err)?;
            row.map(|(etag, p)| decode(pk, rk, etag, &p)).transpose()
        })
        .await
    }

    async fn insert(&self, table: Table, entity: Entity) -> Result<Etag, StoreError> {
        self.run(move |c, t| single(c, t, table, entity.pk.clone(), BatchOp::Insert(entity)))
            .await
    }

    async fn update(&self, table: Table, entity: Entity, etag: &Etag) -> Result<Etag, StoreError> {
        let etag = etag.clone();
        self.run(move |c, t| {
            single(
                c,
                t,
                table,
                entity.pk.clone(),
                BatchOp::Update(entity, etag),
            )
        })
        .await
    }

    async fn upsert(&self, table: Table, entity: Entity) -> Result<Etag, StoreError> {
        self.run(move |c, t| single(c, t, table, entity.pk.clone(), BatchOp::Upsert(entity)))
            .await
    }

    async fn batch(
        &self,
        table: Table,
        pk: &str,
        ops: Vec<BatchOp>,
    ) -> Result<Vec<Etag>, StoreError> {
        let pk = pk.to_string();
        self.run(move |conn, etags| {
            if ops.iter().filter_map(op_pk).any(|p| p != pk) {
                return Err(StoreError::Corrupt(
                    "a batch spans one partition only".into(),
                ));
            }
            let tx = conn.transaction().map_err(map_err)?;
            let mut tags = Vec::with_capacity(ops.len());
            for op in ops {
                // An error drops `tx`, which rolls the whole batch back.
                tags.push(apply(&tx, etags, table, &pk, op)?);
            }
            tx.commit().map_err(map_err)?;
            Ok(tags)
        })
        .await
    }

    async fn query_partition(
        &self,
        table: Table,
        pk: &str,
        rk_prefix: Option<&str>,
    ) -> Result<Vec<Entity>, StoreError> {
        let pk = pk.to_string();
        let prefix = rk_prefix.unwrap_or("").to_string();
        self.run(move |conn, _| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT rk, etag, props FROM entities
                     WHERE tbl = ?1 AND pk = ?2 AND substr(rk, 1, length(?3)) = ?3 ORDER BY rk",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![table.name(), pk, prefix], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(map_err)?;
            rows.map(|row| {
                let (rk, etag, p) = row.map_err(map_err)?;
                decode(pk.clone(), rk, etag, &p)
            })
            .collect()
        })
        .await
    }

    async fn query_where(
        &self,
        table: Table,
        prop: &str,
        value: &str,
    ) -> Result<Vec<Entity>, StoreError> {
        let path = format!("$.\"{}\"", prop.replace('"', ""));
        let value = value.to_string();
        self.run(move |conn, _| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT pk, rk, etag, props FROM entities
                     WHERE tbl = ?1 AND json_extract(props, ?2) = ?3 ORDER BY pk, rk",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![table.name(), path, value], |r| {
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
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn, _| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await
    }
}
