//! Settings: everything the process reads from its environment, read once at start-up.
//!
//! `Settings::from_vars` takes a lookup function instead of reading `std::env` directly so
//! tests build settings without touching the process environment.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A secret value. `Debug` never shows it, so a settings dump in a log is harmless.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A secret and the one it is replacing: during rotation both are accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretPair {
    pub current: Option<Secret>,
    pub previous: Option<Secret>,
}

impl SecretPair {
    pub fn new(current: Option<&str>, previous: Option<&str>) -> Self {
        SecretPair {
            current: current.map(Secret::new),
            previous: previous.map(Secret::new),
        }
    }
    /// The configured secrets, current first. Empty when the source is not configured.
    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        self.current.iter().chain(self.previous.iter())
    }
    pub fn is_configured(&self) -> bool {
        self.current.is_some() || self.previous.is_some()
    }
}

/// The shared secrets of every source, named as in contract §1.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub github: SecretPair,
    pub gitlab: SecretPair,
    pub bitbucket: SecretPair,
    pub gitea: SecretPair,
    pub azuredevops_basic: SecretPair,
    pub flux_hmac: SecretPair,
    pub flux_token: SecretPair,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen. Port 0 asks the OS for a free port (tests).
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub messages_file: PathBuf,
    pub secrets: Secrets,
    /// Development only: accept deliveries from sources whose secret is not set.
    pub insecure_allow_unsigned: bool,
    pub api_token: Option<Secret>,
    pub stall_after: Duration,
    pub default_cluster: String,
    pub log_format: LogFormat,
    pub git_body_limit: usize,
    pub flux_body_limit: usize,
    /// Retention (see `sweep`): journal entries and delivered messages, object history.
    pub retain_deliveries: Duration,
    pub retain_history: Duration,
    /// Standalone only (no Functions host, which calls `POST /Sweep` on its timer): how often
    /// the server sweeps by itself.
    pub sweep_interval: Duration,
    /// Whether the Functions host runs us (it sets `FUNCTIONS_CUSTOMHANDLER_PORT`).
    pub under_functions_host: bool,
    /// `FLUXTRAIL_TABLES`: a storage connection string, or an account name/URL for managed
    /// identity. Unset: the embedded store.
    pub tables: Option<Secret>,
    /// Table names are `{prefix}{name}` (`FLUXTRAIL_TABLES_PREFIX`, default `fluxtrail`).
    pub tables_prefix: String,
    /// How long one storage call may take before it counts as failed.
    pub store_timeout: Duration,
    /// `FLUXTRAIL_SERVICEBUS`: a connection string with a Send policy, or a namespace for
    /// managed identity. Unset: messages go to the local sink.
    pub servicebus: Option<Secret>,
    pub servicebus_topic: String,
    /// `FLUXTRAIL_SERVICEBUS_ENDPOINT`: another base URL for the same requests.
    pub servicebus_endpoint: Option<String>,
    /// How long one publish may take before it counts as failed.
    pub publish_timeout: Duration,
    /// The first retry delay of an undelivered message; it doubles per attempt (capped).
    pub publish_retry_base: Duration,
    /// Attempts after which an undelivered message is parked as dead (kept, re-drivable).
    pub publish_max_attempts: u32,
    /// How long a client may take to send a request's headers, and then its body, before
    /// the connection is closed (slow clients must not hold the server's resources).
    pub request_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// `FLUXTRAIL_APPROVAL_*` (contract §10).
    pub approval: crate::policy::Policy,
    /// `FLUXTRAIL_{GITHUB,GITLAB,AZUREDEVOPS,GITEA}_API_TOKEN`/`_URL` (contract §11): the Git
    /// hosts' APIs the backfill may ask. Empty: no backfill.
    pub backfill_hosts: Vec<crate::backfill::HostConfig>,
    /// `FLUXTRAIL_BACKFILL_DELAY` (default `60s`): how long a noticed hole waits before the
    /// API is asked (the webhook may only be late).
    pub backfill_delay: Duration,
    /// `FLUXTRAIL_BACKFILL_RETRY_MAX` (default `10m`): the longest wait between attempts of
    /// an item the host failed (an outage of any length loses nothing: it is retried).
    pub backfill_retry_max: Duration,
    /// `FLUXTRAIL_BACKFILL_TIMEOUT` (default `10s`): one API request.
    pub backfill_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value:?} is not a valid listen address (host:port)")]
    Listen { name: &'static str, value: String },
    #[error("FUNCTIONS_CUSTOMHANDLER_PORT={0:?} is not a port number")]
    Port(String),
    #[error("FLUXTRAIL_STALL_AFTER={0:?} is not a duration such as 90s, 15m or 1h")]
    Duration(String),
    #[error("{name}={value:?} must be true or false")]
    Bool { name: &'static str, value: String },
    #[error("{name}={value:?} is not a duration such as 500ms, 10s or 1m")]
    DurationOf { name: &'static str, value: String },
    #[error("{name}={value:?} must be a positive whole number")]
    Size { name: &'static str, value: String },
    #[error("FLUXTRAIL_LOG_FORMAT={0:?} must be text or json")]
    LogFormat(String),
    #[error("{name}={value:?} is not an http(s) URL")]
    Url { name: &'static str, value: String },
    #[error("FLUXTRAIL_INSECURE_ALLOW_UNSIGNED is set but this process runs under the Azure Functions host ({0} is set): unsigned deliveries are for local development only")]
    InsecureUnderHost(&'static str),
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Builds settings from any variable lookup; empty values count as unset.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let pair = |name: &str| {
            let prev = format!("{name}_PREVIOUS");
            SecretPair::new(get(name).as_deref(), get(&prev).as_deref())
        };

        // The Functions host names the port; then we must bind loopback (reference: custom
        // handlers). Its legacy alias is honoured too.
        let port_var =
            get("FUNCTIONS_CUSTOMHANDLER_PORT").or_else(|| get("FUNCTIONS_HTTPWORKER_PORT"));
        let under_host = port_var.is_some();
        let listen = match port_var {
            Some(p) => {
                let port: u16 = p.trim().parse().map_err(|_| ConfigError::Port(p.clone()))?;
                SocketAddr::from(([127, 0, 0, 1], port))
            }
            None => {
                let value = get("FLUXTRAIL_LISTEN").unwrap_or_else(|| "127.0.0.1:7071".into());
                value.trim().parse().map_err(|_| ConfigError::Listen {
                    name: "FLUXTRAIL_LISTEN",
                    value,
                })?
            }
        };
        let data_dir =
            PathBuf::from(get("FLUXTRAIL_DATA_DIR").unwrap_or_else(|| "./.fluxtrail".into()));
        let messages_file = get("FLUXTRAIL_MESSAGES_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("messages.jsonl"));
        let stall_after = match get("FLUXTRAIL_STALL_AFTER") {
            Some(v) => humantime::parse_duration(v.trim()).map_err(|_| ConfigError::Duration(v))?,
            None => Duration::from_secs(15 * 60),
        };
        let insecure_allow_unsigned = match get("FLUXTRAIL_INSECURE_ALLOW_UNSIGNED") {
            None => false,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(ConfigError::Bool {
                        name: "FLUXTRAIL_INSECURE_ALLOW_UNSIGNED",
                        value: v,
                    })
                }
            },
        };
        // The switch is for a developer's machine. Under the Functions host (or anywhere in
        // App Service) the endpoints are public: refuse to start rather than accept anyone.
        if insecure_allow_unsigned {
            if let Some(marker) = [
                "FUNCTIONS_CUSTOMHANDLER_PORT",
                "FUNCTIONS_HTTPWORKER_PORT",
                "FUNCTIONS_WORKER_RUNTIME",
                "WEBSITE_INSTANCE_ID",
                "WEBSITE_SITE_NAME",
            ]
            .into_iter()
            .find(|m| get(m).is_some())
            {
                return Err(ConfigError::InsecureUnderHost(marker));
            }
        }
        let log_format = match get("FLUXTRAIL_LOG_FORMAT").map(|v| v.trim().to_ascii_lowercase()) {
            None => LogFormat::Text,
            Some(v) if v == "text" => LogFormat::Text,
            Some(v) if v == "json" => LogFormat::Json,
            Some(v) => return Err(ConfigError::LogFormat(v)),
        };
        let size = |name: &'static str, default: usize| match get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(ConfigError::Size { name, value: v }),
            },
        };
        let duration = |name: &'static str, default: Duration| match get(name) {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v.trim())
                .map_err(|_| ConfigError::DurationOf { name, value: v }),
        };
        let publish_max_attempts = match get("FLUXTRAIL_PUBLISH_MAX_ATTEMPTS") {
            None => 12,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(ConfigError::Size {
                        name: "FLUXTRAIL_PUBLISH_MAX_ATTEMPTS",
                        value: v,
                    })
                }
            },
        };
        let min_approvers = match get("FLUXTRAIL_APPROVAL_MIN_APPROVERS") {
            None => 1,
            Some(v) => v.trim().parse::<usize>().map_err(|_| ConfigError::Size {
                name: "FLUXTRAIL_APPROVAL_MIN_APPROVERS",
                value: v,
            })?,
        };
        let approval = crate::policy::Policy::new(
            &get("FLUXTRAIL_APPROVAL_REQUIRED").unwrap_or_default(),
            min_approvers,
            &get("FLUXTRAIL_APPROVAL_EXEMPT").unwrap_or_default(),
            duration("FLUXTRAIL_APPROVAL_GRACE", Duration::from_secs(600))?,
        );
        let backfill_hosts = crate::backfill::HostKind::ALL
            .into_iter()
            .filter_map(|kind| {
                let token = get(&format!("FLUXTRAIL_{}_API_TOKEN", kind.var()))?;
                let name = kind.url_var();
                Some(
                    match get(name).or_else(|| kind.default_url().map(String::from)) {
                        None => Err(ConfigError::Url {
                            name,
                            value: String::new(),
                        }),
                        Some(url) => {
                            crate::backfill::HostConfig::new(kind, &url, Secret::new(token))
                                .ok_or(ConfigError::Url { name, value: url })
                        }
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            backfill_hosts,
            backfill_delay: duration("FLUXTRAIL_BACKFILL_DELAY", Duration::from_secs(60))?,
            backfill_retry_max: duration("FLUXTRAIL_BACKFILL_RETRY_MAX", Duration::from_secs(600))?,
            backfill_timeout: duration("FLUXTRAIL_BACKFILL_TIMEOUT", Duration::from_secs(10))?,
            approval,
            listen,
            data_dir,
            messages_file,
            secrets: Secrets {
                github: pair("FLUXTRAIL_GITHUB_SECRET"),
                gitlab: pair("FLUXTRAIL_GITLAB_TOKEN"),
                bitbucket: pair("FLUXTRAIL_BITBUCKET_SECRET"),
                gitea: pair("FLUXTRAIL_GITEA_SECRET"),
                azuredevops_basic: pair("FLUXTRAIL_AZUREDEVOPS_BASIC"),
                flux_hmac: pair("FLUXTRAIL_FLUX_HMAC_KEY"),
                flux_token: pair("FLUXTRAIL_FLUX_TOKEN"),
            },
            insecure_allow_unsigned,
            api_token: get("FLUXTRAIL_API_TOKEN").map(Secret::new),
            stall_after,
            default_cluster: get("FLUXTRAIL_DEFAULT_CLUSTER").unwrap_or_else(|| "default".into()),
            log_format,
            git_body_limit: size("FLUXTRAIL_GIT_BODY_LIMIT", 25 * 1024 * 1024)?,
            flux_body_limit: size("FLUXTRAIL_FLUX_BODY_LIMIT", 4 * 1024 * 1024)?,
            retain_deliveries: duration(
                "FLUXTRAIL_RETAIN_DELIVERIES",
                Duration::from_secs(7 * 86400),
            )?,
            retain_history: duration("FLUXTRAIL_RETAIN_HISTORY", Duration::from_secs(90 * 86400))?,
            sweep_interval: duration("FLUXTRAIL_SWEEP_INTERVAL", Duration::from_secs(60))?,
            under_functions_host: under_host,
            tables: get("FLUXTRAIL_TABLES").map(Secret::new),
            tables_prefix: get("FLUXTRAIL_TABLES_PREFIX").unwrap_or_else(|| "fluxtrail".into()),
            store_timeout: duration("FLUXTRAIL_STORE_TIMEOUT", Duration::from_secs(5))?,
            servicebus: get("FLUXTRAIL_SERVICEBUS").map(Secret::new),
            servicebus_topic: get("FLUXTRAIL_SERVICEBUS_TOPIC")
                .unwrap_or_else(|| "fluxtrail".into()),
            servicebus_endpoint: get("FLUXTRAIL_SERVICEBUS_ENDPOINT"),
            publish_timeout: duration("FLUXTRAIL_PUBLISH_TIMEOUT", Duration::from_secs(10))?,
            publish_retry_base: duration("FLUXTRAIL_PUBLISH_RETRY_BASE", Duration::from_secs(1))?,
            publish_max_attempts,
            request_timeout: duration("FLUXTRAIL_REQUEST_TIMEOUT", Duration::from_secs(30))?,
            max_connections: size("FLUXTRAIL_MAX_CONNECTIONS", 4096)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_contract() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:7071");
        assert_eq!(s.data_dir, PathBuf::from("./.fluxtrail"));
        assert_eq!(
            s.messages_file,
            PathBuf::from("./.fluxtrail/messages.jsonl")
        );
        assert_eq!(s.stall_after, Duration::from_secs(900));
        assert_eq!(s.default_cluster, "default");
        assert!(!s.insecure_allow_unsigned);
        assert!(!s.secrets.github.is_configured());
    }

    #[test]
    fn functions_port_wins_and_binds_loopback() {
        let s = settings(&[
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "4321"),
            ("FLUXTRAIL_LISTEN", "0.0.0.0:80"),
        ])
        .unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:4321");
        let s = settings(&[("FUNCTIONS_HTTPWORKER_PORT", "4322")]).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:4322");
        assert!(settings(&[("FUNCTIONS_CUSTOMHANDLER_PORT", "x")]).is_err());
    }

    #[test]
    fn secrets_pair_with_previous_and_never_print() {
        let s = settings(&[
            ("FLUXTRAIL_GITHUB_SECRET", "new"),
            ("FLUXTRAIL_GITHUB_SECRET_PREVIOUS", "old"),
        ])
        .unwrap();
        let all: Vec<&str> = s.secrets.github.iter().map(Secret::expose).collect();
        assert_eq!(all, ["new", "old"]);
        let dump = format!("{s:?}");
        assert!(!dump.contains("new") && !dump.contains("old"), "{dump}");
    }

    #[test]
    fn durations_and_switches_parse_or_fail_clearly() {
        assert_eq!(
            settings(&[("FLUXTRAIL_STALL_AFTER", "90s")])
                .unwrap()
                .stall_after,
            Duration::from_secs(90)
        );
        assert_eq!(
            settings(&[("FLUXTRAIL_STALL_AFTER", "1h")])
                .unwrap()
                .stall_after,
            Duration::from_secs(3600)
        );
        assert!(settings(&[("FLUXTRAIL_STALL_AFTER", "soon")]).is_err());
        assert!(
            settings(&[("FLUXTRAIL_INSECURE_ALLOW_UNSIGNED", "true")])
                .unwrap()
                .insecure_allow_unsigned
        );
        assert!(settings(&[("FLUXTRAIL_INSECURE_ALLOW_UNSIGNED", "maybe")]).is_err());
        for marker in [
            "FUNCTIONS_CUSTOMHANDLER_PORT",
            "FUNCTIONS_WORKER_RUNTIME",
            "WEBSITE_INSTANCE_ID",
        ] {
            let err = settings(&[
                ("FLUXTRAIL_INSECURE_ALLOW_UNSIGNED", "true"),
                (marker, "4321"),
            ])
            .unwrap_err();
            assert!(matches!(err, ConfigError::InsecureUnderHost(m) if m == marker));
            assert!(settings(&[
                ("FLUXTRAIL_INSECURE_ALLOW_UNSIGNED", "false"),
                (marker, "4321")
            ])
            .is_ok());
        }
        assert!(settings(&[("FLUXTRAIL_LOG_FORMAT", "xml")]).is_err());
        assert_eq!(settings(&[]).unwrap().git_body_limit, 25 * 1024 * 1024);
        assert_eq!(
            settings(&[("FLUXTRAIL_GIT_BODY_LIMIT", "1024")])
                .unwrap()
                .git_body_limit,
            1024
        );
        assert!(settings(&[("FLUXTRAIL_GIT_BODY_LIMIT", "0")]).is_err());
    }
}
