//! TLS termination (`tls_cert` + `tls_key`), with ALPN offering `h2` and
//! `http/1.1` so browsers get HTTP/2 and everything else still works.
//!
//! The certificate sits behind a resolver that `reload` swaps, so a renewed
//! certificate is picked up by every new handshake while the connections
//! already open (and their streams) carry on untouched: on SIGHUP, and
//! when the files change (`tls_watch_interval`), since cert-manager and
//! certbot rotate them without a signal. A change is seen by reading both
//! files and comparing a digest of their bytes: a Kubernetes secret volume
//! swaps a symlink, which modification times follow less reliably.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;

/// A cheap-to-clone TLS acceptor whose certificate can be reloaded.
#[derive(Clone)]
pub struct TlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    certificate: Arc<CurrentCertificate>,
}

/// The certificate every new handshake gets, and where it was loaded from.
struct CurrentCertificate {
    key: RwLock<Arc<CertifiedKey>>,
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for CurrentCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentCertificate")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A panic cannot happen while the lock is held (it only swaps an Arc).
        Some(Arc::clone(
            &self.key.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

impl TlsAcceptor {
    /// Loads a PEM certificate chain and private key. Errors name the file.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> io::Result<TlsAcceptor> {
        let provider = Arc::new(default_provider());
        let key = load_certified_key(cert_path, key_path, &provider)?;
        let certificate = Arc::new(CurrentCertificate {
            key: RwLock::new(Arc::new(key)),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider: Arc::clone(&provider),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| invalid(cert_path, "TLS setup failed for", &err))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificate,
        })
    }

    /// Reads the certificate and key files again. On success new handshakes
    /// use them; on failure the old ones stay, and the error says why.
    pub fn reload(&self) -> io::Result<()> {
        let current = &self.certificate;
        let key = load_certified_key(&current.cert_path, &current.key_path, &current.provider)?;
        *current.key.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(())
    }

    /// A digest of the certificate and key files' bytes, to tell a
    /// rotation from a look at unchanged files.
    fn files_digest(&self) -> io::Result<[u8; 32]> {
        use sha2::{Digest, Sha256};
        let current = &self.certificate;
        let mut digest = Sha256::new();
        for path in [&current.cert_path, &current.key_path] {
            let bytes = std::fs::read(path)?;
            digest.update((bytes.len() as u64).to_le_bytes());
            digest.update(&bytes);
        }
        Ok(digest.finalize().into())
    }

    pub async fn accept<T>(&self, io: T) -> io::Result<TlsStream<T>>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        self.acceptor.accept(io).await
    }
}

fn invalid(path: &Path, what: &str, err: &dyn fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} {}: {err}", path.display()),
    )
}

fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> io::Result<CertifiedKey> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| invalid(cert_path, "cannot read tls_cert", &err))?;
    if certs.is_empty() {
        return Err(invalid(cert_path, "no certificate in tls_cert", &"empty"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|err| invalid(key_path, "cannot read tls_key", &err))?;
    CertifiedKey::from_der(certs, key, provider)
        .map_err(|err| invalid(key_path, "tls_key does not fit tls_cert", &err))
}

/// Starts answering SIGHUP: with TLS, by reloading the certificate (see
/// `TlsAcceptor::reload`); without, by logging that there is nothing to
/// reload. Installed before the first accept and whether or not TLS is on,
/// because SIGHUP's default action ends the process: `systemctl reload`
/// must never stop the gateway. With TLS and a nonzero `watch_interval`,
/// also reloads when the files' contents change. Abort the task to stop.
pub fn spawn_reloader(
    acceptor: Option<TlsAcceptor>,
    watch_interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let mut watch = acceptor
        .clone()
        .filter(|_| !watch_interval.is_zero())
        .map(|acceptor| FileWatch::new(acceptor, watch_interval));
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Registered here, synchronously: from this line on a SIGHUP is ours.
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => tokio::spawn(async move {
                loop {
                    tokio::select! {
                        hangup = hangups.recv() => match hangup {
                            Some(()) => reload_logged(acceptor.as_ref(), "SIGHUP"),
                            None => return,
                        },
                        () = FileWatch::tick(watch.as_mut()) => {}
                    }
                }
            }),
            Err(err) => {
                tracing::warn!(cause = %err, "cannot listen for SIGHUP; certificate reload is off");
                tokio::spawn(async move {
                    loop {
                        FileWatch::tick(watch.as_mut()).await;
                    }
                })
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = acceptor;
        tokio::spawn(async move {
            loop {
                FileWatch::tick(watch.as_mut()).await;
            }
        })
    }
}

/// Reloads the certificate when the bytes of its files change.
struct FileWatch {
    acceptor: TlsAcceptor,
    ticker: tokio::time::Interval,
    /// The digest of both files when last looked at: a change is loaded
    /// once, whether or not it loads (a half-written pair is tried again
    /// when the rest of it lands, since that changes the digest again).
    seen: Option<[u8; 32]>,
}

impl FileWatch {
    fn new(acceptor: TlsAcceptor, every: Duration) -> FileWatch {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let seen = acceptor.files_digest().ok();
        FileWatch {
            acceptor,
            ticker,
            seen,
        }
    }

    /// Waits for the next look at the files and reloads if they changed;
    /// never returns when there is nothing to watch.
    async fn tick(watch: Option<&mut FileWatch>) {
        let Some(watch) = watch else {
            return std::future::pending().await;
        };
        watch.ticker.tick().await;
        let Ok(digest) = watch.acceptor.files_digest() else {
            // Missing for a moment while being replaced: look again later.
            return;
        };
        if watch.seen.replace(digest) != Some(digest) {
            reload_logged(Some(&watch.acceptor), "the files changed");
        }
    }
}

/// One reload, and a log line that says why and whether it took.
fn reload_logged(acceptor: Option<&TlsAcceptor>, why: &str) {
    let Some(acceptor) = acceptor else {
        tracing::info!("SIGHUP: no TLS configured; nothing to reload");
        return;
    };
    let cert = acceptor.certificate.cert_path.display();
    match acceptor.reload() {
        Ok(()) => tracing::info!(%cert, "{why}: TLS certificate reloaded"),
        Err(err) => tracing::warn!(
            %cert,
            cause = %err,
            "{why}: TLS certificate not reloaded; keeping the previous one"
        ),
    }
}
