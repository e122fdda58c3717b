//! Flux events: the glue between the store and the pure core. Reads what the core needs
//! (the object's state, the event's commit, the followed branch's history), runs it, and
//! writes its outcome: state + incidents + outbox in one atomic batch of the object's
//! partition, then the target rows in the commits' partitions.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::records::{
    CommitRecord, OutboxRecord, PushRecord, ROW_EVENT, ROW_INCIDENT, ROW_OUTBOX, ROW_STATE,
};
use super::{object_partition, tagged, Ledger, Recorded, MAX_CONFLICT_RETRIES};
use crate::core::{
    self, CommitInfo, Context, Disposition, ObjectState, TargetRecord, TargetUpdate,
};
use crate::domain::CommitSha;
use crate::flux::{classify, Class, FluxEvent, ObjectRef};
use crate::store::{BatchOp, Etag, Row, StoreError, Table};

impl Rows {
    /// The row this outcome writes for the object's own commit `sha`.
    fn own_row(&self, sha: &CommitSha, object: &ObjectRef) -> Option<TargetRecord> {
        self.blind
            .iter()
            .find(|(s, _, _)| s == sha)
            .map(|(_, row, _)| row.clone())
            .or_else(|| {
                self.read
                    .iter()
                    .find(|(u, _, _)| &u.sha == sha && &u.object == object)
                    .and_then(|(_, row, _)| row.clone())
            })
    }
}

/// The writes of one outcome, and where in them the state's and its current target row's are.
struct Planned {
    writes: Vec<(Table, String, Vec<BatchOp>)>,
    /// What finishes the audit index once the writes landed, each with the place of its
    /// batch in `writes` (see `audit::Confirm`).
    confirms: super::audit::Confirms,
    /// Pair rows to merge before the writes (see `audit::PairRow`).
    registers: Vec<super::audit::Register>,
    state_json: String,
    state_at: usize,
    target_at: Option<usize>,
}

/// What one attempt at an event reads before the core runs.
struct Loaded {
    state: Option<ObjectState>,
    etag: Option<Etag>,
    /// The etag of the state's current target row, when this process wrote it last.
    target_etag: Option<Etag>,
    commit: Option<CommitInfo>,
    graph: Option<std::sync::Arc<core::BranchGraph>>,
    /// The ref the graph is of, and the newest push-log key it was built at.
    graph_at: Option<(core::Follow, String)>,
}

/// The target rows an outcome writes, each conditionally (no row is ever written blind: a
/// write that lands late, on Table Storage, must not undo a later one): the row this process
/// wrote last, merged from its cached copy and written on the etag it got then, and the
/// others, read and written conditionally on what was read. `None` rows are updates that
/// create nothing (a `discarded` for a commit never expected).
#[derive(Default)]
struct Rows {
    blind: Vec<(CommitSha, TargetRecord, Etag)>,
    /// The cached row the `blind` one was merged from (as stored).
    blind_old: Option<TargetRecord>,
    read: Vec<(TargetUpdate, Option<TargetRecord>, Option<Etag>)>,
    /// Each `read` row as it was read, for the audit index.
    read_old: Vec<Option<TargetRecord>>,
    /// When the event was received (an approval's grace counts from a first apply's).
    received_at: DateTime<Utc>,
}

