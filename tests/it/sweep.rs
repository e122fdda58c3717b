//! The sweep through `POST /Sweep` with real-shaped timer payloads. Time is the payload's
//! `Metadata.sys.UtcNow` (believed up to 5 minutes ahead of the clock), so no test sleeps for
//! the threshold.

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const APPLIED: &str = "731f7eaddfb6af01cb2173e18f0f75b0ba780ef1";
const NEXT: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";

fn stalled_count(body: &Value) -> u64 {
    body["Logs"][0]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// The object applies `APPLIED` (so it follows main), then `NEXT` is pushed: pending on it.
async fn follow_then_push(app: &TestApp) {
    let r = app
        .post_fixture(
            "github",
            "github/push-forced.json",
            &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "s-1")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    app.report_applied("/api/hooks/flux/prod-eu").await;
    let mut next: Value = serde_json::from_slice(&fixture("github/push-forced.json")).unwrap();
    next["before"] = json!(APPLIED);
    next["after"] = json!(NEXT);
    next["forced"] = json!(false);
    next["commits"] = json!([{"id": NEXT, "message": "next", "timestamp": "2026-08-07T12:00:00Z"}]);
    next["head_commit"] = next["commits"][0].clone();
    let r = app
        .post_git(
            "github",
            &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "s-2")],
            &serde_json::to_vec(&next).unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(app.evidence(NEXT).await.1["targets"][0]["state"], "pending");
}

fn stall_vars() -> std::collections::HashMap<String, String> {
    let mut vars = default_vars();
    vars.insert("FLUXTRAIL_STALL_AFTER".into(), "2m".into());
    vars
}

#[tokio::test]
async fn a_pending_commit_is_reported_stalled_exactly_once_after_the_threshold() {
    let app = spawn_with(stall_vars()).await;
    follow_then_push(&app).await;
    assert_eq!(
        stalled_count(&sweep_at(&app, 1).await),
        0,
        "not overdue yet"
    );
    assert_eq!(app.evidence(NEXT).await.1["targets"][0]["state"], "pending");
    assert_eq!(stalled_count(&sweep_at(&app, 3).await), 1);
    let (_, ev) = app.evidence(NEXT).await;
    assert_eq!(ev["targets"][0]["state"], "stalled");
    let msgs = app.wait_messages(1).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m["type"], "io.fluxtrail.rollout.stalled");
    assert_eq!(m["subject"], "prod-eu/Kustomization/flux-system/apps");
    assert_eq!(m["data"]["sha"], NEXT);
    assert_eq!(m["data"]["repository"], "github.com/acme/fleet-infra");
    assert_eq!(m["data"]["revision"], "refs/heads/main");
    // Later sweeps say nothing more.
    assert_eq!(stalled_count(&sweep_at(&app, 4).await), 0);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(app.messages().len(), 1);
    // A late apply turns it applied.
    let late = flux_event("kustomization-succeeded.json", |v| {
        v["timestamp"] = json!("2026-08-07T12:30:00Z");
        v["metadata"]["revision"] = json!(format!("main@sha1:{NEXT}"));
    });
    assert_eq!(
        app.post_flux("/api/hooks/flux/prod-eu", &late)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(app.evidence(NEXT).await.1["targets"][0]["state"], "applied");
}

#[tokio::test]
async fn superseded_and_applied_commits_never_stall() {
    let app = spawn_with(stall_vars()).await;
    follow_then_push(&app).await;
    // A later commit is pushed and applied first: NEXT is superseded.
    let last = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
    let mut push: Value = serde_json::from_slice(&fixture("github/push-forced.json")).unwrap();
    push["before"] = json!(NEXT);
    push["after"] = json!(last);
    push["forced"] = json!(false);
    push["commits"] = json!([{"id": last, "message": "last", "timestamp": "2026-08-07T12:10:00Z"}]);
    push["head_commit"] = push["commits"][0].clone();
    app.post_git(
        "github",
        &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "s-3")],
        &serde_json::to_vec(&push).unwrap(),
    )
    .await;
    let applied = flux_event("kustomization-succeeded.json", |v| {
        v["timestamp"] = json!("2026-08-07T12:20:00Z");
        v["metadata"]["revision"] = json!(format!("main@sha1:{last}"));
    });
    app.post_flux("/api/hooks/flux/prod-eu", &applied).await;
    assert_eq!(
        app.evidence(NEXT).await.1["targets"][0]["state"],
        "superseded"
    );
    assert_eq!(stalled_count(&sweep_at(&app, 4).await), 0);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(app.messages().is_empty());
}

