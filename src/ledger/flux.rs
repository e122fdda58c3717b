//! Flux events: the glue between the store and the pure core. Reads what the core needs
//! (the object's state, the event's commit, the followed branch's history), runs it, and
//! writes its outcome: state + incidents + outbox in one atomic batch of the object's
//! partition, then the target rows in the commits' partitions.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::records::{CommitRecord, OutboxRecord, ROW_EVENT, ROW_INCIDENT, ROW_OUTBOX, ROW_STATE};
use super::{object_partition, tagged, Ledger, MAX_CONFLICT_RETRIES};
use crate::core::{self, CommitInfo, Context, Disposition, ObjectState};
use crate::flux::{classify, FluxEvent};
use crate::store::{BatchOp, StoreError, Table};

impl Ledger {
    pub(super) async fn project_flux(
        &self,
        event: &FluxEvent,
        received_at: DateTime<Utc>,
    ) -> Result<serde_json::Value, StoreError> {
        let class = classify(event);
        let pk = object_partition(&event.object);
        let commit = self.commit_info(event).await?;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let row = self.store.get(Table::Objects, &pk, "state").await?;
            let (state, etag) = match &row {
                Some(e) => (Some(e.record::<ObjectState>()?), e.etag.clone()),
                None => (None, None),
            };
            let follow = core::follow_of(event, commit.as_ref())
                .or_else(|| state.as_ref().and_then(|s| s.follows.clone()));
            // Only an apply can supersede: the branch history is read for those alone.
            let graph = match (&follow, class) {
                (Some(f), crate::flux::Class::Applied) => {
                    Some(self.branch_graph(&f.repository, &f.git_ref).await?)
                }
                _ => None,
            };
            let ctx = Context {
                commit: commit.clone(),
                graph: graph.as_ref(),
            };
            let previous_follow = state.as_ref().and_then(|s| s.follows.clone());
            let out = core::apply_event(state, event, class, &ctx, received_at);
            if out.disposition == Disposition::Applied {
                let mut ops = Vec::with_capacity(2 + out.incidents.len() + out.messages.len());
                let state_row = tagged(&pk, "state", &out.state, &[("rowType", ROW_STATE)]);
                ops.push(match &etag {
                    Some(etag) => BatchOp::Update(state_row, etag.clone()),
                    None => BatchOp::Insert(state_row),
                });
                ops.push(BatchOp::Upsert(history_row(&pk, event, class)));
                for inc in &out.incidents {
                    let state = match inc.state {
                        core::IncidentState::Open => "open",
                        core::IncidentState::Resolved => "resolved",
                    };
                    ops.push(BatchOp::Upsert(tagged(
                        &pk,
                        &format!("incident|{}", inc.id),
                        inc,
                        &[("rowType", ROW_INCIDENT), ("state", state)],
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
                        &[("rowType", ROW_OUTBOX), ("delivery", "pending")],
                    )));
                }
                match self.store.batch(Table::Objects, &pk, ops).await {
                    Ok(_) => {}
                    Err(StoreError::Conflict | StoreError::PreconditionFailed) => continue,
                    Err(e) => return Err(e),
                }
            }
            if out.disposition == Disposition::Stale {
                // Outdated for the state, still part of the object's history.
                self.store
                    .upsert(Table::Objects, history_row(&pk, event, class))
                    .await?;
            }
            let replayed = out.disposition == Disposition::Duplicate;
            for u in &out.targets {
                self.merge_target(u, replayed).await?;
            }
            if let Some(f) = &out.state.follows {
                if previous_follow.as_ref() != Some(f) {
                    let follow_pk =
                        super::records::PushRecord::partition(&f.repository, &f.git_ref);
                    self.store
                        .upsert(
                            Table::Follows,
                            crate::store::Entity::from_record(&follow_pk, &pk, &out.state.object),
                        )
                        .await?;
                }
            }
            if !out.messages.is_empty() {
                self.notify_outbox(&pk);
            }
            return Ok(json!({
                "event": "flux",
                "object": event.object.subject(),
                "class": class,
                "disposition": match out.disposition {
                    Disposition::Applied => "applied",
                    Disposition::Duplicate => "duplicate",
                    Disposition::Stale => "stale",
                },
                "messages": out.messages.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>(),
            }));
        }
        Err(StoreError::Unavailable(
            "object state kept changing under concurrent writers".into(),
        ))
    }

    /// What a push recorded about the event's source commit.
    async fn commit_info(&self, event: &FluxEvent) -> Result<Option<CommitInfo>, StoreError> {
        let Some(sha) = event.source_revision().and_then(|r| r.commit()) else {
            return Ok(None);
        };
        let Some(row) = self
            .store
            .get(Table::Commits, sha.as_str(), "commit")
            .await?
        else {
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

/// Every event is kept in its object's history: row `event|{time}|{fingerprint}`, keyed so a
/// retry rewrites the same row. Long messages (Helm appends its logs) are cut.
fn history_row(pk: &str, event: &FluxEvent, class: crate::flux::Class) -> crate::store::Entity {
    let message = crate::flux::cut(event.message.clone(), 8 * 1024);
    let rk = format!(
        "event|{}|{}",
        event
            .timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        event.fingerprint
    );
    tagged(
        pk,
        &rk,
        &json!({
            "timestamp": event.timestamp,
            "reason": event.reason,
            "severity": event.severity,
            "class": class,
            "message": message,
            "revision": event.revision(),
            "reportingController": event.reporting_controller,
        }),
        &[("rowType", ROW_EVENT)],
    )
}
