//! `POST /Sweep`: the Functions host's timer trigger, in the custom-handler invocation
//! protocol (`{"Data":{"timer":…},"Metadata":{…}}` in, `{"Outputs":{},"Logs":[…],
//! "ReturnValue":null}` out). Lenient about the payload: `ScheduleStatus` may be null, dates
//! come in several formats, the body may even be empty. Non-2xx only when the host should
//! retry (storage unavailable).

use chrono::{DateTime, NaiveDateTime, Utc};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::error::json_response;
use super::{read_body, ApiError, AppState, Body};
use crate::sweep;

/// How far ahead of this machine's clock the host's `UtcNow` is believed (clock skew); a
/// caller cannot fast-forward the sweep beyond that.
const MAX_SKEW: chrono::Duration = chrono::Duration::minutes(5);

pub(super) async fn sweep(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (_, body) = read_body(req, 1024 * 1024, state.settings.request_timeout).await?;
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let clock = Utc::now();
    let now = payload
        .pointer("/Metadata/sys/UtcNow")
        .and_then(Value::as_str)
        .and_then(parse_time)
        .map(|t| t.min(clock + MAX_SKEW))
        .unwrap_or(clock);
    let past_due = payload
        .pointer("/Data/timer/IsPastDue")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if past_due {
        tracing::warn!("the sweep timer is past due");
    }
    let report = sweep::sweep(&state.ledger, &state.dispatcher, state.sweep, now).await?;
    let mut logs = report.logs();
    if let Some(b) = &state.backfill {
        logs.push(sweep::drain_backfill(b).await?);
    }
    for line in &logs {
        tracing::info!(%now, "sweep: {line}");
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"Outputs": {}, "Logs": logs, "ReturnValue": null}),
    ))
}

/// RFC 3339, or the host's other renderings (no offset: UTC; `MM/dd/yyyy HH:mm:ss`).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.to_utc());
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%m/%d/%Y %H:%M:%S",
        "%m/%d/%Y %I:%M:%S %p",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_time_formats() {
        let want = "2025-01-01T10:05:00Z";
        for s in [
            "2025-01-01T10:05:00Z",
            "2025-01-01T10:05:00.0887Z",
            "2025-01-01T10:05:00+00:00",
            "2025-01-01T10:05:00.01",
            "01/01/2025 10:05:00",
            "01/01/2025 10:05:00 AM",
        ] {
            let t = parse_time(s).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                want,
                "{s}"
            );
        }
        assert_eq!(parse_time("soon"), None);
    }
}
