//! Canopy's JSON, read leniently: every field may be missing or `null`, unknown fields are
//! ignored, numbers may come as strings (Canopy's schema and examples disagree on several), and
//! one odd element never sinks a whole pull. Only the fields we use are modelled; the raw JSON is
//! kept beside the normalized result.

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::Value;

/// Deserializers that accept what Canopy actually sends rather than what its schema says.
pub(crate) mod lenient {
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// A string; a number or a boolean is rendered as text; anything else is `None`.
    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
    }

    /// Like [`string`], but an absent value is the empty string.
    pub fn id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        string(d).map(Option::unwrap_or_default)
    }

    pub fn int_of(v: &Value) -> Option<i64> {
        match v {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.round() as i64)
            }),
            Value::String(s) => {
                let s = s.trim();
                s.parse::<i64>().ok().or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(|f| f.round() as i64)
                })
            }
            _ => None,
        }
    }

    /// An integer from a number or a numeric string.
    pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Ok(int_of(&Value::deserialize(d)?))
    }

    /// A decimal from a number or a string such as `"2.500"`.
    pub fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().trim_end_matches('%').parse::<f64>().ok(),
            _ => None,
        }
        .filter(|f| f.is_finite()))
    }

    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Bool(b) => Some(b),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(true),
                "false" | "no" | "0" => Some(false),
                _ => None,
            },
            Value::Number(n) => n.as_i64().map(|n| n != 0),
            _ => None,
        })
    }

    /// A flag that is false unless Canopy says true.
    pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        boolean(d).map(|b| b.unwrap_or(false))
    }

    /// A list; `null` is empty, and elements that cannot be read are skipped (and logged)
    /// rather than failing the whole document.
    pub fn list<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Array(items) => items
                .into_iter()
                .filter(|v| !v.is_null())
                .filter_map(|v| match serde_json::from_value(v) {
                    Ok(item) => Some(item),
                    Err(err) => {
                        tracing::warn!(error = %err, "skipping an unreadable Canopy list element");
                        None
                    }
                })
                .collect(),
            _ => Vec::new(),
        })
    }

    /// An object, or `None` when it is missing, `null` or not an object.
    pub fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Ok(match Value::deserialize(d)? {
            v @ Value::Object(_) => serde_json::from_value(v).ok(),
            _ => None,
        })
    }

    /// A secret string; anything but a non-empty string is `None`.
    pub fn secret<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<secrecy::SecretString>, D::Error> {
        Ok(string(d)?
            .filter(|s| !s.is_empty())
            .map(secrecy::SecretString::from))
    }
}

