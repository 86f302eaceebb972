//! The hosted widget ("link") at `/c/{public_alias}` and the reconnect page at
//! `/c/{public_alias}/reconnect?reconnectToken=…`: plain HTML forms, no JavaScript, so that a
//! test can drive them with form posts and a person with any browser.
//!
//! Pages:
//! * `GET  /c/{alias}?ccmeta-<key>=<value>&…&consentToken=…`: consent (skipped with a valid
//!   consent token), carrier, user name, password. Each `ccmeta-KEY=VALUE` becomes
//!   `"KEY": "VALUE"` in the pull's `meta_data`, values as strings, exactly as Canopy documents
//!   ("Adding metadata to a pull", https://docs.usecanopy.com/reference/adding-metadata-to-a-pull);
//!   nothing else on the URL does (no `meta_data=`, no `ccmeta_`);
//! * `POST /c/{alias}/login` (form `insurerName`, `username`, `password`, `consent=yes` or
//!   `consent_token`, and `meta_data`, the JSON the page put in a hidden field): creates the
//!   pull and answers 303 to its status page;
//! * `GET  /c/{alias}/pull/{pull_id}?token=<pull jwt>`: the pull's current step;
//! * `POST /c/{alias}/pull/{pull_id}/connect|idvoptions|idv` (form `token` plus `insurerName`,
//!   `username`, `password` | `optionKey` | `mfaValue`): 303 back to the status page;
//! * `GET  /c/{alias}/reconnect?reconnectToken=…`: 303 to the status page of the pull to
//!   reconnect, or an error page naming Canopy's code (`ALREADY_RECONNECTED`, …).
//!
//! Every page's `<body>` carries `data-pull-status` (and `data-pull-id`) so tests need not
//! scrape text.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};

use super::model::pull_status as ps;
use super::{CanopyError, CanopySim, fixtures};
use crate::faults::guard;

pub fn router(sim: CanopySim) -> Router {
    let f = sim.inner.ctx.faults.clone();
    Router::new()
        .route("/c/{alias}", guard(&f, "canopy.link.open", get(open)))
        .route(
            "/c/{alias}/login",
            guard(&f, "canopy.link.login", post(login)),
        )
        .route(
            "/c/{alias}/reconnect",
            guard(&f, "canopy.link.reconnect", get(reconnect)),
        )
        .route(
            "/c/{alias}/pull/{pull_id}",
            guard(&f, "canopy.link.status", get(status)),
        )
        .route(
            "/c/{alias}/pull/{pull_id}/{action}",
            guard(&f, "canopy.link.action", post(action)),
        )
        .with_state(sim)
}

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(
    status: StatusCode,
    title: &str,
    pull: Option<(&str, &str)>,
    head: &str,
    body: &str,
) -> Response {
    let attrs = match pull {
        Some((id, st)) => format!(
            " data-pull-id=\"{}\" data-pull-status=\"{}\"",
            escape(id),
            escape(st)
        ),
        None => String::new(),
    };
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · Canopy Connect (sandbox)</title>{head}\
         <style>body{{font-family:sans-serif;max-width:32rem;margin:2rem auto}}label{{display:block;margin:.5rem 0}}\
         .error{{color:#b00020}}</style></head>\n<body{attrs}>\n<h1>{t}</h1>\n{body}\n</body></html>\n",
        t = escape(title)
    );
    (status, Html(html)).into_response()
}

fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Something went wrong",
        None,
        "",
        &format!("<p class=\"error\" id=\"error\">{}</p>", escape(message)),
    )
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

fn form(body: &Bytes) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn get_field(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_owned())],
    )
        .into_response()
}

impl CanopySim {
    fn link_base(&self, alias: &str) -> String {
        format!("{}/canopy/c/{alias}", self.base_url())
    }

    /// The link a pull was made on (each team has its own).
    fn pull_link_base(&self, pull_id: &str) -> String {
        let alias = self
            .pull(pull_id)
            .map(|p| p.public_alias)
            .unwrap_or_else(|| self.inner.cfg.public_alias.clone());
        self.link_base(&alias)
    }

