//! Staff administration (invitations, roles, the last owner) and second factors (TOTP, backup
//! codes, MFA tokens).

#[allow(clippy::wildcard_imports)]
use super::*;

// ---- staff administration ----

pub(crate) async fn invite(stores: &Stores, tenant: &Tenant, email: &str, role: Role) -> StaffUser {
    let user = StaffUser {
        id: UserId::new(),
        tenant_id: tenant.id,
        email: Email::parse(email).expect("valid email"),
        role,
        status: UserStatus::Invited,
        password_hash: None,
        created_at: SystemClock.now(),
    };
    let token = OneTimeToken {
        hash: Secret::generate("it").hash,
        tenant_id: tenant.id,
        owner: Account::Staff(user.id),
        purpose: TokenPurpose::Invite,
        expires_at: user.created_at + HOUR,
    };
    stores
        .staff
        .invite_user(&user, &token, &[], None)
        .await
        .expect("invite");
    assert_eq!(
        stores
            .staff
            .find_one_time_token(&token.hash, TokenPurpose::Invite, user.created_at)
            .await
            .expect("invite token"),
        token
    );
    user
}

pub async fn invited_users_are_listed_and_emails_are_unique_per_tenant(stores: &Stores) {
    let o = tenant_with_owner(stores, "inv").await;
    let a = invite(stores, &o.tenant, "a@shop.test", Role::Admin).await;
    let b = invite(stores, &o.tenant, "b@shop.test", Role::Viewer).await;
    let first = stores
        .staff
        .list_users(o.tenant.id, PageRequest::first(limit(2)))
        .await
        .expect("page");
    assert_eq!(
        first.items.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![o.user.id, a.id]
    );
    let rest = stores
        .staff
        .list_users(
            o.tenant.id,
            PageRequest {
                limit: limit(2),
                after: first.next_cursor,
            },
        )
        .await
        .expect("page");
    assert_eq!(
        rest.items.iter().map(|u| u.id).collect::<Vec<_>>(),
        vec![b.id]
    );
    assert_eq!(rest.next_cursor, None);
    let dup = StaffUser {
        id: UserId::new(),
        ..a.clone()
    };
    let token = OneTimeToken {
        hash: Secret::generate("it").hash,
        tenant_id: o.tenant.id,
        owner: Account::Staff(dup.id),
        purpose: TokenPurpose::Invite,
        expires_at: dup.created_at + HOUR,
    };
    let err = stores
        .staff
        .invite_user(&dup, &token, &[], None)
        .await
        .expect_err("same email");
    assert!(err.is_conflict_on(STAFF_EMAIL_CONSTRAINT), "{err:?}");
    // The same email in another tenant is a different account.
    let other = tenant_with_owner(stores, "inv2").await;
    invite(stores, &other.tenant, "a@shop.test", Role::Staff).await;
    let b_list = stores
        .staff
        .list_users(other.tenant.id, PageRequest::default())
        .await
        .expect("list");
    assert_eq!(b_list.items.len(), 2, "tenant lists do not mix");
}

pub async fn role_changes_follow_the_owner_rules_and_disabling_ends_sessions(stores: &Stores) {
    let o = tenant_with_owner(stores, "roles").await;
    let now = SystemClock.now();
    let admin = invite(stores, &o.tenant, "admin@shop.test", Role::Admin).await;
    let staff = invite(stores, &o.tenant, "staff@shop.test", Role::Staff).await;
    let changed = stores
        .staff
        .change_role(
            o.tenant.id,
            staff.id,
            Role::Admin,
            Some(Role::Viewer),
            now,
            &[],
        )
        .await
        .expect("store");
    assert_eq!(changed.expect("admin may demote staff").role, Role::Viewer);
    let refused = stores
        .staff
        .change_role(
            o.tenant.id,
            o.user.id,
            Role::Admin,
            Some(Role::Staff),
            now,
            &[],
        )
        .await
        .expect("store");
    assert_eq!(refused, Err(RoleChangeError::OwnerOnly));
    // The owner is still active (the owner was only invited; activate to count as an owner).
    let (session, refresh) = session_for(&o.user, now);
    stores
        .staff
        .activate_with_token(&o.setup, &a_hash(), &session, &refresh, &[])
        .await
        .expect("activate");
    let last = stores
        .staff
        .change_role(
            o.tenant.id,
            o.user.id,
            Role::Owner,
            Some(Role::Admin),
            now,
            &[],
        )
        .await
        .expect("store");
    assert_eq!(last, Err(RoleChangeError::LastOwner));
    assert_eq!(
        stores
            .staff
            .get_user(o.tenant.id, o.user.id)
            .await
            .expect("owner")
            .role,
        Role::Owner,
        "nothing changed"
    );
    // Disabling the admin ends their sessions at once.
    let (s, r) = session_for(&admin, now);
    stores
        .sessions
        .start_session(&s, &r, &[])
        .await
        .expect("start");
    let disabled = stores
        .staff
        .change_role(o.tenant.id, admin.id, Role::Owner, None, now, &[])
        .await
        .expect("store")
        .expect("allowed");
    assert_eq!(disabled.status, UserStatus::Disabled);
    assert!(
        !stores
            .sessions
            .get_session(o.tenant.id, s.id)
            .await
            .expect("session")
            .is_active(now)
    );
    let other = tenant_with_owner(stores, "roles2").await;
    assert!(
        matches!(
            stores
                .staff
                .change_role(
                    other.tenant.id,
                    staff.id,
                    Role::Owner,
                    Some(Role::Admin),
                    now,
                    &[]
                )
                .await,
            Err(StoreError::NotFound)
        ),
        "another tenant's user is not found"
    );
}

