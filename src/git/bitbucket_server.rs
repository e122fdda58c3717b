//! Bitbucket Data Center / Server: `X-Hub-Signature: sha256=<hex>` (HmacSha256 is the default;
//! a hook configured for HmacSha1 sends `sha1=`), `X-Event-Key`.
//!
//! `repo:refs_changed` lists no commits on older versions: each change's `toHash` is recorded
//! as the ref's commit. `X-Request-Id` is new per request, so the body hash identifies a
//! delivery. "Test connection" sends `diagnostics:ping`.

use serde::Deserialize;

use super::{
    branch_ref, ensure_head, opt_sha, repo_key, sha, tag_ref, verify_hub_signature, AuthError,
    Commit, Delivery, GitEvent, Merge, ParseError, Parsed, Person, PullRequest, Push, Repository,
    Review,
};
use crate::config::SecretPair;

pub fn verify(pair: &SecretPair, d: &Delivery<'_>) -> Result<(), AuthError> {
    verify_hub_signature(pair, d, &["x-hub-signature"], &[], Some("x-hub-signature"))
}

pub fn parse(d: &Delivery<'_>) -> Result<Parsed, ParseError> {
    let key = d.required_header("x-event-key")?;
    let event = match key {
        "diagnostics:ping" => GitEvent::ignored("ping"),
        "repo:refs_changed" => push_event(d.parse_json()?)?,
        "pr:merged" => merged_event(d.parse_json()?)?,
        "pr:reviewer:approved" => review_event(d.parse_json()?, true)?,
        "pr:reviewer:unapproved" | "pr:reviewer:needs_work" => {
            review_event(d.parse_json()?, false)?
        }
        other => GitEvent::ignored(format!("event key {other:?} is not handled")),
    };
    Ok(Parsed {
        delivery_id: d.body_hash_id(),
        event,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    name: Option<String>,
    slug: Option<String>,
    display_name: Option<String>,
    email_address: Option<String>,
}

impl User {
    fn handle(&self) -> Option<String> {
        self.name
            .clone()
            .or_else(|| self.slug.clone())
            .or_else(|| self.display_name.clone())
    }
}

#[derive(Deserialize)]
struct Repo {
    slug: String,
    id: Option<serde_json::Value>,
    project: Option<Project>,
    links: Option<RepoLinks>,
}

#[derive(Deserialize)]
struct Project {
    key: String,
}

#[derive(Deserialize)]
struct RepoLinks {
    #[serde(default, deserialize_with = "lenient_list")]
    clone: Vec<NamedHref>,
    #[serde(rename = "self", default, deserialize_with = "lenient_list")]
    self_: Vec<NamedHref>,
}

/// A list of links, keeping the entries that are links: Atlassian's own samples carry
/// `"self":[null]`, and a link is never what an event needs (strict about what is needed,
/// lenient about the rest).
fn lenient_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Array(items) => items
            .into_iter()
            .filter_map(|i| serde_json::from_value(i).ok())
            .collect(),
        _ => vec![],
    })
}

#[derive(Deserialize)]
struct NamedHref {
    href: String,
    name: Option<String>,
}

