//! Wiring: database, providers, engine, inbox worker, gRPC server and webhook listener in one
//! process, with graceful shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use coverwatch_core::VendorPlugin;
use coverwatch_core::backoff::Backoff;
use coverwatch_engine::{
    Engine, EngineConfig, ProviderRegistry, RetentionConfig, SweepConfig, WorkerConfig,
};
use coverwatch_proto::detail::DetailCodecs;
use coverwatch_proto::v1::admin_service_server::AdminServiceServer;
use coverwatch_proto::v1::monitoring_service_server::MonitoringServiceServer;
use coverwatch_proto::v1::requirements_service_server::RequirementsServiceServer;
#[cfg(feature = "sandbox")]
use coverwatch_sandbox::SandboxHandle;
use coverwatch_store::{ConnectOptions, Keyring, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::admin::{AdminApi, AdminKeys};
use crate::auth::{ApiKeys, DevKey};
use crate::config::Config;
use crate::grpc::{CallLimitsLayer, MonitoringApi};
use crate::http::{ListenerLimits, RefusalCounts, Refusals, Webhooks};
use crate::prometheus::Telemetry;
use crate::requirements::RequirementsApi;
use crate::supervisor::{RESTART_BACKOFF, Supervisor, TaskHealth};
use crate::telemetry::GrpcTraceLayer;

/// How long a client may take to complete a TLS handshake with the gRPC listener.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the caller of [`start`] may replace, for tests.
#[derive(Default)]
pub struct Overrides {
    /// Providers to use instead of those built from configuration (no sandbox is started).
    pub providers: Option<ProviderRegistry>,
    /// The vendor plug-ins built from configuration; default [`crate::providers::vendors`].
    /// Tests add a vendor here.
    pub plugins: Option<Vec<Arc<dyn VendorPlugin>>>,
    /// Inbox worker tuning (faster polls and retries in tests).
    pub worker: Option<WorkerConfig>,
    /// How often idle event streams re-read the log (tests lengthen it to prove that
    /// notifications, not polling, carry events between replicas).
    pub stream_poll: Option<Duration>,
    /// The stale-link and requirement sweep (tests shorten its interval and windows).
    pub sweep: Option<SweepConfig>,
}

/// A running coverwatch.
pub struct App {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The operator listener (`/metrics`, status page), when `metrics_addr` is configured.
    pub metrics_addr: Option<SocketAddr>,
    pub dev_key: DevKey,
    /// The embedded vendor simulators, when a vendor has no settings of its own.
    #[cfg(feature = "sandbox")]
    pub sandbox: Option<SandboxHandle>,
    pub engine: Engine,
    webhook_refusals: Arc<Refusals>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    supervisor: Supervisor,
    grace: Duration,
}

pub(crate) fn keyring(config: &Config) -> anyhow::Result<Keyring> {
    if !config.encryption_keys.is_empty() {
        let pairs: Vec<(String, String)> = config
            .encryption_keys
            .iter()
            .map(|k| (k.id.clone(), k.key.clone()))
            .collect();
        return Ok(Keyring::from_base64(&pairs)?);
    }
    let path = &config.encryption_key_file;
    let key = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keyring::generate_key_base64();
            write_private(path, &key)
                .with_context(|| format!("cannot write encryption key file {}", path.display()))?;
            tracing::warn!(
                path = %path.display(),
                "no encryption_keys configured: generated a development key file; configure encryption_keys in production"
            );
            key
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read encryption key file {}", path.display()));
        }
    };
    Keyring::from_base64(&[("file".into(), key)])
        .with_context(|| format!("encryption key file {}", path.display()))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

pub async fn connect_store(config: &Config) -> anyhow::Result<Store> {
    let mut options = ConnectOptions::new(config.database_url.clone());
    options.max_connections = config.database_max_connections;
    let store = Store::connect(&options, keyring(config)?)
        .await
        .with_context(|| {
            format!(
                "cannot open database {}",
                coverwatch_store::redact_url(&config.database_url)
            )
        })?;
    store.migrate().await.context("database migration failed")?;
    Ok(store)
}

