//! Incidents: one open incident per object, opened by a failure, re-announced only when the
//! failing revision changes, closed by the first success.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::message::{message_id, Message, MessageType};
use crate::domain::{CommitSha, RepoKey};
use crate::flux::{FluxEvent, ObjectRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    Open,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    pub id: String,
    pub object: ObjectRef,
    pub state: IncidentState,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The revision failing now (the last announced one).
    pub revision: Option<String>,
    pub sha: Option<String>,
    pub reason: String,
    pub message: String,
    /// Failure events seen while open (Flux repeats itself every few minutes).
    pub failures: u64,
    pub last_failure_at: DateTime<Utc>,
    /// `apply.failed` messages sent for this incident (one per failing revision).
    pub announcements: u64,
    /// Why it closed without a success: `retired` (an operator retired the object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    /// What the incident's group is keyed by (contract §9, `cause_key`): decided when it
    /// opened and kept, so a re-announcement at another revision and the recovery stay in
    /// the group the first failure opened. `None` on incidents opened before groups existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// The cause a failure is grouped by: its commit when the revision names one (on any object,
/// any cluster), else the revision string, else (a failure that names no revision at all) the
/// object itself — unrelated failures without a revision must not share one ticket.
pub fn cause_key(sha: Option<&str>, revision: Option<&str>, object: &ObjectRef) -> String {
    match (sha, revision) {
        (Some(sha), _) => format!("sha:{sha}"),
        (None, Some(rev)) if !rev.is_empty() => format!("revision:{rev}"),
        _ => format!("object:{}", object.subject()),
    }
}

fn incident_id(object: &ObjectRef, opening_event: &str) -> String {
    let h = Sha256::digest(format!("{}\n{opening_event}", object.subject()).as_bytes());
    format!("inc-{}", hex::encode(&h[..10]))
}

/// Shared facts about the event for the messages it causes.
pub struct Facts<'a> {
    pub event: &'a FluxEvent,
    pub revision: Option<String>,
    pub sha: Option<CommitSha>,
    pub repository: Option<RepoKey>,
}

impl Facts<'_> {
    fn message(&self, kind: MessageType, id: String, incident: &Incident) -> Message {
        Message {
            id,
            kind,
            object: incident.object.clone(),
            time: self.event.timestamp,
            revision: self.revision.clone(),
            sha: self.sha.as_ref().map(ToString::to_string),
            reason: Some(self.event.reason.clone()),
            message: Some(self.event.message.clone()),
            incident_id: Some(incident.id.clone()),
            repository: self.repository.as_ref().map(ToString::to_string),
            custom: None,
            opened_at: Some(incident.opened_at),
            cause: incident.cause.clone(),
            group_id: None,
        }
    }
}

/// A failure: opens an incident, or re-announces it when the failing revision changed.
pub fn on_failure(open: Option<Incident>, f: &Facts<'_>, out: &mut Vec<Message>) -> Incident {
    let e = f.event;
    match open {
        None => {
            let inc = Incident {
                id: incident_id(&e.object, &e.fingerprint),
                object: e.object.clone(),
                state: IncidentState::Open,
                opened_at: e.timestamp,
                resolved_at: None,
                revision: f.revision.clone(),
                sha: f.sha.as_ref().map(ToString::to_string),
                reason: e.reason.clone(),
                message: e.message.clone(),
                failures: 1,
                last_failure_at: e.timestamp,
                announcements: 1,
                closed_by: None,
                cause: Some(cause_key(
                    f.sha.as_ref().map(CommitSha::as_str),
                    f.revision.as_deref(),
                    &e.object,
                )),
            };
            out.push(f.message(
                MessageType::ApplyFailed,
                message_id(
                    MessageType::ApplyFailed,
                    &e.object,
                    &format!("{}#0", inc.id),
                ),
                &inc,
            ));
            inc
        }
        Some(mut inc) => {
            inc.failures += 1;
            inc.last_failure_at = inc.last_failure_at.max(e.timestamp);
            inc.reason = e.reason.clone();
            inc.message = e.message.clone();
            if f.revision.is_some() && f.revision != inc.revision {
                inc.revision = f.revision.clone();
                inc.sha = f.sha.as_ref().map(ToString::to_string);
                let seq = inc.announcements;
                inc.announcements += 1;
                out.push(f.message(
                    MessageType::ApplyFailed,
                    message_id(
                        MessageType::ApplyFailed,
                        &e.object,
                        &format!("{}#{seq}", inc.id),
                    ),
                    &inc,
                ));
            }
            inc
        }
    }
}

/// A success with an incident open: closes it and announces the recovery.
pub fn on_success(mut inc: Incident, f: &Facts<'_>, out: &mut Vec<Message>) -> Incident {
    inc.state = IncidentState::Resolved;
    inc.resolved_at = Some(f.event.timestamp);
    out.push(f.message(
        MessageType::ApplyRecovered,
        message_id(MessageType::ApplyRecovered, &inc.object, &inc.id),
        &inc,
    ));
    inc
}
