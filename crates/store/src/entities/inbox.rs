use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "inbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub seq: i64,
    #[sea_orm(unique)]
    pub id: String,
    pub provider: String,
    pub dedupe_key: String,
    pub tenant_id: Option<String>,
    pub link_id: Option<String>,
    pub path: String,
    pub headers: String,
    pub body: Option<Vec<u8>>,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: i64,
    pub next_attempt_at: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub processed_at: Option<i64>,
    /// The key that sealed `headers` and `body`; `None` for rows stored in plaintext.
    pub key_id: Option<String>,
    /// W3C `traceparent` of the span that ingested the delivery; `None` while tracing is off.
    pub trace_context: Option<String>,
    /// The vendor connection whose endpoint (and secrets) took the delivery; `None`: the
    /// deployment's default connection.
    pub connection_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
