//! `Config`: every setting, where it comes from, and what is wrong with it.
//!
//! One table (`keys::KEYS`) lists each key with its default, its help line and
//! its parser. The embedded defaults, the TOML file, the `SSEGATE_*`
//! environment and the command-line flags all go through that table, in that
//! order, later sources overriding earlier ones; so the four can never
//! disagree about a key's name, type or default. Errors name the key and the
//! source it came from.

mod keys;
mod load;
pub(crate) mod value;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use keys::KEYS;
pub use load::{Action, ConfigError, Loaded, load};
pub use value::redacted_url;

/// The gateway's settings; see `config/ssegate.toml` for what each one does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub buffer_events: usize,
    pub buffer_bytes: usize,
    pub buffer_ttl: Duration,
    pub max_buffered_bytes: usize,
    pub heartbeat_interval: Duration,
    pub fanout_busy_period: Duration,
    pub retry: Duration,
    /// The `retry:` of a temporary refusal (see `http::reply`).
    pub refusal_retry: Duration,
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
    pub write_timeout: Duration,
    pub max_subscribers: usize,
    /// Connections held at once; one more is closed at accept.
    pub max_connections: usize,
    /// Per client address (IPv6: per /64); 0 is no limit.
    pub max_connections_per_address: usize,
    /// Subscriber streams (HTTP/2 streams included) per client address; 0
    /// is no limit.
    pub max_streams_per_address: usize,
    /// Addresses the per-address limits leave alone (a proxy in front).
    pub address_limits_exempt: Vec<ipnet::IpNet>,
    pub max_topics: usize,
    pub max_topics_per_subscription: usize,
    pub publish_token: Option<String>,
    pub cors_allowed_origins: Vec<String>,
    pub header_read_timeout: Duration,
    pub first_request_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub request_body_timeout: Duration,
    pub connection_buffer_bytes: usize,
    /// `SO_SNDBUF` of each accepted socket; zero: the kernel's autotuning.
    pub socket_send_buffer_bytes: usize,
    /// `TCP_NOTSENT_LOWAT` of each accepted socket; zero: no limit.
    pub socket_unsent_bytes: usize,
    pub http2_keep_alive_interval: Duration,
    pub http2_keep_alive_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    pub http2_max_header_list_bytes: u32,
    pub http2_max_pending_accept_reset_streams: usize,
    pub http2_max_local_error_reset_streams: usize,
    pub tcp_keepalive: Duration,
    pub shutdown_timeout: Duration,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How often the TLS files are checked for a rotation; zero: never.
    pub tls_watch_interval: Duration,
    pub status_page: StatusPage,
    /// Accept a listener off loopback with nobody needing a credential to
    /// publish (`validate` refuses that otherwise).
    pub allow_anonymous_publish: bool,
    pub log_format: LogFormat,
    /// One log line per request (`http::access_log`).
    pub access_log: bool,
    /// `[cluster]`: unset `redis_url` means a single node.
    pub cluster: ClusterConfig,
    /// `[auth]`: who may subscribe (and publish) to what.
    pub auth: AuthConfig,
}

/// Whether the status page is served (`status_page`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPage {
    /// On a loopback listener only: the page names every topic.
    Auto,
    On,
    Off,
}

/// How subscribes are authorized (`auth.subscribe_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeAuth {
    /// Anyone may subscribe to anything.
    None,
    /// A JSON Web Token must grant the topics.
    Jwt,
    /// The application at `subscribe_auth_url` decides.
    Forward,
}

/// The `[auth]` table. Key files are read by `auth::Authorizer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub subscribe_auth: SubscribeAuth,
    pub anonymous_topics: Vec<String>,
    pub jwt_algorithms: Vec<String>,
    pub jwt_secret_file: Option<PathBuf>,
    pub jwt_public_key_file: Option<PathBuf>,
    pub jwt_audience: String,
    pub jwt_issuer: Option<String>,
    pub jwt_leeway: Duration,
    pub cookie_name: String,
    pub query_param: String,
    pub query_token_max_lifetime: Duration,
    pub subscribe_auth_url: Option<String>,
    pub subscribe_auth_timeout: Duration,
    pub subscribe_auth_cache: Duration,
    pub max_stream_lifetime: Duration,
}

/// The `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub redis_url: Option<String>,
    pub prefix: String,
    pub publish_timeout: Duration,
    pub replay_timeout: Duration,
    pub max_tail_lag: Duration,
    pub log_max_events: usize,
    pub tail_block: Duration,
}

/// How log lines are written (`log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: one readable line per record.
    Text,
    /// For log pipelines: one JSON object per line.
    Json,
}

