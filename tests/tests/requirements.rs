//! Policy history, requirement checks and stale links (issue 7), end to end: the real server, its
//! real vendor providers against the embedded sandbox, a fresh database. The caller's side goes
//! through gRPC (MonitoringService and RequirementsService), the carrier's side through the
//! sandbox's controls, and time through `Engine::sweep(now)`.
//!
//! The vendor scenarios run once per vendor: each sandbox login used here has an auto policy with
//! a financed car (a lienholder on it, comprehensive and collision, bodily-injury liability) and
//! another policy in force beside it, so a lender's set watches that one car.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use coverwatch::Overrides;
use coverwatch_core::ProviderId;
use coverwatch_engine::SweepConfig;
use coverwatch_sandbox::canopy::{
    CoveragePatch, Scenario, ScenarioAction, ScenarioTarget, fixtures,
};
use coverwatch_sandbox::{AxleSim, CanopySim, FaultEffect, FaultRule, FaultTarget};
use coverwatch_tests::flows::{
    Browser, DEADLINE, get_link, kinds, last_of, link_events, list_policies, sandbox,
    wait_for_event, wait_for_events,
};
use coverwatch_tests::{
    Client, RequirementsClient, TENANT_A, TENANT_B, TestServer, eventually, fast_worker,
    test_config, v1,
};
use serde_json::{Value, json};
use tonic::Code;

use v1::EventKind as K;
use v1::RequirementsStatus as Status;
use v1::RuleResult as R;
use v1::put_requirement_set_request::Definition;
use v1::rule::Rule as Kind;

// ---------------------------------------------------------------------------------------------
// The vendors and their sandbox data

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Vendor {
    Axle,
    Canopy,
}

/// What the sandbox login a test links holds, as far as the lender's set cares.
struct Fixture {
    /// The financed car, on the auto policy the tests watch.
    vin: &'static str,
    /// Its lienholder, spelled the way a lender might type it (case and punctuation differ).
    lienholder: &'static str,
    /// Policy.status once the carrier cancelled the policy.
    cancelled: &'static str,
}

impl Vendor {
    fn fixture(self) -> Fixture {
        match self {
            // `username` / `password`: policy AUTO-100-2001, V1 the Honda with Capital One.
            Vendor::Axle => Fixture {
                vin: "SMTD44GN3HT812287",
                lienholder: "CAPITAL ONE AUTO-FINANCE.",
                cancelled: "inactive",
            },
            // `user_good`: policy AU-5550001, the Camry with Sandbox Auto Finance.
            Vendor::Canopy => Fixture {
                vin: "4T1G11AK5MU000001",
                lienholder: "sandbox auto finance",
                cancelled: "cancelled",
            },
        }
    }

    fn provider(self) -> v1::Provider {
        match self {
            Vendor::Axle => v1::Provider::Axle,
            Vendor::Canopy => v1::Provider::Canopy,
        }
    }
}

/// The Canopy Civic: the household's other car, on the same auto policy, liability only.
const CANOPY_CIVIC: &str = "2HGFC2F59GH000002";
const CANOPY_AUTO_POLICY: &str = "AU-5550001";

/// What the carrier does to the watched policy.
#[derive(Clone, Copy, Debug)]
enum CarrierChange {
    Cancel,
    Reinstate,
    /// Collision dropped on the financed car and bodily injury lowered to $25,000 / $50,000.
    ReduceCoverage,
    /// Back to what the policy had when linked.
    RestoreCoverage,
    /// The vendor reports no coverage at all for the financed car.
    DropCoveragesOfFinancedCar,
    /// Canopy only: bodily injury on the financed car becomes unlimited per person and per
    /// incident (Axle states no unlimited limits).
    UnlimitedBodilyInjury,
    /// Something no rule of the lender's set reads (Axle: the premium; Canopy: a deductible on
    /// the other car); `step` makes each one a new value.
    Unrelated {
        step: i64,
    },
}

/// A completed link and where its sandbox data lives.
struct Linked {
    link_id: String,
    /// The auto policy holding the financed car (Policy.external_id).
    policy_id: String,
    /// The financed car's Vehicle.id (the property coverages are bound to).
    vehicle_id: String,
    /// Canopy: the link's first pull and its monitoring (empty for Axle).
    pull_id: String,
    monitoring_id: String,
    /// Axle: the policy's coverages as linked, in Axle's form (null for Canopy).
    axle_coverages: Value,
}

// ---------------------------------------------------------------------------------------------
// The harness: a server, its sandbox, and the caller's clients

struct Harness {
    vendor: Vendor,
    server: TestServer,
    client: Client,
    requirements: RequirementsClient,
    browser: Browser,
}

impl Harness {
    async fn start(vendor: Vendor) -> Self {
        Self::start_with_stale_window(vendor, None).await
    }

    /// The background sweep is pushed out of the way (tests call `Engine::sweep` themselves);
    /// `stale_after` replaces both vendors' stale windows.
    async fn start_with_stale_window(vendor: Vendor, stale_after: Option<Duration>) -> Self {
        let stale_after = stale_after
            .map(|window| {
                BTreeMap::from([
                    (ProviderId::from_static("axle"), window),
                    (ProviderId::from_static("canopy"), window),
                ])
            })
            .unwrap_or_default();
        let server = TestServer::start_with(
            test_config().await,
            Overrides {
                providers: None,
                worker: Some(fast_worker()),
                plugins: None,
                stream_poll: None,
                sweep: Some(SweepConfig {
                    interval: Duration::from_secs(3600),
                    reevaluate_every: Duration::from_secs(3600),
                    stale_after,
                }),
            },
        )
        .await;
        let client = server.client(TENANT_A).await;
        let requirements = server.requirements_client(TENANT_A).await;
        Self {
            vendor,
            server,
            client,
            requirements,
            browser: Browser::new(),
        }
    }

    fn axle(&self) -> &AxleSim {
        sandbox(&self.server).axle()
    }

    fn canopy(&self) -> &CanopySim {
        sandbox(&self.server).canopy()
    }

    async fn stop(self) {
        self.server.stop().await;
    }

    // --- linking --------------------------------------------------------------------------------

