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

use crate::domain::{CommitSha, GitRef, RepoKey};
use crate::flux::{Class, FluxEvent, ObjectRef};
use drift::DriftEpisode;
pub use history::BranchGraph;
pub use incident::IncidentState;
use incident::{Facts, Incident};
pub use message::{message_id, Custom, Message, MessageType};
pub use target::{TargetRecord, TargetState, TargetUpdate};

/// How many recent events' target updates the state keeps, so a retried event whose first
/// attempt stopped after the state write can still finish its target rows.
const RECENT: usize = 3;

/// How many recently applied commits an object's state remembers (see
/// [`ObjectState::applied_shas`]).
pub const APPLIED_KEPT: usize = 8;

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
    pub repository: RepoKey,
    pub git_ref: GitRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub revision: Option<String>,
    pub sha: Option<CommitSha>,
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
    /// The last [`APPLIED_KEPT`] distinct commits the object applied, in its own order
    /// (oldest first): a push that arrives after the object applied its commits still finds
    /// what those applies skipped (`superseded`).
    #[serde(default)]
    pub applied_shas: Vec<CommitSha>,
    /// The (Flux) time of the first success at `last_revision` since the object began
    /// reporting that revision; `None` until one. A change set is drift only after it.
    #[serde(default)]
    pub run_applied_at: Option<DateTime<Utc>>,
    /// The earliest (Flux) time of any event of the object: a late event older than it is
    /// the object's first report, arriving late.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Commits the sweep found stalled on the object since its last report (see
    /// [`SILENT_AFTER`]); any report resets it.
    #[serde(default)]
    pub stalled_since_report: u32,
    /// The commits counted in `stalled_since_report` (the first [`SILENT_AFTER`] + 1): a
    /// sweep that runs again, or another instance's, counts and announces each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stalled: Vec<CommitSha>,
    /// When an operator retired the object (server time): nothing is expected of it any
    /// more. Any report brings it back.
    #[serde(default)]
    pub retired_at: Option<DateTime<Utc>>,
}

/// How many consecutive commits may stall on an object with no report from it in between
/// before it is called silent: each of these is announced (`rollout.stalled`); the next
/// one sends `object.silent` once instead, and later ones nothing, until it reports again.
pub const SILENT_AFTER: u32 = 2;

impl ObjectState {
    /// Silent: stalled on more than [`SILENT_AFTER`] consecutive commits without a report.
    pub fn silent(&self) -> bool {
        self.stalled_since_report > SILENT_AFTER
    }
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
            applied_shas: vec![],
            run_applied_at: None,
            since: None,
            stalled_since_report: 0,
            stalled: vec![],
            retired_at: None,
        }
    }

    /// [`applied_shas`](Self::applied_shas), or for a state written before it was kept, the
    /// last applied commit.
    fn recently_applied(&self) -> Vec<CommitSha> {
        if self.applied_shas.is_empty() {
            self.applied_sha().into_iter().collect()
        } else {
            self.applied_shas.clone()
        }
    }

    pub fn applied_sha(&self) -> Option<CommitSha> {
        self.applied.as_ref()?.sha.clone()
    }
}

/// What a push told us about the event's source commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub sha: CommitSha,
    pub repository: RepoKey,
    pub refs: Vec<GitRef>,
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
        let branches: Vec<&GitRef> = commit
            .refs
            .iter()
            .filter(|r| r.as_str().starts_with("refs/heads/"))
            .collect();
        match branches.as_slice() {
            [only] => (*only).clone(),
            _ => return None,
        }
    } else {
        candidates
            .into_iter()
            .find_map(|c| commit.refs.iter().find(|r| r.as_str() == c))?
            .clone()
    };
    Some(Follow {
        repository: commit.repository.clone(),
        git_ref,
    })
}

