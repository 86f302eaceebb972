//! Policy and Account. The proto mirrors core field for field; the two enums that carry a
//! vendor string in core (`PolicyType::Other`, `CoverageCode::Other`) become an enum value plus
//! a sibling string field, and `AppliesTo` becomes an optional `property_id`.

use coverwatch_core::policy::{
    Account, Address, AppliesTo, Carrier, Coverage, CoverageCode, DocumentInfo, Dwelling, Insured,
    InterestedParty, Limit, Policy, PolicyType, Vehicle,
};

use super::enums::{enum_value, to_i32};
use super::{FieldError, all, each, optional_datetime, optional_timestamp, required};
use crate::v1;

fn nested<P, C>(
    value: Option<P>,
    field: &str,
    convert: impl Fn(P) -> Result<C, FieldError>,
) -> Result<C, FieldError> {
    convert(required(value, field)?).map_err(|error| error.within(field))
}

// ---- the enums with an `Other(String)` --------------------------------------------------

pub(crate) fn policy_type_to_proto(value: PolicyType) -> (v1::PolicyType, Option<String>) {
    match value {
        PolicyType::Auto => (v1::PolicyType::Auto, None),
        PolicyType::Motorcycle => (v1::PolicyType::Motorcycle, None),
        PolicyType::Homeowners => (v1::PolicyType::Homeowners, None),
        PolicyType::Condo => (v1::PolicyType::Condo, None),
        PolicyType::Renters => (v1::PolicyType::Renters, None),
        PolicyType::Landlord => (v1::PolicyType::Landlord, None),
        PolicyType::Flood => (v1::PolicyType::Flood, None),
        PolicyType::Umbrella => (v1::PolicyType::Umbrella, None),
        PolicyType::Other(name) => (v1::PolicyType::Other, Some(name)),
    }
}

/// The core type of a proto type that names one; `None` for UNSPECIFIED and OTHER, which
/// carry no name of their own.
pub(crate) fn named_policy_type(value: v1::PolicyType) -> Option<PolicyType> {
    Some(match value {
        v1::PolicyType::Auto => PolicyType::Auto,
        v1::PolicyType::Motorcycle => PolicyType::Motorcycle,
        v1::PolicyType::Homeowners => PolicyType::Homeowners,
        v1::PolicyType::Condo => PolicyType::Condo,
        v1::PolicyType::Renters => PolicyType::Renters,
        v1::PolicyType::Landlord => PolicyType::Landlord,
        v1::PolicyType::Flood => PolicyType::Flood,
        v1::PolicyType::Umbrella => PolicyType::Umbrella,
        v1::PolicyType::Unspecified | v1::PolicyType::Other => return None,
    })
}

fn policy_type_from_proto(value: i32, other: Option<String>) -> Result<PolicyType, FieldError> {
    const FIELD: &str = "policy_type";
    let proto = v1::PolicyType::try_from(value)
        .map_err(|_| FieldError::new(FIELD, format!("unknown PolicyType value {value}")))?;
    if let Some(named) = named_policy_type(proto) {
        return Ok(named);
    }
    Ok(match proto {
        v1::PolicyType::Other => PolicyType::Other(other.ok_or_else(|| {
            FieldError::new(
                "other_policy_type",
                "is required when policy_type is POLICY_TYPE_OTHER",
            )
        })?),
        _ => {
            return Err(FieldError::new(
                FIELD,
                "is required (got POLICY_TYPE_UNSPECIFIED)",
            ));
        }
    })
}

