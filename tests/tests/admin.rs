//! AdminService end to end: operators list and read stored deliveries, replay a dead-lettered
//! one once the vendor is back, and retention drops old raw bodies but keeps the rows; admin
//! keys and tenant keys do not open each other's doors.

use std::sync::Arc;
use std::time::Duration;

use coverwatch::auth::hash_key;
use coverwatch_engine::ProviderRegistry;
use coverwatch_proto::v1::admin_service_client::AdminServiceClient;
use coverwatch_tests::fake_provider::FakeProvider;
use coverwatch_tests::{Client, TENANT_A, TestServer, eventually, test_config, v1};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(15);
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";

#[derive(Clone)]
struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
        }
        Ok(request)
    }
}

type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

async fn admin_with_key(server: &TestServer, key: Option<&str>) -> Admin {
    AdminServiceClient::with_interceptor(server.channel().await, Bearer(key.map(str::to_owned)))
}

/// The Axle-shaped double, the Canopy-shaped one, and a server with one admin key.
async fn server() -> (TestServer, FakeProvider, FakeProvider) {
    let axle = FakeProvider::default();
    let canopy = FakeProvider::team_wide();
    let registry = ProviderRegistry::new()
        .register(Arc::new(axle.clone()))
        .register(Arc::new(canopy.clone()));
    let mut config = test_config().await;
    config.admin_api_key_sha256 = vec![hash_key(ADMIN_KEY)];
    (
        TestServer::start(config, Some(registry)).await,
        axle,
        canopy,
    )
}

async fn start_link(client: &mut Client, user: &str) -> v1::Link {
    client
        .start_link(v1::StartLinkRequest {
            provider: v1::Provider::Axle as i32,
            user_id: user.into(),
            ..Default::default()
        })
        .await
        .expect("StartLink")
        .into_inner()
        .link
        .expect("a link")
}

/// POST raw bytes as a vendor would; returns the stored delivery's id.
async fn deliver(server: &TestServer, url: &str, body: &[u8]) -> String {
    let response = server
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("x-fake-signature", "sig-123")
        .body(body.to_vec())
        .send()
        .await
        .expect("webhook POST");
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    answer["delivery_id"]
        .as_str()
        .unwrap_or_else(|| panic!("stored, with an id: {answer}"))
        .to_owned()
}

async fn get(admin: &mut Admin, id: &str) -> v1::Delivery {
    admin
        .get_delivery(v1::GetDeliveryRequest {
            delivery_id: id.into(),
        })
        .await
        .expect("GetDelivery")
        .into_inner()
        .delivery
        .expect("a delivery")
}

async fn settled(admin: &Admin, id: &str, status: v1::DeliveryStatus) -> v1::Delivery {
    eventually(&format!("{id} to be {status:?}"), DEADLINE, || async {
        let delivery = get(&mut admin.clone(), id).await;
        (delivery.status() == status).then_some(delivery)
    })
    .await
}

async fn list(admin: &mut Admin, request: v1::ListDeliveriesRequest) -> Vec<String> {
    admin
        .list_deliveries(request)
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries
        .into_iter()
        .map(|d| d.id)
        .collect()
}

