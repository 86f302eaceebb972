//! The HTTP client for Axle's REST API.
//!
//! Every call sends `x-client-id` / `x-client-secret` (and `x-destination-client-id` for
//! platforms); account-scoped calls add `x-access-token`. Answers are `{success, data}`
//! envelopes; `data` is returned as raw JSON so that snapshots can keep it.
//!
//! Only idempotent calls are retried (the GETs; Axle documents no idempotent POST): on 429
//! (honouring `Retry-After` seconds), 408/425/5xx, timeouts and connection failures, with the
//! shared capped exponential backoff and jitter. `POST /ignition` would open a second session
//! and `POST /token/exchange` spends a single-use code, so neither is ever sent twice.

use std::time::Duration;
use tracing::Instrument;

use coverwatch_core::policy::PolicyTerm;
use coverwatch_core::telemetry::{self, CallOutcome};
use reqwest::header::{
    ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::config::AxleConfig;
use crate::error::{AxleError, describe_error_body, is_transient_status};
use crate::model;

pub const REQUEST_ID_HEADER: &str = "x-axle-request-id";

#[derive(Clone)]
pub struct AxleClient {
    config: AxleConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for AxleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AxleClient")
            .field("base_url", &self.config.base_url)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

/// One API call as the retry loop sees it.
struct Call<'a> {
    operation: &'static str,
    method: Method,
    path: String,
    query: &'a [(&'a str, &'a str)],
    body: Option<Value>,
    access_token: Option<&'a SecretString>,
    idempotent: bool,
}

impl AxleClient {
    pub fn new(config: AxleConfig) -> Result<Self, AxleError> {
        config.validate()?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("coverwatch-axle/", env!("CARGO_PKG_VERSION"))),
        );
        headers.insert("x-client-id", header_value(&config.client_id, false)?);
        headers.insert(
            "x-client-secret",
            header_value(config.client_secret.expose_secret(), true)?,
        );
        if let Some(dest) = &config.destination_client_id {
            headers.insert("x-destination-client-id", header_value(dest, false)?);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // A redirect would carry the client secret and access token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AxleError::Client(e.to_string()))?;
        Ok(Self { config, http })
    }

    pub fn config(&self) -> &AxleConfig {
        &self.config
    }

    /// `POST /ignition`. Never retried: a second call would open a second session.
    pub async fn start_ignition(&self, body: Value) -> Result<model::IgnitionStarted, AxleError> {
        let data = self
            .call(Call {
                operation: "start_ignition",
                method: Method::POST,
                path: "/ignition".to_owned(),
                query: &[],
                body: Some(body),
                access_token: None,
                idempotent: false,
            })
            .await?;
        parse_data("start_ignition", data)
    }

    /// `POST /token/exchange`. Never retried: the code is single-use.
    pub async fn exchange_token(
        &self,
        auth_code: &SecretString,
    ) -> Result<model::Exchanged, AxleError> {
        let data = self
            .call(Call {
                operation: "exchange_token",
                method: Method::POST,
                path: "/token/exchange".to_owned(),
                query: &[],
                body: Some(json!({ "authCode": auth_code.expose_secret() })),
                access_token: None,
                idempotent: false,
            })
            .await?;
        parse_data("exchange_token", data)
    }

    /// `POST /token/descope` with `{"scope": "monitoring"}`.
    pub async fn descope_token(&self, access_token: &SecretString) -> Result<(), AxleError> {
        self.call(Call {
            operation: "descope_token",
            method: Method::POST,
            path: "/token/descope".to_owned(),
            query: &[],
            body: Some(json!({ "scope": "monitoring" })),
            access_token: Some(access_token),
            idempotent: false,
        })
        .await
        .map(drop)
    }

    /// `GET /accounts/{id}`: the Account object as JSON.
    pub async fn get_account(
        &self,
        access_token: &SecretString,
        account_id: &str,
    ) -> Result<Value, AxleError> {
        self.call(Call {
            operation: "get_account",
            method: Method::GET,
            path: format!("/accounts/{}", path_segment(account_id)),
            query: &[],
            body: None,
            access_token: Some(access_token),
            idempotent: true,
        })
        .await
    }

    /// `GET /policies/{id}`, with `term=renewal` for the renewal term (404 when there is none).
    pub async fn get_policy(
        &self,
        access_token: &SecretString,
        policy_id: &str,
        term: PolicyTerm,
    ) -> Result<Value, AxleError> {
        let query: &[(&str, &str)] = match term {
            PolicyTerm::Current => &[],
            PolicyTerm::Renewal => &[("term", "renewal")],
        };
        self.call(Call {
            operation: if term == PolicyTerm::Renewal {
                "get_policy_renewal"
            } else {
                "get_policy"
            },
            method: Method::GET,
            path: format!("/policies/{}", path_segment(policy_id)),
            query,
            body: None,
            access_token: Some(access_token),
            idempotent: true,
        })
        .await
    }

    /// `POST /policies/{id}/validate` with `[{"rule": …}, …]`: Axle's own verdict on the policy
    /// (`{overall, summary, rules}`). Never retried: a caller waits on the answer, and a failure
    /// is reported as "no verdict" for the caller to ask again.
    pub async fn validate_policy(
        &self,
        access_token: &SecretString,
        policy_id: &str,
        rules: &[&str],
    ) -> Result<Value, AxleError> {
        self.call(Call {
            operation: "validate_policy",
            method: Method::POST,
            path: format!("/policies/{}/validate", path_segment(policy_id)),
            query: &[],
            body: Some(crate::validation::request_body(rules)),
            access_token: Some(access_token),
            idempotent: false,
        })
        .await
    }

    async fn call(&self, call: Call<'_>) -> Result<Value, AxleError> {
        let url = self.config.endpoint(&call.path);
        let access = match call.access_token {
            Some(token) => {
                Some(
                    header_value(token.expose_secret(), true).map_err(|_| AxleError::Api {
                        operation: call.operation,
                        status: 400,
                        message: "the access token cannot be sent as a header".to_owned(),
                        code: None,
                        request_id: None,
                        retry_after: None,
                    })?,
                )
            }
            None => None,
        };
        let body = call.body.as_ref().map(|b| b.to_string());
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut request = self.http.request(call.method.clone(), &url);
            if !call.query.is_empty() {
                request = request.query(call.query);
            }
            if let Some(token) = &access {
                request = request.header(HeaderName::from_static("x-access-token"), token.clone());
            }
            if let Some(body) = &body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let outcome = self.attempt(call.operation, request).await;
            let err = match outcome {
                Ok(data) => return Ok(data),
                Err(err) => err,
            };
            if !call.idempotent || !err.is_transient() || attempt > self.config.max_retries {
                return Err(err);
            }
            let retry_after = match &err {
                AxleError::Api { retry_after, .. } => *retry_after,
                _ => None,
            };
            let delay = match retry_after {
                Some(wait) if wait > self.config.max_retry_after => {
                    tracing::warn!(
                        operation = call.operation,
                        retry_after_secs = wait.as_secs(),
                        "Axle asks to wait longer than we wait inside one call; giving up for now"
                    );
                    return Err(err);
                }
                Some(wait) => wait,
                None => self.config.backoff.delay(attempt, rand::random::<f64>()),
            };
            tracing::warn!(
                operation = call.operation,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %err,
                "retrying an Axle call"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP exchange, as a client span (a child of whatever span the caller runs in: a
    /// gRPC call or a delivery being processed) naming Axle's `x-axle-request-id`, which is
    /// what Axle support asks for.
    async fn attempt(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, AxleError> {
        let span = tracing::info_span!(
            "vendor.call",
            otel.name = %format_args!("axle {operation}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            vendor = "axle",
            operation,
            http.response.status_code = tracing::field::Empty,
            vendor.request_id = tracing::field::Empty,
        );
        let answer = self
            .exchange(operation, request)
            .instrument(span.clone())
            .await;
        if answer.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        answer
    }

    async fn exchange(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, AxleError> {
        let started = std::time::Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                record(operation, CallOutcome::Transport, started);
                return Err(transport(operation, e));
            }
        };
        let status = response.status();
        let request_id = response
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let span = tracing::Span::current();
        span.record("http.response.status_code", status.as_u16());
        if let Some(id) = &request_id {
            span.record("vendor.request_id", id.as_str());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                record(operation, CallOutcome::Transport, started);
                return Err(transport(operation, e));
            }
        };
        record(operation, CallOutcome::Status(status.as_u16()), started);
        tracing::debug!(
            operation,
            status = status.as_u16(),
            request_id = request_id.as_deref().unwrap_or(""),
            "Axle answered"
        );
        read_answer(operation, status, &bytes, request_id, retry_after)
    }
}

/// The `data` of a successful envelope, or the error the answer stands for.
fn record(operation: &'static str, outcome: CallOutcome, started: std::time::Instant) {
    telemetry::vendor_call("axle", route(operation), outcome, started.elapsed());
}

/// The route template of each operation: the metrics' bounded `endpoint` label, never the raw
/// path (which carries account and policy ids).
fn route(operation: &'static str) -> &'static str {
    match operation {
        "start_ignition" => "POST /ignition",
        "exchange_token" => "POST /token/exchange",
        "descope_token" => "POST /token/descope",
        "get_account" => "GET /accounts/{id}",
        "get_policy" => "GET /policies/{id}",
        "get_policy_renewal" => "GET /policies/{id}?term=renewal",
        "validate_policy" => "POST /policies/{id}/validate",
        _ => "other",
    }
}

fn read_answer(
    operation: &'static str,
    status: StatusCode,
    bytes: &[u8],
    request_id: Option<String>,
    retry_after: Option<Duration>,
) -> Result<Value, AxleError> {
    if !status.is_success() {
        let (message, code) = describe_error_body(bytes, status.as_u16());
        return Err(AxleError::Api {
            operation,
            status: status.as_u16(),
            message,
            code,
            request_id,
            retry_after: if is_transient_status(status.as_u16()) {
                retry_after
            } else {
                None
            },
        });
    }
    let body: Value = serde_json::from_slice(bytes).map_err(|e| AxleError::Malformed {
        operation,
        message: format!("the body is not JSON ({e})"),
        request_id: request_id.clone(),
    })?;
    let Value::Object(mut object) = body else {
        return Err(AxleError::Malformed {
            operation,
            message: "the body is not a JSON object".to_owned(),
            request_id,
        });
    };
    let success = object.get("success").and_then(model::bool_of);
    if success == Some(false) {
        let (message, code) = describe_error_body(bytes, status.as_u16());
        return Err(AxleError::Api {
            operation,
            status: status.as_u16(),
            message,
            code,
            request_id,
            retry_after: None,
        });
    }
    match object.remove("data") {
        Some(data) => Ok(data),
        // Not enveloped after all: take the body as the object itself.
        None if success.is_none() => Ok(Value::Object(object)),
        None => Err(AxleError::Malformed {
            operation,
            message: "the envelope has no `data`".to_owned(),
            request_id,
        }),
    }
}

fn parse_data<T: serde::de::DeserializeOwned>(
    operation: &'static str,
    data: Value,
) -> Result<T, AxleError> {
    serde_json::from_value(data).map_err(|e| AxleError::Malformed {
        operation,
        message: format!("unexpected `data` ({e})"),
        request_id: None,
    })
}

fn transport(operation: &'static str, err: reqwest::Error) -> AxleError {
    let timeout = err.is_timeout();
    // The URL holds only ids, but there is no reason to repeat it in every log line.
    let err = err.without_url();
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    AxleError::Transport {
        operation,
        message,
        timeout,
    }
}

fn header_value(value: &str, sensitive: bool) -> Result<HeaderValue, AxleError> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| AxleError::Client("a header value is not valid".to_owned()))?;
    header.set_sensitive(sensitive);
    Ok(header)
}

/// Axle ids are URL-safe (`acc_…`, `pol_…`), but an id arrives from a webhook body, so it is
/// escaped rather than trusted to stay inside its path segment.
fn path_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
        // `..` would otherwise be resolved away by URL normalization.
        .replace('.', "%2E")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Result<Value, AxleError> {
        read_answer(
            "op",
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
            Some("req_1".into()),
            Some(Duration::from_secs(2)),
        )
    }

    #[test]
    fn envelopes_unwrap_to_their_data() {
        assert_eq!(
            answer(200, r#"{"success":true,"data":{"id":"acc_1"}}"#).unwrap(),
            json!({"id":"acc_1"})
        );
        assert_eq!(
            answer(200, r#"{"id":"acc_1"}"#).unwrap(),
            json!({"id":"acc_1"})
        );
        assert!(matches!(
            answer(200, r#"{"success":true}"#),
            Err(AxleError::Malformed { .. })
        ));
        assert!(matches!(
            answer(200, "{\"success\":tr"),
            Err(AxleError::Malformed { .. })
        ));
        assert!(matches!(
            answer(200, "[]"),
            Err(AxleError::Malformed { .. })
        ));
    }

    #[test]
    fn errors_keep_status_message_and_request_id() {
        let err = answer(400, r#"{"success":false,"message":"authCode has expired"}"#).unwrap_err();
        assert_eq!(
            err,
            AxleError::Api {
                operation: "op",
                status: 400,
                message: "authCode has expired".into(),
                code: None,
                request_id: Some("req_1".into()),
                retry_after: None,
            }
        );
        let AxleError::Api { retry_after, .. } = answer(429, "{}").unwrap_err() else {
            unreachable!()
        };
        assert_eq!(retry_after, Some(Duration::from_secs(2)));
        // `success: false` under a 200 is an error too.
        let err = answer(200, r#"{"success":false,"message":"nope"}"#).unwrap_err();
        assert_eq!(err.status(), Some(200));
        assert!(!err.is_transient());
    }

    #[test]
    fn ids_stay_inside_their_path_segment() {
        assert_eq!(
            path_segment("pol_Z4ni-JHBvkn9PlKJHPEwk"),
            "pol_Z4ni-JHBvkn9PlKJHPEwk"
        );
        assert_eq!(
            path_segment("../token/descope?x=1"),
            "%2E%2E%2Ftoken%2Fdescope%3Fx%3D1"
        );
        assert_eq!(path_segment("a b"), "a%20b");
    }

    #[test]
    fn debug_shows_no_secret() {
        let client = AxleClient::new(AxleConfig::new(
            "http://127.0.0.1:9",
            "cli_1",
            "very-secret-value",
        ))
        .unwrap();
        assert!(!format!("{client:?}").contains("very-secret-value"));
    }
}
