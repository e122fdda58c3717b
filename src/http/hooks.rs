//! `POST /api/hooks/git/{provider}`: content type, body limit, authentication, parsing,
//! recording — in that order, so nothing unauthenticated is ever parsed.

use chrono::Utc;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::error::json_response;
use super::{media_type, read_body, ApiError, AppState, Body};
use crate::flux;
use crate::git::{self, Delivery, GitEvent, Provider};
use crate::ledger::Recorded;

const FORM: &str = "application/x-www-form-urlencoded";

pub(super) async fn git(
    state: &AppState,
    provider: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let provider = Provider::from_segment(provider)
        .ok_or_else(|| ApiError::UnknownProvider(provider.to_string()))?;
    let media = media_type(req.headers());
    let form = match media.as_str() {
        "application/json" => false,
        FORM if provider.accepts_form() => true,
        _ => {
            return Err(ApiError::UnsupportedMediaType {
                got: media,
                expected: if provider.accepts_form() {
                    "application/json or application/x-www-form-urlencoded"
                } else {
                    "application/json"
                },
            })
        }
    };
    let received_at = Utc::now();
    let (parts, body) = read_body(
        req,
        state.settings.git_body_limit,
        state.settings.request_timeout,
    )
    .await?;
    let delivery = Delivery {
        headers: &parts.headers,
        body: &body,
        form,
    };
    git::authenticate(
        provider,
        &state.settings.secrets,
        state.settings.insecure_allow_unsigned,
        &delivery,
    )?;
    let parsed = git::parse(provider, &delivery)?;
    if let GitEvent::Ignored { reason } = &parsed.event {
        tracing::info!(provider = provider.as_str(), %reason, "delivery ignored");
        return Ok(json_response(
            StatusCode::OK,
            &json!({"status": "ignored", "reason": reason}),
        ));
    }
    let recorded = state
        .ledger
        .record_git(provider, &parsed.delivery_id, &parsed.event, received_at)
        .await?;
    Ok(answer(recorded, provider.as_str(), &parsed.delivery_id))
}

/// 202 with the summary, or 200 `duplicate`.
fn answer(recorded: Recorded, source: &str, delivery: &str) -> Response<Body> {
    match recorded {
        Recorded::Duplicate => {
            tracing::info!(source, delivery, "duplicate delivery");
            json_response(StatusCode::OK, &json!({"status": "duplicate"}))
        }
        Recorded::Accepted(summary) => {
            tracing::info!(source, delivery, "delivery recorded");
            let mut body = json!({"status": "accepted", "source": source, "delivery": delivery});
            if let (Some(b), serde_json::Value::Object(s)) = (body.as_object_mut(), summary) {
                b.extend(s);
            }
            json_response(StatusCode::ACCEPTED, &body)
        }
    }
}

/// `POST /api/hooks/flux[/{cluster}]`: a notification-controller event.
pub(super) async fn flux(
    state: &AppState,
    cluster: Option<&str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let media = media_type(req.headers());
    if media != "application/json" {
        return Err(ApiError::UnsupportedMediaType {
            got: media,
            expected: "application/json",
        });
    }
    let received_at = Utc::now();
    let (parts, body) = read_body(
        req,
        state.settings.flux_body_limit,
        state.settings.request_timeout,
    )
    .await?;
    flux::authenticate(
        &state.settings.secrets,
        state.settings.insecure_allow_unsigned,
        &parts.headers,
        &body,
    )?;
    let event = flux::parse(&body, cluster, &state.settings.default_cluster, received_at)?;
    let recorded = state.ledger.record_flux(&event, received_at).await?;
    Ok(answer(
        recorded,
        "flux",
        &format!("flux:{}:{}", event.object.cluster, event.fingerprint),
    ))
}
