//! `spawn_app`: the real server on port 0 over a temporary data directory, with helpers to
//! send deliveries signed the way each host signs them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use fluxtrail::config::Settings;
use fluxtrail::git::signature::sign_sha256_hex;
use fluxtrail::startup::Application;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::fake_sb::FakeServiceBus;

pub const GITHUB_SECRET: &str = "gh-secret-\u{1F511}";
pub const GITLAB_TOKEN: &str = "gl-token-123";
pub const BITBUCKET_SECRET: &str = "bb-secret";
pub const GITEA_SECRET: &str = "gitea-secret";
pub const AZURE_BASIC: &str = "fluxtrail:az-password";
pub const API_TOKEN: &str = "read-token";
pub const FLUX_HMAC_KEY: &str = "flux-hmac-key\n";
pub const FLUX_TOKEN: &str = "flux-bearer-token";

pub struct TestApp {
    pub addr: SocketAddr,
    /// The Service Bus stand-in, when messages go there (see [`spawn_app`]).
    pub service_bus: Option<FakeServiceBus>,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    vars: HashMap<String, String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

/// Every secret configured, read API protected.
pub fn default_vars() -> HashMap<String, String> {
    [
        ("FLUXTRAIL_LISTEN", "127.0.0.1:0"),
        ("FLUXTRAIL_GITHUB_SECRET", GITHUB_SECRET),
        ("FLUXTRAIL_GITLAB_TOKEN", GITLAB_TOKEN),
        ("FLUXTRAIL_BITBUCKET_SECRET", BITBUCKET_SECRET),
        ("FLUXTRAIL_GITEA_SECRET", GITEA_SECRET),
        ("FLUXTRAIL_AZUREDEVOPS_BASIC", AZURE_BASIC),
        ("FLUXTRAIL_API_TOKEN", API_TOKEN),
        ("FLUXTRAIL_FLUX_HMAC_KEY", FLUX_HMAC_KEY),
        ("FLUXTRAIL_FLUX_TOKEN", FLUX_TOKEN),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The namespace and key the Service Bus tests sign with.
pub const SB_NAMESPACE: &str = "fluxtrail-test";
pub const SB_KEY_NAME: &str = "SendOnly";
pub const SB_KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";

/// The app with every secret configured. Messages go to the local sink, or, when
/// `FLUXTRAIL_TEST_PUBLISHER=servicebus`, to a Service Bus stand-in (the test command runs the
/// Flux suite both ways).
pub async fn spawn_app() -> TestApp {
    if std::env::var("FLUXTRAIL_TEST_PUBLISHER").as_deref() == Ok("servicebus") {
        return spawn_with_service_bus(default_vars()).await;
    }
    spawn_with(default_vars()).await
}

/// The app publishing to a fresh Service Bus stand-in.
pub async fn spawn_with_service_bus(mut vars: HashMap<String, String>) -> TestApp {
    let sb = FakeServiceBus::start().await;
    vars.insert(
        "FLUXTRAIL_SERVICEBUS".into(),
        format!("Endpoint=sb://{SB_NAMESPACE}.servicebus.windows.net/;SharedAccessKeyName={SB_KEY_NAME};SharedAccessKey={SB_KEY}"),
    );
    vars.insert("FLUXTRAIL_SERVICEBUS_ENDPOINT".into(), sb.url());
    vars.entry("FLUXTRAIL_PUBLISH_RETRY_BASE".into())
        .or_insert_with(|| "20ms".into());
    vars.entry("FLUXTRAIL_PUBLISH_TIMEOUT".into())
        .or_insert_with(|| "500ms".into());
    let mut app = spawn_with(vars).await;
    app.service_bus = Some(sb);
    app
}

/// `FLUXTRAIL_TEST_LOG=<file>`: every server the suite starts logs there, at `RUST_LOG`'s level
/// (the test command runs the whole suite at `trace` and searches the file for secrets).
fn trace_to_file() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(path) = std::env::var_os("FLUXTRAIL_TEST_LOG") else {
            return;
        };
        let file = std::fs::File::create(path).expect("FLUXTRAIL_TEST_LOG is writable");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .try_init();
    });
}

