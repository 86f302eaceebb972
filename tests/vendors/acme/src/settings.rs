//! `[vendors.acme]`: Acme's own settings type. Unknown keys are refused (a misspelt key would
//! otherwise be ignored silently), durations are written as people write them (`"30s"`), and
//! every error names the field, never its value.

use std::time::Duration;

use coverwatch_core::SettingsError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The settings as written in `[vendors.acme]` (or a stored vendor connection).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSettings {
    /// The API root, without a trailing slash: `https://api.acme.example`.
    pub base_url: String,
    /// The API key sessions and grants are made with.
    pub api_key: SecretString,
    /// The secret Acme signs webhooks with.
    pub signing_secret: SecretString,
    /// Whole-request timeout of one call.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How often Acme refreshes a monitored account; a link without fresh data for longer is
    /// stale.
    #[serde(default = "default_refresh_interval", with = "humantime_serde")]
    pub refresh_interval: Duration,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_refresh_interval() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// The shortest signing secret taken: HMAC with a guessable key proves nothing.
pub const MIN_SIGNING_SECRET_LEN: usize = 16;

/// Settings checked and ready to build a provider from.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    pub base_url: url::Url,
    pub api_key: SecretString,
    pub signing_secret: SecretString,
    pub request_timeout: Duration,
    pub refresh_interval: Duration,
}

impl AcmeSettings {
    /// Check every field; the error names the bad one.
    pub fn into_config(self) -> Result<AcmeConfig, SettingsError> {
        let base_url = url::Url::parse(self.base_url.trim_end_matches('/'))
            .map_err(|e| SettingsError::new("base_url", format!("not a URL: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(SettingsError::new(
                "base_url",
                "must be an http or https URL",
            ));
        }
        if base_url.cannot_be_a_base() || base_url.query().is_some() {
            return Err(SettingsError::new(
                "base_url",
                "must be an API root that paths can be added to, without a query",
            ));
        }
        if self.api_key.expose_secret().trim().is_empty() {
            return Err(SettingsError::new("api_key", "must not be empty"));
        }
        // Counted in characters: a secret is text, whatever its script.
        if self.signing_secret.expose_secret().chars().count() < MIN_SIGNING_SECRET_LEN {
            return Err(SettingsError::new(
                "signing_secret",
                format!("must be at least {MIN_SIGNING_SECRET_LEN} characters"),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(SettingsError::new(
                "request_timeout",
                "must be greater than zero",
            ));
        }
        if self.refresh_interval < Duration::from_secs(60) {
            return Err(SettingsError::new(
                "refresh_interval",
                "must be at least one minute",
            ));
        }
        Ok(AcmeConfig {
            base_url,
            api_key: self.api_key,
            signing_secret: self.signing_secret,
            request_timeout: self.request_timeout,
            refresh_interval: self.refresh_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coverwatch_core::plugin::decode_settings;
    use serde_json::json;

    fn good() -> serde_json::Value {
        json!({
            "base_url": "http://127.0.0.1:9/",
            "api_key": "ak_test",
            "signing_secret": "whsec-0123456789abcdef",
            "request_timeout": "5s",
            "refresh_interval": "12h",
        })
    }

    fn error(value: serde_json::Value) -> SettingsError {
        match decode_settings::<AcmeSettings>(value) {
            Ok(settings) => settings.into_config().unwrap_err(),
            Err(e) => e,
        }
    }

    #[test]
    fn durations_are_read_as_written() {
        let config = decode_settings::<AcmeSettings>(good())
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.request_timeout, Duration::from_secs(5));
        assert_eq!(config.refresh_interval, Duration::from_secs(12 * 3600));
        assert_eq!(config.base_url.as_str(), "http://127.0.0.1:9/");
    }

    #[test]
    fn each_bad_field_is_named_and_its_value_not_repeated() {
        let mut v = good();
        v["request_timeout"] = json!("soon");
        assert_eq!(error(v).path, "request_timeout");
        let mut v = good();
        v["signing_secret"] = json!("short-sëcret");
        let e = error(v);
        assert_eq!(e.path, "signing_secret");
        assert!(!e.to_string().contains("short"), "{e}");
        let mut v = good();
        v["api_key"] = json!(" ");
        assert_eq!(error(v).path, "api_key");
        let mut v = good();
        v["base_url"] = json!("ftp://x");
        assert_eq!(error(v).path, "base_url");
        let mut v = good();
        v["refresh_interval"] = json!("1s");
        assert_eq!(error(v).path, "refresh_interval");
        let mut v = good();
        v["request_timeout"] = json!("0s");
        assert_eq!(error(v).path, "request_timeout");
        let mut v = good();
        v["api_secret"] = json!("hush-hush");
        let e = error(v);
        assert!(
            e.reason.contains("unknown field `api_secret`") && !e.reason.contains("hush"),
            "{e}"
        );
        let mut v = good();
        v.as_object_mut().unwrap().remove("api_key");
        assert!(error(v).reason.contains("api_key"));
    }
}
