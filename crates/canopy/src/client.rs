//! The Canopy API client: HTTP Basic with the team's key (or the `pull-jwt` header on the
//! white-label routes). Calls go through the shared vendor executor (`coverwatch-vendor-http`),
//! which owns timeouts, retries, `Retry-After`, metrics and spans; this file builds the
//! requests and reads the answers.

use base64::Engine as _;
use coverwatch_vendor_http::{
    ErrorParser, Executor, Failure, HeaderMap, HeaderName, HeaderValue, Method, Request, Retry,
    Settings, StatusCode, Vendor,
};
use reqwest::header::{AUTHORIZATION, USER_AGENT};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::CanopyConfig;
use crate::error::CanopyError;
use crate::model::{
    ErrorBody, Monitoring, MonitoringList, MonitoringResponse, PullJwtResponse, PullResponse,
    ReconnectTokenResponse, RefreshResponse,
};

/// `{"webhooks": [...]}`; the list is required, so that a 2xx from something that is not
/// Canopy's API (a wrong `base_url`) does not pass for an answer.
#[derive(serde::Deserialize)]
struct WebhookList {
    webhooks: Vec<Value>,
}

/// Canopy documents no request id header ("No message, no request id"); one is recorded only
/// if a response happens to carry one of these.
const REQUEST_ID_HEADERS: &[&str] = &["x-request-id", "x-canopy-request-id", "request-id"];

#[derive(Clone, Copy)]
enum Auth<'a> {
    Key,
    PullJwt(&'a SecretString),
}

/// Carrier credentials for `POST /widget/pull/{pullId}/connect` (Components tokens or values).
pub struct ConnectCredentials<'a> {
    pub insurer_name: &'a str,
    pub username: &'a SecretString,
    pub password: Option<&'a SecretString>,
    pub third_field: Option<&'a SecretString>,
}

/// Canopy's reading of a failed call, for the executor: its `{"error": "CODE"}` body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CanopyErrors;

impl ErrorParser for CanopyErrors {
    type Error = CanopyError;

    fn parse(&self, failure: Failure) -> CanopyError {
        match failure {
            Failure::Status(answer) => {
                let code = serde_json::from_slice::<ErrorBody>(&answer.body)
                    .ok()
                    .and_then(|b| b.error)
                    .filter(|c| !c.is_empty());
                CanopyError::Api {
                    status: answer.status,
                    code,
                    request_id: answer.request_id,
                    // Whole seconds, rounded up: never sooner than Canopy asked.
                    retry_after: answer.retry_after.map(|d| d.as_secs_f64().ceil() as u64),
                }
            }
            Failure::Transport(err) => CanopyError::Transport {
                message: err.to_string(),
                kind: err.kind,
            },
        }
    }
}

#[derive(Clone)]
pub struct CanopyClient {
    http: Executor<CanopyErrors>,
    base_url: url::Url,
    team_id: String,
    /// `Authorization: Basic …` with the team's client id and secret, built once.
    basic_auth: HeaderValue,
}

impl std::fmt::Debug for CanopyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CanopyClient")
            .field("base_url", &self.base_url.as_str())
            .field("team_id", &self.team_id)
            .finish_non_exhaustive()
    }
}

