//! The scale-out harness (part 9): a randomized but realistic event log — pushes (some
//! forced, some redelivered), Flux events of many objects on several clusters with skewed
//! clocks (progressing, applied, failed, lagging reports, retries of identical bytes), sweeps
//! — sent to 2–3 instances at random over one Azurite behind the fault proxy (`proxy.rs`), a
//! refused delivery retried as the host or Flux would; then compared with one instance, no
//! faults, over the same log: the evidence of every commit, the objects, the incidents, and
//! the message ids the one Service Bus topic holds must be the same, and no message twice.
//!
//! Needs Azurite (`scripts/test.sh` starts it and runs the ignored tests). Runs
//! `FLUXTRAIL_SCALEOUT_RUNS` logs (default 3) from seed `FLUXTRAIL_SCALEOUT_SEED` (default
//! 1); prints one line per run and a total (the figures in RELIABILITY.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::fake_sb::FakeServiceBus;
use crate::helpers::*;
use crate::proxy::{FaultProxy, Faults, Rng};
use crate::scale::{c, push_body};

/// One delivery of the log.
#[derive(Debug, Clone)]
enum Delivery {
    Git { id: String, body: Vec<u8> },
    Flux { cluster: String, body: Vec<u8> },
}

/// Deliveries sent at once (each to a random instance): Flux sends an object's events from
/// concurrent goroutines, and retries one while its first attempt may still be in flight.
type Group = Vec<Delivery>;

#[derive(Debug, Default)]
struct Phase {
    /// Before the push: Flux saw the new commit before its webhook arrived (the source's
    /// artifact, sometimes an object applying it). Per object, in order.
    early: Vec<Vec<Group>>,
    /// In order (a host sends a ref's pushes one after the other).
    pushes: Vec<Delivery>,
    /// Per object, its groups in order; objects concurrently.
    flux: Vec<Vec<Group>>,
    sweep: bool,
}

const OBJECTS: [&str; 3] = ["apps", "infra", "monitoring"];

fn cluster_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An object's events in one phase, as groups: a `Progressing` goes out together with the
/// event after it (the two orders end the same: a late progress report changes nothing), and
/// a retry of identical bytes goes with its original or after it.
struct Events<'a> {
    cluster: &'a str,
    kind: &'a str,
    name: &'a str,
    base: DateTime<Utc>,
    t: i64,
    groups: Vec<Group>,
    with_next: bool,
}

impl Events<'_> {
    fn send(&mut self, reason: &str, sha: u32, rng: &mut Rng) {
        self.t += 1 + rng.below(20) as i64;
        let severity = if reason.ends_with("Failed") {
            "error"
        } else {
            "info"
        };
        let (file, controller) = if self.kind == "GitRepository" {
            ("gitrepository-new-artifact.json", "source-controller")
        } else {
            ("kustomization-succeeded.json", "kustomize-controller")
        };
        let (name, t) = (self.name, self.base + chrono::Duration::seconds(self.t));
        let body = flux_event(file, |v| {
            v["involvedObject"]["name"] = json!(name);
            v["reason"] = json!(reason);
            v["severity"] = json!(severity);
            v["message"] = json!(format!("{reason} {name} at {}", c(sha)));
            v["timestamp"] = json!(cluster_time(t));
            v["metadata"]["revision"] = json!(format!("main@sha1:{}", c(sha)));
            v["reportingController"] = json!(controller);
        });
        let d = Delivery::Flux {
            cluster: self.cluster.to_string(),
            body,
        };
        let mut group = if self.with_next {
            self.groups.pop().unwrap_or_default()
        } else {
            vec![]
        };
        group.push(d.clone());
        self.with_next = reason == "Progressing" && rng.chance(500);
        if rng.chance(150) {
            if rng.chance(500) {
                group.push(d); // retried while the first attempt is in flight
                self.groups.push(group);
            } else {
                self.groups.push(group);
                self.groups.push(vec![d]); // retried after it
            }
        } else {
            self.groups.push(group);
        }
    }
}

