//! Conversions between `coverwatch-core` and the generated `coverwatch.v1` types.
//!
//! core → proto is infallible (`From`): every core value has a proto form. proto → core is
//! fallible and names the offending field, because what comes off the wire may be unset,
//! unknown to this build, or malformed. Field paths are proto paths relative to the request
//! (`provider`, `filter.kinds[1]`, `policy.coverages[0].code`), so the gRPC edge can answer
//! `INVALID_ARGUMENT` with a message the caller can act on.

mod enums;
mod event;
mod link;
mod policy;
mod requirements;
mod status;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use coverwatch_core::ids::{EventId, IdError, LinkId, UserId};
use coverwatch_core::policy::PolicyTerm;
use coverwatch_core::{EventKind, LinkState, ProviderId};
use prost_types::Timestamp;

use crate::v1;

pub use enums::{ProtoEnum, provider_of};
pub use event::{event_from_proto, event_to_proto};
pub use link::link_from_proto;
pub use requirements::{
    requirement_set_from_proto, requirement_set_to_proto, vendor_check_to_proto,
};
pub use status::{
    VENDOR_ERROR_DETAIL_TYPE_URL, vendor_error_detail, vendor_error_detail_of,
    with_vendor_error_detail,
};

/// A request or message field that cannot be turned into its core value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The proto field path, for example `filter.kinds[1]` or `provider`.
    pub field: String,
    /// What is wrong with it, for example ``must start with `lnk_` ``.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn missing(field: impl Into<String>) -> Self {
        Self::new(field, "is required")
    }

    /// The same error seen from the enclosing message: `coverages[0].code` inside `policy`
    /// becomes `policy.coverages[0].code`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// `INVALID_ARGUMENT`, with the message starting with the field path as the API reference
/// promises.
impl From<FieldError> for tonic::Status {
    fn from(error: FieldError) -> Self {
        tonic::Status::invalid_argument(error.to_string())
    }
}

/// `field[index]`, the path of one element of a repeated field.
pub(crate) fn indexed(field: &str, index: usize) -> String {
    format!("{field}[{index}]")
}

/// Converts each element of a repeated field, naming `field[i]` in front of the element's own
/// error.
pub(crate) fn each<P, C>(
    items: Vec<P>,
    field: &str,
    convert: impl Fn(P) -> Result<C, FieldError>,
) -> Result<Vec<C>, FieldError> {
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| convert(item).map_err(|error| error.within(&indexed(field, index))))
        .collect()
}

/// Converts each element of a repeated field that cannot fail.
pub(crate) fn all<P, C: Into<P>>(items: Vec<C>) -> Vec<P> {
    items.into_iter().map(Into::into).collect()
}

/// A string field that the API reference marks as required: empty is refused.
pub fn required_string<'a>(value: &'a str, field: &str) -> Result<&'a str, FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    Ok(value)
}

/// A message field that the API reference marks as required.
pub fn required<T>(value: Option<T>, field: &str) -> Result<T, FieldError> {
    value.ok_or_else(|| FieldError::missing(field))
}

// ---- enums a request carries -------------------------------------------------------------

/// A required provider: `PROVIDER_UNSPECIFIED` and unknown values are refused.
pub fn provider(value: i32, field: &str) -> Result<ProviderId, FieldError> {
    enums::provider_value(value, field)
}

/// A provider filter: `PROVIDER_UNSPECIFIED` means any provider.
pub fn optional_provider(value: i32, field: &str) -> Result<Option<ProviderId>, FieldError> {
    enums::optional_provider_value(value, field)
}

