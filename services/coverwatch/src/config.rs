//! One typed configuration: `coverwatch.toml` when present, then `COVERWATCH_*` environment
//! variables (nested keys with `__`, e.g. `COVERWATCH_VENDORS__AXLE__CLIENT_ID`). Validated at
//! start-up with a message that names the bad key and value; each `[vendors.<id>]` section by
//! that vendor's own crate.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use coverwatch_core::SettingsError;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://coverwatch.db?mode=rwc";

// Upper bounds far past any sensible setting. The service adds these durations to the current
// time, so a value past them would be accepted here and overflow later, in a worker.
/// A claimed delivery stays with its worker at most a day.
pub const MAX_LEASE_SECONDS: u64 = 86_400;
/// Retries are spaced at most a day apart.
pub const MAX_RETRY_MS: u64 = 86_400_000;
/// Links with a requirement set are checked again at least once a year.
pub const MAX_RECHECK_MINUTES: u64 = 365 * 24 * 60;
/// Deliveries claimed and committed together; one transaction holds the cursor-order lock for
/// all of them, so past some size a batch only makes every stream wait longer.
pub const MAX_BATCH_SIZE: u64 = 1000;
/// Most `worker.batches_in_flight`: each holds a pooled connection while its batch commits.
pub const MAX_BATCHES_IN_FLIGHT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration key `{key}` = {value:?}: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    /// A vendor's settings, refused by the vendor's own crate; the path starts at `vendors.`.
    #[error("configuration key {0}")]
    Vendor(SettingsError),
    /// A key an older version read, refused rather than silently ignored.
    #[error("configuration key `{key}` is no longer read: {instead}")]
    Moved {
        key: &'static str,
        instead: &'static str,
    },
}

/// Keys that moved into the vendors' own sections, and what to set instead.
const MOVED_KEYS: &[(&str, &str)] = &[
    (
        "axle",
        "the Axle settings are now `[vendors.axle]` (variables COVERWATCH_VENDORS__AXLE__*), with the same keys",
    ),
    (
        "canopy",
        "the Canopy settings are now `[vendors.canopy]` (variables COVERWATCH_VENDORS__CANOPY__*), with the same keys except `signature_tolerance_seconds`, now `signature_tolerance` as a duration (\"300s\")",
    ),
    (
        "canopy_monitoring_interval",
        "set `vendors.canopy.monitoring_interval` (COVERWATCH_VENDORS__CANOPY__MONITORING_INTERVAL) instead",
    ),
    (
        "canopy_stale_signatures",
        "set `vendors.canopy.stale_signatures` (COVERWATCH_VENDORS__CANOPY__STALE_SIGNATURES) instead",
    ),
];

