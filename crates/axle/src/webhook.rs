//! Axle webhooks: authentication of the raw delivery, then normalization.
//!
//! Axle signs nothing. A delivery is genuine when it arrives on the unguessable per-link path we
//! gave Axle as `webhookUri` (`/webhooks/axle/{token}`; the engine matches the token to its
//! link) and, when one is configured, carries the static shared header Axle was asked to add.
//! The payload is never trusted as data: monitoring events only say what to re-fetch.

use crate::PROVIDER;
use crate::detail::AxleEventDetail;
use coverwatch_core::event::{AuthStatus, FailureReason, FieldChange, ReconnectReason};
use coverwatch_core::ids::LinkId;
use coverwatch_core::provider::ProviderError;
use coverwatch_core::webhook::{
    Attribution, AuthenticatedWebhook, DataRef, Happening, InboundWebhook, ParsedWebhook,
    WebhookRejection,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model;
use crate::normalize::parse_date;

/// The flat metadata key under which our link id travels through an Ignition and back.
pub const LINK_ID_METADATA_KEY: &str = "coverwatchLinkId";
/// The external-id kind of the Axle account id (`acc_…`) in `LinkGrant.external_ids`.
pub const ACCOUNT_KIND: &str = "account";

/// The longest path token accepted; ours are far shorter, so anything longer is not ours.
const MAX_TOKEN_LEN: usize = 256;

/// The optional static header every genuine delivery carries. Only a digest of the expected
/// value is kept, and comparing digests takes the same time whatever the header's length.
#[derive(Clone)]
pub struct SharedHeader {
    name: String,
    digest: [u8; 32],
}

impl std::fmt::Debug for SharedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHeader")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SharedHeader {
    pub fn new(name: &str, value: &SecretString) -> Self {
        Self {
            name: name.trim().to_ascii_lowercase(),
            digest: Sha256::digest(value.expose_secret().as_bytes()).into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, webhook: &InboundWebhook) -> Result<(), WebhookRejection> {
        let presented = webhook
            .header(&self.name)
            .ok_or_else(|| WebhookRejection::MissingHeader(self.name.clone().into()))?;
        let presented: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        if bool::from(presented.ct_eq(&self.digest)) {
            Ok(())
        } else {
            Err(WebhookRejection::BadSharedSecret)
        }
    }
}

/// Checks the raw delivery; reads nothing of the body but its top-level `id`. The engine looks
/// the path token up before it calls this, so a delivery to a token never issued is refused
/// without even that read.
pub fn authenticate(
    webhook: &InboundWebhook,
    shared_header: Option<&SharedHeader>,
) -> Result<AuthenticatedWebhook, WebhookRejection> {
    let token = webhook.path.trim_matches('/');
    let plausible = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if !plausible {
        return Err(WebhookRejection::UnknownPath);
    }
    if let Some(header) = shared_header {
        header.check(webhook)?;
    }
    Ok(AuthenticatedWebhook {
        vendor_event_id: event_id(&webhook.body),
        link_token: Some(token.to_owned()),
        late_by_seconds: None,
    })
}

/// The body's top-level `id`, if the body is a JSON object that has one.
fn event_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Option<Value>,
    }
    let parsed: IdOnly = serde_json::from_slice(body).ok()?;
    parsed.id.as_ref().and_then(model::string_of)
}

fn malformed(message: impl Into<String>) -> ProviderError {
    ProviderError::Malformed {
        provider: PROVIDER,
        message: message.into(),
    }
}

/// Normalizes an authenticated delivery.
pub fn parse(webhook: &InboundWebhook) -> Result<ParsedWebhook, ProviderError> {
    let value: Value = serde_json::from_slice(&webhook.body)
        .map_err(|e| malformed(format!("the webhook body is not JSON ({e})")))?;
    if !value.is_object() {
        return Err(malformed("the webhook body is not a JSON object"));
    }
    let event: model::Event = serde_json::from_value(value)
        .map_err(|e| malformed(format!("the webhook body is not an Axle event ({e})")))?;
    let event_type = event
        .event_type
        .clone()
        .ok_or_else(|| malformed("the webhook body has no `type`"))?;
    let data = event.data.clone().unwrap_or_default();
    Ok(ParsedWebhook {
        attribution: attribution(&data),
        occurred_at: event.created_at.as_deref().and_then(parse_date),
        detail: AxleEventDetail {
            event_id: event.id.clone(),
            event_type: event_type.clone(),
            reference: data.reference.clone(),
            ignition_token: ignition_token(&event_type, &data),
            result: data.result.clone(),
        }
        .into(),
        happenings: happening(&event_type, &data).into_iter().collect(),
    })
}

