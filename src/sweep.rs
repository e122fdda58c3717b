//! The sweep: what no webhook triggers. Azure calls it on a timer (`POST /Sweep`, the custom
//! handler invocation protocol); standalone, the server runs it on an interval.
//!
//! 1. **Stalled rollouts.** Every `pending` target older than `FLUXTRAIL_STALL_AFTER` (counted
//!    from when the push was received) becomes `stalled`, and one `io.fluxtrail.rollout.stalled`
//!    goes out per (commit, object) — decided on the object's state and written with it in
//!    one conditional batch of the object's partition (see `stall_object`), so a sweep that
//!    stops half-way, two sweeps at once, or an apply on another instance meanwhile, emit it
//!    exactly once and never for a commit that was applied. A later apply turns the target
//!    `applied`; failed, superseded and applied targets are never pending.
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
use crate::core::{
    Message, MessageType, ObjectState, TargetRecord, TargetState, TargetUpdate, SILENT_AFTER,
};
use crate::domain::CommitSha;
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
    /// Approval decisions taken, and how many were `change.unapproved` (contract §10).
    pub approvals_decided: usize,
    pub unapproved: usize,
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
            format!(
                "decided {} approvals, {} unapproved",
                self.approvals_decided, self.unapproved
            ),
        ]
    }
}

/// The sweep's share of the backfill (contract §11: a worker and the sweep drain it): what
/// is due, for up to 20 s, as a log line.
pub async fn drain_backfill(b: &crate::backfill::Backfill) -> Result<String, StoreError> {
    let r = b.drain(std::time::Duration::from_secs(20)).await?;
    Ok(format!(
        "backfill: {} done, {} failed, {} to retry",
        r.done, r.failed, r.retried
    ))
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
    let approvals = ledger.decide_approvals(now).await?;
    report.approvals_decided = approvals.decided;
    report.unapproved = approvals.unapproved;
    report.delivered = dispatcher.deliver_all(now).await?.delivered;
    if ledger.backfill_notices().is_some() {
        let cutoff =
            now - chrono::Duration::from_std(settings.retain_deliveries).unwrap_or_default();
        delete(ledger, Table::Audit, ledger.backfill_expired(cutoff).await?).await?;
    }
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
        // Parts of journal entries too large for one entity (counted with the entries).
        (
            Table::Deliveries,
            ("state", "part"),
            "receivedAt",
            settings.retain_deliveries,
        ),
    ];
    let mut deleted = [0; 4];
    for (n, (table, kind, time_prop, keep)) in kinds.into_iter().enumerate() {
        let old = ledger
            .store()
            .query_before(table, kind, time_prop, &before(keep), RETENTION_BATCH)
            .await?;
        deleted[n] = delete(ledger, table, old).await?;
    }
    let parts;
    [
        report.deleted_deliveries,
        report.deleted_messages,
        report.deleted_history,
        parts,
    ] = deleted;
    report.deleted_deliveries += parts;
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
    ObjectRef::new(&t.cluster, &t.kind, &t.namespace, &t.name)
}

