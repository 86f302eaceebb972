//! The Canopy provider against the Canopy simulator of `coverwatch-sandbox`: links, webhooks as
//! Canopy signs them, monitorings, reconnects, error codes, retries, and the normalized data of
//! every sandbox test login.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Months, NaiveTime, TimeZone, Utc};
use coverwatch_canopy::{
    CanopyConfig, CanopyProvider, EXTERNAL_INITIAL_PULL, EXTERNAL_MONITORING, EXTERNAL_PULL,
    LINK_ID_META_KEY, PULL_JWT_SECRET, RECONNECT_PULL_SECRET, SESSION_META_KEY,
};
use coverwatch_core::backoff::Backoff;
use coverwatch_core::event::{AuthStatus, FailureReason, ReconnectReason};
use coverwatch_core::ids::{LinkId, TenantId, UserId};
use coverwatch_core::policy::{
    AppliesTo, ConnectionStatus, CoverageCode, InsuredRole, Limit, PartyKind, Policy, PolicyStatus,
    PolicyType,
};
use coverwatch_core::provider::{
    Completion, LinkAccess, LinkSessionRequest, Provider, ProviderError, RECONNECT_SECRET,
    ReconnectStep, RejectionKind,
};
use coverwatch_core::webhook::{
    Attribution, DataRef, Happening, InboundWebhook, ParsedWebhook, SessionProof, WebhookRejection,
};
use coverwatch_sandbox::canopy::fixtures::{self, TestLogin};
use coverwatch_sandbox::canopy::{
    self as sim, ConnectRequest, Scenario, ScenarioAction, ScenarioTarget, SignatureMode,
};
use coverwatch_sandbox::{
    DeliveryAttempt, FaultEffect, FaultTarget, RetrySchedule, Sandbox, SandboxConfig, SandboxHandle,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

const SIGNING_SECRET: &str = "whsec-canopy-test-0123456789";
const WAIT: Duration = Duration::from_secs(10);

struct Env {
    sandbox: SandboxHandle,
    provider: CanopyProvider,
}

fn config_for(sandbox: &SandboxHandle) -> CanopyConfig {
    let mut config = CanopyConfig::new(
        sandbox.canopy_base_url(),
        format!("{}/canopy", sandbox.base_url()),
        sim::DEFAULT_TEAM_ID,
        sim::DEFAULT_CLIENT_ID,
        SecretString::from(sim::DEFAULT_CLIENT_SECRET),
        sim::DEFAULT_PUBLIC_ALIAS,
    )
    .with_signing_secret("an-older-secret")
    .with_signing_secret(SIGNING_SECRET);
    // Retries in milliseconds, so that the tests stay fast.
    config.backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(20));
    config.request_timeout = Duration::from_secs(5);
    config
}

/// A port nothing listens on: deliveries to it fail at once and stay in the delivery log,
/// signed, which is all these tests need of them.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/webhooks/canopy")
}

async fn env() -> Env {
    let mut cfg = SandboxConfig::for_tests();
    cfg.canopy = sim::CanopySimConfig::default().with_webhook(dead_url(), SIGNING_SECRET);
    cfg.canopy.retry = RetrySchedule::none();
    let sandbox = Sandbox::start(cfg).await.unwrap();
    let provider = CanopyProvider::new(config_for(&sandbox)).unwrap();
    Env { sandbox, provider }
}

impl Env {
    fn canopy(&self) -> &sim::CanopySim {
        self.sandbox.canopy()
    }

    /// Signs `login` in through the simulator's widget logic, carrying our link id.
    async fn link_pull(&self, link: LinkId, username: &str) -> String {
        let req =
            ConnectRequest::new("statefarm", username, fixtures::GOOD_PASSWORD).with_meta(json!({
                LINK_ID_META_KEY: link.to_string(),
                SESSION_META_KEY: proof_of(link),
                "loan": "L-1"
            }));
        let pull = self.canopy().link(req, WAIT).await.unwrap();
        assert_eq!(pull.status, "SUCCESS", "{username}");
        pull.pull_id
    }

    /// A linked and monitored account, as the engine would hold it.
    async fn linked(&self, username: &str) -> (LinkId, LinkAccess) {
        let link = LinkId::new();
        let pull_id = self.link_pull(link, username).await;
        let grant = self
            .provider
            .complete_link(&Completion {
                code: None,
                data: DataRef::Version(pull_id),
            })
            .await
            .unwrap();
        let mut access = access(link, grant.external_ids);
        let ids = self.provider.ensure_monitoring(&access).await.unwrap();
        access.external_ids.extend(ids);
        (link, access)
    }

    /// The first delivery of `event_type` for `pull_id`, waiting for it.
    async fn delivery(&self, pull_id: &str, event_type: &str) -> DeliveryAttempt {
        self.nth_delivery(pull_id, event_type, 1).await
    }

    async fn nth_delivery(&self, pull_id: &str, event_type: &str, n: usize) -> DeliveryAttempt {
        let (pull, event) = (pull_id.to_owned(), event_type.to_owned());
        self.sandbox
            .deliveries()
            .wait_until(WAIT, move |all| {
                all.iter()
                    .filter(|a| {
                        a.event_type == event
                            && a.json().is_some_and(|b| b["pull_id"] == pull.as_str())
                    })
                    .nth(n - 1)
                    .cloned()
            })
            .await
            .unwrap_or_else(|e| panic!("no {event_type} #{n}: {e:?}"))
    }

    fn parse(&self, delivery: &DeliveryAttempt) -> ParsedWebhook {
        let inbound = inbound(delivery);
        self.provider
            .authenticate_webhook(&inbound)
            .unwrap_or_else(|e| panic!("{}: {e}", delivery.event_type));
        self.provider.parse_webhook(&inbound).unwrap()
    }

    /// How many more times a fault rule will fire.
    fn remaining(&self, fault: u64) -> u32 {
        self.sandbox
            .faults()
            .list()
            .iter()
            .find(|r| r.id == fault)
            .and_then(|r| r.times)
            .unwrap_or(0)
    }
}

fn access(link_id: LinkId, external_ids: BTreeMap<String, String>) -> LinkAccess {
    LinkAccess {
        link_id,
        secret: None,
        secrets: BTreeMap::new(),
        external_ids,
    }
}

fn inbound(delivery: &DeliveryAttempt) -> InboundWebhook {
    InboundWebhook {
        path: String::new(),
        headers: delivery
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        body: delivery.body.clone().into_bytes(),
        received_at: Utc::now(),
    }
}

