//! Backfill from the Git hosts' APIs (contract §11): what webhooks never told us, asked of
//! the host that knows it — never in the request path.
//!
//! - `Item`: one hole ingest noticed (a commit no push described, an applied commit without
//!   an approval record, a gap in a branch's push chain). Items are rows in the store
//!   (`ledger::backfill`): durable, visible to every instance, each done once.
//! - `client::HostClient`: one host's HTTP side on reqwest — authentication (never logged),
//!   timeouts, the host's rate-limit protocol, conditional requests, pagination.
//! - `github`, `gitlab`, `azuredevops`, `gitea`: each host's endpoints and response shapes,
//!   mapped onto the webhook parsers' own types (`git::Commit`, `git::PullRequest`), so a
//!   backfilled fact is recorded exactly as a webhook's would be and merges with it.
//! - `worker`: claims due items, asks the host, records the answer, reschedules on failure.

pub mod azuredevops;
pub mod client;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod worker;

use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::domain::CommitSha;
use crate::git::{Commit, Provider, PullRequest};

pub use client::{ApiError, HostClient, RateSnapshot};
pub use worker::Backfill;

/// The host APIs the backfill speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    GitHub,
    GitLab,
    AzureDevOps,
    Gitea,
}

impl HostKind {
    pub const ALL: [HostKind; 4] = [
        HostKind::GitHub,
        HostKind::GitLab,
        HostKind::AzureDevOps,
        HostKind::Gitea,
    ];

    /// The middle of its variables' names: `FLUXTRAIL_{var}_API_TOKEN`.
    pub fn var(self) -> &'static str {
        match self {
            HostKind::GitHub => "GITHUB",
            HostKind::GitLab => "GITLAB",
            HostKind::AzureDevOps => "AZUREDEVOPS",
            HostKind::Gitea => "GITEA",
        }
    }

    pub fn url_var(self) -> &'static str {
        match self {
            HostKind::GitHub => "FLUXTRAIL_GITHUB_API_URL",
            HostKind::GitLab => "FLUXTRAIL_GITLAB_API_URL",
            HostKind::AzureDevOps => "FLUXTRAIL_AZUREDEVOPS_API_URL",
            HostKind::Gitea => "FLUXTRAIL_GITEA_API_URL",
        }
    }

    pub fn default_url(self) -> Option<&'static str> {
        match self {
            HostKind::GitHub => Some("https://api.github.com"),
            HostKind::GitLab => Some("https://gitlab.com"),
            HostKind::AzureDevOps => Some("https://dev.azure.com"),
            HostKind::Gitea => None,
        }
    }

    /// The webhook provider whose records a backfilled fact is recorded as.
    pub fn provider(self) -> Provider {
        match self {
            HostKind::GitHub => Provider::GitHub,
            HostKind::GitLab => Provider::GitLab,
            HostKind::AzureDevOps => Provider::AzureDevOps,
            HostKind::Gitea => Provider::Gitea,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HostKind::GitHub => "github",
            HostKind::GitLab => "gitlab",
            HostKind::AzureDevOps => "azuredevops",
            HostKind::Gitea => "gitea",
        }
    }
}

/// One configured host API.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub kind: HostKind,
    /// The API's base URL without a trailing `/` (GitHub: `https://api.github.com` or a GHES
    /// `https://host/api/v3`; the others: the site, their API path is appended).
    pub api_url: String,
    /// The host of the repository keys it serves (`github.com` for `api.github.com`, else
    /// the URL's own host: GHES, self-managed GitLab, Gitea, Forgejo, Azure DevOps Server).
    pub serves: String,
    pub token: Secret,
}

impl HostConfig {
    /// `None` when `url` is not an http(s) URL with a host.
    pub fn new(kind: HostKind, url: &str, token: Secret) -> Option<Self> {
        let parsed = url::Url::parse(url.trim()).ok()?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return None;
        }
        let host = parsed.host_str()?.to_ascii_lowercase();
        let serves = match host.as_str() {
            "api.github.com" => "github.com".to_string(),
            _ => host,
        };
        Some(HostConfig {
            kind,
            api_url: url.trim().trim_end_matches('/').to_string(),
            serves,
            token,
        })
    }
}

/// One hole to fill. Its id is deterministic, so noticing it again (another event, another
/// instance, a retry) finds the same row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Item {
    /// A commit an object following `repository` reported, which no push described: its
    /// metadata. `git_ref`: the branch the object follows, when its revision names it.
    #[serde(rename_all = "camelCase")]
    Commit {
        repository: String,
        git_ref: Option<String>,
        sha: String,
    },
    /// An applied commit without an approval record: the merged pull request containing it,
    /// and its reviews.
    #[serde(rename_all = "camelCase")]
    Approval { repository: String, sha: String },
    /// A push whose `before` (`head` here) is no known `after` of its ref: the commits between
    /// the ref's last known `after` (`base`) and it.
    #[serde(rename_all = "camelCase")]
    Gap {
        repository: String,
        git_ref: String,
        base: String,
        head: String,
    },
}

