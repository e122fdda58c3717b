//! The ledger: records Git deliveries in the store and answers the evidence for a commit.
//!
//! Recording follows a journal pattern that works the same on SQLite and on Table Storage
//! (where one delivery touches many partitions and no transaction spans them):
//! 1. the normalised delivery is inserted into the journal as `pending` (insert-if-absent:
//!    a second insert of the same delivery id is how a redelivery is recognised);
//! 2. every projection (commit rows, push rows, pull-request rows, approval rows) is written
//!    with an idempotent, order-independent merge;
//! 3. the journal entry is marked `done`, and only then is the delivery answered 2xx.
//!
//! A crash between 1 and 3 leaves a `pending` entry that a redelivery, or the next start-up,
//! finishes. No 2xx is sent before 3, so nothing acknowledged is ever half-written.

pub mod evidence;
pub mod records;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::domain::RepoKey;
use crate::git::{GitEvent, Provider, PullRequest, Push};
use crate::store::{Entity, Store, StoreError, Table};
pub use evidence::Evidence;
use records::{
    ApprovalRecord, CommitRecord, DeliveryRecord, DeliveryState, MergeRecord, PushRecord,
    ReviewRecord,
};

/// How often a read-modify-write retries when another writer got there first.
const MAX_CONFLICT_RETRIES: usize = 16;

/// What recording a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Newly recorded (or a crashed earlier attempt finished now).
    Accepted { commits: usize, refs: Vec<String> },
    /// The same delivery was recorded before: nothing changed.
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    store: Arc<dyn Store>,
}

impl Ledger {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Ledger { store }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Records one authenticated, parsed Git delivery. Ignored events are not recorded.
    pub async fn record_git(
        &self,
        provider: Provider,
        delivery_id: &str,
        event: &GitEvent,
        received_at: DateTime<Utc>,
    ) -> Result<Recorded, StoreError> {
        let pk = delivery_partition(provider, delivery_id);
        let journal = DeliveryRecord {
            provider,
            delivery_id: delivery_id.to_string(),
            state: DeliveryState::Pending,
            received_at,
            event: serde_json::to_string(event).expect("events serialise"),
        };
        let (journal, etag) = match self
            .store
            .insert(
                Table::Deliveries,
                Entity::from_record(&pk, delivery_id, &journal),
            )
            .await
        {
            Ok(etag) => (journal, etag),
            Err(StoreError::Conflict) => {
                let Some(stored) = self.store.get(Table::Deliveries, &pk, delivery_id).await?
                else {
                    // Deleted between our insert and read (retention): treat as new next time.
                    return Err(StoreError::Unavailable(
                        "delivery journal changed concurrently".into(),
                    ));
                };
                let rec: DeliveryRecord = stored.record()?;
                if rec.state == DeliveryState::Done {
                    return Ok(Recorded::Duplicate);
                }
                // An earlier attempt stopped half-way: finish it with its own data.
                let etag = stored.etag.clone().expect("stored entities carry an etag");
                (rec, etag)
            }
            Err(e) => return Err(e),
        };
        let event: GitEvent = serde_json::from_str(&journal.event)
            .map_err(|e| StoreError::Corrupt(format!("journal event: {e}")))?;
        let outcome = self.project(provider, &event, journal.received_at).await?;
        let done = DeliveryRecord {
            state: DeliveryState::Done,
            ..journal
        };
        match self
            .store
            .update(
                Table::Deliveries,
                Entity::from_record(&pk, delivery_id, &done),
                &etag,
            )
            .await
        {
            // A concurrent attempt of the same delivery marked it first: same outcome.
            Ok(_) | Err(StoreError::PreconditionFailed) => Ok(outcome),
            Err(e) => Err(e),
        }
    }

