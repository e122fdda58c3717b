//! Projections of Git deliveries: commits, pushes, pull requests and approvals, and what a
//! push means for the Flux objects that follow its branch (`pending`, `superseded`).

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::json;

use super::records::{ApprovalRecord, CommitRecord, MergeRecord, PushRecord, ReviewRecord};
use super::{object_partition, tagged, Ledger, MAX_CONFLICT_RETRIES};
use crate::core::{self, Follow, ObjectState, TargetRecord};
use crate::domain::{CommitSha, GitRef, MergeCommit, Revision};
use crate::git::{GitEvent, Provider, PullRequest, Push};
use crate::store::{BatchOp, Entity, Row, StoreError, Table};

/// What the journal step already learnt of a push's rows (`push_inserts`), written in one
/// call with the journal entry when a delivery holds one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PushRows {
    /// They were inserted with the entry.
    Inserted,
    /// The call failed while the entry alone was new: some row was seen before, so they are
    /// merged without trying to insert them again.
    NotNew,
    /// Nothing known (several pushes, or an entry an earlier attempt left).
    Unknown,
}

/// The `pulls` partition of the pull requests whose merge commit is named by an abbreviation
/// (or a full id) starting with `sha`'s first 7 digits (the shortest abbreviation taken).
fn merge_marker(sha: &str) -> String {
    format!("merge-commit|{}", &sha[..sha.len().min(7)])
}

/// Followers of a push brought up to date at once.
const FOLLOWERS_AT_ONCE: usize = 64;

/// What one push asks of the objects that follow its ref.
struct Expected<'a> {
    follow: &'a Follow,
    follow_pk: &'a str,
    graph: &'a core::BranchGraph,
    pushed: &'a [CommitSha],
    forced: bool,
    /// What a forced push removed from the branch.
    removed: &'a [CommitSha],
    received_at: DateTime<Utc>,
}

/// Whether the object's latest report is a commit of this push under this push's ref (an
/// object that moved to this branch before the push arrived).
fn reports_tip(state: &ObjectState, x: &Expected<'_>) -> bool {
    state.last_revision.as_deref().is_some_and(|r| {
        let r = Revision::parse(r);
        r.commit().is_some_and(|c| x.pushed.contains(&c))
            && r.candidate_refs()
                .iter()
                .any(|c| c == x.follow.git_ref.as_str())
    })
}

impl Ledger {
    /// Writes every projection of a Git event. Idempotent.
    pub(super) async fn project_git(
        &self,
        provider: Provider,
        event: &GitEvent,
        received_at: DateTime<Utc>,
        rows: PushRows,
    ) -> Result<serde_json::Value, StoreError> {
        match event {
            GitEvent::Push { pushes } => {
                let mut commits = 0;
                let mut refs = Vec::new();
                for push in pushes {
                    commits += match rows {
                        PushRows::Inserted => push.commits.len(),
                        PushRows::NotNew => self.merge_push(provider, push, received_at).await?,
                        PushRows::Unknown => self.project_push(provider, push, received_at).await?,
                    };
                    // Its commits are stored now: Flux events look them up again.
                    // (And their 12-hex abbreviations, which chart versions carry.)
                    self.missing.pushed(push.commits.iter().flat_map(|c| {
                        let sha = c.sha.as_str();
                        [sha, &sha[..12]]
                    }));
                    // Its ref's graph changed: no cached one is reused.
                    self.graphs.forget(&PushRecord::partition(
                        push.repository.key.as_str(),
                        &push.git_ref,
                    ));
                    self.expect_on_followers(push, received_at).await?;
                    self.notice_gap(push, received_at).await?;
                    if provider == Provider::Bitbucket {
                        self.resolve_merges(push).await?;
                    }
                    refs.push(push.git_ref.clone());
                }
                Ok(json!({"event": "push", "commits": commits, "refs": refs}))
            }
            GitEvent::PullRequest(pr) => {
                self.project_pull_request(provider, pr).await?;
                let refs: Vec<String> = pr
                    .merge
                    .as_ref()
                    .and_then(|m| m.target_ref.clone())
                    .into_iter()
                    .collect();
                Ok(
                    json!({"event": "pull_request", "number": pr.number, "merged": pr.merge.is_some(), "refs": refs}),
                )
            }
            GitEvent::Ignored { reason } => Ok(json!({"event": "ignored", "reason": reason})),
        }
    }

