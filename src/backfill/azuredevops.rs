//! Azure DevOps Services REST 7.1 (and Server via its URL). Shapes: learn.microsoft.com
//! rest/api/azure/devops/git: Commits - Get, Pull Request Query - Get (`lastMergeCommit`),
//! Commits - Get Commits (`searchCriteria.itemVersion`/`compareVersion`); samples under
//! `tests/fixtures/api/azuredevops/`. Repository keys are `dev.azure.com/{org}/{project}/{repo}`.

use serde_json::{json, Value};

use super::client::{ApiError, HostClient};
use super::{message_of, repo_path, repository, sha_of, str_of, time_of};
use crate::domain::{CommitSha, MergeCommit};
use crate::git::{Commit, Merge, Person, PullRequest, Review};

const VERSION: &str = "api-version=7.1";

/// `/{org}/{project}/_apis/git/repositories/{repo}`, each segment encoded (projects have
/// spaces).
fn repo_api(repo: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = repo_path(repo).split('/').collect();
    let [org, project, name] = parts[..] else {
        return Err(ApiError::NotFound(format!(
            "{repo}: not an Azure DevOps repository key"
        )));
    };
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    Ok(format!(
        "/{}/{}/_apis/git/repositories/{}",
        enc(org),
        enc(project),
        enc(name)
    ))
}

/// `GET …/commits/{sha}`.
pub async fn commit(c: &HostClient, repo: &str, sha: &CommitSha) -> Result<Commit, ApiError> {
    let page = c
        .get(&format!("{}/commits/{sha}?{VERSION}", repo_api(repo)?))
        .await?;
    commit_of(&page.body)
}

pub fn commit_of(v: &Value) -> Result<Commit, ApiError> {
    Ok(Commit {
        sha: sha_of(&v["commitId"], "commitId")?,
        message: message_of(&v["comment"]),
        author: Some(Person {
            name: str_of(&v["author"]["name"]),
            email: str_of(&v["author"]["email"]),
        }),
        timestamp: time_of(&v["author"]["date"]),
        url: str_of(&v["remoteUrl"]),
    })
}

/// `POST …/pullrequestquery` with a `lastMergeCommit` query: the completed pull request
/// whose merge commit `sha` is, with its reviewers and votes (10 approved, 5 approved with
/// suggestions — as the webhook parser reads them).
pub async fn pull_request(
    c: &HostClient,
    repo: &str,
    sha: &CommitSha,
) -> Result<Option<PullRequest>, ApiError> {
    let body = json!({"queries": [{"type": "lastMergeCommit", "items": [sha.as_str()]}]});
    let page = c
        .post(
            &format!("{}/pullrequestquery?{VERSION}", repo_api(repo)?),
            &body,
        )
        .await?;
    let found = page.body["results"]
        .as_array()
        .and_then(|r| r.iter().find_map(|m| m[sha.as_str()].as_array()))
        .and_then(|prs| prs.iter().find(|p| p["status"] == "completed").cloned());
    let Some(pr) = found else {
        return Ok(None);
    };
    let number = pr["pullRequestId"]
        .as_u64()
        .ok_or_else(|| ApiError::Malformed("pull request without an id".into()))?;
    let web = match repo_path(repo).rsplit_once('/') {
        Some((org_project, name)) => format!("{}/{org_project}/_git/{name}", c.base()),
        None => c.base().to_string(),
    };
    Ok(Some(PullRequest {
        repository: repository(repo, Some(web.clone()))?,
        number,
        url: Some(format!("{web}/pullrequest/{number}")),
        author: str_of(&pr["createdBy"]["uniqueName"]),
        merge: Some(Merge {
            sha: MergeCommit::Full(sha_of(
                &pr["lastMergeCommit"]["commitId"],
                "lastMergeCommit",
            )?),
            merged_by: str_of(&pr["closedBy"]["uniqueName"]),
            merged_at: time_of(&pr["closedDate"]),
            target_ref: str_of(&pr["targetRefName"]),
            head: pr["lastMergeSourceCommit"]["commitId"]
                .as_str()
                .and_then(|s| CommitSha::parse(s).ok()),
        }),
        reviews: pr["reviewers"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| {
                        Some(Review {
                            user: str_of(&r["uniqueName"])?,
                            approved: r["vote"].as_i64().unwrap_or(0) >= 5,
                            commit: None,
                            at: None,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }))
}

/// `GET …/commits?searchCriteria.itemVersion.version={head}&…compareVersion.version={base}`:
/// the commits of `head` not in `base`, newest first, paged by `$top`/`$skip`; returned
/// oldest first.
pub async fn compare(
    c: &HostClient,
    repo: &str,
    base: &CommitSha,
    head: &CommitSha,
) -> Result<Vec<Commit>, ApiError> {
    const TOP: usize = 100;
    let api = repo_api(repo)?;
    let mut out = Vec::new();
    for page in 0..super::client::MAX_PAGES {
        let body = c
            .get(&format!(
                "{api}/commits?searchCriteria.itemVersion.version={head}&searchCriteria.itemVersion.versionType=commit\
                 &searchCriteria.compareVersion.version={base}&searchCriteria.compareVersion.versionType=commit\
                 &$top={TOP}&$skip={}&{VERSION}",
                page * TOP
            ))
            .await?
            .body;
        let list = body["value"]
            .as_array()
            .ok_or_else(|| ApiError::Malformed("commits: no value".into()))?;
        for v in list {
            out.push(commit_of(v)?);
        }
        if list.len() < TOP {
            break;
        }
    }
    out.reverse();
    Ok(out)
}
