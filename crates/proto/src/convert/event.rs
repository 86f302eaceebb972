//! Events. The proto carries `kind` beside the payload for callers that filter or switch on it;
//! core derives the kind from the payload, so reading an event back checks that they agree.

use coverwatch_core::event::{FieldChange, PolicyChange, RuleOutcome, VerificationOption};
use coverwatch_core::ids::TenantId;
use coverwatch_core::{Event, EventPayload};

use super::enums::{enum_value, to_i32};
use super::{
    FieldError, all, each, event_id, link_id, optional_datetime, optional_link_id,
    optional_timestamp, required, required_datetime, timestamp, user_id,
};
use crate::detail::DetailCodecs;
use crate::v1;
use crate::v1::event::Payload;

// ---- core → proto ------------------------------------------------------------------------

/// An event for the wire. There is no `From`: the vendor detail needs the vendors' codecs,
/// and a conversion without them would silently drop it.
pub fn event_to_proto(event: Event, details: &DetailCodecs) -> v1::Event {
    v1::Event {
        cursor: event.cursor,
        id: event.id.to_string(),
        link_id: event.link_id.to_string(),
        user_id: event.user_id.to_string(),
        provider: super::enums::provider_i32(&event.provider),
        provider_id: event.provider.to_string(),
        kind: to_i32::<v1::EventKind>(event.kind()),
        occurred_at: Some(timestamp(event.occurred_at)),
        recorded_at: Some(timestamp(event.recorded_at)),
        provider_detail: details.to_proto(&event.detail),
        payload: Some(event.payload.into()),
    }
}

impl From<VerificationOption> for v1::VerificationOption {
    fn from(value: VerificationOption) -> Self {
        v1::VerificationOption {
            key: value.key,
            label: value.label,
        }
    }
}

impl From<PolicyChange> for v1::PolicyChange {
    fn from(value: PolicyChange) -> Self {
        v1::PolicyChange {
            kind: to_i32::<v1::ChangeKind>(value.kind),
            subject: value.subject,
            field: value.field,
            before: value.before,
            after: value.after,
        }
    }
}

impl From<FieldChange> for v1::FieldChange {
    fn from(value: FieldChange) -> Self {
        v1::FieldChange {
            field: value.field,
            before: value.before,
            after: value.after,
        }
    }
}

impl From<RuleOutcome> for v1::RuleOutcome {
    fn from(value: RuleOutcome) -> Self {
        v1::RuleOutcome {
            rule: value.rule,
            result: to_i32::<v1::RuleResult>(value.result),
            observed: value.observed,
        }
    }
}