impl Ledger {
    /// One Flux event: load what the core needs, run it, plan the target rows, write it all
    /// in one call — again from the start when another writer got there first.
    pub(super) async fn project_flux(
        &self,
        event: &FluxEvent,
        received_at: DateTime<Utc>,
    ) -> Result<Recorded, StoreError> {
        let class = classify(event);
        let pk = object_partition(&event.object);
        // This call's mark on the event's history row (written with the object's batch): a
        // later attempt that finds the event recorded tells its own earlier attempt — on
        // Table Storage the object's batch landed and a target row write was beaten — from a
        // redelivery, and answers accepted, not duplicate.
        let attempt = attempt_id();
        let history = history_row(&pk, event, class, &attempt);
        // Whether an attempt of this call may have landed (its write failed part-way).
        let mut tried = false;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let loaded = self.load(&pk, event, class).await?;
            let Loaded {
                state,
                etag,
                target_etag,
                commit,
                graph,
                graph_at,
            } = loaded;
            let previous_applied = state.as_ref().and_then(ObjectState::applied_sha);
            let ctx = Context {
                commit: commit.clone(),
                graph: graph.as_deref(),
            };
            let previous_follow = state.as_ref().and_then(|s| s.follows.clone());
            let cached = state.as_ref().and_then(|s| s.current_target.clone());
            let mut out = core::apply_event(state, event, class, &ctx, received_at);
            if out.disposition == Disposition::Duplicate {
                // Unchanged: it goes back to the cache as it was taken.
                if let Some(etag) = etag {
                    self.states.put_state(&pk, &out.state, etag);
                }
                // A retry: its first attempt may have stopped before the target rows, after
                // its messages (woken now, not left to the periodic scan).
                for u in &out.targets {
                    self.merge_target(u, true).await?;
                }
                self.notify_outbox(&pk);
                if tried && self.history_owner(&history).await?.as_deref() == Some(&attempt) {
                    return Ok(Recorded::Accepted(summary(event, class, &out)));
                }
                return Ok(Recorded::Duplicate);
            }
            // An older event than the object's last (`Stale`) changes nothing of the object,
            // but what it says of commits is merged into their rows, with its history row,
            // through the same conditional write as any event.
            let stale = out.disposition == Disposition::Stale;
            self.notice_flux(event, class, commit.as_ref(), &out.state, received_at)
                .await?;
            let mut rows = self
                .plan_rows(&out, cached.as_ref().zip(target_etag.as_ref()), stale)
                .await?;
            rows.received_at = received_at;
            // The commit of the object's latest event (a stale event's is not), and the row
            // the state remembers for it.
            if !stale {
                let latest = core::event_sha(event, commit.as_ref());
                out.state.commit = commit.filter(|c| Some(&c.sha) == latest.as_ref());
                if let Some(sha) = latest {
                    if let Some(row) = rows.own_row(&sha, &event.object) {
                        out.state.current_target = Some(core::CurrentTarget { sha, row });
                    }
                }
            } else if let Some(c) = &cached {
                if let Some(row) = rows.own_row(&c.sha, &event.object) {
                    out.state.current_target = Some(core::CurrentTarget {
                        sha: c.sha.clone(),
                        row,
                    });
                }
            }
            let planned = self.writes(&pk, &out, etag, &history, &rows, previous_follow.as_ref());
            let this = summary(event, class, &out);
            // Registry rows go with the object's batch, before the change rows and the target
            // rows (the commit point).
            let register_writes = self.register_writes(&planned.registers).await?;
            let mut writes = planned.writes;
            let shift = register_writes.len();
            let at = planned.state_at + 1;
            writes.splice(at..at, register_writes);
            let moved = |t: usize| if t >= at { t + shift } else { t };
            let target_at = planned.target_at.map(moved);
            let (state_etag, target_etag) = match self.store.batches(writes).await {
                Ok(tags) => {
                    let first = |i: usize| tags.get(i).and_then(|t| t.first()).cloned();
                    self.registered(&planned.registers);
                    let confirms = planned.confirms.into_iter();
                    let confirms = confirms.map(|(i, c)| (moved(i), c)).collect();
                    self.finish_index(confirms, &tags).await;
                    (first(planned.state_at), target_at.and_then(first))
                }
                // Someone recorded the event (its history row exists): this call's own earlier
                // attempt, whose later writes failed (its rows are merged with what is there
                // now: accepted), or a redelivery (a stale event's retry: its first attempt may
                // have stopped before the target rows, merged again: duplicate). Otherwise
                // another writer changed the state or a target row first: read again.
                Err(StoreError::Conflict | StoreError::PreconditionFailed) => {
                    tried = true;
                    match self.history_owner(&history).await? {
                        Some(owner) if owner == attempt => {
                            for u in &out.targets {
                                self.merge_target(u, stale).await?;
                            }
                            self.notify_outbox(&pk);
                            return Ok(Recorded::Accepted(this));
                        }
                        Some(_) if stale => {
                            for u in &out.targets {
                                self.merge_target(u, true).await?;
                            }
                            self.notify_outbox(&pk);
                            return Ok(Recorded::Duplicate);
                        }
                        _ => continue,
                    }
                }
                Err(e) => return Err(e),
            };
            if !out.messages.is_empty() {
                self.notify_outbox(&pk);
            }
            if let Some(etag) = state_etag {
                self.states.put(&pk, planned.state_json, etag, target_etag);
            }
            if let (Some(at), false) = (&graph_at, stale) {
                self.supersede_late_pushes(class, &out, at, previous_applied.as_ref())
                    .await?;
            }
            return Ok(Recorded::Accepted(this));
        }
        Err(StoreError::Unavailable(
            "object state kept changing under concurrent writers".into(),
        ))
    }

    /// After an apply of a new commit was written: a push of its branch recorded after the
    /// graph was read (newer than its newest push-log key) may have read the object's state
    /// before this write, and expected its commits on the object (`pending`) although the
    /// apply carried them — a late webhook, or backfill filling a gap. This write came after
    /// that read, so this read of the log comes after the push landed: what the push path
    /// would decide with the state as written is merged now. Either the push saw the apply,
    /// or the apply sees the push: the same rows as in any sequential order. (One key-range
    /// read, empty unless a push raced the apply.)
    async fn supersede_late_pushes(
        &self,
        class: Class,
        out: &core::Outcome,
        (follow, key): &(core::Follow, String),
        previous: Option<&CommitSha>,
    ) -> Result<(), StoreError> {
        let applied_new = class == Class::Applied && out.state.applied_sha().as_ref() != previous;
        if !applied_new || out.state.follows.as_ref() != Some(follow) {
            return Ok(());
        }
        let pk = PushRecord::partition(follow.repository.as_str(), follow.git_ref.as_str());
        // Newer pushes sort first; a graph of no push was built at no key.
        let to = if key.is_empty() { "log}" } else { key.as_str() };
        let newer = self
            .store
            .query_range(Table::Pushes, &pk, "log|", to, usize::MAX)
            .await?;
        if newer.is_empty() {
            return Ok(());
        }
        let (graph, _) = self
            .followed_graph_at(&follow.repository, &follow.git_ref)
            .await?;
        for e in newer {
            let push: PushRecord = e.record()?;
            let pushed: Vec<CommitSha> = push
                .commits
                .iter()
                .filter_map(|c| CommitSha::parse(c).ok())
                .collect();
            let updates = core::on_push(
                &out.state,
                &graph,
                &pushed,
                push.forced,
                false,
                push.received_at,
            );
            for u in updates {
                self.merge_target(&u, false).await?;
            }
        }
        Ok(())
    }

    /// The object's state (the one this process wrote last, else the stored one), the
    /// event's commit, and the followed branch's history when the event needs it: applying a
    /// new commit (it supersedes), starting to follow a branch (its later pushes are
    /// replayed), or arriving late (it may still supersede, or be the object's first report).
    async fn load(&self, pk: &str, event: &FluxEvent, class: Class) -> Result<Loaded, StoreError> {
        let (state, etag, target_etag) = match self.states.take(pk) {
            Some(c) => (Some(c.state), Some(c.etag), c.target_etag),
            None => match self.store.get(Table::Objects, pk, "state").await? {
                Some(e) => (Some(e.record::<ObjectState>()?), e.etag.clone(), None),
                None => (None, None, None),
            },
        };
        let commit = self.commit_info(event, state.as_ref()).await?;
        let followed = state.as_ref().and_then(|s| s.follows.clone());
        let reported = core::follow_of(event, commit.as_ref());
        let new_follow = reported.is_some() && reported != followed;
        let follow = reported.or(followed);
        let applies_new = class == Class::Applied
            && core::event_sha(event, commit.as_ref()).is_some_and(|sha| {
                state
                    .as_ref()
                    .and_then(|s| s.applied.as_ref())
                    .and_then(|a| a.sha.as_ref())
                    != Some(&sha)
            });
        let older = state
            .as_ref()
            .and_then(|s| s.last_event_at)
            .is_some_and(|last| event.timestamp < last);
        let (graph, graph_at) = match (follow, applies_new || new_follow || older) {
            (Some(f), true) => {
                let (graph, key) = self.followed_graph_at(&f.repository, &f.git_ref).await?;
                (Some(graph), Some((f, key)))
            }
            _ => (None, None),
        };
        Ok(Loaded {
            state,
            etag,
            target_etag,
            commit,
            graph,
            graph_at,
        })
    }

    /// Merges the outcome's target updates into their rows: the row this process wrote last
    /// from the cached copy (with its etag), the others as read now (several updates of one
    /// row in order).
    async fn plan_rows(
        &self,
        out: &core::Outcome,
        cached: Option<(&core::CurrentTarget, &Etag)>,
        stale: bool,
    ) -> Result<Rows, StoreError> {
        let mut rows = Rows::default();
        for u in &out.targets {
            match cached {
                Some((c, etag)) if c.sha == u.sha && c.row.name == u.object.name => {
                    let base = rows
                        .blind
                        .iter()
                        .position(|(sha, _, _)| sha == &u.sha)
                        .map(|i| rows.blind.remove(i).1)
                        .unwrap_or_else(|| c.row.clone());
                    let merged =
                        TargetRecord::merge_event(Some(base.clone()), u, stale).unwrap_or(base);
                    rows.blind.push((u.sha.clone(), merged, etag.clone()));
                    rows.blind_old = Some(c.row.clone());
                }
                _ => {
                    if let Some((_, row, _)) = rows
                        .read
                        .iter_mut()
                        .find(|(m, _, _)| m.sha == u.sha && m.object == u.object)
                    {
                        *row = TargetRecord::merge_event(row.take(), u, stale);
                        continue;
                    }
                    let stored = self
                        .store
                        .get(
                            Table::Commits,
                            u.sha.as_str(),
                            &TargetRecord::row_key(&u.object),
                        )
                        .await?;
                    let (record, etag) = match stored {
                        Some(e) => (Some(e.record::<TargetRecord>()?), e.etag.clone()),
                        None => (None, None),
                    };
                    let row = TargetRecord::merge_event(record.clone(), u, stale);
                    rows.read.push((u.clone(), row, etag));
                    rows.read_old.push(record);
                }
            }
        }
        Ok(rows)
    }

    /// The writes of one outcome, in one call: a new follows row first, then the object's
    /// transaction (state, history, incidents, outbox), then its target rows — one commit on
    /// SQLite; on Table Storage in that order, stopping at the first failure. The follows
    /// row goes first because it is harmless alone (a push that finds it checks the object's
    /// state), while a state naming a branch whose follows row is missing would be followed
    /// by no push; a failure after the state is finished by the retry, which sees a
    /// duplicate. Also the state row's text, for the cache (the state is encoded once).
    fn writes(
        &self,
        pk: &str,
        out: &core::Outcome,
        etag: Option<Etag>,
        history: &Row,
        rows: &Rows,
        previous_follow: Option<&core::Follow>,
    ) -> Planned {
        let received_at = rows.received_at;
        let mut confirms = vec![];
        let mut registers = vec![];
        let mut writes = Vec::with_capacity(2 + rows.blind.len() + rows.read.len());
        let object = &out.state.object;
        if let Some(f) = out
            .state
            .follows
            .as_ref()
            .filter(|f| previous_follow != Some(*f))
        {
            let follow_pk =
                super::records::PushRecord::partition(f.repository.as_str(), f.git_ref.as_str());
            writes.push((
                Table::Follows,
                follow_pk.clone(),
                vec![BatchOp::Upsert(Row::from_record(&follow_pk, pk, object))],
            ));
        }
        let mut ops = Vec::with_capacity(2 + out.incidents.len() + out.messages.len());
        let state_row = tagged(pk, "state", &out.state, &[("rowType", ROW_STATE)]);
        let state_json = state_row.json().to_owned();
        ops.push(match etag {
            Some(etag) => BatchOp::Update(state_row, etag),
            None => BatchOp::Insert(state_row),
        });
        ops.push(BatchOp::Insert(history.clone()));
        for inc in &out.incidents {
            // Its `state` (`open`, `resolved`) is a top-level string already: a tag.
            ops.push(BatchOp::Upsert(tagged(
                pk,
                &format!("incident|{}", inc.id),
                inc,
                &[("rowType", ROW_INCIDENT)],
            )));
        }
        for (i, m) in out.messages.iter().enumerate() {
            let rec = OutboxRecord::pending(m.clone());
            // Ordered per object: the event count, then the message's place in it.
            let rk = format!("outbox|{:012}|{i:02}|{}", out.state.events, m.id);
            ops.push(BatchOp::Insert(tagged(
                pk,
                &rk,
                &rec,
                &[("rowType", ROW_OUTBOX)],
            )));
        }
        let state_at = writes.len();
        writes.push((Table::Objects, pk.to_string(), ops));
        let current = out.state.current_target.as_ref().map(|c| &c.sha);
        let mut target_at = None;
        for (sha, row, etag) in &rows.blind {
            // The audit index first: the target row is the commit point (see `audit`).
            let index = self.index_writes(
                sha.as_str(),
                rows.blind_old.as_ref(),
                Some(row),
                received_at,
            );
            confirms.extend(index.confirm.map(|c| (writes.len(), c)));
            writes.extend(index.before);
            registers.extend(index.registers);
            let entity = Row::from_record(sha.as_str(), TargetRecord::row_key(object), row);
            if Some(sha) == current {
                target_at = Some(writes.len());
            }
            writes.push((
                Table::Commits,
                sha.to_string(),
                vec![BatchOp::Update(entity, etag.clone())],
            ));
        }
        for ((u, row, etag), old) in rows.read.iter().zip(&rows.read_old) {
            let Some(row) = row else { continue };
            let index = self.index_writes(u.sha.as_str(), old.as_ref(), Some(row), received_at);
            confirms.extend(index.confirm.map(|c| (writes.len(), c)));
            writes.extend(index.before);
            registers.extend(index.registers);
            let entity = Row::from_record(u.sha.as_str(), TargetRecord::row_key(&u.object), row);
            let op = match etag {
                Some(etag) => BatchOp::Update(entity, etag.clone()),
                None => BatchOp::Insert(entity),
            };
            if Some(&u.sha) == current && &u.object == object {
                target_at = Some(writes.len());
            }
            writes.push((Table::Commits, u.sha.to_string(), vec![op]));
        }
        Planned {
            writes,
            confirms,
            registers,
            state_json,
            state_at,
            target_at,
        }
    }

    /// A Helm chart version's abbreviated commit: the one pushed commit with that prefix —
    /// of the repository the HelmRelease follows, once it follows one (learned like a
    /// Kustomization's: from the first report that resolved) — else none (ambiguous, not
    /// pushed, or an OCI digest's prefix).
    async fn commit_by_prefix(
        &self,
        prefix: &str,
        state: Option<&ObjectState>,
    ) -> Result<Option<CommitInfo>, StoreError> {
        if let Some(c) = state
            .and_then(|s| s.commit.as_ref())
            .filter(|c| c.sha.as_str().starts_with(prefix))
        {
            return Ok(Some(c.clone()));
        }
        if repeats(state, prefix) && self.missing.known_missing(prefix, Instant::now()) {
            return Ok(None);
        }
        let epoch = self.missing.epoch();
        let follows = state.and_then(|s| s.follows.as_ref());
        let mut found = Vec::new();
        for row in self
            .store
            .query_pk_prefix(Table::Commits, prefix, "commit")
            .await?
        {
            let c: CommitRecord = row.record()?;
            let sha = CommitSha::parse(&row.pk)
                .map_err(|e| StoreError::Corrupt(format!("commit row {}: {e}", row.pk)))?;
            let info = c.info(sha)?;
            if follows.is_some_and(|f| f.repository != info.repository) {
                continue;
            }
            found.push(info);
        }
        if found.len() == 1 {
            return Ok(found.pop());
        }
        self.missing.note(prefix, epoch, Instant::now());
        Ok(None)
    }

    /// The attempt that wrote the event's history row, if it exists (`""` for a row written
    /// before attempts were marked).
    async fn history_owner(&self, history: &Row) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get(Table::Objects, &history.pk, &history.rk)
            .await?
            .map(|e| {
                e.props
                    .get("attempt")
                    .and_then(|a| a.as_str())
                    .unwrap_or_default()
                    .to_string()
            }))
    }

    /// The holes an event shows (part 12): a commit of a followed repository that no push
    /// described, an applied commit (its approval record, if it has none, is asked for).
    async fn notice_flux(
        &self,
        event: &FluxEvent,
        class: Class,
        commit: Option<&CommitInfo>,
        state: &ObjectState,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        use crate::backfill::Item;
        if self.backfill.is_none() {
            return Ok(());
        }
        match commit {
            None => {
                let (Some(follow), Some(sha)) = (&state.follows, core::event_sha(event, None))
                else {
                    return Ok(());
                };
                let git_ref = event
                    .source_revision()
                    .filter(|r| {
                        r.candidate_refs()
                            .iter()
                            .any(|c| c == follow.git_ref.as_str())
                    })
                    .map(|_| follow.git_ref.to_string());
                let item = Item::Commit {
                    repository: follow.repository.to_string(),
                    git_ref,
                    sha: sha.to_string(),
                };
                self.notice(item, now).await
            }
            Some(c) if class == Class::Applied => {
                let item = Item::Approval {
                    repository: c.repository.to_string(),
                    sha: c.sha.to_string(),
                };
                self.notice(item, now).await
            }
            Some(_) => Ok(()),
        }
    }

    /// What a push recorded about the event's source commit: from the object's state when it
    /// is the commit of its previous event, else from the commit's partition.
    async fn commit_info(
        &self,
        event: &FluxEvent,
        state: Option<&ObjectState>,
    ) -> Result<Option<CommitInfo>, StoreError> {
        let Some(revision) = event.source_revision() else {
            return Ok(None);
        };
        if let Some(prefix) = revision.commit_prefix() {
            return self.commit_by_prefix(prefix, state).await;
        }
        let Some(sha) = revision.commit() else {
            return Ok(None);
        };
        if let Some(c) = state
            .and_then(|s| s.commit.as_ref())
            .filter(|c| c.sha == sha)
        {
            return Ok(Some(c.clone()));
        }
        // Not pushed a moment ago: not looked up again yet — when the object reported it
        // before. Its first report always looks: the commit may have been recorded since by
        // another instance, and a first report decides what the object skipped.
        if repeats(state, sha.as_str()) && self.missing.known_missing(sha.as_str(), Instant::now())
        {
            return Ok(None);
        }
        let epoch = self.missing.epoch();
        let Some(row) = self
            .store
            .get(Table::Commits, sha.as_str(), "commit")
            .await?
        else {
            self.missing.note(sha.as_str(), epoch, Instant::now());
            return Ok(None);
        };
        let c: CommitRecord = row.record()?;
        Ok(Some(c.info(sha)?))
    }
}

