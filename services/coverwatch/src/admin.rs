//! The operators' gRPC edge (AdminService): authenticate an admin key, decode, call the engine,
//! encode. Admin keys are not tenant keys; see [`AdminKeys`].

use std::collections::HashSet;

use coverwatch_core::ids::{ApiKeyId, ConnectionId, DeliveryId, IdError};
use coverwatch_core::provider::InvalidProviderId;
use coverwatch_core::{ProviderId, TenantId};
use coverwatch_engine::{ConnectionView, Engine};
use coverwatch_proto::convert::{self, FieldError};
use coverwatch_proto::v1;
use coverwatch_proto::v1::admin_service_server::AdminService;
use coverwatch_store::{
    ApiKeyRecord, DeliveryFilter, DeliveryRecord, DeliveryStatus, KeySource, Store, TenantError,
    TenantRecord, TenantSource,
};
use tonic::{Request, Response, Status};

use crate::auth::{ApiKeys, DevKey, bearer, generate_key, hash_key, store_status};
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
    pub async fn authorize(&self, authorization: Option<&str>) -> Result<(), Status> {
        let key = bearer(authorization).map_err(|_| match authorization {
            None => Status::unauthenticated("missing `authorization: Bearer <admin key>` metadata"),
            Some(_) => Status::unauthenticated("`authorization` must be `Bearer <admin key>`"),
        })?;
        if self.hashes.contains(&hash_key(key)) {
            return Ok(());
        }
        if self
            .tenants
            .resolve(key)
            .await
            .map_err(store_status)?
            .is_some()
        {
            return Err(Status::permission_denied(
                "a tenant's API key cannot call AdminService; use an admin key",
            ));
        }
        Err(Status::unauthenticated("unknown admin key"))
    }

    /// The tenant keys, whose cache tenant and key changes clear.
    pub fn tenant_keys(&self) -> &ApiKeys {
        &self.tenants
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

    async fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("").to_owned());
        self.keys.authorize(header.as_deref()).await
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
        provider: v1::Provider::from(&record.provider) as i32,
        provider_id: record.provider.to_string(),
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

const DEFAULT_TENANT_PAGE: u32 = 50;
const MAX_TENANT_PAGE: u32 = 500;
const MAX_DISPLAY_NAME: usize = 200;
const MAX_LABEL: usize = 100;

fn tenant_id(value: &str) -> Result<TenantId, Status> {
    convert::required_string(value, "tenant_id").map_err(field)?;
    value
        .parse()
        .map_err(|e: IdError| field(FieldError::new("tenant_id", e.to_string())))
}

fn api_key_id(value: &str) -> Result<ApiKeyId, Status> {
    convert::required_string(value, "api_key_id").map_err(field)?;
    value
        .parse()
        .map_err(|e: IdError| field(FieldError::new("api_key_id", e.to_string())))
}

/// Free text for people (a display name, a label): bounded, and nothing that could move a
/// terminal's cursor when an operator lists it.
fn text(value: &str, name: &str, max: usize) -> Result<String, Status> {
    if value.chars().count() > max {
        return Err(field(FieldError::new(
            name,
            format!("must be at most {max} characters"),
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(field(FieldError::new(
            name,
            "must not contain control characters",
        )));
    }
    Ok(value.trim().to_owned())
}

/// The page token of ListTenants is `t` and the last listed tenant's id, opaque to callers.
fn tenant_page_token(value: &str) -> Result<Option<TenantId>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .strip_prefix("t")
        .and_then(|id| id.parse::<TenantId>().ok())
        .map(Some)
        .ok_or_else(|| Status::invalid_argument("page_token: not a token returned by ListTenants"))
}

fn connection_id(value: &str) -> Result<ConnectionId, Status> {
    convert::required_string(value, "connection_id").map_err(field)?;
    value
        .parse()
        .map_err(|e: IdError| field(FieldError::new("connection_id", e.to_string())))
}

/// The page token of ListVendorConnections is `p` and the last listed provider.
fn connection_page_token(value: &str) -> Result<Option<ProviderId>, Status> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .strip_prefix("p")
        .and_then(|id| id.parse::<ProviderId>().ok())
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument("page_token: not a token returned by ListVendorConnections")
        })
}

fn vendor_connection(view: ConnectionView) -> v1::VendorConnection {
    v1::VendorConnection {
        id: view.id.to_string(),
        tenant_id: view.tenant_id.to_string(),
        provider: view.provider.to_string(),
        version: view.version,
        public_settings: serde_json::Value::Object(view.public_settings).to_string(),
        webhook_path: view.webhook_path.unwrap_or_default(),
        remote_check: match view.checked_remotely {
            None => v1::RemoteCheck::Unspecified,
            Some(true) => v1::RemoteCheck::Accepted,
            Some(false) => v1::RemoteCheck::NotAvailable,
        } as i32,
        created_at: Some(convert::timestamp(view.created_at)),
        updated_at: Some(convert::timestamp(view.updated_at)),
    }
}

