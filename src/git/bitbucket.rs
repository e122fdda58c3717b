//! Bitbucket Cloud: `X-Hub-Signature: sha256=<hex>`, `X-Event-Key`.
//!
//! Payloads carry no clone URL: the repository key comes from `links.html.href` (or
//! `full_name`). A push lists at most 5 commits per change (`truncated` says when more).
//! Retries resend the same body; the body hash identifies a delivery.

use serde::Deserialize;

use super::{
    branch_ref, ensure_head, opt_sha, person_from_raw, repo_key, sha, tag_ref, timestamp,
    verify_hub_signature, AuthError, Commit, CommitSha, Delivery, GitEvent, Merge, ParseError,
    Parsed, PullRequest, Push, Repository, Review,
};
use crate::config::SecretPair;

pub fn verify(pair: &SecretPair, d: &Delivery<'_>) -> Result<(), AuthError> {
    verify_hub_signature(pair, d, &["x-hub-signature"], &[], None)
}

pub fn parse(d: &Delivery<'_>) -> Result<Parsed, ParseError> {
    let key = d.required_header("x-event-key")?;
    let event = match key {
        "repo:push" => push_event(d.parse_json()?)?,
        "pullrequest:fulfilled" => fulfilled_event(d.parse_json()?)?,
        "pullrequest:approved" => approval_event(d.parse_json()?, true)?,
        "pullrequest:unapproved" => approval_event(d.parse_json()?, false)?,
        other => GitEvent::ignored(format!("event key {other:?} is not handled")),
    };
    Ok(Parsed {
        delivery_id: d.body_hash_id(),
        event,
    })
}

