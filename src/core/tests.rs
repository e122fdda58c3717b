//! The core as tables of cases, told as stories of events to the `sim::World`.

use proptest::prelude::*;

use super::sim::*;
use super::*;

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

fn world_after(events: &[FluxEvent]) -> Snapshot {
    let mut w = World::default();
    w.push(Some(1), &[2, 3], false, 0);
    w.push(Some(3), &[4], false, 1);
    for e in events {
        w.send(e);
    }
    w.snapshot()
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
