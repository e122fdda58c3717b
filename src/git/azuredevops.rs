//! Azure DevOps service hooks: no HMAC; Basic auth (`FLUXTRAIL_AZUREDEVOPS_BASIC` holds
//! `user:password`). The event type is in the body (`eventType`).
//!
//! Azure retries transient failures with the same body, so the body hash identifies a
//! delivery. The subscription wizard's "Test" sends the documented sample, whose
//! `subscriptionId` is the all-zero GUID: such notifications are answered `ignored`.

use base64::Engine;
use serde::Deserialize;

use super::{
    branch_ref, ensure_head, opt_sha, repo_key, sha, signature::token_matches, timestamp,
    AuthError, Commit, Credential, Delivery, GitEvent, Merge, ParseError, Parsed, Person,
    PullRequest, Push, Repository, Review,
};
use crate::config::SecretPair;

pub fn verify(pair: &SecretPair, d: &Delivery<'_>) -> Result<(), AuthError> {
    const WHAT: Credential = Credential::BasicAuth;
    let value = d.header("authorization").ok_or(AuthError::Missing(WHAT))?;
    let (scheme, encoded) = value.split_once(' ').ok_or(AuthError::Mismatch(WHAT))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::Missing(WHAT));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthError::Mismatch(WHAT))?;
    let presented = String::from_utf8(decoded).map_err(|_| AuthError::Mismatch(WHAT))?;
    if token_matches(pair, &presented) {
        Ok(())
    } else {
        Err(AuthError::Mismatch(WHAT))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    event_type: String,
    subscription_id: Option<String>,
    resource: serde_json::Value,
}

pub fn parse(d: &Delivery<'_>) -> Result<Parsed, ParseError> {
    let env: Envelope = d.parse_json()?;
    let delivery_id = d.body_hash_id();
    let is_test = env
        .subscription_id
        .as_deref()
        .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c == '0' || c == '-'));
    let event = if is_test {
        GitEvent::ignored("test notification (all-zero subscriptionId)")
    } else {
        match env.event_type.as_str() {
            "git.push" => push_event(from_resource(env.resource)?)?,
            "git.pullrequest.merged" | "git.pullrequest.updated" => {
                pr_event(from_resource(env.resource)?)?
            }
            other => GitEvent::ignored(format!("event type {other:?} is not handled")),
        }
    };
    Ok(Parsed { delivery_id, event })
}

