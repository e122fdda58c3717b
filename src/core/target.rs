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
    /// Removed from the branch by a forced push before it reached the object: it never can.
    Discarded,
}

impl TargetState {
    /// States the object itself reported (its row's times are Flux times, of the object's
    /// clock). The others (`pending`, `stalled`, `superseded`, `discarded`) say what the
    /// object never reported: their times are a push's receipt or another commit's apply,
    /// never compared with this commit's own events.
    pub fn observed(self) -> bool {
        matches!(
            self,
            TargetState::Progressing | TargetState::Applied | TargetState::Failed
        )
    }
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

    /// Merges what one event says of its own commit: `late` for an event older than the
    /// object's last one (a stale event, or a duplicate re-issuing its updates), which fills
    /// in but never replaces what an event of the same or a later second wrote.
    pub fn merge_event(
        existing: Option<TargetRecord>,
        u: &TargetUpdate,
        late: bool,
    ) -> TargetRecord {
        let row = if late {
            Self::merge_replayed(existing, u)
        } else {
            Self::merge_opt(existing, u)
        };
        row.expect("events report observed states and supersessions, which leave a row")
    }

    /// Merges an update re-issued for a duplicate event (its first attempt may have stopped
    /// before writing its targets): it fills in a missing row, or one only older events
    /// wrote, and otherwise leaves the row alone — the first attempt, or something newer,
    /// already wrote it.
    pub fn merge_replayed(
        existing: Option<TargetRecord>,
        u: &TargetUpdate,
    ) -> Option<TargetRecord> {
        match existing {
            Some(row) if row.state.observed() && u.at <= row.last_event_at => Some(row),
            other => Self::merge_opt(other, u),
        }
    }

    /// Merges an update into the stored row (`None`: no row yet); `None` when the update
    /// creates nothing (a `discarded` or `stalled` for a row that does not exist).
    /// Idempotent: merging the same update twice gives the same row.
    ///
    /// - `pending` only creates a row; it never overrides anything known.
    /// - `stalled` and `discarded` only replace `pending`/`stalled`.
    /// - `superseded` replaces what the object never finished (`pending`, `stalled`,
    ///   `progressing`); a `failed` row stays failed and names its successor; an `applied`
    ///   one is left alone (that commit did reach the object).
    /// - observed states (`progressing`, `applied`, `failed`) replace an unobserved row
    ///   whatever its time (its time is another clock's), and an observed row unless it
    ///   reflects a later event of the object (equal times: the later arrival wins). A
    ///   `progressing` never undoes `applied` nor `superseded` (drift correction, or a late
    ///   start of a reconcile the object has since moved past).
    pub fn merge_opt(existing: Option<TargetRecord>, u: &TargetUpdate) -> Option<TargetRecord> {
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
            return match u.state {
                TargetState::Stalled | TargetState::Discarded => None,
                _ => Some(fresh()),
            };
        };
        let by = || u.superseded_by.as_ref().map(ToString::to_string);
        match u.state {
            TargetState::Pending => return Some(row),
            TargetState::Stalled | TargetState::Discarded => {
                if matches!(row.state, TargetState::Pending | TargetState::Stalled) {
                    row.state = u.state;
                }
                return Some(row);
            }
            TargetState::Superseded => {
                match row.state {
                    TargetState::Applied | TargetState::Superseded | TargetState::Discarded => {}
                    TargetState::Failed => {
                        if row.superseded_by.is_none() {
                            row.superseded_by = by();
                        }
                    }
                    TargetState::Pending | TargetState::Stalled | TargetState::Progressing => {
                        row.state = TargetState::Superseded;
                        row.superseded_by = by();
                    }
                }
                return Some(row);
            }
            TargetState::Progressing | TargetState::Applied | TargetState::Failed => {}
        }
        if !row.state.observed() {
            // The first thing the object itself says of this commit: its times replace the
            // push's (another clock).
            if u.state == TargetState::Progressing && row.state == TargetState::Superseded {
                return Some(row);
            }
            let kept_by = (u.state == TargetState::Failed)
                .then(|| row.superseded_by.clone())
                .flatten();
            let mut new = fresh();
            new.superseded_by = kept_by;
            return Some(new);
        }
        if u.at < row.last_event_at {
            // An older event than the one the row shows: keep the newer picture.
            row.first_seen_at = row.first_seen_at.min(u.at);
            if u.state == TargetState::Applied {
                row.applied_at = Some(row.applied_at.map_or(u.at, |a| a.min(u.at)));
            }
            return Some(row);
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
        Some(row)
    }

    /// [`merge_opt`](Self::merge_opt) for updates that always leave a row (everything but a
    /// `stalled` or `discarded` for an absent row, which yields the existing `None` as no
    /// row: callers of this form never pass those).
    pub fn merge(existing: Option<TargetRecord>, u: &TargetUpdate) -> TargetRecord {
        Self::merge_opt(existing, u).expect("an update that creates a row")
    }
}
