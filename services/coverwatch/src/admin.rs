//! The operators' gRPC edge (AdminService): authenticate an admin key, decode, call the engine,
//! encode. Admin keys are not tenant keys; see [`AdminKeys`].

use std::collections::HashSet;

use coverwatch_core::ids::DeliveryId;
use coverwatch_engine::Engine;
use coverwatch_proto::convert::{self, FieldError};
use coverwatch_proto::v1;
use coverwatch_proto::v1::admin_service_server::AdminService;
use coverwatch_store::{DeliveryFilter, DeliveryRecord, DeliveryStatus};
use tonic::{Request, Response, Status};

use crate::auth::{ApiKeys, DevKey, hash_key};
use crate::config::Config;
use crate::grpc::status;

const DEFAULT_DELIVERY_PAGE: u32 = 50;
const MAX_DELIVERY_PAGE: u32 = 500;

/// The SHA-256 of each admin key, and the tenant keys (to tell "wrong kind of key" from
/// "no key we know").
#[derive(Debug, Clone)]
pub struct AdminKeys {
    hashes: HashSet<String>,
    tenants: ApiKeys,
}

impl AdminKeys {
    /// `admin_api_key_sha256`; when it is empty and no tenants are configured (development),
    /// the development key is the admin key too.
    pub fn from_config(config: &Config, tenants: ApiKeys, dev_key: &DevKey) -> Self {
        let mut hashes: HashSet<String> = config.admin_api_key_sha256.iter().cloned().collect();
        if hashes.is_empty() && config.tenants.is_empty() {
            let dev = match dev_key {
                DevKey::Generated(key) => Some(key.as_str()),
                DevKey::Configured => config.dev_api_key.as_deref(),
                DevKey::None => None,
            };
            hashes.extend(dev.map(hash_key));
        }
        Self { hashes, tenants }
    }