/// The commit an event concerns: a certain Git revision, a sha256 candidate that a push
/// confirmed, or a Helm chart version's abbreviated commit that the ledger resolved.
pub fn event_sha(event: &FluxEvent, commit: Option<&CommitInfo>) -> Option<CommitSha> {
    let revision = event.source_revision()?;
    if let Some(prefix) = revision.commit_prefix() {
        // A chart version's abbreviated commit, resolved by the ledger to one pushed commit.
        return commit
            .filter(|c| c.sha.as_str().starts_with(prefix))
            .map(|c| c.sha.clone());
    }
    let sha = revision.commit()?;
    (revision.is_certainly_git() || commit.is_some_and(|c| c.sha == sha)).then_some(sha)
}

/// Applies one classified event to an object's state.
///
/// Order: events of one object are ordered by their own (cluster) timestamps, and events
/// that share a timestamp by arrival. An event older than the object's last one is `Stale`:
/// it changes nothing of the object, but still records what it says of its own commit (its
/// target row, merged by the row's own order rule).
pub fn apply_event(
    state: Option<ObjectState>,
    event: &FluxEvent,
    class: Class,
    ctx: &Context<'_>,
    now: DateTime<Utc>,
) -> Outcome {
    let mut st = state.unwrap_or_else(|| ObjectState::new(event.object.clone()));
    let _ = now; // time enters through the event; `now` is for rules that age (the sweep)
    let sha = event_sha(event, ctx.commit.as_ref());
    let revision = event
        .revision()
        .map(str::to_string)
        .or_else(|| event.source_revision().map(|r| r.to_string()));
    let own = |state: TargetState| {
        sha.clone().map(|sha| TargetUpdate {
            sha,
            object: event.object.clone(),
            state,
            revision: revision.clone(),
            at: event.timestamp,
            reason: Some(event.reason.clone()),
            message: Some(event.message.clone()),
            superseded_by: None,
        })
    };
    let outcome = |st, targets, disposition| Outcome {
        state: st,
        targets,
        messages: vec![],
        incidents: vec![],
        disposition,
    };

    if let Some(last) = st.last_event_at {
        if event.timestamp < last {
            let own = match (event.object.is_source(), own_state(class)) {
                (false, Some(s)) => own(s),
                _ => None,
            };
            let targets = late_event(&mut st, event, class, ctx, own);
            return outcome(st, targets, Disposition::Stale);
        }
        if event.timestamp == last && st.seen.contains(&event.fingerprint) {
            let targets = st
                .recent
                .iter()
                .find(|r| r.fingerprint == event.fingerprint)
                .map(|r| r.targets.clone())
                .unwrap_or_default();
            return outcome(st, targets, Disposition::Duplicate);
        }
        if event.timestamp > last {
            st.seen.clear();
        }
    }
    st.seen.push(event.fingerprint.clone());
    st.last_event_at = Some(event.timestamp);
    st.since.get_or_insert(event.timestamp);
    // It speaks: not silent, and (if it was retired) back.
    st.stalled_since_report = 0;
    st.stalled.clear();
    st.retired_at = None;
    st.last_reason = Some(event.reason.clone());
    st.last_message = Some(event.message.clone());
    st.events += 1;
    // Same revision as the object's last report: the same run (drift needs one).
    let same_run = revision.is_none() || revision == st.last_revision;
    if !same_run {
        st.run_applied_at = None;
    }
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
        sha: sha.clone(),
        repository,
    };
    let mut step = Step {
        targets: vec![],
        messages: vec![],
        incidents: vec![],
    };

    if event.object.is_source() {
        // Source objects produce artifacts; they apply nothing: history and status only.
        st.status = match class {
            c if c.is_failure() => ObjectStatus::Failed,
            _ => ObjectStatus::Ready,
        };
        return finish(st, step, event);
    }
    // A Helm drift episode ends at the next successful install, upgrade or rollback.
    if matches!(
        event.reason.as_str(),
        "InstallSucceeded" | "UpgradeSucceeded" | "RollbackSucceeded"
    ) {
        st.drift = None;
    }
    let own_target = own_state(class).and_then(own);
    match class {
        Class::Applied => on_applied(
            &mut st,
            &mut step,
            own_target,
            follow.is_some().then_some(ctx.graph).flatten(),
            &facts,
        ),
        c if c.is_failure() => on_failed(&mut st, &mut step, own_target, &facts),
        Class::Progressing | Class::Waiting => {
            on_progressing(&mut st, &mut step, own_target, class, same_run, &facts)
        }
        Class::DriftDetected | Class::DriftCorrected => {
            on_helm_drift(&mut st, &mut step, class, &facts)
        }
        _ => {}
    }
    if let Some(f) = follow {
        if st.follows.as_ref() != Some(&f) {
            // It follows this branch now: what was pushed to it after the commit it reports
            // is expected of it, as if it had followed before those pushes arrived.
            if let (Some(graph), Some(sha)) = (ctx.graph, &sha) {
                step.targets.extend(on_follow(&st, graph, sha));
            }
        }
        st.follows = Some(f);
    }
    finish(st, step, event)
}

