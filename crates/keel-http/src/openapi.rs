//! The OpenAPI 3.1 document (generated from the handlers' annotations) and the docs page.
//!
//! `/openapi.json` serves the document; `/docs` serves Swagger UI from files embedded in the
//! binary at build time from the crates.io package (`vendored`): no CDN, no download.

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    AppState,
    problem::{FieldError, PROBLEM_JSON, ProblemBody},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keel",
        description = "Secure, multi-tenant commerce backend. Errors are RFC 9457 \
            `application/problem+json` bodies with a stable `code` (see the `Problem` schema); \
            money is `{\"amount\": <integer minor units>, \"currency\": \"<ISO 4217>\"}`.",
        license(name = "Apache-2.0"),
    ),
    components(schemas(ProblemBody, FieldError, CurrencyCode)),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Probes, metrics and documentation."),
        (name = "auth", description = "Staff setup, login, token refresh and logout; signing keys."),
        (name = "me", description = "The authenticated staff member and their sessions."),
        (name = "users", description = "Staff administration (`users:manage`)."),
        (name = "api-keys", description = "Secret keys for servers and publishable keys for storefronts (`api_keys:manage`)."),
        (name = "settings", description = "Shop-wide policies (`settings:manage`)."),
        (name = "store", description = "Shopper accounts at a storefront (`Keel-Publishable-Key`)."),
        (name = "events", description = "The shop's event log, security events included (`audit:read`)."),
        (name = "payments", description = "Payment providers (`settings:manage`) and the providers' signed webhooks."),
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme (EdDSA JWT access tokens).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// An active ISO 4217 code, exactly the kernel's table ([`keel_kernel::money::Currency`]):
/// a client generated from the document knows which codes the API takes and answers.
#[derive(Debug)]
pub struct CurrencyCode;

impl utoipa::PartialSchema for CurrencyCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(keel_kernel::money::Currency::codes()))
            .description(Some("An active ISO 4217 currency code, upper case."))
            .into()
    }
}

impl utoipa::ToSchema for CurrencyCode {}

/// The document before routes add their paths.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served, from what the routes declared: every 4xx and 5xx response is
/// `application/problem+json` with the `Problem` schema, whatever media type the annotation
/// defaulted to; every `Idempotency-Key` and `Keel-Cart-Secret` header has the form the server
/// reads; and every operation declares the errors any request of its kind can get (a
/// credential refused, a body that is not JSON, an id that names nothing, a node that is
/// overloaded), which the routes' own annotations leave out. Done once here rather than in
/// each annotation, so a new route cannot get it wrong.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{RefOr, Response, content::Content, schema::Ref};
    let problem = |description: &str| {
        let mut r = Response::new(description);
        r.content.insert(
            PROBLEM_JSON.to_owned(),
            RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))),
        );
        r
    };
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in operations.into_iter().flatten() {
            for param in op.parameters.iter_mut().flatten() {
                let RefOr::T(p) = param else { continue };
                if p.parameter_in != utoipa::openapi::path::ParameterIn::Header {
                    continue;
                }
                if let Some(schema) = header_schema(&p.name) {
                    p.schema = Some(RefOr::T(schema));
                }
            }
            for (status, description) in generic_errors(op) {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::T(problem(description)));
            }
            for (status, response) in &mut op.responses.responses {
                // OpenAPI requires a description on every response; an annotation without
                // one gets the status's reason phrase ("OK", "Created").
                if let RefOr::T(r) = response
                    && r.description.is_empty()
                {
                    let reason = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("The answer.");
                    reason.clone_into(&mut r.description);
                }
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                let description = match response {
                    RefOr::T(r) => std::mem::take(&mut r.description),
                    RefOr::Ref(_) => String::new(),
                };
                let description = if description.is_empty() {
                    "An RFC 9457 problem.".to_owned()
                } else {
                    description
                };
                *response = RefOr::T(problem(&description));
            }
        }
    }
    doc
}

/// The form of the Keel headers whose values the server bounds, exactly as it reads them:
/// 1 to an exact number of bytes, and for `Idempotency-Key` visible ASCII only.
fn header_schema(name: &str) -> Option<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let (max_len, pattern, description) = if name
        .eq_ignore_ascii_case(crate::idempotency::IDEMPOTENCY_KEY)
    {
        (
            crate::idempotency::KEY_MAX_LEN,
            Some(crate::idempotency::KEY_PATTERN),
            "A key of the client's choosing (e.g. a UUID): a retry with the same key and the same \
             request replays the first answer.",
        )
    } else if name.eq_ignore_ascii_case(crate::auth::CART_SECRET.as_str()) {
        (
            crate::auth::CART_SECRET_MAX_LEN,
            None,
            "The `cart_secret` answered when the cart was created. A guest's cart and its order \
             are reached only with it (or with the customer's token, for a customer's cart); \
             anyone else gets 404.",
        )
    } else {
        return None;
    };
    Some(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(max_len))
            .pattern(pattern)
            .description(Some(description))
            .into(),
    )
}

/// The errors an operation can answer whatever it does, from what it takes: a credential
/// (401, 403), a JSON body (400, 413, 415, 422), path ids (404), query parameters (400);
/// and any operation may meet a node or database that is down or overloaded (503) or fail
/// (500).
fn generic_errors(op: &utoipa::openapi::path::Operation) -> Vec<(&'static str, &'static str)> {
    use utoipa::openapi::{RefOr, path::ParameterIn};
    let params: Vec<_> = op
        .parameters
        .iter()
        .flatten()
        .filter_map(|p| match p {
            RefOr::T(p) => Some(p),
            RefOr::Ref(_) => None,
        })
        .collect();
    let bearer = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let publishable = params.iter().any(|p| {
        p.parameter_in == ParameterIn::Header && p.name.eq_ignore_ascii_case("keel-publishable-key")
    });
    let mut errors = Vec::new();
    if bearer || publishable {
        errors.push((
            "401",
            "`unauthorized`: no credential, or one that is invalid, expired or revoked.",
        ));
    }
    if bearer {
        errors.push((
            "403",
            "`forbidden`: the credential's role or scopes do not allow this.",
        ));
    }
    let query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
    if op.request_body.is_some() {
        errors.push((
            "400",
            if query {
                "`malformed_json`: the body is not JSON; `bad_request`: a query parameter is out of its range."
            } else {
                "`malformed_json`: the body is not JSON."
            },
        ));
        errors.push(("413", "`payload_too_large`: the body is over the limit."));
        errors.push((
            "415",
            "`unsupported_media_type`: the body is not `application/json`.",
        ));
        errors.push((
            "422",
            "`validation_failed`: the body's fields, each named in `errors`.",
        ));
    }
    if params.iter().any(|p| p.parameter_in == ParameterIn::Path) {
        errors.push(("404", "`not_found`: no such resource in this shop."));
    }
    if query && op.request_body.is_none() {
        errors.push((
            "400",
            "`bad_request`: a query parameter is out of its range.",
        ));
    }
    errors.push((
        "500",
        "`internal`: an unexpected failure (logged with the request id).",
    ));
    errors.push((
        "503",
        "`service_unavailable`, `overloaded` or `request_timeout`; retry later.",
    ));
    errors
}

/// `/openapi.json` and `/docs`.
pub fn docs_router(doc: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::from(SwaggerUi::new("/docs").url("/openapi.json", doc))
}
