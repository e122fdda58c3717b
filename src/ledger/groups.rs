//! One cause, one group (contract §9), and the incident index DORA's time to restore reads.
//!
//! An incident's messages (`apply.failed`, `apply.recovered`, and the internal
//! `incident.closed` of a retired object) are written in its object's outbox, in the same
//! batch as the state change. Before the dispatcher first hands one to the publisher it
//! *settles* it here: the incident joins (or leaves) its group, and the message gets the
//! group's id. Settling is an idempotent, monotone merge in the group's partition — one
//! entity-group transaction conditional on what was read — so a retry, a crash between the
//! settle and the publish, a second dispatcher on another instance, or an older message of
//! the same incident settled late all end in the same rows:
//!
//! - A member row per incident (`member|{incident id}`) moves only forward: absent → open →
//!   resolved. Settling an opening of a member that exists changes nothing (a
//!   re-announcement at another revision, a duplicate, a stale copy after the recovery).
//! - A generation row per occurrence of the cause (`gen|{n:06}`): the group. An incident
//!   that opens while the latest generation is open joins it; otherwise it opens generation
//!   n + 1 — a new group id — and `group.opened` is written in the same batch. The member
//!   that brings the open count to 0 resolves it and writes `group.resolved` in that batch.
//!   Both messages have deterministic ids and live in the group partition's outbox, so they
//!   exist exactly once, whatever instance settled the member.
//! - A member stays in the group that its first failure opened: re-announced at another
//!   revision it keeps its group id (a false `group.resolved` while the object is still
//!   broken would close the ticket too early), and its recovery counts there.
//!
//! Partition: `group|{hash of the cause}` in table `objects` (beside the objects' own
//! partitions, so the dispatcher delivers its outbox like any object's). Index rows, in
//! table `audit`, written after the batch as facts a reader verifies or that only grow:
//! `groups|open` / `groups|resolved` (`{stamp}|{group id}` → the generation, for
//! `GET /api/groups`: a reader keeps only those the generation row confirms) and
//! `incidents|{cluster}` (`{stamp of openedAt}|{incident id}`: inserted when it opens, never
//! replaced by an opening, replaced by its resolution — for DORA).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::audit::stamp;
use super::records::{OutboxRecord, ROW_OUTBOX};
use crate::core::incident::IncidentState;
use crate::core::message::{message_id, Custom, Message, MessageType};
use crate::flux::ObjectRef;
use crate::store::{BatchOp, Entity, Etag, Row, Store, StoreError, Table};

/// Group partitions in table `objects` start with this.
pub const GROUP_PREFIX: &str = "group|";
/// Member incident ids kept in a generation row and listed in `group.resolved` (Table
/// Storage: 64 KiB per property); `memberCount` has them all.
const LISTED_MEMBERS: usize = 400;
/// Messages settled in one transaction of a group partition: each writes at most a member
/// row, a generation row and two messages (a recovery that opens and resolves a generation
/// alone), and Table Storage takes 100 operations in one.
const PER_BATCH: usize = 24;
/// Concurrent settles of one group before giving up for this pass (the message waits).
const MAX_CONFLICTS: usize = 16;

pub const OPEN_INDEX: &str = "groups|open";
pub const RESOLVED_INDEX: &str = "groups|resolved";

pub fn group_partition(cause: &str) -> String {
    let h = Sha256::digest(cause.as_bytes());
    format!("{GROUP_PREFIX}{}", hex::encode(&h[..10]))
}

pub fn group_id(cause: &str, generation: u32) -> String {
    let h = Sha256::digest(format!("{cause}\n{generation}").as_bytes());
    format!("grp-{}", hex::encode(&h[..10]))
}

