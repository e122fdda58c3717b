//! Git hosts: one module per host, each verifying its own authentication scheme and parsing
//! its own payloads into one shape, [`GitEvent`].
//!
//! Invariant: providers never touch storage and never know HTTP status codes. They see the
//! headers and the raw body, and answer with an event or a typed error.

pub mod azuredevops;
pub mod bitbucket;
pub mod bitbucket_server;
pub mod gitea;
pub mod github;
pub mod gitlab;
pub mod signature;

use std::borrow::Cow;

use hyper::HeaderMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{SecretPair, Secrets};
use crate::domain::{CommitSha, RepoKey};
pub use signature::{AuthError, Credential};

/// The `{provider}` path segment of `POST /api/hooks/git/{provider}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    #[serde(rename = "github")]
    GitHub,
    #[serde(rename = "gitlab")]
    GitLab,
    #[serde(rename = "azuredevops")]
    AzureDevOps,
    Bitbucket,
    BitbucketServer,
    Gitea,
    Forgejo,
}

impl Provider {
    pub const ALL: [Provider; 7] = [
        Provider::GitHub,
        Provider::GitLab,
        Provider::AzureDevOps,
        Provider::Bitbucket,
        Provider::BitbucketServer,
        Provider::Gitea,
        Provider::Forgejo,
    ];

    pub fn from_segment(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::AzureDevOps => "azuredevops",
            Provider::Bitbucket => "bitbucket",
            Provider::BitbucketServer => "bitbucket-server",
            Provider::Gitea => "gitea",
            Provider::Forgejo => "forgejo",
        }
    }

    /// GitHub and Gitea (and so Forgejo) may deliver `application/x-www-form-urlencoded`
    /// bodies carrying the JSON in a `payload` field.
    pub fn accepts_form(self) -> bool {
        matches!(self, Provider::GitHub | Provider::Gitea | Provider::Forgejo)
    }

    /// The secrets this host's deliveries are checked against, and the variable that sets them.
    pub fn secrets(self, secrets: &Secrets) -> (&SecretPair, &'static str) {
        match self {
            Provider::GitHub => (&secrets.github, "FLUXTRAIL_GITHUB_SECRET"),
            Provider::GitLab => (&secrets.gitlab, "FLUXTRAIL_GITLAB_TOKEN"),
            Provider::AzureDevOps => (&secrets.azuredevops_basic, "FLUXTRAIL_AZUREDEVOPS_BASIC"),
            Provider::Bitbucket | Provider::BitbucketServer => {
                (&secrets.bitbucket, "FLUXTRAIL_BITBUCKET_SECRET")
            }
            Provider::Gitea | Provider::Forgejo => (&secrets.gitea, "FLUXTRAIL_GITEA_SECRET"),
        }
    }
}

/// One delivery as it reached us: headers and the raw bytes the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The body is form-encoded (`payload=<json>`) rather than JSON.
    pub form: bool,
}

impl<'a> Delivery<'a> {
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    /// A header that must be present and non-empty.
    pub fn required_header(&self, name: &'static str) -> Result<&'a str, ParseError> {
        self.header(name)
            .filter(|v| !v.is_empty())
            .ok_or(ParseError::MissingHeader(name))
    }

    /// The JSON document: the body itself, or the `payload` field of a form-encoded body.
    pub fn json(&self) -> Result<Cow<'a, [u8]>, ParseError> {
        if !self.form {
            return Ok(Cow::Borrowed(self.body));
        }
        form_urlencoded::parse(self.body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| Cow::Owned(v.into_owned().into_bytes()))
            .ok_or(ParseError::Form)
    }

    /// Deserialises the JSON document into a payload type.
    pub fn parse_json<T: DeserializeOwned>(&self) -> Result<T, ParseError> {
        let json = self.json()?;
        serde_json::from_slice(&json).map_err(|e| ParseError::Json(e.to_string()))
    }

    /// Idempotency key for hosts whose delivery ids change between attempts: the body hash.
    /// Every host re-sends a delivery byte for byte.
    pub fn body_hash_id(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.body)))
    }
}

