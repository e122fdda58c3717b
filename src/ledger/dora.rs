//! The facts behind `GET /api/dora` (contract §8; the figures are `crate::dora`'s): per
//! cluster, its pair rows (one per commit an object of it reported: first report, first
//! success, first failure, first apply's receipt — `audit::PairFacts`), the commits' push
//! records, its incidents opened in the window (the incident index the group settle writes,
//! `groups.rs`), and the members of the open groups for the incidents open now.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::audit::{stamp, ChangeQuery, PairRow, FAILED_SUFFIX};
use super::groups::{incidents_partition, GroupIndexRow, GroupState, IncidentRow, OPEN_INDEX};
use super::records::CommitRecord;
use super::Ledger;
use crate::core::incident::IncidentState;
use crate::dora::{Deployment, Incident, Metrics};
use crate::store::{StoreError, Table};

/// Clusters read at once.
const CONCURRENCY: usize = 8;
/// Commits joined per read.
const JOIN_CHUNK: usize = 500;
/// A limit meaning "all of the range".
const ALL: usize = i64::MAX as usize;

/// A cluster's deployments in the window, and its incidents opened in it (of the repository
/// asked for): opened, resolved, closed by retiring the object.
type ClusterFacts = (
    Vec<PairRow>,
    Vec<(DateTime<Utc>, Option<DateTime<Utc>>, bool)>,
);

/// What one commit adds to its deployments.
#[derive(Debug, Clone)]
struct CommitFacts {
    committed_at: Option<DateTime<Utc>>,
    pushed_at: Option<DateTime<Utc>>,
    repository: String,
}

impl Ledger {
    /// Delivery metrics over `q`'s window, per cluster (`q.cluster`, or every cluster with
    /// changes) and for the fleet, for `q.repository`'s commits (all when `None`).
    pub async fn dora(&self, q: &ChangeQuery) -> Result<Value, StoreError> {
        let clusters = self.clusters(q).await?;
        let (from, to) = (q.from, q.to);
        let repository = q.repository.as_ref().map(|r| r.as_str());
        let mut metrics = Metrics::new(from, to, &clusters);
        // Each commit joined once for the fleet (a few thousand, small); the clusters' rows
        // a few clusters at a time, fed into the figures and dropped.
        let mut commits: HashMap<String, Option<CommitFacts>> = HashMap::new();
        for chunk in clusters.chunks(CONCURRENCY) {
            let facts: Vec<ClusterFacts> = futures::future::try_join_all(
                chunk
                    .iter()
                    .map(|c| self.cluster_facts(c, from, to, repository)),
            )
            .await?;
            let mut shas: Vec<String> = facts
                .iter()
                .flat_map(|(pairs, _)| pairs.iter().map(|p| &p.sha))
                .filter(|s| !commits.contains_key(*s))
                .cloned()
                .collect();
            shas.sort_unstable();
            shas.dedup();
            let joined = self.commit_facts(&shas).await?;
            for sha in shas {
                let c = joined.get(&sha).cloned();
                commits.insert(sha, c);
            }
            for (cluster, (pairs, incidents)) in chunk.iter().zip(facts) {
                for p in pairs {
                    let c = commits.get(&p.sha).and_then(Option::as_ref);
                    if repository.is_some_and(|r| c.is_none_or(|c| c.repository != r)) {
                        continue;
                    }
                    let Some(first_at) = p.facts.first() else {
                        continue;
                    };
                    metrics.deployment(&Deployment {
                        cluster,
                        first_at,
                        applied_at: p.facts.applied_at,
                        failed: p.facts.failed_at.is_some(),
                        apply_received_at: p.facts.received_at,
                        committed_at: c.and_then(|c| c.committed_at),
                        pushed_at: c.and_then(|c| c.pushed_at),
                    });
                }
                for i in incidents {
                    metrics.incident(&Incident {
                        cluster,
                        opened_at: i.0,
                        resolved_at: i.1,
                        retired: i.2,
                    });
                }
            }
        }
        for (cluster, n) in self.open_incidents(&clusters, repository).await? {
            metrics.open(&cluster, n);
        }
        Ok(metrics.finish())
    }