fn sweep_config(config: &Config) -> SweepConfig {
    let s = &config.sweep;
    SweepConfig {
        interval: Duration::from_secs(s.interval_seconds),
        reevaluate_every: Duration::from_secs(s.requirements_recheck_minutes * 60),
        // Keys were checked when the configuration was loaded.
        stale_after: s
            .stale_after_hours
            .iter()
            .filter_map(|(provider, hours)| {
                Some((provider.parse().ok()?, Duration::from_secs(hours * 3600)))
            })
            .collect(),
    }
}

fn worker_config(config: &Config) -> WorkerConfig {
    let w = &config.worker;
    WorkerConfig {
        concurrency: w.concurrency,
        batch: w.batch_size,
        batches_in_flight: w.batches_in_flight,
        max_attempts: w.max_attempts,
        lease: Duration::from_secs(w.lease_seconds),
        process_timeout: Duration::from_secs(w.process_timeout_seconds),
        backoff: Backoff::new(
            Duration::from_millis(w.retry_initial_ms),
            Duration::from_millis(w.retry_max_ms),
        ),
        ..WorkerConfig::default()
    }
}

/// Start everything and return once both listeners accept connections.
pub async fn start(config: Config, overrides: Overrides) -> anyhow::Result<App> {
    let store = connect_store(&config).await?;
    let (keys, dev_key) = ApiKeys::load(store.clone(), &config)
        .await
        .context("cannot record the configured tenants")?;

    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on grpc_addr {}", config.grpc_addr))?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on http_addr {}", config.http_addr))?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on metrics_addr {addr}"))?,
        ),
        None => None,
    };
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let public_base_url = match &config.public_base_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => config.default_public_base_url(http_addr),
    };
    // Built before anything is spawned, so that a bad certificate stops start-up cleanly.
    let grpc_tls = config
        .grpc
        .tls
        .as_ref()
        .map(|tls| crate::tls::grpc_config(tls, TLS_HANDSHAKE_TIMEOUT))
        .transpose()?;
    let http_tls = config
        .http
        .tls
        .as_ref()
        .map(crate::tls::http_acceptor)
        .transpose()?;

    let vendors = match overrides.providers {
        Some(registry) => crate::providers::Vendors {
            registry,
            secret_headers: Vec::new(),
            #[cfg(feature = "sandbox")]
            sandbox: None,
        },
        None => {
            let plugins = overrides.plugins.unwrap_or_else(crate::providers::vendors);
            crate::providers::from_config(&config, &plugins, &public_base_url).await?
        }
    };
    let mut engine_config = EngineConfig::new(public_base_url);
    engine_config.worker = overrides.worker.unwrap_or_else(|| worker_config(&config));
    engine_config.ingest = config.ingest.group_commit();
    engine_config.policy_cache_ttl = Duration::from_millis(config.grpc.policy_cache_ms);
    let days = |n: u32| Duration::from_secs(u64::from(n) * 86_400);
    engine_config.retention = RetentionConfig {
        processed_body_age: days(config.retention.processed_body_days),
        dead_body_age: days(config.retention.dead_body_days),
        unmatched_body_age: days(config.retention.unmatched_body_days),
        ..RetentionConfig::default()
    };
    engine_config.descoped_token_grace =
        Duration::from_secs(config.webhooks.descoped_token_grace_hours * 3_600);
    engine_config.webhook_token_cache_ttl = Duration::from_millis(config.webhooks.token_cache_ms);
    engine_config.secret_headers = vendors.secret_headers;
    if let Some(poll) = overrides.stream_poll {
        engine_config.stream_poll = poll;
    }
    engine_config.sweep = overrides.sweep.unwrap_or_else(|| sweep_config(&config));
    let engine = Engine::new(store, vendors.registry, engine_config);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let health = TaskHealth::new(health_reporter, health_service_names());
    health.publish().await;
    let supervisor = Supervisor::new(health.clone(), shutdown_rx.clone(), RESTART_BACKOFF);
    let worker_engine = engine.clone();
    tasks.push(supervisor.spawn("inbox worker", move |shutdown| {
        let engine = worker_engine.clone();
        async move { engine.run_inbox_worker(shutdown).await }
    }));
    // Other replicas' commits reach us only through PostgreSQL notifications. On SQLite every
    // writer is this process: there is nothing to listen to, and the listener returns at once.
    if config.database_url.starts_with("postgres") {
        let listener_engine = engine.clone();
        tasks.push(supervisor.spawn("event listener", move |shutdown| {
            let engine = listener_engine.clone();
            async move { engine.run_event_listener(shutdown).await }
        }));
    }
    // Tenant and key changes made on other replicas, likewise (see `auth`).
    if config.database_url.starts_with("postgres") {
        let listener_keys = keys.clone();
        tasks.push(supervisor.spawn("tenant change listener", move |shutdown| {
            let keys = listener_keys.clone();
            async move { keys.run_change_listener(shutdown).await }
        }));
    }
    let retention_engine = engine.clone();
    tasks.push(supervisor.spawn("retention", move |shutdown| {
        let engine = retention_engine.clone();
        async move { engine.run_retention(shutdown).await }
    }));
    let sweep_engine = engine.clone();
    tasks.push(supervisor.spawn("sweep", move |shutdown| {
        let engine = sweep_engine.clone();
        async move { engine.run_sweep(shutdown).await }
    }));
    let (health_engine, watched) = (engine.clone(), health.clone());
    tasks.push(supervisor.spawn("health watcher", move |shutdown| {
        watch_health(health_engine.clone(), watched.clone(), shutdown)
    }));

    // Both reflection versions: many tools (Python's grpcio-reflection, older grpcurl, grpcui
    // and Postman builds) speak only v1alpha and get UNIMPLEMENTED from a v1-only server.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(coverwatch_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .context("cannot build gRPC reflection v1")?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .context("cannot build gRPC reflection v1alpha")?;
    let admin_keys = AdminKeys::from_config(&config, keys.clone(), &dev_key);
    let limits = &config.grpc;
    let (decode_limit, encode_limit) = (
        limits.max_decoding_message_bytes,
        limits.max_encoding_message_bytes,
    );
    let admin = AdminServiceServer::new(AdminApi::new(engine.clone(), admin_keys))
        .max_decoding_message_size(decode_limit)
        .max_encoding_message_size(encode_limit);
    // One set of codecs for both edges: event detail and vendor verdicts.
    let codecs = DetailCodecs::new(crate::providers::detail_codecs());
    let requirements = RequirementsServiceServer::new(RequirementsApi::new(
        engine.clone(),
        keys.clone(),
        codecs.clone(),
    ))
    .max_decoding_message_size(decode_limit)
    .max_encoding_message_size(encode_limit);
    let monitoring = MonitoringApi::new(
        engine.clone(),
        keys,
        shutdown_rx.clone(),
        limits.max_watch_streams_per_tenant as usize,
        codecs,
    );
    let telemetry = Telemetry::new(engine.clone(), monitoring.open_streams());
    let api = MonitoringServiceServer::new(monitoring)
        .max_decoding_message_size(decode_limit)
        .max_encoding_message_size(encode_limit);
    let mut grpc_server =
        tonic::transport::Server::builder().max_concurrent_streams(limits.max_concurrent_streams);
    if let Some(tls) = grpc_tls {
        grpc_server = grpc_server.tls_config(tls).context("cannot use grpc.tls")?;
    }
    // Outermost, so that the answers the limits make up carry a request id too.
    let mut grpc_server = grpc_server
        .layer(GrpcTraceLayer)
        .layer(CallLimitsLayer::new(
            config.grpc_db_slots(),
            Duration::from_millis(limits.db_queue_timeout_ms),
            Duration::from_secs(limits.request_timeout_seconds),
        ));
    // Without TCP_NODELAY, mid-sized answers (several HTTP/2 frames) wait for the client's
    // delayed ACK: a 40 ms floor on every such call.
    let grpc_incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let mut grpc_shutdown = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let result = grpc_server
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .add_service(requirements)
            .add_service(admin)
            .serve_with_incoming_shutdown(grpc_incoming, async move {
                let _ = grpc_shutdown.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    }));

    let webhook_refusals = Arc::new(Refusals::default());
    let router = crate::http::router(
        engine.clone(),
        health.clone(),
        Webhooks {
            body_read_timeout: Duration::from_secs(config.http.body_read_timeout_seconds),
            refusals: webhook_refusals.clone(),
            telemetry: telemetry.clone(),
        },
        metrics_listener.is_none(),
    );
    let http_limits = ListenerLimits {
        header_read_timeout: Duration::from_secs(config.http.header_read_timeout_seconds),
        max_connections: config.http.max_connections as usize,
        tls: http_tls,
    };
    tasks.push(tokio::spawn(crate::http::serve(
        http_listener,
        router,
        http_limits,
        shutdown_rx.clone(),
    )));

    let metrics_addr = match metrics_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let router = crate::status::router(telemetry);
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                let result = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            }));
            Some(addr)
        }
        None => None,
    };

    tracing::info!(%grpc_addr, %http_addr, ?metrics_addr, "coverwatch is serving");
    Ok(App {
        grpc_addr,
        http_addr,
        metrics_addr,
        dev_key,
        #[cfg(feature = "sandbox")]
        sandbox: vendors.sandbox,
        engine,
        webhook_refusals,
        shutdown,
        tasks,
        supervisor,
        grace: Duration::from_secs(config.shutdown_grace_seconds),
    })
}

