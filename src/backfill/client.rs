//! One host API's HTTP side: reqwest with timeouts, the token as a sensitive header (never in
//! a log or an error), the host's rate-limit protocol, conditional requests, pagination.
//!
//! Rate limits, as the hosts publish them (and every one of them sends some of these):
//! - `X-RateLimit-Remaining`/`-Reset` (GitHub, Azure DevOps; GitLab without the `X-`): the
//!   client counts down from the last answer's remaining (minus requests still in flight)
//!   and sends nothing more once it reaches 0, until the reset time (epoch seconds) passed.
//! - `Retry-After` (seconds or an HTTP date) on 429 or 403: nothing until then.
//! - GitHub's secondary limits: a 403/429 saying "rate limit" with requests still remaining
//!   and no `Retry-After`: at least a minute (GitHub's advice), doubling while it repeats.
//! - A request refused by the limiter here never reaches the host: the item waits for the
//!   time the limiter names (`ApiError::RateLimited`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, IF_NONE_MATCH, USER_AGENT};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;

use super::{HostConfig, HostKind};

/// Pages followed for one list at most (a compare of 5,000 commits at 100 per page).
pub const MAX_PAGES: usize = 50;
/// Responses kept for conditional requests (`If-None-Match`).
const ETAG_CACHE: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The host does not know it (404, 410, 422): retrying will not help.
    #[error("not found: {0}")]
    NotFound(String),
    /// The token is missing, wrong or lacks a permission (401, 403, Azure's 203 sign-in
    /// page): retried, slowly, until an operator fixes it.
    #[error("not authorised: {0}")]
    Unauthorized(String),
    /// The host's rate limit: nothing until then.
    #[error("rate limited until {until}")]
    RateLimited { until: DateTime<Utc> },
    /// Unreachable, timed out, 5xx: retried with backoff.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An answer that is not what the host documents: retried with backoff.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// One host's rate-limit state, as `/api/health` shows it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RateSnapshot {
    pub host: &'static str,
    pub url: String,
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset_at: Option<DateTime<Utc>>,
    /// Nothing is sent before this (`Retry-After`, a secondary limit, or 0 remaining).
    pub blocked_until: Option<DateTime<Utc>>,
    pub requests: u64,
    /// Answers that were the host refusing for its rate limit (403/429): 0 when the client
    /// kept to the limit.
    pub refused: u64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct RateState {
    snap: RateSnapshot,
    in_flight: u64,
    /// Secondary limits hit in a row (GitHub): the wait doubles.
    secondary: u32,
    /// The next request's turn when a window's remaining requests are spread over its time.
    next_slot: Option<DateTime<Utc>>,
}

/// The longest a request waits for its turn; past it the item is rescheduled instead.
const MAX_PACE_WAIT: chrono::Duration = chrono::Duration::seconds(30);

pub struct HostClient {
    pub kind: HostKind,
    base: String,
    http: reqwest::Client,
    auth: (reqwest::header::HeaderName, HeaderValue),
    state: Mutex<RateState>,
    etags: Mutex<HashMap<String, (HeaderValue, Value)>>,
}

/// One page of a list and the next page's URL (`Link: <…>; rel="next"`).
pub struct Page {
    pub body: Value,
    pub next: Option<String>,
}