pub(crate) fn coverage_code_to_proto(value: CoverageCode) -> (v1::CoverageCode, Option<String>) {
    use v1::CoverageCode as P;
    let proto = match value {
        CoverageCode::BodilyInjury => P::BodilyInjury,
        CoverageCode::PropertyDamage => P::PropertyDamage,
        CoverageCode::CombinedSingleLimit => P::CombinedSingleLimit,
        CoverageCode::UninsuredMotoristBodilyInjury => P::UninsuredMotoristBodilyInjury,
        CoverageCode::UninsuredMotoristPropertyDamage => P::UninsuredMotoristPropertyDamage,
        CoverageCode::UnderinsuredMotoristBodilyInjury => P::UnderinsuredMotoristBodilyInjury,
        CoverageCode::UnderinsuredMotoristPropertyDamage => P::UnderinsuredMotoristPropertyDamage,
        CoverageCode::Comprehensive => P::Comprehensive,
        CoverageCode::Collision => P::Collision,
        CoverageCode::MedicalPayments => P::MedicalPayments,
        CoverageCode::PersonalInjuryProtection => P::PersonalInjuryProtection,
        CoverageCode::RentalReimbursement => P::RentalReimbursement,
        CoverageCode::Roadside => P::Roadside,
        CoverageCode::Dwelling => P::Dwelling,
        CoverageCode::OtherStructures => P::OtherStructures,
        CoverageCode::PersonalProperty => P::PersonalProperty,
        CoverageCode::LossOfUse => P::LossOfUse,
        CoverageCode::PersonalLiability => P::PersonalLiability,
        CoverageCode::MedicalPaymentsToOthers => P::MedicalPaymentsToOthers,
        CoverageCode::AllPerils => P::AllPerils,
        CoverageCode::Other(code) => return (P::Other, Some(code)),
    };
    (proto, None)
}

pub(crate) fn coverage_code_from_proto(
    value: i32,
    other: Option<String>,
) -> Result<CoverageCode, FieldError> {
    use v1::CoverageCode as P;
    const FIELD: &str = "code";
    let proto = P::try_from(value)
        .map_err(|_| FieldError::new(FIELD, format!("unknown CoverageCode value {value}")))?;
    Ok(match proto {
        P::Unspecified => {
            return Err(FieldError::new(
                FIELD,
                "is required (got COVERAGE_CODE_UNSPECIFIED)",
            ));
        }
        P::BodilyInjury => CoverageCode::BodilyInjury,
        P::PropertyDamage => CoverageCode::PropertyDamage,
        P::CombinedSingleLimit => CoverageCode::CombinedSingleLimit,
        P::UninsuredMotoristBodilyInjury => CoverageCode::UninsuredMotoristBodilyInjury,
        P::UninsuredMotoristPropertyDamage => CoverageCode::UninsuredMotoristPropertyDamage,
        P::UnderinsuredMotoristBodilyInjury => CoverageCode::UnderinsuredMotoristBodilyInjury,
        P::UnderinsuredMotoristPropertyDamage => CoverageCode::UnderinsuredMotoristPropertyDamage,
        P::Comprehensive => CoverageCode::Comprehensive,
        P::Collision => CoverageCode::Collision,
        P::MedicalPayments => CoverageCode::MedicalPayments,
        P::PersonalInjuryProtection => CoverageCode::PersonalInjuryProtection,
        P::RentalReimbursement => CoverageCode::RentalReimbursement,
        P::Roadside => CoverageCode::Roadside,
        P::Dwelling => CoverageCode::Dwelling,
        P::OtherStructures => CoverageCode::OtherStructures,
        P::PersonalProperty => CoverageCode::PersonalProperty,
        P::LossOfUse => CoverageCode::LossOfUse,
        P::PersonalLiability => CoverageCode::PersonalLiability,
        P::MedicalPaymentsToOthers => CoverageCode::MedicalPaymentsToOthers,
        P::AllPerils => CoverageCode::AllPerils,
        P::Other => CoverageCode::Other(other.ok_or_else(|| {
            FieldError::new("other_code", "is required when code is COVERAGE_CODE_OTHER")
        })?),
    })
}

fn property_id(applies_to: AppliesTo) -> Option<String> {
    match applies_to {
        AppliesTo::AllProperties => None,
        AppliesTo::Property(id) => Some(id),
    }
}

fn applies_to(property_id: Option<String>) -> AppliesTo {
    property_id.map_or(AppliesTo::AllProperties, AppliesTo::Property)
}

// ---- core → proto ------------------------------------------------------------------------

impl From<Address> for v1::Address {
    fn from(value: Address) -> Self {
        v1::Address {
            line1: value.line1,
            line2: value.line2,
            city: value.city,
            state: value.state,
            postal_code: value.postal_code,
            country: value.country,
        }
    }
}

impl From<Carrier> for v1::Carrier {
    fn from(value: Carrier) -> Self {
        v1::Carrier {
            id: value.id,
            name: value.name,
        }
    }
}

