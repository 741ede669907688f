//! Orders behaviours, for every adapter: the checkout transaction is all or nothing, and
//! idempotency keys are claimed once.

use keel_catalog::domain::{Location, Product, Reservation, ReservationId};
use keel_kernel::{
    StoreError, TenantId,
    clock::{Clock, SystemClock},
    event::NewEvent,
    idempotency::{IdempotencyBegin, IdempotencyKey},
    money::Currency,
    page::{Limit, PageRequest},
};
use keel_orders::{
    cart::{Address, Cart, CartId, CartStatus, LineId},
    country::Country,
    exact::Percent,
    order::{FIRST_ORDER_NUMBER, Order, OrderId, OrderLine, OrderStatus, PaymentStatus},
    ports::{
        INSUFFICIENT_STOCK, OrderFilter, OrderReceipt, PlaceOrder, PricingLookup, PricingSettings,
        PromotionUse, SetupKind, SetupRecord, UNPAID_ORDER_LIMIT, UnpaidHolder, UnpaidLimits,
        VERSION_CONFLICT, converted_cart,
    },
    pricing::{Discount, LineInput, PricingInput, price},
};

use crate::{Stores, catalog::stocked_product};

fn address() -> Address {
    Address {
        name: "Ann".into(),
        line1: "1 Main St".into(),
        line2: None,
        city: "New York".into(),
        region: Some("NY".into()),
        postal_code: "10001".into(),
        country: Country::parse("US").expect("US"),
        phone: None,
    }
}

fn cart_and_order(
    t: TenantId,
    p: &Product,
    l: &Location,
    quantities: &[i64],
) -> (Cart, Order, Vec<Reservation>) {
    let now = SystemClock.now();
    let usd = Currency::parse("USD").expect("USD");
    let cart = Cart {
        id: CartId::new(),
        tenant_id: t,
        currency: usd,
        customer_id: None,
        email: Some("a@example.test".into()),
        lines: Vec::new(),
        shipping_address: Some(address()),
        shipping_option_id: None,
        promotion_code: None,
        status: CartStatus::Open,
        order_id: None,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let totals = price(&PricingInput {
        lines: quantities
            .iter()
            .map(|q| LineInput {
                unit_price: 1000,
                quantity: *q,
            })
            .collect(),
        discount: Discount::None,
        shipping: None,
        tax_rate: Percent::ZERO,
        shipping_taxable: false,
        tax_inclusive: false,
    })
    .expect("priced");
    let reservations: Vec<Reservation> = quantities
        .iter()
        .map(|q| Reservation {
            id: ReservationId::new(),
            tenant_id: t,
            variant_id: p.variants[0].id,
            location_id: l.id,
            quantity: *q,
            created_at: now,
            released_at: None,
        })
        .collect();
    let order = Order {
        id: OrderId::new(),
        tenant_id: t,
        number: 0,
        currency: usd,
        customer_id: None,
        email: cart.email.clone(),
        status: OrderStatus::PendingPayment,
        payment_status: PaymentStatus::Unpaid,
        lines: reservations
            .iter()
            .zip(&totals.lines)
            .map(|(r, a)| OrderLine {
                id: LineId::new(),
                variant_id: r.variant_id,
                product_id: p.id,
                sku: "SKU".into(),
                title: "Item".into(),
                quantity: r.quantity,
                unit_price: 1000,
                amounts: *a,
                reservation_id: r.id,
                location_id: r.location_id,
                fulfilled: 0,
                refunded_quantity: 0,
                refunded_amount: 0,
            })
            .collect(),
        totals,
        shipping_address: address(),
        shipping_option_id: None,
        promotion_id: None,
        promotion_code: None,
        tax_rate: Percent::ZERO,
        captured: 0,
        refunded: 0,
        refunded_shipping: 0,
        payments: Vec::new(),
        refunds: Vec::new(),
        fulfilments: Vec::new(),
        shipments: Vec::new(),
        access_hash: None,
        cancel_reason: None,
        created_at: now,
        updated_at: now,
        expires_at: now,
        version: 1,
    };
    (cart, order, reservations)
}

/// The checkout of `cart` into `order` with its reservations, at the cart's first version.
fn checkout_of<'a>(
    cart: &'a Cart,
    order: &'a Order,
    reservations: &'a [Reservation],
) -> PlaceOrder<'a> {
    PlaceOrder {
        order,
        converted: converted_cart(cart, order),
        cart_version: 1,
        reservations,
        first_number: FIRST_ORDER_NUMBER,
        promotion: None,
        holder: UnpaidHolder::default(),
        limits: no_unpaid_caps(order.created_at),
    }
}

