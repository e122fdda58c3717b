//! Service Bus: each message sent to a topic with `azure_messaging_servicebus` 0.21
//! (`TopicClient`, the REST API).
//!
//! The crate hard-codes `https://{namespace}.servicebus.windows.net/…` and signs with SAS only,
//! but sends through an `Arc<dyn HttpClient>`. Our [`Transport`] is that client: it redirects
//! the request to `FLUXTRAIL_SERVICEBUS_ENDPOINT` when set (the SAS token's `sr` still names
//! the namespace, as in production) and, for managed identity, replaces the SAS
//! `Authorization` with an Entra ID bearer token for `https://servicebus.azure.net/.default`,
//! which the REST API accepts. Everything else on the wire is the crate's.
//!
//! The crate retries nothing; the outbox does (backoff, parking). Errors are classified
//! here: 429, 5xx, timeouts and connection failures are worth retrying; 401/403/404/410 mean
//! the configuration is wrong (kept, retried slowly, reported unhealthy).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::auth::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::headers::AUTHORIZATION;
use azure_core::{HttpClient, Request};
use azure_messaging_servicebus::prelude::{TopicClient, TopicSender};
use azure_messaging_servicebus::service_bus::{SendMessageOptions, SettableBrokerProperties};
use url::Url;

use super::{PublishError, Publisher};
use crate::config::Secret;
use crate::core::Message;

/// The scope of an Entra ID token for Service Bus.
const SCOPE: &str = "https://servicebus.azure.net/.default";

/// How to reach the topic, from `FLUXTRAIL_SERVICEBUS*`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceBusConfig {
    /// The namespace name (`contoso` of `contoso.servicebus.windows.net`).
    pub namespace: String,
    pub topic: String,
    pub auth: Auth,
    pub endpoint: Option<Url>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    Sas { key_name: String, key: Secret },
    ManagedIdentity,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SbConfigError {
    #[error("FLUXTRAIL_SERVICEBUS: {0}")]
    Invalid(String),
    #[error("FLUXTRAIL_SERVICEBUS_ENDPOINT={0:?} is not an http(s) URL")]
    Endpoint(String),
}

impl ServiceBusConfig {
    /// `Endpoint=sb://<ns>.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…[;EntityPath=<topic>]`,
    /// or a namespace (`<ns>`, `<ns>.servicebus.windows.net`, `sb://…`, `https://…`) for
    /// managed identity. `EntityPath` names the topic when present.
    pub fn parse(value: &str, topic: &str, endpoint: Option<&str>) -> Result<Self, SbConfigError> {
        let value = value.trim();
        let endpoint = endpoint
            .map(|e| {
                Url::parse(e.trim())
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                    .ok_or_else(|| SbConfigError::Endpoint(e.to_string()))
            })
            .transpose()?;
        let mut topic = topic.to_string();
        let (host, auth) = if value.contains('=') {
            let mut parts: HashMap<String, String> = HashMap::new();
            for part in value.split(';').filter(|p| !p.trim().is_empty()) {
                let (k, v) = part.split_once('=').ok_or_else(|| {
                    SbConfigError::Invalid(format!(
                        "connection string part {part:?} is not key=value"
                    ))
                })?;
                parts.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
            let endpoint = parts.get("endpoint").ok_or_else(|| {
                SbConfigError::Invalid("connection string has no Endpoint".into())
            })?;
            let key_name = parts.get("sharedaccesskeyname").ok_or_else(|| {
                SbConfigError::Invalid("connection string has no SharedAccessKeyName".into())
            })?;
            let key = parts.get("sharedaccesskey").ok_or_else(|| {
                SbConfigError::Invalid("connection string has no SharedAccessKey".into())
            })?;
            if let Some(entity) = parts.get("entitypath").filter(|e| !e.is_empty()) {
                topic = entity.clone();
            }
            (
                host_of(endpoint)?,
                Auth::Sas {
                    key_name: key_name.clone(),
                    key: Secret::new(key.clone()),
                },
            )
        } else {
            (host_of(value)?, Auth::ManagedIdentity)
        };
        let namespace = host.split('.').next().unwrap_or_default().to_string();
        if namespace.is_empty() {
            return Err(SbConfigError::Invalid("no namespace".into()));
        }
        Ok(ServiceBusConfig {
            namespace,
            topic,
            auth,
            endpoint,
        })
    }
}

fn host_of(s: &str) -> Result<String, SbConfigError> {
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let host = rest
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host.is_empty() {
        Err(SbConfigError::Invalid(format!("{s:?} names no namespace")))
    } else {
        Ok(host)
    }
}

/// The crate's HTTP client: reqwest with timeouts, plus the endpoint redirect and the bearer
/// token (see the module note).
#[derive(Debug)]
struct Transport {
    client: reqwest::Client,
    endpoint: Option<Url>,
    credential: Option<Arc<dyn TokenCredential>>,
}

#[async_trait]
impl HttpClient for Transport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<azure_core::Response> {
        let mut url = request.url().clone();
        if let Some(base) = &self.endpoint {
            let path = format!("{}{}", base.path().trim_end_matches('/'), url.path());
            url = base.clone();
            url.set_path(&path);
            url.set_query(request.url().query());
        }
        let mut out = Request::new(url, *request.method());
        for (name, value) in request.headers().iter() {
            if self.credential.is_some() && name == &AUTHORIZATION {
                continue;
            }
            out.insert_header(name.clone(), value.clone());
        }
        if let Some(cred) = &self.credential {
            let token = cred.get_token(&[SCOPE]).await?;
            out.insert_header(AUTHORIZATION, format!("Bearer {}", token.token.secret()));
        }
        out.set_body(request.body().clone());
        self.client.execute_request(&out).await
    }
}

