//! Part 9, the numbered cases of "many instances and injected faults" at the ledger: two
//! `Ledger`s (two instances: each its own caches) over one store whose `batches` are not one
//! transaction (as on Table Storage: each batch lands on its own, a failure stops the rest),
//! with faults scripted per write — refused before it lands, refused after it landed (the
//! response lost), or held until released (a slow request). Each case is exact and
//! deterministic here; `scaleout.rs` runs the same over HTTP on Azurite behind a faulty proxy.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use fluxtrail::domain::CommitSha;
use fluxtrail::flux::FluxEvent;
use fluxtrail::git::{self, Delivery, GitEvent, Provider};
use fluxtrail::ledger::{Ledger, Recorded};
use fluxtrail::outbox::{Dispatcher, RetryPolicy};
use fluxtrail::publish::local::LocalSink;
use fluxtrail::store::sqlite::SqliteStore;
use fluxtrail::store::{BatchOp, Entity, Etag, Row, Store, StoreError, Table};
use fluxtrail::sweep::{sweep, SweepSettings};
use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::helpers::flux_event;

/// One write as the store sees it.
#[derive(Debug, Clone)]
pub struct Op {
    pub table: Table,
    pub pk: String,
    pub rks: Vec<String>,
}

/// What a rule does to a write.
pub enum Fault {
    Pass,
    /// Refused before it lands (a 503).
    Refuse,
    /// It lands, and the answer is lost (a 503 after the write, a dropped response).
    Lose,
    /// Held until the notify is released; `reached` is notified when it gets there.
    Hold {
        reached: Arc<Notify>,
        release: Arc<Notify>,
    },
}

type Rule = Box<dyn FnMut(&Op) -> Fault + Send>;

/// A store whose `batches` run one batch after the other (Table Storage's behaviour), with
/// scripted faults per write.
pub struct Scripted {
    inner: Arc<dyn Store>,
    rules: Mutex<Vec<Rule>>,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scripted")
    }
}

impl Scripted {
    pub fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Scripted {
            inner,
            rules: Mutex::new(vec![]),
        })
    }

    /// Adds a rule: the first rule that does not `Pass` decides.
    pub fn rule(&self, r: impl FnMut(&Op) -> Fault + Send + 'static) {
        self.rules.lock().unwrap().push(Box::new(r));
    }

    async fn write<T, F>(&self, op: Op, f: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        let fault = {
            let mut rules = self.rules.lock().unwrap();
            rules
                .iter_mut()
                .map(|r| r(&op))
                .find(|f| !matches!(f, Fault::Pass))
                .unwrap_or(Fault::Pass)
        };
        match fault {
            Fault::Pass => f.await,
            Fault::Refuse => Err(StoreError::Unavailable("injected: refused".into())),
            Fault::Lose => {
                f.await?;
                Err(StoreError::Unavailable("injected: answer lost".into()))
            }
            Fault::Hold { reached, release } => {
                reached.notify_one();
                release.notified().await;
                f.await
            }
        }
    }
}

fn op(table: Table, pk: &str, rks: Vec<String>) -> Op {
    Op {
        table,
        pk: pk.to_string(),
        rks,
    }
}

