//! The customer's pages beyond the overview and keys: usage filters and the request log, the
//! balance history, prices, settings (billing details, alerts, password), buying, error pages, and
//! forms that act once.

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;
use crate::web::{signed_in_customer, Web, PASSWORD};

#[tokio::test]
async fn usage_is_filtered_by_range_key_and_model_and_the_request_log_pages_to_its_end() {
    let app = spawn_app().await;
    let (account, mut web) = signed_in_customer(&app, "filters").await;
    app.grant(account, "100000", "g").await;
    let (first_key, first) = app.create_key(account, "first").await;
    let (_, second) = app.create_key(account, "second").await;
    let now = Utc::now();
    let mut debits = Vec::new();
    for i in 0..55 {
        debits.push(debit(
            account,
            &first,
            "claude-sonnet-4-5",
            usage(1000, 100),
            now - Duration::minutes(i),
        ));
    }
    for i in 0..5 {
        debits.push(debit(
            account,
            &second,
            "claude-haiku-4-5",
            usage(1000, 100),
            now - Duration::minutes(i),
        ));
    }
    // Forty days ago: outside the default 30 days.
    debits.push(debit(
        account,
        &second,
        "claude-opus-4-5",
        usage(1000, 100),
        now - Duration::days(40),
    ));
    app.debits(debits).await;

    let all = web.get("/dashboard/usage").await;
    assert_eq!(all.status, StatusCode::OK);
    assert!(
        all.body.contains("id=\"usage-requests\">60<"),
        "60 requests in 30 days"
    );
    assert!(
        !all.body.contains("claude-opus-4-5-20250929</td>"),
        "the old request is out of range"
    );
    let requests = all.body.matches("<tr><td>").count();
    assert!(requests >= 50, "a page of the log");
    let next = all
        .body
        .split("id=\"requests-next\" href=\"")
        .nth(1)
        .expect("a next page")
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let older = web.get(&next).await;
    assert_eq!(older.status, StatusCode::OK, "{}", older.body);
    assert!(
        !older.body.contains("id=\"requests-next\""),
        "the log ends on the second page"
    );

    let one_key = web.get(&format!("/dashboard/usage?key={first_key}")).await;
    assert!(
        one_key.body.contains("id=\"usage-requests\">55<"),
        "{}",
        one_key.body
    );
    let one_model = web.get("/dashboard/usage?model=claude-haiku-4-5-20250929").await;
    assert!(one_model.body.contains("id=\"usage-requests\">5<"));
    let days = (now - Duration::days(45)).date_naive();
    let long = web.get(&format!("/dashboard/usage?from={days}")).await;
    assert!(
        long.body.contains("id=\"usage-requests\">61<"),
        "a range of 46 days holds all"
    );

    let csv = web
        .get(&format!("/dashboard/usage/requests.csv?key={first_key}"))
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(
        csv.body.lines().count(),
        56,
        "a header and one line per request of the key"
    );
    assert!(!csv.body.contains("claude-haiku"));

    // Values the page cannot read are said in words, and the page still answers.
    let bad = web
        .get("/dashboard/usage?days=abc&from=2026-99-01&key=nope")
        .await;
    assert_eq!(bad.status, StatusCode::OK);
    assert!(bad.body.contains("id=\"ignored\""), "{}", bad.body);
    assert!(!bad.body.to_lowercase().contains("deserializ"));
}

