//! Mixed versions (DESIGN §12): this build, run as the release before a newer one, on the
//! schema the newer one migrated (a rollback, or the old ReplicaSet mid-rollout), and the
//! links it mints, which the release before it must still serve.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, time::Duration};

use e2e::stack::{SmtpSink, StackEnv};

/// The newer release's migration: an expand-only change, recorded as sqlx records one.
const NEWER: i64 = 29_991_231_000_000;

/// Every link path a released version put in an email, with the query parameters it used.
/// A release may add paths; it must not mint a link the release before it cannot serve, so
/// removing an entry or renaming a parameter is a breaking change (links in mail already
/// sent, and links a newer release mints while an older one still serves).
const RELEASED_LINKS: [(&str, &[&str]); 5] = [
    ("/reset-password", &["token"]),
    ("/reset-password", &[]),
    ("/verify-email", &["token"]),
    ("/lock-account", &["token"]),
    ("/forgot-password", &[]),
];
/// Links to the site's own pages (its home, to sign in or up): the site serves them.
const SITE_LINKS: [(&str, &[&str]); 1] = [("/", &[])];

async fn newer_release_migrated(env: &StackEnv, success: bool) {
    let db = sqlx::PgPool::connect(&env.database_url).await.unwrap();
    sqlx::raw_sql("ALTER TABLE users ADD COLUMN IF NOT EXISTS display_name text")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, 'display names', $2, '\\x00', 1)",
    )
    .bind(NEWER)
    .bind(success)
    .execute(&db)
    .await
    .unwrap();
    db.close().await;
}

/// `(path, parameter names)` of every link to `base` in `text`.
fn links_in(text: &str, base: &str) -> BTreeSet<(String, Vec<String>)> {
    text.match_indices(base)
        .map(|(at, _)| {
            let rest = &text[at + base.len()..];
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '<' | '>' | '\''))
                .unwrap_or(rest.len());
            let url = rest[..end].replace("&amp;", "&");
            let (path, query) = url.split_once('?').unwrap_or((&url, ""));
            let mut names: Vec<String> = query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| pair.split('=').next().unwrap_or_default().to_owned())
                .collect();
            names.sort();
            (path.to_owned(), names)
        })
        .collect()
}

#[tokio::test]
async fn an_older_build_serves_a_newer_schema_and_mints_only_links_older_builds_serve() {
    let sink = SmtpSink::start().await.unwrap();
    let env = StackEnv::new().await.unwrap();
    env.migrate().await.unwrap();
    newer_release_migrated(&env, true).await;

    let (ok, lines) = env.api_command(&["migrate", "status"]).await.unwrap();
    assert!(ok, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("unknown  {NEWER} display names")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("pending")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("applied")), "{lines:?}");

    // `api migrate` (the release job) and the api's own start both go on.
    let (api, base) = env.start_api().await.unwrap();
    let (_worker, _) = env.start_worker(&sink.url()).await.unwrap();
    let http = reqwest::Client::new();
    let ready = e2e::poll_until(Duration::from_secs(20), || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    assert!(ready.is_some(), "never ready: {:?}", api.output());
    assert!(
        api.output()
            .iter()
            .any(|l| l.contains("migrations of a newer release") && l.contains(&NEWER.to_string())),
        "{:?}",
        api.output()
    );

    // The whole recovery works on it: sign-up, verification, reset, the notices.
    let email = "rolled-back@example.org";
    env.sign_up_and_verify(&base, &base, &sink, email, "first correct horse battery")
        .await
        .unwrap();
    let token = env.reset_token(&base, &sink, email).await.unwrap();
    let r = http
        .post(format!("{base}/v1/password/reset"))
        .json(
            &serde_json::json!({ "token": token, "new_password": "second correct horse battery" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = http
        .post(format!("{base}/v1/users"))
        .json(&serde_json::json!({ "email": email, "password": "third correct horse battery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let emails = sink.wait_for(4, Duration::from_secs(60)).await;
    assert_eq!(emails.len(), 4, "verification, reset, changed, exists");

    // Every link this build minted is one the release before it served...
    let released: BTreeSet<(String, Vec<String>)> = RELEASED_LINKS
        .iter()
        .chain(&SITE_LINKS)
        .map(|(path, names)| {
            (
                (*path).to_owned(),
                names.iter().map(|n| (*n).to_owned()).collect(),
            )
        })
        .collect();
    let mut minted = BTreeSet::new();
    for email in &emails {
        minted.extend(links_in(&email.text(), &env.public_base_url));
        minted.extend(links_in(&email.html(), &env.public_base_url));
    }
    let kinds: BTreeSet<&str> = minted.iter().map(|(path, _)| path.as_str()).collect();
    assert!(kinds.len() >= 4, "every kind of link read: {minted:?}");
    let new: Vec<_> = minted.difference(&released).collect();
    assert!(
        new.is_empty(),
        "links an older release cannot serve (add a path only after a release serves it): {new:?}"
    );
    // ... and every path released before is still served.
    for (path, names) in RELEASED_LINKS {
        let query: Vec<String> = names.iter().map(|n| format!("{n}=x")).collect();
        let url = format!("{base}{path}?{}", query.join("&"));
        let r = http.get(&url).send().await.unwrap();
        assert!(
            r.status() != 404 && r.status() != 405,
            "{url}: {}",
            r.status()
        );
        let html = r
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("text/html"));
        assert!(html, "{url} serves a page");
    }
}

#[tokio::test]
async fn a_newer_migration_that_failed_halfway_stops_the_migration_and_says_so() {
    let env = StackEnv::new().await.unwrap();
    env.migrate().await.unwrap();
    newer_release_migrated(&env, false).await;

    let (ok, lines) = env.api_command(&["migrate", "status"]).await.unwrap();
    assert!(!ok, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("failed   {NEWER} display names")),
        "{lines:?}"
    );
    let (ok, lines) = env.api_command(&["migrate"]).await.unwrap();
    assert!(!ok, "a half-applied schema is not served on: {lines:?}");
    assert!(
        lines.iter().any(|l| l.contains(&NEWER.to_string())),
        "{lines:?}"
    );
}
