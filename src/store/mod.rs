//! The `Store`: where the ledger lives, behind a trait whose operations map one-to-one onto
//! Azure Table Storage, so the Azure backend is a second implementation, not a rewrite.
//!
//! | operation          | Table Storage                                   |
//! |--------------------|-------------------------------------------------|
//! | `get`              | GET entity by PartitionKey + RowKey             |
//! | `insert`           | POST entity (409 `EntityAlreadyExists`)         |
//! | `update`           | PUT with `If-Match: <etag>` (412 when stale)    |
//! | `upsert`           | PUT without `If-Match` (insert or replace)      |
//! | `batch`            | entity group transaction, one partition         |
//! | `query_partition`  | `PartitionKey eq '…'` query with continuation   |
//! | `query_where`      | table query `prop eq '…'` (sweeps only)         |
//!
//! Keys here are logical strings: any character may appear. A backend with key restrictions
//! (Table Storage forbids `/ \ # ?`) encodes them itself.

pub mod limits;
pub mod sqlite;

use std::fmt;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// The tables of the ledger. See ARCHITECTURE.md for their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// The journal of accepted deliveries: idempotency and crash recovery.
    Deliveries,
    /// One partition per commit sha: the commit, its approval, (later) its targets.
    Commits,
    /// One partition per (repository, ref): every push to that ref, for branch history.
    Pushes,
    /// One partition per (repository, pull request): its merge and reviews.
    Pulls,
    /// One partition per Flux object: its state, incidents and outbox.
    Objects,
    /// One partition per (repository, ref): the objects that follow it.
    Follows,
    /// Index rows for the audit queries (part 10): changes per cluster and per day, and the
    /// approval checks the sweep still has to decide. See ARCHITECTURE.md.
    Audit,
}

impl Table {
    pub const ALL: [Table; 7] = [
        Table::Deliveries,
        Table::Commits,
        Table::Pushes,
        Table::Pulls,
        Table::Objects,
        Table::Follows,
        Table::Audit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Deliveries => "deliveries",
            Table::Commits => "commits",
            Table::Pushes => "pushes",
            Table::Pulls => "pulls",
            Table::Objects => "objects",
            Table::Follows => "follows",
            Table::Audit => "audit",
        }
    }
}

/// An opaque version tag for optimistic concurrency (Table Storage's ETag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Etag(pub String);

/// One row as read: partition key, row key, its properties, its etag.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub pk: String,
    pub rk: String,
    pub props: Map<String, Value>,
    /// Set on entities read from the store.
    pub etag: Option<Etag>,
}

impl Entity {
    /// Reads the properties back as a record.
    pub fn record<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        // Straight from the map, without copying it into a `Value` first.
        T::deserialize(&self.props)
            .map_err(|e| StoreError::Corrupt(format!("{}/{}: {e}", self.pk, self.rk)))
    }
}

/// One row to write: its keys and its properties, already encoded as one JSON object — the
/// form both backends store (SQLite a `props` column, Table Storage the `d…` properties), so
/// a record is serialised once, straight to text, with no map of values built in between.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub pk: String,
    pub rk: String,
    json: String,
}

impl Row {
    /// The row of any serialisable record (it must serialise to a JSON object).
    pub fn from_record<T: Serialize>(
        pk: impl Into<String>,
        rk: impl Into<String>,
        record: &T,
    ) -> Self {
        let json = match serde_json::to_string(record) {
            Ok(json) => json,
            Err(e) => panic!("records always serialise: {e}"),
        };
        assert!(
            json.starts_with('{') && json.ends_with('}'),
            "records serialise to JSON objects, got {json}"
        );
        Row {
            pk: pk.into(),
            rk: rk.into(),
            json,
        }
    }

    /// Adds a top-level string property (a tag `query_where` can find). The record must not
    /// have a property of that name (checked in debug builds): where it has, it is the tag.
    pub fn with_tag(mut self, name: &str, value: &str) -> Self {
        debug_assert!(
            !self.props().contains_key(name),
            "{}/{}: the record has its own {name:?}",
            self.pk,
            self.rk
        );
        self.json.pop();
        if self.json.len() > 1 {
            self.json.push(',');
        }
        // Strings always serialise.
        self.json
            .push_str(&serde_json::to_string(name).unwrap_or_default());
        self.json.push(':');
        self.json
            .push_str(&serde_json::to_string(value).unwrap_or_default());
        self.json.push('}');
        self
    }

    /// The properties as JSON text (an object).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Partition key, row key and the properties' JSON text.
    pub fn into_parts(self) -> (String, String, String) {
        (self.pk, self.rk, self.json)
    }

