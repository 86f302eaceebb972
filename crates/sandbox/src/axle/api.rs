//! Axle's REST API, mounted under `/axle` (so `{base}/axle` replaces `https://sandbox.axle.insure`).
//!
//! Fault endpoint names: `axle.ignition.start`, `axle.token.exchange`, `axle.token.descope`,
//! `axle.accounts.get`, `axle.policies.get`, `axle.policies.validate`, `axle.sandbox.account_event`,
//! `axle.sandbox.policy_event`, `axle.documents.get`, `axle.carriers.list`,
//! `axle.platform.clients`, `axle.ignition_ui`.
//!
//! Each client sees only what it created: the handlers pass the authenticated caller's client
//! on, and a token or code of another client reads as an invalid one.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AxleCaller, AxleError, AxleSim, StartIgnition, fixtures, new_id, ui};
use crate::faults::guard;

pub fn router(sim: AxleSim) -> Router {
    let f = sim.context().faults.clone();
    let calls = sim.context().calls.clone();
    let clock = sim.context().clock.clone();
    Router::new()
        .route(
            "/ignition",
            guard(&f, "axle.ignition.start", post(start_ignition)),
        )
        .route(
            "/token/exchange",
            guard(&f, "axle.token.exchange", post(exchange)),
        )
        .route(
            "/token/descope",
            guard(&f, "axle.token.descope", post(descope)),
        )
        .route(
            "/accounts/{id}",
            guard(&f, "axle.accounts.get", get(get_account)),
        )
        .route(
            "/policies/{id}",
            guard(&f, "axle.policies.get", get(get_policy)),
        )
        .route(
            "/policies/{id}/validate",
            guard(&f, "axle.policies.validate", post(validate_policy)),
        )
        .route(
            "/sandbox/accounts/{id}/event",
            guard(&f, "axle.sandbox.account_event", post(account_event)),
        )
        // The sandbox guide spells it in the singular; the API reference in the plural.
        .route(
            "/sandbox/account/{id}/event",
            guard(&f, "axle.sandbox.account_event", post(account_event)),
        )
        .route(
            "/sandbox/policies/{id}/event",
            guard(&f, "axle.sandbox.policy_event", post(policy_event)),
        )
        .route(
            "/documents/{policy_id}/{index}",
            guard(&f, "axle.documents.get", get(document)),
        )
        .route(
            "/carriers",
            guard(&f, "axle.carriers.list", get(list_carriers)),
        )
        .route(
            "/platform/clients",
            guard(&f, "axle.platform.clients", get(platform_clients)),
        )
        .merge(ui::router(&f))
        .fallback(|| async { AxleError::NotFound("Not found".into()) })
        .layer(from_fn(request_id))
        .layer(from_fn(move |req, next| {
            crate::calls::record("axle", calls.clone(), clock.clone(), who, req, next)
        }))
        .with_state(sim)
}

/// The identifiers an Axle call carries (never its secret or access token).
fn who(_path: &str, headers: &HeaderMap) -> crate::calls::Caller {
    crate::calls::Caller {
        client_id: crate::calls::header(headers, "x-client-id"),
        team_id: None,
        destination_client_id: crate::calls::header(headers, "x-destination-client-id"),
    }
}

/// Every Axle response carries a fresh `x-axle-request-id`, injected faults included.
async fn request_id(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&new_id("req_")) {
        response.headers_mut().insert("x-axle-request-id", v);
    }
    response
}

impl IntoResponse for AxleError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            axum::Json(json!({ "success": false, "message": self.to_string() })),
        )
            .into_response()
    }
}

fn ok(data: impl serde::Serialize) -> Response {
    axum::Json(json!({ "success": true, "data": data })).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn client(sim: &AxleSim, headers: &HeaderMap) -> Result<AxleCaller, AxleError> {
    sim.authenticate(
        header(headers, "x-client-id"),
        header(headers, "x-client-secret"),
        header(headers, "x-destination-client-id"),
    )
}

/// `x-access-token`, which must belong to the caller's client: another client's token is
/// answered as an invalid one, so that it reveals nothing.
fn owned_token<'a>(
    sim: &AxleSim,
    caller: &AxleCaller,
    headers: &'a HeaderMap,
) -> Result<&'a str, AxleError> {
    let token = access_token(headers)?;
    match sim.token_owner(token) {
        Some(owner) if owner == caller.client() => Ok(token),
        _ => Err(AxleError::InvalidAccessToken),
    }
}

fn access_token(headers: &HeaderMap) -> Result<&str, AxleError> {
    match header(headers, "x-access-token") {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(AxleError::BadRequest(
            "x-access-token header is required".into(),
        )),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, AxleError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| AxleError::BadRequest(format!("Invalid JSON body: {e}")))
}

