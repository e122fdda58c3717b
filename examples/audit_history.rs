//! Generates a realistic audit history into an embedded store, through the ledger's real
//! path (the same parsers and `Ledger::record_git` / `record_flux` the HTTP handlers call,
//! without HTTP): `DAYS` days of a fleet of `CLUSTERS` clusters × `OBJECTS` Kustomizations
//! following `main` of one repository, `PER_DAY` commits a day, each pushed, most merged
//! through a reviewed pull request, some pushed by the image-automation bot, and applied by
//! every object a few minutes later (by its cluster's clock); about 3% of applies fail first
//! and recover ten minutes later.
//!
//!     cargo run --release --example audit_history -- <data dir> [DAYS CLUSTERS OBJECTS PER_DAY]
//!
//! Defaults: 90 days, 50 clusters, 40 objects, 20 commits a day: 3.6 M target rows.
//! `scripts/bench-audit.sh` runs it and then measures the audit queries on the result.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use futures::StreamExt;
use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use serde_json::{json, Value};

use fluxtrail::git::{self, Delivery, Provider};
use fluxtrail::ledger::Ledger;
use fluxtrail::store::sqlite::SqliteStore;

/// The server's allocator (`src/main.rs`): rows are allocated on the store's threads and
/// freed on the runtime's, which glibc's malloc handles at a third of the speed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REPO: &str = "acme/fleet";
/// Flux events in flight at once (the HTTP server sees about this many connections).
const CONCURRENCY: usize = 64;

fn sha(day: u32, k: u32) -> String {
    format!("{:08x}{:032x}", 0xa0d1_7000u32 + day, k)
}

fn fixture(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/git")
        .join(file);
    serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("fixture JSON")
}

fn git_event(kind: &str, id: &str, body: &Value) -> git::GitEvent {
    let body = serde_json::to_vec(body).expect("JSON");
    let mut headers = HeaderMap::new();
    for (k, v) in [("x-github-event", kind), ("x-github-delivery", id)] {
        headers.insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).expect("header"),
        );
    }
    git::parse(
        Provider::GitHub,
        &Delivery {
            headers: &headers,
            body: &body,
            form: false,
        },
    )
    .expect("a valid GitHub delivery")
    .event
}

fn repository() -> Value {
    let mut r = fixture("github/push-forced.json")["repository"].clone();
    r["name"] = json!("fleet");
    r["full_name"] = json!(REPO);
    r["owner"]["login"] = json!("acme");
    r["owner"]["name"] = json!("acme");
    for k in ["html_url", "url"] {
        r[k] = json!(format!("https://github.com/{REPO}"));
    }
    r["clone_url"] = json!(format!("https://github.com/{REPO}.git"));
    r
}

fn push(
    before: Option<&str>,
    after: &str,
    message: &str,
    pusher: &str,
    at: DateTime<Utc>,
) -> Value {
    let mut p = fixture("github/push-forced.json");
    let commit = json!({"id": after, "message": message,
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "author": {"name": pusher, "email": format!("{pusher}@acme.example"), "username": pusher}});
    p["repository"] = repository();
    p["ref"] = json!("refs/heads/main");
    p["before"] = json!(before.map_or("0".repeat(40), str::to_string));
    p["created"] = json!(before.is_none());
    p["forced"] = json!(false);
    p["after"] = json!(after);
    p["commits"] = json!([commit.clone()]);
    p["head_commit"] = commit;
    p["pusher"] = json!({"name": pusher, "email": format!("{pusher}@acme.example")});
    p
}

