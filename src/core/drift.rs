//! Drift: Helm says so (`DriftDetected`, `DriftCorrected`); a Kustomization shows it only by
//! applying a change set at the revision it had already applied (reference §5 "Drift").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::incident::Facts;
use super::message::{message_id, Message, MessageType};
use crate::flux::classify::is_change_set;

/// An open Helm drift episode: `DriftDetected` repeats every reconcile in warn mode; one
/// message per episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftEpisode {
    pub since: DateTime<Utc>,
    pub message_id: String,
}

pub fn message(f: &Facts<'_>) -> Message {
    let e = f.event;
    Message {
        id: message_id(MessageType::DriftDetected, &e.object, &e.fingerprint),
        kind: MessageType::DriftDetected,
        object: e.object.clone(),
        time: e.timestamp,
        revision: f.revision.clone(),
        sha: f.sha.as_ref().map(ToString::to_string),
        reason: Some(e.reason.clone()),
        message: Some(e.message.clone()),
        incident_id: None,
        repository: f.repository.as_ref().map(ToString::to_string),
        custom: None,
        opened_at: None,
        cause: None,
        group_id: None,
    }
}

/// A Kustomization corrected drift: a change set at the revision it had already applied in
/// an earlier reconciliation. The caller says the event is of the same run of reports as
/// the object's last (it reported no other revision since); `run_applied_at` is the first
/// success of that run. A change set sharing that success's timestamp belongs to the apply
/// itself (Flux events carry no reconciliation id; whichever of the two arrived first).
pub fn is_kustomization_drift(f: &Facts<'_>, run_applied_at: Option<DateTime<Utc>>) -> bool {
    f.event.object.kind == "Kustomization"
        && f.event.reason == "Progressing"
        && is_change_set(&f.event.message)
        && f.revision.is_some()
        && run_applied_at.is_some_and(|at| at < f.event.timestamp)
}
