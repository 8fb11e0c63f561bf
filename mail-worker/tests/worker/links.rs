//! What the worker mints beside the emails: the reset email's one-time code record and the
//! password-changed notice's lock link, through retries and out-of-order notices.

#![allow(clippy::unwrap_used)]

use redis::AsyncCommands as _;
use shared::{clock::Clock as _, message::Job};

use crate::helpers::{PATIENCE, spawn};

#[tokio::test]
async fn a_late_notice_goes_without_a_lock_link_and_leaves_the_newer_notices_link_alive() {
    let w = spawn().await;
    let user = w.add_user("ann@example.org", true).await;
    sqlx::query("UPDATE users SET password_version = 3 WHERE id = $1")
        .bind(user)
        .execute(&w.db)
        .await
        .unwrap();
    let notice = |version: i32| Job::PasswordChanged {
        user_id: user,
        email: "ann@example.org".into(),
        ip: None,
        password_version: version,
    };
    // The notice of the current password (version 3) carries a lock link.
    let current = w.job(notice(3));
    w.publish(&current).await;
    let first = w.sink.wait_for(1, PATIENCE).await;
    let link = first[0]
        .link("https://account.example.test/lock-account?token=")
        .unwrap_or_else(|| panic!("no lock link in {}", first[0].text()));
    // A notice of an earlier change (version 2) arrives late: it is still true and goes, but
    // without a lock link, and the generation the first link carries stays current.
    let generation_key = w
        .keys
        .token_generation(user, shared::token::Purpose::AccountLock);
    let mut redis = w.redis().await;
    let before: Option<i64> = redis.get(&generation_key).await.unwrap();
    let late = w.job(notice(2));
    w.publish(&late).await;
    let both = w.sink.wait_for(2, PATIENCE).await;
    assert_eq!(both.len(), 2);
    assert!(
        !both[1].text().contains("/lock-account"),
        "{}",
        both[1].text()
    );
    let after: Option<i64> = redis.get(&generation_key).await.unwrap();
    assert_eq!(before, after, "the late notice minted nothing");
    // The first notice's link is a lock link for this account, its current password and the
    // generation that stayed current.
    let keys = shared::token::TokenKeys::new(w.config.token_secrets.clone(), w.config.token_digest)
        .unwrap();
    let token = e2e::stack::token_of(&link);
    let claims: shared::token::Claims = keys
        .verify(
            shared::token::Purpose::AccountLock,
            &token,
            w.clock.now().timestamp(),
            7 * 86_400,
        )
        .unwrap_or_else(|e| panic!("{link}: {e:?}"))
        .value;
    assert_eq!((claims.uid, claims.pv), (user, 3));
    assert_eq!(Some(claims.r#gen), before);
}

#[tokio::test]
async fn a_redelivered_reset_job_does_not_revive_its_dead_code() {
    let w = spawn().await;
    w.add_user("bob@example.org", true).await;
    let job = w.job(Job::PasswordResetRequested {
        email: "bob@example.org".into(),
        ip: None,
        within_budget: true,
        user_id: None,
    });
    w.publish(&job).await;
    let sent = w.sink.wait_for(1, PATIENCE).await;
    assert!(sent[0].reset_code().is_some(), "{}", sent[0].text());
    // The code died (five wrong codes, or it was used): its record is a tombstone.
    let mut redis = w.redis().await;
    let pattern = format!("{}code:*", w.keys.prefix());
    let records: Vec<String> = redis.keys(&pattern).await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    let _: () = redis.hset(&records[0], "mac", "-").await.unwrap();
    let _: () = redis.hset(&records[0], "wrong", 5).await.unwrap();
    // The same job again (a redelivery after a lost acknowledgement, say) must leave it dead.
    let _: () = redis.del(w.keys.job_sent(job.id)).await.unwrap();
    w.publish(&job).await;
    let again = w.sink.wait_for(2, PATIENCE).await;
    assert_eq!(again.len(), 2);
    assert_eq!(
        again[0].reset_code(),
        again[1].reset_code(),
        "the same code"
    );
    let (mac, wrong): (String, i64) = redis::cmd("HMGET")
        .arg(&records[0])
        .arg("mac")
        .arg("wrong")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!((mac.as_str(), wrong), ("-", 5), "still dead, count kept");
}
