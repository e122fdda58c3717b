//! A stand-in for the Service Bus REST endpoint: records every request exactly as it
//! arrives and answers from a script (status codes, delays), 201 when the script is empty.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path: String,
    /// Lowercased names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status we answered.
    pub status: u16,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `MessageId` of the `BrokerProperties` header.
    pub fn message_id(&self) -> String {
        let bp: serde_json::Value =
            serde_json::from_str(self.header("brokerproperties").unwrap()).unwrap();
        bp["MessageId"].as_str().unwrap().to_string()
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Status(u16),
    /// Answer 201 only after this long (longer than the client's timeout: a timeout).
    Delay(Duration),
}

#[derive(Debug, Default)]
struct State {
    requests: Vec<Captured>,
    script: VecDeque<Answer>,
    /// The `group.*` messages' requests.
    group_requests: Vec<Captured>,
    /// Answer this when the script is empty (default 201).
    fallback: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct FakeServiceBus {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeServiceBus {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let s = s.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                                })
                                .collect();
                            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                            // The script is for messages about objects: a `group.*` message
                            // (contract §9) gets the fallback and is kept apart, so a test
                            // scripting an object's message sees exactly its attempts.
                            let group = is_group(&body);
                            let answer = {
                                let mut st = s.lock().unwrap();
                                let fallback = st.fallback.unwrap_or(201);
                                if group {
                                    Answer::Status(fallback)
                                } else {
                                    st.script.pop_front().unwrap_or(Answer::Status(fallback))
                                }
                            };
                            // Recorded on arrival. A delayed answer is a message the broker
                            // took but whose sender timed out: it is enqueued (201), and the
                            // sender's retry is a duplicate by MessageId.
                            let status = match answer {
                                Answer::Status(code) => code,
                                Answer::Delay(_) => 201,
                            };
                            let captured = Captured {
                                method,
                                path,
                                headers,
                                body,
                                status,
                            };
                            {
                                let mut st = s.lock().unwrap();
                                if group {
                                    st.group_requests.push(captured);
                                } else {
                                    st.requests.push(captured);
                                }
                            }
                            if let Answer::Delay(d) = answer {
                                tokio::time::sleep(d).await;
                            }
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeServiceBus { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn script(&self, answers: &[Answer]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(answers.iter().copied());
    }

    /// What to answer once the script is used up.
    pub fn fallback(&self, status: u16) {
        self.state.lock().unwrap().fallback = Some(status);
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The messages about objects it accepted, once per `MessageId` (what a topic with
    /// duplicate detection holds); `accepted_all` adds the
    /// `group.*` ones (contract §9).
    pub fn accepted(&self) -> Vec<Captured> {
        once_each(self.requests())
    }

    /// Every message it accepted, once each: the objects' in order, then the groups'.
    pub fn accepted_all(&self) -> Vec<Captured> {
        let groups = self.state.lock().unwrap().group_requests.clone();
        let mut all = self.accepted();
        all.extend(once_each(groups));
        all
    }

    /// Waits (bounded) until `n` messages were accepted.
    pub async fn wait_accepted(&self, n: usize) -> Vec<Captured> {
        for _ in 0..500 {
            if self.accepted().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.accepted()
    }

    /// Waits (bounded) until at least `n` requests arrived, whatever their answer.
    pub async fn wait_requests(&self, n: usize) -> Vec<Captured> {
        for _ in 0..500 {
            if self.requests().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.requests()
    }
}

fn once_each(requests: Vec<Captured>) -> Vec<Captured> {
    let mut seen = std::collections::HashSet::new();
    requests
        .into_iter()
        .filter(|r| r.status == 201 && seen.insert(r.message_id()))
        .collect()
}

fn is_group(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|m| crate::helpers::is_group_message(&m))
}
