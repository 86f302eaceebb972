//! Reading links, and creating one together with its first event.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use coverwatch_core::ids::ConnectionId;
use coverwatch_core::provider::LinkAccess;
use coverwatch_core::{
    Event, Link, LinkId, LinkRequirements, LinkState, ProviderId, TenantId, UserId,
};
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};

use crate::entities::{link, link_credential, link_external_id};
use crate::events::{NewEvent, insert_event};
use crate::{Keyring, Result, Store, StoreError, from_ms, parse_column, parse_json, to_ms};

/// A link with what the engine needs beyond what callers see.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRecord {
    pub link: Link,
    /// The vendor's identity of the linked account, once linked.
    pub account_key: Option<String>,
    /// The link this one replaces when the user links a different account.
    pub replaces_link_id: Option<LinkId>,
    /// Highest sign-in progress sequence seen, per vendor session (older deliveries are ignored).
    pub auth_sequences: BTreeMap<String, i64>,
    /// The revision of the attached requirement set that `link.requirements.status` was
    /// computed from; a different revision means the rules changed since.
    pub requirements_revision: Option<i64>,
    /// W3C `traceparent` of the gRPC call that opened the link's latest session, if traced.
    pub caller_trace: Option<String>,
    /// The tenant's vendor connection that serves the link; `None`: the deployment's default.
    pub connection_id: Option<ConnectionId>,
}

/// A link to create.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub id: LinkId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub provider: ProviderId,
    pub metadata: BTreeMap<String, String>,
    pub session_url: Option<String>,
    /// SHA-256 of the per-link webhook token (the token itself is never stored).
    pub webhook_token_hash: Option<String>,
    /// SHA-256 of the session's proof (see `SESSION_PROOF_KIND`; the proof itself is never
    /// stored).
    pub session_proof_hash: Option<String>,
    pub replaces_link_id: Option<LinkId>,
    /// A requirement set of the tenant to attach from the start.
    pub requirement_set_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// W3C `traceparent` of the call creating the link, so that the vendor's later webhooks
    /// can be traced back to it.
    pub caller_trace: Option<String>,
    /// The tenant's vendor connection that serves the link; `None`: the deployment's default.
    pub connection_id: Option<ConnectionId>,
}

#[derive(Debug, Clone, Default)]
pub struct LinkFilter {
    pub user_id: Option<UserId>,
    pub provider: Option<ProviderId>,
    pub states: Vec<LinkState>,
    /// Return links after this id (ids sort by creation).
    pub after: Option<LinkId>,
    pub limit: u64,
}

#[derive(Debug, Clone)]
pub struct LinkPage {
    pub links: Vec<LinkRecord>,
    /// Set when more links may follow.
    pub next_after: Option<LinkId>,
}

/// What binds a link's sealed session URL to its row.
fn session_url_aad(id: &str) -> Vec<u8> {
    format!("link:{id}:session_url").into_bytes()
}

/// A session URL as stored: sealed, because it can carry a bearer token (Canopy's reconnect URL
/// holds the reconnect token, Axle's Ignition URI the session's token).
pub(crate) fn seal_session_url(
    keyring: &Keyring,
    id: &LinkId,
    url: Option<&str>,
) -> Result<Option<String>> {
    url.map(|url| keyring.seal_text(url, &session_url_aad(&id.to_string())))
        .transpose()
        .map_err(StoreError::from)
}

pub(crate) fn open_session_url(keyring: &Keyring, id: &str, stored: &str) -> Result<String> {
    Ok(keyring.open_text(stored, &session_url_aad(id))?)
}

