//! Approval linking: a pull request's merge, its reviews and the push of its merge commit
//! may arrive in any order; in every order the evidence ends with the same approval.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// One delivery: provider, body, headers.
type Delivery = (&'static str, Vec<u8>, Vec<(&'static str, &'static str)>);

fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.clone());
            out.push(p);
        }
    }
    out
}

/// Rewrites a push fixture so that its new head is `sha`.
fn push_with_head(file: &str, edit: impl Fn(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&fixture(file)).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

async fn check_every_order(
    name: &str,
    deliveries: Vec<Delivery>,
    merge_sha: &str,
    expected: Value,
) {
    for order in permutations(&deliveries) {
        let app = spawn_app().await;
        let mut names = Vec::new();
        for (provider, body, headers) in &order {
            let resp = app.post_git(provider, headers, body).await;
            assert_eq!(resp.status(), StatusCode::ACCEPTED, "{name}: {headers:?}");
            names.push(format!("{headers:?}"));
        }
        let (status, ev) = app.evidence(merge_sha).await;
        assert_eq!(status, StatusCode::OK, "{name} in order {names:?}");
        let approval = &ev["approval"];
        for (k, v) in expected.as_object().unwrap() {
            assert_eq!(
                &approval[k], v,
                "{name}: approval.{k} in order {names:?}: {approval}"
            );
        }
        assert!(
            ev["commit"].is_object(),
            "{name}: the merge commit's push is recorded"
        );
    }
}

#[tokio::test]
async fn github_review_merge_and_push_in_all_six_orders() {
    let deliveries: Vec<Delivery> = vec![
        (
            "github",
            fixture("github/pull-request-review-approved.json"),
            vec![
                ("X-GitHub-Event", "pull_request_review"),
                ("X-GitHub-Delivery", "r"),
            ],
        ),
        (
            "github",
            fixture("github/pull-request-merged.json"),
            vec![
                ("X-GitHub-Event", "pull_request"),
                ("X-GitHub-Delivery", "m"),
            ],
        ),
        (
            "github",
            fixture("github/push-merge-commit.json"),
            vec![("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "p")],
        ),
    ];
    check_every_order(
        "github",
        deliveries,
        "1eabc9a41ca088515cab83f1cce49eb43e84b67f",
        json!({
            "provider": "github", "number": 42, "url": "https://github.com/acme/fleet-infra/pull/42",
            "mergedBy": "lee-lead", "approvers": ["sam-sre"], "author": "dana-ops",
            "headSha": "5f2d8a4c1b3e7f9a0d6c2b8e4f1a3c5d7e9b0a2c", "targetRef": "refs/heads/main",
            "repository": "github.com/acme/fleet-infra",
        }),
    )
    .await;
}

#[tokio::test]
async fn gitlab_approval_merge_and_push_in_all_orders() {
    let merge_sha = "f2ee2a4f4a6bd25a7dbd3a9c53ab2b1e6a1e5f83";
    let push = push_with_head("gitlab/push.json", |v| {
        v["after"] = json!(merge_sha);
        v["checkout_sha"] = json!(merge_sha);
        v["commits"][1]["id"] = json!(merge_sha);
    });
    let deliveries: Vec<Delivery> = vec![
        (
            "gitlab",
            fixture("gitlab/merge-request-approved.json"),
            vec![("X-Gitlab-Event", "Merge Request Hook")],
        ),
        (
            "gitlab",
            fixture("gitlab/merge-request-merge.json"),
            vec![("X-Gitlab-Event", "Merge Request Hook")],
        ),
        ("gitlab", push, vec![("X-Gitlab-Event", "Push Hook")]),
    ];
    check_every_order(
        "gitlab",
        deliveries,
        merge_sha,
        json!({"provider": "gitlab", "number": 1, "mergedBy": "root", "approvers": ["sreviewer"], "author": null,
               "url": "http://example.com/mike/diaspora/-/merge_requests/1"}),
    )
    .await;
}

#[tokio::test]
async fn azuredevops_merge_and_push_in_both_orders() {
    let merge_sha = "eef717f69257a6333f221566c1c987dc94cc0d72";
    let push = push_with_head("azuredevops/git-push.json", |v| {
        v["resource"]["commits"][0]["commitId"] = json!(merge_sha);
        v["resource"]["refUpdates"][0]["newObjectId"] = json!(merge_sha);
        v["resource"]["repository"]["remoteUrl"] =
            json!("https://dev.azure.com/fabrikam/DefaultCollection/_git/Fabrikam");
    });
    let deliveries: Vec<Delivery> = vec![
        (
            "azuredevops",
            fixture("azuredevops/pullrequest-merged.json"),
            vec![],
        ),
        ("azuredevops", push, vec![]),
    ];
    check_every_order(
        "azuredevops",
        deliveries,
        merge_sha,
        json!({"provider": "azuredevops", "number": 1, "mergedBy": "fabrikamfiber4@hotmail.com", "author": "fabrikamfiber4@hotmail.com",
               "approvers": ["fabrikamfiber4@hotmail.com"], "repository": "dev.azure.com/fabrikam/fabrikam/fabrikam",
               "headSha": "53d54ac915144006c2c9e90d2c7d3880920db49c"}),
    )
    .await;
}

async fn bitbucket_cloud_orders() {
    let deliveries: Vec<Delivery> = vec![
        (
            "bitbucket",
            fixture("bitbucket/pullrequest-approved.json"),
            vec![("X-Event-Key", "pullrequest:approved")],
        ),
        (
            "bitbucket",
            fixture("bitbucket/pullrequest-fulfilled.json"),
            vec![("X-Event-Key", "pullrequest:fulfilled")],
        ),
        (
            "bitbucket",
            fixture("bitbucket/repo-push.json"),
            vec![("X-Event-Key", "repo:push")],
        ),
    ];
    check_every_order(
        "bitbucket",
        deliveries,
        "709d658dc5b6d6afcd46049c2f332ee3f515a67d",
        json!({"provider": "bitbucket", "number": 7, "mergedBy": "lee", "approvers": ["ria", "sam"]}),
    )
    .await;
}

/// Bitbucket Cloud names the merge commit by 12 hex digits (`SOURCES.md`): resolved against
/// the push's full ids, whichever arrives first.
#[tokio::test]
async fn bitbucket_cloud_approval_fulfil_and_push_in_all_orders() {
    bitbucket_cloud_orders().await;
}

#[tokio::test]
async fn bitbucket_server_approval_merge_and_push_in_all_orders() {
    bitbucket_server_orders("").await;
}

/// Atlassian's own example shape, `"links":{"self":[null]}`: accepted, the link ignored.
#[tokio::test]
async fn bitbucket_server_events_with_null_links_in_all_orders() {
    bitbucket_server_orders("-self-null").await;
}

async fn bitbucket_server_orders(variant: &str) {
    let merge_sha = "7e48f426f0a6e47c5b5e862c31be6ca5f0f9ade2";
    let push = push_with_head("bitbucket-server/refs-changed.json", |v| {
        v["changes"][0]["toHash"] = json!(merge_sha);
    });
    let deliveries: Vec<Delivery> = vec![
        (
            "bitbucket-server",
            fixture(&format!(
                "bitbucket-server/pr-reviewer-approved{variant}.json"
            )),
            vec![("X-Event-Key", "pr:reviewer:approved")],
        ),
        (
            "bitbucket-server",
            fixture(&format!("bitbucket-server/pr-merged{variant}.json")),
            vec![("X-Event-Key", "pr:merged")],
        ),
        (
            "bitbucket-server",
            push,
            vec![("X-Event-Key", "repo:refs_changed")],
        ),
    ];
    check_every_order(
        "bitbucket-server",
        deliveries,
        merge_sha,
        json!({"provider": "bitbucket-server", "number": 9, "mergedBy": "admin", "author": "admin",
               "approvers": ["reviewer1", "reviewer3"], "repository": "bitbucket.example.com/proj/repository"}),
    )
    .await;
}

#[tokio::test]
async fn gitea_approval_merge_and_push_in_all_orders() {
    let merge_sha = "8f4e3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f";
    let push = push_with_head("gitea/push.json", |v| {
        v["before"] = json!("67b56589a45103f891bdee7c0546e5d40bc02001");
        v["after"] = json!(merge_sha);
        v["commits"][0]["id"] = json!(merge_sha);
        v["head_commit"]["id"] = json!(merge_sha);
    });
    let deliveries: Vec<Delivery> = vec![
        (
            "gitea",
            fixture("gitea/pull-request-approved.json"),
            vec![
                ("X-Gitea-Event", "pull_request_approved"),
                ("X-Gitea-Event-Type", "pull_request_review_approved"),
            ],
        ),
        (
            "gitea",
            fixture("gitea/pull-request-merged.json"),
            vec![("X-Gitea-Event", "pull_request")],
        ),
        ("gitea", push, vec![("X-Gitea-Event", "push")]),
    ];
    check_every_order(
        "gitea",
        deliveries,
        merge_sha,
        json!({"provider": "gitea", "number": 3, "mergedBy": "example", "approvers": ["reviewer"], "author": "dev"}),
    )
    .await;
}

#[tokio::test]
async fn a_dismissed_review_no_longer_approves() {
    let app = spawn_app().await;
    app.post_fixture(
        "github",
        "github/pull-request-review-approved.json",
        &[("X-GitHub-Event", "pull_request_review")],
    )
    .await;
    app.post_fixture(
        "github",
        "github/pull-request-merged.json",
        &[("X-GitHub-Event", "pull_request")],
    )
    .await;
    let mut dismissed: Value =
        serde_json::from_slice(&fixture("github/pull-request-review-approved.json")).unwrap();
    dismissed["action"] = json!("dismissed");
    dismissed["review"]["state"] = json!("dismissed");
    dismissed["review"]["submitted_at"] = json!("2026-08-07T10:05:00Z");
    let r = app
        .post_git(
            "github",
            &[("X-GitHub-Event", "pull_request_review")],
            &serde_json::to_vec(&dismissed).unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (_, ev) = app
        .evidence("1eabc9a41ca088515cab83f1cce49eb43e84b67f")
        .await;
    assert_eq!(ev["approval"]["approvers"], json!([]));
    assert_eq!(ev["approval"]["reviews"][0]["approved"], json!(false));
    // Evidence without a push: the commit is unknown, the approval is known.
    assert_eq!(ev["commit"], Value::Null);
}
