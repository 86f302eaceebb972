//! Canopy's JSON objects, field for field from the OpenAPI document
//! (`/work/shared/vendors/canopy-openapi.json`, `components.schemas`).
//!
//! Every property of the schema is present and serialised, `null` included, because a client
//! written against the real API must meet every field it will meet there. Nullable fields are
//! `Option`; enums are plain strings holding the vendor's own values (the consts below name the
//! ones the simulator uses). Money is integer cents. Dates are ISO 8601 strings with
//! milliseconds and `Z`, as in Canopy's examples.
//!
//! Deserialisation is lenient (`#[serde(default)]`, unknown fields ignored) so that the same
//! types can read the simulator's own answers in tests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `PullStatus` (`WebhookBody.properties.status`).
pub mod pull_status {
    pub const STARTED: &str = "STARTED";
    pub const QUEUED: &str = "QUEUED";
    pub const PROCESSING: &str = "PROCESSING";
    pub const IDENTITY_VERIFICATION_OPTIONS: &str = "IDENTITY_VERIFICATION_OPTIONS";
    pub const IDENTITY_VERIFICATION: &str = "IDENTITY_VERIFICATION";
    pub const GETTING_CONSUMERS: &str = "GETTING_CONSUMERS";
    pub const PULLING_DATA: &str = "PULLING_DATA";
    pub const NOT_AUTHENTICATED: &str = "NOT_AUTHENTICATED";
    pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
    pub const PROVIDER_ERROR: &str = "PROVIDER_ERROR";
    pub const SUCCESS: &str = "SUCCESS";
    pub const INCOMPLETE: &str = "INCOMPLETE";

    /// Every value of the enum, in the OpenAPI order.
    pub const ALL: [&str; 17] = [
        "STARTED",
        "QUEUED",
        "DOCUMENT_PARSING",
        "PROCESSING",
        "IDENTITY_VERIFICATION_OPTIONS",
        "IDENTITY_VERIFICATION",
        "GETTING_CONSUMERS",
        "PULLING_DATA",
        "SERVICING",
        "WAITING_FOR_CONSUMER_CONFIRMATION",
        "SUBMITTING_CONFIRMATION",
        "NOT_AUTHENTICATED",
        "INTERNAL_ERROR",
        "PROVIDER_ERROR",
        "VALIDATION_ERROR",
        "SUCCESS",
        "INCOMPLETE",
    ];

    /// A pull in one of these states is finished: nothing more happens without the consumer.
    pub fn is_terminal(status: &str) -> bool {
        matches!(
            status,
            SUCCESS | INCOMPLETE | INTERNAL_ERROR | PROVIDER_ERROR | "VALIDATION_ERROR"
        )
    }

    /// The states in which the consumer must type something.
    pub fn needs_user(status: &str) -> bool {
        matches!(
            status,
            NOT_AUTHENTICATED | IDENTITY_VERIFICATION_OPTIONS | IDENTITY_VERIFICATION
        )
    }
}

/// `WebhookBody.properties.event_type`, plus `MONITORING_EVENTS` from the docs.
pub mod event_type {
    pub const COMPLETE: &str = "COMPLETE";
    pub const POLICIES_AVAILABLE: &str = "POLICIES_AVAILABLE";
    pub const POLICY_AVAILABLE: &str = "POLICY_AVAILABLE";
    pub const AUTH_STATUS: &str = "AUTH_STATUS";
    pub const ERROR: &str = "ERROR";
    pub const MONITORING_RECONNECT: &str = "MONITORING_RECONNECT";
    pub const DATA_UPDATED: &str = "DATA_UPDATED";
    pub const SERVICING_WAITING_FOR_CONSUMER_CONFIRMATION: &str =
        "SERVICING_WAITING_FOR_CONSUMER_CONFIRMATION";
    pub const VALIDATION_COMPLETE: &str = "VALIDATION_COMPLETE";
    pub const MONITORING_EVENTS: &str = "MONITORING_EVENTS";

    /// Every event type the simulator knows; webhooks registered from the config get them all.
    pub const ALL: [&str; 10] = [
        COMPLETE,
        POLICIES_AVAILABLE,
        POLICY_AVAILABLE,
        AUTH_STATUS,
        ERROR,
        MONITORING_RECONNECT,
        DATA_UPDATED,
        SERVICING_WAITING_FOR_CONSUMER_CONFIRMATION,
        VALIDATION_COMPLETE,
        MONITORING_EVENTS,
    ];

