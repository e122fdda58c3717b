//! The Azure Table Storage backend (`azure_data_tables` 0.21), selected by `FLUXTRAIL_TABLES`.
//!
//! Mapping of the `Store` trait (one call = one round trip):
//! - one Azure table per [`Table`], named `{prefix}{name}` (`fluxtraildeliveries`, …);
//! - keys: the logical keys, escaped so any character is allowed (see [`encode_key`]);
//! - properties: the record as JSON text in `d0`, `d1`, … (30,000 characters each, under the
//!   64 KiB property limit), plus every top-level scalar string of the record promoted as
//!   `p_<name>` so `query_where` can filter on it server-side, plus the logical keys as
//!   `lpk`/`lrk` (keys longer than the 1 KiB limit are shortened with a hash);
//! - insert-if-absent = Insert Entity (409 → `Conflict`); conditional update = Update Entity
//!   with `If-Match` (412/404 → `PreconditionFailed`); upsert = Insert Or Replace; batch = an
//!   entity group transaction whose EVERY per-operation status is checked (a failed batch
//!   comes back as a successful HTTP response);
//! - queries follow continuation tokens to the end.
//!
//! Transient failures (throttling, 5xx, timeouts) are retried by the pipeline a bounded number
//! of times within a few seconds; what still fails is `Unavailable` (the webhook sender gets
//! 503 + `Retry-After`, and nothing is acknowledged half-written thanks to the ledger's journal).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::{ExponentialRetryOptions, RetryOptions, TransportOptions};
use azure_data_tables::clients::TableServiceClientBuilder;
use azure_data_tables::prelude::*;
use azure_data_tables::IfMatchCondition;
use azure_storage::{CloudLocation, ConnectionString, StorageCredentials};
use futures::StreamExt;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{BatchOp, Entity, Etag, Row, Store, StoreError, Table};

/// UTF-16 units per data property (the limit is 32 Ki units: 64 KiB).
const CHUNK: usize = 30_000;
/// UTF-16 units of an encoded key (the limit is 512: 1 KiB).
const MAX_KEY: usize = 400;

#[derive(Debug, Clone)]
pub struct TableStore {
    clients: Arc<HashMap<Table, TableClient>>,
    account: String,
}

