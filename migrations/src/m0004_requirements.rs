//! Requirement sets per tenant, and on each link: the attached set, where the link stood at its
//! last check (with the set revision that check read, so that a replaced set starts afresh),
//! and whether `link.stale` was emitted for the current stale period.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RequirementSets {
    Table,
    TenantId,
    Id,
    Name,
    Definition,
    Revision,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Links {
    Table,
    TenantId,
    RequirementSetId,
    RequirementsRevision,
    RequirementsStatus,
    RequirementsEvaluatedAt,
    StaleSince,
}

const LINKS_BY_SET: &str = "links_by_requirement_set";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RequirementSets::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(RequirementSets::TenantId)
                            .string()
                            .not_null(),
                    )
                    .col(ColumnDef::new(RequirementSets::Id).string().not_null())
                    .col(ColumnDef::new(RequirementSets::Name).string().not_null())
                    .col(
                        ColumnDef::new(RequirementSets::Definition)
                            .text()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RequirementSets::Revision)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RequirementSets::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RequirementSets::UpdatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(RequirementSets::TenantId)
                            .col(RequirementSets::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // SQLite takes one column per ALTER TABLE.
        let columns = [
            ColumnDef::new(Links::RequirementSetId)
                .string()
                .null()
                .to_owned(),
            ColumnDef::new(Links::RequirementsRevision)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Links::RequirementsStatus)
                .string()
                .null()
                .to_owned(),
            ColumnDef::new(Links::RequirementsEvaluatedAt)
                .big_integer()
                .null()
                .to_owned(),
            ColumnDef::new(Links::StaleSince)
                .big_integer()
                .null()
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Links::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(LINKS_BY_SET)
                    .table(Links::Table)
                    .col(Links::TenantId)
                    .col(Links::RequirementSetId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(LINKS_BY_SET)
                    .table(Links::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Links::StaleSince,
            Links::RequirementsEvaluatedAt,
            Links::RequirementsStatus,
            Links::RequirementsRevision,
            Links::RequirementSetId,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Links::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(RequirementSets::Table).to_owned())
            .await
    }
}
