//! The conformance suite on a fresh SQLite file per test.

use std::time::Duration;

use keel_store_conformance::Stores;
use keel_store_sqlite::{SqliteSettings, SqliteStore, Synchronous};
use keel_testdb::SqliteFile;

async fn fresh() -> (SqliteFile, Stores) {
    let file = keel_testdb::sqlite_file();
    let store = SqliteStore::open(&SqliteSettings {
        path: file.path.clone(),
        busy_timeout: Duration::from_secs(5),
        acquire_timeout: Duration::from_secs(5),
        readers: 4,
        synchronous: Synchronous::Full,
        group_commit: true,
    })
    .await
    .expect("open a fresh SQLite store");
    store.migrate().await.expect("migrate");
    (file, Stores::from_backend(store))
}

keel_store_conformance::conformance_tests!(fresh());
