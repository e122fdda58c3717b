//! The bare-hyper baseline of the load harness (scripts/bench-load.sh): reads a POSTed body and
//! answers 202 — `read` mode — or also verifies its `X-Signature` HMAC-SHA256 and parses the
//! JSON — `verify` mode. Same hyper/tokio setup as fluxtrail, nothing else: the ceiling.
//!
//!     cargo run --release --example baseline -- 127.0.0.1:9000 verify <hmac key>

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let verify = args.get(2).map(String::as_str) == Some("verify");
    let key: Arc<Vec<u8>> = Arc::new(args.get(3).cloned().unwrap_or_default().into_bytes());
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        let key = key.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let key = key.clone();
                async move {
                    let sig = req
                        .headers()
                        .get("x-signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    let mut status = StatusCode::ACCEPTED;
                    if verify {
                        let ok = sig
                            .as_deref()
                            .and_then(fluxtrail::git::signature::parse_prefixed)
                            .is_some_and(|(algo, digest)| {
                                fluxtrail::git::signature::hmac_verify(algo, &key, &body, &digest)
                            });
                        if !ok {
                            status = StatusCode::UNAUTHORIZED;
                        } else if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                            status = StatusCode::BAD_REQUEST;
                        }
                    }
                    let mut resp =
                        Response::new(Full::new(Bytes::from_static(b"{\"status\":\"accepted\"}")));
                    *resp.status_mut() = status;
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