/// The vendor a request names through its pair of fields: the `Provider` enum (`enum_field`,
/// which only lists the vendors it was written for) and the registry name (`id_field`, which
/// names any registered vendor). Either may be given; both given must name the same vendor.
/// A name that is not among `registered` is refused naming `id_field`, with the registered
/// names listed so the caller can correct it. `None` when neither is set: the caller decides
/// whether that means "any" (a filter) or is an error (see [`required_provider_choice`]).
///
/// The enum alone is not checked against `registered`: a listed vendor that this deployment
/// does not run is the engine's answer to give (`FAILED_PRECONDITION`), as it was before the
/// string field existed.
pub fn provider_choice<'a>(
    enum_value: i32,
    enum_field: &str,
    id: &str,
    id_field: &str,
    registered: impl IntoIterator<Item = &'a ProviderId>,
) -> Result<Option<ProviderId>, FieldError> {
    let by_enum = enums::optional_provider_value(enum_value, enum_field)?;
    if id.is_empty() {
        return Ok(by_enum);
    }
    let registered: Vec<&ProviderId> = registered.into_iter().collect();
    let Some(by_id) = registered.iter().find(|known| known.as_str() == id) else {
        let names: Vec<&str> = registered.iter().map(|known| known.as_str()).collect();
        return Err(FieldError::new(
            id_field,
            format!(
                "{id:?} is not a registered provider (registered: {})",
                names.join(", ")
            ),
        ));
    };
    if let Some(by_enum) = by_enum
        && by_enum != **by_id
    {
        return Err(FieldError::new(
            id_field,
            format!(
                "{id:?} disagrees with {enum_field} {} (`{by_enum}`); set one of them, or both to the same vendor",
                v1::Provider::try_from(enum_value).map_or("?", |value| value.as_str_name())
            ),
        ));
    }
    Ok(Some((*by_id).clone()))
}

/// [`provider_choice`] for a request that must name a vendor: neither field set is refused
/// naming the enum field, as before the string field existed.
pub fn required_provider_choice<'a>(
    enum_value: i32,
    enum_field: &str,
    id: &str,
    id_field: &str,
    registered: impl IntoIterator<Item = &'a ProviderId>,
) -> Result<ProviderId, FieldError> {
    provider_choice(enum_value, enum_field, id, id_field, registered)?.ok_or_else(|| {
        FieldError::new(
            enum_field,
            format!(
                "is required (got {} and no {id_field})",
                v1::Provider::Unspecified.as_str_name()
            ),
        )
    })
}

pub fn link_state(value: i32, field: &str) -> Result<LinkState, FieldError> {
    enums::enum_value::<v1::LinkState>(value, field)
}

/// Every element must be a known state; errors name `field[i]`.
pub fn link_states(values: &[i32], field: &str) -> Result<Vec<LinkState>, FieldError> {
    enums::enum_values::<v1::LinkState>(values, field)
}

pub fn event_kind(value: i32, field: &str) -> Result<EventKind, FieldError> {
    enums::enum_value::<v1::EventKind>(value, field)
}

/// Every element must be a known kind; errors name `field[i]`.
pub fn event_kinds(values: &[i32], field: &str) -> Result<Vec<EventKind>, FieldError> {
    enums::enum_values::<v1::EventKind>(values, field)
}

/// `POLICY_TERM_UNSPECIFIED` reads as the current term, as the API reference says.
pub fn policy_term(value: i32, field: &str) -> Result<PolicyTerm, FieldError> {
    Ok(enums::optional_enum_value::<v1::PolicyTerm>(value, field)?.unwrap_or(PolicyTerm::Current))
}

// ---- ids and other scalars ---------------------------------------------------------------

fn parse_id<T: FromStr<Err = IdError>>(value: &str, field: &str) -> Result<T, FieldError> {
    value
        .parse()
        .map_err(|error: IdError| FieldError::new(field, error.to_string()))
}

pub fn link_id(value: &str, field: &str) -> Result<LinkId, FieldError> {
    parse_id(value, field)
}

/// An optional id: absent is `None`, present must be well formed (even when empty).
pub fn optional_link_id(value: Option<&str>, field: &str) -> Result<Option<LinkId>, FieldError> {
    value.map(|value| link_id(value, field)).transpose()
}

pub fn event_id(value: &str, field: &str) -> Result<EventId, FieldError> {
    parse_id(value, field)
}

pub fn user_id(value: &str, field: &str) -> Result<UserId, FieldError> {
    parse_id(value, field)
}

/// An optional user id: absent is `None`, present must be valid (even when empty).
pub fn optional_user_id(value: Option<&str>, field: &str) -> Result<Option<UserId>, FieldError> {
    value.map(|value| user_id(value, field)).transpose()
}

/// Flat caller metadata; every key must be non-empty.
pub fn metadata(
    value: &BTreeMap<String, String>,
    field: &str,
) -> Result<BTreeMap<String, String>, FieldError> {
    if value.contains_key("") {
        return Err(FieldError::new(field, "keys must not be empty"));
    }
    Ok(value.clone())
}

/// A page size as the API reference defines it: 0 means `default`, anything above `max` is
/// read as `max`, negative is refused.
pub fn page_size(value: i32, default: u32, max: u32, field: &str) -> Result<u32, FieldError> {
    match u32::try_from(value) {
        Err(_) => Err(FieldError::new(
            field,
            format!("must not be negative (got {value})"),
        )),
        Ok(0) => Ok(default.min(max)),
        Ok(size) => Ok(size.min(max)),
    }
}