/// Every service we host, and the server as a whole (the empty name), share one status: each
/// needs the database and the background tasks that work off what it accepts.
fn health_service_names() -> Vec<&'static str> {
    use tonic::server::NamedService;
    vec![
        "",
        MonitoringServiceServer::<MonitoringApi>::NAME,
        RequirementsServiceServer::<RequirementsApi>::NAME,
        AdminServiceServer::<AdminApi>::NAME,
    ]
}

/// Report NOT_SERVING while the database is unreachable, so load balancers and clients that
/// watch health stop sending work we cannot store.
async fn watch_health(engine: Engine, health: TaskHealth, mut shutdown: watch::Receiver<bool>) {
    let mut serving = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let ok = engine.store().ping().await.is_ok();
        if ok != serving {
            serving = ok;
            if ok {
                tracing::info!("database reachable again: serving");
            } else {
                tracing::warn!("database unreachable: not serving");
            }
        }
        health.set_database_reachable(ok).await;
    }
}

impl App {
    /// Unauthenticated webhook deliveries refused so far, and the log lines that reported them.
    pub fn webhook_refusals(&self) -> RefusalCounts {
        self.webhook_refusals.counts()
    }

    /// Run one more required task under the same supervision as the built-in ones: restarted
    /// when it stops, and the service reported not ready while it is down. The task is given
    /// the shutdown signal and must return once it turns true.
    pub fn supervise<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnMut(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.push(self.supervisor.spawn(name, task));
    }

    /// Stop accepting, let in-flight requests and the current inbox batch finish, then return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(self.grace, all).await.is_err() {
            tracing::warn!("graceful shutdown timed out; stopping anyway");
        }
        #[cfg(feature = "sandbox")]
        if let Some(sandbox) = self.sandbox {
            sandbox.shutdown().await;
        }
        self.engine.store().clone().close().await;
    }
}
