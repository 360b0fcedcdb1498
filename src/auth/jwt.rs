//! `JwtVerifier`: checks a JSON Web Token and compiles its grants.
//!
//! The algorithms are pinned by configuration (`jwt_algorithms`): the
//! token's own `alg` is only checked against that list, never trusted, so
//! `alg: none` and HS256-signed-with-the-RSA-public-key tokens fail.
//! `exp` and `aud` are required, `iss` when configured, `nbf` honoured,
//! all with `jwt_leeway`. The grants (the `ssegate` claim) are parsed into
//! `Patterns` once per token, and a verified token is cached until its
//! `exp` under the SHA-256 of its text, so a reconnect storm pays one
//! signature check per distinct token, not one per reconnect.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::cache::{self, AnswerCache};
use super::pattern::Patterns;
use crate::config::AuthConfig;

/// Patterns one grant list may hold.
pub const MAX_PATTERNS: usize = 64;
/// The shortest HMAC secret accepted (the size of an HS256 digest).
pub const MIN_SECRET_BYTES: usize = 32;
/// Verified tokens remembered at most.
const CACHE_ENTRIES: usize = 65_536;
/// The longest a token is taken to live, whatever its `exp` says: a "never
/// expires" `exp` near `u64::MAX` must not overflow the clock arithmetic.
pub const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What a valid token allows.
#[derive(Debug, Clone)]
pub struct Verified {
    /// `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
    pub subscribe: Arc<Patterns>,
    pub publish: Arc<Patterns>,
}

/// Why a token was refused, in a few words that never quote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    Signature,
    Expired,
    NotYetValid,
    Audience,
    Issuer,
    Algorithm,
    /// The `ssegate` claim has the wrong shape, too many or bad patterns.
    Grants,
    /// A query token that lives longer than `query_token_max_lifetime`.
    QueryLifetime,
}

impl Invalid {
    pub fn describe(self) -> &'static str {
        match self {
            Invalid::Malformed => "malformed",
            Invalid::Signature => "bad signature",
            Invalid::Expired => "expired",
            Invalid::NotYetValid => "not valid yet (nbf)",
            Invalid::Audience => "wrong or missing audience (aud)",
            Invalid::Issuer => "wrong or missing issuer (iss)",
            Invalid::Algorithm => "algorithm not allowed",
            Invalid::Grants => "malformed ssegate claim",
            Invalid::QueryLifetime => {
                "a token in the URL must expire within query_token_max_lifetime"
            }
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    /// Checked again here when `jwt_issuer` is set: the crate also accepts
    /// an array holding it, and the contract says `iss` must equal it.
    #[serde(default)]
    iss: Option<serde_json::Value>,
    #[serde(default)]
    ssegate: Option<GrantClaim>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantClaim {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

pub struct JwtVerifier {
    key: DecodingKey,
    issuer: Option<String>,
    validation: Validation,
    leeway: Duration,
    cache: AnswerCache<Verified>,
}

/// A configuration problem: the key it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    pub key: &'static str,
    pub message: String,
}

fn problem(key: &'static str, message: impl Into<String>) -> KeyProblem {
    KeyProblem {
        key,
        message: message.into(),
    }
}

impl JwtVerifier {
    /// Reads the key file and builds the verifier; `None` when
    /// `jwt_algorithms` is empty (JWT off).
    pub fn from_config(auth: &AuthConfig) -> Result<Option<JwtVerifier>, KeyProblem> {
        let algorithms = algorithms(&auth.jwt_algorithms)
            .map_err(|message| problem("auth.jwt_algorithms", message))?;
        let Some(first) = algorithms.first() else {
            return Ok(None);
        };
        let key = match first.family() {
            jsonwebtoken::AlgorithmFamily::Hmac => {
                let key_name = "auth.jwt_secret_file";
                let (path, secret) = read_key_file(
                    auth.jwt_secret_file.as_ref(),
                    key_name,
                    "HS* algorithms need jwt_secret_file (a file of at least 32 random bytes)",
                )?;
                // One trailing newline (from `echo > file` or an editor) is
                // not part of it; any other byte is, a binary secret's too.
                let secret = secret
                    .strip_suffix(b"\r\n")
                    .or_else(|| secret.strip_suffix(b"\n"))
                    .unwrap_or(&secret);
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(problem(
                        key_name,
                        format!(
                            "{} holds {} bytes; an HMAC secret needs at least {MIN_SECRET_BYTES}",
                            path.display(),
                            secret.len()
                        ),
                    ));
                }
                DecodingKey::from_secret(secret)
                    .map_err(|err| problem(key_name, err.to_string()))?
            }
            family => {
                let key_name = "auth.jwt_public_key_file";
                let (path, pem) = read_key_file(
                    auth.jwt_public_key_file.as_ref(),
                    key_name,
                    "RS*, PS*, ES* and EdDSA need jwt_public_key_file (a PEM public key)",
                )?;
                let parsed = match family {
                    jsonwebtoken::AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
                    jsonwebtoken::AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_ed_pem(&pem),
                };
                parsed.map_err(|err| {
                    let path = path.display();
                    problem(
                        key_name,
                        format!("{path} is not a PEM public key for {first:?}: {err}"),
                    )
                })?
            }
        };
        let mut validation = Validation::new(*first);
        validation.algorithms = algorithms;
        validation.leeway = auth.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_audience(&[&auth.jwt_audience]);
        let mut required = vec!["exp", "aud"];
        if let Some(issuer) = &auth.jwt_issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(JwtVerifier {
            key,
            issuer: auth.jwt_issuer.clone(),
            validation,
            leeway: Duration::from_secs(auth.jwt_leeway.as_secs()),
            cache: AnswerCache::new(CACHE_ENTRIES),
        }))
    }