/// One object's overdue commits, decided against its state and written in one batch of its
/// partition conditional on the state's etag: the messages, and the state counting them
/// (`stalled`: which commits were counted, so a sweep that runs again — or another
/// instance's at the same time — announces each once). The state is where every event of
/// the object is serialised, so a decision on it cannot race an apply: an apply whose state
/// was written before the read is seen in it (its commit is among the applied ones or the
/// targets of its recent events — the write of its target rows may still be on the way, and
/// is finished here), one written after fails this batch, which is decided again. Only then
/// are the rows marked `stalled`, each conditionally (a row no longer `pending` is left as
/// it is). Messages are keyed after the object's latest event (its count) and the stall
/// count, so they are delivered in the order things happened, before the next event's.
async fn stall_object(
    ledger: &Ledger,
    pk: &str,
    mut rows: Vec<(Entity, TargetRecord)>,
    limit: chrono::Duration,
) -> Result<usize, StoreError> {
    let store = ledger.store();
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            // Decided again on what is still pending now.
            let mut fresh = Vec::with_capacity(rows.len());
            for (row, _) in rows {
                if let Some(e) = store.get(Table::Commits, &row.pk, &row.rk).await? {
                    let t: TargetRecord = e.record()?;
                    if t.state == TargetState::Pending {
                        fresh.push((e, t));
                    }
                }
            }
            rows = fresh;
        }
        let Some(state_row) = store.get(Table::Objects, pk, ROW_STATE).await? else {
            return Ok(0);
        };
        let mut state: ObjectState = state_row.record()?;
        if state.retired_at.is_some() {
            return Ok(0);
        }
        let plan = plan_stalls(ledger, &state, &rows, limit).await?;
        // What the object's recent events settled (their target rows may still be on the
        // way, e.g. refused on Table Storage while the state was written): finished here.
        for u in &plan.finish {
            ledger.merge_target(u, true).await?;
        }
        if plan.marks.is_empty() {
            return Ok(0);
        }
        let mut ops = Vec::with_capacity(1 + plan.messages.len());
        for (rank, message) in &plan.messages {
            let outbox = OutboxRecord::pending(message.clone());
            let rk = format!("outbox|{:012}|s{rank:04}|{}", state.events, message.id);
            let entity = Row::from_record(pk, rk, &outbox).with_tag("rowType", ROW_OUTBOX);
            ops.push(BatchOp::Insert(entity));
        }
        if state.stalled_since_report != plan.count || state.stalled != plan.counted {
            state.stalled_since_report = plan.count;
            state.stalled = plan.counted.clone();
            let entity = Row::from_record(pk, ROW_STATE, &state).with_tag("rowType", ROW_STATE);
            let etag = state_row
                .etag
                .clone()
                .expect("stored entities carry an etag");
            ops.insert(0, BatchOp::Update(entity, etag));
        }
        if !ops.is_empty() {
            ledger.forget_state(pk);
            match store.batch(Table::Objects, pk, ops).await {
                Ok(_) => {}
                // An event (or another sweep) changed the object meanwhile: decide again.
                Err(StoreError::PreconditionFailed | StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        for (row, _) in &plan.marks {
            mark_stalled(ledger, row).await?;
        }
        if !plan.messages.is_empty() {
            ledger.notify_outbox(pk);
        }
        return Ok(plan.messages.len());
    }
    Err(StoreError::Unavailable(
        "object state kept changing under concurrent writers".into(),
    ))
}

/// How often one object's stalls are decided again when its state changed meanwhile.
const MAX_ATTEMPTS: usize = 32;

/// What one object's sweep decides.
struct StallPlan<'a> {
    /// The rows to mark stalled.
    marks: Vec<&'a (Entity, TargetRecord)>,
    /// The messages to announce, with their rank (the stall count when announced).
    messages: Vec<(u32, Message)>,
    count: u32,
    counted: Vec<CommitSha>,
    /// Target updates of the object's recent events for commits still pending here.
    finish: Vec<TargetUpdate>,
}

async fn plan_stalls<'a>(
    ledger: &Ledger,
    state: &ObjectState,
    rows: &'a [(Entity, TargetRecord)],
    limit: chrono::Duration,
) -> Result<StallPlan<'a>, StoreError> {
    let store = ledger.store();
    let follows = state.follows.clone();
    let mut plan = StallPlan {
        marks: vec![],
        messages: vec![],
        count: state.stalled_since_report,
        counted: state.stalled.clone(),
        finish: vec![],
    };
    for entry in rows {
        let (row, target) = entry;
        let object = target_object(target);
        let sha = row.pk.clone();
        let Ok(commit_sha) = CommitSha::parse(&sha) else {
            continue;
        };
        // Settled by an event the state already holds: applied, or named by a recent
        // event's targets (superseded, failed…) whose row write may not have landed yet.
        let recent: Vec<&TargetUpdate> = state
            .recent
            .iter()
            .flat_map(|r| &r.targets)
            .filter(|u| u.sha == commit_sha && u.object == object)
            .filter(|u| u.state != TargetState::Pending)
            .collect();
        if !recent.is_empty() || state.applied_shas.contains(&commit_sha) {
            plan.finish.extend(recent.into_iter().cloned());
            continue;
        }
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
        plan.marks.push(entry);
        if plan.counted.contains(&commit_sha) {
            continue; // counted (and announced) by an earlier sweep
        }
        let rank = plan.count;
        plan.count += 1;
        if plan.counted.len() <= SILENT_AFTER as usize {
            plan.counted.push(commit_sha);
        }
        if let Some(m) = stall_message(state, target, &sha, rank, limit) {
            plan.messages.push((rank, m));
        }
    }
    Ok(plan)
}