pub(crate) fn record_from_model(keyring: &Keyring, model: link::Model) -> Result<LinkRecord> {
    let session_url = model
        .session_url
        .as_deref()
        .map(|stored| open_session_url(keyring, &model.id, stored))
        .transpose()?;
    Ok(LinkRecord {
        link: Link {
            id: parse_column("link id", &model.id)?,
            tenant_id: parse_column("tenant id", &model.tenant_id)?,
            user_id: parse_column("user id", &model.user_id)?,
            provider: parse_column("provider", &model.provider)?,
            state: parse_column("link state", &model.state)?,
            metadata: parse_json("link metadata", &model.metadata)?,
            session_url,
            created_at: from_ms(model.created_at),
            updated_at: from_ms(model.updated_at),
            last_refreshed_at: model.last_refreshed_at.map(from_ms),
            requirements: model
                .requirement_set_id
                .map(|set_id| {
                    Ok::<_, StoreError>(LinkRequirements {
                        set_id,
                        status: model
                            .requirements_status
                            .as_deref()
                            .map(|s| parse_column("requirements status", s))
                            .transpose()?,
                        evaluated_at: model.requirements_evaluated_at.map(from_ms),
                    })
                })
                .transpose()?,
            stale_since: model.stale_since.map(from_ms),
        },
        account_key: model.account_key,
        replaces_link_id: model
            .replaces_link_id
            .as_deref()
            .map(|id| parse_column("link id", id))
            .transpose()?,
        auth_sequences: model
            .auth_sequence
            .as_deref()
            .map(|json| parse_json("auth sequences", json))
            .transpose()?
            .unwrap_or_default(),
        requirements_revision: model.requirements_revision,
        caller_trace: model.caller_trace,
        connection_id: model
            .connection_id
            .as_deref()
            .map(|id| parse_column("connection id", id))
            .transpose()?,
    })
}

impl Store {
    /// Create a link and append its first event, atomically.
    pub async fn create_link(
        &self,
        new: NewLink,
        first_event: NewEvent,
    ) -> Result<(LinkRecord, Event)> {
        let created = to_ms(new.created_at);
        let model = link::ActiveModel {
            id: Set(new.id.to_string()),
            tenant_id: Set(new.tenant_id.to_string()),
            user_id: Set(new.user_id.to_string()),
            provider: Set(new.provider.to_string()),
            state: Set(LinkState::Pending.to_string()),
            metadata: Set(serde_json::to_string(&new.metadata)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?),
            session_url: Set(seal_session_url(
                &self.keyring,
                &new.id,
                new.session_url.as_deref(),
            )?),
            account_key: Set(None),
            replaces_link_id: Set(new.replaces_link_id.map(|id| id.to_string())),
            auth_sequence: Set(None),
            created_at: Set(created),
            updated_at: Set(created),
            last_refreshed_at: Set(None),
            requirement_set_id: Set(new.requirement_set_id.clone()),
            requirements_revision: Set(None),
            requirements_status: Set(None),
            requirements_evaluated_at: Set(None),
            stale_since: Set(None),
            caller_trace: Set(new.caller_trace),
            connection_id: Set(new.connection_id.map(|id| id.to_string())),
        };
        let txn = self.db.begin().await?;
        if let Some(set_id) = &new.requirement_set_id
            && crate::requirements::read_set(&txn, &new.tenant_id, set_id, true)
                .await?
                .is_none()
        {
            txn.rollback().await?;
            return Err(StoreError::RequirementSetNotFound(set_id.clone()));
        }
        let inserted = link::Entity::insert(model)
            .exec_with_returning(&txn)
            .await?;
        let record = record_from_model(&self.keyring, inserted)?;
        if let Some(hash) = &new.webhook_token_hash {
            insert_external_id(&txn, &record.link, WEBHOOK_TOKEN_KIND, hash).await?;
        }
        if let Some(hash) = &new.session_proof_hash {
            insert_external_id(&txn, &record.link, SESSION_PROOF_KIND, hash).await?;
        }
        let event = insert_event(&txn, &self.keyring, &record.link, first_event).await?;
        txn.commit().await?;
        Ok((record, event))
    }

    pub async fn get_link(&self, tenant: &TenantId, id: &LinkId) -> Result<Option<LinkRecord>> {
        link::Entity::find_by_id(id.to_string())
            .filter(link::Column::TenantId.eq(tenant.as_str()))
            .one(&self.db)
            .await?
            .map(|row| record_from_model(&self.keyring, row))
            .transpose()
    }

    /// [`Store::get_link`] for several links in one query: the records found, by link id (a
    /// link missing, or of another tenant than the one asked with, is left out).
    pub async fn get_links(
        &self,
        links: &[(TenantId, LinkId)],
    ) -> Result<std::collections::HashMap<LinkId, LinkRecord>> {
        if links.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let tenants: std::collections::HashMap<String, &TenantId> = links
            .iter()
            .map(|(tenant, link)| (link.to_string(), tenant))
            .collect();
        let mut found = std::collections::HashMap::with_capacity(links.len());
        for row in link::Entity::find()
            .filter(link::Column::Id.is_in(tenants.keys().cloned()))
            .all(&self.db)
            .await?
        {
            if tenants
                .get(&row.id)
                .is_some_and(|tenant| tenant.as_str() == row.tenant_id)
            {
                let record = record_from_model(&self.keyring, row)?;
                found.insert(record.link.id, record);
            }
        }
        Ok(found)
    }

