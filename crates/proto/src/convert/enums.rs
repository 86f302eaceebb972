//! One-to-one enum pairs. Each pair is written once, as a list; the matches generated from it
//! are exhaustive both ways, so a variant added on either side fails to compile until it is
//! paired here.

use coverwatch_core::event::{
    AuthStatus, ChangeKind, DescopeReason, FailureReason, ReconnectReason, RuleResult,
};
use coverwatch_core::policy::{ConnectionStatus, InsuredRole, PartyKind, PolicyStatus, PolicyTerm};
use coverwatch_core::requirements::OverallStatus;
use coverwatch_core::{EventKind, LinkState, ProviderId};

use super::{FieldError, indexed};
use crate::v1;

/// A generated proto enum that pairs one-to-one with a core enum, apart from its
/// `*_UNSPECIFIED` value.
pub trait ProtoEnum: Copy + TryFrom<i32> + From<Self::Core> {
    type Core: Copy;
    /// The proto name of the enum, for messages (`Provider`).
    const TYPE_NAME: &'static str;

    /// `None` for the `*_UNSPECIFIED` value.
    fn to_core(self) -> Option<Self::Core>;

    /// The proto name of the value (`PROVIDER_AXLE`).
    fn value_name(self) -> &'static str;
}

/// A required enum field: unknown values and `*_UNSPECIFIED` are refused.
pub(crate) fn enum_value<E: ProtoEnum>(value: i32, field: &str) -> Result<E::Core, FieldError> {
    let proto = known::<E>(value, field)?;
    proto
        .to_core()
        .ok_or_else(|| FieldError::new(field, format!("is required (got {})", proto.value_name())))
}

/// An optional enum field: `*_UNSPECIFIED` is `None`, unknown values are refused.
pub(crate) fn optional_enum_value<E: ProtoEnum>(
    value: i32,
    field: &str,
) -> Result<Option<E::Core>, FieldError> {
    Ok(known::<E>(value, field)?.to_core())
}

/// A repeated enum field; each element is required, and errors name `field[i]`.
pub(crate) fn enum_values<E: ProtoEnum>(
    values: &[i32],
    field: &str,
) -> Result<Vec<E::Core>, FieldError> {
    values
        .iter()
        .enumerate()
        .map(|(index, &value)| enum_value::<E>(value, &indexed(field, index)))
        .collect()
}

/// The proto value of a core enum, as the `i32` a generated message field holds.
pub(crate) fn to_i32<E: ProtoEnum + Into<i32>>(value: E::Core) -> i32 {
    E::from(value).into()
}

fn known<E: ProtoEnum>(value: i32, field: &str) -> Result<E, FieldError> {
    E::try_from(value)
        .map_err(|_| FieldError::new(field, format!("unknown {} value {value}", E::TYPE_NAME)))
}

macro_rules! enum_pair {
    ($proto:ident <=> $core:ident { $($p:ident <=> $c:ident),+ $(,)? }) => {
        impl From<$core> for v1::$proto {
            fn from(value: $core) -> Self {
                match value {
                    $($core::$c => v1::$proto::$p,)+
                }
            }
        }

        impl ProtoEnum for v1::$proto {
            type Core = $core;
            const TYPE_NAME: &'static str = stringify!($proto);

            fn to_core(self) -> Option<$core> {
                match self {
                    v1::$proto::Unspecified => None,
                    $(v1::$proto::$p => Some($core::$c),)+
                }
            }

            fn value_name(self) -> &'static str {
                self.as_str_name()
            }
        }
    };
}

/// The provider a proto `Provider` value names (`PROVIDER_AXLE` is `axle`); `None` for
/// `PROVIDER_UNSPECIFIED`. The enum is only a convenience for the vendors it lists: the pairing
/// goes by name, so a vendor's enum value needs no code here.
pub fn provider_of(value: v1::Provider) -> Option<ProviderId> {
    if value == v1::Provider::Unspecified {
        return None;
    }
    let name = value.as_str_name().strip_prefix("PROVIDER_")?;
    ProviderId::new(name.to_ascii_lowercase()).ok()
}

impl From<&ProviderId> for v1::Provider {
    /// `PROVIDER_UNSPECIFIED` for a vendor the enum does not list (its name is in the string
    /// field next to the enum).
    fn from(id: &ProviderId) -> Self {
        let name = format!("PROVIDER_{}", id.as_str().to_ascii_uppercase());
        v1::Provider::from_str_name(&name).unwrap_or(v1::Provider::Unspecified)
    }
}

