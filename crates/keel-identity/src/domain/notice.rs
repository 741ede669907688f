//! Account notifications: the one-time secrets a shop's own mail system must deliver to a
//! person (a password-reset token, an invitation token), and nothing else.
//!
//! They never enter the event log: anyone with `audit:read` or `webhooks:manage` reads that,
//! and with a reset token in it an admin or a leaked API key could take over the owner's
//! account (issue 19, finding 1). The event keeps a redacted record (who, when; no secret),
//! and the secret travels as an [`AccountNotice`] to the shop's account-notification endpoint
//! (`settings:manage`), written in the same transaction as the token. Its body is sealed under
//! the master key, bound to the shop and the message id, so the database holds no readable
//! secret either; the delivery opens it just before signing and sending, and the store drops it
//! once delivered or given up.

use keel_kernel::{TenantId, event::NewEvent};
use time::format_description::well_known::Rfc3339;

use crate::domain::sealed::MasterKey;

/// A sealed notification for the shop's account-notification endpoint, if it has one.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountNotice {
    /// The message id (its `webhook-id`).
    pub message_id: uuid::Uuid,
    /// The redacted event it accompanies (one notice per event).
    pub event_id: keel_kernel::event::EventId,
    pub event_type: &'static str,
    /// Base64 of the sealed Standard Webhooks body.
    pub sealed_body: String,
    pub created_at: time::OffsetDateTime,
}

impl std::fmt::Debug for AccountNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountNotice")
            .field("message_id", &self.message_id)
            .field("event_type", &self.event_type)
            .finish_non_exhaustive()
    }
}

/// The sealing context: a body opens only as the message it was sealed for.
fn context(tenant: TenantId, message: uuid::Uuid) -> String {
    format!("account_notice:{tenant}:{message}")
}

/// Seals the notification that accompanies `event`: the Standard Webhooks body `{"type",
/// "timestamp", "data"}` with `data` (which carries the secret).
pub fn seal(
    master: &MasterKey,
    event: &NewEvent,
    data: &serde_json::Value,
) -> Result<AccountNotice, String> {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    let message_id = uuid::Uuid::now_v7();
    let body = serde_json::json!({
        "type": event.event_type,
        "timestamp": event.occurred_at.format(&Rfc3339).map_err(|e| e.to_string())?,
        "data": data,
    })
    .to_string();
    let sealed = master.seal(&context(event.tenant_id, message_id), body.as_bytes());
    Ok(AccountNotice {
        message_id,
        event_id: event.id,
        event_type: event.event_type,
        sealed_body: STANDARD.encode(sealed),
        created_at: event.occurred_at,
    })
}

/// Opens a sealed body for sending.
pub fn open(
    master: &MasterKey,
    tenant: TenantId,
    message: uuid::Uuid,
    sealed_body: &str,
) -> Result<String, String> {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    let sealed = STANDARD
        .decode(sealed_body)
        .map_err(|_| "the notification body is not sealed data".to_owned())?;
    let plain = master
        .open(&context(tenant, message), &sealed)
        .map_err(|e| e.to_string())?;
    String::from_utf8(plain).map_err(|_| "the notification body is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_notice_opens_only_as_its_own_message_and_hides_its_secret() {
        let master = MasterKey::generate();
        let tenant = TenantId::new();
        let e = NewEvent::new(
            tenant,
            "staff_user.password_reset_requested",
            &serde_json::json!({"user_id": "usr_x"}),
            time::OffsetDateTime::UNIX_EPOCH,
        )
        .expect("event");
        let n = seal(
            &master,
            &e,
            &serde_json::json!({"reset_token": "rs_secret"}),
        )
        .expect("seal");
        assert!(!n.sealed_body.contains("rs_secret"));
        assert!(!format!("{n:?}").contains("rs_secret"));
        let body = open(&master, tenant, n.message_id, &n.sealed_body).expect("opens");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["type"], "staff_user.password_reset_requested");
        assert_eq!(v["data"]["reset_token"], "rs_secret");
        assert!(open(&master, tenant, uuid::Uuid::now_v7(), &n.sealed_body).is_err());
        assert!(open(&master, TenantId::new(), n.message_id, &n.sealed_body).is_err());
        assert!(open(&MasterKey::generate(), tenant, n.message_id, &n.sealed_body).is_err());
    }
}
