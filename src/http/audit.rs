//! The audit API (contract §7): branch history, the audit feed (JSON pages or one streamed
//! CSV) and approval coverage. Every list is a key-range read of the ledger's index rows.

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{HeaderMap, Response, StatusCode};
use serde_json::json;

use super::error::{json_response, BoxError};
use super::read::authorize;
use super::{ApiError, AppState, Body};
use crate::domain::RepoKey;
use crate::ledger::audit::{csv_line, BranchCursor, ChangeQuery, Cursor, Opaque, CSV_HEADER};
use crate::ledger::groups::{GroupCursor, GroupState};
use crate::ledger::Ledger;

/// Default and largest page (contract §7).
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;
/// The default window: the last 30 days.
const DEFAULT_WINDOW_DAYS: i64 = 30;

/// The query's parameters, each at most once; a repeated or unknown one is a 400 (a typo such
/// as `clustr=` silently widening an audit query is worse than an error).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>, known: &[&str]) -> Result<Params, ApiError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            // `code` is the Functions key, which the host passes on.
            if k == "code" {
                continue;
            }
            if !known.contains(&k.as_ref()) {
                return Err(ApiError::InvalidQuery(format!(
                    "unknown parameter {k:?}; expected one of {}",
                    known.join(", ")
                )));
            }
            if out.iter().any(|(name, _)| *name == k) {
                return Err(ApiError::InvalidQuery(format!("{k} is given twice")));
            }
            out.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params(out))
    }

    /// A non-empty value of a text filter (`cluster=` counts as absent, as on `/api/objects`).
    fn get(&self, name: &str) -> Option<&str> {
        self.raw(name).filter(|v| !v.is_empty())
    }

    /// The value as given: for typed parameters an empty one is malformed (`to=` is no time).
    fn raw(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.raw(name)
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.to_utc())
                    .map_err(|_| {
                        ApiError::InvalidQuery(format!(
                            "{name}={v:?} is not an RFC 3339 time such as 2026-11-30T10:00:00Z"
                        ))
                    })
            })
            .transpose()
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.raw("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(ApiError::InvalidQuery(format!(
                    "limit={v:?} must be a whole number from 1 to {MAX_LIMIT}"
                ))),
            },
        }
    }

    fn window(&self) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        let to = self.time("to")?.unwrap_or_else(Utc::now);
        let from = self
            .time("from")?
            .unwrap_or(to - Duration::days(DEFAULT_WINDOW_DAYS));
        if from > to {
            return Err(ApiError::InvalidQuery(format!(
                "from ({}) is after to ({})",
                from.to_rfc3339(),
                to.to_rfc3339()
            )));
        }
        Ok((from, to))
    }

    fn repository(&self) -> Result<Option<RepoKey>, ApiError> {
        self.get("repository")
            .map(|r| {
                RepoKey::from_url(r).map_err(|e| {
                    ApiError::InvalidQuery(format!("repository={r:?} is not a repository: {e}"))
                })
            })
            .transpose()
    }
}

/// `GET /api/commits?repository=&ref=`: a branch's pushed commits as evidence.
pub(super) async fn branch_commits(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    let p = Params::parse(
        query,
        &["repository", "ref", "limit", "cursor", "view", "cluster"],
    )?;
    // `view=clusters`: each commit's targets summarised per cluster (the UI's matrix).
    let summary = match p.get("view") {
        None | Some("targets") => false,
        Some("clusters") => true,
        Some(v) => {
            return Err(ApiError::InvalidQuery(format!(
                "view={v:?}: targets or clusters"
            )))
        }
    };
    let repository = p
        .repository()?
        .ok_or_else(|| ApiError::InvalidQuery("repository is required".into()))?;
    let git_ref = match p.get("ref") {
        None => "refs/heads/main".to_string(),
        Some(r) if r.starts_with("refs/") => r.to_string(),
        Some(r) => format!("refs/heads/{r}"),
    };
    crate::domain::GitRef::parse(&git_ref)
        .map_err(|e| ApiError::InvalidQuery(format!("ref={git_ref:?}: {e}")))?;
    let limit = p.limit()?;
    let cursor = p
        .raw("cursor")
        .map(|c| BranchCursor::decode(c).ok_or_else(|| bad_cursor(c)))
        .transpose()?;
    if cursor.as_ref().is_some_and(|c| !c.rk.starts_with("log|")) {
        return Err(bad_cursor(p.raw("cursor").unwrap_or_default()));
    }
    // `cluster=`: only that cluster's targets (the matrix expanding one cluster).
    let (commits, next) = state
        .ledger
        .branch_commits(
            &repository,
            &git_ref,
            cursor.as_ref(),
            limit,
            summary,
            p.get("cluster"),
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "repository": repository.as_str(),
            "ref": git_ref,
            "commits": commits,
            "next": next.map(|c| c.encode()),
        }),
    ))
}

fn bad_cursor(c: &str) -> ApiError {
    ApiError::InvalidQuery(format!(
        "cursor={c:?} is not a cursor of this query (take `next` from the previous page)"
    ))
}

