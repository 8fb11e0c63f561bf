//! Refusing is cheap and never locks the owner out: refused floods add (almost) no rows and
//! no keys and never wait for PostgreSQL; a recognised browser signs in while strangers have
//! its address refused; IPv6 clients are counted per /64, /56 and /48; a site-wide flood of
//! wrong reset codes pauses code entry while links keep working.

use std::time::Duration;

use base64::Engine as _;
use futures_util::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use shared::token::Purpose;

use crate::helpers::{STRONG, STRONGER, TestApp, assert_error, spawn_with};

const OWNER: &str = "owner@example.org";

/// A JSON POST as if from `client` behind the trusted proxy, with `cookie` when given.
async fn post_as(
    app: &TestApp,
    client: &str,
    cookie: Option<&str>,
    path: &str,
    body: Value,
) -> Response {
    let mut request = app
        .client
        .post(app.url(path))
        .header("x-forwarded-for", client)
        .json(&body);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

/// Rows in the audit table and keys under the app's Redis prefix, once the refusal rows
/// written beside the answers are in.
async fn footprint(app: &TestApp) -> (i64, usize) {
    app.settle_audit().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    let mut redis = app.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.keys.prefix()))
        .query_async(&mut redis)
        .await
        .unwrap();
    (rows, keys.len())
}

/// `n` requests built by `request(i)`, 25 at a time; every answer must be a 429.
async fn all_refused<F, Fut>(n: usize, request: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
        for r in join_all(chunk.iter().map(|&i| request(i))).await {
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        }
    }
}

