//! Roles and permissions: the one table that says who may do what (docs/architecture.md, "Tenancy and access").
//!
//! Authorization checks ask `role.can(permission)`; routes declare the permission they need.
//! The table is data, in one place, and a test prints it as the documented matrix.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A staff member's role within one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Admin,
    Staff,
    Viewer,
}

/// Something a principal may be allowed to do. Wire form `resource:action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    OrdersRead,
    OrdersWrite,
    CatalogRead,
    CatalogWrite,
    CustomersRead,
    WebhooksManage,
    UsersManage,
    ApiKeysManage,
    AuditRead,
    SettingsManage,
}

impl Permission {
    /// Every permission, in a stable order.
    pub const ALL: [Self; 10] = [
        Self::OrdersRead,
        Self::OrdersWrite,
        Self::CatalogRead,
        Self::CatalogWrite,
        Self::CustomersRead,
        Self::WebhooksManage,
        Self::UsersManage,
        Self::ApiKeysManage,
        Self::AuditRead,
        Self::SettingsManage,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OrdersRead => "orders:read",
            Self::OrdersWrite => "orders:write",
            Self::CatalogRead => "catalog:read",
            Self::CatalogWrite => "catalog:write",
            Self::CustomersRead => "customers:read",
            Self::WebhooksManage => "webhooks:manage",
            Self::UsersManage => "users:manage",
            Self::ApiKeysManage => "api_keys:manage",
            Self::AuditRead => "audit:read",
            Self::SettingsManage => "settings:manage",
        }
    }

    /// Parses the wire form (API key scopes, token claims).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format_args!("unknown permission `{s}`")))
    }
}

use Permission as P;

/// The role -> permission table. Owners hold everything; admins everything but tenant
/// settings; staff run the shop; viewers only read.
const TABLE: [(Role, &[Permission]); 4] = [
    (Role::Owner, &P::ALL),
    (
        Role::Admin,
        &[
            P::OrdersRead,
            P::OrdersWrite,
            P::CatalogRead,
            P::CatalogWrite,
            P::CustomersRead,
            P::WebhooksManage,
            P::UsersManage,
            P::ApiKeysManage,
            P::AuditRead,
        ],
    ),
    (
        Role::Staff,
        &[
            P::OrdersRead,
            P::OrdersWrite,
            P::CatalogRead,
            P::CatalogWrite,
            P::CustomersRead,
        ],
    ),
    (
        Role::Viewer,
        &[P::OrdersRead, P::CatalogRead, P::CustomersRead],
    ),
];

impl Role {
    pub const ALL: [Self; 4] = [Self::Owner, Self::Admin, Self::Staff, Self::Viewer];

    /// What this role may do.
    pub fn permissions(self) -> &'static [Permission] {
        TABLE
            .iter()
            .find(|(r, _)| *r == self)
            .map_or(&[], |(_, ps)| *ps)
    }

    pub fn can(self, p: Permission) -> bool {
        self.permissions().contains(&p)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Staff => "staff",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a role change (or disabling a user) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoleChangeError {
    #[error("managing users needs the users:manage permission")]
    NotAllowed,
    #[error("only an owner can change an owner or make someone an owner")]
    OwnerOnly,
    #[error("the last owner cannot be demoted or disabled")]
    LastOwner,
}

/// Decides whether `actor` may move a user from `current` to `new` (`None`: disable).
/// `owners` is the tenant's number of active owners, counted in the same transaction.
pub fn check_role_change(
    actor: Role,
    current: Role,
    new: Option<Role>,
    owners: u32,
) -> Result<(), RoleChangeError> {
    if !actor.can(Permission::UsersManage) {
        return Err(RoleChangeError::NotAllowed);
    }
    let touches_owner = current == Role::Owner || new == Some(Role::Owner);
    if touches_owner && actor != Role::Owner {
        return Err(RoleChangeError::OwnerOnly);
    }
    let removes_owner = current == Role::Owner && new != Some(Role::Owner);
    if removes_owner && owners <= 1 {
        return Err(RoleChangeError::LastOwner);
    }
    Ok(())
}

/// Decides whether `actor` may invite someone with `role`: managing users is needed, and only
/// an owner may create another owner.
pub fn check_invite(actor: Role, role: Role) -> Result<(), RoleChangeError> {
    if !actor.can(Permission::UsersManage) {
        return Err(RoleChangeError::NotAllowed);
    }
    if role == Role::Owner && actor != Role::Owner {
        return Err(RoleChangeError::OwnerOnly);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_holds_every_permission_and_roles_are_nested() {
        for p in Permission::ALL {
            assert!(Role::Owner.can(p), "{p}");
        }
        // Each role's permissions are a subset of the role above it.
        for pair in Role::ALL.windows(2) {
            for p in pair[1].permissions() {
                assert!(
                    pair[0].can(*p),
                    "{} lacks {p} that {} has",
                    pair[0],
                    pair[1]
                );
            }
        }
    }

    #[test]
    fn the_documented_matrix() {
        let rows: Vec<String> = Role::ALL
            .iter()
            .map(|r| {
                format!(
                    "{r}: {}",
                    r.permissions()
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                "owner: orders:read orders:write catalog:read catalog:write customers:read webhooks:manage users:manage api_keys:manage audit:read settings:manage",
                "admin: orders:read orders:write catalog:read catalog:write customers:read webhooks:manage users:manage api_keys:manage audit:read",
                "staff: orders:read orders:write catalog:read catalog:write customers:read",
                "viewer: orders:read catalog:read customers:read",
            ]
        );
    }

    #[test]
    fn wire_forms_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Permission::parse("orders:*"), None);
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn role_change_rules() {
        use Role::{Admin, Owner, Staff, Viewer};
        assert_eq!(check_role_change(Admin, Staff, Some(Viewer), 1), Ok(()));
        assert_eq!(check_role_change(Admin, Staff, None, 1), Ok(()));
        assert_eq!(
            check_role_change(Admin, Owner, Some(Admin), 3),
            Err(RoleChangeError::OwnerOnly)
        );
        assert_eq!(
            check_role_change(Admin, Staff, Some(Owner), 1),
            Err(RoleChangeError::OwnerOnly)
        );
        assert_eq!(
            check_role_change(Staff, Viewer, Some(Staff), 1),
            Err(RoleChangeError::NotAllowed)
        );
        assert_eq!(
            check_role_change(Owner, Owner, Some(Admin), 1),
            Err(RoleChangeError::LastOwner)
        );
        assert_eq!(
            check_role_change(Owner, Owner, None, 1),
            Err(RoleChangeError::LastOwner)
        );
        assert_eq!(check_role_change(Owner, Owner, Some(Admin), 2), Ok(()));
        assert_eq!(check_role_change(Owner, Staff, Some(Owner), 1), Ok(()));
        assert_eq!(check_invite(Admin, Staff), Ok(()));
        assert_eq!(check_invite(Admin, Owner), Err(RoleChangeError::OwnerOnly));
        assert_eq!(check_invite(Owner, Owner), Ok(()));
        assert_eq!(
            check_invite(Staff, Viewer),
            Err(RoleChangeError::NotAllowed)
        );
    }
}
