//! The core as tables of cases. `World` is the ledger's glue in miniature (follow decision,
//! graph, target merge, message collection) so each case reads as a story of events.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;
use crate::flux::{classify, ObjectRef, Severity};

const REPO: &str = "github.com/acme/fleet";

fn sha(n: u8) -> CommitSha {
    CommitSha::parse(&format!("{n:02x}").repeat(20)).unwrap()
}

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_786_000_000 + s, 0).unwrap()
}

fn obj(cluster: &str, kind: &str, name: &str) -> ObjectRef {
    ObjectRef {
        cluster: cluster.into(),
        kind: kind.into(),
        namespace: "flux-system".into(),
        name: name.into(),
    }
}

fn apps() -> ObjectRef {
    obj("prod-eu", "Kustomization", "apps")
}

/// An event as NC would send it; the fingerprint covers every field, like the body hash.
fn ev(o: &ObjectRef, reason: &str, rev: Option<&str>, at: i64, message: &str) -> FluxEvent {
    let severity = match reason {
        "ReconciliationFailed"
        | "HealthCheckFailed"
        | "UpgradeFailed"
        | "DriftDetected"
        | "BuildFailed" => Severity::Error,
        r if r.ends_with("Error") => Severity::Error,
        _ => Severity::Info,
    };
    let mut metadata = std::collections::BTreeMap::new();
    if let Some(r) = rev {
        metadata.insert("revision".to_string(), r.to_string());
    }
    let fp = hex::encode(Sha256::digest(
        format!("{o:?}{reason}{rev:?}{at}{message}").as_bytes(),
    ));
    FluxEvent {
        object: o.clone(),
        severity,
        timestamp: t(at),
        reason: reason.into(),
        message: message.into(),
        metadata,
        reporting_controller: None,
        fingerprint: fp,
    }
}

fn main_rev(n: u8) -> String {
    format!("main@sha1:{}", sha(n))
}

#[derive(Default)]
struct World {
    states: BTreeMap<ObjectRef, ObjectState>,
    graph: BranchGraph,
    commits: HashMap<CommitSha, CommitInfo>,
    targets: BTreeMap<(CommitSha, ObjectRef), TargetRecord>,
    messages: Vec<Message>,
    incidents: BTreeMap<String, Incident>,
}

impl World {
    fn push(&mut self, before: Option<u8>, commits: &[u8], forced: bool, at: i64) {
        let list: Vec<CommitSha> = commits.iter().map(|n| sha(*n)).collect();
        self.graph
            .add_push(before.map(sha).as_ref(), &list, list.last(), forced);
        for c in &list {
            self.commits.entry(c.clone()).or_insert_with(|| CommitInfo {
                sha: c.clone(),
                repository: REPO.into(),
                refs: vec!["refs/heads/main".into()],
            });
        }
        // Followers, and objects that reported a pushed commit before the push.
        let states: Vec<ObjectState> = self.states.values().cloned().collect();
        for st in states {
            let follows = st
                .follows
                .as_ref()
                .is_some_and(|f| f.git_ref == "refs/heads/main");
            let reported = st
                .applied
                .as_ref()
                .and_then(|a| a.sha.clone())
                .is_some_and(|s| list.iter().any(|c| c.as_str() == s));
            if !(follows || reported) {
                continue;
            }
            let mut st2 = st.clone();
            if !follows {
                st2.follows = Some(Follow {
                    repository: REPO.into(),
                    git_ref: "refs/heads/main".into(),
                });
                self.states.insert(st.object.clone(), st2.clone());
            }
            for u in on_push(&st2, &self.graph, &list, !follows, t(at)) {
                self.merge(&u);
            }
        }
    }

    fn send(&mut self, e: &FluxEvent) -> Disposition {
        let commit = e
            .source_revision()
            .and_then(|r| r.commit())
            .and_then(|s| self.commits.get(&s).cloned());
        let ctx = Context {
            commit,
            graph: Some(&self.graph),
        };
        let out = apply_event(
            self.states.get(&e.object).cloned(),
            e,
            classify(e),
            &ctx,
            e.timestamp,
        );
        for u in &out.targets {
            if out.disposition == Disposition::Duplicate {
                let key = (u.sha.clone(), u.object.clone());
                let row = TargetRecord::merge_replayed(self.targets.remove(&key), u);
                self.targets.insert(key, row);
            } else {
                self.merge(u);
            }
        }
        for i in &out.incidents {
            self.incidents.insert(i.id.clone(), i.clone());
        }
        for m in &out.messages {
            if !self.messages.iter().any(|x| x.id == m.id) {
                self.messages.push(m.clone());
            }
        }
        self.states.insert(e.object.clone(), out.state);
        out.disposition
    }

