//! The PostgreSQL the tests run against: `scripts/pg start` (which `scripts/test` runs) exports
//! `TRACKRELAY_TEST_PG_URL`; each test gets a database of its own on that server. Without the variable
//! the PostgreSQL tests say they were skipped and pass: `scripts/test` always sets it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The server's admin URL, or `None` (after printing why) when no test PostgreSQL was started.
pub fn admin_url() -> Option<String> {
    match std::env::var("TRACKRELAY_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!(
                "skipped: no PostgreSQL (TRACKRELAY_TEST_PG_URL is unset; `eval \"$(scripts/pg start)\"` or scripts/test sets it)"
            );
            None
        }
    }
}

/// A new, empty database on the test server; returns its URL (same user and password).
pub async fn fresh_database(admin: &str, label: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    // PostgreSQL cuts names at 63 bytes: the label is shortened, the unique part kept.
    let label: String = label.chars().take(24).collect();
    let name = format!(
        "tr_{label}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL answers");
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    drop(client);
    let _ = task.await;
    let mut url = url::Url::parse(admin).expect("TRACKRELAY_TEST_PG_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Runs `sql` on the database at `url` (test setup and inspection).
pub async fn execute(url: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("the test PostgreSQL answers");
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await.expect(sql);
    drop(client);
    let _ = task.await;
}
