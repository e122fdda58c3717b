//! The ledger's stored records and the pure rules that merge them.
//!
//! Every write of the ledger is a merge of what is stored with what arrived, and every merge
//! here is idempotent and order-independent: applying the same delivery twice, or two
//! deliveries in either order, leaves the same record. That is what makes redeliveries and
//! crash recovery harmless.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::core::Message;
use crate::domain::{CommitSha, GitRef, RepoKey};
use crate::git::{Commit, GitEvent, Merge, Person, Provider, PullRequest, Push, Review};
use crate::store::StoreError;

/// A delivery in the journal. Written first (`pending`), marked `done` once every projection
/// below has been written; a `pending` one is finished by a redelivery or at start-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    /// `github`, `gitlab`, … or `flux`.
    pub source: String,
    pub delivery_id: String,
    pub state: DeliveryState,
    pub received_at: DateTime<Utc>,
    /// The normalised delivery ([`Journaled`] as JSON text) while `pending`; empty once
    /// `done`, and empty when it is kept in `parts`.
    pub event: String,
    /// How many part rows (`{delivery id}|part|{n}`, [`JournalPart`]) hold the delivery's
    /// text instead: one entity of Table Storage holds at most 1 MiB, and a push may list
    /// 2,048 commits. Written before this entry, which is the commit point.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parts: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One piece of a journal entry's text too large for one entity. Tagged `state: part` so
/// recovery (`pending`) never takes it for an entry, and retention deletes it with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalPart {
    pub state: String,
    pub received_at: DateTime<Utc>,
    pub text: String,
}

/// The most UTF-16 units of a journal's text kept in one entity (800 KB of Table Storage's
/// 1 MiB per entity, which counts strings in UTF-16).
pub const JOURNAL_PART_UNITS: usize = 400_000;

/// The text cut into pieces of at most [`JOURNAL_PART_UNITS`] UTF-16 units (never inside a
/// character); one piece when it fits.
pub fn journal_pieces(text: &str) -> Vec<String> {
    crate::store::utf16_pieces(text, JOURNAL_PART_UNITS)
}

/// The row key of part `n` of a delivery's journal entry.
pub fn journal_part_key(delivery_id: &str, n: usize) -> String {
    format!("{delivery_id}|part|{n:05}")
}

/// What a journal entry replays: a Git delivery, which touches many partitions. (A Flux
/// event needs no journal: its state change is one atomic batch of its object's partition,
/// and its target rows are re-issued when the event is retried.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "camelCase")]
pub enum Journaled {
    Git { provider: Provider, event: GitEvent },
}

impl Journaled {
    pub fn source(&self) -> &'static str {
        match self {
            Journaled::Git { provider, .. } => provider.as_str(),
        }
    }
}

/// A message waiting in (or delivered from) an object's outbox. Row `outbox|{seq}|{id}` of
/// the object's partition, written in the same batch as the state change that caused it.
/// Where an outbox message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Waiting for (another) attempt.
    Pending,
    Delivered,
    /// Parked after too many failed attempts, or refused: kept, listed, re-drivable.
    Dead,
}

