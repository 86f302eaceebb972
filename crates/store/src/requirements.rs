//! A tenant's requirement sets, and the queries the engine's periodic sweep runs over links.

use chrono::{DateTime, Utc};
use coverwatch_core::ids::ConnectionId;
use coverwatch_core::requirements::RequirementSet;
use coverwatch_core::{LinkId, LinkState, ProviderId, TenantId};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
};

use crate::entities::{link, requirement_set};
use crate::{Result, Store, StoreError, from_ms, now_ms, parse_column, parse_json, to_ms};

/// A set as stored: `revision` goes up by one each time the set is replaced, so a link knows
/// whether its last check read the rules in force now.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRequirementSet {
    pub set: RequirementSet,
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A link the sweep has to look at.
#[derive(Debug, Clone, PartialEq)]
pub struct DueLink {
    pub tenant_id: TenantId,
    pub link_id: LinkId,
}

fn stored_set(row: requirement_set::Model) -> Result<StoredRequirementSet> {
    Ok(StoredRequirementSet {
        set: parse_json("requirement set", &row.definition)?,
        revision: row.revision,
        created_at: from_ms(row.created_at),
        updated_at: from_ms(row.updated_at),
    })
}

/// Reads a set inside a transaction. With `lock`, a concurrent delete of the set waits for this
/// transaction (PostgreSQL; SQLite writers are serial anyway), so a set cannot be deleted
/// between a link attaching it and that link being written.
pub(crate) async fn read_set<C: ConnectionTrait>(
    conn: &C,
    tenant: &TenantId,
    id: &str,
    lock: bool,
) -> Result<Option<StoredRequirementSet>> {
    let mut query = requirement_set::Entity::find_by_id((tenant.to_string(), id.to_owned()));
    if lock && conn.get_database_backend() == DatabaseBackend::Postgres {
        query = query.lock_shared();
    }
    query.one(conn).await?.map(stored_set).transpose()
}