/// Why a delivery could not be parsed. Each maps to 400 with its own stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("form-encoded body has no `payload` field")]
    Form,
    #[error("missing required header {0}")]
    MissingHeader(&'static str),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl ParseError {
    pub fn invalid(field: &'static str, reason: impl ToString) -> Self {
        ParseError::Invalid {
            field,
            reason: reason.to_string(),
        }
    }
}

/// What one delivery means, whatever host sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum GitEvent {
    /// One or more refs moved (Azure DevOps and Bitbucket can move several in one push).
    Push { pushes: Vec<Push> },
    /// A pull/merge request was merged, or reviewed.
    PullRequest(Box<PullRequest>),
    /// Authentic but nothing to record: pings, test deliveries, event types we don't handle.
    Ignored { reason: String },
}

impl GitEvent {
    pub fn pull_request(pr: PullRequest) -> Self {
        GitEvent::PullRequest(Box::new(pr))
    }

    pub fn ignored(reason: impl Into<String>) -> Self {
        GitEvent::Ignored {
            reason: reason.into(),
        }
    }
}

/// The repository an event concerns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    pub key: RepoKey,
    /// The URL as the host gave it, for display.
    pub url: String,
    /// The host's stable id (GitHub `repository.id`, GitLab `project.id`, Azure GUID, …):
    /// URLs change on rename or transfer, these don't.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// One ref update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Push {
    pub repository: Repository,
    /// Full ref name: `refs/heads/main`, `refs/tags/v1.0.0`.
    pub git_ref: String,
    /// The ref's previous object; `None` when the ref was created.
    pub before: Option<CommitSha>,
    /// The ref's new object; `None` when the ref was deleted. For an annotated tag this is
    /// the tag object, see `head`.
    pub after: Option<CommitSha>,
    /// The commit the ref now points to (the dereferenced tag for annotated tags).
    pub head: Option<CommitSha>,
    pub forced: bool,
    pub pusher: Option<String>,
    /// The commits the payload lists, oldest first. Hosts cap this list (reference §Summary),
    /// so it is never assumed complete.
    pub commits: Vec<Commit>,
    /// `api` for the gap a backfill filled from the host's compare API (part 12).
    #[serde(default, skip_serializing_if = "Source::is_push")]
    pub source: Source,
}

/// Where a commit's (or a push's) record came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Push,
    Api,
}

impl Source {
    pub fn is_push(&self) -> bool {
        *self == Source::Push
    }
}

