//! Micro-benchmarks (criterion): the per-request CPU work, without I/O.
//!
//!     cargo bench --bench micro
//!
//! - verify + parse a real-shaped GitHub push of 20 commits (~10 KB), and each other host's push;
//! - parse + classify a Flux event; parse revisions;
//! - one correlation-core transition (an object re-applying its revision: the steady state).

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fluxtrail::config::{SecretPair, Secrets};
use fluxtrail::core::{self, Context};
use fluxtrail::domain::Revision;
use fluxtrail::git::signature::sign_sha256_hex;
use fluxtrail::git::{self, Delivery, Provider};
use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;

fn fixture(p: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(p),
    )
    .unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn github_push_20() -> Vec<u8> {
    let mut v: serde_json::Value =
        serde_json::from_slice(&fixture("git/github/push-forced.json")).unwrap();
    let template = v["commits"][0].clone();
    let commits: Vec<serde_json::Value> = (0..20)
        .map(|i| {
            let mut c = template.clone();
            let sha = format!("{:040x}", i + 1);
            c["id"] = sha.clone().into();
            c["url"] = format!("https://github.com/acme/fleet-infra/commit/{sha}").into();
            c["message"] =
                format!("apps: change {i}\n\nA longer description of the change, as commits have.")
                    .into();
            c
        })
        .collect();
    v["after"] = commits[19]["id"].clone();
    v["head_commit"] = commits[19].clone();
    v["commits"] = commits.into();
    serde_json::to_vec(&v).unwrap()
}

fn secrets(s: &str) -> Secrets {
    let p = SecretPair::new(Some(s), None);
    Secrets {
        github: p.clone(),
        gitlab: p.clone(),
        bitbucket: p.clone(),
        gitea: p.clone(),
        azuredevops_basic: p.clone(),
        flux_hmac: p.clone(),
        flux_token: p,
    }
}

fn git(c: &mut Criterion) {
    let key = "bench-secret";
    let s = secrets(key);
    let gh = github_push_20();
    println!("github push: {} bytes", gh.len());
    let cases: Vec<(&str, Provider, Vec<u8>, HeaderMap)> = vec![
        (
            "github push 20 commits",
            Provider::GitHub,
            gh.clone(),
            headers(&[
                ("x-github-event", "push"),
                ("x-github-delivery", "d"),
                (
                    "x-hub-signature-256",
                    &format!("sha256={}", sign_sha256_hex(key.as_bytes(), &gh)),
                ),
            ]),
        ),
        (
            "gitlab push",
            Provider::GitLab,
            fixture("git/gitlab/push.json"),
            headers(&[("x-gitlab-event", "Push Hook"), ("x-gitlab-token", key)]),
        ),
        (
            "azuredevops push",
            Provider::AzureDevOps,
            fixture("git/azuredevops/git-push.json"),
            {
                use base64::Engine;
                headers(&[(
                    "authorization",
                    &format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(key)
                    ),
                )])
            },
        ),
        (
            "bitbucket push",
            Provider::Bitbucket,
            fixture("git/bitbucket/repo-push.json"),
            {
                let b = fixture("git/bitbucket/repo-push.json");
                headers(&[
                    ("x-event-key", "repo:push"),
                    (
                        "x-hub-signature",
                        &format!("sha256={}", sign_sha256_hex(key.as_bytes(), &b)),
                    ),
                ])
            },
        ),
        (
            "bitbucket-server push",
            Provider::BitbucketServer,
            fixture("git/bitbucket-server/refs-changed.json"),
            {
                let b = fixture("git/bitbucket-server/refs-changed.json");
                headers(&[
                    ("x-event-key", "repo:refs_changed"),
                    (
                        "x-hub-signature",
                        &format!("sha256={}", sign_sha256_hex(key.as_bytes(), &b)),
                    ),
                ])
            },
        ),
        (
            "gitea push",
            Provider::Gitea,
            fixture("git/gitea/push.json"),
            {
                let b = fixture("git/gitea/push.json");
                headers(&[
                    ("x-gitea-event", "push"),
                    ("x-gitea-signature", &sign_sha256_hex(key.as_bytes(), &b)),
                ])
            },
        ),
    ];
    for (name, provider, body, h) in &cases {
        c.bench_function(&format!("verify+parse {name}"), |b| {
            b.iter(|| {
                let d = Delivery {
                    headers: h,
                    body,
                    form: false,
                };
                git::authenticate(*provider, &s, false, &d).unwrap();
                black_box(git::parse(*provider, &d).unwrap());
            })
        });
    }
}

fn flux(c: &mut Criterion) {
    let key = "bench-key";
    let s = secrets(key);
    let body = fixture("flux/kustomization-succeeded.json");
    let h = headers(&[(
        "x-signature",
        &format!("sha256={}", sign_sha256_hex(key.as_bytes(), &body)),
    )]);
    let now = chrono::Utc::now();
    c.bench_function("verify+parse+classify flux event", |b| {
        b.iter(|| {
            fluxtrail::flux::authenticate(&s, false, &h, &body).unwrap();
            let e = fluxtrail::flux::parse(&body, Some("prod-eu"), "default", now).unwrap();
            black_box(fluxtrail::flux::classify(&e));
        })
    });
    let revisions = [
        "main@sha1:731f7eaddfb6af01cb2173e18f0f75b0ba780ef1",
        "refs/heads/main@sha1:731f7eaddfb6af01cb2173e18f0f75b0ba780ef1",
        "main/731f7eaddfb6af01cb2173e18f0f75b0ba780ef1",
        "6.5.4+0a1b2c3d4e5f",
        "latest@sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
    ];
    c.bench_function("parse 5 revisions", |b| {
        b.iter(|| {
            for r in revisions {
                black_box(Revision::parse(r).commit());
            }
        })
    });
    // The steady state: the object re-applies the revision it applied before.
    let first = fluxtrail::flux::parse(&body, Some("prod-eu"), "default", now).unwrap();
    let mut second_body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    second_body["timestamp"] = "2026-08-07T10:25:30Z".into();
    let second = fluxtrail::flux::parse(
        &serde_json::to_vec(&second_body).unwrap(),
        Some("prod-eu"),
        "default",
        now,
    )
    .unwrap();
    let class = fluxtrail::flux::classify(&first);
    let state = core::apply_event(None, &first, class, &Context::default(), now).state;
    c.bench_function("core transition (steady-state apply)", |b| {
        b.iter(|| {
            black_box(core::apply_event(
                Some(state.clone()),
                &second,
                class,
                &Context::default(),
                now,
            ))
        })
    });
}

criterion_group!(benches, git, flux);
criterion_main!(benches);
