//! The admin console (sign-in with the admin token, grants through forms, audit actor, rate limit)
//! and escaping of everything a customer or an upstream can name.

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;
use crate::web::*;

mod forms;
mod reports;

/// The single-use token of the form with this id on a page.
pub fn form_token(page: &Page, form_id: &str) -> String {
    let at = page
        .body
        .find(&format!("id=\"{form_id}\""))
        .unwrap_or_else(|| panic!("no form {form_id} in {}", page.body));
    let marker = "name=\"form_token\" value=\"";
    let start = page.body[at..].find(marker).unwrap() + at + marker.len();
    let end = page.body[start..].find('"').unwrap() + start;
    page.body[start..end].to_owned()
}

/// The fields of a confirmation page's Confirm form, as the browser sends them.
pub fn confirmation_fields(page: &Page) -> Vec<(&'static str, String)> {
    let value = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let at = page.body.find("id=\"confirm-credits\"").expect("a Confirm form");
        let start = page.body[at..].find(&marker).unwrap() + at + marker.len();
        let end = page.body[start..].find('"').unwrap() + start;
        page.body[start..end]
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
    };
    [
        "csrf",
        "form_token",
        "credits",
        "reason",
        "confirmed",
        "idempotency_key",
    ]
    .into_iter()
    .map(|k| (k, value(k)))
    .collect()
}

