//! Tenants and API keys as a runtime resource (AdminService): a tenant and key created on one
//! replica work on another at once; a revoked key and a disabled tenant are refused on every
//! replica; bad input is answered precisely with nothing stored; a disabled tenant's webhooks
//! are still stored and processed; configured tenants keep working.
//!
//! On PostgreSQL two replicas share the database and changes cross between them through
//! LISTEN/NOTIFY. On SQLite there is one process by design, so "both replicas" are the same
//! server and every assertion still runs.

use std::sync::Arc;
use std::time::Duration;

use coverwatch::Overrides;
use coverwatch::auth::{CACHE_TTL, hash_key};
use coverwatch_engine::ProviderRegistry;
use coverwatch_proto::v1::admin_service_client::AdminServiceClient;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{TENANT_A, TestServer, eventually, fast_worker, test_config, v1};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ADMIN_KEY: &str = "tenants-admin-key-0123456789";

/// How long another replica may take to honour a change. Well under [`CACHE_TTL`], so that
/// only the notification, not the cache expiring, can make these tests pass.
const ACROSS_REPLICAS: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Bearer(String);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.0).parse().unwrap(),
        );
        Ok(request)
    }
}

type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

async fn admin(server: &TestServer, key: &str) -> Admin {
    AdminServiceClient::with_interceptor(server.channel().await, Bearer(key.to_owned()))
}

async fn start(config: coverwatch::Config) -> (TestServer, FakeProvider) {
    let fake = FakeProvider::default();
    let server = TestServer::start_with(
        config,
        Overrides {
            providers: Some(ProviderRegistry::new().register(Arc::new(fake.clone()))),
            worker: Some(fast_worker()),
            ..Default::default()
        },
    )
    .await;
    (server, fake)
}

async fn config() -> coverwatch::Config {
    let mut config = test_config().await;
    config.admin_api_key_sha256 = vec![hash_key(ADMIN_KEY)];
    config
}

/// What a tenant key gets from MonitoringService: `Ok` or the status code and message.
async fn call(server: &TestServer, key: &str) -> Result<(), (Code, String)> {
    server
        .client_with_key(Some(key))
        .await
        .list_links(v1::ListLinksRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| (s.code(), s.message().to_owned()))
}

/// Poll until `key` gets `wanted` from `server`, failing after [`ACROSS_REPLICAS`].
async fn until(server: &TestServer, key: &str, wanted: Result<(), Code>, what: &str) {
    eventually(what, ACROSS_REPLICAS, || async {
        (call(server, key).await.map_err(|(code, _)| code) == wanted).then_some(())
    })
    .await;
}

async fn create_tenant(admin: &mut Admin, id: &str) -> v1::Tenant {
    admin
        .create_tenant(v1::CreateTenantRequest {
            tenant_id: id.into(),
            display_name: format!("{id} Inc."),
        })
        .await
        .expect("CreateTenant")
        .into_inner()
        .tenant
        .expect("a tenant")
}

async fn create_key(admin: &mut Admin, tenant: &str) -> (v1::ApiKey, String) {
    let answer = admin
        .create_api_key(v1::CreateApiKeyRequest {
            tenant_id: tenant.into(),
            label: "test".into(),
        })
        .await
        .expect("CreateApiKey")
        .into_inner();
    (answer.api_key.expect("a key record"), answer.key)
}

async fn get_tenant(admin: &mut Admin, id: &str) -> v1::GetTenantResponse {
    admin
        .get_tenant(v1::GetTenantRequest {
            tenant_id: id.into(),
        })
        .await
        .expect("GetTenant")
        .into_inner()
}

