//! Catalog and inventory behaviours, for every adapter.

use std::collections::HashSet;

use keel_catalog::{
    domain::{
        Adjustment, AdjustmentId, AdjustmentReason, Handle, Location, LocationId, Product,
        ProductDraft, ProductStatus, Reservation, ReservationId, Sku, VariantDraft, VariantId,
    },
    ports::{
        HANDLE_CONSTRAINT, INSUFFICIENT_STOCK, LOCATION_IN_USE, ProductCursor, ProductFilter,
        ProductSort, SKU_CONSTRAINT, STOCK_RESERVED, SaveProduct, VERSION_CONFLICT,
    },
};
use keel_kernel::{
    StoreError, TenantId,
    clock::{Clock, SystemClock},
    event::NewEvent,
    money::{Currency, Money},
    page::{Limit, PageRequest},
};

use crate::{Stores, create, unique_slug};

fn money(minor: i64, code: &str) -> Money {
    Money::new(minor, Currency::parse(code).expect("ISO 4217"))
}

fn draft(handle: &str, title: &str, skus: &[&str]) -> ProductDraft {
    ProductDraft {
        title: title.to_owned(),
        handle: Handle::parse(handle).expect("valid handle"),
        description: String::new(),
        status: ProductStatus::Active,
        options: Vec::new(),
        metadata: std::collections::BTreeMap::new(),
        variants: skus
            .iter()
            .map(|s| VariantDraft {
                sku: Sku::parse(s).expect("valid sku"),
                title: None,
                option_values: Vec::new(),
                weight_grams: Some(250),
                prices: vec![money(1999, "USD"), money(2500, "JPY"), money(1234, "KWD")],
            })
            .collect(),
    }
}

fn event_for(p: &Product, kind: &'static str) -> NewEvent {
    NewEvent::new(
        p.tenant_id,
        kind,
        &serde_json::json!({"product_id": p.id.to_string()}),
        p.updated_at,
    )
    .expect("serializable payload")
}

async fn insert(stores: &Stores, p: &Product) {
    stores
        .catalog
        .save_products(
            p.tenant_id,
            &[SaveProduct {
                product: p,
                expected_version: None,
            }],
            &[event_for(p, "product.created")],
        )
        .await
        .expect("save product");
}

async fn shop(stores: &Stores, prefix: &str) -> TenantId {
    create(stores, &unique_slug(prefix)).await.0.id
}

async fn count_events(stores: &Stores, tenant: TenantId, kind: &str) -> usize {
    stores
        .events
        .list(
            tenant,
            PageRequest::first(Limit::new(100).expect("limit")),
            Some(kind),
        )
        .await
        .expect("events")
        .items
        .len()
}

pub async fn a_product_round_trips_with_variants_and_exact_prices(stores: &Stores) {
    let t = shop(stores, "cat-rt").await;
    let p = Product::from_draft(
        t,
        draft("tee", "Tee", &["TEE-S", "TEE-M"]),
        SystemClock.now(),
    );
    insert(stores, &p).await;
    let read = stores.catalog.get_product(t, p.id).await.expect("read");
    assert_eq!(read, p, "every field, variant and price comes back exactly");
    assert_eq!(
        read.variants[0].price_in(Currency::parse("KWD").expect("KWD")),
        Some(money(1234, "KWD"))
    );
    let by_handle = stores
        .catalog
        .get_product_by_handle(t, &p.handle)
        .await
        .expect("by handle");
    assert_eq!(by_handle.id, p.id);
    assert_eq!(count_events(stores, t, "product.created").await, 1);
}

