//! Canopy's own event detail: what a Canopy webhook said that has no common meaning, typed
//! for callers. Core carries it as a [`VendorDetail`] (it names no vendor); this module turns
//! it into that form and back, and into the `CanopyEventDetail` arm of the gRPC `Event`.

use std::sync::Arc;

use coverwatch_core::event::{DetailError, VendorDetail};
use coverwatch_core::provider::VendorVerdict;
use coverwatch_core::{ProviderDetail, ProviderId};
use coverwatch_proto::detail::{DetailCodec, ProtoDetail, ProtoVerdict};
use coverwatch_proto::v1;
use serde::{Deserialize, Serialize};

use crate::PROVIDER;

/// What a Canopy webhook said, beyond the normalized event.
///
/// The serde form is the stored form (the `detail` column holds it, beside `"provider":
/// "canopy"`), every field written even when absent, exactly as events stored before this
/// type moved here were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanopyEventDetail {
    /// Canopy's event type, for example `MONITORING_RECONNECT`.
    pub event_type: String,
    /// The pull the event is about.
    pub pull_id: Option<String>,
    /// The pull's status as Canopy gave it.
    pub pull_status: Option<String>,
    /// The monitoring the event is about.
    pub monitoring_id: Option<String>,
    /// Canopy's sequence number for the event.
    pub sequence: Option<i64>,
}

impl From<CanopyEventDetail> for VendorDetail {
    fn from(detail: CanopyEventDetail) -> Self {
        // Cannot fail: the struct serializes to an object with a string `event_type` and no
        // `provider` key, which is all `from_typed` asks (the tests below hold it to that).
        VendorDetail::from_typed(PROVIDER, &detail)
            .expect("CanopyEventDetail is a JSON object with an event_type")
    }
}

impl From<CanopyEventDetail> for ProviderDetail {
    fn from(detail: CanopyEventDetail) -> Self {
        ProviderDetail::Vendor(detail.into())
    }
}

impl TryFrom<&VendorDetail> for CanopyEventDetail {
    type Error = DetailError;

    /// Another vendor's detail, or a stored form this build cannot read, is an error.
    fn try_from(detail: &VendorDetail) -> Result<Self, DetailError> {
        detail.to_typed(&PROVIDER)
    }
}

impl TryFrom<&ProviderDetail> for CanopyEventDetail {
    type Error = DetailError;

    fn try_from(detail: &ProviderDetail) -> Result<Self, DetailError> {
        match detail {
            ProviderDetail::Vendor(vendor) => vendor.try_into(),
            ProviderDetail::None => Err(DetailError::NoDetail),
        }
    }
}

impl From<CanopyEventDetail> for v1::CanopyEventDetail {
    fn from(d: CanopyEventDetail) -> Self {
        v1::CanopyEventDetail {
            event_type: d.event_type,
            pull_id: d.pull_id,
            pull_status: d.pull_status,
            monitoring_id: d.monitoring_id,
            sequence: d.sequence,
        }
    }
}

impl From<v1::CanopyEventDetail> for CanopyEventDetail {
    fn from(d: v1::CanopyEventDetail) -> Self {
        CanopyEventDetail {
            event_type: d.event_type,
            pull_id: d.pull_id,
            pull_status: d.pull_status,
            monitoring_id: d.monitoring_id,
            sequence: d.sequence,
        }
    }
}

/// Canopy's arms of the gRPC `Event.provider_detail` and `VendorCheck.verdict`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CanopyDetailCodec;

impl DetailCodec for CanopyDetailCodec {
    fn provider(&self) -> ProviderId {
        PROVIDER
    }

    fn to_proto(&self, detail: &VendorDetail) -> Option<ProtoDetail> {
        let typed = CanopyEventDetail::try_from(detail).ok()?;
        Some(ProtoDetail::Canopy(typed.into()))
    }

    fn to_core(&self, detail: &ProtoDetail) -> Option<VendorDetail> {
        match detail {
            ProtoDetail::Canopy(canopy) => Some(CanopyEventDetail::from(canopy.clone()).into()),
            _ => None,
        }
    }

    fn verdict_to_proto(&self, verdict: &VendorVerdict) -> Option<ProtoVerdict> {
        crate::verdict::verdict_to_proto(verdict)
    }
}

/// The codec the service registers next to [`crate::plugin`].
pub fn detail_codec() -> Arc<dyn DetailCodec> {
    Arc::new(CanopyDetailCodec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events stored before the detail moved out of core were written as core's
    /// `ProviderDetail::Canopy`, tagged by `provider`. They must still read, into this type.
    #[test]
    fn events_stored_by_earlier_builds_still_read() {
        let stored = r#"{"provider":"canopy","event_type":"MONITORING_RECONNECT","pull_id":"6f1c","pull_status":"NOT_AUTHENTICATED","monitoring_id":null,"sequence":4}"#;
        let detail: ProviderDetail = serde_json::from_str(stored).unwrap();
        let typed = CanopyEventDetail::try_from(&detail).unwrap();
        assert_eq!(
            typed,
            CanopyEventDetail {
                event_type: "MONITORING_RECONNECT".into(),
                pull_id: Some("6f1c".into()),
                pull_status: Some("NOT_AUTHENTICATED".into()),
                monitoring_id: None,
                sequence: Some(4),
            }
        );
        // And what this build writes is what earlier builds wrote (key order aside).
        let written = serde_json::to_value(ProviderDetail::from(typed)).unwrap();
        assert_eq!(
            written,
            serde_json::from_str::<serde_json::Value>(stored).unwrap()
        );
    }

    #[test]
    fn the_detail_round_trips_through_core_and_the_wire() {
        let typed = CanopyEventDetail {
            event_type: "COMPLETE".into(),
            pull_id: Some("p-1".into()),
            pull_status: Some("SUCCESS".into()),
            monitoring_id: Some("m-1".into()),
            sequence: None,
        };
        let core = ProviderDetail::from(typed.clone());
        let ProviderDetail::Vendor(vendor) = &core else {
            panic!("a vendor detail: {core:?}");
        };
        assert_eq!(vendor.provider(), &PROVIDER);
        let json = serde_json::to_string(&core).unwrap();
        assert_eq!(serde_json::from_str::<ProviderDetail>(&json).unwrap(), core);

        let proto = CanopyDetailCodec.to_proto(vendor).unwrap();
        assert_eq!(proto, ProtoDetail::Canopy(typed.into()));
        assert_eq!(CanopyDetailCodec.to_core(&proto).as_ref(), Some(vendor));
        assert_eq!(
            CanopyDetailCodec.to_core(&ProtoDetail::Axle(v1::AxleEventDetail::default())),
            None
        );
    }
}
