//! Pricing setup: tax rates, shipping options and promotions, and the inputs that parse into
//! them (every problem reported with a JSON pointer).

use keel_catalog::domain::{FieldIssue, Issues};
use keel_kernel::{
    TenantId, define_id,
    money::{Currency, Money},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{country::Country, exact::Percent};

define_id!(
    /// A tax rate of one country (or region).
    TaxRateId,
    "tax"
);
define_id!(
    /// A shipping option.
    ShippingOptionId,
    "ship"
);
define_id!(
    /// A promotion (a code).
    PromotionId,
    "promo"
);

/// Parses `"US"`-style codes, reporting at `pointer`.
pub(crate) fn parse_country(issues: &mut Issues, pointer: &str, s: &str) -> Option<Country> {
    Country::parse(s)
        .map_err(|e| issues.push(pointer, e.to_string()))
        .ok()
}

/// A region within a country (`NY`, `CA`): 1 to 10 uppercase letters or digits.
pub(crate) fn parse_region(issues: &mut Issues, pointer: &str, s: &str) -> String {
    if s.is_empty()
        || s.len() > 10
        || !s
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        issues.push(
            pointer,
            "must be 1 to 10 uppercase letters or digits, e.g. `NY`",
        );
    }
    s.to_owned()
}

/// Exact amounts per currency, each currency once, none negative.
pub(crate) fn parse_amounts(
    issues: &mut Issues,
    pointer: &str,
    input: &[AmountInput],
) -> Vec<Money> {
    let mut out: Vec<Money> = Vec::new();
    for (i, a) in input.iter().enumerate() {
        let at = format!("{pointer}/{i}");
        let Ok(currency) = Currency::parse(&a.currency) else {
            issues.push(
                format!("{at}/currency"),
                "must be an ISO 4217 currency code such as `USD`",
            );
            continue;
        };
        if a.amount < 0 {
            issues.push(format!("{at}/amount"), "must not be negative (minor units)");
        } else if out.iter().any(|m| m.currency() == currency) {
            issues.push(
                format!("{at}/currency"),
                format!("{currency} appears twice"),
            );
        } else {
            out.push(Money::new(a.amount, currency));
        }
    }
    out.sort_by_key(|m| m.currency().code());
    out
}

fn parse_percent(issues: &mut Issues, pointer: &str, s: &str) -> Percent {
    Percent::parse(s).unwrap_or_else(|e| {
        issues.push(pointer, e.to_string());
        Percent::ZERO
    })
}

/// An amount as sent: `{"amount": 795, "currency": "USD"}`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AmountInput {
    pub amount: i64,
    pub currency: String,
}

/// A tax rate: the percentage charged on sales shipped to `country` (and `region`, when
/// given; a region's rate wins over its country's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxRate {
    pub id: TaxRateId,
    pub tenant_id: TenantId,
    pub country: Country,
    pub region: Option<String>,
    pub rate: Percent,
    /// Whether shipping is taxed at this rate too.
    pub shipping_taxable: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

/// A tax rate as sent.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaxRateInput {
    /// ISO 3166-1 alpha-2, e.g. `US`.
    pub country: String,
    /// e.g. `NY`; absent for the whole country.
    pub region: Option<String>,
    /// An exact decimal string of percent, e.g. `"8.875"`.
    pub rate: String,
    /// Default `true`.
    pub shipping_taxable: Option<bool>,
}

impl TaxRateInput {
    pub fn parse(&self, tenant: TenantId, now: OffsetDateTime) -> Result<TaxRate, Vec<FieldIssue>> {
        let mut issues = Issues::default();
        let country = parse_country(&mut issues, "/country", &self.country);
        let region = self
            .region
            .as_deref()
            .map(|r| parse_region(&mut issues, "/region", r));
        let rate = parse_percent(&mut issues, "/rate", &self.rate);
        let Some(country) = country else {
            return Err(issues.into_vec());
        };
        issues.finish(TaxRate {
            id: TaxRateId::new(),
            tenant_id: tenant,
            country,
            region,
            rate,
            shipping_taxable: self.shipping_taxable.unwrap_or(true),
            created_at: now,
            updated_at: now,
            version: 1,
        })
    }
}

/// A change to a tax rate (absent = unchanged).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaxRatePatch {
    pub rate: Option<String>,
    pub shipping_taxable: Option<bool>,
}