impl CanopyClient {
    pub fn new(config: &CanopyConfig) -> Result<Self, CanopyError> {
        let base_url = url::Url::parse(&config.base_url)
            .ok()
            .filter(|u| !u.cannot_be_a_base())
            .ok_or_else(|| CanopyError::config("base_url", "is not a base URL"))?;
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            config.client_id,
            config.client_secret.expose_secret()
        ));
        let mut basic_auth = HeaderValue::from_str(&format!("Basic {credentials}"))
            .map_err(|_| CanopyError::config("client_id", "cannot be sent in a header"))?;
        basic_auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("coverwatch-canopy/", env!("CARGO_PKG_VERSION"))),
        );
        let http = Executor::new(
            Vendor {
                name: "canopy",
                default_headers: headers,
                request_id_headers: REQUEST_ID_HEADERS,
            },
            Settings {
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
                max_attempts: config.max_attempts,
                backoff: config.backoff,
                max_retry_after: config.max_retry_after,
            },
            CanopyErrors,
        )
        .map_err(|e| CanopyError::config(e.field, e.message))?;
        Ok(Self {
            http,
            base_url,
            team_id: config.team_id.clone(),
            basic_auth,
        })
    }

    /// `{base}/{segments…}`, each segment percent-encoded, so that an id can never reach
    /// another route (`.` and `..`, which the URL would resolve, are refused).
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<url::Url, CanopyError> {
        if let Some(bad) = segments
            .iter()
            .find(|s| s.trim().is_empty() || **s == "." || **s == "..")
        {
            return Err(CanopyError::invalid(format!("`{bad}` is not a Canopy id")));
        }
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .expect("checked to be a base URL")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        url: url::Url,
        body: Option<&Value>,
        auth: Auth<'_>,
        retry: Retry,
    ) -> Result<T, CanopyError> {
        let mut request = Request::new(operation, route(operation), method, url, retry);
        request = match auth {
            Auth::Key => request.header(AUTHORIZATION, self.basic_auth.clone()),
            Auth::PullJwt(jwt) => {
                let mut value = HeaderValue::from_str(jwt.expose_secret())
                    .map_err(|_| CanopyError::invalid("the pull-jwt cannot be sent in a header"))?;
                value.set_sensitive(true);
                request.header(HeaderName::from_static("pull-jwt"), value)
            }
        };
        if let Some(body) = body {
            request = request.json(body.clone());
        }
        let answer = self.http.send(request).await?;
        tracing::debug!(
            operation,
            attempts = answer.attempts,
            "canopy call succeeded"
        );
        let bytes = if answer.body.iter().all(u8::is_ascii_whitespace)
            && answer.status == StatusCode::NO_CONTENT
        {
            &b"{}"[..]
        } else {
            &answer.body[..]
        };
        serde_json::from_slice(bytes).map_err(|err| CanopyError::Decode(err.to_string()))
    }

    fn team(&self) -> &str {
        &self.team_id
    }

    /// `GET /teams/{teamId}/webhooks`: the team's webhooks of the key's type. A read with no
    /// effect that needs the key and the team together, so it is what a check of the settings
    /// calls (OpenAPI `get-webhooks`: 200, 401 and 403 `UNAUTHORIZED`).
    pub async fn list_webhooks(&self) -> Result<Vec<Value>, CanopyError> {
        let url = self.url(&["teams", self.team(), "webhooks"], &[])?;
        let answer: WebhookList = self
            .call(
                "webhooks.list",
                Method::GET,
                url,
                None,
                Auth::Key,
                Retry::Idempotent,
            )
            .await?;
        Ok(answer.webhooks)
    }

    /// `GET /teams/{teamId}/pulls/{pullId}`: the raw `pull` object.
    pub async fn get_pull(&self, pull_id: &str) -> Result<Value, CanopyError> {
        let url = self.url(&["teams", self.team(), "pulls", pull_id], &[])?;
        let response: PullResponse = self
            .call(
                "pulls.get",
                Method::GET,
                url,
                None,
                Auth::Key,
                Retry::Idempotent,
            )
            .await?;
        match response.pull {
            Some(pull @ Value::Object(_)) => Ok(pull),
            _ => Err(CanopyError::Decode("no `pull` object in the answer".into())),
        }
    }

    /// `GET /teams/{teamId}/monitorings/{monitoringId}/events`: what changed between the
    /// monitoring's two most recent pulls, as Canopy classifies it.
    pub async fn monitoring_events(&self, monitoring_id: &str) -> Result<Value, CanopyError> {
        let url = self.url(
            &["teams", self.team(), "monitorings", monitoring_id, "events"],
            &[],
        )?;
        let answer: Value = self
            .call(
                "monitorings.events",
                Method::GET,
                url,
                None,
                Auth::Key,
                Retry::Idempotent,
            )
            .await?;
        Ok(answer)
    }

    /// `GET /teams/{teamId}/monitorings?pull_id=`: the monitorings that include this pull.
    pub async fn monitorings_of_pull(&self, pull_id: &str) -> Result<Vec<Monitoring>, CanopyError> {
        let url = self.url(
            &["teams", self.team(), "monitorings"],
            &[("pull_id", pull_id)],
        )?;
        let list: MonitoringList = self
            .call(
                "monitorings.list",
                Method::GET,
                url,
                None,
                Auth::Key,
                Retry::Idempotent,
            )
            .await?;
        Ok(list.monitorings)
    }

    pub async fn get_monitoring(&self, monitoring_id: &str) -> Result<Monitoring, CanopyError> {
        let url = self.url(&["teams", self.team(), "monitorings", monitoring_id], &[])?;
        let response: MonitoringResponse = self
            .call(
                "monitorings.get",
                Method::GET,
                url,
                None,
                Auth::Key,
                Retry::Idempotent,
            )
            .await?;
        response
            .monitoring
            .ok_or_else(|| CanopyError::Decode("no `monitoring` in the answer".into()))
    }

    /// `POST /teams/{teamId}/monitorings`. Never repeated here: a create that reached Canopy
    /// before a failure must be found, not made twice (see `ensure_monitoring`).
    pub async fn create_monitoring(
        &self,
        pull_id: &str,
        interval: &str,
    ) -> Result<Monitoring, CanopyError> {
        let url = self.url(&["teams", self.team(), "monitorings"], &[])?;
        let body = json!({ "pull_id": pull_id, "interval": interval });
        let response: MonitoringResponse = self
            .call(
                "monitorings.create",
                Method::POST,
                url,
                Some(&body),
                Auth::Key,
                Retry::UnsentOnly,
            )
            .await?;
        response
            .monitoring
            .filter(|m| !m.monitoring_id.is_empty())
            .ok_or_else(|| CanopyError::Decode("no `monitoring` in the answer".into()))
    }

    /// `DELETE /teams/{teamId}/monitorings/{id}`: stopping twice stops once, so it is repeatable.
    pub async fn stop_monitoring(&self, monitoring_id: &str) -> Result<(), CanopyError> {
        let url = self.url(&["teams", self.team(), "monitorings", monitoring_id], &[])?;
        let _: Value = self
            .call(
                "monitorings.delete",
                Method::DELETE,
                url,
                None,
                Auth::Key,
                Retry::Idempotent,
            )
            .await?;
        Ok(())
    }

    /// `POST /teams/{teamId}/monitorings/{id}/refresh`: billed like a pull, so sent once.
    pub async fn refresh_monitoring(
        &self,
        monitoring_id: &str,
    ) -> Result<Option<String>, CanopyError> {
        let url = self.url(
            &[
                "teams",
                self.team(),
                "monitorings",
                monitoring_id,
                "refresh",
            ],
            &[],
        )?;
        let response: RefreshResponse = self
            .call(
                "monitorings.refresh",
                Method::POST,
                url,
                None,
                Auth::Key,
                Retry::UnsentOnly,
            )
            .await?;
        Ok(response.pull_id)
    }

    /// `GET /teams/{teamId}/monitorings/{id}/reconnectToken`: a fresh token on every call.
    pub async fn reconnect_token(
        &self,
        monitoring_id: &str,
    ) -> Result<ReconnectTokenResponse, CanopyError> {
        let url = self.url(
            &[
                "teams",
                self.team(),
                "monitorings",
                monitoring_id,
                "reconnectToken",
            ],
            &[],
        )?;
        self.call(
            "monitorings.reconnect_token",
            Method::GET,
            url,
            None,
            Auth::Key,
            Retry::Idempotent,
        )
        .await
    }

    /// `POST /widget/pull/reconnectToken`: a reconnect token for the pull to reconnect and the
    /// `pull-jwt` that authorizes the white-label steps on it.
    pub async fn redeem_reconnect_token(
        &self,
        reconnect_token: &SecretString,
    ) -> Result<PullJwtResponse, CanopyError> {
        let url = self.url(&["widget", "pull", "reconnectToken"], &[])?;
        let body = json!({ "reconnect_token": reconnect_token.expose_secret() });
        self.call(
            "widget.reconnect_token",
            Method::POST,
            url,
            Some(&body),
            Auth::Key,
            Retry::UnsentOnly,
        )
        .await
    }

    /// `POST /widget/pull/{pullId}/connect` with the carrier credentials.
    pub async fn connect(
        &self,
        pull_id: &str,
        pull_jwt: &SecretString,
        credentials: ConnectCredentials<'_>,
    ) -> Result<(), CanopyError> {
        let url = self.url(&["widget", "pull", pull_id, "connect"], &[])?;
        let mut body = json!({
            "insurerName": credentials.insurer_name,
            "insurerUsername": credentials.username.expose_secret(),
        });
        if let Some(password) = credentials.password {
            body["insurerPassword"] = json!(password.expose_secret());
        }
        if let Some(third) = credentials.third_field {
            body["insurerThirdField"] = json!(third.expose_secret());
        }
        let _: Value = self
            .call(
                "widget.connect",
                Method::POST,
                url,
                Some(&body),
                Auth::PullJwt(pull_jwt),
                Retry::UnsentOnly,
            )
            .await?;
        Ok(())
    }

    /// `POST /widget/pull/{pullId}/idvoptions {optionKey}`.
    pub async fn choose_verification_option(
        &self,
        pull_id: &str,
        pull_jwt: &SecretString,
        option_key: &str,
    ) -> Result<(), CanopyError> {
        let url = self.url(&["widget", "pull", pull_id, "idvoptions"], &[])?;
        let body = json!({ "optionKey": option_key });
        let _: Value = self
            .call(
                "widget.idvoptions",
                Method::POST,
                url,
                Some(&body),
                Auth::PullJwt(pull_jwt),
                Retry::UnsentOnly,
            )
            .await?;
        Ok(())
    }

    /// `POST /widget/pull/{pullId}/idv {mfaValue}`.
    pub async fn submit_verification_code(
        &self,
        pull_id: &str,
        pull_jwt: &SecretString,
        code: &SecretString,
    ) -> Result<(), CanopyError> {
        let url = self.url(&["widget", "pull", pull_id, "idv"], &[])?;
        let body = json!({ "mfaValue": code.expose_secret() });
        let _: Value = self
            .call(
                "widget.idv",
                Method::POST,
                url,
                Some(&body),
                Auth::PullJwt(pull_jwt),
                Retry::UnsentOnly,
            )
            .await?;
        Ok(())
    }
}

