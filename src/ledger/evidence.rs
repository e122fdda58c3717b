//! The evidence for one commit (contract §3): assembled from the rows of the commit's
//! partition, so answering `GET /api/commits/{sha}` is one partition query.

use serde::Serialize;

use super::records::{ApprovalRecord, CommitRecord};
use crate::core::TargetRecord;
use crate::domain::CommitSha;
use crate::git::{Person, Provider};
use crate::store::{Entity, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub sha: String,
    pub commit: Option<CommitEvidence>,
    /// The approval record as stored: the contract's fields plus `repository`, `mergedAt`,
    /// `targetRef`, `headSha` and every reviewer's latest verdict.
    pub approval: Option<ApprovalRecord>,
    /// Where the commit went: one entry per (cluster, Flux object) that applied, failed,
    /// skipped or still expects it.
    /// The stored rows as they are: their field names are the contract's.
    pub targets: Vec<TargetRecord>,
    /// `GET /api/commits?view=clusters` (the UI's rollout matrix): the targets summarised per
    /// cluster instead of listed (`targets` is then empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<ClusterSummary>>,
}

/// A commit's targets on one cluster: how many objects, and how many in each state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSummary {
    pub cluster: String,
    pub objects: usize,
    pub states: std::collections::BTreeMap<crate::core::TargetState, usize>,
}

/// A target row's cluster and state without parsing the rest of it: the cluster is the
/// record's first field, the state its fifth. An unescaped `"state":"` can only be a key:
/// inside a string value every quote is escaped. `None`: read the row the long way (also a
/// cluster name with escapes).
fn cluster_and_state(json: &str) -> Option<(&str, crate::core::TargetState)> {
    static STATE: std::sync::OnceLock<memchr::memmem::Finder<'static>> = std::sync::OnceLock::new();
    let rest = json.strip_prefix("{\"cluster\":\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest.as_bytes())?;
    if rest.as_bytes()[end] != b'"' {
        return None;
    }
    let (cluster, rest) = rest.split_at(end);
    let finder = STATE.get_or_init(|| memchr::memmem::Finder::new(b"\"state\":\""));
    let s = finder.find(rest.as_bytes())? + "\"state\":".len();
    let len = memchr::memchr(b'"', &rest.as_bytes()[s + 1..])?;
    let state = serde_json::from_str(&rest[s..s + len + 2]).ok()?;
    Some((cluster, state))
}

/// The evidence of one commit with its targets summarised per cluster, from its partition's
/// rows as stored JSON text: a target row is read for its cluster and state only (a commit
/// on a big fleet has thousands).
pub fn summarise(
    sha: &CommitSha,
    rows: &[(String, String)],
) -> Result<Option<Evidence>, StoreError> {
    #[derive(serde::Deserialize)]
    struct Target<'a> {
        #[serde(borrow)]
        cluster: std::borrow::Cow<'a, str>,
        state: crate::core::TargetState,
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let corrupt = |rk: &str, e: serde_json::Error| StoreError::Corrupt(format!("{sha}/{rk}: {e}"));
    let mut entities = Vec::new();
    let mut clusters: std::collections::BTreeMap<String, ClusterSummary> = Default::default();
    for (rk, json) in rows {
        if rk.starts_with("target|") {
            let long;
            let (cluster, state) = match cluster_and_state(json) {
                Some(found) => found,
                None => {
                    let t: Target = serde_json::from_str(json).map_err(|e| corrupt(rk, e))?;
                    long = t.cluster.into_owned();
                    (long.as_str(), t.state)
                }
            };
            let c = match clusters.get_mut(cluster) {
                Some(c) => c,
                None => clusters
                    .entry(cluster.to_string())
                    .or_insert_with(|| ClusterSummary {
                        cluster: cluster.to_string(),
                        objects: 0,
                        states: Default::default(),
                    }),
            };
            c.objects += 1;
            *c.states.entry(state).or_default() += 1;
        } else if rk == "commit" || rk == "approval" {
            let props = serde_json::from_str(json).map_err(|e| corrupt(rk, e))?;
            entities.push(Entity {
                pk: sha.to_string(),
                rk: rk.clone(),
                props,
                etag: None,
            });
        }
    }
    let mut ev = assemble(sha, &entities)?.unwrap_or(Evidence {
        sha: sha.to_string(),
        commit: None,
        approval: None,
        targets: vec![],
        clusters: None,
    });
    ev.clusters = Some(clusters.into_values().collect());
    Ok(Some(ev))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitEvidence {
    pub repository: String,
    pub repository_url: String,
    pub provider: Provider,
    pub refs: Vec<String>,
    pub message: Option<String>,
    pub author: Option<Person>,
    pub timestamp: Option<String>,
    pub url: Option<String>,
    /// `None` for a commit only the host's API described (`source: api`).
    pub pushed_at: Option<String>,
    pub pushed_by: Option<String>,
    /// `push` (a push webhook described it) or `api` (part 12: the host's API did, after
    /// its webhook was lost).
    pub source: crate::git::Source,
}

/// Builds the evidence from the partition's rows; `None` when there are none.
pub fn assemble(sha: &CommitSha, rows: &[Entity]) -> Result<Option<Evidence>, StoreError> {
    if rows.is_empty() {
        return Ok(None);
    }
    let mut evidence = Evidence {
        sha: sha.to_string(),
        commit: None,
        approval: None,
        targets: vec![],
        clusters: None,
    };
    for row in rows {
        match row.rk.as_str() {
            "commit" => {
                let c: CommitRecord = row.record()?;
                let pushed_at = c.push_time();
                evidence.commit = Some(CommitEvidence {
                    repository: c.repository,
                    repository_url: c.repository_url,
                    provider: c.provider,
                    refs: c.refs,
                    message: c.message,
                    author: c.author,
                    timestamp: c.timestamp,
                    url: c.url,
                    pushed_at: pushed_at
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                    pushed_by: c.pushed_by,
                    source: c.source,
                });
            }
            "approval" => evidence.approval = Some(row.record()?),
            rk if rk.starts_with("target|") => evidence.targets.push(row.record()?),
            _ => {}
        }
    }
    Ok(Some(evidence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_rows_cluster_and_state_are_read_from_its_start() {
        let row = |cluster: &str, name: &str| {
            serde_json::json!({"cluster": cluster, "kind": "Kustomization", "namespace": "flux-system",
                "name": name, "state": "superseded", "revision": "main@sha1:\"state\":\"applied\"",
                "message": "\"state\":\"failed\""})
            .to_string()
        };
        let fast = row("prod-eu", "\"state\":\"applied\"");
        assert_eq!(
            cluster_and_state(&fast),
            Some(("prod-eu", crate::core::TargetState::Superseded))
        );
        // A cluster name with escapes is read the long way.
        let weird = row("we\"ird|\\cluster", "apps");
        assert!(cluster_and_state(&weird).is_none());
        assert!(cluster_and_state("{\"kind\":\"x\"}").is_none());
        let sha = CommitSha::parse(&"a".repeat(40)).unwrap();
        let rows = [fast, weird].map(|json| ("target|x".to_string(), json));
        let ev = summarise(&sha, &rows).unwrap().unwrap();
        let clusters = ev.clusters.unwrap();
        let names: Vec<&str> = clusters.iter().map(|c| c.cluster.as_str()).collect();
        assert_eq!(names, ["prod-eu", "we\"ird|\\cluster"]);
        assert!(clusters
            .iter()
            .all(|c| c.states.get(&crate::core::TargetState::Superseded) == Some(&1)));
    }
}
