//! A browser-like client for the dashboard tests: keeps cookies by name (path-blind, enough here),
//! never follows redirects, posts forms, and scrapes hidden fields.

use std::collections::HashMap;

use reqwest::header::{HeaderMap, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::helpers::*;

#[derive(Clone)]
pub struct Web {
    base: String,
    client: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The `value` of the first input named `name`.
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].replace("&amp;", "&")
    }

    /// The `Set-Cookie` header for `name`.
    pub fn set_cookie(&self, name: &str) -> String {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {:?}", self.headers))
            .to_owned()
    }
}

impl Web {
    pub fn new(app: &TestApp) -> Self {
        Self {
            base: app.url.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header(COOKIE, self.cookie_header())
        };
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        for v in headers.get_all(SET_COOKIE) {
            let text = v.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            if val.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), val.to_owned());
            }
        }
        let body = resp.text().await.unwrap();
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// A GET as a browser sends it (`Accept: text/html`).
    pub async fn get_as_browser(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base)).header(
            reqwest::header::ACCEPT,
            "text/html,application/xhtml+xml,*/*;q=0.8",
        );
        self.send(req).await
    }

    /// Posts a form. A form with a CSRF token and without a `form_token` gets a fresh one, as
    /// each rendering of a page's form has (single-use: posting the same one again is a
    /// resubmission, see [`Web::post_again`]).
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        if fields.iter().any(|(k, _)| *k == "csrf") && !fields.iter().any(|(k, _)| *k == "form_token") {
            fields.push(("form_token", &token));
        }
        let req = self
            .client
            .request(Method::POST, format!("{}{path}", self.base))
            .form(&fields);
        self.send(req).await
    }

    /// Posts a form as a browser does (`Accept: text/html`).
    pub async fn post_as_browser(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .client
            .request(Method::POST, format!("{}{path}", self.base))
            .header(
                reqwest::header::ACCEPT,
                "text/html,application/xhtml+xml,*/*;q=0.8",
            )
            .form(form);
        self.send(req).await
    }

    /// Posts exactly these fields (a refresh after a POST sends the same form again).
    pub async fn post_again(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .client
            .request(Method::POST, format!("{}{path}", self.base))
            .form(form);
        self.send(req).await
    }

    /// Follows a redirect answered to a form (303 to the page that shows its result).
    pub async fn follow(&mut self, answer: &Page) -> Page {
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        let location = answer.location().to_owned();
        self.get(&location).await
    }

    /// Signs in through the form (loading it first for its token).
    pub async fn customer_login(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/dashboard/login").await;
        let csrf = form.field("csrf");
        self.post(
            "/dashboard/login",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
    }

    pub async fn admin_login(&mut self, token: &str, name: &str) -> Page {
        let form = self.get("/admin/login").await;
        let csrf = form.field("csrf");
        self.post(
            "/admin/login",
            &[("csrf", &csrf), ("token", token), ("name", name)],
        )
        .await
    }

    /// The CSRF token of the signed-in page at `path`.
    pub async fn csrf(&mut self, path: &str) -> String {
        let page = self.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        page.field("csrf")
    }
}

pub const PASSWORD: &str = "a long enough password";

/// An account whose customer has set a password and is signed in.
pub async fn signed_in_customer(app: &TestApp, name: &str) -> (Uuid, Web) {
    let account = app.create_account(name).await;
    let (link, _) = app.password_link(account).await;
    let mut web = Web::new(app);
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let page = web
        .post(
            "/dashboard/password",
            &[("token", &token), ("password", PASSWORD), ("confirm", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/dashboard");
    (account, web)
}

/// The status of a GET with exactly this cookie, redirects not followed.
pub async fn get_with_cookie(app: &TestApp, path: &str, cookie: &str) -> StatusCode {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}{path}", app.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    resp.status()
}
