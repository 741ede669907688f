//! The load generator behind `keel bench`: it drives a *running* Keel over real HTTP, as
//! storefronts do, and reports exact counts and latency percentiles per route.
//!
//! Bounded by construction: the target must be a loopback address, every run has an exact
//! iteration budget and an exact time limit (whichever ends first), and concurrency is capped.
#![forbid(unsafe_code)]

pub mod realtime;
mod stripe;
pub mod webhooks;

use stripe::BENCH_STRIPE_KEY;
pub use stripe::{ProviderLoadReport, enable_stripe, provider_load};

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The most workers a run may have.
pub const MAX_CONCURRENCY: u32 = 1024;
/// The longest a run may last.
pub const MAX_DURATION: Duration = Duration::from_mins(10);
/// The largest iteration budget.
pub const MAX_ITERATIONS: u64 = 10_000_000;

/// What a worker does per iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// One storefront read: the product list and a product page, alternately.
    Browse,
    /// The same reads through the storefront GraphQL schema (`POST /v1/store/graphql`).
    GraphqlBrowse,
    /// The whole shopper flow, from a new cart to a paid order.
    Checkout,
    /// `browses` browse iterations, then `checkouts` checkouts, repeated (exact counts).
    Mixed { browses: u32, checkouts: u32 },
}

/// How a checkout's order is paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payment {
    /// Staff record a manual payment (one admin request): the figures compare with runs
    /// before payments went through a provider.
    Manual,
    /// Through the provider as a shopper pays: a payment session from Keel, the payment
    /// confirmed at the Stripe simulator (localstripe) as Stripe.js would, and the order
    /// counted once Keel shows it paid (the simulator's signed webhook reached Keel). The
    /// server's `KEEL_PAYMENTS__STRIPE__API_BASE` must be the same simulator.
    Stripe { simulator: String },
}

/// The shop the load runs against (made by [`setup`]).
#[derive(Debug, Clone)]
pub struct Shop {
    pub publishable_key: String,
    pub staff_token: String,
    /// Variant ids, in product order.
    pub variants: Vec<String>,
    /// Product handles, in product order.
    pub handles: Vec<String>,
    pub shipping_option: String,
}

/// Sends of one request with an `Idempotency-Key` whose answer is lost, at most.
pub const KEYED_ATTEMPTS: u32 = 3;
/// The exact wait before sending it again.
pub const KEYED_RETRY_DELAY: Duration = Duration::from_millis(200);

/// The options of one load run; every value exact.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub scenario: Scenario,
    pub concurrency: u32,
    /// Iterations in all (a browse iteration is one request; a checkout is the whole flow).
    pub iterations: u64,
    /// The run stops at this time even when iterations remain.
    pub duration: Duration,
    /// Counts orders acknowledged as paid while the run goes on (for a watcher).
    pub paid: Arc<AtomicU64>,
    pub payment: Payment,
}

/// A Keel on loopback and an HTTP client for it.
#[derive(Debug, Clone)]
pub struct Target {
    base: String,
    client: reqwest::Client,
}

impl Target {
    /// Refuses any address but loopback: a load test never leaves the machine.
    pub fn new(url: &str, concurrency: u32) -> anyhow::Result<Self> {
        let parsed =
            url::Url::parse(url).context("--url must be a URL such as http://127.0.0.1:8080")?;
        ensure!(
            parsed.scheme() == "http",
            "--url must be http:// on loopback"
        );
        ensure!(
            is_loopback(&parsed),
            "--url must be a loopback address (127.0.0.1, ::1 or localhost)"
        );
        // The client is built without a TLS provider of its own; ring is Keel's (a second
        // install is refused harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::try_from(concurrency).unwrap_or(1))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            client,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }
}

/// Whether `url` names a loopback address (a load test never leaves the machine).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Sends an admin request during setup; any non-2xx is an error naming the path.
async fn setup_call(
    target: &Target,
    token: &str,
    method: Method,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let res = target
        .request(method, path)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("{path}: no answer"))?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    ensure!(status.is_success(), "{path}: {status}: {text}");
    serde_json::from_str(&text).with_context(|| format!("{path}: not JSON"))
}