    fn status_url(&self, pull_id: &str, token: &str) -> String {
        let mut url = url::Url::parse(&format!("{}/pull/{pull_id}", self.pull_link_base(pull_id)))
            .expect("url parses");
        url.query_pairs_mut().append_pair("token", token);
        url.to_string()
    }
}

fn carrier_select(selected: Option<&str>) -> String {
    let options: String = fixtures::carriers()
        .iter()
        .map(|c| {
            let sel = if Some(c.carrier_id.as_str()) == selected {
                " selected"
            } else {
                ""
            };
            format!(
                "<option value=\"{}\"{sel}>{}</option>",
                escape(&c.carrier_id),
                escape(&c.name)
            )
        })
        .collect();
    format!(
        "<label>Insurance carrier <select name=\"insurerName\" id=\"insurerName\">{options}</select></label>"
    )
}

const CREDENTIAL_FIELDS: &str = "<label>Username <input name=\"username\" id=\"username\" autocomplete=\"username\"></label>\
     <label>Password <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\"></label>";

const CONSENT_TEXT: &str =
    "I agree to the Canopy Connect End User Privacy Policy and Terms of Service";

/// The query prefix Canopy documents for meta data on a link URL.
pub const META_QUERY_PREFIX: &str = "ccmeta-";

/// A pull's meta data from a link URL's `ccmeta-KEY=VALUE` parameters, values as strings. A
/// key given twice keeps its last value.
pub fn meta_from_link_query(pairs: &[(String, String)]) -> Map<String, Value> {
    pairs
        .iter()
        .filter_map(|(k, v)| {
            let key = k
                .strip_prefix(META_QUERY_PREFIX)
                .filter(|k| !k.is_empty())?;
            Some((key.to_owned(), Value::String(v.clone())))
        })
        .collect()
}

/// The meta data the login page carried over in its hidden field.
fn meta_from_form(pairs: &[(String, String)]) -> Result<Map<String, Value>, String> {
    match get_field(pairs, "meta_data") {
        Some(raw) if !raw.trim().is_empty() => match serde_json::from_str::<Value>(&raw) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err("meta_data must be a JSON object".into()),
        },
        _ => Ok(Map::new()),
    }
}

fn login_page(
    sim: &CanopySim,
    alias: &str,
    status: StatusCode,
    meta: &Map<String, Value>,
    consent_token: Option<&str>,
    error: Option<&str>,
) -> Response {
    let consent = match consent_token {
        Some(t) => format!(
            "<input type=\"hidden\" name=\"consent_token\" value=\"{}\">",
            escape(t)
        ),
        None => format!(
            "<label><input type=\"checkbox\" name=\"consent\" id=\"consent\" value=\"yes\"> {CONSENT_TEXT}</label>"
        ),
    };
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<p>Connect your insurance account. This is the Canopy Connect sandbox: use a test login such as \
         <code>user_good</code> / <code>pass_good</code>.</p>{error}\
         <form method=\"post\" action=\"{action}\" id=\"login\">\
         <input type=\"hidden\" name=\"meta_data\" value=\"{meta}\">{consent}{carriers}{CREDENTIAL_FIELDS}\
         <button type=\"submit\">Connect</button></form>",
        action = escape(&format!("{}/login", sim.link_base(alias))),
        meta = escape(&Value::Object(meta.clone()).to_string()),
        carriers = carrier_select(None),
    );
    page(status, "Connect your insurance", None, "", &body)
}

fn alias_ok(sim: &CanopySim, alias: &str) -> bool {
    sim.team_for_alias(alias).is_some()
}

fn unknown_link() -> Response {
    error_page(StatusCode::NOT_FOUND, "This link does not exist.")
}

async fn open(
    State(sim): State<CanopySim>,
    Path(alias): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    if !alias_ok(&sim, &alias) {
        return unknown_link();
    }
    let q = query_pairs(&q);
    let meta = meta_from_link_query(&q);
    let token = get_field(&q, "consentToken").or_else(|| get_field(&q, "consent_token"));
    let valid = token.filter(|t| sim.with_state(|st| st.consent_tokens.contains(t)));
    login_page(&sim, &alias, StatusCode::OK, &meta, valid.as_deref(), None)
}

