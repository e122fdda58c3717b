//! Git hooks end to end, for every host: accepted push, bad and missing signatures, replay,
//! pings and test deliveries, and the edge's refusals (400, 404, 405, 413, 415).

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

/// One host's push: the fixture, the headers the host sends with it, and what must land.
struct HostPush {
    provider: &'static str,
    file: &'static str,
    headers: &'static [(&'static str, &'static str)],
    sha: &'static str,
    repository: &'static str,
    git_ref: &'static str,
}

const PUSHES: &[HostPush] = &[
    HostPush {
        provider: "github",
        file: "github/push-forced.json",
        headers: &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "11111111-0000-0000-0000-000000000001"),
        ],
        sha: "731f7eaddfb6af01cb2173e18f0f75b0ba780ef1",
        repository: "github.com/acme/fleet-infra",
        git_ref: "refs/heads/main",
    },
    HostPush {
        provider: "gitlab",
        file: "gitlab/push.json",
        headers: &[
            ("X-Gitlab-Event", "Push Hook"),
            ("Idempotency-Key", "22222222-0000-0000-0000-000000000001"),
        ],
        sha: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        repository: "example.com/mike/diaspora",
        git_ref: "refs/heads/master",
    },
    HostPush {
        provider: "azuredevops",
        file: "azuredevops/git-push.json",
        headers: &[],
        sha: "33b55f7cb7e7e245323987634f960cf4a6e6bc74",
        repository: "dev.azure.com/fabrikam-fiber-inc/fabrikam-fiber-git/fabrikam-fiber-git",
        git_ref: "refs/heads/master",
    },
    HostPush {
        provider: "bitbucket",
        file: "bitbucket/repo-push.json",
        headers: &[
            ("X-Event-Key", "repo:push"),
            ("X-Request-UUID", "33333333-0000-0000-0000-000000000001"),
        ],
        sha: "709d658dc5b6d6afcd46049c2f332ee3f515a67d",
        repository: "bitbucket.org/team_name/repo_name",
        git_ref: "refs/heads/name-of-branch",
    },
    HostPush {
        provider: "bitbucket-server",
        file: "bitbucket-server/refs-changed.json",
        headers: &[
            ("X-Event-Key", "repo:refs_changed"),
            ("X-Request-Id", "44444444-0000-0000-0000-000000000001"),
        ],
        sha: "178864a7d521b6f5e720b386b2c2b0ef8563e0dc",
        repository: "bitbucket.example.com/proj/repository",
        git_ref: "refs/heads/master",
    },
    HostPush {
        provider: "gitea",
        file: "gitea/push.json",
        headers: &[
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Event-Type", "push"),
            ("X-Gitea-Delivery", "55555555-0000-0000-0000-000000000001"),
        ],
        sha: "67b56589a45103f891bdee7c0546e5d40bc02001",
        repository: "localhost/example/example",
        git_ref: "refs/heads/master",
    },
    HostPush {
        provider: "forgejo",
        file: "forgejo/push.json",
        headers: &[
            ("X-Forgejo-Event", "push"),
            ("X-Gitea-Event", "push"),
            ("X-Forgejo-Delivery", "66666666-0000-0000-0000-000000000001"),
        ],
        sha: "4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70",
        repository: "codeberg.example/ops/fleet",
        git_ref: "refs/heads/master",
    },
];

/// What each host sends that must be answered `ignored` (pings, tests, unhandled events).
type Headers = &'static [(&'static str, &'static str)];
const IGNORED: &[(&str, &str, Headers)] = &[
    (
        "github",
        "github/ping.json",
        &[("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", "p-1")],
    ),
    (
        "gitlab",
        "gitlab/issue.json",
        &[("X-Gitlab-Event", "Issue Hook")],
    ),
    ("azuredevops", "azuredevops/test-notification.json", &[]),
    (
        "bitbucket",
        "bitbucket/repo-push.json",
        &[("X-Event-Key", "repo:fork")],
    ),
    (
        "bitbucket-server",
        "bitbucket-server/diagnostics-ping.json",
        &[("X-Event-Key", "diagnostics:ping")],
    ),
    (
        "gitea",
        "gitea/push-test-delivery.json",
        &[("X-Gitea-Event", "push")],
    ),
    (
        "forgejo",
        "gitea/push-test-delivery.json",
        &[("X-Forgejo-Event", "push")],
    ),
];