pub async fn a_variant_for_sale_carries_its_product_and_its_price_in_one_currency(stores: &Stores) {
    let t = shop(stores, "cat-sale").await;
    let mut d = draft("mug", "Mug", &["MUG-RED", "MUG-BLUE"]);
    d.variants[1].title = Some("Blue".into());
    d.status = ProductStatus::Draft;
    let p = Product::from_draft(t, d, SystemClock.now());
    insert(stores, &p).await;
    let usd = Currency::parse("USD").expect("USD");
    let blue = stores
        .catalog
        .variant_for_sale(t, p.variants[1].id, usd)
        .await
        .expect("for sale");
    assert_eq!(
        blue,
        keel_catalog::domain::VariantForSale {
            variant_id: p.variants[1].id,
            product_id: p.id,
            product_status: ProductStatus::Draft,
            product_title: "Mug".into(),
            sku: Sku::parse("MUG-BLUE").expect("sku"),
            variant_title: Some("Blue".into()),
            price: Some(money(1999, "USD")),
        }
    );
    let kwd = Currency::parse("KWD").expect("KWD");
    let red = stores
        .catalog
        .variant_for_sale(t, p.variants[0].id, kwd)
        .await
        .expect("for sale");
    assert_eq!(
        (red.variant_title, red.price),
        (None, Some(money(1234, "KWD")))
    );
    // A currency without a price: the variant, without a price.
    let eur = Currency::parse("EUR").expect("EUR");
    let none = stores
        .catalog
        .variant_for_sale(t, p.variants[0].id, eur)
        .await
        .expect("for sale");
    assert_eq!((none.sku.as_str(), none.price), ("MUG-RED", None));
    // Unknown here, and another tenant's variant: not found.
    let other = shop(stores, "cat-sale-b").await;
    for (tenant, variant) in [(t, VariantId::new()), (other, p.variants[0].id)] {
        let err = stores
            .catalog
            .variant_for_sale(tenant, variant, usd)
            .await
            .expect_err("not found");
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }
    // Several at once: the same answers, the unknown and the foreign left out.
    let mut many = stores
        .catalog
        .variants_for_sale(
            t,
            &[p.variants[0].id, VariantId::new(), p.variants[1].id],
            usd,
        )
        .await
        .expect("for sale");
    many.sort_by_key(|v| v.sku.as_str().to_owned());
    assert_eq!(many.len(), 2);
    assert_eq!(many[0], blue);
    assert_eq!(many[1].price, Some(money(1999, "USD")));
    assert!(
        stores
            .catalog
            .variants_for_sale(other, &[p.variants[0].id], usd)
            .await
            .expect("for sale")
            .is_empty(),
        "another shop's variants are not found"
    );
}

