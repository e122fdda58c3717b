//! Part 10: the audit — index rows written by the same projections as the rest, and the
//! queries that read them by key range (contract §7, §10).
//!
//! | rows (table `audit` unless said) | partition | row key | serves |
//! |---|---|---|---|
//! | change | `cluster\|{cluster}` | `{stamp}\|{sha}\|{kind}\|{namespace}\|{name}` | `/api/changes`: one cluster's range, or the fleet's as a merge of every cluster's |
//! | approval check | `policy` | `{cluster}\|{sha}\|{kind}\|{namespace}\|{name}` | the sweep's `change.unapproved` decisions |
//! | decision | `policy-decided` | `{cluster}\|{sha}` | once per (commit, cluster), after retention too |
//! | pair | `pairs\|{cluster}` | `{sha}` | coverage summaries: the earliest apply of each commit on the cluster |
//! | cluster registry | `clusters` | `{cluster}` | the clusters with change rows (the fleet's feed and summary) |
//! | push log (`pushes`) | `{repository}\|{ref}` | `log\|{stamp of receipt}\|{before}..{after}` | `/api/commits?repository=&ref=` |
//!
//! `stamp` is `9999999999999 - milliseconds`: newest first in ascending key order, which is
//! the only order Table Storage reads in.
//!
//! A change row is a pure function of its target row (`ChangeRow::of`): written before the
//! target row in the same call, only when that function's value changes, so the target row
//! (the commit point) never exists without its index row, and a retry that finds the target
//! row written writes neither. Its time is the object's first report of the commit, applied
//! or failed (`TargetRecord::changed_at`): it only moves earlier (a late older event), and
//! then the row under the old key is deleted once the target row is written. Where a call is
//! not one transaction (Table Storage) both rows are `pending` until then (`Confirm`), and a
//! reader takes a pending row from its target row (`Ledger::verify_change`): a write ahead
//! of a target row that never landed, or landed late, is never believed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::records::{ApprovalRecord, CommitRecord, OutboxRecord, PushRecord, ROW_OUTBOX};
use super::{tagged, Ledger};
use crate::core::{message_id, Custom, Message, MessageType, TargetRecord, TargetState};
use crate::domain::{CommitSha, RepoKey};
use crate::flux::ObjectRef;
use crate::policy::Verdict;
use crate::store::{BatchOp, Entity, Etag, Row, StoreError, Table};

/// One store call's worth of writes.
pub(super) type Write = (Table, String, Vec<BatchOp>);

const FAR: i64 = 9_999_999_999_999;

/// Newest first: the key part of a time.
pub fn stamp(t: DateTime<Utc>) -> String {
    format!("{:013}", FAR - t.timestamp_millis().clamp(0, FAR))
}

/// The first key part of times strictly before `t` (a window's exclusive end as a lower bound).
fn stamp_after(t: DateTime<Utc>) -> String {
    format!("{:013}", (FAR - t.timestamp_millis().clamp(0, FAR)) + 1)
}

/// One (commit, object) that was applied or failed: the index row of the audit feed. Only
/// what changes at most a few times in the life of a (commit, object) is in it — when it was
/// first reported, whether and when it was first applied, its revision — so an object that
/// flaps between failing and succeeding at one revision never rewrites it, and a Flux event
/// in steady state costs no index write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeRow {
    /// The object's first report of the commit, applied or failed (its own clock).
    #[serde(deserialize_with = "utc::de")]
    pub time: DateTime<Utc>,
    pub cluster: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The object's first success at this commit (its own clock); `None`: it only failed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "utc::de_option"
    )]
    pub applied_at: Option<DateTime<Utc>>,
    pub revision: Option<String>,
    pub sha: String,
    /// Written ahead of its target row on a store whose writes of one call are not one
    /// transaction (Table Storage), and not yet confirmed once that row landed: it may be an
    /// attempt that never landed, a move's old key, or a late write over a newer one, so a
    /// reader takes the row from its target row instead (`Ledger::verify_change`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// Reading the times chrono writes (`2026-11-30T10:00:00Z`, `…:00.250Z`) without chrono's
/// general RFC 3339 parser, which took a sixth of the CPU of the fleet's export; anything
/// else (an offset, a leap second) goes to that parser.
pub(super) mod utc {
    use chrono::{DateTime, NaiveDate, Utc};
    use serde::de::{Deserializer, Error, Visitor};

    pub fn parse(s: &str) -> Option<DateTime<Utc>> {
        let b = s.as_bytes();
        let shape = b.len() >= 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[b.len() - 1] == b'Z';
        if !shape {
            return None;
        }
        let num = |digits: &[u8]| -> Option<u32> {
            digits.iter().try_fold(0u32, |v, c| {
                c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0'))
            })
        };
        let nanos = match &b[19..b.len() - 1] {
            [] => 0,
            [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
                num(digits)? * 10u32.pow(9 - digits.len() as u32)
            }
            _ => return None,
        };
        let date = NaiveDate::from_ymd_opt(num(&b[0..4])? as i32, num(&b[5..7])?, num(&b[8..10])?)?;
        let time =
            date.and_hms_nano_opt(num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?, nanos)?;
        Some(time.and_utc())
    }

    struct Utc3339;

    impl Visitor<'_> for Utc3339 {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 time")
        }

        fn visit_str<E: Error>(self, s: &str) -> Result<Self::Value, E> {
            match parse(s) {
                Some(t) => Ok(t),
                None => DateTime::parse_from_rfc3339(s)
                    .map(|t| t.to_utc())
                    .map_err(E::custom),
            }
        }
    }

    pub fn de<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(Utc3339)
    }

    struct Maybe;

    impl<'de> Visitor<'de> for Maybe {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an RFC 3339 time or null")
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            de(d).map(Some)
        }
    }

    pub fn de_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        d.deserialize_option(Maybe)
    }
}

impl ChangeRow {
    /// The index row of a target row, if it records a change.
    pub fn of(sha: &str, t: &TargetRecord) -> Option<ChangeRow> {
        Some(ChangeRow {
            time: t.changed_at()?,
            cluster: t.cluster.clone(),
            kind: t.kind.clone(),
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            applied_at: t.applied_at,
            revision: t.revision.clone(),
            sha: sha.to_string(),
            pending: false,
        })
    }

    /// Whether the object applied the commit (the change reached it).
    pub fn applied(&self) -> bool {
        self.applied_at.is_some()
    }

    /// `applied` once the object applied the commit (a later failure at the same revision is
    /// an incident, not another change), else `failed`: it reached the object and failed.
    pub fn state(&self) -> TargetState {
        if self.applied() {
            TargetState::Applied
        } else {
            TargetState::Failed
        }
    }

    pub(super) fn cluster_key(&self) -> (String, String) {
        (
            cluster_partition(&self.cluster),
            format!(
                "{}|{}|{}|{}|{}",
                stamp(self.time),
                self.sha,
                self.kind,
                self.namespace,
                self.name
            ),
        )
    }
}

fn cluster_partition(cluster: &str) -> String {
    format!("cluster|{cluster}")
}

