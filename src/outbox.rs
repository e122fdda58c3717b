//! The outbox dispatcher: delivers messages that state changes wrote into their objects'
//! outboxes (in the same atomic batch) to the publisher, in order per object, at least once.
//!
//! Woken per partition right after a commit; a periodic scan catches whatever a full queue,
//! a failed publish or a crash left behind. A message is marked `delivered` only after the
//! publisher accepted it; publishers make a second hand-over of the same id harmless (the
//! local sink remembers ids, Service Bus deduplicates on `MessageId`).
//!
//! Failures back off exponentially with jitter (base `FLUXTRAIL_PUBLISH_RETRY_BASE`, doubling,
//! capped at 5 minutes); a later message of the same object waits for an earlier one. After
//! `FLUXTRAIL_PUBLISH_MAX_ATTEMPTS` a message is parked: counted and listed as dead
//! (`GET /api/outbox?delivery=dead`, health), but kept in line and tried again by itself at
//! the capped backoff, so an outage of any length ends with every message delivered once, in
//! order, by itself. A message the publisher refuses (`Rejected`) is `dead` at once and does
//! not hold its object's next messages back. `POST /api/outbox/redrive` puts both back in
//! line for an attempt at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::core::Message;
use crate::ledger::groups;
use crate::ledger::records::{Delivery, OutboxRecord, ROW_OUTBOX};
use crate::publish::{PublishError, Publisher};
use crate::store::{BatchOp, Etag, Row, Store, StoreError, Table};

/// How often undelivered messages are looked for without a wake-up, at the most.
const SCAN_INTERVAL: Duration = Duration::from_secs(30);
/// The scan's share of time at the most: the next scan waits at least this many times the
/// last one's duration. On SQLite the scan reads every object row (a property filter, no
/// index): on a 90-day, 50-cluster history (4 M rows) it took 26 s, so every 30 s kept a
/// reader thread and a core busy all the time. It is a safety net — a process's own messages
/// are delivered on its wake-ups — so on such a store it now runs every ~4 minutes.
const SCAN_SHARE: u32 = 10;
/// The longest wait between two attempts of one message.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How many objects one pass reads and delivers together.
const PASS_PARTITIONS: usize = 256;
/// Table Storage's limit of operations in one entity group transaction.
const MAX_BATCH: usize = 100;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The wait before attempt `attempts + 1`: base · 2^(attempts-1), capped, plus up to 50%
    /// jitter derived from the message id (so a burst of failures does not retry in step).
    pub fn backoff(&self, attempts: u32, id: &str) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let capped = exp.min(MAX_BACKOFF);
        let h = Sha256::digest(format!("{id}#{attempts}").as_bytes());
        let frac = f64::from(u16::from_be_bytes([h[0], h[1]])) / f64::from(u16::MAX);
        capped.mul_f64(1.0 + frac / 2.0)
    }
}

#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
    policy: RetryPolicy,
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub delivered: usize,
    /// The earliest time a message that is waiting out its backoff becomes due.
    pub next_due: Option<DateTime<Utc>>,
}

