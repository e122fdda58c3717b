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
            repository: repo(),
            git_ref: main_ref()
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
fn forced_push_does_not_supersede_the_rewritten_commits_it_discards_them() {
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
        Some(TargetState::Discarded),
        "3 is not an ancestor of 9: removed from the branch, it can never arrive"
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

// ---- part 8: the sequences real clusters produce -----------------------------------------

/// Case 1: the push's receipt (server clock, sub-second) is never compared with Flux times
/// (cluster clock, seconds). A failure and then a success in the push's second: applied.
#[test]
fn mixed_clocks_a_recovery_in_the_pushs_second_applies() {
    let mut w = World::default();
    w.push_received(
        Some(1),
        &[2],
        false,
        t(0) + chrono::Duration::milliseconds(96),
    );
    let o = apps();
    w.send(&ev(
        &o,
        "HealthCheckFailed",
        Some(&main_rev(2)),
        0,
        "timeout",
    ));
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        0,
        "ok",
    ));
    assert_eq!(w.states[&o].status, ObjectStatus::Ready);
    assert_eq!(w.types(), ["apply.failed", "apply.recovered"]);
    assert_eq!(w.target(2, &o), Some(TargetState::Applied));
}

/// Case 1, a cluster whose clock runs minutes behind the server.
#[test]
fn mixed_clocks_a_cluster_behind_the_server() {
    let mut w = World::default();
    w.push_received(Some(1), &[2], false, t(600));
    let o = apps();
    w.send(&ev(&o, "ReconciliationFailed", Some(&main_rev(2)), 10, "x"));
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        20,
        "ok",
    ));
    assert_eq!(w.target(2, &o), Some(TargetState::Applied));
    let row = &w.targets[&(sha(2), o.clone())];
    assert_eq!(
        row.last_event_at,
        t(20),
        "Flux time, not the push's receipt"
    );
    assert_eq!(row.first_seen_at, t(10));
}

/// Case 2: applied c1; push c1→c2; c3 applied before its push; the late push c2→c3
/// supersedes c2 by c3 — in either order of the last two.
#[test]
fn apply_before_push_supersedes_the_skipped_commit() {
    for apply_first in [true, false] {
        let mut w = World::default();
        let o = apps();
        w.push(Some(0), &[1], false, 0);
        w.send(&ev(
            &o,
            "ReconciliationSucceeded",
            Some(&main_rev(1)),
            10,
            "ok",
        ));
        w.push(Some(1), &[2], false, 20);
        assert_eq!(w.target(2, &o), Some(TargetState::Pending));
        let apply = ev(&o, "ReconciliationSucceeded", Some(&main_rev(3)), 30, "ok");
        if apply_first {
            w.send(&apply);
            w.push(Some(2), &[3], false, 40);
        } else {
            w.push(Some(2), &[3], false, 40);
            w.send(&apply);
        }
        assert_eq!(
            w.target(2, &o),
            Some(TargetState::Superseded),
            "{apply_first}"
        );
        assert_eq!(w.superseded_by(2, &o), Some(sha(3).to_string()));
        assert_eq!(w.target(3, &o), Some(TargetState::Applied));
        assert_eq!(w.target(1, &o), Some(TargetState::Applied));
    }
}

/// Case 2 with two unknown applies in a row before their pushes arrive.
#[test]
fn apply_before_push_across_two_applies() {
    let mut w = World::default();
    let o = apps();
    w.push(Some(0), &[1], false, 0);
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(1)),
        10,
        "ok",
    ));
    w.push(Some(1), &[2], false, 20);
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(3)),
        30,
        "ok",
    ));
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(4)),
        40,
        "ok",
    ));
    w.push(Some(2), &[3], false, 50);
    w.push(Some(3), &[4], false, 60);
    assert_eq!(w.target(2, &o), Some(TargetState::Superseded));
    assert_eq!(w.superseded_by(2, &o), Some(sha(3).to_string()));
    assert_eq!(w.target(3, &o), Some(TargetState::Applied));
    assert_eq!(w.target(4, &o), Some(TargetState::Applied));
}

