//! A request to the gateway and its answer, as a caller sends and reads them.

use std::io::{Read, Write};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

/// A request to the gateway. Every call carries a unique `x-e2e-marker` header that Envoy passes
/// on, so the fake upstream's record of it can be found (or its absence proven).
#[derive(Debug, Clone)]
pub struct Call {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    pub marker: String,
}

impl Call {
    pub fn new(method: Method, path: &str) -> Call {
        let marker = Uuid::new_v4().to_string();
        Call {
            method,
            path: path.to_owned(),
            headers: vec![("x-e2e-marker".into(), marker.clone())],
            body: None,
            marker,
        }
    }

    /// `POST /v1/messages` with `x-api-key` and a small SDK-shaped body.
    pub fn messages(key: &str, model: &str, stream: bool) -> Call {
        Call::new(Method::POST, "/v1/messages")
            .key(key)
            .json(&message_body(model, stream))
    }

    pub fn key(self, key: &str) -> Call {
        self.header("x-api-key", key)
    }

    pub fn bearer(self, key: &str) -> Call {
        self.header("authorization", &format!("Bearer {key}"))
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Tells the fake upstream how to answer (see `tests/src/fake/script.rs`).
    pub fn script(self, script: &Value) -> Call {
        self.header("x-fake-script", &script.to_string())
    }

    pub fn json(self, body: &Value) -> Call {
        self.header("content-type", "application/json")
            .raw(body.to_string().into_bytes())
    }

    pub fn raw(mut self, body: Vec<u8>) -> Call {
        self.body = Some(body);
        self
    }

    /// The request to `base` (the gateway's URL).
    pub fn request(self, http: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
        let mut req = http.request(self.method, format!("{base}{}", self.path));
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        match self.body {
            Some(body) => req.body(body),
            None => req,
        }
    }
}

/// A Messages request body as SDKs send it: `model` after `messages` (serde_json sorts keys).
pub fn message_body(model: &str, stream: bool) -> Value {
    json!({
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Say hello."}],
        "model": model,
        "stream": stream
    })
}

/// A whole response as the caller received it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub marker: String,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }

    pub fn request_id(&self) -> Uuid {
        let h = self
            .headers
            .get("x-claudestore-request-id")
            .unwrap_or_else(|| panic!("no x-claudestore-request-id in {:?}", self.headers));
        Uuid::parse_str(h.to_str().unwrap_or_default()).expect("x-claudestore-request-id is a UUID")
    }

    pub fn assert_ok(&self) -> &Reply {
        assert_eq!(
            self.status,
            200,
            "expected 200, got {}: {}",
            self.status,
            self.text()
        );
        self
    }

    /// The gateway's own refusal: `status` and `{"type":"error","error":{"type":kind,"message":..}}`.
    pub fn assert_refused(&self, status: u16, kind: &str) {
        assert_eq!(
            self.status,
            status,
            "expected {status} {kind}, got {}: {}",
            self.status,
            self.text()
        );
        let body = self.json();
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["error"]["type"], kind, "{body}");
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "refusal without a message: {body}"
        );
        assert!(
            self.headers
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("application/json")),
            "refusal content-type: {:?}",
            self.headers.get("content-type")
        );
    }
}

/// A key in our format with a valid checksum that the control plane never issued.
pub fn well_formed_unknown_key() -> String {
    let mut random = [0u8; metering::apikey::RANDOM_BYTES];
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    for (i, byte) in random.iter_mut().enumerate() {
        *byte = if i < 16 {
            a.as_bytes()[i]
        } else {
            b.as_bytes()[i - 16]
        };
    }
    metering::apikey::generate(&random)
}

/// One raw HTTP/1.1 exchange on a new connection to `base` (`http://host:port`), for what a client
/// library will not do: `head` is the request line and headers without the blank line (it should
/// ask for `connection: close`); `body` is written piece by piece with `pause` between pieces, each
/// as one chunk when `chunked`. Reads until the server closes.
pub fn raw_exchange(base: &str, head: &str, body: &[Vec<u8>], chunked: bool, pause: Duration) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(format!("{head}\r\n").as_bytes()).expect("write head");
    for piece in body {
        std::thread::sleep(pause);
        if chunked {
            s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .expect("write");
            s.write_all(piece).expect("write");
            s.write_all(b"\r\n").expect("write");
        } else {
            s.write_all(piece).expect("write");
        }
    }
    if chunked {
        s.write_all(b"0\r\n\r\n").expect("write");
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
