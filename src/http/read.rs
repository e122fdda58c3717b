//! The read API (contract §3): evidence per commit and health. When `FLUXTRAIL_API_TOKEN` is
//! set every route here requires `Authorization: Bearer <token>`.

use hyper::{HeaderMap, Response, StatusCode};
use serde_json::json;

use super::error::json_response;
use super::{ApiError, AppState, Body};
use crate::config::SecretPair;
use crate::domain::CommitSha;
use crate::git::signature::token_matches;

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
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

pub(super) async fn health(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    let store = state.ledger.store().ping().await;
    let ok = store.is_ok();
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "store": {
            "backend": "sqlite",
            "ok": ok,
            "error": store.err().map(|e| e.to_string()),
        },
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json_response(status, &body))
}
