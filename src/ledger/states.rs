//! The object states this process wrote last, with the etags the store gave them: a Flux
//! event for an object whose state is here skips the state read (one storage round trip, and
//! on SQLite one hop to a read connection, fewer per event).
//!
//! Safe with any number of writers, here or in other instances: the state is only ever
//! written conditionally on its etag, so a state that someone else changed since it was
//! cached fails its write (`PreconditionFailed`), and the event is read again from the store
//! and retried (the entry was taken out of the cache when the event started). An entry is
//! taken, not copied, so two events of one object in flight at once never both use it: the
//! second reads the store.
//!
//! Bounded: `CAPACITY` entries in independently locked shards (`shards.rs`), so no single
//! lock is on every request's path; when a shard is full, an arbitrary entry of it makes
//! room. A state is kept as its JSON text (~2.4 KB, one allocation), not as the struct (dozens of
//! small allocations): cached structs, each living for a while among the request's
//! short-lived allocations, made resident memory climb by ~10 MB every 8 s of full load
//! (2,000 objects) where one string per entry keeps it level. Decoding it again costs a few
//! microseconds, far less than the read it replaces.

use super::shards::Shards;
use crate::core::ObjectState;
use crate::store::Etag;

/// States kept: the busiest two thousand objects, ~5 MB.
pub const CAPACITY: usize = 2048;

/// A cached state: the state, its row's etag, and — when this process also wrote the row of
/// the state's current target last — that row's etag, so the next event of the same commit
/// writes the row conditionally without reading it (another writer's change fails the
/// write, and the event is read again).
#[derive(Debug)]
pub struct Cached {
    pub state: ObjectState,
    pub etag: Etag,
    pub target_etag: Option<Etag>,
}

#[derive(Debug)]
pub struct StateCache {
    /// An object's partition key → its state's JSON text and etag, and the etag of its
    /// current target row as this process wrote it (see [`Cached`]).
    states: Shards<(String, Etag, Option<Etag>)>,
}

impl Default for StateCache {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl StateCache {
    pub fn with_capacity(capacity: usize) -> Self {
        StateCache {
            states: Shards::with_capacity(capacity),
        }
    }

    /// Takes the object's state out, if this process wrote it last.
    pub fn take(&self, pk: &str) -> Option<Cached> {
        let (json, etag, target_etag) = self.states.remove(pk)?;
        // It was encoded here: a failure is a bug, and reading the store is the remedy.
        serde_json::from_str(&json).ok().map(|state| Cached {
            state,
            etag,
            target_etag,
        })
    }

    /// Remembers a state read and left unchanged, with its etag.
    pub fn put_state(&self, pk: &str, state: &ObjectState, etag: Etag) {
        if let Ok(json) = serde_json::to_string(state) {
            self.put(pk, json, etag, None);
        }
    }

    /// Remembers the state just written, as the JSON text of its row (the text the store
    /// was given: encoded once for both), with its etag and its current target row's.
    pub fn put(&self, pk: &str, json: String, etag: Etag, target_etag: Option<Etag>) {
        if let Some(mut shard) = self.states.lock(pk) {
            self.states
                .insert(&mut shard, pk, (json, etag, target_etag), |_| {});
        }
    }

    /// Forgets the object's state (written elsewhere in this process).
    pub fn forget(&self, pk: &str) {
        self.states.remove(pk);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.states.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flux::ObjectRef;

    fn state(name: &str) -> ObjectState {
        ObjectState::new(ObjectRef {
            cluster: "c".into(),
            kind: "Kustomization".into(),
            namespace: "flux-system".into(),
            name: name.into(),
        })
    }

    #[test]
    fn an_entry_is_taken_once() {
        let cache = StateCache::default();
        cache.put_state("a", &state("a"), Etag("1".into()));
        let c = cache.take("a").expect("cached");
        assert_eq!(c.state.object.name, "a");
        assert_eq!(c.etag, Etag("1".into()));
        assert!(cache.take("a").is_none(), "a second event reads the store");
    }

    #[test]
    fn it_stays_within_its_capacity() {
        let cache = StateCache::with_capacity(64);
        for i in 0..10_000 {
            let pk = format!("o{i}");
            cache.put_state(&pk, &state(&pk), Etag(i.to_string()));
        }
        assert!(cache.len() <= 64, "{} entries", cache.len());
        assert!(cache.len() >= 32, "{} entries", cache.len());
        cache.put_state("x", &state("x"), Etag("1".into()));
        cache.forget("x");
        assert!(cache.take("x").is_none());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let cache = StateCache::with_capacity(0);
        cache.put_state("a", &state("a"), Etag("1".into()));
        assert!(cache.is_empty());
    }
}
