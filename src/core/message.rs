//! Outgoing messages: CloudEvents 1.0 with deterministic ids (contract §4), so a re-sent
//! occurrence is recognisably the same one (the outbox's insert-if-absent, the sink's and
//! Service Bus's duplicate detection).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::flux::ObjectRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageType {
    #[serde(rename = "io.fluxtrail.apply.failed")]
    ApplyFailed,
    #[serde(rename = "io.fluxtrail.apply.recovered")]
    ApplyRecovered,
    #[serde(rename = "io.fluxtrail.drift.detected")]
    DriftDetected,
    #[serde(rename = "io.fluxtrail.rollout.stalled")]
    RolloutStalled,
    /// An object that stalled on consecutive pushes without a report in between: said once,
    /// instead of one `rollout.stalled` per further push (until it reports again).
    #[serde(rename = "io.fluxtrail.object.silent")]
    ObjectSilent,
    /// A commit applied on a cluster under the approval policy without a sufficient approval
    /// once the grace passed (contract §10): once per (commit, cluster).
    #[serde(rename = "io.fluxtrail.change.unapproved")]
    ChangeUnapproved,
    /// The first incident of a cause opened (contract §9).
    #[serde(rename = "io.fluxtrail.group.opened")]
    GroupOpened,
    /// The last open incident of a cause resolved (contract §9).
    #[serde(rename = "io.fluxtrail.group.resolved")]
    GroupResolved,
    /// Internal, never published: an incident closed without a recovery (the object was
    /// retired). It rides the object's outbox so its group learns of it exactly as of a
    /// recovery, in the object's order.
    #[serde(rename = "io.fluxtrail.incident.closed")]
    IncidentClosed,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::ApplyFailed => "io.fluxtrail.apply.failed",
            MessageType::ApplyRecovered => "io.fluxtrail.apply.recovered",
            MessageType::DriftDetected => "io.fluxtrail.drift.detected",
            MessageType::RolloutStalled => "io.fluxtrail.rollout.stalled",
            MessageType::ObjectSilent => "io.fluxtrail.object.silent",
            MessageType::ChangeUnapproved => "io.fluxtrail.change.unapproved",
            MessageType::GroupOpened => "io.fluxtrail.group.opened",
            MessageType::GroupResolved => "io.fluxtrail.group.resolved",
            MessageType::IncidentClosed => "io.fluxtrail.incident.closed",
        }
    }

    /// For subscription filters (`severity` application property).
    pub fn severity(self) -> &'static str {
        match self {
            MessageType::ApplyFailed | MessageType::ChangeUnapproved | MessageType::GroupOpened => {
                "error"
            }
            MessageType::ApplyRecovered
            | MessageType::GroupResolved
            | MessageType::IncidentClosed => "info",
            MessageType::DriftDetected
            | MessageType::RolloutStalled
            | MessageType::ObjectSilent => "warning",
        }
    }

    /// Whether the message opens or closes an incident: its group is settled before it is
    /// published (`ledger::groups`).
    pub fn is_incident(self) -> bool {
        matches!(
            self,
            MessageType::ApplyFailed | MessageType::ApplyRecovered | MessageType::IncidentClosed
        )
    }

    /// Internal messages are settled like the others but never handed to a publisher.
    pub fn is_internal(self) -> bool {
        self == MessageType::IncidentClosed
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
    pub object: ObjectRef,
    pub time: DateTime<Utc>,
    pub revision: Option<String>,
    pub sha: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub incident_id: Option<String>,
    pub repository: Option<String>,
    /// A message about something other than one object (`change.unapproved`): its own
    /// subject and data; `object` then names only the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Custom>,
    /// When the message's incident opened (its object's clock): what the incident index and
    /// the group record. Not part of the CloudEvent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    /// The incident's cause (`incident::cause_key`): which group it belongs to. Internal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// The incident's group (contract §9), settled by the dispatcher before the first
    /// attempt to publish the message and kept with it, so every attempt is the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
}

/// The subject and data of a message that is not about one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Custom {
    pub subject: String,
    pub data: serde_json::Value,
}

/// A short, stable id from the parts that make an occurrence unique.
pub fn message_id(kind: MessageType, object: &ObjectRef, discriminator: &str) -> String {
    let h = Sha256::digest(
        format!("{}\n{}\n{discriminator}", kind.as_str(), object.subject()).as_bytes(),
    );
    hex::encode(&h[..16])
}

impl Message {
    /// The CloudEvents 1.0 structured JSON document of contract §4.
    pub fn to_cloudevent(&self) -> serde_json::Value {
        if let Some(c) = &self.custom {
            return json!({
                "specversion": "1.0",
                "id": self.id,
                "source": "fluxtrail",
                "type": self.kind.as_str(),
                "subject": c.subject,
                "time": self.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "datacontenttype": "application/json",
                "data": c.data,
            });
        }
        let mut event = json!({
            "specversion": "1.0",
            "id": self.id,
            "source": "fluxtrail",
            "type": self.kind.as_str(),
            "subject": self.object.subject(),
            "time": self.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "datacontenttype": "application/json",
            "data": {
                "cluster": self.object.cluster,
                "kind": self.object.kind,
                "namespace": self.object.namespace,
                "name": self.object.name,
                "revision": self.revision,
                "sha": self.sha,
                "reason": self.reason,
                "message": self.message,
                "incidentId": self.incident_id,
                "repository": self.repository,
                "severity": self.kind.severity(),
            }
        });
        if self.kind.is_incident() {
            event["data"]["groupId"] = json!(self.group_id);
        }
        event
    }
}

#[cfg(test)]
impl Message {
    /// A message for tests: `apply.failed` of Kustomization `c/n/{object}`, id `id`.
    pub fn sample(object: &str, id: &str) -> Message {
        Message {
            id: id.into(),
            kind: MessageType::ApplyFailed,
            object: ObjectRef {
                cluster: "c".into(),
                kind: "Kustomization".into(),
                namespace: "n".into(),
                name: object.into(),
            },
            time: chrono::Utc::now(),
            revision: None,
            sha: None,
            reason: None,
            message: None,
            incident_id: None,
            repository: None,
            custom: None,
            opened_at: None,
            cause: None,
            group_id: None,
        }
    }
}
