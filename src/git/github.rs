//! GitHub (github.com, GHEC, GHES): `X-Hub-Signature-256`, `X-GitHub-Event`, `X-GitHub-Delivery`.
//!
//! The push and pull-request payload types here are shared with Gitea and Forgejo, whose
//! payloads follow GitHub's shape.

use serde::Deserialize;

use super::{
    branch_ref, ensure_head, opt_sha, repo_key, sha, timestamp, verify_hub_signature, AuthError,
    Commit, Delivery, GitEvent, Merge, ParseError, Parsed, Person, PullRequest, Push, Repository,
    Review,
};
use crate::config::SecretPair;

pub fn verify(pair: &SecretPair, d: &Delivery<'_>) -> Result<(), AuthError> {
    verify_hub_signature(
        pair,
        d,
        &["x-hub-signature-256"],
        &[],
        Some("x-hub-signature"),
    )
}

pub fn parse(d: &Delivery<'_>) -> Result<Parsed, ParseError> {
    let event = d.required_header("x-github-event")?;
    let delivery_id = match d.header("x-github-delivery").filter(|v| !v.is_empty()) {
        // A redelivery keeps its X-GitHub-Delivery.
        Some(id) => format!("github-delivery:{id}"),
        None => d.body_hash_id(),
    };
    let event = match event {
        "ping" => GitEvent::ignored("ping"),
        "push" => push_event(d.parse_json()?)?,
        "pull_request" => pull_request_event(d.parse_json()?)?,
        "pull_request_review" => review_event(d.parse_json()?)?,
        other => GitEvent::ignored(format!("event type {other:?} is not handled")),
    };
    Ok(Parsed { delivery_id, event })
}

// ---- payload types (shared with Gitea/Forgejo) ---------------------------------------

#[derive(Deserialize)]
pub(super) struct PushPayload {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub before: String,
    pub after: String,
    #[serde(default)]
    pub forced: bool,
    pub repository: Repo,
    pub pusher: Option<User>,
    pub sender: Option<User>,
    #[serde(default)]
    pub commits: Vec<PayloadCommit>,
    pub head_commit: Option<PayloadCommit>,
}

#[derive(Deserialize)]
pub(super) struct Repo {
    pub id: Option<serde_json::Value>,
    pub clone_url: Option<String>,
    pub html_url: Option<String>,
    pub ssh_url: Option<String>,
}

impl Repo {
    pub fn to_repository(&self) -> Result<Repository, ParseError> {
        let url = self
            .clone_url
            .as_deref()
            .or(self.html_url.as_deref())
            .or(self.ssh_url.as_deref())
            .ok_or_else(|| {
                ParseError::invalid("repository", "no clone_url, html_url or ssh_url")
            })?;
        Ok(Repository {
            key: repo_key("repository.clone_url", url)?,
            url: url.to_string(),
            id: self.id.as_ref().map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        })
    }
}

/// GitHub's `pusher` has `name`; Gitea's has `login`/`username`; `sender` has `login`.
#[derive(Deserialize)]
pub(super) struct User {
    pub login: Option<String>,
    pub username: Option<String>,
    pub name: Option<String>,
}

impl User {
    pub fn handle(&self) -> Option<String> {
        [&self.login, &self.username, &self.name]
            .into_iter()
            .flatten()
            .find(|s| !s.is_empty())
            .cloned()
    }
}

#[derive(Deserialize)]
pub(super) struct PayloadCommit {
    pub id: String,
    pub message: Option<String>,
    pub timestamp: Option<String>,
    pub url: Option<String>,
    pub author: Option<PayloadPerson>,
}

#[derive(Deserialize)]
pub(super) struct PayloadPerson {
    pub name: Option<String>,
    pub email: Option<String>,
}

impl PayloadCommit {
    pub fn to_commit(&self) -> Result<Commit, ParseError> {
        Ok(Commit {
            sha: sha("commits[].id", &self.id)?,
            message: self.message.clone(),
            author: self.author.as_ref().map(|a| Person {
                name: a.name.clone(),
                email: a.email.clone(),
            }),
            timestamp: timestamp(self.timestamp.as_deref()),
            url: self.url.clone(),
        })
    }
}

impl PushPayload {
    pub fn to_push(&self) -> Result<Push, ParseError> {
        let before = opt_sha("before", Some(&self.before))?;
        let after = opt_sha("after", Some(&self.after))?;
        let mut commits = self
            .commits
            .iter()
            .map(PayloadCommit::to_commit)
            .collect::<Result<Vec<_>, _>>()?;
        // For an annotated tag `after` is the tag object; `head_commit` is the commit.
        let head = match (&after, &self.head_commit) {
            (None, _) => None,
            (Some(_), Some(h)) => {
                let c = h.to_commit()?;
                if !commits.iter().any(|x| x.sha == c.sha) {
                    commits.push(c.clone());
                }
                Some(c.sha)
            }
            (Some(a), None) => Some(a.clone()),
        };
        ensure_head(&mut commits, &head);
        let pusher = self
            .pusher
            .as_ref()
            .and_then(User::handle)
            .or_else(|| self.sender.as_ref().and_then(User::handle));
        Ok(Push {
            repository: self.repository.to_repository()?,
            git_ref: branch_ref(&self.git_ref),
            before,
            after,
            head,
            forced: self.forced,
            pusher,
            commits,
            source: Default::default(),
        })
    }
}

