use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "vendor_connections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub provider: String,
    /// The vendor's settings as JSON, sealed (nonce + ciphertext + tag).
    pub settings: Vec<u8>,
    /// The key that sealed `settings`.
    pub key_id: String,
    /// JSON array of lowercase header names whose values are secrets in this connection's
    /// webhooks (names only).
    pub secret_headers: String,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