/// Caps no test here reaches.
fn no_unpaid_caps(now: time::OffsetDateTime) -> UnpaidLimits {
    UnpaidLimits {
        per_customer: 1_000,
        per_email: 1_000,
        per_client: 1_000,
        now,
    }
}

/// [`cart_and_order`], with the cart stored.
async fn stored_cart(
    stores: &Stores,
    t: TenantId,
    p: &Product,
    l: &Location,
    quantities: &[i64],
) -> (Cart, Order, Vec<Reservation>) {
    let (cart, order, reservations) = cart_and_order(t, p, l, quantities);
    stores
        .carts
        .create_cart(&cart, None, &[])
        .await
        .expect("cart");
    (cart, order, reservations)
}

/// A shop with one placed order (two units held), as stored.
pub(crate) async fn placed_order(stores: &Stores, prefix: &str) -> (TenantId, Order) {
    let (t, mut orders) = placed_orders(stores, prefix, 1).await;
    (t, orders.remove(0))
}

/// A shop with `n` placed orders (two units held by each), as stored.
pub(crate) async fn placed_orders(stores: &Stores, prefix: &str, n: i64) -> (TenantId, Vec<Order>) {
    let (t, p, l) = stocked_product(stores, prefix, 2 * n).await;
    let mut placed = Vec::new();
    for _ in 0..n {
        let (cart, order, reservations) = stored_cart(stores, t, &p, &l, &[2]).await;
        stores
            .orders
            .place_order(&checkout_of(&cart, &order, &reservations), &[], None)
            .await
            .expect("placed");
        placed.push(stores.orders.get_order(t, order.id).await.expect("order"));
    }
    (t, placed)
}

/// A cart's writes carry their events; a save against a stale version writes neither.
pub async fn a_carts_writes_carry_their_events_and_a_stale_save_writes_nothing(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "cart-writes", 3).await;
    let (mut cart, _, _) = cart_and_order(t, &p, &l, &[1]);
    let event = |name: &'static str| {
        NewEvent::new(
            t,
            name,
            &serde_json::json!({"cart_id": cart.id.to_string()}),
            cart.created_at,
        )
        .expect("event")
    };
    let created = event("cart.created");
    stores
        .carts
        .create_cart(&cart, Some("hash"), std::slice::from_ref(&created))
        .await
        .expect("create");
    assert_eq!(
        stores
            .events
            .get(t, created.id)
            .await
            .expect("created event")
            .event_type,
        "cart.created"
    );

    let (saved_first, stale) = (event("cart.updated"), event("cart.updated"));
    cart.version = 2;
    stores
        .carts
        .save_cart(&cart, 1, std::slice::from_ref(&saved_first))
        .await
        .expect("save at version 1");
    assert!(stores.events.get(t, saved_first.id).await.is_ok());

    cart.version = 3;
    cart.status = CartStatus::Converted;
    let err = stores
        .carts
        .save_cart(&cart, 1, std::slice::from_ref(&stale))
        .await
        .expect_err("version 1 is stale");
    assert!(err.is_conflict_on(VERSION_CONFLICT), "{err:?}");
    assert!(
        matches!(
            stores.events.get(t, stale.id).await,
            Err(StoreError::NotFound)
        ),
        "the refused save wrote no event"
    );
    let (kept, secret) = stores.carts.get_cart(t, cart.id).await.expect("cart");
    assert_eq!((kept.version, kept.status), (2, CartStatus::Open));
    assert_eq!(secret.as_deref(), Some("hash"));
}

/// What a checkout that failed must leave: its cart open at its first version and no unit
/// of the location reserved.
async fn assert_cart_open_and_nothing_reserved(
    stores: &Stores,
    t: TenantId,
    cart: CartId,
    l: &Location,
) {
    let (untouched, _) = stores.carts.get_cart(t, cart).await.expect("cart");
    assert_eq!(
        (untouched.status, untouched.version),
        (CartStatus::Open, 1),
        "the cart is untouched"
    );
    let levels = stores
        .inventory
        .list_levels(t, None, Some(l.id), PageRequest::default())
        .await
        .expect("levels");
    assert_eq!(levels.items[0].reserved, 0, "no stock is reserved");
}