/// An event older than the object's newest (`Stale`): the object's state stays, except the
/// time of its first report; what the event says of commits still counts — its own commit's
/// row, what a success skipped since the object's latest apply before it, and, if it is the
/// object's first report, the pushes after it (had it arrived in time, the object would have
/// followed from it).
fn late_event(
    st: &mut ObjectState,
    event: &FluxEvent,
    class: Class,
    ctx: &Context<'_>,
    own: Option<TargetUpdate>,
) -> Vec<TargetUpdate> {
    let first_report = st.since.is_none_or(|s| event.timestamp < s);
    st.since = Some(st.since.map_or(event.timestamp, |s| s.min(event.timestamp)));
    let Some(own) = own else { return vec![] };
    let graph = follow_of(event, ctx.commit.as_ref())
        .filter(|f| st.follows.as_ref() == Some(f))
        .and(ctx.graph);
    let mut targets = vec![];
    if let Some(graph) = graph {
        if first_report {
            targets.extend(on_follow(st, graph, &own.sha));
        }
        if class == Class::Applied {
            let previous = st
                .recently_applied()
                .into_iter()
                .rev()
                .find(|a| graph.is_ancestor(a, &own.sha));
            for c in graph.superseded(&own.sha, previous.as_ref()) {
                targets.push(superseded(
                    graph,
                    c,
                    &event.object,
                    &own.sha,
                    event.timestamp,
                ));
            }
        }
    }
    targets.insert(0, own);
    targets
}

/// What one event adds besides the object's new state.
struct Step {
    targets: Vec<TargetUpdate>,
    messages: Vec<Message>,
    incidents: Vec<Incident>,
}

/// The state an event of this class reports for its own commit.
fn own_state(class: Class) -> Option<TargetState> {
    match class {
        Class::Applied => Some(TargetState::Applied),
        c if c.is_failure() => Some(TargetState::Failed),
        Class::Progressing | Class::Waiting => Some(TargetState::Progressing),
        _ => None,
    }
}

/// A success: the commit is applied, what it skipped on its branch superseded, an open
/// incident closed.
fn on_applied(
    st: &mut ObjectState,
    step: &mut Step,
    own: Option<TargetUpdate>,
    graph: Option<&BranchGraph>,
    f: &Facts<'_>,
) {
    st.status = ObjectStatus::Ready;
    if let Some(u) = own {
        if let Some(graph) = graph {
            step.targets
                .extend(skipped(graph, &u, st.applied_sha().as_ref()));
        }
        if st.applied_shas.last() != Some(&u.sha) {
            st.applied_shas.retain(|s| s != &u.sha);
            st.applied_shas.push(u.sha.clone());
            if st.applied_shas.len() > APPLIED_KEPT {
                st.applied_shas.remove(0);
            }
        }
        step.targets.insert(0, u);
    }
    if st.applied.as_ref().is_none_or(|a| a.revision != f.revision) {
        st.applied = Some(applied_record(f, f.event.timestamp));
    }
    st.run_applied_at.get_or_insert(f.event.timestamp);
    if let Some(inc) = st.incident.take() {
        step.incidents
            .push(incident::on_success(inc, f, &mut step.messages));
    }
}