impl HostClient {
    pub fn new(config: &HostConfig, timeout: Duration) -> Self {
        let token = config.token.expose();
        let (name, value) = match config.kind {
            HostKind::GitHub => (AUTHORIZATION, format!("Bearer {token}")),
            HostKind::GitLab => (
                reqwest::header::HeaderName::from_static("private-token"),
                token.to_string(),
            ),
            HostKind::AzureDevOps => (
                AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!(":{token}"))
                ),
            ),
            HostKind::Gitea => (AUTHORIZATION, format!("token {token}")),
        };
        let mut value = HeaderValue::from_str(&value)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-token"));
        value.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("a reqwest client with rustls");
        HostClient {
            kind: config.kind,
            base: config.api_url.clone(),
            http,
            auth: (name, value),
            state: Mutex::new(RateState {
                snap: RateSnapshot {
                    host: config.kind.name(),
                    url: config.api_url.clone(),
                    ..Default::default()
                },
                ..Default::default()
            }),
            etags: Mutex::new(HashMap::new()),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn snapshot(&self) -> RateSnapshot {
        self.state.lock().unwrap().snap.clone()
    }

    /// When the limiter lets the next request go (`None`: now).
    pub fn blocked_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let s = self.state.lock().unwrap();
        Self::blocked(&s, now)
    }

    fn blocked(s: &RateState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if let Some(until) = s.snap.blocked_until.filter(|u| *u > now) {
            return Some(until);
        }
        match (s.snap.remaining, s.snap.reset_at) {
            // Counted down to 0 (in flight included): wait for the window's reset, and a
            // second more (the reset is in whole seconds, and clocks differ).
            (Some(r), Some(reset))
                if r <= s.in_flight && reset > now - chrono::Duration::seconds(1) =>
            {
                Some(reset + chrono::Duration::seconds(1))
            }
            _ => None,
        }
    }

    /// Takes a request slot, or says until when there is none. The slot may be a little
    /// later (the returned wait): what remains of a window is spread evenly over the time
    /// left, so the backfill never bursts (GitHub asks clients not to, and ingest on the
    /// same machine keeps its share).
    fn admit(&self, now: DateTime<Utc>) -> Result<std::time::Duration, ApiError> {
        let mut s = self.state.lock().unwrap();
        if let Some(until) = Self::blocked(&s, now) {
            return Err(ApiError::RateLimited { until });
        }
        if s.snap
            .reset_at
            .is_some_and(|r| r + chrono::Duration::seconds(1) <= now)
        {
            // The window reset: the next answer says how much the new one has.
            s.snap.remaining = None;
            s.snap.reset_at = None;
            s.next_slot = None;
        }
        let slot = match (s.snap.remaining, s.snap.reset_at) {
            (Some(r), Some(reset)) if reset > now => {
                let left = r.saturating_sub(s.in_flight).max(1) as i32;
                let slot = s.next_slot.map_or(now, |n| n.max(now));
                if slot - now > MAX_PACE_WAIT {
                    return Err(ApiError::RateLimited { until: slot });
                }
                s.next_slot = Some(slot + (reset - now) / left);
                slot
            }
            _ => now,
        };
        s.in_flight += 1;
        s.snap.requests += 1;
        Ok((slot - now).to_std().unwrap_or_default())
    }

    /// `GET {base}{path}` (or an absolute URL: a next page) as JSON.
    pub async fn get(&self, path_or_url: &str) -> Result<Page, ApiError> {
        self.send(reqwest::Method::GET, path_or_url, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Page, ApiError> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Every element of a paged list: `items` picks the list out of a page's body.
    pub async fn get_all(
        &self,
        path: &str,
        items: impl Fn(&Value) -> Option<&Vec<Value>>,
    ) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        for _ in 0..MAX_PAGES {
            let Some(url) = next.take() else { break };
            let page = self.get(&url).await?;
            let list = items(&page.body)
                .ok_or_else(|| ApiError::Malformed(format!("{}: no list", self.redact(&url))))?;
            out.extend(list.iter().cloned());
            next = page.next;
        }
        Ok(out)
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    /// A URL as errors and logs may show it: the query string dropped (tokens never travel
    /// there, but a host's next-page link might carry anything).
    fn redact(&self, url: &str) -> String {
        url.split('?').next().unwrap_or(url).to_string()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path_or_url: &str,
        body: Option<&Value>,
    ) -> Result<Page, ApiError> {
        let url = self.url(path_or_url);
        let wait = self.admit(Utc::now())?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header(USER_AGENT, "fluxtrail")
            .header(ACCEPT, self.accept())
            .header(self.auth.0.clone(), self.auth.1.clone());
        let cached = (method == reqwest::Method::GET)
            .then(|| self.etags.lock().unwrap().get(&url).cloned())
            .flatten();
        if let Some((etag, _)) = &cached {
            req = req.header(IF_NONE_MATCH, etag.clone());
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let result = req.send().await;
        let shown = self.redact(&url);
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                let e = ApiError::Unavailable(format!(
                    "{shown}: {}",
                    if e.is_timeout() {
                        "timed out".to_string()
                    } else {
                        without_url(&e)
                    }
                ));
                self.finish(None, &HeaderMap::new(), Some(&e));
                return Err(e);
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let e = ApiError::Unavailable(format!("{shown}: body: {}", without_url(&e)));
                self.finish(Some(status), &headers, Some(&e));
                return Err(e);
            }
        };
        let outcome = self.classify(status, &headers, &bytes, &shown);
        self.finish(Some(status), &headers, outcome.as_ref().err());
        let body = match outcome? {
            Some(v) => {
                if let Some(etag) = headers.get(reqwest::header::ETAG) {
                    let mut cache = self.etags.lock().unwrap();
                    if cache.len() >= ETAG_CACHE {
                        cache.clear();
                    }
                    cache.insert(url.clone(), (etag.clone(), v.clone()));
                }
                v
            }
            // 304: what we had.
            None => match cached {
                Some((_, v)) => v,
                None => {
                    return Err(ApiError::Malformed(format!(
                        "{shown}: 304 without a cached answer"
                    )))
                }
            },
        };
        Ok(Page {
            next: next_link(&headers),
            body,
        })
    }

    fn accept(&self) -> &'static str {
        match self.kind {
            HostKind::GitHub => "application/vnd.github+json",
            _ => "application/json",
        }
    }

    /// The body of a success (`None`: 304 Not Modified), or the error the status means.
    fn classify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        bytes: &[u8],
        shown: &str,
    ) -> Result<Option<Value>, ApiError> {
        let now = Utc::now();
        let text = || String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        match status.as_u16() {
            304 => Ok(None),
            // Azure DevOps answers a bad token with its sign-in page and 203.
            203 => Err(ApiError::Unauthorized(format!(
                "{shown}: 203 (a sign-in page)"
            ))),
            200..=299 => serde_json::from_slice(bytes)
                .map(Some)
                .map_err(|e| ApiError::Malformed(format!("{shown}: {e}"))),
            401 => Err(ApiError::Unauthorized(format!("{shown}: 401"))),
            404 | 410 | 422 => Err(ApiError::NotFound(format!("{shown}: {status}"))),
            403 | 429 => {
                let retry_after = retry_after(headers, now);
                let remaining = header_u64(headers, "ratelimit-remaining");
                let says_limit = text().to_ascii_lowercase().contains("rate limit");
                if let Some(until) = retry_after {
                    Err(ApiError::RateLimited { until })
                } else if remaining == Some(0) {
                    let reset = header_u64(headers, "ratelimit-reset")
                        .and_then(|r| DateTime::from_timestamp(r as i64, 0))
                        .unwrap_or(now + chrono::Duration::seconds(60));
                    Err(ApiError::RateLimited {
                        until: reset + chrono::Duration::seconds(1),
                    })
                } else if status == StatusCode::TOO_MANY_REQUESTS || says_limit {
                    // A secondary limit: at least a minute, doubling while it repeats.
                    let n = self.state.lock().unwrap().secondary.min(4);
                    Err(ApiError::RateLimited {
                        until: now + chrono::Duration::seconds(60 << n),
                    })
                } else {
                    Err(ApiError::Unauthorized(format!("{shown}: 403 {}", text())))
                }
            }
            _ => Err(ApiError::Unavailable(format!("{shown}: {status}"))),
        }
    }

    /// Books an answer (or a failure to get one) into the rate state.
    fn finish(&self, status: Option<StatusCode>, headers: &HeaderMap, error: Option<&ApiError>) {
        let mut s = self.state.lock().unwrap();
        s.in_flight = s.in_flight.saturating_sub(1);
        s.snap.last_status = status.map(|s| s.as_u16());
        s.snap.last_error = error.map(ToString::to_string);
        if let Some(l) = header_u64(headers, "ratelimit-limit") {
            s.snap.limit = Some(l);
        }
        if let Some(r) = header_u64(headers, "ratelimit-remaining") {
            let reset = header_u64(headers, "ratelimit-reset")
                .and_then(|r| DateTime::from_timestamp(r as i64, 0));
            match (s.snap.reset_at, reset) {
                // Answers of one window arrive out of order: the lowest count is the truest
                // (a later answer with more left was counted by the host earlier).
                (Some(known), Some(new)) if new == known => {
                    s.snap.remaining = Some(s.snap.remaining.map_or(r, |k| k.min(r)));
                }
                // An answer of a window that has passed says nothing of this one.
                (Some(known), Some(new)) if new < known => {}
                _ => {
                    s.snap.remaining = Some(r);
                    s.snap.reset_at = reset;
                }
            }
        }
        match error {
            Some(ApiError::RateLimited { until }) => {
                s.snap.refused += 1;
                s.secondary += 1;
                s.snap.blocked_until = Some(s.snap.blocked_until.map_or(*until, |b| b.max(*until)));
            }
            Some(_) => {}
            None => s.secondary = 0,
        }
    }
}