    /// The `eventTypes` enum of `POST /webhooks` in the OpenAPI document.
    pub const API_ENUM: [&str; 5] = [
        COMPLETE,
        POLICIES_AVAILABLE,
        POLICY_AVAILABLE,
        AUTH_STATUS,
        VALIDATION_COMPLETE,
    ];
}

/// `Address`: `address_id`, `full_address`, `address_nature` plus the parts of
/// `EnrichmentPropertyData.address`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Address {
    pub address_id: String,
    pub full_address: Option<String>,
    /// MAILING | PHYSICAL | LIENHOLDER | INCIDENT_LOCATION | AGENCY_LOCATION | MORTGAGEE |
    /// ADDITIONAL_INTEREST
    pub address_nature: Option<String>,
    pub country: Option<String>,
    pub number: Option<String>,
    pub street: Option<String>,
    /// Abbreviated street type (`St`, `Ave`, …).
    #[serde(rename = "type")]
    pub street_type: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub sec_unit_type: Option<String>,
    pub sec_unit_num: Option<String>,
    pub zip: Option<String>,
    pub prefix: Option<String>,
}

/// `Pull`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pull {
    pub pull_id: String,
    pub status: String,
    pub account_identifier: Option<String>,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub account_email: Option<String>,
    pub phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub home_phone: Option<String>,
    pub work_phone: Option<String>,
    pub work_phone_extension: Option<String>,
    /// A carrier id (`statefarm`), not a display name.
    pub insurance_provider_name: Option<String>,
    pub insurance_provider_friendly_name: Option<String>,
    pub team_id: String,
    pub widget_id: String,
    /// Typed `string|null` in the schema; the examples (and, by default, the simulator) give an
    /// object. See `CanopySimConfig::pull_meta_data_as_string`.
    pub meta_data: Value,
    pub is_archived: bool,
    pub created_at: String,
    pub public_alias: String,
    pub public_url: String,
    pub encountered_mfa: bool,
    pub no_policies: bool,
    pub no_drivers: bool,
    pub no_documents: bool,
    pub no_claims: bool,
    pub no_loss_events: bool,
    /// PULLING_DATA | SERVICING | DOCUMENT_UPLOAD | DOCUMENT_PARSING | AGENT | MANUAL_ENTRY |
    /// POLICY_LOOKUP | CONTACT_ME
    #[serde(rename = "type")]
    pub pull_type: String,
    pub parent_pull_id: Option<String>,
    /// NONE | COMPLIANT | NOT_COMPLIANT | REVIEW_REQUIRED
    pub policy_check_status: String,
    pub policies: Vec<Policy>,
    pub drivers: Vec<Driver>,
    pub documents: Vec<Document>,
    pub addresses: Vec<Address>,
    pub claims: Vec<Value>,
    pub driving_records: Vec<Value>,
    pub loss_events: Vec<Value>,
    pub agents: Vec<Value>,
    pub answers: Vec<Value>,
    pub skipped_product_types: Option<Vec<String>>,
    pub funnel: Option<Value>,
}

/// `Policy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    pub policy_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub carrier_policy_number: Option<String>,
    /// AUTO | HOMEOWNERS | RENTERS | CONDO | … (57 values).
    pub policy_type: Option<String>,
    pub effective_date: Option<String>,
    pub expiry_date: Option<String>,
    pub renewal_date: Option<String>,
    pub canceled_date: Option<String>,
    pub total_premium_cents: Option<i64>,
    pub paid_in_full: Option<bool>,
    pub amount_paid_cents: Option<i64>,
    pub amount_due_cents: Option<i64>,
    pub total_estimated_annual_premium_cents: Option<i64>,
    pub total_minimum_premium_cents: Option<i64>,
    pub total_deposit_premium_cents: Option<i64>,
    /// A carrier id.
    pub carrier_name: String,
    pub carrier_friendly_name: Option<String>,
    /// ACTIVE | CANCELLED | EXPIRED | UNVERIFIED | PENDING_ACTIVATION | PENDING_CANCELLATION |
    /// RESCINDED | QUOTE
    pub status: Option<String>,
    pub state: Option<String>,
    pub limited_access: bool,
    pub form_of_business: Option<String>,
    pub deductible_cents: Option<i64>,
    pub is_monoline: bool,
    pub policy_check: Option<Value>,
    pub dwellings: Vec<Dwelling>,
    pub locations: Vec<Value>,
    pub vehicles: Vec<Vehicle>,
    pub commercial_named_insureds: Vec<Value>,
    pub named_insureds: Vec<NamedInsured>,
    pub additional_interests: Vec<AdditionalInterest>,
    pub life: Option<Value>,
    pub forms_and_endorsements: Vec<Value>,
    pub is_telematics_enabled: Option<bool>,
    /// MONTHLY | QUARTERLY | SEMIANNUALLY | ANNUALLY
    pub payment_frequency: Option<String>,
    pub last_payment_date: Option<String>,
    pub premium_groups: Vec<Value>,
}

