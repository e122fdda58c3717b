//! Commits a Flux event named that no push had recorded, remembered for a few seconds so
//! the next events of the same commit skip the lookup: one reconciliation sends several
//! events within a second or two, and a source whose pushes never reach fluxtrail (a
//! repository without a webhook) would otherwise cost a read on every event. A measured
//! ~17% of full-load Flux throughput when no commit is known.
//!
//! Never wrong for long, and never wrong after a push this process recorded:
//! - a push recorded here forgets its commits at once (after its rows are written), and a
//!   lookup that raced with it is not remembered: `note` only keeps an absence if no push was
//!   recorded since the lookup began (`epoch`);
//! - a push recorded by another instance is seen at most `TTL` later. Until then that commit's
//!   events are projected as if it had not been pushed yet — exactly what happens anyway when
//!   Flux reports a commit before its webhook arrives, which the ledger already reconciles.
//!
//! Bounded: `CAPACITY` entries in independently locked shards (`shards.rs`); a full shard
//! drops its expired entries, then an arbitrary one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::shards::Shards;

pub const CAPACITY: usize = 4096;
/// How long an absence is believed.
pub const TTL: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct MissingCommits {
    /// A sha → when it was looked up and not found.
    absent: Shards<Instant>,
    /// Pushes recorded by this process so far.
    epoch: AtomicU64,
}

impl Default for MissingCommits {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl MissingCommits {
    pub fn with_capacity(capacity: usize) -> Self {
        MissingCommits {
            absent: Shards::with_capacity(capacity),
            epoch: AtomicU64::new(0),
        }
    }

    /// Whether `sha` was looked up less than `TTL` before `now` and not found.
    pub fn known_missing(&self, sha: &str, now: Instant) -> bool {
        self.absent
            .lock(sha)
            .and_then(|s| s.get(sha).copied())
            .is_some_and(|at| now.saturating_duration_since(at) < TTL)
    }

    /// To call before a lookup: what `note` compares against.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Remembers that a lookup begun at `epoch` did not find `sha` — unless a push was
    /// recorded since (it may have carried the commit).
    pub fn note(&self, sha: &str, epoch: u64, now: Instant) {
        let Some(mut shard) = self.absent.lock(sha) else {
            return;
        };
        // Checked under the shard's lock, which `pushed` takes after moving the epoch on.
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        // Expired entries make room first.
        self.absent.insert(&mut shard, sha, now, |s| {
            s.retain(|_, at| now.saturating_duration_since(*at) < TTL)
        });
    }

    /// A push's commits were written: forget them, and make lookups in flight not remember.
    pub fn pushed<'a>(&self, shas: impl IntoIterator<Item = &'a str>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for sha in shas {
            self.absent.remove(sha);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absence_is_believed_for_the_ttl_only() {
        let m = MissingCommits::default();
        let t0 = Instant::now();
        assert!(!m.known_missing("a", t0));
        m.note("a", m.epoch(), t0);
        assert!(m.known_missing("a", t0 + TTL / 2));
        assert!(!m.known_missing("a", t0 + TTL));
        assert!(!m.known_missing("b", t0));
    }

    #[test]
    fn a_push_forgets_its_commits_and_lookups_in_flight() {
        let m = MissingCommits::default();
        let t0 = Instant::now();
        m.note("a", m.epoch(), t0);
        let before = m.epoch();
        m.pushed(["a"]);
        assert!(!m.known_missing("a", t0), "pushed here: looked up again");
        // A lookup that began before the push and found nothing is not remembered.
        m.note("b", before, t0);
        assert!(!m.known_missing("b", t0));
        m.note("b", m.epoch(), t0);
        assert!(m.known_missing("b", t0));
    }

    #[test]
    fn it_stays_within_its_capacity() {
        let m = MissingCommits::with_capacity(64);
        let t0 = Instant::now();
        for i in 0..10_000 {
            m.note(&format!("c{i}"), m.epoch(), t0);
        }
        let n = m.absent.len();
        assert!((32..=64).contains(&n), "{n} entries");
        // Expired entries make room first.
        m.note("late", m.epoch(), t0 + TTL);
        assert!(m.known_missing("late", t0 + TTL));
    }
}