/// The Ignition's token: `data.token` as Axle's Ignition event table names it; deliveries that
/// carry only the shared `ref` name the Ignition there.
fn ignition_token(event_type: &str, data: &model::EventData) -> Option<String> {
    if !event_type.starts_with("ignition.") {
        return None;
    }
    data.token.clone().or_else(|| data.reference.clone())
}

fn attribution(data: &model::EventData) -> Vec<Attribution> {
    let mut out = Vec::new();
    if let Some(link_id) = data
        .metadata
        .get(LINK_ID_METADATA_KEY)
        .and_then(model::string_of)
        .and_then(|s| s.trim().parse::<LinkId>().ok())
    {
        out.push(Attribution::Link(link_id));
    }
    let account = data
        .account
        .clone()
        .or_else(|| data.reference.clone().filter(|r| r.starts_with("acc_")));
    if let Some(account) = account {
        out.push(Attribution::External {
            kind: ACCOUNT_KIND.to_owned(),
            value: account,
        });
    }
    if out.is_empty() {
        out.push(Attribution::Unknown);
    }
    out
}

/// What a delivery means for the link; `None` when it says nothing the caller does not know.
fn happening(event_type: &str, data: &model::EventData) -> Option<Happening> {
    let vendor = || Happening::Vendor {
        vendor_type: event_type.to_owned(),
    };
    Some(match event_type {
        // Sent while Start Ignition is still answering, so before the link that will receive it
        // is written (the first try meets a 401 and Axle retries it): it only repeats what
        // `link.session_opened` told the caller.
        "ignition.created" => return None,
        "ignition.opened" => Happening::AuthProgress {
            status: AuthStatus::Opened,
            login_error_message: None,
            verification_options: Vec::new(),
            sequence: None,
            sequence_scope: String::new(),
        },
        "ignition.attempted" => Happening::AuthProgress {
            status: AuthStatus::NotAuthenticated,
            login_error_message: data.message.clone(),
            verification_options: Vec::new(),
            sequence: None,
            sequence_scope: String::new(),
        },
        "ignition.completed" => Happening::SessionCompleted {
            code: data.auth_code.clone(),
            data: DataRef::All,
        },
        "ignition.exited" => Happening::SessionExited {
            step: data.step.clone(),
        },
        "ignition.errored" => Happening::SessionFailed {
            reason: failure_reason(data.message.as_deref()),
            message: data.message.clone(),
        },
        "account.modified" => Happening::DataChanged {
            data: data
                .reference
                .clone()
                .or_else(|| data.account.clone())
                .map_or(DataRef::All, DataRef::Account),
            hinted: hints(data.changes.as_ref()),
        },
        "account.retrying" => Happening::Retrying,
        "account.disconnected" => Happening::ReconnectRequired {
            reason: reconnect_reason(data.status.as_deref().or(data.code.as_deref())),
            reconnect_url: None,
            reconnect_token: None,
        },
        "policy.modified" => Happening::DataChanged {
            data: data.reference.clone().map_or(DataRef::All, DataRef::Policy),
            hinted: hints(data.changes.as_ref()),
        },
        "policy.renewal-available" => match &data.reference {
            Some(policy_ref) => Happening::RenewalAvailable {
                policy_ref: policy_ref.clone(),
            },
            None => vendor(),
        },
        _ => vendor(),
    })
}

/// Axle's error messages are free text: one that blames the carrier is the carrier's problem
/// (the user may try again later); anything else stays unclassified.
pub fn failure_reason(message: Option<&str>) -> FailureReason {
    let Some(message) = message else {
        return FailureReason::Other;
    };
    let message = message.to_ascii_lowercase();
    if [
        "carrier",
        "insurer",
        "insurance provider",
        "insurance company",
    ]
    .iter()
    .any(|needle| message.contains(needle))
    {
        FailureReason::ProviderError
    } else {
        FailureReason::Other
    }
}