/// Builds the shop: the owner's password from the setup token, `products` active products (one
/// variant each, 1000 + i cents, `stock` units), a New York tax rate, US shipping and a
/// publishable key.
pub async fn setup(
    target: &Target,
    setup_token: &str,
    products: u32,
    stock: i64,
) -> anyhow::Result<Shop> {
    ensure!(
        (1..=10_000).contains(&products),
        "--products must be 1 to 10000"
    );
    let res = target
        .request(Method::POST, "/v1/auth/setup")
        .json(&json!({"setup_token": setup_token, "password": "bench-quartz-meadow-ferry-4410"}))
        .send()
        .await
        .context("setup: no answer")?;
    ensure!(res.status().is_success(), "setup: {}", res.status());
    let tokens: Value = res.json().await.context("setup: not JSON")?;
    let token = tokens["access_token"]
        .as_str()
        .context("setup: no access token")?
        .to_owned();
    let mut variants = Vec::new();
    let mut handles = Vec::new();
    let all: Vec<u32> = (0..products).collect();
    for chunk in all.chunks(500) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"title": format!("Bench product {i}"), "handle": format!("bench-{i}"), "status": "active",
                    "variants": [{"sku": format!("BENCH-{i}"), "prices": [{"amount": 1000 + i64::from(*i), "currency": "USD"}]}]})
            })
            .collect();
        let done = setup_call(
            target,
            &token,
            Method::POST,
            "/v1/admin/products/batch",
            json!({"products": batch}),
        )
        .await?;
        for p in done["data"].as_array().context("batch: no data")? {
            handles.push(p["handle"].as_str().context("batch: no handle")?.to_owned());
            variants.push(
                p["variants"][0]["id"]
                    .as_str()
                    .context("batch: no variant")?
                    .to_owned(),
            );
        }
    }
    let location = setup_call(
        target,
        &token,
        Method::POST,
        "/v1/admin/stock-locations",
        json!({"name": "Bench"}),
    )
    .await?;
    for v in &variants {
        setup_call(
            target,
            &token,
            Method::POST,
            "/v1/admin/inventory/adjustments",
            json!({"variant": v, "location": location["id"], "delta": stock, "reason": "received"}),
        )
        .await?;
    }
    setup_call(
        target,
        &token,
        Method::POST,
        "/v1/admin/tax-rates",
        json!({"country": "US", "region": "NY", "rate": "8.875"}),
    )
    .await?;
    let ship = setup_call(target, &token, Method::POST, "/v1/admin/shipping-options",
        json!({"name": "Standard", "country": "US", "amounts": [{"amount": 795, "currency": "USD"}]})).await?;
    let key = setup_call(
        target,
        &token,
        Method::POST,
        "/v1/admin/api-keys",
        json!({"name": "bench", "kind": "publishable"}),
    )
    .await?;
    Ok(Shop {
        publishable_key: key["secret"].as_str().context("no key secret")?.to_owned(),
        staff_token: token,
        variants,
        handles,
        shipping_option: ship["id"]
            .as_str()
            .context("no shipping option id")?
            .to_owned(),
    })
}

/// What one worker saw.
#[derive(Debug, Default)]
struct Tally {
    /// Microseconds per request, by route template.
    latencies: BTreeMap<&'static str, Vec<u64>>,
    /// Failed requests by route and status (0: no HTTP answer).
    errors: BTreeMap<(&'static str, u16), u64>,
    orders: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Self) {
        for (route, mut l) in other.latencies {
            self.latencies.entry(route).or_default().append(&mut l);
        }
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.orders.extend(other.orders);
    }
}

/// One worker's view of the shop.
struct Worker {
    target: Target,
    shop: Arc<Shop>,
    paid: Arc<AtomicU64>,
    payment: Payment,
    tally: Tally,
    /// Picks products round-robin, offset per worker.
    next: usize,
}

