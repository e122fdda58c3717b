//! Shared drivers of the fuzz targets. Each target is one line calling one of these, so the
//! invariants live in one place. See RELIABILITY.md for how they are run and what they found.

use chrono::{TimeZone, Utc};
use fluxtrail::config::{SecretPair, Secrets};
use fluxtrail::git::{self, AuthError, Delivery, Provider};
use hmac::{Hmac, Mac};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

pub const SECRET: &str = "fuzz-secret";

/// The real event headers of each host (one set per event kind it sends).
pub fn event_headers(provider: Provider) -> &'static [&'static [(&'static str, &'static str)]] {
    match provider {
        Provider::GitHub => &[
            &[("x-github-event", "push"), ("x-github-delivery", "d-1")],
            &[("x-github-event", "pull_request")],
            &[
                ("x-github-event", "pull_request_review"),
                ("x-github-delivery", "d-2"),
            ],
            &[("x-github-event", "ping")],
        ],
        Provider::GitLab => &[
            &[("x-gitlab-event", "Push Hook"), ("idempotency-key", "k-1")],
            &[("x-gitlab-event", "Tag Push Hook")],
            &[("x-gitlab-event", "Merge Request Hook")],
            &[("x-gitlab-event", "System Hook")],
        ],
        Provider::AzureDevOps => &[&[]],
        Provider::Bitbucket => &[
            &[("x-event-key", "repo:push"), ("x-request-uuid", "u-1")],
            &[("x-event-key", "pullrequest:fulfilled")],
            &[("x-event-key", "pullrequest:approved")],
        ],
        Provider::BitbucketServer => &[
            &[
                ("x-event-key", "repo:refs_changed"),
                ("x-request-id", "r-1"),
            ],
            &[("x-event-key", "pr:merged")],
            &[("x-event-key", "pr:reviewer:approved")],
            &[("x-event-key", "diagnostics:ping")],
        ],
        Provider::Gitea | Provider::Forgejo => &[
            &[("x-gitea-event", "push"), ("x-gitea-delivery", "g-1")],
            &[
                ("x-forgejo-event", "pull_request"),
                ("x-forgejo-event-type", "pull_request"),
            ],
            &[("x-gitea-event", "pull_request_approved")],
            &[("x-gitea-event-type", "pull_request_review_approved")],
        ],
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// One delivery to `provider`'s parser. Byte 0 picks the event header set (one past the last
/// means none) and, with its top bit, a form-encoded body; the rest is the body.
/// Invariants: no panic; a parsed event serialises and has a delivery id.
pub fn git_parse(provider: Provider, data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let sets = event_headers(provider);
    let pick = (sel & 0x0f) as usize % (sets.len() + 1);
    let map = sets.get(pick).map(|s| headers(s)).unwrap_or_default();
    let form = sel & 0x80 != 0 && provider.accepts_form();
    let d = Delivery {
        headers: &map,
        body,
        form,
    };
    // Unconfigured and not insecure: always refused, whatever the delivery says.
    assert!(matches!(
        git::authenticate(provider, &Secrets::default(), false, &d),
        Err(AuthError::NotConfigured(_))
    ));
    if let Ok(parsed) = git::parse(provider, &d) {
        assert!(!parsed.delivery_id.is_empty());
        serde_json::to_vec(&parsed.event).expect("a parsed event serialises");
    }
}

fn secrets() -> Secrets {
    let pair = SecretPair::new(Some(SECRET), Some("fuzz-previous"));
    Secrets {
        github: pair.clone(),
        gitlab: pair.clone(),
        bitbucket: pair.clone(),
        gitea: pair.clone(),
        azuredevops_basic: SecretPair::new(Some("user:fuzz-secret"), None),
        flux_hmac: pair.clone(),
        flux_token: pair,
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Authentication of every source with arbitrary credential headers. Byte 0 picks the source
/// (and header), byte 1 the length of the header value; the rest is the body.
/// Invariants: no panic; a value that is not the right credential is refused; the right
/// signature over the same body is accepted.
pub fn signature(data: &[u8]) {
    let [sel, len, rest @ ..] = data else {
        return;
    };
    let n = (*len as usize).min(rest.len());
    let (value, body) = rest.split_at(n);
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let secrets = secrets();
    let good = sign(body);
    // (provider or None for Flux, header, the value that must be accepted)
    let cases: [(Option<Provider>, &str, String); 9] = [
        (
            Some(Provider::GitHub),
            "x-hub-signature-256",
            format!("sha256={good}"),
        ),
        (Some(Provider::GitLab), "x-gitlab-token", SECRET.to_string()),
        (
            Some(Provider::AzureDevOps),
            "authorization",
            "Basic dXNlcjpmdXp6LXNlY3JldA==".to_string(),
        ),
        (
            Some(Provider::Bitbucket),
            "x-hub-signature",
            format!("sha256={good}"),
        ),
        (
            Some(Provider::BitbucketServer),
            "x-hub-signature",
            format!("sha256={good}"),
        ),
        (Some(Provider::Gitea), "x-gitea-signature", good.clone()),
        (
            Some(Provider::Forgejo),
            "x-hub-signature-256",
            format!("sha256={good}"),
        ),
        (None, "x-signature", format!("sha256={good}")),
        (None, "authorization", format!("Bearer {SECRET}")),
    ];
    let (provider, header, right) = &cases[*sel as usize % cases.len()];
    let check = |value: HeaderValue| {
        let mut map = HeaderMap::new();
        map.insert(HeaderName::from_static(header), value);
        match provider {
            Some(p) => git::authenticate(
                *p,
                &secrets,
                false,
                &Delivery {
                    headers: &map,
                    body,
                    form: false,
                },
            )
            .is_ok(),
            None => fluxtrail::flux::authenticate(&secrets, false, &map, body).is_ok(),
        }
    };
    let accepted = check(value.clone());
    if accepted {
        // Only the right credential (modulo case of hex digits, surrounding blanks, the
        // scheme's case and the previous secret) may pass.
        let v = value
            .to_str()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let prev = |s: &str| s.replace(SECRET, "fuzz-previous");
        assert!(
            v == right.to_ascii_lowercase()
                || v.contains("fuzz-previous")
                || v == prev(right).to_ascii_lowercase()
                || v.starts_with("basic ")
                || v.starts_with("bearer "),
            "accepted a wrong credential {v:?} for {header}"
        );
    }
    assert!(
        check(HeaderValue::from_str(right).unwrap()),
        "refused the right credential"
    );
}

/// Flux events: parse, classify, read the revision, and feed the core twice.
/// Invariants: no panic; the second, identical event is a duplicate that emits nothing.
pub fn flux_event(data: &[u8]) {
    use fluxtrail::core::{apply_event, Context, Disposition};
    let received = Utc.timestamp_opt(1_786_000_000, 0).unwrap();
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let path_cluster = ["", "prod-eu", "a/b"][sel as usize % 3];
    let Ok(e) = fluxtrail::flux::parse(body, Some(path_cluster), "default", received) else {
        return;
    };
    assert!(e.message.len() <= fluxtrail::flux::MAX_MESSAGE + 64);
    let class = fluxtrail::flux::classify(&e);
    if let Some(r) = e.source_revision() {
        let _ = (
            r.commit(),
            r.candidate_refs(),
            r.pointer(),
            r.is_certainly_git(),
        );
    }
    let _ = e.object.subject();
    let ctx = Context::default();
    let first = apply_event(None, &e, class, &ctx, received);
    for m in &first.messages {
        let _ = m.to_cloudevent();
    }
    let again = apply_event(Some(first.state.clone()), &e, class, &ctx, received);
    assert_eq!(again.disposition, Disposition::Duplicate);
    assert!(again.messages.is_empty());
    assert_eq!(again.state, first.state);
}

/// Revisions and commit ids. Invariants: no panic; a commit found is one `CommitSha::parse`
/// accepts back from its own text.
pub fn revision(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let r = fluxtrail::domain::Revision::parse(&s);
    if let Some(c) = r.commit() {
        assert_eq!(fluxtrail::domain::CommitSha::parse(c.as_str()).unwrap(), c);
    }
    let _ = (r.candidate_refs(), r.pointer(), r.is_certainly_git());
    let _ = fluxtrail::domain::CommitSha::parse(&s);
    let _ = fluxtrail::domain::CommitSha::parse_optional(&s);
}

/// Repository URLs. Invariants: no panic; a key is canonical (its own key again), non-empty
/// and has a host and a path.
pub fn repo_url(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(k) = fluxtrail::domain::RepoKey::from_url(&s) {
        let again = fluxtrail::domain::RepoKey::from_url(k.as_str())
            .unwrap_or_else(|e| panic!("key {:?} of {s:?} does not parse: {e}", k.as_str()));
        assert_eq!(again, k, "key of {s:?} is not canonical");
        assert!(k.as_str().contains('/'));
    }
}

/// The form-encoded path: `payload=<json>` bodies. Invariants: no panic; a body we encode is
/// decoded back to exactly its JSON; GitHub's parser answers the form as it answers the JSON.
pub fn form_payload(data: &[u8]) {
    let map = headers(&[("x-github-event", "push"), ("x-github-delivery", "d")]);
    let d = Delivery {
        headers: &map,
        body: data,
        form: true,
    };
    let _ = d.json();
    let from_form = git::parse(Provider::GitHub, &d);
    if let Ok(text) = std::str::from_utf8(data) {
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("other", "x")
            .append_pair("payload", text)
            .finish();
        let d2 = Delivery {
            headers: &map,
            body: encoded.as_bytes(),
            form: true,
        };
        assert_eq!(d2.json().unwrap().as_ref(), data);
        let plain = Delivery {
            headers: &map,
            body: data,
            form: false,
        };
        assert_eq!(
            git::parse(Provider::GitHub, &d2).map(|p| p.event),
            git::parse(Provider::GitHub, &plain).map(|p| p.event)
        );
    }
    drop(from_form);
}

/// The correlation core fed with arbitrary sequences of pushes and Flux events.
/// Invariants: no panic; sending every event twice (NC's retries) ends in the same states,
/// target rows and message set as sending it once; a target row's object is the row's.
pub fn core_sequence(data: &[u8]) {
    use fluxtrail::core::sim::{ev, main_rev, obj, sha, World};
    const REASONS: [&str; 16] = [
        "ReconciliationSucceeded",
        "ReconciliationFailed",
        "HealthCheckFailed",
        "Progressing",
        "DependencyNotReady",
        "ArtifactFailed",
        "BuildFailed",
        "InstallSucceeded",
        "UpgradeSucceeded",
        "UpgradeFailed",
        "DriftDetected",
        "DriftCorrected",
        "NewArtifact",
        "Health check passed",
        "PruneFailed",
        "SomethingNew",
    ];
    let objects = [
        obj("prod-eu", "Kustomization", "apps"),
        obj("prod-us", "Kustomization", "apps"),
        obj("prod-eu", "HelmRelease", "podinfo"),
        obj("prod-eu", "GitRepository", "flux-system"),
    ];
    let messages = [
        "ok",
        "Deployment/apps/podinfo configured",
        "Service/apps/podinfo configured\nDeployment/apps/x unchanged",
        "failed",
    ];
    enum Step {
        Push(Option<u8>, Vec<u8>, bool, i64),
        Event(fluxtrail::flux::FluxEvent),
    }
    let mut steps = Vec::new();
    let mut at: i64 = 10;
    for chunk in data.chunks_exact(4) {
        let [a, b, c, d] = [chunk[0], chunk[1], chunk[2], chunk[3]];
        // Time mostly moves forward; sometimes stands still or steps back (stale events).
        at += [1, 1, 2, 0, -1, 5][(d >> 5) as usize % 6];
        if a & 0x0f == 0 {
            let before = (b & 0x07 != 0).then_some(b & 0x07);
            let commits: Vec<u8> = (0..1 + (c % 3)).map(|i| 1 + (c / 3 + i) % 8).collect();
            steps.push(Step::Push(before, commits, b & 0x80 != 0, at));
            continue;
        }
        let o = &objects[(a >> 4) as usize % objects.len()];
        let reason = REASONS[(b & 0x0f) as usize];
        let rev = match b >> 4 {
            0 => None,
            1 => Some(format!("1.0.{}", c % 4)),
            2 => Some(format!("latest@sha256:{}", "ab".repeat(32))),
            3 => Some(format!("sha1:{}", sha(1 + c % 8))),
            4 => Some(format!("refs/heads/main@sha1:{}", sha(1 + c % 8))),
            _ => Some(main_rev(1 + c % 8)),
        };
        let message = messages[(d & 0x03) as usize];
        steps.push(Step::Event(ev(o, reason, rev.as_deref(), at, message)));
    }
    let run = |twice: bool| {
        let mut w = World::default();
        for s in &steps {
            match s {
                Step::Push(before, commits, forced, at) => w.push(*before, commits, *forced, *at),
                Step::Event(e) => {
                    w.send(e);
                    if twice {
                        w.send(e);
                    }
                }
            }
        }
        for ((_, o), row) in &w.targets {
            assert_eq!(
                (&row.cluster, &row.kind, &row.namespace, &row.name),
                (&o.cluster, &o.kind, &o.namespace, &o.name)
            );
        }
        w.snapshot()
    };
    assert_eq!(run(false), run(true));
    core_orders(data);
}

/// Part 8's order-independence on histories built from the input (`core::sim::Story`):
/// the first half shapes the history, the second the arrival order. Every order of the
/// senders (forced pushes: each push before the reports of its commits) ends in the
/// in-order views; an event retried late or a concurrent pair swapped keeps every commit's
/// state; every run satisfies the contract's invariants (`World::check`).
pub fn core_orders(data: &[u8]) {
    use fluxtrail::core::sim::{Bytes, Story};
    let (shape, order) = data.split_at(data.len() / 2);
    let which = order
        .iter()
        .fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(usize::from(*b)));
    let late = usize::from(order.first().copied().unwrap_or(0) % 4);
    let swap = order.get(1).is_some_and(|b| b & 1 == 1);
    for forced in [false, true] {
        let story = Story::generate(&mut Bytes(shape), forced);
        story.assert_arrival_order_is_irrelevant(order, &[], forced);
        story.assert_disorder_keeps_every_commit_true(which, late, swap);
    }
}