pub async fn a_failed_save_writes_neither_the_product_nor_its_event(stores: &Stores) {
    let t = shop(stores, "cat-abort").await;
    let now = SystemClock.now();
    let p = Product::from_draft(t, draft("mug", "Mug", &["MUG-1"]), now);
    // The same event twice: the second insert fails after the product rows were written, so
    // the transaction aborts mid-way.
    let twice = event_for(&p, "product.created");
    let err = stores
        .catalog
        .save_products(
            t,
            &[SaveProduct {
                product: &p,
                expected_version: None,
            }],
            &[twice.clone(), twice],
        )
        .await
        .expect_err("the duplicate event aborts the transaction");
    assert!(!matches!(err, StoreError::NotFound), "{err:?}");
    assert!(matches!(
        stores.catalog.get_product(t, p.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(count_events(stores, t, "product.created").await, 0);
    assert!(
        stores
            .catalog
            .sku_owners(t, &[Sku::parse("MUG-1").expect("sku")])
            .await
            .expect("owners")
            .is_empty(),
        "no variant row either"
    );
    // A batch whose second product takes the first one's SKU: neither is written.
    let first = Product::from_draft(t, draft("a", "A", &["DUP"]), now);
    let second = Product::from_draft(t, draft("b", "B", &["DUP"]), now);
    let err = stores
        .catalog
        .save_products(
            t,
            &[
                SaveProduct {
                    product: &first,
                    expected_version: None,
                },
                SaveProduct {
                    product: &second,
                    expected_version: None,
                },
            ],
            &[
                event_for(&first, "product.created"),
                event_for(&second, "product.created"),
            ],
        )
        .await
        .expect_err("duplicate SKU");
    assert!(err.is_conflict_on(SKU_CONSTRAINT), "{err:?}");
    assert!(matches!(
        stores.catalog.get_product(t, first.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(count_events(stores, t, "product.created").await, 0);
    insert(stores, &first).await;
    let same_handle = Product::from_draft(t, draft("a", "Again", &["OTHER"]), now);
    let err = stores
        .catalog
        .save_products(
            t,
            &[SaveProduct {
                product: &same_handle,
                expected_version: None,
            }],
            &[],
        )
        .await
        .expect_err("handle taken");
    assert!(err.is_conflict_on(HANDLE_CONSTRAINT), "{err:?}");
}

pub async fn stale_versions_are_refused_and_variants_follow_the_product(stores: &Stores) {
    let t = shop(stores, "cat-ver").await;
    let now = SystemClock.now();
    let p = Product::from_draft(t, draft("cap", "Cap", &["CAP-1", "CAP-2"]), now);
    insert(stores, &p).await;
    let mut next = p.clone();
    next.title = "Cap v2".into();
    next.version = 2;
    next.variants.remove(1);
    next.variants[0].prices = vec![money(500, "USD")];
    stores
        .catalog
        .save_products(
            t,
            &[SaveProduct {
                product: &next,
                expected_version: Some(1),
            }],
            &[],
        )
        .await
        .expect("update at version 1");
    let read = stores.catalog.get_product(t, p.id).await.expect("read");
    assert_eq!(
        read, next,
        "the removed variant is gone and prices were replaced"
    );
    let mut stale = p.clone();
    stale.title = "lost update".into();
    stale.version = 2;
    let err = stores
        .catalog
        .save_products(
            t,
            &[SaveProduct {
                product: &stale,
                expected_version: Some(1),
            }],
            &[event_for(&stale, "product.updated")],
        )
        .await
        .expect_err("stale");
    assert!(err.is_conflict_on(VERSION_CONFLICT), "{err:?}");
    assert_eq!(
        stores
            .catalog
            .get_product(t, p.id)
            .await
            .expect("read")
            .title,
        "Cap v2"
    );
    assert_eq!(count_events(stores, t, "product.updated").await, 0);
    let err = stores
        .catalog
        .delete_product(t, p.id, Some(1), &[])
        .await
        .expect_err("stale delete");
    assert!(err.is_conflict_on(VERSION_CONFLICT), "{err:?}");
    stores
        .catalog
        .delete_product(t, p.id, Some(2), &[event_for(&next, "product.deleted")])
        .await
        .expect("delete");
    assert!(matches!(
        stores.catalog.get_product(t, p.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn walk(
    stores: &Stores,
    t: TenantId,
    sort: ProductSort,
    insert_between: bool,
) -> Vec<Product> {
    let filter = ProductFilter {
        sort,
        ..ProductFilter::default()
    };
    let mut seen = Vec::new();
    let mut after: Option<ProductCursor> = None;
    let mut extra = 0;
    loop {
        let page = stores
            .catalog
            .list_products(t, &filter, Limit::new(7).expect("limit"), after.as_ref())
            .await
            .expect("page");
        seen.extend(page.items);
        if insert_between {
            // New products land before and after the cursor in both orders.
            extra += 1;
            let p = Product::from_draft(
                t,
                draft(
                    &format!("late-{sort:?}-{extra}").to_lowercase(),
                    &format!("{} late", ["A", "Z"][extra % 2]),
                    &[],
                ),
                SystemClock.now(),
            );
            insert(stores, &p).await;
        }
        match page.next_cursor {
            Some(c) => {
                // The cursor survives its wire form.
                after = Some(ProductCursor::decode(&c.encode(), sort).expect("own cursor"));
            }
            None => return seen,
        }
    }
}

pub async fn product_pages_have_no_gaps_or_duplicates_under_concurrent_inserts(stores: &Stores) {
    let t = shop(stores, "cat-page").await;
    let now = SystemClock.now();
    let mut originals = Vec::new();
    for i in 0..30 {
        // Titles out of creation order, with duplicates, so the title sort needs its id tiebreak.
        let p = Product::from_draft(
            t,
            draft(
                &format!("p-{i}"),
                &format!("Title {}", (i * 7) % 11),
                &[&format!("SKU-{i}")],
            ),
            now,
        );
        insert(stores, &p).await;
        originals.push(p.id);
    }
    for sort in [ProductSort::Created, ProductSort::Title] {
        let seen = walk(stores, t, sort, true).await;
        let ids: Vec<_> = seen.iter().map(|p| p.id).collect();
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "no duplicates ({sort:?})");
        for id in &originals {
            assert!(ids.contains(id), "no gaps ({sort:?})");
        }
        let keys: Vec<_> = match sort {
            ProductSort::Created => seen.iter().map(|p| (String::new(), p.id)).collect(),
            ProductSort::Title => seen.iter().map(|p| (p.title.clone(), p.id)).collect(),
        };
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "ordered ({sort:?})");
        assert!(
            seen.iter().all(|p| p.variants.len() <= 1),
            "variants attached to their own product"
        );
    }
    let err = ProductCursor::decode(
        &ProductCursor::after(
            &stores
                .catalog
                .get_product(t, originals[0])
                .await
                .expect("p"),
            ProductSort::Title,
        )
        .encode(),
        ProductSort::Created,
    );
    assert!(err.is_err(), "a cursor of another sort is refused");
}

pub async fn product_filters_select_by_status_time_and_text(stores: &Stores) {
    let t = shop(stores, "cat-filter").await;
    let now = SystemClock.now();
    let mut draft_one = draft("draft-hat", "Winter Hat", &["HAT-W"]);
    draft_one.status = ProductStatus::Draft;
    let hat = Product::from_draft(t, draft_one, now);
    insert(stores, &hat).await;
    let scarf = Product::from_draft(
        t,
        draft("scarf", "Scarf", &["WOOL-77"]),
        now + time::Duration::seconds(10),
    );
    insert(stores, &scarf).await;
    let list = |filter: ProductFilter| async move {
        stores
            .catalog
            .list_products(t, &filter, Limit::new(100).expect("limit"), None)
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(ProductFilter {
            status: Some(ProductStatus::Draft),
            ..ProductFilter::default()
        })
        .await,
        vec![hat.id]
    );
    assert_eq!(
        list(ProductFilter {
            updated_since: Some(now + time::Duration::seconds(5)),
            ..ProductFilter::default()
        })
        .await,
        vec![scarf.id]
    );
    assert_eq!(
        list(ProductFilter {
            q: Some("winter".into()),
            ..ProductFilter::default()
        })
        .await,
        vec![hat.id],
        "title, case-insensitively"
    );
    assert_eq!(
        list(ProductFilter {
            q: Some("ool-7".into()),
            ..ProductFilter::default()
        })
        .await,
        vec![scarf.id],
        "a variant's SKU"
    );
    assert_eq!(
        list(ProductFilter {
            q: Some("%".into()),
            ..ProductFilter::default()
        })
        .await,
        Vec::new(),
        "the query is text, not a pattern"
    );
}

pub async fn tenant_b_cannot_read_tenant_a_products(stores: &Stores) {
    let a = shop(stores, "cat-a").await;
    let b = shop(stores, "cat-b").await;
    let p = Product::from_draft(a, draft("secret", "Secret", &["SEC-1"]), SystemClock.now());
    insert(stores, &p).await;
    assert!(matches!(
        stores.catalog.get_product(b, p.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        stores.catalog.get_product_by_handle(b, &p.handle).await,
        Err(StoreError::NotFound)
    ));
    let listed = stores
        .catalog
        .list_products(
            b,
            &ProductFilter::default(),
            Limit::new(100).expect("limit"),
            None,
        )
        .await
        .expect("list");
    assert!(listed.items.is_empty());
    assert!(
        stores
            .catalog
            .sku_owners(b, &[Sku::parse("SEC-1").expect("sku")])
            .await
            .expect("owners")
            .is_empty()
    );
    // The same handle and SKU are free in another shop.
    let twin = Product::from_draft(b, draft("secret", "Twin", &["SEC-1"]), SystemClock.now());
    insert(stores, &twin).await;
    let err = stores
        .catalog
        .delete_product(b, p.id, None, &[])
        .await
        .expect_err("another shop's product");
    assert!(matches!(err, StoreError::NotFound));
}

pub(crate) async fn stocked_product(
    stores: &Stores,
    prefix: &str,
    on_hand: i64,
) -> (TenantId, Product, Location) {
    let t = shop(stores, prefix).await;
    let now = SystemClock.now();
    let p = Product::from_draft(
        t,
        draft("stock", "Stocked", &[&format!("{prefix}-SKU")]),
        now,
    );
    insert(stores, &p).await;
    let l = Location {
        id: LocationId::new(),
        tenant_id: t,
        name: "Main".into(),
        created_at: now,
        updated_at: now,
        version: 1,
    };
    stores
        .inventory
        .create_location(&l, &[])
        .await
        .expect("location");
    if on_hand > 0 {
        adjust(stores, &p, &l, on_hand).await.expect("stock up");
    }
    (t, p, l)
}

async fn adjust(
    stores: &Stores,
    p: &Product,
    l: &Location,
    delta: i64,
) -> Result<keel_catalog::domain::InventoryLevel, StoreError> {
    let a = Adjustment {
        id: AdjustmentId::new(),
        tenant_id: p.tenant_id,
        variant_id: p.variants[0].id,
        location_id: l.id,
        delta,
        reason: AdjustmentReason::Received,
        note: None,
        actor: "usr_test".into(),
        created_at: SystemClock.now(),
    };
    let e = NewEvent::new(
        p.tenant_id,
        "inventory.adjusted",
        &serde_json::json!({"delta": delta}),
        a.created_at,
    )
    .expect("payload");
    stores.inventory.adjust(&a, &[e]).await
}

fn reservation(p: &Product, l: &Location, quantity: i64) -> Reservation {
    Reservation {
        id: ReservationId::new(),
        tenant_id: p.tenant_id,
        variant_id: p.variants[0].id,
        location_id: l.id,
        quantity,
        created_at: SystemClock.now(),
        released_at: None,
    }
}

pub async fn concurrent_reservations_never_exceed_stock(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "res-race", 37).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let inventory = stores.inventory.clone();
        let r = reservation(&p, &l, 1);
        tasks.spawn(async move { inventory.reserve(&r, &[]).await });
    }
    let (mut won, mut short) = (0, 0);
    while let Some(outcome) = tasks.join_next().await {
        match outcome.expect("task") {
            Ok(level) => {
                won += 1;
                assert!(level.reserved <= level.on_hand, "{level:?}");
            }
            Err(e) if e.is_conflict_on(INSUFFICIENT_STOCK) => short += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((won, short), (37, 63));
    let levels = stores
        .inventory
        .list_levels(t, Some(p.variants[0].id), None, PageRequest::default())
        .await
        .expect("levels");
    assert_eq!(levels.items.len(), 1);
    assert_eq!(
        (levels.items[0].on_hand, levels.items[0].reserved),
        (37, 37)
    );
    assert_eq!(levels.items[0].available(), 0);
}

pub async fn checkout_finds_the_first_location_with_enough_unreserved_stock(stores: &Stores) {
    let (t, p, first) = stocked_product(stores, "loc-stock", 5).await;
    let variant = p.variants[0].id;
    let now = SystemClock.now();
    let second = Location {
        id: LocationId::new(),
        tenant_id: t,
        name: "Overflow".into(),
        created_at: now,
        updated_at: now,
        version: 1,
    };
    stores
        .inventory
        .create_location(&second, &[])
        .await
        .expect("location");
    adjust(stores, &p, &second, 20).await.expect("stock up");
    let at = |q| stores.inventory.location_with_stock(t, variant, q);
    // The first level (stocked first) while it holds enough, else the next that does.
    assert_eq!(at(5).await.expect("read"), Some(first.id));
    assert_eq!(at(6).await.expect("read"), Some(second.id));
    assert_eq!(at(21).await.expect("read"), None);
    // Reserved stock is not available.
    stores
        .inventory
        .reserve(&reservation(&p, &first, 3), &[])
        .await
        .expect("reserve");
    assert_eq!(at(2).await.expect("read"), Some(first.id));
    assert_eq!(at(3).await.expect("read"), Some(second.id));
    // Another tenant sees none of it.
    let other = shop(stores, "loc-stock-b").await;
    assert_eq!(
        stores
            .inventory
            .location_with_stock(other, variant, 1)
            .await
            .expect("read"),
        None
    );
}

pub async fn adjustments_are_ledgered_and_never_drop_stock_below_reserved(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "adj", 10).await;
    stores
        .inventory
        .reserve(&reservation(&p, &l, 4), &[])
        .await
        .expect("reserve 4");
    let err = adjust(stores, &p, &l, -7)
        .await
        .expect_err("10 - 7 < 4 reserved");
    assert!(err.is_conflict_on(INSUFFICIENT_STOCK), "{err:?}");
    let level = adjust(stores, &p, &l, -6)
        .await
        .expect("10 - 6 = 4 = reserved");
    assert_eq!((level.on_hand, level.reserved), (4, 4));
    let err = adjust(stores, &p, &l, 1_000_000_000)
        .await
        .expect_err("over the bound");
    assert!(err.is_conflict_on(INSUFFICIENT_STOCK), "{err:?}");
    assert_eq!(
        count_events(stores, t, "inventory.adjusted").await,
        2,
        "one per applied adjustment"
    );
    let other = Location {
        id: LocationId::new(),
        ..l.clone()
    };
    let err = adjust(stores, &p, &other, 1)
        .await
        .expect_err("unknown location");
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    let b = shop(stores, "adj-b").await;
    let foreign = Location {
        tenant_id: b,
        ..l.clone()
    };
    let mut foreign_product = p.clone();
    foreign_product.tenant_id = b;
    let err = adjust(stores, &foreign_product, &foreign, 1)
        .await
        .expect_err("another shop's stock");
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

pub async fn a_reservation_is_released_once(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "rel", 5).await;
    let r = reservation(&p, &l, 3);
    stores.inventory.reserve(&r, &[]).await.expect("reserve");
    let err = stores
        .inventory
        .reserve(&reservation(&p, &l, 3), &[])
        .await
        .expect_err("only 2 left");
    assert!(err.is_conflict_on(INSUFFICIENT_STOCK));
    assert!(
        stores
            .inventory
            .release(t, r.id, SystemClock.now(), &[])
            .await
            .expect("release")
    );
    assert!(
        !stores
            .inventory
            .release(t, r.id, SystemClock.now(), &[])
            .await
            .expect("again"),
        "released once"
    );
    let levels = stores
        .inventory
        .list_levels(t, None, Some(l.id), PageRequest::default())
        .await
        .expect("levels");
    assert_eq!(levels.items[0].reserved, 0);
    assert_eq!(
        stores
            .inventory
            .available(t, &[p.variants[0].id])
            .await
            .expect("available"),
        vec![(p.variants[0].id, 5)]
    );
}

pub async fn reserved_stock_pins_its_variant_and_stocked_locations_stay(stores: &Stores) {
    let (t, p, l) = stocked_product(stores, "pin", 2).await;
    let r = reservation(&p, &l, 1);
    stores.inventory.reserve(&r, &[]).await.expect("reserve");
    let err = stores
        .catalog
        .delete_product(t, p.id, None, &[])
        .await
        .expect_err("reserved");
    assert!(err.is_conflict_on(STOCK_RESERVED), "{err:?}");
    let err = stores
        .inventory
        .delete_location(t, l.id, None, &[])
        .await
        .expect_err("stocked");
    assert!(err.is_conflict_on(LOCATION_IN_USE), "{err:?}");
    stores
        .inventory
        .release(t, r.id, SystemClock.now(), &[])
        .await
        .expect("release");
    stores
        .catalog
        .delete_product(t, p.id, None, &[])
        .await
        .expect("deletable once released");
    assert!(
        stores
            .inventory
            .list_levels(t, None, Some(l.id), PageRequest::default())
            .await
            .expect("levels")
            .items
            .is_empty(),
        "its levels went with it"
    );
    stores
        .inventory
        .delete_location(t, l.id, None, &[])
        .await
        .expect("empty location");
}
