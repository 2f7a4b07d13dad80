//! What an admitted request looks like to the upstream: the caller's key headers gone, the
//! operator's key set in the header the route expects, identity encoding asked for, no
//! caller-provided `x-claudestore-*` header; and, once the body is read, the model checked against
//! the price table and `stream_options.include_usage` injected into streaming OpenAI requests.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use metering::billable::{self, Unbillable};
use metering::ceiling::{ceiling, Ceiling, CeilingRules};
use metering::keylimit::model_allowed;
use metering::request::{RequestFields, RequestMeter};
use metering::wire::Route;
use metering::{PriceTable, RequestedOptions};

use crate::config::UpstreamKey;
use crate::request::refusal::Refusal;
use crate::request::route::RouteKind;

/// The response header that tells the caller the debit id of the request.
pub const REQUEST_ID_HEADER: &str = "x-claudestore-request-id";
const OWN_HEADER_PREFIX: &str = "x-claudestore-";

/// One change to the request's headers. Names and values borrow from the configuration and the
/// request (every admitted request computes these: no allocation unless a value is built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit<'a> {
    Remove(&'a str),
    Set(&'a str, Cow<'a, str>),
}

/// The edits for an admitted request. `names` are the request's header names (lowercase, as
/// Envoy gives them); `key_from_header` is the value of the configured operator-key header.
pub fn upstream_header_edits<'a>(
    route: RouteKind,
    names: &[&'a str],
    upstream_key: &'a UpstreamKey,
    key_from_header: Option<&'a str>,
) -> Vec<HeaderEdit<'a>> {
    let mut edits = Vec::with_capacity(8);
    for &name in names {
        if name.starts_with(OWN_HEADER_PREFIX) && !edits.contains(&HeaderEdit::Remove(name)) {
            edits.push(HeaderEdit::Remove(name));
        }
    }
    if route == RouteKind::ControlPlane {
        // The control plane authenticates the caller's key itself: leave the key headers.
        return edits;
    }
    edits.push(HeaderEdit::Remove("x-api-key"));
    edits.push(HeaderEdit::Remove("authorization"));
    edits.push(HeaderEdit::Set("accept-encoding", Cow::Borrowed("identity")));
    let operator_key = match upstream_key {
        UpstreamKey::None => None,
        UpstreamKey::Inline(k) => Some(k.as_str()),
        UpstreamKey::FromHeader(h) => {
            edits.push(HeaderEdit::Remove(h));
            key_from_header
        }
    };
    let openai = route == RouteKind::Billed(Route::OpenaiChatCompletions);
    if let Some(k) = operator_key.filter(|k| !k.is_empty()) {
        if openai {
            edits.push(HeaderEdit::Set(
                "authorization",
                Cow::Owned(format!("Bearer {k}")),
            ));
        } else {
            edits.push(HeaderEdit::Set("x-api-key", Cow::Borrowed(k)));
        }
    }
    if openai {
        // The body may grow by the stream_options injection after the headers have left.
        edits.push(HeaderEdit::Remove("content-length"));
    }
    edits
}

/// A request's or response's headers as Envoy hands them over in one host call (names
/// lowercase): the serialized map itself (the pair count, each pair's name and value sizes, then
/// every name and value followed by a NUL), read in place. Reading the map once costs less than
/// one host call per header the filter looks at (each call that returns a value also calls back
/// into the VM to allocate it), and reading it in place allocates nothing per header. Every read
/// is bounds-checked: a map that does not add up ends at the last whole pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    raw: Vec<u8>,
}

fn le_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(b)).ok()
}

