//! Identity behaviours: staff users, one-time tokens, sessions, signing keys, the event log's
//! tenant scoping, and login throttling.

#[allow(clippy::wildcard_imports)]
use super::*;

// ---- identity: staff users, one-time tokens, sessions, signing keys ----

pub(crate) const HOUR: time::Duration = time::Duration::hours(1);

pub(crate) struct Owner {
    pub(crate) tenant: Tenant,
    pub(crate) user: StaffUser,
    pub(crate) setup: OneTimeToken,
}

pub(crate) async fn tenant_with_owner(stores: &Stores, slug: &str) -> Owner {
    let tenant = tenant(&unique_slug(slug));
    let user = StaffUser {
        id: UserId::new(),
        tenant_id: tenant.id,
        email: Email::parse(&format!("owner@{}.test", tenant.slug)).expect("valid email"),
        role: Role::Owner,
        status: UserStatus::Invited,
        password_hash: None,
        created_at: tenant.created_at,
    };
    let setup = OneTimeToken {
        hash: Secret::generate("st").hash,
        tenant_id: tenant.id,
        owner: Account::Staff(user.id),
        purpose: TokenPurpose::Setup,
        expires_at: tenant.created_at + HOUR,
    };
    stores
        .staff
        .create_tenant_with_owner(&tenant, &user, &setup, &[created_event(&tenant)])
        .await
        .expect("create tenant with owner");
    Owner {
        tenant,
        user,
        setup,
    }
}

pub(crate) fn session_for(user: &StaffUser, now: time::OffsetDateTime) -> (Session, RefreshToken) {
    let session = Session {
        id: SessionId::new(),
        tenant_id: user.tenant_id,
        owner: Account::Staff(user.id),
        created_at: now,
        last_used_at: now,
        expires_at: now + HOUR,
        revoked_at: None,
    };
    let refresh = refresh_for(&session, now);
    (session, refresh)
}

pub(crate) fn refresh_for(session: &Session, now: time::OffsetDateTime) -> RefreshToken {
    RefreshToken {
        hash: Secret::generate("rt").hash,
        tenant_id: session.tenant_id,
        session_id: session.id,
        issued_at: now,
        expires_at: now + HOUR,
        used_at: None,
    }
}

pub(crate) fn a_hash() -> StoredHash {
    StoredHash::from_stored("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY".into())
        .expect("a PHC string")
}