/// Case 4: a late older success records its own commit without changing the object.
#[test]
fn late_older_success_records_its_commit() {
    let mut w = World::default();
    let o = apps();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "ok",
    ));
    w.push(Some(2), &[3], false, 20);
    w.push(Some(3), &[4], false, 21);
    w.send(&ev(
        &o,
        "ReconciliationFailed",
        Some(&main_rev(4)),
        303,
        "x",
    ));
    let late = ev(&o, "ReconciliationSucceeded", Some(&main_rev(3)), 300, "ok");
    assert_eq!(w.send(&late), Disposition::Stale);
    assert_eq!(w.target(3, &o), Some(TargetState::Applied));
    assert_eq!(
        w.states[&o].status,
        ObjectStatus::Failed,
        "the newer state stays"
    );
    assert_eq!(w.types(), ["apply.failed"]);
    assert_eq!(w.send(&late), Disposition::Duplicate, "its retry");
}

/// Case 4 variant: applied c5, then the late applied c4: c4 was applied, not superseded.
#[test]
fn late_older_apply_is_applied_not_superseded() {
    let mut w = World::default();
    let o = apps();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "ok",
    ));
    w.push(Some(2), &[4, 5], false, 20);
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(5)),
        50,
        "ok",
    ));
    assert_eq!(w.target(4, &o), Some(TargetState::Superseded));
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(4)),
        40,
        "ok",
    ));
    assert_eq!(w.target(4, &o), Some(TargetState::Applied));
    assert_eq!(w.superseded_by(4, &o), None);
    assert_eq!(w.target(5, &o), Some(TargetState::Applied));
}

/// Case 5: the change set and the success of one reconciliation share a second; delivered
/// success first, they are one apply, not drift.
#[test]
fn change_set_after_its_success_in_the_same_second_is_no_drift() {
    let mut w = World::default();
    let o = apps();
    w.push(Some(1), &[2], false, 0);
    let change = "Deployment/apps/podinfo configured";
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "ok",
    ));
    w.send(&ev(&o, "Progressing", Some(&main_rev(2)), 10, change));
    assert!(w.messages.is_empty(), "{:?}", w.types());
    assert_eq!(w.target(2, &o), Some(TargetState::Applied));
    // A later change set at the same revision is drift.
    w.send(&ev(&o, "Progressing", Some(&main_rev(2)), 610, change));
    assert_eq!(w.types(), ["drift.detected"]);
}

/// Case 6: a rollback re-applies an older revision with a change set: no drift, and the
/// incident of the failed revision closes with `apply.recovered`.
#[test]
fn rollback_is_not_drift_and_recovers() {
    for success_first in [true, false] {
        let mut w = World::default();
        let o = apps();
        let change = "Deployment/apps/podinfo configured";
        w.push(Some(1), &[2], false, 0);
        w.send(&ev(&o, "Progressing", Some(&main_rev(2)), 10, change));
        w.send(&ev(
            &o,
            "ReconciliationSucceeded",
            Some(&main_rev(2)),
            10,
            "ok",
        ));
        w.push(Some(2), &[3], false, 100);
        w.send(&ev(&o, "Progressing", Some(&main_rev(3)), 110, change));
        w.send(&ev(
            &o,
            "HealthCheckFailed",
            Some(&main_rev(3)),
            170,
            "timeout",
        ));
        w.push(Some(3), &[2], true, 200); // forced back to 2
        let cs = ev(&o, "Progressing", Some(&main_rev(2)), 210, change);
        let ok = ev(&o, "ReconciliationSucceeded", Some(&main_rev(2)), 210, "ok");
        if success_first {
            w.send(&ok);
            w.send(&cs);
        } else {
            w.send(&cs);
            w.send(&ok);
        }
        assert_eq!(
            w.types(),
            ["apply.failed", "apply.recovered"],
            "success first: {success_first}"
        );
        assert_eq!(w.target(3, &o), Some(TargetState::Failed));
        // Real drift afterwards is still drift.
        w.send(&ev(&o, "Progressing", Some(&main_rev(2)), 900, change));
        assert_eq!(
            w.types(),
            ["apply.failed", "apply.recovered", "drift.detected"]
        );
    }
}

/// Case 7: a commit force-pushed away before it reached the object is `discarded`.
#[test]
fn forced_push_discards_what_it_removed() {
    let mut w = World::default();
    let o = apps();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "ok",
    ));
    w.push(Some(2), &[3], false, 20); // B
    assert_eq!(w.target(3, &o), Some(TargetState::Pending));
    w.push(Some(3), &[9], true, 30); // B′ replaces B
    assert_eq!(w.target(3, &o), Some(TargetState::Discarded));
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(9)),
        40,
        "ok",
    ));
    assert_eq!(w.target(3, &o), Some(TargetState::Discarded));
    assert_eq!(w.target(9, &o), Some(TargetState::Applied));
    assert_eq!(
        w.target(2, &o),
        Some(TargetState::Applied),
        "an applied commit stays applied"
    );
}

