//! Targets: what one object did with one commit, and the pure rule that merges what we learn
//! into what is stored. Stored in the commit's partition (row `target|…`) so the evidence for
//! a commit is one partition read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::CommitSha;
use crate::flux::ObjectRef;

/// Contract §3 `targets[].state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
    /// The contract's name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Stalled => "stalled",
            TargetState::Progressing => "progressing",
            TargetState::Applied => "applied",
            TargetState::Failed => "failed",
            TargetState::Superseded => "superseded",
            TargetState::Discarded => "discarded",
        }
    }

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
    /// The object's latest success and failure at this commit (Flux times): with
    /// `last_event_at` they make the row the same whatever order its events arrive in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_at: Option<DateTime<Utc>>,
    /// The object's first failure at this commit (Flux time): with `applied_at` (the first
    /// success) it dates the change for the audit feed, whatever order the events arrive in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<DateTime<Utc>>,
}

impl TargetRecord {
    /// Row key within the commit's partition.
    pub fn row_key(object: &ObjectRef) -> String {
        format!(
            "target|{}|{}|{}|{}",
            object.cluster, object.kind, object.namespace, object.name
        )
    }

    /// When the object first reported this commit applied or failed (its own clock): the
    /// change's time in the audit feed; `None` while it never did. Only ever moves earlier
    /// (a late older event), so the index row keyed by it moves at most that way.
    pub fn changed_at(&self) -> Option<DateTime<Utc>> {
        let failed = self.failed_at.or(self.last_failed_at);
        match (self.applied_at, failed) {
            (Some(a), Some(f)) => Some(a.min(f)),
            (a, f) => a.or(f),
        }
    }

    /// Merges what one event says of commits: `late` for an event older than the object's
    /// last one (a stale event, or a duplicate re-issuing its updates), which fills in but
    /// never replaces what an event of the same second wrote. `None`: nothing to write.
    pub fn merge_event(
        existing: Option<TargetRecord>,
        u: &TargetUpdate,
        late: bool,
    ) -> Option<TargetRecord> {
        if late {
            Self::merge_replayed(existing, u)
        } else {
            Self::merge_opt(existing, u)
        }
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
            // The same second as the row's latest: the first attempt, or a later arrival,
            // wrote it already — except a success after its own change set (one apply, and
            // `progressing` then `applied` in either order). An older one is folded in (that
            // changes nothing twice).
            Some(row)
                if row.state.observed()
                    && u.at == row.last_event_at
                    && !(u.state == TargetState::Applied
                        && row.state == TargetState::Progressing) =>
            {
                Some(row)
            }
            other => Self::merge_opt(other, u),
        }
    }

    /// Merges an update into the stored row (`None`: no row yet); `None` when the update
    /// creates nothing (a `discarded` or `stalled` for a row that does not exist).
    /// Idempotent: merging the same update twice gives the same row.
    ///
    /// - `pending` only creates a row; it never overrides anything known.
    /// - `stalled` and `discarded` only replace `pending`/`stalled`.
    /// - `superseded` replaces what never reached the object (`pending`, `stalled`,
    ///   `discarded`); a `failed` or `progressing` row keeps what the object said and names
    ///   its successor; an `applied` one is left alone.
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
            last_applied_at: (u.state == TargetState::Applied).then_some(u.at),
            last_failed_at: (u.state == TargetState::Failed).then_some(u.at),
            failed_at: (u.state == TargetState::Failed).then_some(u.at),
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
                    TargetState::Applied | TargetState::Superseded => {}
                    // It reached the object: it stays what the object said of it, naming
                    // the commit applied after it.
                    TargetState::Failed | TargetState::Progressing => {
                        if row.superseded_by.is_none() {
                            row.superseded_by = by();
                        }
                    }
                    // A removed commit that an applied commit still carried (applied before
                    // the forced push): its changes did reach the object that way.
                    TargetState::Pending | TargetState::Stalled | TargetState::Discarded => {
                        if !row.state.observed() {
                            // Times of when it was first expected, whichever push path
                            // (on time, or replayed for a late follower) wrote it first.
                            row.first_seen_at = u.at;
                            row.last_event_at = u.at;
                        }
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
            let kept_by = (u.state != TargetState::Applied)
                .then(|| row.superseded_by.clone())
                .flatten();
            let mut new = fresh();
            new.superseded_by = kept_by;
            return Some(new);
        }
        // The row is the fold of the object's events at this commit in their own order
        // (ties by arrival): the latest event's state, except that a `progressing` after a
        // success (with no failure between) leaves it `applied`.
        let max = |a: Option<DateTime<Utc>>| Some(a.map_or(u.at, |a| a.max(u.at)));
        match u.state {
            TargetState::Applied => {
                row.last_applied_at = max(row.last_applied_at);
                row.applied_at = Some(row.applied_at.map_or(u.at, |a| a.min(u.at)));
            }
            TargetState::Failed => {
                row.last_failed_at = max(row.last_failed_at);
                row.failed_at = Some(row.failed_at.map_or(u.at, |f| f.min(u.at)));
            }
            _ => {}
        }
        row.first_seen_at = row.first_seen_at.min(u.at);
        if u.at < row.last_event_at {
            // An older event: the latest stays the latest. Only a latest `progressing`
            // depends on what came before it.
            let latest_is_progress = Some(row.last_event_at) != row.last_applied_at
                && Some(row.last_event_at) != row.last_failed_at;
            if latest_is_progress {
                let applied_since_failure = match (row.last_applied_at, row.last_failed_at) {
                    (Some(a), Some(f)) => a > f,
                    (Some(_), None) => true,
                    _ => false,
                };
                row.state = if applied_since_failure {
                    TargetState::Applied
                } else {
                    TargetState::Progressing
                };
                if row.state == TargetState::Applied {
                    row.superseded_by = None;
                }
            }
            return Some(row);
        }
        // The latest (or, in the same second, the later arrival).
        if !(row.state == TargetState::Applied && u.state == TargetState::Progressing) {
            row.state = u.state;
            row.reason = u.reason.clone();
            row.message = u.message.clone();
        }
        if u.state == TargetState::Applied {
            row.superseded_by = None;
        }
        if u.revision.is_some() {
            row.revision = u.revision.clone();
        }
        row.last_event_at = u.at;
        Some(row)
    }
}