    /// `Ok` for an admin key; PERMISSION_DENIED for a tenant's key; UNAUTHENTICATED else.
    pub fn authorize(&self, authorization: Option<&str>) -> Result<(), Status> {
        let value = authorization.ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <admin key>` metadata")
        })?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("`authorization` must be `Bearer <admin key>`")
            })?;
        if self.hashes.contains(&hash_key(key)) {
            return Ok(());
        }
        if self.tenants.authenticate(Some(value)).is_ok() {
            return Err(Status::permission_denied(
                "a tenant's API key cannot call AdminService; use an admin key",
            ));
        }
        Err(Status::unauthenticated("unknown admin key"))
    }
}

pub struct AdminApi {
    engine: Engine,
    keys: AdminKeys,
}

impl AdminApi {
    pub fn new(engine: Engine, keys: AdminKeys) -> Self {
        Self { engine, keys }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or(""));
        self.keys.authorize(header)
    }
}

fn field(err: FieldError) -> Status {
    err.into()
}

fn delivery_id(value: &str) -> Result<DeliveryId, Status> {
    convert::required_string(value, "delivery_id").map_err(field)?;
    value.parse().map_err(|e: coverwatch_core::ids::IdError| {
        field(FieldError::new("delivery_id", e.to_string()))
    })
}

fn status_filter(value: i32) -> Result<Option<DeliveryStatus>, Status> {
    let proto = v1::DeliveryStatus::try_from(value).map_err(|_| {
        field(FieldError::new(
            "status",
            format!("unknown DeliveryStatus value {value}"),
        ))
    })?;
    Ok(match proto {
        v1::DeliveryStatus::Unspecified => None,
        v1::DeliveryStatus::Pending => Some(DeliveryStatus::Pending),
        v1::DeliveryStatus::Done => Some(DeliveryStatus::Done),
        v1::DeliveryStatus::Dead => Some(DeliveryStatus::Dead),
        v1::DeliveryStatus::Unmatched => Some(DeliveryStatus::Unmatched),
    })
}

fn status_to_proto(value: DeliveryStatus) -> v1::DeliveryStatus {
    match value {
        DeliveryStatus::Pending => v1::DeliveryStatus::Pending,
        DeliveryStatus::Done => v1::DeliveryStatus::Done,
        DeliveryStatus::Dead => v1::DeliveryStatus::Dead,
        DeliveryStatus::Unmatched => v1::DeliveryStatus::Unmatched,
    }
}

/// The page token is the last listed delivery's receipt sequence, opaque to callers.
fn page_token(value: &str) -> Result<Option<i64>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .strip_prefix("s")
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument("page_token: not a token returned by ListDeliveries")
        })
}

/// A delivery for the wire; `full` adds headers and body (GetDelivery, ReplayDelivery).
fn delivery(record: DeliveryRecord, full: bool) -> v1::Delivery {
    let (tenant_id, link_id) = match record.link {
        Some((tenant, link)) => (Some(tenant.to_string()), Some(link.to_string())),
        None => (None, None),
    };
    let body_purged = record.body_size.is_none();
    v1::Delivery {
        id: record.id.to_string(),
        provider: v1::Provider::from(record.provider) as i32,
        status: status_to_proto(record.status) as i32,
        dedupe_key: record.dedupe_key,
        tenant_id,
        link_id,
        path: record.path,
        attempts: i32::try_from(record.attempts).unwrap_or(i32::MAX),
        last_error: record.last_error,
        received_at: Some(convert::timestamp(record.received_at)),
        next_attempt_at: Some(convert::timestamp(record.next_attempt_at)),
        processed_at: convert::optional_timestamp(record.processed_at),
        headers: if full {
            record
                .headers
                .into_iter()
                .map(|(name, value)| v1::DeliveryHeader { name, value })
                .collect()
        } else {
            Vec::new()
        },
        body: if full {
            record.body.unwrap_or_default()
        } else {
            Vec::new()
        },
        body_size: record
            .body_size
            .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)),
        body_purged,
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_deliveries(
        &self,
        request: Request<v1::ListDeliveriesRequest>,
    ) -> Result<Response<v1::ListDeliveriesResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let filter = DeliveryFilter {
            status: status_filter(r.status)?,
            provider: convert::optional_provider(r.provider, "provider").map_err(field)?,
            link_id: convert::optional_link_id(r.link_id.as_deref(), "link_id").map_err(field)?,
            received_since: convert::optional_datetime(r.received_since.as_ref(), "received_since")
                .map_err(field)?,
            after_seq: page_token(&r.page_token)?,
            limit: u64::from(
                convert::page_size(
                    r.page_size,
                    DEFAULT_DELIVERY_PAGE,
                    MAX_DELIVERY_PAGE,
                    "page_size",
                )
                .map_err(field)?,
            ),
        };
        let page = self.engine.list_deliveries(&filter).await.map_err(status)?;
        Ok(Response::new(v1::ListDeliveriesResponse {
            deliveries: page
                .deliveries
                .into_iter()
                .map(|d| delivery(d, false))
                .collect(),
            next_page_token: page
                .next_after
                .map(|seq| format!("s{seq}"))
                .unwrap_or_default(),
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<v1::GetDeliveryRequest>,
    ) -> Result<Response<v1::GetDeliveryResponse>, Status> {
        self.authorize(&request)?;
        let id = delivery_id(&request.get_ref().delivery_id)?;
        let record = self.engine.get_delivery(&id).await.map_err(status)?;
        Ok(Response::new(v1::GetDeliveryResponse {
            delivery: Some(delivery(record, true)),
        }))
    }

    async fn replay_delivery(
        &self,
        request: Request<v1::ReplayDeliveryRequest>,
    ) -> Result<Response<v1::ReplayDeliveryResponse>, Status> {
        self.authorize(&request)?;
        let id = delivery_id(&request.get_ref().delivery_id)?;
        let record = self.engine.replay_delivery(&id).await.map_err(status)?;
        Ok(Response::new(v1::ReplayDeliveryResponse {
            delivery: Some(delivery(record, true)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConfig;

    fn keys(config: &Config) -> (AdminKeys, DevKey) {
        let (tenants, dev) = ApiKeys::from_config(config);
        (AdminKeys::from_config(config, tenants, &dev), dev)
    }

    #[test]
    fn admin_keys_are_not_tenant_keys() {
        let config = Config {
            tenants: vec![TenantConfig {
                id: "acme".into(),
                api_key_sha256: vec![hash_key("acme-key")],
            }],
            admin_api_key_sha256: vec![hash_key("admin-key")],
            ..Config::default()
        };
        let (admin, _) = keys(&config);
        assert!(admin.authorize(Some("Bearer admin-key")).is_ok());
        let code = |header| admin.authorize(header).unwrap_err().code();
        assert_eq!(code(Some("Bearer acme-key")), tonic::Code::PermissionDenied);
        assert_eq!(code(Some("Bearer other")), tonic::Code::Unauthenticated);
        assert_eq!(code(Some("admin-key")), tonic::Code::Unauthenticated);
        assert_eq!(code(None), tonic::Code::Unauthenticated);
        let (tenants, _) = ApiKeys::from_config(&config);
        assert!(tenants.authenticate(Some("Bearer admin-key")).is_err());
    }

    #[test]
    fn in_development_the_development_key_is_also_the_admin_key() {
        let config = Config {
            dev_api_key: Some("development-key-123".into()),
            ..Config::default()
        };
        let (admin, _) = keys(&config);
        assert!(admin.authorize(Some("Bearer development-key-123")).is_ok());

        let (admin, dev) = keys(&Config::default());
        let DevKey::Generated(key) = dev else {
            panic!("a generated development key")
        };
        assert!(admin.authorize(Some(&format!("Bearer {key}"))).is_ok());

        // Configured admin keys replace it.
        let config = Config {
            dev_api_key: Some("development-key-123".into()),
            admin_api_key_sha256: vec![hash_key("admin-key")],
            ..Config::default()
        };
        let (admin, _) = keys(&config);
        assert_eq!(
            admin
                .authorize(Some("Bearer development-key-123"))
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        assert_eq!(page_token("").unwrap(), None);
        assert_eq!(page_token("s42").unwrap(), Some(42));
        for bad in ["42", "s", "s-1", "sx"] {
            let err = page_token(bad).unwrap_err();
            assert!(err.message().starts_with("page_token"), "{bad}: {err:?}");
        }
    }
}
