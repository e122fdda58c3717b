//! The ledger: records deliveries (Git and Flux) in the store, correlates them, and answers
//! evidence, objects and incidents.
//!
//! Recording follows a journal pattern that works the same on SQLite and on Table Storage
//! (where one delivery touches many partitions and no transaction spans them):
//! 1. the normalised delivery is inserted into the journal as `pending` (insert-if-absent:
//!    a second insert of the same delivery id is how a redelivery is recognised);
//! 2. every projection is written with an idempotent, order-independent merge; an object's
//!    state, its incidents and its outbox messages change together in one atomic batch of
//!    the object's partition;
//! 3. the journal entry is marked `done`, and only then is the delivery answered 2xx.
//!
//! A crash between 1 and 3 leaves a `pending` entry that a redelivery, or the next start-up,
//! finishes. No 2xx is sent before 3, so nothing acknowledged is ever half-written.

pub mod audit;
pub mod backfill;
mod dora;
pub mod evidence;
mod flux;
mod git;
mod graphs;
pub mod groups;
mod missing;
pub mod records;
mod shards;
mod states;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::core::incident::Incident;
use crate::core::{BranchGraph, IncidentState, ObjectState};
use crate::domain::{CommitSha, GitRef, RepoKey};
use crate::flux::{FluxEvent, ObjectRef};
use crate::git::{GitEvent, Provider};
use crate::store::{BatchOp, Entity, Row, Store, StoreError, Table};
pub use evidence::Evidence;
use git::PushRows;
use records::{DeliveryRecord, DeliveryState, Journaled, PushRecord, ROW_INCIDENT, ROW_STATE};

/// The pushes of a ref the branch graph is built from: its latest ones. An apply walks at
/// most `FIRST_APPLY_WALK` (50) commits back and a new follower replays the 10 latest pushes,
/// so older pushes change nothing but the cost — which grew with the branch's age: on a
/// 90-day history of 20 pushes a day every new commit's apply read 1,800 push rows.
pub const BRANCH_WINDOW: usize = 256;

/// How often a read-modify-write retries when another writer got there first.
const MAX_CONFLICT_RETRIES: usize = 32;

/// What recording a delivery did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Newly recorded (or a crashed earlier attempt finished now), with a summary for the
    /// answer's body.
    Accepted(serde_json::Value),
    /// The same delivery was recorded before: nothing changed.
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct Ledger {
    store: Arc<dyn Store>,
    /// Partitions with new outbox messages, for the outbox dispatcher.
    outbox_tx: Option<mpsc::Sender<String>>,
    /// The object states this process wrote last (see `states.rs`).
    states: Arc<states::StateCache>,
    /// Commits recently looked up and not found (see `missing.rs`).
    missing: Arc<missing::MissingCommits>,
    /// The approval policy (contract §10).
    policy: Arc<crate::policy::Policy>,
    /// The branch graphs built last (see `graphs.rs`).
    graphs: Arc<graphs::GraphCache>,
    /// What the audit registries are known to hold (`audit::Register::cache_key`): a pair
    /// row's earliest apply (or an earlier one), a cluster's registry row.
    register_cache: Arc<shards::Shards<audit::PairFacts>>,
    /// Holes to ask the Git hosts' APIs about (part 12), when any is configured.
    backfill: Option<Arc<backfill::Notices>>,
}

