//! Carts: a currency fixed at creation, lines with their unit price snapshotted when added, a
//! shipping address, a shipping option and at most one promotion code.

use keel_catalog::{
    ProductId, VariantId,
    domain::{FieldIssue, Issues},
};
use keel_kernel::id::CustomerId;
use keel_kernel::{TenantId, define_id, money::Currency};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{country::Country, order::OrderId, setup::ShippingOptionId};

define_id!(
    /// A shopping cart.
    CartId,
    "cart"
);
define_id!(
    /// A line of a cart, kept as the order line's id at checkout.
    LineId,
    "item"
);

/// The quantity bounds of one line.
pub const QUANTITY_MIN: i64 = 1;
pub const QUANTITY_MAX: i64 = 999;
/// The most lines a cart may hold.
pub const LINES_MAX: usize = 100;

/// One line: a variant, how many, and the unit price when it was added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    pub id: LineId,
    pub variant_id: VariantId,
    pub product_id: ProductId,
    pub sku: String,
    pub title: String,
    pub quantity: i64,
    /// Minor units of the cart's currency, snapshotted when the line was added or changed.
    pub unit_price: i64,
}

/// A postal address (validated: required fields present, country ISO 3166-1 alpha-2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Address {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    /// A region code such as `NY`; it selects a region's tax rate.
    pub region: Option<String>,
    pub postal_code: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub country: Country,
    pub phone: Option<String>,
}

/// An address as sent.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddressInput {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `US`.
    pub country: String,
    pub phone: Option<String>,
}

fn field(issues: &mut Issues, pointer: &str, s: &str, max: usize) -> String {
    let t = s.trim();
    if t.is_empty() {
        issues.push(pointer, "is required");
    } else if t.chars().count() > max || t.chars().any(char::is_control) {
        issues.push(pointer, format!("must be at most {max} characters"));
    }
    t.to_owned()
}

impl AddressInput {
    pub fn parse(&self) -> Result<Address, Vec<FieldIssue>> {
        let mut issues = Issues::default();
        let name = field(&mut issues, "/name", &self.name, 200);
        let line1 = field(&mut issues, "/line1", &self.line1, 200);
        let line2 = self
            .line2
            .as_deref()
            .filter(|l| !l.trim().is_empty())
            .map(|l| field(&mut issues, "/line2", l, 200));
        let city = field(&mut issues, "/city", &self.city, 100);
        let region = self
            .region
            .as_deref()
            .map(|r| crate::setup::parse_region(&mut issues, "/region", r));
        let postal_code = field(&mut issues, "/postal_code", &self.postal_code, 20);
        let phone = self
            .phone
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .map(|p| field(&mut issues, "/phone", p, 30));
        let country = crate::setup::parse_country(&mut issues, "/country", &self.country);
        let Some(country) = country else {
            return Err(issues.into_vec());
        };
        issues.finish(Address {
            name,
            line1,
            line2,
            city,
            region,
            postal_code,
            country,
            phone,
        })
    }
}

/// Where a cart stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartStatus {
    Open,
    /// Checked out: the cart became an order and changes no more.
    Converted,
}

/// A cart, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    pub id: CartId,
    pub tenant_id: TenantId,
    pub currency: Currency,
    /// The signed-in customer who owns it; `None` for a guest cart (reached with its secret).
    pub customer_id: Option<CustomerId>,
    pub email: Option<String>,
    pub lines: Vec<CartLine>,
    pub shipping_address: Option<Address>,
    pub shipping_option_id: Option<ShippingOptionId>,
    pub promotion_code: Option<String>,
    pub status: CartStatus,
    pub order_id: Option<OrderId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

/// The key per-buyer limits count a guest email by (a promotion's uses per customer, unpaid
/// orders per email): lower-cased, with a `+tag` of the local part dropped, so
/// `ann+1@shop.test` and `Ann+2@Shop.test` are one buyer. Answers `None` for what is not an
/// email (see [`parse_email`]).
pub fn buyer_key(email: &str) -> Option<String> {
    let e = parse_email(email)?;
    let (local, domain) = e.split_once('@')?;
    let local = local.split_once('+').map_or(local, |(base, _)| base);
    if local.is_empty() {
        return Some(e);
    }
    Some(format!("{local}@{domain}"))
}

/// A plausible email: one `@`, something on both sides, a dot in the domain, no spaces.
pub fn parse_email(s: &str) -> Option<String> {
    let e = s.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty()
                && d.contains('.')
                && !d.starts_with('.')
                && !d.ends_with('.')
                && !d.contains('@')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(e)
}

#[cfg(test)]
mod buyer_key_tests {
    use super::*;

    #[test]
    fn plus_tags_and_case_do_not_make_another_buyer() {
        assert_eq!(buyer_key("Ann+1@Shop.test"), buyer_key("ann+2@shop.test"));
        assert_eq!(buyer_key("ann@shop.test").as_deref(), Some("ann@shop.test"));
        assert_ne!(buyer_key("ann@shop.test"), buyer_key("anne@shop.test"));
        assert_eq!(buyer_key("+x@shop.test").as_deref(), Some("+x@shop.test"));
        assert_eq!(buyer_key("not an email"), None);
    }
}