async fn list_ids(admin: &mut Admin, page_size: i32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_tenants(v1::ListTenantsRequest {
                page_size,
                page_token,
            })
            .await
            .expect("ListTenants")
            .into_inner();
        assert!(page.tenants.len() <= page_size as usize);
        ids.extend(page.tenants.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

/// The status of a call that must fail.
fn refused<T>(result: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let status = result.map(|_| ()).unwrap_err();
    (status.code(), status.message().to_owned())
}

async fn stop(servers: Vec<TestServer>, database_url: &str) {
    for server in servers {
        server.stop().await;
    }
    coverwatch_store::testing::drop_database(database_url).await;
}

#[tokio::test]
async fn a_tenant_created_on_one_replica_calls_another_at_once_and_revocation_reaches_both() {
    assert!(ACROSS_REPLICAS < CACHE_TTL);
    let config = config().await;
    let database_url = config.database_url.clone();
    let postgres = database_url.starts_with("postgres");
    let (one, _) = start(config.clone()).await;
    let second = if postgres {
        Some(start(config).await.0)
    } else {
        eprintln!("SQLite: one process; both replicas are the same server");
        None
    };
    let two = second.as_ref().unwrap_or(&one);
    let (mut admin_one, mut admin_two) =
        (admin(&one, ADMIN_KEY).await, admin(two, ADMIN_KEY).await);

    // A key nobody knows yet is refused (and remembered as unknown by replica two).
    let stranger = coverwatch::auth::generate_key();
    assert_eq!(
        call(two, &stranger).await.unwrap_err().0,
        Code::Unauthenticated
    );

    let tenant = create_tenant(&mut admin_one, "runtime-co").await;
    assert_eq!(tenant.state, v1::TenantState::Enabled as i32);
    assert_eq!(tenant.source, v1::TenantSource::Api as i32);
    assert_eq!(tenant.active_api_keys, 0);
    let (first, key) = create_key(&mut admin_one, "runtime-co").await;
    assert!(key.starts_with("cwk_") && key.len() == 68, "{key}");
    assert_eq!(first.tenant_id, "runtime-co");
    assert!(first.id.starts_with("key_"));

    // At once: no waiting on either replica.
    call(two, &key)
        .await
        .expect("the new key works on replica two");
    call(&one, &key).await.expect("and on replica one");
    // What a tenant sees is its own: a link started on one is listed on two.
    let link = one
        .client_with_key(Some(&key))
        .await
        .start_link(v1::StartLinkRequest {
            provider: v1::Provider::Axle as i32,
            user_id: "user-1".into(),
            ..Default::default()
        })
        .await
        .expect("StartLink as the new tenant")
        .into_inner()
        .link
        .unwrap();
    let listed = two
        .client_with_key(Some(&key))
        .await
        .list_links(v1::ListLinksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .links;
    assert_eq!(
        listed.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        [link.id.as_str()]
    );
    let others = one
        .client(TENANT_A)
        .await
        .list_links(v1::ListLinksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .links;
    assert!(others.is_empty(), "another tenant sees none of it");

    // A second key, so that revoking one leaves the tenant reachable.
    let (_, spare) = create_key(&mut admin_two, "runtime-co").await;
    call(&one, &spare)
        .await
        .expect("the spare key works on one");

    // Revoked on replica two: refused there at once, on replica one as soon as it hears.
    let revoked = admin_two
        .revoke_api_key(v1::RevokeApiKeyRequest {
            api_key_id: first.id.clone(),
        })
        .await
        .expect("RevokeApiKey")
        .into_inner()
        .api_key
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    let refused = call(two, &key).await.unwrap_err();
    assert_eq!(refused.0, Code::Unauthenticated, "{refused:?}");
    until(
        &one,
        &key,
        Err(Code::Unauthenticated),
        "replica one refusing the revoked key",
    )
    .await;
    call(&one, &spare).await.expect("the other key still works");
    call(two, &spare).await.expect("on both");

    // Disabled on one: PERMISSION_DENIED saying so, on both; enabled on two: works again.
    let disabled = admin_one
        .disable_tenant(v1::DisableTenantRequest {
            tenant_id: "runtime-co".into(),
        })
        .await
        .expect("DisableTenant")
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(disabled.state, v1::TenantState::Disabled as i32);
    assert!(disabled.disabled_at.is_some());
    let (code, message) = call(&one, &spare).await.unwrap_err();
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("`runtime-co` is disabled"), "{message}");
    until(
        two,
        &spare,
        Err(Code::PermissionDenied),
        "replica two refusing a disabled tenant",
    )
    .await;
    let (code, message) = call(two, &spare).await.unwrap_err();
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("disabled"), "{message}");
    // Another tenant is untouched.
    call(two, TENANT_A.1)
        .await
        .expect("tenant-a is not disabled");

    let enabled = admin_two
        .enable_tenant(v1::EnableTenantRequest {
            tenant_id: "runtime-co".into(),
        })
        .await
        .expect("EnableTenant")
        .into_inner()
        .tenant
        .unwrap();
    assert_eq!(enabled.state, v1::TenantState::Enabled as i32);
    assert!(enabled.disabled_at.is_none());
    call(two, &spare)
        .await
        .expect("enabled again on two at once");
    until(
        &one,
        &spare,
        Ok(()),
        "replica one accepting the enabled tenant",
    )
    .await;
    assert_eq!(
        call(&one, &key).await.unwrap_err().0,
        Code::Unauthenticated,
        "enabling a tenant does not bring a revoked key back"
    );

    let got = get_tenant(&mut admin_two, "runtime-co").await;
    let tenant = got.tenant.unwrap();
    assert_eq!(tenant.display_name, "runtime-co Inc.");
    assert_eq!(tenant.active_api_keys, 1);
    assert_eq!(got.api_keys.len(), 2, "revoked keys stay listed");
    assert_eq!(got.api_keys[0].id, first.id);
    assert!(got.api_keys[0].revoked_at.is_some());
    assert!(got.api_keys[1].revoked_at.is_none());

    let mut servers = vec![one];
    servers.extend(second);
    stop(servers, &database_url).await;
}

#[tokio::test]
async fn bad_input_is_refused_precisely_and_nothing_is_stored() {
    let config = config().await;
    let database_url = config.database_url.clone();
    let (server, _) = start(config).await;
    let mut admin = admin(&server, ADMIN_KEY).await;
    let create = |id: &str, name: &str| v1::CreateTenantRequest {
        tenant_id: id.into(),
        display_name: name.into(),
    };

    for (id, name, field, says) in [
        ("", "", "tenant_id", "must not be empty"),
        ("Acme", "", "tenant_id", "may contain only"),
        ("-acme", "", "tenant_id", "may contain only"),
        ("acme lending", "", "tenant_id", "may contain only"),
        (&"a".repeat(65), "", "tenant_id", "at most 64"),
        ("acme", &"n".repeat(201), "display_name", "at most 200"),
        ("acme", "bad\u{7}name", "display_name", "control characters"),
    ] {
        let (code, message) = refused(admin.create_tenant(create(id, name)).await);
        assert_eq!(code, Code::InvalidArgument, "{id:?}: {message}");
        assert!(
            message.starts_with(&format!("{field}: ")) && message.contains(says),
            "{id:?}: {message}"
        );
    }
    // The longest id and name are fine.
    let longest = "a".repeat(64);
    admin
        .create_tenant(create(&longest, &"é".repeat(200)))
        .await
        .expect("64 characters and a 200-character name are allowed");

    // Taken ids: a configured tenant's, and one created here.
    let (code, message) = refused(admin.create_tenant(create(TENANT_A.0, "")).await);
    assert_eq!(code, Code::AlreadyExists);
    assert!(message.contains(TENANT_A.0), "{message}");
    create_tenant(&mut admin, "dup").await;
    let (code, _) = refused(admin.create_tenant(create("dup", "again")).await);
    assert_eq!(code, Code::AlreadyExists);
    assert_eq!(
        get_tenant(&mut admin, "dup")
            .await
            .tenant
            .unwrap()
            .display_name,
        "dup Inc.",
        "the second call changed nothing"
    );

    // Nothing half-made: exactly the configured tenants and the two created ones.
    let mut expected = vec![
        longest.clone(),
        "dup".into(),
        "tenant-a".into(),
        "tenant-b".into(),
    ];
    expected.sort();
    assert_eq!(list_ids(&mut admin, 500).await, expected);

    // Unknown tenants.
    let (code, message) = refused(
        admin
            .get_tenant(v1::GetTenantRequest {
                tenant_id: "nobody".into(),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    assert!(message.contains("`nobody`"), "{message}");
    let (code, _) = refused(
        admin
            .disable_tenant(v1::DisableTenantRequest {
                tenant_id: "nobody".into(),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    let (code, _) = refused(
        admin
            .enable_tenant(v1::EnableTenantRequest {
                tenant_id: "Nobody".into(),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    let (code, _) = refused(
        admin
            .create_api_key(v1::CreateApiKeyRequest {
                tenant_id: "nobody".into(),
                label: String::new(),
            })
            .await,
    );
    assert_eq!(code, Code::NotFound);
    let (code, message) = refused(
        admin
            .create_api_key(v1::CreateApiKeyRequest {
                tenant_id: "dup".into(),
                label: "l".repeat(101),
            })
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.starts_with("label: "), "{message}");
    assert!(
        get_tenant(&mut admin, "dup").await.api_keys.is_empty(),
        "no key was made by the refused calls"
    );
    assert_eq!(list_ids(&mut admin, 500).await, expected);

    // Revoking: malformed, unknown, twice, and a configured key.
    let revoke = |id: &str| v1::RevokeApiKeyRequest {
        api_key_id: id.into(),
    };
    for bad in ["", "key_nope", "lnk_0123456789abcdef0123456789abcdef"] {
        let (code, message) = refused(admin.revoke_api_key(revoke(bad)).await);
        assert_eq!(code, Code::InvalidArgument, "{bad}");
        assert!(message.starts_with("api_key_id: "), "{bad}: {message}");
    }
    let unknown = coverwatch_core::ids::ApiKeyId::new().to_string();
    let (code, _) = refused(admin.revoke_api_key(revoke(&unknown)).await);
    assert_eq!(code, Code::NotFound);
    let (made, key) = create_key(&mut admin, "dup").await;
    admin
        .revoke_api_key(revoke(&made.id))
        .await
        .expect("revoked");
    let (code, message) = refused(admin.revoke_api_key(revoke(&made.id)).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains("already revoked"), "{message}");
    assert_eq!(
        call(&server, &key).await.unwrap_err().0,
        Code::Unauthenticated
    );

    let configured = get_tenant(&mut admin, TENANT_A.0).await;
    assert_eq!(
        configured.tenant.as_ref().unwrap().source,
        v1::TenantSource::Config as i32
    );
    let [configured_key] = configured.api_keys.as_slice() else {
        panic!("one configured key: {configured:?}")
    };
    assert_eq!(configured_key.source, v1::TenantSource::Config as i32);
    let (code, message) = refused(admin.revoke_api_key(revoke(&configured_key.id)).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert!(message.contains("configuration"), "{message}");
    call(&server, TENANT_A.1)
        .await
        .expect("the configured key still works");

    // Paging.
    for bad in [-1] {
        let (code, message) = refused(
            admin
                .list_tenants(v1::ListTenantsRequest {
                    page_size: bad,
                    page_token: String::new(),
                })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument);
        assert!(message.starts_with("page_size: "), "{message}");
    }
    for bad in ["garbage", "t", "s42"] {
        let (code, message) = refused(
            admin
                .list_tenants(v1::ListTenantsRequest {
                    page_size: 0,
                    page_token: bad.into(),
                })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{bad}");
        assert!(message.starts_with("page_token: "), "{bad}: {message}");
    }
    for id in ["p-1", "p-2", "p-3"] {
        create_tenant(&mut admin, id).await;
    }
    let all = list_ids(&mut admin, 500).await;
    assert_eq!(all.len(), 7);
    assert_eq!(
        list_ids(&mut admin, 2).await,
        all,
        "pages of two cover all, in order"
    );
    assert_eq!(list_ids(&mut admin, 1).await, all);

    stop(vec![server], &database_url).await;
}

#[tokio::test]
async fn tenant_keys_do_not_open_admin_service_and_configured_tenants_keep_working() {
    let config = config().await;
    let database_url = config.database_url.clone();
    let (server, _) = start(config).await;
    let mut operator = admin(&server, ADMIN_KEY).await;
    create_tenant(&mut operator, "runtime-co").await;
    let (_, key) = create_key(&mut operator, "runtime-co").await;

    for tenant_key in [key.as_str(), TENANT_A.1] {
        let mut as_tenant = admin(&server, tenant_key).await;
        let refused = as_tenant
            .create_tenant(v1::CreateTenantRequest {
                tenant_id: "sneaky".into(),
                display_name: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        let refused = as_tenant
            .create_api_key(v1::CreateApiKeyRequest {
                tenant_id: "tenant-b".into(),
                label: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    let mut stranger = admin(&server, "not-a-key-we-know").await;
    assert_eq!(
        stranger
            .list_tenants(v1::ListTenantsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        call(&server, ADMIN_KEY).await.unwrap_err().0,
        Code::Unauthenticated,
        "an admin key is no tenant key"
    );
    assert_eq!(
        operator
            .get_tenant(v1::GetTenantRequest {
                tenant_id: "sneaky".into()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    // Configured tenants work as before, and can be disabled and enabled like any other.
    call(&server, TENANT_A.1).await.expect("tenant-a");
    operator
        .disable_tenant(v1::DisableTenantRequest {
            tenant_id: TENANT_A.0.into(),
        })
        .await
        .unwrap();
    assert_eq!(
        call(&server, TENANT_A.1).await.unwrap_err().0,
        Code::PermissionDenied
    );
    operator
        .enable_tenant(v1::EnableTenantRequest {
            tenant_id: TENANT_A.0.into(),
        })
        .await
        .unwrap();
    call(&server, TENANT_A.1).await.expect("tenant-a again");
    // A key created for a configured tenant works beside its configured one.
    let (_, extra) = create_key(&mut operator, TENANT_A.0).await;
    call(&server, &extra)
        .await
        .expect("an API key of a configured tenant");
    stop(vec![server], &database_url).await;
}

#[tokio::test]
async fn a_disabled_tenants_webhooks_are_still_stored_and_processed() {
    let config = config().await;
    let database_url = config.database_url.clone();
    let (server, axle) = start(config).await;
    let mut operator = admin(&server, ADMIN_KEY).await;
    create_tenant(&mut operator, "runtime-co").await;
    let (_, key) = create_key(&mut operator, "runtime-co").await;
    let link = server
        .client_with_key(Some(&key))
        .await
        .start_link(v1::StartLinkRequest {
            provider: v1::Provider::Axle as i32,
            user_id: "user-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    operator
        .disable_tenant(v1::DisableTenantRequest {
            tenant_id: "runtime-co".into(),
        })
        .await
        .unwrap();

    let response = server
        .http
        .post(axle.webhook_url(&link.id))
        .header("content-type", "application/json")
        .header("x-fake-signature", "sig-123")
        .body(r#"{"id":"evt-1","type":"completed","account":"acc-1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "acknowledged while disabled");
    let answer: serde_json::Value = response.json().await.unwrap();
    let delivery = answer["delivery_id"].as_str().unwrap().to_owned();
    eventually("the delivery processed", Duration::from_secs(15), || {
        let mut operator = operator.clone();
        let delivery = delivery.clone();
        async move {
            let d = operator
                .get_delivery(v1::GetDeliveryRequest {
                    delivery_id: delivery,
                })
                .await
                .ok()?
                .into_inner()
                .delivery?;
            (d.status == v1::DeliveryStatus::Done as i32).then_some(())
        }
    })
    .await;

    operator
        .enable_tenant(v1::EnableTenantRequest {
            tenant_id: "runtime-co".into(),
        })
        .await
        .unwrap();
    let now = server
        .client_with_key(Some(&key))
        .await
        .get_link(v1::GetLinkRequest {
            link_id: link.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    assert_eq!(
        now.state,
        v1::LinkState::Active as i32,
        "processed while the tenant was disabled: {now:?}"
    );
    stop(vec![server], &database_url).await;
}
