//! The embedded store's disk failing under the real binary: full (a 16 MiB tmpfs in a mount
//! namespace of the server's own, filled from outside through `/proc/<pid>/root`) and
//! read-only (`chattr +i` on the database, its WAL and the message sink: every write through
//! the open files fails). Each time: refused deliveries are answered 503 with `Retry-After`,
//! nothing is half-written, and once the disk is back the same deliveries (re-sent, as Flux
//! and the Git hosts do) are accepted by the same process, with every message sent exactly once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// The server process, killed when the test ends however it ends (a failed assertion must not
/// leave it running).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(program: &str, args: &[&str], dir: &Path, port: u16) -> Server {
    let child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FLUXTRAIL_LISTEN", format!("127.0.0.1:{port}"))
        .env("FLUXTRAIL_DATA_DIR", dir)
        .env("FLUXTRAIL_FLUX_HMAC_KEY", FLUX_HMAC_KEY)
        .env("FLUXTRAIL_PUBLISH_RETRY_BASE", "100ms")
        .env("FLUXTRAIL_PUBLISH_MAX_ATTEMPTS", "1000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server(child)
}

/// A failure of object `n` (its own incident, one `apply.failed`), with a long message so the
/// store must grow to take it.
fn failure(n: usize) -> Vec<u8> {
    flux_event("kustomization-reconciliation-failed.json", |v| {
        v["involvedObject"]["name"] = format!("app-{n:03}").into();
        v["message"] = format!("{n}: {}", "x".repeat(12 * 1024)).into();
    })
}

async fn post(client: &reqwest::Client, port: u16, body: &[u8]) -> u16 {
    let resp = flux_request(
        client,
        &format!("http://127.0.0.1:{port}/api/hooks/flux/prod-eu"),
        body,
    )
    .send()
    .await
    .unwrap();
    let status = resp.status().as_u16();
    if status == 503 {
        assert!(resp.headers().contains_key("retry-after"));
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
    }
    status
}