/// `Vehicle`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Vehicle {
    pub vehicle_id: String,
    pub year: Option<i32>,
    pub make: Option<String>,
    pub model: Option<String>,
    pub series: Option<String>,
    pub series2: Option<String>,
    #[serde(rename = "type")]
    pub vehicle_type: Option<String>,
    pub annual_mileage: Option<i64>,
    pub current_mileage: Option<i64>,
    pub vin: Option<String>,
    pub hin: Option<String>,
    pub serial_number: Option<String>,
    /// PERSONAL | COMMUTE | WORK | SCHOOL | PLEASURE | FARM | RIDESHARE | BUSINESS
    pub uses: Option<Vec<String>>,
    pub purchase_date: Option<String>,
    /// OWN | FINANCE | LEASE
    pub ownership_type: Option<String>,
    pub features: Option<Vec<String>>,
    pub is_removed: bool,
    pub lien_holder: Option<String>,
    pub garaging_address: Option<Address>,
    pub lien_holder_address: Option<Address>,
    pub coverages: Vec<VehicleCoverage>,
    pub drivers: Vec<VehicleDriver>,
}

/// `VehicleCoverage`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VehicleCoverage {
    pub vehicle_coverage_id: String,
    pub premium_group_id: Option<String>,
    /// `VehicleCoverageTypes`: BODILY_INJURY_LIABILITY, PROPERTY_DAMAGE_LIABILITY, COLLISION, …
    pub name: String,
    /// The matching label: `Bodily Injury Liability`, …
    pub friendly_name: String,
    pub premium_cents: Option<i64>,
    pub per_person_limit_cents: Option<i64>,
    pub per_person_unlimited: bool,
    pub per_incident_limit_cents: Option<i64>,
    pub per_incident_unlimited: bool,
    pub per_day_limit_cents: Option<i64>,
    pub max_days: Option<i64>,
    pub deductible_cents: Option<i64>,
    pub actual_cash_value: bool,
    pub is_declined: bool,
    pub is_stacked: Option<bool>,
    pub pip_deductible_applicability: Option<String>,
    pub per_mile_premium_tenth_of_cents: Option<i64>,
}

/// `VehicleDriver`: a `Driver` as listed on one vehicle.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VehicleDriver {
    pub driver_id: String,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub drivers_license: Option<String>,
    pub drivers_license_state: Option<String>,
    /// `MM/DD/YYYY`.
    pub date_of_birth_str: Option<String>,
    pub gender: Option<String>,
    pub marital_status: Option<String>,
    pub relationship_to_insured: Option<String>,
    pub age: Option<i64>,
    pub age_on_date: Option<String>,
    pub education: Option<String>,
    pub occupation: Option<String>,
    pub age_licensed: Option<i64>,
    pub is_excluded: bool,
    pub is_primary: Option<bool>,
}

/// `Driver`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Driver {
    pub driver_id: String,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub drivers_license: Option<String>,
    pub drivers_license_state: Option<String>,
    pub date_of_birth_str: Option<String>,
    /// MALE | FEMALE | NONBINARY
    pub gender: Option<String>,
    pub marital_status: Option<String>,
    pub relationship_to_insured: Option<String>,
    pub age: Option<i64>,
    pub age_on_date: Option<String>,
    pub education: Option<String>,
    pub occupation: Option<String>,
    pub age_licensed: Option<i64>,
}