impl Store {
    /// Creates the set or replaces the tenant's set of the same id; `true` when created.
    pub async fn put_requirement_set(
        &self,
        tenant: &TenantId,
        set: &RequirementSet,
    ) -> Result<(StoredRequirementSet, bool)> {
        let now = now_ms();
        let definition =
            serde_json::to_string(set).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let txn = self.db.begin().await?;
        // Insert-or-nothing, then update: two callers creating the same id at once both succeed,
        // one of them as a replacement, instead of one failing on the primary key.
        let inserted = requirement_set::Entity::insert(requirement_set::ActiveModel {
            tenant_id: Set(tenant.to_string()),
            id: Set(set.id.clone()),
            name: Set(set.name.clone()),
            definition: Set(definition.clone()),
            revision: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .on_conflict(
            OnConflict::columns([
                requirement_set::Column::TenantId,
                requirement_set::Column::Id,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        let created = inserted > 0;
        if !created {
            requirement_set::Entity::update_many()
                .col_expr(requirement_set::Column::Name, Expr::value(set.name.clone()))
                .col_expr(requirement_set::Column::Definition, Expr::value(definition))
                .col_expr(
                    requirement_set::Column::Revision,
                    Expr::col(requirement_set::Column::Revision).add(1),
                )
                .col_expr(requirement_set::Column::UpdatedAt, Expr::value(now))
                .filter(requirement_set::Column::TenantId.eq(tenant.as_str()))
                .filter(requirement_set::Column::Id.eq(&set.id))
                .exec(&txn)
                .await?;
        }
        let stored = read_set(&txn, tenant, &set.id, false)
            .await?
            .ok_or_else(|| StoreError::RequirementSetNotFound(set.id.clone()))?;
        txn.commit().await?;
        Ok((stored, created))
    }

    pub async fn get_requirement_set(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<StoredRequirementSet>> {
        read_set(&self.db, tenant, id, false).await
    }

    /// The tenant's sets ordered by id, after `after`; the second value is set when more follow.
    pub async fn list_requirement_sets(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<StoredRequirementSet>, Option<String>)> {
        let mut query = requirement_set::Entity::find()
            .filter(requirement_set::Column::TenantId.eq(tenant.as_str()));
        if let Some(after) = after {
            query = query.filter(requirement_set::Column::Id.gt(after));
        }
        let limit = limit.max(1);
        let mut rows = query
            .order_by_asc(requirement_set::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let sets = rows
            .into_iter()
            .map(stored_set)
            .collect::<Result<Vec<_>>>()?;
        let next = if more {
            sets.last().map(|s| s.set.id.clone())
        } else {
            None
        };
        Ok((sets, next))
    }

    /// Deletes a set no monitored link has attached; `false` when there was no such set.
    /// Descoped links let go of it: they are never checked again.
    pub async fn delete_requirement_set(&self, tenant: &TenantId, id: &str) -> Result<bool> {
        let txn = self.db.begin().await?;
        let mut query = requirement_set::Entity::find_by_id((tenant.to_string(), id.to_owned()));
        if txn.get_database_backend() == DatabaseBackend::Postgres {
            query = query.lock_exclusive();
        }
        if query.one(&txn).await?.is_none() {
            txn.rollback().await?;
            return Ok(false);
        }
        let attached = link::Entity::find()
            .filter(link::Column::TenantId.eq(tenant.as_str()))
            .filter(link::Column::RequirementSetId.eq(id))
            .filter(link::Column::State.ne(LinkState::Descoped.as_str()));
        let links = attached.clone().count(&txn).await?;
        if links > 0 {
            let example = attached
                .order_by_asc(link::Column::Id)
                .one(&txn)
                .await?
                .map(|l| l.id)
                .unwrap_or_default();
            txn.rollback().await?;
            return Err(StoreError::RequirementSetInUse {
                id: id.to_owned(),
                links,
                example,
            });
        }
        link::Entity::update_many()
            .col_expr(link::Column::RequirementSetId, Expr::value(None::<String>))
            .filter(link::Column::TenantId.eq(tenant.as_str()))
            .filter(link::Column::RequirementSetId.eq(id))
            .exec(&txn)
            .await?;
        requirement_set::Entity::delete_by_id((tenant.to_string(), id.to_owned()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Monitored links of a tenant with this set attached, by id after `after`.
    pub async fn links_with_requirement_set(
        &self,
        tenant: &TenantId,
        id: &str,
        after: Option<&LinkId>,
        limit: u64,
    ) -> Result<Vec<LinkId>> {
        let mut query = link::Entity::find()
            .filter(link::Column::TenantId.eq(tenant.as_str()))
            .filter(link::Column::RequirementSetId.eq(id))
            .filter(link::Column::State.ne(LinkState::Descoped.as_str()));
        if let Some(after) = after {
            query = query.filter(link::Column::Id.gt(after.to_string()));
        }
        query
            .order_by_asc(link::Column::Id)
            .limit(limit.max(1))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| parse_column("link id", &row.id))
            .collect()
    }

    /// ACTIVE links of `provider` served by `connection` (`None`: the deployment's default
    /// connection) with no fresh data since `before` (counting from creation when none ever
    /// came) that have not been reported stale yet. Scoped by connection because each
    /// connection's provider has its own refresh interval (Canopy's follows the connection's
    /// monitoring settings), so each has its own stale window.
    pub async fn stale_candidates(
        &self,
        provider: ProviderId,
        connection: Option<&ConnectionId>,
        before: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<DueLink>> {
        let before = to_ms(before);
        let served_by = match connection {
            Some(id) => link::Column::ConnectionId.eq(id.to_string()),
            None => link::Column::ConnectionId.is_null(),
        };
        let rows = link::Entity::find()
            .filter(link::Column::Provider.eq(provider.as_str()))
            .filter(served_by)
            .filter(link::Column::State.eq(LinkState::Active.as_str()))
            .filter(link::Column::StaleSince.is_null())
            .filter(
                Expr::expr(
                    Expr::col(link::Column::LastRefreshedAt)
                        .if_null(Expr::col(link::Column::CreatedAt)),
                )
                .lt(before),
            )
            .order_by_asc(link::Column::Id)
            .limit(limit.max(1))
            .all(&self.db)
            .await?;
        rows.into_iter().map(due_link).collect()
    }

    /// Linked links with a set attached whose last check is older than `before` (or that were
    /// never checked): time alone moves some rules, an expiration date coming closer.
    pub async fn links_due_for_evaluation(
        &self,
        before: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<DueLink>> {
        let rows = link::Entity::find()
            .filter(link::Column::RequirementSetId.is_not_null())
            .filter(link::Column::State.is_in([
                LinkState::Active.as_str(),
                LinkState::ReconnectRequired.as_str(),
            ]))
            .filter(
                Expr::expr(Expr::col(link::Column::RequirementsEvaluatedAt).if_null(0i64))
                    .lt(to_ms(before)),
            )
            .order_by_asc(link::Column::RequirementsEvaluatedAt)
            .limit(limit.max(1))
            .all(&self.db)
            .await?;
        rows.into_iter().map(due_link).collect()
    }
}

fn due_link(row: link::Model) -> Result<DueLink> {
    Ok(DueLink {
        tenant_id: parse_column("tenant id", &row.tenant_id)?,
        link_id: parse_column("link id", &row.id)?,
    })
}
