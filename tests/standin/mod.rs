//! A stand-in for the Git hosts' APIs (GitHub, GitLab, Azure DevOps, Gitea): serves the
//! documented answers under `tests/fixtures/api/` (the example sha replaced by the one
//! asked for), keeps a rate limit with the hosts' headers, and misbehaves on request (down,
//! slow, 401, 404, 429 with `Retry-After`, GitHub's secondary 403, malformed JSON).
//! Used by the integration tests and by `examples/git_api_standin.rs` (the benchmark's).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;

const GITHUB_SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";
const GITLAB_SHA: &str = "6104942438c14ec7bd21c6cd5bd995272b3faff6";
const AZURE_SHA: &str = "be67f8871a4d2c75f13a51c1d3c30ac0d74d4ef4";
const GITEA_SHA: &str = "5f2ac6e3b3ac1c0b7f7d2f0b39d2f7d1f3e3a2b1";

/// One scripted answer, taken before the normal one.
#[derive(Debug, Clone)]
pub enum Scripted {
    Status(u16),
    /// 429 with `Retry-After: secs`.
    RetryAfter(u64),
    /// GitHub's secondary limit: 403, its documented body, requests still remaining.
    Secondary,
    /// The normal answer, after this long.
    Slow(Duration),
    /// 200 with a body that is not JSON.
    Malformed,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub private_token: Option<String>,
    pub status: u16,
}

#[derive(Debug, Default)]
struct Limit {
    per_window: u64,
    window_secs: u64,
    window: u64,
    used: u64,
}

#[derive(Debug, Default)]
struct State {
    seen: Vec<Seen>,
    script: VecDeque<Scripted>,
    down: bool,
    limit: Option<Limit>,
    /// Requests refused for exceeding the limit.
    refused: u64,
    /// 304 answers (conditional requests).
    not_modified: u64,
    /// Shas the host does not know (404).
    unknown: HashSet<String>,
    /// Commits without a pull request.
    no_pull: HashSet<String>,
    /// `(base, head)` → the commits between, oldest first.
    compare: HashMap<(String, String), Vec<String>>,
    /// Records requests (off for the benchmark's long runs).
    record: bool,
}