/// `GET /teams/{teamId}/pulls/{pullId}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PullResponse {
    #[serde(deserialize_with = "lenient::flag")]
    pub success: bool,
    pub pull: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pull {
    #[serde(deserialize_with = "lenient::id")]
    pub pull_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub account_identifier: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub first_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub middle_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub last_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub account_email: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub phone: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub mobile_phone: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub home_phone: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub work_phone: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub insurance_provider_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub insurance_provider_friendly_name: Option<String>,
    /// An object in webhooks and examples, a JSON string per the schema.
    pub meta_data: Value,
    #[serde(deserialize_with = "lenient::string")]
    pub created_at: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub parent_pull_id: Option<String>,
    #[serde(deserialize_with = "lenient::list")]
    pub policies: Vec<Policy>,
    #[serde(deserialize_with = "lenient::list")]
    pub drivers: Vec<Driver>,
    #[serde(deserialize_with = "lenient::list")]
    pub documents: Vec<Document>,
    #[serde(deserialize_with = "lenient::list")]
    pub addresses: Vec<Address>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Policy {
    #[serde(deserialize_with = "lenient::id")]
    pub policy_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub carrier_policy_number: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub policy_type: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub effective_date: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub expiry_date: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub renewal_date: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub canceled_date: Option<String>,
    #[serde(deserialize_with = "lenient::int")]
    pub total_premium_cents: Option<i64>,
    #[serde(deserialize_with = "lenient::string")]
    pub carrier_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub carrier_friendly_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub state: Option<String>,
    #[serde(deserialize_with = "lenient::list")]
    pub dwellings: Vec<Dwelling>,
    #[serde(deserialize_with = "lenient::list")]
    pub vehicles: Vec<Vehicle>,
    #[serde(deserialize_with = "lenient::list")]
    pub named_insureds: Vec<NamedInsured>,
    #[serde(deserialize_with = "lenient::list")]
    pub additional_interests: Vec<AdditionalInterest>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Address {
    #[serde(deserialize_with = "lenient::string")]
    pub full_address: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub address_nature: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub country: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub number: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub prefix: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub street: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient::string")]
    pub street_type: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub sec_unit_type: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub sec_unit_num: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub city: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub state: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub zip: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Vehicle {
    #[serde(deserialize_with = "lenient::id")]
    pub vehicle_id: String,
    #[serde(deserialize_with = "lenient::int")]
    pub year: Option<i64>,
    #[serde(deserialize_with = "lenient::string")]
    pub make: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub model: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub series: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient::string")]
    pub vehicle_type: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub vin: Option<String>,
    /// OWN | FINANCE | LEASE
    #[serde(deserialize_with = "lenient::string")]
    pub ownership_type: Option<String>,
    #[serde(deserialize_with = "lenient::flag")]
    pub is_removed: bool,
    #[serde(deserialize_with = "lenient::string")]
    pub lien_holder: Option<String>,
    #[serde(deserialize_with = "lenient::object")]
    pub lien_holder_address: Option<Address>,
    #[serde(deserialize_with = "lenient::object")]
    pub garaging_address: Option<Address>,
    #[serde(deserialize_with = "lenient::list")]
    pub coverages: Vec<VehicleCoverage>,
    #[serde(deserialize_with = "lenient::list")]
    pub drivers: Vec<VehicleDriver>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VehicleCoverage {
    #[serde(deserialize_with = "lenient::id")]
    pub name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub friendly_name: Option<String>,
    #[serde(deserialize_with = "lenient::int")]
    pub premium_cents: Option<i64>,
    #[serde(deserialize_with = "lenient::int")]
    pub per_person_limit_cents: Option<i64>,
    /// "If true, this coverage has an unlimited per-person limit".
    #[serde(deserialize_with = "lenient::flag")]
    pub per_person_unlimited: bool,
    #[serde(deserialize_with = "lenient::int")]
    pub per_incident_limit_cents: Option<i64>,
    #[serde(deserialize_with = "lenient::flag")]
    pub per_incident_unlimited: bool,
    /// "Per-day limit, in cents"; `max_days` "comes in pairs with `per_day_limit_cents`".
    #[serde(deserialize_with = "lenient::int")]
    pub per_day_limit_cents: Option<i64>,
    #[serde(deserialize_with = "lenient::int")]
    pub max_days: Option<i64>,
    #[serde(deserialize_with = "lenient::int")]
    pub deductible_cents: Option<i64>,
    #[serde(deserialize_with = "lenient::flag")]
    pub is_declined: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VehicleDriver {
    #[serde(deserialize_with = "lenient::id")]
    pub driver_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub first_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub last_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub drivers_license: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub drivers_license_state: Option<String>,
    #[serde(deserialize_with = "lenient::flag")]
    pub is_excluded: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Driver {
    #[serde(deserialize_with = "lenient::id")]
    pub driver_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub first_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub last_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub drivers_license: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub drivers_license_state: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Dwelling {
    #[serde(deserialize_with = "lenient::id")]
    pub dwelling_id: String,
    #[serde(deserialize_with = "lenient::object")]
    pub address: Option<Address>,
    #[serde(deserialize_with = "lenient::list")]
    pub coverages: Vec<DwellingCoverage>,
    #[serde(deserialize_with = "lenient::list")]
    pub mortgagees: Vec<Mortgagee>,
    /// Deprecated in favour of `mortgagees`, still read when that list is empty.
    #[serde(deserialize_with = "lenient::string")]
    pub mortgagee_name: Option<String>,
    #[serde(deserialize_with = "lenient::object")]
    pub mortgagee_address: Option<Address>,
    #[serde(deserialize_with = "lenient::string")]
    pub mortgage_loan_number: Option<String>,
    #[serde(deserialize_with = "lenient::int")]
    pub replacement_cost_cents: Option<i64>,
    #[serde(deserialize_with = "lenient::int")]
    pub total_replacement_cost_cents: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DwellingCoverage {
    #[serde(deserialize_with = "lenient::id")]
    pub name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub friendly_name: Option<String>,
    #[serde(deserialize_with = "lenient::int")]
    pub premium_cents: Option<i64>,
    #[serde(deserialize_with = "lenient::int")]
    pub per_person_limit_cents: Option<i64>,
    /// Nullable here, unlike on a vehicle coverage; null reads as not unlimited.
    #[serde(deserialize_with = "lenient::flag")]
    pub per_person_unlimited: bool,
    #[serde(deserialize_with = "lenient::int")]
    pub per_incident_limit_cents: Option<i64>,
    #[serde(deserialize_with = "lenient::flag")]
    pub per_incident_unlimited: bool,
    /// Percent of the dwelling (Coverage A) limit: `"10.000"` in the schema, `10` in examples.
    #[serde(deserialize_with = "lenient::decimal")]
    pub per_incident_limit_percent: Option<f64>,
    #[serde(deserialize_with = "lenient::int")]
    pub deductible_cents: Option<i64>,
    #[serde(deserialize_with = "lenient::decimal")]
    pub deductible_percent: Option<f64>,
    #[serde(deserialize_with = "lenient::flag")]
    pub is_declined: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Mortgagee {
    #[serde(deserialize_with = "lenient::string")]
    pub mortgagee_name: Option<String>,
    #[serde(deserialize_with = "lenient::object")]
    pub mortgagee_address: Option<Address>,
    #[serde(deserialize_with = "lenient::string")]
    pub mortgage_loan_number: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NamedInsured {
    #[serde(deserialize_with = "lenient::string")]
    pub first_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub last_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub full_name: Option<String>,
    #[serde(deserialize_with = "lenient::boolean")]
    pub is_primary_named_insured: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AdditionalInterest {
    #[serde(deserialize_with = "lenient::string")]
    pub additional_interest_name: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub additional_interest_type: Option<String>,
    #[serde(deserialize_with = "lenient::object")]
    pub additional_interest_address: Option<Address>,
}

/// Document metadata; `download_url` is deliberately not read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Document {
    #[serde(deserialize_with = "lenient::string")]
    pub document_id: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub title: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub date_added: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub document_type: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub policy_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Monitoring {
    #[serde(deserialize_with = "lenient::id")]
    pub monitoring_id: String,
    #[serde(deserialize_with = "lenient::string")]
    pub latest_pull_id: Option<String>,
    /// ACTIVE | STOPPED
    #[serde(deserialize_with = "lenient::string")]
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub interval: Option<String>,
}

impl Monitoring {
    pub fn is_active(&self) -> bool {
        self.status.as_deref() == Some("ACTIVE")
    }
}

/// `POST` and `DELETE /teams/{teamId}/monitorings[/{id}]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MonitoringResponse {
    #[serde(deserialize_with = "lenient::object")]
    pub monitoring: Option<Monitoring>,
}

/// `GET /teams/{teamId}/monitorings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MonitoringList {
    #[serde(deserialize_with = "lenient::list")]
    pub monitorings: Vec<Monitoring>,
}

/// `POST /teams/{teamId}/monitorings/{id}/refresh`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RefreshResponse {
    #[serde(deserialize_with = "lenient::string")]
    pub pull_id: Option<String>,
}

/// `GET /teams/{teamId}/monitorings/{id}/reconnectToken`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReconnectTokenResponse {
    #[serde(deserialize_with = "lenient::string")]
    pub pull_id: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub reconnect_url: Option<String>,
    #[serde(deserialize_with = "lenient::secret")]
    pub reconnect_token: Option<SecretString>,
}

/// `POST /widget/pull/reconnectToken`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PullJwtResponse {
    #[serde(deserialize_with = "lenient::string")]
    pub pull_id: Option<String>,
    #[serde(deserialize_with = "lenient::secret")]
    pub pull_jwt: Option<SecretString>,
}

/// `WebhookBody`, the envelope of every delivery.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WebhookBody {
    #[serde(deserialize_with = "lenient::id")]
    pub event_type: String,
    #[serde(deserialize_with = "lenient::string")]
    pub pull_id: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub status: Option<String>,
    pub meta_data: Value,
    #[serde(deserialize_with = "lenient::string")]
    pub account_identifier: Option<String>,
    #[serde(deserialize_with = "lenient::flag")]
    pub is_monitored: bool,
    #[serde(deserialize_with = "lenient::object")]
    pub monitoring: Option<WebhookMonitoring>,
    pub data: Value,
    /// `AUTH_STATUS` ordering; Canopy has not said whether it sits here or in `data`.
    #[serde(deserialize_with = "lenient::int")]
    pub sequence: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WebhookMonitoring {
    #[serde(deserialize_with = "lenient::string")]
    pub initial_pull_id: Option<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub monitoring_id: Option<String>,
}

/// Canopy's error envelope, `{"error": "CODE"}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    #[serde(deserialize_with = "lenient::string")]
    pub error: Option<String>,
}

/// `meta_data` as an object, whether Canopy sent an object or a JSON string holding one.
pub fn meta_data_object(meta: &Value) -> Option<serde_json::Map<String, Value>> {
    match meta {
        Value::Object(map) => Some(map.clone()),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::json;

    #[test]
    fn nulls_missing_and_strings_for_numbers_are_accepted() {
        let c: DwellingCoverage = serde_json::from_value(json!({
            "name": "OTHER_STRUCTURES",
            "per_incident_limit_cents": "3500000",
            "per_incident_limit_percent": "10.000",
            "deductible_percent": 2,
            "premium_cents": null,
            "is_declined": null,
            "unknown_field": {"x": 1}
        }))
        .unwrap();
        assert_eq!(c.per_incident_limit_cents, Some(3_500_000));
        assert_eq!(c.per_incident_limit_percent, Some(10.0));
        assert_eq!(c.deductible_percent, Some(2.0));
        assert_eq!(c.premium_cents, None);
        assert!(!c.is_declined);

        let p: Policy = serde_json::from_value(json!({
            "policy_id": 12,
            "vehicles": null,
            "dwellings": [null, {"dwelling_id": "d", "address": null, "coverages": null}],
            "total_premium_cents": 1234.0
        }))
        .unwrap();
        assert_eq!(p.policy_id, "12");
        assert!(p.vehicles.is_empty());
        assert_eq!(p.dwellings.len(), 1);
        assert!(p.dwellings[0].address.is_none());
        assert_eq!(p.total_premium_cents, Some(1234));
    }

    #[test]
    fn an_unreadable_element_is_skipped_not_fatal() {
        let v: Vehicle = serde_json::from_value(json!({
            "vehicle_id": "v",
            "coverages": ["not an object", {"name": "COLLISION", "deductible_cents": 50000}],
            "GaragingAddress": {}
        }))
        .unwrap();
        assert_eq!(v.coverages.len(), 1);
        assert_eq!(v.coverages[0].deductible_cents, Some(50_000));
    }

    #[test]
    fn meta_data_is_read_from_an_object_or_a_json_string() {
        let obj = json!({"coverwatch_link_id": "lnk_1"});
        assert_eq!(
            meta_data_object(&obj).unwrap()["coverwatch_link_id"],
            "lnk_1"
        );
        let text = Value::String(obj.to_string());
        assert_eq!(
            meta_data_object(&text).unwrap()["coverwatch_link_id"],
            "lnk_1"
        );
        assert!(meta_data_object(&Value::Null).is_none());
        assert!(meta_data_object(&json!("not json")).is_none());
    }

    #[test]
    fn secrets_are_wrapped() {
        let r: PullJwtResponse =
            serde_json::from_value(json!({"pull_id": "p", "pull_jwt": "eyJ.secret"})).unwrap();
        assert_eq!(r.pull_jwt.as_ref().unwrap().expose_secret(), "eyJ.secret");
        assert!(!format!("{r:?}").contains("eyJ.secret"));
    }
}