impl TaxRatePatch {
    pub fn apply(&self, t: &mut TaxRate) -> Result<(), Vec<FieldIssue>> {
        let mut issues = Issues::default();
        if let Some(r) = &self.rate {
            t.rate = parse_percent(&mut issues, "/rate", r);
        }
        if let Some(s) = self.shipping_taxable {
            t.shipping_taxable = s;
        }
        issues.finish(())
    }
}

/// A way to ship to one country, with an exact price per currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingOption {
    pub id: ShippingOptionId,
    pub tenant_id: TenantId,
    pub name: String,
    pub country: Country,
    /// One per currency.
    pub amounts: Vec<Money>,
    /// Per currency: the discounted items' total from which this option is free.
    pub free_over: Vec<Money>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

impl ShippingOption {
    pub fn amount_in(&self, c: Currency) -> Option<Money> {
        self.amounts.iter().copied().find(|m| m.currency() == c)
    }

    pub fn free_over_in(&self, c: Currency) -> Option<Money> {
        self.free_over.iter().copied().find(|m| m.currency() == c)
    }
}

/// A shipping option as sent.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ShippingOptionInput {
    pub name: String,
    pub country: String,
    pub amounts: Vec<AmountInput>,
    #[serde(default)]
    pub free_over: Vec<AmountInput>,
}

fn parse_name(issues: &mut Issues, pointer: &str, s: &str) -> String {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > 100 || t.chars().any(char::is_control) {
        issues.push(pointer, "must be 1 to 100 characters");
    }
    t.to_owned()
}

impl ShippingOptionInput {
    pub fn parse(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
    ) -> Result<ShippingOption, Vec<FieldIssue>> {
        let mut issues = Issues::default();
        let name = parse_name(&mut issues, "/name", &self.name);
        let country = parse_country(&mut issues, "/country", &self.country);
        if self.amounts.is_empty() {
            issues.push("/amounts", "must give at least one amount");
        }
        let amounts = parse_amounts(&mut issues, "/amounts", &self.amounts);
        let free_over = parse_amounts(&mut issues, "/free_over", &self.free_over);
        let Some(country) = country else {
            return Err(issues.into_vec());
        };
        issues.finish(ShippingOption {
            id: ShippingOptionId::new(),
            tenant_id: tenant,
            name,
            country,
            amounts,
            free_over,
            created_at: now,
            updated_at: now,
            version: 1,
        })
    }
}

/// A change to a shipping option (absent = unchanged; lists replace).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ShippingOptionPatch {
    pub name: Option<String>,
    pub amounts: Option<Vec<AmountInput>>,
    pub free_over: Option<Vec<AmountInput>>,
}

impl ShippingOptionPatch {
    pub fn apply(&self, o: &mut ShippingOption) -> Result<(), Vec<FieldIssue>> {
        let mut issues = Issues::default();
        if let Some(n) = &self.name {
            o.name = parse_name(&mut issues, "/name", n);
        }
        if let Some(a) = &self.amounts {
            if a.is_empty() {
                issues.push("/amounts", "must give at least one amount");
            }
            o.amounts = parse_amounts(&mut issues, "/amounts", a);
        }
        if let Some(f) = &self.free_over {
            o.free_over = parse_amounts(&mut issues, "/free_over", f);
        }
        issues.finish(())
    }
}

/// What a promotion takes off the items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PromotionValue {
    /// An exact amount off, per currency.
    FixedAmount { amounts: Vec<Money> },
    /// A percentage off, exact.
    Percent { percent: Percent },
}

/// A promotion code and its rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    pub id: PromotionId,
    pub tenant_id: TenantId,
    /// Uppercase letters, digits, `-` and `_`; unique per tenant; matched case-insensitively.
    pub code: String,
    pub value: PromotionValue,
    #[serde(with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    /// How many orders may use it in all (exact, enforced under concurrency).
    pub usage_limit: Option<i64>,
    /// How many orders one customer (or guest email) may place with it.
    pub per_customer_limit: Option<i64>,
    pub times_used: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

impl Promotion {
    /// Whether the code may be used at `now` (the usage limit is checked at checkout, inside
    /// the transaction).
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.starts_at.is_none_or(|s| now >= s) && self.ends_at.is_none_or(|e| now < e)
    }
}