    /// The properties as a map (for a backend that stores some of them apart).
    pub fn props(&self) -> Map<String, Value> {
        serde_json::from_str(&self.json).unwrap_or_default()
    }
}

/// The end of the key range of the keys starting with `prefix`: the prefix with its last
/// character raised by one, when that orders right whether keys compare by code point
/// (SQLite) or by UTF-16 unit (Table Storage), i.e. for a last character below U+D7FF.
/// Otherwise (and for an empty prefix) none: the range runs to the end of the partition and
/// the backend checks the prefix row by row.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut end: Vec<char> = prefix.chars().collect();
    let last = end.pop()? as u32;
    if last >= 0xD7FF {
        return None;
    }
    end.push(char::from_u32(last + 1)?);
    Some(end.into_iter().collect())
}

/// `text` in pieces of at most `units` UTF-16 units (how Table Storage counts strings), never
/// splitting a character; one (possibly empty) piece when it fits.
pub fn utf16_pieces(text: &str, units: usize) -> Vec<String> {
    let mut out = vec![];
    let mut current = String::new();
    let mut n = 0;
    for c in text.chars() {
        if n + c.len_utf16() > units {
            out.push(std::mem::take(&mut current));
            n = 0;
        }
        n += c.len_utf16();
        current.push(c);
    }
    out.push(current);
    out
}

/// One operation of an atomic batch.
#[derive(Debug, Clone)]
pub enum BatchOp {
    Insert(Row),
    Upsert(Row),
    /// Replace only if the stored etag still matches.
    Update(Row, Etag),
    Delete {
        rk: String,
        etag: Option<Etag>,
    },
}

