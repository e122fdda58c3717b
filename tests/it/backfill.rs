//! Part 12: backfill from the Git hosts' APIs (contract §11), against the stand-in
//! (`tests/standin`) serving the hosts' documented answers. No test reaches the internet.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use fluxtrail::backfill::{ApiError, HostApi, HostConfig, HostKind};
use fluxtrail::config::Secret;
use fluxtrail::domain::CommitSha;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::standin::{Scripted, StandIn};

const TOKEN: &str = "ghp_backfill-test-token";

fn c(n: u32) -> String {
    format!("bacf11{n:034x}")
}

fn sha(s: &str) -> CommitSha {
    CommitSha::parse(s).unwrap()
}

fn api(kind: HostKind, standin: &StandIn, timeout: Duration) -> HostApi {
    let config = HostConfig::new(kind, &standin.url(), Secret::new(TOKEN)).unwrap();
    HostApi::new(&config, timeout)
}

/// The app with the GitHub API on the stand-in; repositories live on `127.0.0.1` (the
/// stand-in's host), so the API serves them.
async fn app_with(standin: &StandIn, extra: &[(&str, &str)]) -> TestApp {
    let mut vars = default_vars();
    for (k, v) in [
        ("FLUXTRAIL_GITHUB_API_TOKEN", TOKEN),
        ("FLUXTRAIL_GITHUB_API_URL", standin.url().as_str()),
        ("FLUXTRAIL_BACKFILL_DELAY", "0s"),
        ("FLUXTRAIL_BACKFILL_RETRY_MAX", "1s"),
    ]
    .iter()
    .chain(extra)
    {
        vars.insert(k.to_string(), v.to_string());
    }
    spawn_with(vars).await
}

