//! The login lockout ends exactly when its window does: `AuthService` with a manual clock
//! over a real SQLite store.

use std::{net::IpAddr, sync::Arc};

use keel::config::RawConfig;
use keel_identity::{
    NewTenant, TenantName, TenantSlug,
    domain::staff::Email,
    services::auth::{AuthError, AuthService},
};
use keel_kernel::clock::ManualClock;
use time::{Duration, macros::datetime};

const PASSWORD: &str = keel_testkit::OWNER_PASSWORD;

#[tokio::test]
async fn the_right_password_works_again_exactly_when_the_window_ends() {
    let db = keel_testkit::TestDb::fresh(keel_testkit::Backend::Sqlite).await;
    let raw: RawConfig = keel_testkit::test_config(&db);
    let settings = keel::Settings::from_raw(raw).expect("settings");
    let store = keel::Store::open(&settings.database).await.expect("open");
    store.migrate().await.expect("migrate");
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 12:00 UTC)));
    let auth: AuthService =
        keel::auth_service_with_clock(&settings, &store, clock.clone()).expect("auth");
    let new = NewTenant {
        slug: TenantSlug::parse("lockshop").expect("slug"),
        name: TenantName::parse("Lock Shop").expect("name"),
    };
    let (_, _, setup) = auth
        .create_tenant_with_owner(new, Email::parse("owner@lockshop.test").expect("email"))
        .await
        .expect("tenant");
    auth.setup(setup.expose(), PASSWORD.into())
        .await
        .expect("setup");
    let ip: Option<IpAddr> = Some([198, 51, 100, 9].into());
    let try_login =
        |password: &'static str| auth.login("lockshop", "owner@lockshop.test", password.into(), ip);

    for i in 0..5 {
        clock.advance(Duration::seconds(1));
        assert!(
            matches!(
                try_login("wrong-but-long-enough").await,
                Err(AuthError::InvalidCredentials)
            ),
            "failure {i}"
        );
    }
    // The first failure was at 12:00:01; the window is 900 s.
    match try_login(PASSWORD).await {
        Err(AuthError::TooManyAttempts {
            retry_after_seconds,
        }) => assert_eq!(retry_after_seconds, 900 - 4),
        other => panic!("expected a lockout, got {other:?}"),
    }
    clock.advance(Duration::seconds(900 - 5));
    match try_login(PASSWORD).await {
        Err(AuthError::TooManyAttempts {
            retry_after_seconds,
        }) => assert_eq!(retry_after_seconds, 1),
        other => panic!("still locked one second before the end, got {other:?}"),
    }
    clock.advance(Duration::seconds(1));
    assert!(
        try_login(PASSWORD).await.is_ok(),
        "unlocked when the first failure leaves the window"
    );
}

#[tokio::test]
async fn maintenance_prunes_exactly_the_attempts_that_left_the_window() {
    let db = keel_testkit::TestDb::fresh(keel_testkit::Backend::Sqlite).await;
    let settings = keel::Settings::from_raw(keel_testkit::test_config(&db)).expect("settings");
    let store = keel::Store::open(&settings.database).await.expect("open");
    store.migrate().await.expect("migrate");
    let t0 = datetime!(2026-11-21 12:00 UTC);
    let clock = Arc::new(ManualClock::new(t0));
    let auth = keel::auth_service_with_clock(&settings, &store, clock.clone()).expect("auth");
    let ip: Option<IpAddr> = Some([203, 0, 113, 5].into());
    for _ in 0..3 {
        let _ = auth
            .login("nowhere", "x@y.test", "some-password-long".into(), ip)
            .await;
    }
    // Each failed login left one row per key (account and address): 6 rows at t0. Rows go
    // once they left the longest window any throttle counts over (the reset requests'
    // 3600 s), so no limit ever loses an attempt it still counts.
    let window = settings.auth.throttle_horizon();
    assert_eq!(window, Duration::seconds(3_600));
    assert_eq!(
        keel::maintenance_pass(&settings, &store, t0 + window)
            .await
            .expect("pass")
            .login_attempts,
        0,
        "still inside the window"
    );
    assert_eq!(
        keel::maintenance_pass(&settings, &store, t0 + window + Duration::microseconds(1))
            .await
            .expect("pass")
            .login_attempts,
        6
    );
    assert_eq!(
        keel::maintenance_pass(&settings, &store, t0 + window + Duration::hours(1))
            .await
            .expect("pass")
            .login_attempts,
        0
    );
}
