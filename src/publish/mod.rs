//! Publishers: where outgoing messages go. Chosen once from configuration: the local
//! JSON-lines sink by default (part 4 adds Service Bus behind the same trait).

pub mod local;

use async_trait::async_trait;

use crate::core::Message;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Worth retrying later (I/O, throttling, timeouts).
    #[error("publisher unavailable: {0}")]
    Unavailable(String),
    /// Retrying will not help until someone fixes configuration.
    #[error("publisher misconfigured: {0}")]
    Configuration(String),
}

#[async_trait]
pub trait Publisher: Send + Sync + std::fmt::Debug {
    /// Delivers one message. Delivering the same message id twice must be harmless.
    async fn publish(&self, message: &Message) -> Result<(), PublishError>;
    /// A short name for health and logs.
    fn backend(&self) -> &'static str;
    /// Cheap check for `/api/health`.
    async fn check(&self) -> Result<(), PublishError>;
}
