//! `coverwatch healthcheck`: one HTTP GET of this process's own `/readyz` (or another path),
//! for container runtimes whose image has no shell and no curl (the runtime image is
//! distroless). Exit code 0 when the answer is `200`, 1 otherwise.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::config::Config;

/// Where the webhook listener of a process running with `config` is reached from inside the
/// same container: its bound address, or loopback when it binds every interface.
pub fn local_url(config: &Config, path: &str) -> Result<String, String> {
    let addr = config.http_addr;
    if addr.port() == 0 {
        return Err(format!(
            "http_addr {addr} has port 0: the listener's port cannot be known from the configuration"
        ));
    }
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if config.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    Ok(format!(
        "{scheme}://{}{path}",
        SocketAddr::new(ip, addr.port())
    ))
}

/// GET `path` on the local webhook listener; `Ok` with the body when it answers `200`.
pub async fn check(config: &Config, path: &str, timeout: Duration) -> Result<String, String> {
    let url = local_url(config, path)?;
    // The listener's certificate names its public host, never the loopback address asked here,
    // and nothing secret travels on this request: the process checks itself, so the certificate
    // is not verified.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let body = body.trim();
    if status == reqwest::StatusCode::OK {
        Ok(body.to_owned())
    } else {
        Err(format!("GET {url}: {status}: {body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_is_reached_on_loopback_and_tls_over_https() {
        let mut config = Config {
            http_addr: "0.0.0.0:8080".parse().unwrap(),
            ..Config::default()
        };
        assert_eq!(
            local_url(&config, "/readyz").unwrap(),
            "http://127.0.0.1:8080/readyz"
        );
        config.http_addr = "[::]:9000".parse().unwrap();
        assert_eq!(
            local_url(&config, "healthz").unwrap(),
            "http://[::1]:9000/healthz"
        );
        config.http_addr = "10.1.2.3:8080".parse().unwrap();
        config.http.tls = Some(crate::config::TlsFiles {
            cert_file: "c.pem".into(),
            key_file: "k.pem".into(),
        });
        assert_eq!(
            local_url(&config, "/readyz").unwrap(),
            "https://10.1.2.3:8080/readyz"
        );
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        let err = local_url(&config, "/readyz").unwrap_err();
        assert!(err.contains("port 0"), "{err}");
    }
}