/// An event cursor to resume after: 0 is the start of the stream, negative is refused.
pub fn after_cursor(value: i64, field: &str) -> Result<i64, FieldError> {
    if value < 0 {
        return Err(FieldError::new(
            field,
            format!("must not be negative (got {value})"),
        ));
    }
    Ok(value)
}

// ---- event filter ------------------------------------------------------------------------

/// A validated [`v1::EventFilter`]. Empty conditions match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub link_id: Option<LinkId>,
    pub user_id: Option<UserId>,
    /// Empty means every kind.
    pub kinds: Vec<EventKind>,
}

impl EventFilter {
    pub fn matches(&self, event: &coverwatch_core::Event) -> bool {
        self.link_id.is_none_or(|id| id == event.link_id)
            && self.user_id.as_ref().is_none_or(|id| *id == event.user_id)
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind()))
    }
}

/// Validates an optional filter; `field` is where it sits in the request (`filter`).
pub fn event_filter(
    filter: Option<&v1::EventFilter>,
    field: &str,
) -> Result<EventFilter, FieldError> {
    let Some(filter) = filter else {
        return Ok(EventFilter::default());
    };
    Ok(EventFilter {
        link_id: optional_link_id(filter.link_id.as_deref(), &format!("{field}.link_id"))?,
        user_id: optional_user_id(filter.user_id.as_deref(), &format!("{field}.user_id"))?,
        kinds: event_kinds(&filter.kinds, &format!("{field}.kinds"))?,
    })
}

// ---- times -------------------------------------------------------------------------------

pub fn timestamp(value: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: value.timestamp(),
        // Always below 2e9 (leap seconds included), so it fits.
        nanos: value.timestamp_subsec_nanos() as i32,
    }
}

pub fn optional_timestamp(value: Option<DateTime<Utc>>) -> Option<Timestamp> {
    value.map(timestamp)
}

