use coverwatch_core::ids::TenantId;
use coverwatch_core::{Link, LinkRequirements};

use super::enums::{enum_value, optional_enum_value, to_i32};
use super::{
    FieldError, link_id, optional_datetime, optional_timestamp, required_datetime, timestamp,
    user_id,
};
use crate::v1;

impl From<Link> for v1::Link {
    fn from(link: Link) -> Self {
        v1::Link {
            id: link.id.to_string(),
            user_id: link.user_id.to_string(),
            provider: super::enums::provider_i32(&link.provider),
            provider_id: link.provider.to_string(),
            state: to_i32::<v1::LinkState>(link.state),
            metadata: link.metadata,
            session_url: link.session_url,
            created_at: Some(timestamp(link.created_at)),
            updated_at: Some(timestamp(link.updated_at)),
            last_refreshed_at: optional_timestamp(link.last_refreshed_at),
            requirement_set_id: link.requirements.as_ref().map(|r| r.set_id.clone()),
            requirements_status: link
                .requirements
                .as_ref()
                .and_then(|r| r.status)
                .map_or(0, to_i32::<v1::RequirementsStatus>),
            requirements_evaluated_at: optional_timestamp(
                link.requirements.as_ref().and_then(|r| r.evaluated_at),
            ),
            stale_since: optional_timestamp(link.stale_since),
        }
    }
}

impl From<&Link> for v1::Link {
    fn from(link: &Link) -> Self {
        link.clone().into()
    }
}

/// A link read back from the wire (for Rust callers and tests). The proto form has no tenant,
/// since a caller only ever sees its own, so the tenant is supplied.
pub fn link_from_proto(link: v1::Link, tenant_id: TenantId) -> Result<Link, FieldError> {
    Ok(Link {
        id: link_id(&link.id, "id")?,
        tenant_id,
        user_id: user_id(&link.user_id, "user_id")?,
        provider: super::enums::provider_of_message(link.provider, &link.provider_id)?,
        state: enum_value::<v1::LinkState>(link.state, "state")?,
        metadata: link.metadata,
        session_url: link.session_url,
        created_at: required_datetime(link.created_at.as_ref(), "created_at")?,
        updated_at: required_datetime(link.updated_at.as_ref(), "updated_at")?,
        last_refreshed_at: optional_datetime(link.last_refreshed_at.as_ref(), "last_refreshed_at")?,
        requirements: link
            .requirement_set_id
            .map(|set_id| {
                Ok::<_, FieldError>(LinkRequirements {
                    set_id,
                    status: optional_enum_value::<v1::RequirementsStatus>(
                        link.requirements_status,
                        "requirements_status",
                    )?,
                    evaluated_at: optional_datetime(
                        link.requirements_evaluated_at.as_ref(),
                        "requirements_evaluated_at",
                    )?,
                })
            })
            .transpose()?,
        stale_since: optional_datetime(link.stale_since.as_ref(), "stale_since")?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};
    use coverwatch_core::ids::LinkId;
    use coverwatch_core::{LinkState, ProviderId};

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 500).unwrap()
    }

    pub(crate) fn sample_link() -> Link {
        Link {
            id: LinkId::new(),
            tenant_id: "acme-lending".parse().unwrap(),
            user_id: "loan #7".parse().unwrap(),
            provider: ProviderId::from_static("canopy"),
            state: LinkState::ReconnectRequired,
            metadata: BTreeMap::from([
                ("branch".to_owned(), "north".to_owned()),
                ("loan".to_owned(), "7".to_owned()),
            ]),
            session_url: Some("https://app.usecanopy.com/c/acme".to_owned()),
            created_at: at(1_700_000_000),
            updated_at: at(1_700_000_100),
            last_refreshed_at: Some(at(1_700_000_050)),
            requirements: Some(LinkRequirements {
                set_id: "lender-auto".to_owned(),
                status: Some(coverwatch_core::requirements::OverallStatus::Unmet),
                evaluated_at: Some(at(1_700_000_060)),
            }),
            stale_since: Some(at(1_700_000_070)),
        }
    }

    #[test]
    fn links_round_trip() {
        let link = sample_link();
        let proto = v1::Link::from(&link);
        assert_eq!(proto.id, link.id.to_string());
        assert_eq!(proto.provider, v1::Provider::Canopy as i32);
        assert_eq!(proto.provider_id, "canopy");
        assert_eq!(proto.state, v1::LinkState::ReconnectRequired as i32);
        assert_eq!(
            link_from_proto(proto, link.tenant_id.clone()),
            Ok(link.clone())
        );

        let bare = Link {
            session_url: None,
            last_refreshed_at: None,
            requirements: None,
            stale_since: None,
            metadata: BTreeMap::new(),
            ..link
        };
        let proto = v1::Link::from(&bare);
        assert_eq!(proto.last_refreshed_at, None);
        assert_eq!(link_from_proto(proto, bare.tenant_id.clone()), Ok(bare));
    }

    #[test]
    fn a_vendor_the_enum_does_not_list_travels_by_name() {
        let link = Link {
            provider: ProviderId::from_static("acme"),
            ..sample_link()
        };
        let proto = v1::Link::from(&link);
        assert_eq!(proto.provider, v1::Provider::Unspecified as i32);
        assert_eq!(proto.provider_id, "acme");
        assert_eq!(
            link_from_proto(proto, link.tenant_id.clone()),
            Ok(link.clone())
        );

        // From a server older than provider_id: the enum alone.
        let old = v1::Link {
            provider_id: String::new(),
            ..v1::Link::from(&sample_link())
        };
        assert_eq!(
            link_from_proto(old, link.tenant_id.clone()).map(|l| l.provider),
            Ok(ProviderId::from_static("canopy"))
        );

        let clash = v1::Link {
            provider_id: "axle".into(),
            ..v1::Link::from(&sample_link())
        };
        assert_eq!(
            link_from_proto(clash, link.tenant_id.clone())
                .unwrap_err()
                .field,
            "provider_id"
        );
    }

    #[test]
    fn malformed_links_name_the_field() {
        let link = sample_link();
        let tenant = link.tenant_id.clone();
        let proto = v1::Link::from(&link);

        let wrong = v1::Link {
            state: 0,
            ..proto.clone()
        };
        assert_eq!(
            link_from_proto(wrong, tenant.clone()).unwrap_err().field,
            "state"
        );
        let wrong = v1::Link {
            id: "evt_1".into(),
            ..proto.clone()
        };
        assert_eq!(
            link_from_proto(wrong, tenant.clone()).unwrap_err().field,
            "id"
        );
        let wrong = v1::Link {
            created_at: None,
            ..proto
        };
        assert_eq!(
            link_from_proto(wrong, tenant).unwrap_err(),
            FieldError::new("created_at", "is required")
        );
    }
}
