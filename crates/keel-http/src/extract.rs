//! Extractors whose rejections are problems, never the framework's plain-text errors.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, rejection::BytesRejection},
    http::header,
};
use serde::de::DeserializeOwned;

use crate::problem::{FieldError, Problem, ProblemKind};

/// A JSON body parsed straight into a DTO (whose fields are domain types, so parsing is
/// validation). Rejections:
/// - no `application/json` content type: 415 `unsupported_media_type`;
/// - body over the configured limit: 413 `payload_too_large`;
/// - not JSON at all: 400 `malformed_json`;
/// - JSON of the wrong shape or with invalid values: 422 `validation_failed`, with a JSON
///   pointer to the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

fn is_json(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

/// A member name as one token of an RFC 6901 pointer (`~` -> `~0`, `/` -> `~1`).
pub fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Turns a serde path into an RFC 6901 pointer (`items[0].sku` -> `/items/0/sku`).
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path {
        out.push('/');
        match seg {
            Segment::Seq { index } => out.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out.push_str(&pointer_token(key));
            }
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

/// serde's message without the " at line L column C" tail, which means nothing to a client.
fn message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Parses bytes as JSON into `T`, with the problem a client should see on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut *de) {
        // One JSON value and nothing after it but whitespace: `{"amount":100}xyz` is not a
        // body whose meaning is clear (and the idempotency fingerprint must not read it as
        // `{"amount":100}` while the handler reads more or less).
        Ok(v) => match de.end() {
            Ok(()) => Ok(v),
            Err(e) => Err(Problem::new(
                ProblemKind::MALFORMED_JSON,
                format!("The body is not valid JSON: {}.", message(&e)),
            )),
        },
        Err(e) => {
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(Problem::new(
                    ProblemKind::MALFORMED_JSON,
                    format!("The body is not valid JSON: {}.", message(inner)),
                ))
            } else {
                // An empty pointer is the whole document (RFC 6901).
                Err(Problem::validation(vec![FieldError {
                    pointer: pointer(e.path()),
                    message: message(inner),
                }]))
            }
        }
    }
}

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(Problem::new(
                ProblemKind::UNSUPPORTED_MEDIA_TYPE,
                "Send the body as `Content-Type: application/json`.",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) if is_length_limit(&e) => body_too_large(),
            _ => Problem::new(ProblemKind::BAD_REQUEST, "The body could not be read."),
        })?;
        parse_json(&bytes).map(Json)
    }
}

fn is_length_limit(e: &BytesRejection) -> bool {
    over_body_limit(e) || e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE
}

/// Whether an error, or any error under it, is the body limit's (the limit layer wraps the
/// body; whoever reads it, an extractor, the edge or the gateway's upstream call, sees it
/// somewhere in the chain).
pub(crate) fn over_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = err.source();
    }
    false
}

/// The problem for a body that could not be read: over the limit, or broken.
pub(crate) fn unreadable_body(e: &(dyn std::error::Error + 'static)) -> Problem {
    if over_body_limit(e) {
        body_too_large()
    } else {
        Problem::new(ProblemKind::BAD_REQUEST, "The body could not be read.")
    }
}

/// `413 payload_too_large`.
pub(crate) fn body_too_large() -> Problem {
    Problem::new(
        ProblemKind::PAYLOAD_TOO_LARGE,
        "The body is larger than this server accepts.",
    )
}

/// The document's form of [`ListQuery`] (`params(PageParams)` on every list route). The
/// bounds are `Limit`'s, as literals: the test `page_params_declare_the_limits_bounds` keeps
/// them equal.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `?limit=&cursor=` of a list route, parsed into a [`PageRequest`]; anything else in the
/// query is ignored here (filters have their own extractors). Bad values are 400 problems.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery(pub keel_kernel::page::PageRequest);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ListQuery {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        use keel_kernel::page::{Cursor, Limit, PageRequest};
        let mut page = PageRequest::default();
        for (key, value) in form_pairs(parts.uri.query().unwrap_or_default()) {
            match key.as_str() {
                "limit" => {
                    page.limit = value
                        .parse::<u32>()
                        .ok()
                        .and_then(|n| Limit::new(n).ok())
                        .ok_or_else(|| {
                            Problem::new(
                                ProblemKind::BAD_REQUEST,
                                format!("`limit` must be a whole number from 1 to {}.", Limit::MAX),
                            )
                        })?;
                }
                "cursor" => {
                    page.after = Some(Cursor::decode(&value).map_err(|_| {
                        Problem::new(ProblemKind::BAD_REQUEST, "`cursor` is not one this API issued; use `next_cursor` from a previous page.")
                    })?);
                }
                _ => {}
            }
        }
        Ok(Self(page))
    }
}