impl Default for Config {
    /// The embedded defaults: every key's `default` from `KEYS`.
    fn default() -> Config {
        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            buffer_events: 0,
            buffer_bytes: 0,
            buffer_ttl: Duration::ZERO,
            max_buffered_bytes: 0,
            heartbeat_interval: Duration::ZERO,
            fanout_busy_period: Duration::ZERO,
            retry: Duration::ZERO,
            refusal_retry: Duration::ZERO,
            max_event_bytes: 0,
            max_batch_bytes: 0,
            write_timeout: Duration::ZERO,
            max_subscribers: 0,
            max_connections: 0,
            max_connections_per_address: 0,
            max_streams_per_address: 0,
            address_limits_exempt: Vec::new(),
            max_topics: 0,
            max_topics_per_subscription: 0,
            publish_token: None,
            cors_allowed_origins: Vec::new(),
            header_read_timeout: Duration::ZERO,
            first_request_timeout: Duration::ZERO,
            keep_alive_timeout: Duration::ZERO,
            request_body_timeout: Duration::ZERO,
            connection_buffer_bytes: 0,
            socket_send_buffer_bytes: 0,
            socket_unsent_bytes: 0,
            http2_keep_alive_interval: Duration::ZERO,
            http2_keep_alive_timeout: Duration::ZERO,
            http2_max_concurrent_streams: 0,
            http2_max_header_list_bytes: 0,
            http2_max_pending_accept_reset_streams: 0,
            http2_max_local_error_reset_streams: 0,
            tcp_keepalive: Duration::ZERO,
            shutdown_timeout: Duration::ZERO,
            tls_cert: None,
            access_log: false,
            tls_key: None,
            tls_watch_interval: Duration::ZERO,
            status_page: StatusPage::Off,
            allow_anonymous_publish: false,
            log_format: LogFormat::Text,
            cluster: ClusterConfig {
                redis_url: None,
                prefix: String::new(),
                publish_timeout: Duration::ZERO,
                replay_timeout: Duration::ZERO,
                max_tail_lag: Duration::ZERO,
                log_max_events: 0,
                tail_block: Duration::ZERO,
            },
            auth: AuthConfig {
                subscribe_auth: SubscribeAuth::None,
                anonymous_topics: Vec::new(),
                jwt_algorithms: Vec::new(),
                jwt_secret_file: None,
                jwt_public_key_file: None,
                jwt_audience: String::new(),
                jwt_issuer: None,
                jwt_leeway: Duration::ZERO,
                cookie_name: String::new(),
                query_param: String::new(),
                query_token_max_lifetime: Duration::ZERO,
                subscribe_auth_url: None,
                subscribe_auth_timeout: Duration::ZERO,
                subscribe_auth_cache: Duration::ZERO,
                max_stream_lifetime: Duration::ZERO,
            },
        };
        for key in KEYS {
            // The defaults are literals checked by `defaults_parse` below.
            if let Err(message) = (key.apply)(&mut config, key.default) {
                panic!("embedded default of {} is invalid: {message}", key.name);
            }
        }
        config
    }
}

impl Config {
    /// Whether TLS is configured (both `tls_cert` and `tls_key`).
    pub fn tls_files(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.tls_cert.as_ref().zip(self.tls_key.as_ref())
    }