fn push_event(p: PushPayload) -> Result<GitEvent, ParseError> {
    Ok(GitEvent::Push {
        pushes: vec![p.to_push()?],
    })
}

#[derive(Deserialize)]
pub(super) struct PullRequestPayload {
    pub action: String,
    pub number: Option<u64>,
    pub pull_request: PullRequestBody,
    pub repository: Repo,
    pub sender: Option<User>,
    pub review: Option<ReviewBody>,
}

#[derive(Deserialize)]
pub(super) struct PullRequestBody {
    pub number: Option<u64>,
    pub html_url: Option<String>,
    #[serde(default)]
    pub merged: bool,
    pub merge_commit_sha: Option<String>,
    pub merged_by: Option<User>,
    pub merged_at: Option<String>,
    /// The author (GitHub and Gitea alike).
    pub user: Option<User>,
    pub base: Option<BranchRef>,
    pub head: Option<BranchRef>,
}

#[derive(Deserialize)]
pub(super) struct BranchRef {
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub sha: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ReviewBody {
    /// GitHub: `state` (`approved`, `changes_requested`, `commented`, `dismissed`).
    pub state: Option<String>,
    pub user: Option<User>,
    pub commit_id: Option<String>,
    pub submitted_at: Option<String>,
}

impl PullRequestPayload {
    pub fn number(&self) -> Result<u64, ParseError> {
        self.pull_request
            .number
            .or(self.number)
            .ok_or_else(|| ParseError::invalid("pull_request.number", "missing"))
    }

    /// The merge of a closed-and-merged pull request.
    pub fn merged(&self) -> Result<Option<PullRequest>, ParseError> {
        let pr = &self.pull_request;
        if self.action != "closed" || !pr.merged {
            return Ok(None);
        }
        let merge_sha = pr.merge_commit_sha.as_deref().ok_or_else(|| {
            ParseError::invalid(
                "pull_request.merge_commit_sha",
                "missing on a merged pull request",
            )
        })?;
        Ok(Some(PullRequest {
            repository: self.repository.to_repository()?,
            number: self.number()?,
            url: pr.html_url.clone(),
            author: pr.user.as_ref().and_then(User::handle),
            merge: Some(Merge {
                sha: sha("pull_request.merge_commit_sha", merge_sha)?.into(),
                merged_by: pr.merged_by.as_ref().and_then(User::handle),
                merged_at: timestamp(pr.merged_at.as_deref()),
                target_ref: pr
                    .base
                    .as_ref()
                    .and_then(|b| b.git_ref.as_deref())
                    .map(branch_ref),
                head: opt_sha(
                    "pull_request.head.sha",
                    pr.head.as_ref().and_then(|h| h.sha.as_deref()),
                )?,
            }),
            reviews: vec![],
        }))
    }

    /// A pull request carrying one review by `user`.
    pub fn with_review(
        &self,
        user: Option<String>,
        approved: bool,
    ) -> Result<PullRequest, ParseError> {
        let review = self.review.as_ref();
        let user = review
            .and_then(|r| r.user.as_ref())
            .and_then(User::handle)
            .or(user)
            .ok_or_else(|| ParseError::invalid("review.user", "missing"))?;
        let commit = review.and_then(|r| r.commit_id.as_deref()).or(self
            .pull_request
            .head
            .as_ref()
            .and_then(|h| h.sha.as_deref()));
        Ok(PullRequest {
            repository: self.repository.to_repository()?,
            number: self.number()?,
            url: self.pull_request.html_url.clone(),
            author: self.pull_request.user.as_ref().and_then(User::handle),
            merge: None,
            reviews: vec![Review {
                user,
                approved,
                commit: opt_sha("review.commit_id", commit)?,
                at: timestamp(review.and_then(|r| r.submitted_at.as_deref())),
            }],
        })
    }
}

fn pull_request_event(p: PullRequestPayload) -> Result<GitEvent, ParseError> {
    Ok(match p.merged()? {
        Some(pr) => GitEvent::pull_request(pr),
        None if p.action == "closed" => GitEvent::ignored("pull request closed without merging"),
        None => GitEvent::ignored(format!("pull_request action {:?} is not handled", p.action)),
    })
}

fn review_event(p: PullRequestPayload) -> Result<GitEvent, ParseError> {
    let state = p
        .review
        .as_ref()
        .and_then(|r| r.state.as_deref())
        .unwrap_or_default()
        .to_ascii_lowercase();
    Ok(match (p.action.as_str(), state.as_str()) {
        ("submitted", "approved") => GitEvent::pull_request(p.with_review(None, true)?),
        // A dismissed approval no longer counts.
        ("dismissed", _) => GitEvent::pull_request(p.with_review(None, false)?),
        (action, state) => GitEvent::ignored(format!(
            "pull_request_review {action:?} with state {state:?} is not an approval"
        )),
    })
}
