//! RFC 9457 problem details: the one error shape of the API.
//!
//! Every error response, whether a handler's, an extractor's or the framework's (404, 405,
//! 413, panics), leaves as `application/problem+json` with a stable `code`. The catalogue of
//! codes is [`CATALOGUE`]: one place, tested, documented in `docs/problems.md`.
//!
//! 5xx bodies never carry internals: the real error rides in a response extension
//! ([`InternalError`]) and is logged by the request middleware inside the request's span.

use std::{borrow::Cow, sync::Arc};

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use keel_kernel::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One kind of problem: its stable code, HTTP status and human title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProblemKind {
    pub code: &'static str,
    pub status: u16,
    pub title: &'static str,
}

macro_rules! kinds {
    ($($konst:ident = ($code:literal, $status:literal, $title:literal);)*) => {
        impl ProblemKind {
            $(pub const $konst: Self = Self { code: $code, status: $status, title: $title };)*
        }
        /// Every problem kind the API can answer with.
        pub const CATALOGUE: &[ProblemKind] = &[$(ProblemKind::$konst),*];
    };
}

kinds! {
    BAD_REQUEST = ("bad_request", 400, "Bad request");
    MALFORMED_JSON = ("malformed_json", 400, "Malformed JSON body");
    INVALID_TOKEN = ("invalid_token", 400, "Invalid or expired token");
    UNAUTHORIZED = ("unauthorized", 401, "Unauthorized");
    INVALID_CREDENTIALS = ("invalid_credentials", 401, "Invalid credentials");
    INVALID_REFRESH_TOKEN = ("invalid_refresh_token", 401, "Invalid refresh token");
    REFRESH_TOKEN_REUSED = ("refresh_token_reused", 401, "Refresh token reused");
    INVALID_MFA_CODE = ("invalid_mfa_code", 401, "Invalid MFA code");
    FORBIDDEN = ("forbidden", 403, "Forbidden");
    REAUTHENTICATION_FAILED = ("reauthentication_failed", 403, "Reauthentication failed");
    MFA_ENROLLMENT_REQUIRED = ("mfa_enrollment_required", 403, "MFA enrolment required");
    MFA_REQUIRED_BY_SHOP = ("mfa_required_by_shop", 409, "MFA required by the shop");
    MFA_ALREADY_ENABLED = ("mfa_already_enabled", 409, "MFA already enabled");
    MFA_NOT_PENDING = ("mfa_not_pending", 409, "No MFA enrolment pending");
    MFA_NOT_ENABLED = ("mfa_not_enabled", 409, "MFA not enabled");
    EMAIL_TAKEN = ("email_taken", 409, "Email already in use");
    LAST_OWNER = ("last_owner", 409, "Last owner");
    TOO_MANY_ATTEMPTS = ("too_many_attempts", 429, "Too many attempts");
    RATE_LIMITED = ("rate_limited", 429, "Rate limited");
    TOO_MANY_CONNECTIONS = ("too_many_connections", 429, "Too many realtime connections");
    CSRF_FAILED = ("csrf_failed", 403, "Cross-site request refused");
    QUOTA_EXCEEDED = ("quota_exceeded", 403, "Quota exceeded");
    UPSTREAM_UNAVAILABLE = ("upstream_unavailable", 502, "Upstream unavailable");
    UPSTREAM_TIMEOUT = ("upstream_timeout", 504, "Upstream timed out");
    NOT_FOUND = ("not_found", 404, "Not found");
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405, "Method not allowed");
    CONFLICT = ("conflict", 409, "Conflict");
    INSUFFICIENT_STOCK = ("insufficient_stock", 409, "Insufficient stock");
    STOCK_RESERVED = ("stock_reserved", 409, "Stock reserved");
    LOCATION_IN_USE = ("location_in_use", 409, "Location in use");
    PRECONDITION_FAILED = ("precondition_failed", 412, "Precondition failed");
    IDEMPOTENCY_KEY_REQUIRED = ("idempotency_key_required", 400, "Idempotency key required");
    IDEMPOTENCY_KEY_REUSED = ("idempotency_key_reused", 422, "Idempotency key reused");
    IDEMPOTENCY_REQUEST_IN_PROGRESS = ("idempotency_request_in_progress", 409, "Idempotent request in progress");
    CART_CHECKED_OUT = ("cart_checked_out", 409, "Cart checked out");
    CART_EMPTY = ("cart_empty", 409, "Cart empty");
    CART_CHANGED = ("cart_changed", 409, "Cart changed");
    CART_PRICES_CHANGED = ("cart_prices_changed", 409, "Cart prices changed");
    SHIPPING_ADDRESS_REQUIRED = ("shipping_address_required", 409, "Shipping address required");
    SHIPPING_OPTION_REQUIRED = ("shipping_option_required", 409, "Shipping option required");
    SHIPPING_OPTION_UNAVAILABLE = ("shipping_option_unavailable", 409, "Shipping option unavailable");
    PROMOTION_NOT_APPLICABLE = ("promotion_not_applicable", 409, "Promotion not applicable");
    PROMOTION_EXHAUSTED = ("promotion_exhausted", 409, "Promotion exhausted");
    PROMOTION_CUSTOMER_LIMIT = ("promotion_customer_limit", 409, "Promotion limit per customer reached");
    TOO_MANY_UNPAID_ORDERS = ("too_many_unpaid_orders", 409, "Too many unpaid orders");
    TOO_MANY_ENDPOINTS = ("too_many_endpoints", 409, "Too many webhook endpoints");
    AMOUNT_OUT_OF_RANGE = ("amount_out_of_range", 422, "Amount out of range");
    ORDER_NOT_PAYABLE = ("order_not_payable", 409, "Order not payable");
    PAYMENT_AMOUNT_MISMATCH = ("payment_amount_mismatch", 409, "Payment amount mismatch");
    PAYMENT_PROVIDER_NOT_CONFIGURED = ("payment_provider_not_configured", 409, "Payment provider not configured");
    PAYMENT_PROVIDER_UNAVAILABLE = ("payment_provider_unavailable", 503, "Payment provider unavailable");
    PAYMENT_PROVIDER_REFUSED = ("payment_provider_refused", 502, "Payment provider refused");
    INVALID_WEBHOOK_SIGNATURE = ("invalid_webhook_signature", 400, "Invalid webhook signature");
    PAYMENT_NOT_CAPTURABLE = ("payment_not_capturable", 409, "Payment not capturable");
    ORDER_NOT_FULFILLABLE = ("order_not_fulfillable", 409, "Order not fulfillable");
    OVER_FULFILMENT = ("over_fulfilment", 409, "Over-fulfilment");
    ORDER_NOT_SHIPPABLE = ("order_not_shippable", 409, "Order not shippable");
    ORDER_NOT_DELIVERABLE = ("order_not_deliverable", 409, "Order not deliverable");
    ORDER_NOT_CANCELLABLE = ("order_not_cancellable", 409, "Order not cancellable");
    ORDER_NOT_REFUNDABLE = ("order_not_refundable", 409, "Order not refundable");
    OVER_REFUND = ("over_refund", 409, "Over-refund");
    UNKNOWN_ORDER_LINE = ("unknown_order_line", 422, "Unknown order line");
    PAYLOAD_TOO_LARGE = ("payload_too_large", 413, "Payload too large");
    UNSUPPORTED_MEDIA_TYPE = ("unsupported_media_type", 415, "Unsupported media type");
    VALIDATION_FAILED = ("validation_failed", 422, "Validation failed");
    INTERNAL = ("internal", 500, "Internal server error");
    SERVICE_UNAVAILABLE = ("service_unavailable", 503, "Service unavailable");
    OVERLOADED = ("overloaded", 503, "Overloaded");
    REQUEST_TIMEOUT = ("request_timeout", 503, "Request timed out");
}