    /// Finishes every delivery a crash left `pending`. Returns how many were finished.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let pending = self
            .store
            .query_where(Table::Deliveries, "state", "pending")
            .await?;
        let mut finished = 0;
        for entity in pending {
            let rec: DeliveryRecord = entity.record()?;
            let event: GitEvent = serde_json::from_str(&rec.event)
                .map_err(|e| StoreError::Corrupt(format!("journal event: {e}")))?;
            self.record_git(rec.provider, &rec.delivery_id, &event, rec.received_at)
                .await?;
            finished += 1;
        }
        Ok(finished)
    }

    /// Writes every projection of an event. Idempotent.
    async fn project(
        &self,
        provider: Provider,
        event: &GitEvent,
        received_at: DateTime<Utc>,
    ) -> Result<Recorded, StoreError> {
        match event {
            GitEvent::Push { pushes } => {
                let mut commits = 0;
                let mut refs = Vec::new();
                for push in pushes {
                    commits += self.project_push(provider, push, received_at).await?;
                    refs.push(push.git_ref.clone());
                }
                Ok(Recorded::Accepted { commits, refs })
            }
            GitEvent::PullRequest(pr) => {
                self.project_pull_request(provider, pr).await?;
                let refs = pr
                    .merge
                    .as_ref()
                    .and_then(|m| m.target_ref.clone())
                    .into_iter()
                    .collect();
                Ok(Recorded::Accepted { commits: 0, refs })
            }
            GitEvent::Ignored { .. } => Ok(Recorded::Accepted {
                commits: 0,
                refs: vec![],
            }),
        }
    }

    async fn project_push(
        &self,
        provider: Provider,
        push: &Push,
        received_at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let record = PushRecord::new(provider, push, received_at);
        let pk = PushRecord::partition(&record.repository, &record.git_ref);
        match self
            .store
            .insert(
                Table::Pushes,
                Entity::from_record(&pk, record.row(), &record),
            )
            .await
        {
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
        for commit in &push.commits {
            let incoming = CommitRecord::from_push(provider, push, commit, received_at);
            self.modify(
                Table::Commits,
                commit.sha.as_str(),
                "commit",
                |stored: Option<CommitRecord>| {
                    Some(match stored {
                        Some(s) => s.merge(incoming.clone()),
                        None => incoming.clone(),
                    })
                },
            )
            .await?;
        }
        Ok(push.commits.len())
    }

    /// Stores the merge and reviews in the pull request's partition, then (re)derives the
    /// approval of the merge commit from that partition. Whichever of review and merge
    /// arrives last sees the other, so the approval is complete in every arrival order.
    async fn project_pull_request(
        &self,
        provider: Provider,
        pr: &PullRequest,
    ) -> Result<(), StoreError> {
        let pk = format!("{}#{}", pr.repository.key, pr.number);
        if let Some(m) = &pr.merge {
            let rec = MergeRecord::new(provider, pr, m);
            self.modify(Table::Pulls, &pk, "merge", |_: Option<MergeRecord>| {
                Some(rec.clone())
            })
            .await?;
        }
        for r in &pr.reviews {
            let incoming = ReviewRecord::new(r);
            let rk = format!("review|{}", r.user);
            self.modify(Table::Pulls, &pk, &rk, |stored: Option<ReviewRecord>| {
                Some(ReviewRecord::newer(stored, incoming.clone()))
            })
            .await?;
        }
        self.refresh_approval(&pk).await
    }

    async fn refresh_approval(&self, pull_pk: &str) -> Result<(), StoreError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let rows = self
                .store
                .query_partition(Table::Pulls, pull_pk, None)
                .await?;
            let Some(merge_row) = rows.iter().find(|e| e.rk == "merge") else {
                return Ok(()); // Not merged (yet): the merge event will derive the approval.
            };
            let merge: MergeRecord = merge_row.record()?;
            let reviews = rows
                .iter()
                .filter(|e| e.rk.starts_with("review|"))
                .map(Entity::record)
                .collect::<Result<Vec<ReviewRecord>, _>>()?;
            let approval = ApprovalRecord::derive(&merge, &reviews);
            // Conditional write against the approval as it was before we read the pull
            // request: a concurrent writer that saw more reviews cannot be overwritten.
            let stored = self
                .store
                .get(Table::Commits, &merge.sha, "approval")
                .await?;
            let entity = Entity::from_record(&merge.sha, "approval", &approval);
            let result = match &stored {
                Some(s) if s.record::<ApprovalRecord>().ok().as_ref() == Some(&approval) => {
                    return Ok(())
                }
                Some(s) => {
                    // Re-read the partition after taking the etag so the derivation is at
                    // least as fresh as the approval we replace.
                    let fresh = self
                        .store
                        .query_partition(Table::Pulls, pull_pk, None)
                        .await?;
                    if fresh != rows {
                        continue;
                    }
                    self.store
                        .update(Table::Commits, entity, s.etag.as_ref().expect("etag"))
                        .await
                }
                None => self.store.insert(Table::Commits, entity).await,
            };
            match result {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict | StoreError::PreconditionFailed) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "approval kept changing under concurrent writers".into(),
        ))
    }

    /// Read-modify-write of one record with optimistic concurrency. `f` gets the stored
    /// record (if any) and returns the new one (`None`: leave it). Unchanged records are not
    /// rewritten, so re-applying a delivery writes nothing.
    async fn modify<T, F>(
        &self,
        table: Table,
        pk: &str,
        rk: &str,
        mut f: F,
    ) -> Result<(), StoreError>
    where
        T: Serialize + DeserializeOwned + PartialEq + Clone,
        F: FnMut(Option<T>) -> Option<T>,
    {
        for _ in 0..MAX_CONFLICT_RETRIES {
            let stored = self.store.get(table, pk, rk).await?;
            let (old, etag) = match stored {
                Some(e) => (Some(e.record::<T>()?), e.etag),
                None => (None, None),
            };
            let before = old.clone();
            let Some(new) = f(old) else { return Ok(()) };
            if before.as_ref() == Some(&new) {
                return Ok(());
            }
            let entity = Entity::from_record(pk, rk, &new);
            let result = match &etag {
                Some(etag) => self.store.update(table, entity, etag).await,
                None => self.store.insert(table, entity).await,
            };
            match result {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict | StoreError::PreconditionFailed) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(format!(
            "{}: record kept changing under concurrent writers",
            table.name()
        )))
    }

    /// Every recorded update of one ref, oldest first (by time received): the branch history
    /// that supersession reasons over ("which commit came after which").
    pub async fn branch_history(
        &self,
        repository: &RepoKey,
        git_ref: &str,
    ) -> Result<Vec<PushRecord>, StoreError> {
        let pk = PushRecord::partition(repository.as_str(), git_ref);
        let mut pushes = self
            .store
            .query_partition(Table::Pushes, &pk, None)
            .await?
            .iter()
            .map(Entity::record)
            .collect::<Result<Vec<PushRecord>, _>>()?;
        pushes.sort_by(|a, b| {
            a.received_at
                .cmp(&b.received_at)
                .then_with(|| a.row().cmp(&b.row()))
        });
        Ok(pushes)
    }

    /// The evidence for one commit, `None` when nothing at all is known of it.
    pub async fn evidence(
        &self,
        sha: &crate::domain::CommitSha,
    ) -> Result<Option<Evidence>, StoreError> {
        let rows = self
            .store
            .query_partition(Table::Commits, sha.as_str(), None)
            .await?;
        evidence::assemble(sha, &rows)
    }
}

/// Journal partition: the provider plus one byte of the delivery id's hash, so a burst from
/// one host spreads over 256 partitions (Table Storage: 2,000 entities/s per partition).
fn delivery_partition(provider: Provider, delivery_id: &str) -> String {
    let h = Sha256::digest(delivery_id.as_bytes());
    format!("{}-{:02x}", provider.as_str(), h[0])
}
