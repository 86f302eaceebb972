//! Scenario controls under `/_sandbox/axle` (no credentials: sandbox only).
//!
//! | method & path | effect |
//! |---|---|
//! | `GET /state` | ignitions, accounts (with access tokens), policies (current + renewal) |
//! | `GET /ignitions/{token}` | one Ignition session |
//! | `POST /ignitions/{token}/open` | `ignition.opened` |
//! | `POST /ignitions/{token}/sign-in` `{carrier?, username, password}` | as the hosted page's sign-in (carrier defaults to `state-farm`) |
//! | `POST /ignitions/{token}/exit` `{step?}` | `ignition.exited` |
//! | `GET /accounts/{id}` | Account + `accessToken`, `monitored` |
//! | `POST /accounts/{id}/modify` `{firstName?, …}` | `account.modified` |
//! | `POST /accounts/{id}/retrying` | `account.retrying` |
//! | `POST /accounts/{id}/disconnect` `{status}` | `account.disconnected` |
//! | `POST /accounts/{id}/event` `{type, data?}` | any event type for the account |
//! | `GET /policies/{id}` | current term (`?term=renewal` for the renewal) |
//! | `POST /policies/{id}/modify` `{isActive?, coverages?, …}` | `policy.modified` |
//! | `POST /policies/{id}/cancel` | `policy.modified` with `isActive` → false |
//! | `POST /policies/{id}/renewal` `{overrides?}` | `policy.renewal-available` |
//! | `POST /policies/{id}/start-renewal-term` | the renewal becomes current: `policy.modified` |
//! | `POST /clients` `{client_id, client_secret, destination_client_ids?}` | another client the API accepts (a platform when `destination_client_ids` is given) |
//!
//! Scenario answers are `{changes, event, data}` ([`super::ScenarioOutcome`]); errors are
//! `{"success": false, "message"}` with 400/404.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AxleError, AxleSim};

pub fn control_router(sim: AxleSim) -> Router {
    Router::new()
        .route(
            "/state",
            get(|State(sim): State<AxleSim>| async move { Json(sim.snapshot()) }),
        )
        .route("/ignitions/{token}", get(get_ignition))
        .route("/ignitions/{token}/open", post(open_ignition))
        .route("/ignitions/{token}/sign-in", post(sign_in))
        .route("/ignitions/{token}/exit", post(exit_ignition))
        .route("/accounts/{id}", get(get_account))
        .route("/accounts/{id}/modify", post(modify_account))
        .route("/accounts/{id}/retrying", post(account_retrying))
        .route("/accounts/{id}/disconnect", post(disconnect))
        .route("/accounts/{id}/event", post(custom_event))
        .route("/policies/{id}", get(get_policy))
        .route("/policies/{id}/modify", post(modify_policy))
        .route("/policies/{id}/cancel", post(cancel_policy))
        .route("/policies/{id}/renewal", post(renewal))
        .route(
            "/policies/{id}/start-renewal-term",
            post(start_renewal_term),
        )
        .route("/clients", post(add_client))
        .with_state(sim)
}

type Answer = Result<Response, AxleError>;

#[derive(Deserialize)]
struct NewClient {
    client_id: String,
    client_secret: String,
    #[serde(default)]
    destination_client_ids: Option<Vec<String>>,
}

async fn add_client(State(sim): State<AxleSim>, body: Bytes) -> Answer {
    let new: NewClient = serde_json::from_slice(&body)
        .map_err(|e| AxleError::BadRequest(format!("bad JSON body: {e}")))?;
    if new.client_id.trim().is_empty() || new.client_secret.is_empty() {
        return Err(AxleError::BadRequest(
            "client_id and client_secret must not be empty".into(),
        ));
    }
    let client_id = new.client_id.clone();
    sim.add_account(super::AxleAccount {
        client_id: new.client_id,
        client_secret: new.client_secret,
        destination_client_ids: new.destination_client_ids,
    });
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({ "client_id": client_id })),
    )
        .into_response())
}

fn body_json(body: &Bytes) -> Result<Value, AxleError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| AxleError::BadRequest(format!("Invalid JSON body: {e}")))
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