pub fn reconnect_reason(status: Option<&str>) -> ReconnectReason {
    match status.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("credentials-expired") => ReconnectReason::CredentialsExpired,
        Some("mfa-expired") => ReconnectReason::MfaExpired,
        Some("account-disabled") => ReconnectReason::AccountDisabled,
        Some("account-inaccessible") => ReconnectReason::AccountInaccessible,
        _ => ReconnectReason::Other,
    }
}

/// What Axle says changed. The docs show `changes` as a list of `{type, key, value, oldValue}`
/// and also nested differently, so lists, nested lists, single change objects and plain
/// `{field: value}` or `{field: {value, oldValue}}` maps are all read.
pub fn hints(changes: Option<&Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    if let Some(changes) = changes {
        collect_hints(changes, &mut out, 0);
    }
    out
}

fn collect_hints(value: &Value, out: &mut Vec<FieldChange>, depth: usize) {
    if depth > 4 {
        return;
    }
    match value {
        Value::Array(items) => {
            for item in items {
                collect_hints(item, out, depth + 1);
            }
        }
        Value::Object(obj) => {
            if let Some(field) = ["key", "field", "path"]
                .iter()
                .find_map(|k| obj.get(*k).and_then(model::string_of))
            {
                out.push(FieldChange {
                    field,
                    before: obj.get("oldValue").and_then(text),
                    after: obj
                        .get("value")
                        .or_else(|| obj.get("newValue"))
                        .and_then(text),
                });
            } else if let Some(inner) = obj.get("changes") {
                collect_hints(inner, out, depth + 1);
            } else {
                for (field, change) in obj {
                    match change {
                        Value::Object(c)
                            if c.contains_key("value") || c.contains_key("oldValue") =>
                        {
                            out.push(FieldChange {
                                field: field.clone(),
                                before: c.get("oldValue").and_then(text),
                                after: c.get("value").and_then(text),
                            })
                        }
                        other => out.push(FieldChange {
                            field: field.clone(),
                            before: None,
                            after: text(other),
                        }),
                    }
                }
            }
        }
        _ => {}
    }
}

