use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "links")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub provider: String,
    pub state: String,
    pub metadata: String,
    pub session_url: Option<String>,
    pub account_key: Option<String>,
    pub replaces_link_id: Option<String>,
    pub auth_sequence: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_refreshed_at: Option<i64>,
    pub requirement_set_id: Option<String>,
    pub requirements_revision: Option<i64>,
    pub requirements_status: Option<String>,
    pub requirements_evaluated_at: Option<i64>,
    pub stale_since: Option<i64>,
    /// W3C `traceparent` of the gRPC call that opened the link's latest session.
    pub caller_trace: Option<String>,
    /// The tenant's vendor connection serving this link; `None`: the deployment's default.
    pub connection_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