fn tenant_status(err: TenantError) -> Status {
    match err {
        TenantError::AlreadyExists(_) => Status::already_exists(err.to_string()),
        TenantError::NotFound(_) | TenantError::KeyNotFound(_) => {
            Status::not_found(err.to_string())
        }
        TenantError::KeyRevoked { .. }
        | TenantError::ConfiguredKey(_)
        | TenantError::HashTaken { .. } => Status::failed_precondition(err.to_string()),
        TenantError::Store(e) => store_status(e),
    }
}

fn source_to_proto(config: bool) -> v1::TenantSource {
    if config {
        v1::TenantSource::Config
    } else {
        v1::TenantSource::Api
    }
}

fn tenant(record: TenantRecord) -> v1::Tenant {
    v1::Tenant {
        id: record.id.to_string(),
        display_name: record.display_name,
        state: if record.enabled {
            v1::TenantState::Enabled
        } else {
            v1::TenantState::Disabled
        } as i32,
        source: source_to_proto(record.source == TenantSource::Config) as i32,
        created_at: Some(convert::timestamp(record.created_at)),
        disabled_at: convert::optional_timestamp(record.disabled_at),
        active_api_keys: i32::try_from(record.active_keys).unwrap_or(i32::MAX),
    }
}

fn api_key(record: ApiKeyRecord) -> v1::ApiKey {
    v1::ApiKey {
        id: record.id.to_string(),
        tenant_id: record.tenant_id.to_string(),
        label: record.label,
        source: source_to_proto(record.source == KeySource::Config) as i32,
        created_at: Some(convert::timestamp(record.created_at)),
        revoked_at: convert::optional_timestamp(record.revoked_at),
    }
}

impl AdminApi {
    fn store(&self) -> &Store {
        self.engine.store()
    }

    /// What keys authenticate changed: this process stops using what it cached before the
    /// call returns (other replicas hear of it through the change's notification).
    fn changed(&self) {
        self.keys.tenant_keys().invalidate();
    }

    async fn set_enabled(&self, value: &str, enabled: bool) -> Result<v1::Tenant, Status> {
        let id = tenant_id(value)?;
        let record = self
            .store()
            .set_tenant_enabled(&id, enabled)
            .await
            .map_err(tenant_status)?;
        self.changed();
        Ok(tenant(record))
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn put_vendor_connection(
        &self,
        request: Request<v1::PutVendorConnectionRequest>,
    ) -> Result<Response<v1::PutVendorConnectionResponse>, Status> {
        self.authorize(&request).await?;
        let r = request.into_inner();
        let tenant = tenant_id(&r.tenant_id)?;
        convert::required_string(&r.provider, "provider").map_err(field)?;
        let provider: ProviderId = r
            .provider
            .parse()
            .map_err(|e: InvalidProviderId| field(FieldError::new("provider", e.to_string())))?;
        // serde_json's syntax errors name a line and column, never the text around them: the
        // settings hold secrets.
        let settings: serde_json::Value = serde_json::from_str(&r.settings).map_err(|e| {
            field(FieldError::new(
                "settings",
                format!(
                    "not a JSON object (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            ))
        })?;
        let view = self
            .engine
            .put_vendor_connection(&tenant, &provider, settings)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::PutVendorConnectionResponse {
            connection: Some(vendor_connection(view)),
        }))
    }

    async fn get_vendor_connection(
        &self,
        request: Request<v1::GetVendorConnectionRequest>,
    ) -> Result<Response<v1::GetVendorConnectionResponse>, Status> {
        self.authorize(&request).await?;
        let id = connection_id(&request.get_ref().connection_id)?;
        let view = self
            .engine
            .get_vendor_connection(&id)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::GetVendorConnectionResponse {
            connection: Some(vendor_connection(view)),
        }))
    }