pub fn incidents_partition(cluster: &str) -> String {
    format!("incidents|{cluster}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupState {
    Open,
    Resolved,
}

/// The incident that opened a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct First {
    pub incident_id: String,
    pub cluster: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// One occurrence of a cause: row `gen|{generation:06}` of the group partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRecord {
    pub group_id: String,
    pub cause: String,
    pub generation: u32,
    pub state: GroupState,
    pub sha: Option<String>,
    pub revision: Option<String>,
    pub repository: Option<String>,
    /// The opening incident's `openedAt` (its cluster's clock).
    pub opened_at: DateTime<Utc>,
    /// The latest `resolvedAt` of its members (each by its cluster's clock), once resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    pub first: First,
    /// Members still open.
    pub open: u32,
    pub member_count: u32,
    /// The first `LISTED_MEMBERS` member incident ids.
    pub members: Vec<String>,
    /// Every cluster with a member, sorted.
    pub clusters: Vec<String>,
}

/// One incident in its group: row `member|{incident id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberRecord {
    pub incident_id: String,
    pub group_id: String,
    pub generation: u32,
    pub cluster: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub state: IncidentState,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    pub revision: Option<String>,
    pub sha: Option<String>,
    pub repository: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// An incident of a cluster in the DORA index (`incidents|{cluster}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentRow {
    pub incident_id: String,
    pub group_id: String,
    // The fast parser of the audit feed's times: DORA reads one row per incident.
    #[serde(deserialize_with = "super::audit::utc::de")]
    pub opened_at: DateTime<Utc>,
    #[serde(default, deserialize_with = "super::audit::utc::de_option")]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
}

/// A group index row: where the generation is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupIndexRow {
    pub partition: String,
    pub generation: u32,
    pub group_id: String,
}

fn gen_key(generation: u32) -> String {
    format!("gen|{generation:06}")
}

fn member_key(incident: &str) -> String {
    format!("member|{incident}")
}

/// The cause of an incident message: recorded on the incident when it opened; for
/// incidents opened before groups existed, from what the message says.
fn cause_of(m: &Message) -> String {
    m.cause.clone().unwrap_or_else(|| {
        crate::core::incident::cause_key(m.sha.as_deref(), m.revision.as_deref(), &m.object)
    })
}

/// A group partition as read, and what settling changed in it.
#[derive(Debug, Default)]
struct Partition {
    gens: BTreeMap<u32, (GroupRecord, Option<Etag>, bool)>,
    members: HashMap<String, (MemberRecord, Option<Etag>, bool)>,
    /// New group messages, each with its generation.
    outbox: Vec<(u32, Message)>,
}

impl Partition {
    /// Settles one message: what it changes in the partition, and its group id.
    fn settle(&mut self, cause: &str, m: &Message) -> String {
        let id = m.incident_id.clone().unwrap_or_default();
        if !self.members.contains_key(&id) {
            self.join(cause, &id, m);
        }
        let (member, _, dirty) = self.members.get_mut(&id).expect("joined");
        let group = member.group_id.clone();
        if m.kind != MessageType::ApplyFailed && member.state == IncidentState::Open {
            member.state = IncidentState::Resolved;
            member.resolved_at = Some(m.time);
            if m.kind == MessageType::IncidentClosed {
                member.closed_by = Some("retired".into());
            }
            *dirty = true;
            let generation = member.generation;
            let at = m.time;
            let (g, _, gdirty) = self.gens.get_mut(&generation).expect("member's generation");
            *gdirty = true;
            g.open = g.open.saturating_sub(1);
            g.resolved_at = Some(g.resolved_at.map_or(at, |r| r.max(at)));
            if g.open == 0 {
                g.state = GroupState::Resolved;
                self.outbox.push((generation, resolved_message(g)));
            }
        }
        group
    }

