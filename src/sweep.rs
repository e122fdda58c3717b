//! The sweep: what no webhook triggers. Azure calls it on a timer (`POST /Sweep`, the custom
//! handler invocation protocol); standalone, the server runs it on an interval.
//!
//! 1. **Stalled rollouts.** Every `pending` target older than `FLUXTRAIL_STALL_AFTER` (counted
//!    from when the push was received) becomes `stalled`, and one `io.fluxtrail.rollout.stalled`
//!    goes out per (commit, object). The message is inserted into the object's outbox under a
//!    key derived from its deterministic id *before* the target is marked, so a sweep that
//!    stops half-way, or two sweeps at once, emit it exactly once. A later apply turns the
//!    target `applied`; failed, superseded and applied targets are never pending.
//! 2. **Undelivered messages** due for another attempt are handed to the publisher.
//! 3. **Retention.** Journal entries of finished deliveries and delivered outbox messages are
//!    deleted after `FLUXTRAIL_RETAIN_DELIVERIES` (default 7 days), object event history after
//!    `FLUXTRAIL_RETAIN_HISTORY` (default 90 days). Evidence (commits, approvals, targets,
//!    pushes) is kept.
//!
//! Every step is idempotent; deletes are etag-conditional, so concurrent sweeps do no harm.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::core::message::message_id;
use crate::core::{Message, MessageType, ObjectState, TargetRecord, TargetState, SILENT_AFTER};
use crate::flux::ObjectRef;
use crate::ledger::records::{CommitRecord, Delivery, OutboxRecord, ROW_OUTBOX, ROW_STATE};
use crate::ledger::{object_partition, Ledger};
use crate::outbox::Dispatcher;
use crate::store::{BatchOp, Entity, Row, StoreError, Table};

/// The most rows of each kind one sweep deletes.
const RETENTION_BATCH: usize = 5_000;

#[derive(Debug, Clone, Copy)]
pub struct SweepSettings {
    pub stall_after: Duration,
    pub retain_deliveries: Duration,
    pub retain_history: Duration,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub stalled: usize,
    pub delivered: usize,
    pub deleted_deliveries: usize,
    pub deleted_messages: usize,
    pub deleted_history: usize,
}

impl SweepReport {
    pub fn logs(&self) -> Vec<String> {
        vec![
            format!("stalled {} rollouts", self.stalled),
            format!("delivered {} waiting messages", self.delivered),
            format!(
                "retention deleted {} journal entries, {} delivered messages, {} history rows",
                self.deleted_deliveries, self.deleted_messages, self.deleted_history
            ),
        ]
    }
}

