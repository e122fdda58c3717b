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
//! `FLUXTRAIL_PUBLISH_MAX_ATTEMPTS` a message is parked as `dead`: kept, listed by
//! `GET /api/outbox?delivery=dead`, re-driven by `POST /api/outbox/redrive` (or the sweep).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ledger::records::{OutboxRecord, ROW_OUTBOX};
use crate::publish::{PublishError, Publisher};
use crate::store::{Entity, Store, StoreError, Table};

/// How often undelivered messages are looked for without a wake-up.
const SCAN_INTERVAL: Duration = Duration::from_secs(30);
/// The longest wait between two attempts of one message.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

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
            let mut scan = tokio::time::interval(SCAN_INTERVAL);
            let mut due: Option<tokio::time::Instant> = None;
            loop {
                let pass = tokio::select! {
                    pk = wake.recv() => match pk {
                        Some(pk) => self.deliver_partition(&pk, Utc::now()).await,
                        None => break,
                    },
                    _ = scan.tick() => self.deliver_all(Utc::now()).await,
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
        let partitions: BTreeSet<String> = self
            .store
            .partitions_where(Table::Objects, "delivery", "pending")
            .await?
            .into_iter()
            .collect();
        let mut pass = Pass::default();
        for pk in partitions {
            pass.add(self.deliver_partition(&pk, now).await?);
        }
        Ok(pass)
    }

    /// Delivers one object's due messages in order; stops at the first that cannot go yet, so
    /// a later message never overtakes an earlier one.
    pub async fn deliver_partition(
        &self,
        pk: &str,
        now: DateTime<Utc>,
    ) -> Result<Pass, StoreError> {
        let rows = self
            .store
            .query_partition(Table::Objects, pk, Some("outbox|"))
            .await?;
        let mut pass = Pass::default();
        for row in rows {
            let mut rec: OutboxRecord = row.record()?;
            if rec.delivery != "pending" {
                continue;
            }
            if let Some(at) = rec.next_attempt_at.filter(|at| *at > now) {
                pass.next_due = Some(at);
                break;
            }
            let result = self.publisher.publish(&rec.message).await;
            rec.attempts += 1;
            let delivered = match result {
                Ok(()) => {
                    rec.delivery = "delivered".into();
                    rec.delivered_at = Some(now);
                    rec.next_attempt_at = None;
                    rec.last_error = None;
                    pass.delivered += 1;
                    true
                }
                Err(e) => {
                    rec.last_error = Some(e.to_string());
                    let give_up = matches!(e, PublishError::Rejected(_))
                        || rec.attempts >= self.policy.max_attempts;
                    if give_up {
                        rec.delivery = "dead".into();
                        rec.next_attempt_at = None;
                        tracing::error!(id = %rec.message.id, attempts = rec.attempts, error = %e, "message parked as dead; re-drive with POST /api/outbox/redrive");
                    } else {
                        let at = now
                            + chrono::Duration::from_std(
                                self.policy.backoff(rec.attempts, &rec.message.id),
                            )
                            .unwrap_or_default();
                        rec.next_attempt_at = Some(at);
                        pass.next_due = Some(at);
                        tracing::warn!(id = %rec.message.id, attempts = rec.attempts, error = %e, retry_at = %at, "message not delivered yet");
                    }
                    false
                }
            };
            let entity = Entity::from_record(pk, &row.rk, &rec)
                .with_tag("rowType", ROW_OUTBOX)
                .with_tag("delivery", &rec.delivery);
            match self
                .store
                .update(Table::Objects, entity, row.etag.as_ref().expect("etag"))
                .await
            {
                // Someone else (another instance, a sweep) handled it meanwhile.
                Ok(_) | Err(StoreError::PreconditionFailed) => {}
                Err(e) => return Err(e),
            }
            if !delivered && rec.delivery == "pending" {
                break;
            }
        }
        Ok(pass)
    }
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
