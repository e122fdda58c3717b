//! Flux notification-controller events: authentication (`generic-hmac` `X-Signature`, or the
//! `generic` provider's bearer token) and parsing into a [`FluxEvent`].
//!
//! Invariant, as for `git`: no storage and no status codes here.

pub mod classify;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hyper::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::config::Secrets;
use crate::domain::Revision;
use crate::git::signature::{parse_prefixed, token_matches, verify_any};
use crate::git::{AuthError, Credential, ParseError};
pub use classify::{classify, Class};

/// Flux sends `info` or `error`; anything else is kept as `Other` rather than rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Error,
    #[serde(other)]
    Other,
}

/// The Flux object an event is about, within one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    pub cluster: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(cluster: &str, kind: &str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            cluster: cluster.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// `<cluster>/<kind>/<namespace>/<name>`: the CloudEvent subject.
    pub fn subject(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.cluster, self.kind, self.namespace, self.name
        )
    }

    /// Kinds that produce artifacts rather than apply them: their events are history only.
    pub fn is_source(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "GitRepository"
                | "OCIRepository"
                | "Bucket"
                | "HelmRepository"
                | "HelmChart"
                | "ExternalArtifact"
        )
    }
}

/// One parsed Flux event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FluxEvent {
    pub object: ObjectRef,
    pub severity: Severity,
    pub timestamp: DateTime<Utc>,
    pub reason: String,
    pub message: String,
    /// Metadata with any `<group>/` prefix removed from the keys.
    pub metadata: BTreeMap<String, String>,
    pub reporting_controller: Option<String>,
    /// SHA-256 of the raw body: identifies this exact event (NC retries are byte-identical).
    pub fingerprint: String,
}

impl FluxEvent {
    /// The revision as reported (`revision` metadata), for display.
    pub fn revision(&self) -> Option<&str> {
        self.metadata.get("revision").map(String::as_str)
    }

    /// The revision that names the source commit, as Flux resolves it: `commit`, then
    /// `originRevision`, then `revision`.
    pub fn source_revision(&self) -> Option<Revision> {
        ["commit", "originRevision", "revision"]
            .iter()
            .find_map(|k| self.metadata.get(*k))
            .map(|v| Revision::parse(v))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    involved_object: WireObject,
    severity: Option<Severity>,
    timestamp: Option<String>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
    reporting_controller: Option<String>,
}

#[derive(Deserialize)]
struct WireObject {
    kind: String,
    #[serde(default)]
    namespace: String,
    name: String,
}

/// Checks a Flux delivery: `X-Signature: <algo>=<hex>` against `FLUXTRAIL_FLUX_HMAC_KEY`
/// (`generic-hmac`), or `Authorization: Bearer <token>` against `FLUXTRAIL_FLUX_TOKEN`
/// (`generic` with a header from its Secret). Either configured scheme suffices.
pub fn authenticate(
    secrets: &Secrets,
    allow_unsigned: bool,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), AuthError> {
    let hmac = &secrets.flux_hmac;
    let token = &secrets.flux_token;
    if !hmac.is_configured() && !token.is_configured() {
        return if allow_unsigned {
            Ok(())
        } else {
            Err(AuthError::NotConfigured(
                "FLUXTRAIL_FLUX_HMAC_KEY or FLUXTRAIL_FLUX_TOKEN",
            ))
        };
    }
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let (Some(sig), true) = (header("x-signature"), hmac.is_configured()) {
        let (algo, digest) =
            parse_prefixed(sig).ok_or(AuthError::Mismatch(Credential::Signature))?;
        return if verify_any(hmac, algo, body, &digest) {
            Ok(())
        } else {
            Err(AuthError::Mismatch(Credential::Signature))
        };
    }
    if let (Some(auth), true) = (header("authorization"), token.is_configured()) {
        let presented = auth
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or(AuthError::Mismatch(Credential::Token))?;
        return if token_matches(token, presented) {
            Ok(())
        } else {
            Err(AuthError::Mismatch(Credential::Token))
        };
    }
    Err(AuthError::Missing(if hmac.is_configured() {
        Credential::Signature
    } else {
        Credential::Token
    }))
}

/// The longest event message kept. Helm appends its logs to failure messages and NC accepts
/// 3 MiB bodies; the message is copied into state, incident, target and outbox rows, each
/// bounded by Table Storage (64 KiB per property, 1 MiB per entity). The rest is cut, saying
/// so; the event's fingerprint still covers the whole body.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Cuts `s` to at most `max` bytes (on a character boundary), noting how much was cut.
pub fn cut(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let total = s.len();
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    s.push_str(&format!(
        "… [cut: {} of {total} bytes not kept]",
        total - at
    ));
    s
}

/// Parses an authenticated event. The cluster is the path's, else `metadata.cluster`, else
/// the default. `received_at` stands in for a missing or unparsable timestamp.
pub fn parse(
    body: &[u8],
    path_cluster: Option<&str>,
    default_cluster: &str,
    received_at: DateTime<Utc>,
) -> Result<FluxEvent, ParseError> {
    let wire: Wire = serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    if wire.involved_object.kind.trim().is_empty() || wire.involved_object.name.trim().is_empty() {
        return Err(ParseError::invalid(
            "involvedObject",
            "kind and name are required",
        ));
    }
    let metadata: BTreeMap<String, String> = wire
        .metadata
        .into_iter()
        .map(|(k, v)| {
            // `kustomize.toolkit.fluxcd.io/revision` → `revision`.
            let key = k.rsplit('/').next().unwrap_or(&k).to_string();
            let value = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (key, value)
        })
        .collect();
    let cluster = path_cluster
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .or_else(|| metadata.get("cluster").filter(|c| !c.is_empty()).cloned())
        .unwrap_or_else(|| default_cluster.to_string());
    let timestamp = wire
        .timestamp
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
        .unwrap_or(received_at);
    Ok(FluxEvent {
        message: cut(wire.message, MAX_MESSAGE),
        object: ObjectRef {
            cluster,
            kind: wire.involved_object.kind,
            namespace: wire.involved_object.namespace,
            name: wire.involved_object.name,
        },
        severity: wire.severity.unwrap_or(Severity::Info),
        timestamp,
        reason: wire.reason,
        metadata,
        reporting_controller: wire.reporting_controller,
        fingerprint: {
            use sha2::{Digest, Sha256};
            hex::encode(Sha256::digest(body))
        },
    })
}
