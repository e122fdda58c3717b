//! Delivery metrics (contract §8) from what really ran: pure — the ledger reads the facts
//! (`ledger::dora`), this turns them into the figures, so every definition's edge is a
//! table of cases.
//!
//! - A **deployment** is a (commit, cluster) whose first report by any object of the
//!   cluster, applied or failed, is in the window (`from` inclusive, `to` exclusive). A
//!   commit no object of the cluster ever reported (superseded, discarded, still pending) is
//!   none.
//! - It **failed** when any object of the cluster reported a failure at its revision.
//! - **Lead time**: the commit's timestamp → its first success on the cluster, over the
//!   applied deployments whose commit (and its timestamp) is known.
//! - **Push to apply**: the receipt of its first push → the receipt of its first apply
//!   report on the cluster (both fluxtrail's clock).
//! - **Time to restore**: the cluster's incidents opened in the window and resolved by a
//!   success (not by retiring the object), opened → resolved by the object's own clock.
//! - Percentiles are nearest-rank; the fleet's figures are over every deployment and
//!   incident, never averages of the clusters'.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// One (commit, cluster) as the ledger knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment<'a> {
    pub cluster: &'a str,
    /// The first report, applied or failed (the cluster's clock).
    pub first_at: DateTime<Utc>,
    /// The first success (the cluster's clock).
    pub applied_at: Option<DateTime<Utc>>,
    /// Whether an object of the cluster reported a failure at its revision.
    pub failed: bool,
    /// When fluxtrail received the first apply report.
    pub apply_received_at: Option<DateTime<Utc>>,
    /// The commit's timestamp (the committer's clock), when the commit is known.
    pub committed_at: Option<DateTime<Utc>>,
    /// When fluxtrail received the commit's first push.
    pub pushed_at: Option<DateTime<Utc>>,
}

/// One incident as the ledger knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident<'a> {
    pub cluster: &'a str,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Closed without a recovery (the object was retired): no restore to measure.
    pub retired: bool,
}

/// The figures of one cluster, or of the fleet.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Figures {
    pub deployments: u64,
    pub failed: u64,
    pub lead: Vec<i64>,
    pub push_to_apply: Vec<i64>,
    pub restore: Vec<i64>,
    pub open_incidents: u64,
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of `sorted`: the value at rank
/// ⌈p/100 · n⌉. `None` when there are no values.
pub fn nearest_rank(sorted: &[i64], p: u32) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(p) * n).div_ceil(100).clamp(1, n);
    Some(sorted[(rank - 1) as usize])
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_seconds()
}

impl Figures {
    fn add_deployment(&mut self, d: &Deployment<'_>) {
        self.deployments += 1;
        self.failed += u64::from(d.failed);
        if let Some(applied) = d.applied_at {
            if let Some(c) = d.committed_at {
                self.lead.push(seconds(c, applied));
            }
            if let (Some(p), Some(r)) = (d.pushed_at, d.apply_received_at) {
                self.push_to_apply.push(seconds(p, r));
            }
        }
    }

    fn add_restore(&mut self, i: &Incident<'_>) {
        if let (Some(r), false) = (i.resolved_at, i.retired) {
            self.restore.push(seconds(i.opened_at, r));
        }
    }

    fn merge(&mut self, other: &Figures) {
        self.deployments += other.deployments;
        self.failed += other.failed;
        self.lead.extend_from_slice(&other.lead);
        self.push_to_apply.extend_from_slice(&other.push_to_apply);
        self.restore.extend_from_slice(&other.restore);
        self.open_incidents += other.open_incidents;
    }