fn flux_body(cluster: u32, object: u32, sha: &str, at: DateTime<Utc>, failed: bool) -> Vec<u8> {
    let (reason, severity, message) = if failed {
        ("HealthCheckFailed", "error", "health check failed after 2m0s: timeout waiting for: [Deployment/apps/web status: 'InProgress']")
    } else {
        (
            "ReconciliationSucceeded",
            "info",
            "Reconciliation finished in 1.2s, next run in 10m0s",
        )
    };
    serde_json::to_vec(&json!({
        "involvedObject": {"kind": "Kustomization", "namespace": "flux-system",
            "name": format!("app-{object:02}"), "uid": format!("{cluster}-{object}"),
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1"},
        "severity": severity,
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "message": message,
        "reason": reason,
        "metadata": {"revision": format!("main@sha1:{sha}"), "commit_status": "update"},
        "reportingController": "kustomize-controller",
        "reportingInstance": "kustomize-controller-7c7b47f5f-8bhrp"
    }))
    .expect("JSON")
}

/// A cheap deterministic hash for the story's choices.
fn mix(a: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 7
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .expect("usage: audit_history <data dir> [days clusters objects per_day]");
    let num = |i: usize, d: u32| args.get(i).map_or(d, |s| s.parse().expect("a number"));
    let (days, clusters, objects, per_day) = (num(2, 90), num(3, 50), num(4, 40), num(5, 20));
    let store = Arc::new(SqliteStore::open(std::path::Path::new(dir)).expect("open the store"));
    let ledger = Ledger::new(store);
    let now = Utc::now();
    let start = now - Duration::days(i64::from(days));
    let started = Instant::now();
    let mut before: Option<String> = None;
    let (mut events, mut pushes) = (0u64, 0u64);
    let mut push_time = 0.0;
    for day in 0..days {
        for k in 0..per_day {
            let s = sha(day, k);
            // Commit time: spread over the working day; applied 2-7 minutes later.
            let at = start
                + Duration::days(i64::from(day))
                + Duration::seconds(i64::from(k) * 86_400 / i64::from(per_day));
            let h = mix(u64::from(day) << 32 | u64::from(k));
            let bot = h % 10 == 0;
            let pusher = if bot {
                "flux-image-automation"
            } else {
                "dana-ops"
            };
            let message = if bot {
                format!("chore: update web to 1.{day}.{k} [ci skip]")
            } else {
                format!("apps: roll out change {day}-{k}\n\nReviewed in the pull request.")
            };
            let p = push(before.as_deref(), &s, &message, pusher, at);
            let event = git_event("push", &format!("push-{s}"), &p);
            let t0 = Instant::now();
            ledger
                .record_git(Provider::GitHub, &format!("push-{s}"), &event, now)
                .await
                .expect("push recorded");
            pushes += 1;
            push_time += t0.elapsed().as_secs_f64();
            // Most human commits come through a reviewed pull request (some approved only
            // by their author, some never merged through one).
            if !bot && h % 7 != 0 {
                let number = u64::from(day * per_day + k + 1);
                let mut pr = fixture("github/pull-request-merged.json");
                pr["number"] = json!(number);
                pr["pull_request"]["number"] = json!(number);
                pr["pull_request"]["merge_commit_sha"] = json!(s);
                pr["repository"] = repository();
                let id = format!("pr-{number}");
                let e = git_event("pull_request", &id, &pr);
                ledger
                    .record_git(Provider::GitHub, &id, &e, now)
                    .await
                    .expect("pr");
                let reviewer = if h % 11 == 0 { "dana-ops" } else { "sam-sre" };
                let mut review = fixture("github/pull-request-review-approved.json");
                review["pull_request"]["number"] = json!(number);
                review["review"]["user"]["login"] = json!(reviewer);
                review["repository"] = repository();
                let id = format!("review-{number}");
                let e = git_event("pull_request_review", &id, &review);
                ledger
                    .record_git(Provider::GitHub, &id, &e, now)
                    .await
                    .expect("review");
            }
            before = Some(s.clone());
            // Every object applies it a few minutes later (its cluster's clock), some after
            // a failure.
            let reports = (0..clusters).flat_map(|c| (0..objects).map(move |o| (c, o)));
            let ledger = &ledger;
            let s = &s;
            let mut sent = futures::stream::iter(reports)
                .map(|(c, o)| async move {
                    let hh = mix(h ^ u64::from(c) << 16 ^ u64::from(o));
                    let t = at + Duration::seconds(120 + (hh % 300) as i64);
                    let cluster = format!("prod-{c:02}");
                    let plan: &[(DateTime<Utc>, bool)] = if hh % 33 == 0 {
                        &[(t, true), (t + Duration::minutes(10), false)]
                    } else {
                        &[(t, false)]
                    };
                    for (t, failed) in plan {
                        let body = flux_body(c, o, s, *t, *failed);
                        let e = fluxtrail::flux::parse(&body, Some(&cluster), "default", now)
                            .expect("a valid Flux event");
                        ledger.record_flux(&e, now).await.expect("event recorded");
                    }
                    plan.len() as u64
                })
                .buffer_unordered(CONCURRENCY);
            while let Some(n) = sent.next().await {
                events += n;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "day {}/{days}: {pushes} pushes ({push_time:.0} s), {events} Flux events, {:.0} events/s",
            day + 1,
            events as f64 / (secs - push_time)
        );
    }
    println!(
        "generated {days} days × {clusters} clusters × {objects} objects × {per_day} commits/day: {pushes} pushes, {events} Flux events in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