async fn get(client: &reqwest::Client, port: u16, path: &str) -> Value {
    client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Objects in the ledger, and the message ids in the sink (asserting none twice).
async fn ledger(client: &reqwest::Client, port: u16, sink: &Path) -> (BTreeSet<String>, usize) {
    let v = get(client, port, "/api/objects").await;
    let objects = v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    let text = std::fs::read_to_string(sink).unwrap_or_default();
    let all: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let ids: Vec<&str> = all.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a message was sent twice");
    // The objects' messages (`group.*` ones are counted by the group tests).
    let objects_messages = all
        .iter()
        .filter(|m| !crate::helpers::is_group_message(m))
        .count();
    (objects, objects_messages)
}

async fn wait_messages(client: &reqwest::Client, port: u16, sink: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, sent) = ledger(client, port, sink).await;
        if sent >= n {
            assert_eq!(sent, n);
            return;
        }
        if Instant::now() > deadline {
            let mut outbox = Vec::new();
            for d in ["pending", "dead"] {
                outbox.push(get(client, port, &format!("/api/outbox?delivery={d}")).await);
            }
            let brief: Vec<String> = outbox
                .iter()
                .flat_map(|v| v["messages"].as_array().cloned().unwrap_or_default())
                .map(|m| {
                    format!(
                        "{} {} {} {}",
                        m["delivery"], m["attempts"], m["nextAttemptAt"], m["lastError"]
                    )
                })
                .collect();
            panic!("{sent} of {n} messages sent; outbox: {brief:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn health_status(client: &reqwest::Client, port: u16) -> u16 {
    client
        .get(format!("http://127.0.0.1:{port}/api/health"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn integrity(db: &Path) {
    // Read-write: a read-only open of a WAL database through /proc/<pid>/root cannot map its
    // shared memory. The check itself writes nothing.
    let conn = rusqlite::Connection::open(db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

/// Sends `bodies` until each is acknowledged, as Flux retries; `None` once every one is.
async fn resend_until_accepted(client: &reqwest::Client, port: u16, bodies: &[Vec<u8>]) {
    for body in bodies {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = post(client, port, body).await;
            if status == 202 || status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "after recovery: {status}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test]
async fn a_full_disk_is_503_and_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let port = free_port();
    let script = format!(
        "mount -t tmpfs -o size=16m fluxtrail-test {d} && exec {bin} serve",
        d = data.display(),
        bin = env!("CARGO_BIN_EXE_fluxtrail")
    );
    // A user and mount namespace of the server's own: no privilege needed for the tmpfs.
    let child = server("unshare", &["-rm", "sh", "-c", &script], &data, port);
    let client = reqwest::Client::new();
    wait_ready(&client, port).await;
    // The server's view of its data directory (the tmpfs), from outside its namespace.
    let inside: PathBuf =
        PathBuf::from(format!("/proc/{}/root", child.0.id())).join(data.strip_prefix("/").unwrap());
    let sink = inside.join("messages.jsonl");

    let bodies: Vec<Vec<u8>> = (0..50).map(failure).collect();
    for body in &bodies[..10] {
        assert_eq!(post(&client, port, body).await, 202);
    }
    wait_messages(&client, port, &sink, 10).await;

    // Let a checkpoint run first: the WAL is then reused from its start, so the store can
    // still commit a little while the disk is full, and the message sink meets the full disk.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Fill the disk to the last byte.
    let filler = inside.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = Vec::new();
    let mut accepted = 0;
    for body in &bodies[10..] {
        match post(&client, port, body).await {
            202 | 200 => accepted += 1,
            503 => refused.push(body.clone()),
            other => panic!("disk full answered {other}"),
        }
    }
    eprintln!(
        "disk full: {accepted} accepted (into space the store already had), {} refused with 503",
        refused.len()
    );
    assert!(refused.len() >= 15, "only {} refused", refused.len());

    // (Health may still be 200 here: small writes can fit where these events do not.)
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        health_status(&client, port).await,
        200,
        "health once there is room"
    );
    // The same process, the same deliveries re-sent.
    resend_until_accepted(&client, port, &refused).await;
    let (objects, _) = ledger(&client, port, &sink).await;
    assert_eq!(
        objects.len(),
        50,
        "every acknowledged event is in the ledger"
    );
    wait_messages(&client, port, &sink, 50).await;
    integrity(&inside.join("ledger.db"));

    drop(child);
}

fn chattr(flag: &str, files: &[PathBuf]) {
    let status = Command::new("chattr")
        .arg(flag)
        .args(files)
        .status()
        .expect("chattr (e2fsprogs)");
    assert!(status.success(), "chattr {flag} failed");
}

#[tokio::test]
async fn a_read_only_store_is_503_and_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = server(
        env!("CARGO_BIN_EXE_fluxtrail"),
        &["serve"],
        dir.path(),
        port,
    );
    let client = reqwest::Client::new();
    wait_ready(&client, port).await;
    let sink = dir.path().join("messages.jsonl");

    let bodies: Vec<Vec<u8>> = (0..40).map(failure).collect();
    for body in &bodies[..10] {
        assert_eq!(post(&client, port, body).await, 202);
    }
    wait_messages(&client, port, &sink, 10).await;

    // Every write through the open files now fails (EPERM), as on a disk gone read-only.
    let files: Vec<PathBuf> = ["ledger.db", "ledger.db-wal", "messages.jsonl"]
        .iter()
        .map(|f| dir.path().join(f))
        .filter(|f| f.exists())
        .collect();
    chattr("+i", &files);
    let mut refused = Vec::new();
    for body in &bodies[10..] {
        match post(&client, port, body).await {
            503 => refused.push(body.clone()),
            other => {
                chattr("-i", &files);
                panic!("a read-only store answered {other}");
            }
        }
    }
    let health = client
        .get(format!("http://127.0.0.1:{port}/api/health"))
        .send()
        .await
        .unwrap()
        .status();
    chattr("-i", &files);
    assert_eq!(refused.len(), 30);
    assert_eq!(health, 503, "health while writes fail");
    eprintln!("read-only: 30 refused with 503, health {health}");
    assert_eq!(
        health_status(&client, port).await,
        200,
        "health once writes work"
    );

    resend_until_accepted(&client, port, &refused).await;
    let (objects, _) = ledger(&client, port, &sink).await;
    assert_eq!(objects.len(), 40);
    wait_messages(&client, port, &sink, 40).await;
    integrity(&dir.path().join("ledger.db"));
    drop(child);
}
