//! Webhook endpoint use cases (create, change, rotate the secret, replay) and the pieces the
//! delivery worker needs (fan-out, signing keys, the decision after an attempt).

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use keel_identity::domain::sealed::MasterKey;
use keel_kernel::{
    StoreError, TenantId,
    clock::Clock,
    event::{NewEvent, RecordedEvent},
    page::{Page, PageRequest},
};
use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use crate::{
    domain::{
        Attempt, Channel, DeliveryPolicy, Endpoint, EndpointId, Message, MessageId, MessageStatus,
        Next, StoredSecret,
    },
    ports::{
        ACCOUNT_ENDPOINT_EXISTS, AttemptOutcome, ENDPOINT_LIMIT, VERSION_CONFLICT, WebhookStore,
    },
    signing::SigningKey,
    ssrf::SsrfPolicy,
};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{message}")]
    Invalid {
        pointer: &'static str,
        message: String,
    },
    #[error("not found")]
    NotFound,
    #[error("the resource changed since it was read")]
    PreconditionFailed,
    #[error("the shop already has an account-notification endpoint")]
    AccountEndpointExists,
    #[error("the shop already has {max} webhook endpoints")]
    TooManyEndpoints { max: i64 },
    #[error(transparent)]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for WebhookError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

/// A description: free text of at most 500 characters, lines and tabs allowed, no other
/// control character (PostgreSQL cannot store a NUL in text: a 500 before this check).
fn check_description(d: &str) -> Result<(), WebhookError> {
    if d.chars().count() > 500 {
        return Err(invalid("/description", "must be at most 500 characters"));
    }
    if d.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(invalid(
            "/description",
            "must not contain control characters other than line breaks and tabs",
        ));
    }
    Ok(())
}

fn invalid(pointer: &'static str, message: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        pointer,
        message: message.into(),
    }
}

/// An endpoint as sent.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    /// `https://…` (plain `http` only where the operator allows it).
    pub url: String,
    /// Exact types (`order.paid`) or prefixes (`order.*`); absent or empty = every event.
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A change to an endpoint (absent = unchanged).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    /// Re-enabling clears the failure history.
    pub enabled: Option<bool>,
}

fn check_event_types(types: &[String]) -> Result<(), WebhookError> {
    if types.len() > 50 {
        return Err(invalid("/event_types", "at most 50 event types"));
    }
    for t in types {
        let base = t.strip_suffix(".*").unwrap_or(t);
        let ok = !base.is_empty()
            && base.len() <= 100
            && base.split('.').all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            });
        if !ok {
            return Err(invalid(
                "/event_types",
                format!(
                    "`{t}` is not an event type such as `order.paid` or a prefix such as `order.*`"
                ),
            ));
        }
    }
    Ok(())
}

/// The settings the service works with.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub ssrf: SsrfPolicy,
    /// How long a replaced secret keeps signing: exactly 86 400 s by default.
    pub rotation_overlap: Duration,
    pub policy: DeliveryPolicy,
    /// How long messages are kept once delivered or given up.
    pub retention: Duration,
    /// Webhook endpoints one shop may have: every claim probes each enabled endpoint, so
    /// their number must be bounded per shop.
    pub max_endpoints: i64,
}

#[derive(Debug, Clone)]
pub struct WebhooksService {
    store: Arc<dyn WebhookStore>,
    master: Arc<MasterKey>,
    clock: Arc<dyn Clock>,
    settings: WebhookSettings,
}

fn event(
    tenant: TenantId,
    kind: &'static str,
    payload: &serde_json::Value,
    at: OffsetDateTime,
) -> Result<NewEvent, WebhookError> {
    NewEvent::new(tenant, kind, payload, at).map_err(|e| WebhookError::Internal(e.to_string()))
}

