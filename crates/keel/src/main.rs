//! `keel`: one binary, several roles.
//!
//! ```text
//! keel serve [--migrate] [--role all|api|worker]
//!                                 run the API (SQLite: created and migrated on start)
//! keel migrate                    apply pending migrations and exit
//! keel tenant create --name N --slug S --owner-email E [--json]
//!                                 prints the owner's one-time setup token
//! keel tenant list [--json]
//! keel tenant limits ID [--ceiling POLICY=INTERVAL_MS/BURST]... [--clear POLICY]...
//!     [--clear-override POLICY]... [--json]
//! keel tenant quotas ID [--set QUOTA=N]... [--clear QUOTA]... [--json]
//!                                 a shop's quotas (products, variants, ...)
//!                                 a shop's rate-limit ceilings (what its owner may not exceed)
//! keel keys rotate                new JWT signing key; the previous stays published
//! keel maintenance prune          remove expired rows once (serve does it on an interval)
//! keel dead-letters list [--tenant ID] [--json]
//!                                 events a bus consumer gave up on (KEEL_NATS_URL)
//! keel dead-letters redrive ID    publish a parked event again, then unpark it
//! keel bench browse|graphql-browse|checkout|mixed|webhooks|realtime --url http://127.0.0.1:8080
//!     [--concurrency N] [--iterations N] [--duration-s S] [--products N] [--stock N]
//!     [--endpoints N] [--shops N] [--subscribers N] [--json]
//!                                 load a running Keel on loopback (fresh shops per run)
//! keel graphql-schema admin|store print a GraphQL schema's SDL (docs/graphql/)
//! keel secret generate            a fresh KEEL_SECRET_KEY value
//! keel config check               print the effective configuration, secrets redacted
//! ```
//! Exit codes: 0 success, 1 failure, 2 usage error, 78 invalid configuration (EX_CONFIG).

#![expect(clippy::print_stdout, reason = "a CLI's output is its stdout")]

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use keel::{App, Settings, Store, config::LogFormat, telemetry};
use keel_identity::{
    NewTenant, TenantError, TenantName, TenantService, TenantSlug, domain::staff::Email,
    services::auth::AuthError,
};
use keel_kernel::{
    TenantId,
    clock::SystemClock,
    page::{Limit, PageRequest},
};
use keel_kernel::{
    quota::Quota,
    ratelimit::{Limit as RateLimit, Policy},
};

/// `keel tenant limits` and `keel tenant quotas`.
#[path = "cli/edge.rs"]
mod edge;
use edge::{
    parse_ceiling, parse_policy, parse_quota, parse_quota_name, tenant_limits, tenant_quotas,
};