pub async fn a_checkout_that_cannot_reserve_everything_writes_nothing(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "ord-atomic", 3).await;
    let (cart, order, reservations) = stored_cart(stores, t, &p, &l, &[2, 2]).await;
    let placed = NewEvent::new(
        t,
        "order.placed",
        &serde_json::json!({"order_id": order.id.to_string()}),
        order.created_at,
    )
    .expect("event");
    let err = stores
        .orders
        .place_order(
            &checkout_of(&cart, &order, &reservations),
            std::slice::from_ref(&placed),
            None,
        )
        .await
        .expect_err("the second line finds only 1 unit");
    assert!(err.is_conflict_on(INSUFFICIENT_STOCK), "{err:?}");
    // The first line's reservation rolled back.
    assert_cart_open_and_nothing_reserved(stores, t, cart.id, &l).await;
    assert!(
        stores
            .orders
            .list_orders(t, &OrderFilter::default(), PageRequest::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    let events = stores
        .events
        .list(
            t,
            PageRequest::first(Limit::new(100).expect("limit")),
            Some("order."),
        )
        .await
        .expect("events");
    assert!(events.items.is_empty(), "no event either");
    let (cart, order, reservations) = stored_cart(stores, t, &p, &l, &[1]).await;
    let number = stores
        .orders
        .place_order(&checkout_of(&cart, &order, &reservations), &[], None)
        .await
        .expect("placed");
    assert_eq!(number, 1001, "the failed attempt used no order number");
}

/// The store locks stock rows in the order `keel-orders` decides (`stock_lock_order`), so
/// two checkouts cannot deadlock; a checkout whose reservations break it is a caller's bug,
/// refused before anything is locked or written.
pub async fn a_checkout_out_of_stock_lock_order_is_refused_and_writes_nothing(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "ord-lock-order", 3).await;
    let (cart, order, mut reservations) = stored_cart(stores, t, &p, &l, &[1, 1]).await;
    reservations[0].variant_id = keel_catalog::domain::VariantId::from_uuid(uuid::Uuid::max());
    let err = stores
        .orders
        .place_order(&checkout_of(&cart, &order, &reservations), &[], None)
        .await
        .expect_err("out of lock order");
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
    assert_cart_open_and_nothing_reserved(stores, t, cart.id, &l).await;
    let orders = stores
        .orders
        .list_orders(t, &OrderFilter::default(), PageRequest::default())
        .await
        .expect("list");
    assert!(orders.items.is_empty(), "no order");
}

pub async fn a_checkout_commits_order_stock_and_number_together(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "ord-commit", 3).await;
    let (cart, order, reservations) = stored_cart(stores, t, &p, &l, &[1, 2]).await;
    let number = stores
        .orders
        .place_order(&checkout_of(&cart, &order, &reservations), &[], None)
        .await
        .expect("placed");
    assert_eq!(number, 1001, "the shop's first number");
    assert_eq!(
        stores
            .orders
            .get_order(t, order.id)
            .await
            .expect("order")
            .number,
        1001
    );
    let levels = stores
        .inventory
        .list_levels(t, None, Some(l.id), PageRequest::default())
        .await
        .expect("levels");
    assert_eq!((levels.items[0].on_hand, levels.items[0].reserved), (3, 3));
    let again = stores
        .orders
        .place_order(&checkout_of(&cart, &order, &[]), &[], None)
        .await
        .expect_err("the cart was converted");
    assert!(
        again.is_conflict_on(keel_orders::ports::CART_CHANGED),
        "{again:?}"
    );
}

