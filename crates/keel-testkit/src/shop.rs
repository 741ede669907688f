//! A shop ready to sell, and a guest's cart, over real HTTP: the fixtures the order, checkout
//! and security suites share (a tee and a mug priced in USD and JPY with stock, New York and
//! Japan tax, shipping to both, two promotions).

use reqwest::{Method, StatusCode};

use crate::{TestApp, Tokens};

pub async fn json(res: reqwest::Response) -> serde_json::Value {
    res.json().await.expect("JSON body")
}

pub async fn admin(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    key: Option<&str>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("request reaches the server")
}

pub async fn created(res: reqwest::Response) -> serde_json::Value {
    let status = res.status();
    let body = json(res).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// A shop ready to sell: a tee and a mug priced in USD and JPY with stock, New York and Japan
/// tax, shipping to both, and two promotions.
#[derive(Debug)]
pub struct Shop {
    pub owner: Tokens,
    pub pk: String,
    pub tee: String,
    pub mug: String,
    pub us_shipping: String,
    pub jp_shipping: String,
}

pub async fn shop(app: &TestApp, prefix: &str, stock: i64) -> Shop {
    let (owner, pk) = app.shop_with_storefront(prefix).await;
    let post = |path: &'static str, body: serde_json::Value| {
        let t = owner.access_token.clone();
        async move { created(admin(app, &t, Method::POST, path, Some(body), None).await).await }
    };
    let product = post("/v1/admin/products", serde_json::json!({
        "title": "Tee", "handle": "tee", "status": "active",
        "variants": [
            {"sku": "TEE-S", "prices": [{"amount": 1999, "currency": "USD"}, {"amount": 2500, "currency": "JPY"}]},
            {"sku": "MUG", "title": "Mug", "prices": [{"amount": 500, "currency": "USD"}, {"amount": 800, "currency": "JPY"}]}
        ]})).await;
    let variant = |i: usize| {
        product["variants"][i]["id"]
            .as_str()
            .expect("variant id")
            .to_owned()
    };
    let (tee, mug) = (variant(0), variant(1));
    let loc = post(
        "/v1/admin/stock-locations",
        serde_json::json!({"name": "Main"}),
    )
    .await;
    for v in [&tee, &mug] {
        post("/v1/admin/inventory/adjustments", serde_json::json!({"variant": v, "location": loc["id"], "delta": stock, "reason": "received"})).await;
    }
    post(
        "/v1/admin/tax-rates",
        serde_json::json!({"country": "US", "region": "NY", "rate": "8.875"}),
    )
    .await;
    post(
        "/v1/admin/tax-rates",
        serde_json::json!({"country": "JP", "rate": "10", "shipping_taxable": false}),
    )
    .await;
    let us = post("/v1/admin/shipping-options", serde_json::json!({
        "name": "Standard", "country": "US", "amounts": [{"amount": 795, "currency": "USD"}], "free_over": [{"amount": 10000, "currency": "USD"}]})).await;
    let jp = post(
        "/v1/admin/shipping-options",
        serde_json::json!({
        "name": "EMS", "country": "JP", "amounts": [{"amount": 1200, "currency": "JPY"}]}),
    )
    .await;
    post(
        "/v1/admin/promotions",
        serde_json::json!({"code": "SAVE10", "percent": "10"}),
    )
    .await;
    post(
        "/v1/admin/promotions",
        serde_json::json!({"code": "YEN500", "amounts": [{"amount": 500, "currency": "JPY"}]}),
    )
    .await;
    Shop {
        owner,
        pk,
        tee,
        mug,
        us_shipping: us["id"].as_str().expect("id").to_owned(),
        jp_shipping: jp["id"].as_str().expect("id").to_owned(),
    }
}

/// A guest shopper's cart: its id and secret.
#[derive(Debug)]
pub struct Cart {
    pub id: String,
    pub secret: String,
}

pub async fn store(
    app: &TestApp,
    shop: &Shop,
    secret: Option<&str>,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    key: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .request(method, app.url(path))
        .header("keel-publishable-key", &shop.pk);
    if let Some(s) = secret {
        req = req.header("keel-cart-secret", s);
    }
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("request reaches the server")
}

pub async fn new_cart(app: &TestApp, shop: &Shop, currency: &str) -> Cart {
    new_cart_for(app, shop, currency, "guest@example.test").await
}

