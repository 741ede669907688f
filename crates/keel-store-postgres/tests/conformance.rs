//! The conformance suite on a fresh PostgreSQL schema per test (real server; see keel-testdb).

use std::time::Duration;

use keel_store_conformance::Stores;
use keel_store_postgres::{PgSettings, PgStore};
use keel_testdb::PgSchema;

async fn fresh() -> (PgSchema, Stores) {
    let schema = keel_testdb::postgres_schema().await;
    let store = PgStore::connect_lazy(&PgSettings {
        connect: schema.connect_options(),
        pool_size: 4,
        acquire_timeout: Duration::from_secs(5),
    });
    store.migrate().await.expect("migrate");
    (schema, Stores::from_backend(store))
}

keel_store_conformance::conformance_tests!(fresh());