    fn merge(&mut self, u: &TargetUpdate) {
        let key = (u.sha.clone(), u.object.clone());
        let row = TargetRecord::merge(self.targets.remove(&key), u);
        self.targets.insert(key, row);
    }

    fn target(&self, n: u8, o: &ObjectRef) -> Option<TargetState> {
        self.targets.get(&(sha(n), o.clone())).map(|r| r.state)
    }

    fn superseded_by(&self, n: u8, o: &ObjectRef) -> Option<String> {
        self.targets
            .get(&(sha(n), o.clone()))
            .and_then(|r| r.superseded_by.clone())
    }

    fn types(&self) -> Vec<&'static str> {
        self.messages
            .iter()
            .map(|m| m.kind.as_str().trim_start_matches("io.fluxtrail."))
            .collect()
    }
}

#[test]
fn success_applies_the_commit() {
    let mut w = World::default();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &apps(),
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "Reconciliation finished in 1s",
    ));
    assert_eq!(w.target(2, &apps()), Some(TargetState::Applied));
    let st = &w.states[&apps()];
    assert_eq!(st.status, ObjectStatus::Ready);
    assert_eq!(
        st.follows,
        Some(Follow {
            repository: REPO.into(),
            git_ref: "refs/heads/main".into()
        })
    );
    assert!(w.messages.is_empty());
}

#[test]
fn health_check_passed_applies_when_nc_drops_reconciliation_succeeded() {
    let mut w = World::default();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &apps(),
        "Progressing",
        Some(&main_rev(2)),
        10,
        "Deployment/apps/podinfo configured",
    ));
    assert_eq!(w.target(2, &apps()), Some(TargetState::Progressing));
    w.send(&ev(
        &apps(),
        "Progressing",
        Some(&main_rev(2)),
        12,
        "Health check passed in 3.2s",
    ));
    assert_eq!(w.target(2, &apps()), Some(TargetState::Applied));
    assert!(
        w.messages.is_empty(),
        "the change set of a new revision is no drift"
    );
}

#[test]
fn superseded_chain_across_several_pushes() {
    let mut w = World::default();
    w.push(Some(1), &[2, 3], false, 0);
    w.push(Some(3), &[4], false, 1);
    w.push(Some(4), &[5, 6], false, 2);
    w.send(&ev(
        &apps(),
        "ReconciliationSucceeded",
        Some(&main_rev(6)),
        10,
        "ok",
    ));
    for n in [2, 3, 4, 5] {
        assert_eq!(w.target(n, &apps()), Some(TargetState::Superseded), "{n}");
        assert_eq!(w.superseded_by(n, &apps()), Some(sha(6).to_string()));
    }
    assert_eq!(w.target(6, &apps()), Some(TargetState::Applied));
}

#[test]
fn pending_then_applied_then_superseded_relative_to_the_last_apply() {
    let mut w = World::default();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &apps(),
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "ok",
    ));
    // The object follows main now: new pushes are pending on it.
    w.push(Some(2), &[3], false, 20);
    w.push(Some(3), &[4, 5], false, 30);
    for n in [3, 4, 5] {
        assert_eq!(w.target(n, &apps()), Some(TargetState::Pending), "{n}");
    }
    w.send(&ev(
        &apps(),
        "ReconciliationSucceeded",
        Some(&main_rev(5)),
        40,
        "ok",
    ));
    assert_eq!(
        w.target(2, &apps()),
        Some(TargetState::Applied),
        "an applied commit is never superseded"
    );
    assert_eq!(w.target(3, &apps()), Some(TargetState::Superseded));
    assert_eq!(w.target(4, &apps()), Some(TargetState::Superseded));
    assert_eq!(w.target(5, &apps()), Some(TargetState::Applied));
}

#[test]
fn flux_event_before_the_push_that_introduced_its_commit() {
    let mut w = World::default();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &apps(),
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        5,
        "ok",
    ));
    // Flux reports 4 before the push of [3, 4] reaches us.
    w.send(&ev(
        &apps(),
        "ReconciliationSucceeded",
        Some(&main_rev(4)),
        10,
        "ok",
    ));
    assert_eq!(w.target(4, &apps()), Some(TargetState::Applied));
    w.push(Some(2), &[3, 4], false, 12);
    assert_eq!(w.target(3, &apps()), Some(TargetState::Superseded));
    assert_eq!(w.superseded_by(3, &apps()), Some(sha(4).to_string()));
    assert_eq!(w.target(4, &apps()), Some(TargetState::Applied));
}