async fn get_ignition(State(sim): State<AxleSim>, Path(token): Path<String>) -> Answer {
    let ign = sim
        .ignition(&token)
        .ok_or_else(|| AxleError::NotFound("Ignition not found".into()))?;
    Ok(Json(ign).into_response())
}

async fn open_ignition(State(sim): State<AxleSim>, Path(token): Path<String>) -> Answer {
    Ok(Json(sim.open_ignition(&token)?).into_response())
}

async fn sign_in(State(sim): State<AxleSim>, Path(token): Path<String>, body: Bytes) -> Answer {
    let b = body_json(&body)?;
    let carrier = field(&b, "carrier").unwrap_or("state-farm");
    let username = field(&b, "username")
        .ok_or_else(|| AxleError::BadRequest("username is required".into()))?;
    let password = field(&b, "password")
        .ok_or_else(|| AxleError::BadRequest("password is required".into()))?;
    Ok(Json(sim.sign_in(&token, carrier, username, password)?).into_response())
}

async fn exit_ignition(
    State(sim): State<AxleSim>,
    Path(token): Path<String>,
    body: Bytes,
) -> Answer {
    let b = body_json(&body)?;
    let step = field(&b, "step").unwrap_or("carrier-select");
    let redirect = sim.exit_ignition(&token, step)?;
    Ok(Json(json!({ "redirect": redirect })).into_response())
}

async fn get_account(State(sim): State<AxleSim>, Path(id): Path<String>) -> Answer {
    let account = sim
        .account(&id)
        .ok_or_else(|| AxleError::NotFound("Account not found".into()))?;
    Ok(Json(json!({
        "account": account,
        "accessToken": sim.access_token(&id),
        "monitored": sim.is_monitored(&id),
    }))
    .into_response())
}

async fn modify_account(State(sim): State<AxleSim>, Path(id): Path<String>, body: Bytes) -> Answer {
    Ok(Json(sim.modify_account(&id, &body_json(&body)?)?).into_response())
}

async fn account_retrying(State(sim): State<AxleSim>, Path(id): Path<String>) -> Answer {
    Ok(Json(sim.account_retrying(&id)?).into_response())
}

async fn disconnect(State(sim): State<AxleSim>, Path(id): Path<String>, body: Bytes) -> Answer {
    let b = body_json(&body)?;
    let status = field(&b, "status").unwrap_or("credentials-expired");
    if status == "active" {
        return Err(AxleError::BadRequest(
            "status must be a disconnected status".into(),
        ));
    }
    Ok(Json(sim.disconnect_account(&id, status)?).into_response())
}

async fn custom_event(State(sim): State<AxleSim>, Path(id): Path<String>, body: Bytes) -> Answer {
    let b = body_json(&body)?;
    let event_type =
        field(&b, "type").ok_or_else(|| AxleError::BadRequest("type is required".into()))?;
    let data = b.get("data").cloned().unwrap_or_else(|| json!({}));
    Ok(Json(json!({ "event": sim.send_account_event(&id, event_type, data)? })).into_response())
}

#[derive(Deserialize)]
struct TermQuery {
    term: Option<String>,
}

async fn get_policy(
    State(sim): State<AxleSim>,
    Path(id): Path<String>,
    Query(q): Query<TermQuery>,
) -> Answer {
    let policy = if q.term.as_deref() == Some("renewal") {
        sim.policy_renewal(&id)
    } else {
        sim.policy(&id)
    };
    Ok(Json(policy.ok_or_else(|| AxleError::NotFound("Policy not found".into()))?).into_response())
}

async fn modify_policy(State(sim): State<AxleSim>, Path(id): Path<String>, body: Bytes) -> Answer {
    Ok(Json(sim.modify_policy(&id, &body_json(&body)?)?).into_response())
}

async fn cancel_policy(State(sim): State<AxleSim>, Path(id): Path<String>) -> Answer {
    Ok(Json(sim.cancel_policy(&id)?).into_response())
}

async fn renewal(State(sim): State<AxleSim>, Path(id): Path<String>, body: Bytes) -> Answer {
    let b = body_json(&body)?;
    Ok(Json(sim.make_renewal_available(&id, b.get("overrides"))?).into_response())
}

async fn start_renewal_term(State(sim): State<AxleSim>, Path(id): Path<String>) -> Answer {
    Ok(Json(sim.start_renewal_term(&id)?).into_response())
}
