//! Browser sessions for an admin console over real HTTP, once per backend (issue 23, ADR
//! 0037): the refresh token in an `HttpOnly; Secure; SameSite=Strict; Path=/v1/auth` cookie,
//! the CSRF token bound to the session, and the requests the cookie authenticates refused
//! from another site, without the token or with another session's: nothing changed.

use keel_testkit::{
    Backend, OWNER_PASSWORD, TestApp, assert_problem, backend_tests, spawn_app_with,
};
use reqwest::StatusCode;

const CONSOLE: &str = "https://admin.example.com";

async fn app(backend: Backend, tls: bool) -> TestApp {
    spawn_app_with(backend, utoipa_axum::router::OpenApiRouter::new(), |raw| {
        raw.cors.admin_origins = CONSOLE.into();
        raw.tls_terminated = tls;
    })
    .await
}

/// A browser session's cookies and tokens.
struct Session {
    refresh: String,
    csrf: String,
    access: String,
}

fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

fn cookie_value(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|rest| rest.split(';').next())
        .expect("the cookie is set")
        .to_owned()
}

/// Logs the owner in with `"session": "cookie"`.
async fn login(app: &TestApp, slug: &str, email: &str) -> (Session, Vec<String>) {
    let res = app
        .post_json(
            "/v1/auth/login",
            &serde_json::json!({"tenant": slug, "email": email, "password": OWNER_PASSWORD, "session": "cookie"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookies = set_cookies(&res);
    let body: serde_json::Value = res.json().await.expect("json");
    assert!(
        body.get("refresh_token").is_none(),
        "the refresh token is only in its cookie: {body}"
    );
    let session = Session {
        refresh: cookie_value(&cookies, "keel_refresh"),
        csrf: body["csrf_token"].as_str().expect("csrf token").to_owned(),
        access: body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned(),
    };
    assert_eq!(cookie_value(&cookies, "keel_csrf"), session.csrf);
    (session, cookies)
}

/// `POST path` as a browser sends it: the session's cookies, and the given origin, fetch
/// site and CSRF header.
async fn cookie_post(
    app: &TestApp,
    path: &str,
    session: &Session,
    origin: &str,
    site: &str,
    csrf: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(path))
        .header(
            "cookie",
            format!(
                "keel_refresh={}; keel_csrf={}",
                session.refresh, session.csrf
            ),
        )
        .header("origin", origin)
        .header("sec-fetch-site", site)
        .json(&serde_json::json!({}));
    if let Some(token) = csrf {
        req = req.header("x-csrf-token", token);
    }
    req.send().await.expect("send")
}

backend_tests! {
    /// The login sets the refresh cookie for `/v1/auth` only, `HttpOnly; Secure;
    /// SameSite=Strict`, and a readable CSRF cookie; the console refreshes with them from its
    /// own origin and the CSRF token, and logs out, which clears them.
    async fn a_cookie_session_refreshes_and_logs_out_from_the_console(backend: Backend) {
        let app = app(backend, false).await;
        let (owner, _) = app.owner_with_tokens("browser").await;
        let (session, cookies) = login(&app, &owner.slug, &owner.email).await;
        let refresh_cookie = cookies.iter().find(|c| c.starts_with("keel_refresh=")).expect("refresh cookie");
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/v1/auth"] {
            assert!(refresh_cookie.contains(flag), "{flag}: {refresh_cookie}");
        }
        let csrf_cookie = cookies.iter().find(|c| c.starts_with("keel_csrf=")).expect("csrf cookie");
        assert!(!csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict") && csrf_cookie.contains("Path=/"), "{csrf_cookie}");
        assert_eq!(app.get_as("/v1/admin/orders", &session.access).await.status(), StatusCode::OK, "the access token stays in memory and works");

        // The console on a sibling host of the same site (as browsers say it).
        let refreshed = cookie_post(&app, "/v1/auth/refresh", &session, CONSOLE, "cross-site", Some(&session.csrf)).await;
        assert_problem(refreshed, 403, "csrf_failed").await;
        let refreshed = cookie_post(&app, "/v1/auth/refresh", &session, CONSOLE, "same-site", Some(&session.csrf)).await;
        assert_eq!(refreshed.status(), StatusCode::OK);
        let cookies = set_cookies(&refreshed);
        let body: serde_json::Value = refreshed.json().await.expect("json");
        let next = Session {
            refresh: cookie_value(&cookies, "keel_refresh"),
            csrf: body["csrf_token"].as_str().expect("csrf").to_owned(),
            access: body["access_token"].as_str().expect("access").to_owned(),
        };
        assert_ne!(next.refresh, session.refresh, "the refresh token rotated");
        assert_eq!(next.csrf, session.csrf, "the CSRF token is the session's");
        assert_eq!(app.get_as("/v1/admin/orders", &next.access).await.status(), StatusCode::OK);

        // The same origin as Keel itself (a console served by the same host) is same-origin.
        let own = app.base_url.clone();
        let out = cookie_post(&app, "/v1/auth/logout", &next, &own, "same-origin", Some(&next.csrf)).await;
        assert_eq!(out.status(), StatusCode::NO_CONTENT);
        assert!(set_cookies(&out).iter().all(|c| c.contains("Max-Age=0")), "the cookies are cleared");
        let after = cookie_post(&app, "/v1/auth/refresh", &next, CONSOLE, "same-site", Some(&next.csrf)).await;
        assert_problem(after, 401, "invalid_refresh_token").await;
        // Keel's own origin is same-origin only.
        let sibling = cookie_post(&app, "/v1/auth/logout", &next, &own, "same-site", Some(&next.csrf)).await;
        assert_problem(sibling, 403, "csrf_failed").await;
    }

    /// The attacks: a cross-site form post, a cross-site request with the right token, a
    /// request without the token, one with the cookie's token but not in the header, and one
    /// with another session's token: all refused, and the session is untouched (its refresh
    /// token still works afterwards, once).
    async fn cross_site_and_tokenless_requests_are_refused_and_change_nothing(backend: Backend) {
        let app = app(backend, false).await;
        let (owner, _) = app.owner_with_tokens("csrf").await;
        let (victim, _) = login(&app, &owner.slug, &owner.email).await;
        let (attacker, _) = login(&app, &owner.slug, &owner.email).await;

        let form = app
            .client
            .post(app.url("/v1/auth/logout"))
            .header("cookie", format!("keel_refresh={}; keel_csrf={}", victim.refresh, victim.csrf))
            .header("origin", "https://evil.example.com")
            .header("sec-fetch-site", "cross-site")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("refresh_token=")
            .send()
            .await
            .expect("send");
        assert!(form.status().is_client_error(), "a cross-site form post: {}", form.status());
        for (path, origin, site, token) in [
            ("/v1/auth/logout", "https://evil.example.com", "cross-site", Some(victim.csrf.as_str())),
            ("/v1/auth/refresh", "https://evil.example.com", "cross-site", Some(victim.csrf.as_str())),
            ("/v1/auth/logout", "https://evil.example.com", "same-origin", Some(victim.csrf.as_str())),
            ("/v1/auth/logout", "https://evil.example.com", "same-site", Some(victim.csrf.as_str())),
            ("/v1/auth/logout", CONSOLE, "same-site", None),
            ("/v1/auth/refresh", CONSOLE, "same-site", None),
            ("/v1/auth/logout", CONSOLE, "same-site", Some(attacker.csrf.as_str())),
            ("/v1/auth/refresh", CONSOLE, "same-site", Some("")),
        ] {
            let res = cookie_post(&app, path, &victim, origin, site, token).await;
            assert_problem(res, 403, "csrf_failed").await;
        }
        // The attacker's own token in the header and cookie, the victim's refresh cookie:
        // double-submitted, but not the victim session's token.
        let mixed = Session { refresh: victim.refresh.clone(), csrf: attacker.csrf.clone(), access: String::new() };
        assert_problem(cookie_post(&app, "/v1/auth/logout", &mixed, CONSOLE, "same-site", Some(&attacker.csrf)).await, 403, "csrf_failed").await;
        // Cookie tossing: a planted refresh cookie of the attacker's session before the
        // victim's does not stop the victim's console (the session the token names is found),
        // and gives the attacker nothing.
        let tossed = app
            .client
            .post(app.url("/v1/auth/refresh"))
            .header("cookie", format!("keel_refresh={}; keel_refresh={}; keel_csrf={}", attacker.refresh, victim.refresh, victim.csrf))
            .header("origin", CONSOLE)
            .header("sec-fetch-site", "same-site")
            .header("x-csrf-token", &victim.csrf)
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("send");
        assert_eq!(tossed.status(), StatusCode::OK, "the victim's own session refreshed");
        let victim = Session { refresh: cookie_value(&set_cookies(&tossed), "keel_refresh"), ..victim };

        // Nothing changed: the victim's refresh token was neither spent nor revoked.
        let ok = cookie_post(&app, "/v1/auth/refresh", &victim, CONSOLE, "same-site", Some(&victim.csrf)).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(app.get_as("/v1/admin/orders", &victim.access).await.status(), StatusCode::OK);
    }

    /// Behind TLS (the operator says it terminates in front): HSTS on answers, and the cookies
    /// carry the `__Secure-`/`__Host-` prefixes browsers enforce.
    async fn behind_tls_answers_carry_hsts_and_cookies_their_prefixes(backend: Backend) {
        let app = app(backend, true).await;
        let (owner, _) = app.owner_with_tokens("hsts").await;
        let res = app
            .post_json(
                "/v1/auth/login",
                &serde_json::json!({"tenant": owner.slug, "email": owner.email, "password": OWNER_PASSWORD, "session": "cookie"}),
            )
            .await;
        assert_eq!(res.headers()["strict-transport-security"], "max-age=31536000");
        let cookies = set_cookies(&res);
        assert!(cookies.iter().any(|c| c.starts_with("__Secure-keel_refresh=") && c.contains("Path=/v1/auth")), "{cookies:?}");
        assert!(cookies.iter().any(|c| c.starts_with("__Host-keel_csrf=") && c.contains("Path=/")), "{cookies:?}");
        let plain = app.get("/livez").await;
        assert_eq!(plain.headers()["strict-transport-security"], "max-age=31536000");
    }
}
