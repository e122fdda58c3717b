//! The correlation core: pure functions from (an object's state, one event, what the ledger
//! knows of commits and branch history, `now`) to (the new state, target updates, messages).
//!
//! Invariant: no I/O here — no tokio, hyper, clock, storage or SDK. Everything is an input,
//! so the behaviour is a table of cases (see the tests).

pub mod drift;
pub mod history;
pub mod incident;
pub mod message;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod target;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::CommitSha;
use crate::flux::{Class, FluxEvent, ObjectRef};
use drift::DriftEpisode;
pub use history::BranchGraph;
pub use incident::IncidentState;
use incident::{Facts, Incident};
pub use message::{Message, MessageType};
pub use target::{TargetRecord, TargetState, TargetUpdate};

/// How many recent events' target updates the state keeps, so a retried event whose first
/// attempt stopped after the state write can still finish its target rows.
const RECENT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStatus {
    Unknown,
    Progressing,
    Ready,
    Failed,
    Waiting,
}

/// The (repository, ref) an object follows: learned from its own events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Follow {
    pub repository: String,
    pub git_ref: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub revision: Option<String>,
    pub sha: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recent {
    pub fingerprint: String,
    pub targets: Vec<TargetUpdate>,
}

/// Everything fluxtrail keeps about one Flux object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectState {
    pub object: ObjectRef,
    pub status: ObjectStatus,
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_reason: Option<String>,
    pub last_message: Option<String>,
    pub last_revision: Option<String>,
    pub applied: Option<Applied>,
    pub follows: Option<Follow>,
    pub incident: Option<Incident>,
    pub drift: Option<DriftEpisode>,
    /// Fingerprints of the events processed at `last_event_at` (duplicate detection).
    pub seen: Vec<String>,
    pub recent: Vec<Recent>,
    pub events: u64,
    /// What a push told us about the commit of the latest event: the next event at the same
    /// revision (every reconcile interval) needs no lookup.
    #[serde(default)]
    pub commit: Option<CommitInfo>,
    /// The target row of the latest event's commit as this object last wrote it. Once an
    /// object has reported a commit, only its own events change that row (pushes only add
    /// rows that do not exist, the sweep only touches `pending` ones), so the next update of
    /// the row needs no read.
    #[serde(default)]
    pub current_target: Option<CurrentTarget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentTarget {
    pub sha: CommitSha,
    pub row: TargetRecord,
}

impl ObjectState {
    pub fn new(object: ObjectRef) -> Self {
        ObjectState {
            object,
            status: ObjectStatus::Unknown,
            last_event_at: None,
            last_reason: None,
            last_message: None,
            last_revision: None,
            applied: None,
            follows: None,
            incident: None,
            drift: None,
            seen: vec![],
            recent: vec![],
            events: 0,
            commit: None,
            current_target: None,
        }
    }

    fn applied_sha(&self) -> Option<CommitSha> {
        self.applied
            .as_ref()?
            .sha
            .as_deref()
            .and_then(|s| CommitSha::parse(s).ok())
    }
}

/// What a push told us about the event's source commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub sha: CommitSha,
    pub repository: String,
    pub refs: Vec<String>,
}

/// What the ledger knows around one event.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    /// The event's source commit as a push recorded it, if any push did.
    pub commit: Option<CommitInfo>,
    /// History of the branch the object follows after this event (see [`follow_of`]); needed
    /// only for `Applied` events, which may supersede.
    pub graph: Option<&'a BranchGraph>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The event changed the object.
    Applied,
    /// The same event again: nothing changed (its target updates are re-issued).
    Duplicate,
    /// Older than what the object already shows: history only.
    Stale,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub state: ObjectState,
    pub targets: Vec<TargetUpdate>,
    pub messages: Vec<Message>,
    /// Incidents opened, re-announced or closed by this event (to store).
    pub incidents: Vec<Incident>,
    pub disposition: Disposition,
}

