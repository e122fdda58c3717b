//! Service Bus on the wire: the exact request (golden file, SAS signature recomputed), and
//! delivery through faults — 503/429/500/timeouts, a restart, 401, parking and re-drive.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::fake_sb::{Answer, Captured};
use crate::helpers::*;

fn failing_event(at: &str) -> Vec<u8> {
    let at = at.to_string();
    flux_event("kustomization-health-failed.json", move |v| {
        v["timestamp"] = json!(at)
    })
}

/// The CloudEvent types of accepted Service Bus requests, in order.
fn accepted_types(accepted: &[crate::fake_sb::Captured]) -> Vec<String> {
    accepted
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

async fn push_and_fail(app: &TestApp) {
    let r = app
        .post_fixture(
            "github",
            "github/push-forced.json",
            &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "sb-1")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = app
        .post_flux(
            "/api/hooks/flux/prod-eu",
            &failing_event("2026-08-07T10:20:31Z"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// Checks the SAS token against the key and returns the request with the token's volatile
/// parts (expiry, signature) replaced, as text for the golden file.
fn verified_wire_text(r: &Captured) -> String {
    let auth = r.header("authorization").unwrap();
    let params = auth
        .strip_prefix("SharedAccessSignature ")
        .expect("SAS authorization");
    let field = |name: &str| {
        params
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {auth}"))
            .to_string()
    };
    let (sr, sig, se, skn) = (field("sr"), field("sig"), field("se"), field("skn"));
    // Production's resource even when the request went elsewhere.
    assert_eq!(
        sr,
        format!("https%3A%2F%2F{SB_NAMESPACE}.servicebus.windows.net%2Ffluxtrail%2Fmessages")
    );
    assert_eq!(skn, SB_KEY_NAME);
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SB_KEY.as_bytes()).unwrap();
    mac.update(format!("{sr}\n{se}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig = percent_encoding::percent_decode_str(&sig)
        .decode_utf8()
        .unwrap()
        .to_string();
    assert_eq!(
        sig, expected,
        "the SAS signature is HMAC-SHA256(key, sr + \"\\n\" + se)"
    );
    let se: i64 = se.parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(
        se > now && se <= now + 3700,
        "expiry about an hour ahead: {se}"
    );

    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "host" | "content-length" | "accept" | "accept-encoding" | "user-agent"
            )
        })
        .map(|(k, v)| {
            let v = if k == "authorization" {
                format!("SharedAccessSignature sr={sr}&sig=<verified>&se=<expiry>&skn={skn}")
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    headers.sort();
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    let mut text = format!("{} {}\n", r.method, r.path);
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\n"));
    }
    text.push('\n');
    text.push_str(&serde_json::to_string_pretty(&body).unwrap());
    text.push('\n');
    text
}

#[tokio::test]
async fn the_request_is_exactly_what_service_bus_expects() {
    let app = spawn_with_service_bus(default_vars()).await;
    push_and_fail(&app).await;
    let sb = app.service_bus.as_ref().unwrap();
    let accepted = sb.wait_accepted(1).await;
    assert_eq!(accepted.len(), 1);
    let text = verified_wire_text(&accepted[0]);
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/servicebus/send-apply-failed.golden");
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let want =
        std::fs::read_to_string(&golden).expect("golden file; run with UPDATE_EXPECT=1 and review");
    // The message id and incident id are deterministic, so the whole request is.
    assert_eq!(text, want);
    // Its group's `group.opened` too: the group id as `groupid` and as the session (a group
    // names no single cluster, so no `cluster` property).
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/servicebus/send-group-opened.golden");
    let mut all = sb.accepted_all();
    for _ in 0..200 {
        if all.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        all = sb.accepted_all();
    }
    let group = all.last().unwrap();
    let text = verified_wire_text(group);
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    let want =
        std::fs::read_to_string(&golden).expect("golden file; run with UPDATE_EXPECT=1 and review");
    assert_eq!(text, want);
    assert!(group.header("cluster").is_none());
    assert_eq!(
        group.header("groupid"),
        accepted[0].header("groupid"),
        "the object's message names the group"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_with_the_same_message_id() {
    let app = spawn_with_service_bus(default_vars()).await;
    let sb = app.service_bus.clone().unwrap();
    sb.script(&[
        Answer::Status(503),
        Answer::Status(429),
        Answer::Status(500),
        Answer::Delay(Duration::from_secs(2)), // the client gives up after 500ms
    ]);
    push_and_fail(&app).await;
    sb.wait_requests(5).await;
    let accepted = sb.wait_accepted(1).await;
    assert_eq!(
        accepted.len(),
        1,
        "one message in the topic (duplicate detection by MessageId)"
    );
    let all = sb.requests();
    assert_eq!(all.len(), 5, "503, 429, 500, timeout, then accepted");
    let id = all[0].message_id();
    assert!(
        all.iter().all(|r| r.message_id() == id),
        "every attempt carries the same MessageId"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, h) = app.get_json("/api/health").await;
    assert_eq!(h["outbox"], json!({"pending": 0, "dead": 0}));
}

#[tokio::test]
async fn nothing_is_lost_across_a_restart_during_an_outage() {
    let mut app = spawn_with_service_bus(default_vars()).await;
    let sb = app.service_bus.clone().unwrap();
    sb.fallback(503);
    push_and_fail(&app).await;
    let recovered = flux_event("kustomization-succeeded.json", |v| {
        v["timestamp"] = json!("2026-08-07T10:40:00Z")
    });
    assert_eq!(
        app.post_flux("/api/hooks/flux/prod-eu", &recovered)
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    sb.wait_requests(3).await;
    app.restart().await;
    sb.fallback(201);
    let accepted = sb.wait_accepted(2).await;
    let types = accepted_types(&accepted);
    assert_eq!(
        types,
        ["io.fluxtrail.apply.failed", "io.fluxtrail.apply.recovered"],
        "in order, once each"
    );
    let ids: std::collections::BTreeSet<String> =
        sb.requests().iter().map(Captured::message_id).collect();
    assert_eq!(
        ids.len(),
        2,
        "retries and the restart reused the MessageIds"
    );
}

#[tokio::test]
async fn unauthorized_keeps_the_message_and_reports_unhealthy() {
    let app = spawn_with_service_bus(default_vars()).await;
    let sb = app.service_bus.clone().unwrap();
    sb.fallback(401);
    push_and_fail(&app).await;
    sb.wait_requests(1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let resp = app
        .client
        .get(app.url("/api/health"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let h: Value = resp.json().await.unwrap();
    assert_eq!(h["publisher"]["backend"], "servicebus");
    assert_eq!(h["publisher"]["ok"], false);
    assert!(
        h["publisher"]["error"].as_str().unwrap().contains("401"),
        "{h}"
    );
    // The incident's message and its group's `group.opened`.
    assert_eq!(h["outbox"]["pending"], 2);
    // Fixed configuration: the kept message goes out.
    sb.fallback(201);
    assert_eq!(sb.wait_accepted(1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let resp = app
        .client
        .get(app.url("/api/health"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Part 9, case 7: an outage longer than the attempts (here 3 at a 20 ms base, on Azure 12 at
/// 1 s: ~25 min). Meanwhile health and `/api/outbox?delivery=dead` show the message parked;
/// it stays in line (the object's next message waits behind it), is tried again by itself
/// every capped backoff, and when the publisher answers again both are delivered once, in
/// order, with nobody calling redrive.
#[tokio::test]
async fn messages_parked_by_an_outage_are_delivered_by_themselves_in_order() {
    let mut vars = default_vars();
    vars.insert("FLUXTRAIL_PUBLISH_MAX_ATTEMPTS".into(), "3".into());
    let app = spawn_with_service_bus(vars).await;
    let sb = app.service_bus.clone().unwrap();
    sb.fallback(500);
    push_and_fail(&app).await;
    let ok = flux_event("kustomization-succeeded.json", |v| {
        v["timestamp"] = json!("2026-08-07T10:40:00Z")
    });
    app.post_flux("/api/hooks/flux/prod-eu", &ok).await;
    sb.wait_requests(4).await;
    let (_, dead) = app.get_json("/api/outbox?delivery=dead").await;
    let (groups, dead): (Vec<Value>, Vec<Value>) = dead["messages"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .partition(|m| crate::helpers::is_group_message(&m["message"]));
    // The incident's group opened too, and its message waits out the same outage.
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["message"]["type"], "io.fluxtrail.group.opened");
    assert_eq!(dead.len(), 1);
    assert!(dead[0]["attempts"].as_u64().unwrap() >= 3);
    assert_eq!(dead[0]["message"]["type"], "io.fluxtrail.apply.failed");
    assert!(dead[0]["lastError"].as_str().unwrap().contains("500"));
    let (_, h) = app.get_json("/api/health").await;
    // Parked: the incident's message and its group's. Waiting: the recovery, and the
    // group's resolution once the recovery was settled (it is when its turn came before the
    // outage's first answer).
    assert_eq!(h["outbox"]["dead"], 2, "{h}");
    assert!(
        matches!(h["outbox"]["pending"].as_u64(), Some(1 | 2)),
        "{h}"
    );
    assert!(
        sb.requests()
            .iter()
            .all(|r| r.message_id() == dead[0]["message"]["id"].as_str().unwrap()),
        "the next message waits behind the parked one"
    );
    sb.fallback(201);
    let accepted = sb.wait_accepted(2).await;
    let types = accepted_types(&accepted);
    assert_eq!(
        types,
        ["io.fluxtrail.apply.failed", "io.fluxtrail.apply.recovered"]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sb.accepted().len(), 2, "each once");
    // The group's two messages, each once, by themselves too.
    for _ in 0..300 {
        if sb.accepted_all().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = accepted_types(&sb.accepted_all());
    assert_eq!(
        &all[2..],
        ["io.fluxtrail.group.opened", "io.fluxtrail.group.resolved"]
    );
    let (_, h) = app.get_json("/api/health").await;
    assert_eq!(h["outbox"], json!({"pending": 0, "dead": 0}));
}

/// A parked message can still be re-driven at once (an operator who fixed the topic does not
/// wait for the next attempt).
#[tokio::test]
async fn a_parked_message_is_re_driven_at_once() {
    let mut vars = default_vars();
    vars.insert("FLUXTRAIL_PUBLISH_MAX_ATTEMPTS".into(), "3".into());
    vars.insert("FLUXTRAIL_PUBLISH_RETRY_BASE".into(), "10s".into());
    let app = spawn_with_service_bus(vars).await;
    let sb = app.service_bus.clone().unwrap();
    sb.script(&[
        Answer::Status(500),
        Answer::Status(500),
        Answer::Status(500),
    ]);
    push_and_fail(&app).await;
    sb.wait_requests(1).await;
    // Two more failed attempts without waiting out the 10 s backoff: re-driven twice.
    for n in 2..=3 {
        let (status, _) = app.post_json("/api/outbox/redrive").await;
        assert_eq!(status, StatusCode::OK);
        sb.wait_requests(n).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, dead) = app.get_json("/api/outbox?delivery=dead").await;
    assert_eq!(dead["messages"].as_array().unwrap().len(), 1);
    let (_, redriven) = app.post_json("/api/outbox/redrive").await;
    assert_eq!(redriven, json!({"redriven": 1}));
    assert_eq!(sb.wait_accepted(1).await.len(), 1);
    let (_, dead) = app.get_json("/api/outbox?delivery=dead").await;
    assert_eq!(dead["messages"], json!([]));
}

#[tokio::test]
async fn a_rejected_message_is_parked_at_once_and_does_not_block_the_next() {
    let app = spawn_with_service_bus(default_vars()).await;
    let sb = app.service_bus.clone().unwrap();
    sb.script(&[Answer::Status(400)]);
    push_and_fail(&app).await;
    sb.wait_requests(1).await;
    let ok = flux_event("kustomization-succeeded.json", |v| {
        v["timestamp"] = json!("2026-08-07T10:40:00Z")
    });
    app.post_flux("/api/hooks/flux/prod-eu", &ok).await;
    let accepted = sb.wait_accepted(1).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&accepted[0].body).unwrap()["type"],
        "io.fluxtrail.apply.recovered"
    );
    let (_, dead) = app.get_json("/api/outbox?delivery=dead").await;
    assert_eq!(dead["messages"].as_array().unwrap().len(), 1);
    assert_eq!(
        sb.requests().len(),
        2,
        "the rejected message was not retried"
    );
}

/// A credential that hands out a fixed token, standing in for the Functions app's identity.
#[derive(Debug)]
struct FixedToken;

#[async_trait::async_trait]
impl azure_core::auth::TokenCredential for FixedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
    ) -> azure_core::Result<azure_core::auth::AccessToken> {
        assert_eq!(scopes, ["https://servicebus.azure.net/.default"]);
        Ok(azure_core::auth::AccessToken::new(
            "entra-token",
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
    async fn clear_cache(&self) -> azure_core::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn managed_identity_sends_a_bearer_token_instead_of_sas() {
    use fluxtrail::publish::servicebus::{ServiceBusConfig, ServiceBusPublisher};
    use fluxtrail::publish::Publisher;
    let sb = crate::fake_sb::FakeServiceBus::start().await;
    let config =
        ServiceBusConfig::parse("contoso.servicebus.windows.net", "alerts", Some(&sb.url()))
            .unwrap();
    let publisher = ServiceBusPublisher::with_credential(
        &config,
        Duration::from_secs(2),
        Some(std::sync::Arc::new(FixedToken)),
    )
    .unwrap();
    let message = fluxtrail::core::Message {
        id: "m-1".into(),
        kind: fluxtrail::core::MessageType::DriftDetected,
        object: fluxtrail::flux::ObjectRef {
            cluster: "prod-eu".into(),
            kind: "HelmRelease".into(),
            namespace: "apps".into(),
            name: "podinfo".into(),
        },
        time: chrono::Utc::now(),
        revision: None,
        sha: None,
        reason: Some("DriftDetected".into()),
        message: None,
        incident_id: None,
        repository: None,
        custom: None,
        opened_at: None,
        cause: None,
        group_id: None,
    };
    publisher.publish(&message).await.unwrap();
    let r = &sb.requests()[0];
    assert_eq!(r.path, "/alerts/messages");
    assert_eq!(r.header("authorization"), Some("Bearer entra-token"));
    assert_eq!(
        r.headers
            .iter()
            .filter(|(k, _)| k == "authorization")
            .count(),
        1,
        "no SAS left behind"
    );
    let bp: Value = serde_json::from_str(r.header("brokerproperties").unwrap()).unwrap();
    assert_eq!(
        bp,
        json!({"MessageId": "m-1", "Label": "io.fluxtrail.drift.detected", "SessionId": "prod-eu/HelmRelease/apps/podinfo"})
    );
    assert_eq!(r.header("repository"), None, "no repository, no property");
}