async fn json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status != StatusCode::OK || body != Value::Null {
        assert_eq!(ct.as_deref(), Some("application/json"), "{status} {body}");
    }
    (status, body)
}

#[tokio::test]
async fn every_host_push_is_recorded_and_readable_as_evidence() {
    let app = spawn_app().await;
    for p in PUSHES {
        let (status, body) = json(app.post_fixture(p.provider, p.file, p.headers).await).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{}: {body}", p.provider);
        assert_eq!(body["status"], "accepted", "{}", p.provider);
        let (status, ev) = app.evidence(p.sha).await;
        assert_eq!(status, StatusCode::OK, "{}", p.provider);
        let commit = &ev["commit"];
        assert_eq!(ev["sha"], p.sha);
        assert_eq!(commit["repository"], p.repository, "{}", p.provider);
        assert!(
            commit["refs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == p.git_ref),
            "{}: {ev}",
            p.provider
        );
        assert!(commit["pushedAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(ev["approval"], Value::Null);
        assert_eq!(ev["targets"], serde_json::json!([]));
    }
}

#[tokio::test]
async fn evidence_carries_the_commit_details_and_push() {
    let app = spawn_app().await;
    let p = &PUSHES[0];
    app.post_fixture(p.provider, p.file, p.headers).await;
    let (_, ev) = app
        .evidence("5f2d8a4c1b3e7f9a0d6c2b8e4f1a3c5d7e9b0a2c")
        .await;
    let c = &ev["commit"];
    assert_eq!(c["provider"], "github");
    assert_eq!(c["message"], "apps: bump podinfo to 6.5.4");
    assert_eq!(
        c["author"],
        serde_json::json!({"name": "Dana Ops", "email": "dana@acme.example"})
    );
    assert_eq!(c["timestamp"], "2026-08-07T10:10:02Z");
    assert_eq!(c["pushedBy"], "dana-ops");
    assert_eq!(
        c["url"],
        "https://github.com/acme/fleet-infra/commit/5f2d8a4c1b3e7f9a0d6c2b8e4f1a3c5d7e9b0a2c"
    );
}

#[tokio::test]
async fn bad_or_missing_signatures_are_refused_and_record_nothing() {
    let app = spawn_app().await;
    for p in PUSHES {
        let body = fixture(p.file);
        // HMAC hosts: the body changed by one byte (still valid JSON). Token hosts (GitLab,
        // Azure DevOps basic auth) sign nothing: a wrong credential instead.
        let mut tampered = body.clone();
        let at = tampered.len() - 1;
        tampered.insert(at, b' ');
        let (sent, auth, code) = match p.provider {
            "gitlab" => (
                body.clone(),
                vec![("X-Gitlab-Token".to_string(), "wrong".to_string())],
                "token_invalid",
            ),
            "azuredevops" => (
                body.clone(),
                vec![(
                    "Authorization".to_string(),
                    "Basic Zmx1eHRyYWlsOndyb25n".to_string(),
                )],
                "basic_auth_invalid",
            ),
            _ => (tampered, sign(p.provider, &body), "signature_invalid"),
        };
        let mut req = app.hook(p.provider).body(sent);
        for (k, v) in auth {
            req = req.header(k, v);
        }
        for (k, v) in p.headers {
            req = req.header(*k, *v);
        }
        let (status, err) = json(req.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", p.provider);
        assert_eq!(err["error"]["code"], code, "{}", p.provider);

        let mut req = app.hook(p.provider).body(body.clone());
        for (k, v) in p.headers {
            req = req.header(*k, *v);
        }
        let (status, err) = json(req.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", p.provider);
        let missing = match p.provider {
            "gitlab" => "token_missing",
            "azuredevops" => "basic_auth_missing",
            _ => "signature_missing",
        };
        assert_eq!(err["error"]["code"], missing, "{}", p.provider);

        let (status, _) = app.evidence(p.sha).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{} recorded despite a bad signature",
            p.provider
        );
    }
}

#[tokio::test]
async fn gitea_empty_signature_headers_are_no_signature() {
    let app = spawn_app().await;
    let resp = app
        .hook("gitea")
        .header("X-Gitea-Event", "push")
        .header("X-Gitea-Signature", "")
        .header("X-Hub-Signature-256", "")
        .body(fixture("gitea/push.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn previous_secret_is_accepted_during_rotation() {
    let mut vars = default_vars();
    vars.insert("FLUXTRAIL_GITHUB_SECRET".into(), "the-new-one".into());
    vars.insert(
        "FLUXTRAIL_GITHUB_SECRET_PREVIOUS".into(),
        GITHUB_SECRET.into(),
    );
    let app = spawn_with(vars).await;
    let p = &PUSHES[0];
    let resp = app.post_fixture(p.provider, p.file, p.headers).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn github_legacy_sha1_only_when_no_sha256_header() {
    use hmac::{Hmac, Mac};
    let app = spawn_app().await;
    let body = fixture("github/push-new-branch.json");
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let sha1 = format!("sha1={}", hex::encode(mac.finalize().into_bytes()));
    let send = |sig256: Option<&'static str>| {
        let mut req = app
            .hook("github")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "legacy-1")
            .header("X-Hub-Signature", sha1.clone())
            .body(body.clone());
        if let Some(s) = sig256 {
            req = req.header("X-Hub-Signature-256", s);
        }
        req.send()
    };
    // A wrong sha256 is not rescued by a right sha1.
    let bad = "sha256=0000000000000000000000000000000000000000000000000000000000000000";
    assert_eq!(
        send(Some(bad)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(None).await.unwrap().status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn redelivery_answers_duplicate_and_changes_nothing() {
    let app = spawn_app().await;
    for p in PUSHES {
        let first = app.post_fixture(p.provider, p.file, p.headers).await;
        assert_eq!(first.status(), StatusCode::ACCEPTED, "{}", p.provider);
        let (_, before) = app.evidence(p.sha).await;
        let (status, body) = json(app.post_fixture(p.provider, p.file, p.headers).await).await;
        assert_eq!(status, StatusCode::OK, "{}", p.provider);
        assert_eq!(
            body,
            serde_json::json!({"status": "duplicate"}),
            "{}",
            p.provider
        );
        let (_, after) = app.evidence(p.sha).await;
        assert_eq!(before, after, "{}", p.provider);
    }
}

#[tokio::test]
async fn the_same_push_through_a_new_delivery_id_changes_nothing() {
    // GitHub manual redelivery keeps its id, but a second webhook on the same repository
    // sends the same push with another id: recorded once, still one pusher and time.
    let app = spawn_app().await;
    let p = &PUSHES[0];
    app.post_fixture(p.provider, p.file, p.headers).await;
    let (_, first) = app.evidence(p.sha).await;
    let resp = app
        .post_fixture(
            p.provider,
            p.file,
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "another-hook"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let (_, second) = app.evidence(p.sha).await;
    assert_eq!(first, second);
}

#[tokio::test]
async fn pings_and_test_deliveries_are_ignored_and_record_nothing() {
    let app = spawn_app().await;
    for (provider, file, headers) in IGNORED {
        let (status, body) = json(app.post_fixture(provider, file, headers).await).await;
        assert_eq!(status, StatusCode::OK, "{provider}: {body}");
        assert_eq!(body["status"], "ignored", "{provider}");
        assert!(
            body["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{provider}"
        );
    }
    // The test deliveries carried real-looking commits; none was recorded.
    for sha in [
        "67b56589a45103f891bdee7c0546e5d40bc02001",
        "33b55f7cb7e7e245323987634f960cf4a6e6bc74",
        "709d658dc5b6d6afcd46049c2f332ee3f515a67d",
    ] {
        assert_eq!(app.evidence(sha).await.0, StatusCode::NOT_FOUND, "{sha}");
    }
}

#[tokio::test]
async fn pings_are_still_authenticated() {
    let app = spawn_app().await;
    let resp = app
        .hook("github")
        .header("X-GitHub-Event", "ping")
        .header("X-Hub-Signature-256", "sha256=00")
        .body(fixture("github/ping.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unconfigured_sources_are_refused_unless_insecure_switch() {
    let mut vars = default_vars();
    vars.retain(|k, _| !k.ends_with("_SECRET") && !k.ends_with("_TOKEN") && !k.ends_with("_BASIC"));
    let app = spawn_with(vars.clone()).await;
    for p in PUSHES {
        let (status, err) = json(app.post_fixture(p.provider, p.file, p.headers).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", p.provider);
        assert_eq!(err["error"]["code"], "source_not_configured");
    }
    vars.insert("FLUXTRAIL_INSECURE_ALLOW_UNSIGNED".into(), "true".into());
    let app = spawn_with(vars).await;
    for p in PUSHES {
        let resp = app.post_fixture(p.provider, p.file, p.headers).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{}", p.provider);
    }
}

#[tokio::test]
async fn form_encoded_deliveries_are_verified_over_the_raw_form_bytes() {
    let app = spawn_app().await;
    for (provider, headers) in [
        (
            "github",
            &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "form-1")][..],
        ),
        ("gitea", &[("X-Gitea-Event", "push")][..]),
    ] {
        let json_body = fixture(if provider == "github" {
            "github/push-new-branch.json"
        } else {
            "gitea/push.json"
        });
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(&json_body).unwrap())
            .finish();
        let mut req = app
            .client
            .post(app.url(&format!("/api/hooks/git/{provider}")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.clone());
        for (k, v) in sign(provider, form.as_bytes()) {
            req = req.header(k, v);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{provider}");
    }
    // Hosts that never send forms get 415 for one.
    let resp = app
        .client
        .post(app.url("/api/hooks/git/gitlab"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("payload=%7B%7D")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn malformed_json_is_400_after_authentication() {
    let app = spawn_app().await;
    let body = b"{\"ref\": \"refs/heads/main\", ";
    let (status, err) = json(
        app.post_git("github", &[("X-GitHub-Event", "push")], body)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "malformed_json");
    // Unsigned garbage is a 401, not a 400: nothing unauthenticated is parsed.
    let resp = app
        .hook("github")
        .header("X-GitHub-Event", "push")
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Missing event header.
    let (status, err) = json(app.post_git("github", &[], b"{}").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "missing_header");
    // Wrong types.
    let (status, err) = json(
        app.post_git(
            "github",
            &[("X-GitHub-Event", "push")],
            br#"{"ref":1,"before":"a","after":"b","repository":{}}"#,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], "malformed_json");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = spawn_app().await;
    for ct in [Some("text/plain"), None] {
        let mut req = app
            .client
            .post(app.url("/api/hooks/git/github"))
            .body(fixture("github/ping.json"));
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let (status, err) = json(req.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(err["error"]["code"], "unsupported_media_type");
    }
    // Parameters are fine.
    let body = fixture("github/ping.json");
    let mut req = app
        .client
        .post(app.url("/api/hooks/git/github"))
        .header("content-type", "application/json; charset=utf-8")
        .header("X-GitHub-Event", "ping")
        .body(body.clone());
    for (k, v) in sign("github", &body) {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_content_length() {
    let mut vars = default_vars();
    vars.insert("FLUXTRAIL_GIT_BODY_LIMIT".into(), "4096".into());
    let app = spawn_with(vars).await;
    let big = vec![b' '; 8192];
    let (status, err) = json(
        app.post_git("github", &[("X-GitHub-Event", "push")], &big)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(err["error"]["code"], "payload_too_large");
    // Chunked, no Content-Length: cut off while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 1024])).collect();
    let resp = app
        .hook("github")
        .header("X-GitHub-Event", "push")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Just under the limit passes the size check (and fails later, on the signature).
    let ok = vec![b' '; 4000];
    assert_eq!(
        app.client
            .post(app.url("/api/hooks/git/github"))
            .header("content-type", "application/json")
            .body(ok)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (reqwest::Method::GET, "/api/hooks/git/github", "POST"),
        (reqwest::Method::PUT, "/api/hooks/git/gitlab", "POST"),
        (
            reqwest::Method::POST,
            "/api/commits/6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "GET",
        ),
        (reqwest::Method::DELETE, "/", "GET, HEAD"),
    ] {
        let resp = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["allow"], allow, "{method} {path}");
        let (status, err) = json(resp).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(err["error"]["code"], "method_not_allowed");
    }
}

#[tokio::test]
async fn unknown_provider_and_paths_are_404() {
    let app = spawn_app().await;
    let (status, err) = json(app.post_git("svn", &[], b"{}").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "unknown_provider");
    let (status, err) = json(app.client.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "not_found");
}

#[tokio::test]
async fn readiness_probe_answers_200_empty() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn functions_host_forwarding_with_code_query_works() {
    // The host forwards the full path and query (with the function key in `code`).
    let app = spawn_app().await;
    let body = fixture("github/push-new-branch.json");
    let mut req = app
        .hook("github?code=c2VjcmV0LWZ1bmN0aW9uLWtleQ==")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "fwd-1")
        .header("x-functions-key", "another-key")
        .body(body.clone());
    for (k, v) in sign("github", &body) {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn tags_deletions_and_multi_ref_pushes() {
    let app = spawn_app().await;
    // Annotated tag: the dereferenced commit is recorded under the tag ref.
    let r = app
        .post_fixture(
            "github",
            "github/push-annotated-tag.json",
            &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "t-1")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (_, ev) = app
        .evidence("731f7eaddfb6af01cb2173e18f0f75b0ba780ef1")
        .await;
    assert_eq!(
        ev["commit"]["refs"],
        serde_json::json!(["refs/tags/v1.4.0"])
    );
    // The tag object itself is not a commit.
    assert_eq!(
        app.evidence("9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // A deletion is accepted and records the push, no commit.
    let r = app
        .post_fixture(
            "github",
            "github/push-delete-branch.json",
            &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "t-2")],
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    assert_eq!(body["commits"], 0);
    // SHA-256 deletion (64 zeros) from GitLab.
    let r = app
        .post_fixture(
            "gitlab",
            "gitlab/push-delete-sha256.json",
            &[("X-Gitlab-Event", "Push Hook")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Bitbucket DC: a tag creation and a branch deletion in one delivery.
    let r = app
        .post_fixture(
            "bitbucket-server",
            "bitbucket-server/refs-changed-tag-and-delete.json",
            &[("X-Event-Key", "repo:refs_changed")],
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["refs"],
        serde_json::json!(["refs/tags/v2.0.0", "refs/heads/hotfix"])
    );
    let (_, ev) = app
        .evidence("2b9c3c1f0e6a4d8b7c5e3a1f9d7b5c3a1e9f7d5b")
        .await;
    assert_eq!(
        ev["commit"]["refs"],
        serde_json::json!(["refs/tags/v2.0.0"])
    );
    assert_eq!(
        ev["commit"]["repository"],
        "bitbucket.example.com/ops/fleet"
    );
    assert_eq!(ev["commit"]["message"], Value::Null);
}