impl ProblemKind {
    /// The `type` URI of this kind. A URN: stable and unambiguous; the documentation of each
    /// code is in `docs/problems.md` and the OpenAPI document.
    pub fn type_uri(self) -> String {
        format!("urn:keel:problem:{}", self.code)
    }

    /// The generic kind (and a generic detail) for a bare status the framework produced.
    pub fn for_status(status: StatusCode) -> (Self, &'static str) {
        const GENERIC: [(ProblemKind, &str); 8] = [
            (
                ProblemKind::BAD_REQUEST,
                "The request could not be handled.",
            ),
            (ProblemKind::NOT_FOUND, "No route matches this path."),
            (
                ProblemKind::METHOD_NOT_ALLOWED,
                "This route does not accept this method; see the Allow header.",
            ),
            (
                ProblemKind::CONFLICT,
                "The request conflicts with the current state.",
            ),
            (
                ProblemKind::PAYLOAD_TOO_LARGE,
                "The body is larger than this server accepts.",
            ),
            (
                ProblemKind::UNSUPPORTED_MEDIA_TYPE,
                "This content type is not accepted here.",
            ),
            (
                ProblemKind::INTERNAL,
                "The server failed to handle the request; it has been logged.",
            ),
            (
                ProblemKind::SERVICE_UNAVAILABLE,
                "The service is temporarily unavailable; retry later.",
            ),
        ];
        let fallback = if status.is_server_error() {
            GENERIC[6]
        } else {
            GENERIC[0]
        };
        GENERIC
            .iter()
            .copied()
            .find(|(k, _)| k.status == status.as_u16())
            .unwrap_or(fallback)
    }
}