/// Case 7: what the forced push kept is not discarded; a commit already applied stays so.
#[test]
fn forced_push_keeps_what_stays_on_the_branch() {
    let mut w = World::default();
    let o = apps();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "ok",
    ));
    w.push(Some(2), &[3], false, 20);
    w.push(Some(3), &[4], false, 21);
    // Rewind to 3 (4 removed), with a new commit 5 on top of 3.
    w.push(Some(4), &[3, 5], true, 30);
    assert_eq!(w.target(4, &o), Some(TargetState::Discarded));
    assert_eq!(w.target(3, &o), Some(TargetState::Pending));
    assert_eq!(w.target(5, &o), Some(TargetState::Pending));
}

/// Case 8: a Helm drift episode ends at the next successful upgrade; a later
/// `DriftDetected` is reported again.
#[test]
fn helm_drift_rearms_after_an_upgrade() {
    let mut w = World::default();
    let hr = obj("prod-eu", "HelmRelease", "podinfo");
    let msg = "Cluster state of release apps/podinfo.v3 has drifted from the desired state";
    w.send(&ev(&hr, "DriftDetected", None, 10, msg));
    w.send(&ev(&hr, "DriftDetected", None, 310, msg));
    w.send(&ev(
        &hr,
        "UpgradeSucceeded",
        Some("6.5.5"),
        400,
        "Helm upgrade succeeded",
    ));
    w.send(&ev(&hr, "DriftDetected", None, 600_000, msg));
    w.send(&ev(&hr, "DriftDetected", None, 600_300, msg));
    assert_eq!(w.types(), ["drift.detected", "drift.detected"]);
}

/// Case 9: a commit that failed and was then superseded stays `failed`, naming its successor.
#[test]
fn a_failed_commit_later_superseded_stays_failed() {
    let mut w = World::default();
    let o = apps();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "ok",
    ));
    w.push(Some(2), &[3], false, 20);
    w.send(&ev(&o, "ReconciliationFailed", Some(&main_rev(3)), 30, "x"));
    w.push(Some(3), &[4, 5], false, 40);
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(5)),
        50,
        "ok",
    ));
    assert_eq!(w.target(3, &o), Some(TargetState::Failed));
    assert_eq!(w.superseded_by(3, &o), Some(sha(5).to_string()));
    assert_eq!(w.target(4, &o), Some(TargetState::Superseded));
}

/// Case 10: a first apply on a branch with a long history supersedes a bounded number of
/// recent commits, and the object's state stays small.
#[test]
fn first_apply_walk_is_bounded() {
    let mut w = World::default();
    let o = apps();
    for n in 0..250u16 {
        let c = |n: u16| CommitSha::parse(&format!("{n:04x}").repeat(10)).unwrap();
        w.graph
            .add_push(Some(&c(n)), &[c(n + 1)], Some(&c(n + 1)), false);
        w.commits.insert(
            c(n + 1),
            CommitInfo {
                sha: c(n + 1),
                repository: repo(),
                refs: vec![main_ref()],
            },
        );
    }
    let tip = CommitSha::parse(&format!("{:04x}", 250).repeat(10)).unwrap();
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&format!("main@sha1:{tip}")),
        10,
        "ok",
    ));
    let superseded = w
        .targets
        .values()
        .filter(|r| r.state == TargetState::Superseded)
        .count();
    assert_eq!(superseded, history::FIRST_APPLY_WALK);
    let state = serde_json::to_string(&w.states[&o]).unwrap();
    // Bounded whatever the history: ~18 KB, the 50 superseded updates kept for a retry.
    assert!(state.len() < 64 * 1024, "state is {} bytes", state.len());
}

/// The change set delivered after its success (same second) leaves the object ready, as
/// the other order does.
#[test]
fn change_set_after_its_success_leaves_the_object_ready() {
    let mut w = World::default();
    let o = apps();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "ok",
    ));
    w.send(&ev(
        &o,
        "Progressing",
        Some(&main_rev(2)),
        10,
        "Deployment/apps/x configured",
    ));
    assert_eq!(w.states[&o].status, ObjectStatus::Ready);
}

