//! Axle's own event detail: what an Axle webhook said that has no common meaning, typed for
//! callers. Core carries it as a [`VendorDetail`] (it names no vendor); this module turns it
//! into that form and back, and into the `AxleEventDetail` arm of the gRPC `Event`.

use std::sync::Arc;

use coverwatch_core::event::{DetailError, VendorDetail};
use coverwatch_core::provider::VendorVerdict;
use coverwatch_core::{ProviderDetail, ProviderId};
use coverwatch_proto::detail::{DetailCodec, ProtoDetail, ProtoVerdict};
use coverwatch_proto::v1;
use serde::{Deserialize, Serialize};

use crate::PROVIDER;

/// What an Axle webhook said, beyond the normalized event.
///
/// The serde form is the stored form (the `detail` column holds it, beside `"provider":
/// "axle"`): `event_id` and `reference` are written even when absent, the two later fields
/// only when present, exactly as events stored before this type moved here were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AxleEventDetail {
    /// Axle's event id (`id`).
    pub event_id: Option<String>,
    /// Axle's event type, for example `policy.modified`.
    pub event_type: String,
    /// The object the event refers to (`acc_…` or `pol_…`).
    pub reference: Option<String>,
    /// Ignition events: the Ignition session's token (`data.token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignition_token: Option<String>,
    /// `ignition.completed`: how the session was completed (`link`, `manual`, `proxy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

impl From<AxleEventDetail> for VendorDetail {
    fn from(detail: AxleEventDetail) -> Self {
        // Cannot fail: the struct serializes to an object with a string `event_type` and no
        // `provider` key, which is all `from_typed` asks (the tests below hold it to that).
        VendorDetail::from_typed(PROVIDER, &detail)
            .expect("AxleEventDetail is a JSON object with an event_type")
    }
}

impl From<AxleEventDetail> for ProviderDetail {
    fn from(detail: AxleEventDetail) -> Self {
        ProviderDetail::Vendor(detail.into())
    }
}

impl TryFrom<&VendorDetail> for AxleEventDetail {
    type Error = DetailError;

    /// Another vendor's detail, or a stored form this build cannot read, is an error.
    fn try_from(detail: &VendorDetail) -> Result<Self, DetailError> {
        detail.to_typed(&PROVIDER)
    }
}

impl TryFrom<&ProviderDetail> for AxleEventDetail {
    type Error = DetailError;

    fn try_from(detail: &ProviderDetail) -> Result<Self, DetailError> {
        match detail {
            ProviderDetail::Vendor(vendor) => vendor.try_into(),
            ProviderDetail::None => Err(DetailError::NoDetail),
        }
    }
}

impl From<AxleEventDetail> for v1::AxleEventDetail {
    fn from(d: AxleEventDetail) -> Self {
        v1::AxleEventDetail {
            event_id: d.event_id,
            event_type: d.event_type,
            reference: d.reference,
            ignition_token: d.ignition_token,
            result: d.result,
        }
    }
}

impl From<v1::AxleEventDetail> for AxleEventDetail {
    fn from(d: v1::AxleEventDetail) -> Self {
        AxleEventDetail {
            event_id: d.event_id,
            event_type: d.event_type,
            reference: d.reference,
            ignition_token: d.ignition_token,
            result: d.result,
        }
    }
}

/// Axle's arms of the gRPC `Event.provider_detail` and `VendorCheck.verdict`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AxleDetailCodec;

impl DetailCodec for AxleDetailCodec {
    fn provider(&self) -> ProviderId {
        PROVIDER
    }

    fn to_proto(&self, detail: &VendorDetail) -> Option<ProtoDetail> {
        let typed = AxleEventDetail::try_from(detail).ok()?;
        Some(ProtoDetail::Axle(typed.into()))
    }

    fn to_core(&self, detail: &ProtoDetail) -> Option<VendorDetail> {
        match detail {
            ProtoDetail::Axle(axle) => Some(AxleEventDetail::from(axle.clone()).into()),
            _ => None,
        }
    }