impl WebhooksService {
    pub fn new(
        store: Arc<dyn WebhookStore>,
        master: Arc<MasterKey>,
        clock: Arc<dyn Clock>,
        settings: WebhookSettings,
    ) -> Self {
        Self {
            store,
            master,
            clock,
            settings,
        }
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    fn context(e: &Endpoint) -> String {
        format!("whsec:{}:{}", e.tenant_id, e.id)
    }

    fn seal(&self, e: &Endpoint, key: &SigningKey, now: OffsetDateTime) -> StoredSecret {
        StoredSecret {
            sealed: STANDARD.encode(self.master.seal(&Self::context(e), key.as_bytes())),
            created_at: now,
            expires_at: None,
        }
    }

    /// The keys that sign for `e` at `now` (the current one, and a replaced one during its
    /// overlap).
    pub fn signing_keys(
        &self,
        e: &Endpoint,
        now: OffsetDateTime,
    ) -> Result<Vec<SigningKey>, WebhookError> {
        e.live_secrets(now)
            .map(|s| {
                let sealed = STANDARD
                    .decode(&s.sealed)
                    .map_err(|e| WebhookError::Internal(e.to_string()))?;
                let bytes = self
                    .master
                    .open(&Self::context(e), &sealed)
                    .map_err(|e| WebhookError::Internal(e.to_string()))?;
                Ok(SigningKey::from_bytes(bytes))
            })
            .collect()
    }

    /// Checks the URL's form and every address its host resolves to (no connection is made).
    async fn check_url(&self, url: &str) -> Result<String, WebhookError> {
        let parsed = self
            .settings
            .ssrf
            .check_url(url)
            .map_err(|e| invalid("/url", e.to_string()))?;
        self.settings
            .ssrf
            .resolve(&parsed)
            .await
            .map_err(|e| invalid("/url", e.to_string()))?;
        Ok(parsed.to_string())
    }

    /// Creates a webhook endpoint; answers it and its signing secret (shown once).
    pub async fn create_endpoint(
        &self,
        tenant: TenantId,
        input: &EndpointInput,
    ) -> Result<(Endpoint, String), WebhookError> {
        check_event_types(&input.event_types)?;
        let description = input.description.clone().unwrap_or_default();
        check_description(&description)?;
        self.create_in(
            tenant,
            Channel::Webhook,
            &input.url,
            description,
            input.event_types.clone(),
            input.enabled.unwrap_or(true),
            "webhook_endpoint.created",
        )
        .await
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one private constructor for both channels"
    )]
    async fn create_in(
        &self,
        tenant: TenantId,
        channel: Channel,
        url: &str,
        description: String,
        event_types: Vec<String>,
        enabled: bool,
        kind: &'static str,
    ) -> Result<(Endpoint, String), WebhookError> {
        let url = self.check_url(url).await?;
        let now = self.clock.now();
        let mut e = Endpoint {
            id: EndpointId::new(),
            tenant_id: tenant,
            channel,
            url,
            description,
            event_types,
            enabled,
            disabled_reason: None,
            secrets: Vec::new(),
            failing_since: None,
            consecutive_failures: 0,
            paused_until: None,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let key = SigningKey::generate();
        e.secrets.push(self.seal(&e, &key, now));
        // The mail system's address is the owner's business: not in the event log.
        let payload = match channel {
            Channel::Webhook => serde_json::json!({"endpoint_id": e.id, "url": e.url}),
            Channel::Account => serde_json::json!({"endpoint_id": e.id}),
        };
        let ev = event(tenant, kind, &payload, now)?;
        let max = match channel {
            Channel::Webhook => self.settings.max_endpoints,
            Channel::Account => 1,
        };
        match self.store.create_endpoint(&e, max, &[ev]).await {
            Ok(()) => Ok((e, key.expose())),
            Err(err)
                if err.is_conflict_on(ACCOUNT_ENDPOINT_EXISTS)
                    || (channel == Channel::Account && err.is_conflict_on(ENDPOINT_LIMIT)) =>
            {
                Err(WebhookError::AccountEndpointExists)
            }
            Err(err) if err.is_conflict_on(ENDPOINT_LIMIT) => {
                Err(WebhookError::TooManyEndpoints { max })
            }
            Err(err) => Err(err.into()),
        }
    }

    pub async fn endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
    ) -> Result<Endpoint, WebhookError> {
        Ok(self
            .store
            .get_endpoint(tenant, Channel::Webhook, id)
            .await?)
    }