/// The branch an event shows the object follows: its source commit was pushed to a ref the
/// revision's pointer names (or, without a pointer, to exactly one branch).
pub fn follow_of(event: &FluxEvent, commit: Option<&CommitInfo>) -> Option<Follow> {
    let commit = commit?;
    let revision = event.source_revision()?;
    let candidates = revision.candidate_refs();
    let git_ref = if candidates.is_empty() {
        let branches: Vec<&String> = commit
            .refs
            .iter()
            .filter(|r| r.starts_with("refs/heads/"))
            .collect();
        match branches.as_slice() {
            [only] => (*only).clone(),
            _ => return None,
        }
    } else {
        candidates.into_iter().find(|c| commit.refs.contains(c))?
    };
    Some(Follow {
        repository: commit.repository.clone(),
        git_ref,
    })
}

/// The commit an event concerns: a certain Git revision, or a sha256 candidate that a push
/// confirmed.
pub fn event_sha(event: &FluxEvent, commit: Option<&CommitInfo>) -> Option<CommitSha> {
    let revision = event.source_revision()?;
    let sha = revision.commit()?;
    (revision.is_certainly_git() || commit.is_some_and(|c| c.sha == sha)).then_some(sha)
}

/// Applies one classified event to an object's state.
pub fn apply_event(
    state: Option<ObjectState>,
    event: &FluxEvent,
    class: Class,
    ctx: &Context<'_>,
    now: DateTime<Utc>,
) -> Outcome {
    let mut st = state.unwrap_or_else(|| ObjectState::new(event.object.clone()));
    let _ = now; // time enters through the event; `now` is for rules that age (the sweep)

    // Duplicates and stale events first.
    if let Some(last) = st.last_event_at {
        if event.timestamp < last {
            return Outcome {
                state: st,
                targets: vec![],
                messages: vec![],
                incidents: vec![],
                disposition: Disposition::Stale,
            };
        }
        if event.timestamp == last && st.seen.contains(&event.fingerprint) {
            let targets = st
                .recent
                .iter()
                .find(|r| r.fingerprint == event.fingerprint)
                .map(|r| r.targets.clone())
                .unwrap_or_default();
            return Outcome {
                state: st,
                targets,
                messages: vec![],
                incidents: vec![],
                disposition: Disposition::Duplicate,
            };
        }
        if event.timestamp > last {
            st.seen.clear();
        }
    }
    st.seen.push(event.fingerprint.clone());
    st.last_event_at = Some(event.timestamp);
    st.last_reason = Some(event.reason.clone());
    st.last_message = Some(event.message.clone());
    st.events += 1;

    let sha = event_sha(event, ctx.commit.as_ref());
    let revision = event
        .revision()
        .map(str::to_string)
        .or_else(|| event.source_revision().map(|r| r.to_string()));
    if revision.is_some() {
        st.last_revision = revision.clone();
    }
    let follow = follow_of(event, ctx.commit.as_ref());
    let repository = ctx
        .commit
        .as_ref()
        .map(|c| c.repository.clone())
        .or_else(|| st.follows.as_ref().map(|f| f.repository.clone()));
    let facts = Facts {
        event,
        revision: revision.clone(),
        sha: sha.as_ref().map(ToString::to_string),
        repository,
    };
    let mut targets = Vec::new();
    let mut messages = Vec::new();
    let mut incidents = Vec::new();
    let target = |state: TargetState| TargetUpdate {
        sha: sha.clone().expect("checked by caller"),
        object: event.object.clone(),
        state,
        revision: revision.clone(),
        at: event.timestamp,
        reason: Some(event.reason.clone()),
        message: Some(event.message.clone()),
        superseded_by: None,
    };

    // Source objects produce artifacts; they apply nothing: history and status only.
    if event.object.is_source() {
        st.status = match class {
            c if c.is_failure() => ObjectStatus::Failed,
            _ => ObjectStatus::Ready,
        };
        return finish(st, targets, messages, incidents, event);
    }

    let applied_revision = st.applied.as_ref().and_then(|a| a.revision.clone());
    match class {
        Class::Applied => {
            st.status = ObjectStatus::Ready;
            if let Some(sha) = &sha {
                targets.push(target(TargetState::Applied));
                if let (Some(_), Some(graph)) = (&follow, ctx.graph) {
                    let previous = st.applied_sha();
                    for skipped in graph.superseded(sha, previous.as_ref()) {
                        targets.push(TargetUpdate {
                            sha: skipped,
                            state: TargetState::Superseded,
                            superseded_by: Some(sha.clone()),
                            reason: None,
                            message: None,
                            ..target(TargetState::Superseded)
                        });
                    }
                }
            }
            let same_as_before = st.applied.as_ref().is_some_and(|a| a.revision == revision);
            if !same_as_before {
                st.applied = Some(applied_record(&facts, event.timestamp));
            }
            if let Some(inc) = st.incident.take() {
                incidents.push(incident::on_success(inc, &facts, &mut messages));
            }
        }
        c if c.is_failure() => {
            st.status = ObjectStatus::Failed;
            if sha.is_some() {
                targets.push(target(TargetState::Failed));
            }
            let inc = incident::on_failure(st.incident.take(), &facts, &mut messages);
            incidents.push(inc.clone());
            st.incident = Some(inc);
        }
        Class::Progressing | Class::Waiting => {
            st.status = if class == Class::Waiting {
                ObjectStatus::Waiting
            } else {
                ObjectStatus::Progressing
            };
            if drift::is_kustomization_drift(&facts, applied_revision.as_deref()) {
                messages.push(drift::message(&facts));
                // The object is still at its applied revision.
                st.status = ObjectStatus::Ready;
            } else if sha.is_some() && revision != applied_revision {
                targets.push(target(TargetState::Progressing));
            }
        }
        Class::DriftDetected if st.drift.is_none() => {
            let m = drift::message(&facts);
            st.drift = Some(DriftEpisode {
                since: event.timestamp,
                message_id: m.id.clone(),
            });
            messages.push(m);
        }
        // The guard closes an open episode; corrected without a detection we saw, the drift
        // still happened and is announced.
        Class::DriftCorrected if st.drift.take().is_none() => messages.push(drift::message(&facts)),
        _ => {}
    }
    if let Some(f) = follow {
        st.follows = Some(f);
    }
    finish(st, targets, messages, incidents, event)
}

