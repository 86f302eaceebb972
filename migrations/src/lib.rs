//! The schema, one migration per change. Migrations run at start-up and with `coverwatch migrate`.
//! They must work on SQLite and PostgreSQL alike: times are Unix milliseconds in BIGINT columns,
//! JSON is kept as TEXT, and secrets as BLOB/BYTEA ciphertext.

pub use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_inbox_link_order;
mod m0003_consumers;
mod m0004_requirements;
mod m0005_sealed_deliveries;
mod m0006_read_indexes;
mod m0007_trace_context;
mod m0008_tenants;
mod m0009_vendor_connections;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_inbox_link_order::Migration),
            Box::new(m0003_consumers::Migration),
            Box::new(m0004_requirements::Migration),
            Box::new(m0005_sealed_deliveries::Migration),
            Box::new(m0006_read_indexes::Migration),
            Box::new(m0007_trace_context::Migration),
            Box::new(m0008_tenants::Migration),
            Box::new(m0009_vendor_connections::Migration),
        ]
    }
}