async fn login(State(sim): State<CanopySim>, Path(alias): Path<String>, body: Bytes) -> Response {
    let Some(team) = sim.team_for_alias(&alias) else {
        return unknown_link();
    };
    let f = form(&body);
    let meta = match meta_from_form(&f) {
        Ok(m) => m,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let token = get_field(&f, "consent_token")
        .filter(|t| sim.with_state(|st| st.consent_tokens.contains(t)));
    if token.is_none() && get_field(&f, "consent").is_none_or(|c| c.is_empty()) {
        return login_page(
            &sim,
            &alias,
            StatusCode::BAD_REQUEST,
            &meta,
            None,
            Some("Please agree to the terms to continue."),
        );
    }
    let carrier = get_field(&f, "insurerName").unwrap_or_default();
    let username = get_field(&f, "username").unwrap_or_default();
    let password = get_field(&f, "password").unwrap_or_default();
    if username.trim().is_empty() {
        return login_page(
            &sim,
            &alias,
            StatusCode::BAD_REQUEST,
            &meta,
            token.as_deref(),
            Some("Please enter your username."),
        );
    }
    match sim.start_pull(
        &team,
        &carrier,
        Value::Object(meta.clone()),
        &username,
        &password,
    ) {
        Ok(pull_id) => see_other(&sim.status_url(&pull_id, &sim.issue_jwt(&pull_id))),
        Err(_) => login_page(
            &sim,
            &alias,
            StatusCode::BAD_REQUEST,
            &meta,
            token.as_deref(),
            Some("Please choose a supported carrier."),
        ),
    }
}

async fn reconnect(
    State(sim): State<CanopySim>,
    Path(alias): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    if !alias_ok(&sim, &alias) {
        return unknown_link();
    }
    let q = query_pairs(&q);
    let token = get_field(&q, "reconnectToken").unwrap_or_default();
    match sim.redeem(&token) {
        Ok((pull_id, jwt)) => see_other(&sim.status_url(&pull_id, &jwt)),
        Err(e) => {
            let code = e.code().unwrap_or("INVALID_RECONNECT_TOKEN");
            let message = match code {
                "ALREADY_RECONNECTED" => "This account is already reconnected. Nothing more to do.",
                "NEWER_PULL_AVAILABLE" => "This reconnect link has been replaced by a newer one.",
                "MONITORING_INACTIVE" => "This account is no longer being monitored.",
                _ => "This reconnect link is not valid.",
            };
            let body = format!(
                "<p class=\"error\" id=\"error\" data-error-code=\"{code}\">{}</p>",
                escape(message)
            );
            page(StatusCode::BAD_REQUEST, "Reconnect", None, "", &body)
        }
    }
}

/// What the status page needs from the pull's record.
struct View {
    status: String,
    carrier: Option<String>,
    carrier_name: Option<String>,
    login_error_message: Option<String>,
    mfa_options: Option<Map<String, Value>>,
    reconnecting: bool,
    failed_logins: u32,
    policies: Vec<(String, String)>,
}

fn authorized(sim: &CanopySim, pull_id: &str, token: &str) -> bool {
    sim.verify_jwt(token).is_some_and(|p| p == pull_id)
}

fn expired_session() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "This session has expired. Please open the link again.",
    )
}

