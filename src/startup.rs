//! Start-up you can test: `Application::build(settings)` binds the port and opens the store,
//! `port()` says where it listens (port 0 in tests), `run_until_stopped(shutdown)` serves
//! until the future resolves. `main` passes [`shutdown_signal`]; tests pass a channel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::http::{self, AppState};
use crate::ledger::Ledger;
use crate::outbox::{Dispatcher, RetryPolicy};
use crate::publish::local::LocalSink;
use crate::publish::servicebus::{ServiceBusConfig, ServiceBusPublisher};
use crate::publish::{PublishError, Publisher};
use crate::store::sqlite::SqliteStore;
use crate::store::tables::TableStore;
use crate::store::{Store, StoreError};
use crate::sweep::SweepSettings;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot open the message publisher: {0}")]
    Publisher(#[from] PublishError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
    dispatcher: Dispatcher,
    dispatcher_task: JoinHandle<()>,
    sweeper_task: Option<JoinHandle<()>>,
    backfill_task: Option<JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        if settings.insecure_allow_unsigned {
            tracing::warn!(
                "FLUXTRAIL_INSECURE_ALLOW_UNSIGNED=true: deliveries from sources without a configured \
                 secret are accepted UNSIGNED. Development only: anyone who can reach this port can write to the ledger."
            );
        }
        if settings.api_token.is_none() {
            tracing::warn!(
                "FLUXTRAIL_API_TOKEN is not set: the read API answers without authentication"
            );
        }
        let store: Arc<dyn Store> = match &settings.tables {
            Some(tables) => {
                let store = TableStore::connect(
                    tables.expose(),
                    &settings.tables_prefix,
                    settings.store_timeout,
                )
                .await?;
                tracing::info!(account = %store.account(), prefix = %settings.tables_prefix, "Table Storage connected");
                Arc::new(store)
            }
            None => {
                let store = SqliteStore::open(&settings.data_dir)?;
                tracing::info!(dir = %settings.data_dir.display(), "embedded store opened");
                Arc::new(store)
            }
        };
        let publisher = publisher(&settings)?;
        let (wake_tx, wake_rx) = mpsc::channel(1024);
        let policy = RetryPolicy {
            base: settings.publish_retry_base,
            max_attempts: settings.publish_max_attempts,
        };
        let dispatcher = Dispatcher::new(store.clone(), publisher.clone(), policy);
        let mut ledger = Ledger::new(store)
            .with_outbox(wake_tx)
            .with_policy(settings.approval.clone());
        let hosts = &settings.backfill_hosts;
        if !hosts.is_empty() {
            let serves = hosts.iter().map(|h| h.serves.clone()).collect();
            ledger = ledger.with_backfill(crate::ledger::backfill::Notices::new(
                serves,
                settings.backfill_delay,
            ));
            for h in hosts {
                tracing::info!(host = h.kind.name(), url = %h.api_url, serves = %h.serves, "backfill from this API");
            }
        }
        let backfill = (!hosts.is_empty()).then(|| {
            Arc::new(crate::backfill::Backfill::new(
                ledger.clone(),
                hosts,
                settings.backfill_timeout,
                settings.backfill_retry_max,
            ))
        });
        let recovered = ledger.recover().await?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "finished deliveries interrupted by an earlier stop"
            );
        }
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: settings.listen,
            source,
        })?;
        tracing::info!(%addr, "listening");
        // The dispatcher's first pass (immediately) delivers what a stop left in the outbox.
        let dispatcher_task = dispatcher.clone().spawn(wake_rx);
        let sweep = SweepSettings {
            stall_after: settings.stall_after,
            retain_deliveries: settings.retain_deliveries,
            retain_history: settings.retain_history,
        };
        // Standalone there is no timer trigger: sweep on an interval ourselves.
        let sweeper_task = (!settings.under_functions_host).then(|| {
            let (ledger, dispatcher, every) =
                (ledger.clone(), dispatcher.clone(), settings.sweep_interval);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await; // not at start-up: the first sweep after one interval
                loop {
                    tick.tick().await;
                    match crate::sweep::sweep(&ledger, &dispatcher, sweep, chrono::Utc::now()).await
                    {
                        Ok(report) => tracing::info!(?report, "sweep"),
                        Err(e) => tracing::warn!(error = %e, "sweep failed; next interval retries"),
                    }
                }
            })
        });
        Ok(Application {
            listener,
            addr,
            state: Arc::new(AppState {
                settings,
                ledger,
                publisher,
                dispatcher: dispatcher.clone(),
                sweep,
                backfill: backfill.clone(),
            }),
            backfill_task: backfill.map(|b| tokio::spawn(b.run())),
            dispatcher,
            dispatcher_task,
            sweeper_task,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        http::serve(self.listener, self.state, shutdown).await;
        self.dispatcher_task.abort();
        if let Some(t) = self.backfill_task {
            t.abort();
        }
        if let Some(t) = self.sweeper_task {
            t.abort();
        }
        // Hand over what the last requests produced before exiting.
        if let Err(e) = self.dispatcher.deliver_all(chrono::Utc::now()).await {
            tracing::warn!(error = %e, "messages left in the outbox; delivered at next start");
        }
        tracing::info!("stopped");
    }
}

/// The publisher configuration chooses: Service Bus when `FLUXTRAIL_SERVICEBUS` is set, the
/// local JSON-lines sink otherwise.
fn publisher(settings: &Settings) -> Result<Arc<dyn Publisher>, PublishError> {
    match &settings.servicebus {
        Some(value) => {
            let config = ServiceBusConfig::parse(
                value.expose(),
                &settings.servicebus_topic,
                settings.servicebus_endpoint.as_deref(),
            )
            .map_err(|e| PublishError::Configuration(e.to_string()))?;
            tracing::info!(namespace = %config.namespace, topic = %config.topic, endpoint = ?config.endpoint.as_ref().map(|u| u.as_str()), "messages go to Service Bus");
            Ok(Arc::new(ServiceBusPublisher::new(
                &config,
                settings.publish_timeout,
            )?))
        }
        None => {
            tracing::info!(file = %settings.messages_file.display(), "messages go to the local sink");
            Ok(Arc::new(LocalSink::open(&settings.messages_file)?))
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (what the Functions host and Kubernetes send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
