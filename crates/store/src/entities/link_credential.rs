use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "link_credentials")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub link_id: String,
    pub tenant_id: String,
    pub key_id: String,
    pub ciphertext: Vec<u8>,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
