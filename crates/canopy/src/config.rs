//! `CanopyConfig`: where Canopy is, the team's API key, the widget, webhook signing secrets and
//! the monitoring interval, checked once at start-up.

use std::time::Duration;

use coverwatch_core::SettingsError;
use coverwatch_core::backoff::Backoff;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::CanopyError;

/// Canopy refuses monitoring intervals under 30 days (`INTERVAL_TOO_SHORT`).
pub const MIN_MONITORING_DAYS: u64 = 30;
/// The longest monitoring interval accepted here (ten years): the engine adds the interval to
/// the current time to decide when a link is stale, and a larger one would overflow there.
pub const MAX_MONITORING_DAYS: u64 = 3650;

/// How long past the monitoring interval a link may go without fresh data before it is stale:
/// a scheduled pull can run late, and the carrier can be slow.
pub const REFRESH_SLACK: Duration = Duration::from_secs(2 * 24 * 3600);

#[derive(Debug, Clone)]
pub struct CanopyConfig {
    /// The API root, version included: `https://app.usecanopy.com/api/v1.0.0`.
    pub base_url: String,
    /// Where widgets live: the widget is `{widget_base_url}/c/{public_alias}`
    /// (`https://app.usecanopy.com`).
    pub widget_base_url: String,
    pub team_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// The widget (link) the end-user signs in through.
    pub public_alias: String,
    /// Signing secrets of the team's webhooks. Several at once so that a secret can be rotated
    /// without refusing deliveries signed with the old one.
    pub signing_secrets: Vec<SecretString>,
    /// How far a signature's `t=` may be from our clock.
    pub signature_tolerance: Duration,
    /// What becomes of a genuine signature whose `t=` is outside the tolerance.
    pub stale_signatures: StaleSignatures,
    /// ISO-8601 duration of at least 30 days (`P1M`), sent when a monitoring is created.
    pub monitoring_interval: String,
    /// Skips the widget's consent screen when the caller has collected consent itself.
    pub consent_token: Option<SecretString>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Attempts of an idempotent call, the first included.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// A `Retry-After` longer than this is not waited for: the call fails as unavailable and
    /// the engine's own retry takes over.
    pub max_retry_after: Duration,
}

/// What becomes of a delivery whose signature is genuine but whose timestamp is outside the
/// tolerance.
///
/// Canopy's "Verifying webhook signatures" page leaves the tolerance to the receiver and does
/// not say whether a retry is signed afresh. If a retry keeps its first `t`, a strict window
/// turns every retry after an outage longer than the window into a `401`, and after its tenth
/// retry (about 7.2 hours, "Webhook retries") Canopy gives the event up for good. A replayed
/// genuine delivery can do no harm here: every stored delivery is deduplicated (a hash of the
/// body, as Canopy sends no event id), so the worst a replay does is nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StaleSignatures {
    /// Stored and processed, and counted (the engine logs and counts late deliveries). Only a
    /// signature that does not match is refused.
    #[default]
    Accept,
    /// Refused with `401`, as a bad signature is.
    Reject,
}

impl std::str::FromStr for StaleSignatures {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "accept" => Ok(Self::Accept),
            "reject" => Ok(Self::Reject),
            other => Err(format!("`{other}` is not one of: accept, reject")),
        }
    }
}