/// The pairs of a serialized map, in order.
struct Pairs<'a> {
    raw: &'a [u8],
    index: usize,
    count: usize,
    /// Where the next name starts.
    at: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let sizes = self.index.checked_mul(8)?.checked_add(4)?;
        let (name_len, value_len) = (le_u32(self.raw, sizes)?, le_u32(self.raw, sizes.checked_add(4)?)?);
        let name_end = self.at.checked_add(name_len)?;
        let name = self.raw.get(self.at..name_end)?;
        let value_start = name_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let value = self.raw.get(value_start..value_end)?;
        self.at = value_end.checked_add(1)?;
        self.index += 1;
        Some((name, value))
    }
}

impl Headers {
    /// The map as the host serialized it.
    pub fn from_serialized(raw: Vec<u8>) -> Self {
        Self { raw }
    }

    /// The map a host would give for these pairs.
    #[cfg(test)]
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let pairs: Vec<(&str, &[u8])> = pairs.into_iter().collect();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        let mut raw = count(pairs.len()).to_vec();
        for (name, value) in &pairs {
            raw.extend_from_slice(&count(name.len()));
            raw.extend_from_slice(&count(value.len()));
        }
        for (name, value) in &pairs {
            raw.extend_from_slice(name.as_bytes());
            raw.push(0);
            raw.extend_from_slice(value);
            raw.push(0);
        }
        Self { raw }
    }

    fn pairs(&self) -> Pairs<'_> {
        let count = le_u32(&self.raw, 0).unwrap_or(0);
        Pairs {
            raw: &self.raw,
            index: 0,
            count,
            at: count.saturating_mul(8).saturating_add(4),
        }
    }

    /// The first value of `name` as text; a value that is not UTF-8 reads as absent (a caller can
    /// send any byte in a header value).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The names of the caller's `x-claudestore-*` headers (usually none: no allocation).
    pub fn own_header_names(&self) -> Vec<&str> {
        self.pairs()
            .filter(|(n, _)| n.starts_with(OWN_HEADER_PREFIX.as_bytes()))
            .filter_map(|(n, _)| std::str::from_utf8(n).ok())
            .collect()
    }
}

/// The same edits in fewer host calls, given the headers the request has: a header it does not
/// have is not removed, a header it has once is not removed right before being set (the set
/// replaces it), and a header that already has the value is not set again.
pub fn fewer_edits<'a>(edits: Vec<HeaderEdit<'a>>, headers: &Headers) -> Vec<HeaderEdit<'a>> {
    // How often the request has each edited header, and its first value: one pass over the map.
    let mut seen: Vec<(usize, Option<&[u8]>)> = vec![(0, None); edits.len()];
    for (name, value) in headers.pairs() {
        for (edit, (count, first)) in edits.iter().zip(seen.iter_mut()) {
            if name.eq_ignore_ascii_case(edit.name().as_bytes()) {
                *count += 1;
                first.get_or_insert(value);
            }
        }
    }
    let mut out = Vec::with_capacity(edits.len());
    for (i, (edit, (count, first))) in edits.iter().zip(seen).enumerate() {
        let name = edit.name();
        let earlier = edits.get(..i).unwrap_or_default();
        let later = edits.get(i + 1..).unwrap_or_default();
        // After an earlier edit of the same header, the request's own headers are no guide.
        let needed = earlier.iter().any(|e| e.is(name))
            || match edit {
                HeaderEdit::Remove(_) => match count {
                    0 => false,
                    1 => !later
                        .iter()
                        .any(|e| matches!(e, HeaderEdit::Set(..)) && e.is(name)),
                    _ => true,
                },
                HeaderEdit::Set(_, value) => count != 1 || first != Some(value.as_bytes()),
            };
        if needed {
            out.push(edit.clone());
        }
    }
    out
}

impl HeaderEdit<'_> {
    fn name(&self) -> &str {
        match self {
            HeaderEdit::Remove(n) | HeaderEdit::Set(n, _) => n,
        }
    }

    fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name)
    }
}

/// What the body of an admitted billed request says, and the body to send instead if it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPlan {
    pub model: String,
    pub stream: bool,
    /// What the request asked for that changes its price: its debit carries it.
    pub requested: RequestedOptions,
    pub new_body: Option<Vec<u8>>,
    /// The most the request may cost, when asked for (spend control `reserve`).
    pub ceiling: Option<Ceiling>,
}

