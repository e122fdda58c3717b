//! Targets: what one object did with one commit, and the pure rule that merges what we learn
//! into what is stored. Stored in the commit's partition (row `target|…`) so the evidence for
//! a commit is one partition read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::CommitSha;
use crate::flux::ObjectRef;

/// Contract §3 `targets[].state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Expected (the object follows the commit's branch) but not seen yet.
    Pending,
    /// Pending for longer than `FLUXTRAIL_STALL_AFTER` (the sweep decides).
    Stalled,
    /// Seen, not yet applied.
    Progressing,
    Applied,
    Failed,
    /// Never reached the object: a later commit of the branch was applied first.
    Superseded,
}

/// One thing learned about (commit, object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetUpdate {
    pub sha: CommitSha,
    pub object: ObjectRef,
    pub state: TargetState,
    pub revision: Option<String>,
    /// When it happened: the Flux event's time, or the push's receipt for `pending`.
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub superseded_by: Option<CommitSha>,
}

/// The stored row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetRecord {
    pub cluster: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub state: TargetState,
    pub revision: Option<String>,
    pub first_seen_at: DateTime<Utc>,
    pub applied_at: Option<DateTime<Utc>>,
    pub last_event_at: DateTime<Utc>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub superseded_by: Option<String>,
}

impl TargetRecord {
    /// Row key within the commit's partition.
    pub fn row_key(object: &ObjectRef) -> String {
        format!(
            "target|{}|{}|{}|{}",
            object.cluster, object.kind, object.namespace, object.name
        )
    }

    /// Merges an update re-issued for a duplicate event (its first attempt may have stopped
    /// before writing its targets): it fills in a missing row, or one only older events
    /// wrote, and otherwise leaves the row alone — the first attempt, or something newer,
    /// already wrote it.
    pub fn merge_replayed(existing: Option<TargetRecord>, u: &TargetUpdate) -> TargetRecord {
        match existing {
            Some(row) if u.at <= row.last_event_at => row,
            other => Self::merge(other, u),
        }
    }

    /// Merges an update into the stored row (`None`: no row yet). Idempotent: merging the
    /// same update twice gives the same row.
    ///
    /// - `pending` only creates a row; it never overrides anything known.
    /// - `stalled` only replaces `pending`.
    /// - `superseded` never replaces `applied` (that commit did reach the object).
    /// - observed states (`progressing`, `applied`, `failed`) replace the row unless the row
    ///   already reflects a later event.
    pub fn merge(existing: Option<TargetRecord>, u: &TargetUpdate) -> TargetRecord {
        let fresh = || TargetRecord {
            cluster: u.object.cluster.clone(),
            kind: u.object.kind.clone(),
            namespace: u.object.namespace.clone(),
            name: u.object.name.clone(),
            state: u.state,
            revision: u.revision.clone(),
            first_seen_at: u.at,
            applied_at: (u.state == TargetState::Applied).then_some(u.at),
            last_event_at: u.at,
            reason: u.reason.clone(),
            message: u.message.clone(),
            superseded_by: u.superseded_by.as_ref().map(ToString::to_string),
        };
        let Some(mut row) = existing else {
            return fresh();
        };
        match u.state {
            TargetState::Pending => return row,
            TargetState::Stalled => {
                if row.state == TargetState::Pending {
                    row.state = TargetState::Stalled;
                }
                return row;
            }
            TargetState::Superseded => {
                if row.state != TargetState::Applied && row.state != TargetState::Superseded {
                    row.state = TargetState::Superseded;
                    row.superseded_by = u.superseded_by.as_ref().map(ToString::to_string);
                }
                return row;
            }
            TargetState::Progressing | TargetState::Applied | TargetState::Failed => {}
        }
        let from_push = matches!(
            row.state,
            TargetState::Pending | TargetState::Stalled | TargetState::Superseded
        );
        if u.at < row.last_event_at && !from_push {
            // An older event than the one the row shows: keep the newer picture.
            row.first_seen_at = row.first_seen_at.min(u.at);
            return row;
        }
        // A commit once applied stays applied when the same revision merely progresses again
        // (drift correction re-applies at the same revision).
        if !(row.state == TargetState::Applied && u.state == TargetState::Progressing) {
            row.state = u.state;
            row.reason = u.reason.clone();
            row.message = u.message.clone();
        }
        if u.state == TargetState::Applied {
            row.applied_at = Some(row.applied_at.map_or(u.at, |a| a.min(u.at)));
            row.superseded_by = None;
        }
        if u.revision.is_some() {
            row.revision = u.revision.clone();
        }
        row.first_seen_at = row.first_seen_at.min(u.at);
        row.last_event_at = row.last_event_at.max(u.at);
        row
    }
}
