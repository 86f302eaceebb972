//! Per-tenant vendor connections: a tenant's own account at a vendor (credentials, webhook
//! signing secrets), one per (tenant, provider). `settings` is the vendor's settings document
//! as JSON, sealed with the key ring (AES-256-GCM; `key_id` names the key, the associated data
//! binds the blob to the row's id, tenant and provider so it cannot be moved to another row).
//! `secret_headers` lists (as a JSON array, in clear: they are names, not values) the request
//! headers that carry a secret in this connection's webhooks (a shared header Axle adds), so
//! that every replica masks them when an operator looks at a stored delivery.
//! `version` grows with every change so that each replica can tell whether the provider it
//! built from a connection is still current with one indexed read.
//!
//! Links and inbox deliveries gain a nullable `connection_id`: the connection whose provider
//! serves them. NULL means the deployment's default connection (configured in the file), which
//! is what every row written before this migration used. No foreign key from links: a
//! connection in use is not deleted (the admin API refuses), and a link outlives nothing it
//! points to.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum VendorConnections {
    Table,
    Id,
    TenantId,
    Provider,
    Settings,
    KeyId,
    SecretHeaders,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Links {
    Table,
    ConnectionId,
}

#[derive(DeriveIden)]
enum Inbox {
    Table,
    ConnectionId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(VendorConnections::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(VendorConnections::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(VendorConnections::TenantId)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(VendorConnections::Provider)
                            .string()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(VendorConnections::Settings)
                            .blob()
                            .not_null(),
                    )
                    .col(ColumnDef::new(VendorConnections::KeyId).string().not_null())
                    .col(
                        ColumnDef::new(VendorConnections::SecretHeaders)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(VendorConnections::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(VendorConnections::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(VendorConnections::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(VendorConnections::Table, VendorConnections::TenantId)
                            .to(Tenants::Table, Tenants::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // One connection per tenant and vendor: a new link finds it by this pair, and a second
        // Put for the pair updates it in place (same id, so the webhook URL given to the vendor
        // stays valid).
        manager
            .create_index(
                Index::create()
                    .name("vendor_connections_by_tenant_provider")
                    .table(VendorConnections::Table)
                    .col(VendorConnections::TenantId)
                    .col(VendorConnections::Provider)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Links::Table)
                    .add_column(ColumnDef::new(Links::ConnectionId).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Inbox::Table)
                    .add_column(ColumnDef::new(Inbox::ConnectionId).string().null())
                    .to_owned(),
            )
            .await?;
        // DeleteVendorConnection asks whether live links still use a connection.
        manager
            .create_index(
                Index::create()
                    .name("links_by_connection")
                    .table(Links::Table)
                    .col(Links::ConnectionId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("links_by_connection")
                    .table(Links::Table)
                    .to_owned(),
            )
            .await?;
        for (table, column) in [
            (Links::Table.into_iden(), Links::ConnectionId.into_iden()),
            (Inbox::Table.into_iden(), Inbox::ConnectionId.into_iden()),
        ] {
            manager
                .alter_table(Table::alter().table(table).drop_column(column).to_owned())
                .await?;
        }
        manager
            .drop_table(Table::drop().table(VendorConnections::Table).to_owned())
            .await
    }
}