/// Refuses what `google.protobuf.Timestamp` itself calls invalid (nanos outside
/// 0..1e9) and what chrono cannot hold.
pub fn datetime(value: &Timestamp, field: &str) -> Result<DateTime<Utc>, FieldError> {
    u32::try_from(value.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .ok_or_else(|| {
            FieldError::new(
                field,
                format!(
                    "is not a valid timestamp (seconds {}, nanos {})",
                    value.seconds, value.nanos
                ),
            )
        })
}

pub fn required_datetime(
    value: Option<&Timestamp>,
    field: &str,
) -> Result<DateTime<Utc>, FieldError> {
    datetime(required(value, field)?, field)
}

pub fn optional_datetime(
    value: Option<&Timestamp>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, FieldError> {
    value.map(|value| datetime(value, field)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_read_as_path_then_message() {
        let error = FieldError::new("code", "must be set").within("coverages[2]");
        assert_eq!(error.field, "coverages[2].code");
        let error = error.within("policy");
        assert_eq!(error.to_string(), "policy.coverages[2].code: must be set");
        assert_eq!(
            FieldError::new("[1]", "bad").within("kinds").field,
            "kinds[1]"
        );
        let status = tonic::Status::from(FieldError::missing("provider"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "provider: is required");
    }

    #[test]
    fn a_provider_is_named_by_enum_or_registry_name_and_both_must_agree() {
        let registered = [
            ProviderId::from_static("acme"),
            ProviderId::from_static("axle"),
            ProviderId::from_static("canopy"),
        ];
        let choose = |value: v1::Provider, id: &str| {
            provider_choice(value as i32, "provider", id, "provider_id", &registered)
        };
        let axle = Some(ProviderId::from_static("axle"));
        assert_eq!(choose(v1::Provider::Unspecified, ""), Ok(None));
        assert_eq!(choose(v1::Provider::Axle, ""), Ok(axle.clone()));
        assert_eq!(choose(v1::Provider::Unspecified, "axle"), Ok(axle.clone()));
        assert_eq!(choose(v1::Provider::Axle, "axle"), Ok(axle));
        // A vendor the enum cannot name is reached by its name alone.
        assert_eq!(
            choose(v1::Provider::Unspecified, "acme"),
            Ok(Some(ProviderId::from_static("acme")))
        );

        let unknown = choose(v1::Provider::Unspecified, "nosuch").unwrap_err();
        assert_eq!(unknown.field, "provider_id");
        assert!(
            unknown.message.contains("acme, axle, canopy"),
            "lists the registered names: {unknown}"
        );
        // Not a valid name at all is just as unknown, with the same field.
        let malformed = choose(v1::Provider::Unspecified, "Axle").unwrap_err();
        assert_eq!(malformed.field, "provider_id");

        let clash = choose(v1::Provider::Canopy, "axle").unwrap_err();
        assert_eq!(clash.field, "provider_id");
        assert!(clash.message.contains("PROVIDER_CANOPY"), "{clash}");
        // The enum's own errors still name the enum.
        let bad_enum =
            provider_choice(99, "provider", "axle", "provider_id", &registered).unwrap_err();
        assert_eq!(bad_enum.field, "provider");

        let missing =
            required_provider_choice(0, "provider", "", "provider_id", &registered).unwrap_err();
        assert_eq!(missing.field, "provider");
        assert_eq!(
            required_provider_choice(0, "provider", "canopy", "provider_id", &registered),
            Ok(ProviderId::from_static("canopy"))
        );
    }

    #[test]
    fn request_enums_refuse_unspecified_and_unknown_values_naming_the_field() {
        assert_eq!(
            provider(v1::Provider::Canopy as i32, "provider"),
            Ok(ProviderId::from_static("canopy"))
        );
        let error = provider(0, "provider").unwrap_err();
        assert_eq!(error.field, "provider");
        assert!(error.message.contains("PROVIDER_UNSPECIFIED"), "{error}");
        let error = provider(99, "provider").unwrap_err();
        assert_eq!(error.field, "provider");
        assert!(error.message.contains("99"), "{error}");

        assert_eq!(optional_provider(0, "provider"), Ok(None));
        assert_eq!(
            optional_provider(1, "provider"),
            Ok(Some(ProviderId::from_static("axle")))
        );
        assert_eq!(
            optional_provider(-1, "provider").unwrap_err().field,
            "provider"
        );

        assert_eq!(
            link_state(v1::LinkState::Descoped as i32, "state"),
            Ok(LinkState::Descoped)
        );
        assert_eq!(link_state(0, "state").unwrap_err().field, "state");
        assert_eq!(
            link_states(&[1, 3], "states"),
            Ok(vec![LinkState::Pending, LinkState::ReconnectRequired])
        );
        assert_eq!(
            link_states(&[1, 0], "states").unwrap_err().field,
            "states[1]"
        );
        assert_eq!(link_states(&[77], "states").unwrap_err().field, "states[0]");

        assert_eq!(
            event_kind(v1::EventKind::VendorEvent as i32, "kind"),
            Ok(EventKind::Vendor)
        );
        assert_eq!(
            event_kinds(&[2, 1000], "kinds").unwrap_err().field,
            "kinds[1]"
        );

        assert_eq!(policy_term(0, "term"), Ok(PolicyTerm::Current));
        assert_eq!(policy_term(1, "term"), Ok(PolicyTerm::Current));
        assert_eq!(policy_term(2, "term"), Ok(PolicyTerm::Renewal));
        assert_eq!(policy_term(3, "term").unwrap_err().field, "term");
    }

    #[test]
    fn ids_carry_the_id_error_text() {
        let id = LinkId::new();
        assert_eq!(link_id(&id.to_string(), "link_id"), Ok(id));
        assert_eq!(
            link_id("evt_0", "link_id"),
            Err(FieldError::new("link_id", "must start with `lnk_`"))
        );
        assert_eq!(
            link_id("lnk_XYZ", "link_id"),
            Err(FieldError::new(
                "link_id",
                "must be `lnk_` followed by 32 lowercase hex characters"
            ))
        );
        assert_eq!(
            link_id("", "link_id"),
            Err(FieldError::new("link_id", "must not be empty"))
        );
        assert_eq!(optional_link_id(None, "replace_link_id"), Ok(None));
        assert_eq!(
            optional_link_id(Some(""), "replace_link_id")
                .unwrap_err()
                .field,
            "replace_link_id"
        );
        let event = EventId::new();
        assert_eq!(event_id(&event.to_string(), "id"), Ok(event));
        assert!(event_id(&id.to_string(), "id").is_err());

        assert_eq!(user_id("loan #7", "user_id").unwrap().as_str(), "loan #7");
        assert_eq!(
            user_id(&"x".repeat(257), "user_id"),
            Err(FieldError::new("user_id", "must be at most 256 characters"))
        );
        assert_eq!(
            user_id("a\tb", "user_id").unwrap_err().message,
            "may contain only printable characters (no control characters)"
        );
        assert_eq!(optional_user_id(None, "user_id"), Ok(None));
        assert_eq!(
            optional_user_id(Some(""), "user_id"),
            Err(FieldError::new("user_id", "must not be empty"))
        );
    }

    #[test]
    fn scalars_follow_the_api_reference() {
        assert_eq!(page_size(0, 50, 500, "page_size"), Ok(50));
        assert_eq!(page_size(7, 50, 500, "page_size"), Ok(7));
        assert_eq!(page_size(501, 50, 500, "page_size"), Ok(500));
        assert_eq!(page_size(i32::MAX, 100, 1000, "page_size"), Ok(1000));
        assert_eq!(
            page_size(-1, 50, 500, "page_size").unwrap_err().field,
            "page_size"
        );

        assert_eq!(after_cursor(0, "after_cursor"), Ok(0));
        assert_eq!(after_cursor(42, "after_cursor"), Ok(42));
        assert_eq!(
            after_cursor(-5, "after_cursor"),
            Err(FieldError::new(
                "after_cursor",
                "must not be negative (got -5)"
            ))
        );

        let mut tags = BTreeMap::from([("loan".to_owned(), "7".to_owned())]);
        assert_eq!(metadata(&tags, "metadata"), Ok(tags.clone()));
        tags.insert(String::new(), "x".to_owned());
        assert_eq!(metadata(&tags, "metadata").unwrap_err().field, "metadata");

        assert_eq!(required_string("abc", "auth_code"), Ok("abc"));
        assert_eq!(
            required_string("", "auth_code"),
            Err(FieldError::new("auth_code", "must not be empty"))
        );
        assert_eq!(required(Some(3), "link"), Ok(3));
        assert_eq!(
            required::<u8>(None, "link"),
            Err(FieldError::new("link", "is required"))
        );
    }

    #[test]
    fn event_filters_validate_every_condition() {
        assert_eq!(event_filter(None, "filter"), Ok(EventFilter::default()));
        let link = LinkId::new();
        let filter = v1::EventFilter {
            link_id: Some(link.to_string()),
            user_id: Some("u-1".into()),
            kinds: vec![
                v1::EventKind::PolicyUpdated as i32,
                v1::EventKind::LinkCompleted as i32,
            ],
        };
        let parsed = event_filter(Some(&filter), "filter").unwrap();
        assert_eq!(parsed.link_id, Some(link));
        assert_eq!(parsed.user_id.as_ref().map(UserId::as_str), Some("u-1"));
        assert_eq!(
            parsed.kinds,
            vec![EventKind::PolicyUpdated, EventKind::Completed]
        );

        let bad_kind = v1::EventFilter {
            kinds: vec![v1::EventKind::LinkStale as i32, 0],
            ..filter.clone()
        };
        assert_eq!(
            event_filter(Some(&bad_kind), "filter").unwrap_err().field,
            "filter.kinds[1]"
        );
        let bad_link = v1::EventFilter {
            link_id: Some("lnk_1".into()),
            ..filter.clone()
        };
        assert_eq!(
            event_filter(Some(&bad_link), "filter").unwrap_err().field,
            "filter.link_id"
        );
        let bad_user = v1::EventFilter {
            user_id: Some(String::new()),
            ..filter
        };
        assert_eq!(
            event_filter(Some(&bad_user), "filter").unwrap_err().field,
            "filter.user_id"
        );
    }

    #[test]
    fn timestamps_round_trip_to_the_nanosecond_and_refuse_invalid_ones() {
        let now = DateTime::from_timestamp(1_767_225_600, 123_456_789).unwrap();
        assert_eq!(datetime(&timestamp(now), "at"), Ok(now));
        let before_epoch = DateTime::from_timestamp(-1, 999_999_999).unwrap();
        assert_eq!(datetime(&timestamp(before_epoch), "at"), Ok(before_epoch));
        for nanos in [-1, 1_000_000_000] {
            let error = datetime(&Timestamp { seconds: 0, nanos }, "at").unwrap_err();
            assert_eq!(error.field, "at");
        }
        assert!(
            datetime(
                &Timestamp {
                    seconds: i64::MAX,
                    nanos: 0
                },
                "at"
            )
            .is_err()
        );
        assert_eq!(
            required_datetime(None, "created_at").unwrap_err().field,
            "created_at"
        );
        assert_eq!(optional_datetime(None, "at"), Ok(None));
    }
}