impl From<EventPayload> for Payload {
    fn from(payload: EventPayload) -> Self {
        match payload {
            EventPayload::SessionOpened { url, reconnect } => {
                Payload::LinkSessionOpened(v1::LinkSessionOpened { url, reconnect })
            }
            EventPayload::Completed {
                account_external_id,
                policy_external_ids,
            } => Payload::LinkCompleted(v1::LinkCompleted {
                account_external_id,
                policy_external_ids,
            }),
            EventPayload::Exited { step } => Payload::LinkExited(v1::LinkExited { step }),
            EventPayload::Failed { reason, message } => Payload::LinkFailed(v1::LinkFailed {
                reason: to_i32::<v1::FailureReason>(reason),
                message,
            }),
            EventPayload::AuthStatus {
                status,
                login_error_message,
                verification_options,
            } => Payload::LinkAuthStatus(v1::LinkAuthStatus {
                status: to_i32::<v1::AuthStatus>(status),
                login_error_message,
                verification_options: all(verification_options),
            }),
            EventPayload::ReconnectRequired {
                reason,
                reconnect_url,
            } => Payload::LinkReconnectRequired(v1::LinkReconnectRequired {
                reason: to_i32::<v1::ReconnectReason>(reason),
                reconnect_url,
            }),
            EventPayload::Reconnected {
                account_external_id,
                previous_account_external_id,
            } => Payload::LinkReconnected(v1::LinkReconnected {
                account_external_id,
                previous_account_external_id,
            }),
            EventPayload::Descoped {
                reason,
                replaced_by,
            } => Payload::LinkDescoped(v1::LinkDescoped {
                reason: to_i32::<v1::DescopeReason>(reason),
                replaced_by_link_id: replaced_by.map(|id| id.to_string()),
            }),
            EventPayload::AccountUpdated {
                account_external_id,
                changes,
            } => Payload::AccountUpdated(v1::AccountUpdated {
                account_external_id,
                changes: all(changes),
            }),
            EventPayload::PolicyUpdated {
                policy_external_id,
                status,
                changes,
                vendor_reasons,
                vendor_disagrees,
            } => Payload::PolicyUpdated(v1::PolicyUpdated {
                policy_external_id,
                status: to_i32::<v1::PolicyStatus>(status),
                changes: all(changes),
                vendor_reasons,
                vendor_disagrees,
            }),
            EventPayload::RenewalAvailable { policy_external_id } => {
                Payload::PolicyRenewalAvailable(v1::PolicyRenewalAvailable { policy_external_id })
            }
            EventPayload::RequirementsUnmet {
                requirement_set,
                outcomes,
            } => Payload::PolicyRequirementsUnmet(v1::PolicyRequirementsUnmet {
                requirement_set,
                outcomes: all(outcomes),
            }),
            EventPayload::RequirementsMet {
                requirement_set,
                outcomes,
            } => Payload::PolicyRequirementsMet(v1::PolicyRequirementsMet {
                requirement_set,
                outcomes: all(outcomes),
            }),
            EventPayload::DataRefreshed { policies } => Payload::DataRefreshed(v1::DataRefreshed {
                policy_count: policies,
            }),
            EventPayload::Stale { last_refreshed_at } => Payload::LinkStale(v1::LinkStale {
                last_refreshed_at: optional_timestamp(last_refreshed_at),
            }),
            EventPayload::Vendor { vendor_type } => {
                Payload::VendorEvent(v1::VendorEvent { vendor_type })
            }
        }
    }
}

// ---- proto → core (for Rust callers and tests) -------------------------------------------

fn policy_change(value: v1::PolicyChange) -> Result<PolicyChange, FieldError> {
    Ok(PolicyChange {
        kind: enum_value::<v1::ChangeKind>(value.kind, "kind")?,
        subject: value.subject,
        field: value.field,
        before: value.before,
        after: value.after,
    })
}

fn rule_outcome(value: v1::RuleOutcome) -> Result<RuleOutcome, FieldError> {
    Ok(RuleOutcome {
        rule: value.rule,
        result: enum_value::<v1::RuleResult>(value.result, "result")?,
        observed: value.observed,
    })
}

