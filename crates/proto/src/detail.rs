//! Vendor event detail on the wire. Core carries a vendor's detail untyped
//! ([`VendorDetail`]); each vendor crate knows its own typed form and its arm of the
//! `Event.provider_detail` oneof, and implements [`DetailCodec`] for it. This crate never
//! names a vendor crate (they depend on it): the service hands their codecs in as
//! [`DetailCodecs`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use coverwatch_core::event::VendorDetail;
use coverwatch_core::{ProviderDetail, ProviderId};

pub use crate::v1::event::ProviderDetail as ProtoDetail;

/// One vendor's conversions between its core detail and its arm of the proto oneof.
pub trait DetailCodec: Send + Sync {
    /// The vendor whose detail this converts.
    fn provider(&self) -> ProviderId;

    /// The proto arm for one of this vendor's details; `None` when the detail does not read as
    /// this vendor's typed detail (a stored form this build does not know). The event then
    /// goes out without detail rather than not at all: `provider_id` still says who sent it.
    fn to_proto(&self, detail: &VendorDetail) -> Option<ProtoDetail>;

    /// The core detail of this vendor's arm; `None` for another vendor's arm.
    fn to_core(&self, detail: &ProtoDetail) -> Option<VendorDetail>;
}

/// The codecs of every vendor this build knows, by vendor. A vendor without one still has
/// its events delivered, with `provider_detail` unset.
#[derive(Clone, Default)]
pub struct DetailCodecs {
    by_provider: BTreeMap<ProviderId, Arc<dyn DetailCodec>>,
}

impl DetailCodecs {
    /// # Panics
    /// When two codecs claim the same vendor: a mistake of the wiring, found by the first
    /// test that builds it.
    pub fn new(codecs: impl IntoIterator<Item = Arc<dyn DetailCodec>>) -> Self {
        let mut by_provider = BTreeMap::new();
        for codec in codecs {
            let provider = codec.provider();
            let previous = by_provider.insert(provider.clone(), codec);
            assert!(
                previous.is_none(),
                "two detail codecs for provider `{provider}`"
            );
        }
        Self { by_provider }
    }

    /// The proto oneof for a core detail: unset for [`ProviderDetail::None`], and for a vendor
    /// with no codec here.
    pub fn to_proto(&self, detail: &ProviderDetail) -> Option<ProtoDetail> {
        let ProviderDetail::Vendor(vendor) = detail else {
            return None;
        };
        self.by_provider.get(vendor.provider())?.to_proto(vendor)
    }

    /// The core detail of a proto oneof: [`ProviderDetail::None`] when unset or when no codec
    /// here reads that arm.
    pub fn to_core(&self, detail: Option<&ProtoDetail>) -> ProviderDetail {
        detail
            .and_then(|detail| {
                self.by_provider
                    .values()
                    .find_map(|codec| codec.to_core(detail))
            })
            .map_or(ProviderDetail::None, ProviderDetail::Vendor)
    }

    /// The vendors with a codec, in name order.
    pub fn providers(&self) -> impl Iterator<Item = &ProviderId> + '_ {
        self.by_provider.keys()
    }
}

impl fmt::Debug for DetailCodecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_provider.keys()).finish()
    }
}
