//! Hostile HTTP: slow clients, header floods, bodies over the limit without a length, bodies
//! that are not what they claim to be. Every case ends in the contract's status (or a closed
//! connection for clients that never finish a request), and the server goes on serving.
//!
//! Raw TCP where the client must misbehave in ways an HTTP library will not.

use std::time::{Duration, Instant};

use fluxtrail::git::signature::sign_sha256_hex;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// The server with a short request timeout so slow-client cases finish quickly.
async fn app() -> TestApp {
    let mut vars = default_vars();
    vars.insert("FLUXTRAIL_REQUEST_TIMEOUT".into(), "1s".into());
    vars.insert("FLUXTRAIL_FLUX_BODY_LIMIT".into(), "65536".into());
    spawn_with(vars).await
}

/// Reads until the server closes the connection (or `within` passes: then `None`).
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The server still answers a well-formed request promptly.
async fn still_serving(app: &TestApp) {
    let started = Instant::now();
    let resp = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a healthy client waited {:?}",
        started.elapsed()
    );
}

async fn nothing_recorded(app: &TestApp) {
    let (_, objects) = app.get_json("/api/objects").await;
    assert_eq!(
        objects["objects"].as_array().map(Vec::len),
        Some(0),
        "{objects}"
    );
}

fn signed_flux_head(body_len: usize, extra: &str) -> String {
    format!(
        "POST /api/hooks/flux HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {body_len}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_and_others_are_served() {
    let app = app().await;
    // Trickles its header lines one byte every 200 ms, forever.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST /api/hooks/flux HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        let started = Instant::now();
        for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            if slow.write_all(&[*b]).await.is_err() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        started.elapsed()
    });
    // Connects and says nothing.
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    still_serving(&app).await;
    // After one request, stays open without sending the next.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 64];
    let n = kept.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    assert!(
        read_to_close(&mut idle, Duration::from_secs(5))
            .await
            .is_some(),
        "an idle connection was kept past the timeout"
    );
    assert!(
        read_to_close(&mut kept, Duration::from_secs(5))
            .await
            .is_some(),
        "an idle keep-alive connection was kept past the timeout"
    );
    let trickled = trickle.await.unwrap();
    assert!(
        trickled < Duration::from_secs(5),
        "a client trickling headers was served for {trickled:?}"
    );
    still_serving(&app).await;
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_the_connection_is_closed() {
    let app = app().await;
    let body = flux_event("kustomization-succeeded.json", |_| {});
    let sig = sign_sha256_hex(FLUX_HMAC_KEY.as_bytes(), &body);
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(signed_flux_head(body.len(), &format!("X-Signature: sha256={sig}\r\n")).as_bytes())
        .await
        .unwrap();
    s.write_all(&body[..10]).await.unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("closed after the timeout");
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"));
    assert!(started.elapsed() < Duration::from_secs(3));
    // Nothing of it was recorded.
    nothing_recorded(&app).await;
    still_serving(&app).await;
}

#[tokio::test]
async fn header_floods_and_huge_headers_get_431() {
    let app = app().await;
    let mut many = String::from("GET /api/health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..500 {
        many.push_str(&format!("X-Flood-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let huge = format!(
        "GET /api/health HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(256 * 1024)
    );
    let long_line = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "p".repeat(256 * 1024)
    );
    for request in [many, huge, long_line] {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        // The server may answer and close before it has read everything: ignore write errors.
        let _ = s.write_all(request.as_bytes()).await;
        let answer = read_to_close(&mut s, Duration::from_secs(5))
            .await
            .expect("answered and closed");
        assert_eq!(
            status_of(&answer),
            431,
            "{}",
            &answer[..answer.len().min(200)]
        );
    }
    still_serving(&app).await;
}

#[tokio::test]
async fn chunked_bodies_over_the_limit_get_413_without_reading_them_all() {
    let app = app().await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(
        b"POST /api/hooks/flux HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\nX-Signature: sha256=00\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "a".repeat(16 * 1024));
    // 1 MiB announced nowhere, against a 64 KiB limit; stop writing once refused.
    for _ in 0..64 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let answer = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("answered");
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(answer.contains("\"payload_too_large\""));
    still_serving(&app).await;
}

/// Signed, so each reaches the parser: what the parser says is what the client gets.
#[tokio::test]
async fn bodies_that_are_not_what_they_claim_get_400_and_nothing_is_recorded() {
    let app = app().await;
    let ok = flux_event("kustomization-succeeded.json", |_| {});
    let ok_text = String::from_utf8(ok.clone()).unwrap();
    let nested = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let nested_obj = format!("{}1{}", "{\"a\":".repeat(8_000), "}".repeat(8_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8", {
            let mut b = ok.clone();
            b.splice(10..10, [0xff, 0xfe, 0xc0]);
            b
        }),
        ("deeply nested arrays", nested.into_bytes()),
        ("deeply nested objects", nested_obj.into_bytes()),
        (
            "duplicate keys",
            ok_text
                .replacen('{', r#"{"reason":"ReconciliationSucceeded","#, 1)
                .into_bytes(),
        ),
        (
            "a number where a string is expected",
            flux_event("kustomization-succeeded.json", |v| v["reason"] = 42.into()),
        ),
        (
            "an object where a string is expected",
            flux_event("kustomization-succeeded.json", |v| {
                v["involvedObject"]["name"] = serde_json::json!({"a": 1})
            }),
        ),
        (
            "a raw NUL byte",
            ok_text.replacen('{', "{\0", 1).into_bytes(),
        ),
        ("an array", b"[1,2,3]".to_vec()),
        ("a bare string", b"\"text\"".to_vec()),
        ("empty", vec![]),
        ("truncated", ok[..ok.len() / 2].to_vec()),
    ];
    for (what, body) in cases {
        let resp = app.post_flux("/api/hooks/flux", &body).await;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status, 400, "{what}: {v}");
        assert!(v["error"]["code"].is_string(), "{what}: {v}");
    }
    for (provider, event) in [
        ("github", ("X-GitHub-Event", "push")),
        ("gitlab", ("X-Gitlab-Event", "Push Hook")),
        ("bitbucket", ("X-Event-Key", "repo:push")),
        ("gitea", ("X-Gitea-Event", "push")),
    ] {
        for body in [
            b"\xff\xfe{not json".to_vec(),
            "[".repeat(100_000).into_bytes(),
            br#"{"ref": 7, "after": ["x"], "commits": "none"}"#.to_vec(),
        ] {
            let resp = app.post_git(provider, &[event], &body).await;
            assert_eq!(resp.status(), 400, "{provider}");
        }
    }
    nothing_recorded(&app).await;
    still_serving(&app).await;
}

/// NUL and other control characters inside JSON strings are valid JSON: kept, escaped, and
/// read back as sent, never reaching another object's row.
#[tokio::test]
async fn nul_bytes_inside_strings_are_kept_as_data() {
    let app = app().await;
    let body = flux_event("kustomization-succeeded.json", |v| {
        v["involvedObject"]["name"] = "apps\u{0}x'/#?%\u{1}".into();
        v["message"] = "line\u{0}two".into();
    });
    let resp = app.post_flux("/api/hooks/flux/prod\u{0}eu", &body).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let (status, objects) = app.get_json("/api/objects").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = objects["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(names, vec!["apps\u{0}x'/#?%\u{1}"], "{objects}");
    still_serving(&app).await;
}
