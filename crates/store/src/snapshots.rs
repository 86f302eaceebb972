//! Versioned policy and account snapshots. A new version is written only when the normalized
//! content changed; fields that move on every refresh (refresh times) do not count as change.

use chrono::{DateTime, Utc};
use coverwatch_core::policy::{Account, AccountSnapshot, Policy, PolicySnapshot, PolicyTerm};
use coverwatch_core::{LinkId, TenantId};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use sha2::{Digest, Sha256};

use crate::entities::{account_snapshot, policy_snapshot};
use crate::{Result, Store, StoreError, from_ms, parse_json, to_ms};

/// What saving a snapshot did.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotOutcome<T> {
    /// The first version of this object.
    Created { version: i32 },
    /// A new version; `previous` is the one before it.
    Changed { version: i32, previous: Box<T> },
    /// Same content as the latest version; nothing written.
    Unchanged { version: i32 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    pub policy: Policy,
    pub term: PolicyTerm,
    pub version: i32,
    pub fetched_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredAccount {
    pub account: Account,
    pub version: i32,
    pub fetched_at: DateTime<Utc>,
}

fn content_hash(value: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(value.to_string().as_bytes()))
}

/// The hash of a normalized policy without what vendors change on every fetch though the policy
/// did not change: Canopy gives a policy's documents new ids with each pull.
fn policy_content_hash(normalized: &serde_json::Value) -> String {
    let mut stable = normalized.clone();
    if let Some(documents) = stable
        .get_mut("documents")
        .and_then(serde_json::Value::as_array_mut)
    {
        for document in documents {
            if let Some(fields) = document.as_object_mut() {
                fields.remove("id");
            }
        }
    }
    content_hash(&stable)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The latest version keeps the vendor's latest JSON even when the normalized content did not
/// change: vendor fields outside the normalized model (Canopy's policy check, read by vendor
/// checks) must not stay as they were at the version's first fetch.
macro_rules! keep_latest_raw {
    ($conn:expr, $entity:ident, $latest:expr, $fresh:expr) => {{
        let fresh = $fresh.to_string();
        if fresh != $latest.raw {
            $entity::Entity::update_many()
                .col_expr($entity::Column::Raw, sea_orm::sea_query::Expr::value(fresh))
                .filter($entity::Column::Id.eq($latest.id))
                .exec($conn)
                .await?;
        }
    }};
}

pub(crate) async fn save_policy<C: ConnectionTrait>(
    conn: &C,
    tenant: &TenantId,
    link: &LinkId,
    snapshot: &PolicySnapshot,
    fetched_at: DateTime<Utc>,
) -> Result<SnapshotOutcome<Policy>> {
    let normalized = to_json(&snapshot.policy)?;
    let hash = policy_content_hash(&normalized);
    let latest = policy_snapshot::Entity::find()
        .filter(policy_snapshot::Column::TenantId.eq(tenant.as_str()))
        .filter(policy_snapshot::Column::LinkId.eq(link.to_string()))
        .filter(policy_snapshot::Column::PolicyExternalId.eq(&snapshot.policy.external_id))
        .filter(policy_snapshot::Column::Term.eq(snapshot.term.as_str()))
        .order_by_desc(policy_snapshot::Column::Version)
        .one(conn)
        .await?;
    // Hashed again rather than read from the row, so that versions stored before a field was
    // deemed volatile compare the same way.
    if let Some(latest) = &latest
        && (latest.content_hash == hash
            || serde_json::from_str(&latest.normalized)
                .is_ok_and(|stored| policy_content_hash(&stored) == hash))
    {
        keep_latest_raw!(conn, policy_snapshot, latest, snapshot.raw);
        return Ok(SnapshotOutcome::Unchanged {
            version: latest.version,
        });
    }
    let version = latest.as_ref().map_or(1, |l| l.version + 1);
    policy_snapshot::Entity::insert(policy_snapshot::ActiveModel {
        id: sea_orm::NotSet,
        tenant_id: Set(tenant.to_string()),
        link_id: Set(link.to_string()),
        policy_external_id: Set(snapshot.policy.external_id.clone()),
        term: Set(snapshot.term.as_str().to_owned()),
        version: Set(version),
        content_hash: Set(hash),
        normalized: Set(normalized.to_string()),
        raw: Set(snapshot.raw.to_string()),
        fetched_at: Set(to_ms(fetched_at)),
    })
    .exec(conn)
    .await?;
    Ok(match latest {
        None => SnapshotOutcome::Created { version },
        Some(previous) => SnapshotOutcome::Changed {
            version,
            previous: Box::new(parse_json("policy snapshot", &previous.normalized)?),
        },
    })
}

pub(crate) async fn save_account<C: ConnectionTrait>(
    conn: &C,
    tenant: &TenantId,
    link: &LinkId,
    snapshot: &AccountSnapshot,
    fetched_at: DateTime<Utc>,
) -> Result<SnapshotOutcome<Account>> {
    let normalized = to_json(&snapshot.account)?;
    let mut hashed = normalized.clone();
    if let Some(fields) = hashed.as_object_mut() {
        fields.remove("refreshed_at");
    }
    let hash = content_hash(&hashed);
    let latest = account_snapshot::Entity::find()
        .filter(account_snapshot::Column::TenantId.eq(tenant.as_str()))
        .filter(account_snapshot::Column::LinkId.eq(link.to_string()))
        .filter(account_snapshot::Column::AccountExternalId.eq(&snapshot.account.external_id))
        .order_by_desc(account_snapshot::Column::Version)
        .one(conn)
        .await?;
    if let Some(latest) = &latest
        && latest.content_hash == hash
    {
        keep_latest_raw!(conn, account_snapshot, latest, snapshot.raw);
        return Ok(SnapshotOutcome::Unchanged {
            version: latest.version,
        });
    }
    let version = latest.as_ref().map_or(1, |l| l.version + 1);
    account_snapshot::Entity::insert(account_snapshot::ActiveModel {
        id: sea_orm::NotSet,
        tenant_id: Set(tenant.to_string()),
        link_id: Set(link.to_string()),
        account_external_id: Set(snapshot.account.external_id.clone()),
        version: Set(version),
        content_hash: Set(hash),
        normalized: Set(normalized.to_string()),
        raw: Set(snapshot.raw.to_string()),
        fetched_at: Set(to_ms(fetched_at)),
    })
    .exec(conn)
    .await?;
    Ok(match latest {
        None => SnapshotOutcome::Created { version },
        Some(previous) => SnapshotOutcome::Changed {
            version,
            previous: Box::new(parse_json("account snapshot", &previous.normalized)?),
        },
    })
}

/// One stored version of a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyVersion {
    pub version: i32,
    pub fetched_at: DateTime<Utc>,
    pub policy: Policy,
}

