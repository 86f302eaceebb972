//! Turning normalized vendor happenings into link state changes and events.
//!
//! Two phases: `prepare` talks to the vendor (exchange a code, fetch data) with no transaction
//! open; `commit_prepared` then re-reads the link under its lock, checks every transition
//! against the state machine, and writes state, secrets, snapshots, events and the settled
//! delivery in one transaction. A state change and its event are never written apart.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use coverwatch_core::change::{diff_accounts, diff_policies};
use coverwatch_core::event::{
    AuthStatus, ChangeKind, EventPayload, FailureReason, FieldChange, PolicyChange,
    ReconnectReason, VerificationOption,
};
use coverwatch_core::ids::DeliveryId;
use coverwatch_core::policy::{PolicySnapshot, PolicyTerm};
use coverwatch_core::provider::{
    Completion, FetchedData, LinkAccess, LinkGrant, ProviderError, RECONNECT_SECRET, RejectionKind,
};
use coverwatch_core::webhook::{DataRef, Happening};
use coverwatch_core::{Event, Link, LinkState, ProviderDetail};
use coverwatch_store::{ACCESS_SECRET, LinkRecord, LinkTx, NewEvent, SnapshotOutcome};
use secrecy::SecretString;

use crate::{Engine, EngineError};

/// Where a change came from: a caller's request, or a vendor delivery we hold a lease on.
pub(crate) struct Origin {
    pub delivery: Option<(DeliveryId, String)>,
    pub detail: ProviderDetail,
    pub occurred_at: DateTime<Utc>,
}

impl Origin {
    pub fn caller() -> Self {
        Self {
            delivery: None,
            detail: ProviderDetail::None,
            occurred_at: Utc::now(),
        }
    }
}

/// A happening with its vendor calls already made.
pub(crate) enum Prepared {
    Auth {
        status: AuthStatus,
        login_error_message: Option<String>,
        verification_options: Vec<VerificationOption>,
        sequence: Option<(String, i64)>,
    },
    Completed {
        grant: LinkGrant,
        fetched: FetchedData,
        monitoring_ids: BTreeMap<String, String>,
    },
    Exited {
        step: Option<String>,
    },
    Failed {
        reason: FailureReason,
        message: Option<String>,
    },
    Data {
        fetched: FetchedData,
    },
    Retrying,
    ReconnectRequired {
        reason: ReconnectReason,
        reconnect_url: Option<String>,
        reconnect_token: Option<SecretString>,
    },
    Renewal {
        policy_ref: String,
        snapshot: Option<PolicySnapshot>,
    },
    Vendor {
        vendor_type: String,
    },
    /// Nothing to do for this link in its current state.
    Nothing,
}

fn access_from_grant(link: &Link, grant: &LinkGrant, existing: LinkAccess) -> LinkAccess {
    let mut external_ids = existing.external_ids;
    external_ids.extend(grant.external_ids.clone());
    LinkAccess {
        link_id: link.id,
        secret: grant.secret.clone().or(existing.secret),
        secrets: existing.secrets,
        external_ids,
    }
}

impl Engine {
    pub(crate) async fn prepare_completion(
        &self,
        record: &LinkRecord,
        completion: Completion,
    ) -> Result<Prepared, EngineError> {
        let link = &record.link;
        let provider = self.inner.providers.get(link.provider)?.clone();
        let grant = provider.complete_link(&completion).await?;
        let existing = self.access(link).await?;
        let mut access = access_from_grant(link, &grant, existing);
        let fetched = provider.fetch(&access, &completion.data).await?;
        access.external_ids.extend(fetched.external_ids.clone());
        let monitoring_ids = provider.ensure_monitoring(&access).await?;
        Ok(Prepared::Completed {
            grant,
            fetched,
            monitoring_ids,
        })
    }

