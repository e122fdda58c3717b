//! The Functions side agrees with the server: every route a `function.json` template exposes
//! is served, every server route Azure should reach is exposed, and `host.json` is what the
//! custom-handler protocol needs.

use std::collections::BTreeSet;
use std::path::Path;

use fluxtrail::http::FUNCTION_ROUTES;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The templates with their placeholders filled as `scripts/package.sh` fills them.
fn templates() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("function.json-templates")).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path().join("function.json")).unwrap();
        let rendered = text
            .replace("{{AUTH_LEVEL}}", "function")
            .replace("{{SWEEP_SCHEDULE}}", "0 */1 * * * *")
            .replace("\"{{SWEEP_RETRIES}}\"", "3")
            .replace("{{SWEEP_RETRY_DELAY}}", "00:00:30");
        assert!(
            !rendered.contains("{{"),
            "unknown placeholder in {}",
            entry.path().display()
        );
        out.push((
            entry.file_name().into_string().unwrap(),
            serde_json::from_str(&rendered).unwrap(),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// (function, method, path) as the host would forward it.
fn exposed() -> BTreeSet<(String, String, String)> {
    let host: Value =
        serde_json::from_slice(&std::fs::read(root().join("host.json")).unwrap()).unwrap();
    let prefix = host["extensions"]["http"]["routePrefix"].as_str().unwrap();
    templates()
        .into_iter()
        .map(|(name, f)| {
            let b = &f["bindings"][0];
            match b["type"].as_str().unwrap() {
                "httpTrigger" => {
                    assert_eq!(
                        f["bindings"].as_array().unwrap().len(),
                        2,
                        "{name}: one httpTrigger in, one http out (forwarding)"
                    );
                    assert_eq!(f["bindings"][1]["type"], "http");
                    let methods = b["methods"].as_array().unwrap();
                    assert_eq!(methods.len(), 1, "{name}");
                    (
                        name,
                        methods[0].as_str().unwrap().to_uppercase(),
                        format!("/{prefix}/{}", b["route"].as_str().unwrap()),
                    )
                }
                "timerTrigger" => {
                    assert!(
                        b["schedule"].as_str().unwrap().split_whitespace().count() == 6,
                        "{name}: NCRONTAB with seconds"
                    );
                    (name.clone(), "POST".to_string(), format!("/{name}"))
                }
                other => panic!("{name}: unexpected trigger {other}"),
            }
        })
        .collect()
}

#[test]
fn templates_and_server_routes_are_the_same_set() {
    let server: BTreeSet<(String, String, String)> = FUNCTION_ROUTES
        .iter()
        .map(|(n, m, p)| (n.to_string(), m.to_string(), p.to_string()))
        .collect();
    assert_eq!(exposed(), server);
}

#[tokio::test]
async fn every_exposed_route_is_served() {
    let app = spawn_app().await;
    for (name, method, path) in exposed() {
        let path = path
            .replace("{provider}", "github")
            .replace("{cluster}", "prod-eu")
            .replace("{sha}", "6113728f27ae82c7b1a177c8d03f9e96e0adf246")
            .replace(
                "{*path}",
                "commits/6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            );
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{name}: {method} {path}"
        );
        assert!(
            !(status == StatusCode::NOT_FOUND && body["error"]["code"] == "not_found"),
            "{name}: {method} {path} is not routed"
        );
    }
}

#[test]
fn host_json_runs_the_handler_with_forwarding() {
    let host: Value =
        serde_json::from_slice(&std::fs::read(root().join("host.json")).unwrap()).unwrap();
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "handler"
    );
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], true);
    assert_eq!(
        host["extensionBundle"]["id"],
        "Microsoft.Azure.Functions.ExtensionBundle"
    );
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
}