pub async fn idempotency_keys_are_claimed_once_replayed_and_taken_over_when_dead(stores: &Stores) {
    let (t, _, _) = stocked_product(stores, "idem", 0).await;
    let key = IdempotencyKey {
        tenant_id: t,
        scope: "cus:test".into(),
        key: "k-1".into(),
    };
    let now = SystemClock.now();
    let later = |s: i64| now + time::Duration::seconds(s);
    let begin = |at: time::OffsetDateTime| {
        let (store, key) = (stores.idempotency.clone(), key.clone());
        async move {
            store
                .begin(
                    &key,
                    b"request",
                    at,
                    at + time::Duration::seconds(30),
                    at + time::Duration::seconds(86_400),
                )
                .await
                .expect("begin")
        }
    };
    assert_eq!(begin(now).await, IdempotencyBegin::Started);
    assert_eq!(
        begin(later(1)).await,
        IdempotencyBegin::InFlight,
        "the first still runs"
    );
    stores
        .idempotency
        .finish(&key, 201, "{\"id\":1}")
        .await
        .expect("finish");
    assert_eq!(
        begin(later(2)).await,
        IdempotencyBegin::Done {
            request_hash: b"request".to_vec(),
            status: 201,
            body: "{\"id\":1}".into()
        }
    );
    let other = IdempotencyKey {
        scope: "cus:other".into(),
        ..key.clone()
    };
    assert_eq!(
        stores
            .idempotency
            .begin(&other, b"request", now, later(30), later(86_400))
            .await
            .expect("begin"),
        IdempotencyBegin::Started,
        "another credential's key of the same name is its own"
    );
    // A request that died in flight: after its lock the key can be taken over.
    let dead = IdempotencyKey {
        key: "k-2".into(),
        ..key.clone()
    };
    let claim = |at: time::OffsetDateTime| {
        let (store, key) = (stores.idempotency.clone(), dead.clone());
        async move {
            store
                .begin(
                    &key,
                    b"x",
                    at,
                    at + time::Duration::seconds(30),
                    at + time::Duration::seconds(86_400),
                )
                .await
                .expect("begin")
        }
    };
    assert_eq!(claim(now).await, IdempotencyBegin::Started);
    assert_eq!(claim(later(29)).await, IdempotencyBegin::InFlight);
    assert_eq!(claim(later(31)).await, IdempotencyBegin::Started);
    assert!(
        stores
            .idempotency
            .purge(later(86_400 + 40))
            .await
            .expect("purge")
            >= 3
    );
    assert_eq!(
        begin(later(86_400 + 41)).await,
        IdempotencyBegin::Started,
        "purged keys start afresh"
    );
}

/// What the store keeps as an order's answer in these tests: its number and version.
#[expect(
    clippy::unnecessary_wraps,
    reason = "the shape of `OrderReceipt::render`"
)]
fn receipt_render(o: &Order) -> Result<String, String> {
    Ok(format!(
        "{{\"number\":{},\"version\":{}}}",
        o.number, o.version
    ))
}

fn receipt(t: TenantId, name: &str) -> OrderReceipt {
    OrderReceipt {
        key: IdempotencyKey {
            tenant_id: t,
            scope: "cus:receipt".into(),
            key: name.into(),
        },
        status: 201,
        render: receipt_render,
    }
}

/// Claims (or looks at) the receipt's key.
async fn begin_key(stores: &Stores, r: &OrderReceipt) -> IdempotencyBegin {
    let at = SystemClock.now();
    stores
        .idempotency
        .begin(
            &r.key,
            b"req",
            at,
            at + time::Duration::seconds(30),
            at + time::Duration::seconds(86_400),
        )
        .await
        .expect("begin")
}

fn stored(number: i64, version: i64) -> IdempotencyBegin {
    IdempotencyBegin::Done {
        request_hash: b"req".to_vec(),
        status: 201,
        body: format!("{{\"number\":{number},\"version\":{version}}}"),
    }
}

pub async fn a_checkouts_receipt_is_written_with_the_order_and_only_with_it(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "receipt", 3).await;
    let refused = receipt(t, "refused");
    assert_eq!(begin_key(stores, &refused).await, IdempotencyBegin::Started);
    let (cart, order, reservations) = stored_cart(stores, t, &p, &l, &[5]).await;
    let place = checkout_of(&cart, &order, &reservations);
    let err = stores
        .orders
        .place_order(&place, &[], Some(&refused))
        .await
        .expect_err("5 of 3");
    assert!(err.is_conflict_on(INSUFFICIENT_STOCK), "{err:?}");
    assert_eq!(
        begin_key(stores, &refused).await,
        IdempotencyBegin::InFlight,
        "a failed checkout leaves its key in flight (its answer is stored apart)"
    );

    let placed = receipt(t, "placed");
    assert_eq!(begin_key(stores, &placed).await, IdempotencyBegin::Started);
    let (cart, order, reservations) = stored_cart(stores, t, &p, &l, &[1]).await;
    let place = checkout_of(&cart, &order, &reservations);
    let number = stores
        .orders
        .place_order(&place, &[], Some(&placed))
        .await
        .expect("placed");
    assert_eq!(
        begin_key(stores, &placed).await,
        stored(number, 1),
        "the answer, with the number the checkout assigned, is stored with the order"
    );
}

