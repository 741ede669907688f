//! Staff administration: invite, list, read, change role, disable. Route permissions are
//! checked by the HTTP layer (`users:manage`); the owner rules are checked here and, for
//! changes, again inside the storage transaction.

use std::sync::Arc;

use keel_kernel::{
    StoreError,
    clock::Clock,
    event::NewEvent,
    page::{Page, PageRequest},
};
use time::Duration;
use tracing::instrument;

use crate::{
    domain::access::{Role, RoleChangeError},
    domain::secret::Secret,
    domain::staff::{Email, OneTimeToken, StaffUser, TokenPurpose, UserId, UserStatus},
    ports::{STAFF_EMAIL_CONSTRAINT, StaffStore},
    services::auth::StaffPrincipal,
};

/// Why an administration request was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserAdminError {
    #[error("{0}")]
    Refused(RoleChangeError),
    #[error("a user with this email already exists in this shop")]
    EmailTaken,
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for UserAdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            other => Self::Store(other),
        }
    }
}

/// A new invitation: the user and the one-time token to hand to them (shown once).
#[derive(Debug)]
pub struct Invitation {
    pub user: StaffUser,
    pub token: Secret,
    pub expires_in: Duration,
}

/// Staff administration use cases.
#[derive(Debug, Clone)]
pub struct UserService {
    staff: Arc<dyn StaffStore>,
    clock: Arc<dyn Clock>,
    invite_ttl: Duration,
    /// Seals the invitation notice for the shop's account-notification endpoint.
    master: Arc<crate::domain::sealed::MasterKey>,
}

fn event(
    p: &StaffPrincipal,
    kind: &'static str,
    payload: &serde_json::Value,
    at: time::OffsetDateTime,
) -> Result<NewEvent, UserAdminError> {
    NewEvent::new(p.tenant_id, kind, payload, at)
        .map_err(|e| UserAdminError::Internal(e.to_string()))
}

impl UserService {
    pub fn new(
        staff: Arc<dyn StaffStore>,
        clock: Arc<dyn Clock>,
        invite_ttl: Duration,
        master: Arc<crate::domain::sealed::MasterKey>,
    ) -> Self {
        Self {
            staff,
            clock,
            invite_ttl,
            master,
        }
    }

    /// Invites a user with `role`. Only an owner may invite an owner. The inviter gets the
    /// invite token in the answer, and the shop's account-notification endpoint (if any) gets
    /// it in a notice for the invitee.
    #[instrument(skip_all, fields(tenant_id = %actor.tenant_id))]
    pub async fn invite(
        &self,
        actor: &StaffPrincipal,
        email: Email,
        role: Role,
    ) -> Result<Invitation, UserAdminError> {
        crate::domain::access::check_invite(actor.role, role).map_err(UserAdminError::Refused)?;
        let now = self.clock.now();
        let user = StaffUser {
            id: UserId::new(),
            tenant_id: actor.tenant_id,
            email,
            role,
            status: UserStatus::Invited,
            password_hash: None,
            created_at: now,
        };
        let token = Secret::generate(TokenPurpose::Invite.prefix());
        let row = OneTimeToken {
            hash: token.hash,
            tenant_id: actor.tenant_id,
            owner: crate::domain::staff::Account::Staff(user.id),
            purpose: TokenPurpose::Invite,
            expires_at: now + self.invite_ttl,
        };
        let e = event(
            actor,
            "staff_user.invited",
            &serde_json::json!({"user_id": user.id, "role": role, "by": actor.user_id}),
            now,
        )?;
        // The invitee's token goes to the shop's own mail system (when it has an account
        // endpoint) in a sealed notice; the event never carries it.
        let notice = crate::domain::notice::seal(
            &self.master,
            &e,
            &serde_json::json!({
                "user_id": user.id,
                "email": user.email.as_str(),
                "role": role,
                "invite_token": token.expose(),
                "expires_in": self.invite_ttl.whole_seconds(),
            }),
        )
        .map_err(UserAdminError::Internal)?;
        match self
            .staff
            .invite_user(&user, &row, &[e], Some(&notice))
            .await
        {
            Ok(()) => Ok(Invitation {
                user,
                token,
                expires_in: self.invite_ttl,
            }),
            Err(e) if e.is_conflict_on(STAFF_EMAIL_CONSTRAINT) => Err(UserAdminError::EmailTaken),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list(
        &self,
        actor: &StaffPrincipal,
        page: PageRequest,
    ) -> Result<Page<StaffUser>, UserAdminError> {
        Ok(self.staff.list_users(actor.tenant_id, page).await?)
    }

    pub async fn get(
        &self,
        actor: &StaffPrincipal,
        id: UserId,
    ) -> Result<StaffUser, UserAdminError> {
        Ok(self.staff.get_user(actor.tenant_id, id).await?)
    }

    /// Changes a role (`Some`) or disables the user (`None`), with a security event.
    #[instrument(skip_all, fields(tenant_id = %actor.tenant_id, user_id = %id))]
    pub async fn change(
        &self,
        actor: &StaffPrincipal,
        id: UserId,
        new: Option<Role>,
    ) -> Result<StaffUser, UserAdminError> {
        let now = self.clock.now();
        let e = match new {
            Some(role) => event(
                actor,
                "security.role_changed",
                &serde_json::json!({"user_id": id, "role": role, "by": actor.user_id}),
                now,
            )?,
            None => event(
                actor,
                "security.user_disabled",
                &serde_json::json!({"user_id": id, "by": actor.user_id}),
                now,
            )?,
        };
        match self
            .staff
            .change_role(actor.tenant_id, id, actor.role, new, now, &[e])
            .await?
        {
            Ok(user) => {
                tracing::info!(security = true, tenant_id = %actor.tenant_id, user_id = %id, disabled = new.is_none(), "staff user changed");
                Ok(user)
            }
            Err(refused) => Err(UserAdminError::Refused(refused)),
        }
    }
}
