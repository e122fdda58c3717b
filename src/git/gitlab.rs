//! GitLab: `X-Gitlab-Token` (the secret, verbatim), `X-Gitlab-Event`, `Idempotency-Key`.
//!
//! GitLab's "Test" button sends a real-shaped push built from real commits, so it is recorded
//! like any push; recording is idempotent per commit, so nothing is duplicated.

use serde::Deserialize;

use super::{
    branch_ref, ensure_head, opt_sha, repo_key, sha, signature::token_matches, timestamp,
    AuthError, Commit, Credential, Delivery, GitEvent, Merge, ParseError, Parsed, Person,
    PullRequest, Push, Repository, Review,
};
use crate::config::SecretPair;

pub fn verify(pair: &SecretPair, d: &Delivery<'_>) -> Result<(), AuthError> {
    match d.header("x-gitlab-token").filter(|v| !v.is_empty()) {
        None => Err(AuthError::Missing(Credential::Token)),
        Some(t) if token_matches(pair, t) => Ok(()),
        Some(_) => Err(AuthError::Mismatch(Credential::Token)),
    }
}

pub fn parse(d: &Delivery<'_>) -> Result<Parsed, ParseError> {
    let event = d.required_header("x-gitlab-event")?;
    // Idempotency-Key (17.4+) survives retries and manual resends; older versions: body hash.
    let delivery_id = match d.header("idempotency-key").filter(|v| !v.is_empty()) {
        Some(k) => format!("gitlab-idempotency-key:{k}"),
        None => d.body_hash_id(),
    };
    let event = match event {
        "Push Hook" | "Tag Push Hook" => push_event(d.parse_json()?)?,
        "Merge Request Hook" => merge_request_event(d.parse_json()?)?,
        "System Hook" => {
            // System hooks carry pushes too, told apart by `object_kind`.
            let v: serde_json::Value = d.parse_json()?;
            match v.get("object_kind").and_then(|k| k.as_str()) {
                Some("push") | Some("tag_push") => push_event(
                    serde_json::from_value(v).map_err(|e| ParseError::Json(e.to_string()))?,
                )?,
                Some("merge_request") => merge_request_event(
                    serde_json::from_value(v).map_err(|e| ParseError::Json(e.to_string()))?,
                )?,
                kind => GitEvent::ignored(format!("system hook {kind:?} is not handled")),
            }
        }
        other => GitEvent::ignored(format!("event type {other:?} is not handled")),
    };
    Ok(Parsed { delivery_id, event })
}

#[derive(Deserialize)]
struct PushPayload {
    object_kind: Option<String>,
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    checkout_sha: Option<String>,
    user_username: Option<String>,
    user_name: Option<String>,
    project: Project,
    #[serde(default)]
    commits: Vec<PayloadCommit>,
}

#[derive(Deserialize)]
struct Project {
    id: Option<serde_json::Value>,
    git_http_url: Option<String>,
    web_url: Option<String>,
    git_ssh_url: Option<String>,
}

impl Project {
    fn to_repository(&self) -> Result<Repository, ParseError> {
        let url = self
            .git_http_url
            .as_deref()
            .or(self.web_url.as_deref())
            .or(self.git_ssh_url.as_deref())
            .ok_or_else(|| {
                ParseError::invalid("project", "no git_http_url, web_url or git_ssh_url")
            })?;
        Ok(Repository {
            key: repo_key("project.git_http_url", url)?,
            url: url.to_string(),
            id: self.id.as_ref().map(|v| v.to_string()),
        })
    }
}

#[derive(Deserialize)]
struct PayloadCommit {
    id: String,
    message: Option<String>,
    timestamp: Option<String>,
    url: Option<String>,
    author: Option<Author>,
}

#[derive(Deserialize)]
struct Author {
    name: Option<String>,
    email: Option<String>,
}

