//! A fault-injecting HTTP proxy between fluxtrail and Azurite: every request is forwarded
//! unless a seeded roll says otherwise —
//! - **refuse**: answer 503 `ServerBusy` without forwarding (the SDK retries, bounded);
//! - **lose**: forward, let the write land, then answer 503 (the response lost: the SDK's
//!   retry then meets its own write — 409 for an insert, 412 for a conditional update);
//! - **delay**: hold the request 50–400 ms before forwarding (a slow call that lands after
//!   later ones);
//! - **precondition**: answer 412 to a conditional write (`If-Match`) without forwarding (a
//!   spurious conflict: the writer must re-read and try again);
//! - **outage**: refuse everything for 2–6 s (longer than the SDK's own retries, so the
//!   delivery in flight is answered 503 and its sender retries it).
//!
//! What was injected is counted, per kind.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Per-mille chances of each fault, per request.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub refuse: u64,
    pub lose: u64,
    pub delay: u64,
    pub precondition: u64,
    /// Per ten thousand requests: the chance that one starts an outage.
    pub outage: u64,
}

impl Faults {
    pub const NONE: Faults = Faults {
        refuse: 0,
        lose: 0,
        delay: 0,
        precondition: 0,
        outage: 0,
    };
}

#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub lost: AtomicU64,
    pub delayed: AtomicU64,
    pub preconditions: AtomicU64,
    pub outages: AtomicU64,
}

impl Counts {
    pub fn injected(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
            + self.lost.load(Ordering::Relaxed)
            + self.delayed.load(Ordering::Relaxed)
            + self.preconditions.load(Ordering::Relaxed)
            + self.outages.load(Ordering::Relaxed)
    }
}

/// A small deterministic generator (xorshift64*), so a run's faults follow its seed.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Debug, Clone)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    faults: Arc<Mutex<State>>,
}

/// The rates, the generator, and the end of the outage under way.
#[derive(Debug)]
struct State {
    faults: Faults,
    rng: Rng,
    outage_until: Option<tokio::time::Instant>,
}

impl FaultProxy {
    /// Listens on a free port and forwards to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str, faults: Faults, seed: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let state = Arc::new(Mutex::new(State {
            faults,
            rng: Rng::new(seed),
            outage_until: None,
        }));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let upstream = upstream.trim_end_matches('/').to_string();
        let (c, s) = (counts.clone(), state.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (c, s, client, upstream) =
                    (c.clone(), s.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (c, s, client, upstream) =
                            (c.clone(), s.clone(), client.clone(), upstream.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                handle(req, &c, &s, &client, &upstream).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FaultProxy {
            addr,
            counts,
            faults: state,
        }
    }

    /// Changes the fault rates from now on.
    pub fn set(&self, faults: Faults) {
        let mut st = self.faults.lock().unwrap();
        st.faults = faults;
        st.outage_until = None;
    }

    /// An Azurite connection string whose table endpoint is this proxy.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;TableEndpoint=http://{}/devstoreaccount1;",
            self.addr
        )
    }
}

enum Action {
    Forward,
    Refuse,
    Lose,
    Delay(Duration),
    Precondition,
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    counts: &Counts,
    state: &Mutex<State>,
    client: &reqwest::Client,
    upstream: &str,
) -> Response<Full<Bytes>> {
    counts.requests.fetch_add(1, Ordering::Relaxed);
    let write = req.method() != hyper::Method::GET;
    let conditional = req
        .headers()
        .get("if-match")
        .is_some_and(|v| v.as_bytes() != b"*");
    let action = {
        let mut st = state.lock().unwrap();
        let f = st.faults;
        let now = tokio::time::Instant::now();
        if st.outage_until.is_some_and(|until| now < until) {
            Action::Refuse
        } else if st.rng.below(10_000) < f.outage {
            let ms = 2000 + st.rng.below(4000);
            st.outage_until = Some(now + Duration::from_millis(ms));
            counts.outages.fetch_add(1, Ordering::Relaxed);
            Action::Refuse
        } else if st.rng.chance(f.refuse) {
            Action::Refuse
        } else if write && st.rng.chance(f.lose) {
            Action::Lose
        } else if st.rng.chance(f.delay) {
            Action::Delay(Duration::from_millis(50 + st.rng.below(350)))
        } else if conditional && st.rng.chance(f.precondition) {
            Action::Precondition
        } else {
            Action::Forward
        }
    };
    let status = |code: u16, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r
    };
    match action {
        Action::Refuse => {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            return status(
                503,
                r#"{"odata.error":{"code":"ServerBusy","message":{"lang":"en-US","value":"injected"}}}"#,
            );
        }
        Action::Precondition => {
            counts.preconditions.fetch_add(1, Ordering::Relaxed);
            return status(
                412,
                r#"{"odata.error":{"code":"UpdateConditionNotSatisfied","message":{"lang":"en-US","value":"injected"}}}"#,
            );
        }
        Action::Delay(d) => {
            counts.delayed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(d).await;
        }
        Action::Forward | Action::Lose => {}
    }
    let lose = matches!(action, Action::Lose);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let url = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut out = client.request(parts.method.clone(), url).body(body);
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(_) => return status(502, r#"{"error":"upstream unreachable"}"#),
    };
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    if lose {
        counts.lost.fetch_add(1, Ordering::Relaxed);
        return status(
            503,
            r#"{"odata.error":{"code":"ServerBusy","message":{"lang":"en-US","value":"injected after the write"}}}"#,
        );
    }
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            r.headers_mut().append(k, v.clone());
        }
    }
    r
}