/// A changed value as text: strings as they are, `null` as nothing, the rest as JSON.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    fn inbound(path: &str, body: Value) -> InboundWebhook {
        InboundWebhook {
            path: path.to_owned(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            received_at: Utc::now(),
        }
    }

    fn event(event_type: &str, data: Value) -> Value {
        json!({"id": "evt_1", "type": event_type, "data": data, "createdAt": "2022-10-05T14:48:00.000Z"})
    }

    fn parsed(event_type: &str, data: Value) -> ParsedWebhook {
        parse(&inbound("tok", event(event_type, data))).unwrap()
    }

    fn only(p: &ParsedWebhook) -> &Happening {
        assert_eq!(p.happenings.len(), 1);
        &p.happenings[0]
    }

    #[test]
    fn the_path_token_is_returned_for_the_engine_to_check() {
        let auth = authenticate(
            &inbound("whk_abc123", json!({"id": "evt_9", "type": "x"})),
            None,
        )
        .unwrap();
        assert_eq!(
            auth,
            AuthenticatedWebhook {
                vendor_event_id: Some("evt_9".into()),
                link_token: Some("whk_abc123".into()),
                late_by_seconds: None,
            }
        );
        let trailing = authenticate(&inbound("whk_abc123/", json!({})), None).unwrap();
        assert_eq!(trailing.link_token.as_deref(), Some("whk_abc123"));
        assert_eq!(trailing.vendor_event_id, None);
        for bad in ["", "/", "a/b", "tok%2F", &"a".repeat(300)] {
            assert_eq!(
                authenticate(&inbound(bad, json!({})), None),
                Err(WebhookRejection::UnknownPath),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_event_id_is_read_leniently() {
        let mut w = inbound("tok", json!({}));
        w.body = b"not json".to_vec();
        assert_eq!(authenticate(&w, None).unwrap().vendor_event_id, None);
        let w = inbound("tok", json!({"id": 42, "data": {"id": "nested"}}));
        assert_eq!(
            authenticate(&w, None).unwrap().vendor_event_id.as_deref(),
            Some("42")
        );
        let w = inbound("tok", json!({"id": null}));
        assert_eq!(authenticate(&w, None).unwrap().vendor_event_id, None);
    }

    #[test]
    fn a_configured_shared_header_must_match() {
        let header = SharedHeader::new(
            "X-Coverwatch-Auth",
            &SecretString::from("s3cret".to_owned()),
        );
        assert_eq!(header.name(), "x-coverwatch-auth");
        assert!(!format!("{header:?}").contains("s3cret"));
        let mut w = inbound("tok", json!({"id": "evt_1"}));
        assert_eq!(
            authenticate(&w, Some(&header)),
            Err(WebhookRejection::MissingHeader("x-coverwatch-auth".into()))
        );
        w.headers.push(("x-coverwatch-auth".into(), "wrong".into()));
        assert_eq!(
            authenticate(&w, Some(&header)),
            Err(WebhookRejection::BadSharedSecret)
        );
        w.headers.pop();
        w.headers
            .push(("x-coverwatch-auth".into(), "s3cret".into()));
        assert!(authenticate(&w, Some(&header)).is_ok());
        // The path is checked first: no token, no link.
        w.path = String::new();
        assert_eq!(
            authenticate(&w, Some(&header)),
            Err(WebhookRejection::UnknownPath)
        );
    }

    #[test]
    fn ignition_events() {
        let link = LinkId::new();
        let meta = json!({"coverwatchLinkId": link.to_string(), "order": "7"});
        let p = parsed(
            "ignition.opened",
            json!({"ref": "ign_1", "metadata": meta, "user": {"id": "u1"}}),
        );
        assert!(matches!(
            only(&p),
            Happening::AuthProgress {
                status: AuthStatus::Opened,
                ..
            }
        ));
        assert_eq!(p.attribution, vec![Attribution::Link(link)]);
        let created = parsed(
            "ignition.created",
            json!({"ref": "ign_1", "metadata": meta, "user": {"id": "u1"}}),
        );
        assert!(created.happenings.is_empty());
        assert_eq!(created.attribution, vec![Attribution::Link(link)]);
        let p = parsed(
            "ignition.attempted",
            json!({"metadata": meta, "carrier": "geico", "attempt": 2,
                                                    "message": "Wrong password"}),
        );
        match only(&p) {
            Happening::AuthProgress {
                status,
                login_error_message,
                ..
            } => {
                assert_eq!(*status, AuthStatus::NotAuthenticated);
                assert_eq!(login_error_message.as_deref(), Some("Wrong password"));
            }
            other => panic!("{other:?}"),
        }
        let p = parsed(
            "ignition.completed",
            json!({"authCode": "code-1", "result": "link", "metadata": meta}),
        );
        match only(&p) {
            Happening::SessionCompleted { code, data } => {
                assert_eq!(code.as_ref().unwrap().expose_secret(), "code-1");
                assert_eq!(*data, DataRef::All);
            }
            other => panic!("{other:?}"),
        }
        let p = parsed(
            "ignition.exited",
            json!({"step": "carrier-select", "metadata": meta}),
        );
        assert!(
            matches!(only(&p), Happening::SessionExited { step: Some(s) } if s == "carrier-select")
        );
        let p = parsed(
            "ignition.errored",
            json!({"message": "Unable to connect to the insurance carrier. Please try again later."}),
        );
        match only(&p) {
            Happening::SessionFailed { reason, message } => {
                assert_eq!(*reason, FailureReason::ProviderError);
                assert!(message.as_deref().unwrap().starts_with("Unable to connect"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.attribution, vec![Attribution::Unknown]);
        assert_eq!(
            failure_reason(Some("Something broke")),
            FailureReason::Other
        );
        assert_eq!(failure_reason(None), FailureReason::Other);
    }

    #[test]
    fn monitoring_events() {
        let link = LinkId::new();
        let meta = json!({"coverwatchLinkId": link.to_string()});
        let p = parsed(
            "account.modified",
            json!({"ref": "acc_1", "metadata": meta,
            "changes": [{"type": "UPDATE", "key": "email", "value": "new@x.io", "oldValue": "old@x.io"}]}),
        );
        match only(&p) {
            Happening::DataChanged { data, hinted } => {
                assert_eq!(*data, DataRef::Account("acc_1".into()));
                assert_eq!(
                    hinted,
                    &vec![FieldChange {
                        field: "email".into(),
                        before: Some("old@x.io".into()),
                        after: Some("new@x.io".into()),
                    }]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.attribution,
            vec![
                Attribution::Link(link),
                Attribution::External {
                    kind: "account".into(),
                    value: "acc_1".into()
                }
            ]
        );
        let p = parsed("account.retrying", json!({"ref": "acc_1"}));
        assert!(matches!(only(&p), Happening::Retrying));
        assert_eq!(
            p.attribution,
            vec![Attribution::External {
                kind: "account".into(),
                value: "acc_1".into()
            }]
        );

        let p = parsed(
            "policy.modified",
            json!({"ref": "pol_1", "account": "acc_1",
            "changes": [{"type": "UPDATE", "key": "isActive", "value": false, "oldValue": true}]}),
        );
        match only(&p) {
            Happening::DataChanged { data, hinted } => {
                assert_eq!(*data, DataRef::Policy("pol_1".into()));
                assert_eq!(hinted[0].before.as_deref(), Some("true"));
                assert_eq!(hinted[0].after.as_deref(), Some("false"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            p.attribution,
            vec![Attribution::External {
                kind: "account".into(),
                value: "acc_1".into()
            }]
        );
        let p = parsed(
            "policy.renewal-available",
            json!({"ref": "pol_1", "account": "acc_1"}),
        );
        assert!(
            matches!(only(&p), Happening::RenewalAvailable { policy_ref } if policy_ref == "pol_1")
        );
        let p = parsed("policy.renewal-available", json!({"account": "acc_1"}));
        assert!(
            matches!(only(&p), Happening::Vendor { vendor_type } if vendor_type == "policy.renewal-available")
        );
    }

    #[test]
    fn disconnect_reasons_read_status_or_the_older_code() {
        for (status, want) in [
            ("credentials-expired", ReconnectReason::CredentialsExpired),
            ("mfa-expired", ReconnectReason::MfaExpired),
            ("account-disabled", ReconnectReason::AccountDisabled),
            ("account-inaccessible", ReconnectReason::AccountInaccessible),
            ("inactive", ReconnectReason::Other),
        ] {
            for key in ["status", "code"] {
                let p = parsed("account.disconnected", json!({"ref": "acc_1", key: status}));
                match only(&p) {
                    Happening::ReconnectRequired {
                        reason,
                        reconnect_url,
                        reconnect_token,
                    } => {
                        assert_eq!(*reason, want, "{key}={status}");
                        assert!(reconnect_url.is_none() && reconnect_token.is_none());
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        let p = parsed("account.disconnected", json!({"ref": "acc_1"}));
        assert!(matches!(
            only(&p),
            Happening::ReconnectRequired {
                reason: ReconnectReason::Other,
                ..
            }
        ));
    }

    /// Axle's Ignition event table (docs.axle.insure/api-reference/webhooks/ignition-events)
    /// gives Ignition events `data.token`, the Ignition token; the completion's `result` is
    /// `link`, `manual` or `proxy` (docs.axle.insure/guides/ignition-events, "Redirect and
    /// Window MessageEvent parameters"), and Ignition Status Handling
    /// (docs.axle.insure/api-reference/ignition/ignition-status-handling, "Redirect Parameters")
    /// also names `basic` ("account connection was made but policy details are not available").
    /// The value is carried as Axle wrote it; what is linked follows the exchange's answer.
    #[test]
    fn ignition_events_carry_their_token_and_result() {
        for result in ["link", "basic", "manual", "proxy"] {
            let p = parsed(
                "ignition.completed",
                json!({"token": "ign_d83jd7n2hd75jDh6E575x", "ref": "ign_d83jd7n2hd75jDh6E575x",
                       "authCode": "code", "result": result}),
            );
            let AxleEventDetail {
                ignition_token,
                result: seen,
                ..
            } = AxleEventDetail::try_from(&p.detail).unwrap();
            assert_eq!(ignition_token.as_deref(), Some("ign_d83jd7n2hd75jDh6E575x"));
            assert_eq!(seen.as_deref(), Some(result));
            assert!(matches!(
                only(&p),
                Happening::SessionCompleted { code: Some(_), .. }
            ));
        }
        // Only `token`: read.
        let p = parsed("ignition.opened", json!({"token": "ign_only"}));
        let detail = AxleEventDetail::try_from(&p.detail).unwrap();
        assert_eq!(detail.ignition_token.as_deref(), Some("ign_only"));
        // A monitoring event's `ref` is an account or policy, not an Ignition.
        let p = parsed("account.modified", json!({"ref": "acc_1"}));
        let detail = AxleEventDetail::try_from(&p.detail).unwrap();
        assert_eq!(detail.ignition_token, None);
    }

    #[test]
    fn detail_time_and_unknown_types() {
        let p = parsed(
            "policy-update.request-initiated",
            json!({"ref": "pol_9", "account": "acc_1"}),
        );
        assert!(
            matches!(only(&p), Happening::Vendor { vendor_type } if vendor_type == "policy-update.request-initiated")
        );
        assert_eq!(
            AxleEventDetail::try_from(&p.detail),
            Ok(AxleEventDetail {
                event_id: Some("evt_1".into()),
                event_type: "policy-update.request-initiated".into(),
                reference: Some("pol_9".into()),
                ignition_token: None,
                result: None,
            })
        );
        assert_eq!(
            p.occurred_at,
            Some(
                DateTime::parse_from_rfc3339("2022-10-05T14:48:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );
        // A link id that does not parse is not a link id; the account still attributes.
        let p = parsed(
            "account.retrying",
            json!({"ref": "acc_2", "metadata": {"coverwatchLinkId": "lnk_nope"}}),
        );
        assert_eq!(
            p.attribution,
            vec![Attribution::External {
                kind: "account".into(),
                value: "acc_2".into()
            }]
        );
    }

    #[test]
    fn unreadable_bodies_are_malformed() {
        let mut w = inbound("tok", json!({}));
        for body in [&b"{not json"[..], b"[1,2]", b"{\"id\":\"evt_1\"}"] {
            w.body = body.to_vec();
            assert!(
                matches!(parse(&w), Err(ProviderError::Malformed { .. })),
                "{body:?}"
            );
        }
        // Odd but readable shapes are not errors.
        let p = parse(&inbound(
            "tok",
            json!({"type": "account.modified", "data": "??"}),
        ))
        .unwrap();
        assert!(matches!(
            only(&p),
            Happening::DataChanged {
                data: DataRef::All,
                ..
            }
        ));
        assert_eq!(p.occurred_at, None);
    }

    #[test]
    fn change_hints_in_every_documented_shape() {
        let want = |field: &str, before: Option<&str>, after: Option<&str>| FieldChange {
            field: field.into(),
            before: before.map(Into::into),
            after: after.map(Into::into),
        };
        assert_eq!(
            hints(Some(
                &json!([[{"key": "phone", "value": "+1", "oldValue": null}]])
            )),
            vec![want("phone", None, Some("+1"))]
        );
        assert_eq!(
            hints(Some(
                &json!({"type": "UPDATE", "key": "email", "value": "a", "oldValue": "b"})
            )),
            vec![want("email", Some("b"), Some("a"))]
        );
        assert_eq!(
            hints(Some(
                &json!({"changes": [{"key": "firstName", "value": "Jane"}]})
            )),
            vec![want("firstName", None, Some("Jane"))]
        );
        assert_eq!(
            hints(Some(
                &json!({"email": {"value": "a", "oldValue": "b"}, "premium": 12.5})
            )),
            vec![
                want("email", Some("b"), Some("a")),
                want("premium", None, Some("12.5"))
            ]
        );
        assert_eq!(
            hints(Some(
                &json!([{"key": "address", "value": {"city": "Macon"}}])
            )),
            vec![want("address", None, Some("{\"city\":\"Macon\"}"))]
        );
        assert!(hints(None).is_empty());
        assert!(hints(Some(&json!("email"))).is_empty());
    }
}
