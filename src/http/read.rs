//! The read API (contract §3): evidence per commit and health. When `FLUXTRAIL_API_TOKEN` is
//! set every route here requires `Authorization: Bearer <token>`.

use hyper::{HeaderMap, Response, StatusCode};
use serde_json::json;

use super::error::json_response;
use super::{ApiError, AppState, Body};
use crate::config::SecretPair;
use crate::core::{IncidentState, ObjectState};
use crate::domain::CommitSha;
use crate::git::signature::token_matches;
use crate::ledger::records::Delivery;

pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.settings.api_token else {
        return Ok(());
    };
    let presented = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or(ApiError::ReadTokenMissing)?;
    let pair = SecretPair {
        current: Some(token.clone()),
        previous: None,
    };
    if token_matches(&pair, presented) {
        Ok(())
    } else {
        Err(ApiError::ReadTokenInvalid)
    }
}

pub(super) async fn commit(
    state: &AppState,
    sha: &str,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    let sha = CommitSha::parse(sha).map_err(|e| ApiError::InvalidSha(e.to_string()))?;
    match state.ledger.evidence(&sha).await? {
        Some(evidence) => Ok(json_response(
            StatusCode::OK,
            &serde_json::to_value(evidence).expect("evidence serialises"),
        )),
        None => Err(ApiError::CommitNotFound(sha.to_string())),
    }
}

/// One query parameter's value (the read API takes at most one or two).
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub(super) async fn objects(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    // `cluster=` (empty) means every cluster, like no filter at all.
    let cluster = query_param(query, "cluster").filter(|c| !c.is_empty());
    let objects = state.ledger.objects(cluster.as_deref()).await?;
    let items: Vec<serde_json::Value> = objects.iter().map(object_view).collect();
    Ok(json_response(StatusCode::OK, &json!({"objects": items})))
}

/// The API shape of an object: its state without the bookkeeping.
fn object_view(s: &ObjectState) -> serde_json::Value {
    json!({
        "cluster": s.object.cluster,
        "kind": s.object.kind,
        "namespace": s.object.namespace,
        "name": s.object.name,
        "status": s.status,
        "lastEventAt": s.last_event_at,
        "reason": s.last_reason,
        "message": s.last_message,
        "revision": s.last_revision,
        "applied": s.applied,
        "follows": s.follows,
        "incidentId": s.incident.as_ref().map(|i| &i.id),
        "silent": s.silent(),
        "retiredAt": s.retired_at,
    })
}

/// `POST /api/objects/{cluster}/{kind}/{namespace}/{name}/retire`: the object is gone
/// (`Ledger::retire`). 200 with the object, 404 for one never seen.
pub(super) async fn retire(
    state: &AppState,
    object: &crate::flux::ObjectRef,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    match state.ledger.retire(object, chrono::Utc::now()).await? {
        Some(s) => Ok(json_response(StatusCode::OK, &object_view(&s))),
        None => Err(ApiError::ObjectNotFound(object.subject())),
    }
}

pub(super) async fn incidents(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    let filter = match query_param(query, "state").as_deref() {
        None => None,
        Some("open") => Some(IncidentState::Open),
        Some("resolved") => Some(IncidentState::Resolved),
        Some(other) => {
            return Err(ApiError::InvalidQuery(format!(
                "state={other:?}: expected open or resolved"
            )))
        }
    };
    let incidents = state.ledger.incidents(filter).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"incidents": incidents}),
    ))
}

pub(super) async fn outbox(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    let asked = query_param(query, "delivery").unwrap_or_else(|| "dead".into());
    let Some(delivery) = Delivery::parse(&asked) else {
        return Err(ApiError::InvalidQuery(format!(
            "delivery={asked:?}: expected pending, dead or delivered"
        )));
    };
    let items: Vec<serde_json::Value> = state
        .ledger
        .outbox(delivery)
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "message": r.message.to_cloudevent(),
                // A parked message is listed as dead (see `outbox.rs`), and says it is parked.
                "delivery": if r.parked { Delivery::Dead } else { r.delivery },
                "parked": r.parked,
                "attempts": r.attempts,
                "nextAttemptAt": r.next_attempt_at,
                "lastError": r.last_error,
                "deliveredAt": r.delivered_at,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"messages": items})))
}

pub(super) async fn redrive(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    let n = state.ledger.redrive().await?;
    Ok(json_response(StatusCode::OK, &json!({"redriven": n})))
}

pub(super) async fn health(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    let store = state.ledger.store().ping().await;
    let publisher = state.publisher.check().await;
    let ok = store.is_ok() && publisher.is_ok();
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "store": {
            "backend": state.ledger.store().backend(),
            "ok": store.is_ok(),
            "error": store.err().map(|e| e.to_string()),
        },
        "publisher": {
            "backend": state.publisher.backend(),
            "ok": publisher.is_ok(),
            "error": publisher.err().map(|e| e.to_string()),
        },
        "outbox": outbox_counts(state).await,
        "backfill": backfill_status(state).await,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json_response(status, &body))
}

/// The backfill queue and each host's rate-limit state (`null` when no host API is
/// configured; the queue `null` when the store cannot say). Never a reason for a 503: the
/// hosts' APIs are not what the service needs to take deliveries.
async fn backfill_status(state: &AppState) -> serde_json::Value {
    let Some(b) = &state.backfill else {
        return serde_json::Value::Null;
    };
    let queue = state
        .ledger
        .backfill_status(chrono::Utc::now())
        .await
        .unwrap_or(serde_json::Value::Null);
    json!({"queue": queue, "hosts": b.rate_limits()})
}

/// Messages waiting and parked, for the health report (`null` when the store cannot say).
async fn outbox_counts(state: &AppState) -> serde_json::Value {
    let count = |d: Delivery| async move { state.ledger.outbox(d).await.map(|v| v.len()) };
    match (count(Delivery::Pending).await, count(Delivery::Dead).await) {
        (Ok(pending), Ok(dead)) => json!({"pending": pending, "dead": dead}),
        _ => serde_json::Value::Null,
    }
}