async fn completed_count(client: &mut Client, link_id: &str) -> usize {
    client
        .list_events(v1::ListEventsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("ListEvents")
        .into_inner()
        .events
        .iter()
        .filter(|e| e.kind() == v1::EventKind::LinkCompleted && e.link_id == link_id)
        .count()
}

#[tokio::test]
async fn deliveries_are_listed_by_status_provider_and_link_and_read_raw() {
    let (server, axle, _canopy) = server().await;
    let mut client = server.client(TENANT_A).await;
    let mut admin = admin_with_key(&server, Some(ADMIN_KEY)).await;
    let one = start_link(&mut client, "user-1").await;
    let two = start_link(&mut client, "user-2").await;

    let raw_one = br#"{"id": "evt-1",  "type": "completed", "account": "acc-1"}"#;
    let d1 = deliver(&server, &axle.webhook_url(&one.id), raw_one).await;
    let d2 = deliver(
        &server,
        &axle.webhook_url(&two.id),
        br#"{"id":"evt-2","type":"completed","account":"acc-2"}"#,
    )
    .await;
    // Genuine, but about an account no link holds: kept as unmatched.
    let raw_stray = br#"{"id":"evt-3","type":"changed","account":"nobody"}"#;
    let d3 = deliver(&server, &server.http_url("/webhooks/canopy"), raw_stray).await;

    settled(&admin, &d1, v1::DeliveryStatus::Done).await;
    settled(&admin, &d2, v1::DeliveryStatus::Done).await;
    let stray = settled(&admin, &d3, v1::DeliveryStatus::Unmatched).await;
    assert!(
        stray
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("no link"),
        "{stray:?}"
    );
    assert_eq!(stray.body, raw_stray, "an unmatched delivery is kept whole");
    assert_eq!(
        (stray.tenant_id.as_deref(), stray.link_id.as_deref()),
        (None, None)
    );

    let all = || v1::ListDeliveriesRequest::default();
    assert_eq!(
        list(&mut admin, all()).await,
        [d1.as_str(), d2.as_str(), d3.as_str()]
    );
    assert_eq!(
        list(
            &mut admin,
            v1::ListDeliveriesRequest {
                status: v1::DeliveryStatus::Unmatched as i32,
                ..all()
            }
        )
        .await,
        [d3.as_str()]
    );
    assert_eq!(
        list(
            &mut admin,
            v1::ListDeliveriesRequest {
                status: v1::DeliveryStatus::Done as i32,
                ..all()
            }
        )
        .await,
        [d1.as_str(), d2.as_str()]
    );
    assert_eq!(
        list(
            &mut admin,
            v1::ListDeliveriesRequest {
                provider: v1::Provider::Canopy as i32,
                ..all()
            }
        )
        .await,
        [d3.as_str()]
    );
    assert_eq!(
        list(
            &mut admin,
            v1::ListDeliveriesRequest {
                provider: v1::Provider::Axle as i32,
                link_id: Some(two.id.clone()),
                ..all()
            }
        )
        .await,
        [d2.as_str()]
    );
    // The registry name filters as the enum does, alone or agreeing with it.
    assert_eq!(
        list(
            &mut admin,
            v1::ListDeliveriesRequest {
                provider_id: "canopy".into(),
                ..all()
            }
        )
        .await,
        [d3.as_str()]
    );
    assert_eq!(
        list(
            &mut admin,
            v1::ListDeliveriesRequest {
                provider: v1::Provider::Axle as i32,
                provider_id: "axle".into(),
                ..all()
            }
        )
        .await,
        [d1.as_str(), d2.as_str()]
    );
    // A name no vendor is registered under, and a name that contradicts the enum, are refused
    // naming the field, never read as "every provider".
    for (provider, provider_id) in [(0, "nosuch"), (v1::Provider::Axle as i32, "canopy")] {
        let refused = admin
            .list_deliveries(v1::ListDeliveriesRequest {
                provider,
                provider_id: provider_id.into(),
                ..all()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().starts_with("provider_id: "),
            "{refused:?}"
        );
    }
    let unknown = admin
        .list_deliveries(v1::ListDeliveriesRequest {
            provider_id: "nosuch".into(),
            ..all()
        })
        .await
        .unwrap_err();
    assert!(
        unknown.message().contains("axle, canopy"),
        "lists the registered names: {unknown:?}"
    );

    // Pages of one, in receipt order, without bodies.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_deliveries(v1::ListDeliveriesRequest {
                page_size: 1,
                page_token: token.clone(),
                ..all()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            page.deliveries
                .iter()
                .all(|d| d.body.is_empty() && d.headers.is_empty())
        );
        seen.extend(page.deliveries.into_iter().map(|d| d.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, [d1.as_str(), d2.as_str(), d3.as_str()]);

    // The raw delivery, byte for byte, with its headers.
    let got = get(&mut admin, &d1).await;
    assert_eq!(got.body, raw_one);
    assert_eq!(got.body_size, raw_one.len() as i64);
    let token = axle
        .webhook_url(&one.id)
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(got.path, "[token]", "the link's webhook secret is not kept");
    assert!(!format!("{got:?}").contains(&token));
    assert!(!got.body_purged);
    let header = |name: &str| {
        got.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    };
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(header("x-fake-signature"), Some("sig-123"));
    assert_eq!(got.provider(), v1::Provider::Axle);
    assert_eq!(got.provider_id, "axle");
    assert_eq!(got.attempts, 1);
    assert_eq!(got.last_error, None);
    assert_eq!(got.link_id.as_deref(), Some(one.id.as_str()));
    assert_eq!(got.tenant_id.as_deref(), Some(TENANT_A.0));
    assert_eq!(got.dedupe_key, "id:evt-1");
    assert!(got.received_at.is_some() && got.processed_at.is_some());

    // Replaying an unmatched delivery runs it again; still nobody's, still kept.
    let replayed = admin
        .replay_delivery(v1::ReplayDeliveryRequest {
            delivery_id: d3.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .delivery
        .unwrap();
    assert_eq!(
        (replayed.status(), replayed.attempts),
        (v1::DeliveryStatus::Pending, 0)
    );
    let again = settled(&admin, &d3, v1::DeliveryStatus::Unmatched).await;
    assert_eq!(again.attempts, 1);

    // Bad requests name their field.
    for (status, field) in [
        (
            admin
                .get_delivery(v1::GetDeliveryRequest {
                    delivery_id: "nope".into(),
                })
                .await
                .unwrap_err(),
            "delivery_id",
        ),
        (
            admin
                .list_deliveries(v1::ListDeliveriesRequest {
                    page_token: "garbage".into(),
                    ..all()
                })
                .await
                .unwrap_err(),
            "page_token",
        ),
        (
            admin
                .list_deliveries(v1::ListDeliveriesRequest {
                    status: 99,
                    ..all()
                })
                .await
                .unwrap_err(),
            "status",
        ),
        (
            admin
                .list_deliveries(v1::ListDeliveriesRequest {
                    link_id: Some("lnk_bad".into()),
                    ..all()
                })
                .await
                .unwrap_err(),
            "link_id",
        ),
        (
            admin
                .list_deliveries(v1::ListDeliveriesRequest {
                    received_since: Some(prost_types::Timestamp {
                        seconds: 0,
                        nanos: -1,
                    }),
                    ..all()
                })
                .await
                .unwrap_err(),
            "received_since",
        ),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(field),
            "{status:?} names {field}"
        );
    }
    let missing = admin
        .get_delivery(v1::GetDeliveryRequest {
            delivery_id: coverwatch_core::ids::DeliveryId::new().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn a_dead_lettered_delivery_is_replayed_once_the_vendor_is_back() {
    let (server, axle, _canopy) = server().await;
    let mut client = server.client(TENANT_A).await;
    let mut admin = admin_with_key(&server, Some(ADMIN_KEY)).await;
    let link = start_link(&mut client, "user").await;

    axle.state.lock().unwrap().unavailable = true;
    let id = deliver(
        &server,
        &axle.webhook_url(&link.id),
        br#"{"id":"evt-dead","type":"completed","account":"acc-dead"}"#,
    )
    .await;
    let dead = settled(&admin, &id, v1::DeliveryStatus::Dead).await;
    assert_eq!(
        dead.attempts, 4,
        "the test worker gives up after 4 attempts"
    );
    assert!(
        dead.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("fake vendor is down"),
        "{dead:?}"
    );
    assert_eq!(
        list(
            &mut admin,
            v1::ListDeliveriesRequest {
                status: v1::DeliveryStatus::Dead as i32,
                ..Default::default()
            }
        )
        .await,
        [id.as_str()]
    );
    assert_eq!(completed_count(&mut client, &link.id).await, 0);

    // The vendor is back: replay, and the link completes, once.
    axle.state.lock().unwrap().unavailable = false;
    let replayed = admin
        .replay_delivery(v1::ReplayDeliveryRequest {
            delivery_id: id.clone(),
        })
        .await
        .expect("ReplayDelivery")
        .into_inner()
        .delivery
        .unwrap();
    assert_eq!(replayed.status(), v1::DeliveryStatus::Pending);
    assert_eq!(replayed.attempts, 0);
    let done = settled(&admin, &id, v1::DeliveryStatus::Done).await;
    assert_eq!(done.attempts, 1);
    assert_eq!(completed_count(&mut client, &link.id).await, 1);
    let active = client
        .get_link(v1::GetLinkRequest {
            link_id: link.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    assert_eq!(active.state(), v1::LinkState::Active);

    // Replaying what already took effect changes nothing.
    admin
        .replay_delivery(v1::ReplayDeliveryRequest {
            delivery_id: id.clone(),
        })
        .await
        .expect("a done delivery can be replayed");
    settled(&admin, &id, v1::DeliveryStatus::Done).await;
    assert_eq!(completed_count(&mut client, &link.id).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn retention_drops_processed_bodies_and_keeps_the_rows() {
    let (server, axle, _canopy) = server().await;
    let mut client = server.client(TENANT_A).await;
    let mut admin = admin_with_key(&server, Some(ADMIN_KEY)).await;
    let link = start_link(&mut client, "user").await;
    let done = deliver(
        &server,
        &axle.webhook_url(&link.id),
        br#"{"id":"evt-old","type":"completed","account":"acc-old"}"#,
    )
    .await;
    let stray = deliver(
        &server,
        &server.http_url("/webhooks/canopy"),
        br#"{"id":"evt-stray","type":"changed","account":"nobody"}"#,
    )
    .await;
    settled(&admin, &done, v1::DeliveryStatus::Done).await;
    settled(&admin, &stray, v1::DeliveryStatus::Unmatched).await;

    let engine = &server.app.engine;
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(engine.purge_processed_bodies(an_hour_ago).await.unwrap(), 0);
    assert!(
        !get(&mut admin, &done).await.body_purged,
        "too recent to purge"
    );
    let soon = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(engine.purge_processed_bodies(soon).await.unwrap(), 1);

    let purged = get(&mut admin, &done).await;
    assert!(purged.body_purged && purged.body.is_empty() && purged.body_size == 0);
    assert_eq!(purged.status(), v1::DeliveryStatus::Done);
    assert!(!purged.headers.is_empty(), "the row and its headers stay");
    let kept = get(&mut admin, &stray).await;
    assert!(
        !kept.body_purged && !kept.body.is_empty(),
        "unmatched bodies are kept"
    );
    assert_eq!(
        list(&mut admin, v1::ListDeliveriesRequest::default()).await,
        [done.as_str(), stray.as_str()]
    );
    let refused = admin
        .replay_delivery(v1::ReplayDeliveryRequest { delivery_id: done })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("purged"), "{refused:?}");
    server.stop().await;
}

#[tokio::test]
async fn only_admin_keys_open_the_admin_service() {
    let (server, _axle, _canopy) = server().await;
    let request = || v1::ListDeliveriesRequest::default();
    let code = |result: Result<tonic::Response<v1::ListDeliveriesResponse>, tonic::Status>| {
        result.map(|_| ()).map_err(|s| s.code())
    };

    let mut admin = admin_with_key(&server, Some(ADMIN_KEY)).await;
    assert_eq!(code(admin.list_deliveries(request()).await), Ok(()));
    let mut tenant = admin_with_key(&server, Some(TENANT_A.1)).await;
    assert_eq!(
        code(tenant.list_deliveries(request()).await),
        Err(Code::PermissionDenied)
    );
    let mut nobody = admin_with_key(&server, None).await;
    assert_eq!(
        code(nobody.list_deliveries(request()).await),
        Err(Code::Unauthenticated)
    );
    let mut stranger = admin_with_key(&server, Some("not-a-key-we-know-at-all")).await;
    assert_eq!(
        code(stranger.list_deliveries(request()).await),
        Err(Code::Unauthenticated)
    );
    assert_eq!(
        stranger
            .replay_delivery(v1::ReplayDeliveryRequest {
                delivery_id: coverwatch_core::ids::DeliveryId::new().to_string(),
            })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated,
        "authentication comes before anything else"
    );

    // An admin key is no tenant.
    let mut as_tenant = server.client_with_key(Some(ADMIN_KEY)).await;
    let refused = as_tenant
        .list_links(v1::ListLinksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    server.stop().await;

    // Development (no tenants, no admin keys): the development key is both.
    let mut config = test_config().await;
    config.tenants.clear();
    config.dev_api_key = Some("development-key-0123456789".into());
    let registry = ProviderRegistry::new().register(Arc::new(FakeProvider::default()));
    let dev = TestServer::start(config, Some(registry)).await;
    let mut admin = admin_with_key(&dev, Some("development-key-0123456789")).await;
    assert_eq!(code(admin.list_deliveries(request()).await), Ok(()));
    let mut client = dev
        .client_with_key(Some("development-key-0123456789"))
        .await;
    client
        .list_links(v1::ListLinksRequest::default())
        .await
        .expect("the development key is a tenant key too");
    dev.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_admin_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let (server, _axle, _canopy) = server().await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.message().await.unwrap().expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("a service list: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == "coverwatch.v1.AdminService"),
        "{names:?}"
    );
    server.stop().await;
}