impl From<ProviderId> for v1::Provider {
    fn from(id: ProviderId) -> Self {
        v1::Provider::from(&id)
    }
}

/// A proto `Provider` field's `i32`.
pub(crate) fn provider_i32(id: &ProviderId) -> i32 {
    v1::Provider::from(id).into()
}

/// A required provider enum field: unknown values and `PROVIDER_UNSPECIFIED` are refused.
pub(crate) fn provider_value(value: i32, field: &str) -> Result<ProviderId, FieldError> {
    optional_provider_value(value, field)?.ok_or_else(|| {
        FieldError::new(
            field,
            format!(
                "is required (got {})",
                v1::Provider::Unspecified.as_str_name()
            ),
        )
    })
}

/// The provider of a message read back from the wire (a `Link`, an `Event`): its
/// `provider_id` when set, which must then agree with the enum; else the enum, required (a
/// message from a server older than the string field).
pub(crate) fn provider_of_message(value: i32, id: &str) -> Result<ProviderId, FieldError> {
    let by_enum = optional_provider_value(value, "provider")?;
    if id.is_empty() {
        return provider_value(value, "provider");
    }
    let by_id =
        ProviderId::new(id).map_err(|error| FieldError::new("provider_id", error.to_string()))?;
    match by_enum {
        Some(by_enum) if by_enum != by_id => Err(FieldError::new(
            "provider_id",
            format!("{id:?} disagrees with provider (`{by_enum}`)"),
        )),
        _ => Ok(by_id),
    }
}

/// An optional provider enum field: `PROVIDER_UNSPECIFIED` is `None`, unknown values are refused.
pub(crate) fn optional_provider_value(
    value: i32,
    field: &str,
) -> Result<Option<ProviderId>, FieldError> {
    let proto = v1::Provider::try_from(value)
        .map_err(|_| FieldError::new(field, format!("unknown Provider value {value}")))?;
    Ok(provider_of(proto))
}

enum_pair!(LinkState <=> LinkState {
    Pending <=> Pending,
    Active <=> Active,
    ReconnectRequired <=> ReconnectRequired,
    Exited <=> Exited,
    Failed <=> Failed,
    Descoped <=> Descoped,
});

enum_pair!(EventKind <=> EventKind {
    LinkSessionOpened <=> SessionOpened,
    LinkCompleted <=> Completed,
    LinkExited <=> Exited,
    LinkFailed <=> Failed,
    LinkAuthStatus <=> AuthStatus,
    LinkReconnectRequired <=> ReconnectRequired,
    LinkReconnected <=> Reconnected,
    LinkDescoped <=> Descoped,
    AccountUpdated <=> AccountUpdated,
    PolicyUpdated <=> PolicyUpdated,
    PolicyRenewalAvailable <=> RenewalAvailable,
    PolicyRequirementsUnmet <=> RequirementsUnmet,
    PolicyRequirementsMet <=> RequirementsMet,
    DataRefreshed <=> DataRefreshed,
    LinkStale <=> Stale,
    VendorEvent <=> Vendor,
});

enum_pair!(PolicyTerm <=> PolicyTerm {
    Current <=> Current,
    Renewal <=> Renewal,
});

enum_pair!(PolicyStatus <=> PolicyStatus {
    Active <=> Active,
    Inactive <=> Inactive,
    Cancelled <=> Cancelled,
    Expired <=> Expired,
    PendingActivation <=> PendingActivation,
    PendingCancellation <=> PendingCancellation,
    Rescinded <=> Rescinded,
    Unverified <=> Unverified,
    Quote <=> Quote,
    Removed <=> Removed,
    Unknown <=> Unknown,
});

enum_pair!(InsuredRole <=> InsuredRole {
    Primary <=> Primary,
    Secondary <=> Secondary,
    NamedInsured <=> NamedInsured,
    Driver <=> Driver,
    ExcludedDriver <=> ExcludedDriver,
});

enum_pair!(PartyKind <=> PartyKind {
    Lienholder <=> Lienholder,
    Lessor <=> Lessor,
    Mortgagee <=> Mortgagee,
    AdditionalInterest <=> AdditionalInterest,
    Unclassified <=> Unclassified,
});

