//! CSRF tokens for browser sessions (issue 23, ADR 0037): a signed double-submit token bound
//! to one session. The token is `HMAC-SHA256(csrf key, tenant ‖ session)` in base64url: the
//! server recomputes it from the session the refresh cookie names, so it needs no storage, a
//! token of another session never matches, and nobody without the key can make one.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use keel_kernel::TenantId;
use subtle::ConstantTimeEq;

use crate::domain::{sealed::MasterKey, staff::SessionId};

/// The key CSRF tokens are made with, derived from the master key.
#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(<redacted>)")
    }
}

impl CsrfKey {
    pub fn derive(master: &MasterKey) -> Self {
        Self(master.derive("keel.csrf.v1"))
    }

    fn mac(&self, tenant: TenantId, session: SessionId) -> [u8; 32] {
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        mac.update(tenant.as_uuid().as_bytes());
        mac.update(session.as_uuid().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The session's token.
    pub fn token(&self, tenant: TenantId, session: SessionId) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.mac(tenant, session))
    }

    /// Whether `presented` is the session's token (compared in constant time).
    pub fn verify(&self, tenant: TenantId, session: SessionId, presented: &str) -> bool {
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(presented) else {
            return false;
        };
        bytes.len() == 32 && bool::from(bytes.ct_eq(&self.mac(tenant, session)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_for_its_session_only() {
        let key = CsrfKey::derive(&MasterKey::generate());
        let (tenant, session, other) = (TenantId::new(), SessionId::new(), SessionId::new());
        let token = key.token(tenant, session);
        assert!(key.verify(tenant, session, &token));
        assert!(!key.verify(tenant, other, &token), "another session's");
        assert!(
            !key.verify(TenantId::new(), session, &token),
            "another shop's"
        );
        assert!(!key.verify(tenant, session, ""), "none");
        let forged = CsrfKey::derive(&MasterKey::generate()).token(tenant, session);
        assert!(!key.verify(tenant, session, &forged), "another key's");
    }
}
