//! Sandbox controls for Canopy, mounted at `/_sandbox/canopy` (no credentials):
//!
//! | route | effect |
//! |---|---|
//! | `GET  /state` | config, accounts, pulls, monitorings, webhooks |
//! | `POST /reset` | forget everything but the configured webhooks |
//! | `POST /connect` `{carrier, username, password, meta_data?}` | the consumer signs in (as the widget does): `{pull_id, pull_jwt, status_url}` |
//! | `GET  /pulls/{pull_id}` | the pull, as the API returns it |
//! | `POST /pulls/{pull_id}/events` `{event_type, data?, status?}` | send one webhook of any type for the pull |
//! | `POST /monitorings/{id}/refresh` | refresh now (same rules as the API): `{pull_id}` |
//! | `POST /monitorings/run-due` | refresh every monitoring due on the sandbox clock: `{pull_ids}` |
//! | `POST /scenario` ([`super::Scenario`]) | change the carrier's data / credentials: [`super::ScenarioOutcome`] |
//! | `POST /hold` `{hold: bool}` | hold pulls before their data arrives |
//! | `POST /signature` `{mode: valid\|wrong_secret\|stale\|missing, seconds?}` | how webhooks are signed |
//! | `POST /webhooks` `{url, signing_secret?, event_types?}` | register a webhook as the dashboard would (all event types by default) |
//! | `POST /teams` `{team_id, client_id, client_secret, public_alias, widget_id?, webhooks?: [{url, signing_secret}]}` | another team, with its key, link and webhooks |

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CanopyError, CanopySim, ConnectRequest, Scenario, SignatureMode};

pub fn router(sim: CanopySim) -> Router {
    Router::new()
        .route("/state", get(state))
        .route("/reset", post(reset))
        .route("/connect", post(connect))
        .route("/pulls/{pull_id}", get(pull))
        .route("/pulls/{pull_id}/events", post(send_event))
        .route("/monitorings/run-due", post(run_due))
        .route("/monitorings/{monitoring_id}/refresh", post(refresh))
        .route("/scenario", post(scenario))
        .route("/hold", post(hold))
        .route("/signature", post(signature))
        .route("/webhooks", post(register_webhook))
        .route("/teams", post(add_team))
        .with_state(sim)
}

type ControlResult = Result<Response, CanopyError>;

#[derive(Deserialize)]
struct NewTeam {
    team_id: String,
    client_id: String,
    client_secret: String,
    public_alias: String,
    #[serde(default)]
    widget_id: Option<String>,
    #[serde(default)]
    webhooks: Vec<super::CanopyWebhookConfig>,
}

async fn add_team(State(sim): State<CanopySim>, body: axum::body::Bytes) -> ControlResult {
    let new: NewTeam = parse(&body)?;
    let blank = [
        &new.team_id,
        &new.client_id,
        &new.client_secret,
        &new.public_alias,
    ]
    .iter()
    .any(|v| v.trim().is_empty());
    if blank {
        return Err(CanopyError::Control(
            "team_id, client_id, client_secret and public_alias must not be empty".into(),
        ));
    }
    let mut team = super::CanopyTeam::new(
        new.team_id,
        new.client_id,
        new.client_secret,
        new.public_alias,
    );
    if let Some(widget_id) = new.widget_id {
        team.widget_id = widget_id;
    }
    team.webhooks = new.webhooks;
    let team_id = team.team_id.clone();
    sim.add_team(team);
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({ "team_id": team_id })),
    )
        .into_response())
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CanopyError> {
    serde_json::from_slice(body).map_err(|e| CanopyError::Control(format!("bad JSON body: {e}")))
}

