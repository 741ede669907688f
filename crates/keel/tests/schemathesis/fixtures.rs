//! The fixtures of the contract runs: what the test seeds so each operation can reach its
//! success path, handed to schemathesis as its configuration.

use keel_testkit::{
    Authenticator, OWNER_PASSWORD, TestApp,
    receiver::Receiver,
    reqwest::Method,
    shop::{Cart, Shop, admin, checkout, created, json, ny, pay, ready_cart},
};

/// Real values for the operations that need them to succeed: ids of what was seeded, a cart's
/// secret, a body field the document cannot pin (a variant that exists, a code the shop has).
/// Each becomes an `[[operations]]` entry of the run's `schemathesis.toml`; the other fields
/// and parameters of those operations are still generated.
#[derive(Debug, Default)]
pub struct Fixtures {
    /// Headers of every request (the credentials), kept off the command line.
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// Per operation: its parameters and its own headers (a cart's secret, another
    /// principal's token).
    pub operations: Vec<(
        String,
        serde_json::Value,
        serde_json::Map<String, serde_json::Value>,
    )>,
    /// Operations kept out of some phases (schemathesis runs phases in turn).
    phases_off: Vec<(String, &'static [&'static str])>,
}

impl Fixtures {
    /// `operation` ("METHOD /path") gets `parameters` ("path.id", "body.code", ...).
    /// A second call for the same operation adds to its parameters.
    fn op(&mut self, operation: impl Into<String>, parameters: serde_json::Value) -> &mut Self {
        self.op_with(operation, parameters, serde_json::Map::new())
    }

    /// As [`Self::op`], sending the cart's secret.
    fn cart_op(
        &mut self,
        operation: impl Into<String>,
        parameters: serde_json::Value,
        cart: &Cart,
    ) -> &mut Self {
        let headers = serde_json::json!({"Keel-Cart-Secret": cart.secret});
        self.op_with(operation, parameters, object(headers))
    }

    /// As [`Self::op`], as another principal: for what ends or changes the caller's own
    /// session or credentials, which would leave the rest of the run only 401s.
    fn op_as(
        &mut self,
        operation: impl Into<String>,
        parameters: serde_json::Value,
        access_token: &str,
    ) -> &mut Self {
        let headers = serde_json::json!({"Authorization": format!("Bearer {access_token}")});
        self.op_with(operation, parameters, object(headers))
    }

    fn op_with(
        &mut self,
        operation: impl Into<String>,
        parameters: serde_json::Value,
        headers: serde_json::Map<String, serde_json::Value>,
    ) -> &mut Self {
        let operation = operation.into();
        let parameters = object(parameters);
        if let Some((_, known, known_headers)) =
            self.operations.iter_mut().find(|(o, ..)| *o == operation)
        {
            let known = known.as_object_mut().expect("parameters are an object");
            known.extend(parameters);
            known_headers.extend(headers);
        } else {
            self.operations
                .push((operation, serde_json::Value::Object(parameters), headers));
        }
        self
    }

    /// `operation` runs in no phase of `phases`.
    fn phases_off(&mut self, operation: &str, phases: &'static [&'static str]) -> &mut Self {
        self.phases_off.push((operation.to_owned(), phases));
        self
    }

    /// The run's `schemathesis.toml`: one `[[operations]]` table per operation.
    pub fn toml(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        // Top-level keys come before the first table.
        let headers = toml_value(&serde_json::Value::Object(self.headers.clone()));
        writeln!(out, "headers = {headers}").expect("writing to a String");
        let table = |out: &mut String, operation: &str| {
            let name = toml_value(&serde_json::json!(operation));
            writeln!(out, "[[operations]]\ninclude-name = {name}").expect("writing to a String");
        };
        for (operation, phases) in &self.phases_off {
            table(&mut out, operation);
            for phase in *phases {
                writeln!(out, "phases.{phase}.enabled = false").expect("writing to a String");
            }
        }
        for (operation, parameters, headers) in &self.operations {
            table(&mut out, operation);
            writeln!(out, "parameters = {}", toml_value(parameters)).expect("writing to a String");
            if !headers.is_empty() {
                let headers = toml_value(&serde_json::Value::Object(headers.clone()));
                writeln!(out, "headers = {headers}").expect("writing to a String");
            }
        }
        out
    }
}