const CHANGE_PARAMS: &[&str] = &[
    "cluster",
    "namespace",
    "repository",
    "from",
    "to",
    "approved",
    "limit",
    "cursor",
    "format",
];

fn change_query(p: &Params) -> Result<ChangeQuery, ApiError> {
    let (from, to) = p.window()?;
    let approved = match p.raw("approved") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(v) => {
            return Err(ApiError::InvalidQuery(format!(
                "approved={v:?} must be true or false"
            )))
        }
    };
    Ok(ChangeQuery {
        cluster: p.get("cluster").map(str::to_string),
        namespace: p.get("namespace").map(str::to_string),
        repository: p.repository()?,
        from,
        to,
        approved,
    })
}

/// `GET /api/changes`: the audit feed, a page of JSON or the whole window as CSV.
pub(super) async fn changes(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    let p = Params::parse(query, CHANGE_PARAMS)?;
    let q = change_query(&p)?;
    let csv = match p.raw("format") {
        Some("csv") => true,
        Some("json") => false,
        Some(f) => {
            return Err(ApiError::InvalidQuery(format!(
                "format={f:?} must be json or csv"
            )))
        }
        None => headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.split(',').any(|m| m.trim().starts_with("text/csv"))),
    };
    let cursor = p
        .raw("cursor")
        .map(|c| {
            Cursor::decode(c)
                .filter(|cur| Ledger::cursor_fits(&q, cur))
                .ok_or_else(|| bad_cursor(c))
        })
        .transpose()?;
    // Checked for CSV too, though the export is the whole window: a malformed parameter is a
    // 400 whatever the format.
    let limit = p.limit()?;
    if csv {
        return export_csv(state, q, cursor).await;
    }
    let page = state.ledger.changes(&q, cursor.as_ref(), limit).await?;
    let rows: Vec<_> = page.changes.iter().map(|c| c.to_json()).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"changes": rows, "next": page.next.map(|c| c.encode())}),
    ))
}

/// The CSV export: the first batch is read before answering (a store failure is still a
/// 503), then the rest is streamed batch by batch from a task, at most a few batches ahead
/// of the client; a failure midway ends the response without its last chunk.
async fn export_csv(
    state: &AppState,
    q: ChangeQuery,
    cursor: Option<Cursor>,
) -> Result<Response<Body>, ApiError> {
    let ledger = state.ledger.clone();
    let mut scan = ledger.change_scan(&q, cursor.as_ref(), 512).await?;
    let (first, mut more) = scan.export_batch(&ledger).await?;
    let mut text = String::new();
    csv_line(&CSV_HEADER, &mut text);
    for c in &first {
        c.write_csv(&mut text);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(4);
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(text))).await.is_err() {
            return;
        }
        while more {
            match scan.export_batch(&ledger).await {
                Ok((batch, after)) => {
                    let mut text = String::with_capacity(batch.len() * 256);
                    for c in &batch {
                        c.write_csv(&mut text);
                    }
                    if tx.send(Ok(Bytes::from(text))).await.is_err() {
                        return; // the client went away
                    }
                    more = after;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "CSV export failed midway; ending the response incomplete");
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    resp.headers_mut().insert(
        CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"fluxtrail-changes.csv\""),
    );
    Ok(resp)
}

/// `GET /api/changes/summary`: approval coverage over a window.
pub(super) async fn summary(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    let p = Params::parse(query, &["cluster", "from", "to"])?;
    let q = change_query(&p)?;
    let summary = state.ledger.change_summary(&q).await?;
    Ok(json_response(StatusCode::OK, &summary))
}

/// `GET /api/groups?state=open|resolved`: incident groups, one per cause (contract §9).
pub(super) async fn groups(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    let p = Params::parse(query, &["state", "limit", "cursor"])?;
    let which = match p.raw("state") {
        None => None,
        Some("open") => Some(GroupState::Open),
        Some("resolved") => Some(GroupState::Resolved),
        Some(v) => {
            return Err(ApiError::InvalidQuery(format!(
                "state={v:?} must be open or resolved"
            )))
        }
    };
    let limit = p.limit()?;
    let cursor = p
        .raw("cursor")
        .map(|c| {
            GroupCursor::decode(c)
                .filter(|cur| which.is_none_or(|w| w == cur.s))
                .ok_or_else(|| bad_cursor(c))
        })
        .transpose()?;
    let page = state.ledger.groups(which, cursor.as_ref(), limit).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"groups": page.groups, "next": page.next.map(|c| c.encode())}),
    ))
}

/// `GET /api/dora?from=&to=&cluster=&repository=`: delivery metrics from what really ran
/// (contract §8).
pub(super) async fn dora(
    state: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    authorize(state, headers)?;
    let p = Params::parse(query, &["cluster", "repository", "from", "to"])?;
    let q = change_query(&p)?;
    let metrics = state.ledger.dora(&q).await?;
    Ok(json_response(StatusCode::OK, &metrics))
}
