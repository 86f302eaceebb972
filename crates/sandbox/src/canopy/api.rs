//! The Canopy REST API under `/api/v1.0.0` (mounted at `/canopy`). Each route is wrapped in a
//! fault guard named `canopy.<resource>.<operation>` (listed by `GET /_sandbox/faults/endpoints`).
//!
//! Bodies are read as raw bytes and parsed here, so that a bad body gets Canopy's
//! `{"error":"…"}` rather than the framework's own rejection.
//!
//! Several teams can be known: a key reaches only its own team's path (another team's path is
//! answered as the operation documents a wrong key or team), and within it only that team's
//! pulls, monitorings and webhooks (another team's id is answered exactly as an unknown one).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, patch, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::engine::{MonitoringPatch, new_id, new_webhook, parse_ts};
use super::model::{Pull, event_type, pull_status as ps};
use super::{CanopyError, CanopyResult, CanopySim, fixtures};
use crate::faults::guard;

type ApiResult = Result<Response, CanopyError>;

/// The terms version `GET /tos` announces and `POST /consent` accepts.
pub const TERMS_VERSION: i64 = 1;

pub fn router(sim: CanopySim) -> Router {
    let f = sim.inner.ctx.faults.clone();
    let calls = sim.inner.ctx.calls.clone();
    let clock = sim.inner.ctx.clock.clone();
    let api = Router::new()
        .route(
            "/teams/{team_id}/pulls",
            guard(&f, "canopy.pulls.list", get(list_pulls)),
        )
        .route(
            "/teams/{team_id}/pulls/{pull_id}",
            guard(&f, "canopy.pulls.get", get(get_pull)).merge(guard(
                &f,
                "canopy.pulls.patch",
                patch(patch_pull),
            )),
        )
        .route(
            "/teams/{team_id}/pulls/{pull_id}/documents/{document_id}",
            guard(&f, "canopy.documents.get", get(get_document)),
        )
        .route(
            "/teams/{team_id}/pulls/{pull_id}/documents/{document_id}/pdf",
            guard(&f, "canopy.documents.pdf", get(get_document_pdf)),
        )
        .route(
            "/teams/{team_id}/monitorings",
            guard(&f, "canopy.monitorings.list", get(list_monitorings)).merge(guard(
                &f,
                "canopy.monitorings.create",
                post(create_monitoring),
            )),
        )
        .route(
            "/teams/{team_id}/monitorings/{monitoring_id}",
            guard(&f, "canopy.monitorings.get", get(get_monitoring))
                .merge(guard(
                    &f,
                    "canopy.monitorings.patch",
                    patch(patch_monitoring),
                ))
                .merge(guard(
                    &f,
                    "canopy.monitorings.delete",
                    delete(delete_monitoring),
                )),
        )
        .route(
            "/teams/{team_id}/monitorings/{monitoring_id}/refresh",
            guard(&f, "canopy.monitorings.refresh", post(refresh_monitoring)),
        )
        .route(
            "/teams/{team_id}/monitorings/{monitoring_id}/reconnectToken",
            guard(
                &f,
                "canopy.monitorings.reconnect_token",
                get(monitoring_reconnect_token),
            ),
        )
        .route(
            "/teams/{team_id}/monitorings/{monitoring_id}/events",
            guard(&f, "canopy.monitorings.events", get(monitoring_events)),
        )
        .route(
            "/teams/{team_id}/webhooks",
            guard(&f, "canopy.webhooks.list", get(list_webhooks)).merge(guard(
                &f,
                "canopy.webhooks.create",
                post(create_webhook),
            )),
        )
        .route(
            "/teams/{team_id}/webhooks/{webhook_id}",
            guard(&f, "canopy.webhooks.patch", patch(patch_webhook)).merge(guard(
                &f,
                "canopy.webhooks.delete",
                delete(delete_webhook),
            )),
        )
        .route(
            "/widget/pull/reconnectToken",
            guard(
                &f,
                "canopy.widget.reconnect_token",
                post(redeem_reconnect_token),
            ),
        )
        .route(
            "/widget/pull/{pull_id}/connect",
            guard(&f, "canopy.widget.connect", post(widget_connect)),
        )
        .route(
            "/widget/pull/{pull_id}/idvoptions",
            guard(&f, "canopy.widget.idvoptions", post(widget_idvoptions)),
        )
        .route(
            "/widget/pull/{pull_id}/idv",
            guard(&f, "canopy.widget.idv", post(widget_idv)),
        )
        .route("/consent", guard(&f, "canopy.consent", post(consent)))
        .route("/tos", guard(&f, "canopy.tos", get(tos)))
        .route(
            "/carriers",
            guard(&f, "canopy.carriers.list", get(list_carriers)),
        )
        .route(
            "/carriers/{carrier_id}",
            guard(&f, "canopy.carriers.get", get(get_carrier)),
        )
        .route("/health", guard(&f, "canopy.health", get(health)))
        // A catch-all route rather than a fallback: fallbacks of twice-nested routers do not
        // reach here once the sandbox mounts this router.
        .route("/{*rest}", any(|| async { CanopyError::not_found() }))
        .layer(axum::middleware::from_fn(move |req, next| {
            crate::calls::record("canopy", calls.clone(), clock.clone(), who, req, next)
        }));
    Router::new()
        .nest("/api/v1.0.0", api)
        .route(
            "/files/{pull_id}/{document_id}",
            guard(&f, "canopy.files", get(signed_file)),
        )
        .with_state(sim)
}