pub async fn spawn_with(mut vars: HashMap<String, String>) -> TestApp {
    trace_to_file();
    // `FLUXTRAIL_TEST_STORE=tables`: the same suite on Table Storage (Azurite), each app with
    // tables of its own (kept across `restart`).
    if std::env::var("FLUXTRAIL_TEST_STORE").as_deref() == Ok("tables") {
        vars.insert("FLUXTRAIL_TABLES".into(), crate::store::azurite());
        vars.insert(
            "FLUXTRAIL_TABLES_PREFIX".into(),
            crate::store::unique_prefix(),
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut app = start(vars, tmp.path()).await;
    app._tmp = Some(tmp);
    app
}

/// The server with exactly these variables (no test-store override), over a temporary data
/// directory.
pub async fn spawn_exact(vars: HashMap<String, String>) -> TestApp {
    trace_to_file();
    let tmp = tempfile::tempdir().unwrap();
    let mut app = start(vars, tmp.path()).await;
    app._tmp = Some(tmp);
    app
}

async fn start(mut vars: HashMap<String, String>, dir: &Path) -> TestApp {
    vars.insert("FLUXTRAIL_DATA_DIR".into(), dir.display().to_string());
    let settings = Settings::from_vars(|k| vars.get(k).cloned()).unwrap();
    let app = Application::build(settings).await.expect("server starts");
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        service_bus: None,
        client: reqwest::Client::new(),
        data_dir: dir.to_path_buf(),
        vars,
        stop: Some(tx),
        task: Some(task),
        _tmp: None,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server gracefully and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut fresh = start(self.vars.clone(), &self.data_dir).await;
        self.addr = fresh.addr;
        self.stop = fresh.stop.take();
        self.task = fresh.task.take();
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// A JSON POST to a Git hook, not signed.
    pub fn hook(&self, provider: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(&format!("/api/hooks/git/{provider}")))
            .header("content-type", "application/json")
    }

    /// POSTs a delivery to a Git hook, signed as the host would sign it.
    pub async fn post_git(
        &self,
        provider: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> reqwest::Response {
        let mut req = self.hook(provider).body(body.to_vec());
        for (k, v) in sign(provider, body) {
            req = req.header(k, v);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// POSTs a fixture file with the headers its host sends for that event.
    pub async fn post_fixture(
        &self,
        provider: &str,
        file: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        self.post_git(provider, headers, &fixture(file)).await
    }

    /// POSTs the fixture of a successful apply (`kustomization-succeeded.json`) to a Flux
    /// hook and checks it was accepted.
    pub async fn report_applied(&self, path: &str) {
        let r = self
            .post_flux(path, &flux_event("kustomization-succeeded.json", |_| {}))
            .await;
        assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    }

    /// POSTs a Flux event to `path` (`/api/hooks/flux[/cluster]`), signed like `generic-hmac`.
    pub async fn post_flux(&self, path: &str, body: &[u8]) -> reqwest::Response {
        flux_request(&self.client, &self.url(path), body)
            .send()
            .await
            .unwrap()
    }

    /// POST without a body on the API with the token.
    pub async fn post_json(&self, path: &str) -> (reqwest::StatusCode, Value) {
        self.api(self.client.post(self.url(path))).await
    }

    /// GET on the read API with the token.
    pub async fn get_json(&self, path: &str) -> (reqwest::StatusCode, Value) {
        self.api(self.client.get(self.url(path))).await
    }

    /// Sends an API request with the token: its status and JSON body (`null` without one).
    async fn api(&self, req: reqwest::RequestBuilder) -> (reqwest::StatusCode, Value) {
        let resp = req.bearer_auth(API_TOKEN).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The CloudEvents about objects published so far (everything but `group.*`, which
    /// `group_messages` has): the local sink's lines, or the bodies Service Bus accepted.
    pub fn messages(&self) -> Vec<Value> {
        let mut all = self.all_messages();
        all.retain(|m| !is_group_message(m));
        all
    }

    /// The `group.*` CloudEvents published so far (contract §9).
    pub fn group_messages(&self) -> Vec<Value> {
        let mut all = self.all_messages();
        all.retain(is_group_message);
        all
    }

    /// Every CloudEvent published so far, in the order published.
    pub fn all_messages(&self) -> Vec<Value> {
        if let Some(sb) = &self.service_bus {
            return sb
                .accepted_all()
                .iter()
                .map(|r| serde_json::from_slice(&r.body).unwrap())
                .collect();
        }
        let text =
            std::fs::read_to_string(self.data_dir.join("messages.jsonl")).unwrap_or_default();
        // Only whole lines: the sink may be appending one as this reads.
        let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
        whole
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (bounded) until at least `n` group messages were published, and returns them.
    pub async fn wait_group_messages(&self, n: usize) -> Vec<Value> {
        for _ in 0..300 {
            let m = self.group_messages();
            if m.len() >= n {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.group_messages()
    }

    /// Waits (bounded) until the sink holds at least `n` messages, and returns them.
    pub async fn wait_messages(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.messages()
    }

    pub async fn evidence(&self, sha: &str) -> (reqwest::StatusCode, Value) {
        self.get_json(&format!("/api/commits/{sha}")).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A GitHub push body (from `github/push-forced.json`) of `commits` (`(n, sha)`, oldest first,
/// messages `commit {n}`) to `git_ref`, from `before` (`None`: the ref is created), in
/// repository `repo` (`owner/name`; `None`: the fixture's).
pub fn github_push(
    repo: Option<&str>,
    git_ref: &str,
    before: Option<String>,
    commits: &[(u32, String)],
    forced: bool,
) -> Vec<u8> {
    let mut p: Value = serde_json::from_slice(&fixture("github/push-forced.json")).unwrap();
    let list: Vec<Value> = commits
        .iter()
        .map(|(n, sha)| {
            serde_json::json!({"id": sha, "message": format!("commit {n}"),
                   "timestamp": "2026-11-02T09:00:00Z",
                   "author": {"name": "Dana Ops", "email": "dana@acme.example", "username": "dana-ops"}})
        })
        .collect();
    if let Some(repo) = repo {
        let (owner, name) = repo.split_once('/').unwrap();
        let r = &mut p["repository"];
        r["name"] = name.into();
        r["full_name"] = repo.into();
        r["owner"]["login"] = owner.into();
        r["owner"]["name"] = owner.into();
        for k in ["html_url", "url"] {
            r[k] = format!("https://github.com/{repo}").into();
        }
        r["clone_url"] = format!("https://github.com/{repo}.git").into();
        r["ssh_url"] = format!("git@github.com:{repo}.git").into();
        r["git_url"] = format!("git://github.com/{repo}.git").into();
    }
    p["ref"] = git_ref.into();
    p["before"] = before.clone().unwrap_or_else(|| "0".repeat(40)).into();
    p["created"] = before.is_none().into();
    p["after"] = commits.last().unwrap().1.clone().into();
    p["forced"] = forced.into();
    p["head_commit"] = list.last().cloned().unwrap();
    p["commits"] = list.into();
    serde_json::to_vec(&p).unwrap()
}

/// A Flux event fixture, with fields overridden (`"timestamp"`, `"message"`, `metadata.*`).
pub fn flux_event(file: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/flux")
        .join(file);
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

pub fn fixture(file: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/git")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The authentication headers each host sends for `body`.
pub fn sign(provider: &str, body: &[u8]) -> Vec<(String, String)> {
    let hmac = |secret: &str| sign_sha256_hex(secret.as_bytes(), body);
    let h = |k: &str, v: String| vec![(k.to_string(), v)];
    match provider {
        "github" => h(
            "X-Hub-Signature-256",
            format!("sha256={}", hmac(GITHUB_SECRET)),
        ),
        "gitlab" => h("X-Gitlab-Token", GITLAB_TOKEN.to_string()),
        "azuredevops" => h(
            "Authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(AZURE_BASIC)
            ),
        ),
        "bitbucket" | "bitbucket-server" => h(
            "X-Hub-Signature",
            format!("sha256={}", hmac(BITBUCKET_SECRET)),
        ),
        "gitea" => h("X-Gitea-Signature", hmac(GITEA_SECRET)),
        "forgejo" => h("X-Forgejo-Signature", hmac(GITEA_SECRET)),
        _ => vec![],
    }
}

/// A port nobody listens on now (for servers started as processes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `GET /` like the Functions host (every 25 ms) until a server process answers.
pub async fn wait_ready(client: &reqwest::Client, port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/")).send().await {
            assert_eq!(r.status(), reqwest::StatusCode::OK);
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not become ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// A Flux event POST to `url`, signed like NC's `generic-hmac` provider.
pub fn flux_request(client: &reqwest::Client, url: &str, body: &[u8]) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("gotk-component", "kustomize-controller")
        .header(
            "x-signature",
            format!("sha256={}", sign_sha256_hex(FLUX_HMAC_KEY.as_bytes(), body)),
        )
        .body(body.to_vec())
}

/// The custom-handler timer invocation for `POST /Sweep` with `Metadata.sys.UtcNow`.
pub fn timer(utc_now: chrono::DateTime<chrono::Utc>) -> Value {
    serde_json::json!({
        "Data": {"timer": {
            "Schedule": {"AdjustForDST": true},
            "ScheduleStatus": {"Last": "2025-01-01T10:00:00+00:00", "Next": "2025-01-01T10:05:00+00:00", "LastUpdated": "2025-01-01T10:00:00.01+00:00"},
            "IsPastDue": false}},
        "Metadata": {"sys": {"MethodName": "Sweep", "UtcNow": utc_now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "RandGuid": "b03493d4-a708-4dd1-a384-d38e56765d43"}}
    })
}

pub async fn sweep_at(app: &TestApp, minutes: i64) -> Value {
    let resp = app
        .client
        .post(app.url("/Sweep"))
        .header("content-type", "application/json")
        .json(&timer(
            chrono::Utc::now() + chrono::Duration::minutes(minutes),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["Outputs"], serde_json::json!({}));
    assert_eq!(body["ReturnValue"], Value::Null);
    assert!(body["Logs"].as_array().is_some_and(|l| !l.is_empty()));
    body
}

pub fn is_group_message(m: &Value) -> bool {
    m["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("io.fluxtrail.group."))
}

/// The CloudEvent types of `messages`, without the `io.fluxtrail.` prefix.
pub fn types(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            m["type"]
                .as_str()
                .unwrap()
                .trim_start_matches("io.fluxtrail.")
                .to_string()
        })
        .collect()
}