async fn status(
    State(sim): State<CanopySim>,
    Path((alias, pull_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    if !alias_ok(&sim, &alias) {
        return unknown_link();
    }
    let q = query_pairs(&q);
    let token = get_field(&q, "token").unwrap_or_default();
    if !authorized(&sim, &pull_id, &token) {
        return expired_session();
    }
    let view = sim.with_state(|st| {
        st.pulls.get(&pull_id).map(|r| View {
            status: r.pull.status.clone(),
            carrier: r.pull.insurance_provider_name.clone(),
            carrier_name: r.pull.insurance_provider_friendly_name.clone(),
            login_error_message: r.login_error_message.clone(),
            mfa_options: r.mfa_options.clone(),
            reconnecting: r.reconnecting,
            failed_logins: r.failed_logins,
            policies: r
                .pull
                .policies
                .iter()
                .map(|p| {
                    (
                        p.name.clone().unwrap_or_default(),
                        p.status.clone().unwrap_or_default(),
                    )
                })
                .collect(),
        })
    });
    let Some(v) = view else {
        return error_page(StatusCode::NOT_FOUND, "Unknown connection.");
    };
    render_status(&sim, &pull_id, &token, &v)
}

fn render_status(sim: &CanopySim, pull_id: &str, token: &str, v: &View) -> Response {
    let base = sim.pull_link_base(pull_id);
    let action = |a: &str| escape(&format!("{base}/pull/{pull_id}/{a}"));
    let hidden = format!(
        "<input type=\"hidden\" name=\"token\" value=\"{}\">",
        escape(token)
    );
    let carrier_name = escape(v.carrier_name.as_deref().unwrap_or("your carrier"));
    let ids = Some((pull_id, v.status.as_str()));
    match v.status.as_str() {
        ps::NOT_AUTHENTICATED => {
            let prompt = if v.reconnecting && v.failed_logins == 0 {
                format!(
                    "<p id=\"prompt\">Your {carrier_name} connection needs attention. Please sign in again.</p>"
                )
            } else {
                let msg = v.login_error_message.as_deref().unwrap_or(
                    "The username or password you entered is incorrect. Please try again.",
                );
                format!("<p class=\"error\" id=\"error\">{}</p>", escape(msg))
            };
            let carrier_field = if v.reconnecting {
                format!(
                    "<input type=\"hidden\" name=\"insurerName\" value=\"{}\"><p>Carrier: {carrier_name}</p>",
                    escape(v.carrier.as_deref().unwrap_or_default())
                )
            } else {
                carrier_select(v.carrier.as_deref())
            };
            let body = format!(
                "{prompt}<form method=\"post\" action=\"{}\" id=\"connect\">{hidden}{carrier_field}{CREDENTIAL_FIELDS}\
                 <button type=\"submit\">Sign in</button></form>",
                action("connect")
            );
            page(StatusCode::OK, "Sign in to your carrier", ids, "", &body)
        }
        ps::IDENTITY_VERIFICATION_OPTIONS => {
            let options: String = v
                .mfa_options
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, (k, label))| {
                    let checked = if i == 0 { " checked" } else { "" };
                    format!(
                        "<label><input type=\"radio\" name=\"optionKey\" value=\"{}\"{checked}> {}</label>",
                        escape(k),
                        escape(label.as_str().unwrap_or_default())
                    )
                })
                .collect();
            let body = format!(
                "<p>{carrier_name} needs to verify it is you. Where should we send a code?</p>\
                 <form method=\"post\" action=\"{}\" id=\"idvoptions\">{hidden}{options}\
                 <button type=\"submit\">Send code</button></form>",
                action("idvoptions")
            );
            page(StatusCode::OK, "Verify your identity", ids, "", &body)
        }
        ps::IDENTITY_VERIFICATION => {
            let body = format!(
                "<p>Enter the verification code from {carrier_name}.</p>\
                 <form method=\"post\" action=\"{}\" id=\"idv\">{hidden}\
                 <label>Code <input name=\"mfaValue\" id=\"mfaValue\" inputmode=\"numeric\" autocomplete=\"one-time-code\"></label>\
                 <button type=\"submit\">Verify</button></form>",
                action("idv")
            );
            page(StatusCode::OK, "Enter your code", ids, "", &body)
        }
        ps::SUCCESS => {
            let items: String = v
                .policies
                .iter()
                .map(|(name, st)| format!("<li>{} ({})</li>", escape(name), escape(st)))
                .collect();
            let (head, next) = match &sim.inner.cfg.on_success_redirect_url {
                Some(url) => (
                    format!(
                        "<meta http-equiv=\"refresh\" content=\"2;url={}\">",
                        escape(url)
                    ),
                    format!(
                        "<p><a id=\"continue\" href=\"{}\">Continue</a></p>",
                        escape(url)
                    ),
                ),
                None => (
                    String::new(),
                    "<p>You can close this window.</p>".to_owned(),
                ),
            };
            let body = format!(
                "<p id=\"success\">Your {carrier_name} account is connected.</p><ul id=\"policies\">{items}</ul>{next}"
            );
            page(StatusCode::OK, "Success", ids, &head, &body)
        }
        ps::PROVIDER_ERROR => page(
            StatusCode::OK,
            "Carrier unavailable",
            ids,
            "",
            &format!(
                "<p class=\"error\" id=\"error\">{carrier_name} is not responding right now. Please try again later.</p>"
            ),
        ),
        ps::INTERNAL_ERROR => page(
            StatusCode::OK,
            "Something went wrong",
            ids,
            "",
            "<p class=\"error\" id=\"error\">Something went wrong on our side. Please try again later.</p>",
        ),
        _ => page(
            StatusCode::OK,
            "Retrieving your policies",
            ids,
            "<meta http-equiv=\"refresh\" content=\"1\">",
            &format!(
                "<p id=\"pending\">Connecting to {carrier_name}… This page refreshes by itself.</p>"
            ),
        ),
    }
}