pub(crate) async fn latest_policies<C: ConnectionTrait>(
    conn: &C,
    tenant: &TenantId,
    link: &LinkId,
    term: PolicyTerm,
) -> Result<Vec<StoredPolicy>> {
    let rows = policy_snapshot::Entity::find()
        .filter(policy_snapshot::Column::TenantId.eq(tenant.as_str()))
        .filter(policy_snapshot::Column::LinkId.eq(link.to_string()))
        .filter(policy_snapshot::Column::Term.eq(term.as_str()))
        .order_by_asc(policy_snapshot::Column::PolicyExternalId)
        .order_by_desc(policy_snapshot::Column::Version)
        .all(conn)
        .await?;
    let mut latest: Vec<policy_snapshot::Model> = Vec::new();
    for row in rows {
        if latest
            .last()
            .is_none_or(|l| l.policy_external_id != row.policy_external_id)
        {
            latest.push(row);
        }
    }
    latest.into_iter().map(stored_policy).collect()
}

fn stored_policy(row: policy_snapshot::Model) -> Result<StoredPolicy> {
    Ok(StoredPolicy {
        policy: parse_json("policy snapshot", &row.normalized)?,
        term: if row.term == PolicyTerm::Renewal.as_str() {
            PolicyTerm::Renewal
        } else {
            PolicyTerm::Current
        },
        version: row.version,
        fetched_at: from_ms(row.fetched_at),
    })
}

impl Store {
    /// The latest version of each policy of a link, for one term, ordered by policy id.
    pub async fn latest_policies(
        &self,
        tenant: &TenantId,
        link: &LinkId,
        term: PolicyTerm,
    ) -> Result<Vec<StoredPolicy>> {
        latest_policies(&self.db, tenant, link, term).await
    }

