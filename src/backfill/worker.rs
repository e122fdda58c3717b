//! The backfill worker: claims due items host by host, asks the host, records the answer,
//! and reschedules what failed — driven by its own loop in every instance and by the sweep.
//! Never in a request's path: ingest only queues (`ledger::backfill`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;

use super::{ApiError, HostApi, HostConfig, Item, RateSnapshot};
use crate::domain::CommitSha;
use crate::ledger::backfill::{Claim, ItemState};
use crate::ledger::Ledger;
use crate::store::StoreError;

/// How long a claim holds an item (a crashed instance's items are taken over after it).
const LEASE: chrono::Duration = chrono::Duration::minutes(2);
/// Items claimed per host in one pass (one batch), and asked about at once.
const PER_PASS: usize = 32;
const CONCURRENCY: usize = 4;
/// The first retry's wait; it doubles per failed attempt, up to `retry_max`.
const RETRY_BASE: Duration = Duration::from_secs(5);
/// The longest the worker sleeps with nothing due (other instances queue items too).
const IDLE: Duration = Duration::from_secs(30);

pub struct Backfill {
    ledger: Ledger,
    hosts: Vec<(HostConfig, HostApi)>,
    retry_max: Duration,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassReport {
    pub done: usize,
    pub failed: usize,
    pub retried: usize,
    /// When something is due next (`None`: nothing queued here).
    #[serde(skip)]
    pub next: Option<DateTime<Utc>>,
}

impl PassReport {
    fn add(&mut self, other: PassReport) {
        self.done += other.done;
        self.failed += other.failed;
        self.retried += other.retried;
        self.next = match (self.next, other.next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    pub fn worked(&self) -> usize {
        self.done + self.failed + self.retried
    }
}

enum Outcome {
    Done(String),
    Failed(String),
    Retry {
        at: DateTime<Utc>,
        attempted: bool,
        error: String,
    },
}

impl std::fmt::Debug for Backfill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backfill")
            .field(
                "hosts",
                &self.hosts.iter().map(|(c, _)| c).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Backfill {
    pub fn new(
        ledger: Ledger,
        configs: &[HostConfig],
        timeout: Duration,
        retry_max: Duration,
    ) -> Self {
        Backfill {
            ledger,
            hosts: configs
                .iter()
                .map(|c| (c.clone(), HostApi::new(c, timeout)))
                .collect(),
            retry_max,
        }
    }

    /// Each host's rate-limit state (`/api/health`).
    pub fn rate_limits(&self) -> Vec<RateSnapshot> {
        self.hosts
            .iter()
            .map(|(_, api)| api.client().snapshot())
            .collect()
    }

    /// Runs until the task is dropped: a pass whenever something is due, woken early by this
    /// process's notices.
    pub async fn run(self: Arc<Self>) {
        let wake = self
            .ledger
            .backfill_notices()
            .map(|n| n.wake.clone())
            .unwrap_or_default();
        loop {
            let now = Utc::now();
            let sleep = match self.pass(now).await {
                Ok(r) if r.worked() > 0 => Duration::ZERO,
                Ok(r) => r
                    .next
                    .map(|n| (n - now).to_std().unwrap_or_default())
                    .unwrap_or(IDLE)
                    .clamp(Duration::from_millis(50), IDLE),
                Err(e) => {
                    tracing::warn!(error = %e, "backfill pass failed; retried");
                    Duration::from_secs(5)
                }
            };
            if !sleep.is_zero() {
                let _ = tokio::time::timeout(sleep, wake.notified()).await;
            }
        }
    }

    /// Passes until nothing more is due or `budget` is spent (the sweep's share).
    pub async fn drain(&self, budget: Duration) -> Result<PassReport, StoreError> {
        let start = std::time::Instant::now();
        let mut total = PassReport::default();
        loop {
            let r = self.pass(Utc::now()).await?;
            total.add(r);
            if r.worked() == 0 || start.elapsed() >= budget {
                return Ok(total);
            }
        }
    }

    /// One pass over every host that its rate limit lets through.
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<PassReport, StoreError> {
        let mut report = PassReport::default();
        for (config, api) in &self.hosts {
            if let Some(until) = api.client().blocked_until(now) {
                report.add(PassReport {
                    next: Some(until),
                    ..Default::default()
                });
                continue;
            }
            let due = self.ledger.due(&config.serves, now, PER_PASS).await?;
            let free = due
                .into_iter()
                .filter(|(_, _, d)| d.lease_until.is_none_or(|l| l <= now))
                .collect();
            let claims = self.ledger.claim_all(free, now + LEASE).await?;
            if claims.is_empty() {
                report.add(PassReport {
                    next: self.ledger.next_due(&config.serves).await?,
                    ..Default::default()
                });
                continue;
            }
            let results: Vec<Result<PassReport, StoreError>> = futures::stream::iter(claims)
                .map(|c| self.work(config, api, c))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for r in results {
                report.add(r?);
            }
        }
        Ok(report)
    }

    async fn work(
        &self,
        config: &HostConfig,
        api: &HostApi,
        claim: Claim,
    ) -> Result<PassReport, StoreError> {
        let now = Utc::now();
        let outcome = match self.fill(config, api, &claim.due.item, now).await? {
            Ok(done) => Outcome::Done(done),
            Err(ApiError::NotFound(why)) => Outcome::Failed(why),
            Err(e @ ApiError::RateLimited { until }) => Outcome::Retry {
                at: until,
                attempted: false,
                error: e.to_string(),
            },
            Err(e) => Outcome::Retry {
                at: now + self.backoff(claim.due.attempts, now),
                attempted: true,
                error: e.to_string(),
            },
        };
        let mut r = PassReport::default();
        match outcome {
            Outcome::Done(what) => {
                tracing::info!(item = %claim.due.item.id(), outcome = %what, "backfilled");
                self.ledger
                    .finish(&claim, ItemState::Done, what, now)
                    .await?;
                r.done = 1;
            }
            Outcome::Failed(why) => {
                tracing::warn!(item = %claim.due.item.id(), reason = %why, "backfill: the host does not know it");
                self.ledger
                    .finish(&claim, ItemState::Failed, why, now)
                    .await?;
                r.failed = 1;
            }
            Outcome::Retry {
                at,
                attempted,
                error,
            } => {
                tracing::info!(item = %claim.due.item.id(), %error, retry_at = %at, "backfill: retried later");
                self.ledger.reschedule(&claim, at, attempted, error).await?;
                r.retried = 1;
                r.next = Some(at);
            }
        }
        Ok(r)
    }

    /// 5 s doubling per attempt, up to `retry_max`, with ±10% jitter (instances that failed
    /// together do not retry together).
    fn backoff(&self, attempts: u32, now: DateTime<Utc>) -> chrono::Duration {
        let base = RETRY_BASE
            .saturating_mul(1 << attempts.min(16))
            .min(self.retry_max);
        let jitter = (now.timestamp_subsec_nanos() % 200) as f64 / 1000.0 - 0.1;
        chrono::Duration::from_std(base.mul_f64(1.0 + jitter)).unwrap_or_default()
    }

    /// Asks the host and records the answer. The outer error is the store's (the claim's
    /// lease runs out and the item is tried again); the inner one is the host's.
    async fn fill(
        &self,
        config: &HostConfig,
        api: &HostApi,
        item: &Item,
        now: DateTime<Utc>,
    ) -> Result<Result<String, ApiError>, StoreError> {
        if !self.ledger.still_missing(item).await? {
            return Ok(Ok("already recorded (a webhook arrived)".into()));
        }
        let provider = config.kind.provider();
        let sha = |s: &str| {
            CommitSha::parse(s).map_err(|e| ApiError::NotFound(format!("{s:?} is no commit: {e}")))
        };
        let repo = item.repository();
        let repository = match super::repository(repo, None) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match item {
            Item::Commit {
                git_ref, sha: s, ..
            } => {
                let wanted = match sha(s) {
                    Ok(w) => w,
                    Err(e) => return Ok(Err(e)),
                };
                match api.commit(repo, &wanted).await {
                    Ok(c) if c.sha != wanted => Err(ApiError::Malformed(format!(
                        "asked for {wanted}, the host answered {}",
                        c.sha
                    ))),
                    Ok(c) => {
                        self.ledger
                            .fill_commit(provider, &repository, git_ref.as_deref(), c, now)
                            .await?;
                        Ok("commit recorded".into())
                    }
                    Err(e) => Err(e),
                }
            }
            Item::Approval { sha: s, .. } => {
                let wanted = match sha(s) {
                    Ok(w) => w,
                    Err(e) => return Ok(Err(e)),
                };
                match api.pull_request(repo, &wanted).await {
                    Ok(Some(pr)) => {
                        let n = pr.number;
                        self.ledger.fill_approval(provider, pr, now).await?;
                        Ok(format!("pull request #{n} recorded"))
                    }
                    Ok(None) => Ok("no merged pull request contains it".into()),
                    Err(e) => Err(e),
                }
            }
            Item::Gap {
                git_ref,
                base,
                head,
                ..
            } => {
                let (base, head) = match (sha(base), sha(head)) {
                    (Ok(b), Ok(h)) => (b, h),
                    (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
                };
                match api.compare(repo, &base, &head).await {
                    Ok(commits) => {
                        let n = commits.len();
                        self.ledger
                            .fill_gap(provider, repository, git_ref, base, head, commits, now)
                            .await?;
                        Ok(format!("{n} commits recorded"))
                    }
                    Err(e) => Err(e),
                }
            }
        })
    }
}