enum_pair!(ConnectionStatus <=> ConnectionStatus {
    Active <=> Active,
    Disconnected <=> Disconnected,
    Unknown <=> Unknown,
});

enum_pair!(FailureReason <=> FailureReason {
    ProviderError <=> ProviderError,
    VendorError <=> VendorError,
    AuthenticationFailed <=> AuthenticationFailed,
    Other <=> Other,
});

enum_pair!(ReconnectReason <=> ReconnectReason {
    CredentialsExpired <=> CredentialsExpired,
    MfaExpired <=> MfaExpired,
    AccountDisabled <=> AccountDisabled,
    AccountInaccessible <=> AccountInaccessible,
    Other <=> Other,
});

enum_pair!(AuthStatus <=> AuthStatus {
    Opened <=> Opened,
    NotAuthenticated <=> NotAuthenticated,
    IdentityVerificationOptions <=> IdentityVerificationOptions,
    IdentityVerification <=> IdentityVerification,
    Success <=> Success,
});

enum_pair!(DescopeReason <=> DescopeReason {
    Requested <=> Requested,
    Replaced <=> Replaced,
});

enum_pair!(ChangeKind <=> ChangeKind {
    PolicyAdded <=> PolicyAdded,
    PolicyRemoved <=> PolicyRemoved,
    StatusChanged <=> StatusChanged,
    DatesChanged <=> DatesChanged,
    PremiumChanged <=> PremiumChanged,
    CoverageAdded <=> CoverageAdded,
    CoverageRemoved <=> CoverageRemoved,
    CoverageLimitChanged <=> CoverageLimitChanged,
    CoverageDeductibleChanged <=> CoverageDeductibleChanged,
    VehicleAdded <=> VehicleAdded,
    VehicleRemoved <=> VehicleRemoved,
    DwellingAdded <=> DwellingAdded,
    DwellingRemoved <=> DwellingRemoved,
    InterestedPartyAdded <=> InterestedPartyAdded,
    InterestedPartyRemoved <=> InterestedPartyRemoved,
    InterestedPartyChanged <=> InterestedPartyChanged,
    InsuredAdded <=> InsuredAdded,
    InsuredRemoved <=> InsuredRemoved,
});

enum_pair!(RuleResult <=> RuleResult {
    Pass <=> Pass,
    Fail <=> Fail,
    Unknown <=> Unknown,
});