#[tokio::test]
async fn refused_floods_naming_a_new_address_each_time_add_almost_no_rows_or_keys() {
    let app = spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_IP_PER_HOUR", "3"),
        ("RATE_LIMIT_LOGIN_IP_PER_HOUR", "3"),
    ])
    .await;
    let forgot = |client: String, i: usize| {
        let app = &app;
        async move {
            let body = json!({ "email": format!("victim{i}@example.org") });
            post_as(app, &client, None, "/v1/password/forgot", body).await
        }
    };
    let sign_in = |client: String, i: usize| {
        let app = &app;
        async move {
            let body = json!({ "email": format!("victim{i}@example.org"), "password": STRONG });
            post_as(app, &client, None, "/v1/sessions", body).await
        }
    };

    // One IPv4 address, 600 refused forgot-password requests.
    for i in 0..3 {
        let r = forgot("203.0.113.7".into(), i).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let before = footprint(&app).await;
    all_refused(600, |i| forgot("203.0.113.7".into(), 1000 + i)).await;
    let after = footprint(&app).await;
    assert!(after.0 - before.0 <= 25, "rows {before:?} -> {after:?}");
    assert!(after.1 - before.1 <= 40, "keys {before:?} -> {after:?}");
    assert!(after.0 > before.0, "the flood is still audited once");

    // One IPv6 /64, a new address inside it for every request.
    for i in 0..3 {
        let r = forgot(format!("2001:db8:7:7::{i:x}"), 2000 + i).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let before = footprint(&app).await;
    all_refused(600, |i| {
        forgot(
            format!("2001:db8:7:7:{:x}:{:x}::1", i / 7, i % 7 + 1),
            3000 + i,
        )
    })
    .await;
    let after = footprint(&app).await;
    assert!(after.0 - before.0 <= 25, "rows {before:?} -> {after:?}");
    assert!(after.1 - before.1 <= 40, "keys {before:?} -> {after:?}");

    // 300 refused sign-ins from one client, each naming a new address.
    for i in 0..3 {
        let r = sign_in("198.51.100.8".into(), 4000 + i).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let before = footprint(&app).await;
    all_refused(300, |i| sign_in("198.51.100.8".into(), 5000 + i)).await;
    let after = footprint(&app).await;
    assert!(after.0 - before.0 <= 25, "rows {before:?} -> {after:?}");
    assert!(after.1 - before.1 <= 40, "keys {before:?} -> {after:?}");
}

#[tokio::test]
async fn a_refusal_is_answered_while_every_database_connection_is_taken() {
    let app = spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_IP_PER_HOUR", "1"),
    ])
    .await;
    let body = |i: usize| json!({ "email": format!("v{i}@example.org") });
    let r = post_as(&app, "203.0.113.9", None, "/v1/password/forgot", body(0)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // Every connection of the api's pool is held here: a refusal that waited for one (to
    // write its audit row) would wait for the pool's 3 s acquire timeout.
    let size = app.state.db.options().get_max_connections() as usize;
    let mut held = Vec::new();
    for _ in 0..size {
        held.push(app.state.db.acquire().await.unwrap());
    }
    let refusals = join_all(
        (1..=20).map(|i| post_as(&app, "203.0.113.9", None, "/v1/password/forgot", body(i))),
    );
    let answers = tokio::time::timeout(Duration::from_millis(2500), refusals)
        .await
        .expect("refusals answered without a database connection");
    for r in answers {
        assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited_ip").await;
    }
    drop(held);
    assert_eq!(app.audit_outcomes("rate_limited").await, ["forgot_ip"]);
}

/// Signs in to `email` from `client` with `cookie`; the answer and the device cookie it set.
async fn sign_in_as(
    app: &TestApp,
    client: &str,
    cookie: Option<&str>,
    email: &str,
    password: &str,
) -> (StatusCode, Option<String>) {
    let body = json!({ "email": email, "password": password });
    let r = post_as(app, client, cookie, "/v1/sessions", body).await;
    (r.status(), device_cookie(&r))
}

/// The `name=value` of the device cookie `r` sets, if it sets one.
fn device_cookie(r: &Response) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-device="))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

#[tokio::test]
async fn the_owners_browser_signs_in_while_strangers_have_the_address_refused() {
    let app = spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_LOGIN_EMAIL_PER_HOUR", "50"),
    ])
    .await;
    let owner = app.create_user(OWNER, STRONG).await;
    app.create_user("other@example.org", STRONG).await;
    let (status, device) = sign_in_as(&app, "192.0.2.1", None, OWNER, STRONG).await;
    assert_eq!(status, StatusCode::CREATED);
    let device = device.expect("a successful sign-in sets the device cookie");
    let (_, others_device) = sign_in_as(&app, "192.0.2.2", None, "other@example.org", STRONG).await;
    let others_device = others_device.unwrap();

    // 60 wrong passwords from 6 clients: the address's budget (50 an hour) is spent.
    let mut refused = 0;
    for client in 0..6 {
        for _ in 0..10 {
            let ip = format!("198.51.100.{client}");
            let (status, set) = sign_in_as(&app, &ip, None, OWNER, "not the password 123").await;
            assert!(set.is_none(), "a failed sign-in sets no device cookie");
            refused += usize::from(status == StatusCode::TOO_MANY_REQUESTS);
        }
    }
    assert_eq!(refused, 10, "the 51st to 60th wrong passwords were refused");

    // The right password from a browser that never signed in to the account: refused, and
    // so with a forged device cookie or with another account's.
    let b64 = |byte: u8| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([byte; 16]);
    let id = device.split('.').nth(1).unwrap();
    let forged = format!("__Host-device=v1.{id}.{}", b64(0x42));
    let moved = {
        let tag = device.rsplit('.').next().unwrap();
        format!("__Host-device=v1.{}.{tag}", b64(0x43))
    };
    for cookie in [
        None,
        Some(forged.as_str()),
        Some(moved.as_str()),
        Some(others_device.as_str()),
    ] {
        let (status, _) = sign_in_as(&app, "203.0.113.50", cookie, OWNER, STRONG).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{cookie:?}");
    }

    // The owner's browser gets in, from anywhere; its own typos draw on its own budget.
    let (status, _) = sign_in_as(
        &app,
        "203.0.113.51",
        Some(&device),
        OWNER,
        "owner typo password 1",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, renewed) = sign_in_as(&app, "203.0.113.51", Some(&device), OWNER, STRONG).await;
    assert_eq!(status, StatusCode::CREATED);
    let renewed = renewed.expect("the cookie is renewed");
    assert_eq!(
        renewed.split('.').nth(1),
        device.split('.').nth(1),
        "the same device"
    );
    assert_eq!(
        app.audit_outcomes("rate_limited")
            .await
            .iter()
            .filter(|o| *o == "login_email")
            .count(),
        1
    );

    // A reset by the mailbox's owner clears the address's failures: any browser may sign in.
    let token = app.mint(Purpose::PasswordReset, owner).await;
    let r = post_as(
        &app,
        "203.0.113.52",
        None,
        "/v1/password/reset",
        json!({ "token": token, "new_password": STRONGER }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let resetting = device_cookie(&r).expect("a reset sets the device cookie");
    let (status, _) = sign_in_as(&app, "203.0.113.53", None, OWNER, STRONGER).await;
    assert_eq!(status, StatusCode::CREATED);

    // Every browser recognised before the reset is a stranger now (the one that reset is
    // not): with the address refused again, the old cookie gets the refusal, the new one in.
    for client in 0..6 {
        for _ in 0..9 {
            let ip = format!("198.51.100.{}", 10 + client);
            sign_in_as(&app, &ip, None, OWNER, "not the password 123").await;
        }
    }
    let (status, _) = sign_in_as(&app, "203.0.113.54", None, OWNER, STRONGER).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = sign_in_as(&app, "203.0.113.54", Some(&device), OWNER, STRONGER).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "a cookie from before the reset"
    );
    let (status, _) = sign_in_as(&app, "203.0.113.54", Some(&resetting), OWNER, STRONGER).await;
    assert_eq!(status, StatusCode::CREATED, "the cookie the reset set");
}

