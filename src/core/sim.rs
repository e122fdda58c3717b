//! The ledger's glue in miniature, for tests and the core's fuzz target: `World` keeps object
//! states, the branch graph, target rows, messages and incidents in maps and drives the pure
//! core exactly as the ledger does (follow decision, on-push updates, target merge, replayed
//! targets for duplicates), so a case reads as a story of events.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use super::*;
use crate::domain::{GitRef, RepoKey};
use crate::flux::{classify, ObjectRef, Severity};

pub const REPO: &str = "github.com/acme/fleet";

pub fn repo() -> RepoKey {
    RepoKey::from_url(REPO).expect("a repository key")
}

pub fn main_ref() -> GitRef {
    GitRef::parse("refs/heads/main").expect("a full ref")
}

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
    /// Every push recorded (before, commits, forced).
    pub pushes: BTreeSet<(Option<u8>, Vec<u8>, bool)>,
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
        // A redelivered push is a duplicate (the ledger's journal, and its push row keyed by
        // before..after).
        if !self.pushes.insert((before, commits.to_vec(), forced)) {
            return;
        }
        self.graph
            .add_push_received(before.map(sha).as_ref(), &list, list.last(), forced, at);
        for c in &list {
            self.commits.entry(c.clone()).or_insert_with(|| CommitInfo {
                sha: c.clone(),
                repository: repo(),
                refs: vec![main_ref()],
            });
        }
        // Followers, and (as the ledger does) objects with a row on the push's tip whose
        // revision names this ref: they reported it before the push told us its branch.
        let main = "refs/heads/main".to_string();
        let head = list.last().cloned();
        let removed = match (forced, before) {
            (true, Some(b)) => self.graph.removed(&sha(b), head.as_ref()),
            _ => vec![],
        };
        let states: Vec<ObjectState> = self.states.values().cloned().collect();
        for st in states {
            let follows = st
                .follows
                .as_ref()
                .is_some_and(|f| f.git_ref.as_str() == main);
            let reported = head.as_ref().is_some_and(|h| {
                self.targets
                    .get(&(h.clone(), st.object.clone()))
                    .and_then(|r| r.revision.as_deref())
                    .is_some_and(|r| {
                        crate::domain::Revision::parse(r)
                            .candidate_refs()
                            .contains(&main)
                    })
            });
            if !(follows || reported) {
                continue;
            }
            let mut st2 = st.clone();
            if !follows {
                st2.follows = Some(Follow {
                    repository: repo(),
                    git_ref: main_ref(),
                });
                self.states.insert(st.object.clone(), st2.clone());
            }
            for u in on_push(&st2, &self.graph, &list, forced, !follows, at) {
                self.merge(&u);
            }
            for u in on_forced_push(&st2, &removed, at) {
                self.merge(&u);
            }
        }
    }

    pub fn send(&mut self, e: &FluxEvent) -> Disposition {
        let commit = e.source_revision().and_then(|r| match r.commit_prefix() {
            // As the ledger: the one pushed commit with that prefix (of the repository the
            // object follows, once it follows one), else none.
            Some(prefix) => {
                let follows = self.states.get(&e.object).and_then(|s| s.follows.clone());
                let found: Vec<&CommitInfo> = self
                    .commits
                    .values()
                    .filter(|c| c.sha.as_str().starts_with(prefix))
                    .filter(|c| {
                        follows
                            .as_ref()
                            .is_none_or(|f| f.repository == c.repository)
                    })
                    .collect();
                match found.as_slice() {
                    [one] => Some((*one).clone()),
                    _ => None,
                }
            }
            None => r.commit().and_then(|s| self.commits.get(&s).cloned()),
        });
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
        let late = out.disposition != Disposition::Applied;
        for u in &out.targets {
            self.merge_event(u, late);
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
        self.merge_event(u, false);
    }

    /// As the ledger merges an update into its row (`late`: a stale or replayed event's).
    fn merge_event(&mut self, u: &TargetUpdate, late: bool) {
        let key = (u.sha.clone(), u.object.clone());
        if let Some(row) = TargetRecord::merge_event(self.targets.remove(&key), u, late) {
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

// ---- realistic histories, delivered in many orders ----------------------------------------

/// One delivery of a generated history.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A push received at a server time (sub-second).
    Push {
        before: u8,
        commits: Vec<u8>,
        forced: bool,
        received: DateTime<Utc>,
    },
    /// A Flux event, at its cluster's clock (second precision).
    Event(FluxEvent),
}

/// A generated history: pushes to `main` (forced rollbacks and amends among them) and, for
/// three objects on two clusters with clocks of their own, reconciliations of the tip:
/// successes with their change set in the same second, failed health checks and builds,
/// recoveries, real drift. `canonical` is the order things happened in; `queues` the same
/// deliveries as one queue per sender (the pushes, and each object), each in its order.
#[derive(Debug, Clone)]
pub struct Story {
    pub canonical: Vec<Delivery>,
    /// Per sender, each delivery with its round (the push of round r is the r-th push).
    pub queues: Vec<Vec<(usize, Delivery)>>,
    /// Commits a forced push removed from the branch by known push chains.
    pub removed: BTreeSet<u8>,
}

/// Bytes read one at a time; zeros once exhausted.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
}

pub fn story_objects() -> [ObjectRef; 3] {
    [
        obj("prod-eu", "Kustomization", "apps"),
        obj("prod-eu", "Kustomization", "infra"),
        obj("prod-us", "Kustomization", "apps"),
    ]
}

impl Story {
    /// `forced`: whether forced pushes (rollbacks, amends) happen.
    pub fn generate(b: &mut Bytes<'_>, forced: bool) -> Story {
        let objects = story_objects();
        // Each cluster's clock: up to 10 minutes either side of the server's.
        let offset = |v: u8| (i64::from(v % 41) - 20) * 30;
        let clocks = [offset(b.byte()), offset(b.byte())];
        let clock_of = |o: &ObjectRef| clocks[usize::from(o.cluster == "prod-us")];
        let mut canonical = Vec::new();
        let mut queues: Vec<Vec<(usize, Delivery)>> = vec![vec![]; 1 + objects.len()];
        let mut removed = BTreeSet::new();
        let mut chain: Vec<u8> = vec![1];
        let mut next: u8 = 2;
        let rounds = 2 + b.byte() % 6;
        for r in 0..i64::from(rounds) {
            let server = t(r * 100) + chrono::Duration::milliseconds(i64::from(b.byte()) * 3);
            let tip = *chain.last().expect("never empty");
            let kind = if forced { b.byte() % 8 } else { 2 };
            let (commits, forced) = if kind == 0 && chain.len() > 1 {
                // Rolled back to an earlier commit of the branch.
                let keep = 1 + usize::from(b.byte()) % (chain.len() - 1);
                removed.extend(chain.drain(keep..));
                (vec![*chain.last().expect("kept one")], true)
            } else if kind == 1 && chain.len() > 1 {
                // The tip amended and force-pushed. A forced push's payload names no parent:
                // by known push chains (the contract's definition of removed, until the
                // host's compare API refines it) the whole branch before it is removed.
                removed.extend(chain.drain(..));
                chain.push(next);
                next += 1;
                (vec![next - 1], true)
            } else {
                let n = 1 + b.byte() % 3;
                let new: Vec<u8> = (next..next + n).collect();
                next += n;
                chain.extend(&new);
                (new, false)
            };
            // A commit removed and pushed again (a rollback to it) is on the branch again.
            for c in &chain {
                removed.remove(c);
            }
            let push = Delivery::Push {
                before: tip,
                commits,
                forced,
                received: server,
            };
            canonical.push(push.clone());
            queues[0].push((r as usize, push));
            let tip = *chain.last().expect("never empty");
            for (i, o) in objects.iter().enumerate() {
                let choice = b.byte();
                if choice % 4 == 0 {
                    continue; // this object does not reconcile this round
                }
                // Often in the push's very second by its own clock.
                let at = r * 100 + i64::from(choice >> 6) + clock_of(o);
                let rev = main_rev(tip);
                let change = "Deployment/apps/podinfo configured";
                let mut events = vec![];
                match (choice >> 2) % 4 {
                    0 => {
                        events.push(ev(o, "HealthCheckFailed", Some(&rev), at, "timeout"));
                        if choice & 0x20 != 0 {
                            events.push(ev(
                                o,
                                "ReconciliationSucceeded",
                                Some(&rev),
                                at + 20,
                                "ok",
                            ));
                        }
                    }
                    1 => events.push(ev(
                        o,
                        "ReconciliationFailed",
                        Some(&rev),
                        at,
                        "build failed",
                    )),
                    _ => {
                        events.push(ev(o, "Progressing", Some(&rev), at, change));
                        events.push(ev(o, "ReconciliationSucceeded", Some(&rev), at, "ok"));
                        if choice & 0x20 != 0 {
                            // Someone edited the cluster: drift corrected later.
                            events.push(ev(o, "Progressing", Some(&rev), at + 40, change));
                        }
                    }
                }
                for e in events {
                    canonical.push(Delivery::Event(e.clone()));
                    queues[1 + i].push((r as usize, Delivery::Event(e)));
                }
            }
        }
        Story {
            canonical,
            queues,
            removed,
        }
    }

    /// The deliveries interleaved as `b` says, each queue kept in its order (the pushes
    /// among themselves, each object's events among themselves): clusters report in any
    /// order relative to each other and, unless `push_first`, Flux may report a commit
    /// before its push arrives (with `push_first`, an event of round r waits for the push of
    /// round r).
    pub fn interleaved(&self, b: &mut Bytes<'_>, push_first: bool) -> Vec<Delivery> {
        let mut queues: Vec<std::collections::VecDeque<(usize, Delivery)>> = self
            .queues
            .iter()
            .map(|q| q.iter().cloned().collect())
            .collect();
        let mut out = Vec::new();
        let mut pushes = 0;
        while queues.iter().any(|q| !q.is_empty()) {
            let live: Vec<usize> = (0..queues.len())
                .filter(|i| {
                    queues[*i]
                        .front()
                        .is_some_and(|(round, _)| *i == 0 || !push_first || *round < pushes)
                })
                .collect();
            let pick = live[usize::from(b.byte()) % live.len()];
            if pick == 0 {
                pushes += 1;
            }
            out.extend(queues[pick].pop_front().map(|(_, d)| d));
        }
        out
    }
}

impl Story {
    /// The canonical order with one object's events disturbed as notification-controller
    /// does: the change set and the success of one reconciliation (same second) swapped
    /// (it posts concurrently), and an event refused and retried after `late` later events
    /// of its object. `which` picks the event.
    pub fn disturbed(&self, which: usize, late: usize, swap: bool) -> Vec<Delivery> {
        let mut out = self.canonical.clone();
        let events: Vec<usize> = (0..out.len())
            .filter(|i| matches!(out[*i], Delivery::Event(_)))
            .collect();
        if events.is_empty() {
            return out;
        }
        let i = events[which % events.len()];
        let Delivery::Event(e) = out[i].clone() else {
            return out;
        };
        let same_object: Vec<usize> = events
            .iter()
            .copied()
            .filter(|j| *j > i && matches!(&out[*j], Delivery::Event(x) if x.object == e.object))
            .collect();
        if swap {
            if let Some(&j) = same_object.first() {
                if matches!(&out[j], Delivery::Event(x) if x.timestamp == e.timestamp) {
                    out.swap(i, j);
                }
            }
            return out;
        }
        if late > 0 && !same_object.is_empty() {
            let to = same_object[(late - 1).min(same_object.len() - 1)];
            let moved = out.remove(i);
            out.insert(to, moved);
        }
        out
    }
}

impl Story {
    /// Delivered in the order `order` says (with forced pushes: each push before the reports
    /// of its commits), with `dups` re-sent later, the history ends in the views of the
    /// order things happened in — targets, objects, incidents, the set of messages — and
    /// both runs are what the contract says ([`World::check`]).
    pub fn assert_arrival_order_is_irrelevant(
        &self,
        order: &[u8],
        dups: &[(u16, u16)],
        forced: bool,
    ) {
        let canonical = World::run(&self.canonical);
        canonical.check(self);
        let arrived = with_duplicates(&self.interleaved(&mut Bytes(order), forced), dups);
        let w = World::run(&arrived);
        w.check(self);
        assert_eq!(canonical.snapshot(), w.snapshot());
    }

    /// notification-controller's own disorder within one object ([`Story::disturbed`]):
    /// ties go by arrival and a late older event never undoes a newer one, so the object's
    /// later story may differ (a late failure opens no incident); what must not differ is
    /// what each commit did on each object (its target state), the object's newest report
    /// (and, for a swapped pair, its status), and the contract's invariants. (An object
    /// whose first report arrives late, after a forced push, may end with a `discarded` row
    /// where the in-order run has none, or the reverse: neither is expected, neither alarms.)
    pub fn assert_disorder_keeps_every_commit_true(&self, which: usize, late: usize, swap: bool) {
        let canonical = World::run(&self.canonical);
        let w = World::run(&self.disturbed(which, late, swap));
        w.check(self);
        let states = |w: &World| -> Vec<_> {
            w.targets
                .iter()
                .filter(|(_, r)| r.state != TargetState::Discarded)
                .map(|(k, r)| (k.clone(), r.state))
                .collect()
        };
        assert_eq!(states(&canonical), states(&w));
        let latest = |w: &World| -> Vec<_> {
            w.states
                .values()
                .map(|s| (s.object.clone(), s.last_event_at, s.last_revision.clone()))
                .collect()
        };
        assert_eq!(latest(&canonical), latest(&w));
        if swap {
            let status = |w: &World| -> Vec<_> {
                w.states
                    .values()
                    .map(|s| (s.object.clone(), s.status))
                    .collect()
            };
            assert_eq!(status(&canonical), status(&w));
        }
    }
}

/// The deliveries with some re-sent later (NC's retries of events it thinks failed, hosts'
/// redeliveries): `dups` pairs (which, how much later).
pub fn with_duplicates(order: &[Delivery], dups: &[(u16, u16)]) -> Vec<Delivery> {
    let mut out = order.to_vec();
    for (which, later) in dups {
        if out.is_empty() {
            break;
        }
        let i = usize::from(*which) % out.len();
        let at = i + 1 + usize::from(*later) % (out.len() - i);
        out.insert(at, out[i].clone());
    }
    out
}

impl World {
    pub fn deliver(&mut self, d: &Delivery) {
        match d {
            Delivery::Push {
                before,
                commits,
                forced,
                received,
            } => self.push_received(Some(*before), commits, *forced, *received),
            Delivery::Event(e) => {
                self.send(e);
            }
        }
    }

    pub fn run(deliveries: &[Delivery]) -> World {
        let mut w = World::default();
        for d in deliveries {
            w.deliver(d);
        }
        w
    }

    /// What the contract says of any run of a [`Story`], whatever the order:
    /// - no commit stays `pending` (or `stalled`) on an object that applied a later commit
    ///   of the branch, nor after a forced push removed it;
    /// - `applied` / `failed` rows only for commits the object reported so; `superseded`
    ///   names a commit that reached the object; `discarded` only for removed commits;
    /// - a `failed` object has an open incident, a `ready` one none;
    /// - drift only for a change set after the success of the same run of reports.
    pub fn check(&self, story: &Story) {
        let events: Vec<&FluxEvent> = story
            .canonical
            .iter()
            .filter_map(|d| match d {
                Delivery::Event(e) => Some(e),
                Delivery::Push { .. } => None,
            })
            .collect();
        let reported = |o: &ObjectRef, c: &CommitSha, reasons: &[&str]| {
            events.iter().any(|e| {
                &e.object == o
                    && reasons.contains(&e.reason.as_str())
                    && e.source_revision().and_then(|r| r.commit()).as_ref() == Some(c)
            })
        };
        for ((c, o), row) in &self.targets {
            match row.state {
                TargetState::Applied => {
                    assert!(
                        reported(o, c, &["ReconciliationSucceeded"]),
                        "{c} applied on {o:?}"
                    )
                }
                TargetState::Failed => assert!(
                    reported(o, c, &["HealthCheckFailed", "ReconciliationFailed"]),
                    "{c} failed on {o:?}"
                ),
                TargetState::Discarded => assert!(
                    story.removed.iter().any(|n| &sha(*n) == c),
                    "{c} discarded but on the branch"
                ),
                TargetState::Pending | TargetState::Stalled => {
                    assert!(
                        !story.removed.iter().any(|n| &sha(*n) == c),
                        "{c} removed by a forced push but still {:?} on {o:?}",
                        row.state
                    );
                    let st = &self.states[o];
                    // (An applied commit a forced push removed supersedes nothing.)
                    let on_branch = |a: &&CommitSha| !story.removed.iter().any(|n| &sha(*n) == *a);
                    for a in st.applied_shas.iter().filter(on_branch) {
                        assert!(
                            !self.graph.is_ancestor(c, a),
                            "{c} still {:?} on {o:?}, which applied its descendant {a}",
                            row.state
                        );
                    }
                }
                TargetState::Superseded | TargetState::Progressing => {}
            }
            if let Some(by) = &row.superseded_by {
                let by = CommitSha::parse(by).expect("a sha");
                // It reached the object (applied, or applied and failing since).
                assert!(
                    matches!(
                        self.targets.get(&(by.clone(), o.clone())).map(|r| r.state),
                        Some(TargetState::Applied | TargetState::Failed)
                    ),
                    "{c} superseded by {by}, which {o:?} did not apply"
                );
            }
        }
        for (o, st) in &self.states {
            // Failing means an open incident; ready means none (between the two, an
            // object may be progressing with its incident still open).
            match st.status {
                ObjectStatus::Failed => assert!(st.incident.is_some(), "{o:?} failed, no incident"),
                ObjectStatus::Ready => assert!(st.incident.is_none(), "{o:?} ready, incident open"),
                _ => {}
            }
        }
        let drifts = self
            .messages
            .iter()
            .filter(|m| m.kind == MessageType::DriftDetected)
            .count();
        let real = events
            .iter()
            .filter(|e| e.reason == "Progressing")
            .filter(|e| {
                // After a success of the same revision, in an earlier second.
                events.iter().any(|s| {
                    s.object == e.object
                        && s.reason == "ReconciliationSucceeded"
                        && s.metadata == e.metadata
                        && s.timestamp < e.timestamp
                })
            })
            .count();
        assert!(
            drifts <= real,
            "{drifts} drift messages, {real} real drifts"
        );
    }
}
