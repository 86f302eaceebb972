//! The Canopy API client: HTTP Basic with the team's key (or the `pull-jwt` header on the
//! white-label routes), connect and request timeouts, and retries with the shared backoff for
//! the calls that are safe to repeat.

use std::time::Duration;

use coverwatch_core::backoff::Backoff;
use coverwatch_core::telemetry::{self, CallOutcome};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::config::CanopyConfig;
use crate::error::{CanopyError, TransportKind};
use crate::model::{
    ErrorBody, Monitoring, MonitoringList, MonitoringResponse, PullJwtResponse, PullResponse,
    ReconnectTokenResponse, RefreshResponse,
};

/// Whether a call may be sent again after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Reads, and writes Canopy documents (or that are by nature) as repeatable.
    Idempotent,
    /// Sent once: a repeat could create a second monitoring, bill a second refresh, or submit
    /// credentials twice. Only a request that never left (no connection) is sent again.
    Once,
}

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

#[derive(Clone)]
pub struct CanopyClient {
    http: reqwest::Client,
    base_url: url::Url,
    team_id: String,
    client_id: String,
    client_secret: SecretString,
    max_attempts: u32,
    backoff: Backoff,
    max_retry_after: Duration,
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
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("coverwatch-canopy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| CanopyError::config("http_client", err.to_string()))?;
        Ok(Self {
            http,
            base_url,
            team_id: config.team_id.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            max_attempts: config.max_attempts.max(1),
            backoff: config.backoff,
            max_retry_after: config.max_retry_after,
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
        let mut attempt = 1;
        loop {
            let result = self
                .send_once(operation, method.clone(), url.clone(), body, auth)
                .await;
            let err = match result {
                Ok(value) => {
                    tracing::debug!(operation, attempt, "canopy call succeeded");
                    return Ok(value);
                }
                Err(err) => err,
            };
            let repeatable = match retry {
                Retry::Idempotent => err.is_transient(),
                Retry::Once => matches!(
                    err,
                    CanopyError::Transport {
                        kind: TransportKind::Connect,
                        ..
                    }
                ),
            };
            if !repeatable || attempt >= self.max_attempts {
                tracing::warn!(operation, attempt, error = %err, "canopy call failed");
                return Err(err);
            }
            let mut delay = self.backoff.delay(attempt, rand::random::<f64>());
            if let CanopyError::Api {
                retry_after: Some(seconds),
                ..
            } = &err
            {
                let asked = Duration::from_secs(*seconds);
                if asked > self.max_retry_after {
                    tracing::warn!(
                        operation,
                        retry_after = seconds,
                        "canopy asks to wait longer than we will"
                    );
                    return Err(err);
                }
                delay = delay.max(asked);
            }
            tracing::info!(operation, attempt, delay_ms = delay.as_millis() as u64, error = %err, "retrying canopy call");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One HTTP exchange, as a client span (a child of whatever span the caller runs in).
    /// Canopy documents no request id header ("No message, no request id"); one is recorded
    /// only if a response happens to carry one.
    async fn send_once<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        url: url::Url,
        body: Option<&Value>,
        auth: Auth<'_>,
    ) -> Result<T, CanopyError> {
        let span = tracing::info_span!(
            "vendor.call",
            otel.name = %format_args!("canopy {operation}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            vendor = "canopy",
            operation,
            http.request.method = %method,
            http.response.status_code = tracing::field::Empty,
            vendor.request_id = tracing::field::Empty,
        );
        let answer = self
            .exchange(operation, method, url, body, auth)
            .instrument(span.clone())
            .await;
        if answer.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        answer
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        url: url::Url,
        body: Option<&Value>,
        auth: Auth<'_>,
    ) -> Result<T, CanopyError> {
        let mut request = self.http.request(method, url);
        request = match auth {
            Auth::Key => {
                request.basic_auth(&self.client_id, Some(self.client_secret.expose_secret()))
            }
            Auth::PullJwt(jwt) => request.header("pull-jwt", jwt.expose_secret()),
        };
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = std::time::Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                record(operation, CallOutcome::Transport, started);
                return Err(transport(e));
            }
        };
        let status = response.status();
        let request_id = ["x-request-id", "x-canopy-request-id", "request-id"]
            .iter()
            .find_map(|name| response.headers().get(*name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let span = tracing::Span::current();
        span.record("http.response.status_code", status.as_u16());
        if let Some(id) = &request_id {
            span.record("vendor.request_id", id.as_str());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                record(operation, CallOutcome::Transport, started);
                return Err(transport(e));
            }
        };
        record(operation, CallOutcome::Status(status.as_u16()), started);
        if !status.is_success() {
            let code = serde_json::from_slice::<ErrorBody>(&bytes)
                .ok()
                .and_then(|b| b.error)
                .filter(|c| !c.is_empty());
            return Err(CanopyError::Api {
                status: status.as_u16(),
                code,
                request_id,
                retry_after,
            });
        }
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) && status == StatusCode::NO_CONTENT
        {
            &b"{}"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|err| CanopyError::Decode(err.to_string()))
    }

    fn team(&self) -> &str {
        &self.team_id
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
                Retry::Once,
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
                Retry::Once,
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
            Retry::Once,
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
                Retry::Once,
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
                Retry::Once,
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
                Retry::Once,
            )
            .await?;
        Ok(())
    }
}

fn record(operation: &'static str, outcome: CallOutcome, started: std::time::Instant) {
    telemetry::vendor_call("canopy", route(operation), outcome, started.elapsed());
}

/// The route template of each operation: the metrics' bounded `endpoint` label, never the raw
/// path (which carries team, pull and monitoring ids).
fn route(operation: &'static str) -> &'static str {
    match operation {
        "pulls.get" => "GET /teams/{teamId}/pulls/{pullId}",
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

fn transport(err: reqwest::Error) -> CanopyError {
    let kind = if err.is_connect() {
        TransportKind::Connect
    } else if err.is_timeout() {
        TransportKind::Timeout
    } else {
        TransportKind::Other
    };
    CanopyError::Transport {
        // The URL holds ids only, but it adds nothing a log line needs.
        message: err.without_url().to_string(),
        kind,
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