pub async fn tenant_with_owner_is_created_atomically(stores: &Stores) {
    let o = tenant_with_owner(stores, "owned").await;
    assert_eq!(
        stores
            .staff
            .get_user(o.tenant.id, o.user.id)
            .await
            .expect("owner"),
        o.user
    );
    assert_eq!(
        stores
            .staff
            .find_user_by_email(o.tenant.id, &o.user.email)
            .await
            .expect("by email")
            .id,
        o.user.id
    );
    assert_eq!(
        stores.tenants.get(o.tenant.id).await.expect("tenant"),
        o.tenant
    );
    // Same slug again: nothing of the second attempt is written.
    let mut again = tenant(o.tenant.slug.as_str());
    again.id = TenantId::new();
    let user = StaffUser {
        id: UserId::new(),
        tenant_id: again.id,
        ..o.user.clone()
    };
    let setup = OneTimeToken {
        hash: Secret::generate("st").hash,
        tenant_id: again.id,
        owner: Account::Staff(user.id),
        ..o.setup.clone()
    };
    let err = stores
        .staff
        .create_tenant_with_owner(&again, &user, &setup, &[])
        .await
        .expect_err("slug taken");
    assert!(err.is_conflict_on(TENANT_SLUG_CONSTRAINT), "{err:?}");
    assert!(matches!(
        stores.staff.get_user(again.id, user.id).await,
        Err(StoreError::NotFound)
    ));
    let now = SystemClock.now();
    assert!(matches!(
        stores
            .staff
            .find_one_time_token(&setup.hash, TokenPurpose::Setup, now)
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn setup_token_is_found_only_while_unused_and_unexpired(stores: &Stores) {
    let o = tenant_with_owner(stores, "tok").await;
    let before = o.setup.expires_at - time::Duration::microseconds(1);
    assert_eq!(
        stores
            .staff
            .find_one_time_token(&o.setup.hash, TokenPurpose::Setup, before)
            .await
            .expect("valid"),
        o.setup
    );
    assert!(matches!(
        stores
            .staff
            .find_one_time_token(&o.setup.hash, TokenPurpose::Setup, o.setup.expires_at)
            .await,
        Err(StoreError::NotFound)
    ));
    let unknown = Secret::generate("st").hash;
    assert!(matches!(
        stores
            .staff
            .find_one_time_token(&unknown, TokenPurpose::Setup, before)
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn activation_consumes_the_token_exactly_once(stores: &Stores) {
    let o = tenant_with_owner(stores, "act").await;
    let now = SystemClock.now();
    let (session, refresh) = session_for(&o.user, now);
    stores
        .staff
        .activate_with_token(&o.setup, &a_hash(), &session, &refresh, &[])
        .await
        .expect("activate");
    let user = stores
        .staff
        .get_user(o.tenant.id, o.user.id)
        .await
        .expect("user");
    assert_eq!(user.status, UserStatus::Active);
    assert_eq!(user.password_hash, Some(a_hash()));
    assert_eq!(
        stores
            .sessions
            .get_session(o.tenant.id, session.id)
            .await
            .expect("session"),
        session
    );
    assert_eq!(
        stores
            .sessions
            .find_refresh_token(&refresh.hash)
            .await
            .expect("refresh"),
        refresh
    );
    let (s2, r2) = session_for(&o.user, now);
    let err = stores
        .staff
        .activate_with_token(&o.setup, &a_hash(), &s2, &r2, &[])
        .await
        .expect_err("second use");
    assert!(err.is_conflict_on(TOKEN_ALREADY_USED), "{err:?}");
    assert!(
        matches!(
            stores.sessions.get_session(o.tenant.id, s2.id).await,
            Err(StoreError::NotFound)
        ),
        "nothing of the refused use is written"
    );
    assert!(matches!(
        stores
            .staff
            .find_one_time_token(&o.setup.hash, TokenPurpose::Setup, now)
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn refresh_rotation_spends_the_old_token_once(stores: &Stores) {
    let o = tenant_with_owner(stores, "rot").await;
    let now = SystemClock.now();
    let (session, first) = session_for(&o.user, now);
    stores
        .sessions
        .start_session(&session, &first, &[])
        .await
        .expect("start");
    let later = now + time::Duration::minutes(5);
    let second = refresh_for(&session, later);
    stores
        .sessions
        .rotate_refresh_token(o.tenant.id, &first.hash, &second)
        .await
        .expect("rotate");
    let spent = stores
        .sessions
        .find_refresh_token(&first.hash)
        .await
        .expect("old still known");
    assert_eq!(spent.used_at, Some(later));
    let third = refresh_for(&session, later);
    let err = stores
        .sessions
        .rotate_refresh_token(o.tenant.id, &first.hash, &third)
        .await
        .expect_err("spent");
    assert!(err.is_conflict_on(TOKEN_ALREADY_USED), "{err:?}");
    assert!(matches!(
        stores.sessions.find_refresh_token(&third.hash).await,
        Err(StoreError::NotFound)
    ));
    let moved = stores
        .sessions
        .get_session(o.tenant.id, session.id)
        .await
        .expect("session");
    assert_eq!(
        (moved.last_used_at, moved.expires_at),
        (later, second.expires_at)
    );
}

pub async fn concurrent_rotations_of_one_refresh_token_let_exactly_one_win(stores: &Stores) {
    let o = tenant_with_owner(stores, "race").await;
    let now = SystemClock.now();
    let (session, first) = session_for(&o.user, now);
    stores
        .sessions
        .start_session(&session, &first, &[])
        .await
        .expect("start");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let sessions = stores.sessions.clone();
        let next = refresh_for(&session, now);
        let old = first.hash;
        let tenant = o.tenant.id;
        tasks.spawn(async move { sessions.rotate_refresh_token(tenant, &old, &next).await });
    }
    let (mut won, mut lost) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(()) => won += 1,
            Err(e) if e.is_conflict_on(TOKEN_ALREADY_USED) => lost += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((won, lost), (1, 9));
}

pub async fn revoked_and_expired_sessions_are_not_active(stores: &Stores) {
    let o = tenant_with_owner(stores, "rev").await;
    let now = SystemClock.now();
    let (a, ra) = session_for(&o.user, now);
    let (b, rb) = session_for(&o.user, now);
    stores
        .sessions
        .start_session(&a, &ra, &[])
        .await
        .expect("a");
    stores
        .sessions
        .start_session(&b, &rb, &[])
        .await
        .expect("b");
    let listed: Vec<SessionId> = stores
        .sessions
        .list_active_sessions(o.tenant.id, Account::Staff(o.user.id), now)
        .await
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![b.id, a.id], "newest first");
    let at = now + time::Duration::seconds(1);
    stores
        .sessions
        .revoke_session(o.tenant.id, a.id, at, &[])
        .await
        .expect("revoke");
    stores
        .sessions
        .revoke_session(o.tenant.id, a.id, at + HOUR, &[])
        .await
        .expect("idempotent");
    assert_eq!(
        stores
            .sessions
            .get_session(o.tenant.id, a.id)
            .await
            .expect("a")
            .revoked_at,
        Some(at),
        "first revocation time kept"
    );
    let listed: Vec<SessionId> = stores
        .sessions
        .list_active_sessions(o.tenant.id, Account::Staff(o.user.id), now)
        .await
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![b.id]);
    assert!(
        stores
            .sessions
            .list_active_sessions(o.tenant.id, Account::Staff(o.user.id), b.expires_at)
            .await
            .expect("list")
            .is_empty()
    );
}

pub async fn tenant_b_cannot_read_tenant_a_users_or_sessions(stores: &Stores) {
    let a = tenant_with_owner(stores, "iso-a").await;
    let b = tenant_with_owner(stores, "iso-b").await;
    let now = SystemClock.now();
    let (session, refresh) = session_for(&a.user, now);
    stores
        .sessions
        .start_session(&session, &refresh, &[])
        .await
        .expect("start");
    assert!(matches!(
        stores.staff.get_user(b.tenant.id, a.user.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        stores
            .staff
            .find_user_by_email(b.tenant.id, &a.user.email)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        stores.sessions.get_session(b.tenant.id, session.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        stores
            .sessions
            .revoke_session(b.tenant.id, session.id, now, &[])
            .await,
        Err(StoreError::NotFound)
    ));
    let next = refresh_for(&session, now);
    assert!(
        stores
            .sessions
            .rotate_refresh_token(b.tenant.id, &refresh.hash, &next)
            .await
            .is_err()
    );
    assert!(
        stores
            .sessions
            .list_active_sessions(b.tenant.id, Account::Staff(a.user.id), now)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        stores
            .sessions
            .get_session(a.tenant.id, session.id)
            .await
            .expect("a's own")
            .is_active(now)
    );
}

/// What authorises a staff request, in one read: the session as stored, the user's role and
/// status, the shop's MFA facts; a session of another shop is not found, and a user that is
/// not the shop's is `None`.
pub async fn staff_access_reads_the_session_user_and_mfa_facts_at_once(stores: &Stores) {
    let a = tenant_with_owner(stores, "access-a").await;
    let b = tenant_with_owner(stores, "access-b").await;
    let now = SystemClock.now();
    let (session, refresh) = session_for(&a.user, now);
    stores
        .sessions
        .start_session(&session, &refresh, &[])
        .await
        .expect("start");
    let access = stores
        .sessions
        .staff_access(a.tenant.id, session.id, a.user.id)
        .await
        .expect("access");
    assert_eq!(
        access.session,
        stores
            .sessions
            .get_session(a.tenant.id, session.id)
            .await
            .expect("session")
    );
    assert_eq!(access.user, Some((a.user.role, a.user.status)));
    assert_eq!(
        access.mfa,
        stores
            .mfa
            .staff_mfa_status(a.tenant.id, a.user.id)
            .await
            .expect("mfa")
    );
    let foreign_user = stores
        .sessions
        .staff_access(a.tenant.id, session.id, b.user.id)
        .await
        .expect("access");
    assert_eq!(
        foreign_user.user, None,
        "another shop's user is nobody here"
    );
    assert!(matches!(
        stores
            .sessions
            .staff_access(b.tenant.id, session.id, a.user.id)
            .await,
        Err(StoreError::NotFound)
    ));
    // MFA counts once confirmed only; a revoked session reads as revoked.
    let (t, me) = (a.tenant.id, Account::Staff(a.user.id));
    let enrolled = || async {
        stores
            .sessions
            .staff_access(t, session.id, a.user.id)
            .await
            .expect("access")
            .mfa
            .enrolled
    };
    stores
        .mfa
        .begin_mfa(t, me, &crate::staff::unconfirmed(1, now))
        .await
        .expect("begin");
    assert!(!enrolled().await, "an enrolment not confirmed is no MFA");
    stores
        .mfa
        .confirm_mfa(t, me, 100, &[[7; 32]], now, &[])
        .await
        .expect("confirm");
    assert!(enrolled().await);
    stores
        .sessions
        .revoke_session(t, session.id, now, &[])
        .await
        .expect("revoke");
    let revoked = stores
        .sessions
        .staff_access(t, session.id, a.user.id)
        .await
        .expect("access");
    assert!(!revoked.session.is_active(now + time::Duration::seconds(1)));
}

pub async fn signing_key_rotation_retires_the_previous_key(stores: &Stores) {
    let t1 = time::macros::datetime!(2026-11-21 10:00 UTC);
    let t2 = t1 + HOUR;
    let k1 = StoredSigningKey {
        kid: "k_one".into(),
        sealed_seed: vec![1, 2, 3],
        created_at: t1,
        retired_at: None,
    };
    let k2 = StoredSigningKey {
        kid: "k_two".into(),
        sealed_seed: vec![4, 5, 6],
        created_at: t2,
        retired_at: None,
    };
    stores
        .keys
        .rotate_signing_key(&k1)
        .await
        .expect("first key");
    stores
        .keys
        .rotate_signing_key(&k2)
        .await
        .expect("second key");
    let keys = stores.keys.list_signing_keys().await.expect("list");
    assert_eq!(
        keys,
        vec![
            k2.clone(),
            StoredSigningKey {
                retired_at: Some(t2),
                ..k1
            }
        ]
    );
}

pub async fn appended_events_are_listed_for_their_tenant_only(stores: &Stores) {
    let (a, created) = create(stores, &unique_slug("append-a")).await;
    let (b, _) = create(stores, &unique_slug("append-b")).await;
    let failed = NewEvent::new(
        a.id,
        "security.login_failed",
        &serde_json::json!({"n": 1}),
        SystemClock.now(),
    )
    .expect("payload");
    stores
        .events
        .append(std::slice::from_ref(&failed))
        .await
        .expect("append");
    let a_log: Vec<EventId> = stores
        .events
        .list(a.id, PageRequest::default(), None)
        .await
        .expect("a")
        .items
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(a_log, vec![created.id, failed.id]);
    assert!(matches!(
        stores.events.get(b.id, failed.id).await,
        Err(StoreError::NotFound)
    ));
    let filtered = |prefix: &'static str| {
        let events = stores.events.clone();
        async move {
            events
                .list(a.id, PageRequest::default(), Some(prefix))
                .await
                .expect("filtered")
                .items
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(filtered("security.").await, vec![failed.id]);
    assert!(filtered("security.login_failedx").await.is_empty());
    assert!(filtered("%").await.is_empty(), "no wildcard matching");
}

// ---- login throttling ----

pub(crate) const WINDOW: time::Duration = time::Duration::seconds(900);

pub(crate) fn limit_of(key: ThrottleKey, max: u32) -> ThrottleLimit {
    ThrottleLimit {
        key,
        max,
        window: WINDOW,
    }
}

pub(crate) fn reserved(a: &Attempt) -> bool {
    matches!(a, Attempt::Reserved { .. })
}

pub async fn login_reservations_stop_at_the_limit_and_reopen_as_the_window_slides(stores: &Stores) {
    let t0 = time::macros::datetime!(2026-11-21 10:00 UTC);
    let key = ThrottleKey::account(&unique_slug("slide"), "a@b.test");
    let limits = [limit_of(key, 3)];
    for i in 0..3 {
        let a = stores
            .throttle
            .reserve(&limits, t0 + time::Duration::seconds(i))
            .await
            .expect("reserve");
        assert!(reserved(&a), "attempt {i}");
    }
    let t3 = t0 + time::Duration::seconds(3);
    assert_eq!(
        stores.throttle.reserve(&limits, t3).await.expect("reserve"),
        Attempt::Locked { until: t0 + WINDOW }
    );
    // Refused attempts record nothing, so the lock does not grow.
    let just_before = t0 + WINDOW - time::Duration::microseconds(1);
    assert_eq!(
        stores
            .throttle
            .reserve(&limits, just_before)
            .await
            .expect("reserve"),
        Attempt::Locked { until: t0 + WINDOW }
    );
    assert!(
        reserved(
            &stores
                .throttle
                .reserve(&limits, t0 + WINDOW)
                .await
                .expect("reserve")
        ),
        "t0 left the window"
    );
    assert_eq!(
        stores
            .throttle
            .prune(t0 + WINDOW + WINDOW)
            .await
            .expect("prune"),
        4
    );
}

pub async fn a_successful_login_clears_the_account_but_not_the_address(stores: &Stores) {
    let now = time::macros::datetime!(2026-11-21 10:00 UTC);
    let account = ThrottleKey::account(&unique_slug("clear"), "a@b.test");
    let ip = ThrottleKey::address("login", std::net::IpAddr::from([192, 0, 2, 1]));
    let limits = [limit_of(account, 3), limit_of(ip, 5)];
    for _ in 0..2 {
        assert!(reserved(
            &stores
                .throttle
                .reserve(&limits, now)
                .await
                .expect("failure")
        ));
    }
    let Attempt::Reserved { id: ok, remaining } = stores
        .throttle
        .reserve(&limits, now)
        .await
        .expect("reserve")
    else {
        panic!("third attempt is within the limit")
    };
    assert_eq!(remaining, 0, "the third of three attempts leaves none");
    stores
        .throttle
        .succeed(ok, &account)
        .await
        .expect("succeed");
    // The account starts afresh; the address keeps its two failures (2 + 3 = 5 = its limit).
    for _ in 0..3 {
        assert!(reserved(
            &stores
                .throttle
                .reserve(&limits, now)
                .await
                .expect("reserve")
        ));
    }
    let locked = stores
        .throttle
        .reserve(&limits, now)
        .await
        .expect("reserve");
    assert!(matches!(locked, Attempt::Locked { .. }), "{locked:?}");
    let other_account = [
        limit_of(ThrottleKey::account("other", "c@d.test"), 3),
        limit_of(ip, 5),
    ];
    assert!(
        matches!(
            stores
                .throttle
                .reserve(&other_account, now)
                .await
                .expect("reserve"),
            Attempt::Locked { .. }
        ),
        "the address limit binds every account"
    );
}

pub async fn concurrent_login_reservations_never_exceed_the_limit(stores: &Stores) {
    let now = time::macros::datetime!(2026-11-21 10:00 UTC);
    let key = ThrottleKey::account(&unique_slug("race"), "a@b.test");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let throttle = stores.throttle.clone();
        tasks.spawn(async move { throttle.reserve(&[limit_of(key, 5)], now).await });
    }
    let mut granted = 0;
    while let Some(r) = tasks.join_next().await {
        if reserved(&r.expect("task").expect("reserve")) {
            granted += 1;
        }
    }
    assert_eq!(granted, 5);
}