#[derive(Debug, Parser)]
#[command(
    name = "keel",
    version,
    about = "Keel: a secure, multi-tenant commerce backend"
)]
struct Cli {
    /// Configuration file (TOML); also `KEEL_CONFIG`. Optional: defaults and `KEEL_*`
    /// variables suffice.
    #[arg(long, global = true, env = "KEEL_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP API until SIGTERM/SIGINT.
    Serve {
        /// Apply pending PostgreSQL migrations before serving (SQLite always migrates).
        #[arg(long)]
        migrate: bool,
        /// What this node runs: `all` (default), `api` (HTTP only) or `worker` (relay,
        /// deliveries and scheduled jobs; HTTP serves only the probes and metrics). `api` and
        /// `worker` need PostgreSQL.
        #[arg(long, value_enum, default_value_t = keel::config::Role::All)]
        role: keel::config::Role,
    },
    /// Apply pending migrations and exit.
    Migrate,
    /// Manage tenants (merchants).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage the JWT signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Housekeeping (also run by `serve` on an interval).
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
    /// Events a bus consumer gave up on after its last retry (with KEEL_NATS_URL).
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// Drive a running Keel on loopback as storefronts do, and report throughput and
    /// latency per route. Creates a fresh shop through the configured database first.
    Bench(BenchArgs),
    /// Generate secrets for the configuration.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the OpenAPI document a node serves at `/openapi.json` (default settings), e.g. to
    /// generate a client from it.
    Openapi,
    /// Print a GraphQL schema's SDL (`admin`, as served at `/v1/admin/graphql/schema.graphql`,
    /// or `store`), e.g. to generate a client from it.
    GraphqlSchema {
        #[arg(value_parser = ["admin", "store"])]
        schema: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Add a new signing key; tokens signed with the previous one stay valid while it stays
    /// published (KEEL_AUTH__KEY_OVERLAP_S).
    Rotate,
}

#[derive(Debug, Subcommand)]
enum MaintenanceCommand {
    /// Remove expired rows once (login attempts outside the login window).
    Prune,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BenchScenario {
    /// The product list and product pages, alternately.
    Browse,
    /// Cart, 3 items, address, shipping option, checkout (idempotent), payment (`--payment`).
    Checkout,
    /// `--browses` browse iterations then `--checkouts` checkouts, repeated.
    Mixed,
    /// Webhook deliveries per second: `--endpoints` endpoints spread over `--shops` shops on a
    /// receiver the bench runs, `--iterations` events in each shop (the server must allow
    /// loopback endpoints).
    Webhooks,
    /// `browse` through the storefront GraphQL schema (the same reads and fields).
    GraphqlBrowse,
    /// Committed events fanned out to `--subscribers` SSE streams of one node:
    /// deliveries per second, commit-to-delivery latency, memory per idle connection
    /// (`--server-pid`); `--iterations` events in product batches of 100.
    Realtime,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    scenario: BenchScenario,
    /// The running server (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent workers (1 to 1024).
    #[arg(long, default_value_t = 32)]
    concurrency: u32,
    /// Iterations in all: a browse is one request, a checkout the whole flow.
    #[arg(long, default_value_t = 10_000)]
    iterations: u64,
    /// Stop after this many seconds even if iterations remain (1 to 600).
    #[arg(long, default_value_t = 60)]
    duration_s: u64,
    /// Products in the shop (one variant each).
    #[arg(long, default_value_t = 100)]
    products: u32,
    /// Units of stock per variant.
    #[arg(long, default_value_t = 1_000_000)]
    stock: i64,
    /// Browses per mixed cycle.
    #[arg(long, default_value_t = 9)]
    browses: u32,
    /// Checkouts per mixed cycle.
    #[arg(long, default_value_t = 1)]
    checkouts: u32,
    /// Webhook endpoints (the `webhooks` scenario), spread over `--shops`.
    #[arg(long, default_value_t = 1)]
    endpoints: u32,
    /// Shops of the `webhooks` scenario (1 to 100; each has at most
    /// `KEEL_WEBHOOKS__MAX_ENDPOINTS` endpoints).
    #[arg(long, default_value_t = 1)]
    shops: u32,
    /// Event streams of the `realtime` scenario.
    #[arg(long, default_value_t = 1000)]
    subscribers: u32,
    /// The server's process id: its peak RSS (VmHWM) is reported after the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the ids of the orders acknowledged as paid to this file, one per line.
    #[arg(long)]
    orders_out: Option<PathBuf>,
    /// How checkouts pay: `manual` (staff record the payment) or `stripe` (through the
    /// provider, against `--stripe-simulator`).
    #[arg(long, value_enum, default_value_t = BenchPayment::Manual)]
    payment: BenchPayment,
    /// The Stripe simulator (localstripe) the server's KEEL_PAYMENTS__STRIPE__API_BASE names
    /// (loopback only), for `--payment stripe`.
    #[arg(long, default_value = "http://127.0.0.1:8420")]
    stripe_simulator: String,
    /// Meanwhile keep this many storefront payment-session requests for one order in flight
    /// (the server's payment provider should be slow, so its bulkhead fills; 0: none).
    #[arg(long, default_value_t = 0)]
    provider_load: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchPayment {
    Manual,
    Stripe,
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// List parked events, oldest first.
    List {
        /// Only this tenant's (`ten_...`).
        #[arg(long, value_parser = parse_tenant_id)]
        tenant: Option<TenantId>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish a parked event to the bus again (its consumer processes it once) and remove it
    /// from the dead-letter table.
    Redrive {
        /// The dead letter's id (from `list`).
        id: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Print a new random value for KEEL_SECRET_KEY.
    Generate,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Display name, 1 to 200 characters.
        #[arg(long, value_parser = parse_name)]
        name: TenantName,
        /// URL-safe handle: 3 to 63 of a-z, 0-9 and '-', starting with a letter.
        #[arg(long, value_parser = parse_slug)]
        slug: TenantSlug,
        /// The owner's email; the owner sets a password with the printed setup token.
        #[arg(long, value_parser = parse_email)]
        owner_email: Email,
        /// Print one JSON object instead of a sentence.
        #[arg(long)]
        json: bool,
    },
    /// List tenants in creation order.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a shop's quotas, and set its own: each replaces the deployment's default
    /// (`KEEL_QUOTAS__*`) for this shop, enforced at once on every node.
    Quotas {
        /// The shop (`ten_...`).
        #[arg(value_parser = parse_tenant_id)]
        tenant: TenantId,
        /// Sets a quota: `products=5000` (the most the shop may hold).
        #[arg(long, value_parser = parse_quota)]
        set: Vec<(Quota, u64)>,
        /// Removes the shop's own quota (the default holds again).
        #[arg(long, value_parser = parse_quota_name)]
        clear: Vec<Quota>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a shop's rate limits, and set the operator's ceilings: each replaces the
    /// configured default for this shop, and the shop's owner may only tighten within it.
    /// Every node applies a change within one second.
    Limits {
        /// The shop (`ten_...`).
        #[arg(value_parser = parse_tenant_id)]
        tenant: TenantId,
        /// Sets a ceiling: `checkout=3000/20` (20 at once, then one every 3000 ms).
        #[arg(long, value_parser = parse_ceiling)]
        ceiling: Vec<(Policy, RateLimit)>,
        /// Removes a ceiling (the configured default holds again).
        #[arg(long, value_parser = parse_policy)]
        clear: Vec<Policy>,
        /// Removes the shop owner's own limit (its ceiling holds again).
        #[arg(long, value_parser = parse_policy)]
        clear_override: Vec<Policy>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it with secrets redacted.
    Check,
}

fn parse_slug(s: &str) -> Result<TenantSlug, String> {
    TenantSlug::parse(s).map_err(|e| e.to_string())
}

fn parse_tenant_id(s: &str) -> Result<TenantId, String> {
    s.parse()
        .map_err(|_| "must be a tenant id such as ten_...".to_owned())
}

fn parse_email(s: &str) -> Result<Email, String> {
    Email::parse(s).map_err(|e| e.to_string())
}

fn parse_name(s: &str) -> Result<TenantName, String> {
    TenantName::parse(s).map_err(|e| e.to_string())
}

/// The process environment's `KEEL_*` variables (non-UTF-8 ones cannot be configuration).
fn keel_env() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("KEEL_"))
        .collect()
}

fn main() -> ExitCode {
    // rustls needs exactly one process-wide crypto provider; ring is the only one built in.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("keel: a TLS crypto provider was already installed");
    }
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref(), &keel_env()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keel: {e}");
            return ExitCode::from(78);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.worker_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keel: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serving = matches!(cli.command, Command::Serve { .. });
    match runtime.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The server's log stream is its record; other commands just say it on stderr.
            if serving {
                tracing::error!(error = format!("{e:#}"), "exiting with an error");
            }
            eprintln!("keel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The store for a one-shot command, with pretty logs on stderr: SQLite is migrated (it is
/// embedded), PostgreSQL must already be.
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    telemetry::init(LogFormat::Pretty, true);
    let store = Store::open(&settings.database).await?;
    if store.is_sqlite() {
        store.migrate().await?;
    }
    store.ensure_migrated().await?;
    Ok(store)
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve { migrate, role } => {
            let mut settings = settings;
            settings.cluster.role = role;
            telemetry::init(settings.log_format, false);
            let app = App::build(&settings, migrate).await?;
            tracing::info!(addr = %app.local_addr(), backend = if app.store().is_sqlite() { "sqlite" } else { "postgres" }, bus = if settings.nats.is_some() { "jetstream" } else { "in-process" }, "listening");
            app.run_until_stopped(keel::shutdown_signal()).await
        }
        Command::Migrate => {
            telemetry::init(LogFormat::Pretty, true);
            let store = Store::open(&settings.database).await?;
            store.migrate().await.context("migration failed")?;
            keel::write_quota_defaults(&store, &settings).await?;
            let status = keel_kernel::health::StoreHealth::schema_status(&*store.health()).await?;
            println!(
                "migrations applied: {} of {}",
                status.applied, status.expected
            );
            store.close().await;
            Ok(())
        }
        Command::Tenant { command } => {
            let store = open_store(&settings).await?;
            let result = tenant_command(&settings, &store, command).await;
            store.close().await;
            result
        }
        Command::Keys {
            command: KeysCommand::Rotate,
        } => rotate_signing_key(&settings).await,
        Command::Maintenance {
            command: MaintenanceCommand::Prune,
        } => {
            let store = open_store(&settings).await?;
            let r =
                keel::maintenance_pass(&settings, &store, time::OffsetDateTime::now_utc()).await?;
            println!(
                "pruned {} login attempts, {} idempotency keys, {} events; cancelled {} expired orders",
                r.login_attempts, r.idempotency_keys, r.events, r.expired_orders
            );
            store.close().await;
            Ok(())
        }
        Command::DeadLetters { command } => {
            let store = open_store(&settings).await?;
            let result = dead_letter_command(&settings, &store, command).await;
            store.close().await;
            result
        }
        Command::Bench(args) => {
            telemetry::init(LogFormat::Pretty, true);
            bench(&settings, args).await
        }
        Command::Secret {
            command: SecretCommand::Generate,
        } => {
            println!("{}", keel::secrets::generate());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let shown = serde_json::to_string_pretty(&settings.redacted())?;
            println!("{shown}");
            Ok(())
        }
        Command::Openapi => {
            println!("{}", keel_http::openapi_document().to_pretty_json()?);
            Ok(())
        }
        Command::GraphqlSchema { schema } => {
            if schema == "admin" {
                print!("{}", keel_graphql::admin_sdl());
            } else {
                print!("{}", keel_graphql::store_sdl());
            }
            Ok(())
        }
    }
}

/// Peak resident set size of a process, in KiB (Linux `VmHWM`).
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM line")
}

/// Fresh shops for one run, created the way `keel tenant create` does (same database config
/// as the server), then set up over HTTP: their slugs and set-up shops.
async fn bench_shops(
    settings: &Settings,
    target: &keel_bench::Target,
    args: &BenchArgs,
    n: u32,
) -> anyhow::Result<Vec<(String, keel_bench::Shop)>> {
    let store = Store::open(&settings.database).await?;
    store.ensure_migrated().await?;
    let auth = keel::auth_service(settings, &store)?;
    let mut tokens = Vec::new();
    for _ in 0..n {
        let stamp = uuid::Uuid::now_v7().simple().to_string();
        let slug = format!("bench-{}", &stamp[stamp.len() - 12..]);
        let (_, _, setup_token) = auth
            .create_tenant_with_owner(
                NewTenant {
                    slug: parse_slug(&slug).map_err(anyhow::Error::msg)?,
                    name: parse_name("Bench shop").map_err(anyhow::Error::msg)?,
                },
                parse_email(&format!("owner@{slug}.bench.test")).map_err(anyhow::Error::msg)?,
            )
            .await
            .context("cannot create the bench shop")?;
        tokens.push((slug, setup_token));
    }
    store.close().await;
    let mut shops = Vec::new();
    for (slug, token) in tokens {
        let shop = keel_bench::setup(target, token.expose(), args.products, args.stock).await?;
        shops.push((slug, shop));
    }
    Ok(shops)
}

/// A bench report as one JSON object (`--json`) or its table.
fn print_report(json: bool, report: &impl serde::Serialize, table: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_value(report)?);
    } else {
        print!("{table}");
    }
    Ok(())
}