    pub async fn endpoints(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Endpoint>, WebhookError> {
        Ok(self
            .store
            .list_endpoints(tenant, Channel::Webhook, page)
            .await?)
    }

    async fn save(
        &self,
        e: &mut Endpoint,
        read: i64,
        kind: &'static str,
        now: OffsetDateTime,
    ) -> Result<(), WebhookError> {
        e.version = read + 1;
        e.updated_at = now;
        let ev = event(
            e.tenant_id,
            kind,
            &serde_json::json!({"endpoint_id": e.id, "version": e.version}),
            now,
        )?;
        match self.store.update_endpoint(e, read, &[ev]).await {
            Err(err) if err.is_conflict_on(VERSION_CONFLICT) => {
                Err(WebhookError::PreconditionFailed)
            }
            other => Ok(other?),
        }
    }

    pub async fn update_endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
        patch: &EndpointPatch,
        if_match: Option<i64>,
    ) -> Result<Endpoint, WebhookError> {
        let mut e = self
            .store
            .get_endpoint(tenant, Channel::Webhook, id)
            .await?;
        let read = e.version;
        if if_match.is_some_and(|v| v != read) {
            return Err(WebhookError::PreconditionFailed);
        }
        if let Some(url) = &patch.url {
            e.url = self.check_url(url).await?;
        }
        if let Some(types) = &patch.event_types {
            check_event_types(types)?;
            e.event_types.clone_from(types);
        }
        if let Some(d) = &patch.description {
            check_description(d)?;
            e.description.clone_from(d);
        }
        if let Some(enabled) = patch.enabled {
            reenable(&mut e, enabled);
        }
        let now = self.clock.now();
        self.save(&mut e, read, "webhook_endpoint.updated", now)
            .await?;
        Ok(e)
    }

    pub async fn delete_endpoint(
        &self,
        tenant: TenantId,
        id: EndpointId,
    ) -> Result<(), WebhookError> {
        let now = self.clock.now();
        let ev = event(
            tenant,
            "webhook_endpoint.deleted",
            &serde_json::json!({"endpoint_id": id}),
            now,
        )?;
        Ok(self
            .store
            .delete_endpoint(tenant, Channel::Webhook, id, &[ev])
            .await?)
    }

    /// A new secret (shown once); the current one keeps signing for the exact overlap, so
    /// receivers can switch without losing a message. Secrets past their overlap are dropped.
    pub async fn rotate_secret(
        &self,
        tenant: TenantId,
        id: EndpointId,
    ) -> Result<(Endpoint, String), WebhookError> {
        let e = self
            .store
            .get_endpoint(tenant, Channel::Webhook, id)
            .await?;
        self.rotate(e, "webhook_endpoint.secret_rotated").await
    }

    async fn rotate(
        &self,
        mut e: Endpoint,
        kind: &'static str,
    ) -> Result<(Endpoint, String), WebhookError> {
        let read = e.version;
        let now = self.clock.now();
        e.secrets.retain(|s| s.expires_at.is_none_or(|x| now < x));
        let until = now + self.settings.rotation_overlap;
        for s in &mut e.secrets {
            if s.expires_at.is_none() {
                s.expires_at = Some(until);
            }
        }
        let key = SigningKey::generate();
        let sealed = self.seal(&e, &key, now);
        e.secrets.push(sealed);
        self.save(&mut e, read, kind, now).await?;
        Ok((e, key.expose()))
    }

    pub async fn messages(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        page: PageRequest,
    ) -> Result<Page<Message>, WebhookError> {
        self.store
            .get_endpoint(tenant, Channel::Webhook, endpoint)
            .await?;
        Ok(self.store.list_messages(tenant, endpoint, page).await?)
    }

    pub async fn attempts(
        &self,
        tenant: TenantId,
        message: MessageId,
        page: PageRequest,
    ) -> Result<Page<Attempt>, WebhookError> {
        self.attempts_in(tenant, Channel::Webhook, message, page)
            .await
    }

    /// A message's attempts, oldest first, if the message is `channel`'s.
    async fn attempts_in(
        &self,
        tenant: TenantId,
        channel: Channel,
        message: MessageId,
        page: PageRequest,
    ) -> Result<Page<Attempt>, WebhookError> {
        self.store.get_message(tenant, channel, message).await?;
        Ok(self.store.list_attempts(tenant, message, page).await?)
    }

    pub async fn replay_message(
        &self,
        tenant: TenantId,
        id: MessageId,
    ) -> Result<Message, WebhookError> {
        let now = self.clock.now();
        let ev = event(
            tenant,
            "webhook_message.replayed",
            &serde_json::json!({"message_id": id}),
            now,
        )?;
        self.store.replay_message(tenant, id, now, &[ev]).await?;
        Ok(self.store.get_message(tenant, Channel::Webhook, id).await?)
    }