/// A pending approval decision: one object applied a commit on a cluster under the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckRow {
    pub cluster: String,
    pub sha: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// When fluxtrail received that apply (its clock): the grace counts from the earliest.
    pub received_at: DateTime<Utc>,
}

const CHECKS: &str = "policy";
const DECIDED: &str = "policy-decided";

/// The index writes that go before and after a target row's write, from the row as stored
/// (`old`) and as it will be written (`new`).
#[derive(Debug, Default)]
pub(super) struct IndexWrites {
    /// In the target row's call, before it; the change row's batch (if any) first.
    pub before: Vec<Write>,
    /// What finishes the change row once the target row landed, on the etags its batch
    /// (`before[0]`) got.
    pub confirm: Option<Confirm>,
    /// What the registries need: merged before the target row is written (`register_writes`).
    pub registers: Vec<Register>,
}

/// What finishes a change row's write once its target row (the commit point) landed: the
/// pending row confirmed, the row under the old key (marked pending in the same batch)
/// deleted — each only on the etag that batch got, so neither undoes a later writer's row.
/// If it fails or never runs, the rows stay pending and readers take them from the target
/// row: the feed is right either way.
#[derive(Debug)]
pub(super) struct Confirm {
    pk: String,
    /// The new row as confirmed; `None` when it was written confirmed (an atomic store).
    row: Option<Row>,
    /// The old key, the second operation of the batch.
    old_rk: Option<String>,
}

/// The confirmations of one call's writes: each with the place of its batch in the call.
pub(super) type Confirms = Vec<(usize, Confirm)>;

/// An entry a change needs in a registry read by the audit queries.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Register {
    /// The cluster has change rows: the fleet's feed and summary read it.
    Cluster(String),
    /// What the change says of the commit on the cluster: the pair row keeps the earliest
    /// of each fact.
    Pair {
        cluster: String,
        sha: String,
        facts: PairFacts,
    },
    /// An object of the cluster failed at the commit's revision after the pair row knew it
    /// applied: the only new fact, kept in a row of its own (`{sha}|failed`) written blind —
    /// a fact needs no read — so a failure costs no more round trips than before part 11.
    Failed { cluster: String, sha: String },
}

impl Register {
    /// Its key in the process's cache of what is known to be stored.
    fn cache_key(&self) -> String {
        match self {
            Register::Cluster(c) => format!("c|{c}"),
            Register::Pair { cluster, sha, .. } => format!("p|{cluster}|{sha}"),
            Register::Failed { cluster, sha } => format!("f|{cluster}|{sha}"),
        }
    }
}

/// What a (commit, cluster) pair row holds: the earliest of each, `None` while unknown. Its
/// merge is the field-wise earliest — commutative, associative, idempotent — so the row is
/// the same whatever order and however often its objects' reports arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairFacts {
    /// The first report of the commit by an object of the cluster, applied or failed
    /// (cluster clock): when the deployment happened (contract §8).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "utc::de_option"
    )]
    pub first_at: Option<DateTime<Utc>>,
    /// The first success (cluster clock).
    #[serde(default, deserialize_with = "utc::de_option")]
    pub applied_at: Option<DateTime<Utc>>,
    /// The first failure at the commit's revision (cluster clock): the deployment failed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "utc::de_option"
    )]
    pub failed_at: Option<DateTime<Utc>>,
    /// When fluxtrail received the first apply report (its clock): push-to-apply.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "utc::de_option"
    )]
    pub received_at: Option<DateTime<Utc>>,
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl PairFacts {
    pub fn merge(self, other: PairFacts) -> PairFacts {
        PairFacts {
            first_at: earliest(self.first_at, other.first_at),
            applied_at: earliest(self.applied_at, other.applied_at),
            failed_at: earliest(self.failed_at, other.failed_at),
            received_at: earliest(self.received_at, other.received_at),
        }
    }

    /// When the deployment happened: its first report (rows written before part 11 know
    /// only their first success).
    pub fn first(&self) -> Option<DateTime<Utc>> {
        earliest(self.first_at, self.applied_at)
    }

    /// What a target row says of its commit on its cluster; `received_at` is the receipt of
    /// the report that first applied it on this object, if this write is that one.
    fn of(t: &TargetRecord, received_at: Option<DateTime<Utc>>) -> PairFacts {
        PairFacts {
            first_at: t.changed_at(),
            applied_at: t.applied_at,
            failed_at: t.failed_at.or(t.last_failed_at),
            received_at: t.applied_at.and(received_at),
        }
    }
}

/// A (commit, cluster) that an object of the cluster reported applied or failed: the
/// earliest of each fact (`PairFacts`). Partition `pairs|{cluster}`, row key the sha: the
/// coverage summary and the delivery metrics of one cluster read these, one per commit,
/// instead of one change row per object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairRow {
    pub cluster: String,
    pub sha: String,
    #[serde(flatten)]
    pub facts: PairFacts,
}

/// The row key suffix of a pair's failure fact (`Register::Failed`).
pub(super) const FAILED_SUFFIX: &str = "|failed";

/// The partition naming every cluster with change rows (row key: the cluster).
const CLUSTERS: &str = "clusters";

pub(super) fn pair_partition(cluster: &str) -> String {
    format!("pairs|{cluster}")
}

/// How long past the grace a `change.unapproved` decision waits while the host's API is
/// still asked for the commit's pull request (part 12).
const BACKFILL_HOLD: Duration = Duration::hours(1);

impl Ledger {
    /// The index rows a target row's change needs (see the module's comment).
    pub(super) fn index_writes(
        &self,
        sha: &str,
        old: Option<&TargetRecord>,
        new: Option<&TargetRecord>,
        received_at: DateTime<Utc>,
    ) -> IndexWrites {
        let mut w = IndexWrites::default();
        let (was, now) = (
            old.and_then(|t| ChangeRow::of(sha, t)),
            new.and_then(|t| ChangeRow::of(sha, t)),
        );
        let Some(now) = now else { return w };
        // The pair row: also when the change row stays as it is (a failure after the
        // object's first success still makes the deployment a failed one).
        if let Some(target) = new {
            let before = old.map_or_else(PairFacts::default, |t| PairFacts::of(t, None));
            let first_apply =
                target.applied_at.is_some() && old.is_none_or(|o| o.applied_at.is_none());
            let facts = PairFacts::of(target, first_apply.then_some(received_at));
            let merged = before.merge(facts);
            // What is new is only that it failed (the row knows the rest): a fact row.
            let only_failed = PairFacts {
                failed_at: before.failed_at,
                ..merged
            } == before;
            if merged != before {
                let (cluster, sha) = (now.cluster.clone(), sha.to_string());
                w.registers.push(if only_failed {
                    Register::Failed { cluster, sha }
                } else {
                    Register::Pair {
                        cluster,
                        sha,
                        facts,
                    }
                });
            }
        }
        if was.as_ref() == Some(&now) {
            return w;
        }
        w.registers.push(Register::Cluster(now.cluster.clone()));
        // The change row first: pending where the call is not one transaction, with the
        // row under the old key (a change that moved earlier) marked pending beside it —
        // one partition, one atomic batch — until the target row landed.
        let atomic = self.store.atomic_batches();
        let (pk, rk) = now.cluster_key();
        let moved = was.as_ref().filter(|w| w.time != now.time);
        let pending = ChangeRow {
            pending: !atomic,
            ..now.clone()
        };
        let mut ops = vec![BatchOp::Upsert(Row::from_record(
            &pk,
            rk.as_str(),
            &pending,
        ))];
        let old_rk = moved.map(|was| {
            let (_, old_rk) = was.cluster_key();
            let old = ChangeRow {
                pending: true,
                ..was.clone()
            };
            ops.push(BatchOp::Upsert(Row::from_record(
                &pk,
                old_rk.as_str(),
                &old,
            )));
            old_rk
        });
        w.confirm = (!atomic || old_rk.is_some()).then(|| Confirm {
            pk: pk.clone(),
            row: (!atomic).then(|| Row::from_record(&pk, rk, &now)),
            old_rk,
        });
        w.before.push((Table::Audit, pk, ops));
        if now.applied()
            && !was.as_ref().is_some_and(ChangeRow::applied)
            && self.policy.covers(&now.cluster)
        {
            let check = CheckRow {
                cluster: now.cluster.clone(),
                sha: sha.to_string(),
                kind: now.kind.clone(),
                namespace: now.namespace.clone(),
                name: now.name.clone(),
                received_at,
            };
            let rk = format!(
                "{}|{}|{}|{}|{}",
                now.cluster, sha, now.kind, now.namespace, now.name
            );
            w.before.push((
                Table::Audit,
                CHECKS.into(),
                vec![BatchOp::Upsert(Row::from_record(CHECKS, rk, &check))],
            ));
        }
        w
    }

