//! Pricing setup: tax rates, shipping options and promotions (generic over the three kinds),
//! and the shop's pricing settings.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A typed pricing-setup value: how it is keyed and stored.
pub(super) trait SetupValue: Serialize + DeserializeOwned {
    const KIND: SetupKind;
    const NAME: &'static str;
    fn id(&self) -> uuid::Uuid;
    fn key(&self) -> String;
    fn version(&self) -> i64;
    fn bump(&mut self, now: OffsetDateTime);
    fn usage_limit(&self) -> Option<i64> {
        None
    }
    fn set_times_used(&mut self, _n: i64) {}
}

impl SetupValue for TaxRate {
    const KIND: SetupKind = SetupKind::TaxRate;
    const NAME: &'static str = "tax_rate";
    fn id(&self) -> uuid::Uuid {
        self.id.as_uuid()
    }
    fn key(&self) -> String {
        match &self.region {
            Some(r) => format!("{}/{r}", self.country),
            None => self.country.to_string(),
        }
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn bump(&mut self, now: OffsetDateTime) {
        self.version += 1;
        self.updated_at = now;
    }
}

impl SetupValue for ShippingOption {
    const KIND: SetupKind = SetupKind::ShippingOption;
    const NAME: &'static str = "shipping_option";
    fn id(&self) -> uuid::Uuid {
        self.id.as_uuid()
    }
    fn key(&self) -> String {
        self.id.to_string()
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn bump(&mut self, now: OffsetDateTime) {
        self.version += 1;
        self.updated_at = now;
    }
}

impl SetupValue for Promotion {
    const KIND: SetupKind = SetupKind::Promotion;
    const NAME: &'static str = "promotion";
    fn id(&self) -> uuid::Uuid {
        self.id.as_uuid()
    }
    fn key(&self) -> String {
        self.code.clone()
    }
    fn version(&self) -> i64 {
        self.version
    }
    fn bump(&mut self, now: OffsetDateTime) {
        self.version += 1;
        self.updated_at = now;
    }
    fn usage_limit(&self) -> Option<i64> {
        self.usage_limit
    }
    fn set_times_used(&mut self, n: i64) {
        self.times_used = n;
    }
}

pub(super) fn record_of<T: SetupValue>(
    tenant: TenantId,
    v: &T,
) -> Result<SetupRecord, OrdersError> {
    Ok(SetupRecord {
        id: v.id(),
        tenant_id: tenant,
        kind: T::KIND,
        key: v.key(),
        body: to_json(v)?,
        usage_limit: v.usage_limit(),
        times_used: 0,
        version: v.version(),
    })
}

pub(super) fn value_of<T: SetupValue>(r: &SetupRecord) -> Result<T, OrdersError> {
    let mut v: T = from_json(&r.body)?;
    v.set_times_used(r.times_used);
    Ok(v)
}

pub(super) fn taken_key_issue(kind: SetupKind) -> OrdersError {
    match kind {
        SetupKind::TaxRate => invalid(
            "/region",
            "a rate for this country and region exists already",
        ),
        SetupKind::Promotion => invalid("/code", "is already the code of another promotion"),
        SetupKind::ShippingOption => invalid("", "exists already"),
    }
}

impl OrdersService {
    pub(super) async fn create_setup<T: SetupValue>(
        &self,
        tenant: TenantId,
        v: T,
    ) -> Result<T, OrdersError> {
        let now = self.clock.now();
        let r = record_of(tenant, &v)?;
        let e = event(
            tenant,
            const_created(T::KIND),
            &serde_json::json!({"id": v.key(), "kind": T::NAME}),
            now,
        )?;
        let created = self.setup.create_record(&r, &[e]).await;
        self.pricing.invalidate();
        match created {
            Ok(()) => Ok(v),
            Err(e) if e.is_conflict_on(SETUP_KEY_CONSTRAINT) => Err(taken_key_issue(T::KIND)),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn get_setup<T: SetupValue>(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
    ) -> Result<T, OrdersError> {
        value_of(&self.setup.get_record(tenant, T::KIND, id).await?)
    }

    pub(super) async fn list_setup<T: SetupValue>(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<T>, OrdersError> {
        let p = self.setup.list_records(tenant, T::KIND, page).await?;
        Ok(Page {
            items: p.items.iter().map(value_of).collect::<Result<_, _>>()?,
            next_cursor: p.next_cursor,
        })
    }

    pub(super) async fn update_setup<T: SetupValue>(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
        if_match: Option<i64>,
        change: impl Fn(&mut T) -> Result<(), Vec<FieldIssue>>,
    ) -> Result<T, OrdersError> {
        for _ in 0..SAVE_ATTEMPTS {
            let mut v: T = self.get_setup(tenant, id).await?;
            let read = v.version();
            if if_match.is_some_and(|m| m != read) {
                return Err(OrdersError::PreconditionFailed);
            }
            change(&mut v).map_err(OrdersError::Invalid)?;
            let now = self.clock.now();
            v.bump(now);
            let r = record_of(tenant, &v)?;
            let e = event(
                tenant,
                const_updated(T::KIND),
                &serde_json::json!({"id": v.key(), "version": v.version()}),
                now,
            )?;
            let updated = self.setup.update_record(&r, read, &[e]).await;
            self.pricing.invalidate();
            match updated {
                Ok(()) => return Ok(v),
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) && if_match.is_none() => {}
                Err(e) if e.is_conflict_on(VERSION_CONFLICT) => {
                    return Err(OrdersError::PreconditionFailed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(OrdersError::Contended)
    }

    pub(super) async fn delete_setup<T: SetupValue>(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
        if_match: Option<i64>,
    ) -> Result<(), OrdersError> {
        let now = self.clock.now();
        let e = event(
            tenant,
            const_deleted(T::KIND),
            &serde_json::json!({"kind": T::NAME, "record_id": id.to_string()}),
            now,
        )?;
        let deleted = self
            .setup
            .delete_record(tenant, T::KIND, id, if_match, &[e])
            .await;
        self.pricing.invalidate();
        match deleted {
            Err(e) if e.is_conflict_on(VERSION_CONFLICT) => Err(OrdersError::PreconditionFailed),
            other => Ok(other?),
        }
    }

    pub async fn create_tax_rate(
        &self,
        tenant: TenantId,
        input: &TaxRateInput,
    ) -> Result<TaxRate, OrdersError> {
        let v = input
            .parse(tenant, self.clock.now())
            .map_err(OrdersError::Invalid)?;
        self.create_setup(tenant, v).await
    }
    pub async fn tax_rate(&self, tenant: TenantId, id: TaxRateId) -> Result<TaxRate, OrdersError> {
        self.get_setup(tenant, id.as_uuid()).await
    }
    pub async fn tax_rates(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<TaxRate>, OrdersError> {
        self.list_setup(tenant, page).await
    }
    pub async fn update_tax_rate(
        &self,
        tenant: TenantId,
        id: TaxRateId,
        patch: &TaxRatePatch,
        if_match: Option<i64>,
    ) -> Result<TaxRate, OrdersError> {
        self.update_setup(tenant, id.as_uuid(), if_match, |t| patch.apply(t))
            .await
    }
    pub async fn delete_tax_rate(
        &self,
        tenant: TenantId,
        id: TaxRateId,
        if_match: Option<i64>,
    ) -> Result<(), OrdersError> {
        self.delete_setup::<TaxRate>(tenant, id.as_uuid(), if_match)
            .await
    }

    pub async fn create_shipping_option(
        &self,
        tenant: TenantId,
        input: &ShippingOptionInput,
    ) -> Result<ShippingOption, OrdersError> {
        let v = input
            .parse(tenant, self.clock.now())
            .map_err(OrdersError::Invalid)?;
        self.create_setup(tenant, v).await
    }
    pub async fn shipping_option(
        &self,
        tenant: TenantId,
        id: ShippingOptionId,
    ) -> Result<ShippingOption, OrdersError> {
        self.get_setup(tenant, id.as_uuid()).await
    }
    pub async fn shipping_options(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<ShippingOption>, OrdersError> {
        self.list_setup(tenant, page).await
    }
    pub async fn update_shipping_option(
        &self,
        tenant: TenantId,
        id: ShippingOptionId,
        patch: &ShippingOptionPatch,
        if_match: Option<i64>,
    ) -> Result<ShippingOption, OrdersError> {
        self.update_setup(tenant, id.as_uuid(), if_match, |o| patch.apply(o))
            .await
    }
    pub async fn delete_shipping_option(
        &self,
        tenant: TenantId,
        id: ShippingOptionId,
        if_match: Option<i64>,
    ) -> Result<(), OrdersError> {
        self.delete_setup::<ShippingOption>(tenant, id.as_uuid(), if_match)
            .await
    }

    pub async fn create_promotion(
        &self,
        tenant: TenantId,
        input: &PromotionInput,
    ) -> Result<Promotion, OrdersError> {
        let v = input
            .parse(tenant, self.clock.now())
            .map_err(OrdersError::Invalid)?;
        self.create_setup(tenant, v).await
    }
    pub async fn promotion(
        &self,
        tenant: TenantId,
        id: PromotionId,
    ) -> Result<Promotion, OrdersError> {
        self.get_setup(tenant, id.as_uuid()).await
    }
    pub async fn promotions(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Promotion>, OrdersError> {
        self.list_setup(tenant, page).await
    }
    pub async fn update_promotion(
        &self,
        tenant: TenantId,
        id: PromotionId,
        patch: &PromotionPatch,
        if_match: Option<i64>,
    ) -> Result<Promotion, OrdersError> {
        self.update_setup(tenant, id.as_uuid(), if_match, |p| patch.apply(p))
            .await
    }
    pub async fn delete_promotion(
        &self,
        tenant: TenantId,
        id: PromotionId,
        if_match: Option<i64>,
    ) -> Result<(), OrdersError> {
        self.delete_setup::<Promotion>(tenant, id.as_uuid(), if_match)
            .await
    }

    pub async fn pricing_settings(&self, tenant: TenantId) -> Result<PricingSettings, OrdersError> {
        Ok(self.setup.pricing_settings(tenant).await?)
    }

    pub async fn set_pricing_settings(
        &self,
        tenant: TenantId,
        settings: PricingSettings,
    ) -> Result<(), OrdersError> {
        let now = self.clock.now();
        let e = event(
            tenant,
            "pricing.settings_changed",
            &serde_json::json!({"prices_include_tax": settings.prices_include_tax}),
            now,
        )?;
        let set = self
            .setup
            .set_pricing_settings(tenant, settings, &[e])
            .await;
        // Whatever the outcome: a write whose answer was lost may still have landed.
        self.pricing.invalidate();
        Ok(set?)
    }

    pub(super) async fn find_promotion(
        &self,
        tenant: TenantId,
        code: &str,
    ) -> Result<Option<Promotion>, OrdersError> {
        match self
            .setup
            .find_record(tenant, SetupKind::Promotion, code)
            .await?
        {
            Some(r) => Ok(Some(value_of(&r)?)),
            None => Ok(None),
        }
    }

    /// What pricing `cart` reads: the tax rate of its address (its region's key, then its
    /// country's), its shipping option and its promotion code.
    pub(super) fn pricing_lookup(cart: &Cart) -> PricingLookup {
        let address = cart.shipping_address.as_ref();
        PricingLookup {
            tax_region: address
                .and_then(|a| a.region.as_ref().map(|r| format!("{}/{r}", a.country))),
            tax_country: address.map(|a| a.country.code().to_owned()),
            shipping_option: cart.shipping_option_id.map(|o| o.as_uuid()),
            promotion_code: cart.promotion_code.clone(),
        }
    }
}

pub(super) const fn const_created(kind: SetupKind) -> &'static str {
    match kind {
        SetupKind::TaxRate => "tax_rate.created",
        SetupKind::ShippingOption => "shipping_option.created",
        SetupKind::Promotion => "promotion.created",
    }
}

pub(super) const fn const_updated(kind: SetupKind) -> &'static str {
    match kind {
        SetupKind::TaxRate => "tax_rate.updated",
        SetupKind::ShippingOption => "shipping_option.updated",
        SetupKind::Promotion => "promotion.updated",
    }
}

pub(super) const fn const_deleted(kind: SetupKind) -> &'static str {
    match kind {
        SetupKind::TaxRate => "tax_rate.deleted",
        SetupKind::ShippingOption => "shipping_option.deleted",
        SetupKind::Promotion => "promotion.deleted",
    }
}