pub async fn a_saved_orders_receipt_is_written_with_it_and_only_with_it(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "receipt-save", 3).await;
    let (cart, order, reservations) = stored_cart(stores, t, &p, &l, &[1]).await;
    let place = checkout_of(&cart, &order, &reservations);
    let number = stores
        .orders
        .place_order(&place, &[], None)
        .await
        .expect("placed");
    let mut paid = stores.orders.get_order(t, order.id).await.expect("order");
    paid.version = 2;
    paid.payment_status = PaymentStatus::Paid;
    let stale = receipt(t, "stale");
    assert_eq!(begin_key(stores, &stale).await, IdempotencyBegin::Started);
    let err = stores
        .orders
        .save_order(&paid, 7, &[], false, &[], Some(&stale))
        .await
        .expect_err("not at version 7");
    assert!(err.is_conflict_on(VERSION_CONFLICT), "{err:?}");
    assert_eq!(begin_key(stores, &stale).await, IdempotencyBegin::InFlight);
    let saved = receipt(t, "saved");
    assert_eq!(begin_key(stores, &saved).await, IdempotencyBegin::Started);
    stores
        .orders
        .save_order(&paid, 1, &[], false, &[], Some(&saved))
        .await
        .expect("saved");
    assert_eq!(begin_key(stores, &saved).await, stored(number, 2));
}

/// A key's answer lands only over its claim in flight: a claim that never landed (ADR 0022:
/// it rides with the owner's next commit, and its group may fail) takes the work with it.
pub async fn a_receipt_is_stored_only_over_its_claim_in_flight(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "receipt-claim", 3).await;
    let unclaimed = receipt(t, "never-claimed");
    let (cart, order, reservations) = stored_cart(stores, t, &p, &l, &[1]).await;
    let checkout = checkout_of(&cart, &order, &reservations);
    let place = || stores.orders.place_order(&checkout, &[], Some(&unclaimed));
    let finish = |status| stores.idempotency.finish(&unclaimed.key, status, "{}");
    let err = place().await.expect_err("no claim, no order");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_cart_open_and_nothing_reserved(stores, t, cart.id, &l).await;
    assert!(
        matches!(
            stores.orders.get_order(t, order.id).await,
            Err(StoreError::NotFound)
        ),
        "no order"
    );
    let err = finish(409).await.expect_err("no claim, no stored answer");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(
        begin_key(stores, &unclaimed).await,
        IdempotencyBegin::Started,
        "nothing was stored for the key"
    );

    // An answer already stored is not overwritten by a late finish.
    let number = place().await.expect("placed over its claim");
    let err = finish(500).await.expect_err("the key is done");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(begin_key(stores, &unclaimed).await, stored(number, 1));
}

/// Two shops with the same pricing records (two tax rates, a shipping option, two
/// promotions); answers the shops and each one's shipping option id.
async fn two_shops_with_pricing_records(stores: &Stores) -> (TenantId, TenantId, Vec<uuid::Uuid>) {
    let (t, _, _) = stocked_product(stores, "pricing-read", 0).await;
    let (other, _, _) = stocked_product(stores, "pricing-other", 0).await;
    let record = |tenant: TenantId, kind: SetupKind, id: uuid::Uuid, key: &str| SetupRecord {
        id,
        tenant_id: tenant,
        kind,
        key: key.into(),
        body: serde_json::json!({"key": key}),
        usage_limit: None,
        times_used: 0,
        version: 1,
    };
    let mut shipping = Vec::new();
    for tenant in [t, other] {
        let ship = uuid::Uuid::now_v7();
        shipping.push(ship);
        for r in [
            record(tenant, SetupKind::TaxRate, uuid::Uuid::now_v7(), "US/NY"),
            record(tenant, SetupKind::TaxRate, uuid::Uuid::now_v7(), "US"),
            record(tenant, SetupKind::ShippingOption, ship, &ship.to_string()),
            record(tenant, SetupKind::Promotion, uuid::Uuid::now_v7(), "SAVE10"),
            record(tenant, SetupKind::Promotion, uuid::Uuid::now_v7(), "OTHER"),
        ] {
            stores.setup.create_record(&r, &[]).await.expect("record");
        }
    }
    (t, other, shipping)
}