    /// The writes that bring the registries up to date, to go in the same call as the target
    /// rows (before them), so a change row is never stored without its cluster's registry
    /// row nor an apply without its pair row:
    /// - a cluster's registry row is upserted unless this process knows it is stored;
    /// - a first success is merged into its pair row, the earliest winning: inserted if
    ///   absent, or updated on the etag read — a concurrent writer fails the call, which is
    ///   then decided again. A pair this process knows to hold a success no later than this
    ///   one needs no read: a stored earliest only ever moves earlier.
    pub(super) async fn register_writes(
        &self,
        registers: &[Register],
    ) -> Result<Vec<Write>, StoreError> {
        let mut out = vec![];
        let mut clusters = HashSet::new();
        for r in registers {
            let key = r.cache_key();
            match r {
                Register::Cluster(cluster) => {
                    if self.known(&key).is_some() || !clusters.insert(cluster) {
                        continue;
                    }
                    let registry =
                        Row::from_record(CLUSTERS, cluster.as_str(), &json!({"cluster": cluster}));
                    out.push((
                        Table::Audit,
                        CLUSTERS.into(),
                        vec![BatchOp::Upsert(registry)],
                    ));
                }
                Register::Pair {
                    cluster,
                    sha,
                    facts,
                } => {
                    if self
                        .known(&key)
                        .is_some_and(|known| known.merge(*facts) == known)
                    {
                        continue;
                    }
                    let pk = pair_partition(cluster);
                    let (stored, etag) = match self.store.get(Table::Audit, &pk, sha).await? {
                        Some(e) => {
                            let stored: PairRow = e.record()?;
                            let etag = e.etag.ok_or_else(|| {
                                StoreError::Corrupt(format!("{pk}/{sha}: read without an etag"))
                            })?;
                            (Some(stored.facts), Some(etag))
                        }
                        None => (None, None),
                    };
                    let merged = stored.map_or(*facts, |s| s.merge(*facts));
                    if stored == Some(merged) {
                        self.remember(&key, merged);
                        continue;
                    }
                    let row = Row::from_record(
                        &pk,
                        sha.as_str(),
                        &PairRow {
                            cluster: cluster.clone(),
                            sha: sha.clone(),
                            facts: merged,
                        },
                    );
                    let op = match etag {
                        Some(etag) => BatchOp::Update(row, etag),
                        None => BatchOp::Insert(row),
                    };
                    out.push((Table::Audit, pk, vec![op]));
                }
                Register::Failed { cluster, sha } => {
                    if self.known(&key).is_some() {
                        continue;
                    }
                    let pk = pair_partition(cluster);
                    let row = Row::from_record(
                        &pk,
                        format!("{sha}{FAILED_SUFFIX}"),
                        &json!({"cluster": cluster, "sha": sha, "failed": true}),
                    );
                    out.push((Table::Audit, pk, vec![BatchOp::Upsert(row)]));
                }
            }
        }
        Ok(out)
    }

    /// After a call with `register_writes` landed: what the registries now hold at least.
    pub(super) fn registered(&self, registers: &[Register]) {
        for r in registers {
            let facts = match r {
                Register::Cluster(_) | Register::Failed { .. } => PairFacts::default(),
                Register::Pair { facts, .. } => *facts,
            };
            self.remember(&r.cache_key(), facts);
        }
    }

    fn known(&self, key: &str) -> Option<PairFacts> {
        self.register_cache
            .lock(key)
            .and_then(|s| s.get(key).copied())
    }

    fn remember(&self, key: &str, facts: PairFacts) {
        if let Some(mut shard) = self.register_cache.lock(key) {
            let facts = shard.get(key).map_or(facts, |k| k.merge(facts));
            self.register_cache.insert(&mut shard, key, facts, |_| {});
        }
    }

    /// Once a call's target rows landed (`etags`: what its batches got): confirms its
    /// pending change rows and deletes the rows their changes moved away from, each on the
    /// etag of its own write. Nothing here can make the feed wrong, so a failure is only
    /// logged: a row left pending is read from its target row.
    pub(super) async fn finish_index(&self, confirms: Confirms, etags: &[Vec<Etag>]) {
        for (at, c) in confirms {
            let tag = |i: usize| {
                etags
                    .get(at)
                    .and_then(|t| t.get(i))
                    .filter(|e| !e.0.is_empty())
                    .cloned()
            };
            let mut ops = vec![];
            if let (Some(row), Some(etag)) = (c.row, tag(0)) {
                ops.push(vec![BatchOp::Update(row, etag)]);
            }
            if let (Some(rk), Some(etag)) = (c.old_rk, tag(1)) {
                ops.push(vec![BatchOp::Delete {
                    rk,
                    etag: Some(etag),
                }]);
            }
            for op in ops {
                match self.store.batch(Table::Audit, &c.pk, op).await {
                    // Another writer's row since: it is that writer's to finish.
                    Ok(_) | Err(StoreError::PreconditionFailed | StoreError::Conflict) => {}
                    Err(e) => tracing::debug!(error = %e, pk = %c.pk, "change row left pending"),
                }
            }
        }
    }