    pub async fn replay_failed_since(
        &self,
        tenant: TenantId,
        endpoint: EndpointId,
        since: OffsetDateTime,
    ) -> Result<u64, WebhookError> {
        self.store
            .get_endpoint(tenant, Channel::Webhook, endpoint)
            .await?;
        let now = self.clock.now();
        let ev = event(
            tenant,
            "webhook_endpoint.replayed",
            &serde_json::json!({"endpoint_id": endpoint, "since": since.unix_timestamp()}),
            now,
        )?;
        Ok(self
            .store
            .replay_failed_since(tenant, endpoint, since, now, &[ev])
            .await?)
    }
}

/// Turning an endpoint on again clears its failure history and closes its circuit.
fn reenable(e: &mut Endpoint, enabled: bool) {
    if enabled && !e.enabled {
        e.failing_since = None;
        e.disabled_reason = None;
        e.consecutive_failures = 0;
        e.paused_until = None;
    }
    e.enabled = enabled;
}

/// The shop's account-notification endpoint as sent (`settings:manage`).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccountEndpointInput {
    /// `https://…` of the shop's own mail system (plain `http` only where the operator allows it).
    pub url: String,
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// The account-notification channel: one endpoint per shop that receives the one-time secrets
/// Keel never writes to its event log (password resets, invitations), signed like webhooks
/// with its own secret, behind the same SSRF guard, retry schedule and attempt log.
impl WebhooksService {
    /// The shop's account-notification endpoint (`NotFound` when none is set up).
    pub async fn account_endpoint(&self, tenant: TenantId) -> Result<Endpoint, WebhookError> {
        self.store
            .list_endpoints(tenant, Channel::Account, PageRequest::default())
            .await?
            .items
            .into_iter()
            .next()
            .ok_or(WebhookError::NotFound)
    }