impl CanopyConfig {
    /// A configuration with the defaults for everything but the endpoints and credentials.
    pub fn new(
        base_url: impl Into<String>,
        widget_base_url: impl Into<String>,
        team_id: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
        public_alias: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            widget_base_url: widget_base_url.into(),
            team_id: team_id.into(),
            client_id: client_id.into(),
            client_secret,
            public_alias: public_alias.into(),
            signing_secrets: Vec::new(),
            signature_tolerance: Duration::from_secs(300),
            stale_signatures: StaleSignatures::default(),
            monitoring_interval: "P1M".into(),
            consent_token: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_attempts: 4,
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(5)),
            max_retry_after: Duration::from_secs(30),
        }
    }

    pub fn with_signing_secret(mut self, secret: impl Into<String>) -> Self {
        self.signing_secrets.push(SecretString::from(secret.into()));
        self
    }

    /// Checks every field; the error names the bad key.
    pub fn validate(&self) -> Result<(), CanopyError> {
        check_url("base_url", &self.base_url)?;
        check_url("widget_base_url", &self.widget_base_url)?;
        for (key, value) in [
            ("team_id", self.team_id.as_str()),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
        ] {
            if value.trim().is_empty() {
                return Err(CanopyError::config(key, "must not be empty"));
            }
        }
        if self.public_alias.is_empty()
            || !self
                .public_alias
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(CanopyError::config(
                "public_alias",
                "must be a non-empty widget alias (letters, digits, `-`, `_`, `.`)",
            ));
        }
        if self.signing_secrets.is_empty() {
            return Err(CanopyError::config(
                "signing_secrets",
                "must hold at least one webhook signing secret",
            ));
        }
        if self
            .signing_secrets
            .iter()
            .any(|s| s.expose_secret().is_empty())
        {
            return Err(CanopyError::config(
                "signing_secrets",
                "must not contain an empty secret",
            ));
        }
        if self.signature_tolerance.is_zero() {
            return Err(CanopyError::config(
                "signature_tolerance",
                "must be more than zero",
            ));
        }
        self.monitoring_interval()?;
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(CanopyError::config(key, "must be more than zero"));
            }
        }
        if self.max_attempts == 0 {
            return Err(CanopyError::config("max_attempts", "must be at least 1"));
        }
        Ok(())
    }

    /// The parsed monitoring interval, refused under Canopy's 30-day floor.
    pub fn monitoring_interval(&self) -> Result<IsoDuration, CanopyError> {
        let parsed = IsoDuration::parse(&self.monitoring_interval).ok_or_else(|| {
            CanopyError::config(
                "monitoring_interval",
                format!(
                    "`{}` is not an ISO-8601 duration such as `P1M` or `P30D`",
                    self.monitoring_interval
                ),
            )
        })?;
        if parsed.shortest() < Duration::from_secs(MIN_MONITORING_DAYS * 24 * 3600) {
            return Err(CanopyError::config(
                "monitoring_interval",
                format!(
                    "`{}` is shorter than the {MIN_MONITORING_DAYS} days Canopy accepts",
                    self.monitoring_interval
                ),
            ));
        }
        Ok(parsed)
    }
}

/// What an operator (or a tenant's vendor connection) sets for Canopy Connect: the
/// `[vendors.canopy]` section. Everything else in [`CanopyConfig`] keeps its default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanopySettings {
    /// `https://app.usecanopy.com/api/v1.0.0`.
    pub base_url: String,
    /// `https://app.usecanopy.com` (widgets are `{widget_base_url}/c/{public_alias}`).
    pub widget_base_url: String,
    pub team_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub public_alias: String,
    /// The team webhooks' signing secrets; several while one is being rotated.
    pub signing_secrets: Vec<SecretString>,
    /// How far a `canopy-signature` timestamp may be from now (`5m`).
    #[serde(default = "default_signature_tolerance", with = "humantime_serde")]
    pub signature_tolerance: Duration,
    /// What becomes of a genuine signature outside the tolerance: `accept` or `reject`.
    #[serde(default)]
    pub stale_signatures: StaleSignatures,
    /// ISO-8601 interval of monitorings (Canopy's own format, sent as written): 30 days to ten
    /// years.
    #[serde(default = "default_monitoring_interval")]
    pub monitoring_interval: String,
    /// Skips the widget's consent screen when consent was collected by the caller.
    #[serde(default)]
    pub consent_token: Option<SecretString>,
    /// TCP + TLS connect timeout (`5s`).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Whole-request timeout (`30s`).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn defaults() -> CanopyConfig {
    CanopyConfig::new("", "", "", "", SecretString::from(""), "")
}