impl BatchOp {
    /// The row it writes or deletes.
    pub fn rk(&self) -> &str {
        match self {
            BatchOp::Insert(r) | BatchOp::Upsert(r) | BatchOp::Update(r, _) => &r.rk,
            BatchOp::Delete { rk, .. } => rk,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `insert` of a key that exists (Table Storage 409).
    #[error("entity already exists")]
    Conflict,
    /// `update` with a stale etag (412), or of a missing entity.
    #[error("entity changed since it was read")]
    PreconditionFailed,
    /// The store cannot be reached or written right now; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data does not decode: a bug or tampering, never retried.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A row Table Storage would refuse (see `limits`): a bug, never retried.
    #[error("row exceeds Table Storage's limits: {0}")]
    TooLarge(String),
}

/// The persistence operations the ledger needs, and nothing Table Storage couldn't do.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    async fn get(&self, table: Table, pk: &str, rk: &str) -> Result<Option<Entity>, StoreError>;
    /// Insert if absent; `Conflict` if the key exists.
    async fn insert(&self, table: Table, row: Row) -> Result<Etag, StoreError>;
    /// Replace if the stored etag equals `etag`; `PreconditionFailed` otherwise.
    async fn update(&self, table: Table, row: Row, etag: &Etag) -> Result<Etag, StoreError>;
    /// Insert or replace.
    async fn upsert(&self, table: Table, row: Row) -> Result<Etag, StoreError>;
    /// All operations on one partition, atomically: all apply or none does.
    async fn batch(
        &self,
        table: Table,
        pk: &str,
        ops: Vec<BatchOp>,
    ) -> Result<Vec<Etag>, StoreError>;
    /// Several batches, possibly of different tables and partitions, in order. A backend that
    /// can make them one atomic unit does (SQLite: one transaction, so one commit wait); Table
    /// Storage runs them one after the other and stops at the first failure, which callers
    /// must tolerate (all writes of the ledger are idempotent merges).
    async fn batches(
        &self,
        writes: Vec<(Table, String, Vec<BatchOp>)>,
    ) -> Result<Vec<Vec<Etag>>, StoreError> {
        let mut out = Vec::with_capacity(writes.len());
        for (table, pk, ops) in writes {
            out.push(self.batch(table, &pk, ops).await?);
        }
        Ok(out)
    }
    /// Whether `batches` is one atomic unit (all or nothing). Table Storage's is not: the
    /// audit index then marks what it writes ahead of its commit point as pending.
    fn atomic_batches(&self) -> bool {
        false
    }
    /// Every entity of a partition, ordered by row key, optionally only those whose row key
    /// starts with `rk_prefix`.
    async fn query_partition(
        &self,
        table: Table,
        pk: &str,
        rk_prefix: Option<&str>,
    ) -> Result<Vec<Entity>, StoreError>;
    /// `query_partition` for several partitions, results in the order of `pks`. SQLite answers
    /// in one query; Table Storage queries each partition.
    async fn query_partitions(
        &self,
        table: Table,
        pks: &[String],
        rk_prefix: Option<&str>,
    ) -> Result<Vec<Vec<Entity>>, StoreError> {
        let mut out = Vec::with_capacity(pks.len());
        for pk in pks {
            out.push(self.query_partition(table, pk, rk_prefix).await?);
        }
        Ok(out)
    }
    /// The entities of several partitions whose row keys are in `[from, to)`, in the order
    /// of `pks` — on SQLite one statement, on Table Storage one query per partition.
    async fn query_partitions_range(
        &self,
        table: Table,
        pks: &[String],
        from: &str,
        to: &str,
    ) -> Result<Vec<Vec<Entity>>, StoreError> {
        let mut out = Vec::with_capacity(pks.len());
        for pk in pks {
            out.push(self.query_range(table, pk, from, to, usize::MAX).await?);
        }
        Ok(out)
    }
    /// `query_partitions` keeping only the entities whose string property `prop` equals
    /// `value`, filtered by the store (the outbox reads an object's pending messages, not its
    /// delivered history). The default filters `query_partitions`.
    async fn query_partitions_where(
        &self,
        table: Table,
        pks: &[String],
        rk_prefix: Option<&str>,
        (prop, value): (&str, &str),
    ) -> Result<Vec<Vec<Entity>>, StoreError> {
        let mut out = self.query_partitions(table, pks, rk_prefix).await?;
        for rows in &mut out {
            rows.retain(|e| e.props.get(prop).and_then(Value::as_str) == Some(value));
        }
        Ok(out)
    }
    /// At most `limit` entities of one partition whose row keys are in `[from, to)`, ordered
    /// by row key: one key-range read (the audit queries page through their index with it).
    async fn query_range(
        &self,
        table: Table,
        pk: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Entity>, StoreError>;
    /// `query_range`, each row as its row key and its properties' JSON text — what SQLite
    /// stores, handed over as it is — for long reads decoded straight into records, without
    /// a map of values built in between (the audit export: ~30% of its CPU went to that map).
    async fn query_range_json(
        &self,
        table: Table,
        pk: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .query_range(table, pk, from, to, limit)
            .await?
            .into_iter()
            .map(|e| (e.rk, Value::Object(e.props).to_string()))
            .collect())
    }
    /// The entities with row key `rk` in every partition whose key starts with `pk_prefix`:
    /// a key-range read (a commit by an abbreviated sha: its partitions are its full sha).
    async fn query_pk_prefix(
        &self,
        table: Table,
        pk_prefix: &str,
        rk: &str,
    ) -> Result<Vec<Entity>, StoreError>;
    /// Every entity of a table whose string property `prop` equals `value` (a scan: for
    /// sweeps and recovery, never on a request path).
    async fn query_where(
        &self,
        table: Table,
        prop: &str,
        value: &str,
    ) -> Result<Vec<Entity>, StoreError>;
    /// The partitions (each once, in order) holding an entity whose string property `prop`
    /// equals `value`: a scan like `query_where`, without carrying every entity back. The
    /// default keeps only the keys of a `query_where`; SQLite returns only the keys.
    async fn partitions_where(
        &self,
        table: Table,
        prop: &str,
        value: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut pks: Vec<String> = self
            .query_where(table, prop, value)
            .await?
            .into_iter()
            .map(|e| e.pk)
            .collect();
        pks.dedup();
        Ok(pks)
    }
    /// At most `limit` entities of a table whose string property `prop` equals `value` and
    /// whose RFC 3339 property `time_prop` is earlier than `before` (retention: filtered by the
    /// store, so a sweep never loads the whole history). The default filters a `query_where`.
    async fn query_before(
        &self,
        table: Table,
        (prop, value): (&str, &str),
        time_prop: &str,
        before: &str,
        limit: usize,
    ) -> Result<Vec<Entity>, StoreError> {
        let cutoff = chrono::DateTime::parse_from_rfc3339(before)
            .map_err(|e| StoreError::Corrupt(format!("cutoff {before}: {e}")))?;
        let mut rows: Vec<Entity> = self
            .query_where(table, prop, value)
            .await?
            .into_iter()
            .filter(|e| {
                e.props
                    .get(time_prop)
                    .and_then(|t| t.as_str())
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t < cutoff)
            })
            .collect();
        rows.truncate(limit);
        Ok(rows)
    }
    /// Cheap liveness check for `/api/health`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// A short name for health and logs.
    fn backend(&self) -> &'static str;
}
pub mod tables;