fn from_resource<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ParseError> {
    serde_json::from_value(v).map_err(|e| ParseError::Json(format!("resource: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushResource {
    #[serde(default)]
    commits: Vec<AzCommit>,
    #[serde(default)]
    ref_updates: Vec<RefUpdate>,
    repository: AzRepo,
    pushed_by: Option<Identity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzCommit {
    commit_id: String,
    author: Option<AzPerson>,
    comment: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct AzPerson {
    name: Option<String>,
    email: Option<String>,
    date: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefUpdate {
    name: String,
    old_object_id: Option<String>,
    new_object_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzRepo {
    id: Option<String>,
    remote_url: Option<String>,
    web_url: Option<String>,
}

impl AzRepo {
    fn to_repository(&self) -> Result<Repository, ParseError> {
        let url = self
            .remote_url
            .as_deref()
            .or(self.web_url.as_deref())
            .ok_or_else(|| ParseError::invalid("resource.repository.remoteUrl", "missing"))?;
        Ok(Repository {
            key: repo_key("resource.repository.remoteUrl", url)?,
            url: url.to_string(),
            id: self.id.clone(),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Identity {
    display_name: Option<String>,
    unique_name: Option<String>,
}

impl Identity {
    fn handle(&self) -> Option<String> {
        self.unique_name
            .clone()
            .or_else(|| self.display_name.clone())
    }
}

fn push_event(r: PushResource) -> Result<GitEvent, ParseError> {
    if r.ref_updates.is_empty() {
        return Ok(GitEvent::ignored(
            "git.push without refUpdates: set the service hook's \"Resource details to send\" to All",
        ));
    }
    let repository = r.repository.to_repository()?;
    let commits = r
        .commits
        .iter()
        .map(|c| {
            Ok(Commit {
                sha: sha("resource.commits[].commitId", &c.commit_id)?,
                message: c.comment.clone(),
                author: c.author.as_ref().map(|a| Person {
                    name: a.name.clone(),
                    email: a.email.clone(),
                }),
                timestamp: timestamp(c.author.as_ref().and_then(|a| a.date.as_deref())),
                url: c.url.clone(),
            })
        })
        .collect::<Result<Vec<_>, ParseError>>()?;
    // Azure lists the push's commits once for all its ref updates. With a single moving ref
    // they are that ref's; with several, each ref is credited only with its own new head
    // (which commit belongs to which ref is not in the payload).
    let moving = r.ref_updates.iter().filter(|u| {
        u.new_object_id
            .as_deref()
            .is_some_and(|n| !n.bytes().all(|b| b == b'0'))
    });
    let single = moving.count() == 1;
    let pushes = r
        .ref_updates
        .iter()
        .map(|u| {
            let after = opt_sha("refUpdates[].newObjectId", u.new_object_id.as_deref())?;
            let mut own: Vec<Commit> = if single && after.is_some() {
                commits.clone()
            } else {
                commits
                    .iter()
                    .filter(|c| Some(&c.sha) == after.as_ref())
                    .cloned()
                    .collect()
            };
            ensure_head(&mut own, &after);
            Ok(Push {
                repository: repository.clone(),
                git_ref: branch_ref(&u.name),
                before: opt_sha("refUpdates[].oldObjectId", u.old_object_id.as_deref())?,
                head: after.clone(),
                after,
                forced: false,
                pusher: r.pushed_by.as_ref().and_then(Identity::handle),
                commits: own,
                source: Default::default(),
            })
        })
        .collect::<Result<Vec<_>, ParseError>>()?;
    Ok(GitEvent::Push { pushes })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrResource {
    pull_request_id: u64,
    status: Option<String>,
    last_merge_commit: Option<CommitRef>,
    last_merge_source_commit: Option<CommitRef>,
    #[serde(default)]
    reviewers: Vec<Reviewer>,
    closed_by: Option<Identity>,
    created_by: Option<Identity>,
    closed_date: Option<String>,
    target_ref_name: Option<String>,
    repository: AzRepo,
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommitRef {
    commit_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reviewer {
    display_name: Option<String>,
    unique_name: Option<String>,
    vote: Option<i64>,
}

fn pr_event(r: PrResource) -> Result<GitEvent, ParseError> {
    // Azure builds test merges before completion: only a completed PR is merged.
    if r.status.as_deref() != Some("completed") {
        return Ok(GitEvent::ignored(format!(
            "pull request status {:?} is not completed",
            r.status.as_deref().unwrap_or("")
        )));
    }
    let merge_commit = r.last_merge_commit.as_ref().ok_or_else(|| {
        ParseError::invalid(
            "resource.lastMergeCommit",
            "missing on a completed pull request",
        )
    })?;
    let head = match &r.last_merge_source_commit {
        Some(c) => Some(sha(
            "resource.lastMergeSourceCommit.commitId",
            &c.commit_id,
        )?),
        None => None,
    };
    let reviews = r
        .reviewers
        .iter()
        .filter_map(|v| {
            let user = v.unique_name.clone().or_else(|| v.display_name.clone())?;
            Some(Review {
                user,
                // 10 approved, 5 approved with suggestions.
                approved: v.vote.unwrap_or(0) >= 5,
                commit: head.clone(),
                at: None,
            })
        })
        .collect();
    // The web page of the pull request, not the REST URL the payload carries.
    let url = match &r.repository.remote_url {
        Some(remote) => Some(format!(
            "{}/pullrequest/{}",
            remote.trim_end_matches('/'),
            r.pull_request_id
        )),
        None => r.url.clone(),
    };
    Ok(GitEvent::pull_request(PullRequest {
        repository: r.repository.to_repository()?,
        number: r.pull_request_id,
        url,
        author: r.created_by.as_ref().and_then(Identity::handle),
        merge: Some(Merge {
            sha: sha("resource.lastMergeCommit.commitId", &merge_commit.commit_id)?.into(),
            merged_by: r.closed_by.as_ref().and_then(Identity::handle),
            merged_at: timestamp(r.closed_date.as_deref()),
            target_ref: r.target_ref_name.as_deref().map(branch_ref),
            head,
        }),
        reviews,
    }))
}
