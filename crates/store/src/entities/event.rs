use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub cursor: i64,
    #[sea_orm(unique)]
    pub id: String,
    pub tenant_id: String,
    pub link_id: String,
    pub user_id: String,
    pub provider: String,
    pub kind: String,
    pub occurred_at: i64,
    pub recorded_at: i64,
    pub payload: String,
    pub detail: String,
    pub delivery_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