/// A page's items converted for the wire, and its opaque next cursor: the two members of every
/// list response (`{"data": [...], "next_cursor": ...}`).
pub fn page_parts<U, T: From<U>>(page: keel_kernel::page::Page<U>) -> (Vec<T>, Option<String>) {
    (
        page.items.into_iter().map(T::from).collect(),
        page.next_cursor.map(keel_kernel::page::Cursor::encode),
    )
}

/// `a=1&b=2` pairs, percent-decoded; an undecodable query yields no pairs.
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(query).unwrap_or_default()
}

/// An id type that routes name in their paths, with the detail of the 404 for an id that
/// names nothing. Written once here for every route (issue 21).
pub trait PathId: std::str::FromStr {
    const NOT_FOUND: &'static str;
}

macro_rules! path_ids {
    ($($t:ty => $detail:literal),* $(,)?) => {
        $(impl PathId for $t {
            const NOT_FOUND: &'static str = $detail;
        })*
    };
}

path_ids! {
    keel_catalog::domain::ProductId => "No such product.",
    keel_catalog::domain::VariantId => "No such variant.",
    keel_catalog::domain::LocationId => "No such stock location.",
    keel_orders::cart::CartId => "No such cart.",
    keel_orders::cart::LineId => "No such cart line.",
    keel_orders::order::OrderId => "No such order.",
    keel_orders::setup::TaxRateId => "No such tax rate.",
    keel_orders::setup::ShippingOptionId => "No such shipping option.",
    keel_orders::setup::PromotionId => "No such promotion.",
    keel_webhooks::domain::EndpointId => "No such webhook endpoint.",
    keel_webhooks::domain::MessageId => "No such webhook message.",
    keel_identity::domain::staff::UserId => "No such user.",
    keel_identity::domain::staff::SessionId => "No such session.",
    keel_identity::domain::api_key::ApiKeyId => "No such API key.",
}

/// `s` as the id type `T`. A malformed id, or one with another type's prefix, is the same 404
/// as a well-formed id that names nothing, so a client cannot probe which ids could exist.
pub fn path_id<T: PathId>(s: &str) -> Result<T, Problem> {
    s.parse()
        .map_err(|_| Problem::new(ProblemKind::NOT_FOUND, T::NOT_FOUND))
}

/// The one `{id}` of a route, parsed into its id type (see [`path_id`]); routes with two ids
/// take `Path<(String, String)>` and parse each with [`path_id`].
#[derive(Debug, Clone, Copy)]
pub struct Id<T>(pub T);

impl<S: Send + Sync, T: PathId + Send> axum::extract::FromRequestParts<S> for Id<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| Problem::new(ProblemKind::NOT_FOUND, T::NOT_FOUND))?;
        path_id(&raw).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[test]
    fn text_after_the_json_value_is_malformed() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Amount {
            amount: i64,
        }
        for body in [
            &br#"{"amount":100}xyz"#[..],
            br#"{"amount":100}{"amount":5}"#,
        ] {
            let err = parse_json::<Amount>(body).expect_err("trailing text is refused");
            assert_eq!(err.kind(), ProblemKind::MALFORMED_JSON, "{body:?}");
        }
        let ok: Amount = parse_json(b" {\"amount\":100} \n").expect("whitespace around is fine");
        assert_eq!(ok.amount, 100);
    }

    #[test]
    fn page_params_declare_the_limits_bounds() {
        use utoipa::IntoParams as _;
        let params = PageParams::into_params(|| None);
        let limit = params
            .iter()
            .find(|p| p.name == "limit")
            .expect("limit is declared");
        let schema = serde_json::to_value(&limit.schema).expect("schema");
        assert_eq!(schema["minimum"], 1);
        assert_eq!(schema["maximum"], keel_kernel::page::Limit::MAX);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Order {
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        quantity: u32,
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        let p = parse_json::<Order>(b"{\"items\": [").expect_err("truncated");
        assert_eq!(p.kind(), ProblemKind::MALFORMED_JSON);
        let p = parse_json::<Order>(b"not json").expect_err("garbage");
        assert_eq!(p.kind(), ProblemKind::MALFORMED_JSON);
    }

    #[test]
    fn shape_errors_point_at_the_field() {
        let p = parse_json::<Order>(br#"{"items": [{"quantity": 1}, {"quantity": -2}]}"#)
            .expect_err("negative quantity");
        assert_eq!(p.kind(), ProblemKind::VALIDATION_FAILED);
        assert_eq!(p.errors()[0].pointer, "/items/1/quantity");
        let p = parse_json::<Order>(br#"{"items": [], "extra": 1}"#).expect_err("unknown field");
        assert_eq!(p.kind(), ProblemKind::VALIDATION_FAILED);
    }

    #[test]
    fn pointers_escape_tilde_and_slash() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct M {
            m: std::collections::BTreeMap<String, u8>,
        }
        let p = parse_json::<M>(br#"{"m": {"a/b~c": "x"}}"#).expect_err("string for u8");
        assert_eq!(p.errors()[0].pointer, "/m/a~1b~0c");
    }
}