fn session_request(link_id: LinkId) -> LinkSessionRequest {
    LinkSessionRequest {
        link_id,
        tenant_id: "tenant-a".parse::<TenantId>().unwrap(),
        user_id: "user-1".parse::<UserId>().unwrap(),
        metadata: BTreeMap::new(),
        redirect_uri: None,
        webhook_url: SecretString::from("unused"),
        session_proof: SecretString::from(proof_of(link_id)),
    }
}

/// The session proof the engine would have handed out for `link` (any unguessable value).
fn proof_of(link: LinkId) -> String {
    format!("proof-of-{link}")
}

fn session_of(link: LinkId) -> Attribution {
    Attribution::Session {
        link,
        proof: SessionProof::new(proof_of(link)),
    }
}

fn rejection(err: &ProviderError) -> (RejectionKind, Option<&str>, Option<u16>) {
    match err {
        ProviderError::Rejected { kind, vendor, .. } => {
            (*kind, vendor.code.as_deref(), vendor.http_status)
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn only(parsed: &ParsedWebhook) -> &Happening {
    assert_eq!(parsed.happenings.len(), 1, "{:?}", parsed.happenings);
    &parsed.happenings[0]
}

// ---- the normalized data of each test login ------------------------------------------------

fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.from_utc_datetime(&t.date_naive().and_time(NaiveTime::MIN))
}

fn coverage<'a>(
    policy: &'a Policy,
    code: CoverageCode,
    on: &str,
) -> &'a coverwatch_core::policy::Coverage {
    policy
        .coverages
        .iter()
        .find(|c| c.code == code && c.applies_to == AppliesTo::Property(on.into()))
        .unwrap_or_else(|| panic!("{code:?} on {on}"))
}

/// Limits as amounts; a coverage with an unlimited limit is checked on its own.
fn limits(
    c: &coverwatch_core::policy::Coverage,
) -> (Option<i64>, Option<i64>, Option<i64>, Option<i64>) {
    let amount = |l: Option<Limit>| l.map(|l| l.cents().expect("an amount, not unlimited"));
    (
        amount(c.limit_per_person),
        amount(c.limit_per_accident),
        c.deductible_cents,
        c.premium_cents,
    )
}

