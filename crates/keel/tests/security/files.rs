//! Finding 10: the embedded database holds password hashes and personal data, so its
//! directory is the owner's alone (0700) and its files, WAL and shared memory are 0600
//! whatever the process umask.

use std::os::unix::fs::PermissionsExt as _;

use keel_testkit::{TestDb, spawn_on, test_config};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn another_local_user_cannot_read_the_embedded_database_or_its_wal() {
    let db = TestDb::fresh(keel_testkit::Backend::Sqlite).await;
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("var").join("keel-data");
    let mut raw = test_config(&db);
    // The defaults of a first `keel serve`: the database and the key file in the data dir.
    raw.data_dir = data.clone();
    raw.database_url = None;
    raw.secret_key = None;
    let app = spawn_on(
        db,
        raw,
        true,
        keel_testkit::utoipa_axum::router::OpenApiRouter::new(),
    )
    .await;
    // Writes over HTTP, so the WAL and shared-memory files exist.
    let (_, tokens) = app.owner_with_tokens("modes").await;
    assert_eq!(
        app.get_as("/v1/me", &tokens.access_token).await.status(),
        200
    );
    assert_eq!(mode(&data), 0o700, "data directory");
    for name in ["keel.db", "keel.db-wal", "keel.db-shm", "secret.key"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    app.stop().await.expect("stops");
}