/// What an object skipped on its branch when it applied `applied` (its own update) after
/// `previous`: the pushed commits in between, superseded by it.
fn skipped(
    graph: &BranchGraph,
    applied: &TargetUpdate,
    previous: Option<&CommitSha>,
) -> Vec<TargetUpdate> {
    graph
        .superseded(&applied.sha, previous)
        .into_iter()
        .map(|c| superseded(graph, c, &applied.object, &applied.sha, applied.at))
        .collect()
}

/// `sha` was superseded on `object` by `by`. The object never reported it: no revision, and
/// the time the ledger first expected it (its first push's receipt, `or` without one) — the
/// same whether the push or the apply arrived first.
fn superseded(
    graph: &BranchGraph,
    sha: CommitSha,
    object: &ObjectRef,
    by: &CommitSha,
    or: DateTime<Utc>,
) -> TargetUpdate {
    TargetUpdate {
        at: graph.received_at(&sha).unwrap_or(or),
        sha,
        object: object.clone(),
        state: TargetState::Superseded,
        revision: None,
        reason: None,
        message: None,
        superseded_by: Some(by.clone()),
    }
}

/// A failure: the commit failed here; an incident opens (or is re-announced).
fn on_failed(st: &mut ObjectState, step: &mut Step, own: Option<TargetUpdate>, f: &Facts<'_>) {
    st.status = ObjectStatus::Failed;
    step.targets.extend(own);
    let inc = incident::on_failure(st.incident.take(), f, &mut step.messages);
    step.incidents.push(inc.clone());
    st.incident = Some(inc);
}

/// Work in progress. At the revision the object already applied in this run of reports the
/// object is still at it (`ready`): a change set then is drift corrected — unless it shares
/// the success's second, when it belongs to that apply (whichever arrived first).
fn on_progressing(
    st: &mut ObjectState,
    step: &mut Step,
    own: Option<TargetUpdate>,
    class: Class,
    same_run: bool,
    f: &Facts<'_>,
) {
    // The commit's row learns of the event either way (a `progressing` never undoes
    // `applied`): the same row whether the event arrived in order or late.
    step.targets.extend(own);
    if class == Class::Progressing && same_run && st.run_applied_at.is_some() {
        if drift::is_kustomization_drift(f, st.run_applied_at) {
            step.messages.push(drift::message(f));
        }
        st.status = ObjectStatus::Ready;
        return;
    }
    st.status = if class == Class::Waiting {
        ObjectStatus::Waiting
    } else {
        ObjectStatus::Progressing
    };
}

/// Helm's own drift reports: one message per episode (`DriftDetected` repeats every
/// reconcile in warn mode). An episode ends at `DriftCorrected` or at the next successful
/// install/upgrade/rollback; corrected without a detection we saw, the drift still happened.
fn on_helm_drift(st: &mut ObjectState, step: &mut Step, class: Class, f: &Facts<'_>) {
    match class {
        Class::DriftDetected if st.drift.is_none() => {
            let m = drift::message(f);
            st.drift = Some(DriftEpisode {
                since: f.event.timestamp,
                message_id: m.id.clone(),
            });
            step.messages.push(m);
        }
        Class::DriftCorrected if st.drift.take().is_none() => step.messages.push(drift::message(f)),
        _ => {}
    }
}

fn applied_record(f: &Facts<'_>, at: DateTime<Utc>) -> Applied {
    Applied {
        revision: f.revision.clone(),
        sha: f.sha.clone(),
        at,
    }
}

fn finish(mut st: ObjectState, step: Step, event: &FluxEvent) -> Outcome {
    st.recent.push(Recent {
        fingerprint: event.fingerprint.clone(),
        targets: step.targets.clone(),
    });
    if st.recent.len() > RECENT {
        st.recent.remove(0);
    }
    Outcome {
        state: st,
        targets: step.targets,
        messages: step.messages,
        incidents: step.incidents,
        disposition: Disposition::Applied,
    }
}