/// A GitHub push on the stand-in's host (`127.0.0.1/acme/fleet`).
async fn push(app: &TestApp, before: Option<u32>, commits: &[u32]) {
    let list: Vec<(u32, String)> = commits.iter().map(|n| (*n, c(*n))).collect();
    let body = github_push(
        Some("acme/fleet"),
        "refs/heads/main",
        before.map(c),
        &list,
        false,
    );
    let body = String::from_utf8(body)
        .unwrap()
        .replace("github.com", "127.0.0.1");
    let delivery = format!("push-{before:?}-{commits:?}");
    let r = app
        .post_git(
            "github",
            &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", &delivery)],
            body.as_bytes(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

async fn applied(app: &TestApp, n: u32, s: i64) {
    let t = DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + chrono::Duration::seconds(s);
    let body = flux_event("kustomization-succeeded.json", |v| {
        v["timestamp"] = json!(t.to_rfc3339_opts(SecondsFormat::Secs, true));
        v["metadata"]["revision"] = json!(format!("main@sha1:{}", c(n)));
    });
    let r = app.post_flux("/api/hooks/flux/prod-eu", &body).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// Polls `check` on the evidence of commit `n` until it holds (10 s at most).
async fn eventually(app: &TestApp, n: u32, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ev) = app.evidence(&c(n)).await;
        if check(&ev) {
            return ev;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {ev:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn health(app: &TestApp) -> Value {
    let (status, h) = app.get_json("/api/health").await;
    assert_eq!(status, StatusCode::OK, "{h}");
    h
}

/// Polls `/api/health` until `check` holds for its `backfill.queue` (10 s at most).
async fn wait_queue(app: &TestApp, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let h = health(app).await;
        if check(&h["backfill"]["queue"]) {
            return h;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_host_api_answers_in_the_webhook_types() {
    let s = StandIn::start().await;
    let t = Duration::from_secs(5);
    // GitHub: commit, the merged pull request with its reviews over two pages, compare.
    let gh = api(HostKind::GitHub, &s, t);
    let commit = gh
        .commit("github.com/octocat/hello-world", &sha(&c(1)))
        .await
        .unwrap();
    assert_eq!(commit.sha.as_str(), c(1));
    assert_eq!(commit.message.as_deref(), Some("Fix all the bugs"));
    assert_eq!(
        commit.author.as_ref().unwrap().email.as_deref(),
        Some("support@github.com")
    );
    assert_eq!(commit.timestamp.as_deref(), Some("2011-04-14T16:00:49Z"));
    let pr = gh
        .pull_request("github.com/octocat/hello-world", &sha(&c(1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pr.number, 1347);
    assert_eq!(pr.author.as_deref(), Some("octocat"));
    let merge = pr.merge.as_ref().unwrap();
    assert_eq!(merge.merged_by.as_deref(), Some("hubot"));
    assert_eq!(merge.target_ref.as_deref(), Some("refs/heads/master"));
    let approvers: Vec<(&str, bool)> = pr
        .reviews
        .iter()
        .map(|r| (r.user.as_str(), r.approved))
        .collect();
    assert_eq!(
        approvers,
        [("monalisa", true), ("hubot", true)],
        "COMMENTED says nothing"
    );
    assert!(
        s.seen()
            .iter()
            .any(|r| r.path.contains("/reviews?per_page=100&page=2")),
        "the second page was followed"
    );
    s.compare(&c(1), &c(3), &[c(2), c(3)]);
    let between = gh
        .compare("github.com/octocat/hello-world", &sha(&c(1)), &sha(&c(3)))
        .await
        .unwrap();
    assert_eq!(
        between
            .iter()
            .map(|c| c.sha.to_string())
            .collect::<Vec<_>>(),
        [c(2), c(3)]
    );
    for r in s.seen() {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }

    // GitLab: project path encoded, PRIVATE-TOKEN, approvals as reviews.
    let gl = api(HostKind::GitLab, &s, t);
    let commit = gl
        .commit("gitlab.com/group/sub/project", &sha(&c(4)))
        .await
        .unwrap();
    assert_eq!(
        (commit.sha.to_string(), commit.message.as_deref()),
        (c(4), Some("Sanitize for network graph"))
    );
    assert_eq!(
        commit.timestamp.as_deref(),
        Some("2021-09-20T06:06:12.300Z")
    );
    let mr = gl
        .pull_request("gitlab.com/group/sub/project", &sha(&c(4)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((mr.number, mr.author.as_deref()), (1, Some("root")));
    assert_eq!(
        mr.merge.as_ref().unwrap().merged_by.as_deref(),
        Some("mergebot")
    );
    assert_eq!(mr.merge.as_ref().unwrap().sha.to_string(), c(4));
    assert_eq!(
        mr.reviews
            .iter()
            .map(|r| r.user.as_str())
            .collect::<Vec<_>>(),
        ["root", "jreviewer"]
    );
    s.compare(&c(4), &c(5), &[c(5)]);
    let between = gl
        .compare("gitlab.com/group/sub/project", &sha(&c(4)), &sha(&c(5)))
        .await
        .unwrap();
    assert_eq!(between.len(), 1);
    let last = s.seen().into_iter().last().unwrap();
    assert!(
        last.path
            .starts_with("/api/v4/projects/group%2Fsub%2Fproject/"),
        "{}",
        last.path
    );
    assert_eq!(last.private_token.as_deref(), Some(TOKEN));

    // Azure DevOps: basic auth with the PAT, the pull request query, commits newest first.
    let ado = api(HostKind::AzureDevOps, &s, t);
    let example = "be67f8871a4d2c75f13a51c1d3c30ac0d74d4ef4";
    let commit = ado
        .commit("dev.azure.com/fabrikam/my project/fleet", &sha(example))
        .await
        .unwrap();
    assert_eq!(commit.message.as_deref(), Some("First cut\n"));
    let pr = ado
        .pull_request("dev.azure.com/fabrikam/my project/fleet", &sha(example))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pr.number, 22);
    assert_eq!(
        pr.url.as_deref(),
        Some(format!("{}/fabrikam/my project/_git/fleet/pullrequest/22", s.url()).as_str())
    );
    let reviews: Vec<(&str, bool)> = pr
        .reviews
        .iter()
        .map(|r| (r.user.as_str(), r.approved))
        .collect();
    assert_eq!(
        reviews,
        [
            ("fabrikamfiber1@hotmail.com", true),
            ("build@fabrikam.example", false)
        ]
    );
    s.compare(&c(6), &c(8), &[c(7), c(8)]);
    let between = ado
        .compare(
            "dev.azure.com/fabrikam/my project/fleet",
            &sha(&c(6)),
            &sha(&c(8)),
        )
        .await
        .unwrap();
    assert_eq!(
        between
            .iter()
            .map(|c| c.sha.to_string())
            .collect::<Vec<_>>(),
        [c(7), c(8)],
        "oldest first"
    );
    let last = s.seen().into_iter().last().unwrap();
    assert!(
        last.path
            .starts_with("/fabrikam/my%20project/_apis/git/repositories/fleet/commits?"),
        "{}",
        last.path
    );
    assert!(last.path.contains("api-version=7.1"));
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(":{TOKEN}"));
    assert_eq!(
        last.authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );

    // Gitea / Forgejo: `token` auth, a dismissed approval is no approval.
    let gt = api(HostKind::Gitea, &s, t);
    let commit = gt
        .commit("gitea.example/acme/fleet", &sha(&c(9)))
        .await
        .unwrap();
    assert_eq!(commit.message.as_deref(), Some("podinfo: bump to 6.5.4\n"));
    let pr = gt
        .pull_request("gitea.example/acme/fleet", &sha(&c(9)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (pr.number, pr.merge.as_ref().unwrap().merged_by.as_deref()),
        (12, Some("dana"))
    );
    let reviews: Vec<(&str, bool)> = pr
        .reviews
        .iter()
        .map(|r| (r.user.as_str(), r.approved))
        .collect();
    assert_eq!(reviews, [("sam", true), ("kim", false)]);
    s.no_pull(&c(10));
    assert!(gt
        .pull_request("gitea.example/acme/fleet", &sha(&c(10)))
        .await
        .unwrap()
        .is_none());
    let last = s.seen().into_iter().last().unwrap();
    assert_eq!(
        last.authorization.as_deref(),
        Some(format!("token {TOKEN}").as_str())
    );
}

#[tokio::test]
async fn the_hosts_failures_are_told_apart() {
    let s = StandIn::start().await;
    let gh = api(HostKind::GitHub, &s, Duration::from_millis(500));
    let repo = "github.com/acme/fleet";
    let one = sha(&c(1));
    s.unknown(&c(1));
    assert!(matches!(
        gh.commit(repo, &one).await,
        Err(ApiError::NotFound(_))
    ));
    s.script([Scripted::Status(401)]);
    assert!(matches!(
        gh.commit(repo, &sha(&c(2))).await,
        Err(ApiError::Unauthorized(_))
    ));
    s.script([Scripted::Malformed]);
    assert!(matches!(
        gh.commit(repo, &sha(&c(2))).await,
        Err(ApiError::Malformed(_))
    ));
    s.script([Scripted::Slow(Duration::from_secs(2))]);
    match gh.commit(repo, &sha(&c(2))).await {
        Err(ApiError::Unavailable(e)) => assert!(e.contains("timed out"), "{e}"),
        other => panic!("{other:?}"),
    }
    s.script([Scripted::Status(502)]);
    assert!(matches!(
        gh.commit(repo, &sha(&c(2))).await,
        Err(ApiError::Unavailable(_))
    ));
    // 429 with Retry-After: nothing is sent before it passed.
    s.script([Scripted::RetryAfter(2)]);
    let before = Utc::now();
    let until = match gh.commit(repo, &sha(&c(2))).await {
        Err(ApiError::RateLimited { until }) => until,
        other => panic!("{other:?}"),
    };
    assert!(until >= before + chrono::Duration::seconds(1), "{until}");
    let sent = s.seen().len();
    assert!(matches!(
        gh.commit(repo, &sha(&c(2))).await,
        Err(ApiError::RateLimited { .. })
    ));
    assert_eq!(s.seen().len(), sent, "held back by the client, not sent");
    tokio::time::sleep((until - Utc::now()).to_std().unwrap_or_default()).await;
    assert!(gh.commit(repo, &sha(&c(2))).await.is_ok());
    // GitHub's secondary limit: a minute at least.
    s.script([Scripted::Secondary]);
    let now = Utc::now();
    match gh.commit(repo, &sha(&c(3))).await {
        Err(ApiError::RateLimited { until }) => {
            assert!(until >= now + chrono::Duration::seconds(59), "{until}")
        }
        other => panic!("{other:?}"),
    }
    let snap = gh.client().snapshot();
    assert_eq!(snap.refused, 2, "{snap:?}");
    // Conditional requests: the same commit again is a 304 and the cached answer.
    let s2 = StandIn::start().await;
    let gh2 = api(HostKind::GitHub, &s2, Duration::from_secs(5));
    let first = gh2.commit(repo, &sha(&c(5))).await.unwrap();
    let again = gh2.commit(repo, &sha(&c(5))).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(s2.not_modified(), 1);
}

#[tokio::test]
async fn a_lost_push_and_a_lost_pull_request_are_filled_and_merge_with_late_webhooks() {
    let s = StandIn::start().await;
    let app = app_with(&s, &[]).await;
    push(&app, None, &[1]).await;
    applied(&app, 1, 0).await;
    // Commit 1 was applied with no approval record: its pull request is asked for.
    let ev = eventually(&app, 1, "approval of 1", |ev| !ev["approval"].is_null()).await;
    assert_eq!(ev["approval"]["number"], 1347);
    assert_eq!(ev["approval"]["mergedBy"], "hubot");
    assert_eq!(ev["approval"]["approvers"], json!(["hubot", "monalisa"]));
    assert_eq!(ev["commit"]["source"], "push");
    // Commit 2's push webhook is lost; the object reports it.
    applied(&app, 2, 60).await;
    let ev = eventually(&app, 2, "commit 2 from the API", |ev| {
        !ev["commit"].is_null()
    })
    .await;
    assert_eq!(ev["commit"]["source"], "api");
    assert_eq!(ev["commit"]["message"], "Fix all the bugs");
    assert_eq!(ev["commit"]["repository"], "127.0.0.1/acme/fleet");
    assert_eq!(ev["commit"]["refs"], json!(["refs/heads/main"]));
    assert_eq!(
        ev["commit"]["pushedAt"],
        Value::Null,
        "no push described it"
    );
    assert_eq!(ev["targets"][0]["state"], "applied");
    // Then its push is redelivered: the commit is the push's now, nothing duplicated.
    push(&app, Some(1), &[2]).await;
    let ev = eventually(&app, 2, "commit 2 from its push", |ev| {
        ev["commit"]["source"] == "push"
    })
    .await;
    assert_eq!(ev["commit"]["pushedBy"], "dana-ops");
    assert!(ev["commit"]["pushedAt"].is_string());
    assert_eq!(
        ev["commit"]["message"], "commit 2",
        "the push's own words win"
    );
    assert_eq!(ev["targets"].as_array().unwrap().len(), 1);
    // Each hole was asked about once.
    let asked = |p: &str| s.seen().iter().filter(|r| r.path.starts_with(p)).count();
    assert_eq!(asked(&format!("/repos/acme/fleet/commits/{}?", c(2))), 1);
    assert_eq!(
        asked(&format!("/repos/acme/fleet/commits/{}/pulls", c(1))),
        1
    );
    let h = health(&app).await;
    assert_eq!(h["backfill"]["queue"]["queued"], 0, "{h}");
    assert!(h["backfill"]["queue"]["done"].as_u64().unwrap() >= 2, "{h}");
    assert_eq!(h["backfill"]["hosts"][0]["host"], "github");
    assert_eq!(h["backfill"]["hosts"][0]["refused"], 0);
    assert!(!h.to_string().contains(TOKEN), "the token is never shown");
}

#[tokio::test]
async fn a_gap_in_the_push_chain_is_filled_so_superseded_is_right() {
    let s = StandIn::start().await;
    let app = app_with(&s, &[]).await;
    s.compare(&c(1), &c(3), &[c(2), c(3)]);
    push(&app, None, &[1]).await;
    applied(&app, 1, 0).await;
    // The push of 2 and 3 is lost; the next one (4, from 3) arrives, and 4 is applied.
    push(&app, Some(3), &[4]).await;
    applied(&app, 4, 60).await;
    for n in [2, 3] {
        let ev = eventually(&app, n, "a gap commit superseded", |ev| {
            ev["targets"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["state"] == "superseded"))
        })
        .await;
        assert_eq!(ev["commit"]["source"], "api");
        let t = &ev["targets"][0];
        assert_eq!(t["supersededBy"], c(4), "{ev:#}");
    }
    let (_, history) = app
        .get_json("/api/commits?repository=127.0.0.1/acme/fleet&ref=main")
        .await;
    let shas: Vec<&str> = history["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sha"].as_str().unwrap())
        .collect();
    for n in [1, 2, 3, 4] {
        assert!(
            shas.contains(&c(n).as_str()),
            "{n} in the branch history: {shas:?}"
        );
    }
    assert_eq!(
        s.seen()
            .iter()
            .filter(|r| r.path.contains("/compare/"))
            .count(),
        1
    );
}

#[tokio::test]
async fn an_api_outage_of_any_length_loses_nothing() {
    let s = StandIn::start().await;
    s.set_down(true);
    let app = app_with(&s, &[]).await;
    push(&app, None, &[1]).await;
    s.no_pull(&c(1));
    applied(&app, 1, 0).await;
    for n in 2..=4 {
        applied(&app, n, 60 * n as i64).await; // their pushes lost
    }
    // While the host is down the items wait, retried.
    let h = wait_queue(&app, "retrying", |q| q["retrying"].as_u64() >= Some(3)).await;
    let last_error = h["backfill"]["queue"]["lastError"].as_str().unwrap();
    assert!(last_error.contains("503"), "{h}");
    assert!(h["backfill"]["queue"]["nextAttemptAt"].is_string(), "{h}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(app.evidence(&c(2)).await.1["commit"].is_null());
    s.set_down(false);
    for n in 2..=4 {
        let ev = eventually(&app, n, "filled after the outage", |ev| {
            !ev["commit"].is_null()
        })
        .await;
        assert_eq!(ev["commit"]["source"], "api");
    }
    let h = wait_queue(&app, "drained", |q| q["queued"] == 0).await;
    assert_eq!(h["backfill"]["queue"]["failed"], 0, "{h}");
}

#[tokio::test]
async fn the_rate_limit_is_kept_and_a_commit_the_host_does_not_know_fails_once() {
    let s = StandIn::start().await;
    s.set_limit(4, 1);
    let app = app_with(&s, &[]).await;
    push(&app, None, &[1]).await;
    s.no_pull(&c(1));
    s.unknown(&c(9));
    applied(&app, 1, 0).await;
    for n in 2..=9 {
        applied(&app, n, 60 * n as i64).await;
    }
    for n in 2..=8 {
        eventually(&app, n, "filled", |ev| !ev["commit"].is_null()).await;
    }
    let h = wait_queue(&app, "drained", |q| q["queued"] == 0).await;
    assert_eq!(
        h["backfill"]["queue"]["failed"], 1,
        "commit 9 is unknown: {h}"
    );
    assert_eq!(h["backfill"]["hosts"][0]["limit"], 4, "{h}");
    assert_eq!(s.refused(), 0, "never a request over the limit");
    assert_eq!(
        s.seen().iter().filter(|r| r.path.contains(&c(9))).count(),
        1,
        "a 404 is not retried"
    );
    assert!(app.evidence(&c(9)).await.1["commit"].is_null());
}

#[tokio::test]
async fn each_item_is_done_once_by_two_instances() {
    use fluxtrail::backfill::{Backfill, Item};
    use fluxtrail::ledger::Ledger;
    let s = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn fluxtrail::store::Store> =
        std::sync::Arc::new(fluxtrail::store::sqlite::SqliteStore::open(dir.path()).unwrap());
    let config = HostConfig::new(HostKind::GitHub, &s.url(), Secret::new(TOKEN)).unwrap();
    let ledger = Ledger::new(store);
    let now = Utc::now();
    for n in 0..40 {
        let item = Item::Commit {
            repository: "127.0.0.1/acme/fleet".into(),
            git_ref: None,
            sha: c(n),
        };
        assert!(ledger
            .enqueue(item.clone(), "127.0.0.1", now, now)
            .await
            .unwrap());
        assert!(
            !ledger.enqueue(item, "127.0.0.1", now, now).await.unwrap(),
            "known: nothing new"
        );
    }
    let a = Backfill::new(
        ledger.clone(),
        std::slice::from_ref(&config),
        Duration::from_secs(5),
        Duration::from_secs(1),
    );
    let b = Backfill::new(
        Ledger::new(ledger.store().clone()),
        &[config],
        Duration::from_secs(5),
        Duration::from_secs(1),
    );
    let (ra, rb) = tokio::join!(
        a.drain(Duration::from_secs(20)),
        b.drain(Duration::from_secs(20))
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.done + rb.done, 40, "{ra:?} {rb:?}");
    for n in 0..40 {
        let asked = s.seen().iter().filter(|r| r.path.contains(&c(n))).count();
        assert_eq!(asked, 1, "commit {n}");
        let ev = ledger.evidence(&sha(&c(n))).await.unwrap().unwrap();
        assert_eq!(ev.commit.unwrap().source, fluxtrail::git::Source::Api);
    }
    // Retention takes the ended items once they are older than its cutoff.
    let later = Utc::now() + chrono::Duration::days(1);
    assert_eq!(ledger.backfill_expired(later).await.unwrap().len(), 40);
    assert!(ledger.backfill_expired(now).await.unwrap().is_empty());
    let status = ledger.backfill_status(Utc::now()).await.unwrap();
    assert_eq!(status["done"], 40, "{status}");
    assert_eq!(status["queued"], 0, "{status}");
}