fn applied_record(f: &Facts<'_>, at: DateTime<Utc>) -> Applied {
    Applied {
        revision: f.revision.clone(),
        sha: f.sha.clone(),
        at,
    }
}

fn finish(
    mut st: ObjectState,
    targets: Vec<TargetUpdate>,
    messages: Vec<Message>,
    incidents: Vec<Incident>,
    event: &FluxEvent,
) -> Outcome {
    st.recent.push(Recent {
        fingerprint: event.fingerprint.clone(),
        targets: targets.clone(),
    });
    if st.recent.len() > RECENT {
        st.recent.remove(0);
    }
    Outcome {
        state: st,
        targets,
        messages,
        incidents,
        disposition: Disposition::Applied,
    }
}

/// A push to a branch the object follows (or, `newly_following`, a push that revealed the
/// branch of a commit the object had already reported): the pushed commits become `pending`
/// on it, or `superseded` when the object already applied a later commit.
pub fn on_push(
    state: &ObjectState,
    graph: &BranchGraph,
    pushed: &[CommitSha],
    newly_following: bool,
    received_at: DateTime<Utc>,
) -> Vec<TargetUpdate> {
    let applied = state.applied_sha();
    let mut out = Vec::new();
    let base = |sha: &CommitSha, s: TargetState, by: Option<CommitSha>| TargetUpdate {
        sha: sha.clone(),
        object: state.object.clone(),
        state: s,
        revision: None,
        at: received_at,
        reason: None,
        message: None,
        superseded_by: by,
    };
    for c in pushed {
        if Some(c) == applied.as_ref() {
            continue;
        }
        match &applied {
            Some(a) if graph.is_ancestor(c, a) => {
                out.push(base(c, TargetState::Superseded, Some(a.clone())))
            }
            _ => out.push(base(c, TargetState::Pending, None)),
        }
    }
    if newly_following {
        if let Some(a) = &applied {
            for c in graph.superseded(a, None) {
                if !pushed.contains(&c) {
                    out.push(base(&c, TargetState::Superseded, Some(a.clone())));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