const INCLUDE_USAGE: &[u8] = br#""stream_options":{"include_usage":true}"#;

/// Reads the whole request body: the model must be readable and priced at `at`, and so must
/// everything else that changes the price (modifiers, fallbacks, advisor and code execution tools).
pub fn plan_request_body(
    route: Route,
    body: &[u8],
    prices: &PriceTable,
    at: DateTime<Utc>,
) -> Result<RequestPlan, Refusal> {
    plan_request(route, body, prices, at, None, &[])
}

/// [`plan_request_body`], and with `rules` the request's ceiling ([`metering::ceiling`]). With
/// `allowed_models` (the key's; empty: all), the model, fallbacks and advisor models must be among
/// them (403 before anything else about the body is judged).
pub fn plan_request(
    route: Route,
    body: &[u8],
    prices: &PriceTable,
    at: DateTime<Utc>,
    rules: Option<&CeilingRules>,
    allowed_models: &[String],
) -> Result<RequestPlan, Refusal> {
    let mut meter = RequestMeter::new();
    meter.feed(body);
    let fields = meter
        .finish()
        .map_err(|e| Refusal::UnreadableBody(e.to_string()))?;
    let Some(model) = fields.model.clone() else {
        return Err(Refusal::UnreadableBody("it has no model".into()));
    };
    if !allowed_models.is_empty() {
        let named = std::iter::once(&model)
            .chain(&fields.fallbacks)
            .chain(&fields.tools.advisor_models);
        if let Some(m) = named
            .into_iter()
            .find(|m| !model_allowed(prices, allowed_models, m))
        {
            return Err(Refusal::ModelNotAllowed(m.clone()));
        }
    }
    let requested = match billable::check(prices, &model, &fields, at) {
        Ok(requested) => requested,
        Err(Unbillable::Model(model)) => return Err(Refusal::ModelNotPriced(model)),
        Err(why) => return Err(Refusal::NotBillable(why)),
    };
    let stream = fields.stream == Some(true);
    let new_body = match route {
        Route::OpenaiChatCompletions if stream => inject_include_usage(body, &fields),
        _ => None,
    };
    let ceiling = match rules {
        Some(rules) => {
            let body_len = u64::try_from(body.len()).unwrap_or(u64::MAX);
            match ceiling(prices, &fields, &requested, body_len, at, rules) {
                Ok(c) => Some(c),
                Err(_) => return Err(Refusal::ModelNotPriced(model)),
            }
        }
        None => None,
    };
    Ok(RequestPlan {
        model,
        stream,
        requested,
        new_body,
        ceiling,
    })
}

