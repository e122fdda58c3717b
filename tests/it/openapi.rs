//! `openapi.yaml` stays true to the code: every route the server answers is described with its
//! methods, nothing else is, and the error codes it lists are exactly those `ApiError` has.
//! (Bodies are checked against the schemas by schemathesis, in the test command.)

use std::collections::BTreeSet;
use std::path::Path;

use fluxtrail::http::FUNCTION_ROUTES;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// (METHOD, path) of every operation: paths are the keys two spaces in under `paths:`,
/// methods the keys four spaces in under a path.
fn operations(yaml: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path = None;
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if let (Some(p), Some(m)) = (
            &path,
            line.strip_prefix("    ")
                .and_then(|l| l.strip_suffix(':'))
                .filter(|m| {
                    ["get", "post", "put", "patch", "delete", "head", "options"].contains(m)
                }),
        ) {
            out.insert((m.to_ascii_uppercase(), p.clone()));
        }
    }
    out
}

#[test]
fn every_route_is_described_and_nothing_else() {
    let described = operations(&read("openapi.yaml"));
    let mut served: BTreeSet<(String, String)> = FUNCTION_ROUTES
        .iter()
        // A Functions catch-all (`{*path}`) is an OpenAPI path parameter (`{path}`).
        .map(|(_, m, p)| (m.to_string(), p.replace("{*", "{")))
        .collect();
    // The host's readiness probe, not a function.
    served.insert(("GET".into(), "/".into()));
    served.insert(("HEAD".into(), "/".into()));
    assert_eq!(described, served);
}

#[test]
fn the_error_codes_listed_are_the_codes_the_server_sends() {
    let yaml = read("openapi.yaml");
    let start = yaml
        .find("            code:")
        .expect("Error.code in openapi.yaml");
    let listed: BTreeSet<String> = yaml[start..]
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("enum:"))
        .skip(1)
        .map_while(|l| l.trim_start().strip_prefix("- ").map(str::to_string))
        .collect();
    // Each `(StatusCode::X, "code")` of `ApiError::status_and_code`.
    let source = read("src/http/error.rs");
    let mut sent = BTreeSet::new();
    for piece in source.split("(StatusCode::").skip(1) {
        let rest = piece.trim_start_matches(|c: char| c.is_ascii_uppercase() || c == '_');
        if let Some(code) = rest
            .trim_start_matches([',', ' ', '\n'])
            .strip_prefix('"')
            .and_then(|r| r.split('"').next())
        {
            sent.insert(code.to_string());
        }
    }
    assert!(sent.len() > 15, "{sent:?}");
    assert_eq!(listed, sent);
}
