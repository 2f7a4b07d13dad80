//! A small W3C WebDriver client (over reqwest) for Debian's chromedriver driving headless Chromium:
//! just what the dashboard scenarios need. No other crate, no browser download.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    pub downloads: PathBuf,
    _profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub async fn start(work: &Path) -> Browser {
        let port = free_port();
        let log = std::fs::File::create(work.join("chromedriver.log")).unwrap();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = work.join("profile");
        let downloads = work.join("downloads");
        std::fs::create_dir_all(&profile).unwrap();
        std::fs::create_dir_all(&downloads).unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "plugins.always_open_pdf_externally": true,
                },
            },
        } } });
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {resp}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            http,
            downloads,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn goto(&self, url: &str) {
        let v = self.post("/url", json!({ "url": url })).await;
        assert!(v.is_null(), "navigate to {url}: {v}");
    }

    /// The browser's reload (a GET of the page shown; after a form, of its result page).
    pub async fn refresh(&self) {
        let v = self.post("/refresh", json!({})).await;
        assert!(v.is_null(), "refresh: {v}");
    }

    pub async fn url(&self) -> String {
        let v = self.call(reqwest::Method::GET, "/url", None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching `css`, waited for.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self
                .post("/element", json!({ "using": "css selector", "value": css }))
                .await;
            if let Some(id) = v[ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        let v = self
            .post("/elements", json!({ "using": "css selector", "value": css }))
            .await;
        v.as_array().is_some_and(|a| !a.is_empty())
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        let v = self.post(&format!("/element/{id}/click"), json!({})).await;
        assert!(v.is_null(), "click {css}: {v}");
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        let v = self
            .post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
        assert!(v.is_null(), "type into {css}: {v}");
    }

    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        let v = self
            .call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the text of `css` satisfies `ok`; returns it.
    pub async fn wait_text(&self, css: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.text(css).await;
            if ok(&t) {
                return t;
            }
            assert!(Instant::now() < deadline, "{css} still reads {t:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn script(&self, js: &str) -> Value {
        self.post("/execute/sync", json!({ "script": js, "args": [] }))
            .await
    }

    /// Accepts a `confirm()` dialog if one is open.
    pub async fn accept_dialog(&self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let v = self.post("/alert/accept", json!({})).await;
            if v.is_null() || Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of an open dialog, if any (an XSS payload would open one).
    pub async fn dialog(&self) -> Option<String> {
        let v = self.call(reqwest::Method::GET, "/alert/text", None).await;
        v.as_str().map(str::to_owned)
    }

    /// Resizes the window so that the page is `width` CSS pixels wide (headless: no window chrome).
    pub async fn set_width(&self, width: u32) {
        let v = self
            .post("/window/rect", json!({ "width": width, "height": 900 }))
            .await;
        assert!(v.is_object(), "resize to {width}: {v}");
        let inner = self.script("return window.innerWidth;").await;
        assert_eq!(
            inner.as_u64(),
            Some(u64::from(width)),
            "the page is not {width} px wide"
        );
    }

    /// How far the page is wider than the window (0: no sideways scroll), and the widest element
    /// that sticks out, to say what to fix.
    pub async fn overflow(&self) -> (i64, String) {
        let v = self
            .script(
                "const w = document.documentElement.clientWidth;
                 let worst = '', most = 0;
                 for (const e of document.querySelectorAll('body *')) {
                   const r = e.getBoundingClientRect();
                   let p = e.parentElement, clipped = false;
                   while (p) { const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll' || o === 'hidden') { clipped = true; break; } p = p.parentElement; }
                   if (!clipped && r.right - w > most) { most = r.right - w; worst = e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className; }
                 }
                 return [document.documentElement.scrollWidth - w, worst];",
            )
            .await;
        (
            v[0].as_i64().unwrap_or(i64::MAX),
            v[1].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// A PNG of the whole page (the window grown to the page's height for the shot, then put
    /// back), under `dir`.
    pub async fn full_page_screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let width = self.script("return window.innerWidth;").await;
        self.post("/window/rect", json!({ "width": width, "height": 900 }))
            .await;
        let size = self
            .script("return [window.innerWidth, window.innerHeight, document.documentElement.scrollHeight];")
            .await;
        let (width, height, full) = (
            size[0].as_u64().unwrap_or(1280),
            size[1].as_u64().unwrap_or(900),
            size[2].as_u64().unwrap_or(900),
        );
        self.post(
            "/window/rect",
            json!({ "width": width, "height": full.clamp(height, 8000) }),
        )
        .await;
        let path = self.screenshot(dir, name).await;
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await;
        path
    }

    /// A PNG of what the window shows, under `dir`.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn quit(&self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
    }
}
