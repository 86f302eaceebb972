//! How to reach Axle and how hard to try.

use std::time::Duration;

use coverwatch_core::SettingsError;
use coverwatch_core::backoff::Backoff;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Axle's production API.
pub const PRODUCTION_BASE_URL: &str = "https://api.axle.insure";
/// Axle's hosted sandbox API.
pub const SANDBOX_BASE_URL: &str = "https://sandbox.axle.insure";

#[derive(Debug, Clone)]
pub struct AxleConfig {
    /// API root without a trailing path (`https://api.axle.insure`, or the simulator's
    /// `{base}/axle`). Default: production.
    pub base_url: String,
    /// `x-client-id`.
    pub client_id: String,
    /// `x-client-secret`.
    pub client_secret: SecretString,
    /// `x-destination-client-id`, for platforms acting for a destination client.
    pub destination_client_id: Option<String>,
    /// TCP + TLS connect timeout. Default 5 s.
    pub connect_timeout: Duration,
    /// Whole-request timeout (connect, send, read the body). Default 20 s.
    pub request_timeout: Duration,
    /// Retries after the first attempt, for idempotent calls only. Default 3.
    pub max_retries: u32,
    /// Delay between retries when Axle gives no `Retry-After`. Default 250 ms, capped at 5 s.
    pub backoff: Backoff,
    /// The longest `Retry-After` waited for inside one call; a longer one ends the call as
    /// unavailable so that the caller retries later instead of holding a worker. Default 30 s.
    pub max_retry_after: Duration,
    /// A static header Axle was asked to add to every webhook ("custom webhook headers … for
    /// authentication"): name and value. When set, deliveries without it are refused.
    pub webhook_header: Option<(String, SecretString)>,
}

impl Default for AxleConfig {
    fn default() -> Self {
        Self {
            base_url: PRODUCTION_BASE_URL.to_owned(),
            client_id: String::new(),
            client_secret: SecretString::from(String::new()),
            destination_client_id: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            max_retries: 3,
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(5)),
            max_retry_after: Duration::from_secs(30),
            webhook_header: None,
        }
    }
}

/// A configuration value that cannot work; `field` is the name of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Axle configuration: `{field}` {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

impl AxleConfig {
    /// The defaults with a base URL and client credentials.
    pub fn new(
        base_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            ..Self::default()
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(&self.base_url)
            .map_err(|e| invalid("base_url", format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid("base_url", "must be an absolute http(s) URL"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("base_url", "must not have a query or fragment"));
        }
        if self.client_id.trim().is_empty() {
            return Err(invalid("client_id", "must not be empty"));
        }
        if !is_header_value(&self.client_id) {
            return Err(invalid("client_id", "must be printable ASCII"));
        }
        let secret = self.client_secret.expose_secret();
        if secret.trim().is_empty() {
            return Err(invalid("client_secret", "must not be empty"));
        }
        if !is_header_value(secret) {
            return Err(invalid("client_secret", "must be printable ASCII"));
        }
        if let Some(dest) = &self.destination_client_id
            && (dest.trim().is_empty() || !is_header_value(dest))
        {
            return Err(invalid(
                "destination_client_id",
                "must be non-empty printable ASCII when set",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout", "must be greater than zero"));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid("request_timeout", "must be greater than zero"));
        }
        if self.backoff.initial.is_zero() || self.backoff.initial > self.backoff.max {
            return Err(invalid(
                "backoff",
                "needs 0 < initial <= max (initial is the first delay, max the cap)",
            ));
        }
        if let Some((name, value)) = &self.webhook_header {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(invalid(
                    "webhook_header",
                    "needs a header name made of letters, digits and `-`",
                ));
            }
            let value = value.expose_secret();
            if value.is_empty() || !is_header_value(value) {
                return Err(invalid(
                    "webhook_header",
                    "needs a non-empty printable ASCII value",
                ));
            }
        }
        Ok(())
    }

    /// `base_url` joined with an API path (`/ignition`, `/accounts/acc_1`).
    pub(crate) fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }
}

/// What an operator (or a tenant's vendor connection) sets for Axle: the `[vendors.axle]`
/// section. Everything else in [`AxleConfig`] keeps its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxleSettings {
    /// `https://api.axle.insure` (production keys) or `https://sandbox.axle.insure`.
    pub base_url: String,
    /// `x-client-id`.
    pub client_id: String,
    /// `x-client-secret`.
    pub client_secret: SecretString,
    /// `x-destination-client-id`, for platforms acting for a destination client.
    #[serde(default)]
    pub destination_client_id: Option<String>,
    /// A header Axle was asked to add to every webhook, checked in constant time; needs
    /// `webhook_header_value` too.
    #[serde(default)]
    pub webhook_header_name: Option<String>,
    #[serde(default)]
    pub webhook_header_value: Option<SecretString>,
    /// TCP + TLS connect timeout (`5s`).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whole-request timeout (`20s`).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    AxleConfig::default().connect_timeout
}

fn default_request_timeout() -> Duration {
    AxleConfig::default().request_timeout
}