impl From<Coverage> for v1::Coverage {
    fn from(value: Coverage) -> Self {
        let (code, other_code) = coverage_code_to_proto(value.code);
        v1::Coverage {
            code: code.into(),
            other_code,
            vendor_code: value.vendor_code,
            label: value.label,
            limit_per_person_cents: value.limit_per_person.and_then(Limit::cents),
            limit_per_accident_cents: value.limit_per_accident.and_then(Limit::cents),
            deductible_cents: value.deductible_cents,
            premium_cents: value.premium_cents,
            property_id: property_id(value.applies_to),
            declined: value.declined,
            limit_per_person_unlimited: value.limit_per_person.is_some_and(Limit::is_unlimited),
            limit_per_accident_unlimited: value.limit_per_accident.is_some_and(Limit::is_unlimited),
            limit_per_day_cents: value.limit_per_day_cents,
            max_days: value.max_days,
            inferred: value.inferred,
        }
    }
}

impl From<Vehicle> for v1::Vehicle {
    fn from(value: Vehicle) -> Self {
        v1::Vehicle {
            id: value.id,
            vin: value.vin,
            year: value.year,
            make: value.make,
            model: value.model,
            body_style: value.body_style,
            garaging_address: value.garaging_address.map(Into::into),
        }
    }
}

impl From<Dwelling> for v1::Dwelling {
    fn from(value: Dwelling) -> Self {
        v1::Dwelling {
            id: value.id,
            address: value.address.map(Into::into),
            replacement_cost_cents: value.replacement_cost_cents,
        }
    }
}

impl From<Insured> for v1::Insured {
    fn from(value: Insured) -> Self {
        v1::Insured {
            first_name: value.first_name,
            last_name: value.last_name,
            full_name: value.full_name,
            role: to_i32::<v1::InsuredRole>(value.role),
            license_masked: value.license_masked,
            license_state: value.license_state,
            property_id: property_id(value.applies_to),
        }
    }
}

impl From<InterestedParty> for v1::InterestedParty {
    fn from(value: InterestedParty) -> Self {
        v1::InterestedParty {
            kind: to_i32::<v1::PartyKind>(value.kind),
            name: value.name,
            address: value.address.map(Into::into),
            loan_number: value.loan_number,
            property_id: property_id(value.applies_to),
        }
    }
}

impl From<DocumentInfo> for v1::DocumentInfo {
    fn from(value: DocumentInfo) -> Self {
        v1::DocumentInfo {
            id: value.id,
            name: value.name,
            kinds: value.kinds,
            source: value.source,
            created_at: optional_timestamp(value.created_at),
        }
    }
}

impl From<Policy> for v1::Policy {
    fn from(value: Policy) -> Self {
        let (policy_type, other_policy_type) = policy_type_to_proto(value.policy_type);
        v1::Policy {
            external_id: value.external_id,
            policy_type: policy_type.into(),
            other_policy_type,
            carrier: Some(value.carrier.into()),
            policy_number: value.policy_number,
            status: to_i32::<v1::PolicyStatus>(value.status),
            effective_date: optional_timestamp(value.effective_date),
            expiration_date: optional_timestamp(value.expiration_date),
            cancelled_date: optional_timestamp(value.cancelled_date),
            premium_cents: value.premium_cents,
            address: value.address.map(Into::into),
            vehicles: all(value.vehicles),
            dwellings: all(value.dwellings),
            coverages: all(value.coverages),
            insureds: all(value.insureds),
            interested_parties: all(value.interested_parties),
            documents: all(value.documents),
        }
    }
}

impl From<&Policy> for v1::Policy {
    fn from(value: &Policy) -> Self {
        value.clone().into()
    }
}

impl From<Account> for v1::Account {
    fn from(value: Account) -> Self {
        v1::Account {
            external_id: value.external_id,
            carrier: Some(value.carrier.into()),
            first_name: value.first_name,
            last_name: value.last_name,
            email: value.email,
            phone: value.phone,
            connection: to_i32::<v1::ConnectionStatus>(value.connection),
            policy_ids: value.policy_ids,
            refreshed_at: optional_timestamp(value.refreshed_at),
        }
    }
}

impl From<&Account> for v1::Account {
    fn from(value: &Account) -> Self {
        value.clone().into()
    }
}

// ---- proto → core (for Rust callers and tests) -------------------------------------------

impl From<v1::Address> for Address {
    fn from(value: v1::Address) -> Self {
        Address {
            line1: value.line1,
            line2: value.line2,
            city: value.city,
            state: value.state,
            postal_code: value.postal_code,
            country: value.country,
        }
    }
}

