//! Exact limits on GraphQL requests (ADR 0040), all checked before anything executes: the
//! query's size, its aliases, its depth and its complexity (each field's cost declared, lists
//! costing their page size); automatic persisted queries by SHA-256 in a bounded store; the
//! storefront's persisted-only switch. A refusal is an error with a code, and nothing runs.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};

use async_graphql::{
    ServerError, ServerResult, ValidationResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation},
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};
use sha2::{Digest as _, Sha256};

/// Exact limits (`KEEL_GRAPHQL__*`).
#[derive(Debug, Clone)]
pub struct GraphqlSettings {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_aliases: usize,
    /// The query text's size, in bytes.
    pub max_query_bytes: usize,
    /// Queries the node keeps for automatic persisted queries; the oldest goes first.
    pub persisted_entries: usize,
    /// The storefront accepts only queries of `persisted` (by hash), never a query text.
    pub store_persisted_only: bool,
    /// The storefront schema answers introspection.
    pub store_introspection: bool,
    /// Queries the operator ships (SHA-256 hex → text), accepted by hash on both schemas.
    pub persisted: HashMap<String, String>,
}

impl Default for GraphqlSettings {
    fn default() -> Self {
        Self {
            max_depth: 12,
            max_complexity: 2000,
            max_aliases: 30,
            max_query_bytes: 16_384,
            persisted_entries: 1_000,
            store_persisted_only: false,
            store_introspection: false,
            persisted: HashMap::new(),
        }
    }
}

/// The codes of GraphQL refusals (`extensions.code`), beside the REST problem codes.
pub mod code {
    pub const QUERY_TOO_LARGE: &str = "query_too_large";
    pub const QUERY_TOO_DEEP: &str = "query_too_deep";
    pub const QUERY_TOO_COMPLEX: &str = "query_too_complex";
    pub const TOO_MANY_ALIASES: &str = "too_many_aliases";
    pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
    pub const PERSISTED_QUERY_REQUIRED: &str = "persisted_query_required";
    pub const PERSISTED_QUERY_MISMATCH: &str = "persisted_query_mismatch";
    pub const GRAPHQL_VALIDATION_FAILED: &str = "graphql_validation_failed";
    pub const BAD_REQUEST: &str = "bad_request";
}

/// A refusal before execution.
pub fn refusal(code: &'static str, message: impl Into<String>) -> ServerError {
    let mut e = ServerError::new(message, None);
    e.extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
    e
}

/// Queries seen by hash, and their hashes oldest first.
type Seen = (HashMap<String, Arc<str>>, VecDeque<String>);

/// Automatic persisted queries: the queries seen by hash, at most an exact number (the
/// oldest goes first), and the operator's own, which never go.
#[derive(Debug)]
pub struct PersistedQueries {
    shipped: HashMap<String, Arc<str>>,
    seen: Mutex<Seen>,
    cap: usize,
}

impl PersistedQueries {
    pub fn new(settings: &GraphqlSettings) -> Self {
        Self {
            shipped: settings
                .persisted
                .iter()
                .map(|(h, q)| (h.to_ascii_lowercase(), Arc::from(q.as_str())))
                .collect(),
            seen: Mutex::new((HashMap::new(), VecDeque::new())),
            cap: settings.persisted_entries,
        }
    }

    /// The query of `hash`: the operator's, or (unless `shipped_only`) one `owner` sent
    /// before. A shop's own queries are its own: another cannot learn what it sent.
    fn get(&self, owner: &str, hash: &str, shipped_only: bool) -> Option<Arc<str>> {
        if let Some(q) = self.shipped.get(hash) {
            return Some(q.clone());
        }
        if shipped_only {
            return None;
        }
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.0.get(&format!("{owner}:{hash}")).cloned()
    }

    fn remember(&self, owner: &str, hash: &str, query: &str) {
        if self.cap == 0 || self.shipped.contains_key(hash) {
            return;
        }
        let hash = format!("{owner}:{hash}");
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.0.contains_key(&hash) {
            return;
        }
        while seen.1.len() >= self.cap {
            if let Some(old) = seen.1.pop_front() {
                seen.0.remove(&old);
            }
        }
        seen.0.insert(hash.clone(), Arc::from(query));
        seen.1.push_back(hash);
    }
}

/// The JSON body of a GraphQL POST.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<serde_json::Value>,
    #[serde(default)]
    extensions: Option<BodyExtensions>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BodyExtensions {
    persisted_query: Option<PersistedQuery>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersistedQuery {
    version: u32,
    sha256_hash: String,
}

/// The lower-case hex SHA-256 of `s` (a persisted query's key).
pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut acc, b| {
            use std::fmt::Write as _;
            let _ = write!(acc, "{b:02x}");
            acc
        })
}

