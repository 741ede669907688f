//! What one SQL statement costs through each driver layer (docs/benchmarks.md, ADR 0015).
//!
//! The same point read and the same insert, 100 at a time:
//! - through sqlx's SQLite driver (each statement handed to the connection's worker thread
//!   and its rows handed back);
//! - through rusqlite on the calling thread (no hand-off);
//! - through rusqlite inside one `spawn_blocking` (one hand-off for the 100).
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sqlx::{
    Row as _,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

const BATCH: i64 = 100;
const ROWS: i64 = 1_000;

/// A database of `ROWS` rows, its sqlx pool (one connection) and the runtime it runs on.
fn setup() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    tokio::runtime::Runtime,
    sqlx::SqlitePool,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let pool = rt.block_on(async {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
            )
            .await
            .expect("pool");
        sqlx::query(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL); \
             CREATE TABLE w (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL)",
        )
        .execute(&pool)
        .await
        .expect("schema");
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
             INSERT INTO t SELECT i, printf('{\"lines\":[%d]}', i) FROM n",
        )
        .bind(ROWS)
        .execute(&pool)
        .await
        .expect("rows");
        pool
    });
    (dir, path, rt, pool)
}

fn statement(c: &mut Criterion) {
    let (_dir, path, rt, pool) = setup();
    let conn = rusqlite::Connection::open(&path).expect("rusqlite");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("pragma");

    let mut g = c.benchmark_group("100 statements");
    g.bench_function("point read, sqlx", |b| {
        b.iter(|| {
            rt.block_on(async {
                for i in 1..=BATCH {
                    let r = sqlx::query("SELECT body FROM t WHERE id = ?1")
                        .bind(i)
                        .fetch_one(&pool)
                        .await
                        .expect("row");
                    black_box(r.get::<String, _>(0));
                }
            });
        });
    });
    g.bench_function("point read, rusqlite inline", |b| {
        b.iter(|| {
            let mut s = conn
                .prepare_cached("SELECT body FROM t WHERE id = ?1")
                .expect("prepare");
            for i in 1..=BATCH {
                black_box(s.query_row([i], |r| r.get::<_, String>(0)).expect("row"));
            }
        });
    });
    let shared = std::sync::Arc::new(std::sync::Mutex::new(
        rusqlite::Connection::open(&path).expect("rusqlite"),
    ));
    g.bench_function("point read, rusqlite in one spawn_blocking", |b| {
        b.iter(|| {
            let shared = shared.clone();
            rt.block_on(async move {
                tokio::task::spawn_blocking(move || {
                    let conn = shared.lock().expect("lock");
                    let mut s = conn
                        .prepare_cached("SELECT body FROM t WHERE id = ?1")
                        .expect("prepare");
                    for i in 1..=BATCH {
                        black_box(s.query_row([i], |r| r.get::<_, String>(0)).expect("row"));
                    }
                })
                .await
                .expect("join");
            });
        });
    });
    g.bench_function("insert in a transaction, sqlx", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tx = pool.begin().await.expect("begin");
                for _ in 0..BATCH {
                    sqlx::query("INSERT INTO w (body) VALUES (?1)")
                        .bind("{\"lines\":[1,2,3]}")
                        .execute(&mut *tx)
                        .await
                        .expect("insert");
                }
                tx.rollback().await.expect("rollback");
            });
        });
    });
    g.bench_function("insert in a transaction, rusqlite inline", |b| {
        b.iter(|| {
            conn.execute_batch("BEGIN").expect("begin");
            {
                let mut s = conn
                    .prepare_cached("INSERT INTO w (body) VALUES (?1)")
                    .expect("prepare");
                for _ in 0..BATCH {
                    s.execute(["{\"lines\":[1,2,3]}"]).expect("insert");
                }
            }
            conn.execute_batch("ROLLBACK").expect("rollback");
        });
    });
    g.finish();
}

criterion_group!(benches, statement);
criterion_main!(benches);
