//! Reaching the server: the address (given, or the configuration's), TLS, the key in every
//! call's metadata, and what a refused call means to the operator.

use std::error::Error as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use coverwatch_proto::v1::admin_service_client::AdminServiceClient;
use coverwatch_proto::v1::monitoring_service_client::MonitoringServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use super::{CliError, Connection};
use crate::config::Config;

/// Unary calls give up after this; `events tail` is not bounded.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;
pub type Monitoring = MonitoringServiceClient<InterceptedService<Channel, Bearer>>;

/// Sends `authorization: Bearer <key>` with every call, and remembers which kind of key it is
/// so that a refusal can say which one was refused.
#[derive(Clone)]
pub struct Bearer {
    value: MetadataValue<Ascii>,
    pub kind: KeyKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Admin,
    Tenant,
    /// No tenant key was given; the admin key stands in (one key in the development setup).
    AdminAsTenant,
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.value.clone());
        Ok(request)
    }
}

impl Bearer {
    fn new(key: &str, kind: KeyKind) -> Result<Self, CliError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(CliError::new(match kind {
                KeyKind::Admin => "the admin key is empty",
                _ => "the API key is empty",
            }));
        }
        let value = format!("Bearer {key}").parse().map_err(|_| {
            CliError::new("the key holds characters that cannot travel in gRPC metadata")
        })?;
        Ok(Self { value, kind })
    }
}

/// A connection to a running server.
pub struct Server {
    channel: Channel,
}

impl Server {
    pub async fn connect(connection: &Connection, config: &Path) -> Result<Self, CliError> {
        let uri = match &connection.addr {
            Some(addr) => normalize(addr)?,
            None => configured_address(config)?,
        };
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| CliError::new(format!("bad --addr `{uri}`: {}", chain(&e))))?
            .connect_timeout(CONNECT_TIMEOUT);
        match (uri.starts_with("https://"), &connection.ca_cert) {
            (true, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    CliError::new(format!("cannot read --ca-cert {}: {e}", path.display()))
                })?;
                endpoint = endpoint
                    .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                    .map_err(|e| CliError::new(format!("bad --ca-cert: {}", chain(&e))))?;
            }
            (true, None) => {
                return Err(CliError::new(format!(
                    "{uri} is served over TLS: pass --ca-cert with the CA that signed the server's certificate"
                )));
            }
            (false, Some(_)) => {
                return Err(CliError::new(format!(
                    "--ca-cert is for TLS, but {uri} is plaintext: use an https:// address"
                )));
            }
            (false, None) => {}
        }
        let channel = endpoint.connect().await.map_err(|e| {
            CliError::new(format!("cannot reach coverwatch at {uri}: {}", chain(&e)))
        })?;
        Ok(Self { channel })
    }

    pub fn admin(self, connection: &Connection) -> Result<Admin, CliError> {
        let key = connection.admin_key.as_deref().ok_or_else(|| {
            CliError::new("no admin key: set COVERWATCH_ADMIN_KEY or pass --admin-key")
        })?;
        Ok(AdminServiceClient::with_interceptor(
            self.channel,
            Bearer::new(key, KeyKind::Admin)?,
        ))
    }

    pub fn monitoring(self, connection: &Connection) -> Result<(Monitoring, KeyKind), CliError> {
        let bearer = match (&connection.api_key, &connection.admin_key) {
            (Some(key), _) => Bearer::new(key, KeyKind::Tenant)?,
            (None, Some(key)) => Bearer::new(key, KeyKind::AdminAsTenant)?,
            (None, None) => {
                return Err(CliError::new(
                    "no API key: set COVERWATCH_API_KEY or pass --api-key (a tenant's key)",
                ));
            }
        };
        let kind = bearer.kind;
        Ok((
            MonitoringServiceClient::with_interceptor(self.channel, bearer),
            kind,
        ))
    }
}

