//! Catalog domain types and the rules that make a value one of them. Input arrives as
//! [`ProductInput`]/[`VariantInput`] (what a client sent, loosely typed) and leaves parsing as
//! [`ProductDraft`]/[`VariantDraft`] (only valid values), or as a list of [`FieldIssue`]s with
//! JSON pointers, all of them at once.

use std::collections::BTreeMap;

use keel_kernel::{
    TenantId, define_id,
    money::{Currency, Money},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

define_id!(
    /// A product of one tenant.
    ProductId,
    "prod"
);
define_id!(
    /// A purchasable variant of a product (one SKU).
    VariantId,
    "var"
);
define_id!(
    /// A place stock is kept.
    LocationId,
    "loc"
);
define_id!(
    /// One inventory adjustment in the ledger.
    AdjustmentId,
    "adj"
);
define_id!(
    /// Stock held for a checkout.
    ReservationId,
    "res"
);

/// Exact bounds of catalog input (the issue's numbers; one place).
pub mod limits {
    pub const TITLE_MAX: usize = 255;
    pub const HANDLE_MAX: usize = 100;
    pub const DESCRIPTION_MAX: usize = 20_000;
    pub const OPTIONS_MAX: usize = 3;
    pub const OPTION_NAME_MAX: usize = 40;
    pub const OPTION_VALUES_MAX: usize = 100;
    pub const OPTION_VALUE_MAX: usize = 100;
    pub const METADATA_KEYS_MAX: usize = 50;
    pub const METADATA_KEY_MAX: usize = 40;
    pub const METADATA_VALUE_MAX: usize = 500;
    pub const SKU_MAX: usize = 64;
    pub const VARIANTS_MAX: usize = 100;
    pub const PRICES_MAX: usize = 50;
    pub const BATCH_MAX: usize = 1000;
    pub const LOCATION_NAME_MAX: usize = 100;
    pub const NOTE_MAX: usize = 500;
    /// The largest stock quantity or adjustment: far beyond any real count, far from overflow.
    pub const QUANTITY_MAX: i64 = 1_000_000_000;
}

/// One thing wrong with the input, where it is (RFC 6901 pointer) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldIssue {
    pub pointer: String,
    pub message: String,
}

/// Collects issues while parsing, so a client learns everything wrong at once.
#[derive(Debug, Default)]
pub struct Issues(Vec<FieldIssue>);

