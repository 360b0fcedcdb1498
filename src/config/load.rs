//! Merging the sources: embedded defaults, then the TOML file, then
//! `SSEGATE_*` environment variables, then command-line flags.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::Config;
use super::keys::{self, KEYS, Key};

const ENV_PREFIX: &str = "SSEGATE_";
const ENV_CONFIG: &str = "SSEGATE_CONFIG";
/// Read when no file is named and it exists in the working directory.
const DEFAULT_FILE: &str = "config/ssegate.toml";

/// A loaded configuration and what was odd about it without being wrong.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// The TOML file that was read, if any.
    pub file: Option<PathBuf>,
    /// E.g. an `SSEGATE_*` variable that is no key (a typo, most likely).
    pub warnings: Vec<String>,
    /// What the command line asked for.
    pub action: Action,
    /// The text that won for each key of `KEYS`, in order (for
    /// `--print-config`).
    effective: Vec<String>,
}

/// What the binary is to do with the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Run,
    /// `--check-config PATH`: the configuration is valid; say so and exit 0.
    CheckConfig,
    /// `--print-config`: print the effective configuration as TOML.
    PrintConfig,
}

impl Loaded {
    /// The effective configuration (file, then environment, then flags) as
    /// TOML that loads back to the same settings, each key under its help
    /// line. `publish_token` is never printed, only whether it is set.
    pub fn effective_toml(&self) -> String {
        let mut out = String::from(
            "# ssegate: effective configuration\n\
             # publish_token is not printed: set it again (SSEGATE_PUBLISH_TOKEN) if you\n\
             # deploy this file, or publishing needs no token. A password in\n\
             # cluster.redis_url is printed as ***.\n",
        );
        // Tables come last in `KEYS`, each key of a table after its header.
        let mut table = None;
        for (key, text) in KEYS.iter().zip(&self.effective) {
            if key.table() != table {
                table = key.table();
                if let Some(name) = table {
                    out.push_str(&format!("\n[{name}]\n"));
                }
            }
            out.push_str(&format!("\n# {}\n", key.help));
            let name = key.short_name();
            if key.is_secret() {
                let state = if text.trim().is_empty() {
                    "unset"
                } else {
                    "set; not printed"
                };
                out.push_str(&format!("# {name} = ({state})\n"));
                continue;
            }
            if key.value_name == "URL" {
                let text = super::value::redacted_url(text.trim());
                out.push_str(&format!("{name} = {}\n", toml::Value::String(text)));
                continue;
            }
            out.push_str(&format!("{name} = {}\n", toml_value(key, text)));
        }
        out
    }
}

/// A key's text as the TOML value a user would write.
fn toml_value(key: &Key, text: &str) -> toml::Value {
    let text = text.trim();
    match key.value_name {
        "COUNT" | "BYTES" => text.parse::<i64>().map_or_else(
            |_| toml::Value::String(text.to_owned()),
            toml::Value::Integer,
        ),
        "BOOL" => super::value::boolean(text).map_or_else(
            |_| toml::Value::String(text.to_owned()),
            toml::Value::Boolean,
        ),
        "LIST" => toml::Value::Array(
            super::value::list(text)
                .into_iter()
                .map(toml::Value::String)
                .collect(),
        ),
        _ => toml::Value::String(text.to_owned()),
    }
}

