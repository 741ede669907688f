//! Staff users, sessions and the one-time tokens that activate accounts.

use std::fmt;

use keel_kernel::{TenantId, define_id};
use serde::Serialize;
use time::OffsetDateTime;

use crate::{domain::access::Role, domain::password::StoredHash, domain::secret::SecretHash};

define_id!(
    /// A staff user of one tenant.
    UserId,
    "usr"
);
define_id!(
    /// A login session: one refresh-token family.
    SessionId,
    "ses"
);

/// Why an email address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be an email address like name@example.com (at most 254 characters)")]
pub struct EmailError;

/// An email address, trimmed and lower-cased (so lookups match however it was typed).
/// Deliberately simple: one `@`, a non-empty local part, a domain with a dot, no spaces.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, EmailError> {
        let s = s.trim().to_lowercase();
        let ok = s.len() <= 254
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            })
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok { Ok(Self(s)) } else { Err(EmailError) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Emails are personal data: `Debug` masks the local part.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once('@') {
            Some((_, domain)) => write!(f, "Email(***@{domain})"),
            None => f.write_str("Email(***)"),
        }
    }
}

/// Where a staff account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// Created, waiting for its setup or invite token to be redeemed with a password.
    Invited,
    Active,
    Disabled,
}

impl UserStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Invited => "invited",
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Invited, Self::Active, Self::Disabled]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A staff member of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffUser {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: Email,
    pub role: Role,
    pub status: UserStatus,
    pub password_hash: Option<StoredHash>,
    pub created_at: OffsetDateTime,
}

/// What a one-time token is for. Each purpose is redeemed at its own route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// The owner's first password (`keel tenant create --owner-email`).
    Setup,
    /// An invited staff member's first password.
    Invite,
    /// The second step of a login with MFA (password checked, code pending).
    Mfa,
    /// A password reset, handed to the tenant's own systems through an event.
    Reset,
}

impl TokenPurpose {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Invite => "invite",
            Self::Mfa => "mfa",
            Self::Reset => "reset",
        }
    }

    /// Prefix of the plaintext token, so tokens of different purposes never cross.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Setup => "st",
            Self::Invite => "it",
            Self::Mfa => "mt",
            Self::Reset => "rs",
        }
    }

    /// Every purpose; storage parses against this list.
    pub const ALL: [Self; 4] = [Self::Setup, Self::Invite, Self::Mfa, Self::Reset];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// The purpose a presented account-activation token claims by its prefix (setup or invite).
    pub fn of_presented(token: &str) -> Option<Self> {
        [Self::Setup, Self::Invite].into_iter().find(|p| {
            token
                .strip_prefix(p.prefix())
                .is_some_and(|rest| rest.starts_with('_'))
        })
    }
}

/// A single-use token, stored by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeToken {
    pub hash: SecretHash,
    pub tenant_id: TenantId,
    /// Whose account the token acts on.
    pub owner: Account,
    pub purpose: TokenPurpose,
    pub expires_at: OffsetDateTime,
}

impl OneTimeToken {
    /// The staff user the token acts on; `None` for a customer's token (which no staff route
    /// redeems).
    pub const fn staff_user(&self) -> Option<UserId> {
        match self.owner {
            Account::Staff(id) => Some(id),
            Account::Customer(_) => None,
        }
    }
}

/// A login session (a refresh-token family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub id: SessionId,
    #[serde(skip)]
    pub tenant_id: TenantId,
    #[serde(skip)]
    pub owner: Account,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_used_at: OffsetDateTime,
    /// When its current refresh token expires.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(skip)]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A staff user (admin side) or a customer (storefront): who owns a session, an MFA
/// enrolment or a one-time token. Stored as a kind (`staff`/`customer`) and an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Account {
    Staff(UserId),
    Customer(keel_kernel::id::CustomerId),
}

impl Account {
    /// The storage form of the kind (`staff` or `customer`).
    pub const fn kind(self) -> &'static str {
        match self {
            Self::Staff(_) => "staff",
            Self::Customer(_) => "customer",
        }
    }

    /// The owner's id in storage form.
    pub const fn uuid(self) -> uuid::Uuid {
        match self {
            Self::Staff(id) => id.as_uuid(),
            Self::Customer(id) => id.as_uuid(),
        }
    }

    /// The key naming this account's id in event payloads (`user_id` or `customer_id`), the
    /// names the staff and customer events already use.
    pub const fn payload_key(self) -> &'static str {
        match self {
            Self::Staff(_) => "user_id",
            Self::Customer(_) => "customer_id",
        }
    }

    /// Rebuilds an owner from storage.
    pub fn from_parts(kind: &str, id: uuid::Uuid) -> Option<Self> {
        match kind {
            "staff" => Some(Self::Staff(UserId::from_uuid(id))),
            "customer" => Some(Self::Customer(keel_kernel::id::CustomerId::from_uuid(id))),
            _ => None,
        }
    }
}

/// The prefixed id (`usr_…` or `cus_…`), so the two kinds never read alike.
impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Staff(id) => id.fmt(f),
            Self::Customer(id) => id.fmt(f),
        }
    }
}

impl Session {
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// One refresh token of a session, stored by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub hash: SecretHash,
    pub tenant_id: TenantId,
    pub session_id: SessionId,
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// Set when it was exchanged for a new one; presenting it again is reuse.
    pub used_at: Option<OffsetDateTime>,
}

/// A signing key as stored: the seed sealed under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub kid: String,
    pub sealed_seed: Vec<u8>,
    pub created_at: OffsetDateTime,
    /// When a newer key replaced it; its public key stays published for the overlap.
    pub retired_at: Option<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_purposes_round_trip_and_prefixes_are_distinct() {
        for p in TokenPurpose::ALL {
            assert_eq!(TokenPurpose::parse(p.as_str()), Some(p));
        }
        let mut prefixes: Vec<_> = TokenPurpose::ALL.iter().map(|p| p.prefix()).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        assert_eq!(prefixes.len(), TokenPurpose::ALL.len());
        assert_eq!(
            TokenPurpose::of_presented("it_abc"),
            Some(TokenPurpose::Invite)
        );
        assert_eq!(
            TokenPurpose::of_presented("mt_abc"),
            None,
            "MFA tokens do not activate accounts"
        );
    }

    #[test]
    fn emails_are_normalised_and_bounded() {
        assert_eq!(
            Email::parse("  Alice@Shop.Test ").map(|e| e.0),
            Ok("alice@shop.test".into())
        );
        for bad in [
            "",
            "alice",
            "@shop.test",
            "alice@",
            "alice@shop",
            "a b@shop.test",
            "alice@.test",
            "a@b@c.test",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@shop.test", "a".repeat(65))).is_err());
        assert_eq!(
            format!("{:?}", Email::parse("alice@shop.test").expect("valid")),
            "Email(***@shop.test)"
        );
    }
}

/// A user's TOTP enrolment as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMfa {
    /// The TOTP secret sealed under the master key (context `totp:<tenant>:<user>`).
    pub sealed_secret: Vec<u8>,
    pub created_at: OffsetDateTime,
    /// Set once the user proved a working authenticator; until then MFA is not enforced.
    pub confirmed_at: Option<OffsetDateTime>,
    /// The last time step accepted; a code of this step or earlier is refused (replay).
    pub last_used_step: Option<i64>,
}