#[tokio::test]
async fn the_balance_history_lists_every_transfer_in_words() {
    let app = spawn_app().await;
    let (account, mut web) = signed_in_customer(&app, "history").await;
    for (credits, key, reason) in [
        ("500", "welcome", "welcome bonus"),
        ("-20", "fix", "double grant"),
    ] {
        let (s, _) = app
            .admin_json(
                Method::POST,
                &format!("/v1/accounts/{account}/credits"),
                json!({"credits": credits, "idempotency_key": key, "reason": reason}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (_, secret) = app.create_key(account, "k").await;
    let many: Vec<_> = (0..60)
        .map(|i| {
            debit(
                account,
                &secret,
                "claude-sonnet-4-5",
                usage(100, 10),
                Utc::now() - Duration::seconds(i),
            )
        })
        .collect();
    app.debits(many).await;

    let page = web.get("/dashboard/history").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.body.matches("API request").count(),
        50,
        "the newest 50 transfers"
    );
    let next = page
        .body
        .split("id=\"history-next\" href=\"")
        .nth(1)
        .expect("older")
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let older = web.get(&next).await.body;
    assert!(
        older.contains("Credits added by us") && older.contains("welcome bonus"),
        "{older}"
    );
    assert!(older.contains("Correction by us") && older.contains("double grant"));
    let changes = web.get("/dashboard/history?requests=hide").await.body;
    assert!(!changes.contains("<td>API request"), "{changes}");
    assert!(changes.contains("+500") && changes.contains("-20"), "{changes}");
    assert!(web.get("/dashboard/history?before=abc").await.status == StatusCode::OK);
}

#[tokio::test]
async fn prices_are_shown_in_credits_per_million_tokens() {
    let app = spawn_app().await;
    let (_, mut web) = signed_in_customer(&app, "prices").await;
    let page = web.get("/dashboard/prices").await;
    assert_eq!(page.status, StatusCode::OK);
    // claude-sonnet-4-5 input: $3 per million x 0.70 / $0.005 = 420 credits per million.
    let row = page
        .body
        .split("claude-sonnet-4-5<")
        .nth(1)
        .expect("the model's row");
    assert!(row.split("</tr>").next().unwrap().contains(">420<"), "{row}");
}

#[tokio::test]
async fn settings_change_billing_details_alerts_and_the_password() {
    let app = spawn_app().await;
    let (account, mut web) = signed_in_customer(&app, "settings").await;
    app.grant(account, "30", "g").await;
    let csrf = web.csrf("/dashboard/settings").await;
    let saved = web
        .post(
            "/dashboard/settings/billing",
            &[
                ("csrf", &csrf),
                ("name", "Settings GmbH"),
                ("address", "Hauptstr. 1\n10115 Berlin"),
                ("tax_id", "DE123456789"),
            ],
        )
        .await;
    let shown = web.follow(&saved).await;
    assert!(shown.body.contains("Billing details saved"), "{}", shown.body);
    let (s, billing) = app.admin_get(&format!("/v1/accounts/{account}/billing")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(billing["name"], "Settings GmbH");
    assert_eq!(billing["tax_id"], "DE123456789");

    // An alert threshold above the balance: the banner is on every page.
    let saved = web
        .post(
            "/dashboard/settings/alerts",
            &[
                ("csrf", &csrf),
                ("low_balance_threshold", "50"),
                ("webhook_url", ""),
            ],
        )
        .await;
    assert!(web.follow(&saved).await.body.contains("Alerts saved"));
    for path in [
        "/dashboard",
        "/dashboard/keys",
        "/dashboard/usage",
        "/dashboard/settings",
    ] {
        let page = web.get(path).await.body;
        assert!(
            page.contains("id=\"low-balance\"") && page.contains("50 credits"),
            "{path}"
        );
    }
    let bad = web
        .post(
            "/dashboard/settings/alerts",
            &[
                ("csrf", &csrf),
                ("low_balance_threshold", "-1"),
                ("webhook_url", ""),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);

    // The password: the current one first; the other sessions end.
    let mut elsewhere = Web::new(&app);
    let email = "settings@example.com".to_owned();
    assert_eq!(
        elsewhere.customer_login(&email, PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let wrong = web
        .post(
            "/dashboard/settings/password",
            &[
                ("csrf", &csrf),
                ("current", "not the password"),
                ("password", "a brand new passphrase"),
                ("confirm", "a brand new passphrase"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(
        wrong.body.contains("current password is not right"),
        "{}",
        wrong.body
    );
    let changed = web
        .post(
            "/dashboard/settings/password",
            &[
                ("csrf", &csrf),
                ("current", PASSWORD),
                ("password", "a brand new passphrase"),
                ("confirm", "a brand new passphrase"),
            ],
        )
        .await;
    assert!(web.follow(&changed).await.body.contains("Password changed"));
    assert_eq!(
        elsewhere.get("/dashboard").await.status,
        StatusCode::SEE_OTHER,
        "the other session ended"
    );
    let mut again = Web::new(&app);
    assert_ne!(
        again.customer_login(&email, PASSWORD).await.status,
        StatusCode::SEE_OTHER,
        "the old password no longer works"
    );
    let mut fresh = Web::new(&app);
    assert_eq!(
        fresh
            .customer_login(&email, "a brand new passphrase")
            .await
            .status,
        StatusCode::SEE_OTHER
    );
}

/// An open session does not let someone guess the current password: wrong ones count as failed
/// sign-ins of the account's email, and after five the change is refused even with the right one.
#[tokio::test]
async fn guesses_at_the_current_password_are_limited_like_sign_ins() {
    let app = spawn_app().await;
    let (account, mut web) = signed_in_customer(&app, "guessed").await;
    let stored = || async {
        sqlx::query_scalar::<_, String>("SELECT password_hash FROM customer_logins WHERE account_id = $1")
            .bind(account)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    let before = stored().await;
    let csrf = web.csrf("/dashboard/settings").await;
    let change = |current: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("current", current.to_owned()),
            ("password", "a brand new passphrase".to_owned()),
            ("confirm", "a brand new passphrase".to_owned()),
        ]
    };
    for guess in 0..5 {
        let form = change("a wrong guess");
        let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let wrong = web.post("/dashboard/settings/password", &fields).await;
        assert_eq!(
            wrong.status,
            StatusCode::BAD_REQUEST,
            "guess {guess}: {}",
            wrong.body
        );
    }
    let form = change(PASSWORD);
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = web.post("/dashboard/settings/password", &fields).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.body);
    assert!(refused.body.contains("Too many"), "{}", refused.body);
    assert_eq!(stored().await, before, "the password did not change");
}

#[tokio::test]
async fn the_buy_page_shows_savings_methods_and_the_purchases_waiting_for_payment() {
    let app = spawn_app_with(|c| {
        c.payments.telegram_contact = Some(control_plane::config::Contact {
            label: "@claudestore_sales".into(),
            href: "https://t.me/claudestore_sales".into(),
        });
        c.payments.support_contact = Some(control_plane::config::Contact {
            label: "help@example.com".into(),
            href: "mailto:help@example.com".into(),
        });
    })
    .await;
    let (account, mut web) = signed_in_customer(&app, "buyer").await;
    let (_, plans) = app.admin_json(Method::GET, "/v1/plans", json!(null)).await;
    let plan = plans["data"][2]["id"].as_str().unwrap().to_owned();
    let (s, sale) = app
        .admin_json(
            Method::POST,
            &format!("/v1/accounts/{account}/purchases"),
            json!({"plan_id": plan, "method": "telegram", "reference": "chat 42"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sale}");
    let page = web.get("/dashboard/buy").await.body;
    assert!(
        page.contains("$1,250.00") && page.contains("Save 9%") && page.contains("Save 4%"),
        "{page}"
    );
    assert!(page.contains("Card payments are not available here."));
    assert!(page.contains("https://t.me/claudestore_sales") && page.contains("mailto:help@example.com"));
    assert!(
        page.contains(&format!("/dashboard/purchases/{}", sale["id"].as_str().unwrap())),
        "resumable"
    );
    // A method that is off, asked for anyway: said in words, naming no configuration.
    let csrf = web.csrf("/dashboard/buy").await;
    let refused = web
        .post(
            "/dashboard/buy",
            &[("csrf", &csrf), ("plan_id", &plan), ("method", "card")],
        )
        .await;
    assert!(refused.status.is_client_error(), "{}", refused.body);
    assert!(!refused.body.contains("STRIPE"), "{}", refused.body);
    assert!(refused.body.contains("<nav>"), "with navigation");
}

#[tokio::test]
async fn error_pages_are_html_with_navigation_in_words() {
    let app = spawn_app().await;
    let (_, mut web) = signed_in_customer(&app, "errors").await;
    for path in [
        "/dashboard/no-such-page",
        "/dashboard/purchases/not-a-uuid",
        "/dashboard/keys/00000000-0000-0000-0000-000000000000",
    ] {
        let page = web.get_as_browser(path).await;
        assert!(page.status.is_client_error(), "{path}: {}", page.status);
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert!(
            page.body.contains("<nav>") && page.body.contains("/dashboard/usage"),
            "{path}: {}",
            page.body
        );
        assert!(
            !page.body.to_lowercase().contains("deserializ") && !page.body.contains("openapi"),
            "{path}: {}",
            page.body
        );
    }
    // Scripts still get what they asked for.
    assert_eq!(
        web.get("/dashboard/no-such-page").await.headers["content-type"],
        "application/json"
    );
}

#[tokio::test]
async fn a_revocation_sent_twice_revokes_once_and_shows_one_result() {
    let app = spawn_app().await;
    let (account, mut web) = signed_in_customer(&app, "twice").await;
    let (key, _) = app.create_key(account, "doomed").await;
    let csrf = web.csrf("/dashboard/keys").await;
    let form = [
        ("csrf", csrf.as_str()),
        ("form_token", "the-same-form-token-twice"),
    ];
    let path = format!("/dashboard/keys/{key}/revoke");
    let (a, b) = tokio::join!(async { web.clone().post_again(&path, &form).await }, async {
        web.clone().post_again(&path, &form).await
    });
    assert_eq!(
        (a.status, b.status),
        (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER),
        "{} {}",
        a.body,
        b.body
    );
    assert_eq!(a.location(), b.location());
    let revocations: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'key.revoke'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(revocations, 1);
    let shown = web.get(a.location()).await.body;
    assert!(shown.contains("Key doomed revoked"), "{shown}");
    // A form token without its session's CSRF token is still refused first.
    let forged = web
        .post_again(
            &path,
            &[("csrf", "forged"), ("form_token", "another-token-0123456789")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_form_with_its_error_stays_a_form_for_a_browser() {
    let app = spawn_app().await;
    let (_, mut web) = signed_in_customer(&app, "browsing").await;
    // A wrong password: the sign-in form again, with the reason, not a generic page.
    let mut signed_out = Web::new(&app);
    let csrf = signed_out.get("/dashboard/login").await.field("csrf");
    let wrong = signed_out
        .post_as_browser(
            "/dashboard/login",
            &[
                ("csrf", &csrf),
                ("email", "browsing@example.com"),
                ("password", "not the password!"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.body.contains("name=\"password\"") && wrong.body.contains("wrong"),
        "{}",
        wrong.body
    );
    // A threshold that is not a number is said in words.
    let csrf = web.csrf("/dashboard/settings").await;
    let bad = web
        .post_as_browser(
            "/dashboard/settings/alerts",
            &[
                ("csrf", &csrf),
                ("form_token", "a-threshold-form-token-01"),
                ("low_balance_threshold", "1,000"),
                ("webhook_url", ""),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("is not a number of credits"), "{}", bad.body);
    assert!(
        !bad.body.contains("plain decimal") && !bad.body.contains("line 1"),
        "{}",
        bad.body
    );
}

#[tokio::test]
async fn the_same_form_sent_again_with_other_values_says_its_edit_was_not_applied() {
    let app = spawn_app().await;
    let (account, mut web) = signed_in_customer(&app, "edited").await;
    let csrf = web.csrf("/dashboard/keys").await;
    let token = "one-form-token-edited-after-back";
    let first = web
        .post_again(
            "/dashboard/keys",
            &[("csrf", &csrf), ("form_token", token), ("name", "first")],
        )
        .await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    // Back, another name, send: nothing more is created, and the page says so.
    let edited = web
        .post_as_browser(
            "/dashboard/keys",
            &[("csrf", &csrf), ("form_token", token), ("name", "second")],
        )
        .await;
    assert_eq!(edited.status, StatusCode::CONFLICT, "{}", edited.body);
    assert!(edited.body.contains("was not applied"), "{}", edited.body);
    assert!(
        edited.body.contains(&first.location().replace('&', "&amp;")),
        "a link to what was done: {}",
        edited.body
    );
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM api_keys WHERE account_id = $1")
        .bind(account)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(names, ["first"]);
    // The same values again (a refresh): the first result, as before.
    let again = web
        .post_again(
            "/dashboard/keys",
            &[("csrf", &csrf), ("form_token", token), ("name", "first")],
        )
        .await;
    assert_eq!(
        (again.status, again.location()),
        (StatusCode::SEE_OTHER, first.location())
    );
}