impl Pass {
    fn add(&mut self, other: Pass) {
        self.delivered += other.delivered;
        self.next_due = match (self.next_due, other.next_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, publisher: Arc<dyn Publisher>, policy: RetryPolicy) -> Self {
        Dispatcher {
            store,
            publisher,
            policy,
        }
    }

    /// Runs until `wake` closes: delivers woken partitions, retries what is due, and scans
    /// periodically.
    pub fn spawn(self, mut wake: mpsc::Receiver<String>) -> JoinHandle<()> {
        tokio::spawn(async move {
            // The first scan at once (what a crash left), the next paced by its cost.
            let mut next_scan = tokio::time::Instant::now();
            let mut due: Option<tokio::time::Instant> = None;
            loop {
                let pass = tokio::select! {
                    pk = wake.recv() => match pk {
                        Some(pk) => {
                            // Every object woken meanwhile goes in the same pass.
                            let mut pks = BTreeSet::from([pk]);
                            while pks.len() < PASS_PARTITIONS {
                                match wake.try_recv() {
                                    Ok(pk) => {
                                        pks.insert(pk);
                                    }
                                    Err(_) => break,
                                }
                            }
                            let pks: Vec<String> = pks.into_iter().collect();
                            self.deliver_partitions(&pks, Utc::now()).await
                        }
                        None => break,
                    },
                    _ = tokio::time::sleep_until(next_scan) => {
                        let started = tokio::time::Instant::now();
                        let pass = self.deliver_all(Utc::now()).await;
                        next_scan = tokio::time::Instant::now()
                            + SCAN_INTERVAL.max(started.elapsed() * SCAN_SHARE);
                        pass
                    }
                    _ = sleep_until(due), if due.is_some() => {
                        due = None;
                        self.deliver_all(Utc::now()).await
                    }
                };
                match pass {
                    Ok(p) => {
                        if let Some(at) = p.next_due {
                            let wait = (at - Utc::now()).to_std().unwrap_or_default();
                            let at = tokio::time::Instant::now() + wait;
                            due = Some(due.map_or(at, |d| d.min(at)));
                        }
                    }
                    Err(e) => {
                        // The store failed mid-pass (full disk, outage): what that pass would
                        // have scheduled is unknown, so look again soon rather than at the
                        // next scan.
                        let retry = tokio::time::Instant::now() + self.policy.base;
                        due = Some(due.map_or(retry, |d| d.min(retry)));
                        tracing::warn!(error = %e, retry_in = ?self.policy.base, "outbox pass failed; will retry");
                    }
                }
            }
        })
    }

    /// Delivers every due message of every object.
    pub async fn deliver_all(&self, now: DateTime<Utc>) -> Result<Pass, StoreError> {
        // Only the partitions: at full speed thousands of messages can be pending, and
        // loading them whole made resident memory jump by tens of MB every scan.
        let partitions: Vec<String> = self
            .store
            .partitions_where(Table::Objects, "delivery", Delivery::Pending.as_str())
            .await?;
        // A backlog (a restart, a store outage) may hold failures and recoveries of many
        // objects: every waiting incident opening is settled first, so incidents that were
        // open at once share their group whichever pass delivers them (`groups::settle`).
        if partitions.len() > PASS_PARTITIONS {
            for chunk in partitions.chunks(PASS_PARTITIONS) {
                self.settle_openings(chunk).await?;
            }
        }
        let mut pass = Pass::default();
        for chunk in partitions.chunks(PASS_PARTITIONS) {
            pass.add(self.deliver_partitions(chunk, now).await?);
        }
        Ok(pass)
    }

    /// The waiting messages of these objects, each object's in order. Pending rows only: an
    /// object's delivered (and dead) messages stay until retention.
    async fn pending(&self, pks: &[String]) -> Result<Vec<Vec<crate::store::Entity>>, StoreError> {
        self.store
            .query_partitions_where(
                Table::Objects,
                pks,
                Some("outbox|"),
                ("delivery", Delivery::Pending.as_str()),
            )
            .await
    }

    /// Settles the incident openings waiting in these objects' outboxes (their groups), nothing
    /// else: delivery settles them again (a no-op) and takes the rest in order.
    async fn settle_openings(&self, pks: &[String]) -> Result<(), StoreError> {
        let partitions = self.pending(pks).await?;
        let mut openings: Vec<Message> = vec![];
        for row in partitions.into_iter().flatten() {
            let rec: OutboxRecord = row.record()?;
            if rec.message.kind == crate::core::MessageType::ApplyFailed
                && groups::unsettled(&rec.message)
            {
                openings.push(rec.message);
            }
        }
        let mut refs: Vec<&mut Message> = openings.iter_mut().collect();
        groups::settle(self.store.as_ref(), &mut refs).await?;
        Ok(())
    }

    /// Delivers the due messages of several objects: read in one query, handed to the
    /// publisher together (the local sink syncs once for all of them), marked in one write.
    /// Per object in order: an object's messages stop at the first that cannot go yet (still
    /// waiting out its backoff, or failing now), so a later message never overtakes an
    /// earlier one; a message parked as dead does not hold the next back.
    pub async fn deliver_partitions(
        &self,
        pks: &[String],
        now: DateTime<Utc>,
    ) -> Result<Pass, StoreError> {
        let partitions = self.pending(pks).await?;
        let mut pass = Pass::default();
        let mut rest: Vec<Due> = Vec::new();
        for (part, rows) in partitions.into_iter().enumerate() {
            for row in rows {
                let rec: OutboxRecord = row.record()?;
                if let Some(at) = rec.next_attempt_at.filter(|at| *at > now) {
                    pass.add(Pass {
                        delivered: 0,
                        next_due: Some(at),
                    });
                    break;
                }
                let etag = row.etag.ok_or_else(|| {
                    StoreError::Corrupt(format!("{}/{}: read without an etag", row.pk, row.rk))
                })?;
                rest.push(Due {
                    part,
                    rk: row.rk,
                    etag,
                    rec,
                });
            }
        }
        let mut handled: Vec<Due> = Vec::with_capacity(rest.len());
        // Incident messages join or leave their group before their first attempt (contract
        // §9, `ledger::groups`); the group's own messages go out first, so a subscriber sees
        // `group.opened` before the first `apply.failed` that names it.
        let settled = {
            let mut messages: Vec<&mut Message> =
                rest.iter_mut().map(|d| &mut d.rec.message).collect();
            groups::settle(self.store.as_ref(), &mut messages).await?
        };
        if !settled.partitions.is_empty() {
            let pks: Vec<String> = settled.partitions.into_iter().collect();
            pass.add(Box::pin(self.deliver_partitions(&pks, now)).await?);
        }
        // A message whose group could not be settled yet (its group kept changing under
        // other settlers) waits, and its object's later messages with it.
        let unsettled: BTreeSet<usize> = rest
            .iter()
            .filter(|d| groups::unsettled(&d.rec.message))
            .map(|d| d.part)
            .collect();
        if !unsettled.is_empty() {
            rest.retain(|d| !unsettled.contains(&d.part));
            pass.add(Pass {
                delivered: 0,
                next_due: Some(
                    now + chrono::Duration::from_std(self.policy.base).unwrap_or_default(),
                ),
            });
        }
        // Internal messages (`incident.closed`) are settled, never published.
        let (internal, publish): (Vec<Due>, Vec<Due>) = rest
            .into_iter()
            .partition(|d| d.rec.message.kind.is_internal());
        rest = publish;
        for mut d in internal {
            d.rec.delivered(now);
            handled.push(d);
        }
        // Handed over in order; after a failure, the failed message's object waits and the
        // others go on.
        while !rest.is_empty() {
            let messages: Vec<Message> = rest.iter().map(|d| d.rec.message.clone()).collect();
            let (accepted, failure) = match self.publisher.publish_all(&messages).await {
                Ok(()) => (rest.len(), None),
                Err((n, e)) => (n, Some(e)),
            };
            let mut it = rest.into_iter();
            for mut d in it.by_ref().take(accepted) {
                d.rec.attempts += 1;
                d.rec.delivered(now);
                pass.delivered += 1;
                handled.push(d);
            }
            let (Some(e), Some(mut d)) = (failure, it.next()) else {
                break;
            };
            d.rec.attempts += 1;
            d.rec.last_error = Some(e.to_string());
            let waits = if matches!(e, PublishError::Rejected(_)) {
                d.rec.delivery = Delivery::Dead;
                d.rec.next_attempt_at = None;
                tracing::error!(id = %d.rec.message.id, attempts = d.rec.attempts, error = %e, "message refused by the publisher, parked as dead; re-drive with POST /api/outbox/redrive");
                None
            } else {
                if d.rec.attempts >= self.policy.max_attempts && !d.rec.parked {
                    d.rec.parked = true;
                    tracing::error!(id = %d.rec.message.id, attempts = d.rec.attempts, error = %e, "message parked after its attempts: shown as dead, tried again by itself every 5 minutes (POST /api/outbox/redrive tries at once)");
                }
                let at = now
                    + chrono::Duration::from_std(
                        self.policy.backoff(d.rec.attempts, &d.rec.message.id),
                    )
                    .unwrap_or_default();
                d.rec.next_attempt_at = Some(at);
                pass.add(Pass {
                    delivered: 0,
                    next_due: Some(at),
                });
                tracing::warn!(id = %d.rec.message.id, attempts = d.rec.attempts, error = %e, retry_at = %at, "message not delivered yet");
                Some(d.part)
            };
            handled.push(d);
            rest = it.filter(|d| Some(d.part) != waits).collect();
        }
        self.mark(pks, handled).await?;
        Ok(pass)
    }

    /// Writes what happened to each handled message: one batch per object (Table Storage
    /// takes at most 100 operations in one), all in one call. A row someone else changed
    /// meanwhile (another instance, a sweep) makes that call fail as a whole; then each row is
    /// written alone and the changed ones are left as they are.
    async fn mark(&self, pks: &[String], handled: Vec<Due>) -> Result<(), StoreError> {
        if handled.is_empty() {
            return Ok(());
        }
        // Its `delivery` is a top-level string already: the tag scans look for.
        let row =
            |d: &Due| Row::from_record(&pks[d.part], &d.rk, &d.rec).with_tag("rowType", ROW_OUTBOX);
        let mut writes: Vec<(Table, String, Vec<BatchOp>)> = Vec::new();
        let mut last: Option<usize> = None;
        for d in &handled {
            let op = BatchOp::Update(row(d), d.etag.clone());
            match writes.last_mut() {
                Some((_, _, ops)) if last == Some(d.part) && ops.len() < MAX_BATCH => ops.push(op),
                _ => writes.push((Table::Objects, pks[d.part].clone(), vec![op])),
            }
            last = Some(d.part);
        }
        match self.store.batches(writes).await {
            Ok(_) => return Ok(()),
            Err(StoreError::PreconditionFailed | StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
        for d in &handled {
            match self.store.update(Table::Objects, row(d), &d.etag).await {
                Ok(_) | Err(StoreError::PreconditionFailed) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A message due now, with where it is stored.
#[derive(Debug)]
struct Due {
    /// Its object: an index into the pass's partitions.
    part: usize,
    rk: String,
    etag: Etag,
    rec: OutboxRecord,
}

async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::MessageType;
    use crate::store::sqlite::SqliteStore;
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// Records what it accepted; fails the ids it is told to, once each.
    #[derive(Debug, Default)]
    struct Scripted {
        accepted: Mutex<Vec<String>>,
        fail_once: Mutex<Vec<(String, bool)>>,
    }

    #[async_trait]
    impl Publisher for Scripted {
        async fn publish(&self, m: &Message) -> Result<(), PublishError> {
            let mut fail = self.fail_once.lock().unwrap();
            if let Some(i) = fail.iter().position(|(id, _)| *id == m.id) {
                let (_, rejected) = fail.remove(i);
                return Err(if rejected {
                    PublishError::Rejected("too large".into())
                } else {
                    PublishError::Unavailable("throttled".into())
                });
            }
            self.accepted.lock().unwrap().push(m.id.clone());
            Ok(())
        }
        fn backend(&self) -> &'static str {
            "scripted"
        }
        async fn check(&self) -> Result<(), PublishError> {
            Ok(())
        }
    }

    async fn pending(store: &dyn Store, pk: &str, seq: u32, id: &str) {
        let rec = OutboxRecord::pending(Message::sample(pk, id));
        let e = Row::from_record(pk, format!("outbox|{seq:012}|00|{id}"), &rec)
            .with_tag("rowType", ROW_OUTBOX);
        store.insert(Table::Objects, e).await.unwrap();
    }

    async fn states(store: &dyn Store, pk: &str) -> Vec<(String, String, u32)> {
        store
            .query_partition(Table::Objects, pk, Some("outbox|"))
            .await
            .unwrap()
            .into_iter()
            .map(|e| {
                let r: OutboxRecord = e.record().unwrap();
                (r.message.id, r.delivery.as_str().to_string(), r.attempts)
            })
            .collect()
    }

    /// One pass over several objects: a failure holds back only its own object's later
    /// messages (order per object), a rejected message is parked and does not hold back the
    /// next, and every outcome is written.
    #[tokio::test]
    async fn a_pass_over_several_objects_keeps_each_objects_order() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        for (pk, ids) in [
            ("a", ["a1", "a2"]),
            ("b", ["b1", "b2"]),
            ("c", ["c1", "c2"]),
        ] {
            for (i, id) in ids.iter().enumerate() {
                pending(store.as_ref(), pk, i as u32, id).await;
            }
        }
        let publisher = Arc::new(Scripted::default());
        publisher
            .fail_once
            .lock()
            .unwrap()
            .extend([("b1".to_string(), false), ("c1".to_string(), true)]);
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            max_attempts: 5,
        };
        let d = Dispatcher::new(store.clone(), publisher.clone(), policy);
        let now = Utc::now();
        let pks: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let pass = d.deliver_partitions(&pks, now).await.unwrap();
        assert_eq!(*publisher.accepted.lock().unwrap(), ["a1", "a2", "c2"]);
        assert_eq!(pass.delivered, 3);
        assert!(pass.next_due.is_some_and(|at| at > now));
        let s = |id: &str, d: &str, n: u32| (id.to_string(), d.to_string(), n);
        assert_eq!(
            states(store.as_ref(), "a").await,
            [s("a1", "delivered", 1), s("a2", "delivered", 1)]
        );
        assert_eq!(
            states(store.as_ref(), "b").await,
            [s("b1", "pending", 1), s("b2", "pending", 0)]
        );
        assert_eq!(
            states(store.as_ref(), "c").await,
            [s("c1", "dead", 1), s("c2", "delivered", 1)]
        );
        // Not before its backoff; then in order.
        let pass = d.deliver_partitions(&pks, now).await.unwrap();
        assert_eq!(pass.delivered, 0);
        let later = now + chrono::Duration::hours(1);
        let pass = d.deliver_all(later).await.unwrap();
        assert_eq!(pass.delivered, 2);
        assert_eq!(
            *publisher.accepted.lock().unwrap(),
            ["a1", "a2", "c2", "b1", "b2"]
        );
        assert_eq!(
            states(store.as_ref(), "b").await,
            [s("b1", "delivered", 2), s("b2", "delivered", 1)]
        );
    }

    /// An incident's failure and recovery settled in one pass (both waited for a publisher
    /// that was down, say): its group opens and resolves once, each message names it, and
    /// the index rows name the incident once (Table Storage refuses a batch naming a row
    /// twice; the store checks that on every write in tests).
    #[tokio::test]
    async fn a_failure_and_its_recovery_settle_together() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        for (seq, kind) in [
            (0, MessageType::ApplyFailed),
            (1, MessageType::ApplyRecovered),
        ] {
            let mut m = Message::sample("a", &format!("m{seq}"));
            m.kind = kind;
            m.incident_id = Some("inc-1".into());
            m.sha = Some("a".repeat(40));
            m.opened_at = Some(m.time);
            let rec = OutboxRecord::pending(m);
            let row = Row::from_record("a", format!("outbox|{seq:012}|00|m{seq}"), &rec)
                .with_tag("rowType", ROW_OUTBOX);
            store.insert(Table::Objects, row).await.unwrap();
        }
        let publisher = Arc::new(Scripted::default());
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            max_attempts: 5,
        };
        let d = Dispatcher::new(store.clone(), publisher.clone(), policy);
        let pass = d
            .deliver_partitions(&["a".to_string()], Utc::now())
            .await
            .unwrap();
        assert_eq!(
            pass.delivered, 4,
            "two group messages, then the object's two"
        );
        let accepted = publisher.accepted.lock().unwrap().clone();
        assert_eq!(&accepted[2..], ["m0", "m1"]);
        let rows = store
            .query_partition(Table::Audit, "incidents|c", None)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert!(
            rows[0].props["resolvedAt"].is_string(),
            "{:?}",
            rows[0].props
        );
        let index = |pk| store.query_partition(Table::Audit, pk, None);
        assert_eq!(index(groups::OPEN_INDEX).await.unwrap().len(), 0);
        assert_eq!(index(groups::RESOLVED_INDEX).await.unwrap().len(), 1);
    }

    /// A backlog of two objects' failures and recoveries of one commit (say, after a
    /// restart): one group that opens once and resolves once, not one per object.
    #[tokio::test]
    async fn a_backlog_groups_what_was_open_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        for pk in ["a", "b"] {
            for (seq, kind) in [
                (0, MessageType::ApplyFailed),
                (1, MessageType::ApplyRecovered),
            ] {
                let mut m = Message::sample(pk, &format!("{pk}{seq}"));
                m.kind = kind;
                m.incident_id = Some(format!("inc-{pk}"));
                m.sha = Some("a".repeat(40));
                m.opened_at = Some(m.time);
                let rec = OutboxRecord::pending(m);
                let row = Row::from_record(pk, format!("outbox|{seq:012}|00|{pk}{seq}"), &rec)
                    .with_tag("rowType", ROW_OUTBOX);
                store.insert(Table::Objects, row).await.unwrap();
            }
        }
        let publisher = Arc::new(Scripted::default());
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            max_attempts: 5,
        };
        let d = Dispatcher::new(store.clone(), publisher.clone(), policy);
        let pass = d.deliver_all(Utc::now()).await.unwrap();
        assert_eq!(
            pass.delivered, 6,
            "one group's two messages and the objects' four"
        );
        let index = |pk| store.query_partition(Table::Audit, pk, None);
        assert_eq!(index(groups::RESOLVED_INDEX).await.unwrap().len(), 1);
        assert_eq!(index(groups::OPEN_INDEX).await.unwrap().len(), 0);
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_a_cap() {
        let p = RetryPolicy {
            base: Duration::from_secs(1),
            max_attempts: 12,
        };
        for attempts in 1..=12u32 {
            let d = p.backoff(attempts, "m1");
            let exp = Duration::from_secs(1 << (attempts - 1)).min(MAX_BACKOFF);
            assert!(d >= exp && d <= exp.mul_f64(1.5), "{attempts}: {d:?}");
        }
        assert_ne!(
            p.backoff(3, "a"),
            p.backoff(3, "b"),
            "jitter spreads messages"
        );
        assert_eq!(p.backoff(3, "a"), p.backoff(3, "a"));
    }
}
