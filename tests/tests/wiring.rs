//! The service as `coverwatch serve` wires it: real providers against the embedded sandbox.

use coverwatch_tests::{TENANT_A, TestServer, test_config, v1};

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
    // without an edit, and one the API cannot name fails here instead of being skipped.
    let registered: Vec<_> = server.app.engine.providers().kinds().cloned().collect();
    assert!(
        registered.len() >= 2,
        "the wiring registers both sandbox vendors: {registered:?}"
    );
    for id in &registered {
        let provider = v1::Provider::from(id);
        assert_ne!(
            provider,
            v1::Provider::Unspecified,
            "registered provider `{id}` has no value in the proto Provider enum"
        );
        let started = client
            .start_link(v1::StartLinkRequest {
                provider: provider as i32,
                user_id: "user-1".into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("StartLink {provider:?}: {e}"))
            .into_inner();
        assert!(
            started.session_url.starts_with(sandbox.base_url()),
            "{provider:?} session {} is served by the sandbox",
            started.session_url
        );
        let page = server.http.get(&started.session_url).send().await.unwrap();
        assert_eq!(page.status(), 200, "{provider:?} consent page opens");
        let html = page.text().await.unwrap();
        assert!(
            html.contains("<form"),
            "{provider:?} consent page is a form"
        );
    }
    server.stop().await;
}
