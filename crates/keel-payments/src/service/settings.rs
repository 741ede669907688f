//! A shop's settings for a provider: sealed secrets, never shown.

#[allow(clippy::wildcard_imports)]
use super::*;

impl PaymentsService {
    pub async fn list_providers(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<ProviderView>, PaymentsError> {
        let all = self.payments.list_providers(tenant).await?;
        Ok(all.iter().map(|s| self.view(s)).collect())
    }

    pub async fn get_provider(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
    ) -> Result<ProviderView, PaymentsError> {
        let s = self.payments.get_provider(tenant, provider).await?;
        Ok(self.view(&s))
    }

    /// Creates or replaces a shop's settings for a provider (only `stripe` has any); with
    /// `if_match`, only at that version. An enabled provider needs its key and at least one
    /// webhook secret.
    pub async fn save_provider(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
        input: ProviderInput,
        if_match: Option<i64>,
    ) -> Result<ProviderView, PaymentsError> {
        if provider != ProviderKind::Stripe {
            return Err(PaymentsError::NotFound);
        }
        if let Some(k) = &input.secret_key {
            check_secret_key(k)?;
        }
        if let Some(w) = &input.webhook_secrets {
            check_webhook_secrets(w)?;
        }
        let now = self.clock.now();
        let current = match self.payments.get_provider(tenant, provider).await {
            Ok(s) => Some(s),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(v) = if_match
            && current.as_ref().map(|c| c.version) != Some(v)
        {
            return Err(PaymentsError::PreconditionFailed);
        }
        let sealed_secret_key = match (&input.secret_key, &current) {
            (Some(k), _) => self
                .master
                .seal(&seal_context(tenant, provider, "secret_key"), k.as_bytes()),
            (None, Some(c)) => c.sealed_secret_key.clone(),
            (None, None) => Vec::new(),
        };
        let sealed_webhook_secrets = match (&input.webhook_secrets, &current) {
            (Some(w), _) => self.master.seal(
                &seal_context(tenant, provider, "webhook_secrets"),
                w.join("\n").as_bytes(),
            ),
            (None, Some(c)) => c.sealed_webhook_secrets.clone(),
            (None, None) => Vec::new(),
        };
        if input.enabled && (sealed_secret_key.is_empty() || sealed_webhook_secrets.is_empty()) {
            return Err(invalid(
                "/enabled",
                "an enabled provider needs its secret_key and webhook_secrets",
            ));
        }
        let settings = ProviderSettings {
            tenant_id: tenant,
            provider,
            enabled: input.enabled,
            capture: input.capture,
            sealed_secret_key,
            sealed_webhook_secrets,
            created_at: current.as_ref().map_or(now, |c| c.created_at),
            updated_at: now,
            version: current.as_ref().map_or(1, |c| c.version + 1),
        };
        // The event names what changed, never a secret.
        let changed = event(
            tenant,
            "payment_provider.updated",
            &serde_json::json!({
                "provider": provider.as_str(),
                "enabled": input.enabled,
                "capture": input.capture.as_str(),
                "secret_key_changed": input.secret_key.is_some(),
                "webhook_secrets_changed": input.webhook_secrets.is_some(),
            }),
            now,
        )?;
        match self
            .payments
            .save_provider(
                &settings,
                current.as_ref().map(|c| c.version),
                std::slice::from_ref(&changed),
            )
            .await
        {
            Ok(()) => Ok(self.view(&settings)),
            Err(e)
                if e.is_conflict_on(PROVIDER_EXISTS)
                    || e.is_conflict_on(PROVIDER_VERSION_CONFLICT) =>
            {
                Err(PaymentsError::PreconditionFailed)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn enabled(
        &self,
        tenant: TenantId,
        provider: ProviderKind,
    ) -> Result<ProviderSettings, PaymentsError> {
        match self.payments.get_provider(tenant, provider).await {
            Ok(s) if s.enabled => Ok(s),
            Ok(_) | Err(StoreError::NotFound) => {
                Err(PaymentsError::NotConfigured(provider.as_str()))
            }
            Err(e) => Err(e.into()),
        }
    }
}
