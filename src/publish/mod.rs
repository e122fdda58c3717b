//! Publishers: where outgoing messages go. Chosen once from configuration: the local
//! JSON-lines sink by default (part 4 adds Service Bus behind the same trait).

pub mod local;
pub mod servicebus;

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
    /// The broker refused this message itself (malformed, too large): retrying it as is will
    /// not help; it is parked at once.
    #[error("message rejected: {0}")]
    Rejected(String),
}

#[async_trait]
pub trait Publisher: Send + Sync + std::fmt::Debug {
    /// Delivers one message. Delivering the same message id twice must be harmless.
    async fn publish(&self, message: &Message) -> Result<(), PublishError>;
    /// Delivers messages in order, stopping at the first that fails: `Err((n, e))` means the
    /// first `n` were delivered, message `n` failed with `e`, and the rest were not tried.
    /// The default publishes one by one; a publisher that can hand over several at once for
    /// the price of one (the local sink: one sync) overrides it.
    async fn publish_all(&self, messages: &[Message]) -> Result<(), (usize, PublishError)> {
        for (i, m) in messages.iter().enumerate() {
            self.publish(m).await.map_err(|e| (i, e))?;
        }
        Ok(())
    }
    /// A short name for health and logs.
    fn backend(&self) -> &'static str;
    /// Cheap check for `/api/health`.
    async fn check(&self) -> Result<(), PublishError>;
}