/// `value`, a JSON object, as its map.
fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(m) => m,
        other => panic!("an object, not {other}"),
    }
}

/// A JSON value as a TOML inline value (JSON's string escapes are TOML's).
fn toml_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let fields: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{} = {}", serde_json::json!(k), toml_value(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        serde_json::Value::Array(a) => {
            let items: Vec<String> = a.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// `pointer` of `body`, a string.
fn at(body: &serde_json::Value, pointer: &str) -> String {
    body.pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} in {body}"))
        .to_owned()
}

/// The owner's `method path` with `body`, answered with a success; its JSON body.
async fn owner_call(
    app: &TestApp,
    shop: &Shop,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let key = (method == Method::POST).then(uuid_key);
    let res = admin(
        app,
        &shop.owner.access_token,
        method,
        path,
        body,
        key.as_deref(),
    )
    .await;
    let status = res.status();
    let body = json(res).await;
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

fn uuid_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A guest's USD cart of one tee, addressed to New York with US shipping, maybe with `code`.
async fn tee_cart(app: &TestApp, shop: &Shop, code: Option<&str>) -> (Cart, serde_json::Value) {
    ready_cart(
        app,
        shop,
        "USD",
        &[(&shop.tee, 1)],
        ny(),
        &shop.us_shipping,
        code,
    )
    .await
}

/// The shop's slug and its owner's email (the testkit names the owner `owner@{slug}.test`).
async fn owner_login(app: &TestApp, shop: &Shop) -> (String, String) {
    let email = at(
        &owner_call(app, shop, Method::GET, "/v1/me", None).await,
        "/email",
    );
    let slug = email
        .trim_start_matches("owner@")
        .trim_end_matches(".test")
        .to_owned();
    (slug, email)
}

/// A new customer of the shop: its access and refresh tokens.
async fn sign_up(app: &TestApp, shop: &Shop, email: &str) -> (String, String) {
    let body = serde_json::json!({"email": email, "password": OWNER_PASSWORD});
    let signed_up = created(app.store_post(&shop.pk, "/v1/store/customers", body).await).await;
    (
        at(&signed_up, "/tokens/access_token"),
        at(&signed_up, "/tokens/refresh_token"),
    )
}

/// The customer's `POST path` with `body`; its JSON answer.
async fn as_customer(
    app: &TestApp,
    shop: &Shop,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    json(
        app.store_request(Method::POST, &shop.pk, path, Some(token), Some(body))
            .await,
    )
    .await
}

/// Starts the customer's TOTP enrolment (with its password); the authenticator it names.
async fn begin_customer_totp(app: &TestApp, shop: &Shop, token: &str) -> Authenticator {
    let reauth = serde_json::json!({"password": OWNER_PASSWORD});
    let begun = as_customer(app, shop, token, "/v1/store/me/mfa/totp", reauth).await;
    Authenticator::new(&at(&begun, "/secret"))
}

/// Enrols the customer's second factor; its authenticator and first backup code.
async fn enrol_customer_totp(app: &TestApp, shop: &Shop, token: &str) -> (Authenticator, String) {
    let authenticator = begin_customer_totp(app, shop, token).await;
    let code = serde_json::json!({"code": authenticator.code(0)});
    let confirmed = as_customer(app, shop, token, "/v1/store/me/mfa/totp/confirm", code).await;
    (authenticator, at(&confirmed, "/backup_codes/0"))
}

/// The owner's `GET path`, answered with a success; its JSON body.
async fn owner_get(app: &TestApp, shop: &Shop, path: &str) -> serde_json::Value {
    owner_call(app, shop, Method::GET, path, None).await
}

/// The owner's `POST path` with `body`, answered with a success; its JSON body.
async fn owner_post(
    app: &TestApp,
    shop: &Shop,
    path: String,
    body: serde_json::Value,
) -> serde_json::Value {
    owner_call(app, shop, Method::POST, &path, Some(body)).await
}

/// A paid order of one tee: its id and its line's id.
pub async fn paid_order(app: &TestApp, shop: &Shop) -> (String, String) {
    let (cart, _) = tee_cart(app, shop, None).await;
    let order = created(checkout(app, shop, &cart, &uuid_key()).await).await;
    let id = at(&order, "/id");
    created(pay(app, shop, &cart, &id, &uuid_key()).await).await;
    (id, at(&order, "/lines/0/id"))
}

/// The staff API's fixtures: for each resource one record to read and change and one to
/// delete (so a deletion cannot starve the other operations), orders in each state a
/// lifecycle step starts from, webhook and account messages with attempts, and a second
/// session and a fresh shop's setup token for the auth routes.
pub async fn staff_fixtures(
    app: &TestApp,
    shop: &Shop,
    hooks: &mut Receiver,
    mail: &mut Receiver,
) -> Fixtures {
    let mut f = Fixtures::default();
    catalog_fixtures(&mut f, app, shop, hooks).await;
    order_fixtures(&mut f, app, shop).await;
    message_and_auth_fixtures(&mut f, app, shop, hooks, mail).await;
    account_fixtures(&mut f, app, shop).await;
    f
}

/// What ends or changes a caller's own session or credentials, each as a member of its own
/// (so the run's owner stays logged in), and the shop settings as another shop's owner (a
/// generated `require_staff_mfa: true` would answer this shop's later cases 403).
async fn account_fixtures(f: &mut Fixtures, app: &TestApp, shop: &Shop) {
    let member =
        |email: &'static str| async move { app.member(&shop.owner, email, "viewer").await.1 };
    let changing = member("password@contract.test").await;
    f.op_as("POST /v1/me/password", serde_json::json!({"body.current_password": OWNER_PASSWORD, "body.new_password": "quartz-meadow-lantern-8812"}), &changing.access_token);
    let leaving = member("logout@contract.test").await;
    f.op_as(
        "POST /v1/auth/logout",
        serde_json::json!({"body.refresh_token": leaving.refresh_token}),
        &leaving.access_token,
    );
    // A member with a second session, which the first ends.
    let sessions = member("sessions@contract.test").await;
    let (slug, _) = owner_login(app, shop).await;
    let login = serde_json::json!({"tenant": slug, "email": "sessions@contract.test", "password": OWNER_PASSWORD});
    assert_eq!(
        app.post_json("/v1/auth/login", &login).await.status(),
        200,
        "a second session"
    );
    let listed = json(app.get_as("/v1/me/sessions", &sessions.access_token).await).await;
    let other = listed["data"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["current"] == false)
        .expect("the second session");
    f.op_as(
        "GET /v1/me/sessions",
        serde_json::json!({}),
        &sessions.access_token,
    );
    f.op_as(
        "DELETE /v1/me/sessions/{id}",
        serde_json::json!({"path.id": at(other, "/id")}),
        &sessions.access_token,
    );
    // Second factors: one member starting, one confirming (its code is good for a step or
    // two), one renewing backup codes, one turning it off with a backup code.
    let starting = member("mfa-begin@contract.test").await;
    f.op_as(
        "POST /v1/me/mfa/totp",
        serde_json::json!({"body.password": OWNER_PASSWORD}),
        &starting.access_token,
    );
    let confirming = member("mfa-confirm@contract.test").await;
    let begun = json(
        app.send_as(
            Method::POST,
            "/v1/me/mfa/totp",
            &confirming.access_token,
            Some(serde_json::json!({"password": OWNER_PASSWORD})),
        )
        .await,
    )
    .await;
    let code = Authenticator::new(&at(&begun, "/secret")).code(0);
    f.op_as(
        "POST /v1/me/mfa/totp/confirm",
        serde_json::json!({"body.code": code}),
        &confirming.access_token,
    );
    let renewing = member("mfa-codes@contract.test").await;
    let (authenticator, _) = app
        .enrol_staff_totp(&renewing.access_token, OWNER_PASSWORD)
        .await;
    f.op_as(
        "POST /v1/me/mfa/backup-codes",
        serde_json::json!({"body.code": authenticator.code(0)}),
        &renewing.access_token,
    );
    let disabling = member("mfa-off@contract.test").await;
    let (_, backup) = app
        .enrol_staff_totp(&disabling.access_token, OWNER_PASSWORD)
        .await;
    f.op_as(
        "DELETE /v1/me/mfa/totp",
        serde_json::json!({"body.password": OWNER_PASSWORD, "body.backup_code": backup[0]}),
        &disabling.access_token,
    );
    let (_, other_shop) = app.owner_with_tokens("st-settings").await;
    for op in ["GET /v1/admin/settings", "PATCH /v1/admin/settings"] {
        f.op_as(op, serde_json::json!({}), &other_shop.access_token);
    }
}

/// Products and variants, the collections (one record kept, one to delete) and their creation.
async fn catalog_fixtures(f: &mut Fixtures, app: &TestApp, shop: &Shop, hooks: &Receiver) {
    let product = at(
        &owner_get(app, shop, "/v1/admin/products").await,
        "/data/0/id",
    );
    let spare = at(
        &owner_post(
            app,
            shop,
            "/v1/admin/products".into(),
            serde_json::json!({"title": "Spare", "handle": "spare"}),
        )
        .await,
        "/id",
    );
    let spare_variant = at(
        &owner_post(
            app,
            shop,
            format!("/v1/admin/products/{product}/variants"),
            serde_json::json!({"sku": "SPARE-1", "prices": [{"amount": 100, "currency": "USD"}]}),
        )
        .await,
        "/id",
    );
    for op in [
        "GET /v1/admin/products/{id}",
        "PATCH /v1/admin/products/{id}",
        "GET /v1/admin/products/{id}/variants",
    ] {
        f.op(op, serde_json::json!({"path.id": product}));
    }
    // Handles and SKUs are unique in the shop: the first case with these creates the record.
    f.op(
        "POST /v1/admin/products/{id}/variants",
        serde_json::json!({"path.id": product, "body.sku": "FUZZ-1"}),
    );
    f.op(
        "POST /v1/admin/products",
        serde_json::json!({"body.handle": "fuzzed", "body.status": "draft"}),
    );
    f.op(
        "DELETE /v1/admin/products/{id}",
        serde_json::json!({"path.id": spare}),
    );
    for op in [
        "GET /v1/admin/products/{id}/variants/{variant_id}",
        "PATCH /v1/admin/products/{id}/variants/{variant_id}",
    ] {
        f.op(
            op,
            serde_json::json!({"path.id": product, "path.variant_id": shop.mug}),
        );
    }
    f.op(
        "DELETE /v1/admin/products/{id}/variants/{variant_id}",
        serde_json::json!({"path.id": product, "path.variant_id": spare_variant}),
    );
    collection_fixtures(f, app, shop, hooks).await;
}

/// The collections (one record kept, one to delete), their creation and stock adjustments.
async fn collection_fixtures(f: &mut Fixtures, app: &TestApp, shop: &Shop, hooks: &Receiver) {
    let location = at(
        &owner_get(app, shop, "/v1/admin/stock-locations").await,
        "/data/0/id",
    );
    let endpoint = at(
        &owner_post(
            app,
            shop,
            "/v1/admin/webhook-endpoints".into(),
            serde_json::json!({"url": hooks.url}),
        )
        .await,
        "/endpoint/id",
    );
    let endpoint = endpoint.as_str();
    for (collection, kept, spare_body, extra) in [
        (
            "promotions",
            at(
                &owner_get(app, shop, "/v1/admin/promotions").await,
                "/data/0/id",
            ),
            serde_json::json!({"code": "SPARE5", "percent": "5"}),
            &[][..],
        ),
        (
            "shipping-options",
            shop.us_shipping.clone(),
            serde_json::json!({"name": "Spare", "country": "FR", "amounts": [{"amount": 100, "currency": "EUR"}]}),
            &[],
        ),
        (
            "stock-locations",
            location.clone(),
            serde_json::json!({"name": "Spare"}),
            &[],
        ),
        (
            "tax-rates",
            at(
                &owner_get(app, shop, "/v1/admin/tax-rates").await,
                "/data/0/id",
            ),
            serde_json::json!({"country": "FR", "rate": "20"}),
            &[],
        ),
        // The spare endpoint is off, so every delivery goes to the kept one.
        (
            "webhook-endpoints",
            endpoint.to_owned(),
            serde_json::json!({"url": hooks.url, "enabled": false}),
            &["GET /messages", "POST /rotate-secret"],
        ),
    ] {
        let spare = owner_post(app, shop, format!("/v1/admin/{collection}"), spare_body).await;
        let spare = spare
            .pointer("/endpoint/id")
            .unwrap_or(&spare["id"])
            .as_str()
            .expect("id")
            .to_owned();
        f.ops_on(collection, &kept, &spare, extra);
    }
    f.op(
        "POST /v1/admin/webhook-endpoints/{id}/replay",
        serde_json::json!({"path.id": endpoint, "query.since": "2026-01-01T00:00:00Z"}),
    );
    f.op(
        "POST /v1/admin/promotions",
        serde_json::json!({"body.code": "FUZZ15", "body.percent": "15"}),
    );
    f.op("POST /v1/admin/shipping-options", serde_json::json!({"body.country": "DE", "body.amounts": [{"amount": 500, "currency": "EUR"}]}));
    f.op(
        "POST /v1/admin/webhook-endpoints",
        serde_json::json!({"body.url": hooks.url, "body.event_types": ["order.*"]}),
    );
    f.op(
        "POST /v1/admin/inventory/adjustments",
        serde_json::json!({"body.variant": shop.tee, "body.location": location, "body.delta": 5}),
    );
    // Location names are unique in the shop: the kept one keeps its own.
    f.op(
        "PATCH /v1/admin/stock-locations/{id}",
        serde_json::json!({"path.id": location, "body.name": "Main"}),
    );
    f.op(
        "POST /v1/admin/api-keys",
        serde_json::json!({"body.kind": "secret", "body.scopes": ["orders:read"]}),
    );
}

/// Staff members, and orders at each lifecycle step.
async fn order_fixtures(f: &mut Fixtures, app: &TestApp, shop: &Shop) {
    // A staff member to read and change, another to disable.
    let (member, _) = app
        .member(&shop.owner, "staff@contract.test", "staff")
        .await;
    let (leaver, _) = app
        .member(&shop.owner, "leaver@contract.test", "viewer")
        .await;
    f.op(
        "GET /v1/admin/users/{id}",
        serde_json::json!({"path.id": member}),
    );
    f.op(
        "PATCH /v1/admin/users/{id}",
        serde_json::json!({"path.id": member}),
    );
    f.op(
        "POST /v1/admin/users/{id}/disable",
        serde_json::json!({"path.id": leaver}),
    );

    // Orders at each lifecycle step.
    let (to_fulfil, line) = paid_order(app, shop).await;
    f.op(
        "GET /v1/admin/orders/{id}",
        serde_json::json!({"path.id": to_fulfil}),
    );
    f.op(
        "POST /v1/admin/orders/{id}/fulfillments",
        serde_json::json!({"path.id": to_fulfil, "body.lines": [{"line_id": line, "quantity": 1}]}),
    );
    let (to_cancel, _) = paid_order(app, shop).await;
    f.op(
        "POST /v1/admin/orders/{id}/cancel",
        serde_json::json!({"path.id": to_cancel}),
    );
    let (to_refund, line) = paid_order(app, shop).await;
    f.op(
        "POST /v1/admin/orders/{id}/refunds",
        serde_json::json!({"path.id": to_refund, "body.lines": [{"line_id": line, "quantity": 1}]}),
    );
    let (to_ship, line) = paid_order(app, shop).await;
    owner_post(
        app,
        shop,
        format!("/v1/admin/orders/{to_ship}/fulfillments"),
        serde_json::json!({"lines": [{"line_id": line, "quantity": 1}]}),
    )
    .await;
    f.op(
        "POST /v1/admin/orders/{id}/shipments",
        serde_json::json!({"path.id": to_ship}),
    );
    let (to_deliver, line) = paid_order(app, shop).await;
    owner_post(
        app,
        shop,
        format!("/v1/admin/orders/{to_deliver}/fulfillments"),
        serde_json::json!({"lines": [{"line_id": line, "quantity": 1}]}),
    )
    .await;
    owner_post(
        app,
        shop,
        format!("/v1/admin/orders/{to_deliver}/shipments"),
        serde_json::json!({"carrier": "UPS", "tracking_number": "1Z999"}),
    )
    .await;
    f.op(
        "POST /v1/admin/orders/{id}/deliver",
        serde_json::json!({"path.id": to_deliver}),
    );
    let (unpaid_cart, _) = tee_cart(app, shop, None).await;
    let unpaid = at(
        &created(checkout(app, shop, &unpaid_cart, &uuid_key()).await).await,
        "/id",
    );
    f.op(
        "POST /v1/admin/orders/{id}/payments",
        serde_json::json!({"path.id": unpaid}),
    );
    payment_fixtures(f, app, shop).await;
}

/// The shop's Stripe settings (switched off, so no case reaches a provider) and its webhook
/// route, named by the shop's id.
async fn payment_fixtures(f: &mut Fixtures, app: &TestApp, shop: &Shop) {
    let set = owner_call(
        app,
        shop,
        Method::PUT,
        "/v1/admin/payment-providers/stripe",
        Some(serde_json::json!({"enabled": false, "secret_key": "sk_test_contract", "webhook_secrets": ["whsec_contract"]})),
    )
    .await;
    assert_eq!(set["provider"], "stripe", "{set}");
    for op in [
        "GET /v1/admin/payment-providers/{provider}",
        "PUT /v1/admin/payment-providers/{provider}",
    ] {
        f.op(op, serde_json::json!({"path.provider": "stripe"}));
    }
    let me = owner_get(app, shop, "/v1/me").await;
    f.op(
        "POST /v1/hooks/payments/stripe/{tenant}",
        serde_json::json!({"path.tenant": at(&me, "/tenant_id")}),
    );
}

/// A webhook message (delivered to the receiver), an account message (a reset notice) and the
/// auth routes' one-time secrets.
async fn message_and_auth_fixtures(
    f: &mut Fixtures,
    app: &TestApp,
    shop: &Shop,
    hooks: &mut Receiver,
    mail: &mut Receiver,
) {
    let message = hooks.next().await.id;
    for op in [
        "GET /v1/admin/webhook-messages/{id}/attempts",
        "POST /v1/admin/webhook-messages/{id}/replay",
    ] {
        f.op(op, serde_json::json!({"path.id": message}));
    }
    let (slug, email) = owner_login(app, shop).await;
    owner_call(
        app,
        shop,
        Method::PUT,
        "/v1/admin/account-notifications",
        Some(serde_json::json!({"url": mail.url})),
    )
    .await;
    // The member's reset (the owner's would end the run's session when confirmed).
    let reset = app
        .post_json(
            "/v1/auth/password-reset",
            &serde_json::json!({"tenant": slug, "email": "staff@contract.test"}),
        )
        .await;
    assert_eq!(reset.status(), 202, "reset requested");
    let notice = mail.next().await;
    f.op(
        "GET /v1/admin/account-notifications/messages/{id}/attempts",
        serde_json::json!({"path.id": notice.id}),
    );
    f.op("POST /v1/auth/password-reset/confirm", serde_json::json!({"body.reset_token": at(&notice.json(), "/data/reset_token"), "body.new_password": OWNER_PASSWORD}));
    f.op(
        "PUT /v1/admin/account-notifications",
        serde_json::json!({"body.url": mail.url}),
    );
    // Turning the channel off drops its messages: only fuzzed, after the phases that read them.
    f.phases_off(
        "DELETE /v1/admin/account-notifications",
        &["examples", "coverage"],
    );
    // A member with a second factor, half logged in.
    let (_, second_factor) = app.member(&shop.owner, "mfa@contract.test", "viewer").await;
    let (_, backup) = app
        .enrol_staff_totp(&second_factor.access_token, OWNER_PASSWORD)
        .await;
    let challenge = json(app.post_json("/v1/auth/login", &serde_json::json!({"tenant": slug, "email": "mfa@contract.test", "password": OWNER_PASSWORD})).await).await;
    f.op("POST /v1/auth/mfa", serde_json::json!({"body.mfa_token": at(&challenge, "/mfa_token"), "body.backup_code": backup[0]}));

    // The auth routes: the owner's credentials, a second session's refresh token (refreshing
    // the run's own would end it), and a new shop's one-time setup token.
    let login = serde_json::json!({"body.tenant": slug, "body.email": email, "body.password": OWNER_PASSWORD});
    f.op("POST /v1/auth/login", login.clone());
    let second = json(
        app.post_json(
            "/v1/auth/login",
            &serde_json::json!({"tenant": slug, "email": email, "password": OWNER_PASSWORD}),
        )
        .await,
    )
    .await;
    f.op(
        "POST /v1/auth/refresh",
        serde_json::json!({"body.refresh_token": at(&second, "/refresh_token")}),
    );
    let next_shop = app.create_owner("st-setup").await;
    f.op("POST /v1/auth/setup", serde_json::json!({"body.setup_token": next_shop.setup_token, "body.password": OWNER_PASSWORD}));
}

impl Fixtures {
    /// The id routes of `/v1/admin/{collection}`: `kept` for reads and changes (`GET`,
    /// `PATCH` and `extra`, e.g. `POST /replay`), `spare` to delete.
    fn ops_on(&mut self, collection: &str, kept: &str, spare: &str, extra: &[&str]) {
        let on = |op: &str| {
            let (method, suffix) = op.split_once(' ').unwrap_or((op, ""));
            format!("{method} /v1/admin/{collection}/{{id}}{suffix}")
        };
        for op in ["GET", "PATCH"].iter().chain(extra) {
            self.op(on(op), serde_json::json!({"path.id": kept}));
        }
        self.op(on("DELETE"), serde_json::json!({"path.id": spare}));
    }
}

/// The storefront's fixtures: a cart to fill and change, one to remove things from, one
/// ready to check out, an order waiting for payment, and the customer's credentials.
pub async fn store_fixtures(
    app: &TestApp,
    shop: &Shop,
    email: &str,
    mail: &mut Receiver,
) -> Fixtures {
    let mut f = Fixtures::default();
    cart_fixtures(&mut f, app, shop).await;
    login_fixtures(&mut f, app, shop, email).await;
    customer_fixtures(&mut f, app, shop, mail).await;
    f
}

/// Carts: one to fill and change, one to remove things from, one ready to check out, and an
/// order waiting for payment.
async fn cart_fixtures(f: &mut Fixtures, app: &TestApp, shop: &Shop) {
    let (cart, body) = tee_cart(app, shop, None).await;
    let item = at(&body, "/lines/0/id");
    for op in [
        "GET /v1/store/carts/{id}",
        "POST /v1/store/carts/{id}/items",
        "PATCH /v1/store/carts/{id}/items/{item_id}",
        "POST /v1/store/carts/{id}/promotions",
        "PUT /v1/store/carts/{id}/shipping-address",
        "PUT /v1/store/carts/{id}/shipping-option",
    ] {
        f.cart_op(op, serde_json::json!({
            "path.id": cart.id, "path.item_id": item, "body.variant_id": shop.mug, "body.code": "SAVE10",
            "body.country": "US", "body.region": "NY", "body.shipping_option_id": shop.us_shipping,
        }), &cart);
    }
    let (emptied, body) = tee_cart(app, shop, Some("SAVE10")).await;
    for op in [
        "DELETE /v1/store/carts/{id}/items/{item_id}",
        "DELETE /v1/store/carts/{id}/promotions/{code}",
    ] {
        f.cart_op(op, serde_json::json!({"path.id": emptied.id, "path.item_id": at(&body, "/lines/0/id"), "path.code": "SAVE10"}), &emptied);
    }
    let (ready, _) = tee_cart(app, shop, None).await;
    f.cart_op(
        "POST /v1/store/carts/{id}/checkout",
        serde_json::json!({"path.id": ready.id}),
        &ready,
    );
    let (unpaid, _) = tee_cart(app, shop, None).await;
    let order = at(
        &created(checkout(app, shop, &unpaid, &uuid_key()).await).await,
        "/id",
    );
    for op in [
        "GET /v1/store/orders/{id}",
        "POST /v1/store/orders/{id}/payment-sessions",
    ] {
        f.cart_op(op, serde_json::json!({"path.id": order}), &unpaid);
    }
}

/// The catalogue by handle, a sign-up, and the customer's credentials and second session.
async fn login_fixtures(f: &mut Fixtures, app: &TestApp, shop: &Shop, email: &str) {
    f.op(
        "GET /v1/store/products/{id_or_handle}",
        serde_json::json!({"path.id_or_handle": "tee"}),
    );
    f.op("POST /v1/store/customers", serde_json::json!({"body.email": "new-shopper@example.com", "body.password": OWNER_PASSWORD}));
    f.op(
        "POST /v1/store/auth/login",
        serde_json::json!({"body.email": email, "body.password": OWNER_PASSWORD}),
    );
    let second = app
        .store_post(
            &shop.pk,
            "/v1/store/auth/login",
            serde_json::json!({"email": email, "password": OWNER_PASSWORD}),
        )
        .await;
    let second = json(second).await;
    f.op(
        "POST /v1/store/auth/refresh",
        serde_json::json!({"body.refresh_token": at(&second, "/refresh_token")}),
    );
}

/// Other customers: one resetting a password, one with a second factor, half logged in.
async fn customer_fixtures(f: &mut Fixtures, app: &TestApp, shop: &Shop, mail: &mut Receiver) {
    owner_call(
        app,
        shop,
        Method::PUT,
        "/v1/admin/account-notifications",
        Some(serde_json::json!({"url": mail.url})),
    )
    .await;
    sign_up(app, shop, "reset@example.com").await;
    let reset = app
        .store_post(
            &shop.pk,
            "/v1/store/auth/password-reset",
            serde_json::json!({"email": "reset@example.com"}),
        )
        .await;
    assert_eq!(reset.status(), 202, "reset requested");
    let notice = mail.next().await.json();
    f.op("POST /v1/store/auth/password-reset/confirm", serde_json::json!({"body.reset_token": at(&notice, "/data/reset_token"), "body.new_password": OWNER_PASSWORD}));
    let (token, _) = sign_up(app, shop, "mfa@example.com").await;
    let (_, backup) = enrol_customer_totp(app, shop, &token).await;
    let challenge = app
        .store_post(
            &shop.pk,
            "/v1/store/auth/login",
            serde_json::json!({"email": "mfa@example.com", "password": OWNER_PASSWORD}),
        )
        .await;
    let challenge = json(challenge).await;
    f.op("POST /v1/store/auth/mfa", serde_json::json!({"body.mfa_token": at(&challenge, "/mfa_token"), "body.backup_code": backup}));
    customer_account_fixtures(f, app, shop).await;
}

/// What ends or changes a customer's own session or credentials, each as a customer of its
/// own (so the run's customer stays logged in).
async fn customer_account_fixtures(f: &mut Fixtures, app: &TestApp, shop: &Shop) {
    let (changing, _) = sign_up(app, shop, "password@example.com").await;
    f.op_as("POST /v1/store/me/password", serde_json::json!({"body.current_password": OWNER_PASSWORD, "body.new_password": "quartz-meadow-lantern-8812"}), &changing);
    let (leaving, refresh) = sign_up(app, shop, "logout@example.com").await;
    f.op_as(
        "POST /v1/store/auth/logout",
        serde_json::json!({"body.refresh_token": refresh}),
        &leaving,
    );
    let (starting, _) = sign_up(app, shop, "mfa-begin@example.com").await;
    f.op_as(
        "POST /v1/store/me/mfa/totp",
        serde_json::json!({"body.password": OWNER_PASSWORD}),
        &starting,
    );
    let (confirming, _) = sign_up(app, shop, "mfa-confirm@example.com").await;
    let code = begin_customer_totp(app, shop, &confirming).await.code(0);
    f.op_as(
        "POST /v1/store/me/mfa/totp/confirm",
        serde_json::json!({"body.code": code}),
        &confirming,
    );
    // Enrolled customers: one renewing backup codes, one turning the second factor off.
    let (renewing, _) = sign_up(app, shop, "mfa-codes@example.com").await;
    let (authenticator, _) = enrol_customer_totp(app, shop, &renewing).await;
    let (disabling, _) = sign_up(app, shop, "mfa-off@example.com").await;
    let (_, backup) = enrol_customer_totp(app, shop, &disabling).await;
    f.op_as(
        "POST /v1/store/me/mfa/backup-codes",
        serde_json::json!({"body.code": authenticator.code(0)}),
        &renewing,
    );
    f.op_as(
        "DELETE /v1/store/me/mfa/totp",
        serde_json::json!({"body.password": OWNER_PASSWORD, "body.backup_code": backup}),
        &disabling,
    );
}