impl From<v1::Carrier> for Carrier {
    fn from(value: v1::Carrier) -> Self {
        Carrier {
            id: value.id,
            name: value.name,
        }
    }
}

/// A limit is an amount or unlimited, never both.
fn limit_from_proto(
    field: &'static str,
    cents: Option<i64>,
    unlimited: bool,
) -> Result<Option<Limit>, FieldError> {
    match (cents, unlimited) {
        (Some(_), true) => Err(FieldError::new(
            field,
            "an amount and unlimited at once; send one of them",
        )),
        (Some(cents), false) => Ok(Some(Limit::Cents(cents))),
        (None, true) => Ok(Some(Limit::Unlimited)),
        (None, false) => Ok(None),
    }
}

impl TryFrom<v1::Coverage> for Coverage {
    type Error = FieldError;

    fn try_from(value: v1::Coverage) -> Result<Self, FieldError> {
        Ok(Coverage {
            code: coverage_code_from_proto(value.code, value.other_code)?,
            vendor_code: value.vendor_code,
            label: value.label,
            limit_per_person: limit_from_proto(
                "limit_per_person_cents",
                value.limit_per_person_cents,
                value.limit_per_person_unlimited,
            )?,
            limit_per_accident: limit_from_proto(
                "limit_per_accident_cents",
                value.limit_per_accident_cents,
                value.limit_per_accident_unlimited,
            )?,
            limit_per_day_cents: value.limit_per_day_cents,
            max_days: value.max_days,
            deductible_cents: value.deductible_cents,
            premium_cents: value.premium_cents,
            applies_to: applies_to(value.property_id),
            declined: value.declined,
            inferred: value.inferred,
        })
    }
}

impl From<v1::Vehicle> for Vehicle {
    fn from(value: v1::Vehicle) -> Self {
        Vehicle {
            id: value.id,
            vin: value.vin,
            year: value.year,
            make: value.make,
            model: value.model,
            body_style: value.body_style,
            garaging_address: value.garaging_address.map(Into::into),
        }
    }
}

impl From<v1::Dwelling> for Dwelling {
    fn from(value: v1::Dwelling) -> Self {
        Dwelling {
            id: value.id,
            address: value.address.map(Into::into),
            replacement_cost_cents: value.replacement_cost_cents,
        }
    }
}

impl TryFrom<v1::Insured> for Insured {
    type Error = FieldError;

    fn try_from(value: v1::Insured) -> Result<Self, FieldError> {
        Ok(Insured {
            first_name: value.first_name,
            last_name: value.last_name,
            full_name: value.full_name,
            role: enum_value::<v1::InsuredRole>(value.role, "role")?,
            license_masked: value.license_masked,
            license_state: value.license_state,
            applies_to: applies_to(value.property_id),
        })
    }
}

impl TryFrom<v1::InterestedParty> for InterestedParty {
    type Error = FieldError;

    fn try_from(value: v1::InterestedParty) -> Result<Self, FieldError> {
        Ok(InterestedParty {
            kind: enum_value::<v1::PartyKind>(value.kind, "kind")?,
            name: value.name,
            address: value.address.map(Into::into),
            loan_number: value.loan_number,
            applies_to: applies_to(value.property_id),
        })
    }
}

impl TryFrom<v1::DocumentInfo> for DocumentInfo {
    type Error = FieldError;

    fn try_from(value: v1::DocumentInfo) -> Result<Self, FieldError> {
        Ok(DocumentInfo {
            id: value.id,
            name: value.name,
            kinds: value.kinds,
            source: value.source,
            created_at: optional_datetime(value.created_at.as_ref(), "created_at")?,
        })
    }
}

impl TryFrom<v1::Policy> for Policy {
    type Error = FieldError;

