//! Branch history as a graph: which pushed commit came after which, from the pushes'
//! before/after chains and commit lists. Pure.
//!
//! Every commit of a non-forced push descends from the push's `before`, and each listed
//! commit descends from the one listed before it; the new head descends from all of them.
//! Those are the only edges we draw: hosts cap their commit lists, so the graph knows
//! ancestry ("came after"), not direct parenthood. A forced push rewrites the branch: its
//! commits are not descendants of its `before`.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::domain::CommitSha;

/// One recorded update of the ref, in the order pushes were received.
#[derive(Debug, Clone, PartialEq)]
pub struct PushStep {
    pub before: Option<CommitSha>,
    /// The commits it carried, oldest first, its head last.
    pub commits: Vec<CommitSha>,
    pub forced: bool,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct BranchGraph {
    /// The ref's pushes in the order received.
    pushes: Vec<PushStep>,
    /// child → commits it descends from (not necessarily direct parents).
    up: HashMap<CommitSha, Vec<CommitSha>>,
    /// Commits some push carried (listed or as the new head): only these can be superseded.
    pushed: HashSet<CommitSha>,
}

impl BranchGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one push: `commits` oldest first, `head` the ref's new commit.
    pub fn add_push(
        &mut self,
        before: Option<&CommitSha>,
        commits: &[CommitSha],
        head: Option<&CommitSha>,
        forced: bool,
    ) {
        self.add_push_received(before, commits, head, forced, DateTime::UNIX_EPOCH)
    }

    /// [`add_push`](Self::add_push), with when the push was received (pushes are added in
    /// the order received).
    pub fn add_push_received(
        &mut self,
        before: Option<&CommitSha>,
        commits: &[CommitSha],
        head: Option<&CommitSha>,
        forced: bool,
        received_at: DateTime<Utc>,
    ) {
        let mut chain: Vec<&CommitSha> = commits.iter().collect();
        if let Some(h) = head {
            if chain.last() != Some(&h) && !chain.contains(&h) {
                chain.push(h);
            }
        }
        self.pushes.push(PushStep {
            before: before.cloned(),
            commits: chain.iter().map(|c| (*c).clone()).collect(),
            forced,
            received_at,
        });
        let mut prev = if forced { None } else { before };
        for c in chain {
            self.pushed.insert(c.clone());
            if let Some(p) = prev {
                if p != c {
                    self.up.entry(c.clone()).or_default().push(p.clone());
                }
            }
            prev = Some(c);
        }
    }

    /// The pushes received after the first one that carried `sha` (at most the
    /// [`FOLLOW_PUSHES`] most recent): what an object that reports `sha` and starts following
    /// the ref would have been told, had it followed before they arrived — as it does when
    /// its report comes first and that push makes it follow.
    pub fn pushes_after(&self, sha: &CommitSha) -> &[PushStep] {
        let Some(first) = self.pushes.iter().position(|p| p.commits.contains(sha)) else {
            return &[];
        };
        let after = &self.pushes[first + 1..];
        &after[after.len().saturating_sub(FOLLOW_PUSHES)..]
    }

    /// When the first push that carried `sha` was received.
    pub fn received_at(&self, sha: &CommitSha) -> Option<DateTime<Utc>> {
        self.pushes
            .iter()
            .find(|p| p.commits.contains(sha))
            .map(|p| p.received_at)
    }

    pub fn was_pushed(&self, sha: &CommitSha) -> bool {
        self.pushed.contains(sha)
    }

    /// Every commit `sha` descends from (not including itself).
    pub fn ancestors(&self, sha: &CommitSha) -> HashSet<CommitSha> {
        let mut seen = HashSet::new();
        let mut stack = vec![sha.clone()];
        while let Some(c) = stack.pop() {
            for p in self.up.get(&c).into_iter().flatten() {
                if p != sha && seen.insert(p.clone()) {
                    stack.push(p.clone());
                }
            }
        }
        seen
    }

    pub fn is_ancestor(&self, ancestor: &CommitSha, of: &CommitSha) -> bool {
        self.ancestors(of).contains(ancestor)
    }

    /// The pushed commits an object skipped when it applied `applied` after `previous`
    /// (its last applied commit, if any): ancestors of `applied` that are neither `previous`
    /// nor its ancestors — at most [`FIRST_APPLY_WALK`] of them, the nearest to `applied`
    /// (an object new on a branch with years of history does not mark them all). Sorted for
    /// determinism.
    ///
    /// A commit pushed again after `applied`'s last push (a rollback to it) came after it on
    /// the branch: the object is expected to apply it, it was not skipped.
    pub fn superseded(&self, applied: &CommitSha, previous: Option<&CommitSha>) -> Vec<CommitSha> {
        let mut stop = HashSet::new();
        if let Some(p) = previous {
            stop = self.ancestors(p);
            stop.insert(p.clone());
        }
        // Only what was pushed up to `applied`'s last push: a later push (a rollback to an
        // older commit) does not change what this apply skipped — the same answer whether
        // the apply is processed before or after that push arrives.
        let until = self
            .pushes
            .iter()
            .rposition(|p| p.commits.contains(applied))
            .map_or(self.pushes.len(), |last| last + 1);
        let pushed: HashSet<&CommitSha> = self.pushes[..until]
            .iter()
            .flat_map(|p| &p.commits)
            .collect();
        // What the previous apply already settled — unless a push after it (a rollback)
        // brought it back to be applied again.
        if let Some(p) = previous {
            let from = self
                .pushes
                .iter()
                .rposition(|s| s.commits.contains(p))
                .map_or(until, |last| last + 1);
            for s in self.pushes.get(from..until).unwrap_or_default() {
                for c in &s.commits {
                    stop.remove(c);
                }
            }
        }
        self.nearest_pushed(applied, &stop, &|c| pushed.contains(c))
    }

