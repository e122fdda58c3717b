//! GitHub REST v3 (github.com and GHES `…/api/v3`): the endpoints contract §11 names.
//! Shapes: docs.github.com/en/rest/commits/commits, …/pulls/pulls, …/pulls/reviews;
//! samples under `tests/fixtures/api/github/`.

use serde_json::Value;

use super::client::{ApiError, HostClient};
use super::{message_of, repo_path, repository, sha_of, str_of, time_of};
use crate::domain::{CommitSha, MergeCommit};
use crate::git::{Commit, Merge, Person, PullRequest, Review};

/// `GET /repos/{o}/{r}/commits/{sha}`.
pub async fn commit(c: &HostClient, repo: &str, sha: &CommitSha) -> Result<Commit, ApiError> {
    let page = c
        .get(&format!("/repos/{}/commits/{sha}", repo_path(repo)))
        .await?;
    commit_of(&page.body)
}

/// A commit object of the commits and compare endpoints.
pub fn commit_of(v: &Value) -> Result<Commit, ApiError> {
    let c = &v["commit"];
    Ok(Commit {
        sha: sha_of(&v["sha"], "commit sha")?,
        message: message_of(&c["message"]),
        author: Some(Person {
            name: str_of(&c["author"]["name"]),
            email: str_of(&c["author"]["email"]),
        }),
        timestamp: time_of(&c["author"]["date"]),
        url: str_of(&v["html_url"]),
    })
}

/// `GET …/commits/{sha}/pulls` (the pull requests associated with the commit), the merged
/// one whose merge commit it is (else the first merged one), then `GET …/pulls/{n}` (who
/// merged it) and `GET …/pulls/{n}/reviews` (paged).
pub async fn pull_request(
    c: &HostClient,
    repo: &str,
    sha: &CommitSha,
) -> Result<Option<PullRequest>, ApiError> {
    let path = repo_path(repo);
    let pulls = c
        .get(&format!("/repos/{path}/commits/{sha}/pulls?per_page=100"))
        .await?
        .body;
    let list = pulls
        .as_array()
        .ok_or_else(|| ApiError::Malformed("commits/{sha}/pulls: not a list".into()))?;
    let merged = |p: &&Value| !p["merged_at"].is_null();
    let Some(found) = list
        .iter()
        .filter(merged)
        .find(|p| p["merge_commit_sha"].as_str() == Some(sha.as_str()))
        .or_else(|| list.iter().find(merged))
    else {
        return Ok(None);
    };
    let number = found["number"]
        .as_u64()
        .ok_or_else(|| ApiError::Malformed("pull request without a number".into()))?;
    let pull = c.get(&format!("/repos/{path}/pulls/{number}")).await?.body;
    let reviews = c
        .get_all(
            &format!("/repos/{path}/pulls/{number}/reviews?per_page=100"),
            Value::as_array,
        )
        .await?;
    // The merge commit as the listing named it (the one that matched `sha`).
    let merge_sha = sha_of(&found["merge_commit_sha"], "merge_commit_sha")?;
    pull_of(repo, &pull, merge_sha, &reviews).map(Some)
}

/// A pull request in GitHub's shape (Gitea and Forgejo answer the same) with its reviews.
pub fn pull_of(
    repo: &str,
    pull: &Value,
    merge_sha: CommitSha,
    reviews: &[Value],
) -> Result<PullRequest, ApiError> {
    Ok(PullRequest {
        repository: repository(repo, str_of(&pull["base"]["repo"]["html_url"]))?,
        number: pull["number"]
            .as_u64()
            .ok_or_else(|| ApiError::Malformed("pull request without a number".into()))?,
        url: str_of(&pull["html_url"]),
        author: str_of(&pull["user"]["login"]),
        merge: Some(Merge {
            sha: MergeCommit::Full(merge_sha),
            merged_by: str_of(&pull["merged_by"]["login"]),
            merged_at: time_of(&pull["merged_at"]),
            target_ref: str_of(&pull["base"]["ref"]).map(|b| crate::git::branch_ref(&b)),
            head: pull["head"]["sha"]
                .as_str()
                .and_then(|s| CommitSha::parse(s).ok()),
        }),
        reviews: reviews.iter().filter_map(review_of).collect(),
    })
}

/// A review's verdict, as the webhook parser reads one: approvals, and the verdicts that
/// withdraw one (changes requested, dismissed); comments say nothing. Gitea spells
/// "changes requested" `REQUEST_CHANGES` and keeps a dismissed approval `APPROVED` with
/// `dismissed: true`.
fn review_of(v: &Value) -> Option<Review> {
    let approved = match v["state"].as_str()? {
        "APPROVED" => v["dismissed"] != true,
        "CHANGES_REQUESTED" | "REQUEST_CHANGES" | "DISMISSED" => false,
        _ => return None,
    };
    Some(Review {
        user: str_of(&v["user"]["login"])?,
        approved,
        commit: v["commit_id"]
            .as_str()
            .and_then(|s| CommitSha::parse(s).ok()),
        at: time_of(&v["submitted_at"]),
    })
}

/// `GET …/compare/{base}...{head}` (paged: 100 commits a page, oldest first).
pub async fn compare(
    c: &HostClient,
    repo: &str,
    base: &CommitSha,
    head: &CommitSha,
) -> Result<Vec<Commit>, ApiError> {
    let list = c
        .get_all(
            &format!(
                "/repos/{}/compare/{base}...{head}?per_page=100",
                repo_path(repo)
            ),
            |v| v["commits"].as_array(),
        )
        .await?;
    list.iter().map(commit_of).collect()
}
