//! The provider against the Axle simulator of `coverwatch-sandbox`: linking, webhooks as Axle
//! sends them, fetching and normalizing each test login, monitoring scenarios, reconnect,
//! descope, Axle's errors, and the client's retry rules.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Months, NaiveTime, Utc};
use coverwatch_axle::AxleEventDetail;
use coverwatch_axle::{AxleConfig, AxleProvider};
use coverwatch_core::backoff::Backoff;
use coverwatch_core::event::{AuthStatus, FailureReason, ReconnectReason};
use coverwatch_core::ids::{LinkId, TenantId, UserId};
use coverwatch_core::policy::{
    Account, Address, AppliesTo, Carrier, ConnectionStatus, Coverage, CoverageCode, DocumentInfo,
    Dwelling, Insured, InsuredRole, InterestedParty, Limit, PartyKind, Policy, PolicyStatus,
    PolicyTerm, PolicyType, Vehicle,
};
use coverwatch_core::provider::{
    Completion, LinkAccess, LinkGrant, LinkSessionRequest, Provider, ProviderError, RejectionKind,
};
use coverwatch_core::webhook::{
    Attribution, DataRef, Happening, InboundWebhook, ParsedWebhook, WebhookRejection,
};
use coverwatch_sandbox::axle::AxleSimConfig;
use coverwatch_sandbox::{
    DeliveryAttempt, FaultEffect, FaultTarget, RetrySchedule, Sandbox, SandboxConfig, SandboxHandle,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);
const SHARED_HEADER: (&str, &str) = ("x-coverwatch-auth", "shared-header-secret");

struct Harness {
    sandbox: SandboxHandle,
    provider: AxleProvider,
}

struct Linked {
    request: LinkSessionRequest,
    grant: LinkGrant,
    access: LinkAccess,
    /// Sandbox time at sign-in: fixture dates are relative to it.
    linked_at: DateTime<Utc>,
}

fn config_for(sandbox: &SandboxHandle) -> AxleConfig {
    let mut config = AxleConfig::new(
        sandbox.axle_base_url(),
        "cli_sandbox",
        "axle-sandbox-secret",
    );
    config.backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(20));
    config.request_timeout = Duration::from_secs(5);
    config.max_retry_after = Duration::from_secs(2);
    config.webhook_header = Some((SHARED_HEADER.0.into(), SHARED_HEADER.1.to_owned().into()));
    config
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut AxleConfig)) -> Self {
        let sandbox = Sandbox::start(SandboxConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            axle: AxleSimConfig {
                // Deliveries go nowhere real; the log keeps what Axle sent.
                retry: RetrySchedule::none(),
                webhook_headers: vec![(SHARED_HEADER.0.into(), SHARED_HEADER.1.into())],
                ..AxleSimConfig::default()
            },
            ..SandboxConfig::default()
        })
        .await
        .expect("sandbox starts");
        let mut config = config_for(&sandbox);
        tweak(&mut config);
        let provider = AxleProvider::new(config).expect("valid config");
        Self { sandbox, provider }
    }

    fn request(&self, user: &str) -> LinkSessionRequest {
        let link_id = LinkId::new();
        let token = format!("whk{}", LinkId::new().as_uuid().simple());
        LinkSessionRequest {
            link_id,
            tenant_id: "acme".parse::<TenantId>().unwrap(),
            user_id: user.parse::<UserId>().unwrap(),
            metadata: BTreeMap::from([("loan".to_owned(), "L-1".to_owned())]),
            redirect_uri: Some("https://app.example/axle-done".into()),
            webhook_url: SecretString::from(format!(
                "{}/nowhere/webhooks/axle/{token}",
                self.sandbox.base_url()
            )),
            session_proof: SecretString::from("unused: Axle webhooks name their link by URL"),
        }
    }

    /// Starts Ignition through the provider; returns the ignition token from the URL.
    async fn open(&self, request: &LinkSessionRequest) -> String {
        let session = self.provider.start_link_session(request).await.unwrap();
        assert_eq!(session.expires_at, None);
        ignition_token(&session.url)
    }

    fn last_seq(&self) -> u64 {
        self.sandbox
            .deliveries()
            .entries()
            .last()
            .map_or(0, |a| a.seq)
    }

    /// The next delivery of `event_type` to this link's webhook URL after `after_seq`.
    async fn webhook(
        &self,
        request: &LinkSessionRequest,
        event_type: &str,
        after_seq: u64,
    ) -> (DeliveryAttempt, InboundWebhook) {
        let url = request.webhook_url.expose_secret().to_owned();
        let attempt = self
            .sandbox
            .deliveries()
            .wait_for(WAIT, |a| {
                a.seq > after_seq && a.url == url && a.event_type == event_type
            })
            .await
            .unwrap_or_else(|e| panic!("{event_type}: {e}"));
        let inbound = inbound(&attempt);
        (attempt, inbound)
    }

    /// Authenticates and parses a delivery the way the engine will.
    fn receive(&self, inbound: &InboundWebhook) -> ParsedWebhook {
        let auth = self
            .provider
            .authenticate_webhook(inbound)
            .expect("genuine delivery");
        assert_eq!(auth.link_token.as_deref(), Some(inbound.path.as_str()));
        assert!(auth.vendor_event_id.as_deref().unwrap().starts_with("evt_"));
        self.provider.parse_webhook(inbound).expect("parses")
    }

    /// A whole link: Ignition, sign-in, `ignition.completed`, code exchange.
    async fn link(&self, username: &str, password: &str) -> Linked {
        let request = self.request("user-1");
        let seq = self.last_seq();
        let ignition = self.open(&request).await;
        let linked_at = self.sandbox.clock().now();
        self.sandbox
            .axle()
            .sign_in(&ignition, "state-farm", username, password)
            .unwrap();
        let (_, completed) = self.webhook(&request, "ignition.completed", seq).await;
        let parsed = self.receive(&completed);
        assert_eq!(parsed.attribution[0], Attribution::Link(request.link_id));
        let Happening::SessionCompleted { code, data } = &parsed.happenings[0] else {
            panic!("{:?}", parsed.happenings)
        };
        let completion = Completion {
            code: code.clone(),
            data: data.clone(),
        };
        let grant = self.provider.complete_link(&completion).await.unwrap();
        let access = LinkAccess {
            link_id: request.link_id,
            secret: grant.secret.clone(),
            secrets: BTreeMap::new(),
            external_ids: grant.external_ids.clone(),
        };
        Linked {
            request,
            grant,
            access,
            linked_at,
        }
    }
}