impl ConfigError {
    pub(crate) fn invalid(
        key: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `sqlite://path?mode=rwc` or `postgres://user@host/db`.
    pub database_url: String,
    /// Largest pool of database connections.
    pub database_max_connections: u32,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Where `/metrics` and the status page `/` are served. Unset: on `http_addr` (which
    /// faces vendors); set: only here, and no longer on `http_addr`.
    pub metrics_addr: Option<SocketAddr>,
    /// How vendors reach the webhook listener; default `http://{http_addr}`.
    pub public_base_url: Option<String>,
    /// Calling services and the SHA-256 (hex) of each of their API keys. Empty: one
    /// development tenant `dev` whose key is `dev_api_key` or generated at start-up.
    pub tenants: Vec<TenantConfig>,
    /// The development tenant's API key when no tenants are configured.
    pub dev_api_key: Option<String>,
    /// Lowercase hex SHA-256 of each operator key for AdminService (`coverwatch hash-key`
    /// prints one). Admin keys are not tenant keys: one hash may not be both. Empty, with no
    /// tenants configured either (the development setup): the development key is also the
    /// admin key. Empty with tenants configured: AdminService accepts no one.
    pub admin_api_key_sha256: Vec<String>,
    /// What the retention job keeps.
    pub retention: RetentionSettings,
    /// How the webhook listener treats the URLs of descoped links.
    pub webhooks: WebhookSettings,
    /// How webhook deliveries are group-committed to the inbox.
    pub ingest: IngestSettings,
    /// Keys sealing vendor secrets at rest, newest first; the first seals, all open.
    pub encryption_keys: Vec<EncryptionKeyConfig>,
    /// Where a development key is kept when `encryption_keys` is empty.
    pub encryption_key_file: PathBuf,
    /// The embedded vendor simulators' listener (builds with the `sandbox` feature), used for a
    /// vendor without settings of its own.
    pub sandbox_addr: SocketAddr,
    pub worker: WorkerSettings,
    /// Stale-link reports and periodic requirement checks.
    pub sweep: SweepSettings,
    /// Each vendor's settings, by vendor id (`[vendors.axle]`, `[vendors.canopy]`), decoded and
    /// checked by that vendor's own crate (see `crate::providers::vendors`).
    #[serde(deserialize_with = "vendor_sections")]
    pub vendors: BTreeMap<String, serde_json::Value>,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector traces are exported to (`http://…:4317`); absent: no tracing.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub otlp_service_name: String,
    /// How long graceful shutdown waits for in-flight work.
    pub shutdown_grace_seconds: u64,
    /// Limits and TLS of the gRPC API.
    pub grpc: GrpcSettings,
    /// Limits and TLS of the webhook listener.
    pub http: HttpSettings,
    /// Lets `public_base_url` be plain `http://` on a host other than loopback (development
    /// only: vendors would send deliveries, and the path tokens in them, in clear text).
    pub allow_insecure_public_url: bool,
}

/// Vendor sections hold whatever each vendor's settings type accepts, so they are read as JSON
/// values, which only a self-describing format can give (TOML and the environment, through
/// figment, are). A format that cannot describe itself, such as the shape tracer of
/// `tests/deploy.rs`, is offered tables of strings instead; that test traces each vendor's own
/// settings type for the keys inside.
fn vendor_sections<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, serde_json::Value>, D::Error> {
    if deserializer.is_human_readable() {
        return BTreeMap::deserialize(deserializer);
    }
    let tables = BTreeMap::<String, BTreeMap<String, String>>::deserialize(deserializer)?;
    Ok(tables
        .into_iter()
        .map(|(id, table)| (id, serde_json::json!(table)))
        .collect())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    /// Largest request message accepted; larger ones are refused with OUT_OF_RANGE unread.
    pub max_decoding_message_bytes: usize,
    /// Largest answer sent (a page of events with their payloads stays far below it).
    pub max_encoding_message_bytes: usize,
    /// HTTP/2 streams (calls) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Open `WatchEvents` streams per tenant; more are refused with RESOURCE_EXHAUSTED.
    pub max_watch_streams_per_tenant: u32,
    /// Longest a unary call may run (a shorter `grpc-timeout` from the caller wins).
    pub request_timeout_seconds: u64,
    /// Calls working on the database at once. Default: half of `database_max_connections`,
    /// so that webhook ingest and the workers keep the rest of the pool.
    pub max_concurrent_db_calls: Option<u32>,
    /// How long a call waits for one of those slots before it is answered UNAVAILABLE.
    pub db_queue_timeout_ms: u64,
    /// How long `GetPolicy` may answer from memory; 0 reads the database every time. Changes
    /// this replica commits or reads are seen at once; the bound is for changes another
    /// replica committed that this one has not read yet.
    pub policy_cache_ms: u64,
    /// Serve TLS (and optionally require client certificates); absent: plaintext.
    pub tls: Option<GrpcTlsSettings>,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            max_decoding_message_bytes: 4 * 1024 * 1024,
            max_encoding_message_bytes: 16 * 1024 * 1024,
            max_concurrent_streams: 128,
            max_watch_streams_per_tenant: 64,
            request_timeout_seconds: 30,
            max_concurrent_db_calls: None,
            db_queue_timeout_ms: 500,
            policy_cache_ms: 1_000,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GrpcTlsSettings {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM certificate(s) of the CA that signs callers' client certificates: when set, a caller
    /// without a certificate it signed cannot connect (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// A connection that has not sent a complete request head within this time is closed
    /// (slow or idle clients, between requests too); also bounds the TLS handshake.
    pub header_read_timeout_seconds: u64,
    /// A request whose body has not fully arrived within this time is answered `408`.
    pub body_read_timeout_seconds: u64,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: u32,
    /// Serve HTTPS; absent: plain HTTP.
    pub tls: Option<TlsFiles>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_read_timeout_seconds: 10,
            body_read_timeout_seconds: 30,
            max_connections: 2048,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    /// Lowercase hex SHA-256 of each API key (`coverwatch hash-key <key>` prints one).
    pub api_key_sha256: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EncryptionKeyConfig {
    pub id: String,
    /// 32 random bytes, base64.
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub concurrency: usize,
    /// Deliveries claimed at once and committed in one transaction.
    pub batch_size: u64,
    /// Batches worked on side by side (PostgreSQL; SQLite always has one).
    pub batches_in_flight: usize,
    pub max_attempts: u32,
    pub lease_seconds: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// How long processing one delivery (or one link in the sweep) may take before it is given
    /// up as a transient failure and retried.
    pub process_timeout_seconds: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            batch_size: 32,
            batches_in_flight: 2,
            max_attempts: 8,
            lease_seconds: 60,
            retry_initial_ms: 1_000,
            retry_max_ms: 300_000,
            process_timeout_seconds: 300,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SweepSettings {
    /// How often the sweep runs.
    pub interval_seconds: u64,
    /// Links with a requirement set are checked again at least this often (time alone moves
    /// some rules: an expiration date comes closer).
    pub requirements_recheck_minutes: u64,
    /// Per provider (`axle`, `canopy`): hours without fresh data before `link.stale`. A provider
    /// not named uses its own expectation (Axle about a day; Canopy its monitoring interval
    /// plus slack).
    pub stale_after_hours: std::collections::BTreeMap<String, u64>,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            interval_seconds: 60,
            requirements_recheck_minutes: 60,
            stale_after_hours: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Raw bodies of deliveries processed this many days ago are dropped (the rows stay).
    pub processed_body_days: u32,
    /// Raw bodies of dead-lettered deliveries this many days after they were given up on.
    pub dead_body_days: u32,
    /// Raw bodies of deliveries that matched no link this many days after they were settled.
    pub unmatched_body_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            processed_body_days: 30,
            dead_body_days: 90,
            unmatched_body_days: 90,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Hours a descoped link's webhook URL is still accepted (deliveries are stored and
    /// ignored); after them it is refused with 401 like an unknown one. 0: refused at once.
    pub descoped_token_grace_hours: u64,
    /// How long a per-link webhook token's link may be answered from memory (0: every
    /// delivery reads it). Exact for this replica's changes; another replica's change of the
    /// link is seen within this bound, never longer than the grace above.
    pub token_cache_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            descoped_token_grace_hours: 7 * 24,
            token_cache_ms: coverwatch_engine::DEFAULT_WEBHOOK_TOKEN_CACHE_TTL.as_millis() as u64,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Most deliveries written by one group commit.
    pub max_batch: usize,
    /// Microseconds the writer waits for more deliveries after the first of a batch; 0: it
    /// takes only what queued while the previous commit was in flight.
    pub max_wait_us: u64,
    /// Deliveries that may wait to be written; one more is answered 503 with Retry-After.
    pub queue_capacity: usize,
    /// Group commits in flight at once on PostgreSQL (SQLite always has one: one write lock).
    pub writers: usize,
}

/// Longest `ingest.max_wait_us`: every acknowledgement waits up to this long.
const MAX_INGEST_WAIT_US: u64 = 100_000;
const MAX_INGEST_QUEUE: usize = 1_000_000;
/// Most `ingest.writers`: each holds a pooled connection while it commits.
const MAX_INGEST_WRITERS: usize = 16;

impl Default for IngestSettings {
    fn default() -> Self {
        let defaults = coverwatch_store::GroupCommitConfig::default();
        Self {
            max_batch: defaults.max_batch,
            max_wait_us: defaults.max_wait.as_micros() as u64,
            queue_capacity: defaults.queue_capacity,
            writers: defaults.writers,
        }
    }
}

impl IngestSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        let max_batch = coverwatch_store::MAX_INGEST_BATCH;
        if !(1..=max_batch).contains(&self.max_batch) {
            return Err(ConfigError::invalid(
                "ingest.max_batch",
                self.max_batch.to_string(),
                format!("must be 1 to {max_batch}"),
            ));
        }
        if self.max_wait_us > MAX_INGEST_WAIT_US {
            return Err(ConfigError::invalid(
                "ingest.max_wait_us",
                self.max_wait_us.to_string(),
                format!("must be at most {MAX_INGEST_WAIT_US} (100 ms)"),
            ));
        }
        if !(1..=MAX_INGEST_QUEUE).contains(&self.queue_capacity) {
            return Err(ConfigError::invalid(
                "ingest.queue_capacity",
                self.queue_capacity.to_string(),
                format!("must be 1 to {MAX_INGEST_QUEUE}"),
            ));
        }
        if !(1..=MAX_INGEST_WRITERS).contains(&self.writers) {
            return Err(ConfigError::invalid(
                "ingest.writers",
                self.writers.to_string(),
                format!("must be 1 to {MAX_INGEST_WRITERS}"),
            ));
        }
        Ok(())
    }

    pub fn group_commit(&self) -> coverwatch_store::GroupCommitConfig {
        coverwatch_store::GroupCommitConfig {
            max_batch: self.max_batch,
            max_wait: std::time::Duration::from_micros(self.max_wait_us),
            queue_capacity: self.queue_capacity,
            writers: self.writers,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// figment names the key but not always the value it refused; say both, and where it came from.
fn describe(figment: &Figment, err: figment::Error) -> ConfigError {
    let messages: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_ascii_lowercase();
            let value = figment
                .find_value(&key)
                .ok()
                .or_else(|| figment.find_value(&e.path.join(".")).ok())
                .map(|v| match v.as_str() {
                    Some(text) => format!("{text:?}"),
                    None => serde_json::to_string(&v).unwrap_or_default(),
                });
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            match (key.is_empty(), value) {
                (true, _) => format!("{}{source}", e.kind),
                (false, Some(value)) => format!("key `{key}` = {value}{source}: {}", e.kind),
                (false, None) => format!("key `{key}`{source}: {}", e.kind),
            }
        })
        .collect();
    ConfigError::Load(messages.join("; "))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.into(),
            database_max_connections: 16,
            grpc_addr: "127.0.0.1:50051".parse().expect("valid"),
            http_addr: "127.0.0.1:8080".parse().expect("valid"),
            metrics_addr: None,
            public_base_url: None,
            tenants: Vec::new(),
            dev_api_key: None,
            admin_api_key_sha256: Vec::new(),
            retention: RetentionSettings::default(),
            webhooks: WebhookSettings::default(),
            ingest: IngestSettings::default(),
            encryption_keys: Vec::new(),
            encryption_key_file: PathBuf::from("coverwatch.key"),
            sandbox_addr: "127.0.0.1:8090".parse().expect("valid"),
            worker: WorkerSettings::default(),
            sweep: SweepSettings::default(),
            vendors: BTreeMap::new(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            otlp_service_name: "coverwatch".into(),
            shutdown_grace_seconds: 20,
            grpc: GrpcSettings::default(),
            http: HttpSettings::default(),
            allow_insecure_public_url: false,
        }
    }
}

impl Config {
    /// Defaults, then `path` (when it exists), then `COVERWATCH_*` variables.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        check_variables(&Self::variables())?;
        let figment = Self::figment(path);
        for (key, instead) in MOVED_KEYS {
            if figment.find_value(key).is_ok() {
                return Err(ConfigError::Moved { key, instead });
            }
        }
        figment
            .extract::<Config>()
            .map_err(|e| describe(&figment, e))
            .and_then(|config| config.validated())
    }

    fn variables() -> Env {
        // Read by the command line, not configuration keys: `--config` and the operator
        // CLI's connection settings, which an operator's shell may well export while it
        // also runs `coverwatch serve`.
        Env::prefixed("COVERWATCH_")
            .ignore(&["config", "addr", "admin_key", "api_key"])
            .split("__")
    }

    fn figment(path: &Path) -> Figment {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .merge(Self::variables())
    }

    pub fn public_base_url(&self) -> String {
        self.public_base_url
            .clone()
            .unwrap_or_else(|| self.default_public_base_url(self.http_addr))
            .trim_end_matches('/')
            .to_owned()
    }

    /// Where vendors reach the webhook listener when `public_base_url` is not set: the bound
    /// address, over HTTPS when the listener serves TLS.
    pub fn default_public_base_url(&self, http_addr: SocketAddr) -> String {
        let scheme = if self.http.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{http_addr}")
    }

    /// gRPC calls allowed on the database at once.
    pub fn grpc_db_slots(&self) -> usize {
        let slots = self
            .grpc
            .max_concurrent_db_calls
            .unwrap_or(self.database_max_connections / 2)
            .max(1);
        slots as usize
    }

    /// The collector must be an absolute `http(s)://host[:port]` URL (OTLP/gRPC has no path),
    /// and the service name a short printable one.
    fn validate_tracing(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let reason = match url::Url::parse(endpoint) {
                Err(e) => Some(format!("not a URL: {e}")),
                Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                    Some("must be an http:// or https:// URL (OTLP over gRPC)".to_owned())
                }
                Ok(url) if url.host_str().is_none_or(str::is_empty) => {
                    Some("must name a host".to_owned())
                }
                Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                    Some("must not carry credentials".to_owned())
                }
                Ok(url) if !matches!(url.path(), "" | "/") || url.query().is_some() => Some(
                    "OTLP over gRPC takes no path or query: give scheme, host and port only"
                        .to_owned(),
                ),
                Ok(_) => None,
            };
            if let Some(reason) = reason {
                return Err(ConfigError::invalid("otlp_endpoint", endpoint, reason));
            }
        }
        let name = &self.otlp_service_name;
        if name.is_empty()
            || name.chars().count() > 128
            || !name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            return Err(ConfigError::invalid(
                "otlp_service_name",
                name,
                "must be 1 to 128 printable ASCII characters",
            ));
        }
        Ok(())
    }

    /// Check what types alone cannot.
    pub fn validated(self) -> Result<Self, ConfigError> {
        let url = self.database_url.as_str();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(ConfigError::invalid(
                "database_url",
                coverwatch_store::redact_url(url),
                "must start with sqlite:, postgres: or postgresql:",
            ));
        }
        if let Some(metrics) = self.metrics_addr
            && metrics.port() != 0
            && (metrics == self.http_addr || metrics == self.grpc_addr)
        {
            return Err(ConfigError::invalid(
                "metrics_addr",
                metrics.to_string(),
                "must differ from http_addr and grpc_addr (leave it unset to serve /metrics on http_addr)",
            ));
        }
        if self.database_max_connections == 0 {
            return Err(ConfigError::invalid(
                "database_max_connections",
                "0",
                "must be at least 1",
            ));
        }
        if let Some(base) = &self.public_base_url
            && !(base.starts_with("http://") || base.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "public_base_url",
                base,
                "must be an http(s) URL",
            ));
        }
        self.check_public_url_is_private_or_tls()?;
        self.validate_tracing()?;
        self.validate_limits()?;
        self.ingest.validate()?;
        let mut seen_tenants = std::collections::BTreeSet::new();
        let mut seen_keys = std::collections::BTreeSet::new();
        for (i, tenant) in self.tenants.iter().enumerate() {
            if let Err(e) = tenant.id.parse::<coverwatch_core::TenantId>() {
                return Err(ConfigError::invalid(
                    format!("tenants[{i}].id"),
                    &tenant.id,
                    e.to_string(),
                ));
            }
            if !seen_tenants.insert(tenant.id.clone()) {
                return Err(ConfigError::invalid(
                    format!("tenants[{i}].id"),
                    &tenant.id,
                    "appears twice",
                ));
            }
            if tenant.api_key_sha256.is_empty() {
                return Err(ConfigError::invalid(
                    format!("tenants[{i}].api_key_sha256"),
                    "[]",
                    "needs at least one key hash",
                ));
            }
            for (j, hash) in tenant.api_key_sha256.iter().enumerate() {
                let key = format!("tenants[{i}].api_key_sha256[{j}]");
                check_key_hash(&key, hash)?;
                if !seen_keys.insert(hash.clone()) {
                    return Err(ConfigError::invalid(
                        key,
                        hash,
                        "the same key hash is configured twice",
                    ));
                }
            }
        }
        let mut seen_admin_keys = std::collections::BTreeSet::new();
        for (i, hash) in self.admin_api_key_sha256.iter().enumerate() {
            let key = format!("admin_api_key_sha256[{i}]");
            check_key_hash(&key, hash)?;
            if seen_keys.contains(hash) {
                return Err(ConfigError::invalid(
                    key,
                    hash,
                    "is also a tenant's key hash; admin keys must be distinct from tenant keys",
                ));
            }
            if !seen_admin_keys.insert(hash.clone()) {
                return Err(ConfigError::invalid(
                    key,
                    hash,
                    "the same key hash is configured twice",
                ));
            }
        }
        for (key, days) in [
            (
                "retention.processed_body_days",
                self.retention.processed_body_days,
            ),
            ("retention.dead_body_days", self.retention.dead_body_days),
            (
                "retention.unmatched_body_days",
                self.retention.unmatched_body_days,
            ),
        ] {
            if days == 0 {
                return Err(ConfigError::invalid(key, "0", "must be at least 1"));
            }
        }
        if self.webhooks.descoped_token_grace_hours > 24 * 365 {
            return Err(ConfigError::invalid(
                "webhooks.descoped_token_grace_hours",
                self.webhooks.descoped_token_grace_hours.to_string(),
                "must be at most 8760 hours (a year)",
            ));
        }
        if self.webhooks.token_cache_ms > 60_000 {
            return Err(ConfigError::invalid(
                "webhooks.token_cache_ms",
                self.webhooks.token_cache_ms.to_string(),
                "must be at most 60000 ms",
            ));
        }
        if let Some(key) = &self.dev_api_key
            && key.len() < 16
        {
            return Err(ConfigError::invalid(
                "dev_api_key",
                "***",
                "must be at least 16 characters",
            ));
        }
        if !self.encryption_keys.is_empty() {
            let pairs: Vec<(String, String)> = self
                .encryption_keys
                .iter()
                .map(|k| (k.id.clone(), k.key.clone()))
                .collect();
            if let Err(e) = coverwatch_store::Keyring::from_base64(&pairs) {
                return Err(ConfigError::invalid(
                    "encryption_keys",
                    "***",
                    e.to_string(),
                ));
            }
        }
        crate::providers::check(&self.vendors, &crate::providers::vendors())?;
        let sweep = &self.sweep;
        if sweep.interval_seconds == 0 {
            return Err(ConfigError::invalid(
                "sweep.interval_seconds",
                "0",
                "must be at least 1",
            ));
        }
        if sweep.requirements_recheck_minutes == 0
            || sweep.requirements_recheck_minutes > MAX_RECHECK_MINUTES
        {
            return Err(ConfigError::invalid(
                "sweep.requirements_recheck_minutes",
                sweep.requirements_recheck_minutes.to_string(),
                format!("must be 1 to {MAX_RECHECK_MINUTES} minutes (a year)"),
            ));
        }
        // The vendors this build knows, from the one list of plug-ins, not a copy of it.
        let known: Vec<&str> = crate::providers::vendors()
            .iter()
            .map(|plugin| plugin.id())
            .collect();
        for (provider, hours) in &sweep.stale_after_hours {
            let key = format!("sweep.stale_after_hours.{provider}");
            if !known.contains(&provider.as_str()) {
                return Err(ConfigError::invalid(
                    key,
                    provider,
                    format!("is not a provider (expected one of: {})", known.join(", ")),
                ));
            }
            if *hours == 0 || *hours > 24 * 3650 {
                return Err(ConfigError::invalid(
                    key,
                    hours.to_string(),
                    "must be 1 to 87600 hours",
                ));
            }
        }
        let w = &self.worker;
        if w.concurrency == 0 {
            return Err(ConfigError::invalid(
                "worker.concurrency",
                "0",
                "must be at least 1",
            ));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&w.batch_size) {
            return Err(ConfigError::invalid(
                "worker.batch_size",
                w.batch_size.to_string(),
                format!("must be 1 to {MAX_BATCH_SIZE}"),
            ));
        }
        if !(1..=MAX_BATCHES_IN_FLIGHT).contains(&w.batches_in_flight) {
            return Err(ConfigError::invalid(
                "worker.batches_in_flight",
                w.batches_in_flight.to_string(),
                format!("must be 1 to {MAX_BATCHES_IN_FLIGHT}"),
            ));
        }
        if w.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "worker.max_attempts",
                "0",
                "must be at least 1",
            ));
        }
        if !(5..=MAX_LEASE_SECONDS).contains(&w.lease_seconds) {
            return Err(ConfigError::invalid(
                "worker.lease_seconds",
                w.lease_seconds.to_string(),
                format!("must be 5 to {MAX_LEASE_SECONDS} seconds (a day)"),
            ));
        }
        if w.retry_max_ms > MAX_RETRY_MS {
            return Err(ConfigError::invalid(
                "worker.retry_max_ms",
                w.retry_max_ms.to_string(),
                format!("must be at most {MAX_RETRY_MS} ms (a day)"),
            ));
        }
        if w.process_timeout_seconds == 0 {
            return Err(ConfigError::invalid(
                "worker.process_timeout_seconds",
                "0",
                "must be at least 1",
            ));
        }
        if w.retry_initial_ms == 0 || w.retry_initial_ms > w.retry_max_ms {
            return Err(ConfigError::invalid(
                "worker.retry_initial_ms",
                w.retry_initial_ms.to_string(),
                "must be at least 1 and at most worker.retry_max_ms",
            ));
        }
        Ok(self)
    }
}