    async fn start_link(
        &self,
        user: &str,
        set: Option<&str>,
    ) -> Result<v1::StartLinkResponse, tonic::Status> {
        self.client
            .clone()
            .start_link(v1::StartLinkRequest {
                provider: self.vendor.provider() as i32,
                user_id: user.to_owned(),
                requirement_set_id: set.map(str::to_owned),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// StartLink (attaching `set`), the end-user through the vendor's hosted page, and the link
    /// ACTIVE with its data once every delivery was worked off.
    async fn link(&self, user: &str, set: Option<&str>) -> Linked {
        let started = self.start_link(user, set).await.expect("StartLink");
        let link_id = started.link.expect("a link").id;
        let mut pull_id = String::new();
        let mut monitoring_id = String::new();
        match self.vendor {
            Vendor::Axle => {
                let landing = self.browser.get(&started.session_url).await;
                let login = self
                    .browser
                    .submit(&landing, "carrier-form", &[("carrier", "state-farm")])
                    .await;
                let done = self
                    .browser
                    .submit(
                        &login,
                        "login-form",
                        &[("username", "username"), ("password", "password")],
                    )
                    .await;
                assert_eq!(done.element_text("status").as_deref(), Some("complete"));
                wait_for_event(&self.client, &link_id, K::LinkCompleted).await;
            }
            Vendor::Canopy => {
                let widget = self.browser.get(&started.session_url).await;
                let submitted = self
                    .browser
                    .submit(
                        &widget,
                        "login",
                        &[
                            ("consent", "yes"),
                            ("insurerName", "statefarm"),
                            ("username", fixtures::TestLogin::Good.username()),
                            ("password", fixtures::GOOD_PASSWORD),
                        ],
                    )
                    .await;
                assert_eq!(submitted.status, 303, "{}", submitted.html);
                let status = self.browser.follow(&submitted).await;
                pull_id = status.body_data("pull-id").expect("the pull's status page");
                self.settled_after(&pull_id, "COMPLETE").await;
                monitoring_id = eventually("the link's monitoring", DEADLINE, || async {
                    let sim = self.canopy();
                    sim.monitorings()
                        .into_iter()
                        .find(|m| {
                            sim.monitoring_pull_ids(&m.monitoring_id).first() == Some(&pull_id)
                        })
                        .map(|m| m.monitoring_id)
                })
                .await;
            }
        }
        self.worked_off().await;
        assert_eq!(
            get_link(&self.client, &link_id).await.state(),
            v1::LinkState::Active
        );
        let vin = self.vendor.fixture().vin;
        let (policy_id, vehicle_id) = list_policies(&self.client, &link_id)
            .await
            .into_iter()
            .find_map(|p| {
                let car = p.vehicles.iter().find(|v| v.vin.as_deref() == Some(vin))?;
                Some((p.external_id.clone(), car.id.clone()))
            })
            .expect("a policy with the financed car");
        let axle_coverages = match self.vendor {
            Vendor::Axle => {
                self.axle().policy(&policy_id).expect("the policy")["coverages"].clone()
            }
            Vendor::Canopy => Value::Null,
        };
        Linked {
            link_id,
            policy_id,
            vehicle_id,
            pull_id,
            monitoring_id,
            axle_coverages,
        }
    }

    // --- waiting for the vendor ---------------------------------------------------------------

    /// Once no stored delivery waits to be processed.
    async fn worked_off(&self) {
        let store = self.server.app.engine.store();
        eventually("the inbox to be worked off", DEADLINE, || async {
            (store.count_pending_deliveries().await.unwrap() == 0).then_some(())
        })
        .await;
    }

    /// Once Canopy delivered `event_type` of `pull` and every stored delivery was worked off.
    async fn settled_after(&self, pull: &str, event_type: &str) {
        let (wanted, event) = (pull.to_owned(), event_type.to_owned());
        sandbox(&self.server)
            .deliveries()
            .wait_until(DEADLINE, move |all| {
                all.iter()
                    .find(|a| {
                        a.event_type == event
                            && a.delivered()
                            && a.json().is_some_and(|b| b["pull_id"] == wanted.as_str())
                    })
                    .cloned()
            })
            .await
            .unwrap_or_else(|e| panic!("{event_type} of {pull} never delivered: {e:?}"));
        self.worked_off().await;
    }

    // --- the carrier's side ---------------------------------------------------------------------

    /// The carrier changes the watched policy; returns the link's events once coverwatch reported
    /// it (one more policy.updated) and worked off every delivery.
    async fn carrier_changes(&self, linked: &Linked, change: CarrierChange) -> Vec<v1::Event> {
        let before = count(
            &link_events(&self.client, &linked.link_id).await,
            K::PolicyUpdated,
        );
        match self.vendor {
            Vendor::Axle => self.axle_change(linked, change),
            Vendor::Canopy => {
                let pull = self.canopy_change(linked, change);
                self.settled_after(&pull, "MONITORING_EVENTS").await;
            }
        }
        wait_for_events(&self.client, &linked.link_id, K::PolicyUpdated, before + 1).await;
        self.worked_off().await;
        let events = link_events(&self.client, &linked.link_id).await;
        assert_eq!(
            count(&events, K::PolicyUpdated),
            before + 1,
            "one policy.updated for {change:?}: {:?}",
            kinds(&events)
        );
        events
    }

    fn axle_change(&self, linked: &Linked, change: CarrierChange) {
        let coverages = |keep: &dyn Fn(&Value) -> bool, edit: &dyn Fn(&mut Value)| {
            let mut list: Vec<Value> = linked
                .axle_coverages
                .as_array()
                .expect("coverages")
                .iter()
                .filter(|c| keep(c))
                .cloned()
                .collect();
            list.iter_mut().for_each(edit);
            json!({ "coverages": list })
        };
        let on_financed_car = |c: &Value| c["property"] == json!(linked.vehicle_id);
        let fields = match change {
            CarrierChange::Cancel => json!({"isActive": false}),
            CarrierChange::Reinstate => json!({"isActive": true}),
            CarrierChange::ReduceCoverage => {
                coverages(&|c| !(c["code"] == "COLL" && on_financed_car(c)), &|c| {
                    if c["code"] == "BI" {
                        c["limitPerPerson"] = json!(25_000);
                        c["limitPerAccident"] = json!(50_000);
                    }
                })
            }
            CarrierChange::RestoreCoverage => coverages(&|_| true, &|_| {}),
            // Only the other car's own coverages stay; the policy-wide ones go too.
            CarrierChange::DropCoveragesOfFinancedCar => coverages(
                &|c| c.get("property").is_some() && !on_financed_car(c),
                &|_| {},
            ),
            CarrierChange::Unrelated { step } => json!({"premium": 1342.5 + 100.0 * step as f64}),
            CarrierChange::UnlimitedBodilyInjury => {
                panic!("Axle documents no unlimited limit to simulate")
            }
        };
        let outcome = self
            .axle()
            .modify_policy(&linked.policy_id, &fields)
            .expect("the sandbox takes the change");
        assert!(outcome.event.is_some(), "Axle announces {change:?}");
    }

    /// Applies the change at Canopy and refreshes the monitoring; returns the refresh's pull.
    fn canopy_change(&self, linked: &Linked, change: CarrierChange) -> String {
        let vin = Some(self.vendor.fixture().vin.to_owned());
        let set = |vin: &Option<String>, coverage: &str, patch: CoveragePatch| {
            ScenarioAction::SetVehicleCoverage {
                vin: vin.clone(),
                coverage: coverage.into(),
                patch,
            }
        };
        let limits = |person: i64, incident: i64| CoveragePatch {
            per_person_limit_cents: Some(person),
            per_incident_limit_cents: Some(incident),
            ..Default::default()
        };
        let deductible = |cents: i64| CoveragePatch {
            deductible_cents: Some(cents),
            ..Default::default()
        };
        let actions = match change {
            CarrierChange::Cancel => vec![ScenarioAction::CancelPolicy {
                canceled_date: None,
            }],
            CarrierChange::Reinstate => vec![ScenarioAction::ReinstatePolicy],
            CarrierChange::ReduceCoverage => vec![
                ScenarioAction::RemoveVehicleCoverage {
                    vin: vin.clone(),
                    coverage: "COLLISION".into(),
                },
                set(
                    &vin,
                    "BODILY_INJURY_LIABILITY",
                    limits(2_500_000, 5_000_000),
                ),
            ],
            CarrierChange::RestoreCoverage => vec![
                set(&vin, "COLLISION", deductible(100_000)),
                set(
                    &vin,
                    "BODILY_INJURY_LIABILITY",
                    limits(10_000_000, 30_000_000),
                ),
            ],
            CarrierChange::DropCoveragesOfFinancedCar => [
                "BODILY_INJURY_LIABILITY",
                "PROPERTY_DAMAGE_LIABILITY",
                "UNINSURED_MOTORIST_BODILY_INJURY_LIABILITY",
                "UNINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY",
                "COMPREHENSIVE",
                "COLLISION",
                "PERSONAL_INJURY_PROTECTION",
                "RENTAL_REIMBURSEMENT",
            ]
            .into_iter()
            .map(|coverage| ScenarioAction::RemoveVehicleCoverage {
                vin: vin.clone(),
                coverage: coverage.into(),
            })
            .collect(),
            CarrierChange::UnlimitedBodilyInjury => vec![set(
                &vin,
                "BODILY_INJURY_LIABILITY",
                CoveragePatch {
                    per_person_unlimited: Some(true),
                    per_incident_unlimited: Some(true),
                    ..Default::default()
                },
            )],
            CarrierChange::Unrelated { step } => vec![set(
                &Some(CANOPY_CIVIC.to_owned()),
                "UNINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY",
                deductible(25_000 + 10_000 * step),
            )],
        };
        let last = actions.len() - 1;
        let mut refreshed = Vec::new();
        for (i, action) in actions.into_iter().enumerate() {
            let mut scenario = Scenario::new(
                ScenarioTarget::pull(&linked.pull_id).policy_number(CANOPY_AUTO_POLICY),
                action,
            );
            if i == last {
                scenario = scenario.and_refresh();
            }
            refreshed = self
                .canopy()
                .apply(scenario)
                .expect("the sandbox takes the change")
                .refreshed_pull_ids;
        }
        assert_eq!(refreshed.len(), 1, "one monitoring refreshed");
        refreshed.remove(0)
    }

    /// Fresh data from the vendor with nothing a caller would call a change; returns the link's
    /// events once it arrived (one more data.refreshed) and was worked off.
    async fn refresh_without_change(&self, linked: &Linked) -> Vec<v1::Event> {
        let before = count(
            &link_events(&self.client, &linked.link_id).await,
            K::DataRefreshed,
        );
        match self.vendor {
            // Axle has no refresh on demand: the carrier changes a field coverwatch does not keep
            // (an insured's date of birth), Axle announces the policy, coverwatch reads it again.
            Vendor::Axle => {
                let mut insureds =
                    self.axle().policy(&linked.policy_id).unwrap()["insureds"].clone();
                insureds[0]["dateOfBirth"] = json!(format!("1985-04-{:02}", 1 + before % 28));
                let outcome = self
                    .axle()
                    .modify_policy(&linked.policy_id, &json!({ "insureds": insureds }))
                    .unwrap();
                assert!(outcome.event.is_some(), "Axle announces the policy");
            }
            // Canopy refreshes on the caller's request: a new pull of the same data.
            Vendor::Canopy => {
                let pulls = self
                    .canopy()
                    .monitoring_pull_ids(&linked.monitoring_id)
                    .len();
                self.client
                    .clone()
                    .refresh_link(v1::RefreshLinkRequest {
                        link_id: linked.link_id.clone(),
                    })
                    .await
                    .expect("RefreshLink");
                let pull = eventually("the refresh's pull", DEADLINE, || async {
                    self.canopy()
                        .monitoring_pull_ids(&linked.monitoring_id)
                        .get(pulls)
                        .cloned()
                })
                .await;
                self.settled_after(&pull, "COMPLETE").await;
            }
        }
        wait_for_events(&self.client, &linked.link_id, K::DataRefreshed, before + 1).await;
        self.worked_off().await;
        link_events(&self.client, &linked.link_id).await
    }

    // --- the caller's side ----------------------------------------------------------------------

    async fn put(&self, set: v1::RequirementSet) -> v1::PutRequirementSetResponse {
        put(&self.requirements, set)
            .await
            .expect("PutRequirementSet")
    }

    async fn attach(
        &self,
        link_id: &str,
        set: Option<&str>,
    ) -> Result<v1::AttachRequirementSetResponse, tonic::Status> {
        self.requirements
            .clone()
            .attach_requirement_set(v1::AttachRequirementSetRequest {
                link_id: link_id.to_owned(),
                requirement_set_id: set.map(str::to_owned),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn evaluate(&self, link_id: &str) -> Result<v1::Evaluation, tonic::Status> {
        self.requirements
            .clone()
            .evaluate_link(v1::EvaluateLinkRequest {
                link_id: link_id.to_owned(),
            })
            .await
            .map(|r| r.into_inner().evaluation.expect("an evaluation"))
    }

    /// EvaluateLink's whole answer: our evaluation and the vendor's verdict beside it.
    async fn evaluate_with_vendor(&self, link_id: &str) -> (v1::Evaluation, v1::VendorCheck) {
        let answer = self
            .requirements
            .clone()
            .evaluate_link(v1::EvaluateLinkRequest {
                link_id: link_id.to_owned(),
            })
            .await
            .expect("EvaluateLink")
            .into_inner();
        (
            answer.evaluation.expect("an evaluation"),
            answer.vendor_check.expect("a vendor check"),
        )
    }

    /// Every stored version of the watched policy, oldest first.
    async fn history(&self, linked: &Linked) -> Vec<v1::PolicyVersion> {
        let mut versions = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client
                .clone()
                .get_policy_history(v1::GetPolicyHistoryRequest {
                    link_id: linked.link_id.clone(),
                    policy_id: linked.policy_id.clone(),
                    term: v1::PolicyTerm::Current as i32,
                    page_size: 100,
                    page_token,
                    ..Default::default()
                })
                .await
                .expect("GetPolicyHistory")
                .into_inner();
            versions.extend(page.versions);
            if page.next_page_token.is_empty() {
                return versions;
            }
            page_token = page.next_page_token;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requirement sets and what came of them

fn rule(kind: Kind) -> v1::Rule {
    v1::Rule { rule: Some(kind) }
}

fn vin_covered(vin: &str) -> v1::Rule {
    rule(Kind::VinCovered(v1::VinCoveredRule { vin: vin.into() }))
}

fn min_bodily_injury(per_person_cents: i64, per_accident_cents: i64) -> v1::Rule {
    rule(Kind::MinBodilyInjury(v1::MinBodilyInjuryRule {
        per_person_cents,
        per_accident_cents,
    }))
}

fn comprehensive_and_collision(max_deductible_cents: i64) -> v1::Rule {
    rule(Kind::ComprehensiveAndCollision(
        v1::ComprehensiveAndCollisionRule {
            max_deductible_cents,
        },
    ))
}

fn set(id: &str, name: &str, rules: Vec<v1::Rule>) -> v1::RequirementSet {
    v1::RequirementSet {
        id: id.into(),
        name: name.into(),
        rules,
        ..Default::default()
    }
}

/// A lender's set for the financed car: some policy in force, the car on an in-force policy,
/// $100,000 / $300,000 bodily injury, comprehensive and collision with at most a $1,000
/// deductible, and the lender named as lienholder. The linked data meets it.
fn lender_set(id: &str, vendor: Vendor) -> v1::RequirementSet {
    let fixture = vendor.fixture();
    set(
        id,
        "Lender auto",
        vec![
            rule(Kind::PolicyActive(v1::PolicyActiveRule {})),
            vin_covered(fixture.vin),
            min_bodily_injury(10_000_000, 30_000_000),
            comprehensive_and_collision(100_000),
            rule(Kind::InterestedPartyNamed(v1::InterestedPartyNamedRule {
                kind: v1::PartyKind::Lienholder as i32,
                name: fixture.lienholder.into(),
            })),
        ],
    )
}

async fn put(
    client: &RequirementsClient,
    set: v1::RequirementSet,
) -> Result<v1::PutRequirementSetResponse, tonic::Status> {
    put_definition(client, Definition::Set(set)).await
}

async fn put_definition(
    client: &RequirementsClient,
    definition: Definition,
) -> Result<v1::PutRequirementSetResponse, tonic::Status> {
    client
        .clone()
        .put_requirement_set(v1::PutRequirementSetRequest {
            definition: Some(definition),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn get_set(
    client: &RequirementsClient,
    id: &str,
) -> Result<v1::RequirementSet, tonic::Status> {
    client
        .clone()
        .get_requirement_set(v1::GetRequirementSetRequest { id: id.into() })
        .await
        .map(|r| r.into_inner().set.expect("a set"))
}

async fn list_sets(
    client: &RequirementsClient,
    page_size: i32,
    page_token: &str,
) -> Result<v1::ListRequirementSetsResponse, tonic::Status> {
    client
        .clone()
        .list_requirement_sets(v1::ListRequirementSetsRequest {
            page_size,
            page_token: page_token.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn delete_set(client: &RequirementsClient, id: &str) -> Result<bool, tonic::Status> {
    client
        .clone()
        .delete_requirement_set(v1::DeleteRequirementSetRequest { id: id.into() })
        .await
        .map(|r| r.into_inner().deleted)
}

fn count(events: &[v1::Event], kind: K) -> usize {
    events.iter().filter(|e| e.kind() == kind).count()
}

/// The met / unmet events among `events`, in order.
fn standings(events: &[v1::Event]) -> Vec<K> {
    events
        .iter()
        .map(v1::Event::kind)
        .filter(|k| matches!(k, K::PolicyRequirementsMet | K::PolicyRequirementsUnmet))
        .collect()
}

/// The set's name and every rule's outcome carried by the last met or unmet event.
fn last_standing(events: &[v1::Event]) -> (K, String, Vec<v1::RuleOutcome>) {
    let event = events
        .iter()
        .rev()
        .find(|e| {
            matches!(
                e.kind(),
                K::PolicyRequirementsMet | K::PolicyRequirementsUnmet
            )
        })
        .unwrap_or_else(|| panic!("no met/unmet event among {:?}", kinds(events)));
    match event.payload.clone() {
        Some(v1::event::Payload::PolicyRequirementsMet(met)) => {
            (event.kind(), met.requirement_set, met.outcomes)
        }
        Some(v1::event::Payload::PolicyRequirementsUnmet(unmet)) => {
            (event.kind(), unmet.requirement_set, unmet.outcomes)
        }
        other => panic!("{:?} carries {other:?}", event.kind()),
    }
}

fn last_policy_update(events: &[v1::Event]) -> v1::PolicyUpdated {
    match last_of(events, K::PolicyUpdated).payload.clone() {
        Some(v1::event::Payload::PolicyUpdated(updated)) => updated,
        other => panic!("policy.updated carries {other:?}"),
    }
}

/// The outcome of the rule of this kind (outcomes name rules as `kind(parameters)`).
fn outcome<'a>(outcomes: &'a [v1::RuleOutcome], kind: &str) -> &'a v1::RuleOutcome {
    outcomes
        .iter()
        .find(|o| o.rule.starts_with(kind))
        .unwrap_or_else(|| panic!("no {kind} rule among {outcomes:?}"))
}

fn results(outcomes: &[v1::RuleOutcome]) -> Vec<(String, R)> {
    outcomes
        .iter()
        .map(|o| {
            let kind = o.rule.split('(').next().unwrap_or_default().to_owned();
            (kind, o.result())
        })
        .collect()
}

fn observed(outcome: &v1::RuleOutcome) -> &str {
    outcome.observed.as_deref().unwrap_or_default()
}

fn all_pass(outcomes: &[v1::RuleOutcome]) -> bool {
    !outcomes.is_empty() && outcomes.iter().all(|o| o.result() == R::Pass)
}

fn has_change(
    changes: &[v1::PolicyChange],
    kind: v1::ChangeKind,
    subject: Option<&str>,
    field: Option<&str>,
    after: Option<&str>,
) -> bool {
    changes.iter().any(|c| {
        c.kind() == kind
            && c.subject.as_deref() == subject
            && c.field.as_deref() == field
            && c.after.as_deref() == after
    })
}

fn seconds(at: &Option<prost_types::Timestamp>) -> Option<i64> {
    at.as_ref().map(|t| t.seconds)
}

/// Stored times keep milliseconds.
fn millis(at: &Option<prost_types::Timestamp>) -> Option<i64> {
    at.as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

// ---------------------------------------------------------------------------------------------
// Cancellation, coverage reduction and restoration (both vendors)

/// A lender watches the financed car. Each change of standing is one event with every rule's
/// outcome; changes that leave the standing as it was emit nothing.
async fn lender_hears_once_per_change_of_standing(vendor: Vendor) {
    let h = Harness::start(vendor).await;
    let fixture = vendor.fixture();
    assert!(h.put(lender_set("lender-auto", vendor)).await.created);
    let linked = h.link("user-1", Some("lender-auto")).await;
    let link_id = &linked.link_id;

    // The first check, on the link's first data: met, every rule passing, the link says so.
    let events = link_events(&h.client, link_id).await;
    assert_eq!(standings(&events), [K::PolicyRequirementsMet]);
    let (_, name, outcomes) = last_standing(&events);
    assert_eq!(name, "Lender auto");
    assert_eq!(outcomes.len(), 5);
    assert!(all_pass(&outcomes), "{outcomes:?}");
    let link = get_link(&h.client, link_id).await;
    assert_eq!(link.requirement_set_id.as_deref(), Some("lender-auto"));
    assert_eq!(link.requirements_status(), Status::Met);
    assert!(link.requirements_evaluated_at.is_some());

    // A change no rule reads is checked, and the standing holds: no event.
    let events = h
        .carrier_changes(&linked, CarrierChange::Unrelated { step: 1 })
        .await;
    assert_eq!(standings(&events), [K::PolicyRequirementsMet]);

    // The carrier cancels the policy: a status change, and the car is no longer covered
    // although another policy of the household is still in force.
    let events = h.carrier_changes(&linked, CarrierChange::Cancel).await;
    let updated = last_policy_update(&events);
    assert_eq!(updated.policy_external_id, linked.policy_id);
    assert!(
        updated
            .changes
            .iter()
            .any(|c| c.kind() == v1::ChangeKind::StatusChanged
                && c.field.as_deref() == Some("status")
                && c.before.as_deref() == Some("active")
                && c.after.as_deref() == Some(fixture.cancelled)),
        "{:?}",
        updated.changes
    );
    assert_eq!(
        standings(&events),
        [K::PolicyRequirementsMet, K::PolicyRequirementsUnmet]
    );
    let (_, name, outcomes) = last_standing(&events);
    assert_eq!(name, "Lender auto");
    assert_eq!(outcomes.len(), 5, "every rule's outcome: {outcomes:?}");
    assert_eq!(outcome(&outcomes, "policy_active").result(), R::Pass);
    let car = outcome(&outcomes, "vin_covered");
    assert_eq!(car.result(), R::Fail, "{car:?}");
    let cancelled = format!("{}: status {}", linked.policy_id, fixture.cancelled);
    assert!(observed(car).contains(&cancelled), "{car:?}");
    let link = get_link(&h.client, link_id).await;
    assert_eq!(link.requirements_status(), Status::Unmet);

    // Reinstated: met again.
    let events = h.carrier_changes(&linked, CarrierChange::Reinstate).await;
    assert_eq!(
        standings(&events)[2..],
        [K::PolicyRequirementsMet],
        "{:?}",
        standings(&events)
    );
    assert!(all_pass(&last_standing(&events).2));

    // Collision dropped on the car and bodily injury lowered to $25,000 / $50,000.
    let events = h
        .carrier_changes(&linked, CarrierChange::ReduceCoverage)
        .await;
    let changes = last_policy_update(&events).changes;
    let collision = format!("collision@{}", linked.vehicle_id);
    assert!(
        has_change(
            &changes,
            v1::ChangeKind::CoverageRemoved,
            Some(&collision),
            None,
            None
        ),
        "{changes:?}"
    );
    let bodily_injury = changes
        .iter()
        .find(|c| {
            c.kind() == v1::ChangeKind::CoverageLimitChanged
                && c.subject
                    .as_deref()
                    .is_some_and(|s| s.starts_with("bodily_injury"))
                && c.field.as_deref() == Some("limit_per_person_cents")
        })
        .unwrap_or_else(|| panic!("no bodily-injury limit change in {changes:?}"));
    assert_eq!(
        (
            bodily_injury.before.as_deref(),
            bodily_injury.after.as_deref()
        ),
        (
            Some(match vendor {
                Vendor::Axle => "25000000",
                Vendor::Canopy => "10000000",
            }),
            Some("2500000")
        )
    );
    assert_eq!(
        standings(&events)[3..],
        [K::PolicyRequirementsUnmet],
        "{:?}",
        standings(&events)
    );
    let (_, _, outcomes) = last_standing(&events);
    assert_eq!(
        results(&outcomes),
        [
            ("policy_active".to_owned(), R::Pass),
            ("vin_covered".to_owned(), R::Pass),
            ("min_bodily_injury".to_owned(), R::Fail),
            ("comprehensive_and_collision".to_owned(), R::Fail),
            ("interested_party_named".to_owned(), R::Pass),
        ]
    );
    let liability = outcome(&outcomes, "min_bodily_injury");
    assert!(
        observed(liability).contains("bodily_injury 2500000/5000000 cents"),
        "{liability:?}"
    );
    let physical_damage = outcome(&outcomes, "comprehensive_and_collision");
    assert!(
        observed(physical_damage).contains("no collision"),
        "{physical_damage:?}"
    );

    // Another unrelated change while unmet: still one unmet event.
    let events = h
        .carrier_changes(&linked, CarrierChange::Unrelated { step: 2 })
        .await;
    assert_eq!(standings(&events).len(), 4, "{:?}", standings(&events));

    // Coverage restored: met.
    let events = h
        .carrier_changes(&linked, CarrierChange::RestoreCoverage)
        .await;
    let changes = last_policy_update(&events).changes;
    assert!(
        has_change(
            &changes,
            v1::ChangeKind::CoverageAdded,
            Some(&collision),
            None,
            None
        ),
        "{changes:?}"
    );
    assert_eq!(
        standings(&events),
        [
            K::PolicyRequirementsMet,
            K::PolicyRequirementsUnmet,
            K::PolicyRequirementsMet,
            K::PolicyRequirementsUnmet,
            K::PolicyRequirementsMet,
        ]
    );
    let (_, name, outcomes) = last_standing(&events);
    assert_eq!(name, "Lender auto");
    assert!(all_pass(&outcomes), "{outcomes:?}");
    let link = get_link(&h.client, link_id).await;
    assert_eq!(link.requirements_status(), Status::Met);

    // A refresh with nothing new says nothing about the standing either.
    let events = h.refresh_without_change(&linked).await;
    assert_eq!(standings(&events).len(), 5);
    h.stop().await;
}

#[tokio::test]
async fn axle_cancellation_and_coverage_reduction_are_unmet_and_restoring_coverage_is_met() {
    lender_hears_once_per_change_of_standing(Vendor::Axle).await;
}

#[tokio::test]
async fn canopy_cancellation_and_coverage_reduction_are_unmet_and_restoring_coverage_is_met() {
    lender_hears_once_per_change_of_standing(Vendor::Canopy).await;
}

// ---------------------------------------------------------------------------------------------
// Missing data (both vendors)

/// The vendor stops reporting the financed car's coverages: the coverage rules cannot be
/// decided. They are UNKNOWN, never a pass, and the set is not met.
async fn a_rule_without_its_data_is_unknown(vendor: Vendor) {
    let h = Harness::start(vendor).await;
    let fixture = vendor.fixture();
    h.put(set(
        "car-cover",
        "Car cover",
        vec![
            vin_covered(fixture.vin),
            min_bodily_injury(10_000_000, 30_000_000),
            comprehensive_and_collision(100_000),
        ],
    ))
    .await;
    let linked = h.link("user-1", Some("car-cover")).await;
    let evaluation = h.evaluate(&linked.link_id).await.expect("EvaluateLink");
    assert_eq!(evaluation.status(), Status::Met, "{evaluation:?}");

    let events = h
        .carrier_changes(&linked, CarrierChange::DropCoveragesOfFinancedCar)
        .await;
    let changes = last_policy_update(&events).changes;
    assert!(
        changes
            .iter()
            .any(|c| c.kind() == v1::ChangeKind::CoverageRemoved),
        "{changes:?}"
    );
    // Unknown is not met: the caller hears it, with no rule failing.
    assert_eq!(
        standings(&events),
        [K::PolicyRequirementsMet, K::PolicyRequirementsUnmet]
    );
    let (_, _, outcomes) = last_standing(&events);
    let expected = [
        ("vin_covered".to_owned(), R::Pass),
        ("min_bodily_injury".to_owned(), R::Unknown),
        ("comprehensive_and_collision".to_owned(), R::Unknown),
    ];
    assert_eq!(results(&outcomes), expected);
    for kind in ["min_bodily_injury", "comprehensive_and_collision"] {
        let unknown = outcome(&outcomes, kind);
        assert!(
            observed(unknown).contains("no coverages reported"),
            "{unknown:?}"
        );
    }

    let evaluation = h.evaluate(&linked.link_id).await.expect("EvaluateLink");
    assert_eq!(evaluation.requirement_set_id, "car-cover");
    assert_eq!(evaluation.status(), Status::Unknown);
    assert_eq!(results(&evaluation.outcomes), expected);
    assert!(evaluation.evaluated_at.is_some());
    let link = get_link(&h.client, &linked.link_id).await;
    assert_eq!(link.requirements_status(), Status::Unknown);
    // Checking again on demand found the same standing: nothing new to tell.
    let events = link_events(&h.client, &linked.link_id).await;
    assert_eq!(standings(&events).len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn axle_a_rule_without_its_data_is_unknown_never_a_pass() {
    a_rule_without_its_data_is_unknown(Vendor::Axle).await;
}

#[tokio::test]
async fn canopy_a_rule_without_its_data_is_unknown_never_a_pass() {
    a_rule_without_its_data_is_unknown(Vendor::Canopy).await;
}

// ---------------------------------------------------------------------------------------------
// Limits as each vendor states them

/// Axle, Coverages (docs.axle.insure/api-reference/policies/coverages), Auto Policy Coverage
/// Types: a combined single limit "will be set as limitPerAccident for both Bodily Injury and
/// Property Damage coverages", and "If there is only a single limit returned, the limit will be
/// recorded as limitPerAccident". The sandbox's F-150 policy is written so: the CSL coverwatch
/// reads from it is inferred, and a bodily-injury minimum it would meet as a CSL is UNKNOWN,
/// while property damage, stated outright, passes.
#[tokio::test]
async fn axle_an_inferred_combined_single_limit_is_unknown_not_met() {
    let h = Harness::start(Vendor::Axle).await;
    h.put(set(
        "csl-truck",
        "CSL truck",
        vec![
            vin_covered("1FTEW1EF0FKD00003"),
            min_bodily_injury(10_000_000, 30_000_000),
            rule(Kind::MinPropertyDamage(v1::MinPropertyDamageRule {
                per_accident_cents: 30_000_000,
            })),
        ],
    ))
    .await;
    let linked = h.link("user-1", Some("csl-truck")).await;
    let truck = list_policies(&h.client, &linked.link_id)
        .await
        .into_iter()
        .find(|p| p.policy_number.as_deref() == Some("AUTO-100-2002"))
        .expect("the CSL policy");
    let csl = truck
        .coverages
        .iter()
        .find(|c| c.code() == v1::CoverageCode::CombinedSingleLimit)
        .expect("an inferred CSL");
    assert!(csl.inferred);
    assert_eq!(csl.vendor_code, "BI+PD");
    assert_eq!(csl.limit_per_accident_cents, Some(30_000_000));

    let evaluation = h.evaluate(&linked.link_id).await.expect("EvaluateLink");
    assert_eq!(evaluation.status(), Status::Unknown, "{evaluation:?}");
    assert_eq!(
        results(&evaluation.outcomes),
        [
            ("vin_covered".to_owned(), R::Pass),
            ("min_bodily_injury".to_owned(), R::Unknown),
            ("min_property_damage".to_owned(), R::Pass),
        ]
    );
    let bi = outcome(&evaluation.outcomes, "min_bodily_injury");
    assert!(
        observed(bi).contains("combined_single_limit (inferred) 30000000 cents"),
        "{bi:?}"
    );
    h.stop().await;
}

fn coverage_rule(code: v1::CoverageCode, per_person: i64, per_accident: i64) -> v1::Rule {
    rule(Kind::Coverage(v1::CoverageRule {
        code: code as i32,
        min_per_person_cents: Some(per_person),
        min_per_accident_cents: Some(per_accident),
        ..Default::default()
    }))
}

/// Every normalized code can be asked for, not only those with a rule of their own. Axle's
/// Coverage `code` options include `UIMBI` (docs.axle.insure/api-reference/_snippets/coverage);
/// the sandbox's `username` policy has it at $100,000 / $300,000. Canopy's `user_good` Camry has
/// UNINSURED_MOTORIST_BODILY_INJURY_LIABILITY at 5,000,000 / 10,000,000 cents, and personal
/// injury protection stated unlimited (`per_person_unlimited`, `per_incident_unlimited`).
async fn a_coverage_rule_reads_any_normalized_code(vendor: Vendor) {
    let h = Harness::start(vendor).await;
    let fixture = vendor.fixture();
    let (code, have_person, have_accident) = match vendor {
        Vendor::Axle => (
            v1::CoverageCode::UnderinsuredMotoristBodilyInjury,
            10_000_000,
            30_000_000,
        ),
        Vendor::Canopy => (
            v1::CoverageCode::UninsuredMotoristBodilyInjury,
            5_000_000,
            10_000_000,
        ),
    };
    let mut met_rules = vec![
        vin_covered(fixture.vin),
        coverage_rule(code, have_person, have_accident),
    ];
    if vendor == Vendor::Canopy {
        met_rules.push(coverage_rule(
            v1::CoverageCode::PersonalInjuryProtection,
            1_000_000_000,
            1_000_000_000,
        ));
    }
    h.put(set("motorists", "Motorists", met_rules)).await;
    h.put(set(
        "motorists-high",
        "Motorists, higher",
        vec![
            vin_covered(fixture.vin),
            coverage_rule(code, have_person * 2, have_accident * 2),
        ],
    ))
    .await;
    let linked = h.link("user-1", Some("motorists")).await;
    let evaluation = h.evaluate(&linked.link_id).await.expect("EvaluateLink");
    assert_eq!(evaluation.status(), Status::Met, "{evaluation:?}");
    assert!(all_pass(&evaluation.outcomes), "{evaluation:?}");

    h.attach(&linked.link_id, Some("motorists-high"))
        .await
        .expect("AttachRequirementSet");
    let evaluation = h.evaluate(&linked.link_id).await.expect("EvaluateLink");
    assert_eq!(evaluation.status(), Status::Unmet, "{evaluation:?}");
    let coverage = outcome(&evaluation.outcomes, "coverage");
    assert_eq!(coverage.result(), R::Fail, "{coverage:?}");
    assert!(
        observed(coverage).contains(&format!("{have_person}/{have_accident} cents")),
        "{coverage:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn axle_a_coverage_rule_reads_underinsured_motorists() {
    a_coverage_rule_reads_any_normalized_code(Vendor::Axle).await;
}

#[tokio::test]
async fn canopy_a_coverage_rule_reads_uninsured_motorists_and_unlimited_pip() {
    a_coverage_rule_reads_any_normalized_code(Vendor::Canopy).await;
}

/// Axle types a third party "lienholder", "lessor" or "interest"; "Policy.thirdParties.type has
/// a default value of interest. If you do not find a thirdParty of type lienholder or lessor on
/// the policy, the data source may not have specified this classification" (docs.axle.insure,
/// changelog 2023-05-24). The sandbox's home lender is such an `interest`: a mortgagee rule
/// naming it is UNKNOWN (it may be the mortgagee; it is not known to be), never a pass on a
/// guess and never a fail that would call a good policy bad. Axle's own home coverage codes
/// (its Coverage object documents only auto ones) can be asked for as the vendor's code.
#[tokio::test]
async fn axle_a_home_lender_typed_interest_is_unknown_to_a_mortgagee_rule() {
    let h = Harness::start(Vendor::Axle).await;
    h.put(set(
        "home-lender",
        "Home lender",
        vec![
            rule(Kind::InterestedPartyNamed(v1::InterestedPartyNamedRule {
                kind: v1::PartyKind::Mortgagee as i32,
                name: "sandbox home lending".into(),
            })),
            rule(Kind::Coverage(v1::CoverageRule {
                code: v1::CoverageCode::Other as i32,
                other_code: Some("DWELL".into()),
                min_per_accident_cents: Some(30_000_000),
                max_deductible_cents: Some(100_000),
                ..Default::default()
            })),
        ],
    ))
    .await;
    let started = h
        .start_link("user-home-owner", Some("home-lender"))
        .await
        .expect("StartLink");
    let link_id = started.link.expect("a link").id;
    let landing = h.browser.get(&started.session_url).await;
    let login = h
        .browser
        .submit(&landing, "carrier-form", &[("carrier", "state-farm")])
        .await;
    let done = h
        .browser
        .submit(
            &login,
            "login-form",
            &[("username", "user-home"), ("password", "pass-home")],
        )
        .await;
    assert_eq!(done.element_text("status").as_deref(), Some("complete"));
    wait_for_event(&h.client, &link_id, K::LinkCompleted).await;
    h.worked_off().await;

    let evaluation = h.evaluate(&link_id).await.expect("EvaluateLink");
    assert_eq!(evaluation.status(), Status::Unknown, "{evaluation:?}");
    assert_eq!(
        results(&evaluation.outcomes),
        [
            ("interested_party_named".to_owned(), R::Unknown),
            ("coverage".to_owned(), R::Pass),
        ]
    );
    let party = outcome(&evaluation.outcomes, "interested_party_named");
    assert!(
        observed(party).contains("Sandbox Home Lending, whose role (a mortgagee?)"),
        "{party:?}"
    );
    h.stop().await;
}

/// Canopy's VehicleCoverage: "per_person_unlimited: If true, this coverage has an unlimited
/// per-person limit"; "per_incident_unlimited: If true, this coverage has an unlimited
/// per-incident limit" (canopy-openapi.json, components.schemas.VehicleCoverage). A minimum no
/// stated amount meets is met once the carrier makes the limit unlimited.
#[tokio::test]
async fn canopy_an_unlimited_limit_meets_any_minimum() {
    let h = Harness::start(Vendor::Canopy).await;
    let fixture = Vendor::Canopy.fixture();
    h.put(set(
        "huge-bi",
        "Huge bodily injury",
        vec![
            vin_covered(fixture.vin),
            min_bodily_injury(1_000_000_000, 2_000_000_000),
        ],
    ))
    .await;
    let linked = h.link("user-1", Some("huge-bi")).await;
    let evaluation = h.evaluate(&linked.link_id).await.expect("EvaluateLink");
    assert_eq!(evaluation.status(), Status::Unmet, "{evaluation:?}");

    let events = h
        .carrier_changes(&linked, CarrierChange::UnlimitedBodilyInjury)
        .await;
    let changes = last_policy_update(&events).changes;
    assert!(
        changes.iter().any(|c| {
            c.kind() == v1::ChangeKind::CoverageLimitChanged
                && c.field.as_deref() == Some("limit_per_accident_cents")
                && c.after.as_deref() == Some("unlimited")
        }),
        "{changes:?}"
    );
    assert_eq!(
        standings(&events),
        [K::PolicyRequirementsUnmet, K::PolicyRequirementsMet]
    );
    let (_, _, outcomes) = last_standing(&events);
    let bi = outcome(&outcomes, "min_bodily_injury");
    assert_eq!(bi.result(), R::Pass);
    assert!(
        observed(bi).contains("bodily_injury unlimited/unlimited cents"),
        "{bi:?}"
    );
    let policy = list_policies(&h.client, &linked.link_id)
        .await
        .into_iter()
        .find(|p| p.external_id == linked.policy_id)
        .expect("the auto policy");
    let bi = policy
        .coverages
        .iter()
        .find(|c| {
            c.code() == v1::CoverageCode::BodilyInjury
                && c.property_id.as_deref() == Some(linked.vehicle_id.as_str())
        })
        .expect("BI on the financed car");
    assert!(bi.limit_per_person_unlimited && bi.limit_per_accident_unlimited);
    assert_eq!(
        (bi.limit_per_person_cents, bi.limit_per_accident_cents),
        (None, None)
    );
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Policy history (both vendors)

/// Each version's number and changes, to show what a failed comparison was about.
fn versions(history: &[v1::PolicyVersion]) -> Vec<(i32, Vec<v1::PolicyChange>)> {
    history
        .iter()
        .map(|v| (v.version, v.changes.clone()))
        .collect()
}

/// Refreshes that found nothing new add no version; one that changed the policy adds exactly
/// one, with the changes policy.updated carried.
async fn history_grows_only_with_changes(vendor: Vendor) {
    let h = Harness::start(vendor).await;
    let linked = h.link("user-1", None).await;
    let first = h.history(&linked).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].version, 1);
    assert!(first[0].changes.is_empty());
    assert!(first[0].fetched_at.is_some());
    let current = coverwatch_tests::flows::get_policy(
        &h.client,
        &linked.link_id,
        &linked.policy_id,
        v1::PolicyTerm::Current,
    )
    .await;
    assert_eq!(first[0].policy, current.policy);

    for _ in 0..2 {
        let events = h.refresh_without_change(&linked).await;
        assert_eq!(count(&events, K::PolicyUpdated), 0, "{:?}", kinds(&events));
        let history = h.history(&linked).await;
        assert_eq!(
            versions(&history),
            versions(&first),
            "an unchanged refresh adds no version"
        );
        assert_eq!(history, first);
    }

    let events = h
        .carrier_changes(&linked, CarrierChange::Unrelated { step: 1 })
        .await;
    let updated = last_policy_update(&events);
    let expected = match vendor {
        Vendor::Axle => v1::PolicyChange {
            kind: v1::ChangeKind::PremiumChanged as i32,
            subject: None,
            field: Some("premium_cents".into()),
            before: Some("134250".into()),
            after: Some("144250".into()),
        },
        Vendor::Canopy => v1::PolicyChange {
            kind: v1::ChangeKind::CoverageDeductibleChanged as i32,
            subject: Some(format!("uninsured_motorist_property_damage@{CANOPY_CIVIC}")),
            field: Some("deductible_cents".into()),
            before: Some("25000".into()),
            after: Some("35000".into()),
        },
    };
    assert_eq!(updated.changes, [expected]);
    let history = h.history(&linked).await;
    assert_eq!(history.len(), 2, "one version for one change: {history:?}");
    assert_eq!(history[0], first[0], "older versions stay as they were");
    assert_eq!(history[1].version, 2);
    assert_eq!(history[1].changes, updated.changes);
    let current = coverwatch_tests::flows::get_policy(
        &h.client,
        &linked.link_id,
        &linked.policy_id,
        v1::PolicyTerm::Current,
    )
    .await;
    assert_eq!(history[1].policy, current.policy);

    // And nothing new after it either.
    h.refresh_without_change(&linked).await;
    let after = h.history(&linked).await;
    assert_eq!(versions(&after), versions(&history));
    assert_eq!(after, history);

    // A page at a time, oldest first.
    let history_page = |page_token: &str, after_version: i32| {
        #[allow(deprecated)] // after_version: released callers still send it
        let request = v1::GetPolicyHistoryRequest {
            link_id: linked.link_id.clone(),
            policy_id: linked.policy_id.clone(),
            term: v1::PolicyTerm::Unspecified as i32,
            page_size: 1,
            page_token: page_token.into(),
            after_version,
        };
        let mut client = h.client.clone();
        async move { client.get_policy_history(request).await }
    };
    let page = history_page("", 0)
        .await
        .expect("GetPolicyHistory")
        .into_inner();
    assert_eq!(page.versions, history[..1]);
    assert!(!page.next_page_token.is_empty(), "more versions follow");
    let second = history_page(&page.next_page_token, 0)
        .await
        .expect("the second page")
        .into_inner();
    assert_eq!(second.versions, history[1..2]);
    // Callers built against the released contract page with after_version and read
    // next_after_version; they get the same pages.
    #[allow(deprecated)]
    let released_next = page.next_after_version;
    assert_eq!(released_next, Some(1));
    let released_second = history_page("", 1)
        .await
        .expect("the second page by after_version")
        .into_inner();
    assert_eq!(released_second.versions, second.versions);
    let err = history_page("not-a-token", 0).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("page_token: "), "{err:?}");
    let err = history_page(&page.next_page_token, 1).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("after_version: "), "{err:?}");
    let err = h
        .client
        .clone()
        .get_policy_history(v1::GetPolicyHistoryRequest {
            link_id: linked.link_id.clone(),
            policy_id: "no-such-policy".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    h.stop().await;
}

#[tokio::test]
async fn axle_unchanged_refreshes_add_no_version_and_a_change_adds_one() {
    history_grows_only_with_changes(Vendor::Axle).await;
}

#[tokio::test]
async fn canopy_unchanged_refreshes_add_no_version_and_a_change_adds_one() {
    history_grows_only_with_changes(Vendor::Canopy).await;
}

// ---------------------------------------------------------------------------------------------
// Managing sets (RequirementsService)

#[tokio::test]
async fn an_unparseable_set_is_invalid_argument_naming_the_rule_and_nothing_is_stored() {
    let h = Harness::start(Vendor::Axle).await;
    let client = &h.requirements;
    let refused = |definition: Definition| async move {
        let err = put_definition(client, definition).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        err.message().to_owned()
    };
    let json_set = |rules: Value| {
        Definition::Json(json!({"id": "lender-auto", "name": "Lender", "rules": rules}).to_string())
    };

    // The JSON form.
    let message = refused(json_set(json!([
        {"rule": "policy_active"},
        {"rule": "min_bodily_injury", "per_person_cents": "lots", "per_accident_cents": 5_000_000}
    ])))
    .await;
    assert!(
        message.starts_with("json.rules[1].min_bodily_injury.per_person_cents: "),
        "{message}"
    );
    let message = refused(json_set(json!([
        {"rule": "policy_active"},
        {"rule": "min_bodily_injury", "per_person_cents": 2_500_000}
    ])))
    .await;
    assert_eq!(
        message,
        "json.rules[1].min_bodily_injury.per_accident_cents: is required"
    );
    let message = refused(json_set(json!([{"rule": "min_umbrella", "cents": 1}]))).await;
    assert!(
        message.starts_with("json.rules[0].rule: unknown rule kind `min_umbrella`"),
        "{message}"
    );
    let message = refused(json_set(json!([
        {"rule": "vin_covered", "vin": "NOT-A-VIN"}
    ])))
    .await;
    assert!(
        message.starts_with("json.rules[0].vin_covered.vin: "),
        "{message}"
    );
    let message = refused(Definition::Json("{\"id\": ".into())).await;
    assert!(message.starts_with("json: not valid JSON"), "{message}");

    // The typed form.
    let typed = |rules: Vec<v1::Rule>| Definition::Set(set("lender-auto", "Lender", rules));
    let message = refused(typed(vec![
        rule(Kind::PolicyActive(v1::PolicyActiveRule {})),
        vin_covered("SMTD44GN3HT812287"),
        rule(Kind::ExpiresAtLeastDaysAhead(
            v1::ExpiresAtLeastDaysAheadRule { days: 4000 },
        )),
    ]))
    .await;
    assert_eq!(
        message,
        "set.rules[2].expires_at_least_days_ahead.days: must be at most 3650"
    );
    let message = refused(typed(vec![
        rule(Kind::PolicyActive(v1::PolicyActiveRule {})),
        min_bodily_injury(5_000_000, 2_500_000),
    ]))
    .await;
    assert_eq!(
        message,
        "set.rules[1].min_bodily_injury.per_person_cents: must not exceed per_accident_cents"
    );
    let message = refused(typed(vec![
        rule(Kind::PolicyActive(v1::PolicyActiveRule {})),
        v1::Rule { rule: None },
    ]))
    .await;
    assert!(message.starts_with("set.rules[1]: "), "{message}");
    let message = refused(typed(vec![rule(Kind::InterestedPartyNamed(
        v1::InterestedPartyNamedRule {
            kind: v1::PartyKind::Unspecified as i32,
            name: "Acme Bank".into(),
        },
    ))]))
    .await;
    assert!(
        message.starts_with("set.rules[0].interested_party_named.kind: "),
        "{message}"
    );
    let err = h
        .requirements
        .clone()
        .put_requirement_set(v1::PutRequirementSetRequest { definition: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Nothing was stored.
    let err = get_set(client, "lender-auto").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(list_sets(client, 0, "").await.unwrap().sets.is_empty());

    // A refused replacement leaves the stored set as it was.
    let stored = h
        .put(lender_set("lender-auto", Vendor::Axle))
        .await
        .set
        .unwrap();
    refused(json_set(
        json!([{"rule": "min_property_damage", "per_accident_cents": 0}]),
    ))
    .await;
    assert_eq!(get_set(client, "lender-auto").await.unwrap(), stored);

    // The JSON form, when valid, is the same set as the typed one.
    let from_json = put_definition(
        client,
        Definition::Json(
            json!({"id": "from-json", "name": "Lender auto", "rules": [
                {"rule": "policy_active"},
                {"rule": "vin_covered", "vin": "SMTD44GN3HT812287"},
                {"rule": "min_bodily_injury", "per_person_cents": 10_000_000,
                 "per_accident_cents": 30_000_000},
                {"rule": "comprehensive_and_collision", "max_deductible_cents": 100_000},
                {"rule": "interested_party_named", "kind": "lienholder",
                 "name": "CAPITAL ONE AUTO-FINANCE."}
            ]})
            .to_string(),
        ),
    )
    .await
    .expect("a valid JSON set")
    .set
    .unwrap();
    assert_eq!(from_json.rules, stored.rules);
    h.stop().await;
}

#[tokio::test]
async fn a_set_attached_later_is_checked_at_once_and_on_demand() {
    let h = Harness::start(Vendor::Axle).await;
    let linked = h.link("user-1", None).await;
    let link_id = &linked.link_id;
    let link = get_link(&h.client, link_id).await;
    assert_eq!(link.requirement_set_id, None);
    assert_eq!(link.requirements_status(), Status::Unspecified);
    assert_eq!(link.requirements_evaluated_at, None);
    let err = h.evaluate(link_id).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "no set attached: {err:?}"
    );

    let put = h.put(lender_set("lender-auto", Vendor::Axle)).await;
    assert!(put.created);
    assert_eq!(put.links_evaluated, 0);

    // Attaching to a link with data checks it there and then, and tells the caller.
    let attached = h
        .attach(link_id, Some("lender-auto"))
        .await
        .expect("Attach");
    let evaluation = attached.evaluation.expect("an evaluation on attaching");
    assert_eq!(evaluation.requirement_set_id, "lender-auto");
    assert_eq!(evaluation.status(), Status::Met);
    assert_eq!(evaluation.outcomes.len(), 5);
    assert!(all_pass(&evaluation.outcomes), "{evaluation:?}");
    let car = outcome(&evaluation.outcomes, "vin_covered");
    assert!(observed(car).contains("SMTD44GN3HT812287"), "{car:?}");
    let link = attached.link.expect("the link");
    assert_eq!(link.requirement_set_id.as_deref(), Some("lender-auto"));
    assert_eq!(link.requirements_status(), Status::Met);
    let events = link_events(&h.client, link_id).await;
    assert_eq!(standings(&events), [K::PolicyRequirementsMet]);

    // On demand: the same standing, recorded, and no second event.
    let again = h.evaluate(link_id).await.expect("EvaluateLink");
    assert_eq!(again.status(), Status::Met);
    assert_eq!(again.outcomes, evaluation.outcomes);
    let link = get_link(&h.client, link_id).await;
    assert_eq!(
        millis(&link.requirements_evaluated_at),
        millis(&again.evaluated_at),
        "the link records the check"
    );
    assert_eq!(
        standings(&link_events(&h.client, link_id).await),
        [K::PolicyRequirementsMet]
    );

    // A link with no data yet: attached, checked when its data arrives.
    let pending = h.start_link("user-2", None).await.unwrap().link.unwrap().id;
    let attached = h
        .attach(&pending, Some("lender-auto"))
        .await
        .expect("Attach");
    assert!(attached.evaluation.is_none());
    assert_eq!(
        attached.link.unwrap().requirements_status(),
        Status::Unspecified
    );
    let err = h.evaluate(&pending).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "no data yet: {err:?}");

    // Unknown links and sets.
    let err = h.attach(link_id, Some("no-such-set")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = h
        .attach("lnk_00000000000000000000000000000000", Some("lender-auto"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = h.attach(link_id, Some("not a set id")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("requirement_set_id"), "{err:?}");

    // Detached: no set, nothing to evaluate.
    let detached = h.attach(link_id, None).await.expect("detach");
    assert!(detached.evaluation.is_none());
    assert_eq!(detached.link.unwrap().requirement_set_id, None);
    let err = h.evaluate(link_id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    h.stop().await;
}

#[tokio::test]
async fn replacing_a_set_checks_its_links_against_the_new_rules() {
    let h = Harness::start(Vendor::Axle).await;
    let first = h
        .put(lender_set("lender-auto", Vendor::Axle))
        .await
        .set
        .unwrap();
    let linked = h.link("user-1", Some("lender-auto")).await;
    assert_eq!(
        standings(&link_events(&h.client, &linked.link_id).await),
        [K::PolicyRequirementsMet]
    );

    // Stricter: $1,000,000 / $2,000,000 bodily injury, which the policy does not carry.
    let mut stricter = lender_set("lender-auto", Vendor::Axle);
    stricter.name = "Lender auto (2026)".into();
    stricter.rules[2] = min_bodily_injury(100_000_000, 200_000_000);
    let replaced = h.put(stricter.clone()).await;
    assert!(!replaced.created);
    assert_eq!(replaced.links_evaluated, 1);
    let stored = replaced.set.unwrap();
    assert_eq!(stored.rules, stricter.rules);
    assert_eq!(stored.created_at, first.created_at);
    assert!(seconds(&stored.updated_at) >= seconds(&first.updated_at));
    assert_eq!(
        get_set(&h.requirements, "lender-auto").await.unwrap(),
        stored
    );

    let events = link_events(&h.client, &linked.link_id).await;
    assert_eq!(
        standings(&events),
        [K::PolicyRequirementsMet, K::PolicyRequirementsUnmet]
    );
    let (_, name, outcomes) = last_standing(&events);
    assert_eq!(name, "Lender auto (2026)");
    let liability = outcome(&outcomes, "min_bodily_injury");
    assert_eq!(liability.result(), R::Fail);
    assert!(
        observed(liability).contains("bodily_injury 25000000/50000000 cents"),
        "{liability:?}"
    );
    let link = get_link(&h.client, &linked.link_id).await;
    assert_eq!(link.requirements_status(), Status::Unmet);
    h.stop().await;
}

#[tokio::test]
async fn a_set_attached_to_a_link_cannot_be_deleted_until_detached() {
    let h = Harness::start(Vendor::Axle).await;
    let client = &h.requirements;
    h.put(lender_set("lender-auto", Vendor::Axle)).await;
    let link_id = h
        .start_link("user-1", Some("lender-auto"))
        .await
        .expect("StartLink")
        .link
        .unwrap()
        .id;
    assert_eq!(
        get_link(&h.client, &link_id)
            .await
            .requirement_set_id
            .as_deref(),
        Some("lender-auto")
    );

    let err = delete_set(client, "lender-auto").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&link_id), "names the link: {err:?}");
    assert!(get_set(client, "lender-auto").await.is_ok(), "still there");

    h.attach(&link_id, None).await.expect("detach");
    assert!(delete_set(client, "lender-auto").await.unwrap());
    let err = get_set(client, "lender-auto").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Deleting again is a safe retry.
    assert!(!delete_set(client, "lender-auto").await.unwrap());
    let err = delete_set(client, "not a set id").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    h.stop().await;
}

#[tokio::test]
async fn sets_are_listed_by_id_a_page_at_a_time() {
    let h = Harness::start(Vendor::Axle).await;
    let client = &h.requirements;
    let ids = ["renters", "auto-b", "home", "auto-a", "fleet"];
    for id in ids {
        h.put(set(
            id,
            id,
            vec![rule(Kind::PolicyActive(v1::PolicyActiveRule {}))],
        ))
        .await;
    }
    let mut sorted = ids.map(str::to_owned).to_vec();
    sorted.sort();

    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = list_sets(client, 2, &page_token).await.expect("List");
        assert!(page.sets.len() <= 2);
        pages.push(page.sets.iter().map(|s| s.id.clone()).collect::<Vec<_>>());
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        assert!(pages.len() <= 4, "paging ends: {pages:?}");
    }
    assert_eq!(pages.concat(), sorted);
    assert_eq!(pages[0], ["auto-a", "auto-b"]);

    let all = list_sets(client, 0, "").await.unwrap();
    assert_eq!(
        all.sets.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        sorted
    );
    assert_eq!(all.next_page_token, "");
    // The field was released as `after_id`, holding a set id: such values still page.
    let page = list_sets(client, 10, "fleet").await.unwrap();
    assert_eq!(
        page.sets.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["home", "renters"]
    );
    let err = list_sets(client, 10, "not a token!").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("page_token: "), "{err:?}");
    let err = list_sets(client, -1, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("page_size"), "{err:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_tenant_cannot_see_or_attach_another_tenants_sets() {
    let h = Harness::start(Vendor::Axle).await;
    let a_sets = &h.requirements;
    let b_sets = h.server.requirements_client(TENANT_B).await;
    let b_client = h.server.client(TENANT_B).await;
    let a_set = h
        .put(lender_set("lender-auto", Vendor::Axle))
        .await
        .set
        .unwrap();

    let err = get_set(&b_sets, "lender-auto").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(list_sets(&b_sets, 0, "").await.unwrap().sets.is_empty());
    assert!(!delete_set(&b_sets, "lender-auto").await.unwrap());

    // Tenant B cannot attach A's set, at StartLink or later.
    let err = b_client
        .clone()
        .start_link(v1::StartLinkRequest {
            provider: v1::Provider::Axle as i32,
            user_id: "user-b".into(),
            requirement_set_id: Some("lender-auto".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let b_link = b_client
        .clone()
        .start_link(v1::StartLinkRequest {
            provider: v1::Provider::Axle as i32,
            user_id: "user-b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap()
        .id;
    let err = b_sets
        .clone()
        .attach_requirement_set(v1::AttachRequirementSetRequest {
            link_id: b_link.clone(),
            requirement_set_id: Some("lender-auto".into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // Nor can A attach its set to B's link.
    let err = h.attach(&b_link, Some("lender-auto")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // B's own set of the same id is B's alone.
    let b_set = put(
        &b_sets,
        set(
            "lender-auto",
            "B's lender",
            vec![rule(Kind::PolicyActive(v1::PolicyActiveRule {}))],
        ),
    )
    .await
    .unwrap();
    assert!(b_set.created);
    assert_eq!(get_set(a_sets, "lender-auto").await.unwrap(), a_set);
    assert_eq!(
        get_set(&b_sets, "lender-auto").await.unwrap().name,
        "B's lender"
    );
    h.stop().await;
}

#[tokio::test]
async fn start_link_with_an_unknown_set_is_not_found_and_creates_no_link() {
    let h = Harness::start(Vendor::Axle).await;
    let err = h
        .start_link("user-1", Some("no-such-set"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("no-such-set"), "{err:?}");
    let err = h
        .start_link("user-1", Some("not a set id"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("requirement_set_id"), "{err:?}");

    let links = h
        .client
        .clone()
        .list_links(v1::ListLinksRequest {
            user_id: Some("user-1".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .links;
    assert!(links.is_empty(), "{links:?}");
    // No vendor session was opened either.
    assert_eq!(h.axle().snapshot()["ignitions"], json!([]));
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Time alone

#[tokio::test]
async fn the_sweep_checks_links_again_as_expiration_comes_closer() {
    let h = Harness::start(Vendor::Axle).await;
    h.put(set(
        "sixty-days",
        "Sixty days ahead",
        vec![rule(Kind::ExpiresAtLeastDaysAhead(
            v1::ExpiresAtLeastDaysAheadRule { days: 60 },
        ))],
    ))
    .await;
    let linked = h.link("user-1", Some("sixty-days")).await;
    let events = link_events(&h.client, &linked.link_id).await;
    assert_eq!(standings(&events), [K::PolicyRequirementsMet]);

    // Ten days before the first of the two auto policies expires, neither runs sixty days more.
    let expiries: Vec<DateTime<Utc>> = list_policies(&h.client, &linked.link_id)
        .await
        .iter()
        .filter_map(|p| p.expiration_date.as_ref())
        .map(|t| DateTime::from_timestamp(t.seconds, 0).unwrap())
        .collect();
    let (first, last) = (
        *expiries.iter().min().expect("expiration dates"),
        *expiries.iter().max().unwrap(),
    );
    assert!(last - first < TimeDelta::days(50), "{expiries:?}");
    let then = first - TimeDelta::days(10);
    let engine = &h.server.app.engine;
    assert_eq!(engine.sweep(then).await.unwrap().evaluated, 1);
    let events = link_events(&h.client, &linked.link_id).await;
    assert_eq!(
        standings(&events),
        [K::PolicyRequirementsMet, K::PolicyRequirementsUnmet]
    );
    let (_, _, outcomes) = last_standing(&events);
    let rule = outcome(&outcomes, "expires_at_least_days_ahead");
    assert_eq!(rule.result(), R::Fail, "{rule:?}");
    assert!(
        observed(rule).contains(&format!("expires {}, 10 days ahead", first.date_naive())),
        "{rule:?}"
    );
    assert_eq!(
        get_link(&h.client, &linked.link_id)
            .await
            .requirements_status(),
        Status::Unmet
    );
    // Checked again later still: the standing holds, nothing new.
    engine.sweep(then + TimeDelta::hours(2)).await.unwrap();
    let events = link_events(&h.client, &linked.link_id).await;
    assert_eq!(standings(&events).len(), 2);
    h.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The vendors' own verdicts next to ours

fn axle_verdict(check: &v1::VendorCheck) -> &v1::AxleValidation {
    assert_eq!(check.provider_id, "axle", "{check:?}");
    match &check.verdict {
        Some(v1::vendor_check::Verdict::Axle(axle)) => axle,
        other => panic!("expected Axle's validation, got {other:?} ({check:?})"),
    }
}

fn canopy_verdict(check: &v1::VendorCheck) -> &v1::CanopyPolicyCheck {
    assert_eq!(check.provider_id, "canopy", "{check:?}");
    match &check.verdict {
        Some(v1::vendor_check::Verdict::Canopy(canopy)) => canopy,
        other => panic!("expected Canopy's policy check, got {other:?} ({check:?})"),
    }
}

#[tokio::test]
async fn axle_validation_answers_next_to_our_evaluation_and_an_axle_failure_leaves_ours() {
    use v1::AxleValidationStatus as A;
    let h = Harness::start(Vendor::Axle).await;
    h.put(lender_set("lender-auto", Vendor::Axle)).await;
    let linked = h.link("user-1", Some("lender-auto")).await;

    let (ours, vendor) = h.evaluate_with_vendor(&linked.link_id).await;
    assert_eq!(ours.status(), Status::Met);
    assert_eq!(vendor.provider(), v1::Provider::Axle);
    assert_eq!(vendor.unavailable_reason, None);
    let axle = axle_verdict(&vendor);
    // Validate Policy's `rule` takes only `policy-active` and `rental-covered-for-collision`
    // (docs.axle.insure/api-reference/policies/validate-policy): of the lender's five rules,
    // only policy_active has an equivalent, and the answer says which were not sent.
    assert_eq!(
        axle.rules_sent,
        [v1::AxleRuleSent {
            requirement: "policy_active".into(),
            axle_rule: "policy-active".into(),
        }]
    );
    assert_eq!(axle.rules_not_sent.len(), 4, "{:?}", axle.rules_not_sent);
    assert!(axle.rules_not_sent.iter().all(|r| !r.reason.is_empty()));
    let policies = list_policies(&h.client, &linked.link_id).await;
    assert_eq!(axle.policies.len(), policies.len());
    let watched = |axle: &v1::AxleValidation| {
        axle.policies
            .iter()
            .find(|p| p.policy_id == linked.policy_id)
            .cloned()
            .expect("Axle's answer for the watched policy")
    };
    // "pass | The policy is currently active" (docs.axle.insure/guides/policy-validation).
    let answer = watched(axle);
    assert_eq!(answer.overall(), A::Pass);
    assert_eq!(
        answer.rules,
        [v1::AxleRuleStatus {
            rule: "policy-active".into(),
            status: A::Pass as i32,
        }]
    );

    // The carrier cancels: both verdicts turn, each in its own words ("fail | The policy is
    // not currently active"; overall "fail means that one or more specified Rules evaluated to
    // a status of fail").
    h.carrier_changes(&linked, CarrierChange::Cancel).await;
    let (ours, vendor) = h.evaluate_with_vendor(&linked.link_id).await;
    assert_eq!(ours.status(), Status::Unmet);
    let answer = watched(axle_verdict(&vendor));
    assert_eq!(answer.overall(), A::Fail);
    assert_eq!(answer.rules[0].status(), A::Fail);

    // Axle down: no verdict, with the reason, and our evaluation answers all the same.
    let faults = sandbox(&h.server).faults();
    let outage = faults.add(FaultRule::new(
        FaultTarget::endpoint("axle.policies.validate"),
        FaultEffect::status(503),
    ));
    let (ours, vendor) = h.evaluate_with_vendor(&linked.link_id).await;
    faults.remove(outage);
    assert_eq!(ours.status(), Status::Unmet);
    assert_eq!(ours.outcomes.len(), 5);
    assert_eq!(vendor.provider(), v1::Provider::Axle);
    assert_eq!(vendor.verdict, None);
    let reason = vendor.unavailable_reason.expect("why there is no verdict");
    assert!(reason.contains("503"), "{reason}");
    h.stop().await;
}

#[tokio::test]
async fn canopy_policy_check_of_the_stored_pull_answers_next_to_our_evaluation() {
    use v1::CanopyPolicyCheckStatus as C;
    let h = Harness::start(Vendor::Canopy).await;
    h.put(lender_set("lender-auto", Vendor::Canopy)).await;
    let linked = h.link("user-1", Some("lender-auto")).await;

    // No Policy Check configured: the pull's `policy_check_status` is `NONE` and its policies'
    // `policy_check` null (canopy-openapi.json, `Pull.policy_check_status`, `Policy.policy_check`).
    let (ours, vendor) = h.evaluate_with_vendor(&linked.link_id).await;
    assert_eq!(ours.status(), Status::Met);
    assert_eq!(vendor.provider(), v1::Provider::Canopy);
    assert_eq!(vendor.unavailable_reason, None);
    let canopy = canopy_verdict(&vendor);
    assert_eq!(canopy.pull_id.as_deref(), Some(linked.pull_id.as_str()));
    assert_eq!(canopy.pull_status(), C::None);
    let policies = list_policies(&h.client, &linked.link_id).await;
    assert_eq!(canopy.policies.len(), policies.len());
    assert!(
        canopy.policies.iter().all(|p| p.status() == C::Unspecified),
        "{canopy:?}"
    );

    // The team's Policy Check finds the auto policy NOT_COMPLIANT on the next submission, the
    // one that brings the cancellation. Canopy's verdict and ours turn together.
    h.canopy()
        .apply(Scenario::new(
            ScenarioTarget::pull(&linked.pull_id).policy_number(CANOPY_AUTO_POLICY),
            ScenarioAction::SetPolicyCheck {
                status: Some("NOT_COMPLIANT".into()),
            },
        ))
        .expect("the sandbox takes the policy check");
    h.carrier_changes(&linked, CarrierChange::Cancel).await;
    let (ours, vendor) = h.evaluate_with_vendor(&linked.link_id).await;
    assert_eq!(ours.status(), Status::Unmet);
    let canopy = canopy_verdict(&vendor);
    assert_ne!(canopy.pull_id.as_deref(), Some(linked.pull_id.as_str()));
    assert_eq!(canopy.pull_status(), C::NotCompliant);
    let auto = canopy
        .policies
        .iter()
        .find(|p| p.policy_id == linked.policy_id)
        .expect("the auto policy's check");
    assert_eq!(auto.status(), C::NotCompliant);
    h.stop().await;
}

#[tokio::test]
async fn canopy_policy_check_seen_even_when_nothing_we_normalize_changed() {
    use v1::CanopyPolicyCheckStatus as C;
    let h = Harness::start(Vendor::Canopy).await;
    h.put(lender_set("lender-auto", Vendor::Canopy)).await;
    let linked = h.link("user-1", Some("lender-auto")).await;
    // A check that turns COMPLIANT without any other change: the refresh stores no new policy
    // version, yet the verdict read from the stored pull is the latest one.
    h.canopy()
        .apply(
            Scenario::new(
                ScenarioTarget::pull(&linked.pull_id).policy_number(CANOPY_AUTO_POLICY),
                ScenarioAction::SetPolicyCheck {
                    status: Some("COMPLIANT".into()),
                },
            )
            .and_refresh(),
        )
        .expect("the sandbox takes the policy check");
    let vendor = eventually("Canopy's verdict of the new pull", DEADLINE, || async {
        let (_, vendor) = h.evaluate_with_vendor(&linked.link_id).await;
        (canopy_verdict(&vendor).pull_status() == C::Compliant).then_some(vendor)
    })
    .await;
    let canopy = canopy_verdict(&vendor);
    let auto = canopy
        .policies
        .iter()
        .find(|p| p.policy_id == linked.policy_id)
        .expect("the auto policy's check");
    assert_eq!(auto.status(), C::Compliant);
    assert_eq!(h.history(&linked).await.len(), 1, "no new policy version");
    h.stop().await;
}