pub async fn sweep(
    ledger: &Ledger,
    dispatcher: &Dispatcher,
    settings: SweepSettings,
    now: DateTime<Utc>,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport {
        stalled: stall(ledger, settings.stall_after, now).await?,
        ..SweepReport::default()
    };
    report.delivered = dispatcher.deliver_all(now).await?.delivered;
    // Retention: the store filters by age; at most RETENTION_BATCH rows of each kind per
    // sweep, so a sweep's memory and time stay bounded whatever the history (the next sweeps
    // take the rest).
    let before = |d: Duration| {
        (now - chrono::Duration::from_std(d).unwrap_or_default())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let kinds = [
        (
            Table::Deliveries,
            ("state", "done"),
            "receivedAt",
            settings.retain_deliveries,
        ),
        (
            Table::Objects,
            ("delivery", Delivery::Delivered.as_str()),
            "deliveredAt",
            settings.retain_deliveries,
        ),
        (
            Table::Objects,
            ("rowType", "event"),
            "timestamp",
            settings.retain_history,
        ),
    ];
    let mut deleted = [0; 3];
    for (n, (table, kind, time_prop, keep)) in kinds.into_iter().enumerate() {
        let old = ledger
            .store()
            .query_before(table, kind, time_prop, &before(keep), RETENTION_BATCH)
            .await?;
        deleted[n] = delete(ledger, table, old).await?;
    }
    [
        report.deleted_deliveries,
        report.deleted_messages,
        report.deleted_history,
    ] = deleted;
    Ok(report)
}

/// Marks overdue pending targets stalled, announcing each once — per object, in the order
/// the commits were pushed, and only the first [`SILENT_AFTER`] since the object's last
/// report: the next one announces, once, that the object went silent (`object.silent`);
/// later ones are marked but not announced until it reports again. Retired objects, and
/// commits of a branch the object left, expect nothing.
async fn stall(
    ledger: &Ledger,
    stall_after: Duration,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let store = ledger.store();
    let limit = chrono::Duration::from_std(stall_after).unwrap_or_default();
    // Overdue pending targets by object.
    let mut due: BTreeMap<String, Vec<(Entity, TargetRecord)>> = BTreeMap::new();
    for row in store
        .query_where(Table::Commits, "state", "pending")
        .await?
    {
        let target: TargetRecord = row.record()?;
        if now - target.first_seen_at < limit {
            continue;
        }
        due.entry(object_partition(&target_object(&target)))
            .or_default()
            .push((row, target));
    }
    let mut stalled = 0;
    for (pk, mut rows) in due {
        rows.sort_by(|(a, x), (b, y)| x.first_seen_at.cmp(&y.first_seen_at).then(a.pk.cmp(&b.pk)));
        stalled += stall_object(ledger, &pk, rows, limit).await?;
    }
    Ok(stalled)
}

fn target_object(t: &TargetRecord) -> ObjectRef {
    ObjectRef {
        cluster: t.cluster.clone(),
        kind: t.kind.clone(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
    }
}

async fn stall_object(
    ledger: &Ledger,
    pk: &str,
    rows: Vec<(Entity, TargetRecord)>,
    limit: chrono::Duration,
) -> Result<usize, StoreError> {
    let store = ledger.store();
    let (mut state, etag): (Option<ObjectState>, _) =
        match store.get(Table::Objects, pk, ROW_STATE).await? {
            Some(e) => (Some(e.record()?), e.etag.clone()),
            None => (None, None),
        };
    if state.as_ref().is_some_and(|s| s.retired_at.is_some()) {
        return Ok(0);
    }
    let follows = state.as_ref().and_then(|s| s.follows.clone());
    let mut count = state.as_ref().map_or(0, |s| s.stalled_since_report);
    let mut stalled = 0;
    for (row, target) in rows {
        let object = target_object(&target);
        let sha = row.pk.clone();
        // An object that moved to another branch (or repository) no longer expects the
        // commits of the one it left.
        if let Some(f) = &follows {
            let commit: Option<CommitRecord> =
                match store.get(Table::Commits, &sha, "commit").await? {
                    Some(e) => Some(e.record()?),
                    None => None,
                };
            if commit.is_some_and(|c| {
                c.repository != f.repository.as_str()
                    || !c.refs.iter().any(|r| r == f.git_ref.as_str())
            }) {
                continue;
            }
        }
        // When it became overdue: the same for every sweep that notices it.
        let overdue_at = target.first_seen_at + limit;
        let branch = follows
            .as_ref()
            .map(|f| f.git_ref.as_str())
            .unwrap_or("its branch");
        let message = match count.cmp(&SILENT_AFTER) {
            std::cmp::Ordering::Less => Some(Message {
                id: message_id(MessageType::RolloutStalled, &object, &sha),
                kind: MessageType::RolloutStalled,
                object: object.clone(),
                time: overdue_at,
                revision: follows.as_ref().map(|f| f.git_ref.to_string()),
                sha: Some(sha.clone()),
                reason: Some("RolloutStalled".into()),
                message: Some(format!(
                    "commit {} was pushed at {} to {branch} and was neither applied nor superseded on {} within {}",
                    &sha[..sha.len().min(12)],
                    target.first_seen_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    object.subject(),
                    humantime::format_duration(limit.to_std().unwrap_or_default()),
                )),
                incident_id: None,
                repository: follows.as_ref().map(|f| f.repository.to_string()),
            }),
            // Once per silence: keyed by the object's last report (its event count).
            std::cmp::Ordering::Equal => Some(Message {
                id: message_id(
                    MessageType::ObjectSilent,
                    &object,
                    &state.as_ref().map_or(0, |s| s.events).to_string(),
                ),
                kind: MessageType::ObjectSilent,
                object: object.clone(),
                time: overdue_at,
                revision: state.as_ref().and_then(|s| s.last_revision.clone()),
                sha: None,
                reason: Some("ObjectSilent".into()),
                message: Some(format!(
                    "{} has not reported since {}; {} consecutive pushes to {branch} stalled on it. \
                     Further stalls are not announced until it reports again; if it is gone, \
                     retire it (POST /api/objects/{}/retire)",
                    object.subject(),
                    state
                        .as_ref()
                        .and_then(|s| s.last_event_at)
                        .map_or("it was first seen".into(), |t| t
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    SILENT_AFTER + 1,
                    object.subject(),
                )),
                incident_id: None,
                repository: follows.as_ref().map(|f| f.repository.to_string()),
            }),
            std::cmp::Ordering::Greater => None,
        };
        count += 1;
        // The message first, under a key derived from its id: a sweep that stops half-way,
        // or two at once, emit it exactly once.
        let mut announced = false;
        if let Some(message) = message {
            let outbox = OutboxRecord::pending(message.clone());
            // Keyed by when it became due, so an object's sweep messages are delivered in
            // the order their commits were pushed (the silence after the stalls before it).
            let rank = u8::from(message.kind == MessageType::ObjectSilent);
            let rk = format!(
                "outbox|sweep|{}|{rank}|{}",
                overdue_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                message.id
            );
            let entity = Row::from_record(pk, rk, &outbox).with_tag("rowType", ROW_OUTBOX);
            announced = match store.insert(Table::Objects, entity).await {
                Ok(_) => true,
                Err(StoreError::Conflict) => false, // another sweep, or an earlier one that stopped
                Err(e) => return Err(e),
            };
        }
        let mut marked = target.clone();
        marked.state = TargetState::Stalled;
        let entity = Row::from_record(&row.pk, &row.rk, &marked);
        match store
            .update(Table::Commits, entity, row.etag.as_ref().expect("etag"))
            .await
        {
            Ok(_) | Err(StoreError::PreconditionFailed) => {}
            Err(e) => return Err(e),
        }
        if announced {
            stalled += 1;
            ledger.notify_outbox(pk);
        }
    }
    // The count, conditional on the state read: a report meanwhile reset it, and wins.
    if let (Some(st), Some(etag)) = (state.as_mut(), etag) {
        if st.stalled_since_report != count {
            st.stalled_since_report = count;
            ledger.write_state(pk, st, &etag).await?;
        }
    }
    Ok(stalled)
}

/// Deletes the entities, one partition's batch (≤ 100) at a time, each delete conditional on
/// the etag read (a concurrent sweep's delete is not an error).
async fn delete(ledger: &Ledger, table: Table, rows: Vec<Entity>) -> Result<usize, StoreError> {
    let mut by_partition: BTreeMap<String, Vec<Entity>> = BTreeMap::new();
    for e in rows {
        by_partition.entry(e.pk.clone()).or_default().push(e);
    }
    let mut deleted = 0;
    for (pk, rows) in by_partition {
        for chunk in rows.chunks(100) {
            let ops = chunk
                .iter()
                .map(|e| BatchOp::Delete {
                    rk: e.rk.clone(),
                    etag: e.etag.clone(),
                })
                .collect();
            match ledger.store().batch(table, &pk, ops).await {
                Ok(_) => deleted += chunk.len(),
                // Someone else deleted or changed one of them: leave this chunk to the next sweep.
                Err(StoreError::PreconditionFailed) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(deleted)
}
