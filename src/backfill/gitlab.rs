//! GitLab REST v4 (gitlab.com and self-managed). Shapes: docs.gitlab.com/api/commits
//! ("Get a single commit", "List merge requests associated with a commit"),
//! …/api/merge_request_approvals ("Get configuration for approvals" → `approved_by`),
//! …/api/repositories ("Compare branches, tags or commits"); samples under
//! `tests/fixtures/api/gitlab/`.

use serde_json::Value;

use super::client::{ApiError, HostClient};
use super::{message_of, repo_path, repository, sha_of, str_of, time_of};
use crate::domain::{CommitSha, MergeCommit};
use crate::git::{Commit, Merge, Person, PullRequest, Review};

/// The project's id in a path: its full path, URL-encoded (`group%2Fsub%2Fproject`).
fn project(repo: &str) -> String {
    percent_encoding::utf8_percent_encode(repo_path(repo), percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

/// `GET /api/v4/projects/{id}/repository/commits/{sha}`.
pub async fn commit(c: &HostClient, repo: &str, sha: &CommitSha) -> Result<Commit, ApiError> {
    let page = c
        .get(&format!(
            "/api/v4/projects/{}/repository/commits/{sha}",
            project(repo)
        ))
        .await?;
    commit_of(&page.body)
}

pub fn commit_of(v: &Value) -> Result<Commit, ApiError> {
    Ok(Commit {
        sha: sha_of(&v["id"], "commit id")?,
        message: message_of(&v["message"]),
        author: Some(Person {
            name: str_of(&v["author_name"]),
            email: str_of(&v["author_email"]),
        }),
        timestamp: time_of(&v["authored_date"]),
        url: str_of(&v["web_url"]),
    })
}

/// `GET …/repository/commits/{sha}/merge_requests`: the merged one whose merge (or squash)
/// commit it is, else the first merged one; then `GET …/merge_requests/{iid}/approvals`.
pub async fn pull_request(
    c: &HostClient,
    repo: &str,
    sha: &CommitSha,
) -> Result<Option<PullRequest>, ApiError> {
    let id = project(repo);
    let list = c
        .get(&format!(
            "/api/v4/projects/{id}/repository/commits/{sha}/merge_requests"
        ))
        .await?
        .body;
    let list = list
        .as_array()
        .ok_or_else(|| ApiError::Malformed("commits/{sha}/merge_requests: not a list".into()))?;
    let merged = |m: &&Value| m["state"] == "merged";
    let is_merge_of = |m: &&Value| {
        [&m["merge_commit_sha"], &m["squash_commit_sha"]]
            .iter()
            .any(|s| s.as_str() == Some(sha.as_str()))
    };
    let Some(mr) = list
        .iter()
        .filter(merged)
        .find(is_merge_of)
        .or_else(|| list.iter().find(merged))
    else {
        return Ok(None);
    };
    let iid = mr["iid"]
        .as_u64()
        .ok_or_else(|| ApiError::Malformed("merge request without an iid".into()))?;
    let approvals = c
        .get(&format!(
            "/api/v4/projects/{id}/merge_requests/{iid}/approvals"
        ))
        .await?
        .body;
    let merge_sha = [&mr["merge_commit_sha"], &mr["squash_commit_sha"]]
        .into_iter()
        .find_map(|s| s.as_str().and_then(|s| CommitSha::parse(s).ok()))
        .unwrap_or_else(|| sha.clone());
    let reviews = approvals["approved_by"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| {
                    Some(Review {
                        user: str_of(&u["user"]["username"])?,
                        approved: true,
                        commit: None,
                        at: None,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(PullRequest {
        repository: repository(repo, None)?,
        number: iid,
        url: str_of(&mr["web_url"]),
        author: str_of(&mr["author"]["username"]),
        merge: Some(Merge {
            sha: MergeCommit::Full(merge_sha),
            merged_by: str_of(&mr["merge_user"]["username"])
                .or_else(|| str_of(&mr["merged_by"]["username"])),
            merged_at: time_of(&mr["merged_at"]),
            target_ref: str_of(&mr["target_branch"]).map(|b| crate::git::branch_ref(&b)),
            head: mr["sha"].as_str().and_then(|s| CommitSha::parse(s).ok()),
        }),
        reviews,
    }))
}

/// `GET …/repository/compare?from={base}&to={head}` (not paged; oldest first).
pub async fn compare(
    c: &HostClient,
    repo: &str,
    base: &CommitSha,
    head: &CommitSha,
) -> Result<Vec<Commit>, ApiError> {
    let page = c
        .get(&format!(
            "/api/v4/projects/{}/repository/compare?from={base}&to={head}&straight=true",
            project(repo)
        ))
        .await?;
    super::commits_in(&page.body["commits"], commit_of)
}