    /// A pending change row as its target row says it (`None`: the target row does not
    /// record this change — an attempt that never landed, or a key the change moved from).
    pub(super) async fn verify_change(
        &self,
        rk: &str,
        row: &ChangeRow,
    ) -> Result<Option<ChangeRow>, StoreError> {
        let object = ObjectRef::new(&row.cluster, &row.kind, &row.namespace, &row.name);
        let Some(stored) = self
            .store
            .get(Table::Commits, &row.sha, &TargetRecord::row_key(&object))
            .await?
        else {
            return Ok(None);
        };
        let target: TargetRecord = stored.record()?;
        Ok(ChangeRow::of(&row.sha, &target).filter(|c| c.cluster_key().1 == rk))
    }
}

/// The filters of `/api/changes` and its summary.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeQuery {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub repository: Option<RepoKey>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub approved: Option<bool>,
}

/// Where a page stopped: the last change read, by its cluster and row key. The feed runs in
/// (row key, cluster) order — newest first, ties by key, then cluster — so this is a place in
/// every cluster's partition at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    #[serde(rename = "c")]
    pub cluster: String,
    #[serde(rename = "k")]
    pub rk: String,
}

/// A position handed to clients as an opaque token (base64url of its JSON) and taken back.
pub trait Opaque: Serialize + serde::de::DeserializeOwned {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(s: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl Opaque for Cursor {}

/// A page of changes.
#[derive(Debug)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    pub next: Option<Cursor>,
}

/// What every change of one commit is joined with: its records, the policy's verdict, and
/// the commit's CSV columns (escaped once per commit, not once per row).
#[derive(Debug)]
pub struct CommitFacts {
    pub commit: Option<CommitRecord>,
    pub approval: Option<ApprovalRecord>,
    pub verdict: Verdict,
    csv: String,
}

impl CommitFacts {
    fn new(
        commit: Option<CommitRecord>,
        approval: Option<ApprovalRecord>,
        verdict: Verdict,
    ) -> Self {
        let c = commit.as_ref();
        let a = approval.as_ref();
        let mut csv = String::new();
        for cell in [
            c.map(|c| c.repository.clone()).unwrap_or_default(),
            c.map(|c| c.refs.join(" ")).unwrap_or_default(),
            subject(c).unwrap_or_default(),
            author(c).unwrap_or_default(),
            c.and_then(|c| c.pushed_by.clone()).unwrap_or_default(),
            c.and_then(|c| c.push_time()).map(rfc).unwrap_or_default(),
            verdict.approved.to_string(),
            verdict.exempt.clone().unwrap_or_default(),
            a.map(|a| a.number.to_string()).unwrap_or_default(),
            a.and_then(|a| a.url.clone()).unwrap_or_default(),
            a.map(|a| a.approvers.join(" ")).unwrap_or_default(),
            a.and_then(|a| a.merged_by.clone()).unwrap_or_default(),
        ] {
            csv.push(',');
            csv_cell(&cell, &mut csv);
        }
        CommitFacts {
            commit,
            approval,
            verdict,
            csv,
        }
    }
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One change with what is known of its commit.
#[derive(Debug, Clone)]
pub struct Change {
    pub row: ChangeRow,
    pub facts: Arc<CommitFacts>,
}

impl Change {
    /// The contract's JSON shape (§7).
    pub fn to_json(&self) -> Value {
        let c = self.facts.commit.as_ref();
        json!({
            "time": self.row.time,
            "cluster": self.row.cluster,
            "kind": self.row.kind,
            "namespace": self.row.namespace,
            "name": self.row.name,
            "state": self.row.state(),
            "appliedAt": self.row.applied_at,
            "revision": self.row.revision,
            "sha": self.row.sha,
            "repository": c.map(|c| &c.repository),
            "refs": c.map(|c| c.refs.clone()).unwrap_or_default(),
            "subject": subject(c),
            "author": author(c),
            "pushedBy": c.and_then(|c| c.pushed_by.clone()),
            "pushedAt": c.and_then(|c| c.push_time()),
            "approval": self.facts.approval,
            "approved": self.facts.verdict.approved,
            "exempt": self.facts.verdict.exempt,
        })
    }

    /// Appends the CSV line of this change, in `CSV_HEADER`'s order.
    pub fn write_csv(&self, out: &mut String) {
        let r = &self.row;
        let t = r.time;
        if (0..=9999).contains(&t.year()) && t.nanosecond() < 1_000_000_000 {
            // What `rfc` writes, without a string of its own (digits: nothing to escape).
            let _ = write!(
                out,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
        } else {
            csv_cell(&rfc(t), out);
        }
        for cell in [
            r.cluster.as_str(),
            &r.kind,
            &r.namespace,
            &r.name,
            r.state().as_str(),
            r.revision.as_deref().unwrap_or(""),
            &r.sha,
        ] {
            out.push(',');
            csv_cell(cell, out);
        }
        out.push_str(&self.facts.csv);
        out.push_str("\r\n");
    }
}

pub const CSV_HEADER: [&str; 20] = [
    "time",
    "cluster",
    "kind",
    "namespace",
    "name",
    "state",
    "revision",
    "sha",
    "repository",
    "refs",
    "subject",
    "author",
    "pushedBy",
    "pushedAt",
    "approved",
    "exempt",
    "pullRequest",
    "pullRequestUrl",
    "approvers",
    "mergedBy",
];

/// One CSV line (RFC 4180, CRLF), each cell neutralised against formula injection (OWASP:
/// a cell starting with `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'`) and
/// quoted when it holds a comma, quote or line break.
pub fn csv_line(cells: &[impl AsRef<str>], out: &mut String) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(cell.as_ref(), out);
    }
    out.push_str("\r\n");
}

/// One CSV cell, neutralised and quoted as `csv_line` says.
fn csv_cell(cell: &str, out: &mut String) {
    let risky = matches!(
        cell.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    );
    // Bytes, not chars: these are ASCII, and UTF-8 never uses ASCII bytes inside a
    // multi-byte character (the export checks every cell of millions of rows).
    let quote = cell
        .bytes()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if quote {
        out.push('"');
    }
    if risky {
        out.push('\'');
    }
    if quote {
        for ch in cell.chars() {
            if ch == '"' {
                out.push('"');
            }
            out.push(ch);
        }
        out.push('"');
    } else {
        out.push_str(cell);
    }
}

fn subject(c: Option<&CommitRecord>) -> Option<String> {
    c.and_then(|c| c.message.as_deref())
        .map(|m| m.lines().next().unwrap_or("").to_string())
}

fn author(c: Option<&CommitRecord>) -> Option<String> {
    c.and_then(|c| c.author.as_ref())
        .and_then(|a| a.name.clone().or_else(|| a.email.clone()))
}

/// How many index rows one page request reads at most before it answers with what it has
/// (possibly nothing, with a cursor): a rare filter over a long window never makes one
/// request slow.
const SCAN_BUDGET: usize = 20_000;

/// The commits whose records one request has read (bounded).
#[derive(Default)]
struct Joined {
    by_sha: HashMap<String, Arc<CommitFacts>>,
}

const JOIN_CACHE: usize = 8_192;

/// The most index rows one read of a cluster's partition asks for.
const CHUNK: usize = 500;
/// About the most change rows the lanes of one scan hold at once (~10 MB): a fleet of 50
/// clusters reads 500 at a time per cluster, one of 1,000 clusters 25.
const MERGE_ROWS: usize = 25_000;

/// A read of the feed: one lane per cluster partition the query reads, merged in (row key,
/// cluster) order. Each lane reads its partition in key ranges that start at the page's size
/// and double up to `CHUNK`, so a first page of the fleet reads about a page per cluster, and
/// an export reads long ranges — on SQLite consecutive leaf pages of the clustered audit table.
pub struct ChangeScan {
    q: ChangeQuery,
    lanes: Vec<Lane>,
    /// The next row of every lane that has one, taken out of its buffer.
    heap: BinaryHeap<Reverse<Head>>,
    joined: Joined,
    /// The window's end as the first key (exclusive end of the key range).
    hi: String,
    /// A lane whose buffer the last row emptied, to read on before the next row.
    drained: Option<usize>,
}

/// A lane's next row, ordered by (row key, lane): lanes are in cluster order.
struct Head {
    rk: String,
    lane: usize,
    row: ChangeRow,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        (&self.rk, self.lane) == (&other.rk, other.lane)
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.rk, self.lane).cmp(&(&other.rk, other.lane))
    }
}