/// `host:port` means plaintext; a scheme must be `http` or `https`.
fn normalize(addr: &str) -> Result<String, CliError> {
    let addr = addr.trim();
    let uri = match addr.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => addr.to_owned(),
        Some((scheme, _)) => {
            return Err(CliError::new(format!(
                "bad --addr `{addr}`: the scheme must be http or https, not `{scheme}`"
            )));
        }
        None => format!("http://{addr}"),
    };
    let parsed: http::Uri = uri
        .parse()
        .map_err(|e| CliError::new(format!("bad --addr `{addr}`: {e}")))?;
    if parsed.host().is_none_or(str::is_empty) || parsed.port().is_none() {
        return Err(CliError::new(format!(
            "bad --addr `{addr}`: expected host:port, for example 127.0.0.1:50051"
        )));
    }
    Ok(uri)
}

/// The local server's address, from the same configuration `coverwatch serve` reads.
fn configured_address(path: &Path) -> Result<String, CliError> {
    let config = Config::load(path).map_err(|e| {
        CliError::new(format!(
            "no --addr, and the configuration does not say where the server is: {e}"
        ))
    })?;
    let scheme = if config.grpc.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(format!(
        "{scheme}://{}",
        loopback_if_wildcard(config.grpc_addr)
    ))
}

/// A server bound to every interface is reached on this machine's loopback.
fn loopback_if_wildcard(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// An error and its causes on one line (tonic's transport errors say little on their own).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What a failed call means, naming the key that was refused.
pub fn refused(status: &Status, key: KeyKind) -> CliError {
    let message = status.message();
    let text = match (status.code(), key) {
        (Code::Unauthenticated, KeyKind::Admin) => {
            format!("the admin key was refused ({message})")
        }
        (Code::Unauthenticated, KeyKind::Tenant) => {
            format!("the API key was refused ({message})")
        }
        (Code::Unauthenticated, KeyKind::AdminAsTenant) => format!(
            "the admin key was refused as an API key ({message}); links and events belong to a tenant: set COVERWATCH_API_KEY or pass --api-key"
        ),
        (Code::PermissionDenied, KeyKind::Tenant | KeyKind::AdminAsTenant) => {
            format!("the API key was refused ({message})")
        }
        (Code::PermissionDenied, KeyKind::Admin) => {
            format!("the key was refused: it is a tenant's API key, not an admin key ({message})")
        }
        (Code::InvalidArgument, _) => format!("the server refused the request: {message}"),
        (Code::NotFound, _) => format!("not found: {message}"),
        (Code::AlreadyExists, _) => format!("already exists: {message}"),
        (Code::FailedPrecondition, _) => format!("not possible now: {message}"),
        (Code::Unavailable, _) => {
            let cause = status
                .source()
                .map(|e| format!(" ({})", chain(e)))
                .unwrap_or_default();
            format!("coverwatch is unavailable: {message}{cause}")
        }
        (Code::DeadlineExceeded, _) => format!("the server did not answer in time: {message}"),
        (code, _) => format!("the call failed with {code:?}: {message}"),
    };
    CliError::new(text)
}

/// A unary request with [`CALL_TIMEOUT`].
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_port_or_http_urls() {
        assert_eq!(
            normalize("127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            normalize("https://cw.internal:443").unwrap(),
            "https://cw.internal:443"
        );
        for bad in [
            "ftp://host:1",
            "127.0.0.1",
            "http://",
            "not an address",
            "::1",
        ] {
            assert!(
                normalize(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("bad --addr"),
                "{bad}"
            );
        }
        assert_eq!(
            loopback_if_wildcard("0.0.0.0:7".parse().unwrap()),
            "127.0.0.1:7".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            loopback_if_wildcard("[::]:7".parse().unwrap()),
            "[::1]:7".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn a_refusal_names_the_key() {
        let unauthenticated = Status::unauthenticated("unknown admin key");
        assert_eq!(
            refused(&unauthenticated, KeyKind::Admin).to_string(),
            "the admin key was refused (unknown admin key)"
        );
        assert!(
            refused(&unauthenticated, KeyKind::AdminAsTenant)
                .to_string()
                .contains("COVERWATCH_API_KEY")
        );
        assert!(
            refused(&Status::permission_denied("x"), KeyKind::Admin)
                .to_string()
                .contains("tenant's API key")
        );
    }
}
