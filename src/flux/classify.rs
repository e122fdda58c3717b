//! Reasons by class (reference flux-events §5). Unknown reasons are classified by severity,
//! never rejected.

use serde::{Deserialize, Serialize};

use super::{FluxEvent, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Class {
    /// The object applied its revision.
    Applied,
    /// Apply, build, install/upgrade, remediation or source failure.
    Failed,
    /// Applied but unhealthy (health checks, Helm tests).
    HealthFailed,
    /// Work in progress; may carry a change set (`Kind/ns/name configured`).
    Progressing,
    /// Blocked on a dependency.
    Waiting,
    /// Helm found the cluster drifted from the release.
    DriftDetected,
    /// Helm corrected drift.
    DriftCorrected,
    /// Helm tried to correct drift and failed.
    DriftCorrectionFailed,
    /// Informational: nothing to change (unknown info reasons, source artifacts).
    Info,
}

impl Class {
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Class::Failed | Class::HealthFailed | Class::DriftCorrectionFailed
        )
    }
}

pub fn classify(e: &FluxEvent) -> Class {
    match e.reason.as_str() {
        "ReconciliationSucceeded" | "InstallSucceeded" | "UpgradeSucceeded" | "TestSucceeded" => Class::Applied,
        // NC v1.8.0–1.8.3 dropped ReconciliationSucceeded; the health check passing is the
        // last word of a successful reconcile.
        "Progressing" if is_health_check_passed(&e.message) => Class::Applied,
        "Progressing" | "HealthCheckCanceled" => Class::Progressing,
        "ReconciliationFailed" | "BuildFailed" | "ArtifactFailed" | "PruneFailed" | "InvalidCELExpression"
        | "AccessDenied" | "InstallFailed" | "UpgradeFailed" | "RollbackFailed" | "UninstallFailed"
        | "ValuesError"
        // Remediation means the upgrade or install failed.
        | "RollbackSucceeded" | "UninstallSucceeded"
        // source-controller
        | "GitOperationFailed" | "AuthenticationFailed" | "URLInvalid" | "OCIArtifactPullFailed"
        | "ArtifactVerificationFailed" | "StorageOperationFailed" | "ChartPullFailed" | "ChartPackageFailed" => {
            Class::Failed
        }
        "HealthCheckFailed" | "TestFailed" => Class::HealthFailed,
        "DependencyNotReady" => Class::Waiting,
        "DriftDetected" => Class::DriftDetected,
        "DriftCorrected" => Class::DriftCorrected,
        "DriftCorrectionFailed" => Class::DriftCorrectionFailed,
        "NewArtifact" | "Succeeded" | "ArtifactUpToDate" => Class::Info,
        _ => match e.severity {
            Severity::Error => Class::Failed,
            _ => Class::Info,
        },
    }
}

fn is_health_check_passed(message: &str) -> bool {
    message.trim_start().starts_with("Health check passed")
}

/// A Kustomization change set: every non-empty line is `Kind/[ns/]name <action>`.
pub fn is_change_set(message: &str) -> bool {
    let mut lines = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .peekable();
    lines.peek().is_some()
        && lines.all(|l| match l.rsplit_once(' ') {
            Some((object, action)) => {
                object.contains('/')
                    && !object.contains(' ')
                    && matches!(action, "configured" | "created" | "deleted" | "unchanged")
            }
            None => false,
        })
        && message.lines().any(|l| {
            let l = l.trim();
            l.ends_with(" configured") || l.ends_with(" created") || l.ends_with(" deleted")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flux::ObjectRef;
    use std::collections::BTreeMap;

    fn ev(reason: &str, severity: Severity, message: &str) -> FluxEvent {
        FluxEvent {
            object: ObjectRef {
                cluster: "c".into(),
                kind: "Kustomization".into(),
                namespace: "flux-system".into(),
                name: "apps".into(),
            },
            severity,
            timestamp: chrono::Utc::now(),
            reason: reason.into(),
            message: message.into(),
            metadata: BTreeMap::new(),
            reporting_controller: None,
            fingerprint: String::new(),
        }
    }

    #[test]
    fn reasons_by_class() {
        use Severity::*;
        let cases = [
            (
                "ReconciliationSucceeded",
                Info,
                "Reconciliation finished in 1.2s, next run in 10m0s",
                Class::Applied,
            ),
            ("UpgradeSucceeded", Info, "", Class::Applied),
            (
                "Progressing",
                Info,
                "Health check passed in 3.2s",
                Class::Applied,
            ),
            (
                "Progressing",
                Info,
                "Deployment/apps/podinfo configured",
                Class::Progressing,
            ),
            (
                "ReconciliationFailed",
                Error,
                "dry-run failed",
                Class::Failed,
            ),
            ("RollbackSucceeded", Info, "", Class::Failed),
            ("HealthCheckFailed", Error, "timeout", Class::HealthFailed),
            ("TestFailed", Error, "", Class::HealthFailed),
            ("DependencyNotReady", Info, "", Class::Waiting),
            ("DriftDetected", Error, "", Class::DriftDetected),
            ("DriftCorrected", Info, "", Class::DriftCorrected),
            (
                "DriftCorrectionFailed",
                Error,
                "",
                Class::DriftCorrectionFailed,
            ),
            ("NewArtifact", Info, "stored artifact", Class::Info),
            ("SomethingNew", Error, "", Class::Failed),
            ("SomethingNew", Info, "", Class::Info),
            ("", Other, "", Class::Info),
        ];
        for (reason, sev, msg, want) in cases {
            assert_eq!(classify(&ev(reason, sev, msg)), want, "{reason} {msg}");
        }
    }

    #[test]
    fn change_sets() {
        assert!(is_change_set(
            "Deployment/apps/podinfo configured\nService/apps/podinfo created"
        ));
        assert!(is_change_set("Namespace/apps created"));
        assert!(is_change_set("Deployment/apps/old deleted\n"));
        assert!(!is_change_set("Health check passed in 3.2s"));
        assert!(!is_change_set("Deployment/apps/podinfo unchanged"));
        assert!(!is_change_set(""));
        assert!(!is_change_set(
            "Reconciliation finished in 1s, next run in 10m"
        ));
    }
}