/// One invalid input: where (a JSON pointer into the body) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON pointer (RFC 6901) to the offending member, e.g. `/items/0/quantity`.
    pub pointer: String,
    pub message: String,
}

/// The error detail logged but never sent.
#[derive(Debug, Clone)]
pub struct InternalError(pub Arc<str>);

/// A problem response under construction. Boxed so `Result<T, Problem>` stays one pointer wide.
#[derive(Debug, Clone)]
pub struct Problem(Box<ProblemInner>);

#[derive(Debug, Clone)]
struct ProblemInner {
    kind: ProblemKind,
    detail: Cow<'static, str>,
    errors: Vec<FieldError>,
    internal: Option<Arc<str>>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

/// The wire form (RFC 9457 members plus Keel's `code` and `errors` extensions).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// URI identifying the problem type, `urn:keel:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code; switch on this, not on `title` or `detail`.
    pub code: &'static str,
    /// Present on 422: one entry per invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self(Box::new(ProblemInner {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            internal: None,
            headers: Vec::new(),
        }))
    }

    /// Adds a response header (e.g. `WWW-Authenticate` on 401).
    #[must_use]
    pub fn with_header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.0.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// Adds a response header with a computed value.
    #[must_use]
    pub fn with_header_value(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// 422 for one field.
    pub fn invalid_field(pointer: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            pointer: pointer.to_owned(),
            message: message.into(),
        }])
    }

    /// 422 with field errors.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut p = Self::new(
            ProblemKind::VALIDATION_FAILED,
            "The request has invalid fields.",
        );
        p.0.errors = errors;
        p
    }

    /// 500 whose cause is logged, never returned.
    pub fn internal(cause: &(dyn std::error::Error + 'static)) -> Self {
        let mut p = Self::new(
            ProblemKind::INTERNAL,
            "The server failed to handle the request; it has been logged.",
        );
        p.0.internal = Some(error_chain(cause).into());
        p
    }

    pub fn kind(&self) -> ProblemKind {
        self.0.kind
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.0.errors
    }

    /// The human explanation sent to the client.
    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    /// The cause of a 5xx, for the log only (never sent).
    pub fn internal_cause(&self) -> Option<&str> {
        self.0.internal.as_deref()
    }
}

/// `outer: inner: root`, for logs.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::new(ProblemKind::NOT_FOUND, "No such resource."),
            StoreError::Unavailable(_) => {
                let mut p = Self::new(
                    ProblemKind::SERVICE_UNAVAILABLE,
                    "The service is temporarily unavailable; retry later.",
                );
                p.0.internal = Some(error_chain(&e).into());
                p
            }
            StoreError::QuotaExceeded { quota } => Self::new(
                ProblemKind::QUOTA_EXCEEDED,
                format!(
                    "This shop holds as many {} as its quota allows; nothing was created.",
                    quota.replace('_', " ")
                ),
            ),
            StoreError::Conflict { .. } | StoreError::Other(_) => Self::internal(&e),
        }
    }
}

/// An identity error where a weak password was sent in `field` (e.g. `/new_password`).
pub fn auth_problem_for_field(e: keel_identity::services::auth::AuthError, field: &str) -> Problem {
    match e {
        keel_identity::services::auth::AuthError::WeakPassword(reason) => {
            Problem::invalid_field(field, format!("password {reason}"))
        }
        other => other.into(),
    }
}