struct Lane {
    cluster: String,
    pk: String,
    buf: VecDeque<(String, ChangeRow)>,
    /// The facts of the commit of this lane's last row: a cluster's consecutive changes are
    /// mostly one commit's, so most rows need no lookup.
    last: Option<(String, Arc<CommitFacts>)>,
    /// Where the next read starts, and whether a row at exactly that key was read already.
    from: String,
    exclusive: bool,
    size: usize,
    /// The most rows one read asks for: `CHUNK`, less in a fleet of many clusters, so the
    /// lanes together buffer at most about `MERGE_ROWS`.
    cap: usize,
    exhausted: bool,
}

impl Lane {
    /// Its next buffered row, as a head for the merge.
    fn head(&mut self, lane: usize) -> Option<Reverse<Head>> {
        let (rk, row) = self.buf.pop_front()?;
        Some(Reverse(Head { rk, lane, row }))
    }

    /// Reads the lane's next rows until one is kept or the range is exhausted; a pending row
    /// is taken from its target row, or skipped.
    async fn fill(&mut self, ledger: &Ledger, hi: &str) -> Result<(), StoreError> {
        loop {
            self.read(ledger, hi).await?;
            if !self.buf.is_empty() || self.exhausted {
                return Ok(());
            }
        }
    }

    async fn read(&mut self, ledger: &Ledger, hi: &str) -> Result<(), StoreError> {
        let want = self.size + usize::from(self.exclusive);
        let rows = ledger
            .store
            .query_range_json(Table::Audit, &self.pk, &self.from, hi, want)
            .await?;
        self.exhausted = rows.len() < want;
        let mut last = None;
        for (rk, json) in rows {
            if self.exclusive && rk == self.from {
                continue;
            }
            let row: ChangeRow = serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("{}/{rk}: {e}", self.pk)))?;
            let row = match row.pending {
                false => Some(row),
                true => ledger.verify_change(&rk, &row).await?,
            };
            if let Some(row) = row {
                self.buf.push_back((rk.clone(), row));
            }
            last = Some(rk);
        }
        // On from the last row read, kept or not.
        if let Some(rk) = last {
            self.from = rk;
            self.exclusive = true;
        }
        self.size = (self.size * 2).min(self.cap);
        Ok(())
    }
}

impl ChangeScan {
    /// Reads changes on, calling `each` for every one that passes the filters until it
    /// returns false; stops after `budget` index rows. Returns where it stopped (`None`: the
    /// window is exhausted).
    async fn next<F>(
        &mut self,
        ledger: &Ledger,
        budget: usize,
        mut each: F,
    ) -> Result<Option<Cursor>, StoreError>
    where
        F: FnMut(Change) -> bool,
    {
        let mut read = 0;
        loop {
            // A lane emptied by the last row is read on before the next row is chosen (its
            // next key may be the least), not before the caller is done: a full page reads
            // no range it does not need.
            if let Some(i) = self.drained.take() {
                let lane = &mut self.lanes[i];
                lane.fill(ledger, &self.hi).await?;
                self.heap.extend(lane.head(i));
            }
            let Some(Reverse(Head { rk, lane: i, row })) = self.heap.pop() else {
                return Ok(None);
            };
            let lane = &mut self.lanes[i];
            match lane.head(i) {
                Some(next) => self.heap.push(next),
                None if !lane.exhausted => self.drained = Some(i),
                None => {}
            }
            read += 1;
            let stop = |rk: String, lanes: &[Lane]| {
                Some(Cursor {
                    cluster: lanes[i].cluster.clone(),
                    rk,
                })
            };
            if self
                .q
                .namespace
                .as_ref()
                .is_some_and(|n| *n != row.namespace)
            {
                if read >= budget {
                    return Ok(stop(rk, &self.lanes));
                }
                continue;
            }
            let facts = match &self.lanes[i].last {
                Some((sha, facts)) if *sha == row.sha => facts.clone(),
                _ => {
                    let facts = ledger.join(&mut self.joined, &row.sha).await?;
                    self.lanes[i].last = Some((row.sha.clone(), facts.clone()));
                    facts
                }
            };
            let wanted = self.q.repository.as_ref().is_none_or(|r| {
                facts.commit.as_ref().map(|c| c.repository.as_str()) == Some(r.as_str())
            }) && self
                .q
                .approved
                .is_none_or(|want| want == facts.verdict.approved);
            if (wanted && !each(Change { row, facts })) || read >= budget {
                return Ok(stop(rk, &self.lanes));
            }
        }
    }

    /// The next rows of the CSV export (at most 512 index rows read) and whether more may
    /// follow: the caller streams each batch out before asking for the next, so memory stays
    /// flat however large the window.
    pub async fn export_batch(
        &mut self,
        ledger: &Ledger,
    ) -> Result<(Vec<Change>, bool), StoreError> {
        let mut batch = Vec::with_capacity(512);
        let more = self
            .next(ledger, 512, |c| {
                batch.push(c);
                true
            })
            .await?
            .is_some();
        Ok((batch, more))
    }
}

impl Ledger {
    /// The clusters a query reads, in name order as Rust compares names (the merge's ties
    /// and its cursor use that order; Table Storage orders keys by UTF-16): its own, or every
    /// one in the registry.
    pub(super) async fn clusters(&self, q: &ChangeQuery) -> Result<Vec<String>, StoreError> {
        let mut clusters: Vec<String> = match &q.cluster {
            Some(c) => vec![c.clone()],
            None => self
                .store
                .query_partition(Table::Audit, CLUSTERS, None)
                .await?
                .into_iter()
                .map(|e| e.rk)
                .collect(),
        };
        clusters.sort();
        Ok(clusters)
    }