impl Delivery {
    /// As stored (the value `query_where` filters on).
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Pending => "pending",
            Delivery::Delivered => "delivered",
            Delivery::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Delivery> {
        [Delivery::Pending, Delivery::Delivered, Delivery::Dead]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxRecord {
    pub message: Message,
    /// A top-level string (`pending`, `delivered`, `dead`) so a scan can find them.
    pub delivery: Delivery,
    pub attempts: u32,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Not before: the backoff after a failed attempt.
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Still `pending` after `FLUXTRAIL_PUBLISH_MAX_ATTEMPTS` failed attempts (an outage):
    /// listed and counted as dead, but kept in line — its object's later messages wait
    /// behind it — and tried again by itself every capped backoff (5 min) until the
    /// publisher takes it. Only a message the publisher refuses stops (`dead`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parked: bool,
}

impl OutboxRecord {
    /// Handed over (or, for an internal message, settled): done.
    pub fn delivered(&mut self, now: DateTime<Utc>) {
        self.delivery = Delivery::Delivered;
        self.delivered_at = Some(now);
        self.next_attempt_at = None;
        self.last_error = None;
        self.parked = false;
    }

    /// A new message, waiting for its first attempt.
    pub fn pending(message: Message) -> Self {
        OutboxRecord {
            message,
            delivery: Delivery::Pending,
            attempts: 0,
            delivered_at: None,
            next_attempt_at: None,
            last_error: None,
            parked: false,
        }
    }
}

/// The row types of an object's partition (property `rowType`).
pub const ROW_STATE: &str = "state";
pub const ROW_INCIDENT: &str = "incident";
pub const ROW_OUTBOX: &str = "outbox";
pub const ROW_EVENT: &str = "event";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Done,
}

/// What a push told us about one commit. Row `commit` of the commit's partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitRecord {
    pub sha: String,
    pub repository: String,
    pub repository_url: String,
    pub provider: Provider,
    /// Every ref the commit was pushed to, sorted.
    pub refs: Vec<String>,
    pub message: Option<String>,
    pub author: Option<Person>,
    pub timestamp: Option<String>,
    pub url: Option<String>,
    /// When the first push that carried this commit was received, and by whom. For a commit
    /// only the host's API told us about (`source: api`), when that answer was recorded:
    /// shown nowhere as a push time (`push_time`).
    pub pushed_at: DateTime<Utc>,
    pub pushed_by: Option<String>,
    /// Who described it: a push webhook, or (part 12) the host's API after webhooks were
    /// lost. A push wins the merge: once one arrives, the commit is `push`.
    #[serde(default, skip_serializing_if = "Source::is_push")]
    pub source: Source,
}

pub use crate::git::Source;

impl CommitRecord {
    /// What the core needs of it, typed: a stored key or ref that does not parse is a
    /// corrupt row, said so — never dropped.
    pub fn info(&self, sha: CommitSha) -> Result<crate::core::CommitInfo, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt(format!("commit {sha}: {what}"));
        Ok(crate::core::CommitInfo {
            repository: RepoKey::from_url(&self.repository)
                .map_err(|e| corrupt(format!("repository {:?}: {e}", self.repository)))?,
            refs: self
                .refs
                .iter()
                .map(|r| GitRef::parse(r).map_err(|e| corrupt(e.to_string())))
                .collect::<Result<_, _>>()?,
            sha,
        })
    }

    pub fn from_push(
        provider: Provider,
        push: &Push,
        commit: &Commit,
        received_at: DateTime<Utc>,
    ) -> Self {
        CommitRecord {
            sha: commit.sha.to_string(),
            repository: push.repository.key.to_string(),
            repository_url: push.repository.url.clone(),
            provider,
            refs: vec![push.git_ref.clone()],
            message: commit.message.clone(),
            author: commit.author.clone(),
            timestamp: commit.timestamp.clone(),
            url: commit.url.clone(),
            pushed_at: received_at,
            pushed_by: push.pusher.clone(),
            source: push.source,
        }
    }

    /// When a push that carried it was received; `None` when only the API described it.
    pub fn push_time(&self) -> Option<DateTime<Utc>> {
        self.source.is_push().then_some(self.pushed_at)
    }

    /// Merges a later (or earlier) sighting of the same commit. Refs accumulate; the first
    /// push (by time received) names the pusher; details missing from one payload (Bitbucket
    /// Data Center sends none) are filled from another.
    pub fn merge(self, other: CommitRecord) -> CommitRecord {
        let key = |r: &CommitRecord| {
            (
                r.source,
                r.pushed_at,
                r.pushed_by.clone(),
                r.repository.clone(),
            )
        };
        let (mut first, second) = if key(&other) < key(&self) {
            (other, self)
        } else {
            (self, other)
        };
        for r in second.refs {
            if !first.refs.contains(&r) {
                first.refs.push(r);
            }
        }
        first.refs.sort();
        first.message = first.message.or(second.message);
        first.author = first.author.or(second.author);
        first.timestamp = first.timestamp.or(second.timestamp);
        first.url = first.url.or(second.url);
        first.pushed_by = first.pushed_by.or(second.pushed_by);
        first
    }
}