/// `WWW-Authenticate` for a request without credentials (RFC 6750 §3).
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"keel\"";
/// `WWW-Authenticate` for a request with a bad or expired token.
pub const BEARER_INVALID: &str = "Bearer realm=\"keel\", error=\"invalid_token\"";

impl From<keel_catalog::CatalogError> for Problem {
    fn from(e: keel_catalog::CatalogError) -> Self {
        use keel_catalog::CatalogError as C;
        match e {
            C::Invalid(issues) => Self::validation(
                issues
                    .into_iter()
                    .map(|i| FieldError {
                        pointer: i.pointer,
                        message: i.message,
                    })
                    .collect(),
            ),
            C::NotFound => Self::new(ProblemKind::NOT_FOUND, "No such resource."),
            C::PreconditionFailed => Self::new(
                ProblemKind::PRECONDITION_FAILED,
                "The resource changed since the ETag in If-Match; read it again and retry.",
            ),
            C::InsufficientStock => Self::new(
                ProblemKind::INSUFFICIENT_STOCK,
                "Not enough stock: on hand may not fall below what is reserved, and a reservation may not exceed what is available.",
            ),
            C::StockReserved => Self::new(
                ProblemKind::STOCK_RESERVED,
                "Stock of this variant is reserved by a checkout; it cannot be removed until released.",
            ),
            C::LocationInUse => Self::new(
                ProblemKind::LOCATION_IN_USE,
                "The location still holds stock; adjust it to zero first.",
            ),
            C::Contended => Self::new(
                ProblemKind::CONFLICT,
                "The resource is being changed by other requests; retry.",
            ),
            C::Store(e) => e.into(),
            C::Internal(msg) => Self::internal(&std::io::Error::other(msg)),
        }
    }
}

impl ProblemKind {
    /// The kind with this code (every code a context answers with is in the catalogue).
    pub fn by_code(code: &str) -> Option<Self> {
        CATALOGUE.iter().copied().find(|k| k.code == code)
    }
}

impl From<keel_orders::service::OrdersError> for Problem {
    fn from(e: keel_orders::service::OrdersError) -> Self {
        use keel_orders::service::OrdersError as O;
        match e {
            O::Invalid(issues) => Self::validation(
                issues
                    .into_iter()
                    .map(|i| FieldError {
                        pointer: i.pointer,
                        message: i.message,
                    })
                    .collect(),
            ),
            O::NotFound => Self::new(ProblemKind::NOT_FOUND, "No such resource."),
            O::PreconditionFailed => Self::new(
                ProblemKind::PRECONDITION_FAILED,
                "The resource changed since the ETag in If-Match; read it again and retry.",
            ),
            O::Order(e) => match ProblemKind::by_code(e.code()) {
                Some(kind) => Self::new(kind, format!("{}.", capitalise(&e.to_string()))),
                None => Self::internal(&std::io::Error::other(format!(
                    "uncatalogued code {}",
                    e.code()
                ))),
            },
            O::Cart { code, message } => match ProblemKind::by_code(code) {
                Some(kind) => Self::new(kind, message),
                None => Self::internal(&std::io::Error::other(format!("uncatalogued code {code}"))),
            },
            O::Contended => Self::new(
                ProblemKind::CONFLICT,
                "The resource is being changed by other requests; retry.",
            ),
            O::Store(e) => e.into(),
            O::Internal(msg) => Self::internal(&std::io::Error::other(msg)),
        }
    }
}