impl Push {
    pub fn created(&self) -> bool {
        self.before.is_none() && self.after.is_some()
    }
    pub fn deleted(&self) -> bool {
        self.after.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Commit {
    pub sha: CommitSha,
    pub message: Option<String>,
    pub author: Option<Person>,
    /// RFC 3339, normalised to UTC when the host's value parses.
    pub timestamp: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub name: Option<String>,
    pub email: Option<String>,
}

/// A pull/merge request event: its merge, its reviews, or both (Azure DevOps and Bitbucket
/// send the reviewers with the merge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    pub repository: Repository,
    pub number: u64,
    pub url: Option<String>,
    /// Who opened it (their login, as reviewers are named): their own approval does not
    /// count under the approval policy. `None` where the host does not say.
    #[serde(default)]
    pub author: Option<String>,
    pub merge: Option<Merge>,
    pub reviews: Vec<Review>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Merge {
    /// The commit the target branch now holds (merge, squash or rebase result); Bitbucket
    /// Cloud names it by an abbreviation.
    pub sha: crate::domain::MergeCommit,
    pub merged_by: Option<String>,
    pub merged_at: Option<String>,
    pub target_ref: Option<String>,
    /// The pull request's final head commit, what reviewers approved.
    pub head: Option<CommitSha>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    pub user: String,
    /// `false` for a dismissal or withdrawal.
    pub approved: bool,
    /// The head commit the review was given on, when the host says.
    pub commit: Option<CommitSha>,
    pub at: Option<String>,
}

/// A verified, parsed delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Identifies the delivery across redeliveries (the host's id where it is stable, else the
    /// body hash).
    pub delivery_id: String,
    pub event: GitEvent,
}

/// Checks the delivery's authentication. Runs before anything parses the body.
pub fn authenticate(
    provider: Provider,
    secrets: &Secrets,
    allow_unsigned: bool,
    d: &Delivery<'_>,
) -> Result<(), AuthError> {
    let (pair, var) = provider.secrets(secrets);
    if !pair.is_configured() {
        return if allow_unsigned {
            Ok(())
        } else {
            Err(AuthError::NotConfigured(var))
        };
    }
    match provider {
        Provider::GitHub => github::verify(pair, d),
        Provider::GitLab => gitlab::verify(pair, d),
        Provider::AzureDevOps => azuredevops::verify(pair, d),
        Provider::Bitbucket => bitbucket::verify(pair, d),
        Provider::BitbucketServer => bitbucket_server::verify(pair, d),
        Provider::Gitea | Provider::Forgejo => gitea::verify(pair, d),
    }
}

/// The longest commit message kept (bytes); the rest is cut, saying so.
pub const MAX_COMMIT_MESSAGE: usize = 16 * 1024;

/// Parses an authenticated delivery.
pub fn parse(provider: Provider, d: &Delivery<'_>) -> Result<Parsed, ParseError> {
    let parsed = match provider {
        Provider::GitHub => github::parse(d),
        Provider::GitLab => gitlab::parse(d),
        Provider::AzureDevOps => azuredevops::parse(d),
        Provider::Bitbucket => bitbucket::parse(d),
        Provider::BitbucketServer => bitbucket_server::parse(d),
        Provider::Gitea | Provider::Forgejo => gitea::parse(d),
    }?;
    let mut parsed = parsed;
    if let GitEvent::Push { pushes } = &mut parsed.event {
        // A commit message is copied into its commit row (and the journal): bounded like a
        // Flux message, saying so.
        for c in pushes.iter_mut().flat_map(|p| p.commits.iter_mut()) {
            if let Some(m) = c.message.take() {
                c.message = Some(crate::flux::cut(m, MAX_COMMIT_MESSAGE));
            }
        }
    }
    if matches!(parsed.event, GitEvent::Ignored { .. }) {
        // Event types we do not model are answered without reading them, but a body that is
        // not a JSON object is malformed whatever its event type says.
        d.parse_json::<std::collections::HashMap<String, serde::de::IgnoredAny>>()?;
    }
    Ok(parsed)
}

// ---- helpers shared by the host modules ------------------------------------------------

pub(crate) fn sha(field: &'static str, value: &str) -> Result<CommitSha, ParseError> {
    CommitSha::parse(value).map_err(|e| ParseError::invalid(field, e))
}

/// An object id where all zeros means "none".
pub(crate) fn opt_sha(
    field: &'static str,
    value: Option<&str>,
) -> Result<Option<CommitSha>, ParseError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => CommitSha::parse_optional(v).map_err(|e| ParseError::invalid(field, e)),
    }
}

pub(crate) fn repo_key(field: &'static str, url: &str) -> Result<RepoKey, ParseError> {
    RepoKey::from_url(url).map_err(|e| ParseError::invalid(field, e))
}

/// `refs/heads/<name>` unless already a full ref.
pub(crate) fn branch_ref(name: &str) -> String {
    if name.starts_with("refs/") {
        name.to_string()
    } else {
        format!("refs/heads/{name}")
    }
}

pub(crate) fn tag_ref(name: &str) -> String {
    if name.starts_with("refs/") {
        name.to_string()
    } else {
        format!("refs/tags/{name}")
    }
}

