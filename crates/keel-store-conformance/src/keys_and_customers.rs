//! API keys, and customers beside staff (their sessions, second factors and passwords never
//! mix with staff's).

#[allow(clippy::wildcard_imports)]
use super::*;

// ---- API keys ----

pub(crate) fn api_key(
    tenant: TenantId,
    name: &str,
    expires_at: Option<time::OffsetDateTime>,
) -> keel_identity::domain::api_key::ApiKey {
    let material =
        keel_identity::domain::api_key::generate(keel_identity::domain::api_key::KeyKind::Secret);
    keel_identity::domain::api_key::ApiKey {
        id: keel_identity::domain::api_key::ApiKeyId::new(),
        tenant_id: tenant,
        kind: keel_identity::domain::api_key::KeyKind::Secret,
        name: name.into(),
        lookup: material.lookup,
        secret_hash: material.hash,
        scopes: vec![
            keel_identity::domain::access::Permission::OrdersRead,
            keel_identity::domain::access::Permission::AuditRead,
        ],
        allowed_origins: Vec::new(),
        created_at: time::macros::datetime!(2026-11-21 10:00 UTC),
        expires_at,
        last_used_at: None,
        revoked_at: None,
    }
}

pub async fn api_keys_are_found_by_lookup_and_listed_per_tenant(stores: &Stores) {
    let (a, _) = create(stores, &unique_slug("keys-a")).await;
    let (b, _) = create(stores, &unique_slug("keys-b")).await;
    let k1 = api_key(a.id, "one", None);
    let k2 = api_key(
        a.id,
        "two",
        Some(time::macros::datetime!(2027-01-01 0:00 UTC)),
    );
    stores
        .api_keys
        .create_api_key(&k1, &[])
        .await
        .expect("create");
    stores
        .api_keys
        .create_api_key(&k2, &[])
        .await
        .expect("create");
    stores
        .api_keys
        .create_api_key(&api_key(b.id, "theirs", None), &[])
        .await
        .expect("create");
    assert_eq!(
        stores
            .api_keys
            .find_api_key(&k2.lookup)
            .await
            .expect("by lookup"),
        k2
    );
    assert_eq!(
        stores.api_keys.get_api_key(a.id, k1.id).await.expect("get"),
        k1
    );
    assert!(matches!(
        stores.api_keys.get_api_key(b.id, k1.id).await,
        Err(StoreError::NotFound)
    ));
    let listed: Vec<_> = stores
        .api_keys
        .list_api_keys(a.id, PageRequest::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(listed, vec![k1.id, k2.id]);
    let t = time::macros::datetime!(2026-11-22 0:00 UTC);
    stores
        .api_keys
        .touch_api_key(a.id, k1.id, t)
        .await
        .expect("touch");
    stores
        .api_keys
        .revoke_api_key(a.id, k1.id, t, &[])
        .await
        .expect("revoke");
    stores
        .api_keys
        .revoke_api_key(a.id, k1.id, t + HOUR, &[])
        .await
        .expect("idempotent");
    let k1_now = stores.api_keys.get_api_key(a.id, k1.id).await.expect("get");
    assert_eq!((k1_now.last_used_at, k1_now.revoked_at), (Some(t), Some(t)));
    assert!(matches!(
        stores.api_keys.revoke_api_key(b.id, k2.id, t, &[]).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        stores
            .api_keys
            .get_api_key(a.id, k2.id)
            .await
            .expect("get")
            .revoked_at
            .is_none(),
        "other tenant could not revoke"
    );
}

pub async fn api_key_rotation_caps_the_old_expiry_atomically(stores: &Stores) {
    let (a, _) = create(stores, &unique_slug("rotkey")).await;
    let cap = time::macros::datetime!(2026-11-22 10:00 UTC);
    let open_ended = api_key(a.id, "open", None);
    let early = api_key(a.id, "early", Some(cap - HOUR));
    stores
        .api_keys
        .create_api_key(&open_ended, &[])
        .await
        .expect("create");
    stores
        .api_keys
        .create_api_key(&early, &[])
        .await
        .expect("create");
    let n1 = api_key(a.id, "open", None);
    stores
        .api_keys
        .rotate_api_key(a.id, open_ended.id, cap, &n1, &[])
        .await
        .expect("rotate");
    assert_eq!(
        stores
            .api_keys
            .get_api_key(a.id, open_ended.id)
            .await
            .expect("old")
            .expires_at,
        Some(cap)
    );
    assert_eq!(
        stores.api_keys.get_api_key(a.id, n1.id).await.expect("new"),
        n1
    );
    let n2 = api_key(a.id, "early", None);
    stores
        .api_keys
        .rotate_api_key(a.id, early.id, cap, &n2, &[])
        .await
        .expect("rotate");
    assert_eq!(
        stores
            .api_keys
            .get_api_key(a.id, early.id)
            .await
            .expect("old")
            .expires_at,
        Some(cap - HOUR),
        "never extended"
    );
    stores
        .api_keys
        .revoke_api_key(a.id, n1.id, cap, &[])
        .await
        .expect("revoke");
    let n3 = api_key(a.id, "again", None);
    assert!(matches!(
        stores
            .api_keys
            .rotate_api_key(a.id, n1.id, cap, &n3, &[])
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(
        matches!(
            stores.api_keys.get_api_key(a.id, n3.id).await,
            Err(StoreError::NotFound)
        ),
        "nothing written"
    );
}

// ---- customers ----

pub(crate) fn customer(tenant: TenantId, email: &str) -> keel_identity::domain::customer::Customer {
    keel_identity::domain::customer::Customer {
        id: keel_identity::domain::customer::CustomerId::new(),
        tenant_id: tenant,
        email: Email::parse(email).expect("valid email"),
        password_hash: a_hash(),
        created_at: time::macros::datetime!(2026-11-21 10:00 UTC),
    }
}

pub(crate) fn customer_session(
    c: &keel_identity::domain::customer::Customer,
    now: time::OffsetDateTime,
) -> (Session, RefreshToken) {
    let session = Session {
        id: SessionId::new(),
        tenant_id: c.tenant_id,
        owner: Account::Customer(c.id),
        created_at: now,
        last_used_at: now,
        expires_at: now + HOUR,
        revoked_at: None,
    };
    let refresh = refresh_for(&session, now);
    (session, refresh)
}

pub async fn customers_sign_up_with_a_session_and_emails_are_unique_per_tenant(stores: &Stores) {
    let (a, _) = create(stores, &unique_slug("shop-a")).await;
    let (b, _) = create(stores, &unique_slug("shop-b")).await;
    let now = SystemClock.now();
    let ann = customer(a.id, "ann@example.test");
    let (s, r) = customer_session(&ann, now);
    stores
        .customers
        .sign_up_customer(&ann, &s, &r, &[])
        .await
        .expect("sign up");
    assert_eq!(
        stores
            .customers
            .get_customer(a.id, ann.id)
            .await
            .expect("get"),
        ann
    );
    assert_eq!(
        stores
            .customers
            .find_customer_by_email(a.id, &ann.email)
            .await
            .expect("by email"),
        ann
    );
    assert_eq!(
        stores
            .sessions
            .get_session(a.id, s.id)
            .await
            .expect("session")
            .owner,
        Account::Customer(ann.id)
    );
    let again = customer(a.id, "ANN@example.test");
    let (s2, r2) = customer_session(&again, now);
    let err = stores
        .customers
        .sign_up_customer(&again, &s2, &r2, &[])
        .await
        .expect_err("taken");
    assert!(err.is_conflict_on(CUSTOMER_EMAIL_CONSTRAINT), "{err:?}");
    assert!(
        matches!(
            stores.sessions.get_session(a.id, s2.id).await,
            Err(StoreError::NotFound)
        ),
        "nothing of the refused sign-up"
    );
    let elsewhere = customer(b.id, "ann@example.test");
    let (s3, r3) = customer_session(&elsewhere, now);
    stores
        .customers
        .sign_up_customer(&elsewhere, &s3, &r3, &[])
        .await
        .expect("another shop's customer");
    assert!(matches!(
        stores.customers.get_customer(b.id, ann.id).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn staff_and_customer_sessions_never_mix(stores: &Stores) {
    let o = tenant_with_owner(stores, "mix").await;
    let now = SystemClock.now();
    let (staff_session, staff_refresh) = session_for(&o.user, now);
    stores
        .sessions
        .start_session(&staff_session, &staff_refresh, &[])
        .await
        .expect("staff session");
    // A customer whose id has the same storage form as the staff user's.
    let mut twin = customer(o.tenant.id, "twin@example.test");
    twin.id = keel_identity::domain::customer::CustomerId::from_uuid(o.user.id.as_uuid());
    let (cs, cr) = customer_session(&twin, now);
    stores
        .customers
        .sign_up_customer(&twin, &cs, &cr, &[])
        .await
        .expect("customer");
    let staff_list: Vec<SessionId> = stores
        .sessions
        .list_active_sessions(o.tenant.id, Account::Staff(o.user.id), now)
        .await
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(staff_list, vec![staff_session.id]);
    let customer_list: Vec<SessionId> = stores
        .sessions
        .list_active_sessions(o.tenant.id, Account::Customer(twin.id), now)
        .await
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(customer_list, vec![cs.id]);
    // Ending a staff user's sessions (disable, password change) leaves customer sessions alone.
    stores
        .staff
        .change_role(o.tenant.id, o.user.id, Role::Owner, None, now, &[])
        .await
        .expect("store")
        .expect_err("last owner stays");
    let admin = invite(stores, &o.tenant, "admin@mix.test", Role::Admin).await;
    let mut admin_twin = customer(o.tenant.id, "admin-twin@example.test");
    admin_twin.id = keel_identity::domain::customer::CustomerId::from_uuid(admin.id.as_uuid());
    let (ats, atr) = customer_session(&admin_twin, now);
    stores
        .customers
        .sign_up_customer(&admin_twin, &ats, &atr, &[])
        .await
        .expect("customer");
    stores
        .staff
        .change_role(o.tenant.id, admin.id, Role::Owner, None, now, &[])
        .await
        .expect("store")
        .expect("disable admin");
    assert!(
        stores
            .sessions
            .get_session(o.tenant.id, ats.id)
            .await
            .expect("session")
            .is_active(now),
        "the customer's session survives"
    );
}

pub async fn staff_and_customer_mfa_never_mix(stores: &Stores) {
    let o = tenant_with_owner(stores, "mfamix").await;
    let now = SystemClock.now();
    // A customer whose id has the same storage form as the staff user's.
    let mut twin = customer(o.tenant.id, "twin@mfamix.test");
    twin.id = keel_identity::domain::customer::CustomerId::from_uuid(o.user.id.as_uuid());
    let (cs, cr) = customer_session(&twin, now);
    stores
        .customers
        .sign_up_customer(&twin, &cs, &cr, &[])
        .await
        .expect("customer");
    let (t, staff, shopper) = (
        o.tenant.id,
        Account::Staff(o.user.id),
        Account::Customer(twin.id),
    );
    stores
        .mfa
        .begin_mfa(t, staff, &unconfirmed(1, now))
        .await
        .expect("staff begins");
    stores
        .mfa
        .confirm_mfa(t, staff, 10, &[[1; 32]], now, &[])
        .await
        .expect("staff confirms");
    assert_eq!(
        stores.mfa.get_mfa(t, shopper).await.expect("get"),
        None,
        "the staff enrolment is not the customer's"
    );
    assert!(
        !stores
            .mfa
            .use_backup_code(t, shopper, &[1; 32], now)
            .await
            .expect("use"),
        "nor are its backup codes"
    );
    stores
        .mfa
        .begin_mfa(t, shopper, &unconfirmed(2, now))
        .await
        .expect("the customer begins alongside");
    stores
        .mfa
        .confirm_mfa(t, shopper, 20, &[[2; 32]], now, &[])
        .await
        .expect("the customer confirms");
    assert!(stores.mfa.use_totp_step(t, shopper, 21).await.expect("use"));
    assert!(
        stores.mfa.use_totp_step(t, staff, 11).await.expect("use"),
        "steps are spent per account"
    );
    assert!(
        stores
            .mfa
            .staff_mfa_status(t, o.user.id)
            .await
            .expect("status")
            .enrolled,
        "staff status reads the staff enrolment"
    );
    stores
        .mfa
        .disable_mfa(t, shopper, &[])
        .await
        .expect("customer disables");
    assert_eq!(stores.mfa.get_mfa(t, shopper).await.expect("get"), None);
    let kept = stores.mfa.get_mfa(t, staff).await.expect("get");
    assert!(
        kept.is_some_and(|m| m.confirmed_at.is_some()),
        "the staff enrolment survives the customer's disable"
    );
    assert!(
        stores
            .mfa
            .use_backup_code(t, staff, &[1; 32], now)
            .await
            .expect("use"),
        "and so do its backup codes"
    );
}

pub async fn a_customer_mfa_token_keeps_its_owner_and_starts_a_customer_session(stores: &Stores) {
    let o = tenant_with_owner(stores, "mfacus").await;
    let now = SystemClock.now();
    let shopper_row = customer(o.tenant.id, "shopper@mfacus.test");
    let (cs, cr) = customer_session(&shopper_row, now);
    stores
        .customers
        .sign_up_customer(&shopper_row, &cs, &cr, &[])
        .await
        .expect("customer");
    let (t, shopper) = (o.tenant.id, Account::Customer(shopper_row.id));
    let token = OneTimeToken {
        hash: Secret::generate("mt").hash,
        tenant_id: t,
        owner: shopper,
        purpose: TokenPurpose::Mfa,
        expires_at: now + HOUR,
    };
    stores.mfa.create_mfa_token(&token).await.expect("create");
    let found = stores
        .staff
        .find_one_time_token(&token.hash, TokenPurpose::Mfa, now)
        .await
        .expect("find");
    assert_eq!(found.owner, shopper);
    let (s, r) = customer_session(&shopper_row, now);
    stores
        .mfa
        .complete_mfa_login(&found, &s, &r, &[])
        .await
        .expect("complete");
    assert_eq!(
        stores
            .sessions
            .get_session(t, s.id)
            .await
            .expect("session")
            .owner,
        shopper
    );
}

pub async fn a_customer_password_change_ends_only_that_customers_other_sessions(stores: &Stores) {
    let o = tenant_with_owner(stores, "cuspw").await;
    let now = SystemClock.now();
    let (staff_session, staff_refresh) = session_for(&o.user, now);
    stores
        .sessions
        .start_session(&staff_session, &staff_refresh, &[])
        .await
        .expect("staff session");
    // A customer whose id has the same storage form as the staff user's.
    let mut twin = customer(o.tenant.id, "twin@cuspw.test");
    twin.id = keel_identity::domain::customer::CustomerId::from_uuid(o.user.id.as_uuid());
    let (keep, keep_refresh) = customer_session(&twin, now);
    stores
        .customers
        .sign_up_customer(&twin, &keep, &keep_refresh, &[])
        .await
        .expect("customer");
    let (other, other_refresh) = customer_session(&twin, now);
    stores
        .sessions
        .start_session(&other, &other_refresh, &[])
        .await
        .expect("second customer session");
    let new_hash = StoredHash::from_stored(
        "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdG5ld3NhbHQ$bmV3aGFzaG5ld2hhc2huZXdoYXNobmV3aGFzaDEy"
            .into(),
    )
    .expect("a PHC string");
    stores
        .staff
        .set_password(
            o.tenant.id,
            Account::Customer(twin.id),
            &new_hash,
            Some(keep.id),
            now,
            &[],
        )
        .await
        .expect("set");
    let changed = stores
        .customers
        .get_customer(o.tenant.id, twin.id)
        .await
        .expect("customer");
    assert_eq!(changed.password_hash, new_hash);
    let staff = stores
        .staff
        .get_user(o.tenant.id, o.user.id)
        .await
        .expect("staff");
    assert_ne!(
        staff.password_hash,
        Some(new_hash),
        "the staff twin keeps its password"
    );
    let active = |id| {
        let sessions = stores.sessions.clone();
        async move {
            sessions
                .get_session(o.tenant.id, id)
                .await
                .expect("session")
                .is_active(now)
        }
    };
    assert!(active(keep.id).await, "the kept session stays");
    assert!(!active(other.id).await, "the customer's other session ends");
    assert!(
        active(staff_session.id).await,
        "the staff twin's session is untouched"
    );
    let missing = stores
        .staff
        .set_password(
            o.tenant.id,
            Account::Customer(keel_identity::domain::customer::CustomerId::new()),
            &a_hash(),
            None,
            now,
            &[],
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
}
