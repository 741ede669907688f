//! Secrets never reach the logs: the real binary at `debug` level, a full authentication flow,
//! then a search of everything it wrote for every secret it handled.

use std::{process::Stdio, time::Duration};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");
const STEP: Duration = Duration::from_secs(30);

#[tokio::test]
async fn no_password_token_or_key_appears_in_the_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_key = keel::secrets::generate();
    let env = |c: &mut tokio::process::Command| {
        c.env_clear()
            .env("RUST_LOG", "debug")
            .env("KEEL_SECRET_KEY", &secret_key)
            .current_dir(dir.path())
            .kill_on_drop(true);
    };
    let mut create = tokio::process::Command::new(KEEL);
    create.args([
        "tenant",
        "create",
        "--name",
        "Leak Test",
        "--slug",
        "leak",
        "--owner-email",
        "owner@leak.test",
        "--json",
    ]);
    env(&mut create);
    let out = create.output().await.expect("tenant create");
    assert!(out.status.success());
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let setup_token = created["setup_token"].as_str().expect("token").to_owned();
    let cli_log = String::from_utf8_lossy(&out.stderr).into_owned();

    let mut serve = tokio::process::Command::new(KEEL);
    serve.arg("serve").env("KEEL_LISTEN", "127.0.0.1:0");
    env(&mut serve);
    serve.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = serve.spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut log = String::new();
    let addr = tokio::time::timeout(STEP, async {
        while let Some(line) = lines.next_line().await.expect("read") {
            log.push_str(&line);
            log.push('\n');
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "listening"
            {
                return v["addr"].as_str().expect("addr").to_owned();
            }
        }
        panic!("exited before listening")
    })
    .await
    .expect("listens");
    // The server logs continuously (its background loops too): read its output while the flow
    // runs, or a full pipe would stall it.
    let reader = tokio::spawn(async move {
        let mut rest = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });

    let password = "quartz-meadow-ferry-4410-violin";
    let wrong = "wrong-guess-but-long-xyz-123";
    let mut secrets = auth_flow(&addr, &setup_token, password, wrong).await;
    let pid = child.id().expect("pid").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    log.push_str(
        &tokio::time::timeout(STEP, reader)
            .await
            .expect("drained")
            .expect("reader"),
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .await
        .expect("stderr");
    assert!(child.wait().await.expect("exit").success());
    let all = format!("{cli_log}\n{log}\n{stderr}");
    assert!(
        all.contains("login succeeded") && all.contains("refresh token reused"),
        "the flow was logged:\n{all}"
    );

    secrets.extend([
        ("password", password.to_owned()),
        ("wrong password", wrong.to_owned()),
        ("setup token", setup_token.clone()),
        ("master key", secret_key.clone()),
        ("an argon2 hash", "$argon2id$".to_owned()),
        ("the owner's email", "owner@leak.test".to_owned()),
    ]);
    assert_absent(&all, &secrets);
}