    /// The versions of one policy of a link, oldest first, after version `after`, at most
    /// `limit` of them, plus the version before the first returned (to diff it against).
    pub async fn policy_history(
        &self,
        tenant: &TenantId,
        link: &LinkId,
        policy_external_id: &str,
        term: PolicyTerm,
        after: i32,
        limit: u64,
    ) -> Result<(Option<PolicyVersion>, Vec<PolicyVersion>)> {
        let rows = policy_snapshot::Entity::find()
            .filter(policy_snapshot::Column::TenantId.eq(tenant.as_str()))
            .filter(policy_snapshot::Column::LinkId.eq(link.to_string()))
            .filter(policy_snapshot::Column::PolicyExternalId.eq(policy_external_id))
            .filter(policy_snapshot::Column::Term.eq(term.as_str()))
            .filter(policy_snapshot::Column::Version.gte(after))
            .order_by_asc(policy_snapshot::Column::Version)
            .limit(limit.max(1) + 1)
            .all(&self.db)
            .await?;
        let mut versions = rows
            .into_iter()
            .map(|row| {
                Ok(PolicyVersion {
                    version: row.version,
                    fetched_at: from_ms(row.fetched_at),
                    policy: parse_json("policy snapshot", &row.normalized)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let previous = if versions.first().is_some_and(|v| v.version == after) {
            Some(versions.remove(0))
        } else {
            None
        };
        versions.truncate(limit.max(1) as usize);
        Ok((previous, versions))
    }

    pub async fn latest_policy(
        &self,
        tenant: &TenantId,
        link: &LinkId,
        policy_external_id: &str,
        term: PolicyTerm,
    ) -> Result<Option<StoredPolicy>> {
        policy_snapshot::Entity::find()
            .filter(policy_snapshot::Column::TenantId.eq(tenant.as_str()))
            .filter(policy_snapshot::Column::LinkId.eq(link.to_string()))
            .filter(policy_snapshot::Column::PolicyExternalId.eq(policy_external_id))
            .filter(policy_snapshot::Column::Term.eq(term.as_str()))
            .order_by_desc(policy_snapshot::Column::Version)
            .one(&self.db)
            .await?
            .map(stored_policy)
            .transpose()
    }

    /// The vendor JSON behind the latest version of each current-term policy of a link (by
    /// policy external id, ordered by it) and behind its latest account snapshot. A vendor's
    /// own verdicts (Canopy's policy check) are read from here rather than asked for again.
    pub async fn latest_raw(
        &self,
        tenant: &TenantId,
        link: &LinkId,
    ) -> Result<(Vec<(String, serde_json::Value)>, Option<serde_json::Value>)> {
        let rows = policy_snapshot::Entity::find()
            .filter(policy_snapshot::Column::TenantId.eq(tenant.as_str()))
            .filter(policy_snapshot::Column::LinkId.eq(link.to_string()))
            .filter(policy_snapshot::Column::Term.eq(PolicyTerm::Current.as_str()))
            .order_by_asc(policy_snapshot::Column::PolicyExternalId)
            .order_by_desc(policy_snapshot::Column::Version)
            .all(&self.db)
            .await?;
        let mut policies: Vec<(String, serde_json::Value)> = Vec::new();
        for row in rows {
            if policies
                .last()
                .is_some_and(|(id, _)| *id == row.policy_external_id)
            {
                continue;
            }
            let raw = parse_json("policy snapshot raw", &row.raw)?;
            policies.push((row.policy_external_id, raw));
        }
        let account = account_snapshot::Entity::find()
            .filter(account_snapshot::Column::TenantId.eq(tenant.as_str()))
            .filter(account_snapshot::Column::LinkId.eq(link.to_string()))
            .order_by_desc(account_snapshot::Column::Id)
            .one(&self.db)
            .await?
            .map(|row| parse_json("account snapshot raw", &row.raw))
            .transpose()?;
        Ok((policies, account))
    }

    pub async fn latest_account(
        &self,
        tenant: &TenantId,
        link: &LinkId,
    ) -> Result<Option<StoredAccount>> {
        account_snapshot::Entity::find()
            .filter(account_snapshot::Column::TenantId.eq(tenant.as_str()))
            .filter(account_snapshot::Column::LinkId.eq(link.to_string()))
            .order_by_desc(account_snapshot::Column::Id)
            .one(&self.db)
            .await?
            .map(|row| {
                Ok(StoredAccount {
                    account: parse_json("account snapshot", &row.normalized)?,
                    version: row.version,
                    fetched_at: from_ms(row.fetched_at),
                })
            })
            .transpose()
    }
}
