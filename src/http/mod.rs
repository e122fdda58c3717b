//! The HTTP edge: a hyper 1.x HTTP/1.1 server, a hand-written router, and the request
//! plumbing every endpoint shares (method checks, content types, body limits).
//!
//! hyper directly rather than a framework: fluxtrail has a handful of routes, needs the raw
//! body bytes for signatures, and must answer every failure with the contract's status and
//! JSON shape; a framework's own rejections (its 404/405/413 bodies) would have to be
//! overridden one by one. Invariant: only this module knows status codes.

mod audit;
pub mod error;
mod hooks;
mod read;
mod timer;
pub mod ui;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::ledger::Ledger;
use crate::outbox::Dispatcher;
use crate::publish::Publisher;
use crate::sweep::SweepSettings;
pub use error::{ApiError, Body};

/// Every route Azure should reach, by the function that exposes it (`function.json-templates/`):
/// (function name, method, path). `tests/it/hosting.rs` keeps the two in agreement. Not here:
/// `GET /` (the host's own readiness probe).
pub const FUNCTION_ROUTES: &[(&str, &str, &str)] = &[
    ("GitHook", "POST", "/api/hooks/git/{provider}"),
    ("FluxHook", "POST", "/api/hooks/flux"),
    ("FluxHookCluster", "POST", "/api/hooks/flux/{cluster}"),
    ("Commit", "GET", "/api/commits/{sha}"),
    ("Commits", "GET", "/api/commits"),
    ("Changes", "GET", "/api/changes"),
    ("ChangesSummary", "GET", "/api/changes/summary"),
    ("Groups", "GET", "/api/groups"),
    ("Dora", "GET", "/api/dora"),
    ("Objects", "GET", "/api/objects"),
    ("Incidents", "GET", "/api/incidents"),
    ("Outbox", "GET", "/api/outbox"),
    ("OutboxRedrive", "POST", "/api/outbox/redrive"),
    (
        "ObjectRetire",
        "POST",
        "/api/objects/{cluster}/{kind}/{namespace}/{name}/retire",
    ),
    ("Health", "GET", "/api/health"),
    ("Ui", "GET", "/api/ui"),
    ("UiPage", "GET", "/api/ui/{*path}"),
    // The timer trigger: the host POSTs the invocation to /{FunctionName}.
    ("Sweep", "POST", "/Sweep"),
];

/// Everything a request handler may use.
#[derive(Debug)]
pub struct AppState {
    pub settings: Settings,
    pub ledger: Ledger,
    pub publisher: Arc<dyn Publisher>,
    pub dispatcher: Dispatcher,
    pub sweep: SweepSettings,
    /// The backfill worker (part 12), when a host API is configured: the sweep drains it too.
    pub backfill: Option<Arc<crate::backfill::Backfill>>,
}

/// At most this many request headers, and this many bytes of request line + headers; past
/// either, hyper answers 431 and closes the connection. Git hosts send about 20 headers.
const MAX_HEADERS: usize = 100;
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long in-flight requests get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Accepts connections until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let timeout = state.settings.request_timeout;
    // One permit per open connection: past the cap, clients wait in the listen backlog
    // instead of each costing a task and buffers.
    let slots = Arc::new(tokio::sync::Semaphore::new(state.settings.max_connections));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = service_fn(move |req| handle(state.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeout)
                    .max_headers(MAX_HEADERS)
                    .max_buf_size(MAX_HEADER_BYTES)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // Never log the query string (Functions keys travel in `?code=`) or headers.
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = route(&state, req)
        .await
        .unwrap_or_else(ApiError::into_response);
    tracing::info!(%method, %path, status = resp.status().as_u16(), "request");
    Ok(resp)
}

async fn route(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        // The Functions host's readiness probe.
        [] => {
            allow(&req, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            Ok(empty(StatusCode::OK))
        }
        // The timer trigger (custom-handler invocation protocol, not under /api).
        ["Sweep"] => {
            allow(&req, &[Method::POST], "POST")?;
            timer::sweep(state, req).await
        }
        // The evidence UI (part 13): the page at any path under /api/ui, and its assets.
        ["api", "ui", rest @ ..] => ui::serve(&req, rest),
        ["api", "hooks", "git", provider] => {
            allow(&req, &[Method::POST], "POST")?;
            hooks::git(state, provider, req).await
        }
        ["api", "hooks", "git"] => Err(ApiError::UnknownProvider(String::new())),
        ["api", "hooks", "flux"] => {
            allow(&req, &[Method::POST], "POST")?;
            hooks::flux(state, None, req).await
        }
        ["api", "hooks", "flux", cluster] => {
            allow(&req, &[Method::POST], "POST")?;
            let cluster = percent_encoding::percent_decode_str(cluster)
                .decode_utf8_lossy()
                .into_owned();
            hooks::flux(state, Some(&cluster), req).await
        }
        ["api", "objects"] => {
            allow(&req, &[Method::GET], "GET")?;
            read::objects(state, req.uri().query(), req.headers()).await
        }
        ["api", "objects", cluster, kind, namespace, name, "retire"] => {
            allow(&req, &[Method::POST], "POST")?;
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            let object = crate::flux::ObjectRef {
                cluster: decode(cluster),
                kind: decode(kind),
                namespace: decode(namespace),
                name: decode(name),
            };
            read::retire(state, &object, req.headers()).await
        }
        ["api", "outbox"] => {
            allow(&req, &[Method::GET], "GET")?;
            read::outbox(state, req.uri().query(), req.headers()).await
        }
        ["api", "outbox", "redrive"] => {
            allow(&req, &[Method::POST], "POST")?;
            read::redrive(state, req.headers()).await
        }
        ["api", "incidents"] => {
            allow(&req, &[Method::GET], "GET")?;
            read::incidents(state, req.uri().query(), req.headers()).await
        }
        ["api", "commits"] => {
            allow(&req, &[Method::GET], "GET")?;
            audit::branch_commits(state, req.uri().query(), req.headers()).await
        }
        ["api", "changes"] => {
            allow(&req, &[Method::GET], "GET")?;
            audit::changes(state, req.uri().query(), req.headers()).await
        }
        ["api", "changes", "summary"] => {
            allow(&req, &[Method::GET], "GET")?;
            audit::summary(state, req.uri().query(), req.headers()).await
        }
        ["api", "groups"] => {
            allow(&req, &[Method::GET], "GET")?;
            audit::groups(state, req.uri().query(), req.headers()).await
        }
        ["api", "dora"] => {
            allow(&req, &[Method::GET], "GET")?;
            audit::dora(state, req.uri().query(), req.headers()).await
        }
        ["api", "commits", sha] => {
            allow(&req, &[Method::GET], "GET")?;
            read::commit(state, sha, req.headers()).await
        }
        ["api", "health"] => {
            allow(&req, &[Method::GET], "GET")?;
            read::health(state, req.headers()).await
        }
        _ => Err(ApiError::NotFound(path)),
    }
}

fn allow<B>(req: &Request<B>, methods: &[Method], allow: &'static str) -> Result<(), ApiError> {
    if methods.contains(req.method()) {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed { allow })
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(error::full(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// The media type of a request, lowercased, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Reads the whole body, refusing more than `limit` bytes: early from `Content-Length`,
/// and while streaming for chunked bodies that announce nothing; and refusing bodies that
/// take longer than `timeout` to arrive (408, connection closed).
async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<(hyper::http::request::Parts, Bytes), ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let (parts, body) = req.into_parts();
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout(timeout))?;
    match collected {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::BodyRead(e.to_string())),
    }
}