#[tokio::test]
async fn a_failed_target_is_never_reported_stalled() {
    let app = spawn_with(stall_vars()).await;
    follow_then_push(&app).await;
    let failed = flux_event("kustomization-health-failed.json", |v| {
        v["timestamp"] = json!("2026-08-07T12:20:00Z");
        v["metadata"]["revision"] = json!(format!("main@sha1:{NEXT}"));
    });
    app.post_flux("/api/hooks/flux/prod-eu", &failed).await;
    assert_eq!(stalled_count(&sweep_at(&app, 4).await), 0);
    let msgs = app.wait_messages(1).await;
    assert_eq!(
        msgs.iter()
            .map(|m| m["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["io.fluxtrail.apply.failed"]
    );
}

#[tokio::test]
async fn concurrent_sweeps_emit_nothing_twice() {
    let app = spawn_with(stall_vars()).await;
    follow_then_push(&app).await;
    let sweeps: Vec<_> = (0..4).map(|_| sweep_at(&app, 3)).collect();
    let total: u64 = futures_util::future::join_all(sweeps)
        .await
        .iter()
        .map(stalled_count)
        .sum();
    assert_eq!(total, 1);
    let msgs = app.wait_messages(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(app.messages().len(), 1);
}

#[tokio::test]
async fn the_timer_payload_is_read_leniently() {
    let app = spawn_app().await;
    for body in [
        json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": null, "IsPastDue": true}}, "Metadata": {"sys": {"UtcNow": "11/27/2026 08:00:00"}}}),
        json!({"Data": {}, "Metadata": {}}),
        Value::Null,
    ] {
        let resp = app
            .client
            .post(app.url("/Sweep"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["ReturnValue"], Value::Null);
    }
    let resp = app
        .client
        .post(app.url("/Sweep"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app.client.get(app.url("/Sweep")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_clock_cannot_be_fast_forwarded_past_the_skew() {
    let app = spawn_with(stall_vars()).await;
    follow_then_push(&app).await;
    // A caller claiming to be a day ahead is believed only 5 minutes ahead: still overdue
    // (2m) here, but a 1-day threshold would not be reached.
    let mut vars = default_vars();
    vars.insert("FLUXTRAIL_STALL_AFTER".into(), "1h".into());
    let app2 = spawn_with(vars).await;
    follow_then_push(&app2).await;
    let far = app2
        .client
        .post(app2.url("/Sweep"))
        .json(&timer(Utc::now() + Duration::days(1)))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(stalled_count(&far), 0);
    assert_eq!(
        app2.evidence(NEXT).await.1["targets"][0]["state"],
        "pending"
    );
    drop(app);
}

#[tokio::test]
async fn retention_deletes_finished_journal_entries_and_keeps_evidence() {
    let mut vars = default_vars();
    vars.insert("FLUXTRAIL_RETAIN_DELIVERIES".into(), "1m".into());
    let app = spawn_with(vars).await;
    follow_then_push(&app).await;
    let body = sweep_at(&app, 3).await;
    let retention = body["Logs"][2].as_str().unwrap();
    assert!(
        retention.starts_with("retention deleted 2 journal entries"),
        "{retention}"
    );
    assert_eq!(
        app.evidence(APPLIED).await.0,
        StatusCode::OK,
        "evidence is kept"
    );
    // A redelivery after retention is recorded again, harmlessly (projections are merges).
    let (_, before) = app.evidence(APPLIED).await;
    let r = app
        .post_fixture(
            "github",
            "github/push-forced.json",
            &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "s-1")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(app.evidence(APPLIED).await.1, before);
}

#[tokio::test]
async fn standalone_the_server_sweeps_by_itself() {
    let mut vars = default_vars();
    vars.insert("FLUXTRAIL_STALL_AFTER".into(), "0s".into());
    vars.insert("FLUXTRAIL_SWEEP_INTERVAL".into(), "200ms".into());
    let app = spawn_with(vars).await;
    follow_then_push(&app).await;
    let msgs = app.wait_messages(1).await;
    assert_eq!(
        msgs.len(),
        1,
        "the interval sweep reported the stalled rollout"
    );
    assert_eq!(msgs[0]["type"], "io.fluxtrail.rollout.stalled");
}
