//! TLS for both listeners (rustls with ring). Certificates and keys are PEM files named in the
//! configuration; they are read and checked when the configuration is loaded, so a wrong path
//! or a key that does not belong to the certificate stops start-up naming the key.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, GrpcTlsSettings, TlsFiles};

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        ConfigError::invalid(key, path.display().to_string(), format!("cannot read: {e}"))
    })
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::invalid(
                key,
                path.display().to_string(),
                format!("not a PEM certificate file: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::invalid(
            key,
            path.display().to_string(),
            "holds no PEM certificate",
        ));
    }
    Ok(certs)
}

fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        // The file's content is a secret: name the path, never echo what was read.
        ConfigError::invalid(
            key,
            path.display().to_string(),
            format!("holds no usable PEM private key ({e})"),
        )
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(
    prefix: &str,
    cert_file: &Path,
    key_file: &Path,
) -> Result<rustls::ServerConfig, ConfigError> {
    let certs = certificates(&format!("{prefix}.cert_file"), cert_file)?;
    let key = private_key(&format!("{prefix}.key_file"), key_file)?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid(prefix, "", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ConfigError::invalid(
                format!("{prefix}.key_file"),
                key_file.display().to_string(),
                format!(
                    "does not fit the certificate in {}: {e}",
                    cert_file.display()
                ),
            )
        })
}

/// Check that `cert_file` and `key_file` hold a certificate chain and its private key.
pub(crate) fn check_identity(
    prefix: &str,
    cert_file: &Path,
    key_file: &Path,
) -> Result<(), ConfigError> {
    server_config(prefix, cert_file, key_file).map(|_| ())
}

/// Check that `path` holds at least one PEM certificate.
pub(crate) fn check_certificates(key: &str, path: &Path) -> Result<(), ConfigError> {
    certificates(key, path).map(|_| ())
}

/// The webhook listener's TLS acceptor. It offers HTTP/1.1 only, which is what the listener
/// speaks (vendors deliver webhooks over HTTP/1.1).
pub fn http_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ConfigError> {
    let mut config = server_config("http.tls", &files.cert_file, &files.key_file)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// tonic's TLS settings for the gRPC API, with client-certificate verification when a client
/// CA is configured.
pub fn grpc_config(
    settings: &GrpcTlsSettings,
    handshake_timeout: std::time::Duration,
) -> Result<tonic::transport::ServerTlsConfig, ConfigError> {
    // Checked here as well as at load: tonic only reports a bad file when the first client
    // connects, and then only in a trace.
    check_identity("grpc.tls", &settings.cert_file, &settings.key_file)?;
    let identity = tonic::transport::Identity::from_pem(
        read("grpc.tls.cert_file", &settings.cert_file)?,
        read("grpc.tls.key_file", &settings.key_file)?,
    );
    let mut config = tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .timeout(handshake_timeout);
    if let Some(ca) = &settings.client_ca_file {
        check_certificates("grpc.tls.client_ca_file", ca)?;
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(
            "grpc.tls.client_ca_file",
            ca,
        )?));
    }
    Ok(config)
}
