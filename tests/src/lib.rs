//! Support for end-to-end tests: start the real server on port 0 against a fresh database
//! (SQLite, or PostgreSQL when `COVERWATCH_TEST_DATABASE_URL` is set), call it over gRPC and
//! HTTP like any client would, and wait for things with a deadline instead of sleeping.

pub mod dataset;
pub mod fake_provider;
pub mod flows;
pub mod ingest_bench;
pub mod vendors;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use coverwatch::auth::hash_key;
use coverwatch::config::{Config, TenantConfig};
use coverwatch::{App, Overrides};
use coverwatch_core::VendorPlugin;
use coverwatch_engine::{ProviderRegistry, WorkerConfig};
use coverwatch_proto::v1::monitoring_service_client::MonitoringServiceClient;
use coverwatch_proto::v1::requirements_service_client::RequirementsServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use coverwatch_proto::v1;

/// A tenant and its API key, as the tests configure them.
pub const TENANT_A: (&str, &str) = ("tenant-a", "key-of-tenant-a-0123456789");
pub const TENANT_B: (&str, &str) = ("tenant-b", "key-of-tenant-b-0123456789");

pub type Client = MonitoringServiceClient<InterceptedService<Channel, BearerAuth>>;
pub type RequirementsClient = RequirementsServiceClient<InterceptedService<Channel, BearerAuth>>;

#[derive(Clone)]
pub struct BearerAuth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A configuration for tests: two tenants, port 0 everywhere, a fresh database.
pub async fn test_config() -> Config {
    let dir = std::env::temp_dir();
    Config {
        database_url: coverwatch_store::testing::fresh_database_url().await,
        database_max_connections: 8,
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        sandbox_addr: "127.0.0.1:0".parse().unwrap(),
        tenants: [TENANT_A, TENANT_B]
            .iter()
            .map(|(id, key)| TenantConfig {
                id: (*id).into(),
                api_key_sha256: vec![hash_key(key)],
            })
            .collect(),
        encryption_keys: vec![coverwatch::config::EncryptionKeyConfig {
            id: "test".into(),
            key: coverwatch_store::Keyring::generate_key_base64(),
        }],
        encryption_key_file: dir.join("unused.key"),
        ..Config::default()
    }
}

/// Worker settings that make retries and polls fast enough for tests.
pub fn fast_worker() -> WorkerConfig {
    WorkerConfig {
        idle_poll: Duration::from_millis(50),
        backoff: coverwatch_core::backoff::Backoff::new(
            Duration::from_millis(20),
            Duration::from_millis(200),
        ),
        max_attempts: 4,
        ..WorkerConfig::default()
    }
}

/// A running server and how to reach it.
pub struct TestServer {
    pub app: App,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start(config: Config, providers: Option<ProviderRegistry>) -> Self {
        Self::start_with(
            config,
            Overrides {
                providers,
                worker: Some(fast_worker()),
                plugins: None,
                stream_poll: None,
                sweep: None,
            },
        )
        .await
    }

    /// The service's own vendors and `extra` plug-ins (a test-only vendor), built from
    /// `config` (simulated where they have no settings), with fast workers.
    pub async fn start_with_plugins(config: Config, extra: Vec<Arc<dyn VendorPlugin>>) -> Self {
        let mut plugins = coverwatch::providers::vendors();
        plugins.extend(extra);
        Self::start_with(
            config,
            Overrides {
                plugins: Some(plugins),
                worker: Some(fast_worker()),
                ..Overrides::default()
            },
        )
        .await
    }

    pub async fn start_with(config: Config, overrides: Overrides) -> Self {
        let app = coverwatch::start(config, overrides)
            .await
            .expect("server starts");
        Self {
            app,
            http: reqwest::Client::new(),
        }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.http_addr)
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.app.grpc_addr))
            .unwrap()
            .connect()
            .await
            .expect("gRPC connects")
    }

    /// A client that authenticates with `key` (or sends no key at all).
    pub async fn client_with_key(&self, key: Option<&str>) -> Client {
        let value = key.map(|k| format!("Bearer {k}").parse().unwrap());
        MonitoringServiceClient::with_interceptor(self.channel().await, BearerAuth(value))
    }

    pub async fn client(&self, tenant: (&str, &str)) -> Client {
        self.client_with_key(Some(tenant.1)).await
    }

    pub async fn requirements_client(&self, tenant: (&str, &str)) -> RequirementsClient {
        let value = format!("Bearer {}", tenant.1).parse().unwrap();
        RequirementsServiceClient::with_interceptor(self.channel().await, BearerAuth(Some(value)))
    }

    pub async fn stop(self) {
        self.app.shutdown().await;
    }
}

/// Poll `check` until it yields `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Read events from a stream until `n` arrived, failing after `deadline`.
pub async fn take_events(
    stream: &mut tonic::Streaming<v1::Event>,
    n: usize,
    deadline: Duration,
) -> Vec<v1::Event> {
    let mut out = Vec::with_capacity(n);
    let result = tokio::time::timeout(deadline, async {
        while out.len() < n {
            match stream.message().await {
                Ok(Some(event)) => out.push(event),
                Ok(None) => panic!("stream ended after {} of {n} events", out.len()),
                Err(status) => panic!("stream failed after {} of {n} events: {status}", out.len()),
            }
        }
    })
    .await;
    if result.is_err() {
        panic!(
            "timed out after {deadline:?} with {} of {n} events: {out:?}",
            out.len()
        );
    }
    out
}

/// The standard gRPC health-check client, to test what load balancers see.
pub mod health {
    pub use tonic_health::pb::HealthCheckRequest;
    pub use tonic_health::pb::health_client::HealthClient;
}