    /// Make the vendor calls a happening needs, given the link as it was read.
    pub(crate) async fn prepare(
        &self,
        record: &LinkRecord,
        happening: Happening,
        detail: &ProviderDetail,
    ) -> Result<Prepared, EngineError> {
        let link = &record.link;
        let provider = self.inner.providers.get(link.provider)?.clone();
        Ok(match happening {
            Happening::AuthProgress {
                status,
                login_error_message,
                verification_options,
                sequence,
            } => Prepared::Auth {
                status,
                login_error_message,
                verification_options,
                sequence: sequence.map(|s| (session_key(detail), s)),
            },
            Happening::SessionCompleted { code, data } => {
                if link.state == LinkState::Descoped {
                    Prepared::Nothing
                } else {
                    self.prepare_completion(record, Completion { code, data })
                        .await?
                }
            }
            Happening::SessionExited { step } => Prepared::Exited { step },
            Happening::SessionFailed { reason, message } => Prepared::Failed { reason, message },
            Happening::DataChanged { data, hinted: _ } => {
                if !link.state.is_linked() {
                    Prepared::Nothing
                } else {
                    let access = self.access(link).await?;
                    Prepared::Data {
                        fetched: provider.fetch(&access, &data).await?,
                    }
                }
            }
            Happening::Retrying => Prepared::Retrying,
            Happening::ReconnectRequired {
                reason,
                reconnect_url,
                reconnect_token,
            } => Prepared::ReconnectRequired {
                reason,
                reconnect_url,
                reconnect_token,
            },
            Happening::RenewalAvailable { policy_ref } => {
                if !link.state.is_linked() {
                    Prepared::Nothing
                } else {
                    let access = self.access(link).await?;
                    let snapshot = match provider
                        .fetch(&access, &DataRef::Renewal(policy_ref.clone()))
                        .await
                    {
                        Ok(fetched) => fetched
                            .policies
                            .into_iter()
                            .find(|p| p.term == PolicyTerm::Renewal),
                        // The notice can outrun the data; the event still tells the caller.
                        Err(ProviderError::Rejected {
                            kind: RejectionKind::NotFound,
                            ..
                        }) => None,
                        Err(e) => return Err(e.into()),
                    };
                    Prepared::Renewal {
                        policy_ref,
                        snapshot,
                    }
                }
            }
            Happening::Vendor { vendor_type } => Prepared::Vendor { vendor_type },
        })
    }

    /// Apply prepared happenings to a link in one transaction, settling the delivery with them.
    pub(crate) async fn commit_prepared(
        &self,
        link: &Link,
        prepared: Vec<Prepared>,
        origin: Origin,
    ) -> Result<LinkRecord, EngineError> {
        let mut tx = self
            .inner
            .store
            .begin_link_update(&link.tenant_id, &link.id)
            .await?
            .ok_or_else(|| EngineError::link_not_found(link.id))?;
        let mut events = Vec::new();
        for item in prepared {
            apply(&mut tx, item, &origin, &mut events).await?;
        }
        if let Some((delivery, owner)) = &origin.delivery {
            tx.settle_delivery(delivery, owner).await?;
        }
        let record = tx.commit().await?;
        self.announce(&events);
        Ok(record)
    }
}

/// The vendor session a sign-in sequence number belongs to (Canopy numbers per pull).
fn session_key(detail: &ProviderDetail) -> String {
    match detail {
        ProviderDetail::Canopy {
            pull_id: Some(pull),
            ..
        } => pull.clone(),
        _ => String::new(),
    }
}

async fn emit(
    tx: &mut LinkTx,
    origin: &Origin,
    payload: EventPayload,
    events: &mut Vec<Event>,
) -> Result<(), EngineError> {
    let event = tx
        .append_event(NewEvent {
            payload,
            detail: origin.detail.clone(),
            occurred_at: origin.occurred_at,
            delivery_id: origin.delivery.as_ref().map(|(id, _)| *id),
        })
        .await?;
    events.push(event);
    Ok(())
}