/// One ref update, kept for branch history: which commit came after which.
/// Partition `{repository}|{ref}`, row `{before}..{after}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRecord {
    pub provider: Provider,
    pub repository: String,
    pub git_ref: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub head: Option<String>,
    pub forced: bool,
    pub created: bool,
    pub deleted: bool,
    pub pusher: Option<String>,
    /// The payload's commits, oldest first (possibly capped by the host).
    pub commits: Vec<String>,
    pub received_at: DateTime<Utc>,
    /// `api`: the commits of a gap in the ref's push chain, from the host's compare API.
    #[serde(default, skip_serializing_if = "Source::is_push")]
    pub source: Source,
}

impl PushRecord {
    pub fn new(provider: Provider, push: &Push, received_at: DateTime<Utc>) -> Self {
        PushRecord {
            provider,
            repository: push.repository.key.to_string(),
            git_ref: push.git_ref.clone(),
            before: push.before.as_ref().map(ToString::to_string),
            after: push.after.as_ref().map(ToString::to_string),
            head: push.head.as_ref().map(ToString::to_string),
            forced: push.forced,
            created: push.created(),
            deleted: push.deleted(),
            pusher: push.pusher.clone(),
            commits: push.commits.iter().map(|c| c.sha.to_string()).collect(),
            received_at,
            source: push.source,
        }
    }

    pub fn partition(repository: &str, git_ref: &str) -> String {
        format!("{repository}|{git_ref}")
    }

    pub fn row(&self) -> String {
        let zero = "0";
        format!(
            "{}..{}",
            self.before.as_deref().unwrap_or(zero),
            self.after.as_deref().unwrap_or(zero)
        )
    }
}

/// The merge of a pull request. Partition `{repository}#{number}`, row `merge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeRecord {
    pub provider: Provider,
    pub repository: String,
    pub number: u64,
    pub url: Option<String>,
    /// The pull request's author, when the merge event names them.
    #[serde(default)]
    pub author: Option<String>,
    pub sha: String,
    pub merged_by: Option<String>,
    pub merged_at: Option<String>,
    pub target_ref: Option<String>,
    pub head: Option<String>,
}

impl MergeRecord {
    pub fn new(provider: Provider, pr: &PullRequest, m: &Merge) -> Self {
        MergeRecord {
            provider,
            repository: pr.repository.key.to_string(),
            number: pr.number,
            url: pr.url.clone(),
            author: pr.author.clone(),
            sha: m.sha.to_string(),
            merged_by: m.merged_by.clone(),
            merged_at: m.merged_at.clone(),
            target_ref: m.target_ref.clone(),
            head: m.head.as_ref().map(ToString::to_string),
        }
    }
}

/// A reviewer's latest verdict on a pull request. Partition `{repository}#{number}`,
/// row `review|{user}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewRecord {
    pub user: String,
    pub approved: bool,
    pub commit: Option<String>,
    pub at: Option<String>,
}

impl ReviewRecord {
    pub fn new(r: &Review) -> Self {
        ReviewRecord {
            user: r.user.clone(),
            approved: r.approved,
            commit: r.commit.as_ref().map(ToString::to_string),
            at: r.at.clone(),
        }
    }

    /// Keeps the newer verdict. Without timestamps on both, the incoming one wins: hosts
    /// deliver a reviewer's actions in order far more often than not.
    pub fn newer(stored: Option<ReviewRecord>, incoming: ReviewRecord) -> ReviewRecord {
        match stored {
            Some(s) => match (&s.at, &incoming.at) {
                (Some(a), Some(b)) if a > b => s,
                _ => incoming,
            },
            None => incoming,
        }
    }
}

