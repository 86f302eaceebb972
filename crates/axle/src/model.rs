//! Axle's JSON, read leniently.
//!
//! Axle says every field is nullable, that `null` ("no value") and a missing key ("does not
//! apply") differ, that amounts are numbers and vehicle years strings, and its examples render
//! some arrays as single objects. So: every field is optional, unknown fields are ignored,
//! numbers and strings are accepted for one another, a single object is read as a one-element
//! list, a list element that cannot be read is skipped rather than failing the whole object,
//! and where null and missing mean different things ([`Policy::is_active`]) both are kept.

use secrecy::SecretString;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::{Map, Value};

/// `{"success": bool, "data": …}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Envelope {
    #[serde(deserialize_with = "lenient_bool")]
    pub success: Option<bool>,
    pub data: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct IgnitionStarted {
    #[serde(deserialize_with = "lenient_string")]
    pub ignition_token: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub ignition_uri: Option<String>,
}

/// `POST /token/exchange`. The access token never expires, so it is a secret from here on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Exchanged {
    #[serde(deserialize_with = "lenient_secret")]
    pub access_token: Option<SecretString>,
    #[serde(deserialize_with = "lenient_string")]
    pub account: Option<String>,
    #[serde(deserialize_with = "id_list")]
    pub policies: Vec<String>,
    /// A `manual` or `proxy` completion may yield a policy without an account.
    #[serde(deserialize_with = "lenient_string")]
    pub policy: Option<String>,
}

