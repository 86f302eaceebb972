//! Turning normalized vendor happenings into link state changes and events.
//!
//! Two phases: `prepare` talks to the vendor (exchange a code, fetch data) with no transaction
//! open; `commit_prepared` then re-reads the link under its lock, checks every transition
//! against the state machine, and writes state, secrets, snapshots, events and the settled
//! delivery in one transaction. A state change and its event are never written apart.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use coverwatch_core::change::{diff_accounts, diff_policies};
use coverwatch_core::event::{
    AuthStatus, ChangeKind, DescopeReason, EventPayload, FailureReason, FieldChange, PolicyChange,
    ReconnectReason, VerificationOption,
};
use coverwatch_core::ids::DeliveryId;
use coverwatch_core::policy::{PolicySnapshot, PolicyTerm};
use coverwatch_core::provider::{
    Completion, FetchedData, LinkAccess, LinkGrant, Provider, ProviderError, RECONNECT_SECRET,
    RejectionKind,
};
use coverwatch_core::webhook::{DataRef, Happening};
use coverwatch_core::{Event, Link, LinkId, LinkState, ProviderDetail};
use coverwatch_store::{
    ACCESS_SECRET, LinkRecord, LinkTx, NewEvent, SnapshotOutcome, WEBHOOK_TOKEN_KIND,
};
use secrecy::{ExposeSecret, SecretString};

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