/// Parses a POST body into a request within the limits: the query's size, persisted
/// queries. `persisted_only`: a query text is refused, a known hash is required.
pub fn request(
    body: &[u8],
    settings: &GraphqlSettings,
    store: &PersistedQueries,
    persisted_only: bool,
    owner: &str,
) -> Result<async_graphql::Request, ServerError> {
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        refusal(
            code::BAD_REQUEST,
            format!("The body is not a GraphQL request: {e}."),
        )
    })?;
    let persisted = body.extensions.and_then(|e| e.persisted_query);
    if let Some(p) = &persisted
        && p.version != 1
    {
        return Err(refusal(
            code::BAD_REQUEST,
            "Only version 1 of persisted queries is supported.",
        ));
    }
    let query: Arc<str> = match (body.query, persisted) {
        (Some(_), _) if persisted_only => {
            return Err(refusal(
                code::PERSISTED_QUERY_REQUIRED,
                "This schema accepts only persisted queries: send `extensions.persistedQuery` without `query`.",
            ));
        }
        (Some(q), Some(p)) => {
            check_size(&q, settings)?;
            let hash = p.sha256_hash.to_ascii_lowercase();
            if sha256_hex(&q) != hash {
                return Err(refusal(
                    code::PERSISTED_QUERY_MISMATCH,
                    "`sha256Hash` is not the SHA-256 of `query`.",
                ));
            }
            store.remember(owner, &hash, &q);
            Arc::from(q)
        }
        (Some(q), None) => {
            check_size(&q, settings)?;
            Arc::from(q)
        }
        (None, Some(p)) => store
            .get(owner, &p.sha256_hash.to_ascii_lowercase(), persisted_only)
            .ok_or_else(|| refusal(code::PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound"))?,
        (None, None) => {
            return Err(refusal(code::BAD_REQUEST, "The request has no `query`."));
        }
    };
    let mut request = async_graphql::Request::new(query.as_ref());
    if let Some(name) = body.operation_name {
        request = request.operation_name(name);
    }
    if let Some(v) = body.variables.filter(|v| !v.is_null()) {
        request = request.variables(Variables::from_json(v));
    }
    Ok(request)
}

fn check_size(query: &str, settings: &GraphqlSettings) -> Result<(), ServerError> {
    if query.len() > settings.max_query_bytes {
        return Err(refusal(
            code::QUERY_TOO_LARGE,
            format!(
                "The query is {} bytes; at most {} are accepted.",
                query.len(),
                settings.max_query_bytes
            ),
        ));
    }
    Ok(())
}

fn aliases_in(set: &SelectionSet, doc: &ExecutableDocument, seen: &mut Vec<String>) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(f) => {
                usize::from(f.node.alias.is_some())
                    + aliases_in(&f.node.selection_set.node, doc, seen)
            }
            Selection::InlineFragment(f) => aliases_in(&f.node.selection_set.node, doc, seen),
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.to_string();
                // Each fragment counts once; cycles are refused by validation anyway.
                if seen.contains(&name) {
                    return 0;
                }
                seen.push(name);
                doc.fragments
                    .get(&s.node.fragment_name.node)
                    .map_or(0, |frag| {
                        aliases_in(&frag.node.selection_set.node, doc, seen)
                    })
            }
        })
        .sum()
}

/// Every alias of the document's operations (fragments counted once).
pub fn aliases(doc: &ExecutableDocument) -> usize {
    let mut seen = Vec::new();
    doc.operations
        .iter()
        .map(|(_, op)| aliases_in(&op.node.selection_set.node, doc, &mut seen))
        .sum()
}

/// The limits as a schema extension.
#[derive(Debug, Clone)]
pub struct Limits(pub Arc<GraphqlSettings>);

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Extension for Limits {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let n = aliases(&doc);
        if n > self.0.max_aliases {
            return Err(refusal(
                code::TOO_MANY_ALIASES,
                format!(
                    "The query has {n} aliases; at most {} are accepted.",
                    self.0.max_aliases
                ),
            ));
        }
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|mut e| {
                    e.extensions
                        .get_or_insert_with(Default::default)
                        .set("code", code::GRAPHQL_VALIDATION_FAILED);
                    e
                })
                .collect::<Vec<_>>()
        })?;
        if result.depth > self.0.max_depth {
            return Err(vec![refusal(
                code::QUERY_TOO_DEEP,
                format!(
                    "The query is {} levels deep; at most {} are accepted.",
                    result.depth, self.0.max_depth
                ),
            )]);
        }
        if result.complexity > self.0.max_complexity {
            return Err(vec![refusal(
                code::QUERY_TOO_COMPLEX,
                format!(
                    "The query costs {}; at most {} is accepted.",
                    result.complexity, self.0.max_complexity
                ),
            )]);
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_counted_through_fragments_once() {
        let doc = async_graphql::parser::parse_query(
            "query { a: x { b: y ...F } c: z ...F } fragment F on T { d: w e: v }",
        )
        .expect("parses");
        assert_eq!(aliases(&doc), 5);
    }

    #[test]
    fn the_persisted_store_keeps_an_exact_number_oldest_out() {
        let settings = GraphqlSettings {
            persisted_entries: 2,
            ..GraphqlSettings::default()
        };
        let store = PersistedQueries::new(&settings);
        for q in ["{a}", "{b}", "{c}"] {
            store.remember("shop", &sha256_hex(q), q);
        }
        assert!(store.get("shop", &sha256_hex("{a}"), false).is_none());
        assert!(store.get("shop", &sha256_hex("{b}"), false).is_some());
        assert!(store.get("shop", &sha256_hex("{c}"), false).is_some());
        assert!(
            store.get("other", &sha256_hex("{c}"), false).is_none(),
            "a shop's own"
        );
        assert!(
            store.get("shop", &sha256_hex("{c}"), true).is_none(),
            "only shipped ones when persisted-only"
        );
    }
}