#[test]
fn an_object_that_never_followed_learns_its_branch_from_a_late_push() {
    let mut w = World::default();
    w.send(&ev(
        &apps(),
        "ReconciliationSucceeded",
        Some(&main_rev(4)),
        10,
        "ok",
    ));
    assert_eq!(
        w.states[&apps()].follows,
        None,
        "the commit is unknown: no branch to follow yet"
    );
    w.push(Some(1), &[2, 3, 4], false, 12);
    assert_eq!(
        w.states[&apps()]
            .follows
            .as_ref()
            .map(|f| f.git_ref.as_str()),
        Some("refs/heads/main")
    );
    assert_eq!(w.target(2, &apps()), Some(TargetState::Superseded));
    assert_eq!(w.target(3, &apps()), Some(TargetState::Superseded));
    w.push(Some(4), &[5], false, 20);
    assert_eq!(w.target(5, &apps()), Some(TargetState::Pending));
}

#[test]
fn one_incident_per_failure_episode_announced_per_failing_revision() {
    let mut w = World::default();
    w.push(Some(1), &[2, 3], false, 0);
    let o = apps();
    w.send(&ev(
        &o,
        "ReconciliationFailed",
        Some(&main_rev(2)),
        10,
        "dry-run failed: a",
    ));
    // Flux repeats itself with different text: no new message.
    w.send(&ev(
        &o,
        "ReconciliationFailed",
        Some(&main_rev(2)),
        310,
        "dry-run failed: b",
    ));
    w.send(&ev(
        &o,
        "HealthCheckFailed",
        Some(&main_rev(2)),
        610,
        "timeout",
    ));
    assert_eq!(w.types(), ["apply.failed"]);
    // The failing revision changes: announced again, same incident.
    w.send(&ev(
        &o,
        "ReconciliationFailed",
        Some(&main_rev(3)),
        900,
        "still broken",
    ));
    assert_eq!(w.types(), ["apply.failed", "apply.failed"]);
    assert_eq!(w.messages[0].incident_id, w.messages[1].incident_id);
    assert_ne!(w.messages[0].id, w.messages[1].id);
    assert_eq!(w.target(2, &o), Some(TargetState::Failed));
    // Recovery closes it.
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(3)),
        1000,
        "ok",
    ));
    assert_eq!(
        w.types(),
        ["apply.failed", "apply.failed", "apply.recovered"]
    );
    assert_eq!(w.messages[2].incident_id, w.messages[0].incident_id);
    assert_eq!(w.states[&o].incident, None);
    let inc = &w.incidents[w.messages[0].incident_id.as_ref().unwrap()];
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.failures, 4);
    // A later success says nothing; a later failure opens a new incident.
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(3)),
        1600,
        "ok",
    ));
    w.send(&ev(
        &o,
        "ReconciliationFailed",
        Some(&main_rev(3)),
        2200,
        "broken again",
    ));
    assert_eq!(
        w.types(),
        [
            "apply.failed",
            "apply.failed",
            "apply.recovered",
            "apply.failed"
        ]
    );
    assert_ne!(w.messages[3].incident_id, w.messages[0].incident_id);
    // A failed target stays failed until a success.
    assert_eq!(w.target(3, &o), Some(TargetState::Failed));
}

#[test]
fn helm_failures_and_remediation() {
    let mut w = World::default();
    let hr = obj("prod-eu", "HelmRelease", "podinfo");
    w.send(&ev(
        &hr,
        "UpgradeFailed",
        Some("6.5.4+0a1b2c3d4e5f"),
        10,
        "Helm upgrade failed: context deadline exceeded",
    ));
    w.send(&ev(
        &hr,
        "RollbackSucceeded",
        Some("6.5.4+0a1b2c3d4e5f"),
        12,
        "Helm rollback succeeded",
    ));
    assert_eq!(
        w.types(),
        ["apply.failed"],
        "remediation is part of the same failure"
    );
    w.send(&ev(
        &hr,
        "UpgradeSucceeded",
        Some("6.5.5"),
        400,
        "Helm upgrade succeeded",
    ));
    assert_eq!(w.types(), ["apply.failed", "apply.recovered"]);
    assert!(w.targets.is_empty(), "chart versions name no commit");
}

