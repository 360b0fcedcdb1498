//! TLS termination (`tls_cert` + `tls_key`), with ALPN offering `h2` and
//! `http/1.1` so browsers get HTTP/2 and everything else still works.

use std::io;
use std::path::Path;
use std::sync::Arc;

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::server::TlsStream;

/// A cheap-to-clone TLS acceptor built once at start-up.
#[derive(Clone)]
pub struct TlsAcceptor(tokio_rustls::TlsAcceptor);

impl TlsAcceptor {
    /// Loads a PEM certificate chain and private key. Errors name the file.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> io::Result<TlsAcceptor> {
        let invalid = |path: &Path, what: &str, err: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} {}: {err}", path.display()),
            )
        };
        let certs = CertificateDer::pem_file_iter(cert_path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|err| invalid(cert_path, "cannot read tls_cert", &err))?;
        if certs.is_empty() {
            return Err(invalid(cert_path, "no certificate in tls_cert", &"empty"));
        }
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|err| invalid(key_path, "cannot read tls_key", &err))?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|err| invalid(cert_path, "TLS setup failed for", &err))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|err| invalid(key_path, "tls_key does not fit tls_cert", &err))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor(tokio_rustls::TlsAcceptor::from(Arc::new(
            config,
        ))))
    }

    pub async fn accept<T>(&self, io: T) -> io::Result<TlsStream<T>>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        self.0.accept(io).await
    }
}