fn push_event(p: PushPayload) -> Result<GitEvent, ParseError> {
    let after = opt_sha("after", Some(&p.after))?;
    // For tags `checkout_sha` is the dereferenced commit; null on deletion.
    let head = match &after {
        None => None,
        Some(a) => opt_sha("checkout_sha", p.checkout_sha.as_deref())?.or(Some(a.clone())),
    };
    let mut commits = p
        .commits
        .iter()
        .map(|c| {
            Ok(Commit {
                sha: sha("commits[].id", &c.id)?,
                message: c.message.clone(),
                author: c.author.as_ref().map(|a| Person {
                    // GitLab shows `[REDACTED]` for private emails: that is no address.
                    name: a.name.clone(),
                    email: a.email.clone().filter(|e| e != "[REDACTED]"),
                }),
                timestamp: timestamp(c.timestamp.as_deref()),
                url: c.url.clone(),
            })
        })
        .collect::<Result<Vec<_>, ParseError>>()?;
    ensure_head(&mut commits, &head);
    let git_ref = if p.object_kind.as_deref() == Some("tag_push") {
        super::tag_ref(&p.git_ref)
    } else {
        branch_ref(&p.git_ref)
    };
    Ok(GitEvent::Push {
        pushes: vec![Push {
            repository: p.project.to_repository()?,
            git_ref,
            before: opt_sha("before", Some(&p.before))?,
            after,
            head,
            // GitLab has no forced flag; branch history is inferred from before/after chains.
            forced: false,
            pusher: p.user_username.or(p.user_name),
            commits,
            source: Default::default(),
        }],
    })
}

#[derive(Deserialize)]
struct MergeRequestPayload {
    user: Option<User>,
    project: Project,
    object_attributes: MrAttributes,
}

#[derive(Deserialize)]
struct User {
    username: Option<String>,
    name: Option<String>,
}

impl User {
    fn handle(&self) -> Option<String> {
        self.username.clone().or_else(|| self.name.clone())
    }
}

#[derive(Deserialize)]
struct MrAttributes {
    iid: u64,
    url: Option<String>,
    action: Option<String>,
    merge_commit_sha: Option<String>,
    squash_commit_sha: Option<String>,
    last_commit: Option<LastCommit>,
    target_branch: Option<String>,
    updated_at: Option<String>,
}

#[derive(Deserialize)]
struct LastCommit {
    id: String,
}

fn merge_request_event(p: MergeRequestPayload) -> Result<GitEvent, ParseError> {
    let a = &p.object_attributes;
    let actor = p.user.as_ref().and_then(User::handle);
    let head = match &a.last_commit {
        Some(c) => Some(sha("object_attributes.last_commit.id", &c.id)?),
        None => None,
    };
    let mut pr = PullRequest {
        repository: p.project.to_repository()?,
        number: a.iid,
        url: a.url.clone(),
        // The hook names the author by id only (`author_id`), reviewers by username: not
        // comparable, so none (GitLab itself can forbid authors approving their own).
        author: None,
        merge: None,
        reviews: vec![],
    };
    match a.action.as_deref() {
        Some("merge") => {
            // Merge commit, else the squash commit, else (fast-forward) the head itself.
            let merged = a
                .merge_commit_sha
                .as_deref()
                .or(a.squash_commit_sha.as_deref())
                .filter(|s| !s.is_empty());
            let sha = match merged {
                Some(s) => sha("object_attributes.merge_commit_sha", s)?,
                None => head.clone().ok_or_else(|| {
                    ParseError::invalid("object_attributes.merge_commit_sha", "missing")
                })?,
            };
            pr.merge = Some(Merge {
                sha: sha.into(),
                merged_by: actor,
                merged_at: timestamp(a.updated_at.as_deref()),
                target_ref: a.target_branch.as_deref().map(branch_ref),
                head,
            });
        }
        Some(action @ ("approved" | "approval" | "unapproved" | "unapproval")) => {
            let user =
                actor.ok_or_else(|| ParseError::invalid("user", "missing on an approval"))?;
            pr.reviews.push(Review {
                user,
                approved: action == "approved" || action == "approval",
                commit: head,
                at: timestamp(a.updated_at.as_deref()),
            });
        }
        other => {
            return Ok(GitEvent::ignored(format!(
                "merge request action {other:?} is not handled"
            )))
        }
    }
    Ok(GitEvent::pull_request(pr))
}