enum_pair!(RequirementsStatus <=> OverallStatus {
    Met <=> Met,
    Unmet <=> Unmet,
    Unknown <=> Unknown,
});

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use super::*;

    /// Every proto value this build knows, `*_UNSPECIFIED` included. Enum values are dense
    /// from 0, so stopping at the first gap finds them all; the tail check proves there is no
    /// value past the gap.
    fn proto_values<E: ProtoEnum>() -> Vec<E> {
        let values: Vec<E> = (0..).map_while(|value| E::try_from(value).ok()).collect();
        assert!(
            (values.len() as i32..1000).all(|value| E::try_from(value).is_err()),
            "{} has a gap in its values",
            E::TYPE_NAME
        );
        values
    }

    /// Each proto value but `*_UNSPECIFIED` maps to a distinct core value that maps back to
    /// it, and no proto value is left over: the pairing is a bijection.
    fn assert_pairs_one_to_one<E>(core_len: usize) -> usize
    where
        E: ProtoEnum + PartialEq + Debug + Into<i32>,
        E::Core: PartialEq + Debug,
    {
        let values = proto_values::<E>();
        assert_eq!(values[0].to_core(), None, "{} value 0", E::TYPE_NAME);
        assert!(values[0].value_name().ends_with("_UNSPECIFIED"));
        let mut seen = Vec::new();
        for &proto in &values[1..] {
            let core = proto
                .to_core()
                .unwrap_or_else(|| panic!("{proto:?} has no core value"));
            assert_eq!(E::from(core), proto, "{core:?} does not map back");
            assert!(!seen.contains(&core), "{core:?} is paired twice");
            seen.push(core);

            let number: i32 = proto.into();
            assert_eq!(enum_value::<E>(number, "f"), Ok(core));
            assert_eq!(to_i32::<E>(core), number);
        }
        assert_eq!(
            seen.len(),
            core_len,
            "{}: core and proto differ in size",
            E::TYPE_NAME
        );
        assert_eq!(
            enum_value::<E>(0, "f"),
            Err(FieldError::new(
                "f",
                format!("is required (got {})", values[0].value_name())
            ))
        );
        let unknown = values.len() as i32;
        assert_eq!(
            enum_value::<E>(unknown, "f"),
            Err(FieldError::new(
                "f",
                format!("unknown {} value {unknown}", E::TYPE_NAME)
            ))
        );
        assert_eq!(optional_enum_value::<E>(0, "f"), Ok(None));
        assert_eq!(optional_enum_value::<E>(-3, "f").unwrap_err().field, "f");
        seen.len()
    }

    #[test]
    fn provider_values_pair_with_provider_names_by_name() {
        let values: Vec<v1::Provider> = (0..)
            .map_while(|value| v1::Provider::try_from(value).ok())
            .collect();
        assert!((values.len() as i32..1000).all(|value| v1::Provider::try_from(value).is_err()));
        assert_eq!(provider_of(values[0]), None);
        assert!(values.len() > 1);
        for &proto in &values[1..] {
            let id = provider_of(proto).unwrap_or_else(|| panic!("{proto:?} names no provider"));
            assert_eq!(v1::Provider::from(&id), proto);
            let number: i32 = proto.into();
            assert_eq!(provider_value(number, "f"), Ok(id.clone()));
            assert_eq!(provider_i32(&id), number);
        }
        assert_eq!(provider_of(v1::Provider::Axle).unwrap(), "axle");
        // A vendor the enum does not list is sent as UNSPECIFIED (its name goes in the string).
        let acme = ProviderId::new("acme").unwrap();
        assert_eq!(v1::Provider::from(&acme), v1::Provider::Unspecified);
        assert_eq!(
            provider_value(0, "f"),
            Err(FieldError::new(
                "f",
                "is required (got PROVIDER_UNSPECIFIED)"
            ))
        );
        assert_eq!(
            provider_value(99, "f"),
            Err(FieldError::new("f", "unknown Provider value 99"))
        );
        assert_eq!(optional_provider_value(0, "f"), Ok(None));
    }

    #[test]
    fn every_enum_pairs_one_to_one() {
        assert_pairs_one_to_one::<v1::LinkState>(LinkState::ALL.len());
        assert_pairs_one_to_one::<v1::EventKind>(EventKind::ALL.len());
        // Core has no list of these; the exhaustive `From` match already covers every core
        // variant, so the counts here pin the proto side.
        assert_pairs_one_to_one::<v1::PolicyTerm>(2);
        assert_pairs_one_to_one::<v1::PolicyStatus>(11);
        assert_pairs_one_to_one::<v1::InsuredRole>(5);
        assert_pairs_one_to_one::<v1::PartyKind>(5);
        assert_pairs_one_to_one::<v1::RequirementsStatus>(3);
        assert_pairs_one_to_one::<v1::ConnectionStatus>(3);
        assert_pairs_one_to_one::<v1::FailureReason>(4);
        assert_pairs_one_to_one::<v1::ReconnectReason>(5);
        assert_pairs_one_to_one::<v1::AuthStatus>(5);
        assert_pairs_one_to_one::<v1::DescopeReason>(2);
        assert_pairs_one_to_one::<v1::ChangeKind>(18);
        assert_pairs_one_to_one::<v1::RuleResult>(3);
    }

    #[test]
    fn event_kind_names_follow_the_dotted_core_names() {
        for kind in EventKind::ALL {
            let proto = v1::EventKind::from(kind);
            let expected = format!(
                "EVENT_KIND_{}",
                kind.as_str().replace('.', "_").to_uppercase()
            );
            assert_eq!(proto.as_str_name(), expected, "{kind}");
        }
    }

    #[test]
    fn repeated_enums_name_the_element() {
        let values = [
            v1::LinkState::Active as i32,
            v1::LinkState::Failed as i32,
            42,
        ];
        assert_eq!(
            enum_values::<v1::LinkState>(&values, "states"),
            Err(FieldError::new("states[2]", "unknown LinkState value 42"))
        );
        assert_eq!(
            enum_values::<v1::LinkState>(&values[..2], "states"),
            Ok(vec![LinkState::Active, LinkState::Failed])
        );
    }
}