impl Driver {
    /// The same person as listed on a vehicle.
    pub fn on_vehicle(&self, is_primary: bool) -> VehicleDriver {
        VehicleDriver {
            driver_id: self.driver_id.clone(),
            first_name: self.first_name.clone(),
            middle_name: self.middle_name.clone(),
            last_name: self.last_name.clone(),
            drivers_license: self.drivers_license.clone(),
            drivers_license_state: self.drivers_license_state.clone(),
            date_of_birth_str: self.date_of_birth_str.clone(),
            gender: self.gender.clone(),
            marital_status: self.marital_status.clone(),
            relationship_to_insured: self.relationship_to_insured.clone(),
            age: self.age,
            age_on_date: self.age_on_date.clone(),
            education: self.education.clone(),
            occupation: self.occupation.clone(),
            age_licensed: self.age_licensed,
            is_excluded: false,
            is_primary: Some(is_primary),
        }
    }
}

/// `Dwelling`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dwelling {
    pub dwelling_id: String,
    pub address: Address,
    pub coverages: Vec<DwellingCoverage>,
    pub mortgagees: Vec<Mortgagee>,
    /// Deprecated in favour of `mortgagees`; Canopy still fills it with the first mortgagee.
    pub mortgagee_name: Option<String>,
    pub mortgagee_address: Option<Address>,
    pub mortgage_loan_number: Option<String>,
    pub replacement_cost_cents: Option<i64>,
    pub cash_value_cents: Option<i64>,
    pub property_data: Option<Value>,
    /// REPLACEMENT_COST | ACTUAL_CASH_VALUE
    pub loss_settlement_type: Option<String>,
    pub extended_replacement_cost_percent: Option<i64>,
    pub total_replacement_cost_cents: Option<i64>,
    pub is_replacement_cost_cents_derived: bool,
}

/// `DwellingCoverage`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DwellingCoverage {
    pub dwelling_coverage_id: String,
    /// DWELLING, OTHER_STRUCTURES, PERSONAL_PROPERTY, LOSS_OF_USE, PERSONAL_LIABILITY, …
    pub name: String,
    pub friendly_name: String,
    pub premium_cents: Option<i64>,
    pub per_person_limit_cents: Option<i64>,
    pub per_person_unlimited: Option<bool>,
    pub per_incident_limit_cents: Option<i64>,
    /// A decimal string (`"10.000"`), as the schema types it.
    pub per_incident_limit_percent: Option<String>,
    pub per_incident_unlimited: Option<bool>,
    pub per_incident_limit_months: Option<i64>,
    pub deductible_cents: Option<i64>,
    /// A decimal string (`"2.000"`), as the schema types it.
    pub deductible_percent: Option<String>,
    pub is_declined: bool,
}

/// `Mortgagee`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mortgagee {
    pub mortgagee_id: String,
    pub mortgagee_name: Option<String>,
    pub mortgagee_address: Option<Address>,
    /// FIRST | SECOND | THIRD
    pub mortgagee_type: Option<String>,
    pub mortgage_loan_number: Option<String>,
}

/// `NamedInsured`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamedInsured {
    pub named_insured_id: String,
    pub first_name: Option<String>,
    pub middle_name: Option<String>,
    pub last_name: Option<String>,
    pub full_name: Option<String>,
    pub is_primary_named_insured: Option<bool>,
    pub email: Option<String>,
    pub home_phone: Option<String>,
    pub mobile_phone: Option<String>,
    pub work_phone: Option<String>,
    pub work_phone_extension: Option<String>,
}

/// `AdditionalInterest`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdditionalInterest {
    pub additional_interest_id: String,
    pub additional_interest_name: String,
    pub additional_interest_type: Option<String>,
    pub email: Option<String>,
    pub phone_number: Option<String>,
    pub additional_interest_address: Option<Address>,
}

/// `Document`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Document {
    pub document_id: String,
    pub title: String,
    pub date_added: Option<String>,
    /// DECLARATIONS | INSURANCE_ID_CARD | …
    pub document_type: Option<String>,
    pub policy_id: Option<String>,
    /// application/pdf | image/jpeg
    pub mime_type: String,
    /// "The API endpoint URL from which the document can be downloaded":
    /// `{api}/teams/{teamId}/pulls/{pullId}/documents/{documentId}` (answers 302 to a signed URL).
    pub download_url: String,
}

/// `Monitoring`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Monitoring {
    pub monitoring_id: String,
    pub latest_pull_id: String,
    /// ACTIVE | STOPPED
    pub status: String,
    pub next_pull_date: Option<String>,
    /// ISO 8601 duration (`P1M`).
    pub interval: String,
    pub stop_after_date: Option<String>,
}