/// Normalises a promotion code: trimmed, uppercase.
pub fn normalise_code(s: &str) -> Option<String> {
    let c = s.trim().to_ascii_uppercase();
    let ok = !c.is_empty()
        && c.len() <= 32
        && c.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    ok.then_some(c)
}

/// A promotion as sent: exactly one of `percent` or `amounts`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PromotionInput {
    pub code: String,
    /// An exact decimal string of percent off, e.g. `"15"`.
    pub percent: Option<String>,
    /// Fixed amounts off, one per currency.
    pub amounts: Option<Vec<AmountInput>>,
    /// RFC 3339.
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub usage_limit: Option<i64>,
    pub per_customer_limit: Option<i64>,
}

fn parse_time(issues: &mut Issues, pointer: &str, s: Option<&str>) -> Option<OffsetDateTime> {
    s.and_then(|s| {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                issues.push(
                    pointer,
                    "must be an RFC 3339 time such as 2026-12-01T00:00:00Z",
                );
            })
            .ok()
    })
}

fn parse_limit(issues: &mut Issues, pointer: &str, v: Option<i64>) -> Option<i64> {
    if v.is_some_and(|n| !(1..=1_000_000_000).contains(&n)) {
        issues.push(pointer, "must be a whole number from 1 to 1000000000");
    }
    v
}

impl PromotionInput {
    pub fn parse(
        &self,
        tenant: TenantId,
        now: OffsetDateTime,
    ) -> Result<Promotion, Vec<FieldIssue>> {
        let mut issues = Issues::default();
        let code = normalise_code(&self.code).unwrap_or_else(|| {
            issues.push("/code", "must be 1 to 32 letters, digits, `-` or `_`");
            String::new()
        });
        let value = match (&self.percent, &self.amounts) {
            (Some(p), None) => {
                let percent = parse_percent(&mut issues, "/percent", p);
                if percent == Percent::ZERO {
                    issues.push("/percent", "must be more than 0");
                }
                PromotionValue::Percent { percent }
            }
            (None, Some(a)) => {
                if a.is_empty() {
                    issues.push("/amounts", "must give at least one amount");
                }
                PromotionValue::FixedAmount {
                    amounts: parse_amounts(&mut issues, "/amounts", a),
                }
            }
            _ => {
                issues.push("", "give exactly one of `percent` or `amounts`");
                PromotionValue::Percent {
                    percent: Percent::ZERO,
                }
            }
        };
        let starts_at = parse_time(&mut issues, "/starts_at", self.starts_at.as_deref());
        let ends_at = parse_time(&mut issues, "/ends_at", self.ends_at.as_deref());
        if let (Some(s), Some(e)) = (starts_at, ends_at)
            && e <= s
        {
            issues.push("/ends_at", "must be after `starts_at`");
        }
        let usage_limit = parse_limit(&mut issues, "/usage_limit", self.usage_limit);
        let per_customer_limit =
            parse_limit(&mut issues, "/per_customer_limit", self.per_customer_limit);
        issues.finish(Promotion {
            id: PromotionId::new(),
            tenant_id: tenant,
            code,
            value,
            starts_at,
            ends_at,
            usage_limit,
            per_customer_limit,
            times_used: 0,
            created_at: now,
            updated_at: now,
            version: 1,
        })
    }
}

/// A change to a promotion's window or limits (absent = unchanged).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PromotionPatch {
    pub starts_at: Option<String>,
    pub ends_at: Option<String>,
    pub usage_limit: Option<i64>,
    pub per_customer_limit: Option<i64>,
}

impl PromotionPatch {
    pub fn apply(&self, p: &mut Promotion) -> Result<(), Vec<FieldIssue>> {
        let mut issues = Issues::default();
        if self.starts_at.is_some() {
            p.starts_at = parse_time(&mut issues, "/starts_at", self.starts_at.as_deref());
        }
        if self.ends_at.is_some() {
            p.ends_at = parse_time(&mut issues, "/ends_at", self.ends_at.as_deref());
        }
        if self.usage_limit.is_some() {
            p.usage_limit = parse_limit(&mut issues, "/usage_limit", self.usage_limit);
        }
        if self.per_customer_limit.is_some() {
            p.per_customer_limit =
                parse_limit(&mut issues, "/per_customer_limit", self.per_customer_limit);
        }
        issues.finish(())
    }
}