impl Ledger {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Ledger {
            store,
            outbox_tx: None,
            states: Arc::default(),
            missing: Arc::default(),
            policy: Arc::default(),
            graphs: Arc::default(),
            register_cache: Arc::new(shards::Shards::with_capacity(16_384)),
            backfill: None,
        }
    }

    /// Queues the holes ingest notices for the APIs of `notices` (part 12).
    pub fn with_backfill(mut self, notices: backfill::Notices) -> Self {
        self.backfill = Some(Arc::new(notices));
        self
    }

    /// The backfill's notices, when a host API is configured.
    pub fn backfill_notices(&self) -> Option<&Arc<backfill::Notices>> {
        self.backfill.as_ref()
    }

    /// Decides approvals under `policy`.
    pub fn with_policy(mut self, policy: crate::policy::Policy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The approval policy in force.
    pub fn policy(&self) -> &crate::policy::Policy {
        &self.policy
    }

    /// Tells the dispatcher behind `tx` about partitions with new messages.
    pub fn with_outbox(mut self, tx: mpsc::Sender<String>) -> Self {
        self.outbox_tx = Some(tx);
        self
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
        let payload = Journaled::Git {
            provider,
            event: event.clone(),
        };
        self.record(delivery_id, &payload, received_at).await
    }

    /// Records one authenticated, parsed Flux event: one atomic batch of the object's
    /// partition (state, incidents, outbox, history), then its target rows. A byte-identical
    /// retry is recognised by the event's fingerprint (in the object's state, or its history
    /// row) and answers `Duplicate`, re-issuing target rows a stopped first attempt may not
    /// have written.
    pub async fn record_flux(
        &self,
        event: &FluxEvent,
        received_at: DateTime<Utc>,
    ) -> Result<Recorded, StoreError> {
        self.project_flux(event, received_at).await
    }

    async fn record(
        &self,
        delivery_id: &str,
        payload: &Journaled,
        received_at: DateTime<Utc>,
    ) -> Result<Recorded, StoreError> {
        let source = payload.source();
        let pk = delivery_partition(source, delivery_id);
        let text = serde_json::to_string(payload).expect("deliveries serialise");
        let mut pieces = records::journal_pieces(&text);
        let event = if pieces.len() == 1 {
            pieces.pop().unwrap_or_default()
        } else {
            // Too large for one entity: the parts first, each idempotent; the entry below is
            // the commit point (parts without an entry are inert, removed by retention).
            for (n, piece) in pieces.iter().enumerate() {
                let part = records::JournalPart {
                    state: "part".into(),
                    received_at,
                    text: piece.clone(),
                };
                let key = records::journal_part_key(delivery_id, n);
                self.store
                    .upsert(Table::Deliveries, Row::from_record(&pk, key, &part))
                    .await?;
            }
            String::new()
        };
        let journal = DeliveryRecord {
            source: source.to_string(),
            delivery_id: delivery_id.to_string(),
            state: DeliveryState::Pending,
            received_at,
            event,
            parts: if pieces.len() > 1 {
                pieces.len() as u32
            } else {
                0
            },
        };
        let entry = || Row::from_record(&pk, delivery_id, &journal);
        // A delivery of one push: its journal entry and the push's rows (when all new) in one
        // call — one commit on SQLite instead of two; on Table Storage the entry is still
        // written first. Anything not new fails the call, and the steps below run one by one.
        let single_push = match payload {
            Journaled::Git {
                provider,
                event: GitEvent::Push { pushes },
            } if pushes.len() == 1 => Some(Self::push_inserts(*provider, &pushes[0], received_at)),
            _ => None,
        };
        let mut rows = PushRows::Unknown;
        let first = match single_push {
            Some(push_rows) => {
                let mut writes = vec![(
                    Table::Deliveries,
                    pk.clone(),
                    vec![BatchOp::Insert(entry())],
                )];
                writes.extend(push_rows);
                match self.store.batches(writes).await {
                    Ok(tags) => {
                        rows = PushRows::Inserted;
                        tags.into_iter()
                            .next()
                            .and_then(|t| t.into_iter().next())
                            .ok_or_else(|| {
                                StoreError::Unavailable("no etag for the journal".into())
                            })
                    }
                    Err(StoreError::Conflict) => {
                        let alone = self.store.insert(Table::Deliveries, entry()).await;
                        if alone.is_ok() {
                            rows = PushRows::NotNew;
                        }
                        alone
                    }
                    Err(e) => Err(e),
                }
            }
            None => self.store.insert(Table::Deliveries, entry()).await,
        };
        let (journal, etag, fresh) = match first {
            Ok(etag) => (journal, etag, true),
            Err(StoreError::Conflict) => {
                let Some(stored) = self.store.get(Table::Deliveries, &pk, delivery_id).await?
                else {
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
                (rec, etag, false)
            }
            Err(e) => return Err(e),
        };
        // A fresh entry is the payload in hand; an entry an earlier attempt left is finished
        // with its own data. (Tests check, on every delivery, that the two are the same.)
        let stored;
        let payload = if fresh {
            payload
        } else {
            stored = self.journaled(&pk, &journal).await?;
            &stored
        };
        let summary = match payload {
            Journaled::Git { provider, event } => {
                self.project_git(*provider, event, journal.received_at, rows)
                    .await?
            }
        };
        // Done: the payload is no longer needed (a redelivery only asks whether it is done,
        // and recovery only replays pending ones), so the row shrinks to its header — for a
        // push of 20 commits, ~7.6 KB less to rewrite.
        let done = DeliveryRecord {
            state: DeliveryState::Done,
            event: String::new(),
            parts: 0,
            ..journal
        };
        match self
            .store
            .update(
                Table::Deliveries,
                Row::from_record(&pk, delivery_id, &done),
                &etag,
            )
            .await
        {
            // A concurrent attempt of the same delivery marked it first: same outcome.
            Ok(_) | Err(StoreError::PreconditionFailed) => Ok(Recorded::Accepted(summary)),
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
            let payload = self.journaled(&entity.pk, &rec).await?;
            self.record(&rec.delivery_id, &payload, rec.received_at)
                .await?;
            finished += 1;
        }
        Ok(finished)
    }

    /// Forgets the cached state of an object written outside the Flux path (the sweep).
    pub(crate) fn forget_state(&self, pk: &str) {
        self.states.forget(pk);
    }

    /// The delivery a journal entry holds: its own text, or its parts' in order.
    async fn journaled(&self, pk: &str, rec: &DeliveryRecord) -> Result<Journaled, StoreError> {
        let text = if rec.parts == 0 {
            rec.event.clone()
        } else {
            let prefix = format!("{}|part|", rec.delivery_id);
            let parts = self
                .store
                .query_partition(Table::Deliveries, pk, Some(&prefix))
                .await?;
            if parts.len() != rec.parts as usize {
                return Err(StoreError::Corrupt(format!(
                    "journal {}: {} of {} parts",
                    rec.delivery_id,
                    parts.len(),
                    rec.parts
                )));
            }
            parts
                .iter()
                .map(|p| p.record::<records::JournalPart>().map(|p| p.text))
                .collect::<Result<String, _>>()?
        };
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("journal event: {e}")))
    }

    pub(crate) fn notify_outbox(&self, partition: &str) {
        if let Some(tx) = &self.outbox_tx {
            // A full queue only delays delivery: the dispatcher's periodic scan finds it.
            let _ = tx.try_send(partition.to_string());
        }
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
            let entity = Row::from_record(pk, rk, &new);
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

    /// The recorded updates of one ref, oldest first (by time received): the branch history
    /// that supersession reasons over ("which commit came after which") — its latest
    /// [`BRANCH_WINDOW`] pushes, read newest first from the push log (one key-range read,
    /// whatever the branch's age), or every push row when the log holds fewer (a young
    /// branch, or pushes recorded before the log existed).
    pub async fn branch_history(
        &self,
        repository: &RepoKey,
        git_ref: &str,
    ) -> Result<Vec<PushRecord>, StoreError> {
        let pk = PushRecord::partition(repository.as_str(), git_ref);
        let log = self
            .store
            .query_range(Table::Pushes, &pk, "log|", "log}", BRANCH_WINDOW)
            .await?;
        let rows = if log.len() == BRANCH_WINDOW {
            log
        } else {
            // Push rows only (`{before}..{after}`, hex or `0` first): the log rows sort after.
            self.store
                .query_range(Table::Pushes, &pk, "", "log|", usize::MAX)
                .await?
        };
        let mut pushes = rows
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

    /// The branch graph of one ref for a Flux event: the one built last at the ref's newest
    /// push (one single-row read to know it), else built now; and that newest push-log key.
    async fn followed_graph_at(
        &self,
        repository: &RepoKey,
        git_ref: &GitRef,
    ) -> Result<(Arc<BranchGraph>, String), StoreError> {
        let pk = PushRecord::partition(repository.as_str(), git_ref.as_str());
        let newest = self
            .store
            .query_range(Table::Pushes, &pk, "log|", "log}", 1)
            .await?
            .pop()
            .map(|e| e.rk)
            .unwrap_or_default();
        let now = std::time::Instant::now();
        if let Some(g) = self.graphs.get(&pk, &newest, now) {
            return Ok((g, newest));
        }
        let graph = Arc::new(self.branch_graph(repository, git_ref).await?);
        self.graphs.put(&pk, newest.clone(), now, graph.clone());
        Ok((graph, newest))
    }

    /// The branch graph of one ref, from its recorded pushes.
    async fn branch_graph(
        &self,
        repository: &RepoKey,
        git_ref: &GitRef,
    ) -> Result<BranchGraph, StoreError> {
        let mut graph = BranchGraph::new();
        for p in self.branch_history(repository, git_ref.as_str()).await? {
            let parse = |s: &Option<String>| s.as_deref().and_then(|s| CommitSha::parse(s).ok());
            let commits: Vec<CommitSha> = p
                .commits
                .iter()
                .filter_map(|c| CommitSha::parse(c).ok())
                .collect();
            graph.add_push_received(
                parse(&p.before).as_ref(),
                &commits,
                parse(&p.head).as_ref(),
                p.forced,
                p.received_at,
            );
        }
        Ok(graph)
    }

    /// The evidence for one commit, `None` when nothing at all is known of it.
    pub async fn evidence(&self, sha: &CommitSha) -> Result<Option<Evidence>, StoreError> {
        let rows = self
            .store
            .query_partition(Table::Commits, sha.as_str(), None)
            .await?;
        evidence::assemble(sha, &rows)
    }

    /// Every Flux object seen, optionally in one cluster, sorted. One cluster's are its
    /// partitions' state rows (a key range: the UI's commit page asks per cluster), not a
    /// filter over every object row (90 days of history: 30 s).
    pub async fn objects(&self, cluster: Option<&str>) -> Result<Vec<ObjectState>, StoreError> {
        let rows = match cluster {
            Some(c) => {
                let prefix = format!("{c}|");
                self.store
                    .query_pk_prefix(Table::Objects, &prefix, ROW_STATE)
                    .await?
            }
            None => {
                self.store
                    .query_where(Table::Objects, "rowType", ROW_STATE)
                    .await?
            }
        };
        let mut out = rows
            .iter()
            .map(Entity::record::<ObjectState>)
            .collect::<Result<Vec<_>, _>>()?;
        out.retain(|s| cluster.is_none_or(|c| s.object.cluster == c));
        out.sort_by(|a, b| a.object.cmp(&b.object));
        Ok(out)
    }

    /// Incidents, optionally only open or resolved ones, newest first.
    pub async fn incidents(
        &self,
        state: Option<IncidentState>,
    ) -> Result<Vec<Incident>, StoreError> {
        let mut out = self
            .store
            .query_where(Table::Objects, "rowType", ROW_INCIDENT)
            .await?
            .iter()
            .map(Entity::record::<Incident>)
            .collect::<Result<Vec<_>, _>>()?;
        out.retain(|i| state.is_none_or(|s| i.state == s));
        out.sort_by(|a, b| b.opened_at.cmp(&a.opened_at).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }
}

impl Ledger {
    /// Retires an object (an operator says it is gone: deleted, renamed, its cluster
    /// retired): nothing is expected of it any more — pushes no longer make commits pending
    /// on it, the sweep stalls nothing on it — and its open incident closes without
    /// `apply.recovered` (`closedBy: retired`). Its history and evidence stay. Any later
    /// report of the object brings it back. `None` for an object never seen. Idempotent.
    pub async fn retire(
        &self,
        object: &ObjectRef,
        now: DateTime<Utc>,
    ) -> Result<Option<ObjectState>, StoreError> {
        let pk = object_partition(object);
        for _ in 0..MAX_CONFLICT_RETRIES {
            self.states.forget(&pk);
            let Some(row) = self.store.get(Table::Objects, &pk, ROW_STATE).await? else {
                return Ok(None);
            };
            let mut state: ObjectState = row.record()?;
            if state.retired_at.is_some() {
                return Ok(Some(state));
            }
            state.retired_at = Some(now);
            let mut ops = vec![];
            if let Some(mut inc) = state.incident.take() {
                inc.state = IncidentState::Resolved;
                inc.resolved_at = Some(now);
                inc.closed_by = Some("retired".into());
                ops.push(BatchOp::Upsert(tagged(
                    &pk,
                    &format!("incident|{}", inc.id),
                    &inc,
                    &[("rowType", ROW_INCIDENT)],
                )));
                // Not published: it tells the incident's group that it closed (contract §9).
                let closed = crate::core::message::Message {
                    id: crate::core::message::message_id(
                        crate::core::message::MessageType::IncidentClosed,
                        object,
                        &inc.id,
                    ),
                    kind: crate::core::message::MessageType::IncidentClosed,
                    object: object.clone(),
                    time: now,
                    revision: inc.revision.clone(),
                    sha: inc.sha.clone(),
                    reason: Some("Retired".into()),
                    message: None,
                    incident_id: Some(inc.id.clone()),
                    repository: None,
                    custom: None,
                    opened_at: Some(inc.opened_at),
                    cause: inc.cause.clone(),
                    group_id: None,
                };
                let rk = format!("outbox|{:012}|r0|{}", state.events, closed.id);
                ops.push(BatchOp::Insert(tagged(
                    &pk,
                    &rk,
                    &records::OutboxRecord::pending(closed),
                    &[("rowType", records::ROW_OUTBOX)],
                )));
            }
            let entity = tagged(&pk, "state", &state, &[("rowType", ROW_STATE)]);
            ops.insert(0, BatchOp::Update(entity, row.etag.clone().expect("etag")));
            match self.store.batch(Table::Objects, &pk, ops).await {
                Ok(_) => {
                    self.notify_outbox(&pk);
                    return Ok(Some(state));
                }
                Err(StoreError::PreconditionFailed | StoreError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "object state kept changing under concurrent writers".into(),
        ))
    }

    /// Outbox messages in one delivery state (`pending`, `delivered`, `dead`), oldest first.
    /// Parked messages (see `OutboxRecord::parked`) count as dead, not pending.
    pub async fn outbox(
        &self,
        delivery: records::Delivery,
    ) -> Result<Vec<records::OutboxRecord>, StoreError> {
        use records::Delivery::{Dead, Pending};
        let read = |d: records::Delivery| async move {
            self.store
                .query_where(Table::Objects, "delivery", d.as_str())
                .await?
                .iter()
                .map(Entity::record::<records::OutboxRecord>)
                .collect::<Result<Vec<_>, _>>()
        };
        let mut out = match delivery {
            Pending => read(Pending)
                .await?
                .into_iter()
                .filter(|r| !r.parked)
                .collect(),
            Dead => {
                let mut dead = read(Dead).await?;
                dead.extend(read(Pending).await?.into_iter().filter(|r| r.parked));
                dead
            }
            other => read(other).await?,
        };
        out.sort_by(|a, b| {
            a.message
                .time
                .cmp(&b.message.time)
                .then_with(|| a.message.id.cmp(&b.message.id))
        });
        Ok(out)
    }

    /// Puts every dead or parked message back in line for an attempt now (a fresh series of
    /// attempts), and every message waiting out a backoff up for one now. Returns how many
    /// dead or parked messages it re-drove.
    pub async fn redrive(&self) -> Result<usize, StoreError> {
        let mut rows = self
            .store
            .query_where(Table::Objects, "delivery", records::Delivery::Dead.as_str())
            .await?;
        rows.extend(
            self.store
                .query_where(
                    Table::Objects,
                    "delivery",
                    records::Delivery::Pending.as_str(),
                )
                .await?,
        );
        let mut n = 0;
        for row in rows {
            let mut rec: records::OutboxRecord = row.record()?;
            let parked = rec.delivery == records::Delivery::Dead || rec.parked;
            if !parked && rec.next_attempt_at.is_none() {
                continue; // due already
            }
            if parked {
                rec.attempts = 0;
            }
            rec.delivery = records::Delivery::Pending;
            rec.parked = false;
            rec.next_attempt_at = None;
            let entity =
                Row::from_record(&row.pk, &row.rk, &rec).with_tag("rowType", records::ROW_OUTBOX);
            match self
                .store
                .update(Table::Objects, entity, row.etag.as_ref().expect("etag"))
                .await
            {
                Ok(_) => {
                    n += usize::from(parked);
                    self.notify_outbox(&row.pk);
                }
                Err(StoreError::PreconditionFailed) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}

/// The partition of an object's state, incidents and outbox.
pub fn object_partition(o: &ObjectRef) -> String {
    format!("{}|{}|{}|{}", o.cluster, o.kind, o.namespace, o.name)
}

/// An entity of a record plus top-level string properties for `query_where`.
fn tagged<T: Serialize>(pk: &str, rk: &str, record: &T, tags: &[(&str, &str)]) -> Row {
    tags.iter()
        .fold(Row::from_record(pk, rk, record), |e, (k, v)| {
            e.with_tag(k, v)
        })
}

/// Journal partition: the source plus one byte of the delivery id's hash, so a burst from
/// one source spreads over 256 partitions (Table Storage: 2,000 entities/s per partition).
fn delivery_partition(source: &str, delivery_id: &str) -> String {
    let h = Sha256::digest(delivery_id.as_bytes());
    format!("{source}-{:02x}", h[0])
}
