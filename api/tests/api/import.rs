//! `api users import`: accounts brought in with the hashes they have.

use std::io::Cursor;

use api::import::{Refusal, Report, Summary};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{STRONG, STRONGER, TestApp, spawn_app};

/// Imports `input`; the counts, the refusals and how many progress reports came.
async fn import(app: &TestApp, input: &[u8]) -> (Summary, Vec<Refusal>, usize) {
    let (mut refused, mut progress) = (Vec::new(), 0);
    let summary = api::import::run(
        &app.state.db,
        Cursor::new(input.to_vec()),
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$dW51c2FibGV1bnVzYWJsZXVudXNhYmxldW51c2FibGU",
        |report| match report {
            Report::Refused(r) => refused.push(r.clone()),
            Report::Progress(..) => progress += 1,
        },
    )
    .await
    .unwrap();
    (summary, refused, progress)
}

fn lines(rows: &[serde_json::Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        out.extend_from_slice(row.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> StatusCode {
    app.post(
        "/v1/sessions",
        json!({ "email": email, "password": password }),
    )
    .await
    .status()
}

#[tokio::test]
async fn accounts_of_every_hash_format_are_imported_and_sign_in_with_their_passwords() {
    let app = spawn_app().await;
    let password = "migrated walrus pocket 1999";
    let hashes = e2e::foreign_hashes(password);
    let mut rows: Vec<_> = hashes
        .iter()
        .map(|(scheme, hash)| json!({ "email": format!("{scheme}@Example.org"), "password_hash": hash }))
        .collect();
    rows.push(json!({ "email": "nopassword@example.org", "password_hash": null }));
    rows.push(json!({ "email": "unverified@example.org", "password_hash": hashes["bcrypt_2b"], "email_verified": false }));
    let (summary, refused, _) = import(&app, &lines(&rows)).await;
    assert_eq!(refused, []);
    let total = hashes.len() as u64 + 2;
    assert_eq!(
        summary,
        Summary {
            imported: total,
            skipped: 0,
            refused: 0
        }
    );
    for scheme in hashes.keys() {
        // Any spelling of the address: it was imported normalised.
        let email = format!("{scheme}@example.org");
        assert_eq!(
            sign_in(&app, &email, password).await,
            StatusCode::CREATED,
            "{scheme}"
        );
        assert_eq!(
            sign_in(&app, &email, STRONG).await,
            StatusCode::UNAUTHORIZED,
            "{scheme}"
        );
    }
    // No password until a reset; an unverified account signs in once it is verified (or
    // reset), like any other.
    for email in ["nopassword@example.org", "unverified@example.org"] {
        assert_eq!(
            sign_in(&app, email, password).await,
            StatusCode::UNAUTHORIZED,
            "{email}"
        );
    }
    // Each account's trail starts with its import.
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE action = 'import' AND outcome = 'created'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(rows as u64, total);
}

#[tokio::test]
async fn bad_lines_are_refused_by_number_and_the_rest_is_imported() {
    let app = spawn_app().await;
    let hashes = e2e::foreign_hashes(STRONGER);
    let good = |email: &str| {
        json!({ "email": email, "password_hash": hashes["werkzeug_scrypt"] }).to_string()
    };
    let long = format!(
        r#"{{"email": "long@example.org", "password_hash": "{}"}}"#,
        "a".repeat(api::import::MAX_LINE_BYTES)
    );
    let input = [
        good("one@example.org"),
        "not json".into(),
        r#"{"email": "nohash@example.org"}"#.into(),
        r#"{"email": "typo@example.org", "passwordhash": null}"#.into(),
        r#"{"email": "not an address", "password_hash": null}"#.into(),
        r#"{"email": "md5@example.org", "password_hash": "md5$salt$5f4dcc3b5aa765d61d8327deb882cf99"}"#.into(),
        r#"{"email": "costly@example.org", "password_hash": "scrypt:1048576:8:1$salt$00"}"#.into(),
        String::new(),
        long,
        good("two@example.org"),
    ]
    .join("\n");
    let mut input = input.into_bytes();
    input.extend_from_slice(b"\n\xff\xfe\n");
    let (summary, refused, _) = import(&app, &input).await;
    let codes: Vec<(u64, &str)> = refused.iter().map(|r| (r.line, r.code)).collect();
    assert_eq!(
        codes,
        [
            (2, "invalid_json"),
            (3, "invalid_fields"),
            (4, "invalid_fields"),
            (5, "invalid_email"),
            (6, "unusable_hash"),
            (7, "unusable_hash"),
            (9, "line_too_long"),
            (11, "invalid_json"),
        ]
    );
    assert_eq!(
        summary,
        Summary {
            imported: 2,
            skipped: 0,
            refused: 8
        }
    );
    for email in ["one@example.org", "two@example.org"] {
        assert_eq!(
            sign_in(&app, email, STRONGER).await,
            StatusCode::CREATED,
            "{email}"
        );
    }
}

#[tokio::test]
async fn an_existing_account_is_never_overwritten_and_a_second_run_imports_nothing() {
    let app = spawn_app().await;
    app.create_user("ann@example.org", STRONG).await;
    let hashes = e2e::foreign_hashes(STRONGER);
    // More rows than a batch, so the counts cross batches; Ann twice, in another spelling.
    let mut rows: Vec<_> = (0..api::import::BATCH + 500)
        .map(|i| json!({ "email": format!("user{i}@example.org"), "password_hash": hashes["bcrypt_2b"] }))
        .collect();
    rows.insert(
        10,
        json!({ "email": "ANN@example.org", "password_hash": hashes["bcrypt_2b"] }),
    );
    rows.insert(
        20,
        json!({ "email": "user3@EXAMPLE.ORG", "password_hash": null }),
    );
    let input = lines(&rows);
    let (first, refused, progress) = import(&app, &input).await;
    assert_eq!(refused, []);
    let n = api::import::BATCH as u64 + 500;
    assert_eq!(
        first,
        Summary {
            imported: n,
            skipped: 2,
            refused: 0
        }
    );
    assert_eq!(
        progress, 2,
        "one report after each full batch and one at the end"
    );
    // Ann's own password still works; the imported hash did not replace it.
    assert_eq!(
        sign_in(&app, "ann@example.org", STRONG).await,
        StatusCode::CREATED
    );
    assert_eq!(
        sign_in(&app, "ann@example.org", STRONGER).await,
        StatusCode::UNAUTHORIZED
    );
    // user3 kept its first line's hash, not the later null.
    assert_eq!(
        sign_in(&app, "user3@example.org", STRONGER).await,
        StatusCode::CREATED
    );
    let (second, _, _) = import(&app, &input).await;
    assert_eq!(
        second,
        Summary {
            imported: 0,
            skipped: n + 2,
            refused: 0
        }
    );
}

#[tokio::test]
async fn a_hash_costlier_than_the_budget_is_refused_and_every_other_keeps_its_signature() {
    let app = spawn_app().await;
    let hashes = e2e::foreign_hashes(STRONGER);
    // The same hashes with costlier parameters (their outputs no longer match: what an
    // import checks of a hash is its parameters).
    let bcrypt_10 = hashes["bcrypt_2b"].replacen("$04$", "$10$", 1);
    let argon2_t100 = hashes["argon2id"].replacen(",t=1,", ",t=100,", 1);
    let rows = [
        json!({ "email": "cheap@example.org", "password_hash": hashes["bcrypt_2b"] }),
        json!({ "email": "bcrypt@example.org", "password_hash": bcrypt_10 }),
        json!({ "email": "argon2@example.org", "password_hash": argon2_t100 }),
        json!({ "email": "again@example.org", "password_hash": bcrypt_10 }),
        json!({ "email": "nopassword@example.org", "password_hash": null }),
    ];
    let mut refused = Vec::new();
    let summary = api::import::run_within(
        &app.state.db,
        Cursor::new(lines(&rows)),
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$dW51c2FibGV1bnVzYWJsZXVudXNhYmxldW51c2FibGU",
        // bcrypt cost 4 takes about a millisecond, cost 10 sixty, argon2 over 1 MiB with
        // 100 passes as long.
        std::time::Duration::from_millis(20),
        |report| {
            if let Report::Refused(r) = report {
                refused.push(r.clone());
            }
        },
    )
    .await
    .unwrap();
    let codes: Vec<(u64, &str)> = refused.iter().map(|r| (r.line, r.code)).collect();
    assert_eq!(
        codes,
        [
            (2, "hash_too_costly"),
            (3, "hash_too_costly"),
            (4, "hash_too_costly")
        ]
    );
    assert!(
        refused[0].reason.contains("bcrypt:10")
            && refused[1].reason.contains("argon2id:19:1024:100:1"),
        "{refused:?}"
    );
    assert_eq!(
        summary,
        Summary {
            imported: 2,
            skipped: 0,
            refused: 3
        }
    );
    let signatures: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT email_key, imported_hash_signature FROM users ORDER BY email_key")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
    assert_eq!(
        signatures,
        [
            ("cheap@example.org".to_owned(), Some("bcrypt:4".to_owned())),
            ("nopassword@example.org".to_owned(), None),
        ]
    );
    assert_eq!(
        sign_in(&app, "cheap@example.org", STRONGER).await,
        StatusCode::CREATED
    );
}
