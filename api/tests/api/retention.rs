//! `AUDIT_RETENTION_DAYS`: the audit table keeps only the period, pruned in batches.

use chrono::{Duration, Utc};
use sqlx::PgPool;

use crate::helpers::{spawn_config, test_config};

/// Inserts `n` audit rows that occurred `days_ago` days ago.
async fn rows(db: &PgPool, n: i64, days_ago: i64) {
    sqlx::query(
        "INSERT INTO audit_events (occurred_at, action, outcome)
         SELECT $1, 'sign_in', 'success' FROM generate_series(1, $2)",
    )
    .bind(Utc::now() - Duration::days(days_ago))
    .bind(n)
    .execute(db)
    .await
    .unwrap();
}

async fn ages(db: &PgPool) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT extract(day FROM now() - occurred_at)::bigint FROM audit_events ORDER BY id",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn pruning_deletes_only_rows_past_the_period_however_many_batches_it_takes() {
    let config = test_config(&[]).await;
    let db = config.database().unwrap();
    api::migrations::migrate(&db).await.unwrap();
    rows(&db, 7, 40).await;
    rows(&db, 2, 10).await;
    let deleted = api::audit::prune(&db, Utc::now() - Duration::days(30), 3)
        .await
        .unwrap();
    assert_eq!(deleted, 7);
    assert_eq!(ages(&db).await, [10, 10]);
    let again = api::audit::prune(&db, Utc::now() - Duration::days(30), 3)
        .await
        .unwrap();
    assert_eq!(again, 0);
}

#[tokio::test]
async fn a_running_api_prunes_the_audit_table_by_itself() {
    let config = test_config(&[("AUDIT_RETENTION_DAYS", "30")]).await;
    let db = config.database().unwrap();
    api::migrations::migrate(&db).await.unwrap();
    rows(&db, 5, 31).await;
    rows(&db, 1, 29).await;
    let _app = spawn_config(config).await;
    let pruned = e2e::poll_until(std::time::Duration::from_secs(20), || async {
        (ages(&db).await == [29]).then_some(())
    })
    .await;
    assert!(pruned.is_some(), "left: {:?}", ages(&db).await);
}