#[derive(Debug)]
pub enum ConfigError {
    /// `--help` or `--version` was asked for: print this and exit 0.
    Info(String),
    /// The command line itself is malformed (unknown flag, missing value).
    Usage(String),
    /// The configuration file cannot be read or is not TOML.
    File {
        path: PathBuf,
        message: String,
    },
    UnknownKey {
        key: String,
        path: PathBuf,
    },
    /// A key's value is bad; `source` says where it came from.
    Invalid {
        key: String,
        source: String,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Info(text) | ConfigError::Usage(text) => f.write_str(text.trim_end()),
            ConfigError::File { path, message } => {
                write!(f, "cannot load config file {}: {message}", path.display())
            }
            ConfigError::UnknownKey { key, path } => write!(
                f,
                "unknown key `{key}` in {}; known keys: {}",
                path.display(),
                keys::names()
            ),
            ConfigError::Invalid {
                key,
                source,
                message,
            } => write!(f, "invalid {key} (from {source}): {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Loads the configuration from `args` (program name first) and `env`.
pub fn load<A, E, K, V>(args: A, env: E) -> Result<Loaded, ConfigError>
where
    A: IntoIterator,
    A::Item: Into<OsString> + Clone,
    E: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let matches = command().try_get_matches_from(args).map_err(|err| {
        use clap::error::ErrorKind;
        match err.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                ConfigError::Info(err.render().to_string())
            }
            _ => ConfigError::Usage(err.render().to_string()),
        }
    })?;
    let env = ssegate_env(env)?;
    let mut config = Sources::default();
    let mut warnings = Vec::new();
    // `--check-config PATH`, or `--check-config` alone to check what
    // `--config` (or the environment, or the default file) names.
    let checked_file = matches
        .get_one::<String>("check-config")
        .filter(|path| !path.is_empty());
    let action = if matches.contains_id("check-config") {
        Action::CheckConfig
    } else if matches.get_flag("print-config") {
        Action::PrintConfig
    } else {
        Action::Run
    };
    if let (Some(config), Some(checked)) = (matches.get_one::<String>("config"), checked_file)
        && config != checked
    {
        return Err(ConfigError::Usage(format!(
            "error: --config {config} and --check-config {checked} name different files; \
             give the file once (ssegate --config PATH --check-config)\n"
        )));
    }

    let named_file = matches
        .get_one::<String>("config")
        .or(checked_file)
        .cloned()
        .or_else(|| {
            env.iter()
                .find(|(name, _)| name == ENV_CONFIG)
                .map(|(_, v)| v.clone())
        })
        .map(PathBuf::from);
    let file = named_file.or_else(|| {
        let default = PathBuf::from(DEFAULT_FILE);
        default.is_file().then_some(default)
    });
    if let Some(path) = &file {
        apply_file(&mut config, path.clone())?;
    }
    for (name, value) in &env {
        if name == ENV_CONFIG {
            continue;
        }
        match keys::find_env(name) {
            Some(key) => config.apply(key, value, || name.clone())?,
            None => warnings.push(format!(
                "ignoring environment variable {name}: no such key (known keys: {})",
                keys::names()
            )),
        }
    }
    apply_flags(&mut config, &matches)?;
    config.config.validate()?;
    warnings.extend(config.config.warnings());
    Ok(Loaded {
        config: config.config,
        file,
        warnings,
        action,
        effective: config.effective,
    })
}

/// The configuration being built, and the text each key got last.
struct Sources {
    config: Config,
    effective: Vec<String>,
}

impl Default for Sources {
    fn default() -> Sources {
        Sources {
            config: Config::default(),
            effective: KEYS.iter().map(|key| key.default.to_owned()).collect(),
        }
    }
}

impl Sources {
    fn apply(
        &mut self,
        key: &Key,
        value: &str,
        source: impl FnOnce() -> String,
    ) -> Result<(), ConfigError> {
        (key.apply)(&mut self.config, value).map_err(|message| ConfigError::Invalid {
            key: key.name.to_string(),
            source: source(),
            message,
        })?;
        if let Some(index) = KEYS.iter().position(|k| k.name == key.name) {
            self.effective[index] = value.to_owned();
        }
        Ok(())
    }
}