#[tokio::test]
async fn a_recognised_device_has_a_small_budget_of_its_own() {
    let app = spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_LOGIN_DEVICE_PER_HOUR", "3"),
    ])
    .await;
    app.create_user(OWNER, STRONG).await;
    let (_, device) = sign_in_as(&app, "192.0.2.1", None, OWNER, STRONG).await;
    let device = device.unwrap();
    // A stolen device cookie is worth three guesses an hour, not the address's fifty.
    for _ in 0..3 {
        let (status, _) =
            sign_in_as(&app, "192.0.2.9", Some(&device), OWNER, "guess guess 1").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = sign_in_as(&app, "192.0.2.9", Some(&device), OWNER, STRONG).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.audit_outcomes("rate_limited").await, ["login_device"]);
    // Without the cookie the address's own budget still has room.
    let (status, _) = sign_in_as(&app, "192.0.2.10", None, OWNER, STRONG).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64_per_56_and_per_48() {
    let app = spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_IP_PER_HOUR", "2"),
        ("RATE_LIMIT_IPV6_56_FACTOR", "2"),
        ("RATE_LIMIT_IPV6_48_FACTOR", "4"),
    ])
    .await;
    let forgot = |client: &'static str| {
        let body = json!({ "email": "someone@example.org" });
        post_as(&app, client, None, "/v1/password/forgot", body)
    };
    let status = |r: Response| r.status();
    // A /64: 2.
    assert_eq!(
        status(forgot("2001:db8:1:100::1").await),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        status(forgot("2001:db8:1:100:ffff::1").await),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        status(forgot("2001:db8:1:100::2").await),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Its /56: 4 over all its /64s.
    assert_eq!(
        status(forgot("2001:db8:1:101::1").await),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        status(forgot("2001:db8:1:1ff::1").await),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        status(forgot("2001:db8:1:102::1").await),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Its /48: 8 over all its /56s.
    for client in [
        "2001:db8:1:200::1",
        "2001:db8:1:200::2",
        "2001:db8:1:300::1",
        "2001:db8:1:300::2",
    ] {
        assert_eq!(
            status(forgot(client).await),
            StatusCode::ACCEPTED,
            "{client}"
        );
    }
    assert_eq!(
        status(forgot("2001:db8:1:400::1").await),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another /48 is another client.
    assert_eq!(status(forgot("2001:db8:2::1").await), StatusCode::ACCEPTED);
    // IPv4 clients are counted per address only.
    assert_eq!(status(forgot("192.0.2.1").await), StatusCode::ACCEPTED);
    assert_eq!(status(forgot("192.0.2.2").await), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_site_wide_flood_of_wrong_codes_pauses_code_entry_while_links_keep_working() {
    // Six codes an hour for this client: the five wrong ones and the right one at the end; the
    // answers refused while paused spend none.
    let app = spawn_with(&[
        ("CODE_BREAKER_WRONG_PER_MINUTE", "5"),
        ("RATE_LIMIT_CODE_PER_HOUR", "6"),
    ])
    .await;
    let owner = app.create_user(OWNER, STRONG).await;
    let (_, code) = app.issue_code(owner, OWNER).await;
    // Five wrong codes over five addresses, known or not.
    for i in 0..5 {
        let r = app
            .reset_with_code(&format!("guess{i}@example.org"), "12345678", STRONGER)
            .await;
        assert_error(r, StatusCode::BAD_REQUEST, "code_invalid").await;
    }
    // Code entry pauses for everyone, the right code too, and says so.
    let r = app.reset_with_code(OWNER, &code, STRONGER).await;
    assert_eq!(r.headers()["retry-after"], "60");
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "code_entry_paused").await;
    let page = app
        .form(
            "/reset-password/code",
            &[
                ("email", OWNER),
                ("code", &code),
                ("password", STRONGER),
                ("password_confirm", STRONGER),
            ],
        )
        .await;
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = page.text().await.unwrap();
    assert!(text.contains("link in your email still works"), "{text}");
    // Two minutes later the rate has fallen back and the code works.
    app.clock.advance(chrono::Duration::seconds(121));
    let r = app.reset_with_code(OWNER, &code, STRONGER).await;
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "{}",
        r.text().await.unwrap()
    );
}

#[tokio::test]
async fn while_codes_are_paused_a_reset_link_works() {
    let app = spawn_with(&[("CODE_BREAKER_WRONG_PER_MINUTE", "1")]).await;
    let owner = app.create_user(OWNER, STRONG).await;
    let r = app
        .reset_with_code("guess@example.org", "12345678", STRONGER)
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "code_invalid").await;
    let r = app
        .reset_with_code("guess@example.org", "12345678", STRONGER)
        .await;
    assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "code_entry_paused").await;
    let token = app.mint(Purpose::PasswordReset, owner).await;
    let r = app
        .post(
            "/v1/password/reset",
            json!({ "token": token, "new_password": STRONGER }),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_verification_sets_the_device_cookie_that_recognises_the_browser() {
    let app = spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ("RATE_LIMIT_LOGIN_EMAIL_PER_HOUR", "2"),
    ])
    .await;
    let user = app.sign_up(OWNER, STRONG).await;
    let link = app.mint(Purpose::EmailVerify, user).await;
    let r = app.verify_answer(&link, STRONG).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let device = device_cookie(&r).expect("a verification sets the device cookie");
    for _ in 0..2 {
        sign_in_as(&app, "198.51.100.1", None, OWNER, "not the password 123").await;
    }
    let (status, _) = sign_in_as(&app, "203.0.113.1", None, OWNER, STRONG).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = sign_in_as(&app, "203.0.113.1", Some(&device), OWNER, STRONG).await;
    assert_eq!(status, StatusCode::CREATED);
}
