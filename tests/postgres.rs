//! The same gateway on PostgreSQL. Needs `QM_TEST_DATABASE_URL` (scripts/pg.sh starts a
//! throwaway server); under CI its absence is a failure, not a skip.

mod common;

use common::{Options, TestApp, chat_body};
use sqlx::Connection;

async fn fresh_database() -> Option<String> {
    let Ok(url) = std::env::var("QM_TEST_DATABASE_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must set QM_TEST_DATABASE_URL (scripts/pg.sh start)"
        );
        eprintln!("SKIPPED postgres tests: QM_TEST_DATABASE_URL is not set");
        return None;
    };
    let name = format!("qm_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("connect to QM_TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').expect("URL names a database");
    Some(format!("{base}/{name}"))
}

#[tokio::test]
async fn gateway_on_postgres_keys_chat_and_request_log() {
    let Some(db_url) = fresh_database().await else {
        return;
    };
    let mut app = TestApp::spawn_with(Options {
        db_url: Some(db_url),
        extra: "[rate_limit]\nenabled = false\n[auth]\nkey_cache_ttl_ms = 0\n".into(),
    })
    .await;
    let resp = app.chat(chat_body("mock-ok", true)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 200);
    let store = app.store().await;
    assert_eq!(store.backend(), "postgres");
    let keys = store.list_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    store.revoke_key(&keys[0].id).await.unwrap();
    assert_eq!(app.chat(chat_body("mock-ok", false)).await.status(), 401);
    app.shutdown().await;
    assert_eq!(store.count_request_log().await.unwrap(), 2);
}