/// The message for the `rank`-th commit stalled on the object since its last report: a
/// `rollout.stalled` for the first [`SILENT_AFTER`], then one `object.silent`, then none.
fn stall_message(
    state: &ObjectState,
    target: &TargetRecord,
    sha: &str,
    rank: u32,
    limit: chrono::Duration,
) -> Option<Message> {
    let object = target_object(target);
    let follows = state.follows.as_ref();
    // When it became overdue: the same for every sweep that notices it.
    let overdue_at = target.first_seen_at + limit;
    let branch = follows.map(|f| f.git_ref.as_str()).unwrap_or("its branch");
    match rank.cmp(&SILENT_AFTER) {
        std::cmp::Ordering::Less => Some(Message {
            id: message_id(MessageType::RolloutStalled, &object, sha),
            kind: MessageType::RolloutStalled,
            object: object.clone(),
            time: overdue_at,
            revision: follows.map(|f| f.git_ref.to_string()),
            sha: Some(sha.to_string()),
            reason: Some("RolloutStalled".into()),
            message: Some(format!(
                "commit {} was pushed at {} to {branch} and was neither applied nor superseded on {} within {}",
                &sha[..sha.len().min(12)],
                target.first_seen_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                object.subject(),
                humantime::format_duration(limit.to_std().unwrap_or_default()),
            )),
            incident_id: None,
            repository: follows.map(|f| f.repository.to_string()),
            custom: None,
            opened_at: None,
            cause: None,
            group_id: None,
        }),
        // Once per silence: keyed by the object's last report (its event count).
        std::cmp::Ordering::Equal => Some(Message {
            id: message_id(MessageType::ObjectSilent, &object, &state.events.to_string()),
            kind: MessageType::ObjectSilent,
            object: object.clone(),
            time: overdue_at,
            revision: state.last_revision.clone(),
            sha: None,
            reason: Some("ObjectSilent".into()),
            message: Some(format!(
                "{} has not reported since {}; {} consecutive pushes to {branch} stalled on it. \
                 Further stalls are not announced until it reports again; if it is gone, \
                 retire it (POST /api/objects/{}/retire)",
                object.subject(),
                state
                    .last_event_at
                    .map_or("it was first seen".into(), |t| t
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                SILENT_AFTER + 1,
                object.subject(),
            )),
            incident_id: None,
            repository: follows.map(|f| f.repository.to_string()),
            custom: None,
            opened_at: None,
            cause: None,
            group_id: None,
        }),
        std::cmp::Ordering::Greater => None,
    }
}

/// Marks a row `stalled` if it is still `pending` (conditionally: an apply that lands
/// meanwhile wins, and a later one merges over `stalled`).
async fn mark_stalled(ledger: &Ledger, row: &Entity) -> Result<(), StoreError> {
    let store = ledger.store();
    let mut current = Some(row.clone());
    for _ in 0..MAX_ATTEMPTS {
        let Some(e) = current.take() else {
            return Ok(());
        };
        let mut t: TargetRecord = e.record()?;
        if t.state != TargetState::Pending {
            return Ok(());
        }
        t.state = TargetState::Stalled;
        let entity = Row::from_record(&e.pk, &e.rk, &t);
        match store
            .update(Table::Commits, entity, e.etag.as_ref().expect("etag"))
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::PreconditionFailed) => {
                current = store.get(Table::Commits, &e.pk, &e.rk).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
