//! The table of configuration keys: name, default, help and parser of each.

use std::path::PathBuf;

use super::value::{
    address, boolean, bytes, bytes_or_off, count, duration, duration_or_zero, list, networks,
    optional, redis_url,
};
use super::{Config, LogFormat, StatusPage, SubscribeAuth};

/// One configuration key.
pub struct Key {
    /// The TOML key, `table.key` for a key in a table (`cluster.redis_url`
    /// is `redis_url` under `[cluster]`); the flag is `--` plus this with
    /// dashes for dots and underscores, the environment variable `SSEGATE_`
    /// plus this in capitals with underscores for dots.
    pub name: &'static str,
    /// What the value looks like, for `--help`.
    pub value_name: &'static str,
    /// The embedded default, in the same text form a user would write.
    pub default: &'static str,
    pub help: &'static str,
    /// Parses a value and stores it.
    pub apply: fn(&mut Config, &str) -> Result<(), String>,
}

const MAX_COUNT: usize = 10_000_000;

impl Key {
    /// `SSEGATE_HEARTBEAT_INTERVAL`, `SSEGATE_CLUSTER_REDIS_URL`.
    pub fn env_name(&self) -> String {
        format!(
            "SSEGATE_{}",
            self.name.replace('.', "_").to_ascii_uppercase()
        )
    }

    /// `heartbeat-interval`, `cluster-redis-url` (after `--`).
    pub fn flag_name(&self) -> String {
        self.name.replace(['.', '_'], "-")
    }

    /// The table the key is in (`cluster`), or `None` at the top level.
    pub fn table(&self) -> Option<&'static str> {
        self.name.split_once('.').map(|(table, _)| table)
    }

    /// The key's name inside its table (`redis_url`).
    pub fn short_name(&self) -> &'static str {
        self.name.split_once('.').map_or(self.name, |(_, key)| key)
    }

    /// Whether the value is a secret that `--print-config` and logs withhold.
    pub fn is_secret(&self) -> bool {
        self.value_name == "TOKEN"
    }
}