// ---- auth and parsing helpers -------------------------------------------------------------

/// The identifiers a Canopy call carries: the key's client id (never its secret) and the team
/// of a `/teams/{teamId}/…` path.
fn who(path: &str, headers: &HeaderMap) -> crate::calls::Caller {
    let client_id = crate::calls::header(headers, "x-canopy-client-id")
        .or_else(|| basic_credentials(headers).map(|(id, _)| id));
    let team_id = path
        .strip_prefix("/teams/")
        .and_then(|rest| rest.split('/').next())
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    crate::calls::Caller {
        client_id,
        team_id,
        destination_client_id: None,
    }
}

/// `(client id, client secret)` of an HTTP Basic `Authorization` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let raw = header_str(headers, header::AUTHORIZATION.as_str())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())?;
    let (id, secret) = raw.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// HTTP Basic (Client ID as user, Client Secret as password) or the `x-canopy-client-id` /
/// `x-canopy-client-secret` pair, which wins when both are sent. Answers the key's team id.
fn authenticate(sim: &CanopySim, headers: &HeaderMap) -> CanopyResult<String> {
    let (id, secret) = match (
        header_str(headers, "x-canopy-client-id"),
        header_str(headers, "x-canopy-client-secret"),
    ) {
        (Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
        _ => basic_credentials(headers).ok_or_else(CanopyError::unauthorized)?,
    };
    sim.teams()
        .iter()
        .find(|t| eq(&id, &t.client_id) & eq(&secret, &t.client_secret))
        .map(|t| t.team_id.clone())
        .ok_or_else(CanopyError::unauthorized)
}

/// Authenticates and checks that the path's team is the key's team.
fn team(
    sim: &CanopySim,
    headers: &HeaderMap,
    team_id: &str,
    wrong_team: CanopyError,
) -> CanopyResult<()> {
    if authenticate(sim, headers)? != team_id {
        return Err(wrong_team);
    }
    Ok(())
}

/// A random id that names nothing: another team's pull or monitoring is looked up under it, so
/// that each operation answers it exactly as it answers an unknown id.
fn nothing() -> String {
    new_id()
}

/// `pull_id` if the pull is the team's (or unknown), else an id that names nothing.
fn own_pull(sim: &CanopySim, team_id: &str, pull_id: &str) -> String {
    match sim.pull_team(pull_id) {
        Some(owner) if owner != team_id => nothing(),
        _ => pull_id.to_owned(),
    }
}

/// `monitoring_id` if the monitoring is the team's (or unknown), else an id that names nothing.
fn own_monitoring(sim: &CanopySim, team_id: &str, monitoring_id: &str) -> String {
    match sim.monitoring_team(monitoring_id) {
        Some(owner) if owner != team_id => nothing(),
        _ => monitoring_id.to_owned(),
    }
}

fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

fn json_body(body: &Bytes, err: CanopyError) -> CanopyResult<serde_json::Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(err),
    }
}

