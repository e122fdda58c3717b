//! Gitea and Forgejo (`/api/v1`, the same API). Shapes: the Gitea API reference
//! (gitea.com/api/swagger: `GET /repos/{o}/{r}/git/commits/{sha}`,
//! `GET /repos/{o}/{r}/commits/{sha}/pull`, `GET /repos/{o}/{r}/pulls/{n}/reviews`,
//! `GET /repos/{o}/{r}/compare/{base}...{head}`); samples under `tests/fixtures/api/gitea/`.

use serde_json::Value;

use super::client::{ApiError, HostClient};
use super::{github, repo_path, sha_of};
use crate::domain::CommitSha;
use crate::git::{Commit, PullRequest};

/// `GET /api/v1/repos/{o}/{r}/git/commits/{sha}` (GitHub's commit shape).
pub async fn commit(c: &HostClient, repo: &str, sha: &CommitSha) -> Result<Commit, ApiError> {
    let page = c
        .get(&format!(
            "/api/v1/repos/{}/git/commits/{sha}?stat=false&files=false",
            repo_path(repo)
        ))
        .await?;
    github::commit_of(&page.body)
}

/// `GET …/commits/{sha}/pull` (the pull request that merged the commit; 404 when none), then
/// its reviews (paged).
pub async fn pull_request(
    c: &HostClient,
    repo: &str,
    sha: &CommitSha,
) -> Result<Option<PullRequest>, ApiError> {
    let path = repo_path(repo);
    let pull = match c
        .get(&format!("/api/v1/repos/{path}/commits/{sha}/pull"))
        .await
    {
        Ok(p) => p.body,
        Err(ApiError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if pull["merged"] != true {
        return Ok(None);
    }
    let number = pull["number"]
        .as_u64()
        .ok_or_else(|| ApiError::Malformed("pull request without a number".into()))?;
    let reviews = c
        .get_all(
            &format!("/api/v1/repos/{path}/pulls/{number}/reviews?limit=50"),
            Value::as_array,
        )
        .await?;
    let merge_sha = sha_of(&pull["merge_commit_sha"], "merge_commit_sha")?;
    github::pull_of(repo, &pull, merge_sha, &reviews).map(Some)
}

/// `GET …/compare/{base}...{head}` (oldest first).
pub async fn compare(
    c: &HostClient,
    repo: &str,
    base: &CommitSha,
    head: &CommitSha,
) -> Result<Vec<Commit>, ApiError> {
    let page = c
        .get(&format!(
            "/api/v1/repos/{}/compare/{base}...{head}",
            repo_path(repo)
        ))
        .await?;
    super::commits_in(&page.body["commits"], github::commit_of)
}