#[derive(Debug)]
pub struct ServiceBusPublisher {
    sender: TopicSender,
    target: String,
    /// The last publish's configuration error, for `/api/health`.
    misconfigured: Mutex<Option<String>>,
}

impl ServiceBusPublisher {
    pub fn new(config: &ServiceBusConfig, timeout: Duration) -> Result<Self, PublishError> {
        let credential = match &config.auth {
            Auth::Sas { .. } => None,
            Auth::ManagedIdentity => Some(
                azure_identity::create_default_credential()
                    .map_err(|e| PublishError::Configuration(format!("managed identity: {e}")))?,
            ),
        };
        Self::with_credential(config, timeout, credential)
    }

    /// As `new`, with the token credential given (managed identity in production; tests
    /// pass their own).
    pub fn with_credential(
        config: &ServiceBusConfig,
        timeout: Duration,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Self, PublishError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| PublishError::Configuration(format!("HTTP client: {e}")))?;
        let transport: Arc<dyn HttpClient> = Arc::new(Transport {
            client,
            endpoint: config.endpoint.clone(),
            credential,
        });
        // With managed identity the crate still computes a SAS header, which the transport
        // replaces; its key is never used.
        let (key_name, key) = match &config.auth {
            Auth::Sas { key_name, key } => (key_name.clone(), key.expose().to_string()),
            Auth::ManagedIdentity => ("managed-identity".to_string(), "unused".to_string()),
        };
        let client = TopicClient::new(transport, &config.namespace, &config.topic, key_name, key)
            .map_err(|e| PublishError::Configuration(e.to_string()))?;
        Ok(ServiceBusPublisher {
            sender: client.topic_sender(),
            target: format!("{}/{}", config.namespace, config.topic),
            misconfigured: Mutex::new(None),
        })
    }

    /// The request options of one message: broker properties and the application properties
    /// subscriptions filter on.
    pub fn options(message: &Message) -> SendMessageOptions {
        let o = &message.object;
        let mut props = HashMap::new();
        let mut put = |k: &str, v: &str| {
            // Quoted: the REST API reads a quoted header value as a string property, so a
            // cluster named `2024` is still the string '2024' in a SQL filter.
            props.insert(k.to_string(), format!("\"{}\"", v.replace('"', "")));
        };
        put("type", message.kind.as_str());
        // A message about a (commit, cluster) names no object; one about a group (which may
        // span clusters) not even a cluster.
        for (k, v) in [
            ("cluster", &o.cluster),
            ("namespace", &o.namespace),
            ("kind", &o.kind),
            ("name", &o.name),
        ] {
            if !v.is_empty() {
                put(k, v);
            }
        }
        put("severity", message.kind.severity());
        if let Some(r) = &message.repository {
            put("repository", r);
        }
        if let Some(g) = &message.group_id {
            put("groupid", g);
        }
        SendMessageOptions {
            content_type: Some("application/cloudevents+json".into()),
            broker_properties: Some(SettableBrokerProperties {
                message_id: Some(message.id.clone()),
                correlation_id: message.sha.clone(),
                label: Some(message.kind.as_str().into()),
                // One session per object: session-enabled subscriptions receive an object's
                // messages in order; others ignore it.
                session_id: Some(
                    message
                        .custom
                        .as_ref()
                        .map_or_else(|| o.subject(), |c| c.subject.clone()),
                ),
                ..Default::default()
            }),
            custom_properties: Some(props),
        }
    }
}