#[async_trait]
impl Store for Scripted {
    async fn get(&self, t: Table, pk: &str, rk: &str) -> Result<Option<Entity>, StoreError> {
        self.inner.get(t, pk, rk).await
    }
    async fn insert(&self, t: Table, e: Row) -> Result<Etag, StoreError> {
        let o = op(t, &e.pk, vec![e.rk.clone()]);
        self.write(o, self.inner.insert(t, e)).await
    }
    async fn update(&self, t: Table, e: Row, etag: &Etag) -> Result<Etag, StoreError> {
        let o = op(t, &e.pk, vec![e.rk.clone()]);
        self.write(o, self.inner.update(t, e, etag)).await
    }
    async fn upsert(&self, t: Table, e: Row) -> Result<Etag, StoreError> {
        let o = op(t, &e.pk, vec![e.rk.clone()]);
        self.write(o, self.inner.upsert(t, e)).await
    }
    async fn batch(&self, t: Table, pk: &str, ops: Vec<BatchOp>) -> Result<Vec<Etag>, StoreError> {
        let rks = ops
            .iter()
            .map(|o| match o {
                BatchOp::Insert(r) | BatchOp::Upsert(r) | BatchOp::Update(r, _) => r.rk.clone(),
                BatchOp::Delete { rk, .. } => rk.clone(),
            })
            .collect();
        self.write(op(t, pk, rks), self.inner.batch(t, pk, ops))
            .await
    }
    async fn query_partition(
        &self,
        t: Table,
        pk: &str,
        p: Option<&str>,
    ) -> Result<Vec<Entity>, StoreError> {
        self.inner.query_partition(t, pk, p).await
    }
    async fn query_where(&self, t: Table, prop: &str, v: &str) -> Result<Vec<Entity>, StoreError> {
        self.inner.query_where(t, prop, v).await
    }
    async fn query_range(
        &self,
        t: Table,
        pk: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<Entity>, StoreError> {
        self.inner.query_range(t, pk, from, to, limit).await
    }
    async fn query_pk_prefix(
        &self,
        t: Table,
        p: &str,
        rk: &str,
    ) -> Result<Vec<Entity>, StoreError> {
        self.inner.query_pk_prefix(t, p, rk).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    fn backend(&self) -> &'static str {
        "scripted"
    }
}

/// A rule that applies `fault` once, to the first write matching `when`.
pub fn once(
    when: impl Fn(&Op) -> bool + Send + 'static,
    fault: impl FnOnce() -> Fault + Send + 'static,
) -> impl FnMut(&Op) -> Fault + Send + 'static {
    let mut fault = Some(fault);
    move |o| match when(o) {
        true => fault.take().map_or(Fault::Pass, |f| f()),
        false => Fault::Pass,
    }
}

