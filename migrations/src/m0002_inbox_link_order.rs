//! The claim query skips a delivery while an older one of the same link is pending (one link's
//! deliveries are processed in receipt order). Without this index that check scans the inbox for
//! every candidate; with it, it is one index probe.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Inbox {
    Table,
    LinkId,
    Status,
    Seq,
}

const INDEX: &str = "inbox_pending_by_link";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Inbox::Table)
                    .col(Inbox::LinkId)
                    .col(Inbox::Status)
                    .col(Inbox::Seq)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Inbox::Table).to_owned())
            .await
    }
}
