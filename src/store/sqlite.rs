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
    /// Source of etags: strictly increasing across the database's life, so an etag is never
    /// reused even after a delete and re-insert.
    version: AtomicU64,
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
                 version INTEGER NOT NULL,
                 props TEXT NOT NULL,
                 PRIMARY KEY (tbl, pk, rk)
             ) WITHOUT ROWID;",
        )
        .map_err(map_err)?;
        let max: i64 = conn
            .query_row("SELECT COALESCE(MAX(version), 0) FROM entities", [], |r| {
                r.get(0)
            })
            .map_err(map_err)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                version: AtomicU64::new(max as u64),
            }),
        })
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &AtomicU64) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .conn
                .lock()
                .map_err(|_| StoreError::Unavailable("store lock poisoned".into()))?;
            f(&mut conn, &inner.version)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::Conflict,
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn next_version(v: &AtomicU64) -> u64 {
    v.fetch_add(1, Ordering::SeqCst) + 1
}

fn etag(version: u64) -> Etag {
    Etag(version.to_string())
}

fn encode(props: &Map<String, Value>) -> String {
    Value::Object(props.clone()).to_string()
}

fn decode(pk: String, rk: String, version: i64, props: &str) -> Result<Entity, StoreError> {
    match serde_json::from_str(props) {
        Ok(Value::Object(props)) => Ok(Entity {
            pk,
            rk,
            props,
            etag: Some(etag(version as u64)),
        }),
        _ => Err(StoreError::Corrupt(format!(
            "{pk}/{rk}: properties are not a JSON object"
        ))),
    }
}

fn current_version(
    tx: &Transaction<'_>,
    table: Table,
    pk: &str,
    rk: &str,
) -> Result<Option<u64>, StoreError> {
    tx.query_row(
        "SELECT version FROM entities WHERE tbl = ?1 AND pk = ?2 AND rk = ?3",
        params![table.name(), pk, rk],
        |r| r.get::<_, i64>(0),
    )
    .optional()
    .map(|v| v.map(|v| v as u64))
    .map_err(map_err)
}

/// Applies one operation inside an open transaction.
fn apply(
    tx: &Transaction<'_>,
    version: &AtomicU64,
    table: Table,
    pk: &str,
    op: BatchOp,
) -> Result<Etag, StoreError> {
    match op {
        BatchOp::Insert(e) => {
            if current_version(tx, table, pk, &e.rk)?.is_some() {
                return Err(StoreError::Conflict);
            }
            let v = next_version(version);
            tx.execute(
                "INSERT INTO entities (tbl, pk, rk, version, props) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![table.name(), pk, e.rk, v as i64, encode(&e.props)],
            )
            .map_err(map_err)?;
            Ok(etag(v))
        }
        BatchOp::Upsert(e) => {
            let v = next_version(version);
            tx.execute(
                "INSERT INTO entities (tbl, pk, rk, version, props) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tbl, pk, rk) DO UPDATE SET version = excluded.version, props = excluded.props",
                params![table.name(), pk, e.rk, v as i64, encode(&e.props)],
            )
            .map_err(map_err)?;
            Ok(etag(v))
        }
        BatchOp::Update(e, expected) => {
            match current_version(tx, table, pk, &e.rk)? {
                Some(cur) if etag(cur) == expected => {}
                _ => return Err(StoreError::PreconditionFailed),
            }
            let v = next_version(version);
            tx.execute(
                "UPDATE entities SET version = ?4, props = ?5 WHERE tbl = ?1 AND pk = ?2 AND rk = ?3",
                params![table.name(), pk, e.rk, v as i64, encode(&e.props)],
            )
            .map_err(map_err)?;
            Ok(etag(v))
        }
        BatchOp::Delete { rk, etag: expected } => {
            match (current_version(tx, table, pk, &rk)?, expected) {
                (None, _) => return Err(StoreError::PreconditionFailed),
                (Some(cur), Some(exp)) if etag(cur) != exp => {
                    return Err(StoreError::PreconditionFailed)
                }
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
    version: &AtomicU64,
    table: Table,
    pk: String,
    op: BatchOp,
) -> Result<Etag, StoreError> {
    let tx = conn.transaction().map_err(map_err)?;
    let tag = apply(&tx, version, table, &pk, op)?;
    tx.commit().map_err(map_err)?;
    Ok(tag)
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, table: Table, pk: &str, rk: &str) -> Result<Option<Entity>, StoreError> {
        let (pk, rk) = (pk.to_string(), rk.to_string());
        self.run(move |conn, _| {
            let row = conn
                .query_row(
                    "SELECT version, props FROM entities WHERE tbl = ?1 AND pk = ?2 AND rk = ?3",
                    params![table.name(), pk, rk],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()
                .map_err(map_err)?;
            row.map(|(v, p)| decode(pk, rk, v, &p)).transpose()
        })
        .await
    }

    async fn insert(&self, table: Table, entity: Entity) -> Result<Etag, StoreError> {
        self.run(move |c, v| single(c, v, table, entity.pk.clone(), BatchOp::Insert(entity)))
            .await
    }

    async fn update(&self, table: Table, entity: Entity, etag: &Etag) -> Result<Etag, StoreError> {
        let etag = etag.clone();
        self.run(move |c, v| {
            single(
                c,
                v,
                table,
                entity.pk.clone(),
                BatchOp::Update(entity, etag),
            )
        })
        .await
    }

    async fn upsert(&self, table: Table, entity: Entity) -> Result<Etag, StoreError> {
        self.run(move |c, v| single(c, v, table, entity.pk.clone(), BatchOp::Upsert(entity)))
            .await
    }

    async fn batch(
        &self,
        table: Table,
        pk: &str,
        ops: Vec<BatchOp>,
    ) -> Result<Vec<Etag>, StoreError> {
        let pk = pk.to_string();
        self.run(move |conn, version| {
            for op in &ops {
                let epk = match op {
                    BatchOp::Insert(e) | BatchOp::Upsert(e) | BatchOp::Update(e, _) => Some(&e.pk),
                    BatchOp::Delete { .. } => None,
                };
                if epk.is_some_and(|p| *p != pk) {
                    return Err(StoreError::Corrupt(
                        "a batch spans one partition only".into(),
                    ));
                }
            }
            let tx = conn.transaction().map_err(map_err)?;
            let mut tags = Vec::with_capacity(ops.len());
            for op in ops {
                // An error drops `tx`, which rolls the whole batch back.
                tags.push(apply(&tx, version, table, &pk, op)?);
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
                    "SELECT rk, version, props FROM entities
                     WHERE tbl = ?1 AND pk = ?2 AND substr(rk, 1, length(?3)) = ?3 ORDER BY rk",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![table.name(), pk, prefix], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(map_err)?;
            rows.map(|row| {
                let (rk, v, p) = row.map_err(map_err)?;
                decode(pk.clone(), rk, v, &p)
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
                    "SELECT pk, rk, version, props FROM entities
                     WHERE tbl = ?1 AND json_extract(props, ?2) = ?3 ORDER BY pk, rk",
                )
                .map_err(map_err)?;
            let rows = stmt
                .query_map(params![table.name(), path, value], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(map_err)?;
            rows.map(|row| {
                let (pk, rk, v, p) = row.map_err(map_err)?;
                decode(pk, rk, v, &p)
            })
            .collect()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn, _| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await
    }
}