/// The scenarios that measure events leaving a node: webhook deliveries, realtime streams.
async fn events_bench(
    target: &keel_bench::Target,
    shops: &[(String, keel_bench::Shop)],
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let duration = std::time::Duration::from_secs(args.duration_s);
    if matches!(args.scenario, BenchScenario::Realtime) {
        let (_, shop) = shops.first().context("one shop was set up")?;
        let report = keel_bench::realtime::run(
            target,
            &shop.staff_token,
            args.subscribers,
            args.iterations,
            duration,
            args.server_pid,
        )
        .await?;
        return print_report(args.json, &report, &report.table());
    }
    let tokens: Vec<&str> = shops.iter().map(|(_, s)| s.staff_token.as_str()).collect();
    let report =
        keel_bench::webhooks::run(target, &tokens, args.endpoints, args.iterations, duration)
            .await?;
    print_report(args.json, &report, &report.table())
}

async fn bench(settings: &Settings, args: BenchArgs) -> anyhow::Result<()> {
    let target = keel_bench::Target::new(&args.url, args.concurrency)?;
    let shops = match args.scenario {
        BenchScenario::Webhooks => {
            anyhow::ensure!((1..=100).contains(&args.shops), "--shops must be 1 to 100");
            args.shops
        }
        _ => 1,
    };
    let mut shops = bench_shops(settings, &target, &args, shops).await?;
    let scenario = match args.scenario {
        BenchScenario::Browse => keel_bench::Scenario::Browse,
        BenchScenario::GraphqlBrowse => keel_bench::Scenario::GraphqlBrowse,
        BenchScenario::Checkout => keel_bench::Scenario::Checkout,
        BenchScenario::Mixed => keel_bench::Scenario::Mixed {
            browses: args.browses,
            checkouts: args.checkouts,
        },
        BenchScenario::Realtime | BenchScenario::Webhooks => {
            return events_bench(&target, &shops, &args).await;
        }
    };
    let (slug, shop) = shops.pop().context("one shop was set up")?;
    let payment = match args.payment {
        BenchPayment::Manual => keel_bench::Payment::Manual,
        BenchPayment::Stripe => {
            keel_bench::enable_stripe(&target, &shop, &args.stripe_simulator).await?;
            keel_bench::Payment::Stripe {
                simulator: args.stripe_simulator.clone(),
            }
        }
    };
    let provider_load = (args.provider_load > 0).then(|| {
        tokio::spawn(keel_bench::provider_load(
            target.clone(),
            shop.clone(),
            args.provider_load,
            std::time::Instant::now() + std::time::Duration::from_secs(args.duration_s),
        ))
    });
    let report = keel_bench::run(
        &target,
        shop,
        &keel_bench::LoadOptions {
            scenario,
            concurrency: args.concurrency,
            iterations: args.iterations,
            duration: std::time::Duration::from_secs(args.duration_s),
            paid: std::sync::Arc::default(),
            payment,
        },
    )
    .await?;
    let provider_load = match provider_load {
        Some(task) => Some(task.await.context("the provider load stopped")??),
        None => None,
    };
    let peak = args.server_pid.map(peak_rss_kib).transpose()?;
    if let Some(path) = &args.orders_out {
        let mut lines = report.order_ids.join("\n");
        lines.push('\n');
        std::fs::write(path, lines).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["shop"] = serde_json::json!(slug);
        v["server_peak_rss_kib"] = serde_json::json!(peak);
        v["provider_load"] = serde_json::to_value(&provider_load)?;
        println!("{v}");
    } else {
        print!("{}", report.table());
        if let Some(kib) = peak {
            println!("server peak RSS: {} MiB ({kib} KiB)", kib / 1024);
        }
        if let Some(load) = &provider_load {
            println!(
                "provider load: {} session requests in flight; answers by status: {:?}",
                load.in_flight, load.answers
            );
        }
    }
    Ok(())
}