    /// Sets up the endpoint (answering its signing secret, shown once) or changes its URL and
    /// state (no new secret).
    pub async fn put_account_endpoint(
        &self,
        tenant: TenantId,
        input: &AccountEndpointInput,
    ) -> Result<(Endpoint, Option<String>), WebhookError> {
        match self.account_endpoint(tenant).await {
            Ok(mut e) => {
                let read = e.version;
                e.url = self.check_url(&input.url).await?;
                if let Some(enabled) = input.enabled {
                    reenable(&mut e, enabled);
                }
                let now = self.clock.now();
                self.save(&mut e, read, "account_notifications.updated", now)
                    .await?;
                if !e.enabled {
                    // Turned off: what waits is given up now, so no one-time secret is sent
                    // (late, to an address that may have changed) when it is turned on again.
                    self.store.abandon_pending(tenant, e.id, now).await?;
                }
                Ok((e, None))
            }
            Err(WebhookError::NotFound) => {
                let (e, secret) = self
                    .create_in(
                        tenant,
                        Channel::Account,
                        &input.url,
                        String::new(),
                        Vec::new(),
                        input.enabled.unwrap_or(true),
                        "account_notifications.created",
                    )
                    .await?;
                Ok((e, Some(secret)))
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the endpoint with its notifications and their attempts.
    pub async fn delete_account_endpoint(&self, tenant: TenantId) -> Result<(), WebhookError> {
        let e = self.account_endpoint(tenant).await?;
        let now = self.clock.now();
        let ev = event(
            tenant,
            "account_notifications.deleted",
            &serde_json::json!({"endpoint_id": e.id}),
            now,
        )?;
        Ok(self
            .store
            .delete_endpoint(tenant, Channel::Account, e.id, &[ev])
            .await?)
    }

    /// A new signing secret (shown once); the old one signs beside it for the exact overlap.
    pub async fn rotate_account_secret(
        &self,
        tenant: TenantId,
    ) -> Result<(Endpoint, String), WebhookError> {
        let e = self.account_endpoint(tenant).await?;
        self.rotate(e, "account_notifications.secret_rotated").await
    }

    /// The endpoint's notifications, newest first (their bodies are never shown).
    pub async fn account_messages(
        &self,
        tenant: TenantId,
        page: PageRequest,
    ) -> Result<Page<Message>, WebhookError> {
        let e = self.account_endpoint(tenant).await?;
        Ok(self.store.list_messages(tenant, e.id, page).await?)
    }

    /// One notification's attempts, oldest first.
    pub async fn account_attempts(
        &self,
        tenant: TenantId,
        message: MessageId,
        page: PageRequest,
    ) -> Result<Page<Attempt>, WebhookError> {
        self.attempts_in(tenant, Channel::Account, message, page)
            .await
    }

    /// The body to send for a claimed message: a webhook's as stored; an account
    /// notification's opened from its seal.
    pub fn body_to_send(&self, e: &Endpoint, m: &Message) -> Result<String, WebhookError> {
        match e.channel {
            Channel::Webhook => Ok(m.body.clone()),
            Channel::Account => keel_identity::domain::notice::open(
                &self.master,
                m.tenant_id,
                m.id.as_uuid(),
                &m.body,
            )
            .map_err(WebhookError::Internal),
        }
    }
}

/// The relay's fan-out: one message per enabled endpoint of the event's tenant that wants it.
/// The body is the Standard Webhooks payload: `{"type", "timestamp", "data"}`.
pub fn fan_out(event: &RecordedEvent, endpoints: &[Endpoint]) -> Vec<Message> {
    let mut wanting = endpoints
        .iter()
        .filter(|e| {
            // Events never reach the account channel, whatever an adapter passes in.
            e.channel == Channel::Webhook
                && e.enabled
                && e.tenant_id == event.tenant_id
                && e.wants(&event.event_type)
        })
        .peekable();
    // Most events have no subscriber (every cart change is one); only build the body for those
    // that do.
    if wanting.peek().is_none() {
        return Vec::new();
    }
    let body = serde_json::json!({
        "type": event.event_type,
        "timestamp": event.occurred_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "data": event.payload,
    })
    .to_string();
    wanting
        .map(|e| Message {
            id: MessageId::new(),
            tenant_id: e.tenant_id,
            endpoint_id: e.id,
            event_id: event.id,
            event_type: event.event_type.clone(),
            body: body.clone(),
            status: MessageStatus::Pending,
            attempts: 0,
            next_attempt_at: event.occurred_at,
            created_at: event.occurred_at,
        })
        .collect()
}

/// What an attempt means for its message and endpoint, by the policy.
pub fn outcome(
    policy: &DeliveryPolicy,
    endpoint: &Endpoint,
    attempts: i64,
    status: Option<u16>,
    retry_after: Option<Duration>,
    now: OffsetDateTime,
    jitter: Duration,
) -> AttemptOutcome {
    let next = policy.next(attempts, status, retry_after, now, jitter);
    let failing_since = endpoint.failing_since.unwrap_or(now);
    let stale = now - failing_since >= policy.disable_after;
    let stale_reason = || stale.then(|| "failing without a success for the configured time".into());
    let (status, next_attempt_at, endpoint_ok, disable) = match next {
        Next::Delivered => (MessageStatus::Delivered, now, true, None),
        Next::Gone => (
            MessageStatus::Failed,
            now,
            false,
            Some("the receiver answered 410 Gone".into()),
        ),
        Next::RetryAt(at) => (MessageStatus::Pending, at, false, stale_reason()),
        Next::Failed => (MessageStatus::Failed, now, false, stale_reason()),
    };
    AttemptOutcome {
        status,
        next_attempt_at,
        endpoint_ok,
        circuit_failures: policy.circuit_failures,
        open_until: now + policy.circuit_pause,
        disable,
        drop_body: endpoint.channel == Channel::Account && status != MessageStatus::Pending,
    }
}

#[cfg(test)]
mod description_tests {
    use super::check_description;

    #[test]
    fn a_description_takes_lines_and_tabs_but_no_other_control_character() {
        assert!(check_description("Orders to the warehouse\n\tby region\r\n").is_ok());
        for bad in ["nul \u{0} byte", "bell \u{7}", "escape \u{1b}[0m"] {
            assert!(check_description(bad).is_err(), "{bad:?}");
        }
        assert!(check_description(&"x".repeat(500)).is_ok());
        assert!(check_description(&"x".repeat(501)).is_err());
    }
}
