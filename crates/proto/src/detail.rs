//! Vendor event detail and vendor verdicts on the wire. Core carries a vendor's detail
//! ([`VendorDetail`]) and its verdict on a link ([`VendorVerdict`]) untyped; each vendor crate
//! knows its own typed forms and its arms of the `Event.provider_detail` and
//! `VendorCheck.verdict` oneofs, and implements [`DetailCodec`] for them. This crate never
//! names a vendor crate (they depend on it): the service hands their codecs in as
//! [`DetailCodecs`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use coverwatch_core::event::VendorDetail;
use coverwatch_core::provider::VendorVerdict;
use coverwatch_core::{ProviderDetail, ProviderId};

pub use crate::v1::event::ProviderDetail as ProtoDetail;
pub use crate::v1::vendor_check::Verdict as ProtoVerdict;

/// One vendor's conversions between its core detail (and verdict) and its arms of the proto
/// oneofs. The verdict lives on the same trait rather than in a second registry so that a
/// vendor still registers its wire forms with one line in `providers::detail_codecs`, and a
/// vendor without a check of its own simply keeps the default.
pub trait DetailCodec: Send + Sync {
    /// The vendor whose detail this converts.
    fn provider(&self) -> ProviderId;

    /// The proto arm for one of this vendor's details; `None` when the detail does not read as
    /// this vendor's typed detail (a stored form this build does not know). The event then
    /// goes out without detail rather than not at all: `provider_id` still says who sent it.
    fn to_proto(&self, detail: &VendorDetail) -> Option<ProtoDetail>;

    /// The core detail of this vendor's arm; `None` for another vendor's arm.
    fn to_core(&self, detail: &ProtoDetail) -> Option<VendorDetail>;

    /// The `VendorCheck.verdict` arm for one of this vendor's verdicts; `None` when the vendor
    /// has no arm (it gives no verdicts) or the verdict does not read as its typed form. A
    /// verdict is only ever sent, never read back, so there is no reverse conversion.
    fn verdict_to_proto(&self, _verdict: &VendorVerdict) -> Option<ProtoVerdict> {
        None
    }
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

    /// The proto arm of a vendor's verdict; `None` for a vendor with no codec here or no arm.
    pub fn verdict_to_proto(&self, verdict: &VendorVerdict) -> Option<ProtoVerdict> {
        self.by_provider
            .get(verdict.provider())?
            .verdict_to_proto(verdict)
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