    /// A new member: into the latest generation if it is open, else into a new one.
    fn join(&mut self, cause: &str, id: &str, m: &Message) {
        let opened_at = m.opened_at.unwrap_or(m.time);
        let latest = self
            .gens
            .iter()
            .next_back()
            .map(|(n, (g, _, _))| (*n, g.state));
        let generation = match latest {
            Some((n, GroupState::Open)) => n,
            other => {
                let n = other.map_or(1, |(n, _)| n + 1);
                let g = GroupRecord {
                    group_id: group_id(cause, n),
                    cause: cause.to_string(),
                    generation: n,
                    state: GroupState::Open,
                    sha: m.sha.clone(),
                    revision: m.revision.clone(),
                    repository: m.repository.clone(),
                    opened_at,
                    resolved_at: None,
                    first: First {
                        incident_id: id.to_string(),
                        cluster: m.object.cluster.clone(),
                        kind: m.object.kind.clone(),
                        namespace: m.object.namespace.clone(),
                        name: m.object.name.clone(),
                        reason: m.reason.clone(),
                        message: m.message.clone(),
                    },
                    open: 0,
                    member_count: 0,
                    members: vec![],
                    clusters: vec![],
                };
                self.outbox.push((n, opened_message(&g)));
                self.gens.insert(n, (g, None, true));
                n
            }
        };
        let (g, _, dirty) = self.gens.get_mut(&generation).expect("generation");
        *dirty = true;
        g.open += 1;
        g.member_count += 1;
        if g.members.len() < LISTED_MEMBERS {
            g.members.push(id.to_string());
        }
        if let Err(at) = g.clusters.binary_search(&m.object.cluster) {
            g.clusters.insert(at, m.object.cluster.clone());
        }
        let member = MemberRecord {
            incident_id: id.to_string(),
            group_id: g.group_id.clone(),
            generation,
            cluster: m.object.cluster.clone(),
            kind: m.object.kind.clone(),
            namespace: m.object.namespace.clone(),
            name: m.object.name.clone(),
            state: IncidentState::Open,
            opened_at,
            resolved_at: None,
            closed_by: None,
            revision: m.revision.clone(),
            sha: m.sha.clone(),
            repository: m.repository.clone(),
            reason: m.reason.clone(),
            message: m.message.clone(),
        };
        self.members.insert(id.to_string(), (member, None, true));
    }

    /// The transaction: changed generations and members (inserted when new, else on the
    /// etag read), and the group messages.
    fn writes(&self, pk: &str) -> Vec<BatchOp> {
        let mut ops = vec![];
        for (n, (g, etag, dirty)) in &self.gens {
            if *dirty {
                let row = Row::from_record(pk, gen_key(*n), g).with_tag("rowType", "group");
                ops.push(match etag {
                    Some(e) => BatchOp::Update(row, e.clone()),
                    None => BatchOp::Insert(row),
                });
            }
        }
        for (id, (member, etag, dirty)) in &self.members {
            if *dirty {
                let row =
                    Row::from_record(pk, member_key(id), member).with_tag("rowType", "member");
                ops.push(match etag {
                    Some(e) => BatchOp::Update(row, e.clone()),
                    None => BatchOp::Insert(row),
                });
            }
        }
        for (generation, m) in &self.outbox {
            let order = u8::from(m.kind == MessageType::GroupResolved);
            let rk = format!("outbox|{generation:06}|{order}|{}", m.id);
            ops.push(BatchOp::Insert(
                Row::from_record(pk, rk, &OutboxRecord::pending(m.clone()))
                    .with_tag("rowType", ROW_OUTBOX),
            ));
        }
        ops
    }
}

/// A group message names no object (a group may span clusters): its subject is the group.
fn group_object() -> ObjectRef {
    ObjectRef {
        cluster: String::new(),
        kind: String::new(),
        namespace: String::new(),
        name: String::new(),
    }
}

fn group_message(kind: MessageType, g: &GroupRecord, time: DateTime<Utc>, data: Value) -> Message {
    let object = group_object();
    Message {
        id: message_id(kind, &object, &g.group_id),
        kind,
        object,
        time,
        revision: g.revision.clone(),
        sha: g.sha.clone(),
        reason: g.first.reason.clone(),
        message: None,
        incident_id: None,
        repository: g.repository.clone(),
        custom: Some(Custom {
            subject: g.group_id.clone(),
            data,
        }),
        opened_at: Some(g.opened_at),
        cause: Some(g.cause.clone()),
        group_id: Some(g.group_id.clone()),
    }
}

fn opened_message(g: &GroupRecord) -> Message {
    let data = json!({
        "groupId": g.group_id,
        "generation": g.generation,
        "sha": g.sha,
        "revision": g.revision,
        "repository": g.repository,
        "openedAt": g.opened_at,
        "first": g.first,
        "severity": MessageType::GroupOpened.severity(),
    });
    group_message(MessageType::GroupOpened, g, g.opened_at, data)
}