async fn dead_letter_command(
    settings: &Settings,
    store: &Store,
    command: DeadLetterCommand,
) -> anyhow::Result<()> {
    let consumers = store.consumers();
    match command {
        DeadLetterCommand::List { tenant, json } => {
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = consumers
                    .dead_letters(
                        tenant,
                        PageRequest {
                            limit: Limit::new(Limit::MAX).expect("MAX is a valid limit"),
                            after,
                        },
                    )
                    .await
                    .context("cannot list dead letters")?;
                all.extend(page.items);
                after = page.next_cursor;
                if after.is_none() {
                    break;
                }
            }
            let rfc3339 =
                |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339);
            if json {
                let rows = all
                    .iter()
                    .map(|l| {
                        Ok(serde_json::json!({
                            "id": l.id,
                            "consumer": l.consumer,
                            "tenant_id": l.event.tenant_id,
                            "event_id": l.event.id,
                            "event_type": l.event.event_type,
                            "occurred_at": rfc3339(l.event.occurred_at)?,
                            "error": l.error,
                            "attempts": l.attempts,
                            "created_at": rfc3339(l.created_at)?,
                        }))
                    })
                    .collect::<Result<Vec<_>, time::error::Format>>()?;
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<36} {:<10} {:<31} {:<28} {:>8} ERROR",
                    "ID", "CONSUMER", "TENANT", "EVENT TYPE", "ATTEMPTS"
                );
                for l in &all {
                    println!(
                        "{:<36} {:<10} {:<31} {:<28} {:>8} {}",
                        l.id,
                        l.consumer,
                        l.event.tenant_id,
                        l.event.event_type,
                        l.attempts,
                        l.error
                    );
                }
            }
            Ok(())
        }
        DeadLetterCommand::Redrive { id } => {
            let bus = keel::event_bus(settings).await?.context(
                "KEEL_NATS_URL is not set: dead letters come from, and go back to, the event bus",
            )?;
            let event = keel_worker::bus::redrive(&bus, &*consumers, id)
                .await
                .with_context(|| format!("cannot re-drive dead letter {id}"))?;
            println!("re-drove event {event} (dead letter {id} removed)");
            Ok(())
        }
    }
}