/// A guest cart for `email`.
pub async fn new_cart_for(app: &TestApp, shop: &Shop, currency: &str, email: &str) -> Cart {
    let body = created(
        store(
            app,
            shop,
            None,
            Method::POST,
            "/v1/store/carts",
            Some(serde_json::json!({"currency": currency, "email": email})),
            None,
        )
        .await,
    )
    .await;
    Cart {
        id: body["cart"]["id"].as_str().expect("id").to_owned(),
        secret: body["cart_secret"].as_str().expect("secret").to_owned(),
    }
}

pub async fn cart_call(
    app: &TestApp,
    shop: &Shop,
    cart: &Cart,
    method: Method,
    suffix: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let res = store(
        app,
        shop,
        Some(&cart.secret),
        method,
        &format!("/v1/store/carts/{}{suffix}", cart.id),
        body,
        None,
    )
    .await;
    let status = res.status();
    let body = json(res).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

pub fn ny() -> serde_json::Value {
    serde_json::json!({"name": "Ann Buyer", "line1": "1 Main St", "city": "New York", "region": "NY", "postal_code": "10001", "country": "US"})
}

pub fn tokyo() -> serde_json::Value {
    serde_json::json!({"name": "Ken Kaimono", "line1": "1-1 Chiyoda", "city": "Tokyo", "postal_code": "100-0001", "country": "JP"})
}

/// A cart with `lines` (variant, quantity), an address, a shipping option and maybe a code.
pub async fn ready_cart(
    app: &TestApp,
    shop: &Shop,
    currency: &str,
    lines: &[(&str, i64)],
    address: serde_json::Value,
    shipping: &str,
    code: Option<&str>,
) -> (Cart, serde_json::Value) {
    let cart = new_cart(app, shop, currency).await;
    let body = fill_cart(app, shop, &cart, lines, address, shipping, code).await;
    (cart, body)
}

/// Gives `cart` its `lines` (variant, quantity), an address, a shipping option and maybe a
/// code; answers the cart as the last call left it.
pub async fn fill_cart(
    app: &TestApp,
    shop: &Shop,
    cart: &Cart,
    lines: &[(&str, i64)],
    address: serde_json::Value,
    shipping: &str,
    code: Option<&str>,
) -> serde_json::Value {
    for (variant, quantity) in lines {
        cart_call(
            app,
            shop,
            cart,
            Method::POST,
            "/items",
            Some(serde_json::json!({"variant_id": variant, "quantity": quantity})),
        )
        .await;
    }
    cart_call(
        app,
        shop,
        cart,
        Method::PUT,
        "/shipping-address",
        Some(address),
    )
    .await;
    let mut body = cart_call(
        app,
        shop,
        cart,
        Method::PUT,
        "/shipping-option",
        Some(serde_json::json!({"shipping_option_id": shipping})),
    )
    .await;
    if let Some(code) = code {
        body = cart_call(
            app,
            shop,
            cart,
            Method::POST,
            "/promotions",
            Some(serde_json::json!({"code": code})),
        )
        .await;
    }
    body
}

pub async fn checkout(app: &TestApp, shop: &Shop, cart: &Cart, key: &str) -> reqwest::Response {
    store(
        app,
        shop,
        Some(&cart.secret),
        Method::POST,
        &format!("/v1/store/carts/{}/checkout", cart.id),
        None,
        Some(key),
    )
    .await
}

/// A guest's order of one tee, placed over REST; answers the order's id.
pub async fn placed_order(app: &TestApp, shop: &Shop, key: &str) -> String {
    let (cart, _) = ready_cart(
        app,
        shop,
        "USD",
        &[(&shop.tee, 1)],
        ny(),
        &shop.us_shipping,
        None,
    )
    .await;
    let order = created(checkout(app, shop, &cart, key).await).await;
    order["id"].as_str().expect("id").to_owned()
}

/// Staff record a manual payment of the order (the storefront cannot mark an order paid).
pub async fn pay(
    app: &TestApp,
    shop: &Shop,
    _cart: &Cart,
    order: &str,
    key: &str,
) -> reqwest::Response {
    admin(
        app,
        &shop.owner.access_token,
        Method::POST,
        &format!("/v1/admin/orders/{order}/payments"),
        None,
        Some(key),
    )
    .await
}

pub async fn level(app: &TestApp, shop: &Shop, variant: &str) -> (i64, i64) {
    let body = json(
        app.get_as(
            &format!("/v1/admin/inventory?variant={variant}"),
            &shop.owner.access_token,
        )
        .await,
    )
    .await;
    (
        body["data"][0]["on_hand"].as_i64().expect("on hand"),
        body["data"][0]["reserved"].as_i64().expect("reserved"),
    )
}