fn resolved_message(g: &GroupRecord) -> Message {
    let resolved_at = g.resolved_at.unwrap_or(g.opened_at);
    let data = json!({
        "groupId": g.group_id,
        "generation": g.generation,
        "sha": g.sha,
        "revision": g.revision,
        "repository": g.repository,
        "members": g.members,
        "memberCount": g.member_count,
        "clusters": g.clusters,
        "openedAt": g.opened_at,
        "resolvedAt": resolved_at,
        "severity": MessageType::GroupResolved.severity(),
    });
    group_message(MessageType::GroupResolved, g, resolved_at, data)
}

fn etag_of(e: &Entity) -> Result<Etag, StoreError> {
    e.etag
        .clone()
        .ok_or_else(|| StoreError::Corrupt(format!("{}/{}: read without an etag", e.pk, e.rk)))
}

/// What settling did: the group partitions whose outboxes got new messages.
#[derive(Debug, Default)]
pub struct Settled {
    pub partitions: BTreeSet<String>,
}

/// Whether a message still needs its group before it may be published.
pub fn unsettled(m: &Message) -> bool {
    m.kind.is_incident() && m.group_id.is_none() && m.incident_id.is_some()
}

/// Settles the incident messages among `messages` (in order per object; others are left
/// alone): each gets its `group_id`. A message whose group could not be settled now (its
/// partition kept changing under other settlers) keeps `None` and is not published in this
/// pass — the caller leaves it waiting.
pub async fn settle(
    store: &dyn Store,
    messages: &mut [&mut Message],
) -> Result<Settled, StoreError> {
    let mut settled = Settled::default();
    // By cause; openings first (in the order given), then closings (in the order given).
    // An incident's opening always precedes its closing, as in its object's outbox; across
    // incidents, settling every opening first groups what was open at once — a pass that
    // found several objects' failures and recoveries waiting (after a restart, a store
    // outage) groups them as if it had settled each failure when it happened, instead of
    // opening and resolving one group per object.
    let mut by_cause: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for opening in [true, false] {
        for (i, m) in messages.iter().enumerate() {
            if unsettled(m) && (m.kind == MessageType::ApplyFailed) == opening {
                by_cause.entry(cause_of(m)).or_default().push(i);
            }
        }
    }
    for (cause, idx) in by_cause {
        let pk = group_partition(&cause);
        for chunk in idx.chunks(PER_BATCH) {
            let chunk_msgs: Vec<Message> = chunk.iter().map(|&i| messages[i].clone()).collect();
            let Some((ids, part)) = settle_chunk(store, &pk, &cause, &chunk_msgs).await? else {
                continue;
            };
            for (&i, id) in chunk.iter().zip(ids) {
                messages[i].group_id = Some(id);
            }
            if !part.outbox.is_empty() {
                settled.partitions.insert(pk.clone());
            }
            index(store, &pk, &part, &chunk_msgs).await?;
        }
    }
    Ok(settled)
}