fn query_pairs(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn query_get(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn ok(v: Value) -> ApiResult {
    Ok((StatusCode::OK, Json(v)).into_response())
}

impl CanopySim {
    /// A pull as the API shows it (`meta_data` as a string when so configured).
    pub(crate) fn pull_json(&self, pull: &Pull) -> Value {
        let mut v = serde_json::to_value(pull).expect("serialisable");
        if self.inner.cfg.pull_meta_data_as_string {
            v["meta_data"] = match &pull.meta_data {
                Value::Null => Value::Null,
                other => Value::String(other.to_string()),
            };
        }
        v
    }
}

// ---- pulls --------------------------------------------------------------------------------

async fn get_pull(
    State(sim): State<CanopySim>,
    Path((team_id, pull_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    if !is_uuid(&pull_id) {
        return Err(CanopyError::bad_request("VALIDATION_ERROR"));
    }
    let pull_id = own_pull(&sim, &team_id, &pull_id);
    // This operation answers an unknown pull with 400, as the OpenAPI document says.
    let pull = sim
        .pull(&pull_id)
        .ok_or(CanopyError::bad_request("NOT_FOUND"))?;
    ok(json!({ "success": true, "pull": sim.pull_json(&pull) }))
}

async fn patch_pull(
    State(sim): State<CanopySim>,
    Path((team_id, pull_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    let pull_id = own_pull(&sim, &team_id, &pull_id);
    let body = json_body(&body, CanopyError::bad_request("INVALID_INPUT"))?;
    let archived = match body.get("is_archived") {
        Some(Value::Bool(b)) => *b,
        _ => return Err(CanopyError::bad_request("INVALID_INPUT")),
    };
    sim.with_state(|st| {
        st.pulls
            .get_mut(&pull_id)
            .map(|r| r.pull.is_archived = archived)
            .ok_or_else(CanopyError::not_found)
    })?;
    ok(json!({ "success": true }))
}

async fn list_pulls(
    State(sim): State<CanopySim>,
    Path(team_id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    let q = query_pairs(&q);
    let invalid = || CanopyError::bad_request("VALIDATION_ERROR");
    let limit = match query_get(&q, "limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(invalid)?,
        None => 10,
    };
    let offset = match query_get(&q, "offset") {
        Some(o) => o.parse::<usize>().map_err(|_| invalid())?,
        None => 0,
    };
    let since = query_get(&q, "since")
        .map(|s| parse_ts(&s).ok_or_else(invalid))
        .transpose()?;
    let before = query_get(&q, "before")
        .map(|s| parse_ts(&s).ok_or_else(invalid))
        .transpose()?;
    let pulls: Vec<Pull> = sim.with_state(|st| {
        st.pull_order
            .iter()
            .rev()
            .filter_map(|id| st.pulls.get(id))
            .map(|r| r.pull.clone())
            .filter(|p| p.team_id == team_id)
            .filter(|p| {
                let t = parse_ts(&p.created_at);
                since.is_none_or(|s| t.is_some_and(|t| t >= s))
                    && before.is_none_or(|b| t.is_some_and(|t| t <= b))
            })
            .collect()
    });
    let total = pulls.len();
    let page: Vec<Value> = pulls
        .iter()
        .skip(offset)
        .take(limit)
        .map(|p| sim.pull_json(p))
        .collect();
    ok(json!({ "total_pulls": total, "pulls": page }))
}

/// `(pull, document)` or 404.
fn find_document(
    sim: &CanopySim,
    pull_id: &str,
    document_id: &str,
) -> CanopyResult<(Pull, super::model::Document)> {
    let pull = sim.pull(pull_id).ok_or_else(CanopyError::not_found)?;
    let doc = pull
        .documents
        .iter()
        .find(|d| d.document_id == document_id)
        .cloned()
        .ok_or_else(CanopyError::not_found)?;
    Ok((pull, doc))
}

async fn get_document(
    State(sim): State<CanopySim>,
    Path((team_id, pull_id, document_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    if !is_uuid(&pull_id) || !is_uuid(&document_id) {
        return Err(CanopyError::bad_request("VALIDATION_ERROR"));
    }
    let pull_id = own_pull(&sim, &team_id, &pull_id);
    find_document(&sim, &pull_id, &document_id)?;
    let expires = sim.inner.ctx.clock.unix_seconds() + 300;
    let sig = sim.file_signature(&pull_id, &document_id, expires);
    let url = format!(
        "{}/canopy/files/{pull_id}/{document_id}?expires={expires}&signature={sig}",
        sim.base_url()
    );
    let mut resp = (StatusCode::FOUND, Json(json!({ "url": url }))).into_response();
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&url).expect("ascii url"),
    );
    Ok(resp)
}

fn pdf_response(pull: &Pull, doc: &super::model::Document) -> Response {
    let name = format!(
        "{}_{}_{}.pdf",
        pull.first_name.as_deref().unwrap_or("Unknown"),
        pull.last_name.as_deref().unwrap_or("Unknown"),
        doc.title
    )
    .replace(['"', '/', '\\'], "_");
    let mut resp = (StatusCode::OK, pdf_bytes(&doc.title)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pdf"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

async fn get_document_pdf(
    State(sim): State<CanopySim>,
    Path((team_id, pull_id, document_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    if !is_uuid(&pull_id) || !is_uuid(&document_id) {
        return Err(CanopyError::bad_request("VALIDATION_ERROR"));
    }
    let pull_id = own_pull(&sim, &team_id, &pull_id);
    let (pull, doc) = find_document(&sim, &pull_id, &document_id)?;
    Ok(pdf_response(&pull, &doc))
}

/// The short-lived signed URL behind a document download: no Canopy credentials, but it expires.
async fn signed_file(
    State(sim): State<CanopySim>,
    Path((pull_id, document_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = query_pairs(&q);
    let expires = query_get(&q, "expires").and_then(|e| e.parse::<i64>().ok());
    let sig = query_get(&q, "signature").unwrap_or_default();
    let valid = expires.is_some_and(|e| {
        e >= sim.inner.ctx.clock.unix_seconds()
            && eq(&sig, &sim.file_signature(&pull_id, &document_id, e))
    });
    if !valid {
        return (
            StatusCode::FORBIDDEN,
            "Request has expired or the signature does not match",
        )
            .into_response();
    }
    match find_document(&sim, &pull_id, &document_id) {
        Ok((pull, doc)) => pdf_response(&pull, &doc),
        Err(_) => (StatusCode::NOT_FOUND, "Not found").into_response(),
    }
}

/// A one-page PDF showing the document's title.
pub(crate) fn pdf_bytes(title: &str) -> Vec<u8> {
    let text: String = title
        .chars()
        .filter(|c| c.is_ascii() && !matches!(c, '(' | ')' | '\\'))
        .collect();
    let stream = format!("BT /F1 14 Tf 72 720 Td ({text}) Tj ET");
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
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
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

// ---- monitorings --------------------------------------------------------------------------

async fn create_monitoring(
    State(sim): State<CanopySim>,
    Path(team_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    let invalid = || CanopyError::bad_request("INVALID_INPUT");
    let body = json_body(&body, invalid())?;
    let pull_id = body
        .get("pull_id")
        .and_then(Value::as_str)
        .filter(|p| is_uuid(p))
        .ok_or_else(invalid)?;
    let interval = body
        .get("interval")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?;
    let opt_str = |k: &str| -> CanopyResult<Option<&str>> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(invalid()),
        }
    };
    let pull_id = own_pull(&sim, &team_id, pull_id);
    let m = sim.create_monitoring_with(
        &pull_id,
        interval,
        opt_str("next_pull_date")?,
        opt_str("stop_after_date")?,
    )?;
    ok(json!({ "success": true, "monitoring": m }))
}

async fn list_monitorings(
    State(sim): State<CanopySim>,
    Path(team_id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    let q = query_pairs(&q);
    let limit = query_get(&q, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    let pull_id = query_get(&q, "pull_id");
    let account = query_get(&q, "account_identifier");
    if pull_id.is_some() && account.is_some() {
        return Err(CanopyError::bad_request("INVALID_INPUT"));
    }
    let status = query_get(&q, "status");
    let before = query_get(&q, "before");
    let list: Vec<Value> = sim.with_state(|st| {
        let mut ids: Vec<&String> = st.monitoring_order.iter().rev().collect();
        if let Some(b) = &before
            && let Some(pos) = ids.iter().position(|id| *id == b)
        {
            ids = ids.split_off(pos + 1);
        }
        ids.into_iter()
            .filter_map(|id| st.monitorings.get(id))
            .filter(|m| {
                st.pulls
                    .get(&m.initial_pull_id)
                    .is_some_and(|r| r.pull.team_id == team_id)
            })
            .filter(|m| pull_id.as_ref().is_none_or(|p| m.pull_ids.contains(p)))
            .filter(|m| account.as_ref().is_none_or(|a| &m.account_identifier == a))
            .filter(|m| status.as_ref().is_none_or(|s| &m.monitoring.status == s))
            .map(|m| serde_json::to_value(&m.monitoring).expect("serialisable"))
            .collect()
    });
    let count = list.len();
    let page: Vec<Value> = list.into_iter().take(limit).collect();
    ok(json!({ "monitorings_count": count, "monitorings": page }))
}

fn monitoring_id_ok(id: &str) -> CanopyResult<()> {
    if is_uuid(id) {
        Ok(())
    } else {
        Err(CanopyError::bad_request("INVALID_MONITORING_ID"))
    }
}

async fn get_monitoring(
    State(sim): State<CanopySim>,
    Path((team_id, monitoring_id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    monitoring_id_ok(&monitoring_id)?;
    let monitoring_id = own_monitoring(&sim, &team_id, &monitoring_id);
    let q = query_pairs(&q);
    let with_pulls = query_get(&q, "with_pulls").as_deref() == Some("true");
    let limit = query_get(&q, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    let before = query_get(&q, "before");
    sim.with_state(|st| {
        let m = st.monitorings.get(&monitoring_id).ok_or_else(CanopyError::not_found)?;
        let mut out = json!({ "monitoring": m.monitoring });
        if with_pulls {
            let mut ids: Vec<&String> = m.pull_ids.iter().rev().collect();
            if let Some(b) = &before
                && let Some(pos) = ids.iter().position(|id| *id == b)
            {
                ids = ids.split_off(pos + 1);
            }
            let pulls: Vec<Value> = ids
                .into_iter()
                .take(limit)
                .filter_map(|id| st.pulls.get(id))
                .map(|r| {
                    let p = &r.pull;
                    let newer = m.pull_ids.last() != Some(&p.pull_id);
                    let monitoring_status = match p.status.as_str() {
                        ps::SUCCESS => "COMPLETED",
                        s if ps::needs_user(s) => {
                            if newer {
                                "EXPIRED"
                            } else {
                                "WAITING_FOR_USER"
                            }
                        }
                        s if ps::is_terminal(s) => "EXPIRED",
                        _ => "PROCESSING",
                    };
                    let mut item = json!({
                        "pull_id": p.pull_id, "widget_id": p.widget_id, "created_at": p.created_at,
                        "first_name": p.first_name, "middle_name": p.middle_name, "last_name": p.last_name,
                        "email": p.email, "account_email": p.account_email, "phone": p.phone,
                        "mobile_phone": p.mobile_phone, "home_phone": p.home_phone, "work_phone": p.work_phone,
                        "work_phone_extension": p.work_phone_extension, "status": p.status,
                        "insurance_provider_name": p.insurance_provider_name, "is_archived": p.is_archived,
                        "monitoring_status": monitoring_status,
                    });
                    // The document types these fields as strings, not nullable: an unknown
                    // value is left out rather than sent as `null`.
                    if let Value::Object(fields) = &mut item {
                        fields.retain(|_, v| !v.is_null());
                    }
                    item
                })
                .collect();
            out["pulls"] = Value::Array(pulls);
        }
        ok(out)
    })
}

async fn patch_monitoring(
    State(sim): State<CanopySim>,
    Path((team_id, monitoring_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    monitoring_id_ok(&monitoring_id)?;
    let monitoring_id = own_monitoring(&sim, &team_id, &monitoring_id);
    // Canopy documents no generic INVALID_INPUT here (OpenAPI, PATCH monitorings 400): a
    // field of the wrong type is answered with that field's own code.
    let body = json_body(&body, CanopyError::bad_request("INVALID_INTERVAL"))?;
    let wrong_type = |k: &str| !matches!(body.get(k), None | Some(Value::Null | Value::String(_)));
    if wrong_type("stop_after_date") {
        return Err(CanopyError::bad_request("INVALID_STOP_AFTER"));
    }
    let patch: MonitoringPatch = serde_json::from_value(Value::Object(body))
        .map_err(|_| CanopyError::bad_request("INVALID_INTERVAL"))?;
    let m = sim.patch_monitoring(&monitoring_id, patch)?;
    ok(json!({ "success": true, "monitoring": m }))
}

async fn delete_monitoring(
    State(sim): State<CanopySim>,
    Path((team_id, monitoring_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    monitoring_id_ok(&monitoring_id)?;
    let monitoring_id = own_monitoring(&sim, &team_id, &monitoring_id);
    let m = sim.stop(&monitoring_id)?;
    ok(json!({ "success": true, "monitoring": m }))
}

async fn refresh_monitoring(
    State(sim): State<CanopySim>,
    Path((team_id, monitoring_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    let monitoring_id = own_monitoring(&sim, &team_id, &monitoring_id);
    let pull_id = sim.refresh(&monitoring_id, false)?;
    ok(json!({ "pull_id": pull_id }))
}

async fn monitoring_reconnect_token(
    State(sim): State<CanopySim>,
    Path((team_id, monitoring_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    let monitoring_id = own_monitoring(&sim, &team_id, &monitoring_id);
    let info = sim.mint_reconnect_token(&monitoring_id)?;
    ok(serde_json::to_value(info).expect("serialisable"))
}

async fn monitoring_events(
    State(sim): State<CanopySim>,
    Path((team_id, monitoring_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::unauthorized())?;
    let monitoring_id = own_monitoring(&sim, &team_id, &monitoring_id);
    let events = sim.events_of(&monitoring_id)?;
    ok(serde_json::to_value(events).expect("serialisable"))
}

// ---- webhooks -----------------------------------------------------------------------------

fn event_types(v: Option<&Value>) -> CanopyResult<Vec<String>> {
    let invalid = || CanopyError::bad_request("INVALID_EVENT_TYPE");
    let arr = v
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(invalid)?;
    arr.iter()
        .map(|t| {
            t.as_str()
                .filter(|t| event_type::ALL.contains(t))
                .map(str::to_owned)
                .ok_or_else(invalid)
        })
        .collect()
}

async fn list_webhooks(
    State(sim): State<CanopySim>,
    Path(team_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::forbidden())?;
    ok(json!({ "webhooks": sim.team_webhooks(&team_id) }))
}

async fn create_webhook(
    State(sim): State<CanopySim>,
    Path(team_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::forbidden())?;
    let body = json_body(&body, CanopyError::bad_request("INVALID_URL"))?;
    let url = body
        .get("hookUrl")
        .and_then(Value::as_str)
        .filter(|u| {
            url::Url::parse(u)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        })
        .ok_or(CanopyError::bad_request("INVALID_URL"))?;
    let types = event_types(body.get("eventTypes"))?;
    let hook = new_webhook(&team_id, url, None, types);
    sim.with_state(|st| st.webhooks.push(hook.clone()));
    ok(json!({ "webhook_id": hook.webhook_id, "signing_secret": hook.signing_secret }))
}

async fn patch_webhook(
    State(sim): State<CanopySim>,
    Path((team_id, webhook_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::forbidden())?;
    if !is_uuid(&webhook_id) {
        return Err(CanopyError::bad_request("INVALID_WEBHOOK_ID"));
    }
    let body = json_body(&body, CanopyError::bad_request("INVALID_IS_ACTIVE"))?;
    let active = match body.get("isActive") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(CanopyError::bad_request("INVALID_IS_ACTIVE")),
    };
    let types = body
        .get("eventTypes")
        .map(|v| event_types(Some(v)))
        .transpose()?;
    sim.with_state(|st| {
        // This operation answers an unknown webhook with 400.
        let hook = st
            .webhooks
            .iter_mut()
            .find(|w| w.webhook_id == webhook_id && w.team_id == team_id)
            .ok_or(CanopyError::bad_request("NOT_FOUND"))?;
        if let Some(a) = active {
            hook.is_active = a;
        }
        if let Some(t) = types {
            hook.event_types = t;
        }
        Ok::<_, CanopyError>(())
    })?;
    ok(json!({ "success": true }))
}

async fn delete_webhook(
    State(sim): State<CanopySim>,
    Path((team_id, webhook_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    team(&sim, &headers, &team_id, CanopyError::forbidden())?;
    let removed = sim.with_state(|st| {
        let before = st.webhooks.len();
        st.webhooks
            .retain(|w| w.webhook_id != webhook_id || w.team_id != team_id);
        st.webhooks.len() != before
    });
    if !removed {
        return Err(CanopyError::bad_request("INVALID_WEBHOOK_ID"));
    }
    ok(json!({ "success": true }))
}

// ---- white-label --------------------------------------------------------------------------

async fn redeem_reconnect_token(
    State(sim): State<CanopySim>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    // The document lists 403 UNAUTHORIZED, not 401, for a missing or wrong API key here.
    let key_team = authenticate(&sim, &headers).map_err(|_| CanopyError::forbidden())?;
    let invalid = CanopyError::bad_request("INVALID_RECONNECT_TOKEN");
    let body = json_body(&body, invalid.clone())?;
    let token = body
        .get("reconnect_token")
        .and_then(Value::as_str)
        .ok_or(invalid)?;
    // Another team's reconnect token is answered as an invalid one, and stays usable.
    if sim
        .reconnect_token_team(token)
        .is_some_and(|owner| owner != key_team)
    {
        return Err(CanopyError::bad_request("INVALID_RECONNECT_TOKEN"));
    }
    let (pull_id, pull_jwt) = sim.redeem(token)?;
    ok(json!({ "pull_id": pull_id, "pull_jwt": pull_jwt }))
}

/// The `pull-jwt` header must name this very pull.
fn pull_jwt(sim: &CanopySim, headers: &HeaderMap, pull_id: &str) -> CanopyResult<()> {
    let token = header_str(headers, "pull-jwt").ok_or_else(CanopyError::forbidden)?;
    match sim.verify_jwt(token) {
        Some(p) if p == pull_id => {}
        _ => return Err(CanopyError::forbidden()),
    }
    if sim.pull(pull_id).is_none() {
        return Err(CanopyError::not_found());
    }
    Ok(())
}

async fn widget_connect(
    State(sim): State<CanopySim>,
    Path(pull_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    pull_jwt(&sim, &headers, &pull_id)?;
    let invalid = || CanopyError::bad_request("INVALID_INPUT");
    let body = json_body(&body, invalid())?;
    let token = |k: &str, required: bool| -> CanopyResult<Option<String>> {
        match body.get(k) {
            None | Some(Value::Null) if !required => Ok(None),
            Some(Value::String(s)) if (5..=200).contains(&s.chars().count()) => Ok(Some(s.clone())),
            _ => Err(invalid()),
        }
    };
    let insurer = body
        .get("insurerName")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?
        .to_owned();
    let username = token("insurerUsername", true)?.unwrap_or_default();
    let password = token("insurerPassword", false)?.unwrap_or_default();
    sim.connect_pull(&pull_id, &insurer, &username, &password)?;
    ok(json!({ "pull": { "pull_id": pull_id }, "shouldPoll": true }))
}

async fn widget_idvoptions(
    State(sim): State<CanopySim>,
    Path(pull_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    pull_jwt(&sim, &headers, &pull_id)?;
    let invalid = CanopyError::bad_request("INVALID_INPUT");
    let body = json_body(&body, invalid.clone())?;
    let key = body
        .get("optionKey")
        .and_then(Value::as_str)
        .ok_or(invalid)?;
    sim.idv_option(&pull_id, key)?;
    ok(json!({ "pull_id": pull_id }))
}

async fn widget_idv(
    State(sim): State<CanopySim>,
    Path(pull_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    pull_jwt(&sim, &headers, &pull_id)?;
    let invalid = CanopyError::bad_request("INVALID_INPUT");
    let body = json_body(&body, invalid.clone())?;
    let code = body
        .get("mfaValue")
        .and_then(Value::as_str)
        .ok_or(invalid)?;
    sim.idv_code(&pull_id, code)?;
    ok(json!({ "pull_id": pull_id }))
}

// ---- consent, carriers, health ------------------------------------------------------------

async fn consent(State(sim): State<CanopySim>, headers: HeaderMap, body: Bytes) -> ApiResult {
    authenticate(&sim, &headers)?;
    let body = json_body(&body, CanopyError::bad_request("MISSING_DEVICE_IDENTIFIER"))?;
    if body
        .get("device_identifier")
        .and_then(Value::as_str)
        .is_none_or(|d| d.trim().is_empty())
    {
        return Err(CanopyError::bad_request("MISSING_DEVICE_IDENTIFIER"));
    }
    let language = body
        .get("consent_language")
        .and_then(Value::as_str)
        .filter(|l| !l.trim().is_empty())
        .ok_or(CanopyError::bad_request("INVALID_CONSENT_LANGUAGE"))?;
    if language.chars().count() > 1024 {
        return Err(CanopyError::bad_request("CONSENT_LANGUAGE_TOO_LONG"));
    }
    if body.get("terms_version").and_then(Value::as_i64) != Some(TERMS_VERSION) {
        return Err(CanopyError::api(404, "INVALID_PRIVACY_POLICY_TERM_ID"));
    }
    let token = new_id();
    sim.with_state(|st| st.consent_tokens.insert(token.clone()));
    ok(json!({ "consent_token": token }))
}

async fn tos() -> ApiResult {
    ok(json!({
        "terms_version": TERMS_VERSION,
        "terms_html": "<!DOCTYPE html>\n<html lang=\"en\"><body><h1>Canopy Connect sandbox terms</h1>\
            <p>Sandbox only: no real carrier is contacted.</p></body></html>\n",
    }))
}

async fn list_carriers(RawQuery(q): RawQuery) -> ApiResult {
    let q = query_pairs(&q);
    if query_get(&q, "products").is_some() && query_get(&q, "public_alias").is_some() {
        return Err(CanopyError::bad_request("INVALID_INPUT"));
    }
    let products: Option<Vec<String>> =
        query_get(&q, "products").map(|p| p.split(',').map(|s| s.trim().to_owned()).collect());
    let list: Vec<_> = fixtures::carriers()
        .into_iter()
        .filter(|c| {
            products
                .as_ref()
                .is_none_or(|ps| c.products.iter().any(|p| ps.contains(p)))
        })
        .collect();
    ok(serde_json::to_value(list).expect("serialisable"))
}

async fn get_carrier(Path(carrier_id): Path<String>) -> ApiResult {
    let c = fixtures::carrier(&carrier_id).ok_or_else(CanopyError::not_found)?;
    ok(serde_json::to_value(c).expect("serialisable"))
}

async fn health() -> ApiResult {
    ok(json!({ "healthy": true }))
}
