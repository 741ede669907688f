//! Catalog and inventory use cases. Each state change writes exactly one domain event, in the
//! same transaction as the change (the ports take the events).

use std::{collections::HashMap, sync::Arc};

use keel_kernel::{
    StoreError, TenantId,
    clock::Clock,
    event::NewEvent,
    money::Currency,
    page::{Limit, Page, PageRequest},
};
use time::OffsetDateTime;

use crate::{
    domain::{
        Adjustment, AdjustmentId, AdjustmentReason, FieldIssue, Handle, InventoryLevel, Issues,
        Location, LocationId, Product, ProductDraft, ProductId, ProductInput, ProductPatchInput,
        ProductStatus, Reservation, ReservationId, Sku, Variant, VariantId, VariantInput,
        VariantPatchInput, check_metadata, check_option_values, check_options, limits,
        parse_description, parse_location_name, parse_title,
    },
    ports::{
        CatalogStore, HANDLE_CONSTRAINT, INSUFFICIENT_STOCK, InventoryStore, LOCATION_IN_USE,
        LOCATION_NAME_CONSTRAINT, ProductCursor, ProductFilter, ProductPage, ProductSort,
        SKU_CONSTRAINT, STOCK_RESERVED, SaveProduct, StorefrontSettings, VERSION_CONFLICT,
    },
};

/// What can go wrong, in the catalog's words.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid input")]
    Invalid(Vec<FieldIssue>),
    #[error("not found")]
    NotFound,
    /// `If-Match` named a version that is no longer current.
    #[error("the resource changed since it was read")]
    PreconditionFailed,
    #[error("not enough stock")]
    InsufficientStock,
    #[error("stock is reserved")]
    StockReserved,
    #[error("the location still holds stock")]
    LocationInUse,
    /// Concurrent writers kept changing the resource; the caller may retry.
    #[error("the resource is being changed concurrently")]
    Contended,
    #[error(transparent)]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for CatalogError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            e if e.is_conflict_on(INSUFFICIENT_STOCK) => Self::InsufficientStock,
            e if e.is_conflict_on(STOCK_RESERVED) => Self::StockReserved,
            e if e.is_conflict_on(LOCATION_IN_USE) => Self::LocationInUse,
            other => Self::Store(other),
        }
    }
}

fn invalid(pointer: &str, message: &str) -> CatalogError {
    CatalogError::Invalid(vec![FieldIssue {
        pointer: pointer.to_owned(),
        message: message.to_owned(),
    }])
}

/// How many times a write without `If-Match` re-reads and retries after losing a race.
const SAVE_ATTEMPTS: usize = 3;

fn event(
    tenant: TenantId,
    kind: &'static str,
    payload: &serde_json::Value,
    at: OffsetDateTime,
) -> Result<NewEvent, CatalogError> {
    NewEvent::new(tenant, kind, payload, at).map_err(|e| CatalogError::Internal(e.to_string()))
}

/// A product as the storefront sees it: active, priced in one currency, with availability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreProduct {
    pub product: Product,
    /// Available units per variant (over all locations), in the product's variant order.
    pub available: Vec<i64>,
    pub currency: Currency,
    pub show_counts: bool,
}

/// One page of storefront products.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePage {
    pub items: Vec<StoreProduct>,
    pub next_cursor: Option<ProductCursor>,
}

/// The storage ports the catalog works with.
#[derive(Debug, Clone)]
pub struct CatalogPorts {
    pub catalog: Arc<dyn CatalogStore>,
    pub inventory: Arc<dyn InventoryStore>,
}

/// Catalog and inventory use cases.
#[derive(Debug, Clone)]
pub struct CatalogService {
    catalog: Arc<dyn CatalogStore>,
    inventory: Arc<dyn InventoryStore>,
    clock: Arc<dyn Clock>,
}

fn product_payload(p: &Product) -> serde_json::Value {
    serde_json::json!({
        "product_id": p.id,
        "handle": p.handle,
        "status": p.status,
        "version": p.version,
    })
}

mod inventory;
mod storefront;

pub use inventory::AdjustRequest;

impl CatalogService {
    pub fn new(ports: CatalogPorts, clock: Arc<dyn Clock>) -> Self {
        Self {
            catalog: ports.catalog,
            inventory: ports.inventory,
            clock,
        }
    }