impl Issues {
    pub fn push(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldIssue {
            pointer: pointer.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldIssue> {
        self.0
    }

    /// `Ok(value)` when nothing was wrong.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<FieldIssue>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Control characters in free text other than line breaks and tabs (PostgreSQL stores no NUL
/// in text or `jsonb`).
pub(crate) fn has_control_in_text(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
}

/// A trimmed, non-empty line of text of at most `max` characters.
fn line(issues: &mut Issues, pointer: &str, s: &str, max: usize) -> String {
    let t = s.trim();
    if t.is_empty() {
        issues.push(pointer, "must not be empty");
    } else if t.chars().count() > max {
        issues.push(pointer, format!("must be at most {max} characters"));
    } else if has_control(t) {
        issues.push(pointer, "must not contain control characters");
    }
    t.to_owned()
}

/// Where a product stands: only `active` products reach the storefront.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProductStatus {
    Draft,
    Active,
    Archived,
}

impl ProductStatus {
    pub const ALL: [Self; 3] = [Self::Draft, Self::Active, Self::Archived];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A URL-safe product handle, unique per tenant: lowercase letters and digits in groups joined
/// by single hyphens (`blue-t-shirt`), at most 100 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Handle(String);

impl Handle {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if s.is_empty() || s.len() > limits::HANDLE_MAX {
            Err("must be 1 to 100 characters")
        } else if !ok_chars || s.starts_with('-') || s.ends_with('-') || s.contains("--") {
            Err(
                "must be lowercase letters and digits joined by single hyphens, e.g. `blue-t-shirt`",
            )
        } else {
            Ok(Self(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stock keeping unit, unique per tenant: 1 to 64 characters, no spaces or control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() || s.chars().count() > limits::SKU_MAX {
            Err("must be 1 to 64 characters")
        } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err("must not contain spaces or control characters")
        } else {
            Ok(Self(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One product option (e.g. `size` with `S`, `M`, `L`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProductOption {
    pub name: String,
    pub values: Vec<String>,
}

/// Bounded string metadata: at most 50 keys of at most 40 characters, values of at most 500.
pub type Metadata = BTreeMap<String, String>;

/// A price: a non-negative amount in one currency's minor units.
fn parse_prices(issues: &mut Issues, pointer: &str, input: &[PriceInput]) -> Vec<Money> {
    let mut out: Vec<Money> = Vec::with_capacity(input.len());
    if input.len() > limits::PRICES_MAX {
        issues.push(
            pointer,
            format!("at most {} prices (one per currency)", limits::PRICES_MAX),
        );
        return out;
    }
    for (i, p) in input.iter().enumerate() {
        let at = format!("{pointer}/{i}");
        let Ok(currency) = Currency::parse(&p.currency) else {
            issues.push(
                format!("{at}/currency"),
                "must be an ISO 4217 currency code such as `USD`",
            );
            continue;
        };
        if p.amount < 0 {
            issues.push(
                format!("{at}/amount"),
                "must not be negative (minor units, e.g. 1999 for 19.99 USD)",
            );
            continue;
        }
        if out.iter().any(|m| m.currency() == currency) {
            issues.push(
                format!("{at}/currency"),
                format!("{currency} is priced twice; give one price per currency"),
            );
            continue;
        }
        out.push(Money::new(p.amount, currency));
    }
    out
}

/// A price as sent: `{"amount": 1999, "currency": "USD"}`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    /// Integer minor units (cents for USD, yen for JPY).
    pub amount: i64,
    pub currency: String,
}

/// A variant as sent (create, or the variants of a product being created).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VariantInput {
    pub sku: String,
    #[serde(default)]
    pub title: Option<String>,
    /// One value per product option, in the options' order.
    #[serde(default)]
    pub option_values: Vec<String>,
    /// Shipping weight in whole grams.
    #[serde(default)]
    pub weight_grams: Option<u32>,
    #[serde(default)]
    pub prices: Vec<PriceInput>,
}

/// A product as sent to create it (or, in a batch, to upsert it by handle).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    pub title: String,
    pub handle: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub options: Vec<ProductOption>,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub variants: Vec<VariantInput>,
}

/// A variant whose every field is valid (option values not yet checked against a product).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantDraft {
    pub sku: Sku,
    pub title: Option<String>,
    pub option_values: Vec<String>,
    pub weight_grams: Option<u32>,
    pub prices: Vec<Money>,
}

/// A product whose every field, and every variant's, is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductDraft {
    pub title: String,
    pub handle: Handle,
    pub description: String,
    pub status: ProductStatus,
    pub options: Vec<ProductOption>,
    pub metadata: Metadata,
    pub variants: Vec<VariantDraft>,
}

fn parse_status(issues: &mut Issues, pointer: &str, s: Option<&str>) -> ProductStatus {
    match s {
        None => ProductStatus::Draft,
        Some(s) => ProductStatus::parse(s).unwrap_or_else(|| {
            issues.push(pointer, "must be `draft`, `active` or `archived`");
            ProductStatus::Draft
        }),
    }
}

/// A description of at most 20 000 characters (absent is empty).
pub fn parse_description(issues: &mut Issues, pointer: &str, s: Option<&str>) -> String {
    let d = s.unwrap_or_default();
    if d.chars().count() > limits::DESCRIPTION_MAX {
        issues.push(
            pointer,
            format!("must be at most {} characters", limits::DESCRIPTION_MAX),
        );
    } else if has_control_in_text(d) {
        issues.push(
            pointer,
            "must not contain control characters other than line breaks and tabs",
        );
    }
    d.to_owned()
}

/// Checks option names and values (unique, bounded).
pub fn check_options(issues: &mut Issues, pointer: &str, options: &[ProductOption]) {
    if options.len() > limits::OPTIONS_MAX {
        issues.push(pointer, format!("at most {} options", limits::OPTIONS_MAX));
        return;
    }
    for (i, o) in options.iter().enumerate() {
        let at = format!("{pointer}/{i}");
        line(
            issues,
            &format!("{at}/name"),
            &o.name,
            limits::OPTION_NAME_MAX,
        );
        if options[..i].iter().any(|p| p.name.trim() == o.name.trim()) {
            issues.push(format!("{at}/name"), "option names must be unique");
        }
        if o.values.is_empty() || o.values.len() > limits::OPTION_VALUES_MAX {
            issues.push(
                format!("{at}/values"),
                format!("must list 1 to {} values", limits::OPTION_VALUES_MAX),
            );
        }
        for (j, v) in o.values.iter().enumerate() {
            line(
                issues,
                &format!("{at}/values/{j}"),
                v,
                limits::OPTION_VALUE_MAX,
            );
            if o.values[..j].contains(v) {
                issues.push(format!("{at}/values/{j}"), "values must be unique");
            }
        }
    }
}

/// Checks metadata bounds: at most 50 keys of 1 to 40 characters, values of at most 500.
pub fn check_metadata(issues: &mut Issues, pointer: &str, metadata: &Metadata) {
    if metadata.len() > limits::METADATA_KEYS_MAX {
        issues.push(
            pointer,
            format!("at most {} keys", limits::METADATA_KEYS_MAX),
        );
    }
    for (k, v) in metadata {
        let at = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
        if k.is_empty() || k.chars().count() > limits::METADATA_KEY_MAX || has_control(k) {
            issues.push(
                at.clone(),
                format!(
                    "keys must be 1 to {} characters, none a control character",
                    limits::METADATA_KEY_MAX
                ),
            );
        }
        if has_control_in_text(v) {
            issues.push(
                at.clone(),
                "values must not contain control characters other than line breaks and tabs",
            );
        }
        if v.chars().count() > limits::METADATA_VALUE_MAX {
            issues.push(
                at,
                format!(
                    "values must be at most {} characters",
                    limits::METADATA_VALUE_MAX
                ),
            );
        }
    }
}

/// Checks that a variant's option values name one value of each product option, in order.
pub fn check_option_values(
    issues: &mut Issues,
    pointer: &str,
    options: &[ProductOption],
    values: &[String],
) {
    if values.len() != options.len() {
        issues.push(
            pointer,
            format!(
                "must give one value per product option ({} expected)",
                options.len()
            ),
        );
        return;
    }
    for (i, (o, v)) in options.iter().zip(values).enumerate() {
        if !o.values.contains(v) {
            issues.push(
                format!("{pointer}/{i}"),
                format!("`{v}` is not a value of option `{}`", o.name),
            );
        }
    }
}

impl VariantInput {
    /// Parses the variant; issues point below `pointer` (e.g. `/variants/2`).
    pub fn parse(&self, issues: &mut Issues, pointer: &str) -> VariantDraft {
        let sku = Sku::parse(&self.sku).unwrap_or_else(|m| {
            issues.push(format!("{pointer}/sku"), m);
            Sku(String::new())
        });
        let title = self
            .title
            .as_deref()
            .map(|t| line(issues, &format!("{pointer}/title"), t, limits::TITLE_MAX));
        let prices = parse_prices(issues, &format!("{pointer}/prices"), &self.prices);
        VariantDraft {
            sku,
            title,
            option_values: self.option_values.clone(),
            weight_grams: self.weight_grams,
            prices,
        }
    }
}

impl ProductInput {
    /// Parses the whole product; issues point below `pointer` (`""` for a single product,
    /// `/products/17` in a batch).
    pub fn parse(&self, issues: &mut Issues, pointer: &str) -> ProductDraft {
        let title = parse_title(issues, &format!("{pointer}/title"), &self.title);
        let handle = Handle::parse(&self.handle).unwrap_or_else(|m| {
            issues.push(format!("{pointer}/handle"), m);
            Handle(String::new())
        });
        let description = parse_description(
            issues,
            &format!("{pointer}/description"),
            self.description.as_deref(),
        );
        let status = parse_status(issues, &format!("{pointer}/status"), self.status.as_deref());
        let options_at = format!("{pointer}/options");
        check_options(issues, &options_at, &self.options);
        check_metadata(issues, &format!("{pointer}/metadata"), &self.metadata);
        if self.variants.len() > limits::VARIANTS_MAX {
            issues.push(
                format!("{pointer}/variants"),
                format!("at most {} variants", limits::VARIANTS_MAX),
            );
        }
        let mut variants = Vec::with_capacity(self.variants.len());
        for (i, v) in self.variants.iter().enumerate() {
            let at = format!("{pointer}/variants/{i}");
            let draft = v.parse(issues, &at);
            check_option_values(
                issues,
                &format!("{at}/option_values"),
                &self.options,
                &draft.option_values,
            );
            if variants
                .iter()
                .any(|d: &VariantDraft| d.sku == draft.sku && !draft.sku.0.is_empty())
            {
                issues.push(format!("{at}/sku"), "SKUs must be unique");
            }
            variants.push(draft);
        }
        ProductDraft {
            title,
            handle,
            description,
            status,
            options: self
                .options
                .iter()
                .map(|o| ProductOption {
                    name: o.name.trim().to_owned(),
                    values: o.values.iter().map(|v| v.trim().to_owned()).collect(),
                })
                .collect(),
            metadata: self.metadata.clone(),
            variants,
        }
    }
}

/// A change to a product's own fields (`null`/absent = unchanged).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProductPatchInput {
    pub title: Option<String>,
    pub handle: Option<String>,
    pub description: Option<String>,
    pub status: Option<String>,
    pub options: Option<Vec<ProductOption>>,
    pub metadata: Option<Metadata>,
}

/// A change to a variant (`null`/absent = unchanged; `prices` replaces the whole set).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VariantPatchInput {
    pub sku: Option<String>,
    pub title: Option<String>,
    pub option_values: Option<Vec<String>>,
    pub weight_grams: Option<u32>,
    pub prices: Option<Vec<PriceInput>>,
}

/// A variant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub id: VariantId,
    pub tenant_id: TenantId,
    pub product_id: ProductId,
    pub sku: Sku,
    pub title: Option<String>,
    pub option_values: Vec<String>,
    pub weight_grams: Option<u32>,
    /// One per currency, in currency-code order.
    pub prices: Vec<Money>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

impl Variant {
    /// The price in `currency`, if the variant has one.
    pub fn price_in(&self, currency: Currency) -> Option<Money> {
        self.prices
            .iter()
            .copied()
            .find(|m| m.currency() == currency)
    }
}

/// A product as stored, with its variants (in creation order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: ProductId,
    pub tenant_id: TenantId,
    pub title: String,
    pub handle: Handle,
    pub description: String,
    pub status: ProductStatus,
    pub options: Vec<ProductOption>,
    pub metadata: Metadata,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Starts at 1; moves on every change to the product or any of its variants, so it
    /// identifies the whole representation (the admin `ETag`).
    pub version: i64,
    pub variants: Vec<Variant>,
}

impl Product {
    /// Builds a new product (version 1) and its variants from a draft.
    pub fn from_draft(tenant: TenantId, d: ProductDraft, now: OffsetDateTime) -> Self {
        let id = ProductId::new();
        let variants = d
            .variants
            .into_iter()
            .map(|v| Variant::from_draft(tenant, id, v, now))
            .collect();
        Self {
            id,
            tenant_id: tenant,
            title: d.title,
            handle: d.handle,
            description: d.description,
            status: d.status,
            options: d.options,
            metadata: d.metadata,
            created_at: now,
            updated_at: now,
            version: 1,
            variants,
        }
    }
}

impl Variant {
    pub fn from_draft(
        tenant: TenantId,
        product: ProductId,
        d: VariantDraft,
        now: OffsetDateTime,
    ) -> Self {
        let mut prices = d.prices;
        prices.sort_by_key(|m| m.currency().code());
        Self {
            id: VariantId::new(),
            tenant_id: tenant,
            product_id: product,
            sku: d.sku,
            title: d.title,
            option_values: d.option_values,
            weight_grams: d.weight_grams,
            prices,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }
}

/// A stock location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub id: LocationId,
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

/// A product or variant title: trimmed, 1 to 255 characters.
pub fn parse_title(issues: &mut Issues, pointer: &str, s: &str) -> String {
    line(issues, pointer, s, limits::TITLE_MAX)
}

/// Parses a location name (1 to 100 characters).
pub fn parse_location_name(issues: &mut Issues, pointer: &str, s: &str) -> String {
    line(issues, pointer, s, limits::LOCATION_NAME_MAX)
}

/// What selling one variant in one currency needs: its product's status and title, the
/// variant's SKU and title, and its price in that currency (`None` without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantForSale {
    pub variant_id: VariantId,
    pub product_id: ProductId,
    pub product_status: ProductStatus,
    pub product_title: String,
    pub sku: Sku,
    pub variant_title: Option<String>,
    pub price: Option<Money>,
}

/// Stock of one variant at one location. `reserved <= on_hand` always (the database checks it
/// too), so `available` is never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InventoryLevel {
    pub tenant_id: TenantId,
    pub variant_id: VariantId,
    pub location_id: LocationId,
    pub on_hand: i64,
    pub reserved: i64,
    pub updated_at: OffsetDateTime,
}

impl InventoryLevel {
    pub const fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// Why stock moved. A fixed list so reports can group by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentReason {
    /// Goods arrived.
    Received,
    /// A count corrected the books.
    Recount,
    Damaged,
    Lost,
    Returned,
    /// Any other correction; explain it in the note.
    Correction,
    /// Taken out of stock by an order's fulfilment (written by the orders context only).
    Fulfilled,
}

impl AdjustmentReason {
    /// The reasons staff may give; `fulfilled` is the orders context's.
    pub const MANUAL: [Self; 6] = [
        Self::Received,
        Self::Recount,
        Self::Damaged,
        Self::Lost,
        Self::Returned,
        Self::Correction,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Recount => "recount",
            Self::Damaged => "damaged",
            Self::Lost => "lost",
            Self::Returned => "returned",
            Self::Correction => "correction",
            Self::Fulfilled => "fulfilled",
        }
    }