fn default_signature_tolerance() -> Duration {
    defaults().signature_tolerance
}

fn default_monitoring_interval() -> String {
    defaults().monitoring_interval
}

fn default_connect_timeout() -> Duration {
    defaults().connect_timeout
}

fn default_request_timeout() -> Duration {
    defaults().request_timeout
}

impl CanopySettings {
    /// The client configuration these settings describe, validated; errors name the settings
    /// key, with the index of a bad signing secret.
    pub fn into_config(self) -> Result<CanopyConfig, SettingsError> {
        if let Some(i) = self
            .signing_secrets
            .iter()
            .position(|s| s.expose_secret().trim().is_empty())
        {
            return Err(SettingsError::new(
                format!("signing_secrets[{i}]"),
                "is empty: every signing secret must be the secret Canopy shows for a webhook",
            ));
        }
        let mut config = CanopyConfig::new(
            self.base_url,
            self.widget_base_url,
            self.team_id,
            self.client_id,
            self.client_secret,
            self.public_alias,
        );
        config.signing_secrets = self.signing_secrets;
        config.signature_tolerance = self.signature_tolerance;
        config.stale_signatures = self.stale_signatures;
        config.monitoring_interval = self.monitoring_interval;
        config.consent_token = self.consent_token;
        config.connect_timeout = self.connect_timeout;
        config.request_timeout = self.request_timeout;
        let named = |e: CanopyError| match e {
            CanopyError::Config { key, message } => SettingsError::new(key, message),
            other => SettingsError::new("", other.to_string()),
        };
        config.validate().map_err(named)?;
        let interval = config.monitoring_interval().map_err(named)?;
        if interval.shortest() > Duration::from_secs(MAX_MONITORING_DAYS * DAY) {
            return Err(SettingsError::new(
                "monitoring_interval",
                format!(
                    "`{}` is longer than {MAX_MONITORING_DAYS} days",
                    config.monitoring_interval
                ),
            ));
        }
        Ok(config)
    }
}

fn check_url(key: &'static str, value: &str) -> Result<(), CanopyError> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        _ => Err(CanopyError::config(
            key,
            format!("`{value}` is not an http(s) URL"),
        )),
    }
}

/// An ISO-8601 duration as Canopy's `interval` takes it: `P[nY][nM][nW|nD][T[nH][nM][nS]]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IsoDuration {
    pub years: u64,
    pub months: u64,
    pub weeks: u64,
    pub days: u64,
    pub hours: u64,
    pub minutes: u64,
    pub seconds: u64,
}

const DAY: u64 = 24 * 3600;

