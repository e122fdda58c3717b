//! The backfill queue (part 12, contract §11): rows of the `audit` table's partition
//! `backfill`, so any instance can do the work and nothing is lost on a restart.
//!
//! - `item|{id}`: one per hole ever noticed (`backfill::Item::id`, deterministic), inserted
//!   once — noticing it again is a conflict, nothing more — then `queued` → `done`/`failed`.
//! - `due|{host}|{due at, ms, 13 digits}|{id}`: exists while the item waits; inserted with
//!   the item row in one batch. Each host's items are one key range in due order, so a
//!   host held back by its rate limit is not read at all, and the others go on.
//!
//! A worker *claims* a due row (its lease, written on the row's etag: two instances never
//! both hold it), does the work, then ends it in one batch of the partition: the item row
//! updated and the due row deleted on the etag of its claim (an instance whose lease ran out
//! and was taken over cannot end it), or the due row moved to its next attempt's time.
//! What a fill writes is the webhook path's own idempotent merges, so an item done twice
//! after a crash writes nothing new.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::records::{CommitRecord, Source};
use super::{Ledger, Recorded};
use crate::backfill::Item;
use crate::domain::{CommitSha, RepoKey};
use crate::git::{Commit, GitEvent, Provider, PullRequest, Push};
use crate::store::{BatchOp, Entity, Etag, Row, StoreError, Table};

pub const PARTITION: &str = "backfill";

/// What ingest needs to notice holes: which repositories a configured host serves, and how
/// long a hole waits before it is asked about (its webhook may only be late).
#[derive(Debug)]
pub struct Notices {
    /// Repository-key hosts with a configured API (`HostConfig::serves`).
    pub hosts: Vec<String>,
    pub delay: chrono::Duration,
    /// Ids this process queued (or found queued) already: a repeated notice costs nothing.
    seen: super::shards::Shards<()>,
    /// Wakes the worker of this process.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
}

impl Notices {
    pub fn new(hosts: Vec<String>, delay: std::time::Duration) -> Self {
        Notices {
            hosts,
            delay: chrono::Duration::from_std(delay).unwrap_or_default(),
            seen: super::shards::Shards::with_capacity(16_384),
            wake: Default::default(),
        }
    }

    /// The host of `repository` if an API serves it.
    pub fn host_of<'a>(&self, repository: &'a str) -> Option<&'a str> {
        let host = repository.split_once('/')?.0;
        self.hosts.iter().any(|h| h == host).then_some(host)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    Queued,
    Done,
    Failed,
}

/// `item|{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemRecord {
    pub item: Item,
    pub state: ItemState,
    pub enqueued_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub attempts: u32,
    /// What the host answered (done), or why it never can (failed).
    #[serde(default)]
    pub outcome: Option<String>,
}

/// `due|{host}|{stamp}|{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DueRecord {
    pub item: Item,
    pub host: String,
    pub due_at: DateTime<Utc>,
    pub enqueued_at: DateTime<Utc>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Held by a worker until then.
    #[serde(default)]
    pub lease_until: Option<DateTime<Utc>>,
}

impl DueRecord {
    pub fn row_key(&self) -> String {
        due_key(&self.host, self.due_at, &self.item.id())
    }

    /// When it may next be tried: its due time, or the end of a worker's lease on it.
    pub fn next_attempt(&self) -> DateTime<Utc> {
        self.lease_until.map_or(self.due_at, |l| l.max(self.due_at))
    }
}

fn due_key(host: &str, due_at: DateTime<Utc>, id: &str) -> String {
    format!("due|{host}|{:013}|{id}", due_at.timestamp_millis().max(0))
}

fn item_key(id: &str) -> String {
    format!("item|{id}")
}

/// A claimed due row: its key and the etag of the claim.
#[derive(Debug, Clone)]
pub struct Claim {
    pub rk: String,
    pub etag: Etag,
    pub due: DueRecord,
}

impl Ledger {
    /// Notices a hole: queues `item` unless this process did already (or no API serves its
    /// repository). Written before the caller's own writes, so a crash between them leaves
    /// an item that finds nothing missing, never a hole nobody queued.
    pub(super) async fn notice(&self, item: Item, now: DateTime<Utc>) -> Result<(), StoreError> {
        let Some(notices) = &self.backfill else {
            return Ok(());
        };
        let Some(host) = notices.host_of(item.repository()) else {
            return Ok(());
        };
        let id = item.id();
        if notices.seen.lock(&id).is_some_and(|s| s.contains_key(&id)) {
            return Ok(());
        }
        let host = host.to_string();
        self.enqueue(item, &host, now + notices.delay, now).await?;
        if let Some(mut shard) = notices.seen.lock(&id) {
            notices.seen.insert(&mut shard, &id, (), |_| {});
        }
        notices.wake.notify_one();
        Ok(())
    }

