//! Flux events: the glue between the store and the pure core. Reads what the core needs
//! (the object's state, the event's commit, the followed branch's history), runs it, and
//! writes its outcome: state + incidents + outbox in one atomic batch of the object's
//! partition, then the target rows in the commits' partitions.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::records::{CommitRecord, OutboxRecord, ROW_EVENT, ROW_INCIDENT, ROW_OUTBOX, ROW_STATE};
use super::{object_partition, tagged, Ledger, Recorded, MAX_CONFLICT_RETRIES};
use crate::core::{self, CommitInfo, Context, Disposition, ObjectState, TargetRecord};
use crate::flux::{classify, Class, FluxEvent};
use crate::store::{BatchOp, Row, StoreError, Table};

impl Ledger {
    pub(super) async fn project_flux(
        &self,
        event: &FluxEvent,
        received_at: DateTime<Utc>,
    ) -> Result<Recorded, StoreError> {
        let class = classify(event);
        let pk = object_partition(&event.object);
        let history = history_row(&pk, event, class);
        for _ in 0..MAX_CONFLICT_RETRIES {
            // The state this process wrote last, else the stored one.
            let (state, etag) = match self.states.take(&pk) {
                Some((state, etag)) => (Some(state), Some(etag)),
                None => match self.store.get(Table::Objects, &pk, "state").await? {
                    Some(e) => (Some(e.record::<ObjectState>()?), e.etag.clone()),
                    None => (None, None),
                },
            };
            let commit = self.commit_info(event, state.as_ref()).await?;
            let followed = state.as_ref().and_then(|s| s.follows.clone());
            let reported = core::follow_of(event, commit.as_ref());
            // A branch the object starts following: its later pushes are replayed for it.
            let new_follow = reported.is_some() && reported != followed;
            let follow = reported.or(followed);
            // Only applying a new commit can supersede: the branch history is read for those.
            let applies_new = class == Class::Applied
                && core::event_sha(event, commit.as_ref()).is_some_and(|sha| {
                    state
                        .as_ref()
                        .and_then(|s| s.applied.as_ref())
                        .and_then(|a| a.sha.as_deref())
                        != Some(sha.as_str())
                });
            // An older event than the object's last: it may still supersede, or show the
            // object on the branch before what made it follow.
            let older = state
                .as_ref()
                .and_then(|s| s.last_event_at)
                .is_some_and(|last| event.timestamp < last);
            let graph = match (&follow, applies_new || new_follow || older) {
                (Some(f), true) => Some(self.branch_graph(&f.repository, &f.git_ref).await?),
                _ => None,
            };
            let ctx = Context {
                commit: commit.clone(),
                graph: graph.as_ref(),
            };
            let previous_follow = state.as_ref().and_then(|s| s.follows.clone());
            let cached = state.as_ref().and_then(|s| s.current_target.clone());
            let mut out = core::apply_event(state, event, class, &ctx, received_at);
            match out.disposition {
                Disposition::Duplicate => {
                    // Unchanged: it goes back to the cache as it was taken.
                    if let Some(etag) = etag {
                        self.states.put_state(&pk, &out.state, etag);
                    }
                    // A retry: its first attempt may have stopped before the target rows.
                    for u in &out.targets {
                        self.merge_target(u, true).await?;
                    }
                    return Ok(Recorded::Duplicate);
                }
                // An older event than the object's last: it changes nothing of the object,
                // but what it says of its own commit is merged into that commit's row, with
                // its history row, through the same conditional write as any event.
                Disposition::Stale | Disposition::Applied => {}
            }
            let stale = out.disposition == Disposition::Stale;
            // The row of the latest commit is written blind from the cached copy when this
            // object wrote it last; other rows are read, merged and written.
            let mut blind = Vec::new();
            let mut merged = Vec::new();
            for u in &out.targets {
                match &cached {
                    Some(c) if c.sha == u.sha && c.row.name == u.object.name => blind.push((
                        u.sha.clone(),
                        TargetRecord::merge_event(Some(c.row.clone()), u, stale),
                    )),
                    _ => merged.push(u.clone()),
                }
            }
            // The commit of the object's latest event (a stale event's is not).
            let latest = if stale {
                cached.as_ref().map(|c| c.sha.clone())
            } else {
                core::event_sha(event, commit.as_ref())
            };
            if let (Some(sha), false) = (&latest, stale) {
                out.state.commit = commit.clone().filter(|c| &c.sha == sha);
            }
            // Rows the object did not write last are read now and merged, and written in the
            // same commit as the object's transaction, each conditional on what was read (a
            // concurrent push or event makes the commit fail and the whole event retry).
            let mut read_merged: Vec<(
                core::TargetUpdate,
                TargetRecord,
                Option<crate::store::Etag>,
            )> = Vec::new();
            for u in &merged {
                if let Some((_, row, _)) = read_merged
                    .iter_mut()
                    .find(|(m, _, _)| m.sha == u.sha && m.object == u.object)
                {
                    *row = TargetRecord::merge_event(Some(row.clone()), u, stale);
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
                read_merged.push((u.clone(), TargetRecord::merge_event(record, u, stale), etag));
            }
            // The state remembers the row it is about to write for its latest commit.
            let own_latest = blind
                .iter()
                .find(|(sha, _)| Some(sha) == latest.as_ref())
                .cloned()
                .or_else(|| {
                    read_merged
                        .iter()
                        .find(|(u, _, _)| {
                            Some(&u.sha) == latest.as_ref() && u.object == event.object
                        })
                        .map(|(u, row, _)| (u.sha.clone(), row.clone()))
                });
            if let Some((sha, row)) = own_latest {
                out.state.current_target = Some(core::CurrentTarget { sha, row });
            }
            let mut ops = Vec::with_capacity(2 + out.incidents.len() + out.messages.len());
            let state_row = tagged(&pk, "state", &out.state, &[("rowType", ROW_STATE)]);
            // The cache keeps the row's text: the state is encoded once.
            let state_json = state_row.json().to_owned();
            ops.push(match &etag {
                Some(etag) => BatchOp::Update(state_row, etag.clone()),
                None => BatchOp::Insert(state_row),
            });
            ops.push(BatchOp::Insert(history.clone()));
            for inc in &out.incidents {
                // Its `state` (`open`, `resolved`) is a top-level string already: a tag.
                ops.push(BatchOp::Upsert(tagged(
                    &pk,
                    &format!("incident|{}", inc.id),
                    inc,
                    &[("rowType", ROW_INCIDENT)],
                )));
            }
            for (i, m) in out.messages.iter().enumerate() {
                let rec = OutboxRecord {
                    message: m.clone(),
                    delivery: "pending".into(),
                    attempts: 0,
                    delivered_at: None,
                    next_attempt_at: None,
                    last_error: None,
                };
                // Ordered per object: the event count, then the message's place in it.
                let rk = format!("outbox|{:012}|{i:02}|{}", out.state.events, m.id);
                ops.push(BatchOp::Insert(tagged(
                    &pk,
                    &rk,
                    &rec,
                    &[("rowType", ROW_OUTBOX)],
                )));
            }
            // The object's transaction, its target rows and a new follows row in one call:
            // one commit on SQLite; on Table Storage the object's transaction first, then the
            // rows (a failure after it is finished by the retry, which sees a duplicate).
            let mut writes = vec![(Table::Objects, pk.clone(), ops)];
            for (sha, row) in &blind {
                let entity =
                    Row::from_record(sha.as_str(), TargetRecord::row_key(&event.object), row);
                writes.push((
                    Table::Commits,
                    sha.to_string(),
                    vec![BatchOp::Upsert(entity)],
                ));
            }
            for (u, row, etag) in &read_merged {
                let entity =
                    Row::from_record(u.sha.as_str(), TargetRecord::row_key(&u.object), row);
                let op = match etag {
                    Some(etag) => BatchOp::Update(entity, etag.clone()),
                    None => BatchOp::Insert(entity),
                };
                writes.push((Table::Commits, u.sha.to_string(), vec![op]));
            }
            let new_follow = out
                .state
                .follows
                .as_ref()
                .filter(|f| previous_follow.as_ref() != Some(*f));
            if let Some(f) = new_follow {
                let follow_pk = super::records::PushRecord::partition(&f.repository, &f.git_ref);
                writes.push((
                    Table::Follows,
                    follow_pk.clone(),
                    vec![BatchOp::Upsert(Row::from_record(
                        &follow_pk,
                        &pk,
                        &out.state.object,
                    ))],
                ));
            }
            let state_etag = match self.store.batches(writes).await {
                Ok(tags) => tags.into_iter().next().and_then(|t| t.into_iter().next()),
                // A stale event's history row exists: a retry of it. Its first attempt may
                // have stopped before the target rows (Table Storage): merged again.
                Err(StoreError::Conflict) if stale && self.history_exists(&history).await? => {
                    for u in &out.targets {
                        self.merge_target(u, true).await?;
                    }
                    return Ok(Recorded::Duplicate);
                }
                // Another writer changed the state or a target row first: read again.
                Err(StoreError::Conflict | StoreError::PreconditionFailed) => continue,
                Err(e) => return Err(e),
            };
            if !out.messages.is_empty() {
                self.notify_outbox(&pk);
            }
            if let Some(etag) = state_etag {
                self.states.put(&pk, state_json, etag);
            }
            return Ok(Recorded::Accepted(summary(event, class, &out)));
        }
        Err(StoreError::Unavailable(
            "object state kept changing under concurrent writers".into(),
        ))
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
        if self.missing.known_missing(prefix, Instant::now()) {
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
            if follows.is_some_and(|f| f.repository != c.repository) {
                continue;
            }
            let Ok(sha) = crate::domain::CommitSha::parse(&row.pk) else {
                continue;
            };
            found.push(CommitInfo {
                sha,
                repository: c.repository,
                refs: c.refs,
            });
        }
        if found.len() == 1 {
            return Ok(found.pop());
        }
        self.missing.note(prefix, epoch, Instant::now());
        Ok(None)
    }

    async fn history_exists(&self, history: &Row) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get(Table::Objects, &history.pk, &history.rk)
            .await?
            .is_some())
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
        // Not pushed a moment ago: not looked up again yet.
        if self.missing.known_missing(sha.as_str(), Instant::now()) {
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
        Ok(Some(CommitInfo {
            sha,
            repository: c.repository,
            refs: c.refs,
        }))
    }
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

/// Every event is kept in its object's history: row `event|{time}|{fingerprint}`, keyed so a
/// retry rewrites the same row. The time keeps its nanoseconds: two events of one second
/// (or an event without a timestamp, which takes its arrival time, sent twice) are two rows.
/// Long messages (Helm appends its logs) are cut.
fn history_row(pk: &str, event: &FluxEvent, class: Class) -> Row {
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
    };
    tagged(pk, &rk, &history, &[("rowType", ROW_EVENT)])
}