    /// The contract's JSON; `days` is the window's length in days.
    pub fn to_json(&mut self, days: f64) -> Value {
        fn dist(v: &mut [i64]) -> Value {
            v.sort_unstable();
            json!({"n": v.len(), "p50": nearest_rank(v, 50), "p90": nearest_rank(v, 90)})
        }
        let per_day = (days > 0.0).then(|| round3(self.deployments as f64 / days));
        let rate =
            (self.deployments > 0).then(|| round3(self.failed as f64 / self.deployments as f64));
        json!({
            "deployments": self.deployments,
            "deploymentsPerDay": per_day,
            "failedDeployments": self.failed,
            "changeFailureRate": rate,
            "leadTimeSeconds": dist(&mut self.lead),
            "pushToApplySeconds": dist(&mut self.push_to_apply),
            "timeToRestoreSeconds": dist(&mut self.restore),
            "openIncidents": self.open_incidents,
        })
    }
}

/// Three decimals: a ratio, not a measurement of that precision.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The metrics of `clusters` (each listed, even with nothing to measure) over `[from, to)`,
/// fed one deployment and incident at a time (the fleet's 90 days are ~100,000 of each: only
/// the figures' values are kept, not the rows). Deployments and incidents outside the window,
/// or of other clusters, are left out here, whatever the caller read.
#[derive(Debug)]
pub struct Metrics {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    per: BTreeMap<String, Figures>,
}

impl Metrics {
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>, clusters: &[String]) -> Self {
        Metrics {
            from,
            to,
            per: clusters
                .iter()
                .map(|c| (c.clone(), Figures::default()))
                .collect(),
        }
    }

    fn inside(&self, t: DateTime<Utc>) -> bool {
        t >= self.from && t < self.to
    }

    pub fn deployment(&mut self, d: &Deployment<'_>) {
        if self.inside(d.first_at) {
            if let Some(f) = self.per.get_mut(d.cluster) {
                f.add_deployment(d);
            }
        }
    }

    pub fn incident(&mut self, i: &Incident<'_>) {
        if self.inside(i.opened_at) {
            if let Some(f) = self.per.get_mut(i.cluster) {
                f.add_restore(i);
            }
        }
    }

    /// The cluster's incidents open now.
    pub fn open(&mut self, cluster: &str, n: u64) {
        if let Some(f) = self.per.get_mut(cluster) {
            f.open_incidents = n;
        }
    }

    /// The contract's JSON.
    pub fn finish(self) -> Value {
        let days = (self.to - self.from).num_milliseconds() as f64 / 86_400_000.0;
        let mut fleet = Figures::default();
        let mut out = vec![];
        for (cluster, mut f) in self.per {
            fleet.merge(&f);
            let mut v = f.to_json(days);
            v.as_object_mut()
                .expect("an object")
                .insert("cluster".into(), json!(cluster));
            out.push(v);
        }
        json!({
            "from": self.from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "to": self.to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "clusters": out,
            "fleet": fleet.to_json(days),
        })
    }
}

