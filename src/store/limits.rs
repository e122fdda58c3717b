//! Azure Table Storage's limits, checked on every entity the Table Storage backend sends (and,
//! in debug builds, on every row the SQLite backend writes, encoded as Table Storage would
//! encode it): Azurite enforces none of them, so without this a row real Azure refuses would
//! pass every test here and be answered 503 forever in production.
//!
//! From "Understanding the Table service data model" and "Performing entity group
//! transactions" (learn.microsoft.com):
//! - an entity is at most 1 MiB, counted as 4 bytes + 2 per key character (UTF-16) + per
//!   property 8 bytes + 2 per name character + its value (a string: 4 + 2 per UTF-16 unit);
//! - a string property is at most 64 KiB (32 Ki UTF-16 units);
//! - at most 252 properties of one's own (255 with PartitionKey, RowKey and Timestamp);
//! - keys at most 1 KiB (512 UTF-16 units), without `/ \ # ?` or control characters;
//! - a batch is at most 100 operations and 4 MiB.

use serde_json::{Map, Value};

pub const MAX_ENTITY_BYTES: usize = 1 << 20;
pub const MAX_STRING_BYTES: usize = 64 * 1024;
pub const MAX_PROPERTIES: usize = 252;
pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_BATCH_OPS: usize = 100;
pub const MAX_BATCH_BYTES: usize = 4 << 20;

fn utf16_bytes(s: &str) -> usize {
    s.encode_utf16().count() * 2
}

fn check_key(name: &str, key: &str) -> Result<usize, String> {
    let bytes = utf16_bytes(key);
    if bytes > MAX_KEY_BYTES {
        return Err(format!("{name} is {bytes} bytes (limit {MAX_KEY_BYTES})"));
    }
    if let Some(c) = key
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '#' | '?') || c.is_control())
    {
        return Err(format!("{name} contains {c:?}"));
    }
    Ok(bytes)
}

/// Checks one entity as sent to Table Storage (its JSON: `PartitionKey`, `RowKey`, the
/// properties, OData annotations ignored). Returns its size in Azure's count.
pub fn check_entity(wire: &Map<String, Value>) -> Result<usize, String> {
    let mut size = 4;
    let mut properties = 0;
    for (name, value) in wire {
        if name.contains("@odata") || name.starts_with("odata.") {
            continue;
        }
        if name == "PartitionKey" || name == "RowKey" {
            size += check_key(name, value.as_str().unwrap_or_default())?;
            continue;
        }
        properties += 1;
        size += 8 + utf16_bytes(name);
        size += match value {
            Value::String(s) => {
                let bytes = utf16_bytes(s);
                if bytes > MAX_STRING_BYTES {
                    return Err(format!(
                        "property {name} is {bytes} bytes (limit {MAX_STRING_BYTES})"
                    ));
                }
                4 + bytes
            }
            Value::Bool(_) => 1,
            Value::Number(_) => 8,
            Value::Null => 0,
            other => {
                return Err(format!(
                    "property {name} is {} (Table Storage has no such type)",
                    if other.is_array() {
                        "an array"
                    } else {
                        "an object"
                    }
                ))
            }
        };
    }
    if properties > MAX_PROPERTIES {
        return Err(format!("{properties} properties (limit {MAX_PROPERTIES})"));
    }
    if size > MAX_ENTITY_BYTES {
        return Err(format!("entity is {size} bytes (limit {MAX_ENTITY_BYTES})"));
    }
    Ok(size)
}

/// Table Storage refuses a batch that names one row twice (400 `InvalidDuplicateRow`), as a
/// whole; SQLite would apply both. `rks`: the row keys of the batch's operations.
pub fn check_distinct<'a>(rks: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for rk in rks {
        if !seen.insert(rk) {
            return Err(format!("batch names row {rk:?} twice"));
        }
    }
    Ok(())
}

/// Checks a batch of entities already checked one by one (their sizes).
pub fn check_batch(sizes: &[usize]) -> Result<(), String> {
    if sizes.len() > MAX_BATCH_OPS {
        return Err(format!(
            "batch of {} operations (limit {MAX_BATCH_OPS})",
            sizes.len()
        ));
    }
    let total: usize = sizes.iter().sum();
    if total > MAX_BATCH_BYTES {
        return Err(format!("batch of {total} bytes (limit {MAX_BATCH_BYTES})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn strings_are_counted_in_utf16() {
        // 20,000 emoji: 20,000 characters, 40,000 UTF-16 units, 80,000 bytes.
        let e = entity(json!({"PartitionKey": "p", "RowKey": "r", "d0": "😀".repeat(20_000)}));
        assert!(check_entity(&e).unwrap_err().contains("d0"));
        let e = entity(json!({"PartitionKey": "p", "RowKey": "r", "d0": "a".repeat(32_000)}));
        assert_eq!(check_entity(&e).unwrap(), 4 + 2 + 2 + 8 + 4 + 4 + 64_000);
    }

    #[test]
    fn entities_properties_keys_and_batches_have_limits() {
        let mut m = Map::new();
        m.insert("PartitionKey".into(), json!("p"));
        m.insert("RowKey".into(), json!("r"));
        for i in 0..17 {
            m.insert(format!("d{i}"), json!("a".repeat(32_000)));
        }
        assert!(check_entity(&m).unwrap_err().contains("entity is"));
        let mut m = Map::new();
        for i in 0..253 {
            m.insert(format!("p{i}"), json!(1));
        }
        assert!(check_entity(&m).unwrap_err().contains("253 properties"));
        for bad in ["a/b", "a#b", "a?b", "a\\b", "a\u{1}b", &"x".repeat(513)] {
            let e = entity(json!({"PartitionKey": bad, "RowKey": "r"}));
            assert!(check_entity(&e).is_err(), "{bad:?}");
        }
        assert!(check_batch(&[10; 101]).is_err());
        assert!(check_batch(&[1 << 20; 4]).is_ok());
        assert!(check_batch(&[(1 << 20) + 1, 1 << 20, 1 << 20, 1 << 20]).is_err());
    }
}