/// A realistic history from `seed`.
fn workload(seed: u64) -> (Vec<Phase>, u32) {
    let mut rng = Rng::new(seed);
    let mut clusters = vec!["prod-eu", "prod-us"];
    if rng.chance(500) {
        clusters.push("staging");
    }
    // Each cluster's clock is off by up to five minutes either way.
    let skew: HashMap<&str, i64> = clusters
        .iter()
        .map(|c| (*c, rng.below(600) as i64 - 300))
        .collect();
    // Objects start reporting in different phases (added to the cluster later).
    let start: Vec<u64> = (0..clusters.len() * OBJECTS.len())
        .map(|_| rng.below(4))
        .collect();
    let epoch = DateTime::parse_from_rfc3339("2026-11-02T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let phases = 6 + rng.below(4) as usize;
    let mut out = Vec::new();
    let mut next = 1u32;
    let mut head: Option<u32> = None;
    let mut history: Vec<u32> = vec![];
    for p in 0..phases {
        let mut phase = Phase::default();
        // A push of 1–3 commits, or (1 in 10, after the first) a forced push replacing the tip.
        let forced = head.is_some() && rng.chance(100);
        let n = 1 + rng.below(3) as u32;
        let commits: Vec<u32> = (next..next + n).collect();
        next += n;
        let before = head;
        if forced {
            history.pop();
        }
        history.extend(&commits);
        head = commits.last().copied();
        let tip = head.unwrap();
        let body = push_body("acme/fleet", "refs/heads/main", before, &commits, forced);
        let id = format!("push-{seed}-{p}");
        phase.pushes.push(Delivery::Git {
            id: id.clone(),
            body: body.clone(),
        });
        if rng.chance(150) {
            // The host redelivers it.
            phase.pushes.push(Delivery::Git { id, body });
        }
        let phase_base = epoch + chrono::Duration::seconds(p as i64 * 900);
        for (ci, cluster) in clusters.iter().enumerate() {
            let base = phase_base + chrono::Duration::seconds(skew[cluster]);
            // The source fetched the new tip before the webhook arrived (1 in 3).
            if rng.chance(330) {
                let mut source = Events {
                    cluster,
                    kind: "GitRepository",
                    name: "flux-system",
                    base,
                    t: 0,
                    groups: vec![],
                    with_next: false,
                };
                source.send("NewArtifact", tip, &mut rng);
                phase.early.push(source.groups);
            }
            for (o, name) in OBJECTS.iter().enumerate() {
                if (p as u64) < start[ci * OBJECTS.len() + o] || !rng.chance(800) {
                    continue;
                }
                let mut ev = Events {
                    cluster,
                    kind: "Kustomization",
                    name,
                    base: base + chrono::Duration::seconds(60 + o as i64 * 7),
                    t: 0,
                    groups: vec![],
                    with_next: false,
                };
                // Applied before the push told us (1 in 10).
                if rng.chance(100) {
                    ev.send("ReconciliationSucceeded", tip, &mut rng);
                    phase.early.push(ev.groups);
                    continue;
                }
                let target = if rng.chance(150) && history.len() > 1 {
                    history[history.len() - 2]
                } else {
                    tip
                };
                ev.send("Progressing", target, &mut rng);
                if rng.chance(200) {
                    ev.send("ReconciliationFailed", target, &mut rng);
                    if rng.chance(500) {
                        ev.send("ReconciliationSucceeded", target, &mut rng);
                    }
                } else {
                    ev.send("ReconciliationSucceeded", target, &mut rng);
                }
                phase.flux.push(ev.groups);
            }
        }
        phase.sweep = p % 3 == 2 || p + 1 == phases;
        out.push(phase);
    }
    (out, next)
}

/// One side of the comparison: its instances, the topic they share.
struct Side {
    apps: Vec<TestApp>,
    bus: FakeServiceBus,
}

async fn side(instances: usize, tables: String, prefix: &str) -> Side {
    let bus = FakeServiceBus::start().await;
    let mut apps = Vec::new();
    for _ in 0..instances {
        let mut vars = default_vars();
        vars.insert("FLUXTRAIL_TABLES".into(), tables.clone());
        vars.insert("FLUXTRAIL_TABLES_PREFIX".into(), prefix.to_string());
        vars.insert(
            "FLUXTRAIL_SERVICEBUS".into(),
            format!("Endpoint=sb://{SB_NAMESPACE}.servicebus.windows.net/;SharedAccessKeyName={SB_KEY_NAME};SharedAccessKey={SB_KEY}"),
        );
        vars.insert("FLUXTRAIL_SERVICEBUS_ENDPOINT".into(), bus.url());
        vars.insert("FLUXTRAIL_PUBLISH_RETRY_BASE".into(), "20ms".into());
        vars.insert("FLUXTRAIL_STALL_AFTER".into(), "10m".into());
        apps.push(spawn_exact(vars).await);
    }
    Side { apps, bus }
}

/// Sends one delivery to a random instance until one accepts it (a host or Flux retrying).
/// Returns how many refusals it took.
async fn deliver(side: &Side, d: &Delivery, rng: &std::sync::Mutex<Rng>) -> u64 {
    for refused in 0..200 {
        let i = rng.lock().unwrap().below(side.apps.len() as u64) as usize;
        let app = &side.apps[i];
        let status = match d {
            Delivery::Git { id, body } => app
                .post_git(
                    "github",
                    &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", id)],
                    body,
                )
                .await
                .status(),
            Delivery::Flux { cluster, body } => app
                .post_flux(&format!("/api/hooks/flux/{cluster}"), body)
                .await
                .status(),
        };
        if status.is_success() {
            return refused;
        }
        assert!(
            status.is_server_error(),
            "a delivery is refused only for a while: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a delivery was refused 200 times");
}

async fn sweep_all(side: &Side, now: DateTime<Utc>) {
    let sweeps = side.apps.iter().map(|app| async move {
        let mut last = String::new();
        for _ in 0..50 {
            let r = app
                .client
                .post(app.url("/Sweep"))
                .json(&timer(now))
                .send()
                .await
                .unwrap();
            if r.status().is_success() {
                return;
            }
            last = format!("{} {}", r.status(), r.text().await.unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("a sweep kept failing: {last}");
    });
    futures_util::future::join_all(sweeps).await;
}

/// Sends per-object lists of groups: objects concurrently, an object's groups in order, a
/// group's deliveries at once. Returns the refusals met.
async fn send_objects(side: &Side, objects: &[Vec<Group>], rng: &std::sync::Mutex<Rng>) -> u64 {
    let objects = objects.iter().map(|groups| async move {
        let mut n = 0;
        for group in groups {
            let sent = group.iter().map(|d| deliver(side, d, rng));
            n += futures_util::future::join_all(sent)
                .await
                .into_iter()
                .sum::<u64>();
        }
        n
    });
    futures_util::future::join_all(objects)
        .await
        .into_iter()
        .sum()
}

/// Runs the log on a side. Returns the refusals the senders met.
async fn play(side: &Side, phases: &[Phase], seed: u64, now: DateTime<Utc>) -> u64 {
    let rng = std::sync::Mutex::new(Rng::new(seed ^ 0xA5A5));
    let mut refused = 0;
    for phase in phases {
        refused += send_objects(side, &phase.early, &rng).await;
        for d in &phase.pushes {
            refused += deliver(side, d, &rng).await;
        }
        refused += send_objects(side, &phase.flux, &rng).await;
        if phase.sweep {
            sweep_all(side, now).await;
        }
    }
    refused
}

/// Server times (a push's receipt, when a sweep noticed something) differ between two runs;
/// cluster times (2026-11 here) do not. Every string that is a time within a day of now is
/// the server's: replaced by a placeholder.
fn normalise(v: &mut Value, now: DateTime<Utc>) {
    match v {
        Value::String(s) => {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                if (t.with_timezone(&Utc) - now).num_hours().abs() < 24 {
                    *s = "<server time>".into();
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| normalise(x, now)),
        Value::Object(m) => m.values_mut().for_each(|x| normalise(x, now)),
        _ => {}
    }
}

#[derive(Debug, PartialEq)]
struct Outcome {
    evidence: BTreeMap<u32, Value>,
    objects: Value,
    incidents: Value,
    /// The audit feed (part 10): every page of the whole history, and its coverage.
    changes: Vec<Value>,
    summary: Value,
    /// Delivery metrics over the whole history, without push-to-apply (server times).
    dora: Value,
    /// The message ids of the objects (`group.*` ones differ with the order incidents open
    /// and close in, see `group_invariants`).
    messages: BTreeSet<String>,
    /// What breaks the groups' exactly-once rules (empty: nothing).
    group_errors: Vec<String>,
    /// How many `group.*` messages the topic holds.
    group_messages: usize,
}

/// Waits until the outbox is empty and the topic stops growing, then reads everything.
async fn outcome(side: &Side, commits: u32, now: DateTime<Utc>) -> (Outcome, usize) {
    let app = &side.apps[0];
    let mut last = usize::MAX;
    for _ in 0..400 {
        let (_, h) = app.get_json("/api/health").await;
        let n = side.bus.accepted_all().len();
        if h["outbox"]["pending"] == 0 && h["outbox"]["dead"] == 0 && n == last {
            break;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut evidence = BTreeMap::new();
    for n in 1..commits {
        let (status, mut ev) = app.evidence(&c(n)).await;
        assert!(status.is_success(), "commit {n}: {status}");
        normalise(&mut ev, now);
        evidence.insert(n, ev);
    }
    let (_, mut objects) = app.get_json("/api/objects").await;
    normalise(&mut objects, now);
    let (_, mut incidents) = app.get_json("/api/incidents").await;
    normalise(&mut incidents, now);
    let window = "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";
    let mut changes = vec![];
    let mut cursor = String::new();
    loop {
        let (status, mut page) = app
            .get_json(&format!("/api/changes?limit=97&{window}{cursor}"))
            .await;
        assert!(status.is_success(), "changes: {status} {page}");
        let next = page["next"].as_str().map(str::to_string);
        if let Some(rows) = page["changes"].as_array_mut() {
            for row in rows.iter_mut() {
                normalise(row, now);
                changes.push(row.clone());
            }
        }
        match next {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let (_, mut summary) = app
        .get_json(&format!("/api/changes/summary?{window}"))
        .await;
    normalise(&mut summary, now);
    let (status, mut dora) = app.get_json(&format!("/api/dora?{window}")).await;
    assert!(status.is_success(), "dora: {status} {dora}");
    if let Some(clusters) = dora["clusters"].as_array_mut() {
        for figures in clusters {
            figures
                .as_object_mut()
                .expect("figures")
                .remove("pushToApplySeconds");
        }
    }
    if let Some(fleet) = dora["fleet"].as_object_mut() {
        fleet.remove("pushToApplySeconds");
    }
    let group_errors = group_invariants(side).await;
    let requests = side.bus.requests();
    let handed_twice = requests.len() - side.bus.accepted().len();
    let messages = side.bus.accepted().iter().map(|r| r.message_id()).collect();
    (
        Outcome {
            evidence,
            objects,
            incidents,
            changes,
            summary,
            dora,
            messages,
            group_errors,
            group_messages: side.bus.accepted_all().len() - side.bus.accepted().len(),
        },
        handed_twice,
    )
}

/// The groups' rules (contract §9) over what one side's topic holds and `/api/groups` says.
/// Not compared with the other side: which incidents share a group depends on the order
/// they open and close in (a cause that fails again after its group resolved opens a new
/// one), and the two sides see different orders. What must hold in any order: every
/// incident message names a group, a recovery its failure's; each group named is opened
/// exactly once; each resolved group is resolved exactly once, listing all its members; an
/// open group has an open member and no `group.resolved`; every incident is in one group.
async fn group_invariants(side: &Side) -> Vec<String> {
    let mut errors = vec![];
    let messages: Vec<Value> = side
        .bus
        .accepted_all()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let of = |t: &str| {
        messages
            .iter()
            .filter(|m| m["type"] == format!("io.fluxtrail.{t}").as_str())
            .collect::<Vec<_>>()
    };
    let mut incident_group: BTreeMap<String, String> = BTreeMap::new();
    for m in of("apply.failed") {
        let (Some(i), Some(g)) = (
            m["data"]["incidentId"].as_str(),
            m["data"]["groupId"].as_str(),
        ) else {
            errors.push(format!("apply.failed without incident or group: {m}"));
            continue;
        };
        if incident_group.entry(i.into()).or_insert_with(|| g.into()) != g {
            errors.push(format!("incident {i} in two groups"));
        }
    }
    for m in of("apply.recovered") {
        let i = m["data"]["incidentId"].as_str().unwrap_or_default();
        if incident_group.get(i).map(String::as_str) != m["data"]["groupId"].as_str() {
            errors.push(format!("recovery of {i} in another group than its failure"));
        }
    }
    let count = |t: &str| {
        let mut n: BTreeMap<String, usize> = BTreeMap::new();
        for m in of(t) {
            *n.entry(m["data"]["groupId"].as_str().unwrap_or_default().into())
                .or_default() += 1;
        }
        n
    };
    let (opened, resolved) = (count("group.opened"), count("group.resolved"));
    let named: BTreeSet<&String> = incident_group.values().collect();
    for g in &named {
        if opened.get(*g) != Some(&1) {
            errors.push(format!("group {g}: {:?} group.opened", opened.get(*g)));
        }
    }
    let app = &side.apps[0];
    let mut listed: BTreeMap<String, Value> = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app.get_json(&format!("/api/groups?limit=7{cursor}")).await;
        assert!(status.is_success(), "groups: {status} {page}");
        for g in page["groups"].as_array().unwrap() {
            let id = g["groupId"].as_str().unwrap().to_string();
            if listed.insert(id.clone(), g.clone()).is_some() {
                errors.push(format!("group {id} listed twice"));
            }
        }
        match page["next"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let mut members_listed = BTreeSet::new();
    for (id, g) in &listed {
        let members = g["members"].as_array().unwrap();
        let open = members.iter().filter(|m| m["state"] == "open").count();
        for m in members {
            members_listed.insert(m["incidentId"].as_str().unwrap().to_string());
        }
        match g["state"].as_str() {
            Some("resolved") => {
                if resolved.get(id) != Some(&1) || open != 0 {
                    errors.push(format!(
                        "resolved group {id}: {:?} group.resolved, {open} open members",
                        resolved.get(id)
                    ));
                }
                let announced = of("group.resolved")
                    .into_iter()
                    .find(|m| m["data"]["groupId"] == id.as_str())
                    .map(|m| m["data"]["memberCount"].clone());
                if announced != Some(g["memberCount"].clone()) {
                    errors.push(format!(
                        "group {id}: group.resolved announced {announced:?} members, {} listed",
                        g["memberCount"]
                    ));
                }
            }
            _ => {
                if resolved.contains_key(id) || open == 0 {
                    errors.push(format!(
                        "open group {id}: {:?} group.resolved, {open} open members",
                        resolved.get(id)
                    ));
                }
            }
        }
        if !named.contains(id) {
            errors.push(format!("group {id} listed but named by no apply.failed"));
        }
    }
    let incidents: BTreeSet<String> = incident_group.keys().cloned().collect();
    if incidents != members_listed {
        errors.push(format!(
            "incidents not in a listed group: {:?}; members without an apply.failed: {:?}",
            incidents.difference(&members_listed).collect::<Vec<_>>(),
            members_listed.difference(&incidents).collect::<Vec<_>>()
        ));
    }
    errors
}

/// What differs between two outcomes, as paths (empty: none).
fn divergences(a: &Outcome, b: &Outcome) -> Vec<String> {
    let mut out = vec![];
    for (n, ev) in &a.evidence {
        if b.evidence.get(n) != Some(ev) {
            out.push(format!(
                "commit {n}: one instance {ev}\n  scaled out {}",
                b.evidence.get(n).unwrap_or(&Value::Null)
            ));
        }
    }
    if a.objects != b.objects {
        out.push(format!("objects:\n  {}\n  {}", a.objects, b.objects));
    }
    if a.incidents != b.incidents {
        out.push(format!("incidents:\n  {}\n  {}", a.incidents, b.incidents));
    }
    if a.changes != b.changes {
        let first = a
            .changes
            .iter()
            .zip(&b.changes)
            .position(|(x, y)| x != y)
            .unwrap_or(a.changes.len().min(b.changes.len()));
        out.push(format!(
            "changes ({} and {} rows) differ from row {first}:\n  {}\n  {}",
            a.changes.len(),
            b.changes.len(),
            a.changes.get(first).unwrap_or(&Value::Null),
            b.changes.get(first).unwrap_or(&Value::Null)
        ));
    }
    if a.summary != b.summary {
        out.push(format!("summary:\n  {}\n  {}", a.summary, b.summary));
    }
    if a.dora != b.dora {
        out.push(format!("dora:\n  {}\n  {}", a.dora, b.dora));
    }
    for (side, o) in [("one instance", a), ("scaled out", b)] {
        for e in &o.group_errors {
            out.push(format!("groups, {side}: {e}"));
        }
    }
    if a.messages != b.messages {
        out.push(format!(
            "messages only with one instance {:?}, only scaled out {:?}",
            a.messages.difference(&b.messages).collect::<Vec<_>>(),
            b.messages.difference(&a.messages).collect::<Vec<_>>()
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs Azurite: scripts/test.sh starts it and runs the ignored tests"]
async fn many_instances_with_faults_end_in_the_one_instance_state() {
    let runs: u64 = std::env::var("FLUXTRAIL_SCALEOUT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let first: u64 = std::env::var("FLUXTRAIL_SCALEOUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let azurite = crate::store::azurite();
    let upstream = crate::store::azurite_endpoint(&azurite);
    let faults = Faults {
        refuse: 60,
        lose: 40,
        delay: 40,
        precondition: 30,
        outage: 25,
    };
    let (mut total_events, mut total_faults, mut total_refused, mut total_twice) = (0, 0, 0, 0);
    let mut failures = vec![];
    for seed in first..first + runs {
        let (phases, commits) = workload(seed);
        let events: usize = phases
            .iter()
            .map(|p| {
                let groups = |g: &Vec<Vec<Group>>| g.iter().flatten().map(Vec::len).sum::<usize>();
                p.pushes.len() + groups(&p.early) + groups(&p.flux)
            })
            .sum();
        let now = Utc::now() + chrono::Duration::hours(2);
        // One instance, no faults.
        let one = side(1, azurite.clone(), &crate::store::unique_prefix()).await;
        play(&one, &phases, seed, now).await;
        let (want, _) = outcome(&one, commits, Utc::now()).await;
        drop(one);
        // 2–3 instances behind the proxy, with faults; reads at the end without them.
        let proxy = FaultProxy::start(&upstream, Faults::NONE, seed).await;
        let instances = 2 + (seed % 2) as usize;
        let many = side(
            instances,
            proxy.connection_string(),
            &crate::store::unique_prefix(),
        )
        .await;
        proxy.set(faults);
        let refused = play(&many, &phases, seed, now).await;
        // Let the outboxes finish under faults for a moment, then without.
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.set(Faults::NONE);
        let (got, twice) = outcome(&many, commits, Utc::now()).await;
        let injected = proxy.counts.injected();
        let diverged = divergences(&want, &got);
        println!(
            "scale-out run seed={seed}: {instances} instances, {events} deliveries, {} store requests, {injected} faults injected (refused {}, lost {}, delayed {}, 412 {}, outages {}), {refused} deliveries refused and retried, {} messages ({twice} handed over twice, deduplicated) and {} group messages, {} divergences",
            proxy.counts.requests.load(Ordering::Relaxed),
            proxy.counts.refused.load(Ordering::Relaxed),
            proxy.counts.lost.load(Ordering::Relaxed),
            proxy.counts.delayed.load(Ordering::Relaxed),
            proxy.counts.preconditions.load(Ordering::Relaxed),
            proxy.counts.outages.load(Ordering::Relaxed),
            want.messages.len(),
            got.group_messages,
            diverged.len(),
        );
        assert!(!want.messages.is_empty() && want.evidence.len() > 5 && !want.changes.is_empty());
        total_events += events;
        total_faults += injected;
        total_refused += refused;
        total_twice += twice;
        if !diverged.is_empty() {
            failures.push(format!("seed {seed}:\n{}", diverged.join("\n")));
        }
    }
    println!(
        "scale-out total: {runs} runs, {total_events} deliveries, {total_faults} faults injected, {total_refused} refusals retried, {total_twice} messages handed over twice (deduplicated), {} runs diverged",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
