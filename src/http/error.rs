//! Errors become HTTP here and nowhere else: one enum of everything a request can fail with,
//! one function mapping it to a status, a stable machine-readable `code` and a message.
//! 5xx bodies carry no internals; the cause goes to the log.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::git::{AuthError, Credential, ParseError};
use crate::store::StoreError;

/// Every response body: a whole one (`full`), or a stream (the CSV export), whose error ends
/// the response without its terminating chunk, so a client never takes a cut file for whole.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// What a streamed body fails with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no route for {0}")]
    NotFound(String),
    #[error("unknown provider {0:?}; expected one of github, gitlab, azuredevops, bitbucket, bitbucket-server, gitea, forgejo")]
    UnknownProvider(String),
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("unsupported content type {got:?}; expected {expected}")]
    UnsupportedMediaType { got: String, expected: &'static str },
    #[error("body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("{0}")]
    InvalidSha(String),
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("a bearer token is required")]
    ReadTokenMissing,
    #[error("the bearer token is not valid")]
    ReadTokenInvalid,
    #[error("nothing is known about commit {0}")]
    CommitNotFound(String),
    #[error("no Flux object {0} has been seen")]
    ObjectNotFound(String),
    #[error("storage is unavailable")]
    StoreUnavailable(#[source] StoreError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::StoreUnavailable(e)
    }
}

impl ApiError {
    /// Status and stable code. Codes are part of the API: never rename one.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ApiError::*;
        match self {
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            UnknownProvider(_) => (StatusCode::NOT_FOUND, "unknown_provider"),
            CommitNotFound(_) => (StatusCode::NOT_FOUND, "commit_not_found"),
            ObjectNotFound(_) => (StatusCode::NOT_FOUND, "object_not_found"),
            MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            BodyRead(_) => (StatusCode::BAD_REQUEST, "body_unreadable"),
            BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Auth(AuthError::NotConfigured(_)) => {
                (StatusCode::UNAUTHORIZED, "source_not_configured")
            }
            Auth(AuthError::Missing(Credential::Signature)) => {
                (StatusCode::UNAUTHORIZED, "signature_missing")
            }
            Auth(AuthError::Mismatch(Credential::Signature)) => {
                (StatusCode::UNAUTHORIZED, "signature_invalid")
            }
            Auth(AuthError::Missing(Credential::Token)) => {
                (StatusCode::UNAUTHORIZED, "token_missing")
            }
            Auth(AuthError::Mismatch(Credential::Token)) => {
                (StatusCode::UNAUTHORIZED, "token_invalid")
            }
            Auth(AuthError::Missing(Credential::BasicAuth)) => {
                (StatusCode::UNAUTHORIZED, "basic_auth_missing")
            }
            Auth(AuthError::Mismatch(Credential::BasicAuth)) => {
                (StatusCode::UNAUTHORIZED, "basic_auth_invalid")
            }
            Parse(ParseError::Json(_)) => (StatusCode::BAD_REQUEST, "malformed_json"),
            Parse(ParseError::Form) => (StatusCode::BAD_REQUEST, "malformed_form"),
            Parse(ParseError::MissingHeader(_)) => (StatusCode::BAD_REQUEST, "missing_header"),
            Parse(ParseError::Invalid { .. }) => (StatusCode::BAD_REQUEST, "invalid_payload"),
            InvalidSha(_) => (StatusCode::BAD_REQUEST, "invalid_sha"),
            InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            ReadTokenMissing => (StatusCode::UNAUTHORIZED, "token_missing"),
            ReadTokenInvalid => (StatusCode::UNAUTHORIZED, "token_invalid"),
            // Undecodable stored data will not heal by retrying: that is our bug, a 500.
            StoreUnavailable(StoreError::Corrupt(_) | StoreError::TooLarge(_)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
            StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(code, error = %self, cause = ?std::error::Error::source(&self), "request failed");
        } else {
            tracing::debug!(code, status = status.as_u16(), error = %self, "request refused");
        }
        let mut resp = json_response(
            status,
            &json!({"error": {"code": code, "message": self.to_string()}}),
        );
        let h = resp.headers_mut();
        match &self {
            ApiError::MethodNotAllowed { allow } => {
                h.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::StoreUnavailable(e)
                if !matches!(e, StoreError::Corrupt(_) | StoreError::TooLarge(_)) =>
            {
                // Git hosts and Flux retry; tell them when.
                h.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::BodyTimeout(_) => {
                // The rest of the body may still trickle in: this connection is done.
                h.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::ReadTokenMissing | ApiError::ReadTokenInvalid => {
                h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_failures_are_503_with_retry_after_and_no_internals() {
        let resp = ApiError::from(StoreError::Unavailable(
            "disk I/O error at /secret/path".into(),
        ))
        .into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[RETRY_AFTER], "5");
        let body = futures::executor::block_on(resp.into_body().collect())
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(!body.contains("/secret/path"), "{body}");
        assert!(body.contains("store_unavailable"), "{body}");
        let corrupt = ApiError::from(StoreError::Corrupt("x".into())).into_response();
        assert_eq!(corrupt.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(corrupt.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn auth_failures_have_distinct_codes() {
        let codes: Vec<_> = [
            AuthError::NotConfigured("FLUXTRAIL_GITHUB_SECRET"),
            AuthError::Missing(Credential::Signature),
            AuthError::Mismatch(Credential::Signature),
            AuthError::Missing(Credential::Token),
            AuthError::Mismatch(Credential::BasicAuth),
        ]
        .into_iter()
        .map(|e| ApiError::from(e).status_and_code())
        .collect();
        assert!(codes.iter().all(|(s, _)| *s == StatusCode::UNAUTHORIZED));
        let mut names: Vec<_> = codes.iter().map(|(_, c)| *c).collect();
        names.dedup();
        assert_eq!(names.len(), 5);
    }
}
