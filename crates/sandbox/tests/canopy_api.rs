//! Canopy REST API: each endpoint's success and documented error cases, fixture values field by
//! field, authentication styles.

mod canopy_support;

use canopy_support::{Env, WAIT, status_json};
use coverwatch_sandbox::canopy::{ConnectRequest, DEFAULT_TEAM_ID, fixtures};
use reqwest::Method;
use serde_json::{Value, json};

fn err(v: &Value) -> &str {
    v["error"].as_str().unwrap_or("<no error field>")
}

#[tokio::test]
async fn authentication_styles_and_failures() {
    let env = Env::start().await;
    let pull = env.linked_pull("user_good").await;
    let url = env.team(&format!("/pulls/{}", pull["pull_id"].as_str().unwrap()));

    let r = env.http.get(&url).send().await.unwrap();
    let (code, body) = status_json(r).await;
    assert_eq!((code, err(&body)), (401, "UNAUTHORIZED"));
    assert_eq!(
        body,
        json!({"error": "UNAUTHORIZED"}),
        "Canopy's error envelope has one field"
    );

    let r = env
        .http
        .get(&url)
        .basic_auth("canopy-sandbox-client", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = env
        .http
        .get(&url)
        .basic_auth("canopy-sandbox-client", Some("canopy-sandbox-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = env
        .http
        .get(&url)
        .header("x-canopy-client-id", "canopy-sandbox-client")
        .header("x-canopy-client-secret", "canopy-sandbox-secret")
        .header("authorization", "Bearer ignored-when-the-pair-is-sent")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let other_team = url.replace(DEFAULT_TEAM_ID, "00000000-0000-4000-8000-000000000000");
    let (code, _) = env.get(&other_team).await;
    assert_eq!(code, 401);
    let (code, body) = env
        .get(&env.api("/teams/00000000-0000-4000-8000-000000000000/webhooks"))
        .await;
    assert_eq!((code, err(&body)), (403, "UNAUTHORIZED"));
}

#[tokio::test]
async fn get_pull_returns_the_fixture_field_by_field() {
    let env = Env::start().await;
    let sim = env.sandbox.canopy();
    let meta = json!({"link_id": "lnk_123", "n": 7});
    let pull_id = sim
        .connect(ConnectRequest::good().with_meta(meta.clone()))
        .unwrap();
    sim.wait_for_status(&pull_id, "SUCCESS", WAIT)
        .await
        .unwrap();

    let (code, body) = env.get(&env.team(&format!("/pulls/{pull_id}"))).await;
    assert_eq!(code, 200);
    assert_eq!(body["success"], true);
    let p = &body["pull"];
    assert_eq!(p["pull_id"], pull_id);
    assert_eq!(p["status"], "SUCCESS");
    assert_eq!(p["type"], "PULLING_DATA");
    assert_eq!(p["team_id"], DEFAULT_TEAM_ID);
    assert_eq!(p["meta_data"], meta);
    assert_eq!(p["insurance_provider_name"], "statefarm");
    assert_eq!(p["insurance_provider_friendly_name"], "State Farm");
    assert_eq!(
        p["account_identifier"],
        fixtures::account_identifier(DEFAULT_TEAM_ID, "statefarm", "user_good")
    );
    assert_eq!(
        (
            p["first_name"].as_str(),
            p["middle_name"].as_str(),
            p["last_name"].as_str()
        ),
        (Some("Morgan"), Some("Lee"), Some("Tester"))
    );
    assert_eq!(p["account_email"], "morgan.tester@example.com");
    assert_eq!(p["mobile_phone"], "5555550100");
    assert!(p["home_phone"].is_null() && p.get("work_phone").is_some());
    assert_eq!(p["public_alias"], "coverwatch-sandbox");
    for key in ["no_policies", "no_drivers", "no_documents"] {
        assert_eq!(p[key], false, "{key}");
    }
    for key in [
        "claims",
        "driving_records",
        "loss_events",
        "agents",
        "answers",
    ] {
        assert!(p[key].as_array().is_some(), "{key}");
    }
    assert_eq!(p["drivers"].as_array().unwrap().len(), 2);
    assert_eq!(p["drivers"][0]["date_of_birth_str"], "04/12/1985");
    assert_eq!(p["addresses"].as_array().unwrap().len(), 4);

    let policies = p["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);
    let auto = policies
        .iter()
        .find(|x| x["policy_type"] == "AUTO")
        .unwrap();
    assert_eq!(auto["carrier_policy_number"], "AU-5550001");
    assert_eq!(auto["name"], "AUTO AU-5550001");
    assert_eq!(auto["status"], "ACTIVE");
    assert_eq!(auto["total_premium_cents"], 102_200);
    assert_eq!(auto["amount_due_cents"], 51_100);
    assert_eq!(auto["carrier_name"], "statefarm");
    let vehicles = auto["vehicles"].as_array().unwrap();
    assert_eq!(vehicles.len(), 2);
    let camry = &vehicles[0];
    assert_eq!(
        (
            camry["year"].as_i64(),
            camry["make"].as_str(),
            camry["vin"].as_str()
        ),
        (Some(2021), Some("TOYOTA"), Some("4T1G11AK5MU000001"))
    );
    assert_eq!(camry["lien_holder"], "Sandbox Auto Finance");
    assert_eq!(camry["lien_holder_address"]["address_nature"], "LIENHOLDER");
    assert_eq!(camry["lien_holder_address"]["zip"], "43215");
    let cov = |v: &Value, name: &str| {
        v["coverages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
    };
    let bi = cov(camry, "BODILY_INJURY_LIABILITY").unwrap();
    assert_eq!(
        (
            bi["per_person_limit_cents"].as_i64(),
            bi["per_incident_limit_cents"].as_i64()
        ),
        (Some(10_000_000), Some(30_000_000))
    );
    assert_eq!(bi["friendly_name"], "Bodily Injury Liability");
    assert_eq!(
        cov(camry, "COLLISION").unwrap()["deductible_cents"],
        100_000
    );
    assert_eq!(
        cov(camry, "COMPREHENSIVE").unwrap()["deductible_cents"],
        50_000
    );
    let umpd = cov(camry, "UNINSURED_MOTORIST_PROPERTY_DAMAGE_LIABILITY").unwrap();
    assert_eq!(
        (
            umpd["per_incident_limit_cents"].as_i64(),
            umpd["deductible_cents"].as_i64()
        ),
        (Some(2_500_000), Some(25_000))
    );
    assert!(
        cov(&vehicles[1], "COLLISION").is_none(),
        "the Civic is liability only"
    );
    assert!(vehicles[1]["lien_holder"].is_null());
    let drivers = camry["drivers"].as_array().unwrap();
    assert_eq!(drivers[0]["is_primary"], true);
    // A driver keeps one id on the pull and on the vehicle.
    assert_eq!(drivers[0]["driver_id"], p["drivers"][0]["driver_id"]);

    let home = policies
        .iter()
        .find(|x| x["policy_type"] == "HOMEOWNERS")
        .unwrap();
    assert_eq!(home["carrier_policy_number"], "HO-5550002");
    assert_eq!(home["total_premium_cents"], 132_700);
    let dwelling = &home["dwellings"][0];
    assert_eq!(
        dwelling["mortgagees"][0]["mortgagee_name"],
        "Sandbox Home Lending"
    );
    assert_eq!(
        dwelling["mortgagees"][0]["mortgage_loan_number"],
        "ML-0042-7781"
    );
    assert_eq!(dwelling["mortgagee_name"], "Sandbox Home Lending");
    let dc = |name: &str| {
        dwelling["coverages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(dc("DWELLING")["per_incident_limit_cents"], 35_000_000);
    assert_eq!(
        dc("OTHER_STRUCTURES")["per_incident_limit_percent"],
        "10.000"
    );
    assert_eq!(dc("MEDICAL_PAYMENTS")["per_person_limit_cents"], 500_000);
    assert_eq!(dc("WINDSTORM_OR_HAIL")["deductible_percent"], "2.000");

    let docs = p["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 3);
    assert!(docs.iter().all(|d| d["mime_type"] == "application/pdf"));
    assert!(
        docs.iter()
            .any(|d| d["document_type"] == "INSURANCE_ID_CARD"
                && d["policy_id"] == auto["policy_id"])
    );

    // Errors: malformed id (400 VALIDATION_ERROR), unknown pull (400 NOT_FOUND, as documented).
    let (code, body) = env.get(&env.team("/pulls/not-a-uuid")).await;
    assert_eq!((code, err(&body)), (400, "VALIDATION_ERROR"));
    let (code, body) = env
        .get(&env.team("/pulls/6b1d1a8e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"))
        .await;
    assert_eq!((code, err(&body)), (400, "NOT_FOUND"));
}

#[tokio::test]
async fn every_pull_has_its_own_ids_and_the_same_account() {
    let env = Env::start().await;
    let a = env.linked_pull("user_good").await;
    let b = env.linked_pull("user_good").await;
    assert_ne!(a["pull_id"], b["pull_id"]);
    assert_eq!(a["account_identifier"], b["account_identifier"]);
    assert_ne!(a["policies"][0]["policy_id"], b["policies"][0]["policy_id"]);
    assert_eq!(
        a["policies"][0]["carrier_policy_number"],
        b["policies"][0]["carrier_policy_number"]
    );
    let sim = env.sandbox.canopy();
    let geico = sim
        .link(ConnectRequest::new("geico", "user_good", "pass_good"), WAIT)
        .await
        .unwrap();
    assert_ne!(
        geico.account_identifier.as_deref(),
        a["account_identifier"].as_str()
    );
}

#[tokio::test]
async fn meta_data_can_be_served_as_a_string() {
    let env = Env::start_with(|c| coverwatch_sandbox::canopy::CanopySimConfig {
        pull_meta_data_as_string: true,
        ..c
    })
    .await;
    let sim = env.sandbox.canopy();
    let pull_id = sim
        .connect(ConnectRequest::good().with_meta(json!({"link_id": "x"})))
        .unwrap();
    sim.wait_for_status(&pull_id, "SUCCESS", WAIT)
        .await
        .unwrap();
    let (_, body) = env.get(&env.team(&format!("/pulls/{pull_id}"))).await;
    let s = body["pull"]["meta_data"].as_str().expect("a string");
    assert_eq!(
        serde_json::from_str::<Value>(s).unwrap(),
        json!({"link_id": "x"})
    );
    // Webhooks always carry an object.
    let complete = env.hooks.wait_event("COMPLETE", Some(&pull_id)).await;
    assert_eq!(complete.json()["meta_data"], json!({"link_id": "x"}));
}

#[tokio::test]
async fn list_and_patch_pulls() {
    let env = Env::start().await;
    let a = env.linked_pull("user_good").await;
    env.sandbox
        .canopy()
        .connect(ConnectRequest::new("statefarm", "nobody", "wrong"))
        .unwrap();
    let (code, body) = env.get(&env.team("/pulls?limit=1")).await;
    assert_eq!(code, 200);
    assert_eq!(body["total_pulls"], 2);
    assert_eq!(body["pulls"].as_array().unwrap().len(), 1);
    let (code, body) = env.get(&env.team("/pulls?limit=0")).await;
    assert_eq!((code, err(&body)), (400, "VALIDATION_ERROR"));

    let url = env.team(&format!("/pulls/{}", a["pull_id"].as_str().unwrap()));
    let (code, body) = env
        .send(Method::PATCH, &url, Some(json!({"is_archived": true})))
        .await;
    assert_eq!((code, body), (200, json!({"success": true})));
    let (_, body) = env.get(&url).await;
    assert_eq!(body["pull"]["is_archived"], true);
    let (code, body) = env
        .send(Method::PATCH, &url, Some(json!({"is_archived": "yes"})))
        .await;
    assert_eq!((code, err(&body)), (400, "INVALID_INPUT"));
    let (code, body) = env
        .send(
            Method::PATCH,
            &env.team("/pulls/6b1d1a8e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"),
            Some(json!({"is_archived": true})),
        )
        .await;
    assert_eq!((code, err(&body)), (404, "NOT_FOUND"));
}

#[tokio::test]
async fn documents_redirect_to_a_signed_url() {
    let env = Env::start().await;
    let pull = env.linked_pull("user_good").await;
    let pull_id = pull["pull_id"].as_str().unwrap();
    let doc = &pull["documents"][0];
    let download = doc["download_url"].as_str().unwrap();
    assert!(download.starts_with(&env.team(&format!("/pulls/{pull_id}/documents/"))));

    let r = env
        .http
        .get(download)
        .header("authorization", env.auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let (_, body) = status_json(r).await;
    assert_eq!(body["url"], location);

    // The signed URL needs no credentials.
    let r = env.http.get(&location).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert!(r.bytes().await.unwrap().starts_with(b"%PDF-"));
    let tampered = location.replace("signature=", "signature=00");
    assert_eq!(env.http.get(&tampered).send().await.unwrap().status(), 403);
    // It expires.
    env.sandbox.clock().advance(chrono::Duration::minutes(10));
    assert_eq!(env.http.get(&location).send().await.unwrap().status(), 403);
    env.sandbox.clock().reset();

    let r = env
        .http
        .get(format!("{download}/pdf"))
        .header("authorization", env.auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"Morgan_Tester_")
    );

    let (code, body) = env
        .get(&env.team(&format!(
            "/pulls/{pull_id}/documents/6b1d1a8e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
        )))
        .await;
    assert_eq!((code, err(&body)), (404, "NOT_FOUND"));
}

#[tokio::test]
async fn monitorings_create_list_get_patch_delete() {
    let env = Env::start().await;
    let pull = env.linked_pull("user_good").await;
    let pull_id = pull["pull_id"].as_str().unwrap();
    let url = env.team("/monitorings");

    // Documented errors first.
    for (body, code) in [
        (json!({"pull_id": pull_id}), "INVALID_INPUT"),
        (json!({"interval": "P1M"}), "INVALID_INPUT"),
        (
            json!({"pull_id": pull_id, "interval": "monthly"}),
            "INVALID_INTERVAL",
        ),
        (
            json!({"pull_id": pull_id, "interval": "P29D"}),
            "INTERVAL_TOO_SHORT",
        ),
        (
            json!({"pull_id": pull_id, "interval": "P4W"}),
            "INTERVAL_TOO_SHORT",
        ),
        (
            json!({"pull_id": pull_id, "interval": "P1M", "stop_after_date": "2001-01-01T00:00:00.000Z"}),
            "INVALID_STOP_AFTER",
        ),
    ] {
        let (status, resp) = env.post(&url, body.clone()).await;
        assert_eq!((status, err(&resp)), (400, code), "{body}");
    }
    let (status, resp) = env
        .post(
            &url,
            json!({"pull_id": "6b1d1a8e-3a4b-4c5d-8e9f-0a1b2c3d4e5f", "interval": "P1M"}),
        )
        .await;
    assert_eq!((status, err(&resp)), (404, "NOT_FOUND"));
    let bad = env
        .sandbox
        .canopy()
        .connect(ConnectRequest::new("statefarm", "user_good", "wrong"))
        .unwrap();
    let (status, resp) = env
        .post(&url, json!({"pull_id": bad, "interval": "P1M"}))
        .await;
    assert_eq!((status, err(&resp)), (400, "PULL_NOT_SUCCESS"));

    let (status, resp) = env
        .post(&url, json!({"pull_id": pull_id, "interval": "P1M"}))
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["success"], true);
    let m = &resp["monitoring"];
    let mid = m["monitoring_id"].as_str().unwrap().to_owned();
    assert_eq!(m["status"], "ACTIVE");
    assert_eq!(m["interval"], "P1M");
    assert_eq!(m["latest_pull_id"], pull_id);
    assert!(m["stop_after_date"].is_null());
    let created =
        chrono::DateTime::parse_from_rfc3339(pull["created_at"].as_str().unwrap()).unwrap();
    let next = chrono::DateTime::parse_from_rfc3339(m["next_pull_date"].as_str().unwrap()).unwrap();
    assert!(
        (28..=31).contains(&(next - created).num_days()),
        "next_pull_date = created + P1M"
    );

    let (status, resp) = env.get(&format!("{url}?pull_id={pull_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(resp["monitorings_count"], 1);
    assert_eq!(resp["monitorings"][0]["monitoring_id"], mid.as_str());
    let (_, resp) = env
        .get(&format!(
            "{url}?pull_id=6b1d1a8e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
        ))
        .await;
    assert_eq!(resp["monitorings_count"], 0);
    let (_, resp) = env
        .get(&format!(
            "{url}?account_identifier={}",
            pull["account_identifier"].as_str().unwrap()
        ))
        .await;
    assert_eq!(resp["monitorings_count"], 1);
    let (_, resp) = env.get(&format!("{url}?status=STOPPED")).await;
    assert_eq!(resp["monitorings_count"], 0);

    let one = format!("{url}/{mid}");
    let (status, resp) = env.get(&format!("{one}?with_pulls=true")).await;
    assert_eq!(status, 200);
    assert_eq!(resp["monitoring"]["monitoring_id"], mid.as_str());
    assert_eq!(resp["pulls"][0]["pull_id"], pull_id);
    assert_eq!(resp["pulls"][0]["monitoring_status"], "COMPLETED");
    let (status, resp) = env.get(&format!("{url}/not-a-uuid")).await;
    assert_eq!((status, err(&resp)), (400, "INVALID_MONITORING_ID"));
    let (status, resp) = env
        .get(&format!("{url}/6b1d1a8e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"))
        .await;
    assert_eq!((status, err(&resp)), (404, "NOT_FOUND"));

    let (status, resp) = env
        .send(Method::PATCH, &one, Some(json!({"interval": "P2M"})))
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["monitoring"]["interval"], "P2M");
    let next2 = chrono::DateTime::parse_from_rfc3339(
        resp["monitoring"]["next_pull_date"].as_str().unwrap(),
    )
    .unwrap();
    assert!((next2 - created).num_days() >= 58);
    for (body, code) in [
        (json!({"interval": "P7D"}), "INTERVAL_TOO_SHORT"),
        (json!({"interval": "soon"}), "INVALID_INTERVAL"),
        (json!({"stop_after_date": "nope"}), "INVALID_STOP_AFTER"),
    ] {
        let (status, resp) = env.send(Method::PATCH, &one, Some(body.clone())).await;
        assert_eq!((status, err(&resp)), (400, code), "{body}");
    }
    let (status, resp) = env
        .send(Method::PATCH, &format!("{url}/x"), Some(json!({})))
        .await;
    assert_eq!((status, err(&resp)), (400, "INVALID_MONITORING_ID"));

    let (status, resp) = env.send(Method::DELETE, &one, None).await;
    assert_eq!(status, 200);
    assert_eq!(resp["success"], true);
    assert_eq!(resp["monitoring"]["status"], "STOPPED");
    assert!(resp["monitoring"]["next_pull_date"].is_null());
    let (status, resp) = env
        .send(
            Method::DELETE,
            &format!("{url}/6b1d1a8e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"),
            None,
        )
        .await;
    assert_eq!((status, err(&resp)), (404, "NOT_FOUND"));

    // PATCH status back to ACTIVE restarts it.
    let (status, resp) = env
        .send(Method::PATCH, &one, Some(json!({"status": "ACTIVE"})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(resp["monitoring"]["status"], "ACTIVE");
    assert!(resp["monitoring"]["next_pull_date"].is_string());
}

#[tokio::test]
async fn refresh_and_its_errors() {
    let env = Env::start().await;
    let (initial, mid) = env.monitored("user_good").await;
    let refresh = env.team(&format!("/monitorings/{mid}/refresh"));

    env.sandbox.canopy().hold_pulls(true);
    let (status, resp) = env.post(&refresh, json!({})).await;
    assert_eq!(status, 200, "{resp}");
    let new_pull = resp["pull_id"].as_str().unwrap().to_owned();
    assert_ne!(new_pull, initial);
    let (status, resp) = env.post(&refresh, json!({})).await;
    assert_eq!((status, err(&resp)), (400, "CURRENTLY_REFRESHING"));
    let (_, m) = env
        .get(&env.team(&format!("/monitorings/{mid}?with_pulls=true")))
        .await;
    assert_eq!(m["monitoring"]["latest_pull_id"], new_pull.as_str());
    assert_eq!(m["pulls"][0]["monitoring_status"], "PROCESSING");
    env.sandbox.canopy().hold_pulls(false);
    env.sandbox
        .canopy()
        .wait_for_status(&new_pull, "SUCCESS", WAIT)
        .await
        .unwrap();

    let (status, resp) = env
        .post(
            &env.team("/monitorings/6b1d1a8e-3a4b-4c5d-8e9f-0a1b2c3d4e5f/refresh"),
            json!({}),
        )
        .await;
    assert_eq!((status, err(&resp)), (404, "NOT_FOUND"));
    env.send(
        Method::DELETE,
        &env.team(&format!("/monitorings/{mid}")),
        None,
    )
    .await;
    let (status, resp) = env.post(&refresh, json!({})).await;
    assert_eq!((status, err(&resp)), (400, "MONITORING_INACTIVE"));
}

#[tokio::test]
async fn reconnect_token_endpoints() {
    let env = Env::start().await;
    let (_, mid) = env.monitored("user_good").await;
    let (status, info) = env
        .get(&env.team(&format!("/monitorings/{mid}/reconnectToken")))
        .await;
    assert_eq!(status, 200);
    let token = info["reconnect_token"].as_str().unwrap();
    assert!(info["reconnect_url"].as_str().unwrap().contains(&format!(
        "/canopy/c/coverwatch-sandbox/reconnect?reconnectToken={token}"
    )));
    assert!(info["pull_id"].is_string());

    // The pull does not need the consumer: nothing to reconnect.
    let (status, resp) = env
        .post(
            &env.api("/widget/pull/reconnectToken"),
            json!({"reconnect_token": token}),
        )
        .await;
    assert_eq!((status, err(&resp)), (400, "ALREADY_RECONNECTED"));
    let (status, resp) = env
        .post(
            &env.api("/widget/pull/reconnectToken"),
            json!({"reconnect_token": "nope"}),
        )
        .await;
    assert_eq!((status, err(&resp)), (400, "INVALID_RECONNECT_TOKEN"));
    let (status, resp) = env
        .post(&env.api("/widget/pull/reconnectToken"), json!({}))
        .await;
    assert_eq!((status, err(&resp)), (400, "INVALID_RECONNECT_TOKEN"));
    let r = env
        .http
        .post(env.api("/widget/pull/reconnectToken"))
        .json(&json!({"reconnect_token": token}))
        .send()
        .await
        .unwrap();
    // Canopy's OpenAPI document lists 403 UNAUTHORIZED for this route, not 401.
    assert_eq!(r.status(), 403, "needs the API key");
}

#[tokio::test]
async fn pull_jwt_routes_reject_bad_tokens_and_actions() {
    let env = Env::start().await;
    let sim = env.sandbox.canopy();
    let bad = sim
        .connect(ConnectRequest::new("statefarm", "user_good", "wrong"))
        .unwrap();
    let (_, resp) = env
        .post(
            &env.control("/connect"),
            json!({"carrier": "statefarm", "username": "x", "password": "y"}),
        )
        .await;
    let other_jwt = resp["pull_jwt"].as_str().unwrap().to_owned();
    let connect = env.api(&format!("/widget/pull/{bad}/connect"));
    let body = json!({"insurerName": "statefarm", "insurerUsername": "user_good", "insurerPassword": "pass_good"});

    let r = env.http.post(&connect).json(&body).send().await.unwrap();
    assert_eq!(
        status_json(r).await,
        (403, json!({"error": "UNAUTHORIZED"}))
    );
    let r = env
        .http
        .post(&connect)
        .header("pull-jwt", &other_jwt)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a token for another pull");

    // A genuine token for this pull comes from the hosted page's session; take it from the
    // control API's connect, which starts a new pull.
    let (_, resp) = env
        .post(
            &env.control("/connect"),
            json!({"carrier": "statefarm", "username": "user_mfa", "password": "pass_good"}),
        )
        .await;
    let pull_id = resp["pull_id"].as_str().unwrap().to_owned();
    let jwt = resp["pull_jwt"].as_str().unwrap().to_owned();
    let call = |path: &str, body: Value| {
        let req = env
            .http
            .post(env.api(&format!("/widget/pull/{pull_id}/{path}")))
            .header("pull-jwt", &jwt)
            .json(&body);
        async move { status_json(req.send().await.unwrap()).await }
    };
    // user_mfa is at IDENTITY_VERIFICATION_OPTIONS: a code or a new login is not possible yet.
    let (s, r) = call("idv", json!({"mfaValue": "123456"})).await;
    assert_eq!((s, err(&r)), (400, "INVALID_ACTION"));
    let (s, r) = call("connect", body.clone()).await;
    assert_eq!((s, err(&r)), (400, "INVALID_ACTION"));
    let (s, r) = call("idvoptions", json!({})).await;
    assert_eq!((s, err(&r)), (400, "INVALID_INPUT"));
    let (s, r) = call("idvoptions", json!({"optionKey": "carrier-pigeon"})).await;
    assert_eq!((s, err(&r)), (400, "INVALID_INPUT"));
    let (s, r) = call("idvoptions", json!({"optionKey": "sms"})).await;
    assert_eq!((s, r), (200, json!({"pull_id": pull_id})));
    let (s, r) = call("idv", json!({"mfaValue": "000000"})).await;
    assert_eq!((s, r), (200, json!({"pull_id": pull_id})));
    assert_eq!(sim.pull(&pull_id).unwrap().status, "NOT_AUTHENTICATED");
    let (s, r) = call(
        "connect",
        json!({"insurerName": "statefarm", "insurerUsername": "usr"}),
    )
    .await;
    assert_eq!(
        (s, err(&r)),
        (400, "INVALID_INPUT"),
        "insurerUsername is 5..200 characters"
    );
    let (s, r) = call("connect", json!({"insurerName": "acme", "insurerUsername": "user_mfa", "insurerPassword": "pass_good"})).await;
    assert_eq!((s, err(&r)), (400, "UNSUPPORTED_INSURER"));
    let (s, r) = call("connect", json!({"insurerName": "statefarm", "insurerUsername": "user_mfa", "insurerPassword": "pass_good"})).await;
    assert_eq!(
        (s, r),
        (
            200,
            json!({"pull": {"pull_id": pull_id}, "shouldPoll": true})
        )
    );

    // An expired token.
    env.sandbox.clock().advance(chrono::Duration::days(2));
    let (s, r) = call("idvoptions", json!({"optionKey": "sms"})).await;
    assert_eq!((s, err(&r)), (403, "UNAUTHORIZED"));
}

#[tokio::test]
async fn webhooks_api() {
    let env = Env::start().await;
    let url = env.team("/webhooks");
    let (status, resp) = env.get(&url).await;
    assert_eq!(status, 200);
    let hooks = resp["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0]["url"], env.hooks.url.as_str());
    assert_eq!(hooks[0]["signing_secret"], canopy_support::SECRET);
    assert_eq!(
        (
            hooks[0]["is_sandbox"].as_bool(),
            hooks[0]["is_active"].as_bool()
        ),
        (Some(true), Some(true))
    );

    let (status, resp) = env.post(&url, json!({"hookUrl": "https://example.com/hook", "eventTypes": ["COMPLETE", "AUTH_STATUS"]})).await;
    assert_eq!(status, 200, "{resp}");
    let id = resp["webhook_id"].as_str().unwrap().to_owned();
    assert!(resp["signing_secret"].as_str().unwrap().len() >= 32);
    let (status, resp) = env
        .post(
            &url,
            json!({"hookUrl": "not a url", "eventTypes": ["COMPLETE"]}),
        )
        .await;
    assert_eq!((status, err(&resp)), (400, "INVALID_URL"));
    let (status, resp) = env
        .post(
            &url,
            json!({"hookUrl": "https://example.com/h", "eventTypes": ["NOPE"]}),
        )
        .await;
    assert_eq!((status, err(&resp)), (400, "INVALID_EVENT_TYPE"));
    let (status, resp) = env
        .post(&url, json!({"hookUrl": "https://example.com/h"}))
        .await;
    assert_eq!((status, err(&resp)), (400, "INVALID_EVENT_TYPE"));

    let one = format!("{url}/{id}");
    let (status, resp) = env
        .send(
            Method::PATCH,
            &one,
            Some(json!({"isActive": false, "eventTypes": ["COMPLETE"]})),
        )
        .await;
    assert_eq!((status, resp), (200, json!({"success": true})));
    let (_, resp) = env.get(&url).await;
    let hook = resp["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["webhook_id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(hook["is_active"], false);
    assert_eq!(hook["event_types"], json!(["COMPLETE"]));
    let (status, resp) = env
        .send(Method::PATCH, &one, Some(json!({"isActive": "no"})))
        .await;
    assert_eq!((status, err(&resp)), (400, "INVALID_IS_ACTIVE"));
    let (status, resp) = env
        .send(
            Method::PATCH,
            &format!("{url}/6b1d1a8e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"),
            Some(json!({"isActive": true})),
        )
        .await;
    assert_eq!((status, err(&resp)), (400, "NOT_FOUND"));
    let (status, resp) = env
        .send(
            Method::PATCH,
            &format!("{url}/xyz"),
            Some(json!({"isActive": true})),
        )
        .await;
    assert_eq!((status, err(&resp)), (400, "INVALID_WEBHOOK_ID"));

    let (status, resp) = env.send(Method::DELETE, &one, None).await;
    assert_eq!((status, resp), (200, json!({"success": true})));
    let (status, resp) = env.send(Method::DELETE, &one, None).await;
    assert_eq!((status, err(&resp)), (400, "INVALID_WEBHOOK_ID"));
}

#[tokio::test]
async fn an_inactive_webhook_gets_nothing_and_event_types_filter() {
    let env = Env::start().await;
    let second = canopy_support::Receiver::start().await;
    let (_, resp) = env
        .post(
            &env.team("/webhooks"),
            json!({"hookUrl": second.url, "eventTypes": ["COMPLETE"]}),
        )
        .await;
    let secret = resp["signing_secret"].as_str().unwrap().to_owned();
    let pull = env.linked_pull("user_good").await;
    let pull_id = pull["pull_id"].as_str().unwrap();
    let got = second.wait_event("COMPLETE", Some(pull_id)).await;
    assert!(
        canopy_support::verify_signature(&secret, &got.signature().unwrap(), &got.body),
        "own secret per webhook"
    );
    env.hooks.wait_event("COMPLETE", Some(pull_id)).await;
    assert!(
        second.all().iter().all(|r| r.event_type() == "COMPLETE"),
        "only subscribed types"
    );

    let id = resp["webhook_id"].as_str().unwrap();
    env.send(
        Method::PATCH,
        &env.team(&format!("/webhooks/{id}")),
        Some(json!({"isActive": false})),
    )
    .await;
    let before = second.all().len();
    let pull2 = env.linked_pull("user_good").await;
    env.hooks
        .wait_event("COMPLETE", pull2["pull_id"].as_str())
        .await;
    // Deliveries leave in order from one queue, so the first receiver's COMPLETE being in
    // means the second one's would have been sent already.
    env.sandbox
        .deliveries()
        .wait_for(WAIT, |a| {
            a.event_type == "COMPLETE" && a.body.contains(pull2["pull_id"].as_str().unwrap())
        })
        .await
        .unwrap();
    assert_eq!(second.all().len(), before);
}

#[tokio::test]
async fn consent_tos_carriers_health() {
    let env = Env::start().await;
    let (status, tos) = status_json(env.http.get(env.api("/tos")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(tos["terms_version"], 1);
    assert!(tos["terms_html"].as_str().unwrap().contains("<html"));

    let good = json!({"device_identifier": "127.0.0.1", "terms_version": 1, "consent_language": "By clicking Connect you agree"});
    let (status, resp) = env.post(&env.api("/consent"), good.clone()).await;
    assert_eq!(status, 200);
    assert!(uuid::Uuid::parse_str(resp["consent_token"].as_str().unwrap()).is_ok());
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("device_identifier");
    let (status, resp) = env.post(&env.api("/consent"), missing).await;
    assert_eq!((status, err(&resp)), (400, "MISSING_DEVICE_IDENTIFIER"));
    let mut long = good.clone();
    long["consent_language"] = json!("x".repeat(1025));
    let (status, resp) = env.post(&env.api("/consent"), long).await;
    assert_eq!((status, err(&resp)), (400, "CONSENT_LANGUAGE_TOO_LONG"));
    let mut empty = good.clone();
    empty["consent_language"] = json!("");
    let (status, resp) = env.post(&env.api("/consent"), empty).await;
    assert_eq!((status, err(&resp)), (400, "INVALID_CONSENT_LANGUAGE"));
    let mut version = good.clone();
    version["terms_version"] = json!(99);
    let (status, resp) = env.post(&env.api("/consent"), version).await;
    assert_eq!(
        (status, err(&resp)),
        (404, "INVALID_PRIVACY_POLICY_TERM_ID")
    );
    let r = env
        .http
        .post(env.api("/consent"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let (status, carriers) =
        status_json(env.http.get(env.api("/carriers")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(
        carriers
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["carrier_id"] == "statefarm" && c["name"] == "State Farm")
    );
    assert!(carriers[0].get("usernameFieldPlaceholder").is_some());
    let (status, c) = status_json(
        env.http
            .get(env.api("/carriers/geico"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, c["name"].as_str()), (200, Some("GEICO")));
    let r = env
        .http
        .get(env.api("/carriers/acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let (status, h) = status_json(env.http.get(env.api("/health")).send().await.unwrap()).await;
    assert_eq!((status, h), (200, json!({"healthy": true})));
    let (status, body) = env.get(&env.api("/no/such/route")).await;
    assert_eq!((status, err(&body)), (404, "NOT_FOUND"));
}