    /// A reason staff may give (not `fulfilled`).
    pub fn parse_manual(s: &str) -> Option<Self> {
        Self::MANUAL.into_iter().find(|v| v.as_str() == s)
    }
}

/// One ledger row: every change of `on_hand` is one of these, so a level is always explained
/// by the sum of its adjustments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub id: AdjustmentId,
    pub tenant_id: TenantId,
    pub variant_id: VariantId,
    pub location_id: LocationId,
    pub delta: i64,
    pub reason: AdjustmentReason,
    pub note: Option<String>,
    /// Who made it: a staff user (`usr_…`) or an API key (`key_…`).
    pub actor: String,
    pub created_at: OffsetDateTime,
}

/// Stock held for a checkout until it is released (or, later, fulfilled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub tenant_id: TenantId,
    pub variant_id: VariantId,
    pub location_id: LocationId,
    pub quantity: i64,
    pub created_at: OffsetDateTime,
    pub released_at: Option<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_takes_line_breaks_and_tabs_but_no_nul_or_other_control_character() {
        let mut issues = Issues::default();
        parse_description(&mut issues, "/description", Some("two\nlines\twith a tab"));
        let mut meta = Metadata::new();
        meta.insert("note".into(), "a\r\nb".into());
        check_metadata(&mut issues, "/metadata", &meta);
        assert!(issues.is_empty());
        parse_description(&mut issues, "/description", Some("nul \u{0}"));
        let mut meta = Metadata::new();
        meta.insert("note".into(), "bell \u{7}".into());
        meta.insert("k\u{0}".into(), "v".into());
        check_metadata(&mut issues, "/metadata", &meta);
        assert_eq!(issues.into_vec().len(), 3);
    }

    fn input() -> ProductInput {
        serde_json::from_value(serde_json::json!({
            "title": " Tee ",
            "handle": "blue-tee",
            "options": [{"name": "size", "values": ["S", "M"]}],
            "metadata": {"material": "cotton"},
            "variants": [
                {"sku": "TEE-S", "option_values": ["S"], "prices": [{"amount": 1999, "currency": "USD"}, {"amount": 2500, "currency": "JPY"}]},
                {"sku": "TEE-M", "option_values": ["M"], "weight_grams": 180, "prices": [{"amount": 0, "currency": "EUR"}]}
            ]
        }))
        .expect("shape")
    }

    fn issues_of(p: &ProductInput) -> Vec<(String, String)> {
        let mut issues = Issues::default();
        p.parse(&mut issues, "");
        issues
            .into_vec()
            .into_iter()
            .map(|i| (i.pointer, i.message))
            .collect()
    }

    #[test]
    fn a_valid_product_parses_trimmed() {
        let mut issues = Issues::default();
        let d = input().parse(&mut issues, "");
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(d.title, "Tee");
        assert_eq!(d.status, ProductStatus::Draft);
        assert_eq!(d.variants[0].prices[1].minor(), 2500);
    }

    #[test]
    fn every_problem_is_reported_with_its_pointer() {
        let mut p = input();
        p.handle = "blue tee".into();
        p.variants[0].prices[0].amount = -1;
        p.variants[0].prices[1].currency = "XYZ".into();
        p.variants[1].sku = "TEE-S".into();
        p.variants[1].option_values = vec!["XL".into()];
        p.metadata.insert("k".repeat(41), "v".into());
        let pointers: Vec<String> = issues_of(&p).into_iter().map(|(p, _)| p).collect();
        for expected in [
            "/handle",
            "/variants/0/prices/0/amount",
            "/variants/0/prices/1/currency",
            "/variants/1/sku",
            "/variants/1/option_values/0",
        ] {
            assert!(
                pointers.iter().any(|p| p == expected),
                "{expected} in {pointers:?}"
            );
        }
        assert!(pointers.iter().any(|p| p.starts_with("/metadata/")));
    }

    #[test]
    fn metadata_is_bounded_exactly() {
        let mut p = input();
        p.metadata = (0..50)
            .map(|i| (format!("k{i}"), "v".repeat(500)))
            .collect();
        assert!(
            issues_of(&p).is_empty(),
            "50 keys of 500 characters are allowed"
        );
        p.metadata.insert("one-more".into(), String::new());
        assert_eq!(issues_of(&p)[0].0, "/metadata");
        let mut p = input();
        p.metadata.insert("long".into(), "v".repeat(501));
        assert_eq!(issues_of(&p)[0].0, "/metadata/long");
    }

    #[test]
    fn handles_and_skus_are_checked() {
        for ok in ["a", "blue-tee", "tee-2026"] {
            assert!(Handle::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Blue", "a b", "-a", "a-", "a--b", "ä", &"a".repeat(101)] {
            assert!(Handle::parse(bad).is_err(), "{bad}");
        }
        assert!(Sku::parse("TEE/S-01").is_ok());
        assert!(Sku::parse("TEE S").is_err());
        assert!(Sku::parse(&"x".repeat(65)).is_err());
    }
}