/// Every field of the normalized data against the fixture values documented in
/// `coverwatch_sandbox::canopy::fixtures`.
fn assert_fixture_data(
    login: TestLogin,
    data: &coverwatch_core::provider::FetchedData,
    now: DateTime<Utc>,
) {
    let (auto_no, home_no) = fixtures::policy_numbers(login);
    let account = &data.account.as_ref().unwrap().account;
    assert_eq!(account.carrier.id, "statefarm");
    assert_eq!(account.carrier.name.as_deref(), Some("State Farm"));
    assert_eq!(account.first_name.as_deref(), Some("Morgan"));
    assert_eq!(account.last_name.as_deref(), Some("Tester"));
    assert_eq!(account.email.as_deref(), Some("morgan.tester@example.com"));
    assert_eq!(account.phone.as_deref(), Some("5555550100"));
    assert_eq!(account.connection, ConnectionStatus::Active);
    assert_eq!(account.policy_ids, vec![auto_no.clone(), home_no.clone()]);
    assert!(account.refreshed_at.is_some());
    assert_eq!(data.policies.len(), 2);

    let today = midnight(now);
    let (camry, civic) = ("4T1G11AK5MU000001", "2HGFC2F59GH000002");

    // Auto.
    let auto = &data.policies[0].policy;
    assert_eq!(auto.external_id, auto_no);
    assert_eq!(auto.policy_number.as_deref(), Some(auto_no.as_str()));
    assert_eq!(auto.policy_type, PolicyType::Auto);
    assert_eq!(auto.status, PolicyStatus::Active);
    assert_eq!(auto.carrier.id, "statefarm");
    let effective = today - chrono::Duration::days(45);
    assert_eq!(auto.effective_date, Some(effective));
    assert_eq!(auto.expiration_date, Some(effective + Months::new(6)));
    assert_eq!(auto.cancelled_date, None);
    assert_eq!(auto.premium_cents, Some(102_200));
    let mailing = auto.address.as_ref().unwrap();
    assert_eq!(
        (
            mailing.line1.as_deref(),
            mailing.line2.as_deref(),
            mailing.city.as_deref(),
            mailing.state.as_deref(),
            mailing.postal_code.as_deref(),
            mailing.country.as_deref()
        ),
        (
            Some("123 Main St"),
            Some("Apt 4B"),
            Some("Springfield"),
            Some("IL"),
            Some("62701"),
            Some("US")
        )
    );
    assert_eq!(auto.vehicles.len(), 2);
    let v = &auto.vehicles[0];
    assert_eq!(
        (
            v.id.as_str(),
            v.vin.as_deref(),
            v.year,
            v.make.as_deref(),
            v.model.as_deref(),
            v.body_style.as_deref()
        ),
        (
            camry,
            Some(camry),
            Some(2021),
            Some("TOYOTA"),
            Some("Camry"),
            Some("PASSENGER CAR")
        )
    );
    assert_eq!(
        v.garaging_address.as_ref().unwrap().line1.as_deref(),
        Some("123 Main St")
    );
    let v = &auto.vehicles[1];
    assert_eq!(
        (v.id.as_str(), v.year, v.make.as_deref(), v.model.as_deref()),
        (civic, Some(2016), Some("HONDA"), Some("Civic"))
    );
    use CoverageCode::*;
    let bi = coverage(auto, BodilyInjury, camry);
    assert_eq!(bi.vendor_code, "BODILY_INJURY_LIABILITY");
    assert_eq!(bi.label.as_deref(), Some("Bodily Injury Liability"));
    assert!(!bi.declined);
    assert_eq!(
        limits(bi),
        (Some(10_000_000), Some(30_000_000), None, Some(21_000))
    );
    assert_eq!(
        limits(coverage(auto, PropertyDamage, camry)),
        (None, Some(10_000_000), None, Some(15_000))
    );
    assert_eq!(
        limits(coverage(auto, UninsuredMotoristBodilyInjury, camry)),
        (Some(5_000_000), Some(10_000_000), None, Some(4_000))
    );
    assert_eq!(
        limits(coverage(auto, UninsuredMotoristPropertyDamage, camry)),
        (None, Some(2_500_000), Some(25_000), Some(1_200))
    );
    assert_eq!(
        limits(coverage(auto, Comprehensive, camry)),
        (None, None, Some(50_000), Some(9_800))
    );
    assert_eq!(
        limits(coverage(auto, Collision, camry)),
        (None, None, Some(100_000), Some(18_400))
    );
    assert_eq!(
        limits(coverage(auto, BodilyInjury, civic)),
        (Some(10_000_000), Some(30_000_000), None, Some(16_500))
    );
    assert_eq!(
        limits(coverage(auto, PropertyDamage, civic)),
        (None, Some(10_000_000), None, Some(12_000))
    );
    assert_eq!(
        limits(coverage(auto, UninsuredMotoristBodilyInjury, civic)),
        (Some(5_000_000), Some(10_000_000), None, Some(3_300))
    );
    assert_eq!(
        limits(coverage(auto, UninsuredMotoristPropertyDamage, civic)),
        (None, Some(2_500_000), Some(25_000), Some(1_000))
    );
    // canopy-openapi.json, VehicleCoverage: "per_person_unlimited: If true, this coverage has an
    // unlimited per-person limit"; "per_incident_unlimited: If true, this coverage has an
    // unlimited per-incident limit".
    let pip = coverage(auto, PersonalInjuryProtection, camry);
    assert_eq!(
        (pip.limit_per_person, pip.limit_per_accident),
        (Some(Limit::Unlimited), Some(Limit::Unlimited))
    );
    // VehicleCoverage: "per_day_limit_cents: Per-day limit, in cents"; "max_days: Max days, comes
    // in pairs with `per_day_limit_cents`" (3000 and 30 in Canopy's ADD_VEHICLE example).
    let rental = coverage(auto, RentalReimbursement, camry);
    assert_eq!(
        (rental.limit_per_day_cents, rental.max_days),
        (Some(3_000), Some(30))
    );
    assert_eq!(limits(rental), (None, None, None, None));
    assert_eq!(auto.coverages.len(), 12, "liability only on the Civic");
    // The financed Camry names its lienholder; the Civic is owned outright.
    assert_eq!(auto.interested_parties.len(), 1);
    let lien = &auto.interested_parties[0];
    assert_eq!(lien.kind, PartyKind::Lienholder);
    assert_eq!(lien.name.as_deref(), Some("Sandbox Auto Finance"));
    assert_eq!(lien.applies_to, AppliesTo::Property(camry.into()));
    let lien_address = lien.address.as_ref().unwrap();
    assert_eq!(
        (
            lien_address.line1.as_deref(),
            lien_address.city.as_deref(),
            lien_address.state.as_deref(),
            lien_address.postal_code.as_deref()
        ),
        (
            Some("500 Lender Way"),
            Some("Columbus"),
            Some("OH"),
            Some("43215")
        )
    );
    let insureds: Vec<(&str, InsuredRole, AppliesTo, Option<&str>)> = auto
        .insureds
        .iter()
        .map(|i| {
            (
                i.first_name.as_deref().unwrap(),
                i.role,
                i.applies_to.clone(),
                i.license_masked.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        insureds,
        vec![
            (
                "Morgan",
                InsuredRole::Primary,
                AppliesTo::AllProperties,
                None
            ),
            (
                "Casey",
                InsuredRole::NamedInsured,
                AppliesTo::AllProperties,
                None
            ),
            (
                "Morgan",
                InsuredRole::Driver,
                AppliesTo::AllProperties,
                Some("•••••5678")
            ),
            (
                "Casey",
                InsuredRole::Driver,
                AppliesTo::AllProperties,
                Some("•••••4321")
            ),
        ]
    );
    assert!(
        auto.insureds
            .iter()
            .all(|i| i.last_name.as_deref() == Some("Tester"))
    );
    assert_eq!(auto.insureds[2].license_state.as_deref(), Some("IL"));
    let docs: Vec<(&[String], Option<DateTime<Utc>>)> = auto
        .documents
        .iter()
        .map(|d| (d.kinds.as_slice(), d.created_at))
        .collect();
    assert_eq!(
        docs,
        vec![
            (&["declaration_page".to_owned()][..], Some(effective)),
            (&["id_card".to_owned()][..], Some(effective)),
        ]
    );
    assert!(
        auto.documents
            .iter()
            .all(|d| d.id.is_some() && d.name.is_some())
    );
    // Raw copies keep no licence number and no download URL.
    let raw = data.policies[0].raw.to_string();
    assert!(raw.contains(&auto_no) && !raw.contains("T12345678"));
    let account_raw = data.account.as_ref().unwrap().raw.to_string();
    assert!(!account_raw.contains("download_url") && !account_raw.contains("T87654321"));

    // Home.
    let home = &data.policies[1].policy;
    let dwelling = "123 Main Street, Apt 4B, Springfield, IL, 62701";
    assert_eq!(home.external_id, home_no);
    assert_eq!(home.policy_type, PolicyType::Homeowners);
    assert_eq!(home.status, PolicyStatus::Active);
    let effective = today - chrono::Duration::days(120);
    assert_eq!(home.effective_date, Some(effective));
    assert_eq!(home.expiration_date, Some(effective + Months::new(12)));
    assert_eq!(home.premium_cents, Some(132_700));
    assert_eq!(home.dwellings.len(), 1);
    assert_eq!(home.dwellings[0].id, dwelling);
    assert_eq!(home.dwellings[0].replacement_cost_cents, Some(35_000_000));
    assert_eq!(
        home.address.as_ref().unwrap().line1.as_deref(),
        Some("123 Main St")
    );
    assert_eq!(
        limits(coverage(home, Dwelling, dwelling)),
        (None, Some(35_000_000), None, Some(98_000))
    );
    assert_eq!(
        limits(coverage(home, OtherStructures, dwelling)),
        (None, Some(3_500_000), None, Some(4_900))
    );
    assert_eq!(
        limits(coverage(home, PersonalProperty, dwelling)),
        (None, Some(17_500_000), None, Some(23_100))
    );
    assert_eq!(
        limits(coverage(home, LossOfUse, dwelling)),
        (None, Some(7_000_000), None, Some(2_400))
    );
    assert_eq!(
        limits(coverage(home, PersonalLiability, dwelling)),
        (None, Some(30_000_000), None, Some(3_000))
    );
    assert_eq!(
        limits(coverage(home, MedicalPaymentsToOthers, dwelling)),
        (Some(500_000), None, None, Some(1_300))
    );
    // The home deductible, on ALL_OTHER_PERILS as in Canopy's own HOMEOWNERS example.
    let aop = coverage(home, AllPerils, dwelling);
    assert_eq!(aop.vendor_code, "ALL_OTHER_PERILS");
    assert_eq!(limits(aop), (None, None, Some(100_000), None));
    assert_eq!(
        limits(coverage(home, Other("WINDSTORM_OR_HAIL".into()), dwelling)),
        (None, None, Some(700_000), None)
    );
    assert_eq!(home.coverages.len(), 8);
    assert_eq!(home.interested_parties.len(), 1);
    let m = &home.interested_parties[0];
    assert_eq!(m.kind, PartyKind::Mortgagee);
    assert_eq!(m.name.as_deref(), Some("Sandbox Home Lending"));
    assert_eq!(m.loan_number.as_deref(), Some("ML-0042-7781"));
    assert_eq!(m.applies_to, AppliesTo::Property(dwelling.into()));
    assert_eq!(m.address.as_ref().unwrap().city.as_deref(), Some("Dallas"));
    assert!(home.vehicles.is_empty());
    assert_eq!(home.documents.len(), 1);
    assert_eq!(home.documents[0].kinds, vec!["declaration_page".to_owned()]);
}

#[tokio::test]
async fn every_test_login_normalizes_to_the_fixture_values() {
    let env = env().await;
    for login in [
        TestLogin::Good,
        TestLogin::GoodDiffs,
        TestLogin::Mfa,
        TestLogin::OptionlessMfa,
    ] {
        let link = LinkId::new();
        let meta = json!({ LINK_ID_META_KEY: link.to_string() });
        let req = ConnectRequest::new("statefarm", login.username(), fixtures::GOOD_PASSWORD)
            .with_meta(meta);
        let pull_id = env.canopy().connect(req).unwrap();
        if login == TestLogin::Mfa {
            env.canopy()
                .wait_for_status(&pull_id, "IDENTITY_VERIFICATION_OPTIONS", WAIT)
                .await
                .unwrap();
            env.canopy().select_mfa_option(&pull_id, "sms").unwrap();
        }
        if matches!(login, TestLogin::Mfa | TestLogin::OptionlessMfa) {
            env.canopy()
                .wait_for_status(&pull_id, "IDENTITY_VERIFICATION", WAIT)
                .await
                .unwrap();
            env.canopy().submit_mfa_code(&pull_id, "123456").unwrap();
        }
        env.canopy()
            .wait_for_status(&pull_id, "SUCCESS", WAIT)
            .await
            .unwrap();

        let grant = env
            .provider
            .complete_link(&Completion {
                code: None,
                data: DataRef::Version(pull_id.clone()),
            })
            .await
            .unwrap();
        let account_identifier = env
            .canopy()
            .pull(&pull_id)
            .unwrap()
            .account_identifier
            .unwrap();
        assert_eq!(
            grant.account_key.as_deref(),
            Some(account_identifier.as_str())
        );
        assert!(grant.secret.is_none());
        assert_eq!(grant.external_ids[EXTERNAL_INITIAL_PULL], pull_id);
        assert_eq!(grant.external_ids[EXTERNAL_PULL], pull_id);

        let access = access(link, grant.external_ids);
        let data = env.provider.fetch(&access, &DataRef::All).await.unwrap();
        assert_eq!(data.external_ids[EXTERNAL_PULL], pull_id);
        assert_eq!(
            data.account.as_ref().unwrap().account.external_id,
            account_identifier
        );
        assert_fixture_data(login, &data, env.sandbox.clock().now());
    }
}

// ---- link sessions and webhooks ------------------------------------------------------------

#[tokio::test]
async fn a_link_session_is_completed_through_signed_webhooks() {
    let env = env().await;
    let link = LinkId::new();
    let session = env
        .provider
        .start_link_session(&session_request(link))
        .await
        .unwrap();
    assert!(
        session.url.starts_with(&env.canopy().widget_url()),
        "{}",
        session.url
    );
    // The widget reads our meta data back from the URL's `ccmeta-` parameters.
    let page = reqwest::get(&session.url).await.unwrap();
    assert!(page.status().is_success());
    let html = page.text().await.unwrap();
    let carried = format!("{}&quot;:&quot;{}&quot;", SESSION_META_KEY, proof_of(link));
    assert!(html.contains(&carried), "{html}");

    let pull_id = env.link_pull(link, "user_good").await;
    let pull = env.canopy().pull(&pull_id).unwrap();
    assert_eq!(pull.meta_data[LINK_ID_META_KEY], link.to_string());

    let auth = env.parse(&env.delivery(&pull_id, "AUTH_STATUS").await);
    assert_eq!(auth.attribution[0], session_of(link));
    assert!(auth.attribution.contains(&Attribution::External {
        kind: "pull".into(),
        value: pull_id.clone()
    }));
    let Happening::AuthProgress {
        status, sequence, ..
    } = only(&auth)
    else {
        panic!("{auth:?}")
    };
    assert_eq!(*status, AuthStatus::Success);
    assert!(sequence.is_some());

    for event in ["POLICIES_AVAILABLE", "COMPLETE"] {
        let parsed = env.parse(&env.delivery(&pull_id, event).await);
        assert_eq!(parsed.attribution[0], session_of(link));
        let Happening::SessionCompleted { code, data } = only(&parsed) else {
            panic!("{event}: {parsed:?}")
        };
        assert!(code.is_none());
        assert_eq!(*data, DataRef::Version(pull_id.clone()));
        let coverwatch_canopy::CanopyEventDetail {
            event_type,
            pull_id: detail_pull,
            ..
        } = coverwatch_canopy::CanopyEventDetail::try_from(&parsed.detail).unwrap();
        assert_eq!(
            (event_type.as_str(), detail_pull.as_deref()),
            (event, Some(pull_id.as_str()))
        );
    }
    let per_policy = env.parse(&env.delivery(&pull_id, "POLICY_AVAILABLE").await);
    assert!(
        per_policy.happenings.is_empty(),
        "repeated by POLICIES_AVAILABLE"
    );

    // Unknown types are kept.
    env.canopy()
        .send_event(&pull_id, "BRAND_NEW_EVENT", Some(json!({})))
        .unwrap();
    let parsed = env.parse(&env.delivery(&pull_id, "BRAND_NEW_EVENT").await);
    assert!(
        matches!(only(&parsed), Happening::Vendor { vendor_type } if vendor_type == "BRAND_NEW_EVENT")
    );
}

#[tokio::test]
async fn mfa_progress_is_reported_in_order() {
    let env = env().await;
    let link = LinkId::new();
    let req = ConnectRequest::new("statefarm", "user_mfa", fixtures::GOOD_PASSWORD)
        .with_meta(json!({ LINK_ID_META_KEY: link.to_string() }));
    let pull_id = env.canopy().connect(req).unwrap();
    let options = env.parse(&env.delivery(&pull_id, "AUTH_STATUS").await);
    let Happening::AuthProgress {
        status,
        verification_options,
        sequence: first,
        ..
    } = only(&options)
    else {
        panic!()
    };
    assert_eq!(*status, AuthStatus::IdentityVerificationOptions);
    let keys: Vec<&str> = verification_options
        .iter()
        .map(|o| o.key.as_str())
        .collect();
    assert_eq!(keys, vec!["email", "sms"]);
    assert_eq!(
        verification_options[1].label,
        "Text message to (***) ***-0100"
    );

    env.canopy().select_mfa_option(&pull_id, "sms").unwrap();
    let code = env.parse(&env.nth_delivery(&pull_id, "AUTH_STATUS", 2).await);
    let Happening::AuthProgress {
        status,
        sequence: second,
        ..
    } = only(&code)
    else {
        panic!()
    };
    assert_eq!(*status, AuthStatus::IdentityVerification);
    assert!(second > first, "{second:?} after {first:?}");

    env.canopy()
        .submit_mfa_code(&pull_id, fixtures::MESSAGE_MFA_CODE)
        .unwrap();
    let failed = env.parse(&env.nth_delivery(&pull_id, "AUTH_STATUS", 3).await);
    let Happening::AuthProgress {
        status,
        login_error_message,
        ..
    } = only(&failed)
    else {
        panic!()
    };
    assert_eq!(*status, AuthStatus::NotAuthenticated);
    assert_eq!(
        login_error_message.as_deref(),
        Some(fixtures::MFA_EXPIRED_MESSAGE)
    );
}

#[tokio::test]
async fn failed_sign_ins_fail_the_session() {
    let env = env().await;
    for (user, reason) in [
        ("user_provider_error", FailureReason::ProviderError),
        ("user_internal_error", FailureReason::VendorError),
    ] {
        let req = ConnectRequest::new("statefarm", user, fixtures::GOOD_PASSWORD);
        let pull_id = env.canopy().connect(req).unwrap();
        let parsed = env.parse(&env.delivery(&pull_id, "ERROR").await);
        assert!(
            matches!(only(&parsed), Happening::SessionFailed { reason: r, .. } if *r == reason),
            "{user}: {parsed:?}"
        );
        let err = env
            .provider
            .complete_link(&Completion {
                code: None,
                data: DataRef::Version(pull_id),
            })
            .await
            .unwrap_err();
        assert_eq!(
            rejection(&err).0,
            RejectionKind::FailedPrecondition,
            "{user}"
        );
    }
    let req = ConnectRequest::new("statefarm", "user_locked", fixtures::GOOD_PASSWORD);
    let pull_id = env.canopy().connect(req).unwrap();
    let parsed = env.parse(&env.delivery(&pull_id, "AUTH_STATUS").await);
    assert!(matches!(
        only(&parsed),
        Happening::AuthProgress { status: AuthStatus::NotAuthenticated, login_error_message: Some(m), .. }
            if m == fixtures::LOCKED_MESSAGE
    ));
}

#[tokio::test]
async fn forged_and_unsigned_deliveries_are_refused_and_stale_ones_taken_as_late() {
    let env = env().await;
    let link = LinkId::new();
    let pull_id = env.link_pull(link, "user_good").await;
    let genuine = env.delivery(&pull_id, "COMPLETE").await;
    let mut tampered = inbound(&genuine);
    tampered.body = genuine
        .body
        .replace(&pull_id, "00000000-0000-4000-8000-000000000000")
        .into_bytes();
    assert_eq!(
        env.provider.authenticate_webhook(&tampered),
        Err(WebhookRejection::BadSignature)
    );

    let cases = [
        (SignatureMode::WrongSecret, "wrong secret"),
        (SignatureMode::Stale { seconds: 900 }, "stale"),
        (SignatureMode::Missing, "missing"),
    ];
    for (n, (mode, what)) in cases.into_iter().enumerate() {
        env.canopy().set_signature_mode(mode);
        env.canopy()
            .send_event(&pull_id, "COMPLETE", Some(json!({})))
            .unwrap();
        let delivery = env.nth_delivery(&pull_id, "COMPLETE", n + 2).await;
        let result = env.provider.authenticate_webhook(&inbound(&delivery));
        match mode {
            SignatureMode::WrongSecret => {
                assert_eq!(result, Err(WebhookRejection::BadSignature), "{what}")
            }
            // Genuine but 900 s old: taken under the default policy, and said to be late.
            SignatureMode::Stale { .. } => assert!(
                matches!(&result, Ok(auth) if auth.late_by_seconds.is_some_and(|s| s >= 900)),
                "{what}: {result:?}"
            ),
            _ => assert_eq!(
                result,
                Err(WebhookRejection::MissingHeader("canopy-signature".into())),
                "{what}"
            ),
        }
    }
}

// ---- monitoring ----------------------------------------------------------------------------

#[tokio::test]
async fn monitoring_is_created_once_and_refreshes_arrive_as_data_changes() {
    let env = env().await;
    let (link, access) = env.linked("user_good_diffs").await;
    let monitoring = access.external_ids[EXTERNAL_MONITORING].clone();
    assert_eq!(env.canopy().monitorings().len(), 1);
    assert_eq!(
        env.canopy().monitoring(&monitoring).unwrap().interval,
        "P1M"
    );
    // Again: the same monitoring, not a second one.
    let again = env.provider.ensure_monitoring(&access).await.unwrap();
    assert_eq!(again[EXTERNAL_MONITORING], monitoring);
    assert_eq!(env.canopy().monitorings().len(), 1);

    env.provider.refresh(&access).await.unwrap();
    let refreshed = env.canopy().monitoring(&monitoring).unwrap().latest_pull_id;
    assert_ne!(refreshed, access.external_ids[EXTERNAL_PULL]);
    env.canopy()
        .wait_for_status(&refreshed, "SUCCESS", WAIT)
        .await
        .unwrap();
    let parsed = env.parse(&env.delivery(&refreshed, "COMPLETE").await);
    assert_eq!(
        parsed.attribution,
        vec![
            session_of(link),
            Attribution::External {
                kind: "initial_pull".into(),
                value: access.external_ids[EXTERNAL_INITIAL_PULL].clone()
            },
            Attribution::External {
                kind: "monitoring".into(),
                value: monitoring.clone()
            },
            Attribution::External {
                kind: "pull".into(),
                value: refreshed.clone()
            },
        ]
    );
    let Happening::DataChanged { data, .. } = only(&parsed) else {
        panic!("{parsed:?}")
    };
    assert_eq!(*data, DataRef::Version(refreshed.clone()));
    let events = env.parse(&env.delivery(&refreshed, "MONITORING_EVENTS").await);
    assert!(
        matches!(only(&events), Happening::DataChanged { data: DataRef::Version(p), .. } if *p == refreshed)
    );

    let before = env.provider.fetch(&access, &DataRef::All).await.unwrap();
    let after = env.provider.fetch(&access, data).await.unwrap();
    assert_eq!(after.external_ids[EXTERNAL_PULL], refreshed);
    // Stable ids across pulls, and the $25.00 the diff login adds to BI on the first vehicle.
    let (b, a) = (&before.policies[0].policy, &after.policies[0].policy);
    assert_eq!(a.external_id, b.external_id);
    assert_eq!(a.vehicles[0].id, b.vehicles[0].id);
    assert_eq!(a.premium_cents.unwrap() - b.premium_cents.unwrap(), 2_500);
    let changes = coverwatch_core::change::diff_policies(b, a);
    assert!(
        changes.iter().all(|c| !matches!(
            c.kind,
            coverwatch_core::event::ChangeKind::CoverageAdded
                | coverwatch_core::event::ChangeKind::CoverageRemoved
                | coverwatch_core::event::ChangeKind::VehicleAdded
                | coverwatch_core::event::ChangeKind::VehicleRemoved
        )),
        "{changes:?}"
    );
}

#[tokio::test]
async fn a_create_that_failed_after_reaching_canopy_is_not_made_twice() {
    let env = env().await;
    let link = LinkId::new();
    let pull_id = env.link_pull(link, "user_good").await;
    let access = access(
        link,
        BTreeMap::from([
            (EXTERNAL_INITIAL_PULL.to_owned(), pull_id.clone()),
            (EXTERNAL_PULL.to_owned(), pull_id),
        ]),
    );
    // The monitoring is created, but the answer is cut short.
    env.sandbox.faults().inject_times(
        FaultTarget::endpoint("canopy.monitorings.create"),
        FaultEffect::Malformed,
        1,
    );
    let ids = env.provider.ensure_monitoring(&access).await.unwrap();
    assert_eq!(env.canopy().monitorings().len(), 1);
    assert_eq!(
        ids[EXTERNAL_MONITORING],
        env.canopy().monitorings()[0].monitoring_id
    );
}

#[tokio::test]
async fn a_failed_create_is_not_repeated_blindly() {
    let env = env().await;
    let link = LinkId::new();
    let pull_id = env.link_pull(link, "user_good").await;
    let access = access(
        link,
        BTreeMap::from([(EXTERNAL_INITIAL_PULL.to_owned(), pull_id)]),
    );
    let fault = env.sandbox.faults().inject_times(
        FaultTarget::endpoint("canopy.monitorings.create"),
        FaultEffect::status(500),
        2,
    );
    let err = env.provider.ensure_monitoring(&access).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(env.remaining(fault), 1, "the create was sent once");
    assert!(env.canopy().monitorings().is_empty());
    env.sandbox.faults().remove(fault);
    env.provider.ensure_monitoring(&access).await.unwrap();
    assert_eq!(env.canopy().monitorings().len(), 1);
}

#[tokio::test]
async fn monitoring_a_pull_still_running_is_worth_retrying() {
    let env = env().await;
    env.canopy().hold_pulls(true);
    let link = LinkId::new();
    let req = ConnectRequest::good().with_meta(json!({ LINK_ID_META_KEY: link.to_string() }));
    let pull_id = env.canopy().connect(req).unwrap();
    env.canopy()
        .wait_for_status(&pull_id, "PULLING_DATA", WAIT)
        .await
        .unwrap();
    let access = access(
        link,
        BTreeMap::from([(EXTERNAL_INITIAL_PULL.to_owned(), pull_id.clone())]),
    );
    let err = env.provider.ensure_monitoring(&access).await.unwrap_err();
    let ProviderError::Unavailable { vendor, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(vendor.code.as_deref(), Some("PULL_NOT_SUCCESS"));
    // A pull with no data yet is not read as an empty account.
    let err = env
        .provider
        .fetch(&access, &DataRef::Version(pull_id.clone()))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    env.canopy().hold_pulls(false);
    env.canopy()
        .wait_for_status(&pull_id, "SUCCESS", WAIT)
        .await
        .unwrap();
    env.provider.ensure_monitoring(&access).await.unwrap();
}

#[tokio::test]
async fn refresh_and_descope_answer_in_canopy_terms() {
    let env = env().await;
    let (_, access) = env.linked("user_good").await;
    env.canopy().hold_pulls(true);
    env.provider.refresh(&access).await.unwrap();
    let err = env.provider.refresh(&access).await.unwrap_err();
    assert_eq!(
        rejection(&err),
        (
            RejectionKind::FailedPrecondition,
            Some("CURRENTLY_REFRESHING"),
            Some(400)
        )
    );
    env.canopy().hold_pulls(false);

    env.provider.descope(&access).await.unwrap();
    let monitoring = &access.external_ids[EXTERNAL_MONITORING];
    assert_eq!(
        env.canopy().monitoring(monitoring).unwrap().status,
        "STOPPED"
    );
    // Stopping what is stopped is not an error.
    env.provider.descope(&access).await.unwrap();
    let err = env.provider.refresh(&access).await.unwrap_err();
    assert_eq!(
        rejection(&err),
        (
            RejectionKind::FailedPrecondition,
            Some("MONITORING_INACTIVE"),
            Some(400)
        )
    );
    // Nor is descoping a link that was never monitored, or whose monitoring Canopy forgot.
    let mut unmonitored = access.clone();
    unmonitored.external_ids.remove(EXTERNAL_MONITORING);
    env.provider.descope(&unmonitored).await.unwrap();
    let mut forgotten = access.clone();
    forgotten.external_ids.insert(
        EXTERNAL_MONITORING.into(),
        "00000000-0000-4000-8000-000000000000".into(),
    );
    env.provider.descope(&forgotten).await.unwrap();
}

// ---- reconnect -----------------------------------------------------------------------------

#[tokio::test]
async fn expired_credentials_are_reconnected_in_app() {
    let env = env().await;
    let (link, mut access) = env.linked("user_good").await;
    let monitoring = access.external_ids[EXTERNAL_MONITORING].clone();
    let outcome = env
        .canopy()
        .apply(
            Scenario::new(
                ScenarioTarget::pull(&access.external_ids[EXTERNAL_PULL]),
                ScenarioAction::ExpireCredentials,
            )
            .and_refresh(),
        )
        .unwrap();
    let reconnect_pull = outcome.refreshed_pull_ids[0].clone();
    let parsed = env.parse(&env.delivery(&reconnect_pull, "MONITORING_RECONNECT").await);
    assert_eq!(parsed.attribution[0], session_of(link));
    let Happening::ReconnectRequired {
        reason,
        reconnect_url,
        reconnect_token,
    } = only(&parsed)
    else {
        panic!("{parsed:?}")
    };
    assert_eq!(*reason, ReconnectReason::CredentialsExpired);
    assert!(
        reconnect_url
            .as_deref()
            .unwrap()
            .contains("/reconnect?reconnectToken=")
    );
    access
        .secrets
        .insert(RECONNECT_SECRET.into(), reconnect_token.clone().unwrap());

    // The hosted alternative: a fresh reconnect page each time.
    let session = env
        .provider
        .start_reconnect(&access, &session_request(link))
        .await
        .unwrap();
    assert!(session.url.contains("/reconnect?reconnectToken="));

    // A wrong password first: the same reconnect can take credentials again.
    let wrong = ReconnectStep::Credentials {
        carrier: None,
        username: SecretString::from("user_good"),
        password: Some(SecretString::from("wrong-password")),
        third_field: None,
    };
    env.provider.reconnect_step(&access, &wrong).await.unwrap();
    let outcome = env
        .provider
        .reconnect_step(
            &access,
            &ReconnectStep::Credentials {
                carrier: Some("statefarm".into()),
                username: SecretString::from("user_good"),
                password: Some(SecretString::from(fixtures::GOOD_PASSWORD)),
                third_field: None,
            },
        )
        .await
        .unwrap();
    let kept: BTreeMap<String, String> = outcome
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), v.as_ref().unwrap().expose_secret().to_owned()))
        .collect();
    assert!(kept.contains_key(PULL_JWT_SECRET));
    assert_eq!(kept[RECONNECT_PULL_SECRET], reconnect_pull);
    env.canopy()
        .wait_for_status(&reconnect_pull, "SUCCESS", WAIT)
        .await
        .unwrap();
    assert_eq!(
        env.canopy().monitoring(&monitoring).unwrap().status,
        "ACTIVE"
    );

    // The token is used up now; Canopy says so in its own words.
    let err = env
        .provider
        .reconnect_step(&access, &wrong)
        .await
        .unwrap_err();
    assert_eq!(rejection(&err).0, RejectionKind::FailedPrecondition);
}