/// One transaction of a group partition, retried on conflict.
async fn settle_chunk(
    store: &dyn Store,
    pk: &str,
    cause: &str,
    msgs: &[Message],
) -> Result<Option<(Vec<String>, Partition)>, StoreError> {
    for _ in 0..MAX_CONFLICTS {
        let mut part = Partition::default();
        for e in store
            .query_partition(Table::Objects, pk, Some("gen|"))
            .await?
        {
            let g: GroupRecord = e.record()?;
            part.gens
                .insert(g.generation, (g, Some(etag_of(&e)?), false));
        }
        let keys: BTreeSet<String> = msgs
            .iter()
            .filter_map(|m| m.incident_id.as_deref().map(member_key))
            .collect();
        let reads =
            futures::future::try_join_all(keys.iter().map(|rk| store.get(Table::Objects, pk, rk)))
                .await?;
        for e in reads.into_iter().flatten() {
            let m: MemberRecord = e.record()?;
            part.members
                .insert(m.incident_id.clone(), (m, Some(etag_of(&e)?), false));
        }
        let ids: Vec<String> = msgs.iter().map(|m| part.settle(cause, m)).collect();
        let ops = part.writes(pk);
        if ops.is_empty() {
            return Ok(Some((ids, part)));
        }
        match store.batch(Table::Objects, pk, ops).await {
            Ok(_) => return Ok(Some((ids, part))),
            Err(StoreError::PreconditionFailed | StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    tracing::warn!(
        partition = pk,
        "group kept changing under concurrent settlers; will retry"
    );
    Ok(None)
}

/// The index rows after a settle (see the module's comment): facts, so repeating them is
/// harmless and a stale one is never believed.
async fn index(
    store: &dyn Store,
    pk: &str,
    part: &Partition,
    msgs: &[Message],
) -> Result<(), StoreError> {
    let mut upserts: BTreeMap<String, Vec<BatchOp>> = BTreeMap::new();
    let mut inserts: Vec<Row> = vec![];
    let mut deletes: Vec<(String, String)> = vec![];
    let mut gens = BTreeSet::new();
    // Each incident once, as it is now: a batch may not name one row twice (Table Storage
    // refuses the whole batch), and a failure and its recovery may be settled together.
    let incidents: BTreeSet<&str> = msgs
        .iter()
        .filter_map(|m| m.incident_id.as_deref())
        .collect();
    for id in incidents {
        let Some((member, _, _)) = part.members.get(id) else {
            continue;
        };
        gens.insert(member.generation);
        let ipk = incidents_partition(&member.cluster);
        let row = Row::from_record(
            &ipk,
            format!("{}|{}", stamp(member.opened_at), member.incident_id),
            &IncidentRow {
                incident_id: member.incident_id.clone(),
                group_id: member.group_id.clone(),
                opened_at: member.opened_at,
                resolved_at: member.resolved_at,
                closed_by: member.closed_by.clone(),
                repository: member.repository.clone(),
            },
        );
        if member.state == IncidentState::Open {
            inserts.push(row);
        } else {
            upserts.entry(ipk).or_default().push(BatchOp::Upsert(row));
        }
    }
    for n in gens {
        let Some((g, _, _)) = part.gens.get(&n) else {
            continue;
        };
        let entry = GroupIndexRow {
            partition: pk.to_string(),
            generation: n,
            group_id: g.group_id.clone(),
        };
        let open_rk = format!("{}|{}", stamp(g.opened_at), g.group_id);
        match (g.state, g.resolved_at) {
            (GroupState::Resolved, Some(at)) => {
                let rk = format!("{}|{}", stamp(at), g.group_id);
                upserts
                    .entry(RESOLVED_INDEX.into())
                    .or_default()
                    .push(BatchOp::Upsert(Row::from_record(
                        RESOLVED_INDEX,
                        rk,
                        &entry,
                    )));
                deletes.push((OPEN_INDEX.into(), open_rk));
            }
            _ => upserts
                .entry(OPEN_INDEX.into())
                .or_default()
                .push(BatchOp::Upsert(Row::from_record(
                    OPEN_INDEX, open_rk, &entry,
                ))),
        }
    }
    // One batch per partition: a settle covers at most `PER_BATCH` messages, so each holds
    // fewer than Table Storage's 100 operations.
    let writes: Vec<(Table, String, Vec<BatchOp>)> = upserts
        .into_iter()
        .map(|(pk, ops)| (Table::Audit, pk, ops))
        .collect();
    if !writes.is_empty() {
        store.batches(writes).await?;
    }
    // An opening never replaces the row: a resolution written meanwhile stays.
    let inserted =
        futures::future::join_all(inserts.into_iter().map(|r| store.insert(Table::Audit, r))).await;
    for r in inserted {
        match r {
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
    }
    for (pk, rk) in deletes {
        match store
            .batch(Table::Audit, &pk, vec![BatchOp::Delete { rk, etag: None }])
            .await
        {
            Ok(_) | Err(StoreError::PreconditionFailed | StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where a page of `GET /api/groups` stopped: the index (`open` or `resolved`) and its row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCursor {
    pub s: GroupState,
    pub k: String,
}

impl super::audit::Opaque for GroupCursor {}

/// A page of groups.
#[derive(Debug)]
pub struct GroupPage {
    pub groups: Vec<Value>,
    pub next: Option<GroupCursor>,
}

impl GroupRecord {
    /// The group as `GET /api/groups` shows it, with its member incidents.
    pub fn to_json(&self, members: &[MemberRecord]) -> Value {
        json!({
            "groupId": self.group_id,
            "state": self.state,
            "sha": self.sha,
            "revision": self.revision,
            "repository": self.repository,
            "openedAt": self.opened_at,
            "resolvedAt": if self.state == GroupState::Resolved { self.resolved_at } else { None },
            "first": self.first,
            "open": self.open,
            "memberCount": self.member_count,
            "clusters": self.clusters,
            "members": members,
        })
    }
}

impl super::Ledger {
    /// Groups in one state (open first, then resolved, when `state` is `None`), newest
    /// first: key ranges of the group index, each entry confirmed by its generation row (an
    /// index row a settle left behind that its generation no longer confirms is skipped).
    pub async fn groups(
        &self,
        state: Option<GroupState>,
        cursor: Option<&GroupCursor>,
        limit: usize,
    ) -> Result<GroupPage, StoreError> {
        let states: Vec<GroupState> = match state {
            Some(s) => vec![s],
            None => vec![GroupState::Open, GroupState::Resolved],
        };
        let mut out = vec![];
        let mut next = None;
        'states: for s in states {
            if cursor.is_some_and(|c| c.s == GroupState::Resolved && s == GroupState::Open) {
                continue;
            }
            let index = match s {
                GroupState::Open => OPEN_INDEX,
                GroupState::Resolved => RESOLVED_INDEX,
            };
            // After the cursor's row (exclusive).
            let mut from = cursor
                .filter(|c| c.s == s)
                .map_or_else(String::new, |c| format!("{}\u{0}", c.k));
            loop {
                let want = (limit - out.len()).max(1);
                let rows = self
                    .store()
                    .query_range(Table::Audit, index, &from, "~", want + 1)
                    .await?;
                let more = rows.len() > want;
                for row in rows.iter().take(want) {
                    from = format!("{}\u{0}", row.rk);
                    let entry: GroupIndexRow = row.record()?;
                    if let Some(g) = self.group(&entry.partition, entry.generation).await? {
                        if g.0.state == s {
                            out.push(g.0.to_json(&g.1));
                        }
                    }
                    if out.len() == limit {
                        // More may follow: rows after this one, or the resolved groups
                        // after the open ones.
                        let after = more || rows.last().is_some_and(|l| l.rk != row.rk);
                        if after || (s == GroupState::Open && state.is_none()) {
                            next = Some(GroupCursor {
                                s,
                                k: row.rk.clone(),
                            });
                        }
                        break 'states;
                    }
                }
                if !more {
                    break;
                }
            }
        }
        Ok(GroupPage { groups: out, next })
    }

    /// One generation of a group and its members.
    pub async fn group(
        &self,
        partition: &str,
        generation: u32,
    ) -> Result<Option<(GroupRecord, Vec<MemberRecord>)>, StoreError> {
        let rows = self
            .store()
            .query_partition(Table::Objects, partition, None)
            .await?;
        let mut group = None;
        let mut members = vec![];
        for e in &rows {
            if e.rk == gen_key(generation) {
                group = Some(e.record::<GroupRecord>()?);
            } else if e.rk.starts_with("member|") {
                let m: MemberRecord = e.record()?;
                if m.generation == generation {
                    members.push(m);
                }
            }
        }
        members.sort_by(|a, b| {
            (a.opened_at, &a.cluster, &a.kind, &a.namespace, &a.name).cmp(&(
                b.opened_at,
                &b.cluster,
                &b.kind,
                &b.namespace,
                &b.name,
            ))
        });
        Ok(group.map(|g| (g, members)))
    }
}
