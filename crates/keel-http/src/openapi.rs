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
    components(schemas(ProblemBody, FieldError)),
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

/// The document before routes add their paths.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served, from what the routes declared: every 4xx and 5xx response is
/// `application/problem+json` with the `Problem` schema, whatever media type the annotation
/// defaulted to. Done once here rather than in each of the routes' annotations, so a new route
/// cannot get it wrong.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{RefOr, Response, content::Content, schema::Ref};
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
            for (status, response) in &mut op.responses.responses {
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                let content = Content::new(Some(Ref::from_schema_name("Problem")));
                match response {
                    RefOr::T(r) => {
                        r.content.clear();
                        r.content.insert(PROBLEM_JSON.to_owned(), RefOr::T(content));
                    }
                    RefOr::Ref(_) => {
                        let mut r = Response::new("An RFC 9457 problem.");
                        r.content.insert(PROBLEM_JSON.to_owned(), RefOr::T(content));
                        *response = RefOr::T(r);
                    }
                }
            }
        }
    }
    doc
}

/// `/openapi.json` and `/docs`.
pub fn docs_router(doc: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::from(SwaggerUi::new("/docs").url("/openapi.json", doc))
}