#[tokio::test]
async fn a_reconnect_through_mfa_keeps_its_pull_jwt_between_steps() {
    let env = env().await;
    let (_, mut access) = env.linked("user_good").await;
    let monitoring = access.external_ids[EXTERNAL_MONITORING].clone();
    let outcome = env
        .canopy()
        .apply(
            Scenario::new(
                ScenarioTarget::pull(&access.external_ids[EXTERNAL_PULL]),
                ScenarioAction::RequireMfa,
            )
            .and_refresh(),
        )
        .unwrap();
    let reconnect_pull = outcome.refreshed_pull_ids[0].clone();
    env.delivery(&reconnect_pull, "MONITORING_RECONNECT").await;
    // No reconnect token kept: the provider mints one through the monitoring.
    assert!(!access.secrets.contains_key(RECONNECT_SECRET));

    let step = |step: ReconnectStep| {
        let provider = env.provider.clone();
        let access = access.clone();
        async move { provider.reconnect_step(&access, &step).await }
    };
    // Verification before credentials has no pull to act on.
    let err = step(ReconnectStep::VerificationOption { key: "sms".into() })
        .await
        .unwrap_err();
    assert_eq!(rejection(&err).0, RejectionKind::FailedPrecondition);

    let outcome = step(ReconnectStep::Credentials {
        carrier: None,
        username: SecretString::from("user_good"),
        password: Some(SecretString::from(fixtures::GOOD_PASSWORD)),
        third_field: None,
    })
    .await
    .unwrap();
    for (name, value) in outcome.secrets {
        access.secrets.insert(name, value.unwrap());
    }
    assert!(
        access.secrets.contains_key(RECONNECT_SECRET),
        "the minted token is kept"
    );
    env.canopy()
        .wait_for_status(&reconnect_pull, "IDENTITY_VERIFICATION_OPTIONS", WAIT)
        .await
        .unwrap();
    env.provider
        .reconnect_step(
            &access,
            &ReconnectStep::VerificationOption { key: "sms".into() },
        )
        .await
        .unwrap();
    env.canopy()
        .wait_for_status(&reconnect_pull, "IDENTITY_VERIFICATION", WAIT)
        .await
        .unwrap();
    env.provider
        .reconnect_step(
            &access,
            &ReconnectStep::VerificationCode {
                code: SecretString::from("424242"),
            },
        )
        .await
        .unwrap();
    env.canopy()
        .wait_for_status(&reconnect_pull, "SUCCESS", WAIT)
        .await
        .unwrap();
    assert_eq!(
        env.canopy().monitoring(&monitoring).unwrap().latest_pull_id,
        reconnect_pull
    );
}

