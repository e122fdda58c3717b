//! Part 8 over HTTP: the sequences real clusters produce (contract §3, "Rules behind these
//! states") — cluster clocks that are not the server's, applies before their pushes, branch
//! switches, late older events, change sets delivered after their success, rollbacks,
//! forced pushes, Helm drift episodes, failed commits later superseded, long histories.
//! Each test is one numbered case of the issue; the suite runs on SQLite and on Azurite.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// Commit `n` of the stories (never all zeros).
fn c(n: u32) -> String {
    format!("c0ffee{n:034x}")
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A second-precision Flux time, `s` seconds after a fixed cluster epoch.
fn at(s: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-02T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + Duration::seconds(s)
}

/// A GitHub push of `commits` (oldest first) to `git_ref`, from `before` (`None`: created).
async fn push(app: &TestApp, git_ref: &str, before: Option<u32>, commits: &[u32], forced: bool) {
    let list: Vec<(u32, String)> = commits.iter().map(|n| (*n, c(*n))).collect();
    let body = github_push(None, git_ref, before.map(c), &list, forced);
    let delivery = format!("{git_ref}-{before:?}-{commits:?}-{forced}");
    let r = app
        .post_git(
            "github",
            &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", &delivery)],
            &body,
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "push {commits:?}");
}

/// A Kustomization `apps` event in `cluster` about commit `n` of `branch`.
fn kustomization(reason: &str, branch: &str, n: u32, t: DateTime<Utc>, message: &str) -> Vec<u8> {
    let severity = if reason.ends_with("Failed") {
        "error"
    } else {
        "info"
    };
    flux_event("kustomization-succeeded.json", |v| {
        v["reason"] = json!(reason);
        v["severity"] = json!(severity);
        v["message"] = json!(message);
        v["timestamp"] = json!(rfc(t));
        v["metadata"]["revision"] = json!(format!("{branch}@sha1:{}", c(n)));
    })
}

async fn send(app: &TestApp, cluster: &str, body: &[u8]) -> StatusCode {
    app.post_flux(&format!("/api/hooks/flux/{cluster}"), body)
        .await
        .status()
}

async fn applied(app: &TestApp, n: u32, s: i64) {
    let body = kustomization("ReconciliationSucceeded", "main", n, at(s), "ok");
    assert_eq!(send(app, "prod-eu", &body).await, StatusCode::ACCEPTED);
}

/// The state of commit `n` on prod-eu's `apps`, `None` without a target.
async fn state(app: &TestApp, n: u32) -> Option<String> {
    target(app, n)
        .await
        .map(|t| t["state"].as_str().unwrap().to_string())
}

async fn target(app: &TestApp, n: u32) -> Option<Value> {
    let (status, ev) = app.evidence(&c(n)).await;
    if status == StatusCode::NOT_FOUND {
        return None;
    }
    ev["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["cluster"] == "prod-eu" && t["name"] == "apps")
        .cloned()
}

/// The messages once the outbox has had time to deliver `n` of them (and a moment more, so
/// a message that should not exist would show).
async fn settled(app: &TestApp, n: usize) -> Vec<String> {
    app.wait_messages(n).await;
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    types(&app.messages())
}

/// Case 1: the push is received at 10:00:00.096 by the server's clock; the cluster reports a
/// failed health check and then success at 10:00:00 by its own. The commit is applied.
#[tokio::test]
async fn mixed_clocks_a_recovery_in_the_pushs_second() {
    let app = spawn_app().await;
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    applied(&app, 1, 0).await; // apps follows main
    push(&app, "refs/heads/main", Some(1), &[2], false).await;
    assert_eq!(state(&app, 2).await.as_deref(), Some("pending"));
    // The push's receipt time is now (sub-second); Flux's is this second, truncated.
    let second = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let failed = kustomization("HealthCheckFailed", "main", 2, second, "timeout");
    let ok = kustomization("ReconciliationSucceeded", "main", 2, second, "ok");
    assert_eq!(send(&app, "prod-eu", &failed).await, StatusCode::ACCEPTED);
    assert_eq!(send(&app, "prod-eu", &ok).await, StatusCode::ACCEPTED);
    assert_eq!(state(&app, 2).await.as_deref(), Some("applied"));
    assert_eq!(settled(&app, 2).await, ["apply.failed", "apply.recovered"]);
    let (_, objects) = app.get_json("/api/objects?cluster=prod-eu").await;
    assert_eq!(objects["objects"][0]["status"], "ready");
}

/// Case 1, a cluster whose clock runs ten minutes behind the server.
#[tokio::test]
async fn mixed_clocks_a_cluster_behind() {
    let app = spawn_app().await;
    let now = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    let behind = now - Duration::minutes(10);
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    let first = kustomization(
        "ReconciliationSucceeded",
        "main",
        1,
        behind - Duration::minutes(5),
        "ok",
    );
    assert_eq!(send(&app, "prod-eu", &first).await, StatusCode::ACCEPTED);
    push(&app, "refs/heads/main", Some(1), &[2], false).await; // received now
    let failed = kustomization("ReconciliationFailed", "main", 2, behind, "x");
    let ok = kustomization(
        "ReconciliationSucceeded",
        "main",
        2,
        behind + Duration::seconds(5),
        "ok",
    );
    assert_eq!(send(&app, "prod-eu", &failed).await, StatusCode::ACCEPTED);
    assert_eq!(send(&app, "prod-eu", &ok).await, StatusCode::ACCEPTED);
    let t = target(&app, 2).await.unwrap();
    assert_eq!(t["state"], "applied");
    assert_eq!(t["lastEventAt"], rfc(behind + Duration::seconds(5)));
    assert_eq!(
        t["firstSeenAt"],
        rfc(behind),
        "the cluster's time, not the push's"
    );
}

/// Case 2: applied c1; push c1→c2; c3 applied before its push; the late push c2→c3: c2 is
/// superseded by c3 and never stalls.
#[tokio::test]
async fn apply_before_push_supersedes_the_skipped_commit() {
    let app = spawn_with(stall_in_a_minute()).await;
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    applied(&app, 1, 10).await;
    push(&app, "refs/heads/main", Some(1), &[2], false).await;
    assert_eq!(state(&app, 2).await.as_deref(), Some("pending"));
    applied(&app, 3, 30).await;
    push(&app, "refs/heads/main", Some(2), &[3], false).await;
    let t2 = target(&app, 2).await.unwrap();
    assert_eq!(t2["state"], "superseded");
    assert_eq!(t2["supersededBy"], c(3));
    assert_eq!(state(&app, 3).await.as_deref(), Some("applied"));
    sweep_at(&app, 10).await;
    assert_eq!(
        settled(&app, 0).await,
        Vec::<String>::new(),
        "nothing stalls"
    );
}

/// Case 3: the object moves to `release` (its apply arrives before the release push); later
/// pushes to `main` are not expected on it, and nothing stalls.
#[tokio::test]
async fn branch_switch_follows_the_new_branch() {
    let app = spawn_with(stall_in_a_minute()).await;
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    applied(&app, 1, 10).await;
    push(&app, "refs/heads/main", Some(1), &[2], false).await; // pending on apps
    let release = kustomization("ReconciliationSucceeded", "release", 10, at(20), "ok");
    assert_eq!(send(&app, "prod-eu", &release).await, StatusCode::ACCEPTED);
    push(&app, "refs/heads/release", None, &[10], false).await;
    let (_, objects) = app.get_json("/api/objects?cluster=prod-eu").await;
    assert_eq!(
        objects["objects"][0]["follows"],
        json!({"repository": "github.com/acme/fleet-infra", "gitRef": "refs/heads/release"})
    );
    push(&app, "refs/heads/main", Some(2), &[3], false).await;
    assert_eq!(
        state(&app, 3).await,
        None,
        "main is no longer expected on apps"
    );
    push(&app, "refs/heads/release", Some(10), &[11], false).await;
    assert_eq!(state(&app, 11).await.as_deref(), Some("pending"));
    sweep_at(&app, 10).await;
    let msgs = settled(&app, 1).await;
    assert_eq!(msgs, ["rollout.stalled"], "only release's commit 11 stalls");
    assert_eq!(app.messages()[0]["data"]["sha"], c(11));
}

/// Case 4: `ReconciliationFailed` c3 @10:05:03 arrives, then `ReconciliationSucceeded` c2
/// @10:05:00: c2 is applied; the object stays failed on c3.
#[tokio::test]
async fn late_older_event_records_its_own_commit() {
    let app = spawn_app().await;
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    applied(&app, 1, 0).await;
    push(&app, "refs/heads/main", Some(1), &[2], false).await;
    push(&app, "refs/heads/main", Some(2), &[3], false).await;
    let failed = kustomization("ReconciliationFailed", "main", 3, at(303), "x");
    assert_eq!(send(&app, "prod-eu", &failed).await, StatusCode::ACCEPTED);
    let late = kustomization("ReconciliationSucceeded", "main", 2, at(300), "ok");
    assert_eq!(send(&app, "prod-eu", &late).await, StatusCode::ACCEPTED);
    assert_eq!(state(&app, 2).await.as_deref(), Some("applied"));
    assert_eq!(state(&app, 3).await.as_deref(), Some("failed"));
    let (_, objects) = app.get_json("/api/objects?cluster=prod-eu").await;
    assert_eq!(objects["objects"][0]["status"], "failed");
    // Its retry is a duplicate.
    let r = app.post_flux("/api/hooks/flux/prod-eu", &late).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(settled(&app, 1).await, ["apply.failed"]);
}

/// Case 4 variant: applied c5, then the late "applied c4": c4 was applied.
#[tokio::test]
async fn late_older_apply_is_applied_not_superseded() {
    let app = spawn_app().await;
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    applied(&app, 1, 0).await;
    push(&app, "refs/heads/main", Some(1), &[4, 5], false).await;
    applied(&app, 5, 50).await;
    assert_eq!(state(&app, 4).await.as_deref(), Some("superseded"));
    applied(&app, 4, 40).await;
    let t4 = target(&app, 4).await.unwrap();
    assert_eq!(t4["state"], "applied");
    assert_eq!(t4["supersededBy"], Value::Null);
}

/// Case 5: the change set and the success of one reconciliation share a second; the success
/// is delivered first. One apply, no drift.
#[tokio::test]
async fn change_set_delivered_after_its_success_is_no_drift() {
    let app = spawn_app().await;
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    let change = "Deployment/apps/podinfo configured";
    applied(&app, 1, 10).await;
    let cs = kustomization("Progressing", "main", 1, at(10), change);
    assert_eq!(send(&app, "prod-eu", &cs).await, StatusCode::ACCEPTED);
    assert_eq!(settled(&app, 0).await, Vec::<String>::new());
    let later = kustomization("Progressing", "main", 1, at(610), change);
    assert_eq!(send(&app, "prod-eu", &later).await, StatusCode::ACCEPTED);
    assert_eq!(settled(&app, 1).await, ["drift.detected"]);
}

/// Case 6: R1 applied; R2 fails its health check; the branch is forced back to R1 and Flux
/// re-applies R1 with a change set: no drift, and the incident closes with a recovery.
#[tokio::test]
async fn rollback_is_not_drift_and_recovers() {
    let app = spawn_app().await;
    let change = "Deployment/apps/podinfo configured";
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    applied(&app, 1, 10).await;
    push(&app, "refs/heads/main", Some(1), &[2], false).await;
    let health = kustomization("HealthCheckFailed", "main", 2, at(170), "timeout");
    assert_eq!(send(&app, "prod-eu", &health).await, StatusCode::ACCEPTED);
    push(&app, "refs/heads/main", Some(2), &[1], true).await;
    let cs = kustomization("Progressing", "main", 1, at(210), change);
    assert_eq!(send(&app, "prod-eu", &cs).await, StatusCode::ACCEPTED);
    applied(&app, 1, 210).await;
    assert_eq!(settled(&app, 2).await, ["apply.failed", "apply.recovered"]);
    assert_eq!(state(&app, 2).await.as_deref(), Some("failed"));
    let (_, incidents) = app.get_json("/api/incidents?state=open").await;
    assert_eq!(incidents["incidents"], json!([]));
}

/// Case 7: push B, amend and force-push B′, apply B′: B is `discarded`, never stalled.
#[tokio::test]
async fn forced_push_discards_the_amended_commit() {
    let app = spawn_with(stall_in_a_minute()).await;
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    applied(&app, 1, 10).await;
    push(&app, "refs/heads/main", Some(1), &[2], false).await;
    push(&app, "refs/heads/main", Some(2), &[22], true).await;
    applied(&app, 22, 30).await;
    assert_eq!(state(&app, 2).await.as_deref(), Some("discarded"));
    assert_eq!(state(&app, 22).await.as_deref(), Some("applied"));
    sweep_at(&app, 10).await;
    assert_eq!(settled(&app, 0).await, Vec::<String>::new());
}

/// Case 8: `DriftDetected` (sent), `UpgradeSucceeded`, `DriftDetected` a week later: sent again.
#[tokio::test]
async fn helm_drift_is_reported_again_after_an_upgrade() {
    let app = spawn_app().await;
    let drift = |t: &str| {
        flux_event("helmrelease-drift-detected.json", |v| {
            v["timestamp"] = json!(t)
        })
    };
    let upgraded = flux_event("helmrelease-drift-detected.json", |v| {
        v["timestamp"] = json!("2026-08-07T12:00:00Z");
        v["reason"] = json!("UpgradeSucceeded");
        v["severity"] = json!("info");
        v["message"] =
            json!("Helm upgrade succeeded for release apps/podinfo.v4 with chart podinfo@6.5.5");
        v["metadata"]["revision"] = json!("6.5.5");
    });
    for body in [
        drift("2026-08-07T11:00:00Z"),
        drift("2026-08-07T11:05:00Z"),
        upgraded,
        drift("2026-08-14T11:00:00Z"),
        drift("2026-08-14T11:05:00Z"),
    ] {
        assert_eq!(send(&app, "prod-eu", &body).await, StatusCode::ACCEPTED);
    }
    assert_eq!(settled(&app, 2).await, ["drift.detected", "drift.detected"]);
}

/// Case 9: a commit that failed and was later superseded stays failed, naming its successor.
#[tokio::test]
async fn a_failed_commit_later_superseded_stays_failed() {
    let app = spawn_app().await;
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    applied(&app, 1, 10).await;
    push(&app, "refs/heads/main", Some(1), &[2], false).await;
    let failed = kustomization("ReconciliationFailed", "main", 2, at(20), "x");
    assert_eq!(send(&app, "prod-eu", &failed).await, StatusCode::ACCEPTED);
    push(&app, "refs/heads/main", Some(2), &[3, 4], false).await;
    applied(&app, 4, 40).await;
    let t2 = target(&app, 2).await.unwrap();
    assert_eq!(t2["state"], "failed");
    assert_eq!(t2["supersededBy"], c(4));
    assert_eq!(state(&app, 3).await.as_deref(), Some("superseded"));
}

/// Case 10: a first apply on a branch with 300 pushed commits supersedes the 50 nearest.
#[tokio::test]
async fn first_apply_on_a_long_history_is_bounded() {
    let app = spawn_app().await;
    for p in 0..60u32 {
        let commits: Vec<u32> = (1..=5).map(|i| p * 5 + i).collect();
        push(&app, "refs/heads/main", Some(p * 5), &commits, false).await;
    }
    applied(&app, 300, 10).await;
    assert_eq!(state(&app, 300).await.as_deref(), Some("applied"));
    assert_eq!(state(&app, 250).await.as_deref(), Some("superseded"));
    assert_eq!(state(&app, 249).await, None, "beyond the walk: untouched");
    // Every later event still writes the object (its state stays small).
    let failed = kustomization("HealthCheckFailed", "main", 300, at(20), "x");
    assert_eq!(send(&app, "prod-eu", &failed).await, StatusCode::ACCEPTED);
    assert_eq!(state(&app, 300).await.as_deref(), Some("failed"));
}

fn stall_in_a_minute() -> std::collections::HashMap<String, String> {
    let mut vars = default_vars();
    vars.insert("FLUXTRAIL_STALL_AFTER".into(), "1m".into());
    vars
}

/// Case 11: an object that is gone is retired by an operator: its open incident closes
/// without `apply.recovered`, nothing is expected of it any more, its history stays; a
/// later report brings it back.
#[tokio::test]
async fn a_retired_object_expects_nothing_and_its_incident_closes() {
    let app = spawn_with(stall_in_a_minute()).await;
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    applied(&app, 1, 10).await;
    push(&app, "refs/heads/main", Some(1), &[2], false).await;
    let failed = kustomization("HealthCheckFailed", "main", 1, at(20), "timeout");
    assert_eq!(send(&app, "prod-eu", &failed).await, StatusCode::ACCEPTED);
    assert_eq!(settled(&app, 1).await, ["apply.failed"]);

    let retire = "/api/objects/prod-eu/Kustomization/flux-system/apps/retire";
    let (status, object) = app.post_json(retire).await;
    assert_eq!(status, StatusCode::OK);
    assert!(object["retiredAt"].is_string(), "{object}");
    assert_eq!(object["incidentId"], Value::Null);
    let (again, _) = app.post_json(retire).await;
    assert_eq!(again, StatusCode::OK, "idempotent");
    let (unknown, body) = app
        .post_json("/api/objects/prod-eu/Kustomization/flux-system/nope/retire")
        .await;
    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "object_not_found");

    let (_, open) = app.get_json("/api/incidents?state=open").await;
    assert_eq!(open["incidents"], json!([]));
    let (_, resolved) = app.get_json("/api/incidents?state=resolved").await;
    assert_eq!(resolved["incidents"][0]["closedBy"], "retired");
    // Nothing expected: a new push makes nothing pending, the sweep reports nothing.
    push(&app, "refs/heads/main", Some(2), &[3], false).await;
    assert_eq!(state(&app, 3).await, None);
    sweep_at(&app, 10).await;
    assert_eq!(
        settled(&app, 1).await,
        ["apply.failed"],
        "no recovery, no stall"
    );
    assert_eq!(
        state(&app, 1).await.as_deref(),
        Some("failed"),
        "history stays"
    );
    // It reports again: back.
    applied(&app, 3, 60).await;
    let (_, objects) = app.get_json("/api/objects?cluster=prod-eu").await;
    assert_eq!(objects["objects"][0]["retiredAt"], Value::Null);
    push(&app, "refs/heads/main", Some(3), &[4], false).await;
    assert_eq!(state(&app, 4).await.as_deref(), Some("pending"));
}

/// Case 11: an object that stalls on consecutive pushes without a word raises one alarm
/// per push only twice, then says once that it went silent; a report resumes it.
#[tokio::test]
async fn a_silent_object_is_announced_once_not_per_push() {
    let app = spawn_with(stall_in_a_minute()).await;
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    applied(&app, 1, 10).await;
    for n in 2..=5 {
        push(&app, "refs/heads/main", Some(n - 1), &[n], false).await;
    }
    sweep_at(&app, 10).await;
    assert_eq!(
        settled(&app, 3).await,
        ["rollout.stalled", "rollout.stalled", "object.silent"]
    );
    let msgs = app.messages();
    assert_eq!(msgs[0]["data"]["sha"], c(2));
    assert_eq!(msgs[1]["data"]["sha"], c(3));
    for n in 2..=5 {
        assert_eq!(state(&app, n).await.as_deref(), Some("stalled"), "{n}");
    }
    let (_, objects) = app.get_json("/api/objects?cluster=prod-eu").await;
    assert_eq!(objects["objects"][0]["silent"], true);
    sweep_at(&app, 10).await;
    assert_eq!(settled(&app, 3).await.len(), 3, "said once");
    // It reports: the stalled commits are superseded, and stalls are announced again.
    applied(&app, 5, 100).await;
    for n in 2..=4 {
        assert_eq!(state(&app, n).await.as_deref(), Some("superseded"), "{n}");
    }
    push(&app, "refs/heads/main", Some(5), &[6], false).await;
    sweep_at(&app, 10).await;
    let types = settled(&app, 4).await;
    assert_eq!(types.last().map(String::as_str), Some("rollout.stalled"));
    assert_eq!(app.messages()[3]["data"]["sha"], c(6));
}

/// A HelmRelease whose chart is built from the Git source (`reconcileStrategy: Revision`)
/// reports `<version>+<12 hex of the commit>`: linked to the pushed commit with that
/// abbreviation, while an abbreviation two pushed commits share stays unlinked.
#[tokio::test]
async fn helm_chart_versions_link_their_source_commit() {
    let app = spawn_app().await;
    let one = "a21683865c08d5e1c3b7f0a9e2d4c6b8a0f1e3d5";
    let twin_a = "b1b2b3b4b5b6000000000000000000000000000a";
    let twin_b = "b1b2b3b4b5b6111111111111111111111111111b";
    let mut p: Value = serde_json::from_slice(&fixture("github/push-forced.json")).unwrap();
    let commit = |id: &str| {
        json!({"id": id, "message": "chart", "timestamp": "2026-11-02T09:00:00Z",
        "author": {"name": "Dana Ops", "email": "dana@acme.example", "username": "dana-ops"}})
    };
    p["forced"] = json!(false);
    p["before"] = json!("1eabc9a41ca088515cab83f1cce49eb43e84b67f");
    p["after"] = json!(twin_b);
    p["commits"] = json!([commit(one), commit(twin_a), commit(twin_b)]);
    p["head_commit"] = commit(twin_b);
    let r = app
        .post_git(
            "github",
            &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "helm-1")],
            &serde_json::to_vec(&p).unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let helm = |version: String, t: &str| {
        flux_event("helmrelease-drift-detected.json", |v| {
            v["timestamp"] = json!(t);
            v["reason"] = json!("UpgradeSucceeded");
            v["severity"] = json!("info");
            v["message"] = json!("Helm upgrade succeeded");
            v["metadata"]["revision"] = json!(version);
        })
    };
    let linked = helm(format!("0.1.0+{}", &one[..12]), "2026-11-02T10:00:00Z");
    assert_eq!(send(&app, "prod-eu", &linked).await, StatusCode::ACCEPTED);
    let (_, ev) = app.evidence(one).await;
    assert_eq!(ev["targets"][0]["kind"], "HelmRelease");
    assert_eq!(ev["targets"][0]["state"], "applied");
    assert_eq!(
        ev["targets"][0]["revision"],
        format!("0.1.0+{}", &one[..12])
    );
    let ambiguous = helm(format!("0.1.0+{}", &twin_a[..12]), "2026-11-02T10:05:00Z");
    assert_eq!(
        send(&app, "prod-eu", &ambiguous).await,
        StatusCode::ACCEPTED
    );
    for twin in [twin_a, twin_b] {
        let (_, ev) = app.evidence(twin).await;
        let helm_targets = ev["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] == "HelmRelease" && t["state"] != "pending")
            .count();
        assert_eq!(
            helm_targets, 0,
            "{twin}: ambiguous abbreviation, not linked"
        );
    }
}

/// An object whose first report arrives after a forced push: the pushes after its commit are
/// replayed for it, the forced push's removed commits among them — which have no row on it
/// (`discarded` creates none). Its commits pushed after are pending, as if it had followed.
#[tokio::test]
async fn a_first_report_after_a_forced_push_replays_what_followed() {
    let app = spawn_app().await;
    push(&app, "refs/heads/main", Some(0), &[1], false).await;
    push(&app, "refs/heads/main", Some(1), &[2], false).await;
    push(&app, "refs/heads/main", Some(2), &[3], true).await; // 2 amended as 3
    push(&app, "refs/heads/main", Some(3), &[4], false).await;
    // It reports 2 (it reconciled before the amend reached it): 1 came before, never
    // expected; 3 replaced 2 (the forced push removed 1 and 2 by known push chains).
    let two = kustomization("ReconciliationFailed", "main", 2, at(10), "x");
    assert_eq!(send(&app, "prod-eu", &two).await, StatusCode::ACCEPTED);
    assert_eq!(
        state(&app, 1).await,
        None,
        "before it followed: no row, none created"
    );
    assert_eq!(state(&app, 2).await.as_deref(), Some("failed"));
    assert_eq!(state(&app, 3).await.as_deref(), Some("pending"));
    assert_eq!(state(&app, 4).await.as_deref(), Some("pending"));
}
