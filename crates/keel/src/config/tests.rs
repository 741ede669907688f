use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn defaults_are_embedded_sqlite_on_loopback() {
    let s = Settings::load(None, &env(&[])).expect("defaults are valid");
    assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.http.body_limit_bytes, 1_048_576);
    let DatabaseSettings::Sqlite(db) = s.database else {
        panic!("sqlite by default")
    };
    assert_eq!(db.path, Path::new("./keel-data/keel.db"));
    assert_eq!(db.synchronous, Synchronous::Full);
}

#[test]
fn env_overrides_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keel.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:9000\"\nrequest_timeout_ms = 1234\n[sqlite]\nreaders = 2\n",
    )
    .expect("write");
    let s = Settings::load(
        Some(&file),
        &env(&[
            ("KEEL_LISTEN", "127.0.0.1:9001"),
            ("KEEL_SQLITE__READERS", "3"),
        ]),
    )
    .expect("valid");
    assert_eq!(s.listen.to_string(), "127.0.0.1:9001");
    assert_eq!(s.http.request_timeout, Duration::from_millis(1234));
    let DatabaseSettings::Sqlite(db) = s.database else {
        panic!("sqlite")
    };
    assert_eq!(db.readers, 3);
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        (("KEEL_LISTEN", "nonsense"), "KEEL_LISTEN"),
        (("KEEL_DATABASE_URL", "mysql://x"), "KEEL_DATABASE_URL"),
        (("KEEL_LOG_FORMAT", "xml"), "KEEL_LOG_FORMAT"),
        (("KEEL_BODY_LIMIT_BYTES", "lots"), "KEEL_BODY_LIMIT_BYTES"),
        (("KEEL_REQUEST_TIMEOUT_MS", "0"), "KEEL_REQUEST_TIMEOUT_MS"),
        (("KEEL_SQLITE__READERS", "-1"), "KEEL_SQLITE__READERS"),
        (
            ("KEEL_SQLITE__SYNCHRONOUS", "off"),
            "KEEL_SQLITE__SYNCHRONOUS",
        ),
        (("KEEL_PRICING_CACHE_MS", "60001"), "KEEL_PRICING_CACHE_MS"),
        (
            ("KEEL_AUTH__PUBLISHABLE_KEY_CACHE_MS", "60001"),
            "KEEL_AUTH__PUBLISHABLE_KEY_CACHE_MS",
        ),
        (("KEEL_LISTN", "127.0.0.1:1"), "KEEL_LISTN"),
    ];
    for ((k, v), key) in cases {
        let e = Settings::load(None, &env(&[(k, v)])).expect_err(k);
        assert_eq!(e.key, key, "{k}={v}: {e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}

#[test]
fn the_ack_wait_must_fall_inside_the_duplicate_window() {
    let e = Settings::load(
        None,
        &env(&[
            ("KEEL_NATS_URL", "nats://127.0.0.1:4222"),
            ("KEEL_NATS__ACK_WAIT_S", "120"),
        ]),
    )
    .expect_err("a hold as long as the duplicate window");
    assert_eq!(e.key, "KEEL_NATS__ACK_WAIT_S", "{e}");
    Settings::load(
        None,
        &env(&[
            ("KEEL_NATS_URL", "nats://127.0.0.1:4222"),
            ("KEEL_NATS__ACK_WAIT_S", "119"),
        ]),
    )
    .expect("inside the window");
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let e = Settings::load(None, &env(&[("KEEL_LISTN", "127.0.0.1:1")])).expect_err("typo");
    assert!(e.problem.contains("listn"), "{e}");
}

#[test]
fn secrets_come_from_files_and_never_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("db-url");
    std::fs::write(&secret, "postgres://keel:s3cret@db.example:5432/keel\n").expect("write");
    let e = env(&[(
        "KEEL_DATABASE_URL_FILE",
        secret.to_str().expect("utf-8 path"),
    )]);
    let s = Settings::load(None, &e).expect("valid");
    assert!(matches!(s.database, DatabaseSettings::Postgres { .. }));
    let shown = s.redacted().to_string();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("postgres://keel:***@db.example:5432/keel"),
        "{shown}"
    );
    assert!(
        !format!("{s:?}").contains("s3cret"),
        "Debug must redact too"
    );
    let both = env(&[
        ("KEEL_DATABASE_URL_FILE", "/x"),
        ("KEEL_DATABASE_URL", "sqlite://x"),
    ]);
    assert_eq!(
        Settings::load(None, &both).expect_err("both").key,
        "KEEL_DATABASE_URL_FILE"
    );
}

#[test]
fn bad_postgres_urls_do_not_echo_the_url() {
    let e = Settings::load(
        None,
        &env(&[("KEEL_DATABASE_URL", "postgres://u:pw@host:notaport/db")]),
    )
    .expect_err("bad port");
    assert!(!e.to_string().contains("pw"), "{e}");
}

#[test]
fn rate_limits_are_exact_intervals_and_bursts_and_can_be_switched_off() {
    let s = Settings::load(None, &env(&[])).expect("defaults");
    assert!(s.limits.enabled);
    assert_eq!(
        (
            s.limits.cart_create.interval_ms(),
            s.limits.cart_create.burst()
        ),
        (1_000, 60)
    );
    assert_eq!(
        (s.limits.checkout.interval_ms(), s.limits.checkout.burst()),
        (3_000, 20)
    );
    let off = Settings::load(
        None,
        &env(&[
            ("KEEL_LIMITS__ENABLED", "false"),
            ("KEEL_LIMITS__CHECKOUT__BURST", "5"),
        ]),
    )
    .expect("valid");
    assert!(!off.limits.enabled);
    assert_eq!(off.limits.checkout.burst(), 5);
    let zero = Settings::load(None, &env(&[("KEEL_LIMITS__AUTH__BURST", "0")]));
    assert!(zero.is_err(), "a limit of nothing is refused");
    let huge = Settings::load(
        None,
        &env(&[
            ("KEEL_LIMITS__AUTH__INTERVAL_MS", "4503599627370496"),
            ("KEEL_LIMITS__AUTH__BURST", "1"),
        ]),
    );
    assert!(
        huge.is_err(),
        "a span Redis's doubles could not hold exactly is refused"
    );
    let shown = off.redacted();
    assert_eq!(shown["limits"]["checkout"]["burst"], 5);
    assert_eq!(shown["limits"]["enabled"], false);
}
