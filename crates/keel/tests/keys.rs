//! Signing-key rotation timing, exactly, on a real SQLite store with a manual clock.

use std::sync::Arc;

use keel_identity::{
    domain::jwt::{Claims, PrincipalKind, TokenError},
    domain::sealed::MasterKey,
    services::auth::KeyRing,
};
use keel_kernel::{
    TenantId,
    clock::{Clock as _, ManualClock},
};
use keel_store_sqlite::{SqliteSettings, SqliteStore, Synchronous};
use time::{Duration, macros::datetime};

async fn store() -> (keel_testkit::TestDb, SqliteStore) {
    let db = keel_testkit::TestDb::fresh(keel_testkit::Backend::Sqlite).await;
    let keel_testkit::TestDb::Sqlite(file) = &db else {
        unreachable!("asked for SQLite")
    };
    let store = SqliteStore::open(&SqliteSettings {
        path: file.path.clone(),
        busy_timeout: std::time::Duration::from_secs(5),
        acquire_timeout: std::time::Duration::from_secs(5),
        readers: 2,
        synchronous: Synchronous::Full,
        group_commit: true,
    })
    .await
    .expect("open");
    store.migrate().await.expect("migrate");
    (db, store)
}

fn claims(at: time::OffsetDateTime) -> Claims {
    Claims {
        iss: "keel".into(),
        aud: "keel-admin".into(),
        sub: "usr_1".into(),
        tid: TenantId::new(),
        kind: PrincipalKind::Staff,
        scope: String::new(),
        sid: "ses_1".into(),
        jti: "j".into(),
        iat: at.unix_timestamp(),
        exp: (at + Duration::days(10)).unix_timestamp(),
    }
}

const OVERLAP: Duration = Duration::seconds(86_400);

#[tokio::test]
async fn the_previous_key_stays_published_for_exactly_the_overlap() {
    let (_db, store) = store().await;
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 00:00 UTC)));
    let ring = KeyRing::new(
        Arc::new(store),
        MasterKey::generate(),
        clock.clone(),
        OVERLAP,
        Duration::ZERO,
    );
    let first = ring
        .public_keys()
        .await
        .expect("first key created on demand");
    assert_eq!(first.len(), 1);
    let old_token = ring.sign(&claims(clock.now())).await.expect("sign");
    clock.advance(Duration::hours(1));
    let rotated_at = clock.now();
    let new_kid = ring.rotate().await.expect("rotate");
    let verify = |token: String| {
        let ring = &ring;
        async move {
            ring.verify(&token, "keel", "keel-admin", Duration::seconds(30))
                .await
                .expect("store ok")
        }
    };
    assert!(verify(old_token.clone()).await.is_ok());
    clock.advance(OVERLAP - Duration::microseconds(1));
    assert_eq!(
        ring.public_keys().await.expect("keys").len(),
        2,
        "published until the last microsecond"
    );
    assert!(verify(old_token.clone()).await.is_ok());
    clock.advance(Duration::microseconds(1));
    assert_eq!(clock.now(), rotated_at + OVERLAP);
    let keys = ring.public_keys().await.expect("keys");
    assert_eq!(
        keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(),
        vec![new_kid]
    );
    assert_eq!(verify(old_token).await, Err(TokenError::UnknownKey));
}

#[tokio::test]
async fn a_node_picks_up_another_nodes_new_key_on_first_sight_after_a_second() {
    let (_db, store) = store().await;
    let master = MasterKey::generate();
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 00:00 UTC)));
    // Two nodes: same database and master key, each with its own cache (kept for an hour).
    let a = KeyRing::new(
        Arc::new(store.clone()),
        master.clone(),
        clock.clone(),
        OVERLAP,
        Duration::hours(1),
    );
    let b = KeyRing::new(
        Arc::new(store),
        master,
        clock.clone(),
        OVERLAP,
        Duration::hours(1),
    );
    a.public_keys().await.expect("a loads");
    b.rotate().await.expect("b rotates");
    let token = b
        .sign(&claims(clock.now()))
        .await
        .expect("b signs with the new key");
    let check = || a.verify(&token, "keel", "keel-admin", Duration::seconds(30));
    // Within a second of its last read, node a does not re-read for an unknown kid.
    assert_eq!(
        check().await.expect("store ok"),
        Err(TokenError::UnknownKey)
    );
    clock.advance(Duration::seconds(1));
    assert!(
        check().await.expect("store ok").is_ok(),
        "re-read once the second has passed"
    );
}
