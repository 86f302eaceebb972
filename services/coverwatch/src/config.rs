//! One typed configuration: `coverwatch.toml` when present, then `COVERWATCH_*` environment
//! variables (nested keys with `__`, e.g. `COVERWATCH_AXLE__CLIENT_ID`). Validated at start-up
//! with a message that names the bad key and value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub const DEFAULT_DATABASE_URL: &str = "sqlite://coverwatch.db?mode=rwc";

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
}

impl ConfigError {
    fn invalid(
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
    /// Keys sealing vendor secrets at rest, newest first; the first seals, all open.
    pub encryption_keys: Vec<EncryptionKeyConfig>,
    /// Where a development key is kept when `encryption_keys` is empty.
    pub encryption_key_file: PathBuf,
    /// The embedded vendor simulators' listener, used when a vendor has no credentials.
    pub sandbox_addr: SocketAddr,
    pub worker: WorkerSettings,
    /// Stale-link reports and periodic requirement checks.
    pub sweep: SweepSettings,
    /// Axle credentials; absent: the embedded Axle simulator.
    pub axle: Option<AxleSettings>,
    /// Canopy Connect credentials; absent: the embedded Canopy simulator.
    pub canopy: Option<CanopySettings>,
    /// ISO-8601 interval of Canopy monitorings (at least 30 days).
    pub canopy_monitoring_interval: String,
    /// `accept` (default) or `reject`: what becomes of a Canopy delivery whose signature is
    /// genuine but whose timestamp is outside the tolerance (a retry that kept its first `t`).
    pub canopy_stale_signatures: String,
    pub log_format: LogFormat,
    /// How long graceful shutdown waits for in-flight work.
    pub shutdown_grace_seconds: u64,
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
pub struct AxleSettings {
    /// `https://api.axle.insure` or `https://sandbox.axle.insure`.
    pub base_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// For platforms acting for a destination client.
    pub destination_client_id: Option<String>,
    /// A header Axle was asked to add to every webhook, checked in constant time.
    pub webhook_header_name: Option<String>,
    pub webhook_header_value: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CanopySettings {
    /// `https://app.usecanopy.com/api/v1.0.0`.
    pub base_url: String,
    /// `https://app.usecanopy.com` (widgets are `{widget_base_url}/c/{public_alias}`).
    pub widget_base_url: String,
    pub team_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub public_alias: String,
    /// The team webhooks' signing secrets; several while one is being rotated.
    pub signing_secrets: Vec<String>,
    #[serde(default = "default_signature_tolerance")]
    pub signature_tolerance_seconds: u64,
    /// Skips the widget's consent screen when consent was collected by the caller.
    pub consent_token: Option<String>,
}

fn default_signature_tolerance() -> u64 {
    300
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub lease_seconds: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_attempts: 8,
            lease_seconds: 60,
            retry_initial_ms: 1_000,
            retry_max_ms: 300_000,
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
    /// Raw bodies of deliveries processed this many days ago are dropped (the rows stay);
    /// dead-lettered, unmatched and pending deliveries keep theirs.
    pub processed_body_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            processed_body_days: 30,
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
            public_base_url: None,
            tenants: Vec::new(),
            dev_api_key: None,
            admin_api_key_sha256: Vec::new(),
            retention: RetentionSettings::default(),
            encryption_keys: Vec::new(),
            encryption_key_file: PathBuf::from("coverwatch.key"),
            sandbox_addr: "127.0.0.1:8090".parse().expect("valid"),
            worker: WorkerSettings::default(),
            sweep: SweepSettings::default(),
            axle: None,
            canopy: None,
            canopy_monitoring_interval: "P1M".into(),
            canopy_stale_signatures: "accept".into(),
            log_format: LogFormat::Text,
            shutdown_grace_seconds: 20,
        }
    }
}

impl Config {
    /// Defaults, then `path` (when it exists), then `COVERWATCH_*` variables.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let figment = Self::figment(path);
        figment
            .extract::<Config>()
            .map_err(|e| describe(&figment, e))
            .and_then(|config| config.validated())
    }

    fn figment(path: &Path) -> Figment {
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .merge(Env::prefixed("COVERWATCH_").split("__"))
    }

    pub fn public_base_url(&self) -> String {
        self.public_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_addr))
            .trim_end_matches('/')
            .to_owned()
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
        if self.retention.processed_body_days == 0 {
            return Err(ConfigError::invalid(
                "retention.processed_body_days",
                "0",
                "must be at least 1",
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
        crate::providers::validate(&self)?;
        let sweep = &self.sweep;
        if sweep.interval_seconds == 0 {
            return Err(ConfigError::invalid(
                "sweep.interval_seconds",
                "0",
                "must be at least 1",
            ));
        }
        if sweep.requirements_recheck_minutes == 0 {
            return Err(ConfigError::invalid(
                "sweep.requirements_recheck_minutes",
                "0",
                "must be at least 1",
            ));
        }
        for (provider, hours) in &sweep.stale_after_hours {
            let key = format!("sweep.stale_after_hours.{provider}");
            if provider.parse::<coverwatch_core::ProviderKind>().is_err() {
                return Err(ConfigError::invalid(
                    key,
                    provider,
                    "is not a provider (expected axle or canopy)",
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
        if w.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "worker.max_attempts",
                "0",
                "must be at least 1",
            ));
        }
        if w.lease_seconds < 5 {
            return Err(ConfigError::invalid(
                "worker.lease_seconds",
                w.lease_seconds.to_string(),
                "must be at least 5",
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
    fn variables_override_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "coverwatch.toml",
                "grpc_addr = \"127.0.0.1:6000\"\nhttp_addr = \"127.0.0.1:6001\"\n[worker]\nconcurrency = 2\n",
            )?;
            jail.set_env("COVERWATCH_HTTP_ADDR", "0.0.0.0:7000");
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

        let err = with_env(&[("COVERWATCH_GRPC_PORT", "1")], || {
            Config::load(Path::new("absent.toml"))
                .unwrap_err()
                .to_string()
        });
        assert!(err.contains("grpc_port"), "an unknown key is named: {err}");

        let err = with_env(&[("COVERWATCH_CANOPY_MONITORING_INTERVAL", "P7D")], || {
            Config::load(Path::new("absent.toml"))
                .unwrap_err()
                .to_string()
        });
        assert!(
            err.contains("`canopy_monitoring_interval`")
                && err.contains("P7D")
                && err.contains("30 days"),
            "{err}"
        );

        let err = with_env(
            &[
                ("COVERWATCH_AXLE__BASE_URL", "ftp://axle"),
                ("COVERWATCH_AXLE__CLIENT_ID", "cli_1"),
                ("COVERWATCH_AXLE__CLIENT_SECRET", "s3cret"),
            ],
            || {
                Config::load(Path::new("absent.toml"))
                    .unwrap_err()
                    .to_string()
            },
        );
        assert!(
            err.contains("axle") && err.contains("base_url") && !err.contains("s3cret"),
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
}