pub async fn concurrent_demotions_cannot_remove_the_last_owner(stores: &Stores) {
    let o = tenant_with_owner(stores, "coup").await;
    let now = SystemClock.now();
    let (session, refresh) = session_for(&o.user, now);
    stores
        .staff
        .activate_with_token(&o.setup, &a_hash(), &session, &refresh, &[])
        .await
        .expect("activate");
    let second = invite(stores, &o.tenant, "second@shop.test", Role::Owner).await;
    let second_token = OneTimeToken {
        hash: Secret::generate("it").hash,
        tenant_id: o.tenant.id,
        owner: Account::Staff(second.id),
        purpose: TokenPurpose::Invite,
        expires_at: now + HOUR,
    };
    // Activate the second owner through a fresh invite token row.
    stores
        .staff
        .invite_user(
            &StaffUser {
                id: UserId::new(),
                email: Email::parse("spare@shop.test").expect("email"),
                ..second.clone()
            },
            &second_token,
            &[],
            None,
        )
        .await
        .expect("spare");
    let spare = stores
        .staff
        .find_one_time_token(&second_token.hash, TokenPurpose::Invite, now)
        .await
        .expect("token");
    let (s2, r2) = session_for(
        &StaffUser {
            id: spare.staff_user().expect("a staff token"),
            ..second.clone()
        },
        now,
    );
    stores
        .staff
        .activate_with_token(&spare, &a_hash(), &s2, &r2, &[])
        .await
        .expect("activate spare owner");
    let owners = [o.user.id, spare.staff_user().expect("a staff token")];
    let mut tasks = tokio::task::JoinSet::new();
    for target in owners {
        let staff = stores.staff.clone();
        let tenant = o.tenant.id;
        tasks.spawn(async move {
            staff
                .change_role(tenant, target, Role::Owner, Some(Role::Admin), now, &[])
                .await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        outcomes.push(r.expect("task").expect("store"));
    }
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Err(RoleChangeError::LastOwner))
            .count(),
        1
    );
    let remaining = stores
        .staff
        .list_users(o.tenant.id, PageRequest::default())
        .await
        .expect("list");
    assert_eq!(
        remaining
            .items
            .iter()
            .filter(|u| u.role == Role::Owner && u.status == UserStatus::Active)
            .count(),
        1
    );
}

// ---- MFA ----

pub(crate) fn unconfirmed(secret: u8, at_time: time::OffsetDateTime) -> StoredMfa {
    StoredMfa {
        sealed_secret: vec![secret; 8],
        created_at: at_time,
        confirmed_at: None,
        last_used_step: None,
    }
}

pub async fn mfa_is_confirmed_once_and_each_step_is_used_once(stores: &Stores) {
    let o = tenant_with_owner(stores, "mfa").await;
    let now = SystemClock.now();
    let (t, u) = (o.tenant.id, Account::Staff(o.user.id));
    assert_eq!(stores.mfa.get_mfa(t, u).await.expect("get"), None);
    stores
        .mfa
        .begin_mfa(t, u, &unconfirmed(1, now))
        .await
        .expect("begin");
    stores
        .mfa
        .begin_mfa(t, u, &unconfirmed(2, now))
        .await
        .expect("begin again replaces");
    assert_eq!(
        stores.mfa.get_mfa(t, u).await.expect("get"),
        Some(unconfirmed(2, now))
    );
    assert!(
        !stores.mfa.use_totp_step(t, u, 50).await.expect("use"),
        "unconfirmed enrolments accept no code"
    );
    stores
        .mfa
        .confirm_mfa(t, u, 100, &[[7; 32]], now, &[])
        .await
        .expect("confirm");
    let err = stores
        .mfa
        .confirm_mfa(t, u, 101, &[], now, &[])
        .await
        .expect_err("confirmed once");
    assert!(err.is_conflict_on(MFA_ALREADY_ENABLED), "{err:?}");
    let err = stores
        .mfa
        .begin_mfa(t, u, &unconfirmed(3, now))
        .await
        .expect_err("enabled");
    assert!(err.is_conflict_on(MFA_ALREADY_ENABLED), "{err:?}");
    let enrolled = stores
        .mfa
        .get_mfa(t, u)
        .await
        .expect("get")
        .expect("enrolled");
    assert_eq!(
        (
            enrolled.confirmed_at,
            enrolled.last_used_step,
            enrolled.sealed_secret
        ),
        (Some(now), Some(100), vec![2; 8])
    );
    assert!(
        !stores.mfa.use_totp_step(t, u, 100).await.expect("use"),
        "the confirming step is spent"
    );
    assert!(stores.mfa.use_totp_step(t, u, 101).await.expect("use"));
    assert!(
        !stores.mfa.use_totp_step(t, u, 101).await.expect("use"),
        "replay"
    );
    assert!(
        !stores.mfa.use_totp_step(t, u, 99).await.expect("use"),
        "older step"
    );
    stores.mfa.disable_mfa(t, u, &[]).await.expect("disable");
    assert_eq!(stores.mfa.get_mfa(t, u).await.expect("get"), None);
    assert!(
        !stores
            .mfa
            .use_backup_code(t, u, &[7; 32], now)
            .await
            .expect("use"),
        "codes go with it"
    );
}