    /// A cluster's pair rows first reported in the window, and its incidents opened in it.
    async fn cluster_facts(
        &self,
        cluster: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        repository: Option<&str>,
    ) -> Result<ClusterFacts, StoreError> {
        let pairs = self
            .store
            .query_range_json(
                Table::Audit,
                &super::audit::pair_partition(cluster),
                "",
                "~",
                ALL,
            )
            .await?;
        let mut out: Vec<PairRow> = Vec::new();
        for (rk, json) in &pairs {
            if let Some(sha) = rk.strip_suffix(FAILED_SUFFIX) {
                // Right after its pair row (key order): the deployment failed.
                if let Some(p) = out.last_mut().filter(|p| p.sha == sha) {
                    p.facts.failed_at = p.facts.failed_at.or(p.facts.first());
                }
                continue;
            }
            let p: PairRow = serde_json::from_str(json)
                .map_err(|e| StoreError::Corrupt(format!("pairs|{cluster}/{rk}: {e}")))?;
            if p.facts.first().is_some_and(|f| f >= from && f < to) {
                out.push(p);
            }
        }
        // Newest first: [to) … [from].
        let (lo, hi) = (
            format!("{:013}", stamp(to).parse::<i64>().unwrap_or(0) + 1),
            format!("{}~", stamp(from)),
        );
        let pk = incidents_partition(cluster);
        let rows = self
            .store
            .query_range_json(Table::Audit, &pk, &lo, &hi, ALL)
            .await?;
        let mut incidents = Vec::with_capacity(rows.len());
        for (rk, json) in &rows {
            let row: IncidentRow = serde_json::from_str(json)
                .map_err(|e| StoreError::Corrupt(format!("{pk}/{rk}: {e}")))?;
            if repository.is_none_or(|r| row.repository.as_deref() == Some(r)) {
                incidents.push((row.opened_at, row.resolved_at, row.closed_by.is_some()));
            }
        }
        Ok((out, incidents))
    }

    /// The commits' timestamps, first pushes and repositories, many commits per read.
    async fn commit_facts(
        &self,
        shas: &[String],
    ) -> Result<HashMap<String, CommitFacts>, StoreError> {
        let mut out = HashMap::with_capacity(shas.len());
        for chunk in shas.chunks(JOIN_CHUNK) {
            let rows = self
                .store
                .query_partitions_range(Table::Commits, chunk, "commit", "commit|")
                .await?;
            for (sha, rows) in chunk.iter().zip(rows) {
                if let Some(e) = rows.iter().find(|e| e.rk == "commit") {
                    let c: CommitRecord = e.record()?;
                    let committed_at = c
                        .timestamp
                        .as_deref()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.to_utc());
                    out.insert(
                        sha.clone(),
                        CommitFacts {
                            committed_at,
                            pushed_at: c.push_time(),
                            repository: c.repository,
                        },
                    );
                }
            }
        }
        Ok(out)
    }

    /// Incidents open now per cluster: the open members of the open groups (a handful,
    /// however long the history).
    async fn open_incidents(
        &self,
        clusters: &[String],
        repository: Option<&str>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        let rows = self
            .store
            .query_range(Table::Audit, OPEN_INDEX, "", "~", ALL)
            .await?;
        let mut seen = std::collections::HashSet::new();
        for row in rows {
            let entry: GroupIndexRow = row.record()?;
            if !seen.insert((entry.partition.clone(), entry.generation)) {
                continue;
            }
            let Some((g, members)) = self.group(&entry.partition, entry.generation).await? else {
                continue;
            };
            if g.state != GroupState::Open {
                continue;
            }
            for m in members {
                if m.state == IncidentState::Open
                    && clusters.binary_search(&m.cluster).is_ok()
                    && repository.is_none_or(|r| m.repository.as_deref() == Some(r))
                {
                    *out.entry(m.cluster).or_default() += 1;
                }
            }
        }
        Ok(out)
    }
}