/// `WebhookBody.properties.monitoring`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookMonitoring {
    pub initial_pull_id: String,
    pub monitoring_id: String,
}

/// `WebhookBody`, plus the top-level `sequence` that `AUTH_STATUS` carries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookBody {
    pub widget_id: String,
    pub team_id: String,
    pub pull_id: String,
    pub status: String,
    /// Always an object in webhooks (`{}` when none was given).
    pub meta_data: Value,
    pub event_type: String,
    pub account_identifier: Option<String>,
    pub is_monitored: bool,
    pub monitoring: Option<WebhookMonitoring>,
    pub data: Value,
    /// Only on `AUTH_STATUS`: goes up by at least one for each authentication state change of
    /// the pull.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

/// One entry of `MonitoringEvent.changes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitoringChange {
    /// POLICY | VEHICLE | DRIVER | VEHICLEDRIVER | VEHICLECOVERAGE | DWELLING |
    /// DWELLINGCOVERAGE | CLAIM | DRIVINGRECORD | BENEFICIARY
    pub schema: String,
    /// CREATE | UPDATE | DELETE
    #[serde(rename = "type")]
    pub change_type: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// `MonitoringEvent`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitoringEvent {
    /// RENEWAL | EXPIRED | CANCELED | NEW_BUSINESS | REINSTATED | ENDORSEMENT | CLAIM_OPENED |
    /// CLAIM_CLOSED | CLAIM_REMOVED | DRIVINGRECORD_ADDED | DRIVINGRECORD_REMOVED
    #[serde(rename = "type")]
    pub event_type: String,
    pub changes: Vec<MonitoringChange>,
    pub documents: Vec<DocumentRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DocumentRef {
    pub document_id: String,
}

/// The answer of `GET /teams/{teamId}/monitorings/{monitoringId}/events`, also the `data` of a
/// `MONITORING_EVENTS` webhook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitoringEvents {
    pub previous_pull_id: Option<String>,
    pub latest_pull_id: String,
    pub events: Vec<MonitoringEvent>,
}

/// One webhook as `GET /teams/{teamId}/webhooks` lists it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Webhook {
    /// The team the webhook belongs to: not part of Canopy's answer, which lists only the
    /// calling team's webhooks.
    #[serde(skip)]
    pub team_id: String,
    pub webhook_id: String,
    pub signing_secret: String,
    pub url: String,
    pub is_sandbox: bool,
    pub is_active: bool,
    pub event_types: Vec<String>,
}

/// A carrier as `GET /carriers` lists it (the response schema of `GET /carriers/{carrierId}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Carrier {
    #[serde(rename = "carrier_id")]
    pub carrier_id: String,
    pub name: String,
    pub username_field_placeholder: Option<String>,
    pub third_field_placeholder: Option<String>,
    pub color: Option<String>,
    pub homepage_url: Option<String>,
    pub create_account_url: Option<String>,
    pub reset_password_url: Option<String>,
    pub disable_password_field: bool,
    pub servicing_actions: Vec<String>,
    pub products: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_are_serialised_and_renames_hold() {
        let v = serde_json::to_value(Vehicle::default()).unwrap();
        assert!(v.get("type").is_some() && v["lien_holder"].is_null());
        let a = serde_json::to_value(Address::default()).unwrap();
        assert!(a.get("type").is_some() && a.get("street_type").is_none());
        let c = serde_json::to_value(Carrier::default()).unwrap();
        assert!(c.get("carrier_id").is_some() && c.get("usernameFieldPlaceholder").is_some());
        let w = serde_json::to_value(WebhookBody::default()).unwrap();
        assert!(w.get("sequence").is_none() && w["monitoring"].is_null());
    }

    #[test]
    fn reads_the_openapi_example_pull() {
        let raw = r#"{"pull_id":"59ced597-b48f-49e3-9756-799e4c6f79a0","status":"SUCCESS",
            "meta_data":{},"deleted_at":null,"policies":[{"policy_id":"x","carrier_name":"statefarm",
            "vehicles":[{"vehicle_id":"v","year":2018,"GaragingAddress":{}}]}]}"#;
        let p: Pull = serde_json::from_str(raw).unwrap();
        assert_eq!(p.policies[0].vehicles[0].year, Some(2018));
    }
}