/// Holds the first write matching `when` until `release` is notified; `reached` is notified
/// when it gets there.
pub fn hold_once(
    store: &Scripted,
    when: impl Fn(&Op) -> bool + Send + 'static,
) -> (Arc<Notify>, Arc<Notify>) {
    let (reached, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (r, rel) = (reached.clone(), release.clone());
    store.rule(once(when, move || Fault::Hold {
        reached: r,
        release: rel,
    }));
    (reached, release)
}

// ---- the world of the cases -------------------------------------------------------------

/// Commit `n` of the stories.
pub fn c(n: u32) -> String {
    format!("5ca1e0{n:034x}")
}

pub fn at(s: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-02T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::seconds(s)
}

/// The server's clock in the cases (a push's receipt), an hour before the cluster's.
fn server(s: i64) -> DateTime<Utc> {
    at(s) - Duration::hours(1)
}

/// A GitHub push body of commits `n` (oldest first) to `git_ref` of `repo` (`owner/name`).
pub fn push_body(
    repo: &str,
    git_ref: &str,
    before: Option<u32>,
    commits: &[u32],
    forced: bool,
) -> Vec<u8> {
    let commits: Vec<(u32, String)> = commits.iter().map(|n| (*n, c(*n))).collect();
    crate::helpers::github_push(Some(repo), git_ref, before.map(c), &commits, forced)
}

fn github(body: &[u8], delivery: &str) -> (String, GitEvent) {
    let mut map = HeaderMap::new();
    for (k, v) in [("X-GitHub-Event", "push"), ("X-GitHub-Delivery", delivery)] {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let parsed = git::parse(
        Provider::GitHub,
        &Delivery {
            headers: &map,
            body,
            form: false,
        },
    )
    .unwrap();
    (parsed.delivery_id, parsed.event)
}

async fn push(l: &Ledger, git_ref: &str, before: Option<u32>, commits: &[u32], s: i64) {
    let body = push_body("acme/fleet", git_ref, before, commits, false);
    let (id, ev) = github(&body, &format!("{git_ref}-{before:?}-{commits:?}"));
    l.record_git(Provider::GitHub, &id, &ev, server(s))
        .await
        .unwrap();
}

/// A Kustomization `apps` event on prod-eu about commit `n` of `branch`.
pub fn kustomization(reason: &str, branch: &str, n: u32, t: DateTime<Utc>) -> Value {
    let severity = if reason.ends_with("Failed") {
        "error"
    } else {
        "info"
    };
    serde_json::from_slice(&flux_event("kustomization-succeeded.json", |v| {
        v["reason"] = json!(reason);
        v["severity"] = json!(severity);
        v["message"] = json!(format!("{reason} at {}", c(n)));
        v["timestamp"] = json!(t.to_rfc3339_opts(SecondsFormat::Secs, true));
        v["metadata"]["revision"] = json!(format!("{branch}@sha1:{}", c(n)));
    }))
    .unwrap()
}

fn event(v: &Value) -> FluxEvent {
    fluxtrail::flux::parse(&serde_json::to_vec(v).unwrap(), Some("prod-eu"), "d", at(0)).unwrap()
}

fn applied(n: u32, s: i64) -> FluxEvent {
    event(&kustomization("ReconciliationSucceeded", "main", n, at(s)))
}

fn failed(n: u32, s: i64) -> FluxEvent {
    event(&kustomization("ReconciliationFailed", "main", n, at(s)))
}

const APPS: &str = "prod-eu|Kustomization|flux-system|apps";

/// The state of commit `n` on prod-eu's `apps`.
async fn state(l: &Ledger, n: u32) -> Option<String> {
    let ev = l
        .evidence(&CommitSha::parse(&c(n)).unwrap())
        .await
        .unwrap()?;
    let ev = serde_json::to_value(ev).unwrap();
    ev["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "apps")
        .map(|t| t["state"].as_str().unwrap().to_string())
}

/// The types of the object's outbox messages, in the order they are delivered (row key).
async fn outbox(l: &Ledger) -> Vec<String> {
    l.store()
        .query_partition(Table::Objects, APPS, Some("outbox|"))
        .await
        .unwrap()
        .iter()
        .map(|e| {
            e.props["message"]["type"]
                .as_str()
                .unwrap()
                .trim_start_matches("io.fluxtrail.")
                .to_string()
        })
        .collect()
}

fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    (dir, store)
}

async fn sweep_at(l: &Ledger, now: DateTime<Utc>) {
    let dir = tempfile::tempdir().unwrap();
    let sink = LocalSink::open(&dir.path().join("m.jsonl")).unwrap();
    let d = Dispatcher::new(
        l.store().clone(),
        Arc::new(sink),
        RetryPolicy {
            base: std::time::Duration::from_secs(1),
            max_attempts: 3,
        },
    );
    let settings = SweepSettings {
        stall_after: std::time::Duration::from_secs(600),
        retain_deliveries: std::time::Duration::from_secs(86400 * 7),
        retain_history: std::time::Duration::from_secs(86400 * 90),
    };
    sweep(l, &d, settings, now).await.unwrap();
}

/// Case 1: instance A looked a commit up (a GitRepository event) and remembers it missing;
/// the push lands on B; the apply of that commit reaches A at once. What it skipped is
/// superseded, as with one instance.
#[tokio::test]
async fn a_commit_missing_on_one_instance_is_found_after_another_recorded_it() {
    let (_d, store) = sqlite();
    let (a, b) = (Ledger::new(store.clone()), Ledger::new(store));
    push(&b, "refs/heads/main", None, &[1], 0).await;
    a.record_flux(&applied(1, 10), server(10)).await.unwrap();
    let source = event(
        &serde_json::from_slice::<Value>(&flux_event("gitrepository-new-artifact.json", |v| {
            v["timestamp"] = json!(at(20).to_rfc3339());
            v["metadata"]["revision"] = json!(format!("main@sha1:{}", c(3)));
        }))
        .unwrap(),
    );
    a.record_flux(&source, server(20)).await.unwrap();
    push(&b, "refs/heads/main", Some(1), &[2, 3], 21).await;
    assert_eq!(state(&a, 2).await.as_deref(), Some("pending"));
    a.record_flux(&applied(3, 22), server(22)).await.unwrap();
    assert_eq!(state(&a, 3).await.as_deref(), Some("applied"));
    assert_eq!(state(&a, 2).await.as_deref(), Some("superseded"));
}

/// Case 2: the follows row of an object's first event is refused; Flux's identical retry is
/// a duplicate. The object still follows main: a later push expects its commit there.
#[tokio::test]
async fn a_follows_row_refused_on_the_first_event_is_written_by_its_retry() {
    let (_d, inner) = sqlite();
    let store = Scripted::new(inner);
    store.rule(once(|o| o.table == Table::Follows, || Fault::Refuse));
    let l = Ledger::new(store.clone());
    push(&l, "refs/heads/main", None, &[1], 0).await;
    assert!(l.record_flux(&applied(1, 10), server(10)).await.is_err());
    assert!(l.record_flux(&applied(1, 10), server(11)).await.is_ok());
    push(&l, "refs/heads/main", Some(1), &[2], 20).await;
    assert_eq!(state(&l, 2).await.as_deref(), Some("pending"));
}

/// Case 2, the push side: an object that reported a release commit before its push starts
/// following release when the push arrives; that follows row is refused, the push delivery
/// retried. Release's next push expects its commit on the object.
#[tokio::test]
async fn a_follows_row_refused_on_a_push_is_written_by_the_push_retry() {
    let (_d, inner) = sqlite();
    let store = Scripted::new(inner);
    let l = Ledger::new(store.clone());
    push(&l, "refs/heads/main", None, &[1], 0).await;
    l.record_flux(&applied(1, 10), server(10)).await.unwrap();
    let release = event(&kustomization(
        "ReconciliationSucceeded",
        "release",
        5,
        at(20),
    ));
    l.record_flux(&release, server(20)).await.unwrap();
    store.rule(once(|o| o.table == Table::Follows, || Fault::Refuse));
    let body = push_body("acme/fleet", "refs/heads/release", None, &[5], false);
    let (id, ev) = github(&body, "release-5");
    assert!(l
        .record_git(Provider::GitHub, &id, &ev, server(21))
        .await
        .is_err());
    l.record_git(Provider::GitHub, &id, &ev, server(22))
        .await
        .unwrap();
    push(&l, "refs/heads/release", Some(5), &[6], 30).await;
    assert_eq!(state(&l, 6).await.as_deref(), Some("pending"));
}

/// Case 3: A's target write for `failed X` is held while B processes `applied X` (later by
/// the cluster's clock); then A's write lands. The row is applied (and remembers the
/// failure), as with one instance.
#[tokio::test]
async fn a_slow_target_write_does_not_undo_a_later_apply() {
    let (_d, inner) = sqlite();
    let slow = Scripted::new(inner.clone());
    let (a, b) = (Ledger::new(slow.clone()), Ledger::new(inner));
    push(&b, "refs/heads/main", None, &[1], 0).await;
    a.record_flux(&applied(1, 10), server(10)).await.unwrap();
    push(&b, "refs/heads/main", Some(1), &[2], 20).await;
    // A wrote c2's row last: it remembers it, and writes it next without reading it.
    let progressing = event(&kustomization("Progressing", "main", 2, at(25)));
    a.record_flux(&progressing, server(25)).await.unwrap();
    let sha = c(2);
    let (reached, release) = hold_once(&slow, move |o| o.table == Table::Commits && o.pk == sha);
    let a_failed = tokio::spawn({
        let a = a.clone();
        async move { a.record_flux(&failed(2, 30), server(30)).await }
    });
    reached.notified().await;
    b.record_flux(&applied(2, 40), server(40)).await.unwrap();
    release.notify_one();
    a_failed.await.unwrap().unwrap();
    assert_eq!(state(&a, 2).await.as_deref(), Some("applied"));
    let ev = a
        .evidence(&CommitSha::parse(&c(2)).unwrap())
        .await
        .unwrap()
        .unwrap();
    let ev = serde_json::to_value(ev).unwrap();
    let t = &ev["targets"][0];
    assert!(t["lastFailedAt"].is_string(), "{t}");
    let objects = a.objects(None).await.unwrap();
    assert_eq!(
        serde_json::to_value(objects[0].status).unwrap(),
        json!("ready")
    );
}

/// Case 4: an apply's state is written, its target row refused (its retry is on the way);
/// the sweep runs in between. The commit was applied: nothing stalls — and the sweep
/// finishes the row the apply left.
#[tokio::test]
async fn the_sweep_does_not_stall_a_commit_whose_apply_is_half_written() {
    let (_d, inner) = sqlite();
    let store = Scripted::new(inner);
    let l = Ledger::new(store.clone());
    push(&l, "refs/heads/main", None, &[1], 0).await;
    l.record_flux(&applied(1, 10), server(10)).await.unwrap();
    push(&l, "refs/heads/main", Some(1), &[2], 20).await;
    let sha = c(2);
    store.rule(once(
        move |o| o.table == Table::Commits && o.pk == sha,
        || Fault::Refuse,
    ));
    assert!(l.record_flux(&applied(2, 30), server(30)).await.is_err());
    sweep_at(&l, server(20) + Duration::hours(2)).await;
    assert_eq!(outbox(&l).await, Vec::<String>::new());
    assert_eq!(state(&l, 2).await.as_deref(), Some("applied"));
    assert_eq!(
        l.record_flux(&applied(2, 30), server(31)).await.unwrap(),
        Recorded::Duplicate
    );
    assert_eq!(state(&l, 2).await.as_deref(), Some("applied"));
}

/// Case 5: a stall announced while the publisher is down is queued before a failure the
/// object reports later: delivered in the order they happened.
#[tokio::test]
async fn a_stall_is_delivered_before_a_later_failure() {
    let (_d, store) = sqlite();
    let l = Ledger::new(store);
    push(&l, "refs/heads/main", None, &[1], 0).await;
    l.record_flux(&applied(1, 10), server(10)).await.unwrap();
    push(&l, "refs/heads/main", Some(1), &[2], 20).await;
    sweep_at(&l, server(20) + Duration::hours(2)).await;
    l.record_flux(&failed(2, 7300), server(20) + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(outbox(&l).await, ["rollout.stalled", "apply.failed"]);
}

/// Case 5: the retry of an event whose first attempt wrote its messages but not its target
/// rows wakes the outbox (not left to the 30 s scan).
#[tokio::test]
async fn a_duplicate_that_finishes_an_event_wakes_the_outbox() {
    let (_d, inner) = sqlite();
    let store = Scripted::new(inner);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let l = Ledger::new(store.clone()).with_outbox(tx);
    push(&l, "refs/heads/main", None, &[1], 0).await;
    let sha = c(1);
    store.rule(once(
        move |o| o.table == Table::Commits && o.pk == sha && o.rks[0].starts_with("target|"),
        || Fault::Refuse,
    ));
    assert!(l.record_flux(&failed(1, 10), server(10)).await.is_err());
    assert!(rx.try_recv().is_err(), "nothing was acknowledged yet");
    assert_eq!(outbox(&l).await, ["apply.failed"]);
    l.record_flux(&failed(1, 10), server(11)).await.unwrap();
    assert_eq!(rx.try_recv().ok().as_deref(), Some(APPS));
    assert_eq!(state(&l, 1).await.as_deref(), Some("failed"));
}

/// An object's transaction lands and its answer is lost (a dropped response): nothing after
/// it was written. Flux's retry is a duplicate that finishes the target rows and wakes the
/// outbox; the next push expects its commit on the object.
#[tokio::test]
async fn an_event_whose_answer_was_lost_is_finished_by_its_retry() {
    let (_d, inner) = sqlite();
    let store = Scripted::new(inner);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let l = Ledger::new(store.clone()).with_outbox(tx);
    push(&l, "refs/heads/main", None, &[1], 0).await;
    store.rule(once(
        |o| o.table == Table::Objects && o.rks.iter().any(|r| r == "state"),
        || Fault::Lose,
    ));
    assert!(l.record_flux(&failed(1, 10), server(10)).await.is_err());
    assert_eq!(
        state(&l, 1).await,
        None,
        "the object's first report: no row yet"
    );
    assert_eq!(
        l.record_flux(&failed(1, 10), server(11)).await.unwrap(),
        Recorded::Duplicate
    );
    assert_eq!(state(&l, 1).await.as_deref(), Some("failed"));
    assert_eq!(rx.try_recv().ok().as_deref(), Some(APPS));
    push(&l, "refs/heads/main", Some(1), &[2], 20).await;
    assert_eq!(state(&l, 2).await.as_deref(), Some("pending"));
}

/// A GitHub push of 2,048 commits (GitHub's most) to main, commit `i`'s message `message(i)`.
fn big_push(message: impl Fn(usize) -> String) -> Value {
    let commits: Vec<u32> = (1..=2048).collect();
    let body = push_body("acme/fleet", "refs/heads/main", None, &commits, false);
    let mut p: Value = serde_json::from_slice(&body).unwrap();
    for (i, commit) in p["commits"].as_array_mut().unwrap().iter_mut().enumerate() {
        commit["message"] = json!(message(i));
    }
    p
}

/// Case 6: GitHub lists up to 2,048 commits in one push. Its journal entry (the normalised
/// delivery, ~3 MB in UTF-16 here) is over Table Storage's 1 MiB per entity: it is kept in
/// parts. The push is recorded whole, a redelivery is a duplicate, and so is a huge commit
/// message (cut, saying so).
#[tokio::test]
async fn a_push_of_2048_commits_is_recorded_whole() {
    let app = crate::helpers::spawn_app().await;
    let mut p = big_push(|i| format!("change {i}: {}", "raise the replicas ✓ ".repeat(30)));
    for (i, commit) in p["commits"].as_array_mut().unwrap().iter_mut().enumerate() {
        commit["url"] = json!(format!(
            "https://github.com/acme/fleet/commit/{}",
            c(i as u32 + 1)
        ));
    }
    p["commits"][7]["message"] = json!("😀".repeat(300_000));
    let body = serde_json::to_vec(&p).unwrap();
    assert!(body.len() > 2_000_000, "{} bytes", body.len());
    for expected in [reqwest::StatusCode::ACCEPTED, reqwest::StatusCode::OK] {
        let r = app
            .post_git(
                "github",
                &[
                    ("X-GitHub-Event", "push"),
                    ("X-GitHub-Delivery", "big-push"),
                ],
                &body,
            )
            .await;
        assert_eq!(r.status(), expected);
    }
    for n in [1, 8, 1024, 2048] {
        let (status, ev) = app.evidence(&c(n)).await;
        assert_eq!(status, reqwest::StatusCode::OK, "commit {n}");
        let message = ev["commit"]["message"].as_str().unwrap();
        assert!(message.len() <= 17 * 1024, "{}", message.len());
        if n == 8 {
            assert!(
                message.ends_with("not kept]"),
                "{}",
                &message[message.len() - 40..]
            );
        }
    }
}

/// Case 6: a journal entry kept in parts is finished from its parts by the retry of a
/// delivery whose first attempt stopped after the entry (a commit row refused).
#[tokio::test]
async fn a_large_journal_entry_is_finished_from_its_parts() {
    let (_d, inner) = sqlite();
    let store = Scripted::new(inner);
    let l = Ledger::new(store.clone());
    let p = big_push(|_| "roll out ✓ ".repeat(60));
    let (id, ev) = github(&serde_json::to_vec(&p).unwrap(), "big");
    let sha = c(1000);
    store.rule(once(
        move |o| o.table == Table::Commits && o.pk == sha,
        || Fault::Refuse,
    ));
    assert!(l
        .record_git(Provider::GitHub, &id, &ev, server(0))
        .await
        .is_err());
    let parts = l
        .store()
        .query_where(Table::Deliveries, "state", "part")
        .await
        .unwrap();
    assert!(parts.len() >= 2, "{} parts", parts.len());
    // Start-up recovery finishes it from the parts alone.
    assert_eq!(l.recover().await.unwrap(), 1);
    assert!(l
        .evidence(&CommitSha::parse(&c(1000)).unwrap())
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        l.record_git(Provider::GitHub, &id, &ev, server(1))
            .await
            .unwrap(),
        Recorded::Duplicate
    );
}

/// The audit feed of prod-eu: `{commit} {object} first={time} applied={time}` per change row.
async fn feed(l: &Ledger) -> Vec<String> {
    let q = fluxtrail::ledger::audit::ChangeQuery {
        cluster: Some("prod-eu".into()),
        namespace: None,
        repository: None,
        from: at(-86400),
        to: at(86400),
        approved: None,
    };
    let page = l.changes(&q, None, 100).await.unwrap();
    page.changes
        .iter()
        .map(|c| {
            let t = |t: Option<DateTime<Utc>>| {
                t.map_or("-".into(), |t| (t - at(0)).num_seconds().to_string())
            };
            format!(
                "c{} {} first={} applied={}",
                u32::from_str_radix(&c.row.sha[6..], 16).unwrap(),
                c.row.name,
                t(Some(c.row.time)),
                t(c.row.applied_at)
            )
        })
        .collect()
}

/// Case 7: an apply's change row lands and its target row is refused; before Flux retries
/// it, an older failure of that commit is recorded (the row's first report moves earlier).
/// The feed holds one change of the commit, as with one instance — not the refused
/// attempt's row beside it.
#[tokio::test]
async fn a_change_row_whose_target_write_was_refused_is_not_in_the_feed() {
    let (_d, inner) = sqlite();
    let store = Scripted::new(inner);
    let l = Ledger::new(store.clone());
    push(&l, "refs/heads/main", None, &[1], 0).await;
    let sha = c(1);
    store.rule(once(
        move |o| o.table == Table::Commits && o.pk == sha,
        || Fault::Refuse,
    ));
    assert!(l.record_flux(&applied(1, 30), server(30)).await.is_err());
    l.record_flux(&failed(1, 20), server(31)).await.unwrap();
    l.record_flux(&applied(1, 30), server(32)).await.unwrap();
    assert_eq!(feed(&l).await, ["c1 apps first=20 applied=30"]);
}

/// Case 7: a late older failure moves a change row's key earlier; every write to the feed's
/// partition after the target row's (the row's confirmation, the old key's delete) is
/// refused, and Flux's retry of the failure is a duplicate. The feed holds one change of
/// the commit.
#[tokio::test]
async fn a_change_row_left_under_its_old_key_is_not_in_the_feed() {
    let (_d, inner) = sqlite();
    let store = Scripted::new(inner);
    let l = Ledger::new(store.clone());
    push(&l, "refs/heads/main", None, &[1], 0).await;
    l.record_flux(&applied(1, 30), server(30)).await.unwrap();
    assert_eq!(feed(&l).await, ["c1 apps first=30 applied=30"]);
    // Written pending ahead of its target row (this store's batches land one by one), and
    // confirmed once that row landed.
    let raw = l
        .store()
        .query_partition(Table::Audit, "cluster|prod-eu", None)
        .await
        .unwrap();
    assert_eq!(raw.len(), 1);
    assert!(raw[0].props.get("pending").is_none(), "{:?}", raw[0].props);
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (sha, mut target_written, n) = (c(1), false, refused.clone());
    store.rule(move |o| {
        if o.table == Table::Commits && o.pk == sha {
            target_written = true;
        } else if target_written && o.table == Table::Audit && o.pk == "cluster|prod-eu" {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Fault::Refuse;
        }
        Fault::Pass
    });
    // What is refused comes after the commit point: the event is recorded.
    l.record_flux(&failed(1, 20), server(31)).await.unwrap();
    assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(
        l.record_flux(&failed(1, 20), server(32)).await.unwrap(),
        Recorded::Duplicate
    );
    assert_eq!(feed(&l).await, ["c1 apps first=20 applied=30"]);
}

/// Case 7: instance A's change row is held while B records an earlier success of the same
/// commit (same row key, other content); A's row lands last, A's target write is beaten and
/// its retry changes nothing. The feed says what the target row says: B's success.
#[tokio::test]
async fn a_change_row_landing_late_does_not_undo_a_later_one() {
    let (_d, inner) = sqlite();
    let slow = Scripted::new(inner.clone());
    let (a, b) = (Ledger::new(slow.clone()), Ledger::new(inner));
    push(&b, "refs/heads/main", None, &[1], 0).await;
    a.record_flux(&failed(1, 20), server(20)).await.unwrap();
    let (reached, release) = hold_once(&slow, |o| {
        o.table == Table::Audit && o.pk == "cluster|prod-eu"
    });
    let a_applied = tokio::spawn({
        let a = a.clone();
        async move { a.record_flux(&applied(1, 40), server(40)).await }
    });
    reached.notified().await;
    b.record_flux(&applied(1, 35), server(41)).await.unwrap();
    release.notify_one();
    a_applied.await.unwrap().unwrap();
    assert_eq!(feed(&a).await, ["c1 apps first=20 applied=35"]);
}

/// Case 7: an apply on a cluster under the approval policy writes its check row, and its
/// target row is refused; Flux never retries it. Past the grace the sweep decides nothing
/// for it: no `change.unapproved` for an apply the ledger does not record. The same apply
/// recorded decides it once.
#[tokio::test]
async fn a_check_row_whose_apply_never_landed_decides_nothing() {
    let (_d, inner) = sqlite();
    let store = Scripted::new(inner);
    let policy =
        fluxtrail::policy::Policy::new("prod-*", 1, "", std::time::Duration::from_secs(60));
    let l = Ledger::new(store.clone()).with_policy(policy);
    push(&l, "refs/heads/main", None, &[1], 0).await;
    let sha = c(1);
    store.rule(once(
        move |o| o.table == Table::Commits && o.pk == sha,
        || Fault::Refuse,
    ));
    assert!(l.record_flux(&applied(1, 30), server(30)).await.is_err());
    let checks = || l.store().query_partition(Table::Audit, "policy", None);
    assert_eq!(checks().await.unwrap().len(), 1, "the check row landed");
    let swept = l.decide_approvals(server(3600)).await.unwrap();
    assert_eq!((swept.decided, swept.unapproved), (0, 0));
    assert!(checks().await.unwrap().is_empty(), "the orphan is gone");
    // Flux's retry (a duplicate finishing the row: its check counts from now).
    l.record_flux(&applied(1, 30), server(3601)).await.unwrap();
    let swept = l
        .decide_approvals(Utc::now() + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!((swept.decided, swept.unapproved), (1, 1));
}

/// Case 8: an apply of commit 4 reads its branch's graph (it lacks the push of 2 and 3: its
/// webhook is late, or backfill is filling it), and its write is held; meanwhile that push
/// lands and, reading the object's state before the apply's write, expects 2 and 3 on the
/// object. Whichever comes second must see the other: 2 and 3 end superseded by 4, as in
/// every sequential order — not pending forever (a false stall later).
#[tokio::test]
async fn a_push_landing_while_a_later_apply_is_written_is_superseded_by_it() {
    let (_d, inner) = sqlite();
    let slow = Scripted::new(inner.clone());
    let (a, b) = (Ledger::new(slow.clone()), Ledger::new(inner));
    push(&b, "refs/heads/main", None, &[1], 0).await;
    a.record_flux(&applied(1, 10), server(10)).await.unwrap();
    push(&b, "refs/heads/main", Some(3), &[4], 20).await;
    let (reached, release) = hold_once(&slow, |o| {
        o.table == Table::Objects && o.rks.iter().any(|r| r == "state")
    });
    let a_applied = tokio::spawn({
        let a = a.clone();
        async move { a.record_flux(&applied(4, 60), server(60)).await }
    });
    reached.notified().await;
    push(&b, "refs/heads/main", Some(1), &[2, 3], 61).await;
    release.notify_one();
    a_applied.await.unwrap().unwrap();
    assert_eq!(state(&a, 4).await.as_deref(), Some("applied"));
    assert_eq!(state(&a, 2).await.as_deref(), Some("superseded"));
    assert_eq!(state(&a, 3).await.as_deref(), Some("superseded"));
}