    /// The rows a push adds when it and its commits are new: its push row and one row per
    /// commit, all inserts. One call (one commit on SQLite); if any was seen before (another
    /// ref, a redelivery), the call fails as a whole on SQLite — or stops there on Table
    /// Storage — and `project_push` merges instead.
    pub(super) fn push_inserts(
        provider: Provider,
        push: &Push,
        received_at: DateTime<Utc>,
    ) -> Vec<(Table, String, Vec<BatchOp>)> {
        let record = PushRecord::new(provider, push, received_at);
        let pk = PushRecord::partition(&record.repository, &record.git_ref);
        let mut inserts = vec![(
            Table::Pushes,
            pk.clone(),
            vec![
                BatchOp::Insert(Row::from_record(&pk, record.row(), &record)),
                BatchOp::Insert(super::audit::push_log_row(&pk, &record)),
            ],
        )];
        inserts.extend(push.commits.iter().map(|c| {
            let r = CommitRecord::from_push(provider, push, c, received_at);
            (
                Table::Commits,
                r.sha.clone(),
                vec![BatchOp::Insert(Row::from_record(&r.sha, "commit", &r))],
            )
        }));
        inserts
    }

    async fn project_push(
        &self,
        provider: Provider,
        push: &Push,
        received_at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        match self
            .store
            .batches(Self::push_inserts(provider, push, received_at))
            .await
        {
            Ok(_) => Ok(push.commits.len()),
            Err(StoreError::Conflict) => self.merge_push(provider, push, received_at).await,
            Err(e) => Err(e),
        }
    }

