//! The vendor's side of an error, carried in the gRPC status details as the API reference
//! promises: a `google.rpc.Status` whose `details` hold a packed `VendorErrorDetail`.

use coverwatch_core::ProviderError;
use coverwatch_core::provider::VendorErrorInfo;
use prost::Message as _;
use prost::bytes::Bytes;

use crate::v1;

/// The `Any` type URL of [`v1::VendorErrorDetail`].
pub const VENDOR_ERROR_DETAIL_TYPE_URL: &str =
    "type.googleapis.com/coverwatch.v1.VendorErrorDetail";

/// `google.rpc.Status`, declared here rather than generated: it is the only message of
/// `google/rpc` we need, and tonic-types would bring much more.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// What the vendor said, for the errors that came from a vendor's answer (or its silence);
/// `None` for errors the vendor had no part in.
pub fn vendor_error_detail(error: &ProviderError) -> Option<v1::VendorErrorDetail> {
    let (provider, vendor): (_, &VendorErrorInfo) = match error {
        ProviderError::Unavailable {
            provider, vendor, ..
        }
        | ProviderError::Rejected {
            provider, vendor, ..
        } => (provider, vendor),
        ProviderError::Unsupported { .. } | ProviderError::Malformed { .. } => return None,
    };
    Some(v1::VendorErrorDetail {
        provider: super::enums::provider_i32(provider),
        provider_id: provider.to_string(),
        http_status: vendor.http_status.map(i32::from),
        code: vendor.code.clone(),
        request_id: vendor.request_id.clone(),
    })
}

/// The same status, with `detail` in its details (replacing any there were).
pub fn with_vendor_error_detail(
    status: tonic::Status,
    detail: &v1::VendorErrorDetail,
) -> tonic::Status {
    let details = RpcStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: vec![prost_types::Any {
            type_url: VENDOR_ERROR_DETAIL_TYPE_URL.to_owned(),
            value: detail.encode_to_vec(),
        }],
    };
    tonic::Status::with_details_and_metadata(
        status.code(),
        status.message(),
        Bytes::from(details.encode_to_vec()),
        status.metadata().clone(),
    )
}

/// The vendor detail a status carries, if any (for Rust callers and tests).
pub fn vendor_error_detail_of(status: &tonic::Status) -> Option<v1::VendorErrorDetail> {
    RpcStatus::decode(status.details())
        .ok()?
        .details
        .into_iter()
        .find(|any| any.type_url == VENDOR_ERROR_DETAIL_TYPE_URL)
        .and_then(|any| v1::VendorErrorDetail::decode(any.value.as_slice()).ok())
}

#[cfg(test)]
mod tests {
    use coverwatch_core::ProviderId;
    use coverwatch_core::provider::RejectionKind;

    use super::*;

    #[test]
    fn vendor_detail_travels_in_the_status() {
        let error = ProviderError::Rejected {
            provider: ProviderId::from_static("canopy"),
            kind: RejectionKind::FailedPrecondition,
            message: "monitoring is inactive".into(),
            vendor: VendorErrorInfo {
                http_status: Some(400),
                code: Some("MONITORING_INACTIVE".into()),
                request_id: None,
            },
        };
        let detail = vendor_error_detail(&error).unwrap();
        assert_eq!(
            detail,
            v1::VendorErrorDetail {
                provider: v1::Provider::Canopy.into(),
                provider_id: "canopy".into(),
                http_status: Some(400),
                code: Some("MONITORING_INACTIVE".into()),
                request_id: None,
            }
        );

        let mut status = tonic::Status::failed_precondition(error.to_string());
        status
            .metadata_mut()
            .insert("x-request-id", "r-1".parse().unwrap());
        let status = with_vendor_error_detail(status, &detail);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), error.to_string());
        assert_eq!(status.metadata().get("x-request-id").unwrap(), "r-1");
        assert_eq!(vendor_error_detail_of(&status), Some(detail));

        // What a generic gRPC client sees: a google.rpc.Status with the same code.
        let rpc = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(rpc.code, tonic::Code::FailedPrecondition as i32);
        assert_eq!(rpc.details[0].type_url, VENDOR_ERROR_DETAIL_TYPE_URL);
    }

    #[test]
    fn errors_the_vendor_had_no_part_in_carry_no_detail() {
        let error = ProviderError::Unsupported {
            provider: ProviderId::from_static("axle"),
            capability: "on-demand refresh",
        };
        assert_eq!(vendor_error_detail(&error), None);
        assert_eq!(
            vendor_error_detail_of(&tonic::Status::unavailable("down")),
            None
        );
    }
}