    /// The commits a forced push from `before` to `after` removed from the branch: `before`
    /// and what it descends from through known pushes, less `after` and what it descends
    /// from. Only pushed commits: `before` and at most [`FIRST_APPLY_WALK`] before it.
    pub fn removed(&self, before: &CommitSha, after: Option<&CommitSha>) -> Vec<CommitSha> {
        let mut kept = HashSet::new();
        if let Some(a) = after {
            kept = self.ancestors(a);
            kept.insert(a.clone());
        }
        if kept.contains(before) {
            return vec![];
        }
        let mut out = self.nearest_pushed(before, &kept, &|c| self.pushed.contains(c));
        if self.pushed.contains(before) {
            out.push(before.clone());
            out.sort();
        }
        out
    }

    /// Breadth-first from `from` (excluded) through what it descends from, not entering
    /// `stop`: the first [`FIRST_APPLY_WALK`] commits met that are `pushed`, sorted.
    fn nearest_pushed(
        &self,
        from: &CommitSha,
        stop: &HashSet<CommitSha>,
        pushed: &dyn Fn(&CommitSha) -> bool,
    ) -> Vec<CommitSha> {
        let mut seen: HashSet<&CommitSha> = HashSet::new();
        let mut queue: std::collections::VecDeque<&CommitSha> = [from].into();
        let mut out = BTreeSet::new();
        seen.insert(from);
        while let Some(c) = queue.pop_front() {
            for p in self.up.get(c).into_iter().flatten() {
                if stop.contains(p) || !seen.insert(p) {
                    continue;
                }
                if pushed(p) {
                    out.insert(p.clone());
                    if out.len() == FIRST_APPLY_WALK {
                        return out.into_iter().collect();
                    }
                }
                queue.push_back(p);
            }
        }
        out.into_iter().collect()
    }
}

/// How many commits one apply supersedes (or one forced push discards) at most: the nearest
/// ones. An object's first apply on a branch with a long history marks its 50 most recent
/// commits superseded, not all of them — rows and the object's state stay bounded.
pub const FIRST_APPLY_WALK: usize = 50;

/// How many pushes after the commit an object first reports on a branch it starts following
/// are replayed for it (see [`BranchGraph::pushes_after`]).
pub const FOLLOW_PUSHES: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sha(n: u8) -> CommitSha {
        CommitSha::parse(&format!("{n:02x}").repeat(20)).unwrap()
    }

    #[test]
    fn chains_across_pushes() {
        let mut g = BranchGraph::new();
        g.add_push(Some(&sha(1)), &[sha(2), sha(3)], Some(&sha(3)), false);
        g.add_push(Some(&sha(3)), &[sha(4)], Some(&sha(4)), false);
        g.add_push(Some(&sha(4)), &[sha(5), sha(6)], Some(&sha(6)), false);
        assert!(g.is_ancestor(&sha(2), &sha(6)));
        assert!(!g.is_ancestor(&sha(6), &sha(2)));
        // 1 was never pushed (only a `before`): it is never reported superseded.
        assert_eq!(
            g.superseded(&sha(6), None),
            vec![sha(2), sha(3), sha(4), sha(5)]
        );
        assert_eq!(g.superseded(&sha(6), Some(&sha(3))), vec![sha(4), sha(5)]);
        assert_eq!(g.superseded(&sha(4), Some(&sha(4))), vec![]);
    }

    #[test]
    fn forced_push_cuts_the_chain() {
        let mut g = BranchGraph::new();
        g.add_push(Some(&sha(1)), &[sha(2)], Some(&sha(2)), false);
        g.add_push(Some(&sha(2)), &[sha(9)], Some(&sha(9)), true);
        assert!(!g.is_ancestor(&sha(2), &sha(9)));
        assert_eq!(g.superseded(&sha(9), Some(&sha(2))), vec![]);
    }

    #[test]
    fn head_without_listed_commits_still_chains() {
        // Bitbucket Data Center: no commit list, only from/to hashes.
        let mut g = BranchGraph::new();
        g.add_push(Some(&sha(1)), &[], Some(&sha(2)), false);
        g.add_push(Some(&sha(2)), &[], Some(&sha(3)), false);
        assert_eq!(g.superseded(&sha(3), None), vec![sha(2)]);
    }

    #[test]
    fn cycles_from_odd_histories_terminate() {
        let mut g = BranchGraph::new();
        g.add_push(Some(&sha(1)), &[sha(2)], Some(&sha(2)), false);
        g.add_push(Some(&sha(2)), &[sha(1)], Some(&sha(1)), false);
        assert!(g.is_ancestor(&sha(1), &sha(2)));
        let _ = g.superseded(&sha(1), None);
    }
}