pub const KEYS: &[Key] = &[
    Key {
        name: "listen",
        value_name: "ADDR",
        default: "127.0.0.1:8080",
        help: "Address and port to listen on.",
        apply: |c, v| {
            c.listen = address(v)?;
            Ok(())
        },
    },
    Key {
        name: "buffer_events",
        value_name: "COUNT",
        default: "1024",
        help: "Events kept per topic for replay after Last-Event-ID.",
        apply: |c, v| {
            c.buffer_events = count(v, 1, 1_000_000)?;
            Ok(())
        },
    },
    Key {
        name: "buffer_bytes",
        value_name: "BYTES",
        default: "128MiB",
        help: "Encoded bytes kept per topic; the oldest events go first when over.",
        apply: |c, v| {
            c.buffer_bytes = bytes(v, 1024, usize::MAX)?;
            Ok(())
        },
    },
    Key {
        name: "max_buffered_bytes",
        value_name: "BYTES",
        default: "2GiB",
        help: "Encoded bytes all topics may buffer together; a publish beyond it is 503.",
        apply: |c, v| {
            c.max_buffered_bytes = bytes(v, 1024, usize::MAX)?;
            Ok(())
        },
    },
    Key {
        name: "buffer_ttl",
        value_name: "DURATION",
        default: "300s",
        help: "How long an event stays replayable; a topic idle this long is removed.",
        apply: |c, v| {
            c.buffer_ttl = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "heartbeat_interval",
        value_name: "DURATION",
        default: "15s",
        help: "A comment line is sent on a stream quiet for this long.",
        apply: |c, v| {
            c.heartbeat_interval = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "fanout_busy_period",
        value_name: "DURATION",
        default: "50ms",
        help: "While events keep coming on a topic whose fan-out is still writing, its writes start at most this often, each carrying every event since (more throughput, up to this much more latency).",
        apply: |c, v| {
            let period = duration(v)?;
            if period > std::time::Duration::from_secs(1) {
                return Err(format!("{v:?} is over the 1s maximum"));
            }
            c.fanout_busy_period = period;
            Ok(())
        },
    },
    Key {
        name: "retry",
        value_name: "DURATION",
        default: "3s",
        help: "Reconnection delay sent to clients in the first `retry:` field.",
        apply: |c, v| {
            c.retry = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "refusal_retry",
        value_name: "DURATION",
        default: "10s",
        help: "Delay (with up to ±50% jitter) an EventSource refused for now is told to wait in its retry: field before it comes back.",
        apply: |c, v| {
            c.refusal_retry = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "max_event_bytes",
        value_name: "BYTES",
        default: "65536",
        help: "Largest publish body; a larger one is 413 and is not read further.",
        apply: |c, v| {
            c.max_event_bytes = bytes(v, 1, 16 << 20)?;
            Ok(())
        },
    },
    Key {
        name: "max_batch_bytes",
        value_name: "BYTES",
        default: "1048576",
        help: "Largest JSON or NDJSON publish body (a batch); larger is 413 and is not read further.",
        apply: |c, v| {
            c.max_batch_bytes = bytes(v, 1, 64 << 20)?;
            Ok(())
        },
    },
    Key {
        name: "write_timeout",
        value_name: "DURATION",
        default: "30s",
        help: "A connection whose socket accepts no byte for this long is closed.",
        apply: |c, v| {
            c.write_timeout = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "max_subscribers",
        value_name: "COUNT",
        default: "100000",
        help: "Open subscriber streams; one more subscribe is 503 with Retry-After.",
        apply: |c, v| {
            c.max_subscribers = count(v, 1, MAX_COUNT)?;
            Ok(())
        },
    },
    Key {
        name: "max_connections",
        value_name: "COUNT",
        default: "110000",
        help: "Connections held at once (lowered to fit the open-file limit); past it, 32 more are answered health checks only, then one more is closed at accept.",
        apply: |c, v| {
            c.max_connections = count(v, 1, MAX_COUNT)?;
            Ok(())
        },
    },
    Key {
        name: "max_connections_per_address",
        value_name: "COUNT",
        default: "1000",
        help: "Connections one client address (IPv6: one /64) may hold; one more is closed at accept. 0: no limit.",
        apply: |c, v| {
            c.max_connections_per_address = count(v, 0, MAX_COUNT)?;
            Ok(())
        },
    },
    Key {
        name: "max_streams_per_address",
        value_name: "COUNT",
        default: "1000",
        help: "Subscriber streams (HTTP/2 streams included) one client address (IPv6: one /64) may hold; one more is refused for now (503, or 200 with retry to an EventSource). 0: no limit.",
        apply: |c, v| {
            c.max_streams_per_address = count(v, 0, MAX_COUNT)?;
            Ok(())
        },
    },
    Key {
        name: "address_limits_exempt",
        value_name: "LIST",
        default: "127.0.0.0/8,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
        help: "Addresses and networks the per-address limits leave alone: loopback and private networks by default, where a proxy or load balancer in front sends every client from a few addresses.",
        apply: |c, v| {
            c.address_limits_exempt = networks(v)?;
            Ok(())
        },
    },
    Key {
        name: "max_topics",
        value_name: "COUNT",
        default: "100000",
        help: "Topics held in memory; creating one more is 503. Subscribes may create topics only up to three quarters of it: the rest is kept for publishes.",
        apply: |c, v| {
            c.max_topics = count(v, 1, MAX_COUNT)?;
            Ok(())
        },
    },
    Key {
        name: "max_topics_per_subscription",
        value_name: "COUNT",
        default: "32",
        help: "Topics one GET /subscribe?topic=..&topic=.. may name; more is 400.",
        apply: |c, v| {
            c.max_topics_per_subscription = count(v, 1, 1024)?;
            Ok(())
        },
    },
    Key {
        name: "publish_token",
        value_name: "TOKEN",
        default: "",
        help: "When set, publishing requires Authorization: Bearer <token>; empty means open.",
        apply: |c, v| {
            c.publish_token = optional(v);
            Ok(())
        },
    },
    Key {
        name: "allow_anonymous_publish",
        value_name: "BOOL",
        default: "false",
        help: "Start on a listen address other than loopback with no publish_token (and no JWT publish grants), letting anyone who can reach it publish. Without it, that configuration is refused.",
        apply: |c, v| {
            c.allow_anonymous_publish = boolean(v)?;
            Ok(())
        },
    },
    Key {
        name: "cors_allowed_origins",
        value_name: "LIST",
        default: "",
        help: "Origins allowed to publish and subscribe cross-origin (`*` for any).",
        apply: |c, v| {
            c.cors_allowed_origins = list(v);
            Ok(())
        },
    },
    Key {
        name: "header_read_timeout",
        value_name: "DURATION",
        default: "10s",
        help: "From the first byte of each request head to its end, the first included (whichever of this and first_request_timeout comes first).",
        apply: |c, v| {
            c.header_read_timeout = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "first_request_timeout",
        value_name: "DURATION",
        default: "10s",
        help: "From accepting a connection to the end of its first request head.",
        apply: |c, v| {
            c.first_request_timeout = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "keep_alive_timeout",
        value_name: "DURATION",
        default: "60s",
        help: "A connection idle this long between requests is closed (HTTP/2: with no stream open, whatever PINGs it answers).",
        apply: |c, v| {
            c.keep_alive_timeout = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "request_body_timeout",
        value_name: "DURATION",
        default: "30s",
        help: "A publish body must arrive completely within this; otherwise 408.",
        apply: |c, v| {
            c.request_body_timeout = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "connection_buffer_bytes",
        value_name: "BYTES",
        default: "65536",
        help: "Per-connection buffer limit (HTTP/1 read/write buffer, HTTP/2 send buffer).",
        apply: |c, v| {
            c.connection_buffer_bytes = bytes(v, 8192, 16 << 20)?;
            Ok(())
        },
    },
    Key {
        name: "socket_send_buffer_bytes",
        value_name: "BYTES",
        default: "256KiB",
        help: "Kernel send buffer of each connection (SO_SNDBUF; 0: the kernel's autotuning, up to net.ipv4.tcp_wmem's maximum).",
        apply: |c, v| {
            c.socket_send_buffer_bytes =
                bytes_or_off(v, 4096, 64 << 20, "the kernel's autotuning")?;
            Ok(())
        },
    },
    Key {
        name: "socket_unsent_bytes",
        value_name: "BYTES",
        default: "64KiB",
        help: "Unsent bytes the kernel queues per connection before a write waits (TCP_NOTSENT_LOWAT, Linux); 0: no limit.",
        apply: |c, v| {
            c.socket_unsent_bytes = bytes_or_off(v, 4096, 64 << 20, "no limit")?;
            Ok(())
        },
    },
    Key {
        name: "http2_keep_alive_interval",
        value_name: "DURATION",
        default: "20s",
        help: "Interval of HTTP/2 PING frames that detect dead peers.",
        apply: |c, v| {
            c.http2_keep_alive_interval = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "http2_keep_alive_timeout",
        value_name: "DURATION",
        default: "20s",
        help: "An HTTP/2 connection whose PING goes unanswered this long is closed.",
        apply: |c, v| {
            c.http2_keep_alive_timeout = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "http2_max_concurrent_streams",
        value_name: "COUNT",
        default: "256",
        help: "Streams (subscriptions and requests) one HTTP/2 connection may open at once.",
        apply: |c, v| {
            c.http2_max_concurrent_streams = count(v, 1, 65_536)? as u32;
            Ok(())
        },
    },
    Key {
        name: "http2_max_header_list_bytes",
        value_name: "BYTES",
        default: "16KiB",
        help: "Largest header list an HTTP/2 request may send (SETTINGS_MAX_HEADER_LIST_SIZE).",
        apply: |c, v| {
            c.http2_max_header_list_bytes = bytes(v, 1024, 1 << 20)? as u32;
            Ok(())
        },
    },
    Key {
        name: "http2_max_pending_accept_reset_streams",
        value_name: "COUNT",
        default: "20",
        help: "HTTP/2 streams a client may reset before they are served; more is GOAWAY (rapid reset).",
        apply: |c, v| {
            c.http2_max_pending_accept_reset_streams = count(v, 1, 100_000)?;
            Ok(())
        },
    },
    Key {
        name: "http2_max_local_error_reset_streams",
        value_name: "COUNT",
        default: "1024",
        help: "HTTP/2 streams a client may make the server reset on errors; more is GOAWAY.",
        apply: |c, v| {
            c.http2_max_local_error_reset_streams = count(v, 1, 100_000)?;
            Ok(())
        },
    },
    Key {
        name: "tcp_keepalive",
        value_name: "DURATION",
        default: "60s",
        help: "Idle time before TCP keepalive probes; finds peers that vanished.",
        apply: |c, v| {
            c.tcp_keepalive = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "shutdown_timeout",
        value_name: "DURATION",
        default: "10s",
        help: "On SIGTERM/SIGINT, the longest wait for connections to finish (publishes in flight get up to the first half of it before the streams end).",
        apply: |c, v| {
            c.shutdown_timeout = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "log_format",
        value_name: "FORMAT",
        default: "text",
        help: "Log lines as `text` (for people) or `json` (one object per line, for log pipelines).",
        apply: |c, v| {
            c.log_format = match v.trim() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => return Err(format!("{other:?} is not a log format (text or json)")),
            };
            Ok(())
        },
    },
    Key {
        name: "status_page",
        value_name: "BOOL",
        default: "auto",
        help: "Serve the live status page at / (topic names, subscriber counts, rates): auto serves it when listening on loopback only, since it shows every topic's name; true serves it to anyone who can reach the listener.",
        apply: |c, v| {
            c.status_page = match v.trim().to_ascii_lowercase().as_str() {
                "auto" => StatusPage::Auto,
                _ => match boolean(v)? {
                    true => StatusPage::On,
                    false => StatusPage::Off,
                },
            };
            Ok(())
        },
    },
    Key {
        name: "access_log",
        value_name: "BOOL",
        default: "false",
        help: "Log one line per request (client, method, path with any query token redacted, status, route, time to the response head) at info, target ssegate::access; a stream is one line, never one per event.",
        apply: |c, v| {
            c.access_log = boolean(v)?;
            Ok(())
        },
    },
    Key {
        name: "tls_cert",
        value_name: "PATH",
        default: "",
        help: "PEM certificate chain; with tls_key, serves HTTPS (HTTP/2 by ALPN).",
        apply: |c, v| {
            c.tls_cert = optional(v).map(PathBuf::from);
            Ok(())
        },
    },
    Key {
        name: "tls_key",
        value_name: "PATH",
        default: "",
        help: "PEM private key for tls_cert.",
        apply: |c, v| {
            c.tls_key = optional(v).map(PathBuf::from);
            Ok(())
        },
    },
    Key {
        name: "tls_watch_interval",
        value_name: "DURATION",
        default: "10s",
        help: "How often tls_cert and tls_key are read to see whether they changed (cert-manager and certbot rotate them without a signal); a change is loaded for new handshakes. 0s: only on SIGHUP.",
        apply: |c, v| {
            c.tls_watch_interval = duration_or_zero(v)?;
            Ok(())
        },
    },
    Key {
        name: "cluster.redis_url",
        value_name: "URL",
        default: "",
        help: "Cluster mode: the Redis (6.2+) every node shares, redis://host:port/db, rediss:// for TLS or redis+unix:///path; unset runs a single node.",
        apply: |c, v| {
            c.cluster.redis_url = optional(v).map(|url| redis_url(&url)).transpose()?;
            Ok(())
        },
    },
    Key {
        name: "cluster.prefix",
        value_name: "NAME",
        default: "ssegate",
        help: "Cluster mode: the Redis key namespace, so that several deployments can share one Redis.",
        apply: |c, v| {
            let prefix = v.trim();
            let allowed =
                |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.' | ':');
            if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(allowed) {
                return Err(format!(
                    "{v:?} must be 1 to 64 characters of A-Z a-z 0-9 _ - . :"
                ));
            }
            c.cluster.prefix = prefix.to_owned();
            Ok(())
        },
    },
    Key {
        name: "cluster.publish_timeout",
        value_name: "DURATION",
        default: "2s",
        help: "Cluster mode: a publish Redis has not stored within this is 503 with Retry-After.",
        apply: |c, v| {
            c.cluster.publish_timeout = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "cluster.replay_timeout",
        value_name: "DURATION",
        default: "2s",
        help: "Cluster mode: a subscribe whose replay from Redis (or wait for this node's tail) takes longer is refused for now.",
        apply: |c, v| {
            c.cluster.replay_timeout = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "cluster.max_tail_lag",
        value_name: "DURATION",
        default: "10s",
        help: "Cluster mode: /readyz is 503 while this node's delivery lags Redis by more than this and Redis answers.",
        apply: |c, v| {
            c.cluster.max_tail_lag = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "cluster.log_max_events",
        value_name: "COUNT",
        default: "100000",
        help: "Cluster mode: events kept in the shared log, how far a node may fall behind and still catch up without ending its streams.",
        apply: |c, v| {
            c.cluster.log_max_events = count(v, 100, MAX_COUNT)?;
            Ok(())
        },
    },
    Key {
        name: "cluster.tail_block",
        value_name: "DURATION",
        default: "5s",
        help: "Cluster mode: how long one read of the shared log waits for new events; a read silent for three times this is reconnected.",
        apply: |c, v| {
            let block = duration(v)?;
            if block < std::time::Duration::from_millis(100)
                || block > std::time::Duration::from_secs(60)
            {
                return Err(format!("{v:?} is outside the allowed range 100ms..=60s"));
            }
            c.cluster.tail_block = block;
            Ok(())
        },
    },
    Key {
        name: "auth.subscribe_auth",
        value_name: "MODE",
        default: "none",
        help: "Who may subscribe: none (anyone), jwt (a token must grant the topics) or forward (the application at subscribe_auth_url decides).",
        apply: |c, v| {
            c.auth.subscribe_auth = match v.trim() {
                "none" => SubscribeAuth::None,
                "jwt" => SubscribeAuth::Jwt,
                "forward" => SubscribeAuth::Forward,
                _ => return Err(format!("{v:?} is not one of none, jwt, forward")),
            };
            Ok(())
        },
    },
    Key {
        name: "auth.anonymous_topics",
        value_name: "LIST",
        default: "",
        help: "Topic patterns anyone may subscribe to even when subscribe_auth is not none (`*` one segment, trailing `**` one or more).",
        apply: |c, v| {
            let patterns = list(v);
            crate::auth::pattern::Patterns::parse(&patterns).map_err(|err| err.to_string())?;
            c.auth.anonymous_topics = patterns;
            Ok(())
        },
    },
    Key {
        name: "auth.jwt_algorithms",
        value_name: "LIST",
        default: "",
        help: "JWT: the accepted algorithms, of one key family (e.g. HS256, or EdDSA); empty turns JWT off. A token's own alg never widens this.",
        apply: |c, v| {
            let names = list(v);
            crate::auth::jwt::algorithms(&names)?;
            c.auth.jwt_algorithms = names;
            Ok(())
        },
    },
    Key {
        name: "auth.jwt_secret_file",
        value_name: "PATH",
        default: "",
        help: "JWT, HS* algorithms: a file holding the shared secret (at least 32 bytes).",
        apply: |c, v| {
            c.auth.jwt_secret_file = optional(v).map(PathBuf::from);
            Ok(())
        },
    },
    Key {
        name: "auth.jwt_public_key_file",
        value_name: "PATH",
        default: "",
        help: "JWT, RS*/PS*/ES*/EdDSA algorithms: the PEM public key tokens are verified with.",
        apply: |c, v| {
            c.auth.jwt_public_key_file = optional(v).map(PathBuf::from);
            Ok(())
        },
    },
    Key {
        name: "auth.jwt_audience",
        value_name: "TEXT",
        default: "ssegate",
        help: "JWT: the aud claim is required and must contain this.",
        apply: |c, v| {
            c.auth.jwt_audience = optional(v).ok_or("must not be empty: aud is always checked")?;
            Ok(())
        },
    },
    Key {
        name: "auth.jwt_issuer",
        value_name: "TEXT",
        default: "",
        help: "JWT: when set, the iss claim is required and must equal this.",
        apply: |c, v| {
            c.auth.jwt_issuer = optional(v);
            Ok(())
        },
    },
    Key {
        name: "auth.jwt_leeway",
        value_name: "DURATION",
        default: "30s",
        help: "JWT: clock skew allowed when checking exp and nbf.",
        apply: |c, v| {
            let leeway = duration_or_zero(v)?;
            if leeway > std::time::Duration::from_secs(600) {
                return Err(format!("{v:?} is more than the allowed 10m"));
            }
            c.auth.jwt_leeway = leeway;
            Ok(())
        },
    },
    Key {
        name: "auth.cookie_name",
        value_name: "NAME",
        default: "ssegate_token",
        help: "JWT: the cookie a subscriber token may come in (after the Authorization header); empty turns cookies off.",
        apply: |c, v| {
            let name = v.trim();
            let allowed = |ch: char| ch.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(ch);
            if !name.chars().all(allowed) {
                return Err(format!("{v:?} is not a cookie name"));
            }
            c.auth.cookie_name = name.to_owned();
            Ok(())
        },
    },
    Key {
        name: "auth.query_param",
        value_name: "NAME",
        default: "access_token",
        help: "JWT: the query parameter a subscriber token may come in (after the header and the cookie); empty turns it off.",
        apply: |c, v| {
            let name = v.trim();
            if matches!(name, "topic" | "last_event_id" | "lastEventId") {
                return Err(format!("{name:?} is already a subscribe parameter"));
            }
            c.auth.query_param = name.to_owned();
            Ok(())
        },
    },
    Key {
        name: "auth.query_token_max_lifetime",
        value_name: "DURATION",
        default: "5m",
        help: "JWT: a token in the URL must expire within this from now, since URLs end up in logs and histories.",
        apply: |c, v| {
            c.auth.query_token_max_lifetime = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "auth.subscribe_auth_url",
        value_name: "URL",
        default: "",
        help: "Forward: the application's authorize route (http://), asked GET ?topic=..&topic=.. with the subscriber's Cookie, Authorization and Origin.",
        apply: |c, v| {
            c.auth.subscribe_auth_url = optional(v).map(|url| forward_url(&url)).transpose()?;
            Ok(())
        },
    },
    Key {
        name: "auth.subscribe_auth_timeout",
        value_name: "DURATION",
        default: "2s",
        help: "Forward: no answer within this is a temporary refusal.",
        apply: |c, v| {
            c.auth.subscribe_auth_timeout = duration(v)?;
            Ok(())
        },
    },
    Key {
        name: "auth.subscribe_auth_cache",
        value_name: "DURATION",
        default: "0s",
        help: "Forward: reuse an allowing answer this long for the same cookie, authorization and topics; 0s asks every time.",
        apply: |c, v| {
            c.auth.subscribe_auth_cache = duration_or_zero(v)?;
            Ok(())
        },
    },
    Key {
        name: "auth.max_stream_lifetime",
        value_name: "DURATION",
        default: "0s",
        help: "End every stream after this long, so that access is checked again on reconnect; 0s never.",
        apply: |c, v| {
            c.auth.max_stream_lifetime = duration_or_zero(v)?;
            Ok(())
        },
    },
];

/// `subscribe_auth_url`: a plain `http://` URL with a host (the check runs
/// on an internal network; TLS to the application is not supported).
fn forward_url(text: &str) -> Result<String, String> {
    let uri: hyper::Uri = text.parse().map_err(|_| {
        format!("{text:?} is not a URL (write it like http://app:3000/api/ssegate/authorize)")
    })?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http"), Some(_)) => Ok(text.to_owned()),
        (Some("https"), _) => Err("https is not supported for the authorization request: \
             use the application's internal http:// address"
            .to_owned()),
        _ => Err(format!(
            "{text:?} is not an http:// URL (write it like http://app:3000/api/ssegate/authorize)"
        )),
    }
}

/// Looks a key up by its TOML name (`table.key` inside a table).
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.name == name)
}

/// Looks a key up by its environment variable.
pub fn find_env(variable: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.env_name() == variable)
}

/// Every key name, for error messages.
pub fn names() -> String {
    KEYS.iter()
        .map(|key| key.name)
        .collect::<Vec<_>>()
        .join(", ")
}
