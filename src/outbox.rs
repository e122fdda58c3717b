//! The outbox dispatcher: delivers messages that state changes wrote into their objects'
//! outboxes (in the same atomic batch) to the publisher, in order per object, at least once.
//!
//! Woken per partition right after a commit; a periodic scan catches whatever a full queue,
//! a failed publish or a crash left behind. A message is marked `delivered` only after the
//! publisher accepted it; publishers make a second hand-over of the same id harmless.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::ledger::records::{OutboxRecord, ROW_OUTBOX};
use crate::publish::Publisher;
use crate::store::{Entity, Store, StoreError, Table};

/// How often undelivered messages are looked for without a wake-up.
const SCAN_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    publisher: Arc<dyn Publisher>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, publisher: Arc<dyn Publisher>) -> Self {
        Dispatcher { store, publisher }
    }

    /// Runs until `wake` closes: delivers woken partitions, and scans periodically.
    pub fn spawn(self, mut wake: mpsc::Receiver<String>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut scan = tokio::time::interval(SCAN_INTERVAL);
            loop {
                tokio::select! {
                    pk = wake.recv() => match pk {
                        Some(pk) => {
                            if let Err(e) = self.deliver_partition(&pk).await {
                                tracing::warn!(error = %e, "outbox delivery failed; will retry");
                            }
                        }
                        None => break,
                    },
                    _ = scan.tick() => {
                        if let Err(e) = self.deliver_all().await {
                            tracing::warn!(error = %e, "outbox scan failed; will retry");
                        }
                    }
                }
            }
        })
    }

    /// Delivers every pending message of every object. Returns how many were delivered.
    pub async fn deliver_all(&self) -> Result<usize, StoreError> {
        let pending = self
            .store
            .query_where(Table::Objects, "delivery", "pending")
            .await?;
        let partitions: BTreeSet<String> = pending.into_iter().map(|e| e.pk).collect();
        let mut n = 0;
        for pk in partitions {
            n += self.deliver_partition(&pk).await?;
        }
        Ok(n)
    }

    /// Delivers one object's pending messages in order; stops at the first failure so a
    /// later message never overtakes an earlier one.
    pub async fn deliver_partition(&self, pk: &str) -> Result<usize, StoreError> {
        let rows = self
            .store
            .query_partition(Table::Objects, pk, Some("outbox|"))
            .await?;
        let mut delivered = 0;
        for row in rows {
            let mut rec: OutboxRecord = row.record()?;
            if rec.delivery != "pending" {
                continue;
            }
            let result = self.publisher.publish(&rec.message).await;
            rec.attempts += 1;
            let ok = result.is_ok();
            if let Err(e) = &result {
                tracing::warn!(id = %rec.message.id, attempts = rec.attempts, error = %e, "message not delivered yet");
            } else {
                rec.delivery = "delivered".into();
                rec.delivered_at = Some(Utc::now());
                delivered += 1;
            }
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
            if !ok {
                break;
            }
        }
        Ok(delivered)
    }
}