/// Move the link to `to` with its event, when the state machine allows it; otherwise leave it.
async fn transition(
    tx: &mut LinkTx,
    to: LinkState,
    origin: &Origin,
    payload: EventPayload,
    events: &mut Vec<Event>,
) -> Result<bool, EngineError> {
    if !tx.state().can_become(to) {
        return Ok(false);
    }
    tx.set_state(to);
    emit(tx, origin, payload, events).await?;
    Ok(true)
}

async fn apply(
    tx: &mut LinkTx,
    prepared: Prepared,
    origin: &Origin,
    events: &mut Vec<Event>,
) -> Result<(), EngineError> {
    let now = Utc::now();
    match prepared {
        Prepared::Nothing => {}
        Prepared::Auth {
            status,
            login_error_message,
            verification_options,
            sequence,
        } => {
            if let Some((session, seq)) = &sequence {
                if tx
                    .record()
                    .auth_sequences
                    .get(session)
                    .is_some_and(|seen| seen >= seq)
                {
                    // An older sign-in state arriving late; the newer one already told the caller.
                    return Ok(());
                }
                tx.set_auth_sequence(session, *seq);
            }
            if tx.state() == LinkState::Descoped {
                return Ok(());
            }
            emit(
                tx,
                origin,
                EventPayload::AuthStatus {
                    status,
                    login_error_message,
                    verification_options,
                },
                events,
            )
            .await?;
        }
        Prepared::Completed {
            grant,
            fetched,
            monitoring_ids,
        } => {
            let before = tx.state();
            if before == LinkState::Descoped {
                return Ok(());
            }
            if let Some(secret) = grant.secret.clone() {
                tx.put_secrets(vec![(ACCESS_SECRET.to_owned(), Some(secret))])
                    .await?;
            }
            let mut external_ids = grant.external_ids.clone();
            external_ids.extend(fetched.external_ids.clone());
            external_ids.extend(monitoring_ids);
            tx.put_external_ids(&external_ids).await?;
            if grant.account_key.is_some() {
                tx.set_account_key(grant.account_key.clone());
            }
            tx.set_session_url(None);
            let account_id = fetched
                .account
                .as_ref()
                .map(|a| a.account.external_id.clone());
            let policy_ids = fetched
                .policies
                .iter()
                .map(|p| p.policy.external_id.clone())
                .collect();
            let payload = if before == LinkState::ReconnectRequired {
                EventPayload::Reconnected {
                    account_external_id: account_id,
                }
            } else {
                EventPayload::Completed {
                    account_external_id: account_id,
                    policy_external_ids: policy_ids,
                }
            };
            transition(tx, LinkState::Active, origin, payload, events).await?;
            // On a link that was linked before (a relink, a repeated completion) this is fresh
            // data like any refresh and its differences are reported; on a new link the first
            // version is the baseline.
            save_fetched(tx, fetched, origin, events, before.is_linked(), false).await?;
            tx.set_refreshed_at(now);
        }
        Prepared::Exited { step } => {
            transition(
                tx,
                LinkState::Exited,
                origin,
                EventPayload::Exited { step },
                events,
            )
            .await?;
        }
        Prepared::Failed { reason, message } => {
            if tx.state() == LinkState::Pending {
                transition(
                    tx,
                    LinkState::Failed,
                    origin,
                    EventPayload::Failed { reason, message },
                    events,
                )
                .await?;
            }
        }
        Prepared::Data { fetched } => {
            if !tx.state().is_linked() {
                return Ok(());
            }
            if tx.state() == LinkState::ReconnectRequired {
                // Fresh data means the vendor reached the carrier again.
                let account_external_id = fetched
                    .account
                    .as_ref()
                    .map(|a| a.account.external_id.clone());
                tx.set_session_url(None);
                transition(
                    tx,
                    LinkState::Active,
                    origin,
                    EventPayload::Reconnected {
                        account_external_id,
                    },
                    events,
                )
                .await?;
            }
            tx.put_external_ids(&fetched.external_ids).await?;
            save_fetched(tx, fetched, origin, events, true, true).await?;
            tx.set_refreshed_at(now);
        }
        Prepared::Retrying => {
            if tx.state().is_linked() {
                emit(
                    tx,
                    origin,
                    EventPayload::Vendor {
                        vendor_type: "account.retrying".into(),
                    },
                    events,
                )
                .await?;
            }
        }
        Prepared::ReconnectRequired {
            reason,
            reconnect_url,
            reconnect_token,
        } => {
            if !tx.state().is_linked() {
                return Ok(());
            }
            if let Some(token) = reconnect_token {
                tx.put_secrets(vec![(RECONNECT_SECRET.to_owned(), Some(token))])
                    .await?;
            }
            if reconnect_url.is_some() {
                tx.set_session_url(reconnect_url.clone());
            }
            transition(
                tx,
                LinkState::ReconnectRequired,
                origin,
                EventPayload::ReconnectRequired {
                    reason,
                    reconnect_url,
                },
                events,
            )
            .await?;
        }
        Prepared::Renewal {
            policy_ref,
            snapshot,
        } => {
            if !tx.state().is_linked() {
                return Ok(());
            }
            if let Some(snapshot) = snapshot {
                tx.save_policy(&snapshot, now).await?;
            }
            emit(
                tx,
                origin,
                EventPayload::RenewalAvailable {
                    policy_external_id: policy_ref,
                },
                events,
            )
            .await?;
        }
        Prepared::Vendor { vendor_type } => {
            emit(tx, origin, EventPayload::Vendor { vendor_type }, events).await?;
        }
    }
    Ok(())
}