/// Appends `"stream_options":{"include_usage":true}` as the root object's last member unless the
/// request already asks for usage. A caller's own `stream_options` without it is overridden (the
/// last member wins in the upstreams' parsers) - its other options are lost, usage is not.
fn inject_include_usage(body: &[u8], fields: &RequestFields) -> Option<Vec<u8>> {
    if fields
        .stream_options
        .is_some_and(|o| o.is_object && o.include_usage == Some(true))
    {
        return None;
    }
    let at = usize::try_from(fields.closing_brace?).ok()?;
    let (head, tail) = (body.get(..at)?, body.get(at..)?);
    let mut out = Vec::with_capacity(body.len() + INCLUDE_USAGE.len() + 1);
    out.extend_from_slice(head);
    if fields.members > 0 {
        out.push(b',');
    }
    out.extend_from_slice(INCLUDE_USAGE);
    out.extend_from_slice(tail);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn has_set(edits: &[HeaderEdit], name: &str, value: &str) -> bool {
        edits.contains(&HeaderEdit::Set(name, value.into()))
    }

    fn removes(edits: &[HeaderEdit], name: &str) -> bool {
        edits.contains(&HeaderEdit::Remove(name))
    }

    #[test]
    fn anthropic_route_gets_the_operator_key_in_x_api_key() {
        let key = UpstreamKey::Inline("sk-op".into());
        let e = upstream_header_edits(RouteKind::Billed(Route::AnthropicMessages), &[], &key, None);
        assert!(removes(&e, "authorization"));
        assert!(has_set(&e, "x-api-key", "sk-op"));
        assert!(has_set(&e, "accept-encoding", "identity"));
        // The removal comes before the set, or the set would be undone.
        let remove = e.iter().position(|x| *x == HeaderEdit::Remove("x-api-key"));
        let set = e
            .iter()
            .position(|x| matches!(x, HeaderEdit::Set(n, _) if *n == "x-api-key"));
        assert!(remove < set);
    }

    #[test]
    fn openai_route_gets_the_operator_key_as_bearer_and_no_content_length() {
        let key = UpstreamKey::Inline("sk-op".into());
        let e = upstream_header_edits(RouteKind::Billed(Route::OpenaiChatCompletions), &[], &key, None);
        assert!(removes(&e, "x-api-key"));
        assert!(has_set(&e, "authorization", "Bearer sk-op"));
        assert!(removes(&e, "content-length"));
    }

    #[test]
    fn caller_own_headers_are_stripped_on_every_route() {
        let n = ["x-claudestore-request-id", "x-claudestore-account", "x-other"];
        for route in [RouteKind::Free, RouteKind::ControlPlane] {
            let e = upstream_header_edits(route, &n, &UpstreamKey::None, None);
            assert!(removes(&e, "x-claudestore-request-id") && removes(&e, "x-claudestore-account"));
            assert!(!removes(&e, "x-other"));
        }
    }

    #[test]
    fn control_plane_route_keeps_the_callers_key() {
        let key = UpstreamKey::Inline("k".into());
        let e = upstream_header_edits(RouteKind::ControlPlane, &[], &key, None);
        assert!(e.is_empty());
    }

    #[test]
    fn key_from_header_is_copied_and_its_header_removed() {
        let key = UpstreamKey::FromHeader("x-op-key".into());
        let e = upstream_header_edits(RouteKind::Free, &[], &key, Some("sk-from-envoy"));
        assert!(removes(&e, "x-op-key"));
        assert!(has_set(&e, "x-api-key", "sk-from-envoy"));
    }

    fn headers(list: &[(&str, &str)]) -> Headers {
        Headers::from_pairs(list.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn edits_skip_absent_headers_and_let_a_set_replace_a_single_value() {
        let key = UpstreamKey::Inline("sk-op".into());
        let route = RouteKind::Billed(Route::AnthropicMessages);
        let h = headers(&[("x-api-key", "sk-caller"), ("accept-encoding", "identity")]);
        let e = fewer_edits(upstream_header_edits(route, &[], &key, None), &h);
        assert_eq!(e, vec![HeaderEdit::Set("x-api-key", "sk-op".into())]);
    }

    #[test]
    fn edits_keep_removals_of_repeated_or_unreplaced_headers() {
        let route = RouteKind::Billed(Route::AnthropicMessages);
        let h = headers(&[
            ("x-api-key", "a"),
            ("x-api-key", "b"),
            ("authorization", "Bearer c"),
            ("x-claudestore-account", "x"),
        ]);
        let names = h.own_header_names();
        let key = UpstreamKey::Inline("sk-op".into());
        let e = fewer_edits(upstream_header_edits(route, &names, &key, None), &h);
        assert_eq!(
            e,
            vec![
                HeaderEdit::Remove("x-claudestore-account"),
                HeaderEdit::Remove("x-api-key"),
                HeaderEdit::Remove("authorization"),
                HeaderEdit::Set("accept-encoding", "identity".into()),
                HeaderEdit::Set("x-api-key", "sk-op".into()),
            ]
        );
        // Without an operator key the caller's key is removed, never replaced.
        let h = headers(&[("x-api-key", "a")]);
        let none = UpstreamKey::None;
        let e = fewer_edits(upstream_header_edits(route, &[], &none, None), &h);
        assert!(removes(&e, "x-api-key"));
    }

    #[test]
    fn openai_bearer_is_set_after_the_callers_is_removed() {
        let key = UpstreamKey::Inline("sk-op".into());
        let route = RouteKind::Billed(Route::OpenaiChatCompletions);
        let h = headers(&[("authorization", "Bearer sk-caller"), ("content-length", "10")]);
        let e = fewer_edits(upstream_header_edits(route, &[], &key, None), &h);
        assert_eq!(
            e,
            vec![
                HeaderEdit::Set("accept-encoding", "identity".into()),
                HeaderEdit::Set("authorization", "Bearer sk-op".into()),
                HeaderEdit::Remove("content-length"),
            ]
        );
    }

    #[test]
    fn a_serialized_map_is_read_in_place_and_a_truncated_one_up_to_its_last_whole_pair() {
        let h = headers(&[
            (":path", "/v1/messages"),
            ("x-api-key", ""),
            ("x-claudestore-a", "1"),
        ]);
        assert_eq!(h.get(":path"), Some("/v1/messages"));
        assert_eq!(h.get("x-api-key"), Some(""));
        assert_eq!(h.own_header_names(), ["x-claudestore-a"]);
        assert_eq!(h.get("absent"), None);
        // Cut anywhere, or lying about its count or sizes: never a panic, never a made-up pair.
        for cut in 0..h.raw.len() {
            let partial = Headers::from_serialized(h.raw[..cut].to_vec());
            let n = partial.pairs().count();
            assert!(n <= 3);
            if n >= 1 {
                assert_eq!(partial.get(":path"), Some("/v1/messages"));
            }
        }
        let mut lying = h.raw.clone();
        lying[0] = 200;
        assert_eq!(Headers::from_serialized(lying).pairs().count(), 0);
        let mut lying = h.raw.clone();
        lying[4] = 250;
        assert_eq!(Headers::from_serialized(lying).pairs().count(), 0);
        assert_eq!(Headers::from_serialized(vec![]).get(":path"), None);
    }

    #[test]
    fn header_values_that_are_not_utf8_read_as_absent() {
        let h = Headers::from_pairs([("x-api-key", &[0xff, 0xfe][..])]);
        assert_eq!(h.get("x-api-key"), None);
        assert_eq!(headers(&[("X-Op", "v")]).get("x-op"), Some("v"));
    }

    fn table() -> PriceTable {
        PriceTable::default_table(metering::price::default_price_factor()).unwrap()
    }

    fn model() -> String {
        table().entries()[0].model.clone()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn priced_model_after_a_large_messages_array_is_read() {
        let big = "x".repeat(200_000);
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"{big}"}}],"model":"{}"}}"#,
            model()
        );
        let plan = plan_request_body(Route::AnthropicMessages, body.as_bytes(), &table(), now()).unwrap();
        assert_eq!(plan.model, model());
        assert_eq!(plan.new_body, None);
    }

    #[test]
    fn model_without_price_is_refused() {
        let body = br#"{"model":"claude-imaginary-9","messages":[]}"#;
        assert_eq!(
            plan_request_body(Route::AnthropicMessages, body, &table(), now()),
            Err(Refusal::ModelNotPriced("claude-imaginary-9".into()))
        );
    }

    #[test]
    fn what_changes_the_price_is_checked_on_both_routes_and_carried_to_the_debit() {
        for route in [Route::AnthropicMessages, Route::OpenaiChatCompletions] {
            let body = br#"{"model":"claude-opus-5-5","speed":"fast","inference_geo":"us","messages":[]}"#;
            let plan = plan_request_body(route, body, &table(), now()).unwrap();
            assert_eq!(plan.requested.speed.as_deref(), Some("fast"));
            assert_eq!(plan.requested.inference_geo.as_deref(), Some("us"));
            let refused = [
                (&br#"{"model":"claude-sonnet-4-6","speed":"fast"}"#[..], "modifier_not_priced"),
                (br#"{"model":"claude-opus-4-5","inference_geo":"us"}"#, "modifier_not_priced"),
                (br#"{"model":"claude-opus-5-5","fallbacks":["claude-nope"]}"#, "fallback_not_priced"),
                (
                    br#"{"model":"claude-opus-5-5","tools":[{"type":"advisor_20260301","model":"claude-nope"}]}"#,
                    "advisor_not_priced",
                ),
                (
                    br#"{"model":"claude-opus-5-5","tools":[{"type":"code_execution_20250825","name":"x"}]}"#,
                    "tool_not_metered",
                ),
            ];
            for (body, reason) in refused {
                let r = plan_request_body(route, body, &table(), now()).unwrap_err();
                assert_eq!(
                    (r.status(), r.reason()),
                    (400, reason),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
            // A value that cannot be read for certain is an unreadable body, also a 400.
            for body in [
                &br#"{"model":"claude-opus-5-5","speed":2}"#[..],
                br#"{"model":"claude-opus-5-5","fallbacks":[{}]}"#,
            ] {
                assert!(matches!(
                    plan_request_body(route, body, &table(), now()),
                    Err(Refusal::UnreadableBody(_))
                ));
            }
        }
    }

    #[test]
    fn unreadable_or_modelless_body_is_refused() {
        for body in [
            &b"not json"[..],
            br#"{"messages":[]}"#,
            br#"{"model":7}"#,
            br#"{"model":"a""#,
            b"",
        ] {
            assert!(
                matches!(
                    plan_request_body(Route::AnthropicMessages, body, &table(), now()),
                    Err(Refusal::UnreadableBody(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn streaming_openai_request_gets_include_usage() {
        let body = format!(r#"{{"model":"{}","stream":true,"messages":[]}}  "#, model());
        let plan = plan_request_body(Route::OpenaiChatCompletions, body.as_bytes(), &table(), now()).unwrap();
        let new: serde_json::Value = serde_json::from_slice(&plan.new_body.unwrap()).unwrap();
        assert_eq!(new["stream_options"]["include_usage"], true);
        assert_eq!(new["stream"], true);
    }

    #[test]
    fn include_usage_false_is_overridden_and_true_is_left_alone() {
        let m = model();
        let body = format!(r#"{{"model":"{m}","stream":true,"stream_options":{{"include_usage":false}}}}"#);
        let plan = plan_request_body(Route::OpenaiChatCompletions, body.as_bytes(), &table(), now()).unwrap();
        let text = String::from_utf8(plan.new_body.unwrap()).unwrap();
        assert!(
            text.ends_with(r#","stream_options":{"include_usage":true}}"#),
            "{text}"
        );
        let body = format!(r#"{{"model":"{m}","stream":true,"stream_options":{{"include_usage":true}}}}"#);
        let plan = plan_request_body(Route::OpenaiChatCompletions, body.as_bytes(), &table(), now()).unwrap();
        assert_eq!(plan.new_body, None);
    }

    #[test]
    fn non_streaming_openai_and_streaming_anthropic_bodies_are_unchanged() {
        let m = model();
        let body = format!(r#"{{"model":"{m}","messages":[]}}"#);
        let plan = plan_request_body(Route::OpenaiChatCompletions, body.as_bytes(), &table(), now()).unwrap();
        assert_eq!(plan.new_body, None);
        let body = format!(r#"{{"model":"{m}","stream":true}}"#);
        let plan = plan_request_body(Route::AnthropicMessages, body.as_bytes(), &table(), now()).unwrap();
        assert!(plan.stream && plan.new_body.is_none());
    }
}