impl Config {
    /// Vendors put our per-link webhook tokens and the deliveries' contents on the wire to this
    /// URL: anything but loopback must be HTTPS unless development explicitly allows otherwise.
    fn check_public_url_is_private_or_tls(&self) -> Result<(), ConfigError> {
        let base = self.public_base_url();
        let parsed = url::Url::parse(&base)
            .map_err(|e| ConfigError::invalid("public_base_url", &base, e.to_string()))?;
        if parsed.scheme() == "https" || self.allow_insecure_public_url {
            return Ok(());
        }
        let loopback = match parsed.host() {
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if loopback {
            return Ok(());
        }
        let reason = if self.public_base_url.is_some() {
            "must be https:// when vendors reach it over a network (set allow_insecure_public_url = true only for development)"
        } else {
            "is not set and the default (from http_addr) is plain http:// on a non-loopback address: set public_base_url to the https:// URL vendors use (or allow_insecure_public_url = true for development)"
        };
        Err(ConfigError::invalid("public_base_url", base, reason))
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let g = &self.grpc;
        let in_range = |key: &str, value: u64, min: u64, max: u64, unit: &str| {
            if value < min || value > max {
                Err(ConfigError::invalid(
                    key,
                    value.to_string(),
                    format!("must be {min} to {max}{unit}"),
                ))
            } else {
                Ok(())
            }
        };
        const MIB: u64 = 1024 * 1024;
        in_range(
            "grpc.max_decoding_message_bytes",
            g.max_decoding_message_bytes as u64,
            4096,
            256 * MIB,
            " bytes",
        )?;
        in_range(
            "grpc.max_encoding_message_bytes",
            g.max_encoding_message_bytes as u64,
            64 * 1024,
            1024 * MIB,
            " bytes",
        )?;
        in_range(
            "grpc.max_concurrent_streams",
            g.max_concurrent_streams.into(),
            1,
            100_000,
            "",
        )?;
        in_range(
            "grpc.max_watch_streams_per_tenant",
            g.max_watch_streams_per_tenant.into(),
            1,
            1_000_000,
            "",
        )?;
        in_range(
            "grpc.request_timeout_seconds",
            g.request_timeout_seconds,
            1,
            3600,
            " seconds",
        )?;
        in_range(
            "grpc.db_queue_timeout_ms",
            g.db_queue_timeout_ms,
            0,
            60_000,
            " ms",
        )?;
        in_range("grpc.policy_cache_ms", g.policy_cache_ms, 0, 60_000, " ms")?;
        if let Some(slots) = g.max_concurrent_db_calls
            && (slots == 0 || slots >= self.database_max_connections)
        {
            return Err(ConfigError::invalid(
                "grpc.max_concurrent_db_calls",
                slots.to_string(),
                format!(
                    "must be at least 1 and below database_max_connections ({}), so that webhook ingest keeps a share of the pool",
                    self.database_max_connections
                ),
            ));
        }
        let h = &self.http;
        in_range(
            "http.header_read_timeout_seconds",
            h.header_read_timeout_seconds,
            1,
            300,
            " seconds",
        )?;
        in_range(
            "http.body_read_timeout_seconds",
            h.body_read_timeout_seconds,
            1,
            600,
            " seconds",
        )?;
        in_range(
            "http.max_connections",
            h.max_connections.into(),
            1,
            1_000_000,
            "",
        )?;
        if let Some(tls) = &g.tls {
            crate::tls::check_identity("grpc.tls", &tls.cert_file, &tls.key_file)?;
            if let Some(ca) = &tls.client_ca_file {
                crate::tls::check_certificates("grpc.tls.client_ca_file", ca)?;
            }
        }
        if let Some(tls) = &h.tls {
            crate::tls::check_identity("http.tls", &tls.cert_file, &tls.key_file)?;
        }
        Ok(())
    }
}

/// figment 0.10 reads a quoted variable value with escapes by cutting it at a character count
/// used as a byte index, so a non-ASCII character before a `\` panics (or silently drops
/// characters). Such a value is refused with its variable named; `\uXXXX` escapes say the same
/// thing in ASCII.
fn check_variables(variables: &Env) -> Result<(), ConfigError> {
    for (key, value) in variables.iter() {
        if value.contains('"') && value.contains('\\') && !value.is_ascii() {
            return Err(ConfigError::invalid(
                format!("{key} (environment)"),
                "…",
                "a quoted value with `\\` escapes must be ASCII: write other characters as \\uXXXX",
            ));
        }
    }
    Ok(())
}

/// A configured key hash must be the SHA-256 of a key, never the key itself.
fn check_key_hash(key: &str, hash: &str) -> Result<(), ConfigError> {
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ConfigError::invalid(
            key,
            hash,
            "must be 64 lowercase hex characters (the SHA-256 of the key, not the key)",
        ));
    }
    Ok(())
}