async fn action(
    State(sim): State<CanopySim>,
    Path((alias, pull_id, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    if !alias_ok(&sim, &alias) {
        return unknown_link();
    }
    let f = form(&body);
    let token = get_field(&f, "token").unwrap_or_default();
    if !authorized(&sim, &pull_id, &token) {
        return expired_session();
    }
    let result: Result<(), CanopyError> = match action.as_str() {
        "connect" => sim.connect_pull(
            &pull_id,
            &get_field(&f, "insurerName").unwrap_or_default(),
            &get_field(&f, "username").unwrap_or_default(),
            &get_field(&f, "password").unwrap_or_default(),
        ),
        "idvoptions" => sim.idv_option(&pull_id, &get_field(&f, "optionKey").unwrap_or_default()),
        "idv" => sim.idv_code(&pull_id, &get_field(&f, "mfaValue").unwrap_or_default()),
        _ => return error_page(StatusCode::NOT_FOUND, "Unknown step."),
    };
    match result {
        Ok(()) => see_other(&sim.status_url(&pull_id, &token)),
        Err(e) => {
            let body = format!(
                "<p class=\"error\" id=\"error\" data-error-code=\"{}\">That step is not possible now.</p>\
                 <p><a id=\"back\" href=\"{}\">Back</a></p>",
                escape(e.code().unwrap_or("ERROR")),
                escape(&sim.status_url(&pull_id, &token))
            );
            page(
                StatusCode::BAD_REQUEST,
                "Something went wrong",
                None,
                "",
                &body,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        query_pairs(&Some(query.to_owned()))
    }

    /// "Adding metadata to a pull", https://docs.usecanopy.com/reference/adding-metadata-to-a-pull:
    /// "adding `?ccmeta-user_id=5&ccmeta-referrer=John` will add the following metadata to your
    /// pull's meta_data field: `{"user_id": "5", "referrer": "John"}`".
    #[test]
    fn meta_data_is_built_from_ccmeta_parameters_as_documented() {
        assert_eq!(
            Value::Object(meta_from_link_query(&pairs(
                "ccmeta-user_id=5&ccmeta-referrer=John"
            ))),
            serde_json::json!({"user_id": "5", "referrer": "John"})
        );
    }

    #[test]
    fn nothing_else_on_the_link_url_becomes_meta_data() {
        let meta = meta_from_link_query(&pairs(
            "meta_data=%7B%22link_id%22%3A%22lnk_1%22%7D&pullMetaData=%7B%22a%22%3A1%7D\
             &ccmeta_user_id=u-42&ccmeta-=empty&consentToken=c&ccmeta-loan=L-1",
        ));
        assert_eq!(
            Value::Object(meta),
            serde_json::json!({"loan": "L-1"}),
            "`meta_data=`, `pullMetaData=` (an SDK option, not a URL parameter) and `ccmeta_` are \
             not Canopy's link parameters"
        );
    }
}
