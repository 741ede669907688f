//! GraphQL errors carry the REST problem codes (`extensions.code`), so a client switches on the
//! same codes whatever the transport; validation problems keep their pointers.

use async_graphql::{Error, ErrorExtensions as _};
use keel_http::problem::{Problem, ProblemKind};

/// The GraphQL error of a REST problem: its detail as the message, its code, status and
/// field errors as extensions. A 5xx's cause is logged here and never sent.
pub fn from_problem(p: &Problem) -> Error {
    let kind = p.kind();
    if let Some(cause) = p.internal_cause() {
        tracing::error!(code = kind.code, error = cause, "a GraphQL resolver failed");
    }
    let errors: Vec<async_graphql::Value> = p
        .errors()
        .iter()
        .map(|e| {
            async_graphql::Value::from_json(serde_json::json!({
                "pointer": e.pointer, "message": e.message,
            }))
            .unwrap_or(async_graphql::Value::Null)
        })
        .collect();
    Error::new(p.detail().to_owned()).extend_with(|_, ext| {
        ext.set("code", kind.code);
        ext.set("status", i32::from(kind.status));
        if !errors.is_empty() {
            ext.set("errors", errors.clone());
        }
    })
}

/// A GraphQL error with `code`.
pub fn coded(kind: ProblemKind, message: impl Into<String>) -> Error {
    Error::new(message.into()).extend_with(|_, ext| {
        ext.set("code", kind.code);
        ext.set("status", i32::from(kind.status));
    })
}

/// Resolvers' results from the services' errors (every one maps to a REST problem first).
pub trait OrProblem<T> {
    fn or_problem(self) -> async_graphql::Result<T>;
}

impl<T, E: Into<Problem>> OrProblem<T> for Result<T, E> {
    fn or_problem(self) -> async_graphql::Result<T> {
        self.map_err(|e| from_problem(&e.into()))
    }
}

/// `forbidden`, naming what the credential lacks.
pub fn forbidden(what: &str) -> Error {
    coded(
        ProblemKind::FORBIDDEN,
        format!("This credential does not allow {what}."),
    )
}

/// `not_found` (another shop's ids included).
pub fn not_found() -> Error {
    coded(ProblemKind::NOT_FOUND, "No such resource.")
}