#[derive(Clone)]
pub struct StandIn {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn fixture(path: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/api")
        .join(path);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn with_sha(v: &Value, example: &str, sha: &str) -> Value {
    serde_json::from_str(&v.to_string().replace(example, sha)).unwrap()
}

impl StandIn {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            record: true,
            ..Default::default()
        }));
        let fixtures = Arc::new(Fixtures::load());
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, f) = (s.clone(), fixtures.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (s, f) = (s.clone(), f.clone());
                        async move { Ok::<_, hyper::Error>(answer(&s, &f, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        StandIn { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.lock().unwrap().script.extend(answers);
    }
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }
    pub fn set_record(&self, record: bool) {
        self.state.lock().unwrap().record = record;
    }
    /// `per_window` requests per `window_secs` (windows aligned to the epoch).
    pub fn set_limit(&self, per_window: u64, window_secs: u64) {
        self.state.lock().unwrap().limit = Some(Limit {
            per_window,
            window_secs,
            ..Default::default()
        });
    }
    pub fn unknown(&self, sha: &str) {
        self.state.lock().unwrap().unknown.insert(sha.to_string());
    }
    pub fn no_pull(&self, sha: &str) {
        self.state.lock().unwrap().no_pull.insert(sha.to_string());
    }
    pub fn compare(&self, base: &str, head: &str, commits: &[String]) {
        self.state
            .lock()
            .unwrap()
            .compare
            .insert((base.to_string(), head.to_string()), commits.to_vec());
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
    pub fn refused(&self) -> u64 {
        self.state.lock().unwrap().refused
    }
    pub fn not_modified(&self) -> u64 {
        self.state.lock().unwrap().not_modified
    }
}

struct Fixtures {
    files: HashMap<&'static str, Value>,
    /// The same as text: the hot answers are a string replace, not a JSON round trip (the
    /// stand-in shares the benchmark's two cores with the server).
    texts: HashMap<&'static str, String>,
}

impl Fixtures {
    fn load() -> Self {
        let names = [
            "github/commit.json",
            "github/commit-pulls.json",
            "github/pull.json",
            "github/reviews.json",
            "github/compare.json",
            "github/secondary-limit.json",
            "gitlab/commit.json",
            "gitlab/commit-merge-requests.json",
            "gitlab/approvals.json",
            "gitlab/compare.json",
            "azuredevops/commit.json",
            "azuredevops/pullrequestquery.json",
            "azuredevops/commits.json",
            "gitea/commit.json",
            "gitea/commit-pull.json",
            "gitea/reviews.json",
            "gitea/compare.json",
        ];
        let files: HashMap<&'static str, Value> =
            names.into_iter().map(|n| (n, fixture(n))).collect();
        let texts = files.iter().map(|(n, v)| (*n, v.to_string())).collect();
        Fixtures { files, texts }
    }
    /// A fixture's text with its example sha replaced.
    fn text(&self, name: &str, example: &str, sha: &str) -> Reply {
        (
            200,
            vec![],
            self.texts[name].replace(example, sha).into_bytes(),
        )
    }
    fn get(&self, name: &str) -> &Value {
        &self.files[name]
    }
}

type Reply = (u16, Vec<(String, String)>, Vec<u8>);

fn json(status: u16, v: &Value) -> Reply {
    (status, vec![], v.to_string().into_bytes())
}

fn not_found() -> Reply {
    json(404, &serde_json::json!({"message": "Not Found"}))
}

/// A list of commits in a fixture's shape, one per sha (`template`: the fixture's first).
fn commits_like(template: &Value, example_sha: &str, shas: &[String]) -> Vec<Value> {
    shas.iter()
        .enumerate()
        .map(|(i, sha)| {
            let mut c = with_sha(template, example_sha, sha);
            for key in ["message", "comment"] {
                if c.get(key).is_some() {
                    c[key] = format!("backfilled commit {i}").into();
                }
            }
            if c.get("commit").is_some() {
                c["commit"]["message"] = format!("backfilled commit {i}").into();
            }
            c
        })
        .collect()
}

async fn answer(
    state: &Mutex<State>,
    f: &Fixtures,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (authorization, private_token, if_none_match) = (
        header("authorization"),
        header("private-token"),
        header("if-none-match"),
    );
    let host = header("host").unwrap_or_default();
    let _ = req.into_body().collect().await;
    if path == "/_standin/stats" {
        // Not a host's endpoint: the benchmark's look at what was refused (not counted).
        let s = state.lock().unwrap();
        let body = serde_json::json!({"refused": s.refused, "notModified": s.not_modified});
        return Response::new(Full::new(Bytes::from(body.to_string())));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Script, outage and limit first.
    let (scripted, limit_headers, refused) = {
        let mut s = state.lock().unwrap();
        let scripted = if s.down {
            Some(Scripted::Status(503))
        } else {
            s.script.pop_front()
        };
        let mut limit_headers = vec![];
        let mut refused = false;
        if let Some(l) = s.limit.as_mut() {
            let window = now / l.window_secs;
            if window != l.window {
                l.window = window;
                l.used = 0;
            }
            let reset = (window + 1) * l.window_secs;
            if l.used >= l.per_window {
                refused = true;
            } else {
                l.used += 1;
            }
            limit_headers = vec![
                ("x-ratelimit-limit".to_string(), l.per_window.to_string()),
                (
                    "x-ratelimit-remaining".to_string(),
                    (l.per_window - l.used).to_string(),
                ),
                ("x-ratelimit-reset".to_string(), reset.to_string()),
            ];
        }
        if refused {
            s.refused += 1;
        }
        (scripted, limit_headers, refused)
    };
    let mut reply: Reply = if refused {
        json(
            403,
            &serde_json::json!({"message": "API rate limit exceeded for installation.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}),
        )
    } else {
        match scripted {
            Some(Scripted::Status(code)) => json(code, &serde_json::json!({"message": "scripted"})),
            Some(Scripted::RetryAfter(secs)) => {
                let mut r = json(429, &serde_json::json!({"message": "Too Many Requests"}));
                r.1.push(("retry-after".into(), secs.to_string()));
                r
            }
            Some(Scripted::Secondary) => json(403, f.get("github/secondary-limit.json")),
            Some(Scripted::Malformed) => (200, vec![], b"<html>proxy error</html>".to_vec()),
            Some(Scripted::Slow(d)) => {
                tokio::time::sleep(d).await;
                route(state, f, &method, &path, &query, if_none_match.as_deref())
            }
            None => route(state, f, &method, &path, &query, if_none_match.as_deref()),
        }
    };
    for (_, v) in reply.1.iter_mut() {
        *v = v.replace("{host}", &host);
    }
    reply.1.extend(limit_headers);
    {
        let mut s = state.lock().unwrap();
        if reply.0 == 304 {
            s.not_modified += 1;
        }
        if s.record {
            s.seen.push(Seen {
                method,
                path: format!("{path}?{query}"),
                authorization,
                private_token,
                status: reply.0,
            });
        }
    }
    let mut resp = Response::builder()
        .status(reply.0)
        .header("content-type", "application/json");
    for (k, v) in reply.1 {
        resp = resp.header(k, v);
    }
    resp.body(Full::new(Bytes::from(reply.2))).unwrap()
}

fn route(
    state: &Mutex<State>,
    f: &Fixtures,
    method: &str,
    path: &str,
    query: &str,
    if_none_match: Option<&str>,
) -> Reply {
    let s = state.lock().unwrap();
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let known = |sha: &str| !s.unknown.contains(sha);
    let compare = |base: &str, head: &str| {
        s.compare
            .get(&(base.to_string(), head.to_string()))
            .cloned()
    };
    match seg.as_slice() {
        // GitHub
        ["repos", _, _, "commits", sha] => {
            if !known(sha) {
                return not_found();
            }
            let etag = format!("W/\"{sha}\"");
            if if_none_match == Some(etag.as_str()) {
                return (304, vec![("etag".into(), etag)], vec![]);
            }
            let mut r = f.text("github/commit.json", GITHUB_SHA, sha);
            r.1.push(("etag".into(), etag));
            r
        }
        ["repos", _, _, "commits", sha, "pulls"] => {
            if s.no_pull.contains(*sha) {
                return json(200, &serde_json::json!([]));
            }
            json(
                200,
                &with_sha(f.get("github/commit-pulls.json"), GITHUB_SHA, sha),
            )
        }
        ["repos", _, _, "pulls", _n] => json(200, f.get("github/pull.json")),
        ["repos", o, r, "pulls", n, "reviews"] => {
            // Two pages: the first review, then the rest.
            let all = f.get("github/reviews.json").as_array().unwrap().clone();
            if query.contains("page=2") {
                json(200, &Value::Array(all[1..].to_vec()))
            } else {
                let mut r0 = json(200, &Value::Array(all[..1].to_vec()));
                r0.1.push((
                    "link".into(),
                    format!("<http://{{host}}/repos/{o}/{r}/pulls/{n}/reviews?per_page=100&page=2>; rel=\"next\""),
                ));
                r0
            }
        }
        ["repos", _, _, "compare", basehead] => {
            let Some((base, head)) = basehead.split_once("...") else {
                return not_found();
            };
            let Some(shas) = compare(base, head) else {
                return not_found();
            };
            let mut body = f.get("github/compare.json").clone();
            let template = body["commits"][0].clone();
            body["commits"] =
                commits_like(&template, "7638417db6d59f3c431d3e1f261cc637155684cd", &shas).into();
            body["total_commits"] = shas.len().into();
            json(200, &body)
        }
        // GitLab
        ["api", "v4", "projects", _, "repository", "commits", sha] => {
            if !known(sha) {
                return not_found();
            }
            f.text("gitlab/commit.json", GITLAB_SHA, sha)
        }
        ["api", "v4", "projects", _, "repository", "commits", sha, "merge_requests"] => {
            if s.no_pull.contains(*sha) {
                return json(200, &serde_json::json!([]));
            }
            json(
                200,
                &with_sha(f.get("gitlab/commit-merge-requests.json"), GITLAB_SHA, sha),
            )
        }
        ["api", "v4", "projects", _, "merge_requests", _, "approvals"] => {
            json(200, f.get("gitlab/approvals.json"))
        }
        ["api", "v4", "projects", _, "repository", "compare"] => {
            let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            let Some(shas) = compare(&q["from"], &q["to"]) else {
                return not_found();
            };
            let mut body = f.get("gitlab/compare.json").clone();
            let template = body["commits"][0].clone();
            body["commits"] =
                commits_like(&template, "12d65c8dd2b2676fa3ac47d955accc085a37a9c1", &shas).into();
            json(200, &body)
        }
        // Gitea / Forgejo
        ["api", "v1", "repos", _, _, "git", "commits", sha] => {
            if !known(sha) {
                return not_found();
            }
            f.text("gitea/commit.json", GITEA_SHA, sha)
        }
        ["api", "v1", "repos", _, _, "commits", sha, "pull"] => {
            if s.no_pull.contains(*sha) {
                return not_found();
            }
            json(
                200,
                &with_sha(f.get("gitea/commit-pull.json"), GITEA_SHA, sha),
            )
        }
        ["api", "v1", "repos", _, _, "pulls", _, "reviews"] => {
            json(200, f.get("gitea/reviews.json"))
        }
        ["api", "v1", "repos", _, _, "compare", basehead] => {
            let Some((base, head)) = basehead.split_once("...") else {
                return not_found();
            };
            let Some(shas) = compare(base, head) else {
                return not_found();
            };
            let mut body = f.get("gitea/compare.json").clone();
            let template = body["commits"][0].clone();
            body["commits"] = commits_like(&template, GITEA_SHA, &shas).into();
            body["total_commits"] = shas.len().into();
            json(200, &body)
        }
        // Azure DevOps
        [_, _, "_apis", "git", "repositories", _, "commits", sha] => {
            if !known(sha) {
                return not_found();
            }
            json(
                200,
                &with_sha(f.get("azuredevops/commit.json"), AZURE_SHA, sha),
            )
        }
        [_, _, "_apis", "git", "repositories", _, "pullrequestquery"] if method == "POST" => {
            // The stand-in answers for the example commit only when asked about it; any
            // other commit gets its own copy.
            json(200, f.get("azuredevops/pullrequestquery.json"))
        }
        [_, _, "_apis", "git", "repositories", _, "commits"] => {
            let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            let (Some(head), Some(base)) = (
                q.get("searchCriteria.itemVersion.version"),
                q.get("searchCriteria.compareVersion.version"),
            ) else {
                return not_found();
            };
            let Some(mut shas) = compare(base, head) else {
                return not_found();
            };
            shas.reverse(); // newest first, as Azure DevOps lists them
            let skip: usize = q.get("$skip").and_then(|v| v.parse().ok()).unwrap_or(0);
            let top: usize = q.get("$top").and_then(|v| v.parse().ok()).unwrap_or(100);
            let page: Vec<String> = shas.into_iter().skip(skip).take(top).collect();
            let mut body = f.get("azuredevops/commits.json").clone();
            let template = body["value"][1].clone();
            body["value"] = commits_like(&template, AZURE_SHA, &page).into();
            body["count"] = page.len().into();
            json(200, &body)
        }
        _ => not_found(),
    }
}