// ---- order-independence over generated histories ------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Any interleaving of the senders (pushes, and each object's events, each in its own
    /// order) — Flux reporting commits before their pushes arrive among them — with retries
    /// and redeliveries anywhere, ends in the views of the order things happened in. With
    /// forced pushes (rollbacks, amends), for every order in which each push arrives before
    /// the reports of its commits: a report that precedes the push of its commit *and* a
    /// later rollback is order-dependent — where the object started following is then
    /// unknowable without comparing a Flux time with a push's receipt.
    #[test]
    fn histories_end_the_same_in_every_arrival_order(
        story in proptest::collection::vec(any::<u8>(), 8..48),
        order in proptest::collection::vec(any::<u8>(), 0..96),
        dups in proptest::collection::vec((any::<u16>(), any::<u16>()), 0..6),
        forced in any::<bool>(),
    ) {
        Story::generate(&mut Bytes(&story), forced)
            .assert_arrival_order_is_irrelevant(&order, &dups, forced);
    }

    /// notification-controller's own disorder within one object: the change set and the
    /// success of one reconciliation swapped, an event retried late.
    #[test]
    fn late_and_concurrent_events_keep_every_commit_true(
        story in proptest::collection::vec(any::<u8>(), 8..48),
        which in any::<usize>(),
        late in 0usize..4,
        swap in any::<bool>(),
        forced in any::<bool>(),
    ) {
        Story::generate(&mut Bytes(&story), forced)
            .assert_disorder_keeps_every_commit_true(which, late, swap);
    }
}

/// Case 11: any report of an object ends its silence and brings a retired object back.
#[test]
fn a_report_ends_silence_and_retirement() {
    let mut w = World::default();
    let o = apps();
    w.push(Some(1), &[2], false, 0);
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        10,
        "ok",
    ));
    let st = w.states.get_mut(&o).unwrap();
    st.stalled_since_report = SILENT_AFTER + 1;
    st.retired_at = Some(t(50));
    assert!(w.states[&o].silent());
    w.send(&ev(
        &o,
        "ReconciliationSucceeded",
        Some(&main_rev(2)),
        600,
        "ok",
    ));
    assert!(!w.states[&o].silent());
    assert_eq!(w.states[&o].retired_at, None);
}

/// A HelmRelease whose chart was built from the Git source (`reconcileStrategy: Revision`):
/// its version's build metadata is the commit's first 12 hex, linked when unambiguous.
#[test]
fn helm_chart_version_links_its_source_commit() {
    let mut w = World::default();
    let hr = obj("prod-eu", "HelmRelease", "podinfo");
    w.push(Some(1), &[2], false, 0);
    let version = |n: u8| format!("0.1.0+{}", &sha(n).as_str()[..12]);
    w.send(&ev(
        &hr,
        "UpgradeSucceeded",
        Some(&version(2)),
        10,
        "Helm upgrade succeeded",
    ));
    assert_eq!(w.target(2, &hr), Some(TargetState::Applied));
    assert_eq!(
        w.states[&hr].follows.as_ref().map(|f| f.git_ref.as_str()),
        Some("refs/heads/main")
    );
    // It follows main now: the next push is pending on it, then applied.
    w.push(Some(2), &[3], false, 20);
    assert_eq!(w.target(3, &hr), Some(TargetState::Pending));
    w.send(&ev(&hr, "UpgradeFailed", Some(&version(3)), 30, "timeout"));
    assert_eq!(w.target(3, &hr), Some(TargetState::Failed));
    // Two pushed commits with the same abbreviation: not linked.
    let twin = CommitSha::parse(&format!("{}{}", &sha(4).as_str()[..12], "f".repeat(28))).unwrap();
    w.push(Some(3), &[4], false, 40);
    w.commits.insert(
        twin.clone(),
        CommitInfo {
            sha: twin,
            repository: repo(),
            refs: vec![GitRef::parse("refs/heads/other").unwrap()],
        },
    );
    w.send(&ev(&hr, "UpgradeSucceeded", Some(&version(4)), 50, "ok"));
    assert_eq!(
        w.target(4, &hr),
        Some(TargetState::Pending),
        "ambiguous: not linked"
    );
    // A plain chart version names no commit.
    w.send(&ev(&hr, "UpgradeSucceeded", Some("6.5.5"), 60, "ok"));
    assert_eq!(w.targets.keys().filter(|(_, o)| o == &hr).count(), 3);
}