impl Repo {
    fn to_repository(&self) -> Result<Repository, ParseError> {
        let links = self.links.as_ref();
        let clone = links.and_then(|l| {
            l.clone
                .iter()
                .find(|c| c.name.as_deref() == Some("http"))
                .or_else(|| l.clone.first())
        });
        let url = match clone {
            Some(c) => c.href.clone(),
            None => {
                // Without clone links the project key and slug still name the repository;
                // the host is unknown, so the key carries a fixed placeholder host.
                let project = self.project.as_ref().ok_or_else(|| {
                    ParseError::invalid("repository", "no links.clone and no project.key")
                })?;
                format!("bitbucket-server/{}/{}", project.key, self.slug)
            }
        };
        Ok(Repository {
            key: repo_key("repository.links.clone", &url)?,
            url,
            id: self.id.as_ref().map(|v| v.to_string()),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushPayload {
    actor: Option<User>,
    repository: Repo,
    changes: Vec<Change>,
    #[serde(default)]
    commits: Vec<DcCommit>,
    to_commit: Option<DcCommit>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Change {
    #[serde(rename = "ref")]
    git_ref: Option<RefInfo>,
    ref_id: Option<String>,
    from_hash: Option<String>,
    to_hash: Option<String>,
}

#[derive(Deserialize)]
struct RefInfo {
    id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DcCommit {
    id: String,
    message: Option<String>,
    author: Option<User>,
    author_timestamp: Option<i64>,
}

impl DcCommit {
    fn to_commit(&self) -> Result<Commit, ParseError> {
        Ok(Commit {
            sha: sha("commits[].id", &self.id)?,
            message: self.message.clone(),
            author: self.author.as_ref().map(|a| Person {
                name: a.display_name.clone().or_else(|| a.name.clone()),
                email: a.email_address.clone(),
            }),
            timestamp: self.author_timestamp.and_then(millis_to_rfc3339),
            url: None,
        })
    }
}

fn millis_to_rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn push_event(p: PushPayload) -> Result<GitEvent, ParseError> {
    let repository = p.repository.to_repository()?;
    let pusher = p.actor.as_ref().and_then(User::handle);
    let listed = p
        .commits
        .iter()
        .chain(p.to_commit.iter())
        .map(DcCommit::to_commit)
        .collect::<Result<Vec<_>, _>>()?;
    let single = p.changes.len() == 1;
    let pushes = p
        .changes
        .iter()
        .map(|c| {
            let id = c
                .git_ref
                .as_ref()
                .map(|r| r.id.clone())
                .or_else(|| c.ref_id.clone())
                .ok_or_else(|| ParseError::invalid("changes[].refId", "missing"))?;
            let is_tag = c.git_ref.as_ref().and_then(|r| r.kind.as_deref()) == Some("TAG");
            let git_ref = if is_tag {
                tag_ref(&id)
            } else {
                branch_ref(&id)
            };
            let after = opt_sha("changes[].toHash", c.to_hash.as_deref())?;
            let mut commits: Vec<Commit> = if single && after.is_some() {
                listed.iter().rev().cloned().collect()
            } else {
                listed
                    .iter()
                    .filter(|x| Some(&x.sha) == after.as_ref())
                    .cloned()
                    .collect()
            };
            commits.dedup_by(|a, b| a.sha == b.sha);
            ensure_head(&mut commits, &after);
            Ok(Push {
                repository: repository.clone(),
                git_ref,
                before: opt_sha("changes[].fromHash", c.from_hash.as_deref())?,
                head: after.clone(),
                after,
                forced: false,
                pusher: pusher.clone(),
                commits,
                source: Default::default(),
            })
        })
        .collect::<Result<Vec<_>, ParseError>>()?;
    Ok(GitEvent::Push { pushes })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrPayload {
    actor: Option<User>,
    pull_request: PrBody,
    participant: Option<Participant>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrBody {
    id: u64,
    closed_date: Option<i64>,
    from_ref: Option<PrRef>,
    to_ref: PrRef,
    author: Option<Participant>,
    #[serde(default)]
    reviewers: Vec<Participant>,
    properties: Option<Properties>,
    links: Option<RepoLinks>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PrRef {
    id: Option<String>,
    latest_commit: Option<String>,
    repository: Repo,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Properties {
    merge_commit: Option<MergeCommit>,
}

#[derive(Deserialize)]
struct MergeCommit {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Participant {
    user: Option<User>,
    #[serde(default)]
    approved: bool,
    last_reviewed_commit: Option<String>,
}

fn base(p: &PrPayload) -> Result<PullRequest, ParseError> {
    let pr = &p.pull_request;
    Ok(PullRequest {
        repository: pr.to_ref.repository.to_repository()?,
        number: pr.id,
        url: pr
            .links
            .as_ref()
            .and_then(|l| l.self_.first())
            .map(|h| h.href.clone()),
        author: pr
            .author
            .as_ref()
            .and_then(|a| a.user.as_ref())
            .and_then(User::handle),
        merge: None,
        reviews: vec![],
    })
}

fn merged_event(p: PrPayload) -> Result<GitEvent, ParseError> {
    let pr = &p.pull_request;
    let merge = pr
        .properties
        .as_ref()
        .and_then(|x| x.merge_commit.as_ref())
        .ok_or_else(|| {
            ParseError::invalid("pullRequest.properties.mergeCommit", "missing on pr:merged")
        })?;
    let head = opt_sha(
        "pullRequest.fromRef.latestCommit",
        pr.from_ref
            .as_ref()
            .and_then(|r| r.latest_commit.as_deref()),
    )?;
    let mut out = base(&p)?;
    out.merge = Some(Merge {
        sha: sha("pullRequest.properties.mergeCommit.id", &merge.id)?.into(),
        merged_by: p.actor.as_ref().and_then(User::handle),
        merged_at: pr.closed_date.and_then(millis_to_rfc3339),
        target_ref: pr.to_ref.id.as_deref().map(branch_ref),
        head: head.clone(),
    });
    out.reviews = pr
        .reviewers
        .iter()
        .filter(|r| r.approved)
        .filter_map(|r| {
            Some(Review {
                user: r.user.as_ref()?.handle()?,
                approved: true,
                commit: head.clone(),
                at: None,
            })
        })
        .collect();
    Ok(GitEvent::pull_request(out))
}

fn review_event(p: PrPayload, approved: bool) -> Result<GitEvent, ParseError> {
    let participant = p.participant.as_ref();
    let user = participant
        .and_then(|x| x.user.as_ref())
        .or(p.actor.as_ref())
        .and_then(User::handle)
        .ok_or_else(|| ParseError::invalid("participant.user", "missing"))?;
    let commit = opt_sha(
        "participant.lastReviewedCommit",
        participant.and_then(|x| x.last_reviewed_commit.as_deref()),
    )?;
    let mut out = base(&p)?;
    out.reviews.push(Review {
        user,
        approved,
        commit,
        at: None,
    });
    Ok(GitEvent::pull_request(out))
}
