//! Named durable consumers of a tenant's event stream and the cursor each acknowledged.

use coverwatch_core::TenantId;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{EntityTrait, Set};

use crate::entities::consumer;
use crate::{Result, Store, now_ms};

impl Store {
    /// Record that `name` has processed everything up to `cursor`. A consumer's cursor only
    /// moves forward: acknowledging an older cursor again (a retried ack) changes nothing.
    /// Returns the cursor now stored.
    pub async fn ack_consumer(&self, tenant: &TenantId, name: &str, cursor: i64) -> Result<i64> {
        let greatest = match self.backend() {
            sea_orm::DatabaseBackend::Postgres => "GREATEST",
            _ => "MAX",
        };
        consumer::Entity::insert(consumer::ActiveModel {
            tenant_id: Set(tenant.to_string()),
            name: Set(name.to_owned()),
            acked_cursor: Set(cursor),
            updated_at: Set(now_ms()),
        })
        .on_conflict(
            OnConflict::columns([consumer::Column::TenantId, consumer::Column::Name])
                .value(
                    consumer::Column::AckedCursor,
                    Expr::cust(format!(
                        "{greatest}(consumers.acked_cursor, excluded.acked_cursor)"
                    )),
                )
                .update_column(consumer::Column::UpdatedAt)
                .to_owned(),
        )
        .exec(&self.db)
        .await?;
        Ok(self.consumer_cursor(tenant, name).await?.unwrap_or(cursor))
    }

    /// The cursor `name` acknowledged last, if it ever did.
    pub async fn consumer_cursor(&self, tenant: &TenantId, name: &str) -> Result<Option<i64>> {
        Ok(
            consumer::Entity::find_by_id((tenant.to_string(), name.to_owned()))
                .one(&self.db)
                .await?
                .map(|row| row.acked_cursor),
        )
    }
}