    fn try_from(value: v1::Policy) -> Result<Self, FieldError> {
        Ok(Policy {
            external_id: value.external_id,
            policy_type: policy_type_from_proto(value.policy_type, value.other_policy_type)?,
            carrier: nested(value.carrier, "carrier", |carrier| Ok(carrier.into()))?,
            policy_number: value.policy_number,
            status: enum_value::<v1::PolicyStatus>(value.status, "status")?,
            effective_date: optional_datetime(value.effective_date.as_ref(), "effective_date")?,
            expiration_date: optional_datetime(value.expiration_date.as_ref(), "expiration_date")?,
            cancelled_date: optional_datetime(value.cancelled_date.as_ref(), "cancelled_date")?,
            premium_cents: value.premium_cents,
            address: value.address.map(Into::into),
            vehicles: value.vehicles.into_iter().map(Into::into).collect(),
            dwellings: value.dwellings.into_iter().map(Into::into).collect(),
            coverages: each(value.coverages, "coverages", Coverage::try_from)?,
            insureds: each(value.insureds, "insureds", Insured::try_from)?,
            interested_parties: each(
                value.interested_parties,
                "interested_parties",
                InterestedParty::try_from,
            )?,
            documents: each(value.documents, "documents", DocumentInfo::try_from)?,
        })
    }
}

impl TryFrom<v1::Account> for Account {
    type Error = FieldError;