/// Owned form fields as `Web::post` takes them.
pub fn borrowed<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn console_sign_in_takes_the_token_in_a_form_and_sets_a_strict_cookie() {
    let app = spawn_app().await;
    let mut web = Web::new(&app);
    let p = web.get("/admin").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/admin/login");
    let wrong = web.admin_login("not-the-token", "eve").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let ok = web.admin_login(ADMIN, "alice").await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.location(), "/admin");
    let cookie = ok.set_cookie("cs_admin");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(!cookie.contains(ADMIN), "the token itself is never the cookie");
    let page = web.get("/admin").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(ADMIN), "the token never appears in a page");
    // The admin session opens no customer page.
    assert_eq!(web.get("/dashboard").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn console_sign_in_is_rate_limited_per_address() {
    let app = spawn_app().await;
    let mut web = Web::new(&app);
    for _ in 0..10 {
        assert_eq!(
            web.admin_login("guess", "x").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let p = web.admin_login(ADMIN, "x").await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!web.cookies.contains_key("cs_admin"));
}

#[tokio::test]
async fn console_grants_credits_once_per_form_and_records_who() {
    let app = spawn_app().await;
    let account = app.create_account("granted").await;
    let mut web = Web::new(&app);
    web.admin_login(ADMIN, "alice").await;
    let page = web.get(&format!("/admin/accounts/{account}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.field("csrf");
    let token = form_token(&page, "credits-form");
    let form = [
        ("csrf", csrf.as_str()),
        ("form_token", token.as_str()),
        ("credits", "2,500"),
        ("reason", "welcome"),
    ];
    let credits = format!("/admin/accounts/{account}/credits");
    let p = web.post(&credits, &form).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    // A double submit of the same form is the same transfer, and leads to the same result.
    let again = web.post_again(&credits, &form).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    assert_eq!(again.location(), p.location());
    assert_eq!(app.balance(account).await, d("2500"));
    let shown = web.follow(&p).await;
    assert!(
        shown.body.contains("Grant of 2,500 credits applied (welcome)"),
        "{}",
        shown.body
    );
    let actor: String = sqlx::query_scalar("SELECT actor FROM audit_log WHERE action = 'credits.grant'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(actor, "admin:console alice");
    // A correction needs the CSRF token like everything else.
    let p = web.post(&credits, &[("credits", "-5"), ("reason", "x")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // A correction is applied only once confirmed.
    let p = web
        .post(
            &credits,
            &[("csrf", &csrf), ("credits", "-500"), ("reason", "typo")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(app.balance(account).await, d("2500"));
    let confirm = web.follow(&p).await;
    assert!(
        confirm.body.contains("2,500 credits ($12.50) → "),
        "{}",
        confirm.body
    );
    let p = web
        .post(&credits, &borrowed(&confirmation_fields(&confirm)))
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(app.balance(account).await, d("2000"));
    // Suspend through the form; the API sees it.
    let p = web
        .post(
            &format!("/admin/accounts/{account}/status"),
            &[("csrf", &csrf), ("status", "suspended"), ("reason", "fraud")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(web.follow(&p).await.body.contains("Account suspended"));
    let (_, body) = app.admin_get(&format!("/v1/accounts/{account}")).await;
    assert_eq!(body["status"], "suspended");
}

#[tokio::test]
async fn console_link_button_and_key_creation_show_their_secret_once() {
    let app = spawn_app().await;
    let account = app.create_account("linked").await;
    let mut web = Web::new(&app);
    web.admin_login(ADMIN, "bob").await;
    let csrf = web.csrf(&format!("/admin/accounts/{account}")).await;
    let link = format!("/admin/accounts/{account}/password-link");
    let p = web.post(&link, &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let shown = web.follow(&p).await;
    assert!(
        shown.body.contains("/dashboard/password?token="),
        "{}",
        shown.body
    );
    // A refresh of the result shows the notice without the link; the link still works.
    let refreshed = web.get(p.location()).await;
    assert!(!refreshed.body.contains("token=") && refreshed.body.contains("link created"));
    let p = web
        .post(
            &format!("/admin/accounts/{account}/keys"),
            &[("csrf", &csrf), ("name", "ops")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(web.follow(&p).await.body.contains("id=\"new-key-secret\""));
    let p = web.get(p.location()).await;
    assert!(!p.body.contains("id=\"new-key-secret\"") && !p.body.contains("token="));
}

#[tokio::test]
async fn console_adds_a_price_version_and_a_plan() {
    let app = spawn_app().await;
    let mut web = Web::new(&app);
    web.admin_login(ADMIN, "carol").await;
    let csrf = web.csrf("/admin/prices").await;
    let tomorrow = (Utc::now() + chrono::Duration::days(1)).date_naive().to_string();
    let form = [
        ("csrf", csrf.as_str()),
        ("model", "claude-test-1"),
        ("effective_from", tomorrow.as_str()),
        ("input", "3"),
        ("output", "15"),
        ("cache_write_5m", "3.75"),
        ("cache_write_1h", "6"),
        ("cache_read", "0.3"),
        ("thinking", ""),
        ("reason", "new model"),
    ];
    let p = web.post("/admin/prices", &form).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let (_, prices) = app.admin_get("/v1/prices").await;
    assert!(prices.to_string().contains("claude-test-1"));
    let page = web.get("/admin/prices").await;
    assert!(page.body.contains("claude-test-1") && page.body.contains("scheduled"));
    // The modifiers each model supports, and code execution refused where nothing prices it.
    assert!(
        page.body.contains("fast ×2") && page.body.contains("us ×1.1"),
        "modifiers shown"
    );
    assert!(page.body.contains("refused"));
    let p = web
        .post(
            "/admin/plans",
            &[
                ("csrf", &csrf),
                ("name", "Starter <b>"),
                ("credits", "500"),
                ("price_usd", "2.50"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let page = web.get("/admin/plans").await;
    assert!(page.body.contains("Starter &lt;b&gt;"));
}

const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "<img src=x onerror=alert(2)>";
const SVG: &str = "\"><svg onload=alert(3)>";

fn assert_escaped(body: &str, context: &str) {
    for raw in [SCRIPT, IMG, SVG, "<svg onload", "<img src=x"] {
        assert!(!body.contains(raw), "{context}: raw {raw} in page");
    }
}

#[tokio::test]
async fn names_keys_and_model_ids_are_escaped_on_every_page() {
    let app = spawn_app().await;
    let (s, body) = app
        .admin_json(
            Method::POST,
            "/v1/accounts",
            json!({"name": SCRIPT, "email": "xss@example.com"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let account = id(&body["id"]);
    let (_, secret) = app.create_key(account, IMG).await;
    app.grant(account, "100", "g").await;
    // An upstream can name any served model: it reaches the usage pages.
    let mut hostile = debit(account, &secret, "claude-sonnet-4-5", usage(10, 10), Utc::now());
    hostile.model_served = Some(SVG.into());
    app.debits(vec![hostile]).await;
    let (link, _) = app.password_link(account).await;
    let mut web = Web::new(&app);
    let token = link.split("token=").nth(1).unwrap().to_owned();
    web.post(
        "/dashboard/password",
        &[("token", &token), ("password", PASSWORD), ("confirm", PASSWORD)],
    )
    .await;
    for path in [
        "/dashboard",
        "/dashboard/keys",
        "/dashboard/usage",
        "/dashboard/usage?days=7",
    ] {
        let p = web.get(path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}");
        assert_escaped(&p.body, path);
    }
    let usage = web.get("/dashboard/usage").await;
    assert!(
        usage.body.contains("&lt;svg onload=alert(3)&gt;"),
        "{}",
        usage.body
    );
    let mut admin = Web::new(&app);
    admin.admin_login(ADMIN, SCRIPT).await;
    for path in [
        "/admin".to_owned(),
        format!("/admin/accounts/{account}"),
        "/admin?q=%3Cscript%3E".to_owned(),
    ] {
        let p = admin.get(&path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}");
        assert_escaped(&p.body, &path);
        assert!(p.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{path}");
    }
}
