//! Finding 9: password-reset requests are throttled per account (3 per 3600 s by default) and
//! per client address and shop (20), while every request is answered 202 alike.

use keel_testkit::{Backend, backend_tests, spawn_app};

backend_tests! {
    async fn a_flood_of_reset_requests_for_one_account_issues_three_tokens(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, tokens) = app.owner_with_tokens("flood").await;
        for _ in 0..10 {
            let res = app.post_json("/v1/auth/password-reset", &serde_json::json!({"tenant": owner.slug, "email": owner.email})).await;
            assert_eq!(res.status(), 202);
        }
        let issued = app.events_of(&tokens.access_token, "staff_user.password_reset_requested").await;
        assert_eq!(issued.len(), 3, "three per account per window");
    }

    async fn one_address_spraying_reset_requests_is_stopped_at_its_limit(backend: Backend) {
        let app = spawn_app(backend).await;
        let (owner, tokens) = app.owner_with_tokens("spray").await;
        for i in 0..20 {
            let res = app.post_json("/v1/auth/password-reset", &serde_json::json!({"tenant": owner.slug, "email": format!("nobody{i}@nowhere.test")})).await;
            assert_eq!(res.status(), 202);
        }
        // The address used its twenty: a request for a real account is answered alike and
        // does nothing.
        let res = app.post_json("/v1/auth/password-reset", &serde_json::json!({"tenant": owner.slug, "email": owner.email})).await;
        assert_eq!(res.status(), 202);
        assert!(app.events_of(&tokens.access_token, "staff_user.password_reset_requested").await.is_empty());
        // Customers of the shop's storefront are counted on their own side.
        let (owner2, pk) = app.shop_with_storefront("spray-store").await;
        let signed = app.store_post(&pk, "/v1/store/customers", serde_json::json!({"email": "rey@spray.test", "password": "saffron-glacier-tulip-8832"})).await;
        assert_eq!(signed.status(), 201);
        for _ in 0..5 {
            assert_eq!(app.store_post(&pk, "/v1/store/auth/password-reset", serde_json::json!({"email": "rey@spray.test"})).await.status(), 202);
        }
        assert_eq!(app.events_of(&owner2.access_token, "customer.password_reset_requested").await.len(), 3);
    }
}