    fn try_from(value: v1::Account) -> Result<Self, FieldError> {
        Ok(Account {
            external_id: value.external_id,
            carrier: nested(value.carrier, "carrier", |carrier| Ok(carrier.into()))?,
            first_name: value.first_name,
            last_name: value.last_name,
            email: value.email,
            phone: value.phone,
            connection: enum_value::<v1::ConnectionStatus>(value.connection, "connection")?,
            policy_ids: value.policy_ids,
            refreshed_at: optional_datetime(value.refreshed_at.as_ref(), "refreshed_at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use coverwatch_core::policy::{ConnectionStatus, InsuredRole, PartyKind, PolicyStatus};

    use super::*;

    fn address(city: &str) -> Address {
        Address {
            line1: Some("1 Main St".into()),
            line2: None,
            city: Some(city.into()),
            state: Some("CA".into()),
            postal_code: Some("94105".into()),
            country: Some("US".into()),
        }
    }

    fn coverage(code: CoverageCode, applies_to: AppliesTo) -> Coverage {
        Coverage {
            label: Some("Bodily injury".into()),
            limit_per_person: Some(Limit::Cents(10_000_000)),
            limit_per_accident: Some(Limit::Cents(30_000_000)),
            premium_cents: Some(12_345),
            applies_to,
            ..Coverage::new(code, "BI")
        }
    }

    const ALL_CODES: [CoverageCode; 20] = [
        CoverageCode::BodilyInjury,
        CoverageCode::PropertyDamage,
        CoverageCode::CombinedSingleLimit,
        CoverageCode::UninsuredMotoristBodilyInjury,
        CoverageCode::UninsuredMotoristPropertyDamage,
        CoverageCode::UnderinsuredMotoristBodilyInjury,
        CoverageCode::UnderinsuredMotoristPropertyDamage,
        CoverageCode::Comprehensive,
        CoverageCode::Collision,
        CoverageCode::MedicalPayments,
        CoverageCode::PersonalInjuryProtection,
        CoverageCode::RentalReimbursement,
        CoverageCode::Roadside,
        CoverageCode::Dwelling,
        CoverageCode::OtherStructures,
        CoverageCode::PersonalProperty,
        CoverageCode::LossOfUse,
        CoverageCode::PersonalLiability,
        CoverageCode::MedicalPaymentsToOthers,
        CoverageCode::AllPerils,
    ];

    pub(crate) fn sample_policy() -> Policy {
        let mut coverages: Vec<Coverage> = ALL_CODES
            .iter()
            .cloned()
            .map(|code| coverage(code, AppliesTo::AllProperties))
            .collect();
        coverages.push(Coverage {
            declined: true,
            deductible_cents: Some(50_000),
            ..coverage(
                CoverageCode::Other("GAP".into()),
                AppliesTo::Property("veh_1".into()),
            )
        });
        coverages.push(Coverage {
            limit_per_person: Some(Limit::Unlimited),
            limit_per_accident: Some(Limit::Unlimited),
            ..coverage(
                CoverageCode::PersonalInjuryProtection,
                AppliesTo::Property("veh_2".into()),
            )
        });
        coverages.push(Coverage {
            limit_per_person: None,
            limit_per_accident: None,
            limit_per_day_cents: Some(3_000),
            max_days: Some(30),
            ..coverage(CoverageCode::RentalReimbursement, AppliesTo::AllProperties)
        });
        coverages.push(Coverage {
            limit_per_person: None,
            inferred: true,
            ..coverage(CoverageCode::CombinedSingleLimit, AppliesTo::AllProperties)
        });
        Policy {
            external_id: "pol_123".into(),
            policy_type: PolicyType::Auto,
            carrier: Carrier {
                id: "state-farm".into(),
                name: Some("State Farm".into()),
            },
            policy_number: Some("SF-1".into()),
            status: PolicyStatus::PendingCancellation,
            effective_date: DateTime::from_timestamp(1_700_000_000, 0),
            expiration_date: DateTime::from_timestamp(1_715_000_000, 0),
            cancelled_date: None,
            premium_cents: Some(98_765),
            address: Some(address("San Francisco")),
            vehicles: vec![
                Vehicle {
                    id: "veh_1".into(),
                    vin: Some("1HGCM82633A004352".into()),
                    year: Some(2021),
                    make: Some("Honda".into()),
                    model: Some("Accord".into()),
                    body_style: None,
                    garaging_address: Some(address("Oakland")),
                },
                Vehicle {
                    id: "veh_2".into(),
                    vin: None,
                    year: None,
                    make: None,
                    model: None,
                    body_style: Some("SUV".into()),
                    garaging_address: None,
                },
            ],
            dwellings: vec![Dwelling {
                id: "dw_1".into(),
                address: Some(Address::default()),
                replacement_cost_cents: Some(45_000_000),
            }],
            coverages,
            insureds: [
                InsuredRole::Primary,
                InsuredRole::Secondary,
                InsuredRole::NamedInsured,
                InsuredRole::Driver,
                InsuredRole::ExcludedDriver,
            ]
            .into_iter()
            .map(|role| Insured {
                first_name: Some("Ada".into()),
                last_name: Some("Lovelace".into()),
                full_name: None,
                role,
                license_masked: Some("*****1234".into()),
                license_state: Some("CA".into()),
                applies_to: if role == InsuredRole::Driver {
                    AppliesTo::Property("veh_2".into())
                } else {
                    AppliesTo::AllProperties
                },
            })
            .collect(),
            interested_parties: [
                PartyKind::Lienholder,
                PartyKind::Lessor,
                PartyKind::Mortgagee,
                PartyKind::AdditionalInterest,
            ]
            .into_iter()
            .map(|kind| InterestedParty {
                kind,
                name: Some("Acme Lending".into()),
                address: Some(address("Atlanta")),
                loan_number: Some("L-9".into()),
                applies_to: AppliesTo::Property("veh_1".into()),
            })
            .collect(),
            documents: vec![DocumentInfo {
                id: Some("doc_1".into()),
                name: Some("Declaration Page".into()),
                kinds: vec!["declaration_page".into(), "id_card".into()],
                source: Some("carrier".into()),
                created_at: DateTime::from_timestamp(1_700_000_000, 7),
            }],
        }
    }

    #[test]
    fn policies_round_trip_with_every_coverage_code() {
        let policy = sample_policy();
        let proto = v1::Policy::from(&policy);
        assert_eq!(proto.policy_type, v1::PolicyType::Auto as i32);
        assert_eq!(proto.other_policy_type, None);
        let gap = &proto.coverages[ALL_CODES.len()];
        assert_eq!(gap.code, v1::CoverageCode::Other as i32);
        assert_eq!(gap.other_code.as_deref(), Some("GAP"));
        assert_eq!(gap.property_id.as_deref(), Some("veh_1"));
        assert_eq!(proto.coverages[0].property_id, None);
        let [pip, rental, csl] = &proto.coverages[ALL_CODES.len() + 1..] else {
            panic!("three more coverages");
        };
        assert!(pip.limit_per_person_unlimited && pip.limit_per_accident_unlimited);
        assert_eq!(
            (pip.limit_per_person_cents, pip.limit_per_accident_cents),
            (None, None)
        );
        assert_eq!(
            (rental.limit_per_day_cents, rental.max_days),
            (Some(3_000), Some(30))
        );
        assert!(!rental.limit_per_person_unlimited && rental.limit_per_person_cents.is_none());
        assert!(csl.inferred && !pip.inferred);
        assert_eq!(Policy::try_from(proto), Ok(policy));
    }

    #[test]
    fn a_limit_sent_both_as_an_amount_and_unlimited_is_refused() {
        let mut proto = v1::Policy::from(&sample_policy());
        proto.coverages[2].limit_per_accident_unlimited = true;
        let error = Policy::try_from(proto).unwrap_err();
        assert_eq!(error.field, "coverages[2].limit_per_accident_cents");
        assert!(error.message.contains("unlimited"), "{error:?}");
    }

    #[test]
    fn coverage_codes_pair_one_to_one() {
        let mut seen = Vec::new();
        for code in ALL_CODES {
            let (proto, other) = coverage_code_to_proto(code.clone());
            assert_eq!(other, None);
            assert!(!seen.contains(&proto), "{proto:?} is paired twice");
            seen.push(proto);
            assert_eq!(coverage_code_from_proto(proto.into(), None), Ok(code));
        }
        // Every proto value but UNSPECIFIED and OTHER is one of the 19 common codes.
        let known = (1..)
            .take_while(|&v| v1::CoverageCode::try_from(v).is_ok())
            .count();
        assert_eq!(known, ALL_CODES.len() + 1);
        assert_eq!(seen.len(), ALL_CODES.len());
        assert_eq!(
            coverage_code_from_proto(v1::CoverageCode::Other.into(), None),
            Err(FieldError::new(
                "other_code",
                "is required when code is COVERAGE_CODE_OTHER"
            ))
        );
        assert_eq!(coverage_code_from_proto(0, None).unwrap_err().field, "code");
        assert_eq!(
            coverage_code_from_proto(999, None).unwrap_err().field,
            "code"
        );
    }

    #[test]
    fn every_policy_type_round_trips() {
        let types = [
            PolicyType::Auto,
            PolicyType::Motorcycle,
            PolicyType::Homeowners,
            PolicyType::Condo,
            PolicyType::Renters,
            PolicyType::Landlord,
            PolicyType::Flood,
            PolicyType::Umbrella,
            PolicyType::Other("pet".into()),
        ];
        let known = (1..)
            .take_while(|&v| v1::PolicyType::try_from(v).is_ok())
            .count();
        assert_eq!(known, types.len());
        for policy_type in types {
            let policy = Policy {
                policy_type: policy_type.clone(),
                ..sample_policy()
            };
            let back = Policy::try_from(v1::Policy::from(&policy)).unwrap();
            assert_eq!(back.policy_type, policy_type);
        }
        assert_eq!(
            policy_type_from_proto(v1::PolicyType::Other.into(), None)
                .unwrap_err()
                .field,
            "other_policy_type"
        );
    }

    #[test]
    fn malformed_policies_name_the_nested_field() {
        let mut proto = v1::Policy::from(&sample_policy());
        proto.coverages[3].code = 0;
        assert_eq!(
            Policy::try_from(proto.clone()).unwrap_err().field,
            "coverages[3].code"
        );
        proto.coverages[3].code = v1::CoverageCode::Collision.into();
        proto.interested_parties[1].kind = 77;
        assert_eq!(
            Policy::try_from(proto.clone()).unwrap_err().to_string(),
            "interested_parties[1].kind: unknown PartyKind value 77"
        );
        proto.interested_parties[1].kind = v1::PartyKind::Lessor.into();
        proto.carrier = None;
        assert_eq!(
            Policy::try_from(proto.clone()).unwrap_err().field,
            "carrier"
        );
        proto.carrier = Some(v1::Carrier::default());
        proto.documents[0].created_at = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: -5,
        });
        assert_eq!(
            Policy::try_from(proto).unwrap_err().field,
            "documents[0].created_at"
        );
    }

    #[test]
    fn accounts_round_trip() {
        for connection in [
            ConnectionStatus::Active,
            ConnectionStatus::Disconnected,
            ConnectionStatus::Unknown,
        ] {
            let account = Account {
                external_id: "acc_1".into(),
                carrier: Carrier {
                    id: "progressive".into(),
                    name: None,
                },
                first_name: Some("Ada".into()),
                last_name: None,
                email: Some("ada@example.com".into()),
                phone: None,
                connection,
                policy_ids: vec!["pol_1".into(), "pol_2".into()],
                refreshed_at: DateTime::from_timestamp(1_700_000_000, 1),
            };
            let proto = v1::Account::from(&account);
            assert_eq!(Account::try_from(proto), Ok(account));
        }
        let proto = v1::Account {
            carrier: Some(v1::Carrier::default()),
            connection: 0,
            ..v1::Account::default()
        };
        assert_eq!(Account::try_from(proto).unwrap_err().field, "connection");
    }
}
