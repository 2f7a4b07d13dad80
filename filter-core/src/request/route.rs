//! Route classification: which requests are billed, which are free, which belong to the control
//! plane. Anything the table does not name is refused (403), so nothing unbilled passes by accident.

use metering::wire::Route;

/// What the filter does with a request on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Needs a valid key and credit; the response is metered and debited.
    Billed(Route),
    /// Needs a valid key (allowed at zero balance); not metered.
    Free,
    /// Customer self-service served by the control plane, which authenticates the caller's key
    /// itself: the filter leaves the key headers in place and bills nothing.
    ControlPlane,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    method: String,
    path: PathMatch,
    kind: RouteKind,
}

impl RouteRule {
    pub fn exact(method: &str, path: &str, kind: RouteKind) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            path: PathMatch::Exact(path.to_owned()),
            kind,
        }
    }

    pub fn prefix(method: &str, prefix: &str, kind: RouteKind) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            path: PathMatch::Prefix(prefix.to_owned()),
            kind,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method == method
            && match &self.path {
                PathMatch::Exact(p) => p == path,
                PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            }
    }

    fn path_str(&self) -> &str {
        match &self.path {
            PathMatch::Exact(p) | PathMatch::Prefix(p) => p,
        }
    }
}

/// The validated rules, first match wins.
#[derive(Debug, Clone)]
pub struct RouteTable {
    rules: Vec<RouteRule>,
}

impl RouteTable {
    pub fn new(rules: Vec<RouteRule>) -> Result<Self, String> {
        if rules.is_empty() {
            return Err("routes is empty: the filter would refuse every request".into());
        }
        for (i, r) in rules.iter().enumerate() {
            if r.method.is_empty() || !r.method.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!("route method {:?} is not an HTTP method", r.method));
            }
            if !r.path_str().starts_with('/') {
                return Err(format!("route path {:?} must start with /", r.path_str()));
            }
            if rules
                .iter()
                .take(i)
                .any(|o| o.method == r.method && o.path == r.path)
            {
                return Err(format!("route {} {} is listed twice", r.method, r.path_str()));
            }
        }
        Ok(Self { rules })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The kind of `method` on `path` (`:path` as Envoy gives it, query string included), or
    /// `None` when the route is not offered.
    pub fn classify(&self, method: &str, path: &str) -> Option<RouteKind> {
        let path = path_only(path);
        self.rules
            .iter()
            .find(|r| r.matches(method, path))
            .map(|r| r.kind)
    }
}

/// `:path` without query string or fragment: `/v1/messages?beta=true` is `/v1/messages`.
fn path_only(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table() -> RouteTable {
        Config::from_json(br#"{"internal_token":"t"}"#).unwrap().routes
    }

    #[test]
    fn messages_and_chat_completions_are_billed() {
        let t = table();
        assert_eq!(
            t.classify("POST", "/v1/messages"),
            Some(RouteKind::Billed(Route::AnthropicMessages))
        );
        assert_eq!(
            t.classify("POST", "/v1/chat/completions"),
            Some(RouteKind::Billed(Route::OpenaiChatCompletions))
        );
    }

    #[test]
    fn query_string_does_not_change_the_route() {
        assert_eq!(
            table().classify("POST", "/v1/messages?beta=true"),
            Some(RouteKind::Billed(Route::AnthropicMessages))
        );
    }

    #[test]
    fn count_tokens_and_models_are_free() {
        let t = table();
        assert_eq!(
            t.classify("POST", "/v1/messages/count_tokens"),
            Some(RouteKind::Free)
        );
        assert_eq!(t.classify("GET", "/v1/models"), Some(RouteKind::Free));
    }

    #[test]
    fn me_routes_belong_to_the_control_plane() {
        let t = table();
        assert_eq!(t.classify("GET", "/v1/me"), Some(RouteKind::ControlPlane));
        assert_eq!(
            t.classify("GET", "/v1/me/usage?limit=5"),
            Some(RouteKind::ControlPlane)
        );
    }

    #[test]
    fn other_paths_and_methods_are_not_offered() {
        let t = table();
        for (m, p) in [
            ("GET", "/v1/messages"),
            ("POST", "/v1/messages/batches"),
            ("POST", "/v1/complete"),
            ("POST", "/v1/messages/"),
            ("DELETE", "/v1/me"),
            ("GET", "/"),
            ("post", "/v1/messages"),
        ] {
            assert_eq!(t.classify(m, p), None, "{m} {p}");
        }
    }

    #[test]
    fn prefix_rules_match_below_the_prefix() {
        let t = RouteTable::new(vec![RouteRule::prefix("GET", "/v1/models/", RouteKind::Free)]).unwrap();
        assert_eq!(t.classify("GET", "/v1/models/claude-x"), Some(RouteKind::Free));
        assert_eq!(t.classify("GET", "/v1/models"), None);
    }

    #[test]
    fn duplicate_and_malformed_rules_are_refused() {
        let r = || RouteRule::exact("GET", "/a", RouteKind::Free);
        assert!(RouteTable::new(vec![r(), r()]).is_err());
        assert!(RouteTable::new(vec![RouteRule::exact("GET", "a", RouteKind::Free)]).is_err());
        assert!(RouteTable::new(vec![]).is_err());
    }
}