pub async fn a_carts_pricing_records_are_read_together_and_per_tenant(stores: &Stores) {
    let (t, other, shipping) = two_shops_with_pricing_records(stores).await;
    let read = |tenant: TenantId, lookup: PricingLookup| {
        let setup = stores.setup.clone();
        async move {
            let found = setup.pricing_records(tenant, &lookup).await.expect("read");
            let mut keys: Vec<_> = found
                .records
                .iter()
                .inspect(|r| assert_eq!(r.tenant_id, tenant, "another tenant's record"))
                .map(|r| (r.kind.as_str(), r.key.clone()))
                .collect();
            keys.sort();
            (found.settings.prices_include_tax, keys)
        }
    };
    assert_eq!(
        read(t, PricingLookup::default()).await,
        (false, vec![]),
        "nothing asked: the settings alone (the default)"
    );
    let everything = PricingLookup {
        tax_region: Some("US/NY".into()),
        tax_country: Some("US".into()),
        shipping_option: Some(shipping[0]),
        promotion_code: Some("SAVE10".into()),
    };
    let ship_key = shipping[0].to_string();
    assert_eq!(
        read(t, everything.clone()).await,
        (
            false,
            vec![
                ("promotion", "SAVE10".to_owned()),
                ("shipping_option", ship_key),
                ("tax_rate", "US".to_owned()),
                ("tax_rate", "US/NY".to_owned()),
            ]
        )
    );
    let elsewhere = PricingLookup {
        tax_region: Some("US/CA".into()),
        shipping_option: Some(shipping[0]),
        ..everything
    };
    stores
        .setup
        .set_pricing_settings(
            t,
            PricingSettings {
                prices_include_tax: true,
            },
            &[],
        )
        .await
        .expect("settings");
    assert_eq!(
        read(other, elsewhere.clone()).await,
        (
            false,
            vec![
                ("promotion", "SAVE10".to_owned()),
                ("tax_rate", "US".to_owned())
            ]
        ),
        "the other shop's settings, and not this shop's shipping option"
    );
    assert_eq!(
        read(t, elsewhere).await,
        (
            true,
            vec![
                ("promotion", "SAVE10".to_owned()),
                ("shipping_option", shipping[0].to_string()),
                ("tax_rate", "US".to_owned()),
            ]
        ),
        "this shop's settings; no region rate, so the country's alone"
    );
}

/// A stored cart and its order, open for an hour, for the cap tests.
async fn open_order(
    stores: &Stores,
    t: TenantId,
    p: &Product,
    l: &Location,
) -> (Cart, Order, Vec<Reservation>) {
    let (cart, mut order, reservations) = stored_cart(stores, t, p, l, &[1]).await;
    order.expires_at = order.created_at + time::Duration::hours(1);
    (cart, order, reservations)
}

