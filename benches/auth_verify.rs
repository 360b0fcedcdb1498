//! Token verifications per second, HS256 and EdDSA, with and without the
//! verified-token cache: what a reconnect storm of token-carrying
//! subscribers costs the gateway's CPU before any stream opens.
//!
//! `cargo bench --bench auth_verify` (one thread, release build; the
//! figures and their reading are in benches/README.md).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use ssegate::Config;
use ssegate::auth::jwt::JwtVerifier;

/// Distinct tokens per run: a storm of this many different subscribers.
const N_TOKENS: usize = 10_000;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tokens(algorithm: Algorithm, key: &EncodingKey) -> Vec<String> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    (0..N_TOKENS)
        .map(|i| {
            let claims = json!({
                "aud": "ssegate",
                "sub": format!("user-{i}"),
                "exp": exp,
                "ssegate": {"subscribe": [format!("users/{i}/**"), "news/*"]},
            });
            encode(&Header::new(algorithm), &claims, key).expect("sign")
        })
        .collect()
}

/// Verifications per second over every token, `rounds` times.
fn rate(tokens: &[String], rounds: usize, verify: impl Fn(&str)) -> f64 {
    let started = Instant::now();
    for _ in 0..rounds {
        for token in tokens {
            verify(token);
        }
    }
    (tokens.len() * rounds) as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

fn main() {
    let secret_file = std::env::temp_dir().join("ssegate-bench-hs256.secret");
    let secret = b"0123456789abcdef0123456789abcdef-bench";
    std::fs::write(&secret_file, secret).expect("secret file");
    let setups = [
        (
            "HS256",
            Algorithm::HS256,
            EncodingKey::from_secret(secret).expect("key"),
            Some(secret_file.clone()),
            None,
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(
                &std::fs::read(repo("tests/fixtures/ed25519-test-private.pem")).expect("key"),
            )
            .expect("ed key"),
            None,
            Some(repo("tests/fixtures/ed25519-test-public.pem")),
        ),
    ];
    println!(
        "| algorithm | verifications/s, no cache | verifications/s, cached | cached / uncached | 10,000-token storm, no cache |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, algorithm, key, secret_file, public_key_file) in setups {
        let mut config = Config::default();
        config.auth.jwt_algorithms = vec![name.to_owned()];
        config.auth.jwt_secret_file = secret_file;
        config.auth.jwt_public_key_file = public_key_file;
        let verifier = JwtVerifier::from_config(&config.auth)
            .expect("verifier")
            .expect("JWT on");
        let tokens = tokens(algorithm, &key);
        let uncached = rate(&tokens, 1, |token| {
            verifier.verify_uncached(token).expect("valid");
        });
        // Fill the cache, then measure hits.
        for token in &tokens {
            verifier.verify(token).expect("valid");
        }
        let cached = rate(&tokens, 10, |token| {
            verifier.verify(token).expect("valid");
        });
        let storm = Duration::from_secs_f64(N_TOKENS as f64 / uncached);
        println!(
            "| {name} | {uncached:.0} | {cached:.0} | {:.1} | {:.0} ms |",
            cached / uncached,
            storm.as_secs_f64() * 1000.0
        );
    }
}
