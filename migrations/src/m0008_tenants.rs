//! Tenants become a runtime resource: a tenant has a display name, a state (a disabled tenant's
//! API calls are refused while its vendors' webhooks are still stored and processed) and a
//! source (the configuration file or the admin API). `api_keys` holds the SHA-256 of every
//! tenant key, never the key; a key row is revoked rather than deleted so that an operator can
//! still see which key was used when. Later tables (per-tenant vendor connections) reference
//! `tenants.id` the same way `api_keys` does.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    DisplayName,
    State,
    Source,
    DisabledAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    TenantId,
    KeySha256,
    Label,
    Source,
    CreatedAt,
    RevokedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one column at a time. Tenants
        // recorded before this migration came from the configuration and were all enabled.
        let columns = [
            ColumnDef::new(Tenants::DisplayName)
                .string()
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(Tenants::State)
                .string()
                .not_null()
                .default("enabled")
                .to_owned(),
            ColumnDef::new(Tenants::Source)
                .string()
                .not_null()
                .default("config")
                .to_owned(),
            ColumnDef::new(Tenants::DisabledAt)
                .big_integer()
                .null()
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tenants::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(ApiKeys::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(ApiKeys::TenantId).string().not_null())
                    .col(ColumnDef::new(ApiKeys::KeySha256).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Label).string().not_null())
                    .col(ColumnDef::new(ApiKeys::Source).string().not_null())
                    .col(ColumnDef::new(ApiKeys::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(ApiKeys::RevokedAt).big_integer().null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::TenantId)
                            .to(Tenants::Table, Tenants::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // Authentication looks a key up by its hash on every cache miss; unique, so that one
        // key can never name two tenants.
        manager
            .create_index(
                Index::create()
                    .name("api_keys_by_hash")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::KeySha256)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_keys_by_tenant")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::TenantId)
                    .col(ApiKeys::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await?;
        for column in [
            Tenants::DisabledAt,
            Tenants::Source,
            Tenants::State,
            Tenants::DisplayName,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tenants::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