impl Item {
    pub fn id(&self) -> String {
        match self {
            Item::Commit {
                repository, sha, ..
            } => format!("commit|{repository}|{sha}"),
            Item::Approval { repository, sha } => format!("approval|{repository}|{sha}"),
            Item::Gap {
                repository,
                git_ref,
                base,
                head,
            } => format!("gap|{repository}|{git_ref}|{base}..{head}"),
        }
    }

    pub fn repository(&self) -> &str {
        match self {
            Item::Commit { repository, .. }
            | Item::Approval { repository, .. }
            | Item::Gap { repository, .. } => repository,
        }
    }
}

/// The owner/name path of a repository key (`github.com/acme/fleet` → `acme/fleet`).
pub fn repo_path(repository: &str) -> &str {
    repository.split_once('/').map_or("", |(_, p)| p)
}

/// What one host API answers, in the webhook parsers' types: the client's `kind` picks the
/// host's module.
pub struct HostApi(HostClient);

impl HostApi {
    pub fn new(config: &HostConfig, timeout: std::time::Duration) -> Self {
        HostApi(HostClient::new(config, timeout))
    }

    pub fn client(&self) -> &HostClient {
        &self.0
    }

    /// A commit's metadata; `ApiError::NotFound` when the host does not know it.
    pub async fn commit(&self, repository: &str, sha: &CommitSha) -> Result<Commit, ApiError> {
        let c = &self.0;
        match c.kind {
            HostKind::GitHub => github::commit(c, repository, sha).await,
            HostKind::GitLab => gitlab::commit(c, repository, sha).await,
            HostKind::AzureDevOps => azuredevops::commit(c, repository, sha).await,
            HostKind::Gitea => gitea::commit(c, repository, sha).await,
        }
    }

    /// The merged pull request that brought `sha` (with its reviews), `None` when there is
    /// none (pushed straight to the branch).
    pub async fn pull_request(
        &self,
        repository: &str,
        sha: &CommitSha,
    ) -> Result<Option<PullRequest>, ApiError> {
        let c = &self.0;
        match c.kind {
            HostKind::GitHub => github::pull_request(c, repository, sha).await,
            HostKind::GitLab => gitlab::pull_request(c, repository, sha).await,
            HostKind::AzureDevOps => azuredevops::pull_request(c, repository, sha).await,
            HostKind::Gitea => gitea::pull_request(c, repository, sha).await,
        }
    }

    /// The commits reachable from `head` and not from `base`, oldest first.
    pub async fn compare(
        &self,
        repository: &str,
        base: &CommitSha,
        head: &CommitSha,
    ) -> Result<Vec<Commit>, ApiError> {
        let c = &self.0;
        match c.kind {
            HostKind::GitHub => github::compare(c, repository, base, head).await,
            HostKind::GitLab => gitlab::compare(c, repository, base, head).await,
            HostKind::AzureDevOps => azuredevops::compare(c, repository, base, head).await,
            HostKind::Gitea => gitea::compare(c, repository, base, head).await,
        }
    }
}

/// The repository as the webhook types name it, for records made from API answers.
pub fn repository(key: &str, web_url: Option<String>) -> Result<crate::git::Repository, ApiError> {
    let key = crate::domain::RepoKey::from_url(key)
        .map_err(|e| ApiError::Malformed(format!("repository {key:?}: {e}")))?;
    Ok(crate::git::Repository {
        url: web_url.unwrap_or_else(|| format!("https://{key}")),
        key,
        id: None,
    })
}

/// A sha the host answered, checked like a webhook's.
pub fn sha_of(v: &serde_json::Value, what: &str) -> Result<CommitSha, ApiError> {
    v.as_str()
        .and_then(|s| CommitSha::parse(s).ok())
        .ok_or_else(|| ApiError::Malformed(format!("{what}: not a commit sha: {v}")))
}

/// A string field, if present and a string.
pub fn str_of(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// A commit message cut like a webhook's.
pub fn message_of(v: &serde_json::Value) -> Option<String> {
    v.as_str()
        .map(|m| crate::flux::cut(m.to_string(), crate::git::MAX_COMMIT_MESSAGE))
}

/// A compare answer's list of commits, each read by `commit_of`.
pub fn commits_in(
    list: &serde_json::Value,
    commit_of: fn(&serde_json::Value) -> Result<Commit, ApiError>,
) -> Result<Vec<Commit>, ApiError> {
    list.as_array()
        .ok_or_else(|| ApiError::Malformed("compare: no commits".into()))?
        .iter()
        .map(commit_of)
        .collect()
}

/// A host's time as RFC 3339 UTC, as the webhook parsers keep it.
pub fn time_of(v: &serde_json::Value) -> Option<String> {
    crate::git::timestamp(v.as_str())
}