impl TableStore {
    /// Connects with a connection string (account key, SAS, `UseDevelopmentStorage=true`, a
    /// custom `TableEndpoint=`), or an account name / table URL for managed identity, and
    /// creates the tables that are missing.
    pub async fn connect(value: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let (location, credentials) = location_and_credentials(value.trim())?;
        let account = location.account().to_string();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("HTTP client: {e}")))?;
        let service = TableServiceClientBuilder::with_location(location, credentials)
            .transport(TransportOptions::new(Arc::new(http)))
            .retry(RetryOptions::exponential(
                ExponentialRetryOptions::default()
                    .max_retries(3u32)
                    .initial_delay(Duration::from_millis(100))
                    .max_total_elapsed(Duration::from_secs(4)),
            ))
            .build();
        let mut clients = HashMap::new();
        for table in Table::ALL {
            let client = service.table_client(format!("{prefix}{}", table.name()));
            match client.create().await {
                Ok(_) => {}
                Err(e) if status(&e) == Some(409) => {} // exists
                Err(e) => {
                    return Err(StoreError::Unavailable(format!(
                        "create table {}: {e}",
                        client.table_name()
                    )))
                }
            }
            clients.insert(table, client);
        }
        Ok(TableStore {
            clients: Arc::new(clients),
            account,
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    fn table(&self, t: Table) -> &TableClient {
        &self.clients[&t]
    }
}

fn location_and_credentials(
    value: &str,
) -> Result<(CloudLocation, StorageCredentials), StoreError> {
    let bad = |m: String| StoreError::Unavailable(format!("FLUXTRAIL_TABLES: {m}"));
    if value.contains('=') {
        let cs = ConnectionString::new(value).map_err(|e| bad(e.to_string()))?;
        let dev = cs.use_development_storage.unwrap_or(false);
        let credentials = if dev && cs.account_key.is_none() {
            StorageCredentials::emulator()
        } else {
            cs.storage_credentials().map_err(|e| bad(e.to_string()))?
        };
        let location = match (cs.table_endpoint, cs.account_name) {
            (Some(uri), account) => CloudLocation::Custom {
                account: account.unwrap_or("devstoreaccount1").to_string(),
                uri: uri.trim_end_matches('/').to_string(),
            },
            (None, _) if dev => CloudLocation::Emulator {
                address: "127.0.0.1".into(),
                port: 10002,
            },
            (None, Some(account)) => CloudLocation::Public {
                account: account.to_string(),
            },
            (None, None) => return Err(bad("no AccountName or TableEndpoint".into())),
        };
        Ok((location, credentials))
    } else {
        // An account name or a table endpoint URL: the app's managed identity.
        let credential = azure_identity::create_default_credential()
            .map_err(|e| bad(format!("managed identity: {e}")))?;
        let location = if value.contains("://") {
            let url = url::Url::parse(value).map_err(|e| bad(e.to_string()))?;
            let account = url
                .host_str()
                .and_then(|h| h.split('.').next())
                .unwrap_or_default()
                .to_string();
            CloudLocation::Custom {
                account,
                uri: value.trim_end_matches('/').to_string(),
            }
        } else {
            CloudLocation::Public {
                account: value.to_string(),
            }
        };
        Ok((location, StorageCredentials::token_credential(credential)))
    }
}

/// Escapes a logical key for Table Storage: `/ \ # ?`, control characters, `%` (the escape
/// itself) and `'` (OData quoting) become `%XX`. Prefix-preserving, so a row-key prefix
/// query on the encoded prefix finds exactly the keys with the logical prefix. Keys longer
/// than the limit keep their first part and a hash.
pub fn encode_key(key: &str) -> String {
    let out = escape_key(key);
    if out.encode_utf16().count() > MAX_KEY {
        let head = utf16_head(&out, KEPT_HEAD);
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        return format!("{head}~{hash}");
    }
    out
}

/// How much of an over-long escaped key is kept before its hash.
const KEPT_HEAD: usize = MAX_KEY - 80;

fn escape_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '/' | '\\' | '#' | '?' | '%' | '\'') || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The stored-key prefix every key starting with `prefix` has: its escaping, cut to the part
/// an over-long key keeps (the rest of such keys is a hash, so the caller filters).
fn encode_prefix(prefix: &str) -> String {
    let out = escape_key(prefix);
    if out.encode_utf16().count() > KEPT_HEAD {
        return utf16_head(&out, KEPT_HEAD);
    }
    out
}

/// The longest head of `s` of at most `units` UTF-16 units.
fn utf16_head(s: &str, units: usize) -> String {
    let mut n = 0;
    s.chars()
        .take_while(|c| {
            n += c.len_utf16();
            n <= units
        })
        .collect()
}

/// An OData string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn is_identifier(k: &str) -> bool {
    k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && k.len() < 200
}

/// The entity Table Storage is sent for `row`, checked against Table Storage's limits, with
/// its size in Azure's count.
fn to_wire(row: &Row) -> Result<(Value, usize), StoreError> {
    let wire = encode(row);
    let size = super::limits::check_entity(wire.as_object().expect("an object"))
        .map_err(|e| StoreError::TooLarge(format!("{}/{}: {e}", row.pk, row.rk)))?;
    Ok((wire, size))
}

/// Checks `row` as this backend would send it (the SQLite backend asks, in debug builds, so
/// that every test run catches a row real Azure would refuse).
pub fn check_row(row: &Row) -> Result<usize, StoreError> {
    to_wire(row).map(|(_, size)| size)
}

