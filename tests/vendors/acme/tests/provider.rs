//! The Acme provider against its own simulator, without the service: a session, the end-user's
//! consent, the code in the redirect, its single use, the data, monitoring and its stop.

use std::collections::BTreeMap;

use coverwatch_core::provider::{Completion, LinkAccess, LinkSessionRequest, RejectionKind};
use coverwatch_core::webhook::DataRef;
use coverwatch_core::{LinkId, ProviderError, Simulator, VendorPlugin};
use coverwatch_vendor_acme::{AcmePlugin, EXTERNAL_ACCOUNT, EXTERNAL_MONITORING};
use secrecy::SecretString;

#[tokio::test]
async fn a_session_completes_with_a_single_use_code_and_the_account_is_read_and_monitored() {
    let plugin = AcmePlugin::default();
    let stand_in = Simulator {
        base_url: "http://127.0.0.1:1",
        webhook_secret: "unused",
    };
    let settings = plugin.simulated_settings(&stand_in).expect("a simulator");
    let provider = plugin.build(settings).expect("builds").provider;
    let base = plugin.simulator().unwrap().base_url().to_owned();

    let link_id = LinkId::new();
    let request = LinkSessionRequest {
        link_id,
        tenant_id: "tenant-a".parse().unwrap(),
        user_id: "user-1".parse().unwrap(),
        metadata: BTreeMap::new(),
        redirect_uri: Some("https://caller.example/done?from=acme".into()),
        // Nothing listens there: this test reads the code from the redirect instead.
        webhook_url: SecretString::from("http://127.0.0.1:1/webhooks/acme/token".to_owned()),
        session_proof: SecretString::from("proof".to_owned()),
    };
    let session = provider.start_link_session(&request).await.unwrap();
    assert!(
        session.url.starts_with(&format!("{base}/hosted/")),
        "{}",
        session.url
    );
    assert!(session.expires_at.is_some());

    // The end-user consents; the caller's page gets the outcome and the one-time code.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = browser.get(&session.url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("id=\"consent\""));
    let done = browser
        .post(&session.url)
        .form(&[("decision", "link")])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let location = url::Url::parse(done.headers()["location"].to_str().unwrap()).unwrap();
    let query: BTreeMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["from"], "acme", "the caller's own query is kept");
    assert_eq!(query["status"], "completed");
    let code = SecretString::from(query["code"].clone());
    // A session is consented to once.
    let again = browser
        .post(&session.url)
        .form(&[("decision", "link")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 410);

    let completion = Completion {
        code: Some(code),
        data: DataRef::All,
    };
    let grant = provider.complete_link(&completion).await.unwrap();
    let account = grant.external_ids[EXTERNAL_ACCOUNT].clone();
    assert_eq!(grant.account_key.as_deref(), Some(account.as_str()));
    // The code is spent: the second exchange is refused as a failed precondition, Acme's
    // code kept for support.
    match provider.complete_link(&completion).await.unwrap_err() {
        ProviderError::Rejected { kind, vendor, .. } => {
            assert_eq!(kind, RejectionKind::FailedPrecondition);
            assert_eq!(vendor.code.as_deref(), Some("invalid_code"));
            assert_eq!(vendor.http_status, Some(400));
            assert!(vendor.request_id.is_some_and(|id| id.starts_with("req_")));
        }
        other => panic!("{other:?}"),
    }

    let mut access = LinkAccess {
        link_id,
        secret: grant.secret.clone(),
        secrets: BTreeMap::new(),
        external_ids: grant.external_ids.clone(),
    };
    let data = provider.fetch(&access, &DataRef::All).await.unwrap();
    assert_eq!(data.account.unwrap().account.external_id, account);
    assert_eq!(data.policies.len(), 1);
    let policy = data.policies[0].policy.external_id.clone();
    let one = provider
        .fetch(&access, &DataRef::Policy(policy.clone()))
        .await
        .unwrap();
    assert_eq!(one.policies[0].policy.external_id, policy);
    assert!(one.account.is_none());
    assert!(matches!(
        provider.fetch(&access, &DataRef::Renewal(policy)).await,
        Err(ProviderError::Unsupported { .. })
    ));

    // Monitoring is one per account however often it is asked for, and stopping it twice is
    // not an error.
    let first = provider.ensure_monitoring(&access).await.unwrap();
    assert_eq!(provider.ensure_monitoring(&access).await.unwrap(), first);
    assert!(first[EXTERNAL_MONITORING].starts_with("mon_"));
    let monitored = |base: String, account: String| async move {
        reqwest::get(format!("{base}/_sim/accounts/{account}"))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()["monitored"]
            .clone()
    };
    assert_eq!(monitored(base.clone(), account.clone()).await, true);
    provider.descope(&access).await.unwrap();
    provider.descope(&access).await.unwrap();
    assert_eq!(monitored(base, account).await, false);

    // Another account's token opens nothing of this one.
    access.secret = Some(SecretString::from("tok_not_issued".to_owned()));
    match provider.fetch(&access, &DataRef::All).await.unwrap_err() {
        ProviderError::Rejected { kind, .. } => assert_eq!(kind, RejectionKind::Unauthenticated),
        other => panic!("{other:?}"),
    }
}
