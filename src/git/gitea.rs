//! Gitea and Forgejo: GitHub-shaped payloads, bare-hex `X-Gitea-Signature` /
//! `X-Forgejo-Signature` (plus `X-Hub-Signature-256`), `X-Gitea-Event` / `X-Forgejo-Event`.
//!
//! Gitea's delivery UUID is new on every attempt, so redeliveries are recognised by the body
//! hash. Its "Test Delivery" sends a synthetic push whose `before` equals its `after` (a real
//! push always moves the ref), built from the last commit or from a fake all-zero commit; such
//! deliveries are answered `ignored`.

use super::github::{PullRequestPayload, PushPayload, User};
use super::{verify_hub_signature, AuthError, Delivery, GitEvent, ParseError, Parsed};
use crate::config::SecretPair;

pub fn verify(pair: &SecretPair, d: &Delivery<'_>) -> Result<(), AuthError> {
    verify_hub_signature(
        pair,
        d,
        &["x-hub-signature-256"],
        &["x-forgejo-signature", "x-gitea-signature"],
        Some("x-hub-signature"),
    )
}

pub fn parse(d: &Delivery<'_>) -> Result<Parsed, ParseError> {
    // Forgejo sends both header families; Gitea only its own. `X-…-Event-Type` is the finer
    // name for review events on the versions that send it.
    let event = d
        .header("x-forgejo-event-type")
        .or_else(|| d.header("x-gitea-event-type"))
        .filter(|v| !v.is_empty())
        .or_else(|| d.header("x-forgejo-event"))
        .or_else(|| d.header("x-gitea-event"))
        .filter(|v| !v.is_empty())
        .ok_or(ParseError::MissingHeader("X-Gitea-Event"))?;
    let event = match event {
        "push" => push_event(d.parse_json()?)?,
        "pull_request" => {
            let p: PullRequestPayload = d.parse_json()?;
            match p.merged()? {
                Some(pr) => GitEvent::pull_request(pr),
                None => {
                    GitEvent::ignored(format!("pull_request action {:?} is not a merge", p.action))
                }
            }
        }
        "pull_request_approved" | "pull_request_review_approved" => {
            let p: PullRequestPayload = d.parse_json()?;
            let sender = p.sender.as_ref().and_then(User::handle);
            GitEvent::pull_request(p.with_review(sender, true)?)
        }
        other => GitEvent::ignored(format!("event type {other:?} is not handled")),
    };
    Ok(Parsed {
        delivery_id: d.body_hash_id(),
        event,
    })
}

fn push_event(p: PushPayload) -> Result<GitEvent, ParseError> {
    if p.before.eq_ignore_ascii_case(&p.after) {
        return Ok(GitEvent::ignored("test delivery (before equals after)"));
    }
    Ok(GitEvent::Push {
        pushes: vec![p.to_push()?],
    })
}