async fn start_ignition(
    State(sim): State<AxleSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AxleError> {
    let caller = client(&sim, &headers)?;
    if headers.contains_key("x-access-token") {
        return Err(AxleError::BadRequest(
            "x-access-token is no longer accepted by Start Ignition; use Descope Token instead"
                .into(),
        ));
    }
    let req: StartIgnition = json_body(&body)?;
    let started = sim.start_ignition_for(req, &caller)?;
    Ok(ok(started))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExchangeBody {
    auth_code: Option<String>,
}

async fn exchange(
    State(sim): State<AxleSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AxleError> {
    let caller = client(&sim, &headers)?;
    let body: ExchangeBody = json_body(&body)?;
    let code = body
        .auth_code
        .ok_or_else(|| AxleError::BadRequest("authCode is required".into()))?;
    Ok(ok(sim.exchange_for(&code, Some(caller.client()))?))
}

#[derive(Deserialize)]
struct DescopeBody {
    scope: Option<String>,
}

async fn descope(
    State(sim): State<AxleSim>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AxleError> {
    let caller = client(&sim, &headers)?;
    let token = owned_token(&sim, &caller, &headers)?;
    let body: DescopeBody = json_body(&body)?;
    match body.scope.as_deref() {
        Some("monitoring") => {}
        Some(other) => {
            return Err(AxleError::BadRequest(format!(
                "Invalid scope {other:?}: must be \"monitoring\""
            )));
        }
        None => return Err(AxleError::BadRequest("scope is required".into())),
    }
    let token = sim.descope(token)?;
    Ok(ok(json!({ "accessToken": token })))
}

#[derive(Deserialize)]
struct ReadQuery {
    expand: Option<String>,
    term: Option<String>,
}

fn parse_expand(q: &ReadQuery) -> Result<bool, AxleError> {
    match q.expand.as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(AxleError::BadRequest(format!(
            "Invalid expand {other:?}: must be true or false"
        ))),
    }
}

async fn get_account(
    State(sim): State<AxleSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Response, AxleError> {
    let caller = client(&sim, &headers)?;
    let token = owned_token(&sim, &caller, &headers)?;
    let expand = parse_expand(&q)?;
    Ok(ok(sim.read_account(token, &id, expand)?))
}

async fn get_policy(
    State(sim): State<AxleSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Response, AxleError> {
    let caller = client(&sim, &headers)?;
    let token = owned_token(&sim, &caller, &headers)?;
    let expand = parse_expand(&q)?;
    let renewal = match q.term.as_deref() {
        None | Some("current") => false,
        Some("renewal") => true,
        Some(other) => {
            return Err(AxleError::BadRequest(format!(
                "Invalid term {other:?}: must be current or renewal"
            )));
        }
    };
    Ok(ok(sim.read_policy(token, &id, expand, renewal)?))
}

/// The rules Validate Policy takes: "Available options: `policy-active`,
/// `rental-covered-for-collision`" (docs.axle.insure/api-reference/policies/validate-policy).
const VALIDATION_RULES: [&str; 2] = ["policy-active", "rental-covered-for-collision"];

#[derive(Deserialize)]
struct ValidationRule {
    rule: String,
}

/// `POST /policies/{id}/validate`, body `[{"rule": …}, …]`: `{overall, summary, rules}`
/// (docs.axle.insure/guides/policy-validation).
async fn validate_policy(
    State(sim): State<AxleSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AxleError> {
    let caller = client(&sim, &headers)?;
    let token = owned_token(&sim, &caller, &headers)?;
    let rules: Vec<ValidationRule> = serde_json::from_slice(&body).map_err(|e| {
        AxleError::BadRequest(format!(
            "Invalid body: expected an array of {{\"rule\": …}} objects ({e})"
        ))
    })?;
    if rules.is_empty() {
        return Err(AxleError::BadRequest(
            "At least one rule is required".into(),
        ));
    }
    if let Some(bad) = rules
        .iter()
        .find(|r| !VALIDATION_RULES.contains(&r.rule.as_str()))
    {
        return Err(AxleError::BadRequest(format!(
            "Invalid rule {:?}: must be one of {}",
            bad.rule,
            VALIDATION_RULES.join(", ")
        )));
    }
    let policy = sim.read_policy(token, &id, false, false)?;
    let names: Vec<&str> = rules.iter().map(|r| r.rule.as_str()).collect();
    Ok(ok(validation(&policy, &names)))
}

/// Each rule's status and the overall status, as the Policy Validation guide describes them.
fn validation(policy: &Value, rules: &[&str]) -> Value {
    let mut summary = serde_json::Map::new();
    let mut details = serde_json::Map::new();
    for &rule in rules {
        let status = match rule {
            // "pass: The policy is currently active; fail: The policy is not currently active;
            // caution: The isActive field is null" (guide, "Policy is Active"). The guide's
            // overview calls the null case `unknown`; the rule's own table is followed.
            "policy-active" => match policy.get("isActive").and_then(Value::as_bool) {
                Some(true) => "pass",
                Some(false) => "fail",
                None => "caution",
            },
            // The simulator knows nothing of rental terms: "unknown: Not enough data was
            // available to determine the outcome of the Rule".
            _ => "unknown",
        };
        summary.insert(rule.to_owned(), json!(status));
        details.insert(rule.to_owned(), json!({ "status": status }));
    }
    let statuses: Vec<&str> = summary.values().filter_map(Value::as_str).collect();
    // "fail means that one or more specified Rules evaluated to a status of fail; caution
    // means that one or more specified Rules evaluated to a status of caution". The overall
    // is only ever pass, fail or caution, so a rule left `unknown` cannot make it `pass`:
    // it reads as caution (a manual review), which is inferred.
    let overall = if statuses.contains(&"fail") {
        "fail"
    } else if statuses.iter().any(|s| *s == "caution" || *s == "unknown") {
        "caution"
    } else {
        "pass"
    };
    json!({ "overall": overall, "summary": summary, "rules": details })
}

/// `GET /carriers` (docs.axle.insure/api-reference/carriers/get-carriers): the carriers Axle
/// supports, for any authenticated client.
async fn list_carriers(
    State(sim): State<AxleSim>,
    headers: HeaderMap,
) -> Result<Response, AxleError> {
    client(&sim, &headers)?;
    let carriers: Vec<Value> = fixtures::CARRIERS
        .iter()
        .map(|(id, name)| fixtures::carrier_json(id, name))
        .collect();
    Ok(ok(carriers))
}

/// `GET /platform/clients` (docs.axle.insure/api-reference/platform/get-clients): "a list of
/// identifiers for the destination clients associated with your credential", or with
/// `expand=true` their `id` and `entity`.
async fn platform_clients(
    State(sim): State<AxleSim>,
    headers: HeaderMap,
    Query(q): Query<ReadQuery>,
) -> Result<Response, AxleError> {
    let caller = client(&sim, &headers)?;
    let expand = parse_expand(&q)?;
    let ids = sim.destination_clients(&caller.client_id);
    Ok(if expand {
        ok(ids
            .iter()
            .map(|id| json!({ "id": id, "entity": id }))
            .collect::<Vec<_>>())
    } else {
        ok(ids)
    })
}

/// Checks that the token may act on `account_id`.
fn owns_account(sim: &AxleSim, token: &str, account_id: &str) -> Result<(), AxleError> {
    if sim.account_for_token(token)? == account_id {
        Ok(())
    } else {
        Err(AxleError::NotFound("Account not found".into()))
    }
}

async fn account_event(
    State(sim): State<AxleSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AxleError> {
    let caller = client(&sim, &headers)?;
    let token = owned_token(&sim, &caller, &headers)?;
    owns_account(&sim, token, &id)?;
    let fields: Value = json_body(&body)?;
    let outcome = sim.modify_account(&id, &fields)?;
    Ok(ok(outcome.data))
}

async fn policy_event(
    State(sim): State<AxleSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AxleError> {
    let caller = client(&sim, &headers)?;
    let token = owned_token(&sim, &caller, &headers)?;
    let account = sim.account_for_token(token)?;
    let owner = sim
        .policy(&id)
        .and_then(|p| p.get("account").and_then(Value::as_str).map(str::to_owned));
    if owner.as_deref() != Some(account.as_str()) {
        return Err(AxleError::NotFound("Policy not found".into()));
    }
    let fields: Value = json_body(&body)?;
    let outcome = sim.modify_policy(&id, &fields)?;
    Ok(ok(outcome.data))
}

#[derive(Deserialize)]
struct DocQuery {
    expires: Option<i64>,
    signature: Option<String>,
}

/// The signed document URL (`documents[].url`): no Axle credentials, only the signature.
async fn document(
    State(sim): State<AxleSim>,
    Path((policy_id, index)): Path<(String, usize)>,
    Query(q): Query<DocQuery>,
) -> Response {
    let (Some(expires), Some(signature)) = (q.expires, q.signature) else {
        return (StatusCode::FORBIDDEN, "Missing signature").into_response();
    };
    match sim.verify_document(&policy_id, index, expires, &signature) {
        Some(name) => {
            let pdf = minimal_pdf(&format!("{name} - {policy_id}"));
            ([(header::CONTENT_TYPE, "application/pdf")], pdf).into_response()
        }
        None => (StatusCode::FORBIDDEN, "Invalid or expired signature").into_response(),
    }
}

/// A tiny valid one-page PDF with one line of text.
fn minimal_pdf(text: &str) -> Vec<u8> {
    let text: String = text
        .chars()
        .filter(|c| c.is_ascii() && !matches!(c, '(' | ')' | '\\'))
        .collect();
    let stream = format!("BT /F1 18 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>"
            .to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, obj) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{obj}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}
