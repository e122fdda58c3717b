//! The read API: token protection, sha validation, 404, health, and evidence surviving a
//! restart on the same data directory.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn read_api_requires_the_token_when_set() {
    let app = spawn_app().await;
    let url = app.url("/api/commits/6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    let resp = app.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "token_missing");
    let resp = app
        .client
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = app
        .client
        .get(&url)
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = app.client.get(app.url("/api/health")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn read_api_is_open_without_a_token_configured() {
    let mut vars = default_vars();
    vars.remove("FLUXTRAIL_API_TOKEN");
    let app = spawn_with(vars).await;
    let resp = app.client.get(app.url("/api/health")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_and_unknown_shas() {
    let app = spawn_app().await;
    for bad in [
        "abc",
        "zz3728f27ae82c7b1a177c8d03f9e96e0adf2466",
        "6113728f27ae82c7b1a177c8d03f9e96e0adf246ff",
    ] {
        let (status, body) = app.evidence(bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["code"], "invalid_sha");
    }
    let (status, body) = app
        .evidence("6113728f27ae82c7b1a177c8d03f9e96e0adf246")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "commit_not_found");
}

#[tokio::test]
async fn upper_case_sha_reads_the_same_evidence() {
    let app = spawn_app().await;
    app.post_fixture(
        "github",
        "github/push-new-branch.json",
        &[("X-GitHub-Event", "push")],
    )
    .await;
    let (status, ev) = app
        .evidence("6113728F27AE82C7B1A177C8D03F9E96E0ADF246")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ev["sha"], "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
}

#[tokio::test]
async fn health_reports_store_and_publisher() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(app.url("/api/health"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["store"]["ok"], true);
    let backend = if std::env::var("FLUXTRAIL_TEST_STORE").as_deref() == Ok("tables") {
        "tables"
    } else {
        "sqlite"
    };
    assert_eq!(body["store"]["backend"], backend);
}

#[tokio::test]
async fn evidence_survives_a_restart_on_the_same_data_directory() {
    let mut app = spawn_app().await;
    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "restart-1"),
    ];
    assert_eq!(
        app.post_fixture("github", "github/push-forced.json", &headers)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let (_, before) = app
        .evidence("731f7eaddfb6af01cb2173e18f0f75b0ba780ef1")
        .await;
    app.restart().await;
    let (status, after) = app
        .evidence("731f7eaddfb6af01cb2173e18f0f75b0ba780ef1")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(before, after);
    // The idempotency record survived too.
    let resp = app
        .post_fixture("github", "github/push-forced.json", &headers)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "duplicate");
}