/// Field paths are relative to the payload message (`reason`, `changes[0].kind`); the caller
/// prefixes the oneof field's name.
fn payload_from_proto(payload: Payload) -> Result<EventPayload, FieldError> {
    Ok(match payload {
        Payload::LinkSessionOpened(p) => EventPayload::SessionOpened {
            url: p.url,
            reconnect: p.reconnect,
        },
        Payload::LinkCompleted(p) => EventPayload::Completed {
            account_external_id: p.account_external_id,
            policy_external_ids: p.policy_external_ids,
        },
        Payload::LinkExited(p) => EventPayload::Exited { step: p.step },
        Payload::LinkFailed(p) => EventPayload::Failed {
            reason: enum_value::<v1::FailureReason>(p.reason, "reason")?,
            message: p.message,
        },
        Payload::LinkAuthStatus(p) => EventPayload::AuthStatus {
            status: enum_value::<v1::AuthStatus>(p.status, "status")?,
            login_error_message: p.login_error_message,
            verification_options: p
                .verification_options
                .into_iter()
                .map(|option| VerificationOption {
                    key: option.key,
                    label: option.label,
                })
                .collect(),
        },
        Payload::LinkReconnectRequired(p) => EventPayload::ReconnectRequired {
            reason: enum_value::<v1::ReconnectReason>(p.reason, "reason")?,
            reconnect_url: p.reconnect_url,
        },
        Payload::LinkReconnected(p) => EventPayload::Reconnected {
            account_external_id: p.account_external_id,
            previous_account_external_id: p.previous_account_external_id,
        },
        Payload::LinkDescoped(p) => EventPayload::Descoped {
            reason: enum_value::<v1::DescopeReason>(p.reason, "reason")?,
            replaced_by: optional_link_id(p.replaced_by_link_id.as_deref(), "replaced_by_link_id")?,
        },
        Payload::AccountUpdated(p) => EventPayload::AccountUpdated {
            account_external_id: p.account_external_id,
            changes: p
                .changes
                .into_iter()
                .map(|change| FieldChange {
                    field: change.field,
                    before: change.before,
                    after: change.after,
                })
                .collect(),
        },
        Payload::PolicyUpdated(p) => EventPayload::PolicyUpdated {
            policy_external_id: p.policy_external_id,
            status: enum_value::<v1::PolicyStatus>(p.status, "status")?,
            changes: each(p.changes, "changes", policy_change)?,
            vendor_reasons: p.vendor_reasons,
            vendor_disagrees: p.vendor_disagrees,
        },
        Payload::PolicyRenewalAvailable(p) => EventPayload::RenewalAvailable {
            policy_external_id: p.policy_external_id,
        },
        Payload::PolicyRequirementsUnmet(p) => EventPayload::RequirementsUnmet {
            requirement_set: p.requirement_set,
            outcomes: each(p.outcomes, "outcomes", rule_outcome)?,
        },
        Payload::PolicyRequirementsMet(p) => EventPayload::RequirementsMet {
            requirement_set: p.requirement_set,
            outcomes: each(p.outcomes, "outcomes", rule_outcome)?,
        },
        Payload::DataRefreshed(p) => EventPayload::DataRefreshed {
            policies: p.policy_count,
        },
        Payload::LinkStale(p) => EventPayload::Stale {
            last_refreshed_at: optional_datetime(
                p.last_refreshed_at.as_ref(),
                "last_refreshed_at",
            )?,
        },
        Payload::VendorEvent(p) => EventPayload::Vendor {
            vendor_type: p.vendor_type,
        },
    })
}

/// The proto name of the oneof field that carries this payload, for error paths.
fn payload_field(payload: &Payload) -> &'static str {
    match payload {
        Payload::LinkSessionOpened(_) => "link_session_opened",
        Payload::LinkCompleted(_) => "link_completed",
        Payload::LinkExited(_) => "link_exited",
        Payload::LinkFailed(_) => "link_failed",
        Payload::LinkAuthStatus(_) => "link_auth_status",
        Payload::LinkReconnectRequired(_) => "link_reconnect_required",
        Payload::LinkReconnected(_) => "link_reconnected",
        Payload::LinkDescoped(_) => "link_descoped",
        Payload::AccountUpdated(_) => "account_updated",
        Payload::PolicyUpdated(_) => "policy_updated",
        Payload::PolicyRenewalAvailable(_) => "policy_renewal_available",
        Payload::PolicyRequirementsUnmet(_) => "policy_requirements_unmet",
        Payload::PolicyRequirementsMet(_) => "policy_requirements_met",
        Payload::DataRefreshed(_) => "data_refreshed",
        Payload::LinkStale(_) => "link_stale",
        Payload::VendorEvent(_) => "vendor_event",
    }
}

impl TryFrom<Payload> for EventPayload {
    type Error = FieldError;

    fn try_from(payload: Payload) -> Result<Self, FieldError> {
        let field = payload_field(&payload);
        payload_from_proto(payload).map_err(|error| error.within(field))
    }
}