// ---- errors and retries --------------------------------------------------------------------

#[tokio::test]
async fn canopy_error_codes_become_rejections() {
    let env = env().await;
    let link = LinkId::new();
    let unknown = "00000000-0000-4000-8000-000000000000";
    let err = env
        .provider
        .complete_link(&Completion {
            code: None,
            data: DataRef::Version(unknown.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(
        rejection(&err),
        (RejectionKind::NotFound, Some("NOT_FOUND"), Some(400))
    );
    let err = env
        .provider
        .complete_link(&Completion {
            code: None,
            data: DataRef::Version("not-a-uuid".into()),
        })
        .await
        .unwrap_err();
    assert_eq!(
        rejection(&err),
        (
            RejectionKind::InvalidArgument,
            Some("VALIDATION_ERROR"),
            Some(400)
        )
    );
    let err = env
        .provider
        .complete_link(&Completion {
            code: None,
            data: DataRef::All,
        })
        .await
        .unwrap_err();
    assert_eq!(rejection(&err).0, RejectionKind::InvalidArgument);

    let mut bad_key = config_for(&env.sandbox);
    bad_key.client_secret = SecretString::from("not-the-secret");
    let stranger = CanopyProvider::new(bad_key).unwrap();
    let err = stranger
        .fetch(
            &access(
                link,
                BTreeMap::from([(EXTERNAL_PULL.to_owned(), unknown.to_owned())]),
            ),
            &DataRef::All,
        )
        .await
        .unwrap_err();
    assert_eq!(
        rejection(&err),
        (
            RejectionKind::Unauthenticated,
            Some("UNAUTHORIZED"),
            Some(401)
        )
    );

    let mut with_token = access(link, BTreeMap::new());
    with_token
        .secrets
        .insert(RECONNECT_SECRET.into(), SecretString::from("no-such-token"));
    let err = env
        .provider
        .reconnect_step(
            &with_token,
            &ReconnectStep::Credentials {
                carrier: None,
                username: SecretString::from("user_good"),
                password: None,
                third_field: None,
            },
        )
        .await
        .unwrap_err();
    // The token is unknown and there is no monitoring to mint another from.
    assert_eq!(rejection(&err).0, RejectionKind::FailedPrecondition);

    let err = env
        .provider
        .fetch(&access(link, BTreeMap::new()), &DataRef::All)
        .await
        .unwrap_err();
    assert_eq!(rejection(&err).0, RejectionKind::FailedPrecondition);
    let err = env
        .provider
        .start_reconnect(&access(link, BTreeMap::new()), &session_request(link))
        .await
        .unwrap_err();
    assert_eq!(rejection(&err).0, RejectionKind::FailedPrecondition);

    // A malformed answer to a read is reported as such.
    let pull_id = env.link_pull(link, "user_good").await;
    let access = access(link, BTreeMap::from([(EXTERNAL_PULL.to_owned(), pull_id)]));
    env.sandbox.faults().inject_times(
        FaultTarget::endpoint("canopy.pulls.get"),
        FaultEffect::Malformed,
        1,
    );
    let err = env
        .provider
        .fetch(&access, &DataRef::All)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn reads_are_retried_through_429_then_500() {
    let env = env().await;
    let link = LinkId::new();
    let pull_id = env.link_pull(link, "user_good").await;
    let access = access(link, BTreeMap::from([(EXTERNAL_PULL.to_owned(), pull_id)]));
    let faults = env.sandbox.faults().clone();
    let throttled = faults.inject_times(
        FaultTarget::endpoint("canopy.pulls.get"),
        FaultEffect::Status {
            status: 429,
            retry_after_secs: Some(1),
            body: None,
        },
        1,
    );
    // A rule fires on every request it matches, so the 500 is armed only once the 429 has
    // been answered; the one-second Retry-After leaves ample time for that.
    let arm = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + WAIT;
        while faults.list().iter().any(|r| r.id == throttled) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the 429 was never answered"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        faults.inject_times(
            FaultTarget::endpoint("canopy.pulls.get"),
            FaultEffect::status(500),
            1,
        )
    });
    let started = std::time::Instant::now();
    let data = env.provider.fetch(&access, &DataRef::All).await.unwrap();
    let server_error = arm.await.unwrap();
    assert_eq!(data.policies.len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(env.remaining(server_error), 0, "the 500 was answered too");

    // Past the attempt limit the error stands, and says it is worth trying later.
    let fault = env.sandbox.faults().inject_times(
        FaultTarget::endpoint("canopy.pulls.get"),
        FaultEffect::status(503),
        10,
    );
    let err = env
        .provider
        .fetch(&access, &DataRef::All)
        .await
        .unwrap_err();
    let ProviderError::Unavailable { vendor, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(vendor.http_status, Some(503));
    assert_eq!(env.remaining(fault), 10 - 4, "four attempts in all");
    env.sandbox.faults().remove(fault);

    // A Retry-After longer than we wait is not waited for.
    let fault = env.sandbox.faults().inject_times(
        FaultTarget::endpoint("canopy.pulls.get"),
        FaultEffect::rate_limited(120),
        3,
    );
    let started = std::time::Instant::now();
    let err = env
        .provider
        .fetch(&access, &DataRef::All)
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(env.remaining(fault), 2);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Canopy documents no retryable status (canopy.md §6: no rate limit, no 429, no `Retry-After`
/// in its OpenAPI), so the rule every vendor shares applies: 408 and 425 may be repeated
/// (RFC 9110 §15.5.9, RFC 8470 §5.2), as 429 and 5xx are.
#[tokio::test]
async fn reads_are_retried_on_408_and_425_too() {
    let env = env().await;
    let link = LinkId::new();
    let pull_id = env.link_pull(link, "user_good").await;
    let access = access(link, BTreeMap::from([(EXTERNAL_PULL.to_owned(), pull_id)]));
    for status in [408, 425] {
        let fault = env.sandbox.faults().inject_times(
            FaultTarget::endpoint("canopy.pulls.get"),
            FaultEffect::status(status),
            1,
        );
        let data = env.provider.fetch(&access, &DataRef::All).await.unwrap();
        assert_eq!(data.policies.len(), 2, "{status}");
        assert_eq!(
            env.remaining(fault),
            0,
            "{status} was answered, then retried past"
        );
    }
}

#[tokio::test]
async fn writes_are_not_retried() {
    let env = env().await;
    let (_, access) = env.linked("user_good").await;
    let monitoring = access.external_ids[EXTERNAL_MONITORING].clone();
    let pulls_before = env.canopy().monitoring_pull_ids(&monitoring).len();
    let fault = env.sandbox.faults().inject_times(
        FaultTarget::endpoint("canopy.monitorings.refresh"),
        FaultEffect::status(500),
        2,
    );
    let err = env.provider.refresh(&access).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(env.remaining(fault), 1, "a refresh is billed: sent once");
    assert_eq!(
        env.canopy().monitoring_pull_ids(&monitoring).len(),
        pulls_before
    );

    // Idempotent writes (stopping a monitoring) are retried.
    let fault = env.sandbox.faults().inject_times(
        FaultTarget::endpoint("canopy.monitorings.delete"),
        FaultEffect::status(502),
        2,
    );
    env.provider.descope(&access).await.unwrap();
    assert_eq!(env.remaining(fault), 0);
    assert_eq!(
        env.canopy().monitoring(&monitoring).unwrap().status,
        "STOPPED"
    );
}

#[tokio::test]
async fn timeouts_are_transient() {
    let env = env().await;
    let link = LinkId::new();
    let pull_id = env.link_pull(link, "user_good").await;
    let mut config = config_for(&env.sandbox);
    config.request_timeout = Duration::from_millis(200);
    config.max_attempts = 2;
    let impatient = CanopyProvider::new(config).unwrap();
    let access = access(link, BTreeMap::from([(EXTERNAL_PULL.to_owned(), pull_id)]));
    let fault = env.sandbox.faults().inject_times(
        FaultTarget::endpoint("canopy.pulls.get"),
        FaultEffect::latency(Duration::from_secs(2)),
        1,
    );
    // The first attempt times out, the second succeeds.
    let data = impatient.fetch(&access, &DataRef::All).await.unwrap();
    assert_eq!(data.policies.len(), 2);
    assert_eq!(env.remaining(fault), 0);
}