/// A push to a branch the object follows (or, `newly_following`, a push that revealed the
/// branch of a commit the object had already reported): the pushed commits become `pending`
/// on it, or `superseded` when the object already applied a later commit — whichever of the
/// push and the apply arrived first (a forced push's commits are the branch's new content:
/// `pending` unless applied). A push that reveals what one of the object's recent
/// applies descends from also supersedes what that apply skipped since the one before it.
pub fn on_push(
    state: &ObjectState,
    graph: &BranchGraph,
    pushed: &[CommitSha],
    forced: bool,
    newly_following: bool,
    received_at: DateTime<Utc>,
) -> Vec<TargetUpdate> {
    let applied = &state.recently_applied();
    let carried: Vec<std::collections::HashSet<CommitSha>> =
        applied.iter().map(|a| graph.ancestors(a)).collect();
    let head_line = match pushed.last() {
        Some(head) if forced => graph.ancestors(head),
        _ => Default::default(),
    };
    let on_branch = |a: &CommitSha| !forced || pushed.contains(a) || head_line.contains(a);
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
        if applied.contains(c) {
            continue;
        }
        // The first of the object's applies that carried c's changes — after a forced push
        // only one still on the branch (a rollback re-pushes an older commit, which the
        // object is expected to apply again).
        match (0..applied.len()).find(|i| carried[*i].contains(c) && on_branch(&applied[*i])) {
            Some(i) => out.push(superseded(
                graph,
                c.clone(),
                &state.object,
                &applied[i],
                received_at,
            )),
            // An object that starts following with this push reported its tip: what the
            // push carried came before that, never to be expected on it.
            None if newly_following => {}
            None => out.push(base(c, TargetState::Pending, None)),
        }
    }
    for (i, a) in applied.iter().enumerate() {
        let previous = i.checked_sub(1).map(|p| &applied[p]);
        if !pushed.contains(a) {
            continue;
        }
        for c in graph.superseded(a, previous) {
            if !pushed.contains(&c) && !applied.contains(&c) {
                out.push(superseded(graph, c, &state.object, a, received_at));
            }
        }
    }
    if newly_following {
        if let Some(a) = state.applied_sha() {
            for c in graph.superseded(&a, None) {
                if !pushed.contains(&c) && !applied.contains(&c) {
                    out.push(superseded(graph, c, &state.object, &a, received_at));
                }
            }
        }
    }
    out
}

/// An object starts following a branch at `sha`, the commit it reports: the pushes received
/// after that commit's last push are replayed for it ([`on_push`], [`on_forced_push`]) —
/// the same rows, whether the pushes arrived before or after it began following.
pub fn on_follow(state: &ObjectState, graph: &BranchGraph, sha: &CommitSha) -> Vec<TargetUpdate> {
    let steps = graph.pushes_after(sha);
    let mut out = Vec::new();
    for (i, p) in steps.iter().enumerate() {
        out.extend(on_push(
            state,
            graph,
            &p.commits,
            p.forced,
            false,
            p.received_at,
        ));
        if let (Some(before), true) = (&p.before, p.forced) {
            // Removed then — unless a later push (a rollback) brought it back.
            let back: std::collections::HashSet<&CommitSha> =
                steps[i..].iter().flat_map(|p| &p.commits).collect();
            let removed: Vec<CommitSha> = graph
                .removed(before, p.commits.last())
                .into_iter()
                .filter(|c| !back.contains(c))
                .collect();
            out.extend(on_forced_push(state, &removed, p.received_at));
        }
    }
    out
}

/// A forced push removed `removed` from a branch the object follows: those still expected
/// on it (`pending`, `stalled`) never can arrive: `discarded`.
pub fn on_forced_push(
    state: &ObjectState,
    removed: &[CommitSha],
    received_at: DateTime<Utc>,
) -> Vec<TargetUpdate> {
    let applied = state.recently_applied();
    removed
        .iter()
        .filter(|c| !applied.contains(c))
        .map(|c| TargetUpdate {
            sha: c.clone(),
            object: state.object.clone(),
            state: TargetState::Discarded,
            revision: None,
            at: received_at,
            reason: None,
            message: None,
            superseded_by: None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