    async fn list_vendor_connections(
        &self,
        request: Request<v1::ListVendorConnectionsRequest>,
    ) -> Result<Response<v1::ListVendorConnectionsResponse>, Status> {
        self.authorize(&request).await?;
        let r = request.into_inner();
        let tenant = tenant_id(&r.tenant_id)?;
        let limit = convert::page_size(
            r.page_size,
            DEFAULT_TENANT_PAGE,
            MAX_TENANT_PAGE,
            "page_size",
        )
        .map_err(field)?;
        let after = connection_page_token(&r.page_token)?;
        let (views, next) = self
            .engine
            .list_vendor_connections(&tenant, after.as_ref(), u64::from(limit))
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListVendorConnectionsResponse {
            connections: views.into_iter().map(vendor_connection).collect(),
            next_page_token: next.map(|p| format!("p{p}")).unwrap_or_default(),
        }))
    }

    async fn delete_vendor_connection(
        &self,
        request: Request<v1::DeleteVendorConnectionRequest>,
    ) -> Result<Response<v1::DeleteVendorConnectionResponse>, Status> {
        self.authorize(&request).await?;
        let id = connection_id(&request.get_ref().connection_id)?;
        self.engine
            .delete_vendor_connection(&id)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::DeleteVendorConnectionResponse {}))
    }

    async fn list_deliveries(
        &self,
        request: Request<v1::ListDeliveriesRequest>,
    ) -> Result<Response<v1::ListDeliveriesResponse>, Status> {
        self.authorize(&request).await?;
        let r = request.into_inner();
        let filter = DeliveryFilter {
            status: status_filter(r.status)?,
            provider: convert::provider_choice(
                r.provider,
                "provider",
                &r.provider_id,
                "provider_id",
                self.engine.providers().kinds(),
            )
            .map_err(field)?,
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
        self.authorize(&request).await?;
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
        self.authorize(&request).await?;
        let id = delivery_id(&request.get_ref().delivery_id)?;
        let record = self.engine.replay_delivery(&id).await.map_err(status)?;
        Ok(Response::new(v1::ReplayDeliveryResponse {
            delivery: Some(delivery(record, true)),
        }))
    }

    async fn create_tenant(
        &self,
        request: Request<v1::CreateTenantRequest>,
    ) -> Result<Response<v1::CreateTenantResponse>, Status> {
        self.authorize(&request).await?;
        let r = request.into_inner();
        let id = tenant_id(&r.tenant_id)?;
        let display_name = text(&r.display_name, "display_name", MAX_DISPLAY_NAME)?;
        let record = self
            .store()
            .create_tenant(&id, &display_name)
            .await
            .map_err(tenant_status)?;
        Ok(Response::new(v1::CreateTenantResponse {
            tenant: Some(tenant(record)),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<v1::GetTenantRequest>,
    ) -> Result<Response<v1::GetTenantResponse>, Status> {
        self.authorize(&request).await?;
        let id = tenant_id(&request.get_ref().tenant_id)?;
        let record = self.store().tenant(&id).await.map_err(tenant_status)?;
        let keys = self
            .store()
            .tenant_keys(&id)
            .await
            .map_err(|e| tenant_status(e.into()))?;
        Ok(Response::new(v1::GetTenantResponse {
            tenant: Some(tenant(record)),
            api_keys: keys.into_iter().map(api_key).collect(),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<v1::ListTenantsRequest>,
    ) -> Result<Response<v1::ListTenantsResponse>, Status> {
        self.authorize(&request).await?;
        let r = request.into_inner();
        let limit = convert::page_size(
            r.page_size,
            DEFAULT_TENANT_PAGE,
            MAX_TENANT_PAGE,
            "page_size",
        )
        .map_err(field)?;
        let after = tenant_page_token(&r.page_token)?;
        let page = self
            .store()
            .list_tenants(after.as_ref().map(TenantId::as_str), u64::from(limit))
            .await
            .map_err(|e| tenant_status(e.into()))?;
        Ok(Response::new(v1::ListTenantsResponse {
            tenants: page.tenants.into_iter().map(tenant).collect(),
            next_page_token: page
                .next_after
                .map(|id| format!("t{id}"))
                .unwrap_or_default(),
        }))
    }

    async fn disable_tenant(
        &self,
        request: Request<v1::DisableTenantRequest>,
    ) -> Result<Response<v1::DisableTenantResponse>, Status> {
        self.authorize(&request).await?;
        let tenant = self
            .set_enabled(&request.get_ref().tenant_id, false)
            .await?;
        Ok(Response::new(v1::DisableTenantResponse {
            tenant: Some(tenant),
        }))
    }

    async fn enable_tenant(
        &self,
        request: Request<v1::EnableTenantRequest>,
    ) -> Result<Response<v1::EnableTenantResponse>, Status> {
        self.authorize(&request).await?;
        let tenant = self.set_enabled(&request.get_ref().tenant_id, true).await?;
        Ok(Response::new(v1::EnableTenantResponse {
            tenant: Some(tenant),
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<v1::CreateApiKeyRequest>,
    ) -> Result<Response<v1::CreateApiKeyResponse>, Status> {
        self.authorize(&request).await?;
        let r = request.into_inner();
        let id = tenant_id(&r.tenant_id)?;
        let label = text(&r.label, "label", MAX_LABEL)?;
        let key = generate_key();
        let record = self
            .store()
            .create_api_key(&id, &hash_key(&key), &label)
            .await
            .map_err(tenant_status)?;
        self.changed();
        Ok(Response::new(v1::CreateApiKeyResponse {
            api_key: Some(api_key(record)),
            key,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<v1::RevokeApiKeyRequest>,
    ) -> Result<Response<v1::RevokeApiKeyResponse>, Status> {
        self.authorize(&request).await?;
        let id = api_key_id(&request.get_ref().api_key_id)?;
        let record = self
            .store()
            .revoke_api_key(&id)
            .await
            .map_err(tenant_status)?;
        self.changed();
        Ok(Response::new(v1::RevokeApiKeyResponse {
            api_key: Some(api_key(record)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConfig;

    async fn keys(config: &Config) -> (AdminKeys, DevKey, Store, String) {
        let url = coverwatch_store::testing::fresh_database_url().await;
        let keyring = coverwatch_store::Keyring::from_base64(&[(
            "t".into(),
            coverwatch_store::Keyring::generate_key_base64(),
        )])
        .unwrap();
        let store = Store::connect(&coverwatch_store::ConnectOptions::new(url.clone()), keyring)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let (tenants, dev) = ApiKeys::load(store.clone(), config).await.unwrap();
        (
            AdminKeys::from_config(config, tenants, &dev),
            dev,
            store,
            url,
        )
    }

    async fn done(store: Store, url: String) {
        store.close().await;
        coverwatch_store::testing::drop_database(&url).await;
    }

    async fn code(admin: &AdminKeys, header: Option<&str>) -> Result<(), tonic::Code> {
        admin.authorize(header).await.map_err(|s| s.code())
    }

    #[tokio::test]
    async fn admin_keys_are_not_tenant_keys() {
        let config = Config {
            tenants: vec![TenantConfig {
                id: "acme".into(),
                api_key_sha256: vec![hash_key("acme-key")],
            }],
            admin_api_key_sha256: vec![hash_key("admin-key")],
            ..Config::default()
        };
        let (admin, _, store, url) = keys(&config).await;
        assert_eq!(code(&admin, Some("Bearer admin-key")).await, Ok(()));
        use tonic::Code::{PermissionDenied, Unauthenticated};
        assert_eq!(
            code(&admin, Some("Bearer acme-key")).await,
            Err(PermissionDenied)
        );
        assert_eq!(
            code(&admin, Some("Bearer other")).await,
            Err(Unauthenticated)
        );
        assert_eq!(code(&admin, Some("admin-key")).await, Err(Unauthenticated));
        assert_eq!(code(&admin, None).await, Err(Unauthenticated));
        assert!(
            admin
                .tenant_keys()
                .authenticate(Some("Bearer admin-key"))
                .await
                .is_err()
        );
        done(store, url).await;
    }

    #[tokio::test]
    async fn in_development_the_development_key_is_also_the_admin_key() {
        let config = Config {
            dev_api_key: Some("development-key-123".into()),
            ..Config::default()
        };
        let (admin, _, store, url) = keys(&config).await;
        assert_eq!(
            code(&admin, Some("Bearer development-key-123")).await,
            Ok(())
        );
        done(store, url).await;

        let (admin, dev, store, url) = keys(&Config::default()).await;
        let DevKey::Generated(key) = dev else {
            panic!("a generated development key")
        };
        assert_eq!(code(&admin, Some(&format!("Bearer {key}"))).await, Ok(()));
        done(store, url).await;

        // Configured admin keys replace it.
        let config = Config {
            dev_api_key: Some("development-key-123".into()),
            admin_api_key_sha256: vec![hash_key("admin-key")],
            ..Config::default()
        };
        let (admin, _, store, url) = keys(&config).await;
        assert_eq!(
            code(&admin, Some("Bearer development-key-123")).await,
            Err(tonic::Code::PermissionDenied)
        );
        done(store, url).await;
    }

    #[test]
    fn tenant_page_tokens_and_free_text_are_checked() {
        assert_eq!(tenant_page_token("").unwrap(), None);
        assert_eq!(
            tenant_page_token("tacme-1").unwrap().unwrap().as_str(),
            "acme-1"
        );
        for bad in ["acme", "t", "tAcme", "t-acme"] {
            let err = tenant_page_token(bad).unwrap_err();
            assert!(err.message().starts_with("page_token"), "{bad}: {err:?}");
        }
        assert_eq!(
            text("  Acme Lending ", "label", 20).unwrap(),
            "Acme Lending"
        );
        assert!(text(&"é".repeat(20), "label", 20).is_ok());
        let long = text(&"é".repeat(21), "label", 20).unwrap_err();
        assert!(long.message().starts_with("label: "), "{long:?}");
        let control = text("a\u{1b}[31m", "display_name", 20).unwrap_err();
        assert!(
            control.message().starts_with("display_name: "),
            "{control:?}"
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