/// The approval record of a merged commit, derived from its pull request's partition.
/// Row `approval` of the merge commit's partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    pub provider: Provider,
    pub repository: String,
    pub number: u64,
    pub url: Option<String>,
    /// The pull request's author (contract §10): not one of its approvers under the policy.
    #[serde(default)]
    pub author: Option<String>,
    pub merged_by: Option<String>,
    pub merged_at: Option<String>,
    pub target_ref: Option<String>,
    pub head_sha: Option<String>,
    /// Reviewers whose latest verdict is an approval, sorted.
    pub approvers: Vec<String>,
    /// Every reviewer's latest verdict, sorted by user.
    pub reviews: Vec<ReviewRecord>,
}

impl ApprovalRecord {
    /// The approval of a merge, from the pull request's merge and reviews.
    pub fn derive(merge: &MergeRecord, reviews: &[ReviewRecord]) -> Self {
        let mut reviews = reviews.to_vec();
        reviews.sort_by(|a, b| a.user.cmp(&b.user));
        ApprovalRecord {
            provider: merge.provider,
            repository: merge.repository.clone(),
            number: merge.number,
            url: merge.url.clone(),
            author: merge.author.clone(),
            merged_by: merge.merged_by.clone(),
            merged_at: merge.merged_at.clone(),
            target_ref: merge.target_ref.clone(),
            head_sha: merge.head.clone(),
            approvers: reviews
                .iter()
                .filter(|r| r.approved)
                .map(|r| r.user.clone())
                .collect(),
            reviews,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(refs: &[&str], at: i64, by: &str, message: Option<&str>) -> CommitRecord {
        CommitRecord {
            sha: "a".repeat(40),
            repository: "github.com/o/r".into(),
            repository_url: "https://github.com/o/r.git".into(),
            provider: Provider::GitHub,
            refs: refs.iter().map(|s| s.to_string()).collect(),
            message: message.map(String::from),
            author: None,
            timestamp: None,
            url: None,
            pushed_at: DateTime::from_timestamp(at, 0).unwrap(),
            pushed_by: Some(by.into()),
            source: Source::Push,
        }
    }

    #[test]
    fn a_push_wins_over_the_api_in_either_order() {
        let mut api = rec(&["refs/heads/main"], 100, "x", Some("from the api"));
        api.pushed_by = None;
        api.source = Source::Api;
        let mut push = rec(&["refs/heads/main"], 200, "bob", None);
        push.message = None;
        let a = api.clone().merge(push.clone());
        let b = push.clone().merge(api.clone());
        assert_eq!(a, b);
        assert_eq!(a.source, Source::Push);
        assert_eq!(a.push_time(), Some(push.pushed_at));
        assert_eq!(a.pushed_by.as_deref(), Some("bob"));
        assert_eq!(a.message.as_deref(), Some("from the api"));
        assert_eq!(api.push_time(), None);
        assert_eq!(a.clone().merge(a.clone()), a);
    }

    #[test]
    fn commit_merge_is_order_independent_and_idempotent() {
        let a = rec(&["refs/heads/feature"], 100, "alice", None);
        let b = rec(&["refs/heads/main"], 200, "bob", Some("fix"));
        let ab = a.clone().merge(b.clone());
        let ba = b.clone().merge(a.clone());
        assert_eq!(ab, ba);
        assert_eq!(ab.refs, ["refs/heads/feature", "refs/heads/main"]);
        assert_eq!(ab.pushed_by.as_deref(), Some("alice"));
        assert_eq!(ab.pushed_at.timestamp(), 100);
        assert_eq!(ab.message.as_deref(), Some("fix"));
        assert_eq!(ab.clone().merge(b), ab);
        assert_eq!(ab.clone().merge(ab.clone()), ab);
    }

    #[test]
    fn newer_review_wins() {
        let old = ReviewRecord {
            user: "u".into(),
            approved: true,
            commit: None,
            at: Some("2024-01-01T00:00:00Z".into()),
        };
        let new = ReviewRecord {
            approved: false,
            at: Some("2024-01-02T00:00:00Z".into()),
            ..old.clone()
        };
        assert_eq!(ReviewRecord::newer(Some(new.clone()), old.clone()), new);
        assert_eq!(ReviewRecord::newer(Some(old.clone()), new.clone()), new);
        assert_eq!(ReviewRecord::newer(None, old.clone()), old);
    }
}