fn ignition_token(session_url: &str) -> String {
    url::Url::parse(session_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .expect("ignitionUri carries the token")
}

fn inbound(attempt: &DeliveryAttempt) -> InboundWebhook {
    let path = attempt
        .url
        .split_once("/webhooks/axle/")
        .map(|(_, rest)| rest.to_owned())
        .unwrap_or_default();
    InboundWebhook {
        path,
        headers: attempt
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
        body: attempt.body.clone().into_bytes(),
        received_at: Utc::now(),
    }
}

fn account_id(linked: &Linked) -> String {
    linked.grant.external_ids["account"].clone()
}

/// Day `T` of the fixtures: the link day at 04:00 UTC.
fn fixture_day(linked_at: DateTime<Utc>) -> DateTime<Utc> {
    linked_at
        .date_naive()
        .and_time(NaiveTime::from_hms_opt(4, 0, 0).unwrap())
        .and_utc()
}

fn term(linked_at: DateTime<Utc>, days_ago: i64, months: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    let eff = fixture_day(linked_at) - chrono::Duration::days(days_ago);
    (eff, eff + Months::new(months))
}

fn dollars(d: i64) -> Option<i64> {
    Some(d * 100)
}

fn coverage(
    code: CoverageCode,
    vendor: &str,
    label: &str,
    per_person: Option<i64>,
    per_accident: Option<i64>,
    deductible: Option<i64>,
    applies_to: AppliesTo,
) -> Coverage {
    Coverage {
        label: Some(label.into()),
        limit_per_person: per_person.map(Limit::Cents),
        limit_per_accident: per_accident.map(Limit::Cents),
        deductible_cents: deductible,
        applies_to,
        ..Coverage::new(code, vendor)
    }
}

fn address(line1: &str, line2: Option<&str>, city: &str, state: &str, zip: &str) -> Address {
    Address {
        line1: Some(line1.into()),
        line2: line2.map(Into::into),
        city: Some(city.into()),
        state: Some(state.into()),
        postal_code: Some(zip.into()),
        country: Some("USA".into()),
    }
}

fn insured(first: &str, last: &str, role: InsuredRole, license: Option<&str>) -> Insured {
    Insured {
        first_name: Some(first.into()),
        last_name: Some(last.into()),
        full_name: None,
        role,
        license_masked: license.map(Into::into),
        license_state: license.map(|_| "GA".into()),
        applies_to: AppliesTo::AllProperties,
    }
}

fn declaration(created_at: DateTime<Utc>) -> Vec<DocumentInfo> {
    vec![DocumentInfo {
        id: None,
        name: Some("Declaration Page".into()),
        kinds: vec!["declaration_page".into()],
        source: Some("carrier".into()),
        created_at: Some(created_at),
    }]
}

fn property_ids(raw: &Value) -> Vec<String> {
    raw["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

fn vehicle(id: &str, year: i32, make: &str, model: &str, vin: &str, body: &str) -> Vehicle {
    Vehicle {
        id: id.into(),
        vin: Some(vin.into()),
        year: Some(year),
        make: Some(make.into()),
        model: Some(model.into()),
        body_style: Some(body.into()),
        garaging_address: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Linking and the normalized data of each test login

#[tokio::test]
async fn simple_auto_links_and_normalizes_field_by_field() {
    let h = Harness::start().await;
    let request = h.request("user-1");
    let seq = h.last_seq();
    let ignition = h.open(&request).await;

    // The Ignition carries our user, metadata and link id, and the webhook URL.
    let info = h.sandbox.axle().ignition(&ignition).unwrap();
    assert_eq!(info.user, json!({"id": "user-1"}));
    assert_eq!(
        info.metadata,
        json!({"loan": "L-1", "coverwatchLinkId": request.link_id.to_string()})
    );
    assert_eq!(
        info.redirect_uri.as_deref(),
        Some("https://app.example/axle-done")
    );
    assert_eq!(
        info.webhook_uri.as_deref(),
        Some(request.webhook_url.expose_secret())
    );

    let (created, inbound_created) = h.webhook(&request, "ignition.created", seq).await;
    assert_eq!(created.header(SHARED_HEADER.0), Some(SHARED_HEADER.1));
    let parsed = h.receive(&inbound_created);
    // Nothing the caller does not know from link.session_opened.
    assert!(parsed.happenings.is_empty());
    assert_eq!(parsed.attribution, vec![Attribution::Link(request.link_id)]);
    let detail = AxleEventDetail::try_from(&parsed.detail).unwrap();
    assert_eq!(detail.event_type, "ignition.created");
    assert_eq!(detail.reference.as_ref(), Some(&ignition));
    assert!(parsed.occurred_at.is_some());

    let linked_at = h.sandbox.clock().now();
    h.sandbox
        .axle()
        .sign_in(&ignition, "state-farm", "username", "password")
        .unwrap();
    let (_, opened) = h.webhook(&request, "ignition.opened", seq).await;
    assert!(matches!(
        h.receive(&opened).happenings[0],
        Happening::AuthProgress {
            status: AuthStatus::Opened,
            ..
        }
    ));
    let (_, completed) = h.webhook(&request, "ignition.completed", seq).await;
    let parsed = h.receive(&completed);
    let Happening::SessionCompleted {
        code: Some(code),
        data: DataRef::All,
    } = &parsed.happenings[0]
    else {
        panic!("{:?}", parsed.happenings)
    };
    let grant = h
        .provider
        .complete_link(&Completion {
            code: Some(code.clone()),
            data: DataRef::All,
        })
        .await
        .unwrap();

    let account = h.sandbox.axle().account_ids().pop().unwrap();
    assert_eq!(
        grant.external_ids,
        BTreeMap::from([("account".to_owned(), account.clone())])
    );
    assert_eq!(grant.account_key.as_deref(), Some(account.as_str()));
    assert_eq!(
        grant.secret.as_ref().unwrap().expose_secret(),
        h.sandbox.axle().access_token(&account).unwrap()
    );
    assert!(!format!("{grant:?}").contains(grant.secret.as_ref().unwrap().expose_secret()));

    let access = LinkAccess {
        link_id: request.link_id,
        secret: grant.secret.clone(),
        secrets: BTreeMap::new(),
        external_ids: grant.external_ids.clone(),
    };
    let fetched = h.provider.fetch(&access, &DataRef::All).await.unwrap();
    let acc = fetched.account.unwrap();
    assert_eq!(acc.raw, h.sandbox.axle().account(&account).unwrap());
    let policy_ids = acc.account.policy_ids.clone();
    assert_eq!(policy_ids.len(), 2);
    assert_eq!(
        acc.account,
        Account {
            external_id: account.clone(),
            carrier: Carrier {
                id: "state-farm".into(),
                name: None
            },
            first_name: Some("John".into()),
            last_name: Some("Smith".into()),
            email: Some("john.smith@example.com".into()),
            phone: Some("+14045550101".into()),
            connection: ConnectionStatus::Active,
            policy_ids: policy_ids.clone(),
            refreshed_at: acc.account.refreshed_at,
        }
    );
    assert!(acc.account.refreshed_at.is_some());
    assert_eq!(fetched.policies.len(), 2);
    assert!(fetched.external_ids.is_empty());

    // Policy 1: split limits, per-vehicle physical damage, a lienholder on V1.
    let main = &fetched.policies[0];
    assert_eq!(main.term, PolicyTerm::Current);
    assert_eq!(main.raw["id"], json!(policy_ids[0]));
    let v = property_ids(&main.raw);
    let (eff, exp) = term(linked_at, 60, 6);
    let atlanta = address(
        "123 Fake St.",
        Some("Unit 456"),
        "Atlanta",
        "Georgia",
        "30315",
    );
    let expected = Policy {
        external_id: policy_ids[0].clone(),
        policy_type: PolicyType::Auto,
        carrier: Carrier {
            id: "state-farm".into(),
            name: None,
        },
        policy_number: Some("AUTO-100-2001".into()),
        status: PolicyStatus::Active,
        effective_date: Some(eff),
        expiration_date: Some(exp),
        cancelled_date: None,
        premium_cents: Some(134_250),
        address: Some(atlanta.clone()),
        vehicles: vec![
            vehicle(&v[0], 2017, "HONDA", "CR-V", "SMTD44GN3HT812287", "SUV"),
            vehicle(&v[1], 2020, "TOYOTA", "CAMRY", "4T1B11HK5LU000002", "Sedan"),
        ],
        dwellings: vec![],
        coverages: vec![
            coverage(
                CoverageCode::BodilyInjury,
                "BI",
                "Bodily Injury",
                dollars(250_000),
                dollars(500_000),
                None,
                AppliesTo::AllProperties,
            ),
            coverage(
                CoverageCode::PropertyDamage,
                "PD",
                "Property Damage",
                None,
                dollars(100_000),
                None,
                AppliesTo::AllProperties,
            ),
            coverage(
                CoverageCode::UninsuredMotoristBodilyInjury,
                "UMBI",
                "Uninsured Motorists Bodily Injury",
                dollars(100_000),
                dollars(300_000),
                None,
                AppliesTo::AllProperties,
            ),
            coverage(
                CoverageCode::UninsuredMotoristPropertyDamage,
                "UMPD",
                "Uninsured Motorists Property Damage",
                None,
                dollars(25_000),
                dollars(250),
                AppliesTo::AllProperties,
            ),
            // Axle's documented underinsured codes read as Canopy's underinsured types do.
            coverage(
                CoverageCode::UnderinsuredMotoristBodilyInjury,
                "UIMBI",
                "Underinsured Motorists Bodily Injury",
                dollars(100_000),
                dollars(300_000),
                None,
                AppliesTo::AllProperties,
            ),
            coverage(
                CoverageCode::UnderinsuredMotoristPropertyDamage,
                "UIMPD",
                "Underinsured Motorists Property Damage",
                None,
                dollars(25_000),
                dollars(250),
                AppliesTo::AllProperties,
            ),
            coverage(
                CoverageCode::Comprehensive,
                "COMP",
                "Comprehensive",
                None,
                None,
                dollars(500),
                AppliesTo::Property(v[0].clone()),
            ),
            coverage(
                CoverageCode::Collision,
                "COLL",
                "Collision",
                None,
                None,
                dollars(500),
                AppliesTo::Property(v[0].clone()),
            ),
            coverage(
                CoverageCode::Comprehensive,
                "COMP",
                "Comprehensive",
                None,
                None,
                dollars(1_000),
                AppliesTo::Property(v[1].clone()),
            ),
            coverage(
                CoverageCode::Collision,
                "COLL",
                "Collision",
                None,
                None,
                dollars(1_000),
                AppliesTo::Property(v[1].clone()),
            ),
        ],
        insureds: vec![
            insured("John", "Smith", InsuredRole::Primary, Some("•••••1234")),
            insured("Jane", "Smith", InsuredRole::Secondary, Some("•••••5678")),
        ],
        interested_parties: vec![InterestedParty {
            kind: PartyKind::Lienholder,
            name: Some("Capital One Auto Finance".into()),
            address: Some(Address {
                line1: Some("Po Box 105205".into()),
                line2: None,
                city: Some("Atlanta".into()),
                state: Some("GA".into()),
                postal_code: Some("30348-5205".into()),
                country: Some("USA".into()),
            }),
            loan_number: None,
            applies_to: AppliesTo::Property(v[0].clone()),
        }],
        documents: declaration(eff),
    };
    assert_eq!(main.policy, expected);
    // The raw JSON is kept, signed URL included, but the normalized model never holds it.
    assert!(
        main.raw["documents"][0]["url"]
            .as_str()
            .unwrap()
            .contains("signature=")
    );
    assert!(
        !serde_json::to_string(&main.policy)
            .unwrap()
            .contains("signature=")
    );

    // Policy 2: a combined single limit.
    let csl = &fetched.policies[1];
    let v3 = property_ids(&csl.raw);
    let (eff, exp) = term(linked_at, 20, 6);
    let expected = Policy {
        external_id: policy_ids[1].clone(),
        policy_type: PolicyType::Auto,
        carrier: Carrier {
            id: "state-farm".into(),
            name: None,
        },
        policy_number: Some("AUTO-100-2002".into()),
        status: PolicyStatus::Active,
        effective_date: Some(eff),
        expiration_date: Some(exp),
        cancelled_date: None,
        premium_cents: Some(61_000),
        address: Some(atlanta),
        vehicles: vec![vehicle(
            &v3[0],
            2015,
            "FORD",
            "F-150",
            "1FTEW1EF0FKD00003",
            "Pickup",
        )],
        dwellings: vec![],
        coverages: vec![
            coverage(
                CoverageCode::BodilyInjury,
                "BI",
                "Bodily Injury",
                None,
                dollars(300_000),
                None,
                AppliesTo::AllProperties,
            ),
            coverage(
                CoverageCode::PropertyDamage,
                "PD",
                "Property Damage",
                None,
                dollars(300_000),
                dollars(500),
                AppliesTo::AllProperties,
            ),
            // Not stated by Axle: inferred from equal BI and PD limits, and marked so.
            Coverage {
                inferred: true,
                ..coverage(
                    CoverageCode::CombinedSingleLimit,
                    "BI+PD",
                    "Combined Single Limit",
                    None,
                    dollars(300_000),
                    None,
                    AppliesTo::AllProperties,
                )
            },
            // UUIMBI: uninsured and underinsured motorists together, one coverage per part.
            coverage(
                CoverageCode::UninsuredMotoristBodilyInjury,
                "UUIMBI",
                "Uninsured/Underinsured Motorists Bodily Injury",
                None,
                dollars(300_000),
                None,
                AppliesTo::AllProperties,
            ),
            coverage(
                CoverageCode::UnderinsuredMotoristBodilyInjury,
                "UUIMBI",
                "Uninsured/Underinsured Motorists Bodily Injury",
                None,
                dollars(300_000),
                None,
                AppliesTo::AllProperties,
            ),
            coverage(
                CoverageCode::Comprehensive,
                "COMP",
                "Comprehensive",
                None,
                None,
                dollars(250),
                AppliesTo::Property(v3[0].clone()),
            ),
            coverage(
                CoverageCode::Collision,
                "COLL",
                "Collision",
                None,
                None,
                dollars(500),
                AppliesTo::Property(v3[0].clone()),
            ),
        ],
        insureds: vec![insured(
            "John",
            "Smith",
            InsuredRole::Primary,
            Some("•••••1234"),
        )],
        interested_parties: vec![],
        documents: declaration(eff),
    };
    assert_eq!(csl.policy, expected);
}

#[tokio::test]
async fn minimum_auto_is_inactive_with_state_minimum_limits() {
    let h = Harness::start().await;
    let linked = h
        .link("user-auto-state-minimum", "pass-auto-state-minimum")
        .await;
    let fetched = h
        .provider
        .fetch(&linked.access, &DataRef::All)
        .await
        .unwrap();
    let acc = fetched.account.unwrap().account;
    assert_eq!(
        (acc.first_name.as_deref(), acc.last_name.as_deref()),
        (Some("Alex"), Some("Minimum"))
    );
    assert_eq!(acc.email.as_deref(), Some("alex.minimum@example.com"));
    assert_eq!(acc.phone.as_deref(), Some("+14045550102"));
    assert_eq!(fetched.policies.len(), 1);
    let snap = &fetched.policies[0];
    let v = property_ids(&snap.raw);
    let (eff, exp) = term(linked.linked_at, 400, 6);
    assert_eq!(
        snap.policy,
        Policy {
            external_id: acc.policy_ids[0].clone(),
            policy_type: PolicyType::Auto,
            carrier: Carrier {
                id: "state-farm".into(),
                name: None
            },
            policy_number: Some("AUTO-200-3001".into()),
            status: PolicyStatus::Inactive,
            effective_date: Some(eff),
            expiration_date: Some(exp),
            cancelled_date: None,
            premium_cents: Some(48_000),
            address: Some(address("77 Low Rd.", None, "Macon", "Georgia", "31201")),
            vehicles: vec![vehicle(
                &v[0],
                2012,
                "NISSAN",
                "ALTIMA",
                "1N4AL2AP0CN000004",
                "Sedan"
            )],
            dwellings: vec![],
            coverages: vec![
                coverage(
                    CoverageCode::BodilyInjury,
                    "BI",
                    "Bodily Injury",
                    dollars(25_000),
                    dollars(50_000),
                    None,
                    AppliesTo::AllProperties
                ),
                coverage(
                    CoverageCode::PropertyDamage,
                    "PD",
                    "Property Damage",
                    None,
                    dollars(25_000),
                    None,
                    AppliesTo::AllProperties
                ),
            ],
            insureds: vec![insured(
                "Alex",
                "Minimum",
                InsuredRole::Primary,
                Some("•••••4321")
            )],
            interested_parties: vec![],
            documents: vec![],
        }
    );
}

#[tokio::test]
async fn home_maps_the_dwelling_and_keeps_undocumented_codes_and_the_interest_as_axle_wrote_them() {
    let h = Harness::start().await;
    let linked = h.link("user-home", "pass-home").await;
    let fetched = h
        .provider
        .fetch(&linked.access, &DataRef::All)
        .await
        .unwrap();
    let acc = fetched.account.unwrap().account;
    assert_eq!(
        (acc.first_name.as_deref(), acc.last_name.as_deref()),
        (Some("Harper"), Some("Holmes"))
    );
    let snap = &fetched.policies[0];
    let d = property_ids(&snap.raw);
    let (eff, exp) = term(linked.linked_at, 120, 12);
    let all = AppliesTo::AllProperties;
    assert_eq!(
        snap.policy,
        Policy {
            external_id: acc.policy_ids[0].clone(),
            policy_type: PolicyType::Homeowners,
            carrier: Carrier {
                id: "state-farm".into(),
                name: None
            },
            policy_number: Some("HOME-300-4001".into()),
            status: PolicyStatus::Active,
            effective_date: Some(eff),
            expiration_date: Some(exp),
            cancelled_date: None,
            premium_cents: Some(185_000),
            address: Some(address("500 Oak Ave.", None, "Decatur", "Georgia", "30030")),
            vehicles: vec![],
            dwellings: vec![Dwelling {
                id: d[0].clone(),
                address: Some(Address {
                    country: None,
                    ..address("500 Oak Ave.", None, "Decatur", "Georgia", "30030")
                }),
                replacement_cost_cents: None,
            }],
            coverages: vec![
                coverage(
                    CoverageCode::Other("DWELL".into()),
                    "DWELL",
                    "Dwelling",
                    None,
                    dollars(350_000),
                    dollars(1_000),
                    all.clone()
                ),
                coverage(
                    CoverageCode::Other("OS".into()),
                    "OS",
                    "Other Structures",
                    None,
                    dollars(35_000),
                    None,
                    all.clone()
                ),
                coverage(
                    CoverageCode::Other("PP".into()),
                    "PP",
                    "Personal Property",
                    None,
                    dollars(175_000),
                    None,
                    all.clone()
                ),
                coverage(
                    CoverageCode::Other("LOU".into()),
                    "LOU",
                    "Loss of Use",
                    None,
                    dollars(70_000),
                    None,
                    all.clone()
                ),
                coverage(
                    CoverageCode::Other("PL".into()),
                    "PL",
                    "Personal Liability",
                    None,
                    dollars(300_000),
                    None,
                    all.clone()
                ),
                coverage(
                    CoverageCode::Other("MED".into()),
                    "MED",
                    "Medical Payments",
                    dollars(5_000),
                    None,
                    None,
                    all.clone()
                ),
            ],
            insureds: vec![insured("Harper", "Holmes", InsuredRole::Primary, None)],
            // Axle types the lender `interest`, its default for an unclassified party.
            interested_parties: vec![InterestedParty {
                kind: PartyKind::Unclassified,
                name: Some("Sandbox Home Lending".into()),
                address: Some(Address {
                    line1: Some("900 Mortgage Blvd".into()),
                    line2: None,
                    city: Some("Dallas".into()),
                    state: Some("TX".into()),
                    postal_code: Some("75201".into()),
                    country: Some("USA".into()),
                }),
                loan_number: None,
                applies_to: all,
            }],
            documents: declaration(eff),
        }
    );
}

#[tokio::test]
async fn failed_attempts_errors_and_exits_are_normalized() {
    let h = Harness::start().await;

    // A wrong password, then the error login.
    let request = h.request("user-2");
    let seq = h.last_seq();
    let ignition = h.open(&request).await;
    h.sandbox
        .axle()
        .sign_in(&ignition, "geico", "username", "wrong")
        .unwrap();
    let (_, attempted) = h.webhook(&request, "ignition.attempted", seq).await;
    let parsed = h.receive(&attempted);
    assert!(matches!(
        parsed.happenings[0],
        Happening::AuthProgress {
            status: AuthStatus::NotAuthenticated,
            ..
        }
    ));
    assert_eq!(parsed.attribution, vec![Attribution::Link(request.link_id)]);
    h.sandbox
        .axle()
        .sign_in(&ignition, "geico", "user-error", "pass-error")
        .unwrap();
    let (_, errored) = h.webhook(&request, "ignition.errored", seq).await;
    match &h.receive(&errored).happenings[0] {
        Happening::SessionFailed { reason, message } => {
            assert_eq!(*reason, FailureReason::ProviderError);
            assert_eq!(
                message.as_deref(),
                Some(coverwatch_sandbox::axle::fixtures::ERROR_MESSAGE)
            );
        }
        other => panic!("{other:?}"),
    }

    // Leaving at the carrier step.
    let request = h.request("user-3");
    let seq = h.last_seq();
    let ignition = h.open(&request).await;
    h.sandbox
        .axle()
        .exit_ignition(&ignition, "carrier-select")
        .unwrap();
    let (_, exited) = h.webhook(&request, "ignition.exited", seq).await;
    assert!(matches!(
        &h.receive(&exited).happenings[0],
        Happening::SessionExited { step: Some(step) } if step == "carrier-select"
    ));
}

#[tokio::test]
async fn an_auth_code_is_single_use_and_expires_after_ten_minutes() {
    let h = Harness::start().await;
    let request = h.request("user-1");
    let ignition = h.open(&request).await;
    let signed = h
        .sandbox
        .axle()
        .sign_in(&ignition, "state-farm", "username", "password")
        .unwrap();
    let coverwatch_sandbox::axle::SignIn::Complete { auth_code, .. } = signed else {
        panic!("{signed:?}")
    };
    let completion = Completion {
        code: Some(SecretString::from(auth_code)),
        data: DataRef::All,
    };
    h.provider.complete_link(&completion).await.unwrap();
    let reused = h.provider.complete_link(&completion).await.unwrap_err();
    let ProviderError::Rejected {
        kind,
        message,
        vendor,
        ..
    } = &reused
    else {
        panic!("{reused:?}")
    };
    assert_eq!(*kind, RejectionKind::FailedPrecondition);
    assert!(
        message.contains("expired") && message.contains("already used"),
        "{message}"
    );
    assert!(
        message.contains("authCode has already been used"),
        "{message}"
    );
    assert_eq!(vendor.http_status, Some(400));
    assert!(vendor.request_id.as_deref().unwrap().starts_with("req_"));

    // A fresh code, left for eleven minutes.
    let request = h.request("user-1");
    let ignition = h.open(&request).await;
    let signed = h
        .sandbox
        .axle()
        .sign_in(&ignition, "state-farm", "user-home", "pass-home")
        .unwrap();
    let coverwatch_sandbox::axle::SignIn::Complete { auth_code, .. } = signed else {
        panic!("{signed:?}")
    };
    h.sandbox.clock().advance(chrono::Duration::minutes(11));
    let expired = h
        .provider
        .complete_link(&Completion {
            code: Some(SecretString::from(auth_code)),
            data: DataRef::All,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&expired, ProviderError::Rejected { kind: RejectionKind::FailedPrecondition, message, .. }
            if message.contains("authCode has expired")),
        "{expired:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Monitoring

#[tokio::test]
async fn monitoring_events_lead_to_the_right_fetches() {
    let h = Harness::start().await;
    let linked = h.link("username", "password").await;
    let account = account_id(&linked);
    let link = Attribution::Link(linked.request.link_id);
    let by_account = Attribution::External {
        kind: "account".into(),
        value: account.clone(),
    };
    let policy = h.sandbox.axle().account(&account).unwrap()["policies"][0]
        .as_str()
        .unwrap()
        .to_owned();

    // account.modified → re-fetch the account.
    let seq = h.last_seq();
    h.sandbox
        .axle()
        .modify_account(&account, &json!({"email": "jane@example.com"}))
        .unwrap();
    let (_, modified) = h.webhook(&linked.request, "account.modified", seq).await;
    let parsed = h.receive(&modified);
    assert_eq!(parsed.attribution, vec![link.clone(), by_account.clone()]);
    let Happening::DataChanged { data, hinted } = &parsed.happenings[0] else {
        panic!("{:?}", parsed.happenings)
    };
    assert_eq!(*data, DataRef::Account(account.clone()));
    assert_eq!(hinted.len(), 1);
    assert_eq!(hinted[0].field, "email");
    assert_eq!(hinted[0].before.as_deref(), Some("john.smith@example.com"));
    assert_eq!(hinted[0].after.as_deref(), Some("jane@example.com"));
    let fetched = h.provider.fetch(&linked.access, data).await.unwrap();
    assert!(fetched.policies.is_empty());
    assert_eq!(
        fetched.account.unwrap().account.email.as_deref(),
        Some("jane@example.com")
    );

    // account.retrying changes nothing.
    let seq = h.last_seq();
    h.sandbox.axle().account_retrying(&account).unwrap();
    let (_, retrying) = h.webhook(&linked.request, "account.retrying", seq).await;
    assert!(matches!(
        h.receive(&retrying).happenings[0],
        Happening::Retrying
    ));

    // policy.modified (a cancellation) → re-fetch that policy.
    let seq = h.last_seq();
    h.sandbox.axle().cancel_policy(&policy).unwrap();
    let (_, cancelled) = h.webhook(&linked.request, "policy.modified", seq).await;
    let parsed = h.receive(&cancelled);
    assert_eq!(parsed.attribution, vec![link.clone(), by_account.clone()]);
    let Happening::DataChanged { data, hinted } = &parsed.happenings[0] else {
        panic!("{:?}", parsed.happenings)
    };
    assert_eq!(*data, DataRef::Policy(policy.clone()));
    assert_eq!(hinted[0].field, "isActive");
    assert_eq!(
        (hinted[0].before.as_deref(), hinted[0].after.as_deref()),
        (Some("true"), Some("false"))
    );
    let fetched = h.provider.fetch(&linked.access, data).await.unwrap();
    assert!(fetched.account.is_none());
    assert_eq!(fetched.policies[0].policy.status, PolicyStatus::Inactive);

    // isActive null: the policy may have left the account.
    h.sandbox
        .axle()
        .modify_policy(&policy, &json!({"isActive": null}))
        .unwrap();
    let fetched = h
        .provider
        .fetch(&linked.access, &DataRef::Policy(policy.clone()))
        .await
        .unwrap();
    assert_eq!(fetched.policies[0].policy.status, PolicyStatus::Removed);

    // No renewal yet: 404 → NotFound.
    let none = h
        .provider
        .fetch(&linked.access, &DataRef::Renewal(policy.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(&none, ProviderError::Rejected { kind: RejectionKind::NotFound, vendor, .. }
            if vendor.http_status == Some(404)),
        "{none:?}"
    );

    // policy.renewal-available → read the renewal term.
    let seq = h.last_seq();
    h.sandbox
        .axle()
        .make_renewal_available(&policy, None)
        .unwrap();
    let (_, renewal) = h
        .webhook(&linked.request, "policy.renewal-available", seq)
        .await;
    let parsed = h.receive(&renewal);
    let Happening::RenewalAvailable { policy_ref } = &parsed.happenings[0] else {
        panic!("{:?}", parsed.happenings)
    };
    assert_eq!(policy_ref, &policy);
    let current = h
        .provider
        .fetch(&linked.access, &DataRef::Policy(policy.clone()))
        .await
        .unwrap();
    let fetched = h
        .provider
        .fetch(&linked.access, &DataRef::Renewal(policy_ref.clone()))
        .await
        .unwrap();
    let renewal = &fetched.policies[0];
    assert_eq!(renewal.term, PolicyTerm::Renewal);
    assert_eq!(renewal.policy.external_id, policy);
    assert_eq!(renewal.policy.status, PolicyStatus::Active);
    assert_eq!(
        renewal.policy.effective_date,
        current.policies[0].policy.expiration_date
    );
    assert_eq!(renewal.policy.premium_cents, Some(139_620)); // 1342.50 × 1.04

    // account.disconnected → reconnect required, and the account reads as disconnected.
    let seq = h.last_seq();
    h.sandbox
        .axle()
        .disconnect_account(&account, "mfa-expired")
        .unwrap();
    let (_, disconnected) = h
        .webhook(&linked.request, "account.disconnected", seq)
        .await;
    let parsed = h.receive(&disconnected);
    assert_eq!(parsed.attribution, vec![link, by_account]);
    assert!(matches!(
        parsed.happenings[0],
        Happening::ReconnectRequired {
            reason: ReconnectReason::MfaExpired,
            reconnect_url: None,
            ..
        }
    ));
    let fetched = h
        .provider
        .fetch(&linked.access, &DataRef::All)
        .await
        .unwrap();
    assert_eq!(
        fetched.account.unwrap().account.connection,
        ConnectionStatus::Disconnected
    );
}

#[tokio::test]
async fn reconnect_relinks_the_same_account_with_the_same_token() {
    let h = Harness::start().await;
    let linked = h.link("username", "password").await;
    let account = account_id(&linked);
    h.sandbox
        .axle()
        .disconnect_account(&account, "credentials-expired")
        .unwrap();

    // The engine passes the same request shape (same link id, same webhook URL).
    let seq = h.last_seq();
    let session = h
        .provider
        .start_reconnect(&linked.access, &linked.request)
        .await
        .unwrap();
    let ignition = ignition_token(&session.url);
    let info = h.sandbox.axle().ignition(&ignition).unwrap();
    assert_eq!(
        info.metadata["coverwatchLinkId"],
        json!(linked.request.link_id.to_string())
    );
    h.sandbox
        .axle()
        .sign_in(&ignition, "state-farm", "username", "password")
        .unwrap();
    let (_, completed) = h.webhook(&linked.request, "ignition.completed", seq).await;
    let parsed = h.receive(&completed);
    assert_eq!(
        parsed.attribution[0],
        Attribution::Link(linked.request.link_id)
    );
    let Happening::SessionCompleted { code, .. } = &parsed.happenings[0] else {
        panic!("{:?}", parsed.happenings)
    };
    let grant = h
        .provider
        .complete_link(&Completion {
            code: code.clone(),
            data: DataRef::All,
        })
        .await
        .unwrap();
    assert_eq!(grant.account_key, linked.grant.account_key);
    assert_eq!(
        grant.secret.unwrap().expose_secret(),
        linked.grant.secret.as_ref().unwrap().expose_secret()
    );
    let fetched = h
        .provider
        .fetch(&linked.access, &DataRef::All)
        .await
        .unwrap();
    assert_eq!(
        fetched.account.unwrap().account.connection,
        ConnectionStatus::Active
    );
}

#[tokio::test]
async fn descope_stops_monitoring_and_can_be_repeated() {
    let h = Harness::start().await;
    let linked = h.link("user-home", "pass-home").await;
    let account = account_id(&linked);
    assert_eq!(h.sandbox.axle().is_monitored(&account), Some(true));
    assert!(
        h.provider
            .ensure_monitoring(&linked.access)
            .await
            .unwrap()
            .is_empty()
    );
    h.provider.descope(&linked.access).await.unwrap();
    assert_eq!(h.sandbox.axle().is_monitored(&account), Some(false));
    h.provider.descope(&linked.access).await.unwrap();
    let policy = h.sandbox.axle().account(&account).unwrap()["policies"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let outcome = h.sandbox.axle().cancel_policy(&policy).unwrap();
    assert!(
        outcome.event.is_none(),
        "no monitoring events after descope"
    );
    // The data stays readable with the token.
    let fetched = h
        .provider
        .fetch(&linked.access, &DataRef::Policy(policy))
        .await
        .unwrap();
    assert_eq!(fetched.policies[0].policy.status, PolicyStatus::Inactive);
}

// ---------------------------------------------------------------------------------------------
// Webhook authentication

#[tokio::test]
async fn the_shared_header_and_the_path_are_required() {
    let h = Harness::start().await;
    let request = h.request("user-1");
    let seq = h.last_seq();
    h.open(&request).await;
    let (_, genuine) = h.webhook(&request, "ignition.created", seq).await;
    assert!(h.provider.authenticate_webhook(&genuine).is_ok());

    let mut other_value = config_for(&h.sandbox);
    other_value.webhook_header = Some((SHARED_HEADER.0.into(), "another-secret".to_owned().into()));
    let strict = AxleProvider::new(other_value).unwrap();
    assert_eq!(
        strict.authenticate_webhook(&genuine),
        Err(WebhookRejection::BadSharedSecret)
    );

    let mut stripped = genuine.clone();
    stripped.headers.retain(|(k, _)| k != SHARED_HEADER.0);
    assert_eq!(
        h.provider.authenticate_webhook(&stripped),
        Err(WebhookRejection::MissingHeader(SHARED_HEADER.0.into()))
    );
    let mut no_path = genuine.clone();
    no_path.path = String::new();
    assert_eq!(
        h.provider.authenticate_webhook(&no_path),
        Err(WebhookRejection::UnknownPath)
    );

    // Without a configured header, the path token alone is checked (by the engine).
    let mut open_config = config_for(&h.sandbox);
    open_config.webhook_header = None;
    let open = AxleProvider::new(open_config).unwrap();
    assert!(open.authenticate_webhook(&stripped).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Axle's errors and the retry rules

#[tokio::test]
async fn axle_errors_are_typed_with_status_and_request_id() {
    let h = Harness::start().await;
    let linked = h.link("username", "password").await;

    let mut wrong = config_for(&h.sandbox);
    wrong.client_secret = "not-the-secret".to_owned().into();
    let wrong = AxleProvider::new(wrong).unwrap();
    let err = wrong
        .fetch(&linked.access, &DataRef::All)
        .await
        .unwrap_err();
    let ProviderError::Rejected {
        kind,
        vendor,
        message,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*kind, RejectionKind::Unauthenticated);
    assert_eq!(vendor.http_status, Some(401));
    assert!(vendor.request_id.as_deref().unwrap().starts_with("req_"));
    assert!(message.contains("Invalid client credentials"), "{message}");

    let bad_token = LinkAccess {
        secret: Some(SecretString::from("not-a-token".to_owned())),
        ..linked.access.clone()
    };
    let err = h
        .provider
        .fetch(&bad_token, &DataRef::All)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Rejected {
                kind: RejectionKind::Unauthenticated,
                ..
            }
        ),
        "{err:?}"
    );

    let err = h
        .provider
        .fetch(&linked.access, &DataRef::Policy("pol_missing".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Rejected {
                kind: RejectionKind::NotFound,
                ..
            }
        ),
        "{err:?}"
    );

    h.sandbox.faults().inject_times(
        FaultTarget::endpoint("axle.accounts.get"),
        FaultEffect::Malformed,
        1,
    );
    let err = h
        .provider
        .fetch(&linked.access, &DataRef::All)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Malformed { .. }), "{err:?}");
}

#[tokio::test]
async fn reads_are_retried_on_429_5xx_and_timeouts() {
    let h = Harness::start_with(|c| c.request_timeout = Duration::from_millis(500)).await;
    let linked = h.link("username", "password").await;
    let faults = h.sandbox.faults();
    let accounts = || FaultTarget::endpoint("axle.accounts.get");
    let policies = || FaultTarget::endpoint("axle.policies.get");

    faults.inject_times(
        accounts(),
        FaultEffect::Status {
            status: 429,
            retry_after_secs: Some(0),
            body: None,
        },
        1,
    );
    faults.inject_times(policies(), FaultEffect::status(500), 1);
    let fetched = h
        .provider
        .fetch(&linked.access, &DataRef::All)
        .await
        .unwrap();
    assert_eq!(fetched.policies.len(), 2);
    assert!(
        faults.list().is_empty(),
        "both faults were met and retried past"
    );

    faults.inject_times(accounts(), FaultEffect::status(503), 1);
    faults.inject_times(policies(), FaultEffect::status(502), 1);
    h.provider
        .fetch(&linked.access, &DataRef::All)
        .await
        .unwrap();
    assert!(faults.list().is_empty());

    // A hanging answer times out and is tried again.
    faults.inject_times(accounts(), FaultEffect::Hang { ms: Some(3_000) }, 1);
    let started = Instant::now();
    h.provider
        .fetch(&linked.access, &DataRef::Account(account_id(&linked)))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(faults.list().is_empty());

    // Retry-After is honoured.
    faults.inject_times(accounts(), FaultEffect::rate_limited(1), 1);
    let started = Instant::now();
    h.provider
        .fetch(&linked.access, &DataRef::Account(account_id(&linked)))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn retries_give_up_and_report_unavailable() {
    let h = Harness::start().await;
    let linked = h.link("username", "password").await;
    let faults = h.sandbox.faults();

    // Past max_retries (3): four attempts, then Unavailable with Axle's details.
    faults.inject_times(
        FaultTarget::endpoint("axle.accounts.get"),
        FaultEffect::status(503),
        10,
    );
    let err = h
        .provider
        .fetch(&linked.access, &DataRef::All)
        .await
        .unwrap_err();
    let ProviderError::Unavailable { vendor, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(vendor.http_status, Some(503));
    assert!(vendor.request_id.is_some());
    assert_eq!(faults.list()[0].times, Some(6));
    faults.clear();

    // A Retry-After longer than we wait inside one call ends the call at once.
    faults.inject_times(
        FaultTarget::endpoint("axle.accounts.get"),
        FaultEffect::rate_limited(60),
        5,
    );
    let started = Instant::now();
    let err = h
        .provider
        .fetch(&linked.access, &DataRef::All)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&err, ProviderError::Unavailable { vendor, .. } if vendor.http_status == Some(429)),
        "{err:?}"
    );
    assert_eq!(faults.list()[0].times, Some(4));
}

#[tokio::test]
async fn posts_are_never_retried() {
    let h = Harness::start().await;
    let faults = h.sandbox.faults();

    // Start Ignition: one 500 fails the call; nothing was tried again behind it.
    faults.inject_times(
        FaultTarget::endpoint("axle.ignition.start"),
        FaultEffect::status(500),
        1,
    );
    let request = h.request("user-1");
    let err = h.provider.start_link_session(&request).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(faults.list().is_empty());
    assert!(
        h.sandbox.axle().snapshot()["ignitions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let ignition = h.open(&request).await;

    // Exchange: a 503 fails the call and leaves the code unspent for the caller's own retry.
    let signed = h
        .sandbox
        .axle()
        .sign_in(&ignition, "state-farm", "username", "password")
        .unwrap();
    let coverwatch_sandbox::axle::SignIn::Complete { auth_code, .. } = signed else {
        panic!("{signed:?}")
    };
    let completion = Completion {
        code: Some(SecretString::from(auth_code)),
        data: DataRef::All,
    };
    faults.inject_times(
        FaultTarget::endpoint("axle.token.exchange"),
        FaultEffect::status(503),
        1,
    );
    let err = h.provider.complete_link(&completion).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    h.provider.complete_link(&completion).await.unwrap();

    // Descope: a 429 is reported, not waited out.
    let linked = h.link("user-home", "pass-home").await;
    faults.inject_times(
        FaultTarget::endpoint("axle.token.descope"),
        FaultEffect::Status {
            status: 429,
            retry_after_secs: Some(0),
            body: None,
        },
        1,
    );
    let err = h.provider.descope(&linked.access).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        h.sandbox.axle().is_monitored(&account_id(&linked)),
        Some(true)
    );
    h.provider.descope(&linked.access).await.unwrap();
    assert_eq!(
        h.sandbox.axle().is_monitored(&account_id(&linked)),
        Some(false)
    );
}

// ---------------------------------------------------------------------------------------------
// 429 → 500 → 200 in sequence. The sandbox spends every fault rule matching a request at once,
// so a sequence on one endpoint is served by a small scripted HTTP server instead.

struct Scripted {
    base_url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

/// Status, extra headers, body.
type Reply = (u16, Vec<(&'static str, String)>, String);

async fn scripted(responses: Vec<Reply>) -> Scripted {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut responses = responses.into_iter();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head; GETs carry no body.
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            log.lock()
                .unwrap()
                .push(head.lines().next().unwrap_or_default().to_owned());
            let (status, headers, body) = responses.next().unwrap_or((
                500,
                vec![],
                "{\"success\":false,\"message\":\"script ended\"}".into(),
            ));
            let mut out = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&body);
            let _ = stream.write_all(out.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    Scripted { base_url, seen }
}

#[tokio::test]
async fn a_429_then_a_500_then_success_is_one_successful_read() {
    let policy =
        json!({"success": true, "data": {"id": "pol_1", "isActive": true, "type": "auto"}});
    let server = scripted(vec![
        (
            429,
            vec![
                ("retry-after", "0".into()),
                ("x-axle-request-id", "req_a".into()),
            ],
            "{\"success\":false}".into(),
        ),
        (
            500,
            vec![("x-axle-request-id", "req_b".into())],
            "{\"success\":false,\"message\":\"boom\"}".into(),
        ),
        (
            200,
            vec![("x-axle-request-id", "req_c".into())],
            policy.to_string(),
        ),
    ])
    .await;
    let mut config = AxleConfig::new(&server.base_url, "cli_sandbox", "axle-sandbox-secret");
    config.backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(20));
    let provider = AxleProvider::new(config).unwrap();
    let access = LinkAccess {
        link_id: LinkId::new(),
        secret: Some(SecretString::from("tok".to_owned())),
        secrets: BTreeMap::new(),
        external_ids: BTreeMap::new(),
    };
    let fetched = provider
        .fetch(&access, &DataRef::Renewal("pol_1".into()))
        .await
        .unwrap();
    assert_eq!(fetched.policies[0].policy.status, PolicyStatus::Active);
    assert_eq!(fetched.policies[0].term, PolicyTerm::Renewal);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen, vec!["GET /policies/pol_1?term=renewal HTTP/1.1"; 3]);
}

/// Axle, Coverages (docs.axle.insure/api-reference/policies/coverages), Auto Policy Coverage
/// Types: a CSL's limit "will be set as limitPerAccident for both Bodily Injury and Property
/// Damage coverages", and "If there is only a single limit returned, the limit will be recorded as
/// limitPerAccident". The sandbox's CSL policy is written that way, so a bodily-injury minimum it
/// would meet as a CSL is UNKNOWN, not met; one it misses either way is unmet; property damage,
/// stated outright, is met.
#[tokio::test]
async fn requirement_rules_do_not_pass_on_an_inferred_combined_single_limit() {
    use coverwatch_core::requirements::{OverallStatus, RequirementSet, Rule, evaluate};

    let h = Harness::start().await;
    let linked = h.link("username", "password").await;
    let fetched = h
        .provider
        .fetch(&linked.access, &DataRef::All)
        .await
        .unwrap();
    let csl = fetched
        .policies
        .iter()
        .find(|p| p.policy.policy_number.as_deref() == Some("AUTO-100-2002"))
        .expect("the CSL policy")
        .policy
        .clone();
    let main = fetched
        .policies
        .iter()
        .find(|p| p.policy.policy_number.as_deref() == Some("AUTO-100-2001"))
        .expect("the split-limit policy")
        .policy
        .clone();
    let check = |rule: Rule, policy: &Policy| {
        let set = RequirementSet {
            id: "lender".into(),
            name: "Lender".into(),
            rules: vec![rule],
        };
        let evaluation = evaluate(&set, std::slice::from_ref(policy), linked.linked_at);
        (evaluation.status, evaluation.outcomes[0].observed.clone())
    };
    let bi = |person: i64, accident: i64| Rule::MinBodilyInjury {
        per_person_cents: person * 100,
        per_accident_cents: accident * 100,
    };
    let (status, observed) = check(bi(100_000, 300_000), &csl);
    assert_eq!(status, OverallStatus::Unknown);
    assert!(
        observed
            .unwrap()
            .contains("combined_single_limit (inferred) 30000000 cents"),
    );
    assert_eq!(check(bi(100_000, 500_000), &csl).0, OverallStatus::Unmet);
    let pd = Rule::MinPropertyDamage {
        per_accident_cents: 300_000 * 100,
    };
    assert_eq!(check(pd, &csl).0, OverallStatus::Met);
    // A split limit Axle stated in full passes as before.
    assert_eq!(check(bi(100_000, 300_000), &main).0, OverallStatus::Met);
}
