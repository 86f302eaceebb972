//! Canopy flows end to end: the hosted widget driven by plain form posts, the webhooks each step
//! sends (envelope, order, `sequence`, signature checked by an independent HMAC), monitoring
//! refreshes and their scenarios, and the reconnect flows.

mod canopy_support;

use canopy_support::{Env, Received, SECRET, WAIT, verify_signature};
use coverwatch_sandbox::canopy::{
    ConnectRequest, CoveragePatch, Scenario, ScenarioAction, ScenarioTarget, fixtures,
};
use serde_json::{Value, json};

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The `data-pull-status` of a hosted page.
fn page_status(html: &str) -> Option<String> {
    let i = html.find("data-pull-status=\"")? + "data-pull-status=\"".len();
    Some(html[i..].split('"').next()?.to_owned())
}

/// The value of a hidden/plain input `name` in a page.
fn input_value(html: &str, name: &str) -> Option<String> {
    let i = html.find(&format!("name=\"{name}\" value=\""))?
        + format!("name=\"{name}\" value=\"").len();
    let raw = html[i..].split('"').next()?;
    Some(
        raw.replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'"),
    )
}

struct Browser<'a> {
    env: &'a Env,
}

impl Browser<'_> {
    async fn get(&self, url: &str) -> (u16, String, Option<String>) {
        let r = self.env.http.get(url).send().await.unwrap();
        let loc = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        (r.status().as_u16(), r.text().await.unwrap(), loc)
    }

    async fn post(&self, url: &str, pairs: &[(&str, &str)]) -> (u16, String, Option<String>) {
        let r = self
            .env
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(pairs))
            .send()
            .await
            .unwrap();
        let loc = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        (r.status().as_u16(), r.text().await.unwrap(), loc)
    }
}

