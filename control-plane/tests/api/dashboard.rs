//! The customer dashboard: sign-in through one-time links and passwords, sessions, CSRF, rate
//! limits, the live balance, and what a customer session can and cannot reach.

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::COOKIE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::web::*;

#[tokio::test]
async fn pages_need_a_session_and_an_api_key_is_not_a_password() {
    let app = spawn_app().await;
    let account = app.create_account("keyholder").await;
    let (_, secret) = app.create_key(account, "k").await;
    let mut web = Web::new(&app);
    for path in [
        "/dashboard",
        "/dashboard/keys",
        "/dashboard/usage",
        "/dashboard/usage.csv",
    ] {
        let page = web.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.location(), "/dashboard/login", "{path}");
    }
    let page = web.customer_login("keyholder@example.com", &secret).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert!(!web.cookies.contains_key("cs_session"));
    // The key does not open the dashboard as a bearer either.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for header in ["authorization", "x-api-key"] {
        let value = if header == "authorization" {
            format!("Bearer {secret}")
        } else {
            secret.clone()
        };
        let resp = no_redirects
            .get(format!("{}/dashboard", app.url))
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{header}");
    }
}

#[tokio::test]
async fn invite_link_sets_the_password_once_and_signs_in_with_a_hashed_session() {
    let app = spawn_app().await;
    let account = app.create_account("invited").await;
    let (link, purpose) = app.password_link(account).await;
    assert_eq!(purpose, "invite");
    let mut web = Web::new(&app);
    let form = web.get(&link).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("invited@example.com"));
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let short = web
        .post(
            "/dashboard/password",
            &[("token", &token), ("password", "short"), ("confirm", "short")],
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    let ok = web
        .post(
            "/dashboard/password",
            &[("token", &token), ("password", PASSWORD), ("confirm", PASSWORD)],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    let cookie = ok.set_cookie("cs_session");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "http PUBLIC_URL: {cookie}");
    // Only a hash of the session token is stored.
    let value = web.cookies["cs_session"].clone();
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM web_sessions")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], value);
    assert!(!stored[0].contains(&value));
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM customer_logins")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert_eq!(web.get("/dashboard").await.status, StatusCode::OK);
    // The link is single-use.
    assert_eq!(web.get(&link).await.status, StatusCode::NOT_FOUND);
    let again = web
        .post(
            "/dashboard/password",
            &[
                ("token", &token),
                ("password", "another password 1"),
                ("confirm", "another password 1"),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    // Sign in with the password from a fresh browser.
    let mut other = Web::new(&app);
    let wrong = other
        .customer_login("invited@example.com", "wrong password!")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let page = other.customer_login("INVITED@example.com", PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(other.get("/dashboard").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_reset_link_ends_every_session_and_voids_earlier_links() {
    let app = spawn_app().await;
    let (account, mut web) = signed_in_customer(&app, "resetter").await;
    let (first, purpose) = app.password_link(account).await;
    assert_eq!(purpose, "reset");
    let (second, _) = app.password_link(account).await;
    assert_eq!(
        web.get(&first).await.status,
        StatusCode::NOT_FOUND,
        "voided by the newer link"
    );
    let token = second.split("token=").nth(1).unwrap().to_owned();
    let mut fresh = Web::new(&app);
    let page = fresh
        .post(
            "/dashboard/password",
            &[
                ("token", &token),
                ("password", "brand new password"),
                ("confirm", "brand new password"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        web.get("/dashboard").await.status,
        StatusCode::SEE_OTHER,
        "old session ended"
    );
    assert_eq!(fresh.get("/dashboard").await.status, StatusCode::OK);
}

#[tokio::test]
async fn sign_out_needs_the_csrf_token_and_ends_the_session() {
    let app = spawn_app().await;
    let (_, mut web) = signed_in_customer(&app, "leaver").await;
    let refused = web.post("/dashboard/logout", &[("csrf", "forged")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let old = web.cookies["cs_session"].clone();
    let csrf = web.csrf("/dashboard").await;
    let out = web.post("/dashboard/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.set_cookie("cs_session").contains("Max-Age=0"));
    // The old cookie value is dead server-side, not only forgotten by the browser.
    let status = get_with_cookie(&app, "/dashboard", &format!("cs_session={old}")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_email_even_with_the_right_password_after() {
    let app = spawn_app().await;
    let (_, _) = signed_in_customer(&app, "target").await;
    let mut attacker = Web::new(&app);
    for _ in 0..5 {
        let p = attacker
            .customer_login("target@example.com", "guess guess guess")
            .await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    }
    let p = attacker.customer_login("target@example.com", PASSWORD).await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS, "{}", p.body);
    assert!(!attacker.cookies.contains_key("cs_session"));
}

#[tokio::test]
async fn sign_in_without_the_form_token_is_refused() {
    let app = spawn_app().await;
    let (_, _) = signed_in_customer(&app, "csrflogin").await;
    let mut web = Web::new(&app);
    let p = web
        .post(
            "/dashboard/login",
            &[("email", "csrflogin@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn forms_refuse_a_missing_or_foreign_csrf_token() {
    let app = spawn_app().await;
    let (account, mut web) = signed_in_customer(&app, "victim").await;
    let (_, mut other) = signed_in_customer(&app, "attacker").await;
    let foreign = other.csrf("/dashboard/keys").await;
    for form in [
        vec![("name", "evil")],
        vec![("name", "evil"), ("csrf", foreign.as_str())],
    ] {
        let p = web.post("/dashboard/keys", &form).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE account_id = $1")
        .bind(account)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
    let csrf = web.csrf("/dashboard/keys").await;
    let form = [
        ("name", "mine"),
        ("csrf", csrf.as_str()),
        ("form_token", "a-single-use-form-token-1"),
    ];
    let answer = web.post("/dashboard/keys", &form).await;
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT sealed FROM form_submissions WHERE sealed IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let created = web.follow(&answer).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert!(
        created.body.contains("id=\"new-key-secret\">csk_"),
        "the secret is shown once"
    );
    // Until then the database held it sealed (not the key, nor any 8 bytes of it), and not since.
    let secret = created
        .body
        .split("id=\"new-key-secret\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    assert_eq!(sealed.len(), secret.len());
    assert!(!sealed
        .windows(8)
        .any(|w| secret.as_bytes().windows(8).any(|s| s == w)));
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM form_submissions WHERE sealed IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(kept, 0, "cleared once shown");
    let again = web.get(answer.location()).await;
    assert!(
        again.body.contains("Key mine created."),
        "the result is shown again"
    );
    assert!(
        !again.body.contains("id=\"new-key-secret\""),
        "but the secret only once"
    );
    let listed = web.get("/dashboard/keys").await;
    assert!(listed.body.contains("mine"));
    assert!(!listed.body.contains("id=\"new-key-secret\""), "and only once");
    // The same form sent again (a refresh, a double click) creates nothing more.
    let resent = web.post_again("/dashboard/keys", &form).await;
    assert_eq!(resent.status, StatusCode::SEE_OTHER);
    assert_eq!(resent.location(), answer.location());
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE account_id = $1")
        .bind(account)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1, "one key for two submissions of one form");
}

#[tokio::test]
async fn a_customer_session_reaches_neither_other_accounts_nor_the_console() {
    let app = spawn_app().await;
    let (_, mut web) = signed_in_customer(&app, "alice").await;
    let bob = app.create_account("bob").await;
    let (bob_key, _) = app.create_key(bob, "bobs").await;
    let csrf = web.csrf("/dashboard/keys").await;
    let p = web
        .post(&format!("/dashboard/keys/{bob_key}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let status: String = sqlx::query_scalar("SELECT status FROM api_keys WHERE id = $1")
        .bind(bob_key)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(status, "active");
    for path in [
        "/admin",
        &format!("/admin/accounts/{bob}"),
        "/admin/prices",
        "/admin/plans",
    ] {
        let p = web.get(path).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(p.location(), "/admin/login");
    }
    // The customer's cookie value presented as the admin cookie opens nothing either.
    let value = web.cookies["cs_session"].clone();
    let status = get_with_cookie(&app, "/admin", &format!("cs_admin={value}")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // Nor does a cookie authenticate the JSON API.
    let resp = app
        .req(Method::GET, &format!("/v1/accounts/{bob}"))
        .header(COOKIE, format!("cs_session={value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let csrf = web.csrf("/dashboard").await;
    let p = web
        .post(
            &format!("/admin/accounts/{bob}/credits"),
            &[
                ("csrf", &csrf),
                ("credits", "1000"),
                ("reason", "x"),
                ("idempotency_key", "k"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(app.balance(bob).await, d("0"));
}

#[tokio::test]
async fn pages_send_a_strict_content_policy_and_no_store() {
    let app = spawn_app().await;
    let (_, mut web) = signed_in_customer(&app, "headers").await;
    let p = web.get("/dashboard").await;
    let csp = p.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(p.headers["cache-control"], "no-store");
    assert_eq!(p.headers["x-frame-options"], "DENY");
    assert_eq!(p.headers["referrer-policy"], "no-referrer");
    assert!(!p.body.contains("<script>"), "no inline script");
    for asset in ["/assets/dashboard.css", "/assets/dashboard.js"] {
        assert_eq!(web.get(asset).await.status, StatusCode::OK, "{asset}");
    }
}

#[tokio::test]
async fn the_balance_stream_sends_the_balance_and_then_each_change() {
    let app = spawn_app().await;
    let (account, web) = signed_in_customer(&app, "streamer").await;
    let (_, secret) = app.create_key(account, "k").await;
    app.grant(account, "1000", "g1").await;
    let resp = app
        .req(Method::GET, "/dashboard/balance/stream")
        .header(COOKIE, format!("cs_session={}", web.cookies["cs_session"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut resp = resp;
    let mut text = String::new();
    while !text.contains("\"balance\":\"1000\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let started = Instant::now();
    app.debits(vec![debit(
        account,
        &secret,
        "claude-sonnet-4-5",
        usage(1000, 1000),
        Utc::now(),
    )])
    .await;
    let expected = app.balance(account).await;
    let wanted = format!("\"balance\":\"{expected}\"");
    while !text.contains(&wanted) {
        let chunk = tokio::time::timeout(Duration::from_secs(3), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Without a session: 401, not a stream.
    let resp = app
        .req(Method::GET, "/dashboard/balance/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// A customer sees the speed, region and tier each request ran as, and the steps billed on top:
/// on the overview, in the daily table (split by them: they multiply the price) and in both CSVs.
#[tokio::test]
async fn the_customer_sees_the_speed_and_region_billed() {
    let app = spawn_app().await;
    let (account, mut web) = signed_in_customer(&app, "fastlane").await;
    let (_, secret) = app.create_key(account, "k").await;
    let mut fast = debit(account, &secret, "claude-opus-5-5", usage(1000, 100), Utc::now());
    fast.requested.speed = Some("fast".into());
    fast.usage.inference_geo = Some("us".into());
    fast.usage.service_tier = Some("priority".into());
    fast.usage.iterations = ["compaction", "message"]
        .map(|kind| metering::Iteration {
            kind: kind.into(),
            input_tokens: 10,
            ..Default::default()
        })
        .to_vec();
    let plain = debit(account, &secret, "claude-opus-5-5", usage(1000, 100), Utc::now());
    app.debits(vec![fast, plain]).await;
    let overview = web.get("/dashboard").await.body;
    assert!(
        overview.contains("fast · us · priority") && overview.contains("standard"),
        "{overview}"
    );
    assert!(
        overview.contains(">compaction</td>"),
        "the steps billed on top, not the message: {overview}"
    );
    let table = web.get("/dashboard/usage").await.body;
    assert!(table.contains("fast · us · priority"), "{table}");
    let daily = web.get("/dashboard/usage.csv?days=7").await.body;
    assert!(
        daily.starts_with("date,model,speed,inference_geo,service_tier,requests,steps,"),
        "{daily}"
    );
    assert!(
        daily.lines().any(|l| l.contains(",fast,us,priority,1,1,")),
        "{daily}"
    );
    let requests = web.get("/dashboard/usage/requests.csv").await.body;
    assert!(
        requests
            .lines()
            .next()
            .unwrap()
            .ends_with(",speed,inference_geo,service_tier,iterations"),
        "{requests}"
    );
    assert!(!requests.contains("list_usd"), "no operator cost for customers");
}

#[tokio::test]
async fn a_customer_sets_a_keys_limit_models_and_expiry_and_sees_its_spend() {
    let app = spawn_app().await;
    let (account, mut web) = signed_in_customer(&app, "alice").await;
    app.grant(account, "100", "g1").await;
    let (key, secret) = app.create_key(account, "ci").await;
    let d = debit(
        account,
        &secret,
        "claude-sonnet-4-5",
        usage(10_000, 0),
        chrono::Utc::now(),
    );
    app.debits(vec![d]).await;
    let list = web.get("/dashboard/keys").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("4.2 credits this month"), "{}", list.body);
    assert!(list.body.contains(&format!("/dashboard/keys/{key}")));
    let csrf = web.csrf(&format!("/dashboard/keys/{key}")).await;
    let saved = web
        .post(
            &format!("/dashboard/keys/{key}"),
            &[
                ("csrf", &csrf),
                ("limit_credits", "25"),
                ("limit_period", "week"),
                ("allowed_models", "claude-sonnet-*, claude-haiku-4-5"),
                ("expires_on", "2099-01-31"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    assert!(
        saved.location().starts_with("/dashboard/keys?done="),
        "{}",
        saved.location()
    );
    assert!(web.follow(&saved).await.body.contains("are saved"));
    let (_, keys) = app.admin_get(&format!("/v1/accounts/{account}/keys")).await;
    let k = &keys["data"][0];
    assert_eq!(k["limit"], json!({"credits": "25", "period": "week"}));
    assert_eq!(
        k["allowed_models"],
        json!(["claude-sonnet-*", "claude-haiku-4-5"])
    );
    assert_eq!(k["expires_at"], "2099-01-31T00:00:00Z");
    let list = web.get("/dashboard/keys").await;
    assert!(list.body.contains("4.2 / 25 credits per week"), "{}", list.body);
    let (_, audit) = app.admin_get(&format!("/v1/audit?target=key:{key}")).await;
    assert!(
        audit.to_string().contains("customer"),
        "the customer is the actor: {audit}"
    );

    // A mistake is shown on the form and changes nothing.
    for (field, value, needle) in [
        ("limit_credits", "-3", "limit.credits"),
        ("allowed_models", "gpt-4o", "gpt-4o"),
        ("expires_on", "soon", "not a date"),
    ] {
        let csrf = web.csrf(&format!("/dashboard/keys/{key}")).await;
        let mut form = vec![
            ("csrf", csrf.as_str()),
            ("limit_credits", "25"),
            ("limit_period", "week"),
            ("allowed_models", ""),
            ("expires_on", ""),
        ];
        form.retain(|(f, _)| *f != field);
        form.push((field, value));
        let page = web.post(&format!("/dashboard/keys/{key}"), &form).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{field}");
        assert!(page.body.contains(needle), "{field}: {}", page.body);
    }
    let (_, keys) = app.admin_get(&format!("/v1/accounts/{account}/keys")).await;
    assert_eq!(
        keys["data"][0]["allowed_models"],
        json!(["claude-sonnet-*", "claude-haiku-4-5"])
    );

    // Another account's key is not there to edit.
    let bob = app.create_account("bob").await;
    let (bob_key, _) = app.create_key(bob, "bobs").await;
    assert_eq!(
        web.get(&format!("/dashboard/keys/{bob_key}")).await.status,
        StatusCode::NOT_FOUND
    );
    let csrf = web.csrf("/dashboard/keys").await;
    let p = web
        .post(
            &format!("/dashboard/keys/{bob_key}"),
            &[("csrf", &csrf), ("limit_credits", "1"), ("limit_period", "day")],
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    let (_, keys) = app.admin_get(&format!("/v1/accounts/{bob}/keys")).await;
    assert_eq!(keys["data"][0]["limit"], Value::Null);
}