/// An event read back from the wire (for Rust callers and tests). The proto form has no
/// tenant, since a caller only ever sees its own, so the tenant is supplied. `kind` must agree
/// with the payload that is set.
/// An event read back from the wire (for Rust callers and tests); `details` reads the vendor
/// detail, which is left out for a vendor it has no codec for.
pub fn event_from_proto(
    event: v1::Event,
    tenant_id: TenantId,
    details: &DetailCodecs,
) -> Result<Event, FieldError> {
    let kind = enum_value::<v1::EventKind>(event.kind, "kind")?;
    let payload = EventPayload::try_from(required(event.payload, "payload")?)?;
    if payload.kind() != kind {
        return Err(FieldError::new(
            "kind",
            format!(
                "is {} but the payload is {}",
                v1::EventKind::from(kind).as_str_name(),
                v1::EventKind::from(payload.kind()).as_str_name()
            ),
        ));
    }
    Ok(Event {
        cursor: event.cursor,
        id: event_id(&event.id, "id")?,
        tenant_id,
        link_id: link_id(&event.link_id, "link_id")?,
        user_id: user_id(&event.user_id, "user_id")?,
        provider: super::enums::provider_of_message(event.provider, &event.provider_id)?,
        occurred_at: required_datetime(event.occurred_at.as_ref(), "occurred_at")?,
        recorded_at: required_datetime(event.recorded_at.as_ref(), "recorded_at")?,
        payload,
        detail: details.to_core(event.provider_detail.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::DateTime;
    use coverwatch_core::event::{
        AuthStatus, ChangeKind, DescopeReason, FailureReason, ReconnectReason, RuleResult,
    };
    use coverwatch_core::ids::{EventId, LinkId};
    use coverwatch_core::policy::PolicyStatus;
    use coverwatch_core::{EventKind, ProviderDetail, ProviderId, VendorDetail};

    use super::*;
    use crate::detail::{DetailCodec, ProtoDetail};

    /// One payload of every kind, with optional fields and lists filled in.
    fn every_payload() -> Vec<EventPayload> {
        let outcomes = vec![
            RuleOutcome {
                rule: "bodily_injury_min".into(),
                result: RuleResult::Pass,
                observed: Some("bodily_injury 10000000".into()),
            },
            RuleOutcome {
                rule: "lienholder_named".into(),
                result: RuleResult::Fail,
                observed: None,
            },
            RuleOutcome {
                rule: "comprehensive_deductible".into(),
                result: RuleResult::Unknown,
                observed: None,
            },
        ];
        let payloads = vec![
            EventPayload::SessionOpened {
                url: "https://ignition.axle.insure/abc".into(),
                reconnect: true,
            },
            EventPayload::Completed {
                account_external_id: Some("acc_1".into()),
                policy_external_ids: vec!["pol_1".into(), "pol_2".into()],
            },
            EventPayload::Exited {
                step: Some("carrier".into()),
            },
            EventPayload::Failed {
                reason: FailureReason::AuthenticationFailed,
                message: Some("locked".into()),
            },
            EventPayload::AuthStatus {
                status: AuthStatus::IdentityVerificationOptions,
                login_error_message: None,
                verification_options: vec![VerificationOption {
                    key: "sms-1".into(),
                    label: "Text to ***-1234".into(),
                }],
            },
            EventPayload::ReconnectRequired {
                reason: ReconnectReason::MfaExpired,
                reconnect_url: Some("https://app.usecanopy.com/c/x/reconnect".into()),
            },
            EventPayload::Reconnected {
                account_external_id: Some("acc_2".into()),
                previous_account_external_id: Some("acc_1".into()),
            },
            EventPayload::Descoped {
                reason: DescopeReason::Replaced,
                replaced_by: Some(LinkId::new()),
            },
            EventPayload::AccountUpdated {
                account_external_id: "acc_1".into(),
                changes: vec![FieldChange {
                    field: "email".into(),
                    before: None,
                    after: Some("a@example.com".into()),
                }],
            },
            EventPayload::PolicyUpdated {
                policy_external_id: "pol_1".into(),
                status: PolicyStatus::Cancelled,
                changes: vec![
                    PolicyChange {
                        kind: ChangeKind::StatusChanged,
                        subject: None,
                        field: Some("status".into()),
                        before: Some("active".into()),
                        after: Some("cancelled".into()),
                    },
                    PolicyChange {
                        kind: ChangeKind::InterestedPartyRemoved,
                        subject: Some("Acme Lending".into()),
                        field: None,
                        before: None,
                        after: None,
                    },
                ],
                vendor_reasons: vec!["CANCELED".into()],
                vendor_disagrees: true,
            },
            EventPayload::RenewalAvailable {
                policy_external_id: "pol_2".into(),
            },
            EventPayload::RequirementsUnmet {
                requirement_set: "auto-loan".into(),
                outcomes: outcomes.clone(),
            },
            EventPayload::RequirementsMet {
                requirement_set: "auto-loan".into(),
                outcomes,
            },
            EventPayload::DataRefreshed { policies: 3 },
            EventPayload::Stale {
                last_refreshed_at: DateTime::from_timestamp(1_700_000_000, 0),
            },
            EventPayload::Vendor {
                vendor_type: "account.retrying".into(),
            },
        ];
        let mut kinds: Vec<EventKind> = payloads.iter().map(EventPayload::kind).collect();
        kinds.sort();
        assert_eq!(kinds, EventKind::ALL.to_vec(), "one payload per kind");
        payloads
    }

    /// A stand-in for a vendor crate's codec (this crate cannot depend on one): it carries
    /// the event type and `event_id` in Axle's arm.
    struct AxleLike;

    impl DetailCodec for AxleLike {
        fn provider(&self) -> ProviderId {
            ProviderId::from_static("axle")
        }

        fn to_proto(&self, detail: &VendorDetail) -> Option<ProtoDetail> {
            Some(ProtoDetail::Axle(v1::AxleEventDetail {
                event_type: detail.event_type().to_owned(),
                event_id: detail
                    .fields()
                    .get("event_id")
                    .and_then(|id| id.as_str())
                    .map(str::to_owned),
                ..Default::default()
            }))
        }

        fn to_core(&self, detail: &ProtoDetail) -> Option<VendorDetail> {
            let ProtoDetail::Axle(axle) = detail else {
                return None;
            };
            let mut fields = serde_json::Map::new();
            fields.insert("event_id".into(), axle.event_id.clone().into());
            VendorDetail::new(self.provider(), axle.event_type.clone(), fields).ok()
        }
    }

    fn codecs() -> DetailCodecs {
        DetailCodecs::new([Arc::new(AxleLike) as Arc<dyn DetailCodec>])
    }

    fn vendor_detail(provider: &'static str, event_type: &str, event_id: &str) -> ProviderDetail {
        let mut fields = serde_json::Map::new();
        fields.insert("event_id".into(), event_id.into());
        ProviderDetail::Vendor(
            VendorDetail::new(ProviderId::from_static(provider), event_type, fields).unwrap(),
        )
    }

    fn details() -> [ProviderDetail; 3] {
        [
            ProviderDetail::None,
            vendor_detail("axle", "policy.modified", "evt-axle-1"),
            vendor_detail("axle", "ignition.completed", "evt-axle-2"),
        ]
    }

    fn event(payload: EventPayload, detail: ProviderDetail) -> Event {
        Event {
            cursor: 42,
            id: EventId::new(),
            tenant_id: "acme".parse().unwrap(),
            link_id: LinkId::new(),
            user_id: "u-1".parse().unwrap(),
            provider: ProviderId::from_static("axle"),
            occurred_at: DateTime::from_timestamp(1_700_000_000, 1).unwrap(),
            recorded_at: DateTime::from_timestamp(1_700_000_001, 2).unwrap(),
            payload,
            detail,
        }
    }

    #[test]
    fn every_payload_and_detail_round_trips() {
        for payload in every_payload() {
            for detail in details() {
                let event = event(payload.clone(), detail);
                let proto = event_to_proto(event.clone(), &codecs());
                assert_eq!(proto.kind, to_i32::<v1::EventKind>(event.kind()));
                assert_eq!(proto.cursor, 42);
                assert_eq!(
                    proto.provider_detail.is_some(),
                    event.detail.vendor().is_some()
                );
                let back = event_from_proto(proto, event.tenant_id.clone(), &codecs());
                assert_eq!(back, Ok(event));
            }
        }
    }

    /// A vendor with no codec (a test-only vendor, one added without a proto arm) still has
    /// its events delivered and named; only the detail is left out.
    #[test]
    fn a_vendor_without_a_codec_goes_out_without_detail() {
        let event = Event {
            provider: ProviderId::from_static("acme"),
            ..event(
                EventPayload::DataRefreshed { policies: 1 },
                vendor_detail("acme", "thing.refreshed", "a-1"),
            )
        };
        let proto = event_to_proto(event.clone(), &codecs());
        assert_eq!(proto.provider_detail, None);
        assert_eq!(proto.provider_id, "acme");
        assert_eq!(proto.provider, v1::Provider::Unspecified as i32);
        let back = event_from_proto(proto, event.tenant_id.clone(), &codecs()).unwrap();
        assert_eq!(back.provider, event.provider);
        assert_eq!(back.detail, ProviderDetail::None);
        // Nor does a codec render another vendor's detail under its own arm.
        assert_eq!(
            codecs().to_proto(&vendor_detail("acme", "thing.refreshed", "a-1")),
            None
        );
        assert_eq!(
            DetailCodecs::default().to_proto(&vendor_detail("axle", "x", "1")),
            None
        );
    }

    #[test]
    fn payload_case_matches_the_kind() {
        for payload in every_payload() {
            let kind = v1::EventKind::from(payload.kind());
            let proto = Payload::from(payload);
            // `link.completed` travels in `link_completed`, and so on.
            assert_eq!(
                kind.as_str_name(),
                format!("EVENT_KIND_{}", payload_field(&proto).to_uppercase())
            );
        }
    }

    #[test]
    fn inconsistent_or_malformed_events_name_the_field() {
        let event = event(
            EventPayload::DataRefreshed { policies: 1 },
            ProviderDetail::None,
        );
        let tenant = event.tenant_id.clone();
        let proto = event_to_proto(event.clone(), &codecs());

        let wrong_kind = v1::Event {
            kind: v1::EventKind::LinkStale.into(),
            ..proto.clone()
        };
        assert_eq!(
            event_from_proto(wrong_kind, tenant.clone(), &codecs()).unwrap_err(),
            FieldError::new(
                "kind",
                "is EVENT_KIND_LINK_STALE but the payload is EVENT_KIND_DATA_REFRESHED"
            )
        );
        let no_payload = v1::Event {
            payload: None,
            ..proto.clone()
        };
        assert_eq!(
            event_from_proto(no_payload, tenant.clone(), &codecs())
                .unwrap_err()
                .field,
            "payload"
        );
        let bad_id = v1::Event {
            id: event.link_id.to_string(),
            ..proto
        };
        assert_eq!(
            event_from_proto(bad_id, tenant.clone(), &codecs()).unwrap_err(),
            FieldError::new("id", "must start with `evt_`")
        );

        let mut proto = event_to_proto(
            super::tests::event(every_payload().swap_remove(9), ProviderDetail::None),
            &codecs(),
        );
        let Some(Payload::PolicyUpdated(updated)) = proto.payload.as_mut() else {
            panic!("expected policy.updated");
        };
        updated.changes[1].kind = 0;
        assert_eq!(
            event_from_proto(proto, tenant, &codecs())
                .unwrap_err()
                .field,
            "policy_updated.changes[1].kind"
        );
    }
}
