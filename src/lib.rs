//! ssegate: a Server-Sent Events fan-out gateway on raw hyper.
//!
//! Publishers `POST /publish/{topic}`; browsers hold `GET /subscribe/{topic}`
//! with `EventSource`. Each event is encoded once, appended to its topic's
//! ring buffer under the next process-wide id, and read by every subscriber
//! straight from the ring: no per-subscriber copy, queue or task.
//!
//! # Layout
//!
//! Reading order, from the socket inwards (`ARCHITECTURE.md` has the map):
//!
//! - `server`: accept loop, hyper connections, graceful drain.
//! - `io`, `connection`: per-connection deadlines and bookkeeping.
//! - `http`: routing and the handlers; the only module besides `server` that
//!   knows hyper.
//! - `auth`: who may subscribe and publish to what (JWT, forward
//!   authorization, the publish token).
//! - `registry`: all topics, the id sequence, limits; the single publish path;
//!   `graveyard` remembers removed topics' floors.
//! - `cluster`: cluster mode, several nodes on one Redis: the publish script,
//!   the tail of the shared log into the registry, replays from Redis.
//! - `subscription`: a subscriber's cursor and how it reads its topics.
//! - `topic`: one topic's ring buffer and waiting subscribers; its `fanout`
//!   writes new events straight to the sockets of those at its head, through
//!   each one's `sink`.
//! - `sse`: the wire format and the subscriber stream.
//! - `config`, `metrics`, `shutdown`, `state`, `error`, `id`, `tls`: the rest.
//!
//! `unsafe` is denied crate-wide; the one block that needs it (a fan-out's
//! `send` on a borrowed descriptor, in `sink`) allows it where it stands,
//! with the rules that make it sound kept in that module.

#![deny(unsafe_code)]

pub mod auth;
mod client_limits;
mod cluster;
pub mod config;
mod connection;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod graveyard;
mod http;
mod id;
mod io;
mod metrics;
mod registry;
mod server;
pub mod shutdown;
mod sink;
mod sse;
mod state;
mod status;
mod subscription;
mod tls;
mod topic;

pub use config::Config;
pub use server::run;

/// Loads the TLS certificate and key that `config` names, as start-up
/// would, so that `--check-config` finds a bad pair before a deploy does.
pub fn check_tls_files(config: &Config) -> std::io::Result<()> {
    match config.tls_files() {
        Some((cert, key)) => tls::TlsAcceptor::from_pem_files(cert, key).map(drop),
        None => Ok(()),
    }
}

/// Reads the `[auth]` key files as start-up would; the error names the key
/// (`auth.jwt_secret_file: ...`).
pub fn check_auth_files(config: &Config) -> Result<(), String> {
    auth::check(config).map_err(|problem| format!("{}: {}", problem.key, problem.message))
}