/// RFC 3339 in UTC. Hosts also send `2017-12-10 17:08:07 UTC` (GitLab merge requests, still
/// on gitlab.com) and `2017-12-10 17:08:07 +0100`; a value that is no time at all is dropped
/// (logged): every time fluxtrail returns is RFC 3339.
pub fn timestamp(value: Option<&str>) -> Option<String> {
    let v = value?.trim();
    if v.is_empty() {
        return None;
    }
    let utc = |t: chrono::DateTime<chrono::FixedOffset>| t.with_timezone(&chrono::Utc);
    let parsed = chrono::DateTime::parse_from_rfc3339(v)
        .map(utc)
        .or_else(|_| chrono::DateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f %z").map(utc))
        .or_else(|_| {
            let naive = v
                .strip_suffix(" UTC")
                .or_else(|| v.strip_suffix('Z'))
                .unwrap_or(v);
            chrono::NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f"))
                .map(|n| n.and_utc())
        });
    match parsed {
        Ok(t) => Some(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        Err(_) => {
            tracing::warn!(value = v, "a host's timestamp that is not a time: dropped");
            None
        }
    }
}

/// Splits Bitbucket's `Name <email>` author strings.
pub(crate) fn person_from_raw(raw: &str) -> Person {
    match raw.rsplit_once('<') {
        Some((name, rest)) => Person {
            name: Some(name.trim().to_string()).filter(|s| !s.is_empty()),
            email: Some(rest.trim_end_matches('>').trim().to_string()).filter(|s| !s.is_empty()),
        },
        None => Person {
            name: Some(raw.trim().to_string()).filter(|s| !s.is_empty()),
            email: None,
        },
    }
}

/// Puts the head commit in the commit list when the payload omitted it (Bitbucket Data
/// Center sends no commits; GitLab caps the list; annotated tags list none).
pub(crate) fn ensure_head(commits: &mut Vec<Commit>, head: &Option<CommitSha>) {
    if let Some(h) = head {
        if !commits.iter().any(|c| &c.sha == h) {
            commits.push(Commit {
                sha: h.clone(),
                message: None,
                author: None,
                timestamp: None,
                url: None,
            });
        }
    }
}

/// Verifies an HMAC-SHA256 header of the form `sha256=<hex>`, falling back to a legacy
/// `sha1=<hex>` header only when no sha256 header is present.
pub(crate) fn verify_hub_signature(
    pair: &SecretPair,
    d: &Delivery<'_>,
    sha256_headers: &[&'static str],
    bare_hex_headers: &[&'static str],
    sha1_header: Option<&'static str>,
) -> Result<(), AuthError> {
    use signature::{decode_hex, parse_prefixed, verify_any, Algorithm};
    for name in bare_hex_headers {
        if let Some(v) = d.header(name).filter(|v| !v.is_empty()) {
            let digest = decode_hex(v).ok_or(AuthError::Mismatch(Credential::Signature))?;
            return check(verify_any(pair, Algorithm::Sha256, d.body, &digest));
        }
    }
    for name in sha256_headers {
        if let Some(v) = d.header(name).filter(|v| !v.is_empty()) {
            return match parse_prefixed(v) {
                Some((algo @ Algorithm::Sha256, digest)) => {
                    check(verify_any(pair, algo, d.body, &digest))
                }
                Some((algo @ Algorithm::Sha1, digest)) if sha1_header == Some(*name) => {
                    check(verify_any(pair, algo, d.body, &digest))
                }
                _ => Err(AuthError::Mismatch(Credential::Signature)),
            };
        }
    }
    if let Some(name) = sha1_header {
        if let Some(v) = d.header(name).filter(|v| !v.is_empty()) {
            return match parse_prefixed(v) {
                Some((algo @ Algorithm::Sha1, digest)) => {
                    check(verify_any(pair, algo, d.body, &digest))
                }
                Some((algo @ Algorithm::Sha256, digest)) => {
                    check(verify_any(pair, algo, d.body, &digest))
                }
                _ => Err(AuthError::Mismatch(Credential::Signature)),
            };
        }
    }
    Err(AuthError::Missing(Credential::Signature))
}

fn check(ok: bool) -> Result<(), AuthError> {
    if ok {
        Ok(())
    } else {
        Err(AuthError::Mismatch(Credential::Signature))
    }
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn host_times_come_out_as_rfc3339_in_utc() {
        for (given, want) in [
            ("2017-12-10 17:08:07 UTC", Some("2017-12-10T17:08:07Z")),
            ("2017-12-10 18:08:07 +0100", Some("2017-12-10T17:08:07Z")),
            ("2017-12-10T18:08:07+01:00", Some("2017-12-10T17:08:07Z")),
            (
                "2015-06-09T03:34:50.000000+00:00",
                Some("2015-06-09T03:34:50Z"),
            ),
            (
                "2017-12-10 17:08:07.250 UTC",
                Some("2017-12-10T17:08:07.250Z"),
            ),
            ("2017-12-10T17:08:07", Some("2017-12-10T17:08:07Z")),
            ("yesterday", None),
            ("  ", None),
        ] {
            assert_eq!(timestamp(Some(given)).as_deref(), want, "{given}");
        }
    }
}