impl AxleSettings {
    /// The client configuration these settings describe, validated; errors name the settings
    /// key (`webhook_header_value`), not the internal field.
    pub fn into_config(self) -> Result<AxleConfig, SettingsError> {
        // Both halves of the shared header or neither: with only one, deliveries would be
        // accepted without the check the operator meant to configure.
        let set = |v: Option<&str>| v.is_some_and(|v| !v.trim().is_empty());
        let header = match (
            set(self.webhook_header_name.as_deref()),
            set(self
                .webhook_header_value
                .as_ref()
                .map(|v| v.expose_secret())),
        ) {
            (true, true) => self.webhook_header_name.zip(self.webhook_header_value),
            (true, false) => {
                return Err(SettingsError::new(
                    "webhook_header_value",
                    "is missing: webhook_header_name is set, and the shared header needs both",
                ));
            }
            (false, true) => {
                return Err(SettingsError::new(
                    "webhook_header_name",
                    "is missing: webhook_header_value is set, and the shared header needs both",
                ));
            }
            (false, false) => None,
        };
        let config = AxleConfig {
            base_url: self.base_url,
            client_id: self.client_id,
            client_secret: self.client_secret,
            destination_client_id: self.destination_client_id,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            webhook_header: header,
            ..AxleConfig::default()
        };
        config.validate().map_err(|e| {
            let key = match e.field {
                "webhook_header" => "webhook_header_name",
                field => field,
            };
            SettingsError::new(key, e.reason)
        })?;
        Ok(config)
    }
}

fn is_header_value(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> AxleConfig {
        AxleConfig::new(
            "https://sandbox.axle.insure",
            "cli_1",
            "client-secret-value",
        )
    }

    #[test]
    fn a_complete_config_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
        let mut with_header = valid();
        with_header.webhook_header = Some(("x-coverwatch-auth".into(), "s3cret".to_owned().into()));
        with_header.destination_client_id = Some("cli_dest".into());
        assert_eq!(with_header.validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        type Breaker = Box<dyn Fn(&mut AxleConfig)>;
        let cases: Vec<(&str, Breaker)> = vec![
            (
                "base_url",
                Box::new(|c| c.base_url = "sandbox.axle.insure".into()),
            ),
            ("base_url", Box::new(|c| c.base_url = "ftp://x".into())),
            (
                "base_url",
                Box::new(|c| c.base_url = "https://x/?a=1".into()),
            ),
            ("client_id", Box::new(|c| c.client_id = " ".into())),
            (
                "client_secret",
                Box::new(|c| c.client_secret = String::new().into()),
            ),
            (
                "client_secret",
                Box::new(|c| c.client_secret = "a\nb".to_owned().into()),
            ),
            (
                "destination_client_id",
                Box::new(|c| c.destination_client_id = Some(String::new())),
            ),
            (
                "connect_timeout",
                Box::new(|c| c.connect_timeout = Duration::ZERO),
            ),
            (
                "request_timeout",
                Box::new(|c| c.request_timeout = Duration::ZERO),
            ),
            (
                "backoff",
                Box::new(|c| {
                    c.backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(1))
                }),
            ),
            (
                "webhook_header",
                Box::new(|c| c.webhook_header = Some(("bad name".into(), "v".to_owned().into()))),
            ),
            (
                "webhook_header",
                Box::new(|c| c.webhook_header = Some(("x-auth".into(), String::new().into()))),
            ),
        ];
        for (field, break_it) in cases {
            let mut config = valid();
            break_it(&mut config);
            let err = config.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field));
        }
    }

    #[test]
    fn debug_does_not_show_secrets() {
        let mut config = valid();
        config.webhook_header = Some(("x-auth".into(), "header-secret".to_owned().into()));
        let text = format!("{config:?}");
        assert!(!text.contains("client-secret-value"), "{text}");
        assert!(!text.contains("header-secret"), "{text}");
    }

    fn settings(extra: serde_json::Value) -> Result<AxleConfig, SettingsError> {
        let mut value = serde_json::json!({
            "base_url": "https://sandbox.axle.insure",
            "client_id": "cli_1",
            "client_secret": "client-secret-value",
        });
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        coverwatch_core::plugin::decode_settings::<AxleSettings>(value)?.into_config()
    }

    #[test]
    fn settings_decode_durations_and_defaults() {
        let config = settings(serde_json::json!({})).unwrap();
        assert_eq!(config.request_timeout, Duration::from_secs(20));
        assert!(config.webhook_header.is_none());
        let config = settings(serde_json::json!({
            "connect_timeout": "1s 500ms", "request_timeout": "2m",
            "webhook_header_name": "x-auth", "webhook_header_value": "hush-hush",
        }))
        .unwrap();
        assert_eq!(config.connect_timeout, Duration::from_millis(1500));
        assert_eq!(config.request_timeout, Duration::from_secs(120));
        assert_eq!(config.webhook_header.unwrap().0, "x-auth");
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (extra, key) in [
            (
                serde_json::json!({"request_timeout": "soon"}),
                "request_timeout",
            ),
            (
                serde_json::json!({"request_timeout": "0s"}),
                "request_timeout",
            ),
            (serde_json::json!({"base_url": "ftp://axle"}), "base_url"),
            (
                serde_json::json!({"webhook_header_name": "x-auth"}),
                "webhook_header_value",
            ),
            (
                serde_json::json!({"webhook_header_value": "hush-hush"}),
                "webhook_header_name",
            ),
            (
                serde_json::json!({"webhook_header_name": "bad name", "webhook_header_value": "v"}),
                "webhook_header_name",
            ),
            (serde_json::json!({"client_id": 7}), "client_id"),
            (
                serde_json::json!({"signing_secrets": []}),
                "signing_secrets",
            ),
        ] {
            let err = settings(extra.clone()).unwrap_err();
            assert_eq!(err.path, key, "{extra}: {err}");
            assert!(!err.to_string().contains("hush-hush"), "{err}");
        }
    }

    #[test]
    fn endpoints_join_without_double_slashes() {
        let mut config = valid();
        config.base_url = "http://127.0.0.1:1/axle/".into();
        assert_eq!(
            config.endpoint("/ignition"),
            "http://127.0.0.1:1/axle/ignition"
        );
    }
}
