//! Trace context (W3C `traceparent`) carried across the gap between a gRPC call, the vendor's
//! later webhook and the worker that processes it: `links.caller_trace` is the context of the
//! latest gRPC call that opened a session for the link, and `inbox.trace_context` the context of
//! the span that ingested the delivery. Both stay NULL while tracing is off.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Inbox {
    Table,
    TraceContext,
}

#[derive(DeriveIden)]
enum Links {
    Table,
    CallerTrace,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Inbox::Table)
                    .add_column(ColumnDef::new(Inbox::TraceContext).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Links::Table)
                    .add_column(ColumnDef::new(Links::CallerTrace).string().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Links::Table)
                    .drop_column(Links::CallerTrace)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Inbox::Table)
                    .drop_column(Inbox::TraceContext)
                    .to_owned(),
            )
            .await
    }
}
