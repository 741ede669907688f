//! Which limits hold for a request, the keys they count on, and the headers that describe them.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One limit a request is held to: the policy's name, the limit, and the key it counts on.
pub(super) struct Rule {
    pub(super) policy: &'static str,
    pub(super) limit: Limit,
    pub(super) key: Key,
    /// Spent by everyone (the shop's storefront as a whole): its state is no caller's to
    /// see, so the headers name it only when it refuses.
    pub(super) shared: bool,
}

/// What a request presents: the credential (the bearer token as authentication reads it, or
/// the cart's secret) and the client address as Keel counts it.
pub(super) struct Caller<'a> {
    pub(super) credential: &'a str,
    pub(super) cart_secret: &'a str,
    /// The client address's octets (IPv6 by /64).
    pub(super) client: &'a [u8],
}

/// Routes where a client proves who it is (staff and customers): the auth class.
pub(super) fn is_auth_route(method: &Method, route: &str) -> bool {
    *method == Method::POST
        && (route.starts_with("/v1/auth/")
            || route.starts_with("/v1/store/auth/")
            || route == "/v1/store/customers")
}

/// The rules that hold before anything is known of the caller: the client address's
/// ceiling over every limited route (whatever keys it presents: made-up publishable keys or
/// tokens never make a way past it), and the auth limit per client address.
pub(super) fn client_rules(
    settings: &LimitSettings,
    method: &Method,
    route: &str,
    client: &[u8],
) -> Vec<Rule> {
    let auth = is_auth_route(method, route);
    if !(auth || route.starts_with("/v1/store/") || crate::auth::is_staff_route(route)) {
        return Vec::new();
    }
    let mut rules = vec![Rule {
        policy: "client",
        limit: settings.client,
        key: key_of(&[b"client", client]),
        shared: false,
    }];
    if auth {
        rules.push(Rule {
            policy: "auth",
            limit: settings.auth,
            key: key_of(&[b"auth", client]),
            shared: false,
        });
    }
    rules
}

/// The rules that hold once the shop is known (its publishable key, or its staff member's or
/// secret key's credential, authenticated), each at the shop's own limit: its class (storefront
/// reads or writes per client address, staff reads or writes per staff member or secret key),
/// the abuse-prone routes' own, and the shop as a whole.
pub(super) fn shop_rules(
    settings: &LimitSettings,
    shop: &TenantLimits,
    req: &ShopRequest<'_>,
    who: &Caller<'_>,
) -> Vec<Rule> {
    let tenant = req.tenant.as_uuid();
    let tenant = tenant.as_bytes().as_slice();
    let limit = |p: Policy| shop.effective(p, settings.default_for(p));
    let per_address = |p: Policy| Rule {
        policy: p.name(),
        limit: limit(p),
        key: key_of(&[p.name().as_bytes(), tenant, who.client]),
        shared: false,
    };
    let read = matches!(*req.method, Method::GET | Method::HEAD);
    if let Some(principal) = req.principal {
        let p = if read {
            Policy::AdminRead
        } else {
            Policy::AdminWrite
        };
        return vec![Rule {
            policy: p.name(),
            limit: limit(p),
            key: key_of(&[p.name().as_bytes(), tenant, principal.as_bytes()]),
            shared: false,
        }];
    }
    // The storefront as a whole: staff are never in it (a storefront flood must not keep a
    // shop's staff out).
    let mut rules = vec![Rule {
        policy: Policy::Shop.name(),
        limit: limit(Policy::Shop),
        key: key_of(&[b"shop", tenant]),
        shared: true,
    }];
    rules.push(per_address(if read {
        Policy::StoreRead
    } else {
        Policy::StoreWrite
    }));
    if *req.method == Method::POST {
        match req.route {
            "/v1/store/carts" => rules.push(per_address(Policy::CartCreate)),
            "/v1/store/carts/{id}/checkout" => rules.push(per_address(Policy::Checkout)),
            "/v1/store/carts/{id}/promotions" => {
                // The cart as its id reads canonically (ids are case-insensitive and the path
                // percent-decoded: any spelling is the same cart), counted with the credential
                // that may use it: a stranger without the cart's secret spends a bucket of
                // their own, never the shopper's.
                let raw = req.path.split('/').nth(4).unwrap_or_default();
                let cart = percent_decode(raw)
                    .parse::<keel_orders::cart::CartId>()
                    .map_or_else(|_| raw.to_owned(), |id| id.to_string());
                let holder = if who.cart_secret.is_empty() {
                    who.credential
                } else {
                    who.cart_secret
                };
                rules.push(per_address(Policy::PromotionAddress));
                rules.push(Rule {
                    policy: Policy::PromotionCart.name(),
                    limit: limit(Policy::PromotionCart),
                    key: key_of(&[
                        b"promotion_cart",
                        tenant,
                        cart.as_bytes(),
                        holder.as_bytes(),
                    ]),
                    shared: false,
                });
            }
            _ => {}
        }
    }
    rules
}

/// What the shop's rules read of a request.
pub(super) struct ShopRequest<'a> {
    pub(super) tenant: TenantId,
    /// The staff member or secret key (staff routes).
    pub(super) principal: Option<uuid::Uuid>,
    pub(super) method: &'a Method,
    pub(super) route: &'a str,
    pub(super) path: &'a str,
}

/// A path segment percent-decoded (as the router hands it to the handler).
pub(super) fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (
                (bytes[i + 1] as char).to_digit(16),
                (bytes[i + 2] as char).to_digit(16),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The key of `parts` (see [`Key`]).
pub(super) fn key_of(parts: &[&[u8]]) -> Key {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    let mut key = [0; 16];
    key.copy_from_slice(&h.finalize()[..16]);
    key
}

pub(super) static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub(super) static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers) for the
/// decisions made: `"<policy>";q=<burst>;w=<seconds>` and `"<policy>";r=<remaining>;t=<s>`.
pub(super) fn headers(decisions: &[(Rule, Decision)]) -> (HeaderValue, HeaderValue) {
    let shown = || decisions.iter().filter(|(r, d)| !r.shared || !d.allowed);
    let policy = shown()
        .map(|(r, _)| {
            format!(
                "\"{}\";q={};w={}",
                r.policy,
                r.limit.burst(),
                r.limit.window_s()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let state = shown()
        .map(|(r, d)| {
            format!(
                "\"{}\";r={};t={}",
                r.policy,
                d.remaining,
                d.reset_ms.div_ceil(1000)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    // Policy names are fixed ASCII and the numbers digits: always a valid header value.
    (
        HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("")),
        HeaderValue::from_str(&state).unwrap_or(HeaderValue::from_static("")),
    )
}