pub async fn backup_codes_are_single_use_and_tenant_scoped(stores: &Stores) {
    let a = tenant_with_owner(stores, "bk-a").await;
    let b = tenant_with_owner(stores, "bk-b").await;
    let now = SystemClock.now();
    stores
        .mfa
        .begin_mfa(a.tenant.id, Account::Staff(a.user.id), &unconfirmed(1, now))
        .await
        .expect("begin");
    let codes: Vec<[u8; 32]> = (1..=10).map(|i| [i; 32]).collect();
    stores
        .mfa
        .confirm_mfa(a.tenant.id, Account::Staff(a.user.id), 1, &codes, now, &[])
        .await
        .expect("confirm");
    assert!(
        !stores
            .mfa
            .use_backup_code(b.tenant.id, Account::Staff(a.user.id), &codes[0], now)
            .await
            .expect("use"),
        "other tenant"
    );
    assert!(
        stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &codes[0], now)
            .await
            .expect("use")
    );
    assert!(
        !stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &codes[0], now)
            .await
            .expect("use"),
        "single use"
    );
    assert!(
        !stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &[99; 32], now)
            .await
            .expect("use"),
        "unknown"
    );
    assert!(
        stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &codes[9], now)
            .await
            .expect("use")
    );
    let fresh = [[42u8; 32]];
    stores
        .mfa
        .replace_backup_codes(a.tenant.id, Account::Staff(a.user.id), &fresh, &[])
        .await
        .expect("replace");
    assert!(
        !stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &codes[5], now)
            .await
            .expect("use"),
        "old codes are gone"
    );
    assert!(
        stores
            .mfa
            .use_backup_code(a.tenant.id, Account::Staff(a.user.id), &fresh[0], now)
            .await
            .expect("use")
    );
    assert!(
        matches!(
            stores
                .mfa
                .replace_backup_codes(b.tenant.id, Account::Staff(b.user.id), &fresh, &[])
                .await,
            Err(StoreError::NotFound)
        ),
        "no enrolment"
    );
}

pub async fn an_mfa_token_dies_at_its_failure_limit_and_completes_once(stores: &Stores) {
    let o = tenant_with_owner(stores, "mfatok").await;
    let now = SystemClock.now();
    let token = |purpose| OneTimeToken {
        hash: Secret::generate("mt").hash,
        tenant_id: o.tenant.id,
        owner: Account::Staff(o.user.id),
        purpose,
        expires_at: now + HOUR,
    };
    let doomed = token(TokenPurpose::Mfa);
    stores.mfa.create_mfa_token(&doomed).await.expect("create");
    for i in 1..=4 {
        assert_eq!(
            stores
                .mfa
                .fail_mfa_token(&doomed.hash, 5, now)
                .await
                .expect("fail"),
            i
        );
    }
    let alive = stores
        .staff
        .find_one_time_token(&doomed.hash, TokenPurpose::Mfa, now)
        .await;
    assert!(alive.is_ok(), "alive after 4: {alive:?}");
    assert_eq!(
        stores
            .mfa
            .fail_mfa_token(&doomed.hash, 5, now)
            .await
            .expect("fail"),
        5
    );
    assert!(matches!(
        stores
            .staff
            .find_one_time_token(&doomed.hash, TokenPurpose::Mfa, now)
            .await,
        Err(StoreError::NotFound)
    ));
    let (s, r) = session_for(&o.user, now);
    let err = stores
        .mfa
        .complete_mfa_login(&doomed, &s, &r, &[])
        .await
        .expect_err("dead token");
    assert!(err.is_conflict_on(TOKEN_ALREADY_USED), "{err:?}");
    let good = token(TokenPurpose::Mfa);
    stores.mfa.create_mfa_token(&good).await.expect("create");
    stores
        .mfa
        .complete_mfa_login(&good, &s, &r, &[])
        .await
        .expect("complete");
    assert!(
        stores
            .sessions
            .get_session(o.tenant.id, s.id)
            .await
            .expect("session")
            .is_active(now)
    );
    let (s2, r2) = session_for(&o.user, now);
    let err = stores
        .mfa
        .complete_mfa_login(&good, &s2, &r2, &[])
        .await
        .expect_err("spent");
    assert!(err.is_conflict_on(TOKEN_ALREADY_USED), "{err:?}");
}
