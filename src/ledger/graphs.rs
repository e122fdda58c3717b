//! The branch graphs this process built last, one per followed ref, so that a Flux event
//! applying a new commit does not rebuild its branch's graph from up to `BRANCH_WINDOW` push
//! rows: it reads only the newest push-log key (one row) and reuses the graph built at that
//! key. A push recorded here forgets its ref's graph at once; one recorded by another
//! instance changes the newest key, except for a push received earlier that lands later —
//! which the graph then misses for at most `TTL`, like a read made a moment sooner (the push
//! path reconciles its followers whichever comes first, contract §3).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::core::BranchGraph;

/// Refs kept at most (the cache is cleared when it is full).
pub const CAPACITY: usize = 256;
/// How long a graph is reused at an unchanged newest key.
pub const TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct GraphCache {
    map: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    newest: String,
    built: Instant,
    graph: Arc<BranchGraph>,
}

impl GraphCache {
    /// The graph of push partition `pk` built at newest log key `newest`, if fresh.
    pub fn get(&self, pk: &str, newest: &str, now: Instant) -> Option<Arc<BranchGraph>> {
        let map = self.map.lock().ok()?;
        map.get(pk)
            .filter(|e| e.newest == newest && now.saturating_duration_since(e.built) < TTL)
            .map(|e| e.graph.clone())
    }

    pub fn put(&self, pk: &str, newest: String, built: Instant, graph: Arc<BranchGraph>) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= CAPACITY && !map.contains_key(pk) {
                map.clear();
            }
            map.insert(
                pk.to_string(),
                Entry {
                    newest,
                    built,
                    graph,
                },
            );
        }
    }

    /// A push to this ref was recorded here: its graph changed.
    pub fn forget(&self, pk: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(pk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_graph_is_reused_only_at_its_key_within_the_ttl_and_until_forgotten() {
        let cache = GraphCache::default();
        let t = Instant::now();
        cache.put("r", "log|1".into(), t, Arc::new(BranchGraph::new()));
        assert!(cache.get("r", "log|1", t).is_some());
        assert!(cache.get("r", "log|0", t).is_none(), "a newer push");
        assert!(cache.get("r", "log|1", t + TTL).is_none(), "too old");
        cache.forget("r");
        assert!(cache.get("r", "log|1", t).is_none());
    }
}
