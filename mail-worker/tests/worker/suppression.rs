//! The suppression list as the worker keeps it: a "no such mailbox" answer puts the address
//! on it, later jobs to the address are dropped, other permanent failures do not count.

use serde_json::json;
use shared::{audit::Outcome, message::Job};

use crate::helpers::spawn;

fn notice(email: &str) -> Job {
    Job::AccountExistsNotice {
        email: email.into(),
        ip: None,
    }
}

async fn suppressed(w: &crate::helpers::TestWorker) -> Vec<(String, String)> {
    sqlx::query_as("SELECT address_key, reason FROM suppressed_addresses ORDER BY address_key")
        .fetch_all(&w.db)
        .await
        .expect("suppression list")
}

#[tokio::test]
async fn a_mailbox_that_does_not_exist_is_suppressed_and_later_mail_to_it_dropped() {
    let w = spawn().await;
    w.sink
        .set_mode(json!({"per_recipient": {
            "gone@example.org": "550 5.1.1 no such user",
            "spam@example.org": "550 5.7.1 refused as spam",
        }}))
        .await
        .expect("sink mode");
    // The account's spelling is the one mail goes to (and the one suppressed), whatever the
    // spelling a job names.
    w.add_user("Gone@Example.org", true).await;
    let bounced = w.job(notice("Gone@Example.org"));
    let refused = w.job(notice("spam@example.org"));
    w.publish(&bounced).await;
    w.publish(&refused).await;
    assert_eq!(w.outcome(&bounced).await, Outcome::Dead);
    assert_eq!(w.outcome(&refused).await, Outcome::Dead);

    // Only the mailbox that does not exist is suppressed (a policy refusal is no proof).
    let list = suppressed(&w).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].0, "gone@example.org");
    assert!(
        list[0].1.contains("5.1.1") && !list[0].1.contains('@'),
        "{list:?}"
    );

    // The next job to the account sends nothing, whatever spelling it names, even with the
    // server accepting again.
    w.sink.set_mode(json!({})).await.expect("sink mode");
    let next = w.job(notice("gone@example.org"));
    w.publish(&next).await;
    assert_eq!(w.outcome(&next).await, Outcome::DroppedSuppressed);
    let other = w.job(notice("spam@example.org"));
    w.publish(&other).await;
    assert_eq!(w.outcome(&other).await, Outcome::Sent);
    let emails = w.sink.emails();
    assert_eq!(emails.len(), 1, "only the unsuppressed address");
    assert_eq!(emails[0].rcpt_to(), "spam@example.org");
}

#[tokio::test]
async fn every_spelling_that_bounced_stays_suppressed_and_only_those() {
    let w = spawn().await;
    let key = "gone@example.org";
    for spelling in ["GONE@example.org", "Gone@example.org", "GONE@example.org"] {
        shared::suppression::add(&w.db, key, spelling, "550 5.1.1 no such user")
            .await
            .expect("suppress");
    }
    let asked: Vec<(String, String)> = ["GONE@example.org", "Gone@example.org", "gone@example.org"]
        .iter()
        .map(|s| (key.to_owned(), (*s).to_owned()))
        .collect();
    let mut hit = shared::suppression::which(&w.db, &asked)
        .await
        .expect("which");
    hit.sort();
    assert_eq!(hit, ["GONE@example.org", "Gone@example.org"]);
    let listed = shared::suppression::list(&w.db).await.expect("list");
    assert_eq!(
        listed[0].addresses.as_deref(),
        Some(&["GONE@example.org".to_owned(), "Gone@example.org".to_owned()][..])
    );
    // A row from before spellings were kept suppresses every spelling of its key.
    sqlx::query("UPDATE suppressed_addresses SET addresses = NULL")
        .execute(&w.db)
        .await
        .expect("old row");
    let hit = shared::suppression::which(&w.db, &asked)
        .await
        .expect("which");
    assert_eq!(hit.len(), 3);
}