impl From<keel_payments::service::PaymentsError> for Problem {
    fn from(e: keel_payments::service::PaymentsError) -> Self {
        use keel_payments::service::PaymentsError as P;
        match e {
            P::Invalid(issues) => Self::validation(
                issues
                    .into_iter()
                    .map(|(pointer, message)| FieldError { pointer, message })
                    .collect(),
            ),
            P::NotFound => Self::new(ProblemKind::NOT_FOUND, "No such resource."),
            P::PreconditionFailed => Self::new(
                ProblemKind::PRECONDITION_FAILED,
                "The resource changed since the ETag in If-Match; read it again and retry.",
            ),
            P::NotConfigured(provider) => Self::new(
                ProblemKind::PAYMENT_PROVIDER_NOT_CONFIGURED,
                format!(
                    "The shop does not take payments with `{provider}`: staff enable it under /v1/admin/payment-providers."
                ),
            ),
            P::Unavailable { retry_after_ms } => {
                // Whole seconds, rounded up: never earlier than the provider can answer.
                let secs = retry_after_ms.map_or(1, |ms| ms.div_ceil(1000).max(1));
                let value = HeaderValue::from_str(&secs.to_string())
                    .unwrap_or(HeaderValue::from_static("1"));
                Self::new(
                    ProblemKind::PAYMENT_PROVIDER_UNAVAILABLE,
                    "The payment provider cannot be reached now; nothing was charged and the order stays payable. Retry after the pause.",
                )
                .with_header_value(header::RETRY_AFTER, value)
            }
            // The provider's code only: its message may echo what was sent.
            P::Refused { code } => Self::new(
                ProblemKind::PAYMENT_PROVIDER_REFUSED,
                format!("The payment provider refused the request (its code: `{code}`)."),
            ),
            P::NotCapturable => Self::new(
                ProblemKind::PAYMENT_NOT_CAPTURABLE,
                "The order has no payment authorised at the provider and waiting for its capture.",
            ),
            P::Signature(why) => Self::new(
                ProblemKind::INVALID_WEBHOOK_SIGNATURE,
                format!("The webhook was not accepted: {why}. Nothing was stored."),
            ),
            P::Order(e) => match ProblemKind::by_code(e.code()) {
                Some(kind) => Self::new(kind, format!("{}.", capitalise(&e.to_string()))),
                None => Self::internal(&std::io::Error::other(format!(
                    "uncatalogued code {}",
                    e.code()
                ))),
            },
            P::Contended => Self::new(
                ProblemKind::CONFLICT,
                "The resource is being changed by other requests; retry.",
            ),
            P::Store(e) => e.into(),
            P::Internal(msg) => Self::internal(&std::io::Error::other(msg)),
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

impl From<keel_identity::services::auth::AuthError> for Problem {
    fn from(e: keel_identity::services::auth::AuthError) -> Self {
        use keel_identity::{TenantError, services::auth::AuthError as A};
        match e {
            A::InvalidCredentials => Self::new(
                ProblemKind::INVALID_CREDENTIALS,
                "The shop, email or password is wrong.",
            ),
            A::InvalidToken => Self::new(
                ProblemKind::INVALID_TOKEN,
                "The token is invalid, expired or already used.",
            ),
            A::InvalidRefreshToken => Self::new(
                ProblemKind::INVALID_REFRESH_TOKEN,
                "The refresh token is invalid or expired; log in again.",
            ),
            A::RefreshTokenReused => Self::new(
                ProblemKind::REFRESH_TOKEN_REUSED,
                "This refresh token was already used, so the session was revoked; log in again.",
            ),
            A::Unauthenticated => Self::new(
                ProblemKind::UNAUTHORIZED,
                "The access token is missing, invalid or expired.",
            )
            .with_header(header::WWW_AUTHENTICATE, BEARER_INVALID),
            A::WeakPassword(reason) => {
                Self::invalid_field("/password", format!("password {reason}"))
            }
            A::TooManyAttempts {
                retry_after_seconds,
            } => Self::new(
                ProblemKind::TOO_MANY_ATTEMPTS,
                "Too many failed logins; wait before trying again (see Retry-After).",
            )
            .with_header_value(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds)),
            A::FactorLocked {
                retry_after_seconds,
            } => Self::new(
                ProblemKind::TOO_MANY_ATTEMPTS,
                "Too many wrong codes or passwords for this account; its second factor is locked (see Retry-After).",
            )
            .with_header_value(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds)),
            A::Overloaded {
                retry_after_seconds,
            } => Self::new(
                ProblemKind::OVERLOADED,
                "The server is at its bound for password work; retry after Retry-After seconds.",
            )
            .with_header_value(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds)),
            A::InvalidMfaCode => Self::new(
                ProblemKind::INVALID_MFA_CODE,
                "The code is wrong or was already used.",
            ),
            A::MfaAlreadyEnabled => Self::new(
                ProblemKind::MFA_ALREADY_ENABLED,
                "MFA is already enabled; disable it first to enrol again.",
            ),
            A::MfaNotPending => Self::new(
                ProblemKind::MFA_NOT_PENDING,
                "Start an enrolment with POST /v1/me/mfa/totp first.",
            ),
            A::MfaNotEnabled => Self::new(
                ProblemKind::MFA_NOT_ENABLED,
                "MFA is not enabled for this account.",
            ),
            A::ReauthenticationFailed => Self::new(
                ProblemKind::REAUTHENTICATION_FAILED,
                "The password or code is wrong.",
            ),
            A::MfaEnrollmentRequired => Self::new(
                ProblemKind::MFA_ENROLLMENT_REQUIRED,
                "This shop requires MFA: enrol with POST /v1/me/mfa/totp, then confirm; until then only GET /v1/me and enrolment work.",
            ),
            A::MfaRequiredByShop => Self::new(
                ProblemKind::MFA_REQUIRED_BY_SHOP,
                "This shop requires MFA, so it cannot be turned off.",
            ),
            A::EmailTaken => Self::new(
                ProblemKind::EMAIL_TAKEN,
                "An account with this email already exists.",
            ),
            A::InvalidEmail => {
                Self::invalid_field("/email", "must be an email address like name@example.com")
            }
            A::NotFound | A::Tenant(TenantError::NotFound) => {
                Self::new(ProblemKind::NOT_FOUND, "No such resource.")
            }
            A::Tenant(TenantError::SlugTaken(_)) => {
                Self::new(ProblemKind::CONFLICT, "That shop handle is already taken.")
            }
            A::Tenant(TenantError::Store(e)) | A::Store(e) => e.into(),
            A::Internal(msg) => Self::internal(&std::io::Error::other(msg)),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let this = *self.0;
        let status =
            StatusCode::from_u16(this.kind.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ProblemBody {
            type_uri: this.kind.type_uri(),
            title: this.kind.title,
            status: this.kind.status,
            detail: this.detail.into_owned(),
            code: this.kind.code,
            errors: this.errors,
        };
        let bytes = serde_json::to_vec(&body)
            .expect("a problem body (strings and integers) always serializes");
        let mut res = (status, bytes).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in this.headers {
            res.headers_mut().insert(name, value);
        }
        if let Some(internal) = this.internal {
            res.extensions_mut().insert(InternalError(internal));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_statuses_are_errors() {
        let mut codes: Vec<&str> = CATALOGUE.iter().map(|k| k.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), CATALOGUE.len());
        for k in CATALOGUE {
            assert!(
                k.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                k.code
            );
            assert!((400..600).contains(&k.status), "{}", k.code);
        }
    }

    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../../../docs/problems.md");
        for k in CATALOGUE {
            assert!(
                doc.contains(&format!("`{}`", k.code)),
                "docs/problems.md lacks `{}`",
                k.code
            );
        }
    }

    #[tokio::test]
    async fn internal_problems_hide_the_cause_in_the_body() {
        use http_body_util::BodyExt as _;
        let cause = std::io::Error::other("password=hunter2 at db.internal:5432");
        let res = Problem::internal(&cause).into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let logged = res
            .extensions()
            .get::<InternalError>()
            .expect("cause kept for the log");
        assert!(logged.0.contains("hunter2"));
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let body = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(
            !body.contains("hunter2") && !body.contains("db.internal"),
            "{body}"
        );
        assert!(body.contains(r#""code":"internal""#), "{body}");
    }

    #[test]
    fn bare_statuses_map_to_their_generic_kind() {
        let kind = |s| ProblemKind::for_status(s).0;
        assert_eq!(kind(StatusCode::NOT_FOUND), ProblemKind::NOT_FOUND);
        assert_eq!(
            kind(StatusCode::PAYLOAD_TOO_LARGE),
            ProblemKind::PAYLOAD_TOO_LARGE
        );
        assert_eq!(kind(StatusCode::BAD_REQUEST), ProblemKind::BAD_REQUEST);
        assert_eq!(
            kind(StatusCode::SERVICE_UNAVAILABLE),
            ProblemKind::SERVICE_UNAVAILABLE
        );
        assert_eq!(kind(StatusCode::IM_A_TEAPOT), ProblemKind::BAD_REQUEST);
        assert_eq!(kind(StatusCode::BAD_GATEWAY), ProblemKind::INTERNAL);
    }
}
