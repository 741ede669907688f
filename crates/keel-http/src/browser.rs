//! Browser sessions for an admin console (issue 23, ADR 0037): the refresh token in an
//! `HttpOnly` cookie that only `/v1/auth/…` ever receives, the access token in the page's
//! memory, and every request the cookie authenticates (refresh, logout) held to a same-origin
//! check and a CSRF token bound to the session (signed double-submit).

use axum::http::{HeaderMap, HeaderValue, header};
use keel_identity::{
    domain::csrf::CsrfKey,
    services::auth::{AuthError, Side},
};

use crate::{
    AppState,
    problem::{Problem, ProblemKind},
};

/// How this node makes browser sessions.
#[derive(Debug, Clone)]
pub struct BrowserSessions {
    pub csrf: CsrfKey,
    /// The operator says TLS terminates in front of Keel (`KEEL_TLS_TERMINATED`): cookies get
    /// the `__Secure-`/`__Host-` prefixes and answers carry HSTS.
    pub tls: bool,
}

/// The header a page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

impl BrowserSessions {
    /// The refresh cookie's name. `__Secure-` (not `__Host-`, which demands `Path=/`): the
    /// cookie is sent to `/v1/auth/…` only, never to the rest of the API.
    pub const fn refresh_cookie(&self) -> &'static str {
        if self.tls {
            "__Secure-keel_refresh"
        } else {
            "keel_refresh"
        }
    }

    /// The CSRF cookie's name (readable by the page; `Path=/`, so `__Host-` fits).
    pub const fn csrf_cookie(&self) -> &'static str {
        if self.tls {
            "__Host-keel_csrf"
        } else {
            "keel_csrf"
        }
    }

    /// The two `Set-Cookie` values of a session: the refresh token (`HttpOnly`, only for
    /// `/v1/auth`) and its CSRF token (readable by the page, for `X-CSRF-Token`), both
    /// `Secure; SameSite=Strict` and living as long as the refresh token. `None` clears them.
    pub fn cookies(&self, session: Option<(&str, &str, i64)>) -> [HeaderValue; 2] {
        let (refresh, csrf, max_age) = session.unwrap_or(("", "", 0));
        let refresh = format!(
            "{}={refresh}; Max-Age={max_age}; Path=/v1/auth; HttpOnly; Secure; SameSite=Strict",
            self.refresh_cookie()
        );
        let csrf = format!(
            "{}={csrf}; Max-Age={max_age}; Path=/; Secure; SameSite=Strict",
            self.csrf_cookie()
        );
        // Tokens are base64url and prefixed ASCII: always a valid header value.
        [refresh, csrf].map(|c| HeaderValue::from_str(&c).unwrap_or(HeaderValue::from_static("")))
    }
}

/// Every `name=value` pair of the request's `Cookie` headers, trimmed, in order.
pub(crate) fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
}

/// Every value of cookie `name` in the request's `Cookie` headers, in order (a sibling
/// subdomain may have planted one of the same name; at most [`MAX_SAME_NAME`] are looked at).
fn cookies<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    cookie_pairs(headers)
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name && !v.is_empty()).then_some(v)
        })
        .take(MAX_SAME_NAME)
        .collect()
}

/// Cookies of one name a request is searched for its session's (cookie tossing leaves more
/// than one; a bound keeps the search cheap).
const MAX_SAME_NAME: usize = 4;

fn refused(why: &'static str) -> Problem {
    Problem::new(ProblemKind::CSRF_FAILED, why)
}

/// Whether the request comes from Keel's own origin, or from an admin console origin the
/// operator lists (which may be another host of the same site: `Sec-Fetch-Site: same-site`).
/// A browser sends `Origin` on every `POST`, and `Sec-Fetch-Site`: a request with neither is
/// no browser's, and a cookie session is a browser's alone.
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    match crate::cors::origin(headers) {
        Some(origin) if crate::cors::admin_allows(state, origin) => {
            site.is_none_or(|s| s == "same-origin" || s == "same-site")
        }
        Some(origin) => {
            let own = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|host| {
                    let scheme = if state.browser.tls { "https" } else { "http" };
                    origin
                        .strip_prefix(scheme)
                        .and_then(|o| o.strip_prefix("://"))
                        .is_some_and(|o| o == host)
                });
            own && site.is_none_or(|s| s == "same-origin")
        }
        None => site == Some("same-origin"),
    }
}

/// The refresh token of a cookie-authenticated request, once the request has shown it comes
/// from the console's own site and carries the session's CSRF token (the header equal to the
/// CSRF cookie, and that token the one of the session the refresh cookie names, compared in
/// constant time). Nothing is spent or changed by asking.
pub async fn cookie_refresh_token(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<String, Problem> {
    let sessions = &state.browser;
    let refresh = cookies(headers, sessions.refresh_cookie());
    if refresh.is_empty() {
        return Err(AuthError::InvalidRefreshToken.into());
    }
    if !same_origin(state, headers) {
        return Err(refused(
            "This session's cookie was sent from another site; nothing was done.",
        ));
    }
    let header_token = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let double_submitted = !header_token.is_empty()
        && cookies(headers, sessions.csrf_cookie()).iter().any(|c| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                header_token.as_bytes(),
                c.as_bytes(),
            ))
        });
    if !double_submitted {
        return Err(Problem::new(
            ProblemKind::CSRF_FAILED,
            format!(
                "Send the session's CSRF token (the `{}` cookie, or the login's `csrf_token`) in `X-CSRF-Token`; nothing was done.",
                sessions.csrf_cookie()
            ),
        ));
    }
    // The session whose token the header carries, among the refresh cookies presented.
    let mut unknown = true;
    for candidate in refresh {
        match state.auth.refresh_session(candidate, Side::Admin).await {
            Ok((tenant, session)) => {
                unknown = false;
                if sessions.csrf.verify(tenant, session, header_token) {
                    return Ok(candidate.to_owned());
                }
            }
            Err(AuthError::InvalidRefreshToken) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if unknown {
        return Err(AuthError::InvalidRefreshToken.into());
    }
    Err(refused(
        "The CSRF token is not this session's; nothing was done.",
    ))
}
