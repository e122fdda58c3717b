//! The evidence for one commit (contract §3): assembled from the rows of the commit's
//! partition, so answering `GET /api/commits/{sha}` is one partition query.

use serde::Serialize;

use super::records::{ApprovalRecord, CommitRecord, ReviewRecord};
use crate::domain::CommitSha;
use crate::git::{Person, Provider};
use crate::store::{Entity, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    pub sha: String,
    pub commit: Option<CommitEvidence>,
    pub approval: Option<ApprovalEvidence>,
    /// Where the commit was applied (Flux correlation fills this).
    pub targets: Vec<serde_json::Value>,
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
    pub pushed_at: String,
    pub pushed_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalEvidence {
    pub provider: Provider,
    pub repository: String,
    pub number: u64,
    pub url: Option<String>,
    pub merged_by: Option<String>,
    pub merged_at: Option<String>,
    pub target_ref: Option<String>,
    pub head_sha: Option<String>,
    pub approvers: Vec<String>,
    pub reviews: Vec<ReviewRecord>,
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
    };
    for row in rows {
        match row.rk.as_str() {
            "commit" => {
                let c: CommitRecord = row.record()?;
                evidence.commit = Some(CommitEvidence {
                    repository: c.repository,
                    repository_url: c.repository_url,
                    provider: c.provider,
                    refs: c.refs,
                    message: c.message,
                    author: c.author,
                    timestamp: c.timestamp,
                    url: c.url,
                    pushed_at: c
                        .pushed_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    pushed_by: c.pushed_by,
                });
            }
            "approval" => {
                let a: ApprovalRecord = row.record()?;
                evidence.approval = Some(ApprovalEvidence {
                    provider: a.provider,
                    repository: a.repository,
                    number: a.number,
                    url: a.url,
                    merged_by: a.merged_by,
                    merged_at: a.merged_at,
                    target_ref: a.target_ref,
                    head_sha: a.head_sha,
                    approvers: a.approvers,
                    reviews: a.reviews,
                });
            }
            _ => {}
        }
    }
    Ok(Some(evidence))
}