    /// Issues for SKUs already used by a product other than `owner`.
    async fn check_skus(
        &self,
        tenant: TenantId,
        wanted: &[(String, &Sku, Option<ProductId>)],
        issues: &mut Issues,
    ) -> Result<(), CatalogError> {
        let skus: Vec<Sku> = wanted.iter().map(|(_, s, _)| (*s).clone()).collect();
        if skus.is_empty() {
            return Ok(());
        }
        let owners: HashMap<Sku, ProductId> = self
            .catalog
            .sku_owners(tenant, &skus)
            .await?
            .into_iter()
            .collect();
        for (pointer, sku, owner) in wanted {
            if let Some(holder) = owners.get(*sku)
                && Some(*holder) != *owner
            {
                issues.push(
                    pointer.clone(),
                    "is already used by another product's variant",
                );
            }
        }
        Ok(())
    }

    /// Maps a uniqueness conflict the database caught (a race the pre-checks missed).
    fn conflict_issue(e: StoreError, prefix: &str) -> CatalogError {
        if e.is_conflict_on(HANDLE_CONSTRAINT) {
            invalid(
                &format!("{prefix}/handle"),
                "is already used by another product",
            )
        } else if e.is_conflict_on(SKU_CONSTRAINT) {
            invalid(
                &format!("{prefix}/variants"),
                "a SKU is already used by another product's variant",
            )
        } else {
            e.into()
        }
    }