/// The route template of each operation: the metrics' bounded `endpoint` label, never the raw
/// path (which carries team, pull and monitoring ids).
fn route(operation: &'static str) -> &'static str {
    match operation {
        "pulls.get" => "GET /teams/{teamId}/pulls/{pullId}",
        "webhooks.list" => "GET /teams/{teamId}/webhooks",
        "monitorings.events" => "GET /teams/{teamId}/monitorings/{monitoringId}/events",
        "monitorings.list" => "GET /teams/{teamId}/monitorings",
        "monitorings.get" => "GET /teams/{teamId}/monitorings/{monitoringId}",
        "monitorings.create" => "POST /teams/{teamId}/monitorings",
        "monitorings.delete" => "DELETE /teams/{teamId}/monitorings/{monitoringId}",
        "monitorings.refresh" => "POST /teams/{teamId}/monitorings/{monitoringId}/refresh",
        "monitorings.reconnect_token" => {
            "GET /teams/{teamId}/monitorings/{monitoringId}/reconnectToken"
        }
        "widget.reconnect_token" => "POST /widget/pull/reconnectToken",
        "widget.connect" => "POST /widget/pull/{pullId}/connect",
        "widget.idvoptions" => "POST /widget/pull/{pullId}/idvoptions",
        "widget.idv" => "POST /widget/pull/{pullId}/idv",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> CanopyClient {
        let config = CanopyConfig::new(
            "https://example.test/api/v1.0.0/",
            "https://example.test",
            "team-1",
            "id",
            SecretString::from("secret"),
            "alias",
        );
        CanopyClient::new(&config).unwrap()
    }

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        let c = client();
        assert_eq!(
            c.url(&["teams", "team-1", "pulls", "../monitorings"], &[])
                .unwrap()
                .as_str(),
            "https://example.test/api/v1.0.0/teams/team-1/pulls/..%2Fmonitorings"
        );
        for bad in ["..", ".", "", " "] {
            assert!(
                matches!(
                    c.url(&["teams", "team-1", "pulls", bad], &[]),
                    Err(CanopyError::InvalidRequest { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            c.url(&["teams", "team-1", "monitorings"], &[("pull_id", "a&b")])
                .unwrap()
                .as_str(),
            "https://example.test/api/v1.0.0/teams/team-1/monitorings?pull_id=a%26b"
        );
    }

    #[test]
    fn debug_shows_no_credentials() {
        let shown = format!("{:?}", client());
        assert!(!shown.contains("secret"));
    }
}
