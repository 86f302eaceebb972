//! Raw deliveries are sealed at rest: their headers can carry a shared webhook secret and their
//! bodies one-time codes and reconnect tokens. `key_id` names the key that sealed a row; while it
//! is NULL (rows stored before this migration) `headers` is JSON and `body` the raw bytes, and
//! once set `headers` holds the base64 of the sealed JSON and `body` the sealed bytes.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Inbox {
    Table,
    KeyId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Inbox::Table)
                    .add_column(ColumnDef::new(Inbox::KeyId).string().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Inbox::Table)
                    .drop_column(Inbox::KeyId)
                    .to_owned(),
            )
            .await
    }
}