impl Worker {
    /// One timed request; answers the JSON body of a 2xx.
    async fn call(
        &mut self,
        route: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Option<Vec<u8>> {
        let mut req = self
            .target
            .request(method, path)
            .header("keel-publishable-key", &self.shop.publishable_key);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let started = Instant::now();
        let res = req.send().await;
        let outcome = match res {
            Ok(r) => {
                let status = r.status();
                let bytes = r.bytes().await;
                // The body is only read here; the few fields a flow needs are parsed by the
                // caller, after the clock stops (parsing every body into a JSON tree was a
                // fifth of the generator's CPU, and it was inside the measured latency).
                match bytes {
                    Ok(b) if status.is_success() => Ok(b.to_vec()),
                    _ => Err(status.as_u16()),
                }
            }
            Err(e) => Err(e.status().map_or(0, |s: StatusCode| s.as_u16())),
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.tally.latencies.entry(route).or_default().push(micros);
        match outcome {
            Ok(v) => Some(v),
            Err(status) => {
                *self.tally.errors.entry((route, status)).or_default() += 1;
                None
            }
        }
    }

    /// [`Worker::call`] for a request that carries an `Idempotency-Key`: what a careful client
    /// does when the answer is lost (no answer, or a proxy's 502/503 because the node died):
    /// the same request with the same key, after an exact delay, at most [`KEYED_ATTEMPTS`]
    /// times. The key makes a repeat safe (the first answer if it was committed, else a fresh
    /// attempt); every failed attempt still counts as an error.
    async fn call_keyed(
        &mut self,
        route: &'static str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<Vec<u8>> {
        for attempt in 1..=KEYED_ATTEMPTS {
            let before = self.lost_answers(route);
            if let Some(body) = self.call(route, method.clone(), path, None, headers).await {
                return Some(body);
            }
            if self.lost_answers(route) == before || attempt == KEYED_ATTEMPTS {
                return None;
            }
            tokio::time::sleep(KEYED_RETRY_DELAY).await;
        }
        None
    }

    /// Answers of `route` lost so far (no answer, 502, 503).
    fn lost_answers(&self, route: &'static str) -> u64 {
        [0, 502, 503]
            .iter()
            .filter_map(|s| self.tally.errors.get(&(route, *s)))
            .sum()
    }

    fn pick(&mut self) -> usize {
        self.next = (self.next + 1) % self.shop.variants.len();
        self.next
    }

    async fn browse(&mut self, n: u64) {
        if n.is_multiple_of(2) {
            self.call(
                "GET /v1/store/products",
                Method::GET,
                "/v1/store/products?currency=USD&limit=20",
                None,
                &[],
            )
            .await;
        } else {
            let i = self.pick();
            let path = format!("/v1/store/products/{}?currency=USD", self.shop.handles[i]);
            self.call(
                "GET /v1/store/products/{id_or_handle}",
                Method::GET,
                &path,
                None,
                &[],
            )
            .await;
        }
    }

    /// [`Self::browse`] through GraphQL: the same fields as REST's answers.
    async fn graphql_browse(&mut self, n: u64) {
        const FIELDS: &str = "id title handle description variants { id sku title price { amount currency } inStock }";
        let body = if n.is_multiple_of(2) {
            json!({"query": format!("{{ products(currency: \"USD\", first: 20) {{ edges {{ cursor node {{ {FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}")})
        } else {
            let i = self.pick();
            json!({"query": format!("query($h: String!) {{ product(idOrHandle: $h, currency: \"USD\") {{ {FIELDS} }} }}"),
                   "variables": {"h": self.shop.handles[i]}})
        };
        let route = if n.is_multiple_of(2) {
            "POST /v1/store/graphql products"
        } else {
            "POST /v1/store/graphql product"
        };
        self.call(route, Method::POST, "/v1/store/graphql", Some(body), &[])
            .await;
    }

    /// Three items, the address and the shipping option; answers whether all were accepted.
    async fn fill_cart(&mut self, id: &str, secret: &str) -> bool {
        let auth = [("keel-cart-secret", secret)];
        for _ in 0..3 {
            let i = self.pick();
            let v = self.shop.variants[i].clone();
            if self
                .call(
                    "POST /v1/store/carts/{id}/items",
                    Method::POST,
                    &format!("/v1/store/carts/{id}/items"),
                    Some(json!({"variant_id": v, "quantity": 1})),
                    &auth,
                )
                .await
                .is_none()
            {
                return false;
            }
        }
        let address = json!({"name": "Bench Shopper", "line1": "1 Main St", "city": "New York", "region": "NY", "postal_code": "10001", "country": "US"});
        if self
            .call(
                "PUT /v1/store/carts/{id}/shipping-address",
                Method::PUT,
                &format!("/v1/store/carts/{id}/shipping-address"),
                Some(address),
                &auth,
            )
            .await
            .is_none()
        {
            return false;
        }
        let option = json!({"shipping_option_id": self.shop.shipping_option});
        if self
            .call(
                "PUT /v1/store/carts/{id}/shipping-option",
                Method::PUT,
                &format!("/v1/store/carts/{id}/shipping-option"),
                Some(option),
                &auth,
            )
            .await
            .is_none()
        {
            return false;
        }
        true
    }

    /// The whole shopper flow; answers whether an order was placed and paid.
    async fn checkout(&mut self) -> bool {
        let Some((order_id, secret)) = self.place().await else {
            return false;
        };
        let paid = match self.payment.clone() {
            Payment::Manual => self.pay_manually(&order_id).await,
            Payment::Stripe { simulator } => self.pay_at(&simulator, &order_id, &secret).await,
        };
        if !paid {
            return false;
        }
        self.tally.orders.push(order_id);
        self.paid.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// A cart filled and checked out: the order's id and the cart's secret.
    async fn place(&mut self) -> Option<(String, String)> {
        let CreatedCart {
            cart: CartRef { id },
            cart_secret: secret,
        } = self
            .call(
                "POST /v1/store/carts",
                Method::POST,
                "/v1/store/carts",
                Some(json!({"currency": "USD"})),
                &[],
            )
            .await
            .and_then(|b| serde_json::from_slice(&b).ok())?;
        if !self.fill_cart(&id, &secret).await {
            return None;
        }
        let key = uuid::Uuid::now_v7().to_string();
        let with_key = [
            ("keel-cart-secret", secret.as_str()),
            ("idempotency-key", key.as_str()),
        ];
        let PlacedOrder { id: order_id } = self
            .call_keyed(
                "POST /v1/store/carts/{id}/checkout",
                Method::POST,
                &format!("/v1/store/carts/{id}/checkout"),
                &with_key,
            )
            .await
            .and_then(|b| serde_json::from_slice(&b).ok())?;
        Some((order_id, secret))
    }
}

impl Worker {
    /// Staff record the payment (the storefront cannot mark an order paid).
    async fn pay_manually(&mut self, order_id: &str) -> bool {
        let pay_key = uuid::Uuid::now_v7().to_string();
        let bearer = format!("Bearer {}", self.shop.staff_token);
        let with_pay_key = [
            ("authorization", bearer.as_str()),
            ("idempotency-key", pay_key.as_str()),
        ];
        self.call_keyed(
            "POST /v1/admin/orders/{id}/payments",
            Method::POST,
            &format!("/v1/admin/orders/{order_id}/payments"),
            &with_pay_key,
        )
        .await
        .is_some()
    }

    /// The shopper's payment through the provider: Keel's payment session, the payment
    /// confirmed at the simulator (not timed: it is the simulator's time), then Keel's order
    /// read until the provider's webhook made it paid (bounded: 30 s).
    async fn pay_at(&mut self, simulator: &str, order_id: &str, secret: &str) -> bool {
        let auth = [("keel-cart-secret", secret)];
        let Some(session) = self
            .call(
                "POST /v1/store/orders/{id}/payment-sessions",
                Method::POST,
                &format!("/v1/store/orders/{order_id}/payment-sessions"),
                None,
                &auth,
            )
            .await
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            return false;
        };
        let Some(intent) = session["provider_reference"].as_str() else {
            return false;
        };
        if !self.confirm_at(simulator, intent).await {
            *self
                .tally
                .errors
                .entry(("simulator: confirm", 0))
                .or_default() += 1;
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Some(order) = self
                .call(
                    "GET /v1/store/orders/{id}",
                    Method::GET,
                    &format!("/v1/store/orders/{order_id}"),
                    None,
                    &auth,
                )
                .await
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                return false;
            };
            if order["status"] == "paid" {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        *self
            .tally
            .errors
            .entry(("webhook: order paid", 0))
            .or_default() += 1;
        false
    }

    /// What Stripe.js does in the shopper's browser: a test card, attached, confirmed.
    async fn confirm_at(&self, simulator: &str, intent: &str) -> bool {
        let base = simulator.trim_end_matches('/');
        let client = &self.target.client;
        let pm = client
            .post(format!("{base}/v1/payment_methods"))
            .bearer_auth(BENCH_STRIPE_KEY)
            .form(&[
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2030"),
                ("card[cvc]", "123"),
            ])
            .send()
            .await;
        let Ok(pm) = pm else { return false };
        let Ok(pm) = pm.json::<Value>().await else {
            return false;
        };
        let Some(pm) = pm["id"].as_str() else {
            return false;
        };
        let attached = client
            .post(format!("{base}/v1/payment_intents/{intent}"))
            .bearer_auth(BENCH_STRIPE_KEY)
            .form(&[("payment_method", pm)])
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        attached
            && client
                .post(format!("{base}/v1/payment_intents/{intent}/confirm"))
                .bearer_auth(BENCH_STRIPE_KEY)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
    }
}

/// What the checkout flow reads of a created cart (other fields are skipped unparsed).
#[derive(Deserialize)]
struct CreatedCart {
    cart: CartRef,
    cart_secret: String,
}

#[derive(Deserialize)]
struct CartRef {
    id: String,
}

/// What the checkout flow reads of a placed order.
#[derive(Deserialize)]
struct PlacedOrder {
    id: String,
}

/// Latency figures of one route, in microseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RouteReport {
    pub route: String,
    pub requests: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub concurrency: u32,
    pub elapsed_us: u64,
    pub iterations: u64,
    pub requests: u64,
    /// Requests per second, in thousandths (integer arithmetic: `requests * 10^9 / elapsed_us`).
    pub requests_per_s_milli: u64,
    pub orders: u64,
    pub orders_per_s_milli: u64,
    pub routes: Vec<RouteReport>,
    /// `"<route> <status>"` (status 0: no HTTP answer) -> count.
    pub errors: BTreeMap<String, u64>,
    /// The ids of the orders the server acknowledged as paid.
    #[serde(skip)]
    pub order_ids: Vec<String>,
}

/// The value at rank `ceil(p * n / 100)` of sorted `xs` (nearest rank; exact integers).
pub fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = u64::try_from(sorted.len()).unwrap_or(u64::MAX);
    let rank = (p * n).div_ceil(100).clamp(1, n);
    sorted[usize::try_from(rank - 1).unwrap_or(0)]
}

/// `count` per second, in thousandths, over `elapsed_us`.
pub fn per_second_milli(count: u64, elapsed_us: u64) -> u64 {
    let v = u128::from(count) * 1_000_000_000 / u128::from(elapsed_us.max(1));
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Runs the load: `concurrency` workers take iterations from one exact budget until it is
/// spent or the time limit passes.
pub async fn run(target: &Target, shop: Shop, opts: &LoadOptions) -> anyhow::Result<Report> {
    ensure!(
        (1..=MAX_CONCURRENCY).contains(&opts.concurrency),
        "--concurrency must be 1 to {MAX_CONCURRENCY}"
    );
    ensure!(
        (1..=MAX_ITERATIONS).contains(&opts.iterations),
        "--iterations must be 1 to {MAX_ITERATIONS}"
    );
    ensure!(
        !opts.duration.is_zero() && opts.duration <= MAX_DURATION,
        "--duration-s must be 1 to {}",
        MAX_DURATION.as_secs()
    );
    if let Scenario::Mixed { browses, checkouts } = opts.scenario
        && browses + checkouts == 0
    {
        bail!("a mixed cycle needs at least one browse or checkout");
    }
    let shop = Arc::new(shop);
    let taken = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + opts.duration;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..opts.concurrency {
        let mut worker = Worker {
            target: target.clone(),
            shop: shop.clone(),
            paid: opts.paid.clone(),
            payment: opts.payment.clone(),
            tally: Tally::default(),
            next: usize::try_from(w).unwrap_or(0) % shop.variants.len().max(1),
        };
        let (taken, scenario, budget) = (taken.clone(), opts.scenario, opts.iterations);
        workers.spawn(async move {
            loop {
                let n = taken.fetch_add(1, Ordering::Relaxed);
                if n >= budget || Instant::now() >= deadline {
                    break;
                }
                match scenario {
                    Scenario::Browse => worker.browse(n).await,
                    Scenario::GraphqlBrowse => worker.graphql_browse(n).await,
                    Scenario::Checkout => {
                        worker.checkout().await;
                    }
                    Scenario::Mixed { browses, checkouts } => {
                        let cycle = u64::from(browses) + u64::from(checkouts);
                        if n % cycle < u64::from(browses) {
                            worker.browse(n).await;
                        } else {
                            worker.checkout().await;
                        }
                    }
                }
            }
            worker.tally
        });
    }
    let mut tally = Tally::default();
    while let Some(done) = workers.join_next().await {
        tally.merge(done.context("a worker panicked")?);
    }
    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let iterations = taken.load(Ordering::Relaxed).min(opts.iterations);
    let mut routes = Vec::new();
    let mut requests = 0;
    for (route, mut l) in tally.latencies {
        l.sort_unstable();
        let n = u64::try_from(l.len()).unwrap_or(u64::MAX);
        requests += n;
        routes.push(RouteReport {
            route: route.to_owned(),
            requests: n,
            p50_us: percentile(&l, 50),
            p95_us: percentile(&l, 95),
            p99_us: percentile(&l, 99),
            max_us: l.last().copied().unwrap_or(0),
        });
    }
    let orders = u64::try_from(tally.orders.len()).unwrap_or(u64::MAX);
    Ok(Report {
        scenario: opts.scenario,
        concurrency: opts.concurrency,
        elapsed_us,
        iterations,
        requests,
        requests_per_s_milli: per_second_milli(requests, elapsed_us),
        orders,
        orders_per_s_milli: per_second_milli(orders, elapsed_us),
        routes,
        errors: tally
            .errors
            .into_iter()
            .map(|((route, status), n)| (format!("{route} {status}"), n))
            .collect(),
        order_ids: tally.orders,
    })
}

/// `12345` thousandths as `12.345`.
pub fn milli(v: u64) -> String {
    format!("{}.{:03}", v / 1000, v % 1000)
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "scenario {:?}, concurrency {}, {} iterations in {} ms\n\
             requests: {} ({} /s)   orders placed and paid: {} ({} /s)\n\n",
            self.scenario,
            self.concurrency,
            self.iterations,
            self.elapsed_us / 1000,
            self.requests,
            milli(self.requests_per_s_milli),
            self.orders,
            milli(self.orders_per_s_milli),
        );
        let _ = writeln!(
            out,
            "{:<44} {:>9} {:>10} {:>10} {:>10} {:>10}",
            "route", "requests", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for r in &self.routes {
            let _ = writeln!(
                out,
                "{:<44} {:>9} {:>10} {:>10} {:>10} {:>10}",
                r.route,
                r.requests,
                milli(r.p50_us),
                milli(r.p95_us),
                milli(r.p99_us),
                milli(r.max_us)
            );
        }
        if self.errors.is_empty() {
            out.push_str("\nerrors: none\n");
        } else {
            out.push_str("\nerrors:\n");
            for (k, n) in &self.errors {
                let _ = writeln!(out, "  {k}: {n}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_are_exact() {
        let xs: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&xs, 50), 50);
        assert_eq!(percentile(&xs, 95), 95);
        assert_eq!(percentile(&xs, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
        assert_eq!(percentile(&[], 50), 0);
    }

    #[test]
    fn rates_are_integer_thousandths() {
        assert_eq!(per_second_milli(3, 2_000_000), 1_500);
        assert_eq!(milli(1_500), "1.500");
        assert_eq!(per_second_milli(1, 3_000_000), 333);
    }

    #[test]
    fn only_loopback_targets_are_accepted() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
            "http://localhost:8080",
        ] {
            assert!(Target::new(ok, 4).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:8080",
            "http://example.com",
            "https://127.0.0.1",
            "file:///x",
        ] {
            assert!(Target::new(bad, 4).is_err(), "{bad}");
        }
    }
}