#[test]
fn kustomization_drift_versus_a_new_revision() {
    let mut w = World::default();
    w.push(Some(1), &[2], false, 0);
    let o = apps();
    let change = "Deployment/apps/podinfo configured";
    w.send(&ev(&o, "Progressing", Some(&main_rev(2)), 10, change));
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        11,
        "ok",
    ));
    assert!(
        w.messages.is_empty(),
        "first apply of a revision is not drift"
    );
    // Ten minutes later the same revision applies changes again: someone edited the cluster.
    let drift = ev(&o, "Progressing", Some(&main_rev(2)), 600, change);
    w.send(&drift);
    assert_eq!(w.types(), ["drift.detected"]);
    assert_eq!(w.send(&drift), Disposition::Duplicate);
    assert_eq!(
        w.types(),
        ["drift.detected"],
        "a retried event is not a new occurrence"
    );
    assert_eq!(
        w.target(2, &o),
        Some(TargetState::Applied),
        "drift correction keeps the commit applied"
    );
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        601,
        "ok",
    ));
    // Another correction later is another occurrence.
    w.send(&ev(
        &o,
        "Progressing",
        Some(&main_rev(2)),
        1200,
        "Service/apps/podinfo configured",
    ));
    assert_eq!(w.types(), ["drift.detected", "drift.detected"]);
    // "Health check passed" at the same revision is no drift.
    w.send(&ev(
        &o,
        "Progressing",
        Some(&main_rev(2)),
        1201,
        "Health check passed in 2s",
    ));
    assert_eq!(w.messages.len(), 2);
}

#[test]
fn helm_drift_episodes() {
    let mut w = World::default();
    let hr = obj("prod-eu", "HelmRelease", "podinfo");
    let msg = "Cluster state of release apps/podinfo.v3 has drifted from the desired state";
    w.send(&ev(&hr, "DriftDetected", None, 10, msg));
    w.send(&ev(&hr, "DriftDetected", None, 310, msg)); // warn mode repeats
    assert_eq!(w.types(), ["drift.detected"]);
    w.send(&ev(&hr, "DriftCorrected", Some("6.5.4"), 320, "corrected"));
    assert_eq!(w.types(), ["drift.detected"]);
    w.send(&ev(&hr, "DriftDetected", None, 900, msg));
    assert_eq!(w.types(), ["drift.detected", "drift.detected"]);
    // Corrected without a detection we saw: still an occurrence.
    let hr2 = obj("prod-eu", "HelmRelease", "other");
    w.send(&ev(&hr2, "DriftCorrected", Some("1.0.0"), 10, "corrected"));
    assert_eq!(
        w.types(),
        ["drift.detected", "drift.detected", "drift.detected"]
    );
}

#[test]
fn the_same_name_in_two_clusters_is_two_objects() {
    let mut w = World::default();
    w.push(Some(1), &[2], false, 0);
    let eu = obj("prod-eu", "Kustomization", "apps");
    let us = obj("prod-us", "Kustomization", "apps");
    w.send(&ev(
        &eu,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "ok",
    ));
    w.send(&ev(
        &us,
        "HealthCheckFailed",
        Some(&main_rev(2)),
        11,
        "timeout",
    ));
    assert_eq!(w.target(2, &eu), Some(TargetState::Applied));
    assert_eq!(w.target(2, &us), Some(TargetState::Failed));
    assert_eq!(w.types(), ["apply.failed"]);
    assert_eq!(w.messages[0].object, us);
    w.send(&ev(
        &eu,
        "HealthCheckFailed",
        Some(&main_rev(2)),
        12,
        "timeout",
    ));
    assert_eq!(w.types(), ["apply.failed", "apply.failed"]);
    assert_ne!(w.messages[0].incident_id, w.messages[1].incident_id);
}

#[test]
fn older_events_are_history_only() {
    let mut w = World::default();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &apps(),
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        100,
        "ok",
    ));
    assert_eq!(
        w.send(&ev(
            &apps(),
            "ReconciliationFailed",
            Some(&main_rev(2)),
            50,
            "old news"
        )),
        Disposition::Stale
    );
    assert!(w.messages.is_empty());
    assert_eq!(w.target(2, &apps()), Some(TargetState::Applied));
}

#[test]
fn source_and_unknown_events_change_no_target() {
    let mut w = World::default();
    w.push(Some(1), &[2], false, 0);
    let src = obj("prod-eu", "GitRepository", "flux-system");
    w.send(&ev(
        &src,
        "NewArtifact",
        Some(&main_rev(2)),
        10,
        "stored artifact for commit 'x'",
    ));
    w.send(&ev(&src, "GitOperationFailed", None, 11, "auth failed"));
    assert!(w.targets.is_empty());
    assert!(w.messages.is_empty());
    assert_eq!(w.states[&src].status, ObjectStatus::Failed);
    let odd = obj("prod-eu", "Receiver", "hook");
    w.send(&ev(&odd, "SomethingNew", None, 12, "?"));
    assert!(w.messages.is_empty());
    // An unknown error reason on an applier is a failure.
    w.send(&ev(&apps(), "BrandNewError", Some(&main_rev(2)), 13, "?"));
    assert_eq!(w.types(), ["apply.failed"]);
}