/// Fails if any secret (or, for a long one, its tail) appears in `all`.
fn assert_absent(all: &str, secrets: &[(&'static str, String)]) {
    for (what, value) in secrets {
        assert!(!all.contains(value.as_str()), "{what} leaked into the logs");
        // Tokens are long; no fragment of one may appear either (e.g. a truncated header).
        if value.len() > 40 {
            assert!(
                !all.contains(&value[value.len() - 24..]),
                "part of the {what} leaked"
            );
        }
    }
}

/// Setup, a failed and a good login, a refresh, a refresh-token reuse, an authenticated call
/// and a rejected body carrying a secret. Returns the tokens the server handed out.
async fn auth_flow(
    addr: &str,
    setup_token: &str,
    password: &str,
    wrong: &str,
) -> Vec<(&'static str, String)> {
    keel_testkit::install_crypto_provider();
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("http://{addr}{path}"))
            .json(&body)
            .send()
    };
    let setup: serde_json::Value = post(
        "/v1/auth/setup",
        serde_json::json!({"setup_token": setup_token, "password": password}),
    )
    .await
    .expect("setup")
    .json()
    .await
    .expect("json");
    post(
        "/v1/auth/login",
        serde_json::json!({"tenant": "leak", "email": "owner@leak.test", "password": wrong}),
    )
    .await
    .expect("bad login");
    let login: serde_json::Value = post(
        "/v1/auth/login",
        serde_json::json!({"tenant": "leak", "email": "owner@leak.test", "password": password}),
    )
    .await
    .expect("login")
    .json()
    .await
    .expect("json");
    let refreshed: serde_json::Value = post(
        "/v1/auth/refresh",
        serde_json::json!({"refresh_token": login["refresh_token"]}),
    )
    .await
    .expect("refresh")
    .json()
    .await
    .expect("json");
    post(
        "/v1/auth/refresh",
        serde_json::json!({"refresh_token": login["refresh_token"]}),
    )
    .await
    .expect("reuse");
    let access = refreshed["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    client
        .get(format!("http://{addr}/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .expect("me");
    // A malformed request that carries a secret in its body: the rejection must not log it.
    post(
        "/v1/auth/setup",
        serde_json::json!({"setup_token": setup_token, "password": password, "extra": 1}),
    )
    .await
    .expect("422");

    let owner_access = setup["access_token"].as_str().expect("a").to_owned();
    let mut secrets = keys_and_storefront(&client, addr, &owner_access, password).await;
    secrets.extend([
        (
            "setup access token",
            setup["access_token"].as_str().expect("a").to_owned(),
        ),
        (
            "setup refresh token",
            setup["refresh_token"].as_str().expect("r").to_owned(),
        ),
        (
            "login refresh token",
            login["refresh_token"].as_str().expect("r").to_owned(),
        ),
        ("refreshed access token", access),
        (
            "refreshed refresh token",
            refreshed["refresh_token"].as_str().expect("r").to_owned(),
        ),
    ]);
    secrets
}

/// API keys and the storefront: a secret key used on an admin route, a publishable key, and a
/// customer's sign-up. Returns the secrets they produced.
async fn keys_and_storefront(
    client: &reqwest::Client,
    addr: &str,
    owner_access: &str,
    password: &str,
) -> Vec<(&'static str, String)> {
    let key = |body: serde_json::Value| {
        client
            .post(format!("http://{addr}/v1/admin/api-keys"))
            .bearer_auth(owner_access)
            .json(&body)
            .send()
    };
    let sk: serde_json::Value = key(serde_json::json!({"name": "ci", "scopes": ["audit:read"]}))
        .await
        .expect("sk")
        .json()
        .await
        .expect("json");
    let sk = sk["secret"].as_str().expect("sk").to_owned();
    client
        .get(format!("http://{addr}/v1/admin/events"))
        .bearer_auth(&sk)
        .send()
        .await
        .expect("use sk");
    let pk: serde_json::Value = key(serde_json::json!({"name": "shop", "kind": "publishable"}))
        .await
        .expect("pk")
        .json()
        .await
        .expect("json");
    let pk = pk["secret"].as_str().expect("pk").to_owned();
    let customer: serde_json::Value = client
        .post(format!("http://{addr}/v1/store/customers"))
        .header("keel-publishable-key", &pk)
        .json(&serde_json::json!({"email": "shopper@leak.test", "password": password}))
        .send()
        .await
        .expect("sign up")
        .json()
        .await
        .expect("json");
    let customer_access = customer["tokens"]["access_token"]
        .as_str()
        .expect("a")
        .to_owned();
    let mut mfa = customer_mfa(client, addr, &pk, &customer_access, password).await;
    mfa.extend([
        ("secret API key", sk),
        ("publishable key", pk),
        (
            "customer access token",
            customer["tokens"]["access_token"]
                .as_str()
                .expect("a")
                .to_owned(),
        ),
        (
            "customer refresh token",
            customer["tokens"]["refresh_token"]
                .as_str()
                .expect("r")
                .to_owned(),
        ),
        ("the customer's email", "shopper@leak.test".to_owned()),
    ]);
    mfa
}

/// A customer enrols in TOTP MFA and logs in with a code and a backup code. Returns the TOTP
/// secret, its URI, the backup codes, the MFA tokens and the codes used.
async fn customer_mfa(
    client: &reqwest::Client,
    addr: &str,
    pk: &str,
    access: &str,
    password: &str,
) -> Vec<(&'static str, String)> {
    let post = |path: &str, token: Option<&str>, body: serde_json::Value| {
        let mut req = client
            .post(format!("http://{addr}{path}"))
            .header("keel-publishable-key", pk)
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            req.send()
                .await
                .expect("send")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let begun = post(
        "/v1/store/me/mfa/totp",
        Some(access),
        serde_json::json!({"password": password}),
    )
    .await;
    let secret = begun["secret"].as_str().expect("secret").to_owned();
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(totp_rs::Secret::try_from_base32(&secret).expect("base32"))
        .build()
        .expect("TOTP");
    let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).expect("after 1970");
    let (first, second) = (
        totp.generate(now).to_string(),
        totp.generate(now + 30).to_string(),
    );
    let confirmed = post(
        "/v1/store/me/mfa/totp/confirm",
        Some(access),
        serde_json::json!({"code": first}),
    )
    .await;
    let backup: Vec<String> = confirmed["backup_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    let login = serde_json::json!({"email": "shopper@leak.test", "password": password});
    let mut mfa_tokens = Vec::new();
    for second_factor in [
        serde_json::json!({"code": second}),
        serde_json::json!({"backup_code": backup[0]}),
    ] {
        let challenge = post("/v1/store/auth/login", None, login.clone()).await;
        let token = challenge["mfa_token"]
            .as_str()
            .expect("mfa token")
            .to_owned();
        let mut body = second_factor;
        body["mfa_token"] = token.clone().into();
        let done = post("/v1/store/auth/mfa", None, body).await;
        assert!(done["access_token"].is_string(), "{done}");
        mfa_tokens.push(token);
    }
    let mut found = vec![
        ("customer TOTP secret", secret),
        (
            "customer otpauth URI",
            begun["otpauth_uri"].as_str().expect("uri").to_owned(),
        ),
        ("customer MFA token", mfa_tokens[0].clone()),
        ("second customer MFA token", mfa_tokens[1].clone()),
    ];
    // Six-digit codes are too short to search for without false hits on ids and timestamps;
    // the backup codes (12+ characters) are not.
    found.extend(backup.into_iter().map(|c| ("a customer backup code", c)));
    found
}