/// A happening with its vendor calls already made. Cloned so that a batch run again (see
/// `Engine::run_round`) applies it again without calling the vendor again.
#[derive(Clone)]
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
        /// Why the vendor's monitoring could not be made sure of yet (for example a Canopy pull
        /// still running). The link completes anyway; the delivery is tried again for it.
        monitoring_pending: Option<String>,
        /// The end-user signed in to a different account than the one the link held; its
        /// monitoring was already stopped at the vendor.
        switched_from: Option<SwitchedAccount>,
    },
    /// The session reached an account that another link already holds, and the vendor
    /// resumed monitoring it there: that link gets the data, this one ends.
    Fold {
        target: Box<LinkRecord>,
        grant: LinkGrant,
        fetched: FetchedData,
    },
    /// Written on the session's own link once its completion went to `target`.
    FoldedInto {
        target: LinkId,
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

/// The account a link followed before the end-user signed in to another one.
#[derive(Clone)]
pub(crate) struct SwitchedAccount {
    /// The vendor's identity of the previous account (`LinkGrant::account_key`).
    pub account_key: String,
    /// Vendor ids that named the previous account, no longer to be attributed to the link.
    pub external_ids: Vec<(String, String)>,
}

/// A grant for another account than the one a linked link holds. Axle answers a returning user
/// who links a different account with a new access token and says to descope the old one
/// (docs.axle.insure/guides/monitoring, "Store accessToken for future access"), or the old
/// account stays monitored: orphan webhooks, and billing.
fn switched_account(
    record: &LinkRecord,
    existing: &LinkAccess,
    grant: &LinkGrant,
) -> Option<SwitchedAccount> {
    let old = record.account_key.as_deref()?;
    let new = grant.account_key.as_deref()?;
    if !record.link.state.is_linked() || old == new {
        return None;
    }
    let external_ids = grant
        .external_ids
        .iter()
        .filter_map(|(kind, value)| {
            let previous = existing.external_ids.get(kind)?;
            (previous != value).then(|| (kind.clone(), previous.clone()))
        })
        .collect();
    Some(SwitchedAccount {
        account_key: old.to_owned(),
        external_ids,
    })
}

impl Prepared {
    /// Why the delivery must be tried again even though this was applied.
    pub(crate) fn retry_reason(&self) -> Option<&str> {
        match self {
            Prepared::Completed {
                monitoring_pending: Some(reason),
                ..
            } => Some(reason),
            _ => None,
        }
    }
}

/// The name under which a redeemed grant waits for its link to complete. A one-time code
/// cannot be redeemed twice, so when the work after the exchange is cut short (the vendor's
/// data fetch fails, the process stops) the next attempt picks the grant up from here.
const PENDING_GRANT_SECRET: &str = "coverwatch.pending_grant";

fn grant_to_secret(grant: &LinkGrant) -> SecretString {
    let json = serde_json::json!({
        "secret": grant.secret.as_ref().map(|s| s.expose_secret().to_owned()),
        "external_ids": grant.external_ids,
        "account_key": grant.account_key,
    });
    SecretString::from(json.to_string())
}

fn grant_from_secret(secret: &SecretString) -> Option<LinkGrant> {
    let value: serde_json::Value = serde_json::from_str(secret.expose_secret()).ok()?;
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    Some(LinkGrant {
        secret: text(&value["secret"]).map(SecretString::from),
        external_ids: value["external_ids"]
            .as_object()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
            .collect(),
        account_key: text(&value["account_key"]),
    })
}

fn is_refused_completion(err: &EngineError) -> bool {
    matches!(
        err,
        EngineError::Provider(ProviderError::Rejected {
            kind: RejectionKind::FailedPrecondition,
            ..
        })
    )
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
    /// Redeem a completion and read the linked data. A one-time code is redeemed once: the
    /// grant is kept on the link at once, so a retry after a later failure goes on from it.
    async fn redeem(
        &self,
        record: &LinkRecord,
        provider: &Arc<dyn Provider>,
        completion: &Completion,
    ) -> Result<LinkGrant, EngineError> {
        let link = &record.link;
        match provider.complete_link(completion).await {
            Ok(grant) => {
                if completion.code.is_some() {
                    let mut tx = self
                        .inner
                        .store
                        .begin_link_update(&link.tenant_id, &link.id)
                        .await?
                        .ok_or_else(|| EngineError::link_not_found(link.id))?;
                    tx.put_secrets(vec![(
                        PENDING_GRANT_SECRET.to_owned(),
                        Some(grant_to_secret(&grant)),
                    )])
                    .await?;
                    tx.commit().await?;
                }
                Ok(grant)
            }
            Err(err) => {
                let err = EngineError::from(err);
                if completion.code.is_some() && is_refused_completion(&err) {
                    let access = self.access(link).await?;
                    if let Some(grant) = access
                        .secrets
                        .get(PENDING_GRANT_SECRET)
                        .and_then(grant_from_secret)
                    {
                        tracing::info!(link = %link.id, "completion code already redeemed for this link; going on from the kept grant");
                        return Ok(grant);
                    }
                }
                Err(err)
            }
        }
    }

    /// Complete a session: redeem it, then read the data and make sure of the monitoring.
    pub(crate) async fn prepare_completion(
        &self,
        record: &LinkRecord,
        completion: Completion,
    ) -> Result<Prepared, EngineError> {
        let provider = self.provider_of(record).await?;
        let grant = self.redeem(record, &provider, &completion).await?;
        self.prepare_grant(record, &provider, grant, completion.data)
            .await
    }

    async fn prepare_grant(
        &self,
        record: &LinkRecord,
        provider: &Arc<dyn Provider>,
        grant: LinkGrant,
        data: DataRef,
    ) -> Result<Prepared, EngineError> {
        let link = &record.link;
        if provider.capabilities().relink_resumes_monitoring
            && !link.state.is_linked()
            && let Some(key) = grant.account_key.as_deref()
            && let Some(target) = self
                .inner
                .store
                .find_linked_by_account_key(&link.tenant_id, link.provider.clone(), key, &link.id)
                .await?
        {
            let target_access = self.access(&target.link).await?;
            let access = access_from_grant(&target.link, &grant, target_access);
            let fetched = provider.fetch(&access, &data).await?;
            return Ok(Prepared::Fold {
                target: Box::new(target),
                grant,
                fetched,
            });
        }

        let existing = self.access(link).await?;
        let switched_from = switched_account(record, &existing, &grant);
        let previous_access = switched_from.as_ref().map(|_| existing.clone());
        let mut access = access_from_grant(link, &grant, existing);
        let fetched = provider.fetch(&access, &data).await?;
        access.external_ids.extend(fetched.external_ids.clone());
        let (monitoring_ids, monitoring_pending) = match provider.ensure_monitoring(&access).await {
            Ok(ids) => (ids, None),
            Err(err) if err.is_retryable() => {
                tracing::info!(link = %link.id, error = %err, "link completes now; its monitoring is made sure of on a later attempt");
                (BTreeMap::new(), Some(err.to_string()))
            }
            Err(err) => return Err(err.into()),
        };
        if let Some(old) = record.replaces_link_id {
            // Before this link is marked ACTIVE, so that a failure in between is retried as a
            // whole: descoping is idempotent, and the grant is kept.
            self.replace(record, &old, &grant).await?;
        }
        if let Some(previous) = &previous_access {
            // Before the new grant is stored, for the same reason: until then a retry still
            // holds the previous account's access to descope.
            match provider.descope(previous).await {
                Ok(()) => {
                    tracing::info!(link = %link.id, "end-user signed in to a different account; the previous one was descoped")
                }
                Err(err) if err.is_retryable() => return Err(err.into()),
                Err(err) => {
                    tracing::warn!(link = %link.id, error = %err, "previous account could not be descoped at the vendor; the link follows the new one")
                }
            }
        }
        Ok(Prepared::Completed {
            grant,
            fetched,
            monitoring_ids,
            monitoring_pending,
            switched_from,
        })
    }

    /// Descope `old`, which the caller asked `record` to replace, when the new link holds a
    /// different account (with the same account both stay as they are).
    async fn replace(
        &self,
        record: &LinkRecord,
        old: &LinkId,
        grant: &LinkGrant,
    ) -> Result<(), EngineError> {
        let link = &record.link;
        let Some(old) = self.inner.store.get_link(&link.tenant_id, old).await? else {
            return Ok(());
        };
        if old.link.state == LinkState::Descoped
            || (old.account_key.is_some() && old.account_key == grant.account_key)
        {
            return Ok(());
        }
        if old.link.state.is_linked() {
            let provider = self.provider_of(&old).await?;
            let access = self.access(&old.link).await?;
            match provider.descope(&access).await {
                Ok(()) => {}
                Err(err) if err.is_retryable() => return Err(err.into()),
                // Refused for good (for example a token the vendor no longer knows): there is
                // nothing left to stop at the vendor.
                Err(err) => {
                    tracing::warn!(link = %old.link.id, error = %err, "replaced link could not be descoped at the vendor; descoped here")
                }
            }
        }
        self.mark_descoped(
            &link.tenant_id,
            &old.link.id,
            DescopeReason::Replaced,
            Some(link.id),
        )
        .await?;
        Ok(())
    }

    /// Make the vendor calls a happening needs, given the link as it was read.
    pub(crate) async fn prepare(
        &self,
        record: &LinkRecord,
        happening: Happening,
    ) -> Result<Prepared, EngineError> {
        let link = &record.link;
        let provider = self.provider_of(record).await?;
        Ok(match happening {
            Happening::AuthProgress {
                status,
                login_error_message,
                verification_options,
                sequence,
                sequence_scope,
            } => Prepared::Auth {
                status,
                login_error_message,
                verification_options,
                sequence: sequence.map(|s| (sequence_scope, s)),
            },
            Happening::SessionCompleted { code, data } => {
                if link.state == LinkState::Descoped {
                    return Ok(Prepared::Nothing);
                }
                let completion = Completion { code, data };
                match self.redeem(record, &provider, &completion).await {
                    Ok(grant) => {
                        self.prepare_grant(record, &provider, grant, completion.data)
                            .await?
                    }
                    // The vendor will not complete it (again): a code the caller redeemed
                    // first, a repeated notice, a code that expired before we got to it, a
                    // session that ended without an account.
                    Err(EngineError::Provider(ProviderError::Rejected {
                        kind: RejectionKind::FailedPrecondition,
                        message,
                        ..
                    })) => {
                        if link.state == LinkState::Pending {
                            // The session ends here; a later completion still counts.
                            Prepared::Failed {
                                reason: FailureReason::Other,
                                message: Some(message),
                            }
                        } else {
                            Prepared::Nothing
                        }
                    }
                    Err(err) => return Err(err),
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

    /// Apply prepared happenings to a link in one transaction, settling the delivery with them
    /// unless `settle` is off (the delivery is then tried again). A completion folded into
    /// another link is written to that link first, in a transaction of its own: should this
    /// one fail, the retry finds the other link already up to date and only ends this one.
    pub(crate) async fn commit_prepared(
        &self,
        link: &Link,
        prepared: Vec<Prepared>,
        origin: Origin,
        settle: bool,
    ) -> Result<LinkRecord, EngineError> {
        let own = self.commit_folds(link, prepared, &origin).await?;
        let tx = self
            .inner
            .store
            .begin_link_update(&link.tenant_id, &link.id)
            .await?
            .ok_or_else(|| EngineError::link_not_found(link.id))?;
        let (record, events) = apply_prepared(tx, own, &origin, settle).await?;
        self.announce(&events);
        Ok(record)
    }

    /// Write the completions among `prepared` that fold into another link, each in a
    /// transaction of its own; returns what is left to apply to `link` itself.
    pub(crate) async fn commit_folds(
        &self,
        link: &Link,
        prepared: Vec<Prepared>,
        origin: &Origin,
    ) -> Result<Vec<Prepared>, EngineError> {
        let mut own = Vec::with_capacity(prepared.len());
        for item in prepared {
            match item {
                Prepared::Fold {
                    target,
                    grant,
                    fetched,
                } => {
                    let target = target.link.id;
                    self.commit_fold(link, &target, grant, fetched, origin)
                        .await?;
                    own.push(Prepared::FoldedInto { target });
                }
                other => own.push(other),
            }
        }
        Ok(own)
    }

    /// The account `source`'s session reached is held by `target`: resume `target` with the
    /// fresh grant and data, and route `source`'s webhook URLs to it (the vendor now sends the
    /// account's events to the newest session's URL).
    async fn commit_fold(
        &self,
        source: &Link,
        target: &LinkId,
        grant: LinkGrant,
        fetched: FetchedData,
        origin: &Origin,
    ) -> Result<(), EngineError> {
        let mut tx = self
            .inner
            .store
            .begin_link_update(&source.tenant_id, target)
            .await?
            .ok_or_else(|| EngineError::link_not_found(target))?;
        let before = tx.state();
        if !before.is_linked() {
            return Err(EngineError::FailedPrecondition(format!(
                "link {target}, which holds the account this session linked, became {before} \
                 meanwhile; try again"
            )));
        }
        if let Some(secret) = grant.secret.clone() {
            tx.put_secrets(vec![(ACCESS_SECRET.to_owned(), Some(secret))])
                .await?;
        }
        let mut external_ids = grant.external_ids.clone();
        external_ids.extend(fetched.external_ids.clone());
        tx.put_external_ids(&external_ids).await?;
        if grant.account_key.is_some() {
            tx.set_account_key(grant.account_key.clone());
        }
        tx.adopt_external_ids(&source.id, WEBHOOK_TOKEN_KIND)
            .await?;
        let mut events = Vec::new();
        if before == LinkState::ReconnectRequired {
            let account_external_id = fetched
                .account
                .as_ref()
                .map(|a| a.account.external_id.clone());
            tx.set_session_url(None);
            transition(
                &mut tx,
                LinkState::Active,
                origin,
                EventPayload::Reconnected {
                    account_external_id,
                    previous_account_external_id: None,
                },
                &mut events,
            )
            .await?;
            tx.retain_secrets(&[ACCESS_SECRET]).await?;
        }
        save_fetched(&mut tx, fetched, origin, &mut events, true, false).await?;
        tx.set_refreshed_at(Utc::now());
        check_requirements(&mut tx, origin, &mut events).await?;
        tx.commit().await?;
        self.announce(&events);
        tracing::info!(link = %source.id, into = %target, "session reached an account already linked; folded into that link");
        Ok(())
    }
}

/// Apply prepared happenings (folds already written) in `tx` and commit it, settling the
/// delivery of `origin` with them when `settle` is on. Returns the link and the events appended;
/// the caller announces them once they are durable.
pub(crate) async fn apply_prepared(
    mut tx: LinkTx,
    own: Vec<Prepared>,
    origin: &Origin,
    settle: bool,
) -> Result<(LinkRecord, Vec<Event>), EngineError> {
    let mut events = Vec::new();
    for item in own {
        apply(&mut tx, item, origin, &mut events).await?;
    }
    check_requirements(&mut tx, origin, &mut events).await?;
    if settle && let Some((delivery, owner)) = &origin.delivery {
        tx.settle_delivery(delivery, owner).await?;
    }
    let record = tx.commit().await?;
    Ok((record, events))
}

/// Check the link against its requirement set when this transaction stored new policy data, or
/// when the link has a set it was never checked against (attached before its data arrived).
async fn check_requirements(
    tx: &mut LinkTx,
    origin: &Origin,
    events: &mut Vec<Event>,
) -> Result<(), EngineError> {
    let unchecked = tx
        .record()
        .link
        .requirements
        .as_ref()
        .is_some_and(|r| r.status.is_none());
    if tx.policies_changed() || unchecked {
        crate::requirements::evaluate_in_tx(tx, origin, events, Utc::now()).await?;
    }
    Ok(())
}

pub(crate) async fn emit(
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
            if status == AuthStatus::Success && tx.state() == LinkState::Active {
                // A routine sign-in of a monitoring refresh: nobody is waiting on it.
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
            monitoring_pending: _,
            switched_from,
        } => {
            let before = tx.state();
            if before == LinkState::Descoped {
                return Ok(());
            }
            if let Some(switched) = &switched_from {
                for (kind, value) in &switched.external_ids {
                    tx.forget_external_id(kind, value).await?;
                }
            }
            let mut secrets = vec![(PENDING_GRANT_SECRET.to_owned(), None)];
            if let Some(secret) = grant.secret.clone() {
                secrets.push((ACCESS_SECRET.to_owned(), Some(secret)));
            }
            tx.put_secrets(secrets).await?;
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
                    previous_account_external_id: switched_from
                        .as_ref()
                        .map(|s| s.account_key.clone()),
                }
            } else {
                EventPayload::Completed {
                    account_external_id: account_id,
                    policy_external_ids: policy_ids,
                }
            };
            transition(tx, LinkState::Active, origin, payload, events).await?;
            if before == LinkState::ReconnectRequired {
                tx.retain_secrets(&[ACCESS_SECRET]).await?;
            }
            if switched_from.is_some() {
                retire_policies_not_in(tx, &fetched, origin, events).await?;
            }
            // On a link that was linked before (a relink, a repeated completion) this is fresh
            // data like any refresh and its differences are reported; on a new link the first
            // version is the baseline.
            save_fetched(tx, fetched, origin, events, before.is_linked(), false).await?;
            tx.set_refreshed_at(now);
        }
        // Written to the other link by `commit_prepared` before this transaction opened.
        Prepared::Fold { .. } => {}
        Prepared::FoldedInto { target } => {
            tx.put_secrets(vec![(PENDING_GRANT_SECRET.to_owned(), None)])
                .await?;
            if tx.state() == LinkState::Pending {
                tx.set_session_url(None);
                transition(
                    tx,
                    LinkState::Failed,
                    origin,
                    EventPayload::Failed {
                        reason: FailureReason::Other,
                        message: Some(format!(
                            "the account is already linked by link {target}, which was resumed \
                             with this session's data; use that link"
                        )),
                    },
                    events,
                )
                .await?;
            }
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
                        previous_account_external_id: None,
                    },
                    events,
                )
                .await?;
                tx.retain_secrets(&[ACCESS_SECRET]).await?;
            }
            // A vendor may announce one version of the data more than once (Canopy sends
            // POLICIES_AVAILABLE and COMPLETE for each pull): only its first notice is a refresh.
            let new_version = tx.put_external_ids(&fetched.external_ids).await?;
            let refreshed = new_version || fetched.external_ids.is_empty();
            save_fetched(tx, fetched, origin, events, true, refreshed).await?;
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

/// The link now follows another account: its current policies that the fresh data does not hold
/// belonged to the previous account. Each is reported removed and stops counting as the link's.
async fn retire_policies_not_in(
    tx: &mut LinkTx,
    fetched: &FetchedData,
    origin: &Origin,
    events: &mut Vec<Event>,
) -> Result<(), EngineError> {
    let kept: std::collections::BTreeSet<&str> = fetched
        .policies
        .iter()
        .map(|p| p.policy.external_id.as_str())
        .collect();
    let gone: Vec<_> = tx
        .current_policies()
        .await?
        .into_iter()
        .filter(|p| !kept.contains(p.external_id.as_str()))
        .collect();
    for policy in &gone {
        emit(
            tx,
            origin,
            EventPayload::PolicyUpdated {
                policy_external_id: policy.external_id.clone(),
                status: policy.status,
                changes: vec![PolicyChange {
                    kind: ChangeKind::PolicyRemoved,
                    subject: Some(policy.external_id.clone()),
                    field: None,
                    before: None,
                    after: None,
                }],
                vendor_reasons: Vec::new(),
                vendor_disagrees: false,
            },
            events,
        )
        .await?;
    }
    let ids: Vec<String> = gone.into_iter().map(|p| p.external_id).collect();
    tx.retire_policies(&ids).await?;
    Ok(())
}

/// Whether the vendor's own reasons for a change (Canopy's monitoring event types) contradict the
/// changes computed from the data: a reason whose mark is missing, or a status change no status
/// reason explains. Reasons with no normalized counterpart (claims, driving records) and no
/// reasons at all contradict nothing.
fn vendor_disagrees(reasons: &[String], changes: &[PolicyChange]) -> bool {
    if reasons.is_empty() {
        return false;
    }
    let has = |kinds: &[ChangeKind]| changes.iter().any(|c| kinds.contains(&c.kind));
    let status_reason = reasons
        .iter()
        .any(|r| matches!(r.as_str(), "CANCELED" | "EXPIRED" | "REINSTATED"));
    let unexplained = reasons.iter().any(|reason| match reason.as_str() {
        "CANCELED" | "EXPIRED" | "REINSTATED" => !has(&[ChangeKind::StatusChanged]),
        "RENEWAL" => !has(&[ChangeKind::DatesChanged]),
        "NEW_BUSINESS" => !has(&[ChangeKind::PolicyAdded]),
        "ENDORSEMENT" => changes.is_empty(),
        _ => false,
    });
    unexplained || (!status_reason && has(&[ChangeKind::StatusChanged]))
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
        let reasons = fetched
            .vendor_reasons
            .get(&snapshot.policy.external_id)
            .cloned()
            .unwrap_or_default();
        let changes = match outcome {
            SnapshotOutcome::Unchanged { .. } => {
                // The vendor says this version changed something the normalized policy does
                // not show: reported once, on the version's first notice, and flagged.
                if report
                    && refreshed
                    && snapshot.term == PolicyTerm::Current
                    && vendor_disagrees(&reasons, &[])
                {
                    tracing::warn!(policy = %snapshot.policy.external_id, ?reasons, "the vendor reports changes that the fresh data does not show");
                    changed = true;
                    emit(
                        tx,
                        origin,
                        EventPayload::PolicyUpdated {
                            policy_external_id: snapshot.policy.external_id.clone(),
                            status: snapshot.policy.status,
                            changes: Vec::new(),
                            vendor_reasons: reasons,
                            vendor_disagrees: true,
                        },
                        events,
                    )
                    .await?;
                }
                continue;
            }
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
            let disagrees = vendor_disagrees(&reasons, &changes);
            if disagrees {
                tracing::warn!(policy = %snapshot.policy.external_id, ?reasons, ?changes, "the vendor's reasons and the computed changes disagree");
            }
            emit(
                tx,
                origin,
                EventPayload::PolicyUpdated {
                    policy_external_id: snapshot.policy.external_id.clone(),
                    status: snapshot.policy.status,
                    changes,
                    vendor_reasons: reasons,
                    vendor_disagrees: disagrees,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_grant_reads_back_whole() {
        let grant = LinkGrant {
            secret: Some(SecretString::from("tok_123")),
            external_ids: BTreeMap::from([("account".to_owned(), "acc_1".to_owned())]),
            account_key: Some("acc_1".into()),
        };
        let kept = grant_to_secret(&grant);
        let back = grant_from_secret(&kept).unwrap();
        assert_eq!(back.secret.unwrap().expose_secret(), "tok_123");
        assert_eq!(back.external_ids, grant.external_ids);
        assert_eq!(back.account_key, grant.account_key);

        let without = grant_from_secret(&grant_to_secret(&LinkGrant::default())).unwrap();
        assert!(without.secret.is_none() && without.account_key.is_none());
        assert!(grant_from_secret(&SecretString::from("not json")).is_none());
    }

    /// Canopy's MonitoringEvent `type` values (OpenAPI `MonitoringEvent.type`: RENEWAL, EXPIRED,
    /// CANCELED, NEW_BUSINESS, REINSTATED, ENDORSEMENT, CLAIM_OPENED, …) against the changes
    /// computed from the data.
    #[test]
    fn vendor_reasons_are_checked_against_computed_changes() {
        let change = |kind| PolicyChange {
            kind,
            subject: None,
            field: None,
            before: None,
            after: None,
        };
        let reasons = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let status = [change(ChangeKind::StatusChanged)];
        assert!(!vendor_disagrees(&reasons(&["CANCELED"]), &status));
        assert!(vendor_disagrees(&reasons(&["CANCELED"]), &[]));
        assert!(vendor_disagrees(&reasons(&["ENDORSEMENT"]), &status));
        assert!(!vendor_disagrees(
            &reasons(&["ENDORSEMENT"]),
            &[change(ChangeKind::PremiumChanged)]
        ));
        assert!(!vendor_disagrees(
            &reasons(&["RENEWAL"]),
            &[change(ChangeKind::DatesChanged)]
        ));
        assert!(vendor_disagrees(&reasons(&["NEW_BUSINESS"]), &[]));
        assert!(!vendor_disagrees(&reasons(&["CLAIM_OPENED"]), &[]));
        assert!(
            !vendor_disagrees(&[], &status),
            "no reasons, nothing to contradict"
        );
    }

    #[test]
    fn only_the_completion_that_went_through_asks_for_a_retry() {
        let pending = Prepared::Completed {
            grant: LinkGrant::default(),
            fetched: FetchedData::default(),
            monitoring_ids: BTreeMap::new(),
            monitoring_pending: Some("pull still running".into()),
            switched_from: None,
        };
        assert_eq!(pending.retry_reason(), Some("pull still running"));
        assert_eq!(Prepared::Nothing.retry_reason(), None);
    }
}