    /// Inserts the item and its due row (one batch); `false` when it was known already.
    pub async fn enqueue(
        &self,
        item: Item,
        host: &str,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = item.id();
        let record = ItemRecord {
            item: item.clone(),
            state: ItemState::Queued,
            enqueued_at: now,
            finished_at: None,
            attempts: 0,
            outcome: None,
        };
        let due = DueRecord {
            item,
            host: host.to_string(),
            due_at,
            enqueued_at: now,
            attempts: 0,
            last_error: None,
            lease_until: None,
        };
        let ops = vec![
            BatchOp::Insert(Row::from_record(PARTITION, item_key(&id), &record)),
            BatchOp::Insert(Row::from_record(PARTITION, due.row_key(), &due)),
        ];
        match self.store.batch(Table::Audit, PARTITION, ops).await {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Up to `limit` due rows of `host` whose time has come, earliest first (leased ones
    /// included: the caller skips them).
    pub async fn due(
        &self,
        host: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, Etag, DueRecord)>, StoreError> {
        let from = format!("due|{host}|");
        let to = format!("due|{host}|{:013}", now.timestamp_millis() + 1);
        let rows = self
            .store
            .query_range(Table::Audit, PARTITION, &from, &to, limit)
            .await?;
        rows.into_iter()
            .map(|e| {
                let etag = e
                    .etag
                    .clone()
                    .ok_or_else(|| StoreError::Corrupt(format!("{}: no etag", e.rk)))?;
                Ok((e.rk.clone(), etag, e.record()?))
            })
            .collect()
    }

    /// When `host`'s next item is due (`None`: nothing waits).
    pub async fn next_due(&self, host: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let from = format!("due|{host}|");
        let to = format!("due|{host}}}");
        let rows = self
            .store
            .query_range(Table::Audit, PARTITION, &from, &to, 1)
            .await?;
        rows.first()
            .map(|e| e.record::<DueRecord>().map(|d| d.next_attempt()))
            .transpose()
    }

    /// Takes a due row for `lease` (its etag: another instance that took it first wins).
    pub async fn claim(
        &self,
        rk: String,
        etag: &Etag,
        mut due: DueRecord,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Claim>, StoreError> {
        due.lease_until = Some(lease_until);
        match self
            .store
            .update(
                Table::Audit,
                Row::from_record(PARTITION, rk.clone(), &due),
                etag,
            )
            .await
        {
            Ok(etag) => Ok(Some(Claim { rk, etag, due })),
            Err(StoreError::PreconditionFailed | StoreError::Conflict) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes due rows for `lease` in one batch (one round trip); if another instance took
    /// one of them first, each is taken on its own (the ones it took are skipped).
    pub async fn claim_all(
        &self,
        rows: Vec<(String, Etag, DueRecord)>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Claim>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let claims: Vec<Claim> = rows
            .iter()
            .map(|(rk, etag, due)| Claim {
                rk: rk.clone(),
                etag: etag.clone(),
                due: DueRecord {
                    lease_until: Some(lease_until),
                    ..due.clone()
                },
            })
            .collect();
        let ops = claims
            .iter()
            .map(|c| {
                BatchOp::Update(
                    Row::from_record(PARTITION, c.rk.clone(), &c.due),
                    c.etag.clone(),
                )
            })
            .collect();
        match self.store.batch(Table::Audit, PARTITION, ops).await {
            Ok(etags) => Ok(claims
                .into_iter()
                .zip(etags)
                .map(|(c, etag)| Claim { etag, ..c })
                .collect()),
            Err(StoreError::PreconditionFailed | StoreError::Conflict) => {
                let mut out = Vec::new();
                for (rk, etag, due) in rows {
                    out.extend(self.claim(rk, &etag, due, lease_until).await?);
                }
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    /// Ends a claimed item: `done` or `failed`, with what the host said.
    pub async fn finish(
        &self,
        claim: &Claim,
        state: ItemState,
        outcome: String,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let d = &claim.due;
        let record = ItemRecord {
            item: d.item.clone(),
            state,
            enqueued_at: d.enqueued_at,
            finished_at: Some(now),
            attempts: d.attempts + 1,
            outcome: Some(outcome),
        };
        let ops = vec![
            BatchOp::Delete {
                rk: claim.rk.clone(),
                etag: Some(claim.etag.clone()),
            },
            BatchOp::Upsert(Row::from_record(PARTITION, item_key(&d.item.id()), &record)),
        ];
        self.settle_claim(ops).await
    }

    /// Moves a claimed item to its next attempt at `due_at`.
    pub async fn reschedule(
        &self,
        claim: &Claim,
        due_at: DateTime<Utc>,
        attempted: bool,
        error: String,
    ) -> Result<bool, StoreError> {
        let mut next = claim.due.clone();
        next.due_at = due_at;
        next.lease_until = None;
        next.attempts += u32::from(attempted);
        next.last_error = Some(error);
        let rk = next.row_key();
        let row = Row::from_record(PARTITION, rk.clone(), &next);
        let ops = if rk == claim.rk {
            vec![BatchOp::Update(row, claim.etag.clone())]
        } else {
            vec![
                BatchOp::Delete {
                    rk: claim.rk.clone(),
                    etag: Some(claim.etag.clone()),
                },
                BatchOp::Insert(row),
            ]
        };
        self.settle_claim(ops).await
    }

    /// `false` when the claim was lost (its lease ran out and another instance took it).
    async fn settle_claim(&self, ops: Vec<BatchOp>) -> Result<bool, StoreError> {
        match self.store.batch(Table::Audit, PARTITION, ops).await {
            Ok(_) => Ok(true),
            Err(StoreError::PreconditionFailed | StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the hole is still there: a webhook may have filled it since it was noticed.
    pub async fn still_missing(&self, item: &Item) -> Result<bool, StoreError> {
        Ok(match item {
            Item::Commit { sha, .. } => self
                .store
                .get(Table::Commits, sha, "commit")
                .await?
                .is_none(),
            Item::Approval { sha, .. } => self
                .store
                .get(Table::Commits, sha, "approval")
                .await?
                .is_none(),
            Item::Gap {
                repository,
                git_ref,
                head,
                ..
            } => {
                let key = repo_key(repository)?;
                !self
                    .branch_history(&key, git_ref)
                    .await?
                    .iter()
                    .any(|p| p.after.as_deref() == Some(head.as_str()))
            }
        })
    }

    /// A commit's metadata from the host: merged into its commit row (`source: api`; a push
    /// that describes it later wins the merge).
    pub async fn fill_commit(
        &self,
        provider: Provider,
        repository: &crate::git::Repository,
        git_ref: Option<&str>,
        commit: Commit,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let incoming = CommitRecord {
            sha: commit.sha.to_string(),
            repository: repository.key.to_string(),
            repository_url: repository.url.clone(),
            provider,
            refs: git_ref.map(String::from).into_iter().collect(),
            message: commit.message,
            author: commit.author,
            timestamp: commit.timestamp,
            url: commit.url,
            pushed_at: now,
            pushed_by: None,
            source: Source::Api,
        };
        let sha = incoming.sha.clone();
        self.merge_commit(incoming).await?;
        self.missing.pushed([sha.as_str(), &sha[..12]]);
        Ok(())
    }

    /// A pull request from the host: recorded as its webhook would be (journal, pull-request
    /// partition, approval), under a delivery id of its own.
    pub async fn fill_approval(
        &self,
        provider: Provider,
        pr: PullRequest,
        now: DateTime<Utc>,
    ) -> Result<Recorded, StoreError> {
        let id = format!("backfill|pr|{}#{}", pr.repository.key, pr.number);
        self.record_git(provider, &id, &GitEvent::pull_request(pr), now)
            .await
    }

    /// The commits of a gap: recorded as the push that was never delivered (`base..head`),
    /// so supersession and discards walk them like any push's.
    #[allow(clippy::too_many_arguments)]
    pub async fn fill_gap(
        &self,
        provider: Provider,
        repository: crate::git::Repository,
        git_ref: &str,
        base: CommitSha,
        head: CommitSha,
        commits: Vec<Commit>,
        now: DateTime<Utc>,
    ) -> Result<Recorded, StoreError> {
        let id = format!("backfill|gap|{}|{git_ref}|{base}..{head}", repository.key);
        let push = Push {
            repository,
            git_ref: git_ref.to_string(),
            before: Some(base),
            after: Some(head.clone()),
            head: Some(head),
            forced: false,
            pusher: None,
            commits,
            source: Source::Api,
        };
        self.record_git(provider, &id, &GitEvent::Push { pushes: vec![push] }, now)
            .await
    }

    /// A push whose `before` is no known `after` of its ref: the gap between the ref's last
    /// known `after` and it (nothing when the ref has no earlier push: its history before
    /// fluxtrail is not a gap).
    pub(super) async fn notice_gap(
        &self,
        push: &Push,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let Some(notices) = &self.backfill else {
            return Ok(());
        };
        let (Some(before), Some(after)) = (&push.before, &push.after) else {
            return Ok(());
        };
        if notices.host_of(push.repository.key.as_str()).is_none() {
            return Ok(());
        }
        let history = self
            .branch_history(&push.repository.key, &push.git_ref)
            .await?;
        let known = |sha: &str| {
            history.iter().any(|p| {
                p.after.as_deref() == Some(sha)
                    || (p.after.as_deref() != Some(after.as_str())
                        && p.commits.iter().any(|c| c == sha))
            })
        };
        if known(before.as_str()) {
            return Ok(());
        }
        let base = history
            .iter()
            .rev()
            .filter(|p| p.after.as_deref() != Some(after.as_str()))
            .find_map(|p| p.after.as_deref().and_then(|a| CommitSha::parse(a).ok()));
        let Some(base) = base else {
            return Ok(());
        };
        self.notice(
            Item::Gap {
                repository: push.repository.key.to_string(),
                git_ref: push.git_ref.clone(),
                base: base.to_string(),
                head: before.to_string(),
            },
            now,
        )
        .await
    }

    /// The queue as `/api/health` shows it: counts by state, the next attempt, the last
    /// errors of items still waiting.
    pub async fn backfill_status(&self, now: DateTime<Utc>) -> Result<Value, StoreError> {
        let rows = self
            .store
            .query_partition(Table::Audit, PARTITION, None)
            .await?;
        let (mut queued, mut done, mut failed, mut retrying, mut due_now) = (0, 0, 0, 0, 0);
        let mut next: Option<DateTime<Utc>> = None;
        let mut last_error: Option<(DateTime<Utc>, String)> = None;
        for e in &rows {
            if e.rk.starts_with("item|") {
                match e.record::<ItemRecord>()?.state {
                    ItemState::Queued => {}
                    ItemState::Done => done += 1,
                    ItemState::Failed => failed += 1,
                }
            } else if e.rk.starts_with("due|") {
                let d: DueRecord = e.record()?;
                queued += 1;
                if d.due_at <= now {
                    due_now += 1;
                }
                if let Some(err) = &d.last_error {
                    retrying += 1;
                    if last_error
                        .as_ref()
                        .is_none_or(|(at, _)| d.enqueued_at > *at)
                    {
                        last_error = Some((d.enqueued_at, err.clone()));
                    }
                }
                let at = d.next_attempt();
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        Ok(json!({
            "queued": queued,
            "due": due_now,
            "retrying": retrying,
            "done": done,
            "failed": failed,
            "nextAttemptAt": next,
            "lastError": last_error.map(|(_, e)| e),
        }))
    }

    /// Items that ended (done or failed) before `cutoff`, for retention to delete. A hole
    /// noticed again afterwards is queued again and, being filled, done without a request.
    pub async fn backfill_expired(&self, cutoff: DateTime<Utc>) -> Result<Vec<Entity>, StoreError> {
        let rows = self
            .store
            .query_range(Table::Audit, PARTITION, "item|", "item}", usize::MAX)
            .await?;
        Ok(rows
            .into_iter()
            .filter(|e| {
                e.record::<ItemRecord>()
                    .is_ok_and(|r| r.finished_at.is_some_and(|f| f < cutoff))
            })
            .collect())
    }

    /// Whether an approval item of `sha` still waits (the sweep holds its `change.unapproved`
    /// decision while the host may still tell of a pull request).
    pub async fn approval_pending(&self, repository: &str, sha: &str) -> Result<bool, StoreError> {
        let id = Item::Approval {
            repository: repository.to_string(),
            sha: sha.to_string(),
        }
        .id();
        Ok(self
            .store
            .get(Table::Audit, PARTITION, &item_key(&id))
            .await?
            .map(|e| e.record::<ItemRecord>())
            .transpose()?
            .is_some_and(|r| r.state == ItemState::Queued))
    }
}

fn repo_key(repository: &str) -> Result<RepoKey, StoreError> {
    RepoKey::from_url(repository)
        .map_err(|e| StoreError::Corrupt(format!("backfill repository {repository:?}: {e}")))
}