fn classify(e: azure_core::Error) -> PublishError {
    match e.kind() {
        ErrorKind::HttpResponse { status, error_code } => {
            let status = u16::from(*status);
            let detail = format!(
                "HTTP {status}{}",
                error_code
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            );
            match status {
                401 | 403 | 404 | 410 => PublishError::Configuration(detail),
                400 | 413 => PublishError::Rejected(detail),
                _ => PublishError::Unavailable(detail),
            }
        }
        ErrorKind::Credential => PublishError::Configuration(format!("credential: {e}")),
        _ => PublishError::Unavailable(e.to_string()),
    }
}

#[async_trait]
impl Publisher for ServiceBusPublisher {
    async fn publish(&self, message: &Message) -> Result<(), PublishError> {
        let body = message.to_cloudevent().to_string();
        let result = self
            .sender
            .send_message(&body, Some(Self::options(message)))
            .await
            .map_err(classify);
        let mut bad = self.misconfigured.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(PublishError::Configuration(e)) => {
                tracing::error!(target = %self.target, error = %e, "Service Bus refused the message: check FLUXTRAIL_SERVICEBUS, the topic and the sender's rights");
                *bad = Some(e.clone());
            }
            Ok(()) => *bad = None,
            Err(_) => {}
        }
        result
    }

    fn backend(&self) -> &'static str {
        "servicebus"
    }

    async fn check(&self) -> Result<(), PublishError> {
        match &*self.misconfigured.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(PublishError::Configuration(e.clone())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `change.unapproved` is about a (commit, cluster), not an object: its properties name
    /// the cluster and no object, its session is its subject, its correlation the sha.
    #[test]
    fn a_message_about_a_commit_on_a_cluster_names_no_object() {
        let mut m = Message::sample("x", "m-1");
        m.kind = crate::core::MessageType::ChangeUnapproved;
        m.object.kind = String::new();
        m.object.namespace = String::new();
        m.object.name = String::new();
        m.sha = Some("a".repeat(40));
        m.repository = Some("github.com/acme/fleet".into());
        m.custom = Some(crate::core::Custom {
            subject: format!("c/{}", "a".repeat(40)),
            data: serde_json::json!({"cluster": "c"}),
        });
        let o = ServiceBusPublisher::options(&m);
        let props = o.custom_properties.unwrap();
        let mut names: Vec<&str> = props.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["cluster", "repository", "severity", "type"]);
        assert_eq!(props["type"], "\"io.fluxtrail.change.unapproved\"");
        assert_eq!(props["severity"], "\"error\"");
        let b = o.broker_properties.unwrap();
        assert_eq!(b.session_id.unwrap(), format!("c/{}", "a".repeat(40)));
        assert_eq!(b.correlation_id.unwrap(), "a".repeat(40));
        assert_eq!(b.label.unwrap(), "io.fluxtrail.change.unapproved");
        let event = m.to_cloudevent();
        assert_eq!(event["subject"], format!("c/{}", "a".repeat(40)));
        assert_eq!(event["data"], serde_json::json!({"cluster": "c"}));
    }

    #[test]
    fn connection_strings_and_namespaces() {
        let c = ServiceBusConfig::parse(
            "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=Send;SharedAccessKey=abc=",
            "fluxtrail",
            None,
        )
        .unwrap();
        assert_eq!(c.namespace, "contoso");
        assert_eq!(c.topic, "fluxtrail");
        assert_eq!(
            c.auth,
            Auth::Sas {
                key_name: "Send".into(),
                key: Secret::new("abc=")
            }
        );
        let c = ServiceBusConfig::parse(
            "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=Send;SharedAccessKey=k;EntityPath=alerts",
            "fluxtrail",
            Some("http://127.0.0.1:9999"),
        )
        .unwrap();
        assert_eq!(c.topic, "alerts");
        assert_eq!(c.endpoint.unwrap().as_str(), "http://127.0.0.1:9999/");
        for ns in [
            "contoso",
            "contoso.servicebus.windows.net",
            "sb://contoso.servicebus.windows.net/",
            "https://contoso.servicebus.windows.net",
        ] {
            let c = ServiceBusConfig::parse(ns, "t", None).unwrap();
            assert_eq!(
                (c.namespace.as_str(), &c.auth),
                ("contoso", &Auth::ManagedIdentity),
                "{ns}"
            );
        }
        assert!(
            ServiceBusConfig::parse("Endpoint=sb://x/;SharedAccessKeyName=a", "t", None).is_err()
        );
        assert!(ServiceBusConfig::parse("contoso", "t", Some("ftp://x")).is_err());
    }
}
