//! A bounded map split into independently locked shards, so no single lock is on every
//! request's path: the state cache (`states.rs`) and the missing commits (`missing.rs`).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 16;

#[derive(Debug)]
pub struct Shards<V> {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<String, V>>>,
    per_shard: usize,
}

impl<V> Shards<V> {
    /// At most about `capacity` entries in all (0: keeps nothing).
    pub fn with_capacity(capacity: usize) -> Self {
        Shards {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    /// The shard of `key`, locked (`None` if a panic poisoned it: the caller goes without).
    pub fn lock(&self, key: &str) -> Option<MutexGuard<'_, HashMap<String, V>>> {
        self.shards[self.hasher.hash_one(key) as usize % SHARDS]
            .lock()
            .ok()
    }

    /// Inserts into `shard` (the locked shard of `key`). A full shard first gets
    /// `make_room` (drop what is stale), then loses an arbitrary entry.
    pub fn insert(
        &self,
        shard: &mut HashMap<String, V>,
        key: &str,
        value: V,
        make_room: impl FnOnce(&mut HashMap<String, V>),
    ) {
        if self.per_shard == 0 {
            return;
        }
        if shard.len() >= self.per_shard && !shard.contains_key(key) {
            make_room(shard);
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().cloned() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(key.to_string(), value);
    }

    pub fn remove(&self, key: &str) -> Option<V> {
        self.lock(key)?.remove(key)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }
}
