//! The `ssegate` binary: configuration, logging, bind, run, exit code.

#![deny(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use ssegate::config::{self, Action, ConfigError, LogFormat};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// `EX_USAGE` from sysexits.h: the command line is malformed (an unknown
/// flag, a missing value).
const EXIT_USAGE: u8 = 64;

/// `EX_CONFIG` from sysexits.h: the configuration is wrong. The systemd
/// unit names it in `RestartPreventExitStatus=`, so that a bad
/// configuration does not restart in a loop.
const EXIT_CONFIG: u8 = 78;

/// Pending connections the kernel may queue (it caps this at somaxconn):
/// after a deploy, thousands of `EventSource`s reconnect at once, and a
/// short queue turns into SYN retries a second apart.
const LISTEN_BACKLOG: u32 = 4096;

/// The multi-thread runtime, one worker per CPU the process may use, even
/// when that is one: its scheduler runs a task woken by I/O next (the LIFO
/// slot), so a publish is read at once instead of queueing behind the
/// thousands of subscriber wakes of the previous event, which is what a
/// first-in-first-out current-thread scheduler does (measured: broadcast
/// saturation fell from 1.4M to 0.2M deliveries/s, one event per round).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The most h2 may log, whatever `RUST_LOG` says.
const H2_LOG_LEVEL: &str = "h2=info";

/// Logs to stderr at the `RUST_LOG` level (default `info`), as text for
/// people or one JSON object per line for log pipelines.
fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // h2 quotes a request's path in its debug lines (a malformed one),
        // and a path may carry a query token: never below info.
        .add_directive(H2_LOG_LEVEL.parse().expect("a valid directive"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let loaded = match config::load(std::env::args_os(), std::env::vars_os()) {
        Ok(loaded) => loaded,
        Err(ConfigError::Info(text)) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Usage(text)) => {
            // clap's own message, with its usage line and hint.
            eprint!("{text}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(err) => {
            eprintln!("ssegate: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match loaded.action {
        Action::Run => {}
        Action::CheckConfig => {
            let file = loaded.file.as_deref().unwrap_or(std::path::Path::new("-"));
            if let Err(err) = ssegate::check_tls_files(&loaded.config) {
                eprintln!("ssegate: {}: {err}", file.display());
                return ExitCode::from(EXIT_CONFIG);
            }
            if let Err(err) = ssegate::check_auth_files(&loaded.config) {
                eprintln!("ssegate: {}: invalid {err}", file.display());
                return ExitCode::from(EXIT_CONFIG);
            }
            println!("{}: ok", file.display());
            for warning in &loaded.warnings {
                println!("warning: {warning}");
            }
            return ExitCode::SUCCESS;
        }
        Action::PrintConfig => {
            print!("{}", loaded.effective_toml());
            return ExitCode::SUCCESS;
        }
    }
    // Before anything starts: a key file that does not load is a
    // configuration error, with the exit code that says so.
    if let Err(err) = ssegate::check_auth_files(&loaded.config) {
        eprintln!("ssegate: invalid {err}");
        return ExitCode::from(EXIT_CONFIG);
    }
    init_logs(loaded.config.log_format);
    match &loaded.file {
        Some(path) => tracing::info!(file = %path.display(), "configuration loaded"),
        None => tracing::info!("no configuration file; embedded defaults"),
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ssegate: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let log_format = loaded.config.log_format;
    raise_fd_limit();
    let config = loaded.config;
    let result = runtime.block_on(async move {
        let listener = listen(config.listen)
            .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
        ssegate::run(listener, config, ssegate::shutdown::signal())
            .await
            .map_err(|err| err.to_string())
    });
    // Connections that outlived `shutdown_timeout` are dropped here.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            match log_format {
                LogFormat::Text => eprintln!("ssegate: {message}"),
                // A log pipeline reads stderr as JSON lines: keep it so.
                LogFormat::Json => tracing::error!("{message}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// One open file per subscriber: raises the soft `RLIMIT_NOFILE` to the hard
/// limit, since container runtimes often start processes at a soft 1024
/// with a far higher hard limit (systemd's `LimitNOFILE=` sets both).
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(open_files) => tracing::info!(open_files, "file descriptor limit"),
        Err(err) => tracing::warn!(
            cause = %err,
            "cannot raise the file descriptor limit; it caps subscribers"
        ),
    }
}