impl IsoDuration {
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix('P')?;
        let (date, time) = match rest.split_once('T') {
            Some((date, time)) => (date, Some(time)),
            None => (rest, None),
        };
        if date.is_empty() && time.is_none_or(str::is_empty) {
            return None;
        }
        let mut out = IsoDuration::default();
        let mut rank = 0;
        for (value, unit) in designators(date)? {
            // Designators must come in order, each at most once; weeks and days exclude each other.
            let r = match unit {
                'Y' => 1,
                'M' => 2,
                'W' | 'D' => 3,
                _ => return None,
            };
            if r <= rank {
                return None;
            }
            rank = r;
            match unit {
                'Y' => out.years = value,
                'M' => out.months = value,
                'W' => out.weeks = value,
                _ => out.days = value,
            }
        }
        if let Some(time) = time {
            if time.is_empty() {
                return None;
            }
            let mut rank = 0;
            for (value, unit) in designators(time)? {
                let r = match unit {
                    'H' => 1,
                    'M' => 2,
                    'S' => 3,
                    _ => return None,
                };
                if r <= rank {
                    return None;
                }
                rank = r;
                match unit {
                    'H' => out.hours = value,
                    'M' => out.minutes = value,
                    _ => out.seconds = value,
                }
            }
        }
        Some(out)
    }

    fn fixed_seconds(&self) -> u64 {
        self.weeks
            .saturating_mul(7 * DAY)
            .saturating_add(self.days.saturating_mul(DAY))
            .saturating_add(self.hours.saturating_mul(3600))
            .saturating_add(self.minutes.saturating_mul(60))
            .saturating_add(self.seconds)
    }

    /// The length as Canopy checks it against its floor: a month counts 30 days (so that
    /// `P1M`, Canopy's own example, passes) and a year 365.
    pub fn shortest(&self) -> Duration {
        Duration::from_secs(
            self.years
                .saturating_mul(365 * DAY)
                .saturating_add(self.months.saturating_mul(30 * DAY))
                .saturating_add(self.fixed_seconds()),
        )
    }

    /// The longest the interval can last on the calendar (31-day months, 366-day years), so
    /// that a link is not called stale one day early in a long month.
    pub fn longest(&self) -> Duration {
        Duration::from_secs(
            self.years
                .saturating_mul(366 * DAY)
                .saturating_add(self.months.saturating_mul(31 * DAY))
                .saturating_add(self.fixed_seconds()),
        )
    }
}