    /// Verifies `token`, from the cache when it was verified before.
    pub fn verify(&self, token: &str) -> Result<Verified, Invalid> {
        let key = cache::key([token.as_bytes()]);
        let verified = match self.cache.get(&key) {
            Some(verified) => verified,
            None => self.verify_uncached(token)?,
        };
        // The crate compares whole seconds, so a token is still valid for
        // up to a second after `exp` + leeway; checked here to the
        // millisecond, so that a stream ended at `exp` cannot reopen.
        let valid_for = (lifetime_end(verified.expires_at) + self.leeway)
            .checked_sub(since_epoch())
            .map(|d| d.min(MAX_LIFETIME));
        let Some(valid_for) = valid_for.filter(|d| !d.is_zero()) else {
            return Err(Invalid::Expired);
        };
        self.cache.insert(
            key,
            verified.clone(),
            tokio::time::Instant::now() + valid_for,
        );
        Ok(verified)
    }

    /// The signature and claims check alone (benchmarks compare the two).
    pub fn verify_uncached(&self, token: &str) -> Result<Verified, Invalid> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|err| classify(err.kind()))?;
        if let Some(issuer) = &self.issuer
            && data.claims.iss.as_ref().and_then(|iss| iss.as_str()) != Some(issuer.as_str())
        {
            return Err(Invalid::Issuer);
        }
        let grants = data.claims.ssegate.unwrap_or(GrantClaim {
            subscribe: Vec::new(),
            publish: Vec::new(),
        });
        Ok(Verified {
            expires_at: data.claims.exp,
            subscribe: Arc::new(grant_patterns(&grants.subscribe)?),
            publish: Arc::new(grant_patterns(&grants.publish)?),
        })
    }
}

/// The contents of the key file `path` (`key_name`), or why not.
fn read_key_file<'a>(
    path: Option<&'a PathBuf>,
    key_name: &'static str,
    missing: &str,
) -> Result<(&'a PathBuf, Vec<u8>), KeyProblem> {
    let path = path.ok_or_else(|| problem(key_name, missing))?;
    let contents = std::fs::read(path)
        .map_err(|err| problem(key_name, format!("cannot read {}: {err}", path.display())))?;
    Ok((path, contents))
}

fn grant_patterns(texts: &[String]) -> Result<Patterns, Invalid> {
    if texts.len() > MAX_PATTERNS {
        return Err(Invalid::Grants);
    }
    Patterns::parse(texts).map_err(|_| Invalid::Grants)
}

fn classify(kind: &ErrorKind) -> Invalid {
    match kind {
        ErrorKind::InvalidSignature => Invalid::Signature,
        ErrorKind::ExpiredSignature => Invalid::Expired,
        ErrorKind::ImmatureSignature => Invalid::NotYetValid,
        ErrorKind::InvalidAudience => Invalid::Audience,
        ErrorKind::InvalidIssuer => Invalid::Issuer,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Invalid::Algorithm,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            match claim.as_str() {
                "aud" => Invalid::Audience,
                "iss" => Invalid::Issuer,
                "exp" => Invalid::Expired,
                _ => Invalid::Malformed,
            }
        }
        _ => Invalid::Malformed,
    }
}

/// `exp` as a time since the Unix epoch, capped so that adding to it
/// cannot overflow.
pub fn lifetime_end(expires_at: u64) -> Duration {
    Duration::from_secs(expires_at).min(since_epoch() + MAX_LIFETIME)
}

/// The time since the Unix epoch, to the clock's precision.
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Parses `jwt_algorithms`: known names, one key family, `none` impossible.
pub fn algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    let mut algorithms = Vec::with_capacity(names.len());
    for name in names {
        let algorithm = Algorithm::from_str(name).map_err(|_| {
            format!(
                "unknown algorithm {name:?}; one of HS256 HS384 HS512 RS256 RS384 RS512 \
                 PS256 PS384 PS512 ES256 ES384 EdDSA (\"none\" is never accepted)"
            )
        })?;
        if let Some(first) = algorithms.first()
            && Algorithm::family(*first) != algorithm.family()
        {
            return Err(format!(
                "{name} and {first:?} need different kinds of key; list algorithms of one family"
            ));
        }
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    Ok(algorithms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_lists() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(algorithms(&names(&[])), Ok(vec![]));
        assert_eq!(
            algorithms(&names(&["HS256", "HS512"])),
            Ok(vec![Algorithm::HS256, Algorithm::HS512])
        );
        assert_eq!(
            algorithms(&names(&["RS256", "PS256"])),
            Ok(vec![Algorithm::RS256, Algorithm::PS256])
        );
        assert!(algorithms(&names(&["none"])).is_err());
        assert!(algorithms(&names(&["hs256"])).is_err());
        assert!(
            algorithms(&names(&["HS256", "RS256"]))
                .unwrap_err()
                .contains("one family")
        );
    }
}
