//! What callers ask of a link: start it, complete it, read it, reconnect it, refresh it, stop it.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::Utc;
use coverwatch_core::event::{DescopeReason, EventPayload};
use coverwatch_core::policy::PolicyTerm;
use coverwatch_core::provider::{Completion, LinkAccess, LinkSessionRequest, ReconnectStep};
use coverwatch_core::webhook::DataRef;
use coverwatch_core::{Link, LinkId, LinkState, ProviderId, TenantId, UserId};
use coverwatch_store::{
    LinkFilter, LinkPage, LinkRecord, NewEvent, NewLink, SESSION_PROOF_KIND, StoredAccount,
    StoredPolicy, WEBHOOK_TOKEN_KIND,
};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::apply::Origin;
use crate::policy_cache::Lookup;
use crate::{Engine, EngineError};

/// A caller's request to link an account.
#[derive(Debug, Clone)]
pub struct LinkRequest {
    pub provider: ProviderId,
    pub user_id: UserId,
    pub metadata: BTreeMap<String, String>,
    pub redirect_uri: Option<String>,
    /// Descope this link once the new one links a different account.
    pub replace_link_id: Option<LinkId>,
    /// A requirement set of the tenant to check the link against from its first data.
    pub requirement_set_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StartedSession {
    pub link: Link,
    pub session_url: String,
}

const MAX_METADATA_ENTRIES: usize = 32;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;
const MAX_URL: usize = 2048;

fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), EngineError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(EngineError::invalid(
            "metadata",
            format!("at most {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    for (key, value) in metadata {
        let field = format!("metadata[{key:?}]");
        if key.is_empty() || key.len() > MAX_METADATA_KEY {
            return Err(EngineError::invalid(
                field,
                format!("keys must be 1 to {MAX_METADATA_KEY} bytes"),
            ));
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(EngineError::invalid(
                field,
                "keys may contain only letters, digits, `_`, `-` and `.`",
            ));
        }
        if key.starts_with("coverwatch") {
            return Err(EngineError::invalid(
                field,
                "keys starting with `coverwatch` are reserved",
            ));
        }
        if value.len() > MAX_METADATA_VALUE || value.chars().any(char::is_control) {
            return Err(EngineError::invalid(
                field,
                format!("values must be at most {MAX_METADATA_VALUE} bytes of printable text"),
            ));
        }
    }
    Ok(())
}

pub(crate) fn validate_redirect(uri: Option<&str>, field: &str) -> Result<(), EngineError> {
    let Some(uri) = uri else { return Ok(()) };
    let well_formed = (uri.starts_with("https://") || uri.starts_with("http://"))
        && uri.len() <= MAX_URL
        && !uri.chars().any(|c| c.is_control() || c.is_whitespace());
    if well_formed {
        Ok(())
    } else {
        Err(EngineError::invalid(
            field,
            format!("must be an http(s) URL of at most {MAX_URL} characters"),
        ))
    }
}

/// A fresh per-session secret (a webhook path token, a session proof) and the hash we keep of
/// it: 256 random bits, base64url.
fn webhook_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Engine {
    fn webhook_url(&self, provider: &ProviderId, token: &str) -> SecretString {
        SecretString::from(format!(
            "{}/webhooks/{provider}/{token}",
            self.inner.config.public_base_url.trim_end_matches('/')
        ))
    }

    pub(crate) async fn link_record(
        &self,
        tenant: &TenantId,
        id: &LinkId,
    ) -> Result<LinkRecord, EngineError> {
        self.inner
            .store
            .get_link(tenant, id)
            .await?
            .ok_or_else(|| EngineError::link_not_found(id))
    }

    pub(crate) async fn access(&self, link: &Link) -> Result<LinkAccess, EngineError> {
        Ok(self
            .inner
            .store
            .link_access(&link.tenant_id, &link.id)
            .await?)
    }

    pub async fn start_link(
        &self,
        tenant: &TenantId,
        request: LinkRequest,
    ) -> Result<StartedSession, EngineError> {
        validate_metadata(&request.metadata)?;
        validate_redirect(request.redirect_uri.as_deref(), "redirect_uri")?;
        let (connection_id, provider) = self
            .provider_for_new_link(tenant, &request.provider)
            .await?;
        if let Some(old) = &request.replace_link_id {
            let old = self
                .inner
                .store
                .get_link(tenant, old)
                .await?
                .ok_or_else(|| EngineError::NotFound {
                    what: "link (replace_link_id)",
                    id: old.to_string(),
                })?;
            if old.link.state.is_final() {
                return Err(EngineError::FailedPrecondition(format!(
                    "replace_link_id: link {} is already descoped",
                    old.link.id
                )));
            }
            if old.link.user_id != request.user_id || old.link.provider != request.provider {
                return Err(EngineError::FailedPrecondition(format!(
                    "replace_link_id: link {} belongs to another user or provider",
                    old.link.id
                )));
            }
        }

        if let Some(set_id) = &request.requirement_set_id {
            // Checked before the vendor is asked for a session, so a typo costs no session.
            self.requirement_set_named(tenant, "requirement_set_id", set_id)
                .await?;
        }

        let link_id = LinkId::new();
        let (token, hash) = webhook_token();
        let (proof, proof_hash) = webhook_token();
        let session = provider
            .start_link_session(&LinkSessionRequest {
                link_id,
                tenant_id: tenant.clone(),
                user_id: request.user_id.clone(),
                metadata: request.metadata.clone(),
                redirect_uri: request.redirect_uri.clone(),
                webhook_url: self.webhook_url(&request.provider, &token),
                session_proof: SecretString::from(proof),
            })
            .await?;
        let (record, event) = self
            .inner
            .store
            .create_link(
                NewLink {
                    id: link_id,
                    tenant_id: tenant.clone(),
                    user_id: request.user_id,
                    provider: request.provider,
                    metadata: request.metadata,
                    session_url: Some(session.url.clone()),
                    webhook_token_hash: Some(hash),
                    session_proof_hash: Some(proof_hash),
                    replaces_link_id: request.replace_link_id,
                    requirement_set_id: request.requirement_set_id,
                    created_at: Utc::now(),
                    caller_trace: crate::trace::current_traceparent(),
                    connection_id,
                },
                NewEvent::now(EventPayload::SessionOpened {
                    url: session.url.clone(),
                    reconnect: false,
                }),
            )
            .await?;
        self.announce(&[event]);
        Ok(StartedSession {
            link: record.link,
            session_url: session.url,
        })
    }

    /// Complete a link with the one-time code a caller received on its redirect. The same
    /// completion may also arrive by webhook; whichever comes second finds the link active.
    pub async fn complete_link(
        &self,
        tenant: &TenantId,
        id: &LinkId,
        code: SecretString,
    ) -> Result<Link, EngineError> {
        if code.expose_secret().trim().is_empty() {
            return Err(EngineError::invalid("auth_code", "must not be empty"));
        }
        let record = self.link_record(tenant, id).await?;
        let provider = self.provider_of(&record).await?;
        if !provider.capabilities().one_time_completion_code {
            return Err(EngineError::FailedPrecondition(format!(
                "{} completes sessions from its own notices and has no one-time code to redeem \
                 (capability one_time_completion_code); the link completes by itself",
                record.link.provider
            )));
        }
        let _working = self.lock_link(*id).await;
        // Read again under the lock: the vendor's notice may have completed it meanwhile.
        let record = self.link_record(tenant, id).await?;
        match record.link.state {
            LinkState::Active => return Ok(record.link),
            LinkState::Descoped => {
                return Err(EngineError::FailedPrecondition(format!(
                    "link {id} is descoped and cannot be completed"
                )));
            }
            _ => {}
        }
        let completion = Completion {
            code: Some(code),
            data: DataRef::All,
        };
        let prepared = self.prepare_completion(&record, completion).await?;
        if let Some(reason) = prepared.retry_reason() {
            // The vendor's own notice, which also arrives, makes sure of it.
            tracing::info!(link = %id, %reason, "completed by the caller; monitoring not yet confirmed");
        }
        let record = self
            .commit_prepared(&record.link, vec![prepared], Origin::caller(), true)
            .await?;
        Ok(record.link)
    }

    pub async fn get_link(&self, tenant: &TenantId, id: &LinkId) -> Result<Link, EngineError> {
        Ok(self.link_record(tenant, id).await?.link)
    }

    pub async fn list_links(
        &self,
        tenant: &TenantId,
        filter: &LinkFilter,
    ) -> Result<LinkPage, EngineError> {
        Ok(self.inner.store.list_links(tenant, filter).await?)
    }

    /// Open a new session in which the end-user reconnects the account of this link.
    pub async fn start_reconnect(
        &self,
        tenant: &TenantId,
        id: &LinkId,
        redirect_uri: Option<String>,
    ) -> Result<StartedSession, EngineError> {
        validate_redirect(redirect_uri.as_deref(), "redirect_uri")?;
        let record = self.link_record(tenant, id).await?;
        if !record.link.state.is_linked() {
            return Err(EngineError::FailedPrecondition(format!(
                "link {id} is {}; only an ACTIVE or RECONNECT_REQUIRED link can be reconnected",
                record.link.state
            )));
        }
        let link = &record.link;
        let provider = self.provider_of(&record).await?;
        let access = self.access(link).await?;
        let (token, hash) = webhook_token();
        let (proof, proof_hash) = webhook_token();
        let session = provider
            .start_reconnect(
                &access,
                &LinkSessionRequest {
                    link_id: link.id,
                    tenant_id: link.tenant_id.clone(),
                    user_id: link.user_id.clone(),
                    metadata: link.metadata.clone(),
                    redirect_uri,
                    webhook_url: self.webhook_url(&link.provider, &token),
                    session_proof: SecretString::from(proof),
                },
            )
            .await?;
        let mut tx = self
            .inner
            .store
            .begin_link_update(tenant, id)
            .await?
            .ok_or_else(|| EngineError::link_not_found(id))?;
        tx.put_external_ids(&BTreeMap::from([
            (WEBHOOK_TOKEN_KIND.to_owned(), hash),
            (SESSION_PROOF_KIND.to_owned(), proof_hash),
        ]))
        .await?;
        tx.set_session_url(Some(session.url.clone()));
        // The vendor's webhooks from now on answer this call: they continue its trace.
        if let Some(traceparent) = crate::trace::current_traceparent() {
            tx.set_caller_trace(traceparent);
        }
        let event = tx
            .append_event(NewEvent::now(EventPayload::SessionOpened {
                url: session.url.clone(),
                reconnect: true,
            }))
            .await?;
        let record = tx.commit().await?;
        self.announce(&[event]);
        Ok(StartedSession {
            link: record.link,
            session_url: session.url,
        })
    }

    /// Stop monitoring. Descoping a descoped link is not an error.
    pub async fn descope(&self, tenant: &TenantId, id: &LinkId) -> Result<Link, EngineError> {
        let record = self.link_record(tenant, id).await?;
        if record.link.state == LinkState::Descoped {
            return Ok(record.link);
        }
        if record.link.state.is_linked() {
            let provider = self.provider_of(&record).await?;
            let access = self.access(&record.link).await?;
            provider.descope(&access).await?;
        }
        self.mark_descoped(tenant, id, DescopeReason::Requested, None)
            .await
    }

    pub(crate) async fn mark_descoped(
        &self,
        tenant: &TenantId,
        id: &LinkId,
        reason: DescopeReason,
        replaced_by: Option<LinkId>,
    ) -> Result<Link, EngineError> {
        let mut tx = self
            .inner
            .store
            .begin_link_update(tenant, id)
            .await?
            .ok_or_else(|| EngineError::link_not_found(id))?;
        if tx.state() == LinkState::Descoped {
            return Ok(tx.record().link.clone());
        }
        tx.set_state(tx.state().transition(LinkState::Descoped)?);
        tx.set_session_url(None);
        let event = tx
            .append_event(NewEvent::now(EventPayload::Descoped {
                reason,
                replaced_by,
            }))
            .await?;
        let record = tx.commit().await?;
        self.announce(&[event]);
        Ok(record.link)
    }

    /// Ask the vendor for fresh data now; the data arrives later by webhook.
    pub async fn refresh(&self, tenant: &TenantId, id: &LinkId) -> Result<Link, EngineError> {
        let record = self.link_record(tenant, id).await?;
        let provider = self.provider_of(&record).await?;
        if !provider.capabilities().on_demand_refresh {
            return Err(EngineError::FailedPrecondition(format!(
                "{} has no on-demand refresh (capability on_demand_refresh); it refreshes on its own schedule",
                record.link.provider
            )));
        }
        if record.link.state != LinkState::Active {
            return Err(EngineError::FailedPrecondition(format!(
                "link {id} is {}; only an ACTIVE link can be refreshed",
                record.link.state
            )));
        }
        let access = self.access(&record.link).await?;
        provider.refresh(&access).await?;
        Ok(record.link)
    }

    /// One step of an in-app reconnect; progress arrives as `link.auth_status` events.
    pub async fn reconnect_step(
        &self,
        tenant: &TenantId,
        id: &LinkId,
        step: ReconnectStep,
    ) -> Result<Link, EngineError> {
        let record = self.link_record(tenant, id).await?;
        let provider = self.provider_of(&record).await?;
        if !provider.capabilities().in_app_reconnect {
            return Err(EngineError::FailedPrecondition(format!(
                "{} has no in-app reconnect (capability in_app_reconnect); use StartReconnect",
                record.link.provider
            )));
        }
        if record.link.state != LinkState::ReconnectRequired {
            return Err(EngineError::FailedPrecondition(format!(
                "link {id} is {}; in-app reconnect needs RECONNECT_REQUIRED",
                record.link.state
            )));
        }
        let _working = self.lock_link(*id).await;
        let access = self.access(&record.link).await?;
        let outcome = provider.reconnect_step(&access, &step).await?;
        if !outcome.secrets.is_empty() {
            let mut tx = self
                .inner
                .store
                .begin_link_update(tenant, id)
                .await?
                .ok_or_else(|| EngineError::link_not_found(id))?;
            tx.put_secrets(outcome.secrets).await?;
            tx.commit().await?;
        }
        Ok(record.link)
    }

    /// The latest stored version of one policy of a link.
    pub async fn get_policy(
        &self,
        tenant: &TenantId,
        id: &LinkId,
        policy_id: &str,
        term: PolicyTerm,
    ) -> Result<StoredPolicy, EngineError> {
        // The snapshot query filters on the tenant, and links are never deleted: a policy found
        // proves the link is the caller's. So the hot path is one round trip; the link is read
        // only to tell a missing link from a missing policy.
        let reading = match self.inner.policy_cache.lookup(tenant, id, policy_id, term) {
            Some(Lookup::Hit(policy)) => return Ok(*policy),
            Some(Lookup::Miss(reading)) => Some(reading),
            None => None,
        };
        if let Some(policy) = self
            .inner
            .store
            .latest_policy(tenant, id, policy_id, term)
            .await?
        {
            if let Some(reading) = reading {
                reading.store(tenant, policy_id, term, &policy);
            }
            return Ok(policy);
        }
        self.link_record(tenant, id).await?;
        Err(EngineError::NotFound {
            what: match term {
                PolicyTerm::Current => "policy",
                PolicyTerm::Renewal => "renewal term of policy",
            },
            id: policy_id.to_owned(),
        })
    }

    pub async fn list_policies(
        &self,
        tenant: &TenantId,
        id: &LinkId,
    ) -> Result<Vec<StoredPolicy>, EngineError> {
        self.link_record(tenant, id).await?;
        Ok(self
            .inner
            .store
            .latest_policies(tenant, id, PolicyTerm::Current)
            .await?)
    }

    pub async fn get_account(
        &self,
        tenant: &TenantId,
        id: &LinkId,
    ) -> Result<StoredAccount, EngineError> {
        self.link_record(tenant, id).await?;
        self.inner
            .store
            .latest_account(tenant, id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "account of link",
                id: id.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_rules_name_the_offending_key() {
        let ok = BTreeMap::from([("loan_id".to_owned(), "L-1".to_owned())]);
        assert!(validate_metadata(&ok).is_ok());
        let reserved = BTreeMap::from([("coverwatchLinkId".to_owned(), "x".to_owned())]);
        let err = validate_metadata(&reserved).unwrap_err().to_string();
        assert!(
            err.contains("metadata[\"coverwatchLinkId\"]") && err.contains("reserved"),
            "{err}"
        );
        let nested = BTreeMap::from([("a b".to_owned(), "x".to_owned())]);
        assert!(validate_metadata(&nested).is_err());
        let long = BTreeMap::from([("k".to_owned(), "v".repeat(513))]);
        assert!(validate_metadata(&long).is_err());
    }

    #[test]
    fn redirects_must_be_http_urls() {
        assert!(validate_redirect(Some("https://app.example/done"), "redirect_uri").is_ok());
        assert!(validate_redirect(Some("javascript:alert(1)"), "redirect_uri").is_err());
        assert!(validate_redirect(Some("https://a b"), "redirect_uri").is_err());
        assert!(validate_redirect(None, "redirect_uri").is_ok());
    }

    #[test]
    fn webhook_tokens_are_unguessable_and_only_their_hash_is_kept() {
        let (a, hash_a) = webhook_token();
        let (b, _) = webhook_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_a, token_hash(&a));
        assert!(!hash_a.contains(&a));
    }
}