async fn state(State(sim): State<CanopySim>) -> Json<Value> {
    let cfg = sim.config();
    let body = sim.with_state(|st| {
        let mut accounts: Vec<Value> = st
            .accounts
            .values()
            .map(|a| {
                json!({
                    "account_identifier": a.account_identifier,
                    "carrier": a.carrier.carrier_id,
                    "username": a.login.username(),
                    "credentials": a.credentials,
                    "policies": a.data.policies.iter().map(|p| json!({
                        "carrier_policy_number": p.carrier_policy_number,
                        "policy_type": p.policy_type,
                        "status": p.status,
                        "total_premium_cents": p.total_premium_cents,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        accounts.sort_by_key(|a| {
            a["account_identifier"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        });
        let pulls: Vec<Value> = st
            .pull_order
            .iter()
            .filter_map(|id| st.pulls.get(id))
            .map(|r| {
                json!({
                    "pull_id": r.pull.pull_id,
                    "status": r.pull.status,
                    "account_identifier": r.pull.account_identifier,
                    "monitoring_id": r.monitoring_id,
                    "created_at": r.pull.created_at,
                    "auth_sequence": r.auth_sequence,
                })
            })
            .collect();
        let monitorings: Vec<Value> = st
            .monitoring_order
            .iter()
            .filter_map(|id| st.monitorings.get(id))
            .map(|m| {
                json!({
                    "monitoring": m.monitoring,
                    "initial_pull_id": m.initial_pull_id,
                    "pull_ids": m.pull_ids,
                    "account_identifier": m.account_identifier,
                })
            })
            .collect();
        json!({
            "team_id": cfg.team_id,
            "client_id": cfg.client_id,
            "public_alias": cfg.public_alias,
            "widget_id": cfg.widget_id,
            "api_base_url": sim.api_base_url(),
            "widget_url": sim.widget_url(),
            "signature_mode": st.signature_mode,
            "accounts": accounts,
            "pulls": pulls,
            "monitorings": monitorings,
            "webhooks": st.webhooks,
        })
    });
    Json(body)
}

async fn reset(State(sim): State<CanopySim>) -> Json<Value> {
    sim.reset();
    Json(json!({ "ok": true }))
}

async fn connect(State(sim): State<CanopySim>, body: axum::body::Bytes) -> ControlResult {
    let req: ConnectRequest = parse(&body)?;
    let pull_id = sim.connect(req)?;
    let jwt = sim.issue_jwt(&pull_id);
    let mut status_url =
        url::Url::parse(&format!("{}/pull/{pull_id}", sim.widget_url())).expect("url parses");
    status_url.query_pairs_mut().append_pair("token", &jwt);
    Ok(
        Json(json!({ "pull_id": pull_id, "pull_jwt": jwt, "status_url": status_url.to_string() }))
            .into_response(),
    )
}

async fn pull(State(sim): State<CanopySim>, Path(pull_id): Path<String>) -> ControlResult {
    let p = sim
        .pull(&pull_id)
        .ok_or_else(|| CanopyError::Control(format!("unknown pull {pull_id}")))?;
    Ok(Json(sim.pull_json(&p)).into_response())
}

#[derive(Deserialize)]
struct EventReq {
    event_type: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    status: Option<String>,
}

async fn send_event(
    State(sim): State<CanopySim>,
    Path(pull_id): Path<String>,
    body: axum::body::Bytes,
) -> ControlResult {
    let req: EventReq = parse(&body)?;
    sim.send_custom_event(&pull_id, &req.event_type, req.data, req.status.as_deref())?;
    Ok(Json(json!({ "ok": true })).into_response())
}

async fn refresh(State(sim): State<CanopySim>, Path(monitoring_id): Path<String>) -> ControlResult {
    let pull_id = sim.refresh_monitoring(&monitoring_id)?;
    Ok(Json(json!({ "pull_id": pull_id })).into_response())
}

async fn run_due(State(sim): State<CanopySim>) -> Json<Value> {
    Json(json!({ "pull_ids": sim.run_due_monitorings() }))
}

async fn scenario(State(sim): State<CanopySim>, body: axum::body::Bytes) -> ControlResult {
    let s: Scenario = parse(&body)?;
    let outcome = sim.apply(s)?;
    Ok(Json(outcome).into_response())
}

#[derive(Deserialize)]
struct HoldReq {
    hold: bool,
}

async fn hold(State(sim): State<CanopySim>, body: axum::body::Bytes) -> ControlResult {
    let req: HoldReq = parse(&body)?;
    sim.hold_pulls(req.hold);
    Ok(Json(json!({ "hold": req.hold })).into_response())
}

async fn signature(State(sim): State<CanopySim>, body: axum::body::Bytes) -> ControlResult {
    let mode: SignatureMode = parse(&body)?;
    sim.set_signature_mode(mode);
    Ok(Json(json!({ "signature_mode": mode })).into_response())
}

#[derive(Deserialize)]
struct WebhookReq {
    url: String,
    #[serde(default)]
    signing_secret: Option<String>,
    #[serde(default)]
    event_types: Vec<String>,
}

async fn register_webhook(State(sim): State<CanopySim>, body: axum::body::Bytes) -> ControlResult {
    let req: WebhookReq = parse(&body)?;
    let types: Vec<&str> = req.event_types.iter().map(String::as_str).collect();
    let hook = sim.register_webhook(&req.url, req.signing_secret.as_deref(), &types);
    Ok(Json(hook).into_response())
}
