//! Vendors as plug-ins: each vendor crate turns its own settings into a [`Provider`], and the
//! service only lists the plug-ins.
//!
//! Settings arrive as a [`serde_json::Value`], whatever their source: the configuration file and
//! environment (read by the service, handed over section by section), and later a tenant's
//! vendor connection stored in the database or sent over the admin API. JSON rather than a TOML
//! value because the stored and the transported forms are JSON; TOML and environment variables
//! reach it through the service's configuration loader, which already reads both.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::provider::Provider;

/// A vendor's settings that cannot work. `path` is relative to the vendor's own section
/// (`signing_secrets[1]`); [`SettingsError::within`] puts the section in front of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingsError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "`{}`: {}", self.path, self.reason)
        }
    }
}

impl SettingsError {
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The same error seen from an enclosing section: `vendors.canopy` + `team_id` →
    /// `vendors.canopy.team_id`.
    pub fn within(mut self, section: &str) -> Self {
        self.path = match (section.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => section.to_owned(),
            (false, false) if self.path.starts_with('[') => format!("{section}{}", self.path),
            (false, false) => format!("{section}.{}", self.path),
        };
        self
    }
}

/// Decode a vendor's settings type, naming the field that failed (`signing_secrets[1]`), never
/// the value: settings hold secrets.
pub fn decode_settings<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, SettingsError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        SettingsError::new(path, without_values(&inner.to_string()))
    })
}

/// serde_json's messages quote the offending value (`invalid type: string "s3cret"`); settings
/// are full of secrets, so the quoted part is dropped and only the shape of the mistake kept.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match c {
            '"' if !quoted => {
                quoted = true;
                out.push_str("\"…");
            }
            '"' => {
                quoted = false;
                out.push('"');
            }
            _ if quoted => {}
            _ => out.push(c),
        }
    }
    out
}

/// A vendor built from valid settings.
pub struct BuiltVendor {
    pub provider: Arc<dyn Provider>,
    /// Lowercase request headers that carry a secret in this vendor's webhooks (a shared header
    /// the vendor was asked to add): masked wherever stored deliveries are shown.
    pub secret_headers: Vec<String>,
}

impl fmt::Debug for BuiltVendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltVendor")
            .field("provider", &self.provider.kind())
            .field("secret_headers", &self.secret_headers)
            .finish()
    }
}

/// Where the embedded vendor simulators listen (builds with the service's `sandbox` feature).
#[derive(Debug, Clone, Copy)]
pub struct Simulator<'a> {
    /// `http://127.0.0.1:PORT`, no trailing slash. A vendor's simulator is mounted at
    /// `{base_url}/{id}`.
    pub base_url: &'a str,
    /// The secret simulators sign their webhooks with, for vendors whose webhooks are signed.
    pub webhook_secret: &'a str,
}

/// What a cheap authenticated call to the vendor said about a set of settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteCheck {
    /// The vendor accepted the credentials.
    Accepted,
    /// This plug-in has no cheap authenticated call to make; the settings were only checked
    /// locally.
    NotAvailable,
}

/// Why [`VendorPlugin::check_remote`] did not accept a set of settings. The two cases call for
/// different answers: a refused setting is the caller's to fix (its field is named), while a
/// vendor that could not be asked says nothing about the settings, and the caller must not be
/// told its key is wrong because the vendor is down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteCheckError {
    /// The settings are wrong: refused locally, or by the vendor (a key it does not know, a
    /// team the key does not belong to).
    #[error(transparent)]
    Refused(#[from] SettingsError),
    /// The vendor could not be reached, timed out, or failed on its side (5xx, 429): try again
    /// later.
    #[error("could not check the settings with {vendor}: {reason}")]
    Unreachable { vendor: String, reason: String },
}

/// One vendor: its id, how its settings become a provider, and (optionally) how its simulator
/// is reached.
#[async_trait]
pub trait VendorPlugin: Send + Sync + 'static {
    /// The provider id (`"axle"`): the provider's kind, the configuration section
    /// `[vendors.<id>]` and the webhook path segment.
    fn id(&self) -> &'static str;

    /// The keys an operator must set for this vendor; named when no vendor is configured.
    fn required_settings(&self) -> &'static [&'static str];

    /// The top-level settings keys that hold secrets (`client_secret`, `signing_secrets`): never
    /// shown back, for example by the admin API's view of a tenant's vendor connection.
    fn secret_settings(&self) -> &'static [&'static str] {
        &[]
    }

    /// Decode and validate `settings`, then build the provider. Called at start-up with the
    /// configuration's section, and callable at any time with settings from elsewhere (a
    /// tenant's stored vendor connection). Nothing is contacted.
    fn build(&self, settings: serde_json::Value) -> Result<BuiltVendor, SettingsError>;

    /// A cheap authenticated call with `settings`, before they are saved for later use: bad
    /// credentials are refused with the field named ([`RemoteCheckError::Refused`]); a vendor
    /// that cannot answer is [`RemoteCheckError::Unreachable`]. Settings are built (and so
    /// validated locally) first.
    async fn check_remote(
        &self,
        settings: serde_json::Value,
    ) -> Result<RemoteCheck, RemoteCheckError> {
        self.build(settings)?;
        Ok(RemoteCheck::NotAvailable)
    }

    /// Settings that point this vendor at its simulator, or `None` when it has none there.
    fn simulated_settings(&self, _simulator: &Simulator<'_>) -> Option<serde_json::Value> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        team_id: String,
        signing_secrets: Vec<String>,
    }

    #[test]
    fn a_bad_field_is_named_with_its_index_and_its_value_is_not_repeated() {
        let err = decode_settings::<Settings>(serde_json::json!({
            "team_id": "t", "signing_secrets": ["ok", 7]
        }))
        .unwrap_err();
        assert_eq!(err.path, "signing_secrets[1]", "{err}");
        let err = decode_settings::<Settings>(serde_json::json!({
            "team_id": "t", "signing_secrets": [], "client_secret": "hush-hush"
        }))
        .unwrap_err();
        assert!(
            err.reason.contains("unknown field") && !err.reason.contains("hush-hush"),
            "{err}"
        );
        let err =
            decode_settings::<Settings>(serde_json::json!({ "signing_secrets": [] })).unwrap_err();
        assert!(err.reason.contains("team_id"), "{err}");
        assert_eq!(
            err.within("vendors.canopy").to_string(),
            "`vendors.canopy`: missing field `team_id`"
        );
    }

    #[test]
    fn within_joins_paths() {
        let e = SettingsError::new("signing_secrets[1]", "empty");
        assert_eq!(
            e.within("vendors.canopy").path,
            "vendors.canopy.signing_secrets[1]"
        );
        assert_eq!(SettingsError::new("[0]", "x").within("a").path, "a[0]");
    }
}