    /// Starts a read of the feed after `cursor` (exclusive), each lane's first read `first`
    /// rows: one range per cluster (the fleet's clusters from their registry), read at once.
    pub async fn change_scan(
        &self,
        q: &ChangeQuery,
        cursor: Option<&Cursor>,
        first: usize,
    ) -> Result<ChangeScan, StoreError> {
        let clusters = self.clusters(q).await?;
        let (lo, hi) = (stamp_after(q.to), stamp_after(q.from));
        let cap = (MERGE_ROWS / clusters.len().max(1)).clamp(16, CHUNK);
        let size = first.clamp(1, cap);
        let mut lanes: Vec<Lane> = clusters
            .into_iter()
            .map(|cluster| {
                // After the cursor: a cluster up to the cursor's resumes strictly after its
                // key, one after it at the key (ties run in cluster order).
                let (from, exclusive) = match cursor {
                    Some(c) if c.rk >= lo => (c.rk.clone(), cluster <= c.cluster),
                    _ => (lo.clone(), false),
                };
                Lane {
                    pk: cluster_partition(&cluster),
                    cluster,
                    buf: VecDeque::new(),
                    last: None,
                    from,
                    exclusive,
                    size,
                    cap,
                    exhausted: false,
                }
            })
            .collect();
        futures::future::try_join_all(lanes.iter_mut().map(|l| l.fill(self, &hi))).await?;
        let heap = lanes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, l)| l.head(i))
            .collect();
        Ok(ChangeScan {
            q: q.clone(),
            lanes,
            heap,
            joined: Joined::default(),
            hi,
            drained: None,
        })
    }

    /// The commit and approval records of `sha` (one range read: both rows sort before the
    /// partition's target rows).
    async fn join(&self, joined: &mut Joined, sha: &str) -> Result<Arc<CommitFacts>, StoreError> {
        if let Some(hit) = joined.by_sha.get(sha) {
            return Ok(hit.clone());
        }
        let (commit, approval) = self.commit_records(sha).await?;
        let verdict = self.policy.verdict(commit.as_ref(), approval.as_ref());
        let facts = Arc::new(CommitFacts::new(commit, approval, verdict));
        if joined.by_sha.len() >= JOIN_CACHE {
            joined.by_sha.clear();
        }
        joined.by_sha.insert(sha.to_string(), facts.clone());
        Ok(facts)
    }

    /// The commit and approval records of `sha` (one range read: both rows sort before the
    /// partition's target rows).
    async fn commit_records(
        &self,
        sha: &str,
    ) -> Result<(Option<CommitRecord>, Option<ApprovalRecord>), StoreError> {
        let rows = self
            .store
            .query_range(Table::Commits, sha, "approval", "commit|", 2)
            .await?;
        let mut out = (None, None);
        for r in &rows {
            match r.rk.as_str() {
                "commit" => out.0 = Some(r.record()?),
                "approval" => out.1 = Some(r.record()?),
                _ => {}
            }
        }
        Ok(out)
    }

    /// One page of the audit feed.
    pub async fn changes(
        &self,
        q: &ChangeQuery,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<ChangePage, StoreError> {
        let mut changes = Vec::with_capacity(limit.min(500));
        let mut scan = self.change_scan(q, cursor, limit).await?;
        let next = scan
            .next(self, SCAN_BUDGET, |c| {
                changes.push(c);
                changes.len() < limit
            })
            .await?;
        // A page that ended exactly at the window's end says so only on the next request.
        Ok(ChangePage { changes, next })
    }

    /// Whether `cursor` can continue `q` (a query of one cluster takes only its cursors).
    pub fn cursor_fits(q: &ChangeQuery, cursor: &Cursor) -> bool {
        q.cluster.as_ref().is_none_or(|c| *c == cursor.cluster)
    }

    /// Approval coverage over distinct (commit, cluster) pairs first applied in the window,
    /// from the pair rows: one per commit a cluster ever applied, one key range per cluster
    /// (the fleet's clusters from their registry), each commit joined once.
    pub async fn change_summary(&self, q: &ChangeQuery) -> Result<Value, StoreError> {
        let mut pairs: HashMap<(String, String), Verdict> = HashMap::new();
        let clusters = self.clusters(q).await?;
        let mut in_window: Vec<PairRow> = vec![];
        for cluster in clusters {
            let rows = self
                .store
                .query_range(Table::Audit, &pair_partition(&cluster), "", "~", usize::MAX)
                .await?;
            for e in rows {
                if e.rk.ends_with(FAILED_SUFFIX) {
                    continue;
                }
                let p: PairRow = e.record()?;
                if p.facts.applied_at.is_some_and(|a| a >= q.from && a < q.to) {
                    in_window.push(p);
                }
            }
        }
        // Each commit's records once, many commits per read (SQLite: one statement per
        // chunk and row kind; Table Storage: one query per commit and row kind).
        let mut shas: Vec<String> = in_window.iter().map(|p| p.sha.clone()).collect();
        shas.sort();
        shas.dedup();
        let mut verdicts: HashMap<String, Verdict> = HashMap::with_capacity(shas.len());
        for chunk in shas.chunks(500) {
            // `approval` and `commit` are neighbours, before the partition's target rows: one
            // key range per commit.
            let rows = self
                .store
                .query_partitions_range(Table::Commits, chunk, "approval", "commit|")
                .await?;
            for (sha, rows) in chunk.iter().zip(rows) {
                let commit: Option<CommitRecord> = rows
                    .iter()
                    .find(|e| e.rk == "commit")
                    .map(Entity::record)
                    .transpose()?;
                let approval: Option<ApprovalRecord> = rows
                    .iter()
                    .find(|e| e.rk == "approval")
                    .map(Entity::record)
                    .transpose()?;
                verdicts.insert(
                    sha.clone(),
                    self.policy.verdict(commit.as_ref(), approval.as_ref()),
                );
            }
        }
        for p in in_window {
            if let Some(v) = verdicts.get(&p.sha) {
                pairs.insert((p.sha, p.cluster), v.clone());
            }
        }
        let n = pairs.len();
        let approved = pairs.values().filter(|v| v.approved).count();
        let exempt = pairs
            .values()
            .filter(|v| !v.approved && v.exempt.is_some())
            .count();
        let unapproved = n - approved - exempt;
        let coverage = (n > exempt).then(|| approved as f64 / (n - exempt) as f64);
        Ok(json!({
            "changes": n, "approved": approved, "exempt": exempt, "unapproved": unapproved,
            "coverage": coverage,
            "from": q.from, "to": q.to, "cluster": q.cluster,
        }))
    }
}

/// The push log row written with each new push row (same partition, same batch).
pub(super) fn push_log_row(pk: &str, record: &PushRecord) -> Row {
    Row::from_record(
        pk,
        format!("log|{}|{}", stamp(record.received_at), record.row()),
        record,
    )
}

/// Where a branch-history page stopped: the push log row and how many of its commits
/// (newest first) were already given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchCursor {
    #[serde(rename = "k")]
    pub rk: String,
    #[serde(rename = "i")]
    pub skip: usize,
}

impl Opaque for BranchCursor {}

