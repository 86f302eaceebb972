//! Indexes for the read paths, so that each answer costs one ordered index range whatever the
//! size of the tenant's log:
//! - `ListEvents` by user walks `(tenant_id, user_id, cursor)` instead of the tenant's whole log;
//! - `ListEvents` by kind walks `(tenant_id, kind, cursor)`, one range per requested kind;
//! - `ListLinks` pages in id order, so `(tenant_id, id)` and, filtered by user,
//!   `(tenant_id, user_id, id)` (which also serves every lookup `links_by_tenant_user` served,
//!   so that narrower index is dropped rather than maintained twice on every insert);
//!   filtered by state, `(tenant_id, state, id)`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Events {
    Table,
    TenantId,
    UserId,
    Kind,
    Cursor,
}

#[derive(DeriveIden)]
enum Links {
    Table,
    TenantId,
    UserId,
    State,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, cols) in [
            (
                "events_by_tenant_user",
                [Events::TenantId, Events::UserId, Events::Cursor],
            ),
            (
                "events_by_tenant_kind",
                [Events::TenantId, Events::Kind, Events::Cursor],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Events::Table);
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("links_by_tenant_id")
                    .table(Links::Table)
                    .col(Links::TenantId)
                    .col(Links::Id)
                    .to_owned(),
            )
            .await?;
        for (name, middle) in [
            ("links_by_tenant_user_id", Links::UserId),
            ("links_by_tenant_state_id", Links::State),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Links::Table)
                        .col(Links::TenantId)
                        .col(middle)
                        .col(Links::Id)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("links_by_tenant_user")
                    .table(Links::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("links_by_tenant_user")
                    .table(Links::Table)
                    .col(Links::TenantId)
                    .col(Links::UserId)
                    .to_owned(),
            )
            .await?;
        for name in [
            "links_by_tenant_state_id",
            "links_by_tenant_user_id",
            "links_by_tenant_id",
        ] {
            manager
                .drop_index(Index::drop().name(name).table(Links::Table).to_owned())
                .await?;
        }
        for name in ["events_by_tenant_kind", "events_by_tenant_user"] {
            manager
                .drop_index(Index::drop().name(name).table(Events::Table).to_owned())
                .await?;
        }
        Ok(())
    }
}