pub async fn unpaid_order_caps_count_each_holder_and_refuse_the_order_past_them(stores: &Stores) {
    let (shop, product, location) = stocked_product(stores, "unpaid-caps", 20).await;
    let now = SystemClock.now();
    let caps = UnpaidLimits {
        per_customer: 2,
        per_email: 2,
        per_client: 3,
        now,
    };
    let guest = |email: &str, client: &str| UnpaidHolder {
        customer: None,
        email_key: Some(email.into()),
        client_key: Some(client.into()),
    };
    let place = |(cart, order, reservations): (Cart, Order, Vec<Reservation>),
                 holder: UnpaidHolder| async move {
        let checkout = PlaceOrder {
            order: &order,
            converted: converted_cart(&cart, &order),
            cart_version: 1,
            reservations: &reservations,
            first_number: FIRST_ORDER_NUMBER,
            promotion: None,
            holder,
            limits: caps,
        };
        stores
            .orders
            .place_order(&checkout, &[], None)
            .await
            .map(|_| order.id)
    };
    let open = || open_order(stores, shop, &product, &location);
    // Two guest orders for ann@ from one address: her email is at its cap.
    for _ in 0..2 {
        place(open().await, guest("ann@shop.test", "addr-1"))
            .await
            .expect("placed");
    }
    let refused = place(open().await, guest("ann@shop.test", "addr-2"))
        .await
        .expect_err("a third for the same email");
    assert!(refused.is_conflict_on(UNPAID_ORDER_LIMIT), "{refused:?}");
    let listed = stores
        .orders
        .list_orders(shop, &OrderFilter::default(), PageRequest::default())
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 2, "the refused order was not written");
    // Another email from the first address: the address holds its third, and no fourth.
    place(open().await, guest("bob@shop.test", "addr-1"))
        .await
        .expect("the address's third");
    let refused = place(open().await, guest("cy@shop.test", "addr-1"))
        .await
        .expect_err("the address's fourth");
    assert!(refused.is_conflict_on(UNPAID_ORDER_LIMIT), "{refused:?}");
    // An order that expired holds nothing.
    let (cart, mut order, reservations) = open().await;
    order.expires_at = now;
    place(
        (cart, order, reservations),
        guest("dee@shop.test", "addr-9"),
    )
    .await
    .expect("placed");
    for _ in 0..2 {
        place(open().await, guest("dee@shop.test", "addr-9"))
            .await
            .expect("the expired one does not count");
    }
    // Another shop counts its own.
    let (other, other_product, other_location) = stocked_product(stores, "unpaid-caps-b", 5).await;
    place(
        open_order(stores, other, &other_product, &other_location).await,
        guest("ann@shop.test", "addr-1"),
    )
    .await
    .expect("another shop");
}

pub async fn a_cancelled_unpaid_orders_promotion_use_is_given_back_exactly_once(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "give-back", 5).await;
    let promotion = uuid::Uuid::now_v7();
    stores
        .setup
        .create_record(
            &SetupRecord {
                id: promotion,
                tenant_id: t,
                kind: SetupKind::Promotion,
                key: "ONCE".into(),
                body: serde_json::json!({"code": "ONCE"}),
                usage_limit: Some(1),
                times_used: 0,
                version: 1,
            },
            &[],
        )
        .await
        .expect("promotion");
    let (cart, order, reservations) = open_order(stores, t, &p, &l).await;
    let checkout = PlaceOrder {
        promotion: Some(PromotionUse {
            promotion_id: keel_orders::setup::PromotionId::from_uuid(promotion),
            customer_key: "email:a@example.test".into(),
            per_customer_limit: None,
        }),
        ..checkout_of(&cart, &order, &reservations)
    };
    stores
        .orders
        .place_order(&checkout, &[], None)
        .await
        .expect("placed");
    let used = |stores: &Stores| {
        let setup = stores.setup.clone();
        async move {
            setup
                .get_record(t, SetupKind::Promotion, promotion)
                .await
                .expect("record")
                .times_used
        }
    };
    assert_eq!(used(stores).await, 1);
    let mut cancelled = stores.orders.get_order(t, order.id).await.expect("order");
    cancelled.status = OrderStatus::Cancelled;
    cancelled.version = 2;
    stores
        .orders
        .save_order(&cancelled, 1, &[], true, &[], None)
        .await
        .expect("cancelled");
    assert_eq!(used(stores).await, 0, "given back");
    cancelled.version = 3;
    stores
        .orders
        .save_order(&cancelled, 2, &[], true, &[], None)
        .await
        .expect("saved again");
    assert_eq!(used(stores).await, 0, "not twice");
}

pub async fn carts_idle_past_their_time_are_pruned_and_fresh_ones_stay(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "idle-carts", 0).await;
    let (old, _, _) = stored_cart(stores, t, &p, &l, &[1]).await;
    let later = old.updated_at + time::Duration::seconds(10);
    let (mut fresh, _, _) = cart_and_order(t, &p, &l, &[1]);
    fresh.created_at = later;
    fresh.updated_at = later;
    stores
        .carts
        .create_cart(&fresh, None, &[])
        .await
        .expect("cart");
    assert_eq!(
        stores
            .carts
            .prune_carts(old.updated_at, 100)
            .await
            .expect("prune"),
        0,
        "a cart changed exactly at the bound stays"
    );
    assert_eq!(
        stores
            .carts
            .prune_carts(old.updated_at + time::Duration::microseconds(1), 100)
            .await
            .expect("prune"),
        1
    );
    assert!(stores.carts.get_cart(t, old.id).await.is_err());
    assert!(stores.carts.get_cart(t, fresh.id).await.is_ok());
}
