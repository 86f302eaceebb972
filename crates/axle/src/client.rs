//! The HTTP client for Axle's REST API.
//!
//! Every call sends `x-client-id` / `x-client-secret` (and `x-destination-client-id` for
//! platforms); account-scoped calls add `x-access-token`. Answers are `{success, data}`
//! envelopes; `data` is returned as raw JSON so that snapshots can keep it.
//!
//! Calls go through the shared vendor executor (`coverwatch-vendor-http`), which owns timeouts,
//! retries, `Retry-After`, metrics and spans. Only the GETs are retried (Axle documents no
//! idempotent POST). `POST /ignition` would open a second session and `POST /token/exchange`
//! spends a single-use code, so neither is ever sent twice; neither are descope and validate.

use coverwatch_core::policy::PolicyTerm;
use coverwatch_vendor_http::{
    ErrorParser, Executor, Failure, HeaderMap, HeaderName, Method, Request, Retry, Settings, Stop,
    TransportKind, Vendor,
};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderValue, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::config::AxleConfig;
use crate::error::{AxleError, describe_error_body, is_transient_status};
use crate::model;

pub const REQUEST_ID_HEADER: &str = "x-axle-request-id";

#[derive(Clone)]
pub struct AxleClient {
    config: AxleConfig,
    http: Executor<AxleErrors>,
}

impl std::fmt::Debug for AxleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AxleClient")
            .field("base_url", &self.config.base_url)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

/// Axle's reading of a failed call, for the executor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AxleErrors;

impl ErrorParser for AxleErrors {
    type Error = AxleError;

    fn parse(&self, failure: Failure) -> AxleError {
        match failure {
            Failure::Status(answer) => {
                let (mut message, code) = describe_error_body(&answer.body, answer.status);
                if let Stop::RetryAfterTooLong { .. } = answer.stop {
                    message.push_str(&answer.stop.to_string());
                }
                AxleError::Api {
                    operation: answer.operation,
                    status: answer.status,
                    message,
                    code,
                    request_id: answer.request_id,
                    retry_after: if is_transient_status(answer.status) {
                        answer.retry_after
                    } else {
                        None
                    },
                }
            }
            Failure::Transport(err) => AxleError::Transport {
                operation: err.operation,
                timeout: err.kind == TransportKind::Timeout,
                message: err.message,
            },
        }
    }
}

/// One API call, before the executor sees it.
struct Call<'a> {
    operation: &'static str,
    method: Method,
    path: String,
    query: &'a [(&'a str, &'a str)],
    body: Option<Value>,
    access_token: Option<&'a SecretString>,
    retry: Retry,
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
        let http = Executor::new(
            Vendor {
                name: "axle",
                default_headers: headers,
                request_id_headers: &[REQUEST_ID_HEADER],
            },
            Settings {
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
                // The configuration counts retries after the first attempt.
                max_attempts: config.max_retries.saturating_add(1),
                backoff: config.backoff,
                max_retry_after: config.max_retry_after,
            },
            AxleErrors,
        )
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
                retry: Retry::Never,
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
                retry: Retry::Never,
            })
            .await?;
        parse_data("exchange_token", data)
    }

    /// `POST /token/descope` with `{"scope": "monitoring"}`. Not retried here: the caller
    /// reports a failure and asks again.
    pub async fn descope_token(&self, access_token: &SecretString) -> Result<(), AxleError> {
        self.call(Call {
            operation: "descope_token",
            method: Method::POST,
            path: "/token/descope".to_owned(),
            query: &[],
            body: Some(json!({ "scope": "monitoring" })),
            access_token: Some(access_token),
            retry: Retry::Never,
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
            retry: Retry::Idempotent,
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
            retry: Retry::Idempotent,
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
            retry: Retry::Never,
        })
        .await
    }

    /// `GET /carriers` (docs.axle.insure/api-reference/carriers/get-carriers): the carriers Axle
    /// supports. A read with no effect that needs only the client's credentials, so it is what
    /// a check of them calls.
    pub async fn list_carriers(&self) -> Result<Value, AxleError> {
        self.call(Call {
            operation: "list_carriers",
            method: Method::GET,
            path: "/carriers".to_owned(),
            query: &[],
            body: None,
            access_token: None,
            retry: Retry::Idempotent,
        })
        .await
    }

    /// `GET /platform/clients` (docs.axle.insure/api-reference/platform/get-clients): "a list of
    /// identifiers for the destination clients associated with your credential". Ids only:
    /// with `expand=true` the entries would be objects.
    pub async fn platform_clients(&self) -> Result<Vec<String>, AxleError> {
        let data = self
            .call(Call {
                operation: "platform_clients",
                method: Method::GET,
                path: "/platform/clients".to_owned(),
                query: &[],
                body: None,
                access_token: None,
                retry: Retry::Idempotent,
            })
            .await?;
        parse_data("platform_clients", data)
    }

    async fn call(&self, call: Call<'_>) -> Result<Value, AxleError> {
        let mut url = url::Url::parse(&self.config.endpoint(&call.path))
            .map_err(|e| AxleError::Client(format!("the request URL is not valid ({e})")))?;
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(call.query);
        }
        let mut request = Request::new(
            call.operation,
            route(call.operation),
            call.method,
            url,
            call.retry,
        );
        if let Some(token) = call.access_token {
            let token = header_value(token.expose_secret(), true).map_err(|_| AxleError::Api {
                operation: call.operation,
                status: 400,
                message: "the access token cannot be sent as a header".to_owned(),
                code: None,
                request_id: None,
                retry_after: None,
            })?;
            request = request.header(HeaderName::from_static("x-access-token"), token);
        }
        if let Some(body) = call.body {
            request = request.json(body);
        }
        let answer = self.http.send(request).await?;
        read_answer(
            call.operation,
            answer.status,
            &answer.body,
            answer.request_id,
        )
    }
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
        "list_carriers" => "GET /carriers",
        "platform_clients" => "GET /platform/clients",
        _ => "other",
    }
}

/// The `data` of a successful (2xx) envelope, or the error a `success: false` stands for.
fn read_answer(
    operation: &'static str,
    status: StatusCode,
    bytes: &[u8],
    request_id: Option<String>,
) -> Result<Value, AxleError> {
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

    use coverwatch_vendor_http::ErrorResponse;
    use std::time::Duration;

    /// What the client makes of an answer: 2xx bodies through `read_answer`, error statuses
    /// through the executor's error hook, as `call` does.
    fn answer(status: u16, body: &str) -> Result<Value, AxleError> {
        let status = StatusCode::from_u16(status).unwrap();
        if status.is_success() {
            return read_answer("op", status, body.as_bytes(), Some("req_1".into()));
        }
        Err(AxleErrors.parse(Failure::Status(ErrorResponse {
            vendor: "axle",
            operation: "op",
            status: status.as_u16(),
            body: body.as_bytes().to_vec().into(),
            request_id: Some("req_1".into()),
            retry_after: Some(Duration::from_secs(2)),
            attempts: 1,
            stop: Stop::NotRetryable,
        })))
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