fn pull_id_of(status_url: &str) -> String {
    status_url
        .split("/pull/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned()
}

fn token_of(status_url: &str) -> String {
    url::Url::parse(status_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .unwrap()
        .1
        .into_owned()
}

const ENVELOPE_KEYS: [&str; 10] = [
    "widget_id",
    "team_id",
    "pull_id",
    "status",
    "meta_data",
    "event_type",
    "account_identifier",
    "is_monitored",
    "monitoring",
    "data",
];

fn assert_envelope(r: &Received) {
    let v = r.json();
    let obj = v.as_object().unwrap();
    for k in ENVELOPE_KEYS {
        assert!(obj.contains_key(k), "{k} missing in {v}");
    }
    let extra: Vec<_> = obj
        .keys()
        .filter(|k| !ENVELOPE_KEYS.contains(&k.as_str()) && *k != "sequence")
        .collect();
    assert!(extra.is_empty(), "unexpected keys {extra:?}");
    assert!(v["meta_data"].is_object());
    assert_eq!(
        v["sequence"].is_u64(),
        v["event_type"] == "AUTH_STATUS",
        "sequence only on AUTH_STATUS: {v}"
    );
    let sig = r.signature().expect("canopy-signature header");
    assert!(sig.starts_with("t=") && sig.contains(",s="), "{sig}");
    assert!(
        verify_signature(SECRET, &sig, &r.body),
        "signature must verify: {sig}"
    );
    assert!(!verify_signature("another-secret", &sig, &r.body));
}

/// Canopy documents meta data on a link URL as `ccmeta-KEY=VALUE` parameters, values as strings,
/// and no other way for a plain link URL: "Adding metadata to a pull",
/// https://docs.usecanopy.com/reference/adding-metadata-to-a-pull — "adding
/// `?ccmeta-user_id=5&ccmeta-referrer=John` will add the following metadata to your pull's
/// meta_data field: `{"user_id": "5", "referrer": "John"}`".
#[tokio::test]
async fn hosted_widget_good_login_with_meta_data() {
    let env = Env::start().await;
    let b = Browser { env: &env };
    let sim = env.sandbox.canopy();
    let documented = json!({"user_id": "5", "referrer": "John"});
    // What Canopy does not document on a link URL is ignored: a `meta_data=` JSON parameter and
    // `ccmeta_` with an underscore.
    let link = format!(
        "{}?ccmeta-user_id=5&ccmeta-referrer=John&meta_data={}&ccmeta_loan=L-1",
        sim.widget_url(),
        url::form_urlencoded::byte_serialize(br#"{"link_id":"lnk_1"}"#).collect::<String>()
    );

    let (status, html, _) = b.get(&link).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("name=\"consent\""),
        "consent asked without a consent token"
    );
    let meta = input_value(&html, "meta_data").unwrap();
    assert_eq!(serde_json::from_str::<Value>(&meta).unwrap(), documented);
    // The simulator's own link builder writes the same documented parameters.
    let (_, built, _) = b.get(&sim.link_url(&documented)).await;
    assert_eq!(
        serde_json::from_str::<Value>(&input_value(&built, "meta_data").unwrap()).unwrap(),
        documented
    );
    let login = format!("{}/login", sim.widget_url());

    // Without consent the form comes back.
    let fields = [
        ("meta_data", meta.as_str()),
        ("insurerName", "statefarm"),
        ("username", "user_good"),
        ("password", "pass_good"),
    ];
    let (status, html, _) = b.post(&login, &fields).await;
    assert_eq!(status, 400);
    assert!(html.contains("agree"));

    let mut with_consent = fields.to_vec();
    with_consent.push(("consent", "yes"));
    let (status, _, location) = b.post(&login, &with_consent).await;
    assert_eq!(status, 303);
    let status_url = location.unwrap();
    let pull_id = pull_id_of(&status_url);
    sim.wait_for_status(&pull_id, "SUCCESS", WAIT)
        .await
        .unwrap();
    let (status, html, _) = b.get(&status_url).await;
    assert_eq!(status, 200);
    assert_eq!(page_status(&html).as_deref(), Some("SUCCESS"));
    assert!(html.contains("AUTO AU-5550001"));

    let (_, body) = env.get(&env.team(&format!("/pulls/{pull_id}"))).await;
    assert_eq!(body["pull"]["meta_data"], documented);

    // Webhooks, in order: AUTH_STATUS(SUCCESS, seq 1), POLICY_AVAILABLE ×2, POLICIES_AVAILABLE, COMPLETE.
    env.hooks.wait_event("COMPLETE", Some(&pull_id)).await;
    let got: Vec<Received> = env
        .hooks
        .all()
        .into_iter()
        .filter(|r| r.json()["pull_id"] == pull_id.as_str())
        .collect();
    let types: Vec<String> = got.iter().map(Received::event_type).collect();
    assert_eq!(
        types,
        [
            "AUTH_STATUS",
            "POLICY_AVAILABLE",
            "POLICY_AVAILABLE",
            "POLICIES_AVAILABLE",
            "COMPLETE"
        ]
    );
    for r in &got {
        assert_envelope(r);
        let v = r.json();
        assert_eq!(v["meta_data"], documented);
        assert_eq!(v["is_monitored"], false);
        assert!(v["monitoring"].is_null());
        assert_eq!(v["widget_id"], sim.config().widget_id.as_str());
        assert_eq!(v["team_id"], sim.team_id());
        assert_eq!(v["account_identifier"], body["pull"]["account_identifier"]);
    }
    let auth = got[0].json();
    assert_eq!(auth["sequence"], 1);
    assert_eq!(auth["data"]["auth_status"], "SUCCESS");
    assert!(auth["data"]["login_error_message"].is_null());
    let pa = got[1].json();
    assert!(pa["data"]["policy_id"].is_string() && pa["data"]["policy_type"].is_string());
    assert_eq!(got[4].json()["status"], "SUCCESS");
}

#[tokio::test]
async fn consent_token_skips_the_consent_step() {
    let env = Env::start().await;
    let b = Browser { env: &env };
    let (_, c) = env
        .post(
            &env.api("/consent"),
            json!({"device_identifier": "d1", "terms_version": 1, "consent_language": "ok"}),
        )
        .await;
    let token = c["consent_token"].as_str().unwrap();
    let (_, html, _) = b
        .get(&format!(
            "{}?consentToken={token}",
            env.sandbox.canopy().widget_url()
        ))
        .await;
    assert!(!html.contains("name=\"consent\""));
    assert_eq!(input_value(&html, "consent_token").as_deref(), Some(token));
    let (status, _, loc) = b
        .post(
            &format!("{}/login", env.sandbox.canopy().widget_url()),
            &[
                ("consent_token", token),
                ("insurerName", "geico"),
                ("username", "user_good"),
                ("password", "pass_good"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    assert!(loc.unwrap().contains("/pull/"));
    // An unknown alias is a 404 page.
    let (status, _, _) = b
        .get(&format!("{}/canopy/c/nope", env.sandbox.base_url()))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn hosted_widget_mfa_with_options_bad_code_message_code_then_success() {
    let env = Env::start().await;
    let b = Browser { env: &env };
    let sim = env.sandbox.canopy();
    let (_, _, loc) = b
        .post(
            &format!("{}/login", sim.widget_url()),
            &[
                ("consent", "yes"),
                ("insurerName", "progressive"),
                ("username", "user_mfa"),
                ("password", "pass_good"),
            ],
        )
        .await;
    let status_url = loc.unwrap();
    let pull_id = pull_id_of(&status_url);
    let token = token_of(&status_url);
    let action = |a: &str| format!("{}/pull/{pull_id}/{a}", sim.widget_url());

    let (_, html, _) = b.get(&status_url).await;
    assert_eq!(
        page_status(&html).as_deref(),
        Some("IDENTITY_VERIFICATION_OPTIONS")
    );
    assert!(html.contains("value=\"sms\"") && html.contains("value=\"email\""));
    let first = env
        .hooks
        .wait_event("AUTH_STATUS", Some(&pull_id))
        .await
        .json();
    assert_eq!(
        first["data"]["auth_status"],
        "IDENTITY_VERIFICATION_OPTIONS"
    );
    assert_eq!(first["status"], "IDENTITY_VERIFICATION_OPTIONS");
    assert_eq!(
        first["data"]["mfa_options"],
        Value::Object(fixtures::mfa_options())
    );
    assert!(
        first["account_identifier"].is_null(),
        "no account before authentication"
    );

    let (status, _, _) = b
        .post(
            &action("idvoptions"),
            &[("token", &token), ("optionKey", "sms")],
        )
        .await;
    assert_eq!(status, 303);
    let (_, html, _) = b.get(&status_url).await;
    assert_eq!(page_status(&html).as_deref(), Some("IDENTITY_VERIFICATION"));

    // 000000: a bad code, NOT_AUTHENTICATED with no message; the consumer may sign in again.
    b.post(&action("idv"), &[("token", &token), ("mfaValue", "000000")])
        .await;
    let (_, html, _) = b.get(&status_url).await;
    assert_eq!(page_status(&html).as_deref(), Some("NOT_AUTHENTICATED"));
    b.post(
        &action("connect"),
        &[
            ("token", &token),
            ("insurerName", "progressive"),
            ("username", "user_mfa"),
            ("password", "pass_good"),
        ],
    )
    .await;
    b.post(
        &action("idvoptions"),
        &[("token", &token), ("optionKey", "email")],
    )
    .await;
    // 000001: the login-error-message flow.
    b.post(&action("idv"), &[("token", &token), ("mfaValue", "000001")])
        .await;
    let (_, html, _) = b.get(&status_url).await;
    assert_eq!(page_status(&html).as_deref(), Some("NOT_AUTHENTICATED"));
    assert!(html.contains(fixtures::MFA_EXPIRED_MESSAGE));
    b.post(
        &action("connect"),
        &[
            ("token", &token),
            ("insurerName", "progressive"),
            ("username", "user_mfa"),
            ("password", "pass_good"),
        ],
    )
    .await;
    b.post(
        &action("idvoptions"),
        &[("token", &token), ("optionKey", "sms")],
    )
    .await;
    // A step that is not possible now answers 400 with Canopy's code.
    let (status, html, _) = b
        .post(
            &action("idvoptions"),
            &[("token", &token), ("optionKey", "sms")],
        )
        .await;
    assert_eq!(status, 400);
    assert!(html.contains("INVALID_ACTION"));
    let (status, _, _) = b
        .post(&action("idv"), &[("token", &token), ("mfaValue", "424242")])
        .await;
    assert_eq!(status, 303);
    let pull = sim
        .wait_for_status(&pull_id, "SUCCESS", WAIT)
        .await
        .unwrap();
    assert!(pull.encountered_mfa);
    // A forged session token is refused.
    let (status, _, _) = b.get(&status_url.replace(&token, "x.y.z")).await;
    assert_eq!(status, 403);

    env.hooks.wait_event("COMPLETE", Some(&pull_id)).await;
    let auth: Vec<Value> = env
        .hooks
        .events_for(&pull_id)
        .into_iter()
        .filter(|v| v["event_type"] == "AUTH_STATUS")
        .collect();
    let seq: Vec<(String, u64, Value)> = auth
        .iter()
        .map(|v| {
            (
                v["data"]["auth_status"].as_str().unwrap().to_owned(),
                v["sequence"].as_u64().unwrap(),
                v["data"]["login_error_message"].clone(),
            )
        })
        .collect();
    let states: Vec<&str> = seq.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        states,
        [
            "IDENTITY_VERIFICATION_OPTIONS",
            "IDENTITY_VERIFICATION",
            "NOT_AUTHENTICATED",
            "IDENTITY_VERIFICATION_OPTIONS",
            "IDENTITY_VERIFICATION",
            "NOT_AUTHENTICATED",
            "IDENTITY_VERIFICATION_OPTIONS",
            "IDENTITY_VERIFICATION",
            "SUCCESS",
        ]
    );
    assert!(
        seq.windows(2).all(|w| w[1].1 > w[0].1),
        "sequence goes up: {seq:?}"
    );
    assert!(seq[2].2.is_null());
    assert_eq!(seq[5].2, fixtures::MFA_EXPIRED_MESSAGE);
}

#[tokio::test]
async fn optionless_mfa_goes_straight_to_the_code() {
    let env = Env::start().await;
    let sim = env.sandbox.canopy();
    let pull_id = sim
        .connect(ConnectRequest::new(
            "statefarm",
            "user_optionless_mfa",
            "pass_good",
        ))
        .unwrap();
    assert_eq!(sim.pull(&pull_id).unwrap().status, "IDENTITY_VERIFICATION");
    let a = env
        .hooks
        .wait_event("AUTH_STATUS", Some(&pull_id))
        .await
        .json();
    assert_eq!(a["data"]["auth_status"], "IDENTITY_VERIFICATION");
    assert!(a["data"].get("mfa_options").is_none());
    sim.submit_mfa_code(&pull_id, "123456").unwrap();
    let pull = sim
        .wait_for_status(&pull_id, "SUCCESS", WAIT)
        .await
        .unwrap();
    assert_eq!(
        pull.policies[0].carrier_policy_number.as_deref(),
        Some("AU-5552001")
    );
}

#[tokio::test]
async fn failing_logins() {
    let env = Env::start().await;
    let sim = env.sandbox.canopy();
    for (user, password, message) in [
        ("user_good", "wrong", None),
        ("someone_else", "pass_good", None),
        ("user_locked", "pass_good", Some(fixtures::LOCKED_MESSAGE)),
        (
            "user_unactivated",
            "pass_good",
            Some(fixtures::UNACTIVATED_MESSAGE),
        ),
    ] {
        let pull_id = sim
            .connect(ConnectRequest::new("statefarm", user, password))
            .unwrap();
        assert_eq!(
            sim.pull(&pull_id).unwrap().status,
            "NOT_AUTHENTICATED",
            "{user}"
        );
        let a = env.hooks.wait_event("AUTH_STATUS", Some(&pull_id)).await;
        assert_envelope(&a);
        let v = a.json();
        assert_eq!(
            (v["data"]["auth_status"].as_str(), v["status"].as_str()),
            (Some("NOT_AUTHENTICATED"), Some("NOT_AUTHENTICATED"))
        );
        assert_eq!(v["data"]["login_error_message"].as_str(), message, "{user}");
        assert_eq!(v["sequence"], 1);
    }
    for (user, kind) in [
        ("user_provider_error", "PROVIDER_ERROR"),
        ("user_internal_error", "INTERNAL_ERROR"),
    ] {
        let pull_id = sim
            .connect(ConnectRequest::new("statefarm", user, "pass_good"))
            .unwrap();
        assert_eq!(sim.pull(&pull_id).unwrap().status, kind);
        let e = env.hooks.wait_event("ERROR", Some(&pull_id)).await;
        assert_envelope(&e);
        assert_eq!(e.json()["data"], json!({"type": kind}));
        assert_eq!(e.json()["status"], kind);
    }
    // A retry after bad credentials on the same pull, through the hosted page.
    let b = Browser { env: &env };
    let (_, _, loc) = b
        .post(
            &format!("{}/login", sim.widget_url()),
            &[
                ("consent", "yes"),
                ("insurerName", "statefarm"),
                ("username", "user_good"),
                ("password", "oops"),
            ],
        )
        .await;
    let status_url = loc.unwrap();
    let (_, html, _) = b.get(&status_url).await;
    assert_eq!(page_status(&html).as_deref(), Some("NOT_AUTHENTICATED"));
    assert!(html.contains("incorrect"));
    let pull_id = pull_id_of(&status_url);
    let (status, _, _) = b
        .post(
            &format!("{}/pull/{pull_id}/connect", sim.widget_url()),
            &[
                ("token", &token_of(&status_url)),
                ("insurerName", "statefarm"),
                ("username", "user_good"),
                ("password", "pass_good"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    sim.wait_for_status(&pull_id, "SUCCESS", WAIT)
        .await
        .unwrap();
}

#[tokio::test]
async fn refresh_makes_a_new_pull_and_reports_coverage_changes() {
    let env = Env::start().await;
    let sim = env.sandbox.canopy();
    let (initial, mid) = env.monitored("user_good").await;
    let account = sim.pull(&initial).unwrap().account_identifier.unwrap();

    // Nothing changed: a refresh brings the same data and no MONITORING_EVENTS.
    let quiet = sim.refresh_monitoring(&mid).unwrap();
    sim.wait_for_status(&quiet, "SUCCESS", WAIT).await.unwrap();
    let complete = env.hooks.wait_event("COMPLETE", Some(&quiet)).await;
    assert_envelope(&complete);
    let v = complete.json();
    assert_eq!(v["is_monitored"], true);
    assert_eq!(
        v["monitoring"],
        json!({"initial_pull_id": initial, "monitoring_id": mid})
    );
    assert_eq!(v["account_identifier"], account.as_str());

    let outcome = sim
        .apply(
            Scenario::new(
                ScenarioTarget::account(&account),
                ScenarioAction::SetVehicleCoverage {
                    vin: Some("4T1G11AK5MU000001".into()),
                    coverage: "COLLISION".into(),
                    patch: CoveragePatch {
                        deductible_cents: Some(250_000),
                        premium_cents: Some(12_000),
                        ..Default::default()
                    },
                },
            )
            .and_refresh(),
        )
        .unwrap();
    assert_eq!(outcome.carrier_policy_number.as_deref(), Some("AU-5550001"));
    let changed = outcome.refreshed_pull_ids[0].clone();
    assert!(![initial.as_str(), quiet.as_str()].contains(&changed.as_str()));
    let pull = sim
        .wait_for_status(&changed, "SUCCESS", WAIT)
        .await
        .unwrap();
    assert_eq!(pull.account_identifier.as_deref(), Some(account.as_str()));
    let auto = pull
        .policies
        .iter()
        .find(|p| p.policy_type.as_deref() == Some("AUTO"))
        .unwrap();
    let coll = auto.vehicles[0]
        .coverages
        .iter()
        .find(|c| c.name == "COLLISION")
        .unwrap();
    assert_eq!(coll.deductible_cents, Some(250_000));
    assert_eq!(auto.total_premium_cents, Some(102_200 - 18_400 + 12_000));

    let ev = env
        .hooks
        .wait_event("MONITORING_EVENTS", Some(&changed))
        .await;
    assert_envelope(&ev);
    let data = ev.json()["data"].clone();
    assert_eq!(data["latest_pull_id"], changed.as_str());
    assert_eq!(data["previous_pull_id"], quiet.as_str());
    let event = &data["events"][0];
    assert_eq!(event["type"], "ENDORSEMENT");
    let changes = event["changes"].as_array().unwrap();
    let policy_change = changes.iter().find(|c| c["schema"] == "POLICY").unwrap();
    assert_eq!(policy_change["before"]["total_premium_cents"], 102_200);
    assert_eq!(policy_change["after"]["total_premium_cents"], 95_800);
    let cov = changes
        .iter()
        .find(|c| c["schema"] == "VEHICLECOVERAGE")
        .unwrap();
    assert_eq!(cov["type"], "UPDATE");
    assert_eq!(
        (
            cov["before"]["deductible_cents"].as_i64(),
            cov["after"]["deductible_cents"].as_i64()
        ),
        (Some(100_000), Some(250_000))
    );
    assert!(
        env.hooks
            .events_for(&quiet)
            .iter()
            .all(|v| v["event_type"] != "MONITORING_EVENTS")
    );

    let (status, api) = env
        .get(&env.team(&format!("/monitorings/{mid}/events")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(api, data);
}

#[tokio::test]
async fn scenarios_cancel_renew_lienholder_mortgagee_diffs_and_errors() {
    let env = Env::start().await;
    let sim = env.sandbox.canopy();
    let (initial, mid) = env.monitored("user_good").await;
    let t = ScenarioTarget::pull(&initial);

    let hooks = &env.hooks;
    let refresh_and_events = |pull: String| async move {
        sim.wait_for_pull(&pull, WAIT, |p| p.status == "SUCCESS")
            .await
            .unwrap();
        let ev = hooks.wait_event("MONITORING_EVENTS", Some(&pull)).await;
        ev.json()["data"]["events"].clone()
    };

    let o = sim
        .apply(
            Scenario::new(
                t.clone().policy_type("AUTO"),
                ScenarioAction::CancelPolicy {
                    canceled_date: None,
                },
            )
            .and_refresh(),
        )
        .unwrap();
    let events = refresh_and_events(o.refreshed_pull_ids[0].clone()).await;
    assert_eq!(events[0]["type"], "CANCELED");
    let after = &events[0]["changes"][0]["after"];
    assert_eq!(after["status"], "CANCELLED");
    assert!(after["canceled_date"].is_string());
    let (_, body) = env
        .get(&env.team(&format!("/pulls/{}", o.refreshed_pull_ids[0])))
        .await;
    let auto = body["pull"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy_type"] == "AUTO")
        .cloned()
        .unwrap();
    assert_eq!(auto["status"], "CANCELLED");

    let o = sim
        .apply(
            Scenario::new(
                t.clone().policy_number("AU-5550001"),
                ScenarioAction::ReinstatePolicy,
            )
            .and_refresh(),
        )
        .unwrap();
    assert_eq!(
        refresh_and_events(o.refreshed_pull_ids[0].clone()).await[0]["type"],
        "REINSTATED"
    );

    let o = sim
        .apply(
            Scenario::new(
                t.clone().policy_type("HOMEOWNERS"),
                ScenarioAction::RenewPolicy {
                    total_premium_cents: Some(140_000),
                },
            )
            .and_refresh(),
        )
        .unwrap();
    let events = refresh_and_events(o.refreshed_pull_ids[0].clone()).await;
    assert_eq!(events[0]["type"], "RENEWAL");
    assert_eq!(
        events[0]["changes"][0]["after"]["total_premium_cents"],
        140_000
    );
    assert_eq!(
        events[0]["documents"].as_array().unwrap().len(),
        1,
        "the new declarations"
    );

    let o = sim
        .apply(
            Scenario::new(
                t.clone(),
                ScenarioAction::SetLienholder {
                    vin: Some("4T1G11AK5MU000001".into()),
                    lien_holder: None,
                },
            )
            .and_refresh(),
        )
        .unwrap();
    let events = refresh_and_events(o.refreshed_pull_ids[0].clone()).await;
    let v = events[0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["schema"] == "VEHICLE")
        .cloned()
        .unwrap();
    assert_eq!(v["before"]["lien_holder"], "Sandbox Auto Finance");
    assert!(v["after"]["lien_holder"].is_null());

    let o = sim
        .apply(
            Scenario::new(
                t.clone(),
                ScenarioAction::SetMortgagee {
                    mortgagee_name: Some("Other Bank".into()),
                    mortgage_loan_number: Some("L-1".into()),
                },
            )
            .and_refresh(),
        )
        .unwrap();
    let events = refresh_and_events(o.refreshed_pull_ids[0].clone()).await;
    let d = events[0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["schema"] == "DWELLING")
        .cloned()
        .unwrap();
    assert_eq!(d["before"]["mortgagees"], json!(["Sandbox Home Lending"]));
    assert_eq!(d["after"]["mortgagees"], json!(["Other Bank"]));

    let o = sim
        .apply(
            Scenario::new(
                t.clone(),
                ScenarioAction::RemoveVehicleCoverage {
                    vin: None,
                    coverage: "COMPREHENSIVE".into(),
                },
            )
            .and_refresh(),
        )
        .unwrap();
    let events = refresh_and_events(o.refreshed_pull_ids[0].clone()).await;
    assert!(
        events[0]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["schema"] == "VEHICLECOVERAGE" && c["type"] == "DELETE")
    );

    // Without refresh nothing happens until the next pull.
    let before = sim.monitoring_pull_ids(&mid).len();
    sim.apply(Scenario::new(t.clone(), ScenarioAction::ExpirePolicy))
        .unwrap_err();
    sim.apply(Scenario::new(
        t.clone().policy_type("AUTO"),
        ScenarioAction::ExpirePolicy,
    ))
    .unwrap();
    assert_eq!(sim.monitoring_pull_ids(&mid).len(), before);

    // A failing refresh.
    let o = sim
        .apply(
            Scenario::new(
                t.clone(),
                ScenarioAction::FailNextRefresh {
                    error_type: "PROVIDER_ERROR".into(),
                },
            )
            .and_refresh(),
        )
        .unwrap();
    let e = env
        .hooks
        .wait_event("ERROR", Some(&o.refreshed_pull_ids[0]))
        .await
        .json();
    assert_eq!(e["data"]["type"], "PROVIDER_ERROR");
    assert_eq!(e["is_monitored"], true);

    // Bad targets are control errors, over HTTP too.
    let (status, body) = env
        .post(
            &env.control("/scenario"),
            json!({"target": {"pull_id": "nope"}, "action": {"kind": "cancel_policy"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = env
        .post(&env.control("/scenario"), json!({"target": {"pull_id": initial, "policy_type": "AUTO"}, "action": {"kind": "expire_policy"}, "refresh": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refreshed_pull_ids"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn user_good_diffs_changes_on_every_refresh() {
    let env = Env::start().await;
    let sim = env.sandbox.canopy();
    let (_, mid) = env.monitored("user_good_diffs").await;
    for round in 1..=2 {
        let p = sim.refresh_monitoring(&mid).unwrap();
        let ev = env
            .hooks
            .wait_event("MONITORING_EVENTS", Some(&p))
            .await
            .json();
        let c = &ev["data"]["events"][0]["changes"][0];
        assert_eq!(c["schema"], "POLICY");
        assert_eq!(c["after"]["total_premium_cents"], 102_200 + 2_500 * round);
    }
}

#[tokio::test]
async fn scheduled_refresh_follows_the_sandbox_clock() {
    let env = Env::start().await;
    let sim = env.sandbox.canopy();
    let (initial, mid) = env.monitored("user_good").await;
    assert!(sim.run_due_monitorings().is_empty());
    env.sandbox.clock().advance(chrono::Duration::days(32));
    // The scheduler (20 ms tick in tests) picks it up by itself.
    let ids = sim
        .wait_for(WAIT, "a scheduled refresh", |s| {
            let ids = s.monitoring_pull_ids(&mid);
            (ids.len() >= 2).then_some(ids)
        })
        .await
        .unwrap();
    assert_eq!(ids[0], initial);
    let refreshed = &ids[1];
    let complete = env.hooks.wait_event("COMPLETE", Some(refreshed)).await;
    // Signatures use the wall clock, so they verify with a ±300 s tolerance despite the jump.
    let t: i64 = complete.signature().unwrap().split(',').next().unwrap()[2..]
        .parse()
        .unwrap();
    assert!((t - chrono::Utc::now().timestamp()).abs() < 300);
    let m = sim.monitoring(&mid).unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(m.next_pull_date.as_deref().unwrap()).unwrap();
    assert!(
        next > env.sandbox.clock().now(),
        "next_pull_date moved past now"
    );
    assert_eq!(sim.run_due_monitorings(), Vec::<String>::new());
}

#[tokio::test]
async fn expired_credentials_hosted_reconnect() {
    let env = Env::start().await;
    let b = Browser { env: &env };
    let sim = env.sandbox.canopy();
    let (initial, mid) = env.monitored("user_good").await;
    let o = sim
        .apply(
            Scenario::new(
                ScenarioTarget::pull(&initial),
                ScenarioAction::ExpireCredentials,
            )
            .and_refresh(),
        )
        .unwrap();
    let pull_id = o.refreshed_pull_ids[0].clone();
    assert_eq!(sim.pull(&pull_id).unwrap().status, "NOT_AUTHENTICATED");

    let r = env
        .hooks
        .wait_event("MONITORING_RECONNECT", Some(&pull_id))
        .await;
    assert_envelope(&r);
    let v = r.json();
    assert_eq!(v["status"], "NOT_AUTHENTICATED");
    assert_eq!(v["is_monitored"], true);
    assert_eq!(
        v["monitoring"],
        json!({"initial_pull_id": initial, "monitoring_id": mid})
    );
    assert_eq!(v["data"]["auth_status"], "NOT_AUTHENTICATED");
    let token = v["data"]["reconnect_token"].as_str().unwrap().to_owned();
    let url = v["data"]["reconnect_url"].as_str().unwrap().to_owned();
    assert_eq!(
        url,
        format!("{}/reconnect?reconnectToken={token}", sim.widget_url())
    );

    let (status, _, loc) = b.get(&url).await;
    assert_eq!(status, 303);
    let status_url = loc.unwrap();
    assert_eq!(pull_id_of(&status_url), pull_id);
    let (_, html, _) = b.get(&status_url).await;
    assert_eq!(page_status(&html).as_deref(), Some("NOT_AUTHENTICATED"));
    assert!(html.contains("needs attention"));
    let connect = format!("{}/pull/{pull_id}/connect", sim.widget_url());
    let tok = token_of(&status_url);
    // Another account's login does not reconnect this one.
    b.post(
        &connect,
        &[
            ("token", &tok),
            ("insurerName", "statefarm"),
            ("username", "user_good_diffs"),
            ("password", "pass_good"),
        ],
    )
    .await;
    let (_, html, _) = b.get(&status_url).await;
    assert!(html.contains(fixtures::WRONG_ACCOUNT_MESSAGE));
    b.post(
        &connect,
        &[
            ("token", &tok),
            ("insurerName", "statefarm"),
            ("username", "user_good"),
            ("password", "pass_good"),
        ],
    )
    .await;
    let pull = sim
        .wait_for_status(&pull_id, "SUCCESS", WAIT)
        .await
        .unwrap();
    assert_eq!(
        pull.account_identifier,
        sim.pull(&initial).unwrap().account_identifier
    );
    let c = env
        .hooks
        .wait_event("COMPLETE", Some(&pull_id))
        .await
        .json();
    assert_eq!(c["is_monitored"], true);

    // The link is spent.
    let (status, html, _) = b.get(&url).await;
    assert_eq!(status, 400);
    assert!(html.contains("ALREADY_RECONNECTED"));
    // Credentials are good again: the next refresh just works.
    let next = sim.refresh_monitoring(&mid).unwrap();
    sim.wait_for_status(&next, "SUCCESS", WAIT).await.unwrap();
}

#[tokio::test]
async fn white_label_reconnect_with_mfa() {
    let env = Env::start().await;
    let sim = env.sandbox.canopy();
    let (initial, mid) = env.monitored("user_good").await;
    let o = sim
        .apply(
            Scenario::new(ScenarioTarget::pull(&initial), ScenarioAction::RequireMfa).and_refresh(),
        )
        .unwrap();
    let pull_id = o.refreshed_pull_ids[0].clone();
    let token = env
        .hooks
        .wait_event("MONITORING_RECONNECT", Some(&pull_id))
        .await
        .json()["data"]["reconnect_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // A newer token from the API works as well.
    let (_, info) = env
        .get(&env.team(&format!("/monitorings/{mid}/reconnectToken")))
        .await;
    assert_eq!(info["pull_id"], pull_id.as_str());

    let (status, resp) = env
        .post(
            &env.api("/widget/pull/reconnectToken"),
            json!({"reconnect_token": token}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["pull_id"], pull_id.as_str());
    let jwt = resp["pull_jwt"].as_str().unwrap().to_owned();
    assert_eq!(jwt.split('.').count(), 3, "a JWT");
    let call = |path: &str, body: Value| {
        let req = env
            .http
            .post(env.api(&format!("/widget/pull/{pull_id}/{path}")))
            .header("pull-jwt", &jwt)
            .json(&body);
        async move { canopy_support::status_json(req.send().await.unwrap()).await }
    };
    let (s, _) = call("connect", json!({"insurerName": "statefarm", "insurerUsername": "user_good", "insurerPassword": "pass_good"})).await;
    assert_eq!(s, 200);
    assert_eq!(
        sim.pull(&pull_id).unwrap().status,
        "IDENTITY_VERIFICATION_OPTIONS"
    );
    let (s, _) = call("idvoptions", json!({"optionKey": "email"})).await;
    assert_eq!(s, 200);
    let (s, _) = call("idv", json!({"mfaValue": "777777"})).await;
    assert_eq!(s, 200);
    sim.wait_for_status(&pull_id, "SUCCESS", WAIT)
        .await
        .unwrap();
    let auth: Vec<Value> = env
        .hooks
        .events_for(&pull_id)
        .into_iter()
        .filter(|v| v["event_type"] == "AUTH_STATUS")
        .collect();
    let states: Vec<&str> = auth
        .iter()
        .map(|v| v["data"]["auth_status"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "IDENTITY_VERIFICATION_OPTIONS",
            "IDENTITY_VERIFICATION",
            "SUCCESS"
        ]
    );
    assert!(auth.iter().all(|v| v["is_monitored"] == true));

    let (s, r) = env
        .post(
            &env.api("/widget/pull/reconnectToken"),
            json!({"reconnect_token": token}),
        )
        .await;
    assert_eq!((s, r["error"].as_str()), (400, Some("ALREADY_RECONNECTED")));
}

#[tokio::test]
async fn reconnect_token_newer_pull_and_inactive_monitoring() {
    let env = Env::start().await;
    let sim = env.sandbox.canopy();
    let (initial, mid) = env.monitored("user_good").await;
    let o = sim
        .apply(
            Scenario::new(
                ScenarioTarget::pull(&initial),
                ScenarioAction::ExpireCredentials,
            )
            .and_refresh(),
        )
        .unwrap();
    let first = o.refreshed_pull_ids[0].clone();
    let old = env
        .hooks
        .wait_event("MONITORING_RECONNECT", Some(&first))
        .await
        .json()["data"]["reconnect_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A refresh while waiting for the consumer makes a newer pull (and a newer token).
    let second = sim.refresh_monitoring(&mid).unwrap();
    let new = env
        .hooks
        .wait_event("MONITORING_RECONNECT", Some(&second))
        .await
        .json()["data"]["reconnect_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = &env;
    let redeem = |t: String| async move {
        e.post(
            &e.api("/widget/pull/reconnectToken"),
            json!({"reconnect_token": t}),
        )
        .await
    };
    let (s, r) = redeem(old).await;
    assert_eq!(
        (s, r["error"].as_str()),
        (400, Some("NEWER_PULL_AVAILABLE"))
    );
    let (_, m) = env
        .get(&env.team(&format!("/monitorings/{mid}?with_pulls=true")))
        .await;
    let statuses: Vec<&str> = m["pulls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["monitoring_status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["WAITING_FOR_USER", "EXPIRED", "COMPLETED"]);
    sim.stop_monitoring(&mid).unwrap();
    let (s, r) = redeem(new).await;
    assert_eq!((s, r["error"].as_str()), (400, Some("MONITORING_INACTIVE")));
}

#[tokio::test]
async fn control_api_sends_any_event_for_a_pull() {
    let env = Env::start().await;
    let (initial, _mid) = env.monitored("user_good").await;
    let before = env.hooks.events_for(&initial).len();
    for (event, data) in [
        ("DATA_UPDATED", None),
        ("AUTH_STATUS", None),
        ("MONITORING_RECONNECT", None),
        ("MONITORING_EVENTS", None),
        ("ERROR", Some(json!({"type": "PROVIDER_ERROR"}))),
        ("SOMETHING_NEW", Some(json!({"x": 1}))),
    ] {
        let mut body = json!({"event_type": event});
        if let Some(d) = data {
            body["data"] = d;
        }
        let (status, resp) = env
            .post(&env.control(&format!("/pulls/{initial}/events")), body)
            .await;
        assert_eq!(status, 200, "{event}: {resp}");
    }
    env.hooks.wait_event("SOMETHING_NEW", Some(&initial)).await;
    let got: Vec<Value> = env
        .hooks
        .events_for(&initial)
        .into_iter()
        .skip(before)
        .collect();
    let types: Vec<&str> = got
        .iter()
        .map(|v| v["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "DATA_UPDATED",
            "AUTH_STATUS",
            "MONITORING_RECONNECT",
            "MONITORING_EVENTS",
            "ERROR",
            "SOMETHING_NEW"
        ]
    );
    assert_eq!(got[0]["data"]["updates"][0]["type"], "CONTACT_UPDATED");
    assert_eq!(got[1]["sequence"], 2, "continues the pull's sequence");
    assert!(got[2]["data"]["reconnect_token"].is_string());
    assert!(got[3]["data"]["events"].is_array());
    assert!(got.iter().all(|v| v["is_monitored"] == true));
    let (status, _) = env
        .post(
            &env.control("/pulls/nope/events"),
            json!({"event_type": "COMPLETE"}),
        )
        .await;
    assert_eq!(status, 400);
}
