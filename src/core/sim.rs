//! The ledger's glue in miniature, for tests and the core's fuzz target: `World` keeps object
//! states, the branch graph, target rows, messages and incidents in maps and drives the pure
//! core exactly as the ledger does (follow decision, on-push updates, target merge, replayed
//! targets for duplicates), so a case reads as a story of events.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use super::*;
use crate::flux::{classify, ObjectRef, Severity};

pub const REPO: &str = "github.com/acme/fleet";

pub fn sha(n: u8) -> CommitSha {
    CommitSha::parse(&format!("{n:02x}").repeat(20)).unwrap()
}

pub fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_786_000_000 + s, 0).unwrap()
}

pub fn obj(cluster: &str, kind: &str, name: &str) -> ObjectRef {
    ObjectRef {
        cluster: cluster.into(),
        kind: kind.into(),
        namespace: "flux-system".into(),
        name: name.into(),
    }
}

pub fn apps() -> ObjectRef {
    obj("prod-eu", "Kustomization", "apps")
}

/// An event as NC would send it; the fingerprint covers every field, like the body hash.
pub fn ev(o: &ObjectRef, reason: &str, rev: Option<&str>, at: i64, message: &str) -> FluxEvent {
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

pub fn main_rev(n: u8) -> String {
    format!("main@sha1:{}", sha(n))
}

#[derive(Default)]
pub struct World {
    pub states: BTreeMap<ObjectRef, ObjectState>,
    pub graph: BranchGraph,
    pub commits: HashMap<CommitSha, CommitInfo>,
    pub targets: BTreeMap<(CommitSha, ObjectRef), TargetRecord>,
    pub messages: Vec<Message>,
    pub incidents: BTreeMap<String, Incident>,
    /// Every event's (object, fingerprint), as the objects' history rows.
    pub history: BTreeSet<(ObjectRef, String)>,
}

impl World {
    pub fn push(&mut self, before: Option<u8>, commits: &[u8], forced: bool, at: i64) {
        self.push_received(before, commits, forced, t(at))
    }

    /// A push received at `at` by the server's clock (which Flux times are never compared
    /// with).
    pub fn push_received(
        &mut self,
        before: Option<u8>,
        commits: &[u8],
        forced: bool,
        at: DateTime<Utc>,
    ) {
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
            for u in on_push(&st2, &self.graph, &list, !follows, at) {
                self.merge(&u);
            }
            if let (true, true, Some(b)) = (forced, follows, before) {
                let removed = self.graph.removed(&sha(b), list.last());
                for u in on_forced_push(&st2, &removed, at) {
                    self.merge(&u);
                }
            }
        }
    }

    pub fn send(&mut self, e: &FluxEvent) -> Disposition {
        let commit = e
            .source_revision()
            .and_then(|r| r.commit())
            .and_then(|s| self.commits.get(&s).cloned());
        let ctx = Context {
            commit,
            graph: Some(&self.graph),
        };
        let mut out = apply_event(
            self.states.get(&e.object).cloned(),
            e,
            classify(e),
            &ctx,
            e.timestamp,
        );
        let fresh = self
            .history
            .insert((e.object.clone(), e.fingerprint.clone()));
        if out.disposition == Disposition::Stale && !fresh {
            // Its history row exists: a retry (the ledger answers `duplicate`).
            out.disposition = Disposition::Duplicate;
        }
        for u in &out.targets {
            if out.disposition != Disposition::Applied {
                let key = (u.sha.clone(), u.object.clone());
                if let Some(row) = TargetRecord::merge_replayed(self.targets.remove(&key), u) {
                    self.targets.insert(key, row);
                }
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

    pub fn merge(&mut self, u: &TargetUpdate) {
        let key = (u.sha.clone(), u.object.clone());
        if let Some(row) = TargetRecord::merge_opt(self.targets.remove(&key), u) {
            self.targets.insert(key, row);
        }
    }

    pub fn target(&self, n: u8, o: &ObjectRef) -> Option<TargetState> {
        self.targets.get(&(sha(n), o.clone())).map(|r| r.state)
    }

    pub fn superseded_by(&self, n: u8, o: &ObjectRef) -> Option<String> {
        self.targets
            .get(&(sha(n), o.clone()))
            .and_then(|r| r.superseded_by.clone())
    }

    pub fn types(&self) -> Vec<&'static str> {
        self.messages
            .iter()
            .map(|m| m.kind.as_str().trim_start_matches("io.fluxtrail."))
            .collect()
    }
}

/// What a run leaves behind, with the bookkeeping whose order may differ between equivalent
/// runs (`seen` order, the `recent` ring) normalised away.
pub type Snapshot = (
    BTreeMap<ObjectRef, ObjectState>,
    BTreeMap<(CommitSha, ObjectRef), TargetRecord>,
    BTreeSet<String>,
);

impl World {
    pub fn snapshot(self) -> Snapshot {
        let mut states = self.states;
        for s in states.values_mut() {
            s.seen.sort();
            s.recent.clear();
        }
        (
            states,
            self.targets,
            self.messages.iter().map(|m| m.id.clone()).collect(),
        )
    }
}
