//! The real binary as the Functions host runs it: `FUNCTIONS_CUSTOMHANDLER_PORT`, readiness on
//! `GET /`, SIGKILL after an acknowledged delivery (nothing lost), SIGTERM (clean exit).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::helpers::*;

fn sigterm(child: &Child) {
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

fn start(dir: &std::path::Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fluxtrail"))
        .arg("serve")
        .env_clear()
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FLUXTRAIL_LISTEN", "0.0.0.0:1") // ignored: the host's port wins
        .env("FLUXTRAIL_DATA_DIR", dir)
        .env("FLUXTRAIL_GITHUB_SECRET", GITHUB_SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn acknowledged_deliveries_survive_sigkill_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let port = free_port();
    let mut child = start(dir.path(), port);
    wait_ready(&client, port).await;

    let body = fixture("github/push-forced.json");
    let mut req = client
        .post(format!(
            "http://127.0.0.1:{port}/api/hooks/git/github?code=functionkey"
        ))
        .header("content-type", "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "kill-1")
        .body(body.clone());
    for (k, v) in sign("github", &body) {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), StatusCode::ACCEPTED);

    child.kill().unwrap(); // SIGKILL: no shutdown path runs
    child.wait().unwrap();

    let port = free_port();
    let mut child = start(dir.path(), port);
    wait_ready(&client, port).await;
    let resp = client
        .get(format!(
            "http://127.0.0.1:{port}/api/commits/731f7eaddfb6af01cb2173e18f0f75b0ba780ef1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ev: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(ev["commit"]["refs"], serde_json::json!(["refs/heads/main"]));

    // SIGTERM: graceful shutdown, exit status 0.
    sigterm(&child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn configuration_errors_exit_2_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_fluxtrail"))
        .env_clear()
        .env("FLUXTRAIL_STALL_AFTER", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLUXTRAIL_STALL_AFTER"));
    let out = Command::new(env!("CARGO_BIN_EXE_fluxtrail"))
        .arg("bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // The insecure switch under the Functions host: refused before anything listens.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fluxtrail"))
        .arg("serve")
        .env_clear()
        .env("FLUXTRAIL_DATA_DIR", dir.path())
        .env("FLUXTRAIL_INSECURE_ALLOW_UNSIGNED", "true")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", free_port().to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FLUXTRAIL_INSECURE_ALLOW_UNSIGNED") && stderr.contains("Functions host"),
        "{stderr}"
    );
}

/// Contract §1: secrets, signatures, `code` query values and `x-functions-key` never appear in
/// the logs, at any level.
#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("stdout.log");
    // The Git host's API (part 12): its token is used for real requests, at trace.
    let host_api = crate::standin::StandIn::start().await;
    let api_token = "ghp_api-token-7f3e2d1c";
    let mut child = Command::new(env!("CARGO_BIN_EXE_fluxtrail"))
        .arg("serve")
        .env_clear()
        .env("FLUXTRAIL_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLUXTRAIL_DATA_DIR", dir.path())
        .env("FLUXTRAIL_GITHUB_SECRET", GITHUB_SECRET)
        .env("FLUXTRAIL_FLUX_HMAC_KEY", FLUX_HMAC_KEY)
        .env("FLUXTRAIL_API_TOKEN", API_TOKEN)
        .env("FLUXTRAIL_GITHUB_API_TOKEN", api_token)
        .env("FLUXTRAIL_GITHUB_API_URL", host_api.url())
        .env("FLUXTRAIL_BACKFILL_DELAY", "0s")
        .env("RUST_LOG", "trace")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_ready(&client, port).await;
    // On the API's host, so that the applied commit's approval is asked for.
    let body = String::from_utf8(fixture("github/push-forced.json"))
        .unwrap()
        .replace("github.com", "127.0.0.1")
        .into_bytes();
    let signature = sign("github", &body).remove(0).1;
    let function_key = "fn-key-5d3c0b7e";
    let code = "code-query-9a8b7c6d";
    // Accepted, refused (wrong signature), and a read with the token.
    for sig in [signature.clone(), format!("sha256={}", "0".repeat(64))] {
        client
            .post(format!(
                "http://127.0.0.1:{port}/api/hooks/git/github?code={code}"
            ))
            .header("content-type", "application/json")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "log-1")
            .header("X-Hub-Signature-256", &sig)
            .header("x-functions-key", function_key)
            .body(body.clone())
            .send()
            .await
            .unwrap();
    }
    let flux = flux_event("kustomization-health-failed.json", |_| {});
    let flux_sig = format!(
        "sha256={}",
        fluxtrail::git::signature::sign_sha256_hex(FLUX_HMAC_KEY.as_bytes(), &flux)
    );
    client
        .post(format!(
            "http://127.0.0.1:{port}/api/hooks/flux/prod-eu?code={code}"
        ))
        .header("content-type", "application/json")
        .header("x-signature", &flux_sig)
        .body(flux)
        .send()
        .await
        .unwrap();
    client
        .get(format!("http://127.0.0.1:{port}/api/commits/731f7eaddfb6af01cb2173e18f0f75b0ba780ef1?code={code}"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    // An apply of the pushed commit: the backfill asks the host for its pull request.
    let applied = flux_event("kustomization-succeeded.json", |v| {
        v["metadata"]["revision"] =
            serde_json::json!("main@sha1:731f7eaddfb6af01cb2173e18f0f75b0ba780ef1");
    });
    let applied_sig = format!(
        "sha256={}",
        fluxtrail::git::signature::sign_sha256_hex(FLUX_HMAC_KEY.as_bytes(), &applied)
    );
    let r = client
        .post(format!("http://127.0.0.1:{port}/api/hooks/flux/prod-eu"))
        .header("content-type", "application/json")
        .header("x-signature", &applied_sig)
        .body(applied)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !host_api
        .seen()
        .iter()
        .any(|r| r.authorization.as_deref() == Some(&format!("Bearer {api_token}")))
    {
        assert!(Instant::now() < deadline, "the host's API was asked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    child.wait().unwrap();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.lines().count() > 10,
        "trace logging was on: {} lines",
        logs.lines().count()
    );
    let sig_hex = signature.trim_start_matches("sha256=");
    let flux_hex = flux_sig.trim_start_matches("sha256=");
    for secret in [
        GITHUB_SECRET,
        FLUX_HMAC_KEY.trim(),
        API_TOKEN,
        api_token,
        function_key,
        code,
        sig_hex,
        flux_hex,
    ] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 2,000 clients connect and stop talking (half of them mid-request-line): the process stays
/// within a bounded amount of memory and a new client is served at once.
#[tokio::test]
async fn two_thousand_idle_connections_cost_bounded_memory_and_new_clients_are_served() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start(dir.path(), port);
    let client = reqwest::Client::new();
    wait_ready(&client, port).await;
    let before = rss_kib(child.id());
    let mut idle = Vec::new();
    for i in 0..2000 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        if i % 2 == 0 {
            s.write_all(b"POST /api/hooks/git/github HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let resp = client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    let after = rss_kib(child.id());
    eprintln!(
        "2,000 idle connections: RSS {before} KiB -> {after} KiB (+{} KiB), new request answered in {waited:?}",
        after.saturating_sub(before)
    );
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(waited < Duration::from_millis(500), "{waited:?}");
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "2,000 idle connections grew RSS by {} KiB",
        after - before
    );
    drop(idle);
    child.kill().unwrap();
    child.wait().unwrap();
}