    /// A link by id alone, for vendor deliveries that carry our link id (authenticated by the
    /// vendor's signature, not by a tenant's key).
    pub async fn find_link_by_id_any_tenant(&self, id: &LinkId) -> Result<Option<LinkRecord>> {
        link::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(|row| record_from_model(&self.keyring, row))
            .transpose()
    }

    pub async fn list_links(&self, tenant: &TenantId, filter: &LinkFilter) -> Result<LinkPage> {
        let mut query = link::Entity::find().filter(link::Column::TenantId.eq(tenant.as_str()));
        if let Some(user) = &filter.user_id {
            query = query.filter(link::Column::UserId.eq(user.as_str()));
        }
        if let Some(provider) = &filter.provider {
            query = query.filter(link::Column::Provider.eq(provider.as_str()));
        }
        if !filter.states.is_empty() {
            query =
                query.filter(link::Column::State.is_in(filter.states.iter().map(|s| s.as_str())));
        }
        if let Some(after) = &filter.after {
            query = query.filter(link::Column::Id.gt(after.to_string()));
        }
        let limit = filter.limit.max(1);
        let mut rows = query
            .order_by_asc(link::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let links = rows
            .into_iter()
            .map(|row| record_from_model(&self.keyring, row))
            .collect::<Result<Vec<_>>>()?;
        let next_after = if more {
            links.last().map(|l| l.link.id)
        } else {
            None
        };
        Ok(LinkPage { links, next_after })
    }

    /// The link a per-link webhook token belongs to, across tenants (the token is the only
    /// thing a vendor delivery carries that we gave it).
    pub async fn find_link_by_webhook_token(
        &self,
        provider: ProviderId,
        token_hash: &str,
    ) -> Result<Option<LinkRecord>> {
        self.find_link_by_external_id(provider, WEBHOOK_TOKEN_KIND, token_hash)
            .await
    }

    /// The link a vendor id was recorded for (see `LinkTx::put_external_ids`).
    pub async fn find_link_by_external_id(
        &self,
        provider: ProviderId,
        kind: &str,
        value: &str,
    ) -> Result<Option<LinkRecord>> {
        let Some(row) = link_external_id::Entity::find_by_id((
            provider.to_string(),
            kind.to_owned(),
            value.to_owned(),
        ))
        .one(&self.db)
        .await?
        else {
            return Ok(None);
        };
        link::Entity::find_by_id(row.link_id)
            .filter(link::Column::TenantId.eq(row.tenant_id))
            .one(&self.db)
            .await?
            .map(|row| record_from_model(&self.keyring, row))
            .transpose()
    }

    /// A link of this tenant and provider already holding the vendor account `account_key`.
    pub async fn find_link_by_account_key(
        &self,
        tenant: &TenantId,
        provider: ProviderId,
        account_key: &str,
    ) -> Result<Option<LinkRecord>> {
        link::Entity::find()
            .filter(link::Column::TenantId.eq(tenant.as_str()))
            .filter(link::Column::Provider.eq(provider.as_str()))
            .filter(link::Column::AccountKey.eq(account_key))
            .order_by_asc(link::Column::Id)
            .one(&self.db)
            .await?
            .map(|row| record_from_model(&self.keyring, row))
            .transpose()
    }

    /// The oldest link of this tenant and provider, other than `except`, that is linked
    /// (`ACTIVE` or `RECONNECT_REQUIRED`) to the vendor account `account_key`.
    pub async fn find_linked_by_account_key(
        &self,
        tenant: &TenantId,
        provider: ProviderId,
        account_key: &str,
        except: &LinkId,
    ) -> Result<Option<LinkRecord>> {
        link::Entity::find()
            .filter(link::Column::TenantId.eq(tenant.as_str()))
            .filter(link::Column::Provider.eq(provider.as_str()))
            .filter(link::Column::AccountKey.eq(account_key))
            .filter(link::Column::Id.ne(except.to_string()))
            .filter(link::Column::State.is_in([
                LinkState::Active.as_str(),
                LinkState::ReconnectRequired.as_str(),
            ]))
            .order_by_asc(link::Column::Id)
            .one(&self.db)
            .await?
            .map(|row| record_from_model(&self.keyring, row))
            .transpose()
    }

    /// When the link was descoped (its `link.descoped` event was recorded); `None` while it
    /// is not descoped.
    pub async fn descoped_at(
        &self,
        tenant: &TenantId,
        id: &LinkId,
    ) -> Result<Option<DateTime<Utc>>> {
        use crate::entities::event;
        let at = event::Entity::find()
            .select_only()
            .column_as(event::Column::RecordedAt.max(), "at")
            .filter(event::Column::TenantId.eq(tenant.as_str()))
            .filter(event::Column::LinkId.eq(id.to_string()))
            .filter(event::Column::Kind.eq(coverwatch_core::EventKind::Descoped.as_str()))
            .into_tuple::<Option<i64>>()
            .one(&self.db)
            .await?;
        Ok(at.flatten().map(from_ms))
    }

    /// What a provider needs to act for a link: its decrypted secrets and vendor ids.
    pub async fn link_access(&self, tenant: &TenantId, id: &LinkId) -> Result<LinkAccess> {
        let external_ids = link_external_id::Entity::find()
            .filter(link_external_id::Column::TenantId.eq(tenant.as_str()))
            .filter(link_external_id::Column::LinkId.eq(id.to_string()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| (row.kind, row.value))
            .collect();
        let mut secrets = self.link_secrets(tenant, id).await?;
        Ok(LinkAccess {
            link_id: *id,
            secret: secrets.remove(ACCESS_SECRET),
            secrets,
            external_ids,
        })
    }

    /// One named secret of a link (for example a reconnect token), decrypted.
    pub async fn link_secret(
        &self,
        tenant: &TenantId,
        id: &LinkId,
        name: &str,
    ) -> Result<Option<SecretString>> {
        Ok(self.link_secrets(tenant, id).await?.remove(name))
    }

    pub(crate) async fn link_secrets(
        &self,
        tenant: &TenantId,
        id: &LinkId,
    ) -> Result<BTreeMap<String, SecretString>> {
        let Some(row) = link_credential::Entity::find_by_id(id.to_string())
            .filter(link_credential::Column::TenantId.eq(tenant.as_str()))
            .one(&self.db)
            .await?
        else {
            return Ok(BTreeMap::new());
        };
        open_secrets(&self.keyring, id, &row)
    }
}

/// The external-id kind under which hashes of a link's webhook tokens are kept. A link may have
/// several: each session (the first and every reconnect) gets its own URL, and the vendor may
/// keep using an older one.
pub const WEBHOOK_TOKEN_KIND: &str = "webhook_token_sha256";

/// The external-id kind under which hashes of a link's session proofs are kept: the per-session
/// value a vendor with one shared webhook URL carries back in its own record of the session
/// (Canopy's pull meta data). One per session, first and every reconnect; older ones stay
/// valid, since the vendor keeps echoing the value of the session that created its record.
/// Being a key of `link_external_ids`, a hash names one link at most.
pub const SESSION_PROOF_KIND: &str = "session_proof_sha256";

pub(crate) async fn insert_external_id<C: sea_orm::ConnectionTrait>(
    conn: &C,
    link: &Link,
    kind: &str,
    value: &str,
) -> Result<()> {
    link_external_id::Entity::insert(link_external_id::ActiveModel {
        provider: Set(link.provider.to_string()),
        kind: Set(kind.to_owned()),
        value: Set(value.to_owned()),
        tenant_id: Set(link.tenant_id.to_string()),
        link_id: Set(link.id.to_string()),
    })
    .exec(conn)
    .await?;
    Ok(())
}

/// The name under which a link's long-lived vendor access secret is sealed.
pub const ACCESS_SECRET: &str = "access";

pub(crate) fn open_secrets(
    keyring: &crate::Keyring,
    id: &LinkId,
    row: &link_credential::Model,
) -> Result<BTreeMap<String, SecretString>> {
    let plain = keyring.open(&row.key_id, &row.ciphertext, id.to_string().as_bytes())?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&plain)
        .map_err(|e| StoreError::Corrupt(format!("sealed secrets of {id}: {e}")))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, SecretString::from(v)))
        .collect())
}

pub(crate) fn seal_secrets(
    keyring: &crate::Keyring,
    id: &LinkId,
    secrets: &BTreeMap<String, SecretString>,
) -> Result<(String, Vec<u8>)> {
    let plain: BTreeMap<&str, &str> = secrets
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    let json = serde_json::to_vec(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(keyring.seal(&json, id.to_string().as_bytes())?)
}
