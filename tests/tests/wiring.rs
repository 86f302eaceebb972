//! The service as `coverwatch serve` wires it: real providers against the embedded sandbox.

use coverwatch_tests::{TENANT_A, TestServer, test_config, v1};
use tonic::Code;

#[tokio::test]
async fn every_registered_vendor_opens_sessions_served_by_the_embedded_sandbox() {
    let server = TestServer::start(test_config().await, None).await;
    let sandbox = server
        .app
        .sandbox
        .as_ref()
        .expect("no credentials: the sandbox runs");
    let mut client = server.client(TENANT_A).await;
    // Every registered vendor, not a list written here: a vendor added to the wiring is tested
    // without an edit. It is named by its registry name (`provider_id`), which reaches vendors
    // the proto enum does not list.
    let registered: Vec<_> = server.app.engine.providers().kinds().cloned().collect();
    assert!(
        registered.len() >= 2,
        "the wiring registers both sandbox vendors: {registered:?}"
    );
    for id in &registered {
        let started = client
            .start_link(v1::StartLinkRequest {
                provider_id: id.to_string(),
                user_id: "user-1".into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("StartLink {id}: {e}"))
            .into_inner();
        let link = started.link.expect("the new link");
        // Responses carry both: the name always, the enum where it has a value for the vendor.
        assert_eq!(link.provider_id, id.as_str());
        assert_eq!(link.provider, v1::Provider::from(id) as i32, "{id}");
        assert!(
            started.session_url.starts_with(sandbox.base_url()),
            "{id} session {} is served by the sandbox",
            started.session_url
        );
        let page = server.http.get(&started.session_url).send().await.unwrap();
        assert_eq!(page.status(), 200, "{id} consent page opens");
        let html = page.text().await.unwrap();
        assert!(html.contains("<form"), "{id} consent page is a form");

        // The link's first event names the vendor the same way.
        let events = client
            .list_events(v1::ListEventsRequest {
                filter: Some(v1::EventFilter {
                    link_id: Some(link.id.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("ListEvents {id}: {e}"))
            .into_inner()
            .events;
        assert!(!events.is_empty(), "{id}: link.session_opened is stored");
        assert!(
            events.iter().all(|e| e.provider_id == id.as_str()),
            "{id}: {events:?}"
        );

        // Filtering by the name finds the link, and only links of that vendor.
        let listed = client
            .list_links(v1::ListLinksRequest {
                provider_id: id.to_string(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("ListLinks {id}: {e}"))
            .into_inner()
            .links;
        assert!(listed.iter().any(|l| l.id == link.id), "{id}: {listed:?}");
        assert!(
            listed.iter().all(|l| l.provider_id == id.as_str()),
            "{id}: {listed:?}"
        );

        // A vendor the enum lists can still be named by the enum, alone or with its name.
        let by_enum = v1::Provider::from(id);
        if by_enum != v1::Provider::Unspecified {
            for provider_id in [String::new(), id.to_string()] {
                let link = client
                    .start_link(v1::StartLinkRequest {
                        provider: by_enum as i32,
                        provider_id,
                        user_id: "user-2".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_or_else(|e| panic!("StartLink {by_enum:?}: {e}"))
                    .into_inner()
                    .link
                    .unwrap();
                assert_eq!(link.provider_id, id.as_str());
            }
        }
    }
    server.stop().await;
}

/// A name no vendor is registered under, or one that contradicts the enum, is refused naming
/// `provider_id` — never read as "any provider" in a filter, nor overruled by the enum.
#[tokio::test]
async fn an_unknown_or_contradicting_provider_id_is_refused_naming_the_field() {
    let server = TestServer::start(test_config().await, None).await;
    let mut client = server.client(TENANT_A).await;
    let registered: Vec<String> = server
        .app
        .engine
        .providers()
        .kinds()
        .map(ToString::to_string)
        .collect();
    let refused = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with("provider_id: "),
            "names the field: {status:?}"
        );
        status.message().to_owned()
    };

    // Unknown: the message lists every registered name, so the caller can correct it.
    for provider_id in ["nosuch", "AXLE", "axle "] {
        let message = refused(
            client
                .start_link(v1::StartLinkRequest {
                    provider_id: provider_id.into(),
                    user_id: "user-1".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
        );
        for name in &registered {
            assert!(message.contains(name.as_str()), "lists `{name}`: {message}");
        }
        refused(
            client
                .list_links(v1::ListLinksRequest {
                    provider_id: provider_id.into(),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
        );
    }

    // Both given and disagreeing.
    let message = refused(
        client
            .start_link(v1::StartLinkRequest {
                provider: v1::Provider::Axle as i32,
                provider_id: "canopy".into(),
                user_id: "user-1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    assert!(message.contains("PROVIDER_AXLE"), "{message}");
    refused(
        client
            .list_links(v1::ListLinksRequest {
                provider: v1::Provider::Canopy as i32,
                provider_id: "axle".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );

    // Neither given: StartLink still names the enum field, as before the name existed.
    let missing = client
        .start_link(v1::StartLinkRequest {
            user_id: "user-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().starts_with("provider: "), "{missing:?}");

    // Nothing was created by any refused request.
    let links = client
        .list_links(v1::ListLinksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .links;
    assert!(links.is_empty(), "{links:?}");
    server.stop().await;
}