/// `Metrics` over whole lists (the tables of cases).
pub fn metrics(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    clusters: &[String],
    deployments: &[Deployment<'_>],
    incidents: &[Incident<'_>],
    open: &BTreeMap<String, u64>,
) -> Value {
    let mut m = Metrics::new(from, to, clusters);
    for d in deployments {
        m.deployment(d);
    }
    for i in incidents {
        m.incident(i);
    }
    for (c, n) in open {
        m.open(c, *n);
    }
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    const FROM: &str = "2026-11-01T00:00:00Z";
    const TO: &str = "2026-11-11T00:00:00Z";

    fn dep<'a>(cluster: &'a str, _sha: &str, first: &str) -> Deployment<'a> {
        Deployment {
            cluster,
            first_at: t(first),
            applied_at: Some(t(first)),
            failed: false,
            apply_received_at: Some(t(first) + Duration::seconds(5)),
            committed_at: Some(t(first) - Duration::hours(1)),
            pushed_at: Some(t(first) - Duration::minutes(10)),
        }
    }

    fn inc<'a>(cluster: &'a str, opened: &str, resolved: Option<&str>) -> Incident<'a> {
        Incident {
            cluster,
            opened_at: t(opened),
            resolved_at: resolved.map(t),
            retired: false,
        }
    }

    fn run(deps: &[Deployment<'_>], incs: &[Incident<'_>], open: &[(&str, u64)]) -> Value {
        let clusters = ["prod-eu".to_string(), "prod-us".to_string()];
        let open = open.iter().map(|(c, n)| (c.to_string(), *n)).collect();
        metrics(t(FROM), t(TO), &clusters, deps, incs, &open)
    }

    fn cluster<'a>(v: &'a Value, c: &str) -> &'a Value {
        v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["cluster"] == c)
            .unwrap()
    }

    #[test]
    fn nearest_rank_percentiles() {
        // (values, p50, p90): the rank is ⌈p·n/100⌉, no interpolation.
        let cases: &[(&[i64], Option<i64>, Option<i64>)] = &[
            (&[], None, None),
            (&[7], Some(7), Some(7)),
            (&[1, 2], Some(1), Some(2)),
            (&[1, 2, 3, 4], Some(2), Some(4)),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], Some(5), Some(9)),
            (
                &[10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110],
                Some(60),
                Some(100),
            ),
        ];
        for (values, p50, p90) in cases {
            assert_eq!(nearest_rank(values, 50), *p50, "{values:?}");
            assert_eq!(nearest_rank(values, 90), *p90, "{values:?}");
        }
    }

    #[test]
    fn the_window_includes_from_and_excludes_to() {
        let deps = [
            dep("prod-eu", "a", "2026-10-31T23:59:59Z"), // before: out
            dep("prod-eu", "b", FROM),                   // at from: in
            dep("prod-eu", "c", "2026-11-10T23:59:59Z"), // last second: in
            dep("prod-eu", "d", TO),                     // at to: out
        ];
        let v = run(&deps, &[], &[]);
        let eu = cluster(&v, "prod-eu");
        assert_eq!(eu["deployments"], 2);
        assert_eq!(eu["deploymentsPerDay"], 0.2);
        assert_eq!(v["fleet"]["deployments"], 2);
        // A cluster with nothing to measure is listed, with nulls.
        let us = cluster(&v, "prod-us");
        assert_eq!(us["deployments"], 0);
        assert_eq!(us["changeFailureRate"], Value::Null);
        assert_eq!(
            us["leadTimeSeconds"],
            json!({"n": 0, "p50": null, "p90": null})
        );
        assert_eq!(us["deploymentsPerDay"], 0.0);
    }

    #[test]
    fn a_deployment_that_failed_and_recovered_counts_once_as_failed() {
        // Failed first, applied ten minutes later: one deployment, failed, with a lead
        // time to its (later) first success.
        let mut d = dep("prod-eu", "a", "2026-11-02T10:00:00Z");
        d.failed = true;
        d.applied_at = Some(t("2026-11-02T10:10:00Z"));
        d.committed_at = Some(t("2026-11-02T09:00:00Z"));
        let ok = dep("prod-eu", "b", "2026-11-03T10:00:00Z");
        let v = run(&[d, ok], &[], &[]);
        let eu = cluster(&v, "prod-eu");
        assert_eq!(eu["deployments"], 2);
        assert_eq!(eu["failedDeployments"], 1);
        assert_eq!(eu["changeFailureRate"], 0.5);
        assert_eq!(
            eu["leadTimeSeconds"],
            json!({"n": 2, "p50": 3600, "p90": 4200})
        );
    }

    #[test]
    fn a_failed_deployment_never_applied_has_no_lead_time() {
        let mut d = dep("prod-eu", "a", "2026-11-02T10:00:00Z");
        d.failed = true;
        d.applied_at = None;
        d.apply_received_at = None;
        let v = run(&[d], &[], &[]);
        let eu = cluster(&v, "prod-eu");
        assert_eq!(eu["deployments"], 1);
        assert_eq!(eu["changeFailureRate"], 1.0);
        assert_eq!(eu["leadTimeSeconds"]["n"], 0);
        assert_eq!(eu["pushToApplySeconds"]["n"], 0);
    }

    #[test]
    fn commits_without_a_known_timestamp_or_push_are_deployments_without_lead_time() {
        // Flux reported a sha no push told us about: it ran, so it is a deployment; its
        // lead time and push-to-apply cannot be measured.
        let mut d = dep("prod-eu", "a", "2026-11-02T10:00:00Z");
        d.committed_at = None;
        d.pushed_at = None;
        let v = run(&[d, dep("prod-eu", "b", "2026-11-02T11:00:00Z")], &[], &[]);
        let eu = cluster(&v, "prod-eu");
        assert_eq!(eu["deployments"], 2);
        assert_eq!(eu["leadTimeSeconds"]["n"], 1);
        assert_eq!(
            eu["pushToApplySeconds"],
            json!({"n": 1, "p50": 605, "p90": 605})
        );
    }

    #[test]
    fn time_to_restore_counts_incidents_opened_in_the_window_and_resolved() {
        let mut retired = inc(
            "prod-eu",
            "2026-11-05T00:00:00Z",
            Some("2026-11-05T02:00:00Z"),
        );
        retired.retired = true;
        let incs = [
            inc(
                "prod-eu",
                "2026-11-02T10:00:00Z",
                Some("2026-11-02T10:30:00Z"),
            ), // 1800
            inc(
                "prod-eu",
                "2026-11-03T10:00:00Z",
                Some("2026-11-03T11:00:00Z"),
            ), // 3600
            inc("prod-eu", "2026-11-04T10:00:00Z", None), // still open: no restore yet
            inc(
                "prod-eu",
                "2026-10-31T23:00:00Z",
                Some("2026-11-01T01:00:00Z"),
            ), // opened before
            inc(
                "prod-eu",
                "2026-11-10T23:00:00Z",
                Some("2026-11-11T01:00:00Z"),
            ), // resolved after `to`: counts
            retired, // closed by retiring the object: nothing was restored
        ];
        let v = run(&[], &incs, &[("prod-eu", 1)]);
        let eu = cluster(&v, "prod-eu");
        assert_eq!(
            eu["timeToRestoreSeconds"],
            json!({"n": 3, "p50": 3600, "p90": 7200})
        );
        assert_eq!(eu["openIncidents"], 1);
        assert_eq!(v["fleet"]["openIncidents"], 1);
    }

    #[test]
    fn the_fleet_is_computed_over_all_deployments_not_averaged() {
        // prod-eu: 1 of 1 failed; prod-us: 0 of 3. The average of the rates would be 0.5;
        // the fleet's rate is 1 of 4.
        let mut a = dep("prod-eu", "a", "2026-11-02T10:00:00Z");
        a.failed = true;
        let deps = [
            a,
            dep("prod-us", "a", "2026-11-02T10:00:00Z"),
            dep("prod-us", "b", "2026-11-03T10:00:00Z"),
            dep("prod-us", "c", "2026-11-04T10:00:00Z"),
        ];
        let v = run(&deps, &[], &[]);
        assert_eq!(cluster(&v, "prod-eu")["changeFailureRate"], 1.0);
        assert_eq!(cluster(&v, "prod-us")["changeFailureRate"], 0.0);
        assert_eq!(v["fleet"]["deployments"], 4);
        assert_eq!(v["fleet"]["failedDeployments"], 1);
        assert_eq!(v["fleet"]["changeFailureRate"], 0.25);
        assert_eq!(v["fleet"]["leadTimeSeconds"]["n"], 4);
    }

    #[test]
    fn an_empty_window_has_no_rate_per_day() {
        let clusters = ["prod-eu".to_string()];
        let v = metrics(t(FROM), t(FROM), &clusters, &[], &[], &BTreeMap::new());
        assert_eq!(v["fleet"]["deploymentsPerDay"], Value::Null);
    }

    #[test]
    fn lead_time_is_signed_when_the_clocks_disagree() {
        // The committer's clock ahead of the cluster's: reported as measured (negative),
        // not hidden — it is the one figure comparing two clocks.
        let mut d = dep("prod-eu", "a", "2026-11-02T10:00:00Z");
        d.committed_at = Some(t("2026-11-02T10:02:00Z"));
        let v = run(&[d], &[], &[]);
        assert_eq!(cluster(&v, "prod-eu")["leadTimeSeconds"]["p50"], -120);
    }
}
