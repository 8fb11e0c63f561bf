//! The security notice through a real worker: to the account's address on file with the
//! event, its network and a working "this wasn't me" link; nothing for an account that is
//! gone, and no trace of it.

use shared::{
    audit::Outcome,
    clock::Clock as _,
    links,
    message::{Job, SecurityEvent},
    token::{Claims, Purpose, TokenKeys},
};
use uuid::Uuid;

use crate::helpers::{PATIENCE, spawn};

#[tokio::test]
async fn a_new_sign_in_notice_reaches_the_account_with_a_lock_link_and_a_gone_account_gets_none() {
    let mut w = spawn().await;
    let user = w.add_user("kim@example.org", true).await;
    // The account's password changed since it was made: the link is for the current version.
    sqlx::query("UPDATE users SET password_version = 4 WHERE id = $1")
        .bind(user)
        .execute(&w.db)
        .await
        .expect("password version");
    // A lock link of an earlier email is alive (its generation is the account's): the notice's
    // link is minted beside it, not instead of it.
    let earlier: i64 = 1_700_000_000_000;
    let _: () = redis::cmd("SET")
        .arg(w.keys.token_generation(user, Purpose::AccountLock))
        .arg(earlier)
        .arg("EX")
        .arg(3600)
        .query_async(&mut w.redis().await)
        .await
        .expect("redis");
    let gone = w.job(Job::SecurityNotice {
        user_id: Uuid::now_v7(),
        email: "erased@example.org".into(),
        ip: Some("198.51.100.9".into()),
        password_version: 1,
        event: SecurityEvent::RecoveryCodeUsed { remaining: 1 },
    });
    w.publish(&gone).await;
    let sign_in = w.job(Job::SecurityNotice {
        user_id: user,
        // The address the event happened under; the notice goes to the one on file.
        email: "kim.old@example.org".into(),
        ip: Some("203.0.113.77".into()),
        password_version: 4,
        event: SecurityEvent::NewSignIn {
            device: "Firefox on Linux".into(),
            ip_prefix: Some("203.0.113.0/24".into()),
        },
    });
    w.publish(&sign_in).await;
    // A notice of an event under an older password: true, but its link would lock the newer
    // password (and kill the link of that change's own notice), so it goes without one.
    let late = w.job(Job::SecurityNotice {
        user_id: user,
        email: "kim@example.org".into(),
        ip: Some("203.0.113.77".into()),
        password_version: 3,
        event: SecurityEvent::RecoveryCodesReplaced,
    });
    w.publish(&late).await;

    let email = w
        .sink
        .wait_for_email("kim@example.org", "New sign-in", PATIENCE)
        .await
        .expect("the new-sign-in notice arrives at the account's address");
    assert_eq!(
        email.subject(),
        "New sign-in to your Example Accounts account",
        "{}",
        email.text()
    );
    let text = email.text();
    let line = |wanted: &str| text.lines().any(|l| l.trim_end() == wanted);
    assert!(line("Device:  Firefox on Linux"), "{text}");
    assert!(line("Network: 203.0.113.0/24"), "{text}");
    assert!(email.html().contains("<strong>Firefox on Linux</strong>"));
    let prefix = links::page("https://account.example.test", links::LOCK_ACCOUNT_PATH);
    let link = email
        .link(&format!("{prefix}?token="))
        .unwrap_or_else(|| panic!("no lock link in {text}"));
    // The link is a lock link for this account and its current password, under the
    // generation the worker recorded.
    let keys = TokenKeys::new(w.config.token_secrets.clone(), w.config.token_digest).expect("keys");
    let claims = keys
        .verify::<Claims>(
            Purpose::AccountLock,
            &e2e::stack::token_of(&link),
            w.clock.now().timestamp(),
            7 * 86_400,
        )
        .unwrap_or_else(|e| panic!("{link}: {e:?}"))
        .value;
    assert_eq!((claims.uid, claims.pv), (user, 4));
    let generation: Option<i64> = redis::cmd("GET")
        .arg(w.keys.token_generation(user, Purpose::AccountLock))
        .query_async(&mut w.redis().await)
        .await
        .expect("redis");
    assert_eq!(Some(claims.r#gen), generation);
    assert_eq!(
        generation,
        Some(earlier),
        "the earlier link is still the newest"
    );
    assert!(
        line("https://account.example.test/forgot-password"),
        "{text}"
    );

    let late_email = w
        .sink
        .wait_for_email("kim@example.org", "New recovery codes", PATIENCE)
        .await
        .expect("the late notice arrives");
    assert!(
        late_email.link(&format!("{prefix}?token=")).is_none(),
        "{}",
        late_email.text()
    );
    assert!(
        late_email
            .text()
            .contains("https://account.example.test/forgot-password")
    );
    assert_eq!(w.outcome(&late).await, Outcome::Sent);
    assert_eq!(w.outcome(&sign_in).await, Outcome::Sent);
    assert_eq!(w.outcome(&gone).await, Outcome::DroppedUnknown);
    // The gone account's row keeps neither its address nor its IP.
    let (ip, address): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT host(ip), address_hash FROM audit_events WHERE request_id = $1")
            .bind(&gone.trace.request_id)
            .fetch_one(&w.db)
            .await
            .expect("the dropped job's audit row");
    assert_eq!((ip, address), (None, None));
    let (ip, user_id): (Option<String>, Option<Uuid>) =
        sqlx::query_as("SELECT host(ip), user_id FROM audit_events WHERE request_id = $1")
            .bind(&sign_in.trace.request_id)
            .fetch_one(&w.db)
            .await
            .expect("the sent job's audit row");
    assert_eq!((ip.as_deref(), user_id), (Some("203.0.113.77"), Some(user)));

    w.stop().await;
    assert_eq!(w.ready_in(&w.topology.jobs_queue()).await, 0, "all acked");
    let sent = w.sink.emails();
    assert_eq!(sent.len(), 2, "nothing for the gone account");
    assert!(sent.iter().all(|e| e.rcpt_to() == "kim@example.org"));
}