#[test]
fn forced_push_does_not_supersede_the_rewritten_commits() {
    let mut w = World::default();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &apps(),
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "ok",
    ));
    w.push(Some(2), &[3], false, 20);
    w.push(Some(3), &[9], true, 30); // 3 was force-pushed away
    w.send(&ev(
        &apps(),
        "ReconciliationSucceeded",
        Some(&main_rev(9)),
        40,
        "ok",
    ));
    assert_eq!(
        w.target(3, &apps()),
        Some(TargetState::Pending),
        "3 is not an ancestor of 9"
    );
    assert_eq!(w.target(9, &apps()), Some(TargetState::Applied));
}

#[test]
fn sha256_checksums_are_commits_only_when_pushed() {
    let mut w = World::default();
    let oci = format!("latest@sha256:{}", "ab".repeat(32));
    w.send(&ev(
        &apps(),
        "ReconciliationSucceeded",
        Some(&oci),
        10,
        "ok",
    ));
    assert!(w.targets.is_empty(), "an OCI digest is no commit");
}

// ---- duplicates and retries -----------------------------------------------------------

fn pool() -> Vec<FluxEvent> {
    let o = apps();
    let hr = obj("prod-eu", "HelmRelease", "podinfo");
    vec![
        ev(
            &o,
            "Progressing",
            Some(&main_rev(2)),
            10,
            "Deployment/apps/podinfo configured",
        ),
        ev(&o, "ReconciliationSucceeded", Some(&main_rev(2)), 11, "ok"),
        ev(&o, "ReconciliationFailed", Some(&main_rev(3)), 20, "a"),
        ev(&o, "ReconciliationFailed", Some(&main_rev(3)), 20, "b"),
        ev(&o, "HealthCheckFailed", Some(&main_rev(4)), 30, "c"),
        ev(
            &o,
            "Progressing",
            Some(&main_rev(4)),
            40,
            "Deployment/apps/podinfo configured",
        ),
        ev(&o, "ReconciliationSucceeded", Some(&main_rev(4)), 41, "ok"),
        ev(
            &o,
            "Progressing",
            Some(&main_rev(4)),
            50,
            "Service/apps/podinfo configured",
        ),
        ev(&hr, "DriftDetected", None, 12, "drifted"),
        ev(&hr, "DriftCorrected", Some("1.0.0"), 25, "fixed"),
        ev(&hr, "UpgradeFailed", Some("1.0.1"), 35, "x"),
        ev(&hr, "UpgradeSucceeded", Some("1.0.2"), 45, "ok"),
    ]
}

type Snapshot = (
    BTreeMap<ObjectRef, ObjectState>,
    BTreeMap<(CommitSha, ObjectRef), TargetRecord>,
    BTreeSet<String>,
);

fn world_after(events: &[FluxEvent]) -> Snapshot {
    let mut w = World::default();
    w.push(Some(1), &[2, 3], false, 0);
    w.push(Some(3), &[4], false, 1);
    for e in events {
        w.send(e);
    }
    let mut states = w.states;
    for s in states.values_mut() {
        // `seen`/`recent` bookkeeping may differ in order; what matters is the rest.
        s.seen.sort();
        s.recent.clear();
    }
    (
        states,
        w.targets,
        w.messages.iter().map(|m| m.id.clone()).collect(),
    )
}

proptest! {
    #[test]
    fn duplicates_and_retries_change_nothing(
        picks in proptest::collection::vec(0usize..12, 1..16),
        dups in proptest::collection::vec((0usize..16, 0usize..32), 0..12),
    ) {
        let pool = pool();
        // A sequence in time order (NC sends in order; retries may land anywhere later).
        let mut once: Vec<FluxEvent> = picks.iter().map(|i| pool[*i].clone()).collect();
        once.sort_by_key(|e| e.timestamp);
        once.dedup_by(|a, b| a.fingerprint == b.fingerprint);
        let mut with_dups = once.clone();
        for (which, at) in dups {
            let original = which % once.len();
            let pos = with_dups.iter().position(|e| e.fingerprint == once[original].fingerprint).unwrap();
            let insert_at = pos + 1 + at % (with_dups.len() - pos);
            with_dups.insert(insert_at, once[original].clone());
        }
        prop_assert_eq!(world_after(&once), world_after(&with_dups));
    }
}