fn encode(row: &Row) -> Value {
    let (pk, rk) = (&row.pk, &row.rk);
    let mut m = Map::new();
    m.insert("PartitionKey".into(), Value::String(encode_key(pk)));
    m.insert("RowKey".into(), Value::String(encode_key(rk)));
    m.insert("lpk".into(), Value::String(pk.to_string()));
    m.insert("lrk".into(), Value::String(rk.to_string()));
    for (k, v) in row.props() {
        if let (true, Value::String(s)) = (is_identifier(&k), &v) {
            if s.len() <= 1024 {
                m.insert(format!("p_{k}"), v);
            }
        }
    }
    let chunks = chunks(row.json());
    m.insert("dn".into(), Value::String(chunks.len().to_string()));
    for (i, c) in chunks.into_iter().enumerate() {
        m.insert(format!("d{i}"), Value::String(c));
    }
    Value::Object(m)
}

/// The record's JSON text in pieces of at most [`CHUNK`] UTF-16 units (Table Storage counts
/// strings in UTF-16: 64 KiB is 32 Ki units), never splitting a character.
fn chunks(json: &str) -> Vec<String> {
    super::utf16_pieces(json, CHUNK)
}

/// A batch operation once its entity is encoded: what remains to name it.
enum Staged {
    Insert,
    Upsert(String),
    Update(String, Etag),
    Delete { rk: String, etag: Option<Etag> },
}

fn op_of(op: BatchOp) -> Staged {
    match op {
        BatchOp::Insert(_) => Staged::Insert,
        BatchOp::Upsert(e) => Staged::Upsert(e.rk),
        BatchOp::Update(e, etag) => Staged::Update(e.rk, etag),
        BatchOp::Delete { rk, etag } => Staged::Delete { rk, etag },
    }
}

fn from_wire(mut m: Map<String, Value>) -> Result<Entity, StoreError> {
    let take = |m: &mut Map<String, Value>, k: &str| match m.remove(k) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(StoreError::Corrupt(format!("entity without {k}"))),
    };
    let pk = take(&mut m, "lpk")?;
    let rk = take(&mut m, "lrk")?;
    let n: usize = take(&mut m, "dn")?
        .parse()
        .map_err(|_| StoreError::Corrupt("dn".into()))?;
    let mut json = String::new();
    for i in 0..n {
        json.push_str(&take(&mut m, &format!("d{i}"))?);
    }
    let props = match serde_json::from_str(&json) {
        Ok(Value::Object(p)) => p,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "{pk}/{rk}: data is not a JSON object"
            )))
        }
    };
    let etag = m
        .get("odata.etag")
        .and_then(|e| e.as_str())
        .map(|e| Etag(e.to_string()));
    Ok(Entity {
        pk,
        rk,
        props,
        etag,
    })
}

fn status(e: &azure_core::Error) -> Option<u16> {
    match e.kind() {
        ErrorKind::HttpResponse { status, .. } => Some(u16::from(*status)),
        _ => None,
    }
}

