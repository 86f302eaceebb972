//! Named durable consumers: the server keeps each consumer's acknowledged cursor, so a caller
//! resumes by name instead of keeping the cursor itself.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Consumers {
    Table,
    TenantId,
    Name,
    AckedCursor,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Consumers::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Consumers::TenantId).string().not_null())
                    .col(ColumnDef::new(Consumers::Name).string().not_null())
                    .col(
                        ColumnDef::new(Consumers::AckedCursor)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Consumers::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(Consumers::TenantId)
                            .col(Consumers::Name),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Consumers::Table).to_owned())
            .await
    }
}