    /// Checks rules that involve more than one key.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.into(),
            source: "the merged configuration".into(),
            message: message.into(),
        };
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "tls_cert",
                "tls_cert and tls_key must be given together",
            ));
        }
        let auth = &self.auth;
        match auth.subscribe_auth {
            SubscribeAuth::Jwt if auth.jwt_algorithms.is_empty() => {
                return Err(invalid(
                    "auth.jwt_algorithms",
                    "subscribe_auth = \"jwt\" needs jwt_algorithms (e.g. [\"HS256\"] or [\"EdDSA\"])",
                ));
            }
            SubscribeAuth::Forward if auth.subscribe_auth_url.is_none() => {
                return Err(invalid(
                    "auth.subscribe_auth_url",
                    "subscribe_auth = \"forward\" needs subscribe_auth_url, the application's authorize route",
                ));
            }
            _ => {}
        }
        if auth.jwt_secret_file.is_some() && auth.jwt_public_key_file.is_some() {
            return Err(invalid(
                "auth.jwt_secret_file",
                "give jwt_secret_file (HS*) or jwt_public_key_file (RS*, PS*, ES*, EdDSA), not both",
            ));
        }
        if !self.publish_needs_credential()
            && !self.listen.ip().is_loopback()
            && !self.allow_anonymous_publish
        {
            return Err(invalid(
                "publish_token",
                &format!(
                    "listen = {} is reachable from other machines and publishing needs no \
                     token, so anyone there could publish: set publish_token (e.g. \
                     SSEGATE_PUBLISH_TOKEN=$(openssl rand -hex 32)), or set \
                     allow_anonymous_publish = true to accept that",
                    self.listen
                ),
            ));
        }
        Ok(())
    }

    /// Whether a publish must bring a credential: the static token, or a
    /// JWT with publish grants.
    pub fn publish_needs_credential(&self) -> bool {
        self.publish_token.is_some() || !self.auth.jwt_algorithms.is_empty()
    }

    /// Whether the status page is served: `auto` on a loopback listener only.
    pub fn serves_status_page(&self) -> bool {
        match self.status_page {
            StatusPage::Auto => self.listen.ip().is_loopback(),
            StatusPage::On => true,
            StatusPage::Off => false,
        }
    }

    /// Settings that work but probably not as meant, for a warning line.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let auth = &self.auth;
        let cookies_count = match auth.subscribe_auth {
            SubscribeAuth::Jwt => !auth.cookie_name.is_empty(),
            SubscribeAuth::Forward => true,
            SubscribeAuth::None => false,
        };
        if cookies_count && self.cors_allowed_origins.iter().any(|origin| origin == "*") {
            warnings.push(
                "cors_allowed_origins = [\"*\"] with cookie authorization: browsers send no \
                 cookies to a \"*\" origin; list the page's origins instead"
                    .to_owned(),
            );
        }
        if auth.subscribe_auth != SubscribeAuth::None && self.serves_status_page() {
            warnings.push(
                "status_page is on while subscribes need authorization: the page shows \
                 every topic's name and subscriber count to anyone who can reach it; \
                 set status_page = false to keep topic names private"
                    .to_owned(),
            );
        }
        if auth.subscribe_auth == SubscribeAuth::None && !auth.anonymous_topics.is_empty() {
            warnings.push(
                "auth.anonymous_topics has no effect while auth.subscribe_auth = \"none\": \
                 every topic is open"
                    .to_owned(),
            );
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_match_the_contract() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.buffer_events, 1024);
        assert_eq!(config.buffer_ttl, Duration::from_secs(300));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(config.fanout_busy_period, Duration::from_millis(50));
        assert_eq!(config.retry, Duration::from_secs(3));
        assert_eq!(config.refusal_retry, Duration::from_secs(10));
        assert_eq!(config.max_event_bytes, 64 * 1024);
        assert_eq!(config.write_timeout, Duration::from_secs(30));
        assert_eq!(config.max_connections, 110_000);
        assert_eq!(config.max_connections_per_address, 1000);
        assert_eq!(config.max_streams_per_address, 1000);
        let exempt: Vec<String> = config
            .address_limits_exempt
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            exempt,
            [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "fc00::/7"
            ]
        );
        assert_eq!(config.max_subscribers, 100_000);
        assert_eq!(config.max_topics, 100_000);
        assert_eq!(config.max_topics_per_subscription, 32);
        assert_eq!(config.publish_token, None);
        assert!(config.cors_allowed_origins.is_empty());
        assert_eq!(config.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.first_request_timeout, Duration::from_secs(10));
        let cluster = &config.cluster;
        assert_eq!(cluster.redis_url, None);
        assert_eq!(cluster.prefix, "ssegate");
        assert_eq!(cluster.publish_timeout, Duration::from_secs(2));
        assert_eq!(cluster.replay_timeout, Duration::from_secs(2));
        assert_eq!(cluster.max_tail_lag, Duration::from_secs(10));
        assert_eq!(cluster.log_max_events, 100_000);
        let auth = &config.auth;
        assert_eq!(auth.subscribe_auth, SubscribeAuth::None);
        assert!(auth.anonymous_topics.is_empty() && auth.jwt_algorithms.is_empty());
        assert_eq!(auth.jwt_audience, "ssegate");
        assert_eq!(auth.jwt_leeway, Duration::from_secs(30));
        assert_eq!(auth.cookie_name, "ssegate_token");
        assert_eq!(auth.query_param, "access_token");
        assert_eq!(auth.query_token_max_lifetime, Duration::from_secs(300));
        assert_eq!(auth.subscribe_auth_timeout, Duration::from_secs(2));
        assert_eq!(auth.subscribe_auth_cache, Duration::ZERO);
        assert_eq!(auth.max_stream_lifetime, Duration::ZERO);
    }

    #[test]
    fn the_readme_documents_every_key_with_its_default() {
        let readme = include_str!("../../README.md");
        for key in KEYS {
            let row = readme
                .lines()
                .find(|line| line.starts_with(&format!("| `{}` |", key.name)))
                .unwrap_or_else(|| panic!("README has no row for {}", key.name));
            let documented_default = match key.default {
                "" => row.contains("| unset |") || row.contains("| empty |"),
                default => row.contains(&format!("| `{default}` |")),
            };
            assert!(
                documented_default,
                "README row of {} lacks its default: {row}",
                key.name
            );
        }
    }

    #[test]
    fn the_documented_file_holds_every_key_at_its_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ssegate.toml");
        let text = std::fs::read_to_string(path).expect("config/ssegate.toml");
        let table: toml::Table = text.parse().expect("valid TOML");
        let mut in_file: Vec<String> = Vec::new();
        for (name, value) in &table {
            match value.as_table() {
                Some(inner) => in_file.extend(inner.keys().map(|key| format!("{name}.{key}"))),
                None => in_file.push(name.clone()),
            }
        }
        in_file.sort_unstable();
        let mut names: Vec<String> = KEYS.iter().map(|key| key.name.to_owned()).collect();
        names.sort_unstable();
        assert_eq!(in_file, names, "keys in config/ssegate.toml");
        let loaded = load(
            ["ssegate", "--config", path],
            Vec::<(String, String)>::new(),
        )
        .expect("documented file loads");
        assert_eq!(loaded.config, Config::default());
    }
}