fn command() -> Command {
    let mut command = Command::new("ssegate")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Server-Sent Events fan-out gateway")
        .long_about(
            "Server-Sent Events fan-out gateway: backends POST /publish/<topic>, \
             browsers hold GET /subscribe/<topic> with EventSource and resume \
             with Last-Event-ID; /metrics, /healthz, /readyz for operators.",
        )
        .after_help(
            "Every flag can also be set as SSEGATE_<KEY> in the environment \
             or as <key> in the TOML file; flags win over the environment, \
             which wins over the file.\n\n\
             Examples:\n  \
             ssegate                                   embedded defaults, 127.0.0.1:8080\n  \
             ssegate --config /etc/ssegate/ssegate.toml --listen 0.0.0.0:8080\n  \
             ssegate -c /etc/ssegate/ssegate.toml --check-config\n  \
             ssegate --no-status-page --allow-anonymous-publish --listen 0.0.0.0:8080\n  \
             SSEGATE_LOG_FORMAT=json ssegate --print-config\n\n\
             Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads tls_cert/tls_key (ignored without TLS).",
        )
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .value_name("PATH")
                .help("TOML configuration file (also SSEGATE_CONFIG) [default: config/ssegate.toml if it exists, else the embedded defaults]"),
        )
        .arg(
            Arg::new("check-config")
                .long("check-config")
                .value_name("PATH")
                .num_args(0..=1)
                .default_missing_value("")
                .conflicts_with("print-config")
                .help("Check the configuration (the file PATH, or the one --config names; with the environment and the other flags, as a run would), print what is wrong naming the key, and exit: 0 when valid, 78 when not"),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the effective configuration (file, environment, flags) as TOML and exit"),
        );
    for key in KEYS {
        let default = match key.default {
            "" => String::from("unset"),
            default => default.to_string(),
        };
        if key.value_name == "BOOL" {
            // A switch and its negation, as in `--status-page` and
            // `--no-status-page`.
            command = command
                .arg(
                    Arg::new(key.name)
                        .long(key.flag_name())
                        .action(ArgAction::SetTrue)
                        .help(format!("{} [default: {default}]", key.help)),
                )
                .arg(
                    Arg::new(negated_id(key))
                        .long(negated_id(key))
                        .action(ArgAction::SetTrue)
                        .conflicts_with(key.name)
                        .help(format!("Turn {} off", key.name)),
                );
            continue;
        }
        command = command.arg(
            Arg::new(key.name)
                .long(key.flag_name())
                .value_name(key.value_name)
                .help(format!("{} [default: {default}]", key.help)),
        );
    }
    command
}

/// `no-status-page`: the flag (and clap id) that turns a boolean key off.
fn negated_id(key: &Key) -> String {
    format!("no-{}", key.flag_name())
}

/// The `SSEGATE_*` variables, in a stable order, as UTF-8.
fn ssegate_env<E, K, V>(env: E) -> Result<Vec<(String, String)>, ConfigError>
where
    E: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut vars = Vec::new();
    for (name, value) in env {
        let Some(name) = name.as_ref().to_str() else {
            continue;
        };
        if !name.starts_with(ENV_PREFIX) {
            continue;
        }
        let value = value
            .as_ref()
            .to_str()
            .ok_or_else(|| ConfigError::Invalid {
                key: name[ENV_PREFIX.len()..].to_ascii_lowercase(),
                source: name.to_string(),
                message: "the value is not valid UTF-8".into(),
            })?;
        vars.push((name.to_string(), value.to_string()));
    }
    vars.sort();
    Ok(vars)
}

fn apply_file(config: &mut Sources, path: PathBuf) -> Result<(), ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|err| file_error(err.to_string()))?;
    let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
        file_error(err.to_string().trim_end().replace('\n', " | "))
    })?;
    for (name, value) in &table {
        match value.as_table() {
            // `[cluster]`: its keys are `cluster.<key>`.
            Some(inner) if KEYS.iter().any(|key| key.table() == Some(name.as_str())) => {
                for (inner_name, value) in inner {
                    apply_file_value(config, &path, &format!("{name}.{inner_name}"), value)?;
                }
            }
            _ => apply_file_value(config, &path, name, value)?,
        }
    }
    Ok(())
}

fn apply_file_value(
    config: &mut Sources,
    path: &std::path::Path,
    name: &str,
    value: &toml::Value,
) -> Result<(), ConfigError> {
    let key = keys::find(name).ok_or_else(|| ConfigError::UnknownKey {
        key: name.to_owned(),
        path: path.to_path_buf(),
    })?;
    let source = || path.display().to_string();
    let text = toml_text(value).map_err(|message| ConfigError::Invalid {
        key: name.to_owned(),
        source: source(),
        message,
    })?;
    config.apply(key, &text, source)
}

fn apply_flags(config: &mut Sources, matches: &ArgMatches) -> Result<(), ConfigError> {
    for key in KEYS {
        if key.value_name == "BOOL" {
            if matches.get_flag(key.name) {
                config.apply(key, "true", || format!("--{}", key.flag_name()))?;
            } else if matches.get_flag(&negated_id(key)) {
                config.apply(key, "false", || format!("--{}", negated_id(key)))?;
            }
            continue;
        }
        if let Some(value) = matches.get_one::<String>(key.name) {
            config.apply(key, value, || format!("--{}", key.flag_name()))?;
        }
    }
    Ok(())
}