/// A reqwest error's text without its URL (ours are redacted where we show them).
fn without_url(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(i) = e.find(" for url (") {
        e.truncate(i);
    }
    e
}

/// `X-RateLimit-{name}` or `RateLimit-{name}` (GitLab), as a number.
fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(format!("x-{name}"))
        .or_else(|| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(now + chrono::Duration::seconds(secs.min(86_400) as i64));
    }
    DateTime::parse_from_rfc2822(v)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The `rel="next"` target of a `Link` header (GitHub, GitLab, Gitea).
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let h = headers(&[(
            "link",
            r#"<https://api.github.com/repositories/1/pulls/2/reviews?page=2>; rel="next", <https://api.github.com/repositories/1/pulls/2/reviews?page=5>; rel="last""#,
        )]);
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/repositories/1/pulls/2/reviews?page=2")
        );
        let last = headers(&[(
            "link",
            r#"<https://x/?page=1>; rel="prev", <https://x/?page=1>; rel="first""#,
        )]);
        assert_eq!(next_link(&last), None);
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "30")]), now),
            Some(now + chrono::Duration::seconds(30))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Fri, 04 Dec 2026 10:05:00 GMT")]),
                now
            ),
            Some(now + chrono::Duration::minutes(5))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
    }

    #[test]
    fn rate_headers_with_and_without_the_x_prefix() {
        assert_eq!(
            header_u64(
                &headers(&[("x-ratelimit-remaining", "7")]),
                "ratelimit-remaining"
            ),
            Some(7)
        );
        assert_eq!(
            header_u64(
                &headers(&[("ratelimit-remaining", "3")]),
                "ratelimit-remaining"
            ),
            Some(3)
        );
    }

    #[test]
    fn the_client_stops_at_zero_remaining_counting_requests_in_flight() {
        let config = HostConfig::new(
            HostKind::GitHub,
            "http://127.0.0.1:9",
            crate::config::Secret::new("t"),
        )
        .unwrap();
        let c = HostClient::new(&config, Duration::from_secs(1));
        let now = Utc::now();
        let reset = now + chrono::Duration::seconds(30);
        c.finish(
            Some(StatusCode::OK),
            &headers(&[
                ("x-ratelimit-remaining", "2"),
                ("x-ratelimit-reset", &reset.timestamp().to_string()),
            ]),
            None,
        );
        // Two slots, then none until the reset (and a second).
        c.admit(now).unwrap();
        c.admit(now).unwrap();
        let until = match c.admit(now) {
            Err(ApiError::RateLimited { until }) => until,
            other => panic!("{other:?}"),
        };
        assert!(until > reset, "{until} after {reset}");
        // After the reset the next answer tells the new window.
        assert!(c.admit(reset + chrono::Duration::seconds(2)).is_ok());
    }

    #[test]
    fn the_token_is_sensitive_and_not_in_debug_output() {
        let config = HostConfig::new(
            HostKind::Gitea,
            "https://gitea.example",
            crate::config::Secret::new("s3cr3t-token"),
        )
        .unwrap();
        let c = HostClient::new(&config, Duration::from_secs(1));
        assert!(c.auth.1.is_sensitive());
        assert!(!format!("{:?}", c.auth.1).contains("s3cr3t"));
        assert!(!format!("{config:?}").contains("s3cr3t"));
    }
}