async fn tenant_command(
    settings: &Settings,
    store: &Store,
    command: TenantCommand,
) -> anyhow::Result<()> {
    let service = TenantService::new(store.tenants(), std::sync::Arc::new(SystemClock));
    match command {
        TenantCommand::Create {
            name,
            slug,
            owner_email,
            json,
        } => {
            let auth = keel::auth_service(settings, store)?;
            let email = owner_email.as_str().to_owned();
            let (tenant, owner_id, setup) = match auth
                .create_tenant_with_owner(NewTenant { slug, name }, owner_email)
                .await
            {
                Ok(t) => t,
                Err(AuthError::Tenant(e @ TenantError::SlugTaken(_))) => anyhow::bail!("{e}"),
                Err(e) => return Err(e).context("cannot create the tenant"),
            };
            let ttl = settings.auth.setup_ttl.whole_seconds();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "tenant_id": tenant.id,
                        "slug": tenant.slug,
                        "name": tenant.name,
                        "created_at": tenant.created_at.format(&time::format_description::well_known::Rfc3339)?,
                        "owner_user_id": owner_id,
                        "owner_email": email,
                        "setup_token": setup.expose(),
                        "setup_token_expires_in": ttl,
                    })
                );
            } else {
                println!(
                    "created tenant {} (slug `{}`, name \"{}\")",
                    tenant.id, tenant.slug, tenant.name
                );
                println!(
                    "owner {email}: set a password within {ttl} s with POST /v1/auth/setup and this one-time token:"
                );
                println!("{}", setup.expose());
            }
            Ok(())
        }
        TenantCommand::List { json } => {
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = service
                    .list(PageRequest {
                        limit: Limit::new(Limit::MAX).expect("MAX is a valid limit"),
                        after,
                    })
                    .await
                    .context("cannot list tenants")?;
                all.extend(page.items);
                after = page.next_cursor;
                if after.is_none() {
                    break;
                }
            }
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                println!("{:<31} {:<24} {:<26} NAME", "ID", "SLUG", "CREATED");
                for t in &all {
                    let created = t
                        .created_at
                        .format(&time::format_description::well_known::Rfc3339)?;
                    println!("{:<31} {:<24} {:<26} {}", t.id, t.slug, created, t.name);
                }
            }
            Ok(())
        }
        TenantCommand::Quotas {
            tenant,
            set,
            clear,
            json,
        } => tenant_quotas(store, tenant, (set, clear), json).await,
        TenantCommand::Limits {
            tenant,
            ceiling,
            clear,
            clear_override,
            json,
        } => {
            tenant_limits(
                settings,
                store,
                tenant,
                (ceiling, clear, clear_override),
                json,
            )
            .await
        }
    }
}