    /// Creates a product with its variants.
    pub async fn create_product(
        &self,
        tenant: TenantId,
        input: &ProductInput,
    ) -> Result<Product, CatalogError> {
        let mut issues = Issues::default();
        let draft = input.parse(&mut issues, "");
        let wanted: Vec<_> = draft
            .variants
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("/variants/{i}/sku"), &v.sku, None))
            .collect();
        self.check_skus(tenant, &wanted, &mut issues).await?;
        let draft = issues.finish(draft).map_err(CatalogError::Invalid)?;
        let now = self.clock.now();
        let product = Product::from_draft(tenant, draft, now);
        let e = event(tenant, "product.created", &product_payload(&product), now)?;
        self.catalog
            .save_products(
                tenant,
                &[SaveProduct {
                    product: &product,
                    expected_version: None,
                }],
                &[e],
            )
            .await
            .map_err(|e| Self::conflict_issue(e, ""))?;
        tracing::info!(tenant_id = %tenant, product_id = %product.id, "product created");
        Ok(product)
    }

    pub async fn get_product(
        &self,
        tenant: TenantId,
        id: ProductId,
    ) -> Result<Product, CatalogError> {
        Ok(self.catalog.get_product(tenant, id).await?)
    }

    pub async fn list_products(
        &self,
        tenant: TenantId,
        filter: &ProductFilter,
        limit: Limit,
        after: Option<&ProductCursor>,
    ) -> Result<ProductPage, CatalogError> {
        Ok(self
            .catalog
            .list_products(tenant, filter, limit, after)
            .await?)
    }

    /// Reads, changes with `change` and saves a product, retrying (re-reading) when a
    /// concurrent writer got in first; with `If-Match`, a stale version is 412 instead.
    /// `change` returns the event to record, or the issues that refuse the change.
    async fn modify<F>(
        &self,
        tenant: TenantId,
        id: ProductId,
        if_match: Option<IfMatch>,
        mut change: F,
    ) -> Result<Product, CatalogError>
    where
        F: FnMut(&mut Product, OffsetDateTime) -> Result<NewEvent, CatalogError>,
    {
        for _ in 0..SAVE_ATTEMPTS {
            let mut product = self.catalog.get_product(tenant, id).await?;
            let read_version = product.version;
            if let Some(m) = if_match
                && !m.matches(&product)
            {
                return Err(CatalogError::PreconditionFailed);
            }
            let now = self.clock.now();
            let e = change(&mut product, now)?;
            product.version = read_version + 1;
            product.updated_at = now;
            match self
                .catalog
                .save_products(
                    tenant,
                    &[SaveProduct {
                        product: &product,
                        expected_version: Some(read_version),
                    }],
                    &[e],
                )
                .await
            {
                Ok(()) => return Ok(product),
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) => {
                    if if_match.is_some() {
                        return Err(CatalogError::PreconditionFailed);
                    }
                }
                Err(e) => return Err(Self::conflict_issue(e, "")),
            }
        }
        Err(CatalogError::Contended)
    }

    /// Changes a product's own fields. `if_match` is the product version the client saw.
    pub async fn update_product(
        &self,
        tenant: TenantId,
        id: ProductId,
        patch: &ProductPatchInput,
        if_match: Option<i64>,
    ) -> Result<Product, CatalogError> {
        let mut issues = Issues::default();
        let handle = patch
            .handle
            .as_deref()
            .map(|h| Handle::parse(h).map_err(|m| issues.push("/handle", m)).ok());
        let status = patch.status.as_deref().map(|s| {
            ProductStatus::parse(s)
                .ok_or(())
                .map_err(|()| issues.push("/status", "must be `draft`, `active` or `archived`"))
                .ok()
        });
        if let Some(options) = &patch.options {
            check_options(&mut issues, "/options", options);
        }
        if let Some(m) = &patch.metadata {
            check_metadata(&mut issues, "/metadata", m);
        }
        let title = patch
            .title
            .as_deref()
            .map(|t| parse_title(&mut issues, "/title", t));
        if let Some(d) = &patch.description {
            parse_description(&mut issues, "/description", Some(d));
        }
        if !issues.is_empty() {
            return Err(CatalogError::Invalid(issues.into_vec()));
        }
        self.modify(tenant, id, if_match.map(IfMatch::Product), |p, now| {
            if let Some(t) = &title {
                p.title.clone_from(t);
            }
            if let Some(Some(h)) = &handle {
                p.handle = h.clone();
            }
            if let Some(d) = &patch.description {
                p.description.clone_from(d);
            }
            if let Some(Some(s)) = status {
                p.status = s;
            }
            if let Some(m) = &patch.metadata {
                p.metadata = m.clone();
            }
            if let Some(options) = &patch.options {
                p.options = options
                    .iter()
                    .map(|o| crate::domain::ProductOption {
                        name: o.name.trim().to_owned(),
                        values: o.values.iter().map(|v| v.trim().to_owned()).collect(),
                    })
                    .collect();
                let mut issues = Issues::default();
                for v in &p.variants {
                    check_option_values(&mut issues, "/options", &p.options, &v.option_values);
                }
                if !issues.is_empty() {
                    return Err(invalid(
                        "/options",
                        "the product's variants use option values these options do not have",
                    ));
                }
            }
            event(
                tenant,
                "product.updated",
                &serde_json::json!({"product_id": p.id, "version": p.version + 1}),
                now,
            )
        })
        .await
    }

    /// Deletes a product, its variants and their (unreserved) inventory levels.
    pub async fn delete_product(
        &self,
        tenant: TenantId,
        id: ProductId,
        if_match: Option<i64>,
    ) -> Result<(), CatalogError> {
        let now = self.clock.now();
        let e = event(
            tenant,
            "product.deleted",
            &serde_json::json!({"product_id": id}),
            now,
        )?;
        match self
            .catalog
            .delete_product(tenant, id, if_match, &[e])
            .await
        {
            Err(e) if e.is_conflict_on(VERSION_CONFLICT) => Err(CatalogError::PreconditionFailed),
            other => Ok(other?),
        }
    }

    /// Adds a variant to a product.
    pub async fn add_variant(
        &self,
        tenant: TenantId,
        product: ProductId,
        input: &VariantInput,
    ) -> Result<(Product, VariantId), CatalogError> {
        let mut issues = Issues::default();
        let draft = input.parse(&mut issues, "");
        self.check_skus(
            tenant,
            &[("/sku".to_owned(), &draft.sku, None)],
            &mut issues,
        )
        .await?;
        if !issues.is_empty() {
            return Err(CatalogError::Invalid(issues.into_vec()));
        }
        let mut new_id = None;
        let saved = self
            .modify(tenant, product, None, |p, now| {
                let mut issues = Issues::default();
                check_option_values(
                    &mut issues,
                    "/option_values",
                    &p.options,
                    &draft.option_values,
                );
                if p.variants.len() >= limits::VARIANTS_MAX {
                    issues.push(
                        "",
                        format!("a product has at most {} variants", limits::VARIANTS_MAX),
                    );
                }
                if !issues.is_empty() {
                    return Err(CatalogError::Invalid(issues.into_vec()));
                }
                let v = Variant::from_draft(tenant, p.id, draft.clone(), now);
                new_id = Some(v.id);
                let e = event(
                    tenant,
                    "variant.created",
                    &serde_json::json!({"product_id": p.id, "variant_id": v.id, "sku": v.sku}),
                    now,
                )?;
                p.variants.push(v);
                Ok(e)
            })
            .await
            .map_err(|e| match e {
                CatalogError::Invalid(mut issues) => {
                    for i in &mut issues {
                        if i.pointer == "/variants" {
                            i.pointer = "/sku".into();
                        }
                    }
                    CatalogError::Invalid(issues)
                }
                other => other,
            })?;
        let id = new_id.ok_or_else(|| CatalogError::Internal("variant not added".into()))?;
        Ok((saved, id))
    }

    /// Changes a variant. `if_match` is the variant version the client saw.
    pub async fn update_variant(
        &self,
        tenant: TenantId,
        product: ProductId,
        variant: VariantId,
        patch: &VariantPatchInput,
        if_match: Option<i64>,
    ) -> Result<Product, CatalogError> {
        let mut issues = Issues::default();
        let probe = VariantInput {
            sku: patch.sku.clone().unwrap_or_else(|| "unchanged".into()),
            title: patch.title.clone(),
            option_values: Vec::new(),
            weight_grams: None,
            prices: patch.prices.clone().unwrap_or_default(),
        };
        let parsed = probe.parse(&mut issues, "");
        if patch.sku.is_some() {
            self.check_skus(
                tenant,
                &[("/sku".to_owned(), &parsed.sku, Some(product))],
                &mut issues,
            )
            .await?;
        }
        if !issues.is_empty() {
            return Err(CatalogError::Invalid(issues.into_vec()));
        }
        self.modify(
            tenant,
            product,
            if_match.map(|v| IfMatch::Variant(variant, v)),
            |p, now| {
                let options = p.options.clone();
                let v = p
                    .variants
                    .iter_mut()
                    .find(|v| v.id == variant)
                    .ok_or(CatalogError::NotFound)?;
                if patch.sku.is_some() {
                    v.sku = parsed.sku.clone();
                }
                if patch.title.is_some() {
                    v.title.clone_from(&parsed.title);
                }
                if let Some(values) = &patch.option_values {
                    let mut issues = Issues::default();
                    check_option_values(&mut issues, "/option_values", &options, values);
                    if !issues.is_empty() {
                        return Err(CatalogError::Invalid(issues.into_vec()));
                    }
                    v.option_values.clone_from(values);
                }
                if patch.weight_grams.is_some() {
                    v.weight_grams = patch.weight_grams;
                }
                if patch.prices.is_some() {
                    let mut prices = parsed.prices.clone();
                    prices.sort_by_key(|m| m.currency().code());
                    v.prices = prices;
                }
                v.version += 1;
                v.updated_at = now;
                event(
                    tenant,
                    "variant.updated",
                    &serde_json::json!({"product_id": p.id, "variant_id": v.id, "version": v.version}),
                    now,
                )
            },
        )
        .await
        .map_err(|e| match e {
            CatalogError::Invalid(mut issues) => {
                for i in &mut issues {
                    if i.pointer == "/variants" {
                        i.pointer = "/sku".into();
                    }
                }
                CatalogError::Invalid(issues)
            }
            other => other,
        })
    }

    /// Removes a variant (refused while it has reserved stock).
    pub async fn delete_variant(
        &self,
        tenant: TenantId,
        product: ProductId,
        variant: VariantId,
        if_match: Option<i64>,
    ) -> Result<Product, CatalogError> {
        self.modify(
            tenant,
            product,
            if_match.map(|v| IfMatch::Variant(variant, v)),
            |p, now| {
                let before = p.variants.len();
                p.variants.retain(|v| v.id != variant);
                if p.variants.len() == before {
                    return Err(CatalogError::NotFound);
                }
                event(
                    tenant,
                    "variant.deleted",
                    &serde_json::json!({"product_id": p.id, "variant_id": variant}),
                    now,
                )
            },
        )
        .await
    }

    /// Creates or updates up to 1000 products by handle in one transaction: all or nothing.
    /// Variants are matched by SKU (new SKUs are added; variants not listed stay). Every
    /// problem of every item is reported, with pointers below `/products/<i>`.
    pub async fn batch_upsert(
        &self,
        tenant: TenantId,
        inputs: &[ProductInput],
    ) -> Result<Vec<Product>, CatalogError> {
        if inputs.len() > limits::BATCH_MAX {
            return Err(invalid(
                "/products",
                &format!("at most {} products per batch", limits::BATCH_MAX),
            ));
        }
        let mut issues = Issues::default();
        let drafts: Vec<ProductDraft> = inputs
            .iter()
            .enumerate()
            .map(|(i, p)| p.parse(&mut issues, &format!("/products/{i}")))
            .collect();
        for (i, d) in drafts.iter().enumerate() {
            if drafts[..i].iter().any(|o| o.handle == d.handle) {
                issues.push(
                    format!("/products/{i}/handle"),
                    "appears twice in this batch",
                );
            }
        }
        let handles: Vec<Handle> = drafts.iter().map(|d| d.handle.clone()).collect();
        let existing: HashMap<Handle, Product> = self
            .catalog
            .products_by_handles(tenant, &handles)
            .await?
            .into_iter()
            .map(|p| (p.handle.clone(), p))
            .collect();
        let mut seen_skus: HashMap<&Sku, usize> = HashMap::new();
        let mut wanted = Vec::new();
        for (i, d) in drafts.iter().enumerate() {
            let owner = existing.get(&d.handle).map(|p| p.id);
            for (j, v) in d.variants.iter().enumerate() {
                let at = format!("/products/{i}/variants/{j}/sku");
                if let Some(&other) = seen_skus.get(&v.sku)
                    && other != i
                {
                    issues.push(at.clone(), "appears in two products of this batch");
                }
                seen_skus.insert(&v.sku, i);
                wanted.push((at, &v.sku, owner));
            }
        }
        self.check_skus(tenant, &wanted, &mut issues).await?;
        if !issues.is_empty() {
            return Err(CatalogError::Invalid(issues.into_vec()));
        }
        let now = self.clock.now();
        let mut products = Vec::with_capacity(drafts.len());
        let mut expected = Vec::with_capacity(drafts.len());
        let mut events = Vec::with_capacity(drafts.len());
        for (i, d) in drafts.into_iter().enumerate() {
            match existing.get(&d.handle) {
                None => {
                    let p = Product::from_draft(tenant, d, now);
                    events.push(event(tenant, "product.created", &product_payload(&p), now)?);
                    expected.push(None);
                    products.push(p);
                }
                Some(current) => {
                    let p = Self::merge(current, d, now, i, &mut issues);
                    events.push(event(tenant, "product.updated", &product_payload(&p), now)?);
                    expected.push(Some(current.version));
                    products.push(p);
                }
            }
        }
        if !issues.is_empty() {
            return Err(CatalogError::Invalid(issues.into_vec()));
        }
        let saves: Vec<SaveProduct<'_>> = products
            .iter()
            .zip(&expected)
            .map(|(product, &expected_version)| SaveProduct {
                product,
                expected_version,
            })
            .collect();
        match self.catalog.save_products(tenant, &saves, &events).await {
            Ok(()) => {}
            Err(e) if e.is_conflict_on(VERSION_CONFLICT) => return Err(CatalogError::Contended),
            Err(e) => return Err(Self::conflict_issue(e, "/products")),
        }
        tracing::info!(tenant_id = %tenant, count = products.len(), "product batch upserted");
        Ok(products)
    }

    /// `current` with the draft's fields, its variants updated by SKU and new SKUs added.
    fn merge(
        current: &Product,
        d: ProductDraft,
        now: OffsetDateTime,
        index: usize,
        issues: &mut Issues,
    ) -> Product {
        let mut p = current.clone();
        p.title = d.title;
        p.description = d.description;
        p.status = d.status;
        p.options = d.options;
        p.metadata = d.metadata;
        p.version = current.version + 1;
        p.updated_at = now;
        for draft in d.variants {
            match p.variants.iter_mut().find(|v| v.sku == draft.sku) {
                Some(v) => {
                    let mut prices = draft.prices;
                    prices.sort_by_key(|m| m.currency().code());
                    v.title = draft.title;
                    v.option_values = draft.option_values;
                    v.weight_grams = draft.weight_grams;
                    v.prices = prices;
                    v.version += 1;
                    v.updated_at = now;
                }
                None => p
                    .variants
                    .push(Variant::from_draft(p.tenant_id, p.id, draft, now)),
            }
        }
        if p.variants.len() > limits::VARIANTS_MAX {
            issues.push(
                format!("/products/{index}/variants"),
                format!("a product has at most {} variants", limits::VARIANTS_MAX),
            );
        }
        for v in &p.variants {
            check_option_values(
                issues,
                &format!("/products/{index}/options"),
                &p.options,
                &v.option_values,
            );
        }
        p
    }
}

/// What an `If-Match` precondition compares: the product's version, or one variant's.
#[derive(Debug, Clone, Copy)]
enum IfMatch {
    Product(i64),
    Variant(VariantId, i64),
}

impl IfMatch {
    fn matches(self, p: &Product) -> bool {
        match self {
            Self::Product(v) => p.version == v,
            Self::Variant(id, v) => p.variants.iter().any(|x| x.id == id && x.version == v),
        }
    }
}

/// Sorting by title or creation, exposed for the HTTP layer's query parsing.
pub fn parse_sort(s: &str) -> Option<ProductSort> {
    match s {
        "created" => Some(ProductSort::Created),
        "title" => Some(ProductSort::Title),
        _ => None,
    }
}