/// A TOML value in the text form the key parsers take.
fn toml_text(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(text) => Ok(text.clone()),
                other => Err(format!(
                    "list items must be strings, found a {}",
                    other.type_str()
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|items| items.join(",")),
        other => Err(format!(
            "expected a string, a number or a boolean, found a {}",
            other.type_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn load_with(args: &[&str], env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let args = std::iter::once("ssegate").chain(args.iter().copied());
        load(args, env.iter().copied())
    }

    #[test]
    fn flags_beat_environment_beats_defaults() {
        let loaded = load_with(
            &["--heartbeat-interval", "5s"],
            &[
                ("SSEGATE_HEARTBEAT_INTERVAL", "7s"),
                ("SSEGATE_RETRY", "250ms"),
                (
                    "SSEGATE_CORS_ALLOWED_ORIGINS",
                    "https://a.example, https://b.example",
                ),
                ("PATH", "/usr/bin"),
            ],
        )
        .expect("valid");
        assert_eq!(loaded.config.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(loaded.config.retry, Duration::from_millis(250));
        assert_eq!(
            loaded.config.cors_allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert!(loaded.warnings.is_empty());
    }

    #[test]
    fn printed_config_loads_back_to_the_same_settings() {
        let loaded = load_with(
            &[
                "--print-config",
                "--listen",
                "0.0.0.0:9000",
                "--no-status-page",
            ],
            &[
                (
                    "SSEGATE_CORS_ALLOWED_ORIGINS",
                    "https://a.example,https://b.example",
                ),
                ("SSEGATE_PUBLISH_TOKEN", "s3cret"),
                ("SSEGATE_BUFFER_BYTES", "64MiB"),
            ],
        )
        .expect("valid");
        assert_eq!(loaded.action, Action::PrintConfig);
        let printed = loaded.effective_toml();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(
            printed.contains("# publish_token = (set; not printed)"),
            "{printed}"
        );
        assert!(printed.contains("listen = \"0.0.0.0:9000\""), "{printed}");
        assert!(printed.contains("status_page = false"), "{printed}");
        assert!(printed.contains("buffer_events = 1024"), "{printed}");

        let path =
            std::env::temp_dir().join(format!("ssegate-printed-{}.toml", std::process::id()));
        std::fs::write(&path, &printed).expect("write");
        let path_text = path.display().to_string();
        // The token is set again, as the printed file says to.
        let reloaded = load_with(
            &["--config", &path_text],
            &[("SSEGATE_PUBLISH_TOKEN", "s3cret")],
        )
        .expect("printed TOML loads");
        std::fs::remove_file(&path).ok();
        assert_eq!(reloaded.config, loaded.config);
    }

    #[test]
    fn boolean_keys_are_switches_with_a_negation() {
        let on = load_with(&["--status-page"], &[]).expect("valid");
        assert_eq!(on.config.status_page, super::super::StatusPage::On);
        let off = load_with(&["--no-status-page"], &[]).expect("valid");
        assert_eq!(off.config.status_page, super::super::StatusPage::Off);
        let auto = load_with(&[], &[]).expect("valid");
        assert_eq!(auto.config.status_page, super::super::StatusPage::Auto);
        // The environment and the file still take true/false (and auto).
        let env = load_with(&[], &[("SSEGATE_STATUS_PAGE", "false")]).expect("valid");
        assert_eq!(env.config.status_page, super::super::StatusPage::Off);
        // The flag beats the environment.
        let both = load_with(&["--status-page"], &[("SSEGATE_STATUS_PAGE", "false")]);
        assert_eq!(
            both.expect("valid").config.status_page,
            super::super::StatusPage::On
        );
        assert!(matches!(
            load_with(&["--status-page", "--no-status-page"], &[]),
            Err(ConfigError::Usage(_))
        ));
        assert!(matches!(
            load_with(&["--status-page", "false"], &[]),
            Err(ConfigError::Usage(_))
        ));
    }

    #[test]
    fn check_config_takes_the_file_from_config_or_its_own_value() {
        let documented = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ssegate.toml");
        let short = load_with(&["-c", documented, "--check-config"], &[]).expect("valid");
        assert_eq!(short.action, Action::CheckConfig);
        assert_eq!(
            short.file.as_deref(),
            Some(std::path::Path::new(documented))
        );
        let own = load_with(&["--check-config", documented], &[]).expect("valid");
        assert_eq!(own.file.as_deref(), Some(std::path::Path::new(documented)));
        let same = load_with(&["--config", documented, "--check-config", documented], &[]);
        assert_eq!(
            same.expect("the same file twice").action,
            Action::CheckConfig
        );
        assert!(matches!(
            load_with(
                &["--config", documented, "--check-config", "/other.toml"],
                &[]
            ),
            Err(ConfigError::Usage(_))
        ));
    }

    #[test]
    fn a_listener_off_loopback_needs_a_publish_credential_or_an_opt_in() {
        let refused = load_with(&["--listen", "0.0.0.0:8080"], &[]).expect_err("refused");
        let message = refused.to_string();
        assert!(message.starts_with("invalid publish_token"), "{message}");
        assert!(message.contains("allow_anonymous_publish"), "{message}");
        assert!(load_with(&["--listen", "[::]:8080"], &[]).is_err());
        for (args, env) in [
            (
                &["--listen", "0.0.0.0:8080", "--publish-token", "s3cret"][..],
                &[][..],
            ),
            (
                &["--listen", "0.0.0.0:8080"],
                &[("SSEGATE_PUBLISH_TOKEN", "s3cret")],
            ),
            (
                &["--listen", "0.0.0.0:8080", "--allow-anonymous-publish"],
                &[],
            ),
            (
                &["--listen", "0.0.0.0:8080", "--auth-jwt-algorithms", "HS256"],
                &[],
            ),
            (&["--listen", "127.0.0.1:8080"], &[]),
            (&["--listen", "[::1]:8080"], &[]),
        ] {
            assert!(load_with(args, env).is_ok(), "{args:?} {env:?}");
        }
    }

    #[test]
    fn check_config_reads_the_named_file() {
        let dir = std::env::temp_dir().join(format!("ssegate-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good.toml");
        std::fs::write(&good, "retry = \"1s\"\n").expect("write");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "retry = \"soon\"\n").expect("write");
        let loaded =
            load_with(&["--check-config", &good.display().to_string()], &[]).expect("valid");
        assert_eq!(loaded.action, Action::CheckConfig);
        assert_eq!(loaded.file.as_deref(), Some(good.as_path()));
        assert_eq!(loaded.config.retry, Duration::from_secs(1));
        let err = load_with(&["--check-config", &bad.display().to_string()], &[])
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("invalid retry"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn errors_name_the_key_and_the_source() {
        let check = |args: &[&str], env: &[(&str, &str)], expect: &str| {
            let err = load_with(args, env).expect_err("must fail").to_string();
            assert!(err.contains(expect), "{err:?} lacks {expect:?}");
        };
        check(
            &[],
            &[("SSEGATE_WRITE_TIMEOUT", "5x")],
            "invalid write_timeout (from SSEGATE_WRITE_TIMEOUT)",
        );
        check(
            &["--listen", "nowhere"],
            &[],
            "invalid listen (from --listen)",
        );
        check(&["--buffer-events", "0"], &[], "invalid buffer_events");
        check(
            &["--fanout-busy-period", "2s"],
            &[],
            "invalid fanout_busy_period (from --fanout-busy-period): \"2s\" is over the 1s maximum",
        );
        check(&["--no-such-flag"], &[], "--no-such-flag");
        check(&["--tls-cert", "a.pem"], &[], "tls_cert and tls_key");
        check(
            &["--config", "/nonexistent/ssegate.toml"],
            &[],
            "/nonexistent/ssegate.toml",
        );
    }

    #[test]
    fn file_errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("ssegate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let check = |body: &str, expect: &str| {
            let path = dir.join("c.toml");
            std::fs::write(&path, body).expect("write");
            let err = load_with(&["--config", path.to_str().expect("utf-8")], &[])
                .expect_err("must fail")
                .to_string();
            assert!(err.contains(expect), "{err:?} lacks {expect:?}");
        };
        check("heartbeat = \"5s\"\n", "unknown key `heartbeat`");
        check("buffer_ttl = \"soon\"\n", "invalid buffer_ttl");
        check("retry = true\n", "invalid retry");
        check("listen = [", "cannot load config file");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn unknown_environment_variables_only_warn() {
        let loaded = load_with(&[], &[("SSEGATE_HEARTBEAT", "5s")]).expect("valid");
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("SSEGATE_HEARTBEAT"));
    }

    #[test]
    fn help_is_not_an_error() {
        assert!(matches!(
            load_with(&["--help"], &[]),
            Err(ConfigError::Info(_))
        ));
    }
}
