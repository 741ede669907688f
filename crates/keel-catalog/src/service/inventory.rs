//! Stock locations and inventory: levels, adjustments with their ledger, and the
//! reservations orders hold.

#[allow(clippy::wildcard_imports)]
use super::*;

impl CatalogService {
    pub async fn create_location(
        &self,
        tenant: TenantId,
        name: &str,
    ) -> Result<Location, CatalogError> {
        let mut issues = Issues::default();
        let name = parse_location_name(&mut issues, "/name", name);
        let name = issues.finish(name).map_err(CatalogError::Invalid)?;
        let now = self.clock.now();
        let l = Location {
            id: LocationId::new(),
            tenant_id: tenant,
            name,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let e = event(
            tenant,
            "stock_location.created",
            &serde_json::json!({"location_id": l.id, "name": l.name}),
            now,
        )?;
        match self.inventory.create_location(&l, &[e]).await {
            Ok(()) => Ok(l),
            Err(e) if e.is_conflict_on(LOCATION_NAME_CONSTRAINT) => {
                Err(invalid("/name", "is already the name of another location"))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_location(
        &self,
        tenant: TenantId,
        id: LocationId,
    ) -> Result<Location, CatalogError> {
        Ok(self.inventory.get_location(tenant, id).await?)
    }

    pub async fn list_locations(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Location>, CatalogError> {
        Ok(self.inventory.list_locations(tenant, page).await?)
    }

    pub async fn rename_location(
        &self,
        tenant: TenantId,
        id: LocationId,
        name: &str,
        if_match: Option<i64>,
    ) -> Result<Location, CatalogError> {
        let mut issues = Issues::default();
        let name = parse_location_name(&mut issues, "/name", name);
        let name = issues.finish(name).map_err(CatalogError::Invalid)?;
        let current = self.inventory.get_location(tenant, id).await?;
        if if_match.is_some_and(|v| v != current.version) {
            return Err(CatalogError::PreconditionFailed);
        }
        let now = self.clock.now();
        let next = Location {
            name,
            updated_at: now,
            version: current.version + 1,
            ..current.clone()
        };
        let e = event(
            tenant,
            "stock_location.updated",
            &serde_json::json!({"location_id": id, "name": next.name}),
            now,
        )?;
        match self
            .inventory
            .update_location(&next, current.version, &[e])
            .await
        {
            Ok(()) => Ok(next),
            Err(e) if e.is_conflict_on(VERSION_CONFLICT) => Err(CatalogError::PreconditionFailed),
            Err(e) if e.is_conflict_on(LOCATION_NAME_CONSTRAINT) => {
                Err(invalid("/name", "is already the name of another location"))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_location(
        &self,
        tenant: TenantId,
        id: LocationId,
        if_match: Option<i64>,
    ) -> Result<(), CatalogError> {
        let now = self.clock.now();
        let e = event(
            tenant,
            "stock_location.deleted",
            &serde_json::json!({"location_id": id}),
            now,
        )?;
        match self
            .inventory
            .delete_location(tenant, id, if_match, &[e])
            .await
        {
            Err(e) if e.is_conflict_on(VERSION_CONFLICT) => Err(CatalogError::PreconditionFailed),
            other => Ok(other?),
        }
    }

    // ---- inventory ----

    pub async fn list_levels(
        &self,
        tenant: TenantId,
        variant: Option<VariantId>,
        location: Option<LocationId>,
        page: PageRequest,
    ) -> Result<Page<InventoryLevel>, CatalogError> {
        Ok(self
            .inventory
            .list_levels(tenant, variant, location, page)
            .await?)
    }

    /// Records an adjustment of `on_hand` (positive or negative, never zero) by `actor`.
    pub async fn adjust(
        &self,
        tenant: TenantId,
        request: &AdjustRequest,
        actor: String,
    ) -> Result<InventoryLevel, CatalogError> {
        let AdjustRequest {
            variant,
            location,
            delta,
            ref reason,
            ref note,
        } = *request;
        let note = note.as_deref();
        let mut issues = Issues::default();
        if delta == 0 || delta.abs() > limits::QUANTITY_MAX {
            issues.push(
                "/delta",
                format!(
                    "must be a non-zero whole number from -{0} to {0}",
                    limits::QUANTITY_MAX
                ),
            );
        }
        let reason = AdjustmentReason::parse_manual(reason).unwrap_or_else(|| {
            issues.push(
                "/reason",
                "must be one of `received`, `recount`, `damaged`, `lost`, `returned`, `correction`",
            );
            AdjustmentReason::Correction
        });
        if note.is_some_and(|n| n.chars().count() > limits::NOTE_MAX) {
            issues.push(
                "/note",
                format!("must be at most {} characters", limits::NOTE_MAX),
            );
        } else if note.is_some_and(crate::domain::has_control_in_text) {
            issues.push("/note", "must not contain control characters");
        }
        if !issues.is_empty() {
            return Err(CatalogError::Invalid(issues.into_vec()));
        }
        let now = self.clock.now();
        let a = Adjustment {
            id: AdjustmentId::new(),
            tenant_id: tenant,
            variant_id: variant,
            location_id: location,
            delta,
            reason,
            note: note.map(str::to_owned),
            actor,
            created_at: now,
        };
        let e = event(
            tenant,
            "inventory.adjusted",
            &serde_json::json!({
                "adjustment_id": a.id,
                "variant_id": variant,
                "location_id": location,
                "delta": delta,
                "reason": reason,
                "actor": a.actor,
            }),
            now,
        )?;
        Ok(self.inventory.adjust(&a, &[e]).await?)
    }

    /// Holds `quantity` units for a checkout; never more than is on hand, under any
    /// concurrency.
    pub async fn reserve(
        &self,
        tenant: TenantId,
        variant: VariantId,
        location: LocationId,
        quantity: i64,
    ) -> Result<Reservation, CatalogError> {
        if !(1..=limits::QUANTITY_MAX).contains(&quantity) {
            return Err(invalid("/quantity", "must be a positive whole number"));
        }
        let now = self.clock.now();
        let r = Reservation {
            id: ReservationId::new(),
            tenant_id: tenant,
            variant_id: variant,
            location_id: location,
            quantity,
            created_at: now,
            released_at: None,
        };
        let e = event(
            tenant,
            "inventory.reserved",
            &serde_json::json!({"reservation_id": r.id, "variant_id": variant, "location_id": location, "quantity": quantity}),
            now,
        )?;
        self.inventory.reserve(&r, &[e]).await?;
        Ok(r)
    }

    /// Gives reserved stock back (once).
    pub async fn release(&self, tenant: TenantId, id: ReservationId) -> Result<bool, CatalogError> {
        let now = self.clock.now();
        let e = event(
            tenant,
            "inventory.released",
            &serde_json::json!({"reservation_id": id}),
            now,
        )?;
        Ok(self.inventory.release(tenant, id, now, &[e]).await?)
    }
}

/// An adjustment as asked for: which stock, by how much, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustRequest {
    pub variant: VariantId,
    pub location: LocationId,
    /// Units added (positive) or removed (negative); never zero.
    pub delta: i64,
    /// One of [`AdjustmentReason`]'s names.
    pub reason: String,
    pub note: Option<String>,
}