    /// A push some of whose rows exist: the push row inserted if absent, each commit merged
    /// with what is stored.
    async fn merge_push(
        &self,
        provider: Provider,
        push: &Push,
        received_at: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let record = PushRecord::new(provider, push, received_at);
        let pk = PushRecord::partition(&record.repository, &record.git_ref);
        // The push row and its log row (branch history, newest first) in one batch: both
        // or neither, so a redelivery that finds the push row finds its log row too.
        let ops = vec![
            BatchOp::Insert(Row::from_record(&pk, record.row(), &record)),
            BatchOp::Insert(super::audit::push_log_row(&pk, &record)),
        ];
        match self.store.batch(Table::Pushes, &pk, ops).await {
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
        let records: Vec<CommitRecord> = push
            .commits
            .iter()
            .map(|c| CommitRecord::from_push(provider, push, c, received_at))
            .collect();
        for incoming in records {
            self.merge_commit(incoming).await?;
        }
        Ok(push.commits.len())
    }

    /// Merges a sighting of a commit (a push's, or the host API's) into its row.
    pub(super) async fn merge_commit(&self, incoming: CommitRecord) -> Result<(), StoreError> {
        let sha = incoming.sha.clone();
        self.modify(
            Table::Commits,
            &sha,
            "commit",
            |stored: Option<CommitRecord>| {
                Some(match stored {
                    Some(s) => s.merge(incoming.clone()),
                    None => incoming.clone(),
                })
            },
        )
        .await
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
            if let MergeCommit::Abbreviated(abbreviation) = &m.sha {
                // Found by the push of that commit, should it come later: written before the
                // approval looks the commit up, so one of the two sees the other.
                let marker = Row::from_record(
                    merge_marker(abbreviation),
                    &pk,
                    &json!({"abbreviation": abbreviation}),
                );
                self.store.upsert(Table::Pulls, marker).await?;
            }
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
            let mut merge: MergeRecord = merge_row.record()?;
            if CommitSha::parse(&merge.sha).is_err() {
                // An abbreviation: the approval waits for the push that names the commit.
                match self.resolve_abbreviation(&merge).await? {
                    Some(sha) => merge.sha = sha.to_string(),
                    None => return Ok(()),
                }
            }
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
            let entity = Row::from_record(&merge.sha, "approval", &approval);
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

    /// The full id of a merge commit named by an abbreviation: the one commit of the pull
    /// request's repository pushed with that prefix (to its target branch, when several).
    async fn resolve_abbreviation(
        &self,
        merge: &MergeRecord,
    ) -> Result<Option<CommitSha>, StoreError> {
        let mut found = Vec::new();
        for row in self
            .store
            .query_pk_prefix(Table::Commits, &merge.sha, "commit")
            .await?
        {
            let c: CommitRecord = row.record()?;
            if c.repository == merge.repository {
                let on_target = merge
                    .target_ref
                    .as_ref()
                    .is_some_and(|t| c.refs.iter().any(|r| r == t));
                found.push((on_target, c.sha));
            }
        }
        if found.iter().any(|(on_target, _)| *on_target) {
            found.retain(|(on_target, _)| *on_target);
        }
        Ok(match found.as_slice() {
            [(_, sha)] => CommitSha::parse(sha).ok(),
            _ => None,
        })
    }

    /// A Bitbucket Cloud push: the pull requests merged into one of its commits whose merge
    /// named it by an abbreviation (and arrived first) get their approval now.
    async fn resolve_merges(&self, push: &Push) -> Result<(), StoreError> {
        let markers: Vec<String> = push
            .commits
            .iter()
            .map(|c| merge_marker(c.sha.as_str()))
            .collect();
        for rows in self
            .store
            .query_partitions(Table::Pulls, &markers, None)
            .await?
        {
            for row in rows {
                self.refresh_approval(&row.rk).await?;
            }
        }
        Ok(())
    }

    /// A push to a ref: every object that follows it expects the pushed commits (`pending`,
    /// or `superseded` if the object already applied a later one). Objects that reported one
    /// of these commits before the push told us its branch start following the ref now.
    async fn expect_on_followers(
        &self,
        push: &Push,
        received_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if push.deleted() {
            return Ok(());
        }
        let repository = push.repository.key.clone();
        let git_ref = match GitRef::parse(&push.git_ref) {
            Ok(r) => r,
            Err(e) => {
                // The parsers only make full refs: no object can follow this one.
                tracing::warn!(error = %e, "push to an unexpected ref: no followers");
                return Ok(());
            }
        };
        let follow_pk = PushRecord::partition(repository.as_str(), &push.git_ref);
        let follow = Follow {
            repository: repository.clone(),
            git_ref: git_ref.clone(),
        };
        let pushed: Vec<CommitSha> = push.commits.iter().map(|c| c.sha.clone()).collect();
        let mut objects: Vec<String> = self
            .store
            .query_partition(Table::Follows, &follow_pk, None)
            .await?
            .into_iter()
            .map(|e| e.rk)
            .collect();
        // Objects that reported the push's tip before the push arrived, under a pointer
        // naming this ref. Only the tip: Flux reports what a ref pointed to when it fetched,
        // so a commit a revision names under this ref was its tip: this push's, or another
        // push's, whose own delivery links the object. (An older commit of this list was a
        // tip of this ref only if the ref was later rewound across it; should that push's
        // delivery never come, the object follows the ref from its next event anyway.)
        // Looking up every listed commit meant 20 random index reads per push for rows that
        // almost never exist: half the reader threads' work on pushes.
        let tips: Vec<String> = push.head.iter().map(|s| s.to_string()).collect();
        for rows in self
            .store
            .query_partitions(Table::Commits, &tips, Some("target|"))
            .await?
        {
            for row in rows {
                let t: TargetRecord = row.record()?;
                let names_ref = t
                    .revision
                    .as_deref()
                    .map(|r| Revision::parse(r).candidate_refs().contains(&push.git_ref))
                    .unwrap_or(false);
                let pk = object_partition(&crate::flux::ObjectRef {
                    cluster: t.cluster,
                    kind: t.kind,
                    namespace: t.namespace,
                    name: t.name,
                });
                if names_ref && !objects.contains(&pk) {
                    objects.push(pk);
                }
            }
        }
        if objects.is_empty() {
            return Ok(());
        }
        let graph = self.branch_graph(&repository, &git_ref).await?;
        // A forced push removes what only its `before` descended from: never to arrive.
        let removed = match (&push.before, push.forced) {
            (Some(before), true) => graph.removed(before, push.head.as_ref()),
            _ => vec![],
        };
        let expected = Expected {
            follow: &follow,
            follow_pk: &follow_pk,
            graph: &graph,
            pushed: &pushed,
            forced: push.forced,
            removed: &removed,
            received_at,
        };
        // Followers are independent (each its own partition and target rows): 64 at a time,
        // so a push to a branch 2,000 objects follow is answered in time (GitHub waits 10 s)
        // instead of after 2,000 sequential read-modify-writes (on SQLite their writes then
        // share fsyncs; on Table Storage they go to 2,000 different partitions).
        let expected = &expected;
        let mut each = futures::stream::iter(objects)
            .map(|pk| async move {
                let Some(updates) = self.follow_and_expect(&pk, expected).await? else {
                    return Ok::<(), StoreError>(());
                };
                for u in updates {
                    self.merge_target(&u, false).await?;
                }
                Ok(())
            })
            .buffer_unordered(FOLLOWERS_AT_ONCE);
        while let Some(done) = each.next().await {
            done?;
        }
        Ok(())
    }

    /// Makes the object follow the ref (if it follows none, or if its latest report names
    /// this push's tip under this ref: it moved to this branch before the push told us) and
    /// computes what it now expects. `None` when the object follows a different ref.
    async fn follow_and_expect(
        &self,
        pk: &str,
        x: &Expected<'_>,
    ) -> Result<Option<Vec<core::TargetUpdate>>, StoreError> {
        for _ in 0..MAX_CONFLICT_RETRIES {
            // A state cached by the Flux path would be stale after this write (its write
            // would fail and retry): drop it now.
            self.states.forget(pk);
            let Some(row) = self.store.get(Table::Objects, pk, "state").await? else {
                return Ok(None);
            };
            let mut state: ObjectState = row.record()?;
            if state.retired_at.is_some() {
                return Ok(None); // gone: nothing is expected of it
            }
            let expect = |state: &ObjectState, newly: bool| {
                let mut updates =
                    core::on_push(state, x.graph, x.pushed, x.forced, newly, x.received_at);
                updates.extend(core::on_forced_push(state, x.removed, x.received_at));
                Some(updates)
            };
            match &state.follows {
                Some(f) if f == x.follow => return Ok(expect(&state, false)),
                // The object moved to another branch: this follow row is stale — unless the
                // object's latest report is this push's tip under this ref.
                Some(_) if !reports_tip(&state, x) => return Ok(None),
                _ => {}
            }
            state.follows = Some(x.follow.clone());
            let entity = tagged(
                pk,
                "state",
                &state,
                &[("rowType", super::records::ROW_STATE)],
            );
            // The follows row, then the state (one commit on SQLite; on Table Storage in
            // that order): a follows row alone is harmless — a push that finds it reads the
            // state — while a state without its follows row would never expect a push.
            let writes = vec![
                (
                    Table::Follows,
                    x.follow_pk.to_string(),
                    vec![BatchOp::Upsert(Row::from_record(
                        x.follow_pk,
                        pk,
                        &state.object,
                    ))],
                ),
                (
                    Table::Objects,
                    pk.to_string(),
                    vec![BatchOp::Update(entity, row.etag.clone().expect("etag"))],
                ),
            ];
            match self.store.batches(writes).await {
                Ok(_) => return Ok(expect(&state, true)),
                Err(StoreError::PreconditionFailed | StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "object state kept changing under concurrent writers".into(),
        ))
    }

    /// Writes one target update into the commit's partition (`replayed`: re-issued for a
    /// duplicate event, see [`TargetRecord::merge_replayed`]) and returns the row as written
    /// (`None`: the update creates no row, e.g. `discarded` for a commit never expected).
    pub(crate) async fn merge_target(
        &self,
        u: &core::TargetUpdate,
        replayed: bool,
    ) -> Result<Option<TargetRecord>, StoreError> {
        let rk = TargetRecord::row_key(&u.object);
        let pk = u.sha.as_str();
        for _ in 0..MAX_CONFLICT_RETRIES {
            let stored = self.store.get(Table::Commits, pk, &rk).await?;
            let (old, etag) = match stored {
                Some(e) => (Some(e.record::<TargetRecord>()?), e.etag),
                None => (None, None),
            };
            let Some(new) = TargetRecord::merge_event(old.clone(), u, replayed) else {
                return Ok(None);
            };
            if old.as_ref() == Some(&new) {
                return Ok(Some(new));
            }
            // The audit index first (see `audit`): the target row is the commit point.
            let index = self.index_writes(pk, old.as_ref(), Some(&new), Utc::now());
            let entity = Row::from_record(pk, rk.as_str(), &new);
            // Registry rows in the same call, before the index and target rows (a conflict
            // reads again).
            let mut writes = self.register_writes(&index.registers).await?;
            let confirms: Vec<_> = index
                .confirm
                .map(|c| (writes.len(), c))
                .into_iter()
                .collect();
            writes.extend(index.before);
            writes.push((
                Table::Commits,
                pk.to_string(),
                vec![match etag {
                    Some(etag) => BatchOp::Update(entity, etag),
                    None => BatchOp::Insert(entity),
                }],
            ));
            match self.store.batches(writes).await {
                Ok(tags) => {
                    self.registered(&index.registers);
                    self.finish_index(confirms, &tags).await;
                    return Ok(Some(new));
                }
                Err(StoreError::Conflict | StoreError::PreconditionFailed) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "commits: target row kept changing under concurrent writers".into(),
        ))
    }
}