/// Whether the object's latest report named the commit `sha` (or an abbreviation of it):
/// the next event of the same revision.
fn repeats(state: Option<&ObjectState>, sha: &str) -> bool {
    state
        .and_then(|s| s.last_revision.as_deref())
        .map(crate::domain::Revision::parse)
        .is_some_and(|r| {
            r.commit().is_some_and(|c| c.as_str().starts_with(sha))
                || r.commit_prefix().is_some_and(|p| p == sha)
        })
}

fn summary(event: &FluxEvent, class: Class, out: &core::Outcome) -> serde_json::Value {
    json!({
        "event": "flux",
        "object": event.object.subject(),
        "class": class,
        "disposition": match out.disposition {
            Disposition::Applied => "applied",
            Disposition::Duplicate => "duplicate",
            Disposition::Stale => "stale",
        },
        "messages": out.messages.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>(),
    })
}

/// A mark unique to one call (this process, this moment, a counter): which attempt wrote a
/// history row.
fn attempt_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}.{:x}.{:x}",
        std::process::id(),
        started,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every event is kept in its object's history: row `event|{time}|{fingerprint}`, keyed so a
/// retry rewrites the same row. The time keeps its nanoseconds: two events of one second
/// (or an event without a timestamp, which takes its arrival time, sent twice) are two rows.
/// Long messages (Helm appends its logs) are cut.
fn history_row(pk: &str, event: &FluxEvent, class: Class, attempt: &str) -> Row {
    /// The row's properties, borrowed from the event: serialised straight to text.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct History<'a> {
        timestamp: &'a DateTime<Utc>,
        reason: &'a str,
        severity: &'a crate::flux::Severity,
        class: Class,
        message: &'a str,
        revision: Option<&'a str>,
        reporting_controller: &'a Option<String>,
        /// Which call wrote it (see `project_flux`).
        attempt: &'a str,
    }
    let message = crate::flux::cut(event.message.clone(), 8 * 1024);
    let rk = format!(
        "event|{}|{}",
        event
            .timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        event.fingerprint
    );
    let history = History {
        timestamp: &event.timestamp,
        reason: &event.reason,
        severity: &event.severity,
        class,
        message: &message,
        revision: event.revision(),
        reporting_controller: &event.reporting_controller,
        attempt,
    };
    tagged(pk, &rk, &history, &[("rowType", ROW_EVENT)])
}