    fn verdict_to_proto(&self, verdict: &VendorVerdict) -> Option<ProtoVerdict> {
        crate::verdict::verdict_to_proto(verdict)
    }
}

/// The codec the service registers next to [`crate::plugin`].
pub fn detail_codec() -> Arc<dyn DetailCodec> {
    Arc::new(AxleDetailCodec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AxleEventDetail {
        AxleEventDetail {
            event_id: Some("evt-axle-2".into()),
            event_type: "ignition.completed".into(),
            reference: Some("ign_1".into()),
            ignition_token: Some("ign_1".into()),
            result: Some("manual".into()),
        }
    }

    /// Events stored before the detail moved out of core were written as core's
    /// `ProviderDetail::Axle`, tagged by `provider`. They must still read, into this type.
    #[test]
    fn events_stored_by_earlier_builds_still_read() {
        let stored = r#"{"provider":"axle","event_id":"evt-1","event_type":"policy.modified","reference":"pol_1"}"#;
        let detail: ProviderDetail = serde_json::from_str(stored).unwrap();
        assert_eq!(
            AxleEventDetail::try_from(&detail),
            Ok(AxleEventDetail {
                event_id: Some("evt-1".into()),
                event_type: "policy.modified".into(),
                reference: Some("pol_1".into()),
                ignition_token: None,
                result: None,
            })
        );
        let stored = r#"{"provider":"axle","event_id":null,"event_type":"ignition.completed","reference":null,"ignition_token":"ign_9","result":"link"}"#;
        let detail: ProviderDetail = serde_json::from_str(stored).unwrap();
        let typed = AxleEventDetail::try_from(&detail).unwrap();
        assert_eq!(typed.ignition_token.as_deref(), Some("ign_9"));
        assert_eq!(typed.result.as_deref(), Some("link"));
        assert_eq!(typed.event_id, None);

        // And what this build writes is what earlier builds wrote (key order aside).
        let written = serde_json::to_value(ProviderDetail::from(typed)).unwrap();
        assert_eq!(
            written,
            serde_json::from_str::<serde_json::Value>(stored).unwrap()
        );
    }

    #[test]
    fn the_detail_round_trips_through_core_and_the_wire() {
        for typed in [
            sample(),
            AxleEventDetail {
                event_id: None,
                event_type: "account.disconnected".into(),
                reference: None,
                ignition_token: None,
                result: None,
            },
        ] {
            let core = ProviderDetail::from(typed.clone());
            let ProviderDetail::Vendor(vendor) = &core else {
                panic!("a vendor detail: {core:?}");
            };
            assert_eq!(vendor.provider(), &PROVIDER);
            assert_eq!(vendor.event_type(), typed.event_type);
            let json = serde_json::to_string(&core).unwrap();
            assert_eq!(serde_json::from_str::<ProviderDetail>(&json).unwrap(), core);

            let proto = AxleDetailCodec.to_proto(vendor).unwrap();
            assert_eq!(proto, ProtoDetail::Axle(typed.clone().into()));
            assert_eq!(AxleDetailCodec.to_core(&proto).as_ref(), Some(vendor));
        }
    }

    #[test]
    fn another_vendors_detail_is_not_read_as_axles() {
        let other = VendorDetail::new(
            ProviderId::from_static("canopy"),
            "COMPLETE",
            serde_json::Map::new(),
        )
        .unwrap();
        assert!(AxleEventDetail::try_from(&other).is_err());
        assert_eq!(AxleDetailCodec.to_proto(&other), None);
        let canopy = ProtoDetail::Canopy(v1::CanopyEventDetail::default());
        assert_eq!(AxleDetailCodec.to_core(&canopy), None);
        assert_eq!(
            AxleEventDetail::try_from(&ProviderDetail::None),
            Err(DetailError::NoDetail)
        );
    }
}