/// `keel keys rotate`: a new signing key, announced to the running nodes when there is a bus.
async fn rotate_signing_key(settings: &Settings) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let auth = keel::auth_service(settings, &store)?;
    let kid = auth
        .keys()
        .rotate()
        .await
        .context("cannot rotate the signing key")?;
    // Running nodes sign with the new key at once (without a bus: within
    // KEEL_AUTH__KEY_CACHE_MS).
    if let Some(n) = &settings.nats {
        let told = match keel::event_bus(settings).await {
            Ok(Some(bus)) => {
                keel_worker::changes::announce_once(
                    &bus.client(),
                    n.changes_subject.clone(),
                    &settings.cluster.node_id,
                    keel_kernel::changes::Change::SigningKeys,
                )
                .await
            }
            Ok(None) => Ok(()),
            Err(e) => Err(format!("{e:#}")),
        };
        if let Err(e) = told {
            // The key is rotated: rotating again would push the previous key out sooner.
            eprintln!(
                "keel: warning: new key {kid} rotated, but the running nodes were not told ({e}); they sign with it within KEEL_AUTH__KEY_CACHE_MS"
            );
        }
    }
    println!(
        "new signing key {kid}; the previous key stays published for {} s",
        settings.auth.key_overlap.whole_seconds()
    );
    store.close().await;
    Ok(())
}
