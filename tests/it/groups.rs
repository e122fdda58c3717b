//! Part 11 over HTTP: one group per cause (contract §9) and delivery metrics (§8). Runs on
//! SQLite and, in the test command, on Azurite.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::audit::{at, c, push, report, window};
use crate::helpers::*;

fn of_type<'a>(messages: &'a [Value], t: &str) -> Vec<&'a Value> {
    let t = format!("io.fluxtrail.{t}");
    messages
        .iter()
        .filter(|m| m["type"] == t.as_str())
        .collect()
}

/// Waits until `n` object messages and `g` group messages are out, and a little longer (a
/// message sent twice would show).
async fn settle(app: &TestApp, n: usize, g: usize) -> (Vec<Value>, Vec<Value>) {
    let objects = app.wait_messages(n).await;
    let groups = app.wait_group_messages(g).await;
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let (objects2, groups2) = (app.messages(), app.group_messages());
    assert_eq!(objects2.len(), objects.len(), "{objects2:#?}");
    assert_eq!(groups2.len(), groups.len(), "{groups2:#?}");
    assert_eq!(objects.len(), n, "{objects:#?}");
    assert_eq!(groups.len(), g, "{groups:#?}");
    (objects, groups)
}

#[tokio::test]
async fn one_cause_is_one_group_across_objects_and_clusters() {
    let app = spawn_app().await;
    push(&app, None, &[1]).await;
    report(&app, "prod-eu", "apps", 1, 0, true).await;
    report(&app, "prod-eu", "infra", 1, 5, true).await;
    report(&app, "prod-us", "apps", 1, 9, true).await;
    // Flux repeats itself: no new incident, no new group.
    report(&app, "prod-eu", "apps", 1, 300, true).await;
    let (objects, groups) = settle(&app, 3, 1).await;
    let failed = of_type(&objects, "apply.failed");
    let ids: BTreeSet<&str> = failed
        .iter()
        .map(|m| m["data"]["groupId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one cause, one group: {failed:#?}");
    let group = *ids.first().unwrap();
    assert!(group.starts_with("grp-"));
    let opened = &groups[0];
    assert_eq!(opened["type"], "io.fluxtrail.group.opened");
    assert_eq!(opened["subject"], group);
    assert_eq!(opened["data"]["groupId"], group);
    assert_eq!(opened["data"]["sha"], c(1));
    assert_eq!(opened["data"]["repository"], "github.com/acme/fleet");
    assert_eq!(opened["data"]["first"]["cluster"], "prod-eu");
    assert_eq!(opened["data"]["first"]["name"], "apps");
    assert_eq!(opened["data"]["first"]["reason"], "HealthCheckFailed");

    let (status, open) = app.get_json("/api/groups?state=open").await;
    assert_eq!(status, StatusCode::OK);
    let list = open["groups"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{open}");
    assert_eq!(list[0]["groupId"], group);
    assert_eq!(list[0]["open"], 3);
    assert_eq!(list[0]["clusters"], json!(["prod-eu", "prod-us"]));
    assert_eq!(list[0]["members"].as_array().unwrap().len(), 3);
    assert_eq!(open["next"], Value::Null);

    // Two recover: the group stays open. The last one resolves it, once.
    report(&app, "prod-eu", "apps", 1, 600, false).await;
    report(&app, "prod-us", "apps", 1, 610, false).await;
    let (objects, _) = settle(&app, 5, 1).await;
    for m in of_type(&objects, "apply.recovered") {
        assert_eq!(m["data"]["groupId"], group, "{m}");
    }
    report(&app, "prod-eu", "infra", 1, 900, false).await;
    let (_, groups) = settle(&app, 6, 2).await;
    let resolved = &groups[1];
    assert_eq!(resolved["type"], "io.fluxtrail.group.resolved");
    assert_eq!(resolved["data"]["groupId"], group);
    assert_eq!(resolved["data"]["clusters"], json!(["prod-eu", "prod-us"]));
    assert_eq!(resolved["data"]["members"].as_array().unwrap().len(), 3);
    assert_eq!(resolved["data"]["openedAt"], "2026-11-02T10:00:00Z");
    assert_eq!(resolved["data"]["resolvedAt"], "2026-11-02T10:15:00Z");
    let (_, open) = app.get_json("/api/groups?state=open").await;
    assert_eq!(open["groups"], json!([]));
    let (_, done) = app.get_json("/api/groups?state=resolved").await;
    assert_eq!(done["groups"][0]["groupId"], group);
    assert_eq!(done["groups"][0]["state"], "resolved");
    assert_eq!(done["groups"][0]["open"], 0);

    // The same cause failing again later is a new occurrence: a new group.
    report(&app, "prod-eu", "apps", 1, 1200, true).await;
    let (objects, groups) = settle(&app, 7, 3).await;
    let again = objects.last().unwrap();
    assert_ne!(again["data"]["groupId"], group);
    assert_eq!(groups[2]["type"], "io.fluxtrail.group.opened");
    assert_eq!(groups[2]["data"]["groupId"], again["data"]["groupId"]);
    let (_, all) = app.get_json("/api/groups").await;
    assert_eq!(all["groups"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(all["groups"][0]["state"], "open");
    assert_eq!(all["groups"][1]["state"], "resolved");
}

/// An incident re-announced at another revision stays in the group its first failure opened
/// (a false `group.resolved` while the object is still broken would close the ticket too
/// early); the new revision opens no group of its own for it.
#[tokio::test]
async fn an_incident_whose_failing_revision_changes_stays_in_its_group() {
    let app = spawn_app().await;
    push(&app, None, &[1]).await;
    report(&app, "prod-eu", "apps", 1, 0, true).await;
    push(&app, Some(1), &[2]).await;
    report(&app, "prod-eu", "apps", 2, 300, true).await;
    let (objects, groups) = settle(&app, 2, 1).await;
    assert_eq!(objects[0]["data"]["sha"], c(1));
    assert_eq!(objects[1]["data"]["sha"], c(2));
    assert_eq!(
        objects[0]["data"]["incidentId"],
        objects[1]["data"]["incidentId"]
    );
    assert_eq!(objects[0]["data"]["groupId"], objects[1]["data"]["groupId"]);
    assert_eq!(groups[0]["data"]["sha"], c(1));
    report(&app, "prod-eu", "apps", 2, 600, false).await;
    let (objects, groups) = settle(&app, 3, 2).await;
    assert_eq!(objects[2]["data"]["groupId"], objects[0]["data"]["groupId"]);
    assert_eq!(groups[1]["type"], "io.fluxtrail.group.resolved");
}

/// Retiring an object closes its incident without a recovery; its group counts it closed,
/// and resolves when the last other member recovers.
#[tokio::test]
async fn a_retired_objects_incident_leaves_its_group() {
    let app = spawn_app().await;
    push(&app, None, &[1]).await;
    report(&app, "prod-eu", "apps", 1, 0, true).await;
    report(&app, "prod-eu", "infra", 1, 5, true).await;
    settle(&app, 2, 1).await;
    let (status, _) = app
        .post_json("/api/objects/prod-eu/Kustomization/flux-system/apps/retire")
        .await;
    assert_eq!(status, StatusCode::OK);
    // Nothing published for the retirement itself.
    settle(&app, 2, 1).await;
    report(&app, "prod-eu", "infra", 1, 600, false).await;
    let (_, groups) = settle(&app, 3, 2).await;
    assert_eq!(groups[1]["type"], "io.fluxtrail.group.resolved");
    let (_, done) = app.get_json("/api/groups?state=resolved").await;
    let members = done["groups"][0]["members"].as_array().unwrap();
    let retired: Vec<&Value> = members
        .iter()
        .filter(|m| m["closedBy"] == "retired")
        .collect();
    assert_eq!(retired.len(), 1, "{done}");
    assert_eq!(retired[0]["name"], "apps");
}

/// Forty objects failing at once on one commit, their events concurrent: one group, one
/// `group.opened`, every `apply.failed` naming it.
#[tokio::test]
async fn a_burst_of_failures_opens_one_group_once() {
    let app = spawn_app().await;
    push(&app, None, &[1]).await;
    let mut tasks = vec![];
    for i in 0..40 {
        let cluster = if i % 2 == 0 { "prod-eu" } else { "prod-us" };
        let body = flux_event("kustomization-succeeded.json", |v| {
            v["involvedObject"]["name"] = json!(format!("app-{i}"));
            v["reason"] = json!("HealthCheckFailed");
            v["severity"] = json!("error");
            v["message"] = json!("health check failed");
            v["timestamp"] = json!(crate::audit::rfc(at(i)));
            v["metadata"]["revision"] = json!(format!("main@sha1:{}", c(1)));
        });
        let client = app.client.clone();
        let url = app.url(&format!("/api/hooks/flux/{cluster}"));
        tasks.push(tokio::spawn(async move {
            flux_request(&client, &url, &body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::ACCEPTED);
    }
    let (objects, groups) = settle(&app, 40, 1).await;
    let ids: BTreeSet<&str> = objects
        .iter()
        .map(|m| m["data"]["groupId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(groups[0]["data"]["groupId"], *ids.first().unwrap());
    let (_, open) = app.get_json("/api/groups?state=open&limit=1").await;
    assert_eq!(open["groups"][0]["memberCount"], 40);
    assert_eq!(open["groups"][0]["members"].as_array().unwrap().len(), 40);
}

#[tokio::test]
async fn group_parameters_are_checked() {
    let app = spawn_app().await;
    for q in ["state=closed", "limit=0", "cursor=zzz", "colour=red"] {
        let (status, body) = app.get_json(&format!("/api/groups?{q}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
    }
    let resp = app.client.get(app.url("/api/groups")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

fn cluster<'a>(v: &'a Value, c: &str) -> &'a Value {
    v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["cluster"] == c)
        .unwrap_or_else(|| panic!("{c} in {v}"))
}

/// Delivery metrics from a small history, through the real path (pushes, Flux events, the
/// dispatcher's incident index). Commits are pushed at the server's clock and timestamped
/// 09:00 by their committer; clusters report from 10:00 (`at(0)`).
#[tokio::test]
async fn delivery_metrics_from_what_really_ran() {
    let app = spawn_app().await;
    push(&app, None, &[1]).await;
    // Commit 1: two objects of prod-eu apply it ten minutes apart (one deployment, from the
    // first), prod-us applies it too.
    report(&app, "prod-eu", "apps", 1, 0, false).await;
    report(&app, "prod-eu", "infra", 1, 600, false).await;
    report(&app, "prod-us", "apps", 1, 60, false).await;
    // Commit 2 fails on prod-eu's apps, recovers ten minutes later: a failed deployment,
    // one restore of 600 s.
    push(&app, Some(1), &[2]).await;
    report(&app, "prod-eu", "apps", 2, 1000, true).await;
    report(&app, "prod-eu", "apps", 2, 1600, false).await;
    report(&app, "prod-eu", "infra", 2, 1700, false).await;
    // Commits 3 and 4 pushed; prod-eu applies 4 directly: 3 is superseded, no deployment.
    push(&app, Some(2), &[3]).await;
    push(&app, Some(3), &[4]).await;
    report(&app, "prod-eu", "apps", 4, 3000, false).await;
    // A commit no push told us about: a deployment without lead time.
    let unknown = format!("b0{}", &c(99)[2..]);
    let body = flux_event("kustomization-succeeded.json", |v| {
        v["involvedObject"]["name"] = json!("apps");
        v["timestamp"] = json!(crate::audit::rfc(at(3600)));
        v["metadata"]["revision"] = json!(format!("main@sha1:{unknown}"));
    });
    assert_eq!(
        app.post_flux("/api/hooks/flux/prod-us", &body)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    // prod-us's apps fails at commit 4 and is still failing.
    report(&app, "prod-us", "apps", 4, 4000, true).await;
    settle(&app, 3, 3).await;

    let (status, v) = app
        .get_json(&format!("/api/dora?{}", window(-3600, 7200)))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let eu = cluster(&v, "prod-eu");
    assert_eq!(eu["deployments"], 3, "commits 1, 2, 4: {eu}");
    assert_eq!(eu["failedDeployments"], 1);
    assert_eq!(eu["changeFailureRate"], 0.333);
    // Lead times (committed 09:00): 1 at 10:00, 2 at 10:26:40, 4 at 10:50.
    assert_eq!(
        eu["leadTimeSeconds"],
        json!({"n": 3, "p50": 5200, "p90": 6600})
    );
    assert_eq!(eu["pushToApplySeconds"]["n"], 3);
    assert_eq!(
        eu["timeToRestoreSeconds"],
        json!({"n": 1, "p50": 600, "p90": 600})
    );
    assert_eq!(eu["openIncidents"], 0);
    let us = cluster(&v, "prod-us");
    assert_eq!(
        us["deployments"], 3,
        "commit 1, the unknown one, commit 4: {us}"
    );
    assert_eq!(us["failedDeployments"], 1);
    assert_eq!(
        us["leadTimeSeconds"]["n"], 1,
        "commit 4 never applied there; the unknown one has no timestamp"
    );
    assert_eq!(us["timeToRestoreSeconds"]["n"], 0);
    assert_eq!(us["openIncidents"], 1);
    let fleet = &v["fleet"];
    assert_eq!(fleet["deployments"], 6);
    assert_eq!(fleet["failedDeployments"], 2);
    assert_eq!(fleet["changeFailureRate"], 0.333);
    assert_eq!(fleet["openIncidents"], 1);
    assert_eq!(fleet["leadTimeSeconds"]["n"], 4);
    // 6 deployments over 3 hours.
    assert_eq!(fleet["deploymentsPerDay"], 48.0);

    // Window edges: `to` is exclusive (commit 2's first report at 1000 is out).
    let (_, v) = app
        .get_json(&format!("/api/dora?{}&cluster=prod-eu", window(0, 1000)))
        .await;
    assert_eq!(v["clusters"].as_array().unwrap().len(), 1);
    let eu = cluster(&v, "prod-eu");
    assert_eq!(eu["deployments"], 1);
    assert_eq!(eu["failedDeployments"], 0);
    assert_eq!(eu["timeToRestoreSeconds"]["n"], 0);
    // `from` is inclusive.
    let (_, v) = app
        .get_json(&format!("/api/dora?{}&cluster=prod-eu", window(1000, 1001)))
        .await;
    assert_eq!(cluster(&v, "prod-eu")["deployments"], 1);
    assert_eq!(cluster(&v, "prod-eu")["timeToRestoreSeconds"]["n"], 1);
    // Another repository's commits: none.
    let (_, v) = app
        .get_json(&format!(
            "/api/dora?{}&repository=github.com/acme/other",
            window(-3600, 7200)
        ))
        .await;
    assert_eq!(v["fleet"]["deployments"], 0);
    assert_eq!(v["fleet"]["changeFailureRate"], Value::Null);
    assert_eq!(
        v["fleet"]["leadTimeSeconds"],
        json!({"n": 0, "p50": null, "p90": null})
    );
    let (_, v) = app
        .get_json(&format!(
            "/api/dora?{}&repository=https://github.com/acme/fleet.git",
            window(-3600, 7200)
        ))
        .await;
    assert_eq!(v["fleet"]["deployments"], 5, "all but the unknown commit");
}

#[tokio::test]
async fn dora_parameters_are_checked() {
    let app = spawn_app().await;
    for q in [
        "from=yesterday",
        "to=",
        "cluster=a&cluster=b",
        "limit=5",
        "repository=%20",
    ] {
        let (status, body) = app.get_json(&format!("/api/dora?{q}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
    }
    let (status, v) = app.get_json("/api/dora").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["clusters"], json!([]));
    assert_eq!(v["fleet"]["deployments"], 0);
}

/// The pair rows DORA counts deployments from are a commutative merge: the same reports in
/// any order, with duplicates, give the same deployments, failures and lead times — three
/// objects of one cluster applying one commit at different times (one late, older report),
/// one failing before its success, one failing after its success.
#[tokio::test]
async fn the_delivery_rollup_is_the_same_in_every_order() {
    // (object, cluster seconds, failed)
    let events: [(&str, i64, bool); 6] = [
        ("apps", 100, false),
        ("infra", 50, true),
        ("infra", 200, false),
        ("web", 30, false),
        ("apps", 400, true),
        ("apps", 100, false), // a retry of the first
    ];
    let orders: [[usize; 6]; 4] = [
        [0, 1, 2, 3, 4, 5],
        [5, 4, 3, 2, 1, 0],
        [3, 4, 0, 2, 5, 1],
        [4, 2, 5, 1, 3, 0],
    ];
    let mut answers = vec![];
    for order in orders {
        let app = spawn_app().await;
        push(&app, None, &[1]).await;
        for i in order {
            let (name, s, failed) = events[i];
            if i == 0 || i == 5 {
                // The same bytes twice: one of the two is answered 200 (a duplicate).
                let body = flux_event("kustomization-succeeded.json", |v| {
                    v["involvedObject"]["name"] = json!(name);
                    v["timestamp"] = json!(crate::audit::rfc(at(s)));
                    v["metadata"]["revision"] = json!(format!("main@sha1:{}", c(1)));
                });
                let status = app
                    .post_flux("/api/hooks/flux/prod-eu", &body)
                    .await
                    .status();
                assert!(status.is_success(), "{status}");
            } else {
                report(&app, "prod-eu", name, 1, s, failed).await;
            }
        }
        let (status, mut v) = app
            .get_json(&format!("/api/dora?{}", window(-3600, 3600)))
            .await;
        assert_eq!(status, StatusCode::OK);
        let eu = cluster(&v, "prod-eu").clone();
        assert_eq!(eu["deployments"], 1, "{order:?}: {eu}");
        assert_eq!(eu["failedDeployments"], 1, "{order:?}: {eu}");
        // Committed 09:00, first success (web's) at 10:00:30.
        assert_eq!(
            eu["leadTimeSeconds"],
            json!({"n": 1, "p50": 3630, "p90": 3630}),
            "{order:?}"
        );
        // Receipts (server clock) and incidents (which depend on the order a late failure
        // arrives in, by the object's own rules) are not part of the comparison.
        for key in [
            "pushToApplySeconds",
            "timeToRestoreSeconds",
            "openIncidents",
        ] {
            v["clusters"][0].as_object_mut().unwrap().remove(key);
            v["fleet"].as_object_mut().unwrap().remove(key);
        }
        answers.push(v);
    }
    for a in &answers[1..] {
        assert_eq!(a, &answers[0]);
    }
}
