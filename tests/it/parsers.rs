//! Data-driven parser tests: every fixture under `tests/fixtures/git/` is parsed and the
//! result compared with its `*.expected.json` beside it. After a deliberate change, run
//! with `UPDATE_EXPECT=1` and review the diff of the expected files like code.

use std::path::{Path, PathBuf};

use fluxtrail::git::{self, Delivery, Provider};
use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    provider: String,
    file: String,
    headers: std::collections::BTreeMap<String, String>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/git")
}

#[test]
fn every_fixture_parses_to_its_expected_event() {
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(fixtures().join("cases.json")).unwrap()).unwrap();
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let provider = Provider::from_segment(&case.provider).expect("known provider");
        let body = std::fs::read(fixtures().join(&case.file)).unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in &case.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let delivery = Delivery {
            headers: &headers,
            body: &body,
            form: false,
        };
        let parsed =
            git::parse(provider, &delivery).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        let actual = serde_json::to_string_pretty(&serde_json::json!({
            "deliveryId": parsed.delivery_id,
            "event": parsed.event,
        }))
        .unwrap()
            + "\n";
        let expected_path = fixtures().join(case.file.replace(".json", ".expected.json"));
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} missing; run with UPDATE_EXPECT=1",
                expected_path.display()
            )
        });
        if expected != actual {
            failures.push(format!("--- {}\n{actual}", case.file));
        }
    }
    assert!(
        failures.is_empty(),
        "parsed events differ from expected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn form_encoded_github_delivery_parses_like_json() {
    let json = std::fs::read(fixtures().join("github/push-new-branch.json")).unwrap();
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&json).unwrap())
        .finish();
    let mut headers = HeaderMap::new();
    headers.insert("x-github-event", HeaderValue::from_static("push"));
    headers.insert("x-github-delivery", HeaderValue::from_static("d-1"));
    let from_json = git::parse(
        Provider::GitHub,
        &Delivery {
            headers: &headers,
            body: &json,
            form: false,
        },
    )
    .unwrap();
    let from_form = git::parse(
        Provider::GitHub,
        &Delivery {
            headers: &headers,
            body: form.as_bytes(),
            form: true,
        },
    )
    .unwrap();
    assert_eq!(from_json, from_form);
}

#[test]
fn malformed_payloads_are_typed_errors() {
    let mut headers = HeaderMap::new();
    headers.insert("x-github-event", HeaderValue::from_static("push"));
    let d = |body: &'static [u8]| Delivery {
        headers: &headers,
        body,
        form: false,
    };
    assert!(matches!(
        git::parse(Provider::GitHub, &d(b"{not json")),
        Err(git::ParseError::Json(_))
    ));
    assert!(matches!(
        git::parse(Provider::GitHub, &d(br#"{"ref":"refs/heads/x","before":"zz","after":"00","repository":{"clone_url":"https://github.com/a/b"}}"#)),
        Err(git::ParseError::Invalid { field: "before", .. })
    ));
    assert!(matches!(
        git::parse(
            Provider::GitHub,
            &Delivery {
                headers: &headers,
                body: b"a=b",
                form: true
            }
        ),
        Err(git::ParseError::Form)
    ));
    let none = HeaderMap::new();
    assert_eq!(
        git::parse(
            Provider::GitLab,
            &Delivery {
                headers: &none,
                body: b"{}",
                form: false
            }
        ),
        Err(git::ParseError::MissingHeader("x-gitlab-event"))
    );
}