#[cfg(test)]
// figment's test jail returns its own (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    /// Runs `f` with exactly `vars` set, isolated from the real environment and other tests.
    fn with_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in vars {
                jail.set_env(k, v);
            }
            out = Some(f());
            Ok(())
        });
        out.expect("the jail ran the closure")
    }

    #[test]
    fn defaults_need_no_file_and_no_variables() {
        let config = with_env(&[], || Config::load(Path::new("absent.toml")).unwrap());
        assert_eq!(config, Config::default());
        assert_eq!(config.public_base_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn the_command_lines_own_variables_are_not_configuration_keys() {
        let config = with_env(
            &[
                ("COVERWATCH_CONFIG", "absent.toml"),
                ("COVERWATCH_ADDR", "127.0.0.1:1"),
                ("COVERWATCH_ADMIN_KEY", "an-admin-key"),
                ("COVERWATCH_API_KEY", "a-tenant-key"),
            ],
            || Config::load(Path::new("absent.toml")).unwrap(),
        );
        assert_eq!(config, Config::default());
    }

    #[test]
    fn metrics_addr_may_not_share_a_listener() {
        let config = Config {
            metrics_addr: Some("127.0.0.1:8080".parse().unwrap()),
            ..Config::default()
        };
        let err = config.validated().unwrap_err().to_string();
        assert!(err.contains("metrics_addr"), "{err}");
        let config = Config {
            metrics_addr: Some("127.0.0.1:9100".parse().unwrap()),
            ..Config::default()
        };
        assert!(config.validated().is_ok());
    }

    #[test]
    fn variables_override_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "coverwatch.toml",
                "grpc_addr = \"127.0.0.1:6000\"\nhttp_addr = \"127.0.0.1:6001\"\n[worker]\nconcurrency = 2\n",
            )?;
            jail.set_env("COVERWATCH_HTTP_ADDR", "0.0.0.0:7000");
            jail.set_env("COVERWATCH_PUBLIC_BASE_URL", "https://hooks.example.com");
            jail.set_env("COVERWATCH_WORKER__MAX_ATTEMPTS", "3");
            let config = Config::load(Path::new("coverwatch.toml")).unwrap();
            assert_eq!(config.grpc_addr.port(), 6000);
            assert_eq!(config.http_addr.to_string(), "0.0.0.0:7000");
            assert_eq!(
                (config.worker.concurrency, config.worker.max_attempts),
                (2, 3)
            );
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = with_env(&[("COVERWATCH_GRPC_ADDR", "not-an-address")], || {
            Config::load(Path::new("absent.toml"))
                .unwrap_err()
                .to_string()
        });
        assert!(
            err.contains("grpc_addr") && err.contains("not-an-address"),
            "{err}"
        );

        let err = with_env(&[("COVERWATCH_DATABASE_URL", "mysql://x")], || {
            Config::load(Path::new("absent.toml"))
                .unwrap_err()
                .to_string()
        });
        assert!(
            err.contains("`database_url`") && err.contains("mysql://x"),
            "{err}"
        );

        let err = with_env(
            &[(
                "COVERWATCH_TENANTS",
                "[{id=\"acme\", api_key_sha256=[\"plain-key\"]}]",
            )],
            || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            },
        );
        assert!(err.contains("tenants[0].api_key_sha256[0]"), "{err}");

        let err = with_env(
            &[("COVERWATCH_WORKER__PROCESS_TIMEOUT_SECONDS", "0")],
            || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            },
        );
        assert!(
            err.contains("worker.process_timeout_seconds") && err.contains("at least 1"),
            "{err}"
        );

        let err = with_env(&[("COVERWATCH_WORKER__BATCH_SIZE", "0")], || {
            Config::load(Path::new("absent.toml"))
                .unwrap_err()
                .to_string()
        });
        assert!(
            err.contains("worker.batch_size") && err.contains("1 to 1000"),
            "{err}"
        );

        let err = with_env(&[("COVERWATCH_GRPC_PORT", "1")], || {
            Config::load(Path::new("absent.toml"))
                .unwrap_err()
                .to_string()
        });
        assert!(err.contains("grpc_port"), "an unknown key is named: {err}");

        let err = with_env(
            &[("COVERWATCH_VENDORS__CANOPY__MONITORING_INTERVAL", "P7D")],
            || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            },
        );
        assert!(
            err.contains("`vendors.canopy.monitoring_interval`")
                && err.contains("P7D")
                && err.contains("30 days"),
            "{err}"
        );

        let err = with_env(
            &[
                ("COVERWATCH_VENDORS__AXLE__BASE_URL", "ftp://axle"),
                ("COVERWATCH_VENDORS__AXLE__CLIENT_ID", "cli_1"),
                ("COVERWATCH_VENDORS__AXLE__CLIENT_SECRET", "s3cret"),
            ],
            || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            },
        );
        assert!(
            err.contains("`vendors.axle.base_url`") && !err.contains("s3cret"),
            "{err}"
        );
    }

    /// Found by `tests/fuzz_config.rs`: figment panicked on this variable ("byte index 2 is not
    /// a char boundary") before anything was logged.
    #[test]
    fn a_quoted_variable_with_unicode_before_an_escape_is_refused_not_a_panic() {
        let err = with_env(&[("COVERWATCH_DEV_API_KEY", "\"ລਭ\\\"\"")], || {
            Config::load(Path::new("absent.toml"))
                .unwrap_err()
                .to_string()
        });
        assert!(
            err.contains("`dev_api_key (environment)`") && err.contains("\\uXXXX"),
            "{err}"
        );
        // The same text in ASCII escapes is read, as is unicode without escapes.
        let config = with_env(
            &[(
                "COVERWATCH_DEV_API_KEY",
                "\"\\u0EA5\\u0A2D-long-enough-key\"",
            )],
            || Config::load(Path::new("absent.toml")).unwrap(),
        );
        assert_eq!(config.dev_api_key.as_deref(), Some("ລਭ-long-enough-key"));
        let config = with_env(
            &[("COVERWATCH_DEV_API_KEY", "ລਭ-long-enough-key")],
            || Config::load(Path::new("absent.toml")).unwrap(),
        );
        assert_eq!(config.dev_api_key.as_deref(), Some("ລਭ-long-enough-key"));
    }

    /// Found by `tests/fuzz_config.rs`: values the service later adds to the current time (or
    /// multiplies) overflowed there, in a worker, instead of being refused here.
    #[test]
    fn durations_past_their_bounds_are_refused_with_their_key() {
        for (variable, value, key) in [
            (
                "COVERWATCH_WORKER__LEASE_SECONDS",
                "10000000000000",
                "`worker.lease_seconds`",
            ),
            (
                "COVERWATCH_WORKER__RETRY_MAX_MS",
                "10000000000000000",
                "`worker.retry_max_ms`",
            ),
            (
                "COVERWATCH_SWEEP__REQUIREMENTS_RECHECK_MINUTES",
                "1000000000000000000",
                "`sweep.requirements_recheck_minutes`",
            ),
            (
                "COVERWATCH_VENDORS__CANOPY__MONITORING_INTERVAL",
                "P99999999999999999999D",
                "`vendors.canopy.monitoring_interval`",
            ),
            (
                "COVERWATCH_VENDORS__CANOPY__MONITORING_INTERVAL",
                "P18446744073709551615Y",
                "`vendors.canopy.monitoring_interval`",
            ),
        ] {
            let err = with_env(&[(variable, value)], || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            });
            assert!(err.contains(key), "{variable}={value}: {err}");
        }
        let config = with_env(
            &[
                ("COVERWATCH_WORKER__LEASE_SECONDS", "86400"),
                ("COVERWATCH_WORKER__RETRY_MAX_MS", "86400000"),
                ("COVERWATCH_SWEEP__REQUIREMENTS_RECHECK_MINUTES", "525600"),
                ("COVERWATCH_VENDORS__CANOPY__MONITORING_INTERVAL", "P10Y"),
            ],
            || Config::load(Path::new("absent.toml")).unwrap(),
        );
        assert_eq!(config.worker.lease_seconds, 86_400);
    }

    #[test]
    fn a_half_configured_axle_shared_header_is_refused_by_name() {
        let axle = [
            (
                "COVERWATCH_VENDORS__AXLE__BASE_URL",
                "https://api.axle.insure",
            ),
            ("COVERWATCH_VENDORS__AXLE__CLIENT_ID", "cli_1"),
            ("COVERWATCH_VENDORS__AXLE__CLIENT_SECRET", "s3cret"),
        ];
        let load = |extra: &[(&str, &str)]| {
            let vars: Vec<(&str, &str)> = axle.iter().chain(extra).copied().collect();
            with_env(&vars, || Config::load(Path::new("absent.toml")))
        };
        let err = load(&[(
            "COVERWATCH_VENDORS__AXLE__WEBHOOK_HEADER_NAME",
            "x-axle-secret",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("`vendors.axle.webhook_header_value`"), "{err}");
        let err = load(&[(
            "COVERWATCH_VENDORS__AXLE__WEBHOOK_HEADER_VALUE",
            "hush-hush-value",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`vendors.axle.webhook_header_name`") && !err.contains("hush-hush-value"),
            "the value is a secret and is not repeated: {err}"
        );
        let err = load(&[
            (
                "COVERWATCH_VENDORS__AXLE__WEBHOOK_HEADER_NAME",
                "x-axle-secret",
            ),
            ("COVERWATCH_VENDORS__AXLE__WEBHOOK_HEADER_VALUE", " "),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("`vendors.axle.webhook_header_value`"), "{err}");
        let config = load(&[
            (
                "COVERWATCH_VENDORS__AXLE__WEBHOOK_HEADER_NAME",
                "x-axle-secret",
            ),
            (
                "COVERWATCH_VENDORS__AXLE__WEBHOOK_HEADER_VALUE",
                "hush-hush-value",
            ),
        ])
        .unwrap();
        assert_eq!(
            config.vendors["axle"]["webhook_header_name"],
            "x-axle-secret"
        );
        assert!(load(&[]).is_ok(), "no shared header at all is fine");
    }

    /// Keys of earlier versions must not silently do nothing: each is refused with where it
    /// went.
    #[test]
    fn keys_that_moved_into_vendor_sections_are_refused_with_their_new_place() {
        for (variable, value, key, instead) in [
            (
                "COVERWATCH_CANOPY_MONITORING_INTERVAL",
                "P2M",
                "`canopy_monitoring_interval`",
                "`vendors.canopy.monitoring_interval`",
            ),
            (
                "COVERWATCH_CANOPY_STALE_SIGNATURES",
                "reject",
                "`canopy_stale_signatures`",
                "`vendors.canopy.stale_signatures`",
            ),
            (
                "COVERWATCH_AXLE__CLIENT_ID",
                "cli_1",
                "`axle`",
                "`[vendors.axle]`",
            ),
            (
                "COVERWATCH_CANOPY__TEAM_ID",
                "team",
                "`canopy`",
                "`[vendors.canopy]`",
            ),
        ] {
            let err = load_error(&[(variable, value)]);
            assert!(
                err.contains(key) && err.contains(instead) && err.contains("no longer read"),
                "{variable}: {err}"
            );
        }
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("old.toml", "[canopy]\nteam_id = \"team\"\n")?;
            let err = Config::load(Path::new("old.toml")).unwrap_err().to_string();
            assert!(err.contains("`[vendors.canopy]`"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_stale_window_for_a_vendor_this_build_does_not_know_is_refused() {
        let err = load_error(&[("COVERWATCH_SWEEP__STALE_AFTER_HOURS__ACME", "24")]);
        assert!(
            err.contains("sweep.stale_after_hours.acme")
                && err.contains("axle")
                && err.contains("canopy"),
            "{err}"
        );
    }

    #[test]
    fn a_section_for_a_vendor_this_build_does_not_know_is_refused() {
        let err = load_error(&[("COVERWATCH_VENDORS__ACME__BASE_URL", "https://acme.example")]);
        assert!(
            err.contains("`vendors.acme`") && err.contains("axle") && err.contains("canopy"),
            "{err}"
        );
    }

    #[test]
    fn retention_and_descoped_grace_from_the_environment() {
        let config = with_env(
            &[
                ("COVERWATCH_RETENTION__DEAD_BODY_DAYS", "14"),
                ("COVERWATCH_RETENTION__UNMATCHED_BODY_DAYS", "3"),
                ("COVERWATCH_WEBHOOKS__DESCOPED_TOKEN_GRACE_HOURS", "0"),
            ],
            || Config::load(Path::new("absent.toml")).unwrap(),
        );
        assert_eq!(
            (
                config.retention.dead_body_days,
                config.retention.unmatched_body_days
            ),
            (14, 3)
        );
        assert_eq!(config.webhooks.descoped_token_grace_hours, 0);
        let defaults = Config::default();
        assert_eq!(
            (
                defaults.retention.dead_body_days,
                defaults.retention.unmatched_body_days,
                defaults.webhooks.descoped_token_grace_hours
            ),
            (90, 90, 168)
        );
        for (var, key) in [
            (
                "COVERWATCH_RETENTION__DEAD_BODY_DAYS",
                "`retention.dead_body_days`",
            ),
            (
                "COVERWATCH_RETENTION__UNMATCHED_BODY_DAYS",
                "`retention.unmatched_body_days`",
            ),
        ] {
            let err = with_env(&[(var, "0")], || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            });
            assert!(err.contains(key), "{err}");
        }
        let err = with_env(
            &[("COVERWATCH_WEBHOOKS__DESCOPED_TOKEN_GRACE_HOURS", "9000")],
            || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            },
        );
        assert!(
            err.contains("`webhooks.descoped_token_grace_hours`"),
            "{err}"
        );
    }

    #[test]
    fn tenants_from_the_environment() {
        let hash = "a".repeat(64);
        let value = format!("[{{id=\"acme\", api_key_sha256=[\"{hash}\"]}}]");
        let config = with_env(&[("COVERWATCH_TENANTS", &value)], || {
            Config::load(Path::new("absent.toml")).unwrap()
        });
        assert_eq!(
            config.tenants,
            vec![TenantConfig {
                id: "acme".into(),
                api_key_sha256: vec![hash]
            }]
        );
    }

    #[test]
    fn admin_keys_and_retention_from_the_environment() {
        let hash = "b".repeat(64);
        let config = with_env(
            &[
                ("COVERWATCH_ADMIN_API_KEY_SHA256", &format!("[\"{hash}\"]")),
                ("COVERWATCH_RETENTION__PROCESSED_BODY_DAYS", "7"),
            ],
            || Config::load(Path::new("absent.toml")).unwrap(),
        );
        assert_eq!(config.admin_api_key_sha256, vec![hash]);
        assert_eq!(config.retention.processed_body_days, 7);
        assert_eq!(Config::default().retention.processed_body_days, 30);
    }

    #[test]
    fn bad_admin_keys_and_retention_are_named() {
        let err = with_env(
            &[("COVERWATCH_ADMIN_API_KEY_SHA256", "[\"plain-admin-key\"]")],
            || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            },
        );
        assert!(
            err.contains("`admin_api_key_sha256[0]`") && err.contains("64 lowercase hex"),
            "{err}"
        );

        let hash = "c".repeat(64);
        let err = with_env(
            &[
                (
                    "COVERWATCH_TENANTS",
                    &format!("[{{id=\"acme\", api_key_sha256=[\"{hash}\"]}}]"),
                ),
                ("COVERWATCH_ADMIN_API_KEY_SHA256", &format!("[\"{hash}\"]")),
            ],
            || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            },
        );
        assert!(
            err.contains("`admin_api_key_sha256[0]`") && err.contains("distinct"),
            "{err}"
        );

        let err = with_env(
            &[(
                "COVERWATCH_ADMIN_API_KEY_SHA256",
                &format!("[\"{hash}\", \"{hash}\"]"),
            )],
            || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            },
        );
        assert!(
            err.contains("`admin_api_key_sha256[1]`") && err.contains("twice"),
            "{err}"
        );

        let err = with_env(
            &[("COVERWATCH_RETENTION__PROCESSED_BODY_DAYS", "0")],
            || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            },
        );
        assert!(err.contains("`retention.processed_body_days`"), "{err}");
    }

    fn load_error(vars: &[(&str, &str)]) -> String {
        with_env(vars, || {
            Config::load(Path::new("absent.toml"))
                .unwrap_err()
                .to_string()
        })
    }

    #[test]
    fn the_public_url_must_be_https_off_loopback() {
        for ok in [
            "https://hooks.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            with_env(&[("COVERWATCH_PUBLIC_BASE_URL", ok)], || {
                Config::load(Path::new("absent.toml")).unwrap()
            });
        }
        let err = load_error(&[("COVERWATCH_PUBLIC_BASE_URL", "http://hooks.example.com")]);
        assert!(
            err.contains("`public_base_url`") && err.contains("https://"),
            "{err}"
        );
        // The default follows http_addr: a non-loopback bind needs a public URL.
        let err = load_error(&[("COVERWATCH_HTTP_ADDR", "0.0.0.0:8080")]);
        assert!(
            err.contains("`public_base_url`") && err.contains("http://0.0.0.0:8080"),
            "{err}"
        );
        let config = with_env(
            &[
                ("COVERWATCH_PUBLIC_BASE_URL", "http://hooks.example.com"),
                ("COVERWATCH_ALLOW_INSECURE_PUBLIC_URL", "true"),
            ],
            || Config::load(Path::new("absent.toml")).unwrap(),
        );
        assert_eq!(config.public_base_url(), "http://hooks.example.com");
    }

    #[test]
    fn limits_from_the_environment_and_their_bounds() {
        let config = with_env(
            &[
                ("COVERWATCH_GRPC__MAX_WATCH_STREAMS_PER_TENANT", "5"),
                ("COVERWATCH_GRPC__MAX_CONCURRENT_DB_CALLS", "3"),
                ("COVERWATCH_HTTP__HEADER_READ_TIMEOUT_SECONDS", "4"),
            ],
            || Config::load(Path::new("absent.toml")).unwrap(),
        );
        assert_eq!(config.grpc.max_watch_streams_per_tenant, 5);
        assert_eq!(config.grpc_db_slots(), 3);
        assert_eq!(config.http.header_read_timeout_seconds, 4);
        assert_eq!(
            Config::default().grpc_db_slots(),
            8,
            "half of the default pool of 16"
        );

        let err = load_error(&[("COVERWATCH_GRPC__MAX_CONCURRENT_DB_CALLS", "16")]);
        assert!(
            err.contains("`grpc.max_concurrent_db_calls`") && err.contains("below"),
            "{err}"
        );
        let err = load_error(&[("COVERWATCH_GRPC__MAX_DECODING_MESSAGE_BYTES", "10")]);
        assert!(err.contains("`grpc.max_decoding_message_bytes`"), "{err}");
        let err = load_error(&[("COVERWATCH_HTTP__MAX_CONNECTIONS", "0")]);
        assert!(err.contains("`http.max_connections`"), "{err}");
        let err = load_error(&[("COVERWATCH_HTTP__BODY_READ_TIMEOUT_SECONDS", "0")]);
        assert!(err.contains("`http.body_read_timeout_seconds`"), "{err}");
    }

    #[test]
    fn tls_files_are_checked_at_load() {
        let err = load_error(&[
            ("COVERWATCH_GRPC__TLS__CERT_FILE", "/nonexistent/server.pem"),
            ("COVERWATCH_GRPC__TLS__KEY_FILE", "/nonexistent/server.key"),
        ]);
        assert!(
            err.contains("`grpc.tls.cert_file`") && err.contains("/nonexistent/server.pem"),
            "{err}"
        );
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("cert.pem", "not a certificate")?;
            jail.create_file(
                "key.pem",
                "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
            )?;
            jail.set_env("COVERWATCH_HTTP__TLS__CERT_FILE", "cert.pem");
            jail.set_env("COVERWATCH_HTTP__TLS__KEY_FILE", "key.pem");
            let err = Config::load(Path::new("absent.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("`http.tls.cert_file`") && err.contains("no PEM certificate"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn tracing_keys_are_checked_on_load() {
        let ok = |endpoint: &str| {
            with_env(&[("COVERWATCH_OTLP_ENDPOINT", endpoint)], || {
                Config::load(Path::new("absent.toml")).map(|c| c.otlp_endpoint)
            })
        };
        assert_eq!(
            ok("http://otel-collector:4317").unwrap().as_deref(),
            Some("http://otel-collector:4317")
        );
        assert!(ok("https://collector.example.com").is_ok());
        for bad in [
            "otel-collector:4317",
            "grpc://collector:4317",
            "http://collector:4317/v1/traces",
            "http://user:secret@collector:4317",
            "http://collector:4317?x=1",
            "not a url",
        ] {
            let err = ok(bad).expect_err(bad).to_string();
            assert!(err.contains("`otlp_endpoint`"), "{bad}: {err}");
        }
        let err = with_env(&[("COVERWATCH_OTLP_SERVICE_NAME", "\"\"")], || {
            Config::load(Path::new("absent.toml"))
                .unwrap_err()
                .to_string()
        });
        assert!(err.contains("`otlp_service_name`"), "{err}");
        assert_eq!(Config::default().otlp_endpoint, None, "off by default");
    }
}
