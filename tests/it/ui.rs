//! Part 13: the evidence UI as the server serves it (the browser suite, `scripts/ui-test.py`,
//! drives the pages themselves in Chromium).

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn the_page_and_every_deep_link_are_served_without_the_token_with_strict_headers() {
    let app = spawn_app().await; // FLUXTRAIL_API_TOKEN is set
    for path in [
        "/api/ui",
        "/api/ui/",
        "/api/ui/matrix?repository=github.com/acme/fleet&ref=main",
        "/api/ui/commits/1eabc9a41ca088515cab83f1cce49eb43e84b67f",
        "/api/ui/changes?cluster=prod-eu",
        "/api/ui/incidents?state=open",
        "/api/ui/dora",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        let body = r.text().await.unwrap();
        assert!(body.contains("/api/ui/assets/app.js"), "{path}");
        assert!(!body.contains("<script>"), "no inline script in the page");
    }
    // The API itself still wants the token.
    let r = app
        .client
        .get(app.url("/api/objects"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn assets_have_their_types_and_unknown_ones_are_404() {
    let app = spawn_app().await;
    for (name, ty) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("uPlot.min.css", "text/css; charset=utf-8"),
    ] {
        let r = app
            .client
            .get(app.url(&format!("/api/ui/assets/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        assert_eq!(r.headers()["content-type"], ty, "{name}");
    }
    let r = app
        .client
        .get(app.url("/api/ui/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app.client.post(app.url("/api/ui")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = app
        .client
        .head(app.url("/api/ui/dora"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn the_assets_stay_within_their_budget() {
    // 300 KB compressed is the target; uncompressed is a stricter bound.
    let total: usize = fluxtrail::http::ui::asset_sizes()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert!(total <= 300 * 1024, "{total} bytes");
}

#[tokio::test]
async fn the_matrix_view_summarises_each_commits_targets_per_cluster() {
    let app = spawn_app().await;
    let c = |n: u32| format!("ab{n:038x}");
    let body = github_push(
        None,
        "refs/heads/main",
        None,
        &[(1, c(1)), (2, c(2))],
        false,
    );
    let r = app
        .post_git(
            "github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "matrix-1"),
            ],
            &body,
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for (cluster, name, n, reason) in [
        ("prod-eu", "apps", 2, "ReconciliationSucceeded"),
        ("prod-eu", "infra", 1, "ReconciliationSucceeded"),
        ("staging", "apps", 2, "HealthCheckFailed"),
    ] {
        let ev = flux_event("kustomization-succeeded.json", |v| {
            v["involvedObject"]["name"] = serde_json::json!(name);
            v["reason"] = serde_json::json!(reason);
            v["severity"] = serde_json::json!(if reason.ends_with("Failed") {
                "error"
            } else {
                "info"
            });
            v["metadata"]["revision"] = serde_json::json!(format!("main@sha1:{}", c(n)));
        });
        let r = app
            .post_flux(&format!("/api/hooks/flux/{cluster}"), &ev)
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let q = "/api/commits?repository=github.com/acme/fleet-infra&ref=main";
    let (status, full) = app.get_json(q).await;
    assert_eq!(status, StatusCode::OK, "{full}");
    let (status, summary) = app.get_json(&format!("{q}&view=clusters")).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    for (f, s) in full["commits"]
        .as_array()
        .unwrap()
        .iter()
        .zip(summary["commits"].as_array().unwrap())
    {
        assert_eq!(f["sha"], s["sha"]);
        assert_eq!(s["targets"], serde_json::json!([]));
        assert_eq!(f["commit"], s["commit"]);
        // The summary is the count of the listed targets per cluster and state.
        let mut expected = std::collections::BTreeMap::<(String, String), u64>::new();
        for t in f["targets"].as_array().unwrap() {
            *expected
                .entry((
                    t["cluster"].as_str().unwrap().into(),
                    t["state"].as_str().unwrap().into(),
                ))
                .or_default() += 1;
        }
        let mut got = std::collections::BTreeMap::new();
        for cl in s["clusters"].as_array().unwrap() {
            let mut objects = 0;
            for (state, n) in cl["states"].as_object().unwrap() {
                got.insert(
                    (cl["cluster"].as_str().unwrap().to_string(), state.clone()),
                    n.as_u64().unwrap(),
                );
                objects += n.as_u64().unwrap();
            }
            assert_eq!(cl["objects"].as_u64().unwrap(), objects);
        }
        assert_eq!(got, expected, "{}", f["sha"]);
    }
    let head = &summary["commits"][0]["clusters"];
    assert_eq!(head[0]["cluster"], "prod-eu");
    assert_eq!(head[1]["states"]["failed"], 1, "{head}");
    // One cluster's targets only: the full listing's, filtered, for every commit; and its
    // summary alone.
    for cluster in ["staging", "prod-eu", "prod"] {
        let (_, only) = app.get_json(&format!("{q}&cluster={cluster}")).await;
        for commit in only["commits"].as_array().unwrap() {
            assert!(commit["targets"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["cluster"] == cluster));
        }
        let filtered: Vec<Value> = full["commits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c["targets"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|t| t["cluster"] == cluster);
                c
            })
            .collect();
        assert_eq!(only["commits"], Value::Array(filtered), "{cluster}");
        let (_, one) = app
            .get_json(&format!("{q}&view=clusters&cluster={cluster}"))
            .await;
        for commit in one["commits"].as_array().unwrap() {
            assert!(commit["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["cluster"] == cluster));
        }
    }
    let (status, _) = app.get_json(&format!("{q}&view=pretty")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