impl Ledger {
    /// A branch's pushed commits, newest push first (a push's commits newest first), each
    /// once (at its newest push), as evidence; at most `limit`, and where to go on.
    pub async fn branch_commits(
        &self,
        repository: &RepoKey,
        git_ref: &str,
        cursor: Option<&BranchCursor>,
        limit: usize,
        summary: bool,
        cluster: Option<&str>,
    ) -> Result<(Vec<super::Evidence>, Option<BranchCursor>), StoreError> {
        let (shas, next) = self.branch_page(repository, git_ref, cursor, limit).await?;
        // The page's commits, read 8 at a time (each is one partition).
        let read = |sha: CommitSha| async move {
            let mut ev = match (summary, cluster) {
                (true, _) => {
                    let rows = self
                        .store
                        .query_range_json(Table::Commits, sha.as_str(), "", "~", usize::MAX)
                        .await?;
                    super::evidence::summarise(&sha, &rows)?
                }
                (false, Some(c)) => self.cluster_evidence(&sha, c).await?,
                (false, None) => self.evidence(&sha).await?,
            };
            if let (Some(ev), Some(c)) = (&mut ev, cluster) {
                ev.targets.retain(|t| t.cluster == c);
                if let Some(clusters) = &mut ev.clusters {
                    clusters.retain(|s| s.cluster == c);
                }
            }
            Ok::<_, StoreError>(ev)
        };
        use futures::{StreamExt, TryStreamExt};
        let evidence: Vec<Option<super::Evidence>> = futures::stream::iter(shas)
            .map(read)
            .buffered(8)
            .try_collect()
            .await?;
        Ok((evidence.into_iter().flatten().collect(), next))
    }

    /// A commit's evidence with one cluster's target rows only: its commit and approval rows
    /// and the key range of that cluster's targets (the matrix expanding a cluster reads 50
    /// commits; each has thousands of targets on a big fleet). `None` when nothing at all
    /// is known of the commit, as `evidence`.
    async fn cluster_evidence(
        &self,
        sha: &CommitSha,
        cluster: &str,
    ) -> Result<Option<super::Evidence>, StoreError> {
        let prefix = format!("target|{cluster}|");
        let (mut rows, targets) = futures::try_join!(
            self.store
                .query_range(Table::Commits, sha.as_str(), "approval", "commit|", 2),
            self.store
                .query_partition(Table::Commits, sha.as_str(), Some(&prefix)),
        )?;
        rows.extend(targets);
        if rows.is_empty() {
            // Known only from other clusters' targets: listed, with none here.
            let any = self
                .store
                .query_range(Table::Commits, sha.as_str(), "", "~", 1)
                .await?;
            if any.is_empty() {
                return Ok(None);
            }
        }
        Ok(Some(super::evidence::assemble(sha, &rows)?.unwrap_or(
            super::Evidence {
                sha: sha.to_string(),
                commit: None,
                approval: None,
                targets: vec![],
                clusters: None,
            },
        )))
    }

    /// The shas of one page of a branch's pushed commits, newest push first, and the cursor
    /// of the next page.
    async fn branch_page(
        &self,
        repository: &RepoKey,
        git_ref: &str,
        cursor: Option<&BranchCursor>,
        limit: usize,
    ) -> Result<(Vec<CommitSha>, Option<BranchCursor>), StoreError> {
        let pk = PushRecord::partition(repository.as_str(), git_ref);
        // The cursor's row is read again (some of its commits are still to come); every
        // later read starts after the last row read.
        let mut from = cursor.map_or_else(|| "log|".to_string(), |c| c.rk.clone());
        let mut after: Option<String> = None;
        let mut skip = cursor.map_or(0, |c| c.skip);
        let mut out = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        const CHUNK: usize = 64;
        loop {
            let rows = self
                .store
                .query_range(Table::Pushes, &pk, &from, "log}", CHUNK + 1)
                .await?;
            let n = rows.len();
            for e in &rows {
                if after.as_deref() == Some(e.rk.as_str()) {
                    continue;
                }
                let push: PushRecord = e.record()?;
                let mut shas: Vec<&String> = push.commits.iter().rev().collect();
                if shas.is_empty() {
                    shas.extend(push.after.iter());
                }
                for (i, sha) in shas.iter().enumerate().skip(skip) {
                    if out.len() == limit {
                        let next = BranchCursor {
                            rk: e.rk.clone(),
                            skip: i,
                        };
                        return Ok((out, Some(next)));
                    }
                    if !seen.insert((*sha).clone()) {
                        continue;
                    }
                    let Ok(parsed) = CommitSha::parse(sha) else {
                        continue;
                    };
                    out.push(parsed);
                }
                skip = 0;
                after = Some(e.rk.clone());
            }
            match &after {
                Some(last) if n > CHUNK => from = last.clone(),
                _ => return Ok((out, None)),
            }
        }
    }
}

/// What the sweep decided about approvals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ApprovalSweep {
    pub decided: usize,
    pub unapproved: usize,
}