/// `"1Y2M"` → `[(1,'Y'), (2,'M')]`; `None` when a number is missing or not an integer.
fn designators(text: &str) -> Option<Vec<(u64, char)>> {
    let mut out = Vec::new();
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if digits.is_empty() {
                return None;
            }
            out.push((digits.parse().ok()?, c));
            digits.clear();
        }
    }
    digits.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CanopyConfig {
        CanopyConfig::new(
            "http://127.0.0.1:1/canopy/api/v1.0.0",
            "http://127.0.0.1:1/canopy",
            "team",
            "client",
            SecretString::from("client-s3cr3t"),
            "coverwatch-sandbox",
        )
        .with_signing_secret("whsec")
    }

    #[test]
    fn durations_parse_like_canopy_pattern() {
        assert_eq!(
            IsoDuration::parse("P1M"),
            Some(IsoDuration {
                months: 1,
                ..Default::default()
            })
        );
        let d = IsoDuration::parse("P1Y2M3DT4H5M6S").unwrap();
        assert_eq!(
            (d.years, d.months, d.days, d.hours, d.minutes, d.seconds),
            (1, 2, 3, 4, 5, 6)
        );
        assert_eq!(IsoDuration::parse("P5W").unwrap().weeks, 5);
        for bad in [
            "", "P", "PT", "1M", "P1", "PM", "P1M1Y", "P1W1D", "P1.5D", "P-1D", "PT1D",
        ] {
            assert_eq!(IsoDuration::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn floor_and_ceiling_of_calendar_units() {
        let month = IsoDuration::parse("P1M").unwrap();
        assert_eq!(month.shortest(), Duration::from_secs(30 * DAY));
        assert_eq!(month.longest(), Duration::from_secs(31 * DAY));
        assert_eq!(
            IsoDuration::parse("P30D").unwrap().shortest(),
            Duration::from_secs(30 * DAY)
        );
    }

    #[test]
    fn valid_config_passes() {
        config().validate().unwrap();
    }

    #[test]
    fn short_or_bad_interval_is_refused_naming_the_key() {
        for interval in ["P29D", "P4W", "PT719H", "monthly"] {
            let mut c = config();
            c.monitoring_interval = interval.into();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("`monitoring_interval`"), "{interval}: {err}");
        }
        let mut c = config();
        c.monitoring_interval = "P30D".into();
        c.validate().unwrap();
    }

    #[test]
    fn every_bad_field_is_named() {
        type Spoil = Box<dyn Fn(&mut CanopyConfig)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("base_url", Box::new(|c| c.base_url = "nope".into())),
            (
                "widget_base_url",
                Box::new(|c| c.widget_base_url = "ftp://x".into()),
            ),
            ("team_id", Box::new(|c| c.team_id = " ".into())),
            ("client_id", Box::new(|c| c.client_id.clear())),
            (
                "client_secret",
                Box::new(|c| c.client_secret = SecretString::from("")),
            ),
            ("public_alias", Box::new(|c| c.public_alias = "a b".into())),
            ("signing_secrets", Box::new(|c| c.signing_secrets.clear())),
            (
                "signature_tolerance",
                Box::new(|c| c.signature_tolerance = Duration::ZERO),
            ),
            (
                "request_timeout",
                Box::new(|c| c.request_timeout = Duration::ZERO),
            ),
            ("max_attempts", Box::new(|c| c.max_attempts = 0)),
        ];
        for (key, spoil) in cases {
            let mut c = config();
            spoil(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
    }

    fn settings(extra: serde_json::Value) -> Result<CanopyConfig, SettingsError> {
        let mut value = serde_json::json!({
            "base_url": "http://127.0.0.1:1/canopy/api/v1.0.0",
            "widget_base_url": "http://127.0.0.1:1/canopy",
            "team_id": "team",
            "client_id": "client",
            "client_secret": "client-s3cr3t",
            "public_alias": "coverwatch-sandbox",
            "signing_secrets": ["whsec"],
        });
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        coverwatch_core::plugin::decode_settings::<CanopySettings>(value)?.into_config()
    }

    #[test]
    fn settings_decode_durations_and_defaults() {
        let c = settings(serde_json::json!({})).unwrap();
        assert_eq!(c.signature_tolerance, Duration::from_secs(300));
        assert_eq!(c.monitoring_interval, "P1M");
        assert_eq!(c.stale_signatures, StaleSignatures::Accept);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        let c = settings(serde_json::json!({
            "signature_tolerance": "10m", "stale_signatures": "reject",
            "monitoring_interval": "P10Y", "connect_timeout": "750ms",
        }))
        .unwrap();
        assert_eq!(c.signature_tolerance, Duration::from_secs(600));
        assert_eq!(c.stale_signatures, StaleSignatures::Reject);
        assert_eq!(c.connect_timeout, Duration::from_millis(750));
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (extra, key) in [
            (
                serde_json::json!({"signing_secrets": ["whsec", " "]}),
                "signing_secrets[1]",
            ),
            (
                serde_json::json!({"signing_secrets": ["whsec", 7]}),
                "signing_secrets[1]",
            ),
            (
                serde_json::json!({"signing_secrets": []}),
                "signing_secrets",
            ),
            (
                serde_json::json!({"monitoring_interval": "P7D"}),
                "monitoring_interval",
            ),
            (
                serde_json::json!({"monitoring_interval": "P99999999999999999999D"}),
                "monitoring_interval",
            ),
            (
                serde_json::json!({"monitoring_interval": "P11Y"}),
                "monitoring_interval",
            ),
            (
                serde_json::json!({"stale_signatures": "maybe"}),
                "stale_signatures",
            ),
            (
                serde_json::json!({"signature_tolerance": "0s"}),
                "signature_tolerance",
            ),
            (
                serde_json::json!({"signature_tolerance": 300}),
                "signature_tolerance",
            ),
            (serde_json::json!({"team_id": " "}), "team_id"),
            (serde_json::json!({"client_secret": ""}), "client_secret"),
        ] {
            let err = settings(extra.clone()).unwrap_err();
            assert_eq!(err.path, key, "{extra}: {err}");
            assert!(!err.to_string().contains("client-s3cr3t"), "{err}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = config();
        c.consent_token = Some(SecretString::from("consent-xyz"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("client-s3cr3t") && !shown.contains("whsec"));
        assert!(!shown.contains("consent-xyz"));
    }
}