fn map_err(e: azure_core::Error) -> StoreError {
    match status(&e) {
        Some(409) => StoreError::Conflict,
        Some(412) => StoreError::PreconditionFailed,
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn azure_etag(e: &Etag) -> azure_core::Etag {
    azure_core::Etag::from(e.0.clone())
}

impl TableStore {
    /// One partition's entities, ordered by row key: those whose row key starts with
    /// `rk_prefix` (a key range) and, with `filter`, whose string property equals a value
    /// (its `p_` copy, filtered by the service; checked again here, since only short strings
    /// are copied).
    async fn partition_where(
        &self,
        table: Table,
        pk: &str,
        rk_prefix: Option<&str>,
        filter: Option<(&str, &str)>,
    ) -> Result<Vec<Entity>, StoreError> {
        let mut query = format!("PartitionKey eq {}", literal(&encode_key(pk)));
        if let Some(prefix) = rk_prefix.filter(|p| !p.is_empty()) {
            let lo = encode_prefix(prefix);
            query.push_str(&format!(" and RowKey ge {}", literal(&lo)));
            if let Some(hi) = super::prefix_end(&lo) {
                query.push_str(&format!(" and RowKey lt {}", literal(&hi)));
            }
        }
        if let Some((prop, value)) = filter {
            if !is_identifier(prop) {
                return Err(StoreError::Corrupt(format!(
                    "{prop:?} is not a property name"
                )));
            }
            query.push_str(&format!(" and p_{prop} eq {}", literal(value)));
        }
        let mut rows = self.query(table, query).await?;
        if let Some(prefix) = rk_prefix {
            // Over-long keys share a cut prefix in storage; their own keys tell them apart.
            rows.retain(|r| r.rk.starts_with(prefix));
        }
        if let Some((prop, value)) = filter {
            rows.retain(|e| e.props.get(prop).and_then(Value::as_str) == Some(value));
        }
        rows.sort_by(|a, b| a.rk.cmp(&b.rk));
        Ok(rows)
    }

    async fn query(&self, t: Table, filter: String) -> Result<Vec<Entity>, StoreError> {
        let mut stream = self
            .table(t)
            .query()
            .filter(filter)
            .into_stream::<Map<String, Value>>();
        let mut out = Vec::new();
        while let Some(page) = stream.next().await {
            for e in page.map_err(map_err)?.entities {
                out.push(from_wire(e)?);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Store for TableStore {
    async fn get(&self, table: Table, pk: &str, rk: &str) -> Result<Option<Entity>, StoreError> {
        let client = self
            .table(table)
            .partition_key_client(encode_key(pk))
            .entity_client(encode_key(rk));
        match client.get::<Map<String, Value>>().await {
            Ok(resp) => {
                let mut e = from_wire(resp.entity)?;
                e.etag = Some(Etag(resp.etag.to_string()));
                Ok(Some(e))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn insert(&self, table: Table, row: Row) -> Result<Etag, StoreError> {
        let (wire, _) = to_wire(&row)?;
        let resp = self
            .table(table)
            .insert::<_, Map<String, Value>>(wire)
            .map_err(map_err)?
            .return_entity(false)
            .await
            .map_err(map_err)?;
        Ok(Etag(resp.etag.to_string()))
    }

    async fn update(&self, table: Table, row: Row, etag: &Etag) -> Result<Etag, StoreError> {
        let (wire, _) = to_wire(&row)?;
        let client = self
            .table(table)
            .partition_key_client(encode_key(&row.pk))
            .entity_client(encode_key(&row.rk));
        match client
            .update(wire, IfMatchCondition::Etag(azure_etag(etag)))
            .map_err(map_err)?
            .await
        {
            Ok(resp) => Ok(Etag(resp.etag.to_string())),
            Err(e) if matches!(status(&e), Some(404) | Some(412)) => {
                Err(StoreError::PreconditionFailed)
            }
            Err(e) => Err(map_err(e)),
        }
    }

    async fn upsert(&self, table: Table, row: Row) -> Result<Etag, StoreError> {
        let (wire, _) = to_wire(&row)?;
        let client = self
            .table(table)
            .partition_key_client(encode_key(&row.pk))
            .entity_client(encode_key(&row.rk));
        let resp = client
            .insert_or_replace(wire)
            .map_err(map_err)?
            .await
            .map_err(map_err)?;
        Ok(Etag(resp.etag.to_string()))
    }

    async fn batch(
        &self,
        table: Table,
        pk: &str,
        ops: Vec<BatchOp>,
    ) -> Result<Vec<Etag>, StoreError> {
        super::limits::check_distinct(ops.iter().map(BatchOp::rk))
            .map_err(|e| StoreError::TooLarge(format!("{}/{pk}: {e}", table.name())))?;
        let pkc = self.table(table).partition_key_client(encode_key(pk));
        let mut tx = pkc.transaction();
        let n = ops.len();
        let mut staged = Vec::with_capacity(n);
        for op in ops {
            let wire = match &op {
                BatchOp::Insert(e) | BatchOp::Upsert(e) | BatchOp::Update(e, _) => {
                    Some(to_wire(e)?)
                }
                BatchOp::Delete { .. } => None,
            };
            staged.push((wire, op_of(op)));
        }
        let sizes: Vec<usize> = staged
            .iter()
            .map(|(w, _)| w.as_ref().map_or(0, |(_, size)| *size))
            .collect();
        super::limits::check_batch(&sizes)
            .map_err(|e| StoreError::TooLarge(format!("{}/{pk}: {e}", table.name())))?;
        for (wire, op) in staged {
            tx = match (op, wire.map(|(w, _)| w)) {
                (Staged::Insert, Some(w)) => tx.insert(w),
                (Staged::Upsert(rk), Some(w)) => tx.insert_or_replace(encode_key(&rk), w),
                (Staged::Update(rk, etag), Some(w)) => tx.update(
                    encode_key(&rk),
                    w,
                    Some(IfMatchCondition::Etag(azure_etag(&etag))),
                ),
                (Staged::Delete { rk, etag }, _) => tx.delete(
                    encode_key(&rk),
                    Some(match etag {
                        Some(e) => IfMatchCondition::Etag(azure_etag(&e)),
                        None => IfMatchCondition::Any,
                    }),
                ),
                (_, None) => unreachable!("every write is staged with its entity"),
            }
            .map_err(map_err)?;
        }
        let resp = tx.await.map_err(map_err)?;
        // A failed changeset still answers 202: the failure is inside, per operation.
        let mut etags = Vec::with_capacity(n);
        for r in &resp.operation_responses {
            let code = u16::from(r.status_code);
            match code {
                200..=299 => etags.push(Etag(
                    r.etag.as_ref().map(|e| e.to_string()).unwrap_or_default(),
                )),
                409 => return Err(StoreError::Conflict),
                404 | 412 => return Err(StoreError::PreconditionFailed),
                _ => {
                    return Err(StoreError::Unavailable(format!(
                        "batch operation failed with HTTP {code}"
                    )))
                }
            }
        }
        if etags.len() != n {
            return Err(StoreError::Unavailable(format!(
                "batch answered {} of {n} operations",
                etags.len()
            )));
        }
        Ok(etags)
    }

    async fn query_partition(
        &self,
        table: Table,
        pk: &str,
        rk_prefix: Option<&str>,
    ) -> Result<Vec<Entity>, StoreError> {
        self.partition_where(table, pk, rk_prefix, None).await
    }

    async fn query_partitions_where(
        &self,
        table: Table,
        pks: &[String],
        rk_prefix: Option<&str>,
        (prop, value): (&str, &str),
    ) -> Result<Vec<Vec<Entity>>, StoreError> {
        let mut out = Vec::with_capacity(pks.len());
        for pk in pks {
            out.push(
                self.partition_where(table, pk, rk_prefix, Some((prop, value)))
                    .await?,
            );
        }
        Ok(out)
    }

    async fn query_range(
        &self,
        table: Table,
        pk: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Entity>, StoreError> {
        // Escaping keeps the order of the keys this is used with (their leading parts are
        // digits and key separators); over-long keys keep their prefix, so a bound on it holds.
        let query = format!(
            "PartitionKey eq {} and RowKey ge {} and RowKey lt {}",
            literal(&encode_key(pk)),
            literal(&escape_key(from)),
            literal(&escape_key(to))
        );
        let mut stream = self
            .table(table)
            .query()
            .filter(query)
            .top(limit.clamp(1, 1000) as u32)
            .into_stream::<Map<String, Value>>();
        let mut out = Vec::new();
        while let Some(page) = stream.next().await {
            for e in page.map_err(map_err)?.entities {
                let e = from_wire(e)?;
                if e.rk.as_str() >= from && e.rk.as_str() < to {
                    out.push(e);
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        out.sort_by(|a, b| a.rk.cmp(&b.rk));
        out.truncate(limit);
        Ok(out)
    }

    async fn query_pk_prefix(
        &self,
        table: Table,
        pk_prefix: &str,
        rk: &str,
    ) -> Result<Vec<Entity>, StoreError> {
        let lo = encode_prefix(pk_prefix);
        let mut query = format!(
            "PartitionKey ge {} and RowKey eq {}",
            literal(&lo),
            literal(&encode_key(rk))
        );
        if let Some(hi) = super::prefix_end(&lo) {
            query.push_str(&format!(" and PartitionKey lt {}", literal(&hi)));
        }
        let mut rows = self.query(table, query).await?;
        // Over-long keys share a cut prefix in storage; their own keys tell them apart.
        rows.retain(|r| r.pk.starts_with(pk_prefix) && r.rk == rk);
        rows.sort_by(|a, b| a.pk.cmp(&b.pk));
        Ok(rows)
    }

    async fn query_where(
        &self,
        table: Table,
        prop: &str,
        value: &str,
    ) -> Result<Vec<Entity>, StoreError> {
        if !is_identifier(prop) {
            return Err(StoreError::Corrupt(format!(
                "{prop:?} is not a property name"
            )));
        }
        let mut rows = self
            .query(table, format!("p_{prop} eq {}", literal(value)))
            .await?;
        rows.sort_by(|a, b| (&a.pk, &a.rk).cmp(&(&b.pk, &b.rk)));
        Ok(rows)
    }

    fn backend(&self) -> &'static str {
        "tables"
    }

    async fn query_before(
        &self,
        table: Table,
        (prop, value): (&str, &str),
        time_prop: &str,
        before: &str,
        limit: usize,
    ) -> Result<Vec<Entity>, StoreError> {
        if !is_identifier(prop) || !is_identifier(time_prop) {
            return Err(StoreError::Corrupt(format!(
                "{prop:?}/{time_prop:?} are not property names"
            )));
        }
        let filter = format!(
            "p_{prop} eq {} and p_{time_prop} lt {}",
            literal(value),
            literal(before)
        );
        let mut rows = self.query(table, filter).await?;
        rows.truncate(limit);
        Ok(rows)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.get(Table::Deliveries, "ping", "ping")
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_cut_in_utf16_units_never_inside_a_character() {
        let json = format!("{{\"t\":\"{}\"}}", "a😀é".repeat(20_000));
        let parts = chunks(&json);
        assert!(parts.len() >= 3);
        assert!(parts.iter().all(|p| p.encode_utf16().count() <= CHUNK));
        assert_eq!(parts.concat(), json);
        assert_eq!(chunks(""), vec![String::new()]);
    }

    #[test]
    fn keys_escape_what_table_storage_forbids_and_keep_prefixes() {
        assert_eq!(
            encode_key("github.com/o/r|refs/heads/main"),
            "github.com%2Fo%2Fr|refs%2Fheads%2Fmain"
        );
        assert_eq!(encode_key("a#b?c\\d'e%f\u{1}"), "a%23b%3Fc%5Cd%27e%25f%01");
        assert!(encode_key("review|o'brien").starts_with(&encode_key("review|")));
        let long = "x/".repeat(400);
        let k = encode_key(&long);
        assert!(k.encode_utf16().count() <= MAX_KEY);
        let wide = "😀/".repeat(300);
        assert!(encode_key(&wide).encode_utf16().count() <= MAX_KEY);
        assert!(encode_key(&wide).starts_with(&encode_prefix("😀/😀")));
        assert_ne!(encode_key(&long), encode_key(&"x/".repeat(401)));
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn records_round_trip_through_the_wire_shape() {
        let mut props = Map::new();
        props.insert("state".into(), Value::String("pending".into()));
        props.insert(
            "nested".into(),
            serde_json::json!({"a": [1, 2, {"b": "c"}]}),
        );
        props.insert("big".into(), Value::String("é".repeat(70_000)));
        let (wire, _) = to_wire(&Row::from_record("p/1", "r#2", &props)).unwrap();
        let m = wire.as_object().unwrap();
        assert_eq!(m["p_state"], "pending");
        assert!(m.get("p_big").is_none(), "long strings are not promoted");
        assert!(
            m.keys()
                .filter(|k| k.starts_with('d') && k.len() > 1 && k[1..].parse::<u32>().is_ok())
                .count()
                >= 3
        );
        let back = from_wire(m.clone()).unwrap();
        assert_eq!((back.pk.as_str(), back.rk.as_str()), ("p/1", "r#2"));
        assert_eq!(back.props, props);
    }
}