impl Exchanged {
    /// Every policy id the exchange named, `policy` first, each once.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.policy.iter().cloned().collect();
        for id in &self.policies {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Connection {
    #[serde(deserialize_with = "lenient_string")]
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Account {
    #[serde(deserialize_with = "lenient_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub carrier: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub first_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub last_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub email: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub phone: Option<String>,
    /// Ids; with `expand=true` Axle may inline the objects instead, whose `id` is read.
    #[serde(deserialize_with = "id_list")]
    pub policies: Vec<String>,
    #[serde(deserialize_with = "lenient_object")]
    pub connection: Option<Connection>,
    #[serde(deserialize_with = "lenient_string")]
    pub created_at: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub modified_at: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub refreshed_at: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Policy {
    #[serde(deserialize_with = "lenient_string")]
    pub id: Option<String>,
    /// An id, or the account object when expanded.
    #[serde(deserialize_with = "id_or_object")]
    pub account: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient_string")]
    pub policy_type: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub carrier: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub policy_number: Option<String>,
    /// Outer `None`: the key is missing (a `manual` result); `Some(None)`: present but `null`
    /// (the policy may have left the account).
    #[serde(deserialize_with = "present_bool")]
    pub is_active: Option<Option<bool>>,
    #[serde(deserialize_with = "lenient_string")]
    pub effective_date: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub expiration_date: Option<String>,
    #[serde(deserialize_with = "lenient_f64")]
    pub premium: Option<f64>,
    #[serde(deserialize_with = "lenient_object")]
    pub address: Option<Address>,
    #[serde(deserialize_with = "many")]
    pub properties: Vec<Property>,
    #[serde(deserialize_with = "many")]
    pub coverages: Vec<Coverage>,
    #[serde(deserialize_with = "many")]
    pub insureds: Vec<Insured>,
    #[serde(deserialize_with = "many")]
    pub third_parties: Vec<ThirdParty>,
    #[serde(deserialize_with = "many")]
    pub documents: Vec<Document>,
    #[serde(deserialize_with = "lenient_string")]
    pub created_at: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub modified_at: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub refreshed_at: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub result: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Address {
    #[serde(deserialize_with = "lenient_string")]
    pub address_line1: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub address_line2: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub city: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub state: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub postal_code: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub country: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Property {
    #[serde(deserialize_with = "lenient_string")]
    pub id: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient_string")]
    pub property_type: Option<String>,
    /// Vehicle fields (`vin`, `year`, `make`, `model`, `bodyStyle`) or, for a dwelling (whose
    /// shape Axle does not document), whatever the carrier gave; read per type.
    #[serde(deserialize_with = "lenient_map")]
    pub data: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VehicleData {
    #[serde(deserialize_with = "lenient_string")]
    pub vin: Option<String>,
    /// A string in Axle's schema; numbers are accepted too.
    #[serde(deserialize_with = "lenient_string")]
    pub year: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub make: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub model: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub body_style: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Coverage {
    #[serde(deserialize_with = "lenient_string")]
    pub code: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub label: Option<String>,
    /// Outer `None`: the key is missing, which Axle uses for "the field does not exist on
    /// this coverage" (a combined single limit has no per-person part); `Some(None)`: present
    /// but `null` ("no information"). See `normalize` on combined single limits.
    #[serde(deserialize_with = "present_f64")]
    pub limit_per_person: Option<Option<f64>>,
    #[serde(deserialize_with = "lenient_f64")]
    pub limit_per_accident: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub deductible: Option<f64>,
    #[serde(deserialize_with = "lenient_f64")]
    pub premium: Option<f64>,
    /// Missing: applies to every property.
    #[serde(deserialize_with = "id_or_object")]
    pub property: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Insured {
    #[serde(deserialize_with = "lenient_string")]
    pub first_name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub last_name: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient_string")]
    pub insured_type: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub license_no: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub license_state: Option<String>,
    #[serde(deserialize_with = "id_or_object")]
    pub property: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ThirdParty {
    #[serde(rename = "type", deserialize_with = "lenient_string")]
    pub party_type: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient_object")]
    pub address: Option<Address>,
    #[serde(deserialize_with = "lenient_string")]
    pub loan_number: Option<String>,
    #[serde(deserialize_with = "id_or_object")]
    pub property: Option<String>,
}

/// Document metadata. The signed `url` is deliberately not read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Document {
    #[serde(deserialize_with = "lenient_string")]
    pub id: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub source: Option<String>,
    /// A list in Axle's example (`["declaration-page"]`); a single string is accepted.
    #[serde(rename = "type", deserialize_with = "string_list")]
    pub kinds: Vec<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub created_at: Option<String>,
}

/// A webhook delivery: `{id, type, data, createdAt}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Event {
    #[serde(deserialize_with = "lenient_string")]
    pub id: Option<String>,
    #[serde(rename = "type", deserialize_with = "lenient_string")]
    pub event_type: Option<String>,
    #[serde(deserialize_with = "lenient_object")]
    pub data: Option<EventData>,
    #[serde(deserialize_with = "lenient_string")]
    pub created_at: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EventData {
    #[serde(deserialize_with = "lenient_string")]
    pub client: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub account: Option<String>,
    #[serde(rename = "ref", deserialize_with = "lenient_string")]
    pub reference: Option<String>,
    /// Ignition events: the Ignition's token (Axle's Ignition event table).
    #[serde(deserialize_with = "lenient_string")]
    pub token: Option<String>,
    #[serde(deserialize_with = "lenient_map")]
    pub user: Map<String, Value>,
    #[serde(deserialize_with = "lenient_map")]
    pub metadata: Map<String, Value>,
    /// Single-use, but exchangeable for ten minutes: a secret.
    #[serde(deserialize_with = "lenient_secret")]
    pub auth_code: Option<SecretString>,
    #[serde(deserialize_with = "lenient_string")]
    pub result: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub step: Option<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub message: Option<String>,
    /// `account.disconnected`: the reason (`credentials-expired`, …).
    #[serde(deserialize_with = "lenient_string")]
    pub status: Option<String>,
    /// The older name of `status`.
    #[serde(deserialize_with = "lenient_string")]
    pub code: Option<String>,
    /// `[{type, key, value, oldValue}]`, or an object: the docs nest it both ways.
    pub changes: Option<Value>,
}

// ---------------------------------------------------------------------------------------------
// Lenient readers. Each accepts `null` and (with `#[serde(default)]`) a missing key.

/// A string, or a number or boolean written as text; empty strings and anything else are `None`.
pub fn string_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A number, or a numeric string (`"1,342.50"`, `"$500"` included).
pub fn f64_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let cleaned: String = s
                .trim()
                .chars()
                .filter(|c| !matches!(c, ',' | '$' | ' '))
                .collect();
            cleaned.parse::<f64>().ok().filter(|f| f.is_finite())
        }
        _ => None,
    }
}

pub fn bool_of(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(string_of(&Value::deserialize(d)?))
}

fn lenient_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(string_of(&Value::deserialize(d)?).map(SecretString::from))
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(f64_of(&Value::deserialize(d)?))
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(bool_of(&Value::deserialize(d)?))
}

/// Called only when the key is present, so `Some(_)` records presence and the inner option
/// whether the value was a readable boolean.
fn present_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Ok(Some(bool_of(&Value::deserialize(d)?)))
}

/// Called only when the key is present, like [`present_bool`].
fn present_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Ok(Some(f64_of(&Value::deserialize(d)?)))
}

fn lenient_map<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(map) => map,
        _ => Map::new(),
    })
}

fn lenient_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(d)? {
        value @ Value::Object(_) => serde_json::from_value(value).ok(),
        _ => None,
    })
}

/// A list of objects; a single object is a one-element list; unreadable elements are skipped.
fn many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let items = match Value::deserialize(d)? {
        Value::Array(items) => items,
        value @ Value::Object(_) => vec![value],
        _ => Vec::new(),
    };
    Ok(items
        .into_iter()
        .filter(Value::is_object)
        .filter_map(|item| match serde_json::from_value(item) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable element of an Axle list");
                None
            }
        })
        .collect())
}

fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.iter().filter_map(string_of).collect(),
        other => string_of(&other).into_iter().collect(),
    })
}

fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::Object(obj) => obj.get("id").and_then(string_of),
        other => string_of(other),
    }
}

fn id_or_object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(id_of(&Value::deserialize(d)?))
}

fn id_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items.iter().filter_map(id_of).collect(),
        other => id_of(&other).into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_and_missing_is_active_differ() {
        let missing: Policy = serde_json::from_value(json!({"id": "pol_1"})).unwrap();
        assert_eq!(missing.is_active, None);
        let null: Policy = serde_json::from_value(json!({"isActive": null})).unwrap();
        assert_eq!(null.is_active, Some(None));
        let yes: Policy = serde_json::from_value(json!({"isActive": "true"})).unwrap();
        assert_eq!(yes.is_active, Some(Some(true)));
    }

    #[test]
    fn numbers_and_strings_stand_in_for_each_other() {
        let c: Coverage = serde_json::from_value(json!({
            "code": "BI", "limitPerPerson": "250,000", "limitPerAccident": 500000,
            "deductible": null, "premium": "$12.50"
        }))
        .unwrap();
        assert_eq!(c.limit_per_person, Some(Some(250_000.0)));
        assert_eq!(c.limit_per_accident, Some(500_000.0));
        assert_eq!(c.deductible, None);
        assert_eq!(c.premium, Some(12.5));
        let v: VehicleData = serde_json::from_value(json!({"year": 2017})).unwrap();
        assert_eq!(v.year.as_deref(), Some("2017"));
    }

    /// Axle, API overview, Null values: `null` means "the carrier data source supports the
    /// field, but no information is present"; `undefined` that "the field does not exist on the
    /// Account or Policy" (docs.axle.insure/api-reference/overview).
    #[test]
    fn a_missing_per_person_limit_differs_from_a_null_one() {
        let missing: Coverage =
            serde_json::from_value(json!({"code": "BI", "limitPerAccident": 300000})).unwrap();
        assert_eq!(missing.limit_per_person, None);
        let null: Coverage =
            serde_json::from_value(json!({"code": "BI", "limitPerPerson": null})).unwrap();
        assert_eq!(null.limit_per_person, Some(None));
    }

    #[test]
    fn single_objects_read_as_lists_and_bad_elements_are_skipped() {
        let p: Policy = serde_json::from_value(json!({
            "insureds": {"firstName": "John", "lastName": "Smith"},
            "coverages": [{"code": "BI"}, "junk", {"code": "PD", "label": {"bad": 1}}],
            "documents": null,
            "thirdParties": 7,
            "address": "not an object",
            "unknownField": {"x": 1}
        }))
        .unwrap();
        assert_eq!(p.insureds.len(), 1);
        assert_eq!(p.coverages.len(), 2);
        assert_eq!(p.coverages[1].label, None);
        assert!(p.documents.is_empty() && p.third_parties.is_empty());
        assert_eq!(p.address, None);
    }

    #[test]
    fn expanded_references_read_as_ids() {
        let a: Account = serde_json::from_value(json!({
            "policies": [{"id": "pol_1", "type": "auto"}, "pol_2"],
            "connection": {"status": "active"}
        }))
        .unwrap();
        assert_eq!(a.policies, vec!["pol_1", "pol_2"]);
        let p: Policy = serde_json::from_value(json!({"account": {"id": "acc_1"}})).unwrap();
        assert_eq!(p.account.as_deref(), Some("acc_1"));
        let d: Document = serde_json::from_value(json!({"type": "id-card"})).unwrap();
        assert_eq!(d.kinds, vec!["id-card"]);
    }

    #[test]
    fn envelopes_and_events_tolerate_odd_values() {
        let e: Envelope = serde_json::from_value(json!({"success": "false"})).unwrap();
        assert_eq!(e.success, Some(false));
        let ev: Event = serde_json::from_value(json!({
            "id": 12, "type": "policy.modified", "data": {"ref": "pol_1", "metadata": null, "user": []}
        }))
        .unwrap();
        assert_eq!(ev.id.as_deref(), Some("12"));
        let data = ev.data.unwrap();
        assert_eq!(data.reference.as_deref(), Some("pol_1"));
        assert!(data.metadata.is_empty() && data.user.is_empty());
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::json;

    #[test]
    fn tokens_and_codes_are_secrets() {
        let x: Exchanged = serde_json::from_value(json!({
            "accessToken": "tok-very-secret", "account": "acc_1", "policies": ["pol_1"]
        }))
        .unwrap();
        assert_eq!(
            x.access_token.as_ref().unwrap().expose_secret(),
            "tok-very-secret"
        );
        assert!(!format!("{x:?}").contains("tok-very-secret"));
        let ev: Event = serde_json::from_value(json!({
            "type": "ignition.completed", "data": {"authCode": "code-very-secret"}
        }))
        .unwrap();
        assert!(!format!("{ev:?}").contains("code-very-secret"));
    }
}