/// Store fetched snapshots; when `report` is set, emit what changed, and when `refreshed` is
/// set and nothing changed, say that fresh data arrived with no change.
async fn save_fetched(
    tx: &mut LinkTx,
    fetched: FetchedData,
    origin: &Origin,
    events: &mut Vec<Event>,
    report: bool,
    refreshed: bool,
) -> Result<(), EngineError> {
    let now = Utc::now();
    let mut changed = false;
    if let Some(account) = &fetched.account {
        let outcome = tx.save_account(account, now).await?;
        if let SnapshotOutcome::Changed { previous, .. } = outcome {
            let changes: Vec<FieldChange> = diff_accounts(&previous, &account.account);
            if report && !changes.is_empty() {
                changed = true;
                emit(
                    tx,
                    origin,
                    EventPayload::AccountUpdated {
                        account_external_id: account.account.external_id.clone(),
                        changes,
                    },
                    events,
                )
                .await?;
            }
        }
    }
    let count = fetched.policies.len() as u32;
    for snapshot in &fetched.policies {
        let outcome = tx.save_policy(snapshot, now).await?;
        let changes = match outcome {
            SnapshotOutcome::Unchanged { .. } => continue,
            SnapshotOutcome::Created { .. } => vec![PolicyChange {
                kind: ChangeKind::PolicyAdded,
                subject: Some(snapshot.policy.external_id.clone()),
                field: None,
                before: None,
                after: None,
            }],
            SnapshotOutcome::Changed { previous, .. } => diff_policies(&previous, &snapshot.policy),
        };
        if report && !changes.is_empty() && snapshot.term == PolicyTerm::Current {
            changed = true;
            emit(
                tx,
                origin,
                EventPayload::PolicyUpdated {
                    policy_external_id: snapshot.policy.external_id.clone(),
                    status: snapshot.policy.status,
                    changes,
                },
                events,
            )
            .await?;
        }
    }
    if refreshed && !changed {
        emit(
            tx,
            origin,
            EventPayload::DataRefreshed { policies: count },
            events,
        )
        .await?;
    }
    Ok(())
}