impl Ledger {
    /// Decides every (commit, cluster) whose grace has passed: `change.unapproved` once for
    /// those neither sufficiently approved nor exempt. Exactly once under concurrent sweeps
    /// and restarts: the message's outbox row has a deterministic key (insert-if-absent), a
    /// decision row stops later applies of the same commit on the cluster asking again, and
    /// the check rows are deleted only after both.
    pub async fn decide_approvals(&self, now: DateTime<Utc>) -> Result<ApprovalSweep, StoreError> {
        let mut out = ApprovalSweep::default();
        let checks = self
            .store
            .query_partition(Table::Audit, CHECKS, None)
            .await?;
        let mut groups: BTreeMap<(String, String), Vec<(Entity, CheckRow)>> = BTreeMap::new();
        for e in checks {
            let c: CheckRow = e.record()?;
            groups
                .entry((c.cluster.clone(), c.sha.clone()))
                .or_default()
                .push((e, c));
        }
        let grace = Duration::from_std(self.policy.grace).unwrap_or_default();
        for ((cluster, sha), rows) in groups {
            let first = rows.iter().map(|(_, c)| c.received_at).min().unwrap_or(now);
            let covered = self.policy.covers(&cluster);
            if covered && first + grace > now {
                continue;
            }
            let decided_rk = format!("{cluster}|{sha}");
            let decided = self.store.get(Table::Audit, DECIDED, &decided_rk).await?;
            // Check rows are written ahead of their target rows: on Table Storage one whose
            // target write never landed says nothing was applied (its retry writes it again).
            let landed = !covered || decided.is_some() || self.any_applied(&sha, &rows).await?;
            if covered && decided.is_none() && landed {
                let (commit, approval) = self.commit_records(&sha).await?;
                let verdict = self.policy.verdict(commit.as_ref(), approval.as_ref());
                // Part 12: the host's API is still being asked for this commit's pull request
                // (its webhook may have been lost): decide when it answered — for at most an
                // hour past the grace, so an API outage does not silence the alarm.
                if verdict.unapproved()
                    && approval.is_none()
                    && first + grace + BACKFILL_HOLD > now
                    && match &commit {
                        Some(c) if self.backfill.is_some() => {
                            self.approval_pending(&c.repository, &sha).await?
                        }
                        _ => false,
                    }
                {
                    continue;
                }
                if verdict.unapproved() {
                    let message = self
                        .unapproved_message(
                            &cluster,
                            &sha,
                            commit.as_ref(),
                            approval.as_ref(),
                            &verdict,
                        )
                        .await?;
                    let pk = approval_partition(&cluster);
                    let rk = format!("outbox|{}", message.id);
                    let row = tagged(
                        &pk,
                        &rk,
                        &OutboxRecord::pending(message),
                        &[("rowType", ROW_OUTBOX)],
                    );
                    match self.store.insert(Table::Objects, row).await {
                        Ok(_) => out.unapproved += 1,
                        Err(StoreError::Conflict) => {}
                        Err(e) => return Err(e),
                    }
                    self.notify_outbox(&pk);
                }
                let record =
                    json!({"cluster": cluster, "sha": sha, "verdict": verdict, "decidedAt": now});
                self.store
                    .upsert(Table::Audit, Row::from_record(DECIDED, decided_rk, &record))
                    .await?;
                out.decided += 1;
            }
            let deletes = rows
                .into_iter()
                .map(|(e, _)| BatchOp::Delete {
                    rk: e.rk,
                    etag: e.etag,
                })
                .collect::<Vec<_>>();
            for chunk in deletes.chunks(100) {
                match self.store.batch(Table::Audit, CHECKS, chunk.to_vec()).await {
                    // Another sweep deleted them, or a new apply rewrote one: it stays
                    // for the next sweep, which finds the decision.
                    Ok(_) | Err(StoreError::PreconditionFailed | StoreError::Conflict) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// Whether the target row of any of these checks records the apply.
    async fn any_applied(
        &self,
        sha: &str,
        rows: &[(Entity, CheckRow)],
    ) -> Result<bool, StoreError> {
        for (_, c) in rows {
            let object = ObjectRef::new(&c.cluster, &c.kind, &c.namespace, &c.name);
            let rk = TargetRecord::row_key(&object);
            if let Some(e) = self.store.get(Table::Commits, sha, &rk).await? {
                if e.record::<TargetRecord>()?.applied_at.is_some() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn unapproved_message(
        &self,
        cluster: &str,
        sha: &str,
        commit: Option<&CommitRecord>,
        approval: Option<&ApprovalRecord>,
        verdict: &Verdict,
    ) -> Result<Message, StoreError> {
        let targets = self
            .store
            .query_partition(Table::Commits, sha, Some(&format!("target|{cluster}|")))
            .await?;
        let mut objects = vec![];
        let mut applied_at: Option<DateTime<Utc>> = None;
        for e in &targets {
            let t: TargetRecord = e.record()?;
            if t.cluster != cluster {
                continue;
            }
            if let Some(a) = t.applied_at {
                applied_at = Some(applied_at.map_or(a, |x| x.min(a)));
                objects.push(json!({"kind": t.kind, "namespace": t.namespace, "name": t.name}));
            }
        }
        let object = ObjectRef {
            cluster: cluster.to_string(),
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
        };
        let data = json!({
            "cluster": cluster,
            "sha": sha,
            "repository": commit.map(|c| &c.repository),
            "refs": commit.map(|c| c.refs.clone()).unwrap_or_default(),
            "pushedBy": commit.and_then(|c| c.pushed_by.clone()),
            "author": commit.and_then(|c| c.author.clone()),
            "appliedAt": applied_at,
            "objects": objects,
            "approval": approval,
            "reason": verdict.reason,
            "severity": MessageType::ChangeUnapproved.severity(),
        });
        Ok(Message {
            id: message_id(MessageType::ChangeUnapproved, &object, sha),
            kind: MessageType::ChangeUnapproved,
            object,
            time: applied_at.unwrap_or_else(Utc::now),
            revision: None,
            sha: Some(sha.to_string()),
            reason: verdict.reason.map(str::to_string),
            message: None,
            incident_id: None,
            repository: commit.map(|c| c.repository.clone()),
            custom: Some(Custom {
                subject: format!("{cluster}/{sha}"),
                data,
            }),
            opened_at: None,
            cause: None,
            group_id: None,
        })
    }
}

/// The `objects` partition holding a cluster's `change.unapproved` messages (no object's).
fn approval_partition(cluster: &str) -> String {
    format!("approval|{cluster}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_neutralised() {
        let mut out = String::new();
        csv_line(
            &[
                "plain",
                "a,b",
                "say \"hi\"",
                "two\nlines",
                "=SUM(A1)",
                "+1",
                "-2",
                "@cmd",
                "=x,y",
                "",
            ],
            &mut out,
        );
        assert_eq!(
            out,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",'=SUM(A1),'+1,'-2,'@cmd,\"'=x,y\",\r\n"
        );
    }

    /// The fast path reads what chrono writes exactly as chrono's parser does, and leaves
    /// everything else to it.
    #[test]
    fn change_times_read_as_chrono_reads_them() {
        let t = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
            .unwrap()
            .to_utc();
        for d in [
            Duration::zero(),
            Duration::milliseconds(250),
            Duration::microseconds(1),
            Duration::nanoseconds(123_456_789),
            Duration::days(-20_000),
        ] {
            let text = serde_json::to_string(&(t + d)).unwrap();
            let text = text.trim_matches('"');
            assert_eq!(utc::parse(text), Some(t + d), "{text}");
        }
        for other in [
            "2026-11-30T10:00:00+01:00",
            "2026-11-30T10:00:00.Z",
            "2026-11-30T10:00:00.1234567890Z",
            "2026-02-30T10:00:00Z",
            "2026-11-30 10:00:00Z",
            "2026-11-30T1a:00:00Z",
            "2016-12-31T23:59:60Z",
        ] {
            assert_eq!(utc::parse(other), None, "{other}");
        }
        let row = json!({
            "time": "2026-11-30T11:00:00+01:00", "cluster": "c", "kind": "k", "namespace": "n",
            "name": "x", "appliedAt": null, "revision": null, "sha": "s"
        });
        let row: ChangeRow = serde_json::from_value(row).unwrap();
        assert_eq!(
            (row.time, row.applied_at),
            (t, None),
            "other forms through chrono"
        );
        let row: ChangeRow = serde_json::from_str(
            r#"{"time":"2026-11-30T10:00:00Z","cluster":"c","kind":"k","namespace":"n","name":"x","appliedAt":"2026-11-30T10:00:00.5Z","revision":"main@sha1:s","sha":"s"}"#,
        )
        .unwrap();
        assert_eq!(row.applied_at, Some(t + Duration::milliseconds(500)));
        let missing: ChangeRow = serde_json::from_str(
            r#"{"time":"2026-11-30T10:00:00Z","cluster":"c","kind":"k","namespace":"n","name":"x","revision":null,"sha":"s"}"#,
        )
        .unwrap();
        assert_eq!(missing.applied_at, None);
    }

    #[test]
    fn stamps_sort_newest_first() {
        let a = DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
            .unwrap()
            .to_utc();
        let b = a + Duration::seconds(1);
        assert!(stamp(b) < stamp(a));
        assert_eq!(
            stamp_after(b),
            format!("{:013}", stamp(b).parse::<i64>().unwrap() + 1)
        );
        assert!(stamp_after(b) <= stamp(a));
    }
}