#[derive(Deserialize)]
struct Repo {
    full_name: Option<String>,
    uuid: Option<String>,
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Links {
    html: Option<Href>,
}

#[derive(Deserialize)]
struct Href {
    href: String,
}

impl Repo {
    fn to_repository(&self) -> Result<Repository, ParseError> {
        let url = match (&self.links, &self.full_name) {
            (Some(Links { html: Some(h) }), _) => h.href.clone(),
            (_, Some(name)) => format!("https://bitbucket.org/{name}"),
            _ => {
                return Err(ParseError::invalid(
                    "repository",
                    "no links.html.href or full_name",
                ))
            }
        };
        Ok(Repository {
            key: repo_key("repository.links.html.href", &url)?,
            url,
            id: self.uuid.clone(),
        })
    }
}

#[derive(Deserialize)]
struct Account {
    display_name: Option<String>,
    nickname: Option<String>,
    username: Option<String>,
}

impl Account {
    fn handle(&self) -> Option<String> {
        self.nickname
            .clone()
            .or_else(|| self.username.clone())
            .or_else(|| self.display_name.clone())
    }
}

#[derive(Deserialize)]
struct PushPayload {
    actor: Option<Account>,
    repository: Repo,
    push: PushBody,
}

#[derive(Deserialize)]
struct PushBody {
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    old: Option<RefState>,
    new: Option<RefState>,
    #[serde(default)]
    forced: bool,
    #[serde(default)]
    commits: Vec<BbCommit>,
}

#[derive(Deserialize)]
struct RefState {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    target: BbCommit,
}

#[derive(Deserialize)]
struct BbCommit {
    hash: String,
    message: Option<String>,
    date: Option<String>,
    author: Option<BbAuthor>,
    links: Option<Links>,
}

#[derive(Deserialize)]
struct BbAuthor {
    raw: Option<String>,
    user: Option<Account>,
}

impl BbCommit {
    fn to_commit(&self) -> Result<Commit, ParseError> {
        let author = self.author.as_ref().map(|a| match &a.raw {
            Some(raw) => person_from_raw(raw),
            None => super::Person {
                name: a.user.as_ref().and_then(|u| u.display_name.clone()),
                email: None,
            },
        });
        Ok(Commit {
            sha: sha("commits[].hash", &self.hash)?,
            message: self.message.clone(),
            author,
            timestamp: timestamp(self.date.as_deref()),
            url: self
                .links
                .as_ref()
                .and_then(|l| l.html.as_ref())
                .map(|h| h.href.clone()),
        })
    }
}

fn push_event(p: PushPayload) -> Result<GitEvent, ParseError> {
    let repository = p.repository.to_repository()?;
    let pusher = p.actor.as_ref().and_then(Account::handle);
    let pushes =
        p.push
            .changes
            .iter()
            .map(|c| {
                let state =
                    c.new.as_ref().or(c.old.as_ref()).ok_or_else(|| {
                        ParseError::invalid("push.changes[]", "neither old nor new")
                    })?;
                let git_ref = if state.kind == "tag" || state.kind == "annotated_tag" {
                    tag_ref(&state.name)
                } else {
                    branch_ref(&state.name)
                };
                let after = opt_sha(
                    "push.changes[].new.target.hash",
                    c.new.as_ref().map(|n| n.target.hash.as_str()),
                )?;
                // Bitbucket lists commits newest first; we keep oldest first like the others.
                let mut commits = c
                    .commits
                    .iter()
                    .rev()
                    .map(BbCommit::to_commit)
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(n) = &c.new {
                    if after.is_some() && !commits.iter().any(|x| Some(&x.sha) == after.as_ref()) {
                        commits.push(n.target.to_commit()?);
                    }
                }
                ensure_head(&mut commits, &after);
                Ok(Push {
                    repository: repository.clone(),
                    git_ref,
                    before: opt_sha(
                        "push.changes[].old.target.hash",
                        c.old.as_ref().map(|o| o.target.hash.as_str()),
                    )?,
                    head: after.clone(),
                    after,
                    forced: c.forced,
                    pusher: pusher.clone(),
                    commits,
                    source: Default::default(),
                })
            })
            .collect::<Result<Vec<_>, ParseError>>()?;
    Ok(GitEvent::Push { pushes })
}

#[derive(Deserialize)]
struct PrPayload {
    actor: Option<Account>,
    repository: Repo,
    pullrequest: PrBody,
    approval: Option<Approval>,
}

#[derive(Deserialize)]
struct PrBody {
    id: u64,
    links: Option<Links>,
    merge_commit: Option<HashOnly>,
    closed_by: Option<Account>,
    author: Option<Account>,
    updated_on: Option<String>,
    destination: Option<Destination>,
    source: Option<Destination>,
    #[serde(default)]
    participants: Vec<Participant>,
}

#[derive(Deserialize)]
struct HashOnly {
    hash: String,
}

#[derive(Deserialize)]
struct Destination {
    branch: Option<Name>,
    commit: Option<HashOnly>,
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

#[derive(Deserialize)]
struct Participant {
    user: Option<Account>,
    #[serde(default)]
    approved: bool,
    participated_on: Option<String>,
}

#[derive(Deserialize)]
struct Approval {
    user: Option<Account>,
    date: Option<String>,
}

/// Bitbucket sometimes abbreviates commit hashes in pull-request payloads; only a full id
/// can be linked to a pushed commit.
fn full_sha(field: &'static str, h: Option<&HashOnly>) -> Option<CommitSha> {
    h.and_then(|h| sha(field, &h.hash).ok())
}

fn base(p: &PrPayload) -> Result<PullRequest, ParseError> {
    Ok(PullRequest {
        repository: p.repository.to_repository()?,
        number: p.pullrequest.id,
        url: p
            .pullrequest
            .links
            .as_ref()
            .and_then(|l| l.html.as_ref())
            .map(|h| h.href.clone()),
        author: p.pullrequest.author.as_ref().and_then(Account::handle),
        merge: None,
        reviews: vec![],
    })
}

fn fulfilled_event(p: PrPayload) -> Result<GitEvent, ParseError> {
    let pr = &p.pullrequest;
    // Always abbreviated (12 hex digits) in Atlassian's samples and real deliveries: the
    // ledger resolves it against the commits pushed to the repository.
    let merge_sha = match pr.merge_commit.as_ref() {
        Some(h) => crate::domain::MergeCommit::parse(&h.hash)
            .map_err(|e| ParseError::invalid("pullrequest.merge_commit.hash", e))?,
        None => {
            return Ok(GitEvent::ignored(
                "merge commit hash is missing; the approval cannot be linked to a commit",
            ))
        }
    };
    let head = full_sha(
        "pullrequest.source.commit.hash",
        pr.source.as_ref().and_then(|s| s.commit.as_ref()),
    );
    let reviews = pr
        .participants
        .iter()
        .filter(|x| x.approved)
        .filter_map(|x| {
            Some(Review {
                user: x.user.as_ref()?.handle()?,
                approved: true,
                commit: head.clone(),
                at: timestamp(x.participated_on.as_deref()),
            })
        })
        .collect();
    let mut out = base(&p)?;
    out.merge = Some(Merge {
        sha: merge_sha,
        merged_by: pr
            .closed_by
            .as_ref()
            .or(p.actor.as_ref())
            .and_then(Account::handle),
        merged_at: timestamp(pr.updated_on.as_deref()),
        target_ref: pr
            .destination
            .as_ref()
            .and_then(|d| d.branch.as_ref())
            .map(|b| branch_ref(&b.name)),
        head,
    });
    out.reviews = reviews;
    Ok(GitEvent::pull_request(out))
}

fn approval_event(p: PrPayload, approved: bool) -> Result<GitEvent, ParseError> {
    let user = p
        .approval
        .as_ref()
        .and_then(|a| a.user.as_ref())
        .or(p.actor.as_ref())
        .and_then(Account::handle)
        .ok_or_else(|| ParseError::invalid("approval.user", "missing"))?;
    let mut out = base(&p)?;
    out.reviews.push(Review {
        user,
        approved,
        commit: full_sha(
            "pullrequest.source.commit.hash",
            p.pullrequest
                .source
                .as_ref()
                .and_then(|s| s.commit.as_ref()),
        ),
        at: timestamp(p.approval.as_ref().and_then(|a| a.date.as_deref())),
    });
    Ok(GitEvent::pull_request(out))
}
